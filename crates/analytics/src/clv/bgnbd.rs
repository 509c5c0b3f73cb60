//! BG/NBD (beta-geometric / negative binomial distribution) model of repeat purchasing
//! (Fader, Hardie & Lee 2005, "Counting Your Customers the Easy Way", Marketing Science 24(2)).
//!
//! While alive a customer buys as a Poisson process with rate λ ~ Gamma(r, α) (shape r, rate α); after each
//! repeat purchase the customer drops out for good with probability p ~ Beta(a, b). For a customer with
//! summary (x, tₓ, T) the likelihood is (FHL 2005 eq. 6)
//!
//! L = B(a, b+x)/B(a, b) · Γ(r+x)αʳ/Γ(r) · [ (α+T)^−(r+x) + 1{x>0}·a/(b+x−1)·(α+tₓ)^−(r+x) ],
//!
//! evaluated in logs with a log-sum-exp for the bracket. Predictions:
//! - P(alive | x, tₓ, T) = 1 / (1 + 1{x>0}·a/(b+x−1)·((α+T)/(α+tₓ))^(r+x)) (Hardie's note 021);
//! - E[Y(t) | x, tₓ, T] = (a+b+x−1)/(a−1) · [1 − ((α+T)/(α+T+t))^(r+x) ₂F₁(r+x, b+x; a+b+x−1; t/(α+T+t))]
//!   · P(alive) (eq. 10), the expected repeat purchases in the next t days;
//! - E[X(t)] = (a+b−1)/(a−1) · [1 − (α/(α+t))ʳ ₂F₁(r, b; a+b−1; t/(α+t))] (eq. 9), for a new customer;
//! - P(X(t) = n) (eq. 8), used for the fit check: observed vs expected number of customers by repeat
//!   frequency 0…6, 7+ over each customer's own T.
//!
//! At a = 1 the two expectations are 0/0; there they are taken as the mean at a = 1 ± 10⁻⁵ (the error is
//! second order, ~10⁻¹⁰ relative).
//!
//! # Fit
//! Maximum likelihood on θ = ln(r, α, a, b) with L-BFGS and the analytic gradient (digamma terms). As in
//! lifetimes' `BetaGeoFitter`, time is rescaled by 1/max(T) during the fit, the objective is the mean negative
//! log-likelihood per customer plus `penalizer · (r² + α_scaled² + a² + b²)`, the start is θ = 0.1 for every
//! component, and α is scaled back afterwards; with penalizer 0 the optimum is the same in any time unit.
//! Customers with identical (x, tₓ, T) are evaluated once with a weight, the gamma-function terms once per
//! distinct x, and ln(α + t) once per distinct day value.
//!
//! The optimizer (shared with Gamma-Gamma): argmin's L-BFGS (memory 10, More–Thuente line search) until
//! the gradient norm is below 1e-7, then up to three Newton steps on the gradient with a finite-difference
//! Hessian, which take it to rounding level (~1e-14): near the optimum the objective itself no longer
//! resolves the remaining improvement, so a line search cannot. A fit is `converged` when the final gradient
//! norm of the per-customer objective is below 1e-6.

use super::optim::{self, Objective};
use super::special::hyp2f1_parts;
use super::{ClvError, ClvParams, RepeatSummary};
use serde::{Deserialize, Serialize};
use statrs::function::beta::ln_beta;
use statrs::function::gamma::{digamma, ln_gamma};
use std::collections::BTreeMap;

/// Fitted BG/NBD parameters (time unit: days, as in [`RepeatSummary`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BgNbdParams {
    /// Shape of the gamma distribution of purchase rates λ.
    pub r: f64,
    /// Rate (inverse scale, in days) of the gamma distribution of purchase rates.
    pub alpha: f64,
    /// First shape of the beta distribution of drop-out probabilities p.
    pub a: f64,
    /// Second shape of the beta distribution of drop-out probabilities p.
    pub b: f64,
}

