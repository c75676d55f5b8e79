//! A whole scan on one machine: the chunks run as tasks, checked and merged in chunk order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use aws_sdk_s3::Client;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::chunk::rows::csv_line;
use super::chunk::{
    ChunkReport, ChunkTask, LocalRows, Output, OutputFormat, PieceRead, RowBatch, Work, run_chunk,
    run_chunk_to, run_object_chunk,
};
use super::manifest::{ChunkSummary, Crossing, ShardedManifest};
use super::objects::pack::{DEFAULT_MAX_OBJECTS_PER_CHUNK, DEFAULT_OBJECT_OPEN_COST};
use super::objects::pieces::into_one_part;
use super::objects::segments::PlannedPiece;
use super::objects::{ObjectChanges, ObjectFailure};
use super::plan::{Layout, Prefetched, WHOLE_OBJECT_READ};
use super::sql::Query;
use super::text::split::State;
use super::verify::{Verdict, Verifier, check_report};
use super::{ScanError, manifest};
use crate::shutdown::Stop;

/// The merged outcome of a scan.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanSummary {
    /// The objects selected, pruned, skipped and scanned.
    pub objects: ObjectCounts,
    /// The first objects skipped, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<ObjectFailure>,
    /// Chunks the objects were split into.
    pub chunks: u32,
    /// Records in the object.
    pub records: u64,
    /// Bytes read within chunk ranges (of the decompressed stream when gzipped).
    pub bytes: u64,
    /// Rows the query selected, cut to its LIMIT.
    pub rows: u64,
    /// Chunks run again from their true start state after a wrong guess.
    pub reruns: u32,
    /// The query's result: one entry per aggregate, or `rows` for a row query.
    pub result: serde_json::Map<String, serde_json::Value>,
    /// The manifest's `s3://` URL, when rows went to an output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// Parquet: the files' row groups, those skipped by their statistics, and bytes fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_groups: Option<RowGroupsSummary>,
    /// Columns bound by name: per column the query names, the objects that lacked it (NULL in
    /// their records).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub missing_columns: BTreeMap<String, u64>,
}

/// What a Parquet scan read of the files' row groups.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RowGroupsSummary {
    /// Row groups in the files.
    pub total: u64,
    /// Row groups not read: their statistics ruled the query out.
    pub skipped: u64,
    /// Bytes of those row groups.
    pub skipped_bytes: u64,
    /// Bytes fetched from S3: only the columns the query reads.
    pub fetched_bytes: u64,
}

/// Live counts of a running scan.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Bytes read within chunk ranges.
    pub bytes: Arc<AtomicU64>,
    /// Chunks accepted.
    pub chunks: Arc<AtomicU64>,
    /// Objects planned (a scan of many objects plans them as it goes).
    pub objects: Arc<AtomicU64>,
    /// Objects their hive partitions ruled out, never read.
    pub pruned: Arc<AtomicU64>,
    /// Hive folders their partitions ruled out, never listed.
    pub pruned_folders: Arc<AtomicU64>,
    /// Objects changed since they were listed, and whether they fail the scan or are skipped.
    pub changes: ObjectChanges,
}

/// What became of the objects a scan selected.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ObjectCounts {
    /// Selected by the key, glob or list.
    pub matched: u64,
    /// Ruled out by their hive partitions, never read.
    pub pruned: u64,
    /// Changed or gone since they were listed, and left out (`--on-object-change skip`).
    pub skipped: u64,
    /// Read, every record counted.
    pub scanned: u64,
    /// Hive folders ruled out by their partitions, their objects never listed.
    #[serde(rename = "prunedFolders", skip_serializing_if = "is_zero")]
    pub pruned_folders: u64,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

/// An id for one run of a scan on this machine, for its chunks' upload records.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("local-{:x}", nanos ^ u128::from(std::process::id()) << 64)
}

/// Runs every chunk of `layout` with at most `parallelism` at once. A failure or a `stop` halts
/// the scan: no chunk starts any more, and those running end (a chunk writing rows aborts its
/// upload) before it returns, so that no upload is left behind.
pub async fn scan(
    s3: &Client,
    layout: &Layout,
    (query, sql): (&Query, &str),
    output: Option<Output>,
    (parallelism, stop): (usize, Stop),
    counters: &Counters,
) -> Result<ScanSummary, ScanError> {
    let count = layout.chunk_count();
    let run = run_id();
    let task = |index, start_state| ChunkTask {
        layout: layout.clone(),
        index,
        start_state,
        work: Work::Query {
            sql: sql.to_string(),
            output: output.clone(),
        },
        run: run.clone(),
        keep_rows: None,
    };
    let (halt, halted) = watch::channel(false);
    let halted = Stop::on(halted);
    let mut runs = futures::stream::iter(0..count)
        .map(|index| {
            let task = task(index, None);
            let (progress, halted) = (counters.bytes.clone(), halted.clone());
            async move {
                if halted.is_requested() {
                    return Err(ScanError::Stopped);
                }
                run_chunk(s3, &task, progress, halted).await
            }
        })
        .buffer_unordered(parallelism.max(1));
    let mut merged = Merged {
        verifier: Verifier::new(query.empty_partials()),
        accepted: Vec::with_capacity(count as usize),
        reruns: 0,
        crossing: None,
    };
    let mut waiting = BTreeMap::new();
    // Offers the chunks in order as they come in; a wrong start state guess runs a chunk again.
    let merge = async |report: ChunkReport| -> Result<(), ScanError> {
        waiting.insert(report.index, report);
        while let Some(report) = waiting.remove(&merged.verifier.next) {
            let chunk = task(merged.verifier.next, None);
            let (truth, before) = (merged.verifier.state, merged.verifier.rows);
            let (report, reruns) = accept(s3, &mut merged.verifier, report, chunk, &halted).await?;
            merged.reruns += reruns;
            let accepted = (report.index, report.rows, truth);
            merged.crossing = merged
                .crossing
                .or(Crossing::of(query.limit, before, accepted));
            counters.chunks.fetch_add(1, Ordering::Relaxed);
            merged.accepted.push(ChunkSummary::from(&report));
        }
        Ok(())
    };
    drain(&mut runs, merge, stop, halt).await?;
    // The chunk whose rows cross the LIMIT runs again, keeping only the rows within it.
    if let (Some(crossing), Some(_)) = (merged.crossing, &output) {
        let report = run_to_limit(s3, task(crossing.index, None), crossing).await?;
        if let Some(summary) = merged.accepted.get_mut(crossing.index as usize) {
            *summary = ChunkSummary::from(&report);
        }
    }
    summarize(s3, (layout, query), output.as_ref(), merged).await
}

