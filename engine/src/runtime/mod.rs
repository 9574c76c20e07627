//! The epoch loop: pull a micro-batch, run every INSERT over it, advance watermarks, emit closed
//! windows, write every sink once per epoch, publish the live tables.
//!
//! A [`StreamJob`] is split by role: [`ingest`] takes each source's micro-batch into the
//! loop's view of it; [`execute`] runs the INSERTs; [`output`] writes sinks, live tables and
//! dead letters; [`recovery`] restores, replays and checkpoints.

mod execute;
mod ingest;
mod output;
mod recovery;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use volley_connectors::dead_letter::DeadLetterWriter;
use volley_connectors::live::LiveTables;
use volley_connectors::{Position, Sink, Source};
use volley_udfs::model::ModelSet;

use crate::checkpoint::Checkpointer;
use crate::checkpoint::failpoint;
use crate::checkpoint::manifest::{EpochLog, SourceRange};
use crate::driver::{BatchSizing, EpochInput, EpochRange, spawn_driver};
use crate::error::Result;
use crate::status::StatusLine;
use volley_operators::QueryRunner;

pub use crate::job::{Restored, RunSummary, SourceRuntime};

/// Everything a streaming run needs, wired together.
#[derive(Debug)]
pub struct StreamJob {
    /// Source runtimes, in the same order as `readers`.
    pub(crate) sources: Vec<SourceRuntime>,
    /// The source readers (moved to the driver task when the run starts).
    pub(crate) readers: Vec<Box<dyn Source>>,
    /// One runner per INSERT.
    pub(crate) queries: Vec<QueryRunner>,
    /// Sinks by table name.
    pub(crate) sinks: BTreeMap<String, Box<dyn Sink>>,
    /// Micro-batch row bound.
    pub(crate) sizing: BatchSizing,
    /// Micro-batch time bound.
    pub(crate) max_delay: Duration,
    /// Live status line (None = quiet).
    pub(crate) status: Option<StatusLine>,
    /// Totals so far.
    pub(crate) summary: RunSummary,
    /// Dead-letter writers by source.
    pub(crate) dead_letters: HashMap<String, DeadLetterWriter>,
    /// The last epoch processed.
    pub(crate) epoch: u64,
    /// Checkpointing, if on.
    pub(crate) checkpoints: Option<Checkpointer>,
    /// The last epoch each sink reports it has committed (sinks that can tell).
    pub(crate) committed: HashMap<String, u64>,
    /// Logged epochs to re-read first (set by a restore).
    pub(crate) replay: Vec<EpochRange>,
    /// The pipeline's fingerprint, recorded in checkpoints.
    pub(crate) fingerprint: String,
    /// The pipeline's statements that decide its results, recorded in checkpoints.
    pub(crate) statements: Vec<String>,
    /// Per source (in job order): how long a partition may give no rows before the watermark
    /// leaves it out.
    pub(crate) idle_timeouts: Vec<Duration>,
    /// The share of the pipeline this job is, when several jobs run it (group mode: the source
    /// partition, such as `p3`); names its dead-letter files.
    pub(crate) instance: Option<String>,
    /// Told about every checkpoint written.
    pub(crate) on_checkpoint: Option<CheckpointHook>,
    /// Identifies the pipeline to its sinks and dead-letter tables.
    pub(crate) pipeline_id: String,
    /// The models `predict()` calls, with the rows it left out this epoch.
    pub(crate) models: Arc<ModelSet>,
    /// Where dead letters go, by letter source (a source table, or `model_<name>`).
    pub(crate) letter_destinations: BTreeMap<String, String>,
    /// [`StreamJob::prepare`] has run.
    pub(crate) prepared: bool,
    /// Live tables, published once every sink has written an epoch (None: not kept).
    pub(crate) live: Option<LiveTables>,
    /// Reports this job's metrics to the process's registry (the `system` tables).
    pub(crate) metrics: Option<crate::metrics::JobReporter>,
    /// The tables queries join with the streams, loaded once (or refreshed by version).
    pub(crate) lookups: crate::lookup::Lookups,
    /// Each source's `max_dead_letters`: the run fails when more of its records went to dead
    /// letters.
    pub(crate) letter_limits: BTreeMap<String, volley_sql::DeadLetterLimit>,
    /// For each logged epoch to re-read: the lookup table versions it joined.
    pub(crate) replay_lookups: BTreeMap<u64, Vec<crate::checkpoint::manifest::LookupVersion>>,
}

