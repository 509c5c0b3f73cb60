//! Daily KPIs and seasonality-aware anomaly alerts.
//!
//! **Input** is one [`DailyAggregate`] per UTC day as the store computes it (members total at the end of
//! the day, new and active members, paid orders, GMV in fen, buyers, repeat buyers, points issued and
//! redeemed). [`daily_kpis`] makes the series contiguous (a missing day has no activity and carries the
//! previous members total; it is marked `filled`) and derives:
//!
//! - **AOV** = GMV / orders (fen, rounded; none on a day without orders);
//! - **repurchase rate** = repeat buyers / buyers: the share of the day's buyers who had purchased before
//!   that day (none on a day without buyers);
//! - **rolling 7- and 30-day views** ending on each day: sums of the flows, AOV and repurchase rate over the
//!   window (a member buying on two days of the window counts on both — "buyer-days"), mean active members.
//!
//! **Anomaly detection** ([`detect_anomalies`]) compares each day with the *same weekday* of the previous
//! W weeks (default 8), so a shop's weekly rhythm (busier weekends) is the baseline rather than an anomaly:
//!
//! 1. Optional detrending (default on): divide each day's value by its *level*, the median of the 28 days
//!    before it. 28 days hold four of every weekday, so the level carries no weekday bias; the median
//!    ignores single spikes. Growth or decline then no longer makes the previous weeks a stale baseline
//!    nor inflates their spread, so the detector stays sensitive in a growing shop. When a level is
//!    missing (less than W weeks + 28 days of history, or a rate KPI with days lacking a value) or not
//!    positive (a shop with many zero days), the day is compared on raw values instead.
//! 2. Expected value: c = the median of the W same-weekday (adjusted) values; `expected` = c (× the
//!    day's level when detrended).
//! 3. Spread, pooled over the whole W-week window: every day's relative residual from the median of the
//!    other W − 1 days of its weekday (v / median − 1, leave-one-out, the same comparison the day under
//!    test gets), and `s = 1.4826 · median|residual|` (the MAD, which estimates the standard deviation for
//!    normal noise and ignores an earlier anomaly). Pooling 7·W residuals rather than the W references
//!    alone matters: the MAD of only 8 values is itself so noisy that ordinary ±10% days would reach
//!    |z| = 3.5. This assumes the relative noise is alike on every weekday.
//!    `z = (x / c − 1) / s`.
//! 4. Alert when |z| ≥ threshold (default 3.5, Iglewicz & Hoaglin's cut-off for modified z-scores) **and**
//!    |value − expected| ≥ the KPI's minimum absolute change, so a tiny shop's 2 → 6 orders is not news.
//!
//! **MAD = 0** (more than half of the residuals are 0, e.g. a constant series): the mean absolute
//! residual scaled by √(π/2) ≈ 1.2533 replaces 1.4826·MAD (the IBM SPSS modified z-score rule); if that is
//! 0 too, the floor `min_scale_fraction` (default 1%) applies, so a perfectly flat KPI alerts on a move of
//! 3.5% or more (and the minimum change). When the weekday's median c is 0 (a weekday that usually has no
//! orders) the relative form is undefined and the day is compared on absolute values of its W references,
//! `z = (x − median) / max(1.4826·MAD, 1e-9)` (mean absolute deviation when MAD = 0). |z| is capped at
//! 1000, a value reached only when the history has no spread at all.
//!
//! A day is only judged when its W same-weekday references exist, i.e. after **W full weeks of history**
//! (56 days by default), and all W references and the day itself have a value (rate KPIs have none on days
//! without orders or buyers). An STL decomposition was not chosen: it needs several seasonal cycles of
//! clean data to fit, is not robust to the anomalies it should find unless iterated, and its expected
//! value is harder to explain to an operator than "the usual Wednesday".
//!
//! References: B. Iglewicz and D. Hoaglin, *How to Detect and Handle Outliers* (1993), modified z-score;
//! P. Rousseeuw and C. Croux, "Alternatives to the median absolute deviation", JASA 88 (1993).

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};

