//! Parquet objects: the footer read by ranged GETs pinned to the object's ETag, row groups
//! assigned to chunks by the midpoint rule, the schema as the columns a query may name, and the
//! object read through arrow-rs's async reader over s3flow's own S3 reads (`source`).
//!
//! A chunk of a Parquet object is a run of whole row groups, never a byte range: a row group
//! belongs to the `chunkSize` window of the file holding the midpoint of its column chunks (the
//! rule of Spark and parquet-java), and windows without a row group are no chunk, so every row
//! group is read exactly once at any chunk size.

mod aggregate;
pub mod footer;
mod prefilter;
mod pruning;
pub(crate) mod reader;
mod source;
mod values;
mod writer;

use std::ops::Range;
use std::sync::Arc;

use arrow_schema::{DataType, Schema, TimeUnit};
use aws_sdk_s3::Client;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::basic::Type as PhysicalType;
use parquet::file::metadata::{
    FileMetaData, ParquetMetaData, ParquetMetaDataBuilder, ParquetMetaDataReader, RowGroupMetaData,
};
use serde::{Deserialize, Serialize};

use super::{ScanError, read_failure};
use crate::s3::RangeStream;

pub(crate) use prefilter::prefilter;
pub(crate) use source::{S3Source, scan_error};
pub(crate) use values::{ArrowRow, CsvColumn, Resolved, value_at};

/// Every Parquet file starts and ends with these bytes.
pub const MAGIC: &[u8; 4] = super::format::PARQUET_MAGIC;

/// The last 8 bytes: the footer's length (u32, little-endian) and the magic.
const TAIL: u64 = 8;

/// Bytes of the object's end read first: most footers fit (a file of a few row groups and tens of
/// columns has a footer of a few KiB), so planning is one GET; a larger one takes a second. A
/// scan of many small objects reads this much of each.
const FOOTER_GUESS: u64 = 64 << 10;

/// Largest footer read: the footer is held in memory, decoded, by the planner (in the operator)
/// and every chunk.
pub const MAX_FOOTER_BYTES: u64 = 16 << 20;

/// Most row groups one scan takes: the chunk assignment travels in every chunk's task.
pub const MAX_ROW_GROUPS: usize = 20_000;

/// Most columns (leaves of nested structs counted) a scanned file may have, and most bytes of
/// their names and types: every chunk's task carries them.
pub const MAX_COLUMNS: usize = 4_096;
/// Most bytes of the columns' names and types together.
pub const MAX_SCHEMA_BYTES: usize = 64 << 10;

/// What the chunks of a Parquet scan share beyond the object's version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParquetLayout {
    /// Length of the footer's metadata (it ends 8 bytes before the object's end).
    pub metadata_length: u64,
    /// Row groups in the file.
    pub row_groups: u32,
    /// Rows of the whole file.
    pub rows: u64,
    /// The first row group of each chunk, as a hex bitmap over the row groups.
    #[serde(with = "starts_bitmap")]
    pub chunk_starts: Vec<u32>,
    /// Type of each column of [`crate::scan::Layout::columns`], in the same order.
    pub types: Vec<String>,
    /// The `chunk_size` window in which the midpoints of each chunk's row groups lie, where the
    /// footer was read: a chunk of a scan of many objects is a window of its object, and runs
    /// the chunk in it, if any. Empty in a layout restored from a record.
    #[serde(skip)]
    pub chunk_windows: Vec<u64>,
    /// The footer as planning read it in this process: the object's chunks run here take it
    /// instead of reading it again. Never recorded (a chunk Job reads its own).
    #[serde(skip)]
    pub footer: PlannedFooter,
}

/// A footer read when planning, held for the chunks of the same process. It is what the object
/// holds, not part of what the layout says: layouts compare equal whether they hold it or not.
#[derive(Clone, Debug, Default)]
pub struct PlannedFooter(pub Option<Arc<ParquetMetaData>>);

