//! Lifecycle stages (生命周期) and the stage-transition matrix between two days.
//!
//! # Stages
//! Given a member's registration day, first and last purchase days and last activity day, as of `as_of`
//! (all UTC days; "d days ago" is `as_of - day`), the first rule that matches decides:
//!
//! 1. not registered yet (`registered > as_of`) → no stage (the member does not exist on that day);
//! 2. no purchase → **potential** (潜在): registered, perhaps browsing;
//! 3. first purchase at most `new_days` ago (default 30) → **new** (新客);
//! 4. last purchase at most `active_days` ago (default 90) → **active** (活跃);
//! 5. last purchase at most `sleeping_days` ago (default 180) → **sleeping** (沉睡);
//! 6. otherwise → **churned** (流失).
//!
//! Thresholds are inclusive: a last purchase exactly 90 days ago is still active, 91 is sleeping.
//!
//! The inputs are meant to describe the history up to `as_of` (the store computes them with
//! `... WHERE day <= as_of`). A purchase day after `as_of` is read as "on `as_of`" (0 days ago) rather than
//! rejected; a first purchase after `as_of` means no purchase yet. If only one of first/last purchase is
//! known, it is used for both; if they are swapped, the earlier is the first.
//!
//! # Transitions
//! [`transitions`] compares two stage maps (member id → stage on an earlier and a later day) and counts
//! members per (from, to) pair, plus members that entered (only in the later map, e.g. newly registered)
//! or left (only in the earlier map, e.g. deleted). It sorts both maps: O(n log n).

use chrono::NaiveDate;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Errors from lifecycle kernels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    /// Thresholds must satisfy `active_days <= sleeping_days`.
    #[error("active_days ({active}) must not exceed sleeping_days ({sleeping})")]
    Thresholds {
        /// Given active threshold.
        active: u32,
        /// Given sleeping threshold.
        sleeping: u32,
    },
    /// A stage map named a member twice.
    #[error("member {0} appears twice in a stage map")]
    DuplicateMember(i64),
}

/// Lifecycle thresholds in days (all inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LifecycleParams {
    /// A member whose first purchase is at most this many days ago is new (default 30).
    pub new_days: u32,
    /// Last purchase at most this many days ago: active (default 90).
    pub active_days: u32,
    /// Last purchase at most this many days ago (and more than `active_days`): sleeping (default 180).
    pub sleeping_days: u32,
}

impl Default for LifecycleParams {
    fn default() -> Self {
        Self { new_days: 30, active_days: 90, sleeping_days: 180 }
    }
}

impl LifecycleParams {
    /// Checks the thresholds are ordered.
    pub fn validate(&self) -> Result<(), LifecycleError> {
        if self.active_days > self.sleeping_days {
            return Err(LifecycleError::Thresholds { active: self.active_days, sleeping: self.sleeping_days });
        }
        Ok(())
    }
}

/// A member's lifecycle stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleStage {
    /// 潜在: registered, no purchase yet.
    Potential,
    /// 新客: first purchase recently.
    New,
    /// 活跃: bought recently.
    Active,
    /// 沉睡: has not bought for a while, still reachable.
    Sleeping,
    /// 流失: has not bought for a long time.
    Churned,
}

impl LifecycleStage {
    /// All stages in funnel order; indexes of [`StageTransitions::counts`].
    pub const ALL: [LifecycleStage; 5] = [Self::Potential, Self::New, Self::Active, Self::Sleeping, Self::Churned];

    /// Stable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Potential => "potential",
            Self::New => "new",
            Self::Active => "active",
            Self::Sleeping => "sleeping",
            Self::Churned => "churned",
        }
    }

    /// Chinese name.
    pub fn name_zh(self) -> &'static str {
        match self {
            Self::Potential => "潜在",
            Self::New => "新客",
            Self::Active => "活跃",
            Self::Sleeping => "沉睡",
            Self::Churned => "流失",
        }
    }

    /// English name.
    pub fn name_en(self) -> &'static str {
        match self {
            Self::Potential => "Potential",
            Self::New => "New",
            Self::Active => "Active",
            Self::Sleeping => "Sleeping",
            Self::Churned => "Churned",
        }
    }
}

