//! DataFusion values and expressions as the SQL a user wrote: what every message, `explain`
//! and dead-letter reason shows instead of DataFusion's debug rendering.
//!
//! DataFusion prints an interval literal as the Rust struct holding it
//! (`IntervalMonthDayNano { months: 0, days: 0, nanoseconds: 300000000000 }`, quoted again
//! inside `IntervalMonthDayNano("…")` in logical names); here it is `INTERVAL '5 minutes'`.
//!
//! ```
//! use volley_sql::sql_text::{interval, tidy};
//! assert_eq!(interval(0, 0, 300_000_000_000), "INTERVAL '5 minutes'");
//! assert_eq!(interval(0, 1, 7_200_000_000_000), "INTERVAL '1 day 2 hours'");
//! assert_eq!(
//!     tidy("date_bin(IntervalMonthDayNano { months: 1, days: 0, nanoseconds: 0 }, ts@0)"),
//!     "date_bin(INTERVAL '1 month', ts@0)"
//! );
//! ```

use std::sync::Arc;

use arrow::util::display::array_value_to_string;
use datafusion::common::ScalarValue;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr, Column, Literal};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};

/// An interval of `months`, `days` and `nanos` as an SQL literal: `INTERVAL '1 day 2 hours'`.
pub fn interval(months: i32, days: i32, nanos: i64) -> String {
    const UNITS: [(&str, i64); 6] = [
        ("hour", 3_600_000_000_000),
        ("minute", 60_000_000_000),
        ("second", 1_000_000_000),
        ("millisecond", 1_000_000),
        ("microsecond", 1_000),
        ("nanosecond", 1),
    ];
    let mut parts = Vec::new();
    let mut part = |count: i64, unit: &str| {
        if count != 0 {
            let plural = if count.abs() == 1 { "" } else { "s" };
            parts.push(format!("{count} {unit}{plural}"));
        }
    };
    part(i64::from(months / 12), "year");
    part(i64::from(months % 12), "month");
    part(i64::from(days), "day");
    let mut rest = nanos;
    for (unit, size) in UNITS {
        part(rest / size, unit);
        rest %= size;
    }
    if parts.is_empty() {
        parts.push("0 seconds".into());
    }
    format!("INTERVAL '{}'", parts.join(" "))
}

/// A length of time as an SQL interval literal (`state_ttl`, lateness).
pub fn duration(length: std::time::Duration) -> String {
    interval(0, 0, i64::try_from(length.as_nanos()).unwrap_or(i64::MAX))
}

/// `count` of `unit` (a time column's unit) as an SQL interval literal.
pub fn span(count: i64, unit: arrow::datatypes::TimeUnit) -> String {
    use arrow::datatypes::TimeUnit;
    let per = match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    };
    interval(0, 0, count.saturating_mul(per))
}

/// `value` as an SQL literal: intervals as `INTERVAL '…'`, strings quoted, timestamps as
/// `TIMESTAMP '…'`, NULL as `NULL`.
pub fn scalar(value: &ScalarValue) -> String {
    match value {
        _ if value.is_null() => "NULL".into(),
        ScalarValue::IntervalMonthDayNano(Some(v)) => interval(v.months, v.days, v.nanoseconds),
        ScalarValue::IntervalDayTime(Some(v)) => {
            interval(0, v.days, i64::from(v.milliseconds) * 1_000_000)
        }
        ScalarValue::IntervalYearMonth(Some(months)) => interval(*months, 0, 0),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => format!("'{}'", s.replace('\'', "''")),
        ScalarValue::TimestampSecond(..)
        | ScalarValue::TimestampMillisecond(..)
        | ScalarValue::TimestampMicrosecond(..)
        | ScalarValue::TimestampNanosecond(..) => format!("TIMESTAMP '{}'", as_text(value)),
        ScalarValue::Date32(_) | ScalarValue::Date64(_) => format!("DATE '{}'", as_text(value)),
        _ => tidy(&value.to_string()),
    }
}

