//! Coupon templates and issued coupons, shared by both backends like `common.rs`. Issuing runs under the
//! template's lock, so the per-member limit and the total quantity are judged on what is stored even with
//! many concurrent issuers; a coupon's transitions run under the coupon's lock. Codes are unique by the
//! table's primary key: an insert that collides writes nothing and the code is redrawn.
//!
//! Expanded inside the same module as `shared_store!`, so it uses that expansion's helpers (`audit`,
//! `lock_name`, `Conn`, …). `coupon_for_redemption` is called by `rewards_store!`'s redeem.

/// Expand the `CouponStore` implementation for `$store` over database `$db`.
macro_rules! coupons_store {
    ($store:ty, $db:ty) => {
        use $crate::loyalty::coupons::{self as coupon_kernel, CouponState, IssueError, Recipient};

        fn template_from_row(row: &DbRow) -> StoreResult<CouponTemplateRecord> {
            let body: Json<serde_json::Value> = row.try_get("body")?;
            Ok(CouponTemplateRecord {
                template: serde_json::from_value(body.0)
                    .map_err(|e| StoreError::Corrupt(format!("coupon template: {e}")))?,
                issued: row.try_get("issued")?,
                created_at: row.try_get::<Ts, _>("created_at")?.0,
                updated_at: row.try_get::<Ts, _>("updated_at")?.0,
            })
        }

        fn coupon_from_json(v: serde_json::Value) -> StoreResult<Coupon> {
            serde_json::from_value(v).map_err(|e| StoreError::Corrupt(format!("coupon: {e}")))
        }

        fn issue_result_json(r: &IssueResult) -> StoreResult<serde_json::Value> {
            serde_json::to_value(r).map_err(|e| StoreError::Corrupt(format!("issue result: {e}")))
        }

        async fn template_row(conn: &mut Conn, id: &str) -> StoreResult<Option<CouponTemplateRecord>> {
            let row = sqlx::query("SELECT body, issued, created_at, updated_at FROM coupon_templates WHERE template_id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
            row.as_ref().map(template_from_row).transpose()
        }

        async fn coupon_row(conn: &mut Conn, code: &str) -> StoreResult<Option<Coupon>> {
            let row: Option<Json<serde_json::Value>> = sqlx::query_scalar("SELECT record FROM coupons WHERE code = $1")
                .bind(code)
                .fetch_optional(&mut *conn)
                .await?;
            row.map(|r| coupon_from_json(r.0)).transpose()
        }

        /// The order a redeemed coupon names, for the `order_id` column (refunds find coupons by it).
        fn coupon_order(c: &Coupon) -> (Option<i64>, Option<Ts>) {
            match &c.state {
                CouponState::Redeemed { order_ref, at } => (order_ref.parse().ok(), Some(Ts(*at))),
                _ => (None, None),
            }
        }

        async fn write_coupon(conn: &mut Conn, c: &Coupon, at: DateTime<Utc>) -> StoreResult<()> {
            let record = serde_json::to_value(c).map_err(|e| StoreError::Corrupt(format!("coupon: {e}")))?;
            let (order_id, redeemed_at) = coupon_order(c);
            sqlx::query("UPDATE coupons SET state = $1, order_id = $2, redeemed_at = $3, record = $4, updated_at = $5 WHERE code = $6")
                .bind(c.state.name())
                .bind(order_id)
                .bind(redeemed_at)
                .bind(Json(record))
                .bind(Ts(at))
                .bind(&c.code)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        fn issue_refusal(index: usize, member_id: MemberId, e: &IssueError) -> IssueRefusal {
            let code = match e {
                IssueError::Invalid(i) => i.code,
                IssueError::LimitReached { .. } => "limit_reached",
                IssueError::SoldOut { .. } => "sold_out",
                IssueError::WindowClosed { .. } => "window_closed",
            };
            IssueRefusal { index, member_id, code: code.to_string(), message: e.to_string() }
        }

        /// Issue in the caller's transaction (see `CouponStore::issue_coupons`); takes the template's lock.
        async fn issue_in(
            conn: &mut Conn,
            template_id: &str,
            members: &[MemberId],
            key: &str,
            digest: &str,
            at: DateTime<Utc>,
            actor: Option<&Actor>,
        ) -> StoreResult<IssueStored> {
            <$store>::lock_keys(&mut *conn, &[lock_name(&["coupon_template", template_id])]).await?;
            let done: Option<(String, Json<serde_json::Value>)> = sqlx::query_as(
                "SELECT request_digest, result FROM coupon_issues WHERE template_id = $1 AND issue_key = $2",
            )
            .bind(template_id)
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some((stored_digest, result)) = done {
                if stored_digest != digest {
                    return Ok(IssueStored::KeyReused);
                }
                let r: IssueResult =
                    serde_json::from_value(result.0).map_err(|e| StoreError::Corrupt(format!("issue result: {e}")))?;
                return Ok(IssueStored::Replayed(r));
            }
            let Some(rec) = template_row(&mut *conn, template_id).await? else {
                return Ok(IssueStored::NoSuchTemplate);
            };
            let mut distinct: Vec<MemberId> = members.to_vec();
            distinct.sort_unstable();
            distinct.dedup();
            let mut held: HashMap<MemberId, i64> = HashMap::new();
            for chunk in distinct.chunks(500) {
                let mut q = QueryBuilder::<$db>::new("SELECT member_id, COUNT(*) FROM coupons WHERE template_id = ");
                q.push_bind(template_id.to_string()).push(" AND member_id IN (");
                push_list(&mut q, chunk, |m| *m, ") GROUP BY member_id");
                let rows: Vec<(MemberId, i64)> = q.build_query_as().fetch_all(&mut *conn).await?;
                held.extend(rows);
            }
            let recipients: Vec<Recipient> = members
                .iter()
                .map(|&m| Recipient {
                    member_id: m,
                    held: u32::try_from(held.get(&m).copied().unwrap_or(0)).unwrap_or(u32::MAX),
                })
                .collect();
            let issued_so_far = u64::try_from(rec.issued).unwrap_or(0);
            // The generator lives only in this statement: it is not `Send`.
            let bulk = coupon_kernel::issue_bulk(&rec.template, &recipients, issued_so_far, at, &mut rand::rng());
            let mut coupons = Vec::with_capacity(bulk.coupons.len());
            for mut c in bulk.coupons {
                loop {
                    let record = serde_json::to_value(&c).map_err(|e| StoreError::Corrupt(format!("coupon: {e}")))?;
                    let inserted = sqlx::query(
                        "INSERT INTO coupons (code, template_id, member_id, state, valid_from, valid_until, issue_key, record, \
                         issued_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (code) DO NOTHING",
                    )
                    .bind(&c.code)
                    .bind(&c.template_id)
                    .bind(c.member_id)
                    .bind(c.state.name())
                    .bind(Ts(c.valid_from))
                    .bind(Ts(c.valid_until))
                    .bind(key)
                    .bind(Json(record))
                    .bind(Ts(at))
                    .bind(Ts(at))
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    if inserted == 1 {
                        break;
                    }
                    // Taken by a coupon of an earlier batch: draw again (the batch itself has unique codes).
                    let fresh = coupon_kernel::generate_code(&mut rand::rng());
                    if !coupons.iter().any(|x: &Coupon| x.code == fresh) {
                        c.code = fresh;
                    }
                }
                coupons.push(c);
            }
            if !coupons.is_empty() {
                sqlx::query("UPDATE coupon_templates SET issued = issued + $1 WHERE template_id = $2")
                    .bind(coupons.len() as i64)
                    .bind(template_id)
                    .execute(&mut *conn)
                    .await?;
            }
            let refused = bulk.refused.iter().map(|(i, m, e)| issue_refusal(*i, *m, e)).collect();
            let result = IssueResult { coupons, refused };
            sqlx::query(
                "INSERT INTO coupon_issues (template_id, issue_key, request_digest, result, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(template_id)
            .bind(key)
            .bind(digest)
            .bind(Json(issue_result_json(&result)?))
            .bind(Ts(at))
            .execute(&mut *conn)
            .await?;
            if let Some(actor) = actor {
                let codes: Vec<&str> = result.coupons.iter().map(|c| c.code.as_str()).collect();
                let detail = json!({ "template_id": template_id, "key": key, "issued": codes, "refused": result.refused.len() });
                let member = if members.len() == 1 { Some(members[0]) } else { None };
                audit(&mut *conn, actor, "coupon.issue", member, detail).await?;
            }
            Ok(IssueStored::Created(result))
        }

        /// Issue the coupon a redemption delivers, in the redemption's transaction, keyed by the redemption
        /// (so it is issued once). Returns the code, or the refusal's code and message.
        async fn coupon_for_redemption(
            conn: &mut Conn,
            member: MemberId,
            template_id: &str,
            redemption_id: i64,
            at: DateTime<Utc>,
        ) -> StoreResult<Result<String, (String, String)>> {
            let key = format!("redemption:{member}:{redemption_id}");
            let result = match issue_in(conn, template_id, &[member], &key, &key, at, None).await? {
                IssueStored::Created(r) | IssueStored::Replayed(r) => r,
                IssueStored::KeyReused => {
                    return Ok(Err(("idempotency_key_reused".into(), format!("coupon issue key {key} was reused"))));
                }
                IssueStored::NoSuchTemplate => {
                    return Ok(Err((
                        "coupon_template_not_found".into(),
                        format!("the reward's coupon template `{template_id}` does not exist"),
                    )));
                }
            };
            if let Some(c) = result.coupons.first() {
                return Ok(Ok(c.code.clone()));
            }
            Ok(Err(result
                .refused
                .first()
                .map(|r| (r.code.clone(), r.message.clone()))
                .unwrap_or_else(|| ("not_issued".into(), "no coupon was issued".into()))))
        }

        #[async_trait]
        impl CouponStore for $store {
            async fn put_coupon_template(&self, template: &CouponTemplate, actor: &Actor) -> StoreResult<CouponTemplateRecord> {
                let mut tx = self.write_tx().await?;
                Self::lock_keys(&mut tx, &[lock_name(&["coupon_template", &template.id])]).await?;
                let body = serde_json::to_value(template).map_err(|e| StoreError::Corrupt(format!("coupon template: {e}")))?;
                let old = template_row(&mut tx, &template.id).await?;
                let created_at = old.as_ref().map_or(actor.at, |o| o.created_at);
                let issued = old.as_ref().map_or(0, |o| o.issued);
                sqlx::query(
                    "INSERT INTO coupon_templates (template_id, body, issued, created_at, updated_at) VALUES ($1, $2, 0, $3, $4) \
                     ON CONFLICT (template_id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
                )
                .bind(&template.id)
                .bind(Json(body.clone()))
                .bind(Ts(created_at))
                .bind(Ts(actor.at))
                .execute(&mut *tx)
                .await?;
                audit(&mut tx, actor, "coupon_template.put", None, json!({ "template_id": template.id, "body": body })).await?;
                tx.commit().await?;
                Ok(CouponTemplateRecord { template: template.clone(), issued, created_at, updated_at: actor.at })
            }

            async fn coupon_templates(&self) -> StoreResult<Vec<CouponTemplateRecord>> {
                let rows = sqlx::query("SELECT body, issued, created_at, updated_at FROM coupon_templates ORDER BY template_id")
                    .fetch_all(self.reader())
                    .await?;
                rows.iter().map(template_from_row).collect()
            }

            async fn coupon_template(&self, id: &str) -> StoreResult<Option<CouponTemplateRecord>> {
                let mut conn = self.reader().acquire().await?;
                template_row(&mut conn, id).await
            }

            async fn issue_coupons(
                &self,
                template_id: &str,
                members: &[MemberId],
                key: &str,
                digest: &str,
                at: DateTime<Utc>,
                actor: Option<&Actor>,
            ) -> StoreResult<IssueStored> {
                let mut tx = self.write_tx().await?;
                let out = issue_in(&mut tx, template_id, members, key, digest, at, actor).await?;
                if matches!(out, IssueStored::Created(_)) {
                    tx.commit().await?;
                }
                Ok(out)
            }

            async fn coupon(&self, code: &str) -> StoreResult<Option<Coupon>> {
                let mut conn = self.reader().acquire().await?;
                coupon_row(&mut conn, code).await
            }

            async fn member_coupons(&self, member: MemberId) -> StoreResult<Vec<Coupon>> {
                let rows: Vec<Json<serde_json::Value>> =
                    sqlx::query_scalar("SELECT record FROM coupons WHERE member_id = $1 ORDER BY issued_at DESC, code")
                        .bind(member)
                        .fetch_all(self.reader())
                        .await?;
                rows.into_iter().map(|r| coupon_from_json(r.0)).collect()
            }

            async fn update_coupon(
                &self,
                code: &str,
                op: CouponOp,
                at: DateTime<Utc>,
                actor: Option<&Actor>,
            ) -> StoreResult<Option<Result<Coupon, CouponRefusal>>> {
                let mut tx = self.write_tx().await?;
                Self::lock_keys(&mut tx, &[lock_name(&["coupon", code])]).await?;
                let Some(before) = coupon_row(&mut tx, code).await? else {
                    return Ok(None);
                };
                let after = match op(before.clone()) {
                    Ok(c) => c,
                    Err(e) => return Ok(Some(Err(e))),
                };
                if after != before {
                    write_coupon(&mut tx, &after, at).await?;
                    if let Some(actor) = actor {
                        let detail = json!({ "code": code, "from": before.state.name(), "to": after.state.name() });
                        audit(&mut tx, actor, "coupon.update", Some(after.member_id), detail).await?;
                    }
                    tx.commit().await?;
                }
                Ok(Some(Ok(after)))
            }

            async fn refund_coupons(&self, order_id: i64, op: RefundCouponOp, at: DateTime<Utc>) -> StoreResult<Vec<Coupon>> {
                let mut tx = self.write_tx().await?;
                let mut codes: Vec<String> = sqlx::query_scalar("SELECT code FROM coupons WHERE order_id = $1")
                    .bind(order_id)
                    .fetch_all(&mut *tx)
                    .await?;
                if codes.is_empty() {
                    return Ok(Vec::new());
                }
                codes.sort();
                let mut locks: Vec<String> = codes.iter().map(|c| lock_name(&["coupon", c])).collect();
                locks.sort();
                Self::lock_keys(&mut tx, &locks).await?;
                // Every line's units against all its refunds: the order is wholly refunded when none remain.
                let lines: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT l.quantity, CAST(COALESCE((SELECT SUM(r.quantity) FROM refund_lines r \
                     WHERE r.order_id = l.order_id AND r.line_no = l.line_no), 0) AS BIGINT) FROM order_lines l WHERE l.order_id = $1",
                )
                .bind(order_id)
                .fetch_all(&mut *tx)
                .await?;
                let whole = !lines.is_empty() && lines.iter().all(|(q, refunded)| refunded >= q);
                let extent = if whole { RefundExtent::Whole } else { RefundExtent::Partial };
                let mut changed = Vec::new();
                for code in &codes {
                    let Some(before) = coupon_row(&mut tx, code).await? else { continue };
                    let after = op(&before, extent);
                    if after != before {
                        write_coupon(&mut tx, &after, at).await?;
                        changed.push(after);
                    }
                }
                tx.commit().await?;
                Ok(changed)
            }

            async fn sweep_coupons(&self, now: DateTime<Utc>, remind_until: DateTime<Utc>, limit: i64) -> StoreResult<CouponSweep> {
                let mut tx = self.write_tx().await?;
                let mut codes: Vec<String> = sqlx::query_scalar(
                    "SELECT code FROM coupons WHERE state = 'available' AND valid_until <= $1 ORDER BY valid_until, code LIMIT $2",
                )
                .bind(Ts(now))
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                let full = i64::try_from(codes.len()).unwrap_or(i64::MAX) >= limit;
                codes.sort();
                let mut locks: Vec<String> = codes.iter().map(|c| lock_name(&["coupon", c])).collect();
                locks.sort();
                Self::lock_keys(&mut tx, &locks).await?;
                let mut notices = Vec::new();
                let mut sweep = CouponSweep::default();
                for code in &codes {
                    let Some(before) = coupon_row(&mut tx, code).await? else { continue };
                    let after = coupon_kernel::expire(&before, now);
                    if after != before {
                        write_coupon(&mut tx, &after, now).await?;
                        notices.push($crate::notify::coupon_expired(&after));
                        sweep.expired += 1;
                    }
                }
                let due: Vec<Json<serde_json::Value>> = sqlx::query_scalar(
                    "SELECT record FROM coupons WHERE state = 'available' AND expiry_warned_at IS NULL \
                     AND valid_until > $1 AND valid_until <= $2 ORDER BY valid_until, code LIMIT $3",
                )
                .bind(Ts(now))
                .bind(Ts(remind_until))
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                let reminded = due.into_iter().map(|r| coupon_from_json(r.0)).collect::<StoreResult<Vec<Coupon>>>()?;
                if !reminded.is_empty() {
                    let mut q = QueryBuilder::<$db>::new("UPDATE coupons SET expiry_warned_at = ");
                    q.push_bind(Ts(now)).push(" WHERE code IN (");
                    push_list(&mut q, &reminded, |c| c.code.clone(), ")");
                    q.build().execute(&mut *tx).await?;
                }
                sweep.reminded = reminded.len() as u64;
                sweep.more = full || i64::try_from(reminded.len()).unwrap_or(i64::MAX) >= limit;
                notices.extend(reminded.iter().map(|c| $crate::notify::coupon_expiring(c, now)));
                emit_notices(&mut tx, &notices, now).await?;
                tx.commit().await?;
                Ok(sweep)
            }
        }
    };
}

pub(crate) use coupons_store;
