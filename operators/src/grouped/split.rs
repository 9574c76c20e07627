//! Vectorised splits of state rows: by window start, by group-key shard, and by "touched this
//! epoch".

use std::collections::HashSet;

use arrow::array::{Array, BooleanArray, Int64Array, UInt32Array};
use arrow::compute::kernels::cmp::eq;
use arrow::compute::{cast, filter_record_batch, take_record_batch};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use datafusion::common::hash_utils::{RandomState, create_hashes};

use volley_sql::stream::operator::{OperatorError, Result};

/// The hash that assigns group keys to shards. Its seed differs from the one DataFusion's own
/// hash tables use, so a shard's keys still spread over all of its aggregate's hash buckets.
const SHARD_HASH: RandomState = RandomState::with_seed(0x766f_6c6c_6579_5348);

/// Splits state rows by the window-start group column, in order of first appearance.
pub(crate) fn split_by_window(
    batch: &RecordBatch,
    index: usize,
) -> Result<Vec<(Option<i64>, RecordBatch)>> {
    let column = cast(batch.column(index), &DataType::Int64)?;
    let starts = column
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| OperatorError::Internal("window start column is not a timestamp".into()))?;
    let mut distinct: Vec<Option<i64>> = Vec::new();
    let mut last: Option<Option<i64>> = None;
    for value in starts.iter() {
        if last != Some(value) {
            last = Some(value);
            if !distinct.contains(&value) {
                distinct.push(value);
            }
        }
    }
    if distinct.len() == 1 {
        return Ok(vec![(distinct[0], batch.clone())]);
    }
    let mut out = Vec::with_capacity(distinct.len());
    for start in distinct {
        let mask: BooleanArray = match start {
            Some(s) => eq(starts, &Int64Array::new_scalar(s))?,
            None => arrow::compute::is_null(starts)?,
        };
        out.push((start, filter_record_batch(batch, &mask)?));
    }
    Ok(out)
}

/// Splits state rows into `shards` parts by a hash of their first `group_count` columns (the
/// group keys), so each group always lands in the same shard. Returns one entry per shard,
/// `None` where no row landed.
pub(super) fn split_by_shard(
    batch: &RecordBatch,
    group_count: usize,
    shards: usize,
    hashes: &mut Vec<u64>,
) -> Result<Vec<Option<RecordBatch>>> {
    let mut out = vec![None; shards.max(1)];
    if batch.num_rows() == 0 {
        return Ok(out);
    }
    if shards <= 1 || group_count == 0 {
        out[0] = Some(batch.clone());
        return Ok(out);
    }
    let rows = batch.num_rows();
    hashes.clear();
    hashes.resize(rows, 0);
    create_hashes(&batch.columns()[..group_count], &SHARD_HASH, hashes)
        .map_err(OperatorError::exec("hashing group keys into shards"))?;
    let mut indices: Vec<Vec<u32>> = vec![Vec::with_capacity(rows / shards + 1); shards];
    let modulus = shards as u64;
    for (row, hash) in hashes.iter().enumerate() {
        // Row counts fit u32: a RecordBatch holds far fewer than 2^32 rows.
        indices[(hash % modulus) as usize].push(row as u32);
    }
    for (shard, rows_of_shard) in indices.into_iter().enumerate() {
        if rows_of_shard.len() == rows {
            out[shard] = Some(batch.clone());
        } else if !rows_of_shard.is_empty() {
            let take = UInt32Array::from(rows_of_shard);
            out[shard] = Some(take_record_batch(batch, &take)?);
        }
    }
    Ok(out)
}

/// The group keys an epoch touched, to pick their rows out of the merged state.
pub(super) struct TouchedKeys {
    converter: RowConverter,
    keys: HashSet<Box<[u8]>>,
    group_count: usize,
}

