//! Declared types never lose data: whether a column's type in the data (a Parquet file, a Delta
//! table) converts exactly to the type the table declares, and the SQL names both are shown by.
//!
//! DataFusion casts a file column to the declared type silently, so `amount BIGINT` over a
//! file of DOUBLE read 871.47 as 871. A conversion is allowed only when every value of the
//! found type has one value of the declared type that means the same:
//!
//! ```text
//!   found                          declared (exact)
//!   TINYINT ⊂ SMALLINT ⊂ INT ⊂ BIGINT      wider integers; unsigned into wider (un)signed
//!   integers of ≤ 24 / ≤ 53 bits           FLOAT / DOUBLE
//!   FLOAT16 ⊂ FLOAT ⊂ DOUBLE               wider floats
//!   DECIMAL(p, s)                          DECIMAL with as many integer and fraction digits
//!   VARCHAR variants, BYTEA variants       each other; BYTEA as VARCHAR (read as text, checked)
//!   TIMESTAMP(s ⊂ ms ⊂ us ⊂ ns)            a finer unit (time zones below)
//!   DATE (days)                            DATE (milliseconds)
//!   lists, structs                         element by element, field by field
//!   anything else                          refused: DOUBLE → BIGINT, BIGINT → INT, BIGINT →
//!                                          DOUBLE, VARCHAR → BIGINT, BIGINT → VARCHAR …
//! ```
//!
//! Time zones are treated as DataFusion's cast treats them: a timestamp with a zone keeps its
//! instant in another zone or without one (a zone-less timestamp is UTC), so those convert; a
//! zone-less timestamp converts to a zone only when that zone is UTC (elsewhere the cast would
//! shift each value by the zone's offset).

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use crate::error::{ConnectorError, Result};

