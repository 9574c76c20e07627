//! The windowed and keyed aggregates as streaming operators.

use std::sync::Arc;

use super::plan::AggregatePlan;

use super::AggregateState;
use crate::grouped::AggregateOutput;
use volley_sql::stream::operator::min_watermark;
use volley_sql::stream::operator::{OperatorError, Result};
use volley_sql::stream::operator::{
    OperatorInput, OperatorOutput, OperatorSnapshot, RestoredState, StatePiece, StreamOperator,
};

/// The state rows' piece name in a checkpoint.
const STATE: &str = "state";
/// The `state_ttl` stamps' piece name in a checkpoint (keyed aggregates with `state_ttl`).
const STAMPS: &str = "stamps";

#[async_trait::async_trait]
impl StreamOperator for AggregateState {
    fn name(&self) -> &str {
        &self.plan.output_name
    }

    /// Merges the epoch's rows into state (a keyed aggregate emits the groups they touched),
    /// then emits the windows the watermark closes (a keyed one forgets groups by
    /// `state_ttl`), then, at the end of input, every open window.
    async fn run_epoch(&mut self, input: OperatorInput<'_>) -> Result<OperatorOutput> {
        if let Some(session) = self.plan.session.clone() {
            if input.read {
                self.grouped.absorb_epoch().await?;
            }
            let wm = if input.all_done {
                Some(i64::MAX)
            } else {
                input.watermarks.get(&session.watermark).copied().flatten()
            };
            let out = match wm {
                Some(wm) => self.grouped.close_idle(wm, input.all_done).await?,
                None => AggregateOutput::default(),
            };
            return Ok(OperatorOutput {
                rows: out.rows,
                windows_emitted: out.windows_emitted,
                ..OperatorOutput::default()
            });
        }
        let mut out = AggregateOutput::default();
        let mut late = Vec::new();
        if input.read {
            out.extend(self.process_epoch().await?);
            if let Some(window) = &self.plan.window {
                late = window.gate.take_late();
            }
        }
        let groups_expired = match self.plan.window.clone() {
            Some(window) => {
                if let Some(wm) = min_watermark(&window.sources, input.watermarks) {
                    let wm = if wm == i64::MAX {
                        i64::MAX
                    } else {
                        wm.div_euclid(window.nanos_per_unit())
                    };
                    out.extend(self.advance_watermark(wm).await?);
                }
                0
            }
            None => match min_watermark(input.sources, input.watermarks) {
                Some(wm) => self.grouped.expire(wm)?,
                None => 0,
            },
        };
        if input.all_done {
            out.extend(self.flush().await?);
        }
        Ok(OperatorOutput {
            rows: out.rows,
            late,
            windows_emitted: out.windows_emitted,
            windows_corrected: out.windows_corrected,
            groups_expired,
        })
    }

    fn describe(&self) -> String {
        describe(&self.plan)
    }

    /// Every window it emits from now on starts at or after this (None: keyed, or nothing
    /// emitted yet).
    fn output_watermark(&self) -> Option<i64> {
        let window = self.plan.window.as_ref()?;
        let emitted_upto = self.emitted_upto?;
        if emitted_upto == i64::MAX {
            return Some(i64::MAX);
        }
        let next = window.closed_upto(emitted_upto).saturating_add(1);
        Some(next.saturating_mul(window.nanos_per_unit()))
    }

    fn shape(&self) -> String {
        shape(&self.plan)
    }

    /// Marks: the end at or below which windows were emitted (the window column's unit).
    /// Pieces: `state` (DataFusion partial-aggregate states of every window and group) and,
    /// with `state_ttl`, `stamps`.
    fn snapshot(&self) -> Result<OperatorSnapshot> {
        let mut pieces = vec![StatePiece {
            name: STATE.to_string(),
            schema: Arc::clone(self.grouped.state_schema()),
            rows: self.grouped.state_batches()?,
        }];
        if let Some((schema, rows)) = self.grouped.stamps()? {
            pieces.push(StatePiece {
                name: STAMPS.to_string(),
                schema,
                rows,
            });
        }
        Ok(OperatorSnapshot {
            marks: vec![self.emitted_upto],
            pieces,
        })
    }

    /// Groups the checkpoint has no `state_ttl` stamp for are stamped with its watermark.
    async fn restore(&mut self, mut state: RestoredState) -> Result<()> {
        let rows = state.take(STATE).ok_or_else(|| {
            OperatorError::Checkpoint(format!(
                "the checkpoint of {} has no '{STATE}' piece",
                self.plan.output_name
            ))
        })?;
        let emitted_upto = state.marks.first().copied().flatten();
        self.load_state(rows, emitted_upto).await?;
        let stamps = state.take(STAMPS).unwrap_or_default();
        self.grouped.restore_stamps(&stamps, state.watermark)
    }

    fn open_windows(&self) -> usize {
        self.grouped.window_starts().len()
    }

    /// Partial-aggregate rows across windows and shards: one per open group once compacted.
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

/// The aggregate, for dead letters: its window, or that it is keyed.
fn describe(agg: &AggregatePlan) -> String {
    if let Some(session) = &agg.session {
        return format!("session aggregate {} (by {})", agg.output_name, session.id);
    }
    agg.window.as_ref().map_or_else(
        || format!("keyed aggregate {}", agg.output_name),
        |w| format!("window {}", w.display),
    )
}

/// One aggregate's state, as text (see [`StreamOperator::shape`]).
fn shape(agg: &AggregatePlan) -> String {
    let window = agg.window.as_ref().map_or_else(
        || match &agg.session {
            Some(session) => format!("sessions by {} gap {} ns", session.id, session.gap),
            None => "keyed".to_string(),
        },
        |w| format!("window {} wide", w.size_text()),
    );
    agg.phases.shape(&window)
}
