//! A source's progress as the epoch loop tracks it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use volley_connectors::Position;
use volley_sql::stream::EpochSlot;

use crate::error::Result;
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
    /// Bytes of the records read, when the source counts them.
    pub bytes: Option<u64>,
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
        Some(self.partition_lag()?.values().sum())
    }

    /// Records past this source's position in each partition, when it knows.
    pub fn partition_lag(&self) -> Option<BTreeMap<String, u64>> {
        self.monitor.as_ref()?.lag(&self.position)
    }

    /// Each partition's own watermark (its largest event time less the disorder bound), for
    /// sources read as several partitions.
    pub fn partition_watermarks(&self) -> Vec<(String, i64)> {
        self.event_time
            .as_ref()
            .map(|t| t.partition_watermarks())
            .unwrap_or_default()
    }

    /// The largest event time seen (nanoseconds).
    pub fn max_event_time(&self) -> Option<i64> {
        self.event_time.as_ref()?.max_event_time()
    }

    /// Takes an epoch's batches (with the partition of each, when the source has partitions)
    /// and moves the watermark, leaving out the partitions the epoch found idle.
    pub(crate) fn observe(
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
