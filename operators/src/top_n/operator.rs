//! The Top-N as a streaming operator.

use arrow::compute::concat_batches;
use volley_sql::stream::operator::{
    OperatorError, OperatorInput, OperatorOutput, OperatorSnapshot, RestoredState, Result,
    StatePiece, StreamOperator,
};

use super::state::{TopN, WHAT};

#[async_trait::async_trait]
impl StreamOperator for TopN {
    fn name(&self) -> &str {
        &self.plan.output_name
    }

    /// Ranks the new rows into their partitions and upserts the ranks of those touched.
    async fn run_epoch(&mut self, input: OperatorInput<'_>) -> Result<OperatorOutput> {
        if !input.read {
            return Ok(OperatorOutput::default());
        }
        let parts = datafusion::physical_plan::collect_partitioned(
            std::sync::Arc::clone(&self.plan.input),
            std::sync::Arc::clone(&self.task_ctx),
        )
        .await
        .map_err(OperatorError::exec(WHAT))?;
        let schema = self.input_schema();
        let rows = concat_batches(&schema, parts.iter().flatten())?;
        Ok(OperatorOutput {
            rows: self.add(&rows)?,
            ..OperatorOutput::default()
        })
    }

    fn describe(&self) -> String {
        format!(
            "Top-N ({} <= {}) PARTITION BY {} ORDER BY {}",
            self.plan.function,
            self.plan.limit,
            self.plan.partition_text(),
            self.plan.order_text()
        )
    }

    fn shape(&self) -> String {
        let columns: Vec<String> = self
            .input_schema()
            .fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect();
        format!("{}; input [{}]", self.describe(), columns.join(", "))
    }

    /// Pieces: `rows`, every partition's held rows, each partition's in rank order.
    fn snapshot(&self) -> Result<OperatorSnapshot> {
        let schema = self.input_schema();
        let rows = concat_batches(&schema, self.held.values())?;
        Ok(OperatorSnapshot {
            marks: Vec::new(),
            pieces: vec![StatePiece {
                name: "rows".into(),
                schema,
                rows: vec![rows],
            }],
        })
    }

    async fn restore(&mut self, mut state: RestoredState) -> Result<()> {
        let rows = state.take("rows").ok_or_else(|| {
            OperatorError::Checkpoint(format!(
                "the checkpoint of {} has no 'rows' piece",
                self.plan.output_name
            ))
        })?;
        let schema = self.input_schema();
        let rows = concat_batches(&schema, rows.iter())?;
        self.load(&rows)
    }

    /// Partitions held.
    fn open_windows(&self) -> usize {
        self.held.len()
    }

    /// Rows held.
    fn state_rows(&self) -> usize {
        self.rows()
    }

    fn reset_lookup(&mut self, table: &str) -> Result<()> {
        self.plan.input = volley_sql::stream::lookup::reset_lookup_joins(&self.plan.input, table)?;
        Ok(())
    }
}
