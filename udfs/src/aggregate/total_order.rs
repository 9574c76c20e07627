//! `min` and `max` over floats in SQL's total order: NaN above every number (all NaNs equal),
//! -0.0 below +0.0, as PostgreSQL, DuckDB and Spark order them.
//!
//! DataFusion 55's grouped MIN/MAX accumulators compare floats with `partial_cmp` and replace
//! the running value whenever a comparison is undefined, so a group holding a NaN ends with
//! whichever value came after the NaN: the answer depends on row order, micro-batch size and
//! partitioning (apache/datafusion#24432, fixed upstream by apache/datafusion#24435). They also
//! start from `f64::MIN`, so a group of only `-inf` reports `f64::MIN`. This override replaces
//! both accumulators for Float16/32/64, grouped and ungrouped, partial and final; every other
//! type goes to DataFusion's own. Delete this file once a DataFusion release with the fix is
//! pinned (and `aggregate::tests` still pass against the built-ins).

use std::sync::Arc;

use std::marker::PhantomData;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, PrimitiveArray};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{ArrowPrimitiveType, DataType, Float16Type, Float32Type, Float64Type};
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, StatisticsArgs,
};
use datafusion_functions_aggregate_common::aggregate::groups_accumulator::accumulate::NullState;

/// A float type ordered by SQL's total order.
pub(crate) trait TotalOrderFloat: ArrowPrimitiveType {
    /// The value's rank: NaN (any sign or payload) is the largest, -0.0 < +0.0.
    fn rank(v: Self::Native) -> i64;
    /// The value of a rank: the inverse of [`TotalOrderFloat::rank`], every NaN rank giving
    /// [`TotalOrderFloat::NAN`].
    fn unrank(rank: i64) -> Self::Native;
    /// Whether `v` is +inf or -inf.
    fn is_infinite(v: Self::Native) -> bool;
    /// `v` with -0.0 as +0.0 and any NaN as [`TotalOrderFloat::NAN`].
    fn canonical(v: Self::Native) -> Self::Native;
    /// The one NaN results report, whatever NaN the input held.
    const NAN: Self::Native;
}

macro_rules! total_order_float {
    ($t:ty, $native:ty, $signed:ty, $unsigned:ty) => {
        impl TotalOrderFloat for $t {
            #[inline]
            fn rank(v: $native) -> i64 {
                // IEEE 754 totalOrder, as `f64::total_cmp`: flip every bit but the sign of a
                // negative number, so the bits compare as signed integers. Branch-free, so a
                // whole array converts in vector registers.
                let bits = v.to_bits() as $signed;
                let key = i64::from(
                    bits ^ (((bits >> (<$signed>::BITS - 1)) as $unsigned >> 1) as $signed),
                );
                if v.is_nan() { i64::MAX } else { key }
            }
            #[inline]
            fn unrank(rank: i64) -> $native {
                if rank == i64::MAX {
                    return <$native>::NAN;
                }
                // Ranks of this type fit its width; the flip is its own inverse.
                let bits = rank as $signed;
                let bits = bits ^ (((bits >> (<$signed>::BITS - 1)) as $unsigned >> 1) as $signed);
                <$native>::from_bits(bits as $unsigned)
            }
            #[inline]
            fn is_infinite(v: $native) -> bool {
                v.is_infinite()
            }
            #[inline]
            fn canonical(v: $native) -> $native {
                let zero = <$native>::from_bits(0);
                if v.is_nan() {
                    <$native>::NAN
                } else if v == zero {
                    zero
                } else {
                    v
                }
            }
            const NAN: $native = <$native>::NAN;
        }
    };
}

total_order_float!(
    Float16Type,
    <Float16Type as ArrowPrimitiveType>::Native,
    i16,
    u16
);
total_order_float!(Float32Type, f32, i32, u32);
total_order_float!(Float64Type, f64, i64, u64);

/// Which end of the order an accumulator keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Extreme {
    /// The smallest value.
    Min,
    /// The largest value.
    Max,
}

