//! Runs one INSERT's streaming plan, epoch by epoch.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::{collect, collect_partitioned};
use volley_sql::stream::{QueryPlan, QueryShape};

use crate::aggregate::{AggregateOutput, AggregateState};
use crate::error::{EngineError, Result};

/// What one query produced in an epoch.
#[derive(Debug, Default)]
pub struct QueryEpoch {
    /// Rows for the sink.
    pub rows: Vec<RecordBatch>,
    /// Source records that arrived after their window was emitted (every column).
    pub late: Vec<volley_sql::stream::LateRows>,
    /// The operator that found `late` late: its window, and which aggregate of the query.
    pub late_at: String,
    /// Windows emitted.
    pub windows_emitted: usize,
    /// Groups forgotten by `state_ttl`.
    pub groups_expired: usize,
    /// Windows emitted again, corrected by late rows within `allowed_lateness`.
    pub windows_corrected: usize,
}

/// One INSERT: its plan and, for aggregates, their state.
#[derive(Debug)]
pub struct QueryRunner {
    plan: QueryPlan,
    /// The aggregates, innermost first; the last is the query's own, whose rows go through
    /// the post segment. Empty for stateless queries.
    stages: Vec<AggregateState>,
    /// A windowed join of two streams over the stages' rows (or source rows), when the
    /// query's stateful top is one.
    join: Option<crate::join::JoinState>,
    task_ctx: Arc<TaskContext>,
}

/// The state of one aggregate as a checkpoint holds it: its schema, its rows and how far
/// its windows were emitted.
pub type StageSnapshot = (arrow::datatypes::SchemaRef, Vec<RecordBatch>, Option<i64>);

impl QueryRunner {
    /// A runner for `plan`, executing in `task_ctx`.
    pub fn new(plan: QueryPlan, task_ctx: Arc<TaskContext>) -> Self {
        let stages = match &plan.shape {
            QueryShape::Aggregate(agg) => agg
                .inner
                .iter()
                .chain(std::iter::once(&**agg))
                .map(|stage| AggregateState::new(stage.clone(), Arc::clone(&task_ctx)))
                .collect(),
            QueryShape::Join(join) => join
                .inner
                .iter()
                .chain(&join.outer)
                .map(|stage| AggregateState::new(stage.clone(), Arc::clone(&task_ctx)))
                .collect(),
            QueryShape::Stateless { .. } => Vec::new(),
        };
        let join = match &plan.shape {
            QueryShape::Join(join) => Some(crate::join::JoinState::new(
                (**join).clone(),
                Arc::clone(&task_ctx),
            )),
            _ => None,
        };
        Self {
            plan,
            stages,
            join,
            task_ctx,
        }
    }

    /// How many stages feed the query's own (all of them under a join with no aggregate
    /// over it).
    fn inner_count(&self) -> usize {
        if self.join.is_some() && self.outer_count() == 0 {
            self.stages.len()
        } else {
            self.stages.len().saturating_sub(1)
        }
    }

    /// How many aggregates run over a join's rows (0 without a join).
    fn outer_count(&self) -> usize {
        match &self.plan.shape {
            QueryShape::Join(join) => join.outer.len(),
            _ => 0,
        }
    }

    /// The windowed join, when the query is one.
    pub fn join(&self) -> Option<&crate::join::JoinState> {
        self.join.as_ref()
    }

    /// Restores the windowed join's held rows and where joining had got to.
    ///
    /// # Errors
    /// A query without a join, or rows that do not fit it.
    pub fn restore_join(
        &mut self,
        left: Vec<RecordBatch>,
        right: Vec<RecordBatch>,
        matched: &[RecordBatch],
        marks: &[Option<i64>],
    ) -> Result<()> {
        match &mut self.join {
            Some(join) => join.restore(left, right, matched, marks),
            None => Err(EngineError::Checkpoint(format!(
                "INSERT INTO {} has no join, but its checkpoint holds a join's state",
                self.plan.target
            ))),
        }
    }

    /// The plan.
    pub fn plan(&self) -> &QueryPlan {
        &self.plan
    }

