//! One partition's window functions over its held rows: the frame of each new row from
//! DataFusion's frame context, aggregates through DataFusion's accumulators (updated with the
//! rows entering the frame, retracted with those leaving it, as DataFusion's own window
//! operator does), ranking and navigation by index.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, UInt32Array, UInt64Array, new_empty_array};
use arrow::compute::kernels::zip::zip;
use arrow::compute::{cast, concat, is_null, take};
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::Accumulator;
use datafusion::logical_expr::window_state::WindowFrameContext;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

use super::function::{Function, Kind, Start};
use super::partition::{FnState, Partition};

/// One function's values for an epoch's emitted rows, gathered partition by partition: values
/// one at a time (aggregates, as DataFusion computes them) or whole arrays.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    arrays: Vec<ArrayRef>,
    /// Values after every array in `arrays`.
    scalars: Vec<ScalarValue>,
}

impl Gathered {
    fn flush(&mut self) -> Result<()> {
        if !self.scalars.is_empty() {
            let values = std::mem::take(&mut self.scalars);
            self.arrays.push(ScalarValue::iter_to_array(values)?);
        }
        Ok(())
    }

    fn push(&mut self, array: ArrayRef) -> Result<()> {
        self.flush()?;
        self.arrays.push(array);
        Ok(())
    }

    /// The values gathered, as one array of `data_type`.
    pub fn finish(&mut self, data_type: &DataType) -> Result<ArrayRef> {
        self.flush()?;
        let arrays: Vec<ArrayRef> = std::mem::take(&mut self.arrays)
            .into_iter()
            .map(|a| cast(&a, data_type))
            .collect::<std::result::Result<_, _>>()?;
        Ok(match arrays.len() {
            0 => new_empty_array(data_type),
            1 => Arc::clone(&arrays[0]),
            _ => {
                let refs: Vec<&dyn Array> = arrays.iter().map(AsRef::as_ref).collect();
                concat(&refs)?
            }
        })
    }
}

/// Gathers into `out` the values of each of `functions` for the partition's rows `range`
/// (held rows, all final; rows after `range` are peers or later rows a frame or LEAD may
/// read).
pub(crate) fn compute(
    partition: &mut Partition,
    functions: &[Function],
    contexts: &mut [WindowFrameContext],
    ts: usize,
    range: Range<usize>,
    out: &mut [Gathered],
) -> Result<()> {
    let rows = &partition.rows;
    let order = [Arc::clone(rows.column(ts))];
    let args = |f: &Function| f.arg_values(rows);
    let ranked = functions
        .iter()
        .any(|f| matches!(f.kind, Kind::Rank | Kind::DenseRank));
    // Ranks compare event times: only then are they read as integers.
    let ts_values = if ranked {
        let values = cast(rows.column(ts), &DataType::Int64)?;
        Some(
            values
                .as_any()
                .downcast_ref::<Int64Array>()
                .cloned()
                .ok_or_else(|| {
                    datafusion::error::DataFusionError::Internal("event time".into())
                })?,
        )
    } else {
        None
    };
    for (i, function) in functions.iter().enumerate() {
        let column = match &function.kind {
            Kind::Aggregate { agg, sliding } => {
                let values = args(function)?;
                let state = &mut partition.states[i];
                aggregate_values(
                    agg,
                    *sliding,
                    &values,
                    &order,
                    &mut contexts[i],
                    state,
                    range.clone(),
                    rows.num_rows(),
                    (function, &mut out[i].scalars),
                )?;
                continue;
            }
            Kind::RowNumber => {
                let first = partition.pruned + range.start as u64 + 1;
                Arc::new(UInt64Array::from_iter_values(
                    first..first + range.len() as u64,
                ))
            }
            Kind::Rank | Kind::DenseRank => {
                let ts = ts_values.as_ref().ok_or_else(|| {
                    datafusion::error::DataFusionError::Internal("ranks without times".into())
                })?;
                let carry = (partition.rank, partition.dense, partition.last_ts);
                let (column, ranks) =
                    rank_column(carry, partition.pruned, ts, range.clone(), function);
                // Both functions may be in one node: the carry moves once both have run.
                partition.pending_rank = Some(ranks);
                column
            }
            Kind::Shift { offset, default } => {
                let values = args(function)?;
                shift_column(&values[0], *offset, default, range.clone())?
            }
            Kind::Nth { n, last } => {
                let values = args(function)?;
                let head = match &partition.head {
                    Some(head) if function.start == Start::Unbounded && !*last => {
                        function.arg_values(head)?.into_iter().next()
                    }
                    _ => None,
                };
                nth_column(
                    &values[0],
                    head.as_ref(),
                    (*n, *last),
                    &order,
                    &mut contexts[i],
                    &mut partition.states[i],
                    (range.clone(), rows.num_rows(), partition.pruned),
                    function,
                )?
            }
        };
        out[i].push(column)?;
    }
    // Ranking state moves past the rows ranked (RANK and DENSE_RANK both start from it).
    if let Some((rank, dense)) = partition.pending_rank.take() {
        partition.rank = rank;
        partition.dense = dense;
    }
    if let Some(ts_values) = ts_values.filter(|_| range.end > range.start) {
        partition.last_ts = Some(if ts_values.is_null(range.end - 1) {
            None
        } else {
            Some(ts_values.value(range.end - 1))
        });
    }
    Ok(())
}

