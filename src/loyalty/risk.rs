//! Risk control (风控) against points farming and abusive redemption: velocity limits over a member's recent
//! activity, and the flags that block a member's redemptions until an operator clears them. Pure: no I/O, no
//! clock (the new activity carries its time), no floats.
//!
//! # Design
//!
//! * **A policy is a list of limits.** Each [`VelocityLimit`] counts one kind of activity (earning or
//!   redeeming), by number of events or by points, over a sliding window of minutes or the local day of the
//!   business time zone, and has an id that names the flag it raises. The usual three — earn events per
//!   hour, redemptions per day, points earned per day — are in [`EXAMPLE_TOML`]; any may be left out.
//! * **Judged when something happens.** [`crossed`] takes the policy, the member's recent activity and the
//!   new activity, and returns every limit the new activity takes past its maximum, each with words the
//!   operator can read ("31 earn events in the last hour, limit 30"). A limit is judged only when the new
//!   activity counts towards it (same kind; for a points limit, some points), so an earn never re-reports
//!   a redemption limit.
//! * **Windows are exact.** A sliding window of `m` minutes ending at `now` is `(now − m, now]`: an event
//!   exactly 60 minutes before `now` is outside an hour's window, one 59 minutes 59 seconds before is
//!   inside. The local day is `[local midnight, now]` in the policy's time zone. Activity after `now` (a
//!   clock ahead of ours) is not counted.
//! * **Crossing is strictly above.** A limit of 30 allows 30; the 31st crosses it.
//! * **Flags are records.** The caller stores a [`RiskFlag`] per crossing (see [`new_flags`], which does
//!   not raise a second flag for a rule that is still open). Any uncleared flag blocks redemptions
//!   ([`is_blocked`], [`block_reason`]); earning goes on, so nothing a member did is lost. Clearing
//!   ([`clear`]) needs an operator and a note, and keeps the flag for the record.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::commerce::order::MAX_AMOUNT;
use crate::error::{Checked, Invalid};
use crate::loyalty::ledger::{Entry, Kind, LotId, Source, Wallet};
use crate::loyalty::rewards::BlockReason;

#[cfg(test)]
mod tests;

/// Longest sliding window: one week.
pub const MAX_WINDOW_MINUTES: u32 = 7 * 24 * 60;

/// A sensible starting policy, and the reference for the format.
pub const EXAMPLE_TOML: &str = r#"
time_zone = "Asia/Shanghai"

[[limits]]
id = "earn_events_per_hour"
description = "more than 30 earning events in any 60 minutes looks scripted"
activity = "earn"
measure = "events"
window = { type = "sliding", minutes = 60 }
max = 30

[[limits]]
id = "redemptions_per_day"
description = "more than 5 redemptions in a local day"
activity = "redeem"
measure = "events"
window = { type = "local_day" }
max = 5

[[limits]]
id = "points_earned_per_day"
description = "more than 5000 points earned in a local day"
activity = "earn"
measure = "points"
window = { type = "local_day" }
max = 5000
"#;

/// The velocity limits of the program. Validate with [`RiskPolicy::validate`] (the parsers do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskPolicy {
    /// The business time zone, for local-day limits.
    #[serde(default = "default_tz", with = "crate::loyalty::rules::tz_name")]
    pub time_zone: Tz,
    /// Judged in this order; crossings are reported in this order.
    #[serde(default)]
    pub limits: Vec<VelocityLimit>,
}

impl Default for RiskPolicy {
    /// No limits: nothing is ever flagged.
    fn default() -> Self {
        Self { time_zone: default_tz(), limits: Vec::new() }
    }
}

fn default_tz() -> Tz {
    chrono_tz::Asia::Shanghai
}

/// One limit: at most `max` of `measure` of `activity` within `window`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VelocityLimit {
    /// Slug, unique in the policy; the `rule` of the flags it raises.
    pub id: String,
    #[serde(default)]
    pub description: String,
    pub activity: ActivityKind,
    pub measure: Measure,
    pub window: Span,
    /// The most allowed; one more crosses the limit. At least 1.
    pub max: i64,
}

/// What a member did, as risk control sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    /// Points credited by a rule or an order.
    Earn,
    /// A reward redeemed.
    Redeem,
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Number of activities.
    Events,
    /// Sum of their points.
    Points,
}

/// The time a limit counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Span {
    /// `(now − minutes, now]`.
    Sliding { minutes: u32 },
    /// From local midnight of `now`'s local day to `now`, in the policy's time zone.
    LocalDay,
}

