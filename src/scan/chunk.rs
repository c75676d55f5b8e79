//! One chunk: read its byte range (and past its end to finish its last record), find its records
//! from its start state, and run the query on them or write them to a local file.
//!
//! Reading is async (ranged GETs pinned to the object's ETag); parsing runs on a blocking thread
//! fed through a bounded channel, so memory stays a few buffers per chunk whatever its size.

use std::io::{BufRead, Write};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::json::{Scratch, is_json_value, visit_json_value};
use super::plan::Layout;
use super::split::{
    ChunkSplit, Machine, SplitScanner, State, byte_masks, guess_start, quoted_stretches,
};
use super::sql::{Columns, Evaluator, Outcome, Query, Record};
use super::value::{Number, Partial, Value, parse_plain_decimal};
use super::{Format, ScanError, delete_object, put_object, s3_error};

/// Bytes past a chunk's end fetched with its first request: most last records end within them.
const OVERHANG: u64 = 64 << 10;
/// Row output is uploaded in parts of this size.
const PART_BUFFER: usize = 8 << 20;
/// Read buffer of the parsing thread.
const READ_BUFFER: usize = 256 << 10;
/// A ranged GET whose body sends nothing for this long is retried (a connection that stalls).
const BODY_STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// Encoding of row output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OutputFormat {
    Csv,
    JsonLines,
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Csv => "csv",
            OutputFormat::JsonLines => "jsonl",
        }
    }
}

/// Where row output goes: one part object per chunk under `prefix`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    pub bucket: String,
    pub prefix: String,
    pub format: OutputFormat,
}

impl Output {
    pub fn part_key(&self, index: u32) -> String {
        format!("{}part-{index:05}.{}", self.prefix, self.format.extension())
    }

    /// Where chunk `index` records the multipart upload of its part while it runs.
    pub fn upload_record_key(&self, index: u32) -> String {
        format!("{}chunks/{index:05}.upload.json", self.prefix)
    }
}

/// A multipart upload a chunk started, recorded before any part is sent: a killed chunk's upload
/// is then aborted by its exact id, never found by listing a bucket other scans share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadRecord {
    /// The scan that started it ([`ChunkTask::run`]).
    pub run: String,
    pub key: String,
    pub upload_id: String,
}

/// Largest upload record read back (a few hundred bytes when genuine).
const UPLOAD_RECORD_LIMIT: usize = 4 << 10;

/// Aborts the upload chunk `index` of scan `run` recorded, if it recorded one: exactly that upload
/// of exactly its part key, whatever else the record says. True when there was one.
pub async fn abort_recorded_upload(
    s3: &Client,
    output: &Output,
    index: u32,
    run: &str,
) -> Result<bool, ScanError> {
    let record_key = output.upload_record_key(index);
    let location = format!("s3://{}/{record_key}", output.bucket);
    let body = match s3
        .get_object()
        .bucket(&output.bucket)
        .key(&record_key)
        .send()
        .await
    {
        Ok(object) => object.body,
        Err(e) => {
            return match s3_error(&format!("GET {location}"), e) {
                ScanError::ObjectNotFound(_) => Ok(false),
                other => Err(other),
            };
        }
    };
    let bytes = super::read_limited(body, UPLOAD_RECORD_LIMIT, &location).await?;
    let record = serde_json::from_slice::<UploadRecord>(&bytes).ok();
    let ours = record
        .filter(|r| r.run == run && r.key == output.part_key(index))
        .map(|r| r.upload_id);
    if let Some(upload_id) = &ours {
        crate::s3::abort_upload(s3, &output.bucket, &output.part_key(index), upload_id)
            .await
            .map_err(super::classify)?;
    }
    delete_object(s3, &output.bucket, &record_key).await?;
    Ok(ours.is_some())
}

/// What a chunk does with its records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Work {
    /// Run an SQL query; rows go to `output` when set.
    Query { sql: String, output: Option<Output> },
    /// Write the chunk's records, after the header row, to a local file.
    Fetch { path: PathBuf },
}

/// Everything one chunk needs: a worker needs nothing else (and no Kubernetes API).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkTask {
    pub layout: Layout,
    pub index: u32,
    /// The chunk's true start state when known; otherwise it is guessed and checked afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_state: Option<State>,
    pub work: Work,
    /// Which scan this chunk belongs to (the scan's uid): recorded with every upload the chunk
    /// starts, so that only this scan's uploads are ever aborted for it.
    #[serde(default)]
    pub run: String,
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
    pub index: u32,
    /// The chunk's byte range `[start, end)`, as its task gave it.
    #[serde(default)]
    pub range: [u64; 2],
    /// The task's [`ChunkTask::fingerprint`].
    #[serde(default)]
    pub fingerprint: String,
    /// The start state the chunk ran from.
    pub assumed: State,
    pub split: ChunkSplit,
    pub records: u64,
    pub bytes: u64,
    pub rows: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partials: Vec<Partial>,
    /// Key of the row output part, when rows were written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    /// The first record the query could not process. It fails the scan only once the chunk's
    /// start state is confirmed: a wrong guess reads garbage records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad_record: Option<BadRecord>,
}

/// A record the query could not process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRecord {
    pub offset: u64,
    pub message: String,
}

impl ChunkReport {
    /// Whether the chunk's start state could not have been guessed wrong.
    pub fn start_is_certain(task: &ChunkTask) -> bool {
        task.start_state.is_some()
            || task.index == 0
            || task.layout.gzip
            || task.layout.format == Format::JsonLines
    }

    /// The bad record as the scan's error.
    pub fn bad_data(&self, layout: &Layout) -> Option<ScanError> {
        let bad = self.bad_record.as_ref()?;
        let (start, end) = layout.range(self.index);
        Some(ScanError::BadData {
            chunk: self.index,
            start,
            end: end.min(layout.size),
            offset: bad.offset,
            message: bad.message.clone(),
        })
    }
}

/// Runs one chunk. `progress` counts the chunk's bytes as they are read.
pub async fn run_chunk(
    s3: &Client,
    task: &ChunkTask,
    progress: Arc<AtomicU64>,
) -> Result<ChunkReport, ScanError> {
    let layout = &task.layout;
    let (start, end) = layout.range(task.index);
    let query = match &task.work {
        Work::Query { sql, output } => {
            let query = super::sql::compile(sql, &columns_of(layout))?;
            if let Some(output) = output
                && query.output_names().is_none()
                && layout.format == Format::JsonLines
                && output.format == OutputFormat::Csv
            {
                return Err(ScanError::InvalidScan(
                    "SELECT * of JSON Lines is written as JSON Lines; name the columns for CSV output".into(),
                ));
            }
            Some(query)
        }
        Work::Fetch { .. } => None,
    };
    // The byte before the chunk tells its likely start state.
    let read_from = if layout.gzip {
        0
    } else {
        start - u64::from(start > layout.data_start)
    };
    let (bytes_tx, bytes_rx) = mpsc::channel(8);
    let fetch = fetch(s3.clone(), layout.clone(), read_from, end, bytes_tx);
    let (parts_tx, parts_rx) = mpsc::channel::<Part>(1);
    let output = match &task.work {
        Work::Query {
            output: Some(output),
            ..
        } => Some(output.clone()),
        _ => None,
    };
    let upload = async {
        match &output {
            Some(output) => upload_part(s3, output, task.index, &task.run, parts_rx).await,
            None => Ok(None),
        }
    };
    let writes_rows = output.is_some();
    let parse = {
        let task = task.clone();
        tokio::task::spawn_blocking(move || {
            let source = ChannelReader {
                rx: bytes_rx,
                current: Bytes::new(),
            };
            let parts = writes_rows.then_some(parts_tx);
            parse_chunk(&task, query.as_ref(), source, parts, &progress)
        })
    };
    let fetching = tokio::spawn(fetch);
    let (parsed, uploaded) = tokio::join!(parse, upload);
    // The parser stops reading once its last record is complete: the fetch ends with it.
    fetching.abort();
    let parsed = parsed.map_err(|e| ScanError::Read(format!("chunk parser: {e}")))?;
    match (parsed, uploaded) {
        // The parser stopped because the upload did: the upload's error is the cause.
        (Err(ScanError::S3(message)), Err(upload)) if message == UPLOAD_STOPPED => Err(upload),
        (parsed, uploaded) => {
            let mut report = parsed?;
            report.part = uploaded?;
            Ok(report)
        }
    }
}

fn columns_of(layout: &Layout) -> Columns {
    match layout.format {
        Format::Csv { .. } => Columns::Positional(layout.columns.clone()),
        Format::JsonLines => Columns::Named,
    }
}