    /// Gives every join over lookup table `table` a fresh hash table: run next, they hash
    /// the table's current rows.
    ///
    /// # Errors
    /// DataFusion failures rebuilding a join.
    pub fn reset_lookup(&mut self, table: &str) -> Result<()> {
        if !self.plan.lookups.iter().any(|t| t == table) {
            return Ok(());
        }
        let reset = |plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>| {
            volley_sql::stream::lookup::reset_lookup_joins(plan, table).map_err(EngineError::Sql)
        };
        match &mut self.plan.shape {
            QueryShape::Stateless { plan } => *plan = reset(plan)?,
            QueryShape::Join(_) => {
                return Err(EngineError::Usage(format!(
                    "INSERT INTO {}: refreshing a lookup table joined beside a join of two streams is not supported; drop 'refresh' or join the lookup table in another INSERT",
                    self.plan.target
                )));
            }
            QueryShape::Aggregate(agg) => {
                agg.post = reset(&agg.post)?;
                let last = self.stages.len().saturating_sub(1);
                for (index, stage) in self.stages.iter_mut().enumerate() {
                    let partial = reset(&stage.plan().partial)?;
                    let post = if index == last {
                        Some(Arc::clone(&agg.post))
                    } else {
                        None
                    };
                    stage.replace_plans(partial, post);
                }
            }
        }
        Ok(())
    }

    /// What the query's state means, as text: restoring a checkpoint into a query whose shape
    /// differs is refused. Stateless queries have no state, so any change to them is compatible.
    pub fn shape(&self) -> String {
        if self.stages.is_empty() && self.join.is_none() {
            return "stateless".to_string();
        }
        let mut stages: Vec<String> = self.stages.iter().map(|s| stage_shape(s.plan())).collect();
        if let Some(join) = &self.join {
            stages.push(join_shape(join.plan()));
        }
        stages.join(" then ")
    }

    /// The query's own aggregate (the outermost; none under a join with no aggregate over
    /// it).
    fn top(&self) -> Option<&AggregateState> {
        if self.join.is_some() && self.outer_count() == 0 {
            return None;
        }
        self.stages.last()
    }

    /// The query's own aggregate's state rows, their schema and the emission frontier (None:
    /// stateless).
    pub fn snapshot(&self) -> Option<StageSnapshot> {
        self.top().map(stage_snapshot)
    }

    /// The aggregates feeding the query's own (innermost first), as [`QueryRunner::snapshot`].
    pub fn inner_snapshots(&self) -> Vec<StageSnapshot> {
        let inner = self.inner_count();
        self.stages[..inner].iter().map(stage_snapshot).collect()
    }

    /// The names of the aggregates feeding the query's own, innermost first.
    pub fn inner_names(&self) -> Vec<String> {
        let inner = self.inner_count();
        self.stages[..inner]
            .iter()
            .map(|s| s.plan().output_name.clone())
            .collect()
    }

    /// The `state_ttl` stamps of a keyed aggregate (None: no `state_ttl`).
    ///
    /// # Errors
    /// Arrow failures.
    pub fn stamps(&self) -> Result<Option<(arrow::datatypes::SchemaRef, Vec<RecordBatch>)>> {
        match self.top() {
            Some(state) => state.stamps(),
            None => Ok(None),
        }
    }

    /// Loads checkpointed `state_ttl` stamps (after [`QueryRunner::restore`]); groups without
    /// one are stamped with `watermark` (nanoseconds), when it is known.
    ///
    /// # Errors
    /// Stamps that do not fit the query.
    pub fn restore_stamps(&mut self, stamps: &[RecordBatch], watermark: Option<i64>) -> Result<()> {
        if self.join.is_some() {
            return Ok(());
        }
        match self.stages.last_mut() {
            Some(state) => state.restore_stamps(stamps, watermark),
            None => Ok(()),
        }
    }

