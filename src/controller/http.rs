//! The operator's HTTP endpoints: `/metrics`, `/healthz` and `/readyz`. Three fixed GET routes,
//! one response per connection: a small responder over TCP keeps the web stack out of the binary.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

use super::metrics::Metrics;

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
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let (metrics, readiness) = (metrics.clone(), readiness.clone());
        tokio::spawn(async move {
            if let Err(e) = respond(stream, &metrics, &readiness).await {
                debug!(%peer, error = %e, "HTTP request");
            }
        });
    }
}

async fn respond(
    mut stream: TcpStream,
    metrics: &Metrics,
    readiness: &Readiness,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    // Only the request line matters; the head is read (bounded) so the client sees a clean close.
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let (status, content_type, body) = route(&String::from_utf8_lossy(line), metrics, readiness);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

fn route(
    request_line: &str,
    metrics: &Metrics,
    readiness: &Readiness,
) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" {
        return ("405 Method Not Allowed", TEXT, "only GET\n".into());
    }
    match path {
        "/metrics" => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        "/healthz" => ("200 OK", TEXT, "ok\n".into()),
        "/readyz" if readiness.is_ready() => ("200 OK", TEXT, "ok\n".into()),
        "/readyz" => (
            "503 Service Unavailable",
            TEXT,
            "watches not running yet\n".into(),
        ),
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let metrics = Metrics::default();
        let readiness = Readiness::default();
        let status = |line: &str, r: &Readiness| route(line, &metrics, r).0;
        assert_eq!(status("GET /healthz HTTP/1.1", &readiness), "200 OK");
        assert_eq!(
            status("GET /readyz HTTP/1.1", &readiness),
            "503 Service Unavailable"
        );
        readiness.expect_watches(2);
        readiness.watch_started();
        assert_eq!(
            status("GET /readyz HTTP/1.1", &readiness),
            "503 Service Unavailable"
        );
        readiness.watch_started();
        assert_eq!(status("GET /readyz?verbose HTTP/1.1", &readiness), "200 OK");
        assert_eq!(status("GET /nope HTTP/1.1", &readiness), "404 Not Found");
        assert_eq!(
            status("POST /metrics HTTP/1.1", &readiness),
            "405 Method Not Allowed"
        );
        let (_, _, body) = route("GET /metrics HTTP/1.1", &metrics, &readiness);
        assert!(body.contains("# TYPE s3flow_leader gauge"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
    }
}
