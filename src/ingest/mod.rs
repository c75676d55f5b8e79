//! The ingest engine: stream an HTTP(S) source into one S3 object by multipart upload, with memory
//! bounded by `part size x (concurrency + 2)`, parts uploaded while the download goes on, a SHA-256
//! computed on the way, and the upload aborted on any failure so no incomplete upload is left.
//! No Kubernetes types: the controller and the CLI both drive it.

pub mod budget;
pub mod checksum;
mod pipeline;
pub mod plan;
pub mod source;

use std::collections::BTreeMap;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{Tag, Tagging};
use thiserror::Error;
use tokio::sync::watch;

pub use crate::floor::ThroughputFloor;
pub use budget::{InsufficientMemory, MemoryBudget, Reservation};
pub use checksum::{HashState, ResumableSha256};
pub use plan::{PartSchedule, PartSize, PlanError};

pub use source::{ResumeAt, SourceConfig, SourceReader};

use crate::address::ForbiddenAddress;
use crate::s3::{HeldPart, MultipartWriter, NewObject};
use pipeline::{Pipeline, Start};

/// Why an ingest failed. `reason()` is the status condition reason a user sees.
#[derive(Debug, Error)]
pub enum IngestError {
    /// The source URL, a header or the CA bundle cannot be used (also a scheme other than http(s)).
    #[error("invalid source: {0}")]
    InvalidSource(String),
    /// The source or the S3 endpoint resolves to an address the policy refuses.
    #[error("forbidden source address: {0}")]
    ForbiddenAddress(ForbiddenAddress),
    /// The source answered 404 or 410.
    #[error("source not found: {0}")]
    SourceNotFound(String),
    /// The source answered 401 or 403.
    #[error("source refused access: {0}")]
    SourceAccessDenied(String),
    /// The source answered another status that retrying will not change (400, 416, ...).
    #[error("source refused the request: {0}")]
    SourceRejected(String),
    /// The source could not be reached, or kept failing (5xx, 429, drops), after every attempt.
    #[error("source unavailable: {0}")]
    SourceUnavailable(String),
    /// The source sent its response head or body slower than the throughput floor.
    #[error("source too slow: {0}")]
    SourceStalled(String),
    /// The source's TLS certificate is not signed by a CA s3flow trusts.
    #[error("the source's TLS certificate is not trusted (add its CA with a CA bundle): {0}")]
    SourceCertificateRejected(String),
    /// The source changed while it was read: a resumed read no longer matches its validator.
    #[error("source changed: {0}")]
    SourceChanged(String),
    /// The source's length is not `expectedSize`, or not the length it announced.
    #[error("size mismatch: {0}")]
    SizeMismatch(String),
    /// The source's bytes do not hash to `expectedSha256` (the upload is aborted).
    #[error("checksum mismatch: expected sha256 {expected}, the source's bytes have {actual}")]
    ChecksumMismatch {
        /// The SHA-256 the request expected, lowercase hex.
        expected: String,
        /// The SHA-256 of the bytes the source sent, lowercase hex.
        actual: String,
    },
    /// The part size, or the source's length, does not fit S3's multipart limits.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// An object is already at the destination and `overwrite` is off.
    #[error("s3://{bucket}/{key} already exists; set overwrite to replace it")]
    ObjectExists {
        /// The destination bucket.
        bucket: String,
        /// The destination key.
        key: String,
    },
    /// The destination bucket does not exist.
    #[error("bucket not found: {0}")]
    BucketNotFound(String),
    /// S3 refused the credentials or the request.
    #[error("S3 denied access: {0}")]
    AccessDenied(String),
    /// Any other S3 failure (5xx after the SDK's retries, a part of a resumed upload missing).
    #[error("S3 error: {0}")]
    S3(String),
    /// A part's upload took longer than its bytes at the throughput floor allow.
    #[error("the S3 endpoint took in the upload too slowly: {0}")]
    DestinationStalled(String),
    /// The caller could not record the upload id (the upload was aborted, so none is left).
    #[error("the upload id could not be recorded, so the upload was aborted: {0}")]
    UploadNotRecorded(String),
    /// The part buffers do not fit in one ingest's share of the memory budget.
    #[error(transparent)]
    InsufficientMemory(#[from] InsufficientMemory),
}

impl IngestError {
    /// The reason of the `Stalled`/`Ready` conditions, CamelCase as Kubernetes reasons are.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidSource(_) => "InvalidSource",
            Self::ForbiddenAddress(_) => "ForbiddenAddress",
            Self::SourceNotFound(_) => "SourceNotFound",
            Self::SourceAccessDenied(_) => "SourceAccessDenied",
            Self::SourceRejected(_) => "SourceRejected",
            Self::SourceUnavailable(_) => "SourceUnavailable",
            Self::SourceStalled(_) => "SourceStalled",
            Self::SourceCertificateRejected(_) => "SourceCertificateRejected",
            Self::SourceChanged(_) => "SourceChanged",
            Self::SizeMismatch(_) => "SizeMismatch",
            Self::ChecksumMismatch { .. } => "ChecksumMismatch",
            Self::Plan(PlanError::ObjectTooLarge { .. }) => "ObjectTooLarge",
            Self::Plan(_) => "InvalidPartSize",
            Self::ObjectExists { .. } => "ObjectExists",
            Self::BucketNotFound(_) => "BucketNotFound",
            Self::AccessDenied(_) => "AccessDenied",
            Self::S3(_) => "S3Error",
            Self::DestinationStalled(_) => "DestinationStalled",
            Self::UploadNotRecorded(_) => "UploadNotRecorded",
            Self::InsufficientMemory(_) => "InsufficientMemory",
        }
    }
}