/// Sends the object's bytes from `from` into `tx`: first up to a little past `end`, then in
/// growing windows until the parser hangs up. Every request requires the planned ETag; a broken
/// body resumes where it stopped.
async fn fetch(
    s3: Client,
    layout: Layout,
    from: u64,
    end: u64,
    tx: mpsc::Sender<Result<Bytes, ScanError>>,
) {
    let location = format!("s3://{}/{}", layout.bucket, layout.key);
    let mut offset = from;
    let mut window = if layout.gzip {
        layout.size
    } else {
        end.saturating_add(OVERHANG) - from
    };
    let mut attempt = 0;
    while offset < layout.size {
        let last = offset.saturating_add(window).min(layout.size) - 1;
        let response = s3
            .get_object()
            .bucket(&layout.bucket)
            .key(&layout.key)
            .range(format!("bytes={offset}-{last}"))
            .if_match(&layout.etag)
            .send()
            .await;
        let mut body = match response {
            Ok(object) => object.body,
            Err(error) => {
                let error = s3_error(&format!("GET {location} bytes {offset}-{last}"), error);
                attempt += 1;
                if error.is_transient() && attempt < 5 {
                    tokio::time::sleep(crate::ingest::backoff(attempt)).await;
                    continue;
                }
                let _ = tx.send(Err(error)).await;
                return;
            }
        };
        loop {
            let next = tokio::time::timeout(BODY_STALL, body.next())
                .await
                .unwrap_or_else(|_| Some(Err(stalled_body())));
            match next {
                Some(Ok(bytes)) => {
                    offset += bytes.len() as u64;
                    if tx.send(Ok(bytes)).await.is_err() {
                        return;
                    }
                }
                Some(Err(error)) => {
                    attempt += 1;
                    if attempt >= 5 {
                        let message = format!("GET {location} at byte {offset}: {error}");
                        let _ = tx.send(Err(ScanError::Read(message))).await;
                        return;
                    }
                    tokio::time::sleep(crate::ingest::backoff(attempt)).await;
                    break;
                }
                None => {
                    attempt = 0;
                    window = (window.max(1 << 20) * 2).min(16 << 20);
                    break;
                }
            }
        }
    }
}

/// The error of a body that sent nothing for [`BODY_STALL`].
fn stalled_body() -> aws_sdk_s3::primitives::ByteStreamError {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no bytes for {} s", BODY_STALL.as_secs()),
    )
    .into()
}

/// A blocking reader over the fetched bytes.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, ScanError>>,
    current: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = buf.len().min(available.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Hands the fetched buffers to the parser as they are, without copying them.
impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(error)) => return Err(std::io::Error::other(error)),
                None => break,
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, amount: usize) {
        self.current = self.current.slice(amount..);
    }
}

fn read_error(error: std::io::Error) -> ScanError {
    match error
        .into_inner()
        .map(|inner| inner.downcast::<ScanError>())
    {
        Some(Ok(scan)) => *scan,
        Some(Err(other)) => ScanError::Read(other.to_string()),
        None => ScanError::Read("read failed".into()),
    }
}

/// Reads the chunk from `source` (starting at the byte before the chunk, or at the object's start
/// when gzipped) and processes its records.
fn parse_chunk(
    task: &ChunkTask,
    query: Option<&Query>,
    source: impl BufRead + 'static,
    parts: Option<mpsc::Sender<Part>>,
    progress: &AtomicU64,
) -> Result<ChunkReport, ScanError> {
    let layout = &task.layout;
    let (start, end) = layout.range(task.index);
    let machine = Machine::new(layout.format.dialect());
    let mut source: Box<dyn BufRead> = if layout.gzip {
        Box::new(std::io::BufReader::with_capacity(
            READ_BUFFER,
            flate2::bufread::MultiGzDecoder::new(source),
        ))
    } else {
        Box::new(source)
    };
    // Gzip streams are read from the object's start; the header row before the chunk is skipped.
    let first_byte = start - u64::from(!layout.gzip && start > layout.data_start);
    let mut position = if layout.gzip { 0 } else { first_byte };
    let mut assumed = task.start_state;
    let mut seen_start = false;
    let mut split = SplitScanner::new(end - start);
    let mut sink = Sink::new(task, query, parts)?;
    let mut lane: Option<Lane> = None;
    loop {
        let block = source.fill_buf().map_err(read_error)?;
        let read = block.len();
        if read == 0 {
            break;
        }
        let mut data = block;
        if position < first_byte {
            let skip = (first_byte - position).min(data.len() as u64);
            data = &data[skip as usize..];
            position += skip;
        }
        if !seen_start && !data.is_empty() {
            seen_start = true;
            let before = (position < start).then(|| data[0]);
            if before.is_some() {
                data = &data[1..];
                position += 1;
            }
            assumed = assumed.or_else(|| Some(guess_start(&machine, before)));
        }
        if data.is_empty() {
            source.consume(read);
            continue;
        }
        let state = assumed.expect("set above");
        let in_range = end.saturating_sub(position).min(data.len() as u64) as usize;
        progress.fetch_add(in_range as u64, Ordering::Relaxed);
        let lane_done = match &mut lane {
            Some(lane) => lane.feed(data, &mut sink)?,
            None => {
                split.feed(&machine, &data[..in_range]);
                match split.first_record(state) {
                    Some(first) => {
                        let at = start + first;
                        let started = lane.insert(Lane::new(layout.format, at, end, &sink));
                        let rest = &data[(at - position) as usize..];
                        // An empty input would read as the end of the object.
                        !rest.is_empty() && started.feed(rest, &mut sink)?
                    }
                    None => false,
                }
            }
        };
        // The split scanner runs the bytes the lane has not: once settled, it follows the lane's
        // trajectory and skips to the lane's last record end.
        let range_end = position + in_range as u64;
        let mut fed = start + split.offset();
        if let Some(boundary) = lane.as_ref().map(Lane::record_start)
            && in_range > 0
            && split.settled()
            && fed < boundary
            && boundary <= range_end
        {
            split.skip_to_record_end(boundary - start);
            fed = boundary;
        }
        if in_range > 0 && fed < range_end {
            split.feed(&machine, &data[(fed - position) as usize..in_range]);
        }
        position += data.len() as u64;
        source.consume(read);
        if position >= end && (lane_done || lane.is_none()) {
            break;
        }
    }
    if !layout.gzip && position < end {
        return Err(ScanError::ObjectChanged(format!(
            "s3://{}/{} ended at byte {position}, before the chunk's end {end}",
            layout.bucket, layout.key
        )));
    }
    if let Some(lane) = &mut lane {
        lane.finish(&mut sink)?;
    }
    let assumed = assumed.unwrap_or(guess_start(&machine, None));
    let bytes = if layout.gzip {
        position.saturating_sub(start)
    } else {
        end - start
    };
    sink.finish(assumed, split.finish(), bytes)
}

/// Finds the records of a chunk from its first record start, reading past the chunk's end to
/// finish its last one.
enum Lane {
    Csv(Box<CsvLane>),
    Lines(LinesLane),
    Count(Box<CountLane>),
}

impl Lane {
    fn new(format: Format, at: u64, end: u64, sink: &Sink) -> Lane {
        let machine = Machine::new(format.dialect());
        let bounds = Bounds {
            end,
            max_record: sink.max_record,
        };
        match format {
            // Counting needs no fields: the record machine alone finds the records, as csv-core
            // would (the split module's tests hold them equal).
            Format::Csv {
                delimiter, quote, ..
            } if sink.counts_only => Lane::Count(Box::new(CountLane::new(
                machine, delimiter, quote, at, bounds,
            ))),
            Format::Csv {
                delimiter, quote, ..
            } => Lane::Csv(Box::new(CsvLane {
                machine,
                delimiter,
                quote,
                fields: sink.csv_fields,
                field_ends: Vec::new(),
                mask_ends: [0; 64],
                quoted: csv_core::ReaderBuilder::new()
                    .delimiter(delimiter)
                    .quote(quote)
                    .build(),
                out: vec![0; 4096],
                out_ends: vec![0; 64],
                pending: Vec::new(),
                state: State::RecordEnd,
                position: at,
                record_start: at,
                bounds,
                done: false,
            })),
            Format::JsonLines => Lane::Lines(LinesLane {
                line: Vec::new(),
                position: at,
                record_start: at,
                bounds,
                done: false,
            }),
        }
    }

    /// Where the last record the lane read ended (the lane's start before that).
    fn record_start(&self) -> u64 {
        match self {
            Lane::Csv(lane) => lane.record_start,
            Lane::Lines(lane) => lane.record_start,
            Lane::Count(lane) => lane.record_start,
        }
    }

    /// Feeds bytes; true once the chunk's last record is complete.
    fn feed(&mut self, input: &[u8], sink: &mut Sink) -> Result<bool, ScanError> {
        match self {
            Lane::Csv(lane) => lane.feed(input, sink),
            Lane::Lines(lane) => lane.feed(input, sink),
            Lane::Count(lane) => Ok(lane.feed(input)),
        }
    }

