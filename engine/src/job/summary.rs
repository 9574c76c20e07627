//! A run's totals, carried across restarts by checkpoints.

use std::collections::BTreeMap;

/// Totals for a finished run.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    /// Epochs processed (with input).
    pub epochs: u64,
    /// Rows read from all sources.
    pub rows_in: u64,
    /// Rows written per sink.
    pub rows_out: BTreeMap<String, u64>,
    /// Rows sent to dead letters because their window had already been emitted.
    pub late_rows: u64,
    /// Records sources read but could not decode (sent to dead letters).
    pub rejected_records: u64,
    /// Windows emitted.
    pub windows_emitted: u64,
    /// Groups of keyed aggregates forgotten by `state_ttl`.
    pub groups_expired: u64,
    /// Windows emitted again, corrected by late rows within `allowed_lateness`.
    pub windows_corrected: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Epoch of the last checkpoint.
    pub last_checkpoint_epoch: u64,
    /// How long the last checkpoint took (ms).
    pub last_checkpoint_ms: u64,
    /// Bytes the last checkpoint wrote.
    pub last_checkpoint_bytes: u64,
    /// Logged epochs re-read after a restore.
    pub epochs_replayed: u64,
    /// Rows not written again because their sink had already committed the epoch.
    pub rows_skipped: u64,
    /// Rows `predict()` left out (a NULL input, or a model failure), sent to dead letters.
    pub rejected_by_models: u64,
    /// Epochs whose inference memo was written (before their sinks wrote).
    pub memo_epochs: u64,
    /// Bytes the inference memos of those epochs took.
    pub memo_bytes: u64,
    /// Per sink: the epochs that wrote rows to it (a restore checks the sink still holds them).
    pub sink_epochs: BTreeMap<String, SinkEpochs>,
    /// What each source sent to dead letters, by source (including the runs before a restore).
    pub sources: BTreeMap<String, super::SourceLetters>,
    /// What each model has done this run, by name (as of the last epoch).
    pub models: Vec<(String, volley_udfs::model::ModelStats)>,
    /// The checkpoint this run started from, when it restored one: the totals above include
    /// what the runs before it did.
    pub restored: Option<Restored>,
}

/// The epochs that wrote rows to one sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SinkEpochs {
    /// How many epochs wrote rows.
    pub epochs: u64,
    /// The last of them.
    pub last: u64,
}

/// What a run restored before its first epoch.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// The checkpoint's epoch.
    pub epoch: u64,
    /// Where it was read from.
    pub dir: String,
    /// Rows read before this run.
    pub rows_in: u64,
    /// Rows written per sink before this run.
    pub rows_out: BTreeMap<String, u64>,
    /// Every source had ended by then: nothing is left to read.
    pub finished: bool,
    /// Logged epochs after the checkpoint, re-read first.
    pub replaying: usize,
}

impl RunSummary {
    /// Rows written to `sink` by this run (the totals less what a restored checkpoint held).
    pub fn rows_out_this_run(&self, sink: &str) -> u64 {
        let total = self.rows_out.get(sink).copied().unwrap_or(0);
        let before = self
            .restored
            .as_ref()
            .and_then(|r| r.rows_out.get(sink).copied())
            .unwrap_or(0);
        total.saturating_sub(before)
    }

    /// Rows this run read from its sources (the totals less what a restored checkpoint held).
    pub fn rows_in_this_run(&self) -> u64 {
        let before = self.restored.as_ref().map_or(0, |r| r.rows_in);
        self.rows_in.saturating_sub(before)
    }

    /// A warning when this run read rows but no sink received any: a filter or join that keeps
    /// nothing, rows that were all late, or windows the watermark never closed look like a
    /// quiet success otherwise.
    pub fn nothing_written_warning(&self) -> Option<String> {
        let read = self.rows_in_this_run();
        let written: u64 = self
            .rows_out
            .keys()
            .map(|s| self.rows_out_this_run(s))
            .sum();
        if read == 0 || written > 0 {
            return None;
        }
        let mut why = Vec::new();
        if self.late_rows > 0 {
            why.push(format!("{} rows were late", self.late_rows));
        }
        if self.rejected_records > 0 {
            why.push(format!(
                "{} records could not be decoded",
                self.rejected_records
            ));
        }
        if self.rejected_by_models > 0 {
            why.push(format!(
                "predict() left out {} rows",
                self.rejected_by_models
            ));
        }
        let sinks: Vec<&str> = self.rows_out.keys().map(String::as_str).collect();
        let why = if why.is_empty() {
            "the queries' filters and joins kept no row, or every row is still in a window the \
             watermark has not closed (a window is written once the watermark passes its end)"
                .to_string()
        } else {
            why.join(", ")
        };
        Some(format!(
            "{read} rows were read but no sink received a row ({}): {why}",
            if sinks.is_empty() {
                "the pipeline has no sink".to_string()
            } else {
                sinks.join(", ")
            }
        ))
    }
}

/// One model's work as text: `fraud: 12 calls, 98304 rows (8192 per call p50, 8192 max),
/// 1.2 ms p50, 3.4 ms p99, 0 failures, 0 timeouts, 0 rows from the memo, 1 in flight at most`.
pub fn model_line(name: &str, stats: &volley_udfs::model::ModelStats) -> String {
    format!(
        "{name}: {} calls, {} rows ({} per call p50, {} max), {:.3} ms p50, {:.3} ms p99, {} failures, {} timeouts, {} rows from the memo, {} in flight at most",
        stats.calls,
        stats.rows,
        stats.rows_per_call_p50,
        stats.rows_per_call_max,
        stats.latency_p50_seconds * 1e3,
        stats.latency_p99_seconds * 1e3,
        stats.failures,
        stats.timeouts,
        stats.memo_rows,
        stats.peak_in_flight
    )
}
