//! [`CsvDecoder`]: many CSV payloads (one record each, no header) into one Arrow batch,
//! vectorized with arrow-csv's decoder, with every payload that is not a valid row set aside
//! (see [`super::isolate`]).

use arrow::csv::ReaderBuilder;
use arrow::csv::reader::Decoder;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::isolate::{PayloadDecoder, Rejected, RowFormat};
use super::reading::{ColumnReading, decode_read};
use super::timestamps::TimestampUnit;

/// Decodes CSV payloads, one record each, fields in the schema's column order. An empty field
/// of a nullable column is null; a wrong field count, a value that does not parse as its
/// column's type, or an empty field of a NOT NULL column rejects the payload.
///
/// ```
/// use std::sync::Arc;
/// use arrow::datatypes::{DataType, Field, Schema};
/// use volley_connectors::codec::{CsvDecoder, PayloadDecoder};
///
/// let schema = Arc::new(Schema::new(vec![
///     Field::new("id", DataType::Int64, false),
///     Field::new("city", DataType::Utf8, true),
/// ]));
/// let decoder = CsvDecoder::new(schema, b',');
/// let payloads: Vec<&[u8]> = vec![b"1,Lisbon", b"two,Porto", b"3", b"4,\"Faro, PT\"\n"];
/// let (batch, rejected) = decoder.decode(&payloads).unwrap();
/// assert_eq!(batch.num_rows(), 2);
/// assert_eq!(rejected.iter().map(|r| r.index).collect::<Vec<_>>(), vec![1, 2]);
/// ```
#[derive(Debug, Clone)]
pub struct CsvDecoder {
    schema: SchemaRef,
    delimiter: u8,
    reading: ColumnReading,
}

impl CsvDecoder {
    /// A decoder for rows of `schema` with fields separated by `delimiter`; a number in a
    /// TIMESTAMP column rejects the record.
    pub fn new(schema: SchemaRef, delimiter: u8) -> Self {
        Self::with_timestamp_unit(schema, delimiter, None)
    }

    /// Like [`CsvDecoder::new`], reading TIMESTAMP columns as numbers of `unit` when given
    /// (see [`super::timestamps`]).
    pub fn with_timestamp_unit(
        schema: SchemaRef,
        delimiter: u8,
        unit: Option<TimestampUnit>,
    ) -> Self {
        let reading = ColumnReading::csv(&schema, unit);
        Self {
            schema,
            delimiter,
            reading,
        }
    }
}

impl PayloadDecoder for CsvDecoder {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn decode(&self, payloads: &[&[u8]]) -> Result<(RecordBatch, Vec<Rejected>), ArrowError> {
        decode_read(self, &self.reading, payloads)
    }
}

impl RowFormat for CsvDecoder {
    type Decoder = Decoder;

    fn row_schema(&self) -> &SchemaRef {
        &self.reading.decode_schema
    }

    fn fresh(&self, rows: usize) -> Result<Decoder, ArrowError> {
        Ok(ReaderBuilder::new(self.reading.decode_schema.clone())
            .with_header(false)
            .with_delimiter(self.delimiter)
            .with_batch_size(rows.max(1))
            .build_decoder())
    }

    fn feed(&self, decoder: &mut Decoder, payload: &[u8]) -> Result<(), String> {
        let line = payload
            .strip_suffix(b"\n")
            .map_or(payload, |l| l.strip_suffix(b"\r").unwrap_or(l));
        if line.iter().all(u8::is_ascii_whitespace) {
            return Err("empty payload: expected one CSV record".into());
        }
        let before = decoder.capacity();
        for part in [line, b"\n".as_slice()] {
            let mut rest = part;
            while !rest.is_empty() {
                let used = decoder.decode(rest).map_err(|e| e.to_string())?;
                if used == 0 {
                    return Err("more than one CSV record in one payload".into());
                }
                rest = &rest[used..];
            }
        }
        match before - decoder.capacity() {
            1 => Ok(()),
            0 => Err("truncated CSV: the payload ends inside a quoted field".into()),
            n => Err(format!("{n} CSV records in one payload; expected one")),
        }
    }

    fn flush(decoder: &mut Decoder) -> Result<Option<RecordBatch>, ArrowError> {
        decoder.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use arrow::array::{Array, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("score", DataType::Float64, true),
        ]))
    }

    fn decode(payloads: &[&str]) -> (RecordBatch, Vec<Rejected>) {
        let bytes: Vec<&[u8]> = payloads.iter().map(|p| p.as_bytes()).collect();
        CsvDecoder::new(schema(), b',').decode(&bytes).unwrap()
    }

    fn ids(batch: &RecordBatch) -> Vec<i64> {
        let col = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        col.values().to_vec()
    }

    #[test]
    fn good_records_become_one_batch_in_order() {
        let (batch, rejected) = decode(&["1,a,0.5", "2,,2\n", "3,\"c, quoted\",\r\n"]);
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(ids(&batch), vec![1, 2, 3]);
        let names = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(names.value(0), "a");
        assert!(names.is_null(1));
        assert_eq!(names.value(2), "c, quoted");
        let scores = batch
            .column(2)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(scores.value(1), 2.0);
        assert!(scores.is_null(2));
    }

    #[test]
    fn every_kind_of_bad_record_is_rejected_alone() {
        let (batch, rejected) = decode(&[
            "1,a,1",
            "two,b,2",      // not an integer: only flush notices
            "3,c",          // too few fields
            "4,d,4,extra",  // too many
            "",             // empty (a tombstone)
            ",e,5",         // NOT NULL id missing
            "7,\"open,7",   // unterminated quote
            "8,h,8\n9,i,9", // two records
            "10,j,10",
        ]);
        assert_eq!(ids(&batch), vec![1, 10]);
        let bad: Vec<usize> = rejected.iter().map(|r| r.index).collect();
        assert_eq!(bad, vec![1, 2, 3, 4, 5, 6, 7]);
        assert!(rejected.iter().all(|r| !r.error.is_empty()));
    }

    #[test]
    fn one_bad_row_in_many_is_found_by_halves() {
        let payloads: Vec<String> = (0..1000)
            .map(|i| {
                if i == 389 {
                    "x,y,z".to_string()
                } else {
                    format!("{i},n{i},{i}.25")
                }
            })
            .collect();
        let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
        let (batch, rejected) = decode(&refs);
        assert_eq!(
            ids(&batch),
            (0..1000).filter(|i| *i != 389).collect::<Vec<i64>>()
        );
        assert_eq!(
            rejected.iter().map(|r| r.index).collect::<Vec<_>>(),
            vec![389]
        );
    }
}
