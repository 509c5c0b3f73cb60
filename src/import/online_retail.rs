//! The `online-retail` mapping: the UCI "Online Retail" export of a UK web shop (one row per invoice line,
//! columns `InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country`).
//!
//! How a shop would read it:
//! - Customers become members (`customer_no` = CustomerID), registered at their first invoice from `web`,
//!   with the country of that invoice ("Unspecified" is left empty).
//! - An invoice becomes one order (`order_no` = InvoiceNo, placed at its earliest timestamp, UK local
//!   time converted to UTC, prices in pence, GBP); a `C…` invoice becomes one refund (`refund_no` =
//!   InvoiceNo) whose lines are tied to the customer's latest earlier order lines of the same stock code
//!   that still have quantity left; what cannot be tied stays a refund line without an order.
//! - Postage (`POST`, `DOT`, `C2` carriage) is shipping; `D` is a discount (money back on a refund);
//!   `M`/`m` manual entries and `S` samples are adjustments; bank charges, Amazon fees and the CRUK
//!   commission are fees; `gift_0001_*` vouchers are gift cards; everything else, free items included, is
//!   a product.
//! - Skipped, as a shop would not book them as sales: `B` "Adjust bad debt" rows (the `A…` invoices),
//!   stock write-offs (positive invoices with negative quantities, none of which has a customer), and rows
//!   identical in every column to an earlier row of the same invoice (double records: a real second sale
//!   of the same item at the same minute would be one row with a larger quantity).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDateTime, Utc};

use super::reader::{self, field, line_of, parse_int, parse_money};
use super::{BATCH, Ctx, ImportError};
use crate::commerce::{LineInput, LineKind, OrderInput, OrderStatus, RefundDraft, RefundLine, Sku};
use crate::error::Invalid;
use crate::members::{IdentityInput, IdentityKind, MemberId, MemberInput};
use crate::store::{UpsertOutcome, WriteOutcome};

const CHANNEL: &str = "web";
const CURRENCY: &str = "GBP";

/// One parsed input row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub line: u64,
    pub invoice: String,
    pub stock: String,
    pub description: String,
    pub quantity: i64,
    pub at: DateTime<Utc>,
    /// Pence.
    pub price: i64,
    pub price_rounded: bool,
    pub customer: Option<String>,
    pub country: String,
}

/// What a row contributes to its invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Line(LineKind),
    Shipping,
    Discount,
}

/// Why a row is not imported at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Skip {
    BadDebt,
    WriteOff,
    Double,
}

impl Skip {
    fn why(self) -> &'static str {
        match self {
            Skip::BadDebt => "`B` \"Adjust bad debt\" rows (accounting entries, not sales)",
            Skip::WriteOff => "stock write-offs (negative quantities on a non-cancellation invoice, no customer)",
            Skip::Double => {
                "rows identical in every column to an earlier row of the same invoice (double records, dropped)"
            }
        }
    }
}

/// Which part of an invoice a stock code is.
pub(crate) fn part_of(stock: &str) -> Part {
    match stock {
        "POST" | "DOT" | "C2" => Part::Shipping,
        "D" => Part::Discount,
        "M" | "m" | "S" => Part::Line(LineKind::Adjustment),
        "BANK CHARGES" | "AMAZONFEE" | "CRUK" => Part::Line(LineKind::Fee),
        s if s.starts_with("gift_0001_") => Part::Line(LineKind::GiftCard),
        _ => Part::Line(LineKind::Product),
    }
}

/// Parse one CSV record. Quantity 0 and negative prices (other than the skipped bad-debt rows) are refused.
pub(crate) fn parse_row(rec: &csv::StringRecord, cols: &Cols, times: &mut UkTimes) -> Result<Row, Invalid> {
    let invoice = field(rec, Some(cols.invoice)).to_string();
    if invoice.is_empty() {
        return Err(Invalid::missing("InvoiceNo"));
    }
    let stock = field(rec, Some(cols.stock)).to_string();
    crate::commerce::validate_sku_code(&stock, "StockCode")?;
    let quantity = parse_int(field(rec, Some(cols.quantity)), "Quantity")?;
    let at = times.get(field(rec, Some(cols.date)))?;
    let (price, price_rounded) = parse_money(field(rec, Some(cols.price)), "UnitPrice")?;
    let customer = field(rec, Some(cols.customer));
    let customer = customer.strip_suffix(".0").unwrap_or(customer);
    Ok(Row {
        line: line_of(rec),
        invoice,
        stock,
        description: field(rec, Some(cols.description)).to_string(),
        quantity,
        at,
        price,
        price_rounded,
        customer: (!customer.is_empty()).then(|| customer.to_string()),
        country: field(rec, Some(cols.country)).to_string(),
    })
}

