//! One chunk of a Parquet object: its row groups, less those whose statistics rule out the query,
//! read column by column through arrow-rs over s3flow's own S3 reads, and the query run on their
//! rows; aggregates that statistics answer are answered without reading any row. A fetch writes
//! the chunk's row groups as a Parquet file of their own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Schema};
use aws_sdk_s3::Client;
use futures::StreamExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::{ParquetRecordBatchStream, ParquetRecordBatchStreamBuilder};
use parquet::file::metadata::{ColumnChunkMetaData, ParquetMetaData};
use tokio::sync::mpsc;

use super::aggregate::ArrayAggregates;
use super::pruning::{
    ChunkGroups, GroupStats, data_pages_dictionary_encoded, footer_answer, page_selection,
    with_page_index,
};
use super::writer::{ParquetRows, selected_rows};
use super::{
    ArrowRow, CsvColumn, Resolved, S3Source, arrow_metadata, columns_of, prefilter, read_footer,
    scan_error,
};
use crate::scan::chunk::rows::{LocalRows, RowBatch, RowWriter, TextFormat};
use crate::scan::chunk::task::{
    BadRecord, ChunkReport, ChunkTask, OutputFormat, RowGroupsRead, Work,
};
use crate::scan::chunk::upload::upload_part;
use crate::scan::sql::{ColumnComparison, Evaluator, Outcome, Query};
use crate::scan::text::split::{ChunkSplit, STATES, State};
use crate::scan::value::Partial;
use crate::scan::{Layout, ScanError};
use crate::shutdown::Stop;

/// Rows per decoded batch: a few MiB of values for typical columns.
const BATCH_ROWS: usize = 32768;

/// Runs one chunk of a Parquet object.
pub(crate) async fn run_parquet_chunk(
    s3: &Client,
    task: &ChunkTask,
    query: Option<Query>,
    progress: Arc<AtomicU64>,
    stop: Stop,
    local: Option<LocalRows>,
) -> Result<ChunkReport, ScanError> {
    let layout = &task.layout;
    let location = layout.object.url();
    let planned = layout
        .parquet
        .as_ref()
        .ok_or_else(|| ScanError::InvalidScan("the task has no Parquet layout".into()))?;
    let groups = planned
        .row_groups(task.index)
        .ok_or_else(|| ScanError::InvalidScan(format!("the scan has no chunk {}", task.index)))?;
    let metadata = chunk_footer(s3, layout).await?;
    if metadata.num_row_groups() != planned.row_groups as usize {
        return Err(ScanError::ObjectChanged(format!(
            "{location} has {} row groups, {} when planned",
            metadata.num_row_groups(),
            planned.row_groups
        )));
    }
    let mut source = S3Source {
        s3: s3.clone(),
        bucket: layout.object.bucket.clone(),
        key: layout.object.key.clone(),
        etag: layout.object.etag.clone(),
        metadata,
        fetched: Arc::new(AtomicU64::new(0)),
    };
    if query.as_ref().is_some_and(Query::has_filter) {
        let metadata = source.metadata.clone();
        source.metadata = with_page_index(&mut source, metadata, &location).await?;
    }
    let arrow = arrow_metadata(source.metadata.clone(), &location)?;
    let chunk = ChunkGroups::new(&arrow, groups);
    match (&task.work, query) {
        (Work::Fetch { path }, _) => {
            let rows = write_chunk_file(source.clone(), &arrow, &chunk, path, &stop).await?;
            progress.fetch_add(chunk.bytes, Ordering::Relaxed);
            let read = chunk.read(0, 0, &source);
            Ok(report(task, &chunk, read, (rows, 0, Vec::new()), None))
        }
        (Work::Query { output, .. }, Some(query)) => {
            let output = output.clone();
            let run = QueryRun {
                task,
                query: &query,
                arrow: &arrow,
                chunk: &chunk,
                source,
                progress,
            };
            run.run(s3, output, stop, local).await
        }
        (Work::Query { .. }, None) => Err(ScanError::InvalidScan(
            "a query task without a query".into(),
        )),
    }
}

