//! Conversion funnels (转化漏斗) over members' event streams, and, in [`paths`], the top paths to purchase.
//!
//! # Definition
//!
//! A [`FunnelDefinition`] is an ordered list of steps; each step matches events by `event_type` and,
//! optionally, by `sku` and string properties (all given filters must be equal). It has an overall
//! conversion window measured from the attempt's step-1 event, optional per-step windows measured from
//! the previous step's matched event, and exclusions: an event matcher plus two step indexes
//! (`after_step < before_step`, 0-based) such that an exclusion event strictly between the matched times of
//! those two steps stops the attempt from reaching `before_step`.
//!
//! # Ordering of a unit's events
//!
//! The caller may pass each member's events in any order. They are sorted by time (microseconds), and events
//! at the *same* instant are ordered by funnel step order: by the lowest step index they match, then by their
//! match masks (events with equal time and equal masks are interchangeable, so the result never depends on
//! input order). Consequence: two steps recorded in the same second may complete each other in funnel
//! order, as in Amplitude's handling of simultaneous events. One event never fills two steps.
//!
//! # Attempt semantics (precisely)
//!
//! An *attempt* starts at every event matching step 1 (index 0), call it `e0`. A sequence
//! `e0, e1, …, ek` (strictly increasing positions in the sorted order, `ei` matching step `i`) is *valid* when
//! * `ei.at − e0.at ≤ conversion_window` for every `i` (**inclusive**: an event exactly at the window end
//!   counts, one microsecond later does not);
//! * `ei.at − e(i−1).at ≤ max_secs_from_previous` of step `i`, when that step has one (inclusive too);
//! * for every exclusion `(a, b)` with `b ≤ k`, no event matching the exclusion has
//!   `e_a.at < x.at < e_b.at` (**strictly** between: an exclusion event at the same instant as either step
//!   does not disqualify). An exclusion only stops the attempt from reaching `b`; the steps before `b` stay
//!   reached.
//!
//! The attempt *reaches* step `k` when such a valid sequence exists; the unit reaches the furthest step any
//! of its attempts reaches, and is counted as entering every step up to it. A unit with no step-1 event is
//! not in the funnel.
//!
//! The **best attempt** and the events it matched, which give the step-to-step durations: the last step
//! reached is matched to its *earliest* completion (in the sorted order) by any valid sequence; then, going
//! back, each earlier step is matched to the *latest* event that can precede the already matched one in a
//! valid sequence ("the last time the member did the previous step before doing this one"). The step-1
//! event so found is the best attempt's start: among the attempts that complete the furthest step
//! earliest, the latest one, which is Mixpanel's rule that of several step-1 entries before step 2 the
//! most recent counts, applied at every step. The durations therefore always respect the per-step windows.
//! Example, window 1 h: `A 13:00, A 13:30, B 13:45, C 14:15` reaches C through the attempt started at
//! 13:30 (the one started at 13:00 only reaches B), with A→B 15 min and B→C 30 min.
//!
//! # Algorithm and complexity
//!
//! Per unit with `n` relevant events (those matching a step or an exclusion; the rest are dropped first),
//! `s` steps and `x` exclusions: sorting is O(n log n). Reach over *all* attempts at once is a forward
//! dynamic programme over steps: `F_i` = events that end a valid sequence of length `i+1` from some start.
//! For a candidate `e` of step `i+1`, the *latest* element of `F_i` before `e` is the best predecessor on
//! every constraint at once (it has the latest start, so the latest overall deadline; the smallest gap for
//! the step window; and the latest exclusion deadlines, each "next exclusion after `e_a`" being monotone),
//! so one two-pointer merge per step suffices: O(n·s·(x + log n)). Following the predecessors back from the
//! earliest element of the last non-empty `F` gives exactly the best attempt's matched events. No
//! attempt-by-attempt rescans, so no quadratic cost per unit.
//! Units are processed independently with rayon; memory is O(n·s) scratch per worker plus one duration per
//! unit and step for the exact medians. A property test checks the programme against brute-force
//! enumeration of every sequence of every attempt.
//!
//! # Counting units
//!
//! [`CountingUnit::Member`]: one unit per member. [`CountingUnit::Session`]: one unit per
//! (member, session_id); events without a session are left out and counted in
//! [`FunnelReport::events_without_session`].
//!
//! References: Mixpanel funnels, conversion criteria and optimized re-entry; Amplitude, "How Amplitude
//! handles simultaneous events in a funnel"; ClickHouse `windowFunnel`.

