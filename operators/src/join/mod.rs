//! The state of a windowed join of two streams: each side's rows by window, until both
//! sides are complete for a window; then DataFusion's own join runs once over that window's
//! rows (any join type means what it means in batch) and they are dropped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::{ExecutionPlan, collect};

mod bounds;
mod interval;
mod interval_rule;
mod operator;
mod plan;
mod rule;

pub use self::bounds::IntervalBounds;
pub use self::plan::{JoinPlan, JoinSide, JoinTime, SideFrontier};
pub use self::rule::JoinRule;

use crate::grouped::split_by_window;
use volley_sql::stream::operator::{OperatorError, Result};

/// One side's held rows, by window start (None: rows with no time, joined at the end).
#[derive(Debug, Default)]
struct Held {
    windows: BTreeMap<Option<i64>, Vec<RecordBatch>>,
}

impl Held {
    fn add(&mut self, batches: Vec<RecordBatch>, column: usize) -> Result<()> {
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            for (start, rows) in split_by_window(batch, column)? {
                self.windows.entry(start).or_default().push(rows);
            }
        }
        Ok(())
    }

    /// Takes the rows of windows starting before `frontier` (every window, NULL too, when
    /// `all`).
    fn take_before(&mut self, frontier: i64, all: bool) -> Vec<RecordBatch> {
        if all {
            return std::mem::take(&mut self.windows)
                .into_values()
                .flatten()
                .collect();
        }
        let later = self.windows.split_off(&Some(frontier));
        let (none, closed): (Vec<_>, Vec<_>) = std::mem::replace(&mut self.windows, later)
            .into_iter()
            .partition(|(start, _)| start.is_none());
        self.windows.extend(none);
        closed.into_iter().flat_map(|(_, rows)| rows).collect()
    }

    /// Interval joins hold rows unbucketed.
    fn add_flat(&mut self, batches: Vec<RecordBatch>) {
        let held = self.windows.entry(None).or_default();
        held.extend(batches.into_iter().filter(|b| b.num_rows() > 0));
    }

    /// Keeps the rows whose time (column `column`) is at or after `from` (the column's unit);
    /// rows with no time never match and go. Returns the rows dropped.
    fn retain_from(&mut self, column: usize, from: i64) -> Result<Vec<RecordBatch>> {
        let Some(held) = self.windows.get_mut(&None) else {
            return Ok(Vec::new());
        };
        let mut kept = Vec::with_capacity(held.len());
        let mut dropped = Vec::new();
        for batch in held.drain(..) {
            let times =
                arrow::compute::cast(batch.column(column), &arrow::datatypes::DataType::Int64)?;
            let times = times
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .ok_or_else(|| OperatorError::Internal("event time is not a timestamp".into()))?;
            let keep = arrow::compute::kernels::cmp::gt_eq(
                times,
                &arrow::array::Int64Array::new_scalar(from),
            )?;
            // A row with no time is dropped, never kept: a NULL in the mask would lose it
            // from both the kept and the dropped rows (and a LEFT join's output).
            let keep = if arrow::array::Array::null_count(&keep) > 0 {
                arrow::compute::prep_null_mask_filter(&keep)
            } else {
                keep
            };
            let gone = arrow::compute::not(&keep)?;
            let gone = arrow::compute::filter_record_batch(&batch, &gone)?;
            if gone.num_rows() > 0 {
                dropped.push(gone);
            }
            let batch = arrow::compute::filter_record_batch(&batch, &keep)?;
            if batch.num_rows() > 0 {
                kept.push(batch);
            }
        }
        let empty = kept.is_empty();
        *held = kept;
        if empty {
            // No rows held: no open "window" left behind in the status and metrics.
            self.windows.remove(&None);
        }
        Ok(dropped)
    }

    fn rows(&self) -> usize {
        self.windows
            .values()
            .flatten()
            .map(RecordBatch::num_rows)
            .sum()
    }

    fn snapshot(&self) -> Vec<RecordBatch> {
        self.windows.values().flatten().cloned().collect()
    }
}

/// A windowed join's state.
#[derive(Debug)]
pub struct JoinState {
    plan: JoinPlan,
    left: Held,
    right: Held,
    /// Windows starting before this have been joined (the window column's unit). For an
    /// interval join: the left watermark the right side was last trimmed by.
    joined_before: Option<i64>,
    /// An interval join: the right watermark the left side was last trimmed by.
    right_mark: Option<i64>,
    /// A LEFT interval join: which held left rows have matched.
    outer: Option<interval::OuterLeft>,
    task_ctx: Arc<TaskContext>,
}

