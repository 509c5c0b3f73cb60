//! The coupon kernel (优惠券): templates, issuing codes, pricing a cart with coupons, and the coupon's state
//! transitions (redeem, refund, void, expire). Pure: no I/O, no clock (every function takes `now` or `at`),
//! no floats for money (fen, `i64`, products in `i128`), randomness only from the generator the caller
//! passes, so a seeded generator gives the same codes every time.
//!
//! # Templates
//!
//! A [`CouponTemplate`] is what an operator configures (TOML or JSON, validated with the field named): one
//! [`Benefit`], a [`Scope`] (which lines and channels), a [`Validity`], a per-member limit, an optional total
//! quantity and whether it is `stackable`. A [`Coupon`] is one issued instance: a code, the member who holds
//! it, its own validity window (fixed by the template, or N days from issue) and its [`CouponState`]. Coupons
//! are plain records: the store persists them as they are and every transition returns the new record.
//!
//! # Codes
//!
//! A code is [`CODE_BODY_LEN`] random characters plus one check character, from a 31-symbol alphabet without
//! the look-alikes `0 O 1 I L` ([`CODE_ALPHABET`]). It is shown in groups of four (`7KQ2-MXWD-93TG`) and read
//! back case-insensitively with spaces and dashes ignored ([`check_code`]). With the body's characters weighted
//! 2, 3, …, 12 and the check character weighted 1, the check character makes the weighted sum of the symbol
//! values divisible by 31. Since 31 is prime and the weights are distinct and below 31, **every
//! single-character typo and every swap of two different characters is rejected** before anything is looked
//! up. The 11 random characters carry 31¹¹ ≈ 2.5 × 10¹⁶ (54 bits), so codes cannot be guessed; uniqueness
//! within a batch is guaranteed here (a collision is redrawn), uniqueness across batches by the store's unique
//! index (redraw with [`generate_code`] on conflict).
//!
//! # Pricing ([`price`])
//!
//! Pricing writes nothing: it takes the cart, the coupons the member chose (each with its template) and
//! `now`, and returns a [`Quote`].
//!
//! 1. **Order.** Coupons are judged and applied **in the order given** (the checkout lists them in the order
//!    the member picked them, or best first). A coupon's threshold and base are what is still payable on its
//!    qualifying lines after the coupons applied before it, so a line is never discounted below zero and the
//!    payable total is never negative.
//! 2. **Checks**, in this order; the first that fails is the reason the coupon does not apply: the coupon
//!    belongs to the template and to the cart's member, the code is not listed twice, the coupon is
//!    `available`, `valid_from ≤ now < valid_until`, the cart's channel is in scope, at least one line is in
//!    scope, stacking (below), then the benefit's own condition (threshold, number of items, a shipping fee to
//!    waive, a discount of at least one fen).
//! 3. **Stacking.** At most one coupon per order, unless every coupon applied is `stackable`: a coupon is
//!    refused if a coupon already applied is not stackable, or if it is not stackable itself and another
//!    coupon is already applied. A coupon that does not apply (threshold not met, …) blocks nothing.
//! 4. **Scope.** A line is in scope unless its SKU is in `excluded_skus` or its category lies under one of
//!    `excluded_categories`; if `skus` or `categories` is given, it must also match one of them (either
//!    list). Category prefixes match whole `/` segments: `美妆/护肤` covers `美妆/护肤/面霜`, not
//!    `美妆/护肤品`. Exclusions win.
//! 5. **Benefits.** With `S` the payable amount of the in-scope lines:
//!    * `amount_off` (满减): if `S ≥ threshold`, `min(amount_off, S)`.
//!    * `percent_off` (折扣): if `S ≥ threshold`, `⌊S × off_bp / 10 000⌋`, at most `max_discount` (floored:
//!      the fraction of a fen stays with the shop).
//!    * `nth_item` (第N件X折): the in-scope units are counted across lines (`Q`); `⌊Q / n⌋` units are
//!      discounted (at most `max_units`), and they are **the cheapest in-scope units**, by the unit's payable
//!      amount. A line's units are worth `⌊payable / quantity⌋` each, its last unit also takes the remainder
//!      (as the refund planner does); ties go to the earlier line. Each chosen unit is discounted
//!      `⌊unit × off_bp / 10 000⌋`.
//!    * `free_gift` (满赠): if `S ≥ threshold`, the gift SKU is added at zero price ([`Quote::gifts`]).
//!    * `free_shipping` (包邮): if `S ≥ threshold` and the cart has a shipping fee not yet waived, the whole
//!      fee is waived ([`Quote::shipping_waived`]).
//! 6. **Allocation.** A coupon's discount is spread over its in-scope lines in proportion to what each still
//!    has to pay: line `i` gets `⌊D × payableᵢ / S⌋`, and the remaining fen (fewer than there are lines) go to
//!    the last in-scope line, spilling to the line before it if the last cannot take them all. The shares sum
//!    to the discount exactly and no line gets more than it pays, so a refund reverses a coupon line by line.
//!    An `nth_item` discount is allocated the same way (not to the discounted units' lines): the discount was
//!    earned by the whole group of units.
//!
//! # State transitions
//!
//! `available → redeemed {order_ref, at}` by [`redeem`], idempotent for the same order (a retry returns the
//! same record, with the original time) and refused for another. [`on_refund`] applies a [`RefundPolicy`]
//! when an order is refunded; [`void`] withdraws an unused coupon; [`expire`] records that an available
//! coupon's window has passed (pricing and redeeming judge `valid_until` themselves, so the sweep is for
//! reports, not for correctness).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Timelike, Utc};
use chrono_tz::Tz;
use rand::Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::commerce::order::MAX_AMOUNT;
use crate::error::{Checked, Invalid};
use crate::members::MemberId;

#[cfg(test)]
mod tests;

/// One basis point scale: 10 000 = 100 %.
pub const BP: i64 = 10_000;
/// The symbols of a coupon code: digits and capitals without `0 O 1 I L`; 31 of them (a prime, for the check).
pub const CODE_ALPHABET: &[u8; 31] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Random characters in a code; one check character follows.
pub const CODE_BODY_LEN: usize = 11;
/// Characters in a canonical code (body and check character).
pub const CODE_LEN: usize = CODE_BODY_LEN + 1;
/// Largest per-member limit a template may set.
pub const MAX_PER_MEMBER: u32 = 1_000;
/// Largest validity, in days from issue (ten years).
pub const MAX_VALID_DAYS: u32 = 3_650;
/// Lines a cart may have.
pub const MAX_CART_LINES: usize = 1_000;
/// Units a cart line may have.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// Gift units one coupon may add.
pub const MAX_GIFT_QUANTITY: i64 = 100;

