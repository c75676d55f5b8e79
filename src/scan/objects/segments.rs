//! The plan of a scan of many objects, kept in S3 rather than in memory or in status: its chunks
//! in order, each an ordered list of pieces, written as segments (gzipped JSON Lines, one line
//! per chunk) under the scan's work prefix. A chunk's task names the plan; the worker reads the
//! one line of its chunk, checked against the segment's digest.

use std::io::{BufRead, Read, Write};

use aws_sdk_s3::Client;
use serde::{Deserialize, Serialize};

use crate::scan::plan::ObjectVersion;
use crate::scan::{ScanError, put_object, read_failure};

/// Largest segment read back (gzipped); one holds a listing slice, a few MiB at most.
const SEGMENT_LIMIT: usize = 64 << 20;

/// Longest line of a segment (one chunk: at most 10,000 keys of 1,024 bytes, escaped).
const LINE_LIMIT: u64 = 32 << 20;

/// Where a scan's plan is and what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectPlan {
    /// The bucket of the scanned objects.
    pub bucket: String,
    /// The bucket of the segments (the scan's work bucket).
    pub segment_bucket: String,
    /// Key prefix of the segments.
    pub prefix: String,
    /// The segments in chunk order.
    pub segments: Vec<Segment>,
    /// Number of chunks.
    pub chunks: u32,
    /// Number of objects.
    pub objects: u64,
    /// Whether `k=v` folders of keys are columns.
    #[serde(default)]
    pub hive: super::HivePartitioning,
    /// What becomes of an object changed since it was listed.
    #[serde(default)]
    pub on_object_change: super::OnObjectChange,
    /// Objects a chunk may leave out so, at most (the scan's bound: more fail it anyway).
    #[serde(default)]
    pub max_failed_objects: u64,
}

/// One segment of a plan: its first chunk and the digest of its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    /// The first chunk it holds (it holds those up to the next segment's first).
    pub first: u32,
    /// SHA-256 of its bytes, the first 8 in hex.
    pub digest: String,
}

/// One piece of a chunk: an object, whole, or one `chunkSize` window of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedPiece {
    /// The object's key (its bucket is the plan's).
    pub key: String,
    /// Its ETag, as listed: every read is pinned to it.
    pub etag: String,
    /// Its size, as listed.
    pub size: u64,
    /// The window of an object split across chunks (its chunk `window` of `chunkSize` bytes
    /// after its header); `None`: the whole object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    /// Its last-modified time, as listed (`_mtime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
}

impl PlannedPiece {
    /// The piece of `object`: all of it, or its `window`.
    pub fn of(object: &ObjectVersion, window: Option<u32>) -> PlannedPiece {
        PlannedPiece {
            key: object.key.clone(),
            etag: object.etag.clone(),
            size: object.size,
            window,
            modified: object.modified.clone(),
        }
    }

    /// Whether the piece continues records its object's window before began (a text window
    /// after the first), so that its chunk's start state is the chunk before's end state. A
    /// Parquet window starts at a row group, and a whole object at its start: in a known state.
    pub fn continues(&self, format: crate::scan::InputFormat) -> bool {
        self.window.is_some_and(|w| w > 0) && !format.windows_start_at_records()
    }

    /// The object version it reads, in `bucket`.
    pub fn version(&self, bucket: &str) -> ObjectVersion {
        ObjectVersion {
            bucket: bucket.to_string(),
            key: self.key.clone(),
            size: self.size,
            etag: self.etag.clone(),
            modified: self.modified.clone(),
        }
    }
}

/// One line of a segment.
#[derive(Debug, Serialize, Deserialize)]
struct ChunkLine {
    chunk: u32,
    pieces: Vec<PlannedPiece>,
}

impl ObjectPlan {
    /// Key of segment `number` of digest `digest` under `prefix`: a segment written again from
    /// another listing never replaces one a status records.
    pub fn segment_key(prefix: &str, number: usize, digest: &str) -> String {
        format!("{prefix}segment-{number:05}-{digest}.jsonl.gz")
    }

    /// A digest of the whole plan: the task fingerprint covers it.
    pub fn digest(&self) -> String {
        use sha2::Digest;
        let text = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(&sha2::Sha256::digest(&text)[..8])
    }

