//! `hop(ts, slide, size)`: the starts of every hopping (sliding) window that holds `ts`.
//!
//! A hop window of width `size` starts every `slide` (aligned to the Unix epoch), so a row
//! belongs to `size / slide` windows. `hop` returns their starts, oldest first, as a list;
//! unnested in a subquery it gives one row per (row, window), which any SQL engine then groups:
//!
//! ```sql
//! SELECT w, cell, count(*) AS n
//! FROM (SELECT unnest(hop(event_time, INTERVAL '1 minute', INTERVAL '10 minutes')) AS w,
//!              geohash(lat, lon, 6) AS cell
//!       FROM rides) AS t
//! GROUP BY w, cell
//! ```
//!
//! The streaming engine does not copy rows into every window: it plans the same query with
//! [`hop_pane_udf`] in place of `hop`, which puts each row in its one pane (a tumbling window
//! of width gcd(slide, size)), and merges a window's panes when it closes. A NULL time is in
//! no window (an empty list), in both.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, ListArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Int64Type, IntervalUnit, TimeUnit};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// What the function returns per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HopOutput {
    /// `hop`: the start of every window holding the row.
    Windows,
    /// `hop_pane`: the start of the row's pane, alone in a list.
    Pane,
}

/// `hop(ts, slide, size)` (or its streaming form, `hop_pane`).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HopFunc {
    signature: Signature,
    output: HopOutput,
}

impl HopFunc {
    /// The function returning `output`.
    pub fn new(output: HopOutput) -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
            output,
        }
    }

    /// What it returns.
    pub fn output(&self) -> HopOutput {
        self.output
    }
}

/// The `hop(ts, slide, size)` UDF.
pub fn hop_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(HopFunc::new(HopOutput::Windows))
}

/// The streaming form of `hop`: each row's pane start, alone in a list.
pub fn hop_pane_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(HopFunc::new(HopOutput::Pane))
}

/// `slide` and `size` in `unit`s, and their gcd: the pane width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HopSizes {
    /// Distance between window starts.
    pub slide: i64,
    /// Window width.
    pub size: i64,
    /// gcd(slide, size).
    pub pane: i64,
}

impl HopSizes {
    /// Checked sizes: both positive.
    ///
    /// # Errors
    /// A slide or size that is not positive.
    pub fn new(slide: i64, size: i64) -> std::result::Result<Self, String> {
        if slide <= 0 || size <= 0 {
            return Err(format!(
                "hop(ts, slide, size) needs a positive slide and size, got {slide} and {size}"
            ));
        }
        Ok(Self {
            slide,
            size,
            pane: gcd(slide, size),
        })
    }

