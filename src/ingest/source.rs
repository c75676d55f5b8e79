//! The HTTP(S) source: one GET streamed in order; a dropped connection resumes with a Range request
//! pinned to the first response's validator (If-Range), so a changed source fails instead of mixing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};

use super::IngestError;
use crate::address::{AddressPolicy, ForbiddenAddress, SourceResolver, UrlRefused};
use crate::floor::{FloorMeter, ThroughputFloor};
use crate::redact::url as redact;

/// Headers a Secret may not set: they frame the request, or s3flow sets them itself for ranged,
/// pinned and uncompressed reads.
const RESERVED_HEADERS: [&str; 14] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "expect",
    "range",
    "if-range",
    "if-match",
    "accept-encoding",
    "keep-alive",
    "proxy-connection",
    "trailer",
];

/// Attempts at reaching the source (first request, and each resume) before the transfer fails.
const SOURCE_ATTEMPTS: u32 = 5;

/// What the first response says about the source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceInfo {
    /// Content-Length, when the server sent one.
    pub length: Option<u64>,
    /// Whether the server serves byte ranges (`Accept-Ranges: bytes`).
    pub ranges: bool,
    /// ETag (or Last-Modified) that ranged re-reads must match.
    pub validator: Option<String>,
    /// Content-Type, which the object takes unless the request names one.
    pub content_type: Option<String>,
}

/// Where a resumed read starts, and what the source was when the earlier transfer read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeAt {
    /// Byte of the source the resumed read starts at.
    pub offset: u64,
    /// The ETag or Last-Modified the earlier transfer read; the source must still match it.
    pub validator: String,
    /// The source's length as the earlier transfer read it.
    pub length: u64,
}

/// How to reach the source.
#[derive(Clone)]
pub struct SourceConfig {
    /// The http(s) URL to GET.
    pub url: String,
    /// Sent with every request (for example Authorization); marked sensitive, never logged.
    pub headers: Vec<(String, String)>,
    /// PEM bundle of extra CAs to trust.
    pub ca_bundle: Option<Vec<u8>>,
    /// The addresses the source may resolve to.
    pub policy: Arc<AddressPolicy>,
    /// A read that waits longer than this for the next bytes fails (and resumes when it can).
    pub stall_timeout: Duration,
    /// A source slower than this fails as SourceStalled instead of holding a transfer slot.
    pub floor: ThroughputFloor,
}

impl std::fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = Url::parse(&self.url)
            .map(|u| redact(&u))
            .unwrap_or_default();
        let header_names: Vec<&String> = self.headers.iter().map(|(name, _)| name).collect();
        f.debug_struct("SourceConfig")
            .field("url", &url)
            .field("headers", &header_names)
            .finish_non_exhaustive()
    }
}

/// Where requests go, and the validator ranged re-reads must match.
struct Endpoint {
    client: reqwest::Client,
    url: Url,
    headers: HeaderMap,
    validator: Option<String>,
    floor: ThroughputFloor,
}

/// The source's bytes in order, resuming after dropped connections when the server allows it.
pub struct SourceReader {
    endpoint: Arc<Endpoint>,
    /// What the first response said about the source.
    pub info: SourceInfo,
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    meter: FloorMeter,
    /// Bytes handed out so far.
    pub offset: u64,
    /// Requests made after the first one, to resume.
    pub resumes: u32,
}

/// Checks the source URL without any network access: its scheme, and its host when it is an address.
pub fn check_source_url(config: &SourceConfig) -> Result<(), IngestError> {
    let url = Url::parse(&config.url)
        .map_err(|e| IngestError::InvalidSource(format!("{:?} is not a URL: {e}", config.url)))?;
    check_url(&url, &config.policy)
}

fn check_url(url: &Url, policy: &AddressPolicy) -> Result<(), IngestError> {
    policy.check_url(url).map_err(|refused| match refused {
        UrlRefused::Address(forbidden) => IngestError::ForbiddenAddress(forbidden),
        other => IngestError::InvalidSource(format!("{}: {other}", redact(url))),
    })
}