    fn finish(&mut self, sink: &mut Sink) -> Result<(), ScanError> {
        match self {
            Lane::Csv(lane) => lane.feed(&[], sink).map(|_| ()),
            Lane::Count(lane) => {
                lane.finish();
                sink.counted(lane.records);
                if let Some(offset) = lane.too_long {
                    sink.too_long(offset);
                }
                Ok(())
            }
            Lane::Lines(lane) => {
                if !lane.done
                    && !lane.line.trim_ascii().is_empty()
                    && lane.record_start < lane.bounds.end
                {
                    let line = std::mem::take(&mut lane.line);
                    sink.raw(&line)?;
                    sink.raw(b"\n")?;
                    sink.json(&line, lane.record_start)?;
                }
                Ok(())
            }
        }
    }
}

/// Where a lane stops: the chunk's end (its last record may run past it), and the longest
/// record it reads (a longer one is bad data: it would grow memory without bound).
#[derive(Clone, Copy)]
struct Bounds {
    end: u64,
    max_record: u64,
}

impl Bounds {
    /// Whether a record from `start` that reaches `reach` (its end, or as far as read) is too long.
    fn too_long(self, start: u64, reach: u64) -> bool {
        reach.saturating_sub(start) > self.max_record
    }
}

/// Counts a chunk's CSV records with the record machine: every record ends in exactly one
/// transition to `RecordEnd`, except a last one without a terminator.
struct CountLane {
    machine: Machine,
    delimiter: u8,
    quote: u8,
    state: State,
    position: u64,
    record_start: u64,
    bounds: Bounds,
    records: u64,
    /// Where a record longer than the bound starts; counting stops there.
    too_long: Option<u64>,
    done: bool,
}

impl CountLane {
    /// Counts the records that start in `at..end`; `at` is a record's start.
    fn new(machine: Machine, delimiter: u8, quote: u8, at: u64, bounds: Bounds) -> CountLane {
        CountLane {
            machine,
            delimiter,
            quote,
            state: State::RecordEnd,
            position: at,
            record_start: at,
            bounds,
            records: 0,
            too_long: None,
            done: false,
        }
    }

    /// True once the next record starts at or after the chunk's end (or a record is too long).
    fn feed(&mut self, mut input: &[u8]) -> bool {
        while !self.done && !input.is_empty() {
            if let Some(window) = input.first_chunk::<64>()
                && self.position + 64 < self.bounds.end
                && self.count_window(window)
            {
                self.position += 64;
                input = &input[64..];
                continue;
            }
            let (state, ended) = self.machine.run_to_record_end(self.state, input);
            self.state = state;
            let Some(at) = ended else {
                self.position += input.len() as u64;
                self.check_length(self.position);
                break;
            };
            self.position += at as u64;
            if self.check_length(self.position) {
                break;
            }
            self.records += 1;
            self.record_start = self.position;
            self.done = self.position >= self.bounds.end;
            input = &input[at..];
        }
        self.done
    }

    /// Stops at the current record when it reaches `reach` and is longer than the bound.
    fn check_length(&mut self, reach: u64) -> bool {
        if self.bounds.too_long(self.record_start, reach) {
            self.too_long = Some(self.record_start);
            self.done = true;
        }
        self.done
    }

    /// Counts the records that end in 64 bytes from bit masks. Quoted fields are where the count
    /// of quotes so far is odd (a doubled quote leaves and re-enters), as long as every quote that
    /// opens one starts a field or follows a quote; otherwise a quote is literal (inside an
    /// unquoted field) and the machine steps: false, nothing done. Outside quoted fields a
    /// terminator ends a record unless a record has not begun yet (at a record's start, or right
    /// after another terminator).
    fn count_window(&mut self, window: &[u8; 64]) -> bool {
        let [quotes, delimiters, newlines, returns] =
            byte_masks(window, [self.quote, self.delimiter, b'\n', b'\r']);
        let terminators = newlines | returns;
        let carried = if self.state == State::InQuoted { !0 } else { 0 };
        let may_open_first = matches!(
            self.state,
            State::RecordEnd | State::BetweenRecords | State::FieldStart | State::QuoteInQuoted
        );
        let (inside, literal) = quoted_stretches(
            quotes,
            delimiters,
            terminators,
            carried,
            u64::from(may_open_first),
        );
        if literal != 0 {
            return false;
        }
        let terminators = terminators & !inside;
        let at_record_start = matches!(self.state, State::RecordEnd | State::BetweenRecords);
        let ends = terminators & !((terminators << 1) | u64::from(at_record_start));
        // The record open at the window's start ends at its first end, or reaches past it.
        let reach = match ends {
            0 => self.position + 64,
            _ => self.position + u64::from(ends.trailing_zeros()) + 1,
        };
        if self.check_length(reach) {
            return true;
        }
        self.records += u64::from(ends.count_ones());
        if ends != 0 {
            self.record_start = self.position + 64 - u64::from(ends.leading_zeros());
        }
        self.state = match (inside >> 63, quotes >> 63, terminators >> 63, ends >> 63) {
            (1, ..) => State::InQuoted,
            // A quote that closes a quoted field (an opening one would be inside).
            (_, 1, ..) => State::QuoteInQuoted,
            (_, _, 1, 1) => State::RecordEnd,
            (_, _, 1, _) => State::BetweenRecords,
            _ => self.machine.step(State::InField, window[63]),
        };
        true
    }

    /// At the end of the object: a last record without a terminator counts too.
    fn finish(&mut self) {
        if !self.done && !matches!(self.state, State::RecordEnd | State::BetweenRecords) {
            self.records += 1;
        }
    }
}

/// Splits a chunk's CSV records into the fields the query reads. The record machine finds the
/// records; when none of those fields is quoted they are the bytes between delimiters (exactly what
/// csv-core returns for them, a quote inside an unquoted field being literal), otherwise csv-core
/// parses the record.
struct CsvLane {
    machine: Machine,
    delimiter: u8,
    quote: u8,
    /// How many leading fields the query reads.
    fields: usize,
    field_ends: Vec<usize>,
    /// The field ends found from bit masks (in a window, so at most 64). An array, not a Vec:
    /// reading a Vec's length right after pushes stalls on store forwarding.
    mask_ends: [usize; 64],
    /// Parses records with quoted fields among those read.
    quoted: csv_core::Reader,
    out: Vec<u8>,
    out_ends: Vec<usize>,
    /// The beginning of a record that continues in the next input.
    pending: Vec<u8>,
    state: State,
    position: u64,
    record_start: u64,
    bounds: Bounds,
    done: bool,
}

impl CsvLane {
    /// An empty `input` is the end of the object.
    fn feed(&mut self, mut input: &[u8], sink: &mut Sink) -> Result<bool, ScanError> {
        if input.is_empty() {
            // A last record without a terminator.
            if !self.done && !self.pending.is_empty() && self.record_start < self.bounds.end {
                let record = std::mem::take(&mut self.pending);
                sink.raw(&record)?;
                self.record(&record, sink)?;
            }
            self.done = true;
        }
        while !self.done {
            if self.record_start >= self.bounds.end {
                self.done = true;
                break;
            }
            if self.pending.is_empty() {
                // Terminators before a record's first byte are blank lines, not part of it.
                let blank = input
                    .iter()
                    .take_while(|b| matches!(b, b'\r' | b'\n'))
                    .count();
                if blank > 0 {
                    self.state = State::BetweenRecords;
                    input = &input[blank..];
                    self.position += blank as u64;
                }
            }
            if input.is_empty() {
                return Ok(false);
            }
            // At a record's start the fields read are often found from bit masks; the machine
            // then only has to find the record's end.
            let fast = match self.pending.is_empty() {
                true => self.fast_fields(input),
                false => None,
            };
            let (state, ended) = match fast {
                Some((after, State::RecordEnd, _)) => (State::RecordEnd, Some(after)),
                _ => {
                    let (from, state, _) = fast.unwrap_or((0, self.state, 0));
                    let (state, ended) = self.machine.run_to_record_end(state, &input[from..]);
                    (state, ended.map(|at| from + at))
                }
            };
            self.state = state;
            let reach = self.position + ended.unwrap_or(input.len()) as u64;
            if self.bounds.too_long(self.record_start, reach) {
                sink.too_long(self.record_start);
                self.pending = Vec::new();
                self.done = true;
                break;
            }
            let Some(at) = ended else {
                self.pending.extend_from_slice(input);
                self.position += input.len() as u64;
                return Ok(false);
            };
            let (line, rest) = input.split_at(at);
            if let Some((_, _, fields)) = fast {
                sink.raw(line)?;
                let record = CsvRecord {
                    data: &line[..at - 1],
                    ends: &self.mask_ends[..fields],
                    separated: true,
                };
                sink.csv(&record, self.record_start)?;
            } else {
                let mut pending = std::mem::take(&mut self.pending);
                let record = line_with(&mut pending, line);
                sink.raw(record)?;
                self.record(&record[..record.len() - 1], sink)?;
                pending.clear();
                self.pending = pending;
            }
            self.position += at as u64;
            self.record_start = self.position;
            input = rest;
        }
        Ok(true)
    }