/// One day of shop-wide aggregates, as the store computes them (UTC day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyAggregate {
    /// The day.
    pub date: NaiveDate,
    /// Registered members at the end of the day.
    pub members_total: i64,
    /// Members who registered that day.
    pub new_members: i64,
    /// Members with an order or an event that day.
    pub active_members: i64,
    /// Paid orders placed that day.
    pub orders: i64,
    /// Their total, fen.
    pub gmv_fen: i64,
    /// Distinct members who placed a paid order that day.
    pub buyers: i64,
    /// Of those, members who had a paid order before that day.
    pub repeat_buyers: i64,
    /// Points credited that day.
    pub points_issued: i64,
    /// Points spent that day.
    pub points_redeemed: i64,
}

impl DailyAggregate {
    /// A day on which nothing happened, with the member base it carried.
    pub fn quiet(date: NaiveDate, members_total: i64) -> Self {
        Self {
            date,
            members_total,
            new_members: 0,
            active_members: 0,
            orders: 0,
            gmv_fen: 0,
            buyers: 0,
            repeat_buyers: 0,
            points_issued: 0,
            points_redeemed: 0,
        }
    }
}

/// Sums and ratios over a trailing window ending on a day (inclusive).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RollingKpis {
    /// Days of the window that lie inside the series.
    pub days: u32,
    /// Whether the series covers the whole window.
    pub complete: bool,
    /// New members in the window.
    pub new_members: i64,
    /// Mean daily active members.
    pub avg_active_members: f64,
    /// Orders in the window.
    pub orders: i64,
    /// GMV in the window, fen.
    pub gmv_fen: i64,
    /// Sum of daily buyers (a member buying on two days counts twice).
    pub buyer_days: i64,
    /// Sum of daily repeat buyers.
    pub repeat_buyer_days: i64,
    /// GMV / orders over the window, fen.
    pub aov_fen: Option<i64>,
    /// Repeat buyer-days / buyer-days.
    pub repurchase_rate: Option<f64>,
    /// Points issued in the window.
    pub points_issued: i64,
    /// Points redeemed in the window.
    pub points_redeemed: i64,
}

/// One day's KPIs with derived ratios and rolling views.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KpiDay {
    /// The day's aggregates.
    #[serde(flatten)]
    pub aggregate: DailyAggregate,
    /// The day was missing from the input and filled with no activity.
    pub filled: bool,
    /// GMV / orders, fen.
    pub aov_fen: Option<i64>,
    /// Repeat buyers / buyers.
    pub repurchase_rate: Option<f64>,
    /// The 7 days ending on this day.
    pub last_7d: RollingKpis,
    /// The 30 days ending on this day.
    pub last_30d: RollingKpis,
}

/// Why KPIs could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KpiError {
    /// Two aggregates for the same day.
    #[error("two aggregates for {0}")]
    DuplicateDate(NaiveDate),
    /// A count or amount is negative, or repeat buyers exceed buyers.
    #[error("{date}: {detail}")]
    InvalidAggregate {
        /// The day.
        date: NaiveDate,
        /// What is wrong.
        detail: String,
    },
    /// The series spans more days than [`MAX_SPAN_DAYS`].
    #[error("the series spans {days} days; at most {max} are supported")]
    SpanTooLong {
        /// Span in days.
        days: i64,
        /// The limit.
        max: i64,
    },
    /// A parameter is out of range.
    #[error("invalid parameter {name}: {detail}")]
    InvalidParam {
        /// Which parameter.
        name: &'static str,
        /// What is wrong.
        detail: String,
    },
}

/// Longest series accepted (20 years), so a mistyped date cannot allocate millions of filled days.
pub const MAX_SPAN_DAYS: i64 = 7305;

fn rolling(days: &[DailyAggregate], end: usize, window: usize) -> RollingKpis {
    let start = (end + 1).saturating_sub(window);
    let w = &days[start..=end];
    let sum = |f: fn(&DailyAggregate) -> i64| w.iter().map(f).fold(0i64, i64::saturating_add);
    let orders = sum(|d| d.orders);
    let gmv_fen = sum(|d| d.gmv_fen);
    let buyer_days = sum(|d| d.buyers);
    let repeat_buyer_days = sum(|d| d.repeat_buyers);
    RollingKpis {
        days: w.len() as u32,
        complete: w.len() == window,
        new_members: sum(|d| d.new_members),
        avg_active_members: sum(|d| d.active_members) as f64 / w.len() as f64,
        orders,
        gmv_fen,
        buyer_days,
        repeat_buyer_days,
        aov_fen: ratio_fen(gmv_fen, orders),
        repurchase_rate: (buyer_days > 0).then(|| repeat_buyer_days as f64 / buyer_days as f64),
        points_issued: sum(|d| d.points_issued),
        points_redeemed: sum(|d| d.points_redeemed),
    }
}

