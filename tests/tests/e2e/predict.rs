//! `predict()` in pipelines: batch equals stream with a model over window aggregates, keyed
//! aggregates and raw events; the ONNX Runtime backend against the reference outputs; failing
//! rows to dead letters; lineage in Delta commits and `volley explain`.

use std::path::{Path, PathBuf};
use std::process::Command;

use volley_engine::driver::BatchSizing;
use volley_engine::verify::InputOrder;

use crate::harness::{assert_exact, parity, pipeline, rows};
use crate::process::volley_command;
use crate::readers::python;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The example fraud model, as a path for pipeline SQL.
pub fn fraud_model() -> String {
    repo()
        .join("examples/fraud/fraud.onnx")
        .display()
        .to_string()
}

/// Scores per rider window (over the aggregates), per rider (keyed), and per event.
fn sql(seed: u64, count: u64) -> String {
    format!(
        r#"
CREATE MODEL fraud LOCATION '{model}' OPTIONS ('max_rows' '{max_rows}');

CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '{count}', 'rate' '20', 'seed' '{seed}', 'disorder' '2 seconds', 'cities' '4',
         'riders' '30', 'watermark' 'event_time - INTERVAL ''3 seconds''');

CREATE EXTERNAL TABLE window_risk STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE rider_risk STORED AS BLACKHOLE LOCATION 'x' OPTIONS ('merge_key' 'rider_id');
CREATE EXTERNAL TABLE event_risk STORED AS BLACKHOLE LOCATION 'x';

INSERT INTO window_risk
SELECT rider_id, w, n, predict('fraud', spread, n / 10.0, spread * 2, hour) AS score
FROM (
  SELECT rider_id, date_bin(INTERVAL '5 seconds', event_time) AS w, count(*) AS n,
         (max(lat) - min(lat)) * 111.0 AS spread, max(extract(hour FROM event_time)) AS hour
  FROM rides GROUP BY 1, 2)
WHERE n > 0;

INSERT INTO rider_risk
SELECT rider_id, count(*) AS n,
       predict('fraud', avg(lat) - 40.0, count(*) / 5.0, stddev(lon), max(lon) - min(lon)) AS score
FROM rides GROUP BY rider_id;

INSERT INTO event_risk
SELECT request_id, predict('fraud', (request_id % 50) * 1.0, rider_id % 24, lat - 40.0, lon / 10.0) AS score
FROM rides WHERE request_id % 3 <> 0;
"#,
        model = fraud_model(),
        max_rows = 1 + seed * 37 % 100,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_over_window_aggregates_stream_equals_batch() {
    for seed in 0..4u64 {
        for (sizing, count) in [
            (BatchSizing::Fixed(1), 100),
            (BatchSizing::Fixed(9), 500),
            (
                BatchSizing::Random {
                    min: 1,
                    max: 200,
                    seed: seed + 3,
                },
                500,
            ),
        ] {
            let p = pipeline(&sql(seed, count)).await;
            let input = rows(&p).await;
            for order in [InputOrder::InOrder, InputOrder::Shuffled] {
                let workers = 1 + (seed as usize) % 3;
                let report = parity(&p, &input, sizing.clone(), order, seed, workers).await;
                let context = format!("seed {seed}, {sizing:?}, {order:?}, {workers} workers");
                assert_exact(&report, &context);
                assert_eq!(report.sinks.len(), 3, "{context}");
                assert!(
                    report.sinks.iter().all(|s| s.total > 0),
                    "{context}: every sink got rows: {report:?}"
                );
            }
        }
    }
}

/// The reference inputs, ONNX Runtime's outputs and the models' SHA-256 (Python hashlib),
/// written by `examples/fraud/build_model.py`.
pub fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(repo().join("udfs/tests/data/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Rows with x0 outside [0, 16) make the lookup model fail (Gather out of bounds).
const BAD_ROWS: [usize; 4] = [0, 17, 18, 77];

/// `inputs.csv`: id, the four reference features, and the lookup model's x0, x1.
fn write_inputs(dir: &Path, reference: &serde_json::Value) {
    let mut csv = String::from("id,a,b,c,d,x0,x1\n");
    for (i, row) in reference["inputs"].as_array().unwrap().iter().enumerate() {
        let f: Vec<f64> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let x0 = if BAD_ROWS.contains(&i) {
            100 + i
        } else {
            i % 16
        };
        csv.push_str(&format!(
            "{i},{},{},{},{},{x0},{}\n",
            f[0],
            f[1],
            f[2],
            f[3],
            i as f64 * 0.5
        ));
    }
    std::fs::write(dir.join("inputs.csv"), csv).unwrap();
}

fn ort_pipeline(dir: &Path) {
    let data = repo().join("udfs/tests/data");
    let sql = format!(
        r#"
CREATE MODEL fraud STORED AS ONNX LOCATION '{fraud}' OPTIONS ('backend' 'onnxruntime', 'threads' '1');
CREATE MODEL lookup LOCATION '{lookup}'
OPTIONS ('backend' 'onnxruntime', 'max_rows' '32', 'dead_letter' 'letters');

CREATE EXTERNAL TABLE inputs (
  id BIGINT NOT NULL, a DOUBLE NOT NULL, b DOUBLE NOT NULL, c DOUBLE NOT NULL, d DOUBLE NOT NULL,
  x0 DOUBLE NOT NULL, x1 DOUBLE NOT NULL
) STORED AS CSV LOCATION 'inputs.csv' OPTIONS ('has_header' 'true', 'max_rows' '40');

CREATE EXTERNAL TABLE scores STORED AS DELTA LOCATION 'scores';
CREATE EXTERNAL TABLE looked STORED AS DELTA LOCATION 'looked';

INSERT INTO scores SELECT id, predict('fraud', a, b, c, d) AS score FROM inputs;
INSERT INTO looked SELECT id, predict('lookup', x0, x1) AS v FROM inputs;
"#,
        fraud = fraud_model(),
        lookup = data.join("lookup.onnx").display(),
    );
    std::fs::write(dir.join("pipeline.sql"), sql).unwrap();
}

/// Reads a Delta table with Python deltalake: `{"rows": {id: value}, "models": [commitInfo
/// "volley.models" of each write]}`.
fn read_scored(python: &Path, table: &Path, column: &str) -> serde_json::Value {
    let script = r#"
import json, sys, deltalake
t = deltalake.DeltaTable(sys.argv[1])
rows = {str(r["id"]): r[sys.argv[2]] for r in t.to_pyarrow_table().to_pylist()}
models = [h.get("volley.models") for h in t.history() if h.get("operation") != "CREATE TABLE"]
print(json.dumps({"rows": rows, "models": models}))
sys.stdout.flush()
"#;
    let out = Command::new(python)
        .args(["-c", script])
        .arg(table)
        .arg(column)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().next().unwrap_or_default()).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e}: {text} {}",
            table.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The `onnxruntime` package's shared library, as the venv's Python reports it.
fn onnxruntime_library(python: &Path) -> PathBuf {
    let out = Command::new(python)
        .args([
            "-c",
            "import onnxruntime, os, glob; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so.*')))[-1])",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn onnx_runtime_backend_equals_the_reference_and_failing_rows_go_to_dead_letters() {
    let Some(python) = python() else { return };
    let reference = reference();
    let want_scores = reference["fraud"]["score"].as_array().unwrap();
    let sha = reference["sha256"]["fraud"].as_str().unwrap();
    let library = onnxruntime_library(&python);
    let venv_bin = python.parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // `volley batch` finds ONNX Runtime through the python3 on PATH; `volley run` through
    // ORT_DYLIB_PATH.
    for (mode, args) in [("batch", vec!["batch"]), ("run", vec!["run", "--quiet"])] {
        let dir = tempfile::tempdir().unwrap();
        write_inputs(dir.path(), &reference);
        ort_pipeline(dir.path());
        let mut cmd = volley_command();
        cmd.args(&args).arg("pipeline.sql").current_dir(dir.path());
        if mode == "batch" {
            cmd.env("PATH", &path).env_remove("ORT_DYLIB_PATH");
        } else {
            cmd.env("ORT_DYLIB_PATH", &library);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "volley {mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let scores = read_scored(&python, &dir.path().join("scores"), "score");
        let rows = scores["rows"].as_object().unwrap();
        assert_eq!(rows.len(), 100, "{mode}");
        for (i, want) in want_scores.iter().enumerate() {
            let got = rows[&i.to_string()].as_f64().unwrap();
            let want = want[0].as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-6,
                "{mode}: row {i}: {got} vs {want}"
            );
        }
        // Lineage: every write commit names the model and its SHA-256.
        let models = scores["models"].as_array().unwrap();
        assert!(!models.is_empty());
        for m in models {
            assert_eq!(m["fraud"].as_str(), Some(sha), "{mode}: {models:?}");
            assert!(
                m.get("lookup").is_none(),
                "{mode}: scores do not use lookup"
            );
        }

        // Exactly the failing rows are NULL, and are dead letters with the model's error.
        let looked = read_scored(&python, &dir.path().join("looked"), "v");
        let rows = looked["rows"].as_object().unwrap();
        assert_eq!(rows.len(), 100, "{mode}");
        for i in 0..100usize {
            let got = rows[&i.to_string()].as_f64();
            if BAD_ROWS.contains(&i) {
                assert_eq!(got, None, "{mode}: row {i}");
            } else {
                let want = (i % 16) as f64 * 0.5 + i as f64 * 0.5;
                assert_eq!(got, Some(want), "{mode}: row {i}");
            }
        }
        let mut letters: Vec<serde_json::Value> = Vec::new();
        for entry in std::fs::read_dir(dir.path().join("letters")).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            letters.extend(text.lines().map(|l| serde_json::from_str(l).unwrap()));
        }
        let mut bad: Vec<u64> = letters
            .iter()
            .map(|l| {
                assert_eq!(l["source"], "model_lookup");
                let reason = l["reason"].as_str().unwrap();
                assert!(
                    reason.contains("model 'lookup' failed on this row")
                        && reason.contains("out of data bounds"),
                    "{reason}"
                );
                l["row"]["x0"]
                    .as_f64()
                    .unwrap_or_else(|| panic!("no x0 in {l}")) as u64
            })
            .collect();
        bad.sort_unstable();
        let want: Vec<u64> = BAD_ROWS.iter().map(|&i| 100 + i as u64).collect();
        assert_eq!(bad, want, "{mode}: dead letters {letters:?}");
        // The run summary (stdout).
        let stderr = String::from_utf8_lossy(&out.stdout);
        if mode == "run" {
            assert!(stderr.contains("4 rows left out by predict()"), "{stderr}");
            // The run summary has each model's calls, rows per call and latency quantiles;
            // the lookup model fails on some rows, so it has failures.
            for model in ["fraud", "lookup"] {
                let line = stderr
                    .lines()
                    .find(|l| l.starts_with(&format!("model {model}: ")))
                    .unwrap_or_else(|| panic!("no summary line for {model}: {stderr}"));
                assert!(line.contains(" per call p50, "), "{line}");
                assert!(line.contains(" ms p99, "), "{line}");
            }
            let lookup = stderr.lines().find(|l| l.starts_with("model lookup: "));
            assert!(
                lookup.is_some_and(|l| !l.contains(" 0 failures,")
                    && l.contains(", 0 timeouts, 0 rows from the memo, ")),
                "the failing rows are counted, as failures, not timeouts: {stderr}"
            );
        }
    }

    // `volley explain` shows each model's file, SHA-256 and settings, and which INSERT uses it.
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &reference);
    ort_pipeline(dir.path());
    let explain = || {
        volley_command()
            .args(["explain", "pipeline.sql"])
            .current_dir(dir.path())
            .env("ORT_DYLIB_PATH", &library)
            .output()
            .unwrap()
    };
    let out = explain();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("sha256: {sha}")) && text.contains("backend onnxruntime"),
        "{text}"
    );
    assert!(text.contains("  models: fraud ("), "{text}");
    assert!(text.contains("  models: lookup ("), "{text}");

    // No GPU and a CPU-only ONNX Runtime here: `device = 'cuda'` fails, saying what is missing.
    let sql = std::fs::read_to_string(dir.path().join("pipeline.sql"))
        .unwrap()
        .replace("'backend' 'onnxruntime', 'threads' '1'", "'device' 'cuda'");
    std::fs::write(dir.path().join("pipeline.sql"), sql).unwrap();
    let out = explain();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("model 'fraud': device 'cuda'")
            && err.contains("CUDA execution provider is not available"),
        "{err}"
    );
}

