//! The rewards catalog and its redemption rules (积分兑换): what a reward is, whether a member may redeem it
//! now, and what a redemption takes and gives back. Pure: no I/O, no clock (every function takes `now`), no
//! floats, no randomness that is not derived from the caller's seed.
//!
//! # Design
//!
//! * **One question, one answer.** [`check`] takes the reward, everything the store knows about the member
//!   and the reward at this moment ([`RedeemContext`]) and `now`, and answers either a [`Plan`] (points to
//!   debit, cash to charge, stock to take, what to deliver, the prize drawn) or the first
//!   [`RedeemRefusal`] that applies. The store runs it under the member's lock, then debits the ledger
//!   (`Source::Reward`), takes the stock and writes the [`Redemption`] in one transaction.
//! * **Order of the checks** (the first that fails is the answer): inactive, outside a window, out of
//!   stock, tier not allowed, blocked (negative balance or risk flag), per-member limits (longest period
//!   first, so a member who used this month's quota is not told to come back tomorrow), insufficient points.
//!   Reward-level reasons come before member-level ones: nobody is told to earn more points for a reward
//!   that is sold out.
//! * **Local time.** Windows and per-period limits are judged in the business time zone given in the
//!   context (default Asia/Shanghai): "from the 20th" opens at local midnight, 16:00 UTC on the 19th.
//! * **Limits count completed redemptions.** A cancelled redemption gave its points back and does not use
//!   the member's quota.
//! * **Deterministic lotteries.** A draw is a function of the reward id and a caller-given 64-bit seed
//!   (derive it from the idempotency key with [`draw_seed`]): a retry with the same key draws the same
//!   prize, and an auditor can recompute any draw. The formula is fixed (SHA-256, see [`draw`]) so it does
//!   not change with a dependency upgrade.
//! * **Cancellation** ([`cancel`]) gives back the points, the cash and the stock, and names the delivered
//!   item to revoke. It is refused once the item is used (coupon used, goods shipped, service rendered),
//!   after the policy's deadline, and for lottery draws unless the policy allows it: a member must not be
//!   able to take back a losing draw.
//!
//! # Redemption windows
//!
//! A reward may list several windows; a redemption must fall inside **all** of them (they narrow each
//! other: "from the 20th to month end, on weekends, during 2026"). No window means always open. The forms,
//! all in local time of the business time zone (shown as TOML inline tables; JSON has the same fields):
//!
//! * `{ type = "monthly", from_day = 20, to_day = 25 }`: every month, from local midnight of day `from_day`
//!   to the end of day `to_day` (absent: the month's last day). A `to_day` beyond the month's length means
//!   its last day; a month shorter than `from_day` has no window (`from_day = 30` skips February).
//! * `{ type = "weekly", days = ["Sat", "Sun"] }`: on these local weekdays, all day.
//! * `{ type = "daily", start = "10:00:00", end = "22:00:00" }`: every day from `start` (inclusive) to
//!   `end` (exclusive); a window does not wrap past midnight.
//! * `{ type = "fixed", start = "2026-01-01T00:00:00", end = "2027-01-01T00:00:00" }`: `[start, end)`;
//!   either end may be absent.
//!
//! A refusal for being outside the windows carries the next instant at which all windows hold, if there is
//! one within [`WINDOW_HORIZON_DAYS`] days.

use std::collections::BTreeSet;

use chrono::{
    DateTime, Datelike, Days, Duration, LocalResult, Months, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc,
    Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::commerce::order::MAX_AMOUNT;
use crate::error::{Checked, Invalid};
use crate::members::MemberId;

#[cfg(test)]
mod tests;

/// Largest sum of lottery weights: keeps the draw exact and the odds readable.
pub const MAX_TOTAL_WEIGHT: u64 = 1_000_000_000;
/// How far ahead a refusal looks for the next opening of the windows.
pub const WINDOW_HORIZON_DAYS: i64 = 5 * 366;
/// Longest reward or prize name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

// ---------------------------------------------------------------------------------------------------------
// The reward definition
// ---------------------------------------------------------------------------------------------------------

/// One entry of the rewards catalog, as operators define it (JSON in the API). Validate with
/// [`Reward::validate`] before storing; [`check`] never panics on an unvalidated reward, but its answer is
/// only meaningful for a valid one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reward {
    /// Slug, unique in the catalog: 1-64 lower-case letters, digits, `_` or `-`. Ledger entries refer to it.
    pub id: String,
    /// Shown to members; 1-100 characters.
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub kind: RewardKind,
    /// Points debited per redemption, at least 1.
    pub points: i64,
    /// Cash charged on top of the points (积分+现金), in fen; 0 for points only.
    #[serde(default)]
    pub cash: i64,
    /// Units made available in total; `None` means unlimited. The store keeps what is left and passes it
    /// in [`RedeemContext::stock_left`].
    #[serde(default)]
    pub stock: Option<i64>,
    /// Per-member limits; at most one per period.
    #[serde(default)]
    pub limits: Vec<Limit>,
    /// When the reward may be redeemed; all must hold (see the module documentation). Empty: always.
    #[serde(default)]
    pub windows: Vec<Window>,
    /// Tier codes allowed to redeem; empty means every tier.
    #[serde(default)]
    pub tiers: Vec<String>,
    /// Inactive rewards stay in the catalog (and in history) but cannot be redeemed.
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

/// What a reward is. `type` selects the variant in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RewardKind {
    /// Issues a coupon from a template (优惠券).
    Coupon { template_id: String },
    /// Physical goods to ship, by catalog SKU.
    Goods { sku: String },
    /// A service the brand renders (free engraving, a spa session); the name says what.
    Service,
    /// A lottery draw (抽奖): weighted prizes and a weight for drawing nothing.
    Lottery(Lottery),
}

