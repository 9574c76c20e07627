//! The epoch loop: pull a micro-batch, run every INSERT over it, advance watermarks, emit closed
//! windows, write every sink once per epoch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use volley_connectors::dead_letter::{DeadLetterBatch, DeadLetterWriter};
use volley_connectors::live::LiveTables;
use volley_connectors::{Position, Sink, Source};
use volley_sql::stream::EpochSlot;
use volley_udfs::model::ModelSet;

use crate::checkpoint::manifest::{
    EpochLog, Manifest, QueryCheckpoint, SourceCheckpoint, SourceRange, Totals,
};
use crate::checkpoint::{Checkpointer, failpoint};
use crate::driver::{BatchSizing, EpochInput, EpochRange, spawn_driver};
use crate::error::{EngineError, Result};
use crate::query::QueryRunner;
use crate::status::StatusLine;
use crate::watermark::EventTimeTracker;

/// A source as the loop tracks it.
#[derive(Debug)]
pub struct SourceRuntime {
    /// Table name.
    pub name: String,
    /// Where its epoch batches go.
    pub slot: Arc<EpochSlot>,
    /// Event-time progress (None: the source has no watermark).
    pub event_time: Option<EventTimeTracker>,
    /// Partitions the last epoch found idle.
    pub idle: BTreeSet<String>,
    /// Whether the source has ended.
    pub exhausted: bool,
    /// Rows read.
    pub rows: u64,
    /// Position after the last epoch processed.
    pub position: Position,
    /// The source's progress reporting, if it has any.
    pub monitor: Option<Arc<dyn volley_connectors::SourceMonitor>>,
}

impl SourceRuntime {
    /// Watermark in nanoseconds: `i64::MAX` once exhausted; `None` while unknown.
    pub fn watermark(&self) -> Option<i64> {
        if self.exhausted {
            return Some(i64::MAX);
        }
        self.event_time.as_ref()?.watermark()
    }

    /// Records past this source's position, when it knows (Kafka: consumer lag).
    pub fn lag(&self) -> Option<u64> {
        self.monitor.as_ref()?.lag(&self.position)
    }

    /// The largest event time seen (nanoseconds).
    pub fn max_event_time(&self) -> Option<i64> {
        self.event_time.as_ref()?.max_event_time()
    }

    /// Takes an epoch's batches (with the partition of each, when the source has partitions)
    /// and moves the watermark, leaving out the partitions the epoch found idle.
    fn observe(
        &mut self,
        batches: &[RecordBatch],
        partitions: &[Option<String>],
        idle: &BTreeSet<String>,
    ) -> Result<()> {
        self.rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        let Some(tracker) = &mut self.event_time else {
            return Ok(());
        };
        for (i, batch) in batches.iter().enumerate() {
            let partition = partitions.get(i).and_then(Option::as_deref);
            tracker.observe(batch, partition)?;
        }
        tracker.advance(idle);
        self.idle.clone_from(idle);
        Ok(())
    }
}

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
    /// The checkpoint this run started from, when it restored one: the totals above include
    /// what the runs before it did.
    pub restored: Option<Restored>,
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
}

