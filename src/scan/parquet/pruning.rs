//! What statistics tell of a Parquet chunk before its rows are read: row groups (and, with a
//! page index, pages) whose minimum, maximum and null count rule the query out, and aggregates
//! they answer outright. Statistics go through the same value conversion as rows, so they agree
//! with evaluation.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow_array::{Array, ArrayRef, BooleanArray, UInt64Array};
use bytes::{Buf, Bytes};
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, RowSelection, RowSelector};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::basic::{Encoding, Type as PhysicalType};
use parquet::column::page::{Page, PageReader};
use parquet::errors::ParquetError;
use parquet::file::metadata::{
    ColumnChunkMetaData, PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader,
};
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::serialized_reader::SerializedPageReader;

use super::{S3Source, row_group_span, scan_error, value_at};
use crate::scan::ScanError;
use crate::scan::chunk::task::RowGroupsRead;
use crate::scan::sql::{Bounds, ColumnBounds, Query};
use crate::scan::value::{AggregateKind, Partial, Value};

/// Largest dictionary page read to prove a float column chunk holds no NaN (writers keep theirs
/// near 1 MiB); a larger one proves nothing and the rows are read.
const MAX_DICTIONARY_PAGE: u64 = 8 << 20;

/// Dictionary pages read at once per chunk.
const CONCURRENT_DICTIONARIES: usize = 4;

/// Row-group statistics of the columns a query reads, for the chunk's row groups.
pub(super) struct GroupStats {
    columns: Vec<ColumnStats>,
    /// Index in the file of the chunk's first row group.
    first: usize,
    /// Rows of the row group the bounds are asked of, and its position in the chunk.
    rows: Vec<u64>,
    pub(super) at: usize,
}

struct ColumnStats {
    path: Vec<String>,
    /// The column's leaf in the file's schema.
    leaf: Option<usize>,
    mins: Option<ArrayRef>,
    maxes: Option<ArrayRef>,
    nulls: Option<UInt64Array>,
    /// Per row group, whether its minimum and maximum are exact (not truncated).
    min_exact: Option<BooleanArray>,
    max_exact: Option<BooleanArray>,
    /// Float columns: per row group, whether the file proves it holds no NaN (a `nan_count` of
    /// 0). Statistics leave NaN out, and NaN sorts above every number: without that proof the
    /// greatest value may be NaN. `None` for columns of other types, which hold no NaN.
    nan_free: Option<Vec<bool>>,
}

impl GroupStats {
    /// Statistics of top-level columns (nested fields have none here: never pruned by).
    pub(super) fn new(
        arrow: &ArrowReaderMetadata,
        paths: &[Vec<String>],
        chunk: &ChunkGroups,
    ) -> GroupStats {
        let metadata = arrow.metadata();
        let groups = &metadata.row_groups()[chunk.groups.start as usize..chunk.groups.end as usize];
        let columns = paths
            .iter()
            .filter_map(|path| {
                let converter = converter(arrow, path)?;
                let nan_free = is_float(arrow, path).then(|| {
                    groups
                        .iter()
                        .map(|group| {
                            let nans = converter
                                .parquet_column_index()
                                .and_then(|column| group.columns().get(column))
                                .and_then(|column| column.statistics())
                                .and_then(|stats| stats.nan_count_opt());
                            nans == Some(0)
                        })
                        .collect()
                });
                Some(ColumnStats {
                    path: path.clone(),
                    leaf: converter.parquet_column_index(),
                    mins: converter.row_group_mins(groups).ok(),
                    maxes: converter.row_group_maxes(groups).ok(),
                    nulls: converter.row_group_null_counts(groups).ok(),
                    min_exact: converter.row_group_is_min_value_exact(groups).ok(),
                    max_exact: converter.row_group_is_max_value_exact(groups).ok(),
                    nan_free,
                })
            })
            .collect();
        GroupStats {
            columns,
            first: chunk.groups.start as usize,
            rows: chunk.rows.clone(),
            at: 0,
        }
    }
}

