//! SQLite's bulk analytics reads: tens of millions of rows per analysis run.
//!
//! Two things make them slow through sqlx, and both are avoided here:
//! - sqlx copies every column value of every row (one allocation each) on the connection's worker thread,
//!   then sends the row over a channel: about 2 µs a row, 48 s for 20 million orders that the `sqlite3`
//!   shell scans in 10 s. Here one of the pool's reader connections is lent to rusqlite on a blocking thread,
//!   which steps the statement and reads each column in place.
//! - Walking a `(member_id, …)` index and fetching each row by rowid is a random read per row. Tables are
//!   scanned in table order (`NOT INDEXED`), or through an index that covers every column the read needs,
//!   and rows are grouped by member here.
//!
//! Architecture invariant: every function here returns exactly what the PostgreSQL store's SQL aggregate
//! returns for the same data (the integration tests compare the two stores).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::Connection;
use sqlx::SqlitePool;

use super::{
    ByMember, EngagementDay, EventRow, EventTally, LineFact, LineFacts, MemberTagRow, PURCHASED, PointsDay,
    PreviousMember, PurchaseDay, SkuFacts, StoreError, StoreResult, body_codec, epoch_day,
};

/// Microseconds in a UTC day: instants are stored as integer microseconds since the Unix epoch.
const DAY: i64 = 86_400_000_000;

/// Engagement event types (views, carts, check-ins, campaign clicks).
const ENGAGEMENT_TYPES: [&str; 5] = ["page_view", "product_view", "add_to_cart", "check_in", "campaign_click"];

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Scan(e.to_string())
    }
}

impl From<rusqlite::types::FromSqlError> for StoreError {
    fn from(e: rusqlite::types::FromSqlError) -> Self {
        StoreError::Scan(e.to_string())
    }
}

/// Run `f` over one of the pool's connections through rusqlite, on a blocking thread.
async fn scan<T, F>(pool: &SqlitePool, f: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
{
    let mut conn = pool.acquire().await?;
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut locked = runtime.block_on(conn.lock_handle())?;
        // SAFETY: while `locked` lives, sqlx's worker thread does not touch the connection, and `db` is
        // dropped before it. `from_handle` borrows the handle: dropping `db` finalizes its own statements
        // and leaves the connection open for sqlx.
        let db = unsafe { Connection::from_handle(locked.as_raw_handle().as_ptr()) }?;
        let out = f(&db);
        drop(db);
        drop(locked);
        out
    })
    .await
    .map_err(|e| StoreError::Scan(format!("scan task: {e}")))?
}

fn instant(micros: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| StoreError::Corrupt(format!("instant {micros} out of range")))
}

/// One output per run of equal keys in rows sorted by key: `start` makes it from the run's first row, `merge`
/// adds each further row (the grouping SQL's `GROUP BY` does on PostgreSQL).
fn fold_runs<R, K: PartialEq, O>(
    rows: impl IntoIterator<Item = R>,
    key: impl Fn(&R) -> K,
    mut start: impl FnMut(R) -> StoreResult<O>,
    mut merge: impl FnMut(&mut O, R),
) -> StoreResult<Vec<O>> {
    let mut out: Vec<O> = Vec::new();
    let mut last: Option<K> = None;
    for row in rows {
        let k = key(&row);
        match out.last_mut() {
            Some(o) if last.as_ref() == Some(&k) => merge(o, row),
            _ => {
                out.push(start(row)?);
                last = Some(k);
            }
        }
    }
    Ok(out)
}

/// Text interned by value: tens of millions of rows name a few thousand SKUs and a handful of event types.
struct Interner<V> {
    /// Fx hashing: the keys are a shop's own SKUs, types and session ids, looked up once per row.
    ids: rustc_hash::FxHashMap<Box<str>, V>,
}

impl<V: Clone> Interner<V> {
    fn new() -> Self {
        Self { ids: rustc_hash::FxHashMap::default() }
    }

    fn get_or(&mut self, key: &str, make: impl FnOnce(&str) -> V) -> V {
        if let Some(v) = self.ids.get(key) {
            return v.clone();
        }
        let v = make(key);
        self.ids.insert(key.into(), v.clone());
        v
    }
}

