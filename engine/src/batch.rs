//! `volley batch`: the same INSERTs, run once by DataFusion over bounded inputs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use volley_connectors::dead_letter::DeadLetterWriter;
use volley_connectors::{ConnectorRegistry, Sink, SinkContext};
use volley_sql::stream::{batch_context, insert_logical_plan, register_models};
use volley_sql::{Pipeline, SqlError, TableDecl, TableOptions};
use volley_udfs::model::{ModelSet, models_called};

use crate::error::{EngineError, Result};
use crate::setup::{source_tables, table_schema};

/// `--input NAME=PATH` bindings: source table → bounded file (Parquet, CSV or JSON by extension),
/// directory of Parquet files, or Delta table (a directory holding `_delta_log`).
pub type InputBindings = HashMap<String, String>;

/// Parses `NAME=PATH`.
///
/// # Errors
/// A binding without `=`.
pub fn parse_binding(text: &str) -> Result<(String, String)> {
    text.split_once('=')
        .map(|(n, p)| (n.trim().to_string(), p.trim().to_string()))
        .ok_or_else(|| EngineError::Usage(format!("--input '{text}': expected NAME=PATH")))
}

fn kind_for_path(path: &str) -> Result<&'static str> {
    let lower = path.to_ascii_lowercase();
    let kind = if is_delta_table(path) {
        "DELTA"
    } else if lower.ends_with(".parquet") || lower.ends_with(".pq") {
        "PARQUET"
    } else if lower.ends_with(".csv") {
        "CSV"
    } else if lower.ends_with(".json") || lower.ends_with(".jsonl") || lower.ends_with(".ndjson") {
        "JSON"
    } else if std::path::Path::new(path).is_dir() {
        "PARQUET"
    } else {
        return Err(EngineError::Usage(format!(
            "--input '{path}': cannot tell the format; use a .parquet, .csv or .json file, a directory of Parquet files, or a Delta table directory (holding {})",
            volley_connectors::delta::DELTA_LOG_DIR
        )));
    };
    Ok(kind)
}

/// Whether `path` (a plain path, relative to the current directory, or a `file://` URL) is a
/// directory holding a Delta transaction log.
fn is_delta_table(path: &str) -> bool {
    volley_connectors::location::Location::resolve(path, path)
        .ok()
        .filter(|location| location.url.scheme() == "file")
        .and_then(|location| location.url.to_file_path().ok())
        .is_some_and(|dir| dir.join(volley_connectors::delta::DELTA_LOG_DIR).is_dir())
}

/// The bounded provider for a source table: its `--input` file if bound, else the table itself.
///
/// # Errors
/// Unknown formats, unreadable files, kinds with no bounded form.
pub async fn bounded_provider(
    table: &TableDecl,
    inputs: &InputBindings,
    registry: &ConnectorRegistry,
) -> Result<Arc<dyn TableProvider>> {
    let decl = match inputs.get(&table.name) {
        Some(path) => TableDecl {
            kind: kind_for_path(path)?.to_string(),
            location: path.clone(),
            options: TableOptions::unchecked(&table.name, []),
            ..table.clone()
        },
        None => table.clone(),
    };
    let schema = table_schema(&decl, registry).await?;
    let connector = registry
        .get(&decl.kind)
        .ok_or_else(|| EngineError::Internal(format!("no connector for {}", decl.kind)))?;
    Ok(connector.batch_table(&decl, schema).await?)
}

/// Every row of each source table, bounded: `(schema, batches)` by table name.
///
/// # Errors
/// As for [`bounded_provider`], and read failures.
pub async fn read_sources(
    pipeline: &Pipeline,
    inputs: &InputBindings,
    registry: &ConnectorRegistry,
) -> Result<BTreeMap<String, (SchemaRef, Vec<RecordBatch>)>> {
    check_bindings(pipeline, inputs)?;
    let ctx = SessionContext::new();
    let mut out = BTreeMap::new();
    for table in source_tables(pipeline)? {
        let provider = bounded_provider(table, inputs, registry).await?;
        let schema = provider.schema();
        // Partitions are concatenated in order (never interleaved as they finish), so "as
        // read" is the source's own order, the same on every run and every machine.
        let batches: Vec<RecordBatch> = ctx
            .read_table(provider)
            .map_err(EngineError::exec(format!("reading '{}'", table.name)))?
            .collect_partitioned()
            .await
            .map_err(EngineError::exec(format!("reading '{}'", table.name)))?
            .into_iter()
            .flatten()
            .collect();
        out.insert(table.name.clone(), (schema, batches));
    }
    Ok(out)
}

fn check_bindings(pipeline: &Pipeline, inputs: &InputBindings) -> Result<()> {
    for name in inputs.keys() {
        if pipeline.table(name).is_none() {
            let names: Vec<&str> = pipeline.tables.iter().map(|t| t.name.as_str()).collect();
            return Err(EngineError::Usage(format!(
                "--input {name}=…: the pipeline declares no table '{name}' (tables: {})",
                names.join(", ")
            )));
        }
    }
    Ok(())
}

/// Runs every INSERT as a batch query over `ctx` (sources already registered), returning each
/// sink's rows.
///
/// # Errors
/// Planning and execution failures.
pub async fn run_inserts(
    ctx: &SessionContext,
    pipeline: &Pipeline,
) -> Result<BTreeMap<String, Vec<RecordBatch>>> {
    let mut outputs: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
    for insert in &pipeline.inserts {
        let sink = pipeline
            .table(&insert.target)
            .and_then(|t| t.declared_schema.as_ref());
        let plan = insert_logical_plan(ctx, insert, sink).await?;
        let batches = ctx
            .execute_logical_plan(plan)
            .await
            .map_err(|e| SqlError::plan(insert.at, e))?
            .collect()
            .await
            .map_err(EngineError::exec(format!(
                "INSERT INTO {} ({})",
                insert.target, insert.at
            )))?;
        outputs
            .entry(insert.target.clone())
            .or_default()
            .extend(batches.into_iter().filter(|b| b.num_rows() > 0));
    }
    Ok(outputs)
}

