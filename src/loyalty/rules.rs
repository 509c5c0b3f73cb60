//! The earning-rules evaluator: a pure, deterministic function from (order or behaviour event, member
//! snapshot, rule set at a version) to point and growth-value effects, each carrying the rule id and version
//! that produced it, plus an explanation for every rule saying why it applied or not.
//!
//! Nothing here does I/O or reads the clock: the simulator, the ledger writer and the backtest all call
//! [`evaluate`] and must get the same answer for the same inputs, today and in a year.
//!
//! # Order of evaluation (an order)
//!
//! 1. **Local time.** `placed_at` is converted to the rule set's business time zone (default
//!    Asia/Shanghai); weekdays, birthday months and campaign windows are judged on that local time.
//! 2. **Base rule, per line.** A line is excluded if its kind is in `excluded_kinds`, its SKU in
//!    `excluded_skus`, or its category path lies under one of `excluded_categories` (path-segment prefix:
//!    `礼品卡` covers `礼品卡/电子卡` but not `礼品卡套`). Shipping earns only if `include_shipping`.
//! 3. **Multipliers, per eligible line.** Every multiplier whose condition holds for the line is a candidate.
//!    - `best_of`: within each named `group`, only the candidate with the largest multiplier applies
//!      (ties: higher `priority`, then earlier in the file). The winner is then treated as `multiply`.
//!    - `add`: bonus percentages add up: `add factor = 1 + Σ (mᵢ − 1)` (×2 and ×1.5 give ×2.5).
//!    - `multiply`: the add factor is multiplied by each `multiply` factor (and each `best_of` winner) in
//!      order of descending `priority`, then position in the file.
//!    - The combined multiplier is capped at ×100 ([`MAX_COMBINED_BP`]).
//!
//!    Multipliers apply to points only, unless a multiplier says `applies_to_growth = true`.
//! 4. **Referral.** On the referee's first paid order, the referral rule awards both the referee (this
//!    member) and the referrer ([`Beneficiary::Referrer`]).
//! 5. **Caps**, in the order listed, over this member's effects in effect order (see below).
//!
//! A behaviour event (check-in, share, review, registration, profile completion) is matched to the rule of
//! its kind, then the caps apply the same way. Multipliers never apply to behaviour rules.
//!
//! # Rounding (integer arithmetic only)
//!
//! Multipliers are basis points (10 000 = ×1). The combined multiplier is computed as
//! `c = 10 000 + Σ(addᵢ − 10 000)`, then `c = ⌊c × mⱼ / 10 000⌋` for each multiply factor in order.
//! Points of a line are `⌊amount × points_per_unit × c / (currency_unit × 10 000)⌋` — floored **per line**,
//! so an order's points are by definition the sum of its lines' points, and a refund of a line reverses
//! exactly that line's effect. Growth value uses the same formula with `growth_per_unit` and only the
//! multipliers that apply to growth.
//!
//! # Caps
//!
//! A cap limits, per member and per day or month (local), the points and/or the number of awards of the
//! rules in its scope (all rules if `rules` is empty). `MemberSnapshot::today` / `this_month` must describe the
//! day and month of the input. Effects are trimmed in effect order: earlier lines keep their points, the line
//! that crosses the cap gets the remainder, later lines get zero. Growth value is never capped, and the
//! referrer's side of a referral is not subject to this member's caps.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::commerce::order::{LineKind, OrderDraft, OrderStatus, OrderView};
use crate::error::{Checked, Invalid};
use crate::members::MemberId;

/// One basis point scale: 10 000 = ×1.
pub const BP: i64 = 10_000;
/// The combined multiplier of a line never exceeds ×100, whatever the rules say.
pub const MAX_COMBINED_BP: i64 = 100 * BP;
/// Largest multiplier a single rule may carry (×100).
pub const MAX_MULTIPLIER: f64 = 100.0;
/// Largest points (or growth) per currency unit of the base rule.
pub const MAX_PER_UNIT: i64 = 10_000;
/// Largest fixed award of a behaviour rule or cap limit: keeps sums far from overflow.
pub const MAX_AWARD: i64 = 100_000_000;
/// Largest amount of a line we compute with (the order validator's bound).
const MAX_LINE_AMOUNT: i64 = crate::commerce::order::MAX_AMOUNT;

/// A realistic example rule set (a Chinese tea-and-beauty brand, 「青禾」), used in tests and as the template
/// shown to operators. 1 point and 1 growth value per yuan; shipping, gift cards and fees earn nothing;
/// 会员日 (Wednesday) and 生日月 are each ×2 but do not stack with each other (best of); the tier and card
/// multiplier from the tier program's benefits;
/// a category bonus; 连续签到 over a 7-day cycle; behaviour rewards; daily and monthly caps.
pub const EXAMPLE_TOML: &str = r#"
version = 3
currency_unit = 100            # fen per unit: 1 yuan
time_zone = "Asia/Shanghai"

[[rules]]
id = "base"
kind = "base"
description = "1 point and 1 growth value per yuan paid on merchandise"
points_per_unit = 1
growth_per_unit = 1
excluded_kinds = ["gift_card", "fee", "adjustment"]
excluded_categories = ["礼品卡"]
excluded_skus = ["SHIPPING"]
include_shipping = false

# Tier and paid-card multipliers (银卡 ×1.2, 金卡 ×1.5, 钻石 ×2, PLUS 卡 ×1.5; the best of them) are the tier
# program's benefits: one rule reads them, so they are configured once, where the tiers are.
[[rules]]
id = "benefits"
kind = "multiplier"
description = "tier or paid card multiplier (the tier program's benefits)"
stacking = "multiply"
priority = 100
multiplier = "benefits"
when = { on = "always" }

# Date bonuses: 会员日 and 生日月 are both ×2, but a member's birthday-month Wednesday is still ×2.
[[rules]]
id = "member_day"
kind = "multiplier"
description = "会员日: every Wednesday double points"
stacking = "best_of"
group = "date_bonus"
priority = 50
multiplier = 2.0
when = { on = "weekday", day = "Wednesday" }

[[rules]]
id = "birthday_month"
kind = "multiplier"
description = "生日月双倍积分"
stacking = "best_of"
group = "date_bonus"
priority = 60
multiplier = 2.0
when = { on = "birthday_month" }

