//! Lookup tables: bounded tables that queries join with a stream.
//!
//! In an INSERT that reads a table with a watermark (a stream), every table it reads without
//! one is a lookup table: loaded once into memory when the job starts, hashed once by each
//! join over it, and never streamed. Batch mode reads it as the ordinary table it is, so an
//! enrichment join means the same in both.
//!
//! A Delta lookup table is read at one version, logged with every epoch: a replayed epoch
//! joins the version it joined the first time, and a restored job goes on with the version
//! of its checkpoint. With the `refresh` option the job looks for a newer version that often
//! and swaps it in between epochs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use tokio::time::Instant;
use volley_connectors::dead_letter::{DeadLetterBatch, DeadLetterWriter};
use volley_connectors::{ConnectorRegistry, SinkContext, Source, SourcePoll};
use volley_sql::stream::{LookupContent, LookupData};
use volley_sql::{Pipeline, SqlError, TableDecl};

use crate::batch::{BoundedInput, bounded_input};
use crate::checkpoint::manifest::LookupVersion;
use crate::error::{EngineError, Result};

/// The lookup tables of `pipeline`: in an INSERT reading a table with a watermark, each table
/// it reads without one.
///
/// # Errors
/// A table that is a lookup table in one INSERT and a stream in another, and unresolvable
/// table references.
pub fn lookup_tables(pipeline: &Pipeline) -> Result<BTreeSet<String>> {
    let state = volley_sql::stream::batch_context().state();
    let mut lookups: BTreeMap<String, String> = BTreeMap::new();
    let mut streams: BTreeMap<String, String> = BTreeMap::new();
    for insert in &pipeline.inserts {
        let statement = DfStatement::Statement(Box::new(SqlStatement::Query(insert.query.clone())));
        let refs = state
            .resolve_table_references(&statement)
            .map_err(|e| SqlError::plan(insert.at, e))?;
        let tables: Vec<&TableDecl> = refs
            .iter()
            .filter_map(|r| pipeline.table(r.table()))
            .collect();
        let streamed = tables.iter().any(|t| t.watermark.is_some());
        for table in tables {
            let role = if streamed && table.watermark.is_none() {
                &mut lookups
            } else {
                &mut streams
            };
            role.entry(table.name.clone())
                .or_insert_with(|| format!("INSERT INTO {} ({})", insert.target, insert.at));
        }
    }
    for (name, used) in &lookups {
        if let Some(streamed) = streams.get(name) {
            return Err(SqlError::Pipeline(format!(
                "table '{name}' has no watermark: {used} joins it with a stream, as a lookup table loaded once, but {streamed} reads it as a stream of its own. Declare a watermark on '{name}' to stream it everywhere, or read it in only one of those ways"
            ))
            .into());
        }
    }
    for table in &pipeline.tables {
        if table.options.get("refresh").is_some() && !lookups.contains_key(&table.name) {
            return Err(SqlError::Pipeline(format!(
                "table '{}': option 'refresh' applies to lookup tables (a table without watermark joined with a stream), and no INSERT joins '{}' so",
                table.name, table.name
            ))
            .into());
        }
    }
    Ok(lookups.into_keys().collect())
}

/// One lookup table: its rows, and where they come from.
#[derive(Debug)]
struct LookupRuntime {
    data: Arc<LookupData>,
    /// The declaration, for Delta tables (read by version); `None` for tables read once.
    delta: Option<TableDecl>,
    refresh: Option<Duration>,
    polled: Instant,
}

/// Every lookup table of a job.
#[derive(Debug, Default)]
pub struct Lookups {
    tables: Vec<LookupRuntime>,
}

impl Lookups {
    /// Loads each of `names`: from `overrides` when it holds a reader for it (read to its end),
    /// else the table itself as batch mode reads it. Records a text table could not read go to
    /// its dead letters, as in batch mode.
    ///
    /// # Errors
    /// Kinds with no bounded form, unreadable tables, bad `refresh` values.
    pub async fn load(
        pipeline: &Pipeline,
        registry: &ConnectorRegistry,
        names: &BTreeSet<String>,
        overrides: &mut HashMap<String, Box<dyn Source>>,
        context: &SinkContext,
    ) -> Result<Self> {
        let mut tables = Vec::new();
        for name in names {
            let table = pipeline.table(name).ok_or_else(|| {
                EngineError::Internal(format!("lookup table '{name}' is not declared"))
            })?;
            let refresh = table.options.get_duration("refresh")?;
            let is_delta = table.kind.eq_ignore_ascii_case("DELTA");
            if refresh.is_some() && !is_delta {
                return Err(table
                    .options
                    .bad(
                        "refresh",
                        table.options.get("refresh").unwrap_or_default(),
                        "set only on DELTA tables, whose versions say when they changed",
                    )
                    .into());
            }
            let (schema, content, delta) = match overrides.remove(name) {
                Some(mut reader) => {
                    let batches = drain(reader.as_mut()).await?;
                    let content = LookupContent {
                        batches,
                        version: None,
                    };
                    (reader.schema(), content, None)
                }
                None if is_delta => {
                    let schema = crate::tables::table_schema(table, registry).await?;
                    let (version, batches) =
                        volley_connectors::delta::lookup::read_version(table, &schema, None)
                            .await?;
                    let content = LookupContent {
                        batches,
                        version: Some(version),
                    };
                    (schema, content, Some(table.clone()))
                }
                None => {
                    let (schema, batches) = read_once(pipeline, table, registry, context).await?;
                    let content = LookupContent {
                        batches,
                        version: None,
                    };
                    (schema, content, None)
                }
            };
            tracing::info!(
                table = %name,
                rows = content.batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
                version = ?content.version,
                "loaded lookup table"
            );
            tables.push(LookupRuntime {
                data: LookupData::new(name, schema, content),
                delta,
                refresh,
                polled: Instant::now(),
            });
        }
        Ok(Self { tables })
    }