    /// Ends of the fields read of the record at the start of `input`, from bit masks of its first
    /// 64 bytes, when they lie before its first quote and terminator (so none of them is quoted),
    /// into `mask_ends`. Returns where the record machine resumes and its state there
    /// (`RecordEnd`: the record ended just before), and how many ends it found. `None` when the
    /// masks cannot tell.
    fn fast_fields(&mut self, input: &[u8]) -> Option<(usize, State, usize)> {
        let window: &[u8; 64] = input.get(..64)?.try_into().ok()?;
        let [delimiters, quotes, newlines, returns] =
            byte_masks(window, [self.delimiter, self.quote, b'\n', b'\r']);
        let terminators = newlines | returns;
        // Delimiters before the first quote or terminator separate unquoted fields; a terminator
        // before any quote ends the record.
        let stop = (quotes | terminators).trailing_zeros() as usize;
        let ends_at_stop = stop < 64 && terminators & (1 << stop) != 0;
        let mut separators = delimiters
            & 1u64
                .checked_shl(stop as u32)
                .map_or(u64::MAX, |bit| bit - 1);
        let mut fields = 0;
        while fields < self.fields {
            if separators == 0 {
                if !ends_at_stop {
                    return None;
                }
                self.mask_ends[fields] = stop;
                fields += 1;
                break;
            }
            self.mask_ends[fields] = separators.trailing_zeros() as usize;
            fields += 1;
            separators &= separators - 1;
        }
        if ends_at_stop {
            return Some((stop + 1, State::RecordEnd, fields));
        }
        if fields == 0 {
            return Some((0, self.state, 0));
        }
        let last = self.mask_ends[fields - 1];
        // The record's end from the masks too, when it is in the window and its quotes before it
        // all open or close quoted fields (the field after `last` follows its delimiter).
        let after = u64::MAX.checked_shl(last as u32 + 1).unwrap_or(0);
        let (inside, literal) = quoted_stretches(quotes & after, delimiters, terminators, 0, 0);
        let ends = terminators & after & !inside;
        let end = ends.trailing_zeros();
        let before_end = 1u64.checked_shl(end).map_or(u64::MAX, |bit| bit - 1);
        Some(match ends != 0 && literal & before_end == 0 {
            true => (end as usize + 1, State::RecordEnd, fields),
            false => (last + 1, State::FieldStart, fields),
        })
    }

    /// One record, without its terminator.
    fn record(&mut self, bytes: &[u8], sink: &mut Sink) -> Result<(), ScanError> {
        self.field_ends.clear();
        let mut start = 0;
        while self.field_ends.len() < self.fields {
            if bytes.get(start) == Some(&self.quote) {
                return self.quoted_record(bytes, sink);
            }
            match memchr::memchr(self.delimiter, &bytes[start..]) {
                Some(at) => {
                    self.field_ends.push(start + at);
                    start += at + 1;
                }
                None => {
                    self.field_ends.push(bytes.len());
                    break;
                }
            }
        }
        let record = CsvRecord {
            data: bytes,
            ends: &self.field_ends,
            separated: true,
        };
        sink.csv(&record, self.record_start)
    }

    fn quoted_record(&mut self, bytes: &[u8], sink: &mut Sink) -> Result<(), ScanError> {
        use csv_core::ReadRecordResult;
        self.quoted.reset();
        // A blank line first: a reset reader strips a byte-order mark, which here is data.
        self.quoted
            .read_record(b"\n", &mut self.out, &mut self.out_ends);
        let (mut input, mut out_len, mut ends_len) = (bytes, 0, 0);
        loop {
            // An empty input is the end of the record.
            let (result, read, written, fields) = self.quoted.read_record(
                input,
                &mut self.out[out_len..],
                &mut self.out_ends[ends_len..],
            );
            input = &input[read..];
            out_len += written;
            ends_len += fields;
            match result {
                ReadRecordResult::OutputFull => {
                    let grown = self.out.len() * 2;
                    self.out.resize(grown, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let grown = self.out_ends.len() * 2;
                    self.out_ends.resize(grown, 0);
                }
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::Record | ReadRecordResult::End => break,
            }
        }
        let record = CsvRecord {
            data: &self.out[..out_len],
            ends: &self.out_ends[..ends_len],
            separated: false,
        };
        sink.csv(&record, self.record_start)
    }
}

struct LinesLane {
    line: Vec<u8>,
    position: u64,
    record_start: u64,
    bounds: Bounds,
    /// A line was too long: the lane reads no further.
    done: bool,
}

impl LinesLane {
    fn feed(&mut self, mut input: &[u8], sink: &mut Sink) -> Result<bool, ScanError> {
        while !self.done && self.record_start < self.bounds.end {
            let newline = memchr::memchr(b'\n', input);
            let reach = self.position + newline.map_or(input.len(), |at| at + 1) as u64;
            if self.bounds.too_long(self.record_start, reach) {
                sink.too_long(self.record_start);
                self.line = Vec::new();
                self.done = true;
                break;
            }
            let Some(newline) = newline else {
                self.line.extend_from_slice(input);
                self.position += input.len() as u64;
                return Ok(false);
            };
            let (line, rest) = input.split_at(newline + 1);
            let whole = line_with(&mut self.line, line);
            if !whole.trim_ascii().is_empty() {
                sink.raw(whole)?;
            }
            let record = std::mem::take(&mut self.line);
            let text = if record.is_empty() { line } else { &record };
            sink.json(text, self.record_start)?;
            self.position += line.len() as u64;
            self.record_start = self.position;
            input = rest;
        }
        Ok(true)
    }
}

/// `pending` plus `line`, without copying when nothing is pending.
fn line_with<'a>(pending: &'a mut Vec<u8>, line: &'a [u8]) -> &'a [u8] {
    if pending.is_empty() {
        line
    } else {
        pending.extend_from_slice(line);
        pending
    }
}

/// Fields as byte ranges of `data`, each ending at its entry of `ends`.
struct CsvRecord<'a> {
    data: &'a [u8],
    ends: &'a [usize],
    /// Fields are separated by a delimiter byte (the record as read), not adjacent (as unquoted).
    separated: bool,
}

impl CsvRecord<'_> {
    fn bytes(&self, index: usize) -> Option<&[u8]> {
        let end = *self.ends.get(index)?;
        let start = match index {
            0 => 0,
            _ => self.ends[index - 1] + usize::from(self.separated),
        };
        Some(&self.data[start..end])
    }
}

impl Record for CsvRecord<'_> {
    fn field(&self, index: usize) -> Result<Value<'_>, String> {
        match self.bytes(index) {
            None => Ok(Value::Null),
            Some(bytes) => std::str::from_utf8(bytes)
                .map(|text| Value::Str(text.into()))
                .map_err(|_| format!("field _{} is not UTF-8", index + 1)),
        }
    }

    fn path(&self, _: &[String]) -> Value<'_> {
        Value::Null
    }

    fn plain_number(&self, index: usize) -> Option<Number> {
        parse_plain_decimal(self.bytes(index)?)
    }
}

/// A JSON Lines record with only the top-level fields the query reads, `names[i]` the i-th.
struct JsonRecord<'a> {
    names: &'a [String],
    fields: JsonFields<'a>,
}

enum JsonFields<'a> {
    /// Each field's value as found by [`find_scalar_fields`] in `text`.
    Scalars {
        text: &'a [u8],
        scalars: &'a [Option<JsonScalar>],
    },
    /// Each field's value parsed by serde_json.
    Parsed(&'a [Option<serde_json::Value>]),
}

/// A scalar JSON value as serde_json reads it, a string by its span (UTF-8, without escapes).
#[derive(Clone, Debug)]
enum JsonScalar {
    Null,
    Bool(bool),
    Number(Number),
    Text(Range<usize>),
}

impl JsonScalar {
    /// The value at `span` of `line` (checked JSON), when it is a string without escapes, a plain
    /// decimal (as [`parse_plain_decimal`] reads it) or a literal.
    fn of(line: &[u8], span: Range<usize>) -> Option<JsonScalar> {
        Some(match line[span.start] {
            b'"' => {
                let inner = span.start + 1..span.end - 1;
                let text = &line[inner.clone()];
                if text.contains(&b'\\') || std::str::from_utf8(text).is_err() {
                    return None;
                }
                JsonScalar::Text(inner)
            }
            b't' => JsonScalar::Bool(true),
            b'f' => JsonScalar::Bool(false),
            b'n' => JsonScalar::Null,
            b'{' | b'[' => return None,
            first => match parse_plain_decimal(&line[span])? {
                // serde_json reads `-0` as a float.
                Number::Int(0) if first == b'-' => JsonScalar::Number(Number::Float(-0.0)),
                number => JsonScalar::Number(number),
            },
        })
    }

    fn value<'a>(&self, line: &'a [u8]) -> Value<'a> {
        match self {
            JsonScalar::Null => Value::Null,
            JsonScalar::Bool(b) => Value::Bool(*b),
            JsonScalar::Number(number) => (*number).into(),
            JsonScalar::Text(span) => Value::Str(
                std::str::from_utf8(&line[span.clone()])
                    .expect("checked to be UTF-8")
                    .into(),
            ),
        }
    }
}

