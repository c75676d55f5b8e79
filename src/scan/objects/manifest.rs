//! A manifest naming a scan's objects, as AWS runs over millions of them: an S3 Batch Operations
//! CSV (`bucket,key[,versionId]`, keys URL-encoded), or an S3 Inventory `manifest.json` whose
//! CSV data files (gzip) give each object's bucket, key, size and ETag. Read as a stream: memory
//! stays one buffer and one row, whatever the number of rows.

use aws_sdk_s3::Client;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::ListingCursor;
use crate::s3::RangeStream;
use crate::scan::format::Compression;
use crate::scan::plan::ObjectVersion;
use crate::scan::{ScanError, read_failure};

/// Longest `manifest.json` read.
const MAX_INVENTORY_MANIFEST: usize = 16 << 20;

/// Longest row of a manifest: a bucket, a key (at most 1,024 bytes, URL-encoded) and a few
/// fields.
const MAX_ROW: usize = 8 << 10;

/// Most fields of a row read.
const MAX_FIELDS: usize = 64;

/// The manifest object, optionally pinned to its ETag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestRef {
    /// Its bucket.
    pub bucket: String,
    /// Its key: an Inventory manifest when it ends in `manifest.json`, else a Batch Operations CSV.
    pub key: String,
    /// The ETag it must have (a changed manifest fails as ObjectChanged).
    pub etag: Option<String>,
}

impl ManifestRef {
    fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    fn is_inventory(&self) -> bool {
        self.key.ends_with("manifest.json")
    }
}

/// One object a manifest names: its size and ETag when the manifest gives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The object's bucket.
    pub bucket: String,
    /// Its key, decoded.
    pub key: String,
    /// Its size and ETag (quoted), from an Inventory.
    pub version: Option<(u64, String)>,
    /// Its last-modified time, from an Inventory (RFC 3339 UTC).
    pub modified: Option<String>,
}

/// Where a data file's fields are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fields {
    bucket: usize,
    key: usize,
    size: Option<usize>,
    etag: Option<usize>,
    /// An Inventory of all versions: only the current version of a key is scanned.
    is_latest: Option<usize>,
    /// An Inventory of all versions: a delete marker names no object.
    is_delete_marker: Option<usize>,
    modified: Option<usize>,
    /// A Batch Operations row's version: scans read current versions only.
    version_id: Option<usize>,
}

const BATCH_FIELDS: Fields = Fields {
    bucket: 0,
    key: 1,
    size: None,
    etag: None,
    is_latest: None,
    is_delete_marker: None,
    modified: None,
    version_id: Some(2),
};

/// `manifest.json` of an S3 Inventory.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Inventory {
    destination_bucket: String,
    file_format: String,
    file_schema: String,
    files: Vec<InventoryFile>,
}

#[derive(Debug, Deserialize)]
struct InventoryFile {
    key: String,
}

/// The rows of the manifest, in its order.
pub fn rows(
    s3: &Client,
    manifest: &ManifestRef,
) -> impl Stream<Item = Result<Row, ScanError>> + Send + use<> {
    let (tx, rx) = mpsc::channel(64);
    let (s3, manifest) = (s3.clone(), manifest.clone());
    tokio::spawn(async move {
        if let Err(error) = send_rows(&s3, &manifest, &tx).await {
            let _ = tx.send(Err(error)).await;
        }
    });
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|row| (row, rx)) },
    )
}

async fn send_rows(
    s3: &Client,
    manifest: &ManifestRef,
    rows: &mpsc::Sender<Result<Row, ScanError>>,
) -> Result<(), ScanError> {
    let files = files(s3, manifest).await?;
    for file in files.files {
        let file = file.version(s3).await?;
        if rows.is_closed() {
            return Ok(());
        }
        let rows = rows.clone();
        file_rows(s3, file, files.fields, 0, (), move |(), row, _| {
            rows.blocking_send(Ok(row)).is_ok()
        })
        .await?;
    }
    Ok(())
}

