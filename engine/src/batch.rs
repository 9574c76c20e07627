//! `volley batch`: the same INSERTs, run once by DataFusion over bounded inputs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use volley_connectors::dead_letter::{DeadLetterBatch, DeadLetterWriter};
use volley_connectors::live::LiveTables;
use volley_connectors::{ConnectorRegistry, RejectedRecord, Sink, SinkContext, SourcePoll};
use volley_sql::stream::{batch_context, insert_logical_plan, register_models};
use volley_sql::{Pipeline, SqlError, TableDecl, TableOptions};
use volley_udfs::model::{ModelSet, models_called};

use crate::error::{EngineError, Result};
use crate::tables::{source_tables, table_schema};

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

/// The declaration batch mode reads for `table`: its `--input` file if bound (keeping the
/// table's options that the file's kind also takes, such as `has_header`, `delimiter` and
/// `timestamp_unit`, so the file is read as the table would be), else the table itself.
///
/// # Errors
/// A path whose format cannot be told.
pub fn bound_decl(
    table: &TableDecl,
    inputs: &InputBindings,
    registry: &ConnectorRegistry,
) -> Result<TableDecl> {
    let Some(path) = inputs.get(&table.name) else {
        return Ok(table.clone());
    };
    let kind = kind_for_path(path)?;
    let accepted: Vec<&str> = registry
        .get(kind)
        .map(|c| c.options().iter().map(|o| o.name).collect())
        .unwrap_or_default();
    let kept = table
        .options
        .iter()
        .filter(|(name, _)| accepted.contains(name) || *name == "dead_letter")
        .map(|(n, v)| (n.to_string(), v.to_string()));
    Ok(TableDecl {
        kind: kind.to_string(),
        location: path.clone(),
        options: TableOptions::unchecked(&table.name, kept),
        ..table.clone()
    })
}

/// A source table as batch mode reads it.
#[derive(Debug)]
pub enum BoundedInput {
    /// A DataFusion table, scanned by the batch query itself (Parquet, Delta, generators).
    Table(Arc<dyn TableProvider>),
    /// Every row, read by the table's streaming reader (CSV, JSON), with the records it set
    /// aside as dead letters.
    Rows {
        /// The rows' schema.
        schema: SchemaRef,
        /// The rows, in the source's order.
        batches: Vec<RecordBatch>,
        /// Records that could not become rows.
        rejected: Vec<RejectedRecord>,
    },
}

/// Reads `table` (or its `--input` binding) as batch mode does: the same reader as `run` for
/// kinds that set bad records aside, DataFusion's table otherwise.
///
/// # Errors
/// Unknown formats, missing or unreadable files, kinds with no bounded form.
pub async fn bounded_input(
    table: &TableDecl,
    inputs: &InputBindings,
    registry: &ConnectorRegistry,
) -> Result<BoundedInput> {
    let decl = bound_decl(table, inputs, registry)?;
    let schema = table_schema(&decl, registry).await?;
    let connector = registry
        .get(&decl.kind)
        .ok_or_else(|| EngineError::Internal(format!("no connector for {}", decl.kind)))?;
    if !connector.batch_reads_source(&decl) {
        return Ok(BoundedInput::Table(
            connector.batch_table(&decl, schema).await?,
        ));
    }
    let mut source = connector.open_source(&decl, Arc::clone(&schema)).await?;
    let mut batches = Vec::new();
    let mut rejected = Vec::new();
    loop {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
        let polled = source.poll_batch(65_536, deadline).await?;
        rejected.extend(source.take_rejected());
        match polled {
            SourcePoll::Data(batch) if batch.num_rows() > 0 => batches.push(batch),
            SourcePoll::Partitions(parts) => {
                batches.extend(
                    parts
                        .into_iter()
                        .map(|(_, b)| b)
                        .filter(|b| b.num_rows() > 0),
                );
            }
            SourcePoll::Exhausted => break,
            SourcePoll::Data(_) | SourcePoll::Pending => {}
        }
    }
    Ok(BoundedInput::Rows {
        schema: source.schema(),
        batches,
        rejected,
    })
}