use chrono::{DateTime, Utc};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::ops::Range;

pub mod paths;

/// Most steps a funnel may have (a step set is a 32-bit mask internally).
pub const MAX_STEPS: usize = 32;
/// Most exclusions a funnel may have.
pub const MAX_EXCLUSIONS: usize = 32;

/// One behaviour event, as a row of the `events` table. Shared by funnels and paths.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// The member who did it.
    pub member_id: i64,
    /// When it happened (UTC).
    pub at: DateTime<Utc>,
    /// `page_view`, `product_view`, `add_to_cart`, `purchase`, `custom.<name>`, …
    pub event_type: String,
    /// Session it belongs to, when the channel has sessions.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Product concerned, when there is one.
    #[serde(default)]
    pub sku: Option<String>,
    /// Flattened string properties the caller chose to load; only needed when a funnel filters on them.
    #[serde(default)]
    pub properties: Vec<(String, String)>,
}

impl Event {
    /// An event with no session, sku or properties.
    pub fn new(member_id: i64, at: DateTime<Utc>, event_type: impl Into<String>) -> Self {
        Self { member_id, at, event_type: event_type.into(), session_id: None, sku: None, properties: Vec::new() }
    }

    /// The same event inside a session.
    pub fn in_session(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// The same event about a product.
    pub fn with_sku(mut self, sku: impl Into<String>) -> Self {
        self.sku = Some(sku.into());
        self
    }

    /// The same event with one more string property.
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }
}

/// The event slice handed to a kernel interleaves members: each member's events must be contiguous
/// (`ORDER BY member_id`), their order inside a member is free.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "events are not grouped by member: member {member_id} appears in two separate runs (order the rows by member_id)"
)]
pub struct NotGroupedByMember {
    /// A member whose events are split.
    pub member_id: i64,
}

/// Splits the slice into one index range per member, checking that members are contiguous. Input ordered
/// by member id (the usual `ORDER BY member_id`) is checked without hashing; any other grouping falls
/// back to a set of the members seen.
pub(crate) fn member_runs(events: &[Event]) -> Result<Vec<Range<usize>>, NotGroupedByMember> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    let mut start = 0;
    for i in 1..=events.len() {
        if i == events.len() || events[i].member_id != events[start].member_id {
            runs.push(start..i);
            start = i;
        }
    }
    let ascending = runs.windows(2).all(|w| events[w[0].start].member_id < events[w[1].start].member_id);
    if !ascending {
        let mut seen = HashSet::with_capacity(runs.len());
        for r in &runs {
            let member_id = events[r.start].member_id;
            if !seen.insert(member_id) {
                return Err(NotGroupedByMember { member_id });
            }
        }
    }
    Ok(runs)
}

/// A string property that must equal a value for an event to match.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PropertyFilter {
    /// Property name.
    pub key: String,
    /// Required value (exact, case-sensitive).
    pub equals: String,
}

/// One funnel step: which events complete it, and how soon after the previous step they must come.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FunnelStep {
    /// Name shown in the report (default: the event type, plus the sku filter if any).
    #[serde(default)]
    pub label: Option<String>,
    /// Event type the step matches.
    pub event_type: String,
    /// Only events about this sku match.
    #[serde(default)]
    pub sku: Option<String>,
    /// Only events with all these properties equal match.
    #[serde(default)]
    pub properties: Vec<PropertyFilter>,
    /// Largest time, in seconds (inclusive), from the previous step's matched event. Not allowed on the
    /// first step.
    #[serde(default)]
    pub max_secs_from_previous: Option<i64>,
}

