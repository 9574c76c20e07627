//! How text payloads fill TIMESTAMP columns: never by guessing what a number means.
//!
//! arrow-json reads a JSON number into a TIMESTAMP column as a count of the column's own unit,
//! so epoch milliseconds became dates in January 1970. Here a number is read as a time only
//! when the table says what it counts (`timestamp_unit` `s`, `ms`, `us` or `ns`); otherwise the
//! record is rejected with that advice. With a unit declared, the column holds numbers (a
//! timestamp string there is rejected), scaled to the column's unit.
//!
//! ```text
//!   unit declared?   CSV field / JSON value        decoded as   then
//!   no               '2026-01-01T00:00:00' / "…"   TIMESTAMP    (CSV) / text, parsed (JSON)
//!   no               1767225600000                 rejected: a number needs 'timestamp_unit'
//!   yes ('ms')       1767225600000                 BIGINT       × 1 ms, in the column's unit
//! ```

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, PrimitiveArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{
    DataType, Int64Type, SchemaRef, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use arrow::error::ArrowError;

/// What a number in a TIMESTAMP column counts (the `timestamp_unit` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampUnit {
    /// Seconds since 1970-01-01 UTC.
    Second,
    /// Milliseconds.
    Millisecond,
    /// Microseconds.
    Microsecond,
    /// Nanoseconds.
    Nanosecond,
}

/// What `timestamp_unit` accepts, for option errors.
pub const TIMESTAMP_UNIT_EXPECTED: &str =
    "'s', 'ms', 'us' or 'ns': what a number in a TIMESTAMP column counts since 1970-01-01 UTC";

/// The `timestamp_unit` option, for kinds that decode text (CSV and JSON files, Kafka).
pub const TIMESTAMP_UNIT_OPTION: volley_sql::OptionSpec = volley_sql::OptionSpec {
    name: "timestamp_unit",
    expected: TIMESTAMP_UNIT_EXPECTED,
};

/// Reads a table's `timestamp_unit` option.
///
/// # Errors
/// [`volley_sql::SqlError::BadOption`] naming the table and the option.
pub fn timestamp_unit(
    options: &volley_sql::TableOptions,
) -> Result<Option<TimestampUnit>, volley_sql::SqlError> {
    match options.get("timestamp_unit") {
        None => Ok(None),
        Some(text) => TimestampUnit::parse(text)
            .map(Some)
            .ok_or_else(|| options.bad("timestamp_unit", text, TIMESTAMP_UNIT_EXPECTED)),
    }
}

impl TimestampUnit {
    /// Parses `s`, `ms`, `us`, `ns` (or `seconds`, `milliseconds`, …).
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "s" | "second" | "seconds" => Self::Second,
            "ms" | "millisecond" | "milliseconds" => Self::Millisecond,
            "us" | "microsecond" | "microseconds" => Self::Microsecond,
            "ns" | "nanosecond" | "nanoseconds" => Self::Nanosecond,
            _ => return None,
        })
    }

    fn nanos(self) -> i64 {
        match self {
            Self::Second => 1_000_000_000,
            Self::Millisecond => 1_000_000,
            Self::Microsecond => 1_000,
            Self::Nanosecond => 1,
        }
    }
}