/// Realistic templates of a tea-and-beauty brand 「青禾」, used in tests and shown to operators as a starting
/// point: 满200减30, 9折最高减50, 第二件半价 on tea, 满99包邮 and a gift over 299.
pub const EXAMPLE_TOML: &str = r#"
[[templates]]
id = "full200-minus30"
name = "满200减30"
description = "30 yuan off merchandise of 200 yuan or more; gift cards excluded"
per_member_limit = 1
total_quantity = 50000
benefit = { kind = "amount_off", threshold = 20000, amount_off = 3000 }
validity = { kind = "fixed", start = "2026-10-20T00:00:00+08:00", end = "2026-11-12T00:00:00+08:00" }
scope = { excluded_categories = ["礼品卡"] }

[[templates]]
id = "ten-percent-off"
name = "9折最高减50"
description = "10% off, at most 50 yuan off, on the own-brand shop and the mini-program"
per_member_limit = 2
benefit = { kind = "percent_off", off_bp = 1000, max_discount = 5000 }
validity = { kind = "days_from_issue", days = 30 }
scope = { channels = ["tmall_flagship", "wechat_mp"], excluded_categories = ["礼品卡"] }

[[templates]]
id = "tea-second-half"
name = "第二件半价"
description = "Every second tea unit at half price (the cheaper ones)"
per_member_limit = 1
stackable = true
benefit = { kind = "nth_item", n = 2, off_bp = 5000 }
validity = { kind = "days_from_issue", days = 14 }
scope = { categories = ["茶饮"], excluded_skus = ["TEA-GIFTBOX-2026"] }

[[templates]]
id = "free-shipping-99"
name = "满99包邮"
per_member_limit = 5
stackable = true
benefit = { kind = "free_shipping", threshold = 9900 }
validity = { kind = "days_from_issue", days = 7 }

[[templates]]
id = "gift-over-299"
name = "满299赠旅行装"
description = "A travel-size toner with skincare orders of 299 yuan or more"
benefit = { kind = "free_gift", gift_sku = "SKIN-TONER-30ML", gift_quantity = 1, threshold = 29900 }
validity = { kind = "fixed", start = "2026-11-01T00:00:00+08:00", end = "2026-12-01T00:00:00+08:00" }
scope = { categories = ["美妆/护肤"] }
"#;

// ---------------------------------------------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------------------------------------------

/// What an operator configures once and issues many times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouponTemplate {
    /// Stable id (1-64 lower-case letters, digits, `_`, `-`); coupons refer to it.
    pub id: String,
    /// What the member sees (`满200减30`).
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub benefit: Benefit,
    #[serde(default)]
    pub scope: Scope,
    pub validity: Validity,
    /// How many coupons of this template one member may receive (any state counts: a used coupon still
    /// counts, so using one does not make room for another).
    #[serde(default = "one_u32")]
    pub per_member_limit: u32,
    /// How many may be issued in total; unlimited if absent.
    #[serde(default)]
    pub total_quantity: Option<u64>,
    /// Whether it combines with other coupons on one order (all coupons on the order must be stackable).
    #[serde(default)]
    pub stackable: bool,
    /// The shop's time zone, for the dates in messages ("expired on 2026-11-01").
    #[serde(default = "default_tz", with = "crate::loyalty::rules::tz_name")]
    pub time_zone: Tz,
}

fn one_u32() -> u32 {
    1
}

fn one_i64() -> i64 {
    1
}

fn default_tz() -> Tz {
    chrono_tz::Asia::Shanghai
}

/// What a coupon gives. `kind` selects the variant in TOML/JSON; amounts are fen, rates basis points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Benefit {
    /// 满减: `amount_off` fen off when the in-scope lines come to `threshold` or more (0: no threshold).
    AmountOff {
        #[serde(default)]
        threshold: i64,
        amount_off: i64,
    },
    /// 折扣: `off_bp` basis points off the in-scope lines (1000 = 10 % off, 9折), at most `max_discount`.
    PercentOff {
        off_bp: i64,
        #[serde(default)]
        max_discount: Option<i64>,
        #[serde(default)]
        threshold: i64,
    },
    /// 满赠: `gift_quantity` units of `gift_sku` added at zero price when the threshold is met.
    FreeGift {
        gift_sku: String,
        #[serde(default = "one_i64")]
        gift_quantity: i64,
        #[serde(default)]
        threshold: i64,
    },
    /// 第N件X折: for every `n` in-scope units, the cheapest unit is `off_bp` off (at most `max_units` units).
    NthItem {
        n: u32,
        off_bp: i64,
        #[serde(default)]
        max_units: Option<u32>,
    },
    /// 包邮: the shipping fee is waived when the in-scope lines come to `threshold` or more.
    FreeShipping {
        #[serde(default)]
        threshold: i64,
    },
}

impl Benefit {
    /// The kind's name, as written in configuration.
    pub fn kind(&self) -> &'static str {
        match self {
            Benefit::AmountOff { .. } => "amount_off",
            Benefit::PercentOff { .. } => "percent_off",
            Benefit::FreeGift { .. } => "free_gift",
            Benefit::NthItem { .. } => "nth_item",
            Benefit::FreeShipping { .. } => "free_shipping",
        }
    }
}

/// Which lines a coupon applies to and on which channels. Everything empty: every line, every channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Included SKUs; with `categories`, a line matching either is included.
    #[serde(default)]
    pub skus: Vec<String>,
    /// Included category path prefixes, by whole `/` segments.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Excluded SKUs; exclusions win over inclusions.
    #[serde(default)]
    pub excluded_skus: Vec<String>,
    /// Excluded category path prefixes, by whole `/` segments.
    #[serde(default)]
    pub excluded_categories: Vec<String>,
    /// Channels the coupon may be used on; empty means all.
    #[serde(default)]
    pub channels: Vec<String>,
}

impl Scope {
    /// Whether a cart line is in scope (see the module documentation, Pricing 4).
    pub fn covers(&self, line: &CartLine) -> bool {
        if self.excluded_skus.contains(&line.sku) {
            return false;
        }
        let category = line.category_path.as_deref();
        if let Some(path) = category
            && self.excluded_categories.iter().any(|p| under(path, p))
        {
            return false;
        }
        if self.skus.is_empty() && self.categories.is_empty() {
            return true;
        }
        self.skus.contains(&line.sku) || category.is_some_and(|path| self.categories.iter().any(|p| under(path, p)))
    }

