//! An OVER node's state in a checkpoint, as Arrow rows:
//!
//! - `pending`: input rows not final yet;
//! - `partitions`: one row per partition: its key (PARTITION BY values in Arrow's row format),
//!   rows emitted and dropped, ranking carry, greatest event time, each function's last frame
//!   and each running (UNBOUNDED PRECEDING) aggregate's state, as the aggregate's own state
//!   fields;
//! - `rows` and `head`: each partition's held rows and first rows as the functions read them
//!   (the event time and the functions' arguments), with the partition's row number in
//!   `partitions`; `full`: the held rows whole, where rows wait for LEAD.
//!
//! A sliding aggregate's accumulator is not written: it is rebuilt on restore from the held
//! rows of its last frame, which are exactly the rows it holds.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, BooleanArray, Int64Array, RecordBatch,
    UInt32Array, UInt64Array,
};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::compute::kernels::cmp::eq;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use volley_sql::stream::operator::{OperatorError, RestoredState, Result, StatePiece};

use super::function::Kind;
use super::partition::{FnState, Partition};
use super::{Key, OverState, WHAT};

/// The column naming a held row's partition.
const PARTITION: &str = "__volley_partition";

impl OverState {
    /// The schema of the `partitions` piece.
    fn partitions_schema(&self) -> Result<SchemaRef> {
        let (emitted, pruned, ranks) = self.carries();
        let mut fields = vec![Field::new("key", DataType::Binary, false)];
        if emitted {
            fields.push(Field::new("emitted", DataType::UInt64, false));
        }
        if pruned {
            fields.push(Field::new("pruned", DataType::UInt64, false));
        }
        if ranks {
            fields.push(Field::new("ranked", DataType::Boolean, false));
            fields.push(Field::new("last_ts", DataType::Int64, true));
            fields.push(Field::new("rank", DataType::UInt64, false));
            fields.push(Field::new("dense", DataType::UInt64, false));
        }
        fields.push(Field::new("max_ts", DataType::Int64, true));
        for (i, f) in self.plan.functions.iter().enumerate() {
            if f.uses_frame() {
                fields.push(Field::new(format!("f{i}_start"), DataType::UInt32, false));
                fields.push(Field::new(format!("f{i}_end"), DataType::UInt32, false));
            }
            if let Kind::Aggregate { agg, sliding: false } = &f.kind {
                for s in agg.state_fields().map_err(OperatorError::exec(WHAT))? {
                    fields.push(Field::new(
                        format!("f{i}_{}", s.name()),
                        s.data_type().clone(),
                        true,
                    ));
                }
            }
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    /// Which counters a partition's checkpoint row needs: rows emitted (only while rows wait
    /// for LEAD), rows dropped (row numbers, ranks, NTH_VALUE from the first row), the ranks.
    fn carries(&self) -> (bool, bool, bool) {
        let functions = &self.plan.functions;
        let ranks = functions
            .iter()
            .any(|f| matches!(f.kind, Kind::Rank | Kind::DenseRank));
        let pruned = ranks
            || functions.iter().any(|f| {
                matches!(f.kind, Kind::RowNumber)
                    || (matches!(f.kind, Kind::Nth { .. })
                        && f.start == super::function::Start::Unbounded)
            });
        (self.plan.lookahead() > 0, pruned, ranks)
    }

    /// `schema` with the partition column.
    fn held_schema(schema: &SchemaRef) -> SchemaRef {
        let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(PARTITION, DataType::UInt64, false)));
        Arc::new(Schema::new(fields))
    }