impl FunnelStep {
    /// A step matching an event type, no filters, no step window.
    pub fn on(event_type: impl Into<String>) -> Self {
        Self {
            label: None,
            event_type: event_type.into(),
            sku: None,
            properties: Vec::new(),
            max_secs_from_previous: None,
        }
    }

    /// The label used in reports.
    pub fn display_label(&self) -> String {
        match (&self.label, &self.sku) {
            (Some(l), _) => l.clone(),
            (None, Some(s)) => format!("{} (sku {s})", self.event_type),
            (None, None) => self.event_type.clone(),
        }
    }
}

/// An event that, between two steps of an attempt, disqualifies that attempt from the later step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FunnelExclusion {
    /// Event type that disqualifies.
    pub event_type: String,
    /// Only events about this sku disqualify.
    #[serde(default)]
    pub sku: Option<String>,
    /// Only events with all these properties equal disqualify.
    #[serde(default)]
    pub properties: Vec<PropertyFilter>,
    /// 0-based index of the step after whose matched time the exclusion window opens.
    pub after_step: usize,
    /// 0-based index of the step that an exclusion event in the window makes unreachable.
    pub before_step: usize,
}

/// What one row of the funnel counts.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CountingUnit {
    /// Each member once, by their best attempt over all their events (default).
    #[default]
    Member,
    /// Each (member, session) once; the whole funnel must happen inside one session.
    Session,
}

fn default_conversion_window_secs() -> i64 {
    7 * 24 * 3600
}

/// A funnel as an operator defines it (API JSON or TOML). Defaults: 7-day conversion window, no
/// exclusions, counted per member.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FunnelDefinition {
    /// Ordered steps, at least 2, at most [`MAX_STEPS`].
    pub steps: Vec<FunnelStep>,
    /// Largest time, in seconds (inclusive), from the attempt's step-1 event to any later step.
    #[serde(default = "default_conversion_window_secs")]
    pub conversion_window_secs: i64,
    /// Exclusion events, at most [`MAX_EXCLUSIONS`].
    #[serde(default)]
    pub exclusions: Vec<FunnelExclusion>,
    /// Member or session funnel.
    #[serde(default)]
    pub counting: CountingUnit,
}

impl FunnelDefinition {
    /// A member funnel over these steps with the default 7-day window.
    pub fn new(steps: Vec<FunnelStep>) -> Self {
        Self {
            steps,
            conversion_window_secs: default_conversion_window_secs(),
            exclusions: Vec::new(),
            counting: CountingUnit::Member,
        }
    }

    /// Checks the definition, naming the offending field in the error.
    pub fn validate(&self) -> Result<(), FunnelError> {
        if self.steps.len() < 2 {
            return Err(FunnelError::TooFewSteps { field: "steps", found: self.steps.len() });
        }
        if self.steps.len() > MAX_STEPS {
            return Err(FunnelError::TooMany { field: "steps", found: self.steps.len(), max: MAX_STEPS });
        }
        if self.exclusions.len() > MAX_EXCLUSIONS {
            return Err(FunnelError::TooMany {
                field: "exclusions",
                found: self.exclusions.len(),
                max: MAX_EXCLUSIONS,
            });
        }
        if self.conversion_window_secs <= 0 {
            return Err(FunnelError::NonPositiveWindow {
                field: "conversion_window_secs".into(),
                value: self.conversion_window_secs,
            });
        }
        let check_matcher = |prefix: String, event_type: &str, props: &[PropertyFilter]| {
            if event_type.trim().is_empty() {
                return Err(FunnelError::Empty { field: format!("{prefix}.event_type") });
            }
            for (p, f) in props.iter().enumerate() {
                if f.key.trim().is_empty() {
                    return Err(FunnelError::Empty { field: format!("{prefix}.properties[{p}].key") });
                }
            }
            Ok(())
        };
        for (i, s) in self.steps.iter().enumerate() {
            check_matcher(format!("steps[{i}]"), &s.event_type, &s.properties)?;
            match (i, s.max_secs_from_previous) {
                (0, Some(_)) => {
                    return Err(FunnelError::WindowOnFirstStep { field: "steps[0].max_secs_from_previous" });
                }
                (_, Some(w)) if w <= 0 => {
                    return Err(FunnelError::NonPositiveWindow {
                        field: format!("steps[{i}].max_secs_from_previous"),
                        value: w,
                    });
                }
                _ => {}
            }
        }
        for (j, x) in self.exclusions.iter().enumerate() {
            check_matcher(format!("exclusions[{j}]"), &x.event_type, &x.properties)?;
            for (name, value) in [("after_step", x.after_step), ("before_step", x.before_step)] {
                if value >= self.steps.len() {
                    return Err(FunnelError::StepOutOfRange {
                        field: format!("exclusions[{j}].{name}"),
                        value,
                        steps: self.steps.len(),
                    });
                }
            }
            if x.after_step >= x.before_step {
                return Err(FunnelError::ExclusionOrder {
                    field: format!("exclusions[{j}]"),
                    after_step: x.after_step,
                    before_step: x.before_step,
                });
            }
        }
        Ok(())
    }
}

