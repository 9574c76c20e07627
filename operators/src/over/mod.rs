//! OVER windows: `agg(x) OVER (PARTITION BY k ORDER BY event_time <frame>)`, `LAG`/`LEAD`,
//! `FIRST_VALUE`/`LAST_VALUE`/`NTH_VALUE` and `ROW_NUMBER`/`RANK`/`DENSE_RANK`, streamed with
//! the values batch computes for the same rows.
//!
//! An epoch: new rows wait until the watermark passes their event time (then every row at or
//! before it, its peers included, is known). Rows made final are sorted by partition, event
//! time and then their other columns (the order batch uses too: see
//! `volley_sql::stream::ties`), appended to their partition's held rows, and each new row's
//! functions are computed over its frame, as DataFusion's window operator computes them:
//! DataFusion's frame bounds, DataFusion's accumulators updated with the rows entering a
//! frame and retracted with the rows leaving it. A row waiting for LEAD's later rows is
//! emitted once they are final, or at the end of input.
//!
//! A partition then drops the rows no frame, LAG or LEAD can read again, and keeps only a
//! carry of what it dropped (its row count, its last rank, its first rows for FIRST_VALUE
//! from UNBOUNDED PRECEDING, a running accumulator); a partition whose frames are all past
//! and that carries nothing is forgotten. Rows older than the watermark they were made final
//! by are late: dead letters, at the leaf.

mod evaluate;
mod function;
mod operator;
mod partition;
mod plan;
mod rule;
mod snapshot;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array};
use arrow::compute::kernels::cmp::lt;
use arrow::compute::{
    cast, concat_batches, filter_record_batch, not,
    take_record_batch,
};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::window_state::WindowFrameContext;
use volley_sql::stream::operator::{OperatorError, Result};
use volley_sql::stream::ties::TIE_ORDER;
use volley_sql::stream::window::nanos_per_unit;

pub(crate) use self::function::{Kind, Start, classify};
pub use self::plan::OverPlan;
pub use self::rule::OverRule;
use self::partition::Partition;
use crate::two_streams::{SideFrontier, side_rows};

/// What the OVER node is, in execution errors.
const WHAT: &str = "the OVER window";

/// A partition's key: its PARTITION BY values in Arrow's row format.
type Key = Box<[u8]>;

/// An OVER node's state.
#[derive(Debug)]
pub struct OverState {
    plan: OverPlan,
    task_ctx: Arc<TaskContext>,
    /// Rows with an event time before it are final (the event time's unit).
    mark: Option<i64>,
    /// The watermark of its output, nanoseconds.
    output_mark: Option<i64>,
    inner: Mutex<Inner>,
}

/// What an epoch changes (apart, so a checkpoint can read accumulators, which it must take).
#[derive(Debug)]
struct Inner {
    /// Input rows not final yet.
    pending: Vec<RecordBatch>,
    partitions: datafusion::common::HashMap<Key, Partition>,
    /// Partitions with rows not yet emitted (waiting for LEAD's rows).
    waiting: datafusion::common::HashSet<Key>,
    /// The mark partitions were last looked at by, to forget those nothing of which can matter
    /// any more (or idle for `state_ttl`), and the rows made final since.
    swept: (Option<i64>, usize),
    contexts: Vec<WindowFrameContext>,
    /// Partition keys, in Arrow's row format.
    keys: RowConverter,
    /// The order rows are sorted in: partition, event time, tie columns.
    order: RowConverter,
}

impl OverState {
    /// Empty state for `plan`.
    pub fn new(plan: OverPlan, task_ctx: Arc<TaskContext>) -> Self {
        let schema = plan.input.plan.schema();
        let types: Vec<DataType> = plan
            .partition_by
            .iter()
            .map(|e| e.data_type(&schema).unwrap_or(DataType::Null))
            .collect();
        let fields: Vec<SortField> = types.iter().map(|t| SortField::new(t.clone())).collect();
        let mut order: Vec<SortField> = types
            .iter()
            .map(|t| SortField::new_with_options(t.clone(), TIE_ORDER))
            .collect();
        for c in std::iter::once(plan.ts).chain(plan.ties.iter().copied()) {
            order.push(SortField::new_with_options(
                schema.field(c).data_type().clone(),
                TIE_ORDER,
            ));
        }
        // The rule refused keys Arrow's row format cannot hold, and ties are only such columns.
        let keys = RowConverter::new(fields).unwrap_or_else(|_| unreachable!("checked when planned"));
        let order = RowConverter::new(order).unwrap_or_else(|_| unreachable!("checked when planned"));
        let contexts = contexts(&plan);
        Self {
            plan,
            task_ctx,
            mark: None,
            output_mark: None,
            inner: Mutex::new(Inner {
                pending: Vec::new(),
                partitions: datafusion::common::HashMap::default(),
                waiting: datafusion::common::HashSet::default(),
                swept: (None, 0),
                contexts,
                keys,
                order,
            }),
        }
    }