impl PartialEq for PlannedFooter {
    fn eq(&self, _: &PlannedFooter) -> bool {
        true
    }
}

impl ParquetLayout {
    /// Row groups `[first, end)` of chunk `index` (`None` past the last chunk, or when the
    /// layout does not describe the file's row groups).
    pub fn row_groups(&self, index: u32) -> Option<Range<u32>> {
        let first = *self.chunk_starts.get(index as usize)?;
        let end = self
            .chunk_starts
            .get(index as usize + 1)
            .copied()
            .unwrap_or(self.row_groups);
        (first < end && end <= self.row_groups).then_some(first..end)
    }

    /// Where row group data ends: the footer follows.
    pub fn data_end(&self, size: u64) -> u64 {
        size.saturating_sub(TAIL + self.metadata_length)
    }
}

/// The `chunk_size` window of each row group of an object of `size` bytes: the one its midpoint
/// lies in, but never before the window of the row group before it (a file whose row groups are
/// not in byte order still makes ascending windows, each one chunk at most) nor past the
/// object's last window. `spans` are the row groups' byte ranges `[start, end)` in file order.
pub fn row_group_windows(spans: &[(u64, u64)], chunk_size: u64, size: u64) -> Vec<u64> {
    let last = size.saturating_sub(1) / chunk_size.max(1);
    let mut floor = 0;
    spans
        .iter()
        .map(|span| {
            floor = midpoint_window(*span, chunk_size).clamp(floor, last.max(floor));
            floor
        })
        .collect()
}

/// The first row group of each chunk: a row group joins the chunk of the row group before it when
/// both are in the same window (see [`row_group_windows`]).
pub fn chunk_starts(windows: &[u64]) -> Vec<u32> {
    let mut starts = Vec::new();
    let mut previous = None;
    for (index, window) in windows.iter().enumerate() {
        if previous != Some(window) {
            starts.push(index as u32);
        }
        previous = Some(window);
    }
    starts
}

/// The `chunk_size` window the midpoint of a row group's span lies in.
fn midpoint_window((start, end): (u64, u64), chunk_size: u64) -> u64 {
    (start + end.saturating_sub(start) / 2) / chunk_size.max(1)
}

/// The window of each chunk `starts` begins (see [`chunk_starts`]).
pub fn chunk_windows(windows: &[u64], starts: &[u32]) -> Vec<u64> {
    starts
        .iter()
        .filter_map(|start| windows.get(*start as usize).copied())
        .collect()
}

/// The byte range `[start, end)` of a row group's column chunks.
pub fn row_group_span(row_group: &RowGroupMetaData) -> (u64, u64) {
    let ranges = row_group.columns().iter().map(|c| c.byte_range());
    let start = ranges.clone().map(|(start, _)| start).min().unwrap_or(0);
    let end = ranges
        .map(|(start, length)| start.saturating_add(length))
        .max()
        .unwrap_or(0);
    (start, end)
}

