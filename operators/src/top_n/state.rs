//! A Top-N's partitions: each one's first rows in rank order, re-ranked when rows arrive.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use datafusion::common::{HashMap, HashSet};
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

    /// Adds `rows`; returns each touched partition's ranks (its rows, then the rank). The
    /// touched partitions' held rows and the new rows are sorted together once (by partition,
    /// ORDER BY, ties) and the first `limit` of each partition kept.
    pub fn add(&mut self, rows: &RecordBatch) -> Result<Vec<RecordBatch>> {
        if rows.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let fresh = self.keys(rows)?;
        let mut parts = Vec::new();
        let mut keys: Vec<Key> = Vec::new();
        let mut touched: HashSet<&Key> = HashSet::default();
        for key in &fresh {
            if touched.insert(key)
                && let Some(held) = self.held.remove(key)
            {
                keys.extend(std::iter::repeat_n(key.clone(), held.num_rows()));
                parts.push(held);
            }
        }
        parts.push(rows.clone());
        keys.extend(fresh.iter().cloned());
        let all = concat_batches(&self.input_schema(), &parts)?;
        let mut columns = Vec::new();
        for key in &self.plan.partition_by {
            columns.push(SortColumn {
                values: key
                    .evaluate(&all)
                    .and_then(|v| v.into_array(all.num_rows()))
                    .map_err(OperatorError::exec(WHAT))?,
                options: Some(TIE_ORDER),
            });
        }
        columns.extend(self.order_columns(&all)?);
        let sorted = lexsort_to_indices(&columns, None)?;
        let limit = self.plan.limit;
        let (mut keep, mut ranks) = (Vec::new(), Vec::new());
        // Each partition's first row in `all` and where its kept rows start.
        let mut runs: Vec<(usize, usize)> = Vec::new();
        let mut rank = 0;
        let mut previous: Option<&Key> = None;
        for &i in sorted.values() {
            let key = &keys[i as usize];
            if previous != Some(key) {
                previous = Some(key);
                rank = 0;
                runs.push((i as usize, keep.len()));
            }
            if rank < limit {
                rank += 1;
                keep.push(i);
                ranks.push(rank);
            }
        }
        let top = take_record_batch(&all, &UInt32Array::from(keep))?;
        for (n, (first, start)) in runs.iter().enumerate() {
            let end = runs.get(n + 1).map_or(top.num_rows(), |(_, next)| *next);
            self.held
                .insert(keys[*first].clone(), top.slice(*start, end - start));
        }
        let mut columns = top.columns().to_vec();
        columns.push(Arc::new(UInt64Array::from(ranks)));
        Ok(vec![RecordBatch::try_new(
            Arc::clone(&self.plan.port.schema),
            columns,
        )?])
    }

    /// The sort columns that rank a partition's rows: ORDER BY, then the ties.
    fn order_columns(&self, rows: &RecordBatch) -> Result<Vec<SortColumn>> {
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
        Ok(columns)
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