/// Why a funnel could not be computed: a bad definition (naming the field) or badly grouped input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FunnelError {
    /// Fewer than two steps.
    #[error("`{field}`: a funnel needs at least 2 steps, found {found}")]
    TooFewSteps {
        /// Offending field.
        field: &'static str,
        /// Number given.
        found: usize,
    },
    /// More steps or exclusions than supported.
    #[error("`{field}`: at most {max} allowed, found {found}")]
    TooMany {
        /// Offending field.
        field: &'static str,
        /// Number given.
        found: usize,
        /// Limit.
        max: usize,
    },
    /// A window of zero or negative length.
    #[error("`{field}` must be a positive number of seconds, got {value}")]
    NonPositiveWindow {
        /// Offending field.
        field: String,
        /// Value given.
        value: i64,
    },
    /// A per-step window on the first step, which has no previous step.
    #[error("`{field}`: the first step has no previous step to measure from")]
    WindowOnFirstStep {
        /// Offending field.
        field: &'static str,
    },
    /// A required string left empty.
    #[error("`{field}` must not be empty")]
    Empty {
        /// Offending field.
        field: String,
    },
    /// An exclusion names a step that does not exist.
    #[error("`{field}` = {value} is not a step index (the funnel has {steps} steps, numbered from 0)")]
    StepOutOfRange {
        /// Offending field.
        field: String,
        /// Value given.
        value: usize,
        /// Number of steps.
        steps: usize,
    },
    /// An exclusion whose window is empty or reversed.
    #[error("`{field}`: after_step ({after_step}) must be smaller than before_step ({before_step})")]
    ExclusionOrder {
        /// Offending field.
        field: String,
        /// Value given.
        after_step: usize,
        /// Value given.
        before_step: usize,
    },
    /// Input not grouped by member.
    #[error(transparent)]
    NotGrouped(#[from] NotGroupedByMember),
}

impl FunnelError {
    /// The offending field of a bad definition, as a path (`steps[1].event_type`), for an API to name.
    pub fn field(&self) -> Option<&str> {
        match self {
            FunnelError::TooFewSteps { field, .. }
            | FunnelError::TooMany { field, .. }
            | FunnelError::WindowOnFirstStep { field } => Some(field),
            FunnelError::NonPositiveWindow { field, .. }
            | FunnelError::Empty { field }
            | FunnelError::StepOutOfRange { field, .. }
            | FunnelError::ExclusionOrder { field, .. } => Some(field),
            FunnelError::NotGrouped(_) => None,
        }
    }
}

/// One row of the funnel report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FunnelStepReport {
    /// 0-based step index.
    pub step: usize,
    /// Step label.
    pub label: String,
    /// Units whose best attempt reached this step.
    pub entered: u64,
    /// `entered / entered of the previous step` (`None` for the first step or an empty previous step).
    pub conversion_from_previous: Option<f64>,
    /// `entered / entered of the first step` (`None` when nobody entered).
    pub conversion_from_first: Option<f64>,
    /// Median, over units that reached this step, of the seconds from the previous step in their best
    /// attempt (`None` for the first step or when nobody reached it).
    pub median_secs_from_previous: Option<f64>,
    /// One sentence an operator reads.
    pub summary: String,
}

