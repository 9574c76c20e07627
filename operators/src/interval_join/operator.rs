//! The interval join as a streaming operator.

use volley_sql::stream::operator::{
    OperatorError, OperatorInput, OperatorOutput, OperatorSnapshot, RestoredState, Result,
    StatePiece, StreamOperator,
};

use super::{IntervalJoinState, keep_from};
use crate::two_streams::{JoinTime, watermark_key};

#[async_trait::async_trait]
impl StreamOperator for IntervalJoinState {
    fn name(&self) -> &str {
        &self.plan.output_name
    }

    /// Takes each side's new rows, joins them against the other side's held and new rows, then
    /// trims each side by the other's watermark; everything at the end of input.
    async fn run_epoch(&mut self, input: OperatorInput<'_>) -> Result<OperatorOutput> {
        let rows = self
            .run(input.read, input.watermarks, input.all_done)
            .await?;
        Ok(OperatorOutput {
            rows,
            late: crate::two_streams::take_late([&self.plan.left, &self.plan.right]),
            ..OperatorOutput::default()
        })
    }

    fn describe(&self) -> String {
        format!("interval join on {}", self.plan.display)
    }

    /// Its left and right event times in nanoseconds, under their keys: its left rows from now
    /// on are new ones (at or after the left watermark) or held ones meeting a new right row
    /// or dropped unmatched (at or after where the left side was trimmed), and likewise for the
    /// right side. `None` while a watermark is unknown.
    fn output_watermarks(&self) -> Vec<(String, Option<i64>)> {
        let per = self.plan.nanos_per_unit();
        let bounds = self.plan.bounds;
        let at = |units: i64| {
            if units == i64::MAX {
                i64::MAX
            } else {
                units.saturating_mul(per)
            }
        };
        let left = self.left_mark.and_then(|left| {
            let kept = keep_from(self.right_mark?, bounds.hi, per, true);
            Some(at(left.min(kept)))
        });
        let right = self.left_mark.and_then(|left| {
            let kept = keep_from(left, bounds.lo, per, false);
            Some(at(self.right_mark?.min(kept)))
        });
        let name = &self.plan.output_name;
        vec![
            (watermark_key(name, JoinTime::Left), left),
            (watermark_key(name, JoinTime::Right), right),
        ]
    }

    fn shape(&self) -> String {
        let join = &self.plan;
        format!(
            "interval join on {} within [{}, {}] ns; {}",
            join.display,
            join.bounds.lo,
            join.bounds.hi,
            crate::two_streams::sides_shape(&join.left, &join.right)
        )
    }

    /// Marks: the left and right watermarks its sides were last trimmed by. Pieces: the held
    /// `left` and `right` rows and, for a LEFT join, which left rows `matched`.
    fn snapshot(&self) -> Result<OperatorSnapshot> {
        let mut pieces = vec![
            StatePiece {
                name: "left".to_string(),
                schema: self.held_left_schema(),
                rows: self.left.snapshot(),
            },
            StatePiece {
                name: "right".to_string(),
                schema: self.plan.right.plan.schema(),
                rows: self.right.snapshot(),
            },
        ];
        if let Some(matched) = self.matched_batch()? {
            pieces.push(StatePiece {
                name: "matched".to_string(),
                schema: matched.schema(),
                rows: vec![matched],
            });
        }
        Ok(OperatorSnapshot {
            marks: vec![self.left_mark, self.right_mark],
            pieces,
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
        let matched = state.take("matched").unwrap_or_default();
        self.load(left, right, &matched, &state.marks)
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