/// What a windowed join produced in an epoch.
#[derive(Debug, Default)]
pub struct JoinOutput {
    /// Joined rows, before the segment above the join.
    pub rows: Vec<RecordBatch>,
    /// Windows joined.
    pub windows: usize,
}

impl JoinState {
    /// Empty state for `plan`.
    pub fn new(plan: JoinPlan, task_ctx: Arc<TaskContext>) -> Self {
        Self {
            left: Held::default(),
            right: Held::default(),
            joined_before: None,
            right_mark: None,
            outer: (plan.interval.is_some()
                && plan
                    .join
                    .downcast_ref::<datafusion::physical_plan::joins::HashJoinExec>()
                    .is_some_and(|j| *j.join_type() == datafusion::common::JoinType::Left))
            .then(interval::OuterLeft::default),
            plan,
            task_ctx,
        }
    }

    /// The plan.
    pub fn plan(&self) -> &JoinPlan {
        &self.plan
    }

    /// Runs one epoch: takes each side's new rows (when `fresh` or an aggregate feeding a
    /// side emitted), then joins every window both sides are complete for by `watermarks`
    /// (nanoseconds, by input name), every window when `all_done`.
    ///
    /// # Errors
    /// Execution failures.
    async fn join_epoch(
        &mut self,
        read: bool,
        watermarks: &HashMap<String, Option<i64>>,
        all_done: bool,
    ) -> Result<JoinOutput> {
        if let Some(bounds) = self.plan.interval {
            return self.run_interval(read, watermarks, bounds, all_done).await;
        }
        if read {
            let left = self.side_rows(&self.plan.left).await?;
            let right = self.side_rows(&self.plan.right).await?;
            self.left.add(left, self.plan.left.window_column)?;
            self.right.add(right, self.plan.right.window_column)?;
        }
        let frontier = [&self.plan.left, &self.plan.right]
            .into_iter()
            .map(|side| self.frontier(side, watermarks))
            .try_fold(i64::MAX, |min, f| f.map(|f| min.min(f)));
        let frontier = if all_done { Some(i64::MAX) } else { frontier };
        let Some(frontier) = frontier else {
            return Ok(JoinOutput::default());
        };
        if self.joined_before.is_some_and(|j| frontier <= j) && !all_done {
            return Ok(JoinOutput::default());
        }
        let windows = self.closed_windows(frontier, all_done);
        let left = self.left.take_before(frontier, all_done);
        let right = self.right.take_before(frontier, all_done);
        self.joined_before = Some(frontier);
        self.close_gates(frontier);
        if left.is_empty() && right.is_empty() {
            return Ok(JoinOutput {
                rows: Vec::new(),
                windows,
            });
        }
        let rows = self.join(left, right).await?;
        Ok(JoinOutput { rows, windows })
    }

    /// Restores held rows and where joining had got to.
    ///
    /// # Errors
    /// Rows that do not fit a side.
    fn load(
        &mut self,
        left: Vec<RecordBatch>,
        right: Vec<RecordBatch>,
        matched: &[RecordBatch],
        marks: &[Option<i64>],
    ) -> Result<()> {
        self.left = Held::default();
        self.right = Held::default();
        let first = marks.first().copied().flatten();
        if self.plan.interval.is_some() {
            self.left.add_flat(left);
            self.right.add_flat(right);
            self.restore_outer(matched)?;
            self.joined_before = first;
            self.right_mark = marks.get(1).copied().flatten();
            for (side, wm) in [
                (&self.plan.left, self.joined_before),
                (&self.plan.right, self.right_mark),
            ] {
                if let (SideFrontier::Sources { gate, .. }, Some(wm)) = (&side.frontier, wm) {
                    gate.set_cutoff(wm.saturating_sub(1));
                }
            }
            return Ok(());
        }
        self.left.add(left, self.plan.left.window_column)?;
        self.right.add(right, self.plan.right.window_column)?;
        self.joined_before = first;
        if let Some(frontier) = first {
            self.close_gates(frontier);
        }
        Ok(())
    }

    /// Held rows of each side (with the sides' schemas) and where joining had got to.
    fn pieces(&self) -> Result<Vec<(&'static str, SchemaRef, Vec<RecordBatch>)>> {
        let mut out = vec![
            ("left", self.held_left_schema(), self.left.snapshot()),
            (
                "right",
                self.plan.right.plan.schema(),
                self.right.snapshot(),
            ),
        ];
        if let Some(matched) = self.matched_batch()? {
            out.push(("matched", matched.schema(), vec![matched]));
        }
        Ok(out)
    }

