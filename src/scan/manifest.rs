//! The manifest written next to a scan's output (chunks, ranges, record counts, output parts,
//! source ETag), and trimming row output to a LIMIT.

use aws_sdk_s3::Client;

use super::chunk::{ChunkReport, Output, OutputFormat};
use super::chunk::{cut_parquet_part, cut_part};
use super::plan::Layout;
use super::{ScanError, delete_object, put_object, read_failure};
use crate::s3::{RangeStream, object_version};

/// Name of the manifest object under the output prefix.
pub const MANIFEST: &str = "manifest.json";

/// The manifest of a finished scan; `extra` holds what else the caller records per chunk (such as
/// a container processor's termination messages), by chunk index.
pub fn document(
    layout: &Layout,
    reports: &[ChunkReport],
    result: &serde_json::Map<String, serde_json::Value>,
    extra: &dyn Fn(u32) -> Option<serde_json::Value>,
) -> serde_json::Value {
    let chunks: Vec<_> = reports
        .iter()
        .map(|report| {
            let (start, end) = layout.range(report.index);
            let mut entry = serde_json::json!({
                "index": report.index,
                "start": start,
                "end": end.min(layout.size),
                "records": report.records,
                "rows": report.rows,
                "part": report.part,
            });
            if let Some(read) = &report.row_groups {
                entry["rowGroups"] = serde_json::json!({
                    "first": read.first,
                    "end": read.end,
                    "skipped": read.skipped,
                    "skippedBytes": read.skipped_bytes,
                    "fetchedBytes": read.fetched_bytes,
                });
            }
            if let Some(extra) = extra(report.index) {
                entry["output"] = extra;
            }
            entry
        })
        .collect();
    serde_json::json!({
        "source": {
            "bucket": layout.bucket,
            "key": layout.key,
            "etag": layout.etag,
            "size": layout.size,
            "gzip": layout.gzip,
        },
        "format": layout.format,
        "columns": layout.columns,
        "dataStart": layout.data_start,
        "chunkSize": layout.chunk_size,
        "records": reports.iter().map(|r| r.records).sum::<u64>(),
        "rows": reports.iter().map(|r| r.rows).sum::<u64>(),
        "result": result,
        "rowGroups": layout.parquet.as_ref().map(|p| p.row_groups),
        "chunks": chunks,
    })
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

/// The end of a scan whose every chunk is accepted, for the CLI and the controller alike: row
/// output cut to the LIMIT, then the manifest written under `(bucket, prefix)`. Returns its URL.
pub struct Finish<'a> {
    pub layout: &'a Layout,
    pub output: Option<&'a Output>,
    pub limit: Option<u64>,
    /// The scan's run id, for the upload records of parts it cuts.
    pub run: &'a str,
    pub result: &'a serde_json::Map<String, serde_json::Value>,
    /// What else to record per chunk (a container processor's output message), by index.
    pub extra: &'a (dyn Fn(u32) -> Option<serde_json::Value> + Sync),
}

impl Finish<'_> {
    pub async fn write(
        &self,
        s3: &Client,
        (bucket, prefix): (&str, &str),
        mut reports: Vec<ChunkReport>,
    ) -> Result<String, ScanError> {
        if let Some(output) = self.output {
            trim_to_limit(s3, output, (self.limit, self.run), &mut reports).await?;
        }
        let document = document(self.layout, &reports, self.result, self.extra);
        put(s3, bucket, &format!("{prefix}{MANIFEST}"), &document).await
    }
}

/// Rows each chunk keeps so that only the first `limit` rows in object order remain.
pub fn rows_within_limit(rows: &[u64], limit: u64) -> Vec<u64> {
    let mut remaining = limit;
    rows.iter()
        .map(|&rows| {
            let kept = rows.min(remaining);
            remaining -= kept;
            kept
        })
        .collect()
}

/// Cuts the row output to the query's LIMIT: parts past it are deleted, the part that crosses
/// it is cut to its first rows. Reports are updated to what remains.
async fn trim_to_limit(
    s3: &Client,
    output: &Output,
    (limit, run): (Option<u64>, &str),
    reports: &mut [ChunkReport],
) -> Result<(), ScanError> {
    let Some(limit) = limit else {
        return Ok(());
    };
    let rows: Vec<u64> = reports.iter().map(|r| r.rows).collect();
    for (report, kept) in reports.iter_mut().zip(rows_within_limit(&rows, limit)) {
        if kept == report.rows {
            continue;
        }
        let Some(key) = report.part.clone() else {
            continue;
        };
        if kept == 0 {
            delete_object(s3, &output.bucket, &key).await?;
            report.part = None;
        } else if output.format == OutputFormat::Parquet {
            cut_parquet_part(s3, output, (report.index, run), kept).await?;
        } else {
            let (etag, length) = first_rows_length(s3, output, &key, kept).await?;
            cut_part(s3, output, (report.index, run), etag.as_deref(), length).await?;
        }
        report.rows = kept;
    }
    Ok(())
}