/// One member's dates, as a `GROUP BY member_id` over members, orders and events fills it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleInput {
    /// The member.
    pub member_id: i64,
    /// Registration day.
    pub registered: NaiveDate,
    /// First paid purchase day, if any.
    pub first_purchase: Option<NaiveDate>,
    /// Last paid purchase day, if any.
    pub last_purchase: Option<NaiveDate>,
    /// Last behaviour event of any kind (views, searches, check-ins ...), if any; only reported.
    pub last_activity: Option<NaiveDate>,
}

/// A member's stage with the figures behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LifecycleResult {
    /// The member.
    pub member_id: i64,
    /// Stage; None when the member registered after `as_of`.
    pub stage: Option<LifecycleStage>,
    /// Days since the first purchase.
    pub days_since_first_purchase: Option<i64>,
    /// Days since the last purchase.
    pub days_since_last_purchase: Option<i64>,
    /// Days since the last activity.
    pub days_since_activity: Option<i64>,
    /// "last purchase 95 days ago > active 90, ≤ sleeping 180".
    pub reason: String,
}

fn ago(as_of: NaiveDate, d: NaiveDate) -> i64 {
    (as_of - d).num_days().max(0)
}

/// Stage of one member; `params` must be valid (see [`LifecycleParams::validate`]).
pub fn classify_one(m: &LifecycleInput, as_of: NaiveDate, params: &LifecycleParams) -> LifecycleResult {
    let since_act = m.last_activity.filter(|&d| d <= as_of).map(|d| ago(as_of, d));
    // Normalise purchase days: fill one from the other, order them, drop a first purchase after as_of.
    let (first, last) = match (m.first_purchase, m.last_purchase) {
        (Some(a), Some(b)) => (Some(a.min(b)), Some(a.max(b))),
        (a, b) => (a.or(b), b.or(a)),
    };
    let (first, last) = match first {
        Some(f) if f <= as_of => (Some(f), last),
        _ => (None, None),
    };
    let since_first = first.map(|d| ago(as_of, d));
    let since_last = last.map(|d| ago(as_of, d));
    let p = params;
    let (stage, reason) = if m.registered > as_of {
        (None, format!("registered on {} after {as_of}", m.registered))
    } else {
        match (since_first, since_last) {
            (Some(f), Some(l)) => {
                if f <= i64::from(p.new_days) {
                    (Some(LifecycleStage::New), format!("first purchase {f} days ago ≤ new {}", p.new_days))
                } else if l <= i64::from(p.active_days) {
                    (
                        Some(LifecycleStage::Active),
                        format!(
                            "last purchase {l} days ago ≤ active {} (first purchase {f} days ago > new {})",
                            p.active_days, p.new_days
                        ),
                    )
                } else if l <= i64::from(p.sleeping_days) {
                    (
                        Some(LifecycleStage::Sleeping),
                        format!(
                            "last purchase {l} days ago > active {}, ≤ sleeping {}",
                            p.active_days, p.sleeping_days
                        ),
                    )
                } else {
                    (
                        Some(LifecycleStage::Churned),
                        format!("last purchase {l} days ago > sleeping {}", p.sleeping_days),
                    )
                }
            }
            _ => {
                let reg = ago(as_of, m.registered);
                let act = since_act
                    .map_or_else(|| "no activity recorded".to_string(), |a| format!("last active {a} days ago"));
                (Some(LifecycleStage::Potential), format!("no purchase yet; registered {reg} days ago, {act}"))
            }
        }
    };
    LifecycleResult {
        member_id: m.member_id,
        stage,
        days_since_first_purchase: since_first,
        days_since_last_purchase: since_last,
        days_since_activity: since_act,
        reason,
    }
}

/// Stages of many members (input order kept), in parallel.
pub fn classify(
    members: &[LifecycleInput],
    as_of: NaiveDate,
    params: &LifecycleParams,
) -> Result<Vec<LifecycleResult>, LifecycleError> {
    params.validate()?;
    Ok(members.par_iter().map(|m| classify_one(m, as_of, params)).collect())
}

