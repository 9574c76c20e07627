//! The registry in the Prometheus text format (`/metrics`), encoded by `prometheus-client`.
//!
//! Every job's rows map to a family named `volley_<component>_<what>` with labels
//! `pipeline` (and `instance` in group mode) plus the part's own (`source`, `sink`, `query`,
//! `operator`, `model`). Counters end in `_total`, durations are histograms in seconds, sizes
//! are in bytes.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::{JobKey, JobMetrics, Metrics, Series};

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// How one metric of the registry's rows is exposed.
struct Family {
    /// `component` and `metric` of the rows it exposes.
    component: &'static str,
    metric: &'static str,
    /// The name without `volley_`, the unit and `_total`.
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    kind: MetricType,
    /// What the row's value is multiplied by (milliseconds to seconds: 1e-3).
    scale: f64,
}

const fn family(
    component: &'static str,
    metric: &'static str,
    name: &'static str,
    kind: MetricType,
    help: &'static str,
) -> Family {
    Family {
        component,
        metric,
        name,
        help,
        unit: None,
        kind,
        scale: 1.0,
    }
}

const COUNTER: MetricType = MetricType::Counter;
const GAUGE: MetricType = MetricType::Gauge;

/// Every family read from the jobs' metric rows, in the order they are written.
fn families() -> Vec<Family> {
    let seconds = |mut f: Family| {
        f.unit = Some(Unit::Seconds);
        f.scale = 1e-3;
        f
    };
    let bytes = |mut f: Family| {
        f.unit = Some(Unit::Bytes);
        f
    };
    vec![
        family("pipeline", "epochs", "epochs", COUNTER, "Epochs processed."),
        family(
            "pipeline",
            "late_rows",
            "late_rows",
            COUNTER,
            "Rows that arrived after their window closed (they went to dead letters).",
        ),
        family(
            "pipeline",
            "windows_emitted",
            "windows_emitted",
            COUNTER,
            "Windows closed and emitted.",
        ),
        family(
            "pipeline",
            "checkpoints",
            "checkpoints",
            COUNTER,
            "Checkpoints written.",
        ),
        bytes(family(
            "pipeline",
            "checkpoint_bytes_last",
            "checkpoint_size",
            GAUGE,
            "Size of the latest checkpoint.",
        )),
        family(
            "source",
            "rows_in",
            "source_rows",
            COUNTER,
            "Rows read from the source.",
        ),
        bytes(family(
            "source",
            "bytes_in",
            "source",
            COUNTER,
            "Bytes of the records read (Kafka keys and payloads, file lines).",
        )),
        family(
            "source",
            "consumer_lag",
            "source_lag_records",
            GAUGE,
            "Records in the source past what was read (Kafka: consumer lag).",
        ),
        family(
            "source",
            "partition_lag",
            "source_partition_lag_records",
            GAUGE,
            "Records in one partition of the source past what was read (Kafka: consumer lag).",
        ),
        seconds(family(
            "source",
            "partition_watermark_ms",
            "source_partition_watermark",
            GAUGE,
            "One partition's own watermark (its largest event time less the disorder bound), as Unix time.",
        )),
        seconds(family(
            "source",
            "watermark_ms",
            "source_watermark",
            GAUGE,
            "The source's watermark, as Unix time.",
        )),
        seconds(family(
            "source",
            "max_event_time_ms",
            "source_max_event_time",
            GAUGE,
            "The largest event time read, as Unix time.",
        )),
        family(
            "source",
            "exhausted",
            "source_finished",
            GAUGE,
            "1 once the source has ended.",
        ),
        family(
            "query",
            "rows_in",
            "query_rows_in",
            COUNTER,
            "Rows the statement read.",
        ),
        family(
            "query",
            "rows_out",
            "query_rows_out",
            COUNTER,
            "Rows the statement emitted.",
        ),
        family(
            "query",
            "windows_open",
            "query_windows_open",
            GAUGE,
            "Windows the statement holds open.",
        ),
        family(
            "operator",
            "rows_in",
            "operator_rows_in",
            COUNTER,
            "Rows the operator took in (before its input's filters).",
        ),
        family(
            "operator",
            "rows_out",
            "operator_rows_out",
            COUNTER,
            "Rows the operator emitted.",
        ),
        family(
            "operator",
            "late_rows",
            "operator_late_rows",
            COUNTER,
            "Source rows the operator found late (they went to dead letters).",
        ),
        family(
            "operator",
            "state_rows",
            "operator_state_rows",
            GAUGE,
            "Rows of state the operator holds.",
        ),
        bytes(family(
            "operator",
            "state_bytes",
            "operator_state",
            GAUGE,
            "Bytes of memory the operator's state holds.",
        )),
        family(
            "operator",
            "windows_open",
            "operator_windows_open",
            GAUGE,
            "Windows the operator holds open.",
        ),
        family(
            "sink",
            "rows_out",
            "sink_rows",
            COUNTER,
            "Rows written to the sink.",
        ),
        family("model", "calls", "model_calls", COUNTER, "Model runs."),
        family(
            "model",
            "rows",
            "model_rows",
            COUNTER,
            "Rows scored by the model.",
        ),
        family(
            "model",
            "failures",
            "model_failures",
            COUNTER,
            "Model runs that failed.",
        ),
        family(
            "model",
            "timeouts",
            "model_timeouts",
            COUNTER,
            "Model runs that timed out.",
        ),
        family(
            "model",
            "memo_rows",
            "model_memo_hits",
            COUNTER,
            "Rows a replayed epoch read from the inference memo instead of scoring.",
        ),
    ]
}

