//! The HTTP API driven over a real socket, on both stores: auth and roles, idempotency under concurrency,
//! bad input, personal data at rest, docs.

use reqwest::Method;
use serde_json::{Value, json};

use huiyuan::security::Role;

use crate::support::{TestServer, servers};

fn order_body(no: &str) -> Value {
    json!({
        "channel": "web", "order_no": no,
        "identity": {"kind": "phone", "value": "13900000001"},
        "placed_at": "2026-05-20T12:00:00+08:00",
        "lines": [{"sku": "LIP-01", "quantity": 2, "unit_price": 15900, "name": "口红"}],
        "shipping_fee": 0
    })
}

async fn seed_member(s: &TestServer) -> i64 {
    let (status, body) = s
        .post("/v1/members", json!({"identities": [{"kind": "phone", "value": "13900000001"}, {"kind": "email", "value": "mei@example.com"}], "name": "韩梅梅"}))
        .await;
    assert_eq!(status, 201, "{body}");
    body["member_id"].as_i64().unwrap()
}

#[tokio::test]
async fn every_endpoint_answers_each_role_as_the_permission_table_says() {
    for s in servers().await {
        let b = s.db.backend;
        let m = seed_member(&s).await;
        let (_, o) = s.post("/v1/orders", order_body("RM-0")).await;
        let order_id = o["id"].as_i64().unwrap();
        // (method, path, body, roles allowed)
        use Role::*;
        let cases: Vec<(Method, String, Option<Value>, Vec<Role>)> = vec![
            (
                Method::POST,
                "/v1/members".into(),
                Some(json!({"identities": [{"kind": "customer_no", "value": "C1"}]})),
                vec![Admin, Operator, Integration],
            ),
            (Method::GET, "/v1/members".into(), None, vec![Admin, Operator, Analyst]),
            (Method::GET, format!("/v1/members/{m}"), None, vec![Admin, Operator, Analyst, Integration]),
            (
                Method::GET,
                "/v1/members/lookup?kind=phone&value=13900000001".into(),
                None,
                vec![Admin, Operator, Analyst, Integration],
            ),
            (
                Method::POST,
                format!("/v1/members/{m}/identities"),
                Some(json!({"kind": "anonymous_id", "value": "v-role"})),
                vec![Admin, Operator, Integration],
            ),
            (
                Method::POST,
                format!("/v1/members/{m}/merge"),
                Some(json!({"from_member_id": 987654})),
                vec![Admin, Operator],
            ),
            (Method::GET, format!("/v1/members/{m}/orders"), None, vec![Admin, Operator, Analyst, Integration]),
            (Method::GET, format!("/v1/members/{m}/events"), None, vec![Admin, Operator, Analyst, Integration]),
            (Method::POST, "/v1/orders".into(), Some(order_body("RM-0")), vec![Admin, Operator, Integration]),
            (Method::GET, format!("/v1/orders/{order_id}"), None, vec![Admin, Operator, Analyst, Integration]),
            (
                Method::POST,
                "/v1/refunds".into(),
                Some(
                    json!({"channel": "web", "refund_no": "RR", "order_id": 424242, "refunded_at": "2026-05-21T00:00:00Z"}),
                ),
                vec![Admin, Operator, Integration],
            ),
            (Method::POST, "/v1/events".into(), Some(json!({"events": []})), vec![Admin, Integration]),
            (Method::POST, "/v1/skus".into(), Some(json!({"skus": []})), vec![Admin, Operator, Integration]),
            (Method::GET, "/v1/skus".into(), None, vec![Admin, Operator, Analyst, Integration]),
            (Method::GET, "/v1/skus/LIP-01".into(), None, vec![Admin, Operator, Analyst, Integration]),
            (Method::GET, "/v1/channels".into(), None, vec![Admin, Operator, Analyst, Integration]),
            (
                Method::POST,
                "/v1/channels".into(),
                Some(json!({"code": "xhs", "name": "小红书", "kind": "social_commerce"})),
                vec![Admin, Operator],
            ),
            (Method::GET, "/v1/stores".into(), None, vec![Admin, Operator, Analyst, Integration]),
            (
                Method::POST,
                "/v1/stores".into(),
                Some(json!({"code": "sh01", "channel": "store", "name": "上海南京路店", "city": "上海"})),
                vec![Admin, Operator],
            ),
            (Method::GET, "/v1/stats".into(), None, vec![Admin, Operator, Analyst]),
            (Method::GET, format!("/v1/members/{m}/points"), None, vec![Admin, Operator, Analyst, Integration]),
            (
                Method::POST,
                format!("/v1/members/{m}/points/adjust"),
                Some(json!({"amount": 1, "reason": "role check"})),
                vec![Admin, Operator],
            ),
            (Method::POST, "/v1/keys".into(), Some(json!({"role": "analyst", "name": "jane"})), vec![Admin]),
            (Method::GET, "/v1/audit".into(), None, vec![Admin]),
        ];
        for (method, path, body, allowed) in &cases {
            for role in Role::ALL {
                let mut r = s.req(role, method.clone(), path);
                if let Some(body) = body {
                    r = r.json(body);
                }
                let status = r.send().await.unwrap().status().as_u16();
                if allowed.contains(&role) {
                    assert!(
                        status != 403 && status != 401,
                        "{b}: {role} {method} {path} should be allowed, got {status}"
                    );
                    assert!(status < 500, "{b}: {role} {method} {path} gave {status}");
                } else {
                    assert_eq!(status, 403, "{b}: {role} {method} {path} should be forbidden");
                }
            }
            let anonymous = s.client.request(method.clone(), format!("{}{path}", s.base)).send().await.unwrap();
            assert_eq!(anonymous.status().as_u16(), 401, "{b}: {method} {path} without a key");
        }
        let bad_key = s.client.get(format!("{}/v1/stats", s.base)).bearer_auth("hy_not_a_key").send().await.unwrap();
        assert_eq!(bad_key.status().as_u16(), 401);
    }
}

