//! Planning a scan: the object's version and size, its header row, where records start, and the
//! byte ranges of the chunks.

use std::io::Read;

use aws_sdk_s3::Client;
use serde::{Deserialize, Serialize};

use super::format::{Compression, InputFormat, Magic, magic};
use super::parquet::{self, MAGIC, ParquetLayout};
use super::sql::Constants;
use super::value::Value;
use super::{ScanError, read_failure, s3_error};
use crate::s3::RangeStream;

/// Most chunks one scan may have: keeps status, manifest and Job churn bounded.
pub const MAX_CHUNKS: u64 = 100_000;

/// Longest header row a scan takes: every chunk Job carries the column names.
pub const MAX_HEADER_BYTES: u64 = 64 << 10;

/// Most compressed bytes read for a header row: a bzip2 block (900 kB of text) and then some.
const MAX_COMPRESSED_START: u64 = 1 << 20;

/// Objects up to this size are read whole by the GET that plans them, where their chunks then run
/// in the same process (a scan of many objects, in the CLI or a chunk Job): one GET an object
/// instead of two (header, then chunk), and the next objects are read while one is parsed.
/// Objects are planned a bounded number ahead (`PLANNING_CONCURRENCY`), so this bounds what
/// waits in memory.
pub const WHOLE_OBJECT_READ: u64 = 2 << 20;

/// Longest record a chunk reads unless the scan says otherwise.
pub const DEFAULT_MAX_RECORD_SIZE: u64 = 64 << 20;

const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// One version of one object: every read of it requires its ETag (`If-Match`), so an object
/// changed after planning fails the scan instead of mixing two versions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectVersion {
    /// The object's bucket.
    pub bucket: String,
    /// The object's key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its ETag, as S3 gives it (quoted).
    pub etag: String,
    /// When it was last written, as S3 gave it with the ETag (a listing, a HEAD, an Inventory
    /// row), as [`s3_time`] writes it (`2024-06-01T12:00:00.000Z`): text in time order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
}

/// The columns every object has, as ClickHouse names them; a real column of the same name wins.
pub const VIRTUAL_COLUMNS: [&str; 5] = ["_path", "_file", "_size", "_etag", "_mtime"];

impl ObjectVersion {
    /// Its [`VIRTUAL_COLUMNS`]: `s3://bucket/key`, the key's last segment, the size in bytes, the
    /// ETag without its quotes, and the last-modified time (NULL when S3 gave none).
    pub fn virtual_columns(&self) -> Constants {
        let file = self.key.rsplit('/').next().unwrap_or_default();
        let values = [
            Value::Str(self.url().into()),
            Value::Str(file.to_string().into()),
            Value::Int(i64::try_from(self.size).unwrap_or(i64::MAX)),
            Value::Str(self.etag.trim_matches('"').to_string().into()),
            self.modified
                .clone()
                .map_or(Value::Null, |time| Value::Str(time.into())),
        ];
        VIRTUAL_COLUMNS
            .iter()
            .map(|name| name.to_string())
            .zip(values)
            .collect()
    }

    /// The version of `bucket/key` that S3 gave `size` and `etag` for (a HEAD, a listing): a
    /// store that gives no ETag cannot be scanned, as no read could be pinned.
    pub fn pinned(
        bucket: &str,
        key: &str,
        size: u64,
        etag: Option<String>,
    ) -> Result<ObjectVersion, ScanError> {
        let etag = etag.ok_or_else(|| {
            ScanError::InvalidObject(format!(
                "s3://{bucket}/{key} came without an ETag: every read pins the object's version \
                 by it, so a store that gives none cannot be scanned"
            ))
        })?;
        Ok(ObjectVersion {
            bucket: bucket.to_string(),
            key: key.to_string(),
            size,
            etag,
            modified: None,
        })
    }

    /// The version with the last-modified time S3 gave with it.
    pub fn modified_at(mut self, time: Option<&aws_sdk_s3::primitives::DateTime>) -> Self {
        self.modified = time.and_then(s3_time);
        self
    }

    /// `s3://bucket/key`, for messages.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

/// `time` as S3 writes times in listings: RFC 3339 UTC with milliseconds
/// (`2024-06-01T12:00:00.000Z`), always the same length, so that text order is time order.
pub fn s3_time(time: &aws_sdk_s3::primitives::DateTime) -> Option<String> {
    let text = time
        .fmt(aws_sdk_s3::primitives::DateTimeFormat::DateTime)
        .ok()?;
    let text = text.strip_suffix('Z')?;
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    Some(format!("{whole}.{fraction:0<3.3}Z"))
}

/// Everything the chunks of one scan share.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Layout {
    /// The scanned object (its fields stand at the top level of the layout's JSON).
    #[serde(flatten)]
    pub object: ObjectVersion,
    /// How the object's records are encoded.
    pub format: InputFormat,
    /// Column names from the header row (empty without one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// Offset of the first record: after a byte-order mark and the header row.
    pub data_start: u64,
    /// Bytes of the object per chunk (Parquet: the window its row groups are grouped by).
    pub chunk_size: u64,
    /// How the object is compressed; a compressed one is one chunk over its decompressed stream.
    #[serde(default, skip_serializing_if = "Compression::is_none")]
    pub compression: Compression,
    /// Longest record a chunk reads; a longer one is bad data (it would grow memory).
    #[serde(default = "default_max_record_size")]
    pub max_record_size: u64,
    /// A Parquet object's row groups and chunks (`columns` are its columns then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parquet: Option<ParquetLayout>,
    /// How the object's columns join those of the scan's other objects.
    #[serde(default, skip_serializing_if = "JoinedColumns::is_default")]
    pub joined: JoinedColumns,
    /// A scan of many objects: its chunks are the plan's, each an ordered list of pieces of
    /// objects (`object` then names the selection, `columns` those of its first object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<super::objects::segments::ObjectPlan>,
    /// The whole object, when planning read all of it in this process: its chunks read it from
    /// here. Never recorded (a chunk Job reads its own).
    #[serde(skip)]
    pub prefetched: Prefetched,
}