/// A grouped accumulator for `T`, built as DataFusion's vectorized primitive accumulator (the
/// one the built-ins use): a `Vec` of per-group state updated through [`NullState`], no
/// per-row `ScalarValue`. The state is each group's rank, an `i64` compared as an integer;
/// values turn into ranks as they are read and back into values only on output.
struct RankedGroups<T: TotalOrderFloat, const MAX: bool> {
    ranks: Vec<i64>,
    null_state: NullState,
    data_type: DataType,
    float: PhantomData<fn() -> T>,
}

fn groups_accumulator<T: TotalOrderFloat + Send>(
    data_type: &DataType,
    extreme: Extreme,
) -> Box<dyn GroupsAccumulator> {
    match extreme {
        Extreme::Min => Box::new(RankedGroups::<T, false>::new(data_type)),
        Extreme::Max => Box::new(RankedGroups::<T, true>::new(data_type)),
    }
}

impl<T: TotalOrderFloat, const MAX: bool> RankedGroups<T, MAX> {
    /// The rank a group starts from: one every input ties with or beats.
    const START: i64 = if MAX { i64::MIN } else { i64::MAX };

    fn new(data_type: &DataType) -> Self {
        Self {
            ranks: Vec::new(),
            null_state: NullState::new(),
            data_type: data_type.clone(),
            float: PhantomData,
        }
    }
}

impl<T: TotalOrderFloat + Send, const MAX: bool> GroupsAccumulator for RankedGroups<T, MAX> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let [values] = values else {
            return internal_err!("min/max take one argument, got {}", values.len());
        };
        let values = values.as_primitive::<T>();
        self.ranks.resize(total_num_groups, Self::START);
        let ranks = &mut self.ranks;
        self.null_state.accumulate(
            group_indices,
            values,
            opt_filter,
            total_num_groups,
            |group, value| {
                let rank = T::rank(value);
                let current = &mut ranks[group];
                if (MAX && rank > *current) || (!MAX && rank < *current) {
                    *current = rank;
                }
            },
        );
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let ranks = emit_to.take_needed(&mut self.ranks);
        let values: Vec<T::Native> = ranks.into_iter().map(T::unrank).collect();
        let nulls = self.null_state.build(emit_to);
        Ok(Arc::new(
            PrimitiveArray::<T>::new(values.into(), nulls).with_data_type(self.data_type.clone()),
        ))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.evaluate(emit_to)?])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.update_batch(values, group_indices, None, total_num_groups)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // A row's state is its own value; a row the filter drops is no value.
        let [values] = values else {
            return internal_err!("min/max take one argument, got {}", values.len());
        };
        let Some(filter) = opt_filter else {
            return Ok(vec![Arc::clone(values)]);
        };
        let (kept, filter_nulls) = filter.clone().into_parts();
        let kept = match filter_nulls {
            Some(nulls) => nulls.inner() & &kept,
            None => kept,
        };
        let values = values.as_primitive::<T>();
        let nulls = NullBuffer::union(values.nulls(), Some(&NullBuffer::from(kept)));
        Ok(vec![Arc::new(
            PrimitiveArray::<T>::new(values.values().clone(), nulls)
                .with_data_type(self.data_type.clone()),
        )])
    }

    fn size(&self) -> usize {
        self.ranks.capacity() * std::mem::size_of::<i64>() + self.null_state.size()
    }
}

/// The smallest (`MAX` false) or largest rank of an array's non-null values, `None` if it has
/// none. Folded in lanes, so the compiler keeps them in vector registers.
fn fold_ranks<T: TotalOrderFloat, const MAX: bool>(array: &PrimitiveArray<T>) -> Option<i64> {
    const LANES: usize = 8;
    if array.null_count() == array.len() {
        return None;
    }
    let start = if MAX { i64::MIN } else { i64::MAX };
    let keep = |a: i64, b: i64| if MAX { a.max(b) } else { a.min(b) };
    let values = array.values();
    let mut lanes = [start; LANES];
    match array.nulls().filter(|n| n.null_count() > 0) {
        None => {
            let chunks = values.chunks_exact(LANES);
            for v in chunks.remainder() {
                lanes[0] = keep(lanes[0], T::rank(*v));
            }
            for chunk in chunks {
                for (lane, v) in lanes.iter_mut().zip(chunk) {
                    *lane = keep(*lane, T::rank(*v));
                }
            }
        }
        Some(nulls) => {
            for (i, v) in values.iter().enumerate() {
                if nulls.is_valid(i) {
                    lanes[i % LANES] = keep(lanes[i % LANES], T::rank(*v));
                }
            }
        }
    }
    lanes.into_iter().reduce(keep)
}

