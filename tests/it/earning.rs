//! Earning end to end over HTTP, on both stores: rule versions, orders earning pending points per line,
//! refunds reversing exactly the refunded line, check-ins, the simulator, history with reasons, and
//! recovery of work a crash left queued.

use reqwest::Method;
use serde_json::{Value, json};

use huiyuan::security::Role;

use crate::support::{TestServer, servers};

async fn member(s: &TestServer, phone: &str) -> i64 {
    let (status, body) = s.post("/v1/members", json!({"identities": [{"kind": "phone", "value": phone}]})).await;
    assert_eq!(status, 201, "{body}");
    body["member_id"].as_i64().unwrap()
}

async fn points(s: &TestServer, m: i64) -> Value {
    let (status, body) = s.get(&format!("/v1/members/{m}/points")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Monday 2026-06-01 12:00 in Shanghai: no member day, no campaign, no birthday.
fn order(no: &str, m: i64) -> Value {
    json!({
        "channel": "web", "order_no": no, "member_id": m,
        "placed_at": "2026-06-01T12:00:00+08:00",
        "lines": [
            {"sku": "TEA-1", "quantity": 2, "unit_price": 5000, "name": "绿茶"},
            {"sku": "CUP-1", "quantity": 1, "unit_price": 5050, "name": "茶杯"}
        ],
        "shipping_fee": 1000
    })
}

#[tokio::test]
async fn rule_versions_are_sequential_validated_and_audited() {
    for s in servers().await {
        let b = s.db.backend;
        let (status, current) = s.get("/v1/loyalty/rules").await;
        assert_eq!(status, 200, "{b}: {current}");
        assert_eq!(current["version"], 1, "{b}: the built-in rules are stored as version 1");
        let mut draft = current["rules"].clone();
        draft["version"] = json!(3);
        let put = |body: Value, role: Role| s.req(role, Method::PUT, "/v1/loyalty/rules").json(&body).send();
        let skip = put(draft.clone(), Role::Operator).await.unwrap();
        assert_eq!(skip.status().as_u16(), 409, "{b}: versions cannot skip");
        let e: Value = skip.json().await.unwrap();
        assert_eq!(e["error"]["code"], "version_conflict", "{b}");
        draft["version"] = json!(2);
        let analyst = put(draft.clone(), Role::Analyst).await.unwrap();
        assert_eq!(analyst.status().as_u16(), 403, "{b}");
        let mut bad = draft.clone();
        bad["rules"][0]["points_per_unit"] = json!(-1);
        let bad = put(bad, Role::Operator).await.unwrap();
        assert_eq!(bad.status().as_u16(), 422, "{b}");
        let e: Value = bad.json().await.unwrap();
        assert_eq!(e["error"]["field"], "rules[0].points_per_unit", "{b}: {e}");
        let mut wrong_type = draft.clone();
        wrong_type["rules"][0]["points_per_unit"] = json!("two");
        let wrong_type = put(wrong_type, Role::Operator).await.unwrap();
        assert_eq!(wrong_type.status().as_u16(), 422, "{b}");
        draft["rules"][0]["points_per_unit"] = json!(2);
        let ok = put(draft.clone(), Role::Operator).await.unwrap();
        assert_eq!(ok.status().as_u16(), 201, "{b}");
        let again = put(draft, Role::Operator).await.unwrap();
        assert_eq!(again.status().as_u16(), 409, "{b}: the same version twice is a conflict, never last-write-wins");
        let (_, versions) = s.get("/v1/loyalty/rules/versions").await;
        let v: Vec<i64> = versions.as_array().unwrap().iter().map(|r| r["version"].as_i64().unwrap()).collect();
        assert_eq!(v, [2, 1], "{b}");
        let (_, one) = s.get("/v1/loyalty/rules/versions/1").await;
        assert_eq!(one["rules"]["rules"][0]["points_per_unit"], 1, "{b}: old versions stay as they were");
        let (_, audit) = s.get("/v1/audit?limit=50").await;
        assert!(audit.to_string().contains("loyalty.rules"), "{b}: {audit}");
    }
}

#[tokio::test]
async fn orders_earn_pending_points_per_line_and_refunds_reverse_exactly_the_refunded_line() {
    for s in servers().await {
        let b = s.db.backend;
        let m = member(&s, "13900000101").await;
        let joined = points(&s, m).await;
        assert_eq!(joined["available"], 100, "{b}: the registration rule: {joined}");
        let (status, o) = s.post("/v1/orders", order("E-1", m)).await;
        assert_eq!(status, 201, "{b}: {o}");
        let p = points(&s, m).await;
        // 1 point per yuan per line, floored: 100.00 → 100, 50.50 → 50; shipping does not earn.
        assert_eq!((p["pending"].as_i64(), p["growth_pending"].as_i64()), (Some(150), Some(150)), "{b}: {p}");
        assert_eq!(p["available"], 100, "{b}: order points wait for the return window");
        // A retried order earns nothing more.
        let (status, _) = s.post("/v1/orders", order("E-1", m)).await;
        assert_eq!(status, 200, "{b}");
        assert_eq!(points(&s, m).await["pending"], 150, "{b}");
        // Refund the cup (line 2): exactly its 50 points and 50 growth go.
        let order_id = o["id"].as_i64().unwrap();
        let (status, r) = s
            .post(
                "/v1/refunds",
                json!({"channel": "web", "refund_no": "R-1", "order_id": order_id,
                       "refunded_at": "2026-06-02T10:00:00+08:00", "lines": [{"line_no": 2, "quantity": 1}]}),
            )
            .await;
        assert_eq!(status, 201, "{b}: {r}");
        let p = points(&s, m).await;
        assert_eq!((p["pending"].as_i64(), p["growth_pending"].as_i64()), (Some(100), Some(100)), "{b}: {p}");
        // Half the tea (1 of 2 units): half its points.
        let (status, _) = s
            .post(
                "/v1/refunds",
                json!({"channel": "web", "refund_no": "R-2", "order_id": order_id,
                       "refunded_at": "2026-06-03T10:00:00+08:00", "lines": [{"line_no": 1, "quantity": 1}]}),
            )
            .await;
        assert_eq!(status, 201, "{b}");
        assert_eq!(points(&s, m).await["pending"], 50, "{b}");
        // History: newest first, every order entry says which rules applied.
        let (status, h) = s.get(&format!("/v1/members/{m}/points/history")).await;
        assert_eq!(status, 200, "{b}");
        let entries = h.as_array().unwrap();
        let earn = entries
            .iter()
            .find(|e| e["op"] == "order:1:1:points" || e["op"].as_str().is_some_and(|o| o.ends_with(":1:points")))
            .unwrap_or_else(|| panic!("{b}: no order earn entry in {h}"));
        let why = earn["why"].to_string();
        assert!(why.contains("base") && why.contains("applied"), "{b}: {why}");
        assert!(
            why.contains("member_day") && why.contains("Wednesday"),
            "{b}: the rules that did not apply say why: {why}"
        );
        assert_eq!(entries.iter().filter(|e| e["kind"] == "reverse").count(), 4, "{b}: two refunds × two wallets");
        // The ledger is sound.
        let report = s.app.verify_ledgers().await.unwrap();
        assert!(report.violations.is_empty(), "{b}: {:?}", report.violations);

        if b == "sqlite" {
            // SQLite stores evaluations compressed, and still reads those stored as JSON text before.
            let pool = sqlx::SqlitePool::connect(&s.db.url).await.unwrap();
            let kinds: String =
                sqlx::query_scalar("SELECT group_concat(DISTINCT typeof(evaluation)) FROM loyalty_evaluations")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            assert_eq!(kinds, "blob");
            let text = r#"{"rule_version":1,"effects":[],"explanations":[{"rule_id":"legacy","target":{"on":"order"},"applied":true,"reason":"stored as text"}]}"#;
            let updated =
                sqlx::query("UPDATE loyalty_evaluations SET evaluation = $1 WHERE member_id = $2 AND op = $3")
                    .bind(text)
                    .bind(m)
                    .bind(format!("order:{order_id}"))
                    .execute(&pool)
                    .await
                    .unwrap();
            assert_eq!(updated.rows_affected(), 1);
            let (_, h) = s.get(&format!("/v1/members/{m}/points/history")).await;
            let why = h.to_string();
            assert!(why.contains("legacy (v1): applied: stored as text"), "{why}");
            pool.close().await;
        }
    }
}

#[tokio::test]
async fn the_simulator_explains_and_writes_nothing() {
    for s in servers().await {
        let b = s.db.backend;
        let m = member(&s, "13900000102").await;
        let before = points(&s, m).await;
        // Wednesday 2026-06-03: member day doubles points.
        let input = json!({"type": "order", "channel": "web", "placed_at": "2026-06-03T02:00:00Z", "paid": true,
            "lines": [{"line_no": 1, "sku": "TEA-1", "kind": "product", "amount": 12345}], "shipping_fee": 0});
        let r = s
            .req(Role::Analyst, Method::POST, "/v1/loyalty/simulate")
            .json(&json!({"member_id": m, "input": input}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{b}");
        let v: Value = r.json().await.unwrap();
        assert_eq!((v["points"].as_i64(), v["growth"].as_i64()), (Some(246), Some(123)), "{b}: {v}");
        let member_day = v["explanations"].as_array().unwrap().iter().find(|e| e["rule_id"] == "member_day").unwrap();
        assert_eq!(member_day["applied"], true, "{b}");
        assert_eq!(points(&s, m).await, before, "{b}: a simulation writes nothing");
        // A draft rule set is tried without being stored; a bad draft names its field.
        let (_, current) = s.get("/v1/loyalty/rules").await;
        let mut draft = current["rules"].clone();
        draft["rules"][0]["points_per_unit"] = json!(3);
        let (status, v) = s.post("/v1/loyalty/simulate", json!({"input": input, "rules": draft})).await;
        assert_eq!(status, 200, "{b}: {v}");
        assert_eq!(v["points"], 740, "{b}: 123.45 yuan × 3 × 2 on member day = 740.7, floored: {v}");
        draft["rules"][0]["points_per_unit"] = json!(-3);
        let (status, v) = s.post("/v1/loyalty/simulate", json!({"input": input, "rules": draft})).await;
        assert_eq!(status, 422, "{b}");
        assert_eq!(v["error"]["field"], "rules.rules[0].points_per_unit", "{b}: {v}");
        let (_, versions) = s.get("/v1/loyalty/rules/versions").await;
        assert_eq!(versions.as_array().unwrap().len(), 1, "{b}: drafts are not stored");
        let (status, _) = s.post("/v1/loyalty/simulate", json!({"member_id": 999999, "input": input})).await;
        assert_eq!(status, 422, "{b}");
    }
}

#[tokio::test]
async fn a_check_in_earns_once_a_day() {
    for s in servers().await {
        let b = s.db.backend;
        let m = member(&s, "13900000103").await;
        let before = points(&s, m).await["available"].as_i64().unwrap();
        let check_in = || s.req(Role::Integration, Method::POST, &format!("/v1/members/{m}/check-ins")).send();
        let first = check_in().await.unwrap();
        assert_eq!(first.status().as_u16(), 201, "{b}");
        let v: Value = first.json().await.unwrap();
        assert_eq!((v["streak_day"].as_i64(), v["points"].as_i64()), (Some(1), Some(1)), "{b}: {v}");
        let second = check_in().await.unwrap();
        assert_eq!(second.status().as_u16(), 200, "{b}");
        let v: Value = second.json().await.unwrap();
        assert_eq!((v["first_today"].as_bool(), v["points"].as_i64()), (Some(false), Some(1)), "{b}: {v}");
        assert_eq!(points(&s, m).await["available"], before + 1, "{b}");
        // A check-in event from another channel the same day earns nothing more.
        let (status, _) = s
            .post(
                "/v1/events",
                json!({"events": [{"type": "check_in", "member_id": m, "channel": "app",
                    "occurred_at": chrono::Utc::now().to_rfc3339()}]}),
            )
            .await;
        assert!(status == 200 || status == 201, "{b}: {status}");
        assert_eq!(points(&s, m).await["available"], before + 1, "{b}");
        let bad = s
            .req(Role::Integration, Method::POST, &format!("/v1/members/{m}/check-ins"))
            .body("{\"chanel\": \"app\"}")
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status().as_u16(), 422, "{b}: unknown fields are refused");
        let (_, backlog) = (0, s.app.store.loyalty_backlog().await.unwrap());
        assert_eq!(backlog, (0, 0), "{b}: nothing left queued or failed");
    }
}

#[tokio::test]
async fn work_left_queued_by_a_crash_is_settled_once() {
    use huiyuan::commerce::OrderInput;
    use huiyuan::store::{Actor, BuyerKey, OrderWrite};
    for s in servers().await {
        let b = s.db.backend;
        let m = member(&s, "13900000104").await;
        // Write an order straight to the store, as if the process died right after its commit.
        let input: OrderInput = serde_json::from_value(order("CRASH-1", m)).unwrap();
        let draft = input.validate("CNY", chrono::Utc::now()).unwrap();
        let digest = huiyuan::security::content_digest(&draft);
        let w = OrderWrite { draft, buyer: BuyerKey::Member(m), digest };
        let actor = Actor { id: "test".into(), at: chrono::Utc::now() };
        s.app.store.insert_orders(&[w], &actor).await.unwrap();
        assert_eq!(s.app.store.loyalty_backlog().await.unwrap(), (1, 0), "{b}");
        assert_eq!(points(&s, m).await["pending"], 0, "{b}");
        assert_eq!(s.app.settle_loyalty().await.unwrap(), 1, "{b}");
        assert_eq!(points(&s, m).await["pending"], 150, "{b}");
        assert_eq!(s.app.settle_loyalty().await.unwrap(), 0, "{b}: settled once");
        let entries = s.app.store.ledger_entries(m).await.unwrap().len();
        s.app.settle_loyalty().await.unwrap();
        assert_eq!(s.app.store.ledger_entries(m).await.unwrap().len(), entries, "{b}");
    }
}

/// One line of 100 yuan, placed like `order`.
fn hundred_yuan_order(no: &str, m: i64) -> Value {
    json!({
        "channel": "web", "order_no": no, "member_id": m, "placed_at": "2026-06-01T12:00:00+08:00",
        "lines": [{"sku": "TEA-1", "quantity": 1, "unit_price": 10000}]
    })
}

#[tokio::test]
async fn an_order_earns_in_its_own_commit_behind_queued_work_and_with_the_rules_stored_last() {
    use huiyuan::commerce::OrderInput;
    use huiyuan::store::{Actor, BuyerKey, OrderWrite};
    for s in servers().await {
        let b = s.db.backend;
        let m = member(&s, "13900000109").await;
        let (status, _) = s.post("/v1/orders", order("IN-1", m)).await;
        assert_eq!(status, 201, "{b}");
        assert_eq!(points(&s, m).await["pending"], 150, "{b}");
        assert_eq!(s.app.store.loyalty_backlog().await.unwrap(), (0, 0), "{b}");

        // Work already queued for the member (an order whose earning a crash interrupted): the next order
        // waits behind it, and both are settled, in order, before the request is answered.
        let input: OrderInput = serde_json::from_value(order("IN-2", m)).unwrap();
        let draft = input.validate("CNY", chrono::Utc::now()).unwrap();
        let digest = huiyuan::security::content_digest(&draft);
        let w = OrderWrite { draft, buyer: BuyerKey::Member(m), digest };
        let actor = Actor { id: "test".into(), at: chrono::Utc::now() };
        let queued_id = match s.app.store.insert_orders(&[w], &actor).await.unwrap()[0] {
            huiyuan::store::WriteOutcome::Created(id) => id,
            ref o => panic!("{b}: {o:?}"),
        };
        assert_eq!(s.app.store.loyalty_backlog().await.unwrap(), (1, 0), "{b}");
        let (status, o3) = s.post("/v1/orders", order("IN-3", m)).await;
        assert_eq!(status, 201, "{b}: {o3}");
        assert_eq!(s.app.store.loyalty_backlog().await.unwrap(), (0, 0), "{b}: nothing left queued");
        assert_eq!(points(&s, m).await["pending"], 450, "{b}");
        let ops: Vec<String> = s.app.store.ledger_entries(m).await.unwrap().into_iter().map(|e| e.op).collect();
        let first = |order_id: i64| ops.iter().position(|op| op.starts_with(&format!("order:{order_id}:"))).unwrap();
        assert!(first(queued_id) < first(o3["id"].as_i64().unwrap()), "{b}: the queued order earned first: {ops:?}");

        // New rules apply to the very next order, whether stored through this server or by another process
        // straight into the database.
        let (_, current) = s.get("/v1/loyalty/rules").await;
        let mut draft = current["rules"].clone();
        draft["version"] = json!(2);
        draft["rules"][0]["points_per_unit"] = json!(2);
        let put = s.req(Role::Operator, Method::PUT, "/v1/loyalty/rules").json(&draft).send().await.unwrap();
        assert_eq!(put.status().as_u16(), 201, "{b}");
        let (status, _) = s.post("/v1/orders", hundred_yuan_order("IN-4", m)).await;
        assert_eq!(status, 201, "{b}");
        assert_eq!(points(&s, m).await["pending"], 650, "{b}: 2 points a yuan under version 2");
        draft["version"] = json!(3);
        draft["rules"][0]["points_per_unit"] = json!(3);
        let body = serde_json::to_string(&draft).unwrap();
        s.app.store.insert_rule_set(3, &body, &actor).await.unwrap().unwrap();
        let (status, _) = s.post("/v1/orders", hundred_yuan_order("IN-5", m)).await;
        assert_eq!(status, 201, "{b}");
        assert_eq!(points(&s, m).await["pending"], 950, "{b}: 3 points a yuan under version 3");
        let report = s.app.verify_ledgers().await.unwrap();
        assert!(report.violations.is_empty(), "{b}: {:?}", report.violations);
    }
}

#[tokio::test]
async fn tiers_upgrade_at_once_keep_through_grace_and_drop_one_tier_at_a_time() {
    use huiyuan::app::App;
    use huiyuan::commerce::{OrderInput, RefundInput};
    use huiyuan::members::MemberInput;
    use huiyuan::security::Principal;
    use std::sync::Arc;
    for db in crate::support::test_dbs().await {
        let b = db.backend;
        let mut cfg = crate::support::config_for(&db);
        // Order growth counts at once here, so the tier follows each order.
        cfg.loyalty.return_window_days = 0;
        let app = Arc::new(App::start(cfg).await.unwrap());
        let who = Principal::cli();
        let input: MemberInput =
            serde_json::from_value(json!({"identities": [{"kind": "phone", "value": "13900000301"}]})).unwrap();
        let m = app.upsert_members(&[input], &who).await.unwrap()[0].as_ref().unwrap().member_id().unwrap();
        let now = app.now();
        // Orders are placed on two days that are both off the 会员日, whose ×2 would blur the tier multiplier
        // asserted below: "today" is the latest such pair's second day.
        let day = chrono::Duration::days(1);
        let mut today = now;
        while crate::support::off_member_day(today) != today
            || crate::support::off_member_day(today - day) != today - day
        {
            today -= day;
        }
        let order = |no: &str, yuan: i64, days_ago: i64| -> OrderInput {
            let placed_at = today - chrono::Duration::days(days_ago);
            serde_json::from_value(json!({"channel": "web", "order_no": no, "member_id": m, "placed_at": placed_at,
                "lines": [{"sku": "BAG-1", "quantity": 1, "unit_price": yuan * 100}]}))
            .unwrap()
        };
        let t = app.tier_view(m).await.unwrap().expect("enrolled on joining");
        assert_eq!(t.tier, "regular", "{b}");
        app.record_orders(&[order("T-1", 2500, 1)], &who).await.unwrap();
        let t = app.tier_view(m).await.unwrap().unwrap();
        assert_eq!(t.tier, "silver", "{b}: 2,500 growth reaches 银卡 (2,000) at once");
        let up = t.history.last().unwrap();
        assert!(up.reason.contains("银卡") && up.reason.contains("2,000"), "{b}: {}", up.reason);
        assert_eq!(app.points(m).await.unwrap().unwrap().tier.as_deref(), Some("silver"), "{b}");
        // Silver earns ×1.2 from now on (the rule set's tier multiplier): 100 yuan → 120 points. (The first
        // order was yesterday: its 2,500 points were capped at the daily 2,000, which today does not touch.)
        let before = app.points(m).await.unwrap().unwrap().available;
        app.record_orders(&[order("T-2", 100, 0)], &who).await.unwrap();
        assert_eq!(app.points(m).await.unwrap().unwrap().available - before, 120, "{b}");
        // Both orders refunded: growth falls to 0, but the tier is only reviewed on schedule.
        for (no, id) in [("T-1", 1), ("T-2", 2)] {
            let order_id = app.store.order_id_by_no("web", no).await.unwrap().unwrap();
            let r: RefundInput = serde_json::from_value(json!({"channel": "web", "refund_no": format!("R-{id}"),
                "order_id": order_id, "refunded_at": now}))
            .unwrap();
            app.record_refund(&r, &who).await.unwrap();
        }
        assert_eq!(app.tier_view(m).await.unwrap().unwrap().tier, "silver", "{b}");
        // The next monthly review starts 30 days of grace; when it ends without recovery, down one tier.
        app.run_ledger_jobs(now + chrono::Duration::days(32)).await.unwrap();
        let t = app.tier_view(m).await.unwrap().unwrap();
        assert_eq!(t.tier, "silver", "{b}: in grace");
        assert!(t.progress.grace_ends_at.is_some(), "{b}");
        app.run_ledger_jobs(now + chrono::Duration::days(70)).await.unwrap();
        let t = app.tier_view(m).await.unwrap().unwrap();
        assert_eq!(t.tier, "regular", "{b}");
        let kinds: Vec<String> =
            t.history.iter().map(|c| serde_json::to_value(c.kind).unwrap().as_str().unwrap().to_string()).collect();
        assert_eq!(kinds, ["enrolled", "upgraded", "grace_started", "downgraded"], "{b}");
        // Running the jobs again at the same time writes nothing more.
        app.run_ledger_jobs(now + chrono::Duration::days(70)).await.unwrap();
        assert_eq!(app.tier_view(m).await.unwrap().unwrap().history.len(), 4, "{b}");
        let report = app.verify_ledgers().await.unwrap();
        assert!(report.violations.is_empty(), "{b}: {:?}", report.violations);
    }
}

/// 邀请有礼: both sides earn on the referee's first paid order — once, whatever is retried or ordered later.
#[tokio::test]
async fn a_referral_pays_both_sides_once_on_the_referees_first_paid_order() {
    for s in servers().await {
        let b = s.db.backend;
        let referrer = member(&s, "13900000601").await;
        let before = points(&s, referrer).await["available"].as_i64().unwrap();
        // An unknown referrer is refused, naming the field; nothing is created.
        let (status, e) = s
            .post(
                "/v1/members",
                json!({"identities": [{"kind": "phone", "value": "13900000602"}], "referred_by": 999_999}),
            )
            .await;
        assert_eq!(status, 422, "{b}: {e}");
        assert_eq!(e["error"]["field"], "referred_by", "{b}: {e}");
        let (status, body) = s
            .post(
                "/v1/members",
                json!({"identities": [{"kind": "phone", "value": "13900000602"}], "referred_by": referrer}),
            )
            .await;
        assert_eq!(status, 201, "{b}: {body}");
        let referee = body["member_id"].as_i64().unwrap();
        let joined = points(&s, referee).await["available"].as_i64().unwrap();

        // An unpaid order pays nobody.
        let mut unpaid = order("REF-0", referee);
        unpaid["status"] = json!("created");
        let (status, _) = s.post("/v1/orders", unpaid).await;
        assert_eq!(status, 201, "{b}");
        assert_eq!(points(&s, referrer).await["available"], before, "{b}");

        let (status, _) = s.post("/v1/orders", order("REF-1", referee)).await;
        assert_eq!(status, 201, "{b}");
        // The example rules: 500 to each side, available at once; the referee's order points stay pending.
        assert_eq!(points(&s, referee).await["available"], joined + 500, "{b}");
        assert_eq!(points(&s, referrer).await["available"], before + 500, "{b}");
        // A retry, a second order and a second settle pay nothing more.
        let (status, _) = s.post("/v1/orders", order("REF-1", referee)).await;
        assert_eq!(status, 200, "{b}");
        let (status, _) = s.post("/v1/orders", order("REF-2", referee)).await;
        assert_eq!(status, 201, "{b}");
        s.app.settle_loyalty().await.unwrap();
        assert_eq!(points(&s, referee).await["available"], joined + 500, "{b}");
        assert_eq!(points(&s, referrer).await["available"], before + 500, "{b}");
        // The referrer's history says why.
        let (_, h) = s.get(&format!("/v1/members/{referrer}/points/history")).await;
        let entry = h
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["op"].as_str().is_some_and(|o| o.starts_with(&format!("referral:{referee}"))))
            .unwrap_or_else(|| panic!("{b}: no referral entry in {h}"));
        assert!(entry["why"].to_string().contains("paid their first order"), "{b}: {entry}");
        // A later, different referrer does not replace the first.
        let other = member(&s, "13900000603").await;
        let (status, _) = s
            .post(
                "/v1/members",
                json!({"identities": [{"kind": "phone", "value": "13900000602"}], "referred_by": other}),
            )
            .await;
        assert!(status == 200 || status == 201, "{b}: {status}");
        let (_, o) = s.post("/v1/orders", order("REF-3", referee)).await;
        assert!(o["id"].is_i64(), "{b}: {o}");
        let other_points = points(&s, other).await["available"].as_i64().unwrap();
        assert_eq!(other_points, 100, "{b}: registration only; the referral stays with the first referrer");
    }
}

/// POST a card purchase with an idempotency key.
async fn buy(s: &TestServer, role: Role, m: i64, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut r = s.req(role, Method::POST, &format!("/v1/members/{m}/cards")).json(&body);
    if let Some(k) = key {
        r = r.header("Idempotency-Key", k);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_merged_referrers_referees_pay_the_survivor() {
    for s in servers().await {
        let b = s.db.backend;
        let referrer = member(&s, "13900000611").await;
        let survivor = member(&s, "13900000612").await;
        let (status, body) = s
            .post(
                "/v1/members",
                json!({"identities": [{"kind": "phone", "value": "13900000613"}], "referred_by": referrer}),
            )
            .await;
        assert_eq!(status, 201, "{b}: {body}");
        let referee = body["member_id"].as_i64().unwrap();
        let (status, merged) =
            s.post(&format!("/v1/members/{survivor}/merge"), json!({"from_member_id": referrer})).await;
        assert_eq!(status, 200, "{b}: {merged}");
        assert_eq!(merged["detail"]["loyalty"]["referrals_moved"], 1, "{b}: {merged}");
        let before = points(&s, survivor).await["available"].as_i64().unwrap();
        let (status, _) = s.post("/v1/orders", order("REFM-1", referee)).await;
        assert_eq!(status, 201, "{b}");
        assert_eq!(
            points(&s, survivor).await["available"],
            before + 500,
            "{b}: the referrer's share goes to the survivor"
        );
        assert_eq!(points(&s, referrer).await["available"], 0, "{b}: the merged member earns nothing");
        let report = s.app.verify_ledgers().await.unwrap();
        assert!(report.violations.is_empty(), "{b}: {:?}", report.violations);
    }
}

#[tokio::test]
async fn a_paid_card_is_bought_once_renews_end_to_end_and_multiplies_points_through_the_benefits_rule() {
    for s in servers().await {
        let b = s.db.backend;
        let m = member(&s, "13900000401").await;
        let plain = member(&s, "13900000402").await;

        // Bought once: a retry with the same key answers the same card; the key cannot buy something else.
        let plus = json!({"plan": "plus", "payment_ref": "PAY-1"});
        let (status, first) = buy(&s, Role::Integration, m, Some("card-1"), plus.clone()).await;
        assert_eq!(status, 201, "{b}: {first}");
        assert_eq!(
            (first["term"]["plan"].as_str(), first["term"]["price"].as_i64()),
            (Some("plus"), Some(9900)),
            "{b}"
        );
        let (status, again) = buy(&s, Role::Integration, m, Some("card-1"), plus.clone()).await;
        assert_eq!((status, &again["card_id"]), (200, &first["card_id"]), "{b}: {again}");
        let (status, e) =
            buy(&s, Role::Integration, m, Some("card-1"), json!({"plan": "plus", "payment_ref": "PAY-9"})).await;
        assert_eq!((status, e["error"]["code"].as_str()), (409, Some("idempotency_key_reused")), "{b}: {e}");
        // Renewing early loses nothing: the new term starts where the first ends.
        let (status, second) =
            buy(&s, Role::Integration, m, Some("card-2"), json!({"plan": "plus", "payment_ref": "PAY-2"})).await;
        assert_eq!(status, 201, "{b}: {second}");
        assert_eq!(second["term"]["starts_at"], first["term"]["ends_at"], "{b}: {second}");
        // Bad requests name what is wrong and store nothing.
        let (status, e) = buy(&s, Role::Integration, m, Some("card-3"), json!({"plan": "gold-card"})).await;
        assert_eq!((status, e["error"]["field"].as_str()), (422, Some("plan")), "{b}: {e}");
        let (status, e) = buy(&s, Role::Integration, m, None, plus.clone()).await;
        assert_eq!((status, e["error"]["field"].as_str()), (400, Some("Idempotency-Key")), "{b}: {e}");
        let (status, _) = buy(&s, Role::Integration, 999_999, Some("card-4"), plus.clone()).await;
        assert_eq!(status, 404, "{b}");
        let (status, _) = buy(&s, Role::Analyst, m, Some("card-5"), plus.clone()).await;
        assert_eq!(status, 403, "{b}");
        let (_, cards) = s.get(&format!("/v1/members/{m}/cards")).await;
        assert_eq!(cards.as_array().map(Vec::len), Some(2), "{b}: {cards}");
        let audit = s.app.store.audit_log(Some(m), 20).await.unwrap();
        assert_eq!(audit.iter().filter(|e| e.action == "member.card").count(), 2, "{b}");

        // The tier view shows what the member enjoys now: the card's ×1.5 over 普通's ×1.
        let (_, t) = s.get(&format!("/v1/members/{m}/tier")).await;
        let e = &t["effective_benefits"];
        assert_eq!(e["points_multiplier_bp"], 15_000, "{b}: {t}");
        assert_eq!(e["sources"], json!(["regular", "plus"]), "{b}");
        assert_eq!(t["active_cards"].as_array().map(Vec::len), Some(1), "{b}: only the first term is active");

        // Earning reads the same benefits: the same order earns ×1.5 for the card holder (whatever the day's
        // other bonuses, which both members share), in the simulator and in the ledger.
        let placed_at = chrono::Utc::now();
        let input = json!({"type": "order", "channel": "web", "placed_at": placed_at, "paid": true,
            "lines": [{"line_no": 1, "sku": "TEA-1", "kind": "product", "amount": 10_000}], "shipping_fee": 0});
        let (_, with_card) = s.post("/v1/loyalty/simulate", json!({"member_id": m, "input": input})).await;
        let (_, without) = s.post("/v1/loyalty/simulate", json!({"member_id": plain, "input": input})).await;
        let (pc, pn) = (with_card["points"].as_i64().unwrap(), without["points"].as_i64().unwrap());
        assert_eq!(pc * 2, pn * 3, "{b}: {pc} vs {pn}");
        let why = with_card["explanations"].as_array().unwrap().iter().find(|e| e["rule_id"] == "benefits").cloned();
        let why = why.unwrap_or_else(|| panic!("{b}: no benefits explanation: {with_card}"));
        assert!(why["reason"].as_str().unwrap().contains("regular + plus give ×1.5"), "{b}: {why}");
        let before = points(&s, m).await["pending"].as_i64().unwrap();
        let o = json!({"channel": "web", "order_no": "CARD-1", "member_id": m, "placed_at": placed_at,
            "lines": [{"sku": "TEA-1", "quantity": 1, "unit_price": 10_000, "name": "绿茶"}]});
        let (status, _) = s.post("/v1/orders", o).await;
        assert_eq!(status, 201, "{b}");
        assert_eq!(points(&s, m).await["pending"].as_i64().unwrap() - before, pc, "{b}: the ledger agrees");
    }
}

#[tokio::test]
async fn concurrent_card_purchases_chain_their_terms() {
    for s in servers().await {
        let b = s.db.backend;
        let m = member(&s, "13900000403").await;
        let buys = (0..8).map(|i| {
            let s = &s;
            async move { buy(s, Role::Integration, m, Some(&format!("c-{i}")), json!({"plan": "plus"})).await }
        });
        let results = futures::future::join_all(buys).await;
        assert!(results.iter().all(|(status, _)| *status == 201), "{b}: {results:?}");
        let (_, cards) = s.get(&format!("/v1/members/{m}/cards")).await;
        let terms: Vec<(String, String)> = cards
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["term"]["starts_at"].as_str().unwrap().to_string(),
                    c["term"]["ends_at"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(terms.len(), 8, "{b}");
        for w in terms.windows(2) {
            assert_eq!(w[1].0, w[0].1, "{b}: each term starts where the previous ends: {terms:?}");
        }
    }
}

#[tokio::test]
async fn a_merge_hands_points_growth_and_coupons_to_the_survivor_and_refunds_of_moved_orders_reverse_there() {
    for s in servers().await {
        let b = s.db.backend;
        let keep = member(&s, "13900000301").await;
        let gone = member(&s, "13900000302").await;
        let (status, o) = s.post("/v1/orders", order("MG-1", gone)).await;
        assert_eq!(status, 201, "{b}: {o}");
        let gone_order = o["id"].as_i64().unwrap();
        let (status, _) = s.post("/v1/orders", order("MG-2", keep)).await;
        assert_eq!(status, 201, "{b}");
        let template = json!({"id": "mg-30", "name": "满200减30", "per_member_limit": 1,
            "benefit": {"kind": "amount_off", "threshold": 20000, "amount_off": 3000},
            "validity": {"kind": "days_from_issue", "days": 30}});
        let r = s.req(Role::Operator, Method::PUT, "/v1/coupon-templates/mg-30").json(&template).send().await.unwrap();
        assert!(r.status().is_success(), "{b}");
        let r = s
            .req(Role::Operator, Method::POST, "/v1/coupon-templates/mg-30/issue")
            .header("Idempotency-Key", "mg-issue")
            .json(&json!({"member_ids": [gone]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{b}");
        // Both bought a card with the same purchase key: the moved one must not collide with the survivor's.
        for m in [keep, gone] {
            let (status, card) = buy(&s, Role::Integration, m, Some("mg-card"), json!({"plan": "plus"})).await;
            assert_eq!(status, 201, "{b}: {card}");
        }
        let (before_keep, before_gone) = (points(&s, keep).await, points(&s, gone).await);
        assert_eq!(before_gone["available"], 100, "{b}: registration points");
        assert_eq!(before_gone["pending"], 150, "{b}: the order's points");

        let (status, m) = s.post(&format!("/v1/members/{keep}/merge"), json!({"from_member_id": gone})).await;
        assert_eq!(status, 200, "{b}: {m}");
        let moved = &m["detail"]["loyalty"];
        assert_eq!(
            (moved["points_moved"].as_i64(), moved["growth_moved"].as_i64()),
            (Some(250), Some(150)),
            "{b}: {m}"
        );
        assert_eq!(moved["coupons_moved"].as_array().map(Vec::len), Some(1), "{b}: {m}");
        let after = points(&s, keep).await;
        for field in ["available", "pending", "growth_value", "growth_pending"] {
            let sum = before_keep[field].as_i64().unwrap() + before_gone[field].as_i64().unwrap();
            assert_eq!(after[field].as_i64(), Some(sum), "{b}: {field}: {after}");
        }
        let (status, coupons) = s.get(&format!("/v1/members/{keep}/coupons")).await;
        assert_eq!(status, 200, "{b}");
        assert!(coupons.as_array().unwrap().iter().any(|c| c["template_id"] == "mg-30"), "{b}: {coupons}");
        assert_eq!(moved["cards_moved"], 1, "{b}: {m}");
        let (status, cards) = s.get(&format!("/v1/members/{keep}/cards")).await;
        assert_eq!(status, 200, "{b}");
        assert_eq!(cards.as_array().map(Vec::len), Some(2), "{b}: both terms are the survivor's: {cards}");

        // The merged member's order, refunded after the merge, reverses on the survivor: the cup's 50 points
        // and 50 growth, exactly what that line earned.
        let (status, r) = s
            .post(
                "/v1/refunds",
                json!({"channel": "web", "refund_no": "MG-R1", "order_id": gone_order,
                       "refunded_at": "2026-06-02T10:00:00+08:00", "lines": [{"line_no": 2, "quantity": 1}]}),
            )
            .await;
        assert_eq!(status, 201, "{b}: {r}");
        let refunded = points(&s, keep).await;
        assert_eq!(refunded["pending"].as_i64(), after["pending"].as_i64().map(|p| p - 50), "{b}: {refunded}");
        assert_eq!(
            refunded["growth_pending"].as_i64(),
            after["growth_pending"].as_i64().map(|p| p - 50),
            "{b}: {refunded}"
        );
        let (_, h) = s.get(&format!("/v1/members/{keep}/points/history")).await;
        let moved_in = h
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "transfer" && e["state"] != "voided")
            .unwrap_or_else(|| panic!("{b}: no transfer entry in {h}"));
        assert!(moved_in["why"].to_string().contains(&format!("from member {gone}")), "{b}: {moved_in}");
        let report = s.app.verify_ledgers().await.unwrap();
        assert!(report.violations.is_empty(), "{b}: {:?}", report.violations);
    }
}
