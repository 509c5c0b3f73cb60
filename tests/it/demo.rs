//! The demo shop on every backend: the same seed writes the same shop, every table gets rows, the personas
//! show in what is stored, and a second run adds nothing.

use std::collections::HashMap;

use chrono::NaiveDate;
use huiyuan::demo::{DemoOptions, Persona, Shop, generate};
use huiyuan::store::Stats;

use crate::support;

fn options() -> DemoOptions {
    DemoOptions { members: 300, seed: 11, end: NaiveDate::from_ymd_opt(2025, 6, 30).expect("a date"), progress: false }
}

#[tokio::test]
async fn the_demo_shop_is_the_same_on_every_backend() {
    let mut all: Vec<(&str, (Stats, u64))> = Vec::new();
    for db in support::test_dbs().await {
        let app = support::app_for(&db).await;
        let opts = options();
        let summary = generate(&app, &opts).await.expect("demo generates");
        assert_eq!(summary.rejected, 0, "{}", db.backend);
        let stats = app.store.stats().await.expect("stats");
        for (what, n) in [
            ("members", stats.members),
            ("member orders", stats.member_orders),
            ("guest orders", stats.guest_orders),
            ("refunds", stats.refunds),
            ("events", stats.events),
            ("unlinked events", stats.unlinked_events),
            ("skus", stats.skus),
        ] {
            assert!(n > 0, "{}: no {what}", db.backend);
        }
        assert_eq!(stats.members, 300);
        assert_eq!(summary.orders as i64, stats.member_orders);
        assert_eq!(summary.events as i64, stats.events);
        assert_eq!(app.store.stores().await.expect("stores").len(), 20);

        // Personas are visible in what was stored.
        let shop = Shop::new(opts.seed, opts.end);
        let mut orders: HashMap<Persona, (usize, usize)> = HashMap::new();
        let mut adopted = 0;
        for i in 0..opts.members {
            let plan = shop.member(i);
            let id = app
                .find_member(&plan.input.identities[0])
                .await
                .expect("look-up")
                .expect("valid")
                .expect("member exists");
            // Every order, online or in a store, has its purchase event.
            let events = app.store.member_events(id, 10_000).await.expect("events");
            let e = orders.entry(plan.persona).or_default();
            e.0 += 1;
            e.1 += events.iter().filter(|e| e.event_type == "purchase").count();
            if plan.anonymous_before {
                adopted += usize::from(events.iter().filter(|e| e.anonymous_id.is_some()).count() > 1);
            }
        }
        let avg = |p: Persona| orders[&p].1 as f64 / orders[&p].0.max(1) as f64;
        assert!(avg(Persona::Loyal) > 3.0 * avg(Persona::OneTime), "{orders:?}");
        assert_eq!(orders[&Persona::Browser].1, 0);
        assert!(adopted > 0, "anonymous browsing is linked at sign-up");

        // A second run is recognised as the same data.
        let again = generate(&app, &opts).await.expect("demo runs again");
        assert_eq!(
            (again.orders, again.guest_orders, again.refunds, again.events, again.rejected, again.redemptions),
            (0, 0, 0, 0, 0, 0)
        );
        let report = app.verify_ledgers().await.expect("verify");
        assert!(report.violations.is_empty(), "{}: {:?}", db.backend, report.violations);
        assert_eq!(app.store.stats().await.expect("stats"), stats);
        all.push((db.backend, (stats, summary.redemptions)));
    }
    if let [(_, first), rest @ ..] = all.as_slice() {
        for (backend, s) in rest {
            assert_eq!(s, first, "{backend} differs from sqlite");
        }
    }
}

/// The default shop's build time on a fresh SQLite file (the target is under a minute in a release build):
/// `cargo test --release --test it default_shop_timing -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "builds the full 20,000-member shop; run in release"]
async fn default_shop_timing() {
    let db = support::sqlite_db().await;
    let app = support::app_for(&db).await;
    let summary = generate(&app, &DemoOptions::default()).await.expect("demo generates");
    eprintln!("{summary:#?}");
    eprintln!("{:?}", app.store.stats().await.expect("stats"));
    assert_eq!(summary.rejected, 0);
}

/// A shop whose history runs to today: members redeem rewards with the points they hold, through the real
/// redemption path, and every ledger still keeps every invariant.
#[tokio::test]
async fn a_current_demo_shop_has_redemptions_and_sound_ledgers() {
    for db in support::test_dbs().await {
        let app = support::app_for(&db).await;
        let opts = DemoOptions { members: 200, seed: 5, end: chrono::Utc::now().date_naive(), progress: false };
        let summary = generate(&app, &opts).await.expect("demo generates");
        assert!(summary.redemptions > 0, "{}: {summary:?}", db.backend);
        let mut redeemed = 0;
        for m in 1..=200 {
            redeemed += app.store.member_redemptions(m).await.expect("redemptions").len() as u64;
        }
        assert_eq!(redeemed, summary.redemptions, "{}", db.backend);
        let report = app.verify_ledgers().await.expect("verify");
        assert!(report.violations.is_empty(), "{}: {:?}", db.backend, report.violations);
    }
}
