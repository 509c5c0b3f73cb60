//! Purchase cycle and replenishment (复购周期, 产品快耗尽用户): each repeat buyer's typical interval between
//! purchases, the next expected purchase day, and whether the member is "due" now.
//!
//! # Method
//! 1. Purchase days up to `as_of` are deduplicated (several orders on one day are one purchase occasion)
//!    and sorted; intervals are the day differences between consecutive distinct days (all ≥ 1).
//! 2. Outliers are trimmed with the median absolute deviation (MAD): with median `m` and
//!    `s = max(1.4826 · MAD, 1 day)`, an interval is an outlier when `|x − m| > k · s` (`k` =
//!    `outlier_mad_k`, default 3). 1.4826 makes the MAD a consistent estimate of the standard deviation
//!    for normal data; the 1-day floor keeps a perfectly regular history (MAD = 0) from calling a
//!    one-day wobble an outlier while still trimming a real gap (30, 30, 30, 90 → 90 trimmed).
//!    (Leys et al., "Detecting outliers: Do not use standard deviation around the mean, use absolute
//!    deviation around the median", J. Exp. Soc. Psych. 2013.)
//! 3. The estimate is trusted only if at least `min_intervals` (default 2) intervals remain; otherwise no
//!    estimate is given, with the reason.
//! 4. Typical interval = median of the kept intervals; next expected day = last purchase day + the
//!    typical interval rounded to whole days (halves away from zero).
//! 5. Regularity = coefficient of variation (population standard deviation / mean) of the kept
//!    intervals: regular ≤ `regular_cv` (0.25) < moderate ≤ `irregular_cv` (0.5) < irregular.
//! 6. Due window: from `expected − lead` to `expected + grace`, both inclusive, where
//!    `lead = max(due_lead_min_days, round(due_lead_fraction · typical))` (defaults 3 days, 0.2) and
//!    `grace = max(due_grace_min_days, round(due_grace_fraction · typical))` (defaults 7 days, 0.5).
//!    Before the window the member is not yet due; after it the need has probably been met elsewhere or
//!    lapsed, and the member is no longer flagged (that is a churn question, not replenishment).
//!
//! The same estimate runs per category for the categories a member has enough history in.
//!
//! # Cost
//! O(k log k) per member with k purchase days, reusing scratch buffers per rayon worker: allocation-light
//! apart from the results themselves.

use chrono::{Days, NaiveDate};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Errors from the purchase-cycle kernel.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CycleError {
    /// A parameter is out of range.
    #[error("invalid parameter {name}: {reason}")]
    InvalidParam {
        /// Parameter name.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Parameters of the purchase-cycle estimate; see the module doc for their roles.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CycleParams {
    /// Minimum number of intervals (after trimming) to trust an estimate (default 2, at least 1).
    pub min_intervals: usize,
    /// Outlier cut in robust standard deviations (default 3.0, > 0).
    pub outlier_mad_k: f64,
    /// Lead before the expected day, as a fraction of the typical interval (default 0.2).
    pub due_lead_fraction: f64,
    /// Minimum lead in days (default 3).
    pub due_lead_min_days: u32,
    /// Grace after the expected day, as a fraction of the typical interval (default 0.5).
    pub due_grace_fraction: f64,
    /// Minimum grace in days (default 7).
    pub due_grace_min_days: u32,
    /// CV at or below which the cycle is regular (default 0.25).
    pub regular_cv: f64,
    /// CV above which the cycle is irregular (default 0.5).
    pub irregular_cv: f64,
}

impl Default for CycleParams {
    fn default() -> Self {
        Self {
            min_intervals: 2,
            outlier_mad_k: 3.0,
            due_lead_fraction: 0.2,
            due_lead_min_days: 3,
            due_grace_fraction: 0.5,
            due_grace_min_days: 7,
            regular_cv: 0.25,
            irregular_cv: 0.5,
        }
    }
}

impl CycleParams {
    /// Checks every parameter is in range.
    pub fn validate(&self) -> Result<(), CycleError> {
        let bad = |name, reason| Err(CycleError::InvalidParam { name, reason });
        if self.min_intervals == 0 {
            return bad("min_intervals", "must be at least 1");
        }
        if !(self.outlier_mad_k.is_finite() && self.outlier_mad_k > 0.0) {
            return bad("outlier_mad_k", "must be a positive number");
        }
        for (name, v) in [
            ("due_lead_fraction", self.due_lead_fraction),
            ("due_grace_fraction", self.due_grace_fraction),
            ("regular_cv", self.regular_cv),
            ("irregular_cv", self.irregular_cv),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(name, "must be a finite number ≥ 0");
            }
        }
        if self.regular_cv > self.irregular_cv {
            return bad("regular_cv", "must not exceed irregular_cv");
        }
        Ok(())
    }
}