impl GroupStats {
    /// For the MAX of a float column that the footer is to answer: the row groups whose
    /// statistics leave NaN unproven are proven free of it by their dictionary, where every data
    /// page of the column chunk is dictionary-encoded (one small ranged GET each instead of
    /// every page decoded). A dictionary holding NaN, or a chunk not dictionary-encoded
    /// throughout, proves nothing and its rows are read (then no dictionary is fetched).
    pub(super) async fn prove_nan_free_by_dictionaries(
        &mut self,
        query: &Query,
        source: &S3Source,
        location: &str,
    ) -> Result<(), ScanError> {
        let Some(items) = query.footer_aggregates() else {
            return Ok(());
        };
        let metadata = source.metadata.clone();
        let mut maxima: Vec<usize> = items
            .iter()
            .filter_map(|(kind, path)| match (kind, path) {
                (AggregateKind::Max, Some(path)) => {
                    self.columns.iter().position(|c| c.path == *path)
                }
                _ => None,
            })
            .collect();
        maxima.sort_unstable();
        maxima.dedup();
        let mut unproven = Vec::new();
        for at_column in maxima {
            let column = &self.columns[at_column];
            let (Some(flags), Some(leaf)) = (&column.nan_free, column.leaf) else {
                continue;
            };
            for (at, proven) in flags.iter().enumerate() {
                let group = self.first + at;
                let chunk = metadata
                    .row_groups()
                    .get(group)
                    .and_then(|group| group.columns().get(leaf));
                match (*proven, chunk.and_then(dictionary_page)) {
                    (true, _) => {}
                    (false, Some(range)) => unproven.push((at_column, at, (group, leaf), range)),
                    // The footer cannot answer for the chunk: its rows are read anyway.
                    (false, None) => return Ok(()),
                }
            }
        }
        let proofs: Vec<_> = futures::stream::iter(unproven)
            .map(|(at_column, at, (group, leaf), range)| {
                let mut source = source.clone();
                let metadata = metadata.clone();
                async move {
                    let bytes = source
                        .get_bytes(range.clone())
                        .await
                        .map_err(|e| scan_error(e, location))?;
                    let chunk = metadata
                        .row_groups()
                        .get(group)
                        .and_then(|group| group.columns().get(leaf));
                    let free = chunk.and_then(|c| dictionary_holds_nan(c, range.start, bytes))
                        == Some(false);
                    Ok::<_, ScanError>((at_column, at, free))
                }
            })
            .buffer_unordered(CONCURRENT_DICTIONARIES)
            .try_collect()
            .await?;
        for (at_column, at, free) in proofs {
            if let Some(flag) = self.columns[at_column]
                .nan_free
                .as_mut()
                .and_then(|flags| flags.get_mut(at))
            {
                *flag |= free;
            }
        }
        Ok(())
    }
}

/// Where the dictionary page of a column chunk lies, when the chunk's data pages are all
/// dictionary-encoded (so that its values are the dictionary's) and the page is small enough to
/// read for that.
fn dictionary_page(column: &ColumnChunkMetaData) -> Option<Range<u64>> {
    let encoded = data_pages_dictionary_encoded(column) == Some(true);
    let start = u64::try_from(column.dictionary_page_offset()?).ok()?;
    let end = u64::try_from(column.data_page_offset()).ok()?;
    (encoded && start < end && end - start <= MAX_DICTIONARY_PAGE).then_some(start..end)
}

/// Whether the column chunk's page encoding statistics say every data page is dictionary-encoded;
/// `None` when the writer wrote none.
pub(super) fn data_pages_dictionary_encoded(column: &ColumnChunkMetaData) -> Option<bool> {
    column.page_encoding_stats_mask().map(|mask| {
        mask.is_only(Encoding::RLE_DICTIONARY) || mask.is_only(Encoding::PLAIN_DICTIONARY)
    })
}

