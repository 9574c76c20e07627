//! The aggregate's planning rule: an `AggregateExec` becomes a windowed or keyed aggregate
//! node, split into its per-epoch partial phase and its state.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, PhysicalGroupBy};
use volley_sql::error::{Result, SqlError};
use volley_sql::stream::graph::{Emit, OutputPort, StreamNode};
use volley_sql::stream::leaf::{EpochSlot, leaves};
use volley_sql::stream::rule::{PlanRule, RuleContext};
use volley_sql::stream::window::WindowSpec;

use super::plan::AggregatePlan;
use crate::grouped::TwoPhase;

/// Plans each `AggregateExec` (GROUP BY) as an aggregate node: windowed by a tumbling window
/// among its keys, or keyed.
#[derive(Debug)]
pub struct AggregateRule;

impl PlanRule for AggregateRule {
    fn claims(&self, node: &dyn ExecutionPlan) -> bool {
        node.downcast_ref::<AggregateExec>().is_some()
    }

    fn plan(
        &self,
        node: &Arc<dyn ExecutionPlan>,
        cx: &RuleContext<'_>,
    ) -> Result<Option<Box<dyn StreamNode>>> {
        if node.downcast_ref::<AggregateExec>().is_none() {
            return Ok(None);
        }
        let name = cx.output_name("aggregate");
        Ok(Some(Box::new(split_aggregate(node, cx, name)?)))
    }
}

/// One aggregate (whose input holds no stateful node any more: the nodes below are read
/// through their ports), its output read by a leaf named `output_name`.
fn split_aggregate(
    agg_node: &Arc<dyn ExecutionPlan>,
    cx: &RuleContext<'_>,
    output_name: String,
) -> Result<AggregatePlan> {
    let at = cx.at();
    let agg = agg_node
        .downcast_ref::<AggregateExec>()
        .ok_or_else(|| SqlError::Internal("aggregate node is not an AggregateExec".into()))?;
    let group_by = agg.group_expr().clone();
    let pre = Arc::clone(agg.input());
    let read = leaves(&pre);
    let ports = cx.ports();
    if let Some(updated) = ports
        .iter()
        .find(|p| p.emit == Emit::Upsert && read.contains(&p.name))
    {
        return Err(SqlError::Unsupported {
            at,
            message: format!(
                "an aggregate over {} would count every update of its groups again: window the inner aggregate (GROUP BY date_bin(INTERVAL ..., event_time), ...) so each group is emitted once, or write it to a table with a merge_key and aggregate that in batch",
                updated.described
            ),
        });
    }
    let (window, partial_input) = aggregate_window(&group_by, &pre, cx, &ports)?;
    if group_by.has_grouping_set() {
        let window = window.as_ref().map(|w| (w.group_index, w.display.as_str()));
        crate::grouped::check_grouping_sets(&group_by, window, at)?;
    }
    let phases = TwoPhase::split(agg, cx.partition_rowwise(partial_input)?, at)?;
    let mut plan = AggregatePlan {
        phases,
        window,
        post_slot: EpochSlot::new(),
        output_name,
        shards: cx.workers(),
        key_sources: group_by
            .expr()
            .iter()
            .map(|(expr, _)| crate::grouped::key_sources(expr, &pre, cx))
            .collect(),
        state_ttl: None,
        warnings: Vec::new(),
        session: None,
    };
    if plan.window.is_none()
        && let Some(session) = super::session::session_of(agg, cx.insert_plan(), &ports)
    {
        let session = session.map_err(|message| SqlError::Unsupported { at, message })?;
        plan.state_ttl = Some(std::time::Duration::from_nanos(
            u64::try_from(session.gap).unwrap_or(0),
        ));
        plan.session = Some(session);
        return Ok(plan);
    }
    if plan.window.is_none() {
        plan.warnings = bucket_warnings(&plan, cx);
    }
    if let Some(port) = ports
        .iter()
        .find(|p| p.needs_window.is_some() && read.contains(&p.name))
        && plan.window.is_none()
    {
        return Err(SqlError::Unsupported {
            at,
            message: format!(
                "an aggregate over {} (GROUP BY {}) {}",
                port.described,
                plan.group_names(),
                port.needs_window.as_deref().unwrap_or_default()
            ),
        });
    }
    Ok(plan)
}

/// The tumbling window among an aggregate's group keys (none for a keyed aggregate) and its
/// partial phase's input: `pre` with late rows split out at its leaves.
fn aggregate_window(
    group_by: &PhysicalGroupBy,
    pre: &Arc<dyn ExecutionPlan>,
    cx: &RuleContext<'_>,
    ports: &[OutputPort],
) -> Result<(Option<WindowSpec>, Arc<dyn ExecutionPlan>)> {
    let Some(w) = super::window::find_window(group_by, pre, cx, ports)? else {
        return Ok((None, Arc::clone(pre)));
    };
    let (expr, _) = &group_by.expr()[w.group_index];
    // Over inner aggregates' windows only, no row is ever late: they emit each window once,
    // complete.
    let split = if w.sources.iter().any(|s| cx.source(s).is_some()) {
        cx.split_late_at_leaves(pre, expr, &w)?
    } else {
        Arc::clone(pre)
    };
    Ok((Some(w), split))
}

/// Group keys of a keyed aggregate computed from a source's TIMESTAMP column: buckets of
/// event time that are not windows, so their state never shrinks.
fn bucket_warnings(agg: &AggregatePlan, cx: &RuleContext<'_>) -> Vec<String> {
    let Some(partial) = agg.phases.partial.downcast_ref::<AggregateExec>() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (expr, name) in partial.group_expr().expr() {
        let from_time = volley_sql::stream::trace::derived_from_expr(expr, partial.input())
            .into_iter()
            .find_map(|origin| {
                let source = cx.source(&origin.input)?;
                let field = source.schema.fields().get(origin.column)?;
                matches!(field.data_type(), DataType::Timestamp(_, _))
                    .then(|| (field.name().clone(), source.name.clone()))
            });
        if let Some((column, table)) = from_time {
            out.push(format!(
                "GROUP BY {name} buckets event time ('{column}' of '{table}') but is not a window: every bucket stays in state forever and is re-emitted as an upsert whenever it changes. Write the bucket as date_bin or date_trunc over a watermarked event-time column, or bound the state with the sink's 'state_ttl' option"
            ));
        }
    }
    out
}