/// Maps an S3 SDK error to the engine's error, by the service's error code.
fn s3_error<E>(context: &str, error: SdkError<E, HttpResponse>) -> IngestError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    classify(crate::s3::ServiceFailure::of(context, error))
}

/// The engine's error for a failed S3 request.
fn classify(failure: crate::s3::ServiceFailure) -> IngestError {
    if let Some(forbidden) = failure.forbidden {
        return IngestError::ForbiddenAddress(forbidden);
    }
    match failure.code.as_str() {
        "NoSuchBucket" => IngestError::BucketNotFound(failure.message),
        _ if failure.is_access_denied() => IngestError::AccessDenied(failure.to_string()),
        _ => IngestError::S3(failure.to_string()),
    }
}

/// What to copy where.
#[derive(Clone, Debug)]
pub struct IngestRequest {
    /// Where to read the bytes from, and how.
    pub source: SourceConfig,
    /// The source's length in bytes, which it must have; also sizes parts before it answers.
    pub expected_size: Option<u64>,
    /// Lowercase hex.
    pub expected_sha256: Option<String>,
    /// The destination bucket.
    pub bucket: String,
    /// The destination key.
    pub key: String,
    /// Content-Type of the object; `None` takes the source's.
    pub content_type: Option<String>,
    /// S3 storage class of the object (`STANDARD_IA`, ...); `None` is the bucket's default.
    pub storage_class: Option<String>,
    /// Replace an object already at the key; otherwise that fails as `ObjectExists`.
    pub overwrite: bool,
    /// Bytes per part, or `auto`.
    pub part_size: PartSize,
    /// Parts uploaded at once (0 counts as 1).
    pub concurrency: usize,
}

impl IngestRequest {
    /// Part buffers alive at once: `concurrency` uploading, one filling, one waiting for a slot.
    pub fn buffers(&self) -> u64 {
        self.concurrency.max(1) as u64 + 2
    }

    /// Memory to reserve before the transfer starts, from what is known before the source
    /// answers (`known_length`: a resumed upload's length). The transfer reserves more if the
    /// source's length asks for larger parts.
    pub fn initial_memory(&self, known_length: Option<u64>) -> u64 {
        PartSchedule::new(self.part_size, known_length.or(self.expected_size))
            .map_or(0, |schedule| schedule.size(0) * self.buffers())
    }
}

