//! The seam between an INSERT's runner and its stateful streaming operators.
//!
//! A streaming plan is a chain of stateless DataFusion segments cut at stateful operators:
//!
//! ```text
//!   source slots ─▶ segment ─▶ operator 1 ─▶ slot ─▶ segment ─▶ operator 2 ─▶ slot ─▶ post ─▶ sink
//! ```
//!
//! Each operator reads its epoch's rows from the slots of the inputs below it (its segments
//! are leaves reading them), keeps named state, and emits rows that the runner puts in its
//! output slot for the segment above. Its output's watermark is published under its name, so
//! an operator above it closes windows by where this one has got to. The windowed and keyed
//! aggregates and the joins of two streams are the operators (each kind one folder of the
//! operators crate); a checkpoint holds each one's named state, under its node's stable id
//! ([`super::graph::node_ids`]).

use std::collections::HashMap;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;

use super::LateRows;
use crate::error::SqlError;

/// What stops an operator: the engine reports it with who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The pipeline's SQL (a plan rebuilt while running, such as a lookup join's).
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// Executing a plan failed while processing data.
    #[error("executing {what}: {source}")]
    Execution {
        /// What was running.
        what: String,
        /// DataFusion's error.
        source: DataFusionError,
    },
    /// An Arrow kernel failed (a value that does not cast, an overflow, or a bug).
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// State that cannot be written to or read from a checkpoint.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A bug in Volley.
    #[error("internal error (a bug in Volley): {0}")]
    Internal(String),
}

impl OperatorError {
    /// Wraps a DataFusion error raised while running `what`.
    pub fn exec(what: impl Into<String>) -> impl FnOnce(DataFusionError) -> Self {
        let what = what.into();
        move |source| OperatorError::Execution { what, source }
    }
}

/// An operator's result.
pub type Result<T> = std::result::Result<T, OperatorError>;

/// What an operator's epoch runs with.
#[derive(Debug, Clone, Copy)]
pub struct OperatorInput<'a> {
    /// Whether its input slots may hold rows this epoch (source rows, or rows an operator
    /// below it emitted).
    pub read: bool,
    /// Watermarks by input name (sources and the operators below), nanoseconds; `None` while
    /// unknown.
    pub watermarks: &'a HashMap<String, Option<i64>>,
    /// The sources the whole INSERT reads (a keyed aggregate's `state_ttl` counts by them).
    pub sources: &'a [String],
    /// The end of input: emit everything still held.
    pub all_done: bool,
}

/// What an operator produced in an epoch.
#[derive(Debug, Default)]
pub struct OperatorOutput {
    /// Rows for the segment above, in emission order.
    pub rows: Vec<RecordBatch>,
    /// Source rows this operator found late (every column of the source).
    pub late: Vec<LateRows>,
    /// Windows emitted (or joined).
    pub windows_emitted: usize,
    /// Windows emitted again, corrected by late rows within `allowed_lateness`.
    pub windows_corrected: usize,
    /// Groups forgotten by `state_ttl`.
    pub groups_expired: usize,
}

/// One named piece of an operator's state.
#[derive(Debug, Clone)]
pub struct StatePiece {
    /// Its name within the operator (`state`, `stamps`, `left`, …).
    pub name: String,
    /// The schema of its rows (written even when there are none).
    pub schema: SchemaRef,
    /// Its rows.
    pub rows: Vec<RecordBatch>,
}

/// An operator's state as a checkpoint holds it.
#[derive(Debug, Clone, Default)]
pub struct OperatorSnapshot {
    /// Where the operator had got to in event time (its own unit; see each operator).
    pub marks: Vec<Option<i64>>,
    /// Its pieces of state.
    pub pieces: Vec<StatePiece>,
}

/// An operator's checkpointed state, read back for [`StreamOperator::restore`].
#[derive(Debug, Default)]
pub struct RestoredState {
    /// As [`OperatorSnapshot::marks`].
    pub marks: Vec<Option<i64>>,
    /// The pieces by name, with their rows.
    pub pieces: Vec<(String, Vec<RecordBatch>)>,
    /// The smallest watermark of the INSERT's sources at the checkpoint (nanoseconds), when
    /// known.
    pub watermark: Option<i64>,
}

