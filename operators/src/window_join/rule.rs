//! The windowed join's planning rule: a hash join of two streams joined on a tumbling window
//! both sides share (each side grouped by it, or its rows bucketed by it).

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

use super::plan::WindowJoinPlan;
use super::window::{SideWindow, side_window};
use crate::two_streams::{JoinSide, JoinTime, SideFrontier, join_port};

/// Plans each join of two streams joined on a window both sides share; leaves every other to
/// the rules after it.
#[derive(Debug)]
pub struct WindowJoinRule;

impl PlanRule for WindowJoinRule {
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

/// A windowed join of two streams (its sides cut), or `None` when the sides share no window
/// they are joined on.
fn plan_join(
    node: &Arc<dyn ExecutionPlan>,
    hash: &HashJoinExec,
    cx: &RuleContext<'_>,
) -> Result<Option<WindowJoinPlan>> {
    let at = cx.at();
    let refuse = |message: String| SqlError::Unsupported { at, message };
    let (left, right) = (Arc::clone(hash.left()), Arc::clone(hash.right()));
    let ports = cx.ports();
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
    let Some((l, r, left_window, right_window)) = window else {
        return Ok(None);
    };
    crate::two_streams::check_one_join(cx)?;
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
    let mut read = leaves(&left);
    read.extend(leaves(&right));
    let below: Vec<_> = ports.iter().filter(|p| read.contains(&p.name)).collect();
    let span = Span { width, unit };
    let left = join_side(left, l, &left_window, span, &display, cx)?;
    let right = join_side(right, r, &right_window, span, &display, cx)?;
    if let Some(updating) = below.iter().find(|p| p.emit == Emit::Upsert) {
        return Err(refuse(format!(
            "{} feeds a join of two streams: its updates never end, so no window of the join would close. Window it (GROUP BY date_bin(INTERVAL ..., event_time), ...)",
            updating.described
        )));
    }
    let name = cx.output_name(crate::two_streams::JOIN);
    let slot = EpochSlot::new();
    let times = [(true, l, JoinTime::Window), (false, r, JoinTime::Window)];
    let port = join_port(hash, &times, Some((width, unit)), name.clone(), Arc::clone(&slot));
    Ok(Some(WindowJoinPlan {
        join: Arc::clone(node),
        left,
        right,
        width,
        unit,
        display,
        post_slot: slot,
        output_name: name,
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