/// Runs `task`, the chunk whose rows cross the LIMIT, again from its true start state, keeping
/// only the rows within the LIMIT: its part then holds exactly them.
async fn run_to_limit(
    s3: &Client,
    mut task: ChunkTask,
    crossing: Crossing,
) -> Result<ChunkReport, ScanError> {
    task.start_state = Some(crossing.state);
    task.keep_rows = Some(crossing.keep);
    let progress = Arc::new(AtomicU64::new(0));
    let report = run_chunk(s3, &task, progress, Stop::never()).await?;
    check_report(&report, &task).map_err(|message| ScanError::InvalidReport {
        chunk: crossing.index,
        message,
    })?;
    Ok(report)
}

/// Offers `report` of `task` to `verifier`, running the chunk again from its true start state
/// while it guessed wrong; returns the accepted report and how many runs that took.
async fn accept(
    s3: &Client,
    verifier: &mut Verifier,
    mut report: ChunkReport,
    mut task: ChunkTask,
    halted: &Stop,
) -> Result<(ChunkReport, u32), ScanError> {
    let mut reruns = 0;
    loop {
        match verifier.offer(&report, &task) {
            Verdict::Accepted => return Ok((report, reruns)),
            Verdict::Failed(error) => return Err(error),
            Verdict::RunFrom(state) => {
                reruns += 1;
                task.start_state = Some(state);
                let progress = Arc::new(AtomicU64::new(0));
                report = run_chunk(s3, &task, progress, halted.clone()).await?;
            }
        }
    }
}

/// Chunk `index` of `layout` running `sql` for the scan `run`, its rows written to `output`, or
/// kept on this machine.
fn local_task(
    layout: &Layout,
    index: u32,
    start_state: Option<State>,
    (sql, run): (&str, &str),
    output: Option<Output>,
) -> ChunkTask {
    ChunkTask {
        layout: layout.clone(),
        index,
        start_state,
        work: Work::Query {
            sql: sql.to_string(),
            output,
        },
        run: run.to_string(),
        keep_rows: None,
    }
}

/// One chunk of one of a scan's objects: the object's place in key order, its layout, the
/// chunk's index in it, and the number among all the scan's chunks of the object's chunk 0.
type ObjectChunk = (u64, Arc<Layout>, u32, u32);

/// An [`ObjectChunk`] that ran, and how.
type ObjectChunkRun = (ObjectChunk, Result<ChunkReport, ScanError>);

/// The chunks of `layouts`, object after object, counting the objects.
fn object_chunks<S>(
    layouts: S,
    objects: Arc<AtomicU64>,
) -> impl futures::Stream<Item = Result<ObjectChunk, ScanError>> + Send + use<S>
where
    S: futures::Stream<Item = Result<Layout, ScanError>> + Send,
{
    layouts
        .enumerate()
        .scan(0u32, move |chunks_before, (ordinal, layout)| {
            objects.fetch_add(1, Ordering::Relaxed);
            let numbered = layout.and_then(|layout| {
                let first = *chunks_before;
                *chunks_before = first.checked_add(layout.chunk_count()).ok_or_else(|| {
                    ScanError::InvalidScan(format!(
                        "the objects make more than {} chunks",
                        u32::MAX
                    ))
                })?;
                let (layout, ordinal) = (Arc::new(layout), ordinal as u64);
                // An object without records (a header row only) has no chunk: it still comes
                // by, as its chunk 0, to be counted and listed.
                Ok(futures::stream::iter((0..layout.chunk_count().max(1)).map(
                    move |index| Ok((ordinal, layout.clone(), index, first)),
                )))
            });
            futures::future::ready(Some(numbered))
        })
        .try_flatten()
}

/// Whole objects of one chunk each whose rows share a part are read ahead (planned) this many
/// bytes at most across the parts running (and at least one object a part): they wait in
/// memory until their part's task runs them. At the default parallelism, 8 MiB a part.
const PACKED_READ_AHEAD: u64 = 64 << 20;

/// How a scan with row output has small objects share a part.
#[derive(Clone)]
struct PartSharing {
    /// The output, its parts numbered from 0.
    output: Output,
    /// Whether the query names its output columns (`SELECT *` of columns bound by name does not).
    names_given: bool,
    /// Bytes a part's objects may hold read ahead: [`PACKED_READ_AHEAD`] over the parallelism.
    read_ahead: u64,
}

/// What a scan of objects runs as one task.
enum Unit {
    /// One chunk of one object.
    Chunk(ObjectChunk),
    /// Whole objects of one chunk each, in key order, their rows written to one part of this
    /// output (numbered as the first one's chunk).
    Packed(Vec<ObjectChunk>, Output),
}

