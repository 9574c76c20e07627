//! Arrow Flight SQL over the pipeline's live tables: analysts query fresh results with the
//! clients they already use (ADBC, JDBC, pyarrow).
//!
//! Every query reads one published [`volley_connectors::live::Snapshot`], so it sees whole
//! epochs only, the same epoch in every table; the epoch loop never waits for a query.

mod query;
mod service;

#[cfg(test)]
mod tests;

pub use query::{CATALOG, LIVE_SCHEMA, QueryEngine, QueryError};
pub use service::VolleyFlightSql;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

/// The default memory pool of all queries together: 256 MiB.
pub const DEFAULT_QUERY_MEMORY: usize = 256 << 20;

/// Serves `service` on `listener` until `shutdown` completes.
///
/// # Errors
/// Transport failures.
pub async fn serve(
    service: VolleyFlightSql,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .add_service(FlightServiceServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