    fn per(&self) -> i64 {
        nanos_per_unit(self.plan.unit)
    }

    /// How many first rows of each partition FIRST_VALUE/NTH_VALUE from UNBOUNDED PRECEDING
    /// read.
    fn head_rows(&self) -> usize {
        self.plan
            .functions
            .iter()
            .filter_map(|f| match f.kind {
                Kind::Nth { n, last: false } if f.start == Start::Unbounded => Some(n),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// The input's watermark in the event time's unit; `None` while unknown.
    fn input_mark(
        &self,
        watermarks: &HashMap<String, Option<i64>>,
    ) -> Option<i64> {
        let wm = match &self.plan.input.frontier {
            SideFrontier::Sources { sources, .. } => {
                volley_sql::stream::operator::min_watermark(sources, watermarks)?
            }
            SideFrontier::Aggregate { input } => watermarks.get(input).copied().flatten()?,
        };
        Some(if wm == i64::MAX {
            i64::MAX
        } else {
            wm.div_euclid(self.per())
        })
    }

    /// One epoch (see the module docs): the rows it emits.
    async fn run(
        &mut self,
        read: bool,
        watermarks: &HashMap<String, Option<i64>>,
        all_done: bool,
    ) -> Result<Vec<RecordBatch>> {
        if read {
            let rows = side_rows(&self.plan.input, &self.task_ctx, WHAT).await?;
            let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
            inner
                .pending
                .extend(rows.into_iter().filter(|b| b.num_rows() > 0));
        }
        let mark = if all_done {
            Some(i64::MAX)
        } else {
            self.input_mark(watermarks)
        };
        let Some(mark) = mark else {
            return Ok(Vec::new());
        };
        if self.mark.is_some_and(|m| m >= mark) && !all_done {
            return Ok(Vec::new());
        }
        let previous = self.mark;
        let head = self.head_rows();
        let per = self.per();
        let plan = &self.plan;
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        let ready = take_final(&mut inner.pending, plan.ts, mark, previous, all_done)?;
        let mut out = EpochOut::new(plan);
        inner.process(plan, ready, head, all_done, &mut out)?;
        inner.sweep(plan, mark, per, &mut out)?;
        let out = out.finish(plan)?;
        let output_mark = inner.output_mark(plan, mark, per);
        if let SideFrontier::Sources { gate, .. } = &plan.input.frontier {
            gate.set_cutoff(mark.saturating_sub(1));
        }
        self.mark = Some(mark);
        self.output_mark = output_mark;
        Ok(out.into_iter().collect())
    }
}

/// An epoch's emitted rows and their functions' values, in one order.
#[derive(Debug)]
struct EpochOut {
    rows: Vec<RecordBatch>,
    values: Vec<evaluate::Gathered>,
    /// Every partition emits exactly the rows appended to it (no LEAD): the epoch's sorted
    /// final rows are the emitted rows, whole.
    fast: bool,
}

impl EpochOut {
    fn new(plan: &OverPlan) -> Self {
        Self {
            rows: Vec::new(),
            values: plan.functions.iter().map(|_| Default::default()).collect(),
            fast: plan.lookahead() == 0,
        }
    }

    /// The rows emitted, with their values: one batch, or none.
    fn finish(mut self, plan: &OverPlan) -> Result<Option<RecordBatch>> {
        let input = plan.input.plan.schema();
        let rows = concat_batches(&input, self.rows.iter())?;
        if rows.num_rows() == 0 {
            return Ok(None);
        }
        let mut columns = rows.columns().to_vec();
        for (values, f) in self.values.iter_mut().zip(&plan.functions) {
            columns.push(
                values
                    .finish(f.field.data_type())
                    .map_err(OperatorError::exec(WHAT))?,
            );
        }
        Ok(Some(RecordBatch::try_new(
            Arc::clone(&plan.port.schema),
            columns,
        )?))
    }
}

/// One frame context per function (they hold no state between rows).
fn contexts(plan: &OverPlan) -> Vec<WindowFrameContext> {
    let order = vec![arrow::compute::SortOptions {
        descending: false,
        nulls_first: false,
    }];
    plan.functions
        .iter()
        .map(|f| WindowFrameContext::new(Arc::clone(&f.frame), order.clone()))
        .collect()
}

/// What partitions hold of `batch`'s rows: the event time and each function's arguments.
fn values(plan: &OverPlan, batch: &RecordBatch) -> Result<RecordBatch> {
    let mut columns = vec![Arc::clone(batch.column(plan.ts))];
    for f in &plan.functions {
        for (arg, at) in f.args.iter().zip(&f.at) {
            if matches!(at, function::Arg::Literal(_)) {
                continue;
            }
            let value = arg
                .evaluate(batch)
                .and_then(|v| v.into_array(batch.num_rows()))
                .map_err(OperatorError::exec(WHAT))?;
            columns.push(value);
        }
    }
    Ok(RecordBatch::try_new(Arc::clone(&plan.values), columns)?)
}

/// The event times of `batch`'s column `ts` as integers.
fn times(batch: &RecordBatch, ts: usize) -> Result<Int64Array> {
    let values = cast(batch.column(ts), &DataType::Int64)?;
    values
        .as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .ok_or_else(|| OperatorError::Internal("event times are not integers".into()))
}

/// Takes the rows of `pending` before `mark` (all of them at the end of input), as one batch.
fn take_final(
    pending: &mut Vec<RecordBatch>,
    ts: usize,
    mark: i64,
    previous: Option<i64>,
    all_done: bool,
) -> Result<Option<RecordBatch>> {
    let Some(schema) = pending.first().map(RecordBatch::schema) else {
        return Ok(None);
    };
    if all_done {
        let all = concat_batches(&schema, pending.iter())?;
        pending.clear();
        return Ok(Some(all));
    }
    let mut ready = Vec::new();
    let mut kept = Vec::new();
    for batch in pending.drain(..) {
        let times = times(&batch, ts)?;
        if let (Some(previous), Some(min)) = (previous, arrow::compute::min(&times))
            && min < previous
        {
            return Err(OperatorError::Internal(format!(
                "{WHAT} got a row at {min}, before the watermark {previous} it already emitted by"
            )));
        }
        let before: BooleanArray = lt(&times, &Int64Array::new_scalar(mark))?;
        // A NULL time is never final before the end of input (it sorts last).
        let before = if before.null_count() > 0 {
            arrow::compute::prep_null_mask_filter(&before)
        } else {
            before
        };
        match before.true_count() {
            0 => kept.push(batch),
            n if n == batch.num_rows() => ready.push(batch),
            _ => {
                ready.push(filter_record_batch(&batch, &before)?);
                kept.push(filter_record_batch(&batch, &not(&before)?)?);
            }
        }
    }
    *pending = kept;
    if ready.is_empty() {
        return Ok(None);
    }
    Ok(Some(concat_batches(&schema, ready.iter())?))
}

impl Inner {
    /// Appends final rows to their partitions and emits every row whose values are known.
    fn process(
        &mut self,
        plan: &OverPlan,
        ready: Option<RecordBatch>,
        head: usize,
        all_done: bool,
        out: &mut EpochOut,
    ) -> Result<()> {
        let mut touched = datafusion::common::HashSet::<Key>::default();
        if let Some(batch) = ready.filter(|b| b.num_rows() > 0) {
            let (batch, keys) = self.sorted(plan, &batch)?;
            if out.fast {
                out.rows.push(batch.clone());
            }
            let times = times(&batch, plan.ts)?;
            let values = values(plan, &batch)?;
            self.swept.1 += batch.num_rows();
            // No PARTITION BY: one partition, with an empty key.
            let rows = if keys.is_empty() {
                None
            } else {
                Some(self.keys.convert_columns(&keys)?)
            };
            let n = batch.num_rows();
            let mut i = 0;
            while i < n {
                let mut j = i + 1;
                let key: &[u8] = match &rows {
                    Some(rows) => {
                        while j < n && rows.row(j) == rows.row(i) {
                            j += 1;
                        }
                        rows.row(i).data()
                    }
                    None => {
                        j = n;
                        &[]
                    }
                };
                let part = values.slice(i, j - i);
                let full = (!out.fast).then(|| batch.slice(i, j - i));
                // Times sort NULLs last: the run's greatest time is its last non-NULL one.
                let max_ts = (i..j).rev().find(|r| times.is_valid(*r)).map(|r| times.value(r));
                match self.partitions.get_mut(key) {
                    Some(partition) => partition
                        .append((&part, full.as_ref()), head, max_ts)
                        .map_err(OperatorError::exec(WHAT))?,
                    None => {
                        let partition =
                            Partition::new((part, full), &plan.functions, head, max_ts)
                                .map_err(OperatorError::exec(WHAT))?;
                        self.partitions.insert(key.into(), partition);
                    }
                }
                self.emit(plan, key, all_done, out)?;
                if all_done {
                    touched.insert(Key::from(key));
                }
                i = j;
            }
        }
        if all_done {
            let waiting: Vec<Key> = self
                .waiting
                .iter()
                .filter(|k| !touched.contains(*k))
                .cloned()
                .collect();
            for key in waiting {
                self.emit(plan, &key, true, out)?;
            }
        }
        Ok(())
    }

    /// `batch` sorted by partition, event time and the tie columns, with its partition keys.
    fn sorted(
        &self,
        plan: &OverPlan,
        batch: &RecordBatch,
    ) -> Result<(RecordBatch, Vec<ArrayRef>)> {
        let keys: Vec<ArrayRef> = plan
            .partition_by
            .iter()
            .map(|e| e.evaluate(batch).and_then(|v| v.into_array(batch.num_rows())))
            .collect::<datafusion::error::Result<_>>()
            .map_err(OperatorError::exec(WHAT))?;
        // Partition, event time, then the tie columns, as Arrow's row format: one memcmp per
        // comparison, however many columns.
        let mut columns: Vec<ArrayRef> = keys.clone();
        for c in std::iter::once(plan.ts).chain(plan.ties.iter().copied()) {
            columns.push(Arc::clone(batch.column(c)));
        }
        let rows = self.order.convert_columns(&columns)?;
        let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
        order.sort_unstable_by(|a, b| rows.row(*a as usize).cmp(&rows.row(*b as usize)));
        let indices = arrow::array::UInt32Array::from(order);
        let sorted = take_record_batch(batch, &indices)?;
        let keys = keys
            .iter()
            .map(|k| arrow::compute::take(k.as_ref(), &indices, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok((sorted, keys))
    }

    /// Computes and emits the rows of partition `key` whose values are known (all of them at
    /// the end of input), then drops what no function can read again.
    fn emit(&mut self, plan: &OverPlan, key: &[u8], all_done: bool, out: &mut EpochOut) -> Result<()> {
        let Some(partition) = self.partitions.get_mut(key) else {
            return Ok(());
        };
        let held = partition.rows.num_rows();
        let ready = if all_done {
            held
        } else {
            held.saturating_sub(plan.lookahead()).max(partition.emitted)
        };
        if ready > partition.emitted {
            let from = partition.emitted;
            evaluate::compute(
                partition,
                &plan.functions,
                &mut self.contexts,
                0,
                from..ready,
                &mut out.values,
            )
            .map_err(OperatorError::exec(WHAT))?;
            if !out.fast {
                let full = partition.full.as_ref().ok_or_else(|| {
                    OperatorError::Internal("an OVER partition without its whole rows".into())
                })?;
                out.rows.push(full.slice(from, ready - from));
            }
            partition.emitted = ready;
        }
        partition.prune(&plan.functions);
        if partition.waiting() > 0 {
            self.waiting.insert(key.into());
        } else if !self.waiting.is_empty() {
            self.waiting.remove(key);
        }
        Ok(())
    }

    /// Forgets the partitions nothing of which can matter from `mark` on (their frames past,
    /// or their bucket of the event time closed), and those idle for `state_ttl` (emitting
    /// their waiting rows as at the end of input). Looks once the mark
    /// has moved on by the shortest frame (or `state_ttl`) and at least half as many rows as
    /// there are partitions have been made final since: each look's cost is paid by the rows.
    fn sweep(&mut self, plan: &OverPlan, mark: i64, per: i64, out: &mut EpochOut) -> Result<()> {
        let Some(every) = sweep_every(plan, per) else {
            return Ok(());
        };
        let (swept, rows) = self.swept;
        let moved = swept.is_none_or(|s| mark.saturating_sub(s) >= every);
        if !moved || rows < self.partitions.len() / 2 {
            return Ok(());
        }
        self.swept = (Some(mark), 0);
        let ttl = ttl_units(plan, per);
        let idle = |p: &Partition| {
            ttl.is_some_and(|ttl| p.max_ts.is_some_and(|ts| ts.saturating_add(ttl) < mark))
        };
        // Idle partitions' waiting rows are emitted first, as at the end of input.
        let flush: Vec<Key> = self
            .waiting
            .iter()
            .filter(|k| self.partitions.get(*k).is_some_and(idle))
            .cloned()
            .collect();
        let fast = std::mem::replace(&mut out.fast, false);
        for key in &flush {
            self.emit(plan, key, true, out)?;
        }
        out.fast = fast;
        let functions = &plan.functions;
        // A partition of one bucket of the event time ends with its bucket.
        let closed = |p: &Partition| {
            plan.bucket.as_ref().is_some_and(|(width, _)| {
                p.waiting() == 0
                    && p.max_ts.is_some_and(|ts| ts.saturating_add(width / per + 1) < mark)
            })
        };
        self.partitions
            .retain(|_, p| !(idle(p) || closed(p) || p.forgettable(functions, mark, per)));
        if !flush.is_empty() {
            let partitions = &self.partitions;
            self.waiting.retain(|k| partitions.contains_key(k));
        }
        Ok(())
    }

    /// The output's watermark (nanoseconds): `mark`, or the earliest row still waiting.
    fn output_mark(&self, plan: &OverPlan, mark: i64, per: i64) -> Option<i64> {
        let mut earliest = mark;
        for key in &self.waiting {
            let Some(p) = self.partitions.get(key) else {
                continue;
            };
            if let Ok(times) = times(&p.rows.slice(p.emitted, 1), plan.ts)
                && let Some(ts) = arrow::compute::min(&times)
            {
                earliest = earliest.min(ts);
            }
        }
        Some(if earliest == i64::MAX {
            i64::MAX
        } else {
            earliest.saturating_mul(per)
        })
    }

    /// Bytes of memory the rows held and waiting take.
    fn bytes(&self) -> usize {
        let held: usize = self
            .partitions
            .values()
            .map(|p| p.rows.get_array_memory_size())
            .sum();
        held + self
            .pending
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum::<usize>()
    }

    /// Rows held in partitions and waiting to be final.
    fn rows(&self) -> usize {
        let held: usize = self.partitions.values().map(|p| p.rows.num_rows()).sum();
        held + self.pending.iter().map(RecordBatch::num_rows).sum::<usize>()
    }
}

/// The sink's `state_ttl` in the event time's unit.
fn ttl_units(plan: &OverPlan, per: i64) -> Option<i64> {
    plan.state_ttl
        .map(|ttl| i64::try_from(ttl.as_nanos()).unwrap_or(i64::MAX) / per)
}

/// How far the mark moves between looks for partitions to forget: the longest frame of an
/// OVER whose frames carry nothing (then a partition whose last row is that far back matters
/// no more), `state_ttl`, or the width of a bucket of the event time in PARTITION BY,
/// whichever is shortest; `None` when none forgets anything.
fn sweep_every(plan: &OverPlan, per: i64) -> Option<i64> {
    let frames: Option<Vec<i64>> = plan
        .functions
        .iter()
        .map(|f| match (f.uses_frame(), f.start) {
            (true, Start::Rows(0)) => Some(1),
            (true, Start::Range(back)) => Some(back / per + 1),
            _ => None,
        })
        .collect();
    let frames = frames.and_then(|b| b.into_iter().max());
    let ttl = ttl_units(plan, per).map(|t| t.max(1));
    let bucket = plan.bucket.as_ref().map(|(width, _)| width / per + 1);
    [frames, ttl, bucket].into_iter().flatten().min()
}