/// The footer of `bucket/key` (`size` bytes, version `etag`): its metadata and its length.
pub async fn read_footer(
    s3: &Client,
    (bucket, key): (&str, &str),
    etag: &str,
    size: u64,
) -> Result<(Arc<ParquetMetaData>, u64), ScanError> {
    let location = format!("s3://{bucket}/{key}");
    if size < 2 * MAGIC.len() as u64 + TAIL - 4 {
        return Err(ScanError::InvalidObject(format!(
            "{location} is {size} bytes: too short for a Parquet file"
        )));
    }
    let guess = size.min(FOOTER_GUESS);
    let read = |start: u64, end: u64| async move {
        RangeStream::new(s3, bucket, key, Some(etag), (start, end))
            .collect((end - start) as usize)
            .await
            .map_err(read_failure)
    };
    let mut end = read(size - guess, size).await?;
    let metadata_length = footer_length(&end, size).map_err(|why| {
        ScanError::InvalidObject(format!("{location} is not a Parquet file: {why}"))
    })?;
    if metadata_length > MAX_FOOTER_BYTES {
        return Err(ScanError::InvalidScan(format!(
            "{location} has a footer of {metadata_length} bytes; at most {MAX_FOOTER_BYTES} are read"
        )));
    }
    let needed = metadata_length + TAIL;
    if needed > end.len() as u64 {
        let mut whole = read(size - needed, size - end.len() as u64).await?;
        whole.extend_from_slice(&end);
        end = whole;
    }
    let footer = &end[end.len() - needed as usize..end.len() - TAIL as usize];
    // Measured before it is decoded: the decoder's memory and recursion follow what it declares.
    let (declared, footer) = footer::vet(footer).map_err(|why| {
        ScanError::InvalidObject(format!(
            "{location} has a footer that does not decode: {why}"
        ))
    })?;
    if declared.row_groups > MAX_ROW_GROUPS {
        return Err(ScanError::InvalidScan(format!(
            "{location} has {} row groups; at most {MAX_ROW_GROUPS} are scanned",
            declared.row_groups
        )));
    }
    if declared.columns > MAX_COLUMNS {
        return Err(ScanError::InvalidScan(format!(
            "{location} has {} columns; at most {MAX_COLUMNS} are scanned",
            declared.columns
        )));
    }
    // The footer is the object's own bytes: a decoder panic is an invalid object, not a crash.
    let decoded = std::panic::catch_unwind(|| ParquetMetaDataReader::decode_metadata(&footer));
    let metadata = match decoded {
        Ok(Ok(metadata)) => metadata,
        Ok(Err(e)) => {
            return Err(ScanError::InvalidObject(format!(
                "{location} has a footer that does not decode: {e}"
            )));
        }
        Err(_) => {
            return Err(ScanError::InvalidObject(format!(
                "{location} has a footer that does not decode"
            )));
        }
    };
    Ok((Arc::new(with_rows_of_row_groups(metadata)), metadata_length))
}

/// The footer with the file's row count set to its row groups' when the two disagree: some
/// writers leave it 0 (parquet-testing's `repeated_no_annotation.parquet`), and arrow-rs sizes its
/// batches by it, reading no row of a file that says it has none. Readers such as pyarrow and
/// DuckDB go by the row groups too.
fn with_rows_of_row_groups(metadata: ParquetMetaData) -> ParquetMetaData {
    let rows = metadata
        .row_groups()
        .iter()
        .map(|group| group.num_rows().max(0))
        .fold(0i64, i64::saturating_add);
    let file = metadata.file_metadata();
    if file.num_rows() == rows {
        return metadata;
    }
    let counted = FileMetaData::new(
        file.version(),
        rows,
        file.created_by().map(str::to_string),
        file.key_value_metadata().cloned(),
        file.schema_descr_ptr(),
        file.column_orders().cloned(),
    );
    let row_groups = metadata.into_builder().take_row_groups();
    ParquetMetaDataBuilder::new(counted)
        .set_row_groups(row_groups)
        .build()
}

/// The footer's length from the object's last bytes `end` (of an object of `size` bytes).
fn footer_length(end: &[u8], size: u64) -> Result<u64, String> {
    let tail = end
        .len()
        .checked_sub(TAIL as usize)
        .and_then(|at| end.get(at..))
        .ok_or("it is too short")?;
    if &tail[4..] != MAGIC {
        return Err(format!(
            "it does not end in PAR1; its last bytes look like {}",
            looks_like(&tail[4..])
        ));
    }
    let length = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if length + TAIL + MAGIC.len() as u64 > size {
        return Err(format!(
            "its footer length {length} points outside the object of {size} bytes"
        ));
    }
    Ok(length)
}

