//! Splits rows whose window has already been emitted ("late") from the rows a windowed
//! aggregate may still take, where they enter the plan: at the source's epoch leaf, before
//! any projection, so a late row's dead letter is the whole source record.
//!
//! ```text
//!   AggregateExec(Partial)
//!          │
//!   stateless segment (filter / project / UDFs)
//!          │ on-time rows
//!   EpochSourceExec ──late rows (all columns, row in epoch)──▶ LateGate ──▶ dead letters
//! ```
//!
//! Rows are judged by the window their event time falls in, whatever the query's WHERE clause
//! would do with them later: a late row that a filter would have dropped is a dead letter too.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, BooleanArray, Int64Array, UInt64Array};
use arrow::compute::kernels::cmp::gt;
use arrow::compute::{cast, filter, filter_record_batch, is_null, not, or_kleene};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_expr::PhysicalExpr;

/// Late rows of one source batch: every column of the source, with where they were in the
/// epoch.
#[derive(Debug, Clone)]
pub struct LateRows {
    /// The source table.
    pub source: String,
    /// The source partition the batch came from (Kafka), if any.
    pub partition: Option<String>,
    /// The rows, with every column of the source.
    pub rows: RecordBatch,
    /// Each row's index in the epoch's input from that source (with the epoch, a position
    /// that reads the record again: an epoch always reads the same input).
    pub row_in_epoch: UInt64Array,
}

/// Shared between the epoch leaves of a windowed aggregate and the engine: the cut-off, and the
/// late rows found.
#[derive(Debug)]
pub struct LateGate {
    /// Rows whose window start is `<= cutoff` are late. `i64::MIN`: nothing is late yet.
    cutoff: AtomicI64,
    /// Late rows, with the first row index they came from (for a stable order).
    late: Mutex<Vec<(u64, LateRows)>>,
}

impl LateGate {
    /// A gate that lets everything through.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            cutoff: AtomicI64::new(i64::MIN),
            late: Mutex::new(Vec::new()),
        })
    }

    /// Rows whose window start (in the window column's unit) is at or below `cutoff` are late.
    pub fn set_cutoff(&self, cutoff: i64) {
        self.cutoff.store(cutoff, Ordering::Release);
    }

    /// The current cut-off.
    pub fn cutoff(&self) -> i64 {
        self.cutoff.load(Ordering::Acquire)
    }

    /// Takes the late rows collected since the last call, in input order (by source, then by
    /// row in the epoch, whatever order the partitions ran in).
    pub fn take_late(&self) -> Vec<LateRows> {
        let mut late = std::mem::take(&mut *self.late.lock().unwrap_or_else(|e| e.into_inner()));
        late.sort_by(|a, b| (&a.1.source, a.0).cmp(&(&b.1.source, b.0)));
        late.into_iter().map(|(_, rows)| rows).collect()
    }

    fn push_late(&self, first_row: u64, rows: LateRows) {
        self.late
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((first_row, rows));
    }
}

/// What an epoch leaf needs to split late rows off: the window start computed from the
/// source's own columns, and the gate.
#[derive(Debug, Clone)]
pub struct LateFilter {
    /// The window's group expression, over the source's full schema.
    pub window_start: Arc<dyn PhysicalExpr>,
    /// Where late rows go.
    pub gate: Arc<LateGate>,
}

impl LateFilter {
    /// Splits `batch` (full source columns; its first row is row `first_row` of the epoch's
    /// input from `source`) into the rows the aggregate may take and, into the gate, the late
    /// ones. Also returns which rows were kept, when some were not.
    ///
    /// # Errors
    /// Evaluation failures of the window expression.
    pub fn split(
        &self,
        source: &str,
        partition: Option<&str>,
        batch: RecordBatch,
        first_row: u64,
    ) -> Result<(RecordBatch, Option<BooleanArray>)> {
        let cutoff = self.gate.cutoff();
        if cutoff == i64::MIN || batch.num_rows() == 0 {
            return Ok((batch, None));
        }
        let starts = self
            .window_start
            .evaluate(&batch)?
            .into_array(batch.num_rows())?;
        let starts = cast(&starts, &DataType::Int64)?;
        let starts = starts
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| {
                DataFusionError::Internal("window start is not an integer timestamp".into())
            })?;
        // A NULL event time has no window: it is kept (the aggregate groups it under NULL, as
        // batch does).
        let on_time: BooleanArray = gt(starts, &Int64Array::new_scalar(cutoff))?;
        let on_time = if starts.null_count() > 0 {
            or_kleene(&on_time, &is_null(starts)?)?
        } else {
            on_time
        };
        if on_time.true_count() == batch.num_rows() {
            return Ok((batch, None));
        }
        let late = not(&on_time)?;
        let rows = UInt64Array::from_iter_values(first_row..first_row + batch.num_rows() as u64);
        let row_in_epoch = filter(&rows, &late)?;
        let row_in_epoch = row_in_epoch
            .as_any()
            .downcast_ref::<UInt64Array>()
            .cloned()
            .ok_or_else(|| DataFusionError::Internal("row indexes are not u64".into()))?;
        let first = row_in_epoch.values().first().copied().unwrap_or(first_row);
        self.gate.push_late(
            first,
            LateRows {
                source: source.to_string(),
                partition: partition.map(str::to_string),
                rows: filter_record_batch(&batch, &late)?,
                row_in_epoch,
            },
        );
        let kept = filter_record_batch(&batch, &on_time)?;
        Ok((kept, Some(on_time)))
    }
}