    /// Loads checkpointed state (see [`QueryRunner::snapshot`]) into the query's own
    /// aggregate.
    ///
    /// # Errors
    /// State that does not fit this query.
    pub async fn restore(
        &mut self,
        rows: Vec<RecordBatch>,
        emitted_upto: Option<i64>,
    ) -> Result<()> {
        let top = if self.join.is_some() && self.outer_count() == 0 {
            None
        } else {
            self.stages.last_mut()
        };
        match top {
            Some(state) => state.restore(rows, emitted_upto).await,
            None if rows.is_empty() => Ok(()),
            None => Err(EngineError::Checkpoint(format!(
                "INSERT INTO {} is stateless but its checkpoint holds state",
                self.plan.target
            ))),
        }
    }

    /// Loads the checkpointed state of the `index`th aggregate feeding the query's own
    /// (innermost first; see [`QueryRunner::inner_snapshots`]).
    ///
    /// # Errors
    /// No such aggregate, or state that does not fit it.
    pub async fn restore_inner(
        &mut self,
        index: usize,
        rows: Vec<RecordBatch>,
        emitted_upto: Option<i64>,
    ) -> Result<()> {
        let inner = self.inner_count();
        match self.stages[..inner].get_mut(index) {
            Some(state) => state.restore(rows, emitted_upto).await,
            None => Err(EngineError::Checkpoint(format!(
                "INSERT INTO {} has {inner} inner aggregate(s), its checkpoint holds state for more",
                self.plan.target
            ))),
        }
    }

    /// Open windows (0 for stateless queries), over every aggregate of the query.
    pub fn open_windows(&self) -> usize {
        self.stages
            .iter()
            .map(AggregateState::open_windows)
            .sum::<usize>()
            + self
                .join
                .as_ref()
                .map_or(0, crate::join::JoinState::open_windows)
    }

    /// State rows held: partial-aggregate rows across windows, shards and aggregates (0 for
    /// stateless queries). One per open group once compacted.
    pub fn state_rows(&self) -> usize {
        self.stages
            .iter()
            .map(AggregateState::state_rows)
            .sum::<usize>()
            + self
                .join
                .as_ref()
                .map_or(0, crate::join::JoinState::state_rows)
    }

    /// Runs one epoch: over the rows now in the source slots when `fresh`, then up to the
    /// sources' `watermarks` (nanoseconds), then, when `all_done`, to the end of input. An
    /// aggregate over an aggregate runs after it, over the windows it emitted, and closes its
    /// own windows by where those have got to.
    ///
    /// # Errors
    /// Execution failures.
    pub async fn run_epoch(
        &mut self,
        fresh: bool,
        watermarks: &HashMap<String, Option<i64>>,
        all_done: bool,
    ) -> Result<Vec<QueryEpoch>> {
        if let QueryShape::Stateless { plan } = &self.plan.shape {
            if !fresh {
                return Ok(Vec::new());
            }
            // Partitions are contiguous runs of the input: concatenated in order, the rows
            // keep the input's order.
            let rows = collect_partitioned(Arc::clone(plan), Arc::clone(&self.task_ctx))
                .await
                .map_err(EngineError::exec(format!(
                    "INSERT INTO {}",
                    self.plan.target
                )))?;
            return Ok(vec![QueryEpoch {
                rows: non_empty(rows.into_iter().flatten().collect()),
                ..QueryEpoch::default()
            }]);
        }
        let mut watermarks = watermarks.clone();
        let mut parts = Vec::new();
        let mut fed = false;
        let count = self.stages.len();
        let inner = self.inner_count();
        // Under aggregates over its rows, the join runs before the first of them.
        let join_at = match &self.plan.shape {
            QueryShape::Join(join) if !join.outer.is_empty() => Some(join.inner.len()),
            _ => None,
        };
        for index in 0..count {
            if join_at == Some(index) {
                let (epoch, joined) = self.run_join(fresh || fed, &watermarks, all_done).await?;
                fed |= joined;
                if let (QueryShape::Join(plan), Some(join)) = (&self.plan.shape, &self.join) {
                    watermarks.insert(plan.output_name.clone(), join.output_watermark());
                }
                parts.push(epoch);
            }
            let late_at = late_operator(self.stages[index].plan(), index, count);
            let state = &mut self.stages[index];
            let mut outs = Vec::new();
            let mut late = Vec::new();
            if fresh || fed {
                outs.push(state.process_epoch().await?);
                late = state
                    .plan()
                    .window
                    .as_ref()
                    .map(|w| w.gate.take_late())
                    .unwrap_or_default();
            }
            let (advanced, groups_expired) =
                advance(state, &self.plan.sources, &watermarks).await?;
            outs.push(advanced);
            if all_done {
                outs.push(state.flush().await?);
            }
            if index < inner {
                // Its windows are the next aggregate's input, its frontier their watermark.
                let mut out = AggregateOutput::default();
                for part in outs {
                    out.extend(part);
                }
                let plan = state.plan();
                watermarks.insert(plan.output_name.clone(), state.output_watermark());
                // Any inner aggregate's rows are input for those above it (a union reads
                // several): running one whose slots are empty costs an empty pass, no more.
                fed |= !out.rows.is_empty();
                plan.post_slot.set(out.rows);
                parts.push(QueryEpoch {
                    late,
                    late_at,
                    windows_emitted: out.windows_emitted,
                    ..QueryEpoch::default()
                });
                continue;
            }
            for (i, out) in outs.into_iter().enumerate() {
                let mut epoch = self.post(out).await?;
                if i == 0 {
                    epoch.late = std::mem::take(&mut late);
                    epoch.late_at.clone_from(&late_at);
                }
                parts.push(epoch);
            }
            if let Some(part) = parts.last_mut() {
                part.groups_expired += groups_expired;
            }
        }
        if self.join.is_some() && join_at.is_none() {
            parts.push(self.run_join(fresh || fed, &watermarks, all_done).await?.0);
        }
        for stage in &self.stages[..inner] {
            stage.plan().post_slot.clear();
        }
        if let QueryShape::Join(plan) = &self.plan.shape {
            plan.post_slot.clear();
        }
        Ok(parts)
    }

