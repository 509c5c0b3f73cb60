//! Coupons over HTTP on both stores: template validation, issuing singly and in bulk with unique codes and
//! per-member limits, a total quantity under concurrent issuers, pricing a cart without writing, redeeming on
//! an order (idempotent), refunds returning the coupon, voiding, and coupon rewards.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{Value, json};

use huiyuan::security::Role;

use crate::support::{TestServer, servers};

async fn member(s: &TestServer, phone: &str) -> i64 {
    let (status, body) = s.post("/v1/members", json!({"identities": [{"kind": "phone", "value": phone}]})).await;
    assert_eq!(status, 201, "{body}");
    body["member_id"].as_i64().unwrap()
}

fn full200_minus30(id: &str, per_member: u32, total: Option<u64>) -> Value {
    json!({"id": id, "name": "满200减30", "per_member_limit": per_member, "total_quantity": total,
           "benefit": {"kind": "amount_off", "threshold": 20000, "amount_off": 3000},
           "validity": {"kind": "days_from_issue", "days": 30}})
}

fn ten_percent(id: &str) -> Value {
    json!({"id": id, "name": "9折最高减50", "per_member_limit": 5,
           "benefit": {"kind": "percent_off", "off_bp": 1000, "max_discount": 5000},
           "validity": {"kind": "days_from_issue", "days": 30}})
}