/// The funnel result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FunnelReport {
    /// What was counted.
    pub counting: CountingUnit,
    /// Members (or sessions) present in the input, whether they entered the funnel or not.
    pub units_total: u64,
    /// Session funnels only: events that had no session and were left out.
    pub events_without_session: u64,
    /// One row per step.
    pub steps: Vec<FunnelStepReport>,
}

/// Internal matcher shared by steps and exclusions.
#[derive(Debug, Clone, Copy)]
struct Matcher<'d> {
    event_type: &'d str,
    sku: Option<&'d str>,
    properties: &'d [PropertyFilter],
}

impl Matcher<'_> {
    fn matches(&self, e: &Event) -> bool {
        e.event_type == self.event_type
            && self.sku.is_none_or(|s| e.sku.as_deref() == Some(s))
            && self.properties.iter().all(|f| e.properties.iter().any(|(k, v)| *k == f.key && *v == f.equals))
    }
}

const MICROS: i64 = 1_000_000;

/// A validated definition in the form the inner loops use (times in microseconds).
#[derive(Debug)]
struct Compiled<'d> {
    steps: Vec<Matcher<'d>>,
    step_window: Vec<Option<i64>>,
    window: i64,
    exclusions: Vec<Matcher<'d>>,
    excl_after: Vec<usize>,
    excl_before: Vec<usize>,
}

impl<'d> Compiled<'d> {
    fn new(def: &'d FunnelDefinition) -> Result<Self, FunnelError> {
        def.validate()?;
        Ok(Self {
            steps: def
                .steps
                .iter()
                .map(|s| Matcher { event_type: &s.event_type, sku: s.sku.as_deref(), properties: &s.properties })
                .collect(),
            step_window: def.steps.iter().map(|s| s.max_secs_from_previous.map(|w| w.saturating_mul(MICROS))).collect(),
            window: def.conversion_window_secs.saturating_mul(MICROS),
            exclusions: def
                .exclusions
                .iter()
                .map(|x| Matcher { event_type: &x.event_type, sku: x.sku.as_deref(), properties: &x.properties })
                .collect(),
            excl_after: def.exclusions.iter().map(|x| x.after_step).collect(),
            excl_before: def.exclusions.iter().map(|x| x.before_step).collect(),
        })
    }

    /// (steps matched, exclusions matched) as bit masks.
    fn masks(&self, e: &Event) -> (u32, u32) {
        let mut s = 0u32;
        for (i, m) in self.steps.iter().enumerate() {
            if m.matches(e) {
                s |= 1 << i;
            }
        }
        let mut x = 0u32;
        for (j, m) in self.exclusions.iter().enumerate() {
            if m.matches(e) {
                x |= 1 << j;
            }
        }
        (s, x)
    }
}

/// A relevant event reduced to what the programme needs. `idx` is its index in the member's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rec {
    at: i64,
    steps: u32,
    excl: u32,
    idx: usize,
}

impl Rec {
    /// The documented order: time, then lowest matched step, then masks.
    fn key(&self) -> (i64, u32, u32, u32) {
        (self.at, self.steps.trailing_zeros(), self.steps, self.excl)
    }
}

/// `F_i` of the programme: positions, predecessor indexes into `F_(i-1)`, overall deadlines and one
/// exclusion deadline per exclusion (row-major).
#[derive(Debug, Default)]
struct Layer {
    pos: Vec<usize>,
    pred: Vec<usize>,
    overall: Vec<i64>,
    dl: Vec<i64>,
}

impl Layer {
    fn clear(&mut self) {
        self.pos.clear();
        self.pred.clear();
        self.overall.clear();
        self.dl.clear();
    }
}

