//! The Top-N as a streaming operator.

use arrow::compute::concat_batches;
use volley_sql::stream::operator::{
    OperatorError, OperatorInput, OperatorOutput, OperatorSnapshot, RestoredState, Result,
    StatePiece, StreamOperator,
};

use super::state::{TopN, WHAT};
use crate::two_streams::SideFrontier;

#[async_trait::async_trait]
impl StreamOperator for TopN {
    fn name(&self) -> &str {
        &self.plan.output_name
    }

    /// Ranks the new rows into their partitions and upserts the ranks of those touched.
    async fn run_epoch(&mut self, input: OperatorInput<'_>) -> Result<OperatorOutput> {
        let added = if input.read {
            let parts = datafusion::physical_plan::collect_partitioned(
                std::sync::Arc::clone(&self.plan.input),
                std::sync::Arc::clone(&self.task_ctx),
            )
            .await
            .map_err(OperatorError::exec(WHAT))?;
            let schema = self.input_schema();
            let rows = concat_batches(&schema, parts.iter().flatten())?;
            self.add(&rows)?
        } else {
            Vec::new()
        };
        let Some(closing) = self.plan.closing.clone() else {
            return Ok(OperatorOutput {
                rows: added,
                ..OperatorOutput::default()
            });
        };
        // Partitions close by their time: ranks are emitted once, when final.
        let mark = if input.all_done {
            Some(i64::MAX)
        } else {
            closing.mark(input.watermarks)
        };
        let mut rows = Vec::new();
        if let Some(mark) = mark
            && (self.mark.is_none_or(|m| m < mark) || input.all_done)
        {
            rows = self.close(mark, input.all_done)?;
            self.mark = Some(mark);
            if let SideFrontier::Sources { gate, .. } = &closing.frontier {
                gate.set_cutoff(mark.saturating_sub(1));
            }
        }
        let mut late = Vec::new();
        if let SideFrontier::Sources { gate, .. } = &closing.frontier {
            late = gate.take_late();
        }
        Ok(OperatorOutput {
            rows,
            late,
            ..OperatorOutput::default()
        })
    }

    /// Partitions closing by an event time: every partition emitted from now on has a time at
    /// or after the watermark it last closed by (nanoseconds).
    fn output_watermark(&self) -> Option<i64> {
        let closing = self.plan.closing.as_ref()?;
        self.mark
            .map(|m| if m == i64::MAX { m } else { m.saturating_mul(closing.per) })
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
            marks: vec![self.mark],
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
        self.mark = state.marks.first().copied().flatten();
        if let (Some(mark), Some(closing)) = (self.mark, &self.plan.closing)
            && let SideFrontier::Sources { gate, .. } = &closing.frontier
        {
            gate.set_cutoff(mark.saturating_sub(1));
        }
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

    fn state_bytes(&self) -> usize {
        self.bytes()
    }

    fn reset_lookup(&mut self, table: &str) -> Result<()> {
        self.plan.input = volley_sql::stream::lookup::reset_lookup_joins(&self.plan.input, table)?;
        Ok(())
    }
}
