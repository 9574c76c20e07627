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
    let schema = late.rows.schema();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns: Vec<ArrayRef> = late.rows.columns().to_vec();
    let rows = late.rows.num_rows();
    if let Some(partition) = &late.partition
        && schema.index_of(SOURCE_PARTITION).is_err()
    {
        fields.push(Field::new(SOURCE_PARTITION, DataType::Utf8, false));
        columns.push(Arc::new(StringArray::from(vec![partition.as_str(); rows])));
    }
    if schema.index_of(EPOCH_ROW).is_err() {
        fields.push(Field::new(EPOCH_ROW, DataType::UInt64, false));
        columns.push(Arc::new(late.row_in_epoch));
    }
    let rows = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| {
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
