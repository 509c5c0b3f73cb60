//! The outbox and webhook endpoints, shared by both backends like `common.rs`. Events are written by
//! `emit_notices` inside their cause's transaction (ledger batches, redemptions); each new event gets a
//! delivery row for every active endpoint subscribed to its type in that same transaction.
//!
//! Expanded inside the same module as `shared_store!`, so it uses that expansion's helpers.

/// Expand the `OutboxStore` implementation for `$store` over database `$db`.
macro_rules! outbox_store {
    ($store:ty, $db:ty) => {
        /// Put events in the outbox inside the caller's transaction. Ids already stored are ignored. On
        /// PostgreSQL the outbox lock is held from allocating `seq` to commit, so `seq` order is commit order
        /// and a poller reading `after=seq` never skips an event that commits later. It is always the last
        /// lock a transaction takes, so it cannot close a cycle. Returns how many events were new.
        async fn emit_notices(conn: &mut Conn, events: &[$crate::notify::Notice], at: DateTime<Utc>) -> StoreResult<u64> {
            if events.is_empty() {
                return Ok(0);
            }
            let mut seen: HashSet<&str> = HashSet::new();
            let mut fresh: Vec<&$crate::notify::Notice> = events.iter().filter(|e| seen.insert(e.id.as_str())).collect();
            let mut stored: HashSet<String> = HashSet::new();
            for chunk in fresh.chunks(1000) {
                let mut q = QueryBuilder::<$db>::new("SELECT event_id FROM outbox_events WHERE event_id IN (");
                push_list(&mut q, chunk, |e| e.id.clone(), ")");
                let rows: Vec<String> = q.build_query_scalar().fetch_all(&mut *conn).await?;
                stored.extend(rows);
            }
            fresh.retain(|e| !stored.contains(&e.id));
            if fresh.is_empty() {
                return Ok(0);
            }
            <$store>::lock_keys(conn, &[lock_name(&["outbox"])]).await?;
            let seqs = <$store>::next_ids(conn, "outbox_events", "seq", fresh.len()).await?;
            let mut inserted: Vec<i64> = Vec::with_capacity(fresh.len());
            let rows: Vec<(i64, &$crate::notify::Notice)> = seqs.into_iter().zip(fresh).collect();
            for chunk in rows.chunks(1000) {
                let mut q = QueryBuilder::<$db>::new(
                    "INSERT INTO outbox_events (seq, event_id, event_type, member_id, occurred_at, data, created_at) ",
                );
                q.push_values(chunk, |mut b, (seq, e)| {
                    b.push_bind(*seq)
                        .push_bind(e.id.clone())
                        .push_bind(e.event_type.as_str())
                        .push_bind(e.member_id)
                        .push_bind(Ts(e.occurred_at))
                        .push_bind(Json(e.data.clone()))
                        .push_bind(Ts(at));
                });
                // A concurrent writer of the same id (possible only between the check and the lock) wins.
                q.push(" ON CONFLICT (event_id) DO NOTHING RETURNING seq");
                let got: Vec<i64> = q.build_query_scalar().fetch_all(&mut *conn).await?;
                inserted.extend(got);
            }
            for chunk in inserted.chunks(1000) {
                let mut q = QueryBuilder::<$db>::new(
                    "INSERT INTO webhook_deliveries (endpoint_id, seq, state, attempts, next_attempt_at) \
                     SELECT DISTINCT s.endpoint_id, o.seq, 'pending', 0, o.created_at \
                     FROM outbox_events o \
                     JOIN webhook_subscriptions s ON s.event_type = o.event_type OR s.event_type = '*' \
                     JOIN webhook_endpoints w ON w.endpoint_id = s.endpoint_id AND w.active = TRUE \
                     WHERE o.seq IN (",
                );
                push_list(&mut q, chunk, |s| *s, ") ON CONFLICT (endpoint_id, seq) DO NOTHING");
                q.build().execute(&mut *conn).await?;
            }
            Ok(inserted.len() as u64)
        }

        fn outbox_event_from_row(row: &DbRow) -> StoreResult<OutboxEvent> {
            let member: MemberId = row.try_get("member_id")?;
            Ok(OutboxEvent {
                seq: row.try_get("seq")?,
                id: row.try_get("event_id")?,
                event_type: row.try_get("event_type")?,
                member_id: (member != 0).then_some(member),
                occurred_at: row.try_get::<Ts, _>("occurred_at")?.0,
                data: row.try_get::<Json<serde_json::Value>, _>("data")?.0,
                created_at: row.try_get::<Ts, _>("created_at")?.0,
            })
        }

        fn webhook_from_row(row: &DbRow) -> StoreResult<WebhookRecord> {
            let types: Json<Vec<String>> = row.try_get("event_types")?;
            Ok(WebhookRecord {
                id: row.try_get("endpoint_id")?,
                url: row.try_get("url")?,
                secret_sealed: row.try_get("secret_sealed")?,
                event_types: types.0,
                description: row.try_get("description")?,
                active: row.try_get("active")?,
                created_at: row.try_get::<Ts, _>("created_at")?.0,
                created_by: row.try_get("created_by")?,
                deactivated_at: row.try_get::<Option<Ts>, _>("deactivated_at")?.map(|t| t.0),
            })
        }

        const WEBHOOK_SELECT: &str = "SELECT endpoint_id, url, secret_sealed, event_types, description, active, \
            created_at, created_by, deactivated_at FROM webhook_endpoints";

        async fn webhook_row(conn: &mut Conn, column: &'static str, value: WebhookKey) -> StoreResult<Option<(WebhookRecord, Vec<u8>)>> {
            let sql = format!("SELECT endpoint_id, url, secret_sealed, event_types, description, active, created_at, \
                created_by, deactivated_at, request_digest FROM webhook_endpoints WHERE {column} = $1");
            let q = sqlx::query(sqlx::AssertSqlSafe(sql));
            let row = match value {
                WebhookKey::Id(id) => q.bind(id).fetch_optional(&mut *conn).await?,
                WebhookKey::Idem(k) => q.bind(k).fetch_optional(&mut *conn).await?,
            };
            match row {
                Some(r) => Ok(Some((webhook_from_row(&r)?, r.try_get("request_digest")?))),
                None => Ok(None),
            }
        }

        /// How an endpoint is looked up.
        enum WebhookKey {
            Id(i64),
            Idem(String),
        }

        fn delivery_state_from(text: &str) -> StoreResult<DeliveryState> {
            serde_json::from_value(serde_json::Value::String(text.to_string()))
                .map_err(|_| StoreError::Corrupt(format!("delivery state `{text}`")))
        }

        #[async_trait]
        impl OutboxStore for $store {
            async fn emit_events(&self, events: &[$crate::notify::Notice], at: DateTime<Utc>) -> StoreResult<u64> {
                let mut tx = self.write_tx().await?;
                let n = emit_notices(&mut tx, events, at).await?;
                tx.commit().await?;
                Ok(n)
            }

            async fn outbox_events(&self, after: i64, event_type: Option<&str>, limit: i64) -> StoreResult<Vec<OutboxEvent>> {
                let rows = sqlx::query(
                    "SELECT seq, event_id, event_type, member_id, occurred_at, data, created_at FROM outbox_events \
                     WHERE seq > $1 AND ($2 IS NULL OR event_type = $2) ORDER BY seq LIMIT $3",
                )
                .bind(after)
                .bind(event_type)
                .bind(limit)
                .fetch_all(self.reader())
                .await?;
                rows.iter().map(outbox_event_from_row).collect()
            }

            async fn insert_webhook(&self, w: &WebhookWrite, actor: &Actor) -> StoreResult<WebhookStored> {
                let mut tx = self.write_tx().await?;
                Self::lock_keys(&mut tx, &[lock_name(&["webhook", &w.idem_key])]).await?;
                if let Some((rec, digest)) = webhook_row(&mut tx, "idem_key", WebhookKey::Idem(w.idem_key.clone())).await? {
                    return Ok(if digest == w.request_digest { WebhookStored::Replayed(rec) } else { WebhookStored::KeyReused });
                }
                let id = <$store>::next_ids(&mut tx, "webhook_endpoints", "endpoint_id", 1)
                    .await?
                    .pop()
                    .ok_or_else(|| StoreError::Corrupt("no endpoint id".into()))?;
                sqlx::query(
                    "INSERT INTO webhook_endpoints (endpoint_id, url, secret_sealed, event_types, description, active, \
                     idem_key, request_digest, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(id)
                .bind(&w.url)
                .bind(&w.secret_sealed)
                .bind(Json(&w.event_types))
                .bind(&w.description)
                .bind(true)
                .bind(&w.idem_key)
                .bind(&w.request_digest)
                .bind(Ts(actor.at))
                .bind(&actor.id)
                .execute(&mut *tx)
                .await?;
                for t in &w.event_types {
                    sqlx::query("INSERT INTO webhook_subscriptions (event_type, endpoint_id) VALUES ($1, $2)")
                        .bind(t)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                audit(&mut tx, actor, "webhook.create", None, json!({ "endpoint_id": id, "url": w.url, "event_types": w.event_types })).await?;
                let rec = webhook_row(&mut tx, "endpoint_id", WebhookKey::Id(id))
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("endpoint vanished".into()))?
                    .0;
                tx.commit().await?;
                Ok(WebhookStored::Created(rec))
            }

            async fn webhooks(&self) -> StoreResult<Vec<WebhookRecord>> {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{WEBHOOK_SELECT} ORDER BY endpoint_id")))
                    .fetch_all(self.reader())
                    .await?;
                rows.iter().map(webhook_from_row).collect()
            }

            async fn webhook(&self, id: i64) -> StoreResult<Option<WebhookRecord>> {
                let mut conn = self.reader().acquire().await?;
                Ok(webhook_row(&mut conn, "endpoint_id", WebhookKey::Id(id)).await?.map(|r| r.0))
            }

            async fn deactivate_webhook(&self, id: i64, actor: &Actor) -> StoreResult<Option<WebhookRecord>> {
                let mut tx = self.write_tx().await?;
                let changed = sqlx::query(
                    "UPDATE webhook_endpoints SET active = FALSE, deactivated_at = $1 WHERE endpoint_id = $2 AND active = TRUE",
                )
                .bind(Ts(actor.at))
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if changed > 0 {
                    audit(&mut tx, actor, "webhook.deactivate", None, json!({ "endpoint_id": id })).await?;
                }
                let rec = webhook_row(&mut tx, "endpoint_id", WebhookKey::Id(id)).await?.map(|r| r.0);
                tx.commit().await?;
                Ok(rec)
            }

            async fn webhook_deliveries(
                &self,
                endpoint: i64,
                after: i64,
                state: Option<DeliveryState>,
                limit: i64,
            ) -> StoreResult<Vec<DeliveryRecord>> {
                let state = state.map(|s| enum_text(&s)).transpose()?;
                let rows = sqlx::query(
                    "SELECT d.endpoint_id, d.seq, o.event_id, o.event_type, d.state, d.attempts, d.next_attempt_at, \
                     d.last_attempt_at, d.last_status, d.last_error, d.delivered_at \
                     FROM webhook_deliveries d JOIN outbox_events o ON o.seq = d.seq \
                     WHERE d.endpoint_id = $1 AND d.seq > $2 AND ($3 IS NULL OR d.state = $3) ORDER BY d.seq LIMIT $4",
                )
                .bind(endpoint)
                .bind(after)
                .bind(state)
                .bind(limit)
                .fetch_all(self.reader())
                .await?;
                rows.iter()
                    .map(|r| {
                        let state: String = r.try_get("state")?;
                        Ok(DeliveryRecord {
                            endpoint_id: r.try_get("endpoint_id")?,
                            seq: r.try_get("seq")?,
                            event_id: r.try_get("event_id")?,
                            event_type: r.try_get("event_type")?,
                            state: delivery_state_from(&state)?,
                            attempts: r.try_get("attempts")?,
                            next_attempt_at: r.try_get::<Option<Ts>, _>("next_attempt_at")?.map(|t| t.0),
                            last_attempt_at: r.try_get::<Option<Ts>, _>("last_attempt_at")?.map(|t| t.0),
                            last_status: r.try_get("last_status")?,
                            last_error: r.try_get("last_error")?,
                            delivered_at: r.try_get::<Option<Ts>, _>("delivered_at")?.map(|t| t.0),
                        })
                    })
                    .collect()
            }

            async fn claim_deliveries(
                &self,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
                limit: i64,
            ) -> StoreResult<Vec<DueDelivery>> {
                // Looked for on a reader, so an idle worker never holds the (SQLite) writer.
                let rows = sqlx::query(
                    "SELECT d.endpoint_id, d.seq, d.attempts, d.next_attempt_at AS due, w.url, w.secret_sealed, \
                     o.event_id, o.event_type, o.member_id, o.occurred_at, o.data, o.created_at \
                     FROM webhook_deliveries d \
                     JOIN webhook_endpoints w ON w.endpoint_id = d.endpoint_id AND w.active = TRUE \
                     JOIN outbox_events o ON o.seq = d.seq \
                     WHERE d.state = 'pending' AND d.next_attempt_at <= $1 ORDER BY d.next_attempt_at, d.seq LIMIT $2",
                )
                .bind(Ts(now))
                .bind(limit)
                .fetch_all(self.reader())
                .await?;
                if rows.is_empty() {
                    return Ok(Vec::new());
                }
                let mut tx = self.write_tx().await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    let (endpoint_id, seq): (i64, i64) = (r.try_get("endpoint_id")?, r.try_get("seq")?);
                    let due: Ts = r.try_get("due")?;
                    // Another worker that claimed it first moved `next_attempt_at`: this one skips it.
                    let claimed = sqlx::query(
                        "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = $1 \
                         WHERE endpoint_id = $2 AND seq = $3 AND state = 'pending' AND next_attempt_at = $4",
                    )
                    .bind(Ts(lease_until))
                    .bind(endpoint_id)
                    .bind(seq)
                    .bind(due)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if claimed != 1 {
                        continue;
                    }
                    let attempts: i32 = r.try_get("attempts")?;
                    out.push(DueDelivery {
                        endpoint_id,
                        url: r.try_get("url")?,
                        secret_sealed: r.try_get("secret_sealed")?,
                        event: outbox_event_from_row(r)?,
                        attempts: attempts + 1,
                    });
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn finish_delivery(&self, endpoint: i64, seq: i64, result: &AttemptResult) -> StoreResult<()> {
                let mut tx = self.write_tx().await?;
                let delivered = (result.state == DeliveryState::Delivered).then_some(Ts(result.at));
                sqlx::query(
                    "UPDATE webhook_deliveries SET state = $1, next_attempt_at = $2, last_attempt_at = $3, last_status = $4, \
                     last_error = $5, delivered_at = $6 WHERE endpoint_id = $7 AND seq = $8 AND state = 'pending'",
                )
                .bind(enum_text(&result.state)?)
                .bind(result.retry_at.map(Ts))
                .bind(Ts(result.at))
                .bind(result.status)
                .bind(&result.error)
                .bind(delivered)
                .bind(endpoint)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn retry_delivery(&self, endpoint: i64, seq: i64, actor: &Actor) -> StoreResult<bool> {
                let mut tx = self.write_tx().await?;
                let changed = sqlx::query(
                    "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = $1 \
                     WHERE endpoint_id = $2 AND seq = $3 AND state = 'dead'",
                )
                .bind(Ts(actor.at))
                .bind(endpoint)
                .bind(seq)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if changed > 0 {
                    audit(&mut tx, actor, "webhook.retry", None, json!({ "endpoint_id": endpoint, "seq": seq })).await?;
                }
                tx.commit().await?;
                Ok(changed > 0)
            }

            async fn delivery_backlog(&self) -> StoreResult<Vec<DeliveryBacklog>> {
                let rows: Vec<(i64, String, i64, Option<Ts>)> = sqlx::query_as(
                    "SELECT endpoint_id, state, COUNT(*), MIN(next_attempt_at) FROM webhook_deliveries \
                     WHERE state IN ('pending', 'dead') GROUP BY endpoint_id, state ORDER BY endpoint_id",
                )
                .fetch_all(self.reader())
                .await?;
                let mut out: Vec<DeliveryBacklog> = Vec::new();
                for (endpoint_id, state, count, due) in rows {
                    if out.last().is_none_or(|b| b.endpoint_id != endpoint_id) {
                        out.push(DeliveryBacklog { endpoint_id, pending: 0, dead: 0, oldest_due_at: None });
                    }
                    let Some(b) = out.last_mut() else { continue };
                    match delivery_state_from(&state)? {
                        DeliveryState::Pending => {
                            b.pending = count;
                            b.oldest_due_at = due.map(|t| t.0);
                        }
                        DeliveryState::Dead => b.dead = count,
                        DeliveryState::Delivered => {}
                    }
                }
                Ok(out)
            }
        }
    };
}

pub(crate) use outbox_store;
