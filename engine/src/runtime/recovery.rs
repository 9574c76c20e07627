//! Recovery: at start-up, learn what sinks already committed, restore the newest checkpoint
//! and queue the logged epochs after it for re-reading; as the job runs, write checkpoints.

use super::StreamJob;
use crate::checkpoint::failpoint;
use crate::checkpoint::manifest::{
    EpochLog, LiveCheckpoint, Manifest, NamedState, OperatorCheckpoint, QueryCheckpoint,
    SourceCheckpoint, Totals,
};
use crate::driver::EpochRange;
use crate::error::{EngineError, Result};
use crate::watermark::EventTimeTracker;
use volley_connectors::Position;
use volley_sql::stream::operator::RestoredState;

impl StreamJob {
    /// Runs once before the first epoch (later calls do nothing): restores the newest
    /// checkpoint (unless starting from scratch) or, with none, numbers epochs after the last
    /// one any sink committed. What was restored is in [`RunSummary::restored`].
    ///
    /// # Errors
    /// Unreadable checkpoints, a pipeline changed incompatibly since the checkpoint, sources
    /// that cannot seek.
    ///
    /// [`RunSummary::restored`]: crate::runtime::RunSummary::restored
    pub async fn prepare(&mut self) -> Result<()> {
        if self.prepared {
            return Ok(());
        }
        self.prepared = true;
        for (name, sink) in &mut self.sinks {
            if let Some(epoch) = sink.committed_epoch().await? {
                self.committed.insert(name.clone(), epoch);
            }
        }
        let mut restored = false;
        if let Some(checkpoints) = &self.checkpoints {
            let dir = checkpoints.store.display().to_string();
            if checkpoints.from_scratch {
                let store = checkpoints.store.clone();
                self.empty_sinks().await?;
                store.clear().await?;
                tracing::info!(dir, "starting from scratch");
            } else {
                let store = checkpoints.store.clone();
                let manifest = store.latest().await?;
                let logs = store
                    .epochs_after(manifest.as_ref().map_or(0, |m| m.epoch))
                    .await?;
                match &manifest {
                    Some(manifest) => {
                        self.restore(manifest, &dir).await?;
                        if let Some(checkpoints) = &mut self.checkpoints {
                            checkpoints.written(manifest.epoch);
                        }
                    }
                    // Crashed before the first checkpoint: re-read its logged epochs from the
                    // start, which is where its first epoch began.
                    None => self.start_before(logs.first(), &dir)?,
                }
                restored = manifest.is_some() || !logs.is_empty();
                self.queue_replay(&logs, &dir)?;
                if let Some(manifest) = &manifest {
                    self.summary.restored = Some(crate::runtime::Restored {
                        epoch: manifest.epoch,
                        dir: dir.clone(),
                        rows_in: manifest.totals.rows_in,
                        rows_out: manifest.totals.rows_out.clone(),
                        finished: manifest.sources.iter().all(|s| s.exhausted),
                        replaying: self.replay.len(),
                    });
                }
            }
        }
        if !restored && let Some(&last) = self.committed.values().max() {
            tracing::info!(
                epoch = last,
                "a sink has already committed epochs up to {last}: numbering this run's epochs after it"
            );
            self.epoch = last;
        }
        Ok(())
    }

    /// Empties every sink before starting over, so no sink holds a mix of two runs; a sink
    /// that cannot be emptied (a Kafka topic) refuses the start, before anything is removed
    /// from the others.
    async fn empty_sinks(&mut self) -> Result<()> {
        let refused: Vec<String> = self
            .sinks
            .values()
            .filter_map(|sink| sink.cannot_truncate())
            .collect();
        if !refused.is_empty() {
            return Err(EngineError::Usage(format!(
                "--from-scratch cannot start over: {}",
                refused.join("; ")
            )));
        }
        for (name, sink) in &mut self.sinks {
            sink.truncate().await?;
            tracing::info!(sink = %name, "emptied to start over");
        }
        Ok(())
    }