/// Batch outputs over rows already in memory (used by `verify` and tests).
///
/// # Errors
/// As for [`run_inserts`].
pub async fn batch_outputs(
    pipeline: &Pipeline,
    rows: &BTreeMap<String, (SchemaRef, Vec<RecordBatch>)>,
) -> Result<BTreeMap<String, Vec<RecordBatch>>> {
    let ctx = batch_context();
    register_models(&ctx, crate::models::load_models(pipeline)?);
    for (name, (schema, batches)) in rows {
        let table = MemTable::try_new(Arc::clone(schema), vec![batches.clone()])
            .map_err(EngineError::exec(format!("loading '{name}'")))?;
        ctx.register_table(name.as_str(), Arc::new(table))
            .map_err(EngineError::exec(format!("registering '{name}'")))?;
    }
    run_inserts(&ctx, pipeline).await
}

/// `volley batch`: runs the pipeline once over bounded inputs and writes every sink (epoch 0).
/// Returns rows written per sink.
///
/// # Errors
/// Bindings, planning, execution and sink failures.
pub async fn run_batch(
    pipeline: &Pipeline,
    inputs: &InputBindings,
    registry: &ConnectorRegistry,
    mut sink_overrides: HashMap<String, Box<dyn Sink>>,
) -> Result<BTreeMap<String, u64>> {
    check_bindings(pipeline, inputs)?;
    let ctx = batch_context();
    let models = crate::models::load_models(pipeline)?;
    register_models(&ctx, Arc::clone(&models));
    for table in source_tables(pipeline)? {
        let provider = bounded_provider(table, inputs, registry).await?;
        ctx.register_table(table.name.as_str(), provider)
            .map_err(EngineError::exec(format!("registering '{}'", table.name)))?;
    }
    let outputs = run_inserts(&ctx, pipeline).await?;
    let context = SinkContext::default();
    let destinations = crate::models::letter_destinations(pipeline);
    for (source, letters) in crate::models::take_letters(&models) {
        let destination = crate::models::destination(&destinations, &source);
        let rows: usize = letters.iter().map(|l| l.rows.num_rows()).sum();
        tracing::warn!(%source, rows, %destination, "rows left out by predict() went to dead letters");
        DeadLetterWriter::for_pipeline(&destination, &context)?
            .write_epoch(0, &letters)
            .await?;
    }
    let mut written = BTreeMap::new();
    for target in pipeline.sink_names() {
        let batches = outputs.get(target).cloned().unwrap_or_default();
        let table = pipeline
            .table(target)
            .ok_or_else(|| EngineError::Internal(format!("sink '{target}' vanished")))?;
        let mut sink = match sink_overrides.remove(target) {
            Some(sink) => sink,
            None => {
                let schema = match (&table.declared_schema, batches.first()) {
                    (Some(s), _) => Arc::clone(s),
                    (None, Some(b)) => b.schema(),
                    (None, None) => {
                        let plan = insert_logical_plan(
                            &ctx,
                            pipeline
                                .inserts
                                .iter()
                                .find(|i| i.target == target)
                                .ok_or_else(|| EngineError::Internal("insert vanished".into()))?,
                            None,
                        )
                        .await?;
                        Arc::new(plan.schema().as_arrow().clone())
                    }
                };
                if let Some(insert) = pipeline.inserts.iter().find(|i| i.target == target) {
                    crate::sink_fit::check_merge_key(table, &schema, insert.at, target)?;
                }
                registry
                    .get(&table.kind)
                    .ok_or_else(|| {
                        EngineError::Internal(format!("no connector for {}", table.kind))
                    })?
                    .open_sink(
                        table,
                        schema,
                        &SinkContext {
                            models: sink_lineage(&ctx, pipeline, &models, target).await?,
                            ..SinkContext::default()
                        },
                    )
                    .await?
            }
        };
        sink.write_epoch(0, &batches).await?;
        sink.close().await?;
        written.insert(
            target.to_string(),
            batches.iter().map(|b| b.num_rows() as u64).sum(),
        );
    }
    Ok(written)
}

/// The models the rows of sink `target` depend on: those every INSERT into it calls.
async fn sink_lineage(
    ctx: &SessionContext,
    pipeline: &Pipeline,
    models: &ModelSet,
    target: &str,
) -> Result<Vec<volley_connectors::ModelLineage>> {
    let mut names = Vec::new();
    for insert in pipeline.inserts.iter().filter(|i| i.target == target) {
        let plan = insert_logical_plan(ctx, insert, None).await?;
        names.extend(models_called(&plan));
    }
    Ok(crate::models::lineage(models, names))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn delta_directories_are_delta_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let delta = dir.path().join("rides.parquet");
        std::fs::create_dir_all(delta.join(volley_connectors::delta::DELTA_LOG_DIR)).unwrap();
        let plain = dir.path().join("plain");
        std::fs::create_dir_all(&plain).unwrap();
        let url = format!("file://{}", delta.display());
        assert_eq!(kind_for_path(delta.to_str().unwrap()).unwrap(), "DELTA");
        assert_eq!(kind_for_path(&url).unwrap(), "DELTA");
        assert_eq!(kind_for_path(plain.to_str().unwrap()).unwrap(), "PARQUET");
        assert_eq!(kind_for_path("rides.csv").unwrap(), "CSV");
        let err = kind_for_path("rides.txt").unwrap_err().to_string();
        assert!(err.contains("Delta"), "{err}");
    }
}