    /// The tables' rows, for the planner.
    pub fn data(&self) -> Vec<Arc<LookupData>> {
        self.tables.iter().map(|t| Arc::clone(&t.data)).collect()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The version each versioned table holds now.
    pub fn versions(&self) -> Vec<LookupVersion> {
        self.tables
            .iter()
            .filter_map(|t| {
                t.data.version().map(|version| LookupVersion {
                    name: t.data.name().to_string(),
                    version,
                })
            })
            .collect()
    }

    /// Makes each table named in `versions` hold that version. Returns the tables whose
    /// rows changed.
    ///
    /// # Errors
    /// A version that cannot be read any more (vacuumed), naming the table and version.
    pub async fn pin(&mut self, versions: &[LookupVersion]) -> Result<Vec<String>> {
        let mut changed = Vec::new();
        for wanted in versions {
            let Some(table) = self
                .tables
                .iter_mut()
                .find(|t| t.data.name() == wanted.name)
            else {
                continue;
            };
            if table.data.version() == Some(wanted.version) {
                continue;
            }
            let Some(decl) = &table.delta else { continue };
            let (version, batches) = volley_connectors::delta::lookup::read_version(
                decl,
                table.data.schema(),
                Some(wanted.version),
            )
            .await
            .map_err(|e| {
                EngineError::Checkpoint(format!(
                    "lookup table '{}': the checkpoint's epochs joined its version {}, which cannot be read now ({e}); start over with --from-scratch",
                    wanted.name, wanted.version
                ))
            })?;
            table.data.replace(LookupContent {
                batches,
                version: Some(version),
            });
            changed.push(wanted.name.clone());
        }
        Ok(changed)
    }

    /// Looks for a newer version of each table whose `refresh` interval has passed, and
    /// loads it. Returns the tables whose rows changed.
    ///
    /// # Errors
    /// An unreadable table log or version.
    pub async fn refresh_due(&mut self) -> Result<Vec<String>> {
        let mut changed = Vec::new();
        for table in &mut self.tables {
            let (Some(every), Some(decl)) = (table.refresh, &table.delta) else {
                continue;
            };
            if table.polled.elapsed() < every {
                continue;
            }
            table.polled = Instant::now();
            let latest = volley_connectors::delta::lookup::latest_version(decl).await?;
            if table.data.version().is_some_and(|v| v >= latest) {
                continue;
            }
            let (version, batches) = volley_connectors::delta::lookup::read_version(
                decl,
                table.data.schema(),
                Some(latest),
            )
            .await?;
            tracing::info!(table = %decl.name, version, "lookup table refreshed");
            table.data.replace(LookupContent {
                batches,
                version: Some(version),
            });
            changed.push(decl.name.clone());
        }
        Ok(changed)
    }
}

/// Every row `reader` has, to its end.
async fn drain(reader: &mut dyn Source) -> Result<Vec<RecordBatch>> {
    let mut batches = Vec::new();
    loop {
        let deadline = Instant::now() + Duration::from_secs(60);
        match reader.poll_batch(65_536, deadline).await? {
            SourcePoll::Data(batch) => batches.push(batch),
            SourcePoll::Partitions(parts) => batches.extend(parts.into_iter().map(|(_, b)| b)),
            SourcePoll::Exhausted => break,
            SourcePoll::Pending => {}
        }
    }
    Ok(batches.into_iter().filter(|b| b.num_rows() > 0).collect())
}

/// A table read once, as batch mode reads it (its rejected records to its dead letters).
async fn read_once(
    pipeline: &Pipeline,
    table: &TableDecl,
    registry: &ConnectorRegistry,
    context: &SinkContext,
) -> Result<(arrow::datatypes::SchemaRef, Vec<RecordBatch>)> {
    let input = bounded_input(table, &HashMap::new(), registry)
        .await
        .map_err(|e| match e {
            EngineError::Connector(volley_connectors::ConnectorError::Config(why)) => {
                EngineError::Sql(SqlError::Pipeline(format!(
                    "{why}. Table '{}' has no watermark, so an INSERT that joins it with a stream reads it as a lookup table, loaded once; declare a watermark on it to read it as a stream instead",
                    table.name
                )))
            }
            other => other,
        })?;
    match input {
        BoundedInput::Table(provider) => {
            let schema = provider.schema();
            let batches = datafusion::prelude::SessionContext::new()
                .read_table(provider)
                .map_err(EngineError::exec(format!(
                    "reading lookup table '{}'",
                    table.name
                )))?
                .collect()
                .await
                .map_err(EngineError::exec(format!(
                    "reading lookup table '{}'",
                    table.name
                )))?;
            Ok((schema, batches))
        }
        BoundedInput::Rows {
            schema,
            batches,
            rejected,
        } => {
            if !rejected.is_empty() {
                let destinations = crate::models::letter_destinations(pipeline);
                let destination = crate::models::destination(&destinations, &table.name);
                tracing::warn!(source = %table.name, rows = rejected.len(), %destination, "records of a lookup table that could not be read went to dead letters");
                DeadLetterWriter::for_pipeline(&destination, context)?
                    .write_epoch(0, &[DeadLetterBatch::rejected(&table.name, &rejected)?])
                    .await?;
            }
            Ok((schema, batches))
        }
    }
}