    /// Refuses a checkpoint another pipeline wrote: one whose statements differ from this
    /// pipeline's in anything but the options that do not change results.
    fn same_pipeline(&self, manifest: &Manifest, dir: &str) -> Result<()> {
        let changes = if manifest.statements.is_empty() {
            // Written before checkpoints recorded statements: the fingerprint alone tells.
            if manifest.fingerprint.is_empty() || manifest.fingerprint == self.fingerprint {
                Vec::new()
            } else {
                vec![format!(
                    "its fingerprint was {}, this pipeline's is {}",
                    manifest.fingerprint, self.fingerprint
                )]
            }
        } else {
            crate::checkpoint::fingerprint::changes(&manifest.statements, &self.statements)
        };
        if !changes.is_empty() {
            return Err(EngineError::Checkpoint(format!(
                "checkpoint {} in {dir} belongs to another pipeline: the statements differ.\n  {}\nRun this pipeline with --from-scratch (its sinks are emptied and it starts over), or give it its own checkpoints with --pipeline-id NAME (or --checkpoint-dir DIR); restore the previous SQL to go on where it stopped",
                manifest.epoch,
                changes.join("\n  ")
            )));
        }
        if !manifest.fingerprint.is_empty() && manifest.fingerprint != self.fingerprint {
            tracing::warn!(
                "options that do not change results ({}) differ from checkpoint {}'s; its state is kept",
                crate::checkpoint::fingerprint::OPERATIONAL_OPTIONS.join(", "),
                manifest.epoch
            );
        }
        Ok(())
    }

