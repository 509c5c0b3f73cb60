//! Behaviour analytics on both stores: `huiyuan analyze` through the real binary over a hand-built shop
//! whose RFM scores, segments, stages, cycles and funnel counts are worked out by hand below; the results
//! over HTTP (aggregates and the member 360); change logs between runs; and `--as-of` reading nothing after
//! its date.

use reqwest::Method;
use serde_json::{Value, json};

use huiyuan::security::Role;

use crate::support::{TestServer, servers};

async fn member(s: &TestServer, phone: &str, registered: &str) -> i64 {
    let body = json!({"identities": [{"kind": "phone", "value": phone}], "registered_at": registered});
    let (status, v) = s.post("/v1/members", body).await;
    assert_eq!(status, 201, "{v}");
    v["member_id"].as_i64().unwrap()
}

/// A paid order of one line worth `yuan`, placed at noon UTC of `day`.
async fn order(s: &TestServer, no: &str, m: i64, day: &str, yuan: i64) {
    let body = json!({
        "channel": "web", "order_no": no, "member_id": m, "placed_at": format!("{day}T12:00:00Z"),
        "lines": [{"sku": "TEA-1", "quantity": 1, "unit_price": yuan * 100, "name": "绿茶"}]
    });
    let (status, v) = s.post("/v1/orders", body).await;
    assert_eq!(status, 201, "{v}");
}

async fn events(s: &TestServer, m: i64, day: &str, types: &[&str]) {
    let evs: Vec<Value> = types
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut e = json!({"type": t, "member_id": m, "occurred_at": format!("{day}T10:0{i}:00Z"), "sku": "TEA-1"});
            if *t == "campaign_open" {
                e["properties"] = json!({"campaign_id": "c1"});
            }
            e
        })
        .collect();
    let (status, v) = s.post("/v1/events", json!({"events": evs})).await;
    assert_eq!((status, v["stored"].as_u64()), (200, Some(types.len() as u64)), "{v}");
}

/// `huiyuan analyze --as-of DAY --json` on the server's database; the run report.
fn analyze(s: &TestServer, as_of: &str) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_huiyuan"))
        .args(["analyze", "--as-of", as_of, "--json", "--db", &s.db.url])
        .env("HUIYUAN_SECRET_KEY", crate::support::TEST_KEY)
        .output()
        .expect("run huiyuan analyze");
    assert!(out.status.success(), "analyze failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("analyze --json prints JSON")
}