    /// Runs the join of two streams over its sides' new rows, then the segment above it; with
    /// aggregates over its rows, leaves them in its output slot for the first of them and
    /// says whether there were any.
    async fn run_join(
        &mut self,
        read: bool,
        watermarks: &HashMap<String, Option<i64>>,
        all_done: bool,
    ) -> Result<(QueryEpoch, bool)> {
        let QueryShape::Join(plan) = &self.plan.shape else {
            return Ok((QueryEpoch::default(), false));
        };
        let Some(join) = &mut self.join else {
            return Ok((QueryEpoch::default(), false));
        };
        let out = join.run_epoch(read, watermarks, all_done).await?;
        let mut late = Vec::new();
        for side in [&plan.left, &plan.right] {
            if let volley_sql::stream::join::SideFrontier::Sources { gate, .. } = &side.frontier {
                late.extend(gate.take_late());
            }
        }
        let mut epoch = QueryEpoch {
            late,
            late_at: format!(
                "{} join on {}",
                if plan.interval.is_some() {
                    "interval"
                } else {
                    "windowed"
                },
                plan.display
            ),
            windows_emitted: out.windows,
            ..QueryEpoch::default()
        };
        if out.rows.is_empty() {
            return Ok((epoch, false));
        }
        plan.post_slot.set(out.rows);
        if !plan.outer.is_empty() {
            return Ok((epoch, true));
        }
        let rows = collect(Arc::clone(&plan.post), Arc::clone(&self.task_ctx)).await;
        plan.post_slot.clear();
        epoch.rows = non_empty(rows.map_err(EngineError::exec(format!(
            "INSERT INTO {} (after the join)",
            self.plan.target
        )))?);
        Ok((epoch, false))
    }

