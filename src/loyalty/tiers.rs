//! The tier kernel (会员等级): which tier a member holds, given their growth value (成长值) over a rolling
//! window, and which paid membership cards (付费会员) add to the benefits of that tier. Pure: no I/O, no
//! clock (every function takes its time), no floats, no hash-map iteration — the live system, the replay
//! and the backtest get the same answer for the same inputs.
//!
//! # The model
//!
//! * **Window growth.** A growth movement `(at, amount)` counts from `at` (inclusive) until `at` plus
//!   `window_months` calendar months in the business time zone (exclusive; the day is clamped to the month's
//!   end). Window growth at `t` is the sum of the movements counting at `t`. Reversals are negative movements
//!   and count like any other, so a refund lowers window growth, and when an old reversal leaves the window
//!   growth rises again. Window growth may be negative; it then justifies only the lowest tier.
//! * **Upgrade at once.** Whenever window growth reaches a higher tier's `threshold`, the member moves to
//!   the highest tier reached (several tiers at once if need be). Growth only changes when a movement enters
//!   or a negative movement leaves the window, so those are the instants checked.
//! * **Re-evaluation (复核) and keep level (保级).** On the program's schedule (e.g. the 1st of every month
//!   at 00:00 local), a member whose window growth is below their tier's `keep` level enters grace for
//!   `grace_days` (or, without grace, is downgraded at once). If window growth is back at the keep level at
//!   any checked instant during grace, grace is cancelled; otherwise, when grace ends, the member moves down
//!   **exactly one** tier, whatever their growth. A re-evaluation during grace does nothing; the lowest tier
//!   never enters grace. So a member loses at most one tier per re-evaluation.
//! * **One driver.** [`TierProgram::advance`] brings a state up to `now`: it walks every instant due since
//!   the state's `as_of` in time order — growth changes first, then an ending grace, then a scheduled
//!   re-evaluation at the same instant — and finally checks growth at `now`. The live system calls it after
//!   every growth write (upgrade at once) and from the scheduler (re-evaluations and grace ends); a replay is
//!   [`TierProgram::enroll`] plus one `advance`. Because `as_of` only moves forward, a late scheduler cannot
//!   apply a re-evaluation after a change that happened later.
//! * **History is the record.** Every change is a [`TierChange`] (enrolment, upgrade, grace started, grace
//!   cancelled, downgrade) with from, to, at, window growth and a reason in words. The state is the fold
//!   of these records ([`TierState::from_changes`]); `advance` applies each change through the same fold,
//!   so a stored state and a rebuilt one never disagree. A state rebuilt from records has `as_of` at its
//!   last record; advancing it again re-checks the instants after that, which changed nothing before and
//!   so change nothing now.
//!
//! # Paid cards (付费会员)
//!
//! A [`CardPlan`] is sold for a price and a validity (days or months). Each purchase is a [`CardTerm`] that
//! copies the plan's benefits as sold, so retiring or repricing a plan never changes what a member paid
//! for. Renewing while a card of the plan is active (or already renewed ahead) starts the new term at the
//! current end, not at the purchase time. [`effective_benefits`] combines the tier's benefits with every
//! active card: the best points multiplier, the best discount, flags OR'ed, every distinct birthday gift.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Days, Months, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::commerce::order::MAX_AMOUNT;
use crate::error::{Checked, Invalid};

#[cfg(test)]
mod tests;

/// One basis point scale: 10 000 = ×1 (or 100 %).
pub const BP: i64 = 10_000;
/// Largest points multiplier a benefit may carry (×100, the rules engine's combined cap).
pub const MAX_MULTIPLIER_BP: i64 = crate::loyalty::rules::MAX_COMBINED_BP;
/// Largest growth threshold or keep level: the order amount bound, so window sums stay far from overflow.
pub const MAX_GROWTH: i64 = MAX_AMOUNT;
/// Most tiers a program may define.
pub const MAX_TIERS: usize = 20;

/// A realistic program (the tea-and-beauty brand 「青禾」): four tiers by growth value over 12 months
/// (1 growth per yuan under the example earning rules), keep levels below the thresholds, 30 days of grace,
/// re-evaluation on the 1st of every month, and a yearly paid card.
pub const EXAMPLE_TOML: &str = r#"
version = 1
time_zone = "Asia/Shanghai"
window_months = 12             # growth earned in the last 12 months counts
grace_days = 30                # 保级宽限期: 30 days to recover before moving down one tier

[reevaluation]                 # 每月1日 00:00 (business time) 复核
every_months = 1
day = 1

[[tiers]]
code = "regular"
name = "普通"
threshold = 0
keep = 0

[[tiers]]
code = "silver"
name = "银卡"
threshold = 2000
keep = 1000
[tiers.benefits]
points_multiplier_bp = 12000   # ×1.2
discount_bp = 200              # 98折
birthday_coupon = "birthday_silver"

