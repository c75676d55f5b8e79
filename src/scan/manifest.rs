//! The manifest written next to a scan's output (chunks, ranges, record counts, output parts,
//! source ETag), and row output held to a LIMIT.
//!
//! LIMIT n keeps the first n rows in object order. Every chunk stops at n rows of its own; the
//! chunk whose rows cross the LIMIT (the [`Crossing`]) runs again, once every chunk is in, keeping
//! only the rows within it ([`crate::scan::ChunkTask::keep_rows`]), and the parts past it are
//! deleted. Nothing cuts a part by reading it: whoever writes the manifest (the operator) never
//! decodes a part a tenant can rewrite.

use aws_sdk_s3::Client;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use super::chunk::{ChunkReport, Output, PieceRead, RowGroupsRead};
use super::objects::ObjectFailure;
use super::objects::segments::PlannedPiece;
use super::plan::Layout;
use super::text::split::State;
use super::{ScanError, delete_object, put_object};

/// What the manifest records of one accepted chunk: a report's counts, never its partials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkSummary {
    /// The chunk's index.
    pub index: u32,
    /// Records that start in the chunk.
    pub records: u64,
    /// Rows the query selected from them, before the LIMIT cuts any.
    pub rows: u64,
    /// Whether the chunk wrote a part (its key is the output's for its index).
    pub part: bool,
    /// A Parquet chunk's row groups and what of them it read.
    pub row_groups: Option<RowGroupsRead>,
    /// A chunk of many objects: what it read of each piece (`None`: left out).
    pub pieces: Vec<Option<PieceRead>>,
    /// A chunk of many objects: the first of those it left out, named.
    pub skipped: Vec<ObjectFailure>,
}

impl From<&ChunkReport> for ChunkSummary {
    fn from(report: &ChunkReport) -> ChunkSummary {
        ChunkSummary {
            index: report.index,
            records: report.records,
            rows: report.rows,
            part: report.part.is_some(),
            row_groups: report.row_groups.clone(),
            pieces: report.pieces.clone(),
            skipped: report.skipped.first.clone(),
        }
    }
}

/// The chunk whose rows cross the query's LIMIT: its index, the rows of it within the LIMIT, and
/// the start state it was accepted from (it runs again from there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Crossing {
    /// The chunk whose rows cross the LIMIT.
    pub index: u32,
    /// Its rows within the LIMIT: the ones its part keeps.
    pub keep: u64,
    /// The true start state it was accepted from.
    pub state: State,
    /// It ran again and its part holds exactly `keep` rows.
    #[serde(default)]
    pub done: bool,
}

impl Crossing {
    /// The crossing, when chunk `index` (accepted from `state`, `before` rows of the LIMIT's
    /// before it) writes rows past `limit`.
    pub fn of(
        limit: Option<u64>,
        before: u64,
        (index, rows, state): (u32, u64, State),
    ) -> Option<Crossing> {
        let limit = limit?;
        let keep = limit.checked_sub(before)?;
        (keep > 0 && rows > keep).then_some(Crossing {
            index,
            keep,
            state,
            done: false,
        })
    }
}

/// Writes `document` as JSON to `s3://bucket/key`, returning that URL.
pub async fn put(
    s3: &Client,
    bucket: &str,
    key: &str,
    document: &serde_json::Value,
) -> Result<String, ScanError> {
    let body = document.to_string().into_bytes();
    put_object(s3, bucket, key, body, Some("application/json")).await?;
    Ok(format!("s3://{bucket}/{key}"))
}

/// The end of a scan whose every chunk is accepted (and whose crossing chunk, if any, ran again
/// to its LIMIT), for the CLI and the controller alike: parts past the LIMIT deleted, then the
/// manifest written. Memory holds one line per chunk of the manifest, never a report.
pub struct Finish<'a> {
    /// The scanned object and its chunks.
    pub layout: &'a Layout,
    /// Where the parts went; `None` when the scan wrote none.
    pub output: Option<&'a Output>,
    /// The query's LIMIT: parts past it are deleted.
    pub limit: Option<u64>,
    /// The query's result (aggregates, or the row count).
    pub result: &'a serde_json::Map<String, serde_json::Value>,
    /// What else to record per chunk (a container processor's output message), by index.
    pub extra: &'a (dyn Fn(u32) -> Option<serde_json::Value> + Sync),
}