/// What bytes look like, for messages about an object of the wrong format.
pub fn looks_like(bytes: &[u8]) -> &'static str {
    if let Some(magic) = super::format::magic(bytes) {
        return magic.name();
    }
    let text = bytes.trim_ascii_start();
    match text.first() {
        None => "empty or blank",
        Some(b'{') | Some(b'[') => "JSON text",
        Some(_) if std::str::from_utf8(bytes).is_ok() => "text (such as CSV)",
        Some(_) => "binary data of another format",
    }
}

/// The columns a query may name, each as its path and type: struct fields flattened; lists,
/// maps and other nested values are one column each.
pub fn columns_of(metadata: &ArrowReaderMetadata) -> Vec<(Vec<String>, String)> {
    fn add(path: &[String], field: &arrow_schema::Field, out: &mut Vec<(Vec<String>, String)>) {
        let mut path = path.to_vec();
        path.push(field.name().clone());
        match field.data_type() {
            arrow_schema::DataType::Struct(children) => {
                children.iter().for_each(|child| add(&path, child, out))
            }
            other => out.push((path, other.to_string())),
        }
    }
    let mut columns = Vec::new();
    for field in metadata.schema().fields() {
        add(&[], field, &mut columns);
    }
    columns
}

/// The Arrow view of a footer (the schema pyarrow stored, when it did). INT96 timestamps (Spark,
/// Impala, Hive) are read in microseconds, the precision their writers have: in nanoseconds,
/// as arrow-rs reads them by default, dates past 2262 wrap around.
pub fn arrow_metadata(
    metadata: Arc<ParquetMetaData>,
    location: &str,
) -> Result<ArrowReaderMetadata, ScanError> {
    let read = |options| {
        ArrowReaderMetadata::try_new(metadata.clone(), options).map_err(|e| {
            ScanError::InvalidObject(format!("{location}: its schema cannot be read: {e}"))
        })
    };
    let inferred = read(ArrowReaderOptions::new())?;
    let int96: Vec<&str> = metadata
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .filter(|c| c.physical_type() == PhysicalType::INT96 && c.path().parts().len() == 1)
        .map(|c| c.name())
        .collect();
    if int96.is_empty() {
        return Ok(inferred);
    }
    let fields: Vec<_> = inferred
        .schema()
        .fields()
        .iter()
        .map(|field| match field.data_type() {
            DataType::Timestamp(_, zone) if int96.contains(&field.name().as_str()) => Arc::new(
                field
                    .as_ref()
                    .clone()
                    .with_data_type(DataType::Timestamp(TimeUnit::Microsecond, zone.clone())),
            ),
            _ => field.clone(),
        })
        .collect();
    let schema = Schema::new_with_metadata(fields, inferred.schema().metadata().clone());
    read(ArrowReaderOptions::new().with_schema(Arc::new(schema)))
}

