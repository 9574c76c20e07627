//! `state_ttl` for keyed aggregates: a group not updated for that long, measured in event time
//! by the watermark, is forgotten.
//!
//! Each group is stamped with the watermark of the last epoch that touched it. After an
//! epoch, groups whose stamp is older than `watermark - ttl` leave the state. Watermarks are
//! part of what the epoch log fixes, so a replayed epoch forgets the same groups. The stamps
//! are checkpointed beside the state as `(group columns…, last_seen)` rows.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};

use volley_sql::stream::operator::{OperatorError, Result};

/// The name of the stamp column in checkpointed stamps.
const LAST_SEEN: &str = "__volley_last_seen";

/// The stamps of one shard's groups.
#[derive(Debug)]
pub(super) struct Expiry {
    converter: RowConverter,
    stamps: HashMap<Box<[u8]>, i64>,
    /// Groups touched since the last [`Expiry::expire`], stamped by it.
    touched: HashSet<Box<[u8]>>,
}

impl Expiry {
    /// Bytes of memory the stamps hold (keys, values, and the touched set).
    pub(super) fn size(&self) -> usize {
        let stamped: usize = self
            .stamps
            .keys()
            .map(|k| k.len() + std::mem::size_of::<(Box<[u8]>, i64)>())
            .sum();
        let touched: usize = self
            .touched
            .iter()
            .map(|k| k.len() + std::mem::size_of::<Box<[u8]>>())
            .sum();
        stamped + touched + self.converter.size()
    }

    /// Stamps for groups with the columns of `state_schema`'s first `group_count` fields.
    pub(super) fn new(state_schema: &Schema, group_count: usize) -> Result<Self> {
        let fields = state_schema.fields()[..group_count]
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(Self {
            converter: RowConverter::new(fields)?,
            stamps: HashMap::new(),
            touched: HashSet::new(),
        })
    }

    /// Notes the groups of `batches` (state rows) as touched this epoch.
    pub(super) fn touch(&mut self, batches: &[RecordBatch], group_count: usize) -> Result<()> {
        for batch in batches {
            let rows = self
                .converter
                .convert_columns(&batch.columns()[..group_count])?;
            self.touched
                .extend(rows.iter().map(|r| Box::<[u8]>::from(r.as_ref())));
        }
        Ok(())
    }

    /// Stamps the touched groups with `watermark`, then drops from `state` (state rows) the
    /// groups last stamped before `cutoff` (every group when `cutoff` is `None`). Returns how
    /// many groups were dropped, and their state rows.
    pub(super) fn expire(
        &mut self,
        state: &mut Vec<RecordBatch>,
        group_count: usize,
        watermark: i64,
        cutoff: Option<i64>,
    ) -> Result<(usize, Vec<RecordBatch>)> {
        for key in self.touched.drain() {
            self.stamps.insert(key, watermark);
        }
        let before = self.stamps.len();
        match cutoff {
            Some(cutoff) => self.stamps.retain(|_, stamp| *stamp >= cutoff),
            None => self.stamps.clear(),
        }
        let dropped = before - self.stamps.len();
        if dropped == 0 {
            return Ok((0, Vec::new()));
        }
        let mut gone = Vec::new();
        let mut kept = Vec::with_capacity(state.len());
        for batch in state.iter() {
            let rows = self
                .converter
                .convert_columns(&batch.columns()[..group_count])?;
            let mask: BooleanArray = rows
                .iter()
                .map(|r| Some(self.stamps.contains_key(r.as_ref())))
                .collect();
            let dropped_rows = filter_record_batch(batch, &arrow::compute::not(&mask)?)?;
            if dropped_rows.num_rows() > 0 {
                gone.push(dropped_rows);
            }
            let batch = filter_record_batch(batch, &mask)?;
            if batch.num_rows() > 0 {
                kept.push(batch);
            }
        }
        *state = kept;
        Ok((dropped, gone))
    }

    /// The stamps as rows: the group columns (as in `state_schema`), then `last_seen`.
    pub(super) fn snapshot(
        &self,
        state_schema: &Schema,
        group_count: usize,
    ) -> Result<RecordBatch> {
        let schema = stamp_schema(state_schema, group_count);
        let mut keys: Vec<(&Box<[u8]>, i64)> = self.stamps.iter().map(|(k, v)| (k, *v)).collect();
        keys.sort_unstable();
        let parser = self.converter.parser();
        let rows = keys.iter().map(|(k, _)| parser.parse(k));
        let mut columns: Vec<ArrayRef> = self.converter.convert_rows(rows)?;
        columns.push(Arc::new(Int64Array::from_iter_values(
            keys.iter().map(|(_, v)| *v),
        )));
        RecordBatch::try_new(schema, columns).map_err(|e| {
            OperatorError::Internal(format!("state_ttl stamps do not fit their schema: {e}"))
        })
    }

    /// Loads checkpointed stamps (rows of [`Expiry::snapshot`]'s shape).
    pub(super) fn restore(&mut self, batch: &RecordBatch, group_count: usize) -> Result<()> {
        let stamps = batch
            .column(group_count)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| OperatorError::Checkpoint("state_ttl stamps are not integers".into()))?;
        let rows = self
            .converter
            .convert_columns(&batch.columns()[..group_count])?;
        for (row, stamp) in rows.iter().zip(stamps.values()) {
            self.stamps.insert(Box::from(row.as_ref()), *stamp);
        }
        Ok(())
    }

    /// Stamps every group of `state` that has no stamp with `watermark` (state restored from a
    /// checkpoint written without stamps).
    pub(super) fn stamp_unknown(
        &mut self,
        state: &[RecordBatch],
        group_count: usize,
        watermark: i64,
    ) -> Result<()> {
        for batch in state {
            let rows = self
                .converter
                .convert_columns(&batch.columns()[..group_count])?;
            for row in rows.iter() {
                self.stamps
                    .entry(Box::from(row.as_ref()))
                    .or_insert(watermark);
            }
        }
        Ok(())
    }

    /// Groups stamped.
    pub(super) fn len(&self) -> usize {
        self.stamps.len()
    }
}

/// The schema of checkpointed stamps.
pub(super) fn stamp_schema(state_schema: &Schema, group_count: usize) -> SchemaRef {
    let mut fields: Vec<Field> = state_schema.fields()[..group_count]
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    fields.push(Field::new(LAST_SEEN, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}
