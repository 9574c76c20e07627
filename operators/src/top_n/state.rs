//! A Top-N's partitions: each one's first rows in rank order, re-ranked when rows arrive.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use datafusion::common::HashMap;
use datafusion::execution::TaskContext;
use volley_sql::stream::operator::{OperatorError, Result};
use volley_sql::stream::ties::TIE_ORDER;

use super::plan::TopNPlan;

/// What errors name.
pub(super) const WHAT: &str = "Top-N";

/// A partition's key: its PARTITION BY values in Arrow's row format.
type Key = Box<[u8]>;

/// A running Top-N.
#[derive(Debug)]
pub(crate) struct TopN {
    pub plan: TopNPlan,
    pub task_ctx: Arc<TaskContext>,
    /// Each partition's first rows (the input's columns), in rank order.
    pub held: HashMap<Key, RecordBatch>,
}

impl TopN {
    /// An empty Top-N.
    pub fn new(plan: TopNPlan, task_ctx: Arc<TaskContext>) -> Self {
        Self {
            plan,
            task_ctx,
            held: HashMap::default(),
        }
    }

    /// The input's schema.
    pub fn input_schema(&self) -> SchemaRef {
        self.plan.input.schema()
    }

    /// The rows' partition keys (all empty without PARTITION BY).
    fn keys(&self, rows: &RecordBatch) -> Result<Vec<Key>> {
        if self.plan.partition_by.is_empty() {
            return Ok(vec![Key::default(); rows.num_rows()]);
        }
        let columns = self
            .plan
            .partition_by
            .iter()
            .map(|e| e.evaluate(rows).and_then(|v| v.into_array(rows.num_rows())))
            .collect::<datafusion::error::Result<Vec<ArrayRef>>>()
            .map_err(OperatorError::exec(WHAT))?;
        let fields = columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect();
        let converted = RowConverter::new(fields)?.convert_columns(&columns)?;
        Ok(converted.iter().map(|r| r.as_ref().into()).collect())
    }

    /// Adds `rows`; returns each touched partition's ranks (its rows, then the rank).
    pub fn add(&mut self, rows: &RecordBatch) -> Result<Vec<RecordBatch>> {
        if rows.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let keys = self.keys(rows)?;
        let mut order: Vec<Key> = Vec::new();
        let mut groups: HashMap<Key, Vec<u32>> = HashMap::default();
        for (i, key) in keys.into_iter().enumerate() {
            groups
                .entry(key)
                .or_insert_with_key(|k| {
                    order.push(k.clone());
                    Vec::new()
                })
                .push(i as u32);
        }
        let schema = self.input_schema();
        let mut out = Vec::with_capacity(order.len());
        for key in order {
            let indices = UInt32Array::from(groups.remove(&key).unwrap_or_default());
            let fresh = take_record_batch(rows, &indices)?;
            let all = match self.held.get(&key) {
                Some(held) => concat_batches(&schema, [held, &fresh])?,
                None => fresh,
            };
            let top = self.first(&all)?;
            out.push(ranked(&top, &self.plan.port.schema)?);
            self.held.insert(key, top);
        }
        Ok(out)
    }

    /// The first `limit` of `rows` (one partition's), in rank order.
    fn first(&self, rows: &RecordBatch) -> Result<RecordBatch> {
        let mut columns = Vec::with_capacity(self.plan.order.len() + self.plan.ties.len());
        for sort in &self.plan.order {
            let values = sort
                .expr
                .evaluate(rows)
                .and_then(|v| v.into_array(rows.num_rows()))
                .map_err(OperatorError::exec(WHAT))?;
            columns.push(SortColumn {
                values,
                options: Some(sort.options),
            });
        }
        for &tie in &self.plan.ties {
            columns.push(SortColumn {
                values: Arc::clone(rows.column(tie)),
                options: Some(TIE_ORDER),
            });
        }
        let limit = usize::try_from(self.plan.limit).unwrap_or(usize::MAX);
        let indices = lexsort_to_indices(&columns, Some(limit.min(rows.num_rows())))?;
        Ok(take_record_batch(rows, &indices)?)
    }

    /// Loads held rows (every partition's, each partition's in rank order).
    pub fn load(&mut self, rows: &RecordBatch) -> Result<()> {
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let keys = self.keys(rows)?;
        let mut groups: HashMap<Key, Vec<u32>> = HashMap::default();
        for (i, key) in keys.into_iter().enumerate() {
            groups.entry(key).or_default().push(i as u32);
        }
        for (key, indices) in groups {
            let held = take_record_batch(rows, &UInt32Array::from(indices))?;
            self.held.insert(key, held);
        }
        Ok(())
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.held.values().map(RecordBatch::num_rows).sum()
    }
}

/// `top` with its ranks, 1 to its length, as `schema` (the input's columns, then the rank).
fn ranked(top: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let mut columns = top.columns().to_vec();
    columns.push(Arc::new(UInt64Array::from_iter_values(
        1..=top.num_rows() as u64,
    )));
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}
