//! [`FileSource`]: a bounded source over the files at a `LOCATION`, re-sliced to `max_rows`.

use std::fmt;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use tokio::time::Instant;

use crate::error::{ConnectorError, Result};
use crate::traits::{Position, Source, SourcePoll};

/// Rows of a DataFusion scan handed out at most `max_rows` at a time.
///
/// Incoming batches larger than `max_rows` are cut with zero-copy [`RecordBatch::slice`]; the
/// rest waits for the next poll. [`Source::position`] counts rows returned so far. Files are
/// read one partition in path order, so the same files give the same rows at the same
/// positions on every run.
///
/// # Cancellation
/// A poll waiting on the scan may be dropped without losing rows: rows are only taken from the
/// scan stream once it yields them, and they are kept until returned.
pub struct FileSource {
    table: String,
    schema: SchemaRef,
    /// `None` once the scan has ended.
    stream: Option<SendableRecordBatchStream>,
    /// Rows read from the scan but not yet returned.
    pending: Option<RecordBatch>,
    position: u64,
    /// Opens the scan of some columns only (Parquet, before the first poll).
    reopen: Option<Reopen>,
    /// With a scan of some columns: each column's place in the scan's batches, or `None` for a
    /// column left out (filled with placeholders).
    fill: Option<Vec<Option<usize>>>,
    /// The placeholders of the columns left out, as long as the longest batch so far: each
    /// batch takes a zero-copy slice.
    placeholders: Vec<Option<arrow::array::ArrayRef>>,
}

/// Opens a scan of the given columns (indexes into the table's schema), in that order.
pub type Reopen = Box<
    dyn FnOnce(
            Vec<usize>,
        ) -> futures::future::BoxFuture<
            'static,
            datafusion::error::Result<SendableRecordBatchStream>,
        > + Send,
>;

impl FileSource {
    /// A source returning the rows of `stream`, whose batches have `schema`.
    pub fn new(table: &str, schema: SchemaRef, stream: SendableRecordBatchStream) -> Self {
        Self {
            table: table.to_string(),
            schema,
            stream: Some(stream),
            pending: None,
            position: 0,
            reopen: None,
            fill: None,
            placeholders: Vec::new(),
        }
    }

    /// The source, able to read only the columns queries read ([`Source::read_only`]): its
    /// rows can never reach a dead letter, so the placeholders are never seen.
    pub fn with_reopen(mut self, reopen: Reopen) -> Self {
        self.reopen = Some(reopen);
        self
    }

    /// A batch of the scan's columns as a batch of every column, placeholders in the others:
    /// NULL where the column is nullable, the type's default otherwise.
    fn widen(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        let Some(fill) = &self.fill else {
            return Ok(batch);
        };
        let rows = batch.num_rows();
        self.placeholders.resize(fill.len(), None);
        let mut columns = Vec::with_capacity(fill.len());
        for ((field, at), cached) in self
            .schema
            .fields()
            .iter()
            .zip(fill)
            .zip(self.placeholders.iter_mut())
        {
            if let Some(i) = at {
                columns.push(std::sync::Arc::clone(batch.column(*i)));
                continue;
            }
            if cached.as_ref().is_none_or(|c| c.len() < rows) {
                *cached = Some(if field.is_nullable() {
                    arrow::array::new_null_array(field.data_type(), rows)
                } else {
                    datafusion::common::ScalarValue::new_default(field.data_type())
                        .and_then(|v| v.to_array_of_size(rows))
                        .map_err(|e| {
                            ConnectorError::external(
                                &self.table,
                                format!("column '{}' has no placeholder: {e}", field.name()),
                            )
                        })?
                });
            }
            if let Some(placeholder) = cached {
                columns.push(placeholder.slice(0, rows));
            }
        }
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| {
            ConnectorError::external(&self.table, format!("widening a batch failed: {e}"))
        })
    }

    /// Up to `max_rows` rows of the buffered batch, keeping the rest buffered.
    fn take_pending(&mut self, max_rows: usize) -> Option<RecordBatch> {
        let batch = self.pending.take()?;
        let rows = batch.num_rows();
        let out = if rows > max_rows {
            self.pending = Some(batch.slice(max_rows, rows - max_rows));
            batch.slice(0, max_rows)
        } else {
            batch
        };
        self.position += out.num_rows() as u64;
        Some(out)
    }
}

impl fmt::Debug for FileSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSource")
            .field("table", &self.table)
            .field("position", &self.position)
            .field(
                "buffered_rows",
                &self.pending.as_ref().map_or(0, RecordBatch::num_rows),
            )
            .field("finished", &self.stream.is_none())
            .finish()
    }
}

#[async_trait]
impl Source for FileSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn poll_batch(&mut self, max_rows: usize, deadline: Instant) -> Result<SourcePoll> {
        let max_rows = max_rows.max(1);
        loop {
            if let Some(batch) = self.take_pending(max_rows) {
                return Ok(SourcePoll::Data(batch));
            }
            let Some(stream) = self.stream.as_mut() else {
                return Ok(SourcePoll::Exhausted);
            };
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_elapsed) => return Ok(SourcePoll::Pending),
                Ok(None) => {
                    self.stream = None;
                    return Ok(SourcePoll::Exhausted);
                }
                Ok(Some(Err(e))) => {
                    return Err(ConnectorError::external(
                        &self.table,
                        format!("reading files failed: {e}"),
                    ));
                }
                Ok(Some(Ok(batch))) if batch.num_rows() > 0 => {
                    self.pending = Some(self.widen(batch)?);
                }
                Ok(Some(Ok(_empty))) => {}
            }
        }
    }

    fn position(&self) -> Position {
        Position::single(self.position)
    }

    async fn read_only(&mut self, columns: &[usize]) -> Result<()> {
        let width = self.schema.fields().len();
        if self.position > 0 || self.pending.is_some() || columns.len() >= width {
            return Ok(());
        }
        let Some(reopen) = self.reopen.take() else {
            return Ok(());
        };
        let mut read: Vec<usize> = columns.iter().copied().filter(|&c| c < width).collect();
        read.sort_unstable();
        read.dedup();
        let stream = reopen(read.clone()).await.map_err(|e| {
            ConnectorError::external(&self.table, format!("reading files failed: {e}"))
        })?;
        let mut fill = vec![None; width];
        for (at, &column) in read.iter().enumerate() {
            fill[column] = Some(at);
        }
        self.stream = Some(stream);
        self.fill = Some(fill);
        Ok(())
    }

    /// Skips forward to `position` (files are re-read from the start when a pipeline restarts,
    /// so a restore always seeks forward).
    async fn seek(&mut self, position: &Position) -> Result<()> {
        let target = position.offset();
        if target < self.position {
            return Err(ConnectorError::Internal(format!(
                "table '{}': cannot seek back from row {} to row {target}",
                self.table, self.position
            )));
        }
        let far = Instant::now() + std::time::Duration::from_secs(3600);
        while self.position < target {
            let step = usize::try_from(target - self.position).unwrap_or(usize::MAX);
            match self.poll_batch(step, far).await? {
                SourcePoll::Data(_) | SourcePoll::Partitions(_) | SourcePoll::Pending => {}
                SourcePoll::Exhausted => {
                    return Err(ConnectorError::external(
                        &self.table,
                        format!(
                            "the files hold {} rows, fewer than the {target} already read before the restart: did they change?",
                            self.position
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
