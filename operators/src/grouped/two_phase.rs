//! A GROUP BY as grouped state runs it: DataFusion's partial phase over each epoch's rows,
//! then PartialReduce to merge state and Final to emit it.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use volley_sql::error::{Result, SqlError, StatementRef};

/// A GROUP BY split into the plans and expressions grouped state runs.
#[derive(Debug, Clone)]
pub struct TwoPhase {
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
    /// Number of group columns (they lead both state and final rows). With grouping sets,
    /// `__grouping_id` is one too: it tells a rolled-up NULL from a NULL key.
    pub group_count: usize,
}

impl TwoPhase {
    /// `agg` (single-phase, one partition), its partial phase over `partial_input` (its input,
    /// rewritten: late rows split out, partitioned across workers).
    ///
    /// # Errors
    /// An aggregate whose result depends on row order; DataFusion failures.
    pub fn split(
        agg: &AggregateExec,
        partial_input: Arc<dyn ExecutionPlan>,
        at: StatementRef,
    ) -> Result<Self> {
        if !matches!(
            agg.mode(),
            AggregateMode::Single | AggregateMode::SinglePartitioned
        ) {
            return Err(SqlError::Internal(format!(
                "expected a single-phase aggregate with one partition, got {:?}",
                agg.mode()
            )));
        }
        volley_sql::stream::determinism::check_order_independent(agg.aggr_expr(), at)?;
        let group_by = agg.group_expr().clone();
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
        Ok(Self {
            state_schema: partial.schema(),
            partial: Arc::new(partial),
            final_group_by: group_by.as_final(),
            aggr_expr: agg.aggr_expr().to_vec(),
            filter_expr: agg.filter_expr().to_vec(),
            input_schema,
            output_schema: agg.schema(),
            group_count: group_by.num_group_exprs(),
        })
    }

    /// Whether it groups by GROUPING SETS, ROLLUP or CUBE.
    pub fn has_grouping_sets(&self) -> bool {
        self.partial
            .downcast_ref::<AggregateExec>()
            .is_some_and(|a| a.group_expr().has_grouping_set())
    }

    /// Its group columns, for messages: `user_id, w`.
    pub fn group_names(&self) -> String {
        let names: Vec<&str> = self
            .output_schema
            .fields()
            .iter()
            .take(self.group_count)
            .map(|f| f.name().as_str())
            .collect();
        names.join(", ")
    }

    /// Its state, as text (checkpoints restore only into the same): its window, then its
    /// state columns.
    pub fn shape(&self, window: &str) -> String {
        let state: Vec<String> = self
            .state_schema
            .fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect();
        format!("{window}; state [{}]", state.join(", "))
    }
}
