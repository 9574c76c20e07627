//! The join's planning rule: a hash join whose two sides both read streams becomes a
//! windowed join (both sides in the same tumbling window, joined on it) or an interval join
//! (`interval_rule.rs`).

use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::HashJoinExec;
use volley_sql::error::{Result, SqlError, StatementRef};
use volley_sql::stream::graph::{Emit, StreamNode};
use volley_sql::stream::leaf::{EpochSlot, leaves};
use volley_sql::stream::plan::is_stream_join;
use volley_sql::stream::rule::{PlanRule, RuleContext};
use volley_sql::stream::trace::column_of;
use volley_sql::stream::window::{WindowSize, WindowSpec};

use super::plan::{JoinPlan, JoinSide, SideFrontier, SideWindow, join_port, side_window};

/// Plans each join of two streams: windowed when both sides share a tumbling window and join
/// on it, an interval join when the join bounds the difference of their event times. A join
/// bounded by neither is not taken (the planner then refuses it, or bounds it by the sink's
/// `state_ttl`).
#[derive(Debug)]
pub struct JoinRule;

impl PlanRule for JoinRule {
    fn claims(&self, node: &dyn ExecutionPlan) -> bool {
        node.downcast_ref::<HashJoinExec>()
            .is_some_and(is_stream_join)
    }

    fn plan(
        &self,
        node: &Arc<dyn ExecutionPlan>,
        cx: &RuleContext<'_>,
    ) -> Result<Option<Box<dyn StreamNode>>> {
        let Some(hash) = node.downcast_ref::<HashJoinExec>() else {
            return Ok(None);
        };
        if !is_stream_join(hash) {
            return Ok(None);
        }
        Ok(plan_join(node, hash, cx)?.map(|j| Box::new(j) as Box<dyn StreamNode>))
    }
}

/// A join of two streams (its sides cut), or `None` when neither a shared window nor an
/// interval bounds it.
fn plan_join(
    node: &Arc<dyn ExecutionPlan>,
    hash: &HashJoinExec,
    cx: &RuleContext<'_>,
) -> Result<Option<JoinPlan>> {
    let at = cx.at();
    let refuse = |message: String| SqlError::Unsupported { at, message };
    if cx.nodes().iter().any(|n| n.kind() == "join") {
        return Err(refuse("a streaming INSERT may join two streams once: join the result of one join with a third stream in another pipeline, or in `volley batch`".into()));
    }
    let (left, right) = (Arc::clone(hash.left()), Arc::clone(hash.right()));
    let name = cx.output_name("join");
    let ports = cx.ports();
    let slot = EpochSlot::new();
    let port = join_port(hash, &ports, name.clone(), Arc::clone(&slot));
    let mut window = None;
    for (l, r) in hash.on() {
        let (Some(l), Some(r)) = (column_of(l), column_of(r)) else {
            continue;
        };
        let sides = (
            side_window(&left, l, &ports),
            side_window(&right, r, &ports),
        );
        if let (Some(a), Some(b)) = sides {
            window = Some((l, r, a, b));
            break;
        }
    }
    let mut read = leaves(&left);
    read.extend(leaves(&right));
    let below: Vec<_> = ports.iter().filter(|p| read.contains(&p.name)).collect();
    if window.is_none()
        && let Some(bounds) = super::bounds::interval_bounds(hash)
    {
        if !below.is_empty() {
            return Err(refuse(
                "an interval join streams source rows; join aggregates on their shared window instead".into(),
            ));
        }
        let sides = super::interval_rule::IntervalSides {
            left,
            right,
            bounds,
        };
        return super::interval_rule::plan_interval_join(node, sides, port, slot, cx).map(Some);
    }
    let Some((l, r, left_window, right_window)) = window else {
        return Ok(None);
    };
    if left_window.size() != right_window.size() {
        return Err(refuse(format!(
            "the two sides of a windowed join must use the same window: {} against {}",
            span_of(left_window.size()),
            span_of(right_window.size())
        )));
    }
    let (width, unit) = left_window.size();
    let display = format!(
        "{} = {}",
        left.schema().field(l).name(),
        right.schema().field(r).name()
    );
    let span = Span { width, unit };
    let left = join_side(left, l, &left_window, span, &display, cx)?;
    let right = join_side(right, r, &right_window, span, &display, cx)?;
    if let Some(updating) = below.iter().find(|p| p.emit == Emit::Upsert) {
        return Err(refuse(format!(
            "{} feeds a join of two streams: its updates never end, so no window of the join would close. Window it (GROUP BY date_bin(INTERVAL ..., event_time), ...)",
            updating.described
        )));
    }
    Ok(Some(JoinPlan {
        join: Arc::clone(node),
        left,
        right,
        width,
        unit,
        display,
        post_slot: slot,
        output_name: name,
        interval: None,
        state_ttl: None,
        port,
    }))
}

/// A windowed join's window: its width in `unit`s.
#[derive(Debug, Clone, Copy)]
struct Span {
    width: i64,
    unit: arrow::datatypes::TimeUnit,
}

/// One side of a windowed join: its plan (late rows split out at its leaves when it
/// buckets source rows) and when its windows are complete.
fn join_side(
    plan: Arc<dyn ExecutionPlan>,
    column: usize,
    window: &SideWindow,
    span: Span,
    display: &str,
    cx: &RuleContext<'_>,
) -> Result<JoinSide> {
    let at: StatementRef = cx.at();
    match window {
        SideWindow::Aggregate { input, .. } => Ok(JoinSide {
            plan: cx.partition_rowwise(plan)?,
            window_column: column,
            frontier: SideFrontier::Aggregate {
                input: input.clone(),
            },
        }),
        SideWindow::Bucket {
            expr,
            ts_type,
            origins,
            ..
        } => {
            let mut sources = Vec::new();
            let mut column_name = String::new();
            for origin in origins {
                let time = cx
                    .event_time(
                        origin,
                        &format!("the window {display} of a join"),
                        "its windows would never close",
                    )?
                    .ok_or_else(|| SqlError::Unsupported {
                        at,
                        message: format!(
                            "the window {display} of a join must be over a source's watermarked event time, not over '{}'",
                            origin.input
                        ),
                    })?;
                column_name = time.column;
                sources.push(time.table);
            }
            let spec = WindowSpec::tumbling(
                0,
                WindowSize::Fixed(span.width),
                span.unit,
                column_name,
                sources.clone(),
                display.to_string(),
            );
            let gate = Arc::clone(&spec.gate);
            let split = cx.split_late_typed(&plan, expr, ts_type, &spec)?;
            Ok(JoinSide {
                plan: cx.partition_rowwise(split)?,
                window_column: column,
                frontier: SideFrontier::Sources { sources, gate },
            })
        }
    }
}

/// A window's `(width, unit)` as an SQL interval.
fn span_of((width, unit): (i64, arrow::datatypes::TimeUnit)) -> String {
    volley_sql::sql_text::span(width, unit)
}
