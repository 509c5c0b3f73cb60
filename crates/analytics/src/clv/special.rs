//! The Gaussian hypergeometric function ₂F₁(a, b; c; z) for real arguments, as the BG/NBD formulas need it.
//!
//! Written here because no Rust crate provides it: `statrs` has the gamma and beta families but no
//! hypergeometric functions, and the crates that do (bindings to GSL or Cephes) need a C library.
//!
//! # Method
//! The Gauss series ₂F₁ = Σₙ tₙ with t₀ = 1 and tₙ₊₁ = tₙ·(a+n)(b+n)/((c+n)(n+1))·z, evaluated on a form of
//! the function where it converges well (DLMF 15.8.1):
//! - 0 < z < 1: either the series itself or Euler's transformation
//!   ₂F₁(a, b; c; z) = (1−z)^(c−a−b) ₂F₁(c−a, c−b; c; z), whichever has the smaller |β| below (fewer terms
//!   before they start to shrink). The BG/NBD conditional expectation has a = r+x, b = b+x, c = a+b+x−1: the
//!   direct series has terms growing like xⁿ·zⁿ and a value that overflows for a few hundred purchases, the
//!   Euler form has small numerator parameters and a value of order one.
//! - z < 0: Pfaff's transformation ₂F₁(a, b; c; z) = (1−z)^(−a) ₂F₁(a, c−b; c; z/(z−1)), whose argument lies
//!   in (0, 1), so the series has no alternating cancellation for positive parameters and converges for
//!   every z < 0 (for z < −1 the direct series diverges).
//! - z = 1: Gauss's sum Γ(c)Γ(c−a−b)/(Γ(c−a)Γ(c−b)) when c−a−b > 0 and the gamma arguments are positive.
//! - z > 1 lies on the branch cut (the function is complex there) and is refused.
//!
//! The prefactor is kept as a logarithm ([`hyp2f1_parts`]) so callers multiplying by a small power, as the
//! BG/NBD formulas do, never overflow.
//!
//! # Convergence criterion
//! Write tₙ₊₁/tₙ = z·(1 + g(n)) with g(n) = (α·n + β)/((c+n)(n+1)), α = a+b−c−1, β = ab−c. For n > c⁻ =
//! max(0, −c) we have (c+n)(n+1) > (n−c⁻)·n, so |g(k)| ≤ h(n) = (|α|·n + |β|)/((n−c⁻)·n) for every k ≥ n (h is
//! decreasing). With ρₙ = |z|·(1 + h(n)) < 1 every later ratio is at most ρₙ and the tail after tₙ is at most
//! |tₙ|·ρₙ/(1−ρₙ). When |β| is huge next to c (BG/NBD fits with a and b
//! in the millions, where a·b ≈ b·r but c ≈ a+b) that bound needs n ~ √|β| terms to drop below 1, so a
//! second bound is taken beside it from the factored ratio tₖ₊₁/tₖ = z·(a+k)/(c+k)·(b+k)/(k+1): once a+n,
//! b+n and c+n are positive, each factor (p+k)/(q+k) is at most max(1, (p+n)/(q+n)) for every k ≥ n (it
//! rises toward 1 from below when p ≤ q and falls toward 1 when p > q); pairing the factors either way gives
//! two bounds, and ρₙ is the smallest of the three. Summation stops at the first n where that bound is ≤ 10⁻¹⁶·|Sₙ| (or when a term is exactly
//! zero: a terminating series, a or b a non-positive integer). More than 2,000,000 terms is an error.
//! Accuracy is then limited by rounding in the sum, ~n·ε relative for same-sign terms; the tests check 1e-10
//! relative against SciPy across the parameter ranges the models use.
//!
//! References: NIST DLMF §15.2, §15.4(ii), §15.8(i); Abramowitz & Stegun 15.3.3–15.3.5.

use super::ClvError;
use statrs::function::gamma::ln_gamma;

/// Upper bound on series terms; at z = 0.9999 about 4·10⁵ are needed, beyond that the caller's inputs are
/// outside what these models produce.
pub(crate) const MAX_TERMS: usize = 2_000_000;

/// Target relative size of the neglected tail.
const TAIL_TOL: f64 = 1e-16;