/// Maps a request failure to the engine's error, finding a refused address among its sources.
/// reqwest's own text names the URL with its query: it is left out.
fn request_error(url: &Url, error: reqwest::Error) -> IngestError {
    let error = error.without_url();
    if let Some(forbidden) = ForbiddenAddress::find(&error) {
        return IngestError::ForbiddenAddress(forbidden);
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    let mut certificate_rejected = false;
    while let Some(e) = source {
        if let Some(IngestError::InvalidSource(message)) = e.downcast_ref::<IngestError>() {
            return IngestError::InvalidSource(message.clone());
        }
        certificate_rejected |= matches!(tls_error(e), Some(rustls::Error::InvalidCertificate(_)));
        source = e.source();
    }
    let text = chain(&error);
    if certificate_rejected {
        return IngestError::SourceCertificateRejected(format!("{}: {text}", redact(url)));
    }
    IngestError::SourceUnavailable(format!("{}: {text}", redact(url)))
}

/// The TLS error `e` is, or carries: rustls errors reach reqwest inside `io::Error`s (nested),
/// whose `source()` skips the error they wrap.
fn tls_error<'a>(mut e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    loop {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        e = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// The source's headers, from its Secret: valid, and none s3flow sets or that frames a request.
fn source_headers(config: &SourceConfig) -> Result<HeaderMap, IngestError> {
    let mut headers = HeaderMap::new();
    for (name, value) in &config.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            IngestError::InvalidSource(format!("{name:?} is not an HTTP header name"))
        })?;
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(IngestError::InvalidSource(format!(
                "the source headers may not set {name}: s3flow sets it, or it frames the request"
            )));
        }
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            IngestError::InvalidSource(format!("the value of header {name} is not valid"))
        })?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok(headers)
}

/// An HTTP client that dials only addresses the policy allows (redirects included), trusts the
/// CA bundle, and with custom headers follows redirects only within the first origin.
fn http_client(
    config: &SourceConfig,
    custom_headers: bool,
) -> Result<reqwest::Client, IngestError> {
    let policy = config.policy.clone();
    let redirect_policy = policy.clone();
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .dns_resolver(Arc::new(SourceResolver(policy)))
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(config.stall_timeout)
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 10 {
                return attempt.error("more than 10 redirects");
            }
            // reqwest drops Authorization across hosts, but not other headers from the Secret:
            // they follow a redirect only to the same origin (scheme, host and port).
            let first = attempt.previous().first().map(origin);
            if custom_headers && Some(origin(attempt.url())) != first {
                let to = redact(attempt.url());
                return attempt.error(IngestError::InvalidSource(format!(
                    "refusing to send the source's headers along a redirect to another origin ({to})"
                )));
            }
            match check_url(attempt.url(), &redirect_policy) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        }));
    if let Some(pem) = &config.ca_bundle {
        for cert in reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| IngestError::InvalidSource(format!("the CA bundle is not PEM: {e}")))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| IngestError::InvalidSource(format!("HTTP client: {e}")))
}

/// What the first answer says of the source; when resuming, what the earlier transfer recorded
/// (the 206 for the pinned validator proves it is the same source).
fn source_info(response: &reqwest::Response, at: Option<&ResumeAt>) -> SourceInfo {
    let get = |name: header::HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    match at {
        Some(at) => SourceInfo {
            length: Some(at.length),
            ranges: true,
            validator: Some(at.validator.clone()),
            content_type: get(header::CONTENT_TYPE),
        },
        None => SourceInfo {
            length: response
                .content_length()
                .filter(|_| response.headers().contains_key(header::CONTENT_LENGTH)),
            ranges: get(header::ACCEPT_RANGES).is_some_and(|v| v.eq_ignore_ascii_case("bytes")),
            validator: get(header::ETAG)
                .filter(|e| !e.starts_with("W/"))
                .or_else(|| get(header::LAST_MODIFIED)),
            content_type: get(header::CONTENT_TYPE),
        },
    }
}

impl SourceReader {
    /// Opens the source from its start, or from `at` when resuming an earlier transfer: sends the
    /// first GET and checks its answer.
    pub async fn open(config: &SourceConfig, at: Option<&ResumeAt>) -> Result<Self, IngestError> {
        let url = Url::parse(&config.url).map_err(|e| {
            IngestError::InvalidSource(format!("{:?} is not a URL: {e}", config.url))
        })?;
        check_url(&url, &config.policy)?;
        let headers = source_headers(config)?;
        let client = http_client(config, !headers.is_empty())?;
        let mut endpoint = Endpoint {
            client,
            url,
            headers,
            validator: at.map(|a| a.validator.clone()),
            floor: config.floor,
        };
        let response = endpoint.request(at.map(|a| a.offset)).await?;
        if let Some(at) = at {
            check_content_range(&response, at.offset, Some(at.length))?;
        }
        let info = source_info(&response, at);
        endpoint.validator = info.validator.clone();
        Ok(Self {
            endpoint: Arc::new(endpoint),
            info,
            body: response.bytes_stream().boxed(),
            meter: FloorMeter::new(config.floor),
            offset: at.map_or(0, |a| a.offset),
            resumes: 0,
        })
    }