/// Whether every value of type `found` converts to exactly one value of type `declared` with
/// the same meaning (see the module docs for the table).
///
/// ```
/// use arrow::datatypes::DataType;
/// use volley_connectors::types::converts_exactly;
///
/// assert!(converts_exactly(&DataType::Int32, &DataType::Int64));
/// assert!(converts_exactly(&DataType::Float32, &DataType::Float64));
/// assert!(!converts_exactly(&DataType::Float64, &DataType::Int64));
/// assert!(!converts_exactly(&DataType::Int64, &DataType::Float64));
/// assert!(!converts_exactly(&DataType::Int64, &DataType::Utf8));
/// ```
pub fn converts_exactly(found: &DataType, declared: &DataType) -> bool {
    use DataType::*;
    if found == declared {
        return true;
    }
    match (found, declared) {
        (Dictionary(_, values), _) => return converts_exactly(values, declared),
        (_, Dictionary(_, values)) => return converts_exactly(found, values),
        _ => {}
    }
    if let Some((precision, scale)) = decimal(declared) {
        let room = i16::from(precision) - i16::from(scale);
        if let Some((p, s)) = decimal(found) {
            return scale >= s && room >= i16::from(p) - i16::from(s);
        }
        if let Some(digits) = integer_digits(found) {
            return digits <= room;
        }
    }
    match (found, declared) {
        // A column that holds only nulls.
        (Null, _) => true,
        (Int8, Int16 | Int32 | Int64 | Float32 | Float64)
        | (Int16, Int32 | Int64 | Float32 | Float64)
        | (Int32, Int64 | Float64)
        | (UInt8, Int16 | Int32 | Int64 | UInt16 | UInt32 | UInt64 | Float32 | Float64)
        | (UInt16, Int32 | Int64 | UInt32 | UInt64 | Float32 | Float64)
        | (UInt32, Int64 | UInt64 | Float64)
        | (Float16, Float32 | Float64)
        | (Float32, Float64) => true,
        (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => true,
        // Bytes declared as text are read as text, and bytes that are not UTF-8 fail the read
        // (DataFusion reads Parquet strings written without the string annotation this way).
        (
            Binary | LargeBinary | BinaryView,
            Binary | LargeBinary | BinaryView | Utf8 | LargeUtf8 | Utf8View,
        )
        | (FixedSizeBinary(_), Binary | LargeBinary | BinaryView) => true,
        (Timestamp(from, from_tz), Timestamp(to, to_tz)) => {
            finer_or_same(*from, *to)
                && match (from_tz, to_tz) {
                    (None, Some(zone)) => is_utc(zone),
                    _ => true,
                }
        }
        (Date32, Date64) => true,
        (Time32(from), Time32(to) | Time64(to)) | (Time64(from), Time64(to)) => {
            finer_or_same(*from, *to)
        }
        (Duration(from), Duration(to)) => finer_or_same(*from, *to),
        (List(a) | LargeList(a), List(b) | LargeList(b)) => {
            converts_exactly(a.data_type(), b.data_type())
        }
        (FixedSizeList(a, n), FixedSizeList(b, m)) if n == m => {
            converts_exactly(a.data_type(), b.data_type())
        }
        (Struct(a), Struct(b)) => {
            a.len() == b.len()
                && a.iter().zip(b.iter()).all(|(x, y)| {
                    x.name() == y.name() && converts_exactly(x.data_type(), y.data_type())
                })
        }
        _ => false,
    }
}

/// Checks every declared column that `found` (the columns of one file or table) holds: each
/// must convert exactly to its declared type. Declared columns `found` lacks are left to the
/// reader (nulls, or its own error for a NOT NULL column).
///
/// `source` names where `found` came from, as in "file 'data/p.parquet'".
///
/// # Errors
/// [`ConnectorError::Config`] naming the table, the column, `source` and both types, with the
/// declaration that would read the data as it is.
pub fn check_declared(table: &str, source: &str, found: &Schema, declared: &Schema) -> Result<()> {
    for field in declared.fields() {
        let Ok(existing) = found.field_with_name(field.name()) else {
            continue;
        };
        if !converts_exactly(existing.data_type(), field.data_type()) {
            return Err(lossy(table, source, field.name(), existing, field));
        }
    }
    Ok(())
}

fn lossy(
    table: &str,
    source: &str,
    column: &str,
    found: &Field,
    declared: &Field,
) -> ConnectorError {
    let (mut is, mut wanted) = (
        sql_type_name(found.data_type()),
        sql_type_name(declared.data_type()),
    );
    if is == wanted {
        is = format!("{is} ({})", found.data_type());
        wanted = format!("{wanted} ({})", declared.data_type());
    }
    let advice = sql_type_name(found.data_type());
    ConnectorError::config(
        table,
        format!(
            "column '{column}' is {is} in {source} but declared {wanted}; converting would lose data — declare it {advice} (or CAST in the query)"
        ),
    )
}

pub use volley_sql::sql_text::sql_type_name;

/// The (precision, scale) of a decimal type.
fn decimal(data_type: &DataType) -> Option<(u8, i8)> {
    match data_type {
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => Some((*p, *s)),
        _ => None,
    }
}

/// Decimal digits the largest value of an integer type needs; `None` for other types.
fn integer_digits(data_type: &DataType) -> Option<i16> {
    Some(match data_type {
        DataType::Int8 | DataType::UInt8 => 3,
        DataType::Int16 | DataType::UInt16 => 5,
        DataType::Int32 | DataType::UInt32 => 10,
        DataType::Int64 => 19,
        DataType::UInt64 => 20,
        _ => return None,
    })
}

/// Digits of a second a unit keeps (SQL's precision).
fn digits(unit: TimeUnit) -> u8 {
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        TimeUnit::Nanosecond => 9,
    }
}

fn finer_or_same(from: TimeUnit, to: TimeUnit) -> bool {
    digits(to) >= digits(from)
}