/// What the engine records, through its caller, before it acts: a restart reads it back.
pub trait UploadLog {
    /// The multipart upload exists: record its id before any part is sent (an error aborts it).
    fn started(&mut self, upload_id: String) -> impl Future<Output = Result<(), String>> + Send;
    /// Every part is in: record what the completed object will be before completing it, so that
    /// a restart after CompleteMultipartUpload recognises the object as this upload's.
    fn completing(&mut self, completion: Completion) -> impl Future<Output = ()> + Send;
}

/// A log that records nothing: one run on one machine (the CLI).
pub struct NoLog;

impl UploadLog for NoLog {
    async fn started(&mut self, _: String) -> Result<(), String> {
        Ok(())
    }

    async fn completing(&mut self, _: Completion) {}
}

/// The object a multipart upload is about to complete into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The ETag S3 gives the completed object (computed from the parts' ETags), when the parts'
    /// ETags are MD5s (not with SSE-KMS or SSE-C).
    pub etag: Option<String>,
    /// SHA-256 of the whole body, lowercase hex.
    pub sha256: String,
    /// Bytes of the whole body.
    pub size: u64,
}

/// Progress, counted as S3 acknowledges parts (`bytes_committed`) and as the source is read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The multipart upload's id, once it exists.
    pub upload_id: Option<String>,
    /// The source's length, when it announced one.
    pub total_bytes: Option<u64>,
    /// Bytes of the source read so far, counted from its start (a resumed run's included).
    pub bytes_read: u64,
    /// Bytes in parts S3 has acknowledged.
    pub bytes_committed: u64,
    /// Parts the upload will have, when the source's length is known.
    pub parts_total: Option<u32>,
    /// Parts S3 has acknowledged.
    pub parts_committed: u32,
    /// Size of the first part in bytes (later parts grow when the length is unknown).
    pub part_size: u64,
    /// The source's ETag or Last-Modified, which a resumed read must match.
    pub validator: Option<String>,
    /// The SHA-256 state after the latest whole part read: where a restart can resume hashing.
    pub checkpoint: Option<HashState>,
    /// Where this run resumed an earlier one's upload, in bytes of the source.
    pub resumed_at: Option<u64>,
}

/// An earlier run's upload to continue: its id and what it had read (from its last progress).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    /// The earlier run's multipart upload.
    pub upload_id: String,
    /// The source's ETag or Last-Modified the earlier run read; a changed source starts afresh.
    pub validator: String,
    /// The source's length as the earlier run read it.
    pub total_bytes: u64,
    /// The hash state after the earlier run's last whole part: hashing resumes from it.
    pub checkpoint: HashState,
}

/// A finished ingest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes in the object.
    pub size: u64,
    /// SHA-256 of the whole object, lowercase hex.
    pub sha256: String,
    /// The completed object's ETag, when S3 returned one.
    pub etag: Option<String>,
    /// Parts the object was uploaded in.
    pub parts: u32,
    /// Times the source connection was resumed by Range.
    pub source_resumes: u32,
    /// Where an earlier run's upload was resumed, in bytes of the source.
    pub resumed_at: Option<u64>,
    /// Why the checksum could not be recorded as the object's `sha256` tag, if it could not.
    pub tag_error: Option<String>,
}

