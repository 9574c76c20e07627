//! The OVER window as a streaming operator.

use volley_sql::stream::operator::{
    OperatorInput, OperatorOutput, OperatorSnapshot, RestoredState, Result, StreamOperator,
};

use super::OverState;

#[async_trait::async_trait]
impl StreamOperator for OverState {
    fn name(&self) -> &str {
        &self.plan.output_name
    }

    /// Takes the new rows, and emits the rows the watermark makes final (and, at the end of
    /// input, every row still held).
    async fn run_epoch(&mut self, input: OperatorInput<'_>) -> Result<OperatorOutput> {
        let rows = self
            .run(input.read, input.watermarks, input.all_done)
            .await?;
        let late = crate::two_streams::take_late([&self.plan.input]);
        Ok(OperatorOutput {
            rows,
            late,
            ..OperatorOutput::default()
        })
    }

    fn describe(&self) -> String {
        let functions: Vec<&str> = self.plan.functions.iter().map(|f| f.text.as_str()).collect();
        format!(
            "OVER window ({}) PARTITION BY {} ORDER BY {}",
            functions.join(", "),
            self.plan.partition_text(),
            self.plan.ts_name()
        )
    }

    /// The event time it orders by, in nanoseconds: every row it emits from now on is at or
    /// after the watermark it last emitted by, or is a row still waiting for LEAD's rows.
    fn output_watermark(&self) -> Option<i64> {
        self.output_mark
    }

    fn shape(&self) -> String {
        let columns: Vec<String> = self
            .plan
            .input
            .plan
            .schema()
            .fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect();
        format!(
            "{}; input [{}]",
            self.describe(),
            columns.join(", ")
        )
    }

    /// Marks: the watermark (event-time unit) rows were made final by. Pieces: see
    /// `snapshot.rs`.
    fn snapshot(&self) -> Result<OperatorSnapshot> {
        Ok(OperatorSnapshot {
            marks: vec![self.mark],
            pieces: self.pieces()?,
        })
    }

    async fn restore(&mut self, mut state: RestoredState) -> Result<()> {
        self.mark = state.marks.first().copied().flatten();
        self.load(&mut state)
    }

    /// Partitions held.
    fn open_windows(&self) -> usize {
        self.inner
            .lock()
            .map(|i| i.partitions.len())
            .unwrap_or_default()
    }

    /// Rows held: in partitions, and waiting to be final.
    fn state_rows(&self) -> usize {
        self.inner.lock().map(|i| i.rows()).unwrap_or_default()
    }

    fn state_bytes(&self) -> usize {
        self.inner.lock().map(|i| i.bytes()).unwrap_or_default()
    }

    fn reset_lookup(&mut self, table: &str) -> Result<()> {
        self.plan.input.plan =
            volley_sql::stream::lookup::reset_lookup_joins(&self.plan.input.plan, table)?;
        Ok(())
    }
}