# Bonus percentages that add up.
[[rules]]
id = "skincare_bonus"
kind = "multiplier"
description = "护肤 category +50%"
stacking = "add"
multiplier = 1.5
when = { on = "category", prefixes = ["美妆/护肤"] }

[[rules]]
id = "double11"
kind = "multiplier"
description = "双11 campaign +100%"
stacking = "add"
multiplier = 2.0
when = { on = "campaign", start = "2025-11-01T00:00:00", end = "2025-11-12T00:00:00" }

[[rules]]
id = "miniprogram"
kind = "multiplier"
description = "小程序 orders +10%"
stacking = "add"
multiplier = 1.1
when = { on = "channel", channels = ["wechat_mp"] }

[[rules]]
id = "own_brand"
kind = "multiplier"
description = "青禾 own brand +20%"
stacking = "add"
multiplier = 1.2
when = { on = "brand", brands = ["青禾"] }

[[rules]]
id = "registration"
kind = "registration"
description = "注册有礼"
points = 100

[[rules]]
id = "check_in"
kind = "check_in"
description = "连续签到: day 1-3 earn 1/2/3, days 4-6 earn 5, day 7 earns 10, then the cycle restarts"
cycle_days = 7
points_by_day = [1, 2, 3, 5, 5, 5, 10]

[[rules]]
id = "review"
kind = "review"
description = "评价有礼"
points = 20

[[rules]]
id = "share"
kind = "share"
description = "分享有礼 (at most 3 a day, see caps)"
points = 5

[[rules]]
id = "referral"
kind = "referral"
description = "邀请有礼: 500 to both sides on the referee's first paid order"
referrer_points = 500
referee_points = 500

[[rules]]
id = "profile"
kind = "profile_completion"
description = "完善资料"
points = 50

[[caps]]
id = "daily_points"
description = "at most 2000 points a day from all rules"
period = "day"
points = 2000

[[caps]]
id = "monthly_points"
description = "at most 20000 points a month from all rules"
period = "month"
points = 20000

[[caps]]
id = "share_daily"
description = "share rewards at most 3 times a day"
period = "day"
count = 3
rules = ["share"]
"#;

// ---------------------------------------------------------------------------------------------------------
// The rule set
// ---------------------------------------------------------------------------------------------------------

/// A versioned rule set. Effects carry `version`, so the ledger can always say which rules earned a point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    pub version: u32,
    /// Minor units (fen) per currency unit: 100 means rates are "per yuan".
    #[serde(default = "default_currency_unit")]
    pub currency_unit: i64,
    /// The business time zone: "Wednesday" and "birthday month" are local to the shop, not UTC.
    #[serde(default = "default_tz", with = "tz_name")]
    pub time_zone: Tz,
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub caps: Vec<Cap>,
}

fn default_currency_unit() -> i64 {
    100
}

fn default_tz() -> Tz {
    chrono_tz::Asia::Shanghai
}

/// Time zones are written by IANA name (`Asia/Shanghai`); an unknown name fails to parse.
pub(crate) mod tz_name {
    use chrono_tz::Tz;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(tz.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Tz, D::Error> {
        let name = String::deserialize(d)?;
        name.parse::<Tz>().map_err(|_| serde::de::Error::custom(format!("unknown time zone `{name}`")))
    }
}

/// A rule set that could not be loaded: either not well-formed, or well-formed but invalid.
#[derive(Debug, thiserror::Error)]
pub enum RuleSetError {
    #[error("rule set does not parse: {0}")]
    Parse(String),
    #[error("rule set is invalid: {0}")]
    Invalid(Invalid),
}

/// One rule. `kind` selects the variant in TOML/JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Rule {
    Base(BaseRule),
    Multiplier(MultiplierRule),
    Registration(FixedRule),
    CheckIn(CheckInRule),
    Share(FixedRule),
    Review(FixedRule),
    Referral(ReferralRule),
    ProfileCompletion(FixedRule),
}

/// The base earning rate on order lines; at most one per rule set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseRule {
    pub id: String,
    #[serde(default)]
    pub description: String,
    /// Points per currency unit paid.
    pub points_per_unit: i64,
    /// Growth value (成长值) per currency unit paid; a separate rate, not multiplied unless a rule says so.
    #[serde(default)]
    pub growth_per_unit: i64,
    #[serde(default)]
    pub excluded_skus: Vec<String>,
    /// Category path prefixes, by whole segments.
    #[serde(default)]
    pub excluded_categories: Vec<String>,
    #[serde(default)]
    pub excluded_kinds: Vec<LineKind>,
    /// Whether the shipping fee earns like a line; usually not.
    #[serde(default)]
    pub include_shipping: bool,
}

/// How a multiplier combines with the others (see the module documentation for the exact order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stacking {
    /// Bonus percentages add: ×2 and ×1.5 give ×2.5.
    Add,
    /// Factors multiply: ×2 and ×1.5 give ×3.
    Multiply,
    /// Within the named group only the largest applies; the winner then multiplies.
    BestOf,
}

/// A points multiplier on order lines, with a condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiplierRule {
    pub id: String,
    #[serde(default)]
    pub description: String,
    pub stacking: Stacking,
    /// Required for `best_of`, refused otherwise.
    #[serde(default)]
    pub group: Option<String>,
    /// Higher first among `multiply` factors and to break `best_of` ties.
    #[serde(default)]
    pub priority: i32,
    /// The factor, with at most 4 decimals (it becomes basis points), or `"benefits"`: the points multiplier
    /// of the member's tier and active paid cards (the tier program's benefits) at the time of the order, so
    /// tier and card multipliers are configured once, where the tiers are.
    pub multiplier: Factor,
    /// Also multiply growth value (default: promotions do not inflate tiers).
    #[serde(default)]
    pub applies_to_growth: bool,
    pub when: Condition,
}

/// A multiplier's factor: fixed, or read off the member's benefits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Factor {
    Fixed(f64),
    From(FactorSource),
}

/// Where a factor that is not fixed comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactorSource {
    /// The best points multiplier of the member's tier and active paid cards.
    Benefits,
}

impl MultiplierRule {
    /// The multiplier in basis points for this member (fixed factors are validated to be exact; a benefits
    /// factor is ×1 for a member without benefits).
    pub fn multiplier_bp(&self, member: &MemberSnapshot) -> i64 {
        match self.multiplier {
            Factor::Fixed(f) if f.is_finite() => (f * BP as f64).round().clamp(0.0, MAX_COMBINED_BP as f64) as i64,
            Factor::Fixed(_) => BP,
            Factor::From(FactorSource::Benefits) => {
                member.benefits.as_ref().map_or(BP, |b| b.multiplier_bp.clamp(0, MAX_COMBINED_BP))
            }
        }
    }
}

