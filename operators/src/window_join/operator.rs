//! The windowed join as a streaming operator.

use volley_sql::stream::operator::{
    OperatorError, OperatorInput, OperatorOutput, OperatorSnapshot, RestoredState, Result,
    StatePiece, StreamOperator,
};

use super::WindowJoinState;
use crate::two_streams::{JoinTime, watermark_key};

#[async_trait::async_trait]
impl StreamOperator for WindowJoinState {
    fn name(&self) -> &str {
        &self.plan.output_name
    }

    /// Takes each side's new rows, then joins the whole windows the sides' watermarks make
    /// complete, every window at the end of input.
    async fn run_epoch(&mut self, input: OperatorInput<'_>) -> Result<OperatorOutput> {
        let out = self
            .join_epoch(input.read, input.watermarks, input.all_done)
            .await?;
        Ok(OperatorOutput {
            rows: out.rows,
            late: crate::two_streams::take_late([&self.plan.left, &self.plan.right]),
            windows_emitted: out.windows,
            ..OperatorOutput::default()
        })
    }

    fn describe(&self) -> String {
        format!("windowed join on {}", self.plan.display)
    }

    /// Its window column, in nanoseconds: it has joined every window before its watermark.
    /// `None` while a watermark is unknown.
    fn output_watermarks(&self) -> Vec<(String, Option<i64>)> {
        let per = self.plan.nanos_per_unit();
        let mark = self.joined_before.map(|units| {
            if units == i64::MAX {
                i64::MAX
            } else {
                units.saturating_mul(per)
            }
        });
        vec![(watermark_key(&self.plan.output_name, JoinTime::Window), mark)]
    }

    fn shape(&self) -> String {
        let join = &self.plan;
        format!(
            "windowed join on {} ({} {:?} wide); {}",
            join.display,
            join.width,
            join.unit,
            crate::two_streams::sides_shape(&join.left, &join.right)
        )
    }

    /// Marks: the window start before which every window was joined. Pieces: the held `left`
    /// and `right` rows.
    fn snapshot(&self) -> Result<OperatorSnapshot> {
        Ok(OperatorSnapshot {
            marks: vec![self.joined_before],
            pieces: vec![
                StatePiece {
                    name: "left".to_string(),
                    schema: self.plan.left.plan.schema(),
                    rows: self.left.snapshot(),
                },
                StatePiece {
                    name: "right".to_string(),
                    schema: self.plan.right.plan.schema(),
                    rows: self.right.snapshot(),
                },
            ],
        })
    }

    async fn restore(&mut self, mut state: RestoredState) -> Result<()> {
        let mut side = |name: &str| {
            state.take(name).ok_or_else(|| {
                OperatorError::Checkpoint(format!(
                    "the checkpoint of {} has no '{name}' piece",
                    self.plan.output_name
                ))
            })
        };
        let left = side("left")?;
        let right = side("right")?;
        let joined_before = state.marks.first().copied().flatten();
        self.load(left, right, joined_before)
    }

    fn open_windows(&self) -> usize {
        let mut starts: Vec<&Option<i64>> = self.left.windows.keys().collect();
        starts.extend(self.right.windows.keys());
        starts.sort_unstable();
        starts.dedup();
        starts.len()
    }

    /// Rows held, both sides.
    fn state_rows(&self) -> usize {
        self.left.rows() + self.right.rows()
    }

    fn state_bytes(&self) -> usize {
        self.left.bytes() + self.right.bytes()
    }

    /// Rebuilds the lookup joins in both sides' segments; rows already held keep the version
    /// they were joined with, as an aggregate's state does.
    fn reset_lookup(&mut self, table: &str) -> Result<()> {
        crate::two_streams::reset_lookup([&mut self.plan.left, &mut self.plan.right], table)
    }
}
