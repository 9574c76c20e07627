//! A per-window node's runtime: DataFusion's window operator over each epoch's rows.

use std::sync::Arc;

use datafusion::execution::TaskContext;
use volley_sql::stream::operator::{
    OperatorError, OperatorInput, OperatorOutput, Result, StreamOperator,
};

use super::plan::PerWindowPlan;

/// Runs a [`PerWindowPlan`].
#[derive(Debug)]
pub(crate) struct PerWindow {
    pub plan: PerWindowPlan,
    pub task_ctx: Arc<TaskContext>,
    /// The input window's watermark last seen.
    pub mark: Option<i64>,
}

#[async_trait::async_trait]
impl StreamOperator for PerWindow {
    fn name(&self) -> &str {
        &self.plan.output_name
    }

    async fn run_epoch(&mut self, input: OperatorInput<'_>) -> Result<OperatorOutput> {
        if let Some(Some(mark)) = input.watermarks.get(&self.plan.input_watermark) {
            self.mark = Some(self.mark.map_or(*mark, |m| m.max(*mark)));
        }
        if !input.read {
            return Ok(OperatorOutput::default());
        }
        let parts = datafusion::physical_plan::collect_partitioned(
            Arc::clone(&self.plan.plan),
            Arc::clone(&self.task_ctx),
        )
        .await
        .map_err(OperatorError::exec("window functions per window"))?;
        Ok(OperatorOutput {
            rows: parts
                .into_iter()
                .flatten()
                .filter(|b| b.num_rows() > 0)
                .collect(),
            ..OperatorOutput::default()
        })
    }

    fn describe(&self) -> String {
        format!("window functions per window ({})", self.plan.functions.join(", "))
    }

    /// The input window's watermark: every window it emits from now on starts at or after it.
    fn output_watermark(&self) -> Option<i64> {
        self.mark
    }

    fn reset_lookup(&mut self, table: &str) -> Result<()> {
        self.plan.plan = volley_sql::stream::lookup::reset_lookup_joins(&self.plan.plan, table)?;
        Ok(())
    }
}
