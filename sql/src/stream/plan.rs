//! Rewrites an `INSERT … SELECT`'s DataFusion plan into a streaming plan.
//!
//! The SELECT is planned once by DataFusion (one partition, so a GROUP BY becomes a single
//! `AggregateExec`), then cut at that aggregate:
//!
//! ```text
//!   DataFusion physical plan            streaming plan
//!   ────────────────────────            ──────────────────────────────────────────────
//!   Projection / Filter(HAVING)   ─▶    post:  Projection / Filter  ◀── EpochSourceExec(agg output)
//!   AggregateExec(Single)         ─▶    state: Partial per epoch ─▶ window state ─▶ Final on emit
//!   Projection / Filter / UDFs    ─▶    pre:   AggregateExec(Partial)
//!   scan(source)                                 Projection / Filter / UDFs
//!                                                EpochSourceExec(source)
//!                                                  (windowed: late rows leave here, whole)
//! ```
//!
//! A SELECT without aggregate is one stateless plan. Every plan is built here, once.
//!
//! With several workers, each epoch's rows are split into contiguous partitions that run the
//! stateless segment and the partial aggregate on their own cores; the engine then
//! hash-partitions the partial state by group key across `shards` state owners.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, col};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;

use super::capability::{Capability, capability};
use super::late::{LateFilter, LateGate};
use super::leaf::{EpochSlot, EpochTable};
use super::order::Emitted;
use super::trace::{column_of, trace_column};
use super::window::{BucketSize, WindowSize, WindowSpec, as_bucket, is_utc, nanos_per_unit};
use volley_udfs::model::{ModelSet, models_called};

use crate::error::{Result, SqlError, StatementRef};
use crate::pipeline::InsertDecl;
use crate::watermark::WatermarkSpec;

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

/// A windowed or keyed aggregate, split into the plans and expressions the engine runs.
#[derive(Debug, Clone)]
pub struct AggregatePlan {
    /// `AggregateExec(Partial)` over the stateless segment: this epoch's state rows.
    pub partial: Arc<dyn ExecutionPlan>,
    /// Group-by in final form (over state columns), for PartialReduce and Final.
    pub final_group_by: PhysicalGroupBy,
    /// The aggregate functions.
    pub aggr_expr: Vec<Arc<AggregateFunctionExpr>>,
    /// Per-aggregate FILTER clauses.
    pub filter_expr: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// Schema of the aggregate's raw input (what its expressions are bound to).
    pub input_schema: SchemaRef,
    /// Schema of state rows: group columns, then each aggregate's state fields.
    pub state_schema: SchemaRef,
    /// Schema of final rows: group columns, then aggregate values.
    pub output_schema: SchemaRef,
    /// Number of group columns (they lead both state and final rows).
    pub group_count: usize,
    /// The tumbling window, or `None` for a keyed (upsert) aggregate.
    pub window: Option<WindowSpec>,
    /// Where the engine puts finalised aggregate rows for the segment reading them: the post
    /// segment, or the input of the aggregate over this one.
    pub post_slot: Arc<EpochSlot>,
    /// The input name of the leaf reading `post_slot` (what traces and watermarks call this
    /// aggregate's output).
    pub output_name: String,
    /// The segment above the aggregate (HAVING, projections, UDFs over aggregates). For an
    /// aggregate in `inner`, the leaf alone: its rows are the input of the aggregate above.
    pub post: Arc<dyn ExecutionPlan>,
    /// Aggregates whose emitted windows this one reads (an aggregate over an aggregate),
    /// innermost first: each runs before the next in every epoch, its rows reach the next
    /// one through its `post_slot`, and its output's watermark is where its emitted windows
    /// have got to. Empty for the inner aggregates themselves.
    pub inner: Vec<AggregatePlan>,
    /// How many state owners the group keys are hash-partitioned across.
    pub shards: usize,
    /// Per group key (in GROUP BY order): the source columns it is copied from, unchanged or
    /// cast; empty when it is computed (the window, an expression).
    pub key_sources: Vec<Vec<KeySource>>,
    /// Keyed aggregates only: a group not updated for this long (event time, by the
    /// watermark) is forgotten (the sink's `state_ttl` option).
    pub state_ttl: Option<std::time::Duration>,
}

/// A source column a group key is copied from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySource {
    /// The source table.
    pub table: String,
    /// The column of that table.
    pub column: String,
}

impl AggregatePlan {
    /// Whether it groups by GROUPING SETS, ROLLUP or CUBE.
    pub fn has_grouping_sets(&self) -> bool {
        self.partial
            .downcast_ref::<AggregateExec>()
            .is_some_and(|a| a.group_expr().has_grouping_set())
    }

    /// Whether some group key is copied unchanged (or cast) from `table`'s column `column`:
    /// then rows of one group all share that column's value.
    pub fn groups_by_source_column(&self, table: &str, column: &str) -> bool {
        // A key that some grouping set rolls up does not confine that set's groups.
        let sets: Vec<Vec<bool>> = self
            .partial
            .downcast_ref::<AggregateExec>()
            .map(|a| a.group_expr().groups().to_vec())
            .unwrap_or_default();
        self.key_sources.iter().enumerate().any(|(i, sources)| {
            sets.iter().all(|set| !set.get(i).copied().unwrap_or(false))
                && !sources.is_empty()
                && sources
                    .iter()
                    .all(|s| s.table == table && s.column == column)
        })
    }
}

/// What kind of work an INSERT is.
#[derive(Debug, Clone)]
pub enum QueryShape {
    /// Filters, projections and UDFs only: each epoch's rows stream straight through.
    Stateless {
        /// The whole plan, over the sources' epoch slots.
        plan: Arc<dyn ExecutionPlan>,
    },
    /// One aggregate, windowed or keyed.
    Aggregate(Box<AggregatePlan>),
    /// A windowed join of two streams (over windowed aggregates or bucketed rows).
    Join(Box<super::join::JoinPlan>),
}

/// The streaming plan of one `INSERT INTO target SELECT …`.
#[derive(Debug, Clone)]
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
    /// Lookup tables joined (bounded, no watermark: loaded once, not streamed).
    pub lookups: Vec<String>,
    /// Models the query calls through `predict()`, by name.
    pub models: Vec<String>,
    /// The work itself.
    pub shape: QueryShape,
    /// What the user should know about how this query runs (shown by `explain` and logged).
    pub warnings: Vec<String>,
}

/// Makes `predict()` in `ctx` call `models` (replacing the function registered with no models).
pub fn register_models(ctx: &SessionContext, models: Arc<ModelSet>) {
    ctx.register_udf(volley_udfs::model::predict_udf(models));
}

/// The session configuration every Volley context uses (UDFs registered; `predict()` knows no
/// model until [`register_models`]).
pub fn batch_context() -> SessionContext {
    batch_context_with(datafusion::prelude::SessionConfig::new())
}

/// [`batch_context`] with `config` (partitions, batch size), for checking that a batch answer
/// does not depend on how the input is split.
pub fn batch_context_with(config: datafusion::prelude::SessionConfig) -> SessionContext {
    let ctx = SessionContext::new_with_config(config);
    volley_udfs::register_all(&ctx);
    ctx
}

/// A context for planning streaming queries: one partition (so an aggregate is one node whose
/// accumulators we can drive in phases) and `count(DISTINCT)` kept as a distinct accumulator
/// rather than rewritten into two aggregates.
pub fn streaming_context() -> SessionContext {
    let mut config = datafusion::prelude::SessionConfig::new().with_target_partitions(1);
    // A lookup join's hash table outlives an epoch; a filter derived from it must not be
    // pushed into the stream's side, whose rows change every epoch.
    config
        .options_mut()
        .optimizer
        .enable_join_dynamic_filter_pushdown = false;
    let state = datafusion::execution::SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build();
    let rules: Vec<_> = state
        .optimizers()
        .iter()
        .filter(|r| r.name() != "single_distinct_aggregation_to_group_by")
        .cloned()
        .collect();
    let state = datafusion::execution::SessionStateBuilder::new_from_existing(state)
        .with_optimizer_rules(rules)
        .build();
    let ctx = SessionContext::new_with_state(state);
    volley_udfs::register_all(&ctx);
    ctx
}

