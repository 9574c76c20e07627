"""Checks a Volley OVER output against DuckDB's answer for the same SQL over the same CSV.

Usage: duckdb_sliding_sum.py INPUT.csv VOLLEY_OUTPUT_DIR

The output holds user_id, ts, amount and s, a, n: the sum, average and count of amount over
each user's last 10 minutes (RANGE, peers included). Rows are matched on (user_id, ts, amount
as text) with their multiplicity; floats are equal when both are NaN, equal infinities, or
within 1e-9 relative (sliding sums retract, so the last bits may differ). Prints the number
of rows compared and exits 1 listing the first differences.
"""

import math
import sys
from collections import Counter

import duckdb

source, output = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute(f"""
  CREATE TABLE pay AS SELECT * FROM read_csv('{source}', header = true,
    columns = {{'user_id': 'BIGINT', 'ts': 'TIMESTAMP', 'amount': 'DOUBLE'}})
""")
oracle = con.execute("""
  SELECT user_id, epoch_us(ts) AS ts, amount,
         sum(amount) OVER w AS s, avg(amount) OVER w AS a, count(amount) OVER w AS n
  FROM pay
  WINDOW w AS (PARTITION BY user_id ORDER BY ts RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW)
""").fetchall()
volley = con.execute(f"""
  SELECT user_id, epoch_us(ts) AS ts, amount, s, a, n FROM read_parquet('{output}/*.parquet')
""").fetchall()


def key(row):
    return (row[0], row[1], repr(row[2]))


def same(x, y):
    if x is None or y is None:
        return x is None and y is None
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if math.isinf(x) or math.isinf(y):
        return x == y
    return abs(x - y) <= 1e-9 * max(1.0, abs(x), abs(y))


if len(oracle) != len(volley):
    print(f"DuckDB has {len(oracle)} rows, Volley {len(volley)}")
    sys.exit(1)
by_key = {}
for row in oracle:
    by_key.setdefault(key(row), []).append(row)
wrong = []
for row in volley:
    candidates = by_key.get(key(row))
    if not candidates:
        wrong.append(("no such row in DuckDB's answer", row))
        continue
    match = next((c for c in candidates
                  if same(c[3], row[3]) and same(c[4], row[4]) and c[5] == row[5]), None)
    if match is None:
        wrong.append((candidates[0], row))
    else:
        candidates.remove(match)
nan_rows = sum(1 for r in oracle if r[3] is not None and math.isnan(r[3]))
print(f"{len(volley)} rows compared, {nan_rows} with a NaN sum, {len(wrong)} different")
for w in wrong[:5]:
    print("duckdb:", w[0], "volley:", w[1])
sys.exit(1 if wrong else 0)
