//! [`DeltaSink`]: one Delta commit per epoch, recognised on replay by its `txn` action.

use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::common::Column;
use datafusion::logical_expr::{Expr, Operator, and, binary_expr};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::{OutputMode, SaveMode};
use volley_sql::TableDecl;

use super::commit::{commit_without_data, epoch_properties, volley_metadata};
use super::dedupe::last_row_per_key;
use super::errors::delta_error;
use super::options::DeltaOptions;
use super::table::{self, quoted};
use crate::error::{ConnectorError, Result};
use crate::location::Location;
use crate::traits::{ModelLineage, Sink, SinkContext};

/// Source and target aliases inside the MERGE.
const SOURCE: &str = "source";
const TARGET: &str = "target";

/// Writes each epoch as one Delta commit.
///
/// - Streaming epochs (`≥ 1`) carry a `txn` action `(app_id, epoch)`; before writing epoch
///   `n` the sink reads the table's txn version for its `app_id` and skips the epoch when it
///   is already `≥ n`, so a replay never writes twice. [`Sink::committed_epoch`] reports the
///   same version.
/// - Without `merge_key` an epoch is appended; with it, the epoch's rows (last row per key
///   wins) are MERGEd: matching rows updated, new keys inserted, in the one commit carrying
///   the `txn` action.
/// - A streaming epoch without rows commits its `txn` action alone (one small log entry), so
///   it counts as done; batch mode's empty epoch 0 writes nothing.
/// - Each commit's info records `volley.pipeline` and `volley.epoch`.
/// - With `compact_every = n`, the table is compacted (deltalake's optimize) after every
///   `n` epochs this sink committed with rows (counted from when it opened).
///
/// # Cancellation
/// Dropping a `write_epoch` future leaves the epoch either committed (its `txn` action says
/// so, and a replay skips it) or not committed at all: data files written before the commit
/// are not part of the table (a Delta `VACUUM` removes them).
///
/// # Example
/// ```
/// use std::sync::Arc;
///
/// use arrow::array::Int64Array;
/// use arrow::datatypes::{DataType, Field, Schema};
/// use arrow::record_batch::RecordBatch;
/// use volley_connectors::delta::DeltaConnector;
/// use volley_connectors::{Connector, SinkContext};
/// use volley_sql::{StatementRef, TableDecl, TableOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let schema = Arc::new(Schema::new(vec![Field::new("zone", DataType::Int64, false)]));
/// let table = TableDecl {
///     name: "zones".into(),
///     kind: "DELTA".into(),
///     location: "memory://delta-doc/zones".into(),
///     declared_schema: None,
///     options: TableOptions::unchecked("zones", []),
///     watermark: None,
///     at: StatementRef::default(),
/// };
/// let context = SinkContext::new("doc");
/// let mut sink = DeltaConnector.open_sink(&table, schema.clone(), &context).await?;
/// let rows = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2]))])?;
/// sink.write_epoch(1, &[rows.clone()]).await?;
/// sink.write_epoch(1, &[rows]).await?; // a replay of epoch 1: skipped
/// assert_eq!(sink.committed_epoch().await?, Some(1));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct DeltaSink {
    table: String,
    delta: DeltaTable,
    /// The table's own Arrow schema: batches are cast to it, by column name, before writing.
    schema: SchemaRef,
    pipeline_id: String,
    /// The models the rows depend on, recorded in every commit.
    models: Vec<ModelLineage>,
    app_id: String,
    merge_key: Option<Vec<String>>,
    compact_every: Option<u64>,
    epochs_since_compaction: u64,
    compactions: u64,
    /// The table's txn version for `app_id`: read from the log when the sink opens, then
    /// advanced by this sink's own commits (one writer per app id), so an epoch costs no
    /// extra log read.
    committed: Option<i64>,
}