/// A lottery's prizes. The chance of a prize is `weight / (Σ weights + no_prize_weight)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lottery {
    /// In draw order; the draw walks them cumulatively, then falls into "no prize".
    pub prizes: Vec<Prize>,
    /// Weight of drawing nothing (谢谢参与).
    #[serde(default)]
    pub no_prize_weight: u64,
}

/// One prize of a lottery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prize {
    /// Slug, unique within the lottery; recorded on the redemption.
    pub id: String,
    pub name: String,
    /// Relative weight; 0 disables the prize without removing it.
    pub weight: u64,
    pub kind: PrizeKind,
}

/// What a prize gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PrizeKind {
    Coupon {
        template_id: String,
    },
    Goods {
        sku: String,
    },
    Service,
    /// Bonus points credited to the member.
    Points {
        points: i64,
    },
}

/// What to hand to the member after a redemption (the store or a fulfilment job issues it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Deliver {
    Coupon {
        template_id: String,
    },
    Goods {
        sku: String,
    },
    Service,
    Points {
        points: i64,
    },
    /// A lottery draw that won nothing.
    Nothing,
}

impl From<&PrizeKind> for Deliver {
    fn from(kind: &PrizeKind) -> Self {
        match kind {
            PrizeKind::Coupon { template_id } => Deliver::Coupon { template_id: template_id.clone() },
            PrizeKind::Goods { sku } => Deliver::Goods { sku: sku.clone() },
            PrizeKind::Service => Deliver::Service,
            PrizeKind::Points { points } => Deliver::Points { points: *points },
        }
    }
}

/// The period a per-member limit counts over, local to the business time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitPeriod {
    /// Over the member's whole history.
    Total,
    Year,
    Month,
    /// ISO week, Monday to Sunday.
    Week,
    Day,
}

impl LimitPeriod {
    /// The name used in JSON and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitPeriod::Total => "total",
            LimitPeriod::Year => "year",
            LimitPeriod::Month => "month",
            LimitPeriod::Week => "week",
            LimitPeriod::Day => "day",
        }
    }

    fn words(self) -> &'static str {
        match self {
            LimitPeriod::Total => "in total",
            LimitPeriod::Year => "per year",
            LimitPeriod::Month => "per month",
            LimitPeriod::Week => "per week",
            LimitPeriod::Day => "per day",
        }
    }

    /// Whether two local dates fall in the same period.
    fn same(self, a: NaiveDate, b: NaiveDate) -> bool {
        match self {
            LimitPeriod::Total => true,
            LimitPeriod::Year => a.year() == b.year(),
            LimitPeriod::Month => (a.year(), a.month()) == (b.year(), b.month()),
            LimitPeriod::Week => a.iso_week() == b.iso_week(),
            LimitPeriod::Day => a == b,
        }
    }

    /// The first local date of the period after the one holding `d`; `None` for `Total`.
    fn next_start(self, d: NaiveDate) -> Option<NaiveDate> {
        match self {
            LimitPeriod::Total => None,
            LimitPeriod::Year => NaiveDate::from_ymd_opt(d.year().checked_add(1)?, 1, 1),
            LimitPeriod::Month => d.with_day(1)?.checked_add_months(Months::new(1)),
            LimitPeriod::Week => d.checked_add_days(Days::new(u64::from(7 - d.weekday().num_days_from_monday()))),
            LimitPeriod::Day => d.succ_opt(),
        }
    }
}

