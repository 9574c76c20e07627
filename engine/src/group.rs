//! Group mode (scale-out): several `volley run` processes of one pipeline share a Kafka topic's
//! partitions through the consumer group named by the source's `group` option.
//!
//! Each owned partition runs as its own job, like a Kafka Streams task: its own source reader
//! (assigned that one partition), epoch log, checkpoints and window state under
//! `<checkpoint dir>/p<partition>/`, and its own sink progress (Delta `txn` app id, Kafka
//! transactional id and file names end in `p<partition>`). When the group moves a partition,
//! the old owner finishes its epoch, checkpoints and stops before the rebalance completes;
//! the new owner restores that partition's checkpoint and replays its logged epochs. A
//! process that died without stopping is fenced by the epoch log: epoch entries are created,
//! never replaced, so two owners cannot both log the same epoch.
//!
//! That is correct when every group of every aggregate lives in one partition: stateless
//! pipelines, and aggregates that group by the column producers keyed messages by (the
//! `partitioned_by` option, or `_key`). Other keyed pipelines are refused (see
//! `docs/scale-out.md` for the re-key recipe).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use volley_connectors::kafka::{GroupEvent, GroupMember, KafkaOptions, KafkaSource};
use volley_connectors::live::PublishedSet;
use volley_connectors::{ConnectorRegistry, Position, Source};
use volley_sql::stream::QueryPlan;
use volley_sql::{Pipeline, SqlError, TableDecl};

use crate::checkpoint::CheckpointConfig;
use crate::driver::BatchSizing;
use crate::error::{EngineError, Result};
use crate::runtime::{CheckpointHook, RunSummary};
use crate::setup::{JobOverrides, build_stream_job};
use crate::tables::{source_tables, table_schema};

/// The source whose `group` option puts the pipeline in group mode, if any.
///
/// # Errors
/// Group mode with a second source, a non-Kafka group source, or the `bounded` option.
pub fn group_source(pipeline: &Pipeline) -> Result<Option<&TableDecl>> {
    let sources = source_tables(pipeline)?;
    let Some(grouped) = sources
        .iter()
        .find(|t| t.kind == "KAFKA" && t.options.get("group").is_some())
    else {
        return Ok(None);
    };
    if let Some(other) = sources.iter().find(|t| t.name != grouped.name) {
        return Err(SqlError::Pipeline(format!(
            "table '{}' has option 'group' (group mode), but the pipeline also reads '{}': in group mode the grouped Kafka table must be the only source",
            grouped.name, other.name
        ))
        .into());
    }
    if grouped.options.get("bounded").is_some() {
        return Err(grouped
            .options
            .bad(
                "bounded",
                grouped.options.get("bounded").unwrap_or_default(),
                "no 'bounded' option in group mode (option 'group'): partitions move between processes, so a process never knows the topic is done",
            )
            .into());
    }
    Ok(Some(grouped))
}