/// One row of the calibration-period fit check: how many customers made `repeat_purchases` repeat purchases,
/// observed and as the fitted model expects given each customer's age.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrequencyBucket {
    /// "0" … "6", or "7+" for the last bucket.
    pub repeat_purchases: String,
    /// Customers observed in the bucket.
    pub observed: usize,
    /// Σ over customers of P(X(Tᵢ) = n) (for "7+", of P(X(Tᵢ) ≥ 7)).
    pub expected: f64,
}

/// A fitted BG/NBD model and how the fit went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BgNbdFit {
    /// The maximum-likelihood parameters.
    pub params: BgNbdParams,
    /// Total log-likelihood of the input at `params`, in the input's time unit, without the penalty.
    pub log_likelihood: f64,
    /// L-BFGS iterations.
    pub iterations: u64,
    /// True when the gradient norm of the objective at `params` is below 1e-6 (a stationary point).
    pub converged: bool,
    /// The optimizer's stated reason for stopping.
    pub termination: String,
    /// Euclidean norm of the objective's gradient (per customer, log-parameters) at `params`.
    pub gradient_norm: f64,
    /// Customers in the fit.
    pub n_customers: usize,
    /// Customers with at least one repeat purchase.
    pub n_repeat_customers: usize,
    /// Observed vs expected customers by repeat frequency 0…6, 7+ (FHL 2005 Figure 2's check).
    pub frequency_fit: Vec<FrequencyBucket>,
}

const A_NEAR_ONE: f64 = 1e-7;
const A_STEP: f64 = 1e-5;

impl BgNbdParams {
    fn check(&self) -> Result<(), ClvError> {
        let ok = [self.r, self.alpha, self.a, self.b].iter().all(|v| v.is_finite() && *v > 0.0);
        if ok {
            Ok(())
        } else {
            Err(ClvError::InvalidParams(format!("BG/NBD parameters must be finite and positive: {self:?}")))
        }
    }