/// Whether the float dictionary page read at `start` holds a NaN; `None` when the bytes are not
/// such a page.
fn dictionary_holds_nan(column: &ColumnChunkMetaData, start: u64, bytes: Bytes) -> Option<bool> {
    let width = match column.column_type() {
        PhysicalType::DOUBLE => 8,
        PhysicalType::FLOAT => 4,
        _ => return None,
    };
    let slice = Arc::new(FileSlice { start, bytes });
    let mut pages = SerializedPageReader::new(slice, column, 0, None).ok()?;
    let Some(Page::DictionaryPage {
        buf,
        num_values,
        encoding: Encoding::PLAIN | Encoding::PLAIN_DICTIONARY,
        ..
    }) = pages.get_next_page().ok()?
    else {
        return None;
    };
    let values = buf.get(..(num_values as usize).checked_mul(width)?)?;
    Some(match width {
        8 => values
            .chunks_exact(8)
            .any(|v| v.try_into().is_ok_and(|v| f64::from_le_bytes(v).is_nan())),
        _ => values
            .chunks_exact(4)
            .any(|v| v.try_into().is_ok_and(|v| f32::from_le_bytes(v).is_nan())),
    })
}

/// Bytes read from a file at `start`, addressed by their offsets in the file.
struct FileSlice {
    start: u64,
    bytes: Bytes,
}

impl FileSlice {
    fn from(&self, offset: u64) -> parquet::errors::Result<Bytes> {
        offset
            .checked_sub(self.start)
            .and_then(|at| usize::try_from(at).ok())
            .filter(|at| *at <= self.bytes.len())
            .map(|at| self.bytes.slice(at..))
            .ok_or_else(|| ParquetError::EOF(format!("offset {offset} outside the bytes read")))
    }
}

impl Length for FileSlice {
    fn len(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

impl ChunkReader for FileSlice {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(self.from(start)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let bytes = self.from(start)?;
        match length <= bytes.len() {
            true => Ok(bytes.slice(..length)),
            false => Err(ParquetError::EOF(format!(
                "{length} bytes at {start} past the bytes read"
            ))),
        }
    }
}

impl Bounds for GroupStats {
    fn bounds(&self, path: &[String]) -> Option<ColumnBounds<'_>> {
        let column = self.columns.iter().find(|c| c.path == path)?;
        let nulls = column
            .nulls
            .as_ref()
            .filter(|n| self.at < n.len() && n.is_valid(self.at))
            .map(|n| n.value(self.at));
        let exact = |flags: &Option<BooleanArray>| {
            flags
                .as_ref()
                .is_some_and(|f| self.at < f.len() && f.is_valid(self.at) && f.value(self.at))
        };
        let (min_exact, max_exact) = (exact(&column.min_exact), exact(&column.max_exact));
        Some(ColumnBounds {
            min: column
                .mins
                .as_ref()
                .filter(|_| min_exact)
                .and_then(|a| known(a.as_ref(), self.at)),
            max: column
                .maxes
                .as_ref()
                .filter(|_| max_exact)
                .and_then(|a| known(a.as_ref(), self.at))
                .map(|max| match &column.nan_free {
                    Some(flags) if !flags.get(self.at).copied().unwrap_or(false) => nan_bound(),
                    _ => max,
                }),
            nulls,
            rows: self.rows.get(self.at).copied().unwrap_or(0),
        })
    }

    fn typed(&self) -> bool {
        true
    }
}

/// Statistics of the top-level column `path` (nested fields have none here: never pruned by).
fn converter<'a>(
    arrow: &'a ArrowReaderMetadata,
    path: &[String],
) -> Option<StatisticsConverter<'a>> {
    let [name] = path else {
        return None;
    };
    let metadata = arrow.metadata();
    StatisticsConverter::try_new(
        name,
        arrow.schema(),
        metadata.file_metadata().schema_descr(),
    )
    .ok()
}

