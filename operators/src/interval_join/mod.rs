//! Interval joins of two streams' rows: `ON a.k = b.k AND b.ts BETWEEN a.ts - x AND a.ts +
//! y`, each time a watermarked event time, INNER or LEFT.
//!
//! An epoch: the new rows of each side meet the held (and new) rows of the
//! other; then each side keeps only the rows a future row of the other side could still
//! match, by that side's watermark, and rows older than their own side's watermark become
//! late. A LEFT join also remembers which held left rows have matched, by a row id it adds
//! to them, and emits the others, padded with NULLs, when they are dropped.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::JoinType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::collect;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};

use volley_sql::stream::operator::{OperatorError, Result};

pub use self::plan::IntervalJoinPlan;
pub use self::rule::IntervalJoinRule;
use crate::two_streams::{Held, JoinSide, SideFrontier, run_join, side_rows};

mod as_of;
mod bounds;
mod operator;
mod plan;
mod rule;
#[cfg(test)]
mod tests;

pub use self::bounds::IntervalBounds;

/// What the join is, in execution errors.
const WHAT: &str = "the interval join";

/// An interval join's state: each side's held rows, and where each side was trimmed to.
#[derive(Debug)]
pub struct IntervalJoinState {
    plan: IntervalJoinPlan,
    left: Held,
    right: Held,
    /// The left watermark the right side was last trimmed by (the time column's unit).
    left_mark: Option<i64>,
    /// The right watermark the left side was last trimmed by.
    right_mark: Option<i64>,
    /// A LEFT join: which held left rows have matched.
    outer: Option<OuterLeft>,
    /// An as-of join: the right rows held after its last trim, and the time it trimmed by.
    as_of_trimmed: (usize, i64),
    task_ctx: Arc<TaskContext>,
}

/// The row-id column a LEFT interval join adds to its held left rows.
const ROW_ID: &str = "__volley_row";

/// What a LEFT interval join remembers of its held left rows.
#[derive(Debug, Default)]
struct OuterLeft {
    /// The next row id.
    next_id: u64,
    /// Ids of held left rows that have matched.
    matched: BTreeSet<u64>,
}

/// The earliest time (`unit`s) a side's row may have and still meet a future row of the other
/// side, whose watermark is `mark` (`unit`s): `mark - hi` for the left side, `mark + lo`
/// for the right (`bound` in nanoseconds, rounded so nothing that could match is dropped).
fn keep_from(mark: i64, bound: i64, per: i64, left: bool) -> i64 {
    if mark == i64::MAX {
        return i64::MAX;
    }
    if left {
        mark.saturating_sub(bound.div_euclid(per) + 1)
    } else {
        mark.saturating_add(bound.div_euclid(per))
    }
}

impl IntervalJoinState {
    /// Empty state for `plan`.
    pub fn new(plan: IntervalJoinPlan, task_ctx: Arc<TaskContext>) -> Self {
        let left_join = plan
            .join
            .downcast_ref::<HashJoinExec>()
            .is_some_and(|j| *j.join_type() == JoinType::Left);
        Self {
            plan,
            left: Held::default(),
            right: Held::default(),
            left_mark: None,
            right_mark: None,
            outer: left_join.then(OuterLeft::default),
            as_of_trimmed: (0, i64::MIN),
            task_ctx,
        }
    }

    /// One interval-join epoch (see the module docs): its joined rows.
    async fn run(
        &mut self,
        read: bool,
        watermarks: &HashMap<String, Option<i64>>,
        all_done: bool,
    ) -> Result<Vec<RecordBatch>> {
        let bounds = self.plan.bounds;
        let mut rows = Vec::new();
        if read {
            let new_left = side_rows(&self.plan.left, &self.task_ctx, WHAT).await?;
            let new_right = side_rows(&self.plan.right, &self.task_ctx, WHAT).await?;
            let new_left = self.with_row_ids(new_left)?;
            let held_left = self.left.snapshot();
            let mut right_all = self.right.snapshot();
            right_all.extend(new_right.iter().cloned());
            for (left, right) in [(&new_left, &right_all), (&held_left, &new_right)] {
                if left.is_empty() || right.is_empty() {
                    continue;
                }
                rows.extend(self.join_inner(self.strip(left)?, right.clone()).await?);
                if self.outer.is_some() {
                    let ids = self.matched_ids(left.clone(), right.clone()).await?;
                    if let Some(outer) = &mut self.outer {
                        outer.matched.extend(ids);
                    }
                }
            }
            self.left.add_flat(new_left);
            self.right.add_flat(new_right);
        }
        let (left_mark, right_mark) = if all_done {
            (Some(i64::MAX), Some(i64::MAX))
        } else {
            (
                self.mark(&self.plan.left, watermarks),
                self.mark(&self.plan.right, watermarks),
            )
        };
        let per = self.plan.nanos_per_unit();
        // A left row at l is done once no right row at or after the right watermark can be
        // within [l + lo, l + hi]; a right row at r once no left row can be within
        // [r - hi, r - lo].
        if let Some(wm) = right_mark {
            let from = keep_from(wm, bounds.hi, per, true);
            let done = self.left.retain_from(self.plan.left.window_column, from)?;
            rows.extend(self.unmatched(done).await?);
        }
        if let Some(wm) = left_mark {
            let from = keep_from(wm, bounds.lo, per, false);
            self.right
                .retain_from(self.plan.right.window_column, from)?;
            if let Some(as_of) = self.plan.as_of {
                // Right rows before `wm + hi` match every left row still to come.
                let before = if wm == i64::MAX {
                    i64::MAX
                } else {
                    wm.saturating_add(bounds.hi.div_euclid(per))
                };
                self.trim_as_of(before, as_of.keep)?;
            }
        }
        for (side, wm) in [(&self.plan.left, left_mark), (&self.plan.right, right_mark)] {
            if let (SideFrontier::Sources { gate, .. }, Some(wm)) = (&side.frontier, wm) {
                gate.set_cutoff(wm.saturating_sub(1));
            }
        }
        if left_mark.is_some() {
            self.left_mark = left_mark;
        }
        if right_mark.is_some() {
            self.right_mark = right_mark;
        }
        Ok(rows)
    }

