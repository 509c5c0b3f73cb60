//! Orders: `(channel, order_no)` is the natural key, so a channel's retry of the same order is recognised;
//! the same key with different content is a conflict, never an overwrite.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Sku, validate_currency, validate_reference, validate_sku_code};
use crate::error::{Checked, Invalid};
use crate::members::identity::is_code;
use crate::members::{Identity, IdentityInput, MemberId, optional_text};

/// Most lines a single order may carry.
pub const MAX_LINES: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Created,
    #[default]
    Paid,
    Shipped,
    Completed,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Created => "created",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Completed => "completed",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<OrderStatus> {
        [Self::Created, Self::Paid, Self::Shipped, Self::Completed, Self::Cancelled]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// What a line is: only `product` lines are merchandise; loyalty and analytics treat the others apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    #[default]
    Product,
    /// Gift cards and vouchers sold: money, not merchandise.
    GiftCard,
    /// Services and fees charged to the customer (bank charges, marketplace fees, donations).
    Fee,
    /// Manual adjustments by the shop.
    Adjustment,
}

impl LineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::Product => "product",
            LineKind::GiftCard => "gift_card",
            LineKind::Fee => "fee",
            LineKind::Adjustment => "adjustment",
        }
    }

    pub fn parse(s: &str) -> Option<LineKind> {
        [Self::Product, Self::GiftCard, Self::Fee, Self::Adjustment].into_iter().find(|k| k.as_str() == s)
    }
}

/// An order line as sent by a caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineInput {
    pub sku: String,
    pub quantity: i64,
    /// Unit price in minor units (fen).
    pub unit_price: i64,
    /// Discount on this line in minor units.
    #[serde(default)]
    pub discount: i64,
    #[serde(default)]
    pub kind: LineKind,
    /// Catalog hints: used to create the SKU if the catalog does not know it yet.
    pub name: Option<String>,
    pub category_path: Option<String>,
    pub brand: Option<String>,
}

/// An order as sent by a caller. Give `member_id` or `identity` for a member's order, neither for a guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderInput {
    pub channel: String,
    pub order_no: String,
    /// A store code, for orders placed in a physical store.
    pub store: Option<String>,
    pub member_id: Option<MemberId>,
    /// Any identity of the buyer; an unknown identity enrols a new member from this channel.
    pub identity: Option<IdentityInput>,
    #[serde(default)]
    pub status: OrderStatus,
    pub placed_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    /// ISO 4217; defaults to the shop's currency.
    pub currency: Option<String>,
    pub lines: Vec<LineInput>,
    #[serde(default)]
    pub shipping_fee: i64,
    /// Order-level discount (e.g. a coupon) in minor units, on top of line discounts.
    #[serde(default)]
    pub order_discount: i64,
    pub coupon_code: Option<String>,
    /// If given, must equal the computed total; a guard against mis-mapped amounts.
    pub total: Option<i64>,
}

/// Whose order this is, before identity resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Hash)]
pub enum Buyer {
    Member(MemberId),
    Identity(Identity),
    Guest,
}

/// A stored order line. `amount = quantity × unit_price − discount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderLine {
    /// 1-based position in the order; refunds refer to it.
    pub line_no: i32,
    pub sku: String,
    pub kind: LineKind,
    pub quantity: i64,
    pub unit_price: i64,
    pub discount: i64,
    pub amount: i64,
}

/// A validated order with its amounts computed, ready to be resolved and stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderDraft {
    pub channel: String,
    pub order_no: String,
    pub store: Option<String>,
    pub buyer: Buyer,
    pub status: OrderStatus,
    pub placed_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub currency: String,
    pub lines: Vec<OrderLine>,
    pub subtotal: i64,
    pub discount_total: i64,
    pub shipping_fee: i64,
    pub total: i64,
    pub coupon_code: Option<String>,
    /// Catalog entries to create if missing (from line hints); never overwrites an existing SKU.
    #[serde(skip)]
    pub sku_hints: Vec<Sku>,
}

impl OrderDraft {
    /// The order as it is stored under `id` for `member` (0 for a guest), before any refund: what a writer
    /// hands on without reading its own rows back.
    pub fn view(&self, id: i64, member: MemberId, created_at: DateTime<Utc>) -> OrderView {
        OrderView {
            id,
            member_id: (member != 0).then_some(member),
            channel: self.channel.clone(),
            order_no: self.order_no.clone(),
            store: self.store.clone(),
            status: self.status,
            placed_at: self.placed_at,
            paid_at: self.paid_at,
            currency: self.currency.clone(),
            lines: self.lines.clone(),
            subtotal: self.subtotal,
            discount_total: self.discount_total,
            shipping_fee: self.shipping_fee,
            total: self.total,
            coupon_code: self.coupon_code.clone(),
            refunded_amount: 0,
            created_at,
        }
    }
}

