//! Claims a window operator whose every PARTITION BY holds the window column of an appended,
//! windowed input (a port time with a step); anything else is left to the OVER rule.

use std::sync::Arc;

use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::windows::WindowExpr;
use datafusion::config::ConfigOptions;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use volley_sql::error::{Result, SqlError};
use volley_sql::stream::ties::{TIE_ORDER, WindowTies};
use volley_sql::stream::window_op::window_parts;
use volley_sql::stream::graph::{Emit, OutputPort, PortTime, StreamNode};
use volley_sql::stream::leaf::EpochSlot;
use volley_sql::stream::rule::{PlanRule, RuleContext};
use volley_sql::stream::trace::trace_column;

use super::plan::{PER_WINDOW, PerWindowPlan};

/// Plans a window operator partitioned by a window as a per-window node.
#[derive(Debug)]
pub struct PerWindowRule;

impl PlanRule for PerWindowRule {
    fn claims(&self, node: &dyn ExecutionPlan) -> bool {
        window_parts(node).is_some()
    }

    fn plan(
        &self,
        node: &Arc<dyn ExecutionPlan>,
        cx: &RuleContext<'_>,
    ) -> Result<Option<Box<dyn StreamNode>>> {
        let Some((exprs, input)) = window_parts(node.as_ref()) else {
            return Ok(None);
        };
        let Some((column, time)) = window_key(exprs, input, cx) else {
            return Ok(None);
        };
        let name = cx.output_name(PER_WINDOW);
        let schema = node.schema();
        let column_name = schema.field(column).name().clone();
        let port = OutputPort {
            name: name.clone(),
            schema: Arc::clone(&schema),
            slot: EpochSlot::new(),
            times: vec![PortTime {
                column,
                step: time.step,
                watermark: name.clone(),
                what: format!("the window {column_name} its partitions are in"),
                watermark_means: time.watermark_means.clone(),
            }],
            emit: Emit::Append,
            described: "window functions per window".to_string(),
            time_rule: format!("its window column {column_name}"),
            key: Vec::new(),
            needs_window: None,
        };
        let functions = exprs.iter().map(|e| e.name().to_string()).collect();
        // Rows with equal ORDER BY values are ordered as batch orders them (by their other
        // columns), and the sort sits right under the window operator.
        let plan = WindowTies
            .optimize(Arc::clone(node), &ConfigOptions::default())
            .and_then(sorted_below)
            .map_err(|e| SqlError::Internal(format!("ordering the ties of a window: {e}")))?;
        Ok(Some(Box::new(PerWindowPlan {
            plan,
            functions,
            window: column,
            input_watermark: time.watermark.clone(),
            output_name: name,
            port,
        })))
    }
}

/// The input column among every function's PARTITION BY that is the window column of one
/// appended, windowed input, with that input's time.
fn window_key(
    exprs: &[Arc<dyn WindowExpr>],
    input: &Arc<dyn ExecutionPlan>,
    cx: &RuleContext<'_>,
) -> Option<(usize, PortTime)> {
    let ports = cx.ports();
    let first = exprs.first()?;
    first.partition_by().iter().find_map(|key| {
        let column = key.downcast_ref::<Column>()?.index();
        if !exprs.iter().all(|e| {
            e.partition_by()
                .iter()
                .any(|k| k.downcast_ref::<Column>().is_some_and(|c| c.index() == column))
        }) {
            return None;
        }
        let origins = trace_column(input, column)?;
        let [origin] = origins.as_slice() else {
            return None;
        };
        let port = volley_sql::stream::graph::port(&ports, &origin.input)?;
        if port.emit != Emit::Append {
            return None;
        }
        let time = port.time(origin.column)?;
        time.step.is_some().then(|| (column, time.clone()))
    })
}

/// `window` with a sort right under it (by PARTITION BY, then ORDER BY) when none is there
/// (a projection over DataFusion's sort hides the order from the window operator).
fn sorted_below(
    window: Arc<dyn ExecutionPlan>,
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    let Some((exprs, input)) = window_parts(window.as_ref()) else {
        return Ok(window);
    };
    let Some(first) = exprs.first() else {
        return Ok(window);
    };
    if input.downcast_ref::<SortExec>().is_some() {
        return Ok(window);
    }
    let mut ordering: Vec<PhysicalSortExpr> = first
        .partition_by()
        .iter()
        .map(|e| PhysicalSortExpr::new(Arc::clone(e), TIE_ORDER))
        .collect();
    ordering.extend(first.order_by().iter().cloned());
    let Some(ordering) = LexOrdering::new(ordering) else {
        return Ok(window);
    };
    let sort: Arc<dyn ExecutionPlan> = Arc::new(SortExec::new(ordering, Arc::clone(input)));
    replace_children_if_necessary(window, vec![sort])
}
