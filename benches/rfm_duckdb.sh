#!/usr/bin/env bash
# RFM + lifecycle over UCI Online Retail: huiyuan-analytics (Rust) beside the same RFM written as one DuckDB SQL
# query, in the same run, on the same order rows (the Rust bench writes them, DuckDB loads them untimed).
# Checks that every member's R, F, M scores and segment are identical on both sides (the run fails on any
# mismatch), and prints both times (best of several repetitions, wall and process CPU) and the ratios.
# Usage: benches/rfm_duckdb.sh   (HUIYUAN_DATA overrides the data folder, default ../shared/data)
# Env: RFM_REPS (Rust repetitions, 200), PY_REPS (DuckDB repetitions, 100).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${HUIYUAN_DATA:-../shared/data}/online_retail/online_retail.csv.gz
OUT=$PWD/target/rfm-duckdb-bench
VENV=$PWD/target/pyref-rfm-duckdb
REQ=benches/reference/requirements-rfm-duckdb.txt
[ -f "$DATA" ] || { echo "missing $DATA (set HUIYUAN_DATA to the folder holding online_retail/)"; exit 1; }
if ! "$VENV/bin/python" -c "import duckdb" 2>/dev/null || ! cmp -s "$REQ" "$VENV/requirements.txt"; then
  echo "== creating $VENV (DuckDB reference)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
  cp "$REQ" "$VENV/requirements.txt"
fi
mkdir -p "$OUT"
rm -f "$OUT"/*.csv "$OUT"/*.json
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== huiyuan-analytics: group per member + rfm + lifecycle (Rust, release)"
RFM_DATA=$(realpath "$DATA") RFM_OUT=$OUT RFM_REPS=${RFM_REPS:-200} \
  cargo bench -q -p huiyuan-analytics --bench rfm_retail
AS_OF=$("$VENV/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["as_of"])' "$OUT/rust.json")
echo "== DuckDB: the same RFM as one SQL query over the same orders"
"$VENV/bin/python" benches/reference/rfm_duckdb.py "$OUT/orders.csv" "$OUT" "$AS_OF" "${PY_REPS:-100}"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== comparison"
"$VENV/bin/python" - "$OUT" <<'PY'
import csv, json, sys

out = sys.argv[1]
rs, dk = json.load(open(f"{out}/rust.json")), json.load(open(f"{out}/duckdb.json"))
KEYS = ["recency_days", "orders", "monetary_fen", "r", "f", "m", "segment"]
def members(path, scored_only):
    with open(path, newline="") as f:
        return {int(r["member_id"]): tuple(r[k] for k in KEYS) for r in csv.DictReader(f) if not scored_only or r["segment"]}
ours, theirs = members(f"{out}/rust_members.csv", True), members(f"{out}/duckdb_members.csv", False)
only_rust, only_duck = ours.keys() - theirs.keys(), theirs.keys() - ours.keys()
differ = [k for k in ours.keys() & theirs.keys() if ours[k] != theirs[k]]
mismatches = len(only_rust) + len(only_duck) + len(differ)
for k in sorted(differ)[:5]:
    print(f"  member {k}: rust {ours[k]} duckdb {theirs[k]}")
print(f"members scored: rust {len(ours)} (of {rs['members']}; {rs['unscored']} unscored), duckdb {len(theirs)}; "
      f"only in rust {len(only_rust)}, only in duckdb {len(only_duck)}, differing R/F/M/segment {len(differ)}")
print(f"MISMATCHES: {mismatches}")
print("segments (rust / duckdb):")
SEGMENTS = ["important_value", "important_develop", "important_keep", "important_retain",
            "general_value", "general_develop", "general_keep", "general_retain"]
assert sorted(SEGMENTS) == sorted(rs["segments"]), "unexpected segment codes"
for code in SEGMENTS:
    n = rs["segments"][code]
    print(f"  {code:<18} {n:>5} / {dk['segments'].get(code, 0):>5}")
print("lifecycle stages (rust only): " + ", ".join(f"{k} {rs['stages'][k]}" for k in ["potential", "new", "active", "sleeping", "churned"]))
d_w, d_c = dk["wall_best_s"], dk["cpu_best_s"]
print(f"{'':<36} {'wall best':>10} {'cpu best':>10} {'DuckDB/Rust wall':>17} {'cpu':>6}")
for name, key in [("rust group + rfm + lifecycle", "total"), ("rust group + rfm", "group_rfm")]:
    w, c = rs[key]["wall_best_s"], rs[key]["cpu_best_s"]
    print(f"{name:<36} {w*1e3:>7.3f} ms {c*1e3:>7.3f} ms {d_w/w:>16.1f}x {d_c/c:>5.1f}x")
print(f"{'duckdb query + fetch (compared)':<36} {d_w*1e3:>7.3f} ms {d_c*1e3:>7.3f} ms")
e_w, e_c = dk["engine_wall_best_s"], dk["engine_cpu_best_s"]
t_w, t_c = rs["total"]["wall_best_s"], rs["total"]["cpu_best_s"]
print(f"{'duckdb engine alone (no fetch)':<36} {e_w*1e3:>7.3f} ms {e_c*1e3:>7.3f} ms "
      f"{e_w/t_w:>16.1f}x {e_c/t_c:>5.1f}x  (vs rust group + rfm + lifecycle)")
sys.exit(1 if mismatches else 0)
PY
