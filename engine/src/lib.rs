//! The Volley runtime: the epoch loop, checkpoints and recovery, batch mode, verification,
//! and the `volley` command line.

pub mod batch;
pub mod checkpoint;
pub mod coalesce;
pub mod compare;
pub mod driver;
pub mod error;
pub mod group;
pub mod job;
pub mod late_letters;
pub mod lookup;
pub mod memory;
pub mod metrics;
pub mod models;
pub mod runtime;
pub mod setup;
pub mod signals;
pub mod sink_fit;
pub mod status;
pub mod tables;
pub mod verify;
pub mod watermark;

pub use error::{EngineError, Result};

use volley_connectors::ConnectorRegistry;
use volley_sql::Pipeline;

/// Reads and validates a pipeline file with the built-in connectors.
///
/// # Errors
/// Unreadable file, SQL and option errors.
pub async fn load_pipeline(
    path: &std::path::Path,
    registry: &ConnectorRegistry,
) -> Result<Pipeline> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        EngineError::Usage(format!("cannot read pipeline '{}': {e}", path.display()))
    })?;
    Ok(Pipeline::parse(&text, registry).await?)
}