/// Per-member, per-day purchases (orders, amount, orders with a coupon or discount), ordered by member and day.
pub(super) async fn purchase_days(pool: &SqlitePool, until: DateTime<Utc>) -> StoreResult<ByMember<PurchaseDay>> {
    let until = until.timestamp_micros();
    scan(pool, move |db| {
        let mut stmt = db.prepare(&format!(
            "SELECT member_id, placed_at / {DAY}, total, coupon_code IS NOT NULL OR discount_total > 0 \
             FROM orders NOT INDEXED WHERE {PURCHASED} AND placed_at < ?1 AND member_id <> 0"
        ))?;
        let mut rows = stmt.query([until])?;
        let mut all: Vec<(i64, i32, bool, i64)> = Vec::new();
        while let Some(r) = rows.next()? {
            // (member, day, promo, total)
            all.push((r.get(0)?, r.get(1)?, r.get(3)?, r.get(2)?));
        }
        all.sort_unstable_by_key(|r| (r.0, r.1));
        let mut out: ByMember<PurchaseDay> = ByMember::default();
        let mut last: Option<(i64, i32)> = None;
        for (member_id, d, promo, total) in all {
            match out.last_mut() {
                Some(p) if last == Some((member_id, d)) => {
                    p.orders = p.orders.saturating_add(1);
                    p.promo_orders = p.promo_orders.saturating_add(u32::from(promo));
                    p.amount += total;
                }
                _ => {
                    let day = epoch_day(i64::from(d))?;
                    out.push(member_id, PurchaseDay { day, orders: 1, promo_orders: u32::from(promo), amount: total });
                    last = Some((member_id, d));
                }
            }
        }
        out.shrink_to_fit();
        Ok(out)
    })
    .await
}

/// Per-member, per-day points earned and spent.
///
/// Reads only the index `ledger_entries_member`, which carries every column needed (migration 0014): the
/// table itself holds each entry's request and source, and is several times larger. The index is in member
/// order, so each member's entries are folded by day as they end.
pub(super) async fn points_days(pool: &SqlitePool, until: DateTime<Utc>) -> StoreResult<ByMember<PointsDay>> {
    let until = until.timestamp_micros();
    scan(pool, move |db| {
        let mut stmt = db.prepare(POINTS_SQL)?;
        let mut rows = stmt.query([until])?;
        let mut out: ByMember<PointsDay> = ByMember::default();
        // The current member's (day, earned, spent), in entry order.
        let mut member: Option<i64> = None;
        let mut days: Vec<(i64, i64, i64)> = Vec::new();
        let flush =
            |member_id: i64, days: &mut Vec<(i64, i64, i64)>, out: &mut ByMember<PointsDay>| -> StoreResult<()> {
                days.sort_unstable_by_key(|d| d.0);
                let mut last: Option<i64> = None;
                for &(d, earned, spent) in days.iter() {
                    match out.last_mut() {
                        Some(p) if last == Some(d) => {
                            p.earned += earned;
                            p.spent += spent;
                        }
                        _ => {
                            out.push(member_id, PointsDay { day: epoch_day(d)?, earned, spent });
                            last = Some(d);
                        }
                    }
                }
                days.clear();
                Ok(())
            };
        while let Some(r) = rows.next()? {
            let member_id: i64 = r.get(0)?;
            let (d, earn, amount): (i64, bool, i64) = (r.get(1)?, r.get(2)?, r.get(3)?);
            if member != Some(member_id) {
                if let Some(m) = member {
                    flush(m, &mut days, &mut out)?;
                }
                member = Some(member_id);
            }
            // Earned is the signed sum of `earn` entries: maturing a lot writes −p pending and +p available
            // beside the original +p pending, so only the sum counts each point once.
            days.push(if earn { (d, amount, 0) } else { (d, 0, -amount) });
        }
        if let Some(m) = member {
            flush(m, &mut days, &mut out)?;
        }
        out.shrink_to_fit();
        Ok(out)
    })
    .await
}

const POINTS_SQL: &str = "SELECT member_id, at / 86400000000, kind = 'earn', amount \
     FROM ledger_entries INDEXED BY ledger_entries_member \
     WHERE wallet = 'points' AND state <> 'voided' AND at < ?1 AND kind IN ('earn', 'redeem')";