/// Everything a streaming run needs, wired together.
#[derive(Debug)]
pub struct StreamJob {
    /// Source runtimes, in the same order as `readers`.
    pub sources: Vec<SourceRuntime>,
    /// The source readers (moved to the driver task when the run starts).
    pub readers: Vec<Box<dyn Source>>,
    /// One runner per INSERT.
    pub queries: Vec<QueryRunner>,
    /// Sinks by table name.
    pub sinks: BTreeMap<String, Box<dyn Sink>>,
    /// Micro-batch row bound.
    pub sizing: BatchSizing,
    /// Micro-batch time bound.
    pub max_delay: Duration,
    /// Live status line (None = quiet).
    pub status: Option<StatusLine>,
    /// Totals so far.
    pub summary: RunSummary,
    /// Dead-letter writers by source.
    pub dead_letters: HashMap<String, DeadLetterWriter>,
    /// The last epoch processed.
    pub epoch: u64,
    /// Checkpointing, if on.
    pub checkpoints: Option<Checkpointer>,
    /// The last epoch each sink reports it has committed (sinks that can tell).
    pub committed: HashMap<String, u64>,
    /// Logged epochs to re-read first (set by a restore).
    pub replay: Vec<EpochRange>,
    /// The pipeline's fingerprint, recorded in checkpoints.
    pub fingerprint: String,
    /// Per source (in job order): how long a partition may give no rows before the watermark
    /// leaves it out.
    pub idle_timeouts: Vec<Duration>,
    /// The share of the pipeline this job is, when several jobs run it (group mode: the source
    /// partition, such as `p3`); names its dead-letter files.
    pub instance: Option<String>,
    /// Told about every checkpoint written.
    pub on_checkpoint: Option<CheckpointHook>,
    /// Identifies the pipeline to its sinks and dead-letter tables.
    pub pipeline_id: String,
    /// The models `predict()` calls, with the rows it left out this epoch.
    pub models: Arc<ModelSet>,
    /// Where dead letters go, by letter source (a source table, or `model_<name>`).
    pub letter_destinations: BTreeMap<String, String>,
    /// [`StreamJob::prepare`] has run.
    pub prepared: bool,
    /// Live tables, published once every sink has written an epoch (None: not kept).
    pub live: Option<LiveTables>,
    /// Reports this job's metrics to the process's registry (the `system` tables).
    pub metrics: Option<crate::metrics::JobReporter>,
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
    /// Source, sink and execution failures.
    pub async fn run_until(self, stop: tokio::sync::watch::Receiver<bool>) -> Result<RunSummary> {
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
            .batches
            .iter()
            .any(|b| b.iter().any(|b| b.num_rows() > 0));
        let ended = next
            .exhausted
            .iter()
            .zip(&self.sources)
            .any(|(e, s)| *e && !s.exhausted);
        // Rejected records moved a source's position: their epoch must be logged and their
        // dead letters written, even with no good row.
        let rejected = next.rejected.iter().any(|r| !r.is_empty());
        // A partition going idle (or waking) moves the watermark: that is an epoch too.
        let idle_changed = next
            .idle
            .iter()
            .zip(&self.sources)
            .any(|(idle, s)| s.event_time.is_some() && *idle != s.idle);
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
        if next.replayed {
            self.summary.epochs_replayed += 1;
        } else if let Some(checkpoints) = &self.checkpoints {
            let log = EpochLog {
                epoch: self.epoch,
                sources: self
                    .sources
                    .iter()
                    .zip(&next.ranges)
                    .zip(&next.exhausted)
                    .enumerate()
                    .map(|(i, ((s, (start, end)), exhausted))| SourceRange {
                        name: s.name.clone(),
                        start: start.clone(),
                        end: end.clone(),
                        exhausted: *exhausted,
                        idle: next.idle.get(i).cloned().unwrap_or_default(),
                    })
                    .collect(),
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

    /// One epoch: returns true when every source has ended and everything is flushed.
    async fn process_epoch(
        &mut self,
        epoch: u64,
        input: EpochInput,
        summary: &mut RunSummary,
        dead_letters: &mut HashMap<String, DeadLetterWriter>,
    ) -> Result<bool> {
        let mut fresh: Vec<bool> = Vec::with_capacity(self.sources.len());
        let mut fresh_rows: HashMap<String, u64> = HashMap::new();
        let mut letters: BTreeMap<String, Vec<DeadLetterBatch>> = BTreeMap::new();
        for (source, records) in self.sources.iter().zip(&input.rejected) {
            if !records.is_empty() {
                summary.rejected_records += records.len() as u64;
                letters
                    .entry(source.name.clone())
                    .or_default()
                    .push(DeadLetterBatch::rejected(&source.name, records)?);
            }
        }
        let mut ends = input.ranges.into_iter().map(|(_, end)| end);
        let mut partitions = input.partitions.into_iter();
        let mut idle = input.idle.into_iter();
        for ((source, batches), exhausted) in self
            .sources
            .iter_mut()
            .zip(input.batches)
            .zip(input.exhausted)
        {
            if let Some(end) = ends.next() {
                source.position = end;
            }
            let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
            fresh_rows.insert(source.name.clone(), rows);
            let has = rows > 0;
            let tags = partitions.next().unwrap_or_default();
            source.observe(&batches, &tags, &idle.next().unwrap_or_default())?;
            source.slot.set_from_partitions(batches, tags);
            source.exhausted = exhausted;
            fresh.push(has);
        }
        summary.rows_in = self.sources.iter().map(|s| s.rows).sum();
        let all_done = self.sources.iter().all(|s| s.exhausted);
        let watermarks: HashMap<String, Option<i64>> = self
            .sources
            .iter()
            .map(|s| (s.name.clone(), s.watermark()))
            .collect();
        let fresh_sources: Vec<&str> = self
            .sources
            .iter()
            .zip(&fresh)
            .filter(|(_, f)| **f)
            .map(|(s, _)| s.name.as_str())
            .collect();

        let mut outputs: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
        for (index, query) in self.queries.iter_mut().enumerate() {
            let reads_fresh = query
                .plan()
                .sources
                .iter()
                .any(|s| fresh_sources.contains(&s.as_str()));
            let mut parts = Vec::new();
            if reads_fresh {
                parts.push(query.process_epoch().await?);
            }
            parts.push(query.advance(&watermarks).await?);
            if all_done {
                parts.push(query.flush().await?);
            }
            let target = query.plan().target.clone();
            if let Some(reporter) = &mut self.metrics {
                let rows_in = query
                    .plan()
                    .sources
                    .iter()
                    .filter_map(|s| fresh_rows.get(s))
                    .sum();
                let rows_out = parts
                    .iter()
                    .flat_map(|p| &p.rows)
                    .map(|b| b.num_rows() as u64)
                    .sum();
                reporter.query_rows(index, rows_in, rows_out);
            }
            for part in parts {
                summary.windows_emitted += part.windows_emitted as u64;
                summary.groups_expired += part.groups_expired as u64;
                summary.windows_corrected += part.windows_corrected as u64;
                outputs.entry(target.clone()).or_default().extend(part.rows);
                for late in part.late {
                    summary.late_rows += late.rows.num_rows() as u64;
                    let reason = format!(
                        "late: its window had already been emitted (INSERT INTO {target}, {})",
                        query.plan().at
                    );
                    letters
                        .entry(late.source.clone())
                        .or_default()
                        .push(crate::late_letters::letter(late, reason)?);
                }
            }
        }
        for source in &self.sources {
            source.slot.clear();
        }
        for (source, batches) in crate::models::take_letters(&self.models) {
            summary.rejected_by_models += batches
                .iter()
                .map(|b| b.rows.num_rows() as u64)
                .sum::<u64>();
            letters.entry(source).or_default().extend(batches);
        }
        for (target, batches) in outputs {
            if batches.is_empty() {
                continue;
            }
            let sink = self
                .sinks
                .get_mut(&target)
                .ok_or_else(|| EngineError::Internal(format!("no sink opened for '{target}'")))?;
            let rows = batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            *summary.rows_out.entry(target.clone()).or_default() += rows;
            // What the sink holds after this epoch, also when it had committed it already
            // (a replayed epoch rebuilds the live table as it was).
            if let Some(live) = self.live.as_mut().filter(|l| l.contains(&target)) {
                for batch in &batches {
                    live.apply(&target, batch)?;
                }
            }
            if self.committed.get(&target).is_some_and(|c| epoch <= *c) {
                tracing::info!(
                    sink = %target,
                    epoch,
                    rows,
                    "epoch already committed by the sink: not written again"
                );
                summary.rows_skipped += rows;
                continue;
            }
            sink.write_epoch(epoch, &batches).await?;
            failpoint::hit("mid_sink_write");
        }
        // Every sink has written the epoch: queries may see it, in every table at once.
        if let Some(live) = &mut self.live {
            live.publish(epoch)?;
        }
        if let Some(reporter) = &mut self.metrics {
            reporter.letters(epoch, &letters);
        }
        for (source, batches) in letters {
            let dir = crate::models::destination(&self.letter_destinations, &source);
            let writer = match dead_letters.entry(source) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(DeadLetterWriter::for_pipeline(
                        &dir,
                        &volley_connectors::SinkContext {
                            pipeline_id: self.pipeline_id.clone(),
                            instance: self.instance.clone(),
                            ..Default::default()
                        },
                    )?)
                }
            };
            writer.write_epoch(epoch, &batches).await?;
        }
        Ok(all_done)
    }
}

impl StreamJob {
    /// Writes a checkpoint when the last epoch processed has none yet.
    async fn checkpoint_if_behind(&mut self) -> Result<()> {
        let behind = self
            .checkpoints
            .as_ref()
            .is_some_and(|c| c.last_epoch() < self.epoch);
        if behind && self.epoch > 0 {
            self.checkpoint().await?;
        }
        Ok(())
    }