/// UK shop-local invoice times to UTC, remembered: the file repeats each timestamp on every line of its
/// invoice, and parsing plus the time-zone rules are most of the cost of a row.
#[derive(Default)]
pub(crate) struct UkTimes {
    seen: HashMap<String, DateTime<Utc>>,
}

impl UkTimes {
    /// `YYYY-MM-DD HH:MM:SS` (or the original UCI `MM/DD/YYYY HH:MM`) in Europe/London, as UTC.
    pub fn get(&mut self, text: &str) -> Result<DateTime<Utc>, Invalid> {
        if let Some(t) = self.seen.get(text) {
            return Ok(*t);
        }
        let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
            .or_else(|_| NaiveDateTime::parse_from_str(text, "%m/%d/%Y %H:%M"))
            .map_err(|_| {
                Invalid::new("invalid_time", "InvoiceDate", format!("`{text}` is not a time like 2011-12-09 12:50:00"))
            })?;
        let at = reader::local_to_utc(naive, chrono_tz::Europe::London);
        self.seen.insert(text.to_string(), at);
        Ok(at)
    }
}

/// Decide what to do with a row: skip it, refuse it, or keep it as a part of its invoice.
pub(crate) fn classify(row: &Row) -> Result<Result<Part, Skip>, Invalid> {
    let refund = row.invoice.starts_with('C');
    if row.stock == "B" || row.invoice.starts_with('A') {
        return Ok(Err(Skip::BadDebt));
    }
    if row.quantity == 0 {
        return Err(Invalid::new("out_of_range", "Quantity", "quantity is 0"));
    }
    if !refund && row.quantity < 0 {
        if row.customer.is_some() {
            return Err(Invalid::new(
                "out_of_range",
                "Quantity",
                "a negative quantity on a customer's invoice that is not a cancellation",
            ));
        }
        return Ok(Err(Skip::WriteOff));
    }
    if refund && row.quantity > 0 {
        return Err(Invalid::new(
            "out_of_range",
            "Quantity",
            "a cancellation (C invoice) row must have a negative quantity",
        ));
    }
    if row.price < 0 {
        return Err(Invalid::new("out_of_range", "UnitPrice", "negative price"));
    }
    Ok(Ok(part_of(&row.stock)))
}

/// Column positions.
pub(crate) struct Cols {
    invoice: usize,
    stock: usize,
    description: usize,
    quantity: usize,
    date: usize,
    price: usize,
    customer: usize,
    country: usize,
}

/// An invoice as gathered from its rows.
#[derive(Debug, Clone)]
pub(crate) struct Invoice {
    pub no: String,
    pub customer: Option<String>,
    /// The earliest timestamp of its rows.
    pub at: DateTime<Utc>,
    /// The kept rows, in file order.
    pub rows: Vec<(Row, Part)>,
    /// Lines of every row, skipped ones included, for rejecting the invoice whole.
    pub all_lines: Vec<(u64, String)>,
    /// The distinct timestamps of its rows (the data has at most two).
    pub timestamps: Vec<DateTime<Utc>>,
    /// Why the whole invoice is refused, with the line that caused it.
    pub bad: Option<(u64, Invalid)>,
}

impl Invoice {
    pub fn is_refund(&self) -> bool {
        self.no.starts_with('C')
    }
}