[[tiers]]
code = "gold"
name = "金卡"
threshold = 5000
keep = 3000
[tiers.benefits]
points_multiplier_bp = 15000   # ×1.5
discount_bp = 500              # 95折
free_shipping = true
birthday_coupon = "birthday_gold"

[[tiers]]
code = "diamond"
name = "钻石"
threshold = 20000
keep = 15000
[tiers.benefits]
points_multiplier_bp = 20000   # ×2
discount_bp = 800              # 92折
free_shipping = true
birthday_coupon = "birthday_diamond"
exclusive_service = true       # 专属客服

[[cards]]
code = "plus"
name = "青禾 PLUS 年卡"
price = 9900                   # ¥99.00
validity = { months = 12 }
[cards.benefits]
points_multiplier_bp = 15000
discount_bp = 300
free_shipping = true
birthday_coupon = "birthday_plus"
"#;

// ---------------------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------------------

/// A tier program at a version: tiers, window, grace, re-evaluation schedule and paid card plans. Changes
/// carry `version`, so the history can say which rules moved a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierProgram {
    pub version: u32,
    /// The business time zone: windows, schedules and card validity are calendar arithmetic there.
    #[serde(default = "default_tz", with = "crate::loyalty::rules::tz_name")]
    pub time_zone: Tz,
    /// How many calendar months of growth count.
    #[serde(default = "default_window_months")]
    pub window_months: u32,
    /// Days a member below their keep level has to recover before moving down; 0 moves down at once.
    #[serde(default)]
    pub grace_days: u32,
    #[serde(default)]
    pub reevaluation: Schedule,
    /// Lowest first; the first has threshold 0.
    pub tiers: Vec<Tier>,
    #[serde(default)]
    pub cards: Vec<CardPlan>,
}

fn default_tz() -> Tz {
    chrono_tz::Asia::Shanghai
}

fn default_window_months() -> u32 {
    12
}

/// When re-evaluations run: at 00:00 local on `day` of every `every_months`-th month, counted from January
/// (`every_months = 3` runs in January, April, July and October). `day` is at most 28 so every month has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// 1, 2, 3, 4, 6 or 12: a divisor of 12, so the schedule is the same every year.
    pub every_months: u32,
    pub day: u32,
}

impl Default for Schedule {
    /// Monthly, on the 1st.
    fn default() -> Self {
        Self { every_months: 1, day: 1 }
    }
}

/// One tier (等级).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Stable identifier stored in states and history (`gold`).
    pub code: String,
    /// What members see (`金卡`).
    pub name: String,
    /// Window growth needed to reach this tier.
    pub threshold: i64,
    /// 保级: window growth needed at a re-evaluation to keep this tier; at most `threshold`.
    pub keep: i64,
    #[serde(default)]
    pub benefits: Benefits,
}

/// What a tier or a paid card gives (权益).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Benefits {
    /// Points multiplier in basis points (10 000 = ×1).
    pub points_multiplier_bp: i64,
    /// Discount in basis points off the price (500 = 5 % off, 95折).
    pub discount_bp: i64,
    pub free_shipping: bool,
    /// Coupon template issued as a birthday gift.
    pub birthday_coupon: Option<String>,
    /// Exclusive service (专属客服).
    pub exclusive_service: bool,
}

impl Default for Benefits {
    /// ×1 points, nothing else.
    fn default() -> Self {
        Self {
            points_multiplier_bp: BP,
            discount_bp: 0,
            free_shipping: false,
            birthday_coupon: None,
            exclusive_service: false,
        }
    }
}

/// A paid membership card plan (付费会员卡).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardPlan {
    pub code: String,
    pub name: String,
    /// Price in fen.
    pub price: i64,
    pub validity: Validity,
    #[serde(default)]
    pub benefits: Benefits,
}

/// How long one purchase of a card lasts: `{ days = 30 }` or `{ months = 12 }` (calendar months in the
/// business time zone, the day clamped to the month's end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Validity {
    Days(u32),
    Months(u32),
}

/// A program that could not be loaded: either not well-formed, or well-formed but invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TierProgramError {
    #[error("tier program does not parse: {0}")]
    Parse(String),
    #[error("tier program is invalid: {0}")]
    Invalid(Invalid),
}

