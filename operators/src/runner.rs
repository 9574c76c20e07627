//! Runs one INSERT's streaming plan, epoch by epoch: its stateful operators in plan order
//! (see [`volley_sql::stream::operator`]), then the segment above the last of them.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::{ExecutionPlan, collect, collect_partitioned};
use volley_sql::stream::QueryPlan;
use volley_sql::stream::leaf::EpochSlot;

use volley_sql::stream::operator::{OperatorError, Result};
use volley_sql::stream::operator::{OperatorInput, RestoredState, StreamOperator};

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

/// One INSERT: its plan and its stateful operators.
#[derive(Debug)]
pub struct QueryRunner {
    plan: QueryPlan,
    /// The stateful operators in plan order: each reads what those before it emitted. Empty
    /// for stateless queries.
    stages: Vec<Stage>,
    task_ctx: Arc<TaskContext>,
}

/// One operator of a query and where its rows go.
#[derive(Debug)]
struct Stage {
    /// Its checkpoint id ([`volley_sql::stream::graph::node_ids`]).
    id: String,
    operator: Box<dyn StreamOperator>,
    /// The slot the segment above reads its rows from.
    output: Arc<EpochSlot>,
    /// Which operator of the query it is, for dead letters.
    label: String,
    /// A join of two streams (its shape is named after the aggregates', as checkpoints have
    /// always named them).
    join: bool,
    /// The slots its input rows come from: sources' and the operators' below it.
    inputs: Vec<Arc<EpochSlot>>,
    /// What it has read, emitted and found late so far.
    counts: OperatorCounts,
}

/// Rows one operator has taken in, emitted and found late, since its runner started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperatorCounts {
    /// Rows its input slots held when it ran (source rows, or what the operators below it
    /// emitted), before its segment's filters.
    pub rows_in: u64,
    /// Rows it emitted.
    pub rows_out: u64,
    /// Source rows it found late (they went to dead letters).
    pub late_rows: u64,
}

impl QueryRunner {
    /// A runner for `plan`, executing in `task_ctx`.
    ///
    /// # Errors
    /// A node no runtime runs (a bug).
    pub fn new(plan: QueryPlan, task_ctx: Arc<TaskContext>) -> Result<Self> {
        let mut stages = Vec::new();
        let nodes = plan.nodes();
        let ids = volley_sql::stream::graph::node_ids(&nodes);
        let mut slots: HashMap<String, Arc<EpochSlot>> = plan
            .source_slots
            .iter()
            .map(|(name, slot)| (name.clone(), Arc::clone(slot)))
            .collect();
        for (node, id) in nodes.into_iter().zip(ids) {
            let port = node.port();
            let inputs = node
                .inputs()
                .iter()
                .filter_map(|input| slots.get(input).cloned())
                .collect();
            slots.insert(port.name.clone(), Arc::clone(&port.slot));
            stages.push(Stage {
                id,
                operator: node.instantiate(Arc::clone(&task_ctx)),
                output: Arc::clone(&port.slot),
                label: String::new(),
                join: node.kind() == crate::two_streams::JOIN,
                inputs,
                counts: OperatorCounts::default(),
            });
        }
        let aggregates = stages.iter().filter(|s| !s.join).count();
        let mut nth = 0;
        for stage in &mut stages {
            stage.label = stage.operator.describe();
            if !stage.join && aggregates > 1 {
                nth += 1;
                stage.label = format!("{} of aggregate {nth} of {aggregates}", stage.label);
            }
        }
        Ok(Self {
            plan,
            stages,
            task_ctx,
        })
    }

    /// The plan.
    pub fn plan(&self) -> &QueryPlan {
        &self.plan
    }

    /// The stateful operators, in plan order.
    pub fn operators(&self) -> impl Iterator<Item = &dyn StreamOperator> {
        self.stages.iter().map(|s| &*s.operator)
    }

    /// The segment above the last operator (the whole plan of a stateless query).
    fn post(&self) -> &Arc<dyn ExecutionPlan> {
        self.plan.post()
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
        let post = volley_sql::stream::lookup::reset_lookup_joins(self.post(), table)
            .map_err(OperatorError::Sql)?;
        self.plan.set_post(post);
        for stage in &mut self.stages {
            stage.operator.reset_lookup(table)?;
        }
        Ok(())
    }

    /// What the query's state means, as text: restoring a checkpoint into a query whose shape
    /// differs is refused. Stateless queries have no state, so any change to them is
    /// compatible. The aggregates come first, innermost first, then the join.
    pub fn shape(&self) -> String {
        if self.stages.is_empty() {
            return "stateless".to_string();
        }
        let aggregates = self.stages.iter().filter(|s| !s.join);
        let joins = self.stages.iter().filter(|s| s.join);
        aggregates
            .chain(joins)
            .map(|s| s.operator.shape())
            .collect::<Vec<_>>()
            .join(" then ")
    }

    /// The stateful operators with their checkpoint ids and what each has read, emitted and
    /// found late, in plan order.
    pub fn operator_counts(
        &self,
    ) -> impl Iterator<Item = (&str, &dyn StreamOperator, OperatorCounts)> {
        self.stages
            .iter()
            .map(|s| (s.id.as_str(), &*s.operator, s.counts))
    }