/// `value` as Arrow prints it (timestamps in ISO 8601).
fn as_text(value: &ScalarValue) -> String {
    value
        .to_array()
        .ok()
        .and_then(|array| array_value_to_string(&array, 0).ok())
        .unwrap_or_else(|| value.to_string())
}

/// A window's PARTITION BY as SQL (`user_id, region`), or `none: one partition`.
pub fn partition_by(keys: &[Arc<dyn PhysicalExpr>]) -> String {
    if keys.is_empty() {
        return "none: one partition".to_string();
    }
    keys.iter().map(expr).collect::<Vec<_>>().join(", ")
}

/// A physical expression as SQL: columns by name, literals as [`scalar`] writes them,
/// functions, casts and operators spelled out; anything else as DataFusion prints it,
/// [`tidy`]ed.
pub fn expr(expr: &Arc<dyn PhysicalExpr>) -> String {
    if let Some(column) = expr.downcast_ref::<Column>() {
        // An aggregate's output column is named by its expression, as DataFusion wrote it.
        return tidy(column.name());
    }
    if let Some(literal) = expr.downcast_ref::<Literal>() {
        return scalar(literal.value());
    }
    if let Some(call) = expr.downcast_ref::<ScalarFunctionExpr>() {
        let args: Vec<String> = call.args().iter().map(self::expr).collect();
        return format!("{}({})", call.name(), args.join(", "));
    }
    if let Some(cast) = expr.downcast_ref::<CastExpr>() {
        return format!("CAST({} AS {})", self::expr(cast.expr()), cast.cast_type());
    }
    if let Some(binary) = expr.downcast_ref::<BinaryExpr>() {
        return format!(
            "{} {} {}",
            self::expr(binary.left()),
            binary.op(),
            self::expr(binary.right())
        );
    }
    tidy(&expr.to_string())
}

