//! The window functions an OVER node computes, read from DataFusion's window expressions:
//! aggregates over a frame, ranking, and navigation to other rows of the partition. Anything
//! else is refused here, with the function or frame named and the rewrite.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{WindowFrame, WindowFrameBound, WindowFrameUnits};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::window::{
    PlainAggregateWindowExpr, SlidingAggregateWindowExpr, StandardWindowExpr,
};
use datafusion::physical_plan::windows::{WindowExpr, WindowUDFExpr};
use volley_sql::sql_text;

/// What a window function computes.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// An aggregate over the frame; `sliding` when rows leave the frame (retracted), else the
    /// frame only grows (UNBOUNDED PRECEDING).
    Aggregate {
        agg: Arc<AggregateFunctionExpr>,
        sliding: bool,
    },
    /// `ROW_NUMBER()`.
    RowNumber,
    /// `RANK()`.
    Rank,
    /// `DENSE_RANK()`.
    DenseRank,
    /// `LAG(x, offset, default)` (`offset` rows back) or `LEAD` (negative `offset`).
    Shift { offset: i64, default: ScalarValue },
    /// `FIRST_VALUE(x)` (`n` 1), `NTH_VALUE(x, n)`, or `LAST_VALUE(x)` (`last`).
    Nth { n: usize, last: bool },
}

/// Where a frame starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// UNBOUNDED PRECEDING: the partition's first row.
    Unbounded,
    /// `n` rows back (ROWS), or the current row (`0`).
    Rows(u64),
    /// An interval back (RANGE), at most this many nanoseconds.
    Range(i64),
}

/// One window function of an OVER node.
#[derive(Debug, Clone)]
pub(crate) struct Function {
    pub kind: Kind,
    /// The arguments it reads from each row (an aggregate's inputs, a navigation's value).
    pub args: Vec<Arc<dyn PhysicalExpr>>,
    /// Where each argument's values are: a partition's held column (after the event time), or
    /// a literal (`count(*)`'s), which is not held per row.
    pub at: Vec<Arg>,
    /// Its frame (ignored by ranking and LAG/LEAD).
    pub frame: Arc<WindowFrame>,
    /// Where its frame starts.
    pub start: Start,
    /// A RANGE frame of fixed lengths over event times: how far back (in the event time's
    /// unit) it starts (`None`: UNBOUNDED PRECEDING) and ends (0: the current row and its
    /// peers), so its bounds are found by comparing integers.
    pub range_units: Option<(Option<i64>, i64)>,
    /// Its output column.
    pub field: FieldRef,
    /// As the user wrote it, for messages and `explain`: `sum(amount) RANGE BETWEEN …`.
    pub text: String,
}

/// Where a function's argument comes from.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    /// Column `n` of a partition's held rows.
    Held(usize),
    /// The same value for every row.
    Literal(ScalarValue),
}

impl Function {
    /// Its arguments' values for `held` (a partition's held rows, or its first rows).
    pub fn arg_values(
        &self,
        held: &RecordBatch,
    ) -> datafusion::error::Result<Vec<ArrayRef>> {
        self.at
            .iter()
            .map(|arg| match arg {
                Arg::Held(n) => Ok(Arc::clone(held.column(*n))),
                Arg::Literal(value) => value.to_array_of_size(held.num_rows()),
            })
            .collect()
    }

    /// Whether it reads a frame (aggregates and FIRST/LAST/NTH_VALUE).
    pub fn uses_frame(&self) -> bool {
        matches!(self.kind, Kind::Aggregate { .. } | Kind::Nth { .. })
    }

    /// How many later rows a row's value needs (LEAD's offset), 0 for the rest.
    pub fn lookahead(&self) -> usize {
        match self.kind {
            Kind::Shift { offset, .. } if offset < 0 => offset.unsigned_abs() as usize,
            _ => 0,
        }
    }
}