/// When a multiplier applies. Order-level conditions hold for every line of an order; `category` and
/// `brand` are judged per line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "on", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// Every order (for a multiplier whose factor is the member's benefits).
    Always,
    Tier {
        tiers: Vec<String>,
    },
    /// Category path prefixes, by whole segments.
    Category {
        prefixes: Vec<String>,
    },
    Brand {
        brands: Vec<String>,
    },
    Channel {
        channels: Vec<String>,
    },
    /// Weekly member day (会员日), local weekday.
    Weekday {
        day: Weekday,
    },
    /// 生日月: the order is placed in the member's birthday month (local).
    BirthdayMonth,
    /// 生日当天: the member's birthday (local); a 29 February birthday is the 28th in other years.
    BirthdayDay,
    /// A campaign window in local time, `[start, end)`.
    Campaign {
        start: NaiveDateTime,
        end: NaiveDateTime,
    },
}

/// A behaviour rule with a fixed award.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedRule {
    pub id: String,
    #[serde(default)]
    pub description: String,
    pub points: i64,
    #[serde(default)]
    pub growth: i64,
}

/// 连续签到: the award depends on the streak day within a repeating cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckInRule {
    pub id: String,
    #[serde(default)]
    pub description: String,
    pub cycle_days: u32,
    /// Points for streak day 1, 2, … of the cycle; exactly `cycle_days` entries.
    pub points_by_day: Vec<i64>,
}

/// 邀请有礼: both sides earn when the referee pays their first order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferralRule {
    pub id: String,
    #[serde(default)]
    pub description: String,
    pub referrer_points: i64,
    pub referee_points: i64,
}

/// The period a cap counts over, local to the business time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Month,
}

/// A per-member limit on points and/or number of awards over a day or month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cap {
    pub id: String,
    #[serde(default)]
    pub description: String,
    pub period: Period,
    #[serde(default)]
    pub points: Option<i64>,
    #[serde(default)]
    pub count: Option<u32>,
    /// Rule ids in scope; empty means every rule.
    #[serde(default)]
    pub rules: Vec<String>,
}

impl Cap {
    fn covers(&self, rule_id: &str) -> bool {
        self.rules.is_empty() || self.rules.iter().any(|r| r == rule_id)
    }
}

impl Rule {
    /// The rule's id, unique within its rule set.
    pub fn id(&self) -> &str {
        match self {
            Rule::Base(r) => &r.id,
            Rule::Multiplier(r) => &r.id,
            Rule::Registration(r) | Rule::Share(r) | Rule::Review(r) | Rule::ProfileCompletion(r) => &r.id,
            Rule::CheckIn(r) => &r.id,
            Rule::Referral(r) => &r.id,
        }
    }

    fn kind_name(&self) -> &'static str {
        match self {
            Rule::Base(_) => "base",
            Rule::Multiplier(_) => "multiplier",
            Rule::Registration(_) => "registration",
            Rule::CheckIn(_) => "check_in",
            Rule::Share(_) => "share",
            Rule::Review(_) => "review",
            Rule::Referral(_) => "referral",
            Rule::ProfileCompletion(_) => "profile_completion",
        }
    }

    /// Kinds of which a rule set may hold only one, so an event never matches two rules.
    fn is_singleton(&self) -> bool {
        !matches!(self, Rule::Multiplier(_))
    }
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

fn check_non_empty(list: &[String], field: &str) -> Checked<()> {
    if list.is_empty() {
        return Err(Invalid::new("empty", field, format!("`{field}` needs at least one entry")));
    }
    for (i, s) in list.iter().enumerate() {
        if s.trim().is_empty() {
            return Err(Invalid::missing(format!("{field}[{i}]")));
        }
    }
    Ok(())
}

impl RuleSet {
    /// Parse and validate a TOML rule set.
    pub fn from_toml(text: &str) -> Result<RuleSet, RuleSetError> {
        let set: RuleSet = toml::from_str(text).map_err(|e| RuleSetError::Parse(e.to_string()))?;
        set.validate().map_err(RuleSetError::Invalid)?;
        Ok(set)
    }

    /// Parse and validate a JSON rule set (the API's form).
    pub fn from_json(text: &str) -> Result<RuleSet, RuleSetError> {
        let set: RuleSet = serde_json::from_str(text).map_err(|e| RuleSetError::Parse(e.to_string()))?;
        set.validate().map_err(RuleSetError::Invalid)?;
        Ok(set)
    }

