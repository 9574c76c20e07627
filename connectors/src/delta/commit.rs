//! What every commit of a Delta sink carries: Volley's commit metadata and, for streaming
//! epochs, the `txn` action that makes a replayed epoch recognisable.

use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TableReference};
use deltalake::protocol::{DeltaOperation, OutputMode};
use serde_json::Value;

use super::errors::delta_error;
use crate::error::{ConnectorError, Result};
use crate::traits::ModelLineage;

/// Commit-info key holding the id of the pipeline that wrote the commit.
pub const PIPELINE_KEY: &str = "volley.pipeline";
/// Commit-info key holding the epoch a commit wrote.
pub const EPOCH_KEY: &str = "volley.epoch";
/// Commit-info key holding the models the rows depend on: `{"<model>": "<sha256>", …}`.
pub const MODELS_KEY: &str = "volley.models";

/// The commit-info entries Volley adds: the pipeline, the epoch when there is one, and the
/// models the rows were computed with when there are any.
pub(crate) fn volley_metadata(
    pipeline_id: &str,
    epoch: Option<u64>,
    models: &[ModelLineage],
) -> Vec<(String, Value)> {
    let mut entries = vec![(PIPELINE_KEY.to_string(), Value::from(pipeline_id))];
    if let Some(epoch) = epoch {
        entries.push((EPOCH_KEY.to_string(), Value::from(epoch)));
    }
    if !models.is_empty() {
        let map: serde_json::Map<String, Value> = models
            .iter()
            .map(|m| (m.name.clone(), Value::from(m.sha256.as_str())))
            .collect();
        entries.push((MODELS_KEY.to_string(), Value::Object(map)));
    }
    entries
}

/// The `txn` version recording `epoch` (Delta versions are signed).
pub(crate) fn txn_version(table: &str, epoch: u64) -> Result<i64> {
    i64::try_from(epoch).map_err(|_| {
        ConnectorError::Internal(format!(
            "table '{table}': epoch {epoch} does not fit a Delta txn version"
        ))
    })
}

/// Commit properties for writing `epoch`: Volley's metadata, plus a `txn` action
/// (`app_id`, `epoch`) for streaming epochs (batch mode's epoch 0 carries none, so running a
/// batch job again writes again).
pub(crate) fn epoch_properties(
    table: &str,
    pipeline_id: &str,
    app_id: &str,
    epoch: u64,
    models: &[ModelLineage],
) -> Result<CommitProperties> {
    let properties = CommitProperties::default().with_metadata(volley_metadata(
        pipeline_id,
        Some(epoch),
        models,
    ));
    if epoch == 0 {
        return Ok(properties);
    }
    Ok(properties
        .with_application_transaction(Transaction::new(app_id, txn_version(table, epoch)?)))
}

/// Commits `properties` alone (its `txn` action and metadata, no data): how an epoch without
/// rows is marked done, so a replay skips it like any other. Costs one small log entry.
///
/// # Errors
/// [`ConnectorError::External`] when the commit fails.
pub(crate) async fn commit_without_data(
    table: &str,
    delta: &mut DeltaTable,
    properties: CommitProperties,
    app_id: &str,
    epoch: u64,
    output_mode: OutputMode,
) -> Result<()> {
    let operation = DeltaOperation::StreamingUpdate {
        output_mode,
        query_id: app_id.to_string(),
        epoch_id: txn_version(table, epoch)?,
    };
    let snapshot = delta
        .snapshot()
        .map_err(|e| delta_error(table, "read the table state", e))?;
    CommitBuilder::from(properties)
        .build(
            Some(snapshot as &dyn TableReference),
            delta.log_store(),
            operation,
        )
        .await
        .map_err(|e| delta_error(table, &format!("commit epoch {epoch}"), e))?;
    delta
        .update_state()
        .await
        .map_err(|e| delta_error(table, "read the transaction log", e))
}
