//! The scan engine: split one S3 object into byte ranges and process every record exactly once.
//! No Kubernetes types: the CLI, the chunk workers and the controller all use it.

pub mod chunk;
pub mod format;
pub mod local;
pub mod manifest;
pub mod objects;
pub mod parquet;
pub mod plan;
pub mod sql;
pub mod text;
pub mod value;
pub mod verify;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use thiserror::Error;

pub use chunk::{
    ChunkObject, ChunkReport, ChunkTask, Output, OutputFormat, RowGroupsRead, Work, run_chunk,
};
pub use format::{Compression, InputFormat};
pub use plan::{Layout, ObjectVersion, PlanRequest, plan};
pub use text::split::State;
pub use verify::Verifier;

/// Why a scan or one of its chunks failed. `reason()` is the condition reason a user sees.
#[derive(Debug, Error)]
pub enum ScanError {
    /// The object or its bucket does not exist.
    #[error("object not found: {0}")]
    ObjectNotFound(String),
    /// S3 refused the credentials or the request.
    #[error("S3 denied access: {0}")]
    AccessDenied(String),
    /// The object changed since the scan planned it (If-Match failed, or it ended early).
    #[error("the object changed during the scan (its ETag no longer matches): {0}")]
    ObjectChanged(String),
    /// Any other S3 failure; running again may help.
    #[error("S3 error: {0}")]
    S3(String),
    /// The query is outside the SQL subset, or names columns the object does not have.
    #[error("{0}")]
    InvalidSql(#[from] sql::SqlError),
    /// The object's header row (or Parquet columns) is not the one the scan expects.
    #[error("header mismatch: {0}")]
    HeaderMismatch(String),
    /// The scan's settings do not work for this object (chunk size, record size, its task).
    #[error("{0}")]
    InvalidScan(String),
    /// A scan's source selects no object (a glob matching nothing).
    #[error("no objects: {0}")]
    NoObjects(String),
    /// A scan's source selects more objects than it allows.
    #[error("too many objects: {0}")]
    TooManyObjects(String),
    /// The object is compressed in a way s3flow does not read (gzip, zstd and bzip2 are read).
    #[error("unsupported object: {0}")]
    Unsupported(String),
    /// The object is not of the format the scan names, or its structure is broken.
    #[error("invalid object: {0}")]
    InvalidObject(String),
    /// The object's last record never closes its quoted field.
    #[error("malformed record in chunk {chunk} (bytes {start}-{end}): {message}")]
    MalformedRecord {
        /// The chunk the record starts in.
        chunk: u32,
        /// First byte of that chunk.
        start: u64,
        /// End of that chunk (exclusive).
        end: u64,
        /// What is wrong with the record.
        message: String,
    },
    /// A record the query cannot process: not UTF-8, invalid JSON, text where SUM wants a
    /// number.
    #[error("bad data in chunk {chunk} (bytes {start}-{end}) at byte {offset}: {message}")]
    BadData {
        /// The chunk the record starts in.
        chunk: u32,
        /// First byte of that chunk.
        start: u64,
        /// End of that chunk (exclusive).
        end: u64,
        /// Where the record starts, in bytes of the object.
        offset: u64,
        /// Why the query cannot process it.
        message: String,
    },
    /// The object's body kept breaking off, after every retry.
    #[error("reading the object: {0}")]
    Read(#[source] crate::s3::ReadFailure),
    /// The object could not be decompressed (a broken gzip stream).
    #[error("decoding the object: {0}")]
    Decode(#[source] std::io::Error),
    /// Writing rows or a chunk's file failed (a local file, stdout, a Parquet part).
    #[error("writing {what}: {source}")]
    Write {
        /// What was being written (`rows`, `the chunk file`, ...).
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding rows, a header row or an upload record failed.
    #[error("serialising {what}: {source}")]
    Serialize {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The row output's upload stopped (its own error says why).
    #[error("the row output stopped")]
    OutputClosed,
    /// The chunk's parser thread panicked or was cancelled.
    #[error("the chunk's parser stopped: {0}")]
    Parser(#[source] tokio::task::JoinError),
    /// A chunk's report does not answer its task, or cannot be merged.
    #[error("invalid chunk report of chunk {chunk}: {message}")]
    InvalidReport {
        /// The chunk the report is of.
        chunk: u32,
        /// What does not match.
        message: String,
    },
    /// The S3 endpoint resolves to an address the policy refuses.
    #[error("forbidden address: {0}")]
    ForbiddenAddress(crate::address::ForbiddenAddress),
    /// Asked to stop (SIGTERM, SIGINT) before the chunk ended; its row upload was aborted.
    #[error("stopped before the chunk ended")]
    Stopped,
    /// The S3 endpoint sent the object slower than the floor, or planning ran past its deadline.
    #[error("the object came too slowly: {0}")]
    Stalled(String),
}

impl ScanError {
    /// CamelCase reason for conditions, Events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ObjectNotFound(_) => "ObjectNotFound",
            Self::AccessDenied(_) => "AccessDenied",
            Self::ObjectChanged(_) => "ObjectChanged",
            Self::S3(_) => "S3Error",
            Self::InvalidSql(_) => "InvalidSql",
            Self::HeaderMismatch(_) => "HeaderMismatch",
            Self::InvalidScan(_) => "InvalidScan",
            Self::NoObjects(_) => "NoObjects",
            Self::TooManyObjects(_) => "TooManyObjects",
            Self::Unsupported(_) => "UnsupportedObject",
            Self::InvalidObject(_) => "InvalidObject",
            Self::MalformedRecord { .. } => "MalformedRecord",
            Self::BadData { .. } => "BadData",
            Self::Read(_) => "ReadFailed",
            Self::Decode(_) => "InvalidObject",
            Self::Write { .. } => "WriteFailed",
            Self::Serialize { .. } => "SerializeFailed",
            Self::OutputClosed => "OutputClosed",
            Self::Parser(_) => "ParserFailed",
            Self::InvalidReport { .. } => "InvalidReport",
            Self::ForbiddenAddress(_) => "ForbiddenAddress",
            Self::Stopped => "Stopped",
            Self::Stalled(_) => "SourceStalled",
        }
    }

    /// Whether running again can help (S3 hiccups), as opposed to a verdict on the input.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::S3(_)
                | Self::Read(_)
                | Self::Write { .. }
                | Self::OutputClosed
                | Self::Parser(_)
                | Self::Stopped
        )
    }
}

/// Maps an S3 SDK error to a scan error, by the service's error code.
pub(crate) fn s3_error<E>(context: &str, error: SdkError<E, HttpResponse>) -> ScanError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    classify(crate::s3::ServiceFailure::of(context, error))
}

/// The scan's error for a failed S3 request.
pub(crate) fn classify(failure: crate::s3::ServiceFailure) -> ScanError {
    if let Some(forbidden) = failure.forbidden {
        return ScanError::ForbiddenAddress(forbidden);
    }
    match failure.code.as_str() {
        "NoSuchKey" | "NotFound" | "NoSuchBucket" => ScanError::ObjectNotFound(failure.to_string()),
        "PreconditionFailed" => ScanError::ObjectChanged(failure.to_string()),
        _ if failure.is_access_denied() => ScanError::AccessDenied(failure.to_string()),
        _ => ScanError::S3(failure.to_string()),
    }
}

/// The scan's error for a failed read: S3's refusals by their code, a body that kept breaking
/// off as a read failure, an object too large for what reads it as invalid.
pub(crate) fn read_failure(failure: crate::s3::ReadFailure) -> ScanError {
    use crate::s3::ReadFailure;
    match failure {
        ReadFailure::Request(refused) => classify(refused),
        ReadFailure::TooLarge { .. } => ScanError::InvalidScan(failure.to_string()),
        ReadFailure::Stalled { .. } => ScanError::Stalled(failure.to_string()),
        broken @ ReadFailure::Broken { .. } => ScanError::Read(broken),
    }
}

/// PUTs `body` as the whole object at `bucket/key`.
pub(crate) async fn put_object(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    content_type: Option<&str>,
) -> Result<(), ScanError> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .set_content_type(content_type.map(str::to_string))
        .body(body.into())
        .send()
        .await
        .map_err(|e| s3_error(&format!("PUT s3://{bucket}/{key}"), e))?;
    Ok(())
}

/// DELETEs the object at `bucket/key` (one that is not there is no error: S3 answers alike).
pub(crate) async fn delete_object(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<(), ScanError> {
    s3.delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| s3_error(&format!("DELETE s3://{bucket}/{key}"), e))?;
    Ok(())
}
