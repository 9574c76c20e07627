//! The window among an aggregate's group keys: a tumbling bucket of a watermarked event time, or the window column of the operator below.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::PhysicalGroupBy;

use volley_sql::error::{Result, SqlError, StatementRef};
use volley_sql::sql_text;
use volley_sql::stream::graph::{OutputPort, port};
use volley_sql::stream::rule::RuleContext;
use volley_sql::stream::trace::{ColumnOrigin, column_of, trace_column};
use volley_sql::stream::window::{
    Bucket, BucketSize, WindowSize, WindowSpec, as_bucket, is_utc, nanos_per_unit,
};

/// Finds the tumbling window among the group expressions, checking it is over a watermarked
/// event-time column.
pub(super) fn find_window(
    group_by: &PhysicalGroupBy,
    pre: &Arc<dyn ExecutionPlan>,
    cx: &RuleContext<'_>,
    ports: &[OutputPort],
) -> Result<Option<WindowSpec>> {
    let at = cx.at();
    let mut found = None;
    for (index, (expr, _)) in group_by.expr().iter().enumerate() {
        let name = &sql_text::expr(expr);
        let bucket = as_bucket(expr).map_err(|e| SqlError::Unsupported {
            at,
            message: format!("GROUP BY {name}: {}", e.0),
        })?;
        let Some(bin) = bucket else { continue };
        if found.is_some() {
            return Err(SqlError::Unsupported {
                at,
                message:
                    "a streaming aggregate may group by one window (date_bin, tumble or date_trunc)"
                        .into(),
            });
        }
        let (size, unit) = bucket_size(expr, &bin, pre, name, at)?;
        let traced = column_of(&bin.ts).and_then(|c| Some((c, trace_column(pre, c)?)));
        let Some((ts, origins)) = traced else {
            return Err(SqlError::Unsupported {
                at,
                message: format!(
                    "GROUP BY {name}: a streaming window must be over a source's watermarked event-time column itself, not a computed expression"
                ),
            });
        };
        let (column, sources) =
            window_inputs(&origins, pre.schema().field(ts).name(), name, ports, cx)?;
        found = Some(WindowSpec::tumbling(
            index,
            size,
            unit,
            column,
            sources,
            name.clone(),
        ));
    }
    if found.is_none() {
        found = inner_window_key(group_by, pre, ports);
    }
    Ok(found)
}

/// A group key that is a window column of the node below, grouped as it is (`GROUP BY w`
/// over per-window rows): a window as wide as the one below (a hop window's slide), closed as
/// the node below emits its windows.
fn inner_window_key(
    group_by: &PhysicalGroupBy,
    pre: &Arc<dyn ExecutionPlan>,
    ports: &[OutputPort],
) -> Option<WindowSpec> {
    for (index, (expr, name)) in group_by.expr().iter().enumerate() {
        let Some(origins) = column_of(expr).and_then(|c| trace_column(pre, c)) else {
            continue;
        };
        if let Some(((width, unit), column, sources)) = port_window_of(&origins, ports) {
            return Some(WindowSpec::tumbling(
                index,
                WindowSize::Fixed(width),
                unit,
                column,
                sources,
                name.clone(),
            ));
        }
    }
    None
}

/// `origins` as window columns of the nodes below, all of one step: the step, the column's
/// name and the watermarks that close the windows.
fn port_window_of(
    origins: &[ColumnOrigin],
    ports: &[OutputPort],
) -> Option<((i64, arrow::datatypes::TimeUnit), String, Vec<String>)> {
    let mut size = None;
    let mut column = None;
    let mut sources = Vec::new();
    for o in origins {
        let port = port(ports, &o.input)?;
        let time = port.time(o.column)?;
        let step = time.step?;
        if size.is_some_and(|s| s != step) {
            return None;
        }
        size = Some(step);
        column = Some(port.schema.field(o.column).name().clone());
        sources.push(time.watermark.clone());
    }
    Some((size?, column?, sources))
}

/// The width and unit of a bucket window `bin` (the group expression `expr` over `pre`'s
/// output, `name` as the user wrote it): a TIMESTAMP column, a width the column's precision
/// holds, and, for units whose length varies, a UTC column.
fn bucket_size(
    expr: &Arc<dyn PhysicalExpr>,
    bin: &Bucket,
    pre: &Arc<dyn ExecutionPlan>,
    name: &str,
    at: StatementRef,
) -> Result<(WindowSize, arrow::datatypes::TimeUnit)> {
    let (unit, tz) = match expr.data_type(pre.schema().as_ref()) {
        Ok(DataType::Timestamp(unit, tz)) => (unit, tz),
        Ok(other) => {
            return Err(SqlError::Unsupported {
                at,
                message: format!(
                    "GROUP BY {name}: the window is over {other}, not a TIMESTAMP column"
                ),
            });
        }
        Err(e) => return Err(SqlError::plan(at, e)),
    };
    let per_unit = nanos_per_unit(unit);
    let size = match bin.size {
        BucketSize::Nanos(nanos) if nanos % per_unit != 0 => {
            return Err(SqlError::Unsupported {
                at,
                message: format!(
                    "GROUP BY {name}: the window width is finer than the column's {unit:?} precision"
                ),
            });
        }
        BucketSize::Nanos(nanos) => WindowSize::Fixed(nanos / per_unit),
        BucketSize::Months(months) => WindowSize::Months(months),
    };
    let varies = !matches!(size, WindowSize::Fixed(w) if w * per_unit < 3_600_000_000_000);
    if bin.trunc_unit.is_some() && varies && !is_utc(tz.as_deref()) {
        return Err(SqlError::Unsupported {
            at,
            message: format!(
                "GROUP BY {name}: the column is in time zone '{}', where hours, days and longer units change length with daylight saving; window a UTC timestamp, or use date_bin with a fixed INTERVAL",
                tz.as_deref().unwrap_or_default()
            ),
        });
    }
    Ok((size, unit))
}

/// Where a window's time (column `ts_name` of the aggregate's input) comes from
/// (`origins`): an event time of the node below (its port says which of its columns are), or
/// a source's watermarked event time. Returns the time column's name and the watermarks that
/// close the window.
fn window_inputs(
    origins: &[ColumnOrigin],
    ts_name: &str,
    name: &str,
    ports: &[OutputPort],
    cx: &RuleContext<'_>,
) -> Result<(String, Vec<String>)> {
    let at = cx.at();
    let mut sources = Vec::new();
    let mut column = String::new();
    for origin in origins {
        if let Some(port) = port(ports, &origin.input) {
            let Some(time) = port.time(origin.column) else {
                return Err(SqlError::Unsupported {
                    at,
                    message: format!(
                        "GROUP BY {name}: a window over {} rows must be over {}; column '{ts_name}' is not one",
                        port.possessive(),
                        port.time_rule,
                    ),
                });
            };
            column = port.schema.field(origin.column).name().clone();
            if !sources.contains(&time.watermark) {
                sources.push(time.watermark.clone());
            }
            continue;
        }
        let time = cx.source_event_time(
            origin,
            &format!("GROUP BY {name}"),
            "the window would never close and its state would grow forever",
        )?;
        column = time.column;
        sources.push(time.table);
    }
    Ok((column, sources))
}
