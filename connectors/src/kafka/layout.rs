//! Which columns of a Kafka table come from the message value and which from its metadata,
//! and how one poll's messages become a batch of the table's schema.
//!
//! Columns named `_key`, `_partition`, `_offset` and `_timestamp` are filled from the
//! message's key, partition, offset and Kafka timestamp (cast to the declared type); every
//! other column comes from the value (`format` 'json': a field of the object; 'raw': the
//! column `value` is the whole value).

use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryArray, Int32Array, Int64Array, TimestampMillisecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use super::options::KafkaFormat;
use crate::codec::{CsvDecoder, JsonDecoder, PayloadDecoder, TimestampUnit};
use crate::error::{ConnectorError, Result};
use crate::traits::RejectedRecord;

/// Metadata column names.
pub const KEY: &str = "_key";
/// The partition column.
pub const PARTITION: &str = "_partition";
/// The offset column.
pub const OFFSET: &str = "_offset";
/// The Kafka timestamp column (producer create time or broker append time).
pub const TIMESTAMP: &str = "_timestamp";
/// The value column of `format` 'raw'.
pub const VALUE: &str = "value";

/// One message as read, owned.
#[derive(Debug, Clone)]
pub struct Message {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes (`None`: a tombstone).
    pub payload: Option<Vec<u8>>,
    /// Kafka timestamp (ms since the Unix epoch).
    pub timestamp_ms: Option<i64>,
}

#[derive(Debug, Clone)]
enum Column {
    Key,
    Partition,
    Offset,
    Timestamp,
    Value,
    /// Column `i` of the decoded value batch.
    Field(usize),
}

/// The mapping from messages to rows of a table's schema.
#[derive(Debug, Clone)]
pub struct Layout {
    schema: SchemaRef,
    columns: Vec<Column>,
    decoder: Option<Arc<dyn PayloadDecoder>>,
}

