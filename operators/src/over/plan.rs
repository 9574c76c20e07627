//! An OVER node: window functions over each partition's rows in event-time order, each row
//! emitted with its values once the watermark passes its ORDER BY value.

use std::fmt::Write;
use std::sync::Arc;

use arrow::datatypes::{SchemaRef, TimeUnit};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use volley_sql::sql_text;
use volley_sql::stream::graph::{ExplainContext, OutputPort, StreamNode};
use volley_sql::stream::leaf::EpochSlot;
use volley_sql::stream::operator::StreamOperator;
use volley_sql::stream::order::Emitted;
use volley_sql::stream::render::{indent_by, render};

use super::function::{Function, Kind, Start};
use crate::grouped::KeySource;
use crate::two_streams::{JoinSide, SideFrontier};

/// The kind an OVER node reports.
pub(crate) const OVER: &str = "over";

/// An OVER node.
#[derive(Debug, Clone)]
pub struct OverPlan {
    /// Its input rows each epoch; `window_column` is the ORDER BY event time.
    pub input: JoinSide,
    /// The window functions, in output order.
    pub(crate) functions: Vec<Function>,
    /// What a partition holds of each row: the event time, then each function's arguments
    /// (at the function's `cols`).
    pub values: SchemaRef,
    /// A PARTITION BY key that buckets the ORDER BY time by a fixed width (`date_bin`,
    /// `date_trunc`): the width in nanoseconds, and the key as written. A partition is
    /// forgotten once the watermark passes the end of its bucket.
    pub bucket: Option<(i64, String)>,
    /// PARTITION BY, over the input's rows.
    pub partition_by: Vec<Arc<dyn PhysicalExpr>>,
    /// The source columns each PARTITION BY key is copied from (group mode).
    pub key_sources: Vec<Vec<KeySource>>,
    /// The ORDER BY event-time column (input and output alike).
    pub ts: usize,
    /// Its unit.
    pub unit: TimeUnit,
    /// The input columns that order rows with equal event times.
    pub ties: Vec<usize>,
    /// The sink's `state_ttl`: partitions idle that long in event time are forgotten.
    pub state_ttl: Option<std::time::Duration>,
    /// Where its rows go for the segment above.
    pub post_slot: Arc<EpochSlot>,
    /// The name of the leaf reading `post_slot`.
    pub output_name: String,
    /// Its output as the nodes above read it.
    pub port: OutputPort,
}

impl OverPlan {
    /// The PARTITION BY, as written (`user_id, region`), or `none`.
    pub fn partition_text(&self) -> String {
        sql_text::partition_by(&self.partition_by)
    }

    /// The ORDER BY column's name.
    pub fn ts_name(&self) -> String {
        self.input.plan.schema().field(self.ts).name().clone()
    }

    /// How many later rows a row waits for (LEAD's greatest offset).
    pub fn lookahead(&self) -> usize {
        self.functions.iter().map(Function::lookahead).max().unwrap_or(0)
    }

    /// What each partition keeps between epochs, for `explain`.
    fn kept(&self) -> Vec<String> {
        self.functions
            .iter()
            .map(|f| {
                let keeps = match (&f.kind, f.start) {
                    (Kind::RowNumber | Kind::Rank | Kind::DenseRank, _) => {
                        "a row count and the last rank".to_string()
                    }
                    (Kind::Shift { offset, .. }, _) if *offset > 0 => {
                        format!("the last {}", rows(offset.unsigned_abs()))
                    }
                    (Kind::Shift { offset, .. }, _) => {
                        let n = offset.unsigned_abs();
                        let verb = if n == 1 { "is" } else { "are" };
                        format!("each row until the {} after it {verb} final", rows(n))
                    }
                    (Kind::Aggregate { .. }, Start::Unbounded) => {
                        "a running accumulator".to_string()
                    }
                    (Kind::Nth { n, last: false }, Start::Unbounded) => {
                        format!("the partition's first {}", rows(*n as u64))
                    }
                    (_, Start::Unbounded) => "the last row".to_string(),
                    (_, Start::Rows(0)) => "no row".to_string(),
                    (_, Start::Rows(n)) => format!("the last {}", rows(n)),
                    (_, Start::Range(nanos)) => format!(
                        "the rows less than {} older than the watermark",
                        sql_text::interval(0, 0, nanos)
                    ),
                };
                format!("{}: keeps {keeps}", f.text)
            })
            .collect()
    }
}

