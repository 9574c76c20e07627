//! A hop-window aggregate node: the GROUP BY's phases over panes, the hop window, its port and
//! how `explain` shows it.

use std::fmt::Write;
use std::sync::Arc;

use datafusion::execution::TaskContext;
use volley_sql::sql_text;
use volley_sql::stream::graph::{Emit, ExplainContext, OutputPort, PortTime, StreamNode};
use volley_sql::stream::leaf::EpochSlot;
use volley_sql::stream::operator::StreamOperator;
use volley_sql::stream::order::Emitted;
use volley_sql::stream::window::{HopWindow, WindowSize, WindowSpec};

use crate::grouped::{KeySource, TwoPhase};

/// A GROUP BY over a hop window: each row is aggregated once, into its pane (a tumbling window
/// of gcd(slide, size)), and a window is its panes merged.
#[derive(Debug, Clone)]
pub struct HopPlan {
    /// The GROUP BY's phases; the window's group column holds each row's pane start.
    pub phases: TwoPhase,
    /// The panes: a tumbling window over the event time, its `hop` the windows' size and slide.
    pub window: WindowSpec,
    /// The windows' size and slide, in the window column's unit.
    pub hop: HopWindow,
    /// Where the runner puts the windows' final rows for the segment reading them.
    pub post_slot: Arc<EpochSlot>,
    /// The input name of the leaf reading `post_slot`.
    pub output_name: String,
    /// How many state owners the group keys are hash-partitioned across.
    pub shards: usize,
    /// Per group key: the source columns it is copied from (empty when computed).
    pub key_sources: Vec<Vec<KeySource>>,
}

impl HopPlan {
    /// The size of its panes, in the window column's unit.
    pub fn pane(&self) -> i64 {
        match self.window.size {
            WindowSize::Fixed(pane) => pane,
            WindowSize::Months(_) => self.hop.slide,
        }
    }
}

impl StreamNode for HopPlan {
    fn kind(&self) -> &'static str {
        "hop"
    }

    /// Its window column starts windows, one every slide, each emitted once and final.
    fn port(&self) -> OutputPort {
        let w = &self.window;
        OutputPort {
            name: self.output_name.clone(),
            schema: Arc::clone(&self.phases.output_schema),
            slot: Arc::clone(&self.post_slot),
            times: vec![PortTime {
                column: w.group_index,
                step: Some((self.hop.slide, w.unit)),
                watermark: self.output_name.clone(),
                what: format!("its window {}", w.display),
                watermark_means:
                    "the start of the earliest window the aggregate below has not emitted"
                        .to_string(),
            }],
            emit: Emit::Append,
            described: "an aggregate".to_string(),
            time_rule: "that aggregate's own window column (its event time)".to_string(),
            key: if self.phases.has_grouping_sets() {
                Vec::new()
            } else {
                (0..self.phases.group_count).collect()
            },
            needs_window: None,
        }
    }

    fn inputs(&self) -> Vec<String> {
        volley_sql::stream::leaf::leaves(&self.phases.partial)
    }

    fn confined_to(&self, table: &str, column: &str) -> Result<bool, String> {
        Ok(crate::grouped::groups_by_source_column(
            &self.phases,
            &self.key_sources,
            table,
            column,
        ))
    }

    fn explain(&self, _ctx: &ExplainContext<'_>) -> String {
        let w = &self.window;
        let span = |count: i64| sql_text::span(count, w.unit);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "  kind: hop-window aggregate; window {} over event time '{}' ({} wide, every {}, in panes of {}); each row is aggregated once into its pane, a window merges its panes when the watermark passes its end, and a pane is dropped once its last window is emitted",
            w.display,
            w.column,
            span(self.hop.size),
            span(self.hop.slide),
            span(self.pane())
        );
        crate::grouped::explain_phases(&mut out, &self.phases, self.shards, "");
        out
    }

    fn instantiate(&self, task_ctx: Arc<TaskContext>) -> Box<dyn StreamOperator> {
        Box::new(super::HopState::new(self.clone(), task_ctx))
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
        _state_ttl: Option<std::time::Duration>,
    ) -> Result<(), String> {
        match allowed_lateness {
            Some(_) => Err("is not supported for hop windows yet; late rows of a hop window go to dead letters".to_string()),
            None => Ok(()),
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
