//! Recognising a tumbling window in an aggregate's GROUP BY, however the bucket is written:
//! `date_bin(<interval>, <ts>)` (`tumble(ts, interval)` is simplified to the same) or
//! `date_trunc('<unit>', <ts>)`, over a watermarked event-time column.
//!
//! `date_trunc` from `microsecond` to `week` is a fixed-width window (weeks start on Monday);
//! `month`, `quarter` and `year` are calendar windows, whose end is the start plus that many
//! calendar months. Over a column with a time zone other than UTC, days and longer units vary
//! in length (daylight saving), so `date_trunc` from `hour` up is refused there.

use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};
use chrono::{DateTime, Months, NaiveDateTime};
use datafusion::common::ScalarValue;
use datafusion::functions::datetime::date_bin::DateBinFunc;
use datafusion::functions::datetime::date_trunc::DateTruncFunc;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};

use super::late::LateGate;

/// How long a window is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSize {
    /// A fixed width, in the window column's unit.
    Fixed(i64),
    /// Calendar months (1 = month, 3 = quarter, 12 = year), in UTC.
    Months(u32),
}

/// A windowed aggregate's window: which group column, how wide, in what unit.
#[derive(Debug, Clone)]
pub struct WindowSpec {
    /// Index of the window-start column among the aggregate's group columns.
    pub group_index: usize,
    /// How long each window is.
    pub size: WindowSize,
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
    /// How long (in `unit`s of event time) a window keeps its state after it is emitted, so a
    /// late row still corrects it (the sink's `allowed_lateness`; 0: none).
    pub lateness: i64,
    /// A hop window: `size` is then its pane (gcd of slide and size), the group column the
    /// pane start, and a window merges the panes it covers when it closes.
    pub hop: Option<HopWindow>,
}

/// A hop window's slide and size, in the window column's unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HopWindow {
    /// Distance between window starts.
    pub slide: i64,
    /// Window width.
    pub size: i64,
}

impl HopWindow {
    /// The first window start holding time `ts` (starts are multiples of the slide).
    pub fn first_window(&self, ts: i64) -> i64 {
        ts.saturating_sub(self.size).div_euclid(self.slide) * self.slide + self.slide
    }

    /// The last window start holding time `ts`.
    pub fn last_window(&self, ts: i64) -> i64 {
        ts.div_euclid(self.slide) * self.slide
    }
}

impl WindowSpec {
    /// A tumbling window of group column `group_index`, `size` wide in `unit`s, over event
    /// time `column`, closed by the watermarks of `sources`; no late-row correction yet.
    pub fn tumbling(
        group_index: usize,
        size: WindowSize,
        unit: TimeUnit,
        column: String,
        sources: Vec<String>,
        display: String,
    ) -> Self {
        Self {
            group_index,
            size,
            unit,
            column,
            sources,
            gate: LateGate::new(),
            display,
            lateness: 0,
            hop: None,
        }
    }

    /// Nanoseconds per `unit`.
    pub fn nanos_per_unit(&self) -> i64 {
        nanos_per_unit(self.unit)
    }

    /// The end (exclusive) of the window starting at `start`, both in the column's unit.
    pub fn end_of(&self, start: i64) -> i64 {
        match self.size {
            WindowSize::Fixed(width) => start.saturating_add(width),
            WindowSize::Months(months) => shift_months(start, self.unit, months, true),
        }
    }

    /// Whether the window starting at `start` has closed once the watermark is `watermark`.
    pub fn closed(&self, start: i64, watermark: i64) -> bool {
        watermark == i64::MAX || self.end_of(start) <= watermark
    }

    /// The largest window start that is closed at `watermark`: rows of windows starting at or
    /// before it are late. Window starts are aligned (they come from the bucket function), so
    /// for calendar windows this is `watermark` minus the calendar size.
    pub fn closed_upto(&self, watermark: i64) -> i64 {
        if watermark == i64::MAX {
            return i64::MAX;
        }
        if let (Some(hop), WindowSize::Fixed(pane)) = (self.hop, self.size) {
            // A row is late once any window holding it has been emitted: the newest emitted
            // window starts at `newest`, so rows of its panes, and of every pane before them,
            // are.
            let newest = watermark.saturating_sub(hop.size).div_euclid(hop.slide) * hop.slide;
            return newest.saturating_add(hop.size).saturating_sub(pane);
        }
        match self.size {
            WindowSize::Fixed(width) => watermark.saturating_sub(width),
            WindowSize::Months(months) => shift_months(watermark, self.unit, months, false),
        }
    }

    /// The distance between window starts (the column's unit): a tumbling window's width, a
    /// hop window's slide; `None` for months, which have no fixed length.
    pub fn step(&self) -> Option<i64> {
        match (self.hop, self.size) {
            (Some(hop), _) => Some(hop.slide),
            (None, WindowSize::Fixed(width)) => Some(width),
            (None, WindowSize::Months(_)) => None,
        }
    }