/// `n rows`, `1 row`.
fn rows(n: u64) -> String {
    if n == 1 {
        "row".to_string()
    } else {
        format!("{n} rows")
    }
}

impl StreamNode for OverPlan {
    fn kind(&self) -> &'static str {
        OVER
    }

    fn port(&self) -> OutputPort {
        self.port.clone()
    }

    fn inputs(&self) -> Vec<String> {
        volley_sql::stream::leaf::leaves(&self.input.plan)
    }

    fn confined_to(&self, table: &str, column: &str) -> Result<bool, String> {
        Ok(self.key_sources.iter().any(|sources| {
            !sources.is_empty()
                && sources
                    .iter()
                    .all(|s| s.table == table && s.column == column)
        }))
    }

    fn explain(&self, ctx: &ExplainContext<'_>) -> String {
        let mut out = String::new();
        let lead = self.lookahead();
        let _ = writeln!(
            out,
            "  kind: OVER window per partition (PARTITION BY {}) in event-time order (ORDER BY {}; rows with equal times in the order of their other columns); a row is emitted once the watermark passes its {}{}, and a row older than the watermark goes to dead letters",
            self.partition_text(),
            self.ts_name(),
            self.ts_name(),
            if lead > 0 {
                format!(", and once the {lead} rows after it in its partition are final (LEAD) or the input ends")
            } else {
                String::new()
            }
        );
        for line in self.kept() {
            let _ = writeln!(out, "  function {line}");
        }
        if let Some((_, key)) = &self.bucket {
            let _ = writeln!(
                out,
                "  a partition is forgotten once the watermark passes the end of its {key}"
            );
        }
        if let Some(ttl) = self.state_ttl {
            let _ = writeln!(
                out,
                "  state_ttl: {} of event time; a partition without rows for that long is forgotten, so results may differ from batch",
                sql_text::duration(ttl)
            );
        }
        let complete = match &self.input.frontier {
            SideFrontier::Sources { sources, .. } => {
                let marks: Vec<String> = sources
                    .iter()
                    .map(|s| format!("{s}: {}", (ctx.watermark_of)(s).unwrap_or_default()))
                    .collect();
                format!("by the watermark ({})", marks.join("; "))
            }
            SideFrontier::Aggregate { input } => format!("by the watermark of {input}"),
        };
        let _ = writeln!(out, "  input, final {complete}:");
        indent_by(&mut out, &render(&self.input.plan), "");
        out
    }

    fn instantiate(&self, task_ctx: Arc<TaskContext>) -> Box<dyn StreamOperator> {
        Box::new(super::OverState::new(self.clone(), task_ctx))
    }

    fn boxed_clone(&self) -> Box<dyn StreamNode> {
        Box::new(self.clone())
    }

    fn emitted(&self) -> Emitted {
        Emitted::Rows
    }

    fn take_sink_options(
        &mut self,
        allowed_lateness: Option<std::time::Duration>,
        state_ttl: Option<std::time::Duration>,
    ) -> Result<(), String> {
        if allowed_lateness.is_some() {
            return Err("keeps windows open for late rows, and an OVER window emits each row once, when the watermark passes it (late rows go to dead letters)".to_string());
        }
        self.state_ttl = state_ttl;
        Ok(())
    }

    fn warnings(&self) -> Vec<String> {
        self.state_ttl
            .map(|ttl| format!("the OVER window forgets a partition with no rows for {} of event time (the sink's 'state_ttl'), so a later row of it starts afresh and the result may differ from batch", sql_text::duration(ttl)))
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

