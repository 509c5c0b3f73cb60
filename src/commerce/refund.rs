//! Refunds reference order lines, partly or wholly, so later capabilities (points clawback, net revenue)
//! can reverse exactly what each refunded line contributed.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::order::{MAX_AMOUNT, OrderLine};
use super::validate_reference;
use crate::error::{Checked, Invalid};
use crate::members::identity::is_code;
use crate::members::{MemberId, optional_text};

/// One refunded line as sent by a caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundLineInput {
    /// The order line's `line_no`.
    pub line_no: i32,
    pub quantity: i64,
    /// Money returned for this line; defaults to the line's paid amount pro rata to quantity.
    pub amount: Option<i64>,
}

/// A refund against one order. Without lines, everything not yet refunded is refunded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundInput {
    pub channel: String,
    pub refund_no: String,
    /// The order, by id or by its `order_no` in the same channel.
    pub order_id: Option<i64>,
    pub order_no: Option<String>,
    pub refunded_at: DateTime<Utc>,
    #[serde(default)]
    pub lines: Vec<RefundLineInput>,
    #[serde(default)]
    pub shipping_refund: i64,
    pub reason: Option<String>,
}

/// A stored refund line. Imported history may hold refunds whose original order predates the data
/// (`order_id`/`line_no` absent); API refunds always reference a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RefundLine {
    pub order_id: Option<i64>,
    pub line_no: Option<i32>,
    pub sku: Option<String>,
    pub quantity: i64,
    pub amount: i64,
}

/// A validated refund, ready to store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RefundDraft {
    pub channel: String,
    pub refund_no: String,
    pub member_id: Option<MemberId>,
    pub order_id: Option<i64>,
    pub refunded_at: DateTime<Utc>,
    pub lines: Vec<RefundLine>,
    pub shipping_refund: i64,
    pub amount: i64,
    pub reason: Option<String>,
}

/// What is already refunded per line of an order: `line_no → (quantity, amount)`.
pub type Refunded = HashMap<i32, (i64, i64)>;

impl RefundInput {
    /// Check the header fields that need no order.
    pub fn validate_header(&self) -> Checked<()> {
        if !is_code(&self.channel) {
            return Err(Invalid::new(
                "invalid_code",
                "channel",
                "a channel code is lower-case letters, digits and underscores",
            ));
        }
        validate_reference(&self.refund_no, "refund_no")?;
        if self.order_id.is_none() && self.order_no.is_none() {
            return Err(Invalid::new("missing_field", "order_id", "give the order by `order_id` or `order_no`"));
        }
        if let Some(n) = &self.order_no {
            validate_reference(n, "order_no")?;
        }
        optional_text(self.reason.as_deref(), "reason", 200)?;
        Ok(())
    }

