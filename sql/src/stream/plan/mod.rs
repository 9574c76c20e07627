//! Rewrites an `INSERT … SELECT`'s DataFusion plan into a streaming plan: a stream graph of
//! stateful nodes with stateless DataFusion segments between them.
//!
//! The SELECT is planned once by DataFusion (one partition, so a GROUP BY becomes a single
//! `AggregateExec`), then cut bottom up at every node a planning rule takes ([`rule`]): the rule returns the node, and a leaf reading the node's output takes
//! its place in the plan above.
//!
//! ```text
//!   DataFusion physical plan            streaming plan
//!   ────────────────────────            ──────────────────────────────────────────────
//!   Projection / Filter(HAVING)   ─▶    post:  Projection / Filter  ◀── EpochSourceExec(node output)
//!   AggregateExec(Single)         ─▶    node:  the aggregate rule's node (state across epochs)
//!   Projection / Filter / UDFs    ─▶           reading its segment: Projection / Filter / UDFs
//!   scan(source)                                 EpochSourceExec(source)
//!                                                  (windowed: late rows leave here, whole)
//! ```
//!
//! A SELECT without stateful node is one stateless plan. Every plan is built here, once.
//!
//! With several workers, each epoch's rows are split into contiguous partitions that run the
//! stateless segments on their own cores.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use super::graph::{Emit, StreamNode};
use super::leaf::{EpochSlot, EpochTable};
use super::order::Emitted;
use super::trace::trace_column;
use volley_udfs::model::{ModelSet, models_called};

use crate::error::{Result, SqlError, StatementRef};
use crate::pipeline::InsertDecl;
use crate::watermark::WatermarkSpec;

mod context;
mod cut;
mod late_split;
pub mod rule;
mod sources;

pub use super::render::render;
use context::has_grouping_sets;
pub use context::{
    batch_context, batch_context_with, insert_logical_plan, register_models, streaming_context,
};
pub use cut::is_stream_join;
pub(crate) use cut::partition_rowwise;
use cut::{Streamable, check_streamable, collect_leaves};
pub use late_split::WindowStart;
use rule::PlanRule;
pub use sources::EventTime;

/// Why a join of two streams bounded by neither a window nor an interval is refused.
const UNBOUNDED_JOIN: &str = "a join of two streams needs both sides in the same tumbling window, joined on it (group or bucket each side by date_bin(INTERVAL ..., event_time) and join ON a.w = b.w AND a.key = b.key, so each window is joined once when both sides are complete), or a bounded interval between their event times (ON a.key = b.key AND b.ts BETWEEN a.ts - INTERVAL ... AND a.ts + INTERVAL ...). Without either the join's state would grow forever. Otherwise bound it with the sink's OPTIONS ('state_ttl' '1 hour'), which joins only rows at most that far apart in event time (the result may then differ from batch), or write each stream to its own table and join them in `volley batch`";

/// A streaming input as the planner sees it.
#[derive(Debug, Clone)]
pub struct SourceBinding {
    /// Table name.
    pub name: String,
    /// Schema of the batches the source yields.
    pub schema: SchemaRef,
    /// Event-time column and disorder bound, if declared.
    pub watermark: Option<WatermarkSpec>,
    /// Where the engine puts each epoch's batches.
    pub slot: Arc<EpochSlot>,
}

/// The streaming plan of one `INSERT INTO target SELECT …`.
#[derive(Debug)]
pub struct QueryPlan {
    /// The sink table.
    pub target: String,
    /// Where the statement is.
    pub at: StatementRef,
    /// Schema of the rows written to the sink.
    pub output_schema: SchemaRef,
    /// Output columns that identify a row for upserts (group keys incl. window start).
    pub key_columns: Vec<String>,
    /// Source tables read.
    pub sources: Vec<String>,
    /// The columns (of each source's schema) the query reads, by source.
    pub source_columns: BTreeMap<String, BTreeSet<usize>>,
    /// Lookup tables joined (bounded, no watermark: loaded once, not streamed).
    pub lookups: Vec<String>,
    /// Models the query calls through `predict()`, by name.
    pub models: Vec<String>,
    /// The epoch slots of the sources it reads, by name (what each epoch gives it).
    pub source_slots: BTreeMap<String, Arc<EpochSlot>>,
    /// Its stateful nodes in the order they run each epoch: each after those it reads.
    nodes: Vec<Box<dyn StreamNode>>,
    /// The segment above the last node (the whole plan of a stateless INSERT), over the
    /// sources' and the nodes' epoch slots: what the sink receives.
    post: Arc<dyn ExecutionPlan>,
    /// What the user should know about how this query runs (shown by `explain` and logged).
    pub warnings: Vec<String>,
}

/// Plans INSERTs over streaming sources.
pub struct StreamPlanner {
    ctx: SessionContext,
    pub(crate) sources: HashMap<String, SourceBinding>,
    pub(crate) workers: usize,
    rules: Vec<Arc<dyn PlanRule>>,
}