    /// The watermark below which windows are closed for good: `watermark` less the lateness.
    pub fn final_watermark(&self, watermark: i64) -> i64 {
        if watermark == i64::MAX {
            i64::MAX
        } else {
            watermark.saturating_sub(self.lateness)
        }
    }

    /// The size as text: `60 Second` (fixed, in the column's unit) or `1 month(s)`. Part of a
    /// query's checkpointed shape, so the fixed form keeps its historic spelling.
    pub fn size_text(&self) -> String {
        if let (Some(hop), WindowSize::Fixed(pane)) = (self.hop, self.size) {
            return format!(
                "hop {} every {} {:?} (panes of {pane})",
                hop.size, hop.slide, self.unit
            );
        }
        match self.size {
            WindowSize::Fixed(width) => format!("{width} {:?}", self.unit),
            WindowSize::Months(months) => format!("{months} month(s)"),
        }
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

fn to_datetime(value: i64, unit: TimeUnit) -> Option<NaiveDateTime> {
    let per = nanos_per_unit(unit);
    let per_second = 1_000_000_000 / per;
    let secs = value.div_euclid(per_second);
    let nanos = u32::try_from(value.rem_euclid(per_second) * per).ok()?;
    DateTime::from_timestamp(secs, nanos).map(|d| d.naive_utc())
}

fn from_datetime(time: NaiveDateTime, unit: TimeUnit) -> Option<i64> {
    let utc = time.and_utc();
    let per = nanos_per_unit(unit);
    let secs = utc.timestamp().checked_mul(1_000_000_000 / per)?;
    secs.checked_add(i64::from(utc.timestamp_subsec_nanos()) / per)
}

/// `value` (in `unit`) plus or minus `months` calendar months, saturating at the ends of the
/// representable range.
fn shift_months(value: i64, unit: TimeUnit, months: u32, forward: bool) -> i64 {
    let shifted = to_datetime(value, unit).and_then(|t| {
        if forward {
            t.checked_add_months(Months::new(months))
        } else {
            t.checked_sub_months(Months::new(months))
        }
    });
    match shifted.and_then(|t| from_datetime(t, unit)) {
        Some(v) => v,
        None if forward => i64::MAX,
        None => i64::MIN,
    }
}

/// A bucket group expression, unpacked.
#[derive(Debug)]
pub struct Bucket {
    /// How long each bucket is (a fixed width in nanoseconds, or calendar months).
    pub size: BucketSize,
    /// The timestamp argument (a column of the aggregate's input, if it is one).
    pub ts: Arc<dyn PhysicalExpr>,
    /// The `date_trunc` unit, when written that way (time zones matter for those from `hour`).
    pub trunc_unit: Option<String>,
}

/// A bucket's size before the column's unit is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketSize {
    /// Nanoseconds.
    Nanos(i64),
    /// Calendar months.
    Months(u32),
}

/// Why a bucket group expression cannot be a streaming window.
#[derive(Debug)]
pub struct NotAWindow(pub String);

fn literal(args: &[Arc<dyn PhysicalExpr>], i: usize) -> Option<ScalarValue> {
    args.get(i)
        .and_then(|a| a.downcast_ref::<Literal>())
        .map(|l| l.value().clone())
}

/// Recognises `date_bin(...)` or `date_trunc(...)` among group expressions. `Ok(None)`: not a
/// bucket at all.
///
/// # Errors
/// A bucket whose size is not a constant, positive duration or a known `date_trunc` unit.
pub fn as_bucket(expr: &Arc<dyn PhysicalExpr>) -> Result<Option<Bucket>, NotAWindow> {
    let Some(func) = expr.downcast_ref::<ScalarFunctionExpr>() else {
        return Ok(None);
    };
    let inner = func.fun().inner();
    if inner.downcast_ref::<DateTruncFunc>().is_some() {
        return date_trunc(func.args()).map(Some);
    }
    if inner.downcast_ref::<DateBinFunc>().is_some() {
        return date_bin(func.args()).map(Some);
    }
    Ok(None)
}

fn date_trunc(args: &[Arc<dyn PhysicalExpr>]) -> Result<Bucket, NotAWindow> {
    let unit = match literal(args, 0) {
        Some(ScalarValue::Utf8(Some(u)) | ScalarValue::LargeUtf8(Some(u)))
        | Some(ScalarValue::Utf8View(Some(u))) => u.to_ascii_lowercase(),
        _ => {
            return Err(NotAWindow(
                "the date_trunc unit must be a constant string such as 'minute'".into(),
            ));
        }
    };
    const SECOND: i64 = 1_000_000_000;
    let size = match unit.as_str() {
        "microsecond" => BucketSize::Nanos(1_000),
        "millisecond" => BucketSize::Nanos(1_000_000),
        "second" => BucketSize::Nanos(SECOND),
        "minute" => BucketSize::Nanos(60 * SECOND),
        "hour" => BucketSize::Nanos(3_600 * SECOND),
        "day" => BucketSize::Nanos(86_400 * SECOND),
        "week" => BucketSize::Nanos(7 * 86_400 * SECOND),
        "month" => BucketSize::Months(1),
        "quarter" => BucketSize::Months(3),
        "year" => BucketSize::Months(12),
        other => {
            return Err(NotAWindow(format!(
                "date_trunc unit '{other}' is not one of microsecond, millisecond, second, minute, hour, day, week, month, quarter, year"
            )));
        }
    };
    let ts = args
        .get(1)
        .cloned()
        .ok_or_else(|| NotAWindow("date_trunc needs a timestamp argument".into()))?;
    Ok(Bucket {
        size,
        ts,
        trunc_unit: Some(unit),
    })
}

/// An interval of fixed length (days and smaller units, no months), in nanoseconds; `None`
/// for any other value, or one too long for nanoseconds in an `i64`.
pub fn fixed_interval_nanos(value: &ScalarValue) -> Option<i64> {
    const DAY: i64 = 86_400_000_000_000;
    match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => i64::from(v.days)
            .checked_mul(DAY)?
            .checked_add(v.nanoseconds),
        ScalarValue::IntervalDayTime(Some(v)) => i64::from(v.days)
            .checked_mul(DAY)?
            .checked_add(i64::from(v.milliseconds) * 1_000_000),
        _ => None,
    }
}

