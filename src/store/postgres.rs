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

    /// A rule evaluation as PostgreSQL stores it: JSONB, which it compresses itself when large (TOAST).
    fn evaluation_value(
        evaluation: &serde_json::value::RawValue,
    ) -> StoreResult<sqlx::types::Json<&serde_json::value::RawValue>> {
        Ok(sqlx::types::Json(evaluation))
    }

    /// A stored rule evaluation read back.
    fn evaluation_from(
        stored: sqlx::types::Json<Box<serde_json::value::RawValue>>,
    ) -> StoreResult<Box<serde_json::value::RawValue>> {
        Ok(stored.0)
    }

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

    /// Member bodies of `rows`: JSON as stored (PostgreSQL compresses large values itself).
    async fn member_bodies(&self, _run_id: i64, rows: &[sqlx::postgres::PgRow]) -> StoreResult<Vec<serde_json::Value>> {
        use sqlx::Row;
        rows.iter().map(|row| Ok(row.try_get::<sqlx::types::Json<serde_json::Value>, _>("body")?.0)).collect()
    }

    /// A run's member rows and computed tags, in multi-row inserts on the run's transaction.
    async fn insert_run_rows(
        conn: &mut sqlx::PgConnection,
        run_id: i64,
        members: &mut dyn super::MemberRows,
        tags: &[&super::MemberTagRow],
    ) -> StoreResult<()> {
        use super::ts::Ts;
        use sqlx::QueryBuilder;
        use sqlx::types::Json;
        loop {
            // A chunk is read back from the analysis' spill files: file reads, kept off the async workers.
            let chunk = super::sqlite_scan::blocking(|| members.next_chunk(1000))?;
            if chunk.is_empty() {
                break;
            }
            let mut q = QueryBuilder::<Postgres>::new(
                "INSERT INTO member_analytics (run_id, member_id, rfm_segment, stage, clv_fen, prob_alive, \
                 churn_risk, cluster, next_purchase, body) ",
            );
            q.push_values(&chunk, |mut b, m| {
                b.push_bind(run_id)
                    .push_bind(m.member_id)
                    .push_bind(m.rfm_segment.clone())
                    .push_bind(m.stage.clone())
                    .push_bind(m.clv_fen)
                    .push_bind(m.prob_alive)
                    .push_bind(m.churn_risk)
                    .push_bind(m.cluster)
                    .push_bind(m.next_purchase)
                    .push_bind(Json(m.body.as_ref()));
            });
            q.build().execute(&mut *conn).await?;
        }
        for chunk in tags.chunks(2000) {
            let mut q = QueryBuilder::<Postgres>::new(
                "INSERT INTO member_tags (member_id, source, tag, category, weight, support_weight, \
                 last_supported_at, first_tagged_at, reason, run_id) ",
            );
            q.push_values(chunk, |mut b, t| {
                b.push_bind(t.member_id)
                    .push_bind(t.source.clone())
                    .push_bind(t.tag.clone())
                    .push_bind(t.category.clone())
                    .push_bind(t.weight)
                    .push_bind(t.support_weight)
                    .push_bind(Ts(t.last_supported_at))
                    .push_bind(Ts(t.first_tagged_at))
                    .push_bind(t.reason.clone())
                    .push_bind(run_id);
            });
            q.push(" ON CONFLICT (member_id, source, tag) DO NOTHING");
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
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

    /// The server writes straight into its tables: nothing is left for the next process.
    async fn flush_impl(&self) -> StoreResult<()> {
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