impl Finish<'_> {
    /// Writes the manifest at `s3://bucket/key` from the chunks in order; returns its URL.
    pub async fn write(
        &self,
        s3: &Client,
        (bucket, key): (&str, &str),
        chunks: impl Stream<Item = Result<ChunkSummary, ScanError>>,
    ) -> Result<String, ScanError> {
        let layout = self.layout;
        let head = serde_json::json!({
            "source": {
                "bucket": layout.object.bucket,
                "key": layout.object.key,
                "etag": layout.object.etag,
                "size": layout.object.size,
                "gzip": layout.compression == crate::scan::Compression::Gzip,
            },
            "format": layout.format,
            "columns": layout.columns,
            "dataStart": layout.data_start,
            "chunkSize": layout.chunk_size,
            "result": self.result,
            "rowGroups": layout.parquet.as_ref().map(|p| p.row_groups),
            "objects": layout.plan.as_ref().map(|p| p.objects),
            "plan": layout.plan.as_ref().map(|p| format!("s3://{}/{}", p.segment_bucket, p.prefix)),
        });
        let mut body = head.to_string();
        // The object goes on with the chunks, then the totals.
        body.pop();
        body.push_str(",\"chunks\":[");
        let (mut records, mut rows) = (0u64, 0u64);
        let mut left = self.limit;
        let mut chunks = std::pin::pin!(chunks);
        let mut first = true;
        while let Some(chunk) = chunks.next().await {
            let mut chunk = chunk?;
            let kept = left.map_or(chunk.rows, |left| chunk.rows.min(left));
            if let Some(left) = &mut left {
                *left -= kept;
            }
            if kept < chunk.rows {
                if kept > 0 {
                    return Err(ScanError::InvalidReport {
                        chunk: chunk.index,
                        message: format!(
                            "its part holds {} rows where the LIMIT keeps {kept}: it was not \
                             run again to the LIMIT",
                            chunk.rows
                        ),
                    });
                }
                // Past the LIMIT: the part goes (exactly the chunk's own key).
                if let (Some(output), true) = (self.output, chunk.part) {
                    delete_object(s3, &output.bucket, &output.part_key(chunk.index)).await?;
                }
                chunk.rows = 0;
                chunk.part = false;
            }
            records = records.saturating_add(chunk.records);
            rows = rows.saturating_add(chunk.rows);
            if !first {
                body.push(',');
            }
            first = false;
            body.push_str(&self.entry(&chunk).to_string());
        }
        body.push_str(&format!("],\"records\":{records},\"rows\":{rows}}}"));
        put_object(s3, bucket, key, body.into_bytes(), Some("application/json")).await?;
        Ok(format!("s3://{bucket}/{key}"))
    }

    /// A chunk's line of the manifest.
    fn entry(&self, chunk: &ChunkSummary) -> serde_json::Value {
        let (start, end) = self.layout.range(chunk.index);
        let part = match (self.output, chunk.part) {
            (Some(output), true) => Some(output.part_key(chunk.index)),
            _ => None,
        };
        let mut entry = serde_json::json!({
            "index": chunk.index,
            "start": start,
            "end": end.min(self.layout.object.size),
            "records": chunk.records,
            "rows": chunk.rows,
            "part": part,
        });
        if let Some(read) = &chunk.row_groups {
            entry["rowGroups"] = serde_json::json!({
                "first": read.first,
                "end": read.end,
                "skipped": read.skipped,
                "skippedBytes": read.skipped_bytes,
                "fetchedBytes": read.fetched_bytes,
            });
        }
        if let Some(extra) = (self.extra)(chunk.index) {
            entry["output"] = extra;
        }
        entry
    }
}

/// Lines of a shard of a many-object manifest.
const SHARD_LINES: usize = 10_000;

