//! Joins of two streams on a shared tumbling window, and the aggregates over their rows.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::joins::HashJoinExec;

use crate::stream::leaf::EpochSlot;
use crate::stream::trace::column_of;
use crate::stream::window::{WindowSize, WindowSpec};

use crate::error::{Result, SqlError, StatementRef};
use crate::pipeline::InsertDecl;

use super::StreamPlanner;
use super::cut::*;
use crate::stream::aggregate_plan::AggregatePlan;

impl StreamPlanner {
    /// Plans a query whose stateful top is `join`, a join of two streams: the aggregates
    /// below it are cut as inner stages, the join becomes a windowed join over the windows
    /// both sides share, and what is above it reads its output.
    pub(super) fn plan_join(
        &self,
        root: &Arc<dyn ExecutionPlan>,
        join_node: &Arc<dyn ExecutionPlan>,
        insert: &InsertDecl,
        state_ttl: Option<std::time::Duration>,
    ) -> Result<Option<crate::stream::join::JoinPlan>> {
        let at = insert.at;
        let mut stages = Vec::new();
        let mut found = None;
        let mut outer = Vec::new();
        let post = self.cut_join(root, join_node, insert, &mut stages, &mut found, &mut outer)?;
        let Some(CutJoin {
            join,
            left,
            right,
            slot,
            times,
        }) = found
        else {
            return Err(SqlError::Internal(
                "the join vanished while planning it".into(),
            ));
        };
        check_outer_chain(&times.port.name, &outer, &post, at)?;
        let output = JoinOutput {
            slot,
            post,
            outer,
            port: times.port,
        };
        let Some(hash) = join.downcast_ref::<HashJoinExec>() else {
            return Err(SqlError::Internal(
                "a stream join that is not a hash join".into(),
            ));
        };
        let refuse = |message: String| SqlError::Unsupported { at, message };
        let mut window = None;
        for (l, r) in hash.on() {
            let (Some(l), Some(r)) = (column_of(l), column_of(r)) else {
                continue;
            };
            let ports: Vec<_> = stages.iter().map(AggregatePlan::port).collect();
            let sides = (
                crate::stream::join::side_window(&left, l, &ports),
                crate::stream::join::side_window(&right, r, &ports),
            );
            if let (Some(a), Some(b)) = sides {
                window = Some((l, r, a, b));
                break;
            }
        }
        if window.is_none()
            && let Some(bounds) = crate::stream::interval::interval_bounds(hash)
        {
            return self
                .plan_interval_join(join, left, right, bounds, stages, output, insert, state_ttl)
                .map(Some);
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
        let left = self.join_side(left, l, &left_window, width, unit, &display, at)?;
        let right = self.join_side(right, r, &right_window, width, unit, &display, at)?;
        for stage in &stages {
            if stage.window.is_none() {
                return Err(refuse(format!(
                    "a keyed aggregate (GROUP BY {} without a window) feeds a join of two streams: its updates never end, so no window of the join would close. Window it (GROUP BY date_bin(INTERVAL ..., event_time), ...)",
                    stage.group_names()
                )));
            }
        }
        Ok(Some(crate::stream::join::JoinPlan {
            join,
            left,
            right,
            width,
            unit,
            display,
            inner: stages,
            post_slot: output.slot,
            output_name: output.port.name.clone(),
            post: output.post,
            interval: None,
            state_ttl: None,
            outer: output.outer,
            port: output.port,
        }))
    }

    /// `node` with the aggregates under `target` cut (into `stages`), `target` itself taken
    /// out (into `found`: the join, its cut sides and the leaf reading its rows, which takes
    /// its place), and the windowed aggregates above it cut (into `outer`, innermost first).
    pub(super) fn cut_join(
        &self,
        node: &Arc<dyn ExecutionPlan>,
        target: &Arc<dyn ExecutionPlan>,
        insert: &InsertDecl,
        stages: &mut Vec<AggregatePlan>,
        found: &mut Option<CutJoin>,
        outer: &mut Vec<AggregatePlan>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(single) = single_phase(node)? {
            return self.cut_join(&single, target, insert, stages, found, outer);
        }
        if Arc::ptr_eq(node, target) {
            let children = node.children();
            let (Some(left), Some(right)) = (children.first(), children.get(1)) else {
                return Err(SqlError::Internal("a join without two sides".into()));
            };
            let left = self.cut(left, insert, stages)?;
            let right = self.cut(right, insert, stages)?;
            let join = datafusion::physical_plan::execution_plan::replace_children_if_necessary(
                Arc::clone(node),
                vec![Arc::clone(&left), Arc::clone(&right)],
            )
            .map_err(|e| SqlError::Internal(format!("cutting the join: {e}")))?;
            let Some(hash) = join.downcast_ref::<HashJoinExec>() else {
                return Err(SqlError::Internal(
                    "a stream join that is not a hash join".into(),
                ));
            };
            let name = format!("{}#join", insert.target);
            let ports: Vec<_> = stages.iter().map(AggregatePlan::port).collect();
            let (slot, leaf) = self.output_leaf(&name, join.schema())?;
            let times =
                crate::stream::join::join_times(hash, &ports, name.clone(), Arc::clone(&slot));
            *found = Some(CutJoin {
                join,
                left,
                right,
                slot,
                times,
            });
            return Ok(leaf);
        }
        let children = node.children();
        let mut cut = Vec::with_capacity(children.len());
        for child in &children {
            cut.push(self.cut_join(child, target, insert, stages, found, outer)?);
        }
        let node = datafusion::physical_plan::execution_plan::replace_children_if_necessary(
            Arc::clone(node),
            cut,
        )
        .map_err(|e| SqlError::Internal(format!("cutting the plan at a join: {e}")))?;
        if node.downcast_ref::<AggregateExec>().is_none() {
            return Ok(node);
        }
        let at = insert.at;
        let refuse = |message: &str| SqlError::Unsupported {
            at,
            message: message.to_string(),
        };
        let Some(cut_join) = found.as_ref() else {
            return Err(refuse(
                "an aggregate beside a join of two streams in one INSERT is not streamed; write it in its own INSERT",
            ));
        };
        if !cut_join.times.bounded() {
            // An unbounded join is refused (or bounded by `state_ttl` and planned again).
            return Ok(node);
        }
        let count = stages.len() + outer.len();
        let name = if count == 0 {
            format!("{}#aggregate", insert.target)
        } else {
            format!("{}#aggregate{count}", insert.target)
        };
        // The aggregates over the join read its port, or the one below them.
        let ports: Vec<_> = std::iter::once(cut_join.times.port.clone())
            .chain(outer.iter().map(AggregatePlan::port))
            .collect();
        let stage = self.split_aggregate(&node, insert, name, &ports)?;
        if stage.window.is_none() {
            return Err(refuse(&format!(
                "an aggregate over a join of two streams (GROUP BY {}) is streamed when it is windowed by the join's rows' time: the window column of a windowed join, or one side's event time of an interval join (GROUP BY date_bin(INTERVAL ..., a.event_time), ...), so each window closes as the join's rows for it are final; or write the joined rows to a table and aggregate it in `volley batch`",
                stage.group_names()
            )));
        }
        let leaf = Arc::clone(&stage.post);
        outer.push(stage);
        Ok(leaf)
    }

    /// One side of a windowed join: its plan (late rows split out at its leaves when it
    /// buckets source rows) and when its windows are complete.
    #[expect(clippy::too_many_arguments)]
    pub(super) fn join_side(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        column: usize,
        window: &crate::stream::join::SideWindow,
        width: i64,
        unit: arrow::datatypes::TimeUnit,
        display: &str,
        at: StatementRef,
    ) -> Result<crate::stream::join::JoinSide> {
        use crate::stream::join::{JoinSide, SideFrontier, SideWindow};
        match window {
            SideWindow::Aggregate { input, .. } => Ok(JoinSide {
                plan: partition_rowwise(plan, self.workers)?,
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
                    let time = self
                        .event_time(
                            origin,
                            &format!("the window {display} of a join"),
                            "its windows would never close",
                            at,
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
                    WindowSize::Fixed(width),
                    unit,
                    column_name,
                    sources.clone(),
                    display.to_string(),
                );
                let gate = Arc::clone(&spec.gate);
                let split = self.split_late_typed(&plan, expr, ts_type, &spec)?;
                Ok(JoinSide {
                    plan: partition_rowwise(split, self.workers)?,
                    window_column: column,
                    frontier: SideFrontier::Sources { sources, gate },
                })
            }
        }
    }

    /// A slot and the leaf reading it, for an operator's output named `name`.
    pub(super) fn output_leaf(
        &self,
        name: &str,
        schema: SchemaRef,
    ) -> Result<(Arc<EpochSlot>, Arc<dyn ExecutionPlan>)> {
        let slot = EpochSlot::new();
        let leaf = crate::stream::leaf::EpochSourceExec::new(
            name.to_string(),
            schema,
            None,
            Arc::clone(&slot),
        )
        .map_err(|e| SqlError::Internal(e.to_string()))?;
        Ok((slot, Arc::new(leaf)))
    }
}

/// A join of two streams taken out of its plan.
pub(super) struct CutJoin {
    /// The join, its children cut.
    pub(super) join: Arc<dyn ExecutionPlan>,
    /// Its left side, cut.
    pub(super) left: Arc<dyn ExecutionPlan>,
    /// Its right side, cut.
    pub(super) right: Arc<dyn ExecutionPlan>,
    /// The slot its rows go to, read by the leaf that took its place.
    pub(super) slot: Arc<EpochSlot>,
    /// Its output's time columns, named by that leaf.
    pub(super) times: crate::stream::join::JoinTimes,
}

/// A window's `(width, unit)` as an SQL interval.
pub(super) fn span_of((width, unit): (i64, arrow::datatypes::TimeUnit)) -> String {
    crate::sql_text::span(width, unit)
}

/// Where a join of two streams' rows go: the leaf reading them, the aggregates over them and
/// the segment above.
pub(super) struct JoinOutput {
    pub(super) slot: Arc<EpochSlot>,
    pub(super) post: Arc<dyn ExecutionPlan>,
    pub(super) outer: Vec<AggregatePlan>,
    pub(super) port: crate::stream::graph::OutputPort,
}

/// Checks that the aggregates over a join form one chain: the first reads the join's rows
/// (`join`), each next one the one before it, and `post` the last.
pub(super) fn check_outer_chain(
    join: &str,
    outer: &[AggregatePlan],
    post: &Arc<dyn ExecutionPlan>,
    at: StatementRef,
) -> Result<()> {
    let mut previous = join.to_string();
    let reads = |plan: &Arc<dyn ExecutionPlan>| {
        let mut leaves = Vec::new();
        collect_leaves(plan, &mut leaves);
        leaves
    };
    for stage in outer {
        if !reads(&stage.partial).contains(&previous) {
            return Err(SqlError::Unsupported {
                at,
                message: format!(
                    "the aggregate {} does not read the join of two streams' rows (or the aggregate over them): one INSERT streams one chain of a join and the aggregates over it; write the rest in another INSERT",
                    stage.output_name
                ),
            });
        }
        previous.clone_from(&stage.output_name);
    }
    if !outer.is_empty() && !reads(post).contains(&previous) {
        return Err(SqlError::Unsupported {
            at,
            message: "the result of an INSERT over a join of two streams must read the aggregate over the join; write the rest in another INSERT".into(),
        });
    }
    Ok(())
}