/// At most `count` completed redemptions of this reward per member per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub period: LimitPeriod,
    pub count: u32,
}

/// A redemption window in local time (see the module documentation for the forms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Window {
    /// Days `from_day..=to_day` of every month (`to_day` absent: to the month's end).
    Monthly {
        from_day: u32,
        #[serde(default)]
        to_day: Option<u32>,
    },
    /// These weekdays, all day.
    Weekly { days: Vec<Weekday> },
    /// Every day, `[start, end)`.
    Daily { start: NaiveTime, end: NaiveTime },
    /// `[start, end)`, either end open.
    Fixed {
        #[serde(default)]
        start: Option<NaiveDateTime>,
        #[serde(default)]
        end: Option<NaiveDateTime>,
    },
}

/// A reward that could not be loaded: either not well-formed, or well-formed but invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RewardError {
    #[error("reward does not parse: {0}")]
    Parse(String),
    #[error("reward is invalid: {0}")]
    Invalid(Invalid),
}

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn check_slug(s: &str, field: &str) -> Checked<()> {
    if !is_slug(s) {
        return Err(Invalid::new(
            "invalid_code",
            field,
            format!("`{field}` is 1-64 lower-case letters, digits, `_` or `-`"),
        ));
    }
    Ok(())
}

fn check_name(s: &str, field: &str) -> Checked<()> {
    if s.trim().is_empty() {
        return Err(Invalid::missing(field));
    }
    if s.chars().count() > MAX_NAME_CHARS || s.chars().any(char::is_control) {
        return Err(Invalid::new(
            "invalid_text",
            field,
            format!("`{field}` is at most {MAX_NAME_CHARS} characters, without control characters"),
        ));
    }
    Ok(())
}

fn check_reference(s: &str, field: &str) -> Checked<()> {
    if s.trim().is_empty() {
        return Err(Invalid::missing(field));
    }
    if s.len() > 128 || s.trim() != s {
        return Err(Invalid::new(
            "invalid_reference",
            field,
            format!("`{field}` is at most 128 bytes, without surrounding spaces"),
        ));
    }
    Ok(())
}

fn check_range(v: i64, lo: i64, hi: i64, field: &str) -> Checked<()> {
    if !(lo..=hi).contains(&v) {
        return Err(Invalid::new("out_of_range", field, format!("`{field}` must be between {lo} and {hi}")));
    }
    Ok(())
}

impl Reward {
    /// Parse and validate a reward from JSON (the API's form).
    pub fn from_json(text: &str) -> Result<Reward, RewardError> {
        let reward: Reward = serde_json::from_str(text).map_err(|e| RewardError::Parse(e.to_string()))?;
        reward.validate().map_err(RewardError::Invalid)?;
        Ok(reward)
    }

    /// Check everything serde cannot; the error names the field (`kind.prizes[1].weight`, `windows[0].to_day`).
    pub fn validate(&self) -> Checked<()> {
        check_slug(&self.id, "id")?;
        check_name(&self.name, "name")?;
        if self.description.chars().count() > 2000 {
            return Err(Invalid::new("invalid_text", "description", "`description` is at most 2000 characters"));
        }
        validate_kind(&self.kind).map_err(|e| e.within("kind"))?;
        check_range(self.points, 1, MAX_AMOUNT, "points")?;
        check_range(self.cash, 0, MAX_AMOUNT, "cash")?;
        if let Some(stock) = self.stock {
            check_range(stock, 0, MAX_AMOUNT, "stock")?;
        }
        let mut periods = BTreeSet::new();
        for (i, limit) in self.limits.iter().enumerate() {
            if limit.count == 0 {
                return Err(Invalid::new(
                    "out_of_range",
                    format!("limits[{i}].count"),
                    "a limit allows at least 1 redemption (deactivate the reward to allow none)",
                ));
            }
            if !periods.insert(limit.period) {
                return Err(Invalid::new(
                    "duplicate",
                    format!("limits[{i}].period"),
                    format!("only one limit per period; `{}` is given twice", limit.period.as_str()),
                ));
            }
        }
        for (i, w) in self.windows.iter().enumerate() {
            validate_window(w).map_err(|e| e.within(&format!("windows[{i}]")))?;
        }
        let mut tiers = BTreeSet::new();
        for (i, t) in self.tiers.iter().enumerate() {
            let field = format!("tiers[{i}]");
            check_reference(t, &field)?;
            if !tiers.insert(t.as_str()) {
                return Err(Invalid::new("duplicate", field, format!("tier `{t}` is listed twice")));
            }
        }
        Ok(())
    }