    /// Check everything serde cannot: ranges, unique ids, exact multipliers, references between caps and
    /// rules. The error names the offending field (`rules[3].multiplier`).
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.version == 0 {
            return Err(Invalid::new("out_of_range", "version", "`version` starts at 1"));
        }
        check_range(self.currency_unit, 1, 1_000_000, "currency_unit")?;
        let mut ids = BTreeSet::new();
        let mut singletons = BTreeSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            self.validate_rule(rule, &mut ids, &mut singletons).map_err(|e| e.within(&at))?;
        }
        for (i, cap) in self.caps.iter().enumerate() {
            let at = format!("caps[{i}]");
            self.validate_cap(cap, &mut ids).map_err(|e| e.within(&at))?;
        }
        Ok(())
    }

    fn validate_rule(
        &self,
        rule: &Rule,
        ids: &mut BTreeSet<String>,
        singletons: &mut BTreeSet<&'static str>,
    ) -> Checked<()> {
        let id = rule.id();
        if !is_id(id) {
            return Err(Invalid::new("invalid_code", "id", "a rule id is 1-64 lower-case letters, digits, `_` or `-`"));
        }
        if !ids.insert(id.to_string()) {
            return Err(Invalid::new("duplicate", "id", format!("rule id `{id}` is used twice")));
        }
        if rule.is_singleton() && !singletons.insert(rule.kind_name()) {
            return Err(Invalid::new(
                "duplicate",
                "kind",
                format!("only one `{}` rule is allowed per rule set", rule.kind_name()),
            ));
        }
        match rule {
            Rule::Base(b) => {
                check_range(b.points_per_unit, 0, MAX_PER_UNIT, "points_per_unit")?;
                check_range(b.growth_per_unit, 0, MAX_PER_UNIT, "growth_per_unit")?;
                for (i, s) in b.excluded_skus.iter().enumerate() {
                    if s.trim().is_empty() {
                        return Err(Invalid::missing(format!("excluded_skus[{i}]")));
                    }
                }
                for (i, s) in b.excluded_categories.iter().enumerate() {
                    if s.trim().is_empty() {
                        return Err(Invalid::missing(format!("excluded_categories[{i}]")));
                    }
                }
            }
            Rule::Multiplier(m) => {
                let ok = |f: f64| {
                    let exact = f.is_finite() && ((f * BP as f64).round() - f * BP as f64).abs() < 1e-6;
                    f.is_finite() && f > 0.0 && f <= MAX_MULTIPLIER && exact
                };
                if matches!(m.multiplier, Factor::Fixed(f) if !ok(f)) {
                    return Err(Invalid::new(
                        "out_of_range",
                        "multiplier",
                        format!(
                            "`multiplier` must be above 0 and at most {MAX_MULTIPLIER}, with at most 4 decimals, \
                             or \"benefits\""
                        ),
                    ));
                }
                match (m.stacking, &m.group) {
                    (Stacking::BestOf, None) => return Err(Invalid::missing("group")),
                    (Stacking::BestOf, Some(g)) if !is_id(g) => {
                        return Err(Invalid::new(
                            "invalid_code",
                            "group",
                            "a group is 1-64 lower-case letters, digits, `_` or `-`",
                        ));
                    }
                    (Stacking::Add | Stacking::Multiply, Some(_)) => {
                        return Err(Invalid::new("unexpected", "group", "`group` only applies to `best_of` stacking"));
                    }
                    _ => {}
                }
                validate_condition(&m.when).map_err(|e| e.within("when"))?;
            }
            Rule::Registration(f) | Rule::Share(f) | Rule::Review(f) | Rule::ProfileCompletion(f) => {
                check_range(f.points, 0, MAX_AWARD, "points")?;
                check_range(f.growth, 0, MAX_AWARD, "growth")?;
            }
            Rule::CheckIn(c) => {
                if !(1..=366).contains(&c.cycle_days) {
                    return Err(Invalid::new("out_of_range", "cycle_days", "`cycle_days` must be between 1 and 366"));
                }
                if c.points_by_day.len() != c.cycle_days as usize {
                    return Err(Invalid::new(
                        "length_mismatch",
                        "points_by_day",
                        format!("`points_by_day` needs exactly {} entries, one per day of the cycle", c.cycle_days),
                    ));
                }
                for (i, p) in c.points_by_day.iter().enumerate() {
                    check_range(*p, 0, MAX_AWARD, &format!("points_by_day[{i}]"))?;
                }
            }
            Rule::Referral(r) => {
                check_range(r.referrer_points, 0, MAX_AWARD, "referrer_points")?;
                check_range(r.referee_points, 0, MAX_AWARD, "referee_points")?;
            }
        }
        Ok(())
    }

    fn validate_cap(&self, cap: &Cap, ids: &mut BTreeSet<String>) -> Checked<()> {
        if !is_id(&cap.id) {
            return Err(Invalid::new("invalid_code", "id", "a cap id is 1-64 lower-case letters, digits, `_` or `-`"));
        }
        if !ids.insert(cap.id.clone()) {
            return Err(Invalid::new("duplicate", "id", format!("id `{}` is used twice", cap.id)));
        }
        if cap.points.is_none() && cap.count.is_none() {
            return Err(Invalid::new("missing_field", "points", "a cap limits `points`, `count` or both"));
        }
        if let Some(p) = cap.points {
            check_range(p, 0, MAX_AWARD * 100, "points")?;
        }
        for (i, r) in cap.rules.iter().enumerate() {
            if !self.rules.iter().any(|rule| rule.id() == r && !matches!(rule, Rule::Multiplier(_))) {
                return Err(Invalid::new(
                    "unknown_rule",
                    format!("rules[{i}]"),
                    format!("`{r}` is not an awarding rule of this set (multipliers are capped through the base rule)"),
                ));
            }
        }
        Ok(())
    }

    fn rule_ids_and_caps(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(Rule::id).chain(self.caps.iter().map(|c| c.id.as_str()))
    }
}

fn validate_condition(c: &Condition) -> Checked<()> {
    match c {
        Condition::Always => Ok(()),
        Condition::Tier { tiers } => check_non_empty(tiers, "tiers"),
        Condition::Category { prefixes } => check_non_empty(prefixes, "prefixes"),
        Condition::Brand { brands } => check_non_empty(brands, "brands"),
        Condition::Channel { channels } => check_non_empty(channels, "channels"),
        Condition::Campaign { start, end } if end <= start => {
            Err(Invalid::new("out_of_range", "end", "a campaign's `end` must be after its `start`"))
        }
        Condition::Weekday { .. } | Condition::BirthdayMonth | Condition::BirthdayDay | Condition::Campaign { .. } => {
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------------------

/// What is being evaluated: an order or a behaviour event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RuleInput {
    Order(RuleOrder),
    Event(BehaviourEvent),
}

/// An order as the rules see it: lines with their catalog attributes resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleOrder {
    pub channel: String,
    pub placed_at: DateTime<Utc>,
    /// Paid (or beyond): the referral rule waits for payment.
    pub paid: bool,
    pub lines: Vec<RuleLine>,
    /// Shipping fee in fen; earns only if the base rule includes shipping.
    #[serde(default)]
    pub shipping_fee: i64,
}

/// One order line with what the rules need from the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleLine {
    /// The order's 1-based line number; effects and refunds refer to it.
    pub line_no: i32,
    pub sku: String,
    pub category_path: Option<String>,
    pub brand: Option<String>,
    pub kind: LineKind,
    /// Amount paid for the line in fen, after line discounts.
    pub amount: i64,
}

impl RuleOrder {
    /// Build the rule input from a validated order; `catalog` gives `(category_path, brand)` of a SKU.
    pub fn from_draft(draft: &OrderDraft, catalog: impl Fn(&str) -> (Option<String>, Option<String>)) -> RuleOrder {
        let paid = draft.paid_at.is_some()
            || matches!(draft.status, OrderStatus::Paid | OrderStatus::Shipped | OrderStatus::Completed);
        let lines = draft
            .lines
            .iter()
            .map(|l| {
                let (category_path, brand) = catalog(&l.sku);
                RuleLine {
                    line_no: l.line_no,
                    sku: l.sku.clone(),
                    category_path,
                    brand,
                    kind: l.kind,
                    amount: l.amount,
                }
            })
            .collect();
        RuleOrder {
            channel: draft.channel.clone(),
            placed_at: draft.placed_at,
            paid,
            lines,
            shipping_fee: draft.shipping_fee,
        }
    }
}

