//! `volley run` and `verify` as an operator sees them: paths resolve in the working directory,
//! a restore says what it restored, totals say what this run did, signals stop gracefully, and
//! `verify` fails on what CI must not pass.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use super::volley;

fn sh(dir: &Path, args: &[&str]) -> Output {
    volley().args(args).current_dir(dir).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The run summary (stdout).
fn summary(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const BOUNDED: &str = "CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
     OPTIONS ('count' '9000', 'rate' '100', 'watermark' 'event_time - INTERVAL ''1 second''');
     CREATE EXTERNAL TABLE per_minute STORED AS PARQUET LOCATION 'out/per_minute';
     INSERT INTO per_minute SELECT date_bin(INTERVAL '1 minute', event_time) AS w, count(*) AS n FROM rides GROUP BY 1;";

#[test]
fn paths_resolve_in_the_working_directory_and_a_restore_says_what_it_restored() {
    let home = tempfile::tempdir().unwrap();
    let (here, there, files) = (
        home.path().join("a"),
        home.path().join("b"),
        home.path().join("p"),
    );
    for d in [&here, &there, &files] {
        std::fs::create_dir_all(d).unwrap();
    }
    let pipeline = files.join("surge.sql");
    std::fs::write(&pipeline, BOUNDED).unwrap();
    let pipeline = pipeline.to_str().unwrap();
    let first = sh(&here, &["run", pipeline, "--quiet"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        summary(&first).contains("per_minute: 2 rows written"),
        "{}",
        summary(&first)
    );
    assert!(
        !stderr(&first).contains("rows written"),
        "the summary is on stdout only"
    );
    let own: Vec<String> = std::fs::read_dir(here.join(".volley/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        own.len() == 1 && own[0].starts_with("surge-"),
        "checkpoints named for the pipeline file: {own:?}"
    );
    assert!(
        !files.join(".volley").exists(),
        "nothing beside the pipeline file"
    );
    // Again from the same directory: the finished run is restored, and says so; its status
    // counts what this run read (nothing), not the restored total over this run's time.
    let again = sh(&here, &["run", pipeline]);
    let err = stderr(&again);
    assert!(again.status.success(), "{err}");
    assert!(
        err.contains("restored checkpoint of epoch") && err.contains(".volley/checkpoints/surge"),
        "{err}"
    );
    assert!(
        err.contains("nothing is left to do") && err.contains("--from-scratch"),
        "{err}"
    );
    assert!(
        summary(&again).contains("per_minute: 0 rows written (2 since the pipeline started"),
        "{}",
        summary(&again)
    );
    assert!(
        err.contains("| 9000 events (0 this run) |") && !err.contains("/s avg"),
        "{err}"
    );
    // From another directory: its own state, its own output.
    let elsewhere = sh(&there, &["run", pipeline, "--quiet"]);
    let err = stderr(&elsewhere);
    assert!(elsewhere.status.success(), "{err}");
    assert!(
        !err.contains("restored") && summary(&elsewhere).contains("per_minute: 2 rows written"),
        "{err}"
    );
    assert!(there.join("out/per_minute").read_dir().unwrap().count() > 0);
}

#[cfg(unix)]
#[test]
fn a_signal_finishes_the_micro_batch_checkpoints_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.sql"),
        "CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
         OPTIONS ('rate' '2000', 'pace' 'realtime', 'max_delay' '100 ms',
                  'watermark' 'event_time - INTERVAL ''1 second''');
         CREATE EXTERNAL TABLE raw STORED AS PARQUET LOCATION 'out/raw';
         INSERT INTO raw SELECT request_id, rider_id FROM rides;",
    )
    .unwrap();
    let child = volley()
        .args(["run", "p.sql", "--quiet", "--pipeline-id", "p"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let latest = dir.path().join(".volley/checkpoints/p/_latest");
    let started = Instant::now();
    while !latest.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no checkpoint written"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("stopping after this micro-batch"), "{err}");
    let told = summary(&out);
    assert!(
        told.contains("raw: ") && told.contains("rows written"),
        "{told}"
    );
    assert!(told.contains("checkpoints written"), "{told}");
    // The stop checkpointed its last epoch: a restart re-reads nothing.
    let files = dir.path().join("out/raw").read_dir().unwrap().count();
    let epoch: u64 = std::fs::read_to_string(&latest)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        files as u64, epoch,
        "one file per epoch, every epoch checkpointed"
    );
}

#[test]
fn verify_writes_a_report_and_fails_on_empty_comparisons_and_updating_results() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.csv"), "id,v\n").unwrap();
    std::fs::write(
        dir.path().join("p.sql"),
        "CREATE EXTERNAL TABLE t (id BIGINT NOT NULL, v DOUBLE) STORED AS CSV LOCATION 'empty.csv';
         CREATE EXTERNAL TABLE copy STORED AS PARQUET LOCATION 'out/copy';
         INSERT INTO copy SELECT id, v FROM t;",
    )
    .unwrap();
    let out = sh(dir.path(), &["verify", "p.sql", "--report", "report.json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL copy: no rows on either side"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["pass"], false);
    for run in 0..2 {
        assert_eq!(report["runs"][run]["sinks"][0]["sink"], "copy");
        assert_eq!(report["runs"][run]["sinks"][0]["compared"], 0);
    }
    let out = sh(
        dir.path(),
        &[
            "verify",
            "p.sql",
            "--allow-empty",
            "--report",
            "report.json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Rows, and a per-key report.
    std::fs::write(dir.path().join("empty.csv"), "id,v\n1,2.5\n2,NaN\n3,\n").unwrap();
    let out = sh(dir.path(), &["verify", "p.sql", "--report", "report.json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["pass"], true);
    for run in 0..2 {
        assert_eq!(report["runs"][run]["compared"], 3);
        assert_eq!(report["runs"][run]["matched"], 3);
        assert_eq!(report["runs"][run]["sources"][0]["records"], 3);
    }
    // An updating result into files would hold every update: verify refuses it as run does.
    std::fs::write(
        dir.path().join("keyed.sql"),
        "CREATE EXTERNAL TABLE t (id BIGINT NOT NULL, v DOUBLE) STORED AS CSV LOCATION 'empty.csv';
         CREATE EXTERNAL TABLE per_id STORED AS PARQUET LOCATION 'out/per_id';
         INSERT INTO per_id SELECT id, count(*) AS n FROM t GROUP BY id;",
    )
    .unwrap();
    let out = sh(dir.path(), &["verify", "keyed.sql"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("updates its rows every micro-batch"),
        "{}",
        stderr(&out)
    );
}
