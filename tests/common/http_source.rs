//! An HTTP/1.1 source under the tests' control, on 127.0.0.1: with or without Content-Length and
//! Range support, dropping the connection mid-body, changing its content between requests, or
//! answering with an error status. Bodies are generated, never held whole in memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// The bytes a source serves: `len` bytes of a pattern that depends on `seed` and each offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Body {
    pub len: u64,
    pub seed: u8,
}

impl Body {
    pub fn byte(&self, offset: u64) -> u8 {
        ((offset.wrapping_mul(31) ^ (offset >> 13)) as u8).wrapping_add(self.seed)
    }

    /// Bytes `[start, end)`, generated.
    pub fn bytes(&self, start: u64, end: u64) -> Vec<u8> {
        (start..end).map(|o| self.byte(o)).collect()
    }

    pub fn sha256(&self) -> String {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        let mut offset = 0;
        while offset < self.len {
            let end = (offset + (1 << 20)).min(self.len);
            hasher.update(self.bytes(offset, end));
            offset = end;
        }
        hex::encode(hasher.finalize())
    }
}

/// How the source behaves.
#[derive(Clone, Debug)]
pub struct Behaviour {
    pub body: Body,
    /// Send Content-Length (else the body ends when the connection closes).
    pub content_length: bool,
    /// Advertise and serve byte ranges, honouring If-Range against the ETag.
    pub ranges: bool,
    /// The first response stops after this many body bytes, closing the connection.
    pub drop_first_after: Option<u64>,
    /// From the second request on, serve this body instead (with another ETag).
    pub changed_body: Option<Body>,
    /// Answer every request with this status and no body.
    pub status: Option<u16>,
    /// Pause after every 64 KiB written, to keep a transfer in flight for a while.
    pub throttle: Option<std::time::Duration>,
    /// Send the body one byte at a time with this pause between bytes (a source that never stops
    /// and never gets anywhere).
    pub trickle: Option<std::time::Duration>,
    /// Answer every request with a 302 to this URL.
    pub redirect_to: Option<String>,
    /// Validate with Last-Modified only (no ETag): a weak validator.
    pub last_modified_only: bool,
    /// Wait this long before answering a ranged request (a resume), to hold a resuming reader
    /// before its upload is under way.
    pub ranged_delay: Option<std::time::Duration>,
}

impl Behaviour {
    pub fn new(len: u64) -> Self {
        Self {
            body: Body { len, seed: 1 },
            content_length: true,
            ranges: true,
            drop_first_after: None,
            changed_body: None,
            status: None,
            throttle: None,
            trickle: None,
            redirect_to: None,
            last_modified_only: false,
            ranged_delay: None,
        }
    }
}

/// A running source; `url` points at it.
pub struct HttpSource {
    pub url: String,
    pub requests: Arc<AtomicU64>,
    /// Body bytes written, over all requests.
    pub bytes_served: Arc<AtomicU64>,
    /// The head of every request received, as sent.
    pub heads: Arc<std::sync::Mutex<Vec<String>>>,
}

pub async fn serve(behaviour: Behaviour) -> HttpSource {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/data.bin", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicU64::new(0));
    let bytes_served = Arc::new(AtomicU64::new(0));
    let heads: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let (counter, served, seen) = (requests.clone(), bytes_served.clone(), heads.clone());
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let (behaviour, served, counter, seen) = (
                behaviour.clone(),
                served.clone(),
                counter.clone(),
                seen.clone(),
            );
            tokio::spawn(async move { handle(socket, &behaviour, &counter, &served, &seen).await });
        }
    });
    HttpSource {
        url,
        requests,
        bytes_served,
        heads,
    }
}

/// A certificate authority and a certificate for 127.0.0.1 it signed, as PEM, made with openssl.
pub struct TestCa {
    pub ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl TestCa {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(super::unique("s3flow-tls"));
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(
            dir.join("leaf.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=s3flow test CA",
        ]);
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.crt",
        ]);
        let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
        let ca = Self {
            ca_pem: read("ca.crt"),
            cert_pem: read("leaf.crt"),
            key_pem: read("leaf.key"),
        };
        let _ = std::fs::remove_dir_all(&dir);
        ca
    }
}

