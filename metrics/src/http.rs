//! The HTTP side of `volley run`: `/metrics` in the Prometheus text format, and a live
//! dashboard (`/`: the plan as a graph and charts of the last minutes, drawn from
//! `/api/state`), its assets built into the binary.
//!
//! Loopback by default; serving other hosts needs a token, which every request carries as
//! `Authorization: Bearer <token>` (Prometheus: `authorization` in the scrape config; the
//! dashboard: `/?token=<token>`, which its page sends on).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Metrics;

/// How the HTTP side is served.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// Where to serve the dashboard (`/`) and `/metrics` (Prometheus) over HTTP (port 0: any
    /// free port).
    #[arg(
        long,
        env = "VOLLEY_HTTP",
        default_value = "127.0.0.1:9464",
        value_name = "ADDR"
    )]
    pub http: String,
    /// The token every HTTP request must carry (as `Authorization: Bearer <token>`);
    /// required to serve on an address other than loopback.
    #[arg(
        long,
        env = "VOLLEY_HTTP_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub http_token: Option<String>,
    /// Do not serve the dashboard and `/metrics`.
    #[arg(long)]
    pub no_http: bool,
}

impl Default for HttpArgs {
    fn default() -> Self {
        Self {
            http: "127.0.0.1:9464".into(),
            http_token: None,
            no_http: false,
        }
    }
}

/// The running HTTP server; dropping it stops it.
#[derive(Debug)]
pub struct HttpServer {
    /// The address it serves on (the port chosen when asked for port 0).
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Served {
    metrics: Arc<Metrics>,
    token: Option<Arc<str>>,
}

impl Served {
    /// Whether `headers` carry the token, when one is required.
    fn allowed(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| same(given.as_bytes(), token.as_bytes()))
    }
}

/// Compares in time independent of where the texts differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "this Volley serves HTTP with a token: send it as Authorization: Bearer <token>\n",
    )
        .into_response()
}

const DASHBOARD_HTML: &str = include_str!("../assets/dashboard.html");
const DASHBOARD_JS: &str = include_str!("../assets/dashboard.js");
const UPLOT_JS: &str = include_str!("../assets/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../assets/uPlot.min.css");

/// Whether the request carries the token in the header, or (for the page itself, which a
/// browser opens without headers) in `?token=`.
fn page_allowed(served: &Served, headers: &HeaderMap, query: Option<&str>) -> bool {
    served.allowed(headers)
        || served.token.as_ref().is_some_and(|token| {
            query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .filter_map(|pair| pair.strip_prefix("token="))
                .any(|given| same(given.as_bytes(), token.as_bytes()))
        })
}

