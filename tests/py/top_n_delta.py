"""Checks Top-N and keep-last Delta tables after every commit: for each epoch a Top-N table
committed, the raw rows the pipeline had read by that epoch (its `raw` Delta table at the same
epoch) ranked by DuckDB must equal the table as Python `deltalake` reads it at that version.

usage: top_n_delta.py OUT_DIR   (OUT_DIR holds raw/, top_fees/, latest/)
prints: the number of commits checked per table
"""

import glob
import json
import os
import sys

import deltalake
import duckdb

EXPECTED = {
    # The three highest fees of each user (NULL users are one partition; NULL fees first, as
    # DataFusion's DESC puts them); ties broken by the other columns, ascending, NULLs last.
    "top_fees": """
        SELECT user_id, payment_id, fee, rn FROM (
          SELECT user_id, payment_id, fee,
                 ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY fee DESC NULLS FIRST,
                   payment_id, merchant, amount, approved, channel, event_time) AS rn
          FROM raw) WHERE rn <= 3""",
    # Each user's latest payment.
    "latest": """
        SELECT user_id, payment_id, amount FROM (
          SELECT user_id, payment_id, amount,
                 ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY event_time DESC NULLS FIRST,
                   payment_id, merchant, amount, fee, approved, channel) AS rn
          FROM raw) WHERE rn = 1""",
}
COLUMNS = {"top_fees": "user_id, payment_id, fee, rn", "latest": "user_id, payment_id, amount"}


def commits(table):
    """Epoch -> Delta version, from each commit's txn action."""
    out = {}
    for path in glob.glob(os.path.join(table, "_delta_log", "*.json")):
        version = int(os.path.basename(path).split(".")[0])
        with open(path) as f:
            for line in f:
                action = json.loads(line)
                if "txn" in action:
                    out[action["txn"]["version"]] = version
    return out


def rows(con, sql):
    # DuckDB's window operator turns -0.0 into 0.0: compare zeros by value.
    def plain(value):
        return value + 0.0 if isinstance(value, float) else value

    return sorted(repr(tuple(plain(v) for v in r)) for r in con.execute(sql).fetchall())


def main():
    out = sys.argv[1]
    raw_dir = os.path.join(out, "raw")
    raw_commits = commits(raw_dir)
    checked = {}
    for name, sql in EXPECTED.items():
        table = os.path.join(out, name)
        count = 0
        for epoch, version in sorted(commits(table).items()):
            raw_version = max(v for e, v in raw_commits.items() if e <= epoch)
            con = duckdb.connect()
            raw = deltalake.DeltaTable(raw_dir, version=raw_version).to_pyarrow_table()
            got = deltalake.DeltaTable(table, version=version).to_pyarrow_table()
            con.register("raw", raw)
            con.register("got", got)
            expected = rows(con, sql)
            ours = rows(con, f"SELECT {COLUMNS[name]} FROM got")
            if ours != expected:
                missing = [r for r in expected if r not in ours][:5]
                extra = [r for r in ours if r not in expected][:5]
                sys.exit(f"{name} at epoch {epoch} (version {version}): {len(ours)} rows, expected {len(expected)}; missing {missing}; unexpected {extra}")
            count += 1
        checked[name] = count
    print(json.dumps(checked))
    sys.stdout.flush()
    os._exit(0)


main()