/// The footer of the layout's object version: the one its planning read in this process, else
/// read once per process, so that a local scan's chunks share it (a chunk Job reads it once
/// anyway). Only chunks use it: one process scans for one user, never for several (the operator
/// plans with `read_footer` itself).
async fn chunk_footer(s3: &Client, layout: &Layout) -> Result<Arc<ParquetMetaData>, ScanError> {
    if let Some(planned) = layout.parquet.as_ref().and_then(|p| p.footer.0.clone()) {
        return Ok(planned);
    }
    type Version = (String, String, String, u64);
    static LAST: Mutex<Option<(Version, Arc<ParquetMetaData>)>> = Mutex::new(None);
    let version = (
        layout.object.bucket.clone(),
        layout.object.key.clone(),
        layout.object.etag.clone(),
        layout.object.size,
    );
    let cached = LAST.lock().ok().and_then(|last| {
        last.as_ref()
            .filter(|(read, _)| *read == version)
            .map(|(_, metadata)| metadata.clone())
    });
    if let Some(metadata) = cached {
        return Ok(metadata);
    }
    let (metadata, _) = read_footer(
        s3,
        (&layout.object.bucket, &layout.object.key),
        &layout.object.etag,
        layout.object.size,
    )
    .await?;
    if let Ok(mut last) = LAST.lock() {
        *last = Some((version, metadata.clone()));
    }
    Ok(metadata)
}

/// The chunk's report: every row of its row groups is a record, its bytes are theirs.
fn report(
    task: &ChunkTask,
    chunk: &ChunkGroups,
    read: RowGroupsRead,
    (records, rows, partials): (u64, u64, Vec<Partial>),
    bad_record: Option<BadRecord>,
) -> ChunkReport {
    let (start, end) = task.layout.range(task.index);
    ChunkReport {
        index: task.index,
        range: [start, end.min(task.layout.object.size)],
        fingerprint: task.fingerprint(),
        assumed: State::RecordEnd,
        split: ChunkSplit {
            end: [State::RecordEnd; STATES],
            first_record: [Some(0); STATES],
        },
        records,
        bytes: chunk.bytes,
        rows,
        partials,
        part: None,
        bad_record,
        row_groups: Some(read),
        objects: 0,
        skipped: Default::default(),
        pieces: Vec::new(),
        continues: false,
    }
}

/// A query over one chunk's row groups.
struct QueryRun<'a> {
    task: &'a ChunkTask,
    query: &'a Query,
    arrow: &'a ArrowReaderMetadata,
    chunk: &'a ChunkGroups,
    source: S3Source,
    progress: Arc<AtomicU64>,
}