/// The logical plan of an INSERT's query, with output columns cast and renamed to the sink's
/// declared columns when it declares any. Batch and streaming both start here.
///
/// # Errors
/// Planning errors, and a column count that does not match the sink.
pub async fn insert_logical_plan(
    ctx: &SessionContext,
    insert: &InsertDecl,
    sink_schema: Option<&SchemaRef>,
) -> Result<LogicalPlan> {
    let at = insert.at;
    let statement = DfStatement::Statement(Box::new(SqlStatement::Query(insert.query.clone())));
    let plan = ctx
        .state()
        .statement_to_plan(statement)
        .await
        .map_err(|e| SqlError::plan(at, e))?;
    let Some(sink) = sink_schema else {
        return Ok(plan);
    };
    let fields = plan.schema().columns();
    if fields.len() != sink.fields().len() {
        return Err(SqlError::Plan {
            at,
            message: format!(
                "INSERT INTO {}: the query has {} columns but the table declares {}",
                insert.target,
                fields.len(),
                sink.fields().len()
            ),
        });
    }
    let exprs: Vec<Expr> = fields
        .into_iter()
        .zip(sink.fields())
        .map(|(c, f)| col(c).cast_to_type(f.data_type()).alias(f.name()))
        .collect();
    LogicalPlanBuilder::from(plan)
        .project(exprs)
        .and_then(|b| b.build())
        .map_err(|e| SqlError::plan(at, e))
}

trait CastTo {
    fn cast_to_type(self, to: &DataType) -> Expr;
}

impl CastTo for Expr {
    fn cast_to_type(self, to: &DataType) -> Expr {
        Expr::Cast(datafusion::logical_expr::Cast::new(
            Box::new(self),
            to.clone(),
        ))
    }
}

