//! Maximum-likelihood plumbing shared by the BG/NBD and Gamma-Gamma fits: L-BFGS (argmin) with a
//! More–Thuente line search on log-parameters, fed by an analytic gradient.

use super::ClvError;
use argmin::core::{CostFunction, Executor, Gradient, State, TerminationStatus};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use std::cell::RefCell;

/// A smooth objective in log-parameter space: value and gradient at one point.
pub(crate) trait Objective {
    fn value_grad(&self, x: &[f64]) -> (f64, Vec<f64>);
}

/// Caches the last evaluation: argmin asks for the cost and the gradient at the same point separately.
struct Problem<'a, O: Objective> {
    objective: &'a O,
    cache: RefCell<Option<Evaluation>>,
}

/// A point, the objective there and its gradient.
type Evaluation = (Vec<f64>, f64, Vec<f64>);

impl<O: Objective> Problem<'_, O> {
    fn eval(&self, x: &[f64]) -> (f64, Vec<f64>) {
        if let Some((cx, v, g)) = self.cache.borrow().as_ref()
            && cx.as_slice() == x
        {
            return (*v, g.clone());
        }
        let (v, g) = self.objective.value_grad(x);
        // Outside the region where the likelihood is finite the line search must see a wall, not a NaN.
        let (v, g) =
            if v.is_finite() && g.iter().all(|d| d.is_finite()) { (v, g) } else { (f64::INFINITY, vec![0.0; x.len()]) };
        *self.cache.borrow_mut() = Some((x.to_vec(), v, g.clone()));
        (v, g)
    }
}

impl<O: Objective> CostFunction for Problem<'_, O> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, x: &Self::Param) -> Result<f64, argmin::core::Error> {
        Ok(self.eval(x).0)
    }
}

impl<O: Objective> Gradient for Problem<'_, O> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, x: &Self::Param) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(self.eval(x).1)
    }
}

/// What the optimizer did, for the fit reports.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub x: Vec<f64>,
    /// Objective value at `x`.
    pub value: f64,
    pub iterations: u64,
    pub converged: bool,
    pub termination: String,
    pub gradient_norm: f64,
}

/// Gradient-norm tolerance on the per-customer objective (lifetimes uses 1e-7 with SciPy's BFGS).
const TOL_GRAD: f64 = 1e-7;
/// Stop when one iteration changes the per-customer objective by less than this.
const TOL_COST: f64 = 1e-15;
const MAX_ITERS: u64 = 2_000;
/// A fit is reported converged when the final gradient norm is below this, whatever stopped argmin (its
/// line search can give up at an optimum that rounding makes flat, before the gradient test fires).
const CONVERGED_GRAD: f64 = 1e-6;

/// Fresh L-BFGS runs allowed after one whose line search gave up above the gradient tolerance.
const MAX_RESTARTS: usize = 5;

/// Minimize `objective` from `x0` with L-BFGS (memory 10). When the More–Thuente line search gives up before
/// the gradient test is met (near an optimum the curvature memory can point uphill by rounding), L-BFGS is
/// restarted from the best point with an empty memory, while that keeps lowering the objective.
pub(crate) fn minimize<O: Objective>(objective: &O, x0: Vec<f64>) -> Result<Outcome, ClvError> {
    let (v0, _) = objective.value_grad(&x0);
    if !v0.is_finite() {
        return Err(ClvError::Optimizer("the likelihood is not finite at the starting point".into()));
    }
    let mut best = run_once(objective, x0, MAX_ITERS)?;
    polish(objective, &mut best);
    for _ in 0..MAX_RESTARTS {
        let stalled =
            best.gradient_norm > TOL_GRAD && best.iterations < MAX_ITERS && best.termination.starts_with("Line search");
        if !stalled {
            break;
        }
        let next = run_once(objective, best.x.clone(), MAX_ITERS - best.iterations)?;
        let improved = next.value < best.value;
        let iterations = best.iterations + next.iterations;
        if improved {
            best = Outcome { iterations, ..next };
            polish(objective, &mut best);
        } else {
            best.iterations = iterations;
            break;
        }
    }
    Ok(best)
}