/// A policy that could not be loaded: either not well-formed, or well-formed but invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RiskPolicyError {
    #[error("risk policy does not parse: {0}")]
    Parse(String),
    #[error("risk policy is invalid: {0}")]
    Invalid(Invalid),
}

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl RiskPolicy {
    /// Parse and validate a TOML policy.
    pub fn from_toml(text: &str) -> Result<RiskPolicy, RiskPolicyError> {
        let p: RiskPolicy = toml::from_str(text).map_err(|e| RiskPolicyError::Parse(e.to_string()))?;
        p.validate().map_err(RiskPolicyError::Invalid)?;
        Ok(p)
    }

    /// Parse and validate a JSON policy (the API's form).
    pub fn from_json(text: &str) -> Result<RiskPolicy, RiskPolicyError> {
        let p: RiskPolicy = serde_json::from_str(text).map_err(|e| RiskPolicyError::Parse(e.to_string()))?;
        p.validate().map_err(RiskPolicyError::Invalid)?;
        Ok(p)
    }

    /// Check what serde cannot; the error names the field (`limits[1].window.minutes`).
    pub fn validate(&self) -> Checked<()> {
        let mut ids = BTreeSet::new();
        for (i, l) in self.limits.iter().enumerate() {
            let at = format!("limits[{i}]");
            if !is_slug(&l.id) {
                return Err(Invalid::new(
                    "invalid_code",
                    format!("{at}.id"),
                    "a limit id is 1-64 lower-case letters, digits, `_` or `-`",
                ));
            }
            if !ids.insert(l.id.as_str()) {
                return Err(Invalid::new(
                    "duplicate",
                    format!("{at}.id"),
                    format!("limit id `{}` is used twice", l.id),
                ));
            }
            if !(1..=MAX_AMOUNT).contains(&l.max) {
                return Err(Invalid::new(
                    "out_of_range",
                    format!("{at}.max"),
                    format!("`max` must be between 1 and {MAX_AMOUNT}"),
                ));
            }
            if let Span::Sliding { minutes } = l.window
                && !(1..=MAX_WINDOW_MINUTES).contains(&minutes)
            {
                return Err(Invalid::new(
                    "out_of_range",
                    format!("{at}.window.minutes"),
                    format!("`minutes` must be between 1 and {MAX_WINDOW_MINUTES}"),
                ));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------------
// Judging activity
// ---------------------------------------------------------------------------------------------------------

/// One thing a member did: earned or redeemed `points` at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    pub at: DateTime<Utc>,
    pub kind: ActivityKind,
    /// Points earned or spent, as a positive number (a negative value counts as 0).
    pub points: i64,
}

/// A limit the new activity took past its maximum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crossing {
    /// The limit's id.
    pub rule: String,
    /// The count or points in the window, the new activity included.
    pub observed: i64,
    pub limit: i64,
    /// In words, for the operator: "31 earn events in the last hour, limit 30".
    pub detail: String,
}

fn span_words(span: Span, now: DateTime<Utc>, tz: Tz) -> String {
    match span {
        Span::Sliding { minutes: 60 } => "in the last hour".to_string(),
        Span::Sliding { minutes } if minutes % 60 == 0 => format!("in the last {} hours", minutes / 60),
        Span::Sliding { minutes: 1 } => "in the last minute".to_string(),
        Span::Sliding { minutes } => format!("in the last {minutes} minutes"),
        Span::LocalDay => format!("on {} ({} day)", now.with_timezone(&tz).date_naive(), tz.name()),
    }
}

fn what_words(activity: ActivityKind, measure: Measure) -> &'static str {
    match (activity, measure) {
        (ActivityKind::Earn, Measure::Events) => "earn events",
        (ActivityKind::Redeem, Measure::Events) => "redemptions",
        (ActivityKind::Earn, Measure::Points) => "points earned",
        (ActivityKind::Redeem, Measure::Points) => "points redeemed",
    }
}

/// Whether `at` lies in `span` ending at `now`.
fn in_span(span: Span, at: DateTime<Utc>, now: DateTime<Utc>, tz: Tz) -> bool {
    if at > now {
        return false;
    }
    match span {
        Span::Sliding { minutes } => at > now - Duration::minutes(i64::from(minutes)),
        Span::LocalDay => at.with_timezone(&tz).date_naive() == now.with_timezone(&tz).date_naive(),
    }
}

/// The limits of `policy` that `new` takes past their maximum, in policy order, given the member's `recent`
/// activity (which must not already contain `new`; `new.at` is now). The caller flags the member for each
/// (see [`new_flags`]).
pub fn crossed(policy: &RiskPolicy, recent: &[Activity], new: &Activity) -> Vec<Crossing> {
    let now = new.at;
    let tz = policy.time_zone;
    let mut out = Vec::new();
    for limit in &policy.limits {
        if limit.activity != new.kind || (limit.measure == Measure::Points && new.points <= 0) {
            continue;
        }
        let measure = |a: &Activity| match limit.measure {
            Measure::Events => 1,
            Measure::Points => a.points.max(0),
        };
        let observed = recent
            .iter()
            .filter(|a| a.kind == limit.activity && in_span(limit.window, a.at, now, tz))
            .fold(measure(new), |acc, a| acc.saturating_add(measure(a)));
        if observed > limit.max {
            out.push(Crossing {
                rule: limit.id.clone(),
                observed,
                limit: limit.max,
                detail: format!(
                    "{observed} {} {}, limit {}",
                    what_words(limit.activity, limit.measure),
                    span_words(limit.window, now, tz),
                    limit.max
                ),
            });
        }
    }
    out
}

/// How far back a member's activity can matter to any policy: the longest window and a local day more. The
/// store loads this much of a member's redemptions for a judgement.
pub fn lookback() -> Duration {
    Duration::minutes(i64::from(MAX_WINDOW_MINUTES)) + Duration::days(1)
}

/// The longest window of the policy (a local day counts as a day).
fn horizon(policy: &RiskPolicy) -> Duration {
    policy
        .limits
        .iter()
        .map(|l| match l.window {
            Span::Sliding { minutes } => Duration::minutes(i64::from(minutes)),
            Span::LocalDay => Duration::days(1),
        })
        .max()
        .unwrap_or_else(Duration::zero)
}

/// Earning in ledger entries as risk control counts it: one activity per order or behaviour that credited
/// points (the entries that open lots), at its first entry's time, with the points credited, keyed by its
/// subject (`order:7`, or the operation). Maturing pending points, reversals, adjustments, campaign grants
/// and points given back by a reward (a cancelled redemption, a lottery prize) are not the member's
/// earning.
pub fn earn_activities<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Vec<(String, Activity)> {
    let mut out: Vec<(String, Activity)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for e in entries {
        let opens = e.lot.as_ref() == Some(&LotId(e.key.clone()));
        if e.wallet != Wallet::Points || e.kind != Kind::Earn || e.amount <= 0 || !opens {
            continue;
        }
        let subject = match &e.source {
            Source::OrderLine { order_id, .. } => format!("order:{order_id}"),
            // An order's own bonuses (`order:7:first_order:points`) belong to the order.
            Source::Rule { .. } => match e.op.strip_prefix("order:").and_then(|r| r.split(':').next()) {
                Some(id) => format!("order:{id}"),
                None => e.op.clone(),
            },
            Source::Reward { .. } | Source::Campaign { .. } | Source::Operator { .. } | Source::Merge { .. } => {
                continue;
            }
        };
        match index.get(&subject) {
            Some(&i) => {
                let a = &mut out[i].1;
                a.points = a.points.saturating_add(e.amount);
                a.at = a.at.min(e.at);
            }
            None => {
                index.insert(subject.clone(), out.len());
                out.push((subject, Activity { at: e.at, kind: ActivityKind::Earn, points: e.amount }));
            }
        }
    }
    out
}

/// The limits crossed by the earning an operation writes (`new`), each activity judged in turn against the
/// member's earlier earning (`history`) and the new activities before it — at its own time, and, when it
/// arrives after activity that happened later, within those later activities' windows. Not judged: activity
/// already in
/// `history` (a replay), and activity older than the policy's longest window before `now` — history loaded
/// late (an import, a backfill) is not a member going fast now.
pub fn judge_earning(policy: &RiskPolicy, history: &[Entry], new: &[Entry], now: DateTime<Utc>) -> Vec<Crossing> {
    if policy.limits.is_empty() {
        return Vec::new();
    }
    let since = now - horizon(policy);
    // A judged activity is after `since` and looks back at most one horizon: older entries cannot count, and
    // a replay's entries carry the original's time, so they are never cut off while it could be judged.
    let cutoff = since - horizon(policy);
    let mut seen: HashSet<String> = HashSet::new();
    let mut recent: Vec<Activity> = Vec::new();
    for (subject, a) in earn_activities(history.iter().filter(|e| e.at > cutoff)) {
        seen.insert(subject);
        recent.push(a);
    }
    let mut out = Vec::new();
    for (subject, a) in earn_activities(new) {
        if !seen.insert(subject) {
            continue;
        }
        if a.at > since {
            out.extend(crossed(policy, &recent, &a));
        }
        // Activity that arrives after later activity (an event sent late, an order placed earlier) also
        // falls in the later activities' windows: judge each of those again, with and without it, and report
        // what only it makes cross. Costs nothing when activity arrives in order.
        for (i, r) in recent.iter().enumerate().filter(|(_, r)| r.at > a.at && r.at > since && r.at <= now) {
            let mut others: Vec<Activity> =
                recent.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, x)| *x).collect();
            let before: Vec<String> = crossed(policy, &others, r).into_iter().map(|c| c.rule).collect();
            others.push(a);
            out.extend(crossed(policy, &others, r).into_iter().filter(|c| !before.contains(&c.rule)));
        }
        recent.push(a);
    }
    out
}

