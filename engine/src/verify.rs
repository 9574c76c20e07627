//! `volley verify`: batch and streaming over the same input must give the same sink contents.
//!
//! Streaming runs with seeded random micro-batch sizes and, optionally, rows shuffled within
//! each source's watermark bound (so no row is late, and results must be identical).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, Int64Array, UInt32Array};
use arrow::compute::{cast, concat_batches, take_record_batch};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use volley_connectors::{ConnectorRegistry, Sink, Source};
use volley_sql::Pipeline;
use volley_sql::stream::QueryPlan;

use crate::batch::{InputBindings, batch_outputs, read_sources};
use crate::compare::{Fold, SinkComparison, compare_sink, key_indexes};
use crate::driver::{BatchSizing, splitmix64};
use crate::error::{EngineError, Result};
use crate::memory::{CollectSink, Collected, VecSource};
use crate::setup::{JobOverrides, build_stream_job};

/// The order streaming sees each source's rows in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputOrder {
    /// As read.
    AsIs,
    /// Sorted by event time.
    InOrder,
    /// Shuffled: each row delayed by a seeded random amount up to the watermark bound.
    Shuffled,
}

/// How `verify` runs the streaming side.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Micro-batch sizing.
    pub sizing: BatchSizing,
    /// Input order.
    pub order: InputOrder,
    /// Seed for the shuffle.
    pub seed: u64,
    /// How many differing rows to report per sink.
    pub max_differences: usize,
    /// Cores the streaming side spreads each epoch over (None: every core).
    pub workers: Option<usize>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            sizing: BatchSizing::Random {
                min: 1,
                max: 8192,
                seed: 7,
            },
            order: InputOrder::Shuffled,
            seed: 7,
            max_differences: 10,
            workers: None,
        }
    }
}

/// Per-sink comparisons of one streaming run against batch.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// How the streaming side read its input (empty when not said).
    pub pass: String,
    /// One per sink.
    pub sinks: Vec<SinkComparison>,
    /// What each source sent to dead letters on the streaming side: late rows are rows batch
    /// kept, so they fail the comparison whatever the sinks hold.
    pub sources: BTreeMap<String, crate::job::SourceLetters>,
    /// Sources whose dead letters passed their `max_dead_letters`, as messages.
    pub over_limit: Vec<String>,
}

impl VerifyReport {
    /// True when every sink matched on every key.
    pub fn is_exact(&self) -> bool {
        self.sinks.iter().all(|s| s.matched == s.total)
            && self.sources.values().all(|s| s.late_rows() == 0)
    }

    /// Why this report is not a pass: sinks that differ, and sinks (or a whole run) that
    /// compared no rows, which is not a match unless `allow_empty`.
    pub fn failures(&self, allow_empty: bool) -> Vec<String> {
        let mut out = Vec::new();
        if self.sinks.is_empty() && !allow_empty {
            out.push("no sink was compared".to_string());
        }
        for (name, source) in &self.sources {
            if source.late_rows() > 0 {
                out.push(format!(
                    "source '{name}': {} rows were late in streaming (sent to dead letters) that batch kept; first: {}",
                    source.late_rows(),
                    source.reasons.join(" | ")
                ));
            }
        }
        out.extend(self.over_limit.iter().cloned());
        for sink in &self.sinks {
            if sink.matched != sink.total {
                out.push(format!(
                    "{}: {} of {} keys differ",
                    sink.sink,
                    sink.total - sink.matched,
                    sink.total
                ));
            } else if sink.total == 0 && !allow_empty {
                out.push(format!(
                    "{}: no rows on either side; a comparison over nothing is not a match (pass --allow-empty if an empty result is expected)",
                    sink.sink
                ));
            }
        }
        out
    }

