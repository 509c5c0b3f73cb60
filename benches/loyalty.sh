#!/usr/bin/env bash
# Loyalty benchmark: idempotent earn-on-order over HTTP, on SQLite and PostgreSQL, beside the store's raw
# limit measured in the same run.
#   1. `huiyuan serve` on a fresh database with $MEMBERS members; wrk drives POST /v1/orders with unique paid
#      orders of 1-3 lines (benches/earn.lua). A 201 means the order's points are on the ledger, so
#      afterwards the script checks that every stored order earned: growth and points entries for every line
#      (points may be trimmed by a cap, which the order's evaluation must then say),
#      an evaluation per order, an empty loyalty queue, and `huiyuan loyalty verify` passing.
#   2. The raw limit: the same rows (order, lines, natural key, ledger entries; with and without the
#      evaluation) written straight with sqlx by benches/raw_earn.rs, in transactions of the mean group size
#      the server achieved, on a fresh database prepared the same way.
# Usage: benches/loyalty.sh [seconds]   (PostgreSQL at 127.0.0.1:5432, trust auth)
# Environment: MEMBERS (default 100000), CONNS (wrk connections, default 16), STORES (default "sqlite postgres"),
#              PERF_DIR (if set: a second, profiled wrk run per store; perf reports are written there),
#              HUIYUAN_LOG (the server's log filter, default warn), LOG_DIR (if set: each server's log is kept there),
#              BIN (a huiyuan binary to measure instead of building this checkout's release build).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-15}
MEMBERS=${MEMBERS:-100000}
CONNS=${CONNS:-16}
STORES=${STORES:-sqlite postgres}
PG=postgres://postgres@127.0.0.1:5432
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
command -v sqlite3 >/dev/null || { apt-get update -qq && apt-get install -y -qq sqlite3; }
[ -n "${BIN:-}" ] || cargo build --release -q
cargo bench -q --bench raw_earn --no-run 2>/dev/null
B=${BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/huiyuan}
W=$(mktemp -d)
SERVER=
stop_server() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; SERVER=; fi
}
trap 'stop_server; rm -rf "$W"' EXIT
export HUIYUAN_SECRET_KEY=$(python3 -c "print('ab'*32)")
export HUIYUAN_LOG=${HUIYUAN_LOG:-warn}

fresh_pg() { PGOPTIONS="-c client_min_messages=warning" psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null; }
# Run SQL against a database URL, one value per line.
sql() {
  case $1 in
    sqlite://*) sqlite3 "${1#sqlite://}" "$2" ;;
    *) psql "$1" -Atc "$2" ;;
  esac
}
# A fresh, migrated database with the bench members (import settles their registration points).
prepare() {
  local store=$1 name=$2 db
  if [ "$store" = sqlite ]; then db="sqlite://$W/$name.db"; else fresh_pg "hy_bench_$name"; db="$PG/hy_bench_$name"; fi
  $B migrate --db "$db" >/dev/null
  $B import members "$W/members.csv" --db "$db" >/dev/null
  echo "$db"
}
start_server() {
  $B serve --db "$1" --port "$2" >"$W/serve.log" 2>&1 &
  SERVER=$!
  local up=
  for _ in $(seq 1 100); do curl -sf "localhost:$2/health" >/dev/null && { up=1; break; }; sleep 0.1; done
  [ -n "$up" ] || { echo "server did not start:"; cat "$W/serve.log"; exit 1; }
  # The server sweeps every ledger once at start (maturing, expiry); wait until it is idle so the sweep
  # does not share the measured run.
  local t0 t1 waited=0
  t1=$(awk '{print $14 + $15}' "/proc/$SERVER/stat")
  while :; do
    sleep 0.5; waited=$((waited + 1)); t0=$t1; t1=$(awk '{print $14 + $15}' "/proc/$SERVER/stat")
    [ $((t1 - t0)) -le 2 ] && break
    [ $waited -ge 240 ] && { echo "server still busy after 120 s"; break; }
  done
  echo "server idle after its start-up ledger sweep: $(python3 -c "print($t1 / $(getconf CLK_TCK))") CPU-s, waited $((waited / 2)) s"
}