    /// Log-likelihood of one customer's summary (FHL 2005 eq. 6, all constants included), so that totals
    /// are comparable with published values.
    pub fn log_likelihood(&self, s: &RepeatSummary) -> f64 {
        let (r, alpha, a, b) = (self.r, self.alpha, self.a, self.b);
        let x = f64::from(s.frequency);
        let a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln();
        let a2 = ln_gamma(a + b) + ln_gamma(b + x) - ln_gamma(b) - ln_gamma(a + b + x);
        let a3 = -(r + x) * (alpha + s.age).ln();
        let tail = if s.frequency > 0 {
            let a4 = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + s.recency).ln();
            let m = a3.max(a4);
            m + ((a3 - m).exp() + (a4 - m).exp()).ln()
        } else {
            a3
        };
        a1 + a2 + tail
    }

    /// Sum of [`Self::log_likelihood`] over customers.
    pub fn total_log_likelihood(&self, summaries: &[RepeatSummary]) -> f64 {
        summaries.iter().map(|s| self.log_likelihood(s)).sum()
    }

    /// Probability that the customer has not dropped out by the end of the observation (1 when x = 0).
    pub fn prob_alive(&self, s: &RepeatSummary) -> f64 {
        if s.frequency == 0 {
            return 1.0;
        }
        let x = f64::from(s.frequency);
        let ld =
            (self.a / (self.b + x - 1.0)).ln() + (self.r + x) * ((self.alpha + s.age) / (self.alpha + s.recency)).ln();
        // 1/(1+e^ld), written to stay accurate at either extreme.
        if ld > 0.0 {
            let e = (-ld).exp();
            e / (1.0 + e)
        } else {
            1.0 / (1.0 + ld.exp())
        }
    }

    /// Expected number of repeat purchases in the next `t` days for a customer with summary `s`
    /// (FHL 2005 eq. 10). Errors only on invalid parameters or inputs (negative or non-finite t).
    pub fn expected_purchases(&self, s: &RepeatSummary, t: f64) -> Result<f64, ClvError> {
        self.check()?;
        if !(t.is_finite() && t >= 0.0) {
            return Err(ClvError::InvalidParams(format!(
                "the prediction horizon must be a finite non-negative number of days, got {t}"
            )));
        }
        if t == 0.0 {
            return Ok(0.0);
        }
        if (self.a - 1.0).abs() < A_NEAR_ONE {
            let lo = Self { a: 1.0 - A_STEP, ..*self }.conditional_raw(s, t)?;
            let hi = Self { a: 1.0 + A_STEP, ..*self }.conditional_raw(s, t)?;
            return Ok(0.5 * (lo + hi));
        }
        self.conditional_raw(s, t)
    }

    fn conditional_raw(&self, s: &RepeatSummary, t: f64) -> Result<f64, ClvError> {
        let (r, alpha, a, b) = (self.r, self.alpha, self.a, self.b);
        let x = f64::from(s.frequency);
        let big_t = s.age;
        let z = t / (alpha + big_t + t);
        let h = hyp2f1_parts(r + x, b + x, a + b + x - 1.0, z)?;
        let ln_prod = h.ln_abs() + (r + x) * ((alpha + big_t) / (alpha + big_t + t)).ln();
        let bracket = one_minus_signed_exp(h.series.signum(), ln_prod);
        Ok((a + b + x - 1.0) / (a - 1.0) * bracket * self.prob_alive(s))
    }

    /// Expected repeat purchases in the first `t` days of a new customer's relationship (FHL 2005 eq. 9).
    pub fn unconditional_expected_purchases(&self, t: f64) -> Result<f64, ClvError> {
        self.check()?;
        if !(t.is_finite() && t >= 0.0) {
            return Err(ClvError::InvalidParams(format!(
                "the time span must be a finite non-negative number of days, got {t}"
            )));
        }
        if t == 0.0 {
            return Ok(0.0);
        }
        let raw = |a: f64| -> Result<f64, ClvError> {
            let (r, alpha, b) = (self.r, self.alpha, self.b);
            let h = hyp2f1_parts(r, b, a + b - 1.0, t / (alpha + t))?;
            let ln_prod = h.ln_abs() + r * (alpha / (alpha + t)).ln();
            Ok((a + b - 1.0) / (a - 1.0) * one_minus_signed_exp(h.series.signum(), ln_prod))
        };
        if (self.a - 1.0).abs() < A_NEAR_ONE {
            return Ok(0.5 * (raw(1.0 - A_STEP)? + raw(1.0 + A_STEP)?));
        }
        raw(self.a)
    }

    /// P(X(t) = n): probability that a new customer makes exactly n repeat purchases in t days (FHL 2005
    /// eq. 8).
    pub fn prob_repeat_purchases(&self, t: f64, n: u32) -> f64 {
        let k = CountConsts::new(self, n);
        let mut out = vec![0.0; n as usize + 1];
        k.probs(self, t, &mut out);
        out[n as usize]
    }
}

/// The t-independent factors of P(X(t) = n) for n = 0..=top, so the fit check evaluates them once.
struct CountConsts {
    /// ln[B(a, b+n)/B(a, b) · Γ(r+n)/(Γ(r) n!)].
    ln_first: Vec<f64>,
    /// B(a+1, b+n−1)/B(a, b) (unused for n = 0).
    second: Vec<f64>,
}

impl CountConsts {
    fn new(p: &BgNbdParams, top: u32) -> Self {
        let (r, a, b) = (p.r, p.a, p.b);
        let (lb_ab, lg_r) = (ln_beta(a, b), ln_gamma(r));
        let ln_first = (0..=top)
            .map(|n| {
                let nf = f64::from(n);
                ln_beta(a, b + nf) - lb_ab + ln_gamma(r + nf) - lg_r - ln_gamma(nf + 1.0)
            })
            .collect();
        let second = (0..=top)
            .map(|n| if n == 0 { 0.0 } else { (ln_beta(a + 1.0, b + f64::from(n) - 1.0) - lb_ab).exp() })
            .collect();
        Self { ln_first, second }
    }

