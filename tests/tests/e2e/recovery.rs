//! In-process recovery: a job fails part-way, a new job restores its checkpoint, re-reads the
//! logged epochs, and finishes; every sink then equals batch output exactly.

use std::collections::{BTreeMap, HashMap};

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use tokio::time::Instant;
use volley_connectors::{ConnectorError, ConnectorRegistry, Position, Sink, Source, SourcePoll};
use volley_engine::batch::batch_outputs;
use volley_engine::checkpoint::{CheckpointConfig, CheckpointInterval, CheckpointStore};
use volley_engine::driver::BatchSizing;
use volley_engine::memory::{CollectSink, Collected, VecSource};
use volley_engine::setup::{JobOverrides, build_stream_job};
use volley_engine::verify::compare_outputs;

use crate::harness::{assert_exact, pipeline, rows};

/// Fails (like a crash) once it has returned `fail_at` rows.
#[derive(Debug)]
pub(crate) struct FailingSource {
    pub(crate) inner: VecSource,
    pub(crate) fail_at: u64,
}

#[async_trait]
impl Source for FailingSource {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        self.inner.schema()
    }

    async fn poll_batch(
        &mut self,
        max_rows: usize,
        deadline: Instant,
    ) -> volley_connectors::Result<SourcePoll> {
        if self.inner.position().offset() >= self.fail_at {
            return Err(ConnectorError::Internal("injected failure".into()));
        }
        self.inner.poll_batch(max_rows, deadline).await
    }

    fn position(&self) -> Position {
        self.inner.position()
    }

    async fn seek(&mut self, position: &Position) -> volley_connectors::Result<()> {
        self.inner.seek(position).await
    }
}

