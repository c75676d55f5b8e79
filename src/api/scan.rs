//! `S3ParallelScan`: process one large S3 object, or many, in parallel, one chunk-worker Job per
//! chunk of byte ranges.

// The KubeSchema derive copies each type into a private module of its own.
#![allow(unreachable_pub)]

use std::collections::BTreeMap;

pub use crate::scan::OutputFormat;
use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Phase, S3Connection, bucket_name_rule, dns_subdomain_rule, free_form_object, key_rule,
    one_credential_rule, size_rule,
};

/// What to scan and how: one large S3 object (CSV or JSON Lines) split into byte ranges, every record
/// processed exactly once, the chunks' results merged.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "s3flow.io",
    version = "v1alpha1",
    kind = "S3ParallelScan",
    plural = "s3parallelscans",
    namespaced,
    doc = "Processes one large S3 object, or many (a glob, a list of keys), in parallel, one chunk-worker Job per chunk of byte ranges.",
    status = "S3ParallelScanStatus",
    shortname = "s3scan",
    shortname = "s3ps",
    category = "s3flow",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Chunks","type":"string","description":"succeeded/total chunks","jsonPath":".status.progress"}"#,
    printcolumn = r#"{"name":"Objects","type":"string","description":"scanned/planned objects of a glob or key list","jsonPath":".status.objects.progress"}"#,
    printcolumn = r#"{"name":"Records","type":"integer","jsonPath":".status.recordsProcessed"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.chunks.failed"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Key","type":"string","priority":1,"jsonPath":".spec.source.key"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.worker) || !has(self.worker.serviceAccountName) || !has(self.source.serviceAccountName) || self.worker.serviceAccountName == self.source.serviceAccountName").message("worker.serviceAccountName defaults to source.serviceAccountName; when both are set they must be the same ServiceAccount"))]
pub struct S3ParallelScanSpec {
    /// The objects to scan. Immutable: create a new S3ParallelScan for others.
    #[x_kube(validation = Rule::new("self == oldSelf").message("source is immutable; create a new S3ParallelScan to scan another object"))]
    pub source: ScanSource,
    /// How the object's records are encoded: exactly one of `csv`, `jsonLines` or `parquet`.
    pub format: RecordFormat,
    /// How the object is split and how many chunks run at once.
    #[serde(default)]
    pub chunking: Chunking,
    /// What each chunk does with its records: exactly one of `sql` or `container`.
    pub processor: Processor,
    /// Pod settings of the chunk-worker Jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerTemplate>,
    /// A container run once as a Job after every chunk succeeded (the completion callback). It gets
    /// the manifest location in `S3FLOW_MANIFEST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_complete: Option<ContainerSpec>,
}