fn unit_nanos(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

/// The advice a rejected number in a TIMESTAMP column gets.
pub const NEEDS_UNIT: &str = "a number in a TIMESTAMP column is not read as a time unless the table says what it counts: OPTIONS ('timestamp_unit' 'ms') (or 's', 'us', 'ns')";

/// How a text format decodes TIMESTAMP columns, and turns them into the table's type.
#[derive(Debug, Clone)]
pub(crate) struct TimestampReading {
    /// The table's schema.
    schema: SchemaRef,
    /// TIMESTAMP column indexes, with their type in the table.
    columns: Vec<(usize, DataType)>,
    mode: Mode,
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// The decoder fills TIMESTAMP columns itself and refuses numbers (CSV).
    Native,
    /// The decoder fills them as text (no number allowed), parsed here (JSON).
    Text,
    /// The decoder fills them as BIGINT, scaled here from the declared unit.
    Numbers(TimestampUnit),
}

impl TimestampReading {
    /// For a format whose decoder parses timestamp text itself and refuses numbers (CSV).
    pub(crate) fn native_text(schema: &SchemaRef, unit: Option<TimestampUnit>) -> Self {
        Self::new(schema, unit.map_or(Mode::Native, Mode::Numbers))
    }

    /// For a format whose decoder would take a number as the column's own unit (JSON).
    pub(crate) fn typed_values(schema: &SchemaRef, unit: Option<TimestampUnit>) -> Self {
        Self::new(schema, unit.map_or(Mode::Text, Mode::Numbers))
    }

    fn new(schema: &SchemaRef, mode: Mode) -> Self {
        let columns: Vec<(usize, DataType)> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| matches!(f.data_type(), DataType::Timestamp(_, _)))
            .map(|(i, f)| (i, f.data_type().clone()))
            .collect();
        Self {
            schema: Arc::clone(schema),
            columns,
            mode,
        }
    }

    /// The type the decoder fills column `index` with, when not its own.
    pub(crate) fn decode_type(&self, index: usize) -> Option<DataType> {
        if !self.columns.iter().any(|(i, _)| *i == index) {
            return None;
        }
        match self.mode {
            Mode::Native => None,
            Mode::Text => Some(DataType::Utf8),
            Mode::Numbers(_) => Some(DataType::Int64),
        }
    }

    /// Whether an error from the decoder is about a number where a timestamp was expected:
    /// then the record gets [`NEEDS_UNIT`] as advice.
    pub(crate) fn advise(&self, error: String) -> String {
        let about_time = self.columns.iter().any(|(i, _)| {
            let name = self.schema.field(*i).name();
            error.contains(&format!("'{name}'")) || error.contains("timestamp")
        });
        match self.mode {
            Mode::Native | Mode::Text if about_time && error_has_number(&error) => {
                format!("{error}; {NEEDS_UNIT}")
            }
            _ => error,
        }
    }

    /// Turns each decoded TIMESTAMP column in `columns` into the table's type, marking in
    /// `bad` each row that holds no valid time.
    ///
    /// # Errors
    /// Arrow failures unrelated to the values.
    pub(crate) fn convert(
        &self,
        columns: &mut [ArrayRef],
        bad: &mut [Option<String>],
    ) -> Result<(), ArrowError> {
        if matches!(self.mode, Mode::Native) {
            return Ok(());
        }
        for (index, target) in &self.columns {
            let name = self.schema.field(*index).name();
            let raw = &columns[*index];
            let converted = match self.mode {
                Mode::Numbers(unit) => scale(raw.as_primitive::<Int64Type>(), unit, target),
                _ => cast_with_options(raw, target, &CastOptions::default())?,
            };
            if converted.null_count() > raw.null_count() {
                for (row, slot) in bad.iter_mut().enumerate() {
                    if raw.is_valid(row) && converted.is_null(row) && slot.is_none() {
                        let value = arrow::util::display::array_value_to_string(raw, row)
                            .unwrap_or_default();
                        *slot = Some(match self.mode {
                            Mode::Numbers(_) => format!(
                                "TIMESTAMP column '{name}': {value} is out of range for {target}"
                            ),
                            _ if value.trim().parse::<f64>().is_ok() => format!(
                                "TIMESTAMP column '{name}': {value} is a number; {NEEDS_UNIT}"
                            ),
                            _ => format!(
                                "TIMESTAMP column '{name}': '{value}' is not a timestamp (expected text such as '2026-01-01T00:00:00Z')"
                            ),
                        });
                    }
                }
            }
            columns[*index] = converted;
        }
        Ok(())
    }
}

fn error_has_number(error: &str) -> bool {
    error
        .split(|c: char| !c.is_ascii_digit() && c != '-' && c != '.')
        .any(|token| token.len() >= 6 && token.parse::<f64>().is_ok())
}