# The server's threads: name-tid, CPU ticks, voluntary and involuntary context switches.
threads() {
  for t in /proc/"$SERVER"/task/*; do
    echo "$(cat "$t/comm" | tr ' ' _)-${t##*/} $(awk '{print $14 + $15}' "$t/stat") $(awk '/^(non)?voluntary_ctxt_switches/ {printf "%s ", $2}' "$t/status")"
  done 2>/dev/null
}
# What each busy server thread did during the measured run: CPU seconds, and context switches per request
# (each hand-off between the async workers and SQLite's connection threads is a sleep and a wake-up).
thread_report() {
  python3 - "$1" "$2" "$3" "$(getconf CLK_TCK)" <<'PY'
import sys
def read(path):
    out = {}
    for row in open(path):
        p = row.split()
        if len(p) == 4:
            out[p[0]] = [int(x) for x in p[1:]]
    return out
before, after, requests, tick = read(sys.argv[1]), read(sys.argv[2]), max(1, int(sys.argv[3] or 1)), int(sys.argv[4])
rows = []
for name, (cpu, vol, invol) in after.items():
    b = before.get(name, [0, 0, 0])
    rows.append((cpu - b[0], vol - b[1], invol - b[2], name))
for cpu, vol, invol, name in sorted(rows, reverse=True)[:5]:
    print(f"   thread {name:24s} cpu {cpu / tick:6.2f} s  switches/request {vol / requests:5.2f} voluntary {invol / requests:5.2f} involuntary")
PY
}

python3 -c "
print('customer_no,name,registration_channel')
for i in range(1, $MEMBERS + 1): print(f'BM{i},Bench {i},web')" >"$W/members.csv"