    /// Whether redemptions take stock.
    pub fn has_stock(&self) -> bool {
        self.stock.is_some()
    }
}

fn validate_kind(kind: &RewardKind) -> Checked<()> {
    match kind {
        RewardKind::Coupon { template_id } => check_reference(template_id, "template_id"),
        RewardKind::Goods { sku } => check_reference(sku, "sku"),
        RewardKind::Service => Ok(()),
        RewardKind::Lottery(lottery) => {
            if lottery.prizes.is_empty() {
                return Err(Invalid::new("empty", "prizes", "a lottery needs at least one prize"));
            }
            let mut ids = BTreeSet::new();
            let mut total = 0u64;
            for (i, p) in lottery.prizes.iter().enumerate() {
                let at = format!("prizes[{i}]");
                check_slug(&p.id, "id").map_err(|e| e.within(&at))?;
                if !ids.insert(p.id.as_str()) {
                    return Err(Invalid::new(
                        "duplicate",
                        format!("{at}.id"),
                        format!("prize id `{}` is used twice", p.id),
                    ));
                }
                check_name(&p.name, "name").map_err(|e| e.within(&at))?;
                match &p.kind {
                    PrizeKind::Coupon { template_id } => check_reference(template_id, "template_id"),
                    PrizeKind::Goods { sku } => check_reference(sku, "sku"),
                    PrizeKind::Service => Ok(()),
                    PrizeKind::Points { points } => check_range(*points, 1, MAX_AMOUNT, "points"),
                }
                .map_err(|e| e.within(&format!("{at}.kind")))?;
                total = total.saturating_add(p.weight);
                if total > MAX_TOTAL_WEIGHT {
                    return Err(Invalid::new(
                        "out_of_range",
                        format!("{at}.weight"),
                        format!("the weights of a lottery add up to at most {MAX_TOTAL_WEIGHT}"),
                    ));
                }
            }
            total = total.saturating_add(lottery.no_prize_weight);
            if total > MAX_TOTAL_WEIGHT {
                return Err(Invalid::new(
                    "out_of_range",
                    "no_prize_weight",
                    format!("the weights of a lottery add up to at most {MAX_TOTAL_WEIGHT}"),
                ));
            }
            if lottery.prizes.iter().all(|p| p.weight == 0) {
                return Err(Invalid::new("out_of_range", "prizes", "at least one prize needs a weight above 0"));
            }
            Ok(())
        }
    }
}

