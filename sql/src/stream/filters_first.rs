//! A WHERE clause filters rows before `predict()` scores them.
//!
//! DataFusion moves a projection that narrows its input below the filter above it, so fewer
//! columns travel through the filter. When the projection calls `predict()`, that scores every
//! row, the ones the WHERE clause drops included: model calls nobody asked for, dead letters
//! (or, with `null_policy` `fail`, a stopped pipeline) for rows the query never keeps.
//! [`FiltersFirst`] puts such a filter back below the projection, where the query wrote it.
//!
//! ```text
//!   Filter: id % 3 != 1                      Projection: id, predict('m', x0, x1) AS v
//!     Projection: id, predict(..) AS v  ─▶     Filter: id % 3 != 1
//!       scan                                     scan
//! ```
//!
//! A filter that reads the score itself (`WHERE predict(...) > 0.5`) stays above it.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use volley_udfs::model::PredictFunc;

/// Moves filters back below the `predict()` projections they do not read (see the
/// [module docs](self)).
#[derive(Debug, Default)]
pub struct FiltersFirst;

impl PhysicalOptimizerRule for FiltersFirst {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(filter) = node.downcast_ref::<FilterExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(projection) = filter.input().downcast_ref::<ProjectionExec>() else {
                return Ok(Transformed::no(node));
            };
            if !projection.expr().iter().any(|e| calls_predict(&e.expr)) {
                return Ok(Transformed::no(node));
            }
            let Some(predicate) = below(filter.predicate(), projection.expr())? else {
                return Ok(Transformed::no(node));
            };
            let filtered = FilterExecBuilder::new(predicate, Arc::clone(projection.input()))
                .with_default_selectivity(filter.default_selectivity())
                .with_batch_size(filter.batch_size())
                .with_fetch(filter.fetch())
                .build()?;
            let exprs: Vec<ProjectionExpr> = match filter.projection() {
                Some(keep) => keep.iter().map(|&i| projection.expr()[i].clone()).collect(),
                None => projection.expr().to_vec(),
            };
            let moved = ProjectionExec::try_new(exprs, Arc::new(filtered))?;
            Ok(Transformed::yes(Arc::new(moved) as Arc<dyn ExecutionPlan>))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "volley_filters_first"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether `expr` calls `predict()`.
fn calls_predict(expr: &Arc<dyn PhysicalExpr>) -> bool {
    expr.exists(|e| Ok(ScalarFunctionExpr::try_downcast_func::<PredictFunc>(e.as_ref()).is_some()))
        .unwrap_or(false)
}

/// `predicate`, over the projection's output, rewritten over its input: `None` when it reads
/// a column the projection computes.
fn below(
    predicate: &Arc<dyn PhysicalExpr>,
    exprs: &[ProjectionExpr],
) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    let mut computed = false;
    let rewritten = Arc::clone(predicate).transform_up(|e| {
        let Some(column) = e.downcast_ref::<Column>() else {
            return Ok(Transformed::no(e));
        };
        match exprs
            .get(column.index())
            .and_then(|p| p.expr.downcast_ref::<Column>())
        {
            Some(source) => Ok(Transformed::yes(
                Arc::new(source.clone()) as Arc<dyn PhysicalExpr>
            )),
            None => {
                computed = true;
                Ok(Transformed::no(e))
            }
        }
    })?;
    Ok((!computed).then_some(rewritten.data))
}