impl QueryRun<'_> {
    async fn run(
        self,
        s3: &Client,
        output: Option<crate::scan::Output>,
        stop: Stop,
        local: Option<LocalRows>,
    ) -> Result<ChunkReport, ScanError> {
        let paths = self.query.paths();
        let mut stats = GroupStats::new(self.arrow, &paths, self.chunk);
        let (parts_tx, parts_rx) = mpsc::channel::<RowBatch>(1);
        // Rows go to the task's output, else to a local one, else nowhere.
        let rows_to = match (&output, local) {
            (Some(output), _) => Some((output.format, true, parts_tx)),
            (None, Some(local)) => Some((local.format, false, local.to)),
            (None, None) => None,
        };
        if rows_to.is_none() {
            stats
                .prove_nan_free_by_dictionaries(self.query, &self.source, &self.location())
                .await?;
        }
        if rows_to.is_none()
            && let Some(partials) = footer_answer(self.query, &mut stats)
        {
            self.progress.fetch_add(self.chunk.bytes, Ordering::Relaxed);
            let read = self.chunk.read(0, 0, &self.source);
            let counts = (self.chunk.total_rows, 0, partials);
            return Ok(report(self.task, self.chunk, read, counts, None));
        }
        let (kept, skipped, skipped_bytes) = self.prune(&mut stats);
        self.progress.fetch_add(skipped_bytes, Ordering::Relaxed);
        let writes_all = rows_to.is_some() && self.query.output_names().is_none();
        let output_json = rows_to
            .as_ref()
            .is_some_and(|(format, ..)| *format == OutputFormat::JsonLines);
        let stream = self.stream(kept, &paths, writes_all, rows_to.is_none())?;
        let upload_stop = stop.clone();
        let upload_to = output.clone();
        let upload = async move {
            match &upload_to {
                Some(output) => {
                    let chunk = (self.task.index, self.task.run.as_str());
                    upload_part(s3, output, chunk, parts_rx, upload_stop).await
                }
                None => Ok(None),
            }
        };
        let rows = match rows_to {
            Some((format, header, parts)) => Some(self.row_sink(format, header, parts)?),
            None => None,
        };
        let evaluation = Evaluation {
            query: self.query.clone(),
            work: BatchWork {
                rows,
                arrays: ArrayAggregates::of(self.query),
                filtered: self.query.has_filter(),
                comparisons: self.query.column_comparisons(),
                plain: self
                    .query
                    .plain_columns()
                    .filter(|columns| !columns.is_empty())
                    .map(|columns| columns.into_iter().map(|(_, path)| path).collect()),
                paths,
                whole: writes_all.then(|| whole_columns(self.arrow, output_json)),
            },
            stop,
            progress: self.progress.clone(),
            bytes_per_row: self.chunk.bytes as f64 / self.chunk.total_rows.max(1) as f64,
            location: self.location(),
            first_offset: self.chunk.spans.first().map_or(0, |(start, _)| *start),
        };
        let evaluate = async {
            tokio::task::spawn_blocking(move || evaluation.run(stream))
                .await
                .map_err(ScanError::Parser)?
        };
        let (evaluated, uploaded) = tokio::join!(evaluate, upload);
        let (evaluated, part) = match (evaluated, uploaded) {
            // The query stopped because the upload did: the upload's error is the cause.
            (Err(ScanError::OutputClosed), Err(upload)) => return Err(upload),
            (evaluated, uploaded) => (evaluated?, uploaded?),
        };
        let read = self.chunk.read(skipped, skipped_bytes, &self.source);
        let counts = (self.chunk.total_rows, evaluated.rows, evaluated.partials);
        let mut report = report(self.task, self.chunk, read, counts, evaluated.bad);
        report.part = part;
        Ok(report)
    }

    fn location(&self) -> String {
        self.task.layout.object.url()
    }

    /// The chunk's row groups statistics do not rule out; how many they do, and their bytes.
    fn prune(&self, stats: &mut GroupStats) -> (Vec<usize>, u32, u64) {
        let mut kept = Vec::new();
        let (mut skipped, mut skipped_bytes) = (0u32, 0u64);
        for (at, index) in self.chunk.indexes().into_iter().enumerate() {
            stats.at = at;
            if self.query.may_match(&*stats) {
                kept.push(index);
            } else {
                skipped += 1;
                let (start, end) = self.chunk.spans[at];
                skipped_bytes += end.saturating_sub(start);
            }
        }
        (kept, skipped, skipped_bytes)
    }

    /// The decoded batches of the `kept` row groups: the columns of `paths` (all of them when
    /// rows are written whole), the pages a page index does not rule out; dictionary-encoded
    /// text as dictionaries when `text_dictionaries` (no rows are written).
    fn stream(
        &self,
        kept: Vec<usize>,
        paths: &[Vec<String>],
        all_columns: bool,
        text_dictionaries: bool,
    ) -> Result<ParquetRecordBatchStream<S3Source>, ScanError> {
        let pages = page_selection(self.arrow, self.query, paths, &kept);
        let arrow = match text_dictionaries {
            true => with_text_dictionaries(self.arrow, paths, &kept),
            false => self.arrow.clone(),
        };
        let mut builder =
            ParquetRecordBatchStreamBuilder::new_with_metadata(self.source.clone(), arrow)
                .with_row_groups(kept)
                .with_projection(projection(self.arrow, paths, all_columns))
                .with_batch_size(BATCH_ROWS);
        if let Some(pages) = pages {
            builder = builder.with_row_selection(pages);
        }
        builder.build().map_err(|e| scan_error(e, &self.location()))
    }

    /// Where selected rows go: text rows, or Parquet of the selected columns.
    fn row_sink(
        &self,
        format: OutputFormat,
        header: bool,
        parts: mpsc::Sender<RowBatch>,
    ) -> Result<RowSink, ScanError> {
        if format != OutputFormat::Parquet {
            let json = format == OutputFormat::JsonLines;
            let names = self.query.output_names().unwrap_or_else(|| {
                whole_columns(self.arrow, json)
                    .into_iter()
                    .map(|path| path.join("."))
                    .collect()
            });
            return Ok(RowSink::Text(RowWriter::new(
                TextFormat::of(format)?,
                names,
                header,
                parts,
            )));
        }
        let columns = self.query.plain_columns().ok_or_else(|| {
            ScanError::InvalidScan(
                "Parquet output takes columns only (computed values need csv or jsonLines output)"
                    .into(),
            )
        })?;
        Ok(RowSink::Parquet {
            part: Box::new(ParquetRows::new(parts)),
            columns: (!columns.is_empty()).then_some(columns),
        })
    }
}

