//! Kafka → `predict()` → Delta with the `volley` binary aborted between a Delta commit and its
//! checkpoint and SIGKILLed at random instants: with the inference memo, no epoch's rows are
//! scored by two runs, except an epoch a SIGKILL caught before its memo was written; with
//! `memo` 'off', the replayed epochs are paid for again. The Delta table equals batch either
//! way. Model runs are counted from `VOLLEY_MODEL_CALL_LOG`, which every process appends to.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use volley_engine::batch::batch_outputs;
use volley_engine::verify::compare_outputs;

use crate::harness::{assert_exact, pipeline};
use crate::kafka::{broker, produce, unique_topic};
use crate::process::{Kill, killed, run_with};
use crate::readers::{conform, delta_stored, sink_rows, table_in};

fn sql(broker: &str, topic: &str, memo: &str) -> String {
    format!(
        r#"
CREATE MODEL fraud LOCATION '{model}' OPTIONS ('memo' '{memo}');
CREATE EXTERNAL TABLE rides (
  request_id BIGINT NOT NULL, rider_id BIGINT NOT NULL, lat DOUBLE NOT NULL, lon DOUBLE NOT NULL,
  event_time TIMESTAMP NOT NULL
) STORED AS KAFKA LOCATION '{broker}/{topic}'
OPTIONS ('format' 'json', 'bounded' 'latest', 'max_rows' '200', 'dead_letter' 'out/dead_letters');
CREATE EXTERNAL TABLE scored STORED AS DELTA LOCATION 'out/scored';
INSERT INTO scored
SELECT request_id, rider_id,
       predict('fraud', (request_id % 200) * 0.5, rider_id % 24, lat - 40.0, lon + 74.0) AS score
FROM rides;
"#,
        model = crate::predict::fraud_model()
    )
}

/// What the call log says: per epoch, rows scored by each process.
fn scored_by_epoch(log: &Path) -> BTreeMap<u64, BTreeMap<u32, u64>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut by_epoch: BTreeMap<u64, BTreeMap<u32, u64>> = BTreeMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let [model, epoch, rows, pid] = parts.as_slice() else {
            panic!("call log line '{line}'");
        };
        assert_eq!(*model, "fraud");
        *by_epoch
            .entry(epoch.parse().unwrap())
            .or_default()
            .entry(pid.parse().unwrap())
            .or_default() += rows.parse::<u64>().unwrap();
    }
    by_epoch
}

/// One scenario: runs the pipeline killed as `kills` say, then to the end; checks the Delta
/// table against batch; returns the call log by epoch and the last run's summary (stdout).
async fn scenario(
    broker: &str,
    topic: &str,
    memo: &str,
    kills: &[Kill],
    good: &arrow::record_batch::RecordBatch,
) -> (BTreeMap<u64, BTreeMap<u32, u64>>, String, usize) {
    let dir = tempfile::tempdir().unwrap();
    let text = sql(broker, topic, memo);
    std::fs::write(dir.path().join("pipeline.sql"), &text).unwrap();
    let log = dir.path().join("calls.log");
    let env = [("VOLLEY_MODEL_CALL_LOG", log.as_path())];
    let args = ["--checkpoint-interval", "4"];
    let stopped = kills
        .iter()
        .filter(|k| killed(run_with(dir.path(), Some(k), &args, &env)))
        .count();
    let aborts = kills.iter().filter(|k| matches!(k, Kill::At(_))).count();
    assert!(
        stopped >= aborts.max(kills.len() - 1),
        "memo {memo}: only {stopped} of {} runs were stopped mid-run",
        kills.len()
    );
    let last = run_with(
        dir.path(),
        Some(&Kill::After(Duration::from_secs(120))),
        &args,
        &env,
    );
    assert!(
        last.status.success(),
        "the last run finishes: {}",
        String::from_utf8_lossy(&last.stderr)
    );
    let stderr = String::from_utf8_lossy(&last.stdout).to_string();

    let p = pipeline(&text).await;
    let declared = Arc::clone(p.tables[0].declared_schema.as_ref().unwrap());
    let input = BTreeMap::from([("rides".to_string(), (declared, vec![good.clone()]))]);
    let mut batch = batch_outputs(&p, &input).await.unwrap();
    let plans = crate::harness::plans(&p).await;
    let stored = delta_stored(&plans[0].output_schema);
    let expected = batch.get_mut("scored").unwrap();
    *expected = conform(&stored, expected);
    let table = table_in(&p, "scored", dir.path());
    let stream = BTreeMap::from([(
        "scored".to_string(),
        vec![(1, sink_rows(&table, &stored).await)],
    )]);
    assert_exact(
        &compare_outputs(&p, &plans, &batch, &stream, 5).unwrap(),
        &format!("memo {memo}: Delta after {} kills", kills.len()),
    );
    (scored_by_epoch(&log), stderr, stopped)
}

