//! Grouped state: DataFusion partial-aggregate states of groups, by window, hash-partitioned
//! by group key across shards that run on their own cores. The windowed, keyed and hop-window
//! aggregates keep their state in it; each decides when a window is emitted.
//!
//! ```text
//!   epoch rows ─▶ partition 0 … N-1 (contiguous runs, one task each)
//!                   stateless segment ─▶ AggregateExec(Partial) ─▶ split by hash(group key)
//!                                                         │ (the shuffle)
//!   shard 0 … S-1 (one task each): append to the window's state list; PartialReduce when it
//!                                   has doubled; Final when the operator emits the window
//! ```
//!
//! Partial aggregation runs before the shuffle, so only one state row per group and partition
//! crosses it. A group key always hashes to the same shard, so shards never share a group and
//! their final rows together are the window's rows. Keyed state (no window) is one state per
//! shard, whose touched groups are finalised every epoch (upserts).

mod expiry;
mod planning;
mod shard;
mod split;
mod table;
mod two_phase;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use futures::TryStreamExt;
use volley_sql::stream::operator::{OperatorError, Result};

pub use self::planning::KeySource;
pub(crate) use self::planning::{
    check_grouping_sets, explain_phases, groups_by_source_column, key_sources,
};
use self::shard::{Phases, Shard, StateList};
use self::split::split_by_shard;
pub(crate) use self::split::split_by_window;
pub use self::two_phase::TwoPhase;

/// What an epoch of a grouped operator produced.
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

/// Grouped state of one operator.
///
/// After an error the state is unusable (a shard may be lost mid-task); the job stops.
#[derive(Debug)]
pub(crate) struct GroupedState {
    phases: Arc<Phases>,
    shards: Vec<Shard>,
    /// `AggregateExec(Partial)` over the operator's segment: this epoch's state rows.
    partial: Arc<dyn ExecutionPlan>,
    state_schema: SchemaRef,
    task_ctx: Arc<TaskContext>,
}

impl GroupedState {
    /// Empty state for `plan` over `shards` shards: by the window start in group column
    /// `window_index`, or keyed (forgetting groups idle for `state_ttl`).
    pub(crate) fn new(
        plan: &TwoPhase,
        window_index: Option<usize>,
        state_ttl: Option<std::time::Duration>,
        shards: usize,
        task_ctx: Arc<TaskContext>,
    ) -> Self {
        Self {
            phases: Arc::new(Phases::new(
                plan,
                window_index,
                state_ttl,
                Arc::clone(&task_ctx),
            )),
            shards: (0..shards.max(1)).map(|_| Shard::default()).collect(),
            partial: Arc::clone(&plan.partial),
            state_schema: Arc::clone(&plan.state_schema),
            task_ctx,
        }
    }

    /// Keeps each window's groups as lists of state rows, compacted as they double, rather
    /// than in a group table: for state whose rows are read often (a hop window's panes are
    /// read by every window over them), where a table would hand them out and merge them
    /// back each time.
    pub(crate) fn with_state_lists(mut self) -> Self {
        if let Some(phases) = Arc::get_mut(&mut self.phases) {
            phases.without_tables();
        }
        self
    }

    /// The schema of its state rows.
    pub(crate) fn state_schema(&self) -> &SchemaRef {
        &self.state_schema
    }

    /// Every state row (all windows, all shards): what a checkpoint stores. State rows are
    /// DataFusion partial-aggregate states, independent of sharding.
    ///
    /// # Errors
    /// DataFusion failures reading a window's group table.
    pub(crate) fn state_batches(&self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for shard in &self.shards {
            out.extend(
                shard
                    .state(&self.phases)?
                    .into_iter()
                    .filter(|b| b.num_rows() > 0),
            );
        }
        Ok(out)
    }