    /// The next bytes, or `None` at the end. A dropped connection resumes by Range when the source
    /// has ranges and a validator; otherwise it fails the transfer.
    pub async fn next(&mut self) -> Result<Option<Bytes>, IngestError> {
        loop {
            let waiting = Instant::now();
            let next = self.body.next().await;
            let brought = match &next {
                Some(Ok(chunk)) => chunk.len() as u64,
                _ => 0,
            };
            self.meter
                .record(waiting.elapsed(), brought)
                .map_err(|stalled| {
                    IngestError::SourceStalled(format!("{}: {stalled}", redact(&self.endpoint.url)))
                })?;
            match next {
                Some(Ok(chunk)) => {
                    self.offset += chunk.len() as u64;
                    return Ok(Some(chunk));
                }
                None => return Ok(None),
                Some(Err(error)) => {
                    let resumable = self.info.ranges && self.info.validator.is_some();
                    if !resumable || self.resumes >= SOURCE_ATTEMPTS {
                        return Err(IngestError::SourceUnavailable(format!(
                            "{} dropped after {} bytes{}: {}",
                            redact(&self.endpoint.url),
                            self.offset,
                            if resumable {
                                ", and resuming failed"
                            } else {
                                " and cannot be resumed (no ranges or validator)"
                            },
                            chain(&error)
                        )));
                    }
                    self.resumes += 1;
                    tokio::time::sleep(crate::s3::backoff(self.resumes)).await;
                    let response = self.endpoint.request(Some(self.offset)).await?;
                    check_content_range(&response, self.offset, self.info.length)?;
                    self.body = response.bytes_stream().boxed();
                }
            }
        }
    }
}

impl Endpoint {
    /// One GET, from `range_start` when resuming, retried with backoff on 5xx and connection errors.
    async fn request(&self, range_start: Option<u64>) -> Result<reqwest::Response, IngestError> {
        self.request_range(range_start.map(|start| (start, None)))
            .await
    }

    /// One GET of `range` (`(start, Some(end))` is inclusive), retried with backoff on 5xx and
    /// connection errors; with a validator, a changed source fails as SourceChanged.
    async fn request_range(
        &self,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<reqwest::Response, IngestError> {
        let range_start = range.map(|(start, _)| start);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .client
                .get(self.url.clone())
                .headers(self.headers.clone())
                .header(header::ACCEPT_ENCODING, "identity");
            if let Some((start, end)) = range {
                let end = end.map(|e| e.to_string()).unwrap_or_default();
                request = request.header(header::RANGE, format!("bytes={start}-{end}"));
                if let Some(validator) = &self.validator {
                    request = request.header(header::IF_RANGE, validator.as_str());
                }
            }
            // The response head has a deadline of its own: a read timeout restarts on every byte,
            // and a head sent a byte at a time would hold a transfer slot for minutes. (The
            // client's read timeout, which also runs until the head, may end it first.)
            let head = self.floor.window;
            let no_head = || {
                IngestError::SourceStalled(format!(
                    "{} sent no complete response head within {} s",
                    redact(&self.url),
                    head.as_secs()
                ))
            };
            let Ok(sent) = tokio::time::timeout(head, request.send()).await else {
                return Err(no_head());
            };
            let failure = match sent {
                Ok(response) => {
                    let status = response.status();
                    let shown = redact(&self.url);
                    match (status, range_start) {
                        (StatusCode::OK, None) | (StatusCode::PARTIAL_CONTENT, Some(_)) => {
                            return Ok(response);
                        }
                        // If-Range did not match: the server sent the whole, changed, representation.
                        (StatusCode::OK, Some(_)) => {
                            return Err(IngestError::SourceChanged(format!(
                                "{shown} changed while it was read (If-Range {} no longer matches)",
                                self.validator.as_deref().unwrap_or("?")
                            )));
                        }
                        (StatusCode::NOT_FOUND | StatusCode::GONE, _) => {
                            return Err(IngestError::SourceNotFound(format!(
                                "{shown} answered {status}"
                            )));
                        }
                        (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => {
                            return Err(IngestError::SourceAccessDenied(format!(
                                "{shown} answered {status}"
                            )));
                        }
                        (s, _) if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                            format!("{shown} answered {status}")
                        }
                        (s, _) => {
                            return Err(IngestError::SourceRejected(format!(
                                "{shown} answered {s}"
                            )));
                        }
                    }
                }
                Err(e) if e.is_timeout() && !e.is_connect() => return Err(no_head()),
                Err(e) => match request_error(&self.url, e) {
                    IngestError::SourceUnavailable(message) => message,
                    other => return Err(other),
                },
            };
            if attempt >= SOURCE_ATTEMPTS {
                return Err(IngestError::SourceUnavailable(failure));
            }
            tokio::time::sleep(crate::s3::backoff(attempt)).await;
        }
    }
}

