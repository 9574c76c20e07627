//! The DataFusion contexts Volley plans in, and an INSERT's logical plan.

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, col};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;

use volley_udfs::model::ModelSet;

use crate::error::{Result, SqlError};
use crate::pipeline::InsertDecl;

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
    // Rows with equal ORDER BY values of an OVER window are ordered as the stream orders them.
    let state = datafusion::execution::SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(crate::stream::ties::WindowTies))
        .with_physical_optimizer_rule(Arc::new(crate::stream::filters_first::FiltersFirst))
        .build();
    let ctx = SessionContext::new_with_state(state);
    volley_udfs::register_all(&ctx);
    ctx
}

/// Rows of each epoch's partial aggregate that decide whether it aggregates or passes rows
/// on as states.
const PARTIAL_PROBE_ROWS: usize = 8_192;

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
    // A window's groups live in a table that interns every state row once; a per-epoch
    // partial aggregate that barely reduces its rows (one row per group, as with many keys)
    // would hash them twice. DataFusion probes the first rows of each epoch and, when they
    // hold nearly as many groups as rows, passes rows on as states.
    config
        .options_mut()
        .execution
        .skip_partial_aggregation_probe_rows_threshold = PARTIAL_PROBE_ROWS;
    let state = datafusion::execution::SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(crate::stream::filters_first::FiltersFirst))
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

/// Whether `plan` groups by GROUPING SETS, ROLLUP or CUBE anywhere.
pub(super) fn has_grouping_sets(plan: &LogicalPlan) -> bool {
    plan.exists(|node| {
        Ok(matches!(node, LogicalPlan::Aggregate(agg)
            if agg.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_)))))
    })
    .unwrap_or(false)
}