/// Where a query's selected rows go.
enum RowSink {
    Text(RowWriter),
    /// The selected columns (`None`: all of them, as the file has them).
    Parquet {
        part: Box<ParquetRows>,
        columns: Option<Vec<(String, Vec<String>)>>,
    },
}

impl RowSink {
    fn finish(self) -> Result<(), ScanError> {
        match self {
            RowSink::Text(rows) => rows.finish(),
            RowSink::Parquet { part, .. } => part.finish(),
        }
    }
}

/// The columns `SELECT *` writes: for JSON Lines the top-level columns, nested values as JSON;
/// for CSV every struct field as a column of its own (lists and maps as JSON text).
fn whole_columns(arrow: &ArrowReaderMetadata, json: bool) -> Vec<Vec<String>> {
    match json {
        true => arrow
            .schema()
            .fields()
            .iter()
            .map(|field| vec![field.name().clone()])
            .collect(),
        false => columns_of(arrow)
            .into_iter()
            .map(|(path, _)| path)
            .collect(),
    }
}

/// The columns to fetch: the top-level columns holding the query's paths, or all of them.
fn projection(arrow: &ArrowReaderMetadata, paths: &[Vec<String>], all: bool) -> ProjectionMask {
    if all {
        return ProjectionMask::all();
    }
    let fields = arrow.schema().fields();
    let roots = fields.iter().enumerate().filter_map(|(index, field)| {
        paths
            .iter()
            .any(|p| p.first() == Some(field.name()))
            .then_some(index)
    });
    ProjectionMask::roots(arrow.metadata().file_metadata().schema_descr(), roots)
}

/// Writes the chunk's row groups, all columns, as a Parquet file of their own (row group for row
/// group) at `path`; returns its rows.
async fn write_chunk_file(
    source: S3Source,
    arrow: &ArrowReaderMetadata,
    chunk: &ChunkGroups,
    path: &std::path::Path,
    stop: &Stop,
) -> Result<u64, ScanError> {
    let location = format!("s3://{}/{}", source.bucket, source.key);
    let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(source, arrow.clone())
        .with_row_groups(chunk.indexes())
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| scan_error(e, &location))?;
    let schema = arrow.schema().clone();
    let group_rows = chunk.rows.clone();
    let (path, stop) = (path.to_path_buf(), stop.clone());
    tokio::task::spawn_blocking(move || {
        copy_row_groups(stream, schema, &group_rows, &path, &stop, &location)
    })
    .await
    .map_err(ScanError::Parser)?
}

