//! The loyalty ledger on both stores: the pure kernel's entries survive a round trip through the database,
//! and the store's per-member serialization makes concurrent writes exact.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use huiyuan::loyalty::ledger::{Config, Ledger, LedgerError, Source, Wallet};
use huiyuan::store::{LedgerOp, Store};

use crate::support::{app_for, test_dbs};

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// A ledger operation that rebuilds the member's ledger from stored history and applies `f` to it.
fn op(
    f: impl FnOnce(&mut Ledger) -> Result<Vec<huiyuan::store::LedgerEntry>, LedgerError> + Send + 'static,
) -> LedgerOp {
    Box::new(move |history| {
        let mut ledger = Ledger::from_entries(Config::default(), &history)?;
        f(&mut ledger)
    })
}

fn earn(key: &'static str, amount: i64) -> LedgerOp {
    op(move |l| {
        Ok(l.earn(
            key,
            Wallet::Points,
            amount,
            Source::Campaign { campaign_id: "welcome".into() },
            at("2026-03-01T00:00:00Z"),
        )?
        .entries)
    })
}

fn redeem(key: String, amount: i64) -> LedgerOp {
    op(move |l| {
        Ok(l.redeem(&key, amount, Source::Reward { reward_id: "mug".into() }, at("2026-03-02T00:00:00Z"))?.entries)
    })
}

#[tokio::test]
async fn ledger_entries_round_trip_through_the_store() {
    for db in test_dbs().await {
        let app = app_for(&db).await;
        let b = db.backend;
        let s = &app.store;
        let order_line = Source::OrderLine { order_id: 7, line_no: 1 };
        let written = s
            .ledger_write(
                1,
                op(move |l| {
                    let mut all = l
                        .earn("order-7-line-1", Wallet::Points, 300, order_line.clone(), at("2026-03-01T10:00:00Z"))?
                        .entries;
                    all.extend(
                        l.earn("order-7-line-1-growth", Wallet::Growth, 300, order_line, at("2026-03-01T10:00:00Z"))?
                            .entries,
                    );
                    all.extend(l.mature(at("2026-04-01T00:00:00Z"))?);
                    all.extend(
                        l.redeem("r-1", 120, Source::Reward { reward_id: "cup".into() }, at("2026-04-02T00:00:00Z"))?
                            .entries,
                    );
                    Ok(all)
                }),
            )
            .await
            .unwrap()
            .unwrap();
        let stored = s.ledger_entries(1).await.unwrap();
        assert_eq!(stored, written, "{b}: every field survives the round trip");
        let ledger = Ledger::from_entries(Config::default(), &stored).unwrap();
        let bal = ledger.balances(at("2026-04-03T00:00:00Z"), chrono::Duration::days(30));
        assert_eq!((bal.available, bal.pending, bal.growth), (180, 0, 300), "{b}");
        // Summed in the store, the same spendable balance; a member without entries is absent.
        let standing = s.available_points(&[1, 2]).await.unwrap();
        assert_eq!(standing.get(&1), Some(&(180, None)), "{b}: the store's sum is the ledger's balance");
        assert!(!standing.contains_key(&2), "{b}");
        assert!(huiyuan::loyalty::ledger::verify(&stored, Config::default().negative).is_empty(), "{b}");
        // A refused operation writes nothing.
        let refused = s.ledger_write(1, redeem("r-2".into(), 1_000)).await.unwrap();
        assert!(matches!(refused, Err(LedgerError::Insufficient { .. })), "{b}: {refused:?}");
        assert_eq!(s.ledger_entries(1).await.unwrap().len(), stored.len(), "{b}");
    }
}

