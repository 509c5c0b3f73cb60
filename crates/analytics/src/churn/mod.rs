//! Churn risk (流失风险): a supervised model of "will this member stop buying?", trained on the
//! shop's own history and validated on a strictly later period.
//!
//! **Population.** At a cutoff day `c`, the population is every member with at least one purchase on or
//! before `c` (a member who never bought cannot lapse; lifecycle stages handle prospects).
//!
//! **Label.** `churned(c) = no purchase in (c, c + N]`, `N = horizon_days` (default 90). Refunds do not
//! undo a purchase for the label.
//!
//! **Features** (see [`churn_features`]), computed from records dated on or before `c` only, with
//! `W = window_days` (default 90) and `S = engagement_short_days` (default 30):
//! recency (days since the last purchase); orders and spend in `(c−W, c]` and their trend against
//! `(c−2W, c−W]` as `ln(1+recent) − ln(1+prior)`; lifetime orders; views, add-to-carts, check-ins and
//! campaign clicks in the last S and the last W days; points earned and redeemed in the last W days;
//! refunds in the last W days and the refunded share of lifetime spend; tenure in days. Counts and money
//! enter as `ln(1+x)`. Each feature is standardized with the training mean and (population) standard
//! deviation, stored in the model; a feature constant in training is standardized to 0.
//!
//! **Model.** L2-regularised logistic regression (`linfa-logistic`, L-BFGS). linfa minimises the *summed*
//! log-loss plus `α/2·‖w‖²`; we pass `α = l2_penalty · n`, so `l2_penalty` is the penalty on the *mean*
//! log-loss and means the same thing at any population size. The intercept is not penalised.
//!
//! **Validation (out of time).** With `as_of` the last day whose data may be read:
//! train at `c₁ = as_of − 2N` (labels from `(c₁, c₁+N]`), evaluate at `c₂ = as_of − N` (features on or
//! before `c₂`, labels from `(c₂, as_of]`). The validation model never sees the evaluation labels. Reported:
//! ROC-AUC, PR-AUC (average precision, see [`metrics`]), n and positive rate of both periods.
//! **Scoring model.** By default the model is then refitted at `c₂` with the same settings (the latest
//! period whose outcome is fully known), and that refit scores members at `as_of`; the metrics describe
//! the procedure one period back. With `refit_at_latest_cutoff = false` the validated `c₁` model itself
//! scores. Either way nothing dated after `as_of` is read.
//!
//! **Reasons.** For a scored member, a feature's contribution is `coefficient × standardized value`
//! (its share of the log-odds relative to an average member); the top positive contributions are
//! phrased in words ("no purchase for 120 days", "orders down 60% vs previous 90 days").
//!
//! References: Hosmer, Lemeshow & Sturdivant, *Applied Logistic Regression* (3rd ed., 2013); Fader,
//! Hardie & Lee (2005) on recency/frequency as the core of non-contractual churn; Hanley & McNeil (1982)
//! for AUC.

mod features;
pub mod metrics;
#[cfg(test)]
mod tests;

pub use features::{ChurnFeatures, EngagementCounts, churn_features, churn_label};
pub use metrics::{MetricError, average_precision, roc_auc};

use std::borrow::Cow;

use chrono::{Days, NaiveDate};
use features::{FEATURES, N_FEATURES};
use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2, ShapeBuilder};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// An amount of money on a day: a purchase (order total paid) or a refund, in fen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatedAmount {
    /// UTC day of the order or refund.
    pub day: NaiveDate,
    /// Amount in fen; negative values are read as 0.
    pub amount_fen: i64,
}

/// A points-ledger movement on a day: positive when points were credited, negative when redeemed or
/// expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointsMovement {
    /// UTC day of the movement.
    pub day: NaiveDate,
    /// Signed points.
    pub points: i64,
}

/// The engagement signals the churn model counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngagementKind {
    /// `page_view` or `product_view`.
    View,
    /// `add_to_cart`.
    Cart,
    /// `check_in`.
    CheckIn,
    /// `campaign_click`.
    CampaignClick,
}

