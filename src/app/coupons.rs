//! Coupons (优惠券): templates, issuing (singly or in bulk, idempotent by the caller's key), pricing a cart
//! without writing, redeeming a coupon on an order (idempotent per order), voiding an unused coupon, and
//! giving coupons back when their order is refunded. The decisions are the pure kernel's
//! (`loyalty::coupons`); the store runs them under the template's or the coupon's lock.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::commerce::{LineKind, OrderView};
use crate::error::Invalid;
use crate::loyalty::coupons::{self, Cart, CartLine, CodeError, Coupon, CouponTemplate, Quote, RefundPolicy};
use crate::members::MemberId;
use crate::security::{Principal, content_digest};
use crate::store::{Actor, CouponRefusal, CouponTemplateRecord, IssueRefusal, IssueResult, IssueStored};

use super::{App, AppError};

/// Most members one issue request may name.
pub const MAX_ISSUE_BATCH: usize = 10_000;

/// Why a coupon request was refused; the HTTP layer maps each to a status and a code.
#[derive(Debug)]
pub enum CouponFault {
    /// Bad input, the field named (422).
    Invalid(Invalid),
    /// The code cannot be a coupon code (length, alphabet, check character): `field` names where it was given.
    InvalidCode {
        field: String,
        error: CodeError,
    },
    /// No coupon has this (well-formed) code.
    NotFound(String),
    NoSuchTemplate,
    NoSuchMember,
    NoSuchOrder,
    /// The order is not the coupon holder's.
    NotYourOrder,
    /// Priced on the order, the coupon does not apply: the kernel's reason code and words.
    NotApplicable {
        code: &'static str,
        message: String,
    },
    /// The coupon's state refuses the transition (already used on another order, voided, expired).
    Refused(CouponRefusal),
    KeyReused,
}

impl From<Invalid> for CouponFault {
    fn from(e: Invalid) -> Self {
        CouponFault::Invalid(e)
    }
}

/// What an issue request came to.
#[derive(Debug)]
pub struct Issued {
    pub result: IssueResult,
    /// A retry with the same key: the original result, nothing new issued.
    pub replayed: bool,
}

/// A cart to price with coupons, as the checkout sends it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceRequest {
    pub member_id: MemberId,
    pub channel: String,
    pub lines: Vec<CartLine>,
    #[serde(default)]
    pub shipping_fee: i64,
    /// Codes in the order the member picked them (any case; dashes and spaces ignored).
    pub coupons: Vec<String>,
}

/// Read a code as typed; the error names the field it came in.
fn parse_code(input: &str, field: &str) -> Result<String, CouponFault> {
    coupons::check_code(input).map_err(|error| CouponFault::InvalidCode { field: field.to_string(), error })
}

impl App {
    /// Create or replace a coupon template (validated; the error names the field). Audited.
    pub async fn put_coupon_template(
        &self,
        template: &CouponTemplate,
        who: &Principal,
    ) -> Result<Result<CouponTemplateRecord, Invalid>, AppError> {
        if let Err(e) = template.validate() {
            return Ok(Err(e));
        }
        let actor = Actor { id: who.key_id.clone(), at: self.now() };
        Ok(Ok(self.store.put_coupon_template(template, &actor).await?))
    }

    /// Issue one coupon of a template to each member named (a member named twice receives two, within the
    /// limit), idempotent on `key`. Members who do not exist or are not active are refused with
    /// `no_such_member`; the others are judged by the store under the template's lock. Audited.
    pub async fn issue_coupons(
        &self,
        template_id: &str,
        members: &[MemberId],
        key: &str,
        who: &Principal,
    ) -> Result<Result<Issued, CouponFault>, AppError> {
        if members.is_empty() {
            return Ok(Err(Invalid::new("too_few", "member_ids", "name at least one member").into()));
        }
        if members.len() > MAX_ISSUE_BATCH {
            let msg = format!("at most {MAX_ISSUE_BATCH} members per request");
            return Ok(Err(Invalid::new("too_many", "member_ids", msg).into()));
        }
        let distinct: Vec<MemberId> = members.iter().copied().collect::<HashSet<_>>().into_iter().collect();
        let facts = self.store.member_facts(&distinct).await?;
        let known = |m: &MemberId| facts.get(m).is_some_and(|f| f.active);
        let (index, to_store): (Vec<usize>, Vec<MemberId>) =
            members.iter().enumerate().filter(|(_, m)| known(m)).map(|(i, m)| (i, *m)).unzip();
        let digest = hex::encode(content_digest(&members));
        let actor = Actor { id: who.key_id.clone(), at: self.now() };
        let scoped = format!("api:{key}");
        let (mut result, replayed) =
            match self.store.issue_coupons(template_id, &to_store, &scoped, &digest, actor.at, Some(&actor)).await? {
                IssueStored::Created(r) => (r, false),
                IssueStored::Replayed(r) => (r, true),
                IssueStored::KeyReused => return Ok(Err(CouponFault::KeyReused)),
                IssueStored::NoSuchTemplate => return Ok(Err(CouponFault::NoSuchTemplate)),
            };
        // The store numbered its refusals in the list it was given; give them the request's positions.
        for r in &mut result.refused {
            r.index = index.get(r.index).copied().unwrap_or(r.index);
        }
        for (i, m) in members.iter().enumerate().filter(|(_, m)| !known(m)) {
            result.refused.push(IssueRefusal {
                index: i,
                member_id: *m,
                code: "no_such_member".into(),
                message: format!("member {m} does not exist or is not active"),
            });
        }
        result.refused.sort_by_key(|r| r.index);
        Ok(Ok(Issued { result, replayed }))
    }