    /// A side's watermark in the time column's unit (`None` while unknown).
    fn mark(&self, side: &JoinSide, watermarks: &HashMap<String, Option<i64>>) -> Option<i64> {
        let per = self.plan.nanos_per_unit();
        match &side.frontier {
            SideFrontier::Sources { sources, .. } => {
                volley_sql::stream::operator::min_watermark(sources, watermarks).map(|wm| {
                    if wm == i64::MAX {
                        i64::MAX
                    } else {
                        wm.div_euclid(per)
                    }
                })
            }
            SideFrontier::Aggregate { .. } => None,
        }
    }

    /// The held-left-row schema of a LEFT interval join: the side's columns and a row id.
    fn held_left_schema(&self) -> SchemaRef {
        let side = self.plan.left.plan.schema();
        if self.outer.is_none() {
            return side;
        }
        let mut fields: Vec<Arc<Field>> = side.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(ROW_ID, DataType::UInt64, false)));
        Arc::new(Schema::new(fields))
    }

    /// New left rows with their row ids (LEFT joins), or as they are.
    fn with_row_ids(&mut self, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        let schema = self.held_left_schema();
        let Some(outer) = &mut self.outer else {
            return Ok(batches);
        };
        let mut out = Vec::with_capacity(batches.len());
        for batch in batches.into_iter().filter(|b| b.num_rows() > 0) {
            let first = outer.next_id;
            outer.next_id += batch.num_rows() as u64;
            let ids: ArrayRef = Arc::new(UInt64Array::from_iter_values(first..outer.next_id));
            let mut columns = batch.columns().to_vec();
            columns.push(ids);
            out.push(RecordBatch::try_new(Arc::clone(&schema), columns)?);
        }
        Ok(out)
    }

    /// Held left rows without their row ids.
    fn strip(&self, batches: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
        if self.outer.is_none() {
            return Ok(batches.to_vec());
        }
        let width = self.plan.left.plan.schema().fields().len();
        let keep: Vec<usize> = (0..width).collect();
        Ok(batches
            .iter()
            .map(|b| b.project(&keep))
            .collect::<std::result::Result<_, _>>()?)
    }

    /// The ids of `left` rows (with ids) that match some `right` row.
    async fn matched_ids(
        &self,
        left: Vec<RecordBatch>,
        right: Vec<RecordBatch>,
    ) -> Result<Vec<u64>> {
        let what = "the interval join (which left rows matched)";
        let Some(join) = self.plan.join.downcast_ref::<HashJoinExec>() else {
            return Err(OperatorError::Internal(
                "an interval join that is not a hash join".into(),
            ));
        };
        let left_exec = MemorySourceConfig::try_new_exec(&[left], self.held_left_schema(), None)
            .map_err(OperatorError::exec(what))?;
        let right_exec =
            MemorySourceConfig::try_new_exec(&[right], self.plan.right.plan.schema(), None)
                .map_err(OperatorError::exec(what))?;
        let semi = HashJoinExec::try_new(
            left_exec,
            right_exec,
            join.on().to_vec(),
            join.filter().cloned(),
            &JoinType::LeftSemi,
            None,
            PartitionMode::CollectLeft,
            join.null_equality(),
            false,
        )
        .map_err(OperatorError::exec(what))?;
        let rows = collect(Arc::new(semi), Arc::clone(&self.task_ctx))
            .await
            .map_err(OperatorError::exec(what))?;
        let mut ids = Vec::new();
        for batch in rows {
            let column = batch.column(batch.num_columns() - 1);
            let column = column
                .as_any()
                .downcast_ref::<UInt64Array>()
                .ok_or_else(|| OperatorError::Internal("row ids are not UInt64".into()))?;
            ids.extend(column.iter().flatten());
        }
        Ok(ids)
    }

    /// LEFT joins: the dropped left rows that never matched, padded with NULLs.
    async fn unmatched(&mut self, dropped: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        let Some(outer) = &mut self.outer else {
            return Ok(Vec::new());
        };
        let mut lonely = Vec::new();
        for batch in dropped {
            let ids = batch.column(batch.num_columns() - 1);
            let ids = ids
                .as_any()
                .downcast_ref::<UInt64Array>()
                .ok_or_else(|| OperatorError::Internal("row ids are not UInt64".into()))?;
            let keep: arrow::array::BooleanArray = ids
                .iter()
                .map(|id| Some(id.is_some_and(|id| !outer.matched.remove(&id))))
                .collect();
            let batch = arrow::compute::filter_record_batch(&batch, &keep)?;
            if batch.num_rows() > 0 {
                lonely.push(batch);
            }
        }
        if lonely.is_empty() {
            return Ok(Vec::new());
        }
        let lonely = self.strip(&lonely)?;
        // The LEFT join itself, over no right rows, pads them and projects as planned.
        run_join(
            &self.plan.join,
            (lonely, self.plan.left.plan.schema()),
            (Vec::new(), self.plan.right.plan.schema()),
            &self.task_ctx,
            WHAT,
        )
        .await
    }

    /// The planned join run as an INNER join (a LEFT join's matched pairs).
    async fn join_inner(
        &self,
        left: Vec<RecordBatch>,
        right: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>> {
        if self.outer.is_none() {
            return run_join(
                &self.plan.join,
                (left, self.plan.left.plan.schema()),
                (right, self.plan.right.plan.schema()),
                &self.task_ctx,
                WHAT,
            )
            .await;
        }
        let what = WHAT;
        let Some(join) = self.plan.join.downcast_ref::<HashJoinExec>() else {
            return Err(OperatorError::Internal(
                "an interval join that is not a hash join".into(),
            ));
        };
        let left_exec =
            MemorySourceConfig::try_new_exec(&[left], self.plan.left.plan.schema(), None)
                .map_err(OperatorError::exec(what))?;
        let right_exec =
            MemorySourceConfig::try_new_exec(&[right], self.plan.right.plan.schema(), None)
                .map_err(OperatorError::exec(what))?;
        let inner = join
            .builder()
            .with_type(JoinType::Inner)
            .with_new_children(vec![left_exec, right_exec])
            // A hash join keeps the table it built across runs: each run needs its own.
            .and_then(|b| b.reset_state().build_exec())
            .map_err(OperatorError::exec(what))?;
        let rows = collect(inner, Arc::clone(&self.task_ctx))
            .await
            .map_err(OperatorError::exec(what))?;
        Ok(rows.into_iter().filter(|b| b.num_rows() > 0).collect())
    }

    /// The matched ids of a LEFT join, as a checkpoint holds them.
    fn matched_batch(&self) -> Result<Option<RecordBatch>> {
        let Some(outer) = &self.outer else {
            return Ok(None);
        };
        let schema = Arc::new(Schema::new(vec![Field::new(
            ROW_ID,
            DataType::UInt64,
            false,
        )]));
        let ids: ArrayRef = Arc::new(UInt64Array::from_iter_values(outer.matched.iter().copied()));
        Ok(Some(RecordBatch::try_new(schema, vec![ids])?))
    }

    /// Restores a LEFT join's matched ids, and the next id after every held row's.
    fn restore_outer(&mut self, matched: &[RecordBatch]) -> Result<()> {
        let held = self.left.snapshot();
        let Some(outer) = &mut self.outer else {
            return Ok(());
        };
        outer.matched.clear();
        for batch in matched {
            let ids = batch
                .column(0)
                .as_any()
                .downcast_ref::<UInt64Array>()
                .ok_or_else(|| {
                    OperatorError::Checkpoint("matched row ids are not UInt64".into())
                })?;
            outer.matched.extend(ids.iter().flatten());
        }
        let mut next = 0;
        for batch in &held {
            let ids = batch.column(batch.num_columns() - 1);
            if let Some(ids) = ids.as_any().downcast_ref::<UInt64Array>() {
                next = ids.iter().flatten().fold(next, |n, id| n.max(id + 1));
            }
        }
        outer.next_id = next;
        Ok(())
    }

    /// Restores held rows, which left rows matched, and where each side was trimmed to.
    ///
    /// # Errors
    /// Matched ids that are not row ids.
    fn load(
        &mut self,
        left: Vec<RecordBatch>,
        right: Vec<RecordBatch>,
        matched: &[RecordBatch],
        marks: &[Option<i64>],
    ) -> Result<()> {
        self.left = Held::default();
        self.right = Held::default();
        self.left.add_flat(left);
        self.right.add_flat(right);
        self.restore_outer(matched)?;
        self.left_mark = marks.first().copied().flatten();
        self.right_mark = marks.get(1).copied().flatten();
        for (side, wm) in [
            (&self.plan.left, self.left_mark),
            (&self.plan.right, self.right_mark),
        ] {
            if let (SideFrontier::Sources { gate, .. }, Some(wm)) = (&side.frontier, wm) {
                gate.set_cutoff(wm.saturating_sub(1));
            }
        }
        Ok(())
    }
}
