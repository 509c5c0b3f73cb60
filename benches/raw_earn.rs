//! The store's raw limit for earn-on-order: the rows one earning order leaves in the database, written
//! straight with sqlx, with no HTTP, no validation, no identity resolution, no rule evaluation and no queue.
//! One transaction per batch, one multi-row INSERT per table per batch, one connection (the service writes
//! orders through a single writer too). Same tables and indexes (the database is migrated by `huiyuan
//! migrate`), same durability settings as the service (SQLite: WAL, synchronous=NORMAL, the store writer's
//! page cache, checkpoints in the background as the store does them; PostgreSQL: the server's defaults,
//! synchronous_commit on).
//!
//! Per order, as the service writes it for a paid order of 1–3 lines:
//! - `orders`: one row; `order_lines`: one per line; `natural_keys`: one, with a SHA-256 content digest;
//! - `ledger_entries`: two per line, pending points (with lot and expiry) and pending growth, with the same
//!   key, op, request and source texts;
//! - `loyalty_evaluations` (variant `full` only): one JSON explanation per order, of the size the default
//!   rule set produces (about 2 KB), compressed with zstd on SQLite as the store keeps it.
//!
//! Configuration by environment (cargo passes its own flags to a bench binary):
//! `RAW_DB` (`sqlite://PATH` or `postgres://…`, required), `RAW_BATCH` (orders per transaction, default 8),
//! `RAW_SECS` (seconds per variant, default 10), `RAW_MEMBERS` (members 1..N that exist, default 1000),
//! `RAW_VARIANTS` (comma-separated, default `core,full`).
//!
//! Prints one line per variant: `raw store=… variant=… batch=… orders_per_s=… rows_per_s=…`.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::QueryBuilder;
use sqlx::types::Json;

/// One order's rows, ready to bind.
struct OrderRows {
    order_id: i64,
    member_id: i64,
    order_no: String,
    placed_at: DateTime<Utc>,
    subtotal: i64,
    discount_total: i64,
    shipping_fee: i64,
    total: i64,
    digest: Vec<u8>,
    lines: Vec<Line>,
    entries: Vec<Entry>,
    evaluation: Value,
}

struct Line {
    line_no: i32,
    sku: String,
    quantity: i64,
    unit_price: i64,
    discount: i64,
    amount: i64,
}

struct Entry {
    entry_id: i64,
    key: String,
    op: String,
    request: String,
    wallet: &'static str,
    amount: i64,
    available_at: DateTime<Utc>,
    source: Value,
    lot: String,
    expires_at: Option<DateTime<Utc>>,
}

/// Builds orders with the same shape as `benches/earn.lua` sends (1–3 lines, buyers spread over members,
/// placed within the last 48 hours) and the entries the default rule set earns on them (1 point and 1 growth
/// per yuan).
struct Generator {
    n: i64,
    next_order: i64,
    next_entry: i64,
    members: i64,
    started: DateTime<Utc>,
    evaluations: bool,
    eval_template: Value,
}

