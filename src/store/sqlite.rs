//! SQLite, the embedded default: a file, nothing to install. WAL mode lets readers run beside the writer;
//! all writes go through one connection, so write transactions never contend and never need row locks. A
//! third connection checkpoints the WAL in the background, so no commit waits for the database file's sync.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, Transaction};

use super::analytics::analytics_store;
use super::cards::cards_store;
use super::common::shared_store;
use super::coupons::coupons_store;
use super::loyalty::loyalty_store;
use super::outbox::outbox_store;
use super::rewards::rewards_store;
use super::risk::risk_store;
use super::{Backend, StoreResult};

/// The SQLite store: one writer connection, a small pool of readers, and a checkpointer.
pub struct SqliteStore {
    writer: Arc<SqlitePool>,
    reader: SqlitePool,
    /// The checkpointer task keeps a weak reference, so it stops with the store; `flush` checkpoints on it.
    checkpointer: Arc<SqlitePool>,
    /// Decoders of the runs whose member bodies were read last, by run id: a profile read would otherwise
    /// fetch and prepare the run's dictionary every time.
    body_decoders: std::sync::Mutex<Vec<(i64, Arc<super::body_codec::Decoder>)>>,
}

/// How many runs' body decoders are kept (the latest run, and the one before it while a new run lands).
const BODY_DECODERS: usize = 4;

/// How long a statement waits for a lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often committed WAL frames are copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// WAL frames (pages) past which the writer itself finishes the checkpoint. Under a write load that never
/// pauses, background checkpoints copy nearly every frame, but commits made meanwhile keep the log from ever
/// being wholly copied, and SQLite starts a log over (at the next write) only when it is; so the file would
/// grow without bound (the threshold is about 64 MB of 4 KB pages).
const WAL_CATCH_UP_FRAMES: i64 = 16_384;

/// Checkpoint off the writer's path. SQLite's default checkpoints inside the commit that crosses 1,000 WAL
/// pages, so that one commit (and every order waiting behind it) pays for copying and syncing the database
/// file. Here a separate connection checkpoints passively (never waiting for or blocking the writer or
/// readers) on a timer. Once the log passes `WAL_CATCH_UP_FRAMES`, the writer's own connection, between
/// two transactions, copies the few frames committed since (passively too: it never waits for readers),
/// so the next write can start the log over.
///
/// SQLite syncs the database file only at the end of a pass during which no commit landed, which under
/// steady writes is almost never a background pass: the pages they copy stay dirty in the OS cache, and the
/// writer's catch-up, whose pass does finish the log, paid for syncing all of them (30–100 ms, measured with
/// strace and the catch-up's own timing). So after every background pass that copied frames, the
/// checkpointer syncs the database file itself, and the catch-up's sync is left with the few frames it copies.
fn spawn_checkpointer(checkpointer: Weak<SqlitePool>, writer: Weak<SqlitePool>, db_file: Option<PathBuf>) {
    tokio::spawn(async move {
        // Any descriptor of the file will do: an fsync writes back the file's dirty pages, whoever wrote them.
        let db_file = db_file.and_then(|path| std::fs::File::open(path).ok()).map(Arc::new);
        let mut copied_before = 0;
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The log size the last catch-up left behind: an idle store whose log stays this size needs none.
        let mut caught_up_at = None;
        loop {
            tick.tick().await;
            let (Some(checkpointer), Some(writer)) = (checkpointer.upgrade(), writer.upgrade()) else { return };
            let passive: Result<(i64, i64, i64), sqlx::Error> =
                sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&*checkpointer).await;
            if let Ok((busy, log, copied)) = &passive {
                tracing::trace!(busy, log, copied, "background checkpoint");
                // `copied` counts from the log's start, which falls back to zero when the log starts over.
                // Even a pass that reports the whole log copied skipped the sync if a commit landed during it,
                // which under steady writes is nearly always; when SQLite did sync, this one finds nothing dirty.
                if *copied != copied_before
                    && let Some(file) = &db_file
                {
                    let file = Arc::clone(file);
                    let started = std::time::Instant::now();
                    match tokio::task::spawn_blocking(move || file.sync_data()).await {
                        Ok(Ok(())) => {
                            tracing::trace!(ms = started.elapsed().as_millis() as u64, "database file synced")
                        }
                        Ok(Err(e)) => tracing::warn!(error = %e, "syncing the SQLite database file failed"),
                        Err(e) => tracing::warn!(error = %e, "the database file sync task failed"),
                    }
                }
                copied_before = *copied;
            }
            let done = match passive {
                // Even when this pass copied the whole log, a writer that began its transaction before the pass
                // ended does not start the log over; under a write load that never pauses, none does. Only a
                // pass between two of the writer's transactions lets the next one start over.
                Ok((_, log, _)) if log > WAL_CATCH_UP_FRAMES && caught_up_at != Some(log) => {
                    caught_up_at = Some(log);
                    catch_up_on_writer(&writer).await
                }
                other => other.map(|_| ()),
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "SQLite checkpoint failed; the next one retries");
            }
        }
    });
}

