//! Connector errors: who is at fault (user configuration, the outside world, or Volley).

use datafusion::error::DataFusionError;
use volley_sql::SqlError;

/// Errors from sources and sinks.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The table's declaration is wrong (bad option, schema mismatch, wrong role).
    #[error(transparent)]
    Config(#[from] SqlError),
    /// Reading or writing outside Volley failed (file system, object store, broker).
    /// `retryable` says whether trying again may help.
    #[error("table '{table}': {message}")]
    External {
        /// The table whose I/O failed.
        table: String,
        /// What failed.
        message: String,
        /// Whether a retry may succeed.
        retryable: bool,
    },
    /// A bug in Volley.
    #[error("internal error (a bug in Volley): {0}")]
    Internal(String),
}

impl ConnectorError {
    /// A mistake in the declaration of `table` (bad LOCATION, schema mismatch, missing option).
    pub fn config(table: &str, message: impl std::fmt::Display) -> Self {
        ConnectorError::Config(SqlError::Pipeline(format!("table '{table}': {message}")))
    }

    /// An external failure on `table`.
    pub fn external(table: &str, message: impl std::fmt::Display) -> Self {
        ConnectorError::External {
            table: table.to_string(),
            message: message.to_string(),
            retryable: false,
        }
    }
}

impl From<DataFusionError> for ConnectorError {
    fn from(err: DataFusionError) -> Self {
        ConnectorError::Internal(err.to_string())
    }
}

/// Result alias for connectors.
pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;
