#!/usr/bin/env bash
# Scale: `huiyuan analyze` over a synthetic shop of 1,000,000 members and 20,000,000 orders on SQLite.
# Targets: the whole analysis under 60 s and under 4 GB peak memory on this machine.
#
# 1. Creates the database with the release binary (`huiyuan migrate`: the real schema), then fills it with
#    benches/scale_gen.py (seeded, deterministic, all in SQLite; see its docstring for the data's shape).
#    Skipped when the database exists with the expected row counts and the generator's marker.
# 2. Clears earlier analysis runs, then runs `/usr/bin/time -v huiyuan analyze --as-of 2026-10-31` RUNS times
#    (the first with no previous run; later ones compare with the previous run, as the daily schedule does)
#    and prints wall and CPU time, peak RSS, the stages the command reports (each store read is its own
#    `load …` stage), the store reads sqlx logs as slower than 1 s, and peak resident memory by stage.
#
# Usage: benches/scale.sh
# Env: DB (target/scale/scale.db), MEMBERS (1000000), ORDERS (20000000), SEED (20261031), RUNS (1; 0 only
#      generates), MEM_LIMIT_GB (14: address-space limit of the analyze process, so that a run which needs far
#      more than the target fails alone instead of pushing a shared machine out of memory),
#      BIN (${CARGO_TARGET_DIR:-target}/release/huiyuan; built with `cargo build --release --bin huiyuan`),
#      RSS_EVERY (0.5: seconds between resident-memory samples),
#      FRESH (0; 1 keeps a copy of the generated data as "$DB.pristine", twice the disk, and starts every
#      invocation from it, so builds measured one after the other read the same file).
set -euo pipefail
cd "$(dirname "$0")/.."
MEMBERS=${MEMBERS:-1000000}
ORDERS=${ORDERS:-20000000}
SEED=${SEED:-20261031}
RUNS=${RUNS:-1}
FRESH=${FRESH:-0}
MEM_LIMIT_GB=${MEM_LIMIT_GB:-14}
RSS_EVERY=${RSS_EVERY:-0.5}
AS_OF=2026-10-31
DB=${DB:-target/scale/scale.db}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/huiyuan}
[ -x "$BIN" ] || { echo "missing $BIN: cargo build --release --bin huiyuan"; exit 1; }
[ -x /usr/bin/time ] || { echo "missing /usr/bin/time (Debian package: time)"; exit 1; }
mkdir -p "$(dirname "$DB")"
DB=$(realpath "$DB")
OUT=$(dirname "$DB")
CONFIG=$OUT/scale.toml
MARK="$DB.generated"
WANT="members=$MEMBERS orders=$ORDERS seed=$SEED"

# The program the ledger rows follow: points at once (no return window), never expiring.
cat > "$CONFIG" <<'EOF'
[loyalty]
return_window_days = 0
expiry_months = 0
EOF

count() {
  python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])' "$DB" "$1"
}

echo "== data: $WANT"
PRISTINE="$DB.pristine"
if [ "$FRESH" = 1 ] && [ -f "$PRISTINE" ] && [ "$(cat "$PRISTINE.generated" 2>/dev/null)" = "$WANT" ]; then
  # Every run writes member rows and tags and frees the earlier ones' pages, so the file grows and the
  # reads of the next invocation see a different file: start from the data as generated.
  echo "copying the data as generated ($PRISTINE) over $DB"
  rm -f "$DB-wal" "$DB-shm"
  cp "$PRISTINE" "$DB"
  cp "$PRISTINE.generated" "$MARK"
fi
if [ -f "$DB" ] && [ "$(cat "$MARK" 2>/dev/null)" = "$WANT" ] && [ "$(count 'SELECT COUNT(*) FROM members')" = "$MEMBERS" ] \
  && [ "$(count 'SELECT COUNT(*) FROM orders')" = "$ORDERS" ]; then
  echo "reusing $DB (generated earlier with the same parameters)"
else
  rm -f "$DB" "$DB-wal" "$DB-shm" "$MARK" "$OUT/scale.key"
  "$BIN" --config "$CONFIG" migrate --db "sqlite://$DB"
  t0=$SECONDS
  SQLITE_TMPDIR=$OUT python3 benches/scale_gen.py "$DB" --members "$MEMBERS" --orders "$ORDERS" --seed "$SEED"
  echo "$WANT" > "$MARK"
  echo "generated in $((SECONDS - t0)) s (migration included)"
  if [ "$FRESH" = 1 ]; then
    cp "$DB" "$PRISTINE"
    cp "$MARK" "$PRISTINE.generated"
    echo "kept a copy of the data as generated: $PRISTINE"
  fi
fi
python3 - "$DB" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for t in ["members", "orders", "order_lines", "skus", "refunds", "refund_lines", "ledger_entries", "events"]:
    print(f"  {t:<16} {db.execute(f'SELECT COUNT(*) FROM {t}').fetchone()[0]:>12,}")
cut = 1793491200 * 10**6  # 2026-11-01T00:00:00Z, the end of the as-of day
q = lambda sql: db.execute(sql).fetchone()[0]
print(f"  buyers           {q('SELECT COUNT(DISTINCT member_id) FROM orders'):>12,}")
print(f"  one-time buyers  {q('SELECT COUNT(*) FROM (SELECT 1 FROM orders GROUP BY member_id HAVING COUNT(*) = 1)'):>12,}")
print(f"  most orders      {q('SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM orders GROUP BY member_id)'):>12,}  (one member)")
print(f"  orders, last 365 days {q(f'SELECT COUNT(*) FROM orders WHERE placed_at >= {cut} - 365 * 86400000000'):>12,}")
print(f"  events, last 30 days  {q(f'SELECT COUNT(*) FROM events WHERE occurred_at >= {cut} - 30 * 86400000000'):>12,}")
PY
ls -l "$DB" | awk '{printf "  database file    %.1f GB\n", $5 / 1e9}'

