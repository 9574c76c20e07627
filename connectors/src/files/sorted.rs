//! [`SortedSource`]: a bounded file source replayed in event-time order, so `run` over history
//! gives the batch answer however the files are ordered.
//!
//! ```text
//!   files ─▶ inner source (file order) ─┬─ already in event-time order? ─▶ read as they are
//!                                       └─ otherwise ─▶ SortExec (event time, then every other
//!                                           column; spills past `sort_memory`) ─▶ re-sliced
//! ```
//!
//! The order is total: rows tied on event time are ordered by their other columns, so the same
//! files give the same rows at the same positions on every run, whatever the memory bound, and a
//! restored pipeline re-reads exactly the epochs it logged. Rows with no event time come first.
//! Records the inner source could not read are reported with the first rows handed out (a
//! replay of the first epoch reports them again; a restore past it drops them).

use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, Int64Array};
use arrow::compute::SortOptions;
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::expressions::col;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::prelude::SessionConfig;
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::time::Instant;

use super::source::FileSource;
use crate::error::{ConnectorError, Result};
use crate::traits::{Position, RejectedRecord, Source, SourcePoll};

/// Whether the files are already in event-time order, found out before reading them (a
/// Parquet source reads its event-time column alone to tell).
pub type OrderCheck = BoxFuture<'static, Result<bool>>;

/// What a [`SortedSource`] does before its first row.
enum Stage {
    /// Not started: the inner source, and how to tell whether it needs sorting.
    Waiting {
        inner: Box<dyn Source>,
        check: Option<OrderCheck>,
    },
    /// The files were in order: read as they are.
    AsIs(Box<dyn Source>),
    /// Sorted rows.
    Sorted(FileSource),
    /// A start that failed (its error was returned).
    Failed,
}

/// A bounded source read in event-time order (see the module docs).
///
/// # Cancellation
/// The first poll sorts the whole input: dropping it midway drops the sort, and the next poll
/// starts it again from the files.
pub struct SortedSource {
    table: String,
    schema: SchemaRef,
    column: String,
    memory: usize,
    stage: Stage,
    rejected: Arc<Mutex<Vec<RejectedRecord>>>,
}

impl fmt::Debug for SortedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = match &self.stage {
            Stage::Waiting { .. } => "waiting",
            Stage::AsIs(_) => "in order as read",
            Stage::Sorted(_) => "sorted",
            Stage::Failed => "failed",
        };
        f.debug_struct("SortedSource")
            .field("table", &self.table)
            .field("column", &self.column)
            .field("memory", &self.memory)
            .field("stage", &stage)
            .finish()
    }
}

impl SortedSource {
    /// Reads `inner` in order of `column` (its event time), sorting in at most `memory` bytes
    /// (spilling to the temporary directory past it) unless `check` finds the files already
    /// in order.
    pub fn new(
        table: &str,
        inner: Box<dyn Source>,
        column: &str,
        memory: usize,
        check: Option<OrderCheck>,
    ) -> Self {
        Self {
            table: table.to_string(),
            schema: inner.schema(),
            column: column.to_string(),
            memory,
            stage: Stage::Waiting { inner, check },
            rejected: Arc::default(),
        }
    }

    fn failed(&self, what: impl fmt::Display) -> ConnectorError {
        ConnectorError::external(
            &self.table,
            format!(
                "sorting the files by '{}' in at most {} MiB (option 'sort_memory'; 'replay_order' 'file' reads them as they are): {what}",
                self.column,
                self.memory >> 20
            ),
        )
    }

    /// Starts reading: in order as they are, or sorted.
    async fn start(&mut self) -> Result<()> {
        if !matches!(self.stage, Stage::Waiting { .. }) {
            return Ok(());
        }
        let Stage::Waiting { inner, check } = std::mem::replace(&mut self.stage, Stage::Failed)
        else {
            return Ok(());
        };
        let in_order = match check {
            Some(check) => check.await?,
            None => false,
        };
        if in_order {
            self.stage = Stage::AsIs(inner);
            return Ok(());
        }
        let stream = self.sort(inner)?;
        self.stage = Stage::Sorted(FileSource::new(&self.table, self.schema.clone(), stream));
        Ok(())
    }

