//! Aggregates whose answer depends on row order are refused by streaming, with the rewrite
//! that makes them deterministic.
//!
//! A streaming aggregate sees its rows in arrival order, cut into micro-batches, split across
//! workers: an aggregate that answers differently for another order cannot give the batch
//! answer. The order-sensitive built-ins (`first_value`, `last_value`, `nth_value`,
//! `array_agg`, `string_agg`) need an ORDER BY inside the call, as do other functions that
//! declare a soft or beneficial ordering ([`AggregateOrderSensitivity`]; DataFusion's default,
//! a hard requirement, is also what order-free functions such as `count` report, so it says
//! nothing). The approximate sketches (t-digest) and `any_value` declare no ordering but
//! depend on it. Calls that `volley_udfs::aggregate::DeterministicAggregates` can make
//! deterministic have been rewritten before this check.

use std::sync::Arc;

use datafusion::functions_aggregate::any_value::AnyValue;
use datafusion::functions_aggregate::approx_median::ApproxMedian;
use datafusion::functions_aggregate::approx_percentile_cont::ApproxPercentileCont;
use datafusion::functions_aggregate::approx_percentile_cont_with_weight::ApproxPercentileContWithWeight;
use datafusion::functions_aggregate::array_agg::ArrayAgg;
use datafusion::functions_aggregate::first_last::{FirstValue, LastValue};
use datafusion::functions_aggregate::nth_value::NthValueAgg;
use datafusion::functions_aggregate::string_agg::StringAgg;
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

use crate::error::{SqlError, StatementRef};

/// Why `agg` would answer differently for another row order, with the rewrite; `None` when
/// it is order-independent.
pub fn order_dependence(agg: &AggregateFunctionExpr) -> Option<String> {
    let func = agg.fun().inner();
    let name = agg.fun().name();
    if func.downcast_ref::<ApproxMedian>().is_some() {
        return Some(format!(
            "{name} merges t-digest sketches whose result depends on how rows are split into micro-batches; use the exact median(x)"
        ));
    }
    if func.downcast_ref::<ApproxPercentileCont>().is_some()
        || func
            .downcast_ref::<ApproxPercentileContWithWeight>()
            .is_some()
    {
        return Some(format!(
            "{name} merges t-digest sketches whose result depends on how rows are split into micro-batches; use the exact percentile_cont(p) WITHIN GROUP (ORDER BY x)"
        ));
    }
    if func.downcast_ref::<AnyValue>().is_some() {
        return Some(format!(
            "{name} returns whichever row arrives first; use min(x) or max(x), or first_value(x ORDER BY <event time>)"
        ));
    }
    let needs_order = func.downcast_ref::<FirstValue>().is_some()
        || func.downcast_ref::<LastValue>().is_some()
        || func.downcast_ref::<NthValueAgg>().is_some()
        || func.downcast_ref::<ArrayAgg>().is_some()
        || func.downcast_ref::<StringAgg>().is_some()
        || matches!(
            func.order_sensitivity(),
            AggregateOrderSensitivity::SoftRequirement | AggregateOrderSensitivity::Beneficial
        );
    if needs_order && agg.order_bys().is_empty() {
        let hint = if agg.is_distinct() {
            format!("{name}(DISTINCT x ORDER BY x)")
        } else {
            format!("{name}(x ORDER BY <event time>)")
        };
        return Some(format!(
            "{name} without ORDER BY depends on the order rows arrive in; add ORDER BY inside the call, for example {hint}"
        ));
    }
    None
}

/// Refuses the first order-dependent aggregate of `aggregates`.
///
/// # Errors
/// [`SqlError::Unsupported`] naming the function, why, and the rewrite.
pub fn check_order_independent(
    aggregates: &[Arc<AggregateFunctionExpr>],
    at: StatementRef,
) -> Result<(), SqlError> {
    for agg in aggregates {
        if let Some(why) = order_dependence(agg) {
            return Err(SqlError::Unsupported {
                at,
                message: format!(
                    "{}: a streaming aggregate must give the same answer whatever the order of its rows, and {why}",
                    agg.name()
                ),
            });
        }
    }
    Ok(())
}
