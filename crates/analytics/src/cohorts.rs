//! Monthly retention cohorts and the repurchase rate (留存矩阵, 复购率).
//!
//! # What it computes
//!
//! * **Cohort**: a member belongs to the cohort of the calendar month (UTC) of their first purchase day on or
//!   before `as_of`. Purchases after `as_of` are ignored entirely, as if the data ended there.
//! * **Active matrix** `active[c][k]`: number of members of cohort `c` with at least one purchase day in the
//!   calendar month `c + k` (k = 0, 1, …). Month 0 is every member by definition, so its share is 100 %.
//!   This is the classic "came back in month k" retention triangle.
//! * **On-or-after matrix** `active_on_or_after[c][k]`: number of members of cohort `c` with a purchase in
//!   month `c + k` *or any later month up to `as_of`* ("still returning from month k on", also called
//!   unbounded or rolling retention). It is never smaller than the active cell and never grows with `k`.
//!   Computed from the histogram of each member's last active month offset: a member counts for every
//!   `k <= last offset`.
//! * Shares divide by the cohort size; a cohort of size 0 (a month in which nobody bought for the first time)
//!   still has a row so the grid is dense, with shares `None`.
//! * A cell exists only for months up to the month of `as_of`, so rows form a triangle. The cell of the
//!   `as_of` month is flagged `partial` when `as_of` is not the last day of that month (the month is still
//!   running, so its counts can only rise); so is the youngest cohort, which can still gain members.
//! * **Repurchase rate**: share of buyers (members with a purchase day on or before `as_of`) who have at
//!   least two distinct purchase days. The windowed variant counts a buyer as a repeat buyer when their
//!   second distinct purchase day is at most `repurchase_window_days` days after the first (inclusive), and
//!   divides only by the *eligible* buyers, whose first purchase is at least that many days before `as_of`:
//!   a member who first bought last week has not had 90 days to come back, and counting them would bias the
//!   rate down.
//!
//! # Conventions
//!
//! Days are `NaiveDate` in UTC; months are calendar months, so `2024-01-31` and `2024-02-01` are one month
//! apart and `2024-12-31` → `2025-01-01` is a year wrap with offset 1. When the source has timestamps,
//! [`MemberPurchaseDays::from_times`] converts them to UTC days (`23:59:59Z` stays in its day, `00:00:00Z`
//! starts the next one).
//!
//! # Scale
//!
//! One pass over the members, rayon over chunks, O(d log d) per member for `d` purchase days (a sort of
//! the month offsets, which are few). Memory is one small row accumulator per cohort month per worker,
//! independent of the number of members, so a million members is a matter of a second or less.
//!
//! References: the monthly cohort triangle of product-analytics retention reports (Mixpanel and Amplitude
//! "Retention"); the on-or-after variant is what Amplitude calls "unbounded retention", the per-month one
//! its "N-day" (here N-month) retention.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One member's purchase days: what `SELECT member_id, DISTINCT date(placed_at)` over paid orders gives.
///
/// The days need not be sorted or distinct; duplicates and order do not change any result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberPurchaseDays {
    /// The member.
    pub member_id: i64,
    /// UTC days with at least one paid purchase.
    pub purchase_days: Vec<NaiveDate>,
}

impl MemberPurchaseDays {
    /// Builds the record from purchase timestamps, taking each one's UTC calendar day, sorted and distinct.
    pub fn from_times(member_id: i64, times: impl IntoIterator<Item = DateTime<Utc>>) -> Self {
        let mut purchase_days: Vec<NaiveDate> = times.into_iter().map(|t| t.date_naive()).collect();
        purchase_days.sort_unstable();
        purchase_days.dedup();
        Self { member_id, purchase_days }
    }
}

/// Knobs of the cohort report. `Default`: every month offset up to `as_of`, 90-day repurchase window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct CohortParams {
    /// Largest month offset `k` to report (`None`: up to the `as_of` month). Later activity still counts
    /// in the on-or-after cells of the months shown.
    pub max_month_offset: Option<u32>,
    /// Window, in days after the first purchase, for the windowed repurchase rate. Default 90.
    pub repurchase_window_days: u32,
}

impl Default for CohortParams {
    fn default() -> Self {
        Self { max_month_offset: None, repurchase_window_days: 90 }
    }
}

/// One cell of the matrices: cohort `c`, month offset `k`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CohortCell {
    /// `k`: months since the cohort month (0 = the month of first purchase).
    pub month_offset: u32,
    /// First day of the calendar month `c + k`.
    pub month: NaiveDate,
    /// Members of the cohort who purchased in month `c + k`.
    pub active: u64,
    /// `active / cohort size` (`None` for an empty cohort).
    pub active_share: Option<f64>,
    /// Members of the cohort who purchased in month `c + k` or any later month up to `as_of`.
    pub active_on_or_after: u64,
    /// `active_on_or_after / cohort size` (`None` for an empty cohort).
    pub on_or_after_share: Option<f64>,
    /// The month is the `as_of` month and `as_of` is not its last day: counts are still incomplete.
    pub partial: bool,
}

