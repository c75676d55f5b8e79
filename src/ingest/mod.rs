//! The ingest engine: stream an HTTP(S) source into one S3 object by multipart upload, with memory
//! bounded by `part size x (concurrency + 2)`, parts uploaded while the download goes on, a SHA-256
//! computed on the way, and the upload aborted on any failure so no incomplete upload is left.
//! No Kubernetes types: the controller and the CLI both drive it.

pub mod budget;
pub mod checksum;
pub mod floor;
pub mod plan;
pub mod source;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Tag, Tagging};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

pub use budget::{InsufficientMemory, MemoryBudget, Reservation};
pub use checksum::{Checkpoint, ResumableSha256};
pub use floor::ThroughputFloor;
pub use plan::{PartSchedule, PartSize, PlanError};

use crate::address::ForbiddenAddress;
pub use source::{ResumeAt, SourceConfig, SourceReader};

/// Why an ingest failed. `reason()` is the status condition reason a user sees.
#[derive(Debug, Error)]
pub enum IngestError {
    #[error("invalid source: {0}")]
    InvalidSource(String),
    #[error("forbidden source address: {0}")]
    ForbiddenAddress(ForbiddenAddress),
    #[error("source not found: {0}")]
    SourceNotFound(String),
    #[error("source refused access: {0}")]
    SourceAccessDenied(String),
    #[error("source refused the request: {0}")]
    SourceRejected(String),
    #[error("source unavailable: {0}")]
    SourceUnavailable(String),
    #[error("source too slow: {0}")]
    SourceStalled(String),
    #[error("the source's TLS certificate is not trusted (add its CA with a CA bundle): {0}")]
    SourceCertificateRejected(String),
    #[error("source changed: {0}")]
    SourceChanged(String),
    #[error("size mismatch: {0}")]
    SizeMismatch(String),
    #[error("checksum mismatch: expected sha256 {expected}, the source's bytes have {actual}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("s3://{bucket}/{key} already exists; set overwrite to replace it")]
    ObjectExists { bucket: String, key: String },
    #[error("bucket not found: {0}")]
    BucketNotFound(String),
    #[error("S3 denied access: {0}")]
    AccessDenied(String),
    #[error("S3 error: {0}")]
    S3(String),
    #[error("the upload id could not be recorded, so the upload was aborted: {0}")]
    UploadNotRecorded(String),
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

/// Exponential backoff with jitter for retry `attempt` (1-based): 200 ms doubling, at most 10 s,
/// each wait drawn from its upper half so that concurrent retries spread out.
pub fn backoff(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, RandomState};
    let ceiling = (200u64 << attempt.saturating_sub(1).min(10)).min(10_000);
    let jitter = RandomState::new().hash_one(std::time::SystemTime::now()) % (ceiling / 2 + 1);
    Duration::from_millis(ceiling / 2 + jitter)
}

/// What to copy where.
#[derive(Clone, Debug)]
pub struct IngestRequest {
    pub source: SourceConfig,
    pub expected_size: Option<u64>,
    /// Lowercase hex.
    pub expected_sha256: Option<String>,
    pub bucket: String,
    pub key: String,
    pub content_type: Option<String>,
    pub storage_class: Option<String>,
    pub overwrite: bool,
    pub part_size: PartSize,
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
    pub size: u64,
}

/// Progress, counted as S3 acknowledges parts (`bytes_committed`) and as the source is read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub upload_id: Option<String>,
    pub total_bytes: Option<u64>,
    pub bytes_read: u64,
    pub bytes_committed: u64,
    pub parts_total: Option<u32>,
    pub parts_committed: u32,
    pub part_size: u64,
    /// The source's ETag or Last-Modified, which a resumed read must match.
    pub validator: Option<String>,
    /// The SHA-256 state after the latest whole part read: where a restart can resume hashing.
    pub checkpoint: Option<Checkpoint>,
    /// Where this run resumed an earlier one's upload, in bytes of the source.
    pub resumed_at: Option<u64>,
}

/// An earlier run's upload to continue: its id and what it had read (from its last progress).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    pub upload_id: String,
    pub validator: String,
    pub total_bytes: u64,
    pub checkpoint: Checkpoint,
}