/// The SQL of `frame`: `RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW`.
pub(crate) fn frame_text(frame: &WindowFrame) -> String {
    let bound = |b: &WindowFrameBound| match b {
        WindowFrameBound::CurrentRow => "CURRENT ROW".to_string(),
        WindowFrameBound::Preceding(v) if v.is_null() => "UNBOUNDED PRECEDING".to_string(),
        WindowFrameBound::Following(v) if v.is_null() => "UNBOUNDED FOLLOWING".to_string(),
        WindowFrameBound::Preceding(v) => format!("{} PRECEDING", offset_text(v)),
        WindowFrameBound::Following(v) => format!("{} FOLLOWING", offset_text(v)),
    };
    format!(
        "{} BETWEEN {} AND {}",
        frame.units,
        bound(&frame.start_bound),
        bound(&frame.end_bound)
    )
}

fn offset_text(value: &ScalarValue) -> String {
    match interval_nanos(value) {
        Some(n) if !matches!(value, ScalarValue::UInt64(_) | ScalarValue::Int64(_)) => {
            sql_text::interval(0, 0, n)
        }
        _ => value.to_string(),
    }
}

/// An interval or duration frame offset in nanoseconds (a month counted as 31 days: an upper
/// bound, which is all pruning needs); plain numbers as they are.
fn interval_nanos(value: &ScalarValue) -> Option<i64> {
    const DAY: i64 = 86_400_000_000_000;
    match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) => Some(
            i64::from(v.months)
                .saturating_mul(31 * DAY)
                .saturating_add(i64::from(v.days).saturating_mul(DAY))
                .saturating_add(v.nanoseconds),
        ),
        ScalarValue::IntervalDayTime(Some(v)) => Some(
            i64::from(v.days)
                .saturating_mul(DAY)
                .saturating_add(i64::from(v.milliseconds).saturating_mul(1_000_000)),
        ),
        ScalarValue::IntervalYearMonth(Some(m)) => Some(i64::from(*m).saturating_mul(31 * DAY)),
        ScalarValue::DurationSecond(Some(v)) => Some(v.saturating_mul(1_000_000_000)),
        ScalarValue::DurationMillisecond(Some(v)) => Some(v.saturating_mul(1_000_000)),
        ScalarValue::DurationMicrosecond(Some(v)) => Some(v.saturating_mul(1_000)),
        ScalarValue::DurationNanosecond(Some(v)) => Some(*v),
        ScalarValue::UInt64(Some(v)) => i64::try_from(*v).ok(),
        ScalarValue::Int64(Some(v)) => Some(*v),
        _ => None,
    }
}

/// `expr` as a function an OVER node streams; an error says why it cannot stream and what
/// does.
pub(crate) fn classify(expr: &Arc<dyn WindowExpr>) -> Result<Function, String> {
    let frame = Arc::clone(expr.get_window_frame());
    let field = expr.field().map_err(|e| e.to_string())?;
    let any = expr.as_any();
    let (kind, args, call) = if let Some(plain) = any.downcast_ref::<PlainAggregateWindowExpr>() {
        aggregate(plain.get_aggregate_expr(), false, &format!("{plain:?}"))?
    } else if let Some(sliding) = any.downcast_ref::<SlidingAggregateWindowExpr>() {
        aggregate(sliding.get_aggregate_expr(), true, &format!("{sliding:?}"))?
    } else if let Some(standard) = any.downcast_ref::<StandardWindowExpr>() {
        let udf = standard
            .get_standard_func_expr()
            .as_any()
            .downcast_ref::<WindowUDFExpr>()
            .ok_or_else(|| format!("the window function {} is not streamed", expr.name()))?;
        builtin(udf, &field)?
    } else {
        return Err(format!("the window function {} is not streamed", expr.name()));
    };
    let text = if matches!(kind, Kind::Aggregate { .. } | Kind::Nth { .. }) {
        format!("{call} {}", frame_text(&frame))
    } else {
        call.clone()
    };
    // Without an ORDER BY the frame is the whole partition: the rule refuses that first.
    let start = if expr.order_by().is_empty() {
        Start::Unbounded
    } else {
        check_frame(&kind, &frame, &call)?
    };
    Ok(Function {
        kind,
        args,
        at: Vec::new(),
        range_units: None,
        frame,
        start,
        field,
        text,
    })
}

/// A function's kind, the arguments it reads per row, and how it is called (`lag(x, 2)`).
type Parts = (Kind, Vec<Arc<dyn PhysicalExpr>>, String);

