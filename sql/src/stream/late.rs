//! Splits rows whose window has already been emitted ("late") from the rows a windowed
//! aggregate may still take, before partial aggregation.
//!
//! ```text
//!   AggregateExec(Partial)
//!          │ on-time rows
//!   LateSplitExec ──late rows──▶ LateGate (drained by the engine into dead letters)
//!          │
//!   stateless segment (filter / project / UDFs)
//! ```

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, BooleanArray, Int64Array};
use arrow::compute::kernels::cmp::gt;
use arrow::compute::{cast, filter_record_batch, is_null, not, or_kleene};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

/// Shared between a [`LateSplitExec`] and the engine: the cut-off, and the late rows found.
#[derive(Debug)]
pub struct LateGate {
    /// Rows whose window start is `<= cutoff` are late. `i64::MIN`: nothing is late yet.
    cutoff: AtomicI64,
    /// Late rows with the partition they came from (partitions are contiguous runs of input).
    late: Mutex<Vec<(usize, RecordBatch)>>,
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

    /// Takes the late rows collected since the last call, in input order (partition by
    /// partition, whatever order the partitions ran in).
    pub fn take_late(&self) -> Vec<RecordBatch> {
        let mut late = std::mem::take(&mut *self.late.lock().unwrap_or_else(|e| e.into_inner()));
        late.sort_by_key(|(partition, _)| *partition);
        late.into_iter().map(|(_, batch)| batch).collect()
    }

    fn push_late(&self, partition: usize, batch: RecordBatch) {
        self.late
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((partition, batch));
    }
}

/// Passes rows whose window is still open; diverts the others to a [`LateGate`].
#[derive(Debug)]
pub struct LateSplitExec {
    input: Arc<dyn ExecutionPlan>,
    window_start: Arc<dyn PhysicalExpr>,
    gate: Arc<LateGate>,
}

impl LateSplitExec {
    /// Splits `input` on `window_start` (the window's group expression) against `gate`.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        window_start: Arc<dyn PhysicalExpr>,
        gate: Arc<LateGate>,
    ) -> Self {
        Self {
            input,
            window_start,
            gate,
        }
    }
}

/// Splits one batch into (on-time, late) by the window start column.
fn split(
    batch: RecordBatch,
    window_start: &Arc<dyn PhysicalExpr>,
    cutoff: i64,
) -> Result<(RecordBatch, Option<RecordBatch>)> {
    if cutoff == i64::MIN || batch.num_rows() == 0 {
        return Ok((batch, None));
    }
    let starts = window_start
        .evaluate(&batch)?
        .into_array(batch.num_rows())?;
    let starts = cast(&starts, &DataType::Int64)?;
    let starts = starts
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| {
            DataFusionError::Internal("window start is not an integer timestamp".into())
        })?;
    // A NULL event time has no window: it is kept (the aggregate groups it under NULL, as batch does).
    let on_time: BooleanArray = gt(starts, &Int64Array::new_scalar(cutoff))?;
    let on_time = if starts.null_count() > 0 {
        or_kleene(&on_time, &is_null(starts)?)?
    } else {
        on_time
    };
    if on_time.true_count() == batch.num_rows() {
        return Ok((batch, None));
    }
    let late = filter_record_batch(&batch, &not(&on_time)?)?;
    let kept = filter_record_batch(&batch, &on_time)?;
    Ok((kept, Some(late)))
}

impl DisplayAs for LateSplitExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "LateSplitExec: window_start={}", self.window_start)
    }
}

impl ExecutionPlan for LateSplitExec {
    fn name(&self) -> &str {
        "LateSplitExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        f(&self.window_start)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(Self::new(
                input,
                Arc::clone(&self.window_start),
                Arc::clone(&self.gate),
            ))),
            _ => Err(DataFusionError::Internal(
                "LateSplitExec takes one child".into(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let window_start = Arc::clone(&self.window_start);
        let gate = Arc::clone(&self.gate);
        let cutoff = gate.cutoff();
        let stream = input.map(move |batch| {
            let (kept, late) = split(batch?, &window_start, cutoff)?;
            if let Some(late) = late {
                gate.push_late(partition, late);
            }
            Ok(kept)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}