/// An object's bytes as planning read them (the buffers as they arrived: never copied into one),
/// held for its chunks in the same process. They are what the object holds, not part of what
/// the layout says: layouts compare equal whether they hold them or not, and a layout's debug
/// form gives their length, never their content.
#[derive(Clone, Default)]
pub struct Prefetched(pub Option<std::sync::Arc<[bytes::Bytes]>>);

impl Prefetched {
    fn len(frames: &[bytes::Bytes]) -> u64 {
        frames.iter().map(|frame| frame.len() as u64).sum()
    }

    /// The bytes it holds.
    pub fn held(&self) -> u64 {
        self.0.as_deref().map_or(0, Prefetched::len)
    }

    /// The object's bytes from `from` on, when these are all `size` of them.
    pub fn from_offset(&self, size: u64, from: u64) -> Option<Vec<bytes::Bytes>> {
        let frames = self.0.as_deref().filter(|f| Prefetched::len(f) == size)?;
        let mut skip = from;
        let mut rest = Vec::with_capacity(frames.len());
        for frame in frames {
            let length = frame.len() as u64;
            if skip >= length {
                skip -= length;
                continue;
            }
            rest.push(frame.slice(skip as usize..));
            skip = 0;
        }
        Some(rest)
    }
}

impl PartialEq for Prefetched {
    fn eq(&self, _: &Prefetched) -> bool {
        true
    }
}

impl std::fmt::Debug for Prefetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(frames) => write!(f, "Prefetched({} bytes)", Prefetched::len(frames)),
            None => f.write_str("Prefetched(None)"),
        }
    }
}

/// How one object's columns join those of a scan of many objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinedColumns {
    /// The hive partitions of the object's key (`year=2024/` gives `year`, "2024"): columns of
    /// text that every record of the object has.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<(String, String)>,
    /// Columns are bound by name and the objects' columns may differ: a column the object lacks
    /// is NULL in its records (else every object has the same columns).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub union_by_name: bool,
}

impl JoinedColumns {
    fn is_default(&self) -> bool {
        *self == JoinedColumns::default()
    }
}

fn default_max_record_size() -> u64 {
    DEFAULT_MAX_RECORD_SIZE
}

impl Layout {
    /// The columns a query of this object may name.
    pub fn sql_columns(&self) -> crate::scan::sql::Columns {
        self.format.columns(&self.columns)
    }

    /// Compiles `sql` against this object's columns: for Parquet, every column it names must
    /// exist and be of a type a query can use.
    pub fn compile(&self, sql: &str) -> Result<crate::scan::sql::Query, ScanError> {
        let mut constants = self.constants()?;
        let by_name = self.binds_by_name();
        if by_name {
            let named = crate::scan::sql::compile(sql, &crate::scan::sql::Columns::Named)?;
            let missing = self.missing_columns(&named, &constants);
            constants.extend(missing.into_iter().map(|name| (name, Value::Null)));
        }
        let query = crate::scan::sql::compile_with(sql, &self.sql_columns(), &constants)?
            .fold_constants(self.format.values_typed());
        if by_name && !query.is_aggregate() && query.output_names().is_none() {
            return Err(ScanError::InvalidScan(
                "SELECT * over objects whose columns may differ: name the columns".into(),
            ));
        }
        if let Some(parquet) = &self.parquet {
            for path in query.paths() {
                check_parquet_column(&self.columns, &parquet.types, &path)?;
            }
        }
        Ok(query)
    }

    /// The values that stand for columns in every record: the hive partitions, then the virtual
    /// columns a real column of the same name does not shadow. A partition named as a real column
    /// is refused: which one a query means would be a guess.
    fn constants(&self) -> Result<Constants, ScanError> {
        let real = |name: &str| self.columns.iter().any(|c| c.eq_ignore_ascii_case(name));
        let partitions = &self.joined.partitions;
        if let Some((name, _)) = partitions.iter().find(|(name, _)| real(name)) {
            return Err(ScanError::InvalidScan(format!(
                "`{name}` is both a hive partition of {} and one of its columns; rename one or \
                 turn hive partitioning off",
                self.object.url()
            )));
        }
        let partitions = partitions
            .iter()
            .map(|(name, value)| (name.clone(), crate::scan::objects::hive::value(value)));
        let virtual_columns = self
            .object
            .virtual_columns()
            .into_iter()
            .filter(|(name, _)| !real(name));
        Ok(partitions.chain(virtual_columns).collect())
    }