/// An HTTPS server (`openssl s_server -WWW`, a real TLS implementation) with a certificate from `ca`,
/// serving `body` as /data.bin (no length, no ranges); stopped when the returned guard drops.
pub fn serve_tls(body: Body, ca: &TestCa) -> (String, TlsServer) {
    let dir = std::env::temp_dir().join(super::unique("s3flow-https"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data.bin"), body.bytes(0, body.len)).unwrap();
    std::fs::write(dir.join("leaf.crt"), &ca.cert_pem).unwrap();
    std::fs::write(dir.join("leaf.key"), &ca.key_pem).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-WWW",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
            "leaf.crt",
            "-key",
            "leaf.key",
        ])
        .current_dir(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (
        format!("https://127.0.0.1:{port}/data.bin"),
        TlsServer { child, dir },
    )
}

pub struct TlsServer {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: S,
    behaviour: &Behaviour,
    counter: &AtomicU64,
    served: &AtomicU64,
    seen: &std::sync::Mutex<Vec<String>>,
) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if socket.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let number = counter.fetch_add(1, Ordering::SeqCst);
    let raw = String::from_utf8_lossy(&head).into_owned();
    seen.lock().unwrap().push(raw);
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
    };
    if let (Some(delay), Some(_)) = (behaviour.ranged_delay, header("range")) {
        tokio::time::sleep(delay).await;
    }
    let _ = respond(
        &mut socket,
        behaviour,
        number,
        header("range"),
        header("if-range"),
        served,
    )
    .await;
}

async fn respond<S: AsyncWrite + Unpin>(
    socket: &mut S,
    behaviour: &Behaviour,
    number: u64,
    range: Option<String>,
    if_range: Option<String>,
    served: &AtomicU64,
) -> std::io::Result<()> {
    if let Some(status) = behaviour.status {
        let head =
            format!("HTTP/1.1 {status} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return socket.write_all(head.as_bytes()).await;
    }
    if let Some(location) = &behaviour.redirect_to {
        let head = format!(
            "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return socket.write_all(head.as_bytes()).await;
    }
    let (body, etag) = match (&behaviour.changed_body, number) {
        (Some(changed), n) if n > 0 => (*changed, "\"v2\""),
        _ => (behaviour.body, "\"v1\""),
    };
    let validator = match behaviour.last_modified_only {
        true => "Wed, 02 Dec 2026 10:00:00 GMT",
        false => etag,
    };
    // "bytes=start-" or "bytes=start-end" (inclusive), honoured only when If-Range still matches.
    let requested = range
        .filter(|_| behaviour.ranges)
        .filter(|_| {
            if_range
                .as_deref()
                .is_none_or(|v| v.eq_ignore_ascii_case(validator))
        })
        .and_then(|r| {
            let (start, end) = r.strip_prefix("bytes=")?.split_once('-')?;
            let start = start.parse::<u64>().ok()?;
            let last = body.len.checked_sub(1)?;
            let end = if end.is_empty() {
                last
            } else {
                end.parse::<u64>().ok()?.min(last)
            };
            Some((start, end))
        });
    let (start, end) = requested.unwrap_or((0, body.len.saturating_sub(1)));
    let mut head = match requested {
        Some((s, e)) => format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{e}/{}\r\n",
            body.len
        ),
        None => "HTTP/1.1 200 OK\r\n".to_string(),
    };
    let validator_header = match behaviour.last_modified_only {
        true => format!("Last-Modified: {validator}"),
        false => format!("ETag: {etag}"),
    };
    head.push_str(&format!(
        "{validator_header}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n"
    ));
    if behaviour.ranges {
        head.push_str("Accept-Ranges: bytes\r\n");
    }
    let stop = if body.len == 0 { 0 } else { end + 1 };
    if behaviour.content_length {
        head.push_str(&format!("Content-Length: {}\r\n", stop - start));
    }
    head.push_str("\r\n");
    socket.write_all(head.as_bytes()).await?;
    let stop = match behaviour.drop_first_after {
        Some(after) if number == 0 => after.min(stop),
        _ => stop,
    };
    let mut offset = start;
    let step = if behaviour.trickle.is_some() {
        1
    } else {
        64 * 1024
    };
    while offset < stop {
        let end = (offset + step).min(stop);
        socket.write_all(&body.bytes(offset, end)).await?;
        served.fetch_add(end - offset, Ordering::SeqCst);
        offset = end;
        if let Some(pause) = behaviour.throttle.or(behaviour.trickle) {
            tokio::time::sleep(pause).await;
        }
    }
    socket.shutdown().await
}
