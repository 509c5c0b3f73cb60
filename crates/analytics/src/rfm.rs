//! RFM scoring (Recency, Frequency, Monetary) and the eight classic RFM segments.
//!
//! # What is computed
//! For every member who bought in the window (the `window_days` days ending at `as_of`, both ends counted:
//! recency `0 ..= window_days - 1`) the kernel gives three quintile scores 1–5 and one of the eight classic
//! segments (重要价值/发展/保持/挽留客户, 一般价值/发展/保持/挽留客户):
//!
//! * **R** recency = days from the last purchase to `as_of`; fewer days is better (recent = 5).
//! * **F** frequency = orders in the window; more is better.
//! * **M** monetary = money in the window, fen. Gross paid or net of refunds is the caller's choice; the
//!   product's store passes paid order totals minus refunds made in the window, so M can be zero or negative,
//!   which simply ranks lowest.
//!
//! Members with no purchase in the window (or a purchase day after `as_of`, or no orders counted) are **not
//! scored**: they are left out of the quintiles and the means and get no segment, with a reason saying why.
//! They belong to the lifecycle stages (sleeping, churned, potential) rather than to RFM. Every member who
//! bought in the window gets a segment.
//!
//! # Scores: quintiles with ties sharing a score
//! A member's score on a dimension is `1 + floor(5 * b / n)`, where `n` is the number of scored members and
//! `b` the number of them strictly worse on that dimension (pandas `rank(method="min", pct=True)` binned
//! into fifths). Equal values therefore always share a score, the lowest one their tie group reaches: if 60%
//! of members ordered once they all get F = 1 and the next value starts at F = 4. With distinct values the
//! scores are exact quintiles (n = 10 gives two members per score). Equivalently there are four cut values
//! per dimension in natural units, kept in [`DimensionSummary::score_cuts`]: score ≥ s exactly when the value
//! is beyond cut `s`, and cut `s` is the value at sorted position `ceil((s - 1) * n / 5) - 1` (worst first).
//! Those cuts are what lets a score or a segment change be explained in days, orders or yuan.
//!
//! # Segments: high or low against the mean score
//! Each dimension is **high** when the member's score is *strictly above* the mean score of the scored
//! population, and low otherwise (scores, not raw values, are compared: raw monetary values are so skewed
//! that the mean sits far above the typical member). Strictly above is chosen so that a dimension on which
//! everybody is equal (a new shop where everyone ordered once) makes nobody high, instead of making every
//! one-time buyer a "frequent" one. The comparison is done in integers (`score * n > sum of scores`), so it
//! is exact. The eight segments are the 2×2×2 combinations, see [`RfmSegment`].
//!
//! # Cost
//! Three sorts of `n` integers plus O(1) work per member: O(n log n) time, O(n) memory. The per-member map
//! runs on rayon.
//!
//! References: A. M. Hughes, *Strategic Database Marketing* (1994) for RFM quintiles; the eight-segment
//! grid (high/low of each of R, F, M against its mean) is common practice in Chinese CRM operations.

use chrono::NaiveDate;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Parameters for RFM scoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RfmParams {
    /// Length of the window in days, ending at `as_of` inclusive (default 365). The caller counts orders and
    /// money over the same window.
    pub window_days: u32,
}

impl Default for RfmParams {
    fn default() -> Self {
        Self { window_days: 365 }
    }
}

/// One member's purchase summary over the window, as a `GROUP BY member_id` fills it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RfmInput {
    /// The member.
    pub member_id: i64,
    /// Day (UTC) of the member's last paid purchase up to `as_of`, if any.
    pub last_purchase: Option<NaiveDate>,
    /// Paid orders placed in the window.
    pub orders: u32,
    /// Money in the window, fen (net of refunds or not: the caller's choice, see the module doc).
    pub monetary_fen: i64,
}

/// One of the three RFM dimensions; names the dimension that flipped in a segment change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RfmDimension {
    /// Recency: days since the last purchase (lower is better).
    Recency,
    /// Frequency: orders in the window.
    Frequency,
    /// Monetary: money in the window, fen.
    Monetary,
}

impl RfmDimension {
    /// One-letter label used in reasons.
    pub fn letter(self) -> &'static str {
        match self {
            Self::Recency => "R",
            Self::Frequency => "F",
            Self::Monetary => "M",
        }
    }
}

