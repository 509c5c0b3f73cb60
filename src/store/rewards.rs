//! The rewards catalog and redemptions, shared by both backends like `common.rs`. A redemption runs under
//! the member's ledger lock and the reward's lock (taken in sorted order, so never in a cycle), so
//! concurrent redemptions can neither spend the same points twice nor take the same unit of stock twice.

/// Expand the `RewardStore` implementation for `$store` over database `$db`.
macro_rules! rewards_store {
    ($store:ty, $db:ty) => {
        fn reward_from_row(row: &DbRow) -> StoreResult<RewardRecord> {
            let body: Json<serde_json::Value> = row.try_get("body")?;
            Ok(RewardRecord {
                reward: serde_json::from_value(body.0).map_err(|e| StoreError::Corrupt(format!("reward: {e}")))?,
                stock_left: row.try_get("stock_left")?,
                created_at: row.try_get::<Ts, _>("created_at")?.0,
                updated_at: row.try_get::<Ts, _>("updated_at")?.0,
            })
        }

        fn redemption_from_json(v: serde_json::Value) -> StoreResult<Redemption> {
            serde_json::from_value(v).map_err(|e| StoreError::Corrupt(format!("redemption: {e}")))
        }

        async fn reward_row(conn: &mut Conn, id: &str) -> StoreResult<Option<RewardRecord>> {
            let row = sqlx::query("SELECT body, stock_left, created_at, updated_at FROM rewards WHERE reward_id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
            row.as_ref().map(reward_from_row).transpose()
        }

        async fn redemption_by(conn: &mut Conn, member: MemberId, column: &'static str, value: String) -> StoreResult<Option<Redemption>> {
            let sql = format!("SELECT record FROM redemptions WHERE member_id = $1 AND {column} = $2");
            let row: Option<Json<serde_json::Value>> = if column == "redemption_id" {
                let id: i64 = value.parse().unwrap_or(-1);
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(member).bind(id).fetch_optional(&mut *conn).await?
            } else {
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(member).bind(value).fetch_optional(&mut *conn).await?
            };
            row.map(|r| redemption_from_json(r.0)).transpose()
        }

        fn redemption_state(r: &Redemption) -> StoreResult<String> {
            enum_text(&r.state)
        }

        #[async_trait]
        impl RewardStore for $store {
            async fn put_reward(&self, reward: &Reward, actor: &Actor) -> StoreResult<RewardRecord> {
                let mut tx = self.write_tx().await?;
                Self::lock_keys(&mut tx, &[lock_name(&["reward", &reward.id])]).await?;
                let body = serde_json::to_value(reward).map_err(|e| StoreError::Corrupt(format!("reward: {e}")))?;
                let old = reward_row(&mut tx, &reward.id).await?;
                let stock_left = match (&old, reward.stock) {
                    (_, None) => None,
                    (None, Some(s)) => Some(s),
                    (Some(o), Some(s)) => match (o.reward.stock, o.stock_left) {
                        (Some(before), Some(left)) => Some((left + s - before).max(0)),
                        // It was unlimited: the new total is what is left.
                        _ => Some(s),
                    },
                };
                let created_at = old.as_ref().map_or(actor.at, |o| o.created_at);
                sqlx::query(
                    "INSERT INTO rewards (reward_id, body, stock_left, created_at, updated_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (reward_id) DO UPDATE SET body = excluded.body, stock_left = excluded.stock_left, \
                     updated_at = excluded.updated_at",
                )
                .bind(&reward.id)
                .bind(Json(body))
                .bind(stock_left)
                .bind(Ts(created_at))
                .bind(Ts(actor.at))
                .execute(&mut *tx)
                .await?;
                audit(&mut tx, actor, "reward.put", None, json!({ "reward_id": reward.id, "stock_left": stock_left })).await?;
                tx.commit().await?;
                Ok(RewardRecord { reward: reward.clone(), stock_left, created_at, updated_at: actor.at })
            }

            async fn rewards(&self) -> StoreResult<Vec<RewardRecord>> {
                let rows = sqlx::query("SELECT body, stock_left, created_at, updated_at FROM rewards ORDER BY reward_id")
                    .fetch_all(self.reader())
                    .await?;
                rows.iter().map(reward_from_row).collect()
            }

            async fn reward(&self, id: &str) -> StoreResult<Option<RewardRecord>> {
                let mut conn = self.reader().acquire().await?;
                reward_row(&mut conn, id).await
            }

            async fn redeem(&self, member: MemberId, reward_id: &str, key: &str, op: RedeemOp, at: DateTime<Utc>) -> StoreResult<RedeemStored> {
                let mut tx = self.write_tx().await?;
                let mut locks = vec![lock_name(&["ledger", &member.to_string()]), lock_name(&["reward", reward_id])];
                locks.sort();
                Self::lock_keys(&mut tx, &locks).await?;
                if let Some(done) = redemption_by(&mut tx, member, "idem_key", key.to_string()).await? {
                    return Ok(if done.reward_id == reward_id { RedeemStored::Replayed(done) } else { RedeemStored::KeyReused(done) });
                }
                let Some(rec) = reward_row(&mut tx, reward_id).await? else {
                    return Ok(RedeemStored::NoSuchReward);
                };
                let history = load_ledger(&mut tx, member).await?;
                let stored: HashSet<String> = history.iter().map(|e| e.key.clone()).collect();
                let past: Vec<Json<serde_json::Value>> =
                    sqlx::query_scalar("SELECT record FROM redemptions WHERE member_id = $1 AND reward_id = $2 ORDER BY redemption_id")
                        .bind(member)
                        .bind(reward_id)
                        .fetch_all(&mut *tx)
                        .await?;
                let past = past.into_iter().map(|p| redemption_from_json(p.0)).collect::<StoreResult<Vec<_>>>()?;
                let redemption_id = <$store>::next_ids(&mut tx, "redemptions", "redemption_id", 1)
                    .await?
                    .pop()
                    .ok_or_else(|| StoreError::Corrupt("no redemption id".into()))?;
                let flags = open_flags(&mut tx, member).await?;
                let recent = redemptions_since(&mut tx, member, at - $crate::loyalty::risk::lookback()).await?;
                let input = RedeemInput { history, reward: rec.reward, stock_left: rec.stock_left, past, redemption_id, flags, recent };
                let mut write = match op(input) {
                    Ok(w) => w,
                    Err(f) => return Ok(RedeemStored::Failed(f)),
                };
                let fresh: Vec<LedgerEntry> = write.entries.into_iter().filter(|e| !stored.contains(&e.key)).collect();
                append_ledger(&mut tx, member, &fresh).await?;
                // A coupon reward (or prize) is issued in this transaction: no coupon, no redemption.
                if let $crate::loyalty::rewards::Deliver::Coupon { template_id } = &write.redemption.deliver {
                    match coupon_for_redemption(&mut tx, member, template_id, redemption_id, at).await? {
                        Ok(code) => write.redemption.item_ref = Some(code),
                        Err((code, message)) => return Ok(RedeemStored::Failed(RedeemFailure::Coupon { code, message })),
                    }
                }
                if write.redemption.stock_taken > 0 {
                    let taken = sqlx::query("UPDATE rewards SET stock_left = stock_left - $1 WHERE reward_id = $2 AND stock_left >= $1")
                        .bind(write.redemption.stock_taken)
                        .bind(reward_id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if taken != 1 {
                        // The decision saw stock under the reward's lock; anything else is a broken invariant.
                        return Err(StoreError::Corrupt(format!("reward {reward_id}: stock changed under its lock")));
                    }
                }
                let record = serde_json::to_value(&write.redemption).map_err(|e| StoreError::Corrupt(format!("redemption: {e}")))?;
                sqlx::query(
                    "INSERT INTO redemptions (member_id, redemption_id, reward_id, idem_key, state, record, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(member)
                .bind(redemption_id)
                .bind(reward_id)
                .bind(key)
                .bind(redemption_state(&write.redemption)?)
                .bind(Json(record))
                .bind(Ts(at))
                .execute(&mut *tx)
                .await?;
                raise_flags(&mut tx, member, &write.crossings, at).await?;
                emit_notices(&mut tx, &[$crate::notify::reward_redeemed(member, &write.redemption)], at).await?;
                tx.commit().await?;
                Ok(RedeemStored::Created(write.redemption))
            }

            async fn cancel_redemption(&self, member: MemberId, redemption_id: i64, op: CancelOp) -> StoreResult<RedeemStored> {
                let mut tx = self.write_tx().await?;
                // The reward is not known before the record is read: read it, then lock in order and read again.
                let Some(first) = redemption_by(&mut tx, member, "redemption_id", redemption_id.to_string()).await? else {
                    return Ok(RedeemStored::NoSuchRedemption);
                };
                let mut locks = vec![lock_name(&["ledger", &member.to_string()]), lock_name(&["reward", &first.reward_id])];
                locks.sort();
                Self::lock_keys(&mut tx, &locks).await?;
                let Some(redemption) = redemption_by(&mut tx, member, "redemption_id", redemption_id.to_string()).await? else {
                    return Ok(RedeemStored::NoSuchRedemption);
                };
                let history = load_ledger(&mut tx, member).await?;
                let stored: HashSet<String> = history.iter().map(|e| e.key.clone()).collect();
                let reward_id = redemption.reward_id.clone();
                let write = match op(CancelInput { history, redemption }) {
                    Ok(w) => w,
                    Err(f) => return Ok(RedeemStored::Failed(f)),
                };
                let fresh: Vec<LedgerEntry> = write.entries.into_iter().filter(|e| !stored.contains(&e.key)).collect();
                append_ledger(&mut tx, member, &fresh).await?;
                if write.stock_back > 0 {
                    sqlx::query("UPDATE rewards SET stock_left = stock_left + $1 WHERE reward_id = $2 AND stock_left IS NOT NULL")
                        .bind(write.stock_back)
                        .bind(&reward_id)
                        .execute(&mut *tx)
                        .await?;
                }
                let record = serde_json::to_value(&write.redemption).map_err(|e| StoreError::Corrupt(format!("redemption: {e}")))?;
                sqlx::query("UPDATE redemptions SET state = $1, record = $2 WHERE member_id = $3 AND redemption_id = $4")
                    .bind(redemption_state(&write.redemption)?)
                    .bind(Json(record))
                    .bind(member)
                    .bind(redemption_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(RedeemStored::Created(write.redemption))
            }

            async fn member_redemptions(&self, member: MemberId) -> StoreResult<Vec<Redemption>> {
                let rows: Vec<Json<serde_json::Value>> =
                    sqlx::query_scalar("SELECT record FROM redemptions WHERE member_id = $1 ORDER BY redemption_id DESC")
                        .bind(member)
                        .fetch_all(self.reader())
                        .await?;
                rows.into_iter().map(|r| redemption_from_json(r.0)).collect()
            }
        }
    };
}

pub(crate) use rewards_store;