    /// The inner source's rows through DataFusion's spilling sort.
    fn sort(&self, inner: Box<dyn Source>) -> Result<SendableRecordBatchStream> {
        let schema = self.schema.clone();
        let mut ordering = Vec::with_capacity(schema.fields().len());
        let event_time = col(&self.column, &schema).map_err(|e| self.failed(e))?;
        ordering.push(PhysicalSortExpr::new(
            event_time,
            SortOptions {
                descending: false,
                nulls_first: true,
            },
        ));
        for field in schema.fields() {
            if field.name() != &self.column && orderable(field.data_type()) {
                ordering.push(PhysicalSortExpr::new(
                    col(field.name(), &schema).map_err(|e| self.failed(e))?,
                    SortOptions::default(),
                ));
            }
        }
        let ordering =
            LexOrdering::new(ordering).ok_or_else(|| self.failed("no column to sort by"))?;
        let drained = Arc::new(Drained {
            schema: schema.clone(),
            stream: Mutex::new(Some(drain(inner, Arc::clone(&self.rejected)))),
        });
        let input = StreamingTableExec::try_new(
            schema,
            vec![drained as Arc<dyn PartitionStream>],
            None,
            [],
            false,
            None,
        )
        .map_err(|e| self.failed(e))?;
        let sort = SortExec::new(ordering, Arc::new(input));
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(self.memory)))
            .build_arc()
            .map_err(|e| self.failed(e))?;
        // A sort buffer's reservation for merging its spills comes out of the bound too.
        let reserve = (self.memory / 8).clamp(64 << 10, 16 << 20);
        // Rows held in memory are sorted as one run (concatenated and sorted in place), not
        // as one run per batch: merging hundreds of runs in the row format holds about as
        // much again as the runs, which the bound has no room for.
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .with_sort_spill_reservation_bytes(reserve)
            .with_sort_in_place_threshold_bytes(self.memory);
        let ctx = Arc::new(
            TaskContext::default()
                .with_session_config(config)
                .with_runtime(runtime),
        );
        sort.execute(0, ctx).map_err(|e| self.failed(e))
    }

    fn current(&mut self) -> Option<&mut dyn Source> {
        match &mut self.stage {
            Stage::AsIs(inner) => Some(inner.as_mut()),
            Stage::Sorted(sorted) => Some(sorted),
            Stage::Waiting { .. } | Stage::Failed => None,
        }
    }
}

/// Types the sort can order rows by (nested values are left out of the tie-break).
fn orderable(data_type: &DataType) -> bool {
    data_type.is_primitive()
        || matches!(
            data_type,
            DataType::Boolean
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView
                | DataType::FixedSizeBinary(_)
        )
}

/// Rows per batch the sort takes in: small enough for a small `sort_memory`.
const DRAIN_ROWS: usize = 8192;

/// Every row of `inner`, as a stream; the records it rejects go to `rejected`.
fn drain(
    inner: Box<dyn Source>,
    rejected: Arc<Mutex<Vec<RejectedRecord>>>,
) -> SendableRecordBatchStream {
    let schema = inner.schema();
    let stream = futures::stream::unfold(Some(inner), move |state| {
        let rejected = Arc::clone(&rejected);
        async move {
            let mut inner = state?;
            loop {
                let far = Instant::now() + std::time::Duration::from_secs(3600);
                let polled = inner.poll_batch(DRAIN_ROWS, far).await;
                let bad = inner.take_rejected();
                if !bad.is_empty() {
                    rejected
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .extend(bad);
                }
                match polled {
                    Ok(SourcePoll::Data(batch)) if batch.num_rows() > 0 => {
                        return Some((Ok(batch), Some(inner)));
                    }
                    Ok(SourcePoll::Exhausted) => return None,
                    Ok(SourcePoll::Partitions(_)) => {
                        return Some((
                            Err(DataFusionError::Internal(
                                "a file source returned partitions".into(),
                            )),
                            None,
                        ));
                    }
                    Ok(SourcePoll::Data(_) | SourcePoll::Pending) => {}
                    Err(e) => return Some((Err(DataFusionError::External(Box::new(e))), None)),
                }
            }
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}

/// The drained input as the one partition of a DataFusion plan.
struct Drained {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl fmt::Debug for Drained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Drained")
    }
}

impl PartitionStream for Drained {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self
            .stream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        taken.unwrap_or_else(|| {
            let schema = self.schema.clone();
            Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::once(async {
                    Err(DataFusionError::Internal(
                        "the files' rows were already read once".into(),
                    ))
                }),
            ))
        })
    }
}