fn copy_row_groups(
    mut stream: ParquetRecordBatchStream<S3Source>,
    schema: arrow_schema::SchemaRef,
    group_rows: &[u64],
    path: &std::path::Path,
    stop: &Stop,
    location: &str,
) -> Result<u64, ScanError> {
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;
    let write_error = |e: parquet::errors::ParquetError| ScanError::Write {
        what: "the chunk file".into(),
        source: std::io::Error::other(e),
    };
    let file = std::fs::File::create(path).map_err(crate::scan::chunk::sink::file_error)?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(None)
        .build();
    let mut writer = ArrowWriter::try_new(file, schema, Some(properties)).map_err(write_error)?;
    let runtime = tokio::runtime::Handle::current();
    let mut ends = group_rows.iter().scan(0u64, |sum, rows| {
        *sum += rows;
        Some(*sum)
    });
    let mut group_end = ends.next();
    let mut written = 0u64;
    while let Some(batch) = runtime.block_on(stream.next()) {
        if stop.is_requested() {
            return Err(ScanError::Stopped);
        }
        let batch = batch.map_err(|e| scan_error(e, location))?;
        writer.write(&batch).map_err(write_error)?;
        written += batch.num_rows() as u64;
        // Batches never span row groups: one ends exactly where a batch does.
        while group_end.is_some_and(|end| end <= written) {
            writer.flush().map_err(write_error)?;
            group_end = ends.next();
        }
    }
    writer.close().map_err(write_error)?;
    Ok(written)
}

/// What a chunk's query found.
struct Evaluated {
    rows: u64,
    partials: Vec<Partial>,
    bad: Option<BadRecord>,
}

/// The query over decoded batches, on a blocking thread (decoding and evaluating are CPU work,
/// and rows are handed to the uploader by blocking sends).
struct Evaluation {
    query: Query,
    work: BatchWork,
    stop: Stop,
    progress: Arc<AtomicU64>,
    bytes_per_row: f64,
    location: String,
    /// Where the chunk's first row group starts (bad records are placed there).
    first_offset: u64,
}

impl Evaluation {
    fn run(self, mut stream: ParquetRecordBatchStream<S3Source>) -> Result<Evaluated, ScanError> {
        let Evaluation {
            query,
            mut work,
            stop,
            progress,
            bytes_per_row,
            location,
            first_offset,
        } = self;
        let runtime = tokio::runtime::Handle::current();
        let mut evaluator = query.evaluator();
        let mut bad = None;
        let mut seen = 0u64;
        while let Some(batch) = runtime.block_on(stream.next()) {
            if stop.is_requested() {
                return Err(ScanError::Stopped);
            }
            let batch = batch.map_err(|e| scan_error(e, &location))?;
            let count = batch.num_rows() as u64;
            progress.fetch_add((count as f64 * bytes_per_row) as u64, Ordering::Relaxed);
            match work.batch(&batch, &mut evaluator) {
                Ok(()) => {}
                Err(RowFailure::Scan(e)) => return Err(e),
                Err(RowFailure::Bad(message)) => {
                    let rows = format!("rows {seen}-{}", seen + count);
                    bad = Some(BadRecord {
                        offset: first_offset,
                        message: format!("in {rows} of the chunk: {message}"),
                    });
                    break;
                }
            }
            seen += count;
            if !query.is_aggregate() && !evaluator.wants_more() {
                break;
            }
        }
        if let Some(rows) = work.rows {
            rows.finish()?;
        }
        Ok(Evaluated {
            rows: evaluator.rows,
            partials: evaluator.partials,
            bad,
        })
    }
}