async fn serve_page(
    State(served): State<Served>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if !page_allowed(&served, &headers, uri.query()) {
        return unauthorized();
    }
    let (content_type, body) = match uri.path() {
        "/dashboard.js" => ("text/javascript; charset=utf-8", DASHBOARD_JS),
        "/uPlot.iife.min.js" => ("text/javascript; charset=utf-8", UPLOT_JS),
        "/uPlot.min.css" => ("text/css; charset=utf-8", UPLOT_CSS),
        _ => ("text/html; charset=utf-8", DASHBOARD_HTML),
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn serve_state(State(served): State<Served>, headers: HeaderMap) -> Response {
    if !served.allowed(&headers) {
        return unauthorized();
    }
    let body = super::dashboard::state_json(&served.metrics).to_string();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn serve_metrics(State(served): State<Served>, headers: HeaderMap) -> Response {
    if !served.allowed(&headers) {
        return unauthorized();
    }
    let text = super::prometheus::render(&served.metrics);
    (
        [(header::CONTENT_TYPE, super::prometheus::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

/// Serves `metrics` as `args` say, on the current async runtime.
///
/// # Errors
/// A bad address, a missing token off loopback, or an address already in use.
pub async fn start(args: &HttpArgs, metrics: Arc<Metrics>) -> anyhow::Result<HttpServer> {
    let addr = &args.http;
    let socket: SocketAddr = addr.parse().map_err(|e| {
        anyhow::anyhow!("--http '{addr}' is not an address such as 127.0.0.1:9464: {e}")
    })?;
    let token = args.http_token.as_deref().filter(|t| !t.is_empty());
    if !socket.ip().is_loopback() && token.is_none() {
        anyhow::bail!(
            "--http {addr}: serving other hosts than this one needs a token: give --http-token (or VOLLEY_HTTP_TOKEN); or serve on 127.0.0.1"
        );
    }
    let listener = tokio::net::TcpListener::bind(socket).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot serve HTTP on {addr}: {e} (is another pipeline serving there? choose another address with --http ADDR, or run with --no-http)"
        )
    })?;
    let bound = listener.local_addr()?;
    let served = Served {
        metrics,
        token: token.map(Arc::from),
    };
    let app = Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/api/state", get(serve_state))
        .route("/", get(serve_page))
        .route("/dashboard.js", get(serve_page))
        .route("/uPlot.iife.min.js", get(serve_page))
        .route("/uPlot.min.css", get(serve_page))
        .with_state(served);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("the HTTP server stopped: {e}");
        }
    });
    Ok(HttpServer { addr: bound, task })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{HttpArgs, start};
    use crate::{JobKey, Metrics};

    /// The status line and body of `GET path` with `headers`.
    async fn get(addr: std::net::SocketAddr, path: &str, headers: &str) -> (String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: volley\r\n{headers}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response.lines().next().unwrap_or_default().to_string();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    fn args(addr: &str, token: Option<&str>) -> HttpArgs {
        HttpArgs {
            http: addr.into(),
            http_token: token.map(str::to_string),
            no_http: false,
        }
    }

    #[tokio::test]
    async fn metrics_need_the_token_when_one_is_set() {
        let metrics = Arc::new(Metrics::default());
        let key = JobKey {
            pipeline: "surge".into(),
            instance: None,
        };
        metrics.start(key, vec![]);
        let open = start(&args("127.0.0.1:0", None), Arc::clone(&metrics))
            .await
            .unwrap();
        let (status, body) = get(open.addr, "/metrics", "").await;
        assert!(status.contains("200"), "{status}");
        assert!(
            body.contains(r#"volley_pipeline_running{pipeline="surge",state="running"} 1"#),
            "{body}"
        );

        let closed = start(&args("127.0.0.1:0", Some("s3cret")), metrics)
            .await
            .unwrap();
        let (status, body) = get(closed.addr, "/metrics", "").await;
        assert!(status.contains("401"), "{status}");
        assert!(body.contains("Authorization: Bearer"), "{body}");
        let (status, _) = get(closed.addr, "/metrics", "Authorization: Bearer wrong\r\n").await;
        assert!(status.contains("401"), "{status}");
        let (status, body) = get(closed.addr, "/metrics", "Authorization: Bearer s3cret\r\n").await;
        assert!(status.contains("200"), "{status}");
        assert!(body.contains("volley_pipeline_running"), "{body}");

        // The dashboard: the page opens with ?token=, its state needs the header.
        let (status, _) = get(closed.addr, "/", "").await;
        assert!(status.contains("401"), "{status}");
        let (status, _) = get(closed.addr, "/?token=wrong", "").await;
        assert!(status.contains("401"), "{status}");
        let (status, page) = get(closed.addr, "/?token=s3cret", "").await;
        assert!(
            status.contains("200") && page.contains("<title>Volley</title>"),
            "{page}"
        );
        let (status, _) = get(closed.addr, "/api/state", "").await;
        assert!(status.contains("401"), "{status}");
        let (status, state) = get(
            closed.addr,
            "/api/state",
            "Authorization: Bearer s3cret\r\n",
        )
        .await;
        assert!(status.contains("200"), "{status}");
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        assert_eq!(state["jobs"][0]["pipeline"], "surge");
        assert_eq!(state["jobs"][0]["state"], "running");
        let (status, script) = get(open.addr, "/uPlot.iife.min.js", "").await;
        assert!(
            status.contains("200") && script.contains("uPlot"),
            "{status}"
        );
    }

    #[tokio::test]
    async fn serving_other_hosts_needs_a_token_and_bad_addresses_are_named() {
        let metrics = Arc::new(Metrics::default());
        let refused = start(&args("0.0.0.0:0", None), Arc::clone(&metrics))
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("--http 0.0.0.0:0"), "{refused}");
        assert!(refused.contains("--http-token"), "{refused}");
        let bad = start(&args("localhost", None), metrics)
            .await
            .unwrap_err()
            .to_string();
        assert!(bad.contains("--http 'localhost'"), "{bad}");
    }
}
