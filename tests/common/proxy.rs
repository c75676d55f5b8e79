//! A TCP proxy on 127.0.0.1 in front of a server of the tests (MinIO, an HTTP source), that can
//! fail in the ways networks do: reset connections at a random byte of the answer, hold the
//! answer to one chosen request forever (its request delivered, its response never), or delay
//! chosen requests until it heals (not delivered until then). Which connections reset is
//! counted, not drawn, so that every run sees its resets.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Which request heads to hold the answer of.
type Matcher = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// How the proxy treats connections from now on.
#[derive(Default)]
struct Faults {
    /// Reset every n-th answer (the first included) that reaches its connection's random byte
    /// within the first 256 KiB; 0: none.
    reset_every: u64,
    /// Of a held request's connection, no answer byte goes back.
    hold: Option<Matcher>,
    /// A delayed request reaches the server only once the proxy heals.
    delay: Option<Matcher>,
}

/// A running proxy; `address` is where clients connect.
pub struct Proxy {
    pub address: String,
    faults: Arc<Mutex<Faults>>,
    /// Connections reset so far.
    pub resets: Arc<AtomicU64>,
    /// Requests whose answers are held.
    pub held: Arc<AtomicU64>,
    /// Requests delayed so far.
    pub delayed: Arc<AtomicU64>,
}

impl Proxy {
    /// Proxies 127.0.0.1:<new port> to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let faults: Arc<Mutex<Faults>> = Arc::default();
        let (resets, held, delayed): (Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicU64>) =
            Default::default();
        let upstream = upstream.to_string();
        let counters = Counters {
            resets: resets.clone(),
            held: held.clone(),
            delayed: delayed.clone(),
            reached: Arc::default(),
        };
        let shared = faults.clone();
        tokio::spawn(async move {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let (faults, counters) = (shared.clone(), counters.clone());
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        relay(client, server, seed, faults, counters).await;
                    }
                });
            }
        });
        Proxy {
            address,
            faults,
            resets,
            held,
            delayed,
        }
    }

    /// `http://<address>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Of the connections opened from now on, resets every `n`-th one whose answer reaches a random
    /// byte within its first 256 KiB (the first such one included).
    pub fn reset_every(&self, n: u64) {
        self.faults.lock().unwrap().reset_every = n;
    }

    /// Holds the answer of every request whose head (request line and headers) `matches`.
    pub fn hold(&self, matches: impl Fn(&str) -> bool + Send + Sync + 'static) {
        self.faults.lock().unwrap().hold = Some(Box::new(matches));
    }

    /// Delays every request whose head `matches` until [`Proxy::heal`]: it reaches the server
    /// only then.
    pub fn delay(&self, matches: impl Fn(&str) -> bool + Send + Sync + 'static) {
        self.faults.lock().unwrap().delay = Some(Box::new(matches));
    }

    /// Passes everything through again (for connections opened from now on; delayed requests go
    /// on).
    pub fn heal(&self) {
        *self.faults.lock().unwrap() = Faults::default();
    }
}

/// Finds the heads of HTTP/1.1 requests in the bytes a client sends: a head, then a body of its
/// Content-Length, then the next head. A chunked body ends the framing (nothing after it is held).
#[derive(Default)]
struct Framing {
    head: Vec<u8>,
    /// Body bytes still to pass before the next head.
    body: u64,
    lost: bool,
}

impl Framing {
    /// The request heads that end in `bytes`.
    fn feed(&mut self, mut bytes: &[u8]) -> Vec<String> {
        let mut heads = Vec::new();
        while !self.lost && !bytes.is_empty() {
            if self.body > 0 {
                let skip = self.body.min(bytes.len() as u64);
                self.body -= skip;
                bytes = &bytes[skip as usize..];
                continue;
            }
            self.head.push(bytes[0]);
            bytes = &bytes[1..];
            if self.head.ends_with(b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&self.head).into_owned();
                let lower = text.to_ascii_lowercase();
                self.lost = lower.contains("transfer-encoding: chunked");
                self.body = lower
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                self.head.clear();
                heads.push(text);
            }
        }
        heads
    }
}

/// What the connections of one proxy count together.
#[derive(Clone)]
struct Counters {
    resets: Arc<AtomicU64>,
    held: Arc<AtomicU64>,
    delayed: Arc<AtomicU64>,
    /// Answers that reached their connection's reset byte.
    reached: Arc<AtomicU64>,
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    seed: u64,
    faults: Arc<Mutex<Faults>>,
    counters: Counters,
) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let reset_every = faults.lock().unwrap().reset_every;
    // The answer byte at which this connection may be reset.
    let mut reset_at = (reset_every > 0).then_some((seed >> 20) % (256 << 10));
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let holding = Arc::new(AtomicBool::new(false));
    let requests = {
        let holding = holding.clone();
        async move {
            let mut framing = Framing::default();
            let mut buffer = vec![0u8; 64 << 10];
            loop {
                let Ok(n) = client_read.read(&mut buffer).await else {
                    return;
                };
                if n == 0 {
                    let _ = server_write.shutdown().await;
                    return;
                }
                for head in framing.feed(&buffer[..n]) {
                    if let Some(hold) = &faults.lock().unwrap().hold
                        && hold(&head)
                    {
                        holding.store(true, Ordering::SeqCst);
                        counters.held.fetch_add(1, Ordering::SeqCst);
                    }
                    let delayed = |faults: &Faults| faults.delay.as_ref().is_some_and(|d| d(&head));
                    if delayed(&faults.lock().unwrap()) {
                        counters.delayed.fetch_add(1, Ordering::SeqCst);
                        while delayed(&faults.lock().unwrap()) {
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    }
                }
                if server_write.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        }
    };
    let answers = async move {
        let mut buffer = vec![0u8; 64 << 10];
        let mut sent = 0u64;
        loop {
            let Ok(n) = server_read.read(&mut buffer).await else {
                return;
            };
            if n == 0 {
                let _ = client_write.shutdown().await;
                return;
            }
            if holding.load(Ordering::SeqCst) {
                // The request went through; its answer never comes.
                std::future::pending::<()>().await;
            }
            let mut chunk = &buffer[..n];
            if let Some(at) = reset_at
                && sent + chunk.len() as u64 > at
            {
                reset_at = None;
                if counters
                    .reached
                    .fetch_add(1, Ordering::SeqCst)
                    .is_multiple_of(reset_every)
                {
                    chunk = &chunk[..(at - sent) as usize];
                    let _ = client_write.write_all(chunk).await;
                    counters.resets.fetch_add(1, Ordering::SeqCst);
                    // The client sees the answer end mid-way, as when a connection breaks.
                    return;
                }
            }
            if client_write.write_all(chunk).await.is_err() {
                return;
            }
            sent += chunk.len() as u64;
        }
    };
    // Each direction ends on its own: an answer still on its way after the client stopped
    // sending is relayed to the end.
    tokio::join!(requests, answers);
}
