//! Queries over the latest published snapshot: one DataFusion context per query, read-only,
//! with a bounded memory pool.

use std::sync::Arc;

use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use volley_connectors::live::Published;

/// The catalog every table is in.
pub const CATALOG: &str = "volley";
/// The schema live tables are in (and the default, so `FROM demand_1m` needs no prefix).
pub const LIVE_SCHEMA: &str = "live";

/// Why a query was not run: the analyst's query, or Volley.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query is wrong: syntax, an unknown table or column, a write, too much memory.
    #[error("{0}")]
    Query(String),
    /// A bug in Volley.
    #[error("internal error (a bug in Volley): {0}")]
    Internal(String),
}

/// Runs analysts' queries over the pipeline's published live tables.
#[derive(Debug)]
pub struct QueryEngine {
    published: Arc<Published>,
    runtime: Arc<RuntimeEnv>,
}

impl QueryEngine {
    /// Queries over what `published` holds, all of them together held to `memory_limit`
    /// bytes (sorts, joins and aggregates beyond it fail the query, not the pipeline).
    ///
    /// # Errors
    /// [`QueryError::Internal`] when the runtime cannot be built.
    pub fn new(published: Arc<Published>, memory_limit: usize) -> Result<Self, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(memory_limit, 1.0)
            .build_arc()
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        Ok(Self { published, runtime })
    }

    /// A context over the latest snapshot, and the epoch it shows: every table at that epoch.
    ///
    /// # Errors
    /// [`QueryError::Internal`] when a table cannot be registered.
    pub fn context(&self) -> Result<(SessionContext, u64), QueryError> {
        let snapshot = self.published.current();
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, LIVE_SCHEMA)
            .with_create_default_catalog_and_schema(true)
            .with_information_schema(true);
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(Arc::clone(&self.runtime))
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        volley_udfs::register_all(&ctx);
        for (name, table) in &snapshot.tables {
            // The batches are shared with the snapshot: a `Vec` of `Arc`s, no row copied.
            let memory = MemTable::try_new(Arc::clone(&table.schema), vec![table.batches.to_vec()])
                .map_err(|e| QueryError::Internal(format!("live table '{name}': {e}")))?;
            ctx.register_table(name.as_str(), Arc::new(memory))
                .map_err(|e| QueryError::Internal(format!("live table '{name}': {e}")))?;
        }
        Ok((ctx, snapshot.epoch))
    }

    /// Plans `sql` over the latest snapshot. Only queries run: a write, DDL or a session
    /// statement is refused, since live tables are written by the pipeline alone.
    ///
    /// # Errors
    /// [`QueryError::Query`] naming what is wrong with the query.
    pub async fn plan(&self, sql: &str) -> Result<(DataFrame, u64), QueryError> {
        let (ctx, epoch) = self.context()?;
        let plan = ctx
            .state()
            .create_logical_plan(sql)
            .await
            .map_err(|e| QueryError::Query(e.strip_backtrace().to_string()))?;
        if let Some(kind) = refused(&plan) {
            return Err(QueryError::Query(format!(
                "{kind} is refused: the tables are read-only (live tables are written by the pipeline, system tables by Volley); run a SELECT"
            )));
        }
        let frame = ctx
            .execute_logical_plan(plan)
            .await
            .map_err(|e| QueryError::Query(e.strip_backtrace().to_string()))?;
        Ok((frame, epoch))
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
