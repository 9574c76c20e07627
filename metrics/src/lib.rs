//! The process's metrics registry: what every job (group workers included) reports once per
//! epoch, per checkpoint and per dead letter, read by the `system` tables of Flight SQL.
//!
//! Jobs write; queries read a copy. Neither holds the lock for more than a copy of a few
//! hundred rows, so a query never holds up an epoch.

mod dashboard;
mod histogram;
pub mod http;
pub mod prometheus;
mod tables;

pub use histogram::{Histogram, LATENCY_BUCKETS};
pub use tables::{SYSTEM_TABLES, SystemSchema};

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

/// How many recent epoch durations a job keeps (for p50 / p99).
pub const EPOCH_HISTORY: usize = 1024;
/// How many recent checkpoints a job keeps.
pub const CHECKPOINT_HISTORY: usize = 100;
/// How many recent dead letters a job keeps.
pub const LETTER_HISTORY: usize = 1000;

/// Which job: the pipeline and, in group mode, the worker instance.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct JobKey {
    /// The pipeline id.
    pub pipeline: String,
    /// The group worker, when there are several.
    pub instance: Option<String>,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Preparing or processing epochs.
    Running,
    /// Every source ended and the sinks closed, or stopped on request.
    Finished,
    /// Stopped on an error.
    Failed,
}

impl JobState {
    /// The name `system.pipelines` shows.
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed => "failed",
        }
    }
}

/// One metric of one part of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    /// `pipeline`, `source`, `query`, `sink` or `model`.
    pub component: &'static str,
    /// The table, statement or model name.
    pub name: String,
    /// What is measured, such as `rows_in` or `epoch_ms_p99`.
    pub metric: &'static str,
    /// The source partition it is of (Kafka: the partition number), for per-partition
    /// metrics.
    pub partition: Option<String>,
    /// Its value.
    pub value: f64,
}

/// One checkpoint a job wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointRow {
    /// Its epoch.
    pub epoch: u64,
    /// When it was written, in milliseconds since the Unix epoch.
    pub written_at_ms: i64,
    /// How long it took.
    pub duration_ms: u64,
    /// How many bytes it wrote.
    pub bytes: u64,
}

/// One dead letter a job wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct LetterRow {
    /// The epoch it was written in.
    pub epoch: u64,
    /// The table it came from.
    pub source: String,
    /// Why it was rejected.
    pub reason: String,
    /// Where it was in the source (such as `partition 2 offset 1041`), when known.
    pub position: Option<String>,
    /// The record: its raw text, or the row as JSON.
    pub payload: String,
    /// When it was written, in milliseconds since the Unix epoch.
    pub at_ms: i64,
}

/// What the registry holds for one job.
#[derive(Debug, Clone)]
pub struct JobMetrics {
    /// The pipeline's statements, as written.
    pub statements: Vec<String>,
    /// When the job started, in milliseconds since the Unix epoch.
    pub started_at_ms: i64,
    /// Where it is.
    pub state: JobState,
    /// The last epoch it processed.
    pub epoch: u64,
    /// When it last reported, in milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
    /// Its metrics as of its last epoch.
    pub metrics: Vec<MetricRow>,
    /// Its recent checkpoints, oldest first.
    pub checkpoints: VecDeque<CheckpointRow>,
    /// Its recent dead letters, oldest first.
    pub dead_letters: VecDeque<LetterRow>,
    /// Every dead letter it wrote, counted per `(source, reason)`.
    pub letter_counts: BTreeMap<(String, String), u64>,
    /// Its latency histograms, per series.
    pub histograms: BTreeMap<Series, Histogram>,
    /// Its plan as a graph, once it has run an epoch.
    pub graph: Option<PlanGraph>,
}

/// A job's plan as the dashboard draws it: sources and lookup tables, statements (with their
/// stateful operators and models), sinks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanGraph {
    /// Every node, sources first, sinks last.
    pub nodes: Vec<GraphNode>,
    /// `(from, to)` node ids.
    pub edges: Vec<(String, String)>,
}

/// One node of a [`PlanGraph`].
#[derive(Debug, Clone, PartialEq)]
pub struct GraphNode {
    /// Unique in the graph, such as `source:rides`.
    pub id: String,
    /// `source`, `lookup`, `query` or `sink`.
    pub kind: &'static str,
    /// What it is called: a table name, or `INSERT INTO t (line 3)`.
    pub label: String,
    /// More lines: a statement's operators and models.
    pub detail: Vec<String>,
}

/// What a histogram measures: a part of a job and what of it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Series {
    /// `pipeline`, `source`, `query`, `sink` or `model`.
    pub component: &'static str,
    /// The table, statement or model name.
    pub name: String,
    /// What is measured, such as `commit_seconds`.
    pub metric: &'static str,
}

/// The registry: one per process, shared by every job of it.
#[derive(Debug, Default)]
pub struct Metrics {
    jobs: Mutex<BTreeMap<JobKey, JobMetrics>>,
}

impl Metrics {
    /// The registry of this process.
    pub fn global() -> Arc<Metrics> {
        static GLOBAL: OnceLock<Arc<Metrics>> = OnceLock::new();
        Arc::clone(GLOBAL.get_or_init(|| Arc::new(Metrics::default())))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<JobKey, JobMetrics>> {
        // Every update replaces or appends whole rows: a panic cannot leave one half written.
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a job starting now (a job of the same key is replaced: a restart).
    pub fn start(&self, key: JobKey, statements: Vec<String>) {
        let now = now_ms();
        self.lock().insert(
            key,
            JobMetrics {
                statements,
                started_at_ms: now,
                state: JobState::Running,
                epoch: 0,
                updated_at_ms: now,
                metrics: Vec::new(),
                checkpoints: VecDeque::new(),
                dead_letters: VecDeque::new(),
                letter_counts: BTreeMap::new(),
                histograms: BTreeMap::new(),
                graph: None,
            },
        );
    }

    /// Runs `update` on the job's entry, when it is registered.
    pub fn update(&self, key: &JobKey, update: impl FnOnce(&mut JobMetrics)) {
        if let Some(job) = self.lock().get_mut(key) {
            update(job);
            job.updated_at_ms = now_ms();
        }
    }

    /// A copy of every job's entry.
    pub fn jobs(&self) -> Vec<(JobKey, JobMetrics)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Appends `row` to `ring`, dropping the oldest beyond `cap`.
pub fn push_bounded<T>(ring: &mut VecDeque<T>, row: T, cap: usize) {
    ring.push_back(row);
    while ring.len() > cap {
        ring.pop_front();
    }
}