/// Plans a Parquet object: the footer, the columns, and the row groups of every chunk.
pub(crate) async fn plan(
    s3: &Client,
    (bucket, key): (&str, &str),
    (etag, size): (&str, u64),
    chunk_size: u64,
) -> Result<(Vec<String>, ParquetLayout), ScanError> {
    let location = format!("s3://{bucket}/{key}");
    let (metadata, metadata_length) = read_footer(s3, (bucket, key), etag, size).await?;
    let row_groups = metadata.row_groups();
    if row_groups.len() > MAX_ROW_GROUPS {
        return Err(ScanError::InvalidScan(format!(
            "{location} has {} row groups; at most {MAX_ROW_GROUPS} are scanned",
            row_groups.len()
        )));
    }
    let spans: Vec<_> = row_groups.iter().map(row_group_span).collect();
    if let Some((start, end)) = spans.iter().find(|(start, end)| start > end || *end > size) {
        return Err(ScanError::InvalidObject(format!(
            "{location}: a row group's column chunks (bytes {start}-{end}) lie outside the object of {size} bytes"
        )));
    }
    let rows = row_groups
        .iter()
        .map(|g| g.num_rows().max(0) as u64)
        .fold(0u64, u64::saturating_add);
    let arrow = arrow_metadata(metadata.clone(), &location)?;
    let columns = columns_of(&arrow);
    let columns: Vec<(String, String)> = columns
        .into_iter()
        .map(|(path, kind)| (path.join("."), kind))
        .collect();
    let schema_bytes: usize = columns.iter().map(|(n, t)| n.len() + t.len()).sum();
    if columns.len() > MAX_COLUMNS || schema_bytes > MAX_SCHEMA_BYTES {
        return Err(ScanError::InvalidScan(format!(
            "{location} has {} columns ({schema_bytes} bytes of names and types); at most {MAX_COLUMNS} columns and {MAX_SCHEMA_BYTES} bytes are scanned",
            columns.len()
        )));
    }
    let (names, types) = columns.into_iter().unzip();
    let windows = row_group_windows(&spans, chunk_size, size);
    let starts = chunk_starts(&windows);
    let layout = ParquetLayout {
        metadata_length,
        row_groups: row_groups.len() as u32,
        rows,
        chunk_windows: chunk_windows(&windows, &starts),
        chunk_starts: starts,
        types,
        footer: PlannedFooter(Some(metadata)),
    };
    Ok((names, layout))
}

/// [`ParquetLayout::chunk_starts`] as a hex bitmap (bit `i` set: row group `i` starts a chunk),
/// a few hundred characters for a thousand row groups.
mod starts_bitmap {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        starts: &[u32],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let bits = starts.last().map_or(0, |last| *last as usize / 8 + 1);
        let mut bytes = vec![0u8; bits];
        for start in starts {
            bytes[*start as usize / 8] |= 1 << (start % 8);
        }
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
        let text = String::deserialize(d)?;
        if text.len() > super::MAX_ROW_GROUPS / 4 + 2 {
            return Err(serde::de::Error::custom("too many row groups"));
        }
        let bytes = hex::decode(text).map_err(serde::de::Error::custom)?;
        Ok((0..bytes.len() * 8)
            .filter(|bit| bytes[bit / 8] & (1 << (bit % 8)) != 0)
            .map(|bit| bit as u32)
            .collect())
    }
}

