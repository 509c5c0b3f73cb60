"""Reference for benches/rfm_duckdb.sh: huiyuan-analytics' RFM written as one DuckDB SQL query.

Loads orders.csv (customer_id,invoice_no,day,amount_fen; one row per order, written by the Rust bench) into an
in-memory DuckDB table (timed apart, not counted), then times the query best of N, fetching every row into
Python inside the timing. For reference it also times the engine alone: the same query wrapped in an
aggregate that reads every result column (count, sums of the scores, distinct segments), so DuckDB computes
every row but hands Python a single row. Writes the per-member scores and segments to duckdb_members.csv and the figures to
duckdb.json.

The query follows the Rust kernel's rules exactly (crates/analytics/src/rfm.rs):
- scored members: at least one order in the window as_of - (window - 1) ..= as_of; recency = as_of - last
  order day, frequency = orders in the window, monetary = their sum in fen;
- score = 1 + floor(5 * b / n), b = scored members strictly worse on that dimension, n = scored members.
  RANK() gives 1 + the number of rows strictly before in its order, so b = RANK() - 1 when worst comes first
  (recency descending, frequency and monetary ascending); ties share a rank, hence a score;
- a dimension is high when score * n > sum of scores (strictly above the mean score, compared in integers);
- segment: M high -> important_*, else general_*; R and F high -> value, R only -> develop, F only -> keep,
  neither -> retain.

Usage: rfm_duckdb.py ORDERS_CSV OUT_DIR AS_OF(YYYY-MM-DD) [REPS=100] [WINDOW_DAYS=365]
"""

import csv
import datetime
import json
import statistics
import sys
import time

import duckdb

QUERY = """
WITH per_member AS (
    SELECT customer_id,
           $as_of - max(day) AS recency,
           count(*)          AS frequency,
           sum(amount_fen)   AS monetary
    FROM orders
    WHERE day BETWEEN $start AND $as_of
    GROUP BY customer_id
), scored AS (
    SELECT customer_id, recency, frequency, monetary,
           1 + (5 * (rank() OVER (ORDER BY recency DESC) - 1)) // count(*) OVER () AS r,
           1 + (5 * (rank() OVER (ORDER BY frequency)    - 1)) // count(*) OVER () AS f,
           1 + (5 * (rank() OVER (ORDER BY monetary)     - 1)) // count(*) OVER () AS m,
           count(*) OVER () AS n
    FROM per_member
), flagged AS (
    SELECT *,
           r * n > sum(r) OVER () AS r_high,
           f * n > sum(f) OVER () AS f_high,
           m * n > sum(m) OVER () AS m_high
    FROM scored
)
SELECT customer_id, recency, frequency, monetary, r, f, m,
       CASE WHEN m_high THEN 'important_' ELSE 'general_' END ||
       CASE WHEN r_high AND f_high THEN 'value'
            WHEN r_high THEN 'develop'
            WHEN f_high THEN 'keep'
            ELSE 'retain' END AS segment
FROM flagged
"""


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    orders_csv, out, as_of_s = sys.argv[1:4]
    reps = int(sys.argv[4]) if len(sys.argv) > 4 else 100
    window = int(sys.argv[5]) if len(sys.argv) > 5 else 365
    as_of = datetime.date.fromisoformat(as_of_s)
    start = as_of - datetime.timedelta(days=window - 1)

    con = duckdb.connect()
    t = time.perf_counter()
    con.execute(
        "CREATE TABLE orders AS SELECT * FROM read_csv(?, header = true, "
        "columns = {'customer_id': 'BIGINT', 'invoice_no': 'VARCHAR', 'day': 'DATE', 'amount_fen': 'BIGINT'})",
        [orders_csv],
    )
    load_s = time.perf_counter() - t
    n_orders = con.execute("SELECT count(*) FROM orders").fetchone()[0]
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]

    params = {"as_of": as_of, "start": start}
    walls, cpus, rows = [], [], None
    for _ in range(max(reps, 1)):
        rows = None
        w0, c0 = time.perf_counter(), time.process_time()
        rows = con.execute(QUERY, params).fetchall()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)

    engine_walls, engine_cpus = [], []
    engine_query = (
        "SELECT count(*), sum(r), sum(f), sum(m), sum(recency + frequency + monetary), count(DISTINCT segment) "
        f"FROM ({QUERY})"
    )
    for _ in range(max(reps, 1)):
        w0, c0 = time.perf_counter(), time.process_time()
        agg = con.execute(engine_query, params).fetchall()
        engine_walls.append(time.perf_counter() - w0)
        engine_cpus.append(time.process_time() - c0)
    if agg[0][0] != len(rows):
        sys.exit(f"engine-only query saw {agg[0][0]} members, the full query {len(rows)}")

    with open(f"{out}/duckdb_members.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["member_id", "recency_days", "orders", "monetary_fen", "r", "f", "m", "segment"])
        w.writerows(sorted(rows))
    segments = {}
    for row in rows:
        segments[row[7]] = segments.get(row[7], 0) + 1
    res = {
        "duckdb_version": duckdb.__version__,
        "threads": threads,
        "orders": n_orders,
        "scored": len(rows),
        "segments": segments,
        "repetitions": len(walls),
        "load_s": load_s,
        "wall_best_s": min(walls),
        "wall_median_s": statistics.median(walls),
        "cpu_best_s": min(cpus),
        "cpu_median_s": statistics.median(cpus),
        "engine_wall_best_s": min(engine_walls),
        "engine_wall_median_s": statistics.median(engine_walls),
        "engine_cpu_best_s": min(engine_cpus),
        "engine_cpu_median_s": statistics.median(engine_cpus),
    }
    with open(f"{out}/duckdb.json", "w") as f:
        json.dump(res, f, indent=2)
    print(
        f"duckdb {duckdb.__version__} ({threads} threads): {n_orders} orders loaded in {load_s * 1e3:.1f} ms (not "
        f"timed); {len(rows)} members scored; query + fetch best of {len(walls)}: wall {min(walls) * 1e3:.3f} ms "
        f"(median {statistics.median(walls) * 1e3:.3f}), cpu {min(cpus) * 1e3:.3f} ms "
        f"(median {statistics.median(cpus) * 1e3:.3f})"
    )
    print(
        f"duckdb engine alone (same query aggregated to one row inside DuckDB) best of {len(engine_walls)}: wall "
        f"{min(engine_walls) * 1e3:.3f} ms (median {statistics.median(engine_walls) * 1e3:.3f}), cpu "
        f"{min(engine_cpus) * 1e3:.3f} ms (median {statistics.median(engine_cpus) * 1e3:.3f})"
    )


if __name__ == "__main__":
    main()