impl EngagementKind {
    /// Maps a stored `event_type` to the kind the model counts; other event types are not counted.
    pub fn from_event_type(event_type: &str) -> Option<Self> {
        match event_type {
            "page_view" | "product_view" => Some(Self::View),
            "add_to_cart" => Some(Self::Cart),
            "check_in" => Some(Self::CheckIn),
            "campaign_click" => Some(Self::CampaignClick),
            _ => None,
        }
    }
}

/// `count` engagement events of one kind on one day (a `GROUP BY member, day, kind` row; a single
/// event is `count = 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngagementRecord {
    /// UTC day of the events.
    pub day: NaiveDate,
    /// What kind of event.
    pub kind: EngagementKind,
    /// How many such events that day.
    pub count: u32,
}

/// One member's compact history, as the store aggregates it. Records may come in any order; anything
/// dated after the day being scored is ignored, so a full history can be passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnHistory {
    /// The member.
    pub member_id: i64,
    /// Registration day (tenure is measured from it).
    pub registered_on: NaiveDate,
    /// Paid orders: day and total in fen.
    pub purchases: Vec<DatedAmount>,
    /// Refunds: day and amount in fen.
    pub refunds: Vec<DatedAmount>,
    /// Engagement events counted per day and kind.
    pub engagement: Vec<EngagementRecord>,
    /// Points-ledger movements.
    pub points: Vec<PointsMovement>,
}

/// Members' histories by position, handed to the model one at a time: a caller holding its members' rows
/// in another form (a million members' purchases, points and engagement) builds each history when asked
/// instead of keeping a second copy of them all.
pub trait ChurnHistories: Sync {
    /// How many members there are.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The history of the member at position `i < len()`.
    fn history(&self, i: usize) -> Cow<'_, ChurnHistory>;
}

impl ChurnHistories for [ChurnHistory] {
    fn len(&self) -> usize {
        <[ChurnHistory]>::len(self)
    }
    fn history(&self, i: usize) -> Cow<'_, ChurnHistory> {
        Cow::Borrowed(&self[i])
    }
}

/// Settings of the churn model. Defaults: 90-day horizon and window, 30-day short engagement window,
/// `l2_penalty` 1e-3, refit at the latest cutoff, at least 50 members and 10 of each class per period,
/// three reasons per member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChurnParams {
    /// N: a member has churned at `c` if they make no purchase in `(c, c + N]`.
    pub horizon_days: u32,
    /// W: the window for frequency, spend, points and refunds, and for their trend vs the W days before.
    pub window_days: u32,
    /// S: the short engagement window (events in the last S days, besides the last W).
    pub engagement_short_days: u32,
    /// L2 penalty on the mean log-loss (`α/2·‖w‖²` with `α = l2_penalty`); 0 disables it.
    pub l2_penalty: f64,
    /// L-BFGS iteration cap.
    pub max_iterations: u64,
    /// Stop when the gradient norm of the mean log-loss falls below this.
    pub gradient_tolerance: f64,
    /// Score with a refit at `as_of − N` (true) or with the validated model at `as_of − 2N` (false).
    pub refit_at_latest_cutoff: bool,
    /// Fewest members in a period's population to fit or evaluate on.
    pub min_members: usize,
    /// Fewest churned and fewest retained members a period needs.
    pub min_per_class: usize,
    /// How many reasons to give per scored member.
    pub top_reasons: usize,
}

impl Default for ChurnParams {
    fn default() -> Self {
        Self {
            horizon_days: 90,
            window_days: 90,
            engagement_short_days: 30,
            l2_penalty: 1e-3,
            max_iterations: 200,
            gradient_tolerance: 1e-6,
            refit_at_latest_cutoff: true,
            min_members: 50,
            min_per_class: 10,
            top_reasons: 3,
        }
    }
}