/// The eight classic RFM segments: each of R, F, M high or low against the population's mean score.
///
/// "重要" (important) segments have high M, "一般" (general) low M; value = high R and F, develop = high R,
/// low F; keep = low R, high F; retain (win back) = low R and F.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RfmSegment {
    /// 重要价值客户: recent, frequent, big spenders; the best members.
    ImportantValue,
    /// 重要发展客户: recent big spenders who do not come often yet; grow their frequency.
    ImportantDevelop,
    /// 重要保持客户: frequent big spenders who have not bought lately; keep them.
    ImportantKeep,
    /// 重要挽留客户: big spenders, neither recent nor frequent; win them back.
    ImportantRetain,
    /// 一般价值客户: recent and frequent, but small baskets.
    GeneralValue,
    /// 一般发展客户: recent, infrequent, small spend (often new buyers).
    GeneralDevelop,
    /// 一般保持客户: frequent but not recent, small spend.
    GeneralKeep,
    /// 一般挽留客户: low on all three.
    GeneralRetain,
}

impl RfmSegment {
    /// All eight, in the display order of the RFM grid.
    pub const ALL: [RfmSegment; 8] = [
        Self::ImportantValue,
        Self::ImportantDevelop,
        Self::ImportantKeep,
        Self::ImportantRetain,
        Self::GeneralValue,
        Self::GeneralDevelop,
        Self::GeneralKeep,
        Self::GeneralRetain,
    ];

    /// The segment for a combination of high/low flags.
    pub fn from_flags(r_high: bool, f_high: bool, m_high: bool) -> Self {
        match (m_high, r_high, f_high) {
            (true, true, true) => Self::ImportantValue,
            (true, true, false) => Self::ImportantDevelop,
            (true, false, true) => Self::ImportantKeep,
            (true, false, false) => Self::ImportantRetain,
            (false, true, true) => Self::GeneralValue,
            (false, true, false) => Self::GeneralDevelop,
            (false, false, true) => Self::GeneralKeep,
            (false, false, false) => Self::GeneralRetain,
        }
    }

    /// Stable code for storage, segment conditions and APIs.
    pub fn code(self) -> &'static str {
        match self {
            Self::ImportantValue => "important_value",
            Self::ImportantDevelop => "important_develop",
            Self::ImportantKeep => "important_keep",
            Self::ImportantRetain => "important_retain",
            Self::GeneralValue => "general_value",
            Self::GeneralDevelop => "general_develop",
            Self::GeneralKeep => "general_keep",
            Self::GeneralRetain => "general_retain",
        }
    }

    /// Chinese name as operators know it.
    pub fn name_zh(self) -> &'static str {
        match self {
            Self::ImportantValue => "重要价值客户",
            Self::ImportantDevelop => "重要发展客户",
            Self::ImportantKeep => "重要保持客户",
            Self::ImportantRetain => "重要挽留客户",
            Self::GeneralValue => "一般价值客户",
            Self::GeneralDevelop => "一般发展客户",
            Self::GeneralKeep => "一般保持客户",
            Self::GeneralRetain => "一般挽留客户",
        }
    }

    /// English name for the console.
    pub fn name_en(self) -> &'static str {
        match self {
            Self::ImportantValue => "High-value",
            Self::ImportantDevelop => "To develop",
            Self::ImportantKeep => "To keep",
            Self::ImportantRetain => "To win back",
            Self::GeneralValue => "Regular value",
            Self::GeneralDevelop => "Regular to develop",
            Self::GeneralKeep => "Regular to keep",
            Self::GeneralRetain => "Low value",
        }
    }

    /// The (R, F, M) high flags this segment stands for.
    pub fn flags(self) -> (bool, bool, bool) {
        match self {
            Self::ImportantValue => (true, true, true),
            Self::ImportantDevelop => (true, false, true),
            Self::ImportantKeep => (false, true, true),
            Self::ImportantRetain => (false, false, true),
            Self::GeneralValue => (true, true, false),
            Self::GeneralDevelop => (true, false, false),
            Self::GeneralKeep => (false, true, false),
            Self::GeneralRetain => (false, false, false),
        }
    }
}

/// A scored member's three scores and high/low flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RfmScores {
    /// Recency score 1–5 (5 = most recent).
    pub r: u8,
    /// Frequency score 1–5.
    pub f: u8,
    /// Monetary score 1–5.
    pub m: u8,
    /// R score strictly above the mean R score.
    pub r_high: bool,
    /// F score strictly above the mean F score.
    pub f_high: bool,
    /// M score strictly above the mean M score.
    pub m_high: bool,
}