    /// The pieces of chunk `index`, read from its segment, which must still be the one planned.
    pub async fn pieces(&self, s3: &Client, index: u32) -> Result<Vec<PlannedPiece>, ScanError> {
        let (number, segment) = self
            .segments
            .iter()
            .enumerate()
            .rfind(|(_, s)| s.first <= index)
            .filter(|_| index < self.chunks)
            .ok_or_else(|| {
                ScanError::InvalidScan(format!(
                    "chunk {index} is not in the plan ({} chunks)",
                    self.chunks
                ))
            })?;
        let (bytes, location) = self.segment(s3, number, segment).await?;
        chunk_in(&bytes, index).map_err(|e| ScanError::InvalidScan(format!("{location}: {e}")))
    }

    /// Every chunk's pieces, in order, a segment in memory at a time.
    pub fn chunks<'a>(&'a self, s3: &'a Client) -> PlanChunks<'a> {
        PlanChunks {
            plan: self,
            s3,
            segment: 0,
            lines: None,
            next: 0,
        }
    }

    /// Segment `number`'s bytes (gzipped), checked against its digest, and its location.
    async fn segment(
        &self,
        s3: &Client,
        number: usize,
        segment: &Segment,
    ) -> Result<(Vec<u8>, String), ScanError> {
        let key = Self::segment_key(&self.prefix, number, &segment.digest);
        let location = format!("s3://{}/{key}", self.segment_bucket);
        let bytes = crate::s3::read_object(s3, &self.segment_bucket, &key, SEGMENT_LIMIT)
            .await
            .map_err(read_failure)?;
        if digest(&bytes) != segment.digest {
            return Err(ScanError::InvalidScan(format!(
                "{location} is not the plan segment the scan wrote (its digest differs)"
            )));
        }
        Ok((bytes, location))
    }
}

/// Lines of a segment being read.
type SegmentLines = std::io::BufReader<flate2::read::GzDecoder<std::io::Cursor<Vec<u8>>>>;

/// A plan's chunks in order ([`ObjectPlan::chunks`]).
pub struct PlanChunks<'a> {
    plan: &'a ObjectPlan,
    s3: &'a Client,
    /// The next segment to read.
    segment: usize,
    /// The segment being read, and its location.
    lines: Option<(SegmentLines, String)>,
    /// The next chunk.
    next: u32,
}

impl PlanChunks<'_> {
    /// The next chunk's pieces; `None` after the last chunk.
    pub async fn next(&mut self) -> Result<Option<Vec<PlannedPiece>>, ScanError> {
        while self.next < self.plan.chunks {
            if let Some((lines, location)) = &mut self.lines {
                let invalid = |e: String| ScanError::InvalidScan(format!("{location}: {e}"));
                match next_line(lines).map_err(invalid)? {
                    Some(line) if line.chunk == self.next => {
                        self.next += 1;
                        return Ok(Some(line.pieces));
                    }
                    Some(line) => {
                        return Err(invalid(format!(
                            "chunk {} where chunk {} comes",
                            line.chunk, self.next
                        )));
                    }
                    None => self.lines = None,
                }
                continue;
            }
            let number = self.segment;
            let segment = self.plan.segments.get(number).ok_or_else(|| {
                ScanError::InvalidScan(format!(
                    "the plan's segments end before chunk {}",
                    self.next
                ))
            })?;
            let (bytes, location) = self.plan.segment(self.s3, number, segment).await?;
            let decoder = flate2::read::GzDecoder::new(std::io::Cursor::new(bytes));
            self.lines = Some((std::io::BufReader::new(decoder), location));
            self.segment += 1;
        }
        Ok(None)
    }
}

/// SHA-256 of `bytes`, the first 8 in hex.
fn digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(bytes)[..8])
}

/// The pieces of chunk `index` in a segment's bytes.
fn chunk_in(gzipped: &[u8], index: u32) -> Result<Vec<PlannedPiece>, String> {
    let mut lines = std::io::BufReader::new(flate2::read::GzDecoder::new(gzipped));
    loop {
        match next_line(&mut lines)? {
            Some(chunk) if chunk.chunk == index => return Ok(chunk.pieces),
            Some(_) => {}
            None => return Err(format!("it has no line of chunk {index}")),
        }
    }
}

