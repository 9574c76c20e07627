//! A windowed or keyed aggregate node: the plans and expressions its runtime runs, its port
//! and how `explain` shows it.

use std::sync::Arc;

use std::fmt::Write;

use datafusion::execution::TaskContext;
use volley_sql::sql_text;
use volley_sql::stream::graph::{
    Emit, ExplainContext, OutputPort, PortTime, StreamNode, time_by_watermark,
};
use volley_sql::stream::leaf::EpochSlot;
use volley_sql::stream::operator::StreamOperator;
use volley_sql::stream::order::Emitted;
use volley_sql::stream::window::WindowSpec;

use crate::grouped::{KeySource, TwoPhase};

/// A windowed or keyed aggregate, split into the plans and expressions the engine runs.
#[derive(Debug, Clone)]
pub struct AggregatePlan {
    /// The GROUP BY's phases.
    pub phases: TwoPhase,
    /// The tumbling window, or `None` for a keyed (upsert) aggregate.
    pub window: Option<WindowSpec>,
    /// Where the engine puts finalised aggregate rows for the segment reading them: the post
    /// segment, or the input of the aggregate over this one.
    pub post_slot: Arc<EpochSlot>,
    /// The input name of the leaf reading `post_slot` (what traces and watermarks call this
    /// aggregate's output).
    pub output_name: String,
    /// How many state owners the group keys are hash-partitioned across.
    pub shards: usize,
    /// Per group key (in GROUP BY order): the source columns it is copied from, unchanged or
    /// cast; empty when it is computed (the window, an expression).
    pub key_sources: Vec<Vec<KeySource>>,
    /// Keyed aggregates only: a group not updated for this long (event time, by the
    /// watermark) is forgotten (the sink's `state_ttl` option).
    pub state_ttl: Option<std::time::Duration>,
    /// What the user should know about how it runs (group keys that bucket event time
    /// without being a window).
    pub warnings: Vec<String>,
    /// A session window among the group keys: each session is appended once closed.
    pub session: Option<super::session::Session>,
}

impl AggregatePlan {
    /// Its output as the node above reads it: a window aggregate's window column is an event
    /// time starting windows (once no late row corrects them), published under its output
    /// name; a keyed aggregate, or windows corrected by late rows, update earlier rows.
    pub fn port(&self) -> OutputPort {
        let final_windows = self.window.as_ref().filter(|w| w.lateness == 0);
        let times = final_windows
            .map(|w| PortTime {
                column: w.group_index,
                step: w.step().map(|step| (step, w.unit)),
                watermark: self.output_name.clone(),
                what: format!("its window {}", w.display),
                watermark_means:
                    "the start of the earliest window the aggregate below has not emitted"
                        .to_string(),
            })
            .into_iter()
            .collect();
        OutputPort {
            name: self.output_name.clone(),
            schema: std::sync::Arc::clone(&self.phases.output_schema),
            slot: std::sync::Arc::clone(&self.post_slot),
            times,
            emit: if final_windows.is_some() || self.session.is_some() {
                Emit::Append
            } else {
                Emit::Upsert
            },
            described: match &self.window {
                Some(_) => "an aggregate".to_string(),
                None if self.session.is_some() => format!(
                    "a session aggregate (GROUP BY {})",
                    self.group_names()
                ),
                None => format!(
                    "a keyed aggregate (GROUP BY {} without a window)",
                    self.group_names()
                ),
            },
            time_rule: "that aggregate's own window column (its event time)".to_string(),
            // With grouping sets the visible group columns do not identify a row: a rolled-up
            // NULL and a NULL key look alike.
            key: if self.has_grouping_sets() || self.session.is_some() {
                Vec::new()
            } else {
                (0..self.phases.group_count).collect()
            },
            needs_window: None,
        }
    }

    /// Its group columns, for messages: `user_id, w`.
    pub fn group_names(&self) -> String {
        self.phases.group_names()
    }

    /// Whether it groups by GROUPING SETS, ROLLUP or CUBE.
    pub fn has_grouping_sets(&self) -> bool {
        self.phases.has_grouping_sets()
    }

    /// Whether some group key is copied unchanged (or cast) from `table`'s column `column`:
    /// then rows of one group all share that column's value.
    pub fn groups_by_source_column(&self, table: &str, column: &str) -> bool {
        crate::grouped::groups_by_source_column(&self.phases, &self.key_sources, table, column)
    }
}