/// The order an invoice becomes: every kept row in file order, postage as shipping, discounts as the
/// order discount. An invoice with nothing but postage gets an explicit total.
pub(crate) fn plan_order(inv: &Invoice) -> OrderInput {
    let mut lines = Vec::new();
    let (mut shipping, mut discount) = (0i64, 0i64);
    for (r, part) in &inv.rows {
        match part {
            Part::Shipping => shipping += r.quantity * r.price,
            Part::Discount => discount += (r.quantity * r.price).abs(),
            Part::Line(kind) => lines.push(LineInput {
                sku: r.stock.clone(),
                quantity: r.quantity,
                unit_price: r.price,
                discount: 0,
                kind: *kind,
                name: None,
                category_path: None,
                brand: None,
            }),
        }
    }
    OrderInput {
        channel: CHANNEL.into(),
        order_no: inv.no.clone(),
        store: None,
        member_id: None,
        identity: inv.customer.as_ref().map(|c| IdentityInput::new(IdentityKind::CustomerNo, c.clone())),
        status: OrderStatus::Completed,
        placed_at: inv.at,
        paid_at: None,
        currency: Some(CURRENCY.into()),
        total: lines.is_empty().then_some(shipping - discount),
        lines,
        shipping_fee: shipping,
        order_discount: discount,
        coupon_code: None,
    }
}

/// An order line still open to refunds.
#[derive(Debug, Clone)]
struct Open {
    order_id: i64,
    line_no: i32,
    left: i64,
}

/// Refunds ledger: per (customer, sku), the stored order lines in time order with what is left to refund.
#[derive(Default)]
pub(crate) struct Ledger {
    open: HashMap<(String, String), Vec<Open>>,
    pub tied: u64,
    pub untied: u64,
}

impl Ledger {
    /// Remember a stored customer order's lines.
    pub fn add_order(&mut self, customer: &str, order_id: i64, order: &OrderInput) {
        for (i, l) in order.lines.iter().enumerate() {
            self.open.entry((customer.to_string(), l.sku.clone())).or_default().push(Open {
                order_id,
                line_no: i as i32 + 1,
                left: l.quantity,
            });
        }
    }

    /// Tie `quantity` units of `sku` refunded at `price` to the latest open lines, walking back; what is
    /// left becomes one line without an order.
    pub fn tie(&mut self, customer: Option<&str>, sku: &str, quantity: i64, price: i64) -> Vec<RefundLine> {
        let mut out = Vec::new();
        let mut want = quantity;
        if let Some(c) = customer
            && let Some(open) = self.open.get_mut(&(c.to_string(), sku.to_string()))
        {
            for o in open.iter_mut().rev() {
                if want == 0 {
                    break;
                }
                let take = want.min(o.left);
                if take == 0 {
                    continue;
                }
                o.left -= take;
                want -= take;
                self.tied += 1;
                out.push(RefundLine {
                    order_id: Some(o.order_id),
                    line_no: Some(o.line_no),
                    sku: Some(sku.to_string()),
                    quantity: take,
                    amount: take * price,
                });
            }
        }
        if want > 0 {
            self.untied += 1;
            out.push(RefundLine {
                order_id: None,
                line_no: None,
                sku: Some(sku.to_string()),
                quantity: want,
                amount: want * price,
            });
        }
        out
    }

    /// The refund a cancellation invoice becomes.
    pub fn plan_refund(&mut self, inv: &Invoice, member_id: Option<MemberId>) -> RefundDraft {
        let mut lines = Vec::new();
        let (mut shipping, mut discount) = (0i64, 0i64);
        for (r, part) in &inv.rows {
            let money = (r.quantity * r.price).abs();
            match part {
                Part::Shipping => shipping += money,
                Part::Discount => discount += money,
                Part::Line(_) => lines.extend(self.tie(inv.customer.as_deref(), &r.stock, r.quantity.abs(), r.price)),
            }
        }
        let first = lines.first().and_then(|l| l.order_id);
        let order_id = first.filter(|id| lines.iter().all(|l| l.order_id == Some(*id)));
        RefundDraft {
            channel: CHANNEL.into(),
            refund_no: inv.no.clone(),
            member_id,
            order_id,
            refunded_at: inv.at,
            amount: lines.iter().map(|l| l.amount).sum::<i64>() + shipping + discount,
            lines,
            shipping_refund: shipping,
            reason: None,
        }
    }
}

/// A row that could not be parsed: its line, its invoice number as written (maybe empty) and why.
pub(crate) struct Unparsed {
    pub line: u64,
    pub invoice: String,
    pub error: Invalid,
}

