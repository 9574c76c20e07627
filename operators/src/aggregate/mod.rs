//! The windowed and keyed aggregates: a GROUP BY whose state is kept in grouped state
//! ([`crate::grouped`]), emitted a tumbling window at a time as the watermark passes its end,
//! or, without a window, as upserts of the groups each epoch touched.

mod operator;
mod plan;
mod rule;
mod session;
#[cfg(test)]
mod tests;
mod window;

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use datafusion::execution::TaskContext;

pub use self::plan::AggregatePlan;
pub use self::rule::AggregateRule;
pub use self::session::Session;
pub use crate::grouped::KeySource;
use crate::grouped::{AggregateOutput, GroupedState};
use volley_sql::stream::operator::Result;

/// The state of one INSERT's aggregate.
///
/// After an error the state is unusable (a shard may be lost mid-task); the job stops.
#[derive(Debug)]
pub struct AggregateState {
    plan: AggregatePlan,
    grouped: GroupedState,
    /// Windows whose end is at or below this have been emitted (window column's unit).
    emitted_upto: Option<i64>,
    /// Emitted windows kept for `allowed_lateness` that took late rows this epoch.
    corrected: BTreeSet<Option<i64>>,
}

impl AggregateState {
    /// Empty state for `plan`, with `plan.shards` shards.
    pub fn new(plan: AggregatePlan, task_ctx: Arc<TaskContext>) -> Self {
        let grouped = GroupedState::new(
            &plan.phases,
            plan.window.as_ref().map(|w| w.group_index),
            plan.state_ttl,
            plan.shards,
            task_ctx,
        );
        Self {
            plan,
            grouped,
            emitted_upto: None,
            corrected: BTreeSet::new(),
        }
    }

    /// The plan this state belongs to.
    pub fn plan(&self) -> &AggregatePlan {
        &self.plan
    }

    /// Loads checkpointed state rows and the emission frontier into empty state.
    ///
    /// # Errors
    /// State rows that do not fit the aggregate, and merge failures.
    async fn load_state(
        &mut self,
        rows: Vec<RecordBatch>,
        emitted_upto: Option<i64>,
    ) -> Result<()> {
        self.emitted_upto = emitted_upto;
        if let (Some(window), Some(done)) = (&self.plan.window, emitted_upto) {
            window
                .gate
                .set_cutoff(window.closed_upto(window.final_watermark(done)));
        }
        self.grouped.load(rows).await
    }

    /// Runs the partial aggregate over this epoch's input (already in the source slots) and
    /// merges it into state. Returns upserts for a keyed aggregate; nothing for a windowed one
    /// (windows are emitted by [`AggregateState::advance_watermark`]).
    ///
    /// # Errors
    /// Failures executing DataFusion's aggregate.
    async fn process_epoch(&mut self) -> Result<AggregateOutput> {
        let ingested = self.grouped.ingest().await?;
        if let Some(window) = &self.plan.window {
            // Windows already emitted that took rows: kept for allowed_lateness, corrected.
            if let Some(done) = self.emitted_upto {
                self.corrected.extend(
                    ingested
                        .windows
                        .into_iter()
                        .filter(|start| start.is_some_and(|s| window.closed(s, done))),
                );
            }
            return Ok(AggregateOutput::default());
        }
        Ok(AggregateOutput {
            rows: ingested.upserts,
            ..AggregateOutput::default()
        })
    }

    /// Emits every window whose end is at or below `watermark` (window column's unit), in
    /// window order, and marks later rows for those windows as late.
    ///
    /// # Errors
    /// Failures executing DataFusion's final aggregate.
    async fn advance_watermark(&mut self, watermark: i64) -> Result<AggregateOutput> {
        let Some(window) = &self.plan.window else {
            return Ok(AggregateOutput::default());
        };
        let window = window.clone();
        let mut out = AggregateOutput::default();
        if !self.corrected.is_empty() {
            let corrected = std::mem::take(&mut self.corrected);
            let again = self
                .grouped
                .emit(|start| corrected.contains(&start), true)
                .await?;
            out.windows_corrected += again.windows_emitted;
            out.rows.extend(again.rows);
        }
        let before = self.emitted_upto;
        if before.is_some_and(|done| watermark <= done) {
            return Ok(out);
        }
        self.emitted_upto = Some(watermark);
        let closed_for_good = window.final_watermark(watermark);
        window.gate.set_cutoff(window.closed_upto(closed_for_good));
        let keep = window.lateness > 0;
        out.extend(
            self.grouped
                .emit(
                    |start| {
                        start.is_some_and(|s| {
                            window.closed(s, watermark)
                                && !before.is_some_and(|b| window.closed(s, b))
                        })
                    },
                    keep,
                )
                .await?,
        );
        if keep {
            self.grouped
                .retain(|start| !start.is_some_and(|s| window.closed(s, closed_for_good)));
        }
        Ok(out)
    }

    /// End of input: emits every open window, including the NULL-time one.
    ///
    /// # Errors
    /// Failures executing DataFusion's final aggregate.
    async fn flush(&mut self) -> Result<AggregateOutput> {
        if self.plan.window.is_none() {
            return Ok(AggregateOutput::default());
        }
        let mut out = self.advance_watermark(i64::MAX).await?;
        out.extend(self.grouped.emit(|_| true, false).await?);
        Ok(out)
    }
}