/// The largest amount we accept anywhere: 10^13 fen (100 billion yuan) keeps every sum far from i64 overflow.
pub const MAX_AMOUNT: i64 = 10_000_000_000_000;

fn amount(v: i64, field: &str) -> Checked<i64> {
    if !(0..=MAX_AMOUNT).contains(&v) {
        return Err(Invalid::new(
            "out_of_range",
            field,
            format!("`{field}` must be between 0 and {MAX_AMOUNT} (minor units)"),
        ));
    }
    Ok(v)
}

impl OrderInput {
    /// Validate and compute amounts. Nothing half-valid gets through: any bad line rejects the whole order.
    pub fn validate(&self, default_currency: &str, now: DateTime<Utc>) -> Checked<OrderDraft> {
        if !is_code(&self.channel) {
            return Err(Invalid::new(
                "invalid_code",
                "channel",
                "a channel code is lower-case letters, digits and underscores",
            ));
        }
        validate_reference(&self.order_no, "order_no")?;
        if let Some(s) = &self.store
            && !is_code(s)
        {
            return Err(Invalid::new(
                "invalid_code",
                "store",
                "a store code is lower-case letters, digits and underscores",
            ));
        }
        let buyer = match (&self.member_id, &self.identity) {
            (Some(_), Some(_)) => {
                return Err(Invalid::new("ambiguous_buyer", "identity", "give member_id or identity, not both"));
            }
            (Some(id), None) if *id <= 0 => {
                return Err(Invalid::new("out_of_range", "member_id", "member_id must be positive"));
            }
            (Some(id), None) => Buyer::Member(*id),
            (None, Some(i)) => Buyer::Identity(i.normalize().map_err(|e| e.within("identity"))?),
            (None, None) => Buyer::Guest,
        };
        if self.placed_at > now + chrono::Duration::hours(1) {
            return Err(Invalid::new("out_of_range", "placed_at", "placed_at is in the future"));
        }
        if let Some(p) = self.paid_at
            && p < self.placed_at - chrono::Duration::minutes(5)
        {
            return Err(Invalid::new("out_of_range", "paid_at", "paid_at is before placed_at"));
        }
        let currency = self.currency.clone().unwrap_or_else(|| default_currency.to_string());
        validate_currency(&currency)?;
        if self.lines.len() > MAX_LINES {
            return Err(Invalid::new("too_many", "lines", format!("an order has at most {MAX_LINES} lines")));
        }
        if self.lines.is_empty() && self.total.is_none() {
            return Err(Invalid::new(
                "missing_field",
                "lines",
                "an order needs lines, or a total when lines are unknown",
            ));
        }
        let mut lines = Vec::with_capacity(self.lines.len());
        let mut sku_hints = Vec::new();
        let (mut subtotal, mut line_discounts) = (0i64, 0i64);
        for (i, l) in self.lines.iter().enumerate() {
            let line = l.validate().map_err(|e| e.within(&format!("lines[{i}]")))?;
            subtotal += line.quantity * line.unit_price;
            line_discounts += line.discount;
            if let Some(name) =
                optional_text(l.name.as_deref(), "name", 200).map_err(|e| e.within(&format!("lines[{i}]")))?
            {
                sku_hints.push(Sku {
                    sku: line.sku.clone(),
                    name,
                    category_path: optional_text(l.category_path.as_deref(), "category_path", 200)
                        .map_err(|e| e.within(&format!("lines[{i}]")))?,
                    brand: optional_text(l.brand.as_deref(), "brand", 100)
                        .map_err(|e| e.within(&format!("lines[{i}]")))?,
                    list_price: line.unit_price,
                    available: true,
                });
            }
            lines.push(OrderLine { line_no: i as i32 + 1, ..line });
        }
        let shipping_fee = amount(self.shipping_fee, "shipping_fee")?;
        let order_discount = amount(self.order_discount, "order_discount")?;
        let computed = subtotal - line_discounts - order_discount + shipping_fee;
        let total = match (self.lines.is_empty(), self.total) {
            (true, Some(t)) => amount(t, "total")?,
            (false, Some(t)) if t != computed => {
                return Err(Invalid::new(
                    "total_mismatch",
                    "total",
                    format!("total {t} does not equal lines − discounts + shipping = {computed}"),
                ));
            }
            _ => computed,
        };
        if total < 0 {
            return Err(Invalid::new("out_of_range", "order_discount", "discounts exceed the order's value"));
        }
        let coupon_code = optional_text(self.coupon_code.as_deref(), "coupon_code", 64)?;
        Ok(OrderDraft {
            channel: self.channel.clone(),
            order_no: self.order_no.clone(),
            store: self.store.clone(),
            buyer,
            status: self.status,
            // The precision both stores keep, so the draft equals the stored order and a writer can answer
            // with it instead of reading the order back.
            placed_at: self.placed_at.trunc_subsecs(6),
            paid_at: self.paid_at.map(|p| p.trunc_subsecs(6)),
            currency,
            lines,
            subtotal,
            discount_total: line_discounts + order_discount,
            shipping_fee,
            total,
            coupon_code,
            sku_hints,
        })
    }
}

