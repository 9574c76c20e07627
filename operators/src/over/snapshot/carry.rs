//! The `partitions` piece of an OVER checkpoint, gathered partition by partition: each
//! partition's key, counters, frames and running aggregates' states, column by column.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanArray, Int64Array, RecordBatch, UInt32Array, UInt64Array,
    new_empty_array,
};
use arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use volley_sql::stream::operator::{OperatorError, Result};

use super::super::WHAT;
use super::super::function::{Function, Kind};
use super::super::partition::Partition;

/// Which counters partitions carry: rows emitted, rows dropped, ranks.
#[derive(Debug, Clone, Copy)]
pub(super) struct Carries {
    pub emitted: bool,
    pub pruned: bool,
    pub ranks: bool,
}

/// The `partitions` piece's columns so far.
pub(super) struct Carry {
    carries: Carries,
    keys: BinaryBuilder,
    emitted: Vec<u64>,
    pruned: Vec<u64>,
    ranked: Vec<bool>,
    last_ts: Vec<Option<i64>>,
    rank: Vec<u64>,
    dense: Vec<u64>,
    max_ts: Vec<Option<i64>>,
    /// Per function with a frame: its last frame's start and end.
    frames: Vec<(Vec<u32>, Vec<u32>)>,
    /// Per running aggregate: each state field's values.
    states: Vec<Vec<Vec<ScalarValue>>>,
}

impl Carry {
    /// Room for `n` partitions of a node computing `functions`.
    pub fn new(carries: Carries, functions: &[Function], n: usize) -> Result<Self> {
        let states = functions
            .iter()
            .map(|f| match &f.kind {
                Kind::Aggregate { agg, sliding: false } => Ok(agg
                    .state_fields()
                    .map_err(OperatorError::exec(WHAT))?
                    .iter()
                    .map(|_| Vec::with_capacity(n))
                    .collect()),
                _ => Ok(Vec::new()),
            })
            .collect::<Result<_>>()?;
        let room = |present: bool| if present { n } else { 0 };
        Ok(Self {
            carries,
            keys: BinaryBuilder::with_capacity(n, n * 16),
            emitted: Vec::with_capacity(room(carries.emitted)),
            pruned: Vec::with_capacity(room(carries.pruned)),
            ranked: Vec::with_capacity(room(carries.ranks)),
            last_ts: Vec::with_capacity(room(carries.ranks)),
            rank: Vec::with_capacity(room(carries.ranks)),
            dense: Vec::with_capacity(room(carries.ranks)),
            max_ts: Vec::with_capacity(n),
            frames: functions
                .iter()
                .map(|f| {
                    let n = room(f.uses_frame());
                    (Vec::with_capacity(n), Vec::with_capacity(n))
                })
                .collect(),
            states,
        })
    }

    /// Adds partition `key`. A running aggregate's state is taken where asking takes it, and
    /// the partition carries on from an accumulator merged from it.
    pub fn push(&mut self, functions: &[Function], key: &[u8], p: &mut Partition) -> Result<()> {
        self.keys.append_value(key);
        if self.carries.emitted {
            self.emitted.push(p.emitted as u64);
        }
        if self.carries.pruned {
            self.pruned.push(p.pruned);
        }
        if self.carries.ranks {
            self.ranked.push(p.last_ts.is_some());
            self.last_ts.push(p.last_ts.flatten());
            self.rank.push(p.rank);
            self.dense.push(p.dense);
        }
        self.max_ts.push(p.max_ts);
        let frame_index = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        for (i, (f, state)) in functions.iter().zip(&mut p.states).enumerate() {
            if f.uses_frame() {
                self.frames[i].0.push(frame_index(state.last.start));
                self.frames[i].1.push(frame_index(state.last.end));
            }
            let Kind::Aggregate { agg, sliding: false } = &f.kind else {
                continue;
            };
            let acc = state.acc.as_mut().ok_or_else(|| {
                OperatorError::Internal(format!("{} has no accumulator", f.text))
            })?;
            let values = acc.state().map_err(OperatorError::exec(WHAT))?;
            if !keeps_state(agg) {
                let mut fresh = agg.create_accumulator().map_err(OperatorError::exec(WHAT))?;
                let arrays = values
                    .iter()
                    .map(ScalarValue::to_array)
                    .collect::<datafusion::error::Result<Vec<_>>>()
                    .map_err(OperatorError::exec(WHAT))?;
                fresh.merge_batch(&arrays).map_err(OperatorError::exec(WHAT))?;
                *acc = fresh;
            }
            for (column, value) in self.states[i].iter_mut().zip(values) {
                column.push(value);
            }
        }
        Ok(())
    }

    /// The piece's one batch, of `schema` (`OverState::partitions_schema`).
    pub fn finish(mut self, functions: &[Function], schema: &SchemaRef) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = vec![Arc::new(self.keys.finish())];
        if self.carries.emitted {
            columns.push(Arc::new(UInt64Array::from(self.emitted)));
        }
        if self.carries.pruned {
            columns.push(Arc::new(UInt64Array::from(self.pruned)));
        }
        if self.carries.ranks {
            columns.push(Arc::new(BooleanArray::from(self.ranked)));
            columns.push(Arc::new(Int64Array::from(self.last_ts)));
            columns.push(Arc::new(UInt64Array::from(self.rank)));
            columns.push(Arc::new(UInt64Array::from(self.dense)));
        }
        columns.push(Arc::new(Int64Array::from(self.max_ts)));
        for (i, f) in functions.iter().enumerate() {
            if f.uses_frame() {
                let (starts, ends) = std::mem::take(&mut self.frames[i]);
                columns.push(Arc::new(UInt32Array::from(starts)));
                columns.push(Arc::new(UInt32Array::from(ends)));
            }
            let Kind::Aggregate { agg, sliding: false } = &f.kind else {
                continue;
            };
            let fields = agg.state_fields().map_err(OperatorError::exec(WHAT))?;
            for (field, values) in fields.iter().zip(std::mem::take(&mut self.states[i])) {
                columns.push(if values.is_empty() {
                    new_empty_array(field.data_type())
                } else {
                    ScalarValue::iter_to_array(values).map_err(OperatorError::exec(WHAT))?
                });
            }
        }
        Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
    }
}

/// Whether `agg`'s accumulator keeps its state when asked for it (DataFusion's
/// `Accumulator::state` may take it: median, percentile_cont, string_agg, array_agg, and min
/// and max of strings and structs do).
fn keeps_state(agg: &AggregateFunctionExpr) -> bool {
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

