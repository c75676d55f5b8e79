//! The manifest written next to a scan's output (chunks, ranges, record counts, output parts,
//! source ETag), and trimming row output to a LIMIT.

use aws_sdk_s3::Client;

use super::chunk::{ChunkReport, Output, OutputFormat};
use super::plan::Layout;
use super::{ScanError, delete_object, put_object, s3_error};

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

/// Writes the manifest under the output prefix.
pub async fn write(
    s3: &Client,
    output: &Output,
    layout: &Layout,
    reports: &[ChunkReport],
    result: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, ScanError> {
    let document = document(layout, reports, result, &|_| None);
    put(
        s3,
        &output.bucket,
        &format!("{}{MANIFEST}", output.prefix),
        &document,
    )
    .await
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
/// it is rewritten with its first rows. Reports are updated to what remains.
pub async fn trim_to_limit(
    s3: &Client,
    output: &Output,
    limit: Option<u64>,
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
        let location = format!("s3://{}/{key}", output.bucket);
        if kept == 0 {
            delete_object(s3, &output.bucket, &key).await?;
            report.part = None;
        } else {
            let mut body = s3
                .get_object()
                .bucket(&output.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| s3_error(&format!("GET {location}"), e))?
                .body
                .collect()
                .await
                .map_err(|e| ScanError::Read(format!("GET {location}: {e}")))?
                .to_vec();
            body.truncate(first_rows_length(output.format, &body, kept));
            put_object(s3, &output.bucket, &key, body, None).await?;
        }
        report.rows = kept;
    }
    Ok(())
}

/// Length of the prefix of a part holding its first `rows` rows (after the CSV header row).
fn first_rows_length(format: OutputFormat, part: &[u8], rows: u64) -> usize {
    match format {
        OutputFormat::JsonLines => memchr::memchr_iter(b'\n', part)
            .nth(rows as usize - 1)
            .map_or(part.len(), |newline| newline + 1),
        OutputFormat::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(part);
            let mut record = csv::ByteRecord::new();
            for _ in 0..=rows {
                if !reader.read_byte_record(&mut record).unwrap_or(false) {
                    break;
                }
            }
            reader.position().byte() as usize
        }
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

    #[test]
    fn part_prefixes_hold_whole_rows() {
        let csv = b"a,b\n1,\"x\ny\"\n2,z\n3,w\n";
        assert_eq!(
            &csv[..first_rows_length(OutputFormat::Csv, csv, 1)],
            b"a,b\n1,\"x\ny\"\n"
        );
        assert_eq!(
            &csv[..first_rows_length(OutputFormat::Csv, csv, 2)],
            b"a,b\n1,\"x\ny\"\n2,z\n"
        );
        let lines = b"{\"a\":1}\n{\"a\":2}\n";
        assert_eq!(
            &lines[..first_rows_length(OutputFormat::JsonLines, lines, 1)],
            b"{\"a\":1}\n"
        );
    }
}
