//! Engine errors: user (pipeline), external (I/O, connectors), or internal (a bug).

use datafusion::error::DataFusionError;
use volley_connectors::ConnectorError;
use volley_sql::SqlError;

/// Everything that stops a pipeline run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The pipeline SQL or its options are wrong.
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// A source or sink failed.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// The command line is wrong (e.g. `--input` names no table).
    #[error("{0}")]
    Usage(String),
    /// Executing a plan failed while processing data.
    #[error("executing {what}: {source}")]
    Execution {
        /// What was running.
        what: String,
        /// DataFusion's error.
        source: DataFusionError,
    },
    /// Checkpoints cannot be written, read or restored.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// Another process owns the pipeline (or this share of it) now: this one must stop
    /// without writing anything more.
    #[error("fenced: {0}")]
    Fenced(String),
    /// A bug in Volley.
    #[error("internal error (a bug in Volley): {0}")]
    Internal(String),
}

impl EngineError {
    /// Wraps a DataFusion error raised while running `what`.
    pub fn exec(what: impl Into<String>) -> impl FnOnce(DataFusionError) -> Self {
        let what = what.into();
        move |source| EngineError::Execution { what, source }
    }
}

impl From<arrow::error::ArrowError> for EngineError {
    fn from(e: arrow::error::ArrowError) -> Self {
        EngineError::Internal(format!("arrow: {e}"))
    }
}

/// Result alias for the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