/// `batch` written as a Parquet file with `properties`, for tests of what reads it.
#[cfg(test)]
fn parquet_bytes(
    batch: &arrow_array::RecordBatch,
    properties: parquet::file::properties::WriterProperties,
) -> bytes::Bytes {
    let mut bytes = Vec::new();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), Some(properties)).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
    bytes::Bytes::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_groups_go_to_the_window_of_their_midpoint() {
        type Case<'a> = (&'a [(u64, u64)], u64, &'a [u32]);
        // (row group spans, chunk size, first row group of each chunk)
        let cases: &[Case] = &[
            (&[], 10, &[]),
            (&[(4, 100)], 10, &[0]),
            // Midpoints 9, 19, 29: one window each.
            (&[(4, 14), (14, 24), (24, 34)], 10, &[0, 1, 2]),
            // Midpoints 9, 19, 29 in windows of 20: 0, 1 | 2.
            (&[(4, 14), (14, 24), (24, 34)], 20, &[0, 2]),
            // A chunk size below every row group: still one row group per chunk.
            (&[(4, 1000), (1000, 2000)], 1, &[0, 1]),
            // A chunk size above the file: one chunk.
            (&[(4, 1000), (1000, 2000)], 1 << 40, &[0]),
            // A huge row group between small ones skips windows without making empty chunks.
            (&[(4, 5), (5, 500), (500, 501)], 10, &[0, 1, 2]),
            // Row groups out of byte order: windows 0, 1, 0 -> 0, 1, 1 (never back).
            (&[(4, 6), (14, 16), (6, 8)], 10, &[0, 1]),
        ];
        for (spans, chunk_size, want) in cases {
            let windows = row_group_windows(spans, *chunk_size, 10_000);
            assert_eq!(chunk_starts(&windows), *want, "{spans:?} / {chunk_size}");
        }
        // A row group whose midpoint is the object's end is in the object's last window.
        assert_eq!(row_group_windows(&[(4, 15), (20, 20)], 10, 20), [0, 1]);
    }

    proptest::proptest! {
        #[test]
        fn every_row_group_is_in_exactly_one_chunk(
            sizes in proptest::collection::vec(1u64..5000, 0..200),
            chunk_size in 1u64..20_000,
        ) {
            let mut spans = Vec::new();
            let mut at = 4;
            for size in &sizes {
                spans.push((at, at + size));
                at += size;
            }
            let windows = row_group_windows(&spans, chunk_size, at);
            let starts = chunk_starts(&windows);
            let layout = ParquetLayout {
                metadata_length: 0,
                row_groups: spans.len() as u32,
                rows: 0,
                chunk_windows: chunk_windows(&windows, &starts),
                chunk_starts: starts,
                types: vec![],
                footer: PlannedFooter::default(),
            };
            let mut next = 0;
            for index in 0..layout.chunk_starts.len() as u32 {
                let groups = layout.row_groups(index).unwrap();
                proptest::prop_assert_eq!(groups.start, next);
                proptest::prop_assert!(groups.end > groups.start);
                // Every row group of a chunk has its midpoint in the chunk's window, and the
                // windows rise: a window of the object holds one chunk at most.
                let window = layout.chunk_windows[index as usize];
                for group in groups.clone() {
                    let (start, end) = spans[group as usize];
                    proptest::prop_assert_eq!((start + (end - start) / 2) / chunk_size, window);
                }
                if index > 0 {
                    proptest::prop_assert!(window > layout.chunk_windows[index as usize - 1]);
                }
                // Within the windows a planner that read no footer makes of the object.
                proptest::prop_assert!(window < at.div_ceil(chunk_size));
                next = groups.end;
            }
            proptest::prop_assert_eq!(next, spans.len() as u32);
            // The bitmap round-trips; the windows are the footer's, never recorded.
            let json = serde_json::to_string(&layout).unwrap();
            let back: ParquetLayout = serde_json::from_str(&json).unwrap();
            proptest::prop_assert!(back.chunk_windows.is_empty());
            proptest::prop_assert_eq!(
                back,
                ParquetLayout {
                    chunk_windows: Vec::new(),
                    ..layout
                }
            );
        }
    }

    #[test]
    fn footer_lengths() {
        let tail = |length: u32, magic: &[u8]| {
            let mut bytes = b"PAR1".to_vec();
            bytes.extend_from_slice(&[0; 20]);
            bytes.extend_from_slice(&length.to_le_bytes());
            bytes.extend_from_slice(magic);
            bytes
        };
        assert_eq!(footer_length(&tail(10, b"PAR1"), 32), Ok(10));
        assert!(
            footer_length(&tail(100, b"PAR1"), 32)
                .unwrap_err()
                .contains("points outside the object")
        );
        assert!(
            footer_length(&tail(10, b"a,b\n"), 32)
                .unwrap_err()
                .contains("text (such as CSV)")
        );
        assert!(footer_length(b"PAR1", 4).is_err());
    }

    #[test]
    fn what_bytes_look_like() {
        assert_eq!(looks_like(b"PAR1\x15\x04"), "Parquet");
        assert_eq!(looks_like(b"{\"a\":1}\n"), "JSON text");
        assert_eq!(looks_like(b"a,b\n1,2\n"), "text (such as CSV)");
        assert_eq!(looks_like(&[0x1f, 0x8b, 8]), "gzip");
        assert_eq!(
            looks_like(&[0xff, 0xfe, 0x00, 0x81]),
            "binary data of another format"
        );
    }
}