/// The objects to scan: `bucket` with one of `key`, `glob` or `keys` (and their connection), or
/// `ingestRef`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.key), has(self.glob), has(self.keys), has(self.manifest), has(self.ingestRef)].filter(f, f).size() == 1").message("source needs exactly one of: key, glob, keys, manifest (each with bucket), or ingestRef"))]
#[x_kube(validation = Rule::new("has(self.bucket) == (has(self.key) || has(self.glob) || has(self.keys) || has(self.manifest))").message("source.bucket goes with key, glob, keys or manifest"))]
#[x_kube(validation = Rule::new("!(has(self.maxObjects) || has(self.allowEmpty) || has(self.onObjectChange) || has(self.maxFailedObjects)) || has(self.glob) || has(self.keys) || has(self.manifest)").message("maxObjects, allowEmpty, onObjectChange and maxFailedObjects apply to a glob, keys or a manifest"))]
#[x_kube(validation = Rule::new("!has(self.ingestRef) || !(has(self.endpoint) || has(self.region) || has(self.forcePathStyle) || has(self.credentialsSecretRef) || has(self.serviceAccountName))").message("with ingestRef the object's location and credentials come from the S3Ingest; leave endpoint, region, forcePathStyle, credentialsSecretRef and serviceAccountName unset"))]
#[x_kube(validation = one_credential_rule())]
pub struct ScanSource {
    /// Bucket of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = bucket_name_rule("bucket"))]
    pub bucket: Option<String>,
    /// Key of the object, at most 1,024 bytes in UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = key_rule("key"))]
    pub key: Option<String>,
    /// Every object whose key matches this glob, in key order: `*` (within a folder), `**` (any
    /// depth), `?`, `[...]`, `{a,b}` (at most 64 patterns). Each pattern is listed from its text
    /// before the first wildcard; keys ending in `/` and under `.s3flow/` are not objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub glob: Option<String>,
    /// These keys (at most 1,000), scanned in key order, each once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1000))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) > 0 && size(k) <= 1024 && !k.endsWith('/'))").message("each of keys names an object: 1 to 1,024 bytes, not ending in /"))]
    pub keys: Option<Vec<String>>,
    /// The objects a manifest names, in its order, each row scanned as it comes (a key named
    /// twice is scanned twice): an S3 Batch Operations CSV (`bucket,key`, keys URL-encoded; a row
    /// naming a versionId is refused, as current versions are read), or an S3 Inventory
    /// `manifest.json` with CSV data files. Every row names `bucket`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<ManifestSource>,
    /// More objects than this fail the scan as TooManyObjects while it lists. Default 1,000,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_objects: Option<i64>,
    /// A glob that matches no object makes an empty scan instead of failing as NoObjects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_empty: Option<bool>,
    /// An object changed or deleted after it was listed (every read is pinned to the listed
    /// ETag): `Fail` (default) fails the scan; `Skip` leaves it out (none of its records count)
    /// when it is found so before any of its rows could be written, up to `maxFailedObjects`. An
    /// object split across chunks, or one whose rows may be in a part, fails the scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_object_change: Option<OnObjectChangePolicy>,
    /// Objects `Skip` leaves out at most; one more fails the scan as ObjectChanged. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub max_failed_objects: Option<i64>,
    /// Where the store is and how to authenticate.
    #[serde(flatten)]
    pub connection: S3Connection,
    /// An S3Ingest in the same namespace: the scan waits until it has succeeded, then scans its object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_ref: Option<IngestRef>,
}

/// The object that lists a scan's objects.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestSource {
    /// Bucket of the manifest (read with the source's credentials). Default: the source's bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = bucket_name_rule("manifest.bucket"))]
    pub bucket: Option<String>,
    /// Key of the manifest: an Inventory when it ends in `manifest.json`, else a Batch
    /// Operations CSV (plain, or compressed with gzip, zstd or bzip2).
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = key_rule("manifest.key"))]
    pub key: String,
    /// The ETag the manifest must have; another fails the scan as ObjectChanged. Unset: the
    /// manifest is pinned to the ETag it has when the listing starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub etag: Option<String>,
}

/// What becomes of an object changed after it was listed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OnObjectChangePolicy {
    /// The scan fails.
    Fail,
    /// The object is left out.
    Skip,
}

/// Names an S3Ingest in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
pub struct IngestRef {
    /// Name of the S3Ingest.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = dns_subdomain_rule("name"))]
    pub name: String,
}

/// Record encoding of the object: exactly one of `csv`, `jsonLines` or `parquet`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.csv), has(self.jsonLines), has(self.parquet)].filter(f, f).size() == 1").message("format needs exactly one of csv, jsonLines or parquet"))]
pub struct RecordFormat {
    /// Comma-separated values (RFC 4180 quoting; quoted fields may hold delimiters and newlines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvFormat>,
    /// One JSON document per line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_lines: Option<JsonLinesFormat>,
    /// Apache Parquet: chunks are runs of whole row groups (a row group goes to the chunk whose
    /// byte range holds its midpoint); only the columns the query reads are fetched, and row
    /// groups whose statistics rule out the WHERE clause are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parquet: Option<ParquetFormat>,
    /// Many objects: whether `name=value` folders of keys below the glob's literal text become
    /// text columns (`year=2024/` gives `year`). `Auto` (default): when keys have them.
    /// `Enabled`: an object without them fails the scan. `Disabled`: never. Objects whose
    /// partitions rule out the WHERE clause are never read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hive_partitioning: Option<HivePartitioningMode>,
    /// Many objects: `Strict` (default): every object has the first object's columns (CSV header,
    /// Parquet schema), else the scan fails naming the key. `UnionByName`: columns are bound by
    /// name, a column an object lacks is NULL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaMode>,
}