/// Whether the top-level column `path` holds floats (which may be NaN).
fn is_float(arrow: &ArrowReaderMetadata, path: &[String]) -> bool {
    let [name] = path else {
        return false;
    };
    arrow
        .schema()
        .field_with_name(name)
        .is_ok_and(|field| field.data_type().is_floating())
}

/// The greatest bound of a float column that may hold NaN: NaN itself, above every number.
fn nan_bound() -> Value<'static> {
    Value::Float(f64::NAN)
}

/// A statistic: `None` when unknown (null, or NaN, which writers of the format's older rules
/// put there and which then bounds nothing).
fn known(array: &dyn Array, at: usize) -> Option<Value<'_>> {
    Some(value_at(array, at))
        .filter(|v| *v != Value::Null && !matches!(v, Value::Float(f) if f.is_nan()))
}

/// COUNT(*), COUNT, MIN and MAX from row-group statistics, when every row group of the chunk has
/// them (exact, numeric for MIN and MAX; for the MAX of floats, only where the file proves there
/// is no NaN); `None` when any aggregate needs the rows.
pub(super) fn footer_answer(query: &Query, stats: &mut GroupStats) -> Option<Vec<Partial>> {
    let items = query.footer_aggregates()?;
    let mut partials = query.empty_partials();
    for ((kind, path), partial) in items.iter().zip(partials.iter_mut()) {
        for at in 0..stats.rows.len() {
            stats.at = at;
            let rows = stats.rows[at];
            let bounds = match path {
                Some(path) => Some(stats.bounds(path)?),
                None => None,
            };
            match (kind, bounds, &mut *partial) {
                (AggregateKind::CountAll, _, Partial::Count(n)) => *n = n.saturating_add(rows),
                (AggregateKind::Count, Some(b), Partial::Count(n)) => {
                    *n = n.saturating_add(rows.saturating_sub(b.nulls?))
                }
                (AggregateKind::Min | AggregateKind::Max, Some(b), partial) => {
                    if b.nulls == Some(rows) {
                        continue;
                    }
                    let value = match kind {
                        AggregateKind::Min => b.min?,
                        _ => b.max?,
                    };
                    // A NaN bound says NaN may be there, not that it is: the pages tell.
                    if !matches!(value, Value::Int(_) | Value::Float(_))
                        || matches!(value, Value::Float(f) if f.is_nan())
                    {
                        return None;
                    }
                    partial.add(Some(&value)).ok()?;
                }
                _ => return None,
            }
        }
    }
    Some(partials)
}

/// The footer with its page index, when the file has one for the columns the filter reads (one
/// more ranged GET); the footer as it is otherwise.
pub(super) async fn with_page_index(
    source: &mut S3Source,
    metadata: Arc<ParquetMetaData>,
    location: &str,
) -> Result<Arc<ParquetMetaData>, ScanError> {
    let indexed = metadata
        .row_groups()
        .iter()
        .flat_map(|g| g.columns())
        .any(|c| c.column_index_range().is_some() && c.offset_index_range().is_some());
    if !indexed || metadata.page_index().is_some() {
        return Ok(metadata);
    }
    let mut reader = ParquetMetaDataReader::new_with_metadata((*metadata).clone())
        .with_page_index_policy(PageIndexPolicy::Optional);
    reader
        .load_page_index(&mut *source)
        .await
        .map_err(|e| scan_error(e, location))?;
    let loaded = reader.finish().map_err(|e| scan_error(e, location))?;
    Ok(Arc::new(loaded))
}

/// One column's pages in one row group: where each starts (in rows) and its statistics.
struct ColumnPages {
    path: Vec<String>,
    /// The column holds floats: pages' statistics leave NaN out, so a page's greatest value may
    /// be NaN (page indexes do not say whether it holds any).
    float: bool,
    starts: Vec<u64>,
    rows: Vec<u64>,
    mins: ArrayRef,
    maxes: ArrayRef,
    nulls: UInt64Array,
}

