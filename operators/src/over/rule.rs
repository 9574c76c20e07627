//! The OVER window's planning rule: a `BoundedWindowAggExec` or `WindowAggExec` (window
//! functions sharing one PARTITION BY and ORDER BY) becomes an OVER node, when it is ordered
//! by a watermarked event time and every function and frame can be computed as rows become
//! final.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::windows::WindowExpr;
use volley_sql::error::{Result, SqlError};
use volley_sql::sql_text;
use volley_sql::stream::graph::{Emit, OutputPort, PortTime, StreamNode};
use volley_sql::stream::late::LateGate;
use volley_sql::stream::leaf::EpochSlot;
use volley_sql::stream::rule::{PlanRule, RuleContext};
use volley_sql::stream::ties::tie_columns;
use volley_sql::stream::window_op::{unsorted, window_parts};
use volley_sql::stream::trace::trace_column;

use super::function::{Arg, Kind, classify};
use super::plan::{OVER, OverPlan};
use crate::two_streams::{JoinSide, SideFrontier};

/// Plans each window operator (functions `OVER (PARTITION BY … ORDER BY event_time …)`) as an
/// OVER node.
#[derive(Debug)]
pub struct OverRule;

impl PlanRule for OverRule {
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
        Ok(Some(Box::new(plan_over(node, exprs, input, cx)?)))
    }
}