/// Whether a time zone is UTC (zero offset, no daylight saving).
fn is_utc(zone: &str) -> bool {
    matches!(
        zone.trim().to_ascii_uppercase().as_str(),
        "UTC" | "Z" | "+00:00" | "+0000" | "+00" | "-00:00" | "ETC/UTC" | "GMT" | "ETC/GMT"
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn ts(unit: TimeUnit, zone: Option<&str>) -> DataType {
        DataType::Timestamp(unit, zone.map(Arc::from))
    }

    #[test]
    fn widening_converts_and_narrowing_or_changing_kind_does_not() {
        use DataType::*;
        let exact = [
            (Int8, Int16),
            (Int16, Int64),
            (Int32, Int64),
            (UInt32, Int64),
            (UInt64, UInt64),
            (UInt16, Float32),
            (Int32, Float64),
            (Float16, Float64),
            (Float32, Float64),
            (Utf8, Utf8View),
            (LargeUtf8, Utf8),
            (BinaryView, LargeBinary),
            (Binary, Utf8),
            (Date32, Date64),
            (Null, Int64),
            (Dictionary(Box::new(Int32), Box::new(Utf8)), Utf8View),
            (Decimal128(10, 2), Decimal128(12, 3)),
            (Int32, Decimal128(12, 2)),
        ];
        for (from, to) in exact {
            assert!(converts_exactly(&from, &to), "{from} → {to}");
        }
        let lossy = [
            (Float64, Int64),
            (Int64, Int32),
            (Int64, Float64),
            (Int32, Float32),
            (UInt64, Int64),
            (Int8, UInt8),
            (Float64, Float32),
            (Utf8, Int64),
            (Int64, Utf8),
            (Utf8, Binary),
            (Boolean, Int8),
            (Date64, Date32),
            (Decimal128(10, 2), Decimal128(10, 3)),
            (Decimal128(10, 2), Decimal128(12, 1)),
            (Decimal128(10, 2), Float64),
            (Int64, Decimal128(20, 2)),
            (Dictionary(Box::new(Int32), Box::new(Float64)), Int64),
        ];
        for (from, to) in lossy {
            assert!(!converts_exactly(&from, &to), "{from} → {to}");
        }
    }

    #[test]
    fn timestamps_convert_to_finer_units_keeping_the_instant() {
        use TimeUnit::*;
        assert!(converts_exactly(
            &ts(Millisecond, None),
            &ts(Nanosecond, None)
        ));
        assert!(converts_exactly(&ts(Second, None), &ts(Microsecond, None)));
        assert!(!converts_exactly(
            &ts(Nanosecond, None),
            &ts(Millisecond, None)
        ));
        // A zone keeps its instant anywhere; no zone means UTC.
        assert!(converts_exactly(
            &ts(Microsecond, Some("UTC")),
            &ts(Nanosecond, None)
        ));
        assert!(converts_exactly(
            &ts(Microsecond, Some("Europe/Lisbon")),
            &ts(Microsecond, Some("+00:00"))
        ));
        assert!(converts_exactly(
            &ts(Microsecond, None),
            &ts(Nanosecond, Some("UTC"))
        ));
        assert!(!converts_exactly(
            &ts(Microsecond, None),
            &ts(Microsecond, Some("America/New_York"))
        ));
        assert!(!converts_exactly(&DataType::Int64, &ts(Nanosecond, None)));
    }

    #[test]
    fn nested_types_convert_element_by_element() {
        let list = |t: DataType| DataType::List(Arc::new(Field::new("item", t, true)));
        assert!(converts_exactly(
            &list(DataType::Int32),
            &list(DataType::Int64)
        ));
        assert!(!converts_exactly(
            &list(DataType::Float64),
            &list(DataType::Int64)
        ));
        let record = |a: DataType| {
            DataType::Struct(
                vec![
                    Field::new("a", a, true),
                    Field::new("b", DataType::Utf8, true),
                ]
                .into(),
            )
        };
        assert!(converts_exactly(
            &record(DataType::Int8),
            &record(DataType::Int32)
        ));
        assert!(!converts_exactly(
            &record(DataType::Float32),
            &record(DataType::Int32)
        ));
    }

    #[test]
    fn errors_name_table_column_source_and_both_types() {
        let found = Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("amount", DataType::Float64, true),
        ]);
        let declared = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("amount", DataType::Int64, true),
            Field::new("note", DataType::Utf8, true),
        ]);
        let err = check_declared("payments", "file 'p.parquet'", &found, &declared)
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("table 'payments': column 'amount' is DOUBLE in file 'p.parquet' but declared BIGINT; converting would lose data — declare it DOUBLE (or CAST in the query)"),
            "{err}"
        );
        let same_name = Schema::new(vec![Field::new("d", DataType::Date64, true)]);
        let narrower = Schema::new(vec![Field::new("d", DataType::Date32, true)]);
        let err = check_declared("t", "the Delta table", &same_name, &narrower)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is DATE (Date64)") && err.contains("declared DATE (Date32)"),
            "{err}"
        );
    }

    #[test]
    fn sql_names_are_what_a_declaration_writes() {
        assert_eq!(sql_type_name(&DataType::Int64), "BIGINT");
        assert_eq!(sql_type_name(&DataType::Utf8View), "VARCHAR");
        assert_eq!(
            sql_type_name(&DataType::Decimal128(10, 2)),
            "DECIMAL(10, 2)"
        );
        assert_eq!(
            sql_type_name(&ts(TimeUnit::Microsecond, Some("UTC"))),
            "TIMESTAMP(6) WITH TIME ZONE ('UTC')"
        );
        assert_eq!(
            sql_type_name(&DataType::List(Arc::new(Field::new(
                "item",
                DataType::Int32,
                true
            )))),
            "INT[]"
        );
    }
}