/// Checks `line` and reads the fields named in `names` (the last of duplicates) into `scalars`,
/// when it is an object whose fields read are all [`JsonScalar`]s and whose keys are UTF-8 without
/// escapes (which could hide a name). False leaves the line to [`parse_json_fields`], which also
/// explains a refusal.
fn find_scalar_fields(
    line: &[u8],
    names: &[String],
    scalars: &mut [Option<JsonScalar>],
    scratch: &mut Scratch,
) -> bool {
    for scalar in scalars.iter_mut() {
        *scalar = None;
    }
    if line.first() != Some(&b'{') {
        return false;
    }
    let mut all_read = true;
    let valid = visit_json_value(line, scratch, |key, value| {
        // serde_json refuses keys that are not UTF-8.
        let plain_key = key.iter().all(|&b| b < 0x80 && b != b'\\')
            || (!key.contains(&b'\\') && std::str::from_utf8(key).is_ok());
        if !plain_key {
            all_read = false;
        } else if let Some(at) = names
            .iter()
            .position(|name| same_bytes(name.as_bytes(), key))
        {
            scalars[at] = JsonScalar::of(line, value);
            all_read &= scalars[at].is_some();
        }
    });
    valid && all_read
}

/// Byte by byte: names are a few bytes, shorter than a call to `memcmp` takes.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// Parses `line` into `values` (one per name in `names`), skipping the other fields unallocated.
fn parse_json_fields(
    line: &[u8],
    names: &[String],
    values: &mut [Option<serde_json::Value>],
) -> Result<(), String> {
    use serde::de::DeserializeSeed;
    values.fill(None);
    let mut parser = serde_json::Deserializer::from_slice(line);
    Projection { names, values }
        .deserialize(&mut parser)
        .and_then(|()| parser.end())
        .map_err(|e| format!("invalid JSON: {e}"))
}

impl JsonRecord<'_> {
    fn field_index(&self, name: &str) -> Option<usize> {
        self.names
            .iter()
            .position(|known| same_bytes(known.as_bytes(), name.as_bytes()))
    }
}

impl Record for JsonRecord<'_> {
    fn field(&self, index: usize) -> Result<Value<'_>, String> {
        Err(format!("JSON Lines records have no column _{}", index + 1))
    }

    fn path(&self, path: &[String]) -> Value<'_> {
        let Some((first, rest)) = path.split_first() else {
            return Value::Null;
        };
        let Some(at) = self.field_index(first) else {
            return Value::Null;
        };
        let mut value = match &self.fields {
            JsonFields::Scalars { text, scalars } => {
                return match (&scalars[at], rest) {
                    (Some(scalar), []) => scalar.value(text),
                    // Absent, or a scalar has no fields.
                    _ => Value::Null,
                };
            }
            JsonFields::Parsed(values) => match &values[at] {
                Some(value) => value,
                None => return Value::Null,
            },
        };
        for name in rest {
            match value.get(name) {
                Some(inner) => value = inner,
                None => return Value::Null,
            }
        }
        Value::from_json(value)
    }

    fn plain_path_number(&self, path: &[String]) -> Option<Number> {
        let JsonFields::Scalars { scalars, .. } = &self.fields else {
            return None;
        };
        let [name] = path else {
            return None;
        };
        match scalars[self.field_index(name)?] {
            Some(JsonScalar::Number(number)) => Some(number),
            _ => None,
        }
    }
}

/// Deserializes a JSON object, keeping the fields named in `names` (the last of duplicates).
struct Projection<'a> {
    names: &'a [String],
    values: &'a mut [Option<serde_json::Value>],
}

impl<'de> serde::de::DeserializeSeed<'de> for Projection<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Projection<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match self.names.iter().position(|name| *name == key.0) {
                Some(at) => self.values[at] = Some(map.next_value()?),
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// An object key, borrowed from the line unless it has escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(text.into()))
            }
            fn visit_str<E>(self, text: &str) -> Result<Key<'de>, E> {
                Ok(Key(text.to_string().into()))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Where a chunk's records go: the query and its row output, or the fetched file.
/// Names the chunk in bad-data errors.
#[derive(Clone, Copy)]
struct Blame {
    index: u32,
    range: (u64, u64),
    /// Size of the object.
    size: u64,
}

impl Blame {
    fn at(self, offset: u64, message: String) -> ScanError {
        ScanError::BadData {
            chunk: self.index,
            start: self.range.0,
            end: self.range.1,
            offset,
            message,
        }
    }
}

struct Sink<'q> {
    blame: Blame,
    columns: Vec<String>,
    evaluator: Option<Evaluator<'q>>,
    reads_fields: bool,
    rows: Option<RowWriter>,
    file: Option<std::io::BufWriter<std::fs::File>>,
    records: u64,
    bad_record: Option<BadRecord>,
    /// Top-level JSON fields the query reads, and a record's values of them.
    json_fields: Vec<String>,
    json_scalars: Vec<Option<JsonScalar>>,
    json_values: Vec<Option<serde_json::Value>>,
    /// Scratch for checking JSON Lines records.
    json_scratch: Scratch,
    /// The query only counts records: no field is read, nothing is written.
    counts_only: bool,
    /// How many leading fields of CSV records are read.
    csv_fields: usize,
    /// Longest record read.
    max_record: u64,
    /// The task's fingerprint, for the report.
    fingerprint: String,
}

