//! Point-in-time (as-of) joins: `a JOIN b ON a.k = b.k AND b.ts <= a.ts`, then
//! `ROW_NUMBER() OVER (PARTITION BY <a's columns> ORDER BY b.ts DESC) … WHERE rn <= N`.
//!
//! The right time has no lower bound, so an interval join would hold every right row. But
//! the ranking keeps, per left row, the N newest matches, and every left row still to come is
//! at or after the left watermark: the right rows at or before that (the bound's offset
//! added) match every such row of their key. Of those, only the N newest per key can still
//! rank, so the join holds them and the right rows after the watermark, nothing older.

use std::sync::Arc;

use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::displayable;
use volley_sql::stream::trace::join_input_column;
use volley_sql::stream::window_op::{RankLimitExec, window_parts};

use arrow::array::{Array, AsArray, UInt32Array};
use arrow::compute::{SortColumn, SortOptions, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Int64Type};
use arrow::row::{RowConverter, SortField};
use volley_sql::stream::operator::{OperatorError, Result};

use super::WHAT;
use super::bounds::UpperBound;
use crate::two_streams::Held;

/// How an as-of join trims its right rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsOf {
    /// The newest right rows per key kept among those every future left row matches.
    pub keep: u64,
}

/// The as-of trimming of `join` (bounded above by `bound`), when the INSERT's plan (`root`)
/// ranks its rows per left row by the right time, newest first, and keeps the first ranks.
pub fn as_of(root: &Arc<dyn ExecutionPlan>, join: &HashJoinExec, bound: UpperBound) -> Option<AsOf> {
    let this = displayable(join).one_line().to_string();
    let mut found = None;
    let _ = datafusion::common::tree_node::TreeNode::apply(root, |node| {
        use datafusion::common::tree_node::TreeNodeRecursion;
        if let Some(marked) = node.downcast_ref::<RankLimitExec>()
            && let Some(keep) = ranked_over(marked, &this, bound)
        {
            found = Some(AsOf { keep });
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// The ranks `marked` keeps when it ranks the rows of the join displayed as `this` per left
/// columns by its right time descending.
fn ranked_over(marked: &RankLimitExec, this: &str, bound: UpperBound) -> Option<u64> {
    let ([expr], input) = window_parts(marked)? else {
        return None;
    };
    let first = expr.order_by().first()?;
    if !first.options.descending {
        return None;
    }
    let (join, column) = to_join(input, first.expr.downcast_ref::<Column>()?.index())?;
    let hash = join.downcast_ref::<HashJoinExec>()?;
    if displayable(hash).one_line().to_string() != this {
        return None;
    }
    let (side, index) = join_input_column(hash, column)?;
    if !Arc::ptr_eq(side, hash.right()) || index != bound.right_ts {
        return None;
    }
    // Every PARTITION BY is a left column, so the N newest matches of a left row are in its
    // partition together.
    for key in expr.partition_by() {
        let (other, column) = to_join(input, key.downcast_ref::<Column>()?.index())?;
        if !Arc::ptr_eq(&other, &join) {
            return None;
        }
        let (side, _) = join_input_column(hash, column)?;
        if !Arc::ptr_eq(side, hash.left()) {
            return None;
        }
    }
    Some(marked.limit())
}

/// The join that column `column` of `plan` is an output column of, through projections and
/// nodes that only move or order rows.
fn to_join(
    plan: &Arc<dyn ExecutionPlan>,
    column: usize,
) -> Option<(Arc<dyn ExecutionPlan>, usize)> {
    if plan.downcast_ref::<HashJoinExec>().is_some() {
        return Some((Arc::clone(plan), column));
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let expr = &projection.expr().get(column)?.expr;
        return to_join(projection.input(), expr.downcast_ref::<Column>()?.index());
    }
    let moves = volley_sql::stream::trace::moves_rows(plan.as_ref());
    let [child] = plan.children()[..] else {
        return None;
    };
    if !moves || child.schema().fields().len() != plan.schema().fields().len() {
        return None;
    }
    to_join(child, column)
}

impl super::IntervalJoinState {
    /// Keeps, of the held right rows before `before` (the time's unit), the `keep` newest of
    /// each key (and those tied with the last of them), and every later right row. It runs
    /// when right rows came or `before` moved since it last ran: one sort of the held right
    /// rows, which every epoch's new left rows are joined with anyway.
    pub(super) fn trim_as_of(&mut self, before: i64, keep: u64) -> Result<()> {
        let held = self.right.rows();
        let (after_last, last_before) = self.as_of_trimmed;
        if held == after_last && before <= last_before {
            return Ok(());
        }
        let Some(join) = self.plan.join.downcast_ref::<HashJoinExec>() else {
            return Err(OperatorError::Internal(
                "an as-of join that is not a hash join".into(),
            ));
        };
        let schema = self.plan.right.plan.schema();
        let all = concat_batches(&schema, &self.right.snapshot())?;
        let times = arrow::compute::cast(
            all.column(self.plan.right.window_column),
            &DataType::Int64,
        )?;
        let times = times.as_primitive::<Int64Type>();
        let mut sort = Vec::new();
        let mut keys = Vec::new();
        for (_, right) in join.on() {
            let values = right
                .evaluate(&all)
                .and_then(|v| v.into_array(all.num_rows()))
                .map_err(OperatorError::exec(WHAT))?;
            keys.push(Arc::clone(&values));
            sort.push(SortColumn {
                values,
                options: None,
            });
        }
        sort.push(SortColumn {
            values: Arc::new(times.clone()),
            options: Some(SortOptions {
                descending: true,
                nulls_first: false,
            }),
        });
        let order = lexsort_to_indices(&sort, None)?;
        let converter = RowConverter::new(
            keys.iter()
                .map(|k| SortField::new(k.data_type().clone()))
                .collect(),
        )?;
        let rows = converter.convert_columns(&keys)?;
        let mut kept = Vec::with_capacity(all.num_rows());
        let (mut previous, mut count, mut last) = (None, 0u64, None);
        for &i in order.values() {
            let i = i as usize;
            let key = rows.row(i);
            if previous != Some(key) {
                previous = Some(key);
                count = 0;
                last = None;
            }
            let time = times.value(i);
            if times.is_null(i) || time >= before {
                kept.push(i as u32);
            } else if count < keep || last == Some(time) {
                count += 1;
                last = Some(time);
                kept.push(i as u32);
            }
        }
        kept.sort_unstable();
        let trimmed = take_record_batch(&all, &UInt32Array::from(kept))?;
        self.as_of_trimmed = (trimmed.num_rows(), before);
        self.right = Held::default();
        self.right.add_flat(vec![trimmed]);
        Ok(())
    }
}