/// Refuses plans that group mode would get wrong: an aggregate whose groups may span
/// partitions.
///
/// # Errors
/// [`SqlError::Unsupported`] naming the INSERT, its keys and the remedy.
pub fn check_partitioned(table: &TableDecl, plans: &[QueryPlan]) -> Result<()> {
    let partition_column = table.options.get("partitioned_by").map(str::trim);
    for plan in plans {
        let refuse = |why: String| -> crate::error::EngineError {
            SqlError::Unsupported {
                at: plan.at,
                message: format!(
                    "INSERT INTO {} {why} (table '{}', option 'group'); or run without 'group'",
                    plan.target, table.name
                ),
            }
            .into()
        };
        let nodes = plan.nodes();
        let [node] = nodes.as_slice() else {
            if nodes.is_empty() {
                continue;
            }
            let why = nodes
                .iter()
                .find_map(|n| n.confined_to(&table.name, "_key").err())
                .unwrap_or_else(|| "runs one operator over another's rows, which group mode does not run yet: write the inner one's rows to a Kafka topic keyed by its groups and aggregate that topic".to_string());
            return Err(refuse(why));
        };
        let mut confined = false;
        for column in ["_key"].into_iter().chain(partition_column) {
            match node.confined_to(&table.name, column) {
                Ok(yes) => confined |= yes,
                Err(why) => return Err(refuse(why)),
            }
        }
        if confined {
            continue;
        }
        let by = match partition_column {
            Some(column) => format!("'{column}' (option 'partitioned_by') or '_key'"),
            None => "'_key' (or declare the column producers keyed messages by with option 'partitioned_by')".to_string(),
        };
        return Err(SqlError::Unsupported {
            at: plan.at,
            message: format!(
                "INSERT INTO {} aggregates in group mode (table '{}', option 'group'), but its GROUP BY does not include {by}: each process sees only some partitions, so a group spread over partitions would be split. Group by the partitioning column, or re-key the topic by this GROUP BY first (docs/scale-out.md)",
                plan.target, table.name
            ),
        }
        .into());
    }
    Ok(())
}

/// How a group-mode run is set up (the command line's `run` options).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Where every partition's checkpoints go: `<dir>/p<partition>` (shared by all processes).
    pub checkpoint: CheckpointConfig,
    /// Identifies the pipeline to its sinks.
    pub pipeline_id: String,
    /// Cores per partition job (default 1: partitions are the parallelism).
    pub workers: Option<usize>,
    /// Micro-batch sizing instead of the source's `max_rows`.
    pub sizing: Option<BatchSizing>,
    /// Print ownership changes on stderr.
    pub verbose: bool,
    /// Serve the live tables over Flight SQL: the union of this process's partition jobs.
    pub flight: Option<volley_flight::server::FlightArgs>,
}

struct PartitionJob {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<RunSummary>>,
}