/// A finished ingest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub size: u64,
    /// SHA-256 of the whole object, lowercase hex.
    pub sha256: String,
    pub etag: Option<String>,
    pub parts: u32,
    /// Times the source connection was resumed by Range.
    pub source_resumes: u32,
    /// Where an earlier run's upload was resumed, in bytes of the source.
    pub resumed_at: Option<u64>,
    /// Why the checksum could not be recorded as the object's `sha256` tag, if it could not.
    pub tag_error: Option<String>,
}

/// Where a transfer starts: a new upload at byte 0, or an earlier upload at a part it lacks.
struct Start {
    upload_id: String,
    schedule: PartSchedule,
    reader: SourceReader,
    index: u32,
    hasher: ResumableSha256,
    /// Parts S3 already holds, by part number, with their sizes.
    held: BTreeMap<i32, (CompletedPart, u64)>,
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
    let start = match prepare(s3, request, resume.as_ref()).await {
        Ok(Some(start)) => start,
        Ok(None) => {
            if let Some(earlier) = &resume {
                abort_upload(s3, bucket, key, &earlier.upload_id).await?;
            }
            fresh(s3, request).await?
        }
        Err(e) => {
            if let Some(earlier) = &resume {
                let _ = abort_upload(s3, bucket, key, &earlier.upload_id).await;
            }
            return Err(e);
        }
    };
    let upload_id = start.upload_id.clone();
    if let Err(e) = log.started(upload_id.clone()).await {
        let _ = abort_upload(s3, bucket, key, &upload_id).await;
        return Err(IngestError::UploadNotRecorded(e));
    }
    let upload = Upload {
        s3,
        bucket,
        key,
        upload_id: &upload_id,
    };
    let mut parts = JoinSet::new();
    let result = transfer(&upload, request, start, progress, &mut parts, memory, log).await;
    if result.is_err() {
        // No part may still be on its way when the upload is aborted, or it could outlive the abort.
        parts.abort_all();
        while parts.join_next().await.is_some() {}
        let _ = abort_upload(s3, bucket, key, &upload_id).await;
    }
    result
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
    let mut create = s3
        .create_multipart_upload()
        .bucket(&request.bucket)
        .key(&request.key)
        .set_content_type(
            request
                .content_type
                .clone()
                .or_else(|| reader.info.content_type.clone()),
        )
        .set_storage_class(request.storage_class.as_deref().map(Into::into));
    if let Some(sha) = &request.expected_sha256 {
        // Verified before the upload completes, so the metadata is true whenever the object exists.
        create = create.metadata("sha256", sha);
    }
    let upload_id = create
        .send()
        .await
        .map_err(|e| s3_error("starting the multipart upload", e))?
        .upload_id
        .ok_or_else(|| IngestError::S3("CreateMultipartUpload returned no upload id".into()))?;
    Ok(Start {
        upload_id,
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
    let mut held = BTreeMap::new();
    let mut marker = None;
    loop {
        let page = match s3
            .list_parts()
            .bucket(&request.bucket)
            .key(&request.key)
            .upload_id(&resume.upload_id)
            .set_part_number_marker(marker.clone())
            .send()
            .await
        {
            Ok(page) => page,
            Err(e) if e.code() == Some("NoSuchUpload") => return Ok(None),
            Err(e) => return Err(s3_error("listing the parts of the earlier upload", e)),
        };
        for part in page.parts() {
            let (Some(number), Some(size)) = (part.part_number(), part.size()) else {
                continue;
            };
            let completed = CompletedPart::builder()
                .part_number(number)
                .set_e_tag(part.e_tag().map(String::from))
                .build();
            held.insert(number, (completed, size as u64));
        }
        if !page.is_truncated().unwrap_or(false) {
            break;
        }
        marker = page.next_part_number_marker().map(String::from);
    }
    let sizes = held.iter().map(|(n, (_, size))| (*n, *size)).collect();
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
    // Parts from the resume point on are read again; S3's copies of them are replaced or reused below.
    Ok(Some(Start {
        upload_id: resume.upload_id.clone(),
        schedule,
        reader,
        index,
        hasher: ResumableSha256::resume(resume.checkpoint),
        held,
    }))
}

struct Upload<'a> {
    s3: &'a Client,
    bucket: &'a str,
    key: &'a str,
    upload_id: &'a str,
}

async fn transfer(
    upload: &Upload<'_>,
    request: &IngestRequest,
    start: Start,
    progress: &watch::Sender<Progress>,
    parts: &mut JoinSet<Result<CompletedPart, IngestError>>,
    memory: &mut Reservation,
    log: &mut impl UploadLog,
) -> Result<Outcome, IngestError> {
    let Start {
        schedule,
        mut reader,
        index: first,
        mut hasher,
        mut held,
        ..
    } = start;
    let length = reader.info.length;
    let resumed_at = (first > 0 || !held.is_empty()).then(|| schedule.offset(first));
    let mut completed: Vec<CompletedPart> = Vec::new();
    // Parts before the resume point are S3's already.
    let already: u64 = held
        .range(..=first as i32)
        .map(|(_, (_, size))| *size)
        .sum();
    for number in 1..=first as i32 {
        let (part, _) = held.remove(&number).ok_or_else(|| {
            IngestError::S3(format!("part {number} of the earlier upload is missing"))
        })?;
        completed.push(part);
    }
    // A part S3 holds from the earlier run is reused only when it provably has the bytes read
    // now: a strong validator pins them, else its ETag must be their MD5.
    let strong_validator = reader
        .info
        .validator
        .as_deref()
        .is_some_and(|v| v.starts_with('"'));
    progress.send_modify(|p| {
        p.upload_id = Some(upload.upload_id.to_string());
        p.total_bytes = length;
        p.parts_total = length.map(|l| schedule.parts_for(l));
        p.part_size = schedule.size(0);
        p.validator = reader.info.validator.clone();
        p.bytes_committed = already;
        p.parts_committed = completed.len() as u32;
        p.resumed_at = resumed_at;
    });
    let concurrency = request.concurrency.max(1);
    memory
        .ensure(schedule.size(first) * request.buffers())
        .await?;
    let buffers = Arc::new(Semaphore::new(request.buffers() as usize));
    let uploading = Arc::new(Semaphore::new(concurrency));
    let mut carry: Option<Bytes> = None;
    let mut total = schedule.offset(first);
    let mut index = first;
    // With a length, ranges and a validator, parts after the first come as parallel ranged GETs.
    let parts_total = length.map(|l| schedule.parts_for(l));
    let mut ranged: Option<(
        mpsc::Receiver<Result<FetchedPart, IngestError>>,
        AbortOnDrop,
    )> = None;
    loop {
        let (buffer, buffer_permit, ended) = match &mut ranged {
            Some((fetched, _)) => match fetched.recv().await {
                Some(Ok((bytes, permit))) => (bytes, permit, Some(index + 1) == parts_total),
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(IngestError::SourceUnavailable(
                        "the range fetcher stopped".into(),
                    ));
                }
            },
            None => {
                let size = schedule.size(index);
                // Parts of a source without a length grow: so does their memory.
                memory.ensure(size * request.buffers()).await?;
                let size = size as usize;
                let permit = buffers
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| IngestError::S3("part buffers closed".into()))?;
                let (buffer, ended) = fill(&mut reader, &mut carry, size).await?;
                // With a known length the last part ends the transfer without waiting for EOF.
                (buffer, permit, ended || Some(index + 1) == parts_total)
            }
        };
        if ranged.is_none()
            && !ended
            && concurrency > 1
            && reader.ranged()
            && let Some(parts_total) = parts_total
        {
            reader.close();
            let (tx, rx) = mpsc::channel(1);
            let task = tokio::spawn(fetch_ranges(
                reader.ranges(),
                schedule,
                index + 1..parts_total,
                buffers.clone(),
                concurrency,
                tx,
            ));
            ranged = Some((rx, AbortOnDrop(task)));
        }
        while let Some(done) = parts.try_join_next() {
            completed.push(joined(done)?);
        }
        if buffer.is_empty() && index > 0 {
            break;
        }
        if PartSchedule::exhausted(index) {
            return Err(PlanError::PartsExhausted {
                part_size: schedule.size(index - 1),
            }
            .into());
        }
        // Bytes before the resumed hash state were hashed by the earlier run.
        if total >= hasher.length() {
            hasher.update(&buffer);
        }
        total += buffer.len() as u64;
        // A source longer than promised fails now, not after uploading the excess.
        if let Some(limit) = length.or(request.expected_size)
            && total > limit
        {
            return Err(IngestError::SizeMismatch(format!(
                "expected {limit} bytes, the source sent more"
            )));
        }
        let checkpoint = hasher.checkpoint();
        progress.send_modify(|p| {
            p.bytes_read = total;
            p.checkpoint = checkpoint.or(p.checkpoint);
        });
        let number = index as i32 + 1;
        index += 1;
        // S3 holds this part from the earlier run, with the same bytes (the source is unchanged).
        if let Some((part, size)) = held.remove(&number)
            && size == buffer.len() as u64
            && (strong_validator || part.e_tag() == Some(quoted_md5(&buffer).as_str()))
        {
            completed.push(part);
            progress.send_modify(|p| {
                p.bytes_committed += size;
                p.parts_committed += 1;
            });
        } else {
            let slot = uploading
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| IngestError::S3("upload slots closed".into()))?;
            let part = Part {
                s3: upload.s3.clone(),
                bucket: upload.bucket.to_string(),
                key: upload.key.to_string(),
                upload_id: upload.upload_id.to_string(),
                number,
                body: buffer,
            };
            let progress = progress.clone();
            parts.spawn(async move {
                let len = part.body.len() as u64;
                let done = part.send().await;
                drop((slot, buffer_permit));
                if done.is_ok() {
                    progress.send_modify(|p| {
                        p.bytes_committed += len;
                        p.parts_committed += 1;
                    });
                }
                done
            });
        }
        if ended {
            break;
        }
    }
    while let Some(done) = parts.join_next().await {
        completed.push(joined(done)?);
    }

    if let Some(length) = reader.info.length.or(request.expected_size)
        && length != total
    {
        return Err(IngestError::SizeMismatch(format!(
            "expected {length} bytes, the source sent {total}"
        )));
    }
    let sha256 = hasher.finalize_hex();
    if let Some(expected) = &request.expected_sha256
        && *expected != sha256
    {
        return Err(IngestError::ChecksumMismatch {
            expected: expected.clone(),
            actual: sha256,
        });
    }
    completed.sort_by_key(|p| p.part_number);
    log.completing(Completion {
        etag: multipart_etag(&completed),
        sha256: sha256.clone(),
        size: total,
    })
    .await;
    let mut complete = upload
        .s3
        .complete_multipart_upload()
        .bucket(upload.bucket)
        .key(upload.key)
        .upload_id(upload.upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        );
    if !request.overwrite {
        complete = complete.if_none_match("*");
    }
    let done = complete.send().await.map_err(|e| match e.code() {
        Some("PreconditionFailed") => IngestError::ObjectExists {
            bucket: upload.bucket.into(),
            key: upload.key.into(),
        },
        _ => s3_error("completing the multipart upload", e),
    })?;
    let tag_error = tag_sha256(upload.s3, upload.bucket, upload.key, &sha256)
        .await
        .err()
        .map(|e| e.to_string());
    Ok(Outcome {
        size: total,
        sha256,
        etag: done.e_tag,
        parts: index.max(1),
        source_resumes: reader.resumes,
        resumed_at,
        tag_error,
    })
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