/// Reusable per-worker buffers.
#[derive(Debug, Default)]
struct Dp {
    by_step: Vec<Vec<usize>>,
    excl_times: Vec<Vec<i64>>,
    layers: Vec<Layer>,
}

/// First time strictly after `t` in a sorted list, or "never".
fn next_after(times: &[i64], t: i64) -> i64 {
    let i = times.partition_point(|&v| v <= t);
    times.get(i).copied().unwrap_or(i64::MAX)
}

impl Dp {
    fn new(c: &Compiled) -> Self {
        Self {
            by_step: vec![Vec::new(); c.steps.len()],
            excl_times: vec![Vec::new(); c.exclusions.len()],
            layers: (0..c.steps.len()).map(|_| Layer::default()).collect(),
        }
    }

    /// Fills `layers` starting from every step-0 event. Returns the number of non-empty layers (the
    /// furthest step reached, plus one).
    fn run(&mut self, recs: &[Rec], c: &Compiled) -> usize {
        let nx = c.exclusions.len();
        let Dp { by_step, excl_times, layers } = self;
        for l in layers.iter_mut() {
            l.clear();
        }
        {
            let l0 = &mut layers[0];
            for &p in &by_step[0] {
                let at = recs[p].at;
                l0.pos.push(p);
                l0.pred.push(0);
                l0.overall.push(at.saturating_add(c.window));
                for (after, times) in c.excl_after.iter().zip(excl_times.iter()) {
                    l0.dl.push(if *after == 0 { next_after(times, at) } else { i64::MAX });
                }
            }
        }
        let mut reached = usize::from(!layers[0].pos.is_empty());
        for t in 1..c.steps.len() {
            if reached < t {
                break;
            }
            let (done, rest) = layers.split_at_mut(t);
            let prev = &done[t - 1];
            let cur = &mut rest[0];
            // `j` = number of elements of `prev` strictly before the candidate; `j - 1` is the latest.
            let mut j = 0usize;
            for &cp in &by_step[t] {
                while j < prev.pos.len() && prev.pos[j] < cp {
                    j += 1;
                }
                if j == 0 {
                    continue;
                }
                let q = j - 1;
                let at = recs[cp].at;
                if at > prev.overall[q] {
                    continue;
                }
                if let Some(w) = c.step_window[t]
                    && at.saturating_sub(recs[prev.pos[q]].at) > w
                {
                    continue;
                }
                let row = &prev.dl[q * nx..(q + 1) * nx];
                if c.excl_before.iter().zip(row).any(|(b, d)| *b == t && at > *d) {
                    continue;
                }
                cur.pos.push(cp);
                cur.pred.push(q);
                cur.overall.push(prev.overall[q]);
                for ((after, times), d) in c.excl_after.iter().zip(excl_times.iter()).zip(row) {
                    cur.dl.push(if *after == t { next_after(times, at) } else { *d });
                }
            }
            if !cur.pos.is_empty() {
                reached = t + 1;
            }
        }
        reached
    }

    /// The best attempt of one unit (`recs` sorted): fills `times` with the time (µs) of each matched
    /// step, as many as steps reached (empty when the unit never did step 1).
    fn unit(&mut self, recs: &[Rec], c: &Compiled, times: &mut Vec<i64>) {
        times.clear();
        for v in &mut self.by_step {
            v.clear();
        }
        for v in &mut self.excl_times {
            v.clear();
        }
        for (p, r) in recs.iter().enumerate() {
            let mut m = r.steps;
            while m != 0 {
                self.by_step[m.trailing_zeros() as usize].push(p);
                m &= m - 1;
            }
            let mut m = r.excl;
            while m != 0 {
                self.excl_times[m.trailing_zeros() as usize].push(r.at);
                m &= m - 1;
            }
        }
        if self.by_step[0].is_empty() {
            return;
        }
        let k = self.run(recs, c);
        // Earliest completion of the furthest step, then the latest predecessor at each step back.
        times.resize(k, 0);
        let mut q = 0usize;
        for i in (0..k).rev() {
            let l = &self.layers[i];
            times[i] = recs[l.pos[q]].at;
            q = l.pred[q];
        }
    }
}

