//! Checkpoint overhead: the surge query streaming with a checkpoint every epoch, every 10
//! epochs and never; one checkpoint of 1M open window keys, and one of an OVER window's 1M
//! partitions (their time here, their size printed).
//!
//! Run: `cargo bench -p volley-benches --bench checkpoint`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;

use arrow::record_batch::RecordBatch;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use volley_benches::{SURGE, events};
use volley_connectors::{ConnectorRegistry, Sink, Source};
use volley_engine::checkpoint::{CheckpointConfig, CheckpointInterval};
use volley_engine::driver::{BatchSizing, EpochInput, SourceEpoch};
use volley_engine::memory::VecSource;
use volley_engine::setup::{JobOverrides, build_stream_job};

/// One key per request inside one long window (starting mid-day, so the disorder never
/// reaches the previous day's window): every row opens a key that stays open.
const OPEN_KEYS: &str = "
CREATE EXTERNAL TABLE ride_requests STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '{count}', 'rate' '10000', 'seed' '42', 'disorder' '3 seconds',
         'start_time' '2026-01-01T12:00:00Z',
         'watermark' 'event_time - INTERVAL ''5 seconds''');
CREATE EXTERNAL TABLE per_request STORED AS BLACKHOLE LOCATION 'x';
INSERT INTO per_request
SELECT request_id, date_bin(INTERVAL '1 day', event_time) AS day,
       count(*) AS n, avg(lat) AS mean_lat, max(event_time) AS last_seen
FROM ride_requests GROUP BY 1, 2;";

/// One OVER partition per request, each carrying a running count and its last rows.
const OVER_PARTITIONS: &str = "
CREATE EXTERNAL TABLE ride_requests STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '{count}', 'rate' '10000', 'seed' '42', 'disorder' '3 seconds',
         'start_time' '2026-01-01T12:00:00Z',
         'watermark' 'event_time - INTERVAL ''5 seconds''');
CREATE EXTERNAL TABLE per_request STORED AS BLACKHOLE LOCATION 'x';
INSERT INTO per_request
SELECT request_id, count(*) OVER w AS n,
       avg(lat) OVER (PARTITION BY request_id ORDER BY event_time ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS mean_lat
FROM ride_requests WINDOW w AS (PARTITION BY request_id ORDER BY event_time);";

fn overrides(
    batches: &[RecordBatch],
    checkpoint: Option<CheckpointConfig>,
    max_rows: usize,
) -> JobOverrides {
    let mut sources: HashMap<String, Box<dyn Source>> = HashMap::new();
    sources.insert(
        "ride_requests".into(),
        Box::new(VecSource::new(batches[0].schema(), batches.to_vec())),
    );
    JobOverrides {
        sources,
        sinks: HashMap::<String, Box<dyn Sink>>::new(),
        sizing: Some(BatchSizing::Fixed(max_rows)),
        checkpoint,
        ..JobOverrides::default()
    }
}

fn interval(c: &mut Criterion) {
    let count = 1_000_000u64;
    let (pipeline, batches) = events(SURGE, count);
    let rt = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("checkpoint/surge");
    group.sample_size(10);
    group.throughput(Throughput::Elements(count));
    for (label, every) in [
        ("none", None),
        ("every_10_epochs", Some(10)),
        ("every_epoch", Some(1)),
    ] {
        let config = every.map(|n| CheckpointConfig {
            dir: dir.path().join(label).display().to_string(),
            interval: CheckpointInterval::Epochs(n),
            keep: 3,
            from_scratch: true,
        });
        group.bench_with_input(
            BenchmarkId::new("max_rows=16384", label),
            &config,
            |b, config| {
                b.iter(|| {
                    rt.block_on(async {
                        let o = overrides(&batches, config.clone(), 16_384);
                        let (job, _) =
                            build_stream_job(&pipeline, &ConnectorRegistry::builtin(), o)
                                .await
                                .unwrap();
                        job.run().await.unwrap()
                    })
                })
            },
        );
    }
    group.finish();
}

fn open_keys(c: &mut Criterion) {
    one_checkpoint(c, OPEN_KEYS, "checkpoint/open_keys=1000000", "open keys");
}

fn over_partitions(c: &mut Criterion) {
    one_checkpoint(
        c,
        OVER_PARTITIONS,
        "checkpoint/over_partitions=1000000",
        "OVER partitions",
    );
}

/// One checkpoint of `sql`'s state after one epoch of 1M requests, each its own key.
fn one_checkpoint(c: &mut Criterion, sql: &str, name: &str, what: &str) {
    let count = 1_000_000u64;
    let (pipeline, batches) = events(sql, count);
    let rt = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = CheckpointConfig {
        dir: dir.path().display().to_string(),
        interval: CheckpointInterval::Epochs(u64::MAX),
        keep: 2,
        from_scratch: true,
    };
    let mut job = rt.block_on(async {
        let o = overrides(&batches[..1], Some(config), usize::MAX);
        let (mut job, _) = build_stream_job(&pipeline, &ConnectorRegistry::builtin(), o)
            .await
            .unwrap();
        job.prepare().await.unwrap();
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
    let open: usize = job.state_rows();
    assert!(
        open as u64 >= count * 99 / 100,
        "a row of state per request: {open}"
    );
    c.bench_function(name, |b| b.iter(|| rt.block_on(job.checkpoint()).unwrap()));
    eprintln!(
        "checkpoint of {open} {what}: {} bytes ({} MiB), last took {} ms",
        job.summary().last_checkpoint_bytes,
        job.summary().last_checkpoint_bytes / (1024 * 1024),
        job.summary().last_checkpoint_ms
    );
}

criterion_group!(benches, interval, open_keys, over_partitions);
criterion_main!(benches);
