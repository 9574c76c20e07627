//! Shared helpers: parse a pipeline, run batch and stream over the same rows, compare.

use std::collections::{BTreeMap, HashMap};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use volley_connectors::ConnectorRegistry;
use volley_engine::batch::{batch_outputs, read_sources};
use volley_engine::driver::BatchSizing;
use volley_engine::setup::{JobOverrides, build_stream_job};
use volley_engine::verify::{
    InputOrder, VerifyOptions, VerifyReport, compare_outputs, stream_outputs,
};
use volley_sql::Pipeline;
use volley_sql::stream::QueryPlan;

pub type Rows = BTreeMap<String, (SchemaRef, Vec<RecordBatch>)>;

/// Every INSERT's streaming plan, planned and checked as `volley run` does (sinks not opened),
/// or the refusal.
pub async fn try_plans(p: &Pipeline) -> Result<Vec<QueryPlan>, String> {
    let overrides = JobOverrides {
        no_sinks: true,
        ..JobOverrides::default()
    };
    build_stream_job(p, &ConnectorRegistry::builtin(), overrides)
        .await
        .map(|(_, plans)| plans)
        .map_err(|e| e.to_string())
}

/// Every INSERT's streaming plan (see [`try_plans`]).
pub async fn plans(p: &Pipeline) -> Vec<QueryPlan> {
    try_plans(p).await.unwrap()
}

/// Why streaming refuses pipeline `sql`, if it does.
pub async fn refusal(sql: &str) -> Option<String> {
    try_plans(&pipeline(sql).await).await.err()
}

/// `(ts seconds, user)` rows as a batch of `ts TIMESTAMP NOT NULL, user_id BIGINT NOT NULL`.
pub fn clicks(rows: &[(i64, i64)]) -> RecordBatch {
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new(
            "ts",
            arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None),
            false,
        ),
        arrow::datatypes::Field::new("user_id", arrow::datatypes::DataType::Int64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            std::sync::Arc::new(arrow::array::TimestampNanosecondArray::from_iter_values(
                rows.iter().map(|r| r.0 * 1_000_000_000),
            )),
            std::sync::Arc::new(arrow::array::Int64Array::from_iter_values(
                rows.iter().map(|r| r.1),
            )),
        ],
    )
    .unwrap()
}

pub async fn pipeline(sql: &str) -> Pipeline {
    Pipeline::parse(sql, &ConnectorRegistry::builtin())
        .await
        .unwrap()
}

/// Every source's rows (generators need a `count`).
pub async fn rows(p: &Pipeline) -> Rows {
    read_sources(p, &HashMap::new(), &ConnectorRegistry::builtin())
        .await
        .unwrap()
}

/// Batch vs stream over `rows`, with the given sizing, order and number of workers.
pub async fn parity(
    p: &Pipeline,
    rows: &Rows,
    sizing: BatchSizing,
    order: InputOrder,
    seed: u64,
    workers: usize,
) -> VerifyReport {
    let registry = ConnectorRegistry::builtin();
    let batch = batch_outputs(p, rows).await.unwrap();
    let opts = VerifyOptions {
        sizing,
        order,
        seed,
        max_differences: 5,
        workers: Some(workers),
    };
    let (stream, plans) = stream_outputs(p, &registry, rows, &opts).await.unwrap();
    compare_outputs(p, &plans, &batch, &stream, 5).unwrap()
}

pub fn assert_exact(report: &VerifyReport, context: &str) {
    for sink in &report.sinks {
        assert!(
            sink.matched == sink.total,
            "{context}: sink {} matched {}/{}: {:#?}",
            sink.sink,
            sink.matched,
            sink.total,
            sink.differences
        );
    }
}

/// The rows of batches whose first two columns are BIGINT, as sorted pairs.
pub fn int_pairs(batches: &[RecordBatch]) -> Vec<(i64, i64)> {
    let mut rows = Vec::new();
    for b in batches {
        let k = b
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap();
        let n = b
            .column(1)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap();
        rows.extend((0..b.num_rows()).map(|i| (k.value(i), n.value(i))));
    }
    rows.sort_unstable();
    rows
}