/// Why a churn model could not be trained or a member not scored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChurnError {
    /// A parameter is out of range.
    #[error("invalid churn parameter: {0}")]
    InvalidParams(String),
    /// `as_of` minus twice the horizon is before the calendar's start.
    #[error("as_of {as_of} minus {days} days is out of the calendar range")]
    DateOutOfRange {
        /// The requested as-of day.
        as_of: NaiveDate,
        /// Days that were to be subtracted.
        days: u64,
    },
    /// Too few members had purchased by a cutoff to fit or evaluate.
    #[error("only {found} members bought on or before {cutoff}; need at least {needed}")]
    TooFewMembers {
        /// The cutoff day of the period.
        cutoff: NaiveDate,
        /// Members in the population.
        found: usize,
        /// The `min_members` setting.
        needed: usize,
    },
    /// One outcome is (nearly) absent in a period: all churned, or none did.
    #[error("period at {cutoff}: {churned} churned and {retained} retained; need at least {needed} of each")]
    TooFewInClass {
        /// The cutoff day of the period.
        cutoff: NaiveDate,
        /// Members labelled churned.
        churned: usize,
        /// Members labelled retained.
        retained: usize,
        /// The `min_per_class` setting.
        needed: usize,
    },
    /// The logistic-regression solver failed.
    #[error("logistic regression failed: {0}")]
    Fit(String),
    /// A validation metric could not be computed.
    #[error("validation metric: {0}")]
    Metric(#[from] MetricError),
    /// The member has no purchase on or before the scoring day, so is outside the churn population.
    #[error("member {member_id} has no purchase on or before {as_of}")]
    NotInPopulation {
        /// The member.
        member_id: i64,
        /// The scoring day.
        as_of: NaiveDate,
    },
    /// A stored model does not have this version's feature set.
    #[error("model has {found} features, this version computes {expected}")]
    ModelShape {
        /// Features in the model.
        found: usize,
        /// Features this code computes.
        expected: usize,
    },
}

/// One feature's standardization and fitted coefficient (on the standardized scale, so coefficients are
/// comparable: the change in log-odds of churn per standard deviation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureCoefficient {
    /// Feature name, e.g. `orders_trend_last_90d_vs_prior_90d`.
    pub feature: String,
    /// Training mean of the (transformed) feature.
    pub mean: f64,
    /// Training standard deviation; 0 means the feature was constant and is ignored.
    pub sd: f64,
    /// Log-odds of churn per standard deviation.
    pub coefficient: f64,
}

/// A fitted standardized logistic regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedChurnLogit {
    /// Log-odds of churn for a member at every feature's mean.
    pub intercept: f64,
    /// Per-feature standardization and coefficient, in feature order.
    pub features: Vec<FeatureCoefficient>,
}

/// Size and churn rate of one period's population.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PeriodStats {
    /// Feature cutoff day.
    pub cutoff: NaiveDate,
    /// Last day of the label window `(cutoff, label_end]`.
    pub label_end: NaiveDate,
    /// Members in the population.
    pub members: usize,
    /// Share labelled churned.
    pub positive_rate: f64,
}

/// Out-of-time validation of the training procedure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnValidation {
    /// The period the validation model was trained on.
    pub train: PeriodStats,
    /// The later period it was evaluated on.
    pub evaluation: PeriodStats,
    /// ROC-AUC on the evaluation period (0.5 = no better than chance).
    pub roc_auc: f64,
    /// Average precision on the evaluation period; compare with its positive rate.
    pub pr_auc: f64,
    /// The model that was validated (trained at the earlier cutoff).
    pub model: FittedChurnLogit,
}

/// A trained churn model with its validation: what the 360 profile shows and what scores members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnModel {
    /// Settings it was trained with (windows are needed again to score).
    pub params: ChurnParams,
    /// Last day of data the training read.
    pub as_of: NaiveDate,
    /// Cutoff whose features and labels the scoring model was fitted on.
    pub fitted_at: NaiveDate,
    /// The scoring model.
    pub model: FittedChurnLogit,
    /// How the procedure did one period back.
    pub validation: ChurnValidation,
}

/// A member's churn risk at a day, with why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnScore {
    /// The member.
    pub member_id: i64,
    /// Probability of no purchase in the next `horizon_days`.
    pub probability: f64,
    /// The features pushing the risk up most, strongest first (only positive contributions).
    pub top_reasons: Vec<ChurnReason>,
}

/// One reason behind a churn score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnReason {
    /// Feature name.
    pub feature: String,
    /// Its contribution to the log-odds (coefficient × standardized value), > 0.
    pub contribution: f64,
    /// The member's value in words, e.g. "no purchase for 120 days".
    pub text: String,
}

