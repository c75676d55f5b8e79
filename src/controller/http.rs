//! The operator's HTTP endpoints: `/metrics`, `/healthz` and `/readyz`, on hyper's HTTP/1 server
//! with a bound on connections served at once and on how long each may take.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::metrics::Metrics;

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 32;
/// How long one connection may stay open: a scrape takes milliseconds; a client that trickles
/// its request does not hold a connection longer than this.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head read (hyper's minimum).
const MAX_HEAD: usize = 8192;

/// Whether the operator can serve: ready once every watch it expects has listed its objects (a
/// standby replica expects none).
pub struct Readiness {
    watches_pending: AtomicUsize,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            watches_pending: AtomicUsize::new(usize::MAX),
        }
    }
}

impl Readiness {
    pub fn expect_watches(&self, count: usize) {
        self.watches_pending.store(count, Ordering::Release);
    }

    pub fn watch_started(&self) {
        let _ = self
            .watches_pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    pub fn is_ready(&self) -> bool {
        self.watches_pending.load(Ordering::Acquire) == 0
    }
}

/// Serves the endpoints on `listener` until the process ends.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, readiness: Arc<Readiness>) {
    if let Ok(address) = listener.local_addr() {
        info!(%address, "serving /metrics, /healthz and /readyz");
    }
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut failures = 0;
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                failures = 0;
                accepted
            }
            // Out of file descriptors, say: back off rather than spin.
            Err(e) => {
                failures += 1;
                warn!(error = %e, "accepting an HTTP connection");
                tokio::time::sleep(crate::s3::backoff(failures)).await;
                continue;
            }
        };
        let (metrics, readiness) = (metrics.clone(), readiness.clone());
        let service = service_fn(move |request| {
            let response = respond(request.method(), request.uri().path(), &metrics, &readiness);
            async move { Ok::<_, Infallible>(response) }
        });
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .keep_alive(false)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, error = %e, "HTTP connection"),
                Err(_) => debug!(%peer, "HTTP connection timed out"),
            }
            drop(permit);
        });
    }
}

fn respond(
    method: &Method,
    path: &str,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = route(method, path, metrics, readiness);
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn route(
    method: &Method,
    path: &str,
    metrics: &Metrics,
    readiness: &Readiness,
) -> (StatusCode, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != Method::GET {
        return (StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET\n".into());
    }
    match path {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        "/healthz" => (StatusCode::OK, TEXT, "ok\n".into()),
        "/readyz" if readiness.is_ready() => (StatusCode::OK, TEXT, "ok\n".into()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "watches not running yet\n".into(),
        ),
        _ => (StatusCode::NOT_FOUND, TEXT, "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    #[test]
    fn routes() {
        let metrics = Metrics::default();
        let readiness = Readiness::default();
        let status =
            |method: Method, path: &str, r: &Readiness| route(&method, path, &metrics, r).0;
        assert_eq!(status(Method::GET, "/healthz", &readiness), StatusCode::OK);
        let not_ready = StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(status(Method::GET, "/readyz", &readiness), not_ready);
        readiness.expect_watches(2);
        readiness.watch_started();
        assert_eq!(status(Method::GET, "/readyz", &readiness), not_ready);
        readiness.watch_started();
        assert_eq!(status(Method::GET, "/readyz", &readiness), StatusCode::OK);
        assert_eq!(
            status(Method::GET, "/nope", &readiness),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(Method::POST, "/metrics", &readiness),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let (_, _, body) = route(&Method::GET, "/metrics", &metrics, &readiness);
        assert!(body.contains("# TYPE s3flow_leader gauge"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
    }

    /// The response to `request`, as far as it arrives (a server that refuses may reset).
    async fn get(address: std::net::SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let _ = stream.write_all(request).await;
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        String::from_utf8_lossy(&response).into_owned()
    }

    #[tokio::test]
    async fn serves_over_http1_while_clients_stall() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let readiness = Arc::new(Readiness::default());
        readiness.expect_watches(0);
        tokio::spawn(serve(listener, Arc::default(), readiness));
        // Clients that open a connection and send nothing hold only their own connections.
        let mut stalled = Vec::new();
        for _ in 0..MAX_CONNECTIONS - 1 {
            stalled.push(TcpStream::connect(address).await.unwrap());
        }
        let response = get(address, b"GET /readyz?verbose HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("\r\n\r\nok\n"), "{response}");
        // A request head larger than the bound is not buffered and leaves the server serving.
        let mut huge = b"GET /healthz HTTP/1.1\r\nX-Pad: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
        huge.extend_from_slice(b"\r\n\r\n");
        let response = get(address, &huge).await;
        assert!(!response.contains("200 OK"), "{response}");
        let response = get(address, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    }
}
