//! A model far slower than its `timeout`: the stream keeps flowing, every row of a call that
//! timed out is NULL and a dead letter with the reason, a fast model in the same pipeline
//! scores every row, no more calls are in flight than `max_in_flight`, and memory stays
//! bounded while the slow model's abandoned runs go on.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::process::volley_command;

const ROWS: usize = 600;

fn write_pipeline(dir: &Path) {
    let repo = crate::predict::repo();
    let mut csv = String::from("id,x\n");
    for i in 0..ROWS {
        csv.push_str(&format!("{i},{}\n", i as f64));
    }
    std::fs::write(dir.join("in.csv"), csv).unwrap();
    let sql = format!(
        r#"
CREATE MODEL slow LOCATION '{slow}'
OPTIONS ('timeout' '100 ms', 'max_rows' '8', 'max_in_flight' '1', 'dead_letter' 'out/slow_letters');
CREATE MODEL fraud LOCATION '{fraud}';
CREATE EXTERNAL TABLE events (id BIGINT NOT NULL, x DOUBLE NOT NULL)
STORED AS CSV LOCATION 'in.csv' OPTIONS ('has_header' 'true', 'max_rows' '20');
CREATE EXTERNAL TABLE slow_scores STORED AS PARQUET LOCATION 'out/slow';
CREATE EXTERNAL TABLE fast_scores STORED AS PARQUET LOCATION 'out/fast';
INSERT INTO slow_scores SELECT id, predict('slow', x) AS v FROM events;
INSERT INTO fast_scores SELECT id, predict('fraud', x, x, x, 1.0) AS v FROM events;
"#,
        slow = repo.join("udfs/tests/data/slow.onnx").display(),
        fraud = crate::predict::fraud_model(),
    );
    std::fs::write(dir.join("pipeline.sql"), sql).unwrap();
}

/// The resident set of process `pid` in KiB (0 once it has gone).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `(id, v)` of the Parquet files under `dir`.
fn scores(dir: &Path) -> Vec<(i64, Option<f32>)> {
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        let file = std::fs::File::open(&path).unwrap();
        let reader =
            datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                file,
            )
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let ids =
                arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Int64).unwrap();
            let ids = ids
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap();
            let v = batch
                .column(1)
                .as_any()
                .downcast_ref::<arrow::array::Float32Array>()
                .unwrap();
            for i in 0..batch.num_rows() {
                rows.push((
                    ids.value(i),
                    arrow::array::Array::is_valid(v, i).then(|| v.value(i)),
                ));
            }
        }
    }
    rows.sort_by_key(|r| r.0);
    rows
}

#[test]
fn a_model_slower_than_its_timeout_sends_its_rows_to_dead_letters_and_the_stream_flows() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path());
    let started = Instant::now();
    let mut child = volley_command()
        .args(["run", "pipeline.sql", "--quiet"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak_kib = 0;
    while child.try_wait().unwrap().is_none() {
        peak_kib = peak_kib.max(rss_kib(child.id()));
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the run does not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The run summary (stdout).
    let stderr = String::from_utf8_lossy(&out.stdout);

    // The stream flowed: without the timeout the slow model alone would take 600 rows at
    // ~0.1 s each (a debug build); every call gave up after 100 ms instead.
    assert!(took < Duration::from_secs(45), "took {took:?}: {stderr}");

    // Every slow row is NULL, every fast row scored.
    let slow = scores(&dir.path().join("out/slow"));
    assert_eq!(slow.len(), ROWS);
    assert!(slow.iter().all(|(_, v)| v.is_none()), "{slow:?}");
    let fast = scores(&dir.path().join("out/fast"));
    assert_eq!(fast.len(), ROWS);
    assert!(fast.iter().all(|(_, v)| v.is_some_and(f32::is_finite)));

    // Each slow row is a dead letter once, with the reason.
    let mut lettered: Vec<u64> = Vec::new();
    for entry in std::fs::read_dir(dir.path().join("out/slow_letters")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            let letter: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(letter["source"], "model_slow");
            let reason = letter["reason"].as_str().unwrap();
            assert!(
                reason.contains("model 'slow' timed out on")
                    && reason.contains("(option 'timeout')"),
                "{reason}"
            );
            lettered.push(letter["row"]["x"].as_f64().unwrap() as u64);
        }
    }
    lettered.sort_unstable();
    assert_eq!(lettered, (0..ROWS as u64).collect::<Vec<_>>());

    // The summary counts timeouts (not failures), and the in-flight bound held.
    let line = |model: &str| {
        stderr
            .lines()
            .find(|l| l.starts_with(&format!("model {model}: ")))
            .unwrap_or_else(|| panic!("no summary line for {model}: {stderr}"))
            .to_string()
    };
    let slow_line = line("slow");
    assert!(slow_line.contains(" 0 failures, "), "{slow_line}");
    assert!(!slow_line.contains(" 0 timeouts"), "{slow_line}");
    assert!(slow_line.ends_with(", 1 in flight at most"), "{slow_line}");
    assert!(line("fraud").contains(" 0 failures, 0 timeouts, "));
    assert!(
        stderr.contains("600 rows left out by predict()"),
        "{stderr}"
    );

    // Memory: one 8-row run of the slow model holds about 100 MiB; the abandoned runs never
    // pile up.
    assert!(peak_kib < 1024 * 1024, "peak RSS {peak_kib} KiB");
}