/// RFM result for one member: the raw values, and scores and segment when the member bought in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RfmMember {
    /// The member.
    pub member_id: i64,
    /// Days from the last purchase to `as_of` (None if the member never bought).
    pub recency_days: Option<i64>,
    /// Orders in the window, as given.
    pub orders: u32,
    /// Money in the window, fen, as given.
    pub monetary_fen: i64,
    /// Scores; None when the member is not scored (no purchase in the window).
    pub scores: Option<RfmScores>,
    /// Segment; None exactly when `scores` is None.
    pub segment: Option<RfmSegment>,
    /// Why: "R 4 > mean 3.00, F 2 ≤ mean 2.40, M 5 > mean 3.00", or why the member is not scored.
    pub reason: String,
}

/// Which way a dimension's values improve; tells how to read [`DimensionSummary::score_cuts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Lower values score higher (recency): score ≥ s iff value < cut.
    Lower,
    /// Higher values score higher (frequency, monetary): score ≥ s iff value > cut.
    Higher,
}

/// Population figures for one dimension: the means the segments compare against, and the cut values in
/// natural units (days, orders, fen) at which scores and high/low change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DimensionSummary {
    /// Which dimension.
    pub dimension: RfmDimension,
    /// How to read the cuts.
    pub better: Better,
    /// Sum of the scores over scored members (the mean is `score_sum / scored`, kept exact).
    pub score_sum: u64,
    /// Mean score of scored members (0 when nobody is scored).
    pub mean_score: f64,
    /// Mean raw value of scored members (days, orders or fen).
    pub mean_value: f64,
    /// `score_cuts[s - 2]` for s = 2..=5: score ≥ s iff the value is beyond it (see [`Better`]).
    /// Empty when nobody is scored.
    pub score_cuts: Vec<i64>,
    /// Lowest score that counts as high (the smallest integer strictly above the mean); None if no score
    /// can be high (nobody scored, or everybody has the same score).
    pub high_from_score: Option<u8>,
    /// The cut in natural units for being high: high iff the value is beyond it (see [`Better`]).
    pub high_cut: Option<i64>,
}

impl DimensionSummary {
    /// Whether a raw value counts as high under this population's cuts.
    pub fn is_high_value(&self, value: i64) -> bool {
        match (self.high_cut, self.better) {
            (Some(c), Better::Lower) => value < c,
            (Some(c), Better::Higher) => value > c,
            (None, _) => false,
        }
    }
}

/// Member count of one segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentCount {
    /// The segment.
    pub segment: RfmSegment,
    /// Its stable code.
    pub code: &'static str,
    /// Its Chinese name.
    pub name_zh: &'static str,
    /// Its English name.
    pub name_en: &'static str,
    /// Members in it.
    pub count: u64,
}

/// Population summary: counts per segment, means and cuts; the RFM grid reads this.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RfmSummary {
    /// The day scored.
    pub as_of: NaiveDate,
    /// Window length used.
    pub window_days: u32,
    /// Members scored (bought in the window).
    pub scored: u64,
    /// Members not scored.
    pub unscored: u64,
    /// All eight segments in [`RfmSegment::ALL`] order, with counts (zeros included).
    pub segments: Vec<SegmentCount>,
    /// Recency figures.
    pub recency: DimensionSummary,
    /// Frequency figures.
    pub frequency: DimensionSummary,
    /// Monetary figures.
    pub monetary: DimensionSummary,
}

impl RfmSummary {
    /// The summary of one dimension.
    pub fn dimension(&self, d: RfmDimension) -> &DimensionSummary {
        match d {
            RfmDimension::Recency => &self.recency,
            RfmDimension::Frequency => &self.frequency,
            RfmDimension::Monetary => &self.monetary,
        }
    }
}

/// Everything one RFM run produces: per-member results in input order, and the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RfmReport {
    /// One entry per input row, same order.
    pub members: Vec<RfmMember>,
    /// Counts, means, cuts.
    pub summary: RfmSummary,
}

/// Why a row is left out of scoring (kept as data so the hot path does not format strings).
#[derive(Clone, Copy)]
enum Exclusion {
    NeverBought,
    AfterAsOf(NaiveDate),
    OutsideWindow(i64),
    NoOrders,
}