impl DeltaSink {
    /// Opens the Delta table of `table` for rows of `schema`, creating it (partitioned by
    /// `partition_by`) when `LOCATION` holds none.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] for bad options, a `merge_key` or `partition_by` column the
    /// output lacks, or an existing table whose columns differ from `schema` (every difference
    /// is listed); [`ConnectorError::External`] when the table cannot be read or created.
    pub async fn open(table: &TableDecl, schema: SchemaRef, context: &SinkContext) -> Result<Self> {
        let name = table.name.as_str();
        let options = DeltaOptions::from_options(&table.options)?;
        let merge_key = table.merge_key().filter(|k| !k.is_empty());
        if let Some(keys) = &merge_key {
            table::require_output_columns(name, "merge_key", keys, &schema)?;
        }
        let location = Location::resolve_sink_dir(name, &table.location).await?;
        let delta = match table::load(name, &location).await? {
            Some(delta) => {
                check_existing(name, &location, &delta, &schema, &options.partition_by)?;
                delta
            }
            None => {
                let created = table::create(
                    name,
                    &location,
                    &schema,
                    &options.partition_by,
                    &context.pipeline_id,
                )
                .await;
                match created {
                    Ok(delta) => delta,
                    // Another writer created it first (group mode starts several at once).
                    Err(e) => match table::load(name, &location).await? {
                        Some(delta) => {
                            check_existing(
                                name,
                                &location,
                                &delta,
                                &schema,
                                &options.partition_by,
                            )?;
                            delta
                        }
                        None => return Err(e),
                    },
                }
            }
        };
        let table_schema = delta
            .snapshot()
            .map_err(|e| delta_error(name, "read the table state", e))?
            .snapshot()
            .arrow_schema();
        let mut sink = Self {
            table: name.to_string(),
            delta,
            schema: table_schema,
            pipeline_id: context.pipeline_id.clone(),
            models: context.models.clone(),
            app_id: context.scoped(
                &options
                    .app_id
                    .unwrap_or_else(|| format!("{}:{name}", context.pipeline_id)),
                ":",
            ),
            merge_key,
            compact_every: options.compact_every,
            epochs_since_compaction: 0,
            compactions: 0,
            committed: None,
        };
        sink.committed = sink.refresh_committed().await?;
        Ok(sink)
    }

    /// The application id of this sink's `txn` actions.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// Compactions run so far.
    pub fn compactions(&self) -> u64 {
        self.compactions
    }

    /// Rereads the transaction log, then the last epoch recorded for this sink's `app_id`.
    async fn refresh_committed(&mut self) -> Result<Option<i64>> {
        self.delta
            .update_state()
            .await
            .map_err(|e| delta_error(&self.table, "read the transaction log", e))?;
        let log_store = self.delta.log_store();
        self.delta
            .snapshot()
            .map_err(|e| delta_error(&self.table, "read the table state", e))?
            .transaction_version(log_store.as_ref(), &self.app_id)
            .await
            .map_err(|e| delta_error(&self.table, "read its txn actions", e))
    }

