//! `S3Ingest`: stream one HTTP(S) URL into one S3 object by multipart upload.

// The KubeSchema derive copies each type into a private module of its own.
#![allow(unreachable_pub)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Phase, S3Connection, SecretRef, bucket_name_rule, dns_subdomain_rule, http_url_rule, key_rule,
    one_credential_rule, port_rule, size_check,
};

/// What to copy where: a URL streamed into S3 with bounded memory, parallel parts, resumable after a
/// restart and verified end to end.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "s3flow.io",
    version = "v1alpha1",
    kind = "S3Ingest",
    plural = "s3ingests",
    namespaced,
    doc = "Streams a file from an HTTP(S) URL into an S3 object by multipart upload.",
    status = "S3IngestStatus",
    shortname = "s3i",
    category = "s3flow",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress"}"#,
    printcolumn = r#"{"name":"Bucket","type":"string","jsonPath":".spec.destination.bucket"}"#,
    printcolumn = r#"{"name":"Key","type":"string","jsonPath":".spec.destination.key"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Bytes","type":"integer","priority":1,"jsonPath":".status.totalBytes"}"#,
    printcolumn = r#"{"name":"Rate","type":"integer","priority":1,"description":"bytes per second","jsonPath":".status.bytesPerSecond"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct S3IngestSpec {
    /// The HTTP(S) resource to copy. Immutable: create a new S3Ingest for another source.
    #[x_kube(validation = Rule::new("self == oldSelf").message("source is immutable; create a new S3Ingest to copy another URL"))]
    pub source: HttpSource,
    /// The S3 object to create. Immutable: create a new S3Ingest for another destination.
    #[x_kube(validation = Rule::new("self == oldSelf").message("destination is immutable; create a new S3Ingest to write another object"))]
    pub destination: S3Destination,
    /// How the bytes move: part size and parallelism.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferSettings>,
}

/// An HTTP(S) URL and what to expect from it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpSource {
    /// Absolute http:// or https:// URL of the file. Redirects are followed and checked again.
    /// Status, Events and logs show it without userinfo and query string.
    #[schemars(length(max = 8192))]
    #[x_kube(validation = http_url_rule("url"), validation = port_rule("url"))]
    pub url: String,
    /// Secret whose keys are HTTP header names and values their values (for example `Authorization`),
    /// sent with every request to the source, labelled `s3flow.io/secret-type: source-headers`.
    /// They follow a redirect only to the same scheme, host and port; headers that frame or pin
    /// the request (Host, Content-Length, Transfer-Encoding, Connection, TE, Upgrade, Expect,
    /// Range, If-Range, If-Match, Accept-Encoding) are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_secret_ref: Option<SecretRef>,
    /// ConfigMap with extra PEM certificates to trust for an https source (for example a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_config_map_ref: Option<ConfigMapKeyRef>,
    /// Size in bytes the source must have; a different length fails the ingest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub expected_size: Option<i64>,
    /// Lowercase hex SHA-256 the whole body must have; a mismatch fails the ingest and no object appears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-f]{64}$')").message("expectedSha256 must be 64 lowercase hex digits"))]
    pub expected_sha256: Option<String>,
}

/// A key of a ConfigMap in the namespace of the resource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap, in the same namespace as this resource.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = dns_subdomain_rule("name"))]
    pub name: String,
    /// Key holding the PEM bundle. Default `ca.crt`.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z0-9]+$')").message("key must be a ConfigMap key: letters, digits, '-', '_' and '.'"))]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".into()
}

