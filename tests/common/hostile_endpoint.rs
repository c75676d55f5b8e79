//! Endpoints a hostile tenant could point s3flow at, on 127.0.0.1: an "S3" that answers HEAD like
//! S3 and every GET with an endless error body, or with a body one byte at a time, and an HTTP
//! source that sends its response head one byte at a time. Bodies are generated, never held;
//! every response ends when the client goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the endpoint answers.
#[derive(Clone, Copy, Debug)]
pub enum Hostility {
    /// HEAD: 200 with an ETag and a length; GET: 500 with a chunked body of up to this many bytes.
    ErrorFlood { bytes: u64 },
    /// HEAD: 200; GET: 206 and its headers, then the body one byte per `every`.
    Drip { every: Duration },
    /// Any request: a status line, then the headers one byte per `every`, never ending them.
    HeadTrickle { every: Duration },
}

/// A running endpoint.
pub struct Endpoint {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Requests it received.
    pub requests: Arc<AtomicU64>,
    /// Bytes it sent.
    pub sent: Arc<AtomicU64>,
}

/// Starts an endpoint that behaves as `hostility`; it serves until the test process ends.
pub async fn start(hostility: Hostility) -> Endpoint {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (requests, sent) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let counters = (requests.clone(), sent.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counters = (counters.0.clone(), counters.1.clone());
            tokio::spawn(async move {
                let _ = answer(stream, hostility, counters).await;
            });
        }
    });
    Endpoint {
        url,
        requests,
        sent,
    }
}

/// The request's method, once its head is read (at most 64 KiB of it).
async fn method(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 << 10 {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&head);
    Ok(text.split(' ').next().unwrap_or_default().to_string())
}

async fn answer(
    mut stream: TcpStream,
    hostility: Hostility,
    (requests, sent): (Arc<AtomicU64>, Arc<AtomicU64>),
) -> std::io::Result<()> {
    let method = method(&mut stream).await?;
    requests.fetch_add(1, Ordering::Relaxed);
    let mut write = async |bytes: &[u8]| {
        stream.write_all(bytes).await?;
        sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        std::io::Result::Ok(())
    };
    const OBJECT: &str = "HTTP/1.1 200 OK\r\nETag: \"e1\"\r\nContent-Length: 1000000\r\n\
                          Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\nConnection: close\r\n\r\n";
    match (hostility, method.as_str()) {
        (Hostility::HeadTrickle { every }, _) => {
            write(b"HTTP/1.1 200 OK\r\n").await?;
            loop {
                tokio::time::sleep(every).await;
                write(b"X").await?;
            }
        }
        (_, "HEAD") => write(OBJECT.as_bytes()).await,
        (Hostility::ErrorFlood { bytes }, _) => {
            write(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n\
                  Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            )
            .await?;
            let chunk = vec![b'x'; 1 << 20];
            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
            framed.extend_from_slice(&chunk);
            framed.extend_from_slice(b"\r\n");
            let mut flooded = 0;
            while flooded < bytes {
                write(&framed).await?;
                flooded += chunk.len() as u64;
            }
            write(b"0\r\n\r\n").await
        }
        (Hostility::Drip { every }, _) => {
            write(
                b"HTTP/1.1 206 Partial Content\r\nETag: \"e1\"\r\nContent-Length: 1000000\r\n\
                  Content-Range: bytes 0-999999/1000000\r\nConnection: close\r\n\r\n",
            )
            .await?;
            loop {
                write(b"a").await?;
                tokio::time::sleep(every).await;
            }
        }
    }
}

/// A Parquet file whose footer nests `depth` one-child groups over an INT32 column (the schema a
/// decoder that recurses once per level would overflow its stack on), with one empty row group.
pub fn deep_parquet(depth: usize) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut n: u64) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let int = |out: &mut Vec<u8>, n: i64| varint(out, ((n << 1) ^ (n >> 63)) as u64);
    let text = |out: &mut Vec<u8>, s: &str| {
        varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    };
    // Compact-protocol wire types.
    let (i32_, i64_, binary, list, structure) = (5u8, 6u8, 8u8, 9u8, 12u8);
    let mut m = Vec::new();
    m.push(0x10 | i32_);
    int(&mut m, 1);
    m.push(0x10 | list);
    m.push(0xf0 | structure);
    varint(&mut m, depth as u64 + 2);
    // The root: name, num_children.
    m.push(0x40 | binary);
    text(&mut m, "schema");
    m.push(0x10 | i32_);
    int(&mut m, 1);
    m.push(0);
    for _ in 0..depth {
        m.push(0x30 | i32_);
        int(&mut m, 1);
        m.push(0x10 | binary);
        text(&mut m, "a");
        m.push(0x10 | i32_);
        int(&mut m, 1);
        m.push(0);
    }
    m.push(0x10 | i32_);
    int(&mut m, 1);
    m.push(0x20 | i32_);
    int(&mut m, 0);
    m.push(0x10 | binary);
    text(&mut m, "a");
    m.push(0);
    m.push(0x10 | i64_);
    int(&mut m, 0);
    m.push(0x10 | list);
    m.push(structure);
    m.push(0);
    let mut file = b"PAR1".to_vec();
    file.extend_from_slice(&m);
    file.extend_from_slice(&(m.len() as u32).to_le_bytes());
    file.extend_from_slice(b"PAR1");
    file
}