/// The CSV files of a manifest, and where their fields are.
struct Files {
    /// The manifest's ETag (of `manifest.json` for an Inventory).
    etag: String,
    fields: Fields,
    files: Vec<DataFile>,
}

/// A CSV file of a manifest: a Batch Operations CSV is its own, pinned; an Inventory names its
/// data files.
enum DataFile {
    Pinned(ObjectVersion),
    Named { bucket: String, key: String },
}

impl DataFile {
    async fn version(self, s3: &Client) -> Result<ObjectVersion, ScanError> {
        match self {
            DataFile::Pinned(version) => Ok(version),
            DataFile::Named { bucket, key } => {
                let (size, etag) = crate::s3::object_version(s3, &bucket, &key)
                    .await
                    .map_err(read_failure)?;
                ObjectVersion::pinned(&bucket, &key, size, etag)
            }
        }
    }
}

/// The manifest's files, its ETag checked against the one it is pinned to.
async fn files(s3: &Client, manifest: &ManifestRef) -> Result<Files, ScanError> {
    let (size, etag) = crate::s3::object_version(s3, &manifest.bucket, &manifest.key)
        .await
        .map_err(read_failure)?;
    let etag = ObjectVersion::pinned(&manifest.bucket, &manifest.key, size, etag)?.etag;
    if let Some(pinned) = &manifest.etag
        && pinned.trim_matches('"') != etag.trim_matches('"')
    {
        return Err(ScanError::ObjectChanged(format!(
            "the manifest {} has ETag {etag}, the scan pins {pinned}",
            manifest.url()
        )));
    }
    if !manifest.is_inventory() {
        let file = ObjectVersion::pinned(&manifest.bucket, &manifest.key, size, Some(etag))?;
        return Ok(Files {
            etag: file.etag.clone(),
            fields: BATCH_FIELDS,
            files: vec![DataFile::Pinned(file)],
        });
    }
    let body = RangeStream::new(s3, &manifest.bucket, &manifest.key, Some(&etag), (0, size))
        .collect(MAX_INVENTORY_MANIFEST)
        .await
        .map_err(read_failure)?;
    let invalid = |why: String| ScanError::InvalidObject(format!("{}: {why}", manifest.url()));
    let inventory: Inventory =
        serde_json::from_slice(&body).map_err(|e| invalid(format!("not an Inventory: {e}")))?;
    if !inventory.file_format.eq_ignore_ascii_case("csv") {
        return Err(ScanError::Unsupported(format!(
            "{} lists {} files; Inventories in CSV are read",
            manifest.url(),
            inventory.file_format
        )));
    }
    let fields = inventory_fields(&inventory.file_schema).map_err(invalid)?;
    let bucket = inventory
        .destination_bucket
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let files = inventory
        .files
        .into_iter()
        .map(|file| DataFile::Named {
            bucket: bucket.clone(),
            key: file.key,
        })
        .collect();
    Ok(Files {
        etag,
        fields,
        files,
    })
}