    /// Whether the coupon may be used on `channel`.
    pub fn allows_channel(&self, channel: &str) -> bool {
        self.channels.is_empty() || self.channels.iter().any(|c| c == channel)
    }
}

/// When an issued coupon may be used: always `[valid_from, valid_until)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Validity {
    /// The same window for every coupon, `[start, end)`; nothing is issued once it has closed.
    Fixed { start: DateTime<Utc>, end: DateTime<Utc> },
    /// From the moment of issue for `days` × 24 hours.
    DaysFromIssue { days: u32 },
}

/// A template file could not be loaded: either not well-formed, or well-formed but invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    #[error("coupon template does not parse: {0}")]
    Parse(String),
    #[error("coupon template is invalid: {0}")]
    Invalid(Invalid),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateFile {
    #[serde(default)]
    templates: Vec<CouponTemplate>,
}

/// Parse and validate a TOML file of `[[templates]]`; ids must be unique, errors name `templates[i].field`.
pub fn templates_from_toml(text: &str) -> Result<Vec<CouponTemplate>, TemplateError> {
    let file: TemplateFile = toml::from_str(text).map_err(|e| TemplateError::Parse(e.to_string()))?;
    let mut ids = BTreeSet::new();
    for (i, t) in file.templates.iter().enumerate() {
        let at = format!("templates[{i}]");
        t.validate().map_err(|e| TemplateError::Invalid(e.within(&at)))?;
        if !ids.insert(t.id.as_str()) {
            let e = Invalid::new("duplicate", "id", format!("template id `{}` is used twice", t.id));
            return Err(TemplateError::Invalid(e.within(&at)));
        }
    }
    Ok(file.templates)
}

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn check_range(v: i64, lo: i64, hi: i64, field: &str) -> Checked<()> {
    if !(lo..=hi).contains(&v) {
        return Err(Invalid::new("out_of_range", field, format!("`{field}` must be between {lo} and {hi}")));
    }
    Ok(())
}

fn check_entries(list: &[String], field: &str) -> Checked<()> {
    for (i, s) in list.iter().enumerate() {
        if s.trim().is_empty() {
            return Err(Invalid::missing(format!("{field}[{i}]")));
        }
        if s.chars().count() > 200 {
            return Err(Invalid::new("too_long", format!("{field}[{i}]"), "at most 200 characters"));
        }
    }
    Ok(())
}

impl CouponTemplate {
    /// Parse and validate one template in JSON (the API's form).
    pub fn from_json(text: &str) -> Result<CouponTemplate, TemplateError> {
        let t: CouponTemplate = serde_json::from_str(text).map_err(|e| TemplateError::Parse(e.to_string()))?;
        t.validate().map_err(TemplateError::Invalid)?;
        Ok(t)
    }

    /// Check everything serde cannot: ranges, non-empty names, a window that ends after it starts, a SKU not
    /// both included and excluded. The error names the field (`benefit.off_bp`, `scope.skus[2]`).
    pub fn validate(&self) -> Checked<()> {
        if !is_id(&self.id) {
            return Err(Invalid::new(
                "invalid_code",
                "id",
                "a template id is 1-64 lower-case letters, digits, `_` or `-`",
            ));
        }
        if self.name.trim().is_empty() {
            return Err(Invalid::missing("name"));
        }
        if self.name.chars().count() > 64 {
            return Err(Invalid::new("too_long", "name", "`name` is at most 64 characters"));
        }
        if self.description.chars().count() > 500 {
            return Err(Invalid::new("too_long", "description", "`description` is at most 500 characters"));
        }
        validate_benefit(&self.benefit).map_err(|e| e.within("benefit"))?;
        validate_scope(&self.scope).map_err(|e| e.within("scope"))?;
        match self.validity {
            Validity::Fixed { start, end } if end <= start => {
                return Err(Invalid::new("out_of_range", "validity.end", "`end` must be after `start`"));
            }
            Validity::DaysFromIssue { days } if !(1..=MAX_VALID_DAYS).contains(&days) => {
                return Err(Invalid::new(
                    "out_of_range",
                    "validity.days",
                    format!("`days` must be between 1 and {MAX_VALID_DAYS}"),
                ));
            }
            _ => {}
        }
        if !(1..=MAX_PER_MEMBER).contains(&self.per_member_limit) {
            return Err(Invalid::new(
                "out_of_range",
                "per_member_limit",
                format!("`per_member_limit` must be between 1 and {MAX_PER_MEMBER}"),
            ));
        }
        if self.total_quantity == Some(0) {
            return Err(Invalid::new("out_of_range", "total_quantity", "`total_quantity` is at least 1 when given"));
        }
        Ok(())
    }
}

fn validate_benefit(b: &Benefit) -> Checked<()> {
    match b {
        Benefit::AmountOff { threshold, amount_off } => {
            check_range(*threshold, 0, MAX_AMOUNT, "threshold")?;
            check_range(*amount_off, 1, MAX_AMOUNT, "amount_off")
        }
        Benefit::PercentOff { off_bp, max_discount, threshold } => {
            check_range(*off_bp, 1, BP, "off_bp")?;
            if let Some(cap) = max_discount {
                check_range(*cap, 1, MAX_AMOUNT, "max_discount")?;
            }
            check_range(*threshold, 0, MAX_AMOUNT, "threshold")
        }
        Benefit::FreeGift { gift_sku, gift_quantity, threshold } => {
            if gift_sku.trim().is_empty() {
                return Err(Invalid::missing("gift_sku"));
            }
            if gift_sku.chars().count() > 200 {
                return Err(Invalid::new("too_long", "gift_sku", "`gift_sku` is at most 200 characters"));
            }
            check_range(*gift_quantity, 1, MAX_GIFT_QUANTITY, "gift_quantity")?;
            check_range(*threshold, 0, MAX_AMOUNT, "threshold")
        }
        Benefit::NthItem { n, off_bp, max_units } => {
            if !(2..=100).contains(n) {
                return Err(Invalid::new("out_of_range", "n", "`n` must be between 2 and 100"));
            }
            check_range(*off_bp, 1, BP, "off_bp")?;
            if *max_units == Some(0) {
                return Err(Invalid::new("out_of_range", "max_units", "`max_units` is at least 1 when given"));
            }
            Ok(())
        }
        Benefit::FreeShipping { threshold } => check_range(*threshold, 0, MAX_AMOUNT, "threshold"),
    }
}