/// Streams the source into `s3://bucket/key`. `log.started` runs once the multipart upload exists
/// and before any part is sent (the controller writes it to status, so a restart or a deletion can
/// abort it). With `resume`, an earlier run's upload continues from the parts S3 holds when the
/// source is unchanged, and is aborted for a clean start otherwise. Part buffers stay within
/// `memory`, which grows (waiting for the budget) when the parts must be larger. On any failure
/// the upload is aborted before the error returns.
pub async fn ingest(
    s3: &Client,
    request: &IngestRequest,
    progress: &watch::Sender<Progress>,
    resume: Option<Resume>,
    memory: &mut Reservation,
    log: &mut impl UploadLog,
) -> Result<Outcome, IngestError> {
    let (bucket, key) = (request.bucket.as_str(), request.key.as_str());
    // A refused source fails before anything is asked of S3.
    source::check_source_url(&request.source)?;
    let earlier = resume
        .as_ref()
        .map(|r| MultipartWriter::of(s3, bucket, key, &r.upload_id));
    let start = match (prepare(s3, request, resume.as_ref()).await, &earlier) {
        (Ok(Some(start)), _) => start,
        (Ok(None), earlier) => {
            if let Some(earlier) = earlier {
                earlier.abort().await.map_err(classify)?;
            }
            fresh(s3, request).await?
        }
        (Err(e), earlier) => {
            if let Some(earlier) = earlier {
                let _ = earlier.abort().await;
            }
            return Err(e);
        }
    };
    let upload_id = start.writer.upload_id().to_string();
    if let Err(e) = log.started(upload_id).await {
        abort_logged(&start.writer).await;
        return Err(IngestError::UploadNotRecorded(e));
    }
    let mut pipeline = Pipeline::new(request, progress, start)?;
    let result = pipeline.run(memory, log).await;
    if result.is_err() {
        pipeline.stop().await;
        abort_logged(pipeline.writer()).await;
    }
    result
}

/// Aborts a failed transfer's upload; a refusal is logged (the transfer's own error is the one
/// returned), so that an upload left behind can be traced.
async fn abort_logged(writer: &MultipartWriter) {
    if let Err(e) = writer.abort().await {
        tracing::warn!(upload_id = writer.upload_id(), error = %crate::redact::Redacted(&e), "aborting a failed transfer's upload");
    }
}

/// Refuses to clobber an existing object unless overwriting is allowed.
async fn check_destination(s3: &Client, request: &IngestRequest) -> Result<(), IngestError> {
    if request.overwrite {
        return Ok(());
    }
    match s3
        .head_object()
        .bucket(&request.bucket)
        .key(&request.key)
        .send()
        .await
    {
        Ok(_) => Err(IngestError::ObjectExists {
            bucket: request.bucket.clone(),
            key: request.key.clone(),
        }),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(()),
        Err(e) => Err(s3_error("checking the destination", e)),
    }
}

/// A new upload, reading the source from byte 0.
async fn fresh(s3: &Client, request: &IngestRequest) -> Result<Start, IngestError> {
    check_destination(s3, request).await?;
    let reader = SourceReader::open(&request.source, None).await?;
    let length = reader.info.length;
    if let (Some(expected), Some(length)) = (request.expected_size, length)
        && expected != length
    {
        return Err(IngestError::SizeMismatch(format!(
            "expectedSize is {expected} bytes, the source announces {length}"
        )));
    }
    let schedule = PartSchedule::new(request.part_size, length.or(request.expected_size))?;
    let object = NewObject {
        content_type: request
            .content_type
            .clone()
            .or_else(|| reader.info.content_type.clone()),
        storage_class: request.storage_class.clone(),
        // Verified before the upload completes, so the metadata is true whenever the object exists.
        metadata: request
            .expected_sha256
            .iter()
            .map(|sha| ("sha256".to_string(), sha.clone()))
            .collect(),
    };
    let writer = MultipartWriter::create(s3, &request.bucket, &request.key, &object)
        .await
        .map_err(classify)?;
    // Every upload an ingest starts is logged: one left behind can be traced to who made it.
    tracing::info!(
        bucket = request.bucket,
        key = request.key,
        upload_id = writer.upload_id(),
        "created a multipart upload"
    );
    Ok(Start {
        writer,
        schedule,
        reader,
        index: 0,
        hasher: ResumableSha256::default(),
        held: BTreeMap::new(),
    })
}