/// One page of the manifest's objects from `cursor`, at most `max_rows` rows, and where the next
/// page starts (`None`: none is left). The cursor names the data file by its place, the bytes of
/// it (decompressed) already listed, and the manifest's ETag, pinned at the first page so that
/// every page reads the same manifest. A page of a compressed file decompresses it from its
/// start; of a plain one, reads from the cursor on.
pub async fn page(
    s3: &Client,
    manifest: &ManifestRef,
    selection: &super::Selection,
    cursor: &ListingCursor,
    max_rows: usize,
) -> Result<(Vec<ObjectVersion>, Option<ListingCursor>), ScanError> {
    let pinned = ManifestRef {
        etag: cursor.version.clone().or_else(|| manifest.etag.clone()),
        ..manifest.clone()
    };
    let mut files = files(s3, &pinned).await?;
    let place = cursor.prefix as usize;
    let count = files.files.len();
    if place >= count {
        return Ok((Vec::new(), None));
    }
    let file = files.files.swap_remove(place).version(s3).await?;
    let offset = cursor.offset.unwrap_or(0);
    let taken = (Vec::new(), None);
    let max_rows = max_rows.max(1);
    let (rows, stopped_at) = file_rows(
        s3,
        file,
        files.fields,
        offset,
        taken,
        move |page, row, end| {
            page.0.push(row);
            if page.0.len() < max_rows {
                return true;
            }
            page.1 = Some(end);
            false
        },
    )
    .await?;
    let version = Some(files.etag);
    let next = match stopped_at {
        Some(offset) => Some(ListingCursor {
            prefix: cursor.prefix,
            after: None,
            offset: Some(offset),
            version,
        }),
        None => (place + 1 < count).then(|| ListingCursor {
            prefix: cursor.prefix + 1,
            after: None,
            offset: None,
            version,
        }),
    };
    let url = manifest.url();
    let versions = futures::stream::iter(rows)
        .map(|row| object_of(s3, &url, selection, row))
        .buffered(super::PLANNING_CONCURRENCY)
        .try_filter_map(|version| futures::future::ready(Ok(version)))
        .try_collect()
        .await?;
    Ok((versions, next))
}

/// Where an Inventory's `fileSchema` puts the fields read.
fn inventory_fields(schema: &str) -> Result<Fields, String> {
    let names: Vec<&str> = schema.split(',').map(str::trim).collect();
    let at = |name: &str| names.iter().position(|n| n.eq_ignore_ascii_case(name));
    let needed = |name: &str| at(name).ok_or(format!("its fileSchema has no {name} field"));
    Ok(Fields {
        bucket: needed("Bucket")?,
        key: needed("Key")?,
        size: at("Size"),
        etag: at("ETag"),
        is_latest: at("IsLatest"),
        is_delete_marker: at("IsDeleteMarker"),
        modified: at("LastModifiedDate"),
        // Of an Inventory of all versions, the current ones are kept by IsLatest.
        version_id: None,
    })
}

/// Hands the rows of one CSV file of a manifest (decompressed when it is compressed), from
/// `offset` bytes of it on, to `on_row` with the offset after each, until it says stop; gives
/// back `state`.
async fn file_rows<T: Send + 'static>(
    s3: &Client,
    file: ObjectVersion,
    fields: Fields,
    offset: u64,
    mut state: T,
    mut on_row: impl FnMut(&mut T, Row, u64) -> bool + Send + 'static,
) -> Result<T, ScanError> {
    let compression = match offset {
        0 => None,
        _ => Some(compression_of(s3, &file).await?),
    };
    // A plain file is read from the offset on; a compressed one from its start, the bytes before
    // the offset decompressed and dropped.
    let read_from = match compression {
        Some(Compression::None) => offset.min(file.size),
        _ => 0,
    };
    let (bytes_tx, bytes_rx) = mpsc::channel(4);
    let mut body = RangeStream::new(
        s3,
        &file.bucket,
        &file.key,
        Some(&file.etag),
        (read_from, file.size),
    );
    let fetch = tokio::spawn(async move {
        while let Some(bytes) = body.next().await {
            let failed = bytes.is_err();
            if bytes_tx.send(bytes.map_err(read_failure)).await.is_err() || failed {
                return;
            }
        }
    });
    let parse = tokio::task::spawn_blocking(move || {
        let source = crate::scan::chunk::fetch::ChannelReader::new(bytes_rx);
        let mut source = std::io::BufReader::new(source);
        let compression = match compression {
            Some(compression) => compression,
            None => {
                use std::io::BufRead;
                compression_in(source.fill_buf().map_err(ScanError::Decode)?)
            }
        };
        let mut decoded = compression.decoder(source).map_err(ScanError::Decode)?;
        let skip = offset - read_from;
        let skipped = std::io::copy(
            &mut std::io::Read::take(&mut decoded, skip),
            &mut std::io::sink(),
        )
        .map_err(ScanError::Decode)?;
        if skipped < skip {
            return Err(ScanError::InvalidObject(format!(
                "{} is shorter than the listing's place in it ({offset} bytes)",
                file.url()
            )));
        }
        parse_rows(&file, decoded, fields, offset, &mut |row, end| {
            on_row(&mut state, row, end)
        })?;
        Ok(state)
    });
    let parsed = parse.await.map_err(ScanError::Parser)?;
    fetch.abort();
    parsed
}