#[tokio::test]
async fn concurrent_redemptions_and_retries_are_exact() {
    for db in test_dbs().await {
        let app = app_for(&db).await;
        let b = db.backend;
        let store: Arc<dyn Store> = app.store.clone();
        // The same idempotency key from 20 clients at once is applied once.
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move { s.ledger_write(2, earn("welcome-2", 500)).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let ledger = Ledger::from_entries(Config::default(), &store.ledger_entries(2).await.unwrap()).unwrap();
        assert_eq!(ledger.balances(at("2026-03-05T00:00:00Z"), chrono::Duration::zero()).available, 500, "{b}");
        // 50 concurrent redemptions of 100 against 500: exactly 5 succeed.
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let s = store.clone();
                tokio::spawn(async move { s.ledger_write(2, redeem(format!("redeem-{i}"), 100)).await.unwrap() })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(LedgerError::Insufficient { .. }) => {}
                Err(e) => panic!("{b}: {e:?}"),
            }
        }
        assert_eq!(ok, 5, "{b}");
        let stored = store.ledger_entries(2).await.unwrap();
        let ledger = Ledger::from_entries(Config::default(), &stored).unwrap();
        assert_eq!(ledger.balances(at("2026-03-05T00:00:00Z"), chrono::Duration::zero()).available, 0, "{b}");
        assert!(huiyuan::loyalty::ledger::verify(&stored, Config::default().negative).is_empty(), "{b}");
    }
}

#[tokio::test]
async fn verify_passes_clean_ledgers_and_names_tampered_ones() {
    for db in test_dbs().await {
        let app = app_for(&db).await;
        let b = db.backend;
        for m in [3, 4] {
            app.store.ledger_write(m, earn("welcome", 300)).await.unwrap().unwrap();
            app.store.ledger_write(m, redeem("r-1".into(), 100)).await.unwrap().unwrap();
        }
        let clean = app.verify_ledgers().await.unwrap();
        assert_eq!((clean.members, clean.entries, clean.violations.len()), (2, 4, 0), "{b}: {clean:?}");
        // Someone edits history behind the ledger's back: member 4's redemption grows tenfold.
        tamper(&db.url, "UPDATE ledger_entries SET amount = amount * 10 WHERE member_id = 4 AND kind = 'redeem'").await;
        let found = app.verify_ledgers().await.unwrap();
        assert_eq!(found.violations.len(), 1, "{b}: {found:?}");
        assert_eq!(found.violations[0].0, 4, "{b}");
        assert!(!found.violations[0].1.is_empty(), "{b}");
    }
}

async fn tamper(url: &str, sql: &'static str) {
    use sqlx::Connection;
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.unwrap();
    }
}

#[tokio::test]
async fn scheduled_jobs_mature_and_expire_once() {
    for db in test_dbs().await {
        let app = app_for(&db).await;
        let b = db.backend;
        let order_line = Source::OrderLine { order_id: 9, line_no: 1 };
        app.store
            .ledger_write(
                5,
                op(move |l| {
                    Ok(l.earn("order-9-line-1", Wallet::Points, 200, order_line, at("2025-01-10T00:00:00Z"))?.entries)
                }),
            )
            .await
            .unwrap()
            .unwrap();
        let balances = |entries: &[huiyuan::store::LedgerEntry], now: &str| {
            Ledger::from_entries(Config::default(), entries).unwrap().balances(at(now), chrono::Duration::zero())
        };
        // A week later the return window has closed: the points become available.
        let (members, written) = app.run_ledger_jobs(at("2025-01-20T00:00:00Z")).await.unwrap();
        assert!(members == 1 && written > 0, "{b}: {members} {written}");
        let e = app.store.ledger_entries(5).await.unwrap();
        assert_eq!(
            (balances(&e, "2025-01-20T00:00:00Z").available, balances(&e, "2025-01-20T00:00:00Z").pending),
            (200, 0),
            "{b}"
        );
        assert_eq!(app.run_ledger_jobs(at("2025-01-20T00:00:00Z")).await.unwrap(), (0, 0), "{b}: nothing more to do");
        // Thirteen months on (12-month rolling expiry), the lot expires, once.
        app.run_ledger_jobs(at("2026-02-11T00:00:00Z")).await.unwrap();
        assert_eq!(app.run_ledger_jobs(at("2026-02-12T00:00:00Z")).await.unwrap(), (0, 0), "{b}");
        let e = app.store.ledger_entries(5).await.unwrap();
        assert_eq!(balances(&e, "2026-02-12T00:00:00Z").available, 0, "{b}");
        assert!(huiyuan::loyalty::ledger::verify(&e, Config::default().negative).is_empty(), "{b}");
    }
}