/// What the query does with each batch.
struct BatchWork {
    rows: Option<RowSink>,
    /// The aggregates, when they can be taken over whole arrays.
    arrays: Option<ArrayAggregates>,
    /// Whether the query has a WHERE clause.
    filtered: bool,
    paths: Vec<Vec<String>>,
    /// The WHERE clause's column comparisons, run over whole columns first, and whether they are
    /// all of it.
    comparisons: (Vec<ColumnComparison>, bool),
    /// Every column, for text rows written whole (`SELECT *`).
    whole: Option<Vec<Vec<String>>>,
    /// The selected columns of a query that selects columns (none for `SELECT *`).
    plain: Option<Vec<Vec<String>>>,
}

impl BatchWork {
    /// Runs the query on every row of `batch` and writes the rows it selects.
    fn batch(&mut self, batch: &RecordBatch, evaluator: &mut Evaluator) -> Result<(), RowFailure> {
        let columns = resolve(batch, &self.paths);
        let whole = resolve(batch, self.whole.as_deref().unwrap_or_default());
        let whole = TextColumns::of(&whole);
        let (comparisons, whole_filter) = &self.comparisons;
        let kept = prefilter(batch, comparisons);
        let certain = kept.as_ref().is_some_and(|k| k.certain) && *whole_filter;
        // The filter decided (or there is none): aggregates are taken over the arrays.
        let decided = certain || (kept.is_none() && !self.filtered);
        if decided
            && self.rows.is_none()
            && let Some(arrays) = &self.arrays
            && arrays.add(
                batch,
                kept.as_ref().map(|k| k.rows.as_slice()),
                &mut evaluator.partials,
            )
        {
            return Ok(());
        }
        // Rows the pre-filter keeps (every row without one); the others are never evaluated.
        let candidates: Vec<usize> = match &kept {
            Some(kept) => kept_rows(&kept.rows[..kept.rows.len().min(batch.num_rows())]),
            None => (0..batch.num_rows()).collect(),
        };
        let selected = self.plain.as_deref().map(|plain| resolve(batch, plain));
        let all_found = selected.as_ref().map(Vec::len) == self.plain.as_ref().map(Vec::len);
        // The selected columns, when the batch has every one of them.
        let selected_text = selected
            .as_deref()
            .filter(|_| all_found)
            .map(TextColumns::of);
        if let (true, Some(selected), Some(RowSink::Text(rows))) =
            (certain, &selected_text, &mut self.rows)
        {
            // The filter is decided and the selection is columns: rows go out straight from the
            // arrays, with no SQL evaluation.
            for row in candidates {
                if !evaluator.wants_more() {
                    break;
                }
                evaluator.rows += 1;
                selected.write(rows, row).map_err(RowFailure::Scan)?;
            }
            return Ok(());
        }
        let writes_parquet = matches!(self.rows, Some(RowSink::Parquet { .. }));
        let mut keep = vec![false; if writes_parquet { batch.num_rows() } else { 0 }];
        for row in candidates {
            let record = ArrowRow {
                columns: &columns,
                row,
            };
            let outcome = match certain {
                true => evaluator.matched_record(&record),
                false => evaluator.record(&record),
            }
            .map_err(RowFailure::Bad)?;
            let written = match (outcome, &mut self.rows, &selected_text) {
                (Outcome::Whole, Some(RowSink::Text(rows)), _) => whole.write(rows, row),
                // Columns go out as the file has them (nested values nested, in JSON).
                (Outcome::Row(_), Some(RowSink::Text(rows)), Some(selected)) => {
                    selected.write(rows, row)
                }
                (Outcome::Row(values), Some(RowSink::Text(rows)), None) => rows.values(values),
                (outcome, Some(RowSink::Parquet { .. }), _) => {
                    keep[row] = matches!(outcome, Outcome::Whole | Outcome::Row(_));
                    Ok(())
                }
                _ => Ok(()),
            };
            written.map_err(RowFailure::Scan)?;
        }
        if let Some(RowSink::Parquet { part, columns }) = &mut self.rows {
            let selected = match columns {
                Some(columns) => Some(column_arrays(batch, columns).map_err(RowFailure::Scan)?),
                None => None,
            };
            let rows = selected_rows(batch, keep, selected.as_deref()).map_err(RowFailure::Scan)?;
            part.write(&rows).map_err(RowFailure::Scan)?;
        }
        Ok(())
    }
}

