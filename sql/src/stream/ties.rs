//! One order for rows with equal ORDER BY values of an OVER window, in batch and streaming.
//!
//! `ROW_NUMBER`, `LAG`, ROWS frames and `first_value` over peers depend on the order of rows
//! whose ORDER BY values are equal, which SQL leaves open and which in practice follows the
//! input's order (files, micro-batches, workers). Volley fixes it: within a partition, rows
//! are ordered by the ORDER BY value, then by every other column of the window's input in
//! the input's column order, ascending, NULLs last. Batch gets it from [`WindowTies`], a
//! physical rewrite that completes the sort under each window operator; the streaming OVER
//! operator sorts its rows by the same [`tie_columns`].
//!
//! The completion changes no peers: RANGE frames and RANK still see rows with equal ORDER BY
//! values as peers; only the order among them is fixed.

use std::sync::Arc;

use arrow::compute::SortOptions;
use arrow::datatypes::Schema;
use arrow::row::{RowConverter, SortField};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::sorts::sort::SortExec;

use super::window_op::window_parts;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};

/// How tie columns sort: ascending, NULLs last.
pub const TIE_ORDER: SortOptions = SortOptions {
    descending: false,
    nulls_first: false,
};

/// The columns of `schema` that break ties after the ORDER BY columns `ordered`: every other
/// column Arrow can sort, in schema order.
pub fn tie_columns(schema: &Schema, ordered: &[usize]) -> Vec<usize> {
    schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(i, f)| {
            !ordered.contains(i)
                && RowConverter::supports_fields(&[SortField::new(f.data_type().clone())])
        })
        .map(|(i, _)| i)
        .collect()
}

/// Completes the sort under every window operator with the tie columns (see the module docs).
#[derive(Debug, Default)]
pub struct WindowTies;

impl PhysicalOptimizerRule for WindowTies {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(exprs) = window_parts(node.as_ref()).map(|(e, _)| e.to_vec()) else {
                return Ok(Transformed::no(node));
            };
            let Some(first) = exprs.first() else {
                return Ok(Transformed::no(node));
            };
            let Some(child) = node.children().first().map(|c| Arc::clone(c)) else {
                return Ok(Transformed::no(node));
            };
            let (mut ordering, below): (Vec<PhysicalSortExpr>, _) =
                match child.downcast_ref::<SortExec>() {
                    Some(sort) if sort.fetch().is_none() => (
                        sort.expr().iter().cloned().collect(),
                        Arc::clone(sort.input()),
                    ),
                    _ => {
                        let mut ordering: Vec<PhysicalSortExpr> = first
                            .partition_by()
                            .iter()
                            .map(|e| PhysicalSortExpr::new(Arc::clone(e), TIE_ORDER))
                            .collect();
                        ordering.extend(first.order_by().iter().cloned());
                        (ordering, Arc::clone(&child))
                    }
                };
            let ordered: Vec<usize> = first
                .order_by()
                .iter()
                .filter_map(|s| s.expr.downcast_ref::<Column>().map(Column::index))
                .collect();
            let schema = below.schema();
            let mut added = false;
            for i in tie_columns(&schema, &ordered) {
                let column: Arc<dyn PhysicalExpr> =
                    Arc::new(Column::new(schema.field(i).name(), i));
                if ordering.iter().any(|s| s.expr.eq(&column)) {
                    continue;
                }
                ordering.push(PhysicalSortExpr::new(column, TIE_ORDER));
                added = true;
            }
            if !added {
                return Ok(Transformed::no(node));
            }
            let Some(ordering) = LexOrdering::new(ordering) else {
                return Ok(Transformed::no(node));
            };
            let partitions = below.output_partitioning().partition_count();
            let sort: Arc<dyn ExecutionPlan> =
                Arc::new(SortExec::new(ordering, below).with_preserve_partitioning(partitions > 1));
            Ok(Transformed::yes(
                datafusion::physical_plan::execution_plan::replace_children_if_necessary(
                    node,
                    vec![sort],
                )?,
            ))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "volley_window_ties"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