impl Generator {
    fn order(&mut self) -> OrderRows {
        self.n += 1;
        let n = self.n;
        let order_id = self.next_order;
        self.next_order += 1;
        let member_id = (n * 7919 % self.members) + 1;
        let placed_at = self.started - chrono::Duration::seconds(60 + (n * 37) % (48 * 3600));
        let mut lines = Vec::new();
        for i in 1..=(n % 3) + 1 {
            let quantity = (n + i) % 3 + 1;
            let unit_price = 990 + ((n * 31 + i * 17) % 40) * 250;
            let discount = if i == 2 { 300 } else { 0 };
            lines.push(Line {
                line_no: i as i32,
                sku: format!("SKU-{}", (n * 7 + i * 13) % 500),
                quantity,
                unit_price,
                discount,
                amount: quantity * unit_price - discount,
            });
        }
        let subtotal: i64 = lines.iter().map(|l| l.quantity * l.unit_price).sum();
        let discount_total: i64 = lines.iter().map(|l| l.discount).sum();
        let shipping_fee = 800;
        let total = subtotal - discount_total + shipping_fee;
        let order_no = format!("R-{n}");
        let digest = Sha256::digest(format!("web|{order_no}|{member_id}|{total}|{placed_at}").as_bytes()).to_vec();
        let available_at = placed_at + chrono::Duration::days(7);
        let expires_at = placed_at + chrono::Duration::days(365);
        let mut entries = Vec::new();
        for l in &lines {
            let points = l.amount / 100;
            for wallet in ["points", "growth"] {
                let op = format!("order:{order_id}:{}:{wallet}", l.line_no);
                let source = json!({ "type": "order_line", "order_id": order_id, "line_no": l.line_no });
                let request = json!({
                    "op": "earn", "wallet": wallet, "amount": points, "source": source, "at": placed_at,
                })
                .to_string();
                let key = format!("{op}#0");
                entries.push(Entry {
                    entry_id: self.next_entry,
                    lot: key.clone(),
                    key,
                    op,
                    request,
                    wallet,
                    amount: points,
                    available_at,
                    source,
                    expires_at: (wallet == "points").then_some(expires_at),
                });
                self.next_entry += 1;
            }
        }
        // Built only when written (variant `full`), so `core` does not pay for it.
        let mut evaluation = if self.evaluations { self.eval_template.clone() } else { Value::Null };
        if self.evaluations {
            evaluation["effects"] = Value::Array(
            lines
                .iter()
                .map(|l| {
                    json!({"beneficiary":{"who":"member"},"growth":l.amount / 100,"multiplier_bp":10000,"multipliers":["benefits"],
                           "points":l.amount / 100,"rule_id":"base","rule_version":1,
                           "target":{"line_no":l.line_no,"on":"line"},"uncapped_points":l.amount / 100})
                })
                .collect(),
            );
        }
        OrderRows {
            order_id,
            member_id,
            order_no,
            placed_at,
            subtotal,
            discount_total,
            shipping_fee,
            total,
            digest,
            lines,
            entries,
            evaluation,
        }
    }
}

/// The explanation the default rule set records for an order, less its per-line effects (filled per order).
fn evaluation_template() -> Value {
    let not =
        |id: &str, reason: &str| json!({"applied": false, "reason": reason, "rule_id": id, "target": {"on": "order"}});
    let mut explanations = vec![
        not("member_day", "order placed on Sunday (local), member day is Wednesday"),
        not("birthday_month", "no birthday on file"),
        not("double11", "outside campaign window 2025-11-01 00:00:00 – 2025-11-12 00:00:00 (local)"),
        not("miniprogram", "order channel web is not wechat_mp"),
    ];
    for line_no in 1..=2 {
        let on_line = |id: &str, applied: bool, reason: &str| json!({"applied": applied, "reason": reason, "rule_id": id, "target": {"line_no": line_no, "on": "line"}});
        explanations.push(on_line("benefits", true, "applies to every order: benefits of regular give ×1"));
        explanations.push(on_line("skincare_bonus", false, "line has no category"));
        explanations.push(on_line("own_brand", false, "line has no brand"));
        explanations.push(on_line("base", true, "3998 fen at 1 point(s) per 100 fen × ×1: 39 point(s), 39 growth"));
    }
    explanations.push(
        json!({"applied": false, "reason": "shipping excluded", "rule_id": "base", "target": {"on": "shipping"}}),
    );
    explanations.push(not("referral", "member was not referred"));
    explanations.push(not("daily_points", "daily cap not reached (0 + 93 of 2000)"));
    explanations.push(not("monthly_points", "monthly cap not reached (100 + 93 of 20000)"));
    explanations.push(not("share_daily", "daily cap: nothing in scope earns points here"));
    json!({"effects": [], "explanations": explanations, "rule_version": 1})
}