async fn get(s: &TestServer, role: Role, path: &str) -> (u16, Value) {
    let r = s.req(role, Method::GET, path).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

struct Shop {
    a: i64,
    b: i64,
    c: i64,
    d: i64,
    e: i64,
    f: i64,
}

/// Six members, as of 2026-06-30 (window 2025-07-01 ..= 2026-06-30):
/// A four orders of ¥500, 36/35/36 days apart, last 5 days ago;  B one ¥50 order 10 days ago, new;
/// C three ¥800 orders, last 2025-10-01 (272 days ago);  D registered, never bought;
/// E one ¥100 order 135 days ago;  F two ¥200 orders, last 29 days ago.
async fn shop(s: &TestServer) -> Shop {
    let a = member(s, "13900000601", "2025-01-01T00:00:00Z").await;
    let b = member(s, "13900000602", "2026-06-01T00:00:00Z").await;
    let c = member(s, "13900000603", "2025-01-01T00:00:00Z").await;
    let d = member(s, "13900000604", "2026-06-10T00:00:00Z").await;
    let e = member(s, "13900000605", "2025-06-01T00:00:00Z").await;
    let f = member(s, "13900000606", "2025-06-01T00:00:00Z").await;
    for (i, day) in ["2026-03-10", "2026-04-15", "2026-05-20", "2026-06-25"].iter().enumerate() {
        order(s, &format!("A-{i}"), a, day, 500).await;
    }
    order(s, "B-0", b, "2026-06-20", 50).await;
    for (i, day) in ["2025-08-01", "2025-09-01", "2025-10-01"].iter().enumerate() {
        order(s, &format!("C-{i}"), c, day, 800).await;
    }
    order(s, "E-0", e, "2026-02-15", 100).await;
    order(s, "F-0", f, "2026-05-01", 200).await;
    order(s, "F-1", f, "2026-06-01", 200).await;
    // The funnel view → cart → checkout → purchase: A goes all the way, B stops at the cart.
    events(s, a, "2026-06-25", &["product_view", "add_to_cart", "checkout", "purchase"]).await;
    events(s, b, "2026-06-20", &["product_view", "add_to_cart"]).await;
    Shop { a, b, c, d, e, f }
}

fn segment(profile: &Value) -> Option<&str> {
    profile["analytics"]["rfm"]["segment"].as_str()
}

#[tokio::test]
async fn analyze_scores_segments_and_stages_a_hand_built_shop_on_both_stores() {
    for s in servers().await {
        let bk = s.db.backend;
        let shop = shop(&s).await;
        let (status, _) = get(&s, Role::Analyst, "/v1/analytics/rfm").await;
        assert_eq!(status, 404, "{bk}: no run yet");

        let report = analyze(&s, "2026-06-30");
        assert_eq!(report["run"]["status"], "done", "{bk}: {report}");
        assert_eq!(report["run"]["as_of"], "2026-06-30", "{bk}");

        // RFM by hand (n = 5 buyers; score = 1 + floor(5·b/n), b = members strictly worse):
        // R days A5 B10 F29 E135 C272 → A5 B4 F3 E2 C1, mean 3;  F orders A4 C3 F2 B1 E1 → A5 C4 F3 B1 E1,
        // mean 2.8;  M A2000 C2400 F400 E100 B50 yuan → C5 A4 F3 E2 B1, mean 3. High = strictly above the mean.
        let (status, rfm) = get(&s, Role::Analyst, "/v1/analytics/rfm").await;
        assert_eq!(status, 200, "{bk}: {rfm}");
        assert_eq!(rfm["result"]["scored"], 5, "{bk}: {rfm}");
        assert_eq!(rfm["result"]["unscored"], 1, "{bk}: D never bought");
        let expect = [
            (shop.a, Some("important_value"), (5, 5, 4), "active"),
            (shop.b, Some("general_develop"), (4, 1, 1), "new"),
            (shop.c, Some("important_keep"), (1, 4, 5), "churned"),
            (shop.d, None, (0, 0, 0), "potential"),
            (shop.e, Some("general_retain"), (2, 1, 2), "sleeping"),
            (shop.f, Some("general_keep"), (3, 3, 3), "active"),
        ];
        for (m, seg, (r, f, mo), stage) in expect {
            let (status, p) = get(&s, Role::Operator, &format!("/v1/members/{m}/profile")).await;
            assert_eq!(status, 200, "{bk}: {p}");
            assert_eq!(segment(&p), seg, "{bk}: member {m}: {}", p["analytics"]["rfm"]);
            if seg.is_some() {
                let sc = &p["analytics"]["rfm"]["scores"];
                assert_eq!(
                    (sc["r"].as_i64(), sc["f"].as_i64(), sc["m"].as_i64()),
                    (Some(r), Some(f), Some(mo)),
                    "{bk}: {m}"
                );
            }
            assert_eq!(
                p["analytics"]["lifecycle"]["stage"], stage,
                "{bk}: member {m}: {}",
                p["analytics"]["lifecycle"]
            );
            assert!(p["analytics"]["lifecycle"]["reason"].as_str().is_some_and(|r| !r.is_empty()), "{bk}");
            assert!(p["points"].is_object() && p["member"]["id"] == m, "{bk}: the 360 carries the member: {p}");
        }
        // A buys every 35–36 days: typical interval 36, next purchase 2026-07-31.
        let (_, pa) = get(&s, Role::Operator, &format!("/v1/members/{}/profile", shop.a)).await;
        let cyc = &pa["analytics"]["cycle"]["overall"];
        assert_eq!(cyc["typical_interval_days"], 36.0, "{bk}: {cyc}");
        assert_eq!(cyc["next_expected"], "2026-07-31", "{bk}: {cyc}");
        assert_eq!(pa["recent_orders"].as_array().map(Vec::len), Some(4), "{bk}");

        let (_, lc) = get(&s, Role::Analyst, "/v1/analytics/lifecycle").await;
        let counts = &lc["result"]["counts"];
        assert_eq!(
            [
                counts["potential"].as_i64(),
                counts["new"].as_i64(),
                counts["active"].as_i64(),
                counts["sleeping"].as_i64(),
                counts["churned"].as_i64()
            ],
            [Some(1), Some(1), Some(2), Some(1), Some(1)],
            "{bk}: {lc}"
        );
        let (_, fu) = get(&s, Role::Analyst, "/v1/analytics/funnels").await;
        let steps =
            fu["result"]["funnels"]["view_to_purchase"]["report"]["steps"].as_array().cloned().unwrap_or_default();
        let entered: Vec<i64> = steps.iter().filter_map(|st| st["entered"].as_i64()).collect();
        assert_eq!(entered, vec![2, 2, 1, 1], "{bk}: {fu}");
        let (_, co) = get(&s, Role::Analyst, "/v1/analytics/cohorts").await;
        // Buyers A C E F B; repeat buyers (two or more purchase days) A C F.
        assert_eq!(co["result"]["repurchase"]["buyers"], 5, "{bk}: {co}");
        assert_eq!(co["result"]["repurchase"]["repeat_buyers"], 3, "{bk}: {co}");

        // Integration keys may not read analytics aggregates; unknown models are named.
        let (status, _) = get(&s, Role::Integration, "/v1/analytics/rfm").await;
        assert_eq!(status, 403, "{bk}");
        let (status, e) = get(&s, Role::Analyst, "/v1/analytics/unicorns").await;
        assert_eq!((status, e["error"]["code"].as_str()), (404, Some("unknown_model")), "{bk}: {e}");

        // A later run: A's last purchase is 112 days old by 2026-10-15 → sleeping, and the change is logged
        // with its reason; B's stays new no longer (first purchase 117 days ago, last too) → sleeping.
        let second = analyze(&s, "2026-10-15");
        assert_eq!(second["run"]["status"], "done", "{bk}");
        let (_, pa) = get(&s, Role::Operator, &format!("/v1/members/{}/profile", shop.a)).await;
        assert_eq!(pa["analytics"]["lifecycle"]["stage"], "sleeping", "{bk}");
        let change = pa["changes"].as_array().unwrap().iter().find(|c| c["model"] == "lifecycle").cloned();
        let change = change.unwrap_or_else(|| panic!("{bk}: no lifecycle change logged: {}", pa["changes"]));
        assert_eq!((change["from"].as_str(), change["to"].as_str()), (Some("active"), Some("sleeping")), "{bk}");
        assert!(change["reason"].as_str().unwrap().contains("112"), "{bk}: the reason names the days: {change}");
        let (_, lc) = get(&s, Role::Analyst, "/v1/analytics/lifecycle").await;
        let t = &lc["result"]["transitions"];
        assert_eq!(t["from_run"], report["run"]["run_id"], "{bk}: {t}");
        assert!(t["changed"].as_i64().unwrap() >= 2, "{bk}: A and B moved: {t}");
    }
}

#[tokio::test]
async fn as_of_reads_nothing_after_its_date() {
    for s in servers().await {
        let bk = s.db.backend;
        let shop = shop(&s).await;
        let first = analyze(&s, "2026-06-30");
        let run1 = first["run"]["run_id"].as_i64().unwrap();
        let rows1 = s.app.store.member_analytics_rows(run1).await.unwrap();
        let results1 = s.app.store.analytics_result(run1, "rfm").await.unwrap();
        // What the next run compares with: each member's stage and only the RFM part of the body.
        let previous = s.app.store.previous_members(run1).await.unwrap();
        assert_eq!(previous.len(), rows1.len(), "{bk}");
        for (p, r) in previous.iter().zip(&rows1) {
            let rfm: Option<Value> = p.rfm.as_ref().map(|raw| serde_json::from_str(raw.get()).unwrap());
            assert_eq!((p.member_id, &p.stage, rfm.as_ref()), (r.member_id, &r.stage, r.body.get("rfm")), "{bk}");
        }
        assert!(previous.iter().filter(|p| p.rfm.is_some()).count() >= 5, "{bk}: the buyers have RFM results");

        // The future: E comes back on 2026-07-05, D buys, a new member registers, events arrive.
        order(&s, "E-1", shop.e, "2026-07-05", 900).await;
        order(&s, "D-0", shop.d, "2026-07-01", 300).await;
        member(&s, "13900000699", "2026-07-02T00:00:00Z").await;
        events(&s, shop.b, "2026-07-03", &["product_view", "add_to_cart", "checkout", "purchase"]).await;

        let again = analyze(&s, "2026-06-30");
        let run2 = again["run"]["run_id"].as_i64().unwrap();
        assert_ne!(run1, run2, "{bk}");
        let rows2 = s.app.store.member_analytics_rows(run2).await.unwrap();
        assert_eq!(rows1.len(), rows2.len(), "{bk}: the later member is not in a run as of before they joined");
        for (r1, r2) in rows1.iter().zip(&rows2) {
            assert_eq!(r1.member_id, r2.member_id, "{bk}");
            assert_eq!(r1.body, r2.body, "{bk}: member {} changed though only later data was added", r1.member_id);
            assert_eq!((&r1.rfm_segment, &r1.stage), (&r2.rfm_segment, &r2.stage), "{bk}");
        }
        assert_eq!(results1, s.app.store.analytics_result(run2, "rfm").await.unwrap(), "{bk}");
        for model in ["cohorts", "funnels", "paths", "cycle"] {
            let r1 = s.app.store.analytics_result(run1, model).await.unwrap();
            assert_eq!(r1, s.app.store.analytics_result(run2, model).await.unwrap(), "{bk}: {model}");
        }
        let counts = |v: Option<Value>| v.map(|v| v["counts"].clone());
        assert_eq!(
            counts(s.app.store.analytics_result(run1, "lifecycle").await.unwrap()),
            counts(s.app.store.analytics_result(run2, "lifecycle").await.unwrap()),
            "{bk}"
        );
        // And a run as of a later day does see it: E is active again.
        analyze(&s, "2026-07-10");
        let (_, pe) = get(&s, Role::Operator, &format!("/v1/members/{}/profile", shop.e)).await;
        assert_eq!(pe["analytics"]["lifecycle"]["stage"], "active", "{bk}: {}", pe["analytics"]["lifecycle"]);
    }
}

async fn send(s: &TestServer, role: Role, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = s.req(role, method, path);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn shop_funnel() -> Value {
    json!({"steps": [{"event_type": "product_view"}, {"event_type": "add_to_cart"},
                     {"event_type": "checkout"}, {"event_type": "purchase"}]})
}

#[tokio::test]
async fn manual_tags_funnels_on_demand_stalled_members_and_runs_over_http() {
    for s in servers().await {
        let bk = s.db.backend;
        let shop = shop(&s).await;

        // An operator tags A by hand; bad input names the field; analysts may not tag.
        let path = format!("/v1/members/{}/tags/VIP客户", shop.a);
        let (status, t) =
            send(&s, Role::Operator, Method::PUT, &path, Some(json!({"reason": "called the hotline"}))).await;
        assert_eq!(status, 200, "{bk}: {t}");
        assert_eq!((t["source"].as_str(), t["weight"].as_f64()), (Some("manual"), Some(1.0)), "{bk}: {t}");
        let (status, e) = send(&s, Role::Operator, Method::PUT, &path, Some(json!({"reason": "  "}))).await;
        assert_eq!((status, e["error"]["field"].as_str()), (422, Some("reason")), "{bk}: {e}");
        let (status, e) = send(&s, Role::Operator, Method::PUT, &path, Some(json!({"reson": "typo"}))).await;
        assert_eq!(status, 422, "{bk}: {e}");
        let (status, _) = send(&s, Role::Analyst, Method::PUT, &path, Some(json!({"reason": "x"}))).await;
        assert_eq!(status, 403, "{bk}");
        let (status, _) =
            send(&s, Role::Operator, Method::PUT, "/v1/members/999999/tags/x", Some(json!({"reason": "x"}))).await;
        assert_eq!(status, 404, "{bk}");

        // A run started over HTTP answers 202 at once; poll it to the end.
        let (status, e) =
            send(&s, Role::Operator, Method::POST, "/v1/analytics/runs", Some(json!({"as_of": "2999-01-01"}))).await;
        assert_eq!((status, e["error"]["field"].as_str()), (422, Some("as_of")), "{bk}: {e}");
        let (status, _) =
            send(&s, Role::Analyst, Method::POST, "/v1/analytics/runs", Some(json!({"as_of": "2026-06-30"}))).await;
        assert_eq!(status, 403, "{bk}: analysts read, they do not start runs");
        let (status, run) =
            send(&s, Role::Operator, Method::POST, "/v1/analytics/runs", Some(json!({"as_of": "2026-06-30"}))).await;
        assert_eq!((status, run["status"].as_str()), (202, Some("running")), "{bk}: {run}");
        let id = run["run_id"].as_i64().unwrap();
        let mut polled = Value::Null;
        for _ in 0..600 {
            polled = get(&s, Role::Analyst, &format!("/v1/analytics/runs/{id}")).await.1;
            if polled["status"] != "running" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(polled["status"], "done", "{bk}: {polled}");
        let (status, _) = get(&s, Role::Analyst, "/v1/analytics/runs/987654").await;
        assert_eq!(status, 404, "{bk}");

        // B carted and did not buy: the funnel state is in the profile and B carries 加购未买; A converted.
        let (_, pb) = get(&s, Role::Operator, &format!("/v1/members/{}/profile", shop.b)).await;
        let fb = &pb["analytics"]["funnels"]["view_to_purchase"];
        assert_eq!((fb["reached"].as_i64(), fb["converted"].as_bool()), (Some(2), Some(false)), "{bk}: {fb}");
        let stalled = pb["tags"].as_array().unwrap().iter().find(|t| t["tag"] == "加购未买").cloned();
        let stalled = stalled.unwrap_or_else(|| panic!("{bk}: B is not tagged 加购未买: {}", pb["tags"]));
        assert_eq!((stalled["source"].as_str(), stalled["category"].as_str()), (Some("model"), Some("funnel")), "{bk}");
        assert!(stalled["reason"].as_str().unwrap().contains("add_to_cart"), "{bk}: {stalled}");
        let (_, pa) = get(&s, Role::Operator, &format!("/v1/members/{}/profile", shop.a)).await;
        assert_eq!(pa["analytics"]["funnels"]["view_to_purchase"]["converted"], true, "{bk}");
        let tags_a: Vec<&str> = pa["tags"].as_array().unwrap().iter().filter_map(|t| t["tag"].as_str()).collect();
        assert!(!tags_a.contains(&"加购未买"), "{bk}: {tags_a:?}");
        let vip = pa["tags"].as_array().unwrap().iter().find(|t| t["tag"] == "VIP客户").cloned();
        let vip = vip.unwrap_or_else(|| panic!("{bk}: the run removed the manual tag: {tags_a:?}"));
        assert_eq!((vip["source"].as_str(), vip["weight"].as_f64()), (Some("manual"), Some(1.0)), "{bk}: {vip}");

        // Removing it is audited; a second removal finds nothing.
        let (status, _) = send(&s, Role::Operator, Method::DELETE, &path, None).await;
        assert_eq!(status, 204, "{bk}");
        let (status, _) = send(&s, Role::Operator, Method::DELETE, &path, None).await;
        assert_eq!(status, 404, "{bk}");
        let audit = s.app.store.audit_log(Some(shop.a), 50).await.unwrap();
        for action in ["member.tag", "member.untag"] {
            assert!(audit.iter().any(|e| e.action == action), "{bk}: no {action} in the audit log");
        }
        analyze(&s, "2026-06-30");
        let (_, pa) = get(&s, Role::Operator, &format!("/v1/members/{}/profile", shop.a)).await;
        assert!(!pa["tags"].as_array().unwrap().iter().any(|t| t["tag"] == "VIP客户"), "{bk}: a run re-created it");

        // Funnels on demand: the same counts as the run over June; from 06-21 B's visit is out of range.
        let q = |from: &str, to: &str| json!({"funnel": shop_funnel(), "from": from, "to": to});
        let (status, f) =
            send(&s, Role::Analyst, Method::POST, "/v1/analytics/funnels/query", Some(q("2026-06-01", "2026-06-30")))
                .await;
        assert_eq!(status, 200, "{bk}: {f}");
        let entered = |f: &Value| -> Vec<i64> {
            f["report"]["steps"].as_array().unwrap().iter().filter_map(|st| st["entered"].as_i64()).collect()
        };
        assert_eq!(entered(&f), vec![2, 2, 1, 1], "{bk}: {f}");
        assert_eq!(f["events_read"], 6, "{bk}");
        let (_, f) =
            send(&s, Role::Analyst, Method::POST, "/v1/analytics/funnels/query", Some(q("2026-06-21", "2026-06-30")))
                .await;
        assert_eq!(entered(&f), vec![1, 1, 1, 1], "{bk}: {f}");
        let bad = [
            (json!({"funnel": {"steps": [{"event_type": "product_view"}]}}), "funnel.steps"),
            (q("2026-06-30", "2026-06-01"), "from"),
            (q("2025-01-01", "2026-06-30"), "from"),
            (json!({"funnel": {"steps": [{"event_type": "a"}, {"event_type": ""}]}}), "funnel.steps[1].event_type"),
        ];
        for (body, field) in bad {
            let (status, e) = send(&s, Role::Analyst, Method::POST, "/v1/analytics/funnels/query", Some(body)).await;
            assert_eq!((status, e["error"]["field"].as_str()), (422, Some(field)), "{bk}: {e}");
        }
        let (status, _) = send(
            &s,
            Role::Integration,
            Method::POST,
            "/v1/analytics/funnels/query",
            Some(q("2026-06-01", "2026-06-30")),
        )
        .await;
        assert_eq!(status, 403, "{bk}");

        // One run at a time per process: of two started together, the second is refused.
        let as_of = chrono::NaiveDate::from_ymd_opt(2026, 6, 30).unwrap();
        let (one, two) = tokio::join!(s.app.analyze(as_of, &|_| {}), s.app.analyze(as_of, &|_| {}));
        assert!(one.is_ok(), "{bk}: {:?}", one.err());
        assert!(matches!(two, Err(huiyuan::app::AppError::AnalysisBusy)), "{bk}: {:?}", two.map(|r| r.run));
    }
}

#[tokio::test]
async fn a_kpi_anomaly_raises_one_alert_into_the_outbox() {
    for s in servers().await {
        let bk = s.db.backend;
        let m: Vec<i64> = three_members(&s).await;
        // Sixty quiet days of three ¥100 orders, then a day of twenty: orders and GMV jump.
        let start = chrono::NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        for d in 0..60u64 {
            let day = (start + chrono::Days::new(d)).to_string();
            for (k, member) in m.iter().enumerate() {
                order(&s, &format!("Q-{d}-{k}"), *member, &day, 100).await;
            }
        }
        let spike = (start + chrono::Days::new(60)).to_string();
        for k in 0..20 {
            order(&s, &format!("S-{k}"), m[k % 3], &spike, 100).await;
        }
        let report = analyze(&s, &spike);
        assert_eq!(report["run"]["status"], "done", "{bk}");
        let alerts = s.app.store.outbox_events(0, Some("analytics.kpi_anomaly"), 100).await.unwrap();
        let kpis: Vec<&str> = alerts.iter().filter_map(|a| a.data["kpi"].as_str()).collect();
        assert!(kpis.contains(&"orders") && kpis.contains(&"gmv"), "{bk}: {kpis:?}");
        for a in &alerts {
            assert_eq!(a.data["date"], spike.as_str(), "{bk}: only the spike day is news: {:?}", a.data);
            // Known once the day is over: the event occurs at the end of the day it describes.
            let day_end = (start + chrono::Days::new(61)).and_hms_opt(0, 0, 0).unwrap().and_utc();
            assert_eq!(a.occurred_at, day_end, "{bk}");
        }
        let orders = alerts.iter().find(|a| a.data["kpi"] == "orders").unwrap();
        assert_eq!(orders.data["value"].as_f64(), Some(20.0), "{bk}: {:?}", orders.data);
        // The same day analysed again raises nothing new: the alert's event id is its KPI and day.
        analyze(&s, &spike);
        let again = s.app.store.outbox_events(0, Some("analytics.kpi_anomaly"), 100).await.unwrap();
        assert_eq!(again.len(), alerts.len(), "{bk}");
    }
}

async fn three_members(s: &TestServer) -> Vec<i64> {
    let mut out = Vec::new();
    for k in 0..3 {
        out.push(member(s, &format!("1390000071{k}"), "2026-01-01T00:00:00Z").await);
    }
    out
}

/// SQLite groups the heavy reads in process (a table scan sorted in Rust), PostgreSQL in SQL: on the same
/// shop both give the same per-member aggregates.
#[tokio::test]
async fn both_stores_aggregate_purchases_events_and_engagement_alike() {
    use chrono::TimeZone;
    let until = chrono::Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).unwrap();
    let since = chrono::Utc.with_ymd_and_hms(2026, 6, 21, 0, 0, 0).unwrap();
    let mut seen = Vec::new();
    for s in servers().await {
        shop(&s).await;
        // A second order on one of A's days, and events on both sides of `since`.
        let st = &s.app.store;
        let members: Vec<i64> = st.analytics_members(until).await.unwrap().iter().map(|m| m.member_id).collect();
        order(&s, "A-extra", members[0], "2026-06-25", 70).await;
        events(&s, members[0], "2026-06-25", &["check_in", "product_view"]).await;
        let rank = |id: i64| members.iter().position(|m| *m == id).unwrap();
        let purchases: Vec<_> = st
            .purchase_days(until)
            .await
            .unwrap()
            .iter()
            .map(|(m, p)| (rank(m), p.day, p.orders, p.amount, p.promo_orders))
            .collect();
        let tallies: Vec<_> = st
            .event_tallies(since, until)
            .await
            .unwrap()
            .into_iter()
            .map(|t| (rank(t.member_id), t.event_type, t.total, t.recent, t.last_at))
            .collect();
        let engagement: Vec<_> = st
            .engagement_days(since - chrono::Duration::days(30), until)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (rank(e.member_id), e.day, e.event_type, e.count))
            .collect();
        let facts = st.line_facts(since - chrono::Duration::days(400), until).await.unwrap();
        let lines: Vec<_> = facts
            .lines
            .iter()
            .map(|(m, l)| {
                let sku = &facts.skus[l.sku as usize];
                (rank(m), l.day, sku.sku.clone(), sku.category.clone(), l.amount)
            })
            .collect();
        assert_eq!(lines.len(), 12, "{}: every order's line: {lines:?}", s.db.backend);
        let streams: Vec<_> = st
            .event_rows(since - chrono::Duration::days(30), until)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (rank(e.member_id), e.at, e.event_type, e.session_id, e.sku))
            .collect();
        assert!(!streams.is_empty(), "{}", s.db.backend);
        let active = st.active_members_by_day(since - chrono::Duration::days(30), until).await.unwrap();
        // F's order, B's order and events, A's orders and events: a member active twice on a day counts once.
        let want: Vec<(chrono::NaiveDate, i64)> =
            ["2026-06-01", "2026-06-20", "2026-06-25"].iter().map(|d| (d.parse().unwrap(), 1)).collect();
        assert_eq!(active, want, "{}: active members by day", s.db.backend);
        assert!(
            streams.windows(2).all(|w| (w[0].0, w[0].1) <= (w[1].0, w[1].1)),
            "{}: by member and time",
            s.db.backend
        );
        assert!(lines.windows(2).all(|w| w[0].0 <= w[1].0), "{}: grouped by member", s.db.backend);
        assert!(purchases.iter().any(|p| p.2 == 2), "{}: two orders on one day sum: {purchases:?}", s.db.backend);
        // Points earned per day count each point once, matured or not: they sum to what members hold (no
        // redemptions or expiry here).
        let later = chrono::Utc.with_ymd_and_hms(2099, 1, 1, 0, 0, 0).unwrap();
        // Past every return window: pending points mature (−p pending, +p available entries).
        let (matured, _) = s.app.run_ledger_jobs(chrono::Utc::now()).await.unwrap();
        assert!(matured > 0, "{}: nothing matured", s.db.backend);
        let earned: i64 = st.points_days(later).await.unwrap().iter().map(|(_, p)| p.earned).sum();
        let (mut held, mut expired) = (0, 0);
        for m in &members {
            let p = s.app.points(*m).await.unwrap().unwrap();
            held += p.available + p.pending;
            for e in st.ledger_entries(*m).await.unwrap() {
                if e.kind == huiyuan::loyalty::ledger::Kind::Expire
                    && e.wallet == huiyuan::loyalty::ledger::Wallet::Points
                {
                    expired -= e.amount;
                }
            }
        }
        assert!(held > 0, "{}", s.db.backend);
        assert_eq!(earned, held + expired, "{}: points earned per day (held {held}, expired {expired})", s.db.backend);
        let points: Vec<_> =
            st.points_days(later).await.unwrap().iter().map(|(m, p)| (rank(m), p.day, p.earned, p.spent)).collect();
        assert!(tallies.iter().any(|t| t.2 == 2 && t.3 == 2), "{}: {tallies:?}", s.db.backend);
        seen.push((s.db.backend, purchases, tallies, engagement, lines, points, (streams, active)));
    }
    if let [(_, p1, t1, e1, l1, q1, r1), (_, p2, t2, e2, l2, q2, r2)] = seen.as_slice() {
        assert_eq!(r1, r2, "event streams differ between the stores");
        assert_eq!(q1, q2, "points days differ between the stores");
        assert_eq!(l1, l2, "order lines differ between the stores");
        assert_eq!(p1, p2, "purchase days differ between the stores");
        assert_eq!(t1, t2, "event tallies differ between the stores");
        let mut e1 = e1.clone();
        let mut e2 = e2.clone();
        e1.sort();
        e2.sort();
        assert_eq!(e1, e2, "engagement days differ between the stores");
    }
}

