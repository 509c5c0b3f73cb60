"""Reference values for the CLV unit tests (crates/analytics/src/clv/tests.rs), from lifetimes 0.11.3 and SciPy.

Run from the repository root (the venv is the one benches/clv.sh creates, plus mpmath):
    target/pyref-clv/bin/pip install mpmath
    target/pyref-clv/bin/python benches/reference/clv_test_values.py
It prints Rust-ready numbers that the tests embed.
"""
import mpmath as mp
import numpy as np
import pandas as pd
from scipy.special import gammaln, hyp2f1
from lifetimes import BetaGeoFitter, GammaGammaFitter

# --- 2F1 reference values (src/clv/special.rs), SciPy checked against mpmath at 40 digits.
mp.mp.dps = 40
HYP_CASES = [
    (1.0, 1.0, 2.0, 0.5), (0.5, 0.5, 1.5, 0.25), (2.5, 1.25, 3.75, 0.9), (0.2426, 2.4259, 2.2188, 0.3),
    (2.2426, 4.4259, 5.2188, 0.5017), (30.24, 32.43, 32.22, 0.45), (130.24, 132.43, 132.22, 0.8),
    (-3.0, 2.0, 1.5, 0.7), (1.5, -0.3, 2.5, 0.6), (0.3, 0.7, -1.5, 0.2), (1.0, 2.0, 3.0, -0.5),
    (0.75, 1.25, 2.5, -0.95), (1.5, 2.5, 3.5, -4.0), (0.2, 0.3, 0.4, -20.0), (3.0, 4.0, 8.5, 0.99),
    (1.0, 1.0, 1.0, 0.1), (5.0, 7.0, 2.0, 0.2), (200.5, 203.4, 203.2, 0.95), (0.55, 2.9, 2.25, 0.9),
    (40.55, 42.9, 42.25, 0.999),
]
print("# (a, b, c, z, scipy.special.hyp2f1)")
for a, b, c, z in HYP_CASES:
    s = hyp2f1(a, b, c, z)
    m = float(mp.hyp2f1(a, b, c, z))
    print(f"({a!r}, {b!r}, {c!r}, {z!r}, {s!r}),  # mpmath relative difference {abs(s - m) / abs(m):.1e}")

df = pd.read_csv("crates/analytics/tests/data/cdnow_customers_summary_with_transactions.csv")
x, tx, T, m = df["x"].values, df["t_x"].values, df["T"].values, df["zbar"].values


def bgnbd_ll(r, alpha, a, b):
    """Full BG/NBD log-likelihood (FHL 2005 eq. 6) written independently of lifetimes, in SciPy."""
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    a4 = np.where(x > 0, np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(alpha + tx), -np.inf)
    return float(np.sum(a1 + a2 + np.logaddexp(a3, a4)))


print("# BG/NBD log-likelihood at the published Fader-Hardie parameters (0.2426, 4.4136, 0.7929, 2.4259)")
print(repr(bgnbd_ll(0.2426, 4.4136, 0.7929, 2.4259)))

bgf = BetaGeoFitter().fit(df["x"], df["t_x"], df["T"], tol=1e-9)
p = bgf.params_
print("# lifetimes BetaGeoFitter(tol=1e-9) params r, alpha, a, b")
print(repr(tuple(float(v) for v in p)))
print("# full log-likelihood at those params")
print(repr(bgnbd_ll(*p)))

# Predictions at fixed parameters (the published ones), so that they test the formulas, not the fit.
bgf.params_ = pd.Series([0.2426, 4.4136, 0.7929, 2.4259], index=["r", "alpha", "a", "b"])
cases = [(0, 0.0, 38.86), (2, 30.43, 38.86), (1, 1.71, 38.86), (7, 29.43, 35.0), (14, 30.0, 31.0), (40, 50.0, 52.0)]
print("# (x, t_x, T, E[Y(39)|x,t_x,T], E[Y(78)|...], P(alive)) at the published parameters")
for cx, ctx, cT in cases:
    e39 = float(bgf.conditional_expected_number_of_purchases_up_to_time(39.0, cx, ctx, cT))
    e78 = float(bgf.conditional_expected_number_of_purchases_up_to_time(78.0, cx, ctx, cT))
    pa = float(bgf.conditional_probability_alive(cx, ctx, cT)[0])
    print(f"({cx}, {ctx!r}, {cT!r}, {e39!r}, {e78!r}, {pa!r}),")
print("# E[X(t)] for t in 1, 39, 78, 520")
for t in [1.0, 39.0, 78.0, 520.0]:
    print(f"({t!r}, {float(bgf.expected_number_of_purchases_up_to_time(t))!r}),")
print("# P(X(t)=n) for t=38.86, n in 0, 1, 2, 7")
for n in [0, 1, 2, 7]:
    print(f"({n}, {float(bgf.probability_of_n_purchases_up_to_time(38.86, n))!r}),")

print("# GammaGammaFitter(tol=1e-9) on customers with x>0: p, q, v")
rep = df[df["x"] > 0]
ggf = GammaGammaFitter().fit(rep["x"], rep["zbar"], tol=1e-9)
print(repr(tuple(float(v) for v in ggf.params_)))
print("# conditional expected average profit for (x, m) at those params")
for cx, cm in [(1, 11.77), (2, 22.35), (10, 40.0)]:
    print(f"({cx}, {cm!r}, {float(ggf.conditional_expected_average_profit(cx, cm))!r}),")

# CLV with lifetimes' convention (freq="D": months of 30 days) at fixed parameters, times read as days.
bgf.params_ = pd.Series([0.55, 60.0, 0.35, 2.9], index=["r", "alpha", "a", "b"])
ggf.params_ = pd.Series([6.25, 3.74, 15.44], index=["p", "q", "v"])
ids = pd.Index([0, 1, 2])
fr = pd.Series([0, 3, 12], index=ids)
rc = pd.Series([0.0, 120.0, 300.0], index=ids)
ag = pd.Series([200.0, 250.0, 310.0], index=ids)
mv = pd.Series([0.0, 35.0, 18.5], index=ids)
clv = ggf.customer_lifetime_value(bgf, fr, rc, ag, mv, time=12, discount_rate=0.01, freq="D")
print("# (x, t_x, T, m, CLV 12 months at 1%/month), BG/NBD (0.55, 60, 0.35, 2.9), Gamma-Gamma (6.25, 3.74, 15.44)")
for i in ids:
    print(f"({fr[i]}, {rc[i]!r}, {ag[i]!r}, {mv[i]!r}, {float(clv[i])!r}),")
