//! What the dashboard's page reads (`/api/state`): every job's metrics, plan graph, recent
//! checkpoints and dead letters, as JSON.

use serde_json::{Value, json};

use super::{JobMetrics, Metrics, now_ms};

/// How many of the newest dead letters a job's state carries.
const LETTERS_SHOWN: usize = 20;

/// Every job of `metrics` as the dashboard reads it.
pub(crate) fn state_json(metrics: &Metrics) -> Value {
    let jobs: Vec<Value> = metrics
        .jobs()
        .into_iter()
        .map(|(key, job)| {
            let mut value = job_json(&job);
            value["pipeline"] = json!(key.pipeline);
            value["instance"] = json!(key.instance);
            value
        })
        .collect();
    json!({ "now_ms": now_ms(), "jobs": jobs })
}

fn job_json(job: &JobMetrics) -> Value {
    let metrics: Vec<Value> = job
        .metrics
        .iter()
        .map(|m| json!({"component": m.component, "name": m.name, "metric": m.metric, "value": finite(m.value)}))
        .collect();
    let checkpoints: Vec<Value> = job
        .checkpoints
        .iter()
        .map(|c| json!({"epoch": c.epoch, "written_at_ms": c.written_at_ms, "duration_ms": c.duration_ms, "bytes": c.bytes}))
        .collect();
    let letters: Vec<Value> = job
        .dead_letters
        .iter()
        .rev()
        .take(LETTERS_SHOWN)
        .map(|l| json!({"epoch": l.epoch, "source": l.source, "reason": l.reason, "position": l.position, "payload": l.payload, "at_ms": l.at_ms}))
        .collect();
    let graph = job.graph.as_ref().map(|g| {
        json!({
            "nodes": g.nodes.iter().map(|n| json!({"id": n.id, "kind": n.kind, "label": n.label, "detail": n.detail})).collect::<Vec<_>>(),
            "edges": g.edges,
        })
    });
    json!({
        "state": job.state.name(),
        "epoch": job.epoch,
        "started_at_ms": job.started_at_ms,
        "updated_at_ms": job.updated_at_ms,
        "metrics": metrics,
        "checkpoints": checkpoints,
        "dead_letters": letters,
        "dead_letter_total": job.letter_counts.values().sum::<u64>(),
        "graph": graph,
    })
}

/// JSON has no NaN or infinity: such a value reads as null.
fn finite(value: f64) -> Value {
    if value.is_finite() {
        json!(value)
    } else {
        Value::Null
    }
}
