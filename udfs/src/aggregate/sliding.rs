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
//!
//! The finite part is summed exactly ([`ExactSum`], Shewchuk's non-overlapping partials, as
//! Python's `math.fsum`) and rounded once when read, so retracting a value takes it out
//! exactly: a frame's sum is the correctly rounded sum of the values it holds, whatever rows
//! came and went before (a frame whose values cancel is an exact zero, not a rounding
//! residue), and a stream that starts a partition afresh answers what batch answers.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, GroupsAccumulator, StatisticsArgs,
};

/// What a sliding frame's [`FiniteSum`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Moment {
    /// The sum.
    Sum,
    /// The sum divided by the count of values.
    Mean,
    /// The variance: of the sample (divided by n - 1) or of the population (by n); its square
    /// root when `root` (the standard deviation).
    Variance {
        /// Of the sample.
        sample: bool,
        /// The standard deviation.
        root: bool,
    },
}

/// DataFusion's `sum`, `avg`, `var_samp`, `var_pop`, `stddev` or `stddev_pop`, with
/// [`FiniteSum`] for float sliding frames.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FiniteSliding {
    inner: Arc<AggregateUDF>,
    moment: Moment,
}

impl FiniteSliding {
    /// `sum`.
    pub fn sum() -> Self {
        Self {
            inner: datafusion::functions_aggregate::sum::sum_udaf(),
            moment: Moment::Sum,
        }
    }

    /// `avg`.
    pub fn avg() -> Self {
        Self {
            inner: datafusion::functions_aggregate::average::avg_udaf(),
            moment: Moment::Mean,
        }
    }

    /// `var_samp`, `var_pop`, `stddev` (of the sample) or `stddev_pop`.
    pub fn variance(sample: bool, root: bool) -> Self {
        use datafusion::functions_aggregate::{stddev, variance};
        let inner = match (sample, root) {
            (true, false) => variance::var_samp_udaf(),
            (false, false) => variance::var_pop_udaf(),
            (true, true) => stddev::stddev_udaf(),
            (false, true) => stddev::stddev_pop_udaf(),
        };
        Self {
            inner,
            moment: Moment::Variance { sample, root },
        }
    }

    fn inner(&self) -> &Arc<dyn AggregateUDFImpl> {
        self.inner.inner()
    }
}

/// A frame's sum of floats: the finite values' sum, and how many NaN, +inf and -inf it holds.
#[derive(Debug, Default)]
pub struct FiniteSum {
    finite: ExactSum,
    /// The finite values' squares, exactly (variances only).
    squares: ExactSum,
    values: i64,
    nan: i64,
    pos_inf: i64,
    neg_inf: i64,
    moment: Option<Moment>,
}

impl FiniteSum {
    /// An empty frame's `moment`.
    pub fn new(moment: Moment) -> Self {
        Self {
            moment: Some(moment),
            ..Self::default()
        }
    }

    /// Adds (`sign` 1) or retracts (`sign` -1) the non-NULL values of `values`.
    fn apply(&mut self, values: &ArrayRef, sign: i64) -> Result<()> {
        let values = if values.data_type() == &DataType::Float64 {
            Arc::clone(values)
        } else {
            arrow::compute::cast(values, &DataType::Float64)?
        };
        let values = values.as_primitive::<Float64Type>();
        let (mut n, mut nan, mut pos, mut neg) = (0, 0, 0, 0);
        let squares = matches!(self.moment, Some(Moment::Variance { .. }));
        let (finite, square_sum) = (&mut self.finite, &mut self.squares);
        let mut add = |v: f64| {
            n += 1;
            if v.is_nan() {
                nan += 1;
            } else if v == f64::INFINITY {
                pos += 1;
            } else if v == f64::NEG_INFINITY {
                neg += 1;
            } else {
                let signed = if sign > 0 { 1.0 } else { -1.0 };
                finite.add(signed * v);
                if squares {
                    // v * v exactly: the rounded product and its error.
                    let p = v * v;
                    square_sum.add(signed * p);
                    square_sum.add(signed * v.mul_add(v, -p));
                }
            }
        };
        match values.nulls() {
            Some(nulls) => nulls.valid_indices().for_each(|i| add(values.values()[i])),
            None => values.values().iter().for_each(|v| add(*v)),
        }
        self.values += sign * n;
        self.nan += sign * nan;
        self.pos_inf += sign * pos;
        self.neg_inf += sign * neg;
        if self.values == 0 {
            self.finite = ExactSum::default();
            self.squares = ExactSum::default();
        }
        Ok(())
    }

