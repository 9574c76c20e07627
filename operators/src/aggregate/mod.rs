//! The stateful half of a streaming aggregate: keyed window state merged with DataFusion's own
//! accumulators, in phases, hash-partitioned across cores.
//!
//! ```text
//!   epoch rows ─▶ partition 0 … N-1 (contiguous runs, one task each)
//!                   stateless segment ─▶ AggregateExec(Partial) ─▶ split by hash(group key)
//!                                                         │ (the shuffle)
//!   shard 0 … S-1 (one task each): append to the window's state list; PartialReduce when it
//!                                   has doubled; Final when the watermark passes the window
//! ```
//!
//! Partial aggregation runs before the shuffle, so only one state row per group and partition
//! crosses it. A group key always hashes to the same shard, so shards never share a group and
//! their final rows together are the window's rows. A keyed aggregate (no window) keeps one
//! state per shard and emits, each epoch, the final values of the groups the epoch touched
//! (upserts).

mod expiry;
mod hop;
mod hop_call;
mod hop_rule;
mod operator;
mod plan;
mod rule;
mod shard;
mod split;
mod window;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlanProperties;
use futures::TryStreamExt;

pub use self::plan::{AggregatePlan, KeySource};
pub use self::rule::AggregateRule;
use self::shard::{Phases, Shard};
use self::split::split_by_shard;
pub(crate) use self::split::split_by_window;
use volley_sql::stream::operator::{OperatorError, Result};

/// What an epoch of an aggregate produced.
#[derive(Debug, Default)]
pub struct AggregateOutput {
    /// Final aggregate rows (window emissions or keyed upserts), before the post segment.
    pub rows: Vec<RecordBatch>,
    /// Windows emitted this epoch.
    pub windows_emitted: usize,
    /// Windows emitted again, corrected by late rows within `allowed_lateness`.
    pub windows_corrected: usize,
}

impl AggregateOutput {
    /// Adds `other`'s rows and counts to these.
    pub(crate) fn extend(&mut self, other: AggregateOutput) {
        self.rows.extend(other.rows);
        self.windows_emitted += other.windows_emitted;
        self.windows_corrected += other.windows_corrected;
    }
}

/// Keyed window state for one INSERT's aggregate.
///
/// After an error the state is unusable (a shard may be lost mid-task); the job stops.
#[derive(Debug)]
pub struct AggregateState {
    plan: AggregatePlan,
    phases: Arc<Phases>,
    shards: Vec<Shard>,
    /// Windows whose end is at or below this have been emitted (window column's unit).
    emitted_upto: Option<i64>,
    /// Emitted windows kept for `allowed_lateness` that took late rows this epoch.
    corrected: BTreeSet<Option<i64>>,
    task_ctx: Arc<TaskContext>,
}

impl AggregateState {
    /// Empty state for `plan`, with `plan.shards` shards.
    pub fn new(plan: AggregatePlan, task_ctx: Arc<TaskContext>) -> Self {
        let shards = (0..plan.shards.max(1)).map(|_| Shard::default()).collect();
        Self {
            phases: Arc::new(Phases::new(&plan, Arc::clone(&task_ctx))),
            plan,
            shards,
            emitted_upto: None,
            corrected: BTreeSet::new(),
            task_ctx,
        }
    }

    /// The plan this state belongs to.
    pub fn plan(&self) -> &AggregatePlan {
        &self.plan
    }

    /// Every state row (all windows, all shards) and the emission frontier: what a checkpoint
    /// stores. State rows are DataFusion partial-aggregate states, independent of sharding.
    fn state_batches(&self) -> (Vec<RecordBatch>, Option<i64>) {
        let rows = self
            .shards
            .iter()
            .flat_map(Shard::state)
            .filter(|b| b.num_rows() > 0)
            .cloned()
            .collect();
        (rows, self.emitted_upto)
    }