/// Plans INSERTs over streaming sources.
pub struct StreamPlanner {
    ctx: SessionContext,
    sources: HashMap<String, SourceBinding>,
    workers: usize,
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
        })
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
        let output_schema = physical.schema();
        let mut found = Streamable::default();
        check_streamable(&physical, at, false, &mut found)?;
        let Streamable {
            aggregates,
            joins,
            sorts,
            ..
        } = found;
        let mut sources = Vec::new();
        collect_leaves(&physical, &mut sources);
        let physical_for_lookups = Arc::clone(&physical);
        let shape = match joins.as_slice() {
            [] if aggregates.is_empty() => QueryShape::Stateless {
                plan: partition_rowwise(physical, self.workers)?,
            },
            [] => QueryShape::Aggregate(Box::new(self.cut_aggregates(&physical, insert)?)),
            [join] => match self.plan_join(&physical, join, insert, state_ttl)? {
                Some(join) => QueryShape::Join(Box::new(join)),
                None => return Ok(None),
            },
            _ => {
                return Err(SqlError::Unsupported {
                    at,
                    message: "a streaming INSERT may join two streams once: join the result of one join with a third stream in another pipeline, or in `volley batch`".into(),
                });
            }
        };
        let emitted = match &shape {
            QueryShape::Aggregate(agg) if agg.window.is_some() => Emitted::Windows,
            QueryShape::Aggregate(_) => Emitted::Updates,
            QueryShape::Join(join) => match join.outer.last() {
                Some(agg) if agg.window.is_none() => Emitted::Updates,
                Some(_) => Emitted::Windows,
                None if join.interval.is_none() => Emitted::Windows,
                None => Emitted::Rows,
            },
            QueryShape::Stateless { .. } => Emitted::Rows,
        };
        super::order::check_sorts(&sorts, emitted, at)?;
        let key_columns = match &shape {
            // With grouping sets the visible group columns do not identify a row: a rolled-up
            // NULL and a NULL key look alike.
            QueryShape::Aggregate(agg) if agg.has_grouping_sets() => Vec::new(),
            QueryShape::Stateless { .. } | QueryShape::Join(_) => Vec::new(),
            QueryShape::Aggregate(agg) => (0..output_schema.fields().len())
                .filter(|&i| {
                    trace_column(&agg.post, i).is_some_and(|origins| {
                        origins
                            .iter()
                            .all(|o| o.input == agg.output_name && o.column < agg.group_count)
                    })
                })
                .map(|i| output_schema.field(i).name().clone())
                .collect(),
        };
        let warnings = match &shape {
            QueryShape::Aggregate(agg) if agg.window.is_none() => self.bucket_warnings(agg),
            QueryShape::Join(join) => join
                .state_ttl
                .map(|ttl| format!("the join of two streams joins only rows at most {} apart in event time (the sink's 'state_ttl'), so pairs further apart are missing and the result may differ from batch", crate::sql_text::duration(ttl)))
                .into_iter()
                .collect(),
            _ => Vec::new(),
        };
        Ok(Some(QueryPlan {
            target: insert.target.clone(),
            at,
            output_schema,
            key_columns,
            sources,
            lookups: super::lookup::lookup_tables_read(&physical_for_lookups),
            models,
            shape,
            warnings,
        }))
    }

    /// Cuts `root` at every aggregate, innermost first: each becomes an [`AggregatePlan`]
    /// whose place in the plan a leaf over its output takes. Returns the outermost aggregate
    /// with the others as its `inner` and the rest of the plan as its `post`.
    fn cut_aggregates(
        &self,
        root: &Arc<dyn ExecutionPlan>,
        insert: &InsertDecl,
    ) -> Result<AggregatePlan> {
        let at = insert.at;
        let mut stages = Vec::new();
        let post = self.cut(root, insert, &mut stages)?;
        let mut top = stages
            .pop()
            .ok_or_else(|| SqlError::Internal("an aggregate query without aggregate".into()))?;
        let mut read = Vec::new();
        collect_leaves(&post, &mut read);
        if read != [top.output_name.as_str()] {
            return Err(SqlError::Unsupported {
                at,
                message: "above its outermost aggregate a streaming query may read only that aggregate's rows (a UNION ALL or join of an aggregate with other rows or another aggregate is not supported yet): aggregate the union instead, or write each part to its own table".into(),
            });
        }
        for (i, inner) in stages.iter().enumerate() {
            let readers = stages[i + 1..]
                .iter()
                .chain(std::iter::once(&top))
                .filter(|s| {
                    let mut leaves = Vec::new();
                    collect_leaves(&s.partial, &mut leaves);
                    leaves.contains(&inner.output_name)
                })
                .count();
            if readers != 1 {
                return Err(SqlError::Internal(format!(
                    "the rows of {} are read by {readers} aggregates",
                    inner.output_name
                )));
            }
        }
        top.post = post;
        top.inner = stages;
        Ok(top)
    }

    /// The plan under `node` with every aggregate (innermost first, pushed onto `stages`)
    /// replaced by a leaf over its output.
    fn cut(
        &self,
        node: &Arc<dyn ExecutionPlan>,
        insert: &InsertDecl,
        stages: &mut Vec<AggregatePlan>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(single) = single_phase(node)? {
            return self.cut(&single, insert, stages);
        }
        let children = node.children();
        let build = super::lookup::lookup_build_side(node.as_ref());
        let mut cut = Vec::with_capacity(children.len());
        for child in &children {
            // A lookup table's side of its join is bounded: it runs as in batch, uncut.
            if build.is_some_and(|b| Arc::ptr_eq(b, child)) {
                cut.push(Arc::clone(*child));
            } else {
                cut.push(self.cut(child, insert, stages)?);
            }
        }
        let node = datafusion::physical_plan::execution_plan::replace_children_if_necessary(
            Arc::clone(node),
            cut,
        )
        .map_err(|e| SqlError::Internal(format!("cutting the plan at an aggregate: {e}")))?;
        if node.downcast_ref::<AggregateExec>().is_none() {
            return Ok(node);
        }
        let name = if stages.is_empty() {
            format!("{}#aggregate", insert.target)
        } else {
            format!("{}#aggregate{}", insert.target, stages.len())
        };
        let stage = self.split_aggregate(&node, insert, name, stages, None)?;
        let leaf = Arc::clone(&stage.post);
        stages.push(stage);
        Ok(leaf)
    }

    /// One aggregate (whose input holds no aggregate any more: `inner` are those cut below
    /// it), its output read by a leaf named `output_name`, which is also its `post` for now.
    fn split_aggregate(
        &self,
        agg_node: &Arc<dyn ExecutionPlan>,
        insert: &InsertDecl,
        output_name: String,
        inner: &[AggregatePlan],
        join: Option<&super::join::JoinTimes>,
    ) -> Result<AggregatePlan> {
        let at = insert.at;
        let agg = agg_node
            .downcast_ref::<AggregateExec>()
            .ok_or_else(|| SqlError::Internal("aggregate node is not an AggregateExec".into()))?;
        if !matches!(
            agg.mode(),
            AggregateMode::Single | AggregateMode::SinglePartitioned
        ) {
            return Err(SqlError::Internal(format!(
                "expected a single-phase aggregate with one partition, got {:?}",
                agg.mode()
            )));
        }
        let group_by = agg.group_expr().clone();
        super::determinism::check_order_independent(agg.aggr_expr(), at)?;
        let pre = Arc::clone(agg.input());
        let mut read = Vec::new();
        collect_leaves(&pre, &mut read);
        if let Some(keyed) = inner
            .iter()
            .find(|s| s.window.is_none() && read.contains(&s.output_name))
        {
            return Err(SqlError::Unsupported {
                at,
                message: format!(
                    "an aggregate over a keyed aggregate (GROUP BY {} without a window) would count every update of its groups again: window the inner aggregate (GROUP BY date_bin(INTERVAL ..., event_time), ...) so each group is emitted once, or write it to a table with a merge_key and aggregate that in batch",
                    keyed_groups(keyed)
                ),
            });
        }
        let hop = super::hop::find_hop(&group_by, &pre)
            .map_err(|message| SqlError::Unsupported { at, message })?;
        if hop.is_some() && join.is_some() {
            return Err(SqlError::Unsupported {
                at,
                message: "hop windows over a join of two streams' rows are not streamed yet: hop over each stream's rows and join the hop windows' rows on their window instead".into(),
            });
        }
        let window = self.find_window(&group_by, &pre, at, inner, join)?;
        let (window, partial_input): (_, Arc<dyn ExecutionPlan>) = match (hop, window) {
            (Some(_), Some(_)) => {
                return Err(SqlError::Unsupported {
                    at,
                    message: "a streaming aggregate may group by one window: a hop window and a tumbling one together would nest windows; aggregate one, then the other over its output".into(),
                });
            }
            (Some(call), None) => {
                let window = self.hop_window(&call, at, inner)?;
                let panes = super::hop::to_panes(&pre)
                    .map_err(|e| SqlError::Internal(format!("planning hop panes: {e}")))?;
                let split = self.hop_late_at_leaves(&panes, &call, &window)?;
                (Some(window), split)
            }
            (None, Some(w)) => {
                let (expr, _) = &group_by.expr()[w.group_index];
                // Over inner aggregates' windows only, no row is ever late: they emit each
                // window once, complete.
                let split = if w.sources.iter().any(|s| self.sources.contains_key(s)) {
                    self.split_late_at_leaves(&pre, expr, &w)?
                } else {
                    Arc::clone(&pre)
                };
                (Some(w), split)
            }
            (None, None) => (None, Arc::clone(&pre)),
        };
        if group_by.has_grouping_set() {
            check_grouping_sets(&group_by, window.as_ref(), at)?;
        }
        let partial_input = partition_rowwise(partial_input, self.workers)?;
        let input_schema = agg.input_schema();
        let partial = AggregateExec::try_new(
            AggregateMode::Partial,
            group_by.clone(),
            agg.aggr_expr().to_vec(),
            agg.filter_expr().to_vec(),
            partial_input,
            Arc::clone(&input_schema),
        )
        .map_err(|e| SqlError::Internal(format!("building partial aggregate: {e}")))?;
        let state_schema = partial.schema();
        let output_schema = agg_node.schema();
        let post_slot = EpochSlot::new();
        let post: Arc<dyn ExecutionPlan> = Arc::new(
            super::leaf::EpochSourceExec::new(
                output_name.clone(),
                Arc::clone(&output_schema),
                None,
                Arc::clone(&post_slot),
            )
            .map_err(|e| SqlError::Internal(e.to_string()))?,
        );
        Ok(AggregatePlan {
            partial: Arc::new(partial),
            final_group_by: group_by.as_final(),
            aggr_expr: agg.aggr_expr().to_vec(),
            filter_expr: agg.filter_expr().to_vec(),
            input_schema,
            state_schema,
            output_schema,
            // With grouping sets, `__grouping_id` is a group column too: it tells a rolled-up
            // NULL from a NULL key.
            group_count: group_by.num_group_exprs(),
            window,
            post_slot,
            output_name,
            post,
            inner: Vec::new(),
            shards: self.workers,
            key_sources: group_by
                .expr()
                .iter()
                .map(|(expr, _)| self.key_sources(expr, &pre))
                .collect(),
            state_ttl: None,
        })
    }

    /// `pre` with a late-row filter on every leaf of the window's sources: each computes the
    /// window start (`window_expr`, over `pre`'s output) from the source's own event-time
    /// column, cast as `pre` casts it, so a late row leaves with all its columns.
    fn split_late_at_leaves(
        &self,
        pre: &Arc<dyn ExecutionPlan>,
        window_expr: &Arc<dyn PhysicalExpr>,
        window: &WindowSpec,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let ts = as_bucket(window_expr)
            .ok()
            .flatten()
            .and_then(|b| column_of(&b.ts))
            .ok_or_else(|| {
                SqlError::Internal(
                    "splitting late rows: the window has no event-time column".into(),
                )
            })?;
        let pre_type = pre.schema().field(ts).data_type().clone();
        self.split_late_typed(pre, window_expr, &pre_type, window)
    }

    /// [`Self::split_late_at_leaves`] where `window_expr`'s time column (of type `pre_type`)
    /// is computed below `pre`'s output, as a bucket in a projection of a join's side.
    pub(super) fn split_late_typed(
        &self,
        pre: &Arc<dyn ExecutionPlan>,
        window_expr: &Arc<dyn PhysicalExpr>,
        pre_type: &DataType,
        window: &WindowSpec,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let internal = |what: &str| SqlError::Internal(format!("splitting late rows: {what}"));
        let ts = as_bucket(window_expr)
            .ok()
            .flatten()
            .and_then(|b| column_of(&b.ts))
            .ok_or_else(|| internal("the window has no event-time column"))?;
        let pre_type = pre_type.clone();
        Arc::clone(pre)
            .transform_up(|node| {
                let Some(leaf) = node.downcast_ref::<super::leaf::EpochSourceExec>() else {
                    return Ok(Transformed::no(node));
                };
                let Some(source) = self
                    .sources
                    .get(leaf.input_name())
                    .filter(|s| window.sources.contains(&s.name))
                else {
                    return Ok(Transformed::no(node));
                };
                let Some(wm) = &source.watermark else {
                    return Ok(Transformed::no(node));
                };
                let index = leaf.input_schema().index_of(&wm.column)?;
                let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(&wm.column, index));
                let column = if leaf.input_schema().field(index).data_type() == &pre_type {
                    column
                } else {
                    Arc::new(CastExpr::new(column, pre_type.clone(), None))
                };
                let start = Arc::clone(window_expr)
                    .transform(|e| match e.downcast_ref::<Column>() {
                        Some(c) if c.index() == ts => Ok(Transformed::yes(Arc::clone(&column))),
                        _ => Ok(Transformed::no(e)),
                    })?
                    .data;
                let late = LateFilter {
                    window_start: start,
                    gate: Arc::clone(&window.gate),
                };
                Ok(Transformed::yes(
                    Arc::new(leaf.with_late(late)) as Arc<dyn ExecutionPlan>
                ))
            })
            .map(|t| t.data)
            .map_err(|e| internal(&e.to_string()))
    }

    /// Plans a query whose stateful top is `join`, a join of two streams: the aggregates
    /// below it are cut as inner stages, the join becomes a windowed join over the windows
    /// both sides share, and what is above it reads its output.
    fn plan_join(
        &self,
        root: &Arc<dyn ExecutionPlan>,
        join_node: &Arc<dyn ExecutionPlan>,
        insert: &InsertDecl,
        state_ttl: Option<std::time::Duration>,
    ) -> Result<Option<super::join::JoinPlan>> {
        let at = insert.at;
        let mut stages = Vec::new();
        let mut found = None;
        let mut outer = Vec::new();
        let post = self.cut_join(root, join_node, insert, &mut stages, &mut found, &mut outer)?;
        let Some(CutJoin {
            join,
            left,
            right,
            slot,
            times,
        }) = found
        else {
            return Err(SqlError::Internal(
                "the join vanished while planning it".into(),
            ));
        };
        check_outer_chain(&times.name, &outer, &post, at)?;
        let output = JoinOutput {
            name: times.name.clone(),
            slot,
            post,
            outer,
            outer_time: times.used.get(),
        };
        let Some(hash) = join.downcast_ref::<HashJoinExec>() else {
            return Err(SqlError::Internal(
                "a stream join that is not a hash join".into(),
            ));
        };
        let refuse = |message: String| SqlError::Unsupported { at, message };
        let mut window = None;
        for (l, r) in hash.on() {
            let (Some(l), Some(r)) = (column_of(l), column_of(r)) else {
                continue;
            };
            let sides = (
                super::join::side_window(&left, l, &stages),
                super::join::side_window(&right, r, &stages),
            );
            if let (Some(a), Some(b)) = sides {
                window = Some((l, r, a, b));
                break;
            }
        }
        if window.is_none()
            && let Some(bounds) = super::interval::interval_bounds(hash)
        {
            return self
                .plan_interval_join(join, left, right, bounds, stages, output, insert, state_ttl)
                .map(Some);
        }
        let Some((l, r, left_window, right_window)) = window else {
            return Ok(None);
        };
        if left_window.size() != right_window.size() {
            return Err(refuse(format!(
                "the two sides of a windowed join must use the same window: {} against {}",
                span_of(left_window.size()),
                span_of(right_window.size())
            )));
        }
        let (width, unit) = left_window.size();
        let display = format!(
            "{} = {}",
            left.schema().field(l).name(),
            right.schema().field(r).name()
        );
        let left = self.join_side(left, l, &left_window, width, unit, &display, at)?;
        let right = self.join_side(right, r, &right_window, width, unit, &display, at)?;
        for stage in &stages {
            if stage.window.is_none() {
                return Err(refuse(format!(
                    "a keyed aggregate (GROUP BY {} without a window) feeds a join of two streams: its updates never end, so no window of the join would close. Window it (GROUP BY date_bin(INTERVAL ..., event_time), ...)",
                    keyed_groups(stage)
                )));
            }
        }
        Ok(Some(super::join::JoinPlan {
            join,
            left,
            right,
            width,
            unit,
            display,
            inner: stages,
            post_slot: output.slot,
            output_name: output.name,
            post: output.post,
            interval: None,
            state_ttl: None,
            outer: output.outer,
            outer_time: output.outer_time,
        }))
    }

    /// An interval join (`ON a.k = b.k AND b.ts BETWEEN a.ts - x AND a.ts + y`) of two
    /// streams' rows, each time a watermarked event time.
    #[expect(clippy::too_many_arguments)]
    fn plan_interval_join(
        &self,
        join: Arc<dyn ExecutionPlan>,
        left: Arc<dyn ExecutionPlan>,
        right: Arc<dyn ExecutionPlan>,
        bounds: super::interval::IntervalBounds,
        stages: Vec<AggregatePlan>,
        output: JoinOutput,
        insert: &InsertDecl,
        state_ttl: Option<std::time::Duration>,
    ) -> Result<super::join::JoinPlan> {
        let at = insert.at;
        let refuse = |message: String| SqlError::Unsupported { at, message };
        let Some(hash) = join.downcast_ref::<HashJoinExec>() else {
            return Err(SqlError::Internal(
                "an interval join that is not a hash join".into(),
            ));
        };
        if !matches!(
            hash.join_type(),
            datafusion::common::JoinType::Inner | datafusion::common::JoinType::Left
        ) {
            return Err(refuse(format!(
                "an interval join is streamed as an INNER or LEFT join (stream a LEFT JOIN b) only; {} is not yet: write JOIN or LEFT JOIN with the preserved stream first, or join on a shared tumbling window instead",
                hash.join_type()
            )));
        }
        if !stages.is_empty() {
            return Err(refuse(
                "an interval join streams source rows; join aggregates on their shared window instead".into(),
            ));
        }
        let display = hash.filter().map_or_else(String::new, |f| {
            crate::sql_text::tidy(&f.expression().to_string())
        });
        let left_side = self.interval_side(left, bounds.left_ts, &display, at)?;
        let right_side = self.interval_side(right, bounds.right_ts, &display, at)?;
        let unit = |side: &(super::join::JoinSide, arrow::datatypes::TimeUnit)| side.1;
        if unit(&left_side) != unit(&right_side) {
            return Err(refuse(format!(
                "the two event times of the interval join {display} have different units ({:?} and {:?}); cast one to the other",
                unit(&left_side),
                unit(&right_side)
            )));
        }
        Ok(super::join::JoinPlan {
            join,
            unit: left_side.1,
            left: left_side.0,
            right: right_side.0,
            width: 0,
            display,
            inner: stages,
            post_slot: output.slot,
            output_name: output.name,
            post: output.post,
            interval: Some(bounds),
            state_ttl,
            outer: output.outer,
            outer_time: output.outer_time,
        })
    }

    /// One side of an interval join: its time column must be a watermarked source's event
    /// time; rows older than the watermark the other side was last trimmed by leave as late.
    fn interval_side(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        ts: usize,
        display: &str,
        at: StatementRef,
    ) -> Result<(super::join::JoinSide, arrow::datatypes::TimeUnit)> {
        let refuse = |message: String| SqlError::Unsupported { at, message };
        let ts_type = plan.schema().field(ts).data_type().clone();
        let DataType::Timestamp(unit, _) = ts_type else {
            return Err(refuse(format!(
                "the interval join {display} compares {ts_type}, not event times"
            )));
        };
        let origins = trace_column(&plan, ts).ok_or_else(|| {
            refuse(format!(
                "the interval join {display} must compare the sources' watermarked event-time columns themselves, not computed values"
            ))
        })?;
        let mut sources = Vec::new();
        for origin in &origins {
            let source = self.sources.get(&origin.input).ok_or_else(|| {
                refuse(format!(
                    "the interval join {display} must compare source rows' event times, not an aggregate's"
                ))
            })?;
            let column = source.schema.field(origin.column).name().clone();
            match &source.watermark {
                Some(wm) if wm.column == column => sources.push(source.name.clone()),
                _ => {
                    return Err(refuse(format!(
                        "the interval join {display} is over column '{column}' of table '{}', which has no watermark, so no row would ever be done with. Declare one: OPTIONS ('watermark' '{column} - INTERVAL ''5 seconds''')",
                        source.name
                    )));
                }
            }
        }
        let gate = LateGate::new();
        let split = self.split_late_identity(&plan, &sources, &gate, &ts_type)?;
        Ok((
            super::join::JoinSide {
                plan: partition_rowwise(split, self.workers)?,
                window_column: ts,
                frontier: super::join::SideFrontier::Sources { sources, gate },
            },
            unit,
        ))
    }

    /// `plan` with a late-row filter on each leaf of `sources` judging rows by their own
    /// event time (cast to `ts_type`).
    fn split_late_identity(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        sources: &[String],
        gate: &Arc<LateGate>,
        ts_type: &DataType,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Arc::clone(plan)
            .transform_up(|node| {
                let Some(leaf) = node.downcast_ref::<super::leaf::EpochSourceExec>() else {
                    return Ok(Transformed::no(node));
                };
                let Some(wm) = self
                    .sources
                    .get(leaf.input_name())
                    .filter(|s| sources.contains(&s.name))
                    .and_then(|s| s.watermark.as_ref())
                else {
                    return Ok(Transformed::no(node));
                };
                let schema = leaf.input_schema();
                let index = schema.index_of(&wm.column)?;
                let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(&wm.column, index));
                let column = if schema.field(index).data_type() == ts_type {
                    column
                } else {
                    Arc::new(CastExpr::new(column, ts_type.clone(), None))
                };
                let late = LateFilter {
                    window_start: column,
                    gate: Arc::clone(gate),
                };
                Ok(Transformed::yes(
                    Arc::new(leaf.with_late(late)) as Arc<dyn ExecutionPlan>
                ))
            })
            .map(|t| t.data)
            .map_err(|e| SqlError::Internal(format!("splitting late rows: {e}")))
    }

    /// `node` with the aggregates under `target` cut (into `stages`), `target` itself taken
    /// out (into `found`: the join, its cut sides and the leaf reading its rows, which takes
    /// its place), and the windowed aggregates above it cut (into `outer`, innermost first).
    fn cut_join(
        &self,
        node: &Arc<dyn ExecutionPlan>,
        target: &Arc<dyn ExecutionPlan>,
        insert: &InsertDecl,
        stages: &mut Vec<AggregatePlan>,
        found: &mut Option<CutJoin>,
        outer: &mut Vec<AggregatePlan>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(single) = single_phase(node)? {
            return self.cut_join(&single, target, insert, stages, found, outer);
        }
        if Arc::ptr_eq(node, target) {
            let children = node.children();
            let (Some(left), Some(right)) = (children.first(), children.get(1)) else {
                return Err(SqlError::Internal("a join without two sides".into()));
            };
            let left = self.cut(left, insert, stages)?;
            let right = self.cut(right, insert, stages)?;
            let join = datafusion::physical_plan::execution_plan::replace_children_if_necessary(
                Arc::clone(node),
                vec![Arc::clone(&left), Arc::clone(&right)],
            )
            .map_err(|e| SqlError::Internal(format!("cutting the join: {e}")))?;
            let Some(hash) = join.downcast_ref::<HashJoinExec>() else {
                return Err(SqlError::Internal(
                    "a stream join that is not a hash join".into(),
                ));
            };
            let name = format!("{}#join", insert.target);
            let times = super::join::join_times(hash, stages, name.clone());
            let (slot, leaf) = self.output_leaf(&name, join.schema())?;
            *found = Some(CutJoin {
                join,
                left,
                right,
                slot,
                times,
            });
            return Ok(leaf);
        }
        let children = node.children();
        let mut cut = Vec::with_capacity(children.len());
        for child in &children {
            cut.push(self.cut_join(child, target, insert, stages, found, outer)?);
        }
        let node = datafusion::physical_plan::execution_plan::replace_children_if_necessary(
            Arc::clone(node),
            cut,
        )
        .map_err(|e| SqlError::Internal(format!("cutting the plan at a join: {e}")))?;
        if node.downcast_ref::<AggregateExec>().is_none() {
            return Ok(node);
        }
        let at = insert.at;
        let refuse = |message: &str| SqlError::Unsupported {
            at,
            message: message.to_string(),
        };
        let Some(cut_join) = found.as_ref() else {
            return Err(refuse(
                "an aggregate beside a join of two streams in one INSERT is not streamed; write it in its own INSERT",
            ));
        };
        if !cut_join.times.bounded() {
            // An unbounded join is refused (or bounded by `state_ttl` and planned again).
            return Ok(node);
        }
        let count = stages.len() + outer.len();
        let name = if count == 0 {
            format!("{}#aggregate", insert.target)
        } else {
            format!("{}#aggregate{count}", insert.target)
        };
        let stage = self.split_aggregate(&node, insert, name, outer, Some(&cut_join.times))?;
        if stage.window.is_none() {
            return Err(refuse(&format!(
                "an aggregate over a join of two streams (GROUP BY {}) is streamed when it is windowed by the join's rows' time: the window column of a windowed join, or one side's event time of an interval join (GROUP BY date_bin(INTERVAL ..., a.event_time), ...), so each window closes as the join's rows for it are final; or write the joined rows to a table and aggregate it in `volley batch`",
                keyed_groups(&stage)
            )));
        }
        let leaf = Arc::clone(&stage.post);
        outer.push(stage);
        Ok(leaf)
    }

    /// One side of a windowed join: its plan (late rows split out at its leaves when it
    /// buckets source rows) and when its windows are complete.
    #[expect(clippy::too_many_arguments)]
    fn join_side(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        column: usize,
        window: &super::join::SideWindow,
        width: i64,
        unit: arrow::datatypes::TimeUnit,
        display: &str,
        at: StatementRef,
    ) -> Result<super::join::JoinSide> {
        use super::join::{JoinSide, SideFrontier, SideWindow};
        match window {
            SideWindow::Aggregate { input, .. } => Ok(JoinSide {
                plan: partition_rowwise(plan, self.workers)?,
                window_column: column,
                frontier: SideFrontier::Aggregate {
                    input: input.clone(),
                },
            }),
            SideWindow::Bucket {
                expr,
                ts_type,
                origins,
                ..
            } => {
                let mut sources = Vec::new();
                let mut column_name = String::new();
                for origin in origins {
                    let source = self.sources.get(&origin.input).ok_or_else(|| {
                        SqlError::Unsupported {
                            at,
                            message: format!(
                                "the window {display} of a join must be over a source's watermarked event time, not over '{}'",
                                origin.input
                            ),
                        }
                    })?;
                    column_name = source.schema.field(origin.column).name().clone();
                    match &source.watermark {
                        Some(wm) if wm.column == column_name => sources.push(source.name.clone()),
                        _ => {
                            return Err(SqlError::Unsupported {
                                at,
                                message: format!(
                                    "the window {display} of a join is over column '{column_name}' of table '{}', which has no watermark, so its windows would never close. Declare one: OPTIONS ('watermark' '{column_name} - INTERVAL ''5 seconds''')",
                                    source.name
                                ),
                            });
                        }
                    }
                }
                let gate = LateGate::new();
                let spec = WindowSpec {
                    group_index: 0,
                    size: WindowSize::Fixed(width),
                    unit,
                    column: column_name,
                    sources: sources.clone(),
                    gate: Arc::clone(&gate),
                    display: display.to_string(),
                    lateness: 0,
                    hop: None,
                };
                let split = self.split_late_typed(&plan, expr, ts_type, &spec)?;
                Ok(JoinSide {
                    plan: partition_rowwise(split, self.workers)?,
                    window_column: column,
                    frontier: SideFrontier::Sources { sources, gate },
                })
            }
        }
    }

    /// A slot and the leaf reading it, for an operator's output named `name`.
    fn output_leaf(
        &self,
        name: &str,
        schema: SchemaRef,
    ) -> Result<(Arc<EpochSlot>, Arc<dyn ExecutionPlan>)> {
        let slot = EpochSlot::new();
        let leaf =
            super::leaf::EpochSourceExec::new(name.to_string(), schema, None, Arc::clone(&slot))
                .map_err(|e| SqlError::Internal(e.to_string()))?;
        Ok((slot, Arc::new(leaf)))
    }

    /// The window of a hop found among the group keys: panes over a watermarked source column.
    fn hop_window(
        &self,
        call: &super::hop::HopCall,
        at: StatementRef,
        inner: &[AggregatePlan],
    ) -> Result<WindowSpec> {
        let name = call.display.clone();
        let mut sources = Vec::new();
        let mut column = String::new();
        for origin in &call.origins {
            if inner.iter().any(|s| s.output_name == origin.input) {
                return Err(SqlError::Unsupported {
                    at,
                    message: format!(
                        "GROUP BY {name}: a hop window over an aggregate's output is not streamed; hop over the source's rows, or aggregate the hop windows' output with tumbling windows"
                    ),
                });
            }
            let source = self.sources.get(&origin.input).ok_or_else(|| {
                SqlError::Internal(format!(
                    "hop time traced to unknown input '{}'",
                    origin.input
                ))
            })?;
            column = source.schema.field(origin.column).name().clone();
            match &source.watermark {
                Some(wm) if wm.column == column => sources.push(source.name.clone()),
                _ => {
                    return Err(SqlError::Unsupported {
                        at,
                        message: format!(
                            "GROUP BY {name}: column '{column}' of table '{}' has no watermark, so the hop windows would never close and their state would grow forever. Declare one: OPTIONS ('watermark' '{column} - INTERVAL ''5 seconds''')",
                            source.name
                        ),
                    });
                }
            }
        }
        Ok(WindowSpec {
            group_index: call.group_index,
            size: WindowSize::Fixed(call.sizes.pane),
            unit: call.unit,
            column,
            sources,
            gate: LateGate::new(),
            display: name,
            lateness: 0,
            hop: Some(super::window::HopWindow {
                slide: call.sizes.slide,
                size: call.sizes.size,
            }),
        })
    }

    /// `panes` with a late-row filter on every leaf of the hop window's sources: each computes
    /// the row's pane start from the source's own event-time column.
    fn hop_late_at_leaves(
        &self,
        panes: &Arc<dyn ExecutionPlan>,
        call: &super::hop::HopCall,
        window: &WindowSpec,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let internal = |what: String| SqlError::Internal(format!("splitting late rows: {what}"));
        let ts_type = DataType::Timestamp(call.unit, call.tz.clone());
        let pane_nanos = call.sizes.pane.saturating_mul(nanos_per_unit(call.unit));
        let date_bin = Arc::new(datafusion::logical_expr::ScalarUDF::from(
            datafusion::functions::datetime::date_bin::DateBinFunc::new(),
        ));
        Arc::clone(panes)
            .transform_up(|node| {
                let Some(leaf) = node.downcast_ref::<super::leaf::EpochSourceExec>() else {
                    return Ok(Transformed::no(node));
                };
                let Some(wm) = self
                    .sources
                    .get(leaf.input_name())
                    .filter(|s| window.sources.contains(&s.name))
                    .and_then(|s| s.watermark.as_ref())
                else {
                    return Ok(Transformed::no(node));
                };
                let schema = leaf.input_schema();
                let index = schema.index_of(&wm.column)?;
                let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(&wm.column, index));
                let column = if schema.field(index).data_type() == &ts_type {
                    column
                } else {
                    Arc::new(CastExpr::new(column, ts_type.clone(), None))
                };
                let stride: Arc<dyn PhysicalExpr> =
                    Arc::new(datafusion::physical_expr::expressions::Literal::new(
                        datafusion::common::ScalarValue::new_interval_mdn(0, 0, pane_nanos),
                    ));
                let start = datafusion::physical_expr::ScalarFunctionExpr::try_new(
                    Arc::clone(&date_bin),
                    vec![stride, column],
                    schema.as_ref(),
                    Arc::new(datafusion::config::ConfigOptions::default()),
                )?;
                let late = LateFilter {
                    window_start: Arc::new(start),
                    gate: Arc::clone(&window.gate),
                };
                Ok(Transformed::yes(
                    Arc::new(leaf.with_late(late)) as Arc<dyn ExecutionPlan>
                ))
            })
            .map(|t| t.data)
            .map_err(|e| internal(e.to_string()))
    }

    /// Group keys of a keyed aggregate computed from a source's TIMESTAMP column: buckets of
    /// event time that are not windows, so their state never shrinks.
    fn bucket_warnings(&self, agg: &AggregatePlan) -> Vec<String> {
        let Some(partial) = agg.partial.downcast_ref::<AggregateExec>() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (expr, name) in partial.group_expr().expr() {
            let from_time = super::trace::derived_from_expr(expr, partial.input())
                .into_iter()
                .find_map(|origin| {
                    let source = self.sources.get(&origin.input)?;
                    let field = source.schema.fields().get(origin.column)?;
                    matches!(field.data_type(), DataType::Timestamp(_, _))
                        .then(|| (field.name().clone(), source.name.clone()))
                });
            if let Some((column, table)) = from_time {
                out.push(format!(
                    "GROUP BY {name} buckets event time ('{column}' of '{table}') but is not a window: every bucket stays in state forever and is re-emitted as an upsert whenever it changes. Write the bucket as date_bin or date_trunc over a watermarked event-time column, or bound the state with the sink's 'state_ttl' option"
                ));
            }
        }
        out
    }

    /// The source columns a group expression over `pre`'s output is copied from.
    fn key_sources(
        &self,
        expr: &Arc<dyn PhysicalExpr>,
        pre: &Arc<dyn ExecutionPlan>,
    ) -> Vec<KeySource> {
        let Some(origins) = column_of(expr).and_then(|c| trace_column(pre, c)) else {
            return Vec::new();
        };
        origins
            .iter()
            .map(|o| {
                let source = self.sources.get(&o.input)?;
                Some(KeySource {
                    table: o.input.clone(),
                    column: source.schema.fields().get(o.column)?.name().clone(),
                })
            })
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default()
    }

    /// Finds the tumbling window among the group expressions, checking it is over a watermarked
    /// event-time column.
    fn find_window(
        &self,
        group_by: &PhysicalGroupBy,
        pre: &Arc<dyn ExecutionPlan>,
        at: StatementRef,
        inner: &[AggregatePlan],
        join: Option<&super::join::JoinTimes>,
    ) -> Result<Option<WindowSpec>> {
        let mut found = None;
        for (index, (expr, _)) in group_by.expr().iter().enumerate() {
            let name = &crate::sql_text::expr(expr);
            let bucket = as_bucket(expr).map_err(|e| SqlError::Unsupported {
                at,
                message: format!("GROUP BY {name}: {}", e.0),
            })?;
            let Some(bin) = bucket else { continue };
            if found.is_some() {
                return Err(SqlError::Unsupported {
                    at,
                    message: "a streaming aggregate may group by one window (date_bin, tumble or date_trunc)"
                        .into(),
                });
            }
            let (unit, tz) = match expr.data_type(pre.schema().as_ref()) {
                Ok(DataType::Timestamp(unit, tz)) => (unit, tz),
                Ok(other) => {
                    return Err(SqlError::Unsupported {
                        at,
                        message: format!(
                            "GROUP BY {name}: the window is over {other}, not a TIMESTAMP column"
                        ),
                    });
                }
                Err(e) => return Err(SqlError::plan(at, e)),
            };
            let per_unit = nanos_per_unit(unit);
            let size = match bin.size {
                BucketSize::Nanos(nanos) if nanos % per_unit != 0 => {
                    return Err(SqlError::Unsupported {
                        at,
                        message: format!(
                            "GROUP BY {name}: the window width is finer than the column's {unit:?} precision"
                        ),
                    });
                }
                BucketSize::Nanos(nanos) => WindowSize::Fixed(nanos / per_unit),
                BucketSize::Months(months) => WindowSize::Months(months),
            };
            let varies = !matches!(size, WindowSize::Fixed(w) if w * per_unit < 3_600_000_000_000);
            if bin.trunc_unit.is_some() && varies && !is_utc(tz.as_deref()) {
                return Err(SqlError::Unsupported {
                    at,
                    message: format!(
                        "GROUP BY {name}: the column is in time zone '{}', where hours, days and longer units change length with daylight saving; window a UTC timestamp, or use date_bin with a fixed INTERVAL",
                        tz.as_deref().unwrap_or_default()
                    ),
                });
            }
            let traced = column_of(&bin.ts).and_then(|c| Some((c, trace_column(pre, c)?)));
            let Some((ts, origins)) = traced else {
                return Err(SqlError::Unsupported {
                    at,
                    message: format!(
                        "GROUP BY {name}: a streaming window must be over a source's watermarked event-time column itself, not a computed expression"
                    ),
                });
            };
            let mut sources = Vec::new();
            let mut column = String::new();
            for origin in origins {
                if let Some(times) = join.filter(|j| j.name == origin.input) {
                    // A window over a join's rows, by a time whose rows the join finalises.
                    let Some(time) = times.time_of(origin.column) else {
                        return Err(SqlError::Unsupported {
                            at,
                            message: format!(
                                "GROUP BY {name}: a window over a join of two streams' rows must be over the time the join bounds: the window column of a windowed join, or either side's event time of an interval join, as the join outputs it"
                            ),
                        });
                    };
                    if times.used.get().is_some_and(|t| t != time) {
                        return Err(SqlError::Unsupported {
                            at,
                            message: format!(
                                "GROUP BY {name}: the aggregates over a join of two streams must window by one of its times"
                            ),
                        });
                    }
                    times.used.set(Some(time));
                    column = pre.schema().field(ts).name().clone();
                    sources.push(times.name.clone());
                    continue;
                }
                if let Some(stage) = inner.iter().find(|s| s.output_name == origin.input) {
                    // A window over windows: the inner aggregate's window start is its rows'
                    // event time, and where its emitted windows have got to their watermark.
                    // A hop window's rows are timed by their window start too: its output
                    // watermark is the next window start it will emit.
                    match &stage.window {
                        Some(w) if w.group_index == origin.column && w.lateness == 0 => {
                            column = stage.output_schema.field(origin.column).name().clone();
                            sources.push(stage.output_name.clone());
                            continue;
                        }
                        _ => {
                            return Err(SqlError::Unsupported {
                                at,
                                message: format!(
                                    "GROUP BY {name}: a window over an aggregate's rows must be over that aggregate's own window column (its event time); column '{}' is not one",
                                    column_of(&bin.ts)
                                        .map(|c| pre.schema().field(c).name().clone())
                                        .unwrap_or_default()
                                ),
                            });
                        }
                    }
                }
                let source = self.sources.get(&origin.input).ok_or_else(|| {
                    SqlError::Internal(format!(
                        "window column traced to unknown input '{}'",
                        origin.input
                    ))
                })?;
                column = source.schema.field(origin.column).name().clone();
                match &source.watermark {
                    Some(wm) if wm.column == column => sources.push(source.name.clone()),
                    _ => {
                        return Err(SqlError::Unsupported {
                            at,
                            message: format!(
                                "GROUP BY {name}: column '{column}' of table '{}' has no watermark, so the window would never close and its state would grow forever. Declare one: OPTIONS ('watermark' '{column} - INTERVAL ''5 seconds''')",
                                source.name
                            ),
                        });
                    }
                }
            }
            found = Some(WindowSpec {
                group_index: index,
                size,
                unit,
                column,
                sources,
                gate: LateGate::new(),
                display: name.clone(),
                lateness: 0,
                hop: None,
            });
        }
        if found.is_none() {
            found = inner_window_key(group_by, pre, inner, join);
        }
        Ok(found)
    }
}

