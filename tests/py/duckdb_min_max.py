"""The independent answer for min/max per user per 2-second window over a Parquet file.

Usage: duckdb_min_max.py INPUT.parquet OUTPUT.parquet [two-stage]

With `two-stage`, the same per user and 6-second window, computed from the 2-second windows
(an aggregate over an aggregate). DuckDB orders floats as SQL engines agree (NaN above every
number); the window start is written as epoch microseconds so no timestamp type conversion
stands between the engines.
"""

import sys

import duckdb

source, target = sys.argv[1], sys.argv[2]
two_stage = len(sys.argv) > 3 and sys.argv[3] == "two-stage"
windows = f"""
  SELECT user_id,
         time_bucket(INTERVAL '2 seconds', event_time::TIMESTAMP) AS w,
         min(amount) AS lo, max(amount) AS hi,
         CAST(min(amount::FLOAT) AS DOUBLE) AS lo32, CAST(max(amount::FLOAT) AS DOUBLE) AS hi32,
         count(*) AS n
  FROM read_parquet('{source}')
  GROUP BY ALL
"""
if two_stage:
    query = f"""
  SELECT user_id, epoch_us(time_bucket(INTERVAL '6 seconds', w)) AS w_us,
         min(lo) AS lo, max(hi) AS hi, min(lo32) AS lo32, max(hi32) AS hi32, sum(n) AS n
  FROM ({windows}) AS per_window
  GROUP BY ALL
"""
else:
    query = f"SELECT * EXCLUDE (w), epoch_us(w) AS w_us FROM ({windows})"
con = duckdb.connect()
con.execute(f"COPY ({query}) TO '{target}' (FORMAT parquet)")
