//! The `rees46` mapping: behaviour events from the REES46 multi-category store data set, columns
//! `event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session`.
//!
//! - Each `user_id` becomes a member with identity `customer_no` = `rees46:<user_id>`: the prefix keeps
//!   these ids apart from another source's customer numbers in the same shop (REES46 ids are plain
//!   integers, like most shops' own). Members are upserted before their events, registered at their first
//!   event from `web`.
//! - `view` → `product_view`, `cart` → `add_to_cart`, `purchase` → `purchase` (carrying the `sku`, which
//!   the purchase schema accepts in place of an order number); `sku` = `product_id`,
//!   `session_id` = `user_session`; properties `category_id` (a string: the ids exceed what JSON numbers
//!   hold exactly), `category_code` and `brand` when present, and `price` in minor units (integer).
//! - Products go into the catalog (name = product id, category path from `category_code` with `.` → `/`,
//!   list price from the first row seen); existing entries are left alone.
//! - Events are deduplicated by their content key: an identical row is a duplicate.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::reader::{self, field, line_of, parse_money, parse_utc};
use super::{BATCH, Ctx, ImportError};
use crate::commerce::Sku;
use crate::error::Invalid;
use crate::events::EventInput;
use crate::members::{IdentityInput, IdentityKind, MemberInput};
use crate::store::{EventOutcome, UpsertOutcome};

/// Column positions.
pub(crate) struct Cols {
    time: usize,
    kind: usize,
    product: usize,
    category_id: usize,
    category_code: usize,
    brand: usize,
    price: usize,
    user: usize,
    session: usize,
}

/// The identity value for a REES46 user.
pub(crate) fn customer_no(user_id: &str) -> String {
    format!("rees46:{user_id}")
}

/// One parsed row: the event and its catalog entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Parsed {
    pub user: String,
    pub at: DateTime<Utc>,
    pub event: EventInput,
    pub sku: Sku,
}

pub(crate) fn parse_row(rec: &csv::StringRecord, c: &Cols) -> Result<Parsed, Invalid> {
    let kind = match field(rec, Some(c.kind)) {
        "view" => "product_view",
        "cart" => "add_to_cart",
        "purchase" => "purchase",
        other => {
            return Err(Invalid::new(
                "unknown_event_type",
                "event_type",
                format!("unknown event type `{other}`; expected view, cart or purchase"),
            ));
        }
    };
    let at = parse_utc(field(rec, Some(c.time)), "event_time")?;
    let product = field(rec, Some(c.product));
    crate::commerce::validate_sku_code(product, "product_id")?;
    let user = field(rec, Some(c.user));
    if user.is_empty() {
        return Err(Invalid::missing("user_id"));
    }
    let (price, _) = parse_money(field(rec, Some(c.price)), "price")?;
    if price < 0 {
        return Err(Invalid::new("out_of_range", "price", "negative price"));
    }
    let text = |at| Some(field(rec, Some(at)).to_string()).filter(|s| !s.is_empty());
    let mut properties = serde_json::Map::new();
    for (key, value) in
        [("category_id", text(c.category_id)), ("category_code", text(c.category_code)), ("brand", text(c.brand))]
    {
        if let Some(v) = value {
            properties.insert(key.into(), serde_json::Value::String(v));
        }
    }
    properties.insert("price".into(), serde_json::Value::from(price));
    let event = EventInput {
        event_type: kind.into(),
        occurred_at: at,
        member_id: None,
        identity: Some(IdentityInput::new(IdentityKind::CustomerNo, customer_no(user))),
        anonymous_id: None,
        session_id: text(c.session),
        channel: Some("web".into()),
        sku: Some(product.to_string()),
        event_id: None,
        properties,
    };
    let sku = Sku {
        sku: product.to_string(),
        name: product.to_string(),
        category_path: text(c.category_code).map(|s| s.replace('.', "/")),
        brand: text(c.brand),
        list_price: price,
        available: true,
    };
    Ok(Parsed { user: user.to_string(), at, event, sku })
}

