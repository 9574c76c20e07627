//! The `volley` binary as a user runs it.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use volley_connectors::ConnectorRegistry;
use volley_connectors::generator::{GeneratorConnector, generate_rides};
use volley_sql::Pipeline;

#[path = "cli/everyday.rs"]
mod everyday;
#[path = "cli/flight.rs"]
mod flight;
#[path = "cli/golden.rs"]
mod golden;
#[path = "cli/inputs.rs"]
mod inputs;
#[path = "cli/live_restore.rs"]
mod live_restore;
#[path = "cli/runs.rs"]
mod runs;
#[path = "cli/snapshots.rs"]
mod snapshots;

/// A `volley` command whose Flight SQL server takes any free port, so tests running side by
/// side do not collide on the default one.
fn volley() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_volley"));
    cmd.env("VOLLEY_FLIGHT", "127.0.0.1:0");
    cmd.env("VOLLEY_HTTP", "127.0.0.1:0");
    cmd
}

/// A `volley` serving Flight SQL: the process, the address it announced (and the whole
/// announcing line), and a thread draining the rest of its stderr so the status line never
/// blocks it.
struct Serving {
    child: std::process::Child,
    addr: String,
    announced: String,
    stderr: std::thread::JoinHandle<Vec<String>>,
}

/// Spawns `cmd` and waits for the Flight SQL address it announces.
fn serving(cmd: &mut Command) -> Serving {
    use std::io::{BufRead, BufReader};
    let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (addr, announced) = loop {
        let line = lines.next().expect("volley exited before serving").unwrap();
        if let Some(rest) = line.strip_prefix("volley: Flight SQL on grpc://") {
            let addr = rest.split([' ', ',']).next().unwrap().to_string();
            break (addr, line);
        }
    };
    let stderr = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    Serving {
        child,
        addr,
        announced,
        stderr,
    }
}