/// The earlier upload to continue, or `None` when it cannot be (gone, parts that do not fit, or a
/// changed source): then the caller aborts it and starts fresh.
async fn prepare(
    s3: &Client,
    request: &IngestRequest,
    resume: Option<&Resume>,
) -> Result<Option<Start>, IngestError> {
    let Some(resume) = resume else {
        return Ok(None);
    };
    check_destination(s3, request).await?;
    let Ok(schedule) = PartSchedule::new(request.part_size, Some(resume.total_bytes)) else {
        return Ok(None);
    };
    let writer = MultipartWriter::of(s3, &request.bucket, &request.key, &resume.upload_id);
    let Some(held) = writer.held_parts().await.map_err(classify)? else {
        return Ok(None);
    };
    let held: BTreeMap<i32, HeldPart> = held.into_iter().map(|p| (p.number, p)).collect();
    let sizes = held.iter().map(|(n, p)| (*n, p.size)).collect();
    let Some(index) = plan::resume_index(
        &schedule,
        resume.total_bytes,
        resume.checkpoint.length,
        &sizes,
    ) else {
        return Ok(None);
    };
    let at = ResumeAt {
        offset: schedule.offset(index),
        validator: resume.validator.clone(),
        length: resume.total_bytes,
    };
    let reader = match SourceReader::open(&request.source, Some(&at)).await {
        Ok(reader) => reader,
        Err(IngestError::SourceChanged(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    // Parts from the resume point on are read again; S3's copies of them are replaced or reused.
    Ok(Some(Start {
        writer,
        schedule,
        reader,
        index,
        hasher: ResumableSha256::resume(resume.checkpoint),
        held,
    }))
}

/// Records the body's SHA-256 as the object's `sha256` tag.
async fn tag_sha256(s3: &Client, bucket: &str, key: &str, sha256: &str) -> Result<(), IngestError> {
    let tag = Tag::builder()
        .key("sha256")
        .value(sha256)
        .build()
        .and_then(|tag| Tagging::builder().tag_set(tag).build())
        .map_err(|e| IngestError::S3(format!("building the sha256 tag: {e}")))?;
    s3.put_object_tagging()
        .bucket(bucket)
        .key(key)
        .tagging(tag)
        .send()
        .await
        .map_err(|e| s3_error("tagging the object with its sha256", e))?;
    Ok(())
}

/// Whether an upload that a restart found gone completed into the object now at the key: the
/// object's ETag is the one recorded before completing, or its `sha256` tag the recorded hash.
/// Returns the object's size and ETag when it did (tagging it if the tag was not written yet).
pub async fn completed_earlier(
    s3: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    completion: &Completion,
) -> Result<Option<(u64, Option<String>)>, IngestError> {
    let writer = MultipartWriter::of(s3, bucket, key, upload_id);
    if writer.held_parts().await.map_err(classify)?.is_some() {
        return Ok(None);
    }
    let head = match s3.head_object().bucket(bucket).key(key).send().await {
        Ok(head) => head,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => return Ok(None),
        Err(e) => return Err(s3_error("checking the destination", e)),
    };
    let size = head.content_length().unwrap_or_default().max(0) as u64;
    let etag = head.e_tag().map(str::to_string);
    if completion.etag.is_some() && etag == completion.etag && size == completion.size {
        if let Err(e) = tag_sha256(s3, bucket, key, &completion.sha256).await {
            tracing::warn!(error = %crate::redact::Redacted(&e), "tagging a completed object");
        }
        return Ok(Some((size, etag)));
    }
    let tags = s3
        .get_object_tagging()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| s3_error("reading the destination's tags", e))?;
    let tagged = tags
        .tag_set()
        .iter()
        .any(|tag| tag.key() == "sha256" && tag.value() == completion.sha256);
    Ok((tagged && size == completion.size).then_some((size, etag)))
}

/// Aborts a multipart upload by id and checks that it is gone (see [`crate::s3::abort_upload`]).
pub async fn abort_upload(
    s3: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<(), IngestError> {
    crate::s3::abort_upload(s3, bucket, key, upload_id)
        .await
        .map_err(classify)
}