fn validate(p: &ChurnParams) -> Result<(), ChurnError> {
    let bad = |m: &str| Err(ChurnError::InvalidParams(m.to_owned()));
    if p.horizon_days == 0 || p.window_days == 0 || p.engagement_short_days == 0 {
        return bad("horizon_days, window_days and engagement_short_days must be at least 1");
    }
    if !p.l2_penalty.is_finite() || p.l2_penalty < 0.0 {
        return bad("l2_penalty must be finite and >= 0");
    }
    if !p.gradient_tolerance.is_finite() || p.gradient_tolerance <= 0.0 {
        return bad("gradient_tolerance must be finite and > 0");
    }
    if p.max_iterations == 0 {
        return bad("max_iterations must be at least 1");
    }
    if p.min_per_class == 0 || p.min_members < 2 {
        return bad("min_per_class must be >= 1 and min_members >= 2");
    }
    Ok(())
}

/// One period's design matrix (raw transformed features, column-major: a column per feature) and labels.
struct Period {
    stats: PeriodStats,
    x: Array2<f64>,
    y: Vec<bool>,
}

/// The design matrices of several periods, `(cutoff, label end)` each, checked in the order given.
///
/// Two passes over the members, a chunk at a time in parallel. The first labels them (which says who is in
/// each period's population, and so every matrix's size); the second writes each chunk's feature rows
/// straight into its own rows of the matrices, which are allocated once at their final size. At a million
/// members the matrices are the churn stage's largest allocation (about 300 MB for two periods): built from
/// per-chunk parts or per-member rows, they needed that much again while they were copied, and the freed
/// parts stayed with the allocator through the fit.
fn build_periods<const K: usize>(
    histories: &(impl ChurnHistories + ?Sized),
    periods: [(NaiveDate, NaiveDate); K],
    p: &ChurnParams,
) -> Result<[Period; K], ChurnError> {
    const CHUNK: usize = 20_000;
    let members = histories.len();
    let chunks = members.div_ceil(CHUNK);
    let rows_of = |c: usize| c * CHUNK..members.min((c + 1) * CHUNK);
    // Each chunk's labels, per period, in member order: a member has a label exactly when it has features
    // (both need a purchase on or before the cutoff).
    let labels: Vec<[Vec<bool>; K]> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let mut part: [Vec<bool>; K] = std::array::from_fn(|_| Vec::new());
            for i in rows_of(c) {
                let h = histories.history(i);
                for ((cutoff, _), y) in periods.iter().zip(part.iter_mut()) {
                    y.extend(churn_label(&h, *cutoff, p.horizon_days));
                }
            }
            part
        })
        .collect();
    let mut sizes = [(0usize, 0usize); K];
    for (k, (cutoff, _)) in periods.iter().enumerate() {
        let n: usize = labels.iter().map(|part| part[k].len()).sum();
        if n < p.min_members {
            return Err(ChurnError::TooFewMembers { cutoff: *cutoff, found: n, needed: p.min_members });
        }
        let churned = labels.iter().map(|part| part[k].iter().filter(|&&l| l).count()).sum::<usize>();
        let retained = n - churned;
        if churned < p.min_per_class || retained < p.min_per_class {
            return Err(ChurnError::TooFewInClass { cutoff: *cutoff, churned, retained, needed: p.min_per_class });
        }
        sizes[k] = (n, churned);
    }
    let mut xs: [Array2<f64>; K] = std::array::from_fn(|k| Array2::zeros((sizes[k].0, N_FEATURES).f()));
    // Every chunk's rows of every column, as disjoint slices: `targets[c][k][j]` is chunk `c`'s part of
    // column `j` of period `k`.
    let mut targets: Vec<[Vec<&mut [f64]>; K]> =
        (0..chunks).map(|_| std::array::from_fn(|_| Vec::with_capacity(N_FEATURES))).collect();
    for (k, x) in xs.iter_mut().enumerate() {
        let n = sizes[k].0;
        let flat = x.as_slice_memory_order_mut().ok_or_else(|| ChurnError::Fit("design matrix layout".into()))?;
        for column in flat.chunks_mut(n.max(1)) {
            let mut rest = column;
            for (target, part) in targets.iter_mut().zip(&labels) {
                let (mine, after) = std::mem::take(&mut rest).split_at_mut(part[k].len());
                target[k].push(mine);
                rest = after;
            }
        }
    }
    let changed = || ChurnError::Fit("a member's history changed between the two passes".into());
    targets.into_par_iter().enumerate().try_for_each(|(c, mut target)| {
        let mut next = [0usize; K];
        for i in rows_of(c) {
            let h = histories.history(i);
            for (k, (cutoff, _)) in periods.iter().enumerate() {
                let Some(f) = churn_features(&h, *cutoff, p) else { continue };
                let row = next[k];
                if row >= labels[c][k].len() {
                    return Err(changed());
                }
                for (column, v) in target[k].iter_mut().zip(f.vector()) {
                    column[row] = v;
                }
                next[k] += 1;
            }
        }
        if next.iter().zip(&labels[c]).any(|(&n, y)| n != y.len()) {
            return Err(changed());
        }
        Ok(())
    })?;
    let mut ys: [Vec<bool>; K] = std::array::from_fn(|k| Vec::with_capacity(sizes[k].0));
    for part in labels {
        for (y, part) in ys.iter_mut().zip(part) {
            y.extend(part);
        }
    }
    let mut out = Vec::with_capacity(K);
    for ((((cutoff, label_end), x), y), (n, churned)) in periods.into_iter().zip(xs).zip(ys).zip(sizes) {
        out.push(Period {
            stats: PeriodStats { cutoff, label_end, members: n, positive_rate: churned as f64 / n as f64 },
            x,
            y,
        });
    }
    out.try_into().map_err(|_| ChurnError::Fit("period count".into()))
}

