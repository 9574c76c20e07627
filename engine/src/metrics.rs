//! What one job reports to the process's metrics registry ([`volley_metrics::Metrics`]): per
//! epoch, per checkpoint, per dead letter.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, UInt64Type};
use volley_connectors::dead_letter::DeadLetterBatch;
use volley_udfs::model::ModelSet;

use crate::job::{RunSummary, SourceRuntime};
pub use volley_metrics::http::{HttpArgs, HttpServer, start as start_http};
pub use volley_metrics::{
    CHECKPOINT_HISTORY, CheckpointRow, EPOCH_HISTORY, GraphNode, JobKey, JobMetrics, JobState,
    LETTER_HISTORY, LetterRow, MetricRow, Metrics, PlanGraph, SYSTEM_TABLES, Series, SystemSchema,
    now_ms, push_bounded,
};
use volley_operators::QueryRunner;

/// A rate over at least this long a window, so one busy epoch does not read as a spike.
const RATE_WINDOW_SECS: f64 = 1.0;

/// One job's reporter: it keeps what the registry's rows are computed from.
#[derive(Debug)]
pub struct JobReporter {
    metrics: Arc<Metrics>,
    key: JobKey,
    epoch_started: Option<Instant>,
    epoch_ms: VecDeque<f64>,
    /// Per `(component, name)`: when the rate was last sampled, the count then, the rate.
    rates: HashMap<(&'static str, String), (Instant, u64, f64)>,
    /// Per query (in job order): rows in and rows out, in total.
    queries: Vec<(u64, u64)>,
    letters: BTreeMap<String, u64>,
    /// Whether the plan's graph was reported.
    graphed: bool,
}

impl JobReporter {
    /// Registers the job `key` running `statements` with `metrics`.
    pub fn new(metrics: Arc<Metrics>, key: JobKey, statements: Vec<String>) -> Self {
        metrics.start(key.clone(), statements);
        Self {
            metrics,
            key,
            epoch_started: None,
            epoch_ms: VecDeque::with_capacity(EPOCH_HISTORY),
            rates: HashMap::new(),
            queries: Vec::new(),
            letters: BTreeMap::new(),
            graphed: false,
        }
    }

    /// An epoch starts now.
    pub fn epoch_started(&mut self) {
        self.epoch_started = Some(Instant::now());
    }

    /// Query `index` (in job order) read `rows_in` rows and emitted `rows_out` this epoch.
    pub fn query_rows(&mut self, index: usize, rows_in: u64, rows_out: u64) {
        if self.queries.len() <= index {
            self.queries.resize(index + 1, (0, 0));
        }
        self.queries[index].0 += rows_in;
        self.queries[index].1 += rows_out;
    }

    /// The dead letters written in `epoch`, by source.
    pub fn letters(&mut self, epoch: u64, letters: &BTreeMap<String, Vec<DeadLetterBatch>>) {
        let at_ms = now_ms();
        let mut rows = Vec::new();
        let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (source, batches) in letters {
            for batch in batches {
                *self.letters.entry(source.clone()).or_default() += batch.rows.num_rows() as u64;
                *counts
                    .entry((source.clone(), batch.reason.clone()))
                    .or_default() += batch.rows.num_rows() as u64;
                // Only the most recent are kept: describe no more than that many.
                let keep = batch.rows.num_rows().min(LETTER_HISTORY);
                let tail = batch.rows.slice(batch.rows.num_rows() - keep, keep);
                for (position, payload) in describe(&tail, epoch) {
                    rows.push(LetterRow {
                        epoch,
                        source: source.clone(),
                        reason: batch.reason.clone(),
                        position,
                        payload,
                        at_ms,
                    });
                }
            }
        }
        if rows.is_empty() && counts.is_empty() {
            return;
        }
        self.metrics.update(&self.key, |job| {
            for (key, count) in counts {
                *job.letter_counts.entry(key).or_default() += count;
            }
            for row in rows {
                push_bounded(&mut job.dead_letters, row, LETTER_HISTORY);
            }
        });
    }