/// `"<hex MD5>"`, the ETag S3 gives a part (or an object) without KMS or customer keys.
fn quoted_md5(bytes: &[u8]) -> String {
    use md5::Digest;
    format!("\"{}\"", hex::encode(md5::Md5::digest(bytes)))
}

/// The ETag S3 gives a completed multipart upload: the MD5 of the parts' binary MD5s, dash, the
/// number of parts. `None` when a part's ETag is not an MD5 (SSE-KMS, SSE-C).
pub fn multipart_etag(parts: &[CompletedPart]) -> Option<String> {
    use md5::Digest;
    let mut digests = Vec::with_capacity(parts.len() * 16);
    for part in parts {
        let hex = part.e_tag()?.trim_matches('"');
        let digest = hex::decode(hex).ok().filter(|d| d.len() == 16)?;
        digests.extend_from_slice(&digest);
    }
    Some(format!(
        "\"{}-{}\"",
        hex::encode(md5::Md5::digest(&digests)),
        parts.len()
    ))
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
    match s3
        .list_parts()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .max_parts(1)
        .send()
        .await
    {
        Ok(_) => return Ok(None),
        Err(e) if e.code() == Some("NoSuchUpload") => {}
        Err(e) => return Err(s3_error("listing the parts of the earlier upload", e)),
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

/// A part's bytes, with the permit that counts its buffer against the memory bound.
type FetchedPart = (Bytes, OwnedSemaphorePermit);

/// Aborts the task when dropped, so no fetch outlives a failed transfer.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads the next part of `size` bytes from the stream; `true` when the stream ended.
async fn fill(
    reader: &mut SourceReader,
    carry: &mut Option<Bytes>,
    size: usize,
) -> Result<(Bytes, bool), IngestError> {
    let mut buffer = BytesMut::with_capacity(size);
    while buffer.len() < size {
        let chunk = match carry.take() {
            Some(chunk) => chunk,
            None => match reader.next().await? {
                Some(chunk) => chunk,
                None => return Ok((buffer.freeze(), true)),
            },
        };
        let room = size - buffer.len();
        if chunk.len() > room {
            buffer.extend_from_slice(&chunk[..room]);
            *carry = Some(chunk.slice(room..));
        } else {
            buffer.extend_from_slice(&chunk);
        }
    }
    Ok((buffer.freeze(), false))
}

/// Fetches parts `indexes` as byte ranges, up to `concurrency` at once (each holding a buffer
/// permit), and hands them on in order.
async fn fetch_ranges(
    source: source::RangeFetcher,
    schedule: PartSchedule,
    indexes: std::ops::Range<u32>,
    buffers: Arc<Semaphore>,
    concurrency: usize,
    parts: mpsc::Sender<Result<FetchedPart, IngestError>>,
) {
    let mut inflight = FuturesOrdered::new();
    let mut next = indexes.start;
    loop {
        let more = next < indexes.end && inflight.len() < concurrency;
        tokio::select! {
            biased;
            Some(fetched) = inflight.next(), if !inflight.is_empty() => {
                let fetched: Result<FetchedPart, IngestError> = fetched;
                let failed = fetched.is_err();
                if parts.send(fetched).await.is_err() || failed {
                    return;
                }
            }
            permit = buffers.clone().acquire_owned(), if more => {
                let Ok(permit) = permit else {
                    return;
                };
                let (source, start, len) = (source.clone(), schedule.offset(next), schedule.size(next));
                let len = len.min(source.length() - start) as usize;
                inflight.push_back(async move { source.fetch(start, len).await.map(|bytes| (bytes, permit)) });
                next += 1;
            }
            else => return,
        }
    }
}

fn joined(
    done: Result<Result<CompletedPart, IngestError>, tokio::task::JoinError>,
) -> Result<CompletedPart, IngestError> {
    done.unwrap_or_else(|e| Err(IngestError::S3(format!("a part upload stopped: {e}"))))
}

/// One part on its way to S3; the SDK retries throttling, 5xx and connection errors with backoff.
struct Part {
    s3: Client,
    bucket: String,
    key: String,
    upload_id: String,
    number: i32,
    body: Bytes,
}

impl Part {
    async fn send(&self) -> Result<CompletedPart, IngestError> {
        let out = self
            .s3
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(self.number)
            .body(ByteStream::from(self.body.clone()))
            .send()
            .await
            .map_err(|e| s3_error(&format!("uploading part {}", self.number), e))?;
        Ok(CompletedPart::builder()
            .part_number(self.number)
            .set_e_tag(out.e_tag)
            .build())
    }
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
