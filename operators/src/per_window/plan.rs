//! A per-window node: its plan, its output, its `explain`.

use std::fmt::Write;
use std::sync::Arc;

use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use volley_sql::stream::graph::{ExplainContext, OutputPort, StreamNode};
use volley_sql::stream::operator::StreamOperator;
use volley_sql::stream::order::Emitted;
use volley_sql::stream::render::{indent_by, render};

/// The kind a per-window node reports.
pub(crate) const PER_WINDOW: &str = "per_window";

/// Window functions partitioned by the window of a windowed input.
#[derive(Debug, Clone)]
pub struct PerWindowPlan {
    /// DataFusion's window operator over the input's leaf, run over each epoch's rows.
    pub plan: Arc<dyn ExecutionPlan>,
    /// Its functions, for `explain`.
    pub functions: Vec<String>,
    /// The window column (input and output alike).
    pub window: usize,
    /// The key of the input window's watermark.
    pub input_watermark: String,
    /// The name of the leaf reading its output.
    pub output_name: String,
    /// Its output as the nodes above read it.
    pub port: OutputPort,
}

impl StreamNode for PerWindowPlan {
    fn kind(&self) -> &'static str {
        PER_WINDOW
    }

    fn port(&self) -> OutputPort {
        self.port.clone()
    }

    fn inputs(&self) -> Vec<String> {
        volley_sql::stream::leaf::leaves(&self.plan)
    }

    /// Every row of a window is in one epoch's rows, wherever they come from: in group mode
    /// its partitions are confined as the windowed input's are.
    fn confined_to(&self, _table: &str, _column: &str) -> Result<bool, String> {
        Ok(false)
    }

    fn explain(&self, _ctx: &ExplainContext<'_>) -> String {
        let mut out = String::new();
        let window = self.plan.schema().field(self.window).name().clone();
        let _ = writeln!(
            out,
            "  kind: window functions per window (PARTITION BY holds the window column {window}): each window's rows arrive together, when the window below closes, and are computed as in batch; nothing is held between micro-batches"
        );
        for f in &self.functions {
            let _ = writeln!(out, "  function {f}");
        }
        let _ = writeln!(out, "  plan, over each micro-batch's windows:");
        indent_by(&mut out, &render(&self.plan), "");
        out
    }

    fn instantiate(&self, task_ctx: Arc<TaskContext>) -> Box<dyn StreamOperator> {
        Box::new(super::PerWindow {
            plan: self.clone(),
            task_ctx,
            mark: None,
        })
    }

    fn boxed_clone(&self) -> Box<dyn StreamNode> {
        Box::new(self.clone())
    }

    fn emitted(&self) -> Emitted {
        Emitted::Windows
    }

    fn take_sink_options(
        &mut self,
        allowed_lateness: Option<std::time::Duration>,
        state_ttl: Option<std::time::Duration>,
    ) -> Result<(), String> {
        if allowed_lateness.is_some() || state_ttl.is_some() {
            return Err("holds nothing between micro-batches: each window's rows are computed once, when the window below closes".to_string());
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
