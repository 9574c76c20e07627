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
//! | `sum`, `avg` over floats in sliding window frames | retracts by subtracting: NaN for good once a NaN or both infinities were in the frame | [`FiniteSliding`]: finite sum plus counts of NaN, +inf, -inf |
//! | ORDER BY aggregates, DISTINCT over floats, covariance family, `regr_avgx/avgy` | see [`DeterministicAggregates`] | a rewrite of the call, same meaning |
//!
//! Aggregates whose answer depends on row order by definition (`first_value` without
//! ORDER BY, `any_value`, t-digest sketches) cannot be fixed here; the streaming planner
//! refuses them with the deterministic rewrite.

mod deterministic;
mod float_key;
mod sliding;
mod total_order;

#[cfg(test)]
mod tests;

use datafusion::logical_expr::AggregateUDF;

pub use deterministic::DeterministicAggregates;
pub use float_key::{FloatKey, FloatKeyFunc, canonical_float_udf, infinite_as_nan_udf};
pub use sliding::{FiniteSliding, FiniteSum};
pub use total_order::TotalOrderMinMax;

/// Every aggregate override, to register in place of the built-ins of the same name.
pub fn aggregate_overrides() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::new_from_impl(TotalOrderMinMax::min()),
        AggregateUDF::new_from_impl(TotalOrderMinMax::max()),
        AggregateUDF::new_from_impl(FiniteSliding::sum()),
        AggregateUDF::new_from_impl(FiniteSliding::avg()),
    ]
}