    /// A checkpoint of `epoch` was written in `duration_ms`, `bytes` long.
    pub fn checkpoint(&self, epoch: u64, duration_ms: u64, bytes: u64) {
        let row = CheckpointRow {
            epoch,
            written_at_ms: now_ms(),
            duration_ms,
            bytes,
        };
        let pipeline = self.key.pipeline.clone();
        self.metrics.update(&self.key, |job| {
            push_bounded(&mut job.checkpoints, row, CHECKPOINT_HISTORY);
            observe(
                job,
                "pipeline",
                &pipeline,
                "checkpoint_seconds",
                duration_ms as f64 / 1e3,
            );
        });
    }

    /// Sink `sink` wrote (and committed) an epoch in `seconds`.
    pub fn sink_committed(&self, sink: &str, seconds: f64) {
        self.metrics.update(&self.key, |job| {
            observe(job, "sink", sink, "commit_seconds", seconds);
        });
    }

    /// What reports the job's end, once the job itself is gone.
    pub fn finisher(&self) -> Finisher {
        Finisher {
            metrics: Arc::clone(&self.metrics),
            key: self.key.clone(),
        }
    }

    fn rate(&mut self, component: &'static str, name: &str, count: u64) -> f64 {
        let now = Instant::now();
        let entry = self
            .rates
            .entry((component, name.to_string()))
            .or_insert((now, count, 0.0));
        let elapsed = now.duration_since(entry.0).as_secs_f64();
        if elapsed >= RATE_WINDOW_SECS {
            entry.2 = count.saturating_sub(entry.1) as f64 / elapsed;
            entry.0 = now;
            entry.1 = count;
        }
        entry.2
    }