/// `text` (a plan DataFusion rendered, an expression's name, an error) with every interval
/// DataFusion printed as a Rust struct written as an SQL literal instead.
pub fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("Interval") {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        match interval_at(rest) {
            Some((sql, len)) => {
                out.push_str(&sql);
                rest = &rest[len..];
            }
            None => {
                out.push_str("Interval");
                rest = &rest["Interval".len()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The interval DataFusion printed at the start of `text`, as SQL, and how long the printed
/// form is.
fn interval_at(text: &str) -> Option<(String, usize)> {
    let month_day_nano = |c: &mut Cursor| {
        c.lit("IntervalMonthDayNano { months: ")?;
        let months = c.int()?;
        c.lit(", days: ")?;
        let days = c.int()?;
        c.lit(", nanoseconds: ")?;
        let nanos = c.int()?;
        c.lit(" }")?;
        Some(interval(
            i32::try_from(months).ok()?,
            i32::try_from(days).ok()?,
            nanos,
        ))
    };
    let day_time = |c: &mut Cursor| {
        c.lit("IntervalDayTime { days: ")?;
        let days = c.int()?;
        c.lit(", milliseconds: ")?;
        let millis = c.int()?;
        c.lit(" }")?;
        Some(interval(
            0,
            i32::try_from(days).ok()?,
            millis.checked_mul(1_000_000)?,
        ))
    };
    let year_month = |c: &mut Cursor| Some(interval(i32::try_from(c.int()?).ok()?, 0, 0));
    let forms: [(&str, &Form); 5] = [
        // Debug of a ScalarValue (logical names): the Display form, quoted.
        ("IntervalMonthDayNano(\"", &month_day_nano),
        ("IntervalDayTime(\"", &day_time),
        ("IntervalYearMonth(\"", &year_month),
        // Display of a ScalarValue (physical plans, error messages).
        ("", &month_day_nano),
        ("", &day_time),
    ];
    forms.iter().find_map(|(quoted, value)| {
        let mut c = Cursor { rest: text };
        c.lit(quoted)?;
        let sql = value(&mut c)?;
        if !quoted.is_empty() {
            c.lit("\")")?;
        }
        Some((sql, text.len() - c.rest.len()))
    })
}

/// Reads one printed interval off a cursor, as SQL.
type Form = dyn Fn(&mut Cursor) -> Option<String>;

/// Reads literal text and integers off the front of a string.
struct Cursor<'a> {
    rest: &'a str,
}

impl Cursor<'_> {
    fn lit(&mut self, prefix: &str) -> Option<()> {
        self.rest = self.rest.strip_prefix(prefix)?;
        Some(())
    }

    fn int(&mut self) -> Option<i64> {
        let len = self
            .rest
            .char_indices()
            .find(|&(i, ch)| !(ch.is_ascii_digit() || (i == 0 && ch == '-')))
            .map_or(self.rest.len(), |(i, _)| i);
        let value = self.rest[..len].parse().ok()?;
        self.rest = &self.rest[len..];
        Some(value)
    }
}

/// The SQL name of an Arrow type as a declaration would write it (`BIGINT`, `DOUBLE`,
/// `VARCHAR`, `TIMESTAMP(3)`, `DECIMAL(10, 2)`, `INT[]` …); the Arrow name where SQL has none.
///
/// ```
/// use arrow::datatypes::{DataType, TimeUnit};
/// use volley_sql::sql_text::sql_type_name;
///
/// assert_eq!(sql_type_name(&DataType::Float64), "DOUBLE");
/// assert_eq!(sql_type_name(&DataType::Timestamp(TimeUnit::Nanosecond, None)), "TIMESTAMP");
/// assert_eq!(sql_type_name(&DataType::Timestamp(TimeUnit::Millisecond, None)), "TIMESTAMP(3)");
/// ```
pub fn sql_type_name(data_type: &arrow::datatypes::DataType) -> String {
    use arrow::datatypes::DataType::*;
    use arrow::datatypes::TimeUnit;
    let name = match data_type {
        Null => "NULL",
        Boolean => "BOOLEAN",
        Int8 => "TINYINT",
        Int16 => "SMALLINT",
        Int32 => "INT",
        Int64 => "BIGINT",
        UInt8 => "TINYINT UNSIGNED",
        UInt16 => "SMALLINT UNSIGNED",
        UInt32 => "INT UNSIGNED",
        UInt64 => "BIGINT UNSIGNED",
        Float32 => "FLOAT",
        Float64 => "DOUBLE",
        Utf8 | LargeUtf8 | Utf8View => "VARCHAR",
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => "BYTEA",
        Date32 | Date64 => "DATE",
        Decimal32(p, s) | Decimal64(p, s) | Decimal128(p, s) | Decimal256(p, s) => {
            return format!("DECIMAL({p}, {s})");
        }
        Timestamp(unit, zone) => {
            let base = match unit {
                TimeUnit::Nanosecond => "TIMESTAMP".to_string(),
                other => format!("TIMESTAMP({})", unit_digits(*other)),
            };
            return match zone {
                None => base,
                Some(zone) => format!("{base} WITH TIME ZONE ('{zone}')"),
            };
        }
        Time32(unit) | Time64(unit) => {
            return match unit {
                TimeUnit::Nanosecond => "TIME".to_string(),
                other => format!("TIME({})", unit_digits(*other)),
            };
        }
        Interval(_) => "INTERVAL",
        Dictionary(_, values) => return sql_type_name(values),
        List(item) | LargeList(item) | ListView(item) | LargeListView(item) => {
            return format!("{}[]", sql_type_name(item.data_type()));
        }
        Struct(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|f| format!("{} {}", f.name(), sql_type_name(f.data_type())))
                .collect();
            return format!("STRUCT({})", fields.join(", "));
        }
        other => return other.to_string(),
    };
    name.to_string()
}

/// Decimal digits of a time unit's fraction of a second.
fn unit_digits(unit: arrow::datatypes::TimeUnit) -> u8 {
    use arrow::datatypes::TimeUnit;
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        TimeUnit::Nanosecond => 9,
    }
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{IntervalDayTime, IntervalMonthDayNano};
    use datafusion::physical_expr::expressions::lit;

    use super::*;

    #[test]
    fn intervals_read_as_sql() {
        assert_eq!(interval(0, 0, 300_000_000_000), "INTERVAL '5 minutes'");
        assert_eq!(interval(1, 0, 0), "INTERVAL '1 month'");
        assert_eq!(interval(14, 0, 0), "INTERVAL '1 year 2 months'");
        assert_eq!(
            interval(0, 1, 7_200_000_000_000),
            "INTERVAL '1 day 2 hours'"
        );
        assert_eq!(
            interval(0, 0, 1_500_000_000),
            "INTERVAL '1 second 500 milliseconds'"
        );
        assert_eq!(interval(0, 0, -60_000_000_000), "INTERVAL '-1 minute'");
        assert_eq!(interval(0, 0, 0), "INTERVAL '0 seconds'");
        assert_eq!(
            duration(std::time::Duration::from_secs(3_600)),
            "INTERVAL '1 hour'"
        );
        assert_eq!(
            span(90, arrow::datatypes::TimeUnit::Second),
            "INTERVAL '1 minute 30 seconds'"
        );
    }

    #[test]
    fn datafusion_renderings_of_intervals_are_rewritten() {
        let mdn = ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(
            0,
            0,
            300_000_000_000,
        )));
        // As a physical plan prints it (Display), and as a logical name does (Debug).
        let physical = format!("date_bin({mdn}, ts@0) as w");
        let logical = format!("date_bin({mdn:?},clicks.ts)");
        assert!(physical.contains("IntervalMonthDayNano {"), "{physical}");
        assert!(logical.contains("IntervalMonthDayNano(\""), "{logical}");
        assert_eq!(tidy(&physical), "date_bin(INTERVAL '5 minutes', ts@0) as w");
        assert_eq!(tidy(&logical), "date_bin(INTERVAL '5 minutes',clicks.ts)");

        let day_time = ScalarValue::IntervalDayTime(Some(IntervalDayTime::new(1, 500)));
        assert_eq!(
            tidy(&format!("{day_time} and {day_time:?}")),
            "INTERVAL '1 day 500 milliseconds' and INTERVAL '1 day 500 milliseconds'"
        );
        let months = ScalarValue::IntervalYearMonth(Some(3));
        assert_eq!(tidy(&format!("{months:?}")), "INTERVAL '3 months'");
        // Text that merely mentions an interval is left as it is.
        assert_eq!(
            tidy("IntervalMonthDayNano(NULL) Interval"),
            "IntervalMonthDayNano(NULL) Interval"
        );
    }

    #[test]
    fn expressions_read_as_sql() {
        let width = ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(
            0,
            0,
            300_000_000_000,
        )));
        let call = datafusion::functions::datetime::date_bin();
        let ts: Arc<dyn PhysicalExpr> = Arc::new(Column::new("ts", 3));
        let origin = lit(ScalarValue::TimestampNanosecond(Some(0), None));
        let expr: Arc<dyn PhysicalExpr> = Arc::new(ScalarFunctionExpr::new(
            "date_bin",
            call,
            vec![lit(width), ts, origin],
            Arc::new(arrow::datatypes::Field::new(
                "w",
                arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None),
                true,
            )),
            Arc::new(datafusion::config::ConfigOptions::default()),
        ));
        assert_eq!(
            self::expr(&expr),
            "date_bin(INTERVAL '5 minutes', ts, TIMESTAMP '1970-01-01T00:00:00')"
        );
        assert_eq!(scalar(&ScalarValue::Utf8(Some("it's".into()))), "'it''s'");
    }
}