    /// `batch` with the table's schema: columns picked by name and cast to the table's types
    /// (nanosecond timestamps are stored as microseconds, for instance).
    fn conform(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let columns = self
            .schema
            .fields()
            .iter()
            .map(|field| {
                let column = batch.column_by_name(field.name()).ok_or_else(|| {
                    ConnectorError::Internal(format!(
                        "table '{}': a batch has no column '{}'",
                        self.table,
                        field.name()
                    ))
                })?;
                if column.data_type() == field.data_type() {
                    return Ok(column.clone());
                }
                cast(column, field.data_type()).map_err(|e| {
                    ConnectorError::config(
                        &self.table,
                        format!(
                            "cannot store column '{}' as {}: {e}",
                            field.name(),
                            field.data_type()
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| {
            ConnectorError::config(
                &self.table,
                format!("rows do not fit the Delta table's columns: {e}"),
            )
        })
    }

    async fn append(&mut self, rows: Vec<RecordBatch>, properties: CommitProperties) -> Result<()> {
        self.delta = self
            .delta
            .clone()
            .write(rows)
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(properties)
            .await
            .map_err(|e| delta_error(&self.table, "append rows", e))?;
        Ok(())
    }

    async fn merge(
        &mut self,
        keys: &[String],
        rows: &[RecordBatch],
        properties: CommitProperties,
    ) -> Result<()> {
        let fail = |e: &dyn std::fmt::Display| {
            ConnectorError::external(&self.table, format!("Delta table: cannot merge rows: {e}"))
        };
        let source = last_row_per_key(&self.schema, rows, keys)?;
        let source = SessionContext::new()
            .read_batch(source)
            .map_err(|e| fail(&e))?;
        let predicate = keys
            .iter()
            .map(|k| {
                binary_expr(
                    qualified(TARGET, k),
                    Operator::IsNotDistinctFrom,
                    qualified(SOURCE, k),
                )
            })
            .reduce(and)
            .ok_or_else(|| ConnectorError::Internal("merge without key columns".into()))?;
        let names: Vec<String> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let mut builder = self
            .delta
            .clone()
            .merge(source, predicate)
            .with_source_alias(SOURCE)
            .with_target_alias(TARGET)
            .with_commit_properties(properties);
        if names.iter().any(|n| !keys.contains(n)) {
            builder = builder
                .when_matched_update(|update| {
                    names
                        .iter()
                        .filter(|n| !keys.contains(n))
                        .fold(update, |u, n| {
                            u.update(Column::new_unqualified(n), qualified(SOURCE, n))
                        })
                })
                .map_err(|e| fail(&e))?;
        }
        builder = builder
            .when_not_matched_insert(|insert| {
                names.iter().fold(insert, |i, n| {
                    i.set(Column::new_unqualified(n), qualified(SOURCE, n))
                })
            })
            .map_err(|e| fail(&e))?;
        let (delta, _metrics) = builder
            .await
            .map_err(|e| delta_error(&self.table, "merge rows", e))?;
        self.delta = delta;
        Ok(())
    }

    /// Compacts the table when `compact_every` epochs with rows have been committed since the
    /// last compaction. The epoch is already durable by then, so a failed compaction is logged
    /// and tried again after the next epoch instead of failing the pipeline.
    async fn compact_if_due(&mut self) {
        let Some(every) = self.compact_every else {
            return;
        };
        self.epochs_since_compaction += 1;
        if self.epochs_since_compaction < every {
            return;
        }
        let compacted = self
            .delta
            .clone()
            .optimize()
            .with_commit_properties(CommitProperties::default().with_metadata(volley_metadata(
                &self.pipeline_id,
                None,
                &self.models,
            )))
            .await;
        match compacted {
            Ok((delta, metrics)) => {
                tracing::debug!(
                    table = %self.table,
                    files_removed = metrics.num_files_removed,
                    files_added = metrics.num_files_added,
                    "compacted Delta table"
                );
                self.delta = delta;
                self.epochs_since_compaction = 0;
                self.compactions += 1;
            }
            Err(e) => tracing::warn!(
                table = %self.table,
                error = %e,
                "Delta table compaction failed; retrying after the next epoch"
            ),
        }
    }
}

/// How many times an epoch's commit is tried when other writers commit to the table at the
/// same time (deltalake resolves blind appends itself; a MERGE that read files another writer
/// changed is redone over the new table state).
const COMMIT_ATTEMPTS: u32 = 8;

#[async_trait]
impl Sink for DeltaSink {
    async fn missing(&mut self, _epochs: u64, last: u64, _through: u64) -> Result<Option<String>> {
        let committed = self.refresh_committed().await?;
        self.committed = committed;
        let version = super::commit::txn_version(&self.table, last)?;
        Ok(match committed {
            Some(done) if done >= version => None,
            Some(done) => Some(format!(
                "the Delta table records epochs of this pipeline up to {done}, but epoch {last} was written to it"
            )),
            None => Some(format!(
                "the Delta table records no epoch of this pipeline (app id '{}'), but epochs up to {last} were written to it",
                self.app_id
            )),
        })
    }

    async fn holds_rows(&mut self) -> Result<bool> {
        self.delta
            .update_state()
            .await
            .map_err(|e| delta_error(&self.table, "read the transaction log", e))?;
        let mut files = self
            .delta
            .get_file_uris()
            .map_err(|e| delta_error(&self.table, "list its files", e))?;
        Ok(files.next().is_some())
    }

    /// One commit removing every row (the table's history keeps them for time travel).
    async fn truncate(&mut self) -> Result<()> {
        if !self.holds_rows().await? {
            return Ok(());
        }
        let properties = CommitProperties::default().with_metadata(super::commit::volley_metadata(
            &self.pipeline_id,
            None,
            &self.models,
        ));
        let (table, _) = self
            .delta
            .clone()
            .delete()
            .with_commit_properties(properties)
            .await
            .map_err(|e| delta_error(&self.table, "remove its rows to start over", e))?;
        self.delta = table;
        Ok(())
    }

    async fn write_epoch(&mut self, epoch: u64, batches: &[RecordBatch]) -> Result<()> {
        let mut attempt = 1;
        loop {
            match self.write_once(epoch, batches).await {
                Err(ConnectorError::External {
                    retryable: true,
                    message,
                    ..
                }) if attempt < COMMIT_ATTEMPTS => {
                    tracing::info!(table = %self.table, epoch, attempt, %message, "Delta commit failed; rereading the table and trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt.min(5)))
                        .await;
                    attempt += 1;
                    self.committed = self.refresh_committed().await?;
                }
                done => return done,
            }
        }
    }

    /// The txn version read from the log when the sink opened, advanced by its own commits
    /// (one writer per app id): no second log read at start-up.
    async fn committed_epoch(&mut self) -> Result<Option<u64>> {
        Ok(self.committed.and_then(|v| u64::try_from(v).ok()))
    }
}

impl DeltaSink {
    /// One try at committing epoch `epoch` (skipped when the table already records it).
    async fn write_once(&mut self, epoch: u64, batches: &[RecordBatch]) -> Result<()> {
        let version = super::commit::txn_version(&self.table, epoch)?;
        if epoch > 0
            && let Some(done) = self.committed
            && done >= version
        {
            tracing::debug!(table = %self.table, epoch, done, "epoch already in the Delta table; skipped");
            return Ok(());
        }
        let rows = batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| self.conform(b))
            .collect::<Result<Vec<_>>>()?;
        let properties = epoch_properties(
            &self.table,
            &self.pipeline_id,
            &self.app_id,
            epoch,
            &self.models,
        )?;
        if rows.is_empty() {
            if epoch == 0 {
                return Ok(());
            }
            let mode = if self.merge_key.is_some() {
                OutputMode::Update
            } else {
                OutputMode::Append
            };
            commit_without_data(
                &self.table,
                &mut self.delta,
                properties,
                &self.app_id,
                epoch,
                mode,
            )
            .await?;
        } else {
            match self.merge_key.clone() {
                Some(keys) => self.merge(&keys, &rows, properties).await?,
                None => self.append(rows, properties).await?,
            }
            self.compact_if_due().await;
        }
        if epoch > 0 {
            self.committed = Some(version);
        }
        Ok(())
    }
}

/// Checks that an existing table can take the sink's rows.
fn check_existing(
    name: &str,
    location: &Location,
    delta: &DeltaTable,
    schema: &SchemaRef,
    partition_by: &[String],
) -> Result<()> {
    let state = delta
        .snapshot()
        .map_err(|e| delta_error(name, "read the table state", e))?;
    let differences = table::schema_differences(name, &state.schema(), schema)?;
    if !differences.is_empty() {
        return Err(ConnectorError::config(
            name,
            format!(
                "the query's output does not match the Delta table at LOCATION '{}': {}",
                location.url,
                differences.join("; ")
            ),
        ));
    }
    let existing = state.metadata().partition_columns();
    if !partition_by.is_empty() && existing != partition_by {
        return Err(ConnectorError::config(
            name,
            format!(
                "option 'partition_by' is {} but the existing Delta table at LOCATION '{}' is partitioned by {}",
                quoted(&partition_by.iter().map(String::as_str).collect::<Vec<_>>()),
                location.url,
                if existing.is_empty() {
                    "nothing".to_string()
                } else {
                    quoted(&existing.iter().map(String::as_str).collect::<Vec<_>>())
                }
            ),
        ));
    }
    Ok(())
}

/// `relation.name`, as a column reference that keeps `name`'s case.
fn qualified(relation: &str, name: &str) -> Expr {
    Expr::Column(Column::new(Some(relation), name))
}