/// `arrow` with the top-level text columns of `paths` decoded as dictionaries where each of
/// their column chunks in `groups` is dictionary-encoded (a dictionary page, and no data page
/// said to be encoded otherwise): aggregates and filters then take each distinct value once, and
/// no string is copied per row. A guess that is wrong (pages that fall back to plain encoding
/// unannounced) costs time only: arrow-rs builds the dictionary then.
fn with_text_dictionaries(
    arrow: &ArrowReaderMetadata,
    paths: &[Vec<String>],
    groups: &[usize],
) -> ArrowReaderMetadata {
    let metadata = arrow.metadata();
    let encoded = |chunk: &ColumnChunkMetaData| {
        chunk.dictionary_page_offset().is_some()
            && data_pages_dictionary_encoded(chunk) != Some(false)
    };
    let dictionary_encoded = |name: &str| {
        groups.iter().all(|&group| {
            metadata.row_groups().get(group).is_some_and(|group| {
                group
                    .columns()
                    .iter()
                    .any(|chunk| chunk.column_path().parts() == [name] && encoded(chunk))
            })
        })
    };
    let mut changed = false;
    let fields: Vec<_> = arrow
        .schema()
        .fields()
        .iter()
        .map(|field| {
            let text = matches!(
                field.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            );
            let read = paths
                .iter()
                .any(|path| matches!(path.as_slice(), [name] if name == field.name()));
            if !(text && read && dictionary_encoded(field.name())) {
                return field.clone();
            }
            changed = true;
            let dictionary =
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
            Arc::new(field.as_ref().clone().with_data_type(dictionary))
        })
        .collect();
    if !changed {
        return arrow.clone();
    }
    let schema = Schema::new_with_metadata(fields, arrow.schema().metadata().clone());
    let options = ArrowReaderOptions::new().with_schema(Arc::new(schema));
    ArrowReaderMetadata::try_new(metadata.clone(), options).unwrap_or_else(|_| arrow.clone())
}

/// The numbers of the rows `kept` keeps, in order. Each row's number is written and the count
/// moves on only for a kept one: no branch on the row, which a filter keeping a few rows in
/// random places would mispredict on every other kept row.
fn kept_rows(kept: &[bool]) -> Vec<usize> {
    let mut rows = vec![0; kept.len()];
    let mut count = 0;
    for (row, &keep) in kept.iter().enumerate() {
        if let Some(slot) = rows.get_mut(count) {
            *slot = row;
        }
        count += usize::from(keep);
    }
    rows.truncate(count);
    rows
}

/// Columns written as text rows: as CSV fields (each column's way chosen once per batch; nested
/// values as JSON text), or as JSON values (structs, lists and maps nested).
struct TextColumns<'r, 'b> {
    columns: &'r [Resolved<'b>],
    csv: Vec<CsvColumn<'r, 'b>>,
}

impl<'r, 'b> TextColumns<'r, 'b> {
    fn of(columns: &'r [Resolved<'b>]) -> TextColumns<'r, 'b> {
        TextColumns {
            columns,
            csv: columns.iter().map(CsvColumn::of).collect(),
        }
    }

    /// Row `row` of the columns as a text row.
    fn write(&self, rows: &mut RowWriter, row: usize) -> Result<(), ScanError> {
        match rows.format {
            TextFormat::Csv => rows
                .csv_record(|record| self.csv.iter().for_each(|column| column.write(row, record))),
            TextFormat::JsonLines => rows.json_values(self.columns.iter().map(|c| c.json(row))),
        }
    }
}

