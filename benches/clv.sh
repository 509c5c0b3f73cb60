#!/usr/bin/env bash
# CLV fits, side by side in one run: huiyuan-analytics (Rust) vs the Python lifetimes 0.11.3 package, on the
# identical Online Retail repeat-purchase summary (the Rust benchmark writes it, lifetimes reads it).
# Prints both fit times (best of several repetitions, fit only), the speed ratio, and the largest parameter
# differences. Usage: benches/clv.sh   (HUIYUAN_DATA overrides the data folder, default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${HUIYUAN_DATA:-../shared/data}/online_retail/online_retail.csv.gz
OUT=$PWD/target/clv-bench
VENV=$PWD/target/pyref-clv
[ -f "$DATA" ] || { echo "missing $DATA (set HUIYUAN_DATA to the folder holding online_retail/)"; exit 1; }
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import lifetimes" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r benches/reference/requirements-clv.txt
fi
mkdir -p "$OUT"
CLV_DATA=$(realpath "$DATA") CLV_OUT=$OUT CLV_REPS=${CLV_REPS:-30} \
  cargo bench -q -p huiyuan-analytics --bench clv
"$VENV/bin/python" benches/reference/clv_lifetimes.py "$OUT/summary.csv" "$OUT/lifetimes.json" "${PY_REPS:-5}"
"$VENV/bin/python" - "$OUT/rust.json" "$OUT/lifetimes.json" <<'PY'
import json, sys
rs, py = (json.load(open(p)) for p in sys.argv[1:3])
assert rs["customers"] == py["customers"], "different summaries"
def diffs(a, b):
    return max(abs(a[k] - b[k]) for k in b), max(abs(a[k] - b[k]) / abs(b[k]) for k in b)
for name, key, ll in [("BG/NBD", "bgnbd", lambda r: r["bgnbd"]["log_likelihood"]),
                      ("Gamma-Gamma", "gamma_gamma", lambda r: r["gamma_gamma"]["log_likelihood"])]:
    ours = rs[key]["params"]
    t_rs, t_py = rs[f"{key}_fit_best_s"], py[f"{key}_fit_best_s"]
    ab, rel = diffs(ours, py[key])
    ab2, rel2 = diffs(ours, py[f"{key}_tight"])
    print(f"{name}: rust {t_rs*1e3:.2f} ms, lifetimes {t_py*1e3:.1f} ms -> {t_py/t_rs:.0f}x faster")
    print(f"  rust params       {', '.join(f'{k}={ours[k]:.6f}' for k in py[key])}  LL {ll(rs):.6f}")
    print(f"  lifetimes (1e-7)  {', '.join(f'{k}={v:.6f}' for k, v in py[key].items())}  LL {py[f'{key}_log_likelihood']:.6f}")
    tol = py[f"{key}_tight_tol"]
    print(f"  lifetimes ({tol:g}) {', '.join(f'{k}={v:.6f}' for k, v in py[f'{key}_tight'].items())}  LL {py[f'{key}_tight_log_likelihood']:.6f}")
    print(f"  max |diff| vs lifetimes default: {ab:.2e} (relative {rel:.2e}); vs tol {tol:g}: {ab2:.2e} (relative {rel2:.2e})")
PY
