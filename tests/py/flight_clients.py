"""Queries a running Volley pipeline over Flight SQL with two independent client
implementations, and checks what they see against what the sink committed.

    flight_clients.py HOST:PORT SINK_DIR [TOKEN]

The pipeline has a live table `per_rider(rider_id, second, n)` (merge_key rider_id, second:
rides per rider per one-second window) whose sink writes
one Parquet file per epoch, `part-<epoch>.parquet`, to SINK_DIR. The live table at epoch E must
equal the latest row per key over the files of epochs <= E.

Clients: ADBC's Flight SQL driver (Go), and flightsql-dbapi (pyarrow's Flight client issuing
the Flight SQL commands itself). Prints one line per check; exits non-zero on any mismatch.
"""

import glob
import os
import re
import sys

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.parquet as pq
from flightsql import FlightSQLClient

addr, sink_dir = sys.argv[1], sys.argv[2]
token = sys.argv[3] if len(sys.argv) > 3 else None
host, port = addr.rsplit(":", 1)

# One query reads the live table and the epoch it shows: the same snapshot.
AT_EPOCH = (
    "SELECT p.published_epoch AS epoch, r.rider_id, r.second, r.n "
    "FROM per_rider r CROSS JOIN system.pipelines p ORDER BY r.rider_id, r.second"
)


KEYED = ("rider_id", "second", "n")


def fail(message):
    print("FAIL:", message)
    sys.exit(1)


def committed(epoch):
    """The latest row per rider over the sink's files of epochs <= epoch."""
    latest = {}
    files = []
    for path in glob.glob(os.path.join(sink_dir, "part-*.parquet")):
        m = re.search(r"part-(\d+)\.parquet$", path)
        if m and int(m.group(1)) <= epoch:
            files.append((int(m.group(1)), path))
    for _, path in sorted(files):
        table = pq.read_table(path)
        for rider, second, n in zip(*(table.column(c).to_pylist() for c in KEYED)):
            latest[(rider, second)] = n
    return sorted((rider, second, n) for (rider, second), n in latest.items())


def check_against_sink(client, table):
    epochs = set(table.column("epoch").to_pylist())
    if len(epochs) != 1:
        fail(f"{client}: one query saw epochs {sorted(epochs)}")
    (epoch,) = epochs
    rows = list(zip(*(table.column(c).to_pylist() for c in KEYED)))
    want = committed(epoch)
    if rows != want:
        fail(f"{client}: epoch {epoch}: {len(rows)} rows, the sink committed {len(want)}; "
             f"first differences: {[r for r in rows if r not in want][:3]} vs {[w for w in want if w not in rows][:3]}")
    if not rows:
        fail(f"{client}: epoch {epoch}: no rows yet")
    print(f"{client}: epoch {epoch}: {len(rows)} rows equal the sink's committed rows")
    return rows


# --- ADBC ---------------------------------------------------------------------------------
kwargs = {}
if token:
    kwargs[adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value] = f"Bearer {token}"