impl StreamNode for AggregatePlan {
    fn kind(&self) -> &'static str {
        "aggregate"
    }

    fn port(&self) -> OutputPort {
        AggregatePlan::port(self)
    }

    fn inputs(&self) -> Vec<String> {
        volley_sql::stream::leaf::leaves(&self.phases.partial)
    }

    fn confined_to(&self, table: &str, column: &str) -> Result<bool, String> {
        Ok(self.groups_by_source_column(table, column))
    }

    fn explain(&self, ctx: &ExplainContext<'_>) -> String {
        explain_node(self, ctx)
    }

    fn instantiate(&self, task_ctx: Arc<TaskContext>) -> Box<dyn StreamOperator> {
        Box::new(super::AggregateState::new(self.clone(), task_ctx))
    }

    fn boxed_clone(&self) -> Box<dyn StreamNode> {
        Box::new(self.clone())
    }

    fn emitted(&self) -> Emitted {
        match (&self.window, &self.session) {
            (Some(_), _) | (None, Some(_)) => Emitted::Windows,
            (None, None) => Emitted::Updates,
        }
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    fn take_sink_options(
        &mut self,
        allowed_lateness: Option<std::time::Duration>,
        state_ttl: Option<std::time::Duration>,
    ) -> Result<(), String> {
        if let Some(lateness) = allowed_lateness {
            let Some(window) = self.window.as_mut() else {
                return Err("keeps windows open for late rows, and this INSERT has no window (date_bin, tumble or date_trunc)".to_string());
            };
            let nanos = i64::try_from(lateness.as_nanos()).unwrap_or(i64::MAX);
            window.lateness = nanos / window.nanos_per_unit();
        }
        if let Some(session) = &self.session {
            if state_ttl.is_some() {
                return Err(format!(
                    "forgets idle groups, and a session aggregate needs none: a session is emitted and forgotten once the watermark of {} is more than its gap past the session's last row",
                    session.over
                ));
            }
            return Ok(());
        }
        if state_ttl.is_some() {
            self.state_ttl = state_ttl;
        }
        Ok(())
    }

    fn corrects_windows(&self) -> bool {
        self.window.as_ref().is_some_and(|w| w.lateness > 0)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// A windowed or keyed aggregate: its window or key, state and per-micro-batch plan.
fn explain_node(agg: &AggregatePlan, ctx: &ExplainContext<'_>) -> String {
    let mut text = String::new();
    explain_aggregate(&mut text, agg, ctx.watermark_of, ctx.ports, "");
    text
}

/// The window or key, state and per-micro-batch plan of one aggregate, indented by `pad`.
fn explain_aggregate(
    out: &mut String,
    agg: &AggregatePlan,
    watermark_of: &dyn Fn(&str) -> Option<String>,
    ports: &[OutputPort],
    pad: &str,
) {
    match &agg.window {
        Some(w) => {
            let _ = writeln!(
                out,
                "{pad}  kind: tumbling-window aggregate; window {} over event time '{}' ({} wide)",
                w.display,
                sql_text::tidy(&w.column),
                size(w)
            );
            if w.lateness > 0 {
                let _ = writeln!(
                    out,
                    "{pad}  allowed_lateness: {}; an emitted window keeps its state that long and a late row within it re-emits the corrected row (upsert)",
                    sql_text::span(w.lateness, w.unit)
                );
            }
            for source in &w.sources {
                if let Some(time) = time_by_watermark(ports, source) {
                    let _ = writeln!(
                        out,
                        "{pad}  watermark: {source}: {}; a window is emitted once it passes its end",
                        time.watermark_means
                    );
                    continue;
                }
                let text = watermark_of(source).unwrap_or_else(|| "?".into());
                let _ = writeln!(
                    out,
                    "{pad}  watermark: {source}: {text}; a window is emitted once the watermark passes its end; later rows go to dead letters"
                );
            }
        }
        None if agg.session.is_some() => {
            if let Some(session) = &agg.session {
                let _ = writeln!(
                    out,
                    "{pad}  kind: session aggregate; {} numbers each key's sessions (a new one when rows are more than {} apart); a session is appended once the watermark of {} is more than {} past the micro-batch that last added to it, and then forgotten",
                    session.id,
                    sql_text::interval(0, 0, session.gap),
                    session.over,
                    sql_text::interval(0, 0, session.gap)
                );
            }
        }
        None => {
            let _ = writeln!(
                out,
                "{pad}  kind: keyed aggregate; emits upserts per micro-batch, keyed by the group columns"
            );
            if let Some(ttl) = agg.state_ttl {
                let _ = writeln!(
                    out,
                    "{pad}  state_ttl: {} of event time; a group not updated that long is forgotten, so results may differ from batch",
                    sql_text::duration(ttl)
                );
            }
        }
    }
    crate::grouped::explain_phases(out, &agg.phases, agg.shards, pad);
}

/// A tumbling window's width in SQL (`INTERVAL '1 minute'`, `INTERVAL '1 month'`).
fn size(w: &WindowSpec) -> String {
    use volley_sql::stream::window::WindowSize;
    match w.size {
        WindowSize::Fixed(width) => sql_text::span(width, w.unit),
        WindowSize::Months(months) => {
            sql_text::interval(i32::try_from(months).unwrap_or(i32::MAX), 0, 0)
        }
    }
}