/// Called after each checkpoint with its epoch and every source's position (in job order),
/// for example to publish read offsets to monitoring.
#[derive(Clone)]
pub struct CheckpointHook(pub Arc<CheckpointFn>);

/// What a [`CheckpointHook`] calls: `(epoch, positions)`.
pub type CheckpointFn = dyn Fn(u64, &[Position]) + Send + Sync;

impl std::fmt::Debug for CheckpointHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckpointHook")
    }
}

impl StreamJob {
    /// Totals so far (after [`StreamJob::prepare`], what a restored checkpoint held).
    pub fn summary(&self) -> &RunSummary {
        &self.summary
    }

    /// The last epoch processed (after a restore, the checkpoint's).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The live tables it publishes (None: not kept).
    pub fn live(&self) -> Option<&LiveTables> {
        self.live.as_ref()
    }

    /// The tables its queries join the streams with.
    pub fn lookups(&self) -> &crate::lookup::Lookups {
        &self.lookups
    }

    /// The models `predict()` calls.
    pub fn models(&self) -> &Arc<ModelSet> {
        &self.models
    }

    /// Rows of operator state held, over every INSERT.
    pub fn state_rows(&self) -> usize {
        self.queries.iter().map(QueryRunner::state_rows).sum()
    }

    /// Replaces every sink with what `wrap` makes of it (by table name), such as a sink that
    /// times its writes.
    pub fn wrap_sinks(&mut self, mut wrap: impl FnMut(&str, Box<dyn Sink>) -> Box<dyn Sink>) {
        for (name, sink) in std::mem::take(&mut self.sinks) {
            let wrapped = wrap(&name, sink);
            self.sinks.insert(name, wrapped);
        }
    }

    /// The row bound small source batches are coalesced up to: the largest model `max_rows`,
    /// and at least DataFusion's batch size.
    fn coalesce_rows(&self) -> usize {
        self.models
            .iter()
            .map(|m| m.max_rows())
            .fold(crate::coalesce::DEFAULT_ROWS, usize::max)
    }

    /// Runs until every source is exhausted (forever for unbounded sources).
    ///
    /// # Errors
    /// Source, sink and execution failures.
    pub async fn run(self) -> Result<RunSummary> {
        let (_keep, stop) = tokio::sync::watch::channel(false);
        self.run_until(stop).await
    }

    /// Runs until every source is exhausted or `stop` turns true. A stop is taken between
    /// epochs: the epoch in progress completes, a checkpoint is written for it when checkpoints
    /// are on (so whoever resumes the pipeline replays nothing), and the sinks are closed.
    ///
    /// # Errors
    /// Source, sink and execution failures; [`EngineError::DeadLetters`] when a source sent
    /// more of its records to dead letters than its `max_dead_letters` allows (the sinks hold
    /// what was written).
    ///
    /// [`EngineError::DeadLetters`]: crate::error::EngineError::DeadLetters
    pub async fn run_until(self, stop: tokio::sync::watch::Receiver<bool>) -> Result<RunSummary> {
        let limits = self.letter_limits.clone();
        let summary = self.run_reporting(stop).await?;
        crate::job::letters::check(&limits, &summary.sources)?;
        Ok(summary)
    }

    /// Runs to the end of input like [`StreamJob::run`], but a source's dead letters past its
    /// limit are left to the caller to judge (`verify` reports them beside the comparison).
    ///
    /// # Errors
    /// Source, sink and execution failures.
    pub async fn run_to_end_unjudged(self) -> Result<RunSummary> {
        let (_keep, stop) = tokio::sync::watch::channel(false);
        self.run_reporting(stop).await
    }

