//! The extension points the engine drives: [`Source`], [`Sink`] and [`Connector`].

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use tokio::time::Instant;
use volley_sql::{OptionSpec, TableDecl};

use crate::error::{ConnectorError, Result};

/// Where a source is: for each of its partitions (one for files and the generator; one per
/// topic partition for Kafka), the offset of the next row it will return.
///
/// Positions are what checkpoints and the epoch log record, so an epoch can be re-read exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position(pub BTreeMap<String, u64>);

impl Position {
    /// The position of a one-partition source.
    pub fn single(offset: u64) -> Self {
        Self(BTreeMap::from([(String::new(), offset)]))
    }

    /// The offset of a one-partition source (its only, or first, partition; 0 when empty).
    pub fn offset(&self) -> u64 {
        self.0.values().next().copied().unwrap_or(0)
    }

    /// Rows between `self` and a later `end`, summed over partitions.
    pub fn rows_until(&self, end: &Position) -> u64 {
        end.0
            .iter()
            .map(|(part, to)| to.saturating_sub(self.0.get(part).copied().unwrap_or(0)))
            .sum()
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(p, o)| {
                if p.is_empty() {
                    o.to_string()
                } else {
                    format!("{p}@{o}")
                }
            })
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

/// What a source has for the current micro-batch.
#[derive(Debug)]
pub enum SourcePoll {
    /// Rows (at most the `max_rows` asked for).
    Data(RecordBatch),
    /// Rows of several partitions, one batch per partition (at most `max_rows` in all), from
    /// a source that declares [`Source::partitions`]: the engine keeps event time per
    /// partition.
    Partitions(Vec<(String, RecordBatch)>),
    /// Nothing arrived before the deadline; the source may have more later.
    Pending,
    /// A bounded source has delivered every row.
    Exhausted,
}

/// A record a source read but could not turn into a row (undecodable, or not fitting the
/// table's columns). The engine writes it to the dead-letter destination as part of the epoch
/// that read it, so a replayed epoch writes the same letters again (replacing, not adding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRecord {
    /// The partition it came from (empty for one-partition sources).
    pub partition: String,
    /// Its offset within that partition.
    pub offset: u64,
    /// Its key, when the source has keys.
    pub key: Option<Vec<u8>>,
    /// The raw bytes as read.
    pub payload: Vec<u8>,
    /// Why it was rejected.
    pub error: String,
}

/// A replayable stream of record batches (generator, files, Kafka…).
///
/// The engine calls [`Source::poll_batch`] repeatedly to fill a micro-batch. Rows come in the
/// source's own order; every batch has [`Source::schema`].
///
/// # Cancellation
/// Dropping the future returned by `poll_batch` must not lose rows: a row is only consumed
/// once it has been returned.
#[async_trait]
pub trait Source: Send + Debug {
    /// Schema of every batch this source yields.
    fn schema(&self) -> SchemaRef;

    /// Up to `max_rows` rows, waiting no later than `deadline`.
    ///
    /// # Errors
    /// [`ConnectorError::External`] when the underlying system fails.
    async fn poll_batch(&mut self, max_rows: usize, deadline: Instant) -> Result<SourcePoll>;

    /// Position of the next row to be returned (after every row returned so far).
    fn position(&self) -> Position;

    /// Told, before its first poll, which of its columns (indexes into [`Source::schema`])
    /// some query reads. A source may then leave the others out of what it decodes and fill
    /// them with placeholder values, where no row of it can reach a dead letter (which would
    /// show them). The default reads every column.
    ///
    /// # Errors
    /// Failures re-opening what it reads.
    async fn read_only(&mut self, columns: &[usize]) -> Result<()> {
        let _ = columns;
        Ok(())
    }

    /// The partitions whose event time progresses independently (Kafka partitions), when the
    /// source returns [`SourcePoll::Partitions`]; the watermark is then the minimum over the
    /// partitions that are not idle. Empty (the default): the source is one stream.
    fn partitions(&self) -> Vec<String> {
        Vec::new()
    }

    /// A handle the engine keeps while the source itself is read on another task: told when
    /// positions are checkpointed, and asked for how far the source is behind. Sources that
    /// have nothing to report keep the default: none.
    fn monitor(&self) -> Option<Arc<dyn SourceMonitor>> {
        None
    }

