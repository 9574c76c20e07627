#!/usr/bin/env python3
"""Whole-process throughput of Volley on generated files, on 1 and 2 cores.

    python3 benches/scale/run.py                       # 10M events, h1 q1 q5 q7, 3 runs each
    python3 benches/scale/run.py --events 2000000 --queries h1,q5 --runs 1

Generates the inputs once as Parquet files in event-time order (`volley batch` of the
built-in generators: the Nexmark mix, and payments for h1), then runs each pipeline as a whole process, streaming
(`volley run --no-checkpoint`) and in batch (`volley batch`), pinned with `taskset` to one
core and to two, with `--workers` 1 and 2 on two cores. With Python's `datafusion` package
installed it runs the same SQL in DataFusion too (the batch baseline). Prints, per run kind,
the median wall time, events per second, CPU seconds per million events and peak RSS, and
the 1 -> 2 core ratio. Only the standard library is needed.

h1 is a per-user 1-minute count/sum/max/avg over payments; q1, q5 and q7 are
`benches/nexmark/` with the generator tables read from the files instead.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

H1 = """
CREATE EXTERNAL TABLE payments STORED AS PARQUET LOCATION '{data}/payments'
OPTIONS ('watermark' 'event_time - INTERVAL ''5 seconds''', 'max_rows' '65536');
CREATE EXTERNAL TABLE h1 STORED AS BLACKHOLE LOCATION 'h1';
INSERT INTO h1
SELECT user_id, date_bin(INTERVAL '1 minute', event_time) AS minute, count(*) AS n,
       sum(amount) AS total, max(amount) AS top, avg(amount) AS mean
