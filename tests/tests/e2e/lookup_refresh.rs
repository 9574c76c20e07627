//! A Delta lookup table with `refresh`: new versions committed while the pipeline runs are
//! swapped in between epochs, each epoch joins one version and logs it, and an epoch
//! re-read after a failure joins the version it joined the first time, not the newest.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use tokio::time::Instant;
use volley_connectors::{
    ConnectorError, ConnectorRegistry, Position, Sink, SinkContext, Source, SourcePoll,
};
use volley_engine::checkpoint::{CheckpointConfig, CheckpointInterval, CheckpointStore};
use volley_engine::driver::BatchSizing;
use volley_engine::memory::{CollectSink, Collected, VecSource};
use volley_engine::setup::{JobOverrides, build_stream_job};
use volley_sql::TableDecl;

use crate::harness::{pipeline, rows};

/// The dimension: users 0..=40, each with the label of the version that wrote it.
fn users(label: &str) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, true),
        Field::new("label", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(0..=40)),
            Arc::new(StringArray::from_iter_values((0..=40).map(|_| label))),
        ],
    )
    .unwrap()
}

/// Writes versions of the Delta table (a MERGE by user, so a version replaces every label).
struct DimWriter {
    sink: Box<dyn Sink>,
    decl: TableDecl,
    epoch: u64,
}

impl DimWriter {
    async fn open(dir: &str) -> Self {
        let p = pipeline(&format!(
            "CREATE EXTERNAL TABLE users STORED AS DELTA LOCATION '{dir}' OPTIONS ('merge_key' 'user_id');"
        ))
        .await;
        let decl = p.table("users").unwrap().clone();
        let sink = ConnectorRegistry::builtin()
            .get("DELTA")
            .unwrap()
            .open_sink(&decl, users("").schema(), &SinkContext::new("dims"))
            .await
            .unwrap();
        Self {
            sink,
            decl,
            epoch: 0,
        }
    }

    /// Commits a version labelled `label`; returns the table's version number.
    async fn commit(&mut self, label: &str) -> u64 {
        self.epoch += 1;
        self.sink
            .write_epoch(self.epoch, &[users(label)])
            .await
            .unwrap();
        volley_connectors::delta::lookup::latest_version(&self.decl)
            .await
            .unwrap()
    }
}

/// Replays `inner`, committing a new dimension version once `bumps` rows have been returned
/// (and failing like a crash at `fail_at`).
struct BumpingSource {
    inner: VecSource,
    writer: DimWriter,
    bumps: Vec<(u64, String)>,
    versions: Versions,
    fail_at: Option<u64>,
}

impl std::fmt::Debug for BumpingSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BumpingSource")
    }
}