impl std::fmt::Debug for StreamPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamPlanner")
            .field("sources", &self.sources.keys())
            .finish()
    }
}

impl StreamPlanner {
    /// A planner reading `sources` (each registered as a table over its epoch slot).
    ///
    /// # Errors
    /// A source registered twice.
    pub fn new(sources: Vec<SourceBinding>) -> Result<Self> {
        let ctx = streaming_context();
        let mut by_name = HashMap::new();
        for source in sources {
            let table = EpochTable::new(
                &source.name,
                Arc::clone(&source.schema),
                Arc::clone(&source.slot),
            );
            ctx.register_table(source.name.as_str(), Arc::new(table))
                .map_err(|e| {
                    SqlError::Internal(format!("registering source '{}': {e}", source.name))
                })?;
            by_name.insert(source.name.clone(), source);
        }
        Ok(Self {
            ctx,
            sources: by_name,
            workers: 1,
            rules: Vec::new(),
        })
    }

    /// Plans stateful nodes with `rules` (one per operator kind), offered each node in turn.
    pub fn with_rules(mut self, rules: Vec<Arc<dyn PlanRule>>) -> Self {
        self.rules = rules;
        self
    }

    /// Lets queries join `tables`: bounded tables with no watermark, loaded by the engine.
    ///
    /// # Errors
    /// A name already registered.
    pub fn with_lookups(self, tables: &[Arc<super::lookup::LookupData>]) -> Result<Self> {
        for data in tables {
            if self.sources.contains_key(data.name()) {
                return Err(SqlError::Internal(format!(
                    "table '{}' is both a stream and a lookup table",
                    data.name()
                )));
            }
            self.ctx
                .register_table(
                    data.name(),
                    Arc::new(super::lookup::LookupTable::new(Arc::clone(data))),
                )
                .map_err(|e| {
                    SqlError::Internal(format!("registering lookup table '{}': {e}", data.name()))
                })?;
        }
        Ok(self)
    }

    /// Lets queries call `models` through `predict()`.
    pub fn with_models(self, models: Arc<ModelSet>) -> Self {
        register_models(&self.ctx, models);
        self
    }

    /// Runs each epoch on `workers` cores: the stateless segment and partial aggregate over
    /// that many partitions of the input, and aggregate state hash-partitioned across that many
    /// shards.
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// The context plans run in (for executing them).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Plans one INSERT.
    ///
    /// # Errors
    /// SQL errors, unsupported streaming shapes, and windows over columns with no watermark.
    pub async fn plan_insert(
        &self,
        insert: &InsertDecl,
        sink_schema: Option<&SchemaRef>,
        state_ttl: Option<std::time::Duration>,
    ) -> Result<QueryPlan> {
        let at = insert.at;
        let logical = insert_logical_plan(&self.ctx, insert, sink_schema).await?;
        if let Some(plan) = self.plan_logical(insert, logical.clone(), None).await? {
            return Ok(plan);
        }
        let unbounded = || SqlError::Unsupported {
            at,
            message: UNBOUNDED_JOIN.into(),
        };
        let Some(ttl) = state_ttl else {
            return Err(unbounded());
        };
        let streams: HashMap<String, String> = self
            .sources
            .values()
            .filter_map(|s| Some((s.name.clone(), s.watermark.as_ref()?.column.clone())))
            .collect();
        let (bounded, joins) = super::ttl::bound_stream_joins(logical, &streams, ttl, at)?;
        if joins == 0 {
            return Err(unbounded());
        }
        self.plan_logical(insert, bounded, Some(ttl))
            .await?
            .ok_or_else(unbounded)
    }

