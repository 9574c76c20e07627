//! The surge query (events per geohash6 per minute, count + distinct riders), streaming vs batch
//! over the same generated events, and the cost of an empty epoch.
//!
//! Run: `cargo bench -p volley-benches --bench surge`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use datafusion::prelude::SessionContext;
use tokio::runtime::Runtime;
use volley_benches::{SURGE, SURGE_SELECT, events};
use volley_connectors::{ConnectorRegistry, Sink, Source};
use volley_engine::driver::{BatchSizing, EpochInput, SourceEpoch};
use volley_engine::memory::VecSource;
use volley_engine::setup::{JobOverrides, build_stream_job};

fn streaming(c: &mut Criterion) {
    let count = 1_000_000u64;
    let (pipeline, batches) = events(SURGE, count);
    let schema = batches[0].schema();
    let rt = Runtime::new().unwrap();
    let mut group = c.benchmark_group("surge");
    group.sample_size(10);
    group.throughput(Throughput::Elements(count));
    for max_rows in [8_192usize, 65_536] {
        group.bench_with_input(
            BenchmarkId::new("streaming", format!("max_rows={max_rows}")),
            &max_rows,
            |b, &max_rows| {
                b.iter(|| {
                    rt.block_on(async {
                        let mut sources: HashMap<String, Box<dyn Source>> = HashMap::new();
                        sources.insert(
                            "ride_requests".into(),
                            Box::new(VecSource::new(Arc::clone(&schema), batches.clone())),
                        );
                        let overrides = JobOverrides {
                            sources,
                            sinks: HashMap::<String, Box<dyn Sink>>::new(),
                            sizing: Some(BatchSizing::Fixed(max_rows)),
                            ..JobOverrides::default()
                        };
                        let (job, _) =
                            build_stream_job(&pipeline, &ConnectorRegistry::builtin(), overrides)
                                .await
                                .unwrap();
                        job.run().await.unwrap()
                    })
                })
            },
        );
    }
    // Batch: DataFusion over a Parquet file of the same events.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rides.parquet");
    {
        let file = std::fs::File::create(&path).unwrap();
        let mut writer =
            datafusion::parquet::arrow::ArrowWriter::try_new(file, Arc::clone(&schema), None)
                .unwrap();
        for b in &batches {
            writer.write(b).unwrap();
        }
        writer.close().unwrap();
    }
    group.bench_function(BenchmarkId::new("batch", "parquet"), |b| {
        b.iter(|| {
            rt.block_on(async {
                let ctx = volley_sql::stream::batch_context();
                ctx.register_parquet("ride_requests", path.to_str().unwrap(), Default::default())
                    .await
                    .unwrap();
                let rows = ctx
                    .sql(SURGE_SELECT)
                    .await
                    .unwrap()
                    .collect()
                    .await
                    .unwrap();
                rows.iter().map(RecordBatch::num_rows).sum::<usize>()
            })
        })
    });
    group.finish();
    let _ = SessionContext::new();
}

fn empty_epoch(c: &mut Criterion) {
    let (pipeline, batches) = events(SURGE, 100_000);
    let schema = batches[0].schema();
    let rt = Runtime::new().unwrap();
    let mut job = rt.block_on(async {
        let mut sources: HashMap<String, Box<dyn Source>> = HashMap::new();
        sources.insert(
            "ride_requests".into(),
            Box::new(VecSource::new(Arc::clone(&schema), Vec::new())),
        );
        let overrides = JobOverrides {
            sources,
            ..JobOverrides::default()
        };
        let (mut job, _) = build_stream_job(&pipeline, &ConnectorRegistry::builtin(), overrides)
            .await
            .unwrap();
        // Open state: a whole window's worth of groups.
        job.run_epoch(EpochInput {
            sources: vec![SourceEpoch {
                batches: batches.clone(),
                ..SourceEpoch::default()
            }],
            ..EpochInput::default()
        })
        .await
        .unwrap();
        job
    });
    c.bench_function("surge/empty_epoch", |b| {
        b.iter(|| {
            rt.block_on(job.run_epoch(EpochInput {
                sources: vec![SourceEpoch::default()],
                ..EpochInput::default()
            }))
            .unwrap()
        })
    });
}

criterion_group!(benches, streaming, empty_epoch);
criterion_main!(benches);
