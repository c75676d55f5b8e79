//! What a chunk is given and what it reports: the task a worker needs (and nothing else), the
//! report it leaves, and where its row output and upload records go.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::scan::ScanError;
use crate::scan::objects::SkippedObjects;
use crate::scan::plan::Layout;
use crate::scan::text::split::{ChunkSplit, State};
use crate::scan::value::Partial;

/// Encoding of output part files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OutputFormat {
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    JsonLines,
    /// Apache Parquet (zstd), the selected columns in the object's own types: for Parquet objects,
    /// and queries that select columns (no computed values).
    Parquet,
}

impl OutputFormat {
    /// File extension of a part in this format, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Csv => "csv",
            OutputFormat::JsonLines => "jsonl",
            OutputFormat::Parquet => "parquet",
        }
    }
}

/// Where row output goes: one part object per chunk under `prefix`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    /// Bucket the parts and the manifest go to.
    pub bucket: String,
    /// Prepended as it is to every key written (end it in `/` for a folder).
    pub prefix: String,
    /// Encoding of the parts.
    pub format: OutputFormat,
    /// The scan whose keys these are ([`scope_of`] its uid), in every key it writes, so that two
    /// scans sharing a prefix never touch each other's objects; empty for a scan on one machine.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// In a scan of many objects, the number of the part of the object's chunk 0: each object's
    /// parts are numbered on from the previous object's, with ten digits, so that they sort in
    /// key order whatever their count (one object's parts, at most 100,000, have five).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_part: Option<u32>,
}

/// The scope of a scan's keys: the first 8 characters of its uid.
pub fn scope_of(uid: &str) -> String {
    uid.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect()
}

/// `-<scope>`, or nothing for an empty scope.
fn scoped(scope: &str) -> String {
    match scope {
        "" => String::new(),
        scope => format!("-{scope}"),
    }
}

impl Output {
    /// Key of chunk `index`'s part: `<prefix>part-<number>[-<scope>].<extension>`, its number
    /// counted from [`Output::first_part`].
    pub fn part_key(&self, index: u32) -> String {
        format!(
            "{}part-{}{}.{}",
            self.prefix,
            self.part_number(index),
            scoped(&self.scope),
            self.format.extension()
        )
    }

    /// The number of chunk `index`'s part, as its key spells it.
    fn part_number(&self, index: u32) -> String {
        match self.first_part {
            None => format!("{index:05}"),
            Some(first) => format!("{:010}", u64::from(first) + u64::from(index)),
        }
    }

    /// Where chunk `index` records the multipart upload of its part while it runs.
    pub fn upload_record_key(&self, index: u32) -> String {
        let number = u64::from(self.first_part.unwrap_or(0)) + u64::from(index);
        ChunkObject::UploadRecord.key(&self.prefix, &self.scope, number)
    }

    /// The manifest's key.
    pub fn manifest_key(&self) -> String {
        manifest_key(&self.prefix, &self.scope)
    }
}

/// Key of the manifest of the scan `scope` under `prefix`.
pub fn manifest_key(prefix: &str, scope: &str) -> String {
    format!("{prefix}manifest{}.json", scoped(scope))
}

/// What a chunk leaves under a prefix (`<prefix>chunks/<index>.<suffix>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkObject {
    /// Its report, under the scan's work prefix.
    Report,
    /// Its container processor's output message, under the scan's work prefix.
    ProcessorOutput,
    /// The multipart upload of its part, under the output prefix.
    UploadRecord,
}

impl ChunkObject {
    /// Its key for chunk `index` of the scan `scope` (see [`Output::scope`]) under `prefix`.
    pub fn key(self, prefix: &str, scope: &str, index: impl Into<u64>) -> String {
        let index = index.into();
        let suffix = match self {
            ChunkObject::Report => "json",
            ChunkObject::ProcessorOutput => "output.json",
            ChunkObject::UploadRecord => "upload.json",
        };
        format!("{prefix}chunks/{index:05}{}.{suffix}", scoped(scope))
    }
}

/// A multipart upload a chunk started, recorded before any part is sent: a killed chunk's upload
/// is then aborted by its exact id, never found by listing a bucket other scans share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadRecord {
    /// The scan that started it ([`ChunkTask::run`]).
    pub run: String,
    /// Key of the part being uploaded.
    pub key: String,
    /// The multipart upload's id: a killed chunk's upload is aborted by it.
    pub upload_id: String,
}

/// What a chunk does with its records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Work {
    /// Run an SQL query; rows go to `output` when set.
    Query {
        /// The query, as the scan names it.
        sql: String,
        /// Where selected rows go; `None` writes no part.
        output: Option<Output>,
    },
    /// Write the chunk's records, after the header row, to a local file.
    Fetch {
        /// The file to write, in the volume the chunk's processor container shares.
        path: PathBuf,
    },
}

