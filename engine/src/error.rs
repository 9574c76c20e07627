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
    /// Executing a plan failed while processing data; [`EngineError::fault`] says whose
    /// fault (a bad value or file is the user's, DataFusion's internal errors are Volley's).
    #[error("executing {what}: {}", describe(source))]
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
    /// Data the pipeline cannot process: a value that does not cast or parse, an arithmetic
    /// overflow, a malformed file.
    #[error("bad data: {0}")]
    Data(String),
    /// A source sent more of its records to dead letters than its `max_dead_letters` allows.
    #[error("too many dead letters: {0}")]
    DeadLetters(String),
    /// A bug in Volley.
    #[error("internal error (a bug in Volley): {0}")]
    Internal(String),
}

impl From<volley_sql::stream::operator::OperatorError> for EngineError {
    fn from(e: volley_sql::stream::operator::OperatorError) -> Self {
        use volley_sql::stream::operator::OperatorError as O;
        match e {
            O::Sql(e) => EngineError::Sql(e),
            O::Execution { what, source } => EngineError::Execution { what, source },
            O::Arrow(e) => EngineError::from(e),
            O::Checkpoint(message) => EngineError::Checkpoint(message),
            O::Internal(message) => EngineError::Internal(message),
        }
    }
}

/// Who is at fault for an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The pipeline, its options or its data: the user can fix it.
    User,
    /// The machine or a service: disk, network, memory, a broker.
    Environment,
    /// Volley: a bug to report.
    Volley,
}

/// Who is at fault for a DataFusion error (its root cause).
pub fn datafusion_fault(e: &DataFusionError) -> Fault {
    match e.find_root() {
        DataFusionError::ArrowError(a, _) => arrow_fault(a),
        DataFusionError::Internal(_) => Fault::Volley,
        DataFusionError::IoError(_)
        | DataFusionError::ObjectStore(_)
        | DataFusionError::ResourcesExhausted(_) => Fault::Environment,
        DataFusionError::ParquetError(_)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(_, _)
        | DataFusionError::SQL(_, _)
        | DataFusionError::Configuration(_)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Execution(_) => Fault::User,
        _ => Fault::Volley,
    }
}

/// Who is at fault for an Arrow error.
pub fn arrow_fault(e: &arrow::error::ArrowError) -> Fault {
    use arrow::error::ArrowError as A;
    match e {
        A::CastError(_)
        | A::ParseError(_)
        | A::CsvError(_)
        | A::JsonError(_)
        | A::ParquetError(_)
        | A::AvroError(_)
        | A::DivideByZero
        | A::ArithmeticOverflow(_)
        | A::InvalidArgumentError(_)
        | A::SchemaError(_)
        | A::ComputeError(_) => Fault::User,
        A::IoError(_, _) | A::MemoryError(_) => Fault::Environment,
        _ => Fault::Volley,
    }
}

/// A DataFusion error as the message its fault calls for.
fn describe(e: &DataFusionError) -> String {
    let text = e.strip_backtrace();
    match datafusion_fault(e) {
        Fault::Volley => format!("internal error (a bug in Volley): {text}"),
        Fault::User | Fault::Environment => text,
    }
}

impl EngineError {
    /// Who is at fault: the user (pipeline, options, data), the environment (I/O, memory,
    /// a service), or Volley (a bug).
    pub fn fault(&self) -> Fault {
        match self {
            EngineError::Sql(SqlError::Internal(_)) | EngineError::Internal(_) => Fault::Volley,
            EngineError::Sql(_)
            | EngineError::Usage(_)
            | EngineError::Data(_)
            | EngineError::DeadLetters(_) => Fault::User,
            EngineError::Execution { source, .. } => datafusion_fault(source),
            EngineError::Connector(ConnectorError::Config(SqlError::Internal(_)))
            | EngineError::Connector(ConnectorError::Internal(_)) => Fault::Volley,
            EngineError::Connector(ConnectorError::Config(_)) => Fault::User,
            EngineError::Connector(_) | EngineError::Checkpoint(_) | EngineError::Fenced(_) => {
                Fault::Environment
            }
        }
    }

    /// Wraps a DataFusion error raised while running `what`.
    pub fn exec(what: impl Into<String>) -> impl FnOnce(DataFusionError) -> Self {
        let what = what.into();
        move |source| EngineError::Execution { what, source }
    }
}

impl From<arrow::error::ArrowError> for EngineError {
    fn from(e: arrow::error::ArrowError) -> Self {
        match arrow_fault(&e) {
            Fault::User => EngineError::Data(e.to_string()),
            Fault::Environment | Fault::Volley => EngineError::Internal(format!("arrow: {e}")),
        }
    }
}

/// Result alias for the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::error::ArrowError;

    #[test]
    fn a_bad_value_is_the_users_and_an_internal_error_is_volleys() {
        let cast = EngineError::exec("INSERT INTO t")(DataFusionError::ArrowError(
            Box::new(ArrowError::CastError("cannot cast 'abc' to Int64".into())),
            None,
        ));
        assert_eq!(cast.fault(), Fault::User);
        let text = cast.to_string();
        assert!(
            text.contains("cannot cast 'abc'") && !text.contains("bug"),
            "{text}"
        );

        let internal = EngineError::exec("INSERT INTO t")(DataFusionError::Internal("oops".into()));
        assert_eq!(internal.fault(), Fault::Volley);
        assert!(internal.to_string().contains("a bug in Volley"));

        let io = EngineError::exec("reading")(DataFusionError::IoError(std::io::Error::other(
            "disk full",
        )));
        assert_eq!(io.fault(), Fault::Environment);

        let data: EngineError = ArrowError::ParseError("not a number: 'x'".into()).into();
        assert_eq!(data.fault(), Fault::User);
        assert!(data.to_string().starts_with("bad data:"));
        let bug: EngineError = ArrowError::NotYetImplemented("x".into()).into();
        assert_eq!(bug.fault(), Fault::Volley);
    }
}