impl<'q> Sink<'q> {
    fn new(
        task: &ChunkTask,
        query: Option<&'q Query>,
        parts: Option<mpsc::Sender<Part>>,
    ) -> Result<Sink<'q>, ScanError> {
        let layout = &task.layout;
        let file = match &task.work {
            Work::Fetch { path } => {
                let mut file =
                    std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| {
                        ScanError::Read(format!("creating {}: {e}", path.display()))
                    })?);
                if !layout.columns.is_empty() {
                    let mut header = csv::WriterBuilder::new().from_writer(Vec::new());
                    header
                        .write_record(&layout.columns)
                        .and_then(|_| header.flush().map_err(Into::into))
                        .map_err(|e| ScanError::Read(e.to_string()))?;
                    let header = header
                        .into_inner()
                        .map_err(|e| ScanError::Read(e.to_string()))?;
                    file.write_all(&header)
                        .map_err(|e| ScanError::Read(format!("writing {}: {e}", path.display())))?;
                }
                Some(file)
            }
            Work::Query { .. } => None,
        };
        let output_format = match &task.work {
            Work::Query {
                output: Some(output),
                ..
            } => Some(output.format),
            _ => None,
        };
        let rows = match (parts, output_format, query) {
            (Some(parts), Some(format), Some(query)) => Some(RowWriter::new(
                format,
                query
                    .output_names()
                    .unwrap_or_else(|| layout.columns.clone()),
                parts,
            )),
            _ => None,
        };
        let counts_only = query.is_some_and(Query::counts_only) && rows.is_none() && file.is_none();
        let reads_fields = query.is_some_and(Query::reads_fields) || rows.is_some();
        let json_fields: Vec<String> = query
            .map(Query::json_fields)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let csv_fields = match query {
            Some(query) if reads_fields => query.csv_fields_read(rows.is_some()),
            _ => 0,
        };
        Ok(Sink {
            blame: Blame {
                index: task.index,
                range: layout.range(task.index),
                size: layout.size,
            },
            columns: layout.columns.clone(),
            reads_fields,
            evaluator: query.map(Query::evaluator),
            rows,
            file,
            records: 0,
            bad_record: None,
            json_scalars: vec![None; json_fields.len()],
            json_values: vec![None; json_fields.len()],
            json_fields,
            json_scratch: Scratch::default(),
            counts_only,
            csv_fields,
            max_record: layout.max_record_size,
            fingerprint: task.fingerprint(),
        })
    }

    /// A record from `offset` is longer than the bound: it is the chunk's bad record.
    fn too_long(&mut self, offset: u64) {
        if self.bad_record.is_none() {
            self.bad_record = Some(BadRecord {
                offset,
                message: format!(
                    "a record longer than maxRecordSize ({} bytes) starts here",
                    self.max_record
                ),
            });
        }
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), ScanError> {
        if let Some(file) = &mut self.file {
            file.write_all(bytes)
                .map_err(|e| ScanError::Read(format!("writing the chunk file: {e}")))?;
        }
        Ok(())
    }

    /// Keeps the first bad record and ignores the records after it.
    fn bad(&mut self, result: Result<(), ScanError>) -> Result<(), ScanError> {
        match result {
            Err(ScanError::BadData {
                offset, message, ..
            }) => {
                self.bad_record = Some(BadRecord { offset, message });
                Ok(())
            }
            other => other,
        }
    }

    /// Records a counting lane found.
    fn counted(&mut self, records: u64) {
        self.records += records;
        if let Some(evaluator) = &mut self.evaluator {
            evaluator.count(records);
        }
    }

    fn csv(&mut self, record: &CsvRecord, offset: u64) -> Result<(), ScanError> {
        if self.bad_record.is_some() {
            return Ok(());
        }
        let result = self.csv_record(record, offset);
        self.bad(result)
    }

    fn json(&mut self, line: &[u8], offset: u64) -> Result<(), ScanError> {
        if self.bad_record.is_some() {
            return Ok(());
        }
        let result = self.json_record(line, offset);
        self.bad(result)
    }

    fn csv_record(&mut self, record: &CsvRecord, offset: u64) -> Result<(), ScanError> {
        self.records += 1;
        let blame = self.blame;
        let Some(evaluator) = &mut self.evaluator else {
            return Ok(());
        };
        let outcome = evaluator
            .record(record)
            .map_err(|message| blame.at(offset, message))?;
        let Some(rows) = &mut self.rows else {
            return Ok(());
        };
        match outcome {
            Outcome::Whole => {
                let fields = (0..record.ends.len()).map(|i| record.bytes(i).unwrap_or_default());
                match rows.format {
                    OutputFormat::Csv => rows.csv_bytes(fields),
                    OutputFormat::JsonLines => {
                        let object = csv_object(&self.columns, fields)
                            .map_err(|message| blame.at(offset, message))?;
                        rows.json(&object)
                    }
                }
            }
            Outcome::Row(values) => rows.values(&values),
            Outcome::Skip | Outcome::Aggregated => Ok(()),
        }
    }

    fn json_record(&mut self, line: &[u8], offset: u64) -> Result<(), ScanError> {
        let text = line.trim_ascii();
        if text.is_empty() {
            return Ok(());
        }
        self.records += 1;
        let blame = self.blame;
        let Some(evaluator) = &mut self.evaluator else {
            return Ok(());
        };
        if !self.reads_fields {
            // The fast check decides; serde_json only explains a refusal.
            if !is_json_value(text, &mut self.json_scratch) {
                let message = match serde_json::from_slice::<serde::de::IgnoredAny>(text) {
                    Err(e) => format!("invalid JSON: {e}"),
                    Ok(_) => "invalid JSON".to_string(),
                };
                return Err(blame.at(offset, message));
            }
            if self.counts_only {
                evaluator.count(1);
                return Ok(());
            }
            let record = JsonRecord {
                names: &[],
                fields: JsonFields::Parsed(&[]),
            };
            evaluator
                .record(&record)
                .map_err(|message| blame.at(offset, message))?;
            return Ok(());
        }
        let fields = if find_scalar_fields(
            text,
            &self.json_fields,
            &mut self.json_scalars,
            &mut self.json_scratch,
        ) {
            JsonFields::Scalars {
                text,
                scalars: &self.json_scalars,
            }
        } else {
            parse_json_fields(text, &self.json_fields, &mut self.json_values)
                .map_err(|message| blame.at(offset, message))?;
            JsonFields::Parsed(&self.json_values)
        };
        let record = JsonRecord {
            names: &self.json_fields,
            fields,
        };
        let outcome = evaluator
            .record(&record)
            .map_err(|message| blame.at(offset, message))?;
        match (outcome, &mut self.rows) {
            (Outcome::Whole, Some(rows)) => rows.line(text),
            (Outcome::Row(values), Some(rows)) => rows.values(&values),
            _ => Ok(()),
        }
    }

    fn finish(
        self,
        assumed: State,
        split: ChunkSplit,
        bytes: u64,
    ) -> Result<ChunkReport, ScanError> {
        if let Some(mut file) = self.file {
            file.flush()
                .map_err(|e| ScanError::Read(format!("writing the chunk file: {e}")))?;
        }
        let (rows, partials) = match self.evaluator {
            Some(evaluator) => (evaluator.rows, evaluator.partials),
            None => (0, Vec::new()),
        };
        if let Some(writer) = self.rows {
            writer.finish()?;
        }
        let (start, end) = self.blame.range;
        Ok(ChunkReport {
            index: self.blame.index,
            range: [start, end.min(self.blame.size)],
            fingerprint: self.fingerprint,
            assumed,
            split,
            records: self.records,
            bytes,
            rows,
            partials,
            part: None,
            bad_record: self.bad_record,
        })
    }
}

fn csv_object<'a>(
    columns: &[String],
    fields: impl Iterator<Item = &'a [u8]>,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    fields
        .enumerate()
        .map(|(i, bytes)| {
            let name = columns
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("_{}", i + 1));
            let text =
                std::str::from_utf8(bytes).map_err(|_| format!("field _{} is not UTF-8", i + 1))?;
            Ok((name, text.into()))
        })
        .collect()
}

/// Serializes rows into part buffers handed to the uploader.
struct RowWriter {
    format: OutputFormat,
    names: Vec<String>,
    csv: csv::Writer<Vec<u8>>,
    lines: Vec<u8>,
    header_written: bool,
    parts: mpsc::Sender<Part>,
}

fn csv_buffer() -> csv::Writer<Vec<u8>> {
    // Records may have fewer or more fields than the header, as the reader accepts them.
    csv::WriterBuilder::new()
        .flexible(true)
        .from_writer(Vec::with_capacity(PART_BUFFER))
}

impl RowWriter {
    fn new(format: OutputFormat, names: Vec<String>, parts: mpsc::Sender<Part>) -> RowWriter {
        RowWriter {
            format,
            names,
            csv: csv_buffer(),
            lines: Vec::new(),
            header_written: false,
            parts,
        }
    }

    fn csv_bytes<'a>(
        &mut self,
        fields: impl Iterator<Item = &'a [u8]> + Clone,
    ) -> Result<(), ScanError> {
        if !self.header_written {
            self.header_written = true;
            if self.names.is_empty() {
                self.names = (1..=fields.clone().count())
                    .map(|i| format!("_{i}"))
                    .collect();
            }
            self.csv
                .write_record(&self.names)
                .map_err(|e| ScanError::Read(format!("writing rows: {e}")))?;
        }
        self.csv
            .write_record(fields)
            .map_err(|e| ScanError::Read(format!("writing rows: {e}")))?;
        if self.csv.get_ref().len() >= PART_BUFFER {
            let full = std::mem::replace(&mut self.csv, csv_buffer());
            self.send(
                full.into_inner()
                    .map_err(|e| ScanError::Read(e.to_string()))?,
            )?;
        }
        Ok(())
    }

    fn values(&mut self, values: &[Value]) -> Result<(), ScanError> {
        match self.format {
            OutputFormat::Csv => {
                let texts: Vec<_> = values.iter().map(Value::to_field).collect();
                self.csv_bytes(texts.iter().map(|t| t.as_bytes()))
            }
            OutputFormat::JsonLines => {
                let object: serde_json::Map<_, _> = self
                    .names
                    .iter()
                    .cloned()
                    .zip(values.iter().map(Value::to_json))
                    .collect();
                self.json(&object)
            }
        }
    }

    fn json(
        &mut self,
        object: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), ScanError> {
        let line = serde_json::to_vec(object).map_err(|e| ScanError::Read(e.to_string()))?;
        self.line(&line)
    }

    /// A JSON Lines row as it is (`line` without its newline).
    fn line(&mut self, line: &[u8]) -> Result<(), ScanError> {
        self.lines.extend_from_slice(line);
        self.lines.push(b'\n');
        if self.lines.len() >= PART_BUFFER {
            let full = std::mem::take(&mut self.lines);
            self.send(full)?;
        }
        Ok(())
    }

    fn send(&self, buffer: Vec<u8>) -> Result<(), ScanError> {
        if buffer.is_empty() {
            return Ok(());
        }
        self.parts
            .blocking_send(Part::Rows(buffer))
            .map_err(|_| ScanError::S3(UPLOAD_STOPPED.into()))
    }

    fn finish(mut self) -> Result<(), ScanError> {
        let lines = std::mem::take(&mut self.lines);
        self.send(lines)?;
        let csv = std::mem::replace(&mut self.csv, csv::Writer::from_writer(Vec::new()));
        self.send(
            csv.into_inner()
                .map_err(|e| ScanError::Read(e.to_string()))?,
        )?;
        self.parts
            .blocking_send(Part::End)
            .map_err(|_| ScanError::S3(UPLOAD_STOPPED.into()))
    }
}

/// What the parser hands the uploader: rows, then the end (without it the rows are incomplete).
enum Part {
    Rows(Vec<u8>),
    End,
}

const UPLOAD_STOPPED: &str = "the output upload stopped";