    /// Where the join had got to: for a windowed join, the window start before which every
    /// window was joined; for an interval join, the left and right watermarks the sides were
    /// last trimmed by.
    fn marks(&self) -> Vec<Option<i64>> {
        if self.plan.interval.is_some() {
            vec![self.joined_before, self.right_mark]
        } else {
            vec![self.joined_before]
        }
    }

    fn closed_windows(&self, frontier: i64, all: bool) -> usize {
        let mut starts: Vec<Option<i64>> = self
            .left
            .windows
            .keys()
            .chain(self.right.windows.keys())
            .copied()
            .filter(|s| all || s.is_some_and(|s| s < frontier))
            .collect();
        starts.sort_unstable();
        starts.dedup();
        starts.len()
    }

    /// Rows of windows starting before `frontier` that reach a side from now on are late.
    fn close_gates(&self, frontier: i64) {
        for side in [&self.plan.left, &self.plan.right] {
            if let SideFrontier::Sources { gate, .. } = &side.frontier {
                gate.set_cutoff(frontier.saturating_sub(1));
            }
        }
    }

    /// The window start before which `side`'s rows are complete (the window column's unit);
    /// `None` while a watermark it depends on is unknown.
    fn frontier(&self, side: &JoinSide, watermarks: &HashMap<String, Option<i64>>) -> Option<i64> {
        let per = self.plan.nanos_per_unit();
        match &side.frontier {
            SideFrontier::Sources { sources, .. } => {
                let wm = volley_sql::stream::operator::min_watermark(sources, watermarks)?;
                if wm == i64::MAX {
                    return Some(i64::MAX);
                }
                // Window [s, s + width) is complete once the watermark reaches its end.
                Some(
                    wm.div_euclid(per)
                        .saturating_sub(self.plan.width)
                        .saturating_add(1),
                )
            }
            SideFrontier::Aggregate { input } => {
                let wm = watermarks.get(input).copied().flatten()?;
                Some(if wm == i64::MAX {
                    i64::MAX
                } else {
                    wm.div_euclid(per)
                })
            }
        }
    }

    async fn side_rows(&self, side: &JoinSide) -> Result<Vec<RecordBatch>> {
        let parts = datafusion::physical_plan::collect_partitioned(
            Arc::clone(&side.plan),
            Arc::clone(&self.task_ctx),
        )
        .await
        .map_err(OperatorError::exec("a side of the windowed join"))?;
        Ok(parts.into_iter().flatten().collect())
    }

    /// DataFusion's join over these rows of each side.
    async fn join(
        &self,
        left: Vec<RecordBatch>,
        right: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>> {
        let what = "the windowed join";
        let left = MemorySourceConfig::try_new_exec(&[left], self.plan.left.plan.schema(), None)
            .map_err(OperatorError::exec(what))?;
        let right = MemorySourceConfig::try_new_exec(&[right], self.plan.right.plan.schema(), None)
            .map_err(OperatorError::exec(what))?;
        let left: Arc<dyn ExecutionPlan> = left;
        let right: Arc<dyn ExecutionPlan> = right;
        // A hash join keeps the table it built across runs: each window needs its own.
        let join = datafusion::physical_plan::execution_plan::replace_children_if_necessary(
            Arc::clone(&self.plan.join),
            vec![left, right],
        )
        .and_then(ExecutionPlan::reset_state)
        .map_err(OperatorError::exec(what))?;
        let rows = collect(join, Arc::clone(&self.task_ctx))
            .await
            .map_err(OperatorError::exec(what))?;
        Ok(rows.into_iter().filter(|b| b.num_rows() > 0).collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use arrow::array::{Array, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use arrow::record_batch::RecordBatch;

    use super::Held;

    #[test]
    fn a_held_row_with_no_time_is_dropped_not_lost() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            true,
        )]));
        let times = TimestampNanosecondArray::from(vec![Some(5), None, Some(20)]);
        let batch = RecordBatch::try_new(schema, vec![Arc::new(times)]).unwrap();
        let mut held = Held::default();
        held.add_flat(vec![batch]);
        let dropped = held.retain_from(0, 10).unwrap();
        let dropped: Vec<Option<i64>> = dropped
            .iter()
            .flat_map(|b| {
                let t = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<TimestampNanosecondArray>()
                    .unwrap();
                (0..t.len())
                    .map(|i| t.is_valid(i).then(|| t.value(i)))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(dropped, [Some(5), None]);
        assert_eq!(held.rows(), 1);
    }
}