/// The ungrouped accumulator: one running rank, folded a whole array at a time.
#[derive(Debug)]
struct FloatAccumulator<T: TotalOrderFloat> {
    extreme: Extreme,
    rank: Option<i64>,
    data_type: DataType,
    float: PhantomData<fn() -> T>,
}

impl<T: TotalOrderFloat> FloatAccumulator<T> {
    fn new(extreme: Extreme, data_type: &DataType) -> Self {
        Self {
            extreme,
            rank: None,
            data_type: data_type.clone(),
            float: PhantomData,
        }
    }

    fn current(&self) -> ScalarValue {
        ScalarValue::new_primitive::<T>(self.rank.map(T::unrank), &self.data_type)
            .unwrap_or(ScalarValue::Null)
    }
}

impl<T: TotalOrderFloat + std::fmt::Debug> Accumulator for FloatAccumulator<T> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(array) = values.first() else {
            return Ok(());
        };
        let array = array.as_primitive::<T>();
        let best = match self.extreme {
            Extreme::Min => fold_ranks::<T, false>(array),
            Extreme::Max => fold_ranks::<T, true>(array),
        };
        let keep = match self.extreme {
            Extreme::Min => i64::min,
            Extreme::Max => i64::max,
        };
        if let Some(best) = best {
            self.rank = Some(self.rank.map_or(best, |current| keep(current, best)));
        }
        Ok(())
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.update_batch(states)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.current()])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(self.current())
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
}

/// DataFusion's `min` or `max`, with total-order accumulators for float arguments.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TotalOrderMinMax {
    inner: Arc<AggregateUDF>,
    extreme: Extreme,
}

impl TotalOrderMinMax {
    /// `min`, total-ordered over floats.
    pub fn min() -> Self {
        Self {
            inner: datafusion::functions_aggregate::min_max::min_udaf(),
            extreme: Extreme::Min,
        }
    }

    /// `max`, total-ordered over floats.
    pub fn max() -> Self {
        Self {
            inner: datafusion::functions_aggregate::min_max::max_udaf(),
            extreme: Extreme::Max,
        }
    }

    fn inner(&self) -> &Arc<dyn AggregateUDFImpl> {
        self.inner.inner()
    }
}

fn is_float(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Float16 | DataType::Float32 | DataType::Float64
    )
}

#[warn(clippy::missing_trait_methods)] // delegates the rest (delegate_to_inner!), so it implements every trait method
impl AggregateUDFImpl for TotalOrderMinMax {
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let data_type = args.return_field.data_type();
        Ok(match data_type {
            DataType::Float16 => Box::new(FloatAccumulator::<Float16Type>::new(
                self.extreme,
                data_type,
            )),
            DataType::Float32 => Box::new(FloatAccumulator::<Float32Type>::new(
                self.extreme,
                data_type,
            )),
            DataType::Float64 => Box::new(FloatAccumulator::<Float64Type>::new(
                self.extreme,
                data_type,
            )),
            _ => return self.inner().accumulator(args),
        })
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        is_float(args.return_field.data_type()) || self.inner().groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let data_type = args.return_field.data_type();
        Ok(match data_type {
            DataType::Float16 => groups_accumulator::<Float16Type>(data_type, self.extreme),
            DataType::Float32 => groups_accumulator::<Float32Type>(data_type, self.extreme),
            DataType::Float64 => groups_accumulator::<Float64Type>(data_type, self.extreme),
            _ => return self.inner().create_groups_accumulator(args),
        })
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner().create_sliding_accumulator(args)
    }

    fn value_from_stats(&self, statistics_args: &StatisticsArgs) -> Option<ScalarValue> {
        // File statistics leave NaN out of a float column's min/max: never answer from them.
        if is_float(statistics_args.return_type) {
            return None;
        }
        self.inner().value_from_stats(statistics_args)
    }

    crate::aggregate::delegate_to_inner!();
}
