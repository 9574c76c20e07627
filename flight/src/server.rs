//! The `--flight*` options of `volley run` and `volley batch`, and the server they start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use volley_connectors::live::SnapshotSource;

use super::threads::QueryRuntime;
use super::{Auth, DEFAULT_QUERY_MEMORY, QueryEngine, Tls, VolleyFlightSql, serve};

/// How Flight SQL is served.
#[derive(Debug, Clone, clap::Args)]
pub struct FlightArgs {
    /// Where to serve Arrow Flight SQL over the live tables (port 0: any free port).
    #[arg(
        long,
        env = "VOLLEY_FLIGHT",
        default_value = "127.0.0.1:50051",
        value_name = "ADDR"
    )]
    pub flight: String,
    /// The token every Flight SQL call must carry (as `Bearer <token>`, or as the password
    /// of a user/password login); required to serve on an address other than loopback.
    #[arg(
        long,
        env = "VOLLEY_FLIGHT_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub flight_token: Option<String>,
    /// Serve Flight SQL over TLS with this PEM certificate (chain).
    #[arg(long, value_name = "PEM", requires = "flight_tls_key")]
    pub flight_tls_cert: Option<PathBuf>,
    /// The PEM private key of `--flight-tls-cert`.
    #[arg(long, value_name = "PEM", requires = "flight_tls_cert")]
    pub flight_tls_key: Option<PathBuf>,
    /// The memory all Flight SQL queries together may use (such as 256MiB, 1GiB); a query
    /// needing more fails, the pipeline does not.
    #[arg(long, default_value = "256MiB", value_name = "SIZE", value_parser = parse_size)]
    pub flight_query_memory: usize,
}

impl Default for FlightArgs {
    fn default() -> Self {
        Self {
            flight: "127.0.0.1:50051".into(),
            flight_token: None,
            flight_tls_cert: None,
            flight_tls_key: None,
            flight_query_memory: DEFAULT_QUERY_MEMORY,
        }
    }
}

/// `256MiB`, `1GiB`, `64MB`, `1000000`: a size in bytes.
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: usize = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size such as 256MiB"))?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        other => {
            return Err(format!(
                "'{other}' is not a size unit (B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// A running Flight SQL server, stopped with the pipeline. It serves on threads of its own,
/// below the pipeline's priority.
#[derive(Debug)]
pub struct FlightServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    /// Dropped last: the task above runs on it.
    _runtime: QueryRuntime,
}

impl FlightServer {
    /// Stops serving; queries in flight are cut off.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("volley: the Flight SQL server failed: {e}"),
            Err(e) => eprintln!("volley: the Flight SQL server failed: {e}"),
        }
    }
}

fn read_pem(option: &str, path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("{option} '{}': cannot read it: {e}", path.display()))
}

/// Binds the address of `args` and serves `published` there, with the tables in `names`,
/// and the `system` tables of `system` when given.
/// Addresses other than loopback are served only with a token.
///
/// # Errors
/// A bad or taken address, a non-loopback address without a token, unreadable TLS files.
pub async fn start(
    args: &FlightArgs,
    published: Arc<dyn SnapshotSource>,
    names: &[String],
    system: Option<Arc<volley_metrics::Metrics>>,
    quiet: bool,
) -> anyhow::Result<FlightServer> {
    let addr = &args.flight;
    let socket: SocketAddr = addr.parse().map_err(|e| {
        anyhow::anyhow!("--flight '{addr}' is not an address such as 127.0.0.1:50051: {e}")
    })?;
    let token = args.flight_token.as_deref().filter(|t| !t.is_empty());
    if !socket.ip().is_loopback() && token.is_none() {
        anyhow::bail!(
            "--flight {addr}: serving other hosts than this one needs a token: give --flight-token (or VOLLEY_FLIGHT_TOKEN), and preferably --flight-tls-cert/--flight-tls-key; or serve on 127.0.0.1"
        );
    }
    if let Some(token) = token
        && tonic::metadata::MetadataValue::try_from(format!("Bearer {token}")).is_err()
    {
        anyhow::bail!("--flight-token: a token is printable ASCII without line breaks");
    }
    let tls = match (&args.flight_tls_cert, &args.flight_tls_key) {
        (Some(cert), Some(key)) => Some(Tls {
            cert_pem: read_pem("--flight-tls-cert", cert)?,
            key_pem: read_pem("--flight-tls-key", key)?,
        }),
        _ => None,
    };
    let listener = std::net::TcpListener::bind(socket).map_err(|e| {
        anyhow::anyhow!(
            "cannot serve Flight SQL on {addr}: {e} (is another pipeline serving there? choose another address with --flight ADDR, or run with --no-flight)"
        )
    })?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let runtime = QueryRuntime::new()
        .map_err(|e| anyhow::anyhow!("cannot start the Flight SQL threads: {e}"))?;
    let listener = {
        let _inside = runtime.handle().enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let mut engine = QueryEngine::new(published, args.flight_query_memory)?;
    if let Some(metrics) = system {
        engine = engine.with_system(metrics);
    }
    let auth = token.map_or_else(Auth::open, Auth::token);
    let service = VolleyFlightSql::new(Arc::new(engine), auth)?;
    let scheme = if tls.is_some() { "grpc+tls" } else { "grpc" };
    if let Some(tls) = &tls {
        // A certificate or key TLS refuses fails here, before the pipeline starts.
        super::check_tls(tls).map_err(|e| {
            anyhow::anyhow!(
                "cannot serve Flight SQL over TLS: {e} (check --flight-tls-cert and --flight-tls-key: PEM files of a certificate and its private key)"
            )
        })?;
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = runtime.handle().spawn(serve(service, listener, tls, async {
        let _ = stopped.await;
    }));
    if !quiet {
        let tables = names.join(", ");
        eprintln!(
            "volley: Flight SQL on {scheme}://{bound}{} (live tables: {})",
            if token.is_some() {
                ", token required"
            } else {
                ""
            },
            if tables.is_empty() {
                "none"
            } else {
                tables.as_str()
            }
        );
    }
    Ok(FlightServer {
        addr: bound,
        stop,
        task,
        _runtime: runtime,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::parse_size;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("64MB").unwrap(), 64_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12 parsecs").is_err());
    }
}
