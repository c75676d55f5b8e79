//! Reading objects: byte ranges of one version (pinned with If-Match) that resume from the next
//! byte when a connection drops mid-body or stalls, and small whole objects (reports, records)
//! read with a size bound.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::{ServiceFailure, backoff};
use crate::floor::{FloorMeter, ThroughputFloor};

/// Drops and stalls a range read survives before it fails.
const ATTEMPTS: u32 = 5;

/// The floor under object bodies unless [`set_read_floor`] sets another: 1 KiB per second of
/// waiting over each minute of it; a body that sends nothing for a window counts as dropped.
pub const DEFAULT_READ_FLOOR: ThroughputFloor = ThroughputFloor {
    min_bytes_per_second: 1024,
    window: Duration::from_secs(60),
};

static READ_FLOOR: OnceLock<ThroughputFloor> = OnceLock::new();

/// Sets the floor under every object body this process reads (once, at its start): an endpoint
/// that drips bytes fails the read instead of holding it (and, in the operator, a reconcile).
pub fn set_read_floor(floor: ThroughputFloor) {
    let _ = READ_FLOOR.set(floor);
}

fn read_floor() -> ThroughputFloor {
    READ_FLOOR.get().copied().unwrap_or(DEFAULT_READ_FLOOR)
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadFailure {
    /// S3 refused the request (or never answered): its failure, to classify by code.
    #[error(transparent)]
    Request(ServiceFailure),
    /// The body kept breaking off.
    #[error("{context} at byte {offset}: {source}")]
    Broken {
        /// What was being read (`GET s3://bucket/key`).
        context: String,
        /// The byte at which the body broke off for the last time.
        offset: u64,
        /// Why it broke off the last time.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The object is larger than the caller takes.
    #[error("{context} is larger than {limit} bytes")]
    TooLarge {
        /// What was being read.
        context: String,
        /// Most bytes the caller takes.
        limit: usize,
    },
    /// The body came slower than the floor allows.
    #[error("{context}: {stalled}")]
    Stalled {
        /// What was being read.
        context: String,
        /// What the body brought over the window, and the floor.
        stalled: crate::floor::Stalled,
    },
}

/// The bytes `[start, end)` of an object, as they arrive.
pub struct RangeStream {
    s3: Client,
    bucket: String,
    key: String,
    /// The version every request must find (If-Match).
    etag: Option<String>,
    next: u64,
    end: u64,
    body: Option<ByteStream>,
    failures: u32,
    /// The body's throughput, against the floor.
    meter: FloorMeter,
}

impl RangeStream {
    /// Bytes `[start, end)` of `bucket/key`, of the version `etag` when given (If-Match).
    /// Nothing is requested before the first read.
    pub fn new(
        s3: &Client,
        bucket: &str,
        key: &str,
        etag: Option<&str>,
        (start, end): (u64, u64),
    ) -> RangeStream {
        RangeStream {
            s3: s3.clone(),
            bucket: bucket.into(),
            key: key.into(),
            etag: etag.map(String::from),
            next: start,
            end,
            body: None,
            failures: 0,
            meter: FloorMeter::new(read_floor()),
        }
    }

    fn context(&self) -> String {
        format!("GET s3://{}/{}", self.bucket, self.key)
    }

    /// The next bytes of the range, `None` after its end. A broken or stalled body is resumed
    /// from the next byte with the same If-Match.
    pub async fn next(&mut self) -> Option<Result<Bytes, ReadFailure>> {
        while self.next < self.end {
            let Some(body) = &mut self.body else {
                match self.request().await {
                    Ok(body) => self.body = Some(body),
                    Err(e) => return Some(Err(e)),
                }
                continue;
            };
            let stall = self.meter.window();
            let waiting = Instant::now();
            let broke: Box<dyn std::error::Error + Send + Sync> =
                match tokio::time::timeout(stall, body.next()).await {
                    Ok(Some(Ok(bytes))) => {
                        if let Err(stalled) =
                            self.meter.record(waiting.elapsed(), bytes.len() as u64)
                        {
                            self.body = None;
                            return Some(Err(ReadFailure::Stalled {
                                context: self.context(),
                                stalled,
                            }));
                        }
                        self.next += bytes.len() as u64;
                        self.failures = 0;
                        return Some(Ok(bytes));
                    }
                    Ok(Some(Err(e))) => Box::new(e),
                    Ok(None) => "the body ended before the range did".into(),
                    Err(_) => format!("no bytes for {} s", stall.as_secs()).into(),
                };
            self.body = None;
            self.failures += 1;
            if self.failures >= ATTEMPTS {
                return Some(Err(ReadFailure::Broken {
                    context: self.context(),
                    offset: self.next,
                    source: broke,
                }));
            }
            tokio::time::sleep(backoff(self.failures)).await;
        }
        None
    }

    /// A GET of what is left of the range; transient refusals are tried again.
    async fn request(&mut self) -> Result<ByteStream, ReadFailure> {
        let range = format!("bytes={}-{}", self.next, self.end - 1);
        loop {
            let sent = self
                .s3
                .get_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .range(&range)
                .set_if_match(self.etag.clone())
                .send()
                .await;
            let failure = match sent {
                Ok(object) => return Ok(object.body),
                Err(e) => ServiceFailure::of(&format!("{} {range}", self.context()), e),
            };
            self.failures += 1;
            if !failure.is_transient() || self.failures >= ATTEMPTS {
                return Err(ReadFailure::Request(failure));
            }
            tokio::time::sleep(backoff(self.failures)).await;
        }
    }

    /// All of the range as its buffers arrived (no copy), at most `limit` bytes.
    pub async fn collect_frames(mut self, limit: usize) -> Result<Vec<Bytes>, ReadFailure> {
        let (mut frames, mut length) = (Vec::new(), 0usize);
        while let Some(chunk) = self.next().await {
            let chunk = chunk?;
            length += chunk.len();
            if length > limit {
                return Err(ReadFailure::TooLarge {
                    context: self.context(),
                    limit,
                });
            }
            frames.push(chunk);
        }
        Ok(frames)
    }

    /// All of the range, at most `limit` bytes.
    pub async fn collect(mut self, limit: usize) -> Result<Vec<u8>, ReadFailure> {
        // Sized once: grown by doubling, a column chunk of a few MiB was copied and faulted in
        // again at every step.
        let left = usize::try_from(self.end.saturating_sub(self.next)).unwrap_or(usize::MAX);
        let mut bytes = Vec::with_capacity(left.min(limit));
        while let Some(chunk) = self.next().await {
            let chunk = chunk?;
            if bytes.len() + chunk.len() > limit {
                return Err(ReadFailure::TooLarge {
                    context: self.context(),
                    limit,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

/// What a HEAD says of an object.
#[derive(Clone, Debug)]
pub struct ObjectHead {
    /// Its size in bytes.
    pub size: u64,
    /// Its ETag, quoted as S3 gives it.
    pub etag: Option<String>,
    /// When it was last written.
    pub modified: Option<aws_sdk_s3::primitives::DateTime>,
}

/// An object's size and ETag (the version a [`RangeStream`] pins).
pub async fn object_version(
    s3: &Client,
    bucket: &str,
    key: &str,
) -> Result<(u64, Option<String>), ReadFailure> {
    object_head(s3, bucket, key)
        .await
        .map(|head| (head.size, head.etag))
}

/// An object's size, ETag and last-modified time, by HEAD.
pub async fn object_head(s3: &Client, bucket: &str, key: &str) -> Result<ObjectHead, ReadFailure> {
    let head = s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| {
            ReadFailure::Request(ServiceFailure::of(&format!("HEAD s3://{bucket}/{key}"), e))
        })?;
    Ok(ObjectHead {
        size: u64::try_from(head.content_length().unwrap_or_default()).unwrap_or_default(),
        etag: head.e_tag,
        modified: head.last_modified,
    })
}

/// A whole object of at most `limit` bytes (a report, a record, an upload record): its size
/// from a HEAD, then its bytes as one resumable range of that version.
pub async fn read_object(
    s3: &Client,
    bucket: &str,
    key: &str,
    limit: usize,
) -> Result<Vec<u8>, ReadFailure> {
    let (size, etag) = object_version(s3, bucket, key).await?;
    if size > limit as u64 {
        return Err(ReadFailure::TooLarge {
            context: format!("s3://{bucket}/{key}"),
            limit,
        });
    }
    RangeStream::new(s3, bucket, key, etag.as_deref(), (0, size))
        .collect(limit)
        .await
}