/// How a file whose start is `start` is compressed.
fn compression_in(start: &[u8]) -> Compression {
    match crate::scan::format::magic(start) {
        Some(crate::scan::format::Magic::Compressed(compression)) => compression,
        _ => Compression::None,
    }
}

/// How `file` is compressed, from its first bytes.
async fn compression_of(s3: &Client, file: &ObjectVersion) -> Result<Compression, ScanError> {
    const MAGIC: u64 = 8;
    let start = RangeStream::new(
        s3,
        &file.bucket,
        &file.key,
        Some(&file.etag),
        (0, MAGIC.min(file.size)),
    )
    .collect(MAGIC as usize)
    .await
    .map_err(read_failure)?;
    Ok(compression_in(&start))
}

/// Parses the CSV rows of `source` (the manifest file `file` from byte `offset` on, at a row's
/// start), handing each to `row` with the offset after it, until it says stop. A row longer than
/// 8 KiB, or without a bucket and key, is an invalid manifest.
fn parse_rows(
    file: &ObjectVersion,
    mut source: impl std::io::BufRead,
    fields: Fields,
    offset: u64,
    row: &mut dyn FnMut(Row, u64) -> bool,
) -> Result<(), ScanError> {
    let mut reader = csv_core::Reader::new();
    let (mut out, mut ends) = (vec![0u8; MAX_ROW], [0usize; MAX_FIELDS]);
    let (mut written, mut count, mut number) = (0, 0, 0u64);
    let mut consumed = offset;
    let invalid = |number: u64, why: &str| {
        ScanError::InvalidObject(format!("{} row {number}: {why}", file.url()))
    };
    loop {
        let input = source.fill_buf().map_err(ScanError::Decode)?;
        let (result, read, wrote, ended) =
            reader.read_record(input, &mut out[written..], &mut ends[count..]);
        source.consume(read);
        consumed += read as u64;
        // csv-core counts a record's field ends from its start, across calls.
        written += wrote;
        count += ended;
        match result {
            csv_core::ReadRecordResult::InputEmpty => {}
            csv_core::ReadRecordResult::OutputFull | csv_core::ReadRecordResult::OutputEndsFull => {
                return Err(invalid(number + 1, "longer than a manifest row may be"));
            }
            csv_core::ReadRecordResult::Record => {
                number += 1;
                let parsed = manifest_row(&out[..written], &ends[..count], fields)
                    .map_err(|why| invalid(number, &why))?;
                (written, count) = (0, 0);
                if let Some(parsed) = parsed
                    && !row(parsed, consumed)
                {
                    return Ok(());
                }
            }
            csv_core::ReadRecordResult::End => return Ok(()),
        }
    }
}