    /// The report as JSON, for CI: per sink the key, rows compared, matched and the first
    /// differences; overall totals and the verdict.
    pub fn to_json(&self, allow_empty: bool) -> serde_json::Value {
        let failures = self.failures(allow_empty);
        serde_json::json!({
            "streaming": self.pass,
            "pass": failures.is_empty(),
            "failures": failures,
            "compared": self.sinks.iter().map(|s| s.total).sum::<usize>(),
            "matched": self.sinks.iter().map(|s| s.matched).sum::<usize>(),
            "sinks": self.sinks.iter().map(|s| serde_json::json!({
                "sink": s.sink,
                "key": s.key,
                "compared": s.total,
                "matched": s.matched,
                "match_rate": s.match_rate(),
                "first_differences": s.differences,
            })).collect::<Vec<_>>(),
            "sources": self.sources.iter().map(|(name, s)| serde_json::json!({
                "source": name,
                "records": s.records,
                "undecodable": s.undecodable,
                "late": s.late_rows(),
                "first_reasons": s.reasons,
            })).collect::<Vec<_>>(),
        })
    }

    /// Matched over total across sinks.
    pub fn match_rate(&self) -> f64 {
        let total: usize = self.sinks.iter().map(|s| s.total).sum();
        let matched: usize = self.sinks.iter().map(|s| s.matched).sum();
        if total == 0 {
            1.0
        } else {
            matched as f64 / total as f64
        }
    }
}

/// Reorders one source's rows per `order`, keeping every row within `delay_nanos` of order.
///
/// # Errors
/// Arrow failures.
pub fn reorder(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    event_time: Option<(&str, i64)>,
    order: InputOrder,
    seed: u64,
) -> Result<Vec<RecordBatch>> {
    let (Some((column, delay)), false) = (event_time, order == InputOrder::AsIs) else {
        return Ok(batches.to_vec());
    };
    let all = concat_batches(schema, batches)?;
    let index = schema
        .index_of(column)
        .map_err(|_| EngineError::Internal(format!("event-time column '{column}' missing")))?;
    let ts = cast(
        all.column(index),
        &DataType::Timestamp(TimeUnit::Nanosecond, None),
    )?;
    let ts = cast(&ts, &DataType::Int64)?;
    let ts = ts
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| EngineError::Internal("event time is not an integer".into()))?;
    let span = u64::try_from(delay).unwrap_or(0).saturating_add(1);
    let mut keys: Vec<(i64, u32)> = (0..ts.len())
        .map(|i| {
            let t = if ts.is_null(i) { i64::MIN } else { ts.value(i) };
            let jitter = match order {
                InputOrder::Shuffled => {
                    (splitmix64(seed ^ (i as u64).wrapping_mul(0x9E37)) % span) as i64
                }
                _ => 0,
            };
            (t.saturating_add(jitter), i as u32)
        })
        .collect();
    keys.sort_unstable();
    let indices = UInt32Array::from_iter_values(keys.into_iter().map(|(_, i)| i));
    Ok(vec![take_record_batch(&all, &indices)?])
}

/// Runs the streaming engine over in-memory rows, collecting each sink's epochs.
///
/// # Errors
/// Planning and execution failures.
pub async fn stream_outputs(
    pipeline: &Pipeline,
    registry: &ConnectorRegistry,
    rows: &BTreeMap<String, (SchemaRef, Vec<RecordBatch>)>,
    opts: &VerifyOptions,
) -> Result<(
    BTreeMap<String, Vec<(u64, Vec<RecordBatch>)>>,
    Vec<QueryPlan>,
)> {
    let sources = reordered_sources(pipeline, rows, opts)?;
    let (outputs, plans, _) = stream_from(pipeline, registry, sources, opts).await?;
    Ok((outputs, plans))
}