    /// The stateful operators with their checkpoint ids, in plan order.
    pub fn operators_by_id(&self) -> impl Iterator<Item = (&str, &dyn StreamOperator)> {
        self.stages.iter().map(|s| (s.id.as_str(), &*s.operator))
    }

    /// The checkpoint id of the operator a checkpoint names `name`: its id, or, in a
    /// checkpoint written before operators had ids (format 2 and older), the name of its
    /// output (`rolled#aggregate1`), which this plan still gives it.
    pub fn id_of(&self, name: &str) -> Option<&str> {
        self.stages
            .iter()
            .find(|s| s.id == name)
            .or_else(|| self.stages.iter().find(|s| s.operator.name() == name))
            .map(|s| s.id.as_str())
    }

    /// Loads checkpointed state into the operator a checkpoint names `name` (see
    /// [`QueryRunner::id_of`]).
    ///
    /// # Errors
    /// No operator of that name, or state that does not fit it.
    pub async fn restore(&mut self, name: &str, state: RestoredState) -> Result<()> {
        let id = self.id_of(name).map(str::to_string);
        let Some(stage) = self.stages.iter_mut().find(|s| Some(&s.id) == id.as_ref()) else {
            let names: Vec<&str> = self.stages.iter().map(|s| s.id.as_str()).collect();
            return Err(OperatorError::Checkpoint(format!(
                "INSERT INTO {} has no operator {name} (it has [{}]), but its checkpoint holds state for one",
                self.plan.target,
                names.join(", ")
            )));
        };
        stage.operator.restore(state).await
    }

    /// Open windows (0 for stateless queries), over every operator of the query.
    pub fn open_windows(&self) -> usize {
        self.operators().map(StreamOperator::open_windows).sum()
    }

    /// State rows held, over every operator of the query (0 for stateless queries): an
    /// aggregate's partial-aggregate rows (one per open group once compacted), a join's held
    /// rows.
    pub fn state_rows(&self) -> usize {
        self.operators().map(StreamOperator::state_rows).sum()
    }

    /// Runs one epoch: over the rows now in the source slots when `fresh`, then up to the
    /// sources' `watermarks` (nanoseconds), then, when `all_done`, to the end of input. Each
    /// operator runs after those below it, over what they emitted, and closes its windows by
    /// where their output has got to.
    ///
    /// # Errors
    /// Execution failures.
    pub async fn run_epoch(
        &mut self,
        fresh: bool,
        watermarks: &HashMap<String, Option<i64>>,
        all_done: bool,
    ) -> Result<Vec<QueryEpoch>> {
        if self.stages.is_empty() {
            if !fresh {
                return Ok(Vec::new());
            }
            // Partitions are contiguous runs of the input: concatenated in order, the rows
            // keep the input's order.
            let rows = collect_partitioned(Arc::clone(self.post()), Arc::clone(&self.task_ctx))
                .await
                .map_err(OperatorError::exec(format!(
                    "INSERT INTO {}",
                    self.plan.target
                )))?;
            return Ok(vec![QueryEpoch {
                rows: non_empty(rows.into_iter().flatten().collect()),
                ..QueryEpoch::default()
            }]);
        }
        let mut watermarks = watermarks.clone();
        let mut parts = Vec::with_capacity(self.stages.len());
        // Rows an operator emits are input for every operator above it (a union reads
        // several): running one whose slots are empty costs an empty pass, no more.
        let mut fed = false;
        for stage in &mut self.stages {
            if fresh || fed {
                let rows: usize = stage.inputs.iter().map(|s| s.rows()).sum();
                stage.counts.rows_in += rows as u64;
            }
            let out = stage
                .operator
                .run_epoch(OperatorInput {
                    read: fresh || fed,
                    watermarks: &watermarks,
                    sources: &self.plan.sources,
                    all_done,
                })
                .await?;
            watermarks.extend(stage.operator.output_watermarks());
            fed |= !out.rows.is_empty();
            stage.counts.rows_out += out.rows.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            stage.counts.late_rows += out
                .late
                .iter()
                .map(|l| l.rows.num_rows() as u64)
                .sum::<u64>();
            stage.output.set(out.rows);
            parts.push(QueryEpoch {
                rows: Vec::new(),
                late: out.late,
                late_at: stage.label.clone(),
                windows_emitted: out.windows_emitted,
                groups_expired: out.groups_expired,
                windows_corrected: out.windows_corrected,
            });
        }
        let rows = self.run_post().await;
        for stage in &self.stages {
            stage.output.clear();
        }
        if let Some(last) = parts.last_mut() {
            last.rows = rows?;
        }
        Ok(parts)
    }

    /// Runs the segment above the last operator over the rows it emitted this epoch.
    async fn run_post(&self) -> Result<Vec<RecordBatch>> {
        let Some(last) = self.stages.last() else {
            return Ok(Vec::new());
        };
        if last.output.snapshot().is_empty() {
            return Ok(Vec::new());
        }
        let rows = collect(Arc::clone(self.post()), Arc::clone(&self.task_ctx))
            .await
            .map_err(OperatorError::exec(format!(
                "INSERT INTO {} (after {})",
                self.plan.target, last.label
            )))?;
        Ok(non_empty(rows))
    }
}

fn non_empty(batches: Vec<RecordBatch>) -> Vec<RecordBatch> {
    batches.into_iter().filter(|b| b.num_rows() > 0).collect()
}