/// Payments with NULLs in every nullable column, NaN of both signs, ±0.0 and ±inf amounts, hot
/// users, duplicate times and rows on window edges: the checkpointed state holds them too.
fn sql() -> String {
    r#"
CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
OPTIONS ('count' '3000', 'rate' '50', 'seed' '21', 'disorder' '2 seconds',
         'riders' '40', 'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE by_merchant STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE per_user STORED AS BLACKHOLE LOCATION 'x' OPTIONS ('merge_key' 'user_id');
CREATE EXTERNAL TABLE raw STORED AS BLACKHOLE LOCATION 'x';
INSERT INTO by_merchant
SELECT merchant, date_bin(INTERVAL '20 seconds', event_time) AS w,
       count(*) AS n, count(DISTINCT user_id) AS users, avg(amount) AS mean, min(amount) AS lo,
       max(amount) AS hi, sum(fee) AS fees
FROM payments GROUP BY 1, 2;
INSERT INTO per_user
SELECT user_id, count(*) AS n, max(event_time) AS last_seen, max(amount) AS top FROM payments GROUP BY user_id;
INSERT INTO raw SELECT payment_id, user_id, amount FROM payments WHERE channel % 7 = 0;
"#
    .to_string()
}

const SINKS: [&str; 3] = ["by_merchant", "per_user", "raw"];

/// `source`: the source's name and the source.
fn overrides(
    source: (&str, Box<dyn Source>),
    sinks: &[&str],
    collected: &HashMap<&str, Collected>,
    run: usize,
    workers: usize,
    interval: u64,
    dir: &std::path::Path,
) -> JobOverrides {
    JobOverrides {
        sources: HashMap::from([(source.0.to_string(), source.1)]),
        sinks: sinks
            .iter()
            .map(|s| {
                let sink: Box<dyn Sink> = Box::new(CollectSink::resume(&collected[s]));
                (s.to_string(), sink)
            })
            .collect(),
        sizing: Some(BatchSizing::Random {
            min: 20,
            max: 300,
            seed: run as u64,
        }),
        workers: Some(workers),
        checkpoint: Some(CheckpointConfig {
            dir: dir.display().to_string(),
            interval: CheckpointInterval::Epochs(interval),
            keep: 2,
            from_scratch: false,
        }),
        ..JobOverrides::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_restores_state_replays_logged_epochs_and_matches_batch() {
    // (rows after which each run fails, checkpoint interval in epochs, workers per run)
    let schedules = [
        (vec![700, 1900], 1, vec![1, 2, 3]),
        (vec![450, 1000, 2600], 3, vec![2, 3, 1, 2]),
        (vec![1], 4, vec![3, 1]),
    ];
    failed_runs_restore_and_match_batch(&sql(), "payments", &SINKS, &schedules).await;
}

/// Runs `sql` (one source, `source`, and the sinks `sinks`) failing after the rows of each
/// schedule, restoring and finishing; every sink then equals batch output exactly.
pub(crate) async fn failed_runs_restore_and_match_batch(
    sql: &str,
    source_name: &str,
    sinks: &[&str],
    schedules: &[(Vec<u64>, u64, Vec<usize>)],
) {
    failed_runs_rewriting_checkpoints(sql, source_name, sinks, schedules, |_| {}).await;
}

/// As [`failed_runs_restore_and_match_batch`], calling `rewrite` on the checkpoint directory
/// before each restart (to rewrite what the next run restores).
pub(crate) async fn failed_runs_rewriting_checkpoints(
    sql: &str,
    source_name: &str,
    sinks: &[&str],
    schedules: &[(Vec<u64>, u64, Vec<usize>)],
    rewrite: impl Fn(&std::path::Path),
) {
    let p = pipeline(sql).await;
    let input = rows(&p).await;
    let (schema, batches) = input[source_name].clone();
    let batch = batch_outputs(&p, &input).await.unwrap();
    let registry = ConnectorRegistry::builtin();
    let (_, plans) = build_stream_job(
        &p,
        &registry,
        JobOverrides {
            no_sinks: true,
            ..JobOverrides::default()
        },
    )
    .await
    .unwrap();
    for (fail_at, interval, workers) in schedules.iter().cloned() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(&dir.path().display().to_string(), 2)
            .await
            .unwrap();
        let collected: HashMap<&str, Collected> =
            sinks.iter().map(|s| (*s, Collected::default())).collect();
        let mut open_state_restored = false;
        let mut pending_total = 0;
        for (run, stop) in fail_at.iter().copied().map(Some).chain([None]).enumerate() {
            let inner = VecSource::new(schema.clone(), batches.clone());
            let source: Box<dyn Source> = match stop {
                Some(fail_at) => Box::new(FailingSource { inner, fail_at }),
                None => Box::new(inner),
            };
            if run > 0 {
                rewrite(dir.path());
            }
            let latest = store.latest().await.unwrap();
            if let Some(manifest) = &latest {
                // A windowed query had open windows in the checkpoint this run restores.
                let query = &manifest.queries[0];
                open_state_restored |= query
                    .operators
                    .iter()
                    .any(|o| o.state.iter().any(|s| s.rows > 0));
            }
            // Epochs logged after that checkpoint: this run must re-read exactly these.
            let pending = store
                .epochs_after(latest.as_ref().map_or(0, |m| m.epoch))
                .await
                .unwrap()
                .len() as u64;
            pending_total += pending;
            let o = overrides(
                (source_name, source),
                sinks,
                &collected,
                run,
                workers[run],
                interval,
                dir.path(),
            );
            let (job, _) = build_stream_job(&p, &registry, o).await.unwrap();
            match (stop, job.run().await) {
                (Some(_), result) => assert!(result.is_err(), "run {run} should fail"),
                (None, result) => assert_eq!(result.unwrap().epochs_replayed, pending),
            }
        }
        if fail_at.len() > 1 {
            assert!(open_state_restored, "a restart resumed open windows");
        }
        if interval > 1 && fail_at.len() > 1 {
            assert!(
                pending_total > 0,
                "some restart had logged epochs after its checkpoint to re-read"
            );
        }
        let stream: BTreeMap<String, Vec<(u64, Vec<RecordBatch>)>> = collected
            .iter()
            .map(|(name, c)| (name.to_string(), c.lock().unwrap().clone()))
            .collect();
        let report = compare_outputs(&p, &plans, &batch, &stream, 5).unwrap();
        assert_exact(
            &report,
            &format!("failures after rows {fail_at:?}, checkpoint every {interval} epochs"),
        );
        assert!(
            report.sinks.iter().all(|s| s.total > 0),
            "every sink got rows: {report:?}"
        );
    }
}
