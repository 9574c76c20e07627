//! A side's held rows: by window start (a windowed join), or unbucketed by event time (an
//! interval join).

use std::collections::BTreeMap;

use arrow::record_batch::RecordBatch;
use volley_sql::stream::operator::{OperatorError, Result};

use crate::grouped::split_by_window;

/// One side's held rows, by window start (None: rows with no time, joined at the end; an
/// interval join holds all its rows there).
#[derive(Debug, Default)]
pub(crate) struct Held {
    pub(crate) windows: BTreeMap<Option<i64>, Vec<RecordBatch>>,
}

impl Held {
    pub(crate) fn add(&mut self, batches: Vec<RecordBatch>, column: usize) -> Result<()> {
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            for (start, rows) in split_by_window(batch, column)? {
                self.windows.entry(start).or_default().push(rows);
            }
        }
        Ok(())
    }

    /// Takes the rows of windows starting before `frontier` (every window, NULL too, when
    /// `all`).
    pub(crate) fn take_before(&mut self, frontier: i64, all: bool) -> Vec<RecordBatch> {
        if all {
            return std::mem::take(&mut self.windows)
                .into_values()
                .flatten()
                .collect();
        }
        let later = self.windows.split_off(&Some(frontier));
        let (none, closed): (Vec<_>, Vec<_>) = std::mem::replace(&mut self.windows, later)
            .into_iter()
            .partition(|(start, _)| start.is_none());
        self.windows.extend(none);
        closed.into_iter().flat_map(|(_, rows)| rows).collect()
    }

    /// Interval joins hold rows unbucketed.
    pub(crate) fn add_flat(&mut self, batches: Vec<RecordBatch>) {
        let held = self.windows.entry(None).or_default();
        held.extend(batches.into_iter().filter(|b| b.num_rows() > 0));
    }

    /// Keeps the rows whose time (column `column`) is at or after `from` (the column's unit);
    /// rows with no time never match and go. Returns the rows dropped.
    pub(crate) fn retain_from(&mut self, column: usize, from: i64) -> Result<Vec<RecordBatch>> {
        let Some(held) = self.windows.get_mut(&None) else {
            return Ok(Vec::new());
        };
        let mut kept = Vec::with_capacity(held.len());
        let mut dropped = Vec::new();
        for batch in held.drain(..) {
            let times =
                arrow::compute::cast(batch.column(column), &arrow::datatypes::DataType::Int64)?;
            let times = times
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .ok_or_else(|| OperatorError::Internal("event time is not a timestamp".into()))?;
            let keep = arrow::compute::kernels::cmp::gt_eq(
                times,
                &arrow::array::Int64Array::new_scalar(from),
            )?;
            // A row with no time is dropped, never kept: a NULL in the mask would lose it
            // from both the kept and the dropped rows (and a LEFT join's output).
            let keep = if arrow::array::Array::null_count(&keep) > 0 {
                arrow::compute::prep_null_mask_filter(&keep)
            } else {
                keep
            };
            let gone = arrow::compute::not(&keep)?;
            let gone = arrow::compute::filter_record_batch(&batch, &gone)?;
            if gone.num_rows() > 0 {
                dropped.push(gone);
            }
            let batch = arrow::compute::filter_record_batch(&batch, &keep)?;
            if batch.num_rows() > 0 {
                kept.push(batch);
            }
        }
        let empty = kept.is_empty();
        *held = kept;
        if empty {
            // No rows held: no open "window" left behind in the status and metrics.
            self.windows.remove(&None);
        }
        Ok(dropped)
    }

    pub(crate) fn rows(&self) -> usize {
        self.windows
            .values()
            .flatten()
            .map(RecordBatch::num_rows)
            .sum()
    }

    /// Bytes of memory the held rows' Arrow buffers take.
    pub(crate) fn bytes(&self) -> usize {
        self.windows
            .values()
            .flatten()
            .map(RecordBatch::get_array_memory_size)
            .sum()
    }

    pub(crate) fn snapshot(&self) -> Vec<RecordBatch> {
        self.windows.values().flatten().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use arrow::array::{Array, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use arrow::record_batch::RecordBatch;

    use super::Held;

    #[test]
    fn a_held_row_with_no_time_is_dropped_not_lost() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            true,
        )]));
        let times = TimestampNanosecondArray::from(vec![Some(5), None, Some(20)]);
        let batch = RecordBatch::try_new(schema, vec![Arc::new(times)]).unwrap();
        let mut held = Held::default();
        held.add_flat(vec![batch]);
        let dropped = held.retain_from(0, 10).unwrap();
        let dropped: Vec<Option<i64>> = dropped
            .iter()
            .flat_map(|b| {
                let t = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<TimestampNanosecondArray>()
                    .unwrap();
                (0..t.len())
                    .map(|i| t.is_valid(i).then(|| t.value(i)))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(dropped, [Some(5), None]);
        assert_eq!(held.rows(), 1);
    }
}