/// One kind of line of a many-object manifest (`chunks`, `objects`), in shards of gzip JSON
/// Lines of at most [`SHARD_LINES`] lines, `<base>/<kind>-00000.jsonl.gz`, ...
struct Shards {
    kind: &'static str,
    lines: Vec<u8>,
    count: usize,
    keys: Vec<String>,
}

impl Shards {
    fn new(kind: &'static str) -> Shards {
        Shards {
            kind,
            lines: Vec::new(),
            count: 0,
            keys: Vec::new(),
        }
    }

    /// Adds `line`, writing the shard once it is full.
    async fn push(
        &mut self,
        s3: &Client,
        at: (&str, &str),
        line: &serde_json::Value,
    ) -> Result<(), ScanError> {
        self.lines.extend_from_slice(line.to_string().as_bytes());
        self.lines.push(b'\n');
        self.count += 1;
        if self.count == SHARD_LINES {
            self.flush(s3, at).await?;
        }
        Ok(())
    }

    /// Writes the lines so far as the next shard, under `base` in `bucket`.
    async fn flush(&mut self, s3: &Client, (bucket, base): (&str, &str)) -> Result<(), ScanError> {
        use std::io::Write;
        if self.count == 0 {
            return Ok(());
        }
        let key = format!("{base}/{}-{:05}.jsonl.gz", self.kind, self.keys.len());
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let packed = gzip
            .write_all(&self.lines)
            .and_then(|()| gzip.finish())
            .map_err(|source| ScanError::Write {
                what: "the manifest".into(),
                source,
            })?;
        put_object(s3, bucket, &key, packed, Some("application/gzip")).await?;
        self.keys.push(key);
        self.lines.clear();
        self.count = 0;
        Ok(())
    }
}

/// One object as the manifest lists it, the counts of its chunks added up.
struct ObjectLine {
    key: String,
    etag: String,
    size: u64,
    records: u64,
    rows: u64,
    /// Why it was left out (changed since it was listed), when it was.
    skipped: Option<String>,
}

impl ObjectLine {
    fn json(&self) -> serde_json::Value {
        let mut line = serde_json::json!({
            "key": self.key,
            "etag": self.etag,
            "size": self.size,
            "status": if self.skipped.is_some() { "skipped" } else { "scanned" },
            "records": self.records,
            "rows": self.rows,
        });
        if let Some(error) = &self.skipped {
            line["error"] = error.as_str().into();
        }
        line
    }
}

/// The manifest of a scan of many objects, written as the chunks are accepted, in order: a line
/// per chunk (its pieces, records, rows and part) and a line per object read or left out (key,
/// ETag, size, status, records, rows, error; pruned objects are counted in the head, not
/// listed), each kind in its [`Shards`] under `<manifest key without .json>/`, then the manifest
/// itself, which names the shards. Memory holds a shard's lines of each kind.
pub struct ShardedManifest {
    bucket: String,
    key: String,
    /// Where the shards go: the manifest's key without `.json`.
    base: String,
    chunks: Shards,
    objects: Shards,
    /// The object whose chunks are being added (a split object's windows are chunks in a row).
    open: Option<ObjectLine>,
    /// Rows the LIMIT still lets through.
    left: Option<u64>,
    /// Records and rows of the chunks so far.
    records: u64,
    rows: u64,
}

impl ShardedManifest {
    /// The manifest at `s3://bucket/key`, its rows held to `limit`.
    pub fn new(bucket: &str, key: String, limit: Option<u64>) -> ShardedManifest {
        ShardedManifest {
            bucket: bucket.to_string(),
            base: key.strip_suffix(".json").unwrap_or(&key).to_string(),
            key,
            chunks: Shards::new("chunks"),
            objects: Shards::new("objects"),
            open: None,
            left: limit,
            records: 0,
            rows: 0,
        }
    }