with adbc.connect(f"grpc://{addr}", db_kwargs=kwargs) as conn:
    with conn.cursor() as cur:
        cur.execute(AT_EPOCH)
        rows = check_against_sink("adbc", cur.fetch_arrow_table())

        # A prepared statement with a parameter (JDBC-style '?').
        rider, second, n = rows[len(rows) // 2]
        cur.execute("SELECT rider_id, second, n FROM per_rider WHERE rider_id = ? AND second = ?",
                    parameters=(rider, second))
        got = cur.fetch_arrow_table().to_pylist()
        if len(got) != 1 or got[0]["rider_id"] != rider or got[0]["n"] != n:
            fail(f"adbc prepared: rider {rider} at {second}: {got} (the sink has n = {n})")
        print(f"adbc prepared: rider {rider} at {second}: n = {got[0]['n']}")

        # The same statement again with another value (ADBC re-binds the prepared statement).
        other = rows[0]
        cur.execute("SELECT rider_id, second, n FROM per_rider WHERE rider_id = ? AND second = ?",
                    parameters=other[:2])
        got = cur.fetch_arrow_table().to_pylist()
        if [(g["rider_id"], g["second"], g["n"]) for g in got] != [other]:
            fail(f"adbc prepared, rebound: {other}: {got}")

        # Bad queries are clear errors and the connection keeps working.
        for sql, want in [("SELEC 1", "SELEC"), ("SELECT * FROM nowhere", "nowhere"),
                          ("INSERT INTO per_rider VALUES (1, now(), 1)", "read-only")]:
            try:
                cur.execute(sql)
                cur.fetch_arrow_table()
                fail(f"adbc: {sql!r} did not fail")
            except adbc.Error as e:
                if want not in str(e):
                    fail(f"adbc: {sql!r}: {e}")
        print("adbc: bad queries are refused with their reason")

        cur.execute("SELECT metric, value FROM system.metrics WHERE component = 'source' AND metric = 'rows_in'")
        metrics = cur.fetch_arrow_table().to_pylist()
        if not metrics or metrics[0]["value"] <= 0:
            fail(f"adbc: system.metrics rows_in: {metrics}")
        print(f"adbc: system.metrics source rows_in = {metrics[0]['value']:.0f}")

        cur.execute("SELECT source, reason, payload FROM system.dead_letters LIMIT 5")
        letters = cur.fetch_arrow_table().to_pylist()
        if not letters or "late" not in letters[0]["reason"] or "rider_id" not in letters[0]["payload"]:
            fail(f"adbc: system.dead_letters: {letters}")
        cur.execute("SELECT count(*) AS n, max(bytes) AS bytes FROM system.checkpoints")
        checkpoints = cur.fetch_arrow_table().to_pylist()
        if checkpoints[0]["n"] == 0 or checkpoints[0]["bytes"] <= 0:
            fail(f"adbc: system.checkpoints: {checkpoints}")
        cur.execute("SELECT state, statements FROM system.pipelines")
        pipelines = cur.fetch_arrow_table().to_pylist()
        if len(pipelines) != 1 or pipelines[0]["state"] != "running" or "INSERT INTO per_rider" not in pipelines[0]["statements"]:
            fail(f"adbc: system.pipelines: {pipelines}")
        print(f"adbc: system tables: a late letter from {letters[0]['source']}, "
              f"{checkpoints[0]['n']} checkpoints, the pipeline {pipelines[0]['state']}")

    objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    found = {}
    for catalog in objects:
        for schema in catalog["catalog_db_schemas"] or []:
            for table in schema["db_schema_tables"] or []:
                columns = [c["column_name"] for c in table["table_columns"] or []]
                found[(catalog["catalog_name"], schema["db_schema_name"], table["table_name"])] = columns
    if found.get(("volley", "live", "per_rider")) != list(KEYED):
        fail(f"adbc_get_objects: {sorted(found)}")
    if ("volley", "system", "metrics") not in found:
        fail(f"adbc_get_objects has no system.metrics: {sorted(found)}")
    print(f"adbc_get_objects: {len(found)} tables, live.per_rider columns {found[('volley', 'live', 'per_rider')]}")

    schema = conn.adbc_get_table_schema("per_rider", catalog_filter="volley", db_schema_filter="live")
    if schema.names != list(KEYED) or schema.field("rider_id").type != pa.int64():
        fail(f"adbc_get_table_schema: {schema}")
    print(f"adbc_get_table_schema: {schema.names}")

    info = conn.adbc_get_info()
    if "Volley" not in str(info.get("vendor_name", "")):
        fail(f"adbc_get_info: {info}")
    print(f"adbc_get_info: vendor {info['vendor_name']} {info.get('vendor_version')}")

# A login (user name and the token as password): the handshake hands out the bearer token.
if token:
    login = {"username": "analyst", "password": token}
    with adbc.connect(f"grpc://{addr}", db_kwargs=login) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM per_rider")
        if cur.fetch_arrow_table().to_pylist()[0]["n"] <= 0:
            fail("adbc login: no rows")
    try:
        with adbc.connect(f"grpc://{addr}", db_kwargs={"username": "analyst", "password": "wrong"}) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
        fail("adbc login with a wrong password was accepted")
    except adbc.Error as e:
        if "wrong" not in str(e):
            fail(f"adbc login with a wrong password: {e}")
    print("adbc login: the token as password is accepted, a wrong one refused")

# --- flightsql-dbapi (pyarrow's Flight client) ------------------------------------------------
client = FlightSQLClient(host=host, port=int(port), insecure=True, token=token)
info = client.execute(AT_EPOCH)
if any(e.locations for e in info.endpoints):
    fail(f"flightsql-dbapi: endpoints with locations: {info.endpoints}")
table = pa.concat_tables(client.do_get(e.ticket).read_all() for e in info.endpoints)
check_against_sink("flightsql-dbapi", table)

info = client.get_tables(include_schema=True)
tables = pa.concat_tables(client.do_get(e.ticket).read_all() for e in info.endpoints).to_pylist()
names = {(t["db_schema_name"], t["table_name"]): t for t in tables}
if ("live", "per_rider") not in names:
    fail(f"flightsql-dbapi get_tables: {sorted(names)}")
schema = pa.ipc.read_schema(pa.py_buffer(names[("live", "per_rider")]["table_schema"]))
if schema.names != list(KEYED):
    fail(f"flightsql-dbapi get_tables schema: {schema}")
print(f"flightsql-dbapi get_tables: {len(names)} tables with schemas")

with client.prepare("SELECT count(*) AS riders FROM per_rider WHERE n >= ?") as statement:
    binding = pa.RecordBatch.from_pydict({"$1": pa.array([1], pa.int64())})
    info = statement.execute(binding)
    got = pa.concat_tables(client.do_get(e.ticket).read_all() for e in info.endpoints).to_pylist()
    if len(got) != 1 or got[0]["riders"] <= 0:
        fail(f"flightsql-dbapi prepared: {got}")
    print(f"flightsql-dbapi prepared: {got[0]['riders']} riders with n >= 1")
client.close()
print("ok")
