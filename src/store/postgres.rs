//! PostgreSQL, the production store. Concurrent writers are serialized per natural key (an order number,
//! an identity, a member) with transaction-scoped advisory locks, so unrelated writes run in parallel and
//! the same key never races.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use super::analytics::analytics_store;
use super::cards::cards_store;
use super::common::shared_store;
use super::coupons::coupons_store;
use super::loyalty::loyalty_store;
use super::outbox::outbox_store;
use super::rewards::rewards_store;
use super::risk::risk_store;
use super::{Backend, StoreResult};

/// The PostgreSQL store.
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    const BACKEND: Backend = Backend::Postgres;

    pub async fn open(url: &str) -> StoreResult<Self> {
        // Set-based writes bind lists of every length up to a group's size, so one query has many texts: a
        // cache of 1,024 prepared statements per connection keeps them from being parsed again and again.
        let opts = PgConnectOptions::from_str(url)?.statement_cache_capacity(super::STATEMENT_CACHE);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await?;
        Ok(Self { pool })
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    /// None: PostgreSQL aggregates in SQL (`sqlite_scan` is SQLite's alone).
    fn sqlite_reader(&self) -> Option<&sqlx::SqlitePool> {
        None
    }

    async fn write_tx(&self) -> StoreResult<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// Take transaction-scoped advisory locks on the given names, in the caller's (sorted) order so two
    /// transactions never wait on each other in a cycle.
    async fn lock_keys(conn: &mut sqlx::PgConnection, keys: &[String]) -> StoreResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        // One round trip for the whole batch; unnest yields the (sorted) keys in array order.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k")
            .bind(keys)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// The next `n` values of a table's identity sequence.
    async fn next_ids(
        conn: &mut sqlx::PgConnection,
        table: &'static str,
        column: &'static str,
        n: usize,
    ) -> StoreResult<Vec<i64>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence($1, $2)) FROM generate_series(1, $3)")
            .bind(table)
            .bind(column)
            .bind(n as i64)
            .fetch_all(&mut *conn)
            .await?)
    }

    /// SQL for the UTC day (days since 1970-01-01) of an instant column: instants are TIMESTAMPTZ.
    fn day_sql(col: &str) -> String {
        format!("CAST(FLOOR(EXTRACT(EPOCH FROM {col}) / 86400) AS BIGINT)")
    }

    async fn migrate_impl(&self) -> StoreResult<()> {
        sqlx::migrate!("migrations/postgres").run(&self.pool).await?;
        Ok(())
    }
}

shared_store!(PgStore, sqlx::Postgres);
loyalty_store!(PgStore, sqlx::Postgres);
rewards_store!(PgStore, sqlx::Postgres);
risk_store!(PgStore, sqlx::Postgres);
outbox_store!(PgStore, sqlx::Postgres);
coupons_store!(PgStore, sqlx::Postgres);
analytics_store!(PgStore, sqlx::Postgres);
cards_store!(PgStore, sqlx::Postgres);