    /// The rows of a chunk of `rows` (and `records`) the LIMIT lets through, and its part
    /// (`output`'s part key), deleted when it keeps none.
    async fn keep(
        &mut self,
        s3: &Client,
        (rows, records): (u64, u64),
        part: Option<(&Output, String)>,
    ) -> Result<(u64, Option<String>), ScanError> {
        let kept = self.left.map_or(rows, |left| rows.min(left));
        if let Some(left) = &mut self.left {
            *left -= kept;
        }
        let part = match part {
            Some((output, key)) if kept == 0 => {
                delete_object(s3, &output.bucket, &key).await?;
                None
            }
            part => part.map(|(_, key)| key),
        };
        self.records = self.records.saturating_add(records);
        self.rows = self.rows.saturating_add(kept);
        Ok((kept, part))
    }

    /// Adds the next accepted chunk of one object (`report` of chunk `index` of `layout`, its
    /// part in `output`): the rows LIMIT lets through. A chunk past the LIMIT loses its part; the
    /// one whose rows cross it is returned, to run again to it ([`Crossing`]: `state` is its
    /// true start state).
    pub async fn add(
        &mut self,
        s3: &Client,
        (layout, output): (&Layout, &Output),
        report: &ChunkReport,
        state: State,
    ) -> Result<Option<Crossing>, ScanError> {
        let crossing = self
            .left
            .and_then(|left| Crossing::of(Some(left), 0, (report.index, report.rows, state)));
        let part = report
            .part
            .as_ref()
            .map(|_| (output, output.part_key(report.index)));
        let (kept, part) = self.keep(s3, (report.rows, report.records), part).await?;
        let (start, end) = layout.range(report.index);
        let line = serde_json::json!({
            "key": layout.object.key,
            "etag": layout.object.etag,
            "size": layout.object.size,
            "chunk": report.index,
            "start": start,
            "end": end.min(layout.object.size),
            "records": report.records,
            "rows": kept,
            "part": part,
        });
        let at = (self.bucket.as_str(), self.base.as_str());
        self.chunks.push(s3, at, &line).await?;
        let object = ObjectLine {
            key: layout.object.key.clone(),
            etag: layout.object.etag.clone(),
            size: layout.object.size,
            records: report.records,
            rows: kept,
            skipped: None,
        };
        self.piece(s3, object, report.index > 0).await?;
        Ok(crossing)
    }

    /// Adds the next accepted chunk of a plan of many objects (`chunk`, of the planned `pieces`,
    /// its part in `output`), which ran again to the LIMIT when it crosses it.
    pub async fn add_planned(
        &mut self,
        s3: &Client,
        output: Option<&Output>,
        chunk: &ChunkSummary,
        pieces: &[PlannedPiece],
    ) -> Result<(), ScanError> {
        let invalid = |message: String| ScanError::InvalidReport {
            chunk: chunk.index,
            message,
        };
        if chunk.pieces.len() != pieces.len() {
            return Err(invalid(format!(
                "its report lists {} pieces, the plan {}",
                chunk.pieces.len(),
                pieces.len()
            )));
        }
        let part = match (output, chunk.part) {
            (Some(output), true) => Some((output, output.part_key(chunk.index))),
            _ => None,
        };
        let (kept, part) = self.keep(s3, (chunk.rows, chunk.records), part).await?;
        if kept > 0 && kept < chunk.rows {
            return Err(invalid(format!(
                "its part holds {} rows where the LIMIT keeps {kept}: it was not run again to \
                 the LIMIT",
                chunk.rows
            )));
        }
        let listed: Vec<serde_json::Value> = pieces
            .iter()
            .map(|piece| match piece.window {
                Some(window) => serde_json::json!({"key": piece.key, "window": window}),
                None => serde_json::json!({"key": piece.key}),
            })
            .collect();
        let mut line = serde_json::json!({
            "chunk": chunk.index,
            "pieces": listed,
            "records": chunk.records,
            "rows": kept,
            "part": part,
        });
        if let Some(read) = &chunk.row_groups {
            line["rowGroups"] = serde_json::json!({
                "skipped": read.skipped,
                "skippedBytes": read.skipped_bytes,
                "fetchedBytes": read.fetched_bytes,
            });
        }
        let at = (self.bucket.as_str(), self.base.as_str());
        self.chunks.push(s3, at, &line).await?;
        for (piece, read) in pieces.iter().zip(&chunk.pieces) {
            let skipped = read.is_none().then(|| {
                chunk
                    .skipped
                    .iter()
                    .find(|failure| failure.key == piece.key)
                    .map_or_else(
                        || "changed or deleted since it was listed".to_string(),
                        |failure| format!("{}: {}", failure.reason, failure.message),
                    )
            });
            let read = read.unwrap_or_default();
            let object = ObjectLine {
                key: piece.key.clone(),
                etag: piece.etag.clone(),
                size: piece.size,
                records: read.records,
                // Past the LIMIT, the chunk's part is gone with its rows.
                rows: if kept == 0 { 0 } else { read.rows },
                skipped,
            };
            self.piece(s3, object, piece.window.is_some_and(|w| w > 0))
                .await?;
        }
        Ok(())
    }

