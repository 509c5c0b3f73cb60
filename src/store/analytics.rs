//! Behaviour analytics' storage, shared by both backends like `common.rs`: the aggregated reads a run feeds
//! its kernels with (grouped in SQL by member and day, so a distributed PostgreSQL can parallelise them),
//! and the versioned results a run commits in one transaction.
//!
//! Expanded inside the same module as `shared_store!` (uses its imports and `Conn`).

/// Expand the `AnalyticsStore` implementation for `$store` over database `$db`.
macro_rules! analytics_store {
    ($store:ty, $db:ty) => {
        const RUN_COLUMNS: &str = "run_id, as_of, started_at, finished_at, status, params, summary";
        const MEMBER_ROW_COLUMNS: &str =
            "member_id, rfm_segment, stage, clv_fen, prob_alive, churn_risk, cluster, next_purchase, body";

        fn run_from_row(row: &DbRow) -> StoreResult<AnalyticsRun> {
            Ok(AnalyticsRun {
                run_id: row.try_get("run_id")?,
                as_of: row.try_get("as_of")?,
                started_at: row.try_get::<Ts, _>("started_at")?.0,
                finished_at: row.try_get::<Option<Ts>, _>("finished_at")?.map(|t| t.0),
                status: row.try_get("status")?,
                params: row.try_get::<Json<serde_json::Value>, _>("params")?.0,
                summary: row.try_get::<Option<Json<serde_json::Value>>, _>("summary")?.map(|j| j.0),
            })
        }

        /// `body` is read by the store (`member_bodies`): SQLite keeps it compressed.
        fn member_row_from_row(row: &DbRow, body: serde_json::Value) -> StoreResult<MemberAnalyticsRow> {
            Ok(MemberAnalyticsRow {
                member_id: row.try_get("member_id")?,
                rfm_segment: row.try_get("rfm_segment")?,
                stage: row.try_get("stage")?,
                clv_fen: row.try_get("clv_fen")?,
                prob_alive: row.try_get("prob_alive")?,
                churn_risk: row.try_get("churn_risk")?,
                cluster: row.try_get("cluster")?,
                next_purchase: row.try_get("next_purchase")?,
                body,
            })
        }

        fn tag_from_row(row: &DbRow) -> StoreResult<MemberTagRow> {
            Ok(MemberTagRow {
                member_id: row.try_get("member_id")?,
                tag: row.try_get("tag")?,
                category: row.try_get("category")?,
                source: row.try_get("source")?,
                weight: row.try_get("weight")?,
                support_weight: row.try_get("support_weight")?,
                last_supported_at: row.try_get::<Ts, _>("last_supported_at")?.0,
                first_tagged_at: row.try_get::<Ts, _>("first_tagged_at")?.0,
                reason: row.try_get("reason")?,
            })
        }


        #[async_trait]
        impl AnalyticsStore for $store {
            async fn analytics_members(&self, until: DateTime<Utc>) -> StoreResult<Vec<MemberBase>> {
                let rows: Vec<(i64, Ts)> = sqlx::query_as(
                    "SELECT member_id, registered_at FROM members WHERE status = 'active' AND registered_at < $1 \
                     ORDER BY member_id",
                )
                .bind(Ts(until))
                .fetch_all(self.reader())
                .await?;
                Ok(rows.into_iter().map(|(member_id, at)| MemberBase { member_id, registered_at: at.0 }).collect())
            }

            async fn purchase_days(&self, until: DateTime<Utc>) -> StoreResult<ByMember<PurchaseDay>> {
                let day = <$store>::day_sql("placed_at");
                if let Some(pool) = self.sqlite_reader() {
                    return super::sqlite_scan::purchase_days(pool, until).await;
                }
                let sql = format!(
                    "SELECT member_id, {day} AS d, COUNT(*), CAST(SUM(total) AS BIGINT), \
                     CAST(SUM(CASE WHEN coupon_code IS NOT NULL OR discount_total > 0 THEN 1 ELSE 0 END) AS BIGINT) \
                     FROM orders WHERE {PURCHASED} AND placed_at < $1 AND member_id <> 0 \
                     GROUP BY member_id, {day} ORDER BY member_id, d"
                );
                use futures::TryStreamExt;
                let count = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
                let mut out = ByMember::default();
                let mut rows = sqlx::query_as::<_, (i64, i64, i64, i64, i64)>(sqlx::AssertSqlSafe(sql))
                    .bind(Ts(until))
                    .fetch(self.reader());
                while let Some((member_id, d, orders, amount, promo_orders)) = rows.try_next().await? {
                    out.push(
                        member_id,
                        PurchaseDay { day: epoch_day(d)?, orders: count(orders), promo_orders: count(promo_orders), amount },
                    );
                }
                out.shrink_to_fit();
                Ok(out)
            }

            async fn refund_days(&self, until: DateTime<Utc>) -> StoreResult<Vec<RefundDay>> {
                let day = <$store>::day_sql("refunded_at");
                let sql = format!(
                    "SELECT member_id, {day} AS d, COUNT(*), CAST(SUM(amount) AS BIGINT) FROM refunds \
                     WHERE refunded_at < $1 AND member_id <> 0 GROUP BY member_id, {day} ORDER BY member_id, d"
                );
                let rows: Vec<(i64, i64, i64, i64)> =
                    sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(Ts(until)).fetch_all(self.reader()).await?;
                rows.into_iter()
                    .map(|(member_id, d, refunds, amount)| Ok(RefundDay { member_id, day: epoch_day(d)?, refunds, amount }))
                    .collect()
            }

            async fn event_tallies(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> StoreResult<Vec<EventTally>> {
                if let Some(pool) = self.sqlite_reader() {
                    return super::sqlite_scan::event_tallies(pool, since, until).await;
                }
                let rows: Vec<(i64, String, i64, i64, Ts)> = sqlx::query_as(
                    "SELECT member_id, event_type, COUNT(*), \
                     CAST(SUM(CASE WHEN occurred_at >= $1 THEN 1 ELSE 0 END) AS BIGINT), MAX(occurred_at) \
                     FROM events WHERE member_id <> 0 AND occurred_at < $2 \
                     GROUP BY member_id, event_type ORDER BY member_id, event_type",
                )
                .bind(Ts(since))
                .bind(Ts(until))
                .fetch_all(self.reader())
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(member_id, event_type, total, recent, last)| EventTally {
                        member_id,
                        event_type,
                        total,
                        recent,
                        last_at: last.0,
                    })
                    .collect())
            }

            async fn line_facts(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> StoreResult<LineFacts> {
                if let Some(pool) = self.sqlite_reader() {
                    return super::sqlite_scan::line_facts(pool, since, until).await;
                }
                let day = <$store>::day_sql("o.placed_at");
                let sql = format!(
                    "SELECT l.member_id, l.order_id, {day}, l.sku, s.category_path, s.brand, l.unit_price, \
                     l.amount FROM orders o JOIN order_lines l ON l.member_id = o.member_id AND l.order_id = o.order_id \
                     LEFT JOIN skus s ON s.sku = l.sku \
                     WHERE o.{PURCHASED} AND o.placed_at >= $1 AND o.placed_at < $2 \
                     AND o.member_id <> 0 AND l.kind = 'product' ORDER BY l.member_id, l.order_id, l.line_no"
                );
                use futures::TryStreamExt;
                type Row = (i64, i64, i64, String, Option<String>, Option<String>, i64, i64);
                // Tens of millions of lines name a few thousand SKUs: each SKU's facts are kept once.
                let mut positions: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
                let mut out = LineFacts::default();
                let mut rows = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql))
                    .bind(Ts(since))
                    .bind(Ts(until))
                    .fetch(self.reader());
                while let Some((member_id, order_id, d, sku, category, brand, unit_price, amount)) = rows.try_next().await? {
                    let sku = match positions.get(&sku) {
                        Some(&k) => k,
                        None => {
                            let k = u32::try_from(out.skus.len())
                                .map_err(|_| StoreError::Corrupt("more than 2^32 SKUs".into()))?;
                            out.skus.push(SkuFacts { sku: sku.clone(), category, brand });
                            positions.insert(sku, k);
                            k
                        }
                    };
                    out.lines.push(member_id, LineFact { order_id, day: epoch_day(d)?, sku, unit_price, amount });
                }
                out.lines.shrink_to_fit();
                Ok(out)
            }

            async fn points_days(&self, until: DateTime<Utc>) -> StoreResult<ByMember<PointsDay>> {
                let day = <$store>::day_sql("at");
                // Earned is the signed sum of `earn` entries: maturing a lot writes −p pending and +p
                // available beside the original +p pending, so only the sum counts each point once.
                const EARNED: &str = "CASE WHEN kind = 'earn' THEN amount ELSE 0 END";
                const SPENT: &str = "CASE WHEN kind = 'redeem' THEN -amount ELSE 0 END";
                if let Some(pool) = self.sqlite_reader() {
                    return super::sqlite_scan::points_days(pool, until).await;
                }
                let sql = format!(
                    "SELECT member_id, {day} AS d, CAST(SUM({EARNED}) AS BIGINT), CAST(SUM({SPENT}) AS BIGINT) \
                     FROM ledger_entries WHERE wallet = 'points' AND state <> 'voided' AND at < $1 \
                     GROUP BY member_id, {day} ORDER BY member_id, d"
                );
                use futures::TryStreamExt;
                let mut out = ByMember::default();
                let mut rows = sqlx::query_as::<_, (i64, i64, i64, i64)>(sqlx::AssertSqlSafe(sql))
                    .bind(Ts(until))
                    .fetch(self.reader());
                while let Some((member_id, d, earned, spent)) = rows.try_next().await? {
                    out.push(member_id, PointsDay { day: epoch_day(d)?, earned, spent });
                }
                out.shrink_to_fit();
                Ok(out)
            }

            async fn event_rows(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> StoreResult<Vec<EventRow>> {
                if let Some(pool) = self.sqlite_reader() {
                    return super::sqlite_scan::event_rows(pool, since, until).await;
                }
                let rows: Vec<(i64, Ts, String, Option<String>, Option<String>)> = sqlx::query_as(
                    "SELECT member_id, occurred_at, event_type, session_id, sku FROM events \
                     WHERE member_id <> 0 AND occurred_at >= $1 AND occurred_at < $2 \
                     ORDER BY member_id, occurred_at, event_id",
                )
                .bind(Ts(since))
                .bind(Ts(until))
                .fetch_all(self.reader())
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(member_id, at, event_type, session_id, sku)| EventRow {
                        member_id,
                        at: at.0,
                        event_type: event_type.into(),
                        session_id: session_id.map(Into::into),
                        sku: sku.map(Into::into),
                    })
                    .collect())
            }

            async fn engagement_days(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> StoreResult<Vec<EngagementDay>> {
                let day = <$store>::day_sql("occurred_at");
                if let Some(pool) = self.sqlite_reader() {
                    return super::sqlite_scan::engagement_days(pool, since, until).await;
                }
                let sql = format!(
                    "SELECT member_id, {day} AS d, event_type, COUNT(*) FROM events WHERE member_id <> 0 \
                     AND event_type IN ('page_view', 'product_view', 'add_to_cart', 'check_in', 'campaign_click') \
                     AND occurred_at >= $1 AND occurred_at < $2 \
                     GROUP BY member_id, {day}, event_type ORDER BY member_id, d"
                );
                let rows: Vec<(i64, i64, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(Ts(since))
                    .bind(Ts(until))
                    .fetch_all(self.reader())
                    .await?;
                rows.into_iter()
                    .map(|(member_id, d, event_type, count)| {
                        Ok(EngagementDay { member_id, day: epoch_day(d)?, event_type: event_type.into(), count })
                    })
                    .collect()
            }

            async fn member_texts(
                &self,
                since: DateTime<Utc>,
                until: DateTime<Utc>,
            ) -> StoreResult<Vec<(MemberId, DateTime<Utc>, String)>> {
                let rows: Vec<(i64, Ts, Json<serde_json::Value>)> = sqlx::query_as(
                    "SELECT member_id, occurred_at, properties FROM events WHERE member_id <> 0 \
                     AND event_type IN ('custom.review', 'custom.note') AND occurred_at >= $1 AND occurred_at < $2 \
                     ORDER BY member_id, occurred_at",
                )
                .bind(Ts(since))
                .bind(Ts(until))
                .fetch_all(self.reader())
                .await?;
                Ok(rows
                    .into_iter()
                    .filter_map(|(m, at, props)| {
                        let text = ["text", "content"].iter().find_map(|k| props.0.get(*k)?.as_str().map(str::to_string))?;
                        Some((m, at.0, text))
                    })
                    .collect())
            }

            async fn active_members_by_day(
                &self,
                since: DateTime<Utc>,
                until: DateTime<Utc>,
            ) -> StoreResult<Vec<(NaiveDate, i64)>> {
                if let Some(pool) = self.sqlite_reader() {
                    return super::sqlite_scan::active_members_by_day(pool, since, until).await;
                }
                let od = <$store>::day_sql("placed_at");
                let ed = <$store>::day_sql("occurred_at");
                let sql = format!(
                    "SELECT d, COUNT(*) FROM (\
                       SELECT member_id, {od} AS d FROM orders WHERE member_id <> 0 AND placed_at >= $1 AND placed_at < $2 \
                       UNION \
                       SELECT member_id, {ed} AS d FROM events WHERE member_id <> 0 AND occurred_at >= $1 AND occurred_at < $2\
                     ) a GROUP BY d ORDER BY d"
                );
                let rows: Vec<(i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(Ts(since))
                    .bind(Ts(until))
                    .fetch_all(self.reader())
                    .await?;
                rows.into_iter().map(|(d, n)| Ok((epoch_day(d)?, n))).collect()
            }

            async fn begin_analytics_run(
                &self,
                as_of: NaiveDate,
                params: &serde_json::Value,
                at: DateTime<Utc>,
            ) -> StoreResult<AnalyticsRun> {
                let mut tx = self.write_tx().await?;
                <$store>::lock_keys(&mut tx, &[lock_name(&["analytics_run"])]).await?;
                sqlx::query(
                    "UPDATE analytics_runs SET status = 'failed', finished_at = $1, \
                     summary = $2 WHERE status = 'running'",
                )
                .bind(Ts(at))
                .bind(Json(json!({"error": "the run did not finish (the process stopped)"})))
                .execute(&mut *tx)
                .await?;
                let id = <$store>::next_ids(&mut tx, "analytics_runs", "run_id", 1)
                    .await?
                    .pop()
                    .ok_or_else(|| StoreError::Corrupt("no run id".into()))?;
                sqlx::query(
                    "INSERT INTO analytics_runs (run_id, as_of, started_at, status, params) VALUES ($1, $2, $3, 'running', $4)",
                )
                .bind(id)
                .bind(as_of)
                .bind(Ts(at))
                .bind(Json(params))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(AnalyticsRun {
                    run_id: id,
                    as_of,
                    started_at: at,
                    finished_at: None,
                    status: "running".into(),
                    params: params.clone(),
                    summary: None,
                })
            }

            async fn finish_analytics_run(&self, run_id: i64, mut out: AnalyticsOutput, at: DateTime<Utc>) -> StoreResult<()> {
                let started = std::time::Instant::now();
                let mut tx = self.write_tx().await?;
                for chunk in out.results.chunks(100) {
                    let mut q = QueryBuilder::<$db>::new("INSERT INTO analytics_results (run_id, model, body) ");
                    q.push_values(chunk, |mut b, (model, body)| {
                        b.push_bind(run_id).push_bind(model.clone()).push_bind(Json(body.clone()));
                    });
                    q.build().execute(&mut *tx).await?;
                }
                for chunk in out.changes.chunks(2000) {
                    let mut q = QueryBuilder::<$db>::new(
                        "INSERT INTO member_analytics_changes (run_id, member_id, model, from_value, to_value, reason) ",
                    );
                    q.push_values(chunk, |mut b, c| {
                        b.push_bind(run_id)
                            .push_bind(c.member_id)
                            .push_bind(c.model.clone())
                            .push_bind(c.from.clone())
                            .push_bind(c.to.clone())
                            .push_bind(c.reason.clone());
                    });
                    q.build().execute(&mut *tx).await?;
                }
                let deleted = sqlx::query("DELETE FROM member_tags WHERE source <> 'manual'").execute(&mut *tx).await?;
                tracing::debug!(
                    changes = out.changes.len(),
                    tags_deleted = deleted.rows_affected(),
                    ms = started.elapsed().as_millis() as u64,
                    "results and changes written, computed tags cleared"
                );
                // Manual tags are updated in place (their weight decays only under a configured half-life);
                // one an operator removed during the run stays removed.
                for t in out.tags.iter().filter(|t| t.source == "manual") {
                    sqlx::query(
                        "UPDATE member_tags SET weight = $1 WHERE member_id = $2 AND source = 'manual' AND tag = $3",
                    )
                    .bind(t.weight)
                    .bind(t.member_id)
                    .bind(&t.tag)
                    .execute(&mut *tx)
                    .await?;
                }
                for (member, tag) in &out.dropped_manual_tags {
                    sqlx::query("DELETE FROM member_tags WHERE member_id = $1 AND source = 'manual' AND tag = $2")
                        .bind(member)
                        .bind(tag)
                        .execute(&mut *tx)
                        .await?;
                }
                // Member rows and computed tags are most of a run's writes (a million members' bodies at scale):
                // each store writes them its fastest way.
                let computed: Vec<&MemberTagRow> = out.tags.iter().filter(|t| t.source != "manual").collect();
                <$store>::insert_run_rows(&mut tx, run_id, out.members.as_mut(), &computed).await?;
                let written = std::time::Instant::now();
                // Keep the member rows of this run and of the newest `keep_runs - 1` done runs before it.
                let kept: Vec<i64> = sqlx::query_scalar(
                    "SELECT run_id FROM analytics_runs WHERE status = 'done' AND run_id < $1 ORDER BY run_id DESC LIMIT $2",
                )
                .bind(run_id)
                .bind(out.keep_runs.max(1) - 1)
                .fetch_all(&mut *tx)
                .await?;
                let oldest_kept = kept.iter().copied().min().unwrap_or(run_id);
                sqlx::query("DELETE FROM member_analytics WHERE run_id < $1").bind(oldest_kept).execute(&mut *tx).await?;
                if <$store>::BACKEND == Backend::Sqlite {
                    // The dictionaries of the bodies just deleted (`body_codec`).
                    sqlx::query("UPDATE analytics_runs SET body_dict = NULL WHERE run_id < $1 AND body_dict IS NOT NULL")
                        .bind(oldest_kept)
                        .execute(&mut *tx)
                        .await?;
                }
                emit_notices(&mut tx, &out.notices, at).await?;
                let updated = sqlx::query(
                    "UPDATE analytics_runs SET status = 'done', finished_at = $1, summary = $2 \
                     WHERE run_id = $3 AND status = 'running'",
                )
                .bind(Ts(at))
                .bind(Json(&out.summary))
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() != 1 {
                    return Err(StoreError::Corrupt(format!("analytics run {run_id} is not running")));
                }
                let before_commit = std::time::Instant::now();
                tx.commit().await?;
                tracing::debug!(
                    old_rows_ms = (before_commit - written).as_millis() as u64,
                    commit_ms = before_commit.elapsed().as_millis() as u64,
                    total_ms = started.elapsed().as_millis() as u64,
                    "analytics run stored"
                );
                Ok(())
            }

            async fn fail_analytics_run(&self, run_id: i64, error: &str, at: DateTime<Utc>) -> StoreResult<()> {
                let mut tx = self.write_tx().await?;
                sqlx::query(
                    "UPDATE analytics_runs SET status = 'failed', finished_at = $1, summary = $2 \
                     WHERE run_id = $3 AND status = 'running'",
                )
                .bind(Ts(at))
                .bind(Json(json!({ "error": error })))
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn analytics_runs(&self, limit: i64) -> StoreResult<Vec<AnalyticsRun>> {
                let sql = format!("SELECT {RUN_COLUMNS} FROM analytics_runs ORDER BY run_id DESC LIMIT $1");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(limit).fetch_all(self.reader()).await?;
                rows.iter().map(run_from_row).collect()
            }

            async fn latest_analytics_run(&self) -> StoreResult<Option<AnalyticsRun>> {
                let sql =
                    format!("SELECT {RUN_COLUMNS} FROM analytics_runs WHERE status = 'done' ORDER BY run_id DESC LIMIT 1");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_optional(self.reader()).await?;
                row.as_ref().map(run_from_row).transpose()
            }

            async fn analytics_result(&self, run_id: i64, model: &str) -> StoreResult<Option<serde_json::Value>> {
                let row: Option<Json<serde_json::Value>> =
                    sqlx::query_scalar("SELECT body FROM analytics_results WHERE run_id = $1 AND model = $2")
                        .bind(run_id)
                        .bind(model)
                        .fetch_optional(self.reader())
                        .await?;
                Ok(row.map(|j| j.0))
            }

            async fn member_analytics_rows(&self, run_id: i64) -> StoreResult<Vec<MemberAnalyticsRow>> {
                let sql = format!("SELECT {MEMBER_ROW_COLUMNS} FROM member_analytics WHERE run_id = $1 ORDER BY member_id");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(run_id).fetch_all(self.reader()).await?;
                let bodies = self.member_bodies(run_id, &rows).await?;
                rows.iter().zip(bodies).map(|(row, body)| member_row_from_row(row, body)).collect()
            }

            async fn previous_members(&self, run_id: i64) -> StoreResult<Vec<PreviousMember>> {
                // SQLite's bodies are compressed: they are read whole and the `rfm` section kept.
                if let Some(pool) = self.sqlite_reader() {
                    return super::sqlite_scan::previous_members(pool, run_id).await;
                }
                // Only the `rfm` section of each body leaves the database.
                let rows = sqlx::query(
                    "SELECT member_id, stage, body -> 'rfm' AS rfm FROM member_analytics WHERE run_id = $1 ORDER BY member_id",
                )
                .bind(run_id)
                .fetch_all(self.reader())
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(PreviousMember {
                            member_id: row.try_get("member_id")?,
                            stage: row.try_get("stage")?,
                            rfm: row.try_get::<Option<Json<Box<serde_json::value::RawValue>>>, _>("rfm")?.map(|j| j.0),
                        })
                    })
                    .collect()
            }

            async fn member_analytics(&self, run_id: i64, member: MemberId) -> StoreResult<Option<MemberAnalyticsRow>> {
                let sql =
                    format!("SELECT {MEMBER_ROW_COLUMNS} FROM member_analytics WHERE run_id = $1 AND member_id = $2");
                let Some(row) =
                    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(run_id).bind(member).fetch_optional(self.reader()).await?
                else {
                    return Ok(None);
                };
                let body = self.member_bodies(run_id, std::slice::from_ref(&row)).await?.pop();
                body.map(|body| member_row_from_row(&row, body)).transpose()
            }

            async fn member_analytics_changes(&self, member: MemberId, limit: i64) -> StoreResult<Vec<AnalyticsChange>> {
                let rows: Vec<(i64, i64, String, Option<String>, String, String)> = sqlx::query_as(
                    "SELECT run_id, member_id, model, from_value, to_value, reason FROM member_analytics_changes \
                     WHERE member_id = $1 ORDER BY run_id DESC, model LIMIT $2",
                )
                .bind(member)
                .bind(limit)
                .fetch_all(self.reader())
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(run_id, member_id, model, from, to, reason)| AnalyticsChange { run_id, member_id, model, from, to, reason })
                    .collect())
            }

            async fn member_tags(&self, member: Option<MemberId>) -> StoreResult<Vec<MemberTagRow>> {
                if member.is_none()
                    && let Some(pool) = self.sqlite_reader()
                {
                    return super::sqlite_scan::all_member_tags(pool).await;
                }
                let rows = sqlx::query(
                    "SELECT member_id, tag, category, source, weight, support_weight, last_supported_at, \
                     first_tagged_at, reason FROM member_tags \
                     WHERE ($1 IS NULL OR member_id = $1) ORDER BY member_id, weight DESC, tag",
                )
                .bind(member)
                .fetch_all(self.reader())
                .await?;
                rows.iter().map(tag_from_row).collect()
            }

            async fn analytics_run(&self, run_id: i64) -> StoreResult<Option<AnalyticsRun>> {
                let sql = format!("SELECT {RUN_COLUMNS} FROM analytics_runs WHERE run_id = $1");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(run_id).fetch_optional(self.reader()).await?;
                row.as_ref().map(run_from_row).transpose()
            }

            async fn put_manual_tag(&self, t: &MemberTagRow) -> StoreResult<MemberTagRow> {
                let mut tx = self.write_tx().await?;
                let row = sqlx::query(
                    "INSERT INTO member_tags (member_id, source, tag, category, weight, support_weight, \
                     last_supported_at, first_tagged_at, reason, run_id) \
                     VALUES ($1, 'manual', $2, $3, $4, $5, $6, $7, $8, NULL) \
                     ON CONFLICT (member_id, source, tag) DO UPDATE SET category = excluded.category, \
                     weight = excluded.weight, support_weight = excluded.support_weight, \
                     last_supported_at = excluded.last_supported_at, reason = excluded.reason \
                     RETURNING first_tagged_at",
                )
                .bind(t.member_id)
                .bind(&t.tag)
                .bind(&t.category)
                .bind(t.weight)
                .bind(t.support_weight)
                .bind(Ts(t.last_supported_at))
                .bind(Ts(t.first_tagged_at))
                .bind(&t.reason)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(MemberTagRow { first_tagged_at: row.try_get::<Ts, _>("first_tagged_at")?.0, ..t.clone() })
            }

            async fn delete_manual_tag(&self, member: MemberId, tag: &str) -> StoreResult<bool> {
                let mut tx = self.write_tx().await?;
                let done = sqlx::query("DELETE FROM member_tags WHERE member_id = $1 AND source = 'manual' AND tag = $2")
                    .bind(member)
                    .bind(tag)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected() > 0)
            }
        }
    };
}

pub(crate) use analytics_store;