    /// Whether the object's columns are bound by name, a column it lacks being NULL (JSON Lines
    /// binds fields by name already: an absent one is NULL).
    fn binds_by_name(&self) -> bool {
        self.joined.union_by_name
            && matches!(
                self.format,
                InputFormat::Csv { header: true, .. } | InputFormat::Parquet
            )
    }

    /// The columns `named` (a query compiled with named columns) names that the object lacks:
    /// those that are no column of the object and no constant, each once.
    fn missing_columns(
        &self,
        named: &crate::scan::sql::Query,
        constants: &Constants,
    ) -> Vec<String> {
        let known = |name: &str| {
            self.columns.iter().any(|c| c.eq_ignore_ascii_case(name))
                || constants.iter().any(|(c, _)| c.eq_ignore_ascii_case(name))
                || positional(name)
        };
        let mut missing: Vec<String> = named
            .paths()
            .into_iter()
            .filter_map(|path| path.into_iter().next())
            .filter(|name| !known(name))
            .collect();
        missing.sort_by_key(|name| name.to_ascii_lowercase());
        missing.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        missing
    }

    /// The columns `named` (a query compiled with named columns) names that this object lacks,
    /// NULL in its records, when its columns are bound by name (none otherwise).
    pub fn lacks(&self, named: &crate::scan::sql::Query) -> Vec<String> {
        if !self.binds_by_name() {
            return Vec::new();
        }
        match self.constants() {
            Ok(constants) => self.missing_columns(named, &constants),
            Err(_) => Vec::new(),
        }
    }

    /// Whether the object is read as one decompressed stream from its start, in one chunk (a
    /// compressed object), rather than in byte ranges.
    pub fn whole_stream(&self) -> bool {
        !self.compression.splittable()
    }

    /// Whether chunk `index` of one object continues records the chunk before began: any
    /// chunk after the first of an object read in byte ranges. (A chunk of many objects says
    /// so in its report, [`crate::scan::ChunkReport::continues`].)
    pub fn continues(&self, index: u32) -> bool {
        index > 0 && !self.whole_stream()
    }

    /// Number of chunks: one for a gzipped object, one per run of row groups for Parquet.
    pub fn chunk_count(&self) -> u32 {
        if let Some(plan) = &self.plan {
            return plan.chunks;
        }
        match &self.parquet {
            Some(parquet) => parquet.chunk_starts.len() as u32,
            None if !self.compression.splittable() => 1,
            None => chunk_count(self.data_start, self.object.size, self.chunk_size) as u32,
        }
    }

    /// What the chunks are, as the scan's status says when it starts.
    pub fn describe(&self) -> String {
        if let Some(plan) = &self.plan {
            return format!(
                "{} chunks of {} objects, about {} bytes each",
                plan.chunks, plan.objects, self.chunk_size
            );
        }
        if let Some(parquet) = &self.parquet {
            return format!(
                "{} chunks of the {} row groups, about {} bytes each",
                self.chunk_count(),
                parquet.row_groups,
                self.chunk_size
            );
        }
        if self.whole_stream() {
            return format!(
                "{}-compressed: not splittable, scanned as one chunk",
                self.compression.name()
            );
        }
        format!("{} chunks of {} bytes", self.chunk_count(), self.chunk_size)
    }

    /// Byte range `[start, end)` of chunk `index` (of the decompressed stream when gzipped; all
    /// the row groups of a Parquet object, whose chunks are [`Layout::row_groups`]).
    pub fn range(&self, index: u32) -> (u64, u64) {
        // A chunk of many objects has pieces, not one range: its report says what it read.
        if self.plan.is_some() {
            return (0, 0);
        }
        if let Some(parquet) = &self.parquet {
            return (self.data_start, parquet.data_end(self.object.size));
        }
        if !self.compression.splittable() {
            return (self.data_start, u64::MAX);
        }
        let start = self.data_start + u64::from(index) * self.chunk_size;
        (start, (start + self.chunk_size).min(self.object.size))
    }
}

/// Refuses a path a Parquet query cannot read: no such column, or one inside a list or map.
fn check_parquet_column(
    columns: &[String],
    types: &[String],
    path: &[String],
) -> Result<(), ScanError> {
    let name = path.join(".");
    let refuse = |message: String| {
        Err(ScanError::InvalidSql(crate::scan::sql::SqlError {
            message,
        }))
    };
    if columns.contains(&name) {
        return match columns.iter().zip(types).find(|(c, _)| **c == name) {
            Some((_, kind)) if is_nested(kind) => refuse(format!(
                "column `{name}` is {kind}: lists and maps cannot be used in a query"
            )),
            _ => Ok(()),
        };
    }
    // A struct as a whole (its fields follow with a dot), or a path into a list or map.
    if columns.iter().any(|c| c.starts_with(&format!("{name}."))) {
        return Ok(());
    }
    if let Some((column, kind)) = columns
        .iter()
        .zip(types)
        .find(|(c, _)| name.starts_with(&format!("{c}.")))
    {
        return refuse(format!(
            "column `{column}` is {kind}: `{name}` cannot reach into it"
        ));
    }
    let mut known: Vec<&str> = columns.iter().map(String::as_str).take(20).collect();
    if columns.len() > known.len() {
        known.push("...");
    }
    refuse(format!(
        "no column `{name}`; the object's columns are {}",
        known.join(", ")
    ))
}

