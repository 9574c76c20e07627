//! Aggregate functions that replace DataFusion built-ins whose answer depends on row order.
//!
//! Volley's promise is that an aggregate's answer does not depend on row order, micro-batch
//! size or partitioning. Where a DataFusion built-in breaks that for an order-independent SQL
//! meaning, the fix lives here, registered under the built-in's name by
//! [`crate::register_all`], so batch and streaming contexts both use it.
//!
//! | function | what DataFusion 55 does | fix |
//! |---|---|---|
//! | `min`, `max` over floats | grouped: `partial_cmp`, a NaN lets the next value win; starts from `f64::MIN` | [`TotalOrderMinMax`]: NaN above every number, -0.0 below +0.0 |
//! | `sum`, `avg` over floats in sliding window frames | retracts by subtracting: NaN for good once a NaN or both infinities were in the frame, and a rounding residue that depends on every row that came before | [`FiniteSliding`]: exact finite sum plus counts of NaN, +inf, -inf |
//! | `var_samp`, `var_pop`, `stddev`, `stddev_pop` in sliding window frames | retracts a running (Welford) variance: drifts, goes negative (a NaN standard deviation) | [`FiniteSliding`]: exact sums of values and squares, `n·Σx² - (Σx)²` rounded once |
//! | ORDER BY aggregates, DISTINCT over floats, covariance family, `regr_avgx/avgy` | see [`DeterministicAggregates`] | a rewrite of the call, same meaning |
//!
//! Aggregates whose answer depends on row order by definition (`first_value` without
//! ORDER BY, `any_value`, t-digest sketches) cannot be fixed here; the streaming planner
//! refuses them with the deterministic rewrite.