/// Bytes SQLite holds allocated in this process now (page caches, sorters, statements, across every
/// connection): SQLite allocates with the C allocator, beside the Rust heap, so a process's resident memory
/// is the two together; this tells them apart.
pub fn heap_bytes() -> i64 {
    // SAFETY: `sqlite3_memory_used` only reads SQLite's global counters, under its own mutex.
    unsafe { rusqlite::ffi::sqlite3_memory_used() }
}

/// The readers' page cache, and the writer's once the database reaches `SMALL_DATABASE`.
const CACHE_KIB: i64 = 65_536;

/// The writer's page cache while the database is smaller than `SMALL_DATABASE`.
const SMALL_DATABASE_WRITER_CACHE_KIB: i64 = 8_192;

/// 1 GiB: the lock-byte page, which SQLite never stores, sits at this offset.
const SMALL_DATABASE: i64 = 1 << 30;

/// The writer's page cache for a database of `bytes`. When b-tree balancing reorders sibling pages, SQLite
/// parks one page in the cache under the lock-byte page's number (1 GiB / page size + 1). While the file is
/// smaller than that, the page lies past its end, so that commit's cache truncation scans the whole cache
/// instead of the few pages past the end: with 64 MB that was 10 % of the server's CPU under the order load
/// (perf; the scan is `pcache1TruncateUnsafe`). So a small database gets a small writer cache: measured with
/// `benches/loyalty.sh`, 8 MB took the group writer from 2,793 to 3,142 orders/s (means of two runs) on a
/// 400 MB database, but on a 1.4 GB one, where the scan does not happen, it was slower (1,995 against
/// 2,284 orders/s with 64 MB, one run each).
pub fn writer_cache_kib(bytes: i64) -> i64 {
    if bytes < SMALL_DATABASE { SMALL_DATABASE_WRITER_CACHE_KIB } else { CACHE_KIB }
}

/// Size the writer's page cache for the database as it is now (`writer_cache_kib`); run between transactions.
async fn fit_writer_cache(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    let (pages, page_size, cache): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT page_count FROM pragma_page_count), (SELECT page_size FROM pragma_page_size), \
         (SELECT cache_size FROM pragma_cache_size)",
    )
    .fetch_one(&mut *conn)
    .await?;
    let wanted = writer_cache_kib(pages * page_size);
    if cache != -wanted {
        sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA cache_size = -{wanted}"))).execute(&mut *conn).await?;
        tracing::debug!(cache_kib = wanted, database_bytes = pages * page_size, "writer page cache resized");
    }
    Ok(())
}

