//! A hop window among an aggregate's group keys: its window spec over a watermarked source
//! column, and late rows split out at the leaves by their pane.

use std::sync::Arc;

use arrow::datatypes::{DataType, Schema};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use volley_sql::error::{Result, SqlError};
use volley_sql::stream::graph::{OutputPort, port};
use volley_sql::stream::rule::RuleContext;
use volley_sql::stream::window::{HopWindow, WindowSize, WindowSpec, nanos_per_unit};

use super::hop_call::HopCall;

/// The window of a hop found among the group keys: panes over a watermarked source column.
pub(super) fn hop_window(
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
pub(super) fn hop_late_at_leaves(
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
