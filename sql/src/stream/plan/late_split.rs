//! Late-row filters on the leaves of a plan: a row whose window (or join side) has already
//! been emitted leaves at the leaf that read it, whole, with every column of its source.
//!
//! Every filter is built the same way ([`StreamPlanner::late_at_leaves`]): at each leaf of the
//! given sources, the source's own watermarked event-time column (cast to the type the plan
//! above computes with) goes into an expression for the row's window start, which the
//! filter compares with what the window's gate says has been emitted.

use std::sync::Arc;

use arrow::datatypes::{DataType, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result as DfResult;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_plan::ExecutionPlan;

use super::StreamPlanner;
use crate::error::{Result, SqlError};
use crate::stream::late::{LateFilter, LateGate};
use crate::stream::leaf::EpochSourceExec;
use crate::stream::trace::column_of;
use crate::stream::window::{WindowSpec, as_bucket};

/// Turns a leaf's event-time column into a row's window start over the leaf's schema.
pub type WindowStart<'a> =
    dyn Fn(Arc<dyn PhysicalExpr>, &Schema) -> DfResult<Arc<dyn PhysicalExpr>> + 'a;

impl StreamPlanner {
    /// `plan` with a late-row filter through `gate` on every leaf reading one of `sources`:
    /// `start` turns the leaf's event-time column (cast to `ts_type`) into the row's window
    /// start over the leaf's schema.
    pub(crate) fn late_at_leaves(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        sources: &[String],
        gate: &Arc<LateGate>,
        ts_type: &DataType,
        start: &WindowStart<'_>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Arc::clone(plan)
            .transform_up(|node| {
                let Some(leaf) = node.downcast_ref::<EpochSourceExec>() else {
                    return Ok(Transformed::no(node));
                };
                let Some(wm) = self
                    .sources
                    .get(leaf.input_name())
                    .filter(|s| sources.contains(&s.name))
                    .and_then(|s| s.watermark.as_ref())
                else {
                    return Ok(Transformed::no(node));
                };
                let schema = leaf.input_schema();
                let index = schema.index_of(&wm.column)?;
                let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(&wm.column, index));
                let column = if schema.field(index).data_type() == ts_type {
                    column
                } else {
                    Arc::new(CastExpr::new(column, ts_type.clone(), None))
                };
                let late = LateFilter {
                    window_start: start(column, schema.as_ref())?,
                    gate: Arc::clone(gate),
                };
                Ok(Transformed::yes(
                    Arc::new(leaf.with_late(late)) as Arc<dyn ExecutionPlan>
                ))
            })
            .map(|t| t.data)
            .map_err(|e| SqlError::Internal(format!("splitting late rows: {e}")))
    }

    /// `pre` with a late-row filter on every leaf of the window's sources: each computes the
    /// window start (`window_expr`, over `pre`'s output) from the source's own event-time
    /// column, cast as `pre` casts it, so a late row leaves with all its columns.
    pub(crate) fn split_late_at_leaves(
        &self,
        pre: &Arc<dyn ExecutionPlan>,
        window_expr: &Arc<dyn PhysicalExpr>,
        window: &WindowSpec,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let ts = bucket_time(window_expr)?;
        let pre_type = pre.schema().field(ts).data_type().clone();
        self.split_late_typed(pre, window_expr, &pre_type, window)
    }

    /// [`Self::split_late_at_leaves`] where `window_expr`'s time column (of type `pre_type`)
    /// is computed below `pre`'s output, as a bucket in a projection of a join's side.
    pub(crate) fn split_late_typed(
        &self,
        pre: &Arc<dyn ExecutionPlan>,
        window_expr: &Arc<dyn PhysicalExpr>,
        pre_type: &DataType,
        window: &WindowSpec,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let ts = bucket_time(window_expr)?;
        let start = |column: Arc<dyn PhysicalExpr>, _: &Schema| {
            Ok(Arc::clone(window_expr)
                .transform(|e| match e.downcast_ref::<Column>() {
                    Some(c) if c.index() == ts => Ok(Transformed::yes(Arc::clone(&column))),
                    _ => Ok(Transformed::no(e)),
                })?
                .data)
        };
        self.late_at_leaves(pre, &window.sources, &window.gate, pre_type, &start)
    }

    /// `plan` with a late-row filter on each leaf of `sources` judging rows by their own
    /// event time (cast to `ts_type`).
    pub(crate) fn split_late_identity(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        sources: &[String],
        gate: &Arc<LateGate>,
        ts_type: &DataType,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.late_at_leaves(plan, sources, gate, ts_type, &|column, _| Ok(column))
    }
}

/// The column a window bucket expression takes its time from.
fn bucket_time(window_expr: &Arc<dyn PhysicalExpr>) -> Result<usize> {
    as_bucket(window_expr)
        .ok()
        .flatten()
        .and_then(|b| column_of(&b.ts))
        .ok_or_else(|| {
            SqlError::Internal("splitting late rows: the window has no event-time column".into())
        })
}