/// Whether `name=value` folders become columns.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum HivePartitioningMode {
    /// When keys have them.
    Auto,
    /// Always: an object without them fails the scan.
    Enabled,
    /// Never.
    Disabled,
}

/// How the columns of many objects join.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SchemaMode {
    /// Every object has the same columns.
    Strict,
    /// Columns are bound by name; a missing one is NULL.
    UnionByName,
}

/// Parquet has no settings: the footer describes the file.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ParquetFormat {}

/// CSV dialect of the object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.expectedHeaders) || self.header").message("expectedHeaders needs header: true"))]
#[x_kube(validation = Rule::new("self.delimiter != self.quote").message("the CSV delimiter and quote must differ"))]
pub struct CsvFormat {
    /// Field delimiter, one ASCII character other than CR and LF. Default ",".
    #[serde(default = "default_delimiter")]
    #[schemars(length(min = 1, max = 1))]
    #[x_kube(validation = one_ascii_byte_rule("delimiter"))]
    pub delimiter: String,
    /// Quote character, one ASCII character other than CR and LF. Default `"`.
    #[serde(default = "default_quote")]
    #[schemars(length(min = 1, max = 1))]
    #[x_kube(validation = one_ascii_byte_rule("quote"))]
    pub quote: String,
    /// Whether the first record is a header row naming the columns. Default true.
    #[serde(default = "default_true")]
    pub header: bool,
    /// Column names the header row must have, in order; checked before any chunk runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub expected_headers: Option<Vec<String>>,
}

/// CEL rule: one ASCII character that does not end records.
fn one_ascii_byte_rule(field: &str) -> kube::core::Rule {
    kube::core::Rule::new("self.matches('^[\\x00-\\x7f]$') && self != '\\r' && self != '\\n'")
        .message(kube::core::Message::Message(format!(
            "{field} must be one ASCII character other than CR and LF"
        )))
}

fn default_delimiter() -> String {
    ",".into()
}
fn default_quote() -> String {
    "\"".into()
}
fn default_true() -> bool {
    true
}

/// JSON Lines has no settings: records are split on newlines.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct JsonLinesFormat {}

/// How the object is split into chunks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Chunking {
    /// Bytes per chunk, such as `64Mi` (bytes, or a whole number with Ki, Mi, Gi, Ti, k, M, G or
    /// T; at least 1). Each record belongs to the chunk in which its first byte lies. Default 64Mi.
    #[serde(default = "default_chunk_size")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = size_rule("chunkSize", "1", "1Ti", "64Mi"))]
    pub chunk_size: String,
    /// Longest record a chunk reads, from 1Ki to 1Gi (same form as chunkSize). A longer one (a
    /// quote that never closes, say) fails the chunk as BadData naming its offset, instead of
    /// growing a worker's memory. Default 64Mi.
    #[serde(default = "default_max_record_size")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = size_rule("maxRecordSize", "1Ki", "1Gi", "64Mi"))]
    pub max_record_size: String,
    /// Chunk Jobs in flight at once, 1 to 256. Default 8.
    #[serde(default = "default_parallelism")]
    #[schemars(range(min = 1, max = 256))]
    pub parallelism: i32,
    /// Retries of a failed chunk before the scan fails, 0 to 10. Bad data is not retried. Default 3.
    #[serde(default = "default_max_retries")]
    #[schemars(range(min = 0, max = 10))]
    pub max_retries_per_chunk: i32,
    /// Many objects: what opening an object costs a chunk, in bytes (same form as chunkSize):
    /// small objects share a chunk while their sizes plus this cost each fit chunkSize. Default 1Mi.
    #[serde(default = "default_object_open_cost")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = size_rule("objectOpenCost", "0", "1Ti", "1Mi"))]
    pub object_open_cost: String,
    /// Many objects: most objects one chunk reads, 1 to 10,000. Default 1,000. A scan writing
    /// Parquet output reads one object a chunk: each part is one Parquet file.
    #[serde(default = "default_max_objects_per_chunk")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_objects_per_chunk: i32,
}

