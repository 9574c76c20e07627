//! Turning a pipeline into a runnable streaming job: resolve sources and sinks, plan every INSERT.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use volley_connectors::live::LiveTables;
use volley_connectors::{ConnectorRegistry, Sink, SinkContext, Source};
use volley_sql::stream::{EpochSlot, QueryPlan, SourceBinding, StreamPlanner};
use volley_sql::{Pipeline, SqlError, TableDecl};

use crate::checkpoint::{CheckpointConfig, Checkpointer};
use crate::driver::BatchSizing;
use crate::error::{EngineError, Result};
use crate::runtime::{SourceRuntime, StreamJob};
use crate::status::StatusLine;
use crate::tables::{connector_for, source_tables, table_schema};
use crate::watermark::EventTimeTracker;
use volley_operators::QueryRunner;

/// Replacements for what the pipeline declares (tests, `verify`, benches).
#[derive(Debug, Default)]
pub struct JobOverrides {
    /// Sources to use instead of opening the declared connector, by table name.
    pub sources: HashMap<String, Box<dyn Source>>,
    /// Sinks to use instead of opening the declared connector, by table name.
    pub sinks: HashMap<String, Box<dyn Sink>>,
    /// Micro-batch sizing instead of the sources' `max_rows`.
    pub sizing: Option<BatchSizing>,
    /// Print the live status line.
    pub status: bool,
    /// Don't open sinks (for `explain`).
    pub no_sinks: bool,
    /// Cores each epoch's work is spread over (default: every core the process may use).
    pub workers: Option<usize>,
    /// Identifies the pipeline to its sinks (default: `volley`).
    pub pipeline_id: Option<String>,
    /// Checkpointing (None: off).
    pub checkpoint: Option<CheckpointConfig>,
    /// The share of the pipeline this job is, when several jobs run it (group mode: the source
    /// partition, such as `p3`): sinks keep per-share progress and file names, and dead
    /// letters are named per share.
    pub instance: Option<String>,
    /// Told about every checkpoint written.
    pub on_checkpoint: Option<crate::runtime::CheckpointHook>,
    /// Keep live tables (every sink with a `merge_key`) for queries over Flight SQL.
    pub live: bool,
}

/// Every core the process may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Where the event-time column is, and the watermark delay in nanoseconds.
fn event_time(table: &TableDecl, schema: &SchemaRef) -> Result<Option<(usize, i64)>> {
    let Some(wm) = &table.watermark else {
        return Ok(None);
    };
    let text = table.options.get("watermark").unwrap_or_default();
    let (index, field) = schema.column_with_name(&wm.column).ok_or_else(|| {
        table
            .options
            .bad("watermark", text, &format!("a column of '{}'", table.name))
    })?;
    if !matches!(field.data_type(), DataType::Timestamp(_, _)) {
        return Err(table
            .options
            .bad(
                "watermark",
                text,
                &format!(
                    "a TIMESTAMP column ('{}' is {})",
                    wm.column,
                    field.data_type()
                ),
            )
            .into());
    }
    let delay = i64::try_from(wm.delay.as_nanos()).unwrap_or(i64::MAX);
    Ok(Some((index, delay)))
}

/// Builds the streaming job for `pipeline`, returning it with each INSERT's plan.
///
/// # Errors
/// Pipeline, planning and connector errors; a sink that cannot hold what its INSERT writes
/// ([`crate::sink_fit::check_sink`]).
pub async fn build_stream_job(
    pipeline: &Pipeline,
    registry: &ConnectorRegistry,
    overrides: JobOverrides,
) -> Result<(StreamJob, Vec<QueryPlan>)> {
    build(pipeline, registry, overrides, true).await
}

/// Each INSERT's streaming plan, without opening sinks or checking that they fit (tools that
/// derive a sink's declaration from the plan, such as a test runner choosing a `merge_key`).
///
/// # Errors
/// Pipeline and planning errors.
pub async fn plan_inserts(
    pipeline: &Pipeline,
    registry: &ConnectorRegistry,
) -> Result<Vec<QueryPlan>> {
    let overrides = JobOverrides {
        no_sinks: true,
        workers: Some(1),
        ..JobOverrides::default()
    };
    Ok(build(pipeline, registry, overrides, false).await?.1)
}