/// A group key that is an inner windowed aggregate's own window column, grouped as it is
/// (`GROUP BY w` over per-window rows), or a windowed join's window column: a window as wide
/// as the inner one (a hop window's slide), closed as the inner aggregate (or the join) emits.
fn inner_window_key(
    group_by: &PhysicalGroupBy,
    pre: &Arc<dyn ExecutionPlan>,
    inner: &[AggregatePlan],
    join: Option<&super::join::JoinTimes>,
) -> Option<WindowSpec> {
    for (index, (expr, name)) in group_by.expr().iter().enumerate() {
        let Some(origins) = column_of(expr).and_then(|c| trace_column(pre, c)) else {
            continue;
        };
        let found = join
            .and_then(|times| join_window_of(&origins, times))
            .or_else(|| stage_window_of(&origins, inner));
        if let Some(((width, unit), column, sources)) = found {
            return Some(WindowSpec {
                group_index: index,
                size: WindowSize::Fixed(width),
                unit,
                column: column.unwrap_or_else(|| name.clone()),
                sources,
                gate: LateGate::new(),
                display: name.clone(),
                lateness: 0,
                hop: None,
            });
        }
    }
    None
}

/// What a group column traced to `origins` is as a window: its step and unit, its column
/// name (None: the group's own) and the inputs whose watermark closes it.
type KeyWindow = (
    (i64, arrow::datatypes::TimeUnit),
    Option<String>,
    Vec<String>,
);