/// Everything read from the file.
#[derive(Default)]
pub(crate) struct Gathered {
    pub invoices: Vec<Invoice>,
    pub skipped: HashMap<Skip, u64>,
    pub rounded: u64,
}

impl Gathered {
    /// Add one parsed row (or the failure to parse it) to its invoice.
    pub fn add(
        &mut self,
        index: &mut HashMap<String, usize>,
        seen: &mut HashMap<usize, HashSet<String>>,
        raw: String,
        row: Result<Row, Unparsed>,
    ) -> Option<(u64, Invalid, String)> {
        let row = match row {
            Ok(r) => r,
            // Without an invoice number the row stands alone; otherwise its invoice is refused whole.
            Err(u) if u.invoice.is_empty() => return Some((u.line, u.error, raw)),
            Err(u) => {
                let i = match index.get(&u.invoice) {
                    Some(&i) => i,
                    None => {
                        index.insert(u.invoice.clone(), self.invoices.len());
                        self.invoices.push(Invoice {
                            no: u.invoice.clone(),
                            customer: None,
                            at: DateTime::UNIX_EPOCH,
                            rows: Vec::new(),
                            all_lines: Vec::new(),
                            timestamps: Vec::new(),
                            bad: None,
                        });
                        self.invoices.len() - 1
                    }
                };
                let inv = &mut self.invoices[i];
                inv.all_lines.push((u.line, raw));
                inv.bad.get_or_insert((u.line, u.error));
                return None;
            }
        };
        let i = match index.get(&row.invoice) {
            Some(&i) => i,
            None => {
                index.insert(row.invoice.clone(), self.invoices.len());
                self.invoices.push(Invoice {
                    no: row.invoice.clone(),
                    customer: row.customer.clone(),
                    at: row.at,
                    rows: Vec::new(),
                    all_lines: Vec::new(),
                    timestamps: Vec::new(),
                    bad: None,
                });
                self.invoices.len() - 1
            }
        };
        let inv = &mut self.invoices[i];
        inv.all_lines.push((row.line, raw.clone()));
        if inv.bad.is_some() {
            return None;
        }
        if inv.customer != row.customer {
            inv.bad = Some((
                row.line,
                Invalid::new("inconsistent", "CustomerID", "rows of one invoice name different customers"),
            ));
            return None;
        }
        let class = match classify(&row) {
            Ok(c) => c,
            Err(e) => {
                inv.bad = Some((row.line, e));
                return None;
            }
        };
        let class = match class {
            Ok(_) if !seen.entry(i).or_default().insert(raw) => Err(Skip::Double),
            other => other,
        };
        match class {
            Err(skip) => *self.skipped.entry(skip).or_default() += 1,
            Ok(part) => {
                if !inv.timestamps.contains(&row.at) {
                    inv.timestamps.push(row.at);
                }
                inv.at = inv.at.min(row.at);
                self.rounded += u64::from(row.price_rounded);
                inv.rows.push((row, part));
            }
        }
        None
    }
}

/// Members from the invoices: registered at their first invoice, with that invoice's country.
pub(crate) fn plan_members(invoices: &[Invoice]) -> Vec<MemberInput> {
    let mut first: HashMap<&str, (&DateTime<Utc>, &str, &str)> = HashMap::new();
    for inv in invoices {
        let Some(c) = inv.customer.as_deref() else {
            continue;
        };
        let country = inv.rows.first().map_or("", |(r, _)| r.country.as_str());
        let e = first.entry(c).or_insert((&inv.at, country, &inv.no));
        if (&inv.at, inv.no.as_str()) < (e.0, e.2) {
            *e = (&inv.at, country, &inv.no);
        }
    }
    let mut customers: Vec<_> = first.into_iter().collect();
    customers.sort_by(|a, b| (a.1.0, a.0).cmp(&(b.1.0, b.0)));
    customers
        .into_iter()
        .map(|(c, (at, country, _))| MemberInput {
            identities: vec![IdentityInput::new(IdentityKind::CustomerNo, c)],
            country: (!country.is_empty() && country != "Unspecified").then(|| country.to_string()),
            registered_at: Some(*at),
            registration_channel: Some(CHANNEL.into()),
            ..Default::default()
        })
        .collect()
}

