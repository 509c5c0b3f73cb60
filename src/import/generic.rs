//! The `generic` order CSV (also the default for `--entity orders` from CSV):
//! `customer_id,order_id,order_time,amount[,sku,quantity,unit_price,category,brand,channel]`.
//!
//! - One row per order (no `sku`): an order without lines whose total is `amount`.
//! - One row per line (`sku` given): rows with the same `(channel, order_id)` form one order, wherever they
//!   are in the file. `amount` is then the order's total, repeated on its rows or left empty: rows that
//!   give it must agree, and it must equal the sum of `quantity × unit_price`, or the order is rejected
//!   (`total_mismatch`) — a guard against a mis-mapped column rather than something silently ignored.
//!   `quantity` defaults to 1.
//! - `customer_id` is the member's `customer_no` (empty: a guest order); `order_time` is RFC 3339 or
//!   `YYYY-MM-DD HH:MM:SS` in UTC; amounts are integers in minor units; `channel` defaults to `web`.
//! - A bad row (bad number, bad time, rows of one order that disagree) rejects its whole order: every row
//!   of it goes to the reject file, the one at fault named in the reason.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::reader::{self, Header, field, line_of, parse_int, parse_utc};
use super::{BATCH, Ctx, ImportError};
use crate::commerce::{LineInput, LineKind, OrderInput, OrderStatus};
use crate::error::Invalid;
use crate::members::{IdentityInput, IdentityKind};
use crate::store::WriteOutcome;

/// Column positions; the optional ones may be absent.
pub(crate) struct Cols {
    customer: usize,
    order: usize,
    time: usize,
    amount: usize,
    sku: Option<usize>,
    quantity: Option<usize>,
    unit_price: Option<usize>,
    category: Option<usize>,
    brand: Option<usize>,
    channel: Option<usize>,
}

impl Cols {
    fn find(h: &Header) -> Result<Cols, ImportError> {
        Ok(Cols {
            customer: h.required("customer_id")?,
            order: h.required("order_id")?,
            time: h.required("order_time")?,
            amount: h.required("amount")?,
            sku: h.optional("sku"),
            quantity: h.optional("quantity"),
            unit_price: h.optional("unit_price"),
            category: h.optional("category"),
            brand: h.optional("brand"),
            channel: h.optional("channel"),
        })
    }
}

/// One parsed row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GenericRow {
    pub channel: String,
    pub order_no: String,
    pub customer: Option<String>,
    pub at: DateTime<Utc>,
    pub amount: Option<i64>,
    pub line: Option<LineInput>,
}

pub(crate) fn parse_row(rec: &csv::StringRecord, c: &Cols) -> Result<GenericRow, Invalid> {
    let order_no = field(rec, Some(c.order));
    if order_no.is_empty() {
        return Err(Invalid::missing("order_id"));
    }
    let channel = field(rec, c.channel);
    let amount = match field(rec, Some(c.amount)) {
        "" => None,
        a => Some(parse_int(a, "amount")?),
    };
    let sku = field(rec, c.sku);
    let line = if sku.is_empty() {
        None
    } else {
        let quantity = match field(rec, c.quantity) {
            "" => 1,
            q => parse_int(q, "quantity")?,
        };
        let unit_price = match field(rec, c.unit_price) {
            "" => return Err(Invalid::missing("unit_price")),
            p => parse_int(p, "unit_price")?,
        };
        let hint = |at| Some(field(rec, at).to_string()).filter(|s| !s.is_empty());
        Some(LineInput {
            sku: sku.to_string(),
            quantity,
            unit_price,
            discount: 0,
            kind: LineKind::Product,
            name: Some(sku.to_string()),
            category_path: hint(c.category),
            brand: hint(c.brand),
        })
    };
    let customer = field(rec, Some(c.customer));
    Ok(GenericRow {
        channel: if channel.is_empty() { "web".into() } else { channel.to_string() },
        order_no: order_no.to_string(),
        customer: (!customer.is_empty()).then(|| customer.to_string()),
        at: parse_utc(field(rec, Some(c.time)), "order_time")?,
        amount,
        line,
    })
}

/// Fold the rows of one order into the order; rows must agree on customer, time and amount.
pub(crate) fn build_order(rows: &[GenericRow]) -> Result<OrderInput, Invalid> {
    let first = rows.first().ok_or_else(|| Invalid::missing("order_id"))?;
    let mut amount = None;
    let mut lines = Vec::new();
    for r in rows {
        if r.customer != first.customer {
            return Err(Invalid::new("inconsistent", "customer_id", "rows of one order name different customers"));
        }
        if r.at != first.at {
            return Err(Invalid::new("inconsistent", "order_time", "rows of one order give different times"));
        }
        if let Some(a) = r.amount {
            if amount.is_some_and(|b| b != a) {
                return Err(Invalid::new("inconsistent", "amount", "rows of one order give different amounts"));
            }
            amount = Some(a);
        }
        lines.extend(r.line.clone());
    }
    if !lines.is_empty() && lines.len() != rows.len() {
        return Err(Invalid::new("inconsistent", "sku", "an order with line rows has a row without a sku"));
    }
    if lines.is_empty() && rows.len() > 1 {
        return Err(Invalid::new("duplicate_order", "order_id", "more than one row for an order without lines"));
    }
    if lines.is_empty() && amount.is_none() {
        return Err(Invalid::missing("amount"));
    }
    Ok(OrderInput {
        channel: first.channel.clone(),
        order_no: first.order_no.clone(),
        store: None,
        member_id: None,
        identity: first.customer.as_ref().map(|c| IdentityInput::new(IdentityKind::CustomerNo, c.clone())),
        status: OrderStatus::Paid,
        placed_at: first.at,
        paid_at: None,
        currency: None,
        lines,
        shipping_fee: 0,
        order_discount: 0,
        coupon_code: None,
        total: amount,
    })
}

