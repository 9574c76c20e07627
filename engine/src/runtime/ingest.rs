//! Ingest: each source's micro-batch becomes the loop's view of it (position, watermark,
//! rows) and the input its INSERTs read.

use std::collections::{BTreeMap, HashMap};

use volley_connectors::dead_letter::DeadLetterBatch;

use super::{RunSummary, StreamJob};
use crate::driver::SourceEpoch;
use crate::error::Result;

/// What an epoch read, per source name: rows (0 for a source with nothing new).
pub(super) type Fresh = HashMap<String, u64>;

impl StreamJob {
    /// Takes each source's part of the epoch (in job order): records it could not read
    /// become dead letters, its batches go to the slot its INSERTs read.
    pub(super) fn ingest(
        &mut self,
        input: Vec<SourceEpoch>,
        summary: &mut RunSummary,
        letters: &mut BTreeMap<String, Vec<DeadLetterBatch>>,
    ) -> Result<Fresh> {
        let mut fresh = Fresh::with_capacity(self.sources.len());
        for (source, epoch) in self.sources.iter_mut().zip(input) {
            if !epoch.rejected.is_empty() {
                summary.rejected_records += epoch.rejected.len() as u64;
                letters
                    .entry(source.name.clone())
                    .or_default()
                    .push(DeadLetterBatch::rejected(&source.name, &epoch.rejected)?);
            }
            let rows = epoch.rows();
            summary
                .sources
                .entry(source.name.clone())
                .or_default()
                .read(
                    rows,
                    epoch.rejected.iter().map(|r| {
                        if r.partition.is_empty() {
                            format!("record {}: {}", r.offset, r.error)
                        } else {
                            format!("{} at {}: {}", r.partition, r.offset, r.error)
                        }
                    }),
                );
            source.position = epoch.end;
            if let Some(bytes) = epoch.bytes_read {
                source.bytes = Some(bytes);
            }
            source.observe(&epoch.batches, &epoch.partitions, &epoch.idle)?;
            source
                .slot
                .set_from_partitions(epoch.batches, epoch.partitions);
            source.exhausted = epoch.exhausted;
            fresh.insert(source.name.clone(), rows);
        }
        summary.rows_in = self.sources.iter().map(|s| s.rows).sum();
        Ok(fresh)
    }
}
