//! The part of the store that is the same SQL on both databases, written once.
//!
//! Both databases accept `$N` placeholders, `ON CONFLICT`, and `RETURNING`, so nearly every statement is
//! shared. A macro (rather than generic code over `sqlx::Database`) instantiates it for each backend: the
//! generic form needs higher-ranked bounds for every bound type and executor, which obscure the SQL that
//! matters. Each backend supplies only what truly differs, as inherent methods:
//! `reader()`, `write_tx()`, `lock_keys()` (row-free locking of natural keys) and `migrate_impl()`.

/// Expand the shared `Store` implementation for `$store` over database `$db`.
macro_rules! shared_store {
    ($store:ty, $db:ty) => {
        use std::collections::{HashMap, HashSet};

        use async_trait::async_trait;
        use chrono::{DateTime, NaiveDate, Utc};
        use serde_json::json;
        use sqlx::types::Json;
        use sqlx::{QueryBuilder, Row};

        use $crate::commerce::{
            Channel, ChannelKind, LineKind, OrderLine, OrderStatus, OrderView, RefundDraft, RefundInput, RefundLine,
            RefundView, Sku, StoreLocation,
        };
        use $crate::error::Invalid;
        use $crate::events::EventView;
        use $crate::members::{Consent, Gender, MemberId, MemberStatus};
        use $crate::security::{ApiKey, AuditEntry, Role};
        use $crate::store::ts::Ts;
        use $crate::store::*;

        type Conn = <$db as sqlx::Database>::Connection;
        type DbRow = <$db as sqlx::Database>::Row;

        const MEMBER_COLUMNS: &str = "member_id, status, name_sealed, gender, birthday, city, country, registered_at, \
             registration_channel, consent_sms, consent_email, consent_wechat, consent_push, merged_into, created_at, updated_at";

        /// Bind `items` (mapped by `bind`) as the comma-separated list of an `IN (` the caller's query opened,
        /// then push `close`. Every batched read and delete in the store builds its list this way; callers
        /// chunk the items (1,000 a statement keeps under both databases' bind limits).
        fn push_list<'q, I, T>(
            q: &'q mut QueryBuilder<$db>,
            items: impl IntoIterator<Item = I>,
            bind: impl Fn(I) -> T,
            close: &str,
        ) -> &'q mut QueryBuilder<$db>
        where
            T: for<'t> sqlx::Encode<'t, $db> + sqlx::Type<$db>,
        {
            let mut sep = q.separated(", ");
            for item in items {
                sep.push_bind(bind(item));
            }
            q.push(close)
        }

        fn corrupt(what: &str, v: &str) -> StoreError {
            StoreError::Corrupt(format!("unexpected {what} `{v}`"))
        }

        fn member_from_row(row: &DbRow) -> StoreResult<MemberRecord> {
            let status: String = row.try_get("status")?;
            let gender: Option<String> = row.try_get("gender")?;
            let birthday: Option<String> = row.try_get("birthday")?;
            Ok(MemberRecord {
                id: row.try_get("member_id")?,
                status: MemberStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
                name_sealed: row.try_get("name_sealed")?,
                gender: match gender {
                    Some(g) => Some(Gender::parse(&g).ok_or_else(|| corrupt("gender", &g))?),
                    None => None,
                },
                birthday: match birthday {
                    Some(b) => Some(NaiveDate::parse_from_str(&b, "%Y-%m-%d").map_err(|_| corrupt("birthday", &b))?),
                    None => None,
                },
                city: row.try_get("city")?,
                country: row.try_get("country")?,
                registered_at: row.try_get::<Ts, _>("registered_at")?.0,
                registration_channel: row.try_get("registration_channel")?,
                consent: Consent {
                    sms: row.try_get("consent_sms")?,
                    email: row.try_get("consent_email")?,
                    wechat: row.try_get("consent_wechat")?,
                    push: row.try_get("consent_push")?,
                },
                merged_into: row.try_get("merged_into")?,
                created_at: row.try_get::<Ts, _>("created_at")?.0,
                updated_at: row.try_get::<Ts, _>("updated_at")?.0,
                identities: Vec::new(),
            })
        }

        fn identity_from_row(row: &DbRow) -> StoreResult<(MemberId, IdentityRecord)> {
            Ok((
                row.try_get("member_id")?,
                IdentityRecord {
                    kind: row.try_get("kind")?,
                    key: row.try_get("id_key")?,
                    sealed: row.try_get("sealed")?,
                    linked_at: row.try_get::<Ts, _>("linked_at")?.0,
                },
            ))
        }

        fn birthday_text(d: Option<NaiveDate>) -> Option<String> {
            d.map(|d| d.format("%Y-%m-%d").to_string())
        }

        fn opt_member(id: MemberId) -> Option<MemberId> {
            (id != 0).then_some(id)
        }

        /// The lock name of a natural key or entity, for `lock_keys`.
        fn lock_name(parts: &[&str]) -> String {
            parts.join("\u{1f}")
        }

        async fn audit(conn: &mut Conn, actor: &Actor, action: &str, member: Option<MemberId>, detail: serde_json::Value) -> StoreResult<()> {
            sqlx::query("INSERT INTO audit_log (at, actor, action, member_id, detail) VALUES ($1, $2, $3, $4, $5)")
                .bind(Ts(actor.at))
                .bind(&actor.id)
                .bind(action)
                .bind(member)
                .bind(Json(detail))
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        async fn load_identities(conn: &mut Conn, members: &mut [MemberRecord]) -> StoreResult<()> {
            if members.is_empty() {
                return Ok(());
            }
            let mut q = QueryBuilder::<$db>::new("SELECT member_id, kind, id_key, sealed, linked_at FROM identities WHERE member_id IN (");
            push_list(&mut q, members.iter(), |m| m.id, ") ORDER BY linked_at, kind, id_key");
            let rows = q.build().fetch_all(&mut *conn).await?;
            let mut by_member: HashMap<MemberId, Vec<IdentityRecord>> = HashMap::new();
            for row in &rows {
                let (id, rec) = identity_from_row(row)?;
                by_member.entry(id).or_default().push(rec);
            }
            for m in members.iter_mut() {
                m.identities = by_member.remove(&m.id).unwrap_or_default();
            }
            Ok(())
        }

        async fn member_row(conn: &mut Conn, id: MemberId) -> StoreResult<Option<MemberRecord>> {
            let sql = format!("SELECT {MEMBER_COLUMNS} FROM members WHERE member_id = $1");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut *conn).await?;
            row.as_ref().map(member_from_row).transpose()
        }

        async fn owner_of(conn: &mut Conn, kind: &str, key: &str) -> StoreResult<Option<MemberId>> {
            Ok(sqlx::query_scalar("SELECT member_id FROM identities WHERE kind = $1 AND id_key = $2")
                .bind(kind)
                .bind(key)
                .fetch_optional(&mut *conn)
                .await?)
        }

        async fn insert_identity(conn: &mut Conn, member: MemberId, id: &IdentityRecord) -> StoreResult<bool> {
            let r = sqlx::query(
                "INSERT INTO identities (kind, id_key, member_id, sealed, linked_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&id.kind)
            .bind(&id.key)
            .bind(member)
            .bind(id.sealed.as_deref())
            .bind(Ts(id.linked_at))
            .execute(&mut *conn)
            .await?;
            Ok(r.rows_affected() == 1)
        }

        /// New members from upserts, set-based: ids allocated up front, then multi-row inserts of members,
        /// identities and audit entries. Identities must be free (the caller holds their locks).
        async fn create_members(conn: &mut Conn, items: &[&MemberUpsert], actor: &Actor) -> StoreResult<Vec<MemberId>> {
            let ids = <$store>::next_ids(conn, "members", "member_id", items.len()).await?;
            let rows: Vec<(MemberId, &MemberUpsert)> = ids.iter().copied().zip(items.iter().copied()).collect();
            // 16 parameters a member, 5 an identity or audit entry: chunks stay under both databases' limits.
            for chunk in rows.chunks(1000) {
                let mut q = QueryBuilder::<$db>::new(
                    "INSERT INTO members (member_id, status, name_sealed, name_digest, gender, birthday, city, country, registered_at, \
                     registration_channel, consent_sms, consent_email, consent_wechat, consent_push, created_at, updated_at) ",
                );
                q.push_values(chunk, |mut b, (id, m)| {
                    let consent = m.consent.apply(Consent::default());
                    b.push_bind(*id)
                        .push_bind("active")
                        .push_bind(m.name.as_ref().map(|n| n.0.clone()))
                        .push_bind(m.name.as_ref().map(|n| n.1.clone()))
                        .push_bind(m.gender.map(Gender::as_str))
                        .push_bind(birthday_text(m.birthday))
                        .push_bind(m.city.clone())
                        .push_bind(m.country.clone())
                        .push_bind(Ts(m.registered_at.unwrap_or(actor.at)))
                        .push_bind(m.registration_channel.clone())
                        .push_bind(consent.sms)
                        .push_bind(consent.email)
                        .push_bind(consent.wechat)
                        .push_bind(consent.push)
                        .push_bind(Ts(actor.at))
                        .push_bind(Ts(actor.at));
                });
                q.build().execute(&mut *conn).await?;
            }
            let idents: Vec<(MemberId, &IdentityRecord)> =
                rows.iter().flat_map(|(id, m)| m.identities.iter().map(move |i| (*id, i))).collect();
            for chunk in idents.chunks(3000) {
                let mut q = QueryBuilder::<$db>::new("INSERT INTO identities (kind, id_key, member_id, sealed, linked_at) ");
                q.push_values(chunk, |mut b, (id, i)| {
                    b.push_bind(i.kind.clone()).push_bind(i.key.clone()).push_bind(*id).push_bind(i.sealed.clone()).push_bind(Ts(i.linked_at));
                });
                q.build().execute(&mut *conn).await?;
            }
            for chunk in rows.chunks(3000) {
                let mut q = QueryBuilder::<$db>::new("INSERT INTO audit_log (at, actor, action, member_id, detail) ");
                q.push_values(chunk, |mut b, (id, m)| {
                    let kinds: Vec<&str> = m.identities.iter().map(|i| i.kind.as_str()).collect();
                    b.push_bind(Ts(actor.at))
                        .push_bind(actor.id.clone())
                        .push_bind("member.create")
                        .push_bind(Some(*id))
                        .push_bind(Json(json!({ "identity_kinds": kinds })));
                });
                q.build().execute(&mut *conn).await?;
            }
            let referred: Vec<(MemberId, MemberId)> =
                rows.iter().filter_map(|(id, m)| m.referred_by.filter(|r| r != id).map(|r| (*id, r))).collect();
            record_referrals(conn, &referred, actor.at).await?;
            // Registration (and a complete profile) may earn: the loyalty engine settles it.
            let tasks: Vec<(MemberId, &str, String)> = ids.iter().map(|id| (*id, "member", id.to_string())).collect();
            enqueue_loyalty(conn, &tasks, actor.at).await?;
            Ok(ids)
        }

        /// Record who referred whom; a member already referred keeps the first referrer. Returns how many
        /// were new.
        async fn record_referrals(conn: &mut Conn, pairs: &[(MemberId, MemberId)], at: DateTime<Utc>) -> StoreResult<u64> {
            let mut n = 0;
            for chunk in pairs.chunks(5000) {
                let mut q = QueryBuilder::<$db>::new("INSERT INTO referrals (member_id, referrer_id, created_at) ");
                q.push_values(chunk, |mut b, (m, r)| {
                    b.push_bind(*m).push_bind(*r).push_bind(Ts(at));
                });
                q.push(" ON CONFLICT (member_id) DO NOTHING");
                n += q.build().execute(&mut *conn).await?.rows_affected();
            }
            Ok(n)
        }

        /// The referrers of these buyers, for queuing the referrer's share of a referral with each order.
        async fn create_member(conn: &mut Conn, m: &MemberUpsert, actor: &Actor) -> StoreResult<MemberId> {
            let ids = create_members(conn, &[m], actor).await?;
            ids.first().copied().ok_or_else(|| StoreError::Corrupt("no id allocated".into()))
        }

        /// Apply an upsert to an existing member; returns the fields that changed.
        async fn update_member(conn: &mut Conn, id: MemberId, m: &MemberUpsert, actor: &Actor) -> StoreResult<Vec<String>> {
            let sql = format!("SELECT {MEMBER_COLUMNS}, name_digest FROM members WHERE member_id = $1");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_one(&mut *conn).await?;
            let cur = member_from_row(&row)?;
            let cur_digest: Option<String> = row.try_get("name_digest")?;
            let mut changed = Vec::new();
            let name_changes = m.name.as_ref().is_some_and(|(_, d)| cur_digest.as_deref() != Some(d.as_str()));
            if name_changes {
                changed.push("name".to_string());
            }
            let gender = m.gender.or(cur.gender);
            let birthday = m.birthday.or(cur.birthday);
            let city = m.city.clone().or(cur.city.clone());
            let country = m.country.clone().or(cur.country.clone());
            let channel = m.registration_channel.clone().or(cur.registration_channel.clone());
            let registered_at = m.registered_at.unwrap_or(cur.registered_at);
            let consent = m.consent.apply(cur.consent);
            for (field, differs) in [
                ("gender", gender != cur.gender),
                ("birthday", birthday != cur.birthday),
                ("city", city != cur.city),
                ("country", country != cur.country),
                ("registration_channel", channel != cur.registration_channel),
                ("registered_at", registered_at != cur.registered_at),
                ("consent", consent != cur.consent),
            ] {
                if differs {
                    changed.push(field.to_string());
                }
            }
            let mut added = 0;
            for ident in &m.identities {
                if owner_of(conn, &ident.kind, &ident.key).await?.is_none() {
                    insert_identity(conn, id, ident).await?;
                    added += 1;
                }
            }
            if added > 0 {
                changed.push("identities".to_string());
            }
            if let Some(r) = m.referred_by.filter(|r| *r != id)
                && record_referrals(conn, &[(id, r)], actor.at).await? == 1
            {
                changed.push("referred_by".to_string());
                audit(conn, actor, "member.referred", Some(id), json!({ "referrer": r })).await?;
            }
            if changed.is_empty() {
                return Ok(changed);
            }
            sqlx::query(
                "UPDATE members SET name_sealed = COALESCE($2, name_sealed), name_digest = COALESCE($3, name_digest), \
                 gender = $4, birthday = $5, city = $6, country = $7, registration_channel = $8, registered_at = $9, \
                 consent_sms = $10, consent_email = $11, consent_wechat = $12, consent_push = $13, updated_at = $14 \
                 WHERE member_id = $1",
            )
            .bind(id)
            .bind(m.name.as_ref().filter(|_| name_changes).map(|n| n.0.as_slice()))
            .bind(m.name.as_ref().filter(|_| name_changes).map(|n| n.1.as_str()))
            .bind(gender.map(Gender::as_str))
            .bind(birthday_text(birthday))
            .bind(city)
            .bind(country)
            .bind(channel)
            .bind(Ts(registered_at))
            .bind(consent.sms)
            .bind(consent.email)
            .bind(consent.wechat)
            .bind(consent.push)
            .bind(Ts(actor.at))
            .execute(&mut *conn)
            .await?;
            audit(conn, actor, "member.update", Some(id), json!({ "fields": changed, "identities_added": added })).await?;
            if !changed.is_empty() {
                // A completed profile may earn.
                enqueue_loyalty(conn, &[(id, "member", id.to_string())], actor.at).await?;
            }
            Ok(changed)
        }

        /// Follow merges to the surviving member; `None` if the id names no member.
        async fn live_member(conn: &mut Conn, id: MemberId) -> StoreResult<Option<MemberId>> {
            let mut id = id;
            for _ in 0..16 {
                let row: Option<(String, Option<MemberId>)> =
                    sqlx::query_as("SELECT status, merged_into FROM members WHERE member_id = $1")
                        .bind(id)
                        .fetch_optional(&mut *conn)
                        .await?;
                match row {
                    None => return Ok(None),
                    Some((_, Some(next))) => id = next,
                    Some(_) => return Ok(Some(id)),
                }
            }
            Err(StoreError::Corrupt(format!("merge chain from member {id} is too long")))
        }

        /// `live_member` of many ids, one query per step along merge chains rather than one per id.
        async fn live_members(conn: &mut Conn, ids: &[MemberId]) -> StoreResult<HashMap<MemberId, Option<MemberId>>> {
            let mut out: HashMap<MemberId, Option<MemberId>> = HashMap::with_capacity(ids.len());
            // (asked, current) pairs still being followed.
            let mut open: Vec<(MemberId, MemberId)> = ids.iter().map(|id| (*id, *id)).collect();
            for _ in 0..16 {
                if open.is_empty() {
                    return Ok(out);
                }
                let mut current: Vec<MemberId> = open.iter().map(|(_, c)| *c).collect();
                current.sort_unstable();
                current.dedup();
                let mut rows: HashMap<MemberId, Option<MemberId>> = HashMap::with_capacity(current.len());
                for chunk in current.chunks(1000) {
                    let mut q = QueryBuilder::<$db>::new("SELECT member_id, merged_into FROM members WHERE member_id IN (");
                    push_list(&mut q, chunk, |m| *m, ")");
                    let found: Vec<(MemberId, Option<MemberId>)> = q.build_query_as().fetch_all(&mut *conn).await?;
                    rows.extend(found);
                }
                let mut next = Vec::new();
                for (asked, cur) in open {
                    match rows.get(&cur) {
                        None => {
                            out.insert(asked, None);
                        }
                        Some(Some(into)) => next.push((asked, *into)),
                        Some(None) => {
                            out.insert(asked, Some(cur));
                        }
                    }
                }
                open = next;
            }
            match open.first() {
                None => Ok(out),
                Some((asked, _)) => Err(StoreError::Corrupt(format!("merge chain from member {asked} is too long"))),
            }
        }

        /// Enrol a member from the first order or event carrying an unknown identity.
        async fn enrol(conn: &mut Conn, ident: &IdentityRecord, channel: &str, at: DateTime<Utc>, actor: &Actor) -> StoreResult<MemberId> {
            let upsert = MemberUpsert {
                identities: vec![ident.clone()],
                name: None,
                gender: None,
                birthday: None,
                city: None,
                country: None,
                registered_at: Some(at),
                registration_channel: Some(channel.to_string()),
                consent: Default::default(),
                referred_by: None,
            };
            create_member(conn, &upsert, actor).await
        }

        async fn natural_key(conn: &mut Conn, kind: &str, channel: &str, reference: &str) -> StoreResult<Option<(i64, Vec<u8>)>> {
            Ok(sqlx::query_as("SELECT entity_id, content_hash FROM natural_keys WHERE kind = $1 AND channel = $2 AND reference = $3")
                .bind(kind)
                .bind(channel)
                .bind(reference)
                .fetch_optional(&mut *conn)
                .await?)
        }

        /// Record natural keys with the digest of what was stored under them. 6 parameters a key.
        async fn write_natural_keys(conn: &mut Conn, kind: &str, keys: &[(&str, &str, MemberId, i64, &[u8])]) -> StoreResult<()> {
            for chunk in keys.chunks(3000) {
                let mut q = QueryBuilder::<$db>::new(
                    "INSERT INTO natural_keys (kind, channel, reference, member_id, entity_id, content_hash) ",
                );
                q.push_values(chunk, |mut b, (channel, reference, member, id, digest)| {
                    b.push_bind(kind.to_string())
                        .push_bind(channel.to_string())
                        .push_bind(reference.to_string())
                        .push_bind(*member)
                        .push_bind(*id)
                        .push_bind(digest.to_vec());
                });
                q.build().execute(&mut *conn).await?;
            }
            Ok(())
        }

        /// Natural keys already stored, one look-up per channel (a single-column IN list is an index scan on
        /// both databases; a row-value IN list is not, on PostgreSQL).
        async fn existing_keys(
            conn: &mut Conn,
            kind: &str,
            keys: &[(&str, &str)],
        ) -> StoreResult<HashMap<(String, String), (i64, Vec<u8>)>> {
            let mut known = HashMap::new();
            let mut by_channel: HashMap<&str, Vec<&str>> = HashMap::new();
            for (channel, reference) in keys {
                by_channel.entry(channel).or_default().push(reference);
            }
            for (channel, refs) in by_channel {
                for chunk in refs.chunks(1000) {
                    let mut q = QueryBuilder::<$db>::new("SELECT reference, entity_id, content_hash FROM natural_keys WHERE kind = ");
                    q.push_bind(kind.to_string()).push(" AND channel = ").push_bind(channel.to_string()).push(" AND reference IN (");
                    push_list(&mut q, chunk, |r| r.to_string(), ")");
                    let rows: Vec<(String, i64, Vec<u8>)> = q.build_query_as().fetch_all(&mut *conn).await?;
                    for (r, id, h) in rows {
                        known.insert((channel.to_string(), r), (id, h));
                    }
                }
            }
            Ok(known)
        }

        fn order_from_row(row: &DbRow) -> StoreResult<OrderView> {
            let status: String = row.try_get("status")?;
            Ok(OrderView {
                id: row.try_get("order_id")?,
                member_id: opt_member(row.try_get("member_id")?),
                channel: row.try_get("channel")?,
                order_no: row.try_get("order_no")?,
                store: row.try_get("store")?,
                status: OrderStatus::parse(&status).ok_or_else(|| corrupt("order status", &status))?,
                placed_at: row.try_get::<Ts, _>("placed_at")?.0,
                paid_at: row.try_get::<Option<Ts>, _>("paid_at")?.map(|t| t.0),
                currency: row.try_get("currency")?,
                lines: Vec::new(),
                subtotal: row.try_get("subtotal")?,
                discount_total: row.try_get("discount_total")?,
                shipping_fee: row.try_get("shipping_fee")?,
                total: row.try_get("total")?,
                coupon_code: row.try_get("coupon_code")?,
                refunded_amount: row.try_get("refunded_amount")?,
                created_at: row.try_get::<Ts, _>("created_at")?.0,
            })
        }

        const ORDER_SELECT: &str = "SELECT o.order_id, o.member_id, o.channel, o.order_no, o.store, o.status, o.placed_at, o.paid_at, \
             o.currency, o.subtotal, o.discount_total, o.shipping_fee, o.total, o.coupon_code, o.created_at, \
             CAST(COALESCE((SELECT SUM(r.amount) FROM refunds r WHERE r.order_id = o.order_id), 0) AS BIGINT) AS refunded_amount FROM orders o";

        async fn order_lines(conn: &mut Conn, order_ids: &[i64]) -> StoreResult<HashMap<i64, Vec<OrderLine>>> {
            let mut out: HashMap<i64, Vec<OrderLine>> = HashMap::new();
            if order_ids.is_empty() {
                return Ok(out);
            }
            let mut q = QueryBuilder::<$db>::new(
                "SELECT order_id, line_no, sku, kind, quantity, unit_price, discount, amount FROM order_lines WHERE order_id IN (",
            );
            push_list(&mut q, order_ids, |id| *id, ") ORDER BY order_id, line_no");
            for row in q.build().fetch_all(&mut *conn).await? {
                let kind: String = row.try_get("kind")?;
                out.entry(row.try_get("order_id")?).or_default().push(OrderLine {
                    line_no: row.try_get("line_no")?,
                    sku: row.try_get("sku")?,
                    kind: LineKind::parse(&kind).ok_or_else(|| corrupt("line kind", &kind))?,
                    quantity: row.try_get("quantity")?,
                    unit_price: row.try_get("unit_price")?,
                    discount: row.try_get("discount")?,
                    amount: row.try_get("amount")?,
                });
            }
            Ok(out)
        }

        async fn orders_with_lines(conn: &mut Conn, rows: Vec<DbRow>) -> StoreResult<Vec<OrderView>> {
            let mut orders = rows.iter().map(order_from_row).collect::<StoreResult<Vec<_>>>()?;
            let ids: Vec<i64> = orders.iter().map(|o| o.id).collect();
            let mut lines = order_lines(conn, &ids).await?;
            for o in &mut orders {
                o.lines = lines.remove(&o.id).unwrap_or_default();
            }
            Ok(orders)
        }

        /// Store planned refunds, set-based: ids up front, multi-row inserts of refunds, lines and natural keys.
        async fn store_refunds(conn: &mut Conn, items: &[(&RefundDraft, &[u8])], at: DateTime<Utc>) -> StoreResult<Vec<i64>> {
            let ids = <$store>::next_ids(conn, "refunds", "refund_id", items.len()).await?;
            let rows: Vec<(i64, &RefundDraft, &[u8])> = ids.iter().zip(items).map(|(id, (d, h))| (*id, *d, *h)).collect();
            // 10 parameters a refund, 8 a line, 6 a key.
            for chunk in rows.chunks(1000) {
                let mut q = QueryBuilder::<$db>::new(
                    "INSERT INTO refunds (refund_id, member_id, channel, refund_no, order_id, refunded_at, shipping_refund, amount, \
                     reason, created_at) ",
                );
                q.push_values(chunk, |mut b, (id, d, _)| {
                    b.push_bind(*id)
                        .push_bind(d.member_id.unwrap_or(0))
                        .push_bind(d.channel.clone())
                        .push_bind(d.refund_no.clone())
                        .push_bind(d.order_id)
                        .push_bind(Ts(d.refunded_at))
                        .push_bind(d.shipping_refund)
                        .push_bind(d.amount)
                        .push_bind(d.reason.clone())
                        .push_bind(Ts(at));
                });
                q.build().execute(&mut *conn).await?;
            }
            let lines: Vec<(i64, MemberId, usize, &RefundLine)> = rows
                .iter()
                .flat_map(|(id, d, _)| d.lines.iter().enumerate().map(move |(n, l)| (*id, d.member_id.unwrap_or(0), n, l)))
                .collect();
            for chunk in lines.chunks(3000) {
                let mut q = QueryBuilder::<$db>::new(
                    "INSERT INTO refund_lines (member_id, refund_id, idx, order_id, line_no, sku, quantity, amount) ",
                );
                q.push_values(chunk, |mut b, (id, member, n, l)| {
                    b.push_bind(*member)
                        .push_bind(*id)
                        .push_bind(*n as i32)
                        .push_bind(l.order_id)
                        .push_bind(l.line_no)
                        .push_bind(l.sku.clone())
                        .push_bind(l.quantity)
                        .push_bind(l.amount);
                });
                q.build().execute(&mut *conn).await?;
            }
            let keys: Vec<(&str, &str, MemberId, i64, &[u8])> =
                rows.iter().map(|(id, d, h)| (d.channel.as_str(), d.refund_no.as_str(), d.member_id.unwrap_or(0), *id, *h)).collect();
            write_natural_keys(conn, "refund", &keys).await?;
            let tasks: Vec<(MemberId, &str, String)> = rows
                .iter()
                .filter(|(_, d, _)| d.order_id.is_some())
                .map(|(id, d, _)| (d.member_id.unwrap_or(0), "refund", id.to_string()))
                .collect();
            enqueue_loyalty(conn, &tasks, at).await?;
            Ok(ids)
        }

        /// Move an anonymous visitor's unlinked events to a member (dropping ones the member already has).
        async fn adopt_anonymous_events(conn: &mut Conn, member: MemberId, anonymous_id: &str) -> StoreResult<u64> {
            sqlx::query(
                "DELETE FROM events WHERE member_id = 0 AND anonymous_id = $2 \
                 AND event_key IN (SELECT event_key FROM events WHERE member_id = $1)",
            )
            .bind(member)
            .bind(anonymous_id)
            .execute(&mut *conn)
            .await?;
            let moved = sqlx::query("UPDATE events SET member_id = $1 WHERE member_id = 0 AND anonymous_id = $2")
                .bind(member)
                .bind(anonymous_id)
                .execute(&mut *conn)
                .await?;
            Ok(moved.rows_affected())
        }

        fn event_from_row(row: &DbRow) -> StoreResult<EventView> {
            Ok(EventView {
                id: row.try_get("event_id")?,
                member_id: opt_member(row.try_get("member_id")?),
                event_type: row.try_get("event_type")?,
                occurred_at: row.try_get::<Ts, _>("occurred_at")?.0,
                anonymous_id: row.try_get("anonymous_id")?,
                session_id: row.try_get("session_id")?,
                channel: row.try_get("channel")?,
                sku: row.try_get("sku")?,
                properties: row.try_get::<Json<serde_json::Value>, _>("properties")?.0,
            })
        }

        fn sku_from_row(row: &DbRow) -> StoreResult<Sku> {
            Ok(Sku {
                sku: row.try_get("sku")?,
                name: row.try_get("name")?,
                category_path: row.try_get("category_path")?,
                brand: row.try_get("brand")?,
                list_price: row.try_get("list_price")?,
                available: row.try_get("available")?,
            })
        }

        /// Insert catalog entries, replacing existing ones unless `only_missing`. 7 parameters a row.
        async fn write_skus(conn: &mut Conn, skus: &[&Sku], only_missing: bool, at: DateTime<Utc>) -> StoreResult<u64> {
            let mut written = 0;
            for chunk in skus.chunks(500) {
                let mut q = QueryBuilder::<$db>::new("INSERT INTO skus (sku, name, category_path, brand, list_price, available, updated_at) ");
                q.push_values(chunk, |mut b, s| {
                    b.push_bind(s.sku.clone())
                        .push_bind(s.name.clone())
                        .push_bind(s.category_path.clone())
                        .push_bind(s.brand.clone())
                        .push_bind(s.list_price)
                        .push_bind(s.available)
                        .push_bind(Ts(at));
                });
                if only_missing {
                    q.push(" ON CONFLICT (sku) DO NOTHING");
                } else {
                    q.push(
                        " ON CONFLICT (sku) DO UPDATE SET name = excluded.name, category_path = excluded.category_path, \
                         brand = excluded.brand, list_price = excluded.list_price, available = excluded.available, \
                         updated_at = excluded.updated_at",
                    );
                }
                written += q.build().execute(&mut *conn).await?.rows_affected();
            }
            Ok(written)
        }

        /// A ledger enum (wallet, kind) as the text serde gives it.
        fn enum_text<T: serde::Serialize>(v: &T) -> StoreResult<String> {
            match serde_json::to_value(v) {
                Ok(serde_json::Value::String(s)) => Ok(s),
                _ => Err(StoreError::Corrupt("a ledger enum is not a string".into())),
            }
        }

        fn enum_from_text<T: serde::de::DeserializeOwned>(what: &str, s: String) -> StoreResult<T> {
            serde_json::from_value(serde_json::Value::String(s.clone())).map_err(|_| corrupt(what, &s))
        }

        /// The loyalty side of a merge, in the merge's transaction: the merged member's points and growth
        /// lots, debt and order-line totals move to the survivor as ledger entries on both sides
        /// ([`ledger::merge`]); its coupons and paid cards, and its queued loyalty work, become the survivor's;
        /// and the survivor is queued for a tier re-evaluation with the growth it gained. Returns what moved.
        async fn merge_loyalty(conn: &mut Conn, into: MemberId, from: MemberId, at: DateTime<Utc>) -> StoreResult<serde_json::Value> {
            use $crate::loyalty::ledger::{self, Config, Ledger, Wallet};
            let mut stored = load_ledgers(conn, &[into, from]).await?;
            // Moving lots needs no program settings: every lot keeps its own dates.
            let mut src = Ledger::from_entries(Config::default(), &stored.remove(&from).unwrap_or_default())
                .map_err(|e| StoreError::Corrupt(format!("ledger of member {from}: {e}")))?;
            let mut dst = Ledger::from_entries(Config::default(), &stored.remove(&into).unwrap_or_default())
                .map_err(|e| StoreError::Corrupt(format!("ledger of member {into}: {e}")))?;
            let merged = ledger::merge(&mut src, &mut dst, &format!("merge:{from}:{into}"), from, into, at)
                .map_err(|e| StoreError::Corrupt(format!("merging ledgers of members {from} and {into}: {e}")))?;
            if !merged.from.replayed {
                append_ledger(conn, from, &merged.from.entries).await?;
                append_ledger(conn, into, &merged.into.entries).await?;
            }
            let moved = |wallet: Wallet| -> i64 {
                merged.into.entries.iter().filter(|e| e.wallet == wallet && e.state != ledger::State::Voided).map(|e| e.amount).sum()
            };

            let records: Vec<Json<serde_json::Value>> =
                sqlx::query_scalar("SELECT record FROM coupons WHERE member_id = $1 ORDER BY code").bind(from).fetch_all(&mut *conn).await?;
            sqlx::query("UPDATE coupons SET member_id = $1 WHERE member_id = $2").bind(into).bind(from).execute(&mut *conn).await?;
            let mut coupons = Vec::with_capacity(records.len());
            for Json(record) in records {
                let mut c = coupon_from_json(record)?;
                c.member_id = into;
                write_coupon(conn, &c, at).await?;
                coupons.push(c.code);
            }
            // Purchase keys are the merged member's; prefixed so they cannot collide with the survivor's own.
            let cards = sqlx::query("UPDATE member_cards SET member_id = $1, idem_key = $2 || idem_key WHERE member_id = $3")
                .bind(into)
                .bind(format!("merged:{from}:"))
                .bind(from)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            // Redemptions follow the points they spent, so the survivor's per-member limits count them and a
            // cancel credits the survivor. Ids are shop-wide; the caller's keys are prefixed like card keys.
            let redeemed: Vec<(i64, Json<serde_json::Value>)> =
                sqlx::query_as("SELECT redemption_id, record FROM redemptions WHERE member_id = $1 ORDER BY redemption_id")
                    .bind(from)
                    .fetch_all(&mut *conn)
                    .await?;
            sqlx::query("UPDATE redemptions SET member_id = $1, idem_key = $2 || idem_key WHERE member_id = $3")
                .bind(into)
                .bind(format!("merged:{from}:"))
                .bind(from)
                .execute(&mut *conn)
                .await?;
            for (id, Json(record)) in &redeemed {
                let mut r = redemption_from_json(record.clone())?;
                r.member_id = into;
                let record = serde_json::to_value(&r).map_err(|e| StoreError::Corrupt(format!("redemption: {e}")))?;
                sqlx::query("UPDATE redemptions SET record = $1 WHERE member_id = $2 AND redemption_id = $3")
                    .bind(Json(record))
                    .bind(into)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
            }
            let tasks = sqlx::query("UPDATE loyalty_queue SET member_id = $1 WHERE member_id = $2")
                .bind(into)
                .bind(from)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            // Members the merged one referred now count as the survivor's referees, so a referee's first paid
            // order (and a referral task moved above) pays the survivor; the survivor never becomes its own referrer.
            let referrals = sqlx::query("UPDATE referrals SET referrer_id = $1 WHERE referrer_id = $2 AND member_id <> $1")
                .bind(into)
                .bind(from)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            enqueue_loyalty(conn, &[(into, "member", into.to_string())], at).await?;
            Ok(json!({
                "ledger_entries": { "from": merged.from.entries.len(), "into": merged.into.entries.len() },
                "points_moved": moved(Wallet::Points),
                "growth_moved": moved(Wallet::Growth),
                "coupons_moved": coupons,
                "cards_moved": cards,
                "loyalty_tasks_moved": tasks,
                "referrals_moved": referrals,
                "redemptions_moved": redeemed.iter().map(|(id, _)| *id).collect::<Vec<i64>>(),
            }))
        }

        fn ledger_entry_from_row(row: &DbRow) -> StoreResult<LedgerEntry> {
            use $crate::loyalty::ledger::State;
            let state: String = row.try_get("state")?;
            let available_at: Option<Ts> = row.try_get("available_at")?;
            let state = match (state.as_str(), available_at) {
                ("pending", Some(t)) => State::Pending { available_at: t.0 },
                ("available", _) => State::Available,
                ("voided", _) => State::Voided,
                _ => return Err(corrupt("ledger state", &state)),
            };
            // Straight into `Source`, not through a `serde_json::Value` tree: every ledger read decodes these.
            let source: Json<$crate::loyalty::ledger::Source> =
                row.try_get("source").map_err(|e| StoreError::Corrupt(format!("ledger source: {e}")))?;
            let lot: Option<String> = row.try_get("lot")?;
            Ok(LedgerEntry {
                key: row.try_get("entry_key")?,
                op: row.try_get("op")?,
                request: row.try_get("request")?,
                wallet: enum_from_text("wallet", row.try_get("wallet")?)?,
                amount: row.try_get("amount")?,
                kind: enum_from_text("entry kind", row.try_get("kind")?)?,
                state,
                source: source.0,
                at: row.try_get::<Ts, _>("at")?.0,
                lot: lot.map(|l| enum_from_text("lot", l)).transpose()?,
                expires_at: row.try_get::<Option<Ts>, _>("expires_at")?.map(|t| t.0),
            })
        }

        async fn load_ledger(conn: &mut Conn, member: MemberId) -> StoreResult<Vec<LedgerEntry>> {
            let rows = sqlx::query(
                "SELECT entry_key, op, request, wallet, amount, kind, state, available_at, source, at, lot, expires_at \
                 FROM ledger_entries WHERE member_id = $1 ORDER BY entry_id",
            )
            .bind(member)
            .fetch_all(&mut *conn)
            .await?;
            rows.iter().map(ledger_entry_from_row).collect()
        }

        /// 14 parameters an entry.
        async fn append_ledger(conn: &mut Conn, member: MemberId, entries: &[LedgerEntry]) -> StoreResult<()> {
            append_ledgers(conn, &[(member, entries)]).await
        }

        /// Append entries of several members: one id allocation and one multi-row insert per 1,000 entries.
        async fn append_ledgers(conn: &mut Conn, batches: &[(MemberId, &[LedgerEntry])]) -> StoreResult<()> {
            use $crate::loyalty::ledger::State;
            let total: usize = batches.iter().map(|(_, e)| e.len()).sum();
            let ids = <$store>::next_ids(conn, "ledger_entries", "entry_id", total).await?;
            let mut rows = Vec::with_capacity(total);
            for ((member, e), id) in batches.iter().flat_map(|(m, es)| es.iter().map(move |e| (*m, e))).zip(ids) {
                let (state, available_at) = match &e.state {
                    State::Pending { available_at } => ("pending", Some(Ts(*available_at))),
                    State::Available => ("available", None),
                    State::Voided => ("voided", None),
                };
                let lot = e.lot.as_ref().map(enum_text).transpose()?;
                rows.push((id, member, e, enum_text(&e.wallet)?, enum_text(&e.kind)?, state, available_at, lot));
            }
            // 14 parameters an entry.
            for chunk in rows.chunks(1000) {
                let mut q = QueryBuilder::<$db>::new(
                    "INSERT INTO ledger_entries (entry_id, member_id, entry_key, op, request, wallet, amount, kind, state, \
                     available_at, source, at, lot, expires_at) ",
                );
                q.push_values(chunk, |mut b, (id, member, e, wallet, kind, state, available_at, lot)| {
                    b.push_bind(*id)
                        .push_bind(*member)
                        .push_bind(e.key.clone())
                        .push_bind(e.op.clone())
                        .push_bind(e.request.clone())
                        .push_bind(wallet.clone())
                        .push_bind(e.amount)
                        .push_bind(kind.clone())
                        .push_bind(*state)
                        .push_bind(*available_at)
                        .push_bind(Json(&e.source))
                        .push_bind(Ts(e.at))
                        .push_bind(lot.clone())
                        .push_bind(e.expires_at.map(Ts));
                });
                q.build().execute(&mut *conn).await?;
            }
            Ok(())
        }

        async fn count(conn: &mut Conn, sql: &'static str) -> StoreResult<i64> {
            Ok(sqlx::query_scalar(sql).fetch_one(&mut *conn).await?)
        }

        /// Store orders (see `Store::insert_orders`) and, given an earning engine, earn on them before the commit.
        /// With `hand_back`, the created orders come back as stored (bulk writers do not want them).
        async fn write_orders(
            store: &$store,
            batch: &[OrderWrite],
            actor: &Actor,
            earn: Option<&dyn OrderEarning>,
            hand_back: bool,
        ) -> StoreResult<OrdersWritten> {
            // Set-based: a handful of statements per batch rather than several per order, so bulk imports
            // and the HTTP path share one code path without paying per-order round trips.
            let mut tx = store.write_tx().await?;
            let mut locks: Vec<String> = Vec::with_capacity(batch.len() * 2);
            for w in batch {
                locks.push(lock_name(&["order", &w.draft.channel, &w.draft.order_no]));
                if let BuyerKey::Identity(i) = &w.buyer {
                    locks.push(lock_name(&["identity", &i.kind, &i.key]));
                }
            }
            locks.sort();
            locks.dedup();
            <$store>::lock_keys(&mut tx, &locks).await?;

            // 1. Natural keys already stored.
            let pairs: Vec<(&str, &str)> = batch.iter().map(|w| (w.draft.channel.as_str(), w.draft.order_no.as_str())).collect();
            let known = existing_keys(&mut tx, "order", &pairs).await?;

            // 2. Buyers: members by id (following merges), identities by key; unknown identities enrol.
            let mut members: HashMap<MemberId, Option<MemberId>> = HashMap::new();
            let mut owners: HashMap<(String, String), MemberId> = HashMap::new();
            let wanted_ids: Vec<MemberId> = batch
                .iter()
                .filter_map(|w| if let BuyerKey::Member(id) = w.buyer { Some(id) } else { None })
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            members.extend(live_members(&mut tx, &wanted_ids).await?);
            let wanted_keys: Vec<(String, String)> = batch
                .iter()
                .filter_map(|w| if let BuyerKey::Identity(i) = &w.buyer { Some((i.kind.clone(), i.key.clone())) } else { None })
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let mut keys_by_kind: HashMap<&str, Vec<&str>> = HashMap::new();
            for (k, v) in &wanted_keys {
                keys_by_kind.entry(k.as_str()).or_default().push(v.as_str());
            }
            for (kind, values) in keys_by_kind {
                for chunk in values.chunks(1000) {
                    let mut q = QueryBuilder::<$db>::new("SELECT id_key, member_id FROM identities WHERE kind = ");
                    q.push_bind(kind.to_string()).push(" AND id_key IN (");
                    push_list(&mut q, chunk, |v| v.to_string(), ")");
                    let rows: Vec<(String, MemberId)> = q.build_query_as().fetch_all(&mut *tx).await?;
                    for (v, m) in rows {
                        owners.insert((kind.to_string(), v), m);
                    }
                }
            }

            // 3. Decide each order; within the batch a repeated key compares with its first occurrence.
            let mut out = Vec::with_capacity(batch.len());
            let mut fresh: Vec<(usize, MemberId)> = Vec::new();
            let mut in_batch: HashMap<(String, String), usize> = HashMap::new();
            for (i, w) in batch.iter().enumerate() {
                let d = &w.draft;
                let key = (d.channel.clone(), d.order_no.clone());
                if let Some((id, digest)) = known.get(&key) {
                    out.push(if *digest == w.digest { WriteOutcome::Duplicate(*id) } else { WriteOutcome::Conflict(*id) });
                    continue;
                }
                if let Some(&first) = in_batch.get(&key) {
                    // Resolved to an id once ids are allocated below.
                    out.push(if batch[first].digest == w.digest { WriteOutcome::Duplicate(-(first as i64) - 1) } else { WriteOutcome::Conflict(-(first as i64) - 1) });
                    continue;
                }
                let member = match &w.buyer {
                    BuyerKey::Guest => 0,
                    BuyerKey::Member(id) => match members.get(id).copied().flatten() {
                        Some(m) => m,
                        None => {
                            out.push(WriteOutcome::Rejected(Invalid::new("unknown_member", "member_id", format!("no member {id}"))));
                            continue;
                        }
                    },
                    BuyerKey::Identity(ident) => {
                        let k = (ident.kind.clone(), ident.key.clone());
                        match owners.get(&k) {
                            Some(m) => *m,
                            None => {
                                let m = enrol(&mut tx, ident, &d.channel, d.placed_at, actor).await?;
                                owners.insert(k, m);
                                m
                            }
                        }
                    }
                };
                in_batch.insert(key, i);
                fresh.push((i, member));
                out.push(WriteOutcome::Created(0));
            }

            // 4. Ids, then multi-row inserts of orders, lines and natural keys.
            let ids = <$store>::next_ids(&mut tx, "orders", "order_id", fresh.len()).await?;
            let mut id_of: HashMap<usize, i64> = HashMap::with_capacity(fresh.len());
            for ((i, _), id) in fresh.iter().zip(&ids) {
                id_of.insert(*i, *id);
                out[*i] = WriteOutcome::Created(*id);
            }
            for o in out.iter_mut() {
                match o {
                    WriteOutcome::Duplicate(x) | WriteOutcome::Conflict(x) if *x < 0 => *x = id_of[&((-*x - 1) as usize)],
                    _ => {}
                }
            }
            let rows: Vec<(&OrderWrite, MemberId, i64)> = fresh.iter().map(|(i, m)| (&batch[*i], *m, id_of[i])).collect();
            // 14 parameters an order, 9 a line, 6 a key: chunks stay under SQLite's 32,766 and PostgreSQL's 65,535.
            for chunk in rows.chunks(1000) {
                let mut q = QueryBuilder::<$db>::new(
                    "INSERT INTO orders (order_id, member_id, channel, order_no, store, status, placed_at, paid_at, currency, \
                     subtotal, discount_total, shipping_fee, total, coupon_code, created_at) ",
                );
                q.push_values(chunk, |mut b, (w, member, id)| {
                    let d = &w.draft;
                    b.push_bind(*id)
                        .push_bind(*member)
                        .push_bind(d.channel.clone())
                        .push_bind(d.order_no.clone())
                        .push_bind(d.store.clone())
                        .push_bind(d.status.as_str())
                        .push_bind(Ts(d.placed_at))
                        .push_bind(d.paid_at.map(Ts))
                        .push_bind(d.currency.clone())
                        .push_bind(d.subtotal)
                        .push_bind(d.discount_total)
                        .push_bind(d.shipping_fee)
                        .push_bind(d.total)
                        .push_bind(d.coupon_code.clone())
                        .push_bind(Ts(actor.at));
                });
                q.build().execute(&mut *tx).await?;
            }
            let lines: Vec<(MemberId, i64, &OrderLine)> =
                rows.iter().flat_map(|(w, m, id)| w.draft.lines.iter().map(move |l| (*m, *id, l))).collect();
            for chunk in lines.chunks(3000) {
                let mut q = QueryBuilder::<$db>::new(
                    "INSERT INTO order_lines (member_id, order_id, line_no, sku, kind, quantity, unit_price, discount, amount) ",
                );
                q.push_values(chunk, |mut b, (member, id, l)| {
                    b.push_bind(*member)
                        .push_bind(*id)
                        .push_bind(l.line_no)
                        .push_bind(l.sku.clone())
                        .push_bind(l.kind.as_str())
                        .push_bind(l.quantity)
                        .push_bind(l.unit_price)
                        .push_bind(l.discount)
                        .push_bind(l.amount);
                });
                q.build().execute(&mut *tx).await?;
            }
            let keys: Vec<(&str, &str, MemberId, i64, &[u8])> = rows
                .iter()
                .map(|(w, member, id)| (w.draft.channel.as_str(), w.draft.order_no.as_str(), *member, *id, w.digest.as_slice()))
                .collect();
            write_natural_keys(&mut tx, "order", &keys).await?;

            let mut seen = HashSet::new();
            let hints: Vec<&Sku> =
                rows.iter().flat_map(|(w, _, _)| w.draft.sku_hints.iter()).filter(|s| seen.insert(s.sku.as_str())).collect();
            write_skus(&mut tx, &hints, true, actor.at).await?;
            let mut buyers: Vec<MemberId> = rows.iter().map(|(_, m, _)| *m).filter(|m| *m != 0).collect();
            buyers.sort_unstable();
            buyers.dedup();
            let known_buyers = buyers_on(&mut tx, &buyers).await?;
            // Earn at once for buyers with nothing queued; the others' orders wait behind their queued work.
            let inline: HashSet<MemberId> = match earn {
                Some(_) => buyers.iter().copied().filter(|m| known_buyers.get(m).is_some_and(|b| !b.busy)).collect(),
                None => HashSet::new(),
            };
            let mut tasks: Vec<(MemberId, &str, String)> =
                rows.iter().filter(|(_, m, _)| !inline.contains(m)).map(|(_, m, id)| (*m, "order", id.to_string())).collect();
            // A referred buyer's order may pay their referrer too: that is the referrer's own task.
            for (_, m, id) in &rows {
                if let Some(r) = known_buyers.get(m).and_then(|b| b.facts.referred_by) {
                    tasks.push((r, "referral", id.to_string()));
                }
            }
            let queued = tasks.iter().any(|t| t.0 != 0);
            enqueue_loyalty(&mut tx, &tasks, actor.at).await?;
            if let Some(earn) = earn.filter(|_| !inline.is_empty()) {
                let orders: Vec<OrderView> =
                    rows.iter().filter(|(_, m, _)| inline.contains(m)).map(|(w, m, id)| w.draft.view(*id, *m, actor.at)).collect();
                earn_in_transaction(&mut tx, earn, orders, &known_buyers, actor.at).await?;
            }
            tx.commit().await?;
            let mut created: Vec<Option<OrderView>> = vec![None; out.len()];
            if hand_back {
                for ((i, _), (w, m, id)) in fresh.iter().zip(&rows) {
                    created[*i] = Some(w.draft.view(*id, *m, actor.at));
                }
            }
            Ok(OrdersWritten { outcomes: out, created, queued })
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> Backend {
                Self::BACKEND
            }

            async fn migrate(&self) -> StoreResult<()> {
                self.migrate_impl().await
            }

            async fn flush(&self) -> StoreResult<()> {
                self.flush_impl().await
            }

            async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
                Ok(sqlx::query_scalar("SELECT value FROM settings WHERE key = $1").bind(key).fetch_optional(self.reader()).await?)
            }

            async fn policy_state(&self, keys: &[&str]) -> StoreResult<(Option<i64>, Vec<Option<String>>)> {
                let mut q = QueryBuilder::<$db>::new("SELECT (SELECT CAST(MAX(version) AS BIGINT) FROM rule_sets) AS version");
                for k in keys {
                    q.push(", (SELECT value FROM settings WHERE key = ").push_bind(k.to_string()).push(")");
                }
                let row = q.build().fetch_one(self.reader()).await?;
                let version: Option<i64> = row.try_get(0)?;
                let values = (1..=keys.len()).map(|i| row.try_get::<Option<String>, _>(i)).collect::<Result<Vec<_>, _>>()?;
                Ok((version, values))
            }

            async fn set_setting(&self, key: &str, value: &str) -> StoreResult<()> {
                let mut tx = self.write_tx().await?;
                sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
                    .bind(key)
                    .bind(value)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn insert_api_key(&self, key: &ApiKey) -> StoreResult<bool> {
                let mut tx = self.write_tx().await?;
                let r = sqlx::query(
                    "INSERT INTO api_keys (key_id, digest, role, name, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, NULL) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&key.id)
                .bind(&key.digest)
                .bind(key.role.as_str())
                .bind(&key.name)
                .bind(Ts(key.created_at))
                .execute(&mut *tx)
                .await?;
                let created = r.rows_affected() == 1;
                if created {
                    let actor = Actor { id: "system".into(), at: key.created_at };
                    audit(&mut tx, &actor, "key.create", None, json!({ "key_id": key.id, "role": key.role, "name": key.name })).await?;
                }
                tx.commit().await?;
                Ok(created)
            }

            async fn api_key_by_digest(&self, digest: &str) -> StoreResult<Option<ApiKey>> {
                let row = sqlx::query("SELECT key_id, digest, role, name, created_at, revoked_at FROM api_keys WHERE digest = $1")
                    .bind(digest)
                    .fetch_optional(self.reader())
                    .await?;
                let Some(row) = row else { return Ok(None) };
                let role: String = row.try_get("role")?;
                Ok(Some(ApiKey {
                    id: row.try_get("key_id")?,
                    digest: row.try_get("digest")?,
                    role: role.parse::<Role>().map_err(|_| corrupt("role", &role))?,
                    name: row.try_get("name")?,
                    created_at: row.try_get::<Ts, _>("created_at")?.0,
                    revoked_at: row.try_get::<Option<Ts>, _>("revoked_at")?.map(|t| t.0),
                }))
            }

            async fn append_audit(&self, entries: &[AuditEntry]) -> StoreResult<()> {
                if entries.is_empty() {
                    return Ok(());
                }
                let mut tx = self.write_tx().await?;
                for e in entries {
                    let actor = Actor { id: e.actor.clone(), at: e.at };
                    audit(&mut tx, &actor, &e.action, e.member_id, e.detail.clone()).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn audit_log(&self, member_id: Option<MemberId>, limit: i64) -> StoreResult<Vec<AuditEntry>> {
                let rows = sqlx::query(
                    "SELECT at, actor, action, member_id, detail FROM audit_log \
                     WHERE ($1 IS NULL OR member_id = $1) ORDER BY audit_id DESC LIMIT $2",
                )
                .bind(member_id)
                .bind(limit)
                .fetch_all(self.reader())
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(AuditEntry {
                            at: row.try_get::<Ts, _>("at")?.0,
                            actor: row.try_get("actor")?,
                            action: row.try_get("action")?,
                            member_id: row.try_get("member_id")?,
                            detail: row.try_get::<Json<serde_json::Value>, _>("detail")?.0,
                        })
                    })
                    .collect()
            }

            async fn upsert_channel(&self, c: &Channel, actor: &Actor) -> StoreResult<()> {
                let mut tx = self.write_tx().await?;
                sqlx::query(
                    "INSERT INTO channels (code, name, kind) VALUES ($1, $2, $3) \
                     ON CONFLICT (code) DO UPDATE SET name = excluded.name, kind = excluded.kind",
                )
                .bind(&c.code)
                .bind(&c.name)
                .bind(c.kind.as_str())
                .execute(&mut *tx)
                .await?;
                audit(&mut tx, actor, "channel.upsert", None, json!(c)).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn channels(&self) -> StoreResult<Vec<Channel>> {
                let rows = sqlx::query("SELECT code, name, kind FROM channels ORDER BY code").fetch_all(self.reader()).await?;
                rows.iter()
                    .map(|r| {
                        let kind: String = r.try_get("kind")?;
                        Ok(Channel {
                            code: r.try_get("code")?,
                            name: r.try_get("name")?,
                            kind: ChannelKind::parse(&kind).ok_or_else(|| corrupt("channel kind", &kind))?,
                        })
                    })
                    .collect()
            }

            async fn upsert_store(&self, s: &StoreLocation, actor: &Actor) -> StoreResult<()> {
                let mut tx = self.write_tx().await?;
                sqlx::query(
                    "INSERT INTO stores (code, channel, name, city) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (code) DO UPDATE SET channel = excluded.channel, name = excluded.name, city = excluded.city",
                )
                .bind(&s.code)
                .bind(&s.channel)
                .bind(&s.name)
                .bind(s.city.as_deref())
                .execute(&mut *tx)
                .await?;
                audit(&mut tx, actor, "store.upsert", None, json!(s)).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn stores(&self) -> StoreResult<Vec<StoreLocation>> {
                let rows = sqlx::query("SELECT code, channel, name, city FROM stores ORDER BY code").fetch_all(self.reader()).await?;
                rows.iter()
                    .map(|r| {
                        Ok(StoreLocation {
                            code: r.try_get("code")?,
                            channel: r.try_get("channel")?,
                            name: r.try_get("name")?,
                            city: r.try_get("city")?,
                        })
                    })
                    .collect()
            }

            async fn upsert_skus(&self, skus: &[Sku], only_missing: bool) -> StoreResult<u64> {
                let mut tx = self.write_tx().await?;
                let mut seen = HashSet::new();
                let unique: Vec<&Sku> = skus.iter().filter(|s| seen.insert(s.sku.as_str())).collect();
                let written = write_skus(&mut tx, &unique, only_missing, Utc::now()).await?;
                tx.commit().await?;
                Ok(written)
            }

            async fn sku(&self, sku: &str) -> StoreResult<Option<Sku>> {
                let row = sqlx::query("SELECT sku, name, category_path, brand, list_price, available FROM skus WHERE sku = $1")
                    .bind(sku)
                    .fetch_optional(self.reader())
                    .await?;
                row.as_ref().map(sku_from_row).transpose()
            }

            async fn skus(&self, after: Option<&str>, limit: i64) -> StoreResult<Vec<Sku>> {
                let rows = sqlx::query(
                    "SELECT sku, name, category_path, brand, list_price, available FROM skus \
                     WHERE ($1 IS NULL OR sku > $1) ORDER BY sku LIMIT $2",
                )
                .bind(after)
                .bind(limit)
                .fetch_all(self.reader())
                .await?;
                rows.iter().map(sku_from_row).collect()
            }

            async fn upsert_members(&self, batch: &[MemberUpsert], actor: &Actor) -> StoreResult<Vec<UpsertOutcome>> {
                let mut tx = self.write_tx().await?;
                let mut locks: Vec<String> =
                    batch.iter().flat_map(|m| m.identities.iter().map(|i| lock_name(&["identity", &i.kind, &i.key]))).collect();
                locks.sort();
                locks.dedup();
                Self::lock_keys(&mut tx, &locks).await?;
                // Who holds each identity now, fetched in one look-up per kind.
                let mut owners: HashMap<(String, String), MemberId> = HashMap::new();
                let mut by_kind: HashMap<&str, Vec<&str>> = HashMap::new();
                for i in batch.iter().flat_map(|m| m.identities.iter()) {
                    by_kind.entry(i.kind.as_str()).or_default().push(i.key.as_str());
                }
                for (kind, keys) in by_kind {
                    for chunk in keys.chunks(1000) {
                        let mut q = QueryBuilder::<$db>::new("SELECT id_key, member_id FROM identities WHERE kind = ");
                        q.push_bind(kind.to_string()).push(" AND id_key IN (");
                        push_list(&mut q, chunk, |k| k.to_string(), ")");
                        let rows: Vec<(String, MemberId)> = q.build_query_as().fetch_all(&mut *tx).await?;
                        for (k, m) in rows {
                            owners.insert((kind.to_string(), k), m);
                        }
                    }
                }
                let key = |i: &IdentityRecord| (i.kind.clone(), i.key.clone());
                let mut out: Vec<UpsertOutcome> = Vec::with_capacity(batch.len());
                // New members are created together; an upsert that names one of them flushes them first.
                let mut to_create: Vec<usize> = Vec::new();
                let mut claimed: HashSet<(String, String)> = HashSet::new();
                for (n, m) in batch.iter().enumerate() {
                    if m.identities.iter().any(|i| claimed.contains(&key(i))) {
                        let items: Vec<&MemberUpsert> = to_create.iter().map(|&c| &batch[c]).collect();
                        let ids = create_members(&mut tx, &items, actor).await?;
                        for (&c, id) in to_create.iter().zip(ids) {
                            out[c] = UpsertOutcome::Created(id);
                            for i in &batch[c].identities {
                                owners.insert(key(i), id);
                            }
                        }
                        to_create.clear();
                        claimed.clear();
                    }
                    let mut found: Vec<MemberId> = Vec::new();
                    for i in &m.identities {
                        if let Some(&o) = owners.get(&key(i)) && !found.contains(&o) {
                            found.push(o);
                        }
                    }
                    out.push(match found.as_slice() {
                        [] => {
                            to_create.push(n);
                            claimed.extend(m.identities.iter().map(key));
                            UpsertOutcome::Created(0)
                        }
                        [id] => {
                            let changed = update_member(&mut tx, *id, m, actor).await?;
                            for i in &m.identities {
                                owners.entry(key(i)).or_insert(*id);
                            }
                            if changed.is_empty() { UpsertOutcome::Unchanged(*id) } else { UpsertOutcome::Updated(*id, changed) }
                        }
                        _ => {
                            found.sort();
                            UpsertOutcome::Conflict(found)
                        }
                    });
                }
                let items: Vec<&MemberUpsert> = to_create.iter().map(|&c| &batch[c]).collect();
                let ids = create_members(&mut tx, &items, actor).await?;
                for (&c, id) in to_create.iter().zip(ids) {
                    out[c] = UpsertOutcome::Created(id);
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn live_member(&self, id: MemberId) -> StoreResult<Option<MemberId>> {
                let mut conn = self.reader().acquire().await?;
                live_member(&mut conn, id).await
            }

            async fn member(&self, id: MemberId) -> StoreResult<Option<MemberRecord>> {
                let mut conn = self.reader().acquire().await?;
                let Some(m) = member_row(&mut conn, id).await? else { return Ok(None) };
                let mut ms = [m];
                load_identities(&mut conn, &mut ms).await?;
                let [m] = ms;
                Ok(Some(m))
            }

            async fn member_by_identity(&self, kind: &str, key: &str) -> StoreResult<Option<MemberId>> {
                let mut conn = self.reader().acquire().await?;
                owner_of(&mut conn, kind, key).await
            }

            async fn members(&self, f: &MemberFilter, after: Option<MemberId>, limit: i64) -> StoreResult<Vec<MemberRecord>> {
                let mut conn = self.reader().acquire().await?;
                let mut q = QueryBuilder::<$db>::new(format!("SELECT {MEMBER_COLUMNS} FROM members WHERE member_id > "));
                q.push_bind(after.unwrap_or(0));
                if let Some(c) = &f.channel {
                    q.push(" AND registration_channel = ").push_bind(c.clone());
                }
                if let Some(c) = &f.city {
                    q.push(" AND city = ").push_bind(c.clone());
                }
                if let Some(s) = f.status {
                    q.push(" AND status = ").push_bind(s.as_str());
                }
                if let Some(t) = f.registered_from {
                    q.push(" AND registered_at >= ").push_bind(Ts(t));
                }
                if let Some(t) = f.registered_to {
                    q.push(" AND registered_at < ").push_bind(Ts(t));
                }
                q.push(" ORDER BY member_id LIMIT ").push_bind(limit);
                let rows = q.build().fetch_all(&mut *conn).await?;
                let mut ms = rows.iter().map(member_from_row).collect::<StoreResult<Vec<_>>>()?;
                load_identities(&mut conn, &mut ms).await?;
                Ok(ms)
            }

            async fn link_identity(&self, member: MemberId, ident: &IdentityRecord, actor: &Actor) -> StoreResult<LinkOutcome> {
                let mut tx = self.write_tx().await?;
                Self::lock_keys(&mut tx, &[lock_name(&["identity", &ident.kind, &ident.key])]).await?;
                match live_member(&mut tx, member).await? {
                    Some(m) if m == member => {}
                    _ => return Ok(LinkOutcome::NoSuchMember),
                }
                let outcome = match owner_of(&mut tx, &ident.kind, &ident.key).await? {
                    Some(owner) if owner == member => LinkOutcome::AlreadyLinked,
                    Some(owner) => LinkOutcome::OwnedBy(owner),
                    None => {
                        insert_identity(&mut tx, member, ident).await?;
                        let moved = if ident.kind == "anonymous_id" { adopt_anonymous_events(&mut tx, member, &ident.key).await? } else { 0 };
                        audit(&mut tx, actor, "identity.link", Some(member), json!({ "kind": ident.kind, "events_moved": moved })).await?;
                        LinkOutcome::Linked { events_moved: moved }
                    }
                };
                tx.commit().await?;
                Ok(outcome)
            }

            async fn merge_members(&self, into: MemberId, from: MemberId, actor: &Actor) -> StoreResult<MergeOutcome> {
                if into == from {
                    return Ok(MergeOutcome::Same);
                }
                let mut tx = self.write_tx().await?;
                let mut locks = vec![
                    lock_name(&["member", &into.to_string()]),
                    lock_name(&["member", &from.to_string()]),
                    lock_name(&["ledger", &into.to_string()]),
                    lock_name(&["ledger", &from.to_string()]),
                ];
                locks.sort();
                Self::lock_keys(&mut tx, &locks).await?;
                let sql = format!("SELECT {MEMBER_COLUMNS}, name_digest FROM members WHERE member_id = $1");
                let mut rows = Vec::new();
                for id in [into, from] {
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(id).fetch_optional(&mut *tx).await?;
                    let Some(row) = row else { return Ok(MergeOutcome::NotFound(id)) };
                    let rec = member_from_row(&row)?;
                    if rec.status != MemberStatus::Active {
                        return Ok(MergeOutcome::NotActive(id));
                    }
                    let digest: Option<String> = row.try_get("name_digest")?;
                    rows.push((rec, digest));
                }
                let (src, src_digest) = rows.pop().ok_or_else(|| StoreError::Corrupt("merge rows".into()))?;
                let (dst, _) = rows.pop().ok_or_else(|| StoreError::Corrupt("merge rows".into()))?;

                let ids = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql).bind(from);
                let identity_keys: Vec<(String, String)> =
                    sqlx::query_as("SELECT kind, id_key FROM identities WHERE member_id = $1 ORDER BY kind, id_key")
                        .bind(from)
                        .fetch_all(&mut *tx)
                        .await?;
                let order_ids = ids("SELECT order_id FROM orders WHERE member_id = $1 ORDER BY order_id").fetch_all(&mut *tx).await?;
                let refund_ids = ids("SELECT refund_id FROM refunds WHERE member_id = $1 ORDER BY refund_id").fetch_all(&mut *tx).await?;
                let dropped = sqlx::query(
                    "DELETE FROM events WHERE member_id = $1 AND event_key IN (SELECT event_key FROM events WHERE member_id = $2)",
                )
                .bind(from)
                .bind(into)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let event_ids = ids("SELECT event_id FROM events WHERE member_id = $1 ORDER BY event_id").fetch_all(&mut *tx).await?;
                for sql in [
                    "UPDATE identities SET member_id = $1 WHERE member_id = $2",
                    "UPDATE orders SET member_id = $1 WHERE member_id = $2",
                    "UPDATE order_lines SET member_id = $1 WHERE member_id = $2",
                    "UPDATE refunds SET member_id = $1 WHERE member_id = $2",
                    "UPDATE refund_lines SET member_id = $1 WHERE member_id = $2",
                    "UPDATE events SET member_id = $1 WHERE member_id = $2",
                    "UPDATE natural_keys SET member_id = $1 WHERE member_id = $2",
                ] {
                    sqlx::query(sql).bind(into).bind(from).execute(&mut *tx).await?;
                }
                let loyalty = merge_loyalty(&mut tx, into, from, actor.at).await?;
                // The survivor keeps its own profile; gaps are filled from the merged member.
                let mut filled = Vec::new();
                for (field, gap) in [
                    ("name", dst.name_sealed.is_none() && src.name_sealed.is_some()),
                    ("gender", dst.gender.is_none() && src.gender.is_some()),
                    ("birthday", dst.birthday.is_none() && src.birthday.is_some()),
                    ("city", dst.city.is_none() && src.city.is_some()),
                    ("country", dst.country.is_none() && src.country.is_some()),
                    ("registration_channel", dst.registration_channel.is_none() && src.registration_channel.is_some()),
                    ("registered_at", src.registered_at < dst.registered_at),
                ] {
                    if gap {
                        filled.push(field);
                    }
                }
                sqlx::query(
                    "UPDATE members SET \
                     name_sealed = COALESCE(name_sealed, $2), name_digest = COALESCE(name_digest, $3), \
                     gender = COALESCE(gender, $4), birthday = COALESCE(birthday, $5), city = COALESCE(city, $6), \
                     country = COALESCE(country, $7), registration_channel = COALESCE(registration_channel, $8), \
                     registered_at = $9, updated_at = $10 WHERE member_id = $1",
                )
                .bind(into)
                .bind(src.name_sealed.as_deref())
                .bind(src_digest.as_deref())
                .bind(src.gender.map(Gender::as_str))
                .bind(birthday_text(src.birthday))
                .bind(src.city.as_deref())
                .bind(src.country.as_deref())
                .bind(src.registration_channel.as_deref())
                .bind(Ts(dst.registered_at.min(src.registered_at)))
                .bind(Ts(actor.at))
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE members SET status = 'merged', merged_into = $1, updated_at = $2 WHERE member_id = $3")
                    .bind(into)
                    .bind(Ts(actor.at))
                    .bind(from)
                    .execute(&mut *tx)
                    .await?;
                let detail = json!({
                    "identities": identity_keys.iter().map(|(k, v)| json!({"kind": k, "key": v})).collect::<Vec<_>>(),
                    "order_ids": order_ids,
                    "refund_ids": refund_ids,
                    "event_ids": event_ids,
                    "duplicate_events_dropped": dropped,
                    "loyalty": loyalty,
                    "fields_filled": filled,
                    "survivor_before": {
                        "registered_at": dst.registered_at,
                        "registration_channel": dst.registration_channel,
                        "had_name": dst.name_sealed.is_some(),
                        "gender": dst.gender,
                        "birthday": dst.birthday,
                        "city": dst.city,
                        "country": dst.country,
                    },
                });
                let merge_id: i64 = sqlx::query_scalar(
                    "INSERT INTO member_merges (member_id, from_member_id, merged_at, actor, detail) VALUES ($1, $2, $3, $4, $5) \
                     RETURNING merge_id",
                )
                .bind(into)
                .bind(from)
                .bind(Ts(actor.at))
                .bind(&actor.id)
                .bind(Json(&detail))
                .fetch_one(&mut *tx)
                .await?;
                audit(&mut tx, actor, "member.merge", Some(into), json!({ "merge_id": merge_id, "from_member_id": from })).await?;
                audit(&mut tx, actor, "member.merged_away", Some(from), json!({ "merge_id": merge_id, "into_member_id": into })).await?;
                tx.commit().await?;
                Ok(MergeOutcome::Merged(MergeRecord {
                    merge_id,
                    into_member_id: into,
                    from_member_id: from,
                    merged_at: actor.at,
                    actor: actor.id.clone(),
                    detail,
                }))
            }

            async fn insert_orders(&self, batch: &[OrderWrite], actor: &Actor) -> StoreResult<Vec<WriteOutcome>> {
                Ok(write_orders(self, batch, actor, None, false).await?.outcomes)
            }

            async fn insert_order_group(
                &self,
                batch: &[OrderWrite],
                actor: &Actor,
                earn: Option<&dyn OrderEarning>,
            ) -> StoreResult<OrdersWritten> {
                write_orders(self, batch, actor, earn, true).await
            }

            async fn order(&self, id: i64) -> StoreResult<Option<OrderView>> {
                let mut conn = self.reader().acquire().await?;
                let sql = format!("{ORDER_SELECT} WHERE o.order_id = $1");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_all(&mut *conn).await?;
                Ok(orders_with_lines(&mut conn, rows).await?.pop())
            }

            async fn order_id_by_no(&self, channel: &str, order_no: &str) -> StoreResult<Option<i64>> {
                let mut conn = self.reader().acquire().await?;
                Ok(natural_key(&mut conn, "order", channel, order_no).await?.map(|(id, _)| id))
            }

            async fn member_orders(&self, member: MemberId, before: Option<i64>, limit: i64) -> StoreResult<Vec<OrderView>> {
                let mut conn = self.reader().acquire().await?;
                let sql = format!(
                    "{ORDER_SELECT} WHERE o.member_id = $1 AND ($2 IS NULL OR o.order_id < $2) ORDER BY o.order_id DESC LIMIT $3"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(member).bind(before).bind(limit).fetch_all(&mut *conn).await?;
                orders_with_lines(&mut conn, rows).await
            }

            async fn insert_refund(&self, input: &RefundInput, digest: &[u8], actor: &Actor) -> StoreResult<WriteOutcome> {
                let mut tx = self.write_tx().await?;
                let order_id = match (input.order_id, &input.order_no) {
                    (Some(id), _) => Some(id),
                    (None, Some(no)) => natural_key(&mut tx, "order", &input.channel, no).await?.map(|(id, _)| id),
                    (None, None) => None,
                };
                let field = if input.order_id.is_some() { "order_id" } else { "order_no" };
                let Some(order_id) = order_id else {
                    return Ok(WriteOutcome::Rejected(Invalid::new("unknown_order", field, "no such order in this channel")));
                };
                let mut locks = vec![lock_name(&["refund", &input.channel, &input.refund_no]), lock_name(&["order-refunds", &order_id.to_string()])];
                locks.sort();
                Self::lock_keys(&mut tx, &locks).await?;
                if let Some((id, stored)) = natural_key(&mut tx, "refund", &input.channel, &input.refund_no).await? {
                    return Ok(if stored == digest { WriteOutcome::Duplicate(id) } else { WriteOutcome::Conflict(id) });
                }
                let sql = format!("{ORDER_SELECT} WHERE o.order_id = $1");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(order_id).fetch_all(&mut *tx).await?;
                let Some(order) = orders_with_lines(&mut tx, rows).await?.pop() else {
                    return Ok(WriteOutcome::Rejected(Invalid::new("unknown_order", field, "no such order")));
                };
                if order.channel != input.channel {
                    return Ok(WriteOutcome::Rejected(Invalid::new("unknown_order", field, "the order belongs to another channel")));
                }
                let mut state = RefundState::default();
                let per_line: Vec<(Option<i32>, i64, i64)> = sqlx::query_as(
                    "SELECT line_no, CAST(SUM(quantity) AS BIGINT), CAST(SUM(amount) AS BIGINT) FROM refund_lines WHERE order_id = $1 GROUP BY line_no",
                )
                .bind(order_id)
                .fetch_all(&mut *tx)
                .await?;
                for (line, q, a) in per_line {
                    if let Some(line) = line {
                        state.lines.insert(line, (q, a));
                    }
                }
                state.shipping = sqlx::query_scalar("SELECT CAST(COALESCE(SUM(shipping_refund), 0) AS BIGINT) FROM refunds WHERE order_id = $1")
                    .bind(order_id)
                    .fetch_one(&mut *tx)
                    .await?;
                let draft = match input.plan(order.member_id, order_id, order.placed_at, &order.lines, order.shipping_fee, &state.lines, state.shipping) {
                    Ok(d) => d,
                    Err(e) => return Ok(WriteOutcome::Rejected(e)),
                };
                let id = store_refunds(&mut tx, &[(&draft, digest)], actor.at).await?.pop().ok_or_else(|| StoreError::Corrupt("no refund id".into()))?;
                tx.commit().await?;
                Ok(WriteOutcome::Created(id))
            }

            async fn import_refunds(&self, batch: &[(RefundDraft, Vec<u8>)]) -> StoreResult<Vec<WriteOutcome>> {
                let mut tx = self.write_tx().await?;
                let mut locks: Vec<String> = batch.iter().map(|(d, _)| lock_name(&["refund", &d.channel, &d.refund_no])).collect();
                locks.sort();
                locks.dedup();
                Self::lock_keys(&mut tx, &locks).await?;
                let pairs: Vec<(&str, &str)> = batch.iter().map(|(d, _)| (d.channel.as_str(), d.refund_no.as_str())).collect();
                let known = existing_keys(&mut tx, "refund", &pairs).await?;
                let mut out = Vec::with_capacity(batch.len());
                let mut fresh: Vec<usize> = Vec::new();
                let mut first_of: HashMap<(&str, &str), usize> = HashMap::new();
                for (i, (d, digest)) in batch.iter().enumerate() {
                    let k = (d.channel.as_str(), d.refund_no.as_str());
                    if let Some((id, stored)) = known.get(&(k.0.to_string(), k.1.to_string())) {
                        out.push(if stored == digest { WriteOutcome::Duplicate(*id) } else { WriteOutcome::Conflict(*id) });
                    } else if let Some(&first) = first_of.get(&k) {
                        // Resolved to the first occurrence's id below.
                        let same = batch[first].1 == *digest;
                        out.push(if same { WriteOutcome::Duplicate(-(first as i64) - 1) } else { WriteOutcome::Conflict(-(first as i64) - 1) });
                    } else {
                        first_of.insert(k, i);
                        fresh.push(i);
                        out.push(WriteOutcome::Created(0));
                    }
                }
                let items: Vec<(&RefundDraft, &[u8])> = fresh.iter().map(|&i| (&batch[i].0, batch[i].1.as_slice())).collect();
                let ids = store_refunds(&mut tx, &items, Utc::now()).await?;
                let mut id_of = HashMap::new();
                for (&i, id) in fresh.iter().zip(ids) {
                    out[i] = WriteOutcome::Created(id);
                    id_of.insert(i, id);
                }
                for o in out.iter_mut() {
                    match o {
                        WriteOutcome::Duplicate(x) | WriteOutcome::Conflict(x) if *x < 0 => *x = id_of[&((-*x - 1) as usize)],
                        _ => {}
                    }
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn refund(&self, id: i64) -> StoreResult<Option<RefundView>> {
                let mut conn = self.reader().acquire().await?;
                let row = sqlx::query(
                    "SELECT refund_id, member_id, channel, refund_no, order_id, refunded_at, shipping_refund, amount, reason, created_at \
                     FROM refunds WHERE refund_id = $1",
                )
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let lines = sqlx::query("SELECT order_id, line_no, sku, quantity, amount FROM refund_lines WHERE refund_id = $1 ORDER BY idx")
                    .bind(id)
                    .fetch_all(&mut *conn)
                    .await?
                    .iter()
                    .map(|r| {
                        Ok(RefundLine {
                            order_id: r.try_get("order_id")?,
                            line_no: r.try_get("line_no")?,
                            sku: r.try_get("sku")?,
                            quantity: r.try_get("quantity")?,
                            amount: r.try_get("amount")?,
                        })
                    })
                    .collect::<StoreResult<Vec<_>>>()?;
                Ok(Some(RefundView {
                    id: row.try_get("refund_id")?,
                    member_id: opt_member(row.try_get("member_id")?),
                    channel: row.try_get("channel")?,
                    refund_no: row.try_get("refund_no")?,
                    order_id: row.try_get("order_id")?,
                    refunded_at: row.try_get::<Ts, _>("refunded_at")?.0,
                    lines,
                    shipping_refund: row.try_get("shipping_refund")?,
                    amount: row.try_get("amount")?,
                    reason: row.try_get("reason")?,
                    created_at: row.try_get::<Ts, _>("created_at")?.0,
                }))
            }

            async fn insert_events(&self, batch: &[EventWrite]) -> StoreResult<Vec<EventOutcome>> {
                let mut tx = self.write_tx().await?;
                let now = Ts(Utc::now());
                let mut out: Vec<EventOutcome> = Vec::with_capacity(batch.len());
                let mut members: HashMap<MemberId, Option<MemberId>> = HashMap::new();
                let mut owners: HashMap<(String, String), Option<MemberId>> = HashMap::new();
                // (index in batch, member) of events to insert; duplicates within the batch are caught here.
                let mut pending: Vec<(usize, MemberId)> = Vec::with_capacity(batch.len());
                let mut keys_in_batch: HashSet<(MemberId, &str)> = HashSet::new();
                for (i, w) in batch.iter().enumerate() {
                    let d = &w.draft;
                    let member = match &w.actor {
                        BuyerKey::Member(id) => {
                            if !members.contains_key(id) {
                                let live = live_member(&mut tx, *id).await?;
                                members.insert(*id, live);
                            }
                            match members[id] {
                                Some(m) => m,
                                None => {
                                    out.push(EventOutcome::Rejected(Invalid::new("unknown_member", "member_id", format!("no member {id}"))));
                                    continue;
                                }
                            }
                        }
                        BuyerKey::Identity(ident) => {
                            let k = (ident.kind.clone(), ident.key.clone());
                            if !owners.contains_key(&k) {
                                let o = owner_of(&mut tx, &ident.kind, &ident.key).await?;
                                owners.insert(k.clone(), o);
                            }
                            match owners[&k] {
                                Some(m) => m,
                                None => {
                                    out.push(EventOutcome::Rejected(Invalid::new(
                                        "unknown_identity",
                                        "identity",
                                        "no member has this identity; create the member first or send anonymous_id",
                                    )));
                                    continue;
                                }
                            }
                        }
                        BuyerKey::Guest => 0,
                    };
                    let mut member = member;
                    if let Some(anon) = &d.anonymous_id {
                        let k = ("anonymous_id".to_string(), anon.clone());
                        if !owners.contains_key(&k) {
                            let o = owner_of(&mut tx, "anonymous_id", anon).await?;
                            owners.insert(k.clone(), o);
                        }
                        match (member, owners[&k]) {
                            (0, Some(owner)) => member = owner,
                            (0, None) => {}
                            (m, None) => {
                                // The visitor just identified themselves: link and bring their history along.
                                let rec = IdentityRecord { kind: "anonymous_id".into(), key: anon.clone(), sealed: None, linked_at: d.occurred_at };
                                if insert_identity(&mut tx, m, &rec).await? {
                                    let moved = adopt_anonymous_events(&mut tx, m, anon).await?;
                                    let actor = Actor { id: "system".into(), at: now.0 };
                                    audit(&mut tx, &actor, "identity.link", Some(m), json!({ "kind": "anonymous_id", "events_moved": moved })).await?;
                                }
                                // Earlier events of this batch from the same visitor are not stored yet: they go to the member too.
                                for (j, owner) in pending.iter_mut() {
                                    if *owner == 0 && batch[*j].draft.anonymous_id.as_deref() == Some(anon.as_str()) {
                                        keys_in_batch.remove(&(0, batch[*j].draft.key.as_str()));
                                        *owner = m;
                                        if !keys_in_batch.insert((m, batch[*j].draft.key.as_str())) {
                                            out[*j] = EventOutcome::Duplicate;
                                        }
                                    }
                                }
                                pending.retain(|(j, _)| out[*j] == EventOutcome::Stored);
                                owners.insert(k, Some(m));
                            }
                            (_, Some(_)) => {}
                        }
                    }
                    if !keys_in_batch.insert((member, d.key.as_str())) {
                        out.push(EventOutcome::Duplicate);
                        continue;
                    }
                    pending.push((i, member));
                    out.push(EventOutcome::Stored);
                }
                // 11 parameters a row: 2,500 rows stay under both databases' parameter limits. Ids are allocated
                // up front so a chunk needs no RETURNING; only a chunk that hit duplicates is looked at again.
                let ids = Self::next_ids(&mut tx, "events", "event_id", pending.len()).await?;
                let rows: Vec<(usize, MemberId, i64)> = pending.iter().zip(ids).map(|((i, m), id)| (*i, *m, id)).collect();
                for chunk in rows.chunks(2500) {
                    let mut q = QueryBuilder::<$db>::new(
                        "INSERT INTO events (event_id, member_id, event_key, event_type, occurred_at, anonymous_id, session_id, channel, \
                         sku, properties, received_at) ",
                    );
                    q.push_values(chunk, |mut b, (i, member, id)| {
                        let d = &batch[*i].draft;
                        b.push_bind(*id)
                            .push_bind(*member)
                            .push_bind(d.key.clone())
                            .push_bind(d.event_type.name())
                            .push_bind(Ts(d.occurred_at))
                            .push_bind(d.anonymous_id.clone())
                            .push_bind(d.session_id.clone())
                            .push_bind(d.channel.clone())
                            .push_bind(d.sku.clone())
                            .push_bind(Json(d.properties.clone()))
                            .push_bind(now);
                    });
                    q.push(" ON CONFLICT (member_id, event_key) DO NOTHING");
                    let inserted = q.build().execute(&mut *tx).await?.rows_affected();
                    if inserted as usize == chunk.len() {
                        continue;
                    }
                    let mut q = QueryBuilder::<$db>::new("SELECT event_id FROM events WHERE event_id IN (");
                    push_list(&mut q, chunk, |(_, _, id)| *id, ")");
                    let stored: HashSet<i64> = q.build_query_scalar::<i64>().fetch_all(&mut *tx).await?.into_iter().collect();
                    for (i, _, id) in chunk {
                        if !stored.contains(id) {
                            out[*i] = EventOutcome::Duplicate;
                        }
                    }
                }
                // Behaviours with earning rules go to the loyalty engine.
                let tasks: Vec<(MemberId, &str, String)> = rows
                    .iter()
                    .filter(|(i, m, _)| *m != 0 && out[*i] == EventOutcome::Stored && $crate::loyalty::earning::earns(&batch[*i].draft.event_type.name()))
                    .map(|(_, m, id)| (*m, "event", id.to_string()))
                    .collect();
                enqueue_loyalty(&mut tx, &tasks, now.0).await?;
                tx.commit().await?;
                Ok(out)
            }

            async fn member_events(&self, member: MemberId, limit: i64) -> StoreResult<Vec<EventView>> {
                let rows = sqlx::query(
                    "SELECT event_id, member_id, event_type, occurred_at, anonymous_id, session_id, channel, sku, properties \
                     FROM events WHERE member_id = $1 ORDER BY occurred_at DESC, event_id DESC LIMIT $2",
                )
                .bind(member)
                .bind(limit)
                .fetch_all(self.reader())
                .await?;
                rows.iter().map(event_from_row).collect()
            }

            async fn idempotency_begin(&self, scope: &str, key: &str, digest: &[u8], now: DateTime<Utc>) -> StoreResult<IdempotencyBegin> {
                let mut tx = self.write_tx().await?;
                let inserted = sqlx::query(
                    "INSERT INTO idempotency_keys (scope, idem_key, request_digest, status, response, created_at) \
                     VALUES ($1, $2, $3, NULL, NULL, $4) ON CONFLICT DO NOTHING",
                )
                .bind(scope)
                .bind(key)
                .bind(digest)
                .bind(Ts(now))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let answer = if inserted == 1 {
                    IdempotencyBegin::New
                } else {
                    let (stored, status, body, created): (Vec<u8>, Option<i32>, Option<String>, Ts) = sqlx::query_as(
                        "SELECT request_digest, status, response, created_at FROM idempotency_keys WHERE scope = $1 AND idem_key = $2",
                    )
                    .bind(scope)
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await?;
                    match (stored == digest, status, body) {
                        (false, _, _) => IdempotencyBegin::Mismatch,
                        (true, Some(s), Some(b)) => IdempotencyBegin::Replay { status: s as u16, body: b },
                        // A request that died mid-way more than a minute ago wrote nothing (its transaction
                        // never committed): let the retry take over.
                        (true, _, _) if now - created.0 > chrono::Duration::minutes(1) => {
                            sqlx::query("UPDATE idempotency_keys SET created_at = $3 WHERE scope = $1 AND idem_key = $2")
                                .bind(scope)
                                .bind(key)
                                .bind(Ts(now))
                                .execute(&mut *tx)
                                .await?;
                            IdempotencyBegin::New
                        }
                        (true, _, _) => IdempotencyBegin::InProgress,
                    }
                };
                tx.commit().await?;
                Ok(answer)
            }

            async fn idempotency_finish(&self, scope: &str, key: &str, status: u16, body: &str) -> StoreResult<()> {
                let mut tx = self.write_tx().await?;
                sqlx::query("UPDATE idempotency_keys SET status = $3, response = $4 WHERE scope = $1 AND idem_key = $2")
                    .bind(scope)
                    .bind(key)
                    .bind(status as i32)
                    .bind(body)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn idempotency_abandon(&self, scope: &str, key: &str) -> StoreResult<()> {
                let mut tx = self.write_tx().await?;
                sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2 AND status IS NULL")
                    .bind(scope)
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn ledger_members(&self, after: MemberId, limit: i64) -> StoreResult<Vec<MemberId>> {
                Ok(sqlx::query_scalar(
                    "SELECT DISTINCT member_id FROM ledger_entries WHERE member_id > $1 ORDER BY member_id LIMIT $2",
                )
                .bind(after)
                .bind(limit)
                .fetch_all(self.reader())
                .await?)
            }

            async fn ledger_entries(&self, member: MemberId) -> StoreResult<Vec<LedgerEntry>> {
                let mut conn = self.reader().acquire().await?;
                load_ledger(&mut conn, member).await
            }

            async fn ledger_write(&self, member: MemberId, op: LedgerOp) -> StoreResult<Result<Vec<LedgerEntry>, LedgerError>> {
                let mut tx = self.write_tx().await?;
                Self::lock_keys(&mut tx, &[lock_name(&["ledger", &member.to_string()])]).await?;
                let history = load_ledger(&mut tx, member).await?;
                let stored: HashSet<String> = history.iter().map(|e| e.key.clone()).collect();
                let returned = match op(history) {
                    Ok(entries) => entries,
                    Err(e) => return Ok(Err(e)),
                };
                // A replayed operation returns its original entries: they are the answer, not new writes.
                let fresh: Vec<LedgerEntry> = returned.iter().filter(|e| !stored.contains(&e.key)).cloned().collect();
                append_ledger(&mut tx, member, &fresh).await?;
                tx.commit().await?;
                Ok(Ok(returned))
            }

            async fn stats(&self) -> StoreResult<Stats> {
                let mut c = self.reader().acquire().await?;
                Ok(Stats {
                    members: count(&mut c, "SELECT COUNT(*) FROM members WHERE status = 'active'").await?,
                    merged_members: count(&mut c, "SELECT COUNT(*) FROM members WHERE status = 'merged'").await?,
                    member_orders: count(&mut c, "SELECT COUNT(*) FROM orders WHERE member_id <> 0").await?,
                    guest_orders: count(&mut c, "SELECT COUNT(*) FROM orders WHERE member_id = 0").await?,
                    refunds: count(&mut c, "SELECT COUNT(*) FROM refunds WHERE member_id <> 0").await?,
                    guest_refunds: count(&mut c, "SELECT COUNT(*) FROM refunds WHERE member_id = 0").await?,
                    events: count(&mut c, "SELECT COUNT(*) FROM events").await?,
                    unlinked_events: count(&mut c, "SELECT COUNT(*) FROM events WHERE member_id = 0").await?,
                    skus: count(&mut c, "SELECT COUNT(*) FROM skus").await?,
                })
            }
        }
    };
}

pub(crate) use shared_store;