impl Exclusion {
    fn text(self, as_of: NaiveDate, window_days: u32) -> String {
        match self {
            Self::NeverBought => "not scored: no purchase yet".to_string(),
            Self::AfterAsOf(d) => {
                format!("not scored: last purchase {d} is after the scoring day {as_of}")
            }
            Self::OutsideWindow(rec) => {
                format!("not scored: last purchase {rec} days ago, outside the {window_days}-day window")
            }
            Self::NoOrders => "not scored: no orders counted in the window".to_string(),
        }
    }
}

/// Recency of a row that is scored, or why it is not.
fn recency_or_exclusion(m: &RfmInput, as_of: NaiveDate, window_days: u32) -> Result<i64, Exclusion> {
    let Some(last) = m.last_purchase else {
        return Err(Exclusion::NeverBought);
    };
    let rec = (as_of - last).num_days();
    if rec < 0 {
        Err(Exclusion::AfterAsOf(last))
    } else if rec >= i64::from(window_days) {
        Err(Exclusion::OutsideWindow(rec))
    } else if m.orders == 0 {
        Err(Exclusion::NoOrders)
    } else {
        Ok(rec)
    }
}

/// Sum of scores over sorted keys: every key scores 1, plus 1 for each cut it is above.
fn score_sum(sorted: &[i64], key_cuts: &[i64]) -> u64 {
    let above: usize = key_cuts.iter().map(|&c| sorted.len() - sorted.partition_point(|&k| k <= c)).sum();
    (sorted.len() + above) as u64
}

/// Cut values for scores 2..=5 from keys sorted ascending (worst first): cut[s-2] = sorted[ceil((s-1)n/5)-1].
fn cuts_from_sorted(sorted: &[i64]) -> Vec<i64> {
    let n = sorted.len();
    if n == 0 {
        return Vec::new();
    }
    (1..=4usize)
        .map(|q| {
            let k = (q * n).div_ceil(5); // >= 1 for n >= 1
            sorted[k - 1]
        })
        .collect()
}

/// Score of a key (higher key = better) given ascending cuts on keys.
fn score_of(key: i64, key_cuts: &[i64]) -> u8 {
    1 + key_cuts.iter().filter(|&&c| key > c).count() as u8
}

fn dimension_summary(
    dimension: RfmDimension,
    better: Better,
    key_cuts: &[i64],
    score_sum: u64,
    value_sum: i128,
    n: u64,
) -> DimensionSummary {
    // Keys are the values, negated for recency, so that "higher key = better" everywhere.
    let to_value = |k: i64| match better {
        Better::Lower => -k,
        Better::Higher => k,
    };
    let score_cuts: Vec<i64> = key_cuts.iter().map(|&k| to_value(k)).collect();
    let (mean_score, mean_value, high_from_score) = match score_sum.checked_div(n) {
        None => (0.0, 0.0, None),
        Some(q) => {
            let s = q + 1; // smallest integer s with s * n > score_sum
            let hf = if s <= 5 { Some(s as u8) } else { None };
            (score_sum as f64 / n as f64, value_sum as f64 / n as f64, hf)
        }
    };
    // Every score is ≥ 1, so s ≥ 2 and cut index s - 2 exists.
    let high_cut = high_from_score.and_then(|s| usize::from(s).checked_sub(2)).and_then(|i| score_cuts.get(i).copied());
    DimensionSummary { dimension, better, score_sum, mean_score, mean_value, score_cuts, high_from_score, high_cut }
}