/// A run's member rows as the analysis writes them: `n` members with bodies shaped like the analysis' own
/// (the same keys and wording, different numbers); every seventh member has no RFM section.
fn run_rows(n: i64, stage: &str) -> Vec<huiyuan::store::MemberAnalyticsWrite> {
    let categories = ["食品/零食", "母婴/纸尿裤", "家居/床品", "美妆/护肤"];
    (1..=n)
        .map(|m| {
            let category = categories[(m % 4) as usize];
            let mut body = json!({
                "lifecycle": {"member_id": m, "stage": stage, "reason": format!("last purchase {} days ago ≤ active 90", m % 90)},
                "preferences": {"categories": [{"key": category, "share": (m % 100) as f64 / 100.0}],
                                "reason": format!("mostly {category} ({}%)", m % 100)},
            });
            if m % 7 != 0 {
                body["rfm"] = json!({"member_id": m, "recency_days": m % 365, "orders": m % 17,
                                     "segment": "important_value", "reason": format!("R {} > mean 2.96", m % 5 + 1)});
            }
            huiyuan::store::MemberAnalyticsRow {
                member_id: m,
                rfm_segment: None,
                stage: stage.into(),
                clv_fen: Some(m * 100),
                prob_alive: None,
                churn_risk: None,
                cluster: None,
                next_purchase: None,
                body: serde_json::value::to_raw_value(&body).unwrap(),
            }
        })
        .collect()
}