fn date_bin(args: &[Arc<dyn PhysicalExpr>]) -> Result<Bucket, NotAWindow> {
    let width = literal(args, 0);
    let width_nanos = match (width.as_ref().and_then(fixed_interval_nanos), width) {
        (Some(nanos), _) => nanos,
        (None, Some(other)) if !other.is_null() => {
            return Err(NotAWindow(format!(
                "window width {} is not a fixed duration (months and years vary in length); for calendar windows use date_trunc('month' | 'quarter' | 'year', ts)",
                crate::sql_text::scalar(&other)
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
    match literal(args, 2) {
        None if args.len() == 2 => {}
        Some(v)
            if v.cast_to(&DataType::Timestamp(TimeUnit::Nanosecond, None))
                .is_ok() => {}
        _ => {
            return Err(NotAWindow(
                "the window origin must be a constant timestamp".into(),
            ));
        }
    }
    let ts = args
        .get(1)
        .cloned()
        .ok_or_else(|| NotAWindow("date_bin needs a timestamp argument".into()))?;
    Ok(Bucket {
        size: BucketSize::Nanos(width_nanos),
        ts,
        trunc_unit: None,
    })
}

/// Whether a column's time zone is UTC (or it has none, which Volley reads as UTC).
pub fn is_utc(tz: Option<&str>) -> bool {
    tz.is_none_or(|tz| {
        matches!(
            tz.trim().to_ascii_uppercase().as_str(),
            "UTC" | "Z" | "+00:00" | "-00:00" | "+00" | "+0000" | "ETC/UTC" | "GMT"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(size: WindowSize, unit: TimeUnit) -> WindowSpec {
        WindowSpec {
            group_index: 0,
            size,
            unit,
            column: "ts".into(),
            sources: vec![],
            gate: LateGate::new(),
            display: "w".into(),
            lateness: 0,
            hop: None,
        }
    }

    fn ts(text: &str, unit: TimeUnit) -> i64 {
        let nanos = arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(text).unwrap();
        nanos / nanos_per_unit(unit)
    }

    #[test]
    fn calendar_windows_end_at_the_next_month_quarter_or_year() {
        for unit in [
            TimeUnit::Second,
            TimeUnit::Millisecond,
            TimeUnit::Nanosecond,
        ] {
            let month = spec(WindowSize::Months(1), unit);
            let feb = ts("2028-02-01T00:00:00Z", unit);
            assert_eq!(month.end_of(feb), ts("2028-03-01T00:00:00Z", unit));
            let quarter = spec(WindowSize::Months(3), unit);
            assert_eq!(
                quarter.end_of(ts("2026-10-01T00:00:00Z", unit)),
                ts("2027-01-01T00:00:00Z", unit)
            );
            // Closed exactly when the watermark reaches the end; a watermark on the 31st.
            assert!(!month.closed(feb, ts("2028-02-29T23:59:59Z", unit)));
            assert!(month.closed(feb, ts("2028-03-01T00:00:00Z", unit)));
            let wm = ts("2026-03-31T12:00:00Z", unit);
            let upto = month.closed_upto(wm);
            assert!(ts("2026-02-01T00:00:00Z", unit) <= upto);
            assert!(ts("2026-03-01T00:00:00Z", unit) > upto);
            assert_eq!(month.closed_upto(i64::MAX), i64::MAX);
        }
    }

    #[test]
    fn fixed_windows_close_at_start_plus_width() {
        let w = spec(WindowSize::Fixed(60), TimeUnit::Second);
        assert!(!w.closed(0, 59));
        assert!(w.closed(0, 60));
        assert_eq!(w.closed_upto(60), 0);
        assert_eq!(w.size_text(), "60 Second");
    }
}
