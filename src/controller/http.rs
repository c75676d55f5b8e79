//! The operator's HTTP endpoints: `/metrics` on one listener, `/healthz` and `/readyz` on a
//! listener of their own (so that metrics scrapers, or anyone who can open connections to the
//! metrics port, never starve the kubelet's probes), on hyper's HTTP/1 server with bounds on
//! connections served at once, per peer, and on how long a request head and a connection take.

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
/// Connections one peer address may hold at once; more are closed at once.
const MAX_PER_PEER: usize = 4;
/// How long a request head may take to arrive.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
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
    /// Waits for `count` more watches' first lists before ready (0: ready now, as a standby is).
    pub fn expect_watches(&self, count: usize) {
        self.watches_pending.store(count, Ordering::Release);
    }

    /// One expected watch has listed its objects.
    pub fn watch_started(&self) {
        let _ = self
            .watches_pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Whether every expected watch has listed its objects: what `/readyz` answers.
    pub fn is_ready(&self) -> bool {
        self.watches_pending.load(Ordering::Acquire) == 0
    }
}

/// What a listener serves.
#[derive(Clone)]
pub enum Endpoints {
    /// `/metrics`.
    Metrics(Arc<Metrics>),
    /// `/healthz` and `/readyz`.
    Probes(Arc<Readiness>),
}

/// Connections open per peer address.
#[derive(Default)]
struct Peers(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

impl Peers {
    /// Counts a connection of `peer`, unless it holds [`MAX_PER_PEER`] already.
    fn admit(self: &Arc<Self>, peer: std::net::IpAddr) -> Option<PeerConnection> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(peer).or_default();
        if *count >= MAX_PER_PEER {
            return None;
        }
        *count += 1;
        Some(PeerConnection {
            peers: self.clone(),
            peer,
        })
    }
}

/// One admitted connection: counted off when it ends.
struct PeerConnection {
    peers: Arc<Peers>,
    peer: std::net::IpAddr,
}

impl Drop for PeerConnection {
    fn drop(&mut self) {
        let mut open = self.peers.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

/// Serves `endpoints` on `listener` until the process ends.
pub async fn serve(listener: TcpListener, endpoints: Endpoints) {
    if let Ok(address) = listener.local_addr() {
        let served = match endpoints {
            Endpoints::Metrics(_) => "/metrics",
            Endpoints::Probes(_) => "/healthz and /readyz",
        };
        info!(%address, "serving {served}");
    }
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let peers = Arc::new(Peers::default());
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
        let Some(admitted) = peers.admit(peer.ip()) else {
            debug!(%peer, "closing a connection past the peer's limit");
            continue;
        };
        let endpoints = endpoints.clone();
        let service = service_fn(move |request| {
            let response = respond(request.method(), request.uri().path(), &endpoints);
            async move { Ok::<_, Infallible>(response) }
        });
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .keep_alive(false)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, error = %e, "HTTP connection"),
                Err(_) => debug!(%peer, "HTTP connection timed out"),
            }
            drop((permit, admitted));
        });
    }
}

fn respond(method: &Method, path: &str, endpoints: &Endpoints) -> Response<Full<Bytes>> {
    let (status, content_type, body) = route(method, path, endpoints);
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn route(method: &Method, path: &str, endpoints: &Endpoints) -> (StatusCode, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != Method::GET {
        return (StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET\n".into());
    }
    match (path, endpoints) {
        ("/metrics", Endpoints::Metrics(metrics)) => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        ("/healthz", Endpoints::Probes(_)) => (StatusCode::OK, TEXT, "ok\n".into()),
        ("/readyz", Endpoints::Probes(readiness)) if readiness.is_ready() => {
            (StatusCode::OK, TEXT, "ok\n".into())
        }
        ("/readyz", Endpoints::Probes(_)) => (
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
        let metrics = Endpoints::Metrics(Arc::default());
        let readiness = Arc::new(Readiness::default());
        let probes = Endpoints::Probes(readiness.clone());
        let status = |method: Method, path: &str, on: &Endpoints| route(&method, path, on).0;
        assert_eq!(status(Method::GET, "/healthz", &probes), StatusCode::OK);
        let not_ready = StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(status(Method::GET, "/readyz", &probes), not_ready);
        readiness.expect_watches(2);
        readiness.watch_started();
        assert_eq!(status(Method::GET, "/readyz", &probes), not_ready);
        readiness.watch_started();
        assert_eq!(status(Method::GET, "/readyz", &probes), StatusCode::OK);
        assert_eq!(status(Method::GET, "/nope", &probes), StatusCode::NOT_FOUND);
        // Each listener serves its own endpoints only.
        assert_eq!(
            status(Method::GET, "/metrics", &probes),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(Method::GET, "/healthz", &metrics),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(Method::POST, "/metrics", &metrics),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let (_, _, body) = route(&Method::GET, "/metrics", &metrics);
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
        tokio::spawn(serve(listener, Endpoints::Probes(readiness)));
        // A peer that opens connections and sends nothing holds at most its share of them, and
        // each for the head timeout only: 40 idle connections of one peer (the metrics port's
        // scrapers, say) leave the probe served.
        let mut stalled = Vec::new();
        for _ in 0..40 {
            stalled.push(TcpStream::connect(address).await.unwrap());
        }
        // Another peer address (the kubelet's) gets its answer.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut kubelet = socket.connect(address).await.unwrap();
        kubelet
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = kubelet.read_to_end(&mut answer).await;
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200 OK"));
        // A connection that sends nothing is closed once the head timeout passes.
        let mut idle = TcpStream::connect(address).await.unwrap();
        let started = std::time::Instant::now();
        let mut nothing = Vec::new();
        let _ = idle.read_to_end(&mut nothing).await;
        assert!(started.elapsed() < HEAD_TIMEOUT + Duration::from_secs(3));
        drop(stalled);
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
