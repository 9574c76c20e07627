//! Claims a ranking the query keeps to its first ranks ([`RankLimitExec`]) when it is not
//! ordered by the event time (the OVER window streams that, emitting each row once final)
//! and not per window (window functions per window do that).

use std::sync::Arc;

use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use volley_sql::error::{Result, SqlError};
use volley_sql::sql_text;
use volley_sql::stream::graph::{Emit, OutputPort, PortTime, StreamNode, port};
use volley_sql::stream::leaf::{EpochSlot, leaves};
use volley_sql::stream::rule::{PlanRule, RuleContext};
use volley_sql::stream::ties::tie_columns;
use volley_sql::stream::window_op::{RankLimitExec, unsorted, window_parts};
use volley_sql::stream::trace::trace_column;

use super::closing::closing_time;
use super::plan::{TOP_N, TopNPlan};

/// Plans a Top-N without a window.
#[derive(Debug)]
pub struct TopNRule;

impl PlanRule for TopNRule {
    fn claims(&self, node: &dyn ExecutionPlan) -> bool {
        node.downcast_ref::<RankLimitExec>().is_some()
    }

    fn plan(
        &self,
        node: &Arc<dyn ExecutionPlan>,
        cx: &RuleContext<'_>,
    ) -> Result<Option<Box<dyn StreamNode>>> {
        let Some(marked) = node.downcast_ref::<RankLimitExec>() else {
            return Ok(None);
        };
        let Some(([expr], input)) = window_parts(node.as_ref()) else {
            return Ok(None);
        };
        let at = cx.at();
        let refuse = |message: String| SqlError::Unsupported { at, message };
        let order = expr.order_by();
        if order.is_empty() || by_event_time(order, input, cx) {
            return Ok(None);
        }
        let input = unsorted(Arc::clone(input));
        let ports = cx.ports();
        if let Some(updating) = leaves(&input)
            .iter()
            .filter_map(|name| port(&ports, name))
            .find(|p| p.emit == Emit::Upsert)
        {
            return Err(refuse(format!(
                "a Top-N (ROW_NUMBER() OVER (...) ... WHERE rn <= {}) over {} is not streamed: its rows are updated, and a rank would have to be refilled from rows it no longer holds; rank the rows of each window instead (window the aggregate below and put its window column in PARTITION BY)",
                marked.limit(),
                updating.described
            )));
        }
        let mut key = Vec::new();
        for k in expr.partition_by() {
            let Some(column) = k.downcast_ref::<Column>() else {
                return Err(refuse(format!(
                    "a Top-N partitioned by {} is not streamed: its ranks are upserted keyed by the PARTITION BY columns, so partition by columns (compute {} in a subquery below)",
                    sql_text::expr(k),
                    sql_text::expr(k)
                )));
            };
            key.push(column.index());
        }
        let schema = node.schema();
        let (closing, input) = match closing_time(&input, &key, cx)? {
            Some((closing, input)) => (Some(closing), input),
            None => (None, input),
        };
        key.push(marked.rank());
        let ordered: Vec<usize> = order
            .iter()
            .filter_map(|s| s.expr.downcast_ref::<Column>().map(Column::index))
            .collect();
        let input = cx.partition_rowwise(input)?;
        let ties = tie_columns(&input.schema(), &ordered);
        let name = cx.output_name(TOP_N);
        let keys_text = if key.len() > 1 {
            key[..key.len() - 1]
                .iter()
                .map(|&i| schema.field(i).name().clone())
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            "none: one partition".to_string()
        };
        let port = match &closing {
            None => OutputPort {
                name: name.clone(),
                schema: Arc::clone(&schema),
                slot: EpochSlot::new(),
                times: Vec::new(),
                emit: Emit::Upsert,
                described: format!("a Top-N (ranks up to {} per {keys_text})", marked.limit()),
                time_rule: "none: a Top-N's rows are updates, not events".to_string(),
                key,
                needs_window: None,
            },
            Some(closing) => OutputPort {
                name: name.clone(),
                schema: Arc::clone(&schema),
                slot: EpochSlot::new(),
                times: vec![PortTime {
                    column: closing.column,
                    step: None,
                    watermark: name.clone(),
                    what: format!("the Top-N's partition time {}", closing.name),
                    watermark_means: "the earliest partition time the Top-N can still emit: the watermark it last closed partitions by".to_string(),
                }],
                emit: Emit::Append,
                described: format!(
                    "a Top-N per event time (ranks up to {} per {keys_text})",
                    marked.limit()
                ),
                time_rule: format!(
                    "the Top-N's partition time ({}), each partition's ranks emitted once",
                    closing.name
                ),
                key: Vec::new(),
                needs_window: Some(format!(
                    "is streamed when it is windowed by the Top-N's partition time (GROUP BY date_bin(INTERVAL ..., {}), ...)",
                    closing.name
                )),
            },
        };
        Ok(Some(Box::new(TopNPlan {
            input,
            partition_by: expr.partition_by().to_vec(),
            order: order.to_vec(),
            ties,
            limit: marked.limit(),
            function: expr.name().to_string(),
            output_name: name,
            port,
            closing,
        })))
    }
}

/// Whether the ORDER BY is the event time ascending alone (the OVER window's, emitting each
/// row once final): a source's watermarked column or an event time of the operator below.
fn by_event_time(
    order: &[datafusion::physical_expr::PhysicalSortExpr],
    input: &Arc<dyn ExecutionPlan>,
    cx: &RuleContext<'_>,
) -> bool {
    let [sort] = order else {
        return false;
    };
    if sort.options.descending {
        return false;
    }
    let Some(column) = sort.expr.downcast_ref::<Column>() else {
        return false;
    };
    let Some(origins) = trace_column(input, column.index()) else {
        return false;
    };
    let ports = cx.ports();
    origins.iter().all(|o| {
        if let Some(p) = port(&ports, &o.input) {
            return p.time(o.column).is_some();
        }
        cx.source(&o.input).is_some_and(|s| {
            let name = s.schema.fields().get(o.column).map(|f| f.name());
            s.watermark.as_ref().map(|w| &w.column) == name
        })
    })
}