/// How steady a member's cycle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Regularity {
    /// CV ≤ `regular_cv`: the expected day is a good guess.
    Regular,
    /// Between the two cuts.
    Moderate,
    /// CV > `irregular_cv`: treat the expected day as rough.
    Irregular,
}

/// Where `as_of` falls relative to the due window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DueStatus {
    /// Before the window opens.
    NotYet,
    /// Inside the window: 产品快耗尽, a replenishment reminder fits.
    Due,
    /// Past the window: the expected purchase did not happen.
    Lapsed,
}

/// A trusted cycle estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CycleEstimate {
    /// Distinct purchase days up to `as_of`.
    pub distinct_days: usize,
    /// Intervals kept after trimming.
    pub intervals_used: usize,
    /// Intervals trimmed as outliers, in days, ascending.
    pub trimmed: Vec<i64>,
    /// Median of the kept intervals, days.
    pub typical_interval_days: f64,
    /// Mean of the kept intervals, days.
    pub mean_interval_days: f64,
    /// Coefficient of variation of the kept intervals.
    pub cv: f64,
    /// Regularity class from the CV.
    pub regularity: Regularity,
    /// Last purchase day.
    pub last_purchase: NaiveDate,
    /// Last purchase + typical interval.
    pub next_expected: NaiveDate,
    /// First day of the due window.
    pub due_from: NaiveDate,
    /// Last day of the due window.
    pub due_until: NaiveDate,
    /// `next_expected − as_of` in days (negative once past).
    pub days_to_expected: i64,
    /// Where `as_of` falls.
    pub status: DueStatus,
    /// `status == Due`.
    pub due: bool,
    /// Human-readable account of the above.
    pub reason: String,
}

/// Why there is no trusted estimate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Insufficient {
    /// Distinct purchase days up to `as_of`.
    pub distinct_days: usize,
    /// Intervals before trimming.
    pub intervals: usize,
    /// Intervals left after trimming.
    pub kept: usize,
    /// Required.
    pub min_intervals: usize,
    /// "3 distinct purchase days give 2 intervals, 1 left after trimming outliers; need 2".
    pub reason: String,
}

/// The figures of [`Insufficient`] without the text, so that failed per-category estimates cost nothing.
#[derive(Debug, Clone, Copy)]
struct Shortfall {
    distinct_days: usize,
    intervals: usize,
    kept: usize,
    min_intervals: usize,
}

impl Shortfall {
    fn explain(self) -> Insufficient {
        let trimmed = if self.kept < self.intervals {
            format!(", {} left after trimming outliers", self.kept)
        } else {
            String::new()
        };
        Insufficient {
            distinct_days: self.distinct_days,
            intervals: self.intervals,
            kept: self.kept,
            min_intervals: self.min_intervals,
            reason: format!(
                "{} distinct purchase days give {} intervals{trimmed}; need {}",
                self.distinct_days, self.intervals, self.min_intervals
            ),
        }
    }
}

/// Purchase days of one category for one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryPurchases {
    /// Category key (e.g. a category path at the depth the caller chose).
    pub category: String,
    /// Days with a purchase in that category (any order, duplicates allowed).
    pub days: Vec<NaiveDate>,
}