    async fn run_reporting(self, stop: tokio::sync::watch::Receiver<bool>) -> Result<RunSummary> {
        let finish = self
            .metrics
            .as_ref()
            .map(crate::metrics::JobReporter::finisher);
        let result = self.run_until_inner(stop).await;
        if let Some(finish) = finish {
            finish.report(if result.is_ok() {
                crate::metrics::JobState::Finished
            } else {
                crate::metrics::JobState::Failed
            });
        }
        result
    }

    async fn run_until_inner(
        mut self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<RunSummary> {
        self.prepare().await?;
        if let Some(status) = &mut self.status {
            // Rates count the rows this run reads, not those a restored checkpoint had read.
            status.rebase(self.sources.iter().map(|s| s.rows).sum());
        }
        let readers = std::mem::take(&mut self.readers);
        let exhausted = self.sources.iter().map(|s| s.exhausted).collect();
        let replay = std::mem::take(&mut self.replay);
        let mut input = spawn_driver(
            readers,
            self.sizing.clone(),
            self.max_delay,
            replay,
            exhausted,
            self.idle_timeouts.clone(),
            self.coalesce_rows(),
        );
        loop {
            if *stop.borrow() {
                self.checkpoint_if_behind().await?;
                break;
            }
            let next = tokio::select! {
                next = input.recv() => next,
                _ = stop.changed() => continue,
            };
            let Some(next) = next else { break };
            if self.run_epoch(next?).await? {
                break;
            }
        }
        drop(input);
        for sink in self.sinks.values_mut() {
            sink.close().await?;
        }
        if let Some(status) = &mut self.status {
            status.finish(self.epoch, &self.sources, &self.queries, &self.summary);
        }
        self.summary.epochs = self.epoch;
        Ok(self.summary)
    }

    /// Processes one micro-batch of input; returns true once every source has ended and all
    /// state is flushed. Input with no rows and no newly ended source is not an epoch.
    ///
    /// # Errors
    /// Source, sink and execution failures.
    pub async fn run_epoch(&mut self, next: EpochInput) -> Result<bool> {
        let has_rows = next
            .sources
            .iter()
            .any(|s| s.batches.iter().any(|b| b.num_rows() > 0));
        let ended = next
            .sources
            .iter()
            .zip(&self.sources)
            .any(|(e, s)| e.exhausted && !s.exhausted);
        // Rejected records moved a source's position: their epoch must be logged and their
        // dead letters written, even with no good row.
        let rejected = next.sources.iter().any(|s| !s.rejected.is_empty());
        // A partition going idle (or waking) moves the watermark: that is an epoch too.
        let idle_changed = next
            .sources
            .iter()
            .zip(&self.sources)
            .any(|(e, s)| s.event_time.is_some() && e.idle != s.idle);
        if !has_rows && !ended && !rejected && !idle_changed {
            if let Some(status) = &mut self.status {
                status.tick(self.epoch, &self.sources, &self.queries, &self.summary);
            }
            return Ok(false);
        }
        self.epoch += 1;
        if let Some(reporter) = &mut self.metrics {
            reporter.epoch_started();
        }
        self.lookups_for_epoch(next.replayed).await?;
        self.begin_memo(next.replayed).await?;
        if next.replayed {
            self.summary.epochs_replayed += 1;
        } else if let Some(checkpoints) = &self.checkpoints {
            let log = EpochLog {
                epoch: self.epoch,
                sources: self
                    .sources
                    .iter()
                    .zip(&next.sources)
                    .map(|(s, e)| SourceRange {
                        name: s.name.clone(),
                        start: e.start.clone(),
                        end: e.end.clone(),
                        exhausted: e.exhausted,
                        idle: e.idle.clone(),
                    })
                    .collect(),
                lookups: self.lookups.versions(),
            };
            checkpoints.store.log_epoch(&log).await?;
            failpoint::hit("after_epoch_log");
        }
        let mut summary = std::mem::take(&mut self.summary);
        let mut dead_letters = std::mem::take(&mut self.dead_letters);
        let done = self
            .process_epoch(self.epoch, next, &mut summary, &mut dead_letters)
            .await;
        self.summary = summary;
        self.dead_letters = dead_letters;
        let done = done?;
        failpoint::hit("after_sink_commit_before_checkpoint");
        if self
            .checkpoints
            .as_ref()
            .is_some_and(|c| c.due(self.epoch, done))
        {
            self.checkpoint().await?;
        }
        if let Some(status) = &mut self.status {
            status.tick(self.epoch, &self.sources, &self.queries, &self.summary);
        }
        if let Some(reporter) = &mut self.metrics {
            reporter.epoch_finished(
                self.epoch,
                &self.sources,
                &self.queries,
                &self.summary,
                &self.models,
            );
        }
        Ok(done)
    }

    /// Brings the lookup tables to the versions this epoch joins: a replayed epoch the ones it
    /// joined the first time, a new one the newest its `refresh` has found. Joins over a
    /// table whose rows changed hash them again.
    async fn lookups_for_epoch(&mut self, replayed: bool) -> Result<()> {
        if self.lookups.is_empty() {
            return Ok(());
        }
        let changed = if replayed {
            match self.replay_lookups.remove(&self.epoch) {
                Some(versions) => self.lookups.pin(&versions).await?,
                None => Vec::new(),
            }
        } else {
            self.lookups.refresh_due().await?
        };
        for table in &changed {
            for query in &mut self.queries {
                query.reset_lookup(table)?;
            }
        }
        Ok(())
    }

    /// Starts the epoch's inference memo: recorded when checkpoints are on and a model keeps
    /// one; a replayed epoch first reads what its earlier run recorded.
    async fn begin_memo(&mut self, replayed: bool) -> Result<()> {
        let record = self.models.iter().any(|m| m.memo());
        let Some(checkpoints) = self.checkpoints.as_ref().filter(|_| record) else {
            self.models.begin_epoch(self.epoch, false, Vec::new());
            return Ok(());
        };
        let replay = if replayed {
            checkpoints.store.memo(self.epoch).await?
        } else {
            Vec::new()
        };
        for refused in self.models.begin_epoch(self.epoch, true, replay) {
            tracing::warn!(
                model = %refused.model,
                epoch = self.epoch,
                sha256 = %refused.sha256,
                "the inference memo of this epoch was written by another model file (or a model no longer declared or memoized): its rows are scored again"
            );
        }
        Ok(())
    }

    /// Writes the epoch's inference memo durably, before any sink writes the epoch.
    async fn write_memo(&mut self, epoch: u64, summary: &mut RunSummary) -> Result<()> {
        let memos = self.models.finish_epoch();
        let Some(checkpoints) = self.checkpoints.as_ref().filter(|_| !memos.is_empty()) else {
            return Ok(());
        };
        summary.memo_bytes += checkpoints.store.put_memo(epoch, &memos).await?;
        summary.memo_epochs += 1;
        Ok(())
    }

    /// One epoch: returns true when every source has ended and everything is flushed.
    async fn process_epoch(
        &mut self,
        epoch: u64,
        input: EpochInput,
        summary: &mut RunSummary,
        dead_letters: &mut HashMap<String, DeadLetterWriter>,
    ) -> Result<bool> {
        let mut letters = BTreeMap::new();
        let fresh = self.ingest(input.sources, summary, &mut letters)?;
        let all_done = self.sources.iter().all(|s| s.exhausted);
        let outputs = self
            .execute(&fresh, all_done, summary, &mut letters)
            .await?;
        self.write_memo(epoch, summary).await?;
        self.output(epoch, outputs, summary).await?;
        self.write_letters(epoch, letters, dead_letters).await?;
        Ok(all_done)
    }
}
