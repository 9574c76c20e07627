//! `SELECT predict('fraud', a, b, c, d) FROM events` as a pipeline runs it (DataFusion plan,
//! the `predict()` UDF: cast, pack into one `[rows, 4]` f32 tensor, run, Arrow result) versus
//! calling an `ort` session directly on the same batches (pack, run, read the scores), with
//! the fraud MLP, one intra-op thread, batch sizes 1 to 8192.
//!
//! The backend is tract unless `VOLLEY_BENCH_BACKEND=onnxruntime` (ONNX Runtime from
//! `ORT_DYLIB_PATH` or the python3 `onnxruntime` package): a process runs one backend.
//!
//! Run: `cargo bench -p volley-benches --bench predict`, then
//! `VOLLEY_BENCH_BACKEND=onnxruntime cargo bench -p volley-benches --bench predict`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Float64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use datafusion::datasource::MemTable;
use datafusion::physical_plan::{ExecutionPlan, collect};
use ort::session::Session;
use ort::value::Tensor;
use volley_udfs::model::{Backend, Model, ModelOptions, ModelSet, environment, pack_rows};

/// The allocator the `volley` binary runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `batches` batches of `rows` rows: four Float64 feature columns.
fn events(rows: usize, batches: usize) -> (Arc<Schema>, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(
        ["a", "b", "c", "d"]
            .iter()
            .map(|n| Field::new(*n, DataType::Float64, false))
            .collect::<Vec<_>>(),
    ));
    let out = (0..batches)
        .map(|k| {
            let columns: Vec<ArrayRef> = (0..4)
                .map(|c| {
                    let values: Vec<f64> = (0..rows)
                        .map(|i| (((k * rows + i) * 31 + c * 7) % 97) as f64 / 9.0)
                        .collect();
                    Arc::new(Float64Array::from(values)) as ArrayRef
                })
                .collect();
            RecordBatch::try_new(Arc::clone(&schema), columns).unwrap()
        })
        .collect();
    (schema, out)
}

/// The backend `VOLLEY_BENCH_BACKEND` names (tract unless `onnxruntime`).
fn bench_backend() -> Backend {
    match std::env::var("VOLLEY_BENCH_BACKEND").as_deref() {
        Ok("onnxruntime") => Backend::OnnxRuntime,
        _ => Backend::Tract,
    }
}

/// An `ort` session over the model at `path`, one intra-op thread: the baseline.
fn bare_session(backend: Backend, path: &Path) -> Session {
    let env = environment(backend).unwrap();
    Session::builder(env)
        .unwrap()
        .with_intra_threads(1)
        .unwrap()
        .commit_from_file(path)
        .unwrap()
}

/// Scores every row of `batches` with the bare session, one run per batch (pack, run, read
/// the scores); returns how many scores came back.
fn bare_scores(session: &mut Session, batches: &[RecordBatch]) -> usize {
    let mut n = 0;
    for batch in batches {
        let packed = pack_rows(batch.columns()).unwrap();
        let tensor = Tensor::<f32>::from_array(([batch.num_rows(), 4usize], packed)).unwrap();
        let out = session.run(ort::inputs!["features" => tensor]).unwrap();
        let (_, scores) = out["score"].try_extract_tensor::<f32>().unwrap();
        n += scores.len();
    }
    n
}