    /// Loads [`AggregateState::state_batches`] into empty state, re-sharding it for this
    /// run's shard count.
    ///
    /// # Errors
    /// State rows that do not fit the aggregate, and merge failures.
    async fn load_state(
        &mut self,
        rows: Vec<RecordBatch>,
        emitted_upto: Option<i64>,
    ) -> Result<()> {
        self.emitted_upto = emitted_upto;
        if let (Some(window), Some(done)) = (&self.plan.window, emitted_upto) {
            window
                .gate
                .set_cutoff(window.closed_upto(window.final_watermark(done)));
        }
        let shards = self.shards.len();
        let mut per_shard: Vec<Vec<RecordBatch>> = vec![Vec::new(); shards];
        let mut hashes = Vec::new();
        for batch in &rows {
            if batch.schema().fields() != self.plan.state_schema.fields() {
                let names = |schema: &arrow::datatypes::Schema| {
                    let names: Vec<String> = schema
                        .fields()
                        .iter()
                        .map(|f| volley_sql::sql_text::tidy(f.name()))
                        .collect();
                    names.join(", ")
                };
                return Err(OperatorError::Checkpoint(format!(
                    "checkpointed state has columns [{}], the query's state has [{}]",
                    names(&batch.schema()),
                    names(&self.plan.state_schema)
                )));
            }
            let parts = split_by_shard(batch, self.phases.group_count, shards, &mut hashes)?;
            for (shard, part) in parts.into_iter().enumerate() {
                per_shard[shard].extend(part);
            }
        }
        let inputs = per_shard
            .into_iter()
            .map(|b| (!b.is_empty()).then_some(b))
            .collect();
        if self.phases.window_index.is_some() {
            self.on_shards(inputs, merge_task).await?;
        } else {
            self.on_shards(inputs, absorb_task).await?;
        }
        Ok(())
    }

    /// Keyed aggregates with `state_ttl`: stamps the groups this epoch touched with
    /// `watermark` (nanoseconds) and forgets the groups not updated since `watermark - ttl`.
    /// Returns how many groups were forgotten (0 without `state_ttl`).
    ///
    /// # Errors
    /// Arrow failures filtering the state.
    fn expire(&mut self, watermark: i64) -> Result<usize> {
        if self.phases.ttl_nanos.is_none() || self.phases.window_index.is_some() {
            return Ok(0);
        }
        let mut dropped = 0;
        for shard in &mut self.shards {
            dropped += shard.expire(&self.phases, watermark)?;
        }
        Ok(dropped)
    }

    /// The `state_ttl` stamps of every group, as `(group columns…, last_seen)` rows (None
    /// without `state_ttl`).
    ///
    /// # Errors
    /// Arrow failures.
    fn stamps(&self) -> Result<Option<(arrow::datatypes::SchemaRef, Vec<RecordBatch>)>> {
        if self.phases.ttl_nanos.is_none() {
            return Ok(None);
        }
        let schema = expiry::stamp_schema(&self.plan.state_schema, self.phases.group_count);
        let mut rows = Vec::new();
        for expiry in self.shards.iter().filter_map(|s| s.expiry.as_ref()) {
            if expiry.len() > 0 {
                rows.push(expiry.snapshot(&self.plan.state_schema, self.phases.group_count)?);
            }
        }
        Ok(Some((schema, rows)))
    }

    /// Loads `state_ttl` stamps after [`AggregateState::load_state`]; groups with no stamp (a
    /// checkpoint written without `state_ttl`) are stamped with `watermark` when it is known
    /// (otherwise they are kept until an update stamps them).
    ///
    /// # Errors
    /// Stamps that do not fit the aggregate's groups.
    fn restore_stamps(&mut self, stamps: &[RecordBatch], watermark: Option<i64>) -> Result<()> {
        if self.phases.ttl_nanos.is_none() {
            return Ok(());
        }
        let group_count = self.phases.group_count;
        let shards = self.shards.len();
        let mut hashes = Vec::new();
        for batch in stamps {
            let parts = split_by_shard(batch, group_count, shards, &mut hashes)?;
            for (shard, part) in self.shards.iter_mut().zip(parts) {
                if let Some(part) = part {
                    shard.expiry(&self.phases)?.restore(&part, group_count)?;
                }
            }
        }
        let Some(watermark) = watermark else {
            return Ok(());
        };
        for shard in &mut self.shards {
            let state = shard.keyed_state().to_vec();
            shard
                .expiry(&self.phases)?
                .stamp_unknown(&state, group_count, watermark)?;
        }
        Ok(())
    }

    /// Runs the partial aggregate over this epoch's input (already in the source slots) and
    /// merges it into state. Returns upserts for a keyed aggregate; nothing for a windowed one
    /// (windows are emitted by [`AggregateState::advance_watermark`]).
    ///
    /// # Errors
    /// Failures executing DataFusion's aggregate.
    async fn process_epoch(&mut self) -> Result<AggregateOutput> {
        let per_shard = self.partials_by_shard().await?;
        if per_shard.iter().all(Option::is_none) {
            return Ok(AggregateOutput::default());
        }
        if let Some(window) = self.plan.window.clone() {
            let touched = self.on_shards(per_shard, merge_task).await?;
            // Windows already emitted that took rows: kept for allowed_lateness, corrected.
            // (A hop window's panes stay open until their last window ends, and late rows
            // never reach them.)
            if let Some(done) = self.emitted_upto.filter(|_| window.hop.is_none()) {
                self.corrected.extend(
                    touched
                        .into_iter()
                        .flatten()
                        .flatten()
                        .filter(|start| start.is_some_and(|s| window.closed(s, done))),
                );
            }
            return Ok(AggregateOutput::default());
        }
        let upserts = self.on_shards(per_shard, upsert_task).await?;
        Ok(AggregateOutput {
            rows: upserts.into_iter().flatten().flatten().collect(),
            ..AggregateOutput::default()
        })
    }