    /// Runs the post-aggregate segment over finalised rows.
    async fn post(&self, out: AggregateOutput) -> Result<QueryEpoch> {
        let (agg, post) = match &self.plan.shape {
            QueryShape::Aggregate(agg) => (&**agg, &agg.post),
            QueryShape::Join(join) => match join.outer.last() {
                Some(agg) => (agg, &join.post),
                None => return Ok(QueryEpoch::default()),
            },
            QueryShape::Stateless { .. } => return Ok(QueryEpoch::default()),
        };
        if out.rows.is_empty() {
            return Ok(QueryEpoch {
                windows_emitted: out.windows_emitted,
                windows_corrected: out.windows_corrected,
                ..QueryEpoch::default()
            });
        }
        agg.post_slot.set(out.rows);
        let rows = collect(Arc::clone(post), Arc::clone(&self.task_ctx)).await;
        agg.post_slot.clear();
        let rows = rows.map_err(EngineError::exec(format!(
            "INSERT INTO {} (after the aggregate)",
            self.plan.target
        )))?;
        Ok(QueryEpoch {
            rows: non_empty(rows),
            windows_emitted: out.windows_emitted,
            windows_corrected: out.windows_corrected,
            ..QueryEpoch::default()
        })
    }
}

/// Advances one aggregate to the watermarks: a windowed one emits the windows they close,
/// a keyed one forgets groups by `state_ttl` (counting the watermark of every source the
/// query reads). Returns what was emitted and how many groups were forgotten.
async fn advance(
    state: &mut AggregateState,
    sources: &[String],
    watermarks: &HashMap<String, Option<i64>>,
) -> Result<(AggregateOutput, usize)> {
    let Some(window) = state.plan().window.clone() else {
        let Some(wm) = min_watermark(sources, watermarks) else {
            return Ok((AggregateOutput::default(), 0));
        };
        return Ok((AggregateOutput::default(), state.expire(wm)?));
    };
    let Some(wm_nanos) = min_watermark(&window.sources, watermarks) else {
        return Ok((AggregateOutput::default(), 0));
    };
    let wm = if wm_nanos == i64::MAX {
        i64::MAX
    } else {
        wm_nanos.div_euclid(window.nanos_per_unit())
    };
    Ok((state.advance_watermark(wm).await?, 0))
}

/// The window that judges rows late in aggregate `index` of `count`, for dead letters.
fn late_operator(agg: &volley_sql::stream::AggregatePlan, index: usize, count: usize) -> String {
    let window = agg
        .window
        .as_ref()
        .map_or_else(String::new, |w| format!("window {}", w.display));
    if count == 1 {
        window
    } else {
        format!("{window} of aggregate {} of {count}", index + 1)
    }
}

fn stage_snapshot(state: &AggregateState) -> StageSnapshot {
    let (rows, emitted_upto) = state.snapshot();
    (state.state_schema(), rows, emitted_upto)
}

/// One aggregate's state, as text (see [`QueryRunner::shape`]).
fn stage_shape(agg: &volley_sql::stream::AggregatePlan) -> String {
    let state: Vec<String> = agg
        .state_schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect();
    let window = agg.window.as_ref().map_or_else(
        || "keyed".to_string(),
        |w| format!("window {} wide", w.size_text()),
    );
    format!("{window}; state [{}]", state.join(", "))
}

/// A windowed join's state, as text (see [`QueryRunner::shape`]).
fn join_shape(join: &volley_sql::stream::join::JoinPlan) -> String {
    let columns = |schema: arrow::datatypes::SchemaRef| {
        schema
            .fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let kind = match &join.interval {
        Some(b) => format!(
            "interval join on {} within [{}, {}] ns",
            join.display, b.lo, b.hi
        ),
        None => format!(
            "windowed join on {} ({} {:?} wide)",
            join.display, join.width, join.unit
        ),
    };
    format!(
        "{kind}; left [{}]; right [{}]",
        columns(join.left.plan.schema()),
        columns(join.right.plan.schema())
    )
}

/// The smallest watermark of `sources` (nanoseconds); `None` while any is unknown.
pub fn min_watermark(sources: &[String], watermarks: &HashMap<String, Option<i64>>) -> Option<i64> {
    let mut min: Option<i64> = None;
    for source in sources {
        let wm = watermarks.get(source).copied().flatten()?;
        min = Some(min.map_or(wm, |m| m.min(wm)));
    }
    min
}

fn non_empty(batches: Vec<RecordBatch>) -> Vec<RecordBatch> {
    batches.into_iter().filter(|b| b.num_rows() > 0).collect()
}