/// Scores every member and assigns segments; see the module doc for the conventions.
///
/// Never fails: members outside the window are reported unscored, an empty input gives an empty report.
pub fn rfm(members: &[RfmInput], as_of: NaiveDate, params: &RfmParams) -> RfmReport {
    let window = params.window_days;
    // Keys (higher = better) of scored members; recency is negated.
    let mut r_keys = Vec::with_capacity(members.len());
    let mut f_keys = Vec::with_capacity(members.len());
    let mut m_keys = Vec::with_capacity(members.len());
    let mut value_sums = [0i128; 3];
    for m in members {
        if let Ok(rec) = recency_or_exclusion(m, as_of, window) {
            r_keys.push(-rec);
            f_keys.push(i64::from(m.orders));
            m_keys.push(m.monetary_fen);
            value_sums[0] += i128::from(rec);
            value_sums[1] += i128::from(m.orders);
            value_sums[2] += i128::from(m.monetary_fen);
        }
    }
    let n = r_keys.len() as u64;
    r_keys.par_sort_unstable();
    f_keys.par_sort_unstable();
    m_keys.par_sort_unstable();
    let (rc, fc, mc) = (cuts_from_sorted(&r_keys), cuts_from_sorted(&f_keys), cuts_from_sorted(&m_keys));
    let sums = [score_sum(&r_keys, &rc), score_sum(&f_keys, &fc), score_sum(&m_keys, &mc)];
    drop((r_keys, f_keys, m_keys));

    let recency = dimension_summary(RfmDimension::Recency, Better::Lower, &rc, sums[0], value_sums[0], n);
    let frequency = dimension_summary(RfmDimension::Frequency, Better::Higher, &fc, sums[1], value_sums[1], n);
    let monetary = dimension_summary(RfmDimension::Monetary, Better::Higher, &mc, sums[2], value_sums[2], n);

    // The means are the same for every member: format them once.
    let (rmean, fmean, mmean) = (
        format!("{:.2}", recency.mean_score),
        format!("{:.2}", frequency.mean_score),
        format!("{:.2}", monetary.mean_score),
    );
    let cmp = |score: u8, sum: u64| -> (bool, &'static str) {
        // Exact: score > sum / n  <=>  score * n > sum.
        let high = u64::from(score) * n > sum;
        (high, if high { ">" } else { "≤" })
    };
    let out: Vec<RfmMember> = members
        .par_iter()
        .map(|m| {
            let recency_days = m.last_purchase.map(|d| (as_of - d).num_days());
            let rec = match recency_or_exclusion(m, as_of, window) {
                Ok(rec) => rec,
                Err(e) => {
                    return RfmMember {
                        member_id: m.member_id,
                        recency_days,
                        orders: m.orders,
                        monetary_fen: m.monetary_fen,
                        scores: None,
                        segment: None,
                        reason: e.text(as_of, window),
                    };
                }
            };
            let r = score_of(-rec, &rc);
            let f = score_of(i64::from(m.orders), &fc);
            let mm = score_of(m.monetary_fen, &mc);
            let (rh, ro) = cmp(r, sums[0]);
            let (fh, fo) = cmp(f, sums[1]);
            let (mh, mo) = cmp(mm, sums[2]);
            let reason = format!("R {r} {ro} mean {rmean}, F {f} {fo} mean {fmean}, M {mm} {mo} mean {mmean}");
            RfmMember {
                member_id: m.member_id,
                recency_days,
                orders: m.orders,
                monetary_fen: m.monetary_fen,
                scores: Some(RfmScores { r, f, m: mm, r_high: rh, f_high: fh, m_high: mh }),
                segment: Some(RfmSegment::from_flags(rh, fh, mh)),
                reason,
            }
        })
        .collect();

    let mut counts = [0u64; 8];
    for m in &out {
        if let Some(s) = m.segment {
            counts[s as usize] += 1;
        }
    }
    let segments = RfmSegment::ALL
        .iter()
        .map(|&s| SegmentCount {
            segment: s,
            code: s.code(),
            name_zh: s.name_zh(),
            name_en: s.name_en(),
            count: counts[s as usize],
        })
        .collect();
    let summary = RfmSummary {
        as_of,
        window_days: window,
        scored: n,
        unscored: members.len() as u64 - n,
        segments,
        recency,
        frequency,
        monetary,
    };
    RfmReport { members: out, summary }
}

/// One dimension whose high/low flag differs between two results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DimensionFlip {
    /// The dimension.
    pub dimension: RfmDimension,
    /// High before.
    pub was_high: bool,
    /// High after.
    pub now_high: bool,
    /// Raw value before (days, orders or fen).
    pub before_value: i64,
    /// Raw value after.
    pub after_value: i64,
    /// The natural-unit cut for "high" in the later population (see [`DimensionSummary::high_cut`]).
    pub cut: Option<i64>,
    /// True when the member's own value would already have been on the new side of the new cut: the flip
    /// came from the population (the cut moved), not from the member.
    pub cut_moved: bool,
}