echo "== Earn on order: wrk -t2 -c$CONNS -d${SECS}s, $MEMBERS members; server and wrk share the machine's $(nproc) cores"
echo "   load at start: $(uptime | sed 's/.*load average/load average/')"
port=18190
declare -A RPS P99 RAW_CORE RAW_FULL
for store in $STORES; do
  echo
  echo "-- $store"
  db=$(prepare "$store" earn)
  key=$($B keys create --role integration --db "$db" 2>/dev/null)
  start_server "$db" $port
  threads >"$W/threads.before"
  out=$(HUIYUAN_BENCH_KEY=$key HUIYUAN_BENCH_MEMBERS=$MEMBERS HUIYUAN_BENCH_RUN=E \
    wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -s benches/earn.lua "http://127.0.0.1:$port")
  threads >"$W/threads.after"
  rps=$(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')
  line=$(echo "$out" | grep p50_ms)
  p99=$(echo "$line" | sed 's/.*p99_ms=\([0-9.]*\).*/\1/')
  non2xx=$(echo "$line" | sed 's/.*non2xx=\([0-9]*\).*/\1/')
  requests=$(echo "$line" | sed 's/.*requests=\([0-9]*\).*/\1/')
  echo "HTTP earn creates: ${rps}/s  $line"
  thread_report "$W/threads.before" "$W/threads.after" "$requests"
  # Orders of one group commit share their created_at.
  group=$(sql "$db" "SELECT CAST(ROUND(1.0 * COUNT(*) / COUNT(DISTINCT created_at), 1) AS TEXT) FROM orders")
  if [ -n "${PERF_DIR:-}" ]; then
    mkdir -p "$PERF_DIR"
    perf record -F 499 -g -o "$PERF_DIR/$store.data" -p "$SERVER" -- sleep "$SECS" >/dev/null 2>&1 &
    perfpid=$!
    pout=$(HUIYUAN_BENCH_KEY=$key HUIYUAN_BENCH_MEMBERS=$MEMBERS HUIYUAN_BENCH_RUN=P \
      wrk -t2 -c"$CONNS" -d"${SECS}s" -s benches/earn.lua "http://127.0.0.1:$port")
    wait $perfpid || true
    echo "profiled run (not counted): $(echo "$pout" | awk '/Requests\/sec/ {printf "%.0f/s", $2}')  $(echo "$pout" | grep p50_ms)"
    perf report -i "$PERF_DIR/$store.data" --no-children --sort dso,symbol -g none --percent-limit 0.7 \
      >"$PERF_DIR/$store-self.txt" 2>/dev/null || true
    perf report -i "$PERF_DIR/$store.data" --children --sort symbol -g none --percent-limit 2 \
      >"$PERF_DIR/$store-children.txt" 2>/dev/null || true
  fi
  sleep 1 # requests cut off by wrk's deadline finish
  stop_server
  if [ -n "${LOG_DIR:-}" ]; then mkdir -p "$LOG_DIR"; cp "$W/serve.log" "$LOG_DIR/serve-$store.log"; fi

  # Proof that the benchmark measured earning, not just order inserts.
  orders=$(sql "$db" "SELECT COUNT(*) FROM orders")
  lines=$(sql "$db" "SELECT COUNT(*) FROM order_lines")
  entries=$(sql "$db" "SELECT COUNT(*) FROM ledger_entries WHERE op LIKE 'order:%'")
  # Every line earns growth value. Every line earns points too, unless a points cap (at most 2,000 a day in
  # the default rules, reached sooner on the doubled member day) trimmed them: its order's evaluation must
  # then say so. Evaluations are read through the API (`why` of the line's growth entry), since SQLite
  # stores them compressed.
  entry() { echo "EXISTS (SELECT 1 FROM ledger_entries e WHERE e.member_id = l.member_id \
    AND e.entry_key = 'order:' || l.order_id || ':' || l.line_no || ':$1#0')"; }
  ungrown=$(sql "$db" "SELECT COUNT(*) FROM order_lines l WHERE NOT $(entry growth)")
  sql "$db" "SELECT l.member_id || ' ' || l.order_id || ' ' || l.line_no FROM order_lines l WHERE NOT $(entry points)" >"$W/unpointed"
  capped=0; unearned=0
  if [ -s "$W/unpointed" ]; then
    start_server "$db" $port >/dev/null
    read -r capped unearned < <(python3 - "$W/unpointed" "http://127.0.0.1:$port" "$key" <<'PY'
import json, sys, urllib.request
from collections import defaultdict
lines = defaultdict(list)
for row in open(sys.argv[1]):
    m, order, line = row.split()
    lines[m].append(f"order:{order}:{line}:growth")
capped = unexplained = 0
for m, ops in lines.items():
    req = urllib.request.Request(f"{sys.argv[2]}/v1/members/{m}/points/history?limit=1000",
                                 headers={"Authorization": f"Bearer {sys.argv[3]}"})
    why = {e["op"]: " ".join(e.get("why") or []) for e in json.load(urllib.request.urlopen(req))}
    for op in ops:
        if "cap reached" in why.get(op, ""):
            capped += 1
        else:
            unexplained += 1
print(capped, unexplained)
PY
)
    stop_server
  fi
  evals=$(sql "$db" "SELECT COUNT(*) FROM loyalty_evaluations WHERE op LIKE 'order:%'")
  queue=$(sql "$db" "SELECT COUNT(*) FROM loyalty_queue")
  echo "mean orders per group commit: $group"
  echo "stored: $orders orders (wrk saw $((requests - non2xx)) 2xx of $requests), $lines lines, $entries order ledger entries" \
    "(2 per line: $((2 * lines))), lines without growth: $ungrown, without points: $unearned (and $capped more" \
    "trimmed by a cap), order evaluations: $evals, loyalty queue rows left: $queue"
  if verify=$($B loyalty verify --db "$db" 2>&1); then vstatus=ok; else vstatus=FAILED; fi
  echo "huiyuan loyalty verify: $vstatus ($(echo "$verify" | tr '\n' ' ' | sed 's/  */ /g'))"
  if [ "$ungrown" != 0 ] || [ "$unearned" != 0 ] || [ "$queue" != 0 ] || [ "$evals" != "$orders" ] || [ "$vstatus" != ok ]; then
    echo "!! not every order earned"
  fi

  batch=$(python3 -c "print(max(1, round(float('$group'))))")
  rawdb=$(prepare "$store" raw)
  rawout=$(RAW_DB=$rawdb RAW_BATCH=$batch RAW_SECS=$SECS RAW_MEMBERS=$MEMBERS cargo bench -q --bench raw_earn 2>/dev/null)
  echo "$rawout"
  RPS[$store]=$rps
  P99[$store]=$p99
  RAW_CORE[$store]=$(echo "$rawout" | awk '/variant=core/ {sub("orders_per_s=", "", $8); print $8}')
  RAW_FULL[$store]=$(echo "$rawout" | awk '/variant=full/ {sub("orders_per_s=", "", $8); print $8}')
  port=$((port + 1))
done

echo
echo "== Summary (orders/s; raw = the same rows in transactions of the server's mean group size, one connection)"
printf '%-9s %14s %9s %18s %7s %22s %7s\n' store "HTTP earn/s" p99 "raw (+evaluation)" ratio "raw (order+ledger)" ratio
for store in $STORES; do
  printf '%-9s %14s %9s %18s %7s %22s %7s\n' "$store" "${RPS[$store]}" "${P99[$store]} ms" "${RAW_FULL[$store]}" \
    "$(python3 -c "print(f'{${RPS[$store]} / ${RAW_FULL[$store]}:.0%}')")" "${RAW_CORE[$store]}" \
    "$(python3 -c "print(f'{${RPS[$store]} / ${RAW_CORE[$store]}:.0%}')")"
done
echo "load at end: $(uptime | sed 's/.*load average/load average/')"