#[async_trait]
impl Source for BumpingSource {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    async fn poll_batch(
        &mut self,
        max_rows: usize,
        deadline: Instant,
    ) -> volley_connectors::Result<SourcePoll> {
        let at = self.inner.position().offset();
        if self.fail_at.is_some_and(|f| at >= f) {
            return Err(ConnectorError::Internal("injected failure".into()));
        }
        if let Some(i) = self.bumps.iter().position(|(rows, _)| at >= *rows) {
            let (_, label) = self.bumps.remove(i);
            let version = self.writer.commit(&label).await;
            self.versions.lock().unwrap().insert(label, version);
            // Past the 1 ms `refresh`: the next epoch looks for it.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        self.inner.poll_batch(max_rows.min(50), deadline).await
    }

    fn position(&self) -> Position {
        self.inner.position()
    }

    async fn seek(&mut self, position: &Position) -> volley_connectors::Result<()> {
        self.inner.seek(position).await
    }
}

fn sql(dir: &str) -> String {
    format!(
        r#"
CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
OPTIONS ('count' '1500', 'rate' '50', 'seed' '4', 'riders' '30', 'disorder' '1 second',
         'watermark' 'event_time - INTERVAL ''1 second''');
CREATE EXTERNAL TABLE users STORED AS DELTA LOCATION '{dir}' OPTIONS ('refresh' '1 ms');
CREATE EXTERNAL TABLE enriched STORED AS BLACKHOLE LOCATION 'x';
INSERT INTO enriched
SELECT p.payment_id, u.label FROM payments p JOIN users u ON p.user_id = u.user_id;
"#
    )
}

/// Per epoch: the labels its rows carry, and every payment id.
fn labels_by_epoch(collected: &Collected) -> (BTreeMap<u64, Vec<String>>, Vec<i64>) {
    let mut labels = BTreeMap::new();
    let mut ids = Vec::new();
    for (epoch, batches) in collected.lock().unwrap().iter() {
        let mut seen: Vec<String> = Vec::new();
        for b in batches {
            let id = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let label = arrow::compute::cast(b.column(1), &DataType::Utf8).unwrap();
            let label = label.as_any().downcast_ref::<StringArray>().unwrap();
            ids.extend(id.values().iter().copied());
            for i in 0..label.len() {
                if !seen.iter().any(|s| s == label.value(i)) {
                    seen.push(label.value(i).to_string());
                }
            }
        }
        labels.insert(*epoch, seen);
    }
    ids.sort_unstable();
    (labels, ids)
}

/// Versions by label, shared with the source that commits them.
type Versions = Arc<std::sync::Mutex<BTreeMap<String, u64>>>;

/// The dimension table under `dims` with its first version, `v1`: its directory, a writer
/// for more, and the versions so far.
async fn first_version(dims: &std::path::Path) -> (String, DimWriter, Versions) {
    let dim_dir = dims.join("users").display().to_string();
    let mut writer = DimWriter::open(&dim_dir).await;
    let mut versions = BTreeMap::new();
    versions.insert("v1".to_string(), writer.commit("v1").await);
    (dim_dir, writer, Arc::new(std::sync::Mutex::new(versions)))
}

/// The job over `source` into `collected`, in 50-row micro-batches, checkpointing into
/// `dir` too rarely to ever write one: every epoch stays in the epoch log.
fn job_overrides(
    source: BumpingSource,
    collected: &Collected,
    dir: &std::path::Path,
) -> JobOverrides {
    JobOverrides {
        sources: HashMap::from([("payments".to_string(), Box::new(source) as Box<dyn Source>)]),
        sinks: HashMap::from([(
            "enriched".to_string(),
            Box::new(CollectSink::resume(collected)) as Box<dyn Sink>,
        )]),
        sizing: Some(BatchSizing::Fixed(50)),
        workers: Some(2),
        checkpoint: Some(CheckpointConfig {
            dir: dir.display().to_string(),
            interval: CheckpointInterval::Epochs(10_000),
            keep: 2,
            from_scratch: false,
        }),
        ..JobOverrides::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_delta_lookup_swaps_versions_between_epochs_and_replays_the_logged_one() {
    let (dims, checkpoints) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (dim_dir, writer, versions) = first_version(dims.path()).await;

    let p = pipeline(&sql(&dim_dir)).await;
    let input = rows(&p).await;
    let (schema, batches) = input["payments"].clone();
    let registry = ConnectorRegistry::builtin();
    let store = CheckpointStore::open(&checkpoints.path().display().to_string(), 2)
        .await
        .unwrap();
    let collected = Collected::default();
    // No checkpoint before the failure: the restart re-reads every logged epoch.
    let overrides = |source: BumpingSource| job_overrides(source, &collected, checkpoints.path());

    // Run 1: two new versions while it runs, then a crash.
    let source = BumpingSource {
        inner: VecSource::new(schema.clone(), batches.clone()),
        writer,
        bumps: vec![(300, "v2".into()), (700, "v3".into())],
        versions: Arc::clone(&versions),
        fail_at: Some(1000),
    };
    let (job, _) = build_stream_job(&p, &registry, overrides(source))
        .await
        .unwrap();
    assert!(job.run().await.is_err(), "run 1 fails at row 1000");
    let logged = store.epochs_after(0).await.unwrap();
    let (first, _) = labels_by_epoch(&collected);
    let versions_now = versions.lock().unwrap().clone();
    let label_of = |version: u64| {
        versions_now
            .iter()
            .find(|(_, v)| **v == version)
            .map(|(l, _)| l.clone())
            .unwrap()
    };
    assert!(!logged.is_empty());
    for log in &logged {
        assert_eq!(log.lookups.len(), 1, "epoch {} logs the version", log.epoch);
        let expected = label_of(log.lookups[0].version);
        if let Some(seen) = first.get(&log.epoch) {
            assert!(
                seen.is_empty() || *seen == [expected.clone()],
                "epoch {} joined one version, the logged one ({expected}): {seen:?}",
                log.epoch
            );
        }
    }
    let logged_labels: Vec<String> = logged
        .iter()
        .map(|l| label_of(l.lookups[0].version))
        .collect();
    for label in ["v1", "v2", "v3"] {
        assert!(
            logged_labels.iter().any(|l| l == label),
            "some epoch joined {label}: {logged_labels:?}"
        );
    }
    assert!(
        logged_labels.windows(2).all(|w| w[0] <= w[1]),
        "versions only move forward: {logged_labels:?}"
    );

    // A fourth version lands while the job is down; the restart re-reads the logged epochs
    // with their own versions, then moves on to the newest.
    let writer = DimWriter {
        epoch: 3,
        ..DimWriter::open(&dim_dir).await
    };
    let mut writer = writer;
    let v4 = writer.commit("v4").await;
    versions.lock().unwrap().insert("v4".into(), v4);
    let source = BumpingSource {
        inner: VecSource::new(schema, batches),
        writer,
        bumps: Vec::new(),
        versions: Arc::clone(&versions),
        fail_at: None,
    };
    let (job, _) = build_stream_job(&p, &registry, overrides(source))
        .await
        .unwrap();
    let summary = job.run().await.unwrap();
    assert_eq!(summary.epochs_replayed, logged.len() as u64);
    let (second, ids) = labels_by_epoch(&collected);
    for log in &logged {
        let expected = label_of(log.lookups[0].version);
        let seen = &second[&log.epoch];
        assert!(
            seen.is_empty() || *seen == [expected.clone()],
            "replayed epoch {} joined the logged version {expected}, not the newest: {seen:?}",
            log.epoch
        );
        assert_eq!(
            first.get(&log.epoch).cloned().unwrap_or_default(),
            *seen,
            "replayed epoch {} wrote what it wrote the first time",
            log.epoch
        );
    }
    let last_logged = logged.last().unwrap().epoch;
    assert!(
        second
            .iter()
            .filter(|(e, _)| **e > last_logged)
            .any(|(_, labels)| labels == &["v4".to_string()]),
        "epochs after the replay join the newest version: {second:?}"
    );
    // Every payment with a known user, once.
    let mut expected = Vec::new();
    for (_, (_, batches)) in input.iter().filter(|(n, _)| *n == "payments") {
        for b in batches {
            let id = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let user = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            for i in 0..b.num_rows() {
                if user.is_valid(i) && user.value(i) <= 40 {
                    expected.push(id.value(i));
                }
            }
        }
    }
    expected.sort_unstable();
    assert_eq!(ids, expected);
}

/// A refreshed lookup table joined in a side of an interval join: each side row is enriched
/// with the version of the epoch that read it, so no output row carries a version newer
/// than its epoch's, and every version reaches the join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_lookup_in_a_side_of_a_stream_join_swaps_versions() {
    let (dims, checkpoints) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (dim_dir, writer, versions) = first_version(dims.path()).await;
    let text = format!(
        r#"
CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
OPTIONS ('count' '1500', 'rate' '50', 'seed' '4', 'riders' '30', 'disorder' '1 second',
         'watermark' 'event_time - INTERVAL ''1 second''');
CREATE EXTERNAL TABLE users STORED AS DELTA LOCATION '{dim_dir}' OPTIONS ('refresh' '1 ms');
CREATE EXTERNAL TABLE enriched STORED AS BLACKHOLE LOCATION 'x';
INSERT INTO enriched
SELECT a.payment_id, u.label, b.payment_id AS next
FROM payments a JOIN users u ON a.user_id = u.user_id
JOIN payments b ON a.user_id = b.user_id AND b.event_time > a.event_time
 AND b.event_time <= a.event_time + INTERVAL '2 seconds';
"#
    );
    let p = pipeline(&text).await;
    let input = rows(&p).await;
    let (schema, batches) = input["payments"].clone();
    let collected = Collected::default();
    let source = BumpingSource {
        inner: VecSource::new(schema, batches),
        writer,
        bumps: vec![(300, "v2".into()), (700, "v3".into())],
        versions: Arc::clone(&versions),
        fail_at: None,
    };
    // Every epoch stays logged, with the version it joined.
    let overrides = job_overrides(source, &collected, checkpoints.path());
    let (job, _) = build_stream_job(&p, &ConnectorRegistry::builtin(), overrides)
        .await
        .unwrap();
    job.run().await.unwrap();
    let store = CheckpointStore::open(&checkpoints.path().display().to_string(), 2)
        .await
        .unwrap();
    let logged: BTreeMap<u64, u64> = store
        .epochs_after(0)
        .await
        .unwrap()
        .iter()
        .map(|l| (l.epoch, l.lookups[0].version))
        .collect();
    let versions = versions.lock().unwrap().clone();
    let (labels, _) = labels_by_epoch(&collected);
    let mut seen = Vec::new();
    for (epoch, epoch_labels) in &labels {
        for label in epoch_labels {
            assert!(
                versions[label] <= logged[epoch],
                "epoch {epoch} joined version {} but emitted a row labelled {label}",
                logged[epoch]
            );
            if !seen.contains(label) {
                seen.push(label.clone());
            }
        }
    }
    seen.sort();
    assert_eq!(seen, ["v1", "v2", "v3"], "every version reached the join");
}