fn validate_scope(s: &Scope) -> Checked<()> {
    check_entries(&s.skus, "skus")?;
    check_entries(&s.categories, "categories")?;
    check_entries(&s.excluded_skus, "excluded_skus")?;
    check_entries(&s.excluded_categories, "excluded_categories")?;
    check_entries(&s.channels, "channels")?;
    if let Some((i, sku)) = s.skus.iter().enumerate().find(|(_, sku)| s.excluded_skus.contains(sku)) {
        return Err(Invalid::new(
            "conflict",
            format!("skus[{i}]"),
            format!("SKU `{sku}` is both included and excluded"),
        ));
    }
    Ok(())
}

/// Whether `path` lies under `prefix`, by whole `/`-separated segments.
fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path == prefix || (path.starts_with(prefix) && path[prefix.len()..].starts_with('/'))
}

// ---------------------------------------------------------------------------------------------------------
// Codes
// ---------------------------------------------------------------------------------------------------------

/// Why a typed code was rejected before any look-up.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum CodeError {
    #[error("a coupon code has {expected} characters, this one has {found}")]
    WrongLength { expected: usize, found: usize },
    #[error("`{character}` at position {position} is not used in coupon codes")]
    BadCharacter { character: char, position: usize },
    #[error("the code has a typo (its check character does not match)")]
    CheckFailed,
}

fn symbol_value(c: u8) -> Option<u32> {
    CODE_ALPHABET.iter().position(|&a| a == c).map(|p| p as u32)
}

/// The check character's value for a body of at most 29 symbol values: with body value `vᵢ` weighted `i + 2`
/// and the check value `c` weighted 1, `c + Σ (i + 2) × vᵢ ≡ 0 (mod 31)`.
fn check_value(body: &[u32]) -> u32 {
    let sum: u32 = body.iter().enumerate().map(|(i, v)| (i as u32 + 2) * v).sum();
    (31 - sum % 31) % 31
}

/// A fresh random code (canonical form, no separators) from `rng`; the same generator state gives the same
/// code.
pub fn generate_code(rng: &mut impl Rng) -> String {
    let body: Vec<u32> = (0..CODE_BODY_LEN).map(|_| rng.random_range(0..31u32)).collect();
    let check = check_value(&body);
    body.iter().chain(std::iter::once(&check)).map(|&v| CODE_ALPHABET[v as usize] as char).collect()
}

/// Read a code as typed (any case, spaces and dashes ignored) and return its canonical form, or say why it
/// cannot be a code: wrong length, a character outside the alphabet, or a check character that does not
/// match (a typo). Catches every single-character typo and every swap of two characters.
pub fn check_code(input: &str) -> Result<String, CodeError> {
    let chars: Vec<char> =
        input.chars().filter(|c| !c.is_whitespace() && *c != '-').map(|c| c.to_ascii_uppercase()).collect();
    if chars.len() != CODE_LEN {
        return Err(CodeError::WrongLength { expected: CODE_LEN, found: chars.len() });
    }
    let mut values = Vec::with_capacity(CODE_LEN);
    for (position, &character) in chars.iter().enumerate() {
        match u8::try_from(character).ok().and_then(symbol_value) {
            Some(v) => values.push(v),
            None => return Err(CodeError::BadCharacter { character, position }),
        }
    }
    let (body, check) = values.split_at(CODE_BODY_LEN);
    if check_value(body) != check[0] {
        return Err(CodeError::CheckFailed);
    }
    Ok(chars.into_iter().collect())
}

/// A canonical code in groups of four for people (`7KQ2MXWD93TG` → `7KQ2-MXWD-93TG`).
pub fn display_code(code: &str) -> String {
    let chars: Vec<char> = code.chars().collect();
    chars.chunks(4).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join("-")
}

// ---------------------------------------------------------------------------------------------------------
// Coupons and issuing
// ---------------------------------------------------------------------------------------------------------

/// One issued coupon, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coupon {
    /// Canonical code (see [`check_code`]); unique across the shop.
    pub code: String,
    pub template_id: String,
    pub member_id: MemberId,
    pub issued_at: DateTime<Utc>,
    /// Usable from this instant (inclusive)…
    pub valid_from: DateTime<Utc>,
    /// …until this instant (exclusive).
    pub valid_until: DateTime<Utc>,
    pub state: CouponState,
}

/// Where a coupon is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CouponState {
    Available,
    /// Used on the order `order_ref` (the order's natural key as the caller names it) at `at`.
    Redeemed {
        order_ref: String,
        at: DateTime<Utc>,
    },
    /// Its window passed unused.
    Expired,
    /// Withdrawn by an operator.
    Voided,
}

impl CouponState {
    /// The state's name, as serialized.
    pub fn name(&self) -> &'static str {
        match self {
            CouponState::Available => "available",
            CouponState::Redeemed { .. } => "redeemed",
            CouponState::Expired => "expired",
            CouponState::Voided => "voided",
        }
    }
}

/// Why a coupon could not be issued.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IssueError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("member already has {held} of at most {limit} coupon(s) of this template")]
    LimitReached { limit: u32, held: u32 },
    #[error("all {total} coupons of this template have been issued")]
    SoldOut { total: u64 },
    #[error("the template's validity window closed at {end}")]
    WindowClosed { end: DateTime<Utc> },
}

/// One member to issue to in a batch, with how many coupons of the template they already have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub member_id: MemberId,
    /// Coupons of this template the member has received before, in any state.
    pub held: u32,
}

/// The result of a batch: coupons to store, and the recipients refused (by their index in the request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkIssue {
    pub coupons: Vec<Coupon>,
    pub refused: Vec<(usize, MemberId, IssueError)>,
}

/// Issue one coupon of `template` to `member_id` at `at`. `held` is how many coupons of this template the
/// member has received (any state), `issued_so_far` how many of the template exist; the per-member limit,
/// the total quantity and a closed fixed window refuse. The code comes from `rng`.
pub fn issue(
    template: &CouponTemplate,
    member_id: MemberId,
    held: u32,
    issued_so_far: u64,
    at: DateTime<Utc>,
    rng: &mut impl Rng,
) -> Result<Coupon, IssueError> {
    let (valid_from, valid_until) = admit(template, member_id, held, issued_so_far, at)?;
    Ok(Coupon {
        code: generate_code(rng),
        template_id: template.id.clone(),
        member_id,
        issued_at: at,
        valid_from,
        valid_until,
        state: CouponState::Available,
    })
}