/// Explanation of a member's segment change between two RFM runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentChange {
    /// The member.
    pub member_id: i64,
    /// Segment in the earlier run (None = not scored then).
    pub from: Option<RfmSegment>,
    /// Segment in the later run.
    pub to: Option<RfmSegment>,
    /// Dimensions whose high/low flag flipped (empty when both runs scored the member in one segment).
    pub flips: Vec<DimensionFlip>,
    /// "重要保持客户 → 重要挽留客户: recency 60 → 95 days crossed 92 days (R high now needs < 92 days)".
    pub text: String,
}

/// Money in fen as "¥1234.56" (sign kept), for reasons.
pub(crate) fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let a = fen.unsigned_abs();
    format!("{sign}¥{}.{:02}", a / 100, a % 100)
}

fn value_of(m: &RfmMember, d: RfmDimension) -> i64 {
    match d {
        RfmDimension::Recency => m.recency_days.unwrap_or(0),
        RfmDimension::Frequency => i64::from(m.orders),
        RfmDimension::Monetary => m.monetary_fen,
    }
}

fn flip_text(f: &DimensionFlip) -> String {
    let (b, a) = (f.before_value, f.after_value);
    let Some(c) = f.cut else {
        return format!(
            "{} is high for nobody now (every member has the same {} score)",
            f.dimension.letter(),
            f.dimension.letter()
        );
    };
    let needs = match f.dimension {
        RfmDimension::Recency => format!("R high now needs < {c} days"),
        RfmDimension::Frequency => format!("F high now needs > {c} orders"),
        RfmDimension::Monetary => format!("M high now needs > {}", yuan(c)),
    };
    let moved = if f.cut_moved { "; the cut moved, not the member" } else { "" };
    match f.dimension {
        RfmDimension::Recency => {
            let verb = if f.now_high { "came under" } else { "crossed" };
            format!("recency {b} → {a} days {verb} {c} days ({needs}{moved})")
        }
        RfmDimension::Frequency => {
            let verb = if f.now_high { "rose above" } else { "fell to or below" };
            format!("orders {b} → {a} {verb} {c} ({needs}{moved})")
        }
        RfmDimension::Monetary => {
            let verb = if f.now_high { "rose above" } else { "fell to or below" };
            format!("spend {} → {} {verb} {} ({needs}{moved})", yuan(b), yuan(a), yuan(c))
        }
    }
}

fn seg_name(s: Option<RfmSegment>) -> &'static str {
    s.map_or("not scored", RfmSegment::name_zh)
}

/// Explains why a member's segment changed between two runs, naming each dimension that flipped and the
/// value (days, orders, yuan) at which it flips in the later run.
///
/// `after_summary` is the summary of the run `after` comes from: its cuts are the thresholds quoted. The
/// two results should be the same member; if they are not, the text says so.
pub fn explain_segment_change(before: &RfmMember, after: &RfmMember, after_summary: &RfmSummary) -> SegmentChange {
    let (from, to) = (before.segment, after.segment);
    let head = format!("{} → {}", seg_name(from), seg_name(to));
    let mut flips = Vec::new();
    let text = if before.member_id != after.member_id {
        format!("results are for different members ({} and {})", before.member_id, after.member_id)
    } else {
        match (before.scores, after.scores) {
            (_, None) => format!("{head}: {}", after.reason),
            (None, Some(_)) => format!("{head}: bought in the window again ({})", after.reason),
            (Some(b), Some(a)) => {
                let pairs = [
                    (RfmDimension::Recency, b.r_high, a.r_high),
                    (RfmDimension::Frequency, b.f_high, a.f_high),
                    (RfmDimension::Monetary, b.m_high, a.m_high),
                ];
                for (d, was, now) in pairs {
                    if was != now {
                        let ds = after_summary.dimension(d);
                        let before_value = value_of(before, d);
                        flips.push(DimensionFlip {
                            dimension: d,
                            was_high: was,
                            now_high: now,
                            before_value,
                            after_value: value_of(after, d),
                            cut: ds.high_cut,
                            cut_moved: ds.high_cut.is_some() && ds.is_high_value(before_value) == now,
                        });
                    }
                }
                if flips.is_empty() {
                    format!("unchanged: {}", seg_name(to))
                } else {
                    let parts: Vec<String> = flips.iter().map(flip_text).collect();
                    format!("{head}: {}", parts.join("; "))
                }
            }
        }
    };
    SegmentChange { member_id: after.member_id, from, to, flips, text }
}

#[cfg(test)]
mod tests;
