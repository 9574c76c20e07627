//! `/metrics` scraped while Kafka → windowed aggregate → Delta runs, parsed by the Prometheus
//! client's own text parser (Python `prometheus-client`), checked against the run's facts:
//! the events produced, the malformed messages sent, the checkpoint files written and the
//! Delta table's commits.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::kafka::{broker, produce_counted, unique_topic};
use crate::process::{Announced, volley_command};
use crate::readers::python;

fn sql(broker: &str, topic: &str) -> String {
    format!(
        r#"
CREATE EXTERNAL TABLE rides (
  request_id BIGINT NOT NULL, rider_id BIGINT NOT NULL, lat DOUBLE NOT NULL, lon DOUBLE NOT NULL,
  event_time TIMESTAMP NOT NULL
) STORED AS KAFKA LOCATION '{broker}/{topic}'
OPTIONS ('format' 'json', 'max_rows' '300', 'dead_letter' 'out/dead_letters',
         'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE demand STORED AS DELTA LOCATION 'out/demand';
INSERT INTO demand
SELECT rider_id % 7 AS zone, date_bin(INTERVAL '5 seconds', event_time) AS w, count(*) AS n
FROM rides GROUP BY 1, 2;
"#
    )
}

/// One scrape, parsed: `(content type, sample name → [(labels, value)])`.
fn scrape(python: &Path, url: &str) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/scrape_metrics.py");
    let out = std::process::Command::new(python)
        .args([script, url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The sum of the samples named `name` whose labels include `labels`.
fn value(scraped: &Value, name: &str, labels: &[(&str, &str)]) -> f64 {
    scraped["samples"][name]
        .as_array()
        .map(|samples| {
            samples
                .iter()
                .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
                .map(|s| s["value"].as_f64().unwrap())
                .sum()
        })
        .unwrap_or(0.0)
}

/// Commits in the Delta table's log that add rows (the table's creation adds none).
fn delta_commits(table: &Path) -> usize {
    std::fs::read_dir(table.join("_delta_log"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .filter(|e| {
                    std::fs::read_to_string(e.path())
                        .is_ok_and(|log| log.lines().any(|action| action.starts_with(r#"{"add""#)))
                })
                .count()
        })
        .unwrap_or(0)
}

fn checkpoint_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join(".volley/checkpoints/metrics/checkpoints"))
        .map(|entries| entries.filter_map(Result::ok).count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scraped_mid_run_equal_the_runs_facts() {
    let (Some(broker), Some(python)) = (broker(), python()) else {
        return;
    };
    let topic = unique_topic("metrics");
    let (good, malformed, bytes) = produce_counted(&broker, &topic, 4000).await;
    assert!(malformed > 0);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.sql"), sql(&broker, &topic)).unwrap();

    // An unbounded Kafka source: the run goes on until stopped, serving /metrics.
    let running = Announced::spawn(
        volley_command()
            .args([
                "run",
                "pipeline.sql",
                "--pipeline-id",
                "metrics",
                "--no-flight",
                "--keep-checkpoints",
                "100000",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null()),
        "volley: Prometheus metrics on ",
    );
    let url = running.addr.clone();

    // Scrape until every event is in and two scrapes a second apart agree (no epoch between).
    let deadline = Instant::now() + Duration::from_secs(120);
    let rides = [("source", "rides")];
    let (scraped, checkpoints, commits) = loop {
        assert!(
            Instant::now() < deadline,
            "the run did not read every event in time"
        );
        let first = scrape(&python, &url);
        let read = value(&first, "volley_source_rows_total", &rides);
        let letters = value(&first, "volley_dead_letters_total", &rides);
        // Lag is known once the client has reported its statistics (every second).
        let lag_known = first["samples"]["volley_source_partition_lag_records"].is_array();
        if read < good.num_rows() as f64 || letters < malformed as f64 || !lag_known {
            std::thread::sleep(Duration::from_millis(300));
            continue;
        }
        let (files, commits) = (
            checkpoint_files(dir.path()),
            delta_commits(&dir.path().join("out/demand")),
        );
        std::thread::sleep(Duration::from_secs(1));
        let second = scrape(&python, &url);
        let quiet = ["volley_checkpoints_total", "volley_epochs_total"]
            .iter()
            .all(|name| value(&first, name, &[]) == value(&second, name, &[]));
        if quiet
            && files == checkpoint_files(dir.path())
            && commits == delta_commits(&dir.path().join("out/demand"))
        {
            break (second, files, commits);
        }
    };
    interrupt(running.child.id());
    let (status, stderr) = running.wait();
    assert!(status.success(), "volley failed after SIGINT: {stderr}");

    assert!(
        scraped["content_type"]
            .as_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{}",
        scraped["content_type"]
    );
    assert_eq!(scraped["types"]["volley_source_rows"], "counter");
    assert_eq!(
        scraped["types"]["volley_checkpoint_duration_seconds"],
        "histogram"
    );
    // Rows in = the events produced that decode; dead letters = the malformed ones sent.
    assert_eq!(
        value(&scraped, "volley_source_rows_total", &rides),
        good.num_rows() as f64
    );
    assert_eq!(
        value(&scraped, "volley_dead_letters_total", &rides),
        malformed as f64
    );
    // Checkpoints: the counter, the histogram's count and the files written agree.
    assert!(checkpoints > 0);
    assert_eq!(
        value(&scraped, "volley_checkpoints_total", &[]),
        checkpoints as f64
    );
    assert_eq!(
        value(&scraped, "volley_checkpoint_duration_seconds_count", &[]),
        checkpoints as f64
    );
    // Each Delta commit of the sink was timed once.
    assert!(commits > 0);
    assert_eq!(
        value(
            &scraped,
            "volley_sink_commit_seconds_count",
            &[("sink", "demand")]
        ),
        commits as f64
    );
    // What the windows emitted reached the sink.
    assert_eq!(
        value(&scraped, "volley_sink_rows_total", &[("sink", "demand")]),
        value(&scraped, "volley_query_rows_out_total", &[])
    );
    // Bytes in = every key and payload sent, malformed ones included.
    assert_eq!(
        value(&scraped, "volley_source_bytes_total", &rides),
        bytes as f64
    );
    // Lag and watermark per partition: the topic's three, adding up to the source's.
    let partitions = |name: &str| -> Vec<(String, f64)> {
        let mut found: Vec<(String, f64)> = scraped["samples"][name]
            .as_array()
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
            .iter()
            .filter(|s| s["labels"]["source"] == "rides")
            .map(|s| {
                let partition = s["labels"]["partition"].as_str().unwrap().to_string();
                (partition, s["value"].as_f64().unwrap())
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    };
    let lags = partitions("volley_source_partition_lag_records");
    let names: Vec<&str> = lags.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, ["0", "1", "2"]);
    assert_eq!(
        lags.iter().map(|(_, lag)| lag).sum::<f64>(),
        value(&scraped, "volley_source_lag_records", &rides)
    );
    let marks = partitions("volley_source_partition_watermark_seconds");
    assert_eq!(marks.len(), 3, "{marks:?}");
    let watermark = value(&scraped, "volley_source_watermark_seconds", &rides);
    assert!(watermark > 1.7e9);
    let lowest = marks.iter().map(|m| m.1).fold(f64::INFINITY, f64::min);
    let highest = marks.iter().map(|m| m.1).fold(f64::NEG_INFINITY, f64::max);
    assert!(
        lowest <= watermark && watermark <= highest,
        "{watermark} outside {marks:?}"
    );
    // The window aggregate: it took in every row read, emitted what the statement emitted,
    // and its state takes at least a byte per row.
    assert_eq!(
        value(&scraped, "volley_operator_rows_in_total", &[]),
        good.num_rows() as f64
    );
    assert_eq!(
        value(&scraped, "volley_operator_rows_out_total", &[]),
        value(&scraped, "volley_query_rows_out_total", &[])
    );
    assert_eq!(
        value(&scraped, "volley_operator_late_rows_total", &[]),
        value(&scraped, "volley_late_rows_total", &[])
    );
    let state_rows = value(&scraped, "volley_operator_state_rows", &[]);
    let state_bytes = value(&scraped, "volley_operator_state_bytes", &[]);
    assert!(
        state_bytes >= state_rows,
        "{state_rows} state rows in {state_bytes} bytes"
    );
    assert_eq!(
        value(&scraped, "volley_pipeline_running", &[("state", "running")]),
        1.0
    );
}

/// Sends SIGINT (Ctrl-C) to `pid`.
fn interrupt(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
