"""Runs OVER queries in DuckDB, the independent oracle for Volley's OVER windows.

Usage: duckdb_over.py PAY.csv SEQ.csv QUERIES.sql OUT_DIR

Loads the CSVs as tables `pay` and `seq` (user_id BIGINT, ts TIMESTAMP, amount DOUBLE; an
empty amount is NULL, `NaN`, `inf` and `-inf` are floats), runs each query of QUERIES.sql
(one per line: `name<TAB>sql`) and writes its answer to OUT_DIR/name.parquet.
"""

import sys

import duckdb

pay, seq, queries, out = sys.argv[1:5]
con = duckdb.connect()
for name, path in (("pay", pay), ("seq", seq)):
    con.execute(f"""
      CREATE TABLE {name} AS SELECT * FROM read_csv('{path}', header = true,
        columns = {{'user_id': 'BIGINT', 'ts': 'TIMESTAMP', 'amount': 'DOUBLE'}})
    """)
for line in open(queries, encoding="utf-8"):
    if not line.strip():
        continue
    name, sql = line.rstrip("\n").split("\t", 1)
    con.execute(f"COPY ({sql}) TO '{out}/{name}.parquet' (FORMAT parquet)")
    print(name, con.execute(f"SELECT count(*) FROM '{out}/{name}.parquet'").fetchone()[0])