/// Catalog entries: each stock code with its most frequent description (the code itself if it never has
/// one) and the price of its latest sale.
pub(crate) fn plan_skus(invoices: &[Invoice]) -> Vec<Sku> {
    let mut names: HashMap<&str, HashMap<&str, u64>> = HashMap::new();
    let mut price: HashMap<&str, (DateTime<Utc>, i64)> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for inv in invoices {
        for (r, part) in &inv.rows {
            if !matches!(part, Part::Line(_)) {
                continue;
            }
            let n = names.entry(&r.stock).or_insert_with(|| {
                order.push(&r.stock);
                HashMap::new()
            });
            if !r.description.is_empty() {
                *n.entry(&r.description).or_default() += 1;
            }
            if !inv.is_refund() {
                let p = price.entry(&r.stock).or_insert((r.at, r.price));
                if r.at >= p.0 {
                    *p = (r.at, r.price);
                }
            }
        }
    }
    order.sort_unstable();
    order
        .into_iter()
        .map(|code| {
            let name = names[code].iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map_or(code, |(n, _)| n);
            Sku {
                sku: code.to_string(),
                name: name.chars().filter(|c| !c.is_control()).take(200).collect(),
                category_path: None,
                brand: None,
                list_price: price.get(code).map_or(0, |p| p.1),
                available: true,
            }
        })
        .collect()
}