fn ratio_fen(num: i64, den: i64) -> Option<i64> {
    (den > 0).then(|| (num as f64 / den as f64).round() as i64)
}

fn contiguous(aggs: &[DailyAggregate]) -> Result<Vec<(DailyAggregate, bool)>, KpiError> {
    let mut by_date: BTreeMap<NaiveDate, DailyAggregate> = BTreeMap::new();
    for a in aggs {
        let fields = [
            ("members_total", a.members_total),
            ("new_members", a.new_members),
            ("active_members", a.active_members),
            ("orders", a.orders),
            ("gmv_fen", a.gmv_fen),
            ("buyers", a.buyers),
            ("repeat_buyers", a.repeat_buyers),
            ("points_issued", a.points_issued),
            ("points_redeemed", a.points_redeemed),
        ];
        if let Some((name, v)) = fields.iter().find(|(_, v)| *v < 0) {
            return Err(KpiError::InvalidAggregate { date: a.date, detail: format!("{name} is negative ({v})") });
        }
        if a.repeat_buyers > a.buyers {
            return Err(KpiError::InvalidAggregate {
                date: a.date,
                detail: format!("repeat_buyers ({}) exceed buyers ({})", a.repeat_buyers, a.buyers),
            });
        }
        if by_date.insert(a.date, *a).is_some() {
            return Err(KpiError::DuplicateDate(a.date));
        }
    }
    let (Some(first), Some(last)) = (by_date.keys().next().copied(), by_date.keys().next_back().copied()) else {
        return Ok(Vec::new());
    };
    let span = (last - first).num_days() + 1;
    if span > MAX_SPAN_DAYS {
        return Err(KpiError::SpanTooLong { days: span, max: MAX_SPAN_DAYS });
    }
    let mut out = Vec::with_capacity(span as usize);
    let mut members_total = 0;
    for date in first.iter_days().take(span as usize) {
        match by_date.get(&date) {
            Some(a) => {
                members_total = a.members_total;
                out.push((*a, false));
            }
            None => out.push((DailyAggregate::quiet(date, members_total), true)),
        }
    }
    Ok(out)
}

/// The contiguous daily KPI series from the store's per-day aggregates (any order; gaps are filled).
pub fn daily_kpis(aggs: &[DailyAggregate]) -> Result<Vec<KpiDay>, KpiError> {
    let series = contiguous(aggs)?;
    let plain: Vec<DailyAggregate> = series.iter().map(|(a, _)| *a).collect();
    Ok(series
        .iter()
        .enumerate()
        .map(|(i, (a, filled))| KpiDay {
            aggregate: *a,
            filled: *filled,
            aov_fen: ratio_fen(a.gmv_fen, a.orders),
            repurchase_rate: (a.buyers > 0).then(|| a.repeat_buyers as f64 / a.buyers as f64),
            last_7d: rolling(&plain, i, 7),
            last_30d: rolling(&plain, i, 30),
        })
        .collect())
}

/// A KPI the anomaly detector can watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kpi {
    /// New members per day.
    NewMembers,
    /// Active members per day.
    ActiveMembers,
    /// Paid orders per day.
    Orders,
    /// GMV per day (fen).
    Gmv,
    /// Buyers per day.
    Buyers,
    /// Average order value (fen).
    Aov,
    /// Share of the day's buyers who had bought before.
    RepurchaseRate,
    /// Points issued per day.
    PointsIssued,
    /// Points redeemed per day.
    PointsRedeemed,
}

