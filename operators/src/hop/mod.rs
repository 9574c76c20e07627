//! Hop (sliding) windows: `GROUP BY unnest(hop(ts, slide, size))`. Each row is aggregated
//! once, into its pane (a tumbling window of gcd(slide, size)), in grouped state; when the
//! watermark passes a window's end, the state of the panes it covers is merged under the
//! window's start and finalised, and a pane is dropped once every window holding it has been
//! emitted. State is bounded by the panes of the open windows.
//!
//! ```text
//!   AggregateExec(gby=[w, k])                      hop node: panes ─▶ windows
//!     Projection(w = unnested, k)                    Projection(w = pane start, k)
//!       UnnestExec                        ─▶           UnnestExec
//!         Projection(hop(ts, slide, size))               Projection(hop_pane(ts, slide, size))
//! ```

mod call;
mod operator;
mod plan;
mod rule;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array};
use arrow::record_batch::RecordBatch;
use datafusion::execution::TaskContext;
use volley_sql::stream::operator::{OperatorError, Result};
use volley_sql::stream::window::HopWindow;

pub use self::plan::HopPlan;
pub use self::rule::HopRule;
use crate::grouped::{AggregateOutput, GroupedState};

/// The state of one INSERT's hop-window aggregate: its panes' grouped state.
#[derive(Debug)]
pub struct HopState {
    plan: HopPlan,
    grouped: GroupedState,
    /// Windows whose end is at or below this have been emitted (window column's unit).
    emitted_upto: Option<i64>,
}

/// Whether the window starting at `start` has ended by `watermark`.
fn ended(hop: HopWindow, start: i64, watermark: i64) -> bool {
    watermark == i64::MAX || start.saturating_add(hop.size) <= watermark
}

impl HopState {
    /// Empty state for `plan`.
    pub fn new(plan: HopPlan, task_ctx: Arc<TaskContext>) -> Self {
        let grouped = GroupedState::new(
            &plan.phases,
            Some(plan.window.group_index),
            None,
            plan.shards,
            task_ctx,
        )
        // Every window over a pane reads its state rows, which a group table would hand out
        // and take back each time.
        .with_state_lists();
        Self {
            plan,
            grouped,
            emitted_upto: None,
        }
    }

    /// Emits every hop window that ends at or below `watermark` (the window column's unit)
    /// and was not emitted before, in window order; drops the panes no open window needs.
    ///
    /// # Errors
    /// Failures executing DataFusion's final aggregate.
    async fn advance(&mut self, watermark: i64) -> Result<AggregateOutput> {
        let (window, hop) = (&self.plan.window, self.plan.hop);
        let before = self.emitted_upto;
        if before.is_some_and(|done| watermark <= done) {
            return Ok(AggregateOutput::default());
        }
        self.emitted_upto = Some(watermark);
        window.gate.set_cutoff(window.closed_upto(watermark));
        let panes: BTreeSet<i64> = self.grouped.window_starts().into_iter().flatten().collect();
        let mut due = BTreeSet::new();
        for &pane in &panes {
            let mut start = hop.first_window(pane);
            while start <= pane {
                if ended(hop, start, watermark) && !before.is_some_and(|b| ended(hop, start, b)) {
                    due.insert(start);
                }
                start += hop.slide;
            }
        }
        let index = window.group_index;
        let mut out = AggregateOutput {
            windows_emitted: due.len(),
            ..AggregateOutput::default()
        };
        for &start in &due {
            let end = start.saturating_add(hop.size);
            let state = self
                .grouped
                .state_in(Some(start)..Some(end))?
                .iter()
                .map(|batch| with_window_start(batch, index, start))
                .collect::<Result<Vec<_>>>()?;
            out.rows.extend(self.grouped.finalize(state).await?);
        }
        self.grouped
            .retain(|pane| pane.is_some_and(|p| !ended(hop, hop.last_window(p), watermark)));
        Ok(out)
    }
}

/// `batch` (pane state rows) with its window column set to `start` (a window's, over them).
fn with_window_start(batch: &RecordBatch, index: usize, start: i64) -> Result<RecordBatch> {
    let field = batch.schema().field(index).clone();
    let starts: ArrayRef = Arc::new(Int64Array::from_value(start, batch.num_rows()));
    let starts = arrow::compute::cast(&starts, field.data_type())?;
    let mut columns = batch.columns().to_vec();
    let Some(column) = columns.get_mut(index) else {
        return Err(OperatorError::Internal(format!(
            "pane state has no window column {index}"
        )));
    };
    *column = starts;
    RecordBatch::try_new(batch.schema(), columns)
        .map_err(|e| OperatorError::Internal(format!("re-keying pane state by window: {e}")))
}