/// One cohort (row of the matrices).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CohortRow {
    /// First day of the month of first purchase.
    pub cohort_month: NaiveDate,
    /// `YYYY-MM`, the label an operator reads.
    pub label: String,
    /// Members whose first purchase fell in this month.
    pub size: u64,
    /// This is the `as_of` month and it is not over: the cohort may still gain members.
    pub partial: bool,
    /// Cells for `k = 0 ..= min(max_month_offset, months until as_of)`.
    pub cells: Vec<CohortCell>,
}

/// Repurchase rate (复购率), overall and within a window after the first purchase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RepurchaseRate {
    /// Members with at least one purchase day on or before `as_of`.
    pub buyers: u64,
    /// Buyers with at least two distinct purchase days on or before `as_of`.
    pub repeat_buyers: u64,
    /// `repeat_buyers / buyers`.
    pub rate: Option<f64>,
    /// The window of the windowed rate, in days after the first purchase (inclusive).
    pub window_days: u32,
    /// Buyers whose first purchase is at least `window_days` before `as_of` (they had the full window).
    pub eligible_buyers: u64,
    /// Eligible buyers whose second distinct purchase day is at most `window_days` after the first.
    pub repeat_within_window: u64,
    /// `repeat_within_window / eligible_buyers`.
    pub rate_within_window: Option<f64>,
    /// Plain-language reading of the two rates.
    pub explanation: String,
}

/// The cohort report: both matrices, the sizes and the repurchase rate.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CohortReport {
    /// Last day of data taken into account.
    pub as_of: NaiveDate,
    /// `as_of` is not the last day of its month, so that month's cells are partial.
    pub as_of_month_partial: bool,
    /// Rows from the earliest cohort month to the `as_of` month, one per calendar month (dense).
    pub cohorts: Vec<CohortRow>,
    /// Members given with no purchase day on or before `as_of` (not in any cohort).
    pub members_without_purchases: u64,
    /// Repurchase rates over the same members.
    pub repurchase: RepurchaseRate,
}

/// Months since year 0, so that month differences are plain subtraction across year ends.
fn month_index(d: NaiveDate) -> i64 {
    i64::from(d.year()) * 12 + i64::from(d.month0())
}

fn month_start(index: i64) -> Option<NaiveDate> {
    let year = i32::try_from(index.div_euclid(12)).ok()?;
    let month = u32::try_from(index.rem_euclid(12)).ok()? + 1;
    NaiveDate::from_ymd_opt(year, month, 1)
}

/// Per-cohort accumulator: size, members active at each offset, histogram of last active offset.
#[derive(Debug, Default, Clone)]
struct RowAcc {
    size: u64,
    active: Vec<u64>,
    last_offset_hist: Vec<u64>,
}

fn bump(v: &mut Vec<u64>, i: usize) {
    if v.len() <= i {
        v.resize(i + 1, 0);
    }
    v[i] += 1;
}

