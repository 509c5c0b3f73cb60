//! Rewards and redemptions over HTTP on both stores: the catalog, concurrent redemptions against a balance
//! and a stock, idempotency under concurrent retries, refusals, cancellation.

use reqwest::Method;
use serde_json::{Value, json};

use huiyuan::security::Role;

use crate::support::{TestServer, servers};

async fn member_with_points(s: &TestServer, phone: &str, points: i64) -> i64 {
    let (status, body) = s.post("/v1/members", json!({"identities": [{"kind": "phone", "value": phone}]})).await;
    assert_eq!(status, 201, "{body}");
    let m = body["member_id"].as_i64().unwrap();
    let (_, p) = s.get(&format!("/v1/members/{m}/points")).await;
    let top_up = points - p["available"].as_i64().unwrap();
    let r = s
        .req(Role::Operator, Method::POST, &format!("/v1/members/{m}/points/adjust"))
        .header("Idempotency-Key", format!("top-up-{m}"))
        .json(&json!({"amount": top_up, "reason": "test balance"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    m
}

async fn put_reward(s: &TestServer, id: &str, points: i64, stock: Option<i64>) -> Value {
    let body = json!({"id": id, "name": "保温杯", "kind": {"type": "goods", "sku": "MUG-1"}, "points": points, "stock": stock});
    let r = s.req(Role::Operator, Method::PUT, &format!("/v1/rewards/{id}")).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}

fn redeem(s: &TestServer, reward: &str, m: i64, key: &str) -> reqwest::RequestBuilder {
    s.req(Role::Integration, Method::POST, &format!("/v1/rewards/{reward}/redemptions"))
        .header("Idempotency-Key", key)
        .json(&json!({"member_id": m}))
}

async fn available(s: &TestServer, m: i64) -> i64 {
    s.get(&format!("/v1/members/{m}/points")).await.1["available"].as_i64().unwrap()
}

#[tokio::test]
async fn fifty_concurrent_redemptions_against_a_balance_for_five_give_exactly_five() {
    for s in servers().await {
        let b = s.db.backend;
        let m = member_with_points(&s, "13900000201", 500).await;
        put_reward(&s, "mug", 100, Some(10)).await;
        let tries = (0..50).map(|i| {
            let req = redeem(&s, "mug", m, &format!("try-{i}"));
            async move {
                let r = req.send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap())
            }
        });
        let results = futures::future::join_all(tries).await;
        let ok = results.iter().filter(|(st, _)| *st == 201).count();
        assert_eq!(ok, 5, "{b}: {results:?}");
        for (st, body) in results.iter().filter(|(st, _)| *st != 201) {
            assert_eq!(*st, 409, "{b}: {body}");
            assert_eq!(body["error"]["code"], "insufficient_points", "{b}: {body}");
        }
        assert_eq!(available(&s, m).await, 0, "{b}");
        let (_, r) = s.get("/v1/rewards/mug").await;
        assert_eq!(r["stock_left"], 5, "{b}: {r}");
        let (_, list) = s.get(&format!("/v1/members/{m}/redemptions")).await;
        assert_eq!(list.as_array().unwrap().len(), 5, "{b}");
        let report = s.app.verify_ledgers().await.unwrap();
        assert!(report.violations.is_empty(), "{b}: {:?}", report.violations);
    }
}

#[tokio::test]
async fn the_same_key_from_twenty_clients_at_once_is_applied_once() {
    for s in servers().await {
        let b = s.db.backend;
        let m = member_with_points(&s, "13900000202", 1000).await;
        put_reward(&s, "tote", 150, None).await;
        let tries = (0..20).map(|_| {
            let req = redeem(&s, "tote", m, "order-42-tote");
            async move {
                let r = req.send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap())
            }
        });
        let results = futures::future::join_all(tries).await;
        assert_eq!(results.iter().filter(|(st, _)| *st == 201).count(), 1, "{b}: {results:?}");
        assert!(results.iter().all(|(st, _)| *st == 201 || *st == 200), "{b}: {results:?}");
        let ids: std::collections::HashSet<i64> = results.iter().map(|(_, v)| v["id"].as_i64().unwrap()).collect();
        assert_eq!(ids.len(), 1, "{b}: every answer is the same redemption");
        assert_eq!(available(&s, m).await, 850, "{b}");
        // The key is the member's forever: reused for another reward it is refused.
        put_reward(&s, "cap", 10, None).await;
        let r = redeem(&s, "cap", m, "order-42-tote").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 409, "{b}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "idempotency_key_reused", "{b}");
    }
}

#[tokio::test]
async fn stock_limits_refusals_and_cancellation() {
    for s in servers().await {
        let b = s.db.backend;
        let a = member_with_points(&s, "13900000203", 300).await;
        let c = member_with_points(&s, "13900000204", 300).await;
        put_reward(&s, "lamp", 200, Some(1)).await;
        let r = redeem(&s, "lamp", a, "a-1").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201, "{b}");
        let first: Value = r.json().await.unwrap();
        let r = redeem(&s, "lamp", c, "c-1").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 409, "{b}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "out_of_stock", "{b}: {e}");
        assert_eq!(available(&s, c).await, 300, "{b}: a refusal writes nothing");
        // Cancel: the points and the unit come back; cancelling again changes nothing.
        let rid = first["id"].as_i64().unwrap();
        let cancel =
            || s.req(Role::Operator, Method::POST, &format!("/v1/members/{a}/redemptions/{rid}/cancel")).send();
        let r = cancel().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{b}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["state"], "cancelled", "{b}: {v}");
        assert_eq!(available(&s, a).await, 300, "{b}");
        assert_eq!(s.get("/v1/rewards/lamp").await.1["stock_left"], 1, "{b}");
        let r = cancel().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{b}");
        assert_eq!(available(&s, a).await, 300, "{b}: cancelled once");
        // Now the other member gets the unit.
        let r = redeem(&s, "lamp", c, "c-2").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201, "{b}");
        // Bad input: no key, unknown reward, unknown member, an invalid reward definition.
        let r = s
            .req(Role::Integration, Method::POST, "/v1/rewards/lamp/redemptions")
            .json(&json!({"member_id": a}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{b}");
        assert_eq!(redeem(&s, "nope", a, "x").send().await.unwrap().status().as_u16(), 404, "{b}");
        assert_eq!(redeem(&s, "lamp", 999_999, "x").send().await.unwrap().status().as_u16(), 404, "{b}");
        let bad = json!({"id": "bad", "name": "x", "kind": {"type": "service"}, "points": 0});
        let r = s.req(Role::Operator, Method::PUT, "/v1/rewards/bad").json(&bad).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 422, "{b}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["field"], "points", "{b}: {e}");
        let r = s.req(Role::Analyst, Method::PUT, "/v1/rewards/bad").json(&bad).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 403, "{b}");
        // A negative balance blocks redemptions.
        let r = s
            .req(Role::Operator, Method::POST, &format!("/v1/members/{c}/points/adjust"))
            .header("Idempotency-Key", "clawback")
            .json(&json!({"amount": -500, "reason": "fraud reversal"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{b}");
        put_reward(&s, "pen", 1, None).await;
        let r = redeem(&s, "pen", c, "c-3").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 409, "{b}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "blocked", "{b}: {e}");
    }
}

#[tokio::test]
async fn a_merge_moves_redemptions_so_limits_count_them_and_a_cancel_credits_the_survivor() {
    for s in servers().await {
        let b = s.db.backend;
        let merged = member_with_points(&s, "13900000231", 300).await;
        let survivor = member_with_points(&s, "13900000232", 500).await;
        let flask = json!({"id": "flask", "name": "保温壶", "kind": {"type": "goods", "sku": "FLASK-1"}, "points": 200,
            "stock": 5, "limits": [{"period": "total", "count": 1}]});
        let r = s.req(Role::Operator, Method::PUT, "/v1/rewards/flask").json(&flask).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{b}");
        let r = redeem(&s, "flask", merged, "m-1").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201, "{b}");
        let rid = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();

        let (status, out) = s.post(&format!("/v1/members/{survivor}/merge"), json!({"from_member_id": merged})).await;
        assert_eq!(status, 200, "{b}: {out}");
        assert_eq!(out["detail"]["loyalty"]["redemptions_moved"], json!([rid]), "{b}: {out}");
        assert_eq!(available(&s, survivor).await, 600, "{b}: the merged member's 100 left moved");
        let (_, list) = s.get(&format!("/v1/members/{survivor}/redemptions")).await;
        assert_eq!(list.as_array().map(Vec::len), Some(1), "{b}: {list}");
        assert_eq!(list[0]["member_id"], survivor, "{b}: {list}");

        // The survivor is one person with the merged member: the once-per-member reward is used up.
        let r = redeem(&s, "flask", survivor, "s-1").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 409, "{b}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "limit_reached", "{b}");
        // A retry of the merged member's request writes nothing: that member no longer redeems.
        assert_eq!(redeem(&s, "flask", merged, "m-1").send().await.unwrap().status().as_u16(), 404, "{b}");

        // Cancelling through the merged member's address reaches the survivor's record and ledger.
        let cancel =
            |m: i64| s.req(Role::Operator, Method::POST, &format!("/v1/members/{m}/redemptions/{rid}/cancel")).send();
        let r = cancel(merged).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{b}");
        assert_eq!(r.json::<Value>().await.unwrap()["state"], "cancelled", "{b}");
        assert_eq!(available(&s, survivor).await, 800, "{b}: the 200 points come back to the survivor");
        assert_eq!(available(&s, merged).await, 0, "{b}: the merged member gets nothing back");
        assert_eq!(s.get("/v1/rewards/flask").await.1["stock_left"], 5, "{b}");
        assert_eq!(cancel(survivor).await.unwrap().status().as_u16(), 200, "{b}");
        assert_eq!(available(&s, survivor).await, 800, "{b}: cancelled once");
        let report = s.app.verify_ledgers().await.unwrap();
        assert!(report.violations.is_empty(), "{b}: {:?}", report.violations);
    }
}
