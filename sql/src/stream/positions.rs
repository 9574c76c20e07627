//! Traces `predict()` calls to the source records they score, so the rows a model leaves out
//! reach dead letters with their position (`_epoch_row`, like late rows).
//!
//! ```text
//!   Projection: predict('m', a, b)              Projection: predict('m', a, b, _epoch_row)
//!     Filter: x > 0                      ─▶       Filter: x > 0      (passes _epoch_row on)
//!       EpochSourceExec(source)                     EpochSourceExec(source, with _epoch_row)
//! ```
//!
//! A call is traced when only stateless, row-by-row nodes (projections, filters, and nodes
//! that move rows without changing columns) lie between it and one source's leaf. The
//! position column is appended after every column those nodes output, so no column the plan
//! already uses moves, and the node holding the call outputs what it did before. Calls above
//! an aggregate, a join or an operator's output have no single source record: they are left
//! as they are, and their letters carry the call's inputs only.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::Schema;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::{ExecutionPlan, replace_children_if_necessary};
use volley_udfs::model::PredictFunc;

use super::leaf::{EpochSourceExec, POSITION};
use super::trace::moves_rows;

/// `plan` with every `predict()` call that can be traced to one source's records given the
/// position of each row it scores. Its output is unchanged.
///
/// # Errors
/// Rebuilding a node fails (a bug).
pub fn trace_model_rows(
    plan: Arc<dyn ExecutionPlan>,
    sources: &HashSet<String>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if !calls_predict(&plan) {
        let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
        if children.is_empty() {
            return Ok(plan);
        }
        let traced = children
            .into_iter()
            .map(|c| trace_model_rows(c, sources))
            .collect::<Result<Vec<_>>>()?;
        return replace_children_if_necessary(plan, traced);
    }
    if let Some((widened, source)) = with_positions(plan.children()[0], sources)? {
        if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
            let at = widened.schema().fields().len() - 1;
            let exprs = traced_exprs(projection.expr(), &source, at)?;
            return Ok(Arc::new(ProjectionExec::try_new(exprs, widened)?));
        }
        if let Some(filter) = plan.downcast_ref::<FilterExec>() {
            let width = filter.input().schema().fields().len();
            let predicate = traced(filter.predicate(), &source, width)?;
            // Without a projection of its own, the filter would pass the positions on.
            let keep = match filter.projection() {
                Some(p) => p.to_vec(),
                None => (0..width).collect(),
            };
            let rebuilt = FilterExecBuilder::from(filter)
                .with_input(widened)
                .with_predicate(predicate)
                .apply_projection(None)?
                .apply_projection(Some(keep))?
                .build()?;
            // (`apply_projection(None)` clears the filter's projection; `keep` is over the
            // widened input.)
            return Ok(Arc::new(rebuilt));
        }
    }
    let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    let traced = children
        .into_iter()
        .map(|c| trace_model_rows(c, sources))
        .collect::<Result<Vec<_>>>()?;
    replace_children_if_necessary(plan, traced)
}

/// `plan` with [`POSITION`] appended to its output (and every call below it traced), and the
/// source the positions are of; `None` when its rows cannot be traced to one source.
fn with_positions(
    plan: &Arc<dyn ExecutionPlan>,
    sources: &HashSet<String>,
) -> Result<Option<(Arc<dyn ExecutionPlan>, String)>> {
    if let Some(leaf) = plan.downcast_ref::<EpochSourceExec>() {
        if !sources.contains(leaf.input_name()) || leaf.has_positions() {
            return Ok(None);
        }
        let source = leaf.input_name().to_string();
        return Ok(Some((Arc::new(leaf.with_positions()?), source)));
    }
    let Some(input) = plan
        .children()
        .first()
        .copied()
        .filter(|_| plan.children().len() == 1)
    else {
        return Ok(None);
    };
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let Some((widened, source)) = with_positions(input, sources)? else {
            return Ok(None);
        };
        let at = widened.schema().fields().len() - 1;
        let mut exprs = traced_exprs(projection.expr(), &source, at)?;
        exprs.push(ProjectionExpr {
            expr: Arc::new(Column::new(POSITION, at)),
            alias: POSITION.to_string(),
        });
        return Ok(Some((
            Arc::new(ProjectionExec::try_new(exprs, widened)?),
            source,
        )));
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let Some((widened, source)) = with_positions(input, sources)? else {
            return Ok(None);
        };
        let at = widened.schema().fields().len() - 1;
        let predicate = traced(filter.predicate(), &source, at)?;
        let keep = filter
            .projection()
            .as_ref()
            .map(|p| p.iter().copied().chain([at]).collect::<Vec<_>>());
        let rebuilt = FilterExecBuilder::from(filter)
            .with_input(widened)
            .with_predicate(predicate)
            .apply_projection(None)?
            .apply_projection(keep)?
            .build()?;
        return Ok(Some((Arc::new(rebuilt), source)));
    }
    if moves_rows(plan.as_ref()) && !calls_predict(plan) {
        let Some((widened, source)) = with_positions(input, sources)? else {
            return Ok(None);
        };
        let rebuilt = replace_children_if_necessary(Arc::clone(plan), vec![widened])?;
        return Ok(Some((rebuilt, source)));
    }
    Ok(None)
}

/// Whether a projection or filter node calls `predict()` itself.
fn calls_predict(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let exprs: Vec<&Arc<dyn PhysicalExpr>> =
        if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
            projection.expr().iter().map(|e| &e.expr).collect()
        } else if let Some(filter) = plan.downcast_ref::<FilterExec>() {
            vec![filter.predicate()]
        } else {
            return false;
        };
    exprs.into_iter().any(scores)
}

/// Whether `expr` calls `predict()` (a call not yet traced).
pub(crate) fn scores(expr: &Arc<dyn PhysicalExpr>) -> bool {
    expr.exists(|node| Ok(predict_of(node.as_ref()).is_some()))
        .unwrap_or(false)
}

/// The `predict()` call `expr` is, if it is one (not yet traced).
fn predict_of(expr: &dyn PhysicalExpr) -> Option<(&ScalarFunctionExpr, &PredictFunc)> {
    let call = ScalarFunctionExpr::try_downcast_func::<PredictFunc>(expr)?;
    let func = call.fun().inner().downcast_ref::<PredictFunc>()?;
    (!func.is_traced()).then_some((call, func))
}

fn traced_exprs(exprs: &[ProjectionExpr], source: &str, at: usize) -> Result<Vec<ProjectionExpr>> {
    exprs
        .iter()
        .map(|e| {
            Ok(ProjectionExpr {
                expr: traced(&e.expr, source, at)?,
                alias: e.alias.clone(),
            })
        })
        .collect()
}

/// `expr` with every `predict()` call in it given the positions at column `at`.
fn traced(expr: &Arc<dyn PhysicalExpr>, source: &str, at: usize) -> Result<Arc<dyn PhysicalExpr>> {
    Arc::clone(expr)
        .transform_up(|node| {
            let Some((call, func)) = predict_of(node.as_ref()) else {
                return Ok(Transformed::no(node));
            };
            let mut args = call.args().to_vec();
            args.push(Arc::new(Column::new(POSITION, at)));
            let udf = ScalarUDF::new_from_impl(func.traced(source));
            Ok(Transformed::yes(Arc::new(ScalarFunctionExpr::new(
                call.name(),
                Arc::new(udf),
                args,
                call.return_field(&Schema::empty())?,
                Arc::new(call.config_options().clone()),
            )) as Arc<dyn PhysicalExpr>))
        })
        .map(|t| t.data)
}
