//! Gamma-Gamma model of spend per purchase (Fader, Hardie & Lee 2005, "RFM and CLV: Using Iso-Value Curves
//! for Customer Base Analysis", JMR 42(4); Fader & Hardie, "The Gamma-Gamma Model of Monetary Value", note
//! 025).
//!
//! A customer's purchase amounts are Gamma(p, ν) (shape p, rate ν), and ν varies across customers as
//! Gamma(q, v). Only the mean m of a customer's x repeat purchases is observed; its likelihood is (note 025
//! eq. 1a)
//!
//! L(p, q, v | x, m) = Γ(px+q) / (Γ(px) Γ(q)) · v^q m^(px−1) x^(px) / (v + xm)^(px+q),
//!
//! and the expected spend per purchase of a customer with (x, m) is (eq. 5)
//!
//! E[Z | x, m] = (q−1)/(px+q−1) · vp/(q−1) + px/(px+q−1) · m,
//!
//! a weighted mix of the population mean vp/(q−1) (defined only when q > 1) and the customer's own mean.
//!
//! # Fit
//! Maximum likelihood on ln(p, q, v) over the customers with x > 0 and m > 0 (those with m = 0, free repeat
//! orders only, are excluded and counted), with L-BFGS and the analytic gradient; the objective is the mean
//! negative log-likelihood + `penalizer · (p² + q² + v_scaled²)`. Amounts are divided by their mean during the
//! fit for conditioning (v is scaled back; with penalizer 0 this does not move the optimum). Patterns
//! (x, m) are deduplicated, the gamma-function terms evaluated once per distinct x, and the optimizer is the
//! one described in the BG/NBD module (L-BFGS, then Newton steps on the gradient; `converged` = final
//! gradient norm below 1e-6).
//!
//! The model assumes spend per purchase is independent of purchase frequency; the fit reports Pearson's
//! correlation between x and m as a check (FHL use it the same way: near zero supports the assumption).

use super::optim::{self, Objective};
use super::{ClvError, ClvParams, RepeatSummary};
use serde::{Deserialize, Serialize};
use statrs::function::gamma::{digamma, ln_gamma};
use std::collections::BTreeMap;

/// Fitted Gamma-Gamma parameters (money in fen).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GammaGammaParams {
    /// Shape of each purchase amount's gamma distribution.
    pub p: f64,
    /// Shape of the across-customer gamma distribution of the rate ν.
    pub q: f64,
    /// Rate of the across-customer gamma distribution of ν, in fen.
    pub v: f64,
}

/// A fitted Gamma-Gamma model and how the fit went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GammaGammaFit {
    /// The maximum-likelihood parameters.
    pub params: GammaGammaParams,
    /// Total log-likelihood of the customers used, in fen, without the penalty.
    pub log_likelihood: f64,
    /// L-BFGS iterations.
    pub iterations: u64,
    /// True when the gradient norm of the objective at `params` is below 1e-6 (a stationary point).
    pub converged: bool,
    /// The optimizer's stated reason for stopping.
    pub termination: String,
    /// Euclidean norm of the objective's gradient at `params`.
    pub gradient_norm: f64,
    /// Customers used (x > 0 and monetary value > 0).
    pub n_customers: usize,
    /// Customers with x > 0 left out because their repeat purchases total 0 fen.
    pub n_excluded: usize,
    /// Pearson correlation of frequency and monetary value among the customers used (the model assumes
    /// none); `None` with fewer than two customers or no variation.
    pub frequency_monetary_correlation: Option<f64>,
    /// Population mean spend per purchase vp/(q−1) in fen; `None` when q ≤ 1 (the mean does not exist).
    pub population_mean_value: Option<f64>,
}

