//! Windowed joins of two streams: both sides in the same tumbling window (each side grouped
//! by it, or its rows bucketed by it) and joined on the window, and on keys.
//!
//! A side's rows are held by window until both sides are complete for it: a side that
//! buckets source rows is complete for a window once its sources' watermark passes the
//! window's end; a side that is a windowed aggregate, once that aggregate has emitted it.
//! The window is then joined once, with every join type's batch meaning, and its rows are
//! dropped. Rows that arrive for a window already joined are late and go to dead letters.

mod operator;
mod plan;
mod rule;
#[cfg(test)]
mod tests;
mod window;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use datafusion::execution::TaskContext;
use volley_sql::stream::operator::Result;

pub use self::plan::WindowJoinPlan;
pub use self::rule::WindowJoinRule;
use crate::two_streams::{Held, JoinSide, SideFrontier, run_join, side_rows};

/// What the join is, in execution errors.
const WHAT: &str = "the windowed join";

/// A windowed join's state: each side's rows by window.
#[derive(Debug)]
pub struct WindowJoinState {
    plan: WindowJoinPlan,
    left: Held,
    right: Held,
    /// Windows starting before this have been joined (the window column's unit).
    joined_before: Option<i64>,
    task_ctx: Arc<TaskContext>,
}

/// What a windowed join produced in an epoch.
#[derive(Debug, Default)]
struct JoinOutput {
    /// Joined rows, before the segment above the join.
    rows: Vec<RecordBatch>,
    /// Windows joined.
    windows: usize,
}

impl WindowJoinState {
    /// Empty state for `plan`.
    pub fn new(plan: WindowJoinPlan, task_ctx: Arc<TaskContext>) -> Self {
        Self {
            plan,
            left: Held::default(),
            right: Held::default(),
            joined_before: None,
            task_ctx,
        }
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
        if read {
            let left = side_rows(&self.plan.left, &self.task_ctx, WHAT).await?;
            let right = side_rows(&self.plan.right, &self.task_ctx, WHAT).await?;
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
        let rows = run_join(
            &self.plan.join,
            (left, self.plan.left.plan.schema()),
            (right, self.plan.right.plan.schema()),
            &self.task_ctx,
            WHAT,
        )
        .await?;
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
        joined_before: Option<i64>,
    ) -> Result<()> {
        self.left = Held::default();
        self.right = Held::default();
        self.left.add(left, self.plan.left.window_column)?;
        self.right.add(right, self.plan.right.window_column)?;
        self.joined_before = joined_before;
        if let Some(frontier) = joined_before {
            self.close_gates(frontier);
        }
        Ok(())
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
}
