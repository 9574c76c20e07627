//! An interval join node: `ON a.k = b.k AND b.ts BETWEEN a.ts - x AND a.ts + y` over two
//! streams' rows, each side held until the other side's watermark says no partner can come.

use std::fmt::Write;
use std::sync::Arc;

use arrow::datatypes::TimeUnit;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use volley_sql::sql_text;
use volley_sql::stream::graph::{ExplainContext, OutputPort, StreamNode};
use volley_sql::stream::leaf::EpochSlot;
use volley_sql::stream::operator::StreamOperator;
use volley_sql::stream::order::Emitted;
use volley_sql::stream::window::nanos_per_unit;

use super::bounds::IntervalBounds;
use crate::two_streams::{JOIN, JoinSide};

/// An interval join of two streams.
#[derive(Debug, Clone)]
pub struct IntervalJoinPlan {
    /// The join as DataFusion planned it; run over new rows against held ones.
    pub join: Arc<dyn ExecutionPlan>,
    /// Build (left) side; its `window_column` is its event time.
    pub left: JoinSide,
    /// Probe (right) side; its `window_column` is its event time.
    pub right: JoinSide,
    /// Unit of the event times.
    pub unit: TimeUnit,
    /// The join's condition on the times, for display.
    pub display: String,
    /// How far apart the two event times of a match may be.
    pub bounds: IntervalBounds,
    /// The sink's `state_ttl` that bounded an otherwise unbounded join into this interval join
    /// of rows at most that far apart in event time (so the result may differ from batch).
    pub state_ttl: Option<std::time::Duration>,
    /// An as-of join (no lower bound on the right time): how its right rows are trimmed.
    pub as_of: Option<super::as_of::AsOf>,
    /// Where joined rows go for the segment above.
    pub post_slot: Arc<EpochSlot>,
    /// The name of the leaf reading `post_slot`.
    pub output_name: String,
    /// Its output as the nodes above read it.
    pub port: OutputPort,
}

impl IntervalJoinPlan {
    /// Nanoseconds per `unit`.
    pub fn nanos_per_unit(&self) -> i64 {
        nanos_per_unit(self.unit)
    }
}

impl StreamNode for IntervalJoinPlan {
    fn kind(&self) -> &'static str {
        JOIN
    }

    fn port(&self) -> OutputPort {
        self.port.clone()
    }

    fn inputs(&self) -> Vec<String> {
        crate::two_streams::inputs(&self.left, &self.right)
    }

    fn confined_to(&self, _table: &str, _column: &str) -> Result<bool, String> {
        Err(crate::two_streams::NOT_IN_GROUP_MODE.to_string())
    }

    fn explain(&self, ctx: &ExplainContext<'_>) -> String {
        let mut out = String::new();
        if let Some(as_of) = self.as_of {
            let _ = writeln!(
                out,
                "  kind: as-of join of two streams on {} (right time - left time at most {}), ranked per left row by the right time, newest first, keeping {}; new rows of each side meet the held rows of the other, a left row is held until the right watermark passes it, a right row every future left row matches (at or before the left watermark, the bound's offset added) is held only while it is {} of its key, and a row older than its own side's watermark goes to dead letters",
                self.display,
                sql_text::interval(0, 0, self.bounds.hi),
                ranks(as_of.keep),
                if as_of.keep == 1 {
                    "the newest".to_string()
                } else {
                    format!("among the {} newest", as_of.keep)
                }
            );
        } else {
            let _ = writeln!(
                out,
                "  kind: interval join of two streams on {} (right time - left time within [{}, {}]); new rows of each side meet the held rows of the other, a row is held until the other side's watermark says no partner can still come, and a row older than its own side's watermark goes to dead letters",
                self.display,
                sql_text::interval(0, 0, self.bounds.lo),
                sql_text::interval(0, 0, self.bounds.hi)
            );
        }
        if let Some(ttl) = self.state_ttl {
            let _ = writeln!(
                out,
                "  state_ttl: {} of event time; the join has neither a shared window nor an interval, so only rows at most that far apart are joined, and results may differ from batch",
                sql_text::duration(ttl)
            );
        }
        crate::two_streams::explain_sides(
            &mut out,
            [&self.left, &self.right],
            ("held", "by the watermark"),
            &self.join,
            ctx.watermark_of,
        );
        out
    }

    fn instantiate(&self, task_ctx: Arc<TaskContext>) -> Box<dyn StreamOperator> {
        Box::new(super::IntervalJoinState::new(self.clone(), task_ctx))
    }

    fn boxed_clone(&self) -> Box<dyn StreamNode> {
        Box::new(self.clone())
    }

    fn emitted(&self) -> Emitted {
        Emitted::Rows
    }

    fn warnings(&self) -> Vec<String> {
        self.state_ttl
            .map(|ttl| format!("the join of two streams joins only rows at most {} apart in event time (the sink's 'state_ttl'), so pairs further apart are missing and the result may differ from batch", sql_text::duration(ttl)))
            .into_iter()
            .collect()
    }

    fn bounded_by_ttl(&self) -> bool {
        self.state_ttl.is_some()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// `the first rank` or `the first n ranks`.
fn ranks(n: u64) -> String {
    if n == 1 {
        "the first rank".to_string()
    } else {
        format!("the first {n} ranks")
    }
}