impl GammaGammaParams {
    /// Log-likelihood of one customer's (x, m) (note 025 eq. 1a, constants included); −∞ when x = 0 or m ≤ 0.
    pub fn log_likelihood(&self, frequency: u32, monetary_value: f64) -> f64 {
        if frequency == 0 || monetary_value.is_nan() || monetary_value <= 0.0 {
            return f64::NEG_INFINITY;
        }
        let (p, q, v) = (self.p, self.q, self.v);
        let (x, m) = (f64::from(frequency), monetary_value);
        let px = p * x;
        ln_gamma(px + q) - ln_gamma(px) - ln_gamma(q) + q * v.ln() + (px - 1.0) * m.ln() + px * x.ln()
            - (px + q) * (x * m + v).ln()
    }

    /// Population mean spend per purchase, vp/(q−1); `None` when q ≤ 1.
    pub fn population_mean(&self) -> Option<f64> {
        (self.q > 1.0).then(|| self.v * self.p / (self.q - 1.0))
    }

    /// Expected spend per future purchase of a customer (note 025 eq. 5), in fen. For x = 0 this is the
    /// population mean. `None` when q ≤ 1.
    pub fn expected_average_value(&self, s: &RepeatSummary) -> Option<f64> {
        let mean = self.population_mean()?;
        let px = self.p * f64::from(s.frequency);
        let w = px / (px + self.q - 1.0);
        Some((1.0 - w) * mean + w * s.monetary_value)
    }
}

/// Distinct (x, m) patterns with weights (money scaled), and the distinct frequencies: the gamma-function
/// terms depend on x only and are evaluated once per distinct x.
struct Data {
    /// Per pattern: index into `xs`, m, ln m, weight.
    idx: Vec<usize>,
    m: Vec<f64>,
    ln_m: Vec<f64>,
    w: Vec<f64>,
    /// Distinct frequencies, their logs, and the total weight of patterns with each.
    xs: Vec<f64>,
    ln_xs: Vec<f64>,
    xw: Vec<f64>,
    total_w: f64,
    penalizer: f64,
}

impl Objective for Data {
    fn value_grad(&self, th: &[f64]) -> (f64, Vec<f64>) {
        let (p, q, v) = (th[0].exp(), th[1].exp(), th[2].exp());
        let ln_v = th[2];
        let (lg_q, dg_q) = (ln_gamma(q), digamma(q));
        let mut ll = 0.0;
        let mut g = [0.0_f64; 3];
        for ((&x, &ln_x), &w) in self.xs.iter().zip(&self.ln_xs).zip(&self.xw) {
            let px = p * x;
            let dg_pxq = digamma(px + q);
            ll += w * (ln_gamma(px + q) - ln_gamma(px) - lg_q + q * ln_v + px * ln_x);
            g[0] += w * x * (dg_pxq - digamma(px) + ln_x);
            g[1] += w * (dg_pxq - dg_q + ln_v);
        }
        g[2] += self.total_w * q / v;
        for k in 0..self.w.len() {
            let x = self.xs[self.idx[k]];
            let (m, w) = (self.m[k], self.w[k]);
            let px = p * x;
            let xmv = x * m + v;
            let l_xmv = xmv.ln();
            ll += w * ((px - 1.0) * self.ln_m[k] - (px + q) * l_xmv);
            g[0] += w * x * (self.ln_m[k] - l_xmv);
            g[1] -= w * l_xmv;
            g[2] -= w * (px + q) / xmv;
        }
        let par = [p, q, v];
        let pen = self.penalizer * par.iter().map(|a| a * a).sum::<f64>();
        let value = -ll / self.total_w + pen;
        let grad = (0..3).map(|j| par[j] * (-g[j] / self.total_w + 2.0 * self.penalizer * par[j])).collect();
        (value, grad)
    }
}

