//! Output: every sink written once per epoch, then the live tables published, then the dead
//! letters written.

use std::collections::{BTreeMap, HashMap};

use arrow::record_batch::RecordBatch;
use volley_connectors::dead_letter::{DeadLetterBatch, DeadLetterWriter};

use super::{RunSummary, StreamJob};
use crate::checkpoint::failpoint;
use crate::error::{EngineError, Result};

impl StreamJob {
    /// Writes each sink's rows of `epoch` (unless the sink had committed it already) and
    /// applies them to its live table; once every sink has written, publishes the live
    /// tables, so queries see the epoch in every table at once.
    pub(super) async fn output(
        &mut self,
        epoch: u64,
        outputs: BTreeMap<String, Vec<RecordBatch>>,
        summary: &mut RunSummary,
    ) -> Result<()> {
        let mut writes: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
        for (target, batches) in outputs {
            if batches.is_empty() {
                continue;
            }
            if !self.sinks.contains_key(&target) {
                return Err(EngineError::Internal(format!(
                    "no sink opened for '{target}'"
                )));
            }
            let rows = batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            *summary.rows_out.entry(target.clone()).or_default() += rows;
            if rows > 0 {
                let written = summary.sink_epochs.entry(target.clone()).or_default();
                written.epochs += 1;
                written.last = epoch;
            }
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
            writes.insert(target, batches);
        }
        // The sinks write at once: an epoch waits for the slowest sink, not for their sum.
        let pending = self
            .sinks
            .iter_mut()
            .filter_map(|(target, sink)| {
                let batches = writes.get(target)?;
                Some(async move {
                    let started = std::time::Instant::now();
                    sink.write_epoch(epoch, batches).await?;
                    failpoint::hit("mid_sink_write");
                    Ok::<_, EngineError>((target, started.elapsed().as_secs_f64()))
                })
            })
            .collect::<Vec<_>>();
        let timings = futures::future::try_join_all(pending).await?;
        if let Some(reporter) = &self.metrics {
            for (target, seconds) in timings {
                reporter.sink_committed(target, seconds);
            }
        }
        // Every sink has written the epoch: queries may see it, in every table at once.
        if let Some(live) = &mut self.live {
            live.publish(epoch)?;
        }
        Ok(())
    }

    /// Writes the epoch's dead letters, each source's to its destination.
    pub(super) async fn write_letters(
        &mut self,
        epoch: u64,
        letters: BTreeMap<String, Vec<DeadLetterBatch>>,
        dead_letters: &mut HashMap<String, DeadLetterWriter>,
    ) -> Result<()> {
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
        Ok(())
    }
}