    /// The checkpoint's pieces. Running accumulators give their state (which takes it) and are
    /// replaced by accumulators merged from it.
    pub(super) fn pieces(&self) -> Result<Vec<StatePiece>> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| OperatorError::Internal("OVER state poisoned".into()))?;
        let inner = &mut *inner;
        let input = self.plan.input.plan.schema();
        let values = Arc::clone(&self.plan.values);
        let held = Self::held_schema(&values);
        let held_full = Self::held_schema(&input);
        let (mut full, mut full_ids) = (Vec::new(), Vec::new());
        let n = inner.partitions.len();
        let mut numbers: Vec<Vec<u64>> = (0..4).map(|_| Vec::with_capacity(n)).collect();
        let mut last_ts = Vec::new();
        let mut max_ts = Vec::new();
        let mut ranked = Vec::new();
        let mut frames: Vec<(Vec<u64>, Vec<u64>)> = vec![(Vec::new(), Vec::new()); self.plan.functions.len()];
        let mut states: Vec<Vec<Vec<ScalarValue>>> = vec![Vec::new(); self.plan.functions.len()];
        let (mut heads, mut head_ids) = (Vec::new(), Vec::new());
        for (ordinal, p) in inner.partitions.values_mut().enumerate() {
            numbers[0].push(p.emitted as u64);
            numbers[1].push(p.pruned);
            numbers[2].push(p.rank);
            numbers[3].push(p.dense);
            ranked.push(p.last_ts.is_some());
            last_ts.push(p.last_ts.flatten());
            max_ts.push(p.max_ts);
            for (i, (f, state)) in self.plan.functions.iter().zip(&mut p.states).enumerate() {
                frames[i].0.push(state.last.start as u64);
                frames[i].1.push(state.last.end as u64);
                if let (Kind::Aggregate { agg, sliding: false }, Some(acc)) = (&f.kind, &mut state.acc) {
                    let values = acc.state().map_err(OperatorError::exec(WHAT))?;
                    if !keeps_state(agg) {
                        // Its state was taken: carry on from an accumulator merged from it.
                        let mut fresh =
                            agg.create_accumulator().map_err(OperatorError::exec(WHAT))?;
                        let arrays = values
                            .iter()
                            .map(|v| v.to_array())
                            .collect::<datafusion::error::Result<Vec<_>>>()
                            .map_err(OperatorError::exec(WHAT))?;
                        fresh.merge_batch(&arrays).map_err(OperatorError::exec(WHAT))?;
                        *acc = fresh;
                    }
                    states[i].push(values);
                }
            }
            if let Some(whole) = &p.full {
                full.push(whole.clone());
                full_ids.extend(std::iter::repeat_n(ordinal as u64, whole.num_rows()));
            }
            if let Some(head) = &p.head {
                heads.push(head.clone());
                head_ids.extend(std::iter::repeat_n(ordinal as u64, head.num_rows()));
            }
        }
        // The keys and held rows, column by column, in the same order (the map is unchanged).
        let mut keys = BinaryBuilder::with_capacity(n, n * 16);
        let mut held_columns: Vec<Vec<&dyn Array>> =
            (0..values.fields().len()).map(|_| Vec::with_capacity(n)).collect();
        let mut row_ids = Vec::new();
        for (ordinal, (key, p)) in inner.partitions.iter().enumerate() {
            keys.append_value(key);
            for (c, column) in p.rows.columns().iter().enumerate() {
                held_columns[c].push(column.as_ref());
            }
            row_ids.extend(std::iter::repeat_n(ordinal as u64, p.rows.num_rows()));
        }
        let mut held_rows: Vec<ArrayRef> = held_columns
            .iter()
            .zip(values.fields())
            .map(|(parts, field)| {
                if parts.is_empty() {
                    Ok(arrow::array::new_empty_array(field.data_type()))
                } else {
                    arrow::compute::concat(parts)
                }
            })
            .collect::<std::result::Result<_, _>>()?;
        held_rows.push(Arc::new(UInt64Array::from(row_ids)));
        let held_rows = RecordBatch::try_new(Arc::clone(&held), held_rows)?;
        let schema = self.partitions_schema()?;
        let (with_emitted, with_pruned, with_ranks) = self.carries();
        let mut columns: Vec<ArrayRef> = vec![Arc::new(keys.finish())];
        if with_emitted {
            columns.push(Arc::new(UInt64Array::from(std::mem::take(&mut numbers[0]))));
        }
        if with_pruned {
            columns.push(Arc::new(UInt64Array::from(std::mem::take(&mut numbers[1]))));
        }
        if with_ranks {
            columns.push(Arc::new(BooleanArray::from(ranked)));
            columns.push(Arc::new(Int64Array::from(last_ts)));
            columns.push(Arc::new(UInt64Array::from(std::mem::take(&mut numbers[2]))));
            columns.push(Arc::new(UInt64Array::from(std::mem::take(&mut numbers[3]))));
        }
        columns.push(Arc::new(Int64Array::from(max_ts)));
        let frame_index = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        for (i, f) in self.plan.functions.iter().enumerate() {
            if f.uses_frame() {
                let (starts, ends) = std::mem::take(&mut frames[i]);
                columns.push(Arc::new(UInt32Array::from_iter_values(
                    starts.into_iter().map(frame_index),
                )));
                columns.push(Arc::new(UInt32Array::from_iter_values(
                    ends.into_iter().map(frame_index),
                )));
            }
            if let Kind::Aggregate { agg, sliding: false } = &f.kind {
                let fields = agg.state_fields().map_err(OperatorError::exec(WHAT))?;
                for (j, field) in fields.iter().enumerate() {
                    let column = states[i].iter().map(|s| s[j].clone());
                    let array = if states[i].is_empty() {
                        arrow::array::new_empty_array(field.data_type())
                    } else {
                        ScalarValue::iter_to_array(column).map_err(OperatorError::exec(WHAT))?
                    };
                    columns.push(array);
                }
            }
        }
        let partitions = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        let pending = inner.pending.clone();
        Ok(vec![
            StatePiece {
                name: "pending".into(),
                schema: Arc::clone(&input),
                rows: pending,
            },
            StatePiece {
                name: "partitions".into(),
                schema,
                rows: vec![partitions],
            },
            StatePiece {
                name: "rows".into(),
                schema: Arc::clone(&held),
                rows: vec![held_rows],
            },
            StatePiece {
                name: "head".into(),
                schema: Arc::clone(&held),
                rows: vec![with_partitions(&held, &values, &heads, head_ids)?],
            },
            StatePiece {
                name: "full".into(),
                schema: Arc::clone(&held_full),
                rows: vec![with_partitions(&held_full, &input, &full, full_ids)?],
            },
        ])
    }

    /// Loads a checkpoint's pieces into the empty state.
    pub(super) fn load(&mut self, state: &mut RestoredState) -> Result<()> {
        let missing = |name: &str| {
            OperatorError::Checkpoint(format!(
                "the checkpoint of {} has no '{name}' piece",
                self.plan.output_name
            ))
        };
        let pending = state.take("pending").ok_or_else(|| missing("pending"))?;
        let partitions = state.take("partitions").ok_or_else(|| missing("partitions"))?;
        let rows = state.take("rows").ok_or_else(|| missing("rows"))?;
        let heads = state.take("head").ok_or_else(|| missing("head"))?;
        let full = state.take("full").unwrap_or_default();
        let input = self.plan.input.plan.schema();
        let values = Arc::clone(&self.plan.values);
        let rows = by_partition(&Self::held_schema(&values), &values, rows)?;
        let heads = by_partition(&Self::held_schema(&values), &values, heads)?;
        let full = by_partition(&Self::held_schema(&input), &input, full)?;
        let lead = self.plan.lookahead() > 0;
        let schema = self.partitions_schema()?;
        let partitions = concat_batches(&schema, partitions.iter())?;
        let plan = self.plan.clone();
        let (with_emitted, with_pruned, with_ranks) = self.carries();
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        inner.pending = pending.into_iter().filter(|b| b.num_rows() > 0).collect();
        let u64s = |name: &str| typed::<UInt64Array>(&partitions, name);
        let i64s = |name: &str| typed::<Int64Array>(&partitions, name);
        let u32s = |name: &str| typed::<UInt32Array>(&partitions, name);
        let keys = typed::<BinaryArray>(&partitions, "key")?;
        let optional = |present: bool, name: &str| present.then(|| u64s(name)).transpose();
        let emitted = optional(with_emitted, "emitted")?;
        let pruned = optional(with_pruned, "pruned")?;
        let rank = optional(with_ranks, "rank")?;
        let dense = optional(with_ranks, "dense")?;
        let ranked = with_ranks
            .then(|| typed::<BooleanArray>(&partitions, "ranked"))
            .transpose()?;
        let last_ts = with_ranks.then(|| i64s("last_ts")).transpose()?;
        let max_ts = i64s("max_ts")?;
        let frames = plan
            .functions
            .iter()
            .enumerate()
            .map(|(i, f)| {
                f.uses_frame()
                    .then(|| Ok((u32s(&format!("f{i}_start"))?, u32s(&format!("f{i}_end"))?)))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let value = |a: &Int64Array, i: usize| (!a.is_null(i)).then(|| a.value(i));
        for p in 0..partitions.num_rows() {
            let held = rows
                .get(&(p as u64))
                .cloned()
                .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(&values)));
            let whole = lead.then(|| {
                full.get(&(p as u64))
                    .cloned()
                    .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(&input)))
            });
            let mut partition = Partition::new((held, whole), &plan.functions, 0, None)
                .map_err(OperatorError::exec(WHAT))?;
            partition.head = heads.get(&(p as u64)).cloned();
            // Without LEAD every held row was emitted.
            partition.emitted = emitted.as_ref().map_or(partition.rows.num_rows(), |e| {
                usize::try_from(e.value(p)).unwrap_or(usize::MAX)
            });
            partition.pruned = pruned.as_ref().map_or(0, |a| a.value(p));
            partition.rank = rank.as_ref().map_or(0, |a| a.value(p));
            partition.dense = dense.as_ref().map_or(0, |a| a.value(p));
            if let (Some(ranked), Some(last_ts)) = (&ranked, &last_ts) {
                partition.last_ts = ranked.value(p).then(|| value(last_ts, p));
            }
            partition.max_ts = value(&max_ts, p);
            for (i, f) in plan.functions.iter().enumerate() {
                let (start, end) = frames[i]
                    .as_ref()
                    .map_or((0, 0), |(s, e)| (s.value(p) as usize, e.value(p) as usize));
                let fn_state = &mut partition.states[i];
                fn_state.last = Range { start, end };
                restore_accumulator(f, fn_state, &partition.rows, &partitions, i, p)?;
            }
            if partition.emitted > partition.rows.num_rows() {
                return Err(OperatorError::Checkpoint(format!(
                    "the OVER checkpoint's partition {p} emitted more rows than it holds"
                )));
            }
            let key: Key = keys.value(p).into();
            if partition.waiting() > 0 {
                inner.waiting.insert(key.clone());
            }
            inner.partitions.insert(key, partition);
        }
        Ok(())
    }
}