#[tokio::test]
async fn personal_data_is_disclosed_by_role_and_clear_reads_are_audited() {
    for s in servers().await {
        let b = s.db.backend;
        let m = seed_member(&s).await;
        let get = |role| s.req(role, Method::GET, &format!("/v1/members/{m}")).send();
        let admin: Value = get(Role::Admin).await.unwrap().json().await.unwrap();
        assert_eq!(admin["name"], "韩梅梅", "{b}");
        assert_eq!(admin["personal_data"], "clear");
        let integ: Value = get(Role::Integration).await.unwrap().json().await.unwrap();
        assert_eq!(integ["name"], "韩**", "{b}");
        let phone = integ["identities"].as_array().unwrap().iter().find(|i| i["kind"] == "phone").unwrap().clone();
        assert_eq!(phone["value"], "139****0001", "{b}");
        let analyst: Value = get(Role::Analyst).await.unwrap().json().await.unwrap();
        assert_eq!(analyst["name"], Value::Null, "{b}");
        assert!(analyst["identities"].as_array().unwrap().iter().all(|i| i["value"].is_null()), "{b}");
        let list: Value = s.req(Role::Operator, Method::GET, "/v1/members").send().await.unwrap().json().await.unwrap();
        assert_eq!(list["items"][0]["personal_data"], "masked", "{b}: lists are never in clear");
        let (_, audit) = s.get(&format!("/v1/audit?member_id={m}")).await;
        let reads = audit.as_array().unwrap().iter().filter(|e| e["action"] == "member.read_personal").count();
        assert_eq!(reads, 1, "{b}: one clear read, by the admin");
    }
}

#[tokio::test]
async fn fifty_concurrent_posts_of_one_order_make_one_order() {
    for s in servers().await {
        let b = s.db.backend;
        seed_member(&s).await;
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let r = s.req(Role::Integration, Method::POST, "/v1/orders").json(&order_body("CC-1"));
            tasks.push(tokio::spawn(async move {
                let resp = r.send().await.unwrap();
                let status = resp.status().as_u16();
                (status, resp.json::<Value>().await.unwrap())
            }));
        }
        let mut created = 0;
        let mut ids = std::collections::HashSet::new();
        for t in tasks {
            let (status, body) = t.await.unwrap();
            assert!(status == 201 || status == 200, "{b}: {status} {body}");
            created += usize::from(status == 201);
            ids.insert(body["id"].as_i64().unwrap());
        }
        assert_eq!(created, 1, "{b}");
        assert_eq!(ids.len(), 1, "{b}: every answer names the same order");
        let (_, stats) = s.get("/v1/stats").await;
        assert_eq!(stats["member_orders"], 1, "{b}");
        assert_eq!(stats["members"], 1, "{b}: the buyer was not enrolled twice");
    }
}

