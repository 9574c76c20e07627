//! Aggregate functions that replace DataFusion built-ins whose answer depends on row order.
//!
//! Volley's promise is that an aggregate's answer does not depend on row order, micro-batch
//! size or partitioning. Where a DataFusion built-in breaks that for an order-independent SQL
//! meaning, the fix lives here, registered under the built-in's name by
//! [`crate::register_all`], so batch and streaming contexts both use it.
//!
//! | function | what DataFusion 55 does | override |
//! |---|---|---|
//! | `min`, `max` over floats | grouped: `partial_cmp`, a NaN lets the next value win; starts from `f64::MIN` | [`TotalOrderMinMax`]: NaN above every number, -0.0 below +0.0 |

mod total_order;

#[cfg(test)]
mod tests;

use datafusion::logical_expr::AggregateUDF;

pub use total_order::TotalOrderMinMax;

/// Every aggregate override, to register in place of the built-ins of the same name.
pub fn aggregate_overrides() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::new_from_impl(TotalOrderMinMax::min()),
        AggregateUDF::new_from_impl(TotalOrderMinMax::max()),
    ]
}