async fn put_template(s: &TestServer, body: Value) -> (u16, Value) {
    let id = body["id"].as_str().unwrap().to_string();
    let r = s.req(Role::Operator, Method::PUT, &format!("/v1/coupon-templates/{id}")).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn issue(s: &TestServer, template: &str, members: &[i64], key: &str) -> (u16, Value) {
    let r = s
        .req(Role::Operator, Method::POST, &format!("/v1/coupon-templates/{template}/issue"))
        .header("Idempotency-Key", key)
        .json(&json!({"member_ids": members}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn issue_one(s: &TestServer, template: &str, m: i64, key: &str) -> String {
    let (st, v) = issue(s, template, &[m], key).await;
    assert_eq!(st, 201, "{v}");
    v["issued"][0]["code"].as_str().unwrap().to_string()
}

async fn call(s: &TestServer, role: Role, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = s.req(role, method, path);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn coupons_of(s: &TestServer, m: i64) -> Vec<Value> {
    s.get(&format!("/v1/members/{m}/coupons")).await.1.as_array().unwrap().clone()
}

/// An order of 250.00 for the member: two units at 80.00 and one at 90.00.
async fn order(s: &TestServer, m: i64, no: &str, second_unit_price: i64) -> i64 {
    let (st, o) = s
        .post(
            "/v1/orders",
            json!({"channel": "web", "order_no": no, "member_id": m, "placed_at": "2026-11-20T12:00:00+08:00",
                   "lines": [{"sku": "TEA-01", "quantity": 2, "unit_price": 8000},
                             {"sku": "CUP-01", "quantity": 1, "unit_price": second_unit_price}],
                   "order_discount": 3000}),
        )
        .await;
    assert_eq!(st, 201, "{o}");
    o["id"].as_i64().unwrap()
}

#[tokio::test]
async fn templates_are_validated_and_issuing_respects_limits_with_unique_codes() {
    for s in servers().await {
        let b = s.db.backend;
        // A bad template names the field; another role may not configure.
        let mut bad = ten_percent("bad");
        bad["benefit"]["off_bp"] = json!(20000);
        let (st, e) = put_template(&s, bad).await;
        assert_eq!((st, e["error"]["field"].as_str()), (422, Some("benefit.off_bp")), "{b}: {e}");
        let mut bad = full200_minus30("bad", 1, None);
        bad["validity"] = json!({"kind": "days_from_issue", "days": 0});
        let (st, e) = put_template(&s, bad).await;
        assert_eq!((st, e["error"]["field"].as_str()), (422, Some("validity.days")), "{b}: {e}");
        let (st, _) = call(&s, Role::Analyst, Method::PUT, "/v1/coupon-templates/x", Some(ten_percent("x"))).await;
        assert_eq!(st, 403, "{b}");
        let (st, _) = put_template(&s, full200_minus30("m200", 1, None)).await;
        assert_eq!(st, 200, "{b}");

        let (m1, m2, m3) =
            (member(&s, "13900000301").await, member(&s, "13900000302").await, member(&s, "13900000303").await);
        // Single issue; a retry with the key answers the same coupon; the key with another body is refused.
        let (st, one) = issue(&s, "m200", &[m1], "k-1").await;
        assert_eq!(st, 201, "{b}: {one}");
        let code = one["issued"][0]["code"].as_str().unwrap().to_string();
        assert_eq!(code.len(), 12, "{b}");
        let (st, again) = issue(&s, "m200", &[m1], "k-1").await;
        assert_eq!((st, again["issued"][0]["code"].as_str()), (200, Some(code.as_str())), "{b}");
        let (st, e) = issue(&s, "m200", &[m2], "k-1").await;
        assert_eq!((st, e["error"]["code"].as_str()), (409, Some("idempotency_key_reused")), "{b}");
        // A key is scoped to its template, as the path is: the same key on another template is another request.
        assert_eq!(put_template(&s, ten_percent("p10")).await.0, 200, "{b}");
        let (st, other) = issue(&s, "p10", &[m1], "k-1").await;
        assert_eq!((st, other["issued"][0]["template_id"].as_str()), (201, Some("p10")), "{b}: {other}");
        // Bulk: m1 is at the limit, m2 gets one and not a second, m3 gets one, an unknown member is refused.
        let (st, bulk) = issue(&s, "m200", &[m1, m2, m3, m2, 999_999], "k-2").await;
        assert_eq!(st, 201, "{b}: {bulk}");
        let issued: Vec<i64> =
            bulk["issued"].as_array().unwrap().iter().map(|c| c["member_id"].as_i64().unwrap()).collect();
        assert_eq!(issued, vec![m2, m3], "{b}: {bulk}");
        let refused: Vec<(i64, &str)> = bulk["refused"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["index"].as_i64().unwrap(), r["code"].as_str().unwrap()))
            .collect();
        assert_eq!(refused, vec![(0, "limit_reached"), (3, "limit_reached"), (4, "no_such_member")], "{b}: {bulk}");
        let mut codes: HashSet<String> =
            bulk["issued"].as_array().unwrap().iter().map(|c| c["code"].as_str().unwrap().into()).collect();
        codes.insert(code.clone());
        assert_eq!(codes.len(), 3, "{b}: codes are unique");
        assert_eq!(s.get("/v1/coupon-templates/m200").await.1["issued"], 3, "{b}");
        assert_eq!(coupons_of(&s, m2).await.len(), 1, "{b}");
        // No key, unknown template.
        let r = s
            .req(Role::Operator, Method::POST, "/v1/coupon-templates/m200/issue")
            .json(&json!({"member_ids": [m1]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{b}");
        let (st, _) = issue(&s, "nope", &[m1], "k-3").await;
        assert_eq!(st, 404, "{b}");
    }
}

#[tokio::test]
async fn concurrent_issuers_of_a_template_with_total_quantity_seven_issue_exactly_seven() {
    for s in servers().await {
        let b = s.db.backend;
        put_template(&s, full200_minus30("limited", 1, Some(7))).await;
        let mut members = Vec::new();
        for i in 0..30 {
            members.push(member(&s, &format!("139000004{i:02}")).await);
        }
        let tries = members.iter().map(|&m| {
            let s = &s;
            async move { issue(s, "limited", &[m], &format!("c-{m}")).await }
        });
        let results = futures::future::join_all(tries).await;
        let issued: usize = results.iter().map(|(_, v)| v["issued"].as_array().unwrap().len()).sum();
        assert_eq!(issued, 7, "{b}: {results:?}");
        let sold_out = results.iter().filter(|(_, v)| v["refused"][0]["code"] == "sold_out").count();
        assert_eq!(sold_out, 23, "{b}");
        assert_eq!(s.get("/v1/coupon-templates/limited").await.1["issued"], 7, "{b}");
    }
}

#[tokio::test]
async fn validate_prices_the_cart_and_writes_nothing() {
    for s in servers().await {
        let b = s.db.backend;
        let m = member(&s, "13900000501").await;
        put_template(&s, full200_minus30("m200", 2, None)).await;
        put_template(&s, ten_percent("pct10")).await;
        let minus30 = issue_one(&s, "m200", m, "v-1").await;
        let pct = issue_one(&s, "pct10", m, "v-2").await;
        let cart = |coupons: Vec<&str>, amounts: (i64, i64)| {
            json!({"member_id": m, "channel": "web", "coupons": coupons,
                   "lines": [{"line_no": 1, "sku": "TEA-01", "quantity": 2, "unit_price": amounts.0 / 2, "amount": amounts.0},
                             {"line_no": 2, "sku": "CUP-01", "quantity": 1, "unit_price": amounts.1, "amount": amounts.1}]})
        };
        let validate = |body: Value| call(&s, Role::Integration, Method::POST, "/v1/coupons/validate", Some(body));
        // 满200减30 on 160.00 + 90.00: 30.00 off, allocated ⌊3000 × 16000 / 25000⌋ = 1920 and 1080.
        let (st, q) = validate(cart(vec![&minus30], (16000, 9000))).await;
        assert_eq!(st, 200, "{b}: {q}");
        assert_eq!(
            (q["subtotal"].as_i64(), q["total_discount"].as_i64(), q["payable"].as_i64()),
            (Some(25000), Some(3000), Some(22000)),
            "{b}: {q}"
        );
        assert_eq!(q["lines"][0]["discount"], 1920, "{b}: {q}");
        assert_eq!(q["lines"][1]["discount"], 1080, "{b}: {q}");
        assert_eq!(q["applied"][0]["coupon_code"].as_str(), Some(minus30.as_str()), "{b}");
        // 10 % off 250.00 is 25.00 (under the 50.00 cap): 1600 and 900; on 600.00 it is capped at 50.00.
        let (_, q) = validate(cart(vec![&pct], (16000, 9000))).await;
        assert_eq!((q["total_discount"].as_i64(), q["payable"].as_i64()), (Some(2500), Some(22500)), "{b}: {q}");
        assert_eq!(
            (q["lines"][0]["discount"].as_i64(), q["lines"][1]["discount"].as_i64()),
            (Some(1600), Some(900)),
            "{b}"
        );
        let (_, q) = validate(cart(vec![&pct], (40000, 20000))).await;
        assert_eq!((q["total_discount"].as_i64(), q["payable"].as_i64()), (Some(5000), Some(55000)), "{b}: {q}");
        // Below the threshold: not applied, with the reason; two non-stackable coupons: the second refused.
        let (_, q) = validate(cart(vec![&minus30], (10000, 5000))).await;
        assert_eq!(q["not_applied"][0]["reason"]["code"], "threshold_not_met", "{b}: {q}");
        assert_eq!(q["payable"], 15000, "{b}");
        let (_, q) = validate(cart(vec![&minus30, &pct], (16000, 9000))).await;
        assert_eq!(q["not_applied"][0]["reason"]["code"], "not_combinable", "{b}: {q}");
        assert_eq!(q["payable"], 22000, "{b}");
        // Nothing was written: both coupons are still available.
        assert!(coupons_of(&s, m).await.iter().all(|c| c["state"]["kind"] == "available"), "{b}");
        // A malformed code and a typo are 422 invalid_code; a well-formed unknown code is 404.
        let (st, e) = validate(cart(vec!["ABCD"], (16000, 9000))).await;
        assert_eq!(
            (st, e["error"]["code"].as_str(), e["error"]["field"].as_str()),
            (422, Some("invalid_code"), Some("coupons[0]")),
            "{b}: {e}"
        );
        let mut typo: Vec<char> = minus30.chars().collect();
        typo[3] = if typo[3] == 'A' { 'B' } else { 'A' };
        let typo: String = typo.into_iter().collect();
        let (st, e) = validate(cart(vec![&typo], (16000, 9000))).await;
        assert_eq!((st, e["error"]["code"].as_str()), (422, Some("invalid_code")), "{b}: {e}");
        let unknown = loop {
            let c = huiyuan::loyalty::coupons::generate_code(&mut rand::rng());
            if c != minus30 && c != pct {
                break c;
            }
        };
        let (st, e) = validate(cart(vec![&unknown], (16000, 9000))).await;
        assert_eq!((st, e["error"]["code"].as_str()), (404, Some("coupon_not_found")), "{b}: {e}");
    }
}

#[tokio::test]
async fn redeeming_on_an_order_is_idempotent_and_a_whole_refund_returns_the_coupon() {
    for s in servers().await {
        let b = s.db.backend;
        let m = member(&s, "13900000601").await;
        let other = member(&s, "13900000602").await;
        put_template(&s, full200_minus30("m200", 3, None)).await;
        let code = issue_one(&s, "m200", m, "r-1").await;
        let first = order(&s, m, "CO-1", 9000).await;
        let second = order(&s, m, "CO-2", 9000).await;
        let redeem = |code: String, order_id: i64| {
            let path = format!("/v1/coupons/{code}/redeem");
            let s = &s;
            async move { call(s, Role::Integration, Method::POST, &path, Some(json!({"order_id": order_id}))).await }
        };
        let (st, used) = redeem(code.clone(), first).await;
        assert_eq!(st, 200, "{b}: {used}");
        assert_eq!(used["state"]["kind"], "redeemed", "{b}: {used}");
        assert_eq!(used["state"]["order_ref"], first.to_string(), "{b}");
        let (st, again) = redeem(code.clone(), first).await;
        assert_eq!((st, &again), (200, &used), "{b}: the same record");
        let (st, e) = redeem(code.clone(), second).await;
        assert_eq!((st, e["error"]["code"].as_str()), (409, Some("coupon_already_redeemed")), "{b}: {e}");
        // Another member's order, and an order below the threshold, are refused; display form is accepted.
        let code2 = issue_one(&s, "m200", m, "r-2").await;
        let theirs = order(&s, other, "CO-3", 9000).await;
        let (st, e) = redeem(huiyuan::loyalty::coupons::display_code(&code2), theirs).await;
        assert_eq!((st, e["error"]["code"].as_str()), (409, Some("not_your_order")), "{b}: {e}");
        let cheap = order(&s, m, "CO-4", 1000).await;
        let (st, e) = redeem(code2.clone(), cheap).await;
        assert_eq!((st, e["error"]["code"].as_str()), (409, Some("threshold_not_met")), "{b}: {e}");
        let (st, e) = redeem(code2.clone(), 987_654).await;
        assert_eq!((st, e["error"]["code"].as_str()), (404, Some("order_not_found")), "{b}: {e}");
        // A partial refund keeps the coupon used; refunding the rest returns it (its window is open).
        let refund = |no: &str, line: i64, qty: i64| {
            json!({"channel": "web", "refund_no": no, "order_id": first, "refunded_at": "2026-11-21T10:00:00+08:00",
                   "lines": [{"line_no": line, "quantity": qty}]})
        };
        let (st, r) = s.post("/v1/refunds", refund("RF-1", 1, 2)).await;
        assert_eq!(st, 201, "{b}: {r}");
        let state = |list: Vec<Value>, code: &str| {
            list.into_iter().find(|c| c["code"] == code).unwrap()["state"]["kind"].clone()
        };
        assert_eq!(state(coupons_of(&s, m).await, &code), "redeemed", "{b}: partial refund");
        let (st, r) = s.post("/v1/refunds", refund("RF-2", 2, 1)).await;
        assert_eq!(st, 201, "{b}: {r}");
        assert_eq!(state(coupons_of(&s, m).await, &code), "available", "{b}: whole refund returns it");
        // Returned, it can be used on another order.
        let (st, _) = redeem(code.clone(), second).await;
        assert_eq!(st, 200, "{b}");
        // Void: a used coupon cannot be voided; an unused one can, and then cannot be used.
        let void = |code: &str| {
            let path = format!("/v1/coupons/{code}/void");
            let s = &s;
            async move { call(s, Role::Operator, Method::POST, &path, None).await }
        };
        assert_eq!(void(&code).await.0, 409, "{b}");
        let (st, v) = void(&code2).await;
        assert_eq!((st, v["state"]["kind"].as_str()), (200, Some("voided")), "{b}: {v}");
        let (st, e) = redeem(code2.clone(), second).await;
        assert_eq!(st, 409, "{b}: {e}");
        assert_eq!(
            call(&s, Role::Integration, Method::POST, &format!("/v1/coupons/{code2}/void"), None).await.0,
            403,
            "{b}"
        );
    }
}

#[tokio::test]
async fn a_coupon_reward_issues_its_coupon_in_the_redemption() {
    for s in servers().await {
        let b = s.db.backend;
        let m = member(&s, "13900000701").await;
        let other = member(&s, "13900000702").await;
        for who in [m, other] {
            let r = s
                .req(Role::Operator, Method::POST, &format!("/v1/members/{who}/points/adjust"))
                .header("Idempotency-Key", format!("top-up-{who}"))
                .json(&json!({"amount": 1000, "reason": "test balance"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200, "{b}");
        }
        let points = |who: i64| {
            let s = &s;
            async move { s.get(&format!("/v1/members/{who}/points")).await.1["available"].as_i64().unwrap() }
        };
        let before_other = points(other).await;
        put_template(&s, full200_minus30("one-only", 1, Some(1))).await;
        let reward = json!({"id": "coupon-30", "name": "满200减30券", "kind": {"type": "coupon", "template_id": "one-only"}, "points": 100});
        let (st, _) = call(&s, Role::Operator, Method::PUT, "/v1/rewards/coupon-30", Some(reward)).await;
        assert_eq!(st, 200, "{b}");
        let redeem = |who: i64, key: &str| {
            s.req(Role::Integration, Method::POST, "/v1/rewards/coupon-30/redemptions")
                .header("Idempotency-Key", key.to_string())
                .json(&json!({"member_id": who}))
                .send()
        };
        let r = redeem(m, "cr-1").await.unwrap();
        assert_eq!(r.status().as_u16(), 201, "{b}");
        let red: Value = r.json().await.unwrap();
        let code = red["item_ref"].as_str().expect("the coupon's code").to_string();
        let list = coupons_of(&s, m).await;
        assert_eq!(list.len(), 1, "{b}");
        assert_eq!(
            (list[0]["code"].as_str(), list[0]["template_id"].as_str()),
            (Some(code.as_str()), Some("one-only")),
            "{b}"
        );
        // The retry answers the same redemption and issues nothing more.
        let r = redeem(m, "cr-1").await.unwrap();
        let again: Value = r.json().await.unwrap();
        assert_eq!(again["item_ref"].as_str(), Some(code.as_str()), "{b}");
        assert_eq!(coupons_of(&s, m).await.len(), 1, "{b}");
        // The template is sold out: the other member's redemption is refused and spends nothing.
        let r = redeem(other, "cr-2").await.unwrap();
        assert_eq!(r.status().as_u16(), 409, "{b}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "sold_out", "{b}: {e}");
        assert_eq!(points(other).await, before_other, "{b}");
        assert!(coupons_of(&s, other).await.is_empty(), "{b}");
        // Cancelling the redemption voids its unused coupon; a used coupon refuses the cancel.
        let rid = red["id"].as_i64().unwrap();
        let cancel = |who: i64, rid: i64| {
            let path = format!("/v1/members/{who}/redemptions/{rid}/cancel");
            let s = &s;
            async move { call(s, Role::Operator, Method::POST, &path, None).await }
        };
        let (st, v) = cancel(m, rid).await;
        assert_eq!((st, v["state"].as_str()), (200, Some("cancelled")), "{b}: {v}");
        assert_eq!(coupons_of(&s, m).await[0]["state"]["kind"], "voided", "{b}");
        put_template(&s, full200_minus30("one-only", 1, None)).await;
        let r = redeem(other, "cr-3").await.unwrap();
        assert_eq!(r.status().as_u16(), 201, "{b}");
        let red: Value = r.json().await.unwrap();
        let code = red["item_ref"].as_str().unwrap().to_string();
        let o = order(&s, other, "CR-1", 9000).await;
        let (st, _) = call(
            &s,
            Role::Integration,
            Method::POST,
            &format!("/v1/coupons/{code}/redeem"),
            Some(json!({"order_id": o})),
        )
        .await;
        assert_eq!(st, 200, "{b}");
        let (st, e) = cancel(other, red["id"].as_i64().unwrap()).await;
        assert_eq!((st, e["error"]["code"].as_str()), (409, Some("item_used")), "{b}: {e}");
    }
}

#[tokio::test]
async fn the_sweep_reminds_once_then_expires_unused_coupons_only() {
    for s in servers().await {
        let b = s.db.backend;
        let m = member(&s, "13900000771").await;
        let mut sixty_days = full200_minus30("sweep-60d", 5, None);
        sixty_days["validity"] = json!({"kind": "days_from_issue", "days": 60});
        assert_eq!(put_template(&s, sixty_days).await.0, 200, "{b}");
        let unused = issue_one(&s, "sweep-60d", m, "sweep-1").await;
        let voided = issue_one(&s, "sweep-60d", m, "sweep-2").await;
        let (st, _) = call(&s, Role::Operator, Method::POST, &format!("/v1/coupons/{voided}/void"), None).await;
        assert_eq!(st, 200, "{b}");
        let events = |t: &'static str| {
            let s = &s;
            async move { s.app.store.outbox_events(0, Some(t), 100).await.unwrap() }
        };
        let day = |n: i64| chrono::Utc::now() + chrono::Duration::days(n);

        // Far from the end of the window (60 days; reminders 30 days ahead): nothing to do.
        assert_eq!(s.app.sweep_coupons(day(10)).await.unwrap(), (0, 0), "{b}");
        // Within 30 days of the end: the unused coupon's member is reminded, once; the voided one is not.
        assert_eq!(s.app.sweep_coupons(day(31)).await.unwrap(), (0, 1), "{b}");
        assert_eq!(s.app.sweep_coupons(day(32)).await.unwrap(), (0, 0), "{b}: reminded once");
        let reminders = events("coupon.expiring").await;
        assert_eq!(reminders.len(), 1, "{b}");
        assert_eq!(
            (reminders[0].member_id, reminders[0].data["code"].as_str()),
            (Some(m), Some(unused.as_str())),
            "{b}"
        );
        // Past the end: the unused coupon is recorded as expired, once, and said so; the voided one stays voided.
        assert_eq!(s.app.sweep_coupons(day(61)).await.unwrap(), (1, 0), "{b}");
        assert_eq!(s.app.sweep_coupons(day(62)).await.unwrap(), (0, 0), "{b}: idempotent");
        let stored = |code: String| {
            let s = &s;
            async move { s.app.store.coupon(&code).await.unwrap().unwrap().state.name() }
        };
        assert_eq!(stored(unused.clone()).await, "expired", "{b}");
        assert_eq!(stored(voided.clone()).await, "voided", "{b}");
        let expired = events("coupon.expired").await;
        assert_eq!(expired.len(), 1, "{b}");
        assert_eq!(expired[0].data["code"], unused, "{b}");
        // The member's list shows it expired too.
        let listed = coupons_of(&s, m).await;
        let states: HashSet<&str> = listed.iter().filter_map(|c| c["state"]["kind"].as_str()).collect();
        assert_eq!(states, HashSet::from(["expired", "voided"]), "{b}: {listed:?}");
    }
}
