//! Risk control's storage, shared by both backends like `common.rs`: the policy (a setting), the flags, and
//! the helpers `ledger_apply` and `redeem` use to raise flags inside their own transactions, so a flag is
//! never lost to a crash between the write and the flag.
//!
//! Expanded inside the same module as `shared_store!` (uses `audit`, `lock_name`, `redemption_from_json`).

/// Expand the `RiskStore` implementation for `$store` over database `$db`.
macro_rules! risk_store {
    ($store:ty, $db:ty) => {
        const FLAG_COLUMNS: &str = "flag_id, member_id, rule, detail, raised_at, cleared_at, cleared_by, note";

        fn flag_from_row(row: &DbRow) -> StoreResult<RiskFlagRecord> {
            Ok(RiskFlagRecord {
                id: row.try_get("flag_id")?,
                member_id: row.try_get("member_id")?,
                flag: RiskFlag {
                    rule: row.try_get("rule")?,
                    detail: row.try_get("detail")?,
                    flagged_at: row.try_get::<Ts, _>("raised_at")?.0,
                    cleared_at: row.try_get::<Option<Ts>, _>("cleared_at")?.map(|t| t.0),
                    cleared_by: row.try_get("cleared_by")?,
                    note: row.try_get("note")?,
                },
            })
        }

        /// A member's open flags (blocking redemptions), oldest first.
        async fn open_flags(conn: &mut Conn, member: MemberId) -> StoreResult<Vec<RiskFlag>> {
            let sql = format!("SELECT {FLAG_COLUMNS} FROM risk_flags WHERE member_id = $1 AND cleared_at IS NULL ORDER BY flag_id");
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(member).fetch_all(&mut *conn).await?;
            rows.iter().map(|r| flag_from_row(r).map(|f| f.flag)).collect()
        }

        /// A member's redemptions of any reward since `since`, oldest first.
        async fn redemptions_since(conn: &mut Conn, member: MemberId, since: DateTime<Utc>) -> StoreResult<Vec<Redemption>> {
            let rows: Vec<Json<serde_json::Value>> =
                sqlx::query_scalar("SELECT record FROM redemptions WHERE member_id = $1 AND created_at > $2 ORDER BY redemption_id")
                    .bind(member)
                    .bind(Ts(since))
                    .fetch_all(&mut *conn)
                    .await?;
            rows.into_iter().map(|r| redemption_from_json(r.0)).collect()
        }

        /// Flag `member` for each crossed rule without an open flag, audited, in the caller's transaction
        /// (which holds the member's ledger lock).
        async fn raise_flags(conn: &mut Conn, member: MemberId, crossings: &[Crossing], at: DateTime<Utc>) -> StoreResult<()> {
            if crossings.is_empty() {
                return Ok(());
            }
            let open = open_flags(conn, member).await?;
            let new = $crate::loyalty::risk::new_flags(crossings, &open, at);
            let ids = <$store>::next_ids(conn, "risk_flags", "flag_id", new.len()).await?;
            let actor = Actor { id: "risk".into(), at };
            for (flag, id) in new.iter().zip(ids) {
                sqlx::query(
                    "INSERT INTO risk_flags (member_id, flag_id, rule, detail, raised_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(member)
                .bind(id)
                .bind(&flag.rule)
                .bind(&flag.detail)
                .bind(Ts(flag.flagged_at))
                .execute(&mut *conn)
                .await?;
                audit(conn, &actor, "risk.flag", Some(member), json!({ "flag_id": id, "rule": flag.rule, "detail": flag.detail }))
                    .await?;
            }
            Ok(())
        }

        #[async_trait]
        impl RiskStore for $store {
            async fn put_risk_policy(&self, key: &str, body: &str, actor: &Actor) -> StoreResult<()> {
                let mut tx = self.write_tx().await?;
                sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
                    .bind(key)
                    .bind(body)
                    .execute(&mut *tx)
                    .await?;
                let policy: serde_json::Value = serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("risk policy: {e}")))?;
                audit(&mut tx, actor, "loyalty.risk_policy", None, json!({ "policy": policy })).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn risk_flags(&self, member: MemberId) -> StoreResult<Vec<RiskFlagRecord>> {
                let sql = format!("SELECT {FLAG_COLUMNS} FROM risk_flags WHERE member_id = $1 ORDER BY flag_id DESC");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(member).fetch_all(self.reader()).await?;
                rows.iter().map(flag_from_row).collect()
            }

            async fn clear_risk_flag(&self, member: MemberId, flag_id: i64, op: ClearOp, actor: &Actor) -> StoreResult<ClearStored> {
                let mut tx = self.write_tx().await?;
                Self::lock_keys(&mut tx, &[lock_name(&["ledger", &member.to_string()])]).await?;
                let sql = format!("SELECT {FLAG_COLUMNS} FROM risk_flags WHERE member_id = $1 AND flag_id = $2");
                let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(member).bind(flag_id).fetch_optional(&mut *tx).await? else {
                    return Ok(ClearStored::NoSuchFlag);
                };
                let stored = flag_from_row(&row)?;
                let cleared = match op(stored.flag.clone()) {
                    Ok(f) => f,
                    Err(r) => return Ok(ClearStored::Refused(r)),
                };
                if stored.flag.is_open() && !cleared.is_open() {
                    sqlx::query("UPDATE risk_flags SET cleared_at = $1, cleared_by = $2, note = $3 WHERE member_id = $4 AND flag_id = $5")
                        .bind(cleared.cleared_at.map(Ts))
                        .bind(&cleared.cleared_by)
                        .bind(&cleared.note)
                        .bind(member)
                        .bind(flag_id)
                        .execute(&mut *tx)
                        .await?;
                    audit(
                        &mut tx,
                        actor,
                        "risk.clear",
                        Some(member),
                        json!({ "flag_id": flag_id, "rule": cleared.rule, "note": cleared.note }),
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(ClearStored::Cleared(RiskFlagRecord { id: flag_id, member_id: member, flag: cleared }))
            }
        }
    };
}

pub(crate) use risk_store;