/// Runs this process's share of `pipeline` until interrupted (Ctrl-C, SIGTERM) or a
/// partition's job fails. Returns the totals over every partition this process ran.
///
/// # Errors
/// Planning errors, group membership failures, and the first partition job that fails.
pub async fn run_group(
    pipeline: &Pipeline,
    table: &TableDecl,
    registry: &ConnectorRegistry,
    config: GroupConfig,
) -> Result<RunSummary> {
    if config.checkpoint.from_scratch {
        return Err(EngineError::Usage(
            "--from-scratch cannot be used in group mode: other processes may own partitions; stop every process and delete the checkpoint location instead".into(),
        ));
    }
    let opts = KafkaOptions::from_table(table)?;
    let schema = table_schema(table, registry).await?;
    // Plan once up front, so a pipeline group mode would get wrong fails before joining.
    let probe = JobOverrides {
        no_sinks: true,
        live: config.flight.is_some(),
        sources: std::iter::once((
            table.name.clone(),
            Box::new(PlanOnly(Arc::clone(&schema))) as Box<dyn Source>,
        ))
        .collect(),
        ..JobOverrides::default()
    };
    let (probe, plans) = build_stream_job(pipeline, registry, probe).await?;
    check_partitioned(table, &plans)?;
    // The live tables: empty (the probe's) until partition jobs publish theirs.
    let mut server = None;
    let live = match (&config.flight, &probe.live) {
        (Some(args), Some(empty)) => {
            let set = Arc::new(PublishedSet::new(empty.published()));
            let names: Vec<String> = empty.names().map(str::to_string).collect();
            server = Some(
                volley_flight::server::start(
                    args,
                    Arc::clone(&set) as Arc<dyn volley_connectors::live::SnapshotSource>,
                    &names,
                    Some(crate::metrics::Metrics::global()),
                    !config.verbose,
                )
                .await
                .map_err(|e| EngineError::Usage(format!("{e:#}")))?,
            );
            Some(set)
        }
        _ => None,
    };
    drop(probe);

    let mut member = GroupMember::join(&table.name, &opts)?;
    let committer = member.committer();
    let say = |text: String| {
        if config.verbose {
            eprintln!("volley: group '{}': {text}", opts.group);
        }
    };
    say(format!(
        "joined; waiting for partitions of topic '{}'",
        opts.topic
    ));
    let shutdown = crate::signals::shutdown_signal();
    tokio::pin!(shutdown);
    let mut jobs: BTreeMap<i32, PartitionJob> = BTreeMap::new();
    let mut total = RunSummary::default();
    let outcome: Result<()> = loop {
        let finished = jobs
            .iter()
            .find(|(_, job)| job.task.is_finished())
            .map(|(p, _)| *p);
        if let Some(partition) = finished {
            let job = jobs
                .remove(&partition)
                .ok_or_else(|| EngineError::Internal("job vanished".into()))?;
            match join(partition, job.task).await {
                Ok(summary) => {
                    say(format!("partition {partition}: its job ended"));
                    add(&mut total, &summary);
                }
                Err(e) => break Err(e),
            }
            continue;
        }
        let event = tokio::select! {
            event = member.next() => event,
            () = &mut shutdown => {
                say("stopping on a signal".into());
                break Ok(());
            }
            () = tokio::time::sleep(std::time::Duration::from_millis(200)) => continue,
        };
        match event {
            None => {
                break Err(EngineError::Internal(
                    "the consumer group member stopped".into(),
                ));
            }
            Some(GroupEvent::Failed(why)) => break Err(EngineError::Usage(why)),
            Some(GroupEvent::Assigned(partitions)) => {
                say(format!("assigned partitions {partitions:?}"));
                let mut failed = None;
                for partition in partitions {
                    if jobs.contains_key(&partition) {
                        continue;
                    }
                    let committer = committer.clone();
                    let hook = CheckpointHook(Arc::new(move |_epoch, positions: &[Position]| {
                        committer.commit(offsets(positions));
                    }));
                    let share = Share {
                        pipeline,
                        table,
                        opts: &opts,
                        schema: &schema,
                        registry,
                        config: &config,
                        live: live.as_ref(),
                    };
                    match share.start(partition, hook).await {
                        Ok(job) => {
                            jobs.insert(partition, job);
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                if let Some(e) = failed {
                    break Err(e);
                }
            }
            Some(GroupEvent::Revoked { partitions, done }) => {
                say(format!(
                    "partitions {partitions:?} revoked; stopping their jobs"
                ));
                let mut failed = None;
                for partition in partitions {
                    if let Some(job) = jobs.remove(&partition) {
                        let _ = job.stop.send(true);
                        match join(partition, job.task).await {
                            Ok(summary) => add(&mut total, &summary),
                            Err(e) => failed = Some(e),
                        }
                    }
                }
                let _ = done.send(());
                if let Some(e) = failed {
                    break Err(e);
                }
            }
        }
    };
    for (partition, job) in std::mem::take(&mut jobs) {
        let _ = job.stop.send(true);
        match join(partition, job.task).await {
            Ok(summary) => add(&mut total, &summary),
            Err(e) => tracing::warn!(partition, error = %e, "partition job failed while stopping"),
        }
    }
    member.leave();
    if let Some(server) = server {
        server.stop().await;
    }
    outcome.map(|()| total)
}

/// What every partition job of this process is built from.
struct Share<'a> {
    pipeline: &'a Pipeline,
    table: &'a TableDecl,
    opts: &'a KafkaOptions,
    schema: &'a SchemaRef,
    registry: &'a ConnectorRegistry,
    config: &'a GroupConfig,
    live: Option<&'a Arc<PublishedSet>>,
}

impl Share<'_> {
    /// Builds partition `partition`'s job (restoring its checkpoint) and starts it.
    async fn start(&self, partition: i32, hook: CheckpointHook) -> Result<PartitionJob> {
        let mut opts = self.opts.clone();
        opts.partitions = Some(vec![partition]);
        let source = KafkaSource::open(&self.table.name, opts, Arc::clone(self.schema)).await?;
        let mut checkpoint = self.config.checkpoint.clone();
        checkpoint.dir = format!("{}/p{partition}", checkpoint.dir.trim_end_matches('/'));
        let overrides = JobOverrides {
            sources: std::iter::once((
                self.table.name.clone(),
                Box::new(source) as Box<dyn Source>,
            ))
            .collect(),
            sizing: self.config.sizing.clone(),
            workers: Some(self.config.workers.unwrap_or(1)),
            pipeline_id: Some(self.config.pipeline_id.clone()),
            checkpoint: Some(checkpoint),
            instance: Some(format!("p{partition}")),
            on_checkpoint: Some(hook),
            live: self.live.is_some(),
            ..JobOverrides::default()
        };
        let (job, _) = build_stream_job(self.pipeline, self.registry, overrides).await?;
        let (stop, stopped) = watch::channel(false);
        let share = format!("p{partition}");
        let live = match (self.live, job.live()) {
            (Some(set), Some(tables)) => {
                set.insert(&share, tables.published());
                Some(Arc::clone(set))
            }
            _ => None,
        };
        let task = tokio::spawn(async move {
            let outcome = job.run_until(stopped).await;
            // The partition moves on (revoked, or its job ended): its rows go with it.
            if let Some(set) = live {
                set.remove(&share);
            }
            outcome
        });
        Ok(PartitionJob { stop, task })
    }
}

/// Waits for a partition job, turning a panic into an error.
async fn join(partition: i32, task: JoinHandle<Result<RunSummary>>) -> Result<RunSummary> {
    match task.await {
        Ok(Ok(summary)) => Ok(summary),
        Ok(Err(e)) => Err(EngineError::Usage(format!("partition {partition}: {e}"))),
        Err(e) => Err(EngineError::Internal(format!(
            "partition {partition}'s job panicked: {e}"
        ))),
    }
}

/// Adds one partition job's totals to the process's.
fn add(total: &mut RunSummary, part: &RunSummary) {
    total.epochs += part.epochs;
    total.rows_in += part.rows_in;
    for (sink, rows) in &part.rows_out {
        *total.rows_out.entry(sink.clone()).or_default() += rows;
    }
    total.late_rows += part.late_rows;
    total.rejected_records += part.rejected_records;
    total.windows_emitted += part.windows_emitted;
    total.windows_corrected += part.windows_corrected;
    total.groups_expired += part.groups_expired;
    total.checkpoints += part.checkpoints;
    total.epochs_replayed += part.epochs_replayed;
    total.rows_skipped += part.rows_skipped;
    if part.last_checkpoint_epoch > 0 {
        total.last_checkpoint_epoch = part.last_checkpoint_epoch;
        total.last_checkpoint_ms = part.last_checkpoint_ms;
        total.last_checkpoint_bytes = part.last_checkpoint_bytes;
    }
}

/// A Kafka position (`"<partition>" → next offset`) as `(partition, offset)` pairs.
fn offsets(positions: &[Position]) -> Vec<(i32, i64)> {
    positions
        .iter()
        .flat_map(|p| p.0.iter())
        .filter_map(|(p, o)| Some((p.parse().ok()?, i64::try_from(*o).ok()?)))
        .collect()
}

/// A stand-in source with the table's schema, for planning without connecting.
#[derive(Debug)]
struct PlanOnly(SchemaRef);

#[async_trait::async_trait]
impl Source for PlanOnly {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.0)
    }

    async fn poll_batch(
        &mut self,
        _max_rows: usize,
        _deadline: tokio::time::Instant,
    ) -> volley_connectors::Result<volley_connectors::SourcePoll> {
        Ok(volley_connectors::SourcePoll::Exhausted)
    }

    fn position(&self) -> Position {
        Position::default()
    }

    async fn seek(&mut self, _position: &Position) -> volley_connectors::Result<()> {
        Ok(())
    }
}
