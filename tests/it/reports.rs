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

/// `huiyuan loyalty backtest` through the real binary: replaying the rules in force reproduces what the
/// engine wrote (points issued and owed), a draft with double base points issues exactly the orders' part
/// twice, nothing is written, and a malformed draft is refused with its line.
#[tokio::test]
async fn backtest_replays_history_and_compares_a_draft_without_writing() {
    for s in servers().await {
        let b = s.db.backend;
        let mut members = Vec::new();
        for i in 0..3 {
            let (m, _) = new_member(&s, &format!("1390000050{i}")).await;
            members.push(m);
        }
        // The second member was referred by the first: their first paid order pays the referrer too, and the
        // replay must pay it as the engine did (the draft's doubled points stay under the daily cap).
        let second = json!({"identities": [{"kind": "phone", "value": "13900000501"}], "referred_by": members[0]});
        let (status, body) = s.post("/v1/members", second).await;
        assert_eq!((status, &body["member_id"]), (200, &json!(members[1])), "{b}: {body}");
        // Monday 2026-06-01, 12:00 in Shanghai: no member day, no birthday; 300.00 of tea per order.
        for (i, m) in members.iter().enumerate() {
            for n in 0..=i {
                let order = json!({
                    "channel": "web", "order_no": format!("BT-{i}-{n}"), "member_id": m,
                    "placed_at": "2026-06-01T12:00:00+08:00",
                    "lines": [{"sku": "TEA-1", "quantity": 3, "unit_price": 10000, "name": "绿茶"}]
                });
                let (status, body) = s.post("/v1/orders", order).await;
                assert_eq!(status, 201, "{b}: {body}");
            }
        }
        let (_, live) = s.get("/v1/loyalty/liability?from=2026-01-01T00:00:00Z").await;
        let (_, rules) = s.get("/v1/loyalty/rules").await;
        let mut draft = rules["rules"].clone();
        draft["version"] = json!(2);
        draft["rules"][0]["points_per_unit"] = json!(2);
        let dir = tempfile::tempdir().unwrap();
        let draft_path = dir.path().join("draft.json");
        std::fs::write(&draft_path, draft.to_string()).unwrap();
        let run = |args: Vec<String>| {
            std::process::Command::new(env!("CARGO_BIN_EXE_huiyuan"))
                .args(&args)
                .current_dir(dir.path())
                .env("HUIYUAN_LOG", "warn")
                .env("HUIYUAN_SECRET_KEY", crate::support::TEST_KEY)
                .env_remove("HUIYUAN_DATABASE_URL")
                .output()
                .expect("run huiyuan")
        };
        let args = |rules: &std::path::Path| {
            [
                "loyalty",
                "backtest",
                "--rules",
                rules.to_str().unwrap(),
                "--from",
                "2026-01-01",
                "--json",
                "--db",
                &s.db.url,
            ]
            .map(String::from)
            .to_vec()
        };
        let out = run(args(&draft_path));
        assert!(out.status.success(), "{b}: {}", String::from_utf8_lossy(&out.stderr));
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["members"], 3, "{b}: {r}");
        let (cur, dra) = (&r["current"]["liability"]["totals"], &r["draft"]["liability"]["totals"]);
        // The rules in force, replayed, issue and owe what the engine wrote.
        assert_eq!(cur["issued"], live["totals"]["issued"], "{b}: {r}\n{live}");
        assert_eq!(cur["outstanding"], live["totals"]["outstanding"], "{b}");
        // Six orders of 300 points each become 600 each; registration points are unchanged.
        let delta = dra["issued"].as_i64().unwrap() - cur["issued"].as_i64().unwrap();
        assert_eq!(delta, 6 * 300, "{b}: {r}");
        assert_eq!(r["draft"]["rule_version"], 2, "{b}");
        let cells: u64 = r["migration"].as_array().unwrap().iter().map(|c| c["members"].as_u64().unwrap()).sum();
        assert_eq!(cells, 3, "{b}: every member is in one cell of the migration matrix");
        // Nothing was written: the live report is unchanged and the rules in force are still version 1.
        let (_, after) = s.get("/v1/loyalty/liability?from=2026-01-01T00:00:00Z").await;
        assert_eq!(after["totals"], live["totals"], "{b}");
        assert_eq!(s.get("/v1/loyalty/rules").await.1["version"], 1, "{b}");
        // A malformed TOML draft names its line.
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "version = 2\ncurrency_unit = \"one\"\n").unwrap();
        let out = run(args(&bad));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("bad.toml") && err.contains("line 2"), "{b}: {err}");
    }
}
