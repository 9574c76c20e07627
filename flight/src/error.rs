//! Why a query was not run.

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