/// Stage counts between two days: who moved from which stage to which, who entered and who left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageTransitions {
    /// Row/column order of the arrays below ([`LifecycleStage::ALL`]).
    pub stages: [LifecycleStage; 5],
    /// `counts[from][to]`: members in both maps.
    pub counts: [[u64; 5]; 5],
    /// Members only in the later map, by their later stage.
    pub entered: [u64; 5],
    /// Members only in the earlier map, by their earlier stage.
    pub left: [u64; 5],
    /// Ids of members only in the later map, ascending.
    pub entered_ids: Vec<i64>,
    /// Ids of members only in the earlier map, ascending.
    pub left_ids: Vec<i64>,
    /// Members in both maps.
    pub in_both: u64,
    /// Members in both maps whose stage differs.
    pub changed: u64,
}

impl StageTransitions {
    /// Members that went from one stage to another.
    pub fn count(&self, from: LifecycleStage, to: LifecycleStage) -> u64 {
        self.counts[from as usize][to as usize]
    }
}

fn sorted_unique(map: &[(i64, LifecycleStage)]) -> Result<Vec<(i64, LifecycleStage)>, LifecycleError> {
    let mut v = map.to_vec();
    v.par_sort_unstable_by_key(|&(id, _)| id);
    if let Some(w) = v.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(LifecycleError::DuplicateMember(w[0].0));
    }
    Ok(v)
}