/// Per-worker totals.
#[derive(Debug, Default)]
struct Acc {
    entered: Vec<u64>,
    durations: Vec<Vec<i64>>,
    units: u64,
    without_session: u64,
}

impl Acc {
    fn new(steps: usize) -> Self {
        Self { entered: vec![0; steps], durations: vec![Vec::new(); steps], units: 0, without_session: 0 }
    }

    fn record(&mut self, times: &[i64]) {
        for (i, e) in self.entered.iter_mut().take(times.len()).enumerate() {
            *e += 1;
            if i > 0 {
                self.durations[i].push(times[i].saturating_sub(times[i - 1]));
            }
        }
    }

    fn merge(mut self, mut o: Acc) -> Acc {
        for (a, b) in self.entered.iter_mut().zip(&o.entered) {
            *a += b;
        }
        for (a, b) in self.durations.iter_mut().zip(o.durations.iter_mut()) {
            a.append(b);
        }
        self.units += o.units;
        self.without_session += o.without_session;
        self
    }
}

/// Per-worker state: totals plus reusable buffers.
struct Worker<'e> {
    acc: Acc,
    dp: Dp,
    recs: Vec<Rec>,
    times: Vec<i64>,
    sessions: Vec<&'e str>,
}

impl<'e> Worker<'e> {
    fn member(&mut self, run: &'e [Event], c: &Compiled, counting: CountingUnit) {
        self.recs.clear();
        match counting {
            CountingUnit::Member => {
                self.acc.units += 1;
                for (i, e) in run.iter().enumerate() {
                    push_rec(&mut self.recs, c, e, i);
                }
                self.recs.sort_unstable_by_key(Rec::key);
                self.dp.unit(&self.recs, c, &mut self.times);
                self.acc.record(&self.times);
            }
            CountingUnit::Session => {
                self.sessions.clear();
                for (i, e) in run.iter().enumerate() {
                    match &e.session_id {
                        Some(s) => {
                            self.sessions.push(s);
                            push_rec(&mut self.recs, c, e, i);
                        }
                        None => self.acc.without_session += 1,
                    }
                }
                self.sessions.sort_unstable();
                self.sessions.dedup();
                self.acc.units += self.sessions.len() as u64;
                let sess = |r: &Rec| run[r.idx].session_id.as_deref().unwrap_or("");
                self.recs.sort_unstable_by(|a, b| sess(a).cmp(sess(b)).then_with(|| a.key().cmp(&b.key())));
                let recs = std::mem::take(&mut self.recs);
                for g in recs.chunk_by(|a, b| sess(a) == sess(b)) {
                    self.dp.unit(g, c, &mut self.times);
                    self.acc.record(&self.times);
                }
                self.recs = recs;
            }
        }
    }
}

fn push_rec(recs: &mut Vec<Rec>, c: &Compiled, e: &Event, i: usize) {
    let (steps, excl) = c.masks(e);
    if steps | excl != 0 {
        recs.push(Rec { at: e.at.timestamp_micros(), steps, excl, idx: i });
    }
}

/// Exact median of microsecond durations, in seconds.
fn median_secs(v: &mut [i64]) -> Option<f64> {
    let n = v.len();
    if n == 0 {
        return None;
    }
    let (_, &mut hi, _) = v.select_nth_unstable(n / 2);
    let m = if n % 2 == 1 {
        hi as f64
    } else {
        let lo = v[..n / 2].iter().copied().max().unwrap_or(hi);
        (lo as f64 + hi as f64) / 2.0
    };
    Some(m / MICROS as f64)
}

/// Seconds in the unit an operator reads at a glance.
fn human_duration(secs: f64) -> String {
    match secs {
        s if s >= 86_400.0 => format!("{:.1} d", s / 86_400.0),
        s if s >= 3_600.0 => format!("{:.1} h", s / 3_600.0),
        s if s >= 60.0 => format!("{:.1} min", s / 60.0),
        s => format!("{s:.0} s"),
    }
}