/// `origins` as a windowed join's window column (marked as the time the aggregate windows by).
fn join_window_of(
    origins: &[super::trace::ColumnOrigin],
    times: &super::join::JoinTimes,
) -> Option<KeyWindow> {
    use super::join::JoinTime;
    let size = times.window?;
    let all = !origins.is_empty()
        && origins
            .iter()
            .all(|o| o.input == times.name && times.time_of(o.column) == Some(JoinTime::Window));
    if !all || times.used.get().is_some_and(|t| t != JoinTime::Window) {
        return None;
    }
    times.used.set(Some(JoinTime::Window));
    Some((size, None, vec![times.name.clone()]))
}

/// `origins` as inner aggregates' own window columns, all of one step.
fn stage_window_of(
    origins: &[super::trace::ColumnOrigin],
    inner: &[AggregatePlan],
) -> Option<KeyWindow> {
    let mut size = None;
    let mut column = None;
    let mut sources = Vec::new();
    for o in origins {
        let stage = inner.iter().find(|s| s.output_name == o.input)?;
        let w = stage.window.as_ref()?;
        if w.group_index != o.column || w.lateness != 0 {
            return None;
        }
        let step = (w.step()?, w.unit);
        if size.is_some_and(|s| s != step) {
            return None;
        }
        size = Some(step);
        column = Some(stage.output_schema.field(o.column).name().clone());
        sources.push(stage.output_name.clone());
    }
    Some((size?, column, sources))
}

