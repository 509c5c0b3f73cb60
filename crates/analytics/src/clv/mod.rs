//! Customer lifetime value (CLV): how many purchases a member will still make, whether they are still
//! "alive", what they will spend, and what that is worth today.
//!
//! Pipeline: each member's purchases → [`summarize`] → [`RepeatSummary`] (frequency, recency, age,
//! monetary value, in days and fen) → [`fit_bgnbd`] (purchase counts and drop-out, BG/NBD) and
//! [`fit_gamma_gamma`] (spend per purchase) on the whole shop → [`score`] per member.
//!
//! # CLV convention
//! As in the Python `lifetimes` package (`GammaGammaFitter.customer_lifetime_value` with `freq="D"`): a
//! month is 30 days, and over a horizon of H months with monthly discount rate d
//!
//! CLV = Σᵢ₌₁..H  m̂ · (E[Y(30·i) | x, tₓ, T] − E[Y(30·(i−1)) | x, tₓ, T]) / (1+d)ⁱ,
//!
//! where E[Y(t) | ·] is the BG/NBD conditional expected number of repeat purchases in the next t days and
//! m̂ the Gamma-Gamma expected spend per purchase. The purchases of month i are discounted by a full month i.
//!
//! # Probabilistic lifecycle
//! P(alive) from the BG/NBD model maps to a stage: below `churned_below` (default 0.2) churned (流失),
//! below `sleeping_below` (default 0.5) sleeping (沉睡), otherwise active (活跃). Unlike day-count rules this
//! adapts to each member's own rhythm: a weekly buyer silent for two months is sleeping, a twice-a-year
//! buyer is not.
//!
//! References: Fader, Hardie & Lee (2005) "Counting Your Customers the Easy Way: An Alternative to the
//! Pareto/NBD Model", Marketing Science 24(2); Fader, Hardie & Lee (2005) "RFM and CLV: Using Iso-Value
//! Curves for Customer Base Analysis", JMR 42(4); Fader & Hardie, notes 004, 021 and 025
//! (brucehardie.com); Davidson-Pilon et al., lifetimes 0.11.3.

mod bgnbd;
mod gamma_gamma;
mod optim;
mod special;
mod summary;

#[cfg(test)]
mod tests;

pub use bgnbd::{BgNbdFit, BgNbdParams, FrequencyBucket, fit_bgnbd};
pub use gamma_gamma::{GammaGammaFit, GammaGammaParams, fit_gamma_gamma};
pub use special::hyp2f1;
pub use summary::{Purchase, RepeatSummary, summarize};

use serde::{Deserialize, Serialize};

/// Why a CLV computation could not give a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize)]
pub enum ClvError {
    /// No customers were given.
    #[error("no customers to fit")]
    Empty,
    /// No customer has a repeat purchase (for Gamma-Gamma: one with a positive amount), so the model's
    /// parameters cannot be estimated.
    #[error("no customer has a repeat purchase: the model cannot be estimated")]
    NoRepeatPurchases,
    /// One input summary is inconsistent.
    #[error("customer summary #{index} is invalid: {reason}")]
    InvalidSummary {
        /// Position in the input slice.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A parameter or setting is outside its valid range.
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    /// The hypergeometric function could not be evaluated at these arguments.
    #[error("2F1({a}, {b}; {c}; {z}) cannot be evaluated: {reason}")]
    Hyp2f1 {
        /// First numerator parameter.
        a: f64,
        /// Second numerator parameter.
        b: f64,
        /// Denominator parameter.
        c: f64,
        /// Argument.
        z: f64,
        /// Why.
        reason: String,
    },
    /// The numerical optimizer failed outright (non-convergence is reported in the fit, not here).
    #[error("the likelihood maximisation failed: {0}")]
    Optimizer(String),
}

/// Settings of the CLV computation and fits. Defaults: 12 months, 1 % monthly discount, no penalizer,
/// sleeping below P(alive) 0.5, churned below 0.2.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClvParams {
    /// Horizon in months of 30 days.
    pub horizon_months: u32,
    /// Discount rate per month (0.01 = 1 %).
    pub monthly_discount: f64,
    /// L2 penalty on the parameters in both fits, as lifetimes' `penalizer_coef` (0 = plain maximum
    /// likelihood; 0.001–0.1 stabilises fits on small shops).
    pub penalizer: f64,
    /// P(alive) below this is "sleeping".
    pub sleeping_below: f64,
    /// P(alive) below this is "churned".
    pub churned_below: f64,
}