/// Write one batch in one transaction: one multi-row INSERT per table. `$ts` turns an instant into the
/// store's bound type (SQLite: integer microseconds; PostgreSQL: TIMESTAMPTZ).
macro_rules! write_batch {
    ($conn:expr, $db:ty, $ts:expr, $batch:expr, $evaluations:expr, $evaluation:expr, $now:expr) => {{
        let conn = $conn;
        let batch: &[OrderRows] = $batch;
        let ts = $ts;
        let now: DateTime<Utc> = $now;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let mut q = QueryBuilder::<$db>::new(
            "INSERT INTO orders (order_id, member_id, channel, order_no, store, status, placed_at, paid_at, currency, \
             subtotal, discount_total, shipping_fee, total, coupon_code, created_at) ",
        );
        q.push_values(batch, |mut b, o| {
            b.push_bind(o.order_id)
                .push_bind(o.member_id)
                .push_bind("web")
                .push_bind(o.order_no.clone())
                .push_bind(None::<String>)
                .push_bind("paid")
                .push_bind(ts(o.placed_at))
                .push_bind(None::<i64>.map(|_| ts(now)))
                .push_bind("CNY")
                .push_bind(o.subtotal)
                .push_bind(o.discount_total)
                .push_bind(o.shipping_fee)
                .push_bind(o.total)
                .push_bind(None::<String>)
                .push_bind(ts(now));
        });
        q.build().execute(&mut *tx).await?;
        let lines: Vec<(&OrderRows, &Line)> = batch.iter().flat_map(|o| o.lines.iter().map(move |l| (o, l))).collect();
        let mut q = QueryBuilder::<$db>::new(
            "INSERT INTO order_lines (member_id, order_id, line_no, sku, kind, quantity, unit_price, discount, amount) ",
        );
        q.push_values(&lines, |mut b, (o, l)| {
            b.push_bind(o.member_id)
                .push_bind(o.order_id)
                .push_bind(l.line_no)
                .push_bind(l.sku.clone())
                .push_bind("product")
                .push_bind(l.quantity)
                .push_bind(l.unit_price)
                .push_bind(l.discount)
                .push_bind(l.amount);
        });
        q.build().execute(&mut *tx).await?;
        let mut q = QueryBuilder::<$db>::new(
            "INSERT INTO natural_keys (kind, channel, reference, member_id, entity_id, content_hash) ",
        );
        q.push_values(batch, |mut b, o| {
            b.push_bind("order")
                .push_bind("web")
                .push_bind(o.order_no.clone())
                .push_bind(o.member_id)
                .push_bind(o.order_id)
                .push_bind(o.digest.clone());
        });
        q.build().execute(&mut *tx).await?;
        let entries: Vec<(&OrderRows, &Entry)> =
            batch.iter().flat_map(|o| o.entries.iter().map(move |e| (o, e))).collect();
        let mut q = QueryBuilder::<$db>::new(
            "INSERT INTO ledger_entries (entry_id, member_id, entry_key, op, request, wallet, amount, kind, state, \
             available_at, source, at, lot, expires_at) ",
        );
        q.push_values(&entries, |mut b, (o, e)| {
            b.push_bind(e.entry_id)
                .push_bind(o.member_id)
                .push_bind(e.key.clone())
                .push_bind(e.op.clone())
                .push_bind(e.request.clone())
                .push_bind(e.wallet)
                .push_bind(e.amount)
                .push_bind("earn")
                .push_bind("pending")
                .push_bind(Some(ts(e.available_at)))
                .push_bind(Json(e.source.clone()))
                .push_bind(ts(o.placed_at))
                .push_bind(Some(e.lot.clone()))
                .push_bind(e.expires_at.map(ts));
        });
        q.build().execute(&mut *tx).await?;
        if $evaluations {
            let mut q = QueryBuilder::<$db>::new(
                "INSERT INTO loyalty_evaluations (member_id, op, rule_version, evaluation, at) ",
            );
            let stored: Vec<_> = batch.iter().map(|o| ($evaluation)(&o.evaluation)).collect::<Result<_, _>>()?;
            q.push_values(batch.iter().zip(stored), |mut b, (o, stored)| {
                b.push_bind(o.member_id)
                    .push_bind(format!("order:{}", o.order_id))
                    .push_bind(1i64)
                    .push_bind(stored)
                    .push_bind(ts(o.placed_at));
            });
            q.push(" ON CONFLICT (member_id, op) DO NOTHING");
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        (batch.len() + lines.len() + batch.len() + entries.len() + if $evaluations { batch.len() } else { 0 }) as u64
    }};
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The page cache the store's writer would use on this file (it depends on the database's size).
fn writer_cache_kib(path: &str) -> std::io::Result<i64> {
    Ok(huiyuan::store::sqlite::writer_cache_kib(std::fs::metadata(path)?.len() as i64))
}

/// Run one variant for `secs`; returns (orders, rows, elapsed).
async fn run_variant(
    url: &str,
    batch_size: usize,
    secs: f64,
    members: i64,
    evaluations: bool,
) -> Result<(u64, u64, Duration), sqlx::Error> {
    let deadline = Duration::from_secs_f64(secs);
    let (mut orders, mut rows) = (0u64, 0u64);
    if let Some(path) = url.strip_prefix("sqlite://") {
        use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .pragma("cache_size", format!("-{}", writer_cache_kib(path)?))
            .pragma("temp_store", "memory")
            // Checkpointed as the store does (`src/store/sqlite.rs`): passively on a second connection every
            // 100 ms, each pass that copied frames followed by a sync of the database file, and past 64 MB of
            // log the writer copies the last frames between two transactions.
            .pragma("wal_autocheckpoint", "0");
        let mut conn = sqlx::ConnectOptions::connect(&opts).await?;
        let mut checkpointer: sqlx::SqliteConnection = sqlx::ConnectOptions::connect(&opts).await?;
        let catch_up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = catch_up.clone();
        let db_file = std::sync::Arc::new(std::fs::File::open(path)?);
        let background = tokio::spawn(async move {
            let mut copied_before = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let passive: Result<(i64, i64, i64), sqlx::Error> =
                    sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&mut checkpointer).await;
                let Ok((_, log, copied)) = passive else { continue };
                if copied != copied_before {
                    let file = db_file.clone();
                    // A failed sync only makes the writer's catch-up slower, as it would in the store.
                    let _ = tokio::task::spawn_blocking(move || file.sync_data()).await;
                }
                copied_before = copied;
                if log > 16_384 {
                    flag.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        let mut g = generator(sqlx::query_as(START_SQL).fetch_one(&mut conn).await?, members, evaluations);
        let ts = |t: DateTime<Utc>| t.timestamp_micros();
        // Evaluations as the store keeps them on SQLite: a zstd frame each, one reused context.
        let mut zstd = zstd::bulk::Compressor::new(1)?;
        let mut compress = |v: &Value| zstd.compress(v.to_string().as_bytes());
        let start = Instant::now();
        while start.elapsed() < deadline {
            let batch: Vec<OrderRows> = (0..batch_size).map(|_| g.order()).collect();
            rows += write_batch!(&mut conn, sqlx::Sqlite, ts, &batch, evaluations, &mut compress, Utc::now());
            orders += batch.len() as u64;
            if catch_up.swap(false, std::sync::atomic::Ordering::Relaxed) {
                sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&mut conn).await?;
            }
        }
        let elapsed = start.elapsed();
        background.abort();
        Ok((orders, rows, elapsed))
    } else {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
        let mut g = generator(sqlx::query_as(START_SQL).fetch_one(&mut conn).await?, members, evaluations);
        let ts = |t: DateTime<Utc>| t;
        let json = |v: &Value| Ok::<_, std::io::Error>(Json(v.clone()));
        let start = Instant::now();
        while start.elapsed() < deadline {
            let batch: Vec<OrderRows> = (0..batch_size).map(|_| g.order()).collect();
            rows += write_batch!(&mut conn, sqlx::Postgres, ts, &batch, evaluations, json, Utc::now());
            orders += batch.len() as u64;
        }
        Ok((orders, rows, start.elapsed()))
    }
}

/// The ids already stored (an earlier variant, the members' own entries), so a variant continues after them.
const START_SQL: &str = "SELECT (SELECT CAST(COALESCE(MAX(order_id), 0) AS BIGINT) FROM orders), \
     (SELECT CAST(COALESCE(MAX(entry_id), 0) AS BIGINT) FROM ledger_entries), \
     (SELECT CAST(COUNT(*) AS BIGINT) FROM orders)";

fn generator((orders, entries, n): (i64, i64, i64), members: i64, evaluations: bool) -> Generator {
    Generator {
        n: n + 1_000_000,
        next_order: orders + 1,
        next_entry: entries + 1,
        members,
        started: Utc::now(),
        evaluations,
        eval_template: evaluation_template(),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("RAW_DB").map_err(|_| "set RAW_DB to sqlite://PATH or postgres://… (a migrated database)")?;
    let batch: usize = env_or("RAW_BATCH", 8usize).max(1);
    let secs: f64 = env_or("RAW_SECS", 10.0);
    let members: i64 = env_or("RAW_MEMBERS", 1000i64).max(1);
    let variants: String = env_or("RAW_VARIANTS", "core,full".to_string());
    let store = if url.starts_with("sqlite://") { "sqlite" } else { "postgres" };
    for variant in variants.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        let evaluations = match variant {
            "core" => false,
            "full" => true,
            other => return Err(format!("unknown variant `{other}`: core or full").into()),
        };
        let (orders, rows, elapsed) = run_variant(&url, batch, secs, members, evaluations).await?;
        let s = elapsed.as_secs_f64();
        println!(
            "raw store={store} variant={variant} batch={batch} orders={orders} rows={rows} seconds={s:.2} \
             orders_per_s={:.0} rows_per_s={:.0}",
            orders as f64 / s,
            rows as f64 / s
        );
    }
    Ok(())
}