/// A two-phase aggregate (`Final` over a repartition or coalesce over `Partial`, which
/// DataFusion plans over an input of several partitions such as a UNION ALL) as one
/// single-phase aggregate over the partial's input: the streaming aggregate does its own
/// phases. None for any other node.
fn single_phase(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(last) = node.downcast_ref::<AggregateExec>() else {
        return Ok(None);
    };
    if !matches!(
        last.mode(),
        AggregateMode::Final | AggregateMode::FinalPartitioned
    ) {
        return Ok(None);
    }
    let mut below = Arc::clone(last.input());
    loop {
        let is_exchange = below.downcast_ref::<CoalescePartitionsExec>().is_some()
            || below.downcast_ref::<RepartitionExec>().is_some()
            || super::capability::is_coalesce_batches(below.as_ref());
        if !is_exchange {
            break;
        }
        let Some(child) = below.children().first().map(|c| Arc::clone(*c)) else {
            break;
        };
        below = child;
    }
    let Some(first) = below
        .downcast_ref::<AggregateExec>()
        .filter(|a| a.mode() == &AggregateMode::Partial)
    else {
        return Err(SqlError::Internal(format!(
            "a final aggregate over {} instead of a partial one",
            below.name()
        )));
    };
    let single = AggregateExec::try_new(
        AggregateMode::Single,
        first.group_expr().clone(),
        first.aggr_expr().to_vec(),
        first.filter_expr().to_vec(),
        Arc::clone(first.input()),
        first.input_schema(),
    )
    .map_err(|e| SqlError::Internal(format!("joining a two-phase aggregate: {e}")))?;
    Ok(Some(Arc::new(single)))
}

