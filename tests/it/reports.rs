//! Programme-wide loyalty reports on both stores: the points liability over HTTP, and the backtest of a
//! draft programme through the real binary.

use reqwest::Method;
use serde_json::{Value, json};

use huiyuan::security::Role;

use crate::support::{TestServer, servers};

async fn new_member(s: &TestServer, phone: &str) -> (i64, i64) {
    let (status, body) = s.post("/v1/members", json!({"identities": [{"kind": "phone", "value": phone}]})).await;
    assert_eq!(status, 201, "{body}");
    let m = body["member_id"].as_i64().unwrap();
    let (_, p) = s.get(&format!("/v1/members/{m}/points")).await;
    (m, p["available"].as_i64().unwrap())
}

async fn adjust(s: &TestServer, m: i64, amount: i64, key: &str) {
    let r = s
        .req(Role::Operator, Method::POST, &format!("/v1/members/{m}/points/adjust"))
        .header("Idempotency-Key", key)
        .json(&json!({"amount": amount, "reason": "report test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn liability_sums_every_ledger_by_expiry_month_and_tier() {
    for s in servers().await {
        let b = s.db.backend;
        let (a, reg_a) = new_member(&s, "13900000401").await;
        let (c, reg_c) = new_member(&s, "13900000402").await;
        adjust(&s, a, 900, "gift-a").await;
        adjust(&s, c, -reg_c, "take-c").await;
        let body = json!({"id": "cup", "name": "杯子", "kind": {"type": "goods", "sku": "CUP"}, "points": 300});
        let r = s.req(Role::Operator, Method::PUT, "/v1/rewards/cup").json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let r = s
            .req(Role::Integration, Method::POST, "/v1/rewards/cup/redemptions")
            .header("Idempotency-Key", "liab-1")
            .json(&json!({"member_id": a}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{b}");

        let r = s.req(Role::Analyst, Method::GET, "/v1/loyalty/liability").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{b}");
        let l: Value = r.json().await.unwrap();
        let t = &l["totals"];
        let expect_available = reg_a + 900 - 300;
        assert_eq!(t["available"], expect_available, "{b}: {l}");
        assert_eq!(t["pending"], 0, "{b}");
        assert_eq!(t["debt"], 0, "{b}");
        assert_eq!(t["outstanding"], expect_available, "{b}");
        // 100 fen per 100 points by default.
        assert_eq!(t["cost_fen"], expect_available, "{b}");
        assert_eq!(t["issued"], reg_a + reg_c, "{b}: registration points are earned");
        assert_eq!(t["adjusted"], 900 - reg_c, "{b}");
        assert_eq!(t["redeemed"], 300, "{b}");
        assert_eq!(l["members"], 2, "{b}");
        assert_eq!(t["members_with_points"], 1, "{b}: the member left with nothing holds no points");
        let rows = l["outstanding"].as_array().unwrap();
        let sum: i64 = rows.iter().map(|r| r["available"].as_i64().unwrap()).sum();
        assert_eq!(sum, expect_available, "{b}");
        assert!(rows.iter().all(|r| r["tier"] == "regular"), "{b}: {l}");
        // Lots earned now expire twelve months on: the expiry month is a year ahead.
        let next_year = (chrono::Utc::now() + chrono::Duration::days(366)).format("%Y").to_string();
        let prev = (chrono::Utc::now() + chrono::Duration::days(364)).format("%Y").to_string();
        assert!(
            rows.iter().all(|r| {
                let m = r["expiry_month"].as_str().unwrap();
                m.starts_with(&next_year) || m.starts_with(&prev)
            }),
            "{b}: {l}"
        );
        let flows = l["flows"].as_array().unwrap();
        let redeemed: i64 = flows.iter().map(|f| f["redeemed"].as_i64().unwrap()).sum();
        assert_eq!(redeemed, 300, "{b}");

        // Integrations do not read programme finances; a reversed range names the field.
        let r = s.req(Role::Integration, Method::GET, "/v1/loyalty/liability").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 403, "{b}");
        let r = s
            .req(Role::Analyst, Method::GET, "/v1/loyalty/liability?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 422, "{b}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["field"], "from", "{b}: {e}");
    }
}