/// One member's purchase history for the cycle estimate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CycleInput {
    /// The member.
    pub member_id: i64,
    /// Days with a paid purchase (any order, duplicates allowed; days after `as_of` are ignored).
    pub purchase_days: Vec<NaiveDate>,
    /// Per-category purchase days; may be empty.
    pub categories: Vec<CategoryPurchases>,
}

/// A category with a trusted estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategoryCycle {
    /// Category key as given.
    pub category: String,
    /// Its estimate.
    pub estimate: CycleEstimate,
}

/// The cycle result of one member.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CycleResult {
    /// The member.
    pub member_id: i64,
    /// Estimate over all purchases (its `reason` says how it was reached); None when the history is too
    /// short.
    pub overall: Option<CycleEstimate>,
    /// Why there is no overall estimate; None when there is one.
    pub insufficient: Option<Insufficient>,
    /// Categories with enough history (others are left out), in input order.
    pub categories: Vec<CategoryCycle>,
}

/// Reusable buffers so a batch does not allocate per member.
#[derive(Default)]
struct Scratch {
    days: Vec<NaiveDate>,
    intervals: Vec<i64>,
    dev: Vec<f64>,
}

/// Median of a sorted non-empty slice.
fn median_sorted_i(v: &[i64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 { v[n / 2] as f64 } else { (v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0 }
}

fn median_sorted_f(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn add_days(d: NaiveDate, n: i64) -> NaiveDate {
    let r = if n >= 0 {
        d.checked_add_days(Days::new(n.unsigned_abs()))
    } else {
        d.checked_sub_days(Days::new(n.unsigned_abs()))
    };
    r.unwrap_or(if n >= 0 { NaiveDate::MAX } else { NaiveDate::MIN })
}

fn estimate_with(
    days_in: &[NaiveDate],
    as_of: NaiveDate,
    p: &CycleParams,
    s: &mut Scratch,
) -> Result<CycleEstimate, Shortfall> {
    s.days.clear();
    s.days.extend(days_in.iter().copied().filter(|&d| d <= as_of));
    s.days.sort_unstable();
    s.days.dedup();
    let distinct_days = s.days.len();
    s.intervals.clear();
    s.intervals.extend(s.days.windows(2).map(|w| (w[1] - w[0]).num_days()));
    let n_int = s.intervals.len();
    let insufficient = |kept| Shortfall { distinct_days, intervals: n_int, kept, min_intervals: p.min_intervals };
    if n_int == 0 || n_int < p.min_intervals {
        return Err(insufficient(n_int));
    }
    s.intervals.sort_unstable();
    let med = median_sorted_i(&s.intervals);
    s.dev.clear();
    s.dev.extend(s.intervals.iter().map(|&x| (x as f64 - med).abs()));
    s.dev.sort_unstable_by(f64::total_cmp);
    let mad = median_sorted_f(&s.dev);
    let limit = p.outlier_mad_k * (1.4826 * mad).max(1.0);
    // Intervals are sorted, so the outliers are a prefix and a suffix.
    let lo = s.intervals.partition_point(|&x| med - x as f64 > limit);
    let hi = s.intervals.partition_point(|&x| x as f64 - med <= limit);
    let kept = &s.intervals[lo..hi.max(lo)];
    if kept.len() < p.min_intervals || kept.is_empty() {
        return Err(insufficient(kept.len()));
    }
    let mut trimmed: Vec<i64> = s.intervals[..lo].to_vec();
    trimmed.extend_from_slice(&s.intervals[hi.max(lo)..]);

    let typical = median_sorted_i(kept);
    let k = kept.len() as f64;
    let mean = kept.iter().map(|&x| x as f64).sum::<f64>() / k;
    let var = kept.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / k;
    let cv = if mean > 0.0 { var.sqrt() / mean } else { 0.0 };
    let regularity = if cv <= p.regular_cv {
        Regularity::Regular
    } else if cv <= p.irregular_cv {
        Regularity::Moderate
    } else {
        Regularity::Irregular
    };
    let last = s.days[distinct_days - 1];
    let next_expected = add_days(last, typical.round() as i64);
    let lead = (p.due_lead_fraction * typical).round().max(f64::from(p.due_lead_min_days)) as i64;
    let grace = (p.due_grace_fraction * typical).round().max(f64::from(p.due_grace_min_days)) as i64;
    let due_from = add_days(next_expected, -lead);
    let due_until = add_days(next_expected, grace);
    let status = if as_of < due_from {
        DueStatus::NotYet
    } else if as_of <= due_until {
        DueStatus::Due
    } else {
        DueStatus::Lapsed
    };
    let days_to_expected = (next_expected - as_of).num_days();

    let mut e = CycleEstimate {
        distinct_days,
        intervals_used: kept.len(),
        trimmed,
        typical_interval_days: typical,
        mean_interval_days: mean,
        cv,
        regularity,
        last_purchase: last,
        next_expected,
        due_from,
        due_until,
        days_to_expected,
        status,
        due: status == DueStatus::Due,
        reason: String::new(),
    };
    e.reason = describe(&e);
    Ok(e)
}

/// The estimate's reason, written into one buffer (this runs for every member with an estimate).
fn describe(e: &CycleEstimate) -> String {
    use std::fmt::Write;
    let mut r = String::with_capacity(200);
    // Writing to a String cannot fail.
    let _ = write!(r, "typical interval {} days (median of {} intervals", e.typical_interval_days, e.intervals_used);
    for (i, d) in e.trimmed.iter().enumerate() {
        let sep = if i == 0 { "; outliers trimmed: " } else { ", " };
        let _ = write!(r, "{sep}{d}");
    }
    if !e.trimmed.is_empty() {
        r.push_str(" days");
    }
    let reg = match e.regularity {
        Regularity::Regular => "regular",
        Regularity::Moderate => "moderately regular",
        Regularity::Irregular => "irregular",
    };
    let verdict = match e.status {
        DueStatus::NotYet => "not due yet",
        DueStatus::Due => "due",
        DueStatus::Lapsed => "lapsed",
    };
    let _ = write!(
        r,
        "), CV {:.2} {reg}; last purchase {}, next expected {}; {verdict}: ",
        e.cv, e.last_purchase, e.next_expected
    );
    let _ = match e.days_to_expected {
        d if d > 0 => write!(r, "{d} days before the expected day"),
        0 => write!(r, "on the expected day"),
        d => write!(r, "{} days past the expected day", d.unsigned_abs()),
    };
    let _ = write!(r, " (due window {} to {})", e.due_from, e.due_until);
    r
}

/// Cycle estimate from one list of purchase days (a member's, or one category's).
pub fn estimate_cycle(
    days: &[NaiveDate],
    as_of: NaiveDate,
    params: &CycleParams,
) -> Result<Result<CycleEstimate, Insufficient>, CycleError> {
    params.validate()?;
    Ok(estimate_with(days, as_of, params, &mut Scratch::default()).map_err(Shortfall::explain))
}

fn member_cycle(m: &CycleInput, as_of: NaiveDate, p: &CycleParams, s: &mut Scratch) -> CycleResult {
    let (overall, insufficient) = match estimate_with(&m.purchase_days, as_of, p, s) {
        Ok(e) => (Some(e), None),
        Err(i) => (None, Some(i.explain())),
    };
    let categories = m
        .categories
        .iter()
        .filter_map(|c| {
            estimate_with(&c.days, as_of, p, s)
                .ok()
                .map(|estimate| CategoryCycle { category: c.category.clone(), estimate })
        })
        .collect();
    CycleResult { member_id: m.member_id, overall, insufficient, categories }
}

/// Cycle results for many members (input order kept), in parallel with per-worker scratch buffers.
pub fn purchase_cycles(
    members: &[CycleInput],
    as_of: NaiveDate,
    params: &CycleParams,
) -> Result<Vec<CycleResult>, CycleError> {
    params.validate()?;
    Ok(members.par_iter().map_init(Scratch::default, |s, m| member_cycle(m, as_of, params, s)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }
    /// Days from a start and a list of intervals.
    fn days_from(start: NaiveDate, intervals: &[i64]) -> Vec<NaiveDate> {
        let mut v = vec![start];
        for &i in intervals {
            let last = *v.last().unwrap();
            v.push(add_days(last, i));
        }
        v
    }
    fn est(days: &[NaiveDate], as_of: NaiveDate) -> Result<CycleEstimate, Insufficient> {
        estimate_cycle(days, as_of, &CycleParams::default()).unwrap()
    }

    #[test]
    fn outlier_interval_is_trimmed() {
        // Intervals 30, 31, 29, 90, 30. Sorted 29,30,30,31,90: median 30; |dev| 1,0,0,1,60 -> MAD 1;
        // limit 3 * max(1.4826, 1) = 4.45 -> 90 trimmed. Kept 29,30,30,31: median 30, mean 30,
        // population sd sqrt(2/4) = 0.7071, CV 0.02357 -> regular.
        let start = day(2024, 1, 1);
        let days = days_from(start, &[30, 31, 29, 90, 30]);
        let last = *days.last().unwrap(); // 2024-01-01 + 210 = 2024-07-29
        assert_eq!(last, day(2024, 7, 29));
        let e = est(&days, last).unwrap();
        assert_eq!(e.trimmed, vec![90]);
        assert_eq!(e.intervals_used, 4);
        assert_eq!(e.typical_interval_days, 30.0);
        assert!((e.mean_interval_days - 30.0).abs() < 1e-12);
        assert!((e.cv - 0.5f64.sqrt() / 30.0).abs() < 1e-12);
        assert_eq!(e.regularity, Regularity::Regular);
        assert_eq!(e.next_expected, day(2024, 8, 28));
        // Lead max(3, round(6)) = 6, grace max(7, round(15)) = 15.
        assert_eq!(e.due_from, day(2024, 8, 22));
        assert_eq!(e.due_until, day(2024, 9, 12));
        assert_eq!(e.status, DueStatus::NotYet);
        assert_eq!(
            e.reason,
            "typical interval 30 days (median of 4 intervals; outliers trimmed: 90 days), CV 0.02 regular; \
             last purchase 2024-07-29, next expected 2024-08-28; not due yet: 30 days before the expected day \
             (due window 2024-08-22 to 2024-09-12)"
        );
        // Without trimming the median would still be 30, but the mean would be 42 and the CV large.
    }

    #[test]
    fn due_flag_edges() {
        let days = days_from(day(2024, 1, 1), &[30, 30, 30]); // last 2024-03-31, expected 2024-04-30
        let p = CycleParams::default();
        let at = |d| estimate_cycle(&days, d, &p).unwrap().unwrap();
        // Window: 2024-04-30 - 6 = 04-24 to 04-30 + 15 = 05-15.
        assert_eq!(at(day(2024, 4, 23)).status, DueStatus::NotYet);
        assert!(!at(day(2024, 4, 23)).due);
        assert!(at(day(2024, 4, 24)).due);
        assert_eq!(at(day(2024, 4, 30)).days_to_expected, 0);
        assert!(at(day(2024, 5, 15)).due);
        assert_eq!(at(day(2024, 5, 15)).days_to_expected, -15);
        assert_eq!(at(day(2024, 5, 16)).status, DueStatus::Lapsed);
        // Short cycles use the minimum lead/grace: interval 5 -> lead max(3, 1) = 3, grace max(7, 3) = 7.
        let short = days_from(day(2024, 1, 1), &[5, 5]); // last 01-11, expected 01-16
        let e = estimate_cycle(&short, day(2024, 1, 13), &p).unwrap().unwrap();
        assert_eq!((e.due_from, e.due_until), (day(2024, 1, 13), day(2024, 1, 23)));
        assert!(e.due);
    }

    #[test]
    fn too_little_history_and_degenerate_input() {
        let as_of = day(2024, 6, 1);
        let e = est(&[], as_of).unwrap_err();
        assert_eq!(e.distinct_days, 0);
        // Same-day duplicates are one occasion: two distinct days, one interval.
        let d = [day(2024, 1, 1), day(2024, 1, 1), day(2024, 2, 1)];
        let e = est(&d, as_of).unwrap_err();
        assert_eq!(e.reason, "2 distinct purchase days give 1 intervals; need 2");
        // Days after as_of are ignored.
        let d = [day(2024, 1, 1), day(2024, 2, 1), day(2024, 7, 1)];
        assert!(est(&d, as_of).is_err());
        // Trimming can leave too few: 30, 30, 200 -> 200 trimmed, 2 left, need 3.
        let p = CycleParams { min_intervals: 3, ..CycleParams::default() };
        let d = days_from(day(2023, 1, 1), &[30, 30, 200]);
        let e = estimate_cycle(&d, as_of, &p).unwrap().unwrap_err();
        assert_eq!(e.kept, 2);
        assert!(e.reason.contains("2 left after trimming"));
        // Min intervals 1 works with a single interval.
        let p1 = CycleParams { min_intervals: 1, ..CycleParams::default() };
        let d = [day(2024, 1, 1), day(2024, 1, 11)];
        let e = estimate_cycle(&d, as_of, &p1).unwrap().unwrap();
        assert_eq!((e.typical_interval_days, e.cv), (10.0, 0.0));
        // Extreme dates do not overflow.
        let d = [NaiveDate::MIN, NaiveDate::MAX];
        let _ = estimate_cycle(&d, NaiveDate::MAX, &p1).unwrap();
        // Bad parameters are typed errors.
        let bad = CycleParams { outlier_mad_k: f64::NAN, ..CycleParams::default() };
        assert!(estimate_cycle(&d, as_of, &bad).is_err());
    }

    #[test]
    fn even_count_median_and_irregular() {
        // Intervals 10, 20, 40, 50: MAD: median 30, devs 20,10,10,20 -> MAD 15, limit 66.7, none trimmed.
        // Typical 30; mean 30; sd sqrt((400+100+100+400)/4) = 15.81; CV 0.527 -> irregular.
        let d = days_from(day(2024, 1, 1), &[10, 20, 40, 50]);
        let e = est(&d, day(2024, 5, 1)).unwrap();
        assert_eq!(e.typical_interval_days, 30.0);
        assert!(e.trimmed.is_empty());
        assert_eq!(e.regularity, Regularity::Irregular);
        // Intervals 10, 11: median 10.5 -> rounds to 11 days after the last purchase.
        let d = days_from(day(2024, 1, 1), &[10, 11]);
        let e = est(&d, day(2024, 1, 22)).unwrap();
        assert_eq!(e.next_expected, day(2024, 2, 2));
    }

    #[test]
    fn per_category_only_where_history_suffices() {
        let m = CycleInput {
            member_id: 7,
            purchase_days: days_from(day(2024, 1, 1), &[15, 15, 15, 15]),
            categories: vec![
                CategoryPurchases { category: "beauty/skincare".into(), days: days_from(day(2024, 1, 1), &[30, 30]) },
                CategoryPurchases { category: "home".into(), days: vec![day(2024, 1, 16)] },
            ],
        };
        let r = purchase_cycles(&[m], day(2024, 3, 1), &CycleParams::default()).unwrap();
        assert_eq!(r.len(), 1);
        let o = r[0].overall.as_ref().unwrap();
        assert_eq!(o.next_expected, day(2024, 3, 16));
        assert_eq!(r[0].categories.len(), 1);
        assert_eq!(r[0].categories[0].category, "beauty/skincare");
        assert_eq!(r[0].categories[0].estimate.next_expected, day(2024, 3, 31));
        assert_eq!(r[0].insufficient, None);
        let short = CycleInput { member_id: 8, purchase_days: vec![day(2024, 1, 1)], categories: vec![] };
        let r = purchase_cycles(&[short], day(2024, 3, 1), &CycleParams::default()).unwrap();
        assert_eq!(r[0].overall, None);
        assert_eq!(r[0].insufficient.as_ref().unwrap().reason, "1 distinct purchase days give 0 intervals; need 2");
        assert!(purchase_cycles(&[], day(2024, 2, 29), &CycleParams::default()).unwrap().is_empty());
    }
}