/// Per-member, per-type event counts (all time and since `since`) and the latest event.
pub(super) async fn event_tallies(
    pool: &SqlitePool,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> StoreResult<Vec<EventTally>> {
    let (since, until) = (since.timestamp_micros(), until.timestamp_micros());
    scan(pool, move |db| {
        let mut stmt = db.prepare(
            "SELECT member_id, event_type, occurred_at FROM events NOT INDEXED WHERE member_id <> 0 AND occurred_at < ?1",
        )?;
        let mut rows = stmt.query([until])?;
        let mut types: Vec<Box<str>> = Vec::new();
        let mut type_ids: Interner<usize> = Interner::new();
        // (member, type) → (total, recent, latest)
        let mut tally: HashMap<(i64, usize), (i64, i64, i64)> = HashMap::new();
        while let Some(r) = rows.next()? {
            let member_id: i64 = r.get(0)?;
            let t = type_ids.get_or(r.get_ref(1)?.as_str()?, |s| {
                types.push(s.into());
                types.len() - 1
            });
            let at: i64 = r.get(2)?;
            let e = tally.entry((member_id, t)).or_insert((0, 0, at));
            e.0 += 1;
            e.1 += i64::from(at >= since);
            e.2 = e.2.max(at);
        }
        let mut out = tally
            .into_iter()
            .map(|((member_id, t), (total, recent, last))| {
                Ok(EventTally { member_id, event_type: types[t].to_string(), total, recent, last_at: instant(last)? })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort_unstable_by(|a, b| (a.member_id, &a.event_type).cmp(&(b.member_id, &b.event_type)));
        Ok(out)
    })
    .await
}

/// Every member's tags, ordered by member, weight (highest first) and tag: the tags stage's starting point,
/// a few per member. Read in table order and sorted here, without sqlx's copy of every value (2.8 million
/// tags at scale).
pub(super) async fn all_member_tags(pool: &SqlitePool) -> StoreResult<Vec<MemberTagRow>> {
    scan(pool, move |db| {
        let mut stmt = db.prepare(
            "SELECT member_id, tag, category, source, weight, support_weight, last_supported_at, first_tagged_at, \
             reason FROM member_tags NOT INDEXED",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(MemberTagRow {
                member_id: r.get(0)?,
                tag: r.get(1)?,
                category: r.get(2)?,
                source: r.get(3)?,
                weight: r.get(4)?,
                support_weight: r.get(5)?,
                last_supported_at: instant(r.get(6)?)?,
                first_tagged_at: instant(r.get(7)?)?,
                reason: r.get(8)?,
            });
        }
        out.sort_unstable_by(|a, b| {
            a.member_id.cmp(&b.member_id).then(b.weight.total_cmp(&a.weight)).then_with(|| a.tag.cmp(&b.tag))
        });
        Ok(out)
    })
    .await
}

/// The decoder of run `run_id`'s member bodies, with the run's dictionary if it has one.
fn body_decoder(db: &Connection, run_id: i64) -> StoreResult<body_codec::Decoder> {
    use rusqlite::OptionalExtension;
    let dict: Option<Vec<u8>> = db
        .query_row("SELECT body_dict FROM analytics_runs WHERE run_id = ?1", [run_id], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(body_codec::Decoder::new(dict.as_deref()))
}

/// [`body_decoder`] from async code (a profile read that finds no decoder cached for its run).
pub(super) async fn run_body_decoder(pool: &SqlitePool, run_id: i64) -> StoreResult<body_codec::Decoder> {
    scan(pool, move |db| body_decoder(db, run_id)).await
}

/// The stage and the `rfm` body section of every member of run `run_id`, by member: what the next run
/// compares with. The run's rows are found by their rowid range (a run's rows are inserted together, so they
/// are contiguous) and read in table order; the bodies are decompressed and the section cut out on the rayon
/// pool, a chunk of rows at a time.
pub(super) async fn previous_members(pool: &SqlitePool, run_id: i64) -> StoreResult<Vec<PreviousMember>> {
    /// The one section kept; serde skips the others without building them.
    #[derive(serde::Deserialize)]
    struct RfmOnly {
        rfm: Option<Box<serde_json::value::RawValue>>,
    }
    const CHUNK: usize = 20_000;
    scan(pool, move |db| {
        let decoder = body_decoder(db, run_id)?;
        let (first, last): (Option<i64>, Option<i64>) = db.query_row(
            "SELECT MIN(rowid), MAX(rowid) FROM member_analytics INDEXED BY member_analytics_run WHERE run_id = ?1",
            [run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let (Some(first), Some(last)) = (first, last) else { return Ok(Vec::new()) };
        let mut stmt = db.prepare(
            "SELECT member_id, stage, body FROM member_analytics WHERE rowid BETWEEN ?1 AND ?2 AND run_id = ?3",
        )?;
        let mut rows = stmt.query(rusqlite::params![first, last, run_id])?;
        let mut out: Vec<PreviousMember> = Vec::new();
        let mut chunk: Vec<(i64, String, Vec<u8>)> = Vec::with_capacity(CHUNK);
        let mut flush = |chunk: &mut Vec<(i64, String, Vec<u8>)>| -> StoreResult<()> {
            use rayon::prelude::*;
            let decoded: Vec<PreviousMember> = chunk
                .par_drain(..)
                .chunks(512)
                .map(|part| {
                    let mut context = decoder.context()?;
                    part.into_iter()
                        .map(|(member_id, stage, body)| {
                            let rfm = decoder.json::<RfmOnly>(&mut context, &body)?.rfm;
                            Ok(PreviousMember { member_id, stage, rfm })
                        })
                        .collect::<StoreResult<Vec<_>>>()
                })
                .collect::<StoreResult<Vec<_>>>()?
                .into_iter()
                .flatten()
                .collect();
            out.extend(decoded);
            Ok(())
        };
        while let Some(r) = rows.next()? {
            // A BLOB, or JSON text for rows stored before bodies were compressed.
            let body = match r.get_ref(2)? {
                rusqlite::types::ValueRef::Blob(b) | rusqlite::types::ValueRef::Text(b) => b.to_vec(),
                other => return Err(StoreError::Corrupt(format!("member body of type {:?}", other.data_type()))),
            };
            chunk.push((r.get(0)?, r.get(1)?, body));
            if chunk.len() == CHUNK {
                flush(&mut chunk)?;
            }
        }
        flush(&mut chunk)?;
        out.sort_unstable_by_key(|m| m.member_id);
        Ok(out)
    })
    .await
}

/// Merchandise lines of paid orders placed in `[since, until)`, with their SKU's category and brand,
/// ordered by member, order and line.
///
/// The orders of the window are read first (by order id), then the product lines from the window's first
/// order on in table order, matched to their orders here: joining in SQL looks each line's order up by key,
/// a random read per line.
pub(super) async fn line_facts(
    pool: &SqlitePool,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> StoreResult<LineFacts> {
    let (since, until) = (since.timestamp_micros(), until.timestamp_micros());
    scan(pool, move |db| {
        let started = std::time::Instant::now();
        // SKU text → position in `facts`.
        let mut skus: Interner<u32> = Interner::new();
        let mut facts: Vec<SkuFacts> = Vec::new();
        let mut stmt = db.prepare("SELECT sku, category_path, brand FROM skus")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let sku = SkuFacts { sku: r.get(0)?, category: r.get(1)?, brand: r.get(2)? };
            let key = sku.sku.clone();
            skus.get_or(&key, |_| {
                facts.push(sku);
                (facts.len() - 1) as u32
            });
        }
        drop(rows);
        drop(stmt);

        // order id → (member, day)
        let mut window: Vec<(i64, i64, NaiveDate)> = Vec::new();
        let mut stmt = db.prepare(&format!(
            "SELECT order_id, member_id, placed_at / {DAY} FROM orders NOT INDEXED \
             WHERE {PURCHASED} AND placed_at >= ?1 AND placed_at < ?2 AND member_id <> 0"
        ))?;
        let mut rows = stmt.query([since, until])?;
        while let Some(r) = rows.next()? {
            window.push((r.get(0)?, r.get(1)?, epoch_day(r.get(2)?)?));
        }
        drop(rows);
        drop(stmt);
        let orders = OrderIndex::new(window);
        let Some(first_order) = orders.first_id() else { return Ok(LineFacts::default()) };
        let orders_ms = started.elapsed().as_millis() as u64;

        // Lines are stored as their orders arrive, so a window of recent orders is the table's tail: start the
        // scan at the first line of an order at or after the window's lowest order id. Finding it walks the
        // primary-key index alone (order id, line, rowid); lines before it cannot belong to the window, and
        // every line after it is still matched to its order below, so the cut is exact whatever the order of
        // ids and rows.
        // (Unhinted, SQLite answers MIN(rowid) by walking the table in rowid order to the first match.)
        let first_row: Option<i64> = db.query_row(FIRST_LINE_SQL, [first_order], |r| r.get(0))?;
        let Some(first_row) = first_row else { return Ok(LineFacts::default()) };
        let mut stmt = db.prepare(
            "SELECT member_id, order_id, line_no, sku, unit_price, amount FROM order_lines \
             WHERE rowid >= ?1 AND kind = 'product'",
        )?;
        let mut rows = stmt.query([first_row])?;
        // (member, line number, line)
        let mut out: Vec<(i64, u32, LineFact)> = Vec::new();
        while let Some(r) = rows.next()? {
            let (member_id, order_id): (i64, i64) = (r.get(0)?, r.get(1)?);
            let Some((order_member, day)) = orders.get(order_id) else { continue };
            if order_member != member_id {
                continue;
            }
            let sku = skus.get_or(r.get_ref(3)?.as_str()?, |sku| {
                facts.push(SkuFacts { sku: sku.to_string(), category: None, brand: None });
                (facts.len() - 1) as u32
            });
            let line_no = u32::try_from(r.get::<_, i64>(2)?).unwrap_or(u32::MAX);
            out.push((member_id, line_no, LineFact { order_id, day, sku, unit_price: r.get(4)?, amount: r.get(5)? }));
        }
        let scanned_ms = started.elapsed().as_millis() as u64;
        drop(orders);
        out.sort_unstable_by_key(|(member_id, line_no, f)| (*member_id, f.order_id, *line_no));
        tracing::debug!(
            orders_ms,
            scanned_ms,
            sorted_ms = started.elapsed().as_millis() as u64,
            lines = out.len(),
            "order lines read"
        );
        // Collected in place, into the larger rows' allocation (then shrunk to the lines it holds), the members
        // noted once per run as the rows go by.
        let mut runs: Vec<(i64, u32)> = Vec::new();
        let mut lines: Vec<LineFact> = out
            .into_iter()
            .map(|(member_id, _, f)| {
                super::count_run(&mut runs, member_id);
                f
            })
            .collect();
        lines.shrink_to_fit();
        runs.shrink_to_fit();
        Ok(LineFacts { lines: ByMember { runs, rows: lines }, skus: facts })
    })
    .await
}

/// Orders by id, for matching each line to its order's member and day.
///
/// A shop's order ids come from one sequence, so a window of orders is nearly a contiguous id range, and
/// lines arrive in about id order: a slot per id in that range is looked up in memory order, where a hash
/// map of ten million orders costs a cache miss per line. Ids too sparse for that (more than four slots per
/// order) fall back to a hash map.
enum OrderIndex {
    /// `slots[id - first]`: (member, day), member 0 where no order of the window has that id (guest orders,
    /// whose member is 0, are never in the window).
    Dense {
        first: i64,
        slots: Vec<(i64, NaiveDate)>,
    },
    Sparse {
        first: i64,
        map: rustc_hash::FxHashMap<i64, (i64, NaiveDate)>,
    },
    Empty,
}

impl OrderIndex {
    /// Index `(order id, member, day)` rows.
    fn new(orders: Vec<(i64, i64, NaiveDate)>) -> Self {
        let (Some(first), Some(last)) = (orders.iter().map(|o| o.0).min(), orders.iter().map(|o| o.0).max()) else {
            return Self::Empty;
        };
        let span = u64::try_from(last - first).ok().and_then(|s| usize::try_from(s + 1).ok());
        match span {
            Some(span) if span <= orders.len().saturating_mul(4) => {
                let mut slots = vec![(0, NaiveDate::MIN); span];
                for (id, member, day) in orders {
                    // In range by construction: first <= id <= last.
                    slots[(id - first) as usize] = (member, day);
                }
                Self::Dense { first, slots }
            }
            _ => Self::Sparse { first, map: orders.into_iter().map(|(id, m, d)| (id, (m, d))).collect() },
        }
    }

    /// The lowest order id in the window, if it has any order.
    fn first_id(&self) -> Option<i64> {
        match self {
            Self::Dense { first, .. } | Self::Sparse { first, .. } => Some(*first),
            Self::Empty => None,
        }
    }

    /// The member and day of order `id`, if it is in the window.
    fn get(&self, id: i64) -> Option<(i64, NaiveDate)> {
        match self {
            Self::Dense { first, slots } => {
                let slot = usize::try_from(id.checked_sub(*first)?).ok()?;
                slots.get(slot).copied().filter(|&(member, _)| member != 0)
            }
            Self::Sparse { map, .. } => map.get(&id).copied(),
            Self::Empty => None,
        }
    }
}

/// The first row of `order_lines` holding a line of an order with an id at or above `?1`, found from the
/// primary-key index alone.
const FIRST_LINE_SQL: &str =
    "SELECT MIN(rowid) FROM order_lines INDEXED BY sqlite_autoindex_order_lines_1 WHERE order_id >= ?1";

/// Per-member, per-day, per-type counts of engagement events in `[since, until)`, ordered by member and day.
pub(super) async fn engagement_days(
    pool: &SqlitePool,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> StoreResult<Vec<EngagementDay>> {
    let (since, until) = (since.timestamp_micros(), until.timestamp_micros());
    scan(pool, move |db| {
        let types = ENGAGEMENT_TYPES.map(|t| format!("'{t}'")).join(", ");
        let mut stmt = db.prepare(&format!(
            "SELECT member_id, occurred_at / {DAY}, event_type FROM events NOT INDEXED WHERE member_id <> 0 \
             AND event_type IN ({types}) AND occurred_at >= ?1 AND occurred_at < ?2"
        ))?;
        let mut rows = stmt.query([since, until])?;
        let mut all: Vec<(i64, i32, u8)> = Vec::new();
        while let Some(r) = rows.next()? {
            let event_type = r.get_ref(2)?.as_str()?;
            let t = ENGAGEMENT_TYPES.iter().position(|x| *x == event_type).unwrap_or(0);
            all.push((r.get(0)?, r.get(1)?, u8::try_from(t).unwrap_or(0)));
        }
        all.sort_unstable();
        let names: [Arc<str>; 5] = ENGAGEMENT_TYPES.map(Arc::from);
        fold_runs(
            all,
            |row| *row,
            |(member_id, d, t)| {
                let day = epoch_day(i64::from(d))?;
                Ok(EngagementDay { member_id, day, event_type: names[usize::from(t)].clone(), count: 1 })
            },
            |e, _| e.count += 1,
        )
    })
    .await
}

/// Every member's events in `[since, until)`, ordered by member, time and event id.
pub(super) async fn event_rows(
    pool: &SqlitePool,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> StoreResult<Vec<EventRow>> {
    let (since, until) = (since.timestamp_micros(), until.timestamp_micros());
    scan(pool, move |db| {
        let mut stmt = db.prepare(
            "SELECT member_id, occurred_at, event_id, event_type, session_id, sku FROM events NOT INDEXED \
             WHERE member_id <> 0 AND occurred_at >= ?1 AND occurred_at < ?2",
        )?;
        let mut rows = stmt.query([since, until])?;
        // Types, SKUs and sessions repeat across events: each distinct text is allocated once.
        let mut texts: Interner<Arc<str>> = Interner::new();
        let mut all: Vec<(i64, i64, i64, EventRow)> = Vec::new();
        while let Some(r) = rows.next()? {
            let (member_id, at, event_id): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let event_type = texts.get_or(r.get_ref(3)?.as_str()?, |t: &str| Arc::from(t));
            let session_id = r.get_ref(4)?.as_str_or_null()?.map(|s| texts.get_or(s, |t: &str| Arc::from(t)));
            let sku = r.get_ref(5)?.as_str_or_null()?.map(|s| texts.get_or(s, |t: &str| Arc::from(t)));
            let row = EventRow { member_id, at: instant(at)?, event_type, session_id, sku };
            all.push((member_id, at, event_id, row));
        }
        all.sort_unstable_by_key(|r| (r.0, r.1, r.2));
        Ok(all.into_iter().map(|r| r.3).collect())
    })
    .await
}

/// Distinct members with an order or an event, per UTC day of `[since, until)`.
pub(super) async fn active_members_by_day(
    pool: &SqlitePool,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> StoreResult<Vec<(NaiveDate, i64)>> {
    let (since, until) = (since.timestamp_micros(), until.timestamp_micros());
    scan(pool, move |db| {
        let mut active: Vec<(i32, i64)> = Vec::new();
        for sql in [
            format!(
                "SELECT placed_at / {DAY}, member_id FROM orders NOT INDEXED \
                 WHERE member_id <> 0 AND placed_at >= ?1 AND placed_at < ?2"
            ),
            format!(
                "SELECT occurred_at / {DAY}, member_id FROM events NOT INDEXED \
                 WHERE member_id <> 0 AND occurred_at >= ?1 AND occurred_at < ?2"
            ),
        ] {
            let mut stmt = db.prepare(&sql)?;
            let mut rows = stmt.query([since, until])?;
            while let Some(r) = rows.next()? {
                active.push((r.get(0)?, r.get(1)?));
            }
        }
        active.sort_unstable();
        active.dedup();
        fold_runs(active, |a| a.0, |(d, _)| Ok((epoch_day(i64::from(d))?, 1)), |day, _| day.1 += 1)
    })
    .await
}

/// Run blocking work from async code that holds a borrowed connection (so it cannot move to
/// `spawn_blocking`): on a multi-threaded runtime the worker hands its other tasks off first; on a
/// current-thread runtime (tests, small shops) it runs in place.
pub(super) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Insert a run's member rows and computed tags on the writer's connection, inside the transaction the
/// caller holds open: a million members' rows with their bodies through sqlx took 33 s, each value copied
/// into the statement's arguments. Bodies are stored compressed, with the run's dictionary
/// (`body_codec`).
pub(super) async fn insert_run_rows(
    conn: &mut sqlx::SqliteConnection,
    run_id: i64,
    members: &mut dyn super::MemberRows,
    tags: &[&MemberTagRow],
) -> StoreResult<()> {
    let mut locked = conn.lock_handle().await?;
    let handle = locked.as_raw_handle().as_ptr();
    blocking(|| {
        // SAFETY: as in `scan`: `locked` keeps sqlx's worker away from the connection until `db` is dropped.
        let db = unsafe { Connection::from_handle(handle) }?;
        {
            let mut stmt = db.prepare(
                "INSERT INTO member_analytics (run_id, member_id, rfm_segment, stage, clv_fen, prob_alive, \
                 churn_risk, cluster, next_purchase, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            let started = std::time::Instant::now();
            let (mut rows, mut body_bytes, mut stored_bytes) = (0_usize, 0_usize, 0_usize);
            let (mut packing, mut waiting) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
            // The next chunk is joined from the spill files and compressed on another thread while this one
            // inserts the last: at a million members each side takes seconds.
            std::thread::scope(|scope| -> StoreResult<()> {
                let (send, packed) = std::sync::mpsc::sync_channel::<StoreResult<Packed>>(1);
                scope.spawn(move || pack_rows(members, &send));
                loop {
                    let t = std::time::Instant::now();
                    let Ok(chunk) = packed.recv() else { break };
                    waiting += t.elapsed();
                    let chunk = chunk?;
                    if let Some(dict) = &chunk.dict {
                        db.execute(
                            "UPDATE analytics_runs SET body_dict = ?1 WHERE run_id = ?2",
                            rusqlite::params![dict, run_id],
                        )?;
                    }
                    packing += chunk.took;
                    rows += chunk.rows.len();
                    body_bytes += chunk.plain_bytes;
                    stored_bytes += chunk.bodies.iter().map(Vec::len).sum::<usize>();
                    for (m, body) in chunk.rows.iter().zip(&chunk.bodies) {
                        stmt.execute(rusqlite::params![
                            run_id,
                            m.member_id,
                            m.rfm_segment,
                            m.stage,
                            m.clv_fen,
                            m.prob_alive,
                            m.churn_risk,
                            m.cluster,
                            m.next_purchase.map(|d| d.format("%Y-%m-%d").to_string()),
                            body,
                        ])?;
                    }
                }
                Ok(())
            })?;
            tracing::debug!(
                rows,
                body_mib = body_bytes >> 20,
                stored_mib = stored_bytes >> 20,
                packing_ms = packing.as_millis() as u64,
                waiting_ms = waiting.as_millis() as u64,
                ms = started.elapsed().as_millis() as u64,
                "member rows written"
            );
            let started = std::time::Instant::now();
            let mut stmt = db.prepare(
                "INSERT INTO member_tags (member_id, source, tag, category, weight, support_weight, \
                 last_supported_at, first_tagged_at, reason, run_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT (member_id, source, tag) DO NOTHING",
            )?;
            for t in tags {
                stmt.execute(rusqlite::params![
                    t.member_id,
                    t.source,
                    t.tag,
                    t.category,
                    t.weight,
                    t.support_weight,
                    t.last_supported_at.timestamp_micros(),
                    t.first_tagged_at.timestamp_micros(),
                    t.reason,
                    run_id,
                ])?;
            }
            tracing::debug!(rows = tags.len(), ms = started.elapsed().as_millis() as u64, "member tags written");
        }
        drop(db);
        Ok::<(), StoreError>(())
    })?;
    drop(locked);
    Ok(())
}

/// A chunk of member rows ready to insert: each body compressed, in the rows' order.
struct Packed {
    rows: Vec<super::MemberAnalyticsWrite>,
    bodies: Vec<Vec<u8>>,
    /// The run's dictionary, with the first chunk only (when one was trained).
    dict: Option<Vec<u8>>,
    plain_bytes: usize,
    /// Joining the bodies from the spill files and compressing them.
    took: std::time::Duration,
}

/// Hand `members` over a chunk at a time, bodies compressed with a dictionary trained on the first chunk,
/// until they run out, a chunk fails (the error is sent) or the receiver is gone.
fn pack_rows(members: &mut dyn super::MemberRows, send: &std::sync::mpsc::SyncSender<StoreResult<Packed>>) {
    let mut encoder: Option<body_codec::Encoder> = None;
    let mut pack = || -> StoreResult<Option<Packed>> {
        let t = std::time::Instant::now();
        let rows = members.next_chunk(10_000)?;
        if rows.is_empty() {
            return Ok(None);
        }
        let bodies: Vec<&str> = rows.iter().map(|m| m.body.get()).collect();
        let mut dict = None;
        let encoder = match &mut encoder {
            Some(e) => e,
            None => {
                dict = body_codec::train(&bodies);
                encoder.insert(body_codec::Encoder::new(dict.as_deref())?)
            }
        };
        let packed = encoder.compress_all(&bodies)?;
        let plain_bytes = bodies.iter().map(|b| b.len()).sum();
        Ok(Some(Packed { bodies: packed, rows, dict, plain_bytes, took: t.elapsed() }))
    };
    loop {
        let next = match pack() {
            Ok(None) => return,
            Ok(Some(chunk)) => Ok(chunk),
            Err(e) => Err(e),
        };
        let failed = next.is_err();
        if send.send(next).is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The points read must stay a scan of the index alone: were a column it reads missing from the index,
    /// SQLite would fetch every entry from the (much larger) table by rowid, a random read per entry.
    #[tokio::test]
    async fn points_are_read_from_the_index_alone() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let store = super::super::sqlite::SqliteStore::open(&url).await.unwrap();
        super::super::Store::migrate(&store).await.unwrap();
        let plan = scan(store.sqlite_reader().unwrap(), |db| {
            let mut stmt = db.prepare(&format!("EXPLAIN QUERY PLAN {POINTS_SQL}"))?;
            let mut rows = stmt.query([0_i64])?;
            let mut plan = Vec::new();
            while let Some(r) = rows.next()? {
                plan.push(r.get::<_, String>(3)?);
            }
            Ok(plan.join("; "))
        })
        .await
        .unwrap();
        assert!(plan.contains("COVERING INDEX ledger_entries_member"), "{plan}");
    }

    /// Both shapes of the order index answer the same: members and days of the window's orders, nothing for
    /// ids outside it or in its gaps.
    #[test]
    fn order_index_finds_exactly_the_windows_orders_dense_or_sparse() {
        let day = |d: i64| epoch_day(d).unwrap();
        let dense = OrderIndex::new(vec![(12, 7, day(100)), (10, 5, day(99)), (14, 7, day(101))]);
        assert!(matches!(dense, OrderIndex::Dense { first: 10, .. }));
        // Ids a hundred thousand apart: a slot per id would be mostly empty.
        let sparse = OrderIndex::new(vec![(10, 5, day(99)), (100_012, 7, day(100)), (200_014, 7, day(101))]);
        assert!(matches!(sparse, OrderIndex::Sparse { first: 10, .. }));
        for (index, ids) in [(&dense, [10, 12, 14]), (&sparse, [10, 100_012, 200_014])] {
            assert_eq!(index.first_id(), Some(10));
            assert_eq!(index.get(ids[0]), Some((5, day(99))));
            assert_eq!(index.get(ids[1]), Some((7, day(100))));
            assert_eq!(index.get(ids[2]), Some((7, day(101))));
            for missing in [i64::MIN, 0, 9, 11, 13, 15, ids[2] + 1, i64::MAX] {
                assert_eq!(index.get(missing), None, "{missing}");
            }
        }
        let empty = OrderIndex::new(Vec::new());
        assert_eq!(empty.first_id(), None);
        assert_eq!(empty.get(10), None);
    }

    /// The recent lines are found from the primary-key index, not by walking the table from its start.
    #[tokio::test]
    async fn first_window_line_is_found_from_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let store = super::super::sqlite::SqliteStore::open(&url).await.unwrap();
        super::super::Store::migrate(&store).await.unwrap();
        let plan = scan(store.sqlite_reader().unwrap(), |db| {
            Ok(db.query_row(&format!("EXPLAIN QUERY PLAN {FIRST_LINE_SQL}"), [0_i64], |r| r.get::<_, String>(3))?)
        })
        .await
        .unwrap();
        assert!(plan.contains("COVERING INDEX sqlite_autoindex_order_lines_1"), "{plan}");
    }

    /// Lines are cut at the window's lowest order id and still matched to their orders, so orders stored out
    /// of id order (a late import of old orders, an old id reused for a recent order) are neither lost nor
    /// let in.
    #[tokio::test]
    async fn line_window_holds_whatever_the_storage_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lines.db");
        let store = super::super::sqlite::SqliteStore::open(&format!("sqlite://{}", path.display())).await.unwrap();
        super::super::Store::migrate(&store).await.unwrap();
        let day = |d: i64| d * DAY + 3_600_000_000;
        let (since, until) = (instant(day(100)).unwrap(), instant(day(200)).unwrap());
        let lines = |orders: &[(i64, i64)]| {
            let db = Connection::open(&path).unwrap();
            for &(order_id, placed_day) in orders {
                db.execute(
                    "INSERT INTO orders (order_id, member_id, channel, order_no, status, placed_at, currency, subtotal, \
                     discount_total, shipping_fee, total, created_at) \
                     VALUES (?1, 7, 'web', ?1, 'paid', ?2, 'CNY', 100, 0, 0, 100, ?2)",
                    [order_id, day(placed_day)],
                )
                .unwrap();
                for line_no in [1, 2] {
                    db.execute(
                        "INSERT INTO order_lines (member_id, order_id, line_no, sku, kind, quantity, unit_price, \
                         discount, amount) VALUES (7, ?1, ?2, 'S1', 'product', 1, 50, 0, 50)",
                        [order_id, line_no],
                    )
                    .unwrap();
                }
            }
        };
        let read = || async {
            let facts = line_facts(store.sqlite_reader().unwrap(), since, until).await.unwrap();
            facts.lines.iter().map(|(_, f)| f.order_id).collect::<Vec<_>>()
        };
        assert_eq!(read().await, Vec::<i64>::new());
        // Old orders first, then the window's: the cut skips the old lines.
        lines(&[(10, 50), (20, 150)]);
        assert_eq!(read().await, vec![20, 20]);
        // A recent order with a low id stored last, and an old order with a high id.
        lines(&[(5, 160), (30, 60)]);
        assert_eq!(read().await, vec![5, 5, 20, 20]);
    }
}