    /// Writes a checkpoint of everything as of the current epoch (the loop calls this when the
    /// interval says so; a no-op when checkpoints are off).
    ///
    /// # Errors
    /// Checkpoint store failures.
    pub async fn checkpoint(&mut self) -> Result<()> {
        let Some(checkpoints) = &self.checkpoints else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let epoch = self.epoch;
        let mut bytes = 0;
        let mut queries = Vec::with_capacity(self.queries.len());
        for (i, query) in self.queries.iter().enumerate() {
            let mut entry = QueryCheckpoint {
                target: query.plan().target.clone(),
                shape: query.shape(),
                emitted_upto: None,
                state_file: None,
                state_rows: 0,
                stamps_file: None,
            };
            if let Some((schema, rows, emitted_upto)) = query.snapshot() {
                let file = format!("q{i}.arrow");
                bytes += checkpoints
                    .store
                    .put_state(epoch, &file, &schema, &rows)
                    .await?;
                entry.emitted_upto = emitted_upto;
                entry.state_rows = rows.iter().map(|b| b.num_rows() as u64).sum();
                entry.state_file = Some(file);
            }
            if let Some((schema, stamps)) = query.stamps()? {
                let file = format!("q{i}.stamps.arrow");
                bytes += checkpoints
                    .store
                    .put_state(epoch, &file, &schema, &stamps)
                    .await?;
                entry.stamps_file = Some(file);
            }
            queries.push(entry);
        }
        let mut live = Vec::new();
        if let Some(tables) = &self.live {
            // What queries see now: this epoch, published once every sink wrote it.
            let snapshot = tables.published().current();
            for (i, (name, table)) in snapshot.tables.iter().enumerate() {
                let file = format!("live{i}.arrow");
                bytes += checkpoints
                    .store
                    .put_state(epoch, &file, &table.schema, &table.batches)
                    .await?;
                live.push(crate::checkpoint::manifest::LiveCheckpoint {
                    name: name.clone(),
                    file,
                    rows: table.batches.iter().map(|b| b.num_rows() as u64).sum(),
                });
            }
        }
        failpoint::hit("mid_checkpoint");
        let manifest = Manifest {
            format: crate::checkpoint::manifest::FORMAT,
            epoch,
            fingerprint: self.fingerprint.clone(),
            sources: self
                .sources
                .iter()
                .map(|s| SourceCheckpoint {
                    name: s.name.clone(),
                    position: s.position.clone(),
                    max_event_time: s.max_event_time(),
                    partition_max: s
                        .event_time
                        .as_ref()
                        .map(|t| t.snapshot().0)
                        .unwrap_or_default(),
                    watermark: s.event_time.as_ref().and_then(EventTimeTracker::watermark),
                    exhausted: s.exhausted,
                    rows: s.rows,
                })
                .collect(),
            queries,
            live,
            totals: Totals {
                rows_in: self.summary.rows_in,
                rows_out: self.summary.rows_out.clone(),
                late_rows: self.summary.late_rows,
                rejected_records: self.summary.rejected_records,
                windows_emitted: self.summary.windows_emitted,
                groups_expired: self.summary.groups_expired,
                windows_corrected: self.summary.windows_corrected,
            },
            written_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        bytes += checkpoints.store.commit(&manifest).await?;
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Some(checkpoints) = &mut self.checkpoints {
            checkpoints.written(epoch);
        }
        self.summary.checkpoints += 1;
        self.summary.last_checkpoint_epoch = epoch;
        self.summary.last_checkpoint_ms = ms;
        self.summary.last_checkpoint_bytes = bytes;
        tracing::info!(epoch, ms, bytes, "checkpoint written");
        if let Some(reporter) = &self.metrics {
            reporter.checkpoint(epoch, ms, bytes);
        }
        for source in &self.sources {
            if let Some(monitor) = &source.monitor {
                monitor.checkpointed(&source.position);
            }
        }
        if let Some(hook) = &self.on_checkpoint {
            let positions: Vec<Position> =
                self.sources.iter().map(|s| s.position.clone()).collect();
            (hook.0)(epoch, &positions);
        }
        Ok(())
    }
}