impl Kpi {
    fn label(self) -> &'static str {
        match self {
            Kpi::NewMembers => "New-member count",
            Kpi::ActiveMembers => "Active-member count",
            Kpi::Orders => "Order count",
            Kpi::Gmv => "GMV",
            Kpi::Buyers => "Buyer count",
            Kpi::Aov => "AOV",
            Kpi::RepurchaseRate => "Repurchase rate",
            Kpi::PointsIssued => "Points issuance",
            Kpi::PointsRedeemed => "Points redemption",
        }
    }

    fn value(self, d: &KpiDay) -> Option<f64> {
        let a = &d.aggregate;
        Some(match self {
            Kpi::NewMembers => a.new_members as f64,
            Kpi::ActiveMembers => a.active_members as f64,
            Kpi::Orders => a.orders as f64,
            Kpi::Gmv => a.gmv_fen as f64,
            Kpi::Buyers => a.buyers as f64,
            Kpi::Aov => return d.aov_fen.map(|x| x as f64),
            Kpi::RepurchaseRate => return d.repurchase_rate,
            Kpi::PointsIssued => a.points_issued as f64,
            Kpi::PointsRedeemed => a.points_redeemed as f64,
        })
    }

    fn format(self, x: f64) -> String {
        match self {
            Kpi::Gmv => yuan(x, 0),
            Kpi::Aov => yuan(x, 2),
            Kpi::RepurchaseRate => format!("{:.1}%", x * 100.0),
            _ => group_thousands(&format!("{:.0}", x)),
        }
    }
}

fn group_thousands(digits: &str) -> String {
    let (sign, digits) = match digits.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", digits),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

fn yuan(fen: f64, decimals: usize) -> String {
    let s = format!("{:.*}", decimals, fen / 100.0);
    let s = group_thousands(&s);
    match s.strip_prefix('-') {
        Some(rest) => format!("-¥{rest}"),
        None => format!("¥{s}"),
    }
}

fn weekday_name(w: Weekday) -> &'static str {
    match w {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

/// A KPI to watch and the smallest absolute change worth an alert (in the KPI's unit: count, fen, or a
/// share for the repurchase rate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KpiMonitor {
    /// The KPI.
    pub kpi: Kpi,
    /// |value − expected| must reach this for an alert.
    pub min_abs_change: f64,
}

/// Parameters of [`detect_anomalies`].
///
/// Defaults: 8 weeks, threshold 3.5, detrending on with a 28-day level, scale floor 1% of the expected
/// value, alerts for every day; monitors with minimum changes of 10 new members, 20 active members,
/// 10 orders, ¥1,000 GMV, 10 buyers, ¥20 AOV, 5 percentage points of repurchase rate, 5,000 points issued
/// and 5,000 redeemed — sized for a small shop; raise them for a large one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnomalyParams {
    /// W: how many previous same weekdays form the baseline; also the weeks of history required.
    pub weeks: usize,
    /// |z| at or above which a day is anomalous.
    pub z_threshold: f64,
    /// Divide out the level (median of the previous `trend_window_days`) before comparing.
    pub detrend: bool,
    /// Days in the level's window; a multiple of 7 keeps weekdays balanced.
    pub trend_window_days: usize,
    /// Floor of the robust scale as a fraction of the expected value (see the module doc).
    pub min_scale_fraction: f64,
    /// Only report alerts on or after this day (e.g. the last run's day); `None` reports every day.
    pub alerts_from: Option<NaiveDate>,
    /// The KPIs to watch.
    pub monitors: Vec<KpiMonitor>,
}

impl Default for AnomalyParams {
    fn default() -> Self {
        let m = |kpi, min_abs_change| KpiMonitor { kpi, min_abs_change };
        Self {
            weeks: 8,
            z_threshold: 3.5,
            detrend: true,
            trend_window_days: 28,
            min_scale_fraction: 0.01,
            alerts_from: None,
            monitors: vec![
                m(Kpi::NewMembers, 10.0),
                m(Kpi::ActiveMembers, 20.0),
                m(Kpi::Orders, 10.0),
                m(Kpi::Gmv, 100_000.0),
                m(Kpi::Buyers, 10.0),
                m(Kpi::Aov, 2_000.0),
                m(Kpi::RepurchaseRate, 0.05),
                m(Kpi::PointsIssued, 5_000.0),
                m(Kpi::PointsRedeemed, 5_000.0),
            ],
        }
    }
}

/// Whether an anomalous value is above or below what was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Higher than expected.
    Up,
    /// Lower than expected.
    Down,
}