/// Whole objects of one chunk each gathered for one part, as the operator packs small objects
/// into a chunk (their bytes and an open cost each, at most `chunkSize`; at most so many
/// objects), and at most [`PartSharing::read_ahead`] bytes read ahead.
#[derive(Default)]
struct Group {
    objects: Vec<ObjectChunk>,
    cost: u64,
    held: u64,
}

impl Group {
    fn cost(layout: &Layout) -> u64 {
        layout.object.size.saturating_add(DEFAULT_OBJECT_OPEN_COST)
    }

    /// Whether the object of `layout` may share a part: one chunk, small enough to be read by
    /// one GET (a part of its own costs more than reading it; a larger object's rows are worth
    /// a part, which a group would hold in memory longer), within a chunk's size, and its rows
    /// in the columns every object's are in (not `SELECT *` of columns bound by name).
    fn takes(layout: &Layout, names_given: bool) -> bool {
        layout.chunk_count() == 1
            && layout.object.size <= WHOLE_OBJECT_READ
            && Group::cost(layout) <= layout.chunk_size
            && (names_given || !layout.joined.union_by_name)
    }

    fn fits(&self, layout: &Layout, read_ahead: u64) -> bool {
        self.objects.len() < DEFAULT_MAX_OBJECTS_PER_CHUNK as usize
            && self.cost.saturating_add(Group::cost(layout)) <= layout.chunk_size
            && self.held.saturating_add(layout.prefetched.held()) <= read_ahead
    }

    fn add(&mut self, chunk: ObjectChunk) {
        self.cost = self.cost.saturating_add(Group::cost(&chunk.1));
        self.held = self.held.saturating_add(chunk.1.prefetched.held());
        self.objects.push(chunk);
    }

    /// The group so far as a unit writing to `output`, when it holds any object; it starts
    /// again empty.
    fn take(&mut self, output: &Output) -> Option<Unit> {
        let objects = std::mem::take(self).objects;
        (!objects.is_empty()).then(|| Unit::Packed(objects, output.clone()))
    }
}

/// `chunks` as the units they run as, in order: with `sharing`, whole objects that may share a
/// part gathered into [`Group`]s.
fn units<S>(
    chunks: S,
    sharing: Option<PartSharing>,
) -> impl futures::Stream<Item = Result<Unit, ScanError>> + Send + use<S>
where
    S: futures::Stream<Item = Result<ObjectChunk, ScanError>> + Send,
{
    // A `None` after the last chunk lets the last group out.
    chunks
        .map(Some)
        .chain(futures::stream::iter([None]))
        .scan(Group::default(), move |group, chunk| {
            let units: Vec<Result<Unit, ScanError>> = match (chunk, &sharing) {
                (Some(Ok(chunk)), Some(sharing)) if Group::takes(&chunk.1, sharing.names_given) => {
                    let full = match group.fits(&chunk.1, sharing.read_ahead) {
                        true => None,
                        false => group.take(&sharing.output),
                    };
                    group.add(chunk);
                    full.into_iter().map(Ok).collect()
                }
                (Some(Ok(chunk)), sharing) => sharing
                    .as_ref()
                    .and_then(|sharing| group.take(&sharing.output))
                    .into_iter()
                    .chain([Unit::Chunk(chunk)])
                    .map(Ok)
                    .collect(),
                (Some(Err(error)), _) => vec![Err(error)],
                (None, sharing) => sharing
                    .as_ref()
                    .and_then(|sharing| group.take(&sharing.output))
                    .into_iter()
                    .map(Ok)
                    .collect(),
            };
            futures::future::ready(Some(futures::stream::iter(units)))
        })
        .flatten()
}

/// A [`Unit`] that ran: a chunk's report, or the reports of a group's objects and the key of
/// their part (numbered as the first one's chunk).
enum UnitRun {
    Chunk(Box<ObjectChunkRun>),
    Packed(u32, Result<PackedReports, ScanError>),
    /// An object without records: it has no chunk to run.
    Unread(ObjectChunk),
}

/// What each object of a group reported, and the key of their part when rows were written.
type PackedReports = (Vec<(ObjectChunk, ChunkReport)>, Option<String>);

/// Runs `objects` (whole objects of one chunk each) in order, their rows written to part `part`
/// of `output`. Each object's bytes read ahead are let go once it ran.
async fn run_packed(
    s3: &Client,
    (objects, output, part): (Vec<ObjectChunk>, &Output, u32),
    (query, sql, run): (&Query, &str, &str),
    (progress, stop): (Arc<AtomicU64>, Stop),
) -> Result<PackedReports, ScanError> {
    let Some((_, first, ..)) = objects.first() else {
        return Ok((Vec::new(), None));
    };
    let names = query
        .output_names()
        .unwrap_or_else(|| first.columns.clone());
    let pieces = async |rows: LocalRows| {
        let mut ran = Vec::with_capacity(objects.len());
        for (ordinal, layout, index, first) in objects {
            let task = local_task(&layout, index, None, (sql, run), None);
            let (progress, stop) = (progress.clone(), stop.clone());
            let report = run_object_chunk(s3, &task, progress, stop, Some(rows.clone())).await?;
            let layout = Arc::new(Layout {
                prefetched: Prefetched::default(),
                ..Arc::unwrap_or_clone(layout)
            });
            ran.push(((ordinal, layout, index, first), report));
        }
        Ok(ran)
    };
    into_one_part(s3, (output, part, run), &names, stop.clone(), pieces).await
}