/// Every row of each source table, bounded: `(schema, batches)` by table name.
///
/// # Errors
/// As for [`bounded_input`], and read failures.
pub async fn read_sources(
    pipeline: &Pipeline,
    inputs: &InputBindings,
    registry: &ConnectorRegistry,
) -> Result<BTreeMap<String, (SchemaRef, Vec<RecordBatch>)>> {
    check_bindings(pipeline, inputs)?;
    let ctx = SessionContext::new();
    let mut out = BTreeMap::new();
    for table in source_tables(pipeline)? {
        let (schema, batches) = match bounded_input(table, inputs, registry).await? {
            BoundedInput::Rows {
                schema, batches, ..
            } => (schema, batches),
            BoundedInput::Table(provider) => {
                let schema = provider.schema();
                // Partitions are concatenated in order (never interleaved as they finish), so
                // "as read" is the source's own order, the same on every run and every machine.
                let batches: Vec<RecordBatch> = ctx
                    .read_table(provider)
                    .map_err(EngineError::exec(format!("reading '{}'", table.name)))?
                    .collect_partitioned()
                    .await
                    .map_err(EngineError::exec(format!("reading '{}'", table.name)))?
                    .into_iter()
                    .flatten()
                    .collect();
                (schema, batches)
            }
        };
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

/// Where `volley batch` writes.
#[derive(Debug, Clone, Default)]
pub struct BatchOutput {
    /// Every sink's LOCATION moved under this directory (`DIR/<table>`), leaving what a
    /// streaming run wrote alone.
    pub dir: Option<String>,
    /// Empty a sink that holds rows before writing (otherwise such a sink is refused).
    pub overwrite: bool,
}

/// The sink declaration batch mode writes to: under `--output DIR` when given.
fn output_decl(table: &TableDecl, output: &BatchOutput) -> Result<TableDecl> {
    let Some(dir) = &output.dir else {
        return Ok(table.clone());
    };
    if table.kind.eq_ignore_ascii_case("KAFKA") {
        return Err(EngineError::Usage(format!(
            "--output '{dir}': sink '{}' is a Kafka topic, which cannot be moved under a directory; write it with `volley run`, or declare a file or Delta sink",
            table.name
        )));
    }
    Ok(TableDecl {
        location: std::path::Path::new(dir)
            .join(&table.name)
            .to_string_lossy()
            .into_owned(),
        ..table.clone()
    })
}

/// `volley batch`: runs the pipeline once over bounded inputs and writes every sink (epoch 0).
/// Returns rows written per sink. With `live`, every sink with a `merge_key` (or a
/// `live_retention`) also becomes a live table, published once every sink is written.
///
/// # Errors
/// Bindings, planning, execution and sink failures.
pub async fn run_batch(
    pipeline: &Pipeline,
    inputs: &InputBindings,
    registry: &ConnectorRegistry,
    mut sink_overrides: HashMap<String, Box<dyn Sink>>,
    mut live: Option<&mut LiveTables>,
    output: &BatchOutput,
) -> Result<BTreeMap<String, u64>> {
    check_bindings(pipeline, inputs)?;
    let ctx = batch_context();
    let models = crate::models::load_models(pipeline)?;
    register_models(&ctx, Arc::clone(&models));
    let context = SinkContext::default();
    let destinations = crate::models::letter_destinations(pipeline);
    let mut letters = Vec::new();
    let mut read = BTreeMap::new();
    let mut limits = BTreeMap::new();
    for table in source_tables(pipeline)? {
        limits.insert(table.name.clone(), table.max_dead_letters()?);
        let provider: Arc<dyn TableProvider> = match bounded_input(table, inputs, registry).await? {
            BoundedInput::Table(provider) => provider,
            BoundedInput::Rows {
                schema,
                batches,
                rejected,
            } => {
                let mut counts = crate::job::SourceLetters::default();
                counts.read(
                    batches.iter().map(|b| b.num_rows() as u64).sum(),
                    rejected
                        .iter()
                        .map(|r| format!("{} at {}: {}", r.partition, r.offset, r.error)),
                );
                read.insert(table.name.clone(), counts);
                if !rejected.is_empty() {
                    letters.push((
                        table.name.clone(),
                        DeadLetterBatch::rejected(&table.name, &rejected)?,
                    ));
                }
                Arc::new(
                    MemTable::try_new(schema, vec![batches])
                        .map_err(EngineError::exec(format!("loading '{}'", table.name)))?,
                )
            }
        };
        ctx.register_table(table.name.as_str(), provider)
            .map_err(EngineError::exec(format!("registering '{}'", table.name)))?;
    }
    for (source, letter) in letters {
        let destination = crate::models::destination(&destinations, &source);
        let rows = letter.rows.num_rows();
        tracing::warn!(%source, rows, %destination, "records that could not be read went to dead letters");
        DeadLetterWriter::for_pipeline(&destination, &context)?
            .write_epoch(0, &[letter])
            .await?;
    }
    // Dead letters are written first (they say what was set aside); the sinks only when the
    // input was good enough.
    crate::job::letters::check(&limits, &read)?;
    let outputs = run_inserts(&ctx, pipeline).await?;
    for (source, letters) in crate::models::take_letters(&models)? {
        let destination = crate::models::destination(&destinations, &source);
        let rows: usize = letters.iter().map(|l| l.rows.num_rows()).sum();
        tracing::warn!(%source, rows, %destination, "rows left out by predict() went to dead letters");
        DeadLetterWriter::for_pipeline(&destination, &context)?
            .write_epoch(0, &letters)
            .await?;
    }
    let mut opened = Vec::new();
    for target in pipeline.sink_names() {
        let batches = outputs.get(target).cloned().unwrap_or_default();
        let table = pipeline
            .table(target)
            .ok_or_else(|| EngineError::Internal(format!("sink '{target}' vanished")))?;
        let table = &output_decl(table, output)?;
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
        if let Some(live) = live.as_deref_mut()
            && volley_connectors::live::add_for_sink(live, table, Arc::clone(&schema))?
        {
            for batch in &batches {
                live.apply(target, batch)?;
            }
        }
        let sink = match sink_overrides.remove(target) {
            Some(sink) => sink,
            None => {
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
        opened.push((target, sink, batches));
    }
    // A sink never holds a mix of runs: one that holds rows is emptied (--overwrite) or
    // refused, before any is written.
    let mut holding = Vec::new();
    for (target, sink, _) in &mut opened {
        if sink.holds_rows().await? {
            holding.push(target.to_string());
        }
    }
    if !holding.is_empty() && !output.overwrite {
        return Err(EngineError::Usage(format!(
            "sinks {} already hold rows (a streaming run's, or an earlier batch's): adding this batch's rows would mix two runs. Write the batch elsewhere with --output DIR, or replace what they hold with --overwrite",
            holding.join(", ")
        )));
    }
    let mut written = BTreeMap::new();
    for (target, mut sink, batches) in opened {
        if holding.iter().any(|h| h == target) {
            if let Some(why) = sink.cannot_truncate() {
                return Err(EngineError::Usage(format!("--overwrite: {why}")));
            }
            sink.truncate().await?;
        }
        sink.write_epoch(0, &batches).await?;
        sink.close().await?;
        written.insert(
            target.to_string(),
            batches.iter().map(|b| b.num_rows() as u64).sum(),
        );
    }
    if let Some(live) = live {
        // One epoch: the whole batch.
        live.publish(1)?;
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