/// Issue one coupon to each recipient, in order (a member listed twice receives two, the second counting
/// the first). Codes are unique within the batch. A recipient at their limit, or beyond the total quantity,
/// is refused and the batch goes on; an invalid template or a closed window refuses everyone.
pub fn issue_bulk(
    template: &CouponTemplate,
    recipients: &[Recipient],
    issued_so_far: u64,
    at: DateTime<Utc>,
    rng: &mut impl Rng,
) -> BulkIssue {
    let mut coupons = Vec::with_capacity(recipients.len());
    let mut refused = Vec::new();
    let mut codes = BTreeSet::new();
    let mut extra: BTreeMap<MemberId, u32> = BTreeMap::new();
    let mut issued = issued_so_far;
    for (i, r) in recipients.iter().enumerate() {
        let before = extra.get(&r.member_id).copied().unwrap_or(0);
        match admit(template, r.member_id, r.held.saturating_add(before), issued, at) {
            Err(e) => refused.push((i, r.member_id, e)),
            Ok((valid_from, valid_until)) => {
                let code = loop {
                    let code = generate_code(rng);
                    if codes.insert(code.clone()) {
                        break code;
                    }
                };
                coupons.push(Coupon {
                    code,
                    template_id: template.id.clone(),
                    member_id: r.member_id,
                    issued_at: at,
                    valid_from,
                    valid_until,
                    state: CouponState::Available,
                });
                extra.insert(r.member_id, before + 1);
                issued += 1;
            }
        }
    }
    BulkIssue { coupons, refused }
}

/// The checks of issuing, and the window of the coupon issued at `at`.
fn admit(
    template: &CouponTemplate,
    member_id: MemberId,
    held: u32,
    issued_so_far: u64,
    at: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), IssueError> {
    template.validate()?;
    if member_id < 1 {
        return Err(Invalid::new("out_of_range", "member_id", "coupons are issued to members (ids from 1)").into());
    }
    if held >= template.per_member_limit {
        return Err(IssueError::LimitReached { limit: template.per_member_limit, held });
    }
    if let Some(total) = template.total_quantity
        && issued_so_far >= total
    {
        return Err(IssueError::SoldOut { total });
    }
    match template.validity {
        Validity::Fixed { end, .. } if at >= end => Err(IssueError::WindowClosed { end }),
        Validity::Fixed { start, end } => Ok((start, end)),
        Validity::DaysFromIssue { days } => {
            let until = at
                .checked_add_signed(Duration::days(i64::from(days)))
                .ok_or_else(|| Invalid::new("out_of_range", "at", "the validity end is out of range"))?;
            Ok((at, until))
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Carts
// ---------------------------------------------------------------------------------------------------------

/// A cart (or an order about to be placed) as the coupons see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    /// Whose cart: a coupon only applies to its holder's orders.
    pub member_id: MemberId,
    pub channel: String,
    pub lines: Vec<CartLine>,
    /// Shipping fee in fen, before any waiver.
    #[serde(default)]
    pub shipping_fee: i64,
}

/// One cart line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    /// 1-based, unique in the cart; allocations and refunds refer to it.
    pub line_no: i32,
    pub sku: String,
    pub category_path: Option<String>,
    pub quantity: i64,
    /// List price of one unit in fen.
    pub unit_price: i64,
    /// What the line costs before coupons, in fen (after item-level promotions): at most
    /// `quantity × unit_price`. Every coupon computes on this.
    pub amount: i64,
}

impl Cart {
    /// Check the cart: a channel, 1-1000 lines with unique positive line numbers and a SKU, quantities of
    /// 1-1 000 000, amounts within bounds and no more than quantity × unit price.
    pub fn validate(&self) -> Checked<()> {
        if self.channel.trim().is_empty() {
            return Err(Invalid::missing("channel"));
        }
        check_range(self.shipping_fee, 0, MAX_AMOUNT, "shipping_fee")?;
        if self.lines.len() > MAX_CART_LINES {
            return Err(Invalid::new("too_many", "lines", format!("a cart has at most {MAX_CART_LINES} lines")));
        }
        let mut seen = BTreeSet::new();
        for (i, l) in self.lines.iter().enumerate() {
            let at = format!("lines[{i}]");
            validate_line(l).map_err(|e| e.within(&at))?;
            if !seen.insert(l.line_no) {
                let e = Invalid::new("duplicate", "line_no", format!("line number {} is used twice", l.line_no));
                return Err(e.within(&at));
            }
        }
        Ok(())
    }
}

fn validate_line(l: &CartLine) -> Checked<()> {
    if l.line_no < 1 {
        return Err(Invalid::new("out_of_range", "line_no", "line numbers start at 1"));
    }
    if l.sku.trim().is_empty() {
        return Err(Invalid::missing("sku"));
    }
    check_range(l.quantity, 1, MAX_QUANTITY, "quantity")?;
    check_range(l.unit_price, 0, MAX_AMOUNT, "unit_price")?;
    check_range(l.amount, 0, MAX_AMOUNT, "amount")?;
    if i128::from(l.amount) > i128::from(l.quantity) * i128::from(l.unit_price) {
        return Err(Invalid::new("out_of_range", "amount", "`amount` exceeds quantity × unit_price"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Quotes
// ---------------------------------------------------------------------------------------------------------

/// A priced cart: nothing written, everything the checkout shows and the order stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// Every cart line, in cart order.
    pub lines: Vec<LineQuote>,
    /// Sum of the lines' amounts before coupons.
    pub subtotal: i64,
    /// Coupon discount on merchandise: the sum of the lines' discounts (shipping waivers not included).
    pub total_discount: i64,
    pub shipping_fee: i64,
    /// Shipping fee waived by a `free_shipping` coupon (all of it, or nothing).
    pub shipping_waived: i64,
    /// Gift units added at zero price.
    pub gifts: Vec<Gift>,
    /// Coupons that apply, in the order applied.
    pub applied: Vec<AppliedCoupon>,
    /// Coupons that do not apply, each with its reason.
    pub not_applied: Vec<NotApplied>,
    /// `subtotal − total_discount + shipping_fee − shipping_waived`; never negative.
    pub payable: i64,
}

/// One line after coupons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineQuote {
    pub line_no: i32,
    /// Before coupons.
    pub amount: i64,
    /// All coupons' shares on this line.
    pub discount: i64,
    /// `amount − discount`, never negative.
    pub payable: i64,
}

/// One coupon's share of the discount on one line: what a refund of the line gives back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineDiscount {
    pub line_no: i32,
    pub discount: i64,
}

/// A gift added by a `free_gift` coupon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gift {
    pub sku: String,
    pub quantity: i64,
    pub coupon_code: String,
}

/// A coupon that applies, with what it gives and where its discount sits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedCoupon {
    pub coupon_code: String,
    pub template_id: String,
    /// Merchandise discount; equal to the sum of `lines`.
    pub discount: i64,
    pub shipping_waived: i64,
    pub gift: Option<Gift>,
    /// Non-zero shares, in cart order.
    pub lines: Vec<LineDiscount>,
    /// What it did, in words.
    pub message: String,
}