/// Whether `name` is a CSV column by position (`_1`, `_2`, ...).
fn positional(name: &str) -> bool {
    name.strip_prefix('_')
        .is_some_and(|n| n.parse::<usize>().is_ok_and(|n| n >= 1))
}

fn is_nested(kind: &str) -> bool {
    [
        "List",
        "LargeList",
        "FixedSizeList",
        "Map",
        "ListView",
        "LargeListView",
    ]
    .iter()
    .any(|nested| kind.starts_with(&format!("{nested}(")))
}

/// Number of `chunk_size` ranges covering `[data_start, size)`.
pub fn chunk_count(data_start: u64, size: u64, chunk_size: u64) -> u64 {
    size.saturating_sub(data_start).div_ceil(chunk_size)
}

/// Sorted chunk indexes as compact ranges, such as "0-41,43,45-99".
pub fn compact_ranges(indexes: impl IntoIterator<Item = u32>) -> String {
    let mut text = String::new();
    let mut run: Option<(u32, u32)> = None;
    let flush = |text: &mut String, (first, last): (u32, u32)| {
        if !text.is_empty() {
            text.push(',');
        }
        if first == last {
            text.push_str(&first.to_string());
        } else {
            text.push_str(&format!("{first}-{last}"));
        }
    };
    for index in indexes {
        run = match run {
            Some((first, last)) if index == last + 1 => Some((first, index)),
            Some(done) => {
                flush(&mut text, done);
                Some((index, index))
            }
            None => Some((index, index)),
        };
    }
    if let Some(done) = run {
        flush(&mut text, done);
    }
    text
}

/// The indexes below `limit` of compact ranges (the inverse of [`compact_ranges`]); an index at
/// or past `limit` is an error, so that no text can make the list large.
pub fn expand_ranges(text: &str, limit: u32) -> Result<Vec<u32>, String> {
    let mut indexes = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let parse = |n: &str| {
            n.parse::<u32>()
                .ok()
                .filter(|n| *n < limit)
                .ok_or_else(|| format!("bad chunk range {part:?}"))
        };
        indexes.extend(parse(first)?..=parse(last)?);
    }
    Ok(indexes)
}

/// The format `auto` takes an object for: Parquet when it starts with `PAR1`, else by its name's
/// extension (a compression's ending set aside), else CSV.
pub async fn detect_format(
    s3: &Client,
    bucket: &str,
    key: &str,
) -> Result<DetectedFormat, ScanError> {
    let location = format!("s3://{bucket}/{key}");
    within_deadline(
        &location,
        PLANNING_DEADLINE,
        detect_format_now(s3, bucket, key),
    )
    .await
}

async fn detect_format_now(
    s3: &Client,
    bucket: &str,
    key: &str,
) -> Result<DetectedFormat, ScanError> {
    let (size, etag) = crate::s3::object_version(s3, bucket, key)
        .await
        .map_err(read_failure)?;
    if size >= MAGIC.len() as u64 {
        let range = (0, MAGIC.len() as u64);
        let start = RangeStream::new(s3, bucket, key, etag.as_deref(), range)
            .collect(MAGIC.len())
            .await
            .map_err(read_failure)?;
        if start == MAGIC {
            return Ok(DetectedFormat::Parquet);
        }
    }
    Ok(format_by_name(key))
}

/// Formats `auto` can find.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetectedFormat {
    /// Delimited text: any object not found to be another format.
    Csv,
    /// Named `.jsonl`, `.ndjson` or `.json`.
    JsonLines,
    /// Starts with `PAR1`, or named `.parquet` or `.pq`.
    Parquet,
}

/// The format an object's name suggests (CSV when it suggests none).
pub fn format_by_name(key: &str) -> DetectedFormat {
    let name = key.to_ascii_lowercase();
    let (_, name) = Compression::of_name(&name);
    match name.rsplit_once('.').map(|(_, extension)| extension) {
        Some("parquet" | "pq") => DetectedFormat::Parquet,
        Some("jsonl" | "ndjson" | "json") => DetectedFormat::JsonLines,
        _ => DetectedFormat::Csv,
    }
}

/// What to plan.
#[derive(Clone, Debug)]
pub struct PlanRequest {
    /// Bucket of the object to scan.
    pub bucket: String,
    /// Key of the object to scan.
    pub key: String,
    /// How the object's records are encoded.
    pub format: InputFormat,
    /// Columns the header row (or Parquet schema) must have; `None` takes any.
    pub expected_headers: Option<Vec<String>>,
    /// Bytes of the object per chunk, at least 1.
    pub chunk_size: u64,
    /// Longest record a chunk reads, in bytes; a longer one is bad data.
    pub max_record_size: u64,
}