/// ₂F₁ split as `exp(ln_scale) · series`, so a caller can combine `ln_scale` with other logarithms before
/// exponentiating. `series` carries the sign of the function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Hyp2f1Parts {
    /// Natural logarithm of the (positive) transformation prefactor.
    pub(crate) ln_scale: f64,
    /// The value of the series after transformation.
    pub(crate) series: f64,
}

impl Hyp2f1Parts {
    /// ln|₂F₁|, finite unless the function is zero.
    pub(crate) fn ln_abs(&self) -> f64 {
        self.ln_scale + self.series.abs().ln()
    }
}

/// The Gaussian hypergeometric function ₂F₁(a, b; c; z) for real a, b, c and z ≤ 1 (see the module doc for
/// the method and its convergence criterion). Errors name the arguments: non-finite input, c a pole
/// (0, −1, −2, … not cancelled by a terminating a or b), z > 1, z = 1 where Gauss's sum does not apply, a
/// result outside f64, or no convergence within 2,000,000 terms.
pub fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> Result<f64, ClvError> {
    let parts = hyp2f1_parts(a, b, c, z)?;
    let v = parts.series * parts.ln_scale.exp();
    if v.is_finite() { Ok(v) } else { Err(err(a, b, c, z, "the value is outside the f64 range")) }
}

/// ₂F₁(a, b; c; z) as a log-prefactor and a series value (see [`Hyp2f1Parts`]).
pub(crate) fn hyp2f1_parts(a: f64, b: f64, c: f64, z: f64) -> Result<Hyp2f1Parts, ClvError> {
    if !(a.is_finite() && b.is_finite() && c.is_finite() && z.is_finite()) {
        return Err(err(a, b, c, z, "arguments must be finite"));
    }
    if z > 1.0 {
        return Err(err(a, b, c, z, "z > 1 is on the branch cut"));
    }
    if z == 0.0 || a == 0.0 || b == 0.0 {
        return pole_check(a, b, c, z).map(|_| Hyp2f1Parts { ln_scale: 0.0, series: 1.0 });
    }
    if z == 1.0 {
        return gauss_sum(a, b, c);
    }
    if z < 0.0 {
        // Pfaff: argument w = z/(z−1) in (0, 1); the prefactor (1−z)^(−a) is positive.
        let w = z / (z - 1.0);
        let s = series(a, c - b, c, w).map_err(|r| err(a, b, c, z, r))?;
        return Ok(Hyp2f1Parts { ln_scale: -a * (-z).ln_1p(), series: s });
    }
    // 0 < z < 1: the direct series or Euler's form, whichever needs fewer growing terms. A terminating
    // series (a or b a non-positive integer) stays direct.
    let terminating = is_nonpositive_int(a) || is_nonpositive_int(b);
    let beta_direct = (a * b - c).abs();
    let beta_euler = ((c - a) * (c - b) - c).abs();
    if terminating || beta_direct <= beta_euler {
        let s = series(a, b, c, z).map_err(|r| err(a, b, c, z, r))?;
        Ok(Hyp2f1Parts { ln_scale: 0.0, series: s })
    } else {
        let s = series(c - a, c - b, c, z).map_err(|r| err(a, b, c, z, r))?;
        Ok(Hyp2f1Parts { ln_scale: (c - a - b) * (-z).ln_1p(), series: s })
    }
}

fn err(a: f64, b: f64, c: f64, z: f64, reason: &str) -> ClvError {
    ClvError::Hyp2f1 { a, b, c, z, reason: reason.to_string() }
}

fn is_nonpositive_int(x: f64) -> bool {
    x <= 0.0 && x.fract() == 0.0
}

/// c = 0, −1, −2, … is a pole unless a or b terminates the series first.
fn pole_check(a: f64, b: f64, c: f64, z: f64) -> Result<(), ClvError> {
    if is_nonpositive_int(c) {
        let cancels = |p: f64| is_nonpositive_int(p) && p > c;
        if !(cancels(a) || cancels(b)) {
            return Err(err(a, b, c, z, "c is zero or a negative integer (a pole)"));
        }
    }
    Ok(())
}