/// RANK() or DENSE_RANK() for `range`, carrying the partition's last rank (rows with equal
/// ORDER BY values share one).
fn rank_column(
    (mut rank, mut dense_rank, mut last): (u64, u64, Option<Option<i64>>),
    pruned: u64,
    ts: &Int64Array,
    range: Range<usize>,
    function: &Function,
) -> (ArrayRef, (u64, u64)) {
    let dense = matches!(function.kind, Kind::DenseRank);
    let mut values = Vec::with_capacity(range.len());
    for idx in range {
        let value = (!ts.is_null(idx)).then(|| ts.value(idx));
        if last != Some(value) {
            rank = pruned + idx as u64 + 1;
            dense_rank += 1;
            last = Some(value);
        }
        values.push(if dense { dense_rank } else { rank });
    }
    (Arc::new(UInt64Array::from(values)), (rank, dense_rank))
}

/// LAG/LEAD for `range`: the value `offset` rows back (forward when negative), else the
/// default.
fn shift_column(
    values: &ArrayRef,
    offset: i64,
    default: &ScalarValue,
    range: Range<usize>,
) -> Result<ArrayRef> {
    let n = values.len() as i64;
    let indices: UInt32Array = range
        .map(|idx| {
            let j = idx as i64 - offset;
            (0..n).contains(&j).then_some(j as u32)
        })
        .collect();
    let taken = take(values.as_ref(), &indices, None)?;
    if default.is_null() || indices.null_count() == 0 {
        return Ok(taken);
    }
    let missing = is_null(&indices)?;
    let fill = default.to_scalar()?;
    Ok(zip(&missing, &fill, &taken)?)
}

/// An aggregate over each row's frame in `range`, into `results`: rows entering the frame
/// are added, rows leaving it retracted (sliding frames), as DataFusion's window operator
/// does.
#[allow(clippy::too_many_arguments)]
fn aggregate_values(
    agg: &AggregateFunctionExpr,
    sliding: bool,
    values: &[ArrayRef],
    order: &[ArrayRef],
    context: &mut WindowFrameContext,
    state: &mut FnState,
    range: Range<usize>,
    length: usize,
    (function, results): (&Function, &mut Vec<ScalarValue>),
) -> Result<()> {
    let data_type = function.field.data_type();
    let Some(acc) = state.acc.as_mut() else {
        return Err(datafusion::error::DataFusionError::Internal(
            "window aggregate without an accumulator".into(),
        ));
    };
    let times = FrameTimes::of(function, &order[0]);
    for idx in range {
        let cur = match &times {
            Some(t) => t.frame(&state.last, length, idx),
            None => context.calculate_range(order, &state.last, length, idx)?,
        };
        results.push(inside_range(agg, sliding, &state.last, &cur, values, acc, data_type)?);
        state.last = cur;
    }
    Ok(())
}

/// A RANGE frame of fixed lengths over event times without NULLs: its bounds found by
/// comparing integers, moving on from the last row's (DataFusion's frame context computes
/// each bound with interval arithmetic on scalars, which costs more than the aggregate).
struct FrameTimes {
    times: arrow::buffer::ScalarBuffer<i64>,
    /// How far back the frame starts (`None`: the partition's first row) and ends.
    back: (Option<i64>, i64),
}