impl RuleOrder {
    /// Build the rule input from a stored order; `catalog` gives `(category_path, brand)` of a SKU.
    pub fn from_view(order: &OrderView, catalog: impl Fn(&str) -> (Option<String>, Option<String>)) -> RuleOrder {
        let paid = order.paid_at.is_some()
            || matches!(order.status, OrderStatus::Paid | OrderStatus::Shipped | OrderStatus::Completed);
        RuleOrder {
            channel: order.channel.clone(),
            placed_at: order.placed_at,
            paid: paid && order.status != OrderStatus::Cancelled,
            lines: order
                .lines
                .iter()
                .map(|l| {
                    let (category_path, brand) = catalog(&l.sku);
                    RuleLine {
                        line_no: l.line_no,
                        sku: l.sku.clone(),
                        category_path,
                        brand,
                        kind: l.kind,
                        amount: l.amount,
                    }
                })
                .collect(),
            shipping_fee: order.shipping_fee,
        }
    }
}

/// A behaviour that may earn points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BehaviourEvent {
    pub at: DateTime<Utc>,
    pub behaviour: Behaviour,
}

/// The behaviours with rules. Referral is not here: it is earned on the referee's first paid order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Behaviour {
    Registration,
    /// `streak_day` is the streak length including today (1 = first day).
    CheckIn {
        streak_day: u32,
    },
    Share,
    Review,
    ProfileCompletion,
}

/// What a rule has already awarded in a period, for caps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleUsage {
    pub points: i64,
    pub count: u32,
}

/// Points and awards already earned in one period, by rule id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub by_rule: BTreeMap<String, RuleUsage>,
}

impl Usage {
    fn in_scope(&self, cap: &Cap) -> RuleUsage {
        self.by_rule.iter().filter(|(id, _)| cap.covers(id)).fold(RuleUsage::default(), |acc, (_, u)| RuleUsage {
            points: acc.points.saturating_add(u.points),
            count: acc.count.saturating_add(u.count),
        })
    }
}

/// The member as the rules see them at the time of the input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSnapshot {
    pub tier: String,
    pub birthday: Option<NaiveDate>,
    pub registered_at: DateTime<Utc>,
    /// Earned on the local day of the input.
    #[serde(default)]
    pub today: Usage,
    /// Earned in the local month of the input.
    #[serde(default)]
    pub this_month: Usage,
    /// True while the member has no paid order before this one.
    pub first_paid_order: bool,
    pub referred_by: Option<MemberId>,
    /// Once-per-member rules (registration, profile completion, referral) already awarded.
    #[serde(default)]
    pub once_awarded: BTreeSet<String>,
    /// The member's tier and paid-card benefits at the time of the input (none without a tier program).
    #[serde(default)]
    pub benefits: Option<BenefitMultiplier>,
}

/// The points multiplier of a member's benefits, and where it comes from (tier code, card plans).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenefitMultiplier {
    pub multiplier_bp: i64,
    pub sources: Vec<String>,
}

// ---------------------------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------------------------

/// What an effect or explanation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "on", rename_all = "snake_case")]
pub enum Target {
    Line { line_no: i32 },
    Shipping,
    Order,
    Event,
}

/// Who receives an effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "who", rename_all = "snake_case")]
pub enum Beneficiary {
    /// The member of the snapshot.
    Member,
    /// The member who referred them (referral rule only).
    Referrer { member_id: MemberId },
}

/// Points and growth value to write, with the rule and version that produced them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effect {
    pub target: Target,
    pub beneficiary: Beneficiary,
    pub rule_id: String,
    pub rule_version: u32,
    pub points: i64,
    pub growth: i64,
    /// Points before caps; equal to `points` when no cap trimmed this effect.
    pub uncapped_points: i64,
    /// Combined points multiplier in basis points (10 000 = ×1).
    pub multiplier_bp: i64,
    /// Multiplier rules folded into this effect, in the order applied.
    pub multipliers: Vec<String>,
}

/// Why a rule or cap applied or not, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub rule_id: String,
    pub target: Target,
    pub applied: bool,
    pub reason: String,
}

/// The result of [`evaluate`]: effects to write and an explanation for every rule and cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluation {
    pub rule_version: u32,
    pub effects: Vec<Effect>,
    pub explanations: Vec<Explanation>,
}

impl Evaluation {
    /// Points to this member (not the referrer's share).
    pub fn member_points(&self) -> i64 {
        self.effects.iter().filter(|e| e.beneficiary == Beneficiary::Member).map(|e| e.points).sum()
    }

    /// Growth value to this member.
    pub fn member_growth(&self) -> i64 {
        self.effects.iter().filter(|e| e.beneficiary == Beneficiary::Member).map(|e| e.growth).sum()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------------------

struct Ctx<'a> {
    rules: &'a RuleSet,
    member: &'a MemberSnapshot,
    effects: Vec<Effect>,
    explanations: Vec<Explanation>,
}

impl Ctx<'_> {
    fn explain(&mut self, rule_id: &str, target: Target, applied: bool, reason: impl Into<String>) {
        self.explanations.push(Explanation { rule_id: rule_id.to_string(), target, applied, reason: reason.into() });
    }

    fn award(&mut self, rule_id: &str, target: Target, beneficiary: Beneficiary, points: i64, growth: i64) {
        self.effects.push(Effect {
            target,
            beneficiary,
            rule_id: rule_id.to_string(),
            rule_version: self.rules.version,
            points,
            growth,
            uncapped_points: points,
            multiplier_bp: BP,
            multipliers: Vec::new(),
        });
    }
}

