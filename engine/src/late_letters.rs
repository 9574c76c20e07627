//! Dead letters for late rows: the whole source record, and where it was read.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use volley_connectors::dead_letter::DeadLetterBatch;
use volley_sql::stream::LateRows;

use crate::error::{EngineError, Result};

/// The column naming a late row's index in its epoch's input from the source.
pub const EPOCH_ROW: &str = volley_sql::stream::leaf::POSITION;
/// The column naming the source partition a late row came from (sources with partitions).
pub const SOURCE_PARTITION: &str = "_source_partition";

/// One dead letter per late row: every column of the source record, then [`EPOCH_ROW`] (with
/// the letter's epoch, a position that reads the record again) and, for partitioned sources,
/// [`SOURCE_PARTITION`]. Columns the source already has under those names are not repeated.
///
/// # Errors
/// [`EngineError::Internal`] if the columns do not form a batch (a bug).
pub fn letter(late: LateRows, reason: String) -> Result<DeadLetterBatch> {
    let rows = late.rows.num_rows();
    let partition = late.partition.as_ref().map(|p| {
        let column: ArrayRef = Arc::new(StringArray::from(vec![p.as_str(); rows]));
        (Field::new(SOURCE_PARTITION, DataType::Utf8, false), column)
    });
    let at: ArrayRef = Arc::new(late.row_in_epoch);
    let extra = partition
        .into_iter()
        .chain([(Field::new(EPOCH_ROW, DataType::UInt64, false), at)]);
    let rows = with_columns(late.rows, extra).map_err(|e| {
        EngineError::Internal(format!(
            "building late-row letters for '{}': {e}",
            late.source
        ))
    })?;
    Ok(DeadLetterBatch {
        source: late.source,
        reason,
        rows,
    })
}

/// `rows` with `extra` columns appended after its own; one whose name `rows` already uses is
/// left out (the record's own column wins).
///
/// # Errors
/// Columns that do not form a batch with `rows` (a bug).
pub(crate) fn with_columns(
    rows: RecordBatch,
    extra: impl IntoIterator<Item = (Field, ArrayRef)>,
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let schema = rows.schema();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
    for (field, column) in extra {
        if schema.index_of(field.name()).is_err() {
            fields.push(field);
            columns.push(column);
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}