/// Longest planning may take: its reads are of an endpoint a spec names, and the operator plans
/// inside a reconcile. Past it a scan fails as SourceStalled.
pub const PLANNING_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// `work` within `deadline`.
async fn within_deadline<T>(
    location: &str,
    deadline: std::time::Duration,
    work: impl Future<Output = Result<T, ScanError>>,
) -> Result<T, ScanError> {
    tokio::time::timeout(deadline, work)
        .await
        .unwrap_or_else(|_| {
            Err(ScanError::Stalled(format!(
                "planning {location} took longer than {} s",
                deadline.as_secs_f64()
            )))
        })
}

/// Reads the object's size and ETag and its header row, and lays out the chunks, within
/// [`PLANNING_DEADLINE`]. Nothing runs when the header is not the expected one.
pub async fn plan(s3: &Client, request: &PlanRequest) -> Result<Layout, ScanError> {
    plan_within(s3, request, PLANNING_DEADLINE).await
}

/// [`plan`] within `deadline` (the operator's setting).
pub async fn plan_within(
    s3: &Client,
    request: &PlanRequest,
    deadline: std::time::Duration,
) -> Result<Layout, ScanError> {
    let location = format!("s3://{}/{}", request.bucket, request.key);
    within_deadline(&location, deadline, plan_now(s3, request)).await
}

async fn plan_now(s3: &Client, request: &PlanRequest) -> Result<Layout, ScanError> {
    check_request(request)?;
    let location = format!("s3://{}/{}", request.bucket, request.key);
    let head = s3
        .head_object()
        .bucket(&request.bucket)
        .key(&request.key)
        .send()
        .await
        .map_err(|e| s3_error(&format!("HEAD {location}"), e))?;
    let size = head.content_length().unwrap_or_default().max(0) as u64;
    let object = ObjectVersion::pinned(
        &request.bucket,
        &request.key,
        size,
        head.e_tag().map(str::to_string),
    )?
    .modified_at(head.last_modified());
    plan_version(s3, request, object, head.content_encoding(), 0).await
}

/// Plans `object` (its version already known, from a listing or a HEAD) for `request`'s format:
/// reads its first bytes (its compression, header row and where records start), or a Parquet
/// footer.
pub fn plan_object<'a>(
    s3: &'a Client,
    request: &'a PlanRequest,
    object: ObjectVersion,
) -> impl Future<Output = Result<Layout, ScanError>> + 'a {
    // Not an async fn of its own: one async layer less in the types of its callers' futures.
    plan_object_reading(s3, request, object, 0)
}

/// [`plan_object`], for chunks that run in this process: a text object of at most
/// [`WHOLE_OBJECT_READ`] bytes is read whole, and its layout holds it.
pub fn plan_object_to_run<'a>(
    s3: &'a Client,
    request: &'a PlanRequest,
    object: ObjectVersion,
) -> impl Future<Output = Result<Layout, ScanError>> + 'a {
    plan_object_reading(s3, request, object, WHOLE_OBJECT_READ)
}

async fn plan_object_reading(
    s3: &Client,
    request: &PlanRequest,
    object: ObjectVersion,
    whole_up_to: u64,
) -> Result<Layout, ScanError> {
    check_request(request)?;
    let location = object.url();
    within_deadline(
        &location,
        PLANNING_DEADLINE,
        plan_version(s3, request, object, None, whole_up_to),
    )
    .await
}

/// [`plan_object`]; `content_encoding` is the object's header, when a HEAD gave it; a text
/// object of at most `whole_up_to` bytes is read whole, and its layout holds it.
async fn plan_version(
    s3: &Client,
    request: &PlanRequest,
    object: ObjectVersion,
    content_encoding: Option<&str>,
    whole_up_to: u64,
) -> Result<Layout, ScanError> {
    let location = object.url();
    let size = object.size;
    if request.format == InputFormat::Parquet {
        return plan_parquet(s3, request, object).await;
    }
    let whole = size <= whole_up_to;
    let read_length = if whole {
        size
    } else {
        size.min(MAX_HEADER_BYTES)
    };
    let read = read_prefix(s3, &object, read_length).await?;
    // What the header row is looked for in, whatever more was read.
    let prefix = contiguous(&read, MAX_HEADER_BYTES);
    if prefix.starts_with(MAGIC) && std::str::from_utf8(&prefix).is_err() {
        return Err(ScanError::InvalidObject(format!(
            "{location} is a Parquet file (it starts with PAR1): scan it with the parquet format"
        )));
    }
    let compression = match magic(&prefix) {
        Some(Magic::Compressed(compression)) => compression,
        Some(Magic::Unsupported(kind)) => {
            return Err(ScanError::Unsupported(format!(
                "{location} is {kind}-compressed; gzip, zstd and bzip2 are read"
            )));
        }
        _ => content_encoding
            .and_then(|encoding| Compression::named(&encoding.to_ascii_lowercase()))
            .filter(|c| matches!(c, Compression::Gzip | Compression::Zstd))
            .unwrap_or(Compression::None),
    };
    let (text, complete) = match compression {
        Compression::None => (prefix, size <= MAX_HEADER_BYTES),
        compressed => {
            let (text, complete) = decompressed_start(compressed, &prefix, size);
            // bzip2 gives no text before a whole block (up to 900 kB of it): read on to the end
            // of the first block when the start decoded short.
            if text.len() < MAX_HEADER_BYTES as usize && !complete && size > prefix.len() as u64 {
                let first_block_end = size.min(MAX_COMPRESSED_START);
                let first_block = match whole {
                    true => contiguous(&read, first_block_end),
                    false => {
                        contiguous(&read_prefix(s3, &object, first_block_end).await?, u64::MAX)
                    }
                };
                decompressed_start(compressed, &first_block, size)
            } else {
                (text, complete)
            }
        }
    };
    let bom = if text.starts_with(UTF8_BOM) { 3 } else { 0 };
    let (columns, data_start) = match request.format {
        InputFormat::Csv { header: true, .. } => {
            let (columns, length) = header_row(request.format, &text[bom..], complete)
                .map_err(|e| ScanError::InvalidScan(format!("{location}: {e}")))?;
            (columns, bom as u64 + length)
        }
        _ => (Vec::new(), bom as u64),
    };
    if let Some(expected) = &request.expected_headers
        && *expected != columns
    {
        return Err(ScanError::HeaderMismatch(format!(
            "{location} has columns {columns:?}, expected {expected:?}"
        )));
    }
    let layout = Layout {
        object,
        format: request.format,
        columns,
        data_start,
        chunk_size: request.chunk_size,
        compression,
        max_record_size: request.max_record_size,
        parquet: None,
        joined: JoinedColumns::default(),
        plan: None,
        prefetched: Prefetched(whole.then(|| read.into())),
    };
    let chunks = chunk_count(data_start, size, request.chunk_size);
    if compression.splittable() && chunks > MAX_CHUNKS {
        return Err(ScanError::InvalidScan(format!(
            "chunk size {} gives {chunks} chunks for {size} bytes; at most {MAX_CHUNKS} are allowed, use a larger chunk size",
            request.chunk_size
        )));
    }
    Ok(layout)
}