/// Whether `plan` groups by GROUPING SETS, ROLLUP or CUBE anywhere.
fn has_grouping_sets(plan: &LogicalPlan) -> bool {
    plan.exists(|node| {
        Ok(matches!(node, LogicalPlan::Aggregate(agg)
            if agg.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_)))))
    })
    .unwrap_or(false)
}

/// GROUPING SETS / ROLLUP / CUBE stream inside a window that every set keeps: each set's
/// rows are then per window, emitted when it closes. A set without the window would be one
/// group over all time, and a keyed aggregate would upsert a rolled-up NULL and a NULL key
/// into one sink row.
fn check_grouping_sets(
    group_by: &PhysicalGroupBy,
    window: Option<&WindowSpec>,
    at: StatementRef,
) -> Result<()> {
    let Some(window) = window else {
        return Err(SqlError::Unsupported {
            at,
            message: "GROUPING SETS / ROLLUP / CUBE stream only inside a window: add the window to every set (GROUP BY date_bin(INTERVAL ..., event_time), ROLLUP(a, b)), or run `volley batch`".into(),
        });
    };
    if group_by
        .groups()
        .iter()
        .any(|set| set.get(window.group_index).copied().unwrap_or(true))
    {
        return Err(SqlError::Unsupported {
            at,
            message: format!(
                "GROUPING SETS / ROLLUP / CUBE: a set without the window {} would be one group over all time that never closes; keep the window in every set (GROUP BY {}, ROLLUP(...))",
                window.display, window.display
            ),
        });
    }
    Ok(())
}