impl RestoredState {
    /// Takes the piece named `name` (None: the checkpoint has none by that name).
    pub fn take(&mut self, name: &str) -> Option<Vec<RecordBatch>> {
        let index = self.pieces.iter().position(|(n, _)| n == name)?;
        Some(self.pieces.swap_remove(index).1)
    }

    /// Whether no piece holds a row.
    pub fn is_empty(&self) -> bool {
        self.pieces
            .iter()
            .all(|(_, rows)| rows.iter().all(|b| b.num_rows() == 0))
    }
}

/// A stateful streaming operator. Only [`StreamOperator::name`] and
/// [`StreamOperator::run_epoch`] are required: the defaults describe an operator that holds
/// no state and has no event time of its own.
#[async_trait::async_trait]
pub trait StreamOperator: Send + Sync + std::fmt::Debug {
    /// The input name its output is read under (the leaf of the segment above), which its
    /// watermark is published under too.
    fn name(&self) -> &str;

    /// Runs one epoch: takes the new rows in its input slots (when `input.read`), advances to
    /// the watermarks, emits what they make final and, at `input.all_done`, everything else.
    ///
    /// # Errors
    /// Execution failures; the operator is unusable after one (the job stops).
    async fn run_epoch(&mut self, input: OperatorInput<'_>) -> Result<OperatorOutput>;

    /// What the operator is, for dead letters and errors (`window [...] 1 minute wide`).
    fn describe(&self) -> String {
        self.name().to_string()
    }

    /// The watermark of its output in nanoseconds of the event time above it reads: every row
    /// it emits from now on is at or after it. `None`: unknown, or no event time.
    fn output_watermark(&self) -> Option<i64> {
        None
    }

    /// The watermarks of its output's event times, by the key each is published under (the
    /// times its plan's port names): by default [`StreamOperator::output_watermark`] under
    /// its name.
    fn output_watermarks(&self) -> Vec<(String, Option<i64>)> {
        vec![(self.name().to_string(), self.output_watermark())]
    }

    /// What its state means, as text: a checkpoint is restored only into an operator of the
    /// same shape.
    fn shape(&self) -> String {
        "stateless".to_string()
    }

    /// Its state, for a checkpoint.
    ///
    /// # Errors
    /// Arrow failures assembling it.
    fn snapshot(&self) -> Result<OperatorSnapshot> {
        Ok(OperatorSnapshot::default())
    }

    /// Loads a checkpoint's state (see [`StreamOperator::snapshot`]) into the empty operator.
    ///
    /// # Errors
    /// State that does not fit it.
    async fn restore(&mut self, state: RestoredState) -> Result<()> {
        if state.is_empty() {
            return Ok(());
        }
        Err(OperatorError::Checkpoint(format!(
            "{} holds no state, but its checkpoint holds some",
            self.name()
        )))
    }

    /// Windows currently holding state (for the status line and metrics).
    fn open_windows(&self) -> usize {
        0
    }

    /// Rows of state held (for the status line, metrics and checkpoints).
    fn state_rows(&self) -> usize {
        0
    }

    /// Bytes of memory its state holds (for metrics): the Arrow buffers and group tables.
    fn state_bytes(&self) -> usize {
        0
    }

    /// Gives every join over lookup table `table` in its segments a fresh hash table.
    ///
    /// # Errors
    /// DataFusion failures rebuilding a join, or an operator that cannot swap its table.
    fn reset_lookup(&mut self, table: &str) -> Result<()> {
        let _ = table;
        Ok(())
    }
}

/// The smallest watermark of `sources` (nanoseconds); `None` while any is unknown.
pub fn min_watermark(sources: &[String], watermarks: &HashMap<String, Option<i64>>) -> Option<i64> {
    let mut min: Option<i64> = None;
    for source in sources {
        let wm = watermarks.get(source).copied().flatten()?;
        min = Some(min.map_or(wm, |m| m.min(wm)));
    }
    min
}