async fn plan_parquet(
    s3: &Client,
    request: &PlanRequest,
    object: ObjectVersion,
) -> Result<Layout, ScanError> {
    let (columns, parquet) = parquet::plan(
        s3,
        (object.bucket.as_str(), object.key.as_str()),
        (&object.etag, object.size),
        request.chunk_size,
    )
    .await?;
    if let Some(expected) = &request.expected_headers
        && *expected != columns
    {
        return Err(ScanError::HeaderMismatch(format!(
            "{} has columns {columns:?}, expected {expected:?}",
            object.url()
        )));
    }
    Ok(Layout {
        object,
        format: InputFormat::Parquet,
        columns,
        data_start: MAGIC.len() as u64,
        chunk_size: request.chunk_size,
        compression: Compression::None,
        max_record_size: request.max_record_size,
        parquet: Some(parquet),
        joined: JoinedColumns::default(),
        plan: None,
        prefetched: Prefetched::default(),
    })
}

fn check_request(request: &PlanRequest) -> Result<(), ScanError> {
    if request.chunk_size == 0 {
        return Err(ScanError::InvalidScan(
            "chunk size must be at least 1 byte".into(),
        ));
    }
    if let InputFormat::Csv {
        delimiter, quote, ..
    } = request.format
        && (delimiter == quote
            || [delimiter, quote]
                .iter()
                .any(|b| matches!(b, b'\r' | b'\n')))
    {
        return Err(ScanError::InvalidScan(
            "the CSV delimiter and quote must differ and be neither CR nor LF".into(),
        ));
    }
    Ok(())
}

/// The start of a compressed object's text (at most the header limit) from its first bytes, and
/// whether that is all of it.
fn decompressed_start(compression: Compression, prefix: &[u8], size: u64) -> (Vec<u8>, bool) {
    let mut decoded = Vec::new();
    let read = compression
        .decoder(prefix)
        .and_then(|decoder| decoder.take(MAX_HEADER_BYTES).read_to_end(&mut decoded));
    // A prefix of a compressed stream ends in a truncated-stream error: what decoded is the start.
    let complete = read.is_ok() && size <= prefix.len() as u64;
    (decoded, complete)
}

/// The object's first `length` bytes, as their buffers arrived.
async fn read_prefix(
    s3: &Client,
    object: &ObjectVersion,
    length: u64,
) -> Result<Vec<bytes::Bytes>, ScanError> {
    if length == 0 {
        return Ok(Vec::new());
    }
    let range = (0, length);
    RangeStream::new(s3, &object.bucket, &object.key, Some(&object.etag), range)
        .collect_frames(length as usize)
        .await
        .map_err(read_failure)
}

/// The first `length` bytes of `frames` (all of them when shorter) in one buffer.
fn contiguous(frames: &[bytes::Bytes], length: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    for frame in frames {
        let left = usize::try_from(length).unwrap_or(usize::MAX) - bytes.len();
        if left == 0 {
            break;
        }
        bytes.extend_from_slice(&frame[..frame.len().min(left)]);
    }
    bytes
}