/// The next line of a segment's decoded `lines`, at most [`LINE_LIMIT`] bytes; `None` at its end.
fn next_line(lines: &mut impl BufRead) -> Result<Option<ChunkLine>, String> {
    let mut line = Vec::new();
    let read = Read::by_ref(lines)
        .take(LINE_LIMIT)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("it does not decode: {e}"))?;
    if read == 0 {
        return Ok(None);
    }
    if read as u64 == LINE_LIMIT && line.last() != Some(&b'\n') {
        return Err(format!("a line is longer than {LINE_LIMIT} bytes"));
    }
    serde_json::from_slice(&line)
        .map(Some)
        .map_err(|e| format!("a line is no chunk: {e}"))
}

/// Writes `chunks` (numbered from `first`) as segment `number` of a plan under `prefix`: the
/// segment to add to the plan.
pub async fn write_segment(
    s3: &Client,
    (bucket, prefix): (&str, &str),
    number: usize,
    first: u32,
    chunks: &[Vec<PlannedPiece>],
) -> Result<Segment, ScanError> {
    let bytes = encode(first, chunks)?;
    if bytes.len() > SEGMENT_LIMIT {
        return Err(ScanError::TooManyObjects(format!(
            "a plan segment of {} bytes would pass the {SEGMENT_LIMIT} its workers read; the \
             operator's --listing-slice is too large",
            bytes.len()
        )));
    }
    let segment = Segment {
        first,
        digest: digest(&bytes),
    };
    let key = ObjectPlan::segment_key(prefix, number, &segment.digest);
    put_object(s3, bucket, &key, bytes, Some("application/gzip")).await?;
    Ok(segment)
}

/// The gzipped JSON Lines of `chunks`, numbered from `first`.
fn encode(first: u32, chunks: &[Vec<PlannedPiece>]) -> Result<Vec<u8>, ScanError> {
    let failed = |e: std::io::Error| ScanError::Write {
        what: "a plan segment".into(),
        source: e,
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for (index, pieces) in (first..).zip(chunks) {
        let line = ChunkLine {
            chunk: index,
            pieces: pieces.clone(),
        };
        serde_json::to_writer(&mut gz, &line).map_err(|e| failed(e.into()))?;
        gz.write_all(b"\n").map_err(failed)?;
    }
    gz.finish().map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(key: &str, window: Option<u32>) -> PlannedPiece {
        PlannedPiece {
            key: key.into(),
            etag: "\"e\"".into(),
            size: 10,
            window,
            modified: Some("2024-06-01T00:00:00.000Z".into()),
        }
    }

    #[test]
    fn a_segment_gives_back_each_chunk_it_holds() {
        let chunks = vec![
            vec![piece("a", None), piece("b", None)],
            vec![piece("c", Some(0))],
            vec![piece("c", Some(1))],
        ];
        let bytes = encode(7, &chunks).unwrap();
        for (index, pieces) in (7..).zip(&chunks) {
            assert_eq!(chunk_in(&bytes, index).unwrap(), *pieces);
        }
        assert!(
            chunk_in(&bytes, 6)
                .unwrap_err()
                .contains("no line of chunk 6")
        );
        assert!(chunk_in(&bytes, 10).is_err());
        assert!(chunk_in(b"not gzip", 7).unwrap_err().contains("decode"));
    }

    #[test]
    fn a_text_window_after_the_first_continues_its_object() {
        use crate::scan::InputFormat;
        let csv = InputFormat::Csv {
            delimiter: b',',
            quote: b'"',
            header: true,
        };
        let continuing = |format: InputFormat| {
            [None, Some(0), Some(1), Some(7)].map(|window| piece("c", window).continues(format))
        };
        assert_eq!(continuing(csv), [false, false, true, true]);
        assert_eq!(
            continuing(InputFormat::JsonLines),
            [false, false, true, true]
        );
        assert_eq!(continuing(InputFormat::Parquet), [false; 4]);
    }

    #[test]
    fn a_segment_key_names_its_number_and_digest() {
        assert_eq!(
            ObjectPlan::segment_key("p/", 3, "ab12"),
            "p/segment-00003-ab12.jsonl.gz"
        );
    }
}