fn validate_window(w: &Window) -> Checked<()> {
    match w {
        Window::Monthly { from_day, to_day } => {
            if !(1..=31).contains(from_day) {
                return Err(Invalid::new("out_of_range", "from_day", "`from_day` must be between 1 and 31"));
            }
            if let Some(to) = to_day
                && !(*from_day..=31).contains(to)
            {
                return Err(Invalid::new(
                    "out_of_range",
                    "to_day",
                    format!("`to_day` must be between `from_day` ({from_day}) and 31"),
                ));
            }
        }
        Window::Weekly { days } => {
            if days.is_empty() {
                return Err(Invalid::new("empty", "days", "`days` needs at least one weekday"));
            }
            let mut seen = BTreeSet::new();
            for (i, d) in days.iter().enumerate() {
                if !seen.insert(d.num_days_from_monday()) {
                    return Err(Invalid::new("duplicate", format!("days[{i}]"), format!("{d} is listed twice")));
                }
            }
        }
        Window::Daily { start, end } => {
            if end <= start {
                return Err(Invalid::new(
                    "out_of_range",
                    "end",
                    "a daily window's `end` must be after its `start` (windows do not wrap past midnight)",
                ));
            }
        }
        Window::Fixed { start, end } => match (start, end) {
            (None, None) => {
                return Err(Invalid::new("missing_field", "start", "a fixed window needs `start`, `end` or both"));
            }
            (Some(s), Some(e)) if e <= s => {
                return Err(Invalid::new("out_of_range", "end", "a fixed window's `end` must be after its `start`"));
            }
            _ => {}
        },
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Windows in local time
// ---------------------------------------------------------------------------------------------------------

fn month_len(year: i32, month: u32) -> u32 {
    let first = NaiveDate::from_ymd_opt(year, month, 1);
    let next = first.and_then(|d| d.checked_add_months(Months::new(1)));
    match (first, next) {
        (Some(a), Some(b)) => u32::try_from((b - a).num_days()).unwrap_or(31),
        _ => 31,
    }
}

/// The open days `(from, to)` of a monthly window in the given month, if it opens at all.
fn monthly_days(year: i32, month: u32, from_day: u32, to_day: Option<u32>) -> Option<(u32, u32)> {
    let len = month_len(year, month);
    (from_day <= len).then(|| (from_day, to_day.unwrap_or(31).min(len)))
}

impl Window {
    /// Whether local time `t` is inside the window.
    fn holds(&self, t: NaiveDateTime) -> bool {
        match self {
            Window::Monthly { from_day, to_day } => monthly_days(t.year(), t.month(), *from_day, *to_day)
                .is_some_and(|(from, to)| (from..=to).contains(&t.day())),
            Window::Weekly { days } => days.contains(&t.weekday()),
            Window::Daily { start, end } => *start <= t.time() && t.time() < *end,
            Window::Fixed { start, end } => start.is_none_or(|s| s <= t) && end.is_none_or(|e| t < e),
        }
    }

    /// The first local time at or after `t` inside the window; `None` if it never opens again.
    fn next_open(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        if self.holds(t) {
            return Some(t);
        }
        match self {
            Window::Monthly { from_day, to_day } => {
                if let Some((from, _)) = monthly_days(t.year(), t.month(), *from_day, *to_day)
                    && t.day() < from
                {
                    return t.date().with_day(from).map(|d| d.and_time(NaiveTime::MIN));
                }
                let first = t.date().with_day(1)?;
                (1..=12).find_map(|k| {
                    let m = first.checked_add_months(Months::new(k))?;
                    let (from, _) = monthly_days(m.year(), m.month(), *from_day, *to_day)?;
                    m.with_day(from).map(|d| d.and_time(NaiveTime::MIN))
                })
            }
            Window::Weekly { days } => (1..=7u64).find_map(|k| {
                let d = t.date().checked_add_days(Days::new(k))?;
                days.contains(&d.weekday()).then(|| d.and_time(NaiveTime::MIN))
            }),
            Window::Daily { start, .. } => {
                if t.time() < *start {
                    Some(t.date().and_time(*start))
                } else {
                    t.date().succ_opt().map(|d| d.and_time(*start))
                }
            }
            Window::Fixed { start, end } => match (start, end) {
                (_, Some(e)) if t >= *e => None,
                (Some(s), _) if t < *s => Some(*s),
                _ => Some(t),
            },
        }
    }
}

/// The first local time at or after `from` inside every window, within [`WINDOW_HORIZON_DAYS`].
fn next_opening(windows: &[Window], from: NaiveDateTime) -> Option<NaiveDateTime> {
    let horizon = from.checked_add_signed(Duration::days(WINDOW_HORIZON_DAYS))?;
    let mut t = from;
    // Each window moves `t` forward to its next opening; when no window moves it, all hold. Every step
    // moves forward by at least to the next local midnight or window start, so this ends quickly.
    for _ in 0..100_000 {
        let mut moved = false;
        for w in windows {
            let next = w.next_open(t)?;
            if next > t {
                t = next;
                moved = true;
            }
        }
        if t > horizon {
            return None;
        }
        if !moved {
            return Some(t);
        }
    }
    None
}

/// The UTC instant of a local time; in a daylight-saving fold the earlier, in a gap the first valid minute
/// after it.
fn to_utc(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let mut t = local;
    for _ in 0..=24 * 60 {
        match tz.from_local_datetime(&t) {
            LocalResult::Single(x) => return Some(x.with_timezone(&Utc)),
            LocalResult::Ambiguous(x, _) => return Some(x.with_timezone(&Utc)),
            LocalResult::None => t = t.checked_add_signed(Duration::minutes(1))?,
        }
    }
    None
}

fn local(tz: Tz, at: DateTime<Utc>) -> NaiveDateTime {
    at.with_timezone(&tz).naive_local()
}

// ---------------------------------------------------------------------------------------------------------
// Checking a redemption
// ---------------------------------------------------------------------------------------------------------

/// Why redemptions are blocked for a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockReason {
    /// The points balance is below zero (a refund clawed back points already spent).
    NegativeBalance { balance: i64 },
    /// An uncleared risk flag, by its rule.
    RiskFlag { rule: String },
}

impl std::fmt::Display for BlockReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockReason::NegativeBalance { balance } => write!(f, "the points balance is negative ({balance})"),
            BlockReason::RiskFlag { rule } => write!(f, "the account is flagged for review (rule {rule})"),
        }
    }
}

/// A past redemption of this reward by this member, as limits need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastRedemption {
    pub at: DateTime<Utc>,
    pub state: RedemptionState,
}

impl From<&Redemption> for PastRedemption {
    fn from(r: &Redemption) -> Self {
        PastRedemption { at: r.created_at, state: r.state }
    }
}