/// An anomalous day of one KPI, with the evidence and a sentence for the operator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KpiAlert {
    /// The KPI.
    pub kpi: Kpi,
    /// The day.
    pub date: NaiveDate,
    /// The day's value (fen for money, a share for rates).
    pub value: f64,
    /// The expected value for that weekday (and level, if detrended).
    pub expected: f64,
    /// Robust z-score (capped at ±1000).
    pub z: f64,
    /// Above or below the expectation.
    pub direction: Direction,
    /// Whether the comparison was made on level-adjusted values.
    pub detrended: bool,
    /// The same-weekday values the day was compared with, oldest first.
    pub baseline: Vec<f64>,
    /// e.g. "GMV on 2026-11-11 is 4.2× the usual Wednesday (expected ¥120,300, got ¥505,200)".
    pub message: String,
}

/// Cap on |z|; reached only when the references have no spread.
pub const Z_CAP: f64 = 1000.0;

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 }
}

/// Median and robust scale of a few values on their own scale: the comparison for a weekday whose median
/// is 0 (see the module doc).
fn robust_center_scale(refs: &[f64], min_scale_fraction: f64) -> (f64, f64) {
    let mut v = refs.to_vec();
    let m = median(&mut v);
    let mut dev: Vec<f64> = refs.iter().map(|x| (x - m).abs()).collect();
    let mean_ad = dev.iter().sum::<f64>() / dev.len().max(1) as f64;
    let mad = median(&mut dev);
    // The mean absolute deviation stands in only when MAD is 0: used always, one outlier among the
    // references (last month's spike) would inflate the scale and blind the detector for W weeks.
    let spread = if mad > 0.0 { 1.4826 * mad } else { 1.2533 * mean_ad };
    let scale = spread.max(min_scale_fraction * m.abs()).max(1e-9);
    (m, scale)
}

/// Expected value and robust z of day `t` (see the module doc), on level-adjusted values if `detrended`.
/// `None` when the day or one of its W same-weekday references has no value.
fn judge_day(
    values: &[Option<f64>],
    levels: &[Option<f64>],
    t: usize,
    w: usize,
    detrended: bool,
    min_scale_fraction: f64,
) -> Option<(f64, f64)> {
    let adj = |i: usize| -> Option<f64> {
        let v = values[i]?;
        if detrended { levels[i].map(|l| v / l) } else { Some(v) }
    };
    let level_t = if detrended { levels[t]? } else { 1.0 };
    let x = adj(t)?;
    let refs: Vec<f64> = (1..=w).map(|k| adj(t - 7 * k)).collect::<Option<_>>()?;
    let center = median(&mut refs.clone());
    if center > 0.0 {
        // Relative residual of every day of the W-week window from the median of the *other* days of its
        // weekday (leave-one-out, exactly how the day under test is compared with its references; residuals
        // from a median fitted to the day itself would understate the spread by about a third for W = 8).
        let mut residuals: Vec<f64> = Vec::with_capacity(7 * w);
        let mut others: Vec<f64> = Vec::with_capacity(w);
        for g in 0..7 {
            let group: Vec<f64> = (0..w).filter_map(|k| adj(t - 7 + g - 7 * k)).collect();
            if group.len() < 3 {
                continue;
            }
            for (j, v) in group.iter().enumerate() {
                others.clear();
                others.extend(group.iter().enumerate().filter(|(i, _)| *i != j).map(|(_, o)| *o));
                let m = median(&mut others);
                if m > 0.0 {
                    residuals.push(v / m - 1.0);
                }
            }
        }
        let mut abs: Vec<f64> = residuals.iter().map(|r| r.abs()).collect();
        let mean_abs = abs.iter().sum::<f64>() / abs.len().max(1) as f64;
        let mad0 = median(&mut abs);
        let spread = if mad0 > 0.0 { 1.4826 * mad0 } else { 1.2533 * mean_abs };
        let scale = spread.max(min_scale_fraction).max(1e-9);
        Some((center * level_t, ((x / center - 1.0) / scale).clamp(-Z_CAP, Z_CAP)))
    } else {
        // The weekday is usually zero: compare on absolute values.
        let (m, s) = robust_center_scale(&refs, min_scale_fraction);
        Some((m * level_t, ((x - m) / s).clamp(-Z_CAP, Z_CAP)))
    }
}

