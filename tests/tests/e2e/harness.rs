//! Shared helpers: parse a pipeline, run batch and stream over the same rows, compare.

use std::collections::{BTreeMap, HashMap};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use volley_connectors::ConnectorRegistry;
use volley_engine::batch::{batch_outputs, read_sources};
use volley_engine::driver::BatchSizing;
use volley_engine::verify::{
    InputOrder, VerifyOptions, VerifyReport, compare_outputs, stream_outputs,
};
use volley_sql::Pipeline;

pub type Rows = BTreeMap<String, (SchemaRef, Vec<RecordBatch>)>;

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
