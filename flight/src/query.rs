//! Queries over the latest published snapshot: one DataFusion context per query, read-only,
//! with a bounded memory pool.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    MemorySchemaProvider,
};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use volley_connectors::live::{Snapshot, SnapshotSource};

use super::params;
use volley_metrics::{Metrics, SystemSchema};

/// The schema of Volley's own tables (metrics, checkpoints, dead letters, pipelines).
pub const SYSTEM_SCHEMA: &str = "system";

/// The catalog every table is in.
pub const CATALOG: &str = "volley";
/// The schema live tables are in (and the default, so `FROM demand_1m` needs no prefix).
pub const LIVE_SCHEMA: &str = "live";

pub use crate::error::QueryError;

/// Runs analysts' queries over the pipeline's published live tables.
#[derive(Debug)]
pub struct QueryEngine {
    published: Arc<dyn SnapshotSource>,
    /// Functions, rules, configuration and the memory pool, built once: each query's
    /// context starts from a copy with its own catalog.
    template: SessionState,
    system: Option<Arc<Metrics>>,
}

impl QueryEngine {
    /// Queries over what `published` holds, all of them together held to `memory_limit`
    /// bytes (sorts, joins and aggregates beyond it fail the query, not the pipeline).
    ///
    /// # Errors
    /// [`QueryError::Internal`] when the runtime cannot be built.
    pub fn new(
        published: Arc<dyn SnapshotSource>,
        memory_limit: usize,
    ) -> Result<Self, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(memory_limit, 1.0)
            .build_arc()
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        // One partition per query: live tables are small next to what the pipeline reads,
        // and a query spread over every core competes with the epoch loop for all of them.
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, LIVE_SCHEMA)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true)
            .with_target_partitions(1);
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        volley_udfs::register_all(&ctx);
        Ok(Self {
            published,
            template: ctx.state(),
            system: None,
        })
    }

    /// Also serves the `system` schema (metrics, checkpoints, dead letters, pipelines) from
    /// `metrics`.
    #[must_use]
    pub fn with_system(mut self, metrics: Arc<Metrics>) -> Self {
        self.system = Some(metrics);
        self
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.published.current()
    }

    /// A context over the latest snapshot, and the epoch it shows: every table at that epoch.
    ///
    /// # Errors
    /// [`QueryError::Internal`] when a table cannot be registered.
    pub fn context(&self) -> Result<(SessionContext, u64), QueryError> {
        let snapshot = self.published.current();
        // A catalog of this query's own: the template's is never written.
        let catalogs = Arc::new(MemoryCatalogProviderList::new());
        let catalog = Arc::new(MemoryCatalogProvider::new());
        catalog
            .register_schema(LIVE_SCHEMA, Arc::new(MemorySchemaProvider::new()))
            .map_err(|e| QueryError::Internal(format!("schema '{LIVE_SCHEMA}': {e}")))?;
        catalogs.register_catalog(CATALOG.to_string(), catalog);
        let state = SessionStateBuilder::new_from_existing(self.template.clone())
            .with_catalog_list(catalogs)
            .build();
        let ctx = SessionContext::new_with_state(state);
        for (name, table) in &snapshot.tables {
            // The batches are shared with the snapshot: a `Vec` of `Arc`s, no row copied.
            let memory = MemTable::try_new(Arc::clone(&table.schema), vec![table.batches.to_vec()])
                .map_err(|e| QueryError::Internal(format!("live table '{name}': {e}")))?;
            ctx.register_table(name.as_str(), Arc::new(memory))
                .map_err(|e| QueryError::Internal(format!("live table '{name}': {e}")))?;
        }
        if let Some(metrics) = &self.system {
            let catalog = ctx
                .catalog(CATALOG)
                .ok_or_else(|| QueryError::Internal(format!("no catalog '{CATALOG}'")))?;
            let system = SystemSchema::new(Arc::clone(metrics), snapshot.epoch);
            catalog
                .register_schema(SYSTEM_SCHEMA, Arc::new(system))
                .map_err(|e| QueryError::Internal(format!("schema '{SYSTEM_SCHEMA}': {e}")))?;
        }
        Ok((ctx, snapshot.epoch))
    }

    /// The logical plan of `sql` over the latest snapshot, its context and epoch. `?`
    /// placeholders become `$1, $2, …`. Only queries plan: a write, DDL or a session
    /// statement is refused, since live tables are written by the pipeline alone.
    async fn logical(&self, sql: &str) -> Result<(SessionContext, LogicalPlan, u64), QueryError> {
        let sql = params::positional(sql)?;
        let (ctx, epoch) = self.context()?;
        let plan = ctx
            .state()
            .create_logical_plan(&sql)
            .await
            .map_err(query_error)?;
        if let Some(kind) = refused(&plan) {
            return Err(QueryError::Query(format!(
                "{kind} is refused: the tables are read-only (live tables are written by the pipeline, system tables by Volley); run a SELECT"
            )));
        }
        Ok((ctx, plan, epoch))
    }

    /// The result schema of `sql` and the schema of its parameters (`$1` … in order).
    ///
    /// # Errors
    /// [`QueryError::Query`] naming what is wrong with the statement.
    pub async fn prepare(&self, sql: &str) -> Result<(SchemaRef, SchemaRef), QueryError> {
        let (_, plan, _) = self.logical(sql).await?;
        let parameters = params::parameters(&plan)?;
        Ok((Arc::new(plan.schema().as_arrow().clone()), parameters))
    }

    /// Plans `sql` over the latest snapshot, with `values` bound to its parameters: one
    /// execution per row of `values`, their results one after another.
    ///
    /// # Errors
    /// [`QueryError::Query`] naming what is wrong with the query or its parameters.
    pub async fn plan(
        &self,
        sql: &str,
        values: Option<&RecordBatch>,
    ) -> Result<(DataFrame, u64), QueryError> {
        let (ctx, plan, epoch) = self.logical(sql).await?;
        let expected = params::parameters(&plan)?;
        let schema = Arc::clone(plan.schema());
        let plans = match values {
            Some(values) => params::bind(&plan, &expected, values)?,
            None if expected.fields().is_empty() => vec![plan],
            None => {
                return Err(QueryError::Query(format!(
                    "the statement has {} parameter(s): bind values before executing it",
                    expected.fields().len()
                )));
            }
        };
        let mut frames = Vec::with_capacity(plans.len());
        for plan in plans {
            frames.push(ctx.execute_logical_plan(plan).await.map_err(query_error)?);
        }
        let mut frames = frames.into_iter();
        let Some(first) = frames.next() else {
            // No rows of values: no executions, no rows, the statement's schema.
            let empty = ctx
                .execute_logical_plan(LogicalPlan::EmptyRelation(
                    datafusion::logical_expr::EmptyRelation {
                        produce_one_row: false,
                        schema,
                    },
                ))
                .await
                .map_err(query_error)?;
            return Ok((empty, epoch));
        };
        let frame = frames.try_fold(first, |all, next| all.union(next).map_err(query_error))?;
        Ok((frame, epoch))
    }
}

/// A DataFusion error as the analyst's (a bad query, too much memory) or Volley's.
pub(super) fn query_error(e: DataFusionError) -> QueryError {
    match e.find_root() {
        DataFusionError::ResourcesExhausted(why) => QueryError::Query(format!(
            "the query needs more memory than queries may use (raise --flight-query-memory, or filter or aggregate more): {why}"
        )),
        DataFusionError::Internal(why) => QueryError::Internal(why.clone()),
        _ => QueryError::Query(e.strip_backtrace().to_string()),
    }
}

/// What kind of statement `plan` is, when it is not a query.
fn refused(plan: &LogicalPlan) -> Option<&'static str> {
    match plan {
        LogicalPlan::Dml(_) => Some("a write (INSERT, UPDATE, DELETE)"),
        LogicalPlan::Ddl(_) => Some("DDL (CREATE, DROP)"),
        LogicalPlan::Copy(_) => Some("COPY"),
        LogicalPlan::Statement(_) => Some("a session statement (SET, PREPARE, transactions)"),
        LogicalPlan::Explain(e) => refused(&e.plan),
        LogicalPlan::Analyze(a) => refused(&a.input),
        _ => None,
    }
}