/// One parity suite's sweep over seeds `0..seeds`: the pipeline `sql(seed, rows)` at
/// micro-batch sizes 1 (over `small` rows), 7, 8192 and random 1..=300 (seeded `seed +
/// random_seed`, over `rows`), in order and shuffled within the watermark, on `1 + seed % 4`
/// workers.
pub struct Sweep {
    pub seeds: u64,
    pub small: u64,
    pub rows: u64,
    pub random_seed: u64,
    /// How many sinks the pipeline has, when the suite checks it.
    pub sinks: Option<usize>,
}

/// Runs `sweep`: streaming equals batch everywhere, and every sink gets rows.
pub async fn sweep(sweep: Sweep, sql: impl Fn(u64, u64) -> String) {
    for seed in 0..sweep.seeds {
        for (sizing, count) in [
            (BatchSizing::Fixed(1), sweep.small),
            (BatchSizing::Fixed(7), sweep.rows),
            (BatchSizing::Fixed(8192), sweep.rows),
            (
                BatchSizing::Random {
                    min: 1,
                    max: 300,
                    seed: seed + sweep.random_seed,
                },
                sweep.rows,
            ),
        ] {
            let p = pipeline(&sql(seed, count)).await;
            let input = rows(&p).await;
            for order in [InputOrder::InOrder, InputOrder::Shuffled] {
                let workers = 1 + (seed as usize) % 4;
                let report = parity(&p, &input, sizing.clone(), order, seed, workers).await;
                let context = format!("seed {seed}, {sizing:?}, {order:?}, {workers} workers");
                assert_exact(&report, &context);
                if let Some(sinks) = sweep.sinks {
                    assert_eq!(report.sinks.len(), sinks, "{context}");
                }
                assert!(
                    report.sinks.iter().all(|s| s.total > 0),
                    "{context}: every sink got rows: {report:?}"
                );
            }
        }
    }
}

/// Runs `text` (one INSERT into a sink named `sink`) in micro-batches of 200 rows with a
/// checkpoint every 2 epochs, and checks the rows its operators hold stay flat: after the
/// first tenth of the checkpoints, never more than twice the most of the second tenth, nor
/// `most`. Returns the run's summary.
pub async fn assert_state_flat(text: &str, most: u64) -> volley_engine::job::RunSummary {
    use volley_connectors::ConnectorRegistry;
    use volley_engine::checkpoint::manifest::Manifest;
    use volley_engine::checkpoint::{CheckpointConfig, CheckpointInterval};
    use volley_engine::setup::{JobOverrides, build_stream_job};

    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(text).await;
    let overrides = JobOverrides {
        sizing: Some(BatchSizing::Fixed(200)),
        checkpoint: Some(CheckpointConfig {
            dir: dir.path().display().to_string(),
            interval: CheckpointInterval::Epochs(2),
            keep: 10_000,
            from_scratch: false,
        }),
        ..JobOverrides::default()
    };
    let (job, _) = build_stream_job(&p, &ConnectorRegistry::builtin(), overrides)
        .await
        .unwrap();
    let summary = job.run().await.unwrap();
    let mut held: Vec<(u64, u64)> = Vec::new();
    for entry in std::fs::read_dir(dir.path().join("checkpoints")).unwrap() {
        let path = entry.unwrap().path().join("manifest.json");
        let manifest: Manifest = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let rows = manifest.queries[0]
            .operators
            .iter()
            .flat_map(|o| &o.state)
            .map(|s| s.rows)
            .sum();
        held.push((manifest.epoch, rows));
    }
    held.sort_unstable();
    assert!(held.len() > 40, "{} checkpoints", held.len());
    let warm = held.len() / 10;
    let bound = held[warm..2 * warm].iter().map(|(_, r)| *r).max().unwrap();
    assert!(bound > 0, "{held:?}");
    let peak = held[warm..].iter().map(|(_, r)| *r).max().unwrap();
    assert!(
        peak <= 2 * bound && peak < most,
        "state grew: warm-up {bound}, later {peak}: {held:?}"
    );
    summary
}