/// Fit the model on one period, standardizing its matrix in place (a standardized copy was another matrix
/// of the period's size at the churn stage's peak).
fn fit(period: Period, p: &ChurnParams) -> Result<FittedChurnLogit, ChurnError> {
    let Period { mut x, y, .. } = period;
    let n = x.nrows();
    let nf = n as f64;
    let mut coefs: Vec<FeatureCoefficient> = FEATURES
        .iter()
        .zip(x.columns())
        .map(|(f, col)| {
            let mean = col.sum() / nf;
            let var = col.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / nf;
            let sd = var.sqrt();
            // A (numerically) constant feature carries no information: standardize it to 0.
            let sd = if sd.is_finite() && sd > 1e-12 * (1.0 + mean.abs()) { sd } else { 0.0 };
            FeatureCoefficient { feature: f.name(p), mean, sd, coefficient: 0.0 }
        })
        .collect();
    // Column-major: linfa's gradient is `xᵀ·r`, which ndarray (without BLAS) computes column by column;
    // contiguous columns make that a streaming pass instead of a strided one (fits ~2× faster).
    for (mut col, c) in x.columns_mut().into_iter().zip(&coefs) {
        col.mapv_inplace(|v| standardize(v, c));
    }
    let dataset = Dataset::new(x, Array1::from(y));
    let fitted = LogisticRegression::default()
        .alpha(p.l2_penalty * nf)
        .gradient_tolerance(p.gradient_tolerance * nf)
        .max_iterations(p.max_iterations)
        .fit(&dataset)
        .map_err(|e| ChurnError::Fit(e.to_string()))?;
    // linfa calls the more frequent class "positive"; turn its coefficients into log-odds of churn.
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    for (c, w) in coefs.iter_mut().zip(fitted.params().iter()) {
        c.coefficient = sign * w;
    }
    let intercept = sign * fitted.intercept();
    if !intercept.is_finite() || coefs.iter().any(|c| !c.coefficient.is_finite()) {
        return Err(ChurnError::Fit("non-finite coefficients".into()));
    }
    Ok(FittedChurnLogit { intercept, features: coefs })
}

fn standardize(v: f64, c: &FeatureCoefficient) -> f64 {
    if c.sd > 0.0 { (v - c.mean) / c.sd } else { 0.0 }
}

fn sigmoid(t: f64) -> f64 {
    if t >= 0.0 {
        1.0 / (1.0 + (-t).exp())
    } else {
        let e = t.exp();
        e / (1.0 + e)
    }
}

impl FittedChurnLogit {
    /// Per-feature contributions to the log-odds for one raw feature vector.
    fn contributions(&self, v: &[f64; N_FEATURES]) -> [f64; N_FEATURES] {
        let mut out = [0.0; N_FEATURES];
        for ((o, x), c) in out.iter_mut().zip(v).zip(&self.features) {
            *o = c.coefficient * standardize(*x, c);
        }
        out
    }