/// Fit the Gamma-Gamma model on the customers with a repeat purchase (see the module doc). Errors: empty
/// input, an invalid summary, no customer with x > 0 and a positive monetary value, a bad penalizer, or an
/// optimizer failure.
pub fn fit_gamma_gamma(summaries: &[RepeatSummary], params: &ClvParams) -> Result<GammaGammaFit, ClvError> {
    super::bgnbd::validate(summaries)?;
    let penalizer = params.penalizer;
    if !(penalizer.is_finite() && penalizer >= 0.0) {
        return Err(ClvError::InvalidParams(format!("penalizer must be finite and >= 0, got {penalizer}")));
    }
    let used: Vec<&RepeatSummary> = summaries
        .iter()
        .filter(|s| s.frequency > 0 && s.monetary_value > 0.0 && s.monetary_value.is_finite())
        .collect();
    let n_excluded = summaries.iter().filter(|s| s.frequency > 0).count() - used.len();
    if used.is_empty() {
        return Err(ClvError::NoRepeatPurchases);
    }
    let scale = used.iter().map(|s| s.monetary_value).sum::<f64>() / used.len() as f64;
    let mut patterns: BTreeMap<(u32, u64), f64> = BTreeMap::new();
    for s in &used {
        *patterns.entry((s.frequency, (s.monetary_value / scale).to_bits())).or_insert(0.0) += 1.0;
    }
    let mut data = Data {
        idx: Vec::with_capacity(patterns.len()),
        m: Vec::with_capacity(patterns.len()),
        ln_m: Vec::with_capacity(patterns.len()),
        w: Vec::with_capacity(patterns.len()),
        xs: Vec::new(),
        ln_xs: Vec::new(),
        xw: Vec::new(),
        total_w: used.len() as f64,
        penalizer,
    };
    // Patterns are sorted by x, so each new x starts a new entry.
    for ((x, m), w) in patterns {
        let (x, m) = (f64::from(x), f64::from_bits(m));
        if data.xs.last() != Some(&x) {
            data.xs.push(x);
            data.ln_xs.push(x.ln());
            data.xw.push(0.0);
        }
        let i = data.xs.len() - 1;
        data.xw[i] += w;
        data.idx.push(i);
        data.m.push(m);
        data.ln_m.push(m.ln());
        data.w.push(w);
    }
    let out = optim::minimize(&data, vec![0.1; 3])?;
    let fitted = GammaGammaParams { p: out.x[0].exp(), q: out.x[1].exp(), v: out.x[2].exp() * scale };
    if ![fitted.p, fitted.q, fitted.v].iter().all(|v| v.is_finite() && *v > 0.0) {
        return Err(ClvError::Optimizer(format!("the fit left the valid parameter range: {fitted:?}")));
    }
    // Back from the objective: it is the mean over customers of −LL in scaled money plus the penalty, and
    // scaling money by 1/s adds ln s to each customer's log-likelihood.
    let penalty = penalizer * out.x.iter().map(|t| (2.0 * t).exp()).sum::<f64>();
    let n = used.len() as f64;
    let log_likelihood = -n * (out.value - penalty) - n * scale.ln();
    Ok(GammaGammaFit {
        params: fitted,
        log_likelihood,
        iterations: out.iterations,
        converged: out.converged,
        termination: out.termination,
        gradient_norm: out.gradient_norm,
        n_customers: used.len(),
        n_excluded,
        frequency_monetary_correlation: pearson(used.iter().map(|s| (f64::from(s.frequency), s.monetary_value))),
        population_mean_value: fitted.population_mean(),
    })
}

/// Pearson's r, two-pass; `None` for fewer than two points or a constant variable.
fn pearson(points: impl Iterator<Item = (f64, f64)> + Clone) -> Option<f64> {
    let n = points.clone().count();
    if n < 2 {
        return None;
    }
    let (sx, sy) = points.clone().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n as f64, sy / n as f64);
    let (mut cxy, mut cxx, mut cyy) = (0.0, 0.0, 0.0);
    for (x, y) in points {
        cxy += (x - mx) * (y - my);
        cxx += (x - mx) * (x - mx);
        cyy += (y - my) * (y - my);
    }
    (cxx > 0.0 && cyy > 0.0).then(|| cxy / (cxx.sqrt() * cyy.sqrt()))
}