FROM payments GROUP BY 1, 2;
"""

GENERATE = """
CREATE EXTERNAL TABLE person STORED AS GENERATOR LOCATION 'nexmark'
OPTIONS ('events' 'person', 'count' '{events}', 'rate' '10000');
CREATE EXTERNAL TABLE auction STORED AS GENERATOR LOCATION 'nexmark'
OPTIONS ('events' 'auction', 'count' '{events}', 'rate' '10000');
CREATE EXTERNAL TABLE bid STORED AS GENERATOR LOCATION 'nexmark'
OPTIONS ('events' 'bid', 'count' '{events}', 'rate' '10000');
CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
OPTIONS ('count' '{events}', 'rate' '10000', 'riders' '100000', 'seed' '7');
CREATE EXTERNAL TABLE person_out STORED AS PARQUET LOCATION '{data}/person';
CREATE EXTERNAL TABLE auction_out STORED AS PARQUET LOCATION '{data}/auction';
CREATE EXTERNAL TABLE bid_out STORED AS PARQUET LOCATION '{data}/bid';
CREATE EXTERNAL TABLE payments_out STORED AS PARQUET LOCATION '{data}/payments';
INSERT INTO person_out SELECT * FROM person ORDER BY date_time;
INSERT INTO auction_out SELECT * FROM auction ORDER BY date_time;
INSERT INTO bid_out SELECT * FROM bid ORDER BY date_time;
INSERT INTO payments_out SELECT * FROM payments ORDER BY event_time;
"""


def volley_binary(build: bool) -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if build:
        subprocess.run(
            ["cargo", "build", "--release", "-p", "volley", "--bin", "volley"],
            cwd=ROOT,
            check=True,
        )
    binary = target / "release" / "volley"
    if not binary.exists():
        sys.exit(f"no release binary at {binary}: build it (cargo build --release -p volley)")
    return binary


def generate(volley: Path, data: Path, events: int) -> dict:
    """The inputs as Parquet files under `data`, once; returns rows per table."""
    counts_file = data / "rows.txt"
    if counts_file.exists():
        return dict(
            (name, int(n)) for name, n in (line.split() for line in counts_file.read_text().split("\n") if line)
        )
    data.mkdir(parents=True, exist_ok=True)
    pipeline = data / "generate.sql"
    pipeline.write_text(GENERATE.format(events=events, data=data))
    out = subprocess.run(
        [str(volley), "batch", str(pipeline)], cwd=data, capture_output=True, text=True
    )
    if out.returncode != 0:
        sys.exit(f"generating the inputs failed:\n{out.stderr}")
    counts = {}
    for table in ["person", "auction", "bid", "payments"]:
        found = re.search(rf"^{table}_out: (\d+) rows written", out.stderr + out.stdout, re.M)
        if not found:
            sys.exit(f"no row count for {table} in:\n{out.stderr}")
        counts[table] = int(found.group(1))
    counts_file.write_text("".join(f"{k} {v}\n" for k, v in counts.items()))
    return counts


def nexmark_on_files(query: str, data: Path) -> tuple[str, list]:
    """benches/nexmark/<query>.sql with its generator tables read from `data`, and the
    tables it reads."""
    text = (ROOT / "benches" / "nexmark" / f"{query}.sql").read_text()
    tables = []

    def on_files(m: re.Match) -> str:
        options = m.group(2)
        events = re.search(r"'events'\s+'(\w+)'", options).group(1)
        watermark = re.search(r"'watermark'\s+('(?:[^']|'')*')", options)
        tables.append(events)
        kept = [f"'watermark' {watermark.group(1)}"] if watermark else []
        kept.append("'max_rows' '65536'")
        return f"{m.group(1)} STORED AS PARQUET LOCATION '{data}/{events}'\nOPTIONS ({', '.join(kept)});"

    text = re.sub(
        r"(CREATE EXTERNAL TABLE \w+) STORED AS GENERATOR LOCATION 'nexmark'\s*OPTIONS \(((?:[^;])*)\);",
        on_files,
        text,
    )
    return text, tables


def timed(command: list, cwd: Path, cores: str) -> dict:
    """Runs `command` pinned to `cores`: wall and CPU seconds, peak RSS (MiB)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as stats:
        full = ["taskset", "-c", cores, "/usr/bin/time", "-f", "%e %U %S %M", "-o", stats.name]
        start = time.monotonic()
        out = subprocess.run(full + command, cwd=cwd, capture_output=True, text=True)
        wall = time.monotonic() - start
        if out.returncode != 0:
            sys.exit(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
        _, user, system, rss_kib = stats.read().split()[-4:]
    return {"wall": wall, "cpu": float(user) + float(system), "rss": int(rss_kib) / 1024}


def datafusion_run(sql: str, data: Path) -> float | None:
    """Wall seconds of the INSERT's SELECT in DataFusion (Python), or None without it."""
    try:
        import datafusion  # noqa: F401
    except ImportError:
        print("  (pip install datafusion to time DataFusion on the same files)")
        return None
    script = f"""
import re, time, datafusion
ctx = datafusion.SessionContext()
text = {sql!r}
for m in re.finditer(r"CREATE EXTERNAL TABLE (\\w+) STORED AS PARQUET LOCATION '([^']+)'", text):
    ctx.register_parquet(m.group(1), m.group(2))
select = text[text.index('SELECT', text.index('INSERT INTO')):]
start = time.monotonic()
ctx.sql(select).collect()
print(time.monotonic() - start)
"""
    out = subprocess.run(
        ["taskset", "-c", "0,1", sys.executable, "-c", script], capture_output=True, text=True
    )
    if out.returncode != 0:
        print(f"  (DataFusion could not run it: {out.stderr.strip().splitlines()[-1]})")
        return None
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="generated events")
    parser.add_argument("--queries", default="h1,q1,q5,q7", help="comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="runs of each kind (median)")
    parser.add_argument("--data", type=Path, help="where the generated files go")
    parser.add_argument("--no-build", action="store_true", help="use the release binary as is")
    args = parser.parse_args()
    if shutil.which("taskset") is None:
        sys.exit("taskset is needed (util-linux)")
    volley = volley_binary(not args.no_build)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    data = (args.data or target / "scale-data" / str(args.events)).resolve()
    counts = generate(volley, data, args.events)
    work = Path(tempfile.mkdtemp(prefix="volley-scale-"))
    print(f"inputs: {data} ({', '.join(f'{k} {v:,}' for k, v in counts.items())})")
    print(f"{'query':6} {'run':22} {'wall s':>7} {'events/s':>11} {'CPU s/M':>8} {'RSS MiB':>8}")
    for query in args.queries.split(","):
        if query == "h1":
            sql, tables = H1.format(data=data), ["payments"]
        else:
            sql, tables = nexmark_on_files(query, data)
        events = sum(counts[t] for t in tables)
        pipeline = work / f"{query}.sql"
        pipeline.write_text(sql)
        kinds = [
            ("stream 1 core", "0", ["run", "--no-checkpoint", "--no-flight", "--no-http", "--quiet", "--workers", "1"]),
            ("stream 2 cores", "0,1", ["run", "--no-checkpoint", "--no-flight", "--no-http", "--quiet"]),
            ("stream 2 cores -w1", "0,1", ["run", "--no-checkpoint", "--no-flight", "--no-http", "--quiet", "--workers", "1"]),
            ("batch 1 core", "0", ["batch", "--overwrite"]),
            ("batch 2 cores", "0,1", ["batch", "--overwrite"]),
        ]
        walls = {}
        for name, cores, command in kinds:
            runs = [timed([str(volley)] + command + [str(pipeline)], work, cores) for _ in range(args.runs)]
            wall = statistics.median(r["wall"] for r in runs)
            cpu = statistics.median(r["cpu"] for r in runs)
            rss = max(r["rss"] for r in runs)
            walls[name] = wall
            print(
                f"{query:6} {name:22} {wall:7.2f} {events / wall:11,.0f} "
                f"{cpu / (events / 1e6):8.2f} {rss:8.0f}"
            )
        df = datafusion_run(sql, data)
        if df is not None:
            print(f"{query:6} {'DataFusion (Python)':22} {df:7.2f} {events / df:11,.0f}")
        print(
            f"{query:6} 1 -> 2 cores: streaming {walls['stream 1 core'] / walls['stream 2 cores']:.2f}x, "
            f"batch {walls['batch 1 core'] / walls['batch 2 cores']:.2f}x; "
            f"--workers 2 vs 1 on 2 cores: {walls['stream 2 cores -w1'] / walls['stream 2 cores']:.2f}x"
            + (f"; streaming / DataFusion speed: {df / walls['stream 2 cores']:.2f}x" if df else "")
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