/// Checks that a 206 starts at `offset` and, when known, that the whole is still `length` bytes.
impl SourceReader {
    /// Closes the streamed response, once the rest is fetched by ranges.
    pub fn close(&mut self) {
        self.body = futures::stream::empty().boxed();
    }

    /// Whether parts can be fetched as independent byte ranges: a known length, `Accept-Ranges:
    /// bytes` and a validator that pins every range to the same version of the source.
    pub fn ranged(&self) -> bool {
        self.info.ranges && self.info.validator.is_some() && self.info.length.is_some()
    }

    /// A fetcher of byte ranges of this source, for parallel downloads.
    pub fn ranges(&self) -> RangeFetcher {
        RangeFetcher {
            endpoint: self.endpoint.clone(),
            length: self.info.length.unwrap_or_default(),
        }
    }
}

/// Fetches byte ranges of one version of a source (pinned with If-Range).
#[derive(Clone)]
pub struct RangeFetcher {
    endpoint: Arc<Endpoint>,
    length: u64,
}

impl RangeFetcher {
    /// Length of the source.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// Bytes `[start, start + len)` into one buffer; a dropped connection continues where it stopped.
    pub async fn fetch(&self, start: u64, len: usize) -> Result<Bytes, IngestError> {
        let mut buffer = bytes::BytesMut::with_capacity(len);
        let mut drops = 0;
        let mut meter = FloorMeter::new(self.endpoint.floor);
        loop {
            let from = start + buffer.len() as u64;
            let end = start + len as u64 - 1;
            let response = self.endpoint.request_range(Some((from, Some(end)))).await?;
            check_content_range(&response, from, Some(self.length))?;
            let mut body = response.bytes_stream();
            loop {
                let waiting = Instant::now();
                let Some(chunk) = body.next().await else {
                    break;
                };
                let brought = chunk.as_ref().map_or(0, |c| c.len() as u64);
                meter
                    .record(waiting.elapsed(), brought)
                    .map_err(|stalled| {
                        IngestError::SourceStalled(format!(
                            "{} at byte {start}: {stalled}",
                            redact(&self.endpoint.url)
                        ))
                    })?;
                match chunk {
                    Ok(chunk) if buffer.len() + chunk.len() <= len => {
                        buffer.extend_from_slice(&chunk)
                    }
                    Ok(_) => {
                        return Err(IngestError::SourceChanged(format!(
                            "{} sent more than the {len} bytes asked for at {start}",
                            redact(&self.endpoint.url)
                        )));
                    }
                    Err(error) => {
                        tracing::debug!(error = %chain(&error), start, "a range read dropped");
                        break;
                    }
                }
            }
            if buffer.len() == len {
                return Ok(buffer.freeze());
            }
            drops += 1;
            if drops >= SOURCE_ATTEMPTS {
                return Err(IngestError::SourceUnavailable(format!(
                    "{} ended the range at {start} early {drops} times",
                    redact(&self.endpoint.url)
                )));
            }
            tokio::time::sleep(crate::s3::backoff(drops)).await;
        }
    }
}

/// Scheme, host and port: headers from a Secret go nowhere else.
fn origin(url: &Url) -> (String, Option<String>, Option<u16>) {
    (
        url.scheme().to_string(),
        url.host_str().map(str::to_string),
        url.port_or_known_default(),
    )
}

fn check_content_range(
    response: &reqwest::Response,
    offset: u64,
    length: Option<u64>,
) -> Result<(), IngestError> {
    let range = response
        .headers()
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let start = range
        .strip_prefix("bytes ")
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.parse::<u64>().ok());
    let total = range.rsplit('/').next().and_then(|t| t.parse::<u64>().ok());
    if start == Some(offset) && (length.is_none() || total == length) {
        Ok(())
    } else {
        Err(IngestError::SourceChanged(format!(
            "a resumed read from byte {offset} got Content-Range {range:?}"
        )))
    }
}