/// Statistics of the page of each column that holds one run of rows.
struct PageBounds<'a> {
    columns: &'a [ColumnPages],
    /// The run's first row (in the row group).
    row: u64,
}

impl Bounds for PageBounds<'_> {
    fn bounds(&self, path: &[String]) -> Option<ColumnBounds<'_>> {
        let column = self.columns.iter().find(|c| c.path == path)?;
        let page = column.starts.partition_point(|start| *start <= self.row);
        let page = page.checked_sub(1)?;
        Some(ColumnBounds {
            min: known(column.mins.as_ref(), page),
            max: known(column.maxes.as_ref(), page).map(|max| match column.float {
                true => nan_bound(),
                false => max,
            }),
            nulls: (page < column.nulls.len() && column.nulls.is_valid(page))
                .then(|| column.nulls.value(page)),
            rows: column.rows.get(page).copied().unwrap_or(0),
        })
    }

    fn typed(&self) -> bool {
        true
    }
}

/// The rows of `kept` row groups (in order) that pages' statistics do not rule out: `None` when
/// the file has no page index for the filter's columns.
pub(super) fn page_selection(
    arrow: &ArrowReaderMetadata,
    query: &Query,
    paths: &[Vec<String>],
    kept: &[usize],
) -> Option<RowSelection> {
    let metadata = arrow.metadata();
    let index = metadata.page_index()?;
    let mut selectors = Vec::new();
    let mut pruned_any = false;
    for &group in kept {
        let rows = metadata.row_group(group).num_rows().max(0) as u64;
        let columns: Vec<ColumnPages> = paths
            .iter()
            .filter_map(|path| {
                let converter = converter(arrow, path)?;
                let one = [group];
                let counts = converter
                    .data_page_row_counts(index.as_ref(), metadata.row_groups(), &one)
                    .ok()??;
                let rows: Vec<u64> = counts.values().iter().copied().collect();
                let starts = rows
                    .iter()
                    .scan(0u64, |at, n| {
                        let start = *at;
                        *at += n;
                        Some(start)
                    })
                    .collect();
                Some(ColumnPages {
                    path: path.clone(),
                    float: is_float(arrow, path),
                    starts,
                    mins: converter.data_page_mins(index.as_ref(), &one).ok()?,
                    maxes: converter.data_page_maxes(index.as_ref(), &one).ok()?,
                    nulls: converter.data_page_null_counts(index.as_ref(), &one).ok()?,
                    rows,
                })
            })
            .collect();
        let mut cuts: Vec<u64> = columns.iter().flat_map(|c| c.starts.clone()).collect();
        cuts.push(0);
        cuts.retain(|cut| *cut < rows);
        cuts.sort_unstable();
        cuts.dedup();
        for (at, &start) in cuts.iter().enumerate() {
            let end = cuts.get(at + 1).copied().unwrap_or(rows);
            let run = (end - start) as usize;
            let bounds = PageBounds {
                columns: &columns,
                row: start,
            };
            if query.may_match(&bounds) {
                selectors.push(RowSelector::select(run));
            } else {
                pruned_any = true;
                selectors.push(RowSelector::skip(run));
            }
        }
    }
    pruned_any.then(|| RowSelection::from(selectors))
}

/// A chunk's row groups, their rows and bytes.
pub(super) struct ChunkGroups {
    pub(super) groups: Range<u32>,
    /// Rows and byte spans of each of the chunk's row groups.
    pub(super) rows: Vec<u64>,
    pub(super) spans: Vec<(u64, u64)>,
    pub(super) total_rows: u64,
    /// Compressed bytes of the chunk's row groups.
    pub(super) bytes: u64,
}