    /// The frame's value: NULL when it holds no value (a sample variance: fewer than two).
    fn value(&self) -> Option<f64> {
        if self.values == 0 {
            return None;
        }
        #[expect(clippy::cast_precision_loss)]
        let n = self.values as f64;
        let special = self.nan > 0 || self.pos_inf > 0 || self.neg_inf > 0;
        let sum = if self.nan > 0 || (self.pos_inf > 0 && self.neg_inf > 0) {
            f64::NAN
        } else if self.pos_inf > 0 {
            f64::INFINITY
        } else if self.neg_inf > 0 {
            f64::NEG_INFINITY
        } else {
            self.finite.value()
        };
        match self.moment.unwrap_or(Moment::Sum) {
            Moment::Sum => Some(sum),
            Moment::Mean => Some(sum / n),
            Moment::Variance { sample, root } => {
                let variance = match self.values {
                    1 if sample => return None,
                    1 => 0.0,
                    _ if special => f64::NAN,
                    _ => {
                        let divisor = if sample { n * (n - 1.0) } else { n * n };
                        self.spread() / divisor
                    }
                };
                Some(if root { variance.sqrt() } else { variance })
            }
        }
    }

    /// `n·Σx² - (Σx)²` of the finite values, computed exactly and rounded once (never
    /// negative, unlike a running variance that retracts).
    fn spread(&self) -> f64 {
        #[expect(clippy::cast_precision_loss)]
        let n = self.values as f64;
        let mut spread = ExactSum::default();
        let mut product = |a: f64, b: f64, sign: f64| {
            let p = a * b;
            spread.add(sign * p);
            spread.add(sign * a.mul_add(b, -p));
        };
        for s in &self.squares.partials {
            product(n, *s, 1.0);
        }
        for a in &self.finite.partials {
            for b in &self.finite.partials {
                product(*a, *b, -1.0);
            }
        }
        spread.value().max(0.0)
    }
}

/// An exact sum of finite floats: non-overlapping partials in increasing magnitude, whose
/// exact sum is the sum of every value added (Shewchuk's algorithm).
#[derive(Debug, Default, Clone)]
pub struct ExactSum {
    partials: Vec<f64>,
}

impl ExactSum {
    /// Adds `x` exactly.
    pub fn add(&mut self, mut x: f64) {
        let mut kept = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        self.partials.truncate(kept);
        self.partials.push(x);
    }

    /// The sum, correctly rounded (half to even), `+0.0` when empty.
    pub fn value(&self) -> f64 {
        let p = &self.partials;
        let Some(mut n) = p.len().checked_sub(1) else {
            return 0.0;
        };
        let mut hi = p[n];
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = p[n];
            hi = x + y;
            lo = y - (hi - x);
            if lo != 0.0 {
                break;
            }
        }
        // Round half to even across the partials below: if what was cut off points the same
        // way as the next partial, the true sum is past the halfway point.
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            if y == x - hi {
                hi = x;
            }
        }
        // A sum of zeros is +0.0, as DataFusion's sum starting from 0.0 gives.
        hi + 0.0
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
            + (self.finite.partials.capacity() + self.squares.partials.capacity()) * 8
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

    /// Floats (not DISTINCT), and every variance: [`FiniteSum`]; anything else: DataFusion's own.
    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let float_in = args.expr_fields.first().is_some_and(|f| {
            matches!(
                f.data_type(),
                DataType::Float16 | DataType::Float32 | DataType::Float64
            )
        });
        let variance = matches!(self.moment, Moment::Variance { .. });
        if args.is_distinct
            || !(float_in || variance)
            || args.return_field.data_type() != &DataType::Float64
        {
            return self.inner().create_sliding_accumulator(args);
        }
        Ok(Box::new(FiniteSum::new(self.moment)))
    }

    fn value_from_stats(&self, statistics_args: &StatisticsArgs) -> Option<ScalarValue> {
        self.inner().value_from_stats(statistics_args)
    }

    crate::aggregate::delegate_to_inner!();
}