    /// Fill `out[n]` = P(X(t) = n) for n < out.len().
    fn probs(&self, p: &BgNbdParams, t: f64, out: &mut [f64]) {
        let r = p.r;
        let q = p.alpha / (p.alpha + t); // success probability of the negative binomial
        let ln_q = q.ln();
        let ln_1mq = (t / (p.alpha + t)).ln();
        let one_minus_q = 1.0 - q;
        // Running NB(j; r, q) and its cumulative sum over j < n.
        let mut pj = (r * ln_q).exp();
        let mut cdf = 0.0_f64;
        for (n, o) in out.iter_mut().enumerate() {
            let nf = n as f64;
            let mut lf = self.ln_first[n] + r * ln_q;
            if n > 0 {
                lf += nf * ln_1mq;
            }
            *o = lf.exp();
            if n > 0 {
                *o += self.second[n] * (1.0 - cdf).max(0.0);
            }
            cdf += pj;
            pj *= (r + nf) / (nf + 1.0) * one_minus_q;
        }
    }
}

/// 1 − sign·e^l, accurate when sign·e^l is near 1.
fn one_minus_signed_exp(sign: f64, l: f64) -> f64 {
    if sign >= 0.0 { -l.exp_m1() } else { 1.0 + l.exp() }
}

/// Validate the summaries as the models need them (the same checks as lifetimes' `_check_inputs`).
pub(crate) fn validate(summaries: &[RepeatSummary]) -> Result<(), ClvError> {
    if summaries.is_empty() {
        return Err(ClvError::Empty);
    }
    for (index, s) in summaries.iter().enumerate() {
        let reason = if !(s.recency.is_finite() && s.age.is_finite()) {
            Some("recency and age must be finite")
        } else if s.recency < 0.0 {
            Some("recency is negative")
        } else if s.recency > s.age {
            Some("recency is larger than age")
        } else if s.frequency == 0 && s.recency != 0.0 {
            Some("recency must be 0 when frequency is 0")
        } else if s.monetary_value.is_nan() {
            Some("monetary value is NaN")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(ClvError::InvalidSummary { index, reason: reason.to_string() });
        }
    }
    Ok(())
}

/// Distinct (x, tₓ, T) patterns with weights, time already scaled. Recencies and ages index a table of
/// distinct time values, so each evaluation takes one logarithm per distinct day, not per customer.
struct Data {
    /// Per pattern: index into `xs`, index of tₓ and of T into `times`, weight.
    idx: Vec<usize>,
    tx: Vec<usize>,
    t: Vec<usize>,
    w: Vec<f64>,
    /// Distinct scaled time values (recencies and ages).
    times: Vec<f64>,
    /// Distinct frequencies and the total weight of patterns with each.
    xs: Vec<f64>,
    xw: Vec<f64>,
    total_w: f64,
    penalizer: f64,
}

impl Data {
    fn new(summaries: &[RepeatSummary], scale: f64, penalizer: f64) -> Self {
        let mut patterns: BTreeMap<(u32, u64, u64), f64> = BTreeMap::new();
        for s in summaries {
            *patterns.entry((s.frequency, s.recency.to_bits(), s.age.to_bits())).or_insert(0.0) += 1.0;
        }
        let mut xmap: BTreeMap<u32, usize> = BTreeMap::new();
        // Non-negative finite f64 sort like their bit patterns.
        let mut tmap: BTreeMap<u64, usize> = BTreeMap::new();
        for (_, tx, t) in patterns.keys() {
            tmap.insert(*tx, 0);
            tmap.insert(*t, 0);
        }
        let mut times = Vec::with_capacity(tmap.len());
        for (i, (bits, slot)) in tmap.iter_mut().enumerate() {
            *slot = i;
            times.push(f64::from_bits(*bits) * scale);
        }
        let mut d = Data {
            idx: Vec::with_capacity(patterns.len()),
            tx: Vec::with_capacity(patterns.len()),
            t: Vec::with_capacity(patterns.len()),
            w: Vec::with_capacity(patterns.len()),
            times,
            xs: Vec::new(),
            xw: Vec::new(),
            total_w: summaries.len() as f64,
            penalizer,
        };
        for ((x, tx, t), w) in patterns {
            let next = xmap.len();
            let i = *xmap.entry(x).or_insert(next);
            if i == d.xs.len() {
                d.xs.push(f64::from(x));
                d.xw.push(0.0);
            }
            d.xw[i] += w;
            d.idx.push(i);
            d.tx.push(tmap.get(&tx).copied().unwrap_or_default());
            d.t.push(tmap.get(&t).copied().unwrap_or_default());
            d.w.push(w);
        }
        d
    }
}