/// Evaluate `input` for `member` under `rules`. Pure and deterministic: no clock, no I/O, no randomness, no
/// hash-map iteration. `rules` should have passed [`RuleSet::validate`]; an unvalidated set never panics, but
/// out-of-range numbers are clamped.
pub fn evaluate(input: &RuleInput, member: &MemberSnapshot, rules: &RuleSet) -> Evaluation {
    let mut ctx = Ctx { rules, member, effects: Vec::new(), explanations: Vec::new() };
    match input {
        RuleInput::Order(order) => evaluate_order(&mut ctx, order),
        RuleInput::Event(event) => evaluate_event(&mut ctx, event),
    }
    let target = match input {
        RuleInput::Order(_) => Target::Order,
        RuleInput::Event(_) => Target::Event,
    };
    apply_caps(&mut ctx, target);
    Evaluation { rule_version: rules.version, effects: ctx.effects, explanations: ctx.explanations }
}

/// Whether `path` lies under `prefix`, by whole `/`-separated segments.
fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path == prefix || (path.starts_with(prefix) && path[prefix.len()..].starts_with('/'))
}

fn weekday_name(d: Weekday) -> &'static str {
    match d {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

/// The birthday's local date in `year`; 29 February falls on the 28th in common years.
fn birthday_in(b: NaiveDate, year: i32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(year, b.month(), b.day()).or_else(|| NaiveDate::from_ymd_opt(year, b.month(), 28))
}

/// Judge an order-level condition; `None` for line-level conditions.
fn order_condition(
    c: &Condition,
    member: &MemberSnapshot,
    order: &RuleOrder,
    local: NaiveDateTime,
) -> Option<(bool, String)> {
    Some(match c {
        Condition::Always => (true, "applies to every order".to_string()),
        Condition::Tier { tiers } => {
            if tiers.contains(&member.tier) {
                (true, format!("member tier is {}", member.tier))
            } else {
                (false, format!("member tier {} is not {}", member.tier, tiers.join(" / ")))
            }
        }
        Condition::Channel { channels } => {
            if channels.contains(&order.channel) {
                (true, format!("order channel is {}", order.channel))
            } else {
                (false, format!("order channel {} is not {}", order.channel, channels.join(" / ")))
            }
        }
        Condition::Weekday { day } => {
            let today = local.weekday();
            if today == *day {
                (true, format!("member day is {}", weekday_name(*day)))
            } else {
                (
                    false,
                    format!("order placed on {} (local), member day is {}", weekday_name(today), weekday_name(*day)),
                )
            }
        }
        Condition::BirthdayMonth => match member.birthday {
            None => (false, "no birthday on file".to_string()),
            Some(b) if b.month() == local.month() => (true, format!("birthday month (month {})", b.month())),
            Some(b) => (false, format!("birthday month is {}, order placed in month {}", b.month(), local.month())),
        },
        Condition::BirthdayDay => match member.birthday {
            None => (false, "no birthday on file".to_string()),
            Some(b) if birthday_in(b, local.year()) == Some(local.date()) => (true, "birthday today".to_string()),
            Some(b) => {
                (false, format!("birthday is {:02}-{:02}, order placed on {}", b.month(), b.day(), local.date()))
            }
        },
        Condition::Campaign { start, end } => {
            if *start <= local && local < *end {
                (true, format!("inside campaign window {start} – {end} (local)"))
            } else {
                (false, format!("outside campaign window {start} – {end} (local)"))
            }
        }
        Condition::Category { .. } | Condition::Brand { .. } => return None,
    })
}

fn line_condition(c: &Condition, line: &RuleLine) -> (bool, String) {
    match c {
        Condition::Category { prefixes } => match &line.category_path {
            None => (false, "line has no category".to_string()),
            Some(path) => match prefixes.iter().find(|p| under(path, p)) {
                Some(p) => (true, format!("category {path} is under {p}")),
                None => (false, format!("category {path} is not under {}", prefixes.join(" / "))),
            },
        },
        Condition::Brand { brands } => match &line.brand {
            None => (false, "line has no brand".to_string()),
            Some(b) if brands.contains(b) => (true, format!("brand is {b}")),
            Some(b) => (false, format!("brand {b} is not {}", brands.join(" / "))),
        },
        _ => (true, String::new()),
    }
}

fn base_exclusion(base: &BaseRule, line: &RuleLine) -> Option<String> {
    if base.excluded_kinds.contains(&line.kind) {
        return Some(format!("line kind {} excluded", line.kind.as_str()));
    }
    if base.excluded_skus.contains(&line.sku) {
        return Some(format!("SKU {} excluded", line.sku));
    }
    if let Some(path) = &line.category_path
        && let Some(p) = base.excluded_categories.iter().find(|p| under(path, p))
    {
        return Some(format!("category excluded ({path} is under {p})"));
    }
    if line.amount <= 0 {
        return Some("nothing paid on this line".to_string());
    }
    None
}

/// `⌊amount × per_unit × bp / (unit × 10 000)⌋` in i128, clamped to sane ranges.
fn line_value(amount: i64, per_unit: i64, bp: i64, unit: i64) -> i64 {
    let amount = i128::from(amount.clamp(0, MAX_LINE_AMOUNT));
    let per_unit = i128::from(per_unit.clamp(0, MAX_PER_UNIT));
    let bp = i128::from(bp.clamp(0, MAX_COMBINED_BP));
    let unit = i128::from(unit.max(1));
    i64::try_from(amount * per_unit * bp / (unit * i128::from(BP))).unwrap_or(i64::MAX)
}

/// Combine the matching multipliers of one line; returns (points bp, growth bp, applied ids, losers).
/// A benefits factor says what it reads (`benefits of gold + plus ×1.5`), and does not apply to a member
/// without benefits.
fn with_factor(m: &MultiplierRule, member: &MemberSnapshot, (ok, why): (bool, String)) -> (bool, String) {
    match (m.multiplier, &member.benefits) {
        (Factor::Fixed(_), _) => (ok, why),
        (Factor::From(FactorSource::Benefits), None) => {
            (false, "the member has no tier benefits (no tier program)".into())
        }
        (Factor::From(FactorSource::Benefits), Some(b)) if ok => {
            (true, format!("{why}: benefits of {} give {}", b.sources.join(" + "), format_bp(b.multiplier_bp)))
        }
        (Factor::From(FactorSource::Benefits), Some(_)) => (false, why),
    }
}

fn combine(
    candidates: &[(usize, &MultiplierRule)],
    member: &MemberSnapshot,
) -> (i64, i64, Vec<String>, Vec<(String, String)>) {
    // best_of: keep the largest per group; ties to higher priority, then earlier position.
    let mut winners: BTreeMap<&str, (usize, &MultiplierRule)> = BTreeMap::new();
    for &(pos, m) in candidates.iter().filter(|(_, m)| m.stacking == Stacking::BestOf) {
        let group = m.group.as_deref().unwrap_or("");
        let better = match winners.get(group) {
            None => true,
            Some(&(wpos, w)) => {
                (m.multiplier_bp(member), m.priority, std::cmp::Reverse(pos))
                    > (w.multiplier_bp(member), w.priority, std::cmp::Reverse(wpos))
            }
        };
        if better {
            winners.insert(group, (pos, m));
        }
    }
    let mut losers = Vec::new();
    for &(pos, m) in candidates.iter().filter(|(_, m)| m.stacking == Stacking::BestOf) {
        let group = m.group.as_deref().unwrap_or("");
        if let Some(&(wpos, w)) = winners.get(group)
            && wpos != pos
        {
            losers.push((m.id.clone(), format!("outdone by {} in best-of group {group}", w.id)));
        }
    }
    let mut applied = Vec::new();
    let (mut points_bp, mut growth_bp) = (BP, BP);
    for &(_, m) in candidates.iter().filter(|(_, m)| m.stacking == Stacking::Add) {
        points_bp += m.multiplier_bp(member) - BP;
        if m.applies_to_growth {
            growth_bp += m.multiplier_bp(member) - BP;
        }
        applied.push(m.id.clone());
    }
    points_bp = points_bp.clamp(0, MAX_COMBINED_BP);
    growth_bp = growth_bp.clamp(0, MAX_COMBINED_BP);
    let mut factors: Vec<(usize, &MultiplierRule)> =
        candidates.iter().copied().filter(|(_, m)| m.stacking == Stacking::Multiply).collect();
    factors.extend(winners.values().copied());
    factors.sort_by_key(|&(pos, m)| (std::cmp::Reverse(m.priority), pos));
    for (_, m) in factors {
        points_bp = (points_bp * m.multiplier_bp(member) / BP).clamp(0, MAX_COMBINED_BP);
        if m.applies_to_growth {
            growth_bp = (growth_bp * m.multiplier_bp(member) / BP).clamp(0, MAX_COMBINED_BP);
        }
        applied.push(m.id.clone());
    }
    (points_bp, growth_bp, applied, losers)
}

fn evaluate_order(ctx: &mut Ctx<'_>, order: &RuleOrder) {
    let rules = ctx.rules;
    let local = order.placed_at.with_timezone(&rules.time_zone).naive_local();
    let base = rules.rules.iter().find_map(|r| if let Rule::Base(b) = r { Some(b) } else { None });
    let multipliers: Vec<(usize, &MultiplierRule)> = rules
        .rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| if let Rule::Multiplier(m) = r { Some((i, m)) } else { None })
        .collect();

    // Order-level conditions, judged once.
    let mut order_level: BTreeMap<usize, (bool, String)> = BTreeMap::new();
    for &(pos, m) in &multipliers {
        if let Some(judged) = order_condition(&m.when, ctx.member, order, local) {
            order_level.insert(pos, with_factor(m, ctx.member, judged));
        }
    }

    // Eligible lines under the base rule.
    let mut eligible: Vec<&RuleLine> = Vec::new();
    match base {
        None => {}
        Some(b) => {
            for line in &order.lines {
                let target = Target::Line { line_no: line.line_no };
                match base_exclusion(b, line) {
                    Some(why) => ctx.explain(&b.id, target, false, why),
                    None => eligible.push(line),
                }
            }
        }
    }

    // Multipliers that fail at order level are explained once.
    for &(pos, m) in &multipliers {
        if let Some((false, why)) = order_level.get(&pos) {
            ctx.explain(&m.id, Target::Order, false, why.clone());
        } else if eligible.is_empty() {
            let why = if base.is_none() { "no base rule to multiply" } else { "no line earns points" };
            ctx.explain(&m.id, Target::Order, false, why);
        }
    }

    if let Some(b) = base {
        for line in eligible {
            let target = Target::Line { line_no: line.line_no };
            let mut candidates = Vec::new();
            for &(pos, m) in &multipliers {
                match order_level.get(&pos) {
                    Some((false, _)) => continue,
                    Some((true, why)) => {
                        candidates.push((pos, m));
                        ctx.explain(&m.id, target, true, why.clone());
                    }
                    None => {
                        let (ok, why) = line_condition(&m.when, line);
                        ctx.explain(&m.id, target, ok, why);
                        if ok {
                            candidates.push((pos, m));
                        }
                    }
                }
            }
            let (points_bp, growth_bp, applied, losers) = combine(&candidates, ctx.member);
            for (id, why) in losers {
                // A best-of loser matched, but does not apply: correct its explanation for this line.
                if let Some(e) =
                    ctx.explanations.iter_mut().rev().find(|e| e.rule_id == id && e.target == target && e.applied)
                {
                    e.applied = false;
                    e.reason = format!("{}, but {why}", e.reason);
                }
            }
            let points = line_value(line.amount, b.points_per_unit, points_bp, rules.currency_unit);
            let growth = line_value(line.amount, b.growth_per_unit, growth_bp, rules.currency_unit);
            ctx.explain(
                &b.id,
                target,
                true,
                format!(
                    "{} fen at {} point(s) per {} fen × {}: {points} point(s), {growth} growth",
                    line.amount,
                    b.points_per_unit,
                    rules.currency_unit,
                    format_bp(points_bp)
                ),
            );
            ctx.effects.push(Effect {
                target,
                beneficiary: Beneficiary::Member,
                rule_id: b.id.clone(),
                rule_version: rules.version,
                points,
                growth,
                uncapped_points: points,
                multiplier_bp: points_bp,
                multipliers: applied,
            });
        }
        if order.shipping_fee > 0 {
            if b.include_shipping {
                let points = line_value(order.shipping_fee, b.points_per_unit, BP, rules.currency_unit);
                let growth = line_value(order.shipping_fee, b.growth_per_unit, BP, rules.currency_unit);
                ctx.explain(&b.id, Target::Shipping, true, "shipping earns at the base rate, without multipliers");
                ctx.award(&b.id, Target::Shipping, Beneficiary::Member, points, growth);
            } else {
                ctx.explain(&b.id, Target::Shipping, false, "shipping excluded");
            }
        }
        if order.lines.is_empty() {
            ctx.explain(&b.id, Target::Order, false, "order has no lines");
        }
    }

    // Referral, on the referee's first paid order; behaviour rules do not apply to orders.
    for rule in &rules.rules {
        match rule {
            Rule::Base(_) | Rule::Multiplier(_) => {}
            Rule::Referral(r) => referral(ctx, r, order),
            other => ctx.explain(
                other.id(),
                Target::Order,
                false,
                format!("{} rule does not apply to orders", other.kind_name()),
            ),
        }
    }
}