fn is_code(s: &str) -> bool {
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

fn check_code(code: &str) -> Checked<()> {
    if !is_code(code) {
        return Err(Invalid::new("invalid_code", "code", "a code is 1-64 lower-case letters, digits, `_` or `-`"));
    }
    Ok(())
}

fn check_name(name: &str) -> Checked<()> {
    if name.trim().is_empty() {
        return Err(Invalid::missing("name"));
    }
    if name.chars().count() > 64 {
        return Err(Invalid::new("too_long", "name", "a name is at most 64 characters"));
    }
    Ok(())
}

impl Benefits {
    /// Ranges: multiplier 0 to ×100, discount below 100 %, a coupon template id without spaces.
    pub fn validate(&self) -> Checked<()> {
        check_range(self.points_multiplier_bp, 0, MAX_MULTIPLIER_BP, "points_multiplier_bp")?;
        check_range(self.discount_bp, 0, BP - 1, "discount_bp")?;
        if let Some(c) = &self.birthday_coupon
            && (c.is_empty() || c.len() > 64 || c.chars().any(|ch| ch.is_whitespace() || ch.is_control()))
        {
            return Err(Invalid::new(
                "invalid_code",
                "birthday_coupon",
                "a coupon template id is 1-64 characters without spaces",
            ));
        }
        Ok(())
    }
}

impl TierProgram {
    /// Parse and validate a TOML program.
    pub fn from_toml(text: &str) -> Result<TierProgram, TierProgramError> {
        let p: TierProgram = toml::from_str(text).map_err(|e| TierProgramError::Parse(e.to_string()))?;
        p.validate().map_err(TierProgramError::Invalid)?;
        Ok(p)
    }

    /// Parse and validate a JSON program (the API's form).
    pub fn from_json(text: &str) -> Result<TierProgram, TierProgramError> {
        let p: TierProgram = serde_json::from_str(text).map_err(|e| TierProgramError::Parse(e.to_string()))?;
        p.validate().map_err(TierProgramError::Invalid)?;
        Ok(p)
    }

    /// Check everything serde cannot; the error names the field (`tiers[2].threshold`). Thresholds start at
    /// 0 and strictly increase; a keep level is at most its tier's threshold and never below the keep level
    /// of the tier beneath (a higher tier is never easier to keep); codes are unique across tiers and cards.
    pub fn validate(&self) -> Checked<()> {
        if self.version == 0 {
            return Err(Invalid::new("out_of_range", "version", "`version` starts at 1"));
        }
        check_range(self.window_months.into(), 1, 120, "window_months")?;
        check_range(self.grace_days.into(), 0, 366, "grace_days")?;
        if ![1, 2, 3, 4, 6, 12].contains(&self.reevaluation.every_months) {
            return Err(Invalid::new(
                "out_of_range",
                "reevaluation.every_months",
                "`every_months` must be 1, 2, 3, 4, 6 or 12",
            ));
        }
        check_range(self.reevaluation.day.into(), 1, 28, "day").map_err(|e| e.within("reevaluation"))?;
        if self.tiers.is_empty() {
            return Err(Invalid::new("empty", "tiers", "a program needs at least one tier"));
        }
        if self.tiers.len() > MAX_TIERS {
            return Err(Invalid::new("too_many", "tiers", format!("a program has at most {MAX_TIERS} tiers")));
        }
        let mut codes: Vec<&str> = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for (i, tier) in self.tiers.iter().enumerate() {
            let below = i.checked_sub(1).map(|j| &self.tiers[j]);
            validate_tier(tier, below, &codes, &names).map_err(|e| e.within(&format!("tiers[{i}]")))?;
            codes.push(&tier.code);
            names.push(&tier.name);
        }
        for (i, plan) in self.cards.iter().enumerate() {
            validate_plan(plan, &codes).map_err(|e| e.within(&format!("cards[{i}]")))?;
            codes.push(&plan.code);
        }
        Ok(())
    }

    /// The tier with this code.
    pub fn tier(&self, code: &str) -> Option<&Tier> {
        self.tiers.iter().find(|t| t.code == code)
    }

    /// The position of a tier, 0 for the lowest: what a migration matrix sorts by.
    pub fn rank(&self, code: &str) -> Option<usize> {
        self.tiers.iter().position(|t| t.code == code)
    }

    /// The card plan with this code.
    pub fn card(&self, code: &str) -> Option<&CardPlan> {
        self.cards.iter().find(|c| c.code == code)
    }

    /// The highest tier whose threshold `growth` reaches (the lowest tier if none).
    pub fn tier_for(&self, growth: i64) -> &Tier {
        &self.tiers[self.rank_for(growth)]
    }

    fn rank_for(&self, growth: i64) -> usize {
        self.tiers.iter().rposition(|t| t.threshold <= growth).unwrap_or(0)
    }

    fn rank_of(&self, code: &str) -> Result<usize, TierError> {
        self.rank(code).ok_or_else(|| TierError::UnknownTier { code: code.to_string() })
    }
}

fn validate_tier(tier: &Tier, below: Option<&Tier>, codes: &[&str], names: &[&str]) -> Checked<()> {
    check_code(&tier.code)?;
    if codes.contains(&tier.code.as_str()) {
        return Err(Invalid::new("duplicate", "code", format!("tier code `{}` is used twice", tier.code)));
    }
    check_name(&tier.name)?;
    if names.contains(&tier.name.as_str()) {
        return Err(Invalid::new("duplicate", "name", format!("tier name `{}` is used twice", tier.name)));
    }
    match below {
        None if tier.threshold != 0 => {
            return Err(Invalid::new("out_of_range", "threshold", "the lowest tier's `threshold` must be 0"));
        }
        Some(b) if tier.threshold <= b.threshold => {
            return Err(Invalid::new(
                "not_increasing",
                "threshold",
                format!("`threshold` must be above the tier below's ({})", b.threshold),
            ));
        }
        _ => check_range(tier.threshold, 0, MAX_GROWTH, "threshold")?,
    }
    check_range(tier.keep, 0, tier.threshold, "keep")?;
    if let Some(b) = below
        && tier.keep < b.keep
    {
        return Err(Invalid::new(
            "not_increasing",
            "keep",
            format!("`keep` must not be below the tier below's keep level ({})", b.keep),
        ));
    }
    tier.benefits.validate().map_err(|e| e.within("benefits"))
}

fn validate_plan(plan: &CardPlan, codes: &[&str]) -> Checked<()> {
    check_code(&plan.code)?;
    if codes.contains(&plan.code.as_str()) {
        return Err(Invalid::new("duplicate", "code", format!("code `{}` is already a tier or card", plan.code)));
    }
    check_name(&plan.name)?;
    check_range(plan.price, 0, MAX_AMOUNT, "price")?;
    match plan.validity {
        Validity::Days(d) => check_range(d.into(), 1, 3660, "days"),
        Validity::Months(m) => check_range(m.into(), 1, 120, "months"),
    }
    .map_err(|e| e.within("validity"))?;
    plan.benefits.validate().map_err(|e| e.within("benefits"))
}

// ---------------------------------------------------------------------------------------------------------
// State and history
// ---------------------------------------------------------------------------------------------------------

/// One movement of available growth value from the ledger; reversals are negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Growth {
    pub at: DateTime<Utc>,
    pub amount: i64,
}