impl Objective for Data {
    /// Mean negative log-likelihood + L2 penalty, and its gradient in log-parameters.
    fn value_grad(&self, th: &[f64]) -> (f64, Vec<f64>) {
        let (r, alpha, a, b) = (th[0].exp(), th[1].exp(), th[2].exp(), th[3].exp());
        let (ln_a, ln_alpha) = (th[2], th[1]);
        let (lg_r, dg_r) = (ln_gamma(r), digamma(r));
        let (lg_b, dg_b) = (ln_gamma(b), digamma(b));
        let (lg_ab, dg_ab) = (ln_gamma(a + b), digamma(a + b));
        // Per distinct x: Σ-weighted gamma terms, and ln(b+x−1).
        let mut ll = 0.0;
        let mut g = [0.0_f64; 4]; // d/d(r, alpha, a, b) of the total log-likelihood
        let mut ln_bx1 = vec![0.0; self.xs.len()];
        for (i, (&x, &w)) in self.xs.iter().zip(&self.xw).enumerate() {
            let dg_abx = digamma(a + b + x);
            ll += w * (ln_gamma(r + x) - lg_r + lg_ab + ln_gamma(b + x) - lg_b - ln_gamma(a + b + x));
            g[0] += w * (digamma(r + x) - dg_r);
            g[2] += w * (dg_ab - dg_abx);
            g[3] += w * (dg_ab + digamma(b + x) - dg_b - dg_abx);
            if x > 0.0 {
                ln_bx1[i] = (b + x - 1.0).ln();
            }
        }
        // ln(α + t) and 1/(α + t) per distinct time value.
        let ln_at: Vec<f64> = self.times.iter().map(|t| (alpha + t).ln()).collect();
        let inv_at: Vec<f64> = self.times.iter().map(|t| 1.0 / (alpha + t)).collect();
        ll += self.total_w * r * ln_alpha;
        g[0] += self.total_w * ln_alpha;
        g[1] += self.total_w * r / alpha;
        for k in 0..self.w.len() {
            let i = self.idx[k];
            let x = self.xs[i];
            let w = self.w[k];
            let rx = r + x;
            let (l_t, inv_t) = (ln_at[self.t[k]], inv_at[self.t[k]]);
            let a3 = -rx * l_t;
            if x > 0.0 {
                let (l_r, inv_r) = (ln_at[self.tx[k]], inv_at[self.tx[k]]);
                let a4 = ln_a - ln_bx1[i] - rx * l_r;
                let (m, d) = if a3 >= a4 { (a3, a4 - a3) } else { (a4, a3 - a4) };
                let e = d.exp();
                ll += w * (m + e.ln_1p());
                // Softmax weights of the two terms.
                let (w3, w4) =
                    if a3 >= a4 { (1.0 / (1.0 + e), e / (1.0 + e)) } else { (e / (1.0 + e), 1.0 / (1.0 + e)) };
                g[0] -= w * (w3 * l_t + w4 * l_r);
                g[1] -= w * rx * (w3 * inv_t + w4 * inv_r);
                g[2] += w * w4 / a;
                g[3] -= w * w4 / (b + x - 1.0);
            } else {
                ll += w * a3;
                g[0] -= w * l_t;
                g[1] -= w * rx * inv_t;
            }
        }
        let p = [r, alpha, a, b];
        let pen = self.penalizer * p.iter().map(|v| v * v).sum::<f64>();
        let value = -ll / self.total_w + pen;
        let grad = (0..4).map(|j| p[j] * (-g[j] / self.total_w + 2.0 * self.penalizer * p[j])).collect();
        (value, grad)
    }
}

