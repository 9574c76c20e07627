//! Recognising a tumbling window in an aggregate's GROUP BY: `date_bin(<interval>, <ts>)`
//! (`tumble(ts, interval)` is simplified to the same) over a watermarked event-time column.

use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};

use super::late::LateGate;

/// A windowed aggregate's window: which group column, how wide, in what unit.
#[derive(Debug, Clone)]
pub struct WindowSpec {
    /// Index of the window-start column among the aggregate's group columns.
    pub group_index: usize,
    /// Window width in `unit`s.
    pub width: i64,
    /// Unit of the window-start timestamps.
    pub unit: TimeUnit,
    /// The event-time column the window is computed from.
    pub column: String,
    /// Source tables whose watermark closes this window (minimum over them).
    pub sources: Vec<String>,
    /// The late-row gate in front of the partial aggregate.
    pub gate: Arc<LateGate>,
    /// The group expression, for display.
    pub display: String,
}

impl WindowSpec {
    /// Nanoseconds per `unit`.
    pub fn nanos_per_unit(&self) -> i64 {
        nanos_per_unit(self.unit)
    }
}

/// Nanoseconds in one `unit`.
pub fn nanos_per_unit(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

/// A `date_bin(interval, column[, origin])` group expression, unpacked.
#[derive(Debug)]
pub struct DateBin {
    /// Width in nanoseconds.
    pub width_nanos: i64,
    /// The timestamp argument (a column of the aggregate's input, if it is one).
    pub ts: Arc<dyn PhysicalExpr>,
    /// Origin in nanoseconds (0 = Unix epoch).
    pub origin_nanos: i64,
}

/// Why a `date_bin` group expression cannot be a streaming window.
#[derive(Debug)]
pub struct NotAWindow(pub String);

/// Recognises `date_bin(...)` among group expressions. `Ok(None)`: not a date_bin at all.
///
/// # Errors
/// A date_bin whose interval is not a fixed, positive duration.
pub fn as_date_bin(expr: &Arc<dyn PhysicalExpr>) -> Result<Option<DateBin>, NotAWindow> {
    let Some(func) = expr.downcast_ref::<ScalarFunctionExpr>() else {
        return Ok(None);
    };
    if func.name() != "date_bin" {
        return Ok(None);
    }
    let args = func.args();
    let literal = |i: usize| {
        args.get(i)
            .and_then(|a| a.downcast_ref::<Literal>())
            .map(|l| l.value().clone())
    };
    let width_nanos = match literal(0) {
        Some(ScalarValue::IntervalMonthDayNano(Some(v))) if v.months == 0 => {
            i64::from(v.days) * 86_400_000_000_000 + v.nanoseconds
        }
        Some(ScalarValue::IntervalDayTime(Some(v))) => {
            i64::from(v.days) * 86_400_000_000_000 + i64::from(v.milliseconds) * 1_000_000
        }
        Some(other) if !other.is_null() => {
            return Err(NotAWindow(format!(
                "window width {other} is not a fixed duration (months and years vary in length)"
            )));
        }
        _ => {
            return Err(NotAWindow(
                "the window width must be a constant INTERVAL".into(),
            ));
        }
    };
    if width_nanos <= 0 {
        return Err(NotAWindow("the window width must be positive".into()));
    }
    let origin_nanos = match literal(2) {
        None if args.len() == 2 => 0,
        Some(v) => match v.cast_to(&DataType::Timestamp(TimeUnit::Nanosecond, None)) {
            Ok(ScalarValue::TimestampNanosecond(Some(n), _)) => n,
            _ => {
                return Err(NotAWindow(
                    "the window origin must be a constant timestamp".into(),
                ));
            }
        },
        None => {
            return Err(NotAWindow(
                "the window origin must be a constant timestamp".into(),
            ));
        }
    };
    let ts = args
        .get(1)
        .cloned()
        .ok_or_else(|| NotAWindow("date_bin needs a timestamp argument".into()))?;
    Ok(Some(DateBin {
        width_nanos,
        ts,
        origin_nanos,
    }))
}