fn add_into(dst: &mut Vec<u64>, src: &[u64]) {
    if dst.len() < src.len() {
        dst.resize(src.len(), 0);
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

#[derive(Debug, Default)]
struct Acc {
    rows: HashMap<i64, RowAcc>,
    without: u64,
    buyers: u64,
    repeat: u64,
    eligible: u64,
    repeat_within: u64,
    offsets: Vec<usize>,
}

impl Acc {
    fn merge(mut self, other: Acc) -> Acc {
        for (k, r) in other.rows {
            let row = self.rows.entry(k).or_default();
            row.size += r.size;
            add_into(&mut row.active, &r.active);
            add_into(&mut row.last_offset_hist, &r.last_offset_hist);
        }
        self.without += other.without;
        self.buyers += other.buyers;
        self.repeat += other.repeat;
        self.eligible += other.eligible;
        self.repeat_within += other.repeat_within;
        self
    }

    fn add_member(&mut self, m: &MemberPurchaseDays, as_of: NaiveDate, window_days: i64) {
        // First and second distinct day in one pass: no sort needed, duplicates harmless.
        let mut first: Option<NaiveDate> = None;
        let mut second: Option<NaiveDate> = None;
        for &d in m.purchase_days.iter().filter(|d| **d <= as_of) {
            match first {
                None => first = Some(d),
                Some(f) if d < f => {
                    second = Some(f);
                    first = Some(d);
                }
                Some(f) if d > f && second.is_none_or(|s| d < s) => second = Some(d),
                Some(_) => {}
            }
        }
        let Some(first) = first else {
            self.without += 1;
            return;
        };
        self.buyers += 1;
        if second.is_some() {
            self.repeat += 1;
        }
        if (as_of - first).num_days() >= window_days {
            self.eligible += 1;
            if second.is_some_and(|s| (s - first).num_days() <= window_days) {
                self.repeat_within += 1;
            }
        }

        let cohort = month_index(first);
        self.offsets.clear();
        self.offsets.extend(
            m.purchase_days
                .iter()
                .filter(|d| **d <= as_of)
                // Non-negative because `first` is the minimum.
                .map(|d| usize::try_from(month_index(*d) - cohort).unwrap_or(0)),
        );
        self.offsets.sort_unstable();
        self.offsets.dedup();
        let row = self.rows.entry(cohort).or_default();
        row.size += 1;
        for &k in &self.offsets {
            bump(&mut row.active, k);
        }
        let last = self.offsets.last().copied().unwrap_or(0);
        bump(&mut row.last_offset_hist, last);
    }
}

fn share(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_owned(), |v| format!("{:.1}%", v * 100.0))
}

/// Builds the monthly cohort matrices and the repurchase rates from members' purchase days, counting only
/// days on or before `as_of`.
///
/// Never fails: members without purchases are counted apart, an empty input gives an empty report.
pub fn cohort_report(members: &[MemberPurchaseDays], as_of: NaiveDate, params: &CohortParams) -> CohortReport {
    let window_days = i64::from(params.repurchase_window_days);
    let acc = members
        .par_iter()
        .with_min_len(1024)
        .fold(Acc::default, |mut acc, m| {
            acc.add_member(m, as_of, window_days);
            acc
        })
        .reduce(Acc::default, Acc::merge);

    let as_of_month = month_index(as_of);
    let as_of_month_partial = as_of.succ_opt().is_some_and(|n| n.month() == as_of.month());
    let mut cohorts = Vec::new();
    if let Some(&first_cohort) = acc.rows.keys().min() {
        let empty = RowAcc::default();
        for c in first_cohort..=as_of_month {
            let row = acc.rows.get(&c).unwrap_or(&empty);
            let Some(cohort_month) = month_start(c) else {
                continue;
            };
            let mut span = u32::try_from(as_of_month - c).unwrap_or(u32::MAX);
            if let Some(max) = params.max_month_offset {
                span = span.min(max);
            }
            // on_or_after[k] = members whose last active offset >= k: a suffix sum of the histogram.
            let mut on_or_after = vec![0u64; row.last_offset_hist.len() + 1];
            for k in (0..row.last_offset_hist.len()).rev() {
                on_or_after[k] = on_or_after[k + 1] + row.last_offset_hist[k];
            }
            let cells = (0..=span)
                .filter_map(|k| {
                    let ku = k as usize;
                    let month = month_start(c + i64::from(k))?;
                    let active = row.active.get(ku).copied().unwrap_or(0);
                    let after = on_or_after.get(ku).copied().unwrap_or(0);
                    Some(CohortCell {
                        month_offset: k,
                        month,
                        active,
                        active_share: share(active, row.size),
                        active_on_or_after: after,
                        on_or_after_share: share(after, row.size),
                        partial: as_of_month_partial && c + i64::from(k) == as_of_month,
                    })
                })
                .collect();
            cohorts.push(CohortRow {
                cohort_month,
                label: format!("{:04}-{:02}", cohort_month.year(), cohort_month.month()),
                size: row.size,
                partial: as_of_month_partial && c == as_of_month,
                cells,
            });
        }
    }

    let rate = share(acc.repeat, acc.buyers);
    let rate_within = share(acc.repeat_within, acc.eligible);
    let explanation = format!(
        "{} of {} buyers ({}) bought on at least two different days up to {as_of}; of the {} buyers whose \
         first purchase was at least {} days before {as_of}, {} ({}) bought again within {} days of their \
         first purchase",
        acc.repeat,
        acc.buyers,
        pct(rate),
        acc.eligible,
        params.repurchase_window_days,
        acc.repeat_within,
        pct(rate_within),
        params.repurchase_window_days,
    );
    CohortReport {
        as_of,
        as_of_month_partial,
        cohorts,
        members_without_purchases: acc.without,
        repurchase: RepurchaseRate {
            buyers: acc.buyers,
            repeat_buyers: acc.repeat,
            rate,
            window_days: params.repurchase_window_days,
            eligible_buyers: acc.eligible,
            repeat_within_window: acc.repeat_within,
            rate_within_window: rate_within,
            explanation,
        },
    }
}

#[cfg(test)]
mod tests;
