//! Deltalake's errors in Volley's words.

use deltalake::DeltaTableError;

use crate::error::ConnectorError;

/// An error from deltalake while `doing` something with `table`.
pub(crate) fn delta_error(table: &str, doing: &str, err: DeltaTableError) -> ConnectorError {
    let retryable = matches!(
        err,
        DeltaTableError::ObjectStore { .. }
            | DeltaTableError::Io { .. }
            | DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction { .. }
    );
    ConnectorError::External {
        table: table.to_string(),
        message: format!("Delta table: cannot {doing}: {err}"),
        retryable,
    }
}