impl FrameTimes {
    fn of(function: &Function, order: &ArrayRef) -> Option<Self> {
        use arrow::datatypes::{
            TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
            TimestampNanosecondType, TimestampSecondType,
        };
        let back = function.range_units?;
        if order.null_count() > 0 {
            return None;
        }
        let times = match order.data_type() {
            DataType::Timestamp(TimeUnit::Second, _) => {
                order.as_primitive::<TimestampSecondType>().values().clone()
            }
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                order.as_primitive::<TimestampMillisecondType>().values().clone()
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                order.as_primitive::<TimestampMicrosecondType>().values().clone()
            }
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                order.as_primitive::<TimestampNanosecondType>().values().clone()
            }
            _ => return None,
        };
        Some(Self { times, back })
    }

    /// Row `idx`'s frame among the first `length` rows: from the first row at or after its
    /// time minus the start offset to the last row at or before its time minus the end
    /// offset.
    fn frame(&self, last: &Range<usize>, length: usize, idx: usize) -> Range<usize> {
        let t = &self.times;
        let now = t[idx];
        let mut start = last.start;
        if let Some(back) = self.back.0 {
            let from = now.saturating_sub(back);
            while start < length && t[start] < from {
                start += 1;
            }
        } else {
            start = 0;
        }
        let to = now.saturating_sub(self.back.1);
        let mut end = last.end.max(start);
        while end < length && t[end] <= to {
            end += 1;
        }
        start..end.max(start)
    }
}

/// The aggregate over frame `cur`, its accumulator holding frame `last`.
fn inside_range(
    agg: &AggregateFunctionExpr,
    sliding: bool,
    last: &Range<usize>,
    cur: &Range<usize>,
    values: &[ArrayRef],
    acc: &mut Box<dyn Accumulator>,
    data_type: &DataType,
) -> Result<ScalarValue> {
    let slice = |from: usize, len: usize| -> Vec<ArrayRef> {
        values.iter().map(|v| v.slice(from, len)).collect()
    };
    if cur.start == cur.end {
        if sliding && last.end > last.start {
            acc.retract_batch(&slice(last.start, last.end - last.start))?;
        }
        return agg.default_value(data_type);
    }
    if cur.end > last.end {
        acc.update_batch(&slice(last.end, cur.end - last.end))?;
    }
    if sliding && cur.start > last.start {
        acc.retract_batch(&slice(last.start, cur.start - last.start))?;
    }
    acc.evaluate()
}

/// FIRST_VALUE / NTH_VALUE / LAST_VALUE over each row's frame in `range`; from UNBOUNDED
/// PRECEDING, the n-th row of the partition comes from `head` (its first rows).
#[allow(clippy::too_many_arguments)]
fn nth_column(
    values: &ArrayRef,
    head: Option<&ArrayRef>,
    (n, last): (usize, bool),
    order: &[ArrayRef],
    context: &mut WindowFrameContext,
    state: &mut FnState,
    (range, length, pruned): (Range<usize>, usize, u64),
    function: &Function,
) -> Result<ArrayRef> {
    let from_head = function.start == Start::Unbounded && !last;
    let offset = values.len();
    let mut indices: Vec<Option<u32>> = Vec::with_capacity(range.len());
    let times = FrameTimes::of(function, &order[0]);
    for idx in range {
        let cur = match &times {
            Some(t) => t.frame(&state.last, length, idx),
            None => context.calculate_range(order, &state.last, length, idx)?,
        };
        let pick = if cur.start >= cur.end {
            None
        } else if last {
            Some(cur.end - 1)
        } else if from_head {
            let frame_rows = pruned as usize + cur.end;
            let head_rows = head.map_or(0, |h| h.len());
            (frame_rows >= n && n <= head_rows).then(|| offset + n - 1)
        } else {
            let i = cur.start + n - 1;
            (i < cur.end).then_some(i)
        };
        indices.push(pick.map(|i| i as u32));
        state.last = cur;
    }
    let indices = UInt32Array::from(indices);
    let all = match head {
        Some(head) if from_head => concat(&[values.as_ref(), head.as_ref()])?,
        _ => Arc::clone(values),
    };
    Ok(take(all.as_ref(), &indices, None)?)
}