/// Finish copying the log on the writer connection between two transactions.
async fn catch_up_on_writer(writer: &SqlitePool) -> Result<(), sqlx::Error> {
    // A bulk import holds the writer for seconds at a time: try again on a later tick rather than queue.
    let started = std::time::Instant::now();
    let Ok(conn) = tokio::time::timeout(Duration::from_secs(1), writer.acquire()).await else { return Ok(()) };
    let mut conn = conn?;
    let waited = started.elapsed();
    let done: Result<(i64, i64, i64), sqlx::Error> =
        sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&mut *conn).await;
    let (_, log, copied) = done?;
    // The database grows under the same writes that bring the log here: the cache follows its size.
    fit_writer_cache(&mut conn).await?;
    tracing::debug!(
        waited_ms = waited.as_millis() as u64,
        held_ms = (started.elapsed() - waited).as_millis() as u64,
        log,
        copied,
        "checkpoint caught up on the writer"
    );
    Ok(())
}

impl SqliteStore {
    const BACKEND: Backend = Backend::Sqlite;

    /// A rule evaluation as SQLite stores it: compressed (`evaluation_codec`).
    fn evaluation_value(evaluation: &serde_json::value::RawValue) -> StoreResult<Vec<u8>> {
        super::evaluation_codec::compress(evaluation)
    }

    /// A stored rule evaluation read back.
    fn evaluation_from(stored: Vec<u8>) -> StoreResult<Box<serde_json::value::RawValue>> {
        super::evaluation_codec::decompress(stored)
    }

    /// Open (creating if missing) the database file a `sqlite://PATH` URL names.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode survives process crashes; only an OS crash can lose the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("cache_size", format!("-{CACHE_KIB}"))
            .pragma("temp_store", "memory")
            // Checkpoints run on their own connection (`spawn_checkpointer`), not inside a writer's commit.
            .pragma("wal_autocheckpoint", "0")
            // Set-based writes bind lists of every length up to a group's size: keep their statements prepared.
            .statement_cache_capacity(super::STATEMENT_CACHE);
        let writer =
            Arc::new(SqlitePoolOptions::new().max_connections(1).min_connections(1).connect_with(opts.clone()).await?);
        fit_writer_cache(&mut *writer.acquire().await?).await?;
        let checkpointer = Arc::new(SqlitePoolOptions::new().max_connections(1).connect_with(opts.clone()).await?);
        // An in-memory database has no file to open, and so nothing to sync.
        let db_file = Some(opts.get_filename().to_path_buf());
        spawn_checkpointer(Arc::downgrade(&checkpointer), Arc::downgrade(&writer), db_file);
        let reader = SqlitePoolOptions::new().max_connections(8).connect_with(opts.read_only(true)).await?;
        Ok(Self { writer, reader, checkpointer, body_decoders: std::sync::Mutex::default() })
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// A run's member rows and computed tags, through SQLite's own interface on the run's transaction.
    async fn insert_run_rows(
        conn: &mut sqlx::SqliteConnection,
        run_id: i64,
        members: &mut dyn super::MemberRows,
        tags: &[&super::MemberTagRow],
    ) -> StoreResult<()> {
        super::sqlite_scan::insert_run_rows(conn, run_id, members, tags).await
    }

    /// Member bodies of `rows` (run `run_id`), stored compressed with the run's dictionary (`body_codec`).
    async fn member_bodies(
        &self,
        run_id: i64,
        rows: &[sqlx::sqlite::SqliteRow],
    ) -> StoreResult<Vec<serde_json::Value>> {
        use sqlx::Row;
        // No rows, no dictionary to look up: a run still being written has neither yet (both commit together).
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let decoder = self.body_decoder(run_id).await?;
        let mut context = decoder.context()?;
        rows.iter().map(|row| decoder.json(&mut context, row.try_get::<&[u8], _>("body")?)).collect()
    }

    async fn body_decoder(&self, run_id: i64) -> StoreResult<Arc<super::body_codec::Decoder>> {
        let cached = |decoders: &Vec<(i64, Arc<super::body_codec::Decoder>)>| {
            decoders.iter().find(|(id, _)| *id == run_id).map(|(_, d)| d.clone())
        };
        if let Some(d) = cached(&self.body_decoders.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(d);
        }
        let decoder = Arc::new(super::sqlite_scan::run_body_decoder(&self.reader, run_id).await?);
        let mut decoders = self.body_decoders.lock().unwrap_or_else(|e| e.into_inner());
        if decoders.len() >= BODY_DECODERS {
            decoders.remove(0);
        }
        decoders.push((run_id, decoder.clone()));
        Ok(decoder)
    }