    /// Epoch `epoch` is done: every metric as of now.
    pub fn epoch_finished(
        &mut self,
        epoch: u64,
        sources: &[SourceRuntime],
        queries: &[QueryRunner],
        summary: &RunSummary,
        models: &ModelSet,
    ) {
        let mut epoch_seconds = None;
        if let Some(started) = self.epoch_started.take() {
            let seconds = started.elapsed().as_secs_f64();
            push_bounded(&mut self.epoch_ms, seconds * 1e3, EPOCH_HISTORY);
            epoch_seconds = Some(seconds);
        }
        let source_rates: Vec<f64> = sources
            .iter()
            .map(|s| self.rate("source", &s.name, s.rows))
            .collect();
        let sink_rates: Vec<f64> = summary
            .rows_out
            .iter()
            .map(|(target, rows)| self.rate("sink", target, *rows))
            .collect();
        let mut rows = Vec::new();
        let mut partition_rows = Vec::new();
        let mut row = |component: &'static str, name: &str, metric: &'static str, value: f64| {
            rows.push(MetricRow {
                component,
                name: name.to_string(),
                metric,
                partition: None,
                value,
            });
        };
        let pipeline = self.key.pipeline.as_str();
        let (last, p50, p99) = percentiles(&self.epoch_ms);
        row("pipeline", pipeline, "epochs", epoch as f64);
        row("pipeline", pipeline, "epoch_ms_last", last);
        row("pipeline", pipeline, "epoch_ms_p50", p50);
        row("pipeline", pipeline, "epoch_ms_p99", p99);
        row("pipeline", pipeline, "rows_in", summary.rows_in as f64);
        let out: u64 = summary.rows_out.values().sum();
        row("pipeline", pipeline, "rows_out", out as f64);
        row("pipeline", pipeline, "late_rows", summary.late_rows as f64);
        row(
            "pipeline",
            pipeline,
            "rejected_records",
            summary.rejected_records as f64,
        );
        row(
            "pipeline",
            pipeline,
            "rejected_by_models",
            summary.rejected_by_models as f64,
        );
        row(
            "pipeline",
            pipeline,
            "windows_emitted",
            summary.windows_emitted as f64,
        );
        row(
            "pipeline",
            pipeline,
            "checkpoints",
            summary.checkpoints as f64,
        );
        row(
            "pipeline",
            pipeline,
            "checkpoint_ms_last",
            summary.last_checkpoint_ms as f64,
        );
        row(
            "pipeline",
            pipeline,
            "checkpoint_bytes_last",
            summary.last_checkpoint_bytes as f64,
        );
        for (i, source) in sources.iter().enumerate() {
            row("source", &source.name, "rows_in", source.rows as f64);
            row("source", &source.name, "rows_per_second", source_rates[i]);
            if let Some(bytes) = source.bytes {
                row("source", &source.name, "bytes_in", bytes as f64);
            }
            if let Some(lags) = source.partition_lag() {
                let total: u64 = lags.values().sum();
                row("source", &source.name, "consumer_lag", total as f64);
                for (partition, lag) in lags {
                    partition_rows.push(MetricRow {
                        component: "source",
                        name: source.name.clone(),
                        metric: "partition_lag",
                        partition: Some(partition),
                        value: lag as f64,
                    });
                }
            }
            for (partition, watermark) in source.partition_watermarks() {
                partition_rows.push(MetricRow {
                    component: "source",
                    name: source.name.clone(),
                    metric: "partition_watermark_ms",
                    partition: Some(partition),
                    value: (watermark / 1_000_000) as f64,
                });
            }
            if let Some(watermark) = source.watermark().filter(|w| *w != i64::MAX) {
                row(
                    "source",
                    &source.name,
                    "watermark_ms",
                    (watermark / 1_000_000) as f64,
                );
            }
            if let Some(max) = source.max_event_time() {
                row(
                    "source",
                    &source.name,
                    "max_event_time_ms",
                    (max / 1_000_000) as f64,
                );
            }
            let letters = self.letters.get(&source.name).copied().unwrap_or(0);
            row("source", &source.name, "dead_letters", letters as f64);
            row(
                "source",
                &source.name,
                "exhausted",
                f64::from(u8::from(source.exhausted)),
            );
        }
        for ((target, rows_out), rate) in summary.rows_out.iter().zip(sink_rates) {
            row("sink", target, "rows_out", *rows_out as f64);
            row("sink", target, "rows_per_second", rate);
        }
        for (i, query) in queries.iter().enumerate() {
            let (rows_in, rows_out) = self.queries.get(i).copied().unwrap_or((0, 0));
            let name = format!("INSERT INTO {} ({})", query.plan().target, query.plan().at);
            row("query", &name, "rows_in", rows_in as f64);
            row("query", &name, "rows_out", rows_out as f64);
            row("query", &name, "windows_open", query.open_windows() as f64);
            // An operator's id names its statement's target: unique in the job.
            for (id, operator, counts) in query.operator_counts() {
                row("operator", id, "rows_in", counts.rows_in as f64);
                row("operator", id, "rows_out", counts.rows_out as f64);
                row("operator", id, "late_rows", counts.late_rows as f64);
                row("operator", id, "state_rows", operator.state_rows() as f64);
                row("operator", id, "state_bytes", operator.state_bytes() as f64);
                row(
                    "operator",
                    id,
                    "windows_open",
                    operator.open_windows() as f64,
                );
            }
        }
        let mut model_latency = Vec::new();
        for model in models.iter() {
            let stats = model.stats();
            let name = model.name();
            row("model", name, "calls", stats.calls as f64);
            row("model", name, "rows", stats.rows as f64);
            let per_call = if stats.calls == 0 {
                0.0
            } else {
                stats.rows as f64 / stats.calls as f64
            };
            row("model", name, "rows_per_call", per_call);
            let mean = if stats.calls == 0 {
                0.0
            } else {
                stats.total_seconds * 1e3 / stats.calls as f64
            };
            row("model", name, "latency_ms_mean", mean);
            row("model", name, "latency_ms_last", stats.last_seconds * 1e3);
            row(
                "model",
                name,
                "latency_ms_p50",
                stats.latency_p50_seconds * 1e3,
            );
            row(
                "model",
                name,
                "latency_ms_p99",
                stats.latency_p99_seconds * 1e3,
            );
            row(
                "model",
                name,
                "rows_per_call_p50",
                stats.rows_per_call_p50 as f64,
            );
            row(
                "model",
                name,
                "rows_per_call_max",
                stats.rows_per_call_max as f64,
            );
            row("model", name, "failures", stats.failures as f64);
            row("model", name, "timeouts", stats.timeouts as f64);
            row("model", name, "memo_rows", stats.memo_rows as f64);
            row("model", name, "in_flight_peak", stats.peak_in_flight as f64);
            model_latency.push((name.to_string(), stats.latency));
        }
        rows.extend(partition_rows);
        let graph = (!self.graphed).then(|| plan_graph(queries));
        self.graphed = true;
        self.metrics.update(&self.key, |job| {
            job.epoch = epoch;
            job.metrics = rows;
            if let Some(graph) = graph {
                job.graph = Some(graph);
            }
            if let Some(seconds) = epoch_seconds {
                observe(job, "pipeline", pipeline, "epoch_seconds", seconds);
            }
            // A model's runs are counted since it was loaded: its histogram is replaced.
            for (name, latency) in model_latency {
                let series = Series {
                    component: "model",
                    name,
                    metric: "latency_seconds",
                };
                job.histograms.insert(series, latency);
            }
        });
    }
}

/// Reports how a job ended.
#[derive(Debug)]
pub struct Finisher {
    metrics: Arc<Metrics>,
    key: JobKey,
}

impl Finisher {
    /// The job stopped in `state`.
    pub fn report(&self, state: JobState) {
        self.metrics.update(&self.key, |job| job.state = state);
    }
}

/// The job's plan as a graph: its sources and lookup tables, each statement with its stateful
/// operators and models, its sinks.
fn plan_graph(queries: &[QueryRunner]) -> PlanGraph {
    let mut graph = PlanGraph::default();
    let mut seen = std::collections::BTreeSet::new();
    let mut node = |graph: &mut PlanGraph, id: String, kind, label: &str, detail| {
        if seen.insert(id.clone()) {
            graph.nodes.push(GraphNode {
                id,
                kind,
                label: label.to_string(),
                detail,
            });
        }
    };
    for query in queries {
        let plan = query.plan();
        for source in &plan.sources {
            node(
                &mut graph,
                format!("source:{source}"),
                "source",
                source,
                Vec::new(),
            );
        }
        for lookup in &plan.lookups {
            node(
                &mut graph,
                format!("source:{lookup}"),
                "lookup",
                lookup,
                Vec::new(),
            );
        }
    }
    for (i, query) in queries.iter().enumerate() {
        let plan = query.plan();
        let id = format!("query:{i}");
        let mut detail: Vec<String> = query
            .operators_by_id()
            .map(|(id, _)| id.to_string())
            .collect();
        detail.extend(plan.models.iter().map(|m| format!("predict('{m}')")));
        let label = format!("INSERT INTO {} ({})", plan.target, plan.at);
        node(&mut graph, id.clone(), "query", &label, detail);
        for source in plan.sources.iter().chain(&plan.lookups) {
            graph.edges.push((format!("source:{source}"), id.clone()));
        }
    }
    for (i, query) in queries.iter().enumerate() {
        let target = &query.plan().target;
        node(
            &mut graph,
            format!("sink:{target}"),
            "sink",
            target,
            Vec::new(),
        );
        graph
            .edges
            .push((format!("query:{i}"), format!("sink:{target}")));
    }
    graph
}

/// Records `seconds` in the job's histogram of `metric` of `component` `name`.
fn observe(
    job: &mut JobMetrics,
    component: &'static str,
    name: &str,
    metric: &'static str,
    seconds: f64,
) {
    let series = Series {
        component,
        name: name.to_string(),
        metric,
    };
    job.histograms.entry(series).or_default().observe(seconds);
}

/// The last, median and 99th percentile of `samples` (0 when there are none).
fn percentiles(samples: &VecDeque<f64>) -> (f64, f64, f64) {
    let Some(&last) = samples.back() else {
        return (0.0, 0.0, 0.0);
    };
    let mut sorted: Vec<f64> = samples.iter().copied().collect();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let index = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[index.min(sorted.len() - 1)]
    };
    (last, at(0.5), at(0.99))
}

