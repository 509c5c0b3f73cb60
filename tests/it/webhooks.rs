//! The outbox and signed webhooks over HTTP, on both stores: a receiver on port 0 records every request
//! and checks its HMAC over the exact body; events are written once however often their cause is replayed;
//! failed deliveries are retried with backoff under the same event id; subscriptions filter by type.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::Duration;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use huiyuan::security::Role;

use crate::support::{TestServer, servers};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} header"))
    }

    /// True when `X-Huiyuan-Signature` is the HMAC-SHA-256 of the exact body bytes with `secret`.
    fn signed_with(&self, secret: &str) -> bool {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&self.body);
        self.header("x-huiyuan-signature") == format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// Requests per path, and how many more requests to each path to fail with 500.
#[derive(Default)]
struct Receiver {
    got: Mutex<HashMap<String, Vec<Received>>>,
    fail_next: Mutex<HashMap<String, u32>>,
}

impl Receiver {
    fn got(&self, path: &str) -> Vec<Received> {
        self.got.lock().unwrap().get(path).cloned().unwrap_or_default()
    }
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    r.got.lock().unwrap().entry(path.clone()).or_default().push(Received { headers, body });
    let mut fail = r.fail_next.lock().unwrap();
    match fail.get_mut(&path) {
        Some(n) if *n > 0 => {
            *n -= 1;
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::NO_CONTENT,
    }
}

/// A receiver on an ephemeral port; returns its base URL.
async fn spawn_receiver() -> (String, Arc<Receiver>) {
    let state = Arc::new(Receiver::default());
    let router = axum::Router::new().route("/hooks/{path}", axum::routing::post(receive)).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (base, state)
}

async fn create_webhook(s: &TestServer, key: &str, body: Value) -> (u16, Value) {
    let r = s
        .req(Role::Admin, Method::POST, "/v1/webhooks")
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn member(s: &TestServer, phone: &str) -> i64 {
    let (status, body) = s.post("/v1/members", json!({"identities": [{"kind": "phone", "value": phone}]})).await;
    assert_eq!(status, 201, "{body}");
    body["member_id"].as_i64().unwrap()
}

/// The Prometheus text of `/metrics`.
async fn metrics(s: &TestServer) -> String {
    s.client.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap()
}

/// The value of the sample named exactly `name` (with its labels), if scraped.
fn metric(scraped: &str, name: &str) -> Option<f64> {
    scraped.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Every event of a type in the outbox.
async fn outbox(s: &TestServer, event_type: &str) -> Vec<Value> {
    let (status, page) = s.get(&format!("/v1/outbox?type={event_type}&limit=1000")).await;
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn redemptions_tiers_maturing_and_expiry_are_delivered_signed_once_each_with_retries() {
    for s in servers().await {
        let b = s.db.backend;
        let app = s.app.clone();
        let (base, rx) = spawn_receiver().await;
        rx.fail_next.lock().unwrap().insert("all".into(), 2);
        let (status, all) =
            create_webhook(&s, "hook-all", json!({"url": format!("{base}/all"), "event_types": ["*"]})).await;
        assert_eq!(status, 201, "{b}: {all}");
        let all_secret = all["secret"].as_str().unwrap().to_string();
        assert!(all_secret.len() >= 32, "{b}: a generated secret: {all}");
        let own_secret = "a-caller-chosen-secret-0123456789";
        let (status, redeemed_only) = create_webhook(
            &s,
            "hook-redeemed",
            json!({"url": format!("{base}/redeemed"), "event_types": ["reward.redeemed"], "secret": own_secret}),
        )
        .await;
        assert_eq!(status, 201, "{b}: {redeemed_only}");
        // A retry of the creation answers the same endpoint and secret; another request under the key is refused.
        let (status, again) =
            create_webhook(&s, "hook-all", json!({"url": format!("{base}/all"), "event_types": ["*"]})).await;
        assert_eq!(
            (status, &again["id"], again["secret"].as_str()),
            (200, &all["id"], Some(all_secret.as_str())),
            "{b}"
        );
        let (status, _) =
            create_webhook(&s, "hook-all", json!({"url": format!("{base}/other"), "event_types": ["*"]})).await;
        assert_eq!(status, 409, "{b}");
        let (_, list) = s.get("/v1/webhooks").await;
        assert_eq!(list.as_array().unwrap().len(), 2, "{b}: {list}");
        assert!(list[0].get("secret").is_none(), "{b}: secrets are shown only on creation");

        // A redemption: exactly one event, delivered to both endpoints, signed with each one's secret.
        let m = member(&s, "13900000801").await;
        let reward = json!({"id": "tea", "name": "茶包", "kind": {"type": "goods", "sku": "TEA-BAG"}, "points": 50});
        let r = s.req(Role::Operator, Method::PUT, "/v1/rewards/tea").json(&reward).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{b}");
        for _ in 0..2 {
            let r = s
                .req(Role::Integration, Method::POST, "/v1/rewards/tea/redemptions")
                .header("Idempotency-Key", "redeem-1")
                .json(&json!({"member_id": m}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{b}: {}", r.status());
        }
        let events = outbox(&s, "reward.redeemed").await;
        assert_eq!(events.len(), 1, "{b}: a replayed redemption makes no second event: {events:?}");
        let event_id = events[0]["id"].as_str().unwrap().to_string();
        assert_eq!(events[0]["member_id"], m, "{b}");
        assert_eq!(events[0]["data"]["points"], 50, "{b}");

        let t0 = app.now();
        let report = app.deliver_once(t0).await.unwrap();
        assert_eq!((report.attempted, report.delivered, report.retrying), (2, 1, 1), "{b}: {report:?}");
        let got = rx.got("redeemed");
        assert_eq!(got.len(), 1, "{b}");
        assert!(got[0].signed_with(own_secret), "{b}: the signature is the HMAC of the exact body");
        assert!(!got[0].signed_with(&all_secret), "{b}");
        assert_eq!(got[0].header("x-huiyuan-event-id"), event_id, "{b}");
        assert!(got[0].header("x-huiyuan-timestamp").parse::<i64>().is_ok(), "{b}");
        let body = got[0].json();
        assert_eq!(
            (body["id"].as_str(), body["type"].as_str()),
            (Some(event_id.as_str()), Some("reward.redeemed")),
            "{b}"
        );
        assert_eq!(body["member_id"], m, "{b}");
        assert!(body["occurred_at"].is_string() && body["data"]["reward_id"] == "tea", "{b}: {body}");

        // The failing receiver: nothing is due before the backoff, then attempt 2 fails, attempt 3 succeeds.
        assert_eq!(app.deliver_once(t0 + Duration::seconds(10)).await.unwrap().attempted, 0, "{b}");
        let r2 = app.deliver_once(t0 + Duration::seconds(31)).await.unwrap();
        assert_eq!((r2.attempted, r2.retrying), (1, 1), "{b}: {r2:?}");
        assert_eq!(app.deliver_once(t0 + Duration::seconds(60)).await.unwrap().attempted, 0, "{b}: the wait doubled");
        let r3 = app.deliver_once(t0 + Duration::seconds(31 + 61)).await.unwrap();
        assert_eq!((r3.attempted, r3.delivered), (1, 1), "{b}: {r3:?}");
        let tries = rx.got("all");
        assert_eq!(tries.len(), 3, "{b}");
        for t in &tries {
            assert_eq!(t.header("x-huiyuan-event-id"), event_id, "{b}: the same event id on every attempt");
            assert!(t.signed_with(&all_secret), "{b}");
            assert_eq!(t.body, tries[0].body, "{b}: the same body on every attempt");
        }
        let all_id = all["id"].as_i64().unwrap();
        let (status, d) = s.get(&format!("/v1/webhooks/{all_id}/deliveries")).await;
        assert_eq!(status, 200, "{b}: {d}");
        let d = &d["items"][0];
        assert_eq!((d["state"].as_str(), d["attempts"].as_i64()), (Some("delivered"), Some(3)), "{b}: {d}");
        assert_eq!(d["event_id"], event_id.as_str(), "{b}");
        assert_eq!(app.deliver_once(t0 + Duration::hours(1)).await.unwrap().attempted, 0, "{b}: delivered is done");

        // An order: its points mature, the tier goes up (regular → silver at 2,000 growth), lots warn
        // before they expire and then expire. Each event once, however often the jobs run.
        let (status, o) = s
            .post(
                "/v1/orders",
                json!({"channel": "web", "order_no": "W-1", "member_id": m, "placed_at": t0,
                       "lines": [{"sku": "BAG-1", "quantity": 1, "unit_price": 250_000}]}),
            )
            .await;
        assert_eq!(status, 201, "{b}: {o}");
        let matured_at = t0 + Duration::days(8);
        for _ in 0..2 {
            app.run_ledger_jobs(matured_at).await.unwrap();
        }
        let available = outbox(&s, "points.available").await;
        assert_eq!(available.len(), 1, "{b}: {available:?}");
        assert!(available[0]["data"]["points"].as_i64().unwrap() > 0, "{b}: {available:?}");
        let tiers = outbox(&s, "tier.changed").await;
        assert_eq!(tiers.len(), 1, "{b}: {tiers:?}");
        assert_eq!(
            (tiers[0]["data"]["from"].as_str(), tiers[0]["data"]["to"].as_str()),
            (Some("regular"), Some("silver")),
            "{b}"
        );
        let warn_at = t0 + Duration::days(365 - 10);
        for _ in 0..2 {
            app.run_ledger_jobs(warn_at).await.unwrap();
        }
        let expiring = outbox(&s, "points.expiring").await;
        assert!(!expiring.is_empty(), "{b}: lots expiring within 30 days are warned of");
        app.run_ledger_jobs(warn_at + Duration::days(1)).await.unwrap();
        assert_eq!(outbox(&s, "points.expiring").await.len(), expiring.len(), "{b}: once per expiry date");
        let gone_at = t0 + Duration::days(400);
        for _ in 0..2 {
            app.run_ledger_jobs(gone_at).await.unwrap();
        }
        let expired = outbox(&s, "points.expired").await;
        assert_eq!(expired.len(), 1, "{b}: {expired:?}");
        assert!(expired[0]["data"]["points"].as_i64().unwrap() > 0, "{b}: {expired:?}");

        // Delivered by type: everything to `*`, nothing new to the endpoint that wants only redemptions.
        let r = app.deliver_once(gone_at).await.unwrap();
        assert_eq!(r.delivered, r.attempted, "{b}: {r:?}");
        let all_types: Vec<String> =
            rx.got("all").iter().map(|g| g.json()["type"].as_str().unwrap().to_string()).collect();
        for t in ["points.available", "tier.changed", "points.expiring", "points.expired"] {
            assert!(all_types.iter().any(|x| x == t), "{b}: {t} not delivered: {all_types:?}");
        }
        let (_, every) = s.get("/v1/outbox?limit=1000").await;
        let ids: Vec<&str> = every["items"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
        let delivered_ids: std::collections::HashSet<String> =
            rx.got("all").iter().map(|g| g.header("x-huiyuan-event-id").to_string()).collect();
        assert_eq!(delivered_ids.len(), ids.len(), "{b}: every event reached `*` once acknowledged: {ids:?}");
        assert_eq!(rx.got("redeemed").len(), 1, "{b}: the redemption-only endpoint got only the redemption");
        let seqs: Vec<i64> = every["items"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{b}: the outbox is in seq order: {seqs:?}");
        let (_, tail) = s.get(&format!("/v1/outbox?after={}", seqs[seqs.len() - 2])).await;
        assert_eq!(tail["items"].as_array().unwrap().len(), 1, "{b}: `after` pages the outbox");
        let report = app.verify_ledgers().await.unwrap();
        assert!(report.violations.is_empty(), "{b}: {:?}", report.violations);
    }
}

#[tokio::test]
async fn a_receiver_that_never_answers_2xx_is_given_up_and_deactivated_endpoints_get_nothing() {
    for s in servers().await {
        let b = s.db.backend;
        let app = s.app.clone();
        let (base, rx) = spawn_receiver().await;
        rx.fail_next.lock().unwrap().insert("down".into(), u32::MAX);
        let (status, down) =
            create_webhook(&s, "down", json!({"url": format!("{base}/down"), "event_types": ["reward.redeemed"]}))
                .await;
        assert_eq!(status, 201, "{b}");
        let (status, off) =
            create_webhook(&s, "off", json!({"url": format!("{base}/off"), "event_types": ["reward.redeemed"]})).await;
        assert_eq!(status, 201, "{b}");
        let off_id = off["id"].as_i64().unwrap();
        let r = s.req(Role::Admin, Method::DELETE, &format!("/v1/webhooks/{off_id}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{b}");
        let off_view: Value = r.json().await.unwrap();
        assert_eq!(off_view["active"], false, "{b}");
        let (_, audit) = s.get("/v1/audit?limit=50").await;
        let audit = audit.to_string();
        assert!(audit.contains("webhook.create") && audit.contains("webhook.deactivate"), "{b}: {audit}");
        assert!(!audit.contains("whsec_"), "{b}: secrets stay out of the audit log");

        let m = member(&s, "13900000802").await;
        let reward = json!({"id": "pen", "name": "笔", "kind": {"type": "goods", "sku": "PEN"}, "points": 10});
        s.req(Role::Operator, Method::PUT, "/v1/rewards/pen").json(&reward).send().await.unwrap();
        let r = s
            .req(Role::Integration, Method::POST, "/v1/rewards/pen/redemptions")
            .header("Idempotency-Key", "r-1")
            .json(&json!({"member_id": m}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{b}");
        // Monitoring sees the waiting delivery, and how long it has waited.
        let down_id = down["id"].as_i64().unwrap();
        let endpoint = format!("{{endpoint=\"{down_id}\"}}");
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let scraped = metrics(&s).await;
        assert_eq!(
            metric(&scraped, &format!("huiyuan_webhook_deliveries_pending{endpoint}")),
            Some(1.0),
            "{b}: {scraped}"
        );
        let lag = metric(&scraped, &format!("huiyuan_webhook_delivery_lag_seconds{endpoint}")).unwrap_or(0.0);
        assert!((1.0..60.0).contains(&lag), "{b}: lag {lag}");
        // Drive time far enough for every retry: 15 attempts at most, each wait capped at 6 hours.
        let mut t = app.now();
        let mut dead = 0;
        for _ in 0..20 {
            let r = app.deliver_once(t).await.unwrap();
            dead += r.dead;
            t += Duration::hours(7);
        }
        assert_eq!(dead, 1, "{b}");
        assert_eq!(rx.got("down").len(), 15, "{b}: max_attempts attempts, then given up");
        assert!(rx.got("off").is_empty(), "{b}: a deactivated endpoint gets nothing");
        let scraped = metrics(&s).await;
        let figures = [
            format!("huiyuan_webhook_deliveries_pending{endpoint}"),
            format!("huiyuan_webhook_deliveries_dead{endpoint}"),
            format!("huiyuan_webhook_delivery_lag_seconds{endpoint}"),
            "huiyuan_webhook_attempts_total{outcome=\"retrying\"}".to_string(),
            "huiyuan_webhook_attempts_total{outcome=\"dead\"}".to_string(),
            "huiyuan_webhook_attempts_total{outcome=\"delivered\"}".to_string(),
        ]
        .map(|name| metric(&scraped, &name));
        assert_eq!(figures, [Some(0.0), Some(1.0), Some(0.0), Some(14.0), Some(1.0), Some(0.0)], "{b}: {scraped}");
        let (_, d) = s.get(&format!("/v1/webhooks/{down_id}/deliveries?state=dead")).await;
        let d = &d["items"][0];
        assert_eq!(
            (d["state"].as_str(), d["attempts"].as_i64(), d["last_status"].as_i64()),
            (Some("dead"), Some(15), Some(500)),
            "{b}: {d}"
        );
        assert!(d["last_error"].as_str().unwrap().contains("500"), "{b}: {d}");
        // An operator sends it again once the receiver is back: pending, due now, delivered on the next round.
        let seq = d["seq"].as_i64().unwrap();
        rx.fail_next.lock().unwrap().insert("down".into(), 0);
        let r = s
            .req(Role::Operator, Method::POST, &format!("/v1/webhooks/{down_id}/deliveries/{seq}/retry"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{b}");
        let (status, again) = s.post(&format!("/v1/webhooks/{down_id}/deliveries/{seq}/retry"), json!({})).await;
        assert_eq!(
            (status, again["state"].as_str(), again["attempts"].as_i64()),
            (200, Some("pending"), Some(0)),
            "{b}: {again}"
        );
        let r = app.deliver_once(app.now()).await.unwrap();
        assert_eq!(r.delivered, 1, "{b}: {r:?}");
        assert_eq!(rx.got("down").len(), 16, "{b}");
        let (status, _) = s.post(&format!("/v1/webhooks/{down_id}/deliveries/{seq}/retry"), json!({})).await;
        assert_eq!(status, 409, "{b}: a delivered one is not sent again");
        let (_, audit) = s.get("/v1/audit?limit=50").await;
        assert!(audit.to_string().contains("webhook.retry"), "{b}");
    }
}

#[tokio::test]
async fn bad_endpoints_are_refused_with_the_field_named_and_only_admins_manage_webhooks() {
    for s in servers().await {
        let b = s.db.backend;
        for (body, field) in [
            (json!({"url": "not a url", "event_types": ["*"]}), "url"),
            (json!({"url": "ftp://example.com/hook", "event_types": ["*"]}), "url"),
            (json!({"url": "https://example.com/hook", "event_types": ["reward.redeemed", "nope"]}), "event_types[1]"),
            (json!({"url": "https://example.com/hook", "event_types": []}), "event_types"),
            (json!({"url": "https://example.com/hook", "event_types": ["*"], "secret": "short"}), "secret"),
            (json!({"event_types": ["*"]}), "url"),
        ] {
            let (status, e) = create_webhook(&s, &format!("bad-{field}"), body.clone()).await;
            assert_eq!(status, 422, "{b}: {body} → {e}");
            assert_eq!(e["error"]["field"], field, "{b}: {e}");
        }
        let r = s
            .req(Role::Admin, Method::POST, "/v1/webhooks")
            .json(&json!({"url": "https://example.com/hook", "event_types": ["*"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{b}: an Idempotency-Key is required");
        for role in [Role::Operator, Role::Analyst, Role::Integration] {
            let r = s.req(role, Method::GET, "/v1/webhooks").send().await.unwrap();
            assert_eq!(r.status().as_u16(), 403, "{b}: {role}");
            let r = s.req(role, Method::GET, "/v1/outbox").send().await.unwrap();
            assert_eq!(r.status().as_u16(), 403, "{b}: {role}");
        }
        let (status, _) = s.get("/v1/webhooks/999/deliveries").await;
        assert_eq!(status, 404, "{b}");
        let (status, e) = s.get("/v1/outbox?type=nope").await;
        assert_eq!((status, e["error"]["field"].as_str()), (422, Some("type")), "{b}");
        let (_, list) = s.get("/v1/webhooks").await;
        assert_eq!(list, json!([]), "{b}: nothing was stored");
    }
}
