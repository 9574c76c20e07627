//! `sum` and `avg` over sliding window frames of floats that stay right once a NaN or an
//! infinity has left the frame.
//!
//! DataFusion 55's sliding SUM and AVG accumulators retract a row by subtracting its value,
//! so once a NaN (or both infinities) has been in the frame the running sum is NaN for good:
//! a 10-minute RANGE sum over data with a few NaN amounts answers NaN for most later rows,
//! where DuckDB and PostgreSQL answer the frame's sum. [`FiniteSum`] keeps the finite part's
//! sum and counts NaN, +inf and -inf apart, so retracting them is exact; the frame's value is
//! NaN while it holds a NaN (or both infinities), an infinity while it holds one, else the
//! finite sum. Grouped and whole-frame accumulators are DataFusion's own (they never retract).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, GroupsAccumulator, StatisticsArgs,
};

/// DataFusion's `sum` or `avg`, with [`FiniteSum`] for float sliding frames.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FiniteSliding {
    inner: Arc<AggregateUDF>,
    /// `avg`: the sum divided by the count of non-NULL values.
    mean: bool,
}

impl FiniteSliding {
    /// `sum`.
    pub fn sum() -> Self {
        Self {
            inner: datafusion::functions_aggregate::sum::sum_udaf(),
            mean: false,
        }
    }

    /// `avg`.
    pub fn avg() -> Self {
        Self {
            inner: datafusion::functions_aggregate::average::avg_udaf(),
            mean: true,
        }
    }

    fn inner(&self) -> &Arc<dyn AggregateUDFImpl> {
        self.inner.inner()
    }
}

/// A frame's sum of floats: the finite values' sum, and how many NaN, +inf and -inf it holds.
#[derive(Debug, Default)]
pub struct FiniteSum {
    finite: f64,
    values: i64,
    nan: i64,
    pos_inf: i64,
    neg_inf: i64,
    mean: bool,
}

impl FiniteSum {
    /// An empty frame's sum (`mean`: its average).
    pub fn new(mean: bool) -> Self {
        Self {
            mean,
            ..Self::default()
        }
    }

    /// Adds (`sign` 1) or retracts (`sign` -1) the non-NULL values of `values`.
    fn apply(&mut self, values: &ArrayRef, sign: i64) -> Result<()> {
        let values = arrow::compute::cast(values, &DataType::Float64)?;
        let values = values.as_primitive::<Float64Type>();
        let mut finite = 0.0;
        let (mut n, mut nan, mut pos, mut neg) = (0, 0, 0, 0);
        let mut add = |v: f64| {
            n += 1;
            if v.is_nan() {
                nan += 1;
            } else if v == f64::INFINITY {
                pos += 1;
            } else if v == f64::NEG_INFINITY {
                neg += 1;
            } else {
                finite += v;
            }
        };
        match values.nulls() {
            Some(nulls) => nulls.valid_indices().for_each(|i| add(values.values()[i])),
            None => values.values().iter().for_each(|v| add(*v)),
        }
        if sign > 0 {
            self.finite += finite;
        } else {
            self.finite -= finite;
        }
        self.values += sign * n;
        self.nan += sign * nan;
        self.pos_inf += sign * pos;
        self.neg_inf += sign * neg;
        if self.values == 0 {
            // An empty frame starts again from an exact zero, not a rounding residue.
            self.finite = 0.0;
        }
        Ok(())
    }

    /// The frame's value: NULL when it holds no value.
    fn value(&self) -> Option<f64> {
        if self.values == 0 {
            return None;
        }
        let sum = if self.nan > 0 || (self.pos_inf > 0 && self.neg_inf > 0) {
            f64::NAN
        } else if self.pos_inf > 0 {
            f64::INFINITY
        } else if self.neg_inf > 0 {
            f64::NEG_INFINITY
        } else {
            self.finite
        };
        #[expect(clippy::cast_precision_loss)]
        let count = self.values as f64;
        Some(if self.mean { sum / count } else { sum })
    }
}

impl Accumulator for FiniteSum {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        match values.first() {
            Some(values) => self.apply(values, 1),
            None => internal_err!("a sliding sum without its argument"),
        }
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        match values.first() {
            Some(values) => self.apply(values, -1),
            None => internal_err!("a sliding sum without its argument"),
        }
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(self.value()))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }

    /// A sliding frame's accumulator is evaluated in place, never merged.
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        internal_err!("a sliding window sum has no partial state")
    }

    fn merge_batch(&mut self, _states: &[ArrayRef]) -> Result<()> {
        internal_err!("a sliding window sum has no partial state to merge")
    }
}

#[warn(clippy::missing_trait_methods)] // delegates the rest (delegate_to_inner!), so it implements every trait method
impl AggregateUDFImpl for FiniteSliding {
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner().accumulator(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner().groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        self.inner().create_groups_accumulator(args)
    }

    /// Floats (not DISTINCT): [`FiniteSum`]; anything else: DataFusion's own.
    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let float_in = args.expr_fields.first().is_some_and(|f| {
            matches!(
                f.data_type(),
                DataType::Float16 | DataType::Float32 | DataType::Float64
            )
        });
        if args.is_distinct || !float_in || args.return_field.data_type() != &DataType::Float64 {
            return self.inner().create_sliding_accumulator(args);
        }
        Ok(Box::new(FiniteSum::new(self.mean)))
    }

    fn value_from_stats(&self, statistics_args: &StatisticsArgs) -> Option<ScalarValue> {
        self.inner().value_from_stats(statistics_args)
    }

    crate::aggregate::delegate_to_inner!();
}