/// Each source's rows in memory, in `opts.order`.
fn reordered_sources(
    pipeline: &Pipeline,
    rows: &BTreeMap<String, (SchemaRef, Vec<RecordBatch>)>,
    opts: &VerifyOptions,
) -> Result<HashMap<String, Box<dyn Source>>> {
    let mut sources: HashMap<String, Box<dyn Source>> = HashMap::new();
    for (name, (schema, batches)) in rows {
        let table = pipeline
            .table(name)
            .ok_or_else(|| EngineError::Internal(format!("source '{name}' vanished")))?;
        let event_time = table.watermark.as_ref().map(|w| {
            (
                w.column.as_str(),
                i64::try_from(w.delay.as_nanos()).unwrap_or(i64::MAX),
            )
        });
        let ordered = reorder(schema, batches, event_time, opts.order, opts.seed)?;
        sources.insert(
            name.clone(),
            Box::new(VecSource::new(Arc::clone(schema), ordered)),
        );
    }
    Ok(sources)
}

/// Each sink's epochs as the streaming engine writes them, with the run's summary.
type StreamRun = (
    BTreeMap<String, Vec<(u64, Vec<RecordBatch>)>>,
    Vec<QueryPlan>,
    crate::job::RunSummary,
);

/// Runs the streaming engine over `sources`, collecting each sink's epochs.
async fn stream_from(
    pipeline: &Pipeline,
    registry: &ConnectorRegistry,
    sources: HashMap<String, Box<dyn Source>>,
    opts: &VerifyOptions,
) -> Result<StreamRun> {
    let mut collected: BTreeMap<String, Collected> = BTreeMap::new();
    let mut sinks: HashMap<String, Box<dyn Sink>> = HashMap::new();
    for target in pipeline.sink_names() {
        let (sink, handle) = CollectSink::new();
        sinks.insert(target.to_string(), Box::new(sink));
        collected.insert(target.to_string(), handle);
    }
    let overrides = JobOverrides {
        sources,
        sinks,
        sizing: Some(opts.sizing.clone()),
        status: false,
        no_sinks: false,
        workers: opts.workers,
        pipeline_id: None,
        checkpoint: None,
        instance: None,
        on_checkpoint: None,
        live: false,
    };
    let (job, plans) = build_stream_job(pipeline, registry, overrides).await?;
    let summary = job.run_to_end_unjudged().await?;
    let out = collected
        .into_iter()
        .map(|(name, handle)| {
            let epochs = std::mem::take(&mut *handle.lock().unwrap_or_else(|e| e.into_inner()));
            (name, epochs)
        })
        .collect();
    Ok((out, plans, summary))
}

/// Compares batch and stream outputs of every sink.
///
/// # Errors
/// Unreadable rows, bad merge keys.
pub fn compare_outputs(
    pipeline: &Pipeline,
    plans: &[QueryPlan],
    batch: &BTreeMap<String, Vec<RecordBatch>>,
    stream: &BTreeMap<String, Vec<(u64, Vec<RecordBatch>)>>,
    max_differences: usize,
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    for target in pipeline.sink_names() {
        let sink_plans: Vec<&QueryPlan> = plans.iter().filter(|p| p.target == target).collect();
        let Some(first) = sink_plans.first() else {
            continue;
        };
        let names: Vec<String> = first
            .output_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let declared = pipeline.table(target).and_then(|t| t.merge_key());
        let key = match declared {
            Some(k) => k,
            None if sink_plans
                .iter()
                .all(|p| p.key_columns == first.key_columns) =>
            {
                first.key_columns.clone()
            }
            None => Vec::new(),
        };
        let upsert = sink_plans.iter().any(|p| crate::sink_fit::updates(p));
        let fold = if upsert { Fold::Upsert } else { Fold::Append };
        let key = key_indexes(target, &names, &key)?;
        let empty = Vec::new();
        report.sinks.push(compare_sink(
            target,
            &names,
            &key,
            fold,
            batch.get(target).unwrap_or(&empty),
            stream.get(target).map(Vec::as_slice).unwrap_or_default(),
            max_differences,
        )?);
    }
    Ok(report)
}