/// A running grace period (保级宽限期).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grace {
    pub started_at: DateTime<Utc>,
    /// The member moves down one tier at this instant unless growth is back at the keep level.
    pub ends_at: DateTime<Utc>,
}

/// A member's tier standing: the fold of their [`TierChange`] records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierState {
    /// Tier code.
    pub tier: String,
    /// When the member entered this tier.
    pub since: DateTime<Utc>,
    pub grace: Option<Grace>,
    /// Everything due up to this instant has been applied; [`TierProgram::advance`] resumes after it.
    pub as_of: DateTime<Utc>,
}

/// What a history record records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// The first record: the member starts at the lowest tier.
    Enrolled,
    Upgraded,
    /// Below the keep level at a re-evaluation: the grace period starts (the tier is unchanged).
    GraceStarted,
    /// Growth back at the keep level during grace (the tier is unchanged).
    GraceCancelled,
    /// One tier down, after grace or at a re-evaluation without grace.
    Downgraded,
}

/// One tier history record (等级变更记录). Append-only; [`TierState::from_changes`] rebuilds the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierChange {
    pub kind: ChangeKind,
    /// Tier code before.
    pub from: String,
    /// Tier code after (equal to `from` for enrolment and grace records).
    pub to: String,
    pub at: DateTime<Utc>,
    /// Window growth at `at`.
    pub growth: i64,
    /// Set on `grace_started`.
    pub grace_ends_at: Option<DateTime<Utc>>,
    /// The program version that decided the change.
    pub program_version: u32,
    /// Why, in words: "growth 5,230 in the 12 months to 2026-11-01 reached 金卡 threshold 5,000".
    pub reason: String,
}

/// Why a tier or card operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TierError {
    /// The state or a record names a tier the program does not have (the program changed its codes).
    #[error("tier `{code}` is not in the program")]
    UnknownTier { code: String },
    #[error("card plan `{code}` is not in the program")]
    UnknownPlan { code: String },
    /// History must start with an `enrolled` record.
    #[error("tier history does not start with an enrolment")]
    NotEnrolled,
    #[error("tier history has a second enrolment")]
    AlreadyEnrolled,
    /// A record earlier than the state it applies to.
    #[error("change at {at} is before the state's {as_of}")]
    OutOfOrder { at: DateTime<Utc>, as_of: DateTime<Utc> },
    /// A record whose `from` is not the current tier, or a tier-keeping record that changes the tier.
    #[error("change from `{found}` does not follow tier `{expected}`")]
    Mismatch { expected: String, found: String },
    #[error("grace cancelled while no grace is running")]
    NoGrace,
    /// Grace started while grace is running, or without an end after its start.
    #[error("grace record is malformed")]
    BadGrace,
    /// Date arithmetic beyond the calendar's range.
    #[error("date out of range")]
    OutOfRange,
}