pub(crate) async fn import(ctx: &mut Ctx<'_>) -> Result<(), ImportError> {
    let path = ctx.opts.path.clone();
    let (mut rdr, header) = reader::csv_reader(&path)?;
    let cols = Cols {
        invoice: header.required("InvoiceNo")?,
        stock: header.required("StockCode")?,
        description: header.required("Description")?,
        quantity: header.required("Quantity")?,
        date: header.required("InvoiceDate")?,
        price: header.required("UnitPrice")?,
        customer: header.required("CustomerID")?,
        country: header.required("Country")?,
    };
    ctx.progress.set_message("reading");
    let mut g = Gathered::default();
    let mut index = HashMap::new();
    let mut seen = HashMap::new();
    let mut times = UkTimes::default();
    let mut rec = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(source) => return Err(ImportError::Csv { path, source }),
        }
        ctx.row_read();
        let raw = reader::raw(&rec);
        let row = parse_row(&rec, &cols, &mut times).map_err(|error| Unparsed {
            line: line_of(&rec),
            invoice: field(&rec, Some(cols.invoice)).to_string(),
            error,
        });
        if let Some((line, e, raw)) = g.add(&mut index, &mut seen, raw, row) {
            ctx.reject(line, &e, &raw)?;
        }
    }
    drop(seen);
    for (skip, n) in sorted(&g.skipped) {
        ctx.summary.skipped += n;
        ctx.note(format!("skipped {n} {}", skip.why()));
    }
    if g.rounded > 0 {
        ctx.note(format!("{} rows priced in fractions of a penny were rounded to whole pence", g.rounded));
    }
    let two = g.invoices.iter().filter(|i| i.timestamps.len() > 1).count();
    if two > 0 {
        ctx.note(format!("{two} invoices carry more than one timestamp; each is placed at its earliest"));
    }
    // Invoices refused whole: every row of theirs goes to the reject file.
    let mut invoices = Vec::with_capacity(g.invoices.len());
    for inv in std::mem::take(&mut g.invoices) {
        match &inv.bad {
            Some((line, e)) => reject_invoice(
                ctx,
                &inv,
                &Invalid::new(e.code, e.field.clone(), format!("line {line}: {}", e.message)),
            )?,
            None if inv.rows.is_empty() => {}
            None => invoices.push(inv),
        }
    }
    invoices.sort_by(|a, b| (a.at, a.is_refund(), &a.no).cmp(&(b.at, b.is_refund(), &b.no)));

    ctx.progress.set_message("catalog");

    let skus = plan_skus(&invoices);
    let mut added = 0;
    for chunk in skus.chunks(BATCH) {
        added += ctx.app.store.upsert_skus(chunk, true).await.map_err(crate::app::AppError::from)?;
    }
    ctx.note(format!("catalog: {} stock codes, {added} new", skus.len()));

    ctx.progress.set_message("members");
    let phase = std::time::Instant::now();

    let members = plan_members(&invoices);
    let mut member_ids: HashMap<String, MemberId> = HashMap::new();
    let (mut created, mut unchanged) = (0u64, 0u64);
    for chunk in members.chunks(BATCH) {
        let results = ctx.app.upsert_members(chunk, &ctx.who).await?;
        for (m, r) in chunk.iter().zip(results) {
            let customer = m.identities[0].value.clone();
            match r {
                Ok(UpsertOutcome::Unchanged(id)) => {
                    unchanged += 1;
                    member_ids.insert(customer, id);
                }
                Ok(o @ (UpsertOutcome::Created(_) | UpsertOutcome::Updated(..))) => {
                    created += 1;
                    member_ids.extend(o.member_id().map(|id| (customer, id)));
                }
                Ok(UpsertOutcome::Conflict(ids)) => {
                    ctx.note(format!(
                        "customer {customer}: identities belong to members {ids:?}; their invoices are rejected"
                    ));
                }
                Err(e) => ctx.note(format!("customer {customer}: {e}; their invoices are rejected")),
            }
        }
    }
    ctx.summary.imported += created;
    ctx.summary.duplicates += unchanged;
    ctx.note(format!(
        "members: {created} created or updated, {unchanged} unchanged ({:.2} s)",
        phase.elapsed().as_secs_f64()
    ));

    ctx.progress.set_message("orders");
    let phase = std::time::Instant::now();

    let mut orders: Vec<(usize, OrderInput)> = Vec::new();
    for (i, inv) in invoices.iter().enumerate() {
        if inv.is_refund() {
            continue;
        }
        if let Some(c) = &inv.customer
            && !member_ids.contains_key(c)
        {
            reject_invoice(
                ctx,
                inv,
                &Invalid::new("unknown_member", "CustomerID", format!("customer {c} could not be stored")),
            )?;
            continue;
        }
        orders.push((i, plan_order(inv)));
    }
    let mut order_ids: HashMap<usize, i64> = HashMap::new();
    let mut counts = [0u64; 2];
    for chunk in orders.chunks(BATCH) {
        let inputs: Vec<OrderInput> = chunk.iter().map(|(_, o)| o.clone()).collect();
        let outcomes = ctx.app.record_orders(&inputs, &ctx.who).await?;
        for ((i, _), outcome) in chunk.iter().zip(outcomes) {
            match outcome {
                WriteOutcome::Created(id) => {
                    counts[0] += 1;
                    order_ids.insert(*i, id);
                }
                WriteOutcome::Duplicate(id) => {
                    counts[1] += 1;
                    order_ids.insert(*i, id);
                }
                WriteOutcome::Conflict(_) => reject_invoice(ctx, &invoices[*i], &conflict("order_no"))?,
                WriteOutcome::Rejected(e) => reject_invoice(ctx, &invoices[*i], &e)?,
            }
        }
    }
    ctx.summary.imported += counts[0];
    ctx.summary.duplicates += counts[1];
    ctx.note(format!(
        "orders: {} new, {} already stored ({:.2} s)",
        counts[0],
        counts[1],
        phase.elapsed().as_secs_f64()
    ));

    ctx.progress.set_message("refunds");
    let phase = std::time::Instant::now();

    let mut ledger = Ledger::default();
    let mut refunds: Vec<(usize, RefundDraft)> = Vec::new();
    for (i, inv) in invoices.iter().enumerate() {
        match (inv.is_refund(), inv.customer.as_deref()) {
            (false, Some(c)) => {
                if let Some(id) = order_ids.get(&i) {
                    ledger.add_order(c, *id, &plan_order(inv));
                }
            }
            (false, None) => {}
            (true, None) => refunds.push((i, ledger.plan_refund(inv, None))),
            (true, Some(c)) => match member_ids.get(c) {
                Some(m) => refunds.push((i, ledger.plan_refund(inv, Some(*m)))),
                None => reject_invoice(
                    ctx,
                    inv,
                    &Invalid::new("unknown_member", "CustomerID", format!("customer {c} could not be stored")),
                )?,
            },
        }
    }
    let mut counts = [0u64; 2];
    for chunk in refunds.chunks(BATCH) {
        let drafts: Vec<RefundDraft> = chunk.iter().map(|(_, d)| d.clone()).collect();
        let outcomes = ctx.app.import_refunds(&drafts).await?;
        for ((i, _), outcome) in chunk.iter().zip(outcomes) {
            match outcome {
                WriteOutcome::Created(_) => counts[0] += 1,
                WriteOutcome::Duplicate(_) => counts[1] += 1,
                WriteOutcome::Conflict(_) => reject_invoice(ctx, &invoices[*i], &conflict("refund_no"))?,
                WriteOutcome::Rejected(e) => reject_invoice(ctx, &invoices[*i], &e)?,
            }
        }
    }
    ctx.summary.imported += counts[0];
    ctx.summary.duplicates += counts[1];
    ctx.note(format!(
        "refunds: {} new, {} already stored; {} refund lines tied to earlier order lines, {} without an order in the data ({:.2} s)",
        counts[0],
        counts[1],
        ledger.tied,
        ledger.untied,
        phase.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn conflict(field: &str) -> Invalid {
    Invalid::new("conflict", field, format!("a different record with this {field} is already stored"))
}

/// Send every row of an invoice to the reject file.
fn reject_invoice(ctx: &mut Ctx<'_>, inv: &Invoice, e: &Invalid) -> Result<(), ImportError> {
    for (line, raw) in &inv.all_lines {
        ctx.reject(*line, e, raw)?;
    }
    Ok(())
}

fn sorted(m: &HashMap<Skip, u64>) -> Vec<(Skip, u64)> {
    let mut v: Vec<_> = m.iter().map(|(k, v)| (*k, *v)).collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(invoice: &str, stock: &str, qty: i64, price: i64, at: &str, customer: Option<&str>) -> Row {
        Row {
            line: 2,
            invoice: invoice.into(),
            stock: stock.into(),
            description: String::new(),
            quantity: qty,
            at: at.parse().unwrap(),
            price,
            price_rounded: false,
            customer: customer.map(str::to_string),
            country: "United Kingdom".into(),
        }
    }

    fn invoice(no: &str, at: &str, customer: Option<&str>, rows: Vec<Row>) -> Invoice {
        Invoice {
            no: no.into(),
            customer: customer.map(str::to_string),
            at: at.parse().unwrap(),
            rows: rows.into_iter().map(|r| (r.clone(), classify(&r).unwrap().unwrap())).collect(),
            all_lines: vec![],
            timestamps: vec![at.parse().unwrap()],
            bad: None,
        }
    }

    #[test]
    fn rows_are_classified_as_a_shop_would() {
        let t = "2011-01-01T10:00:00Z";
        assert_eq!(classify(&row("A563185", "B", 1, 1_106_206, t, None)).unwrap(), Err(Skip::BadDebt));
        assert_eq!(classify(&row("536000", "21000", -5, 0, t, None)).unwrap(), Err(Skip::WriteOff));
        assert!(classify(&row("536000", "21000", -5, 0, t, Some("1"))).is_err());
        assert_eq!(classify(&row("536000", "POST", 1, 1800, t, Some("1"))).unwrap(), Ok(Part::Shipping));
        assert_eq!(classify(&row("C536000", "D", -1, 500, t, Some("1"))).unwrap(), Ok(Part::Discount));
        assert_eq!(part_of("gift_0001_20"), Part::Line(LineKind::GiftCard));
        assert_eq!(part_of("AMAZONFEE"), Part::Line(LineKind::Fee));
        assert_eq!(part_of("m"), Part::Line(LineKind::Adjustment));
        assert_eq!(part_of("PADS"), Part::Line(LineKind::Product));
    }

    #[test]
    fn orders_put_postage_in_shipping() {
        let t = "2011-01-01T10:00:00Z";
        let inv = invoice(
            "536001",
            t,
            Some("17850"),
            vec![row("536001", "85123A", 6, 255, t, Some("17850")), row("536001", "POST", 2, 1800, t, Some("17850"))],
        );
        let o = plan_order(&inv);
        assert_eq!(o.lines.len(), 1);
        assert_eq!(o.shipping_fee, 3600);
        assert_eq!(o.total, None);
        let only_postage = invoice("536002", t, None, vec![row("536002", "POST", 1, 1800, t, None)]);
        assert_eq!(plan_order(&only_postage).total, Some(1800));
    }

    #[test]
    fn refunds_walk_back_through_earlier_lines() {
        let t = "2011-01-01T10:00:00Z";
        let mut ledger = Ledger::default();
        let o1 = plan_order(&invoice(
            "1",
            t,
            Some("c"),
            vec![row("1", "A", 5, 100, t, Some("c")), row("1", "X", 1, 100, t, Some("c"))],
        ));
        let o2 = plan_order(&invoice("2", t, Some("c"), vec![row("2", "A", 3, 100, t, Some("c"))]));
        ledger.add_order("c", 10, &o1);
        ledger.add_order("c", 20, &o2);
        let c1 = invoice("C3", t, Some("c"), vec![row("C3", "A", -4, 90, t, Some("c"))]);
        let d = ledger.plan_refund(&c1, Some(7));
        let tied: Vec<_> = d.lines.iter().map(|l| (l.order_id, l.line_no, l.quantity, l.amount)).collect();
        assert_eq!(tied, vec![(Some(20), Some(1), 3, 270), (Some(10), Some(1), 1, 90)]);
        assert_eq!(d.order_id, None, "lines from two orders");
        // 4 of order 10's A are left; asking for 6 leaves 2 without an order. Another customer ties nothing.
        let c2 = invoice(
            "C4",
            t,
            Some("c"),
            vec![row("C4", "A", -6, 100, t, Some("c")), row("C4", "POST", -1, 500, t, Some("c"))],
        );
        let d = ledger.plan_refund(&c2, Some(7));
        let tied: Vec<_> = d.lines.iter().map(|l| (l.order_id, l.quantity)).collect();
        assert_eq!(tied, vec![(Some(10), 4), (None, 2)]);
        assert_eq!((d.shipping_refund, d.amount), (500, 1100));
        let c3 = invoice("C5", t, Some("x"), vec![row("C5", "X", -1, 100, t, Some("x"))]);
        assert_eq!(ledger.plan_refund(&c3, Some(8)).lines[0].order_id, None);
        let c4 = invoice("C6", t, Some("c"), vec![row("C6", "X", -1, 100, t, Some("c"))]);
        assert_eq!(ledger.plan_refund(&c4, Some(7)).order_id, Some(10));
    }

    #[test]
    fn double_rows_are_dropped_and_times_take_the_earliest() {
        let mut g = Gathered::default();
        let (mut index, mut seen) = (HashMap::new(), HashMap::new());
        let a = row("1", "A", 1, 100, "2011-01-01T10:01:00Z", Some("c"));
        let b = row("1", "X", 1, 100, "2011-01-01T10:00:00Z", Some("c"));
        assert!(g.add(&mut index, &mut seen, "a".into(), Ok(a.clone())).is_none());
        assert!(g.add(&mut index, &mut seen, "a".into(), Ok(a)).is_none());
        assert!(g.add(&mut index, &mut seen, "b".into(), Ok(b)).is_none());
        assert_eq!(g.skipped[&Skip::Double], 1);
        assert_eq!(g.invoices[0].rows.len(), 2);
        assert_eq!(g.invoices[0].at.to_rfc3339(), "2011-01-01T10:00:00+00:00");
        assert_eq!(g.invoices[0].timestamps.len(), 2);
        // A row that cannot be read refuses its whole invoice; without an invoice number it stands alone.
        let bad = |invoice: &str| Unparsed {
            line: 9,
            invoice: invoice.into(),
            error: Invalid::new("invalid_number", "Quantity", "x"),
        };
        assert!(g.add(&mut index, &mut seen, "c".into(), Err(bad("1"))).is_none());
        assert_eq!(g.invoices[0].bad.as_ref().map(|b| b.0), Some(9));
        assert_eq!(g.invoices[0].all_lines.len(), 4);
        assert!(g.add(&mut index, &mut seen, "d".into(), Err(bad(""))).is_some());
    }
}
