//! A Top-N node: its plan, its output, its `explain`.

use std::fmt::Write;
use std::sync::Arc;

use datafusion::execution::TaskContext;
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::ExecutionPlan;
use volley_sql::sql_text;

use super::closing::Closing;
use volley_sql::stream::graph::{ExplainContext, OutputPort, StreamNode};
use volley_sql::stream::operator::StreamOperator;
use volley_sql::stream::order::Emitted;
use volley_sql::stream::render::{indent_by, render};

/// The kind a Top-N node reports.
pub(crate) const TOP_N: &str = "top_n";

/// The first `limit` rows of each partition by `order`, upserted as they change.
#[derive(Debug, Clone)]
pub struct TopNPlan {
    /// Its input rows each epoch.
    pub input: Arc<dyn ExecutionPlan>,
    /// PARTITION BY, over the input's rows (columns).
    pub partition_by: Vec<Arc<dyn PhysicalExpr>>,
    /// ORDER BY, over the input's rows.
    pub order: Vec<PhysicalSortExpr>,
    /// The input columns that order rows with equal ORDER BY values (as batch orders them).
    pub ties: Vec<usize>,
    /// The greatest rank kept.
    pub limit: u64,
    /// The ranking function, for `explain`.
    pub function: String,
    /// The name of the leaf reading its output.
    pub output_name: String,
    /// Its output as the nodes above read it: the input's columns and the rank, keyed by the
    /// PARTITION BY columns and the rank (or appended, when partitions close).
    pub port: OutputPort,
    /// The event time among the PARTITION BY that closes partitions, if one is.
    pub closing: Option<Closing>,
}

impl TopNPlan {
    /// The PARTITION BY, as written, or `none`.
    pub fn partition_text(&self) -> String {
        sql_text::partition_by(&self.partition_by)
    }

    /// The ORDER BY, as written.
    pub fn order_text(&self) -> String {
        self.order
            .iter()
            .map(|s| {
                format!(
                    "{}{}",
                    sql_text::expr(&s.expr),
                    if s.options.descending { " DESC" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `row` or `n rows`.
fn rows(n: u64) -> String {
    if n == 1 {
        "row".to_string()
    } else {
        format!("{n} rows")
    }
}

impl StreamNode for TopNPlan {
    fn kind(&self) -> &'static str {
        TOP_N
    }

    fn port(&self) -> OutputPort {
        self.port.clone()
    }

    fn inputs(&self) -> Vec<String> {
        volley_sql::stream::leaf::leaves(&self.input)
    }

    /// A partition's rows share its PARTITION BY values, but whether they are one source
    /// column's is not traced yet: not in group mode.
    fn confined_to(&self, _table: &str, _column: &str) -> Result<bool, String> {
        Ok(false)
    }

    fn explain(&self, _ctx: &ExplainContext<'_>) -> String {
        let mut out = String::new();
        if let Some(closing) = &self.closing {
            let _ = writeln!(
                out,
                "  kind: Top-N per event time: the first {} of each partition (PARTITION BY {}) by ORDER BY {} (rows with equal values in the order of their other columns); a partition's rows share its {}, so once {} passes it the partition's ranks are appended, once, and it is forgotten{}",
                rows(self.limit),
                self.partition_text(),
                self.order_text(),
                closing.name,
                closing.described(),
                if matches!(closing.frontier, crate::two_streams::SideFrontier::Sources { .. }) {
                    "; a row older than the watermark goes to dead letters"
                } else {
                    ""
                }
            );
            let _ = writeln!(out, "  function {}", self.function);
            let _ = writeln!(
                out,
                "  state: at most {} per partition whose {} the watermark has not passed",
                if self.limit == 1 {
                    "one row".to_string()
                } else {
                    rows(self.limit)
                },
                closing.name
            );
            let _ = writeln!(out, "  input:");
            indent_by(&mut out, &render(&self.input), "");
            return out;
        }
        let _ = writeln!(
            out,
            "  kind: Top-N without a window: the first {} of each partition (PARTITION BY {}) by ORDER BY {} (rows with equal values in the order of their other columns); each micro-batch upserts the ranks of the partitions it touched, keyed by the PARTITION BY columns and the rank",
            rows(self.limit),
            self.partition_text(),
            self.order_text()
        );
        let _ = writeln!(out, "  function {}", self.function);
        let _ = writeln!(
            out,
            "  state: at most {} per partition (rows are only added, so a row outside them never comes back)",
            if self.limit == 1 {
                "one row".to_string()
            } else {
                rows(self.limit)
            }
        );
        let _ = writeln!(out, "  input:");
        indent_by(&mut out, &render(&self.input), "");
        out
    }

    fn instantiate(&self, task_ctx: Arc<TaskContext>) -> Box<dyn StreamOperator> {
        Box::new(super::TopN::new(self.clone(), task_ctx))
    }

    fn boxed_clone(&self) -> Box<dyn StreamNode> {
        Box::new(self.clone())
    }

    fn emitted(&self) -> Emitted {
        if self.closing.is_some() {
            Emitted::Rows
        } else {
            Emitted::Updates
        }
    }

    fn take_sink_options(
        &mut self,
        allowed_lateness: Option<std::time::Duration>,
        state_ttl: Option<std::time::Duration>,
    ) -> Result<(), String> {
        if let Some(closing) = &self.closing {
            if allowed_lateness.is_some() {
                return Err(format!("keeps windows open for late rows, and a Top-N per event time emits each partition once, when the watermark passes its {} (late rows go to dead letters)", closing.name));
            }
            // A join of two streams below takes `state_ttl` when planned; the Top-N needs
            // none, as each partition is forgotten once the watermark passes its time.
            return Ok(());
        }
        if allowed_lateness.is_some() {
            return Err("keeps windows open for late rows, and a Top-N without a window has none: every row is ranked whenever it comes".to_string());
        }
        if state_ttl.is_some() {
            return Err("forgets idle keys, which a Top-N does not do yet: it holds at most N rows for every partition it has seen".to_string());
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