    /// Bytes of the records read so far (keys and values as they arrived: a Kafka message's
    /// key and payload, a file record's line), rejected records included; `None` for sources
    /// that read no bytes (generators) or cannot tell.
    fn bytes_read(&self) -> Option<u64> {
        None
    }

    /// Records read since the last call that could not become rows (see
    /// [`RejectedRecord`]). The engine calls it after every poll. Sources whose input is
    /// always well-formed keep the default: none.
    fn take_rejected(&mut self) -> Vec<RejectedRecord> {
        Vec::new()
    }

    /// Moves to `position` (as [`Source::position`] reported it), so the next row returned is
    /// the one that followed it: how a restored pipeline re-reads its input.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] for a source that cannot be replayed; external failures.
    async fn seek(&mut self, position: &Position) -> Result<()>;

    /// Like [`Source::poll_batch`], but never past `end`: replaying a logged epoch reads
    /// exactly the rows it read the first time. The default suits one-partition sources.
    ///
    /// # Errors
    /// As for `poll_batch`.
    async fn poll_until(
        &mut self,
        end: &Position,
        max_rows: usize,
        deadline: Instant,
    ) -> Result<SourcePoll> {
        let left = self.position().rows_until(end);
        if left == 0 {
            return Ok(SourcePoll::Exhausted);
        }
        let max_rows = max_rows.min(usize::try_from(left).unwrap_or(usize::MAX));
        self.poll_batch(max_rows, deadline).await
    }
}

/// Progress reporting for a source that is being read elsewhere (see [`Source::monitor`]).
pub trait SourceMonitor: Send + Sync + std::fmt::Debug {
    /// A checkpoint holding `position` is durable. Kafka commits the offsets to its consumer
    /// group here, for monitoring tools; positions themselves always come from checkpoints.
    fn checkpointed(&self, position: &Position);

    /// How many records exist past `position` in each partition (Kafka: consumer lag), when
    /// the source knows.
    fn lag(&self, position: &Position) -> Option<BTreeMap<String, u64>>;
}

/// What a sink knows about the pipeline writing to it.
#[derive(Debug, Clone, Default)]
pub struct SinkContext {
    /// Identifies the pipeline (stable across restarts): used in transaction ids and commit
    /// metadata, so a replayed epoch is recognised as already written.
    pub pipeline_id: String,
    /// Which share of the pipeline writes through this sink, when several do (group mode:
    /// one per source partition, such as `p3`). Sinks that keep per-writer progress (Delta
    /// `txn` app ids, Kafka transactional ids) or name files per epoch keep one per share,
    /// so shares never overwrite or fence each other.
    pub instance: Option<String>,
    /// The models this sink's rows depend on: recorded in its commit metadata (Delta
    /// `commitInfo`) or message headers (Kafka), so a model change is traceable.
    pub models: Vec<ModelLineage>,
}

/// A model a sink's rows were computed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLineage {
    /// The model's name in the pipeline.
    pub name: String,
    /// SHA-256 of the ONNX file loaded, in hex.
    pub sha256: String,
}

impl SinkContext {
    /// The context of a pipeline with a single writer per sink.
    pub fn new(pipeline_id: &str) -> Self {
        Self {
            pipeline_id: pipeline_id.to_string(),
            instance: None,
            models: Vec::new(),
        }
    }

    /// `base` with this share's suffix (`base` alone when there is one writer).
    pub fn scoped(&self, base: &str, separator: &str) -> String {
        match &self.instance {
            Some(instance) => format!("{base}{separator}{instance}"),
            None => base.to_string(),
        }
    }
}

/// Where a pipeline's rows land, one epoch at a time.
///
/// `write_epoch(n, …)` must be idempotent per `n`: writing the same epoch again replaces what
/// that epoch wrote before (a replay never duplicates). Epoch 0 is batch mode's single write;
/// streaming epochs start at 1.
#[async_trait]
pub trait Sink: Send + Debug {
    /// Writes the rows of epoch `epoch` (possibly none).
    ///
    /// # Errors
    /// [`ConnectorError::External`] when the destination rejects the write.
    async fn write_epoch(&mut self, epoch: u64, batches: &[RecordBatch]) -> Result<()>;