/// An aggregate's accumulator as it was: a running one merged from its state; a sliding one
/// updated with the rows of its last frame.
fn restore_accumulator(
    function: &super::function::Function,
    state: &mut FnState,
    rows: &RecordBatch,
    partitions: &RecordBatch,
    i: usize,
    p: usize,
) -> Result<()> {
    let Kind::Aggregate { agg, sliding } = &function.kind else {
        return Ok(());
    };
    let Some(acc) = state.acc.as_mut() else {
        return Ok(());
    };
    if *sliding {
        let range = state.last.clone();
        if range.end > rows.num_rows() || range.start > range.end {
            return Err(OperatorError::Checkpoint(format!(
                "the OVER checkpoint's frame {range:?} is outside the partition's {} rows",
                rows.num_rows()
            )));
        }
        if range.end > range.start {
            let values = rows.columns()[function.cols.clone()].to_vec();
            let slice: Vec<ArrayRef> = values
                .iter()
                .map(|v| v.slice(range.start, range.end - range.start))
                .collect();
            acc.update_batch(&slice).map_err(OperatorError::exec(WHAT))?;
        }
        return Ok(());
    }
    let fields = agg.state_fields().map_err(OperatorError::exec(WHAT))?;
    let arrays = fields
        .iter()
        .map(|f| {
            partitions
                .column_by_name(&format!("f{i}_{}", f.name()))
                .map(|c| c.slice(p, 1))
                .ok_or_else(|| {
                    OperatorError::Checkpoint(format!(
                        "no state '{}' of {} in the OVER checkpoint",
                        f.name(),
                        function.text
                    ))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    acc.merge_batch(&arrays).map_err(OperatorError::exec(WHAT))
}

/// The partitions' `rows`, one batch, with each row's partition number from `ids`.
fn with_partitions(
    held: &SchemaRef,
    input: &SchemaRef,
    rows: &[RecordBatch],
    ids: Vec<u64>,
) -> Result<RecordBatch> {
    let all = concat_batches(input, rows.iter())?;
    let mut columns = all.columns().to_vec();
    columns.push(Arc::new(UInt64Array::from(ids)));
    Ok(RecordBatch::try_new(Arc::clone(held), columns)?)
}

/// Whether `agg`'s accumulator keeps its state when asked for it (DataFusion's
/// `Accumulator::state` may take it: median, percentile_cont, string_agg, array_agg, and min
/// and max of strings and structs do).
fn keeps_state(agg: &datafusion::physical_expr::aggregate::AggregateFunctionExpr) -> bool {
    match agg.fun().name() {
        "min" | "max" => agg.field().data_type().is_primitive(),
        name => matches!(
            name,
            "count"
                | "sum"
                | "avg"
                | "bool_and"
                | "bool_or"
                | "bit_and"
                | "bit_or"
                | "bit_xor"
                | "var_samp"
                | "var_pop"
                | "stddev"
                | "stddev_pop"
        ),
    }
}

/// Held rows by partition row number, without the partition column.
fn by_partition(
    held: &SchemaRef,
    input: &SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<std::collections::HashMap<u64, RecordBatch>> {
    let all = concat_batches(held, batches.iter())?;
    let mut out = std::collections::HashMap::new();
    let Some(column) = all.column_by_name(PARTITION) else {
        return Ok(out);
    };
    let ids = column
        .as_any()
        .downcast_ref::<UInt64Array>()
        .cloned()
        .ok_or_else(|| OperatorError::Checkpoint(format!("'{PARTITION}' is not UInt64")))?;
    let data = all.project(&(0..input.fields().len()).collect::<Vec<_>>())?;
    // Rows are written partition by partition: each partition's rows are one run.
    let mut i = 0;
    while i < ids.len() {
        let id = ids.value(i);
        let mut j = i + 1;
        while j < ids.len() && ids.value(j) == id {
            j += 1;
        }
        let rows = data.slice(i, j - i);
        if out.insert(id, rows).is_some() {
            let mask = eq(&ids, &UInt64Array::new_scalar(id))?;
            let rows = filter_record_batch(&data, &mask)?;
            out.insert(id, rows);
        }
        i = j;
    }
    Ok(out)
}

/// Column `name` of a checkpoint's `partitions` rows, as an `A`.
fn typed<A: Array + Clone + 'static>(partitions: &RecordBatch, name: &str) -> Result<A> {
    partitions
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<A>().cloned())
        .ok_or_else(|| {
            OperatorError::Checkpoint(format!(
                "the OVER checkpoint has no column '{name}' of the expected type"
            ))
        })
}
