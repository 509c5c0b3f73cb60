#!/usr/bin/env bash
# Foundation benchmarks, printed side by side with their reference tools in the same run:
#   1. bulk import of Online Retail (541,909 rows) into SQLite and PostgreSQL, beside DuckDB's read_csv;
#   2. order ingestion over HTTP (idempotent creates, and replays of one order) on both stores, with wrk.
# Usage: benches/foundation.sh [seconds-per-wrk-run]   (PostgreSQL at 127.0.0.1:5432, trust auth)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-15}
DATA=../shared/data/online_retail/online_retail.csv.gz
PG=postgres://postgres@127.0.0.1:5432
[ -f "$DATA" ] || { echo "missing $DATA"; exit 1; }
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
python3 -c "import duckdb" 2>/dev/null || pip install -q duckdb
cargo build --release -q
B=$PWD/target/release/huiyuan
W=$(mktemp -d)
trap 'pkill -f "huiyuan serve --db .* --port 1809" || true; rm -rf "$W"' EXIT
export HUIYUAN_SECRET_KEY=$(python3 -c "print('ab'*32)")
export HUIYUAN_LOG=warn

fresh_pg() { psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[1]):.2f}')" "$1"; }
now() { date +%s.%N; }

echo "== 1. Import of Online Retail (541,909 rows)"
duck=$(python3 - "$DATA" <<'PY'
import duckdb, sys, time
best = None
for _ in range(3):
    t = time.time()
    con = duckdb.connect()
    con.execute(f"CREATE TABLE r AS SELECT * FROM read_csv('{sys.argv[1]}')")
    assert con.execute("SELECT count(*) FROM r").fetchone()[0] == 541909
    best = min(best or 1e9, time.time() - t)
print(f"{best:.3f}")
PY
)
echo "duckdb read_csv (best of 3): ${duck} s"
for store in sqlite postgres; do
  if [ $store = sqlite ]; then db="sqlite://$W/or.db"; else fresh_pg hy_bench_import; db="$PG/hy_bench_import"; fi
  $B migrate --db "$db" >/dev/null
  t0=$(now); $B import orders "$DATA" --mapping online-retail --db "$db" --rejects "$W/rej.csv" > "$W/imp.txt"; t1=$(now)
  t2=$(now); $B import orders "$DATA" --mapping online-retail --db "$db" --rejects "$W/rej.csv" > "$W/imp2.txt"; t3=$(now)
  first=$(python3 -c "print(f'{$t1-$t0:.2f}')"); again=$(python3 -c "print(f'{$t3-$t2:.2f}')")
  ratio=$(python3 -c "print(f'{($t1-$t0)/$duck:.1f}')")
  rows=$(python3 -c "print(f'{541909/($t1-$t0):,.0f}')")
  echo "huiyuan import → $store: ${first} s (${rows} rows/s, ${ratio}× DuckDB); re-import (all duplicates): ${again} s"
  $B stats --db "$db" | sed 's/^/    /' | head -5
done

echo
echo "== 2. Order ingestion over HTTP (wrk, 2 threads, 16 connections, ${SECS} s; server and wrk share the 2 cores)"
python3 -c "
print('customer_no,name,registration_channel')
for i in range(1, 1001): print(f'BM{i},Bench {i},web')" > "$W/members.csv"
port=18090
for store in sqlite postgres; do
  if [ $store = sqlite ]; then db="sqlite://$W/http.db"; else fresh_pg hy_bench_http; db="$PG/hy_bench_http"; fi
  $B import members "$W/members.csv" --db "$db" > /dev/null
  key=$($B keys create --role integration --db "$db" 2>/dev/null)
  $B serve --db "$db" --port $port > "$W/serve-$store.log" 2>&1 &
  for _ in $(seq 1 50); do curl -sf "localhost:$port/health" >/dev/null && break; sleep 0.1; done
  for mode in create replay; do
    out=$(HUIYUAN_BENCH_KEY=$key WRK_MODE=$mode wrk -t2 -c16 -d"${SECS}s" -s benches/orders.lua "http://127.0.0.1:$port")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
    echo "$store $mode: ${rps} orders/s  $(echo "$out" | grep p50_ms)  non-2xx=${non2xx:-0}"
  done
  $B stats --db "$db" | grep "member orders" | sed 's/^/    /'
  pkill -f "huiyuan serve --db .* --port $port" || true
  port=$((port + 1))
  sleep 0.5
done