impl TouchedKeys {
    /// The distinct group keys (first `group_count` columns) of `partials`.
    pub(super) fn of(partials: &[RecordBatch], group_count: usize) -> Result<Self> {
        let fields = partials
            .first()
            .map(|b| {
                b.schema().fields()[..group_count]
                    .iter()
                    .map(|f| SortField::new(f.data_type().clone()))
                    .collect()
            })
            .unwrap_or_default();
        let converter = RowConverter::new(fields)?;
        let mut keys = HashSet::new();
        for batch in partials {
            let rows = converter.convert_columns(&batch.columns()[..group_count])?;
            keys.extend(rows.iter().map(|r| Box::<[u8]>::from(r.as_ref())));
        }
        Ok(Self {
            converter,
            keys,
            group_count,
        })
    }

    /// The rows of `state` whose group key was touched.
    pub(super) fn filter(&self, state: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::with_capacity(state.len());
        for batch in state {
            let rows = self
                .converter
                .convert_columns(&batch.columns()[..self.group_count])?;
            let mask: BooleanArray = rows
                .iter()
                .map(|r| Some(self.keys.contains(r.as_ref())))
                .collect();
            let picked = filter_record_batch(batch, &mask)?;
            if picked.num_rows() > 0 {
                out.push(picked);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use arrow::array::{StringArray, TimestampNanosecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};

    use super::*;

    fn state(keys: &[&str], starts: &[Option<i64>], counts: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("cell", DataType::Utf8, false),
            Field::new("w", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new("n", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(keys.to_vec())),
                Arc::new(TimestampNanosecondArray::from(starts.to_vec())),
                Arc::new(Int64Array::from(counts.to_vec())),
            ],
        )
        .unwrap()
    }

    fn cells(batch: &RecordBatch) -> Vec<String> {
        let a = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        a.iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn a_key_always_lands_in_the_same_shard_and_every_row_lands_once() {
        let names: Vec<String> = (0..500).map(|i| format!("k{}", i % 97)).collect();
        let keys: Vec<&str> = names.iter().map(String::as_str).collect();
        let starts = vec![Some(60); keys.len()];
        let counts: Vec<i64> = (0..keys.len() as i64).collect();
        let batch = state(&keys, &starts, &counts);
        let mut hashes = Vec::new();
        for shards in [1, 2, 3, 8] {
            let parts = split_by_shard(&batch, 2, shards, &mut hashes).unwrap();
            assert_eq!(parts.len(), shards);
            let mut owner = std::collections::HashMap::new();
            let mut total = 0;
            for (shard, part) in parts.iter().enumerate() {
                let Some(part) = part else { continue };
                total += part.num_rows();
                for cell in cells(part) {
                    assert_eq!(*owner.entry(cell).or_insert(shard), shard);
                }
            }
            assert_eq!(total, 500);
            assert_eq!(owner.len(), 97);
            if shards > 1 {
                let used = parts.iter().filter(|p| p.is_some()).count();
                assert_eq!(used, shards, "97 keys spread over every shard");
            }
        }
        // Splitting a later batch puts the same key in the same shard.
        let again = split_by_shard(&state(&["k5"], &[Some(60)], &[1]), 2, 8, &mut hashes).unwrap();
        let first = split_by_shard(&batch, 2, 8, &mut hashes).unwrap();
        let shard = again.iter().position(Option::is_some).unwrap();
        assert!(cells(first[shard].as_ref().unwrap()).contains(&"k5".to_string()));
    }

    #[test]
    fn windows_split_in_order_of_appearance_with_nulls_apart() {
        let batch = state(
            &["a", "b", "c", "d", "e"],
            &[Some(120), Some(60), None, Some(120), Some(60)],
            &[1, 2, 3, 4, 5],
        );
        let parts = split_by_window(&batch, 1).unwrap();
        let got: Vec<(Option<i64>, Vec<String>)> =
            parts.iter().map(|(s, b)| (*s, cells(b))).collect();
        assert_eq!(
            got,
            vec![
                (Some(120), vec!["a".into(), "d".into()]),
                (Some(60), vec!["b".into(), "e".into()]),
                (None, vec!["c".into()]),
            ]
        );
    }
}