impl ChunkGroups {
    pub(super) fn new(arrow: &ArrowReaderMetadata, groups: Range<u32>) -> ChunkGroups {
        let all = arrow.metadata().row_groups();
        let of_chunk = &all[groups.start as usize..(groups.end as usize).min(all.len())];
        let rows: Vec<u64> = of_chunk
            .iter()
            .map(|g| g.num_rows().max(0) as u64)
            .collect();
        let spans: Vec<_> = of_chunk.iter().map(row_group_span).collect();
        ChunkGroups {
            total_rows: rows.iter().sum(),
            bytes: spans.iter().map(|(s, e)| e.saturating_sub(*s)).sum(),
            groups,
            rows,
            spans,
        }
    }

    pub(super) fn indexes(&self) -> Vec<usize> {
        (self.groups.start as usize..self.groups.end as usize).collect()
    }

    pub(super) fn read(
        &self,
        skipped: u32,
        skipped_bytes: u64,
        source: &S3Source,
    ) -> RowGroupsRead {
        RowGroupsRead {
            first: self.groups.start,
            end: self.groups.end,
            skipped,
            skipped_bytes,
            fetched_bytes: source.fetched.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::{Float32Array, Float64Array, RecordBatch};
    use parquet::file::metadata::ParquetMetaDataReader;
    use parquet::file::properties::WriterProperties;

    use super::*;

    /// A file of one float column holding `values`, and its footer.
    fn file(values: ArrayRef, dictionary: bool) -> (Bytes, ParquetMetaData) {
        let batch = RecordBatch::try_from_iter([("x", values)]).unwrap();
        let properties = WriterProperties::builder()
            .set_dictionary_enabled(dictionary)
            .build();
        let bytes = super::super::parquet_bytes(&batch, properties);
        let metadata = ParquetMetaDataReader::new()
            .parse_and_finish(&bytes)
            .unwrap();
        (bytes, metadata)
    }

    /// Whether the dictionary of the file's only column chunk holds NaN, read as the scan reads
    /// it: `None` when the chunk has no dictionary that speaks for every value.
    fn holds_nan(values: ArrayRef, dictionary: bool) -> Option<bool> {
        let (bytes, metadata) = file(values, dictionary);
        let column = metadata.row_group(0).column(0);
        let range = dictionary_page(column)?;
        let page = bytes.slice(range.start as usize..range.end as usize);
        dictionary_holds_nan(column, range.start, page)
    }

    #[test]
    fn a_float_dictionary_says_whether_nan_is_there() {
        let doubles = |v: &[f64]| Arc::new(Float64Array::from(v.to_vec())) as ArrayRef;
        let floats = |v: &[f32]| Arc::new(Float32Array::from(v.to_vec())) as ArrayRef;
        let fares = [2.5, 7.25, 2.5, 99.99, -0.0, 7.25];
        assert_eq!(holds_nan(doubles(&fares), true), Some(false));
        assert_eq!(holds_nan(doubles(&[1.0, f64::NAN, 1.0]), true), Some(true));
        assert_eq!(holds_nan(floats(&[3.5, 3.5, 1e30]), true), Some(false));
        assert_eq!(holds_nan(floats(&[3.5, f32::NAN]), true), Some(true));
        // Plain pages: no dictionary speaks for the values.
        assert_eq!(holds_nan(doubles(&fares), false), None);
    }

    #[test]
    fn bytes_that_are_no_dictionary_page_prove_nothing() {
        let values = Arc::new(Float64Array::from(vec![1.0, 2.0, 1.0])) as ArrayRef;
        let (bytes, metadata) = file(values, true);
        let column = metadata.row_group(0).column(0);
        let range = dictionary_page(column).unwrap();
        let page = bytes.slice(range.start as usize..range.end as usize);
        // Cut short, shifted, or garbage.
        let short = page.slice(..page.len() / 2);
        assert_eq!(dictionary_holds_nan(column, range.start, short), None);
        assert_eq!(
            dictionary_holds_nan(column, range.start + 1, page.clone()),
            None
        );
        let garbage = Bytes::from(vec![0xffu8; page.len()]);
        assert_eq!(dictionary_holds_nan(column, range.start, garbage), None);
        assert_eq!(dictionary_holds_nan(column, range.start, page), Some(false));
    }
}
