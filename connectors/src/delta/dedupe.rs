//! Last-wins deduplication of an epoch's rows by merge key, before they are merged into a table.
//!
//! A Delta MERGE must not match one target row with several source rows, and within one epoch
//! the later row for a key is the newer value. Keys are encoded once with Arrow's row format
//! (so any key type, nulls included, compares by bytes), the last occurrence of each key is
//! found in one backwards pass, and the survivors are gathered with `take`, in input order.

use std::collections::HashSet;

use arrow::array::UInt32Array;
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};

use crate::error::{ConnectorError, Result};

/// Concatenates `batches` (all with `schema`) and keeps, for each value of the `keys` columns,
/// only the last row. Rows keep their relative order. Null key values are equal to each
/// other, as in `IS NOT DISTINCT FROM`.
///
/// # Errors
/// [`ConnectorError::Internal`] when a key column is missing or the batches do not share
/// `schema` (the sink checks both before calling).
pub(crate) fn last_row_per_key(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    keys: &[String],
) -> Result<RecordBatch> {
    let internal = |e: &dyn std::fmt::Display| {
        ConnectorError::Internal(format!("deduplicating rows by merge key: {e}"))
    };
    let batch = concat_batches(schema, batches).map_err(|e| internal(&e))?;
    let key_columns = keys
        .iter()
        .map(|name| {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| internal(&format!("no column '{name}'")))
        })
        .collect::<Result<Vec<_>>>()?;
    let converter = RowConverter::new(
        key_columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )
    .map_err(|e| internal(&e))?;
    let rows = converter
        .convert_columns(&key_columns)
        .map_err(|e| internal(&e))?;
    let row_count = u32::try_from(batch.num_rows())
        .map_err(|_| internal(&"more than u32::MAX rows in one epoch"))?;
    let mut seen = HashSet::with_capacity(rows.num_rows());
    let mut keep: Vec<u32> = (0..row_count)
        .rev()
        .filter(|&i| seen.insert(rows.row(i as usize)))
        .collect();
    if keep.len() == batch.num_rows() {
        return Ok(batch);
    }
    keep.reverse();
    take_record_batch(&batch, &UInt32Array::from(keep)).map_err(|e| internal(&e))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(ids: &[Option<i64>], names: &[&str], values: &[i64]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(names.to_vec())),
                Arc::new(Int64Array::from(values.to_vec())),
            ],
        )
        .unwrap()
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, false),
            Field::new("value", DataType::Int64, false),
        ]))
    }

    fn values(batch: &RecordBatch) -> Vec<i64> {
        let col = batch
            .column_by_name("value")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        (0..col.len()).map(|i| col.value(i)).collect()
    }

    #[test]
    fn last_row_wins_across_batches_in_input_order() {
        let a = batch(
            &[Some(1), Some(2), Some(1)],
            &["a", "b", "a"],
            &[10, 20, 11],
        );
        let b = batch(&[Some(3), Some(2)], &["c", "b"], &[30, 21]);
        let out = last_row_per_key(&schema(), &[a, b], &["id".to_string()]).unwrap();
        // id 1 → 11 (row 2), id 3 → 30 (row 3), id 2 → 21 (row 4).
        assert_eq!(values(&out), vec![11, 30, 21]);
    }

    #[test]
    fn composite_keys_and_null_keys() {
        let a = batch(
            &[Some(1), Some(1), None, Some(1), None],
            &["a", "b", "a", "a", "a"],
            &[1, 2, 3, 4, 5],
        );
        let keys = ["id".to_string(), "name".to_string()];
        let out = last_row_per_key(&schema(), &[a], &keys).unwrap();
        // (1,a) → 4, (1,b) → 2, (null,a) → 5.
        assert_eq!(values(&out), vec![2, 4, 5]);
    }

    #[test]
    fn unique_keys_are_untouched() {
        let a = batch(&[Some(1), Some(2)], &["a", "b"], &[1, 2]);
        let out =
            last_row_per_key(&schema(), std::slice::from_ref(&a), &["id".to_string()]).unwrap();
        assert_eq!(out, a);
    }

    #[test]
    fn missing_key_is_an_internal_error() {
        let a = batch(&[Some(1)], &["a"], &[1]);
        let err = last_row_per_key(&schema(), &[a], &["nope".to_string()]).unwrap_err();
        assert!(matches!(err, ConnectorError::Internal(_)), "{err}");
    }
}