impl Default for Chunking {
    fn default() -> Self {
        Self {
            chunk_size: default_chunk_size(),
            max_record_size: default_max_record_size(),
            parallelism: default_parallelism(),
            max_retries_per_chunk: default_max_retries(),
            object_open_cost: default_object_open_cost(),
            max_objects_per_chunk: default_max_objects_per_chunk(),
        }
    }
}

fn default_chunk_size() -> String {
    "64Mi".into()
}
fn default_max_record_size() -> String {
    "64Mi".into()
}
fn default_parallelism() -> i32 {
    8
}
fn default_max_retries() -> i32 {
    3
}
fn default_object_open_cost() -> String {
    "1Mi".into()
}
fn default_max_objects_per_chunk() -> i32 {
    1000
}

/// What each chunk does with its records: exactly one of `sql` or `container`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.sql) != has(self.container)").message("processor needs exactly one of sql or container"))]
#[x_kube(validation = Rule::new("!has(self.output) || has(self.sql)").message("processor.output applies to sql only"))]
pub struct Processor {
    /// An S3 Select style query, `SELECT ... FROM S3Object s [WHERE ...] [LIMIT n]`, run on every chunk;
    /// aggregates (COUNT, SUM, MIN, MAX, AVG) are merged across chunks into status.result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    pub sql: Option<String>,
    /// Where the rows selected by `sql` are written, one part file per chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<ScanOutput>,
    /// Your own container, run once per chunk with the chunk's records in a local file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSpec>,
}

/// Location and encoding of a scan's row output.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanOutput {
    /// Bucket for the part files and the manifest, on the source's store.
    #[schemars(length(max = 63))]
    #[x_kube(validation = bucket_name_rule("output.bucket"))]
    pub bucket: String,
    /// Key prefix of the part files and the manifest, such as `results/run-1/`: not empty, and
    /// ending in `/`, so that it names a folder of this scan's own.
    #[schemars(length(min = 1, max = 900))]
    #[x_kube(validation = Rule::new("self.endsWith('/') && !self.startsWith('/')").message("output.prefix must end in '/' (and not start with it), such as results/run-1/, so that it names a folder of its own"))]
    pub prefix: String,
    /// Encoding of the part files. Default: the same as the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<OutputFormat>,
}

/// A container to run: image, command and environment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    /// Container image.
    #[schemars(length(min = 1, max = 1024))]
    pub image: String,
    /// Entrypoint; unset runs the image's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// CPU and memory requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Pod settings of the chunk-worker Jobs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerTemplate {
    /// Image that runs `s3flow worker`. Default: the operator's own image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub image: Option<String>,
    /// CPU and memory requests and limits of the worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the worker pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the worker pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// ServiceAccount of the worker pods (for IRSA or Pod Identity). Workers never call the
    /// Kubernetes API. Unset: the source's `serviceAccountName`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = dns_subdomain_rule("serviceAccountName"))]
    pub service_account_name: Option<String>,
}