/// Everything [`check`] needs besides the reward and the time, read by the store under the member's lock.
#[derive(Debug, Clone, PartialEq)]
pub struct RedeemContext {
    /// The member's current tier code.
    pub tier: String,
    /// The member's redemptions of this reward (any state, any order).
    pub history: Vec<PastRedemption>,
    /// Units of the reward left; ignored when the reward has unlimited stock.
    pub stock_left: i64,
    /// The member's available points (the ledger's available balance; negative under debt).
    pub available_points: i64,
    /// Set when redemptions are blocked for a reason other than a negative balance (a risk flag); a
    /// negative `available_points` blocks by itself.
    pub blocked: Option<BlockReason>,
    /// The business time zone, for windows and per-period limits.
    pub time_zone: Tz,
    /// Seed of a lottery draw; derive it from the idempotency key with [`draw_seed`]. Unused otherwise.
    pub seed: u64,
}

/// Why a redemption is refused: machine-readable (`code`, fields) with a message in words (`Display`).
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum RedeemRefusal {
    #[error("this reward is not available for redemption")]
    Inactive,
    #[error("{}", outside_window_words(.next_opening))]
    OutsideWindow { next_opening: Option<DateTime<Utc>> },
    #[error("this reward is out of stock")]
    OutOfStock,
    #[error("tier {tier} may not redeem this reward (allowed: {})", .allowed.join(", "))]
    TierNotAllowed { tier: String, allowed: Vec<String> },
    #[error("redemptions are blocked: {reason}")]
    Blocked { reason: BlockReason },
    #[error("{}", limit_words(*.period, *.limit, .resets_at))]
    LimitReached { period: LimitPeriod, limit: u32, resets_at: Option<DateTime<Utc>> },
    #[error("not enough points: {available} available, {cost} needed")]
    InsufficientPoints { available: i64, cost: i64 },
}

fn outside_window_words(next: &Option<DateTime<Utc>>) -> String {
    match next {
        Some(t) => format!("outside the redemption window; it opens next at {}", t.format("%Y-%m-%d %H:%M:%S UTC")),
        None => "outside the redemption window; it does not open again".to_string(),
    }
}

fn limit_words(period: LimitPeriod, limit: u32, resets_at: &Option<DateTime<Utc>>) -> String {
    let times = if limit == 1 { "time" } else { "times" };
    match resets_at {
        Some(t) => format!(
            "limit reached: at most {limit} {times} {}; again from {}",
            period.words(),
            t.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        None => format!("limit reached: at most {limit} {times} {}", period.words()),
    }
}

impl RedeemRefusal {
    /// The machine-readable code (the `code` of the JSON form).
    pub fn code(&self) -> &'static str {
        match self {
            RedeemRefusal::Inactive => "inactive",
            RedeemRefusal::OutsideWindow { .. } => "outside_window",
            RedeemRefusal::OutOfStock => "out_of_stock",
            RedeemRefusal::TierNotAllowed { .. } => "tier_not_allowed",
            RedeemRefusal::Blocked { .. } => "blocked",
            RedeemRefusal::LimitReached { .. } => "limit_reached",
            RedeemRefusal::InsufficientPoints { .. } => "insufficient_points",
        }
    }
}

/// A lottery outcome: the prize (or none), with the numbers that decided it so anyone can re-check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrawnPrize {
    /// The prize id; `None` when the draw fell into the no-prize weight.
    pub prize_id: Option<String>,
    /// The roll, `0 ≤ roll < total_weight`.
    pub roll: u64,
    pub total_weight: u64,
}

/// What an accepted redemption does; the store applies all of it in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub reward_id: String,
    /// Points to debit (the ledger's `redeem` with `Source::Reward`).
    pub points: i64,
    /// Cash to charge, in fen.
    pub cash: i64,
    /// Units of stock to take: 1, or 0 for a reward with unlimited stock.
    pub take_stock: i64,
    /// What to issue to the member.
    pub deliver: Deliver,
    /// Lottery rewards only: the draw.
    pub prize: Option<DrawnPrize>,
}