/// A window's `(width, unit)` as an SQL interval.
fn span_of((width, unit): (i64, arrow::datatypes::TimeUnit)) -> String {
    crate::sql_text::span(width, unit)
}

/// The group columns of `agg`, for messages.
fn keyed_groups(agg: &AggregatePlan) -> String {
    let names: Vec<&str> = agg
        .output_schema
        .fields()
        .iter()
        .take(agg.group_count)
        .map(|f| f.name().as_str())
        .collect();
    names.join(", ")
}

/// The nodes of a plan the streaming planner handles apart, found by [`check_streamable`].
#[derive(Default)]
struct Streamable {
    /// Aggregates.
    aggregates: Vec<Arc<dyn ExecutionPlan>>,
    /// Joins of two streams.
    joins: Vec<Arc<dyn ExecutionPlan>>,
    /// The keys of the sorts whose rows reach the sink (not below an aggregate or a join of
    /// two streams).
    sorts: Vec<String>,
    /// The ancestors of the node being checked, its parent last.
    above: Vec<Arc<dyn ExecutionPlan>>,
}

/// Checks every node can run per epoch; collects aggregate nodes, joins of two streams and
/// the sorts whose rows reach the sink. `stateful_above`: an aggregate or a join of two
/// streams reads `plan`'s rows.
fn check_streamable(
    plan: &Arc<dyn ExecutionPlan>,
    at: StatementRef,
    stateful_above: bool,
    found: &mut Streamable,
) -> Result<()> {
    if let Some(message) = super::order::limit_refusal(plan.as_ref(), &found.above) {
        return Err(SqlError::Unsupported { at, message });
    }
    let mut children = plan.children();
    let mut stateful_above = stateful_above;
    if let Some(join) = plan.downcast_ref::<HashJoinExec>()
        && super::lookup::lookup_build_side(join).is_some()
    {
        // The build side is the lookup table, run once as in batch: only the probe side
        // streams.
        super::lookup::check_lookup_join(join, at)?;
        children = vec![join.right()];
    } else if let Some(join) = plan.downcast_ref::<HashJoinExec>()
        && is_stream_join(join)
    {
        found.joins.push(Arc::clone(plan));
        stateful_above = true;
    } else {
        match capability(plan.as_ref()) {
            Capability::Aggregate => {
                found.aggregates.push(Arc::clone(plan));
                stateful_above = true;
            }
            Capability::RowWise | Capability::PerEpoch => {}
            Capability::Refused(message) => return Err(SqlError::Unsupported { at, message }),
        }
        if !stateful_above && let Some(keys) = super::order::sort_keys(plan.as_ref(), &found.above)
        {
            found.sorts.push(keys);
        }
    }
    found.above.push(Arc::clone(plan));
    for child in children {
        check_streamable(child, at, stateful_above, found)?;
    }
    found.above.pop();
    Ok(())
}

/// A join of two streams taken out of its plan.
struct CutJoin {
    /// The join, its children cut.
    join: Arc<dyn ExecutionPlan>,
    /// Its left side, cut.
    left: Arc<dyn ExecutionPlan>,
    /// Its right side, cut.
    right: Arc<dyn ExecutionPlan>,
    /// The slot its rows go to, read by the leaf that took its place.
    slot: Arc<EpochSlot>,
    /// Its output's time columns, named by that leaf.
    times: super::join::JoinTimes,
}

/// Whether both sides of `join` read streams.
fn is_stream_join(join: &HashJoinExec) -> bool {
    let mut left = Vec::new();
    collect_leaves(join.left(), &mut left);
    let mut right = Vec::new();
    collect_leaves(join.right(), &mut right);
    !left.is_empty() && !right.is_empty()
}

/// Splits the epoch leaves of `plan` into `workers` partitions when every node above them works
/// row by row (so partitions may run apart and their outputs, concatenated in partition order,
/// are the one-partition output). Any other node keeps the plan on one partition.
fn partition_rowwise(
    plan: Arc<dyn ExecutionPlan>,
    workers: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    fn rowwise(plan: &Arc<dyn ExecutionPlan>) -> bool {
        if let Some(join) = plan.downcast_ref::<HashJoinExec>()
            && super::lookup::lookup_build_side(join).is_some()
        {
            // Each probe partition is joined with the one shared hash table on its own.
            return rowwise(join.right());
        }
        capability(plan.as_ref()) == Capability::RowWise && plan.children().into_iter().all(rowwise)
    }
    if workers <= 1 || !rowwise(&plan) {
        return Ok(plan);
    }
    plan.transform_up(
        |node| match node.downcast_ref::<super::leaf::EpochSourceExec>() {
            Some(leaf) => Ok(Transformed::yes(
                Arc::new(leaf.with_partitions(workers)?) as Arc<dyn ExecutionPlan>
            )),
            None => Ok(Transformed::no(node)),
        },
    )
    .map(|t| t.data)
    .map_err(|e| SqlError::Internal(format!("partitioning the plan across workers: {e}")))
}

fn collect_leaves(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<String>) {
    if let Some(leaf) = plan.downcast_ref::<super::leaf::EpochSourceExec>()
        && !out.iter().any(|s| s == leaf.input_name())
    {
        out.push(leaf.input_name().to_string());
    }
    for child in plan.children() {
        collect_leaves(child, out);
    }
}

/// An indented, readable rendering of a physical plan.
pub fn render(plan: &Arc<dyn ExecutionPlan>) -> String {
    crate::sql_text::tidy(&displayable(plan.as_ref()).indent(false).to_string())
}

/// Where a join of two streams' rows go: the leaf reading them, the aggregates over them and
/// the segment above.
struct JoinOutput {
    name: String,
    slot: Arc<EpochSlot>,
    post: Arc<dyn ExecutionPlan>,
    outer: Vec<AggregatePlan>,
    outer_time: Option<super::join::JoinTime>,
}

/// Checks that the aggregates over a join form one chain: the first reads the join's rows
/// (`join`), each next one the one before it, and `post` the last.
fn check_outer_chain(
    join: &str,
    outer: &[AggregatePlan],
    post: &Arc<dyn ExecutionPlan>,
    at: StatementRef,
) -> Result<()> {
    let mut previous = join.to_string();
    let reads = |plan: &Arc<dyn ExecutionPlan>| {
        let mut leaves = Vec::new();
        collect_leaves(plan, &mut leaves);
        leaves
    };
    for stage in outer {
        if !reads(&stage.partial).contains(&previous) {
            return Err(SqlError::Unsupported {
                at,
                message: format!(
                    "the aggregate {} does not read the join of two streams' rows (or the aggregate over them): one INSERT streams one chain of a join and the aggregates over it; write the rest in another INSERT",
                    stage.output_name
                ),
            });
        }
        previous.clone_from(&stage.output_name);
    }
    if !outer.is_empty() && !reads(post).contains(&previous) {
        return Err(SqlError::Unsupported {
            at,
            message: "the result of an INSERT over a join of two streams must read the aggregate over the join; write the rest in another INSERT".into(),
        });
    }
    Ok(())
}