/// `values` counted in `unit`, in `target`'s unit (NULL where out of range).
fn scale(values: &PrimitiveArray<Int64Type>, unit: TimestampUnit, target: &DataType) -> ArrayRef {
    let DataType::Timestamp(to, tz) = target else {
        return Arc::new(values.clone());
    };
    let (from, to_nanos) = (unit.nanos(), unit_nanos(*to));
    let scaled: Int64Array = if from >= to_nanos {
        let factor = from / to_nanos;
        values.unary_opt(|v| v.checked_mul(factor))
    } else {
        let divisor = to_nanos / from;
        values.unary(|v| v.div_euclid(divisor))
    };
    let tz = tz.clone();
    match to {
        TimeUnit::Second => Arc::new(
            scaled
                .reinterpret_cast::<TimestampSecondType>()
                .with_timezone_opt(tz),
        ),
        TimeUnit::Millisecond => Arc::new(
            scaled
                .reinterpret_cast::<TimestampMillisecondType>()
                .with_timezone_opt(tz),
        ),
        TimeUnit::Microsecond => Arc::new(
            scaled
                .reinterpret_cast::<TimestampMicrosecondType>()
                .with_timezone_opt(tz),
        ),
        TimeUnit::Nanosecond => Arc::new(
            scaled
                .reinterpret_cast::<TimestampNanosecondType>()
                .with_timezone_opt(tz),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use arrow::array::TimestampMillisecondArray;
    use arrow::datatypes::{Field, Schema};
    use arrow::record_batch::RecordBatch;

    use super::*;

    use crate::codec::{CsvDecoder, JsonDecoder, PayloadDecoder};

    fn event_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        ]))
    }

    fn times(batch: &RecordBatch) -> Vec<Option<i64>> {
        let ts = batch
            .column(1)
            .as_any()
            .downcast_ref::<arrow::array::TimestampNanosecondArray>()
            .unwrap();
        ts.iter().collect()
    }

    const JAN1: i64 = 1_767_225_600_000_000_000;

    #[test]
    fn epoch_millis_are_refused_unless_the_unit_is_declared() {
        let json: Vec<&[u8]> = vec![
            br#"{"id": 1, "ts": "2026-01-01T00:00:00Z"}"#,
            br#"{"id": 2, "ts": 1767225600000}"#,
            br#"{"id": 3, "ts": "yesterday"}"#,
            br#"{"id": 4, "ts": null}"#,
        ];
        let (batch, rejected) = JsonDecoder::new(event_schema()).decode(&json).unwrap();
        assert_eq!(times(&batch), vec![Some(JAN1), None]);
        assert_eq!(
            rejected.iter().map(|r| r.index).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(rejected[0].error.contains("timestamp_unit"), "{rejected:?}");
        assert!(
            rejected[1].error.contains("'yesterday' is not a timestamp"),
            "{rejected:?}"
        );

        let ms = JsonDecoder::with_timestamp_unit(event_schema(), Some(TimestampUnit::Millisecond));
        let (batch, rejected) = ms.decode(&json[1..2]).unwrap();
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(times(&batch), vec![Some(JAN1)]);

        let csv: Vec<&[u8]> = vec![b"1,2026-01-01T00:00:00Z", b"2,1767225600000", b"3,"];
        let (batch, rejected) = CsvDecoder::new(event_schema(), b',').decode(&csv).unwrap();
        assert_eq!(times(&batch), vec![Some(JAN1), None]);
        assert_eq!(rejected.len(), 1);
        assert!(rejected[0].error.contains("timestamp_unit"), "{rejected:?}");
        let secs =
            CsvDecoder::with_timestamp_unit(event_schema(), b',', Some(TimestampUnit::Second));
        let (batch, rejected) = secs.decode(&[b"2,1767225600".as_slice()]).unwrap();
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(times(&batch), vec![Some(JAN1)]);
    }

    #[test]
    fn units_parse() {
        assert_eq!(TimestampUnit::parse("ms"), Some(TimestampUnit::Millisecond));
        assert_eq!(
            TimestampUnit::parse(" Seconds "),
            Some(TimestampUnit::Second)
        );
        assert_eq!(TimestampUnit::parse("days"), None);
    }

    #[test]
    fn numbers_scale_to_the_column_unit() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        )]));
        let reading = TimestampReading::typed_values(&schema, Some(TimestampUnit::Second));
        assert_eq!(reading.decode_type(0), Some(DataType::Int64));
        let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![
            Some(1_767_225_600),
            None,
            Some(i64::MAX),
        ]))];
        let mut bad = vec![None; 3];
        reading.convert(&mut columns, &mut bad).unwrap();
        let ts = columns[0]
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        assert_eq!(ts.value(0), 1_767_225_600_000);
        assert!(ts.is_null(1));
        assert!(bad[0].is_none() && bad[1].is_none());
        let rejected = bad[2].as_deref().unwrap_or_default();
        assert!(rejected.contains("out of range"), "{rejected}");
    }
}
