//! [`JsonDecoder`]: many JSON payloads (one object each) into one Arrow batch, vectorized with
//! arrow-json's decoder, with every payload that is not a valid row set aside (see
//! [`super::isolate`]).

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::json::ReaderBuilder;
use arrow::json::reader::Decoder;
use arrow::record_batch::RecordBatch;

use super::isolate::{PayloadDecoder, Rejected, RowFormat};
use super::reading::{ColumnReading, decode_read};
use super::timestamps::TimestampUnit;

/// Decodes JSON payloads into batches of one schema. Unknown fields are ignored; a missing
/// nullable field is null; a missing non-nullable field, a wrong type, a number with a
/// fraction in an integer column (not truncated) or bad JSON rejects the payload.
///
/// ```
/// use std::sync::Arc;
/// use arrow::datatypes::{DataType, Field, Schema};
/// use volley_connectors::codec::{JsonDecoder, PayloadDecoder};
///
/// let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
/// let decoder = JsonDecoder::new(schema);
/// let payloads: Vec<&[u8]> = vec![br#"{"id": 1}"#, b"not json", br#"{"id": "x"}"#, br#"{"id": 4}"#];
/// let (batch, rejected) = decoder.decode(&payloads).unwrap();
/// assert_eq!(batch.num_rows(), 2);
/// assert_eq!(rejected.iter().map(|r| r.index).collect::<Vec<_>>(), vec![1, 2]);
/// ```
#[derive(Debug, Clone)]
pub struct JsonDecoder {
    schema: SchemaRef,
    reading: ColumnReading,
}

impl JsonDecoder {
    /// A decoder for rows of `schema`; a number in a TIMESTAMP column rejects the record.
    pub fn new(schema: SchemaRef) -> Self {
        Self::with_timestamp_unit(schema, None)
    }

    /// Like [`JsonDecoder::new`], reading TIMESTAMP columns as numbers of `unit` when given
    /// (see [`super::timestamps`]).
    pub fn with_timestamp_unit(schema: SchemaRef, unit: Option<TimestampUnit>) -> Self {
        let reading = ColumnReading::json(&schema, unit);
        Self { schema, reading }
    }
}

impl PayloadDecoder for JsonDecoder {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn decode(&self, payloads: &[&[u8]]) -> Result<(RecordBatch, Vec<Rejected>), ArrowError> {
        decode_read(self, &self.reading, payloads)
    }
}

impl RowFormat for JsonDecoder {
    type Decoder = Decoder;

    fn row_schema(&self) -> &SchemaRef {
        &self.reading.decode_schema
    }

    /// Each payload holds at most one record that is kept, so the number of payloads is
    /// always enough rows.
    fn fresh(&self, rows: usize) -> Result<Decoder, ArrowError> {
        ReaderBuilder::new(self.reading.decode_schema.clone())
            .with_batch_size(rows.max(1))
            .build_decoder()
    }

    fn feed(&self, decoder: &mut Decoder, payload: &[u8]) -> Result<(), String> {
        if payload.iter().all(u8::is_ascii_whitespace) {
            return Err("empty payload: expected one JSON object".into());
        }
        let before = decoder.len();
        let used = decoder.decode(payload).map_err(|e| e.to_string())?;
        if used < payload.len() {
            return Err("more than one JSON value in one payload".into());
        }
        if decoder.has_partial_record() {
            return Err("truncated JSON: the payload ends inside a value".into());
        }
        match decoder.len() - before {
            1 => Ok(()),
            0 => Err("no JSON object in the payload".into()),
            n => Err(format!(
                "{n} JSON values in one payload; expected one object"
            )),
        }
    }

    fn flush(decoder: &mut Decoder) -> Result<Option<RecordBatch>, ArrowError> {
        decoder.flush()
    }
}

