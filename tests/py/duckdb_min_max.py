"""The independent answer for min/max per user per 2-second window over a Parquet file.

Usage: duckdb_min_max.py INPUT.parquet OUTPUT.parquet

DuckDB orders floats as SQL engines agree (NaN above every number); the window start is
written as epoch microseconds so no timestamp type conversion stands between the engines.
"""

import sys

import duckdb

source, target = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute(
    f"""
    COPY (
      SELECT user_id,
             epoch_us(time_bucket(INTERVAL '2 seconds', event_time::TIMESTAMP)) AS w_us,
             min(amount) AS lo, max(amount) AS hi,
             CAST(min(amount::FLOAT) AS DOUBLE) AS lo32, CAST(max(amount::FLOAT) AS DOUBLE) AS hi32,
             count(*) AS n
      FROM read_parquet('{source}')
      GROUP BY ALL
    ) TO '{target}' (FORMAT parquet)
    """
)