    /// Adds an object that has no records, so no chunk (a CSV header row only, a Parquet file
    /// without row groups): its line says it was scanned and held none.
    pub async fn add_unread(
        &mut self,
        s3: &Client,
        object: &crate::scan::ObjectVersion,
    ) -> Result<(), ScanError> {
        let line = ObjectLine {
            key: object.key.clone(),
            etag: object.etag.clone(),
            size: object.size,
            records: 0,
            rows: 0,
            skipped: None,
        };
        self.piece(s3, line, false).await
    }

    /// Adds what a chunk read of one object: to the object before when it `continues` it (a
    /// later chunk of the same object), else as the next object.
    async fn piece(
        &mut self,
        s3: &Client,
        object: ObjectLine,
        continues: bool,
    ) -> Result<(), ScanError> {
        if let Some(open) = &mut self.open
            && continues
            && open.key == object.key
        {
            open.records = open.records.saturating_add(object.records);
            open.rows = open.rows.saturating_add(object.rows);
            return Ok(());
        }
        if let Some(done) = self.open.replace(object) {
            let at = (self.bucket.as_str(), self.base.as_str());
            self.objects.push(s3, at, &done.json()).await?;
        }
        Ok(())
    }

    /// Whether the rows so far fill the LIMIT: the chunks after it write none.
    pub fn limit_reached(&self) -> bool {
        self.left == Some(0)
    }

    /// Writes the last shards and the manifest: `head` with the totals and the shards' keys.
    pub async fn finish(
        mut self,
        s3: &Client,
        mut head: serde_json::Value,
    ) -> Result<String, ScanError> {
        let at = (self.bucket.as_str(), self.base.as_str());
        if let Some(done) = self.open.take() {
            self.objects.push(s3, at, &done.json()).await?;
        }
        self.chunks.flush(s3, at).await?;
        self.objects.flush(s3, at).await?;
        head["records"] = self.records.into();
        head["rows"] = self.rows.into();
        head["shards"] = serde_json::json!({
            "chunks": self.chunks.keys,
            "objects": self.objects.keys,
        });
        put(s3, &self.bucket, &self.key, &head).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crossing_chunk_is_the_one_whose_rows_pass_the_limit() {
        let at = |index, rows| (index, rows, State::RecordEnd);
        let crossing = |index, keep| {
            Some(Crossing {
                index,
                keep,
                state: State::RecordEnd,
                done: false,
            })
        };
        // (limit, rows before, (chunk, rows)) -> crossing
        let cases = [
            (Some(5), 3, at(1, 4), crossing(1, 2)),
            (Some(5), 0, at(0, 5), None),
            (Some(5), 5, at(2, 4), None),
            (Some(5), 0, at(0, 6), crossing(0, 5)),
            (Some(0), 0, at(0, 1), None),
            (None, 0, at(0, 100), None),
            (Some(u64::MAX), u64::MAX - 1, at(3, 5), crossing(3, 1)),
            // Rows before it past the LIMIT already (each chunk stops at LIMIT rows of its own).
            (Some(5), 8, at(2, 5), None),
        ];
        for (limit, before, chunk, want) in cases {
            assert_eq!(
                Crossing::of(limit, before, chunk),
                want,
                "{limit:?} {before} {chunk:?}"
            );
        }
    }
}