impl Default for ClvParams {
    fn default() -> Self {
        Self { horizon_months: 12, monthly_discount: 0.01, penalizer: 0.0, sleeping_below: 0.5, churned_below: 0.2 }
    }
}

/// Lifecycle stage read from the probability that the member is still active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AliveStage {
    /// 活跃: likely still buying.
    Active,
    /// 沉睡: more likely than not to have stopped, but not clearly gone.
    Sleeping,
    /// 流失: very likely gone.
    Churned,
}

impl AliveStage {
    /// The stage's Chinese name as operators see it.
    pub fn zh(&self) -> &'static str {
        match self {
            AliveStage::Active => "活跃",
            AliveStage::Sleeping => "沉睡",
            AliveStage::Churned => "流失",
        }
    }
}

/// The stage for a probability alive under the thresholds in `params` (churned is checked first).
pub fn alive_stage(prob_alive: f64, params: &ClvParams) -> AliveStage {
    if prob_alive < params.churned_below {
        AliveStage::Churned
    } else if prob_alive < params.sleeping_below {
        AliveStage::Sleeping
    } else {
        AliveStage::Active
    }
}

/// One member's CLV result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberClv {
    /// Expected repeat purchases over the horizon (undiscounted).
    pub expected_purchases: f64,
    /// Probability the member is still active (BG/NBD).
    pub prob_alive: f64,
    /// Expected spend per future purchase, fen (Gamma-Gamma; see [`score`] for the fallback).
    pub expected_value_fen: i64,
    /// Discounted value of the expected purchases over the horizon, fen.
    pub clv_fen: i64,
    /// Lifecycle stage from `prob_alive`.
    pub stage: AliveStage,
    /// Human-readable explanation of the figures.
    pub reason: String,
}

/// Score one member: expected purchases and P(alive) from BG/NBD, expected spend from Gamma-Gamma, CLV by
/// the convention in the module doc, and the stage. Without a Gamma-Gamma model, or when its population
/// mean does not exist (q ≤ 1), the member's own mean repeat spend is used (0 for a member without repeat
/// purchases), and the reason says so.
pub fn score(
    bgnbd: &BgNbdParams,
    gamma_gamma: Option<&GammaGammaParams>,
    summary: &RepeatSummary,
    params: &ClvParams,
) -> Result<MemberClv, ClvError> {
    if !(params.monthly_discount.is_finite() && params.monthly_discount > -1.0) {
        return Err(ClvError::InvalidParams(format!(
            "monthly_discount must be finite and > -1, got {}",
            params.monthly_discount
        )));
    }
    let (value, value_source) = match gamma_gamma.and_then(|g| g.expected_average_value(summary)) {
        Some(v) => (v, "Gamma-Gamma expected spend"),
        None => (summary.monetary_value, "own mean repeat spend (no spend model)"),
    };
    let mut clv = 0.0;
    let mut prev = 0.0;
    for i in 1..=params.horizon_months {
        let cum = bgnbd.expected_purchases(summary, 30.0 * f64::from(i))?;
        clv += value * (cum - prev) / (1.0 + params.monthly_discount).powf(f64::from(i));
        prev = cum;
    }
    let prob_alive = bgnbd.prob_alive(summary);
    let stage = alive_stage(prob_alive, params);
    let reason = format!(
        "{} repeat purchase days, last {} days after the first, {} days since the first; \
         P(alive) {:.2} → {} ({}); {:.2} purchases expected in {} months × {:.0} fen ({value_source}), \
         discounted at {}%/month",
        summary.frequency,
        summary.recency,
        summary.age,
        prob_alive,
        stage.zh(),
        match stage {
            AliveStage::Active => "active",
            AliveStage::Sleeping => "sleeping",
            AliveStage::Churned => "churned",
        },
        prev,
        params.horizon_months,
        value,
        params.monthly_discount * 100.0,
    );
    Ok(MemberClv {
        expected_purchases: prev,
        prob_alive,
        expected_value_fen: round_fen(value),
        clv_fen: round_fen(clv),
        stage,
        reason,
    })
}

fn round_fen(v: f64) -> i64 {
    // `as` saturates and maps NaN to 0; the values here are finite for valid parameters.
    v.round() as i64
}
