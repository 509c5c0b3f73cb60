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
    cache: RefCell<Option<(Vec<f64>, f64, Vec<f64>)>>,
}

impl<O: Objective> Problem<'_, O> {
    fn eval(&self, x: &[f64]) -> (f64, Vec<f64>) {
        if let Some((cx, v, g)) = self.cache.borrow().as_ref()
            && cx.as_slice() == x
        {
            return (*v, g.clone());
        }
        let (v, g) = self.objective.value_grad(x);
        // Outside the region where the likelihood is finite the line search must see a wall, not a NaN.
        let (v, g) = if v.is_finite() && g.iter().all(|d| d.is_finite()) {
            (v, g)
        } else {
            (f64::INFINITY, vec![0.0; x.len()])
        };
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
const TOL_GRAD: f64 = 1e-9;
/// Stop when one iteration changes the per-customer objective by less than this.
const TOL_COST: f64 = 1e-15;
const MAX_ITERS: u64 = 2_000;
/// A fit is reported converged when the final gradient norm is below this, whatever stopped argmin (its
/// line search can give up at an optimum that rounding makes flat, before the gradient test fires).
const CONVERGED_GRAD: f64 = 1e-6;

/// Minimize `objective` from `x0` with L-BFGS (memory 10).
pub(crate) fn minimize<O: Objective>(objective: &O, x0: Vec<f64>) -> Result<Outcome, ClvError> {
    let problem = Problem {
        objective,
        cache: RefCell::new(None),
    };
    let (v0, _) = problem.eval(&x0);
    if !v0.is_finite() {
        return Err(ClvError::Optimizer(
            "the likelihood is not finite at the starting point".into(),
        ));
    }
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
        .with_tolerance_grad(TOL_GRAD)
        .and_then(|s| s.with_tolerance_cost(TOL_COST))
        .map_err(|e| ClvError::Optimizer(e.to_string()))?;
    let res = Executor::new(problem, solver)
        .configure(|state| state.param(x0).max_iters(MAX_ITERS))
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
