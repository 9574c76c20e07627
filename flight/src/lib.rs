//! Arrow Flight SQL over the pipeline's live tables: analysts query fresh results with the
//! clients they already use (ADBC, JDBC, pyarrow).
//!
//! Every query reads one published [`volley_connectors::live::Snapshot`], so it sees whole
//! epochs only, the same epoch in every table; the epoch loop never waits for a query.

mod auth;
mod catalog;
mod error;
mod params;
mod prepared;
mod query;
pub mod server;
mod service;
mod sql_info;
mod threads;

#[cfg(test)]
mod tests;

pub use auth::Auth;
pub use query::{CATALOG, LIVE_SCHEMA, QueryEngine, QueryError, SYSTEM_SCHEMA};
pub use service::VolleyFlightSql;
pub use threads::QueryRuntime;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

/// The default memory pool of all queries together: 256 MiB.
pub const DEFAULT_QUERY_MEMORY: usize = 256 << 20;

/// A server certificate and its private key, PEM-encoded.
#[derive(Clone)]
pub struct Tls {
    /// The certificate chain.
    pub cert_pem: Vec<u8>,
    /// The private key.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

fn tls_config(tls: &Tls) -> ServerTlsConfig {
    // Two crypto providers are compiled in (ring and aws-lc); pick one for the process.
    // Failing means one is installed already, which serves as well.
    let _ = rustls::crypto::ring::default_provider().install_default();
    ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
}

/// Whether TLS accepts the certificate and key of `tls`.
///
/// # Errors
/// TLS's reason for refusing them.
pub fn check_tls(tls: &Tls) -> Result<(), tonic::transport::Error> {
    Server::builder().tls_config(tls_config(tls)).map(|_| ())
}

/// Serves `service` on `listener` until `shutdown` completes: over TLS when `tls` is given,
/// every call checked against the service's [`Auth`].
///
/// # Errors
/// A certificate or key that TLS refuses, and transport failures.
pub async fn serve(
    service: VolleyFlightSql,
    listener: TcpListener,
    tls: Option<Tls>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = Server::builder();
    if let Some(tls) = &tls {
        builder = builder.tls_config(tls_config(tls))?;
    }
    let auth = service.auth().clone();
    builder
        .add_service(FlightServiceServer::with_interceptor(service, auth))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
