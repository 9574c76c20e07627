//! A Top-N's partitions: each one's first rows in rank order, re-ranked when rows arrive.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Int64Type};
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

/// Row `i`'s closing time; NULL sorts after every time (it closes at the end of input).
fn time_at(times: &Int64Array, i: usize) -> i64 {
    if times.is_null(i) {
        i64::MAX
    } else {
        times.value(i)
    }
}

/// A running Top-N.
#[derive(Debug)]
pub(crate) struct TopN {
    pub plan: TopNPlan,
    pub task_ctx: Arc<TaskContext>,
    /// Each partition's first rows (the input's columns), in rank order.
    pub held: HashMap<Key, RecordBatch>,
    /// Partitions closing by an event time: their keys by that time (NULL last).
    pub by_time: BTreeMap<i64, Vec<Key>>,
    /// Partitions closing by an event time: the watermark (the time's unit) they were last
    /// closed by.
    pub mark: Option<i64>,
}

impl TopN {
    /// An empty Top-N.
    pub fn new(plan: TopNPlan, task_ctx: Arc<TaskContext>) -> Self {
        Self {
            plan,
            task_ctx,
            held: HashMap::default(),
            by_time: BTreeMap::new(),
            mark: None,
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

    /// Adds `rows`; returns each touched partition's ranks (its rows, then the rank; nothing
    /// when partitions close by time). The
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
        let mut existing: HashSet<Key> = HashSet::default();
        for key in &fresh {
            if touched.insert(key)
                && let Some(held) = self.held.remove(key)
            {
                existing.insert(key.clone());
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
        let times = self.times(&all)?;
        for (n, (first, start)) in runs.iter().enumerate() {
            let end = runs.get(n + 1).map_or(top.num_rows(), |(_, next)| *next);
            let key = &keys[*first];
            if let Some(times) = &times
                && !existing.contains(key)
            {
                self.by_time.entry(time_at(times, *first)).or_default().push(key.clone());
            }
            self.held.insert(key.clone(), top.slice(*start, end - start));
        }
        if self.plan.closing.is_some() {
            // Partitions closing by time emit their ranks once, when they close.
            return Ok(Vec::new());
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
        let times = self.times(rows)?;
        let mut groups: HashMap<Key, Vec<u32>> = HashMap::default();
        for (i, key) in keys.into_iter().enumerate() {
            if let Some(times) = &times
                && !groups.contains_key(&key)
            {
                self.by_time
                    .entry(time_at(times, i))
                    .or_default()
                    .push(key.clone());
            }
            groups.entry(key).or_default().push(i as u32);
        }
        for (key, indices) in groups {
            let held = take_record_batch(rows, &UInt32Array::from(indices))?;
            self.held.insert(key, held);
        }
        Ok(())
    }

    /// The closing event time of each row, as `Int64` in its unit (`None` when partitions do
    /// not close).
    fn times(&self, rows: &RecordBatch) -> Result<Option<Int64Array>> {
        let Some(closing) = &self.plan.closing else {
            return Ok(None);
        };
        let times = arrow::compute::cast(rows.column(closing.column), &DataType::Int64)?;
        Ok(Some(times.as_primitive::<Int64Type>().clone()))
    }

    /// Closes the partitions whose time is before `mark` (every partition when `all`): their
    /// rows in rank order, then the rank; they are forgotten.
    pub fn close(&mut self, mark: i64, all: bool) -> Result<Vec<RecordBatch>> {
        let closed = if all {
            std::mem::take(&mut self.by_time)
        } else {
            let open = self.by_time.split_off(&mark);
            std::mem::replace(&mut self.by_time, open)
        };
        let mut parts = Vec::new();
        let mut ranks: Vec<u64> = Vec::new();
        for key in closed.into_values().flatten() {
            if let Some(rows) = self.held.remove(&key) {
                ranks.extend(1..=rows.num_rows() as u64);
                parts.push(rows);
            }
        }
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        let rows = concat_batches(&self.input_schema(), &parts)?;
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(UInt64Array::from(ranks)));
        Ok(vec![RecordBatch::try_new(
            Arc::clone(&self.plan.port.schema),
            columns,
        )?])
    }

    /// Bytes of memory the rows held take.
    pub fn bytes(&self) -> usize {
        self.held
            .values()
            .map(RecordBatch::get_array_memory_size)
            .sum()
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.held.values().map(RecordBatch::num_rows).sum()
    }
}
