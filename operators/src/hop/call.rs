//! Recognising a hop (sliding) window: a group key that is `unnest(hop(ts, slide, size))` of
//! the aggregate's input, and planning it as panes.
//!
//! ```text
//!   AggregateExec(gby=[w, k])                      AggregateExec(gby=[w, k])   w = pane start
//!     Projection(w = unnested, k)                    Projection(w = unnested, k)
//!       UnnestExec                        ─▶           UnnestExec
//!         Projection(hop(ts, slide, size))               Projection(hop_pane(ts, slide, size))
//! ```
//!
//! Each row is aggregated once, into its pane (gcd(slide, size) wide); the engine merges the
//! panes of a window when the watermark passes its end, and drops a pane once every window
//! holding it has been emitted.

use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::PhysicalGroupBy;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::unnest::UnnestExec;
use volley_udfs::hop::{HopFunc, HopOutput, HopSizes, interval_in};

use volley_sql::stream::trace::{ColumnOrigin, column_of, trace_column};

/// A hop window found among an aggregate's group keys.
#[derive(Debug, Clone)]
pub(super) struct HopCall {
    /// Index of the group key.
    pub group_index: usize,
    /// The group key's name, for messages.
    pub display: String,
    /// Slide, size and pane, in `unit`s.
    pub sizes: HopSizes,
    /// Unit (and zone) of the window starts.
    pub unit: TimeUnit,
    /// The time zone of the window starts.
    pub tz: Option<Arc<str>>,
    /// Where the hop's time argument comes from.
    pub origins: Vec<ColumnOrigin>,
}

/// The `hop` call (windows form) a group key unnests, with the plan its projection reads.
fn unnested_hop(
    plan: &Arc<dyn ExecutionPlan>,
    index: usize,
) -> Option<(Arc<dyn PhysicalExpr>, Arc<dyn ExecutionPlan>)> {
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let column = column_of(&projection.expr().get(index)?.expr)?;
        return unnested_hop(projection.input(), column);
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let column = match filter.projection() {
            Some(p) => *p.get(index)?,
            None => index,
        };
        return unnested_hop(filter.input(), column);
    }
    if let Some(unnest) = plan.downcast_ref::<UnnestExec>() {
        let unnested = unnest
            .list_column_indices()
            .iter()
            .any(|l| l.index_in_input_schema == index && l.depth == 1);
        if !unnested || !unnest.struct_column_indices().is_empty() {
            return None;
        }
        let projection = unnest.input().downcast_ref::<ProjectionExec>()?;
        let expr = &projection.expr().get(index)?.expr;
        let call = expr.downcast_ref::<ScalarFunctionExpr>()?;
        let hop = call.fun().inner().downcast_ref::<HopFunc>()?;
        return (hop.output() == HopOutput::Windows)
            .then(|| (Arc::clone(expr), Arc::clone(projection.input())));
    }
    if volley_sql::stream::capability::is_coalesce_batches(plan.as_ref())
        || matches!(plan.name(), "RepartitionExec" | "CooperativeExec")
    {
        return unnested_hop(plan.children().first()?, index);
    }
    None
}

/// Finds a hop window among `group_by` over `pre`.
///
/// # Errors
/// A hop whose slide or size is not a fixed INTERVAL literal, or whose time is computed.
pub(super) fn find_hop(
    group_by: &PhysicalGroupBy,
    pre: &Arc<dyn ExecutionPlan>,
) -> Result<Option<HopCall>, String> {
    let mut found = None;
    for (group_index, (expr, name)) in group_by.expr().iter().enumerate() {
        let Some((call, input)) = column_of(expr).and_then(|c| unnested_hop(pre, c)) else {
            continue;
        };
        let name = volley_sql::sql_text::tidy(name);
        let Some(call) = call.downcast_ref::<ScalarFunctionExpr>() else {
            continue;
        };
        if found.is_some() {
            return Err("a streaming aggregate may group by one window".into());
        }
        let args = call.args();
        let ts_type = args
            .first()
            .and_then(|a| a.data_type(input.schema().as_ref()).ok());
        let Some(DataType::Timestamp(unit, tz)) = ts_type else {
            return Err(format!("GROUP BY {name}: hop needs a TIMESTAMP"));
        };
        let literal = |i: usize, what: &str| {
            let value = args
                .get(i)
                .and_then(|a| a.downcast_ref::<Literal>())
                .map(|l| l.value().clone())
                .ok_or_else(|| {
                    format!("GROUP BY {name}: the hop {what} must be an INTERVAL literal")
                })?;
            interval_in(&value, unit, what)
        };
        let sizes = HopSizes::new(literal(1, "slide")?, literal(2, "size")?)?;
        let origins = args
            .first()
            .and_then(column_of)
            .and_then(|c| trace_column(&input, c))
            .ok_or_else(|| {
                format!(
                    "GROUP BY {name}: a streaming hop window must be over a source's watermarked event-time column itself, not a computed expression"
                )
            })?;
        found = Some(HopCall {
            group_index,
            display: name,
            sizes,
            unit,
            tz,
            origins,
        });
    }
    Ok(found)
}

/// `pre` with every `hop` call replaced by `hop_pane`: each row is unnested into its one pane.
///
/// # Errors
/// DataFusion failures rebuilding a projection.
pub(super) fn to_panes(
    pre: &Arc<dyn ExecutionPlan>,
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    let pane = Arc::new(volley_udfs::hop_pane_udf());
    Arc::clone(pre)
        .transform_up(|node| {
            let Some(projection) = node.downcast_ref::<ProjectionExec>() else {
                return Ok(Transformed::no(node));
            };
            let mut changed = false;
            let mut exprs = Vec::with_capacity(projection.expr().len());
            for e in projection.expr() {
                let rewritten = Arc::clone(&e.expr).transform_up(|expr| {
                    let Some(call) = expr.downcast_ref::<ScalarFunctionExpr>() else {
                        return Ok(Transformed::no(expr));
                    };
                    let is_hop = call
                        .fun()
                        .inner()
                        .downcast_ref::<HopFunc>()
                        .is_some_and(|h| h.output() == HopOutput::Windows);
                    if !is_hop {
                        return Ok(Transformed::no(expr));
                    }
                    let replaced: Arc<dyn PhysicalExpr> = Arc::new(ScalarFunctionExpr::new(
                        "hop_pane",
                        Arc::clone(&pane),
                        call.args().to_vec(),
                        call.return_field(projection.input().schema().as_ref())?,
                        Arc::new(call.config_options().clone()),
                    ));
                    Ok(Transformed::yes(replaced))
                })?;
                changed |= rewritten.transformed;
                exprs.push((rewritten.data, e.alias.clone()));
            }
            if !changed {
                return Ok(Transformed::no(node));
            }
            let rebuilt = ProjectionExec::try_new(exprs, Arc::clone(projection.input()))?;
            Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>))
        })
        .map(|t| t.data)
}