fn aggregate(agg: &AggregateFunctionExpr, sliding: bool, debug: &str) -> Result<Parts, String> {
    let name = agg.fun().name().to_string();
    if agg.is_distinct() {
        return Err(format!(
            "{name}(DISTINCT ...) OVER (...) is not streamed yet: aggregate the distinct values per window with GROUP BY instead, or compute it in `volley batch`"
        ));
    }
    if debug.contains("filter: Some") {
        return Err(format!(
            "{name}(...) FILTER (WHERE ...) OVER (...) is not streamed yet: put the condition inside the aggregate ({name}(CASE WHEN condition THEN x END))"
        ));
    }
    if sliding {
        let supports = agg
            .create_sliding_accumulator()
            .map(|a| a.supports_retract_batch())
            .unwrap_or(false);
        if !supports {
            return Err(format!(
                "{name}(...) cannot drop the rows that leave a sliding frame (DataFusion has no retraction for it): give it a frame from UNBOUNDED PRECEDING, or aggregate per window with GROUP BY"
            ));
        }
    }
    let args = agg.expressions();
    let call = called(&name, &args);
    Ok((
        Kind::Aggregate {
            agg: Arc::new(agg.clone()),
            sliding,
        },
        args,
        call,
    ))
}

fn builtin(udf: &WindowUDFExpr, field: &FieldRef) -> Result<Parts, String> {
    let name = udf.fun().name().to_lowercase();
    let debug = format!("{udf:?}");
    if debug.contains("ignore_nulls: true") {
        return Err(format!(
            "{name}(...) IGNORE NULLS OVER (...) is not streamed yet: filter the NULL rows out in a subquery first, or compute it in `volley batch`"
        ));
    }
    if debug.contains("is_reversed: true") {
        return Err(format!(
            "{name}(...) OVER (...) was reordered by the planner against the event time; order every window of the query by the event time ascending"
        ));
    }
    let all = udf.args();
    let literal = |i: usize| -> Result<Option<ScalarValue>, String> {
        let Some(arg) = all.get(i) else {
            return Ok(None);
        };
        arg.downcast_ref::<Literal>()
            .map(|l| Some(l.value().clone()))
            .ok_or_else(|| format!("the {} argument of {name}(...) must be a constant", ordinal(i)))
    };
    let whole = |what: &str| {
        Err(format!(
            "{name}() OVER (...) needs {what}, which a stream never has: compute it in `volley batch`, or use ROW_NUMBER(), RANK() or DENSE_RANK(), which stream"
        ))
    };
    let first_arg = || all.first().map(Arc::clone).into_iter().collect::<Vec<_>>();
    let kind = match name.as_str() {
        "row_number" => Kind::RowNumber,
        "rank" => Kind::Rank,
        "dense_rank" => Kind::DenseRank,
        "percent_rank" | "cume_dist" => return whole("the size of the whole partition"),
        "ntile" => return whole("the size of the whole partition"),
        "lag" | "lead" => {
            let offset = match literal(1)? {
                None => 1,
                Some(v) => integer(&v)
                    .ok_or_else(|| format!("the offset of {name}(...) must be an integer"))?,
            };
            let default = match literal(2)? {
                None => ScalarValue::try_from(field.data_type()).map_err(|e| e.to_string())?,
                Some(v) if v.is_null() => {
                    ScalarValue::try_from(field.data_type()).map_err(|e| e.to_string())?
                }
                Some(v) => v.cast_to(field.data_type()).map_err(|e| {
                    format!(
                        "the default of {name}(...) does not cast to {}: {e}",
                        field.data_type()
                    )
                })?,
            };
            let offset = if name == "lag" { offset } else { -offset };
            return Ok((Kind::Shift { offset, default }, first_arg(), called(&name, all)));
        }
        "first_value" => Kind::Nth { n: 1, last: false },
        "last_value" => Kind::Nth { n: 1, last: true },
        "nth_value" => {
            let n = literal(1)?
                .and_then(|v| integer(&v))
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    "nth_value(x, n) is streamed for a constant n of 1 or more".to_string()
                })?;
            Kind::Nth {
                n: usize::try_from(n).map_err(|e| e.to_string())?,
                last: false,
            }
        }
        other => {
            return Err(format!(
                "the window function {other}() is not streamed: compute it in `volley batch`"
            ));
        }
    };
    let args = if matches!(kind, Kind::Nth { .. }) {
        first_arg()
    } else {
        Vec::new()
    };
    Ok((kind, args, called(&name, all)))
}