/// A coupon that does not apply to this cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotApplied {
    pub coupon_code: String,
    pub template_id: String,
    pub reason: Reason,
    /// The reason in words ("threshold not met: 150.00 of 200.00").
    pub message: String,
}

/// Why a coupon does not apply; `code` is the machine-readable tag in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Reason {
    /// The coupon was issued from another template than the one given with it.
    TemplateMismatch {
        expected: String,
    },
    /// The coupon belongs to another member.
    NotYourCoupon,
    /// The same code is listed twice.
    DuplicateCode,
    /// Already redeemed, expired or voided.
    NotAvailable {
        state: String,
    },
    NotYetValid {
        valid_from: DateTime<Utc>,
    },
    Expired {
        valid_until: DateTime<Utc>,
    },
    ChannelNotAllowed {
        channel: String,
    },
    /// No line of the cart is in the coupon's scope.
    NoQualifyingItems,
    /// Another coupon already applies and the two do not combine.
    NotCombinable {
        with: String,
    },
    /// The in-scope lines come to less than the threshold (amounts in fen).
    ThresholdNotMet {
        qualifying: i64,
        threshold: i64,
    },
    /// Fewer in-scope units than `n` of an `nth_item` coupon.
    NotEnoughItems {
        units: i64,
        needed: i64,
    },
    /// A `free_shipping` coupon on a cart without a shipping fee.
    NoShippingFee,
    /// A `free_shipping` coupon when another has already waived the fee.
    ShippingAlreadyWaived,
    /// The benefit would come to less than one fen; the coupon is kept for a better order.
    NoDiscount,
}

impl Reason {
    /// The machine-readable code, the same as the JSON tag.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::TemplateMismatch { .. } => "template_mismatch",
            Reason::NotYourCoupon => "not_your_coupon",
            Reason::DuplicateCode => "duplicate_code",
            Reason::NotAvailable { .. } => "not_available",
            Reason::NotYetValid { .. } => "not_yet_valid",
            Reason::Expired { .. } => "expired",
            Reason::ChannelNotAllowed { .. } => "channel_not_allowed",
            Reason::NoQualifyingItems => "no_qualifying_items",
            Reason::NotCombinable { .. } => "not_combinable",
            Reason::ThresholdNotMet { .. } => "threshold_not_met",
            Reason::NotEnoughItems { .. } => "not_enough_items",
            Reason::NoShippingFee => "no_shipping_fee",
            Reason::ShippingAlreadyWaived => "shipping_already_waived",
            Reason::NoDiscount => "no_discount",
        }
    }

    /// The reason in words; dates in the template's time zone.
    fn message(&self, tz: Tz) -> String {
        match self {
            Reason::TemplateMismatch { expected } => format!("coupon is of template {expected}"),
            Reason::NotYourCoupon => "coupon belongs to another member".to_string(),
            Reason::DuplicateCode => "coupon listed twice".to_string(),
            Reason::NotAvailable { state } => format!("coupon is {state}"),
            Reason::NotYetValid { valid_from } => format!("valid from {}", local_instant(*valid_from, tz)),
            Reason::Expired { valid_until } => format!("expired on {}", local_instant(*valid_until, tz)),
            Reason::ChannelNotAllowed { channel } => format!("not valid on channel {channel}"),
            Reason::NoQualifyingItems => "no qualifying items".to_string(),
            Reason::NotCombinable { with } => format!("does not combine with coupon {}", display_code(with)),
            Reason::ThresholdNotMet { qualifying, threshold } => {
                format!("threshold not met: {} of {}", yuan(*qualifying), yuan(*threshold))
            }
            Reason::NotEnoughItems { units, needed } => {
                format!("not enough qualifying items: {units} of {needed}")
            }
            Reason::NoShippingFee => "no shipping fee to waive".to_string(),
            Reason::ShippingAlreadyWaived => "shipping already waived by another coupon".to_string(),
            Reason::NoDiscount => "discount would be 0.00".to_string(),
        }
    }
}

/// Fen as yuan with two decimals (`15000` → `150.00`).
fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let f = fen.unsigned_abs();
    format!("{sign}{}.{:02}", f / 100, f % 100)
}

/// A local date, with the time when it is not midnight (`2026-11-01`, `2026-11-01 15:30`).
fn local_instant(at: DateTime<Utc>, tz: Tz) -> String {
    let local = at.with_timezone(&tz);
    if local.hour() == 0 && local.minute() == 0 && local.second() == 0 {
        local.format("%Y-%m-%d").to_string()
    } else {
        local.format("%Y-%m-%d %H:%M").to_string()
    }
}

/// Price `cart` with `coupons` (each with its template), in the order given, at `now`. Writes nothing; see
/// the module documentation for the checks, stacking, scope, each benefit's arithmetic and the allocation.
/// Refuses only an invalid cart; a coupon that does not apply is reported in [`Quote::not_applied`].
pub fn price(cart: &Cart, coupons: &[(&Coupon, &CouponTemplate)], now: DateTime<Utc>) -> Checked<Quote> {
    cart.validate()?;
    // What each line still has to pay, updated coupon by coupon.
    let mut net: Vec<i64> = cart.lines.iter().map(|l| l.amount).collect();
    let mut discount = vec![0i64; cart.lines.len()];
    let mut applied: Vec<AppliedCoupon> = Vec::new();
    let mut not_applied = Vec::new();
    let mut stackable_so_far = true;
    let mut shipping_waived = 0i64;
    let mut gifts = Vec::new();
    let mut seen = BTreeSet::new();

    for &(coupon, template) in coupons {
        let first_listing = seen.insert(coupon.code.as_str());
        let outcome = judge(cart, coupon, template, now, first_listing)
            .and_then(|in_scope| match applied.first() {
                // A coupon that is not stackable only ever applies alone, so it is the first applied.
                Some(first) if !stackable_so_far || !template.stackable => {
                    Err(Reason::NotCombinable { with: first.coupon_code.clone() })
                }
                _ => Ok(in_scope),
            })
            .and_then(|in_scope| benefit(cart, template, &in_scope, &net, shipping_waived));
        match outcome {
            Err(reason) => {
                let message = reason.message(template.time_zone);
                not_applied.push(NotApplied {
                    coupon_code: coupon.code.clone(),
                    template_id: coupon.template_id.clone(),
                    reason,
                    message,
                });
            }
            Ok(Granted { discount: d, in_scope, waive, gift, message }) => {
                let shares = allocate(d, &in_scope, &net);
                let mut lines = Vec::new();
                for (&i, &share) in in_scope.iter().zip(&shares) {
                    net[i] -= share;
                    discount[i] += share;
                    if share > 0 {
                        lines.push(LineDiscount { line_no: cart.lines[i].line_no, discount: share });
                    }
                }
                if waive {
                    shipping_waived = cart.shipping_fee;
                }
                let gift = gift.map(|(sku, quantity)| Gift { sku, quantity, coupon_code: coupon.code.clone() });
                if let Some(g) = &gift {
                    gifts.push(g.clone());
                }
                stackable_so_far &= template.stackable;
                applied.push(AppliedCoupon {
                    coupon_code: coupon.code.clone(),
                    template_id: template.id.clone(),
                    discount: d,
                    shipping_waived: if waive { cart.shipping_fee } else { 0 },
                    gift,
                    lines,
                    message,
                });
            }
        }
    }

    let lines: Vec<LineQuote> = cart
        .lines
        .iter()
        .zip(discount.iter().zip(&net))
        .map(|(l, (&d, &n))| LineQuote { line_no: l.line_no, amount: l.amount, discount: d, payable: n })
        .collect();
    let subtotal: i64 = cart.lines.iter().map(|l| l.amount).sum();
    let total_discount: i64 = discount.iter().sum();
    let payable = (subtotal - total_discount + cart.shipping_fee - shipping_waived).max(0);
    Ok(Quote {
        lines,
        subtotal,
        total_discount,
        shipping_fee: cart.shipping_fee,
        shipping_waived,
        gifts,
        applied,
        not_applied,
        payable,
    })
}