    /// The last epoch this sink has durably committed, when it can tell (a Delta table's
    /// transaction log can). The engine skips re-writing epochs at or below it on replay.
    ///
    /// # Errors
    /// [`ConnectorError::External`] when the destination cannot be read.
    async fn committed_epoch(&mut self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Whether the sink holds rows already (`volley batch` refuses to add its rows to a run's
    /// without `--overwrite`). Sinks that keep nothing durable keep the default: no.
    ///
    /// # Errors
    /// [`ConnectorError::External`] when the destination cannot be read.
    async fn holds_rows(&mut self) -> Result<bool> {
        Ok(false)
    }

    /// What this sink lacks of what a checkpoint says was written to it: `epochs` epochs
    /// wrote rows, the last of them `last`, none after `through` (the checkpoint's epoch).
    /// `None` when it holds them all, or cannot tell (the default). A file sink counts its
    /// epoch files, a Delta table reads its `txn` version.
    ///
    /// # Errors
    /// [`ConnectorError::External`] when the destination cannot be read.
    async fn missing(&mut self, epochs: u64, last: u64, through: u64) -> Result<Option<String>> {
        let _ = (epochs, last, through);
        Ok(None)
    }

    /// Why this sink cannot be emptied (a Kafka topic), when it cannot: asked of every sink
    /// before any is emptied. The default: it can.
    fn cannot_truncate(&self) -> Option<String> {
        None
    }

    /// Removes every row the sink holds, so a pipeline started over (`--from-scratch`,
    /// `volley batch --overwrite`) never leaves the old run's rows beside the new ones. The
    /// default suits sinks that keep nothing durable.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] for a destination that cannot be emptied (a Kafka topic),
    /// saying what to do instead; [`ConnectorError::External`] when the removal fails.
    async fn truncate(&mut self) -> Result<()> {
        Ok(())
    }

    /// Called once after the last epoch; flushes anything buffered.
    ///
    /// # Errors
    /// As for `write_epoch`.
    async fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A `STORED AS` kind: validates its options and opens sources and sinks for tables of its kind.
///
/// Only [`Connector::kind`] and [`Connector::options`] are required; a kind that cannot be a
/// source (or sink) keeps the default, which returns a clear error.
#[async_trait]
pub trait Connector: Send + Sync + Debug {
    /// The `STORED AS` name, upper-case.
    fn kind(&self) -> &'static str;

    /// Options this kind accepts beyond the common ones.
    fn options(&self) -> &'static [OptionSpec];

    /// The schema a table of this kind has when the statement declares no columns.
    ///
    /// # Errors
    /// Bad options, or an unreadable location (for kinds that infer from data).
    async fn infer_schema(&self, table: &TableDecl) -> Result<Option<SchemaRef>> {
        let _ = table;
        Ok(None)
    }

    /// Opens the table as a streaming source yielding `schema`.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] if this kind cannot be read or options are wrong.
    async fn open_source(&self, table: &TableDecl, schema: SchemaRef) -> Result<Box<dyn Source>> {
        let _ = schema;
        Err(not_a(table, "source"))
    }

    /// Opens the table as a sink receiving rows of `schema`.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] if this kind cannot be written or options are wrong.
    async fn open_sink(
        &self,
        table: &TableDecl,
        schema: SchemaRef,
        context: &SinkContext,
    ) -> Result<Box<dyn Sink>> {
        let _ = (schema, context);
        Err(not_a(table, "sink"))
    }

    /// Whether a sink of this table can take an updating result (upserts keyed by the
    /// `merge_key`): a later row for a key replaces the earlier one instead of being added
    /// beside it. The default, for append-only kinds such as files: no.
    fn accepts_updates(&self, table: &TableDecl) -> bool {
        let _ = table;
        false
    }

    /// Whether `volley batch` reads this table by draining [`Connector::open_source`] (the
    /// streaming reader, with its dead letters) rather than through
    /// [`Connector::batch_table`]. Text formats that set bad records aside say yes, so batch
    /// and streaming read the same rows.
    fn batch_reads_source(&self, table: &TableDecl) -> bool {
        let _ = table;
        false
    }

    /// The table as a bounded DataFusion table for `volley batch`.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] if this kind has no bounded form.
    async fn batch_table(
        &self,
        table: &TableDecl,
        schema: SchemaRef,
    ) -> Result<Arc<dyn TableProvider>> {
        let _ = schema;
        Err(not_a(table, "bounded batch input"))
    }
}

fn not_a(table: &TableDecl, role: &str) -> ConnectorError {
    ConnectorError::Config(volley_sql::SqlError::Pipeline(format!(
        "table '{}' is STORED AS {}, which cannot be used as a {role}",
        table.name, table.kind
    )))
}
