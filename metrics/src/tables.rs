//! The `system` schema: the registry as tables, built when a query reads them.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
    UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};

use super::{JobKey, JobMetrics, Metrics};

/// The tables of the `system` schema.
pub const SYSTEM_TABLES: [&str; 4] = ["checkpoints", "dead_letters", "metrics", "pipelines"];

/// The `system` schema over a registry, as a query sees it: `published_epoch` is the epoch
/// of the live tables the same query reads.
#[derive(Debug)]
pub struct SystemSchema {
    metrics: Arc<Metrics>,
    published_epoch: u64,
}

impl SystemSchema {
    /// The schema over `metrics`, for a query over live tables at `published_epoch`.
    pub fn new(metrics: Arc<Metrics>, published_epoch: u64) -> Self {
        Self {
            metrics,
            published_epoch,
        }
    }
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn time(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        false,
    )
}

fn u64_field(name: &str) -> Field {
    Field::new(name, DataType::UInt64, false)
}

/// The schema of a system table.
pub fn schema_of(table: &str) -> Option<SchemaRef> {
    let job = || vec![utf8("pipeline", false), utf8("instance", true)];
    let fields = match table {
        "metrics" => [
            job(),
            vec![
                utf8("component", false),
                utf8("name", false),
                utf8("partition", true),
                utf8("metric", false),
                Field::new("value", DataType::Float64, false),
                time("updated_at"),
            ],
        ]
        .concat(),
        "checkpoints" => [
            job(),
            vec![
                u64_field("epoch"),
                time("written_at"),
                u64_field("duration_ms"),
                u64_field("bytes"),
            ],
        ]
        .concat(),
        "dead_letters" => [
            job(),
            vec![
                u64_field("epoch"),
                utf8("source", false),
                utf8("reason", false),
                utf8("position", true),
                utf8("payload", false),
                time("written_at"),
            ],
        ]
        .concat(),
        "pipelines" => [
            job(),
            vec![
                utf8("statements", false),
                time("started_at"),
                utf8("state", false),
                u64_field("epoch"),
                u64_field("published_epoch"),
                time("updated_at"),
            ],
        ]
        .concat(),
        _ => return None,
    };
    Some(Arc::new(Schema::new(fields)))
}

/// Builders of the columns every system table starts with.
#[derive(Default)]
struct Jobs {
    pipeline: StringBuilder,
    instance: StringBuilder,
}

impl Jobs {
    fn push(&mut self, key: &JobKey) {
        self.pipeline.append_value(&key.pipeline);
        self.instance.append_option(key.instance.as_deref());
    }

    fn finish(mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.pipeline.finish()),
            Arc::new(self.instance.finish()),
        ]
    }
}

fn times() -> TimestampMillisecondBuilder {
    TimestampMillisecondBuilder::new().with_timezone("UTC")
}

fn batch(table: &str, jobs: &[(JobKey, JobMetrics)], published_epoch: u64) -> Result<RecordBatch> {
    let mut keys = Jobs::default();
    let columns: Vec<ArrayRef> = match table {
        "metrics" => {
            let (mut component, mut name, mut partition, mut metric) = (
                StringBuilder::new(),
                StringBuilder::new(),
                StringBuilder::new(),
                StringBuilder::new(),
            );
            let (mut value, mut updated) = (Float64Builder::new(), times());
            for (key, job) in jobs {
                for row in &job.metrics {
                    keys.push(key);
                    component.append_value(row.component);
                    name.append_value(&row.name);
                    partition.append_option(row.partition.as_deref());
                    metric.append_value(row.metric);
                    value.append_value(row.value);
                    updated.append_value(job.updated_at_ms);
                }
            }
            let rest: Vec<ArrayRef> = vec![
                Arc::new(component.finish()),
                Arc::new(name.finish()),
                Arc::new(partition.finish()),
                Arc::new(metric.finish()),
                Arc::new(value.finish()),
                Arc::new(updated.finish()),
            ];
            [keys.finish(), rest].concat()
        }
        "checkpoints" => {
            let (mut epoch, mut written, mut duration, mut bytes) = (
                UInt64Builder::new(),
                times(),
                UInt64Builder::new(),
                UInt64Builder::new(),
            );
            for (key, job) in jobs {
                for row in &job.checkpoints {
                    keys.push(key);
                    epoch.append_value(row.epoch);
                    written.append_value(row.written_at_ms);
                    duration.append_value(row.duration_ms);
                    bytes.append_value(row.bytes);
                }
            }
            let rest: Vec<ArrayRef> = vec![
                Arc::new(epoch.finish()),
                Arc::new(written.finish()),
                Arc::new(duration.finish()),
                Arc::new(bytes.finish()),
            ];
            [keys.finish(), rest].concat()
        }
        "dead_letters" => {
            let mut epoch = UInt64Builder::new();
            let (mut source, mut reason, mut position, mut payload) = (
                StringBuilder::new(),
                StringBuilder::new(),
                StringBuilder::new(),
                StringBuilder::new(),
            );
            let mut written = times();
            for (key, job) in jobs {
                // Newest first: what an analyst looking at failures wants at the top.
                for row in job.dead_letters.iter().rev() {
                    keys.push(key);
                    epoch.append_value(row.epoch);
                    source.append_value(&row.source);
                    reason.append_value(&row.reason);
                    position.append_option(row.position.as_deref());
                    payload.append_value(&row.payload);
                    written.append_value(row.at_ms);
                }
            }
            let rest: Vec<ArrayRef> = vec![
                Arc::new(epoch.finish()),
                Arc::new(source.finish()),
                Arc::new(reason.finish()),
                Arc::new(position.finish()),
                Arc::new(payload.finish()),
                Arc::new(written.finish()),
            ];
            [keys.finish(), rest].concat()
        }
        "pipelines" => {
            let (mut statements, mut state) = (StringBuilder::new(), StringBuilder::new());
            let (mut started, mut updated) = (times(), times());
            let (mut epoch, mut published) = (UInt64Builder::new(), UInt64Builder::new());
            for (key, job) in jobs {
                keys.push(key);
                statements.append_value(job.statements.join(";\n"));
                started.append_value(job.started_at_ms);
                state.append_value(job.state.name());
                epoch.append_value(job.epoch);
                published.append_value(published_epoch);
                updated.append_value(job.updated_at_ms);
            }
            let rest: Vec<ArrayRef> = vec![
                Arc::new(statements.finish()),
                Arc::new(started.finish()),
                Arc::new(state.finish()),
                Arc::new(epoch.finish()),
                Arc::new(published.finish()),
                Arc::new(updated.finish()),
            ];
            [keys.finish(), rest].concat()
        }
        other => {
            return Err(DataFusionError::Internal(format!(
                "no system table '{other}'"
            )));
        }
    };
    let schema = schema_of(table)
        .ok_or_else(|| DataFusionError::Internal(format!("no system table '{table}'")))?;
    Ok(RecordBatch::try_new(schema, columns)?)
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        SYSTEM_TABLES.iter().map(|t| (*t).to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if !SYSTEM_TABLES.contains(&name) {
            return Ok(None);
        }
        let rows = batch(name, &self.metrics.jobs(), self.published_epoch)?;
        let table = MemTable::try_new(rows.schema(), vec![vec![rows]])?;
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        SYSTEM_TABLES.contains(&name)
    }
}