/// Each letter's position and payload: a rejected record's partition, offset and raw text;
/// any other row as JSON.
fn describe(rows: &RecordBatch, epoch: u64) -> Vec<(Option<String>, String)> {
    let column = |name: &str| rows.column_by_name(name);
    if let (Some(partition), Some(offset), Some(payload)) =
        (column("partition"), column("offset"), column("payload"))
        && partition.data_type() == &DataType::Utf8
        && offset.data_type() == &DataType::UInt64
        && payload.data_type() == &DataType::Utf8
    {
        let partition = partition.as_string::<i32>();
        let offset = offset.as_primitive::<UInt64Type>();
        let payload = payload.as_string::<i32>();
        let hex = column("payload_hex")
            .filter(|c| c.data_type() == &DataType::Utf8)
            .map(|c| c.as_string::<i32>().clone());
        return (0..rows.num_rows())
            .map(|i| {
                let at = if partition.value(i).is_empty() {
                    format!("offset {}", offset.value(i))
                } else {
                    format!(
                        "partition {} offset {}",
                        partition.value(i),
                        offset.value(i)
                    )
                };
                let text = if payload.is_null(i) {
                    hex.as_ref()
                        .filter(|h| !h.is_null(i))
                        .map(|h| format!("0x{}", h.value(i)))
                        .unwrap_or_default()
                } else {
                    payload.value(i).to_string()
                };
                (Some(at), text)
            })
            .collect();
    }
    let mut out = Vec::new();
    {
        let mut writer = volley_connectors::codec::json_lines_writer(&mut out);
        if writer.write(rows).and_then(|()| writer.finish()).is_err() {
            return vec![(None, "(a row that cannot be shown as JSON)".into()); rows.num_rows()];
        }
    }
    let positions = epoch_positions(rows, epoch);
    String::from_utf8_lossy(&out)
        .lines()
        .enumerate()
        .map(|(i, line)| (positions.get(i).cloned(), line.to_string()))
        .collect()
}