/// Offers `report` of `task` to `verifier` once the chunk's rows are out: a start state found
/// wrong then fails the scan, as they cannot be taken back.
fn accept_written(
    verifier: &mut Verifier,
    report: &ChunkReport,
    task: &ChunkTask,
) -> Result<(), ScanError> {
    match verifier.offer(report, task) {
        Verdict::Accepted => Ok(()),
        Verdict::Failed(error) => Err(error),
        Verdict::RunFrom(_) => Err(ScanError::InvalidReport {
            chunk: task.index,
            message: "its rows were written from a start state found wrong".into(),
        }),
    }
}

/// The objects of a scan merged in key order: each object's chunks are checked by a verifier of
/// its own, which is added to the scan's totals once its last chunk is in.
struct ObjectMerge {
    totals: MergedObjects,
    current: Option<(u64, Arc<Layout>, Verifier)>,
    empty: Vec<crate::scan::value::Partial>,
    /// The query compiled with named columns, to find those an object lacks.
    named: Option<Query>,
    /// The last object left out, whose chunks after are ignored.
    skipped: Option<u64>,
}

/// What the objects merged so far add up to.
#[derive(Clone)]
struct MergedObjects {
    verifier: Verifier,
    /// Row groups of their Parquet files.
    row_groups: u64,
    /// Objects left out once planned.
    dropped: u64,
    /// Per column, the objects that lacked it (columns bound by name).
    missing: BTreeMap<String, u64>,
}

impl ObjectMerge {
    fn new(query: &Query, sql: &str) -> ObjectMerge {
        ObjectMerge {
            totals: MergedObjects {
                verifier: Verifier::new(query.empty_partials()),
                row_groups: 0,
                dropped: 0,
                missing: BTreeMap::new(),
            },
            current: None,
            empty: query.empty_partials(),
            named: super::sql::compile(sql, &super::sql::Columns::Named).ok(),
            skipped: None,
        }
    }

    /// Whether object `ordinal` was left out.
    fn is_skipped(&self, ordinal: u64) -> bool {
        self.skipped == Some(ordinal)
    }

    /// Leaves object `ordinal` out: what of it was merged is dropped.
    fn skip(&mut self, ordinal: u64) {
        if self.current.as_ref().is_some_and(|(at, ..)| *at == ordinal) {
            self.current = None;
        }
        self.skipped = Some(ordinal);
        self.totals.dropped += 1;
    }

    /// The verifier of object `ordinal`, the previous object finished when this one is new.
    fn verifier(&mut self, ordinal: u64, layout: &Arc<Layout>) -> Result<&mut Verifier, ScanError> {
        match self.current.take() {
            Some(current) if current.0 == ordinal => self.current = Some(current),
            previous => {
                self.finish(previous)?;
                let verifier = Verifier::new(self.empty.clone());
                self.current = Some((ordinal, layout.clone(), verifier));
            }
        }
        match &mut self.current {
            Some((_, _, verifier)) => Ok(verifier),
            None => Err(ScanError::InvalidScan("no object is being merged".into())),
        }
    }

    fn finish(&mut self, object: Option<(u64, Arc<Layout>, Verifier)>) -> Result<(), ScanError> {
        if let Some((_, layout, verifier)) = object {
            verifier.finish(&layout)?;
            self.totals
                .absorb(&layout, &verifier, self.named.as_ref())?;
        }
        Ok(())
    }

    /// Merges the objects of a shared part (`part`, whose `ran` rows were written by the
    /// scan `run` of `sql`): the part's manifest line, and its pieces.
    fn packed(
        &mut self,
        part: u32,
        (ran, stored): PackedReports,
        (sql, run): (&str, &str),
    ) -> Result<(ChunkSummary, Vec<PlannedPiece>), ScanError> {
        let mut chunk = ChunkSummary {
            index: part,
            records: 0,
            rows: 0,
            part: stored.is_some(),
            row_groups: None,
            pieces: Vec::with_capacity(ran.len()),
            skipped: Vec::new(),
        };
        let mut pieces = Vec::with_capacity(ran.len());
        for ((ordinal, layout, index, _), report) in ran {
            let verifier = self.verifier(ordinal, &layout)?;
            let task = local_task(&layout, index, None, (sql, run), None);
            accept_written(verifier, &report, &task)?;
            chunk.records = chunk.records.saturating_add(report.records);
            chunk.rows = chunk.rows.saturating_add(report.rows);
            chunk.pieces.push(Some(PieceRead {
                records: report.records,
                rows: report.rows,
            }));
            pieces.push(PlannedPiece::of(&layout.object, None));
        }
        Ok((chunk, pieces))
    }

    /// The totals, once every chunk is in.
    fn done(mut self) -> Result<MergedObjects, ScanError> {
        let last = self.current.take();
        self.finish(last)?;
        Ok(self.totals)
    }

    /// The totals of a scan its LIMIT stopped: the chunks after are not read, so the object being
    /// merged is not finished; its chunks so far count.
    fn cut(self) -> Result<MergedObjects, ScanError> {
        let mut totals = self.totals;
        if let Some((_, layout, current)) = &self.current {
            totals.absorb(layout, current, self.named.as_ref())?;
        }
        Ok(totals)
    }
}

impl MergedObjects {
    /// Adds the object of `layout`, merged by `verifier`.
    fn absorb(
        &mut self,
        layout: &Layout,
        verifier: &Verifier,
        named: Option<&Query>,
    ) -> Result<(), ScanError> {
        self.verifier.absorb(verifier)?;
        self.row_groups += layout
            .parquet
            .as_ref()
            .map_or(0, |p| u64::from(p.row_groups));
        for column in named.map(|named| layout.lacks(named)).unwrap_or_default() {
            *self.missing.entry(column).or_default() += 1;
        }
        Ok(())
    }
}

