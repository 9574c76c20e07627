//! The hop-window aggregate as a streaming operator.

use std::sync::Arc;

use volley_sql::stream::operator::{
    OperatorError, OperatorInput, OperatorOutput, OperatorSnapshot, RestoredState, Result,
    StatePiece, StreamOperator, min_watermark,
};

use super::HopState;

/// The pane state rows' piece name in a checkpoint.
const STATE: &str = "state";

#[async_trait::async_trait]
impl StreamOperator for HopState {
    fn name(&self) -> &str {
        &self.plan.output_name
    }

    /// Aggregates the epoch's rows into their panes, then emits the windows the watermark
    /// closes, then, at the end of input, every window still open (rows with no time are in no
    /// hop window).
    async fn run_epoch(&mut self, input: OperatorInput<'_>) -> Result<OperatorOutput> {
        let mut late = Vec::new();
        if input.read {
            self.grouped.ingest().await?;
            late = self.plan.window.gate.take_late();
        }
        let window = &self.plan.window;
        let mut out = match min_watermark(&window.sources, input.watermarks) {
            Some(i64::MAX) => self.advance(i64::MAX).await?,
            Some(wm) => {
                let wm = wm.div_euclid(window.nanos_per_unit());
                self.advance(wm).await?
            }
            None => Default::default(),
        };
        if input.all_done {
            out.extend(self.advance(i64::MAX).await?);
        }
        Ok(OperatorOutput {
            rows: out.rows,
            late,
            windows_emitted: out.windows_emitted,
            windows_corrected: 0,
            groups_expired: 0,
        })
    }

    fn describe(&self) -> String {
        format!("window {}", self.plan.window.display)
    }

    /// The next hop window to emit starts a slide after the newest emitted one.
    fn output_watermark(&self) -> Option<i64> {
        let emitted_upto = self.emitted_upto?;
        if emitted_upto == i64::MAX {
            return Some(i64::MAX);
        }
        let hop = self.plan.hop;
        let next = emitted_upto
            .saturating_sub(hop.size)
            .div_euclid(hop.slide)
            .saturating_mul(hop.slide)
            .saturating_add(hop.slide);
        Some(next.saturating_mul(self.plan.window.nanos_per_unit()))
    }

    fn shape(&self) -> String {
        let window = format!("window {} wide", self.plan.window.size_text());
        self.plan.phases.shape(&window)
    }

    /// Marks: the end at or below which windows were emitted (the window column's unit).
    /// Pieces: `state` (DataFusion partial-aggregate states of every pane and group).
    fn snapshot(&self) -> Result<OperatorSnapshot> {
        Ok(OperatorSnapshot {
            marks: vec![self.emitted_upto],
            pieces: vec![StatePiece {
                name: STATE.to_string(),
                schema: Arc::clone(self.grouped.state_schema()),
                rows: self.grouped.state_batches()?,
            }],
        })
    }

    async fn restore(&mut self, mut state: RestoredState) -> Result<()> {
        let rows = state.take(STATE).ok_or_else(|| {
            OperatorError::Checkpoint(format!(
                "the checkpoint of {} has no '{STATE}' piece",
                self.plan.output_name
            ))
        })?;
        self.emitted_upto = state.marks.first().copied().flatten();
        if let Some(done) = self.emitted_upto {
            let window = &self.plan.window;
            window
                .gate
                .set_cutoff(window.closed_upto(window.final_watermark(done)));
        }
        self.grouped.load(rows).await
    }

    fn open_windows(&self) -> usize {
        self.grouped.window_starts().len()
    }

    fn state_rows(&self) -> usize {
        self.grouped.state_rows()
    }

    fn state_bytes(&self) -> usize {
        self.grouped.state_bytes()
    }

    fn reset_lookup(&mut self, table: &str) -> Result<()> {
        self.grouped.reset_lookup(table)
    }
}