// ---------------------------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------------------------

/// A member flagged by a limit. Stored per member; never deleted, only cleared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskFlag {
    /// The id of the limit that raised it.
    pub rule: String,
    /// What was seen, in words.
    pub detail: String,
    pub flagged_at: DateTime<Utc>,
    pub cleared_at: Option<DateTime<Utc>>,
    /// The operator who cleared it.
    pub cleared_by: Option<String>,
    /// Why it was cleared.
    pub note: Option<String>,
}

impl RiskFlag {
    /// An open flag for a crossing.
    pub fn from_crossing(c: &Crossing, at: DateTime<Utc>) -> RiskFlag {
        RiskFlag {
            rule: c.rule.clone(),
            detail: c.detail.clone(),
            flagged_at: at,
            cleared_at: None,
            cleared_by: None,
            note: None,
        }
    }

    /// Not cleared yet: blocks redemptions.
    pub fn is_open(&self) -> bool {
        self.cleared_at.is_none()
    }
}

/// Whether the member's redemptions are blocked: any flag not cleared.
pub fn is_blocked(flags: &[RiskFlag]) -> bool {
    flags.iter().any(RiskFlag::is_open)
}

/// The reason to give [`crate::loyalty::rewards::check`]: the earliest open flag, if any.
pub fn block_reason(flags: &[RiskFlag]) -> Option<BlockReason> {
    flags
        .iter()
        .filter(|f| f.is_open())
        .min_by_key(|f| f.flagged_at)
        .map(|f| BlockReason::RiskFlag { rule: f.rule.clone() })
}