/// A source that delivers one row per poll: the micro-batch's rows are coalesced before
/// `predict()` runs, so the model runs once per micro-batch (one worker), not once per row,
/// and scores every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_row_polls_are_scored_in_one_model_run_per_micro_batch() {
    use std::collections::HashMap;

    use volley_connectors::{ConnectorRegistry, Source};
    use volley_engine::memory::VecSource;
    use volley_engine::setup::{JobOverrides, build_stream_job};

    let text = format!(
        r#"
CREATE MODEL fraud LOCATION '{model}' OPTIONS ('max_rows' '4096');
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '2000', 'rate' '20', 'seed' '8', 'riders' '30');
CREATE EXTERNAL TABLE event_risk STORED AS BLACKHOLE LOCATION 'x';
INSERT INTO event_risk
SELECT request_id, predict('fraud', (request_id % 50) * 1.0, rider_id % 24, lat - 40.0, lon / 10.0) AS score
FROM rides;
"#,
        model = fraud_model()
    );
    let p = pipeline(&text).await;
    let input = rows(&p).await;
    let (schema, batches) = input["rides"].clone();
    let one_row: Vec<arrow::record_batch::RecordBatch> = batches
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(move |i| b.slice(i, 1)))
        .collect();
    assert_eq!(one_row.len(), 2000);
    let overrides = JobOverrides {
        sources: HashMap::from([(
            "rides".to_string(),
            Box::new(VecSource::new(schema, one_row)) as Box<dyn Source>,
        )]),
        sizing: Some(BatchSizing::Fixed(500)),
        workers: Some(1),
        ..JobOverrides::default()
    };
    let (job, _) = build_stream_job(&p, &ConnectorRegistry::builtin(), overrides)
        .await
        .unwrap();
    let models = std::sync::Arc::clone(job.models());
    let summary = job.run().await.unwrap();
    assert_eq!(summary.rows_in, 2000);
    let stats = models.get("fraud").unwrap().stats();
    assert_eq!(stats.rows, 2000, "{stats:?}");
    assert!(
        stats.calls <= 4,
        "four 500-row micro-batches, one model run each: {stats:?}"
    );
    assert_eq!(stats.rows_per_call_max, 500, "{stats:?}");
    assert!((448..=500).contains(&stats.rows_per_call_p50), "{stats:?}");
    assert!(
        stats.latency_p50_seconds > 0.0 && stats.latency_p99_seconds >= stats.latency_p50_seconds,
        "{stats:?}"
    );
}