/// Whether `stream`'s `column` never goes back in time (NULLs only at the start), read to its
/// end: files already in event-time order need no sort.
///
/// # Errors
/// Read failures.
pub async fn in_event_time_order(
    table: &str,
    mut stream: SendableRecordBatchStream,
) -> Result<bool> {
    let mut last: Option<i64> = None;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| {
            ConnectorError::external(table, format!("reading the event-time column: {e}"))
        })?;
        if batch.num_columns() == 0 || batch.num_rows() == 0 {
            continue;
        }
        let values = cast(batch.column(0), &DataType::Int64).map_err(|e| {
            ConnectorError::external(table, format!("reading the event-time column: {e}"))
        })?;
        let Some(values) = values.as_any().downcast_ref::<Int64Array>() else {
            return Ok(false);
        };
        for i in 0..values.len() {
            if values.is_null(i) {
                // NULLs sort first: in order only while no value came before them.
                if last.is_some() {
                    return Ok(false);
                }
                continue;
            }
            let value = values.value(i);
            if last.is_some_and(|previous| previous > value) {
                return Ok(false);
            }
            last = Some(value);
        }
    }
    Ok(true)
}

#[async_trait]
impl Source for SortedSource {
    /// The inner source's count while it is read as it is; `None` once its rows go through
    /// the sort (read on another task).
    fn bytes_read(&self) -> Option<u64> {
        match &self.stage {
            Stage::AsIs(inner) => inner.bytes_read(),
            _ => None,
        }
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn poll_batch(&mut self, max_rows: usize, deadline: Instant) -> Result<SourcePoll> {
        self.start().await?;
        let table = self.table.clone();
        let Some(current) = self.current() else {
            return Err(ConnectorError::Internal(format!(
                "table '{table}': reading after a failed start"
            )));
        };
        let polled = current.poll_batch(max_rows, deadline).await;
        if let Stage::Sorted(_) = self.stage {
            polled.map_err(|e| self.failed(e))
        } else {
            polled
        }
    }

    /// Before it starts, the files are read for those columns only (a sort then breaks ties
    /// by them alone, which no query can tell apart); its rows are never late.
    async fn read_only(&mut self, columns: &[usize]) -> Result<()> {
        match &mut self.stage {
            Stage::Waiting { inner, .. } => inner.read_only(columns).await,
            _ => Ok(()),
        }
    }

    fn position(&self) -> Position {
        match &self.stage {
            Stage::AsIs(inner) => inner.position(),
            Stage::Sorted(sorted) => sorted.position(),
            Stage::Waiting { inner, .. } => inner.position(),
            Stage::Failed => Position::single(0),
        }
    }

    fn take_rejected(&mut self) -> Vec<RejectedRecord> {
        let mut out = match &mut self.stage {
            Stage::AsIs(inner) => inner.take_rejected(),
            _ => Vec::new(),
        };
        out.extend(std::mem::take(
            &mut *self
                .rejected
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ));
        out
    }

    async fn seek(&mut self, position: &Position) -> Result<()> {
        if position.offset() == 0 {
            return Ok(());
        }
        self.start().await?;
        let table = self.table.clone();
        let Some(current) = self.current() else {
            return Err(ConnectorError::Internal(format!(
                "table '{table}': seeking after a failed start"
            )));
        };
        current.seek(position).await?;
        // Records set aside before the restored position belong to epochs already written.
        if let Stage::Sorted(_) = self.stage {
            self.rejected
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clear();
        }
        Ok(())
    }
}
