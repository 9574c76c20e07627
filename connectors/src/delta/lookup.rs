//! A Delta table as a lookup table: its rows at one version, and whether a newer one exists.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use volley_sql::TableDecl;

use super::errors::delta_error;
use super::table::{load, provider};
use crate::error::{ConnectorError, Result};
use crate::location::Location;

/// Every row of the Delta table `table` at `version` (the newest when `None`), with its
/// columns checked against `schema`, and the version read.
///
/// # Errors
/// [`ConnectorError::Config`] when `LOCATION` holds no Delta table or its columns differ;
/// [`ConnectorError::External`] when the version cannot be read (for example, vacuumed).
pub async fn read_version(
    table: &TableDecl,
    schema: &SchemaRef,
    version: Option<u64>,
) -> Result<(u64, Vec<RecordBatch>)> {
    let location = Location::resolve(&table.name, &table.location)?;
    let mut delta = load(&table.name, &location).await?.ok_or_else(|| {
        ConnectorError::config(
            &table.name,
            format!(
                "LOCATION '{}' holds no Delta table (no {} with commits)",
                table.location,
                super::DELTA_LOG_DIR
            ),
        )
    })?;
    if let Some(version) = version
        && delta.version() != Some(version)
    {
        delta
            .load_version(version)
            .await
            .map_err(|e| delta_error(&table.name, &format!("read version {version}"), e))?;
    }
    let read = delta.version().ok_or_else(|| {
        ConnectorError::external(&table.name, "the Delta table loaded no version".to_string())
    })?;
    let scan = provider(&table.name, &delta, Some(schema)).await?;
    let batches = SessionContext::new()
        .read_table(scan)
        .map_err(|e| ConnectorError::external(&table.name, format!("cannot scan: {e}")))?
        .collect()
        .await
        .map_err(|e| ConnectorError::external(&table.name, format!("cannot scan: {e}")))?;
    Ok((read, batches))
}

/// The newest version in the Delta table's log.
///
/// # Errors
/// As for [`read_version`].
pub async fn latest_version(table: &TableDecl) -> Result<u64> {
    let location = Location::resolve(&table.name, &table.location)?;
    let delta = load(&table.name, &location).await?.ok_or_else(|| {
        ConnectorError::config(
            &table.name,
            format!(
                "LOCATION '{}' holds no Delta table any more",
                table.location
            ),
        )
    })?;
    delta
        .get_latest_version()
        .await
        .map_err(|e| delta_error(&table.name, "read the newest version", e))
}