fn plan_over(
    node: &Arc<dyn ExecutionPlan>,
    exprs: &[Arc<dyn WindowExpr>],
    input: &Arc<dyn ExecutionPlan>,
    cx: &RuleContext<'_>,
) -> Result<OverPlan> {
    let at = cx.at();
    let refuse = |message: String| SqlError::Unsupported { at, message };
    let input = unsorted(Arc::clone(input));
    let mut functions = exprs
        .iter()
        .map(|e| classify(e).map_err(refuse))
        .collect::<Result<Vec<_>>>()?;
    let first = exprs
        .first()
        .ok_or_else(|| SqlError::Internal("a window operator without functions".into()))?;
    let call = functions
        .iter()
        .map(|f| f.text.clone())
        .collect::<Vec<_>>()
        .join(", ");
    let order = first.order_by();
    let Some(sort) = order.first() else {
        return Err(refuse(format!(
            "{call} OVER (...) has no ORDER BY, so each row's value needs its whole partition, which a stream never has: order the window by the event time (OVER (PARTITION BY ... ORDER BY event_time ...)), or compute it in `volley batch`"
        )));
    };
    let order_text = sql_text::expr(&sort.expr);
    if order.len() > 1 {
        return Err(refuse(format!(
            "{call} OVER (... ORDER BY {}) orders by several columns: order by the event time alone (rows with equal times are then ordered by their other columns, in batch and stream alike)",
            order.iter().map(|s| sql_text::expr(&s.expr)).collect::<Vec<_>>().join(", ")
        )));
    }
    // A ranking by anything but event time is a Top-N: it streams within a window.
    let top_n = if functions
        .iter()
        .any(|f| matches!(f.kind, Kind::RowNumber | Kind::Rank | Kind::DenseRank))
    {
        "; a Top-N streams when the query keeps the first ranks of one ROW_NUMBER() by a constant (SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY x DESC) AS rn FROM s) WHERE rn <= 10, upserted into a sink whose merge_key is k, rn), or ranks the rows of each window of a windowed aggregate (its window column in PARTITION BY)"
    } else {
        ""
    };
    if sort.options.descending {
        return Err(refuse(format!(
            "{call} OVER (... ORDER BY {order_text} DESC) puts each row after rows that have not happened yet: order by the event time ascending{top_n}"
        )));
    }
    if sort.options.nulls_first {
        return Err(refuse(format!(
            "{call} OVER (... ORDER BY {order_text} NULLS FIRST) puts rows without an event time, which may come at any time, before the others: drop NULLS FIRST"
        )));
    }
    let not_time = || {
        refuse(format!(
            "{call} OVER (... ORDER BY {order_text}): an OVER window is streamed in event-time order, so its ORDER BY must be the watermarked event-time column itself; order by the event time, or compute it in `volley batch`{top_n}"
        ))
    };
    let ts = sort
        .expr
        .downcast_ref::<Column>()
        .map(Column::index)
        .ok_or_else(not_time)?;
    let ts_type = input.schema().field(ts).data_type().clone();
    let DataType::Timestamp(unit, _) = ts_type else {
        return Err(not_time());
    };
    let origins = trace_column(&input, ts).ok_or_else(not_time)?;
    let ports = cx.ports();
    let frontier = if let Some(port) = origins
        .first()
        .and_then(|o| volley_sql::stream::graph::port(&ports, &o.input))
    {
        if port.emit == Emit::Upsert {
            return Err(refuse(format!(
                "{call} OVER (...) over {} would see every update of its rows again: window the inner aggregate (GROUP BY date_bin(INTERVAL ..., event_time), ...) so each row is emitted once",
                port.described
            )));
        }
        let time = origins
            .iter()
            .map(|o| port.time(o.column).filter(|_| o.input == port.name))
            .collect::<Option<Vec<_>>>()
            .and_then(|t| t.first().copied().cloned())
            .ok_or_else(|| {
                refuse(format!(
                    "{call} OVER (... ORDER BY {order_text}) over {} must be ordered by {}",
                    port.described, port.time_rule
                ))
            })?;
        SideFrontier::Aggregate {
            input: time.watermark,
        }
    } else {
        let mut sources = Vec::new();
        for origin in &origins {
            if let Some(source) = cx.source(&origin.input) {
                let named = source.schema.fields().get(origin.column).map(|f| f.name());
                let watermarked = source.watermark.as_ref().map(|w| &w.column);
                if watermarked.is_some() && named != watermarked {
                    return Err(not_time());
                }
            }
            let time = cx
                .event_time(
                    origin,
                    &format!("{call} OVER (... ORDER BY {order_text})"),
                    "no row's peers would ever be known, and none would be emitted",
                )?
                .ok_or_else(not_time)?;
            if !sources.contains(&time.table) {
                sources.push(time.table);
            }
        }
        SideFrontier::Sources {
            sources,
            gate: LateGate::new(),
        }
    };
    let plan = match &frontier {
        SideFrontier::Sources { sources, gate } => {
            cx.split_late_identity(&input, sources, gate, &ts_type)?
        }
        SideFrontier::Aggregate { .. } => input,
    };
    let side = JoinSide {
        plan: cx.partition_rowwise(plan)?,
        window_column: ts,
        frontier,
    };
    let input_schema = side.plan.schema();
    for key in first.partition_by() {
        let data_type = key
            .data_type(&input_schema)
            .map_err(|e| SqlError::plan(at, e))?;
        if !RowConverter::supports_fields(&[SortField::new(data_type.clone())]) {
            return Err(refuse(format!(
                "{call} OVER (PARTITION BY {} ...): a value of type {data_type} cannot key a partition; partition by scalar columns",
                sql_text::expr(key)
            )));
        }
    }
    let name = cx.output_name(OVER);
    let slot = EpochSlot::new();
    let schema = node.schema();
    let ts_name = schema.field(ts).name().clone();
    let port = OutputPort {
        name: name.clone(),
        schema: Arc::clone(&schema),
        slot: Arc::clone(&slot),
        times: vec![PortTime {
            column: ts,
            step: None,
            watermark: name.clone(),
            what: format!("the OVER window's event time {ts_name}"),
            watermark_means: "the earliest event time the OVER window can still emit: the watermark it last emitted by, or an earlier row still waiting for LEAD's later rows".to_string(),
        }],
        emit: Emit::Append,
        described: "an OVER window".to_string(),
        time_rule: format!("the event time the OVER window is ordered by ({ts_name})"),
        key: Vec::new(),
        needs_window: Some(format!(
            "is streamed when it is windowed by the OVER window's event time (GROUP BY date_bin(INTERVAL ..., {ts_name}), ...), so each window closes once its rows are final"
        )),
    };
    let ties = tie_columns(&side.plan.schema(), &[ts]);
    // What a partition holds of each row: its event time and the functions' arguments.
    let mut fields = vec![Field::new("ts", ts_type.clone(), true)];
    for (i, f) in functions.iter_mut().enumerate() {
        let mut args = Vec::with_capacity(f.args.len());
        for (j, arg) in f.args.iter().enumerate() {
            if let Some(literal) = arg.downcast_ref::<Literal>() {
                args.push(Arg::Literal(literal.value().clone()));
                continue;
            }
            let data_type = arg
                .data_type(&input_schema)
                .map_err(|e| SqlError::plan(at, e))?;
            args.push(Arg::Held(fields.len()));
            fields.push(Field::new(format!("f{i}_a{j}"), data_type, true));
        }
        f.at = args;
        f.range_units =
            super::function::range_units(&f.frame, volley_sql::stream::window::nanos_per_unit(unit));
    }
    let values = Arc::new(Schema::new(fields));
    let key_sources = first
        .partition_by()
        .iter()
        .map(|e| crate::grouped::key_sources(e, &side.plan, cx))
        .collect();
    // A PARTITION BY key bucketing the ORDER BY time: each partition ends with its bucket.
    let bucket = first.partition_by().iter().find_map(|key| {
        let bucket = volley_sql::stream::window::as_bucket(key).ok()??;
        let on_ts = bucket
            .ts
            .downcast_ref::<Column>()
            .is_some_and(|c| c.index() == ts);
        match bucket.size {
            volley_sql::stream::window::BucketSize::Nanos(width) if on_ts && width > 0 => {
                Some((width, sql_text::expr(key)))
            }
            _ => None,
        }
    });
    Ok(OverPlan {
        values,
        key_sources,
        bucket,
        partition_by: first.partition_by().to_vec(),
        input: side,
        functions,
        ts,
        unit,
        ties,
        state_ttl: None,
        post_slot: slot,
        output_name: name,
        port,
    })
}