    /// The first window start holding `ts`.
    pub fn first_window(&self, ts: i64) -> i64 {
        (ts.saturating_sub(self.size)).div_euclid(self.slide) * self.slide + self.slide
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Nanoseconds in one `unit`.
fn nanos_per(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

/// An interval literal as a whole number of `unit`s.
///
/// # Errors
/// Months (not a fixed length), a value finer than `unit`, a non-literal.
pub fn interval_in(
    value: &ScalarValue,
    unit: TimeUnit,
    what: &str,
) -> std::result::Result<i64, String> {
    let nanos: i128 = match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            i128::from(v.days) * 86_400_000_000_000 + i128::from(v.nanoseconds)
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            i128::from(v.days) * 86_400_000_000_000 + i128::from(v.milliseconds) * 1_000_000
        }
        ScalarValue::IntervalMonthDayNano(Some(_)) | ScalarValue::IntervalYearMonth(Some(_)) => {
            return Err(format!(
                "hop: the {what} is in months, which have no fixed length; give it in days or less"
            ));
        }
        other => {
            return Err(format!(
                "hop: the {what} must be an INTERVAL literal, got {other} ({})",
                other.data_type()
            ));
        }
    };
    let per = i128::from(nanos_per(unit));
    if nanos % per != 0 {
        return Err(format!(
            "hop: the {what} is finer than the time column's {unit:?} precision"
        ));
    }
    i64::try_from(nanos / per).map_err(|_| format!("hop: the {what} is too long"))
}

impl ScalarUDFImpl for HopFunc {
    fn name(&self) -> &str {
        match self.output {
            HopOutput::Windows => "hop",
            HopOutput::Pane => "hop_pane",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [ts, slide, size] = arg_types else {
            return plan_err!(
                "hop expects 3 arguments (ts, slide, size), got {}",
                arg_types.len()
            );
        };
        if !matches!(ts, DataType::Timestamp(_, _)) {
            return plan_err!("hop(ts, slide, size): ts must be a TIMESTAMP, got {ts}");
        }
        for (what, t) in [("slide", slide), ("size", size)] {
            if !matches!(t, DataType::Interval(_)) {
                return plan_err!("hop(ts, slide, size): {what} must be an INTERVAL, got {t}");
            }
        }
        Ok(vec![
            ts.clone(),
            DataType::Interval(IntervalUnit::MonthDayNano),
            DataType::Interval(IntervalUnit::MonthDayNano),
        ])
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.first() {
            Some(ts @ DataType::Timestamp(_, _)) => Ok(DataType::List(Arc::new(Field::new(
                "item",
                ts.clone(),
                true,
            )))),
            Some(other) => plan_err!("hop(ts, slide, size): ts must be a TIMESTAMP, got {other}"),
            None => plan_err!("hop(ts, slide, size) needs its arguments"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [ts, slide, size] = args.args.as_slice() else {
            return exec_err!("hop expects 3 arguments");
        };
        let DataType::Timestamp(unit, tz) = ts.data_type() else {
            return exec_err!("hop(ts, slide, size): ts must be a TIMESTAMP");
        };
        let literal = |v: &ColumnarValue, what: &str| match v {
            ColumnarValue::Scalar(s) => interval_in(s, unit, what),
            ColumnarValue::Array(_) => Err(format!("hop: the {what} must be an INTERVAL literal")),
        };
        let sizes = literal(slide, "slide")
            .and_then(|slide| Ok((slide, literal(size, "size")?)))
            .and_then(|(slide, size)| HopSizes::new(slide, size));
        let sizes = match sizes {
            Ok(sizes) => sizes,
            Err(why) => return exec_err!("{why}"),
        };
        let rows = ts.to_array(args.number_rows)?;
        let as_int = arrow::compute::cast(&rows, &DataType::Int64)?;
        let times = as_int.as_primitive::<Int64Type>();
        let (offsets, starts) = match self.output {
            HopOutput::Windows => windows(times, sizes),
            HopOutput::Pane => panes(times, sizes),
        };
        let item = DataType::Timestamp(unit, tz.clone());
        let values: ArrayRef = arrow::compute::cast(&starts, &item)?;
        let list = ListArray::try_new(
            Arc::new(Field::new("item", item, true)),
            offsets,
            values,
            None,
        )?;
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
}

/// Every window start of each time, oldest first (none for NULL).
fn windows(times: &Int64Array, sizes: HopSizes) -> (OffsetBuffer<i32>, ArrayRef) {
    let per_row = usize::try_from(sizes.size.div_euclid(sizes.slide) + 1).unwrap_or(1);
    let mut starts = Vec::with_capacity(times.len() * per_row);
    let mut lengths = Vec::with_capacity(times.len());
    for i in 0..times.len() {
        if times.is_null(i) {
            lengths.push(0);
            continue;
        }
        let ts = times.value(i);
        let before = starts.len();
        let mut start = sizes.first_window(ts);
        while start <= ts {
            starts.push(start);
            start += sizes.slide;
        }
        lengths.push(starts.len() - before);
    }
    (
        OffsetBuffer::from_lengths(lengths),
        Arc::new(Int64Array::from(starts)),
    )
}

/// Each time's pane start, alone (none for NULL).
fn panes(times: &Int64Array, sizes: HopSizes) -> (OffsetBuffer<i32>, ArrayRef) {
    let starts: Int64Array = arrow::compute::kernels::arity::unary(times, |ts: i64| {
        ts.div_euclid(sizes.pane) * sizes.pane
    });
    let lengths = (0..times.len()).map(|i| usize::from(times.is_valid(i)));
    let values: Int64Array = starts.iter().flatten().map(Some).collect();
    (OffsetBuffer::from_lengths(lengths), Arc::new(values))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use datafusion::prelude::SessionContext;

    async fn rows(sql: &str) -> Vec<String> {
        let ctx = SessionContext::new();
        ctx.register_udf(hop_udf());
        ctx.register_udf(hop_pane_udf());
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        text.lines()
            .skip(3)
            .filter(|l| !l.starts_with('+'))
            .map(str::to_string)
            .collect()
    }

    #[tokio::test]
    async fn windows_and_panes_of_a_time() {
        // 10-minute windows every 4 minutes: panes of 2 minutes.
        let out = rows(
            "SELECT hop(TIMESTAMP '2026-01-01 00:09:00', INTERVAL '4 minutes', INTERVAL '10 minutes') AS w,
                    hop_pane(TIMESTAMP '2026-01-01 00:09:00', INTERVAL '4 minutes', INTERVAL '10 minutes') AS p",
        )
        .await;
        assert_eq!(out.len(), 1);
        assert!(
            out[0].contains("[2026-01-01T00:00:00, 2026-01-01T00:04:00, 2026-01-01T00:08:00]")
                && out[0].contains("[2026-01-01T00:08:00]"),
            "{out:?}"
        );
    }

    #[test]
    fn a_time_on_a_window_edge_starts_a_window_and_leaves_one() {
        let sizes = HopSizes::new(5, 10).unwrap();
        let times = Int64Array::from(vec![Some(10), Some(-1), None, Some(14)]);
        let (offsets, starts) = windows(&times, sizes);
        let starts = starts.as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(offsets.lengths().collect::<Vec<_>>(), [2, 2, 0, 2]);
        assert_eq!(starts, [5, 10, -10, -5, 5, 10]);
        let (offsets, panes) = panes(&times, sizes);
        assert_eq!(offsets.lengths().collect::<Vec<_>>(), [1, 1, 0, 1]);
        assert_eq!(
            panes.as_primitive::<Int64Type>().values().to_vec(),
            [10, -5, 10]
        );
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(HopSizes::new(0, 10).is_err());
        let months = ScalarValue::IntervalMonthDayNano(Some(
            arrow::datatypes::IntervalMonthDayNano::new(1, 0, 0),
        ));
        assert!(
            interval_in(&months, TimeUnit::Second, "size")
                .unwrap_err()
                .contains("months")
        );
    }
}