    /// Refuses to go on from a checkpoint whose sinks no longer hold what it says was written
    /// to them (output deleted or replaced): going on would leave them without those rows.
    async fn sinks_hold(&mut self, manifest: &Manifest, dir: &str) -> Result<()> {
        let mut missing = Vec::new();
        for (name, sink) in &mut self.sinks {
            let Some(written) = manifest.totals.sinks.get(name) else {
                continue;
            };
            if let Some(what) = sink
                .missing(written.epochs, written.last, manifest.epoch)
                .await?
            {
                missing.push(format!("sink '{name}': {what}"));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(EngineError::Checkpoint(format!(
            "checkpoint {} in {dir} says this pipeline wrote rows its sinks no longer hold: {}. Their output was deleted or replaced; run with --from-scratch to write it again",
            manifest.epoch,
            missing.join("; ")
        )))
    }

    /// No checkpoint but logged epochs: the first logged epoch must start where the sources
    /// start now.
    fn start_before(&mut self, first: Option<&EpochLog>, dir: &str) -> Result<()> {
        let Some(first) = first else {
            return Ok(());
        };
        for (source, reader) in self.sources.iter().zip(&self.readers) {
            let logged = first.sources.iter().find(|s| s.name == source.name);
            if logged.is_none_or(|l| l.start != reader.position()) {
                return Err(EngineError::Checkpoint(format!(
                    "{dir} logs epoch {} but has no checkpoint before it, and source '{}' does not start where that epoch did; start over with --from-scratch",
                    first.epoch, source.name
                )));
            }
        }
        self.epoch = first.epoch - 1;
        Ok(())
    }

    async fn restore(&mut self, manifest: &Manifest, dir: &str) -> Result<()> {
        self.same_pipeline(manifest, dir)?;
        self.sinks_hold(manifest, dir).await?;
        let changed = |what: String| {
            EngineError::Checkpoint(format!(
                "the pipeline changed incompatibly since checkpoint {} in {dir}: {what}. Restore the previous SQL, or start over with --from-scratch (sinks keep what they hold)",
                manifest.epoch
            ))
        };
        let now: Vec<&str> = self.sources.iter().map(|s| s.name.as_str()).collect();
        let then: Vec<&str> = manifest.sources.iter().map(|s| s.name.as_str()).collect();
        if now != then {
            return Err(changed(format!(
                "it read sources [{}], now [{}]",
                then.join(", "),
                now.join(", ")
            )));
        }
        if manifest.queries.len() != self.queries.len() {
            return Err(changed(format!(
                "it had {} INSERTs, now {}",
                manifest.queries.len(),
                self.queries.len()
            )));
        }
        for (query, saved) in self.queries.iter().zip(&manifest.queries) {
            let target = &query.plan().target;
            if *target != saved.target || query.shape() != saved.shape {
                return Err(changed(format!(
                    "INSERT INTO {target} ({}) kept state '{}' into {}, now '{}'",
                    query.plan().at,
                    volley_sql::sql_text::tidy(&saved.shape),
                    saved.target,
                    volley_sql::sql_text::tidy(&query.shape())
                )));
            }
        }

        // Go on with the lookup table versions the checkpoint's epoch joined.
        for table in self.lookups.pin(&manifest.lookups).await? {
            for query in &mut self.queries {
                query.reset_lookup(&table)?;
            }
        }
        let Some(checkpoints) = &self.checkpoints else {
            return Ok(());
        };
        let store = checkpoints.store.clone();
        let watermarks: std::collections::HashMap<String, Option<i64>> = manifest
            .sources
            .iter()
            .map(|s| (s.name.clone(), s.watermark))
            .collect();
        for (query, saved) in self.queries.iter_mut().zip(&manifest.queries) {
            // Every stateful operator's state must be there: one left empty would quietly
            // forget what it held.
            let held: Vec<&str> = saved
                .operators
                .iter()
                .filter_map(|o| query.id_of(&o.operator))
                .collect();
            let missing: Vec<String> = query
                .operators_by_id()
                .filter(|(id, _)| !held.contains(id))
                .map(|(_, o)| o.name().to_string())
                .collect();
            if !missing.is_empty() {
                return Err(EngineError::Checkpoint(format!(
                    "checkpoint {} in {dir} holds no state for {} of INSERT INTO {}: it is damaged; start over with --from-scratch",
                    manifest.epoch,
                    missing.join(", "),
                    saved.target
                )));
            }
            let watermark =
                volley_sql::stream::operator::min_watermark(&query.plan().sources, &watermarks);
            for operator in &saved.operators {
                let mut pieces = Vec::with_capacity(operator.state.len());
                for piece in &operator.state {
                    let rows = store.get_state(manifest.epoch, &piece.file).await?;
                    pieces.push((piece.name.clone(), rows));
                }
                let state = RestoredState {
                    marks: operator.marks.clone(),
                    pieces,
                    watermark,
                };
                query
                    .restore(&operator.operator, state)
                    .await
                    .map_err(|e| {
                        EngineError::Checkpoint(format!(
                            "checkpoint {} in {dir}, INSERT INTO {}: {e}",
                            manifest.epoch, saved.target
                        ))
                    })?;
            }
        }
        if let Some(live) = &mut self.live {
            for saved in &manifest.live {
                // A table the pipeline no longer has is left behind; a new one starts empty.
                if !live.contains(&saved.name) {
                    continue;
                }
                for batch in store.get_state(manifest.epoch, &saved.file).await? {
                    live.apply(&saved.name, &batch)?;
                }
            }
            live.publish(manifest.epoch)?;
        }
        for ((runtime, reader), saved) in self
            .sources
            .iter_mut()
            .zip(self.readers.iter_mut())
            .zip(&manifest.sources)
        {
            reader.seek(&saved.position).await?;
            runtime.position = saved.position.clone();
            if let Some(tracker) = &mut runtime.event_time {
                let mut max = saved.partition_max.clone();
                if max.is_empty()
                    && let Some(m) = saved.max_event_time
                {
                    max.insert(crate::watermark::WHOLE.to_string(), m);
                }
                tracker.restore(max, saved.watermark);
            }
            runtime.exhausted = saved.exhausted;
            runtime.rows = saved.rows;
        }
        self.epoch = manifest.epoch;
        self.summary.rows_in = manifest.totals.rows_in;
        self.summary.rows_out = manifest.totals.rows_out.clone();
        self.summary.late_rows = manifest.totals.late_rows;
        self.summary.rejected_records = manifest.totals.rejected_records;
        self.summary.windows_emitted = manifest.totals.windows_emitted;
        self.summary.groups_expired = manifest.totals.groups_expired;
        self.summary.windows_corrected = manifest.totals.windows_corrected;
        self.summary.sources = manifest.totals.sources.clone();
        self.summary.sink_epochs = manifest.totals.sinks.clone();
        self.summary.last_checkpoint_epoch = manifest.epoch;
        tracing::info!(epoch = manifest.epoch, dir, "restored checkpoint");
        Ok(())
    }

    fn queue_replay(&mut self, logs: &[EpochLog], dir: &str) -> Result<()> {
        for (expected, log) in (self.epoch + 1..).zip(logs) {
            if log.epoch != expected {
                return Err(EngineError::Checkpoint(format!(
                    "the epoch log in {dir} jumps from epoch {} to {}: it is damaged; start over with --from-scratch",
                    expected - 1,
                    log.epoch
                )));
            }
            let mut range = EpochRange {
                ends: Vec::with_capacity(self.sources.len()),
                exhausted: Vec::with_capacity(self.sources.len()),
                idle: Vec::with_capacity(self.sources.len()),
            };
            for source in &self.sources {
                let logged = log
                    .sources
                    .iter()
                    .find(|s| s.name == source.name)
                    .ok_or_else(|| {
                        EngineError::Checkpoint(format!(
                            "epoch {} in {dir} has no range for source '{}'",
                            log.epoch, source.name
                        ))
                    })?;
                range.ends.push(logged.end.clone());
                range.exhausted.push(logged.exhausted);
                range.idle.push(logged.idle.clone());
            }
            if !log.lookups.is_empty() {
                self.replay_lookups.insert(log.epoch, log.lookups.clone());
            }
            self.replay.push(range);
        }
        if !self.replay.is_empty() {
            tracing::info!(
                epochs = self.replay.len(),
                "re-reading logged epochs after the checkpoint"
            );
        }
        Ok(())
    }
}

impl StreamJob {
    /// Writes a checkpoint when the last epoch processed has none yet.
    pub(super) async fn checkpoint_if_behind(&mut self) -> Result<()> {
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
                state_rows: 0,
                operators: Vec::new(),
            };
            for (j, (id, operator)) in query.operators_by_id().enumerate() {
                let snapshot = operator.snapshot()?;
                let mut state = Vec::with_capacity(snapshot.pieces.len());
                for piece in snapshot.pieces {
                    let file = format!("q{i}.o{j}.{}.arrow", piece.name);
                    bytes += checkpoints
                        .store
                        .put_state(epoch, &file, &piece.schema, &piece.rows)
                        .await?;
                    let rows = piece.rows.iter().map(|b| b.num_rows() as u64).sum();
                    entry.state_rows += rows;
                    state.push(NamedState {
                        name: piece.name,
                        file,
                        rows,
                    });
                }
                entry.operators.push(OperatorCheckpoint {
                    operator: id.to_string(),
                    marks: snapshot.marks,
                    state,
                });
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
                live.push(LiveCheckpoint {
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
            statements: self.statements.clone(),
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
            lookups: self.lookups.versions(),
            totals: Totals {
                rows_in: self.summary.rows_in,
                rows_out: self.summary.rows_out.clone(),
                late_rows: self.summary.late_rows,
                rejected_records: self.summary.rejected_records,
                windows_emitted: self.summary.windows_emitted,
                groups_expired: self.summary.groups_expired,
                windows_corrected: self.summary.windows_corrected,
                sources: self.summary.sources.clone(),
                sinks: self.summary.sink_epochs.clone(),
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