    /// A coupon by code as typed, in its state now: one whose window closed since the last sweep reads as
    /// expired already.
    pub async fn coupon(&self, code: &str) -> Result<Result<Coupon, CouponFault>, AppError> {
        let code = match parse_code(code, "code") {
            Ok(c) => c,
            Err(f) => return Ok(Err(f)),
        };
        let now = self.now();
        Ok(self.store.coupon(&code).await?.map(|c| coupons::expire(&c, now)).ok_or(CouponFault::NotFound(code)))
    }

    /// A member's coupons, newest first, each in its state now (as [`App::coupon`]).
    pub async fn member_coupons(&self, member: MemberId) -> Result<Vec<Coupon>, AppError> {
        let now = self.now();
        Ok(self.store.member_coupons(member).await?.iter().map(|c| coupons::expire(c, now)).collect())
    }

    /// The coupon sweep as of `now`, in rounds of 500 until nothing is left: unused coupons past their
    /// window are recorded as expired (`coupon.expired`), and members are reminded once of unused coupons
    /// whose window closes within `loyalty.expiring_soon_days` (`coupon.expiring`). Idempotent: a rerun
    /// finds nothing more. Returns (expired, reminded).
    pub async fn sweep_coupons(&self, now: DateTime<Utc>) -> Result<(u64, u64), AppError> {
        let remind_until = now + chrono::Duration::days(self.config.loyalty.expiring_soon_days.max(0));
        let (mut expired, mut reminded) = (0, 0);
        loop {
            let round = self.store.sweep_coupons(now, remind_until, 500).await?;
            expired += round.expired;
            reminded += round.reminded;
            // A full round that changed nothing would come back the same: stop rather than spin.
            if !round.more || round.expired + round.reminded == 0 {
                return Ok((expired, reminded));
            }
        }
    }

    /// Price a cart with the member's coupons, in the order given, at this moment. Writes nothing.
    pub async fn price_cart(&self, req: &PriceRequest) -> Result<Result<Quote, CouponFault>, AppError> {
        let cart = Cart {
            member_id: req.member_id,
            channel: req.channel.clone(),
            lines: req.lines.clone(),
            shipping_fee: req.shipping_fee,
        };
        if let Err(e) = cart.validate() {
            return Ok(Err(e.into()));
        }
        if req.coupons.len() > 20 {
            return Ok(Err(Invalid::new("too_many", "coupons", "at most 20 coupons per cart").into()));
        }
        let mut held = Vec::with_capacity(req.coupons.len());
        for (i, typed) in req.coupons.iter().enumerate() {
            let code = match parse_code(typed, &format!("coupons[{i}]")) {
                Ok(c) => c,
                Err(f) => return Ok(Err(f)),
            };
            let Some(coupon) = self.store.coupon(&code).await? else {
                return Ok(Err(CouponFault::NotFound(code)));
            };
            let Some(t) = self.store.coupon_template(&coupon.template_id).await? else {
                return Ok(Err(CouponFault::NoSuchTemplate));
            };
            held.push((coupon, t.template));
        }
        let pairs: Vec<(&Coupon, &CouponTemplate)> = held.iter().map(|(c, t)| (c, t)).collect();
        Ok(coupons::price(&cart, &pairs, self.now()).map_err(CouponFault::Invalid))
    }

