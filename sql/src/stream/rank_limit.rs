//! A ranking kept to its first ranks: `… ROW_NUMBER() OVER (…) AS rn … WHERE rn <= N` (or
//! `rn < N`, `rn = 1`) found in an INSERT's physical plan and marked, so the operator that
//! streams it knows N: the window operator under the filter is wrapped in a
//! [`RankLimitExec`], which runs it unchanged (the filter stays above). Rules see the window
//! through the wrapper ([`window_parts`]).

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_expr::split_conjunction;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;

use super::window_op::{RankLimitExec, window_parts};

/// `plan` with each window operator computing one `ROW_NUMBER()` that the filter above it (or
/// above a projection keeping the rank) keeps to its first ranks wrapped in a
/// [`RankLimitExec`].
///
/// # Errors
/// DataFusion failures rebuilding the plan.
pub fn mark_rank_limits(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(filter) = node.downcast_ref::<FilterExec>() else {
            return Ok(Transformed::no(node));
        };
        // The window right under the filter, or under a projection that keeps its rank.
        let projection = filter.input().downcast_ref::<ProjectionExec>();
        let window = projection.map_or(filter.input(), |p| p.input());
        let Some(([expr], input)) = window_parts(window.as_ref()) else {
            return Ok(Transformed::no(node));
        };
        if !expr.name().starts_with("row_number(") {
            return Ok(Transformed::no(node));
        }
        let rank = input.schema().fields().len();
        // The filter's columns that are the rank.
        let is_rank = |column: usize| match projection {
            Some(p) => p.expr().get(column).is_some_and(|e| {
                e.expr
                    .downcast_ref::<Column>()
                    .is_some_and(|c| c.index() == rank)
            }),
            None => column == rank,
        };
        let Some(limit) = split_conjunction(filter.predicate())
            .into_iter()
            .find_map(|c| kept_ranks(c, &is_rank))
        else {
            return Ok(Transformed::no(node));
        };
        let marked: Arc<dyn ExecutionPlan> =
            Arc::new(RankLimitExec::new(Arc::clone(window), rank, limit));
        let under_filter = match projection {
            Some(_) => replace_children_if_necessary(Arc::clone(filter.input()), vec![marked])?,
            None => marked,
        };
        Ok(Transformed::yes(replace_children_if_necessary(
            Arc::clone(&node),
            vec![under_filter],
        )?))
    })
    .map(|t| t.data)
}

/// The greatest rank `predicate` keeps when it is `rank <= n`, `rank < n` or `rank = 1` over
/// a column that `rank` says is the rank (either side).
fn kept_ranks(predicate: &Arc<dyn PhysicalExpr>, rank: &dyn Fn(usize) -> bool) -> Option<u64> {
    let binary = predicate.downcast_ref::<BinaryExpr>()?;
    let is_rank =
        |e: &Arc<dyn PhysicalExpr>| e.downcast_ref::<Column>().is_some_and(|c| rank(c.index()));
    let value = |e: &Arc<dyn PhysicalExpr>| {
        let literal = e.downcast_ref::<Literal>()?;
        match literal.value().cast_to(&DataType::UInt64).ok()? {
            ScalarValue::UInt64(Some(v)) => Some(v),
            _ => None,
        }
    };
    let (op, n) = if is_rank(binary.left()) {
        (*binary.op(), value(binary.right())?)
    } else if is_rank(binary.right()) {
        (binary.op().swap()?, value(binary.left())?)
    } else {
        return None;
    };
    match op {
        Operator::LtEq => Some(n),
        Operator::Lt => n.checked_sub(1),
        Operator::Eq if n == 1 => Some(1),
        _ => None,
    }
    .filter(|n| *n > 0)
}
