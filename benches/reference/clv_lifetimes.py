"""lifetimes 0.11.3 side of benches/clv.sh: fit BetaGeoFitter and GammaGammaFitter on the summary CSV the
Rust benchmark wrote, best of N repetitions of each `fit` call (fit only: the CSV is read once beforehand).

Usage: clv_lifetimes.py SUMMARY_CSV OUT_JSON [REPS]
The timed fits use lifetimes' defaults (tol=1e-7, penalizer 0). A second, untimed fit with the tightest
tolerance lifetimes accepts (1e-10, else 1e-9, 1e-8: below that SciPy may stop on "precision loss", which
lifetimes treats as failure) is recorded too, to tell optimizer tolerance apart from real disagreement.
"""
import contextlib
import io
import json
import sys
import time
import warnings

import numpy as np
import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter
from scipy.special import gammaln

warnings.simplefilter("ignore")

summary_csv, out_json = sys.argv[1], sys.argv[2]
reps = int(sys.argv[3]) if len(sys.argv) > 3 else 5
df = pd.read_csv(summary_csv)
rep = df[(df["frequency"] > 0) & (df["monetary_value"] > 0)]


def best_of(fn):
    best, result = float("inf"), None
    for _ in range(reps):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def bg_fit(tol=1e-7):
    return BetaGeoFitter().fit(df["frequency"], df["recency"], df["T"], tol=tol)


def gg_fit(tol=1e-7):
    return GammaGammaFitter().fit(rep["frequency"], rep["monetary_value"], tol=tol)


def bgnbd_ll(r, alpha, a, b):
    """Full BG/NBD log-likelihood in the CSV's time unit (days), comparable with the Rust report."""
    x, tx, T = df["frequency"].values, df["recency"].values, df["T"].values
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    a4 = np.where(x > 0, np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(alpha + tx), -np.inf)
    return float(np.sum(a1 + a2 + np.logaddexp(a3, a4)))


def gg_ll(p, q, v):
    x, m = rep["frequency"].values.astype(float), rep["monetary_value"].values
    px = p * x
    return float(np.sum(gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(v) + (px - 1) * np.log(m)
                        + px * np.log(x) - (px + q) * np.log(x * m + v)))


bg_s, bgf = best_of(bg_fit)
gg_s, ggf = best_of(gg_fit)
def tightest(fit):
    for tol in (1e-10, 1e-9, 1e-8):
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # lifetimes prints SciPy's result on failure
                return tol, fit(tol)
        except Exception:
            continue
    return 1e-7, fit(1e-7)


(bg_tol, bg_tight), (gg_tol, gg_tight) = tightest(bg_fit), tightest(gg_fit)
params = lambda f: {k: float(v) for k, v in f.params_.items()}
report = {
    "customers": len(df),
    "gamma_gamma_customers": len(rep),
    "repetitions": reps,
    "bgnbd_fit_best_s": bg_s,
    "gamma_gamma_fit_best_s": gg_s,
    "bgnbd": params(bgf),
    "bgnbd_log_likelihood": bgnbd_ll(*bgf.params_.values),
    "gamma_gamma": params(ggf),
    "gamma_gamma_log_likelihood": gg_ll(*ggf.params_.values),
    "bgnbd_tight_tol": bg_tol,
    "gamma_gamma_tight_tol": gg_tol,
    "bgnbd_tight": params(bg_tight),
    "bgnbd_tight_log_likelihood": bgnbd_ll(*bg_tight.params_.values),
    "gamma_gamma_tight": params(gg_tight),
    "gamma_gamma_tight_log_likelihood": gg_ll(*gg_tight.params_.values),
}
with open(out_json, "w") as f:
    json.dump(report, f, indent=2)
print(f"lifetimes: BG/NBD fit best of {reps}: {bg_s * 1e3:.1f} ms; Gamma-Gamma fit: {gg_s * 1e3:.1f} ms")