/// Epochs whose rows more than one process scored.
fn scored_twice(log: &BTreeMap<u64, BTreeMap<u32, u64>>) -> BTreeSet<u64> {
    log.iter()
        .filter(|(_, by_pid)| by_pid.len() > 1)
        .map(|(e, _)| *e)
        .collect()
}

/// Rows scored in all, counting each epoch once (by the last process that scored it, which
/// scored all of its rows).
fn rows_once(log: &BTreeMap<u64, BTreeMap<u32, u64>>) -> u64 {
    log.values()
        .map(|by_pid| by_pid.values().copied().max().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_memo_a_crash_never_pays_for_a_model_call_twice() {
    let Some(broker) = broker() else { return };
    let topic = unique_topic("memo");
    let (good, _malformed) = produce(&broker, &topic, 16_000).await;
    let rows = good.num_rows() as u64;
    let between = |n: u32| Kill::At(format!("after_sink_commit_before_checkpoint:{n}"));

    // Aborted between sink commits and checkpoints: the replayed epochs read the memo.
    let (log, stderr, _) = scenario(
        &broker,
        &topic,
        "on",
        &[between(3), between(6), between(2)],
        &good,
    )
    .await;
    assert_eq!(
        scored_twice(&log),
        BTreeSet::new(),
        "no epoch's rows were scored twice"
    );
    let total: u64 = log.values().flat_map(|p| p.values()).sum();
    assert_eq!(total, rows, "every row scored exactly once over all runs");
    assert!(
        stderr.contains("model fraud: ") && !stderr.contains(" 0 rows from the memo"),
        "the last run read its replayed epoch from the memo: {stderr}"
    );

    // The same crashes with the memo off: each replay pays for its epochs again.
    let (log, _, _) = scenario(
        &broker,
        &topic,
        "off",
        &[between(3), between(6), between(2)],
        &good,
    )
    .await;
    let twice = scored_twice(&log);
    assert!(
        twice.len() >= 3,
        "each of the 3 crashes re-paid at least its last epoch: {twice:?}"
    );
    let total: u64 = log.values().flat_map(|p| p.values()).sum();
    assert_eq!(rows_once(&log), rows);
    assert!(total > rows, "{total} rows scored for {rows}");

    // SIGKILLs at random instants: only an epoch caught in flight before its memo was
    // written can be scored again, at most one per kill.
    let random = [
        Kill::After(Duration::from_millis(700)),
        between(4),
        Kill::After(Duration::from_millis(1100)),
        Kill::After(Duration::from_millis(1500)),
    ];
    let (log, _, stopped) = scenario(&broker, &topic, "on", &random, &good).await;
    let twice = scored_twice(&log);
    assert!(
        twice.len() < stopped,
        "at most one epoch per SIGKILL ({} of {stopped} stops) is scored again: {twice:?}",
        stopped - 1
    );
    assert_eq!(rows_once(&log), rows, "every row was scored");
}