pub(crate) async fn import(ctx: &mut Ctx<'_>) -> Result<(), ImportError> {
    let path = ctx.opts.path.clone();
    let (mut rdr, h) = reader::csv_reader(&path)?;
    let cols = Cols {
        time: h.required("event_time")?,
        kind: h.required("event_type")?,
        product: h.required("product_id")?,
        category_id: h.required("category_id")?,
        category_code: h.required("category_code")?,
        brand: h.required("brand")?,
        price: h.required("price")?,
        user: h.required("user_id")?,
        session: h.required("user_session")?,
    };
    // Read everything first: members must exist before their events, and the file is small enough.
    let mut rows: Vec<(u64, String, EventInput)> = Vec::new();
    let mut users: Vec<(String, DateTime<Utc>)> = Vec::new();
    let mut user_index: HashMap<String, usize> = HashMap::new();
    let mut skus: Vec<Sku> = Vec::new();
    let mut sku_seen: HashSet<String> = HashSet::new();
    let mut rec = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(source) => return Err(ImportError::Csv { path, source }),
        }
        ctx.row_read();
        let raw = reader::raw(&rec);
        match parse_row(&rec, &cols) {
            Ok(p) => {
                match user_index.get(&p.user) {
                    Some(&i) => users[i].1 = users[i].1.min(p.at),
                    None => {
                        user_index.insert(p.user.clone(), users.len());
                        users.push((p.user, p.at));
                    }
                }
                if sku_seen.insert(p.sku.sku.clone()) {
                    skus.push(p.sku);
                }
                rows.push((line_of(&rec), raw, p.event));
            }
            Err(e) => ctx.reject(line_of(&rec), &e, &raw)?,
        }
    }
    let mut added = 0;
    for chunk in skus.chunks(BATCH) {
        added += ctx.app.store.upsert_skus(chunk, true).await.map_err(crate::app::AppError::from)?;
    }
    ctx.note(format!("catalog: {} products, {added} new", skus.len()));

    let members: Vec<MemberInput> = users
        .iter()
        .map(|(u, at)| MemberInput {
            identities: vec![IdentityInput::new(IdentityKind::CustomerNo, customer_no(u))],
            registered_at: Some(*at),
            registration_channel: Some("web".into()),
            ..Default::default()
        })
        .collect();
    let (mut created, mut unchanged) = (0u64, 0u64);
    for chunk in members.chunks(BATCH) {
        for (m, r) in chunk.iter().zip(ctx.app.upsert_members(chunk, &ctx.who).await?) {
            match r {
                Ok(UpsertOutcome::Unchanged(_)) => unchanged += 1,
                Ok(UpsertOutcome::Created(_) | UpsertOutcome::Updated(..)) => created += 1,
                Ok(UpsertOutcome::Conflict(ids)) => {
                    ctx.note(format!("{}: belongs to members {ids:?}", m.identities[0].value))
                }
                Err(e) => ctx.note(format!("{}: {e}", m.identities[0].value)),
            }
        }
    }
    ctx.summary.imported += created;
    ctx.summary.duplicates += unchanged;
    ctx.note(format!("members: {created} created or updated, {unchanged} unchanged"));

    let mut counts = [0u64; 2];
    for chunk in rows.chunks(BATCH) {
        let inputs: Vec<EventInput> = chunk.iter().map(|(_, _, e)| e.clone()).collect();
        for ((line, raw, _), outcome) in chunk.iter().zip(ctx.app.record_events(&inputs).await?) {
            match outcome {
                EventOutcome::Stored => counts[0] += 1,
                EventOutcome::Duplicate => counts[1] += 1,
                EventOutcome::Rejected(e) => ctx.reject(*line, &e, raw)?,
            }
        }
    }
    ctx.summary.imported += counts[0];
    ctx.summary.duplicates += counts[1];
    ctx.note(format!("events: {} stored, {} duplicates (identical content)", counts[0], counts[1]));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::reader::Header;

    #[test]
    fn rows_become_typed_events() {
        let text = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n\
                    2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde\n\
                    2019-10-01 00:00:01 UTC,cart,3900821,2053013552326770905,appliances.environment.water_heater,aqua,33.20,554748717,9333dfbd\n\
                    2019-10-01 00:00:02 UTC,remove,1,1,,,1,1,s\n";
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let h = Header::for_test(r.headers().unwrap().clone());
        let c = Cols {
            time: h.required("event_time").unwrap(),
            kind: h.required("event_type").unwrap(),
            product: h.required("product_id").unwrap(),
            category_id: h.required("category_id").unwrap(),
            category_code: h.required("category_code").unwrap(),
            brand: h.required("brand").unwrap(),
            price: h.required("price").unwrap(),
            user: h.required("user_id").unwrap(),
            session: h.required("user_session").unwrap(),
        };
        let out: Vec<_> = r.records().map(|rec| parse_row(&rec.unwrap(), &c)).collect();
        let view = out[0].as_ref().unwrap();
        assert_eq!(view.event.event_type, "product_view");
        assert_eq!(view.event.properties["price"], serde_json::json!(3579));
        assert_eq!(view.event.properties["category_id"], serde_json::json!("2103807459595387724"));
        assert!(!view.event.properties.contains_key("category_code"));
        assert_eq!(view.event.identity.as_ref().unwrap().value, "rees46:541312140");
        let cart = out[1].as_ref().unwrap();
        assert_eq!(cart.event.event_type, "add_to_cart");
        assert_eq!(cart.sku.category_path.as_deref(), Some("appliances/environment/water_heater"));
        assert_eq!(out[2].as_ref().unwrap_err().code, "unknown_event_type");
        let now = "2026-01-01T00:00:00Z".parse().unwrap();
        assert!(view.event.validate(now).is_ok());
    }
}