/// The S3 object an ingest writes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = one_credential_rule())]
pub struct S3Destination {
    /// Bucket to write to; it must exist.
    #[schemars(length(max = 63))]
    #[x_kube(validation = bucket_name_rule("bucket"))]
    pub bucket: String,
    /// Object key to create, at most 1,024 bytes in UTF-8.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = key_rule("key"))]
    pub key: String,
    /// Where the store is and how to authenticate.
    #[serde(flatten)]
    pub connection: S3Connection,
    /// Content-Type of the object. Unset: the source's Content-Type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("!self.matches('[[:cntrl:]]')").message("contentType must not contain control characters"))]
    pub content_type: Option<String>,
    /// Storage class of the object, one of S3's: STANDARD, REDUCED_REDUNDANCY, STANDARD_IA,
    /// ONEZONE_IA, INTELLIGENT_TIERING, GLACIER, DEEP_ARCHIVE, OUTPOSTS, GLACIER_IR, SNOW,
    /// EXPRESS_ONEZONE. Unset: the bucket's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self in ['STANDARD', 'REDUCED_REDUNDANCY', 'STANDARD_IA', 'ONEZONE_IA', 'INTELLIGENT_TIERING', 'GLACIER', 'DEEP_ARCHIVE', 'OUTPOSTS', 'GLACIER_IR', 'SNOW', 'EXPRESS_ONEZONE']").message("storageClass must be one of S3's: STANDARD, REDUCED_REDUNDANCY, STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING, GLACIER, DEEP_ARCHIVE, OUTPOSTS, GLACIER_IR, SNOW, EXPRESS_ONEZONE"))]
    pub storage_class: Option<String>,
    /// Replace an object that already exists at the key. Default false: the ingest fails with
    /// ObjectExists instead of overwriting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overwrite: Option<bool>,
}

/// Part size and concurrency of the multipart upload.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(format!("!has(self.partSize) || self.partSize == 'auto' || !self.partSize.matches('{}') || quantity(self.partSize).asApproximateFloat() * double((has(self.concurrency) ? self.concurrency : 4) + 2) <= 68719476736.0", crate::size::SIZE_PATTERN)).message("partSize x (concurrency + 2) is the memory an ingest's part buffers take, and must be at most 64Gi; use a smaller partSize or concurrency"))]
pub struct TransferSettings {
    /// Size of each uploaded part: `auto` (default; chosen from the source's length, growing for
    /// sources without one) or a size from 5Mi to 5Gi, such as `64Mi` (bytes, or a whole number
    /// with Ki, Mi, Gi, Ti, k, M, G or T).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(format!("self == 'auto' || ({})", size_check("5Mi", "5Gi"))).message("partSize must be 'auto' or a size from 5Mi to 5Gi: a whole number of bytes with an optional suffix Ki, Mi, Gi, Ti, k, M, G or T, such as 64Mi"))]
    pub part_size: Option<String>,
    /// Parts in flight at once (download and upload), 1 to 64. Memory is bounded by
    /// partSize x (concurrency + 2), at most 64Gi, and waits for the operator's ingest memory
    /// budget (status Pending, reason Queued). Default 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub concurrency: Option<i32>,
}

/// Observed state of an S3Ingest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
// A new object reads as not yet observed (kstatus: InProgress) until the operator's first write.
#[schemars(extend("default" = {"observedGeneration": 0}))]
pub struct S3IngestStatus {
    /// Where the ingest is in its lifecycle.
    #[serde(default)]
    pub phase: Phase,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Id of the S3 multipart upload in flight, recorded before any part is sent so that a restart
    /// can resume it or abort it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    /// Length of the source in bytes, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<i64>,
    /// Bytes read from the source so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_read: Option<i64>,
    /// Bytes in parts that S3 has acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_transferred: Option<i64>,
    /// Share of the bytes acknowledged by S3, such as "42.0%".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Parts of the multipart upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<PartCounts>,
    /// Part size in use, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_size: Option<i64>,
    /// Recent transfer rate in bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<i64>,
    /// Estimated seconds until the upload completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<i64>,
    /// When S3 last acknowledged a part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress_time: Option<Time>,
    /// SHA-256 of the whole body, lowercase hex, computed while streaming.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// ETag of the completed object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// When the transfer started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the transfer finished, successfully or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Where a restarted operator resumes the upload in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_point: Option<ResumePoint>,
    /// Ready, Reconciling and Stalled, in the kstatus convention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// What a restart needs to continue an upload instead of reading the source again from byte 0.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResumePoint {
    /// ETag (or Last-Modified) of the source when it was read; a resumed read must match it.
    pub source_validator: String,
    /// Bytes of the source already hashed, ending on a part boundary.
    pub hashed_bytes: i64,
    /// SHA-256 state after those bytes, as 64 hex digits.
    pub sha256_state: String,
}

/// Completed and total parts of a multipart upload.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartCounts {
    /// Parts the upload will have, when the source length is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i32>,
    /// Parts S3 has acknowledged.
    #[serde(default)]
    pub completed: i32,
}