fn ratio(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

/// Computes the funnel over events grouped by member (see the module doc for the exact semantics).
///
/// Errors: an invalid definition (naming the field) or members not contiguous in `events`. Empty input
/// gives a report with zero counts.
pub fn funnel_report(events: &[Event], def: &FunnelDefinition) -> Result<FunnelReport, FunnelError> {
    let c = Compiled::new(def)?;
    let runs = member_runs(events)?;
    let n = c.steps.len();
    let acc = runs
        .par_iter()
        .with_min_len(256)
        .fold(
            || Worker { acc: Acc::new(n), dp: Dp::new(&c), recs: Vec::new(), times: Vec::new(), sessions: Vec::new() },
            |mut w, r| {
                w.member(&events[r.clone()], &c, def.counting);
                w
            },
        )
        .map(|w| w.acc)
        .reduce(|| Acc::new(n), Acc::merge);

    let unit = match def.counting {
        CountingUnit::Member => "members",
        CountingUnit::Session => "sessions",
    };
    let mut durations = acc.durations;
    let steps = def
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let label = s.display_label();
            let entered = acc.entered[i];
            let from_prev = (i > 0).then(|| ratio(entered, acc.entered[i - 1])).flatten();
            let from_first = ratio(entered, acc.entered[0]);
            let median = median_secs(&mut durations[i]);
            let summary = if i == 0 {
                format!("{entered} of {} {unit} entered the funnel at '{label}'", acc.units)
            } else {
                let prev = def.steps[i - 1].display_label();
                let pct = from_prev.map_or_else(|| "n/a".into(), |r| format!("{:.1}%", r * 100.0));
                let med = median.map_or_else(String::new, |m| format!(", after a median of {}", human_duration(m)));
                format!(
                    "{entered} of the {} {unit} who reached '{prev}' went on to '{label}' ({pct}){med}",
                    acc.entered[i - 1]
                )
            };
            FunnelStepReport {
                step: i,
                label,
                entered,
                conversion_from_previous: from_prev,
                conversion_from_first: from_first,
                median_secs_from_previous: median,
                summary,
            }
        })
        .collect();
    Ok(FunnelReport {
        counting: def.counting,
        units_total: acc.units,
        events_without_session: acc.without_session,
        steps,
    })
}

/// Where one member stands in a funnel: the steps their best attempt reached and when each was done.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemberProgress {
    /// The member.
    pub member_id: i64,
    /// Steps reached (1 = only the first step; equal to the number of steps = converted).
    pub reached: usize,
    /// Time of each matched step of the best attempt, `reached` of them.
    pub step_times: Vec<DateTime<Utc>>,
}

/// Each member's progress through the funnel (members who never did step 1 are left out), by member: the
/// per-member side of [`funnel_report`] under the same semantics, always counting members (a session
/// definition is read per member), so a member who stalled can be acted on (an abandoned-cart tag).
///
/// Errors as [`funnel_report`].
pub fn member_progress(events: &[Event], def: &FunnelDefinition) -> Result<Vec<MemberProgress>, FunnelError> {
    let c = Compiled::new(def)?;
    let runs = member_runs(events)?;
    let mut out: Vec<MemberProgress> = runs
        .par_iter()
        .with_min_len(256)
        .map_init(
            || (Dp::new(&c), Vec::new(), Vec::new()),
            |(dp, recs, times), r| {
                let run = &events[r.clone()];
                recs.clear();
                for (i, e) in run.iter().enumerate() {
                    push_rec(recs, &c, e, i);
                }
                recs.sort_unstable_by_key(Rec::key);
                dp.unit(recs, &c, times);
                let step_times: Vec<DateTime<Utc>> =
                    times.iter().filter_map(|&t| DateTime::<Utc>::from_timestamp_micros(t)).collect();
                MemberProgress { member_id: run[0].member_id, reached: step_times.len(), step_times }
            },
        )
        .filter(|p| p.reached > 0)
        .collect();
    out.sort_unstable_by_key(|p| p.member_id);
    Ok(out)
}

#[cfg(test)]
mod tests;