/// A row's fields as a [`Row`]; `None` for a row of an older version or a delete marker.
fn manifest_row(out: &[u8], ends: &[usize], fields: Fields) -> Result<Option<Row>, String> {
    let field = |index: usize| -> Option<&str> {
        let end = *ends.get(index)?;
        let start = if index == 0 { 0 } else { *ends.get(index - 1)? };
        std::str::from_utf8(out.get(start..end)?).ok()
    };
    let needed = |index: usize, name: &str| field(index).ok_or(format!("no {name} field"));
    let flag = |index: Option<usize>| {
        index
            .and_then(field)
            .map(|v| v.eq_ignore_ascii_case("true"))
    };
    if flag(fields.is_latest) == Some(false) || flag(fields.is_delete_marker) == Some(true) {
        return Ok(None);
    }
    if let Some(version) = fields.version_id.and_then(field).filter(|v| !v.is_empty()) {
        return Err(format!(
            "names version {version:?} of its object; a scan reads current versions only"
        ));
    }
    let bucket = needed(fields.bucket, "bucket")?.to_string();
    let key = decode_key(needed(fields.key, "key")?);
    if key.is_empty() {
        return Err("an empty key".into());
    }
    let version = match (fields.size.and_then(field), fields.etag.and_then(field)) {
        (Some(size), Some(etag)) if !etag.is_empty() => {
            let size = size.parse().map_err(|_| format!("size {size:?}"))?;
            Some((size, format!("\"{}\"", etag.trim_matches('"'))))
        }
        _ => None,
    };
    // A time that is not one is no reason to refuse the row: `_mtime` is then NULL.
    let modified = fields
        .modified
        .and_then(field)
        .and_then(|text| {
            aws_sdk_s3::primitives::DateTime::from_str(
                text,
                aws_sdk_s3::primitives::DateTimeFormat::DateTime,
            )
            .ok()
        })
        .and_then(|time| crate::scan::plan::s3_time(&time));
    Ok(Some(Row {
        bucket,
        key,
        version,
        modified,
    }))
}

/// A key as manifests encode it: URL-encoded, `+` for a space.
fn decode_key(encoded: &str) -> String {
    let spaced = encoded.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map_or(spaced.clone(), |key| key.into_owned())
}

/// The versions of the manifest's rows, each of which must name the selection's bucket: an
/// Inventory's as it gives them, a Batch Operations CSV's by HEAD (a few at once), in the
/// manifest's order.
pub fn versions(
    s3: &Client,
    manifest: &ManifestRef,
    selection: &super::Selection,
) -> futures::stream::BoxStream<'static, Result<ObjectVersion, ScanError>> {
    let (s3, selection, url) = (s3.clone(), selection.clone(), manifest.url());
    rows(&s3, manifest)
        .map(move |row| {
            let (s3, selection, url) = (s3.clone(), selection.clone(), url.clone());
            async move { object_of(&s3, &url, &selection, row?).await }
        })
        .buffered(super::PLANNING_CONCURRENCY)
        .filter_map(|version| futures::future::ready(version.transpose()))
        .boxed()
}