fn referral(ctx: &mut Ctx<'_>, r: &ReferralRule, order: &RuleOrder) {
    let member = ctx.member;
    let why_not = match member.referred_by {
        None => Some("member was not referred".to_string()),
        Some(_) if !order.paid => Some("order is not paid yet".to_string()),
        Some(_) if !member.first_paid_order => Some("not the member's first paid order".to_string()),
        Some(_) if member.once_awarded.contains(&r.id) => Some("referral already awarded".to_string()),
        Some(_) => None,
    };
    match (why_not, member.referred_by) {
        (None, Some(referrer)) => {
            ctx.explain(
                &r.id,
                Target::Order,
                true,
                format!(
                    "first paid order of a referred member: {} to them, {} to member {referrer}",
                    r.referee_points, r.referrer_points
                ),
            );
            ctx.award(&r.id, Target::Order, Beneficiary::Member, r.referee_points, 0);
            ctx.award(&r.id, Target::Order, Beneficiary::Referrer { member_id: referrer }, r.referrer_points, 0);
        }
        (why, _) => ctx.explain(&r.id, Target::Order, false, why.unwrap_or_default()),
    }
}

fn format_bp(bp: i64) -> String {
    let s = format!("×{}.{:04}", bp / BP, bp % BP);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn evaluate_event(ctx: &mut Ctx<'_>, event: &BehaviourEvent) {
    let rules = ctx.rules;
    for rule in &rules.rules {
        let id = rule.id();
        match (rule, &event.behaviour) {
            (Rule::Registration(f), Behaviour::Registration)
            | (Rule::ProfileCompletion(f), Behaviour::ProfileCompletion) => {
                if ctx.member.once_awarded.contains(&f.id) {
                    ctx.explain(id, Target::Event, false, "already awarded once to this member");
                } else {
                    ctx.explain(id, Target::Event, true, format!("{} point(s), once per member", f.points));
                    ctx.award(id, Target::Event, Beneficiary::Member, f.points, f.growth);
                }
            }
            (Rule::Share(f), Behaviour::Share) | (Rule::Review(f), Behaviour::Review) => {
                ctx.explain(id, Target::Event, true, format!("{} point(s)", f.points));
                ctx.award(id, Target::Event, Beneficiary::Member, f.points, f.growth);
            }
            (Rule::CheckIn(c), Behaviour::CheckIn { streak_day }) => {
                if *streak_day == 0 || c.points_by_day.is_empty() {
                    ctx.explain(id, Target::Event, false, "streak day must be 1 or more");
                    continue;
                }
                let cycle = c.points_by_day.len();
                let day_in_cycle = (*streak_day as usize - 1) % cycle;
                let points = c.points_by_day[day_in_cycle];
                ctx.explain(
                    id,
                    Target::Event,
                    true,
                    format!(
                        "check-in streak day {streak_day} is day {} of the {cycle}-day cycle: {points} point(s)",
                        day_in_cycle + 1
                    ),
                );
                ctx.award(id, Target::Event, Beneficiary::Member, points, 0);
            }
            (Rule::Referral(_), _) => {
                ctx.explain(id, Target::Event, false, "referral is earned on the referee's first paid order")
            }
            (Rule::Base(_) | Rule::Multiplier(_), _) => {
                ctx.explain(id, Target::Event, false, format!("{} rules apply to orders only", rule.kind_name()))
            }
            _ => ctx.explain(id, Target::Event, false, format!("not a {} event", rule.kind_name())),
        }
    }
}

/// Trim this member's effects to the caps, in the order the caps are listed; `target` is the whole input.
fn apply_caps(ctx: &mut Ctx<'_>, target: Target) {
    let rules = ctx.rules;
    for cap in &rules.caps {
        let used = match cap.period {
            Period::Day => ctx.member.today.in_scope(cap),
            Period::Month => ctx.member.this_month.in_scope(cap),
        };
        let period = match cap.period {
            Period::Day => "daily",
            Period::Month => "monthly",
        };
        let in_scope: Vec<usize> = (0..ctx.effects.len())
            .filter(|&i| ctx.effects[i].beneficiary == Beneficiary::Member && cap.covers(&ctx.effects[i].rule_id))
            .collect();
        let wanted: i64 = in_scope.iter().map(|&i| ctx.effects[i].points).sum();
        if in_scope.is_empty() || wanted == 0 {
            ctx.explain(&cap.id, target, false, format!("{period} cap: nothing in scope earns points here"));
            continue;
        }
        // Count: one award per input (an order, or an event).
        if let Some(limit) = cap.count
            && used.count >= limit
        {
            for &i in &in_scope {
                ctx.effects[i].points = 0;
            }
            ctx.explain(&cap.id, target, true, format!("{period} count cap reached ({limit})"));
            continue;
        }
        let Some(limit) = cap.points else {
            let limit = cap.count.unwrap_or(0);
            ctx.explain(&cap.id, target, false, format!("{period} count cap not reached ({} of {limit})", used.count));
            continue;
        };
        let mut remaining = (limit - used.points).max(0);
        if wanted <= remaining {
            ctx.explain(
                &cap.id,
                target,
                false,
                format!("{period} cap not reached ({} + {wanted} of {limit})", used.points),
            );
            continue;
        }
        for &i in &in_scope {
            let p = ctx.effects[i].points.min(remaining);
            remaining -= p;
            ctx.effects[i].points = p;
        }
        let kept: i64 = in_scope.iter().map(|&i| ctx.effects[i].points).sum();
        ctx.explain(&cap.id, target, true, format!("{period} cap reached ({limit}): {kept} of {wanted} point(s) kept"));
    }
    // Sanity of the explanation contract: every rule and cap has at least one explanation.
    for id in rules.rule_ids_and_caps() {
        if !ctx.explanations.iter().any(|e| e.rule_id == id) {
            let id = id.to_string();
            ctx.explain(&id, target, false, "not relevant to this input");
        }
    }
}

#[cfg(test)]
mod tests;