/// Fit the BG/NBD model by maximum likelihood (see the module doc). Errors: no customers, an invalid
/// summary (named by index), no customer with a repeat purchase (the model is then not identified: the
/// likelihood keeps rising as r → 0), a negative or non-finite penalizer, or an optimizer failure.
/// Non-convergence is not an error: it is reported in [`BgNbdFit::converged`].
pub fn fit_bgnbd(summaries: &[RepeatSummary], params: &ClvParams) -> Result<BgNbdFit, ClvError> {
    validate(summaries)?;
    let penalizer = params.penalizer;
    if !(penalizer.is_finite() && penalizer >= 0.0) {
        return Err(ClvError::InvalidParams(format!("penalizer must be finite and >= 0, got {penalizer}")));
    }
    let n_repeat = summaries.iter().filter(|s| s.frequency > 0).count();
    if n_repeat == 0 {
        return Err(ClvError::NoRepeatPurchases);
    }
    let max_t = summaries.iter().map(|s| s.age).fold(0.0, f64::max);
    let scale = if max_t > 0.0 { 1.0 / max_t } else { 1.0 };
    let data = Data::new(summaries, scale, penalizer);
    let out = optim::minimize(&data, vec![0.1; 4])?;
    let e = |i: usize| out.x[i].exp();
    let fitted = BgNbdParams { r: e(0), alpha: e(1) / scale, a: e(2), b: e(3) };
    fitted.check()?;
    // Back from the objective (mean −LL in scaled time plus the penalty): rescaling time by s changes a
    // customer's log-likelihood by −x·ln s.
    let penalty = penalizer * out.x.iter().map(|t| (2.0 * t).exp()).sum::<f64>();
    let sum_x: f64 = summaries.iter().map(|s| f64::from(s.frequency)).sum();
    let log_likelihood = -(summaries.len() as f64) * (out.value - penalty) + scale.ln() * sum_x;
    Ok(BgNbdFit {
        params: fitted,
        log_likelihood,
        iterations: out.iterations,
        converged: out.converged,
        termination: out.termination,
        gradient_norm: out.gradient_norm,
        n_customers: summaries.len(),
        n_repeat_customers: n_repeat,
        frequency_fit: frequency_fit(&fitted, summaries),
    })
}

/// Observed vs expected customers by repeat frequency 0…6 and 7+.
fn frequency_fit(p: &BgNbdParams, summaries: &[RepeatSummary]) -> Vec<FrequencyBucket> {
    const TOP: u32 = 7;
    let mut observed = [0_usize; TOP as usize + 1];
    let mut ages: BTreeMap<u64, f64> = BTreeMap::new();
    for s in summaries {
        observed[s.frequency.min(TOP) as usize] += 1;
        *ages.entry(s.age.to_bits()).or_insert(0.0) += 1.0;
    }
    let mut expected = [0.0_f64; TOP as usize + 1];
    let consts = CountConsts::new(p, TOP - 1);
    let mut pn = [0.0_f64; TOP as usize];
    for (t, w) in ages {
        consts.probs(p, f64::from_bits(t), &mut pn);
        for (e, v) in expected.iter_mut().zip(&pn) {
            *e += w * v;
        }
        expected[TOP as usize] += w * (1.0 - pn.iter().sum::<f64>()).max(0.0);
    }
    (0..=TOP)
        .map(|n| FrequencyBucket {
            repeat_purchases: if n == TOP { format!("{TOP}+") } else { n.to_string() },
            observed: observed[n as usize],
            expected: expected[n as usize],
        })
        .collect()
}