/// Runs a query over every chunk of every object of `layouts` (in key order, planned as they
/// come), with at most `parallelism` chunks at once, and merges them: each object's chunks in
/// order, the objects in key order. A failure or a `stop` halts the scan.
///
/// With `output`, each chunk writes its rows to a part, numbered on from object to object so
/// that the parts sort in key order, and a [`ShardedManifest`] lists them; LIMIT keeps the first
/// rows in key order (parts past it deleted, the chunk crossing it run again to it). An object
/// changed since it was listed then fails the scan once its parts are being written.
pub async fn scan_objects(
    s3: &Client,
    layouts: impl futures::Stream<Item = Result<Layout, ScanError>> + Send,
    (query, sql): (&Query, &str),
    output: Option<(&Output, &str)>,
    (parallelism, stop): (usize, Stop),
    counters: &Counters,
) -> Result<ScanSummary, ScanError> {
    let run = run_id();
    // Each object's parts are numbered on from the previous object's.
    let parts = |(.., first): &ObjectChunk| {
        output.map(|(output, _)| Output {
            first_part: Some(*first),
            ..output.clone()
        })
    };
    let task = |chunk: &ObjectChunk| {
        let (_, layout, index, _) = chunk;
        local_task(layout, *index, None, (sql, &run), parts(chunk))
    };
    let (halt, halted) = watch::channel(false);
    let halted = Stop::on(halted);
    // Once halted (a failure, a stop), or once the rows written reach the LIMIT, nothing more
    // is listed or planned.
    let limit_reached = Arc::new(AtomicBool::new(false));
    let (running, enough) = (halted.clone(), limit_reached.clone());
    // Without a LIMIT, whole small objects write their rows to a part together (a Parquet part
    // is written from one object).
    let sharing = output
        .filter(|(output, _)| output.format != OutputFormat::Parquet && query.limit.is_none())
        .map(|(output, _)| PartSharing {
            output: Output {
                first_part: Some(0),
                ..output.clone()
            },
            names_given: query.output_names().is_some(),
            read_ahead: PACKED_READ_AHEAD / parallelism.max(1) as u64,
        });
    let chunks = object_chunks(layouts, counters.objects.clone());
    let runs = units(chunks, sharing.clone())
        .take_while(move |_| {
            futures::future::ready(!running.is_requested() && !enough.load(Ordering::Relaxed))
        })
        .map(|unit| {
            let (progress, halted) = (counters.bytes.clone(), halted.clone());
            let (task, run) = (&task, run.as_str());
            async move {
                let unit = unit?;
                if halted.is_requested() {
                    return Err(ScanError::Stopped);
                }
                Ok(match unit {
                    Unit::Chunk(chunk) if chunk.1.chunk_count() == 0 => UnitRun::Unread(chunk),
                    Unit::Chunk(chunk) => {
                        let report = run_chunk(s3, &task(&chunk), progress, halted).await;
                        UnitRun::Chunk(Box::new((chunk, report)))
                    }
                    Unit::Packed(objects, output) => {
                        let part = objects.first().map_or(0, |(.., first)| *first);
                        let packed = (objects, &output, part);
                        let ran = run_packed(s3, packed, (query, sql, run), (progress, halted));
                        UnitRun::Packed(part, ran.await)
                    }
                })
            }
        })
        .buffered(parallelism.max(1));
    let mut runs = std::pin::pin!(runs);
    let (mut merged, mut reruns) = (ObjectMerge::new(query, sql), 0);
    let mut manifest = output.map(|(output, _)| {
        ShardedManifest::new(&output.bucket, output.manifest_key(), query.limit)
    });
    let mut crossing = None;
    let merge = async |ran: UnitRun| match ran {
        UnitRun::Chunk(ran) => {
            let (chunk, report) = *ran;
            let (ordinal, layout, ..) = &chunk;
            if merged.is_skipped(*ordinal) {
                return Ok(());
            }
            let verifier = merged.verifier(*ordinal, layout)?;
            let truth = verifier.state;
            let accepted = match report {
                Ok(report) => accept(s3, verifier, report, task(&chunk), &halted).await,
                Err(error) => Err(error),
            };
            let report = match accepted {
                Ok((report, again)) => {
                    reruns += again;
                    report
                }
                // Parts are being written: a changed object fails the scan.
                Err(error) if manifest.is_some() => return Err(error),
                // Changed since it was listed: left out whole, or the scan fails.
                Err(error) => {
                    counters.changes.skip(&layout.object.key, error)?;
                    merged.skip(*ordinal);
                    return Ok(());
                }
            };
            if let (Some(manifest), Some(output)) = (&mut manifest, parts(&chunk)) {
                if let Some(crossed) = manifest.add(s3, (layout, &output), &report, truth).await? {
                    crossing = Some((chunk.clone(), crossed));
                }
                // The chunks started before this was known are merged still, their parts deleted.
                if manifest.limit_reached() {
                    limit_reached.store(true, Ordering::Relaxed);
                }
            }
            counters.chunks.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        UnitRun::Unread((ordinal, layout, ..)) => {
            merged.verifier(ordinal, &layout)?;
            if let Some(manifest) = &mut manifest {
                manifest.add_unread(s3, &layout.object).await?;
            }
            Ok(())
        }
        UnitRun::Packed(part, ran) => {
            let (chunk, pieces) = merged.packed(part, ran?, (sql, &run))?;
            if let (Some(manifest), Some(sharing)) = (&mut manifest, &sharing) {
                manifest
                    .add_planned(s3, Some(&sharing.output), &chunk, &pieces)
                    .await?;
            }
            counters.chunks.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    };
    drain(&mut runs, merge, stop, halt).await?;
    // The chunk whose rows cross the LIMIT runs again, keeping only the rows within it.
    if let Some((chunk, crossed)) = crossing {
        run_to_limit(s3, task(&chunk), crossed).await?;
    }
    let merged = match limit_reached.load(Ordering::Relaxed) {
        true => merged.cut()?,
        false => merged.done()?,
    };
    let result = merged.verifier.result(query);
    let mut summary = objects_summary(counters, merged, result, reruns);
    if let (Some(manifest), Some((_, source))) = (manifest, output) {
        let head = serde_json::json!({
            "source": source,
            "objects": summary.objects,
            "chunks": summary.chunks,
            "result": summary.result,
        });
        summary.manifest = Some(manifest.finish(s3, head).await?);
    }
    Ok(summary)
}

/// The summary of a scan of objects, from what they add up to.
fn objects_summary(
    counters: &Counters,
    merged: MergedObjects,
    (rows, result): (u64, serde_json::Map<String, serde_json::Value>),
    reruns: u32,
) -> ScanSummary {
    let MergedObjects {
        verifier: totals,
        row_groups,
        dropped,
        missing,
    } = merged;
    let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let (planned, pruned) = (count(&counters.objects), count(&counters.pruned));
    let (skipped, named) = counters.changes.skipped();
    // Objects left out once planned were counted as planned too.
    ScanSummary {
        objects: ObjectCounts {
            matched: planned + pruned + skipped.saturating_sub(dropped),
            pruned,
            skipped,
            scanned: planned.saturating_sub(dropped),
            pruned_folders: count(&counters.pruned_folders),
        },
        skipped: named,
        chunks: u32::try_from(count(&counters.chunks)).unwrap_or(u32::MAX),
        records: totals.records,
        bytes: totals.bytes,
        rows,
        reruns,
        result,
        manifest: None,
        row_groups: (row_groups > 0).then_some(RowGroupsSummary {
            total: row_groups,
            skipped: totals.row_groups.skipped,
            skipped_bytes: totals.row_groups.skipped_bytes,
            fetched_bytes: totals.row_groups.fetched_bytes,
        }),
        missing_columns: missing,
    }
}

/// Hands the chunks' reports to `merge` until every chunk has ended. The first failure, or a
/// `stop`, halts the chunks (`halt`), and is returned once those still running have ended.
async fn drain<T>(
    runs: &mut (impl futures::Stream<Item = Result<T, ScanError>> + Unpin),
    mut merge: impl AsyncFnMut(T) -> Result<(), ScanError>,
    mut stop: Stop,
    halt: watch::Sender<bool>,
) -> Result<(), ScanError> {
    let mut failure = None;
    loop {
        let offered = tokio::select! {
            report = runs.next() => match report {
                // Halted: the chunks still running end, their reports unread.
                Some(_) if failure.is_some() => continue,
                Some(Ok(report)) => merge(report).await,
                Some(Err(error)) => Err(error),
                None => break,
            },
            () = stop.requested(), if failure.is_none() => Err(ScanError::Stopped),
        };
        if let Err(error) = offered {
            failure = Some(error);
            let _ = halt.send(true);
        }
    }
    failure.map_or(Ok(()), Err)
}

/// Where [`print_rows`] writes: CSV rows (JSON Lines for `SELECT *` of JSON Lines, as the
/// records are), in object order.
pub trait RowOutput: Send {
    /// Writes the next rows, whole lines.
    fn write_rows(&mut self, bytes: &[u8]) -> std::io::Result<()>;
}

impl<W: std::io::Write + Send> RowOutput for W {
    fn write_rows(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write_all(bytes)
    }
}

/// Runs a row query over the objects of `layouts` (in key order, `first` the first of them) with
/// at most `parallelism` chunks at once and writes its rows to `out` in key and object order: a
/// header row (when the columns have names), then each chunk's rows as they come, while the
/// chunks after it run. A CSV chunk's rows are written only when it read from its true start
/// state (known once the chunks of its object before it are in); one that guessed wrong is run
/// again from it. Memory stays a few row buffers per chunk running: a chunk waits while its rows
/// are not written yet.
pub async fn print_rows(
    s3: &Client,
    (first, layouts): (
        &Layout,
        impl futures::Stream<Item = Result<Layout, ScanError>> + Send + 'static,
    ),
    (query, sql): (&Query, &str),
    (parallelism, stop): (usize, Stop),
    counters: &Counters,
    out: &mut dyn RowOutput,
) -> Result<ScanSummary, ScanError> {
    let written = |e: std::io::Error| ScanError::Write {
        what: "rows".into(),
        source: e,
    };
    let format = match (first.format, query.output_names()) {
        (super::InputFormat::JsonLines, None) => OutputFormat::JsonLines,
        _ => OutputFormat::Csv,
    };
    let names = query
        .output_names()
        .unwrap_or_else(|| first.columns.clone());
    if format == OutputFormat::Csv && !names.is_empty() {
        let header = csv_line(names.iter().map(String::as_str));
        out.write_rows(&header).map_err(written)?;
    }
    let run = run_id();
    let task = move |layout: &Layout, index, start_state| {
        local_task(layout, index, start_state, (sql, &run), None)
    };
    let (halt, halted) = watch::channel(false);
    let halted = Stop::on(halted);
    // Chunks start in order, each with a channel of its own; at most `parallelism` run.
    let permits = Arc::new(tokio::sync::Semaphore::new(parallelism.max(1)));
    let (started_tx, mut started) = mpsc::channel(parallelism.max(1));
    let starter = {
        let (s3, halted, progress) = (s3.clone(), halted.clone(), counters.bytes.clone());
        let chunks = object_chunks(layouts, counters.objects.clone());
        let first_task = task(first, 0, None);
        tokio::spawn(async move {
            let mut chunks = std::pin::pin!(chunks);
            while let Some(chunk) = chunks.next().await {
                let (ordinal, layout, index, first) = match chunk {
                    Ok(chunk) => chunk,
                    Err(error) => {
                        let _ = started_tx.send(Err(error)).await;
                        return;
                    }
                };
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (rows_tx, rows_rx) = mpsc::channel(2);
                let local = LocalRows {
                    format,
                    to: rows_tx,
                };
                let (s3, halted, progress) = (s3.clone(), halted.clone(), progress.clone());
                let task = ChunkTask {
                    layout: (*layout).clone(),
                    index,
                    ..first_task.clone()
                };
                let running = tokio::spawn(async move {
                    let _permit = permit;
                    run_chunk_to(&s3, &task, progress, halted, Some(local)).await
                });
                let started = ((ordinal, layout, index, first), rows_rx, running);
                if started_tx.send(Ok(started)).await.is_err() {
                    return;
                }
            }
        })
    };
    let mut merged = ObjectMerge::new(query, sql);
    let mut stop = stop;
    let mut reruns = 0;
    // Rows LIMIT still lets through: each chunk stops at LIMIT rows of its own.
    let mut wanted = Wanted {
        format,
        left: query.limit,
    };
    let outcome: Result<(), ScanError> = async {
        while wanted.left != Some(0) {
            let next = tokio::select! {
                started = started.recv() => started,
                () = stop.requested() => return Err(ScanError::Stopped),
            };
            let Some(next) = next else {
                return Ok(());
            };
            let ((ordinal, layout, index, _), rows, running) = next?;
            let verifier = merged.verifier(ordinal, &layout)?;
            let mut chunk = task(&layout, index, None);
            let report = match forward(rows, verifier.state, out, &mut wanted).await? {
                Forwarded::All => running.await.map_err(ScanError::Parser)??,
                Forwarded::WrongStart => {
                    // Its rows were not written: it runs again from its true start, alone.
                    running.abort();
                    reruns += 1;
                    chunk = task(&layout, index, Some(verifier.state));
                    let (rows_tx, rows_rx) = mpsc::channel(2);
                    let local = LocalRows {
                        format,
                        to: rows_tx,
                    };
                    let progress = Arc::new(AtomicU64::new(0));
                    let again = run_chunk_to(s3, &chunk, progress, halted.clone(), Some(local));
                    let forwarding = forward(rows_rx, verifier.state, out, &mut wanted);
                    let (report, forwarded) = tokio::join!(again, forwarding);
                    match forwarded? {
                        Forwarded::All => report?,
                        Forwarded::WrongStart => {
                            return Err(ScanError::InvalidReport {
                                chunk: index,
                                message: "it did not run from the start state it was given".into(),
                            });
                        }
                    }
                }
            };
            accept_written(verifier, &report, &chunk)?;
            counters.chunks.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
    .await;
    // Whatever ended the scan, no chunk goes on.
    let _ = halt.send(true);
    starter.abort();
    outcome?;
    let limit_reached = wanted.left == Some(0);
    let totals = match limit_reached {
        true => merged.cut()?,
        false => merged.done()?,
    };
    let rows_and_result = match limit_reached {
        true => {
            let rows = query.limit.unwrap_or(0);
            (
                rows,
                [("rows".to_string(), rows.into())].into_iter().collect(),
            )
        }
        false => totals.verifier.result(query),
    };
    Ok(objects_summary(counters, totals, rows_and_result, reruns))
}

/// How a chunk's rows went to the output.
enum Forwarded {
    /// All of them, to its end.
    All,
    /// None: it read from a start state other than `true_start`.
    WrongStart,
}

/// How many more rows LIMIT lets through, and their encoding (to find where rows end).
struct Wanted {
    format: OutputFormat,
    left: Option<u64>,
}

impl Wanted {
    /// The first bytes of `rows` that LIMIT lets through, counted off.
    fn take<'r>(&mut self, rows: &'r [u8]) -> &'r [u8] {
        let Some(left) = self.left.as_mut() else {
            return rows;
        };
        let (mut at, mut reader) = (0, csv_core::Reader::new());
        let mut scratch = [0u8; 1 << 12];
        let mut ends = [0usize; 64];
        while *left > 0 && at < rows.len() {
            let end = match self.format {
                OutputFormat::Csv => {
                    // Our own CSV: its records end where csv-core says (quoted newlines too).
                    let mut record = at;
                    loop {
                        let (result, read, _, _) =
                            reader.read_record(&rows[record..], &mut scratch, &mut ends);
                        record += read;
                        match result {
                            csv_core::ReadRecordResult::OutputFull
                            | csv_core::ReadRecordResult::OutputEndsFull => continue,
                            _ => break,
                        }
                    }
                    record
                }
                _ => memchr::memchr(b'\n', &rows[at..]).map_or(rows.len(), |i| at + i + 1),
            };
            at = end;
            *left -= 1;
        }
        &rows[..at]
    }
}

/// Writes a chunk's rows to `out` as they come (as many as LIMIT still lets through), unless it
/// says it read from a start state other than `true_start`.
async fn forward(
    mut rows: mpsc::Receiver<RowBatch>,
    true_start: State,
    out: &mut dyn RowOutput,
    wanted: &mut Wanted,
) -> Result<Forwarded, ScanError> {
    loop {
        match rows.recv().await {
            Some(RowBatch::Start(state)) if state != true_start => {
                return Ok(Forwarded::WrongStart);
            }
            Some(RowBatch::Start(_)) => {}
            Some(RowBatch::Rows(bytes)) => {
                let kept = wanted.take(&bytes);
                out.write_rows(kept).map_err(|source| ScanError::Write {
                    what: "rows".into(),
                    source,
                })?;
            }
            // The end, or the chunk stopped (its own error says why).
            Some(RowBatch::End) | None => return Ok(Forwarded::All),
        }
    }
}

/// The chunks' reports, accepted in chunk order.
struct Merged {
    verifier: Verifier,
    accepted: Vec<ChunkSummary>,
    reruns: u32,
    /// The chunk whose rows cross the LIMIT, if one does.
    crossing: Option<Crossing>,
}

/// Checks that the accepted chunks cover the object, writes the manifest (with row output), and
/// sums the scan up.
async fn summarize(
    s3: &Client,
    (layout, query): (&Layout, &Query),
    output: Option<&Output>,
    merged: Merged,
) -> Result<ScanSummary, ScanError> {
    let Merged {
        verifier,
        accepted,
        reruns,
        ..
    } = merged;
    verifier.finish(layout)?;
    let (rows, result) = verifier.result(query);
    let manifest = match output {
        Some(output) => {
            let finish = manifest::Finish {
                layout,
                output: Some(output),
                limit: query.limit,
                result: &result,
                extra: &|_| None,
            };
            let at = (output.bucket.as_str(), output.manifest_key());
            let chunks = futures::stream::iter(accepted.into_iter().map(Ok));
            Some(finish.write(s3, (at.0, &at.1), chunks).await?)
        }
        None => None,
    };
    Ok(ScanSummary {
        objects: ObjectCounts {
            matched: 1,
            pruned: 0,
            skipped: 0,
            scanned: 1,
            pruned_folders: 0,
        },
        skipped: Vec::new(),
        chunks: layout.chunk_count(),
        records: verifier.records,
        bytes: verifier.bytes,
        rows,
        reruns,
        result,
        manifest,
        row_groups: layout.parquet.as_ref().map(|parquet| RowGroupsSummary {
            total: u64::from(parquet.row_groups),
            skipped: verifier.row_groups.skipped,
            skipped_bytes: verifier.row_groups.skipped_bytes,
            fetched_bytes: verifier.row_groups.fetched_bytes,
        }),
        missing_columns: BTreeMap::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `chunks` as units, each a chunk's (object, index) or a group's objects.
    async fn shapes(
        chunks: Vec<ObjectChunk>,
        sharing: Option<PartSharing>,
    ) -> Vec<Vec<(u64, u32)>> {
        let units = units(futures::stream::iter(chunks.into_iter().map(Ok)), sharing);
        units
            .map(|unit| match unit.unwrap() {
                Unit::Chunk((object, _, index, _)) => vec![(object, index)],
                Unit::Packed(objects, _) => objects.iter().map(|(o, _, i, _)| (*o, *i)).collect(),
            })
            .collect()
            .await
    }

    #[tokio::test]
    async fn small_objects_share_a_part_within_the_bounds() {
        const MIB: u64 = 1 << 20;
        let body = bytes::Bytes::from([b"a\n".as_slice(), &[b'1'; MIB as usize - 2]].concat());
        // An object read ahead whole (`held`), or `size` bytes of which none are held.
        let object = |size: u64, held: bool| {
            let mut layout = crate::scan::chunk::tests::layout(&body, 64 * MIB, &["a"]);
            layout.object.size = size;
            if held {
                layout.prefetched = Prefetched(Some(Arc::from([body.clone()])));
            }
            Arc::new(layout)
        };
        let mut objects = Vec::new();
        // Ten objects of 1 MiB read ahead: eight fill a part's read-ahead bound (at the default
        // parallelism).
        objects.extend((0..10).map(|_| object(MIB, true)));
        // One of three chunks, one too large to share, and two more small ones.
        objects.extend([object(150 * MIB, false), object(40 * MIB, false)]);
        objects.extend((0..2).map(|_| object(MIB, true)));
        let chunks: Vec<ObjectChunk> = objects
            .iter()
            .enumerate()
            .flat_map(|(ordinal, layout)| {
                (0..layout.chunk_count())
                    .map(move |index| (ordinal as u64, layout.clone(), index, 0))
            })
            .collect();
        let sharing = |names_given: bool, parallelism: u64| PartSharing {
            output: Output {
                bucket: "b".into(),
                prefix: "out/".into(),
                format: OutputFormat::Csv,
                scope: String::new(),
                first_part: Some(0),
            },
            names_given,
            read_ahead: PACKED_READ_AHEAD / parallelism,
        };
        let packed = shapes(chunks.clone(), Some(sharing(true, 8))).await;
        let whole = |objects: std::ops::Range<u64>| objects.map(|o| (o, 0)).collect::<Vec<_>>();
        assert_eq!(
            packed,
            [
                whole(0..8),
                whole(8..10),
                vec![(10, 0)],
                vec![(10, 1)],
                vec![(10, 2)],
                vec![(11, 0)],
                whole(12..14),
            ]
        );
        // Without packing (a LIMIT, a Parquet part), every chunk is a unit.
        let each: Vec<Vec<(u64, u32)>> = chunks.iter().map(|(o, _, i, _)| vec![(*o, *i)]).collect();
        assert_eq!(shapes(chunks.clone(), None).await, each);
        // At a parallelism of 64 or more, one object a part: the scan holds no more read ahead.
        assert_eq!(shapes(chunks.clone(), Some(sharing(true, 64))).await, each);
        // `SELECT *` of columns bound by name: each object's rows have its own columns.
        let by_name: Vec<ObjectChunk> = chunks
            .into_iter()
            .map(|(o, layout, i, f)| {
                let mut layout = Arc::unwrap_or_clone(layout);
                layout.joined.union_by_name = true;
                (o, Arc::new(layout), i, f)
            })
            .collect();
        assert_eq!(shapes(by_name, Some(sharing(false, 8))).await, each);
    }
}
