//! Start-up: learn what sinks already committed, restore the newest checkpoint, and queue the
//! logged epochs after it for re-reading.

use super::manifest::{EpochLog, Manifest};
use crate::driver::EpochRange;
use crate::error::{EngineError, Result};
use crate::runtime::StreamJob;

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
                checkpoints.store.clear().await?;
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
                    saved.shape,
                    saved.target,
                    query.shape()
                )));
            }
        }
        if !manifest.fingerprint.is_empty() && manifest.fingerprint != self.fingerprint {
            tracing::warn!(
                checkpoint = manifest.epoch,
                then = %manifest.fingerprint,
                now = %self.fingerprint,
                "the pipeline's SQL changed since this checkpoint; its state still fits every INSERT, so it is restored"
            );
        }
        let Some(checkpoints) = &self.checkpoints else {
            return Ok(());
        };
        let store = checkpoints.store.clone();
        for (query, saved) in self.queries.iter_mut().zip(&manifest.queries) {
            let rows = match &saved.state_file {
                Some(file) => store.get_state(manifest.epoch, file).await?,
                None => Vec::new(),
            };
            query.restore(rows, saved.emitted_upto).await?;
            let stamps = match &saved.stamps_file {
                Some(file) => store.get_state(manifest.epoch, file).await?,
                None => Vec::new(),
            };
            let watermarks: std::collections::HashMap<String, Option<i64>> = manifest
                .sources
                .iter()
                .map(|s| (s.name.clone(), s.watermark))
                .collect();
            let at = crate::query::min_watermark(&query.plan().sources, &watermarks);
            query.restore_stamps(&stamps, at)?;
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