/// Each source opened as `volley run` reads it (event-time order or file order, as its
/// options say), bound to its `--input` as batch mode binds it; lookup tables from `rows`.
async fn sources_as_run_reads(
    pipeline: &Pipeline,
    inputs: &InputBindings,
    registry: &ConnectorRegistry,
    rows: &BTreeMap<String, (SchemaRef, Vec<RecordBatch>)>,
) -> Result<HashMap<String, Box<dyn Source>>> {
    let lookups = crate::lookup::lookup_tables(pipeline)?;
    let mut sources: HashMap<String, Box<dyn Source>> = HashMap::new();
    for table in crate::tables::source_tables(pipeline)? {
        if lookups.contains(&table.name) {
            if let Some((schema, batches)) = rows.get(&table.name) {
                sources.insert(
                    table.name.clone(),
                    Box::new(VecSource::new(Arc::clone(schema), batches.clone())),
                );
            }
            continue;
        }
        let mut decl = crate::batch::bound_decl(table, inputs, registry)?;
        // A generator's 'pace' sets when its rows are released, never which: the comparison
        // reads them at full speed.
        decl.options = decl.options.without("pace");
        let schema = crate::tables::table_schema(&decl, registry).await?;
        let connector = registry
            .get(&decl.kind)
            .ok_or_else(|| EngineError::Internal(format!("no connector for {}", decl.kind)))?;
        let source = match connector.open_source(&decl, schema).await {
            Ok(source) => source,
            // A kind with no streaming reader (a Delta table bound by --input): as read.
            Err(volley_connectors::ConnectorError::Config(_)) => {
                let (schema, batches) = rows.get(&table.name).ok_or_else(|| {
                    EngineError::Internal(format!("source '{}' was not read", table.name))
                })?;
                Box::new(VecSource::new(Arc::clone(schema), batches.clone()))
            }
            Err(e) => return Err(e.into()),
        };
        sources.insert(table.name.clone(), source);
    }
    Ok(sources)
}

/// Streams with `sources` and compares every sink with `batch`.
async fn compare_pass(
    pipeline: &Pipeline,
    registry: &ConnectorRegistry,
    sources: HashMap<String, Box<dyn Source>>,
    batch: &BTreeMap<String, Vec<RecordBatch>>,
    opts: &VerifyOptions,
    pass: &str,
) -> Result<VerifyReport> {
    let (stream, plans, summary) = stream_from(pipeline, registry, sources, opts).await?;
    let mut report = compare_outputs(pipeline, &plans, batch, &stream, opts.max_differences)?;
    let mut limits = BTreeMap::new();
    for table in crate::tables::source_tables(pipeline)? {
        limits.insert(table.name.clone(), table.max_dead_letters()?);
    }
    report.pass = pass.to_string();
    report.over_limit = crate::job::letters::over_limit(&limits, &summary.sources);
    report.sources = summary.sources;
    Ok(report)
}

/// `volley verify`: reads the bounded inputs once, runs batch, and streams twice: reading each
/// source as `run` does (its order, random micro-batch sizes), and reordered per
/// `opts.order`; every sink of each streaming run is compared with batch.
///
/// # Errors
/// Bindings, planning and execution failures (a mismatch is a report, not an error).
pub async fn verify(
    pipeline: &Pipeline,
    inputs: &InputBindings,
    registry: &ConnectorRegistry,
    opts: &VerifyOptions,
) -> Result<Vec<VerifyReport>> {
    let rows = read_sources(pipeline, inputs, registry).await?;
    let batch = batch_outputs(pipeline, &rows).await?;
    let as_run = sources_as_run_reads(pipeline, inputs, registry, &rows).await?;
    let mut reports = vec![
        compare_pass(
            pipeline,
            registry,
            as_run,
            &batch,
            opts,
            "in the order `run` reads each source",
        )
        .await?,
    ];
    let reordered = reordered_sources(pipeline, &rows, opts)?;
    let pass = match opts.order {
        InputOrder::AsIs => "as read, in memory",
        InputOrder::InOrder => "sorted by event time",
        InputOrder::Shuffled => "shuffled within each watermark's bound",
    };
    reports.push(compare_pass(pipeline, registry, reordered, &batch, opts, pass).await?);
    Ok(reports)
}