/// `name(arg, ...)` as SQL; DataFusion plans `count(*)` as `count(1)`.
fn called(name: &str, args: &[Arc<dyn PhysicalExpr>]) -> String {
    let shown: Vec<String> = args.iter().map(sql_text::expr).collect();
    if name == "count" && shown == ["1"] {
        return "count(*)".to_string();
    }
    format!("{name}({})", shown.join(", "))
}

fn ordinal(i: usize) -> &'static str {
    match i {
        1 => "second",
        2 => "third",
        _ => "first",
    }
}

fn integer(value: &ScalarValue) -> Option<i64> {
    match value.cast_to(&DataType::Int64).ok()? {
        ScalarValue::Int64(v) => v,
        _ => None,
    }
}

/// Where `frame` starts, when a stream can compute it: it must end at the current row or
/// before, and be ROWS or RANGE.
fn check_frame(kind: &Kind, frame: &WindowFrame, call: &str) -> Result<Start, String> {
    if !matches!(kind, Kind::Aggregate { .. } | Kind::Nth { .. }) {
        return Ok(Start::Rows(0));
    }
    let text = frame_text(frame);
    if frame.units == WindowFrameUnits::Groups {
        return Err(format!(
            "the frame {text} of {call} counts groups of peers, which is not streamed: write RANGE BETWEEN INTERVAL '...' PRECEDING AND CURRENT ROW or ROWS BETWEEN n PRECEDING AND CURRENT ROW"
        ));
    }
    if let WindowFrameBound::Following(v) = &frame.end_bound {
        let zero = !v.is_null()
            && ScalarValue::new_zero(&v.data_type())
                .map(|z| z == *v)
                .unwrap_or(false);
        if !zero {
            return Err(format!(
                "the frame {text} of {call} ends after the current row, so every row would wait for rows that have not happened yet: end the frame at CURRENT ROW (ROWS BETWEEN n PRECEDING AND CURRENT ROW), or read a later row's value with LEAD(x, n)"
            ));
        }
    }
    match &frame.start_bound {
        WindowFrameBound::Preceding(v) if v.is_null() => Ok(Start::Unbounded),
        WindowFrameBound::CurrentRow => Ok(Start::Rows(0)),
        WindowFrameBound::Following(_) => Err(format!(
            "the frame {text} of {call} starts after the current row: start it at or before the current row"
        )),
        WindowFrameBound::Preceding(v) => {
            let nanos = interval_nanos(v)
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("the frame {text} of {call} has an offset Volley cannot read"))?;
            Ok(match frame.units {
                WindowFrameUnits::Rows => Start::Rows(nanos.unsigned_abs()),
                _ => Start::Range(nanos),
            })
        }
    }
}

/// `frame`'s bounds in units of `per` nanoseconds when it is a RANGE frame whose offsets are
/// whole numbers of units with no months or days (whose length a time zone may change).
pub(crate) fn range_units(frame: &WindowFrame, per: i64) -> Option<(Option<i64>, i64)> {
    if frame.units != WindowFrameUnits::Range {
        return None;
    }
    let units = |v: &ScalarValue| -> Option<i64> {
        let nanos = match v {
            ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 && i.days == 0 => {
                i.nanoseconds
            }
            ScalarValue::DurationNanosecond(Some(_))
            | ScalarValue::DurationMicrosecond(Some(_))
            | ScalarValue::DurationMillisecond(Some(_))
            | ScalarValue::DurationSecond(Some(_)) => interval_nanos(v)?,
            _ => return None,
        };
        (nanos >= 0 && nanos % per == 0).then_some(nanos / per)
    };
    let start = match &frame.start_bound {
        WindowFrameBound::Preceding(v) if v.is_null() => None,
        WindowFrameBound::Preceding(v) => Some(units(v)?),
        WindowFrameBound::CurrentRow => Some(0),
        WindowFrameBound::Following(_) => return None,
    };
    let end = match &frame.end_bound {
        WindowFrameBound::CurrentRow => 0,
        WindowFrameBound::Preceding(v) if !v.is_null() => units(v)?,
        _ => return None,
    };
    Some((start, end))
}
