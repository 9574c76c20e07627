//! The cost of total-order MIN/MAX against DataFusion's built-ins, on an h2o.ai db-benchmark
//! groupby-shaped table (G1: id1..id6 keys of 1e2..1e4 groups, v1/v2 integers, v3 a double
//! with 1% NaN) and on the payments stream's windows.
//!
//! Run: `cargo bench -p volley-benches --bench min_max`. `builtin` registers DataFusion's own
//! `min`/`max` over a Volley context (the answer may then depend on row order); `total_order`
//! is what every Volley context uses.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use tokio::runtime::Runtime;
use volley_connectors::generator::{GeneratorOptions, GeneratorStream, generate_payments};

const ROWS: usize = 2_000_000;
const BATCH: usize = 65_536;

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// G1-shaped rows: id1 (100 strings), id3 (10,000 strings), id4 (100 ints), id6 (10,000 ints),
/// v1 (1..5), v3 (0..100 with 1% NaN and 0.5% -0.0).
fn g1() -> (Arc<Schema>, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id1", DataType::Utf8, false),
        Field::new("id3", DataType::Utf8, false),
        Field::new("id4", DataType::Int64, false),
        Field::new("id6", DataType::Int64, false),
        Field::new("v1", DataType::Int64, false),
        Field::new("v3", DataType::Float64, false),
    ]));
    let mut batches = Vec::new();
    for start in (0..ROWS).step_by(BATCH) {
        let n = BATCH.min(ROWS - start);
        let h: Vec<u64> = (start..start + n).map(|i| splitmix(i as u64)).collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                h.iter().map(|h| format!("id{:03}", h % 100)),
            )),
            Arc::new(StringArray::from_iter_values(
                h.iter().map(|h| format!("id{:010}", (h >> 8) % 10_000)),
            )),
            Arc::new(Int64Array::from_iter_values(
                h.iter().map(|h| ((h >> 16) % 100) as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                h.iter().map(|h| ((h >> 24) % 10_000) as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                h.iter().map(|h| ((h >> 32) % 5 + 1) as i64),
            )),
            Arc::new(Float64Array::from_iter_values(h.iter().map(|h| {
                match (h >> 40) % 1000 {
                    0..=9 => f64::NAN,
                    10..=14 => -0.0,
                    r => (r as f64) / 10.0,
                }
            }))),
        ];
        batches.push(RecordBatch::try_new(Arc::clone(&schema), columns).unwrap());
    }
    (schema, batches)
}

fn context(
    builtin: bool,
    table: &str,
    schema: Arc<Schema>,
    batches: Vec<RecordBatch>,
) -> SessionContext {
    let ctx =
        volley_sql::stream::batch_context_with(SessionConfig::new().with_target_partitions(2));
    if builtin {
        ctx.register_udaf(
            datafusion::functions_aggregate::min_max::min_udaf()
                .as_ref()
                .clone(),
        );
        ctx.register_udaf(
            datafusion::functions_aggregate::min_max::max_udaf()
                .as_ref()
                .clone(),
        );
    }
    // Two partitions, as DataFusion would split a file on two cores.
    let half = batches.len() / 2;
    let parts = vec![batches[..half].to_vec(), batches[half..].to_vec()];
    ctx.register_table(table, Arc::new(MemTable::try_new(schema, parts).unwrap()))
        .unwrap();
    ctx
}

fn run(rt: &Runtime, ctx: &SessionContext, sql: &str) -> usize {
    rt.block_on(async {
        let rows = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        rows.iter().map(RecordBatch::num_rows).sum()
    })
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let (schema, batches) = g1();
    let queries = [
        (
            "q7_max_v1_minus_min_v3_by_id3",
            "SELECT id3, max(v1) - min(v3) AS range_v FROM g1 GROUP BY id3",
        ),
        (
            "minmax_v3_by_id6",
            "SELECT id6, min(v3), max(v3) FROM g1 GROUP BY id6",
        ),
        (
            "minmax_v3_by_id1_id4",
            "SELECT id1, id4, min(v3), max(v3) FROM g1 GROUP BY id1, id4",
        ),
        ("minmax_v3_ungrouped", "SELECT min(v3), max(v3) FROM g1"),
    ];
    let mut group = c.benchmark_group("min_max_h2o_g1");
    group.sample_size(20);
    group.measurement_time(std::time::Duration::from_secs(10));
    group.throughput(Throughput::Elements(ROWS as u64));
    for (name, sql) in queries {
        for (variant, builtin) in [("builtin", true), ("total_order", false)] {
            let ctx = context(builtin, "g1", Arc::clone(&schema), batches.clone());
            group.bench_function(BenchmarkId::new(name, variant), |b| {
                b.iter(|| run(&rt, &ctx, sql))
            });
        }
    }
    group.finish();

    // Payments windows: per user per minute, over NaN/±0/±inf/NULL amounts.
    let opts = GeneratorOptions {
        stream: GeneratorStream::Payments,
        rate: 1000.0,
        riders: 10_000,
        ..GeneratorOptions::default()
    };
    let payments: Vec<RecordBatch> = (0..ROWS as u64)
        .step_by(BATCH)
        .map(|s| generate_payments(&opts, s, (s + BATCH as u64).min(ROWS as u64)))
        .collect();
    let schema = payments[0].schema();
    let mut group = c.benchmark_group("min_max_payments");
    group.sample_size(20);
    group.measurement_time(std::time::Duration::from_secs(10));
    group.throughput(Throughput::Elements(ROWS as u64));
    let sql = "SELECT user_id, date_bin(INTERVAL '1 minute', event_time) AS w, min(amount), max(amount) FROM payments GROUP BY 1, 2";
    for (variant, builtin) in [("builtin", true), ("total_order", false)] {
        let ctx = context(builtin, "payments", Arc::clone(&schema), payments.clone());
        group.bench_function(BenchmarkId::new("per_user_minute", variant), |b| {
            b.iter(|| run(&rt, &ctx, sql))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
