//! How JSON numbers fill integer columns: exactly, or not at all.
//!
//! arrow-json reads a number with a fraction into an integer column by truncating it (871.47
//! became 871 in a BIGINT column). Here integer columns are decoded as `DECIMAL(38, 18)` —
//! every integer up to 20 digits and 18 fraction digits, exactly — and a value is kept only
//! when it is a whole number in the column's range; any other record is rejected, naming the
//! column. CSV needs none of this: arrow-csv refuses `871.47` as an integer itself.
//!
//! ```text
//!   JSON value   BIGINT column
//!   871          871
//!   871.0, 8.71e2, "871"   871
//!   871.47       rejected: not a whole number
//!   1e30         rejected: out of range
//! ```

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Decimal128Array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Decimal128Type, Field, SchemaRef};
use arrow::error::ArrowError;

use crate::types::sql_type_name;

/// Digits after the point an integer column is decoded with.
const SCALE: i8 = 18;

/// The type integer columns are decoded as.
const DECODED: DataType = DataType::Decimal128(38, SCALE);

/// The integer columns of a table decoded exactly (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct WholeNumbers {
    schema: SchemaRef,
    /// Integer column indexes.
    columns: Vec<usize>,
}

impl WholeNumbers {
    /// Every integer column of `schema`.
    pub(crate) fn of(schema: &SchemaRef) -> Self {
        let columns = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.data_type().is_integer())
            .map(|(i, _)| i)
            .collect();
        Self {
            schema: Arc::clone(schema),
            columns,
        }
    }

    /// None of them (a format whose decoder refuses fractions itself).
    pub(crate) fn none(schema: &SchemaRef) -> Self {
        Self {
            schema: Arc::clone(schema),
            columns: Vec::new(),
        }
    }

    /// The type the decoder fills column `index` with, when not its own.
    pub(crate) fn decode_type(&self, index: usize) -> Option<DataType> {
        self.columns.contains(&index).then_some(DECODED)
    }

    /// A decoder's error about a value it could not read as a number, told in terms of the
    /// column's integer type rather than the decimal it is decoded as.
    pub(crate) fn advise(&self, error: String) -> String {
        if self.columns.is_empty() || !error.contains("decimal") {
            return error;
        }
        error
            .replace(
                "parse decimal overflow",
                "out of range for an integer column",
            )
            .replace("expected decimal", "expected a whole number")
            .replace("to decimal", "as a whole number")
    }

    /// Turns each decoded integer column in `columns` into the table's type, marking in `bad`
    /// each row whose value is not a whole number in the type's range.
    ///
    /// # Errors
    /// Arrow failures unrelated to the values.
    pub(crate) fn convert(
        &self,
        columns: &mut [ArrayRef],
        bad: &mut [Option<String>],
    ) -> Result<(), ArrowError> {
        let unit = 10_i128.pow(SCALE.unsigned_abs().into());
        for &index in &self.columns {
            let field = self.schema.field(index);
            let raw = columns[index].as_primitive::<Decimal128Type>();
            let whole: Decimal128Array = raw
                .unary_opt(|v| (v % unit == 0).then_some(v / unit))
                .with_precision_and_scale(38, 0)?;
            let converted = cast_with_options(&whole, field.data_type(), &CastOptions::default())?;
            if converted.null_count() > raw.null_count() {
                mark(field, raw, &converted, unit, bad);
            }
            columns[index] = converted;
        }
        Ok(())
    }
}

/// Marks each row `raw` holds but `converted` lost, saying why.
fn mark(
    field: &Field,
    raw: &Decimal128Array,
    converted: &ArrayRef,
    unit: i128,
    bad: &mut [Option<String>],
) {
    let (name, type_name) = (field.name(), sql_type_name(field.data_type()));
    for (row, slot) in bad.iter_mut().enumerate() {
        if slot.is_some() || raw.is_null(row) || converted.is_valid(row) {
            continue;
        }
        let value = raw.value_as_string(row);
        let value = value.trim_end_matches('0').trim_end_matches('.');
        *slot = Some(if raw.value(row) % unit != 0 {
            format!(
                "{type_name} column '{name}': {value} is not a whole number; declare the column DOUBLE or DECIMAL to keep its fraction"
            )
        } else {
            format!("{type_name} column '{name}': {value} is out of range for {type_name}")
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use arrow::array::{Int64Array, UInt8Array};
    use arrow::datatypes::Schema;

    use super::*;
    use crate::codec::{JsonDecoder, PayloadDecoder};

    #[test]
    fn json_fractions_in_integer_columns_are_rejected_not_truncated() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("amount", DataType::Int64, true),
            Field::new("small", DataType::UInt8, true),
        ]));
        let json: Vec<&[u8]> = vec![
            br#"{"id": 1, "amount": 871}"#,
            br#"{"id": 2, "amount": 871.47}"#,
            br#"{"id": 3, "amount": 8.71e2, "small": 255}"#,
            br#"{"id": 4, "amount": "871"}"#,
            br#"{"id": 5, "small": 256}"#,
            br#"{"id": 6, "amount": -9223372036854775808, "small": -1}"#,
            br#"{"id": 7, "amount": 9223372036854775807}"#,
            br#"{"id": 8, "amount": 1e30}"#,
            br#"{"id": 9, "amount": true}"#,
            br#"{"id": 10.5}"#,
            br#"{"id": 11, "amount": 871.0, "small": null}"#,
        ];
        let (batch, rejected) = JsonDecoder::new(schema).decode(&json).unwrap();
        let ids: &Int64Array = batch.column(0).as_primitive();
        assert_eq!(ids.values().to_vec(), vec![1, 3, 4, 7, 11]);
        let amounts: &Int64Array = batch.column(1).as_primitive();
        assert_eq!(
            amounts.values().to_vec(),
            vec![871, 871, 871, i64::MAX, 871]
        );
        let small: &UInt8Array = batch.column(2).as_primitive();
        assert_eq!(small.value(1), 255);
        let reasons: Vec<(usize, &str)> = rejected
            .iter()
            .map(|r| (r.index, r.error.as_str()))
            .collect();
        assert_eq!(
            reasons.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![1, 4, 5, 7, 8, 9]
        );
        assert_eq!(
            reasons[0].1,
            "BIGINT column 'amount': 871.47 is not a whole number; declare the column DOUBLE or DECIMAL to keep its fraction"
        );
        assert!(
            reasons[1].1.contains("'small': 256 is out of range"),
            "{reasons:?}"
        );
        assert!(
            reasons[2].1.contains("'small': -1 is out of range"),
            "{reasons:?}"
        );
        assert!(reasons[3].1.contains("out of range"), "{reasons:?}");
        assert!(reasons[4].1.contains("whole number"), "{reasons:?}");
        assert!(
            reasons[5].1.contains("'id': 10.5 is not a whole number"),
            "{reasons:?}"
        );
    }
}