    /// The order as a cart for its coupons: merchandise lines at what they cost after line discounts (the
    /// coupon's own discount is the order-level discount), categories from the catalog.
    async fn order_cart(&self, order: &OrderView, member: MemberId) -> Result<Cart, AppError> {
        let skus: Vec<String> = order.lines.iter().map(|l| l.sku.clone()).collect();
        let attrs = self.store.sku_attributes(&skus).await?;
        let lines = order
            .lines
            .iter()
            .filter(|l| l.kind == LineKind::Product && l.quantity > 0)
            .map(|l| CartLine {
                line_no: l.line_no,
                sku: l.sku.clone(),
                category_path: attrs.get(&l.sku).and_then(|(c, _)| c.clone()),
                quantity: l.quantity,
                unit_price: l.unit_price,
                amount: l.amount.clamp(0, l.quantity.saturating_mul(l.unit_price).max(0)),
            })
            .collect();
        Ok(Cart { member_id: member, channel: order.channel.clone(), lines, shipping_fee: order.shipping_fee.max(0) })
    }

    /// Record a coupon's use on an order. Idempotent: the same order again answers with the same record; another
    /// order is refused. The order must be the coupon holder's and the coupon must apply to it (priced on the
    /// order's merchandise lines). Judged again under the coupon's lock, so two orders cannot both use it.
    pub async fn redeem_coupon(
        &self,
        code: &str,
        order_id: i64,
        who: &Principal,
    ) -> Result<Result<Coupon, CouponFault>, AppError> {
        let coupon = match self.coupon(code).await? {
            Ok(c) => c,
            Err(f) => return Ok(Err(f)),
        };
        let order_ref = order_id.to_string();
        if let coupons::CouponState::Redeemed { order_ref: used, .. } = &coupon.state {
            if *used == order_ref {
                return Ok(Ok(coupon));
            }
            return Ok(Err(CouponFault::Refused(CouponRefusal::AlreadyRedeemed { order_ref: used.clone() })));
        }
        let Some(order) = self.store.order(order_id).await? else {
            return Ok(Err(CouponFault::NoSuchOrder));
        };
        if order.member_id != Some(coupon.member_id) {
            return Ok(Err(CouponFault::NotYourOrder));
        }
        let Some(t) = self.store.coupon_template(&coupon.template_id).await? else {
            return Ok(Err(CouponFault::NoSuchTemplate));
        };
        let cart = self.order_cart(&order, coupon.member_id).await?;
        let now = self.now();
        if cart.lines.is_empty() {
            let message = "the order has no merchandise lines".to_string();
            return Ok(Err(CouponFault::NotApplicable { code: "no_qualifying_items", message }));
        }
        let quote = match coupons::price(&cart, &[(&coupon, &t.template)], now) {
            Ok(q) => q,
            Err(e) => return Ok(Err(e.into())),
        };
        if let Some(n) = quote.not_applied.first() {
            return Ok(Err(CouponFault::NotApplicable { code: n.reason.code(), message: n.message.clone() }));
        }
        let op: crate::store::CouponOp = Box::new(move |c| coupons::redeem(&c, &order_ref, now));
        let actor = Actor { id: who.key_id.clone(), at: now };
        Ok(match self.store.update_coupon(&coupon.code, op, now, Some(&actor)).await? {
            None => Err(CouponFault::NotFound(coupon.code)),
            Some(r) => r.map_err(CouponFault::Refused),
        })
    }

    /// Withdraw an unused coupon (an operator's correction). Voiding again changes nothing. Audited.
    pub async fn void_coupon(&self, code: &str, who: &Principal) -> Result<Result<Coupon, CouponFault>, AppError> {
        let code = match parse_code(code, "code") {
            Ok(c) => c,
            Err(f) => return Ok(Err(f)),
        };
        let now = self.now();
        let op: crate::store::CouponOp = Box::new(|c| coupons::void(&c));
        let actor = Actor { id: who.key_id.clone(), at: now };
        Ok(match self.store.update_coupon(&code, op, now, Some(&actor)).await? {
            None => Err(CouponFault::NotFound(code)),
            Some(r) => r.map_err(CouponFault::Refused),
        })
    }

    /// After a refund of `order_id` is recorded: coupons used on the order come back per the default
    /// policy (a whole-order refund returns a coupon whose window is still open). Safe to repeat.
    pub async fn return_coupons_of(&self, order_id: i64) -> Result<Vec<Coupon>, AppError> {
        let now = self.now();
        let order_ref = order_id.to_string();
        let op: crate::store::RefundCouponOp =
            Box::new(move |c, extent| coupons::on_refund(c, &order_ref, extent, RefundPolicy::default(), now));
        Ok(self.store.refund_coupons(order_id, op, now).await?)
    }
}