impl AnomalyParams {
    fn validate(&self) -> Result<(), KpiError> {
        let bad = |name, detail: String| Err(KpiError::InvalidParam { name, detail });
        if self.weeks < 2 {
            return bad("weeks", format!("{} is fewer than 2 weeks of baseline", self.weeks));
        }
        if !(self.z_threshold.is_finite() && self.z_threshold > 0.0) {
            return bad("z_threshold", format!("{} is not a positive number", self.z_threshold));
        }
        if self.detrend && self.trend_window_days < 7 {
            return bad("trend_window_days", format!("{} is shorter than a week", self.trend_window_days));
        }
        if !(self.min_scale_fraction.is_finite() && self.min_scale_fraction >= 0.0) {
            return bad("min_scale_fraction", format!("{} is not a non-negative number", self.min_scale_fraction));
        }
        if let Some(m) = self.monitors.iter().find(|m| m.min_abs_change.is_nan() || m.min_abs_change < 0.0) {
            return bad(
                "monitors.min_abs_change",
                format!("{:?}: {} is not a non-negative number", m.kpi, m.min_abs_change),
            );
        }
        Ok(())
    }
}

/// Seasonality-aware anomaly alerts over the daily KPI series built from `aggs` (see the module doc).
/// Alerts are sorted by date, then KPI.
pub fn detect_anomalies(aggs: &[DailyAggregate], params: &AnomalyParams) -> Result<Vec<KpiAlert>, KpiError> {
    params.validate()?;
    let days = daily_kpis(aggs)?;
    let w = params.weeks;
    let mut alerts = Vec::new();
    for monitor in &params.monitors {
        let kpi = monitor.kpi;
        let values: Vec<Option<f64>> = days.iter().map(|d| kpi.value(d)).collect();
        // The level of day i: median of the `trend_window_days` values before it, if all exist and it is > 0.
        let levels: Vec<Option<f64>> = (0..days.len())
            .map(|i| {
                let l = params.trend_window_days;
                if !params.detrend || i < l {
                    return None;
                }
                let mut window: Vec<f64> = values[i - l..i].iter().copied().collect::<Option<_>>()?;
                Some(median(&mut window)).filter(|m| *m > 0.0)
            })
            .collect();
        for t in 7 * w..days.len() {
            let date = days[t].aggregate.date;
            if params.alerts_from.is_some_and(|from| date < from) {
                continue;
            }
            let Some(x) = values[t] else { continue };
            let Some(refs) = (1..=w).rev().map(|k| values[t - 7 * k]).collect::<Option<Vec<f64>>>() else {
                continue;
            };
            let detrended = levels[t - 7 * w..=t].iter().all(Option::is_some);
            let judged = judge_day(&values, &levels, t, w, detrended, params.min_scale_fraction);
            let (expected, z) = match judged {
                Some(j) => j,
                None => continue,
            };
            let z = z.clamp(-Z_CAP, Z_CAP);
            if z.is_nan() || z.abs() < params.z_threshold || (x - expected).abs() < monitor.min_abs_change {
                continue;
            }
            let direction = if x >= expected { Direction::Up } else { Direction::Down };
            let weekday = weekday_name(date.weekday());
            let comparison = match direction {
                Direction::Up if expected > 0.0 => {
                    format!("{:.1}× the usual {weekday}", x / expected)
                }
                Direction::Up => format!("up from the usual {weekday}'s 0"),
                Direction::Down if expected > 0.0 => {
                    format!("{:.0}% below the usual {weekday}", (1.0 - x / expected) * 100.0)
                }
                Direction::Down => format!("below the usual {weekday}"),
            };
            alerts.push(KpiAlert {
                kpi,
                date,
                value: x,
                expected,
                z,
                direction,
                detrended,
                baseline: refs,
                message: format!(
                    "{} on {date} is {comparison} (expected {}, got {})",
                    kpi.label(),
                    kpi.format(expected),
                    kpi.format(x)
                ),
            });
        }
    }
    alerts.sort_by_key(|a| (a.date, a.kpi));
    Ok(alerts)
}

#[cfg(test)]
mod tests;