    fn probability(&self, v: &[f64; N_FEATURES]) -> f64 {
        sigmoid(self.intercept + self.contributions(v).iter().sum::<f64>())
    }

    fn check_shape(&self) -> Result<(), ChurnError> {
        if self.features.len() == N_FEATURES {
            Ok(())
        } else {
            Err(ChurnError::ModelShape { found: self.features.len(), expected: N_FEATURES })
        }
    }
}

fn days_before(d: NaiveDate, days: u64) -> Result<NaiveDate, ChurnError> {
    d.checked_sub_days(Days::new(days)).ok_or(ChurnError::DateOutOfRange { as_of: d, days })
}

/// Trains the churn model on `histories` using no data after `as_of`, validates it out of time, and
/// returns the model that scores members at `as_of` (see the module doc for the periods).
pub fn train_and_evaluate(
    histories: &[ChurnHistory],
    as_of: NaiveDate,
    params: &ChurnParams,
) -> Result<ChurnModel, ChurnError> {
    train_and_evaluate_on(histories, as_of, params)
}

/// [`train_and_evaluate`] on histories built as they are needed.
pub fn train_and_evaluate_on(
    histories: &(impl ChurnHistories + ?Sized),
    as_of: NaiveDate,
    params: &ChurnParams,
) -> Result<ChurnModel, ChurnError> {
    validate(params)?;
    let n = u64::from(params.horizon_days);
    let c2 = days_before(as_of, n)?;
    let c1 = days_before(as_of, 2 * n)?;
    let [train, evaluation] = build_periods(histories, [(c1, c2), (c2, as_of)], params)?;
    let train_stats = train.stats;
    // The training matrix is freed by its fit, before the evaluation period is scored.
    let validated = fit(train, params)?;
    let scores: Vec<f64> = evaluation
        .x
        .rows()
        .into_iter()
        .map(|r| {
            let mut v = [0.0; N_FEATURES];
            for (slot, x) in v.iter_mut().zip(r) {
                *slot = *x;
            }
            validated.probability(&v)
        })
        .collect();
    let roc = roc_auc(&scores, &evaluation.y)?;
    let pr = average_precision(&scores, &evaluation.y)?;
    let evaluation_stats = evaluation.stats;
    let (model, fitted_at) =
        if params.refit_at_latest_cutoff { (fit(evaluation, params)?, c2) } else { (validated.clone(), c1) };
    Ok(ChurnModel {
        params: params.clone(),
        as_of,
        fitted_at,
        model,
        validation: ChurnValidation {
            train: train_stats,
            evaluation: evaluation_stats,
            roc_auc: roc,
            pr_auc: pr,
            model: validated,
        },
    })
}

impl ChurnModel {
    /// The member's churn probability over the next `horizon_days` after `as_of`, from data on or before
    /// `as_of`, with the strongest reasons.
    pub fn score(&self, history: &ChurnHistory, as_of: NaiveDate) -> Result<ChurnScore, ChurnError> {
        self.model.check_shape()?;
        let f = churn_features(history, as_of, &self.params)
            .ok_or(ChurnError::NotInPopulation { member_id: history.member_id, as_of })?;
        let v = f.vector();
        let contributions = self.model.contributions(&v);
        let logit = self.model.intercept + contributions.iter().sum::<f64>();
        let mut order: Vec<usize> = (0..N_FEATURES).filter(|&i| contributions[i] > 0.0).collect();
        order.sort_by(|&a, &b| contributions[b].total_cmp(&contributions[a]).then(a.cmp(&b)));
        let top_reasons = order
            .into_iter()
            .take(self.params.top_reasons)
            .map(|i| ChurnReason {
                feature: self.model.features[i].feature.clone(),
                contribution: contributions[i],
                text: FEATURES[i].phrase(&f, &self.params),
            })
            .collect();
        Ok(ChurnScore { member_id: history.member_id, probability: sigmoid(logit), top_reasons })
    }

    /// Scores every member in the population at `as_of` (in input order, in parallel); members with no
    /// purchase on or before `as_of` are left out.
    pub fn score_all(&self, histories: &[ChurnHistory], as_of: NaiveDate) -> Result<Vec<ChurnScore>, ChurnError> {
        self.model.check_shape()?;
        Ok(histories.par_iter().filter_map(|h| self.score(h, as_of).ok()).collect())
    }
}