/// Derive a draw seed from an idempotency key, so a retry draws the same prize.
pub fn draw_seed(idempotency_key: &str) -> u64 {
    let digest = Sha256::digest(idempotency_key.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
}

/// Draw a prize. The roll is `⌊x × total / 2⁶⁴⌋` where `x` is the first 8 bytes (big-endian) of
/// `SHA-256("huiyuan/lottery/v1" ‖ 0 ‖ reward_id ‖ 0 ‖ seed as 8 big-endian bytes)`; prizes take the
/// cumulative ranges `[0, w₁)`, `[w₁, w₁+w₂)`, … in order, and the no-prize weight the last range. This
/// formula is part of the contract: a stored draw can be recomputed forever.
pub fn draw(reward_id: &str, lottery: &Lottery, seed: u64) -> DrawnPrize {
    let total = lottery.prizes.iter().fold(lottery.no_prize_weight, |acc, p| acc.saturating_add(p.weight));
    if total == 0 {
        return DrawnPrize { prize_id: None, roll: 0, total_weight: 0 };
    }
    let mut h = Sha256::new();
    h.update(b"huiyuan/lottery/v1\0");
    h.update(reward_id.as_bytes());
    h.update([0]);
    h.update(seed.to_be_bytes());
    let digest = h.finalize();
    let x = u64::from_be_bytes(digest[..8].try_into().unwrap_or_default());
    let roll = ((u128::from(x) * u128::from(total)) >> 64) as u64;
    let mut upper = 0u64;
    for p in &lottery.prizes {
        upper = upper.saturating_add(p.weight);
        if roll < upper {
            return DrawnPrize { prize_id: Some(p.id.clone()), roll, total_weight: total };
        }
    }
    DrawnPrize { prize_id: None, roll, total_weight: total }
}

/// Decide whether the member may redeem `reward` at `now`, and if so exactly what it takes and gives. The
/// checks run in the order documented on the module; the first failure is the answer.
pub fn check(reward: &Reward, ctx: &RedeemContext, now: DateTime<Utc>) -> Result<Plan, RedeemRefusal> {
    if !reward.active {
        return Err(RedeemRefusal::Inactive);
    }
    let tz = ctx.time_zone;
    let here = local(tz, now);
    if !reward.windows.iter().all(|w| w.holds(here)) {
        let next_opening = next_opening(&reward.windows, here).and_then(|t| to_utc(tz, t)).filter(|t| *t > now);
        return Err(RedeemRefusal::OutsideWindow { next_opening });
    }
    if reward.has_stock() && ctx.stock_left < 1 {
        return Err(RedeemRefusal::OutOfStock);
    }
    if !reward.tiers.is_empty() && !reward.tiers.contains(&ctx.tier) {
        return Err(RedeemRefusal::TierNotAllowed { tier: ctx.tier.clone(), allowed: reward.tiers.clone() });
    }
    if ctx.available_points < 0 {
        return Err(RedeemRefusal::Blocked { reason: BlockReason::NegativeBalance { balance: ctx.available_points } });
    }
    if let Some(reason) = &ctx.blocked {
        return Err(RedeemRefusal::Blocked { reason: reason.clone() });
    }
    let mut limits = reward.limits.clone();
    limits.sort_by_key(|l| l.period);
    for limit in limits {
        let used = ctx
            .history
            .iter()
            .filter(|r| r.state == RedemptionState::Completed && limit.period.same(local(tz, r.at).date(), here.date()))
            .count();
        if used >= limit.count as usize {
            let resets_at = limit.period.next_start(here.date()).and_then(|d| to_utc(tz, d.and_time(NaiveTime::MIN)));
            return Err(RedeemRefusal::LimitReached { period: limit.period, limit: limit.count, resets_at });
        }
    }
    if ctx.available_points < reward.points {
        return Err(RedeemRefusal::InsufficientPoints { available: ctx.available_points, cost: reward.points });
    }
    let (deliver, prize) = match &reward.kind {
        RewardKind::Coupon { template_id } => (Deliver::Coupon { template_id: template_id.clone() }, None),
        RewardKind::Goods { sku } => (Deliver::Goods { sku: sku.clone() }, None),
        RewardKind::Service => (Deliver::Service, None),
        RewardKind::Lottery(lottery) => {
            let drawn = draw(&reward.id, lottery, ctx.seed);
            let deliver = drawn
                .prize_id
                .as_ref()
                .and_then(|id| lottery.prizes.iter().find(|p| &p.id == id))
                .map_or(Deliver::Nothing, |p| Deliver::from(&p.kind));
            (deliver, Some(drawn))
        }
    };
    Ok(Plan {
        reward_id: reward.id.clone(),
        points: reward.points,
        cash: reward.cash,
        take_stock: i64::from(reward.has_stock()),
        deliver,
        prize,
    })
}

// ---------------------------------------------------------------------------------------------------------
// Redemption records and cancellation
// ---------------------------------------------------------------------------------------------------------

/// A redemption's state. Cancelling is the only transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedemptionState {
    Completed,
    Cancelled,
}