    /// Loads [`GroupedState::state_batches`] into empty state, re-sharding it for this run's
    /// shard count.
    ///
    /// # Errors
    /// State rows that do not fit the aggregate, and merge failures.
    pub(crate) async fn load(&mut self, rows: Vec<RecordBatch>) -> Result<()> {
        let shards = self.shards.len();
        let mut per_shard: Vec<Vec<RecordBatch>> = vec![Vec::new(); shards];
        let mut hashes = Vec::new();
        for batch in &rows {
            if batch.schema().fields() != self.state_schema.fields() {
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
                    names(&self.state_schema)
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
    pub(crate) fn expire(&mut self, watermark: i64) -> Result<usize> {
        if self.phases.ttl_nanos.is_none() || self.phases.window_index.is_some() {
            return Ok(0);
        }
        let mut dropped = 0;
        for shard in &mut self.shards {
            dropped += shard.expire(&self.phases, watermark)?;
        }
        Ok(dropped)
    }

    /// A session aggregate (keyed, its gap as `state_ttl`): stamps the groups this epoch
    /// touched with `watermark` and returns the final rows of the groups not updated since
    /// `watermark - gap` (of every group when `all`), dropping them.
    ///
    /// # Errors
    /// Arrow failures filtering the state; DataFusion's final aggregate.
    pub(crate) async fn close_idle(
        &mut self,
        watermark: i64,
        all: bool,
    ) -> Result<AggregateOutput> {
        let mut dropped = Vec::new();
        let mut groups = 0;
        for shard in &mut self.shards {
            let (count, rows) = shard.expire_rows(&self.phases, watermark, all)?;
            groups += count;
            dropped.extend(rows);
        }
        if dropped.is_empty() {
            return Ok(AggregateOutput::default());
        }
        Ok(AggregateOutput {
            rows: self.phases.finalize(dropped).await?,
            windows_emitted: groups,
            windows_corrected: 0,
        })
    }

    /// A session aggregate: merges this epoch's input into state, emitting nothing (groups
    /// are emitted when [`GroupedState::close_idle`] closes them).
    ///
    /// # Errors
    /// Failures executing DataFusion's aggregate.
    pub(crate) async fn absorb_epoch(&mut self) -> Result<()> {
        let per_shard = self.partials_by_shard().await?;
        if per_shard.iter().all(Option::is_none) {
            return Ok(());
        }
        self.on_shards(per_shard, absorb_touched_task).await?;
        Ok(())
    }

    /// The `state_ttl` stamps of every group, as `(group columns…, last_seen)` rows (None
    /// without `state_ttl`).
    ///
    /// # Errors
    /// Arrow failures.
    pub(crate) fn stamps(&self) -> Result<Option<(arrow::datatypes::SchemaRef, Vec<RecordBatch>)>> {
        if self.phases.ttl_nanos.is_none() {
            return Ok(None);
        }
        let schema = expiry::stamp_schema(&self.state_schema, self.phases.group_count);
        let mut rows = Vec::new();
        for expiry in self.shards.iter().filter_map(|s| s.expiry.as_ref()) {
            if expiry.len() > 0 {
                rows.push(expiry.snapshot(&self.state_schema, self.phases.group_count)?);
            }
        }
        Ok(Some((schema, rows)))
    }

    /// Loads `state_ttl` stamps after [`GroupedState::load`]; groups with no stamp (a
    /// checkpoint written without `state_ttl`) are stamped with `watermark` when it is known
    /// (otherwise they are kept until an update stamps them).
    ///
    /// # Errors
    /// Stamps that do not fit the aggregate's groups.
    pub(crate) fn restore_stamps(
        &mut self,
        stamps: &[RecordBatch],
        watermark: Option<i64>,
    ) -> Result<()> {
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
    /// merges it into state: windowed, returns the window starts it touched; keyed, the final
    /// values of the groups it touched (upserts).
    ///
    /// # Errors
    /// Failures executing DataFusion's aggregate.
    pub(crate) async fn ingest(&mut self) -> Result<Ingested> {
        let per_shard = self.partials_by_shard().await?;
        if per_shard.iter().all(Option::is_none) {
            return Ok(Ingested::default());
        }
        if self.phases.window_index.is_some() {
            let touched = self.on_shards(per_shard, merge_task).await?;
            return Ok(Ingested {
                windows: touched.into_iter().flatten().flatten().collect(),
                upserts: Vec::new(),
            });
        }
        let upserts = self.on_shards(per_shard, upsert_task).await?;
        Ok(Ingested {
            windows: Vec::new(),
            upserts: upserts.into_iter().flatten().flatten().collect(),
        })
    }

    /// The window starts holding state, in order.
    pub(crate) fn window_starts(&self) -> BTreeSet<Option<i64>> {
        self.shards
            .iter()
            .flat_map(|s| s.windows.keys().copied())
            .collect()
    }

    /// The state rows of the windows starting in `range`, every shard's.
    ///
    /// # Errors
    /// DataFusion failures reading a window's group table.
    pub(crate) fn state_in(&self, range: std::ops::Range<Option<i64>>) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for shard in &self.shards {
            for (_, list) in shard.windows.range(range.clone()) {
                out.extend(list.batches(&self.phases)?);
            }
        }
        Ok(out)
    }

    /// Keeps only the windows whose start `keep` accepts.
    pub(crate) fn retain(&mut self, keep: impl Fn(Option<i64>) -> bool) {
        for shard in &mut self.shards {
            shard.windows.retain(|start, _| keep(*start));
        }
    }

    /// Final aggregate rows of `state` (state rows).
    ///
    /// # Errors
    /// Failures executing DataFusion's final aggregate.
    pub(crate) async fn finalize(&self, state: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        self.phases.finalize(state).await
    }

    /// Partial-aggregate rows across windows and shards: one per open group once compacted.
    pub(crate) fn state_rows(&self) -> usize {
        self.shards
            .iter()
            .flat_map(|s| s.windows.values())
            .map(|w| w.rows)
            .sum()
    }

    /// Bytes of memory the state rows and group tables hold, across windows and shards.
    pub(crate) fn state_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let expiry = s.expiry.as_ref().map_or(0, |e| e.size());
                expiry + s.windows.values().map(StateList::size).sum::<usize>()
            })
            .sum()
    }

    /// Gives every lookup join in its segment over `table` a fresh hash table.
    ///
    /// # Errors
    /// DataFusion failures rebuilding a join.
    pub(crate) fn reset_lookup(&mut self, table: &str) -> Result<()> {
        self.partial = volley_sql::stream::lookup::reset_lookup_joins(&self.partial, table)?;
        Ok(())
    }

    /// Finalises the windows `due` selects, every shard at once; rows come out in window order.
    /// With `keep`, their state stays (for corrections within `allowed_lateness`).
    pub(crate) async fn emit(
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
        let partial = &self.partial;
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

async fn absorb_touched_task(
    mut shard: Shard,
    phases: Arc<Phases>,
    partials: Vec<RecordBatch>,
) -> (Shard, Result<()>) {
    let result = shard.absorb_touched(&phases, partials).await;
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

/// What one epoch's rows did to grouped state.
#[derive(Debug, Default)]
pub(crate) struct Ingested {
    /// Windowed: the window starts that took rows (once per shard and batch).
    pub(crate) windows: Vec<Option<i64>>,
    /// Keyed: the final values of the groups that took rows.
    pub(crate) upserts: Vec<RecordBatch>,
}
