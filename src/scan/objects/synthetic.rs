//! A bucket of `count` synthetic objects on loopback, for the tests that plan many more objects
//! than a test could write: `d/0000000.jsonl` onwards, each the same JSON line, served to
//! ListObjectsV2 (with `StartAfter` and `MaxKeys`), HEAD and ranged GET (counted); a PUT is kept
//! only as its size. Enough of S3 for the listing and planning paths, nothing more.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Every object's body.
pub(crate) const BODY: &[u8] = b"{\"a\":1}\n";

/// Every object's ETag.
const ETAG: &str = "\"5d41402abc4b2a76b9719d911017c592\"";

/// The synthetic bucket's server.
pub(crate) struct SyntheticStore {
    /// `http://127.0.0.1:<port>`.
    pub(crate) endpoint: String,
    /// The sizes of the objects PUT, in order.
    pub(crate) puts: Arc<Mutex<Vec<usize>>>,
    /// The GETs of objects so far (listings aside).
    pub(crate) gets: Arc<AtomicU64>,
    /// The object (by number) that changed since it was listed: its GETs are refused (412), as
    /// S3 refuses a read pinned to an ETag the object no longer has. None: `u64::MAX`.
    pub(crate) changed: Arc<AtomicU64>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for SyntheticStore {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The key of object `n`.
pub(crate) fn key(n: u64) -> String {
    format!("d/{n:07}.jsonl")
}

impl SyntheticStore {
    /// Serves `count` objects on a free loopback port.
    pub(crate) async fn start(count: u64) -> SyntheticStore {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let endpoint = format!("http://{}", listener.local_addr().expect("its address"));
        let puts = Arc::new(Mutex::new(Vec::new()));
        let gets = Arc::new(AtomicU64::new(0));
        let changed = Arc::new(AtomicU64::new(u64::MAX));
        let (kept, counted, replaced) = (puts.clone(), gets.clone(), changed.clone());
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (puts, gets, replaced) = (kept.clone(), counted.clone(), replaced.clone());
                let service = service_fn(move |request| {
                    let changed = replaced.load(Ordering::Relaxed);
                    respond(request, (count, changed), puts.clone(), gets.clone())
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        SyntheticStore {
            endpoint,
            puts,
            gets,
            changed,
            server,
        }
    }

    /// A client of it.
    pub(crate) fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "synthetic",
                "synthetic",
                None,
                None,
                "test",
            ))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }
}

async fn respond(
    request: Request<hyper::body::Incoming>,
    (count, changed): (u64, u64),
    puts: Arc<Mutex<Vec<usize>>>,
    gets: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let response = |status: StatusCode, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("ETag", ETAG)
            .body(Full::new(Bytes::from(body)))
            .expect("a response")
    };
    let ok = match *request.method() {
        Method::GET if param("list-type") == Some("2") => {
            let after = param("start-after")
                .and_then(|key| key.strip_prefix("d/")?.strip_suffix(".jsonl")?.parse().ok())
                .map_or(0, |n: u64| n + 1);
            let max = param("max-keys")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1000u64);
            let end = (after + max).min(count);
            let mut xml = String::from(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                 <ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
            );
            xml.push_str(&format!(
                "<IsTruncated>{}</IsTruncated><KeyCount>{}</KeyCount>",
                end < count,
                end.saturating_sub(after)
            ));
            for n in after..end {
                xml.push_str(&format!(
                    "<Contents><Key>{}</Key><ETag>&quot;{}&quot;</ETag><Size>{}</Size>\
                     <LastModified>2024-06-01T00:00:00.000Z</LastModified></Contents>",
                    key(n),
                    ETAG.trim_matches('"'),
                    BODY.len()
                ));
            }
            xml.push_str("</ListBucketResult>");
            response(StatusCode::OK, xml.into_bytes())
        }
        Method::HEAD => Response::builder()
            .header("ETag", ETAG)
            .header("Content-Length", BODY.len())
            .body(Full::new(Bytes::new()))
            .expect("a response"),
        Method::GET if request.uri().path().ends_with(&key(changed)) => response(
            StatusCode::PRECONDITION_FAILED,
            b"<Error><Code>PreconditionFailed</Code></Error>".to_vec(),
        ),
        Method::GET => {
            gets.fetch_add(1, Ordering::Relaxed);
            let range = request
                .headers()
                .get("range")
                .and_then(|range| range.to_str().ok()?.strip_prefix("bytes="))
                .and_then(|range| {
                    let (start, end) = range.split_once('-')?;
                    Some((start.parse::<usize>().ok()?, end.parse::<usize>().ok()?))
                });
            match range {
                Some((start, end)) => {
                    let end = end.min(BODY.len() - 1);
                    let mut partial =
                        response(StatusCode::PARTIAL_CONTENT, BODY[start..=end].to_vec());
                    partial.headers_mut().insert(
                        "Content-Range",
                        format!("bytes {start}-{end}/{}", BODY.len())
                            .parse()
                            .expect("a header"),
                    );
                    partial
                }
                None => response(StatusCode::OK, BODY.to_vec()),
            }
        }
        Method::PUT => {
            let body = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().len());
            puts.lock().expect("not poisoned").push(body.unwrap_or(0));
            response(StatusCode::OK, Vec::new())
        }
        _ => response(StatusCode::METHOD_NOT_ALLOWED, Vec::new()),
    };
    Ok(ok)
}
