//! The tables a pipeline reads and their schemas, as declared or as their connectors infer.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use volley_connectors::ConnectorRegistry;
use volley_sql::{Pipeline, SqlError, TableDecl};

use crate::error::{EngineError, Result};

/// The tables INSERTs read, in first-use order.
///
/// # Errors
/// A referenced table that is not declared, or one that is both read and written.
pub fn source_tables(pipeline: &Pipeline) -> Result<Vec<&TableDecl>> {
    let state = volley_sql::stream::batch_context().state();
    let mut names: Vec<String> = Vec::new();
    for insert in &pipeline.inserts {
        let statement = DfStatement::Statement(Box::new(SqlStatement::Query(insert.query.clone())));
        let refs = state
            .resolve_table_references(&statement)
            .map_err(|e| SqlError::plan(insert.at, e))?;
        for r in refs {
            let name = r.table().to_string();
            // A table function (generate_series, range) is a constant table, not a reference.
            if pipeline.table(&name).is_none() && state.table_functions().contains_key(&name) {
                continue;
            }
            if pipeline.table(&name).is_none() {
                return Err(SqlError::Plan {
                    at: insert.at,
                    message: format!(
                        "table '{name}' is not declared; declare it with CREATE EXTERNAL TABLE"
                    ),
                }
                .into());
            }
            if pipeline.inserts.iter().any(|i| i.target == name) {
                return Err(SqlError::Unsupported {
                    at: insert.at,
                    message: format!("table '{name}' is both written and read by this pipeline; chaining INSERTs through a table is not supported yet"),
                }
                .into());
            }
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Ok(names.iter().filter_map(|n| pipeline.table(n)).collect())
}

/// The schema of a table: declared, or what its connector infers.
///
/// # Errors
/// Neither declared nor inferable.
pub async fn table_schema(table: &TableDecl, registry: &ConnectorRegistry) -> Result<SchemaRef> {
    if let Some(schema) = &table.declared_schema {
        return Ok(Arc::clone(schema));
    }
    let connector = connector_for(table, registry)?;
    connector.infer_schema(table).await?.ok_or_else(|| {
        EngineError::Sql(SqlError::Pipeline(format!(
            "table '{}' (STORED AS {}) declares no columns and they cannot be inferred from LOCATION '{}': it holds no file of that format yet (check the path), or the kind cannot infer them; list the columns in CREATE EXTERNAL TABLE",
            table.name, table.kind, table.location
        )))
    })
}

/// The connector of `table`'s kind.
///
/// # Errors
/// A kind no connector serves.
pub fn connector_for<'a>(
    table: &TableDecl,
    registry: &'a ConnectorRegistry,
) -> Result<&'a Arc<dyn volley_connectors::Connector>> {
    registry.get(&table.kind).ok_or_else(|| {
        EngineError::Sql(SqlError::UnknownKind {
            table: table.name.clone(),
            kind: table.kind.clone(),
            allowed: volley_sql::KindCatalog::kinds(registry).join(", "),
        })
    })
}