/// Where rows carrying an `_epoch_row` (late rows, rows `predict()` left out) were read:
/// `epoch 7 row 12`, after their table (`_source_table`) and partition (`_source_partition`)
/// when the letters name them. Empty when they carry none.
fn epoch_positions(rows: &RecordBatch, epoch: u64) -> Vec<String> {
    let Some(at) = rows
        .column_by_name(crate::late_letters::EPOCH_ROW)
        .and_then(|c| c.as_primitive_opt::<UInt64Type>())
    else {
        return Vec::new();
    };
    let text = |name: &str| {
        rows.column_by_name(name)
            .filter(|c| c.data_type() == &DataType::Utf8)
            .map(|c| c.as_string::<i32>().clone())
    };
    let table = text(crate::models::SOURCE_TABLE);
    let partition = text(crate::late_letters::SOURCE_PARTITION);
    (0..rows.num_rows())
        .map(|i| {
            let mut from = Vec::new();
            if let Some(t) = table.as_ref().filter(|t| !t.is_null(i)) {
                from.push(t.value(i).to_string());
            }
            if let Some(p) = partition.as_ref().filter(|p| !p.is_null(i)) {
                from.push(format!("partition {}", p.value(i)));
            }
            from.push(format!("epoch {epoch} row {}", at.value(i)));
            from.join(", ")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;
    use std::sync::Arc;

    use arrow::array::{AsArray, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::catalog::SchemaProvider;
    use datafusion::prelude::SessionContext;
    use volley_connectors::RejectedRecord;
    use volley_connectors::dead_letter::DeadLetterBatch;

    use super::{JobKey, JobReporter, JobState, Metrics, SystemSchema};

    #[tokio::test]
    async fn the_registry_reads_as_system_tables() {
        let metrics = Arc::new(Metrics::default());
        let key = JobKey {
            pipeline: "surge".into(),
            instance: None,
        };
        let mut reporter = JobReporter::new(
            Arc::clone(&metrics),
            key,
            vec!["INSERT INTO t SELECT 1".into()],
        );
        reporter.checkpoint(3, 12, 4096);
        let late = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "rider_id",
                DataType::Int64,
                false,
            )])),
            vec![Arc::new(Int64Array::from(vec![7, 8]))],
        )
        .unwrap();
        let bad = RejectedRecord {
            partition: "2".into(),
            offset: 41,
            key: None,
            payload: b"{not json".to_vec(),
            error: "expected value".into(),
        };
        // A row predict() left out, traced to its source record.
        let scored = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("amount", DataType::Int64, true),
                Field::new(crate::models::SOURCE_TABLE, DataType::Utf8, false),
                Field::new(crate::late_letters::EPOCH_ROW, DataType::UInt64, false),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![None])),
                Arc::new(arrow::array::StringArray::from(vec!["payments"])),
                Arc::new(arrow::array::UInt64Array::from(vec![4071])),
            ],
        )
        .unwrap();
        let letters = BTreeMap::from([
            (
                "rides".to_string(),
                vec![
                    DeadLetterBatch {
                        source: "rides".into(),
                        reason: "late".into(),
                        rows: late,
                    },
                    DeadLetterBatch::rejected("rides", &[bad]).unwrap(),
                ],
            ),
            (
                "model_fraud".to_string(),
                vec![DeadLetterBatch {
                    source: "model_fraud".into(),
                    reason: "a NULL input".into(),
                    rows: scored,
                }],
            ),
        ]);
        reporter.letters(3, &letters);
        reporter.finisher().report(JobState::Finished);

        let ctx = SessionContext::new();
        let schema = Arc::new(SystemSchema::new(metrics, 3));
        for name in schema.table_names() {
            ctx.register_table(name.as_str(), schema.table(&name).await.unwrap().unwrap())
                .unwrap();
        }
        let rows = |sql: &str| {
            let ctx = ctx.clone();
            let sql = sql.to_string();
            async move { ctx.sql(&sql).await.unwrap().collect().await.unwrap() }
        };
        let letters = rows("SELECT reason, position, payload FROM dead_letters").await;
        let text = arrow::util::pretty::pretty_format_batches(&letters)
            .unwrap()
            .to_string();
        // Newest first; a row as JSON, a rejected record with its position and raw text.
        assert!(text.contains("undecodable record"), "{text}");
        assert!(text.contains("partition 2 offset 41"), "{text}");
        assert!(text.contains("{not json"), "{text}");
        assert!(text.contains(r#"{"rider_id":8}"#), "{text}");
        // A traced model letter: where its record was read.
        assert!(text.contains("payments, epoch 3 row 4071"), "{text}");
        let checkpoints = rows("SELECT epoch, duration_ms, bytes FROM checkpoints").await;
        assert_eq!(checkpoints[0].num_rows(), 1);
        let pipelines = rows("SELECT state, published_epoch, statements FROM pipelines").await;
        assert_eq!(
            pipelines[0].column(0).as_string::<i32>().value(0),
            "finished"
        );
        assert!(
            pipelines[0]
                .column(2)
                .as_string::<i32>()
                .value(0)
                .contains("INSERT INTO t")
        );
    }
}
