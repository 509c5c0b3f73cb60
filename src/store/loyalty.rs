//! The loyalty engine's storage, shared by both backends like `common.rs`: rule-set versions, the loyalty
//! work queue, batched ledger writes with the evaluations that explain them, and the reads earning needs.
//!
//! Expanded inside the same module as `shared_store!`, so it uses that expansion's helpers
//! (`load_ledger`, `append_ledger`, `lock_name`, `orders_with_lines`, …).

/// Expand the `LoyaltyStore` implementation for `$store` over database `$db`.
macro_rules! loyalty_store {
    ($store:ty, $db:ty) => {
        /// A buyer as the order writer sees them (`buyers_on`).
        struct Buyer {
            facts: MemberFactsRow,
            /// Loyalty work is open for them: their new orders queue behind it.
            busy: bool,
            first_paid: Option<i64>,
        }

        /// Queue loyalty work in the caller's transaction: `(member, kind, ref)`; guests (member 0) earn nothing.
        async fn enqueue_loyalty(conn: &mut Conn, tasks: &[(MemberId, &str, String)], at: DateTime<Utc>) -> StoreResult<()> {
            let tasks: Vec<&(MemberId, &str, String)> = tasks.iter().filter(|t| t.0 != 0).collect();
            for chunk in tasks.chunks(5000) {
                let mut q = QueryBuilder::<$db>::new("INSERT INTO loyalty_queue (member_id, kind, ref, created_at) ");
                q.push_values(chunk, |mut b, (m, kind, r)| {
                    b.push_bind(*m).push_bind(kind.to_string()).push_bind(r.clone()).push_bind(Ts(at));
                });
                q.build().execute(&mut *conn).await?;
            }
            Ok(())
        }

        /// Ledgers of several members in one query, each in write order.
        async fn load_ledgers(conn: &mut Conn, members: &[MemberId]) -> StoreResult<HashMap<MemberId, Vec<LedgerEntry>>> {
            let mut out: HashMap<MemberId, Vec<LedgerEntry>> = members.iter().map(|m| (*m, Vec::new())).collect();
            for chunk in members.chunks(1000) {
                let mut q = QueryBuilder::<$db>::new(
                    "SELECT member_id, entry_key, op, request, wallet, amount, kind, state, available_at, source, at, lot, expires_at \
                     FROM ledger_entries WHERE member_id IN (",
                );
                push_list(&mut q, chunk, |m| *m, ") ORDER BY member_id, entry_id");
                for row in q.build().fetch_all(&mut *conn).await? {
                    let m: MemberId = row.try_get("member_id")?;
                    out.entry(m).or_default().push(ledger_entry_from_row(&row)?);
                }
            }
            Ok(out)
        }

        async fn load_tiers(conn: &mut Conn, members: &[MemberId]) -> StoreResult<HashMap<MemberId, TierState>> {
            let mut out = HashMap::new();
            for chunk in members.chunks(1000) {
                let mut q = QueryBuilder::<$db>::new("SELECT member_id, state FROM member_tiers WHERE member_id IN (");
                push_list(&mut q, chunk, |m| *m, ")");
                let rows: Vec<(MemberId, Json<serde_json::Value>)> = q.build_query_as().fetch_all(&mut *conn).await?;
                for (m, state) in rows {
                    let state = serde_json::from_value(state.0).map_err(|e| StoreError::Corrupt(format!("tier state of member {m}: {e}")))?;
                    out.insert(m, state);
                }
            }
            Ok(out)
        }

        /// Upsert tier states and append their changes; returns the events the changes call for. Set-based:
        /// one id allocation and multi-row statements for the whole batch, as a settle writes thousands.
        async fn write_tiers(conn: &mut Conn, writes: &[(MemberId, TierState, Vec<TierChange>)], at: DateTime<Utc>) -> StoreResult<Vec<$crate::notify::Notice>> {
            // A member written twice in one batch keeps the last state (one upsert may not touch a row twice).
            let mut last: HashMap<MemberId, usize> = HashMap::new();
            for (i, (m, _, _)) in writes.iter().enumerate() {
                last.insert(*m, i);
            }
            let states: Vec<(MemberId, &TierState)> = writes
                .iter()
                .enumerate()
                .filter(|(i, (m, _, _))| last.get(m) == Some(i))
                .map(|(_, (m, state, _))| (*m, state))
                .collect();
            for chunk in states.chunks(1000) {
                let mut q = QueryBuilder::<$db>::new("INSERT INTO member_tiers (member_id, tier, state, updated_at) ");
                q.push_values(chunk, |mut b, (m, state)| {
                    b.push_bind(*m).push_bind(state.tier.clone()).push_bind(Json(*state)).push_bind(Ts(at));
                });
                q.push(
                    " ON CONFLICT (member_id) DO UPDATE SET tier = excluded.tier, state = excluded.state, \
                     updated_at = excluded.updated_at",
                );
                q.build().execute(&mut *conn).await?;
            }
            let changes: Vec<(MemberId, &TierChange)> =
                writes.iter().flat_map(|(m, _, cs)| cs.iter().map(move |c| (*m, c))).collect();
            let ids = <$store>::next_ids(conn, "tier_changes", "change_id", changes.len()).await?;
            let mut notices = Vec::new();
            let mut rows = Vec::with_capacity(changes.len());
            for ((m, c), id) in changes.into_iter().zip(ids) {
                notices.extend($crate::notify::tier_changed(m, id, c));
                rows.push((m, id, c, enum_text(&c.kind)?));
            }
            for chunk in rows.chunks(1000) {
                let mut q = QueryBuilder::<$db>::new("INSERT INTO tier_changes (member_id, change_id, kind, from_tier, to_tier, at, reason, record) ");
                q.push_values(chunk, |mut b, (m, id, c, kind)| {
                    b.push_bind(*m)
                        .push_bind(*id)
                        .push_bind(kind.clone())
                        .push_bind(c.from.clone())
                        .push_bind(c.to.clone())
                        .push_bind(Ts(c.at))
                        .push_bind(c.reason.clone())
                        .push_bind(Json(*c));
                });
                q.build().execute(&mut *conn).await?;
            }
            Ok(notices)
        }

        /// `LoyaltyStore::ledger_apply` inside the caller's write transaction (which commits it), so a writer
        /// can earn on rows it has just written in the same commit.
        async fn apply_ledger_jobs(conn: &mut Conn, jobs: Vec<LedgerJob>, at: DateTime<Utc>) -> StoreResult<Vec<Result<Vec<LedgerEntry>, LedgerError>>> {
            if jobs.is_empty() {
                return Ok(Vec::new());
            }
            let mut members: Vec<MemberId> = jobs.iter().map(|j| j.member).collect();
            members.sort_unstable();
            members.dedup();
            let locks: Vec<String> = members.iter().map(|m| lock_name(&["ledger", &m.to_string()])).collect();
            <$store>::lock_keys(&mut *conn, &locks).await?;
            let mut ledgers = load_ledgers(&mut *conn, &members).await?;
            let mut tiers = load_tiers(&mut *conn, &members).await?;
            let mut tier_writes: Vec<(MemberId, TierState, Vec<TierChange>)> = Vec::new();
            let mut out = Vec::with_capacity(jobs.len());
            let mut fresh: HashMap<MemberId, Vec<LedgerEntry>> = HashMap::new();
            let mut evaluations: Vec<(MemberId, EvaluationRecord)> = Vec::new();
            let (mut done, mut failed): (Vec<i64>, Vec<(i64, String)>) = (Vec::new(), Vec::new());
            let mut crossings: Vec<(MemberId, Vec<Crossing>)> = Vec::new();
            let mut notices: Vec<$crate::notify::Notice> = Vec::new();
            for job in jobs {
                let history = ledgers.remove(&job.member).unwrap_or_default();
                let tier = tiers.get(&job.member).cloned();
                match (job.op)(&history, tier) {
                    Ok(applied) => {
                        if let Some((state, changes)) = applied.tier {
                            tiers.insert(job.member, state.clone());
                            tier_writes.push((job.member, state, changes));
                        }
                        let stored: HashSet<&str> = history.iter().map(|e| e.key.as_str()).collect();
                        let new: Vec<LedgerEntry> =
                            applied.entries.iter().filter(|e| !stored.contains(e.key.as_str())).cloned().collect();
                        notices.extend($crate::notify::from_ledger_entries(job.member, &new));
                        notices.extend(applied.events);
                        // Later jobs of the same member see this one's entries.
                        let mut next = history;
                        next.extend(new.iter().cloned());
                        ledgers.insert(job.member, next);
                        fresh.entry(job.member).or_default().extend(new);
                        evaluations.extend(applied.evaluations.into_iter().map(|e| (job.member, e)));
                        crossings.push((job.member, applied.crossings));
                        done.extend(job.tasks);
                        out.push(Ok(applied.entries));
                    }
                    Err(e) => {
                        ledgers.insert(job.member, history);
                        failed.extend(job.tasks.into_iter().map(|t| (t, e.to_string())));
                        out.push(Err(e));
                    }
                }
            }
            let appends: Vec<(MemberId, &[LedgerEntry])> =
                members.iter().filter_map(|m| fresh.get(m).filter(|e| !e.is_empty()).map(|e| (*m, e.as_slice()))).collect();
            if !appends.is_empty() {
                append_ledgers(&mut *conn, &appends).await?;
            }
            let evaluations = evaluations
                .iter()
                .map(|(m, e)| Ok((*m, <$store>::evaluation_value(&e.evaluation)?, e)))
                .collect::<StoreResult<Vec<_>>>()?;
            for chunk in evaluations.chunks(1000) {
                let mut q = QueryBuilder::<$db>::new("INSERT INTO loyalty_evaluations (member_id, op, rule_version, evaluation, at) ");
                q.push_values(chunk, |mut b, (m, stored, e)| {
                    b.push_bind(*m).push_bind(e.op.as_str()).push_bind(e.rule_version).push_bind(stored).push_bind(Ts(e.at));
                });
                q.push(" ON CONFLICT (member_id, op) DO NOTHING");
                q.build().execute(&mut *conn).await?;
            }
            for chunk in done.chunks(1000) {
                let mut q = QueryBuilder::<$db>::new("DELETE FROM loyalty_queue WHERE task_id IN (");
                push_list(&mut q, chunk, |t| *t, ")");
                q.build().execute(&mut *conn).await?;
            }
            notices.extend(write_tiers(&mut *conn, &tier_writes, at).await?);
            for (m, c) in &crossings {
                raise_flags(&mut *conn, *m, c, at).await?;
            }
            for (task, error) in failed {
                sqlx::query("UPDATE loyalty_queue SET failed_at = $1, error = $2 WHERE task_id = $3")
                    .bind(Ts(at))
                    .bind(error)
                    .bind(task)
                    .execute(&mut *conn)
                    .await?;
            }
            emit_notices(&mut *conn, &notices, at).await?;
            Ok(out)
        }

        /// Earn on orders the transaction has just written, given their buyers (`buyers_on`, read after the
        /// inserts so "first paid order" is right): read the catalog, let `earn` build the jobs, apply them. A job the
        /// ledger refuses leaves its orders as failed tasks with the reason, exactly as settling would.
        async fn earn_in_transaction(
            conn: &mut Conn,
            earn: &dyn OrderEarning,
            orders: Vec<OrderView>,
            buyers: &HashMap<MemberId, Buyer>,
            at: DateTime<Utc>,
        ) -> StoreResult<()> {
            let mut members: Vec<MemberId> = orders.iter().filter_map(|o| o.member_id).collect();
            members.sort_unstable();
            members.dedup();
            let mut skus: Vec<String> = orders.iter().flat_map(|o| o.lines.iter().map(|l| l.sku.clone())).collect();
            skus.sort_unstable();
            skus.dedup();
            let facts: HashMap<MemberId, MemberFactsRow> =
                members.iter().filter_map(|m| Some((*m, buyers.get(m)?.facts.clone()))).collect();
            let first_paid: HashMap<MemberId, i64> =
                members.iter().filter_map(|m| Some((*m, buyers.get(m)?.first_paid?))).collect();
            let catalog = sku_attributes_on(&mut *conn, &skus).await?;
            let cards = if earn.wants_cards() { cards_of_members_on(&mut *conn, &members).await? } else { HashMap::new() };
            let mut orders_of: HashMap<MemberId, Vec<i64>> = HashMap::new();
            for o in &orders {
                if let Some(m) = o.member_id {
                    orders_of.entry(m).or_default().push(o.id);
                }
            }
            let jobs = earn.jobs(EarnInputs { orders, facts, first_paid, catalog, cards });
            let job_members: Vec<MemberId> = jobs.iter().map(|j| j.member).collect();
            let results = apply_ledger_jobs(&mut *conn, jobs, at).await?;
            // (member, order id, why) of every order whose earning the ledger refused.
            let mut failed: Vec<(MemberId, i64, String)> = Vec::new();
            for (m, r) in job_members.iter().zip(&results) {
                if let Err(e) = r {
                    tracing::warn!(member = %m, error = %e, "earning on an order was refused; its task is kept as failed");
                    failed.extend(orders_of.get(m).into_iter().flatten().map(|id| (*m, *id, e.to_string())));
                }
            }
            for (m, order_id, error) in failed {
                sqlx::query(
                    "INSERT INTO loyalty_queue (member_id, kind, ref, created_at, failed_at, error) VALUES ($1, 'order', $2, $3, $4, $5)",
                )
                .bind(m)
                .bind(order_id.to_string())
                .bind(Ts(at))
                .bind(Ts(at))
                .bind(error)
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        }

        /// `(category_path, brand)` of each known SKU, read on `conn`.
        async fn sku_attributes_on(conn: &mut Conn, skus: &[String]) -> StoreResult<HashMap<String, (Option<String>, Option<String>)>> {
            let mut out = HashMap::new();
            for chunk in skus.chunks(1000) {
                let mut q = QueryBuilder::<$db>::new("SELECT sku, category_path, brand FROM skus WHERE sku IN (");
                push_list(&mut q, chunk, |s| s.clone(), ")");
                let rows: Vec<(String, Option<String>, Option<String>)> = q.build_query_as().fetch_all(&mut *conn).await?;
                out.extend(rows.into_iter().map(|(s, c, b)| (s, (c, b))));
            }
            Ok(out)
        }

        /// Each member's first paid order, read on `conn` (a write transaction sees the orders it has just written).
        async fn first_paid_orders_on(conn: &mut Conn, members: &[MemberId]) -> StoreResult<HashMap<MemberId, i64>> {
            let mut out = HashMap::new();
            for chunk in members.chunks(1000) {
                let mut q = QueryBuilder::<$db>::new(
                    "SELECT member_id, order_id FROM orders WHERE status IN ('paid', 'shipped', 'completed') AND member_id IN (",
                );
                push_list(&mut q, chunk, |m| *m, ") ORDER BY member_id, placed_at, order_id");
                let rows: Vec<(MemberId, i64)> = q.build_query_as().fetch_all(&mut *conn).await?;
                for (m, o) in rows {
                    out.entry(m).or_insert(o);
                }
            }
            Ok(out)
        }

        /// The columns `facts_from_row` reads, over `members m LEFT JOIN referrals r`.
        const FACTS_COLUMNS: &str = "m.member_id, m.status, m.birthday, m.registered_at, r.referrer_id, \
             CASE WHEN m.name_sealed IS NOT NULL AND m.gender IS NOT NULL AND m.birthday IS NOT NULL AND m.city IS NOT NULL \
             THEN 1 ELSE 0 END AS complete";

        fn facts_from_row(row: &DbRow) -> StoreResult<(MemberId, MemberFactsRow)> {
            let birthday: Option<String> = row.try_get("birthday")?;
            let birthday = match birthday {
                Some(b) => Some(NaiveDate::parse_from_str(&b, "%Y-%m-%d").map_err(|_| corrupt("birthday", &b))?),
                None => None,
            };
            let status: String = row.try_get("status")?;
            let complete: i32 = row.try_get("complete")?;
            Ok((
                row.try_get("member_id")?,
                MemberFactsRow {
                    active: status == "active",
                    birthday,
                    registered_at: row.try_get::<Ts, _>("registered_at")?.0,
                    profile_complete: complete == 1,
                    referred_by: row.try_get("referrer_id")?,
                },
            ))
        }

        /// What earning needs to know of each member, read on `conn`.
        async fn member_facts_on(conn: &mut Conn, ids: &[MemberId]) -> StoreResult<HashMap<MemberId, MemberFactsRow>> {
            let mut out = HashMap::new();
            for chunk in ids.chunks(1000) {
                let mut q = QueryBuilder::<$db>::new(format!(
                    "SELECT {FACTS_COLUMNS} FROM members m LEFT JOIN referrals r ON r.member_id = m.member_id WHERE m.member_id IN ("
                ));
                push_list(&mut q, chunk, |m| *m, ")");
                for row in q.build().fetch_all(&mut *conn).await? {
                    let (m, facts) = facts_from_row(&row)?;
                    out.insert(m, facts);
                }
            }
            Ok(out)
        }

        /// Buyers as an order writer needs them, in one query: earning facts (with the referrer), whether
        /// loyalty work is open for them, and their first paid order (the transaction's own orders included).
        async fn buyers_on(conn: &mut Conn, ids: &[MemberId]) -> StoreResult<HashMap<MemberId, Buyer>> {
            let mut out = HashMap::new();
            for chunk in ids.chunks(1000) {
                let mut q = QueryBuilder::<$db>::new(format!(
                    "SELECT {FACTS_COLUMNS}, \
                     CASE WHEN EXISTS (SELECT 1 FROM loyalty_queue q WHERE q.member_id = m.member_id AND q.failed_at IS NULL) \
                     THEN 1 ELSE 0 END AS busy, \
                     (SELECT o.order_id FROM orders o WHERE o.member_id = m.member_id AND o.status IN ('paid', 'shipped', 'completed') \
                      ORDER BY o.placed_at, o.order_id LIMIT 1) AS first_paid \
                     FROM members m LEFT JOIN referrals r ON r.member_id = m.member_id WHERE m.member_id IN ("
                ));
                push_list(&mut q, chunk, |m| *m, ")");
                for row in q.build().fetch_all(&mut *conn).await? {
                    let (m, facts) = facts_from_row(&row)?;
                    let busy: i32 = row.try_get("busy")?;
                    out.insert(m, Buyer { facts, busy: busy == 1, first_paid: row.try_get("first_paid")? });
                }
            }
            Ok(out)
        }

        #[async_trait]
        impl LoyaltyStore for $store {
            async fn member_tier(&self, member: MemberId) -> StoreResult<Option<TierState>> {
                let mut conn = self.reader().acquire().await?;
                Ok(load_tiers(&mut conn, &[member]).await?.remove(&member))
            }

            async fn history_ids(
                &self,
                members: &[MemberId],
                until: DateTime<Utc>,
            ) -> StoreResult<(Vec<i64>, Vec<i64>, Vec<i64>)> {
                let mut conn = self.reader().acquire().await?;
                let mut out = (Vec::new(), Vec::new(), Vec::new());
                let queries: [(&str, &str, &str); 3] = [
                    ("SELECT order_id FROM orders WHERE member_id IN (", ") AND placed_at <= ", " ORDER BY order_id"),
                    (
                        "SELECT refund_id FROM refunds WHERE order_id IS NOT NULL AND member_id IN (",
                        ") AND refunded_at <= ",
                        " ORDER BY refund_id",
                    ),
                    (
                        "SELECT event_id FROM events WHERE event_type IN ('share', 'check_in', 'custom.review') AND member_id IN (",
                        ") AND occurred_at <= ",
                        " ORDER BY event_id",
                    ),
                ];
                for chunk in members.chunks(1000) {
                    for (i, (head, mid, tail)) in queries.iter().enumerate() {
                        let mut q = QueryBuilder::<$db>::new(*head);
                        push_list(&mut q, chunk, |m| *m, *mid).push_bind(Ts(until)).push(*tail);
                        let ids: Vec<i64> = q.build_query_scalar().fetch_all(&mut *conn).await?;
                        match i {
                            0 => out.0.extend(ids),
                            1 => out.1.extend(ids),
                            _ => out.2.extend(ids),
                        }
                    }
                }
                Ok(out)
            }

            async fn available_points(&self, members: &[MemberId]) -> StoreResult<HashMap<MemberId, (i64, Option<String>)>> {
                let mut conn = self.reader().acquire().await?;
                let mut out: HashMap<MemberId, (i64, Option<String>)> = HashMap::new();
                for chunk in members.chunks(1000) {
                    let mut q = QueryBuilder::<$db>::new(
                        "SELECT member_id, CAST(SUM(amount) AS BIGINT) FROM ledger_entries \
                         WHERE wallet = 'points' AND state = 'available' AND member_id IN (",
                    );
                    push_list(&mut q, chunk, |m| *m, ") GROUP BY member_id");
                    let rows: Vec<(MemberId, i64)> = q.build_query_as().fetch_all(&mut *conn).await?;
                    for (m, points) in rows {
                        out.entry(m).or_default().0 = points;
                    }
                    let mut q = QueryBuilder::<$db>::new("SELECT member_id, tier FROM member_tiers WHERE member_id IN (");
                    push_list(&mut q, chunk, |m| *m, ")");
                    let rows: Vec<(MemberId, String)> = q.build_query_as().fetch_all(&mut *conn).await?;
                    for (m, tier) in rows {
                        out.entry(m).or_default().1 = Some(tier);
                    }
                }
                Ok(out)
            }

            async fn ledgers_and_tiers(
                &self,
                members: &[MemberId],
            ) -> StoreResult<Vec<(MemberId, Vec<LedgerEntry>, Option<TierState>)>> {
                let mut conn = self.reader().acquire().await?;
                let mut ledgers = load_ledgers(&mut conn, members).await?;
                let mut tiers = load_tiers(&mut conn, members).await?;
                Ok(members
                    .iter()
                    .map(|m| (*m, ledgers.remove(m).unwrap_or_default(), tiers.remove(m)))
                    .collect())
            }

            async fn tier_changes(&self, member: MemberId) -> StoreResult<Vec<TierChange>> {
                let rows: Vec<Json<serde_json::Value>> =
                    sqlx::query_scalar("SELECT record FROM tier_changes WHERE member_id = $1 ORDER BY change_id")
                        .bind(member)
                        .fetch_all(self.reader())
                        .await?;
                rows.into_iter()
                    .map(|r| serde_json::from_value(r.0).map_err(|e| StoreError::Corrupt(format!("tier change: {e}"))))
                    .collect()
            }

            async fn rule_sets(&self) -> StoreResult<Vec<RuleSetRecord>> {
                let rows: Vec<(i64, Ts, String)> =
                    sqlx::query_as("SELECT version, created_at, actor FROM rule_sets ORDER BY version DESC")
                        .fetch_all(self.reader())
                        .await?;
                Ok(rows.into_iter().map(|(version, at, actor)| RuleSetRecord { version, created_at: at.0, actor }).collect())
            }

            async fn rule_set(&self, version: Option<i64>) -> StoreResult<Option<(RuleSetRecord, String)>> {
                let row: Option<(i64, Ts, String, String)> = sqlx::query_as(
                    "SELECT version, created_at, actor, body FROM rule_sets WHERE ($1 IS NULL OR version = $1) \
                     ORDER BY version DESC LIMIT 1",
                )
                .bind(version)
                .fetch_optional(self.reader())
                .await?;
                Ok(row.map(|(version, at, actor, body)| (RuleSetRecord { version, created_at: at.0, actor }, body)))
            }

            async fn insert_rule_set(&self, version: i64, body: &str, actor: &Actor) -> StoreResult<Result<(), i64>> {
                let mut tx = self.write_tx().await?;
                Self::lock_keys(&mut tx, &[lock_name(&["rule_sets"])]).await?;
                let current: i64 = sqlx::query_scalar("SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM rule_sets")
                    .fetch_one(&mut *tx)
                    .await?;
                if version != current + 1 {
                    return Ok(Err(current));
                }
                sqlx::query("INSERT INTO rule_sets (version, body, created_at, actor) VALUES ($1, $2, $3, $4)")
                    .bind(version)
                    .bind(body)
                    .bind(Ts(actor.at))
                    .bind(&actor.id)
                    .execute(&mut *tx)
                    .await?;
                audit(&mut tx, actor, "loyalty.rules", None, json!({ "version": version })).await?;
                tx.commit().await?;
                Ok(Ok(()))
            }

            async fn loyalty_tasks(&self, limit: i64) -> StoreResult<Vec<LoyaltyTask>> {
                let rows: Vec<(i64, MemberId, String, String, Ts)> = sqlx::query_as(
                    "SELECT task_id, member_id, kind, ref, created_at FROM loyalty_queue WHERE failed_at IS NULL \
                     ORDER BY member_id, task_id LIMIT $1",
                )
                .bind(limit)
                .fetch_all(self.reader())
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(task_id, member_id, kind, reference, at)| LoyaltyTask { task_id, member_id, kind, reference, created_at: at.0 })
                    .collect())
            }

            async fn loyalty_backlog(&self) -> StoreResult<(i64, i64)> {
                let open: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM loyalty_queue WHERE failed_at IS NULL")
                    .fetch_one(self.reader())
                    .await?;
                let failed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM loyalty_queue WHERE failed_at IS NOT NULL")
                    .fetch_one(self.reader())
                    .await?;
                Ok((open, failed))
            }

            async fn ledger_apply(&self, jobs: Vec<LedgerJob>, at: DateTime<Utc>) -> StoreResult<Vec<Result<Vec<LedgerEntry>, LedgerError>>> {
                if jobs.is_empty() {
                    return Ok(Vec::new());
                }
                let mut tx = self.write_tx().await?;
                let out = apply_ledger_jobs(&mut tx, jobs, at).await?;
                tx.commit().await?;
                Ok(out)
            }

            async fn orders_by_ids(&self, ids: &[i64]) -> StoreResult<Vec<OrderView>> {
                let mut conn = self.reader().acquire().await?;
                let mut out = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(1000) {
                    let mut q = QueryBuilder::<$db>::new(format!("{ORDER_SELECT} WHERE o.order_id IN ("));
                    push_list(&mut q, chunk, |id| *id, ")");
                    let rows = q.build().fetch_all(&mut *conn).await?;
                    out.extend(orders_with_lines(&mut conn, rows).await?);
                }
                Ok(out)
            }

            async fn refund_reversals(&self, refund_ids: &[i64]) -> StoreResult<Vec<RefundReversal>> {
                let mut conn = self.reader().acquire().await?;
                let mut out = Vec::with_capacity(refund_ids.len());
                for &id in refund_ids {
                    let head: Option<(MemberId, Option<i64>, Ts)> =
                        sqlx::query_as("SELECT member_id, order_id, refunded_at FROM refunds WHERE refund_id = $1")
                            .bind(id)
                            .fetch_optional(&mut *conn)
                            .await?;
                    let Some((member_id, Some(order_id), at)) = head else { continue };
                    // Cumulative per line as of this refund: a later refund of the same line is its own step.
                    let rows: Vec<(i32, i64, i64)> = sqlx::query_as(
                        "SELECT l.line_no, CAST(l.quantity AS BIGINT), CAST(COALESCE(SUM(r.quantity), 0) AS BIGINT) \
                         FROM order_lines l JOIN refund_lines r ON r.order_id = l.order_id AND r.line_no = l.line_no \
                         WHERE l.order_id = $1 AND r.refund_id <= $2 \
                           AND l.line_no IN (SELECT line_no FROM refund_lines WHERE refund_id = $2 AND line_no IS NOT NULL) \
                         GROUP BY l.line_no, l.quantity ORDER BY l.line_no",
                    )
                    .bind(order_id)
                    .bind(id)
                    .fetch_all(&mut *conn)
                    .await?;
                    let lines = rows
                        .into_iter()
                        .map(|(line_no, line_quantity, refunded)| $crate::loyalty::ledger::RefundedLine {
                            line_no,
                            line_quantity,
                            refunded_quantity: refunded.min(line_quantity),
                        })
                        .collect();
                    out.push(RefundReversal { refund_id: id, member_id, order_id, refunded_at: at.0, lines });
                }
                Ok(out)
            }

            async fn sku_attributes(&self, skus: &[String]) -> StoreResult<HashMap<String, (Option<String>, Option<String>)>> {
                let mut conn = self.reader().acquire().await?;
                sku_attributes_on(&mut conn, skus).await
            }

            async fn first_paid_orders(&self, members: &[MemberId]) -> StoreResult<HashMap<MemberId, i64>> {
                let mut conn = self.reader().acquire().await?;
                first_paid_orders_on(&mut conn, members).await
            }

            async fn referral_payouts(
                &self,
                referrers: &[MemberId],
                until: DateTime<Utc>,
            ) -> StoreResult<Vec<(MemberId, MemberId, i64, DateTime<Utc>)>> {
                let mut out = Vec::new();
                for chunk in referrers.chunks(1000) {
                    let mut q = QueryBuilder::<$db>::new(
                        "SELECT r.referrer_id, r.member_id, o.order_id, o.placed_at FROM referrals r \
                         JOIN orders o ON o.member_id = r.member_id \
                         WHERE o.status IN ('paid', 'shipped', 'completed') AND r.referrer_id IN (",
                    );
                    push_list(&mut q, chunk, |m| *m, ") ORDER BY r.member_id, o.placed_at, o.order_id");
                    let rows: Vec<(MemberId, MemberId, i64, Ts)> = q.build_query_as().fetch_all(self.reader()).await?;
                    // The referee's first paid order pays, as the engine decides it; a later one never does.
                    let mut last_referee = None;
                    for (referrer, referee, order, placed) in rows {
                        if last_referee.replace(referee) != Some(referee) && placed.0 <= until {
                            out.push((referrer, referee, order, placed.0));
                        }
                    }
                }
                Ok(out)
            }

            async fn events_by_ids(&self, ids: &[i64]) -> StoreResult<Vec<(i64, MemberId, String, String, DateTime<Utc>)>> {
                let mut conn = self.reader().acquire().await?;
                let mut out = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(1000) {
                    let mut q = QueryBuilder::<$db>::new("SELECT event_id, member_id, event_type, event_key, occurred_at FROM events WHERE event_id IN (");
                    push_list(&mut q, chunk, |id| *id, ")");
                    let rows: Vec<(i64, MemberId, String, String, Ts)> = q.build_query_as().fetch_all(&mut *conn).await?;
                    out.extend(rows.into_iter().map(|(id, m, t, k, at)| (id, m, t, k, at.0)));
                }
                Ok(out)
            }

            async fn event_times_many(&self, members: &[MemberId], event_type: &str, since: DateTime<Utc>) -> StoreResult<HashMap<MemberId, Vec<DateTime<Utc>>>> {
                let mut conn = self.reader().acquire().await?;
                let mut out: HashMap<MemberId, Vec<DateTime<Utc>>> = HashMap::new();
                for chunk in members.chunks(1000) {
                    let mut q = QueryBuilder::<$db>::new("SELECT member_id, occurred_at FROM events WHERE event_type = ");
                    q.push_bind(event_type.to_string()).push(" AND occurred_at >= ").push_bind(Ts(since)).push(" AND member_id IN (");
                    push_list(&mut q, chunk, |m| *m, ") ORDER BY member_id, occurred_at");
                    let rows: Vec<(MemberId, Ts)> = q.build_query_as().fetch_all(&mut *conn).await?;
                    for (m, t) in rows {
                        out.entry(m).or_default().push(t.0);
                    }
                }
                Ok(out)
            }

            async fn event_times(&self, member: MemberId, event_type: &str, since: DateTime<Utc>) -> StoreResult<Vec<DateTime<Utc>>> {
                let rows: Vec<Ts> = sqlx::query_scalar(
                    "SELECT occurred_at FROM events WHERE member_id = $1 AND event_type = $2 AND occurred_at >= $3 ORDER BY occurred_at",
                )
                .bind(member)
                .bind(event_type)
                .bind(Ts(since))
                .fetch_all(self.reader())
                .await?;
                Ok(rows.into_iter().map(|t| t.0).collect())
            }

            async fn member_facts(&self, ids: &[MemberId]) -> StoreResult<HashMap<MemberId, MemberFactsRow>> {
                let mut conn = self.reader().acquire().await?;
                member_facts_on(&mut conn, ids).await
            }

            async fn evaluations(&self, member: MemberId) -> StoreResult<Vec<EvaluationRecord>> {
                let rows = sqlx::query(
                    "SELECT op, rule_version, evaluation, at FROM loyalty_evaluations WHERE member_id = $1 ORDER BY at, op",
                )
                .bind(member)
                .fetch_all(self.reader())
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(EvaluationRecord {
                            op: row.try_get("op")?,
                            rule_version: row.try_get("rule_version")?,
                            evaluation: <$store>::evaluation_from(row.try_get("evaluation")?)?,
                            at: row.try_get::<Ts, _>("at")?.0,
                        })
                    })
                    .collect()
            }
        }
    };
}

pub(crate) use loyalty_store;