fn run_output(rows: Vec<huiyuan::store::MemberAnalyticsWrite>, keep_runs: i64) -> huiyuan::store::AnalyticsOutput {
    huiyuan::store::AnalyticsOutput {
        summary: json!({}),
        results: Vec::new(),
        members: Box::new(rows.into_iter()),
        changes: Vec::new(),
        tags: Vec::new(),
        dropped_manual_tags: Vec::new(),
        keep_runs,
        notices: Vec::new(),
    }
}

/// Member bodies read back exactly on both stores (the profile, all rows, and the next run's RFM part). On
/// SQLite they are stored as zstd frames with a dictionary trained on the run's bodies, and that dictionary
/// goes with the run's rows; bodies stored as JSON text before compression are still read.
#[tokio::test]
async fn member_bodies_read_back_exactly_and_sqlite_stores_them_compressed() {
    for db in crate::support::test_dbs().await {
        let bk = db.backend;
        let app = crate::support::app_for(&db).await;
        let store = &app.store;
        let at = chrono::Utc::now();
        let as_of: chrono::NaiveDate = "2026-06-30".parse().unwrap();
        let written = run_rows(1_500, "active");
        let expected: Vec<Value> = written.iter().map(|r| serde_json::from_str(r.body.get()).unwrap()).collect();
        let plain_bytes: usize = written.iter().map(|r| r.body.get().len()).sum();
        let run1 = store.begin_analytics_run(as_of, &json!({}), at).await.unwrap().run_id;
        store.finish_analytics_run(run1, run_output(written, 2), at).await.unwrap();

        let rows = store.member_analytics_rows(run1).await.unwrap();
        assert_eq!(rows.iter().map(|r| &r.body).collect::<Vec<_>>(), expected.iter().collect::<Vec<_>>(), "{bk}");
        let one = store.member_analytics(run1, 700).await.unwrap().expect("member 700");
        assert_eq!((one.body, one.clv_fen), (expected[699].clone(), Some(70_000)), "{bk}");
        let previous = store.previous_members(run1).await.unwrap();
        assert_eq!(previous.len(), 1_500, "{bk}");
        for (p, body) in previous.iter().zip(&expected) {
            let rfm: Option<Value> = p.rfm.as_ref().map(|raw| serde_json::from_str(raw.get()).unwrap());
            assert_eq!((rfm.as_ref(), p.stage.as_str()), (body.get("rfm"), "active"), "{bk}: member {}", p.member_id);
        }
        assert!(previous.iter().any(|p| p.rfm.is_none()), "{bk}");

        if bk == "sqlite" {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            let (kinds, stored_bytes): (String, i64) = sqlx::query_as(
                "SELECT group_concat(DISTINCT typeof(body)), SUM(length(body)) FROM member_analytics WHERE run_id = $1",
            )
            .bind(run1)
            .fetch_one(&pool)
            .await
            .unwrap();
            assert_eq!(kinds, "blob");
            assert!(stored_bytes * 4 < plain_bytes as i64, "{plain_bytes} bytes of bodies stored as {stored_bytes}");
            let dict: Option<i64> =
                sqlx::query_scalar("SELECT length(body_dict) FROM analytics_runs WHERE run_id = $1")
                    .bind(run1)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            assert!(dict.is_some_and(|n| n > 0), "the run's dictionary is stored: {dict:?}");
            // A body stored as text, as every body was before compression.
            sqlx::query(
                "INSERT INTO member_analytics (run_id, member_id, stage, body) \
                 VALUES ($1, 9999, 'new', '{\"rfm\":{\"orders\":1},\"lifecycle\":{\"stage\":\"new\"}}')",
            )
            .bind(run1)
            .execute(&pool)
            .await
            .unwrap();
            let old = store.member_analytics(run1, 9999).await.unwrap().expect("the text row");
            assert_eq!(old.body, json!({"rfm": {"orders": 1}, "lifecycle": {"stage": "new"}}));
            let previous = store.previous_members(run1).await.unwrap();
            let last = previous.last().unwrap();
            assert_eq!((last.member_id, last.rfm.as_ref().map(|r| r.get())), (9999, Some(r#"{"orders":1}"#)));

            // A later run that keeps only itself deletes the first run's rows and clears its dictionary.
            let run2 = store.begin_analytics_run(as_of, &json!({}), at).await.unwrap().run_id;
            store.finish_analytics_run(run2, run_output(run_rows(1_200, "sleeping"), 1), at).await.unwrap();
            let dicts: Vec<(i64, Option<i64>)> =
                sqlx::query_as("SELECT run_id, length(body_dict) FROM analytics_runs ORDER BY run_id")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            assert_eq!(dicts.len(), 2);
            assert_eq!(dicts[0], (run1, None));
            assert!(dicts[1].1.is_some(), "{dicts:?}");
            assert!(store.member_analytics_rows(run1).await.unwrap().is_empty());
            let rows2 = store.member_analytics_rows(run2).await.unwrap();
            assert_eq!(rows2.len(), 1_200);
            assert_eq!(rows2[41].body["lifecycle"]["stage"], "sleeping");
            pool.close().await;
        }
    }
}