/// The header row's fields and its length including the terminator byte that ends it.
fn header_row(
    format: InputFormat,
    text: &[u8],
    complete: bool,
) -> Result<(Vec<String>, u64), String> {
    let InputFormat::Csv {
        delimiter, quote, ..
    } = format
    else {
        return Err("only CSV objects have a header row".into());
    };
    let mut reader = csv_core::ReaderBuilder::new()
        .delimiter(delimiter)
        .quote(quote)
        .build();
    let mut out = vec![0u8; text.len() + 1];
    let mut ends = vec![0usize; text.len() + 1];
    // A blank line first: csv-core strips a byte-order mark only on its first read (done above).
    reader.read_record(b"\n", &mut out, &mut ends);
    let (mut result, consumed, written, mut fields) = reader.read_record(text, &mut out, &mut ends);
    if result == csv_core::ReadRecordResult::InputEmpty {
        if !complete {
            return Err(format!(
                "the header row is longer than {MAX_HEADER_BYTES} bytes"
            ));
        }
        // The end of the object ends the header row; its last fields follow the ones read.
        let (last, _, _, more) = reader.read_record(&[], &mut out[written..], &mut ends[fields..]);
        (result, fields) = (last, fields + more);
    }
    if result != csv_core::ReadRecordResult::Record {
        return Err("the object has no header row".into());
    }
    let mut columns = Vec::with_capacity(fields);
    let mut from = 0;
    for &end in &ends[..fields] {
        let name = std::str::from_utf8(&out[from..end])
            .map_err(|_| "the header row is not UTF-8".to_string())?;
        columns.push(name.to_string());
        from = end;
    }
    Ok((columns, consumed as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetched_bytes_are_given_from_any_offset() {
        let frames: Vec<bytes::Bytes> = ["ab", "", "cde"]
            .iter()
            .map(|f| bytes::Bytes::from_static(f.as_bytes()))
            .collect();
        let prefetched = Prefetched(Some(frames.into()));
        let joined = |from: u64| prefetched.from_offset(5, from).map(|rest| rest.concat());
        assert_eq!(joined(0).as_deref(), Some(&b"abcde"[..]));
        assert_eq!(joined(2).as_deref(), Some(&b"cde"[..]));
        assert_eq!(joined(3).as_deref(), Some(&b"de"[..]));
        assert_eq!(joined(5).as_deref(), Some(&b""[..]));
        // Bytes that are not the whole object are not taken for it.
        assert_eq!(prefetched.from_offset(6, 0), None);
        assert_eq!(Prefetched::default().from_offset(0, 0), None);
    }

    const CSV: InputFormat = InputFormat::Csv {
        delimiter: b',',
        quote: b'"',
        header: true,
    };

    type HeaderCase<'a> = (&'a [u8], bool, Result<(Vec<&'a str>, u64), &'a str>);

    #[test]
    fn header_rows() {
        let cases: &[HeaderCase] = &[
            (b"a,b\n1,2\n", true, Ok((vec!["a", "b"], 4))),
            (b"a,b\r\n1,2\n", true, Ok((vec!["a", "b"], 4))),
            (b"\"x\ny\",b\n1\n", true, Ok((vec!["x\ny", "b"], 8))),
            (b"a,b", true, Ok((vec!["a", "b"], 3))),
            (
                b"a,b",
                false,
                Err("the header row is longer than 65536 bytes"),
            ),
            (b"", true, Err("the object has no header row")),
        ];
        for (text, complete, want) in cases {
            let got = header_row(CSV, text, *complete);
            let want = want
                .clone()
                .map(|(cols, n)| (cols.iter().map(|c| c.to_string()).collect(), n))
                .map_err(str::to_string);
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn times_are_written_as_s3_writes_them() {
        use aws_sdk_s3::primitives::DateTime;
        for (seconds, nanos, text) in [
            (1_717_200_000, 0, "2024-06-01T00:00:00.000Z"),
            (1_717_200_000, 500_000_000, "2024-06-01T00:00:00.500Z"),
            (1_717_200_001, 123_456_789, "2024-06-01T00:00:01.123Z"),
            (0, 0, "1970-01-01T00:00:00.000Z"),
        ] {
            let time = DateTime::from_secs_and_nanos(seconds, nanos);
            assert_eq!(s3_time(&time).as_deref(), Some(text));
        }
        // Text order is time order, within a second too.
        let times: Vec<String> = [(5, 0), (5, 1_000_000), (5, 900_000_000), (6, 0)]
            .iter()
            .map(|(s, n)| s3_time(&DateTime::from_secs_and_nanos(*s, *n)).unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    }

    #[test]
    fn partitions_and_virtual_columns_stand_for_values_unless_a_column_is_named_so() {
        let layout = |columns: &[&str], partitions: &[(&str, &str)]| Layout {
            object: ObjectVersion::pinned("b", "y=2024/day.csv", 10, Some("\"e1\"".into()))
                .unwrap(),
            format: CSV,
            columns: columns.iter().map(|c| c.to_string()).collect(),
            data_start: 0,
            chunk_size: 10,
            compression: Compression::None,
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
            parquet: None,
            joined: JoinedColumns {
                partitions: partitions
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                union_by_name: false,
            },
            plan: None,
            prefetched: Default::default(),
        };
        let compiled = |layout: &Layout, filter: &str| {
            let sql = format!("SELECT COUNT(*) FROM S3Object s WHERE {filter}");
            layout.compile(&sql).unwrap()
        };
        let plain = layout(&["v"], &[("y", "2024")]);
        for (filter, kept) in [
            ("y = 2024", true),
            ("y = 2025", false),
            ("s.y > '2023' AND _size = 10", true),
            (
                "_file = 'day.csv' AND _path = 's3://b/y=2024/day.csv'",
                true,
            ),
            ("_etag = 'e1'", true),
            ("_mtime IS NULL", true),
            ("_size > 10", false),
        ] {
            let query = compiled(&plain, filter);
            assert_eq!(query.csv_fields_read(false), 0, "{filter}: no field read");
            assert_eq!(query.may_match(&NoBounds), kept, "{filter}");
        }
        // A real column named `_file` wins: the query reads the field.
        let shadowed = layout(&["_file", "v"], &[]);
        assert_eq!(compiled(&shadowed, "_file = 'x'").csv_fields_read(false), 1);
        // A partition named as a column is a guess the scan refuses.
        let clash = layout(&["y", "v"], &[("y", "2024")]);
        let error = clash.compile("SELECT COUNT(*) FROM S3Object").unwrap_err();
        assert!(
            error.to_string().contains("both a hive partition"),
            "{error}"
        );
    }

    struct NoBounds;

    impl crate::scan::sql::Bounds for NoBounds {
        fn bounds(&self, _: &[String]) -> Option<crate::scan::sql::ColumnBounds<'_>> {
            None
        }
    }

    #[test]
    fn chunk_ranges_cover_the_data_once() {
        for (data_start, size, chunk_size) in
            [(0, 10, 3), (4, 10, 3), (4, 4, 3), (0, 1, 7), (9, 100, 1)]
        {
            let layout = Layout {
                object: crate::scan::ObjectVersion {
                    bucket: "b".into(),
                    key: "k".into(),
                    size,
                    etag: "e".into(),
                    modified: None,
                },
                format: CSV,
                columns: vec![],
                data_start,
                chunk_size,
                compression: Compression::None,
                max_record_size: DEFAULT_MAX_RECORD_SIZE,
                parquet: None,
                joined: JoinedColumns::default(),
                plan: None,
                prefetched: Default::default(),
            };
            let mut next = data_start;
            for index in 0..layout.chunk_count() {
                let (start, end) = layout.range(index);
                assert_eq!(start, next);
                assert!(end > start && end - start <= chunk_size);
                next = end;
            }
            assert_eq!(next, size.max(data_start));
        }
    }

    #[test]
    fn formats_by_name() {
        let cases = [
            ("trips.parquet", DetectedFormat::Parquet),
            ("a/b/part-0.PQ", DetectedFormat::Parquet),
            ("events.jsonl.gz", DetectedFormat::JsonLines),
            ("events.ndjson", DetectedFormat::JsonLines),
            ("data.csv", DetectedFormat::Csv),
            ("data", DetectedFormat::Csv),
            ("dir.parquet/data.txt", DetectedFormat::Csv),
        ];
        for (key, want) in cases {
            assert_eq!(format_by_name(key), want, "{key}");
        }
    }

    #[test]
    fn parquet_columns_a_query_can_name() {
        let columns: Vec<String> = ["id", "s.a.b", "tags", "when"].map(String::from).to_vec();
        let types: Vec<String> = ["Int64", "Utf8", "List(Utf8)", "Date32"]
            .map(String::from)
            .to_vec();
        let check = |path: &str| {
            let path: Vec<String> = path.split('.').map(String::from).collect();
            check_parquet_column(&columns, &types, &path).map_err(|e| e.to_string())
        };
        assert_eq!(check("id"), Ok(()));
        assert_eq!(check("s.a.b"), Ok(()));
        assert_eq!(check("s.a"), Ok(()));
        assert_eq!(check("s"), Ok(()));
        let refused = [
            (
                "tags",
                "column `tags` is List(Utf8): lists and maps cannot be used in a query",
            ),
            (
                "tags.x",
                "column `tags` is List(Utf8): `tags.x` cannot reach into it",
            ),
            (
                "nope",
                "no column `nope`; the object's columns are id, s.a.b, tags, when",
            ),
            (
                "s.c",
                "no column `s.c`; the object's columns are id, s.a.b, tags, when",
            ),
        ];
        for (path, want) in refused {
            assert_eq!(check(path), Err(want.to_string()), "{path}");
        }
    }

    #[test]
    fn compact_ranges_round_trip() {
        let cases: &[(&[u32], &str)] = &[
            (&[], ""),
            (&[0], "0"),
            (&[0, 1, 2, 3, 5, 7, 8], "0-3,5,7-8"),
            (&[41, 43], "41,43"),
        ];
        for (indexes, text) in cases {
            assert_eq!(compact_ranges(indexes.iter().copied()), *text);
            assert_eq!(expand_ranges(text, 100).unwrap(), *indexes);
        }
        assert!(expand_ranges("1-x", 100).is_err());
        // Nothing past the limit, however the text asks for it.
        assert!(expand_ranges("0-4294967295", 100).is_err());
        assert!(expand_ranges("100", 100).is_err());
        assert_eq!(expand_ranges("99", 100), Ok(vec![99]));
    }
}