    /// Plans one INSERT's logical plan; `None` for a join of two streams bounded by neither
    /// a window nor an interval. `state_ttl` is the TTL the plan's stream join was bounded by.
    async fn plan_logical(
        &self,
        insert: &InsertDecl,
        logical: LogicalPlan,
        state_ttl: Option<std::time::Duration>,
    ) -> Result<Option<QueryPlan>> {
        let at = insert.at;
        let models = models_called(&logical);
        let mut state = self.ctx.state();
        if has_grouping_sets(&logical) {
            // Grouping sets repeat every group expression, so common-subexpression
            // elimination would move the window into a projection below the aggregate, where
            // it is no longer recognisable as one.
            let rules: Vec<_> = state
                .optimizers()
                .iter()
                .filter(|r| r.name() != "common_sub_expression_eliminate")
                .cloned()
                .collect();
            state = datafusion::execution::SessionStateBuilder::new_from_existing(state)
                .with_optimizer_rules(rules)
                .build();
        }
        let physical = state
            .create_physical_plan(&logical)
            .await
            .map_err(|e| SqlError::plan(at, e))?;
        let physical = super::lookup::orient_lookup_joins(physical, at)?;
        let physical = if models.is_empty() {
            physical
        } else {
            let sources = self.sources.keys().cloned().collect();
            super::positions::trace_model_rows(physical, &sources).map_err(|e| {
                SqlError::Internal(format!("tracing predict() calls to their sources: {e}"))
            })?
        };
        let physical = super::rank_limit::mark_rank_limits(physical)
            .map_err(|e| SqlError::Internal(format!("marking the ranks a query keeps: {e}")))?;
        let output_schema = physical.schema();
        let mut found = Streamable::default();
        check_streamable(&physical, at, false, &self.rules, &mut found)?;
        let mut sources = Vec::new();
        collect_leaves(&physical, &mut sources);
        let source_columns = crate::stream::leaf::columns_read(&physical);
        let lookups = super::lookup::lookup_tables_read(&physical);
        let source_slots = sources
            .iter()
            .filter_map(|s| Some((s.clone(), Arc::clone(&self.sources.get(s)?.slot))))
            .collect();
        let Some((nodes, post)) = self.cut_plan(&physical, insert, state_ttl)? else {
            return Ok(None);
        };
        let emitted = nodes.last().map_or(Emitted::Rows, |n| n.emitted());
        super::order::check_sorts(&found.sorts, emitted, at)?;
        let key_columns = match nodes.last() {
            Some(last) => {
                let port = last.port();
                (0..output_schema.fields().len())
                    .filter(|&i| {
                        !port.key.is_empty()
                            && trace_column(&post, i).is_some_and(|origins| {
                                origins
                                    .iter()
                                    .all(|o| o.input == port.name && port.key.contains(&o.column))
                            })
                    })
                    .map(|i| output_schema.field(i).name().clone())
                    .collect()
            }
            None => Vec::new(),
        };
        let warnings = nodes.iter().flat_map(|n| n.warnings()).collect();
        let post = if nodes.is_empty() {
            partition_rowwise(post, self.workers)?
        } else {
            post
        };
        Ok(Some(QueryPlan {
            target: insert.target.clone(),
            at,
            output_schema,
            key_columns,
            sources,
            source_columns,
            lookups,
            models,
            source_slots,
            nodes,
            post,
            warnings,
        }))
    }
}

impl Clone for QueryPlan {
    fn clone(&self) -> Self {
        Self {
            target: self.target.clone(),
            at: self.at,
            output_schema: Arc::clone(&self.output_schema),
            key_columns: self.key_columns.clone(),
            sources: self.sources.clone(),
            source_columns: self.source_columns.clone(),
            lookups: self.lookups.clone(),
            models: self.models.clone(),
            source_slots: self.source_slots.clone(),
            nodes: self.nodes.iter().map(|n| n.boxed_clone()).collect(),
            post: Arc::clone(&self.post),
            warnings: self.warnings.clone(),
        }
    }
}

impl QueryPlan {
    /// Its stateful nodes in the order they run each epoch: each after those it reads.
    pub fn nodes(&self) -> Vec<&dyn StreamNode> {
        self.nodes.iter().map(|n| &**n).collect()
    }

    /// The segment above the last node (the whole plan of a stateless INSERT): what the sink
    /// receives.
    pub fn post(&self) -> &Arc<dyn ExecutionPlan> {
        &self.post
    }

    /// Replaces the segment above the last node (a lookup join given a fresh table).
    pub fn set_post(&mut self, post: Arc<dyn ExecutionPlan>) {
        self.post = post;
    }

    /// How the sink's rows relate to those written before: the last node's, or appends.
    pub fn emit(&self) -> Emit {
        self.nodes.last().map_or(Emit::Append, |n| n.port().emit)
    }

    /// Gives the last node its sink's `allowed_lateness` (a window aggregate keeps emitted
    /// windows that long for late rows) and `state_ttl` (a keyed aggregate forgets groups idle
    /// that long). An error for an option no node takes: why it does not.
    pub fn apply_sink_options(
        &mut self,
        allowed_lateness: Option<std::time::Duration>,
        state_ttl: Option<std::time::Duration>,
    ) -> std::result::Result<(), String> {
        match self.nodes.last_mut() {
            Some(last) => last.take_sink_options(allowed_lateness, state_ttl),
            None if allowed_lateness.is_some() => Err("keeps windows open for late rows, and this INSERT has no window (date_bin, tumble or date_trunc)".to_string()),
            None => Ok(()),
        }
    }

    /// Whether its rows re-emit windows corrected by late rows (`allowed_lateness`).
    pub fn corrects_windows(&self) -> bool {
        self.nodes.last().is_some_and(|n| n.corrects_windows())
    }

    /// Whether a sink's `state_ttl` bounded a join of two streams that had neither a shared
    /// window nor an interval.
    pub fn ttl_bounded_join(&self) -> bool {
        self.nodes.iter().any(|n| n.bounded_by_ttl())
    }
}