for run in $(seq 1 "$RUNS"); do
  if [ "$run" = 1 ]; then
    # A clean slate: no earlier run to compare with, no generated tags.
    python3 - "$DB" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for t in ["member_analytics_changes", "member_analytics", "analytics_results", "analytics_runs", "member_tags"]:
    db.execute(f"DELETE FROM {t}")
db.commit()
PY
  fi
  echo
  echo "== huiyuan analyze --as-of $AS_OF (run $run of $RUNS)"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  free -g | awk '/Mem:/ {print "memory: " $2 " GB total, " $7 " GB available"}'
  echo "address-space limit: $MEM_LIMIT_GB GB"
  status=0
  ( ulimit -v $((MEM_LIMIT_GB * 1024 * 1024)) && exec /usr/bin/time -v -o "$OUT/time.txt" "$BIN" --config "$CONFIG" \
      analyze --db "sqlite://$DB" --as-of "$AS_OF" > "$OUT/analyze.txt" 2> "$OUT/analyze.err" ) &
  job=$!
  # Resident memory every $RSS_EVERY seconds (for memory by stage); the process is the time command's child.
  : > "$OUT/rss.txt"
  t0=$(date +%s%N)
  while kill -0 "$job" 2>/dev/null; do
    pid=$(pgrep -P "$job" -n || true)
    [ -n "$pid" ] && awk -v t="$(( ($(date +%s%N) - t0) / 1000000 ))" '/VmRSS/ {print t / 1000, $2}' \
      "/proc/$pid/status" >> "$OUT/rss.txt" 2>/dev/null || true
    sleep "$RSS_EVERY"
  done
  wait "$job" || status=$?
  [ "$status" = 0 ] || { echo "analyze FAILED (exit $status):"; tail -5 "$OUT/analyze.err"; }
  echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
  sed -n '/^stages:/,$p' "$OUT/analyze.txt"
  awk -F': ' '
    /Elapsed \(wall clock\)/ {wall = $2}
    /User time/ {user = $2}
    /System time/ {sys = $2}
    /Maximum resident set size/ {rss = $2}
    END {
      n = split(wall, p, ":"); s = (n == 3) ? p[1] * 3600 + p[2] * 60 + p[3] : p[1] * 60 + p[2]
      printf "TOTAL wall %.1f s  user %.1f s  sys %.1f s  peak RSS %.2f GB\n", s, user, sys, rss / 1048576
      printf "targets: wall < 60 s %s, peak RSS < 4 GB %s\n", (s < 60 ? "MET" : "NOT MET"), (rss < 4194304 ? "MET" : "NOT MET")
    }' "$OUT/time.txt"
  # The store's reads, as sqlx logs every statement slower than a second (time to the last row).
  python3 - "$OUT/analyze.err" <<'PY'
import re, sys
names = [("UNION", "active_members_by_day"), ("registered_at FROM members", "analytics_members"),
         ("(placed_at / ", "purchase_days"),
         ("FROM refunds", "refund_days"), ("MAX(occurred_at)", "event_tallies"), ("JOIN order_lines", "line_facts"),
         ("FROM ledger_entries", "points_days"), ("session_id, sku FROM events", "event_rows"),
         ("'check_in', 'campaign_click'", "engagement_days"),
         ("custom.review", "member_texts"), ("FROM member_analytics ", "member_analytics_rows"),
         ("FROM member_tags", "member_tags")]
rows = []
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    if "slow statement" not in line:
        continue
    stmt = re.search(r'db\.statement="(.*?)" rows_affected', line)
    secs = re.search(r"elapsed_secs=([0-9.]+)", line)
    n = re.search(r"rows_returned=([0-9]+)", line)
    text = stmt.group(1) if stmt else ""
    name = next((v for k, v in names if k in text), text.strip()[:48])
    rows.append((name, float(secs.group(1)) if secs else 0.0, int(n.group(1)) if n else 0))
if rows:
    print("store reads over 1 s (sqlx's slow-statement log):")
    for name, secs, n in rows:
        print(f"  {name:<24} {secs:8.2f} s  {n:>12,} rows")
PY
  # Peak resident memory within each stage: the stages are reported back to back (each store read, the
  # grouping by member, each model, storing the results), so their windows are laid end to end from the start.
  python3 - "$OUT/analyze.txt" "$OUT/rss.txt" "$RSS_EVERY" <<'PY'
import re, sys
stages = [(m.group(1).strip(), float(m.group(2))) for m in
          re.finditer(r"^  (.+?)\s+([0-9.]+) s$", open(sys.argv[1]).read(), re.M)]
rss = [tuple(map(float, l.split())) for l in open(sys.argv[2]) if len(l.split()) == 2]
if stages and rss:
    def peak(a, b):
        inside = [r for t, r in rss if a <= t <= b]
        return f"{max(inside) / 1048576:6.2f} GB" if inside else "     (no sample)"
    windows, t = [], 0.0
    for name, secs in stages:
        windows.append((name, t, t + secs))
        t += secs
    print(f"peak resident memory by stage (sampled every {sys.argv[3]} s):")
    for name, a, b in windows:
        print(f"  {name:<24} {b - a:8.1f} s  {peak(a, b)}")
PY
  echo "(run summary: $OUT/analyze.txt)"
  [ "$status" = 0 ] || exit 1
done
