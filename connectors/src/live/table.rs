//! A table holding the latest row per key, with cheap immutable snapshots.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};

use crate::error::{ConnectorError, Result};

/// An Arrow failure inside a live table: the rows it is given fit its schema, so it is ours.
fn internal(table: &str, err: arrow::error::ArrowError) -> ConnectorError {
    ConnectorError::Internal(format!("live table '{table}': {err}"))
}

/// Where a key's current row lives: chunk and row within it.
#[derive(Debug, Clone, Copy)]
struct Slot {
    chunk: u32,
    row: u32,
}

/// One applied batch and which of its rows are still the latest for their key.
#[derive(Debug)]
struct Chunk {
    batch: RecordBatch,
    live: Vec<bool>,
    live_rows: usize,
    /// The chunk's live rows as published last, or `None` when rows died since.
    published: Option<RecordBatch>,
}

impl Chunk {
    fn live_batch(&mut self, table: &str) -> Result<Option<RecordBatch>> {
        if self.live_rows == 0 {
            return Ok(None);
        }
        if self.published.is_none() {
            let batch = if self.live_rows == self.batch.num_rows() {
                self.batch.clone()
            } else {
                let mask = BooleanArray::new(BooleanBuffer::from(self.live.as_slice()), None);
                filter_record_batch(&self.batch, &mask).map_err(|e| internal(table, e))?
            };
            self.published = Some(batch);
        }
        Ok(self.published.clone())
    }
}

/// The latest row per key of an upserting result, as a live table shows it.
///
/// [`LiveTable::apply`] takes a batch of upserts (a later row of a key replaces the earlier
/// one, within a batch as across batches); [`LiveTable::snapshot`] gives the table's rows as
/// immutable batches that a query can hold while later batches are applied. Keys compare as
/// Arrow's row format encodes them, for every key type, NULL equal to NULL (an upsert key
/// comes from GROUP BY, whose output has one value per group). A snapshot reuses the batches of chunks no upsert touched since the last one,
/// so publishing costs what changed, not the table's size; chunks are compacted when most of
/// their rows are dead.
#[derive(Debug)]
pub struct LiveTable {
    name: String,
    schema: SchemaRef,
    key: Vec<usize>,
    converter: RowConverter,
    index: HashMap<Box<[u8]>, Slot>,
    chunks: Vec<Chunk>,
    dead_rows: usize,
}

impl LiveTable {
    /// An empty live table `name` of `schema`, keyed by the columns named in `key`.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] when `key` is empty or names a column the schema lacks.
    pub fn new(name: &str, schema: SchemaRef, key: &[String]) -> Result<Self> {
        if key.is_empty() {
            return Err(ConnectorError::config(
                name,
                "a live table needs a key: the columns whose latest row it holds",
            ));
        }
        let key = key
            .iter()
            .map(|k| {
                schema.index_of(k).map_err(|_| {
                    ConnectorError::config(
                        name,
                        format!(
                            "key column '{k}' is not a column of the table (it has: {})",
                            schema
                                .fields()
                                .iter()
                                .map(|f| f.name().as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        let fields = key
            .iter()
            .map(|&i| SortField::new(schema.field(i).data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields).map_err(|e| internal(name, e))?;
        Ok(Self {
            name: name.to_string(),
            schema,
            key,
            converter,
            index: HashMap::new(),
            chunks: Vec::new(),
            dead_rows: 0,
        })
    }

    /// The key columns' names, in key order.
    pub fn key_names(&self) -> Arc<[String]> {
        self.key
            .iter()
            .map(|&i| self.schema.field(i).name().clone())
            .collect()
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table's schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// How many keys the table holds.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the table holds no row.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Applies a batch of upserts: each row becomes its key's latest, replacing the row the key
    /// had; of several rows of one key in the batch, the last wins.
    ///
    /// # Errors
    /// [`ConnectorError::Internal`] when the batch's schema is not the table's.
    pub fn apply(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if batch.schema().fields() != self.schema.fields() {
            return Err(ConnectorError::Internal(format!(
                "live table '{}': rows of schema {:?} do not fit its schema {:?}",
                self.name,
                batch.schema(),
                self.schema
            )));
        }
        let columns: Vec<_> = self
            .key
            .iter()
            .map(|&i| Arc::clone(batch.column(i)))
            .collect();
        let rows = self
            .converter
            .convert_columns(&columns)
            .map_err(|e| internal(&self.name, e))?;
        let chunk = u32::try_from(self.chunks.len()).map_err(|_| {
            ConnectorError::Internal(format!("live table '{}': 2^32 chunks", self.name))
        })?;
        let mut live = vec![false; batch.num_rows()];
        let mut live_rows = 0;
        // Last occurrence wins: walk backwards, keep a key's first sighting.
        for i in (0..batch.num_rows()).rev() {
            let key = rows.row(i);
            let slot = Slot {
                chunk,
                row: i as u32,
            };
            match self.index.get_mut(key.as_ref()) {
                Some(old) if old.chunk == chunk => continue,
                Some(old) => {
                    let dead = &mut self.chunks[old.chunk as usize];
                    dead.live[old.row as usize] = false;
                    dead.live_rows -= 1;
                    dead.published = None;
                    self.dead_rows += 1;
                    *old = slot;
                }
                None => {
                    self.index.insert(key.as_ref().into(), slot);
                }
            }
            live[i] = true;
            live_rows += 1;
        }
        self.dead_rows += batch.num_rows() - live_rows;
        self.chunks.push(Chunk {
            batch: batch.clone(),
            live,
            live_rows,
            published: None,
        });
        if self.dead_rows > 1024 && self.dead_rows > self.index.len() {
            self.compact()?;
        }
        Ok(())
    }

    /// The table's rows now: batches a query can hold while the table changes on.
    ///
    /// # Errors
    /// Arrow failures filtering a chunk.
    pub fn snapshot(&mut self) -> Result<Arc<[RecordBatch]>> {
        let mut out = Vec::with_capacity(self.chunks.len());
        for chunk in &mut self.chunks {
            if let Some(batch) = chunk.live_batch(&self.name)? {
                out.push(batch);
            }
        }
        Ok(out.into())
    }

    /// Rewrites the live rows into one chunk and rebuilds the index.
    fn compact(&mut self) -> Result<()> {
        let live = self.snapshot()?;
        let batch = arrow::compute::concat_batches(&self.schema, live.iter())
            .map_err(|e| internal(&self.name, e))?;
        self.chunks.clear();
        self.index.clear();
        self.dead_rows = 0;
        self.apply(&batch)
    }
}
