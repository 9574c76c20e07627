//! Finding, creating and describing the Delta table behind a `LOCATION`.
//!
//! The table is reached through the object store [`Location`] resolved for every connector
//! (plain paths, `file://`, `memory://`), handed to deltalake as the table's storage backend,
//! so relative paths and in-process stores mean the same here as for the file connectors.

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::prelude::{SessionContext, cast, ident};
use deltalake::kernel::engine::arrow_conversion::TryFromArrow;
use deltalake::kernel::{DataType, StructField, StructType};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};

use super::commit::volley_metadata;
use super::errors::delta_error;
use crate::error::{ConnectorError, Result};
use crate::location::Location;

/// A not yet loaded handle on the Delta table at `location`.
fn handle(table: &str, location: &Location) -> Result<DeltaTable> {
    DeltaTableBuilder::from_url(location.url.clone())
        .map(|b| b.with_storage_backend(Arc::clone(&location.store), location.url.clone()))
        .and_then(DeltaTableBuilder::build)
        .map_err(|e| {
            ConnectorError::config(
                table,
                format!("LOCATION '{}' cannot hold a Delta table: {e}", location.url),
            )
        })
}

/// The Delta table at `location` with its latest snapshot, or `None` when there is none yet.
///
/// # Errors
/// [`ConnectorError::External`] when the transaction log exists but cannot be read.
pub(crate) async fn load(table: &str, location: &Location) -> Result<Option<DeltaTable>> {
    let mut delta = handle(table, location)?;
    let exists = delta
        .verify_deltatable_existence()
        .await
        .map_err(|e| delta_error(table, "look for a transaction log", e))?;
    if !exists {
        return Ok(None);
    }
    match delta.load().await {
        Ok(()) => Ok(Some(delta)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(e) => Err(delta_error(table, "read the transaction log", e)),
    }
}

/// The Delta column type of each output column, in output order.
///
/// # Errors
/// [`ConnectorError::Config`] naming the column when Delta cannot store its type.
pub(crate) fn delta_columns(table: &str, schema: &Schema) -> Result<Vec<(String, DataType)>> {
    schema
        .fields()
        .iter()
        .map(|field| {
            DataType::try_from_arrow(field.data_type())
                .map(|t| (field.name().clone(), t))
                .map_err(|e| {
                    ConnectorError::config(
                        table,
                        format!(
                            "column '{}' has type {} which a Delta table cannot store: {e}",
                            field.name(),
                            field.data_type()
                        ),
                    )
                })
        })
        .collect()
}

/// Creates the table at `location` with the output `schema`, partitioned by `partition_by`
/// (checked to be output columns). Every column is nullable, so later queries whose output
/// differs only in nullability can keep writing. An existing table is left as it is.
///
/// # Errors
/// [`ConnectorError::Config`] for a partition column the output lacks or a type Delta
/// cannot store; [`ConnectorError::External`] when the commit fails.
pub(crate) async fn create(
    table: &str,
    location: &Location,
    schema: &Schema,
    partition_by: &[String],
    pipeline_id: &str,
) -> Result<DeltaTable> {
    let columns = delta_columns(table, schema)?;
    require_output_columns(table, "partition_by", partition_by, schema)?;
    if partition_by.len() == columns.len() {
        return Err(ConnectorError::config(
            table,
            "option 'partition_by' names every output column; a Delta table needs at least one \
             column that is not a partition column",
        ));
    }
    let fields = columns
        .into_iter()
        .map(|(name, data_type)| StructField::new(name, data_type, true));
    let delta = handle(table, location)?;
    delta
        .create()
        .with_table_name(table)
        .with_columns(fields)
        .with_partition_columns(partition_by.iter().cloned())
        .with_save_mode(SaveMode::Ignore)
        .with_commit_properties(
            deltalake::kernel::transaction::CommitProperties::default()
                .with_metadata(volley_metadata(pipeline_id, None, &[])),
        )
        .await
        .map_err(|e| delta_error(table, "create the table", e))
}

/// Why an existing table cannot receive the output `schema`: one line per difference (by
/// column name, comparing Delta types), empty when they match.
///
/// # Errors
/// [`ConnectorError::Config`] when an output column has a type Delta cannot store.
pub(crate) fn schema_differences(
    table: &str,
    existing: &StructType,
    schema: &Schema,
) -> Result<Vec<String>> {
    let output = delta_columns(table, schema)?;
    let mut differences = Vec::new();
    for field in existing.fields() {
        match output.iter().find(|(name, _)| name == field.name()) {
            None => differences.push(format!(
                "column '{}' ({}) is in the table but not in the query's output",
                field.name(),
                field.data_type()
            )),
            Some((_, data_type)) if data_type != field.data_type() => {
                differences.push(format!(
                    "column '{}' is {} in the table but {} in the query's output",
                    field.name(),
                    field.data_type(),
                    data_type
                ));
            }
            Some(_) => {}
        }
    }
    for (name, data_type) in &output {
        if existing.field(name).is_none() {
            differences.push(format!(
                "column '{name}' ({data_type}) is in the query's output but not in the table"
            ));
        }
    }
    Ok(differences)
}

/// The table as a DataFusion provider (deltalake's scan of the latest snapshot). When
/// `schema` (declared in the statement) names the columns differently ordered or typed, the
/// scan is projected and cast to it by column name; only casts that lose no value are made.
///
/// # Errors
/// [`ConnectorError::Config`] when a declared column is not in the table, or its type in the
/// table does not convert exactly to the declared one;
/// [`ConnectorError::External`] when the table cannot be read.
pub(crate) async fn provider(
    table: &str,
    delta: &DeltaTable,
    schema: Option<&SchemaRef>,
) -> Result<Arc<dyn TableProvider>> {
    let scan = delta.table_provider().await.map_err(|e| {
        ConnectorError::external(table, format!("cannot scan the Delta table: {e}"))
    })?;
    let Some(wanted) = schema else {
        return Ok(scan);
    };
    let found = scan.schema();
    let same = wanted.fields().len() == found.fields().len()
        && wanted
            .fields()
            .iter()
            .zip(found.fields())
            .all(|(w, f)| w.name() == f.name() && w.data_type() == f.data_type());
    if same {
        return Ok(scan);
    }
    crate::types::check_declared(table, "the Delta table", &found, wanted)?;
    let mut columns = Vec::with_capacity(wanted.fields().len());
    for field in wanted.fields() {
        let Ok(existing) = found.field_with_name(field.name()) else {
            return Err(ConnectorError::config(
                table,
                format!(
                    "declared column '{}' is not in the Delta table (its columns: {})",
                    field.name(),
                    quoted(
                        &found
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                    )
                ),
            ));
        };
        let column = ident(field.name());
        columns.push(if existing.data_type() == field.data_type() {
            column
        } else {
            cast(column, field.data_type().clone()).alias(field.name())
        });
    }
    SessionContext::new()
        .read_table(scan)
        .and_then(|df| df.select(columns))
        .map(|df| df.into_view())
        .map_err(|e| {
            ConnectorError::config(
                table,
                format!("cannot read the Delta table with the declared columns: {e}"),
            )
        })
}

/// Checks that every column option `option` names is an output column of `schema`.
///
/// # Errors
/// [`ConnectorError::Config`] naming the option, the missing columns and the output columns.
pub(crate) fn require_output_columns(
    table: &str,
    option: &str,
    names: &[String],
    schema: &Schema,
) -> Result<()> {
    let missing: Vec<&str> = names
        .iter()
        .filter(|n| schema.field_with_name(n).is_err())
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let output: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    Err(ConnectorError::config(
        table,
        format!(
            "option '{option}' names {}, not output column(s); the output columns are: {}",
            quoted(&missing),
            quoted(&output)
        ),
    ))
}

/// `'a', 'b'`.
pub(crate) fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}