/// The [`AggregateUDFImpl`](datafusion::logical_expr::AggregateUDFImpl) methods an override
/// hands to the built-in it wraps (`self.inner()`) unchanged: names, types, simplification,
/// ordering and documentation. The override writes only the accumulator methods it replaces.
macro_rules! delegate_to_inner {
    () => {
        fn name(&self) -> &str {
            self.inner().name()
        }

        fn aliases(&self) -> &[String] {
            self.inner().aliases()
        }

        fn schema_name(
            &self,
            params: &datafusion::logical_expr::expr::AggregateFunctionParams,
        ) -> datafusion::common::Result<String> {
            self.inner().schema_name(params)
        }

        fn human_display(
            &self,
            params: &datafusion::logical_expr::expr::AggregateFunctionParams,
        ) -> datafusion::common::Result<String> {
            self.inner().human_display(params)
        }

        fn window_function_schema_name(
            &self,
            params: &datafusion::logical_expr::expr::WindowFunctionParams,
        ) -> datafusion::common::Result<String> {
            self.inner().window_function_schema_name(params)
        }

        fn display_name(
            &self,
            params: &datafusion::logical_expr::expr::AggregateFunctionParams,
        ) -> datafusion::common::Result<String> {
            self.inner().display_name(params)
        }

        fn window_function_display_name(
            &self,
            params: &datafusion::logical_expr::expr::WindowFunctionParams,
        ) -> datafusion::common::Result<String> {
            self.inner().window_function_display_name(params)
        }

        fn signature(&self) -> &datafusion::logical_expr::Signature {
            self.inner().signature()
        }

        fn return_type(
            &self,
            arg_types: &[arrow::datatypes::DataType],
        ) -> datafusion::common::Result<arrow::datatypes::DataType> {
            self.inner().return_type(arg_types)
        }

        fn return_field(
            &self,
            arg_fields: &[arrow::datatypes::FieldRef],
        ) -> datafusion::common::Result<arrow::datatypes::FieldRef> {
            self.inner().return_field(arg_fields)
        }

        fn is_nullable(&self) -> bool {
            self.inner().is_nullable()
        }

        fn state_fields(
            &self,
            args: datafusion::logical_expr::function::StateFieldsArgs,
        ) -> datafusion::common::Result<Vec<arrow::datatypes::FieldRef>> {
            self.inner().state_fields(args)
        }

        fn with_beneficial_ordering(
            self: std::sync::Arc<Self>,
            beneficial_ordering: bool,
        ) -> datafusion::common::Result<
            Option<std::sync::Arc<dyn datafusion::logical_expr::AggregateUDFImpl>>,
        > {
            // The overridden aggregates are order-insensitive: nothing to specialise.
            let _ = beneficial_ordering;
            Ok(Some(self))
        }

        fn order_sensitivity(&self) -> datafusion::logical_expr::utils::AggregateOrderSensitivity {
            self.inner().order_sensitivity()
        }

        fn simplify(
            &self,
        ) -> Option<datafusion::logical_expr::function::AggregateFunctionSimplification> {
            self.inner().simplify()
        }

        fn simplify_expr_op_literal(
            &self,
            agg_function: &datafusion::logical_expr::expr::AggregateFunction,
            arg: &datafusion::logical_expr::Expr,
            op: datafusion::logical_expr::Operator,
            lit: &datafusion::logical_expr::Expr,
            arg_is_left: bool,
        ) -> datafusion::common::Result<Option<datafusion::logical_expr::Expr>> {
            self.inner()
                .simplify_expr_op_literal(agg_function, arg, op, lit, arg_is_left)
        }

        fn reverse_expr(&self) -> datafusion::logical_expr::ReversedUDAF {
            self.inner().reverse_expr()
        }

        fn coerce_types(
            &self,
            arg_types: &[arrow::datatypes::DataType],
        ) -> datafusion::common::Result<Vec<arrow::datatypes::DataType>> {
            self.inner().coerce_types(arg_types)
        }

        fn is_descending(&self) -> Option<bool> {
            self.inner().is_descending()
        }

        fn default_value(
            &self,
            data_type: &arrow::datatypes::DataType,
        ) -> datafusion::common::Result<datafusion::common::ScalarValue> {
            self.inner().default_value(data_type)
        }

        fn supports_null_handling_clause(&self) -> bool {
            self.inner().supports_null_handling_clause()
        }

        fn supports_within_group_clause(&self) -> bool {
            self.inner().supports_within_group_clause()
        }

        fn documentation(&self) -> Option<&datafusion::logical_expr::Documentation> {
            self.inner().documentation()
        }

        fn set_monotonicity(
            &self,
            data_type: &arrow::datatypes::DataType,
        ) -> datafusion::logical_expr::SetMonotonicity {
            self.inner().set_monotonicity(data_type)
        }
    };
}
pub(crate) use delegate_to_inner;

mod deterministic;
mod float_key;
mod sliding;
mod total_order;

#[cfg(test)]
mod tests;

use datafusion::logical_expr::AggregateUDF;

pub use deterministic::DeterministicAggregates;
pub use float_key::{FloatKey, FloatKeyFunc, canonical_float_udf, infinite_as_nan_udf};
pub use sliding::{ExactSum, FiniteSliding, FiniteSum, Moment};
pub use total_order::TotalOrderMinMax;

/// Every aggregate override, to register in place of the built-ins of the same name.
pub fn aggregate_overrides() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::new_from_impl(TotalOrderMinMax::min()),
        AggregateUDF::new_from_impl(TotalOrderMinMax::max()),
        AggregateUDF::new_from_impl(FiniteSliding::sum()),
        AggregateUDF::new_from_impl(FiniteSliding::avg()),
        AggregateUDF::new_from_impl(FiniteSliding::variance(true, false)),
        AggregateUDF::new_from_impl(FiniteSliding::variance(false, false)),
        AggregateUDF::new_from_impl(FiniteSliding::variance(true, true)),
        AggregateUDF::new_from_impl(FiniteSliding::variance(false, true)),
    ]
}