/// Uploads a chunk's row output: one PUT when it fits one buffer, else a multipart upload that
/// is recorded before its first part and aborted if anything fails (an earlier attempt's recorded
/// upload is aborted first). No rows: a part left by an earlier run of the chunk is deleted.
async fn upload_part(
    s3: &Client,
    output: &Output,
    index: u32,
    run: &str,
    mut parts: mpsc::Receiver<Part>,
) -> Result<Option<String>, ScanError> {
    let key = output.part_key(index);
    let location = format!("s3://{}/{key}", output.bucket);
    let first = match parts.recv().await {
        Some(Part::Rows(rows)) => rows,
        Some(Part::End) => {
            delete_object(s3, &output.bucket, &key).await?;
            return Ok(None);
        }
        // The parser failed: nothing is written; its error is the chunk's.
        None => return Ok(None),
    };
    let second = match parts.recv().await {
        Some(Part::Rows(rows)) => rows,
        Some(Part::End) => {
            put_object(s3, &output.bucket, &key, first, None).await?;
            return Ok(Some(key));
        }
        None => return Ok(None),
    };
    abort_recorded_upload(s3, output, index, run).await?;
    let upload = s3
        .create_multipart_upload()
        .bucket(&output.bucket)
        .key(&key)
        .send()
        .await
        .map_err(|e| s3_error(&format!("starting the upload of {location}"), e))?;
    let upload_id = upload.upload_id().unwrap_or_default().to_string();
    let record = UploadRecord {
        run: run.to_string(),
        key: key.clone(),
        upload_id: upload_id.clone(),
    };
    let recorded = match serde_json::to_vec(&record) {
        Ok(body) => {
            put_object(
                s3,
                &output.bucket,
                &output.upload_record_key(index),
                body,
                Some("application/json"),
            )
            .await
        }
        Err(e) => Err(ScanError::InvalidScan(format!("recording the upload: {e}"))),
    };
    if let Err(error) = recorded {
        let _ = crate::s3::abort_upload(s3, &output.bucket, &key, &upload_id).await;
        return Err(error);
    }
    let result = async {
        let mut completed = Vec::new();
        let mut next = Some(first);
        let mut following = Some(second);
        while let Some(buffer) = next.take() {
            let number = completed.len() as i32 + 1;
            let part = s3
                .upload_part()
                .bucket(&output.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .part_number(number)
                .body(ByteStream::from(buffer))
                .send()
                .await
                .map_err(|e| s3_error(&format!("uploading part {number} of {location}"), e))?;
            completed.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .build(),
            );
            next = match following.take() {
                Some(buffer) => Some(buffer),
                None => match parts.recv().await {
                    Some(Part::Rows(rows)) => Some(rows),
                    Some(Part::End) => None,
                    None => return Err(ScanError::Read("the chunk's rows ended early".into())),
                },
            };
        }
        s3.complete_multipart_upload()
            .bucket(&output.bucket)
            .key(&key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_error(&format!("completing {location}"), e))?;
        Ok::<_, ScanError>(())
    }
    .await;
    if let Err(error) = result {
        // Left recorded when the abort fails: the scan's cleanup aborts it from the record.
        if crate::s3::abort_upload(s3, &output.bucket, &key, &upload_id)
            .await
            .is_ok()
        {
            let _ = delete_object(s3, &output.bucket, &output.upload_record_key(index)).await;
        }
        return Err(error);
    }
    delete_object(s3, &output.bucket, &output.upload_record_key(index)).await?;
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::verify::{Verdict, Verifier};
    use proptest::prelude::*;
    use std::io::Read;

    /// Reads `data` in pieces of pseudo-random sizes up to `largest`, as network frames arrive.
    struct Frames {
        data: Vec<u8>,
        at: usize,
        seed: u64,
        largest: u64,
    }

    impl Read for Frames {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            let n = (1 + self.seed % self.largest) as usize;
            let n = n.min(buf.len()).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn layout(data: &[u8], chunk_size: u64, columns: &[&str]) -> Layout {
        let header_end = data.iter().position(|&b| b == b'\n').unwrap() as u64 + 1;
        Layout {
            bucket: "b".into(),
            key: "k".into(),
            size: data.len() as u64,
            etag: "e".into(),
            format: Format::Csv {
                delimiter: b',',
                quote: b'"',
                header: true,
            },
            columns: columns.iter().map(|c| c.to_string()).collect(),
            data_start: header_end,
            chunk_size,
            gzip: false,
            max_record_size: super::super::plan::DEFAULT_MAX_RECORD_SIZE,
        }
    }

    fn task(layout: &Layout, index: u32, state: Option<State>) -> ChunkTask {
        ChunkTask {
            layout: layout.clone(),
            index,
            start_state: state,
            work: Work::Query {
                sql: String::new(),
                output: None,
            },
            run: "test".into(),
        }
    }

    fn run(
        layout: &Layout,
        query: &Query,
        index: u32,
        state: Option<State>,
        (seed, largest): (u64, u64),
    ) -> ChunkReport {
        let task = task(layout, index, state);
        let (start, _) = layout.range(index);
        let from = start - u64::from(start > layout.data_start);
        let source = Frames {
            data: DATA.with(|d| d.borrow()[from as usize..].to_vec()),
            at: 0,
            seed: seed | 1,
            largest,
        };
        let source = std::io::BufReader::new(source);
        parse_chunk(&task, Some(query), source, None, &AtomicU64::new(0)).unwrap()
    }

    thread_local! {
        static DATA: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// CSV records with quotes in every role: doubled, around delimiters and terminators, literal
    /// inside unquoted fields and after closing quotes, and quoted fields longer than a window.
    fn quotes_in_every_role() -> Vec<u8> {
        let mut data = Vec::new();
        let long = format!("\"{}\"", "a line,\r\n".repeat(12));
        let fields = [
            "\"\"",
            "\"\"\"\"",
            "\"a\"\"b\"",
            "\"x\"y\"z",
            "\"a\" \"b\"",
            "q\"",
            "\"\n\"",
            "\"\r\n,\"",
            "\"\"\"x\"\"\"",
            "\"x\"\",\r\n\"\"\"",
            "",
            "plain",
            long.as_str(),
        ];
        let mut seed = 12345u64;
        for i in 0..600 {
            let mut record = String::new();
            for field in 0..1 + i % 3 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if field > 0 {
                    record.push(',');
                }
                record.push_str(fields[(seed >> 33) as usize % fields.len()]);
            }
            record.push_str(["\n", "\r\n", "\r", "\n\n"][(seed >> 40) as usize % 4]);
            data.extend_from_slice(record.as_bytes());
        }
        data
    }

    /// The counting lane alone, over the whole input at once so that its 64-byte windows run, at
    /// every alignment of the windows to the records (blank lines in front shift them; the first
    /// record puts a doubled quote across the first windows' end).
    #[test]
    fn counting_windows_count_as_the_csv_crate_at_every_alignment() {
        let mut records = b"\"x\"\",\r\n\"\"\"\n".to_vec();
        records.extend(quotes_in_every_role());
        let want = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(records.as_slice())
            .records()
            .count() as u64;
        for shift in 0..64 {
            let mut data = vec![b'\n'; shift];
            data.extend_from_slice(&records);
            let dialect = Format::Csv {
                delimiter: b',',
                quote: b'"',
                header: false,
            }
            .dialect();
            let end = data.len() as u64;
            let bounds = Bounds {
                end,
                max_record: u64::MAX,
            };
            let mut lane = CountLane::new(Machine::new(dialect), b',', b'"', 0, bounds);
            lane.feed(&data);
            lane.finish();
            assert_eq!(lane.records, want, "shifted by {shift}");
        }
    }

    #[test]
    fn chunks_count_every_record_once_whatever_the_frames() {
        let mut data = b"a,b\n".to_vec();
        for i in 0..300 {
            let field = ["x", "\"q,\n\"\"\"", "", "5'10\"", "\"\r\n\""][i % 5];
            data.extend_from_slice(
                format!("{i},{field}{}", ["\n", "\r\n", "\r"][i % 3]).as_bytes(),
            );
        }
        // Stretches without quotes, with blank lines, for the counting windows.
        for i in 0..300 {
            let terminator = ["\n", "\r\n", "\r", "\n\n", "\r\n\r\n"][i % 5];
            data.extend_from_slice(format!("{i},y{terminator}").as_bytes());
        }
        data.extend_from_slice(&quotes_in_every_role());
        let want = csv::ReaderBuilder::new()
            .from_reader(data.as_slice())
            .records()
            .count() as u64;
        DATA.with(|d| *d.borrow_mut() = data.clone());
        // Counting alone runs the record machine; with a column, csv-core reads the fields.
        let columns = Columns::Positional(vec!["a".into(), "b".into()]);
        for sql in [
            "SELECT COUNT(*) FROM S3Object",
            "SELECT COUNT(*), COUNT(a) FROM S3Object",
        ] {
            let query = crate::scan::sql::compile(sql, &columns).unwrap();
            for chunk_size in [1, 2, 5, 17, 64, 500, 10_000] {
                for (seed, largest) in [(1, 37), (7, 37), (99, 37), (5, 4096), (11, 300)] {
                    let layout = layout(&data, chunk_size, &["a", "b"]);
                    let verifier = scan_all(&layout, &query, (seed, largest));
                    assert_eq!(
                        verifier.records, want,
                        "{sql}: chunk size {chunk_size}, seed {seed}"
                    );
                    assert_eq!(verifier.partials[0], Partial::Count(want), "{sql}");
                }
            }
        }
    }

    /// Runs every chunk (again from its true start state after a wrong guess) and checks the
    /// coverage.
    fn scan_all(layout: &Layout, query: &Query, frames: (u64, u64)) -> Verifier {
        let mut verifier = Verifier::new(query.empty_partials());
        for index in 0..layout.chunk_count() {
            let chunk_frames = (frames.0 + index as u64, frames.1);
            let report = run(layout, query, index, None, chunk_frames);
            match verifier.offer(&report, &task(layout, index, None)) {
                Verdict::Accepted => {}
                Verdict::RunFrom(state) => {
                    let report = run(layout, query, index, Some(state), chunk_frames);
                    let task = task(layout, index, Some(state));
                    assert!(matches!(verifier.offer(&report, &task), Verdict::Accepted));
                }
                Verdict::Failed(e) => panic!("chunk {index}: {e}"),
            }
        }
        verifier.finish(layout).unwrap();
        verifier
    }

    struct Fields(csv::StringRecord);

    impl Record for Fields {
        fn field(&self, index: usize) -> Result<Value<'_>, String> {
            Ok(self
                .0
                .get(index)
                .map_or(Value::Null, |f| Value::Str(f.into())))
        }
        fn path(&self, _: &[String]) -> Value<'_> {
            Value::Null
        }
    }

    /// Records short and long (past the 64 bytes the field masks see), with quoted fields before,
    /// among and after the fields read, literal quotes in unquoted fields, and few and many fields:
    /// every query's result equals the one over the csv crate's records.
    #[test]
    fn fields_read_are_the_csv_crate_fields_whatever_the_frames() {
        let mut data = b"a,b,c,d\n".to_vec();
        for i in 0..400 {
            let long = "long ".repeat(i % 20);
            let b = ["x", "\"q,\n\"\"\"", "", "5'10\"", &long][i % 5];
            let c = ["1.25", "\"2.5\"", "-0.75", "", "3"][i % 7 % 5];
            let d = ["", "\"d,\r\nd\"", "d", "\"\"", "dd"][i % 3];
            let row = match i % 11 {
                0 => format!("{i}"),
                1 => format!("{i},{b}"),
                _ => format!("{i},{b},{c},{d}"),
            };
            data.extend_from_slice(format!("{row}{}", ["\n", "\r\n", "\r"][i % 3]).as_bytes());
        }
        let records: Vec<Fields> = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(data.as_slice())
            .records()
            .map(|r| Fields(r.unwrap()))
            .collect();
        DATA.with(|d| *d.borrow_mut() = data.clone());
        let columns = Columns::Positional(["a", "b", "c", "d"].map(String::from).to_vec());
        for sql in [
            "SELECT SUM(a), MAX(b), COUNT(b) FROM S3Object",
            "SELECT MIN(c), MAX(c), SUM(c), COUNT(d), MAX(d) FROM S3Object",
            "SELECT COUNT(*), SUM(a) FROM S3Object WHERE CAST(c AS FLOAT) > 1",
            "SELECT COUNT(*), MAX(b) FROM S3Object WHERE d = 'd' OR c IS NULL",
        ] {
            let query = crate::scan::sql::compile(sql, &columns).unwrap();
            let mut evaluator = query.evaluator();
            records.iter().for_each(|r| {
                evaluator.record(r).unwrap();
            });
            let want = query.result(&evaluator.partials, 0);
            for (chunk_size, largest) in
                [(7, 37), (100, 37), (64, 4096), (1000, 700), (100_000, 4096)]
            {
                let layout = layout(&data, chunk_size, &["a", "b", "c", "d"]);
                let verifier = scan_all(&layout, &query, (chunk_size, largest));
                assert_eq!(verifier.records, records.len() as u64, "{sql}");
                assert_eq!(
                    query.result(&verifier.partials, 0),
                    want,
                    "{sql}: chunk size {chunk_size}, frames up to {largest}"
                );
            }
        }
    }

    /// Reads `names` from `line` as a query does: by spans when [`find_scalar_fields`] takes the
    /// line (`Some`), else through serde_json (`None`, and its verdict).
    fn read_fields(
        line: &[u8],
        names: &[String],
    ) -> (
        Option<Vec<Value<'static>>>,
        Result<Vec<Value<'static>>, String>,
    ) {
        let read = |record: &JsonRecord| -> Vec<Value<'static>> {
            names
                .iter()
                .map(|name| match record.path(std::slice::from_ref(name)) {
                    Value::Str(text) => Value::Str(text.into_owned().into()),
                    Value::Null => Value::Null,
                    Value::Bool(b) => Value::Bool(b),
                    Value::Int(i) => Value::Int(i),
                    Value::Float(f) => Value::Float(f),
                })
                .collect()
        };
        let mut scalars = vec![None; names.len()];
        let fast =
            find_scalar_fields(line, names, &mut scalars, &mut Scratch::default()).then(|| {
                read(&JsonRecord {
                    names,
                    fields: JsonFields::Scalars {
                        text: line,
                        scalars: &scalars,
                    },
                })
            });
        let mut values = vec![None; names.len()];
        let parsed = parse_json_fields(line, names, &mut values).map(|()| {
            read(&JsonRecord {
                names,
                fields: JsonFields::Parsed(&values),
            })
        });
        (fast, parsed)
    }

    /// Values equal as serde_json reads them, the sign of a zero included.
    fn same_values(a: &[Value], b: &[Value]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(a, b)| match (a, b) {
                (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
                _ => a == b,
            })
    }

    #[test]
    fn scalar_fields_are_read_as_serde_json_reads_them() {
        let names = ["fare", "note", "id", "missing"].map(String::from);
        let taken: &[&str] = &[
            r#"{"id": 0, "vendor": "CMT", "distance": 0.85, "fare": 29.31, "note": "airport"}"#,
            r#"{"vendor": "a \"quote\" in a field not read", "fare": -0, "id": -0.0}"#,
            r#"{"fare": 123456789012345, "id": -0.12345678901234, "note": "é"}"#,
            r#"{"fare": 0, "id": true, "note": false, "other": 1e400}"#,
            r#"{"fare": 1, "fare": 2.5, "nested": {"fare": 3}, "ids": [1, {"id": 2}]}"#,
            r#"{}"#,
        ];
        for line in taken {
            let (fast, parsed) = read_fields(line.as_bytes(), &names);
            let fast = fast.unwrap_or_else(|| panic!("not taken: {line}"));
            assert!(same_values(&fast, &parsed.unwrap()), "{line}");
        }
        let left: &[&[u8]] = &[
            br#"{"fare": "2\u0035"}"#,
            br#"{"fare": 1e2}"#,
            br#"{"fare": 1234567890123456}"#,
            br#"{"fare": 1e400}"#,
            br#"{"fare": {"value": 1}}"#,
            br#"{"id": [1]}"#,
            br#"{"f\u0061re": 1}"#,
            br#"{"f\u0061re_not_read": 1}"#,
            b"{\"note\": \"\xff\"}",
            b"{\"\xff\": 1}",
            br#"[{"fare": 1}]"#,
            br#"{"fare": 1,}"#,
            br#"{"fare": 1} 2"#,
        ];
        for line in left {
            let (fast, _) = read_fields(line, &names);
            assert!(fast.is_none(), "{}", String::from_utf8_lossy(line));
        }
    }

    /// Objects with members named or not, escaped or not, with scalar or nested values, with
    /// a few bytes edited.
    fn json_objects() -> impl Strategy<Value = Vec<u8>> {
        let key = prop::sample::select(vec![
            "fare",
            "note",
            "id",
            "other",
            "f\\u0061re",
            "n\\\"ote",
        ]);
        let value = prop_oneof![
            crate::scan::json::tests::literals_and_numbers(),
            "\"([a-z é\u{7f}]|\\\\[\"\\\\nu]|\\\\u00[0-9a-f]{2}){0,12}\"",
            "\\{\"(fare|x)\": [0-9]\\}",
            "\\[[0-9], \"[a-z]\"\\]",
        ];
        let object = prop::collection::vec((key, value), 0..6).prop_map(|members| {
            let members: Vec<String> = members
                .iter()
                .map(|(k, v)| format!("\"{k}\": {v}"))
                .collect();
            format!("{{{}}}", members.join(", ")).into_bytes()
        });
        let edit = (
            any::<prop::sample::Index>(),
            prop::sample::select(b"\"\\,:{}[]0.-e \xff".to_vec()),
        );
        (object, prop::collection::vec(edit, 0..2)).prop_map(|(mut text, edits)| {
            for (at, byte) in edits {
                let at = at.index(text.len());
                text[at] = byte;
            }
            text
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn scalar_fields_read_as_serde_json_whatever_the_object(line in json_objects()) {
            let names = ["fare", "note", "id"].map(String::from);
            let (fast, parsed) = read_fields(&line, &names);
            if let Some(fast) = fast {
                let parsed = parsed.map_err(TestCaseError::fail)?;
                prop_assert!(same_values(&fast, &parsed), "{:?} vs {:?}", fast, parsed);
            }
        }
    }
}