/// The group writer answers a created order from what it wrote, not by reading it back: that answer must be
/// exactly what a later read returns, whatever the buyer and however precise the times sent.
#[tokio::test]
async fn a_created_order_is_answered_exactly_as_it_is_stored() {
    for s in servers().await {
        let b = s.db.backend;
        let member = seed_member(&s).await;
        let bodies = [
            // A known member by id, nanosecond times, two lines, shipping, an order discount and a coupon code.
            json!({
                "channel": "web", "order_no": "AS-1", "member_id": member, "status": "paid",
                "placed_at": "2026-05-20T12:00:00.123456789+08:00", "paid_at": "2026-05-20T12:01:02.987654321Z",
                "lines": [{"sku": "LIP-01", "quantity": 2, "unit_price": 15900, "discount": 500},
                          {"sku": "MASK-2", "quantity": 1, "unit_price": 8800}],
                "shipping_fee": 1200, "order_discount": 300, "coupon_code": "WELCOME"
            }),
            // A new buyer by identity, enrolled by the order.
            json!({
                "channel": "web", "order_no": "AS-2", "identity": {"kind": "customer_no", "value": "NEW-1"},
                "placed_at": "2026-05-21T09:30:00Z",
                "lines": [{"sku": "LIP-01", "quantity": 1, "unit_price": 15900}]
            }),
            // A guest.
            json!({
                "channel": "web", "order_no": "AS-3", "placed_at": "2026-05-22T09:30:00Z", "status": "completed",
                "lines": [{"sku": "MASK-2", "quantity": 3, "unit_price": 8800}]
            }),
        ];
        for body in bodies {
            let (status, created) = s.post("/v1/orders", body.clone()).await;
            assert_eq!(status, 201, "{b}: {created}");
            let (status, stored) = s.get(&format!("/v1/orders/{}", created["id"])).await;
            assert_eq!(status, 200, "{b}");
            assert_eq!(created, stored, "{b}: the answer to {body} differs from the stored order");
            // A retry reads the stored order and answers the same.
            let (status, again) = s.post("/v1/orders", body).await;
            assert_eq!(status, 200, "{b}");
            assert_eq!(again, stored, "{b}");
        }
    }
}

#[tokio::test]
async fn idempotency_key_replays_member_creation_and_refuses_a_different_body() {
    for s in servers().await {
        let b = s.db.backend;
        let send = |body: Value| {
            s.req(Role::Integration, Method::POST, "/v1/members").header("Idempotency-Key", "k-1").json(&body).send()
        };
        let body = json!({"identities": [{"kind": "customer_no", "value": "C-77"}]});
        let first = send(body.clone()).await.unwrap();
        assert_eq!(first.status().as_u16(), 201, "{b}");
        let first: Value = first.json().await.unwrap();
        let again = send(body).await.unwrap();
        assert_eq!(again.status().as_u16(), 201, "{b}: the stored answer is replayed");
        assert_eq!(again.json::<Value>().await.unwrap(), first);
        let other = send(json!({"identities": [{"kind": "customer_no", "value": "C-78"}]})).await.unwrap();
        assert_eq!(other.status().as_u16(), 409, "{b}");
        assert_eq!(other.json::<Value>().await.unwrap()["error"]["code"], "idempotency_key_reused");
    }
}

