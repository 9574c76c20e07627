"""Reads a Delta table written by Volley with two independent readers and reports what it saw.

Usage: read_delta.py TABLE_DIR OUT_DIR APP_ID

- Python `deltalake` (delta-rs's Python binding) reads the latest snapshot -> OUT_DIR/deltalake.parquet
- DuckDB's delta extension (`delta_scan`, built on delta-kernel) -> OUT_DIR/duckdb.parquet
- Prints one JSON object: table version, row counts per reader, the txn version recorded for
  APP_ID, and every `txn` action found in the transaction log's JSON commits.
"""

import glob
import json
import os
import sys

import duckdb
import duckdb_extension_delta
import pyarrow.parquet as pq
from deltalake import DeltaTable


def delta_extension() -> str:
    root = os.path.dirname(duckdb_extension_delta.__file__)
    found = glob.glob(os.path.join(root, "extensions", "*", "delta.duckdb_extension"))
    if not found:
        sys.exit(f"no delta.duckdb_extension under {root}")
    return found[0]


def txn_actions(table_dir: str) -> list:
    actions = []
    for path in sorted(glob.glob(os.path.join(table_dir, "_delta_log", "*.json"))):
        with open(path, encoding="utf-8") as log:
            for line in log:
                line = line.strip()
                if line:
                    action = json.loads(line)
                    if "txn" in action:
                        actions.append(action["txn"])
    return actions


def main() -> None:
    table_dir, out_dir, app_id = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(out_dir, exist_ok=True)

    table = DeltaTable(table_dir)
    rows = table.to_pyarrow_table()
    pq.write_table(rows, os.path.join(out_dir, "deltalake.parquet"))

    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{delta_extension()}'")
    scanned = con.execute(f"SELECT * FROM delta_scan('{table_dir}')").fetch_arrow_table()
    pq.write_table(scanned, os.path.join(out_dir, "duckdb.parquet"))

    print(
        json.dumps(
            {
                "version": table.version(),
                "rows_deltalake": rows.num_rows,
                "rows_duckdb": scanned.num_rows,
                "txn_version": table.transaction_version(app_id),
                "txn_actions": txn_actions(table_dir),
            }
        )
    )


if __name__ == "__main__":
    main()