/// Gauss's theorem at z = 1 (DLMF 15.4.20), for the case where all gamma arguments are positive.
fn gauss_sum(a: f64, b: f64, c: f64) -> Result<Hyp2f1Parts, ClvError> {
    if c > 0.0 && c - a > 0.0 && c - b > 0.0 && c - a - b > 0.0 {
        Ok(Hyp2f1Parts { ln_scale: ln_gamma(c) + ln_gamma(c - a - b) - ln_gamma(c - a) - ln_gamma(c - b), series: 1.0 })
    } else {
        Err(err(a, b, c, 1.0, "z = 1 is only supported where c > 0, c−a > 0, c−b > 0 and c−a−b > 0"))
    }
}

/// The Gauss series for |z| < 1 with the tail bound of the module doc.
fn series(a: f64, b: f64, c: f64, z: f64) -> Result<f64, &'static str> {
    let alpha = (a + b - c - 1.0).abs();
    let beta = (a * b - c).abs();
    let c_minus = (-c).max(0.0);
    let zabs = z.abs();
    let mut term = 1.0_f64;
    let mut sum = 1.0_f64;
    for n in 0..MAX_TERMS {
        let nf = n as f64;
        let den = (c + nf) * (nf + 1.0);
        let num = (a + nf) * (b + nf);
        if num == 0.0 {
            return Ok(sum); // terminating series: every later term is zero
        }
        if den == 0.0 {
            return Err("c is zero or a negative integer (a pole)");
        }
        term *= num / den * z;
        sum += term;
        if !sum.is_finite() {
            return Err("the series overflowed");
        }
        let m = nf + 1.0; // index of the term just added
        let mut rho = factored_ratio_bound(a, b, c, m) * zabs;
        if m > c_minus {
            let h = (alpha * m + beta) / ((m - c_minus) * m);
            rho = rho.min(zabs * (1.0 + h));
        }
        if rho < 1.0 && term.abs() * rho / (1.0 - rho) <= TAIL_TOL * sum.abs() {
            return Ok(sum);
        }
    }
    Err("the series did not converge within MAX_TERMS terms")
}