/// The checks every coupon passes before its benefit is judged; returns the indexes of the in-scope lines.
fn judge(
    cart: &Cart,
    coupon: &Coupon,
    template: &CouponTemplate,
    now: DateTime<Utc>,
    first_listing: bool,
) -> Result<Vec<usize>, Reason> {
    if coupon.template_id != template.id {
        return Err(Reason::TemplateMismatch { expected: coupon.template_id.clone() });
    }
    if coupon.member_id != cart.member_id {
        return Err(Reason::NotYourCoupon);
    }
    if !first_listing {
        return Err(Reason::DuplicateCode);
    }
    if coupon.state != CouponState::Available {
        return Err(Reason::NotAvailable { state: coupon.state.name().to_string() });
    }
    if now < coupon.valid_from {
        return Err(Reason::NotYetValid { valid_from: coupon.valid_from });
    }
    if now >= coupon.valid_until {
        return Err(Reason::Expired { valid_until: coupon.valid_until });
    }
    if !template.scope.allows_channel(&cart.channel) {
        return Err(Reason::ChannelNotAllowed { channel: cart.channel.clone() });
    }
    let in_scope: Vec<usize> = (0..cart.lines.len()).filter(|&i| template.scope.covers(&cart.lines[i])).collect();
    if in_scope.is_empty() {
        return Err(Reason::NoQualifyingItems);
    }
    Ok(in_scope)
}

/// What a coupon gives once its checks have passed.
struct Granted {
    discount: i64,
    in_scope: Vec<usize>,
    waive: bool,
    gift: Option<(String, i64)>,
    message: String,
}

fn meet(qualifying: i64, threshold: i64) -> Result<(), Reason> {
    if qualifying < threshold { Err(Reason::ThresholdNotMet { qualifying, threshold }) } else { Ok(()) }
}

/// `⌊amount × bp / 10 000⌋`, with the rate clamped to 0-100 %.
fn percent_of(amount: i64, bp: i64) -> i64 {
    let v = i128::from(amount.max(0)) * i128::from(bp.clamp(0, BP)) / i128::from(BP);
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn benefit(
    cart: &Cart,
    template: &CouponTemplate,
    in_scope: &[usize],
    net: &[i64],
    shipping_waived: i64,
) -> Result<Granted, Reason> {
    let qualifying: i64 = in_scope.iter().map(|&i| net[i]).sum();
    let name = &template.name;
    let granted = |discount: i64, message: String| Granted {
        discount,
        in_scope: in_scope.to_vec(),
        waive: false,
        gift: None,
        message,
    };
    match &template.benefit {
        Benefit::AmountOff { threshold, amount_off } => {
            meet(qualifying, *threshold)?;
            let d = (*amount_off).clamp(0, qualifying);
            if d == 0 {
                return Err(Reason::NoDiscount);
            }
            Ok(granted(d, format!("{name}: {} off {}", yuan(d), yuan(qualifying))))
        }
        Benefit::PercentOff { off_bp, max_discount, threshold } => {
            meet(qualifying, *threshold)?;
            let full = percent_of(qualifying, *off_bp);
            let d = max_discount.map_or(full, |cap| full.min(cap.max(0)));
            if d == 0 {
                return Err(Reason::NoDiscount);
            }
            let capped = if d < full { format!(", capped at {}", yuan(d)) } else { String::new() };
            Ok(granted(d, format!("{name}: {} off {}{capped}", yuan(d), yuan(qualifying))))
        }
        Benefit::NthItem { n, off_bp, max_units } => {
            let n = i64::from((*n).max(1));
            let units: i64 = in_scope.iter().map(|&i| cart.lines[i].quantity).sum();
            if units < n {
                return Err(Reason::NotEnoughItems { units, needed: n });
            }
            let mut k = units / n;
            if let Some(m) = max_units {
                k = k.min(i64::from(*m));
            }
            // Units grouped by value: (unit value, line position, how many); the cheapest first, ties to the
            // earlier line, a line's ordinary units before its last (which carries the remainder).
            let mut groups: Vec<(i64, usize, usize, i64)> = Vec::new();
            for &i in in_scope {
                let q = cart.lines[i].quantity.max(1);
                let (base, rem) = (net[i] / q, net[i] % q);
                if rem == 0 {
                    groups.push((base, i, 0, q));
                } else {
                    if q > 1 {
                        groups.push((base, i, 0, q - 1));
                    }
                    groups.push((base + rem, i, 1, 1));
                }
            }
            groups.sort_by_key(|&(value, i, last, _)| (value, i, last));
            let mut left = k;
            let mut d: i64 = 0;
            for &(value, _, _, count) in &groups {
                if left == 0 {
                    break;
                }
                let take = count.min(left);
                d += take * percent_of(value, *off_bp);
                left -= take;
            }
            if d == 0 {
                return Err(Reason::NoDiscount);
            }
            Ok(granted(d, format!("{name}: {k} of {units} unit(s) discounted, {} off", yuan(d))))
        }
        Benefit::FreeGift { gift_sku, gift_quantity, threshold } => {
            meet(qualifying, *threshold)?;
            Ok(Granted {
                discount: 0,
                in_scope: in_scope.to_vec(),
                waive: false,
                gift: Some((gift_sku.clone(), *gift_quantity)),
                message: format!("{name}: {gift_quantity} × {gift_sku} added free"),
            })
        }
        Benefit::FreeShipping { threshold } => {
            if cart.shipping_fee == 0 {
                return Err(Reason::NoShippingFee);
            }
            if shipping_waived > 0 {
                return Err(Reason::ShippingAlreadyWaived);
            }
            meet(qualifying, *threshold)?;
            Ok(Granted {
                discount: 0,
                in_scope: in_scope.to_vec(),
                waive: true,
                gift: None,
                message: format!("{name}: shipping {} waived", yuan(cart.shipping_fee)),
            })
        }
    }
}

/// Spread `d` over the lines `in_scope` in proportion to `net` (see the module documentation, Pricing 6).
/// Requires `0 ≤ d ≤ Σ net`; the shares sum to `d` and none exceeds its line's `net`.
fn allocate(d: i64, in_scope: &[usize], net: &[i64]) -> Vec<i64> {
    let total: i64 = in_scope.iter().map(|&i| net[i]).sum();
    if d <= 0 || total <= 0 {
        return vec![0; in_scope.len()];
    }
    let mut shares: Vec<i64> = in_scope
        .iter()
        .map(|&i| i64::try_from(i128::from(d) * i128::from(net[i]) / i128::from(total)).unwrap_or(0))
        .collect();
    let mut rest = d - shares.iter().sum::<i64>();
    for (k, &i) in in_scope.iter().enumerate().rev() {
        if rest == 0 {
            break;
        }
        let room = net[i] - shares[k];
        let add = room.min(rest);
        shares[k] += add;
        rest -= add;
    }
    shares
}

// ---------------------------------------------------------------------------------------------------------
// State transitions
// ---------------------------------------------------------------------------------------------------------

/// Why a coupon cannot move to the state asked for.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RedeemError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("coupon was already redeemed on order {order_ref}")]
    AlreadyRedeemed { order_ref: String },
    #[error("coupon is not valid before {valid_from}")]
    NotYetValid { valid_from: DateTime<Utc> },
    #[error("coupon expired at {valid_until}")]
    Expired { valid_until: DateTime<Utc> },
    #[error("coupon was voided")]
    Voided,
}