/// A JSON-lines writer that writes a NULL as `null` (arrow's default leaves the field out),
/// so every line carries every column, as readers expect.
pub fn json_lines_writer<W: std::io::Write>(
    out: W,
) -> arrow::json::Writer<W, arrow::json::writer::LineDelimited> {
    arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use arrow::array::{Array, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::codec::PayloadDecoder;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("score", DataType::Float64, true),
        ]))
    }

    fn ids(batch: &RecordBatch) -> Vec<i64> {
        let col = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        col.values().to_vec()
    }

    fn decode(payloads: &[&str]) -> (RecordBatch, Vec<Rejected>) {
        let bytes: Vec<&[u8]> = payloads.iter().map(|p| p.as_bytes()).collect();
        JsonDecoder::new(schema()).decode(&bytes).unwrap()
    }

    #[test]
    fn good_payloads_become_one_batch_in_order() {
        let (batch, rejected) = decode(&[
            r#"{"id": 1, "name": "a", "score": 0.5}"#,
            r#"{"score": 2, "id": 2, "extra": [1, 2]}"#,
            r#"{"id": 3, "name": null}"#,
        ]);
        assert!(rejected.is_empty());
        assert_eq!(ids(&batch), vec![1, 2, 3]);
        let names = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(names.value(0), "a");
        assert!(names.is_null(1) && names.is_null(2));
        let scores = batch
            .column(2)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(scores.value(1), 2.0);
    }

    #[test]
    fn every_kind_of_bad_payload_is_rejected_alone() {
        let (batch, rejected) = decode(&[
            r#"{"id": 1}"#,
            "not json", // syntax: from decode
            r#"{"id": 3}"#,
            r#"{"id": "three"}"#,     // wrong type: only flush notices
            r#"{"name": "no id"}"#,   // missing non-nullable field
            r#"{"id": 6"#,            // truncated
            r#"{"id": 7}{"id": 77}"#, // two records in one payload
            "",                       // empty (a tombstone)
            "42",                     // not an object
            r#"{"id": 10}"#,
        ]);
        assert_eq!(ids(&batch), vec![1, 3, 10]);
        let bad: Vec<usize> = rejected.iter().map(|r| r.index).collect();
        assert_eq!(bad, vec![1, 3, 4, 5, 6, 7, 8]);
        assert!(rejected.iter().all(|r| !r.error.is_empty()));
        assert!(
            rejected[4].error.contains("JSON values"),
            "{:?}",
            rejected[4]
        );
    }

    #[test]
    fn one_bad_row_in_many_is_found_by_halves() {
        let payloads: Vec<String> = (0..1000)
            .map(|i| {
                if i == 613 {
                    r#"{"id": "six hundred"}"#.to_string()
                } else {
                    format!(r#"{{"id": {i}}}"#)
                }
            })
            .collect();
        let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
        let (batch, rejected) = decode(&refs);
        let expected: Vec<i64> = (0..1000).filter(|i| *i != 613).collect();
        assert_eq!(ids(&batch), expected);
        assert_eq!(
            rejected.iter().map(|r| r.index).collect::<Vec<_>>(),
            vec![613]
        );
    }

    #[test]
    fn all_bad_or_nothing_gives_an_empty_batch() {
        let (batch, rejected) = decode(&["nope", "{"]);
        assert_eq!(batch.num_rows(), 0);
        assert_eq!(rejected.len(), 2);
        let (batch, rejected) = decode(&[]);
        assert_eq!((batch.num_rows(), rejected.len()), (0, 0));
    }

    #[test]
    fn many_rows_with_scattered_errors_keep_every_good_row() {
        let payloads: Vec<String> = (0..5000)
            .map(|i| match i % 997 {
                0 => format!(r#"{{"id": "bad{i}"}}"#),
                1 => format!(r#"{{"id": {i}"#),
                _ => format!(r#"{{"id": {i}, "score": {i}.5}}"#),
            })
            .collect();
        let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
        let (batch, rejected) = decode(&refs);
        let expected: Vec<i64> = (0..5000).filter(|i| i % 997 > 1).collect();
        assert_eq!(ids(&batch), expected);
        assert_eq!(rejected.len(), 5000 - expected.len());
    }
}