/// Newton steps on the gradient, with the Hessian from forward differences of the analytic gradient.
///
/// Near the optimum the objective changes by less than its own rounding (≈1e-15 of its value) long before
/// the gradient vanishes, so a line search on the objective stops early; a Newton step needs only the
/// gradient and takes it to rounding level in one or two steps (the O(h) Hessian error only slows the
/// contraction to ~h per step). A step is kept only if it shrinks the gradient norm and moves every
/// log-parameter by less than 0.01 (a local correction, not a new search).
fn polish<O: Objective>(objective: &O, out: &mut Outcome) {
    const STEPS: usize = 3;
    const H: f64 = 1e-6;
    let n = out.x.len();
    let mut kept = 0;
    let (_, mut g) = objective.value_grad(&out.x);
    for _ in 0..STEPS {
        if out.gradient_norm.is_nan() || out.gradient_norm <= 1e-13 {
            break;
        }
        // Column j of the Hessian = (∇f(x + h eⱼ) − ∇f(x)) / h; the matrix used is its symmetric part.
        let cols: Vec<Vec<f64>> = (0..n)
            .map(|j| {
                let mut xp = out.x.clone();
                xp[j] += H;
                let (_, gp) = objective.value_grad(&xp);
                gp.iter().zip(&g).map(|(p, q)| (p - q) / H).collect()
            })
            .collect();
        let hess: Vec<Vec<f64>> = (0..n).map(|i| (0..n).map(|j| 0.5 * (cols[j][i] + cols[i][j])).collect()).collect();
        let Some(step) = solve(hess, g.clone()) else {
            break;
        };
        if step.iter().any(|d| !d.is_finite() || d.abs() > 0.01) {
            break;
        }
        let x: Vec<f64> = out.x.iter().zip(&step).map(|(x, d)| x - d).collect();
        let (value, g_new) = objective.value_grad(&x);
        let norm = g_new.iter().map(|d| d * d).sum::<f64>().sqrt();
        if !(value.is_finite() && norm < out.gradient_norm) {
            break;
        }
        out.x = x;
        out.value = value;
        out.gradient_norm = norm;
        out.converged = norm < CONVERGED_GRAD;
        g = g_new;
        kept += 1;
    }
    if kept > 0 {
        out.termination = format!("{}; then {kept} Newton step(s) on the gradient", out.termination);
    }
}

/// Solve A·x = b by Gaussian elimination with partial pivoting (n ≤ 4 here: no linear-algebra crate is
/// worth a dependency for that); `None` when A is singular to working precision.
#[allow(clippy::needless_range_loop)] // index arithmetic, as the textbook algorithm reads
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    let scale = a.iter().flat_map(|r| r.iter()).fold(0.0_f64, |m, v| m.max(v.abs()));
    for col in 0..n {
        let piv = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        let pivot = a[piv][col].abs();
        if pivot.is_nan() || pivot <= 1e-14 * scale {
            return None;
        }
        a.swap(col, piv);
        b.swap(col, piv);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            for k in col..n {
                a[row][k] -= f * a[col][k];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

fn run_once<O: Objective>(objective: &O, x0: Vec<f64>, max_iters: u64) -> Result<Outcome, ClvError> {
    let problem = Problem { objective, cache: RefCell::new(None) };
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
        .with_tolerance_grad(TOL_GRAD)
        .and_then(|s| s.with_tolerance_cost(TOL_COST))
        .map_err(|e| ClvError::Optimizer(e.to_string()))?;
    let res = Executor::new(problem, solver)
        .configure(|state| state.param(x0).max_iters(max_iters))
        .run()
        .map_err(|e| ClvError::Optimizer(e.to_string()))?;
    let state = res.state();
    let x = state
        .get_best_param()
        .or_else(|| state.get_param())
        .cloned()
        .ok_or_else(|| ClvError::Optimizer("the optimizer returned no parameters".into()))?;
    let iterations = state.get_iter();
    let reason = match state.get_termination_status() {
        TerminationStatus::Terminated(r) => Some(r.clone()),
        TerminationStatus::NotTerminated => None,
    };
    let (value, g) = objective.value_grad(&x);
    let gradient_norm = g.iter().map(|d| d * d).sum::<f64>().sqrt();
    let termination = match &reason {
        Some(r) => r.text().to_string(),
        None => "not terminated".to_string(),
    };
    Ok(Outcome {
        x,
        value,
        iterations,
        converged: gradient_norm.is_finite() && gradient_norm < CONVERGED_GRAD,
        termination,
        gradient_norm,
    })
}