/// A bound on every later ratio |tₖ₊₁/tₖ|/|z| for k ≥ m from the factored form (see the module doc), or
/// infinity while some parameter plus m is not yet positive.
fn factored_ratio_bound(a: f64, b: f64, c: f64, m: f64) -> f64 {
    if a + m <= 0.0 || b + m <= 0.0 || c + m <= 0.0 {
        return f64::INFINITY;
    }
    // sup over k ≥ m of (p+k)/(q+k): below 1 when p ≤ q (it rises toward 1), else its value at k = m.
    let sup = |p: f64, q: f64| ((p + m) / (q + m)).max(1.0);
    (sup(a, c) * sup(b, 1.0)).min(sup(b, c) * sup(a, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (a, b, c, z, ₂F₁) from `scipy.special.hyp2f1` (SciPy 1.11.4), each also checked against mpmath 1.4.1
    /// at 40 digits (all agree to < 1e-14 relative). Produced by the first section of
    /// `benches/reference/clv_test_values.py`, run as `target/pyref-clv/bin/pip install mpmath &&
    /// target/pyref-clv/bin/python benches/reference/clv_test_values.py` (venv from `benches/clv.sh`).
    const SCIPY: &[(f64, f64, f64, f64, f64)] = &[
        (1.0, 1.0, 2.0, 0.5, 1.3862943611198901),
        (0.5, 0.5, 1.5, 0.25, std::f64::consts::FRAC_PI_3), // SciPy: 1.047197551196598 = π/3
        (2.5, 1.25, 3.75, 0.9, 4.632152126321804),
        (0.2426, 2.4259, 2.2188, 0.3, 1.1003510426751735),
        (2.2426, 4.4259, 5.2188, 0.5017, 3.6362352919519934),
        (30.24, 32.43, 32.22, 0.45, 80054346.61064254),
        (130.24, 132.43, 132.22, 0.8, 1.5119423544692295e+91),
        (-3.0, 2.0, 1.5, 0.7, -0.07519999999999999),
        (1.5, -0.3, 2.5, 0.6, 0.8691721381366432),
        (0.3, 0.7, -1.5, 0.2, 1.000669813780991),
        (1.0, 2.0, 3.0, -0.5, 0.7562791351346845),
        (0.75, 1.25, 2.5, -0.95, 0.7624291665071687),
        (1.5, 2.5, 3.5, -4.0, 0.15078780558304525),
        (0.2, 0.3, 0.4, -20.0, 0.6183841726608367),
        (3.0, 4.0, 8.5, 0.99, 17.528985129431298),
        (1.0, 1.0, 1.0, 0.1, 1.1111111111111112),
        (5.0, 7.0, 2.0, 0.2, 27.19461917877195),
        (200.5, 203.4, 203.2, 0.95, 1.3050124402066398e+261),
        (0.55, 2.9, 2.25, 0.9, 7.200381904719416),
        (40.55, 42.9, 42.25, 0.999, 3.8758747495005293e+123),
    ];

    #[test]
    fn matches_scipy_to_1e10_relative() {
        for &(a, b, c, z, want) in SCIPY {
            let got = hyp2f1(a, b, c, z).unwrap();
            let rel = ((got - want) / want).abs();
            assert!(rel < 1e-10, "2F1({a},{b};{c};{z}) = {got}, scipy {want}, rel {rel:e}");
        }
    }

    /// Parameters of a degenerate BG/NBD fit (a and b in the millions): the first criterion alone would need
    /// ~10⁴–10⁶ terms; with the factored bound the series stops after about as many terms as it needs.
    /// Reference: the Gauss series summed in mpmath at 50 digits until a term fell below 1e-45 of the sum.
    #[test]
    fn huge_b_and_c_match_a_50_digit_sum() {
        let cases = [
            (2.5, 14_000_000.5, 14_600_000.0, 0.9, 143.981_805_745_366_9),
            (1.3, 14_000_003.0, 14_600_002.3, 0.99, 48.267_937_929_394_4),
            (0.8, 5_000_000.0, 5_200_000.0, 0.5, 1.689_318_996_054_662),
        ];
        for (a, b, c, z, want) in cases {
            let got = hyp2f1(a, b, c, z).unwrap();
            assert!(((got - want) / want).abs() < 1e-12, "₂F₁({a}, {b}; {c}; {z}) = {got}, want {want}");
        }
    }

    #[test]
    fn closed_forms() {
        // ₂F₁(1,1;2;z) = −ln(1−z)/z; ₂F₁(a,b;b;z) = (1−z)^(−a).
        for z in [-3.0_f64, -0.5, 0.1, 0.5, 0.95] {
            let want = -(-z).ln_1p() / z;
            let got = hyp2f1(1.0, 1.0, 2.0, z).unwrap();
            assert!(((got - want) / want).abs() < 1e-13, "z={z}: {got} vs {want}");
            let want = (1.0 - z).powf(-0.7);
            let got = hyp2f1(0.7, 2.3, 2.3, z).unwrap();
            assert!(((got - want) / want).abs() < 1e-13, "z={z}: {got} vs {want}");
        }
        // Gauss's sum at z = 1: ₂F₁(1, 1; 3; 1) = Γ(3)Γ(1)/(Γ(2)Γ(2)) = 2.
        assert!((hyp2f1(1.0, 1.0, 3.0, 1.0).unwrap() - 2.0).abs() < 1e-13);
        // z = 0 and a terminating series at a pole of c that the termination avoids.
        assert_eq!(hyp2f1(3.0, 4.0, 5.0, 0.0).unwrap(), 1.0);
        // ₂F₁(−1, b; c; z) = 1 − b z / c even with c = −2 (the series stops before the pole).
        let got = hyp2f1(-1.0, 3.0, -2.0, 0.5).unwrap();
        assert!((got - (1.0 - 3.0 * 0.5 / -2.0)).abs() < 1e-15);
    }

    #[test]
    fn overflowing_value_is_available_as_parts() {
        // Direct value ~1e304+ would overflow; the parts stay finite and the log matches the Euler form.
        let p = hyp2f1_parts(400.2, 402.4, 402.2, 0.9).unwrap();
        assert!(p.ln_abs().is_finite());
        assert!(p.ln_abs() > 700.0);
    }

    #[test]
    fn refuses_invalid_arguments() {
        assert!(matches!(hyp2f1(1.0, 1.0, -1.0, 0.5), Err(ClvError::Hyp2f1 { .. })));
        assert!(hyp2f1(1.0, 1.0, 2.0, 1.5).is_err());
        assert!(hyp2f1(f64::NAN, 1.0, 2.0, 0.5).is_err());
        assert!(hyp2f1(1.0, 1.0, 1.5, 1.0).is_err()); // c−a−b < 0 diverges at z = 1
    }
}