impl LineInput {
    fn validate(&self) -> Checked<OrderLine> {
        validate_sku_code(&self.sku, "sku")?;
        if !(1..=1_000_000).contains(&self.quantity) {
            return Err(Invalid::new("out_of_range", "quantity", "quantity must be between 1 and 1000000"));
        }
        let unit_price = amount(self.unit_price, "unit_price")?;
        let gross = self
            .quantity
            .checked_mul(unit_price)
            .filter(|g| *g <= MAX_AMOUNT)
            .ok_or_else(|| Invalid::new("out_of_range", "unit_price", "quantity × unit_price is too large"))?;
        let discount = amount(self.discount, "discount")?;
        if discount > gross {
            return Err(Invalid::new("out_of_range", "discount", "discount exceeds quantity × unit_price"));
        }
        Ok(OrderLine {
            line_no: 0,
            sku: self.sku.clone(),
            kind: self.kind,
            quantity: self.quantity,
            unit_price,
            discount,
            amount: gross - discount,
        })
    }
}

/// A stored order as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrderView {
    pub id: i64,
    /// Absent for guest orders.
    pub member_id: Option<MemberId>,
    pub channel: String,
    pub order_no: String,
    pub store: Option<String>,
    pub status: OrderStatus,
    pub placed_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub currency: String,
    pub lines: Vec<OrderLine>,
    pub subtotal: i64,
    pub discount_total: i64,
    pub shipping_fee: i64,
    pub total: i64,
    pub coupon_code: Option<String>,
    /// Sum of refunds recorded against this order.
    pub refunded_amount: i64,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, q: i64, p: i64) -> LineInput {
        LineInput {
            sku: sku.into(),
            quantity: q,
            unit_price: p,
            discount: 0,
            kind: LineKind::Product,
            name: None,
            category_path: None,
            brand: None,
        }
    }

    fn order(lines: Vec<LineInput>) -> OrderInput {
        OrderInput {
            channel: "web".into(),
            order_no: "A1".into(),
            store: None,
            member_id: Some(1),
            identity: None,
            status: OrderStatus::Paid,
            placed_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            paid_at: None,
            currency: None,
            lines,
            shipping_fee: 800,
            order_discount: 1000,
            coupon_code: None,
            total: None,
        }
    }

    #[test]
    fn totals_are_computed_in_minor_units() {
        let now = "2026-02-01T00:00:00Z".parse().unwrap();
        let d = order(vec![line("A", 2, 1999), LineInput { discount: 500, ..line("B", 1, 5000) }])
            .validate("CNY", now)
            .unwrap();
        assert_eq!(d.subtotal, 2 * 1999 + 5000);
        assert_eq!(d.discount_total, 1500);
        assert_eq!(d.total, 2 * 1999 + 5000 - 1500 + 800);
        assert_eq!(d.lines[1].line_no, 2);
        assert_eq!(d.lines[1].amount, 4500);
    }

    #[test]
    fn one_bad_line_rejects_the_order_and_names_it() {
        let now = "2026-02-01T00:00:00Z".parse().unwrap();
        let e = order(vec![line("A", 1, 100), line("B", 0, 100)]).validate("CNY", now).unwrap_err();
        assert_eq!(e.field, "lines[1].quantity");
        let mut o = order(vec![line("A", 1, 100)]);
        o.total = Some(1);
        assert_eq!(o.validate("CNY", now).unwrap_err().code, "total_mismatch");
        let mut o = order(vec![line("A", 1, 100)]);
        o.currency = Some("rmb".into());
        assert_eq!(o.validate("CNY", now).unwrap_err().field, "currency");
    }
}