/// A Flight SQL client of `addr` (plain text).
async fn flight_client(
    addr: &str,
) -> arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    arrow_flight::sql::client::FlightSqlServiceClient::new(channel)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Writes `count` generated ride requests (the surge example's generator settings) to Parquet.
fn rides_parquet(dir: &Path, count: u64) -> PathBuf {
    let sql = std::fs::read_to_string(repo().join("examples/surge/pipeline.sql")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pipeline = rt
        .block_on(Pipeline::parse(&sql, &ConnectorRegistry::builtin()))
        .unwrap();
    let opts = GeneratorConnector::options(&pipeline.tables[0]).unwrap();
    let batch = generate_rides(&opts, 0, count);
    let path = dir.join("rides.parquet");
    let file = std::fs::File::create(&path).unwrap();
    let mut writer =
        datafusion::parquet::arrow::ArrowWriter::try_new(file, Arc::clone(&batch.schema()), None)
            .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    path
}

#[test]
fn verify_surge_over_parquet_matches_and_batch_writes_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let input = rides_parquet(dir.path(), 30_000);
    let out = volley()
        .current_dir(dir.path())
        .arg("verify")
        .arg(repo().join("examples/surge/pipeline.sql"))
        .arg("--input")
        .arg(format!("ride_requests={}", input.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("demand_1m: ") && stdout.contains("overall match rate: 100.0000%"),
        "{stdout}"
    );

    let out = volley()
        .current_dir(dir.path())
        .arg("batch")
        .arg(repo().join("examples/surge/pipeline.sql"))
        .arg("--input")
        .arg(format!("ride_requests={}", input.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("out/demand_1m").read_dir().unwrap().count() == 1);
}

#[test]
fn run_writes_epoch_files_and_exits_when_the_source_ends() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("p.sql");
    std::fs::write(
        &pipeline,
        "CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
         OPTIONS ('count' '20000', 'rate' '100', 'watermark' 'event_time - INTERVAL ''1 second''', 'max_rows' '4096');
         CREATE EXTERNAL TABLE per_minute STORED AS CSV LOCATION 'out/per_minute';
         INSERT INTO per_minute SELECT date_bin(INTERVAL '1 minute', event_time) AS w, count(*) AS n FROM rides GROUP BY 1;",
    )
    .unwrap();
    let out = volley()
        .current_dir(dir.path())
        .arg("run")
        .arg(&pipeline)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("per_minute: 4 rows written"),
        "20 000 events at 100/s span 200 s: 4 one-minute windows: {summary}"
    );
    let files: Vec<_> = dir
        .path()
        .join("out/per_minute")
        .read_dir()
        .unwrap()
        .collect();
    assert!(!files.is_empty());
    let total: usize = files
        .into_iter()
        .map(|f| {
            std::fs::read_to_string(f.unwrap().path())
                .unwrap()
                .lines()
                .skip(1)
                .map(|l| l.rsplit(',').next().unwrap().parse::<usize>().unwrap())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(total, 20_000, "every event counted once");
}

#[test]
fn explain_shows_the_window_and_errors_name_the_statement() {
    let out = volley()
        .arg("explain")
        .arg(repo().join("examples/surge/pipeline.sql"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("tumbling-window aggregate") && stdout.contains("late rows: window_start="),
        "{stdout}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.sql");
    std::fs::write(&bad, "CREATE EXTERNAL TABLE t (a INT) STORED AS CSV LOCATION 'x.csv';\n\nINSERT INTO t SELECT nope FROM t;").unwrap();
    let out = volley().arg("run").arg(&bad).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("statement 2 (line 3)"), "{stderr}");
}

/// `explain` writes an interval as the SQL that wrote it, not as DataFusion's struct.
#[test]
fn explain_writes_intervals_as_sql() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("p.sql");
    std::fs::write(
        &pipeline,
        "CREATE EXTERNAL TABLE clicks (ts TIMESTAMP NOT NULL, user_id BIGINT NOT NULL)
         STORED AS CSV LOCATION 'clicks.csv' OPTIONS ('watermark' 'ts - INTERVAL ''5 seconds''');
         CREATE EXTERNAL TABLE out STORED AS PARQUET LOCATION 'out';
         INSERT INTO out SELECT date_bin(INTERVAL '5 minutes', ts) AS w, count(*) AS n
         FROM clicks WHERE ts > TIMESTAMP '2026-01-01T00:00:00' - INTERVAL '1 day 2 hours'
         GROUP BY 1;",
    )
    .unwrap();
    std::fs::write(dir.path().join("clicks.csv"), "ts,user_id\n").unwrap();
    let out = volley()
        .current_dir(dir.path())
        .arg("explain")
        .arg(&pipeline)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("window date_bin(INTERVAL '5 minutes', ts) over event time 'ts' (INTERVAL '5 minutes' wide)"),
        "{stdout}"
    );
    assert!(!stdout.contains("IntervalMonthDayNano"), "{stdout}");
    assert!(!stdout.contains("nanoseconds:"), "{stdout}");
}

/// `volley explain p.sql | head -1`: a reader that stops early ends `explain` quietly.
#[test]
fn explain_into_a_closed_pipe_exits_cleanly() {
    let mut child = volley()
        .arg("explain")
        .arg(repo().join("examples/surge/pipeline.sql"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before `explain` has planned anything, so its first write finds no reader.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
}

/// Offline SQL over a historical Delta table runs unchanged: a batch job copies the events
/// into a Delta table, and `verify` over that table (bound with `--input`) matches 100%.
#[test]
fn delta_tables_are_bounded_inputs_for_batch_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let parquet = rides_parquet(dir.path(), 20_000);
    let copy = dir.path().join("copy.sql");
    std::fs::write(
        &copy,
        "CREATE EXTERNAL TABLE ride_requests (
           request_id BIGINT NOT NULL, rider_id BIGINT NOT NULL, lat DOUBLE NOT NULL,
           lon DOUBLE NOT NULL, event_time TIMESTAMP NOT NULL
         ) STORED AS PARQUET LOCATION 'unused.parquet';
         CREATE EXTERNAL TABLE history STORED AS DELTA LOCATION 'history';
         INSERT INTO history SELECT * FROM ride_requests;",
    )
    .unwrap();
    let out = volley()
        .current_dir(dir.path())
        .arg("batch")
        .arg(&copy)
        .arg("--input")
        .arg(format!("ride_requests={}", parquet.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("history/_delta_log").is_dir());

    let out = volley()
        .current_dir(dir.path())
        .arg("verify")
        .arg(repo().join("examples/surge/pipeline.sql"))
        .arg("--input")
        .arg(format!(
            "ride_requests={}",
            dir.path().join("history").display()
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("overall match rate: 100.0000%"), "{stdout}");
}

fn windowed(width: &str) -> String {
    format!(
        "CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
         OPTIONS ('count' '5000', 'rate' '100', 'watermark' 'event_time - INTERVAL ''1 second''', 'max_rows' '1000');
         CREATE EXTERNAL TABLE per_window STORED AS PARQUET LOCATION 'out/per_window';
         INSERT INTO per_window SELECT date_bin(INTERVAL '{width}', event_time) AS w, count(*) AS n FROM rides GROUP BY 1;"
    )
}

/// A finished pipeline restarted does nothing; one whose state no longer fits refuses to
/// restore and says how to start over; `--from-scratch` starts over.
#[test]
fn changed_pipelines_refuse_to_restore_until_started_from_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("p.sql");
    let run = |extra: &[&str]| {
        volley()
            .current_dir(dir.path())
            .arg("run")
            .arg(&pipeline)
            .args(["--quiet", "--pipeline-id", "p"])
            .args(extra)
            .output()
            .unwrap()
    };
    std::fs::write(&pipeline, windowed("1 minute")).unwrap();
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checkpoints = dir.path().join(".volley/checkpoints/p");
    assert!(checkpoints.join("_latest").is_file());

    // Restarted after the end: restores the final checkpoint, reads nothing, writes nothing.
    let files = || {
        dir.path()
            .join("out/per_window")
            .read_dir()
            .unwrap()
            .count()
    };
    let before = files();
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(files(), before);

    std::fs::write(&pipeline, windowed("2 minutes")).unwrap();
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("belongs to another pipeline")
            && stderr.contains("INTERVAL '2 minutes'")
            && stderr.contains("--from-scratch"),
        "{stderr}"
    );
    assert!(
        stderr.contains("INTERVAL '2 minutes'") && !stderr.contains("IntervalMonthDayNano"),
        "{stderr}"
    );

    let out = run(&["--from-scratch"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn grouped(group_by: &str, extra: &str) -> String {
    format!(
        "CREATE EXTERNAL TABLE rides (rider_id BIGINT NOT NULL, lat DOUBLE NOT NULL, lon DOUBLE NOT NULL,
           event_time TIMESTAMP NOT NULL)
         STORED AS KAFKA LOCATION '127.0.0.1:1/rides'
         OPTIONS ('group' 'g', 'partitioned_by' 'rider_id',
                  'watermark' 'event_time - INTERVAL ''1 second''');
         CREATE EXTERNAL TABLE out STORED AS PARQUET LOCATION 'out';
         {extra}
         INSERT INTO out SELECT {group_by} AS k, date_bin(INTERVAL '1 minute', event_time) AS w, count(*) AS n
         FROM rides GROUP BY 1, 2;"
    )
}

fn run_error(dir: &Path, sql: &str, args: &[&str]) -> String {
    std::fs::write(dir.join("pipeline.sql"), sql).unwrap();
    let out = volley()
        .args(["run", "pipeline.sql", "--quiet"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn group_mode_refuses_what_it_would_get_wrong_before_joining() {
    let dir = tempfile::tempdir().unwrap();
    // Groups spread over partitions: refused, naming the INSERT, the column and the recipe.
    let err = run_error(dir.path(), &grouped("geohash(lat, lon, 5)", ""), &[]);
    assert!(err.contains("INSERT INTO out"), "{err}");
    assert!(
        err.contains("'rider_id' (option 'partitioned_by')"),
        "{err}"
    );
    assert!(err.contains("docs/scale-out.md"), "{err}");
    // Grouped by the partitioning column it plans; --no-checkpoint is refused before any
    // broker is contacted (the LOCATION's port is closed).
    let err = run_error(dir.path(), &grouped("rider_id", ""), &["--no-checkpoint"]);
    assert!(err.contains("--no-checkpoint cannot be used"), "{err}");
    // A second source cannot join the group.
    let other = "CREATE EXTERNAL TABLE more STORED AS GENERATOR LOCATION 'x' OPTIONS ('count' '1');
                 INSERT INTO out SELECT rider_id AS k, event_time AS w, 1 AS n FROM more;";
    let err = run_error(dir.path(), &grouped("rider_id", other), &[]);
    assert!(err.contains("must be the only source"), "{err}");
}
