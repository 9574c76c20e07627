//! [`DeterministicAggregates`]: an analyzer rule that rewrites aggregate calls whose DataFusion
//! answer depends on row order, micro-batch size or partitioning into calls that do not, with
//! the same SQL meaning. Batch and streaming contexts both run it, so both give one answer.
//!
//! | call | why it varied | rewrite |
//! |---|---|---|
//! | `first_value`, `last_value`, `nth_value`, `array_agg`, `string_agg` with `ORDER BY` | rows tied on the ORDER BY keys come in any order | the aggregated values are appended to the ORDER BY as tie-breakers |
//! | DISTINCT over a float | -0.0/+0.0 and NaNs with other bits are distinct values to the DISTINCT accumulator, equal to GROUP BY | the argument through `canonical_float` |
//! | `covar_*`, `corr`, `regr_slope/intercept/r2/sxx/syy/sxy` over floats | an infinity gives ±inf or NaN depending on where it comes | arguments through `infinite_as_nan` (NaN is the two-pass answer) |
//! | `regr_avgx(y, x)`, `regr_avgy(y, x)` | the running mean turns NaN after an infinity, unless it comes last | `avg(x)` over the rows where `y` is not NULL (and the other way round) |
//!
//! Output names are kept: each rewritten call is aliased to the name the original had.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result};
use datafusion::functions_aggregate::array_agg::ArrayAgg;
use datafusion::functions_aggregate::correlation::Correlation;
use datafusion::functions_aggregate::covariance::{CovariancePopulation, CovarianceSample};
use datafusion::functions_aggregate::first_last::{FirstValue, LastValue};
use datafusion::functions_aggregate::nth_value::NthValueAgg;
use datafusion::functions_aggregate::regr::{Regr, RegrType};
use datafusion::functions_aggregate::string_agg::StringAgg;
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams, ScalarFunction};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    AggregateUDFImpl, Expr, ExprSchemable, LogicalPlan, SortExpr, when,
};
use datafusion::optimizer::AnalyzerRule;

use super::float_key::{canonical_float_udf, infinite_as_nan_udf};

/// The rewrite rule (see the [module docs](self)).
#[derive(Debug, Default)]
pub struct DeterministicAggregates;

impl AnalyzerRule for DeterministicAggregates {
    fn name(&self) -> &str {
        "volley_deterministic_aggregates"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            let LogicalPlan::Aggregate(aggregate) = &node else {
                return Ok(Transformed::no(node));
            };
            let schema = Arc::clone(aggregate.input.schema());
            let preserver = NamePreserver::new(&node);
            node.map_expressions(|expr| {
                let saved = preserver.save(&expr);
                let rewritten = expr.transform_up(|e| rewrite(e, &schema))?;
                Ok(if rewritten.transformed {
                    rewritten.update_data(|e| saved.restore(e))
                } else {
                    rewritten
                })
            })
        })
        .map(|t| t.data)
    }
}

fn is_float(expr: &Expr, schema: &DFSchema) -> bool {
    expr.get_type(schema).is_ok_and(|t| t.is_floating())
}

fn through(udf: datafusion::logical_expr::ScalarUDF, arg: Expr) -> Expr {
    Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(udf), vec![arg]))
}

/// What a call needs, by the function's type.
enum Fix {
    /// Order-sensitive: break ORDER BY ties by these argument positions.
    TieBreak(&'static [usize]),
    /// Second moments: every float argument through `infinite_as_nan`.
    Moments,
    /// `regr_avgx` (average of argument 1 where argument 0 is set) or `regr_avgy` (the other).
    RegrAverage { of: usize, given: usize },
    /// Nothing to change beyond DISTINCT.
    None,
}

fn fix_for(func: &dyn AggregateUDFImpl) -> Fix {
    if func.downcast_ref::<FirstValue>().is_some()
        || func.downcast_ref::<LastValue>().is_some()
        || func.downcast_ref::<ArrayAgg>().is_some()
        || func.downcast_ref::<NthValueAgg>().is_some()
    {
        return Fix::TieBreak(&[0]);
    }
    if func.downcast_ref::<StringAgg>().is_some() {
        return Fix::TieBreak(&[0]);
    }
    if func.downcast_ref::<CovariancePopulation>().is_some()
        || func.downcast_ref::<CovarianceSample>().is_some()
        || func.downcast_ref::<Correlation>().is_some()
    {
        return Fix::Moments;
    }
    if let Some(regr) = func.downcast_ref::<Regr>() {
        let is = |kind: RegrType, name: &'static str| *regr == Regr::new(kind, name);
        if is(RegrType::AvgX, "regr_avgx") {
            return Fix::RegrAverage { of: 1, given: 0 };
        }
        if is(RegrType::AvgY, "regr_avgy") {
            return Fix::RegrAverage { of: 0, given: 1 };
        }
        if is(RegrType::Count, "regr_count") {
            return Fix::None;
        }
        return Fix::Moments;
    }
    Fix::None
}

fn rewrite(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let Expr::AggregateFunction(AggregateFunction { func, params }) = expr else {
        return Ok(Transformed::no(expr));
    };
    let AggregateFunctionParams {
        mut args,
        distinct,
        filter,
        mut order_by,
        null_treatment,
    } = params;
    let mut changed = false;
    let mut func = func;
    match fix_for(func.inner().as_ref()) {
        Fix::TieBreak(positions) if !order_by.is_empty() && !distinct => {
            for &i in positions {
                let Some(arg) = args.get(i) else { continue };
                if !order_by.iter().any(|s| &s.expr == arg) {
                    order_by.push(SortExpr::new(arg.clone(), true, false));
                    changed = true;
                }
            }
        }
        Fix::Moments => {
            for arg in &mut args {
                if is_float(arg, schema) {
                    *arg = through(infinite_as_nan_udf(), arg.clone());
                    changed = true;
                }
            }
        }
        Fix::RegrAverage { of, given } if args.len() == 2 && !distinct => {
            let (x, y) = (args[of].clone(), args[given].clone());
            let value = when(y.is_not_null(), x).end()?;
            func = datafusion::functions_aggregate::average::avg_udaf();
            args = vec![value];
            changed = true;
        }
        _ => {}
    }
    if distinct {
        for arg in &mut args {
            if is_float(arg, schema) {
                let canonical = through(canonical_float_udf(), arg.clone());
                for sort in &mut order_by {
                    if sort.expr == *arg {
                        sort.expr = canonical.clone();
                    }
                }
                *arg = canonical;
                changed = true;
            }
        }
    }
    let expr = Expr::AggregateFunction(AggregateFunction {
        func,
        params: AggregateFunctionParams {
            args,
            distinct,
            filter,
            order_by,
            null_treatment,
        },
    });
    Ok(if changed {
        Transformed::yes(expr)
    } else {
        Transformed::no(expr)
    })
}