    /// Emits every window whose end is at or below `watermark` (window column's unit), in
    /// window order, and marks later rows for those windows as late.
    ///
    /// # Errors
    /// Failures executing DataFusion's final aggregate.
    async fn advance_watermark(&mut self, watermark: i64) -> Result<AggregateOutput> {
        let Some(window) = &self.plan.window else {
            return Ok(AggregateOutput::default());
        };
        let window = window.clone();
        if let Some(hop) = window.hop {
            return self.advance_hop(watermark, hop).await;
        }
        let mut out = AggregateOutput::default();
        if !self.corrected.is_empty() {
            let corrected = std::mem::take(&mut self.corrected);
            let again = self.emit(|start| corrected.contains(&start), true).await?;
            out.windows_corrected += again.windows_emitted;
            out.rows.extend(again.rows);
        }
        let before = self.emitted_upto;
        if before.is_some_and(|done| watermark <= done) {
            return Ok(out);
        }
        self.emitted_upto = Some(watermark);
        let closed_for_good = window.final_watermark(watermark);
        window.gate.set_cutoff(window.closed_upto(closed_for_good));
        let keep = window.lateness > 0;
        out.extend(
            self.emit(
                |start| {
                    start.is_some_and(|s| {
                        window.closed(s, watermark) && !before.is_some_and(|b| window.closed(s, b))
                    })
                },
                keep,
            )
            .await?,
        );
        if keep {
            for shard in &mut self.shards {
                shard
                    .windows
                    .retain(|start, _| !start.is_some_and(|s| window.closed(s, closed_for_good)));
            }
        }
        Ok(out)
    }

    /// End of input: emits every open window, including the NULL-time one.
    ///
    /// # Errors
    /// Failures executing DataFusion's final aggregate.
    async fn flush(&mut self) -> Result<AggregateOutput> {
        if self.plan.window.is_none() {
            return Ok(AggregateOutput::default());
        }
        let mut out = self.advance_watermark(i64::MAX).await?;
        if self.plan.window.as_ref().is_some_and(|w| w.hop.is_some()) {
            // Rows with no time are in no hop window: every pane has been emitted.
            return Ok(out);
        }
        out.extend(self.emit(|_| true, false).await?);
        Ok(out)
    }

    /// Finalises the windows `due` selects, every shard at once; rows come out in window order.
    /// With `keep`, their state stays (for corrections within `allowed_lateness`).
    async fn emit(
        &mut self,
        due: impl Fn(Option<i64>) -> bool,
        keep: bool,
    ) -> Result<AggregateOutput> {
        let windows: BTreeSet<Option<i64>> = self
            .shards
            .iter()
            .flat_map(|s| s.windows.keys().copied())
            .filter(|start| due(*start))
            .collect();
        if windows.is_empty() {
            return Ok(AggregateOutput::default());
        }
        let windows: Arc<Vec<Option<i64>>> = Arc::new(windows.into_iter().collect());
        let inputs = self
            .shards
            .iter()
            .map(|s| {
                windows
                    .iter()
                    .any(|w| s.windows.contains_key(w))
                    .then(|| (Arc::clone(&windows), keep))
            })
            .collect();
        let emitted = self.on_shards(inputs, emit_task).await?;
        let mut by_window: BTreeMap<Option<i64>, Vec<RecordBatch>> = BTreeMap::new();
        for (start, rows) in emitted.into_iter().flatten().flatten() {
            by_window.entry(start).or_default().extend(rows);
        }
        Ok(AggregateOutput {
            windows_emitted: windows.len(),
            rows: by_window.into_values().flatten().collect(),
            windows_corrected: 0,
        })
    }