    /// Plan the refund against the order's lines and what is already refunded; rejects refunding more than
    /// was bought or paid. Pure, so both stores apply the same rule inside their transaction.
    #[allow(clippy::too_many_arguments)]
    pub fn plan(
        &self,
        member_id: Option<MemberId>,
        order_id: i64,
        order_placed_at: DateTime<Utc>,
        lines: &[OrderLine],
        shipping_fee: i64,
        already: &Refunded,
        shipping_already: i64,
    ) -> Checked<RefundDraft> {
        self.validate_header()?;
        if self.refunded_at < order_placed_at {
            return Err(Invalid::new("out_of_range", "refunded_at", "refunded_at is before the order was placed"));
        }
        let requested: Vec<RefundLineInput> = if self.lines.is_empty() {
            lines
                .iter()
                .filter_map(|l| {
                    let (q, _) = already.get(&l.line_no).copied().unwrap_or((0, 0));
                    (l.quantity > q).then(|| RefundLineInput {
                        line_no: l.line_no,
                        quantity: l.quantity - q,
                        amount: None,
                    })
                })
                .collect()
        } else {
            self.lines.clone()
        };
        let mut out = Vec::with_capacity(requested.len());
        let mut seen = std::collections::HashSet::new();
        for (i, r) in requested.iter().enumerate() {
            let at = |e: Invalid| e.within(&format!("lines[{i}]"));
            if !seen.insert(r.line_no) {
                return Err(at(Invalid::new("duplicate_line", "line_no", "a line may appear once per refund")));
            }
            let line = lines.iter().find(|l| l.line_no == r.line_no).ok_or_else(|| {
                at(Invalid::new("unknown_line", "line_no", format!("the order has no line {}", r.line_no)))
            })?;
            let (q_done, a_done) = already.get(&r.line_no).copied().unwrap_or((0, 0));
            if r.quantity < 1 || r.quantity > line.quantity - q_done {
                return Err(at(Invalid::new(
                    "out_of_range",
                    "quantity",
                    format!("line {} has {} left to refund", r.line_no, line.quantity - q_done),
                )));
            }
            let remaining_amount = line.amount - a_done;
            let amount = match r.amount {
                Some(a) => a,
                // The last units take whatever is left, so rounding never leaves a fen behind.
                None if r.quantity == line.quantity - q_done => remaining_amount,
                None => line.amount * r.quantity / line.quantity,
            };
            if amount < 0 || amount > remaining_amount {
                return Err(at(Invalid::new(
                    "out_of_range",
                    "amount",
                    format!("line {} has {} left to refund", r.line_no, remaining_amount),
                )));
            }
            out.push(RefundLine {
                order_id: Some(order_id),
                line_no: Some(r.line_no),
                sku: Some(line.sku.clone()),
                quantity: r.quantity,
                amount,
            });
        }
        if !(0..=MAX_AMOUNT).contains(&self.shipping_refund) || self.shipping_refund > shipping_fee - shipping_already {
            return Err(Invalid::new(
                "out_of_range",
                "shipping_refund",
                "shipping_refund exceeds the shipping fee left to refund",
            ));
        }
        if out.is_empty() && self.shipping_refund == 0 {
            return Err(Invalid::new("nothing_to_refund", "lines", "the order has nothing left to refund"));
        }
        let amount = out.iter().map(|l| l.amount).sum::<i64>() + self.shipping_refund;
        Ok(RefundDraft {
            channel: self.channel.clone(),
            refund_no: self.refund_no.clone(),
            member_id,
            order_id: Some(order_id),
            refunded_at: self.refunded_at,
            lines: out,
            shipping_refund: self.shipping_refund,
            amount,
            reason: optional_text(self.reason.as_deref(), "reason", 200)?,
        })
    }
}

/// A stored refund as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RefundView {
    pub id: i64,
    pub member_id: Option<MemberId>,
    pub channel: String,
    pub refund_no: String,
    pub order_id: Option<i64>,
    pub refunded_at: DateTime<Utc>,
    pub lines: Vec<RefundLine>,
    pub shipping_refund: i64,
    pub amount: i64,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commerce::LineKind;

    fn lines() -> Vec<OrderLine> {
        vec![
            OrderLine {
                line_no: 1,
                sku: "A".into(),
                kind: LineKind::Product,
                quantity: 3,
                unit_price: 1000,
                discount: 1,
                amount: 2999,
            },
            OrderLine {
                line_no: 2,
                sku: "B".into(),
                kind: LineKind::Product,
                quantity: 1,
                unit_price: 500,
                discount: 0,
                amount: 500,
            },
        ]
    }

    fn input(lines: Vec<RefundLineInput>) -> RefundInput {
        RefundInput {
            channel: "web".into(),
            refund_no: "R1".into(),
            order_id: Some(7),
            order_no: None,
            refunded_at: "2026-01-02T00:00:00Z".parse().unwrap(),
            lines,
            shipping_refund: 0,
            reason: None,
        }
    }

    #[test]
    fn partial_refunds_never_leave_a_fen_behind() {
        let placed = "2026-01-01T00:00:00Z".parse().unwrap();
        let one = RefundLineInput { line_no: 1, quantity: 1, amount: None };
        let d = input(vec![one.clone()]).plan(Some(1), 7, placed, &lines(), 0, &Refunded::new(), 0).unwrap();
        assert_eq!(d.amount, 999);
        let mut already = Refunded::new();
        already.insert(1, (1, 999));
        let rest = RefundLineInput { line_no: 1, quantity: 2, amount: None };
        let d = input(vec![rest]).plan(Some(1), 7, placed, &lines(), 0, &already, 0).unwrap();
        assert_eq!(d.amount, 2000);
        already.insert(1, (3, 2999));
        let e = input(vec![one]).plan(Some(1), 7, placed, &lines(), 0, &already, 0).unwrap_err();
        assert_eq!(e.field, "lines[0].quantity");
    }

    #[test]
    fn whole_order_refund_takes_what_is_left() {
        let placed = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut already = Refunded::new();
        already.insert(1, (1, 999));
        let d = input(vec![]).plan(None, 7, placed, &lines(), 0, &already, 0).unwrap();
        assert_eq!(d.amount, 2000 + 500);
        assert_eq!(d.lines.len(), 2);
    }
}