/// Transition matrix between an earlier and a later stage map (member id → stage).
///
/// Members without a stage on a day (not registered yet) are simply absent from that day's map.
pub fn transitions(
    before: &[(i64, LifecycleStage)],
    after: &[(i64, LifecycleStage)],
) -> Result<StageTransitions, LifecycleError> {
    let (b, a) = (sorted_unique(before)?, sorted_unique(after)?);
    let mut t = StageTransitions {
        stages: LifecycleStage::ALL,
        counts: [[0; 5]; 5],
        entered: [0; 5],
        left: [0; 5],
        entered_ids: Vec::new(),
        left_ids: Vec::new(),
        in_both: 0,
        changed: 0,
    };
    let (mut i, mut j) = (0, 0);
    while i < b.len() || j < a.len() {
        match (b.get(i), a.get(j)) {
            (Some(&(bi, bs)), Some(&(aj, as_))) if bi == aj => {
                t.counts[bs as usize][as_ as usize] += 1;
                t.in_both += 1;
                t.changed += u64::from(bs != as_);
                i += 1;
                j += 1;
            }
            (Some(&(bi, bs)), Some(&(aj, _))) if bi < aj => {
                t.left[bs as usize] += 1;
                t.left_ids.push(bi);
                i += 1;
            }
            (Some(&(bi, bs)), None) => {
                t.left[bs as usize] += 1;
                t.left_ids.push(bi);
                i += 1;
            }
            (_, Some(&(aj, as_))) => {
                t.entered[as_ as usize] += 1;
                t.entered_ids.push(aj);
                j += 1;
            }
            (None, None) => break,
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }
    fn ago_day(n: u64) -> NaiveDate {
        day(2024, 6, 30).checked_sub_days(chrono::Days::new(n)).unwrap()
    }
    fn input(first: Option<u64>, last: Option<u64>) -> LifecycleInput {
        LifecycleInput {
            member_id: 1,
            registered: ago_day(400),
            first_purchase: first.map(ago_day),
            last_purchase: last.map(ago_day),
            last_activity: Some(ago_day(3)),
        }
    }
    fn stage(first: Option<u64>, last: Option<u64>) -> Option<LifecycleStage> {
        classify_one(&input(first, last), day(2024, 6, 30), &LifecycleParams::default()).stage
    }

    #[test]
    fn boundaries_are_inclusive() {
        use LifecycleStage::*;
        assert_eq!(stage(None, None), Some(Potential));
        assert_eq!(stage(Some(30), Some(30)), Some(New));
        assert_eq!(stage(Some(31), Some(31)), Some(Active));
        assert_eq!(stage(Some(0), Some(0)), Some(New));
        assert_eq!(stage(Some(300), Some(90)), Some(Active));
        assert_eq!(stage(Some(300), Some(91)), Some(Sleeping));
        assert_eq!(stage(Some(300), Some(180)), Some(Sleeping));
        assert_eq!(stage(Some(300), Some(181)), Some(Churned));
        // New wins over the last-purchase rules.
        assert_eq!(stage(Some(10), Some(5)), Some(New));
    }

    #[test]
    fn reasons_quote_days_and_thresholds() {
        let p = LifecycleParams::default();
        let as_of = day(2024, 6, 30);
        let r = classify_one(&input(Some(300), Some(95)), as_of, &p);
        assert_eq!(r.reason, "last purchase 95 days ago > active 90, ≤ sleeping 180");
        assert_eq!(r.days_since_last_purchase, Some(95));
        let r = classify_one(&input(Some(300), Some(200)), as_of, &p);
        assert_eq!(r.reason, "last purchase 200 days ago > sleeping 180");
        let r = classify_one(&input(None, None), as_of, &p);
        assert_eq!(r.reason, "no purchase yet; registered 400 days ago, last active 3 days ago");
        let r = classify_one(&input(Some(12), Some(12)), as_of, &p);
        assert_eq!(r.reason, "first purchase 12 days ago ≤ new 30");
    }

    #[test]
    fn odd_dates() {
        use LifecycleStage::*;
        let p = LifecycleParams::default();
        let as_of = day(2024, 6, 30);
        // Registered after as_of: no stage.
        let mut m = input(None, None);
        m.registered = day(2024, 7, 1);
        assert_eq!(classify_one(&m, as_of, &p).stage, None);
        // Only one of the purchase days known; swapped days; purchase after as_of.
        assert_eq!(stage(None, Some(100)), Some(Sleeping));
        assert_eq!(stage(Some(100), None), Some(Sleeping));
        assert_eq!(stage(Some(40), Some(300)), Some(Active)); // first=300, last=40
        let mut m = input(Some(60), None);
        m.last_purchase = Some(day(2024, 7, 3));
        assert_eq!(classify_one(&m, as_of, &p).stage, Some(Active));
        let mut m = input(None, None);
        m.first_purchase = Some(day(2024, 7, 3));
        m.last_purchase = Some(day(2024, 7, 3));
        assert_eq!(classify_one(&m, as_of, &p).stage, Some(Potential));
        // Bad thresholds are a typed error; empty input is fine.
        let bad = LifecycleParams { active_days: 200, ..p };
        assert!(matches!(classify(&[m], as_of, &bad), Err(LifecycleError::Thresholds { .. })));
        assert_eq!(classify(&[], as_of, &p).unwrap(), vec![]);
    }

    #[test]
    fn transition_matrix_counts() {
        use LifecycleStage::*;
        let before = [
            (1, New),
            (2, New),
            (3, Active),
            (4, Active),
            (5, Active),
            (6, Sleeping),
            (7, Churned),
            (8, Potential),
            (9, Sleeping),
        ];
        let after = [
            (9, Churned),
            (1, Active),
            (2, Sleeping),
            (3, Active),
            (4, Sleeping),
            (5, Active),
            (6, Active),
            (8, New),
            (10, Potential),
            (11, New),
        ];
        let t = transitions(&before, &after).unwrap();
        assert_eq!(t.count(New, Active), 1);
        assert_eq!(t.count(New, Sleeping), 1);
        assert_eq!(t.count(Active, Active), 2);
        assert_eq!(t.count(Active, Sleeping), 1);
        assert_eq!(t.count(Sleeping, Active), 1);
        assert_eq!(t.count(Sleeping, Churned), 1);
        assert_eq!(t.count(Potential, New), 1);
        let total: u64 = t.counts.iter().flatten().sum();
        assert_eq!(total, 8);
        assert_eq!((t.in_both, t.changed), (8, 6));
        assert_eq!(t.left_ids, vec![7]);
        assert_eq!(t.left, [0, 0, 0, 0, 1]);
        assert_eq!(t.entered_ids, vec![10, 11]);
        assert_eq!(t.entered, [1, 1, 0, 0, 0]);

        let empty = transitions(&[], &[]).unwrap();
        assert_eq!(empty.in_both, 0);
        assert_eq!(transitions(&[(1, New), (1, Active)], &[]), Err(LifecycleError::DuplicateMember(1)));
    }
}
