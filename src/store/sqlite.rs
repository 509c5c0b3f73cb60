//! SQLite, the embedded default: a file, nothing to install. WAL mode lets readers run beside the writer;
//! all writes go through one connection, so write transactions never contend and never need row locks.

use std::str::FromStr;
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

/// The SQLite store: one writer connection, a small pool of readers.
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    const BACKEND: Backend = Backend::Sqlite;

    /// Open (creating if missing) the database file a `sqlite://PATH` URL names.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode survives process crashes; only an OS crash can lose the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "memory")
            // Set-based writes bind lists of every length up to a group's size: keep their statements prepared.
            .statement_cache_capacity(super::STATEMENT_CACHE);
        let writer = SqlitePoolOptions::new().max_connections(1).min_connections(1).connect_with(opts.clone()).await?;
        let reader = SqlitePoolOptions::new().max_connections(8).connect_with(opts.read_only(true)).await?;
        Ok(Self { writer, reader })
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
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
        sqlx::migrate!("migrations/sqlite").run(&self.writer).await?;
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