/// The version of the object a row of the manifest `url` names, which must be in the
/// selection's bucket: as an Inventory gives it, else by HEAD; `None` for a key under the
/// operator's work folder, or one gone that the selection skips.
async fn object_of(
    s3: &Client,
    url: &str,
    selection: &super::Selection,
    row: Row,
) -> Result<Option<ObjectVersion>, ScanError> {
    let bucket = &selection.bucket;
    if row.bucket != *bucket {
        return Err(ScanError::InvalidScan(format!(
            "{url} names s3://{}/{}; the scan reads bucket {bucket} only",
            row.bucket, row.key
        )));
    }
    if row.key.starts_with(super::WORK_FOLDER) {
        return Ok(None);
    }
    match row.version {
        Some((size, etag)) => ObjectVersion::pinned(bucket, &row.key, size, Some(etag)).map(|v| {
            Some(ObjectVersion {
                modified: row.modified,
                ..v
            })
        }),
        None => super::head(s3, selection, row.key).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str, fields: Fields) -> Result<Vec<Row>, String> {
        let file = ObjectVersion::pinned("m", "list.csv", 0, Some("e".into())).unwrap();
        let mut rows = Vec::new();
        parse_rows(&file, text.as_bytes(), fields, 0, &mut |row, _| {
            rows.push(row);
            true
        })
        .map_err(|e| e.to_string())?;
        Ok(rows)
    }

    fn row(bucket: &str, key: &str, version: Option<(u64, &str)>) -> Row {
        Row {
            bucket: bucket.into(),
            key: key.into(),
            version: version.map(|(size, etag)| (size, etag.into())),
            modified: None,
        }
    }

    #[test]
    fn batch_operations_rows_decode_their_keys() {
        let text = "b,a/plain.csv\nb,with+space%2Bplus.csv,\r\n\"b\",\"x%C3%A9,y\"";
        assert_eq!(
            parsed(text, BATCH_FIELDS).unwrap(),
            [
                row("b", "a/plain.csv", None),
                row("b", "with space+plus.csv", None),
                row("b", "xé,y", None),
            ]
        );
        assert!(
            parsed("b\n", BATCH_FIELDS)
                .unwrap_err()
                .contains("row 1: no key")
        );
        // A row naming a version other than the current one would be scanned as the current.
        assert!(
            parsed("b,k\nb,k,3HL4kqtJlcpXroDTDmJ\n", BATCH_FIELDS)
                .unwrap_err()
                .contains("row 2: names version \"3HL4kqtJlcpXroDTDmJ\"")
        );
        assert!(
            parsed("b,\n", BATCH_FIELDS)
                .unwrap_err()
                .contains("empty key")
        );
        let long = format!("b,{}\n", "k".repeat(MAX_ROW));
        assert!(
            parsed(&long, BATCH_FIELDS)
                .unwrap_err()
                .contains("longer than")
        );
    }

    #[test]
    fn parsing_resumes_at_the_offset_after_any_row() {
        let text = "b,a.csv\r\nb,\"q\r\nx.csv\"\r\n\r\nb,c%20d.csv\nb,e.csv";
        let file = ObjectVersion::pinned("m", "list.csv", 0, Some("e".into())).unwrap();
        let mut all = Vec::new();
        parse_rows(&file, text.as_bytes(), BATCH_FIELDS, 0, &mut |row, end| {
            all.push((row.key, end));
            true
        })
        .unwrap();
        let keys: Vec<&str> = all.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, ["a.csv", "q\r\nx.csv", "c d.csv", "e.csv"]);
        for (at, (_, end)) in all.iter().enumerate() {
            let mut rest = Vec::new();
            let from = usize::try_from(*end).unwrap();
            parse_rows(
                &file,
                &text.as_bytes()[from..],
                BATCH_FIELDS,
                *end,
                &mut |row, end| {
                    rest.push((row.key, end));
                    true
                },
            )
            .unwrap();
            assert_eq!(rest, all[at + 1..], "resumed after row {at}");
        }
    }

    #[test]
    fn inventory_rows_carry_their_size_and_etag() {
        let fields = inventory_fields("Bucket, Key, Size, LastModifiedDate, ETag").unwrap();
        let text = "\"b\",\"d/1.csv\",\"12\",\"2024-06-01T00:00:00.000Z\",\"5d41402abc4b2a76\"\n";
        assert_eq!(
            parsed(text, fields).unwrap(),
            [Row {
                modified: Some("2024-06-01T00:00:00.000Z".into()),
                ..row("b", "d/1.csv", Some((12, "\"5d41402abc4b2a76\"")))
            }]
        );
        assert!(
            parsed("b,k,twelve,t,e\n", fields)
                .unwrap_err()
                .contains("size")
        );
        // Of an Inventory of all versions, only current versions that are objects count.
        let versions =
            inventory_fields("Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, ETag")
                .unwrap();
        let text = "b,k,v3,true,true,,\nb,k,v2,false,false,5,e2\nb,j,v1,true,false,7,e1\n";
        assert_eq!(
            parsed(text, versions).unwrap(),
            [row("b", "j", Some((7, "\"e1\"")))]
        );
        assert_eq!(
            inventory_fields("Key, Size").unwrap_err(),
            "its fileSchema has no Bucket field"
        );
    }
}
