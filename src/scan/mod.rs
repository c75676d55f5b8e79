//! The scan engine: split one S3 object into byte ranges and process every record exactly once.
//! No Kubernetes types: the CLI, the chunk workers and the controller all use it.

pub mod chunk;
mod json;
pub mod local;
pub mod manifest;
pub mod parquet;
pub mod plan;
pub mod split;
pub mod sql;
pub mod value;
pub mod verify;
mod word;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use chunk::{
    ChunkObject, ChunkReport, ChunkTask, Output, OutputFormat, RowGroupsRead, Work, run_chunk,
};
pub use plan::{Layout, PlanRequest, plan};
pub use split::State;
pub use verify::Verifier;

/// Record encoding of the scanned object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Format {
    Csv {
        delimiter: u8,
        quote: u8,
        header: bool,
    },
    JsonLines,
    /// Apache Parquet: chunks are runs of row groups.
    Parquet,
}

impl Format {
    /// How records are split from bytes (Parquet is never split by bytes; JSON Lines' rule
    /// stands in for it).
    pub fn dialect(self) -> split::Dialect {
        match self {
            Format::Csv {
                delimiter, quote, ..
            } => split::Dialect::Csv { delimiter, quote },
            Format::JsonLines | Format::Parquet => split::Dialect::JsonLines,
        }
    }

    /// How a query names this format's fields: CSV columns by position (and header name),
    /// JSON Lines fields and Parquet columns by name (and dotted path).
    pub fn columns(self, header: &[String]) -> sql::Columns {
        match self {
            Format::Csv { .. } => sql::Columns::Positional(header.to_vec()),
            Format::JsonLines | Format::Parquet => sql::Columns::Named,
        }
    }

    /// The output format when the scan names none: the object's own, CSV for Parquet.
    pub fn output_format(self) -> OutputFormat {
        match self {
            Format::Csv { .. } | Format::Parquet => OutputFormat::Csv,
            Format::JsonLines => OutputFormat::JsonLines,
        }
    }
}

/// Why a scan or one of its chunks failed. `reason()` is the condition reason a user sees.
#[derive(Debug, Error)]
pub enum ScanError {
    #[error("object not found: {0}")]
    ObjectNotFound(String),
    #[error("S3 denied access: {0}")]
    AccessDenied(String),
    #[error("the object changed during the scan (its ETag no longer matches): {0}")]
    ObjectChanged(String),
    #[error("S3 error: {0}")]
    S3(String),
    #[error("{0}")]
    InvalidSql(#[from] sql::SqlError),
    #[error("header mismatch: {0}")]
    HeaderMismatch(String),
    #[error("{0}")]
    InvalidScan(String),
    #[error("unsupported object: {0}")]
    Unsupported(String),
    /// The object is not of the format the scan names, or its structure is broken.
    #[error("invalid object: {0}")]
    InvalidObject(String),
    #[error("malformed record in chunk {chunk} (bytes {start}-{end}): {message}")]
    MalformedRecord {
        chunk: u32,
        start: u64,
        end: u64,
        message: String,
    },
    #[error("bad data in chunk {chunk} (bytes {start}-{end}) at byte {offset}: {message}")]
    BadData {
        chunk: u32,
        start: u64,
        end: u64,
        offset: u64,
        message: String,
    },
    #[error("reading the object: {0}")]
    Read(#[source] crate::s3::ReadFailure),
    #[error("decoding the object: {0}")]
    Decode(#[source] std::io::Error),
    #[error("writing {what}: {source}")]
    Write {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("serialising {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The row output's upload stopped (its own error says why).
    #[error("the row output stopped")]
    OutputClosed,
    #[error("the chunk's parser stopped: {0}")]
    Parser(#[source] tokio::task::JoinError),
    #[error("invalid chunk report of chunk {chunk}: {message}")]
    InvalidReport { chunk: u32, message: String },
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