/// The flags to store for `crossings` at `at`: one per crossed rule that has no open flag already, so a
/// burst raises one flag per rule, not one per event.
pub fn new_flags(crossings: &[Crossing], existing: &[RiskFlag], at: DateTime<Utc>) -> Vec<RiskFlag> {
    let mut open: BTreeSet<&str> = existing.iter().filter(|f| f.is_open()).map(|f| f.rule.as_str()).collect();
    crossings.iter().filter(|c| open.insert(c.rule.as_str())).map(|c| RiskFlag::from_crossing(c, at)).collect()
}

/// Why a flag could not be cleared.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClearRefusal {
    /// The operator or the note is missing (the field is named).
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("the flag was already cleared by {cleared_by} at {cleared_at}")]
    AlreadyCleared { cleared_at: DateTime<Utc>, cleared_by: String },
}

impl ClearRefusal {
    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ClearRefusal::Invalid(e) => e.code,
            ClearRefusal::AlreadyCleared { .. } => "already_cleared",
        }
    }
}

/// Clear `flag` at `now`: an operator and a note (why it is fine) are required. Returns the cleared flag;
/// `cleared_at` is never before `flagged_at`.
pub fn clear(flag: &RiskFlag, operator: &str, note: &str, now: DateTime<Utc>) -> Result<RiskFlag, ClearRefusal> {
    if let Some(cleared_at) = flag.cleared_at {
        return Err(ClearRefusal::AlreadyCleared {
            cleared_at,
            cleared_by: flag.cleared_by.clone().unwrap_or_default(),
        });
    }
    if operator.trim().is_empty() {
        return Err(Invalid::missing("operator").into());
    }
    if note.trim().is_empty() {
        return Err(Invalid::missing("note").into());
    }
    if operator.len() > 128 {
        return Err(Invalid::new("invalid_text", "operator", "`operator` is at most 128 bytes").into());
    }
    if note.chars().count() > 2000 {
        return Err(Invalid::new("invalid_text", "note", "`note` is at most 2000 characters").into());
    }
    Ok(RiskFlag {
        cleared_at: Some(now.max(flag.flagged_at)),
        cleared_by: Some(operator.trim().to_string()),
        note: Some(note.trim().to_string()),
        ..flag.clone()
    })
}