/// What happens to a redeemed coupon when its order is refunded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundPolicy {
    /// Back to `available` if the whole order is refunded and the coupon's window is still open; otherwise
    /// it stays redeemed.
    #[default]
    ReturnIfValid,
    /// A used coupon stays used.
    Never,
    /// Back on any whole-order refund with its original window: `available` while the window is open,
    /// `expired` once it has passed (so the member sees it came back, and why they cannot use it).
    AlwaysReturn,
}

/// How much of the order a refund covers, counting every refund of the order so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundExtent {
    /// Some lines or units remain bought: the coupon was still used, no policy returns it.
    Partial,
    /// Nothing of the order remains.
    Whole,
}

/// Redeem `coupon` on the order `order_ref` at `now`. Idempotent: redeeming again for the same order returns
/// the coupon as it is (with the original time); another order is refused, as are a voided, expired or
/// not-yet-valid coupon. Price the cart first: this only records the use.
pub fn redeem(coupon: &Coupon, order_ref: &str, now: DateTime<Utc>) -> Result<Coupon, RedeemError> {
    if order_ref.trim().is_empty() {
        return Err(Invalid::missing("order_ref").into());
    }
    if order_ref.chars().count() > 200 {
        return Err(Invalid::new("too_long", "order_ref", "`order_ref` is at most 200 characters").into());
    }
    match &coupon.state {
        CouponState::Redeemed { order_ref: used, .. } if used == order_ref => return Ok(coupon.clone()),
        CouponState::Redeemed { order_ref: used, .. } => {
            return Err(RedeemError::AlreadyRedeemed { order_ref: used.clone() });
        }
        CouponState::Voided => return Err(RedeemError::Voided),
        CouponState::Expired => return Err(RedeemError::Expired { valid_until: coupon.valid_until }),
        CouponState::Available => {}
    }
    if now < coupon.valid_from {
        return Err(RedeemError::NotYetValid { valid_from: coupon.valid_from });
    }
    if now >= coupon.valid_until {
        return Err(RedeemError::Expired { valid_until: coupon.valid_until });
    }
    Ok(Coupon { state: CouponState::Redeemed { order_ref: order_ref.to_string(), at: now }, ..coupon.clone() })
}

/// The coupon after a refund of the order `order_ref` (cumulatively `extent`) under `policy`. A coupon that
/// is not currently redeemed on that order is returned unchanged, so a retried refund, or a refund after the
/// coupon came back and was used again elsewhere, changes nothing. Validity is never extended.
pub fn on_refund(
    coupon: &Coupon,
    order_ref: &str,
    extent: RefundExtent,
    policy: RefundPolicy,
    now: DateTime<Utc>,
) -> Coupon {
    let redeemed_here = matches!(&coupon.state, CouponState::Redeemed { order_ref: used, .. } if used == order_ref);
    if !redeemed_here || extent == RefundExtent::Partial {
        return coupon.clone();
    }
    let open = now < coupon.valid_until;
    let state = match policy {
        RefundPolicy::Never => return coupon.clone(),
        RefundPolicy::ReturnIfValid if open => CouponState::Available,
        RefundPolicy::ReturnIfValid => return coupon.clone(),
        RefundPolicy::AlwaysReturn if open => CouponState::Available,
        RefundPolicy::AlwaysReturn => CouponState::Expired,
    };
    Coupon { state, ..coupon.clone() }
}

/// Withdraw a coupon that has not been used (an operator's correction, a revoked campaign). Voiding again
/// changes nothing; a redeemed coupon cannot be voided (refund the order instead).
pub fn void(coupon: &Coupon) -> Result<Coupon, RedeemError> {
    match &coupon.state {
        CouponState::Redeemed { order_ref, .. } => Err(RedeemError::AlreadyRedeemed { order_ref: order_ref.clone() }),
        _ => Ok(Coupon { state: CouponState::Voided, ..coupon.clone() }),
    }
}

/// Record that an available coupon's window has passed at `now` (`valid_until` is exclusive); any other
/// coupon is returned unchanged.
pub fn expire(coupon: &Coupon, now: DateTime<Utc>) -> Coupon {
    if coupon.state == CouponState::Available && now >= coupon.valid_until {
        Coupon { state: CouponState::Expired, ..coupon.clone() }
    } else {
        coupon.clone()
    }
}
