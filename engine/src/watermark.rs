//! Event-time progress of one source, per partition, and the watermark derived from it.
//!
//! ```text
//!  partition 0: max event time 12:00:09 ─┐
//!  partition 1: max event time 12:00:04 ─┼─ min over active partitions = 12:00:04
//!  partition 2: idle (no data lately)   ─┘   watermark = 12:00:04 - delay (never goes back)
//! ```
//!
//! A source that reads several partitions (Kafka) declares them; each partition's rows are
//! in event-time order up to the declared disorder, but partitions are read at different
//! speeds, so the watermark is the minimum over partitions. A declared partition that has not
//! produced a row yet holds the watermark back (its first rows may be old) until the driver
//! calls it idle; idle partitions are left out, and when every partition is idle the watermark
//! follows the largest event time seen. Which partitions were idle in an epoch is part of the
//! epoch log, so a replayed epoch computes the same watermark.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::{Array, Int64Array};
use arrow::compute::{cast, max};
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;

use crate::error::{EngineError, Result};

/// The partition name of a source that is one stream.
pub const WHOLE: &str = "";

/// Largest event time per partition and the watermark so far (nanoseconds).
#[derive(Debug, Clone)]
pub struct EventTimeTracker {
    column: usize,
    delay: i64,
    partitions: Vec<String>,
    max: BTreeMap<String, i64>,
    floor: Option<i64>,
}

impl EventTimeTracker {
    /// Tracks column `column` with a disorder bound of `delay` ns over `partitions` (empty: the
    /// source is one stream).
    pub fn new(column: usize, delay: i64, partitions: Vec<String>) -> Self {
        Self {
            column,
            delay,
            partitions,
            max: BTreeMap::new(),
            floor: None,
        }
    }

    /// The event-time column's index.
    pub fn column(&self) -> usize {
        self.column
    }

    /// Takes the largest event time of `batch`, which holds rows of `partition` (`None`: of
    /// the whole source).
    ///
    /// # Errors
    /// An event-time column that does not cast to nanoseconds (a bug: the planner checked it).
    pub fn observe(&mut self, batch: &RecordBatch, partition: Option<&str>) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let ts = cast(
            batch.column(self.column),
            &DataType::Timestamp(TimeUnit::Nanosecond, None),
        )?;
        let ts = cast(&ts, &DataType::Int64)?;
        let ts = ts
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| EngineError::Internal("event time did not cast to Int64".into()))?;
        if let Some(m) = max(ts) {
            let key = partition.unwrap_or(WHOLE).to_string();
            let entry = self.max.entry(key).or_insert(m);
            *entry = (*entry).max(m);
        }
        Ok(())
    }

    /// Recomputes the watermark with `idle` partitions left out; it never goes back.
    pub fn advance(&mut self, idle: &BTreeSet<String>) -> Option<i64> {
        let basis = if self.partitions.is_empty() {
            self.max.values().copied().max()
        } else {
            let active: Vec<&String> = self
                .partitions
                .iter()
                .filter(|p| !idle.contains(*p))
                .collect();
            if active.is_empty() {
                self.max.values().copied().max()
            } else {
                // A partition with no row yet has no event time: the minimum is unknown.
                active
                    .iter()
                    .map(|p| self.max.get(*p).copied())
                    .collect::<Option<Vec<i64>>>()
                    .and_then(|v| v.into_iter().min())
            }
        };
        let candidate = basis.map(|t| t.saturating_sub(self.delay));
        self.floor = match (self.floor, candidate) {
            (Some(f), Some(c)) => Some(f.max(c)),
            (f, c) => f.or(c),
        };
        self.floor
    }

    /// The watermark after the last [`EventTimeTracker::advance`].
    pub fn watermark(&self) -> Option<i64> {
        self.floor
    }

    /// The largest event time seen in any partition.
    pub fn max_event_time(&self) -> Option<i64> {
        self.max.values().copied().max()
    }

    /// Each partition's largest event time less the disorder bound (none for a source that
    /// is one stream).
    pub fn partition_watermarks(&self) -> Vec<(String, i64)> {
        if self.partitions.is_empty() {
            return Vec::new();
        }
        self.max
            .iter()
            .map(|(p, m)| (p.clone(), m.saturating_sub(self.delay)))
            .collect()
    }

    /// Per-partition maxima and the watermark, for a checkpoint.
    pub fn snapshot(&self) -> (BTreeMap<String, i64>, Option<i64>) {
        (self.max.clone(), self.floor)
    }

    /// Loads a [`EventTimeTracker::snapshot`].
    pub fn restore(&mut self, max: BTreeMap<String, i64>, watermark: Option<i64>) {
        self.max = max;
        self.floor = watermark;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use arrow::array::TimestampNanosecondArray;
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn batch(times: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            false,
        )]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(TimestampNanosecondArray::from(times.to_vec()))],
        )
        .unwrap()
    }

    fn idle(parts: &[&str]) -> BTreeSet<String> {
        parts.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn one_stream_follows_its_largest_event_time() {
        let mut t = EventTimeTracker::new(0, 5, Vec::new());
        assert_eq!(t.advance(&idle(&[])), None);
        t.observe(&batch(&[10, 30, 20]), None).unwrap();
        assert_eq!(t.advance(&idle(&[])), Some(25));
        t.observe(&batch(&[12]), None).unwrap();
        assert_eq!(t.advance(&idle(&[])), Some(25));
    }

    #[test]
    fn partitions_take_the_minimum_and_wait_for_every_active_one() {
        let mut t = EventTimeTracker::new(0, 5, vec!["0".into(), "1".into(), "2".into()]);
        t.observe(&batch(&[100]), Some("0")).unwrap();
        t.observe(&batch(&[50]), Some("1")).unwrap();
        // Partition 2 has no row yet: unknown.
        assert_eq!(t.advance(&idle(&[])), None);
        // Once it is idle, the minimum of the others.
        assert_eq!(t.advance(&idle(&["2"])), Some(45));
        t.observe(&batch(&[70]), Some("2")).unwrap();
        assert_eq!(t.advance(&idle(&[])), Some(45));
        t.observe(&batch(&[90]), Some("1")).unwrap();
        assert_eq!(t.advance(&idle(&[])), Some(65));
        // Never backwards, even when a slower partition comes back.
        t.observe(&batch(&[20]), Some("2")).unwrap();
        assert_eq!(t.advance(&idle(&[])), Some(65));
        // Every partition idle: follow the largest event time.
        assert_eq!(t.advance(&idle(&["0", "1", "2"])), Some(95));
        assert_eq!(t.max_event_time(), Some(100));
    }

    #[test]
    fn snapshot_and_restore() {
        let mut t = EventTimeTracker::new(0, 1, vec!["0".into()]);
        t.observe(&batch(&[7]), Some("0")).unwrap();
        t.advance(&idle(&[]));
        let (max, wm) = t.snapshot();
        let mut u = EventTimeTracker::new(0, 1, vec!["0".into()]);
        u.restore(max, wm);
        assert_eq!(u.watermark(), Some(6));
        assert_eq!(u.advance(&idle(&[])), Some(6));
    }
}
