//! Errors raised while reading a pipeline file and planning it.

use datafusion::error::DataFusionError;

/// Where in the pipeline file a statement starts: its 1-based index and line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatementRef {
    /// 1-based position of the statement in the file.
    pub index: usize,
    /// 1-based line on which the statement starts.
    pub line: usize,
}

impl std::fmt::Display for StatementRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "statement {} (line {})", self.index, self.line)
    }
}

/// Everything that can go wrong turning pipeline SQL into a streaming plan.
///
/// User errors (bad SQL, bad options, unsupported streaming shapes) name the
/// statement, table or option at fault; `Internal` is a bug in Volley.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The statement does not parse.
    #[error("{at}: syntax error: {message}")]
    Parse {
        /// The statement at fault.
        at: StatementRef,
        /// What the parser said.
        message: String,
    },
    /// The statement parses but cannot be planned (unknown column, type error…).
    #[error("{at}: {message}")]
    Plan {
        /// The statement at fault.
        at: StatementRef,
        /// What went wrong.
        message: String,
    },
    /// `STORED AS` names a kind no connector provides.
    #[error("table '{table}': unknown kind STORED AS {kind}; allowed kinds: {allowed}")]
    UnknownKind {
        /// The table declaring the kind.
        table: String,
        /// The kind it named.
        kind: String,
        /// The kinds that exist.
        allowed: String,
    },
    /// An option the table's kind does not know.
    #[error(
        "table '{table}': unknown option '{option}' for STORED AS {kind}; allowed options: {allowed}"
    )]
    UnknownOption {
        /// The table at fault.
        table: String,
        /// Its kind.
        kind: String,
        /// The unknown option.
        option: String,
        /// The options that exist for this kind.
        allowed: String,
    },
    /// A known option with a value that does not parse or is out of range.
    #[error("table '{table}': option '{option}' = '{value}' is invalid: expected {expected}")]
    BadOption {
        /// The table at fault.
        table: String,
        /// The option.
        option: String,
        /// The value given.
        value: String,
        /// What a valid value looks like.
        expected: String,
    },
    /// A query shape the streaming engine does not run (yet), with a hint.
    #[error("{at}: {message}")]
    Unsupported {
        /// The statement at fault.
        at: StatementRef,
        /// What is unsupported and what to do instead.
        message: String,
    },
    /// Any other mistake in the pipeline as a whole (duplicate table, missing INSERT…).
    #[error("pipeline: {0}")]
    Pipeline(String),
    /// A bug in Volley: an impossible state, with context.
    #[error("internal error (a bug in Volley): {0}")]
    Internal(String),
}

impl SqlError {
    /// Wraps a DataFusion planning error as a user error at `at`.
    pub fn plan(at: StatementRef, err: DataFusionError) -> Self {
        SqlError::Plan {
            at,
            message: strip_df_prefix(&err),
        }
    }
}

/// DataFusion errors carry nested "Error during planning:" prefixes; keep the message readable.
pub fn strip_df_prefix(err: &DataFusionError) -> String {
    let text = crate::sql_text::tidy(&err.to_string());
    text.replace("Error during planning: ", "")
        .replace("Schema error: ", "")
}

/// Result alias for this crate.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;