async fn build(
    pipeline: &Pipeline,
    registry: &ConnectorRegistry,
    mut overrides: JobOverrides,
    check_sinks: bool,
) -> Result<(StreamJob, Vec<QueryPlan>)> {
    if pipeline.inserts.is_empty() {
        return Err(SqlError::Pipeline(
            "the pipeline has no INSERT INTO … SELECT statement: nothing to run".into(),
        )
        .into());
    }
    let mut bindings = Vec::new();
    let mut runtimes = Vec::new();
    let mut readers = Vec::new();
    let mut max_rows = usize::MAX;
    let mut max_delay = std::time::Duration::MAX;
    let mut idle_timeouts = Vec::new();
    let mut letter_limits = BTreeMap::new();
    let lookup_names = crate::lookup::lookup_tables(pipeline)?;
    let sink_context = SinkContext {
        pipeline_id: overrides
            .pipeline_id
            .clone()
            .unwrap_or_else(|| "volley".to_string()),
        instance: overrides.instance.clone(),
        models: Vec::new(),
    };
    let lookups = crate::lookup::Lookups::load(
        pipeline,
        registry,
        &lookup_names,
        &mut overrides.sources,
        &sink_context,
    )
    .await?;
    for table in source_tables(pipeline)?
        .into_iter()
        .filter(|t| !lookup_names.contains(&t.name))
    {
        let reader = match overrides.sources.remove(&table.name) {
            Some(reader) => reader,
            None => {
                let schema = table_schema(table, registry).await?;
                connector_for(table, registry)?
                    .open_source(table, schema)
                    .await?
            }
        };
        let schema = reader.schema();
        let position = reader.position();
        let slot = EpochSlot::new();
        runtimes.push(SourceRuntime {
            name: table.name.clone(),
            slot: Arc::clone(&slot),
            event_time: event_time(table, &schema)?
                .map(|(column, delay)| EventTimeTracker::new(column, delay, reader.partitions())),
            idle: std::collections::BTreeSet::new(),
            exhausted: false,
            rows: 0,
            bytes: None,
            position,
            monitor: reader.monitor(),
        });
        bindings.push(SourceBinding {
            name: table.name.clone(),
            schema,
            watermark: table.watermark.clone(),
            slot,
        });
        readers.push(reader);
        max_rows = max_rows.min(table.max_rows()?);
        max_delay = max_delay.min(table.max_delay()?);
        idle_timeouts.push(table.idle_timeout()?);
        letter_limits.insert(table.name.clone(), table.max_dead_letters()?);
    }
    if max_delay == std::time::Duration::MAX {
        max_delay = volley_sql::table::DEFAULT_MAX_DELAY;
    }
    let models = crate::models::load_models(pipeline)?;
    let planner = StreamPlanner::new(bindings)?
        .with_rules(volley_operators::rules())
        .with_lookups(&lookups.data())?
        .with_workers(overrides.workers.unwrap_or_else(default_workers))
        .with_models(Arc::clone(&models));
    let mut plans = Vec::new();
    for insert in &pipeline.inserts {
        let sink = pipeline.table(&insert.target).ok_or_else(|| {
            EngineError::Internal(format!("INSERT target '{}' vanished", insert.target))
        })?;
        let mut plan = planner
            .plan_insert(insert, sink.declared_schema.as_ref(), sink.state_ttl()?)
            .await?;
        if check_sinks {
            crate::sink_fit::apply_sink_options(&mut plan, sink, pipeline)?;
            crate::sink_fit::check_sink(&plan, sink, connector_for(sink, registry)?.as_ref())?;
        }
        for warning in &plan.warnings {
            tracing::warn!(insert = %insert.at, "{warning}");
        }
        plans.push(plan);
    }
    read_only_what_queries_read(pipeline, &plans, &runtimes, &mut readers).await?;
    let mut sinks: BTreeMap<String, Box<dyn Sink>> = BTreeMap::new();
    for plan in &plans {
        if sinks.contains_key(&plan.target) || overrides.no_sinks {
            continue;
        }
        let sink = match overrides.sinks.remove(&plan.target) {
            Some(sink) => sink,
            None => {
                let table = pipeline.table(&plan.target).ok_or_else(|| {
                    EngineError::Internal(format!("sink '{}' vanished", plan.target))
                })?;
                let context = SinkContext {
                    models: sink_lineage(&models, &plans, &plan.target),
                    ..sink_context.clone()
                };
                connector_for(table, registry)?
                    .open_sink(table, Arc::clone(&plan.output_schema), &context)
                    .await?
            }
        };
        sinks.insert(plan.target.clone(), sink);
    }
    let live = if overrides.live {
        Some(live_tables(pipeline, &plans)?)
    } else {
        None
    };
    let task_ctx = planner.context().task_ctx();
    let queries = plans
        .iter()
        .map(|p| Ok(QueryRunner::new(p.clone(), Arc::clone(&task_ctx))?))
        .collect::<Result<Vec<_>>>()?;
    let job = StreamJob {
        sources: runtimes,
        readers,
        queries,
        sinks,
        sizing: overrides
            .sizing
            .unwrap_or(BatchSizing::Fixed(if max_rows == usize::MAX {
                volley_sql::table::DEFAULT_MAX_ROWS
            } else {
                max_rows
            })),
        max_delay,
        status: overrides.status.then(StatusLine::new),
        summary: Default::default(),
        dead_letters: HashMap::new(),
        epoch: 0,
        checkpoints: match &overrides.checkpoint {
            Some(config) => Some(Checkpointer::open(config, max_delay).await?),
            None => None,
        },
        committed: HashMap::new(),
        replay: Vec::new(),
        fingerprint: crate::checkpoint::fingerprint::fingerprint(pipeline),
        statements: crate::checkpoint::fingerprint::statements(pipeline, false),
        idle_timeouts,
        instance: overrides.instance.clone(),
        on_checkpoint: overrides.on_checkpoint.clone(),
        pipeline_id: sink_context.pipeline_id.clone(),
        models,
        letter_destinations: crate::models::letter_destinations(pipeline),
        prepared: false,
        live,
        lookups,
        replay_lookups: BTreeMap::new(),
        letter_limits,
        // A planning probe (no sinks) runs nothing: it has nothing to report.
        metrics: (!overrides.no_sinks).then(|| {
            crate::metrics::JobReporter::new(
                crate::metrics::Metrics::global(),
                crate::metrics::JobKey {
                    pipeline: sink_context.pipeline_id.clone(),
                    instance: overrides.instance.clone(),
                },
                statements(pipeline),
            )
        }),
    };
    Ok((job, plans))
}