/// The rows of one order as read.
#[derive(Default)]
struct Group {
    rows: Vec<GenericRow>,
    raw: Vec<(u64, String)>,
    bad: Option<(u64, Invalid)>,
}

pub(crate) async fn import(ctx: &mut Ctx<'_>) -> Result<(), ImportError> {
    let path = ctx.opts.path.clone();
    let (mut rdr, header) = reader::csv_reader(&path)?;
    let cols = Cols::find(&header)?;
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut rec = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(source) => return Err(ImportError::Csv { path, source }),
        }
        ctx.row_read();
        let line = line_of(&rec);
        let raw = reader::raw(&rec);
        let key = (field(&rec, cols.channel).to_string(), field(&rec, Some(cols.order)).to_string());
        if key.1.is_empty() {
            ctx.reject(line, &Invalid::missing("order_id"), &raw)?;
            continue;
        }
        let i = *index.entry(key).or_insert_with(|| {
            groups.push(Group::default());
            groups.len() - 1
        });
        let g = &mut groups[i];
        g.raw.push((line, raw));
        match parse_row(&rec, &cols) {
            Ok(r) => g.rows.push(r),
            Err(e) => {
                g.bad.get_or_insert((line, e));
            }
        }
    }
    let mut pending: Vec<(usize, OrderInput)> = Vec::new();
    let mut counts = [0u64; 2];
    for i in 0..groups.len() {
        let planned = match groups[i].bad.take() {
            Some((line, e)) => Err(at_line(line, e)),
            None => build_order(&groups[i].rows).map_err(|e| at_line(groups[i].raw[0].0, e)),
        };
        match planned {
            Ok(o) => pending.push((i, o)),
            Err(e) => reject_group(ctx, &groups[i], &e)?,
        }
        if pending.len() >= BATCH || (i + 1 == groups.len() && !pending.is_empty()) {
            let inputs: Vec<OrderInput> = pending.iter().map(|(_, o)| o.clone()).collect();
            let outcomes = ctx.app.record_orders(&inputs, &ctx.who).await?;
            for ((gi, _), outcome) in pending.drain(..).zip(outcomes) {
                match outcome {
                    WriteOutcome::Created(_) => counts[0] += 1,
                    WriteOutcome::Duplicate(_) => counts[1] += 1,
                    WriteOutcome::Conflict(_) => reject_group(
                        ctx,
                        &groups[gi],
                        &Invalid::new("conflict", "order_id", "a different order with this order_id is already stored"),
                    )?,
                    WriteOutcome::Rejected(e) => reject_group(ctx, &groups[gi], &e)?,
                }
            }
        }
    }
    ctx.summary.imported += counts[0];
    ctx.summary.duplicates += counts[1];
    ctx.note(format!("orders: {} new, {} already stored", counts[0], counts[1]));
    Ok(())
}

/// Say which line of a multi-row order was at fault.
fn at_line(line: u64, e: Invalid) -> Invalid {
    let message = format!("line {line}: {}", e.message);
    Invalid { message, ..e }
}

fn reject_group(ctx: &mut Ctx<'_>, g: &Group, e: &Invalid) -> Result<(), ImportError> {
    for (line, raw) in &g.raw {
        ctx.reject(*line, e, raw)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(csv_text: &str) -> (Vec<Result<GenericRow, Invalid>>, Cols) {
        let mut r = csv::Reader::from_reader(csv_text.as_bytes());
        let names = r.headers().unwrap().clone();
        let h = Header::for_test(names);
        let cols = Cols::find(&h).unwrap();
        let out = r.records().map(|rec| parse_row(&rec.unwrap(), &cols)).collect();
        (out, cols)
    }

    #[test]
    fn line_rows_group_into_one_order() {
        let (rows, _) = rows(
            "customer_id,order_id,order_time,amount,sku,quantity,unit_price\n\
             c1,o1,2024-05-01 08:00:00,700,A,2,200\n\
             c1,o1,2024-05-01 08:00:00,,B,,300\n",
        );
        let rows: Vec<GenericRow> = rows.into_iter().map(Result::unwrap).collect();
        let o = build_order(&rows).unwrap();
        assert_eq!(o.lines.len(), 2);
        assert_eq!(o.lines[1].quantity, 1);
        assert_eq!(o.total, Some(700));
        let now = "2026-01-01T00:00:00Z".parse().unwrap();
        assert!(o.validate("CNY", now).is_ok());
        let mut wrong = o.clone();
        wrong.total = Some(701);
        assert_eq!(wrong.validate("CNY", now).unwrap_err().code, "total_mismatch");
    }

    #[test]
    fn bad_values_name_their_field() {
        let (rows, _) = rows(
            "customer_id,order_id,order_time,amount\n\
             c1,o1,2024-05-01T08:00:00Z,12x\n\
             ,o2,someday,100\n\
             ,o3,2024-05-01T08:00:00Z,100\n",
        );
        assert_eq!(rows[0].as_ref().unwrap_err().field, "amount");
        assert_eq!(rows[1].as_ref().unwrap_err().field, "order_time");
        let o = build_order(std::slice::from_ref(rows[2].as_ref().unwrap())).unwrap();
        assert_eq!((o.identity, o.total, o.lines.len()), (None, Some(100), 0));
    }
}