impl Layout {
    /// The layout of `schema` for `format`.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] naming `table` when a metadata column has a type it cannot
    /// be cast to, or a 'raw' table has columns other than `value` and metadata.
    pub fn new(
        table: &str,
        schema: SchemaRef,
        format: KafkaFormat,
        timestamp_unit: Option<TimestampUnit>,
    ) -> Result<Self> {
        let mut columns = Vec::with_capacity(schema.fields().len());
        let mut value_fields = Vec::new();
        for field in schema.fields() {
            let (column, natural) = match field.name().as_str() {
                KEY => (Column::Key, DataType::Binary),
                PARTITION => (Column::Partition, DataType::Int32),
                OFFSET => (Column::Offset, DataType::Int64),
                TIMESTAMP => (
                    Column::Timestamp,
                    DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None),
                ),
                VALUE if format == KafkaFormat::Raw => (Column::Value, DataType::Binary),
                _ if format == KafkaFormat::Raw => {
                    return Err(ConnectorError::config(
                        table,
                        format!(
                            "column '{}': a 'raw' Kafka table has a column 'value' and metadata columns ({KEY}, {PARTITION}, {OFFSET}, {TIMESTAMP}) only",
                            field.name()
                        ),
                    ));
                }
                _ => {
                    value_fields.push(field.as_ref().clone());
                    columns.push(Column::Field(value_fields.len() - 1));
                    continue;
                }
            };
            if !arrow::compute::can_cast_types(&natural, field.data_type()) {
                return Err(ConnectorError::config(
                    table,
                    format!(
                        "column '{}' is {}, but Kafka gives {natural}, which cannot be cast to it",
                        field.name(),
                        field.data_type()
                    ),
                ));
            }
            columns.push(column);
        }
        let values = Arc::new(Schema::new(value_fields));
        let decoder: Option<Arc<dyn PayloadDecoder>> = match format {
            KafkaFormat::Json => Some(Arc::new(JsonDecoder::with_timestamp_unit(
                values,
                timestamp_unit,
            ))),
            KafkaFormat::Csv { delimiter } => Some(Arc::new(CsvDecoder::with_timestamp_unit(
                values,
                delimiter,
                timestamp_unit,
            ))),
            KafkaFormat::Raw => None,
        };
        Ok(Self {
            schema,
            columns,
            decoder,
        })
    }

    /// The table's schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes `messages` into one batch of the table's schema (good messages, in order) and
    /// the messages that could not be decoded (each with its error).
    ///
    /// # Errors
    /// Arrow failures unrelated to the messages (a bug).
    pub fn decode(&self, messages: &[Message]) -> Result<(RecordBatch, Vec<RejectedRecord>)> {
        let internal = |e: arrow::error::ArrowError| {
            ConnectorError::Internal(format!("building a Kafka batch: {e}"))
        };
        let mut rejected = Vec::new();
        // First the checks that need no decoding: tombstones, and UTF-8 where a key or value
        // column is text (a cast of the whole column would fail for one bad message).
        let mut candidates: Vec<&Message> = Vec::with_capacity(messages.len());
        for m in messages {
            match self.precheck(m) {
                Ok(()) => candidates.push(m),
                Err(error) => rejected.push(reject(m, &error)),
            }
        }
        let (values, good): (Option<RecordBatch>, Vec<&Message>) = match &self.decoder {
            Some(decoder) => {
                let payloads: Vec<&[u8]> = candidates
                    .iter()
                    .map(|m| m.payload.as_deref().unwrap_or_default())
                    .collect();
                let (batch, bad) = decoder.decode(&payloads).map_err(internal)?;
                let mut good = Vec::with_capacity(batch.num_rows());
                let mut bad = bad.into_iter().peekable();
                for (j, m) in candidates.into_iter().enumerate() {
                    match bad.next_if(|b| b.index == j) {
                        Some(b) => rejected.push(reject(m, &b.error)),
                        None => good.push(m),
                    }
                }
                (Some(batch), good)
            }
            None => (None, candidates),
        };
        rejected.sort_by_key(|r| (r.partition.clone(), r.offset));
        let columns = self
            .schema
            .fields()
            .iter()
            .zip(&self.columns)
            .map(|(field, column)| {
                let natural: ArrayRef = match column {
                    Column::Field(i) => match &values {
                        Some(v) => Arc::clone(v.column(*i)),
                        None => {
                            return Err(ConnectorError::Internal(
                                "a value field without a decoded value batch".into(),
                            ));
                        }
                    },
                    Column::Key => Arc::new(BinaryArray::from_iter(
                        good.iter().map(|m| m.key.as_deref()),
                    )),
                    Column::Value => Arc::new(BinaryArray::from_iter(
                        good.iter().map(|m| m.payload.as_deref()),
                    )),
                    Column::Partition => Arc::new(Int32Array::from_iter_values(
                        good.iter().map(|m| m.partition),
                    )),
                    Column::Offset => {
                        Arc::new(Int64Array::from_iter_values(good.iter().map(|m| m.offset)))
                    }
                    Column::Timestamp => Arc::new(TimestampMillisecondArray::from_iter(
                        good.iter().map(|m| m.timestamp_ms),
                    )),
                };
                if natural.data_type() == field.data_type() {
                    Ok(natural)
                } else {
                    cast(&natural, field.data_type()).map_err(internal)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(internal)?;
        Ok((batch, rejected))
    }

    /// Why `m` cannot be a row before its value is decoded, if it cannot.
    fn precheck(&self, m: &Message) -> std::result::Result<(), String> {
        for (field, column) in self.schema.fields().iter().zip(&self.columns) {
            let bytes = match column {
                Column::Key => m.key.as_deref(),
                Column::Value => m.payload.as_deref(),
                _ => continue,
            };
            match bytes {
                None if !field.is_nullable() => {
                    return Err(format!(
                        "the message has no {}, and column '{}' is NOT NULL",
                        if matches!(column, Column::Key) {
                            "key"
                        } else {
                            "value"
                        },
                        field.name()
                    ));
                }
                Some(b)
                    if matches!(
                        field.data_type(),
                        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                    ) && std::str::from_utf8(b).is_err() =>
                {
                    return Err(format!(
                        "column '{}' is text but the bytes are not UTF-8",
                        field.name()
                    ));
                }
                _ => {}
            }
        }
        if self.decoder.is_some() && m.payload.is_none() {
            return Err("a message without a value (a tombstone)".into());
        }
        Ok(())
    }
}

fn reject(m: &Message, error: &str) -> RejectedRecord {
    RejectedRecord {
        partition: m.partition.to_string(),
        offset: u64::try_from(m.offset).unwrap_or(0),
        key: m.key.clone(),
        payload: m.payload.clone().unwrap_or_default(),
        error: error.to_string(),
    }
}
