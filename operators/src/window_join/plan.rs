//! A windowed join node: both sides in the same tumbling window, joined on it (and on keys),
//! each window joined once when both sides are complete for it.
//!
//! ```text
//!   post:  Projection / Filter  ◀── EpochSourceExec(<target>#join)
//!   join:  HashJoinExec(ON a.w = b.w AND a.k = b.k …) run over the rows of closed windows
//!   sides: left plan ─▶ rows by window      right plan ─▶ rows by window
//!          (stateless segments over the sources, or over windowed aggregates' rows)
//! ```

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

use crate::two_streams::{JOIN, JoinSide};

/// A windowed join of two streams.
#[derive(Debug, Clone)]
pub struct WindowJoinPlan {
    /// The join as DataFusion planned it; run over the closed windows' rows of both sides.
    pub join: Arc<dyn ExecutionPlan>,
    /// Build (left) side; its `window_column` is its window start.
    pub left: JoinSide,
    /// Probe (right) side.
    pub right: JoinSide,
    /// The window's width, in `unit`s.
    pub width: i64,
    /// Unit of the window columns.
    pub unit: TimeUnit,
    /// The window equality, for display.
    pub display: String,
    /// Where joined rows go for the segment above.
    pub post_slot: Arc<EpochSlot>,
    /// The name of the leaf reading `post_slot`.
    pub output_name: String,
    /// Its output as the nodes above read it.
    pub port: OutputPort,
}

impl WindowJoinPlan {
    /// Nanoseconds per `unit`.
    pub fn nanos_per_unit(&self) -> i64 {
        nanos_per_unit(self.unit)
    }
}

impl StreamNode for WindowJoinPlan {
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
        let _ = writeln!(
            out,
            "  kind: windowed join of two streams on {} ({} wide); each side's rows are held by window until both sides are complete for it, then the window is joined once and its rows dropped; a row of a window already joined goes to dead letters",
            self.display,
            sql_text::span(self.width, self.unit)
        );
        crate::two_streams::explain_sides(
            &mut out,
            [&self.left, &self.right],
            ("complete for a window", "once the watermark passes its end"),
            &self.join,
            ctx.watermark_of,
        );
        out
    }

    fn instantiate(&self, task_ctx: Arc<TaskContext>) -> Box<dyn StreamOperator> {
        Box::new(super::WindowJoinState::new(self.clone(), task_ctx))
    }

    fn boxed_clone(&self) -> Box<dyn StreamNode> {
        Box::new(self.clone())
    }

    fn emitted(&self) -> Emitted {
        Emitted::Windows
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