/// Observed state of an S3ParallelScan.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
// A new object reads as not yet observed (kstatus: InProgress) until the operator's first write.
#[schemars(extend("default" = {"observedGeneration": 0}))]
pub struct S3ParallelScanStatus {
    /// Where the scan is in its lifecycle.
    #[serde(default)]
    pub phase: Phase,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Size of the object in bytes (of many objects: their total).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_size: Option<i64>,
    /// Many objects: how many the listing matched, pruned and planned, and how many were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<ObjectCounts>,
    /// Many objects: where the listing stands (it is taken a slice per reconcile) and the plan
    /// it wrote so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing: Option<ListingStatus>,
    /// ETag of the object; every ranged read requires it, so a changed object fails the scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// When the object was last written, as planning found it (`_mtime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_modified: Option<String>,
    /// Column names from the header row (of a Parquet object: its columns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header: Vec<String>,
    /// Offset of the first record: after a byte-order mark and the header row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_start: Option<i64>,
    /// Compression of the object (`gzip`, `zstd` or `bzip2`): not splittable, scanned as one chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// Number of byte-range chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_chunks: Option<i32>,
    /// Chunks by state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<ChunkCounts>,
    /// Succeeded over total chunks, such as "41/100".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Indexes of succeeded chunks as compact ranges, such as "0-41,43-99".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded_chunks: Option<String>,
    /// Indexes of failed chunks as compact ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_chunks: Option<String>,
    /// Records processed by succeeded chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_processed: Option<i64>,
    /// Bytes read by succeeded chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_scanned: Option<i64>,
    /// Parquet: the file's row groups, and what succeeded chunks skipped and fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_groups: Option<RowGroupCounts>,
    /// Merged result of all chunks (for SQL aggregates, one entry per select item).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub result: Option<serde_json::Map<String, serde_json::Value>>,
    /// The names of `result`'s entries in the order of the SELECT list (Kubernetes keeps an
    /// object's keys sorted by name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub result_columns: Vec<String>,
    /// s3:// URL of the manifest: chunks, byte ranges, record counts, output parts, source ETag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// The controller's bookkeeping of accepted chunks (merged partial results, the record
    /// parser's state at the next chunk). Internal: do not edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub checkpoint: Option<serde_json::Map<String, serde_json::Value>>,
    /// When the scan started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the scan finished, successfully or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Ready, Reconciling and Stalled, in the kstatus convention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The objects of a scan of many.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectCounts {
    /// Objects the glob or key list selected.
    pub matched: i64,
    /// Objects whose hive partitions rule out the WHERE clause: never read.
    pub pruned: i64,
    /// Hive folders the WHERE clause rules out, with a glob that names them
    /// (`trips/year=*/month=*/*.parquet`): never listed, so their objects are not counted.
    #[serde(default)]
    pub pruned_folders: i64,
    /// Objects planned into chunks.
    pub planned: i64,
    /// Objects read by succeeded chunks.
    pub scanned: i64,
    /// Objects left out as they changed since they were listed (`onObjectChange: Skip`).
    #[serde(default)]
    pub skipped: i64,
    /// The first 10 objects left out: key, reason, message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<crate::scan::objects::ObjectFailure>,
    /// Scanned over planned, such as "120/2000".
    pub progress: String,
}

/// Where a scan's listing stands and what plan it wrote so far.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListingStatus {
    /// The prefix being listed (by its place among the glob's) and the last key listed: an
    /// operator restart resumes from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<crate::scan::objects::ListingCursor>,
    /// Listing pages read.
    pub pages: i64,
    /// Every object is listed and planned.
    pub complete: bool,
    /// Bytes of the planned objects.
    pub bytes: i64,
    /// Chunks planned so far.
    pub chunks: i32,
    /// The plan's segments written so far (each its first chunk and digest), under `planAt`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<crate::scan::objects::segments::Segment>,
    /// `s3://` URL of the folder of the plan's segments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_at: Option<String>,
    /// The first object's columns, which every object has unless the schema is UnionByName.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// The first object planned: the query is compiled against its columns and partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_key: Option<String>,
}

/// Row groups of a Parquet object, and what the scan read of them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RowGroupCounts {
    /// Row groups of the file.
    pub total: i64,
    /// Row groups whose statistics ruled the query out: never read.
    pub skipped: i64,
    /// Bytes of the skipped row groups.
    pub skipped_bytes: i64,
    /// Bytes fetched from S3: only the columns the query reads, of the row groups not skipped.
    pub fetched_bytes: i64,
}

/// Chunks by state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChunkCounts {
    /// Chunks not started yet.
    pub pending: i32,
    /// Chunks with a Job in flight.
    pub running: i32,
    /// Chunks whose result is recorded.
    pub succeeded: i32,
    /// Chunks that failed for good.
    pub failed: i32,
}
