//! Column lineage through stateless plan nodes: which input column does output column `i` come from?

use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column, TryCastExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::projection::ProjectionExec;

use super::leaf::EpochSourceExec;

/// Where a column comes from: a leaf input and that input's (unprojected) column index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnOrigin {
    /// The leaf's input name (source table, or an operator's output).
    pub input: String,
    /// Column index in that input's full schema.
    pub column: usize,
}

/// Whether `plan` only moves, batches or orders its one input's rows: its output columns are
/// its input's, in the same places, and it keeps every row.
pub fn moves_rows(plan: &dyn ExecutionPlan) -> bool {
    matches!(
        plan.name(),
        "CoalesceBatchesExec"
            | "CoalescePartitionsExec"
            | "RepartitionExec"
            | "SortExec"
            | "SortPreservingMergeExec"
            | "CooperativeExec"
    )
}

/// Follows output column `index` of `plan` down to the leaves it is copied from, unchanged or
/// cast. Returns every origin (several under a UNION), or `None` if the column is computed.
pub fn trace_column(plan: &Arc<dyn ExecutionPlan>, index: usize) -> Option<Vec<ColumnOrigin>> {
    if let Some(leaf) = plan.downcast_ref::<EpochSourceExec>() {
        return Some(vec![ColumnOrigin {
            input: leaf.input_name().to_string(),
            column: leaf.input_column(index)?,
        }]);
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let expr = &projection.expr().get(index)?.expr;
        let column = column_of(expr)?;
        return trace_column(projection.input(), column);
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let column = match filter.projection() {
            Some(p) => *p.get(index)?,
            None => index,
        };
        return trace_column(filter.input(), column);
    }
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        let (side, column) = join_input_column(join, index)?;
        return trace_column(side, column);
    }
    if moves_rows(plan.as_ref()) {
        return trace_column(plan.children().first()?, index);
    }
    match plan.name() {
        "UnionExec" | "InterleaveExec" => {
            let mut all = Vec::new();
            for child in plan.children() {
                all.extend(trace_column(child, index)?);
            }
            Some(all)
        }
        _ => None,
    }
}

/// The input (build or probe side) and column of that input that output column `index` of
/// `join` is; `None` for a mark join's mark column.
pub fn join_input_column(
    join: &HashJoinExec,
    index: usize,
) -> Option<(&Arc<dyn ExecutionPlan>, usize)> {
    let index = match &join.projection {
        Some(p) => *p.get(index)?,
        None => index,
    };
    let left = join.left().schema().fields().len();
    match join.join_type {
        JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full if index < left => {
            Some((join.left(), index))
        }
        JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => {
            Some((join.right(), index - left))
        }
        JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => {
            (index < left).then(|| (join.left(), index))
        }
        JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => {
            (index < join.right().schema().fields().len()).then(|| (join.right(), index))
        }
    }
}

/// The column index an expression copies, looking through casts.
pub fn column_of(expr: &Arc<dyn PhysicalExpr>) -> Option<usize> {
    if let Some(c) = expr.downcast_ref::<Column>() {
        return Some(c.index());
    }
    if let Some(c) = expr.downcast_ref::<CastExpr>() {
        return column_of(c.expr());
    }
    if let Some(c) = expr.downcast_ref::<TryCastExpr>() {
        return column_of(c.expr());
    }
    None
}

/// Every leaf column output column `index` of `plan` is computed from, through projections that
/// compute it (unlike [`trace_column`], which follows copies only). Empty where lineage is
/// lost (a node other than a projection, filter or pass-through).
pub fn derived_origins(plan: &Arc<dyn ExecutionPlan>, index: usize) -> Vec<ColumnOrigin> {
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let Some(expr) = projection.expr().get(index) else {
            return Vec::new();
        };
        return derived_from_expr(&expr.expr, projection.input());
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let column = match filter.projection() {
            Some(p) => p.get(index).copied(),
            None => Some(index),
        };
        return column.map_or_else(Vec::new, |c| derived_origins(filter.input(), c));
    }
    if plan.downcast_ref::<EpochSourceExec>().is_some() {
        return trace_column(plan, index).unwrap_or_default();
    }
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        return join_input_column(join, index)
            .map_or_else(Vec::new, |(side, column)| derived_origins(side, column));
    }
    match plan.children().as_slice() {
        [only] if trace_column(plan, index).is_some() => derived_origins(only, index),
        children if matches!(plan.name(), "UnionExec" | "InterleaveExec") => children
            .iter()
            .flat_map(|c| derived_origins(c, index))
            .collect(),
        _ => Vec::new(),
    }
}

/// Every leaf column `expr` (over `input`'s output) is computed from.
pub fn derived_from_expr(
    expr: &Arc<dyn PhysicalExpr>,
    input: &Arc<dyn ExecutionPlan>,
) -> Vec<ColumnOrigin> {
    datafusion::physical_expr::utils::collect_columns(expr)
        .iter()
        .flat_map(|c| derived_origins(input, c.index()))
        .collect()
}