/// The arrays of `columns` (output name, path) in `batch`.
fn column_arrays(
    batch: &RecordBatch,
    columns: &[(String, Vec<String>)],
) -> Result<Vec<(String, ArrayRef)>, ScanError> {
    columns
        .iter()
        .map(|(name, path)| {
            let (first, rest) = path.split_first().unzip();
            let mut array = first.and_then(|f| batch.column_by_name(f)).cloned();
            for field in rest.unwrap_or_default() {
                array = array
                    .as_ref()
                    .and_then(|a| a.as_struct_opt())
                    .and_then(|s| s.column_by_name(field))
                    .cloned();
            }
            array
                .map(|array| (name.clone(), array))
                .ok_or_else(|| ScanError::InvalidScan(format!("no column `{}`", path.join("."))))
        })
        .collect()
}

/// Why a row stopped the query: a value it cannot process (bad data), or the output.
enum RowFailure {
    Bad(String),
    Scan(ScanError),
}

/// The paths found in `batch`.
fn resolve<'b>(batch: &'b RecordBatch, paths: &'b [Vec<String>]) -> Vec<Resolved<'b>> {
    paths
        .iter()
        .filter_map(|path| Resolved::find(batch, path))
        .collect()
}

#[cfg(test)]
mod tests {
    use arrow_array::{Int64Array, StringArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::properties::WriterProperties;
    use parquet::schema::types::ColumnPath;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn dictionary_encoded_text_is_decoded_as_dictionaries() {
        let zones: Vec<String> = (0..3000).map(|i| format!("zone {}", i % 7)).collect();
        let batch = RecordBatch::try_from_iter([
            (
                "zone",
                Arc::new(StringArray::from(zones.clone())) as ArrayRef,
            ),
            ("plain", Arc::new(StringArray::from(zones.clone())) as _),
            ("n", Arc::new(Int64Array::from_iter_values(0..3000)) as _),
        ])
        .unwrap();
        let properties = WriterProperties::builder()
            .set_column_dictionary_enabled(ColumnPath::from("plain"), false)
            .set_max_row_group_row_count(Some(1000))
            .build();
        let bytes = super::super::parquet_bytes(&batch, properties);
        let arrow = ArrowReaderMetadata::load(&bytes, Default::default()).unwrap();
        let paths = |names: &[&str]| -> Vec<Vec<String>> {
            names.iter().map(|n| vec![n.to_string()]).collect()
        };
        let types = |arrow: &ArrowReaderMetadata| -> Vec<DataType> {
            arrow
                .schema()
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect()
        };
        let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let read = with_text_dictionaries(&arrow, &paths(&["zone", "plain", "n"]), &[0, 2]);
        assert_eq!(types(&read), [dictionary, DataType::Utf8, DataType::Int64]);
        // Columns the query does not read are left as they are.
        let unread = with_text_dictionaries(&arrow, &paths(&["plain", "n"]), &[0, 1, 2]);
        assert_eq!(types(&unread), types(&arrow));
        // The dictionaries hold the same text, row for row.
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(bytes, read)
            .build()
            .unwrap();
        let mut decoded = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            let column = batch.column_by_name("zone").unwrap();
            assert!(matches!(column.data_type(), DataType::Dictionary(..)));
            decoded.extend((0..batch.num_rows()).map(|row| {
                super::super::values::value_at(column.as_ref(), row)
                    .to_json()
                    .to_string()
            }));
        }
        let want: Vec<String> = zones.iter().map(|z| format!("{z:?}")).collect();
        assert_eq!(decoded, want);
    }

    proptest! {
        #[test]
        fn kept_rows_are_the_kept_ones_in_order(kept in proptest::collection::vec(any::<bool>(), 0..300)) {
            let naive: Vec<usize> = (0..kept.len()).filter(|&row| kept[row]).collect();
            prop_assert_eq!(super::kept_rows(&kept), naive);
        }
    }
}