    /// The readers, for the bulk analytics reads of `sqlite_scan`.
    pub(super) fn sqlite_reader(&self) -> Option<&SqlitePool> {
        Some(&self.reader)
    }

    async fn write_tx(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin().await?)
    }

    /// Nothing to lock: the single writer connection already serializes every write transaction.
    async fn lock_keys(_conn: &mut sqlx::SqliteConnection, _keys: &[String]) -> StoreResult<()> {
        Ok(())
    }

    /// The next `n` ids of a table: safe without a sequence because the single writer connection holds the
    /// write transaction.
    async fn next_ids(
        conn: &mut sqlx::SqliteConnection,
        table: &'static str,
        column: &'static str,
        n: usize,
    ) -> StoreResult<Vec<i64>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT COALESCE(MAX({column}), 0) FROM {table}");
        let max: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut *conn).await?;
        Ok((max + 1..=max + n as i64).collect())
    }

    /// SQL for the UTC day (days since 1970-01-01) of an instant column: instants are integer microseconds.
    fn day_sql(col: &str) -> String {
        format!("({col} / 86400000000)")
    }

    async fn migrate_impl(&self) -> StoreResult<()> {
        sqlx::migrate!("migrations/sqlite").run(&*self.writer).await?;
        Ok(())
    }

    /// Copy the whole log into the database file and truncate it. It runs on the checkpointer's own
    /// connection, so it waits for a background pass in progress instead of finding the log busy, and holds
    /// the writer's connection meanwhile, so no write lands during it; it waits, up to the busy timeout, for
    /// readers of older snapshots to finish.
    async fn flush_impl(&self) -> StoreResult<()> {
        let started = std::time::Instant::now();
        let _writer = self.writer.acquire().await?;
        let (busy, log, copied): (i64, i64, i64) =
            sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&*self.checkpointer).await?;
        tracing::debug!(busy, log, copied, ms = started.elapsed().as_millis() as u64, "log copied and truncated");
        if busy != 0 {
            // Still consistent: whatever is left is copied by the next checkpoint, in this process or another.
            tracing::warn!(log, copied, "the write-ahead log was not wholly copied: another connection held it");
        }
        Ok(())
    }
}

shared_store!(SqliteStore, sqlx::Sqlite);
loyalty_store!(SqliteStore, sqlx::Sqlite);
rewards_store!(SqliteStore, sqlx::Sqlite);
risk_store!(SqliteStore, sqlx::Sqlite);
outbox_store!(SqliteStore, sqlx::Sqlite);
coupons_store!(SqliteStore, sqlx::Sqlite);
analytics_store!(SqliteStore, sqlx::Sqlite);
cards_store!(SqliteStore, sqlx::Sqlite);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_cache_is_small_only_below_the_lock_byte_page() {
        assert_eq!(writer_cache_kib(0), SMALL_DATABASE_WRITER_CACHE_KIB);
        assert_eq!(writer_cache_kib(SMALL_DATABASE - 4096), SMALL_DATABASE_WRITER_CACHE_KIB);
        assert_eq!(writer_cache_kib(SMALL_DATABASE), CACHE_KIB);
        assert_eq!(writer_cache_kib(20 * SMALL_DATABASE), CACHE_KIB);
    }

    #[tokio::test]
    async fn a_small_database_gets_the_small_writer_cache_and_readers_keep_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&format!("sqlite://{}", dir.path().join("c.db").display())).await.unwrap();
        let cache = |pool: &SqlitePool| {
            let pool = pool.clone();
            async move { sqlx::query_scalar::<_, i64>("PRAGMA cache_size").fetch_one(&pool).await.unwrap() }
        };
        assert_eq!(cache(&store.writer).await, -SMALL_DATABASE_WRITER_CACHE_KIB);
        assert_eq!(cache(&store.reader).await, -CACHE_KIB);
    }
}