impl TierState {
    /// Rebuild the state from stored history records, in the order written. `as_of` is the last record's
    /// time; [`TierProgram::advance`] from there re-checks what came after and finds it unchanged.
    pub fn from_changes(changes: &[TierChange]) -> Result<TierState, TierError> {
        let (first, rest) = changes.split_first().ok_or(TierError::NotEnrolled)?;
        if first.kind != ChangeKind::Enrolled {
            return Err(TierError::NotEnrolled);
        }
        let mut state = TierState { tier: first.to.clone(), since: first.at, grace: None, as_of: first.at };
        rest.iter().try_for_each(|c| state.apply(c))?;
        Ok(state)
    }

    /// Fold one record into the state; the only way the state ever changes.
    pub fn apply(&mut self, change: &TierChange) -> Result<(), TierError> {
        if change.at < self.as_of {
            return Err(TierError::OutOfOrder { at: change.at, as_of: self.as_of });
        }
        if change.from != self.tier {
            return Err(TierError::Mismatch { expected: self.tier.clone(), found: change.from.clone() });
        }
        let keeps_tier = matches!(change.kind, ChangeKind::GraceStarted | ChangeKind::GraceCancelled);
        if keeps_tier && change.to != change.from {
            return Err(TierError::Mismatch { expected: change.from.clone(), found: change.to.clone() });
        }
        match change.kind {
            ChangeKind::Enrolled => return Err(TierError::AlreadyEnrolled),
            ChangeKind::Upgraded | ChangeKind::Downgraded => {
                self.tier = change.to.clone();
                self.since = change.at;
                self.grace = None;
            }
            ChangeKind::GraceStarted => {
                let ends_at = change.grace_ends_at.filter(|e| *e > change.at).ok_or(TierError::BadGrace)?;
                if self.grace.is_some() {
                    return Err(TierError::BadGrace);
                }
                self.grace = Some(Grace { started_at: change.at, ends_at });
            }
            ChangeKind::GraceCancelled => {
                if self.grace.take().is_none() {
                    return Err(TierError::NoGrace);
                }
            }
        }
        self.as_of = change.at;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------------
// Local calendar arithmetic
// ---------------------------------------------------------------------------------------------------------

fn local(tz: Tz, t: DateTime<Utc>) -> NaiveDateTime {
    t.with_timezone(&tz).naive_local()
}

/// The instant of a local time; a time skipped by a daylight-saving change moves forward past the gap.
fn from_local(tz: Tz, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    (0..=3).find_map(|h| {
        let n = naive.checked_add_signed(chrono::Duration::hours(h))?;
        tz.from_local_datetime(&n).earliest().map(|t| t.with_timezone(&Utc))
    })
}

fn add_months(tz: Tz, t: DateTime<Utc>, n: u32) -> Option<DateTime<Utc>> {
    from_local(tz, local(tz, t).checked_add_months(Months::new(n))?)
}

fn add_days(tz: Tz, t: DateTime<Utc>, n: u32) -> Option<DateTime<Utc>> {
    from_local(tz, local(tz, t).checked_add_days(Days::new(n.into()))?)
}

/// `5,230`; `-1,200`.
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn plural(n: u32, unit: &str) -> String {
    if n == 1 { format!("1 {unit}") } else { format!("{n} {unit}s") }
}

// ---------------------------------------------------------------------------------------------------------
// Window growth
// ---------------------------------------------------------------------------------------------------------

/// Window growth swept forward in time: movements sorted by when they enter and by when they leave.
struct Window {
    enter: Vec<(DateTime<Utc>, i64)>,
    leave: Vec<(DateTime<Utc>, i64)>,
    entered: usize,
    left: usize,
    sum: i128,
}

impl Window {
    fn new(program: &TierProgram, history: &[Growth]) -> Window {
        let mut enter: Vec<(DateTime<Utc>, i64)> = history.iter().map(|g| (g.at, g.amount)).collect();
        enter.sort();
        // A movement whose window end is beyond the calendar never leaves.
        let mut leave: Vec<(DateTime<Utc>, i64)> = enter
            .iter()
            .filter_map(|&(at, amount)| Some((add_months(program.time_zone, at, program.window_months)?, amount)))
            .collect();
        leave.sort();
        Window { enter, leave, entered: 0, left: 0, sum: 0 }
    }

    /// Window growth at `t`; calls must come in non-decreasing `t`.
    fn at(&mut self, t: DateTime<Utc>) -> i64 {
        while let Some(&(_, amount)) = self.enter.get(self.entered).filter(|(at, _)| *at <= t) {
            self.sum += i128::from(amount);
            self.entered += 1;
        }
        while let Some(&(_, amount)) = self.leave.get(self.left).filter(|(at, _)| *at <= t) {
            self.sum -= i128::from(amount);
            self.left += 1;
        }
        self.sum.clamp(i64::MIN.into(), i64::MAX.into()) as i64
    }

    /// The instants in `(after, until]` at which growth may rise: a movement enters, or a negative one leaves.
    fn rises(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out: Vec<DateTime<Utc>> = self
            .enter
            .iter()
            .map(|(at, _)| *at)
            .chain(self.leave.iter().filter(|(_, amount)| *amount < 0).map(|(at, _)| *at))
            .filter(|t| *t > after && *t <= until)
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Where a member stands against the tier thresholds: what a member page shows (还差 X 成长值升级).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub tier: String,
    /// Window growth now.
    pub growth: i64,
    /// The current tier's keep level and how much growth is still missing to meet it (0 if met).
    pub keep: i64,
    pub keep_shortfall: i64,
    /// The next tier up and the growth still needed to reach it; `None` at the top.
    pub next_tier: Option<String>,
    pub next_shortfall: Option<i64>,
    pub grace_ends_at: Option<DateTime<Utc>>,
    pub next_reevaluation: Option<DateTime<Utc>>,
}

impl TierProgram {
    /// Window growth at `at`: the movements with `at' <= at < at' + window_months`.
    pub fn window_growth(&self, history: &[Growth], at: DateTime<Utc>) -> i64 {
        Window::new(self, history).at(at)
    }

    /// The first scheduled re-evaluation strictly after `after`.
    pub fn next_reevaluation(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let tz = self.time_zone;
        let start = local(tz, after).date();
        let every = self.reevaluation.every_months.max(1);
        // Months from the start's month, at most 13 ahead (every schedule repeats within 12 months).
        let base = start.with_day(1)?;
        (0..=13).find_map(|k| {
            let month = base.checked_add_months(Months::new(k))?;
            if !month.month0().is_multiple_of(every) {
                return None;
            }
            let day = month.with_day(self.reevaluation.day)?;
            let t = from_local(tz, day.and_hms_opt(0, 0, 0)?)?;
            (t > after).then_some(t)
        })
    }

    /// The member's standing at `now`, from their state (already advanced) and growth history.
    pub fn progress(&self, state: &TierState, history: &[Growth], now: DateTime<Utc>) -> Result<Progress, TierError> {
        let rank = self.rank_of(&state.tier)?;
        let tier = &self.tiers[rank];
        let growth = self.window_growth(history, now);
        let next = self.tiers.get(rank + 1);
        Ok(Progress {
            tier: tier.code.clone(),
            growth,
            keep: tier.keep,
            keep_shortfall: (tier.keep - growth).max(0),
            next_tier: next.map(|t| t.code.clone()),
            next_shortfall: next.map(|t| (t.threshold - growth).max(0)),
            grace_ends_at: state.grace.map(|g| g.ends_at),
            next_reevaluation: self.next_reevaluation(now),
        })
    }
}

// ---------------------------------------------------------------------------------------------------------
// Advancing a state
// ---------------------------------------------------------------------------------------------------------

/// What happens at one instant of the timeline; at equal instants they run in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Growth,
    GraceEnd,
    Review,
}

impl TierProgram {
    /// A new member: the enrolment record at the lowest tier, then whatever their growth at `at` already
    /// justifies (a member imported with history lands on their tier at once).
    pub fn enroll(&self, history: &[Growth], at: DateTime<Utc>) -> Result<(TierState, Vec<TierChange>), TierError> {
        let lowest = &self.tiers[0];
        let enrolled = TierChange {
            kind: ChangeKind::Enrolled,
            from: lowest.code.clone(),
            to: lowest.code.clone(),
            at,
            growth: 0,
            grace_ends_at: None,
            program_version: self.version,
            reason: format!("enrolled at {}", lowest.name),
        };
        let mut state = TierState::from_changes(std::slice::from_ref(&enrolled))?;
        let mut changes = vec![enrolled];
        changes.extend(self.advance(&mut state, history, at)?);
        Ok((state, changes))
    }

    /// Bring `state` up to `now`: every growth change, grace end and scheduled re-evaluation in
    /// `(state.as_of, now]` in time order (see the module documentation), then a growth check at `now`.
    /// Returns the new history records, already applied to `state`; the store appends them. Call it after
    /// every growth write (upgrade at once) and from the scheduler (re-evaluation, grace end). A `now`
    /// before `as_of` changes nothing.
    pub fn advance(
        &self,
        state: &mut TierState,
        history: &[Growth],
        now: DateTime<Utc>,
    ) -> Result<Vec<TierChange>, TierError> {
        self.rank_of(&state.tier)?;
        let mut out = Vec::new();
        if now < state.as_of {
            return Ok(out);
        }
        let mut window = Window::new(self, history);
        let rises = window.rises(state.as_of, now);
        let mut next_rise = 0;
        let mut review = self.next_reevaluation(state.as_of);
        loop {
            let candidates = [
                rises.get(next_rise).map(|t| (*t, Step::Growth)),
                state.grace.map(|g| (g.ends_at.max(state.as_of), Step::GraceEnd)),
                review.map(|t| (t, Step::Review)),
            ];
            let Some((t, step)) = candidates.into_iter().flatten().filter(|(t, _)| *t <= now).min() else { break };
            let growth = window.at(t);
            let change = match step {
                Step::Growth => {
                    next_rise += 1;
                    self.check_growth(state, growth, t)?
                }
                Step::GraceEnd => self.end_grace(state, growth, t)?,
                Step::Review => {
                    review = self.next_reevaluation(t);
                    self.review(state, growth, t)?
                }
            };
            if let Some(c) = change {
                state.apply(&c)?;
                out.push(c);
            }
            state.as_of = state.as_of.max(t);
        }
        let growth = window.at(now);
        if let Some(c) = self.check_growth(state, growth, now)? {
            state.apply(&c)?;
            out.push(c);
        }
        state.as_of = now;
        Ok(out)
    }

    fn record(&self, kind: ChangeKind, from: &Tier, to: &Tier, at: DateTime<Utc>, growth: i64) -> TierChange {
        TierChange {
            kind,
            from: from.code.clone(),
            to: to.code.clone(),
            at,
            growth,
            grace_ends_at: None,
            program_version: self.version,
            reason: String::new(),
        }
    }

    /// "growth 5,230 in the 12 months to 2026-11-01" (with the local time when it is not midnight).
    fn growth_words(&self, growth: i64, at: DateTime<Utc>) -> String {
        let l = local(self.time_zone, at);
        let mut when = l.format("%Y-%m-%d").to_string();
        if l.time().num_seconds_from_midnight() != 0 || l.time().nanosecond() != 0 {
            let _ = write!(when, " {}", l.format("%H:%M"));
        }
        format!("growth {} in the {} to {when}", thousands(growth), plural(self.window_months, "month"))
    }

    /// Upgrade to the highest tier reached, or cancel grace when the keep level is met again.
    fn check_growth(&self, state: &TierState, growth: i64, at: DateTime<Utc>) -> Result<Option<TierChange>, TierError> {
        let rank = self.rank_of(&state.tier)?;
        let current = &self.tiers[rank];
        let target = self.rank_for(growth);
        if target > rank {
            let to = &self.tiers[target];
            let mut c = self.record(ChangeKind::Upgraded, current, to, at, growth);
            c.reason =
                format!("{} reached {} threshold {}", self.growth_words(growth, at), to.name, thousands(to.threshold));
            return Ok(Some(c));
        }
        if state.grace.is_some() && growth >= current.keep {
            let mut c = self.record(ChangeKind::GraceCancelled, current, current, at, growth);
            c.reason = format!(
                "{} back at {} keep level {}: grace cancelled",
                self.growth_words(growth, at),
                current.name,
                thousands(current.keep)
            );
            return Ok(Some(c));
        }
        Ok(None)
    }

    /// Grace is over: one tier down unless growth is back at the keep level.
    fn end_grace(&self, state: &TierState, growth: i64, at: DateTime<Utc>) -> Result<Option<TierChange>, TierError> {
        let rank = self.rank_of(&state.tier)?;
        let current = &self.tiers[rank];
        if growth >= current.keep || rank == 0 {
            // Only reachable from a hand-made state: growth checks cancel grace as soon as the level is met.
            let mut c = self.record(ChangeKind::GraceCancelled, current, current, at, growth);
            c.reason = format!(
                "{} at {} keep level {} when grace ended: grace cancelled",
                self.growth_words(growth, at),
                current.name,
                thousands(current.keep)
            );
            return Ok(Some(c));
        }
        let lower = &self.tiers[rank - 1];
        let mut c = self.record(ChangeKind::Downgraded, current, lower, at, growth);
        c.reason = format!(
            "{} below {} keep level {} after {} of grace",
            self.growth_words(growth, at),
            current.name,
            thousands(current.keep),
            plural(self.grace_days, "day")
        );
        Ok(Some(c))
    }

    /// A scheduled re-evaluation: below the keep level starts grace, or without grace moves one tier down.
    fn review(&self, state: &TierState, growth: i64, at: DateTime<Utc>) -> Result<Option<TierChange>, TierError> {
        let rank = self.rank_of(&state.tier)?;
        let current = &self.tiers[rank];
        if state.grace.is_some() || rank == 0 || growth >= current.keep {
            return Ok(None);
        }
        let below =
            format!("{} below {} keep level {}", self.growth_words(growth, at), current.name, thousands(current.keep));
        if self.grace_days == 0 {
            let mut c = self.record(ChangeKind::Downgraded, current, &self.tiers[rank - 1], at, growth);
            c.reason = format!("{below} at re-evaluation");
            return Ok(Some(c));
        }
        let ends_at = add_days(self.time_zone, at, self.grace_days).ok_or(TierError::OutOfRange)?;
        let mut c = self.record(ChangeKind::GraceStarted, current, current, at, growth);
        c.grace_ends_at = Some(ends_at);
        c.reason = format!(
            "{below}: {} of grace until {}",
            plural(self.grace_days, "day"),
            local(self.time_zone, ends_at).format("%Y-%m-%d")
        );
        Ok(Some(c))
    }
}

/// A member's tier path from scratch: enrolled at `registered_at`, then every growth change, grace end and
/// scheduled re-evaluation up to `until`. Deterministic: the backtest replays the same history under the
/// current and a draft program and compares where members end up.
pub fn replay(
    program: &TierProgram,
    history: &[Growth],
    registered_at: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<(TierState, Vec<TierChange>), TierError> {
    let (mut state, mut changes) = program.enroll(history, registered_at)?;
    changes.extend(program.advance(&mut state, history, until)?);
    Ok((state, changes))
}

// ---------------------------------------------------------------------------------------------------------
// Paid cards
// ---------------------------------------------------------------------------------------------------------

/// One purchase of a card: the plan's terms as sold, and the period it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardTerm {
    pub plan: String,
    pub name: String,
    /// Price paid, in fen.
    pub price: i64,
    pub bought_at: DateTime<Utc>,
    pub starts_at: DateTime<Utc>,
    /// Exclusive: the card is no longer active at this instant.
    pub ends_at: DateTime<Utc>,
    pub benefits: Benefits,
}

impl CardTerm {
    /// Whether this term covers `at`.
    pub fn is_active(&self, at: DateTime<Utc>) -> bool {
        self.starts_at <= at && at < self.ends_at
    }
}

/// Whether the member holds an active card of `plan` at `at`.
pub fn card_active(terms: &[CardTerm], plan: &str, at: DateTime<Utc>) -> bool {
    terms.iter().any(|t| t.plan == plan && t.is_active(at))
}

impl TierProgram {
    /// Buy or renew a card of `plan` at `now`. With a term of the plan still running (or bought ahead),
    /// the new term starts at the latest end, so renewing early loses nothing; otherwise it starts at `now`.
    /// Returns the term for the store to append; idempotency of the payment is the caller's.
    pub fn buy_card(&self, plan: &str, terms: &[CardTerm], now: DateTime<Utc>) -> Result<CardTerm, TierError> {
        let p = self.card(plan).ok_or_else(|| TierError::UnknownPlan { code: plan.to_string() })?;
        let starts_at = terms.iter().filter(|t| t.plan == plan).map(|t| t.ends_at).fold(now, DateTime::max);
        let tz = self.time_zone;
        let ends_at = match p.validity {
            Validity::Days(d) => add_days(tz, starts_at, d),
            Validity::Months(m) => add_months(tz, starts_at, m),
        }
        .ok_or(TierError::OutOfRange)?;
        Ok(CardTerm {
            plan: p.code.clone(),
            name: p.name.clone(),
            price: p.price,
            bought_at: now,
            starts_at,
            ends_at,
            benefits: p.benefits.clone(),
        })
    }
}

/// The benefits a member enjoys at a moment: their tier's combined with every active card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveBenefits {
    /// The largest multiplier of the tier and the active cards (they do not multiply each other).
    pub points_multiplier_bp: i64,
    /// The largest discount (discounts do not add up).
    pub discount_bp: i64,
    /// True if the tier or any active card gives it.
    pub free_shipping: bool,
    pub exclusive_service: bool,
    /// Every distinct birthday gift: the tier's first, then each active card's (a card's gift was paid for).
    pub birthday_coupons: Vec<String>,
    /// Where the benefits come from: the tier code, then the active card plans in purchase order.
    pub sources: Vec<String>,
}

/// Combine the tier's benefits with the cards active at `now`: best multiplier, best discount, flags
/// OR'ed, birthday gifts collected.
pub fn effective_benefits(tier: &Tier, cards: &[CardTerm], now: DateTime<Utc>) -> EffectiveBenefits {
    let b = &tier.benefits;
    let mut e = EffectiveBenefits {
        points_multiplier_bp: b.points_multiplier_bp,
        discount_bp: b.discount_bp,
        free_shipping: b.free_shipping,
        exclusive_service: b.exclusive_service,
        birthday_coupons: b.birthday_coupon.iter().cloned().collect(),
        sources: vec![tier.code.clone()],
    };
    for card in cards.iter().filter(|c| c.is_active(now)) {
        let c = &card.benefits;
        e.points_multiplier_bp = e.points_multiplier_bp.max(c.points_multiplier_bp);
        e.discount_bp = e.discount_bp.max(c.discount_bp);
        e.free_shipping |= c.free_shipping;
        e.exclusive_service |= c.exclusive_service;
        if let Some(gift) = &c.birthday_coupon
            && !e.birthday_coupons.contains(gift)
        {
            e.birthday_coupons.push(gift.clone());
        }
        if !e.sources.contains(&card.plan) {
            e.sources.push(card.plan.clone());
        }
    }
    e
}
