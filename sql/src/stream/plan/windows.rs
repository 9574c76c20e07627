//! The window among an aggregate's group keys: a tumbling bucket of a watermarked event time, or the window column of the operator below.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::PhysicalGroupBy;

use crate::stream::late::LateGate;
use crate::stream::trace::{column_of, trace_column};
use crate::stream::window::{
    BucketSize, WindowSize, WindowSpec, as_bucket, is_utc, nanos_per_unit,
};

use crate::error::{Result, SqlError, StatementRef};

use super::StreamPlanner;
use crate::stream::aggregate_plan::AggregatePlan;

impl StreamPlanner {
    /// Finds the tumbling window among the group expressions, checking it is over a watermarked
    /// event-time column.
    pub(super) fn find_window(
        &self,
        group_by: &PhysicalGroupBy,
        pre: &Arc<dyn ExecutionPlan>,
        at: StatementRef,
        inner: &[AggregatePlan],
        join: Option<&crate::stream::join::JoinTimes>,
    ) -> Result<Option<WindowSpec>> {
        let mut found = None;
        for (index, (expr, _)) in group_by.expr().iter().enumerate() {
            let name = &crate::sql_text::expr(expr);
            let bucket = as_bucket(expr).map_err(|e| SqlError::Unsupported {
                at,
                message: format!("GROUP BY {name}: {}", e.0),
            })?;
            let Some(bin) = bucket else { continue };
            if found.is_some() {
                return Err(SqlError::Unsupported {
                    at,
                    message: "a streaming aggregate may group by one window (date_bin, tumble or date_trunc)"
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
            let (column, sources) = self.window_inputs(&origins, ts, pre, name, inner, join, at)?;
            found = Some(WindowSpec {
                group_index: index,
                size,
                unit,
                column,
                sources,
                gate: LateGate::new(),
                display: name.clone(),
                lateness: 0,
                hop: None,
            });
        }
        if found.is_none() {
            found = inner_window_key(group_by, pre, inner, join);
        }
        Ok(found)
    }
}

/// A group key that is an inner windowed aggregate's own window column, grouped as it is
/// (`GROUP BY w` over per-window rows), or a windowed join's window column: a window as wide
/// as the inner one (a hop window's slide), closed as the inner aggregate (or the join) emits.
pub(super) fn inner_window_key(
    group_by: &PhysicalGroupBy,
    pre: &Arc<dyn ExecutionPlan>,
    inner: &[AggregatePlan],
    join: Option<&crate::stream::join::JoinTimes>,
) -> Option<WindowSpec> {
    for (index, (expr, name)) in group_by.expr().iter().enumerate() {
        let Some(origins) = column_of(expr).and_then(|c| trace_column(pre, c)) else {
            continue;
        };
        let found = join
            .and_then(|times| join_window_of(&origins, times))
            .or_else(|| stage_window_of(&origins, inner));
        if let Some(((width, unit), column, sources)) = found {
            return Some(WindowSpec {
                group_index: index,
                size: WindowSize::Fixed(width),
                unit,
                column: column.unwrap_or_else(|| name.clone()),
                sources,
                gate: LateGate::new(),
                display: name.clone(),
                lateness: 0,
                hop: None,
            });
        }
    }
    None
}

/// What a group column traced to `origins` is as a window: its step and unit, its column
/// name (None: the group's own) and the inputs whose watermark closes it.
pub(super) type KeyWindow = (
    (i64, arrow::datatypes::TimeUnit),
    Option<String>,
    Vec<String>,
);

/// `origins` as a windowed join's window column (marked as the time the aggregate windows by).
pub(super) fn join_window_of(
    origins: &[crate::stream::trace::ColumnOrigin],
    times: &crate::stream::join::JoinTimes,
) -> Option<KeyWindow> {
    use crate::stream::join::JoinTime;
    let size = times.window?;
    let all = !origins.is_empty()
        && origins
            .iter()
            .all(|o| o.input == times.name && times.time_of(o.column) == Some(JoinTime::Window));
    if !all || times.used.get().is_some_and(|t| t != JoinTime::Window) {
        return None;
    }
    times.used.set(Some(JoinTime::Window));
    Some((size, None, vec![times.name.clone()]))
}

/// `origins` as inner aggregates' own window columns, all of one step.
pub(super) fn stage_window_of(
    origins: &[crate::stream::trace::ColumnOrigin],
    inner: &[AggregatePlan],
) -> Option<KeyWindow> {
    let mut size = None;
    let mut column = None;
    let mut sources = Vec::new();
    for o in origins {
        let stage = inner.iter().find(|s| s.output_name == o.input)?;
        let w = stage.window.as_ref()?;
        if w.group_index != o.column || w.lateness != 0 {
            return None;
        }
        let step = (w.step()?, w.unit);
        if size.is_some_and(|s| s != step) {
            return None;
        }
        size = Some(step);
        column = Some(stage.output_schema.field(o.column).name().clone());
        sources.push(stage.output_name.clone());
    }
    Some((size?, column, sources))
}

/// The width and unit of a bucket window `bin` (the group expression `expr` over `pre`'s
/// output, `name` as the user wrote it): a TIMESTAMP column, a width the column's precision
/// holds, and, for units whose length varies, a UTC column.
fn bucket_size(
    expr: &Arc<dyn PhysicalExpr>,
    bin: &crate::stream::window::Bucket,
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

impl StreamPlanner {
    /// Where a window's time comes from (`origins`, traced from column `ts` of `pre`): a
    /// join's time, an inner aggregate's window column, or a source's watermarked event time.
    /// Returns the time column's name and the inputs whose watermarks close the window.
    #[expect(clippy::too_many_arguments)]
    fn window_inputs(
        &self,
        origins: &[crate::stream::trace::ColumnOrigin],
        ts: usize,
        pre: &Arc<dyn ExecutionPlan>,
        name: &str,
        inner: &[AggregatePlan],
        join: Option<&crate::stream::join::JoinTimes>,
        at: StatementRef,
    ) -> Result<(String, Vec<String>)> {
        let mut sources = Vec::new();
        let mut column = String::new();
        for origin in origins {
            if let Some(times) = join.filter(|j| j.name == origin.input) {
                // A window over a join's rows, by a time whose rows the join finalises.
                let Some(time) = times.time_of(origin.column) else {
                    return Err(SqlError::Unsupported {
                        at,
                        message: format!(
                            "GROUP BY {name}: a window over a join of two streams' rows must be over the time the join bounds: the window column of a windowed join, or either side's event time of an interval join, as the join outputs it"
                        ),
                    });
                };
                if times.used.get().is_some_and(|t| t != time) {
                    return Err(SqlError::Unsupported {
                        at,
                        message: format!(
                            "GROUP BY {name}: the aggregates over a join of two streams must window by one of its times"
                        ),
                    });
                }
                times.used.set(Some(time));
                column = pre.schema().field(ts).name().clone();
                sources.push(times.name.clone());
                continue;
            }
            if let Some(stage) = inner.iter().find(|s| s.output_name == origin.input) {
                // A window over windows: the inner aggregate's window start is its rows'
                // event time, and where its emitted windows have got to their watermark.
                // A hop window's rows are timed by their window start too: its output
                // watermark is the next window start it will emit.
                match &stage.window {
                    Some(w) if w.group_index == origin.column && w.lateness == 0 => {
                        column = stage.output_schema.field(origin.column).name().clone();
                        sources.push(stage.output_name.clone());
                        continue;
                    }
                    _ => {
                        return Err(SqlError::Unsupported {
                            at,
                            message: format!(
                                "GROUP BY {name}: a window over an aggregate's rows must be over that aggregate's own window column (its event time); column '{}' is not one",
                                pre.schema().field(ts).name()
                            ),
                        });
                    }
                }
            }
            let time = self
                .event_time(
                    origin,
                    &format!("GROUP BY {name}"),
                    "the window would never close and its state would grow forever",
                    at,
                )?
                .ok_or_else(|| {
                    SqlError::Internal(format!(
                        "window column traced to unknown input '{}'",
                        origin.input
                    ))
                })?;
            column = time.column;
            sources.push(time.table);
        }
        Ok((column, sources))
    }
}