/// Every histogram series, in the order they are written.
fn histograms() -> Vec<Family> {
    let histogram = |component, metric, name, help| Family {
        unit: Some(Unit::Seconds),
        ..family(component, metric, name, MetricType::Histogram, help)
    };
    vec![
        histogram(
            "pipeline",
            "epoch_seconds",
            "epoch_duration",
            "Time to process an epoch.",
        ),
        histogram(
            "pipeline",
            "checkpoint_seconds",
            "checkpoint_duration",
            "Time to write a checkpoint.",
        ),
        histogram(
            "sink",
            "commit_seconds",
            "sink_commit",
            "Time a sink took to write and commit an epoch.",
        ),
        histogram(
            "model",
            "latency_seconds",
            "model_latency",
            "Time of one model run.",
        ),
    ]
}

/// The label a component's name goes under.
fn label_of(component: &str) -> Option<&'static str> {
    match component {
        "source" => Some("source"),
        "sink" => Some("sink"),
        "query" => Some("query"),
        "operator" => Some("operator"),
        "model" => Some("model"),
        _ => None,
    }
}

fn labels(key: &JobKey, component: &str, name: &str) -> Vec<(String, String)> {
    let mut labels = vec![("pipeline".to_string(), key.pipeline.clone())];
    if let Some(instance) = &key.instance {
        labels.push(("instance".into(), instance.clone()));
    }
    if let Some(label) = label_of(component) {
        labels.push((label.into(), name.to_string()));
    }
    labels
}

/// A copy of the registry's jobs, encoded on a scrape.
#[derive(Debug)]
struct Snapshot(Vec<(JobKey, JobMetrics)>);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let jobs = &self.0;
        {
            let mut metric = encoder.encode_descriptor(
                "volley_pipeline_running",
                "1 while the pipeline runs, 0 once it finished or failed.",
                None,
                GAUGE,
            )?;
            for (key, job) in jobs {
                let mut labels = labels(key, "pipeline", &key.pipeline);
                labels.push(("state".into(), job.state.name().into()));
                let running = u8::from(job.state == super::JobState::Running);
                metric
                    .encode_family(&labels)?
                    .encode_gauge(&i64::from(running))?;
            }
        }
        for family in families() {
            let rows: Vec<_> = jobs
                .iter()
                .flat_map(|(key, job)| job.metrics.iter().map(move |row| (key, row)))
                .filter(|(_, row)| row.component == family.component && row.metric == family.metric)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let name = format!("volley_{}", family.name);
            let mut metric =
                encoder.encode_descriptor(&name, family.help, family.unit.as_ref(), family.kind)?;
            for (key, row) in rows {
                let mut labels = labels(key, row.component, &row.name);
                if let Some(partition) = &row.partition {
                    labels.push(("partition".into(), partition.clone()));
                }
                let value = row.value * family.scale;
                let mut series = metric.encode_family(&labels)?;
                if family.kind == COUNTER {
                    series.encode_counter::<NoLabelSet, _, f64>(&value, None)?;
                } else {
                    series.encode_gauge(&value)?;
                }
            }
        }
        {
            let mut metric = encoder.encode_descriptor(
                "volley_dead_letters",
                "Records and rows sent to dead letters, per source and reason.",
                None,
                COUNTER,
            )?;
            for (key, job) in jobs {
                for ((source, reason), count) in &job.letter_counts {
                    let mut labels = labels(key, "source", source);
                    labels.push(("reason".into(), reason.clone()));
                    metric
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, f64>(count, None)?;
                }
            }
        }
        for family in histograms() {
            let series: Vec<_> = jobs
                .iter()
                .flat_map(|(key, job)| job.histograms.iter().map(move |(s, h)| (key, s, h)))
                .filter(|(_, s, _): &(_, &Series, _)| {
                    s.component == family.component && s.metric == family.metric
                })
                .collect();
            if series.is_empty() {
                continue;
            }
            let name = format!("volley_{}", family.name);
            let mut metric =
                encoder.encode_descriptor(&name, family.help, family.unit.as_ref(), family.kind)?;
            for (key, s, histogram) in series {
                let labels = labels(key, s.component, &s.name);
                metric
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(
                        histogram.sum(),
                        histogram.count(),
                        &histogram.buckets(),
                        None,
                    )?;
            }
        }
        Ok(())
    }
}

/// The name of every metric `/metrics` can expose, as a scrape shows it (`_total` on
/// counters, the unit before it), with its type: `counter`, `gauge` or `histogram`.
pub fn exposed_names() -> Vec<(String, &'static str)> {
    let full = |f: &Family| {
        let unit = f.unit.as_ref().map(|u| format!("_{}", u.as_str()));
        let total = if f.kind == COUNTER { "_total" } else { "" };
        format!("volley_{}{}{total}", f.name, unit.unwrap_or_default())
    };
    let kind = |f: &Family| match f.kind {
        MetricType::Counter => "counter",
        MetricType::Histogram => "histogram",
        _ => "gauge",
    };
    let mut names = vec![
        ("volley_pipeline_running".to_string(), "gauge"),
        ("volley_dead_letters_total".to_string(), "counter"),
    ];
    names.extend(families().iter().map(|f| (full(f), kind(f))));
    names.extend(histograms().iter().map(|f| (full(f), kind(f))));
    names
}

/// Every job of `metrics` in the Prometheus text format (version 0.0.4).
pub fn render(metrics: &Metrics) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(metrics.jobs())));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}
