#!/usr/bin/env bash
# Market-basket rules on UCI Online Retail, huiyuan-analytics' FP-growth + association rules beside mlxtend's
# fpgrowth + association_rules, in the same run, on the same baskets (invoices without cancellations and
# non-positive quantities; items = StockCode). Checks that both give the same rules (same antecedent and
# consequent sets, every metric equal to 1e-9) and prints both times and the ratio; Rust is timed on all
# cores (rayon) and again on one thread, mlxtend being single-threaded.
# Usage: benches/basket.sh [min-supports, default 0.02,0.01,0.005]
# Env: DATA (the .csv.gz), MIN_CONFIDENCE (0.3), MIN_LIFT (1.0), MAX_LEN (none), RUST_RUNS (7), PY_RUNS (3).
set -euo pipefail
cd "$(dirname "$0")/.."
SUPPORTS=${1:-0.02,0.01,0.005}
DATA=${DATA:-../shared/data/online_retail/online_retail.csv.gz}
MIN_CONFIDENCE=${MIN_CONFIDENCE:-0.3}
MIN_LIFT=${MIN_LIFT:-1.0}
MAX_LEN=${MAX_LEN:-none}
RUST_RUNS=${RUST_RUNS:-7}
PY_RUNS=${PY_RUNS:-3}
[ -f "$DATA" ] || { echo "missing $DATA (set DATA=...)"; exit 1; }
DATA=$(realpath "$DATA")
OUT=$PWD/target/basket-bench
VENV=$PWD/target/pyref-basket
REQ=benches/reference/requirements-basket.txt
mkdir -p "$OUT"
rm -f "$OUT"/rules_*.csv

if ! "$VENV/bin/python" -c "import mlxtend" 2>/dev/null || ! cmp -s "$REQ" "$VENV/requirements.txt"; then
  echo "== creating $VENV (mlxtend reference)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
  cp "$REQ" "$VENV/requirements.txt"
fi

echo "== huiyuan-analytics basket::mine (Rust, rayon on $(nproc) cores)"
cargo bench -q -p huiyuan-analytics --bench basket -- --data "$DATA" --out "$OUT" --min-support "$SUPPORTS" \
  --min-confidence "$MIN_CONFIDENCE" --min-lift "$MIN_LIFT" --max-len "$MAX_LEN" --runs "$RUST_RUNS" | tee "$OUT/rust.txt"
echo "-- again on one thread (RAYON_NUM_THREADS=1), as mlxtend runs"
mkdir -p "$OUT/one-thread"
RAYON_NUM_THREADS=1 cargo bench -q -p huiyuan-analytics --bench basket -- --data "$DATA" --out "$OUT/one-thread" \
  --min-support "$SUPPORTS" --min-confidence "$MIN_CONFIDENCE" --min-lift "$MIN_LIFT" --max-len "$MAX_LEN" \
  --runs "$RUST_RUNS" | grep TIME | tee "$OUT/rust1.txt"
echo
echo "== mlxtend fpgrowth + association_rules (Python, same baskets)"
"$VENV/bin/python" benches/reference/basket_mlxtend.py --baskets "$OUT/baskets.tsv" --out "$OUT" \
  --min-support "$SUPPORTS" --min-confidence "$MIN_CONFIDENCE" --min-lift "$MIN_LIFT" --max-len "$MAX_LEN" \
  --runs "$PY_RUNS" | tee "$OUT/mlxtend.txt"
echo
echo "== comparison (min_confidence $MIN_CONFIDENCE, min_lift $MIN_LIFT, max_len $MAX_LEN)"
"$VENV/bin/python" - "$OUT" "$SUPPORTS" <<'PY'
import csv, math, sys

out, supports = sys.argv[1], sys.argv[2].split(",")
METRICS = ["antecedent support", "consequent support", "support", "confidence", "lift", "leverage", "conviction"]

def times(path, tool):
    t = {}
    for line in open(path):
        p = line.split()
        if len(p) == 4 and p[0] == "TIME" and p[1] == tool:
            t[p[2]] = float(p[3])
    return t

def rules(path):
    with open(path, newline="") as f:
        return {
            (frozenset(filter(None, r["antecedents"].split("|"))), frozenset(filter(None, r["consequents"].split("|")))):
            [float(r[m]) for m in METRICS]
            for r in csv.DictReader(f)
        }

def same(a, b):
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= 1e-9

rust_t, py_t = times(f"{out}/rust.txt", "rust"), times(f"{out}/mlxtend.txt", "mlxtend")
rust1_t = times(f"{out}/rust1.txt", "rust")
ok = True
print(f"{'min_support':>11} {'rules':>7} {'identical':>9} {'max |diff|':>10} {'Rust ms':>9} {'1 thread':>9} "
      f"{'mlxtend ms':>11} {'speed-up':>9} {'1 thread':>9}")
for s in supports:
    r, m = rules(f"{out}/rules_rust_{s}.csv"), rules(f"{out}/rules_mlxtend_{s}.csv")
    diff = 0.0
    good = r.keys() == m.keys()
    for k in r.keys() & m.keys():
        for a, b in zip(r[k], m[k]):
            good &= same(a, b)
            if not (math.isinf(a) or math.isinf(b)):
                diff = max(diff, abs(a - b))
    if r.keys() != m.keys():
        print(f"  {s}: only Rust {len(r.keys() - m.keys())}, only mlxtend {len(m.keys() - r.keys())}")
    if rules(f"{out}/one-thread/rules_rust_{s}.csv") != r:
        print(f"  {s}: the one-thread Rust run gave other rules")
        good = False
    ok &= good
    print(f"{s:>11} {len(r):>7} {'yes' if good else 'NO':>9} {diff:>10.1e} {rust_t[s]*1e3:>9.1f} {rust1_t[s]*1e3:>9.1f} "
          f"{py_t[s]*1e3:>11.1f} {py_t[s]/rust_t[s]:>8.0f}x {py_t[s]/rust1_t[s]:>8.0f}x")
sys.exit(0 if ok else 1)
PY