/// The part's ETag and the length of its first `rows` rows (after the CSV header row), read as
/// a stream up to there.
async fn first_rows_length(
    s3: &Client,
    output: &Output,
    key: &str,
    rows: u64,
) -> Result<(Option<String>, u64), ScanError> {
    let (size, etag) = object_version(s3, &output.bucket, key)
        .await
        .map_err(read_failure)?;
    let mut stream = RangeStream::new(s3, &output.bucket, key, etag.as_deref(), (0, size));
    let mut end = RowsEnd::new(output.format, rows);
    while let Some(bytes) = stream.next().await {
        let bytes = bytes.map_err(read_failure)?;
        if bytes.is_empty() {
            continue;
        }
        if let Some(length) = end.feed(&bytes) {
            return Ok((etag, length));
        }
    }
    Ok((etag, end.finish()))
}

/// Finds where the first rows of a part end, fed the part piece by piece.
struct RowsEnd {
    format: OutputFormat,
    /// Records to pass: the rows, and a CSV part's header row.
    wanted: u64,
    seen: u64,
    offset: u64,
    csv: csv_core::Reader,
    /// Where field bytes go; only record boundaries matter here.
    scratch: Box<[u8]>,
    ends: [usize; 64],
}

impl RowsEnd {
    fn new(format: OutputFormat, rows: u64) -> RowsEnd {
        let header = u64::from(format == OutputFormat::Csv);
        RowsEnd {
            format,
            wanted: rows + header,
            seen: 0,
            offset: 0,
            csv: csv_core::Reader::new(),
            scratch: vec![0; 64 << 10].into_boxed_slice(),
            ends: [0; 64],
        }
    }

    /// The next bytes of the part; the length of the wanted rows once they are all seen. No bytes
    /// tells the CSV reader the part ended.
    fn feed(&mut self, mut bytes: &[u8]) -> Option<u64> {
        if self.format == OutputFormat::JsonLines {
            for newline in memchr::memchr_iter(b'\n', bytes) {
                self.seen += 1;
                if self.seen == self.wanted {
                    return Some(self.offset + newline as u64 + 1);
                }
            }
            self.offset += bytes.len() as u64;
            return None;
        }
        loop {
            let (result, read, _, _) =
                self.csv
                    .read_record(bytes, &mut self.scratch, &mut self.ends);
            self.offset += read as u64;
            bytes = &bytes[read..];
            match result {
                csv_core::ReadRecordResult::InputEmpty => return None,
                csv_core::ReadRecordResult::OutputFull
                | csv_core::ReadRecordResult::OutputEndsFull => {}
                csv_core::ReadRecordResult::Record => {
                    self.seen += 1;
                    if self.seen == self.wanted {
                        return Some(self.offset);
                    }
                    // Empty input would mean the end to csv-core: wait for more.
                    if bytes.is_empty() {
                        return None;
                    }
                }
                csv_core::ReadRecordResult::End => return Some(self.offset),
            }
        }
    }

    /// At the part's end (its last row may lack a line end): the whole part.
    fn finish(mut self) -> u64 {
        self.feed(&[]).unwrap_or(self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_keep_the_first_rows_in_chunk_order() {
        assert_eq!(rows_within_limit(&[3, 0, 4, 2], 5), vec![3, 0, 2, 0]);
        assert_eq!(rows_within_limit(&[3, 4], 10), vec![3, 4]);
        assert_eq!(rows_within_limit(&[3, 4], 0), vec![0, 0]);
    }

    /// The length of the first `rows` rows of `part`, fed in pieces of `piece` bytes.
    fn rows_end(format: OutputFormat, part: &[u8], rows: u64, piece: usize) -> usize {
        let mut end = RowsEnd::new(format, rows);
        for bytes in part.chunks(piece.max(1)) {
            if let Some(length) = end.feed(bytes) {
                return length as usize;
            }
        }
        end.finish() as usize
    }

    #[test]
    fn part_prefixes_hold_whole_rows() {
        let csv = b"a,b\n1,\"x\ny\"\n2,z\n3,w\n";
        for piece in [1, 2, 3, 7, 100] {
            assert_eq!(
                &csv[..rows_end(OutputFormat::Csv, csv, 1, piece)],
                b"a,b\n1,\"x\ny\"\n"
            );
            assert_eq!(
                &csv[..rows_end(OutputFormat::Csv, csv, 2, piece)],
                b"a,b\n1,\"x\ny\"\n2,z\n"
            );
            let lines = b"{\"a\":1}\n{\"a\":2}\n";
            assert_eq!(
                &lines[..rows_end(OutputFormat::JsonLines, lines, 1, piece)],
                b"{\"a\":1}\n"
            );
        }
        // A last row without its line end.
        assert_eq!(rows_end(OutputFormat::Csv, b"a\n1\n2", 2, 4), 5);
    }

    proptest::proptest! {
        /// The rows cut from a part are what the csv crate reads as its first rows.
        #[test]
        fn csv_cuts_agree_with_the_csv_crate(
            fields in proptest::collection::vec("[a-c,\"\n]{0,6}", 2..40),
            piece in 1usize..16,
            rows in 1u64..12,
        ) {
            let mut writer = csv::WriterBuilder::new().flexible(true).from_writer(vec![]);
            for field in &fields {
                writer.write_record([field]).unwrap();
            }
            let part = writer.into_inner().unwrap();
            let records = fields.len() as u64;
            let rows = rows.min(records - 1);
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(&part[..]);
            let mut record = csv::ByteRecord::new();
            for _ in 0..=rows {
                reader.read_byte_record(&mut record).unwrap();
            }
            let expected = reader.position().byte() as usize;
            proptest::prop_assert_eq!(rows_end(OutputFormat::Csv, &part, rows, piece), expected);
        }
    }
}