/// Everything one chunk needs: a worker needs nothing else (and no Kubernetes API).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkTask {
    /// The object and the plan every chunk of the scan shares.
    pub layout: Layout,
    /// Which chunk, from 0.
    pub index: u32,
    /// The chunk's true start state when known; otherwise it is guessed and checked afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_state: Option<State>,
    /// What to do with the chunk's records.
    pub work: Work,
    /// Which scan this chunk belongs to (the scan's uid): recorded with every upload the chunk
    /// starts, so that only this scan's uploads are ever aborted for it.
    #[serde(default)]
    pub run: String,
    /// Write only the first this many selected rows: the chunk whose rows cross the query's
    /// LIMIT runs again so, once every chunk is in, and its part holds exactly the rows within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_rows: Option<u64>,
}

impl ChunkTask {
    /// A digest of what every chunk of the scan shares (object version, format, query, output
    /// and scan): a report carries it, so that a report of another task is recognised.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let shared = serde_json::to_vec(&(&self.layout, &self.work, &self.run)).unwrap_or_default();
        hex::encode(&sha2::Sha256::digest(&shared)[..8])
    }
}

/// What one chunk found. Small enough for a termination message (partials are a few numbers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkReport {
    /// The chunk the report is of.
    pub index: u32,
    /// The chunk's byte range `[start, end)`, as its task gave it.
    #[serde(default)]
    pub range: [u64; 2],
    /// The task's [`ChunkTask::fingerprint`].
    #[serde(default)]
    pub fingerprint: String,
    /// The start state the chunk ran from.
    pub assumed: State,
    /// What the chunk's bytes do to each start state: the true start states follow from it.
    pub split: ChunkSplit,
    /// Records that start in the chunk.
    pub records: u64,
    /// Bytes of the chunk's range read (of the decompressed stream when gzipped).
    pub bytes: u64,
    /// Rows the query selected from those records.
    pub rows: u64,
    /// The aggregates' partials, in select-list order (empty for a row query).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partials: Vec<Partial>,
    /// Key of the row output part, when rows were written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    /// The first record the query could not process. It fails the scan only once the chunk's
    /// start state is confirmed: a wrong guess reads garbage records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad_record: Option<BadRecord>,
    /// A Parquet chunk's row groups and what of them it read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_groups: Option<RowGroupsRead>,
    /// A chunk of many objects: the objects it began reading.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub objects: u64,
    /// A chunk of many objects: those it left out as they changed since they were listed
    /// (`onObjectChange: Skip`).
    #[serde(default, skip_serializing_if = "SkippedObjects::is_empty")]
    pub skipped: SkippedObjects,
    /// A chunk of many objects: what it read of each of its pieces, in order (`None`: left out,
    /// changed since it was listed). The manifest lists each object's records and rows from it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pieces: Vec<Option<PieceRead>>,
    /// A chunk of many objects: its piece continues records the chunk before began (a text
    /// window after an object's first), so it starts in the state the chunk before ended in.
    /// Every other chunk of many objects starts an object. The worker reads it from its piece:
    /// the plan holds no list of such chunks, which would grow with the objects.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continues: bool,
}

/// What a chunk read of one piece: its records and the rows selected from them. Serialised as
/// `[records, rows]`, so that a report of 10,000 pieces stays within a report's bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(u64, u64)", into = "(u64, u64)")]
pub struct PieceRead {
    /// Records of the piece.
    pub records: u64,
    /// Rows the query selected from them (and wrote, when the chunk writes rows).
    pub rows: u64,
}

impl From<(u64, u64)> for PieceRead {
    fn from((records, rows): (u64, u64)) -> PieceRead {
        PieceRead { records, rows }
    }
}

impl From<PieceRead> for (u64, u64) {
    fn from(read: PieceRead) -> (u64, u64) {
        (read.records, read.rows)
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a Parquet chunk read of its row groups.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RowGroupsRead {
    /// The chunk's row groups `[first, end)`.
    pub first: u32,
    /// One past the chunk's last row group.
    pub end: u32,
    /// Row groups whose statistics ruled the query out, not read, and their bytes.
    pub skipped: u32,
    /// Bytes of the skipped row groups.
    pub skipped_bytes: u64,
    /// Bytes fetched from S3: only the columns the query reads, of the row groups not skipped.
    pub fetched_bytes: u64,
}

/// A record the query could not process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRecord {
    /// Where the record starts, in bytes of the object (of the decompressed stream when gzipped).
    pub offset: u64,
    /// Why the query could not process it.
    pub message: String,
}

impl ChunkReport {
    /// Whether the chunk's start state could not have been guessed wrong.
    pub fn start_is_certain(&self, task: &ChunkTask) -> bool {
        let continues = match task.layout.plan {
            Some(_) => self.continues,
            None => task.layout.continues(task.index),
        };
        task.start_state.is_some() || task.layout.format.starts_anywhere() || !continues
    }

    /// The bad record as the scan's error.
    pub fn bad_data(&self, layout: &Layout) -> Option<ScanError> {
        let bad = self.bad_record.as_ref()?;
        let (start, end) = layout.range(self.index);
        Some(ScanError::BadData {
            chunk: self.index,
            start,
            end: end.min(layout.object.size),
            offset: bad.offset,
            message: bad.message.clone(),
        })
    }
}
