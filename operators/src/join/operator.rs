//! The joins of two streams as streaming operators.

use super::plan::{JoinTime, SideFrontier, watermark_key};

use super::{JoinState, interval};
use volley_sql::stream::operator::{OperatorError, Result};
use volley_sql::stream::operator::{
    OperatorInput, OperatorOutput, OperatorSnapshot, RestoredState, StatePiece, StreamOperator,
};

#[async_trait::async_trait]
impl StreamOperator for JoinState {
    fn name(&self) -> &str {
        &self.plan.output_name
    }

    /// Takes each side's new rows, then joins what the sides' watermarks make complete (a
    /// windowed join: whole windows; an interval join: new rows against held ones, then
    /// trims each side), everything at the end of input.
    async fn run_epoch(&mut self, input: OperatorInput<'_>) -> Result<OperatorOutput> {
        let out = self
            .join_epoch(input.read, input.watermarks, input.all_done)
            .await?;
        let mut late = Vec::new();
        for side in [&self.plan.left, &self.plan.right] {
            if let SideFrontier::Sources { gate, .. } = &side.frontier {
                late.extend(gate.take_late());
            }
        }
        Ok(OperatorOutput {
            rows: out.rows,
            late,
            windows_emitted: out.windows,
            ..OperatorOutput::default()
        })
    }

    fn describe(&self) -> String {
        let kind = if self.plan.interval.is_some() {
            "interval"
        } else {
            "windowed"
        };
        format!("{kind} join on {}", self.plan.display)
    }

    /// Each time of the join's rows (see [`super::plan::JoinPlan::times`]) in nanoseconds, under its key:
    /// every row the join emits from now on has that time at or after it. A windowed join has
    /// joined every window before its watermark. An interval join's left rows from now on are
    /// new ones (at or after the left watermark) or held ones meeting a new right row or
    /// dropped unmatched (at or after where the left side was trimmed), and likewise for the
    /// right side. `None` while a watermark is unknown.
    fn output_watermarks(&self) -> Vec<(String, Option<i64>)> {
        let per = self.plan.nanos_per_unit();
        let at = |units: i64| {
            if units == i64::MAX {
                i64::MAX
            } else {
                units.saturating_mul(per)
            }
        };
        let mark = |time: JoinTime| -> Option<i64> {
            let (left, right) = (self.joined_before?, self.right_mark);
            match (time, self.plan.interval) {
                (JoinTime::Window, None) => Some(at(left)),
                (JoinTime::Left, Some(bounds)) => {
                    let kept = interval::keep_from(right?, bounds.hi, per, true);
                    Some(at(left.min(kept)))
                }
                (JoinTime::Right, Some(bounds)) => {
                    let kept = interval::keep_from(left, bounds.lo, per, false);
                    Some(at(right?.min(kept)))
                }
                _ => None,
            }
        };
        self.plan
            .times()
            .iter()
            .map(|time| (watermark_key(&self.plan.output_name, *time), mark(*time)))
            .collect()
    }

    fn shape(&self) -> String {
        let join = &self.plan;
        let columns = |schema: arrow::datatypes::SchemaRef| {
            schema
                .fields()
                .iter()
                .map(|f| format!("{}: {}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let kind = match &join.interval {
            Some(b) => format!(
                "interval join on {} within [{}, {}] ns",
                join.display, b.lo, b.hi
            ),
            None => format!(
                "windowed join on {} ({} {:?} wide)",
                join.display, join.width, join.unit
            ),
        };
        format!(
            "{kind}; left [{}]; right [{}]",
            columns(join.left.plan.schema()),
            columns(join.right.plan.schema())
        )
    }

    /// Marks: a windowed join's window start before which every window was joined; an
    /// interval join's left and right watermarks its sides were last trimmed by. Pieces: the
    /// held `left` and `right` rows and, for a LEFT interval join, which left rows `matched`.
    fn snapshot(&self) -> Result<OperatorSnapshot> {
        Ok(OperatorSnapshot {
            marks: self.marks(),
            pieces: self
                .pieces()?
                .into_iter()
                .map(|(name, schema, rows)| StatePiece {
                    name: name.to_string(),
                    schema,
                    rows,
                })
                .collect(),
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

    /// Rebuilds the lookup joins in both sides' segments; rows already held keep the version
    /// they were joined with, as an aggregate's state does.
    fn reset_lookup(&mut self, table: &str) -> Result<()> {
        for side in [&mut self.plan.left, &mut self.plan.right] {
            side.plan = volley_sql::stream::lookup::reset_lookup_joins(&side.plan, table)
                .map_err(OperatorError::Sql)?;
        }
        Ok(())
    }
}