/// One redemption, as the store keeps it (keyed by member, then id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redemption {
    pub id: i64,
    pub reward_id: String,
    pub member_id: MemberId,
    /// Points debited.
    pub points: i64,
    /// Cash charged, in fen.
    pub cash: i64,
    /// Stock taken (0 or 1), given back on cancellation.
    pub stock_taken: i64,
    pub state: RedemptionState,
    /// What was issued.
    pub deliver: Deliver,
    /// Lottery rewards only: the draw.
    pub prize: Option<DrawnPrize>,
    /// Reference of the issued item once issued: coupon code, shipment number, booking.
    pub item_ref: Option<String>,
    pub created_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

impl Redemption {
    /// The record of an accepted plan.
    pub fn new(id: i64, member_id: MemberId, plan: &Plan, created_at: DateTime<Utc>) -> Redemption {
        Redemption {
            id,
            reward_id: plan.reward_id.clone(),
            member_id,
            points: plan.points,
            cash: plan.cash,
            stock_taken: plan.take_stock,
            state: RedemptionState::Completed,
            deliver: plan.deliver.clone(),
            prize: plan.prize.clone(),
            item_ref: None,
            created_at,
            cancelled_at: None,
        }
    }
}

/// The circumstances of a cancellation, as the caller knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelPolicy {
    /// The issued item is consumed: coupon used, goods shipped, service rendered. Refuses the cancel.
    pub item_used: bool,
    /// Lottery draws may be cancelled (an operator correcting a mistake); off by default, so a member
    /// cannot undo a losing draw.
    pub allow_lottery: bool,
    /// Put the stock back (off when the goods are not resellable).
    pub restock: bool,
    /// Cancel only up to this long after the redemption; `None`: no deadline.
    pub within: Option<Duration>,
}

impl Default for CancelPolicy {
    fn default() -> Self {
        Self { item_used: false, allow_lottery: false, restock: true, within: None }
    }
}

/// What a cancellation does; the store applies all of it in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancellation {
    /// The record in its cancelled state.
    pub redemption: Redemption,
    /// Points to credit back.
    pub points_back: i64,
    /// Cash to refund, in fen.
    pub cash_back: i64,
    /// Stock to put back.
    pub stock_back: i64,
    /// The issued item to revoke (void the coupon, claw back prize points); `Nothing` if nothing was issued.
    pub revoke: Deliver,
}

/// Why a cancellation is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum CancelRefusal {
    #[error("the redemption is already cancelled")]
    AlreadyCancelled { cancelled_at: Option<DateTime<Utc>> },
    #[error("the redeemed item is already used, shipped or rendered")]
    ItemUsed,
    #[error("lottery draws are final")]
    LotteryFinal,
    #[error("the redemption could be cancelled until {deadline}")]
    TooLate { deadline: DateTime<Utc> },
}

impl CancelRefusal {
    /// The machine-readable code (the `code` of the JSON form).
    pub fn code(&self) -> &'static str {
        match self {
            CancelRefusal::AlreadyCancelled { .. } => "already_cancelled",
            CancelRefusal::ItemUsed => "item_used",
            CancelRefusal::LotteryFinal => "lottery_final",
            CancelRefusal::TooLate { .. } => "too_late",
        }
    }
}

/// Decide whether `redemption` may be cancelled at `now`, and what goes back. `cancelled_at` is never
/// before `created_at`, even if the caller's clock is behind the one that wrote the redemption.
pub fn cancel(
    redemption: &Redemption,
    now: DateTime<Utc>,
    policy: &CancelPolicy,
) -> Result<Cancellation, CancelRefusal> {
    if redemption.state == RedemptionState::Cancelled {
        return Err(CancelRefusal::AlreadyCancelled { cancelled_at: redemption.cancelled_at });
    }
    if policy.item_used {
        return Err(CancelRefusal::ItemUsed);
    }
    if redemption.prize.is_some() && !policy.allow_lottery {
        return Err(CancelRefusal::LotteryFinal);
    }
    if let Some(within) = policy.within {
        let deadline = redemption.created_at + within;
        if now > deadline {
            return Err(CancelRefusal::TooLate { deadline });
        }
    }
    let mut cancelled = redemption.clone();
    cancelled.state = RedemptionState::Cancelled;
    cancelled.cancelled_at = Some(now.max(redemption.created_at));
    Ok(Cancellation {
        points_back: redemption.points,
        cash_back: redemption.cash,
        stock_back: if policy.restock { redemption.stock_taken } else { 0 },
        revoke: redemption.deliver.clone(),
        redemption: cancelled,
    })
}