fn predict(c: &mut Criterion) {
    let backend = bench_backend();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fraud/fraud.onnx");
    let options = ModelOptions {
        backend,
        threads: Some(1),
        max_rows: 8192,
        ..ModelOptions::default()
    };
    let model = Arc::new(Model::load("fraud", &path, &options).unwrap());
    let mut session = bare_session(backend, &path);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group(format!("predict_pipeline_{}", backend.name()));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    for rows in [1usize, 64, 1024, 8192] {
        let batches = (16_384 / rows).max(16);
        let (schema, input) = events(rows, batches);
        let ctx = volley_sql::stream::streaming_context();
        volley_sql::stream::register_models(&ctx, Arc::new(ModelSet::new([Arc::clone(&model)])));
        ctx.register_table(
            "events",
            Arc::new(MemTable::try_new(schema, vec![input.clone()]).unwrap()),
        )
        .unwrap();
        let plan: Arc<dyn ExecutionPlan> = runtime.block_on(async {
            ctx.sql("SELECT predict('fraud', a, b, c, d) AS score FROM events")
                .await
                .unwrap()
                .create_physical_plan()
                .await
                .unwrap()
        });
        let baseline: Arc<dyn ExecutionPlan> = runtime.block_on(async {
            ctx.sql("SELECT a * b + c * d AS score FROM events")
                .await
                .unwrap()
                .create_physical_plan()
                .await
                .unwrap()
        });
        let task = ctx.task_ctx();
        group.throughput(Throughput::Elements((rows * batches) as u64));
        group.bench_function(BenchmarkId::new("pipeline", rows), |b| {
            b.iter(|| {
                let out = runtime
                    .block_on(collect(Arc::clone(&plan), Arc::clone(&task)))
                    .unwrap();
                assert_eq!(
                    out.iter().map(RecordBatch::num_rows).sum::<usize>(),
                    rows * batches
                );
            });
        });
        group.bench_function(BenchmarkId::new("model_predict", rows), |b| {
            b.iter(|| {
                let n: usize = input
                    .iter()
                    .map(|batch| model.predict(batch.columns()).unwrap().len())
                    .sum();
                assert_eq!(n, rows * batches);
            });
        });
        group.bench_function(BenchmarkId::new("plain_projection", rows), |b| {
            b.iter(|| {
                let out = runtime
                    .block_on(collect(Arc::clone(&baseline), Arc::clone(&task)))
                    .unwrap();
                assert_eq!(
                    out.iter().map(RecordBatch::num_rows).sum::<usize>(),
                    rows * batches
                );
            });
        });
        group.bench_function(BenchmarkId::new("session_run", rows), |b| {
            b.iter(|| {
                assert_eq!(bare_scores(&mut session, &input), rows * batches);
            });
        });
    }
    group.finish();
}

/// A whole job's run (built beforehand), `SELECT predict('fraud', a, b, c, d) FROM events`
/// into a black hole, whose source delivers 1-, 64- or 1,024-row batches in 8,192-row
/// micro-batches (coalesced before the plan, one worker), against a bare session run over
/// 8,192-row tensors of the same rows.
fn coalesced(c: &mut Criterion) {
    const EPOCH: usize = 8192;
    const TOTAL: usize = 32 * EPOCH;
    let backend = bench_backend();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fraud/fraud.onnx");
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("events.csv");
    std::fs::write(&csv, "a,b,c,d\n").unwrap();
    let sql = format!(
        "CREATE MODEL fraud LOCATION '{}' OPTIONS ('backend' '{}', 'threads' '1', 'max_rows' '{EPOCH}');
CREATE EXTERNAL TABLE events (a DOUBLE NOT NULL, b DOUBLE NOT NULL, c DOUBLE NOT NULL, d DOUBLE NOT NULL)
STORED AS CSV LOCATION '{}' OPTIONS ('has_header' 'true');
CREATE EXTERNAL TABLE scores STORED AS BLACKHOLE LOCATION 'x';
INSERT INTO scores SELECT predict('fraud', a, b, c, d) AS score FROM events;",
        path.display(),
        backend.name(),
        csv.display()
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let registry = volley_connectors::ConnectorRegistry::builtin();
    let pipeline = runtime
        .block_on(volley_sql::Pipeline::parse(&sql, &registry))
        .unwrap();
    let mut session = bare_session(backend, &path);
    let mut group = c.benchmark_group(format!("predict_coalesced_{}", backend.name()));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(TOTAL as u64));
    let (schema, epochs) = events(EPOCH, TOTAL / EPOCH);
    group.bench_function("session_run_epoch", |b| {
        b.iter(|| {
            assert_eq!(bare_scores(&mut session, &epochs), TOTAL);
        });
    });
    for rows in [1usize, 64, 1024] {
        let small: Vec<RecordBatch> = epochs
            .iter()
            .flat_map(|b| (0..EPOCH / rows).map(move |i| b.slice(i * rows, rows)))
            .collect();
        // Timed: the run, not building the job (planning, loading the model).
        group.bench_function(BenchmarkId::new("pipeline", rows), |b| {
            b.iter_batched(
                || {
                    let source =
                        volley_engine::memory::VecSource::new(Arc::clone(&schema), small.clone());
                    let overrides = volley_engine::setup::JobOverrides {
                        sources: std::collections::HashMap::from([(
                            "events".to_string(),
                            Box::new(source) as Box<dyn volley_connectors::Source>,
                        )]),
                        sizing: Some(volley_engine::driver::BatchSizing::Fixed(EPOCH)),
                        workers: Some(1),
                        ..volley_engine::setup::JobOverrides::default()
                    };
                    runtime
                        .block_on(volley_engine::setup::build_stream_job(
                            &pipeline, &registry, overrides,
                        ))
                        .unwrap()
                        .0
                },
                |job| {
                    let summary = runtime.block_on(job.run()).unwrap();
                    assert_eq!(summary.rows_in, TOTAL as u64);
                },
                criterion::BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, predict, coalesced);
criterion_main!(benches);
