//! The hop window's planning rule: an `AggregateExec` with a hop window among its group keys
//! (`unnest(hop(ts, slide, size))`) becomes a hop-window aggregate over panes, its late rows
//! split out at the leaves by their pane.

use std::sync::Arc;

use arrow::datatypes::{DataType, Schema};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use volley_sql::error::{Result, SqlError};
use volley_sql::stream::graph::{OutputPort, StreamNode, port};
use volley_sql::stream::leaf::EpochSlot;
use volley_sql::stream::rule::{PlanRule, RuleContext};
use volley_sql::stream::window::{HopWindow, WindowSize, WindowSpec, as_bucket, nanos_per_unit};

use super::call::{HopCall, find_hop, to_panes};
use super::plan::HopPlan;
use crate::grouped::TwoPhase;

/// Plans each GROUP BY with a hop window among its keys; leaves every other to the rules
/// after it.
#[derive(Debug)]
pub struct HopRule;

impl PlanRule for HopRule {
    fn claims(&self, node: &dyn ExecutionPlan) -> bool {
        node.downcast_ref::<AggregateExec>().is_some()
    }

    fn plan(
        &self,
        node: &Arc<dyn ExecutionPlan>,
        cx: &RuleContext<'_>,
    ) -> Result<Option<Box<dyn StreamNode>>> {
        let Some(agg) = node.downcast_ref::<AggregateExec>() else {
            return Ok(None);
        };
        let at = cx.at();
        let group_by = agg.group_expr();
        let pre = agg.input();
        let Some(call) =
            find_hop(group_by, pre).map_err(|message| SqlError::Unsupported { at, message })?
        else {
            return Ok(None);
        };
        let tumbling = group_by
            .expr()
            .iter()
            .any(|(expr, _)| matches!(as_bucket(expr), Ok(Some(_))));
        if tumbling {
            return Err(SqlError::Unsupported {
                at,
                message: "a streaming aggregate may group by one window: a hop window and a tumbling one together would nest windows; aggregate one, then the other over its output".into(),
            });
        }
        let ports = cx.ports();
        let window = hop_window(&call, cx, &ports)?;
        if group_by.has_grouping_set() {
            crate::grouped::check_grouping_sets(
                group_by,
                Some((window.group_index, window.display.as_str())),
                at,
            )?;
        }
        let panes = to_panes(pre)
            .map_err(|e| SqlError::Internal(format!("planning hop panes: {e}")))?;
        let split = hop_late_at_leaves(&panes, &call, &window, cx)?;
        let phases = TwoPhase::split(agg, cx.partition_rowwise(split)?, at)?;
        let hop = window.hop.ok_or_else(|| SqlError::Internal("a hop window without its hop".into()))?;
        Ok(Some(Box::new(HopPlan {
            phases,
            window,
            hop,
            post_slot: EpochSlot::new(),
            output_name: cx.output_name("aggregate"),
            shards: cx.workers(),
            key_sources: group_by
                .expr()
                .iter()
                .map(|(expr, _)| crate::grouped::key_sources(expr, pre, cx))
                .collect(),
        })))
    }
}

/// The window of a hop found among the group keys: panes over a watermarked source column.
fn hop_window(
    call: &HopCall,
    cx: &RuleContext<'_>,
    ports: &[OutputPort],
) -> Result<WindowSpec> {
    let at = cx.at();
    let name = call.display.clone();
    let mut sources = Vec::new();
    let mut column = String::new();
    for origin in &call.origins {
        if let Some(port) = port(ports, &origin.input) {
            return Err(SqlError::Unsupported {
                at,
                message: format!(
                    "GROUP BY {name}: hop windows over {} rows are not streamed yet: hop over each stream's rows, then aggregate the hop windows' rows or join them on their window",
                    port.possessive()
                ),
            });
        }
        let time = cx.source_event_time(
            origin,
            &format!("GROUP BY {name}"),
            "the hop windows would never close and their state would grow forever",
        )?;
        column = time.column;
        sources.push(time.table);
    }
    Ok(WindowSpec {
        hop: Some(HopWindow {
            slide: call.sizes.slide,
            size: call.sizes.size,
        }),
        ..WindowSpec::tumbling(
            call.group_index,
            WindowSize::Fixed(call.sizes.pane),
            call.unit,
            column,
            sources,
            name,
        )
    })
}

/// `panes` with a late-row filter on every leaf of the hop window's sources: each computes
/// the row's pane start from the source's own event-time column.
fn hop_late_at_leaves(
    panes: &Arc<dyn ExecutionPlan>,
    call: &HopCall,
    window: &WindowSpec,
    cx: &RuleContext<'_>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let ts_type = DataType::Timestamp(call.unit, call.tz.clone());
    let pane_nanos = call.sizes.pane.saturating_mul(nanos_per_unit(call.unit));
    let date_bin = Arc::new(datafusion::logical_expr::ScalarUDF::from(
        datafusion::functions::datetime::date_bin::DateBinFunc::new(),
    ));
    let start = |column: Arc<dyn PhysicalExpr>, schema: &Schema| {
        let stride: Arc<dyn PhysicalExpr> =
            Arc::new(datafusion::physical_expr::expressions::Literal::new(
                datafusion::common::ScalarValue::new_interval_mdn(0, 0, pane_nanos),
            ));
        let start = datafusion::physical_expr::ScalarFunctionExpr::try_new(
            Arc::clone(&date_bin),
            vec![stride, column],
            schema,
            Arc::new(datafusion::config::ConfigOptions::default()),
        )?;
        Ok(Arc::new(start) as Arc<dyn PhysicalExpr>)
    };
    cx.late_at_leaves(panes, &window.sources, &window.gate, &ts_type, &start)
}