/// The pipeline's statements as SQL, for `system.pipelines`.
fn statements(pipeline: &Pipeline) -> Vec<String> {
    let tables = pipeline.tables.iter().map(|t| {
        format!(
            "CREATE EXTERNAL TABLE {} STORED AS {} LOCATION '{}'",
            t.name,
            t.kind.to_uppercase(),
            t.location.replace('\'', "''")
        )
    });
    let models = pipeline.models.iter().map(|m| {
        format!(
            "CREATE MODEL {} LOCATION '{}'",
            m.name,
            m.location.replace('\'', "''")
        )
    });
    let inserts = pipeline
        .inserts
        .iter()
        .map(|i| format!("INSERT INTO {} {}", i.target, i.query));
    tables.chain(models).chain(inserts).collect()
}

/// A live table for every sink with a `merge_key` (the latest row per key of what it is sent)
/// or a `live_retention` (its last rows).
///
/// # Errors
/// A `merge_key` that names no output column (refused earlier when the sink is checked).
fn live_tables(pipeline: &Pipeline, plans: &[QueryPlan]) -> Result<LiveTables> {
    let mut live = LiveTables::new();
    let mut seen = std::collections::BTreeSet::new();
    for plan in plans {
        if !seen.insert(plan.target.as_str()) {
            continue;
        }
        let Some(table) = pipeline.table(&plan.target) else {
            continue;
        };
        volley_connectors::live::add_for_sink(&mut live, table, Arc::clone(&plan.output_schema))?;
    }
    Ok(live)
}

/// The models the rows of sink `target` depend on: those of every INSERT into it.
fn sink_lineage(
    models: &volley_udfs::model::ModelSet,
    plans: &[QueryPlan],
    target: &str,
) -> Vec<volley_connectors::ModelLineage> {
    let names = plans
        .iter()
        .filter(|p| p.target == target)
        .flat_map(|p| p.models.iter().cloned());
    crate::models::lineage(models, names)
}

/// Tells each source which of its columns the queries read (with its event time), so it may
/// leave the others out of what it decodes.
///
/// # Errors
/// A source failing to re-open its reading.
async fn read_only_what_queries_read(
    pipeline: &Pipeline,
    plans: &[QueryPlan],
    runtimes: &[SourceRuntime],
    readers: &mut [Box<dyn volley_connectors::Source>],
) -> Result<()> {
    for (runtime, reader) in runtimes.iter().zip(readers.iter_mut()) {
        let schema = reader.schema();
        let mut columns: std::collections::BTreeSet<usize> = plans
            .iter()
            .filter_map(|p| p.source_columns.get(&runtime.name))
            .flatten()
            .copied()
            .collect();
        if let Some(table) = pipeline.table(&runtime.name) {
            let named = table
                .watermark
                .iter()
                .map(|w| w.column.clone())
                .chain(table.options.get("partitioned_by").map(str::to_string));
            for name in named {
                if let Ok(index) = schema.index_of(&name) {
                    columns.insert(index);
                }
            }
        }
        let columns: Vec<usize> = columns.into_iter().collect();
        reader.read_only(&columns).await?;
    }
    Ok(())
}
