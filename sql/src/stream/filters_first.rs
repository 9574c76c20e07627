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
//! A filter that reads the score itself (`WHERE predict(...) > 0.5`) stays above it; one that
//! reads another computed column computes it from the projection's input.

use std::sync::Arc;

use super::positions::scores;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};

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
            if !projection.expr().iter().any(|e| scores(&e.expr)) {
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

/// `predicate`, over the projection's output, rewritten over its input (a column the
/// projection computes becomes its expression): `None` when it reads a score.
fn below(
    predicate: &Arc<dyn PhysicalExpr>,
    exprs: &[ProjectionExpr],
) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    let mut scored = false;
    let rewritten = Arc::clone(predicate).transform_down(|e| {
        let Some(column) = e.downcast_ref::<Column>() else {
            return Ok(Transformed::no(e));
        };
        match exprs.get(column.index()) {
            // Its expression is over the projection's input: not to be rewritten again.
            Some(p) if !scores(&p.expr) => Ok(Transformed::new(
                Arc::clone(&p.expr),
                true,
                TreeNodeRecursion::Jump,
            )),
            _ => {
                scored = true;
                Ok(Transformed::no(e))
            }
        }
    })?;
    Ok((!scored).then_some(rewritten.data))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::ScalarValue;
    use datafusion::common::config::ConfigOptions;
    use datafusion::logical_expr::{Operator, ScalarUDF};
    use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
    use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
    use datafusion::physical_optimizer::PhysicalOptimizerRule;
    use datafusion::physical_plan::empty::EmptyExec;
    use datafusion::physical_plan::filter::FilterExec;
    use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
    use datafusion::physical_plan::{ExecutionPlan, displayable};
    use volley_udfs::model::{ModelSet, PredictFunc};

    use super::FiltersFirst;

    fn col(name: &str, index: usize) -> Arc<dyn PhysicalExpr> {
        Arc::new(Column::new(name, index))
    }

    fn binary(l: Arc<dyn PhysicalExpr>, op: Operator, r: i64) -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(
            l,
            op,
            Arc::new(Literal::new(ScalarValue::Int64(Some(r)))),
        ))
    }

    /// `Filter(predicate) ← Projection(a, a + 1 AS c, predict('m', b) AS v) ← (a, b)`, as
    /// DataFusion's projection pushdown leaves it, after [`FiltersFirst`].
    fn rewritten(predicate: Arc<dyn PhysicalExpr>) -> String {
        let input = Arc::new(EmptyExec::new(Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("b", DataType::Int64, false),
        ]))));
        let predict = ScalarFunctionExpr::new(
            "predict",
            Arc::new(ScalarUDF::new_from_impl(PredictFunc::new(Arc::new(
                ModelSet::default(),
            )))),
            vec![
                Arc::new(Literal::new(ScalarValue::Utf8(Some("m".into())))),
                col("b", 1),
            ],
            Arc::new(Field::new("predict", DataType::Float32, true)),
            Arc::new(ConfigOptions::default()),
        );
        let exprs = vec![
            ProjectionExpr {
                expr: col("a", 0),
                alias: "a".into(),
            },
            ProjectionExpr {
                expr: binary(col("a", 0), Operator::Plus, 1),
                alias: "c".into(),
            },
            ProjectionExpr {
                expr: Arc::new(predict),
                alias: "v".into(),
            },
        ];
        let projection = Arc::new(ProjectionExec::try_new(exprs, input).unwrap());
        let filter: Arc<dyn ExecutionPlan> =
            Arc::new(FilterExec::try_new(predicate, projection).unwrap());
        let plan = FiltersFirst
            .optimize(filter, &ConfigOptions::default())
            .unwrap();
        displayable(plan.as_ref()).indent(false).to_string()
    }

    #[test]
    fn a_filter_not_reading_the_score_runs_before_it() {
        // On a column passed through, and on one the projection computes.
        let plain = rewritten(binary(col("a", 0), Operator::Gt, 5));
        assert!(
            plain.starts_with("ProjectionExec") && plain.contains("\n  FilterExec: a@0 > 5"),
            "{plain}"
        );
        let computed = rewritten(binary(col("c", 1), Operator::Gt, 5));
        assert!(
            computed.starts_with("ProjectionExec")
                && computed.contains("\n  FilterExec: a@0 + 1 > 5"),
            "{computed}"
        );
    }

    #[test]
    fn a_filter_reading_the_score_stays_above_it() {
        let scored = rewritten(Arc::new(BinaryExpr::new(
            col("v", 2),
            Operator::Gt,
            Arc::new(Literal::new(ScalarValue::Float32(Some(0.5)))),
        )));
        assert!(scored.starts_with("FilterExec: v@2 > 0.5"), "{scored}");
    }
}
