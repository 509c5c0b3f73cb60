//! Risk control (风控) over HTTP on both stores: velocity limits set through the API flag members, an open
//! flag blocks redemptions (never earning), an operator clears it with a note, and all of it is audited.

use reqwest::Method;
use serde_json::{Value, json};

use huiyuan::security::Role;

use crate::support::{TestServer, servers};

async fn member(s: &TestServer, phone: &str) -> i64 {
    let (status, body) = s.post("/v1/members", json!({"identities": [{"kind": "phone", "value": phone}]})).await;
    assert_eq!(status, 201, "{body}");
    body["member_id"].as_i64().unwrap()
}

async fn top_up(s: &TestServer, m: i64, amount: i64) {
    let r = s
        .req(Role::Operator, Method::POST, &format!("/v1/members/{m}/points/adjust"))
        .header("Idempotency-Key", format!("top-up-{m}"))
        .json(&json!({"amount": amount, "reason": "test balance"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

async fn available(s: &TestServer, m: i64) -> i64 {
    s.get(&format!("/v1/members/{m}/points")).await.1["available"].as_i64().unwrap()
}

async fn put_policy(s: &TestServer, role: Role, policy: Value) -> (u16, Value) {
    let r = s.req(role, Method::PUT, "/v1/loyalty/risk-policy").json(&policy).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn put_reward(s: &TestServer, id: &str, points: i64) {
    let body = json!({"id": id, "name": "保温杯", "kind": {"type": "goods", "sku": "MUG-1"}, "points": points});
    let r = s.req(Role::Operator, Method::PUT, &format!("/v1/rewards/{id}")).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

async fn redeem(s: &TestServer, reward: &str, m: i64, key: &str) -> (u16, Value) {
    let r = s
        .req(Role::Integration, Method::POST, &format!("/v1/rewards/{reward}/redemptions"))
        .header("Idempotency-Key", key)
        .json(&json!({"member_id": m}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn flags(s: &TestServer, m: i64) -> Vec<Value> {
    let (status, body) = s.get(&format!("/v1/members/{m}/risk-flags")).await;
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}

async fn clear(s: &TestServer, role: Role, m: i64, flag: i64, note: &str) -> (u16, Value) {
    let r = s
        .req(role, Method::POST, &format!("/v1/members/{m}/risk-flags/{flag}/clear"))
        .json(&json!({"note": note}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn audit_actions(s: &TestServer, m: i64) -> Vec<Value> {
    let (status, body) = s.get(&format!("/v1/audit?member_id={m}&limit=100")).await;
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}

fn limit(id: &str, activity: &str, measure: &str, window: Value, max: i64) -> Value {
    json!({"id": id, "activity": activity, "measure": measure, "window": window, "max": max})
}

#[tokio::test]
async fn crossing_the_redemptions_per_day_limit_blocks_the_next_until_an_operator_clears_it() {
    for s in servers().await {
        let b = s.db.backend;
        let policy = json!({"time_zone": "Asia/Shanghai",
            "limits": [limit("redemptions_per_day", "redeem", "events", json!({"type": "local_day"}), 2)]});
        let (status, body) = put_policy(&s, Role::Operator, policy.clone()).await;
        assert_eq!(status, 200, "{b}: {body}");
        let (_, stored) = s.get("/v1/loyalty/risk-policy").await;
        assert_eq!(stored["limits"][0]["max"], 2, "{b}: {stored}");

        let m = member(&s, "13900000701").await;
        top_up(&s, m, 1000).await;
        put_reward(&s, "mug", 10).await;
        for i in 0..2 {
            let (status, body) = redeem(&s, "mug", m, &format!("r-{i}")).await;
            assert_eq!(status, 201, "{b}: {body}");
        }
        assert!(flags(&s, m).await.is_empty(), "{b}: two a day are allowed");
        // The third crosses the limit: it goes through and flags the member.
        let (status, body) = redeem(&s, "mug", m, "r-2").await;
        assert_eq!(status, 201, "{b}: {body}");
        let f = flags(&s, m).await;
        assert_eq!(f.len(), 1, "{b}: {f:?}");
        assert_eq!(f[0]["rule"], "redemptions_per_day", "{b}");
        assert_eq!(f[0]["open"], true, "{b}");
        assert!(f[0]["detail"].as_str().unwrap().starts_with("3 redemptions on "), "{b}: {}", f[0]);
        let flag_id = f[0]["id"].as_i64().unwrap();

        // Flagged: the next redemption is refused and writes nothing; a retry of an accepted one still replays.
        let before = available(&s, m).await;
        let (status, body) = redeem(&s, "mug", m, "r-3").await;
        assert_eq!(status, 409, "{b}: {body}");
        assert_eq!(body["error"]["code"], "blocked", "{b}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("redemptions_per_day"), "{b}: {body}");
        assert_eq!(available(&s, m).await, before, "{b}");
        let (status, _) = redeem(&s, "mug", m, "r-2").await;
        assert_eq!(status, 200, "{b}: the earlier redemption replays");

        // Earning goes on while flagged.
        let r = s.req(Role::Integration, Method::POST, &format!("/v1/members/{m}/check-ins")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201, "{b}");
        assert!(available(&s, m).await > before, "{b}: the check-in earned");

        // Only operators clear, and only with a note.
        for role in [Role::Integration, Role::Analyst] {
            let (status, _) = clear(&s, role, m, flag_id, "looks fine").await;
            assert_eq!(status, 403, "{b}: {role} cannot clear");
        }
        let (status, body) = clear(&s, Role::Operator, m, flag_id, "  ").await;
        assert_eq!(status, 422, "{b}: {body}");
        assert_eq!(body["error"]["field"], "note", "{b}: {body}");
        let (status, _) = clear(&s, Role::Operator, m, flag_id + 1000, "no such flag").await;
        assert_eq!(status, 404, "{b}");
        let (status, cleared) = clear(&s, Role::Operator, m, flag_id, "门店活动, 顾客到店核实").await;
        assert_eq!(status, 200, "{b}: {cleared}");
        assert_eq!(cleared["open"], false, "{b}");
        assert_eq!(cleared["note"], "门店活动, 顾客到店核实", "{b}");
        let operator = s.key(Role::Operator);
        assert!(cleared["cleared_by"].as_str().is_some_and(|c| operator.starts_with(c)), "{b}: {cleared}");
        // The same clear again is a retry; another note on a cleared flag is refused.
        let (status, again) = clear(&s, Role::Operator, m, flag_id, "门店活动, 顾客到店核实").await;
        assert_eq!((status, &again["cleared_at"]), (200, &cleared["cleared_at"]), "{b}: {again}");
        let (status, body) = clear(&s, Role::Admin, m, flag_id, "another reason").await;
        assert_eq!(status, 409, "{b}: {body}");
        assert_eq!(body["error"]["code"], "already_cleared", "{b}");

        // Cleared: redemptions work again. Still over today's limit, so this one flags the member anew.
        let (status, body) = redeem(&s, "mug", m, "r-4").await;
        assert_eq!(status, 201, "{b}: {body}");
        let f = flags(&s, m).await;
        assert_eq!(f.iter().filter(|f| f["open"] == true).count(), 1, "{b}: {f:?}");
        assert_eq!(f.len(), 2, "{b}: the cleared flag is kept: {f:?}");

        // The audit log has the raise and the clear.
        let log = audit_actions(&s, m).await;
        let actions: Vec<&str> = log.iter().filter_map(|e| e["action"].as_str()).collect();
        assert_eq!(actions.iter().filter(|a| **a == "risk.flag").count(), 2, "{b}: {actions:?}");
        assert_eq!(actions.iter().filter(|a| **a == "risk.clear").count(), 1, "{b}: the retry is not a second clear");
        let c = log.iter().find(|e| e["action"] == "risk.clear").unwrap();
        assert_eq!(c["detail"]["note"], "门店活动, 顾客到店核实", "{b}: {c}");
        assert_eq!(c["detail"]["flag_id"], flag_id, "{b}: {c}");
    }
}

#[tokio::test]
async fn crossing_an_earn_velocity_limit_through_events_check_ins_and_orders_flags_but_earning_goes_on() {
    for s in servers().await {
        let b = s.db.backend;
        let policy = json!({"limits": [
            limit("earn_events_per_hour", "earn", "events", json!({"type": "sliding", "minutes": 60}), 3),
            limit("points_earned_per_day", "earn", "points", json!({"type": "local_day"}), 100000)]});
        let (status, body) = put_policy(&s, Role::Admin, policy).await;
        assert_eq!(status, 200, "{b}: {body}");
        // Joining earns (1), a check-in (2), a share (3): at the limit, not over it.
        let m = member(&s, "13900000702").await;
        let r = s.req(Role::Integration, Method::POST, &format!("/v1/members/{m}/check-ins")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201, "{b}");
        let now = chrono::Utc::now().to_rfc3339();
        let (status, body) = s
            .post(
                "/v1/events",
                json!({"events": [{"type": "share", "member_id": m, "event_id": "share-1", "occurred_at": now}]}),
            )
            .await;
        assert!(status == 200 || status == 201, "{b}: {body}");
        assert!(flags(&s, m).await.is_empty(), "{b}: three earn events in an hour are allowed");
        let (_, history) = s.get(&format!("/v1/members/{m}/points/history")).await;
        assert!(history.to_string().contains("share"), "{b}: the share earned: {history}");
        // An order is the fourth.
        let order = |no: &str| {
            json!({"channel": "web", "order_no": no, "member_id": m, "placed_at": chrono::Utc::now().to_rfc3339(),
                   "lines": [{"sku": "TEA-1", "quantity": 1, "unit_price": 5000, "name": "绿茶"}], "shipping_fee": 0})
        };
        let (status, body) = s.post("/v1/orders", order("RISK-1")).await;
        assert_eq!(status, 201, "{b}: {body}");
        let one = s.get(&format!("/v1/members/{m}/points")).await.1["pending"].as_i64().unwrap();
        assert!(one > 0, "{b}");
        let f = flags(&s, m).await;
        assert_eq!(f.len(), 1, "{b}: {f:?}");
        assert_eq!(f[0]["rule"], "earn_events_per_hour", "{b}");
        assert_eq!(f[0]["detail"], "4 earn events in the last hour, limit 3", "{b}");
        // The order earned all the same, and so does the next one; the open flag is not raised twice.
        let (status, body) = s.post("/v1/orders", order("RISK-2")).await;
        assert_eq!(status, 201, "{b}: {body}");
        let p = s.get(&format!("/v1/members/{m}/points")).await.1;
        assert_eq!(p["pending"], 2 * one, "{b}: both orders earned: {p}");
        assert_eq!(flags(&s, m).await.len(), 1, "{b}");
        // Flagged for earning too fast: redemptions are blocked.
        put_reward(&s, "tea-sample", 1).await;
        let (status, body) = redeem(&s, "tea-sample", m, "k-1").await;
        assert_eq!(status, 409, "{b}: {body}");
        assert_eq!(body["error"]["code"], "blocked", "{b}: {body}");
        let log = audit_actions(&s, m).await;
        assert!(log.iter().any(|e| e["action"] == "risk.flag" && e["detail"]["rule"] == "earn_events_per_hour"), "{b}");
        assert_eq!(s.app.store.loyalty_backlog().await.unwrap(), (0, 0), "{b}: nothing failed");
    }
}

#[tokio::test]
async fn the_policy_starts_as_the_example_and_a_bad_one_is_refused_naming_the_field() {
    for s in servers().await {
        let b = s.db.backend;
        let (status, p) = s.get("/v1/loyalty/risk-policy").await;
        assert_eq!(status, 200, "{b}");
        let ids: Vec<&str> = p["limits"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["earn_events_per_hour", "redemptions_per_day", "points_earned_per_day"], "{b}");
        assert_eq!(p["time_zone"], "Asia/Shanghai", "{b}");

        let ok = limit("fast", "earn", "events", json!({"type": "sliding", "minutes": 60}), 30);
        let cases = [
            (
                json!({"limits": [ok.clone(), limit("slow", "earn", "events", json!({"type": "local_day"}), 0)]}),
                "limits[1].max",
            ),
            (json!({"limits": [ok.clone(), ok.clone()]}), "limits[1].id"),
            (
                json!({"limits": [limit("fast", "earn", "events", json!({"type": "sliding", "minutes": 0}), 3)]}),
                "limits[0].window.minutes",
            ),
            (json!({"limits": [limit("Fast!", "earn", "events", json!({"type": "local_day"}), 3)]}), "limits[0].id"),
            (
                json!({"limits": [limit("fast", "spend", "events", json!({"type": "local_day"}), 3)]}),
                "limits[0].activity",
            ),
        ];
        for (policy, field) in cases {
            let (status, body) = put_policy(&s, Role::Operator, policy).await;
            assert_eq!(status, 422, "{b}: {body}");
            assert_eq!(body["error"]["field"], field, "{b}: {body}");
        }
        let (status, _) = put_policy(&s, Role::Analyst, json!({"limits": [ok.clone()]})).await;
        assert_eq!(status, 403, "{b}");
        let (status, _) = put_policy(&s, Role::Integration, json!({"limits": [ok.clone()]})).await;
        assert_eq!(status, 403, "{b}");
        // Nothing refused was stored.
        assert_eq!(s.get("/v1/loyalty/risk-policy").await.1, p, "{b}");
        let (status, body) = put_policy(&s, Role::Operator, json!({"limits": [ok]})).await;
        assert_eq!(status, 200, "{b}: {body}");
        let (_, now) = s.get("/v1/loyalty/risk-policy").await;
        assert_eq!(now["limits"].as_array().unwrap().len(), 1, "{b}: {now}");
        let (_, log) = s.get("/v1/audit?limit=20").await;
        let entry = log.as_array().unwrap().iter().find(|e| e["action"] == "loyalty.risk_policy").cloned();
        assert_eq!(entry.map(|e| e["detail"]["policy"]["limits"][0]["id"].clone()), Some(json!("fast")), "{b}: {log}");
    }
}

#[tokio::test]
async fn ten_concurrent_redemptions_over_a_limit_of_two_give_three_and_one_flag() {
    for s in servers().await {
        let b = s.db.backend;
        let policy =
            json!({"limits": [limit("redemptions_per_day", "redeem", "events", json!({"type": "local_day"}), 2)]});
        assert_eq!(put_policy(&s, Role::Operator, policy).await.0, 200, "{b}");
        let m = member(&s, "13900000703").await;
        top_up(&s, m, 1000).await;
        put_reward(&s, "pen", 10).await;
        let keys: Vec<String> = (0..10).map(|i| format!("c-{i}")).collect();
        let results = futures::future::join_all(keys.iter().map(|k| redeem(&s, "pen", m, k))).await;
        // Each decision runs under the member's lock and sees the flags raised before it: two within the
        // limit, the third crosses it and flags, the rest are blocked.
        assert_eq!(results.iter().filter(|(st, _)| *st == 201).count(), 3, "{b}: {results:?}");
        for (st, body) in results.iter().filter(|(st, _)| *st != 201) {
            assert_eq!((*st, body["error"]["code"].as_str()), (409, Some("blocked")), "{b}: {body}");
        }
        assert_eq!(flags(&s, m).await.len(), 1, "{b}");
        assert_eq!(available(&s, m).await, 1000 + 100 - 30, "{b}: registration, top-up, three redemptions");
    }
}

#[tokio::test]
async fn points_earned_over_a_day_limit_flag() {
    for s in servers().await {
        let b = s.db.backend;
        let policy =
            json!({"limits": [limit("points_earned_per_day", "earn", "points", json!({"type": "local_day"}), 120)]});
        assert_eq!(put_policy(&s, Role::Operator, policy).await.0, 200, "{b}");
        // Joining earns 100: within the limit. Operator top-ups are not earning.
        let m = member(&s, "13900000704").await;
        top_up(&s, m, 5000).await;
        assert!(flags(&s, m).await.is_empty(), "{b}");
        let order = json!({"channel": "web", "order_no": "RISK-P-1", "member_id": m,
            "placed_at": chrono::Utc::now().to_rfc3339(),
            "lines": [{"sku": "TEA-1", "quantity": 1, "unit_price": 5000, "name": "绿茶"}], "shipping_fee": 0});
        let (status, body) = s.post("/v1/orders", order).await;
        assert_eq!(status, 201, "{b}: {body}");
        let f = flags(&s, m).await;
        assert_eq!(f.len(), 1, "{b}: {f:?}");
        assert_eq!(f[0]["rule"], "points_earned_per_day", "{b}");
        assert!(f[0]["detail"].as_str().unwrap().ends_with("(Asia/Shanghai day), limit 120"), "{b}: {}", f[0]);
    }
}