    /// Runs the partial aggregate, one task per input partition, and splits each partition's
    /// state rows by shard. Returns, per shard, its rows in partition order (None: no rows).
    async fn partials_by_shard(&self) -> Result<Vec<Option<Vec<RecordBatch>>>> {
        let partial = &self.plan.partial;
        let partitions = partial.output_partitioning().partition_count();
        let shards = self.shards.len();
        let group_count = self.phases.group_count;
        let mut tasks = Vec::with_capacity(partitions);
        for partition in 0..partitions {
            let stream = partial
                .execute(partition, Arc::clone(&self.task_ctx))
                .map_err(OperatorError::exec("the partial aggregate"))?;
            let work = async move {
                let batches: Vec<RecordBatch> = stream
                    .try_collect()
                    .await
                    .map_err(OperatorError::exec("the partial aggregate"))?;
                let mut hashes = Vec::new();
                let mut out: Vec<Vec<RecordBatch>> = vec![Vec::new(); shards];
                for batch in &batches {
                    let parts = split_by_shard(batch, group_count, shards, &mut hashes)?;
                    for (shard, part) in parts.into_iter().enumerate() {
                        out[shard].extend(part);
                    }
                }
                Ok::<_, OperatorError>(out)
            };
            tasks.push(if partitions == 1 {
                Task::Inline(Box::pin(work))
            } else {
                Task::Spawned(tokio::spawn(work))
            });
        }
        let mut per_shard: Vec<Vec<RecordBatch>> = vec![Vec::new(); shards];
        for task in tasks {
            for (shard, batches) in task.join().await??.into_iter().enumerate() {
                per_shard[shard].extend(batches);
            }
        }
        Ok(per_shard
            .into_iter()
            .map(|b| (!b.is_empty()).then_some(b))
            .collect())
    }

    /// Runs `work` on every shard that has input, each on its own task (inline when only one
    /// has), and puts the shards back in order. Returns each shard's result (None: no input).
    async fn on_shards<I, O, F, Fut>(
        &mut self,
        inputs: Vec<Option<I>>,
        work: F,
    ) -> Result<Vec<Option<O>>>
    where
        I: Send + 'static,
        O: Send + 'static,
        F: Fn(Shard, Arc<Phases>, I) -> Fut,
        Fut: Future<Output = (Shard, Result<O>)> + Send + 'static,
    {
        let busy = inputs.iter().filter(|i| i.is_some()).count();
        let shards = std::mem::take(&mut self.shards);
        let mut running = Vec::with_capacity(shards.len());
        for (shard, input) in shards.into_iter().zip(inputs) {
            running.push(match input {
                None => Err(shard),
                Some(input) => {
                    let work = work(shard, Arc::clone(&self.phases), input);
                    Ok(if busy == 1 {
                        Task::Inline(Box::pin(work))
                    } else {
                        Task::Spawned(tokio::spawn(work))
                    })
                }
            });
        }
        let mut out = Vec::with_capacity(running.len());
        let mut failed = None;
        for task in running {
            let (shard, result) = match task {
                Err(idle) => (idle, None),
                Ok(task) => match task.join().await {
                    Ok((shard, result)) => (shard, Some(result)),
                    Err(e) => (Shard::default(), Some(Err(e))),
                },
            };
            self.shards.push(shard);
            match result {
                None => out.push(None),
                Some(Ok(o)) => out.push(Some(o)),
                Some(Err(e)) => {
                    failed.get_or_insert(e);
                    out.push(None);
                }
            }
        }
        failed.map_or(Ok(out), Err)
    }
}

/// Work on a shard or partition, run in place (when it is the only work) or on its own task.
enum Task<T> {
    Inline(std::pin::Pin<Box<dyn Future<Output = T> + Send>>),
    Spawned(tokio::task::JoinHandle<T>),
}

impl<T> Task<T> {
    async fn join(self) -> Result<T> {
        match self {
            Task::Inline(work) => Ok(work.await),
            Task::Spawned(handle) => handle
                .await
                .map_err(|e| OperatorError::Internal(format!("an aggregate task failed: {e}"))),
        }
    }
}

async fn merge_task(
    mut shard: Shard,
    phases: Arc<Phases>,
    partials: Vec<RecordBatch>,
) -> (Shard, Result<Vec<Option<i64>>>) {
    let result = shard.merge(&phases, partials).await;
    (shard, result)
}

async fn upsert_task(
    mut shard: Shard,
    phases: Arc<Phases>,
    partials: Vec<RecordBatch>,
) -> (Shard, Result<Vec<RecordBatch>>) {
    let result = shard.upsert(&phases, partials).await;
    (shard, result)
}

async fn absorb_task(
    mut shard: Shard,
    phases: Arc<Phases>,
    state: Vec<RecordBatch>,
) -> (Shard, Result<()>) {
    let result = shard.absorb(&phases, state).await;
    (shard, result)
}

type Emitted = Vec<(Option<i64>, Vec<RecordBatch>)>;

async fn emit_task(
    mut shard: Shard,
    phases: Arc<Phases>,
    (windows, keep): (Arc<Vec<Option<i64>>>, bool),
) -> (Shard, Result<Emitted>) {
    let result = shard.emit(&phases, &windows, keep).await;
    (shard, result)
}
