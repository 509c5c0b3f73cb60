//! Paid membership cards, shared by both backends like `common.rs`. A purchase runs under the member's card
//! lock, so two purchases of the same plan at once chain their terms instead of overlapping.

/// Expand the `CardStore` implementation for `$store` over database `$db`.
macro_rules! cards_store {
    ($store:ty, $db:ty) => {
        fn card_from_row(row: &DbRow) -> StoreResult<CardRecord> {
            let term: Json<serde_json::Value> = row.try_get("term")?;
            Ok(CardRecord {
                card_id: row.try_get("card_id")?,
                member_id: row.try_get("member_id")?,
                payment_ref: row.try_get("payment_ref")?,
                bought_by: row.try_get("bought_by")?,
                term: serde_json::from_value(term.0).map_err(|e| StoreError::Corrupt(format!("card term: {e}")))?,
            })
        }

        const CARD_COLUMNS: &str = "card_id, member_id, payment_ref, bought_by, term";

        async fn cards_of(conn: &mut Conn, member: MemberId) -> StoreResult<Vec<CardRecord>> {
            let sql = format!("SELECT {CARD_COLUMNS} FROM member_cards WHERE member_id = $1 ORDER BY card_id");
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(member).fetch_all(&mut *conn).await?;
            rows.iter().map(card_from_row).collect()
        }

        /// Several members' card terms, read on `conn`.
        async fn cards_of_members_on(
            conn: &mut Conn,
            members: &[MemberId],
        ) -> StoreResult<std::collections::HashMap<MemberId, Vec<CardTerm>>> {
            let mut out: std::collections::HashMap<MemberId, Vec<CardTerm>> = std::collections::HashMap::new();
            for chunk in members.chunks(500) {
                let mut q = QueryBuilder::<$db>::new(format!("SELECT {CARD_COLUMNS} FROM member_cards WHERE member_id IN ("));
                push_list(&mut q, chunk, |m| *m, ") ORDER BY member_id, card_id");
                for row in q.build().fetch_all(&mut *conn).await? {
                    let c = card_from_row(&row)?;
                    out.entry(c.member_id).or_default().push(c.term);
                }
            }
            Ok(out)
        }

        #[async_trait]
        impl CardStore for $store {
            async fn buy_card(&self, purchase: &CardPurchase, op: CardOp) -> StoreResult<CardStored> {
                let mut tx = self.write_tx().await?;
                let member = purchase.member_id;
                Self::lock_keys(&mut tx, &[lock_name(&["cards", &member.to_string()])]).await?;
                let known: Option<i64> =
                    sqlx::query_scalar("SELECT card_id FROM member_cards WHERE member_id = $1 AND idem_key = $2")
                        .bind(member)
                        .bind(&purchase.key)
                        .fetch_optional(&mut *tx)
                        .await?;
                let cards = cards_of(&mut tx, member).await?;
                if let Some(id) = known {
                    let done = cards
                        .into_iter()
                        .find(|c| c.card_id == id)
                        .ok_or_else(|| StoreError::Corrupt(format!("card {id} vanished")))?;
                    return Ok(if done.term.plan == purchase.plan && done.payment_ref == purchase.payment_ref {
                        CardStored::Replayed(done)
                    } else {
                        CardStored::KeyReused(done)
                    });
                }
                let terms: Vec<CardTerm> = cards.into_iter().map(|c| c.term).collect();
                let term = match op(&terms) {
                    Ok(t) => t,
                    Err(e) => return Ok(CardStored::Refused(e)),
                };
                let body = serde_json::to_value(&term).map_err(|e| StoreError::Corrupt(format!("card term: {e}")))?;
                let card_id: i64 = sqlx::query_scalar(
                    "INSERT INTO member_cards (member_id, plan, idem_key, payment_ref, bought_at, starts_at, ends_at, \
                     term, bought_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING card_id",
                )
                .bind(member)
                .bind(&term.plan)
                .bind(&purchase.key)
                .bind(&purchase.payment_ref)
                .bind(Ts(term.bought_at))
                .bind(Ts(term.starts_at))
                .bind(Ts(term.ends_at))
                .bind(Json(body))
                .bind(&purchase.actor.id)
                .fetch_one(&mut *tx)
                .await?;
                let detail = serde_json::json!({
                    "card_id": card_id, "plan": term.plan, "price": term.price,
                    "starts_at": term.starts_at, "ends_at": term.ends_at,
                });
                audit(&mut tx, &purchase.actor, "member.card", Some(member), detail).await?;
                tx.commit().await?;
                Ok(CardStored::Bought(CardRecord {
                    card_id,
                    member_id: member,
                    payment_ref: purchase.payment_ref.clone(),
                    bought_by: purchase.actor.id.clone(),
                    term,
                }))
            }

            async fn member_cards(&self, member: MemberId) -> StoreResult<Vec<CardRecord>> {
                let mut conn = self.reader().acquire().await?;
                cards_of(&mut conn, member).await
            }

            async fn cards_of_members(
                &self,
                members: &[MemberId],
            ) -> StoreResult<std::collections::HashMap<MemberId, Vec<CardTerm>>> {
                let mut conn = self.reader().acquire().await?;
                cards_of_members_on(&mut conn, members).await
            }
        }
    };
}

pub(crate) use cards_store;