async fn expect_error(s: &TestServer, path: &str, body: &str, status: u16, code: &str, field: Option<&str>) {
    let r = s
        .req(Role::Admin, Method::POST, path)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let got = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    let b = s.db.backend;
    assert_eq!(got, status, "{b}: {path} {body} → {v}");
    assert_eq!(v["error"]["code"], code, "{b}: {path} {body} → {v}");
    if let Some(f) = field {
        assert_eq!(v["error"]["field"], f, "{b}: {path} {body} → {v}");
    }
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn bad_input_is_refused_with_a_named_field_and_nothing_is_stored() {
    for s in servers().await {
        let b = s.db.backend;
        seed_member(&s).await;
        expect_error(&s, "/v1/orders", "{\"channel\": ", 400, "malformed_json", None).await;
        expect_error(&s, "/v1/orders", r#"{"channel": "web", "order_no": 5}"#, 422, "invalid_field", Some("order_no"))
            .await;
        expect_error(
            &s,
            "/v1/orders",
            r#"{"channel": "web", "order_no": "X", "lines": []}"#,
            422,
            "missing_field",
            Some("placed_at"),
        )
        .await;
        let mut bad_line = order_body("BAD-1");
        bad_line["lines"] =
            json!([{"sku": "A", "quantity": 1, "unit_price": 100}, {"sku": "B", "quantity": -2, "unit_price": 100}]);
        expect_error(&s, "/v1/orders", &bad_line.to_string(), 422, "out_of_range", Some("lines[1].quantity")).await;
        let mut wrong_type = order_body("BAD-2");
        wrong_type["lines"][0]["unit_price"] = json!("15.90");
        expect_error(&s, "/v1/orders", &wrong_type.to_string(), 422, "invalid_field", Some("lines[0].unit_price"))
            .await;
        expect_error(
            &s,
            "/v1/members",
            r#"{"identities": [{"kind": "phone", "value": "12"}]}"#,
            422,
            "invalid_phone",
            Some("identities[0].value"),
        )
        .await;
        expect_error(
            &s,
            "/v1/members",
            r#"{"identities": [{"kind": "fax", "value": "12"}]}"#,
            422,
            "invalid_field",
            Some("identities[0].kind"),
        )
        .await;
        expect_error(&s, "/v1/members", r#"{"identities": [], "nickname": "x"}"#, 422, "unknown_field", None).await;
        let (_, stats) = s.get("/v1/stats").await;
        assert_eq!(
            (stats["member_orders"].as_i64(), stats["members"].as_i64()),
            (Some(0), Some(1)),
            "{b}: nothing half-written"
        );
        let r = s.req(Role::Admin, Method::POST, "/v1/orders").body("{}").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 415, "{b}: JSON bodies must say so");

        // Events: each bad one reported with its index; good ones stored.
        let batch = json!({"events": [
            {"type": "product_view", "occurred_at": "2026-05-20T10:00:00Z", "member_id": 1, "sku": "LIP-01"},
            {"type": "unicorn", "occurred_at": "2026-05-20T10:00:00Z", "member_id": 1},
            {"type": "search", "occurred_at": "2026-05-20T10:00:00Z", "member_id": 1},
            {"type": "check_in", "occurred_at": "yesterday", "member_id": 1},
            {"type": "check_in", "occurred_at": "2026-05-20T10:00:00Z", "member_id": 1}
        ]});
        let (status, v) = s.post("/v1/events", batch).await;
        assert_eq!(status, 200, "{b}: {v}");
        assert_eq!(v["stored"], 2, "{b}: {v}");
        let rejected: Vec<(i64, String)> = v["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["index"].as_i64().unwrap(), r["code"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(
            rejected,
            vec![(1, "unknown_event_type".into()), (2, "missing_field".into()), (3, "invalid_field".into())],
            "{b}: {v}"
        );
        let too_many: Vec<Value> = (0..10_001)
            .map(|_| json!({"type": "check_in", "occurred_at": "2026-05-20T10:00:00Z", "member_id": 1}))
            .collect();
        let (status, v) = s.post("/v1/events", json!({"events": too_many})).await;
        assert_eq!((status, v["error"]["code"].as_str()), (413, Some("batch_too_large")), "{b}");
    }
}

#[tokio::test]
async fn phones_and_emails_are_not_stored_in_clear() {
    for s in servers().await {
        let b = s.db.backend;
        seed_member(&s).await;
        let needles = ["13900000001", "mei@example.com", "韩梅梅"];
        if b == "sqlite" {
            let path = s.db.url.trim_start_matches("sqlite://").to_string();
            // Checkpoint so the WAL is folded into the main file, then read every byte of both.
            s.app.store.set_setting("test.flush", "1").await.unwrap();
            let mut bytes = std::fs::read(&path).unwrap();
            bytes.extend(std::fs::read(format!("{path}-wal")).unwrap_or_default());
            for n in needles {
                let hit = bytes.windows(n.len()).any(|w| w == n.as_bytes());
                assert!(!hit, "sqlite file contains `{n}` in clear");
            }
        } else {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&s.db.url).await.unwrap();
            let dump: String = sqlx::query_scalar(
                "SELECT string_agg(t::text, ' ') FROM (SELECT m::text AS t FROM members m UNION ALL SELECT i::text FROM identities i UNION ALL SELECT a::text FROM audit_log a) x",
            )
            .fetch_one(&mut c)
            .await
            .unwrap();
            for n in needles {
                assert!(!dump.contains(n), "postgres rows contain `{n}` in clear");
            }
        }
    }
}

#[tokio::test]
async fn spec_and_docs_are_served_offline() {
    let s = TestServer::spawn(crate::support::sqlite_db().await).await;
    let spec: Value = s.client.get(format!("{}/openapi.json", s.base)).send().await.unwrap().json().await.unwrap();
    let paths = spec["paths"].as_object().unwrap();
    for p in [
        "/v1/members",
        "/v1/members/{id}",
        "/v1/members/{id}/merge",
        "/v1/orders",
        "/v1/refunds",
        "/v1/events",
        "/v1/stats",
        "/health",
    ] {
        assert!(paths.contains_key(p), "spec lacks {p}");
    }
    let docs = s.client.get(format!("{}/docs/", s.base)).send().await.unwrap();
    assert_eq!(docs.status().as_u16(), 200);
    let html = docs.text().await.unwrap();
    assert!(!html.contains("https://"), "the docs page must not load anything from the internet");
    let health: Value = s.client.get(format!("{}/health", s.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let metrics = s.client.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("huiyuan_http_requests_total"), "{metrics}");
}

#[tokio::test]
async fn operators_adjust_points_idempotently_and_balances_follow() {
    for s in servers().await {
        let b = s.db.backend;
        let m = seed_member(&s).await;
        // Joining may already have earned (the registration rule): adjustments move balances from there.
        let (_, start) = s.get(&format!("/v1/members/{m}/points")).await;
        let (a0, g0) = (start["available"].as_i64().unwrap(), start["growth_value"].as_i64().unwrap());
        let adjust = |key: &'static str, body: Value| {
            s.req(Role::Operator, Method::POST, &format!("/v1/members/{m}/points/adjust"))
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
        };
        let r = adjust("goodwill-1", json!({"amount": 100, "reason": "快递延误补偿"})).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{b}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["points"]["available"], a0 + 100, "{b}: {v}");
        let again: Value =
            adjust("goodwill-1", json!({"amount": 100, "reason": "快递延误补偿"})).await.unwrap().json().await.unwrap();
        assert_eq!(again["points"]["available"], a0 + 100, "{b}: a retry changes nothing: {again}");
        let reused = adjust("goodwill-1", json!({"amount": 500, "reason": "快递延误补偿"})).await.unwrap();
        assert_eq!(reused.status().as_u16(), 409, "{b}");
        let debit: Value = adjust("fix-1", json!({"amount": -(a0 + 150), "reason": "重复发放冲正"}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (debit["points"]["available"].as_i64(), debit["points"]["redemption_blocked"].as_bool()),
            (Some(-50), Some(true)),
            "{b}: {debit}"
        );
        let growth: Value = adjust("g-1", json!({"amount": 30, "reason": "活动", "wallet": "growth"}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(growth["points"]["growth_value"], g0 + 30, "{b}");
        let no_key = s
            .req(Role::Operator, Method::POST, &format!("/v1/members/{m}/points/adjust"))
            .json(&json!({"amount": 1, "reason": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(no_key.status().as_u16(), 400, "{b}");
        let zero = adjust("z-1", json!({"amount": 0, "reason": "x"})).await.unwrap();
        assert_eq!(zero.status().as_u16(), 422, "{b}");
        let (status, _) = s.get("/v1/members/999999/points").await;
        assert_eq!(status, 404, "{b}");
        let analyst: Value = s
            .req(Role::Analyst, Method::GET, &format!("/v1/members/{m}/points"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (analyst["available"].as_i64(), analyst["growth_value"].as_i64()),
            (Some(-50), Some(g0 + 30)),
            "{b}"
        );
    }
}
