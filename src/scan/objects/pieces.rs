//! One chunk of a scan of many objects, as a worker runs it: its pieces read from the plan, each
//! object planned (its header row or footer) a few at once and in key order, each piece run as a
//! chunk of its object, and the chunk's report made of theirs. Selected rows of every piece go
//! to the chunk's one part, in piece order.
//!
//! A chunk is either one window of an object split across chunks (its report is the window's:
//! the controller checks its start state against the chunk before, as for one object), or whole
//! objects, each checked here from its first record to its end.
//!
//! LIMIT (and the row count a chunk crossing it is run again to, `keep_rows`) holds for the chunk
//! as a whole: each piece may write only the rows its pieces before left. Every piece is read
//! still, as every chunk of one object reads its range whatever its rows.
//!
//! A Parquet part is one file: a chunk writing Parquet holds one piece of one object (packing
//! gives such a scan one object a chunk), whose rows pass to the part as its writer made them.
//!
//! With `onObjectChange: Skip`, a whole object found changed since it was listed is left out
//! (none of its records count) when it is found so before any of its rows could be in the part:
//! at its planning, or anywhere in a chunk that writes no rows. A window of a split object is
//! never left out: the object's other windows may be merged already.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::Client;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::segments::{ObjectPlan, PlannedPiece};
use super::{ObjectChanges, Planning, SkippedObjects, plan_each};
use crate::scan::chunk::rows::{PART_BUFFER, RowBatch, csv_line};
use crate::scan::chunk::upload::upload_part;
use crate::scan::chunk::{
    ChunkReport, ChunkTask, LocalRows, Output, OutputFormat, PieceRead, RowGroupsRead, Work,
    ran_and_uploaded, run_object_chunk,
};
use crate::scan::plan::{Layout, PlanRequest};
use crate::scan::text::split::{ChunkSplit, STATES, State};
use crate::scan::verify::Verdict;
use crate::scan::{ScanError, Verifier};
use crate::shutdown::Stop;

/// Runs chunk `task.index` of `plan`.
pub(crate) async fn run_planned_chunk(
    s3: &Client,
    task: &ChunkTask,
    plan: &ObjectPlan,
    progress: Arc<AtomicU64>,
    stop: Stop,
) -> Result<ChunkReport, ScanError> {
    let Work::Query { sql, output } = &task.work else {
        return Err(ScanError::InvalidScan(
            "a chunk of many objects runs a query, not a container processor".into(),
        ));
    };
    let query = task.layout.compile(sql)?;
    let empty = query.empty_partials();
    let cap = match (query.limit, task.keep_rows) {
        (Some(limit), Some(keep)) => Some(limit.min(keep)),
        (limit, keep) => limit.or(keep),
    };
    let pieces = plan.pieces(s3, task.index).await?;
    let Some(output) = output else {
        return run_pieces(
            s3,
            (task, sql.as_str(), empty, cap),
            plan,
            &pieces,
            None,
            (progress, stop),
        )
        .await;
    };
    let names = query
        .output_names()
        .unwrap_or_else(|| task.layout.columns.clone());
    if output.format == OutputFormat::Parquet && pieces.len() != 1 {
        return Err(ScanError::InvalidScan(format!(
            "chunk {} holds {} pieces: a Parquet part is written from one",
            task.index,
            pieces.len()
        )));
    }
    let ran = into_one_part(
        s3,
        (output, task.index, &task.run),
        &names,
        stop.clone(),
        async |rows| {
            run_pieces(
                s3,
                (task, sql.as_str(), empty, cap),
                plan,
                &pieces,
                Some(rows),
                (progress, stop),
            )
            .await
        },
    )
    .await;
    let (mut report, part) = ran?;
    report.part = part;
    Ok(report)
}

/// Runs `pieces`, the rows they send to the [`LocalRows`] they are given written to one part:
/// chunk `index` of scan `run` in `output`, the header row of `names` (CSV) first. The part is
/// completed only when every piece ran; what ran, and the part's key when rows were written.
pub(crate) async fn into_one_part<T>(
    s3: &Client,
    (output, index, run): (&Output, u32, &str),
    names: &[String],
    stop: Stop,
    pieces: impl AsyncFnOnce(LocalRows) -> Result<T, ScanError>,
) -> Result<(T, Option<String>), ScanError> {
    let (piece_rows, relayed) = mpsc::channel(2);
    let (part_rows, batches) = mpsc::channel(1);
    let relay = tokio::spawn(relay(relayed, part_rows, header(output.format, names)?));
    let upload = upload_part(s3, output, (index, run), batches, stop);
    let rows = LocalRows {
        format: output.format,
        to: piece_rows,
    };
    let ran = async {
        let ran = pieces(rows).await;
        // Rows end only when every piece ran: a part is completed only whole.
        let finished = relay.await.map_err(ScanError::Parser)?;
        if ran.is_ok() {
            finished.end().await;
        }
        ran
    };
    let (ran, uploaded) = tokio::join!(ran, upload);
    ran_and_uploaded(ran, uploaded)
}

/// The pieces' reports made into the chunk's (whose query `sql` has the aggregates `empty`
/// before any record), at most `cap` of their rows sent to `rows`.
async fn run_pieces(
    s3: &Client,
    (task, sql, empty, cap): (
        &ChunkTask,
        &str,
        Vec<crate::scan::value::Partial>,
        Option<u64>,
    ),
    plan: &ObjectPlan,
    pieces: &[PlannedPiece],
    rows: Option<LocalRows>,
    (progress, stop): (Arc<AtomicU64>, Stop),
) -> Result<ChunkReport, ScanError> {
    let top = &task.layout;
    let window = match pieces {
        [piece] => piece.window,
        _ => None,
    };
    let changes = match window {
        None => ObjectChanges::new(plan.on_object_change, plan.max_failed_objects),
        Some(_) => ObjectChanges::default(),
    };
    let planning = Planning {
        request: PlanRequest {
            bucket: plan.bucket.clone(),
            key: String::new(),
            format: top.format,
            // Every object has the first object's columns, unless they are bound by name.
            expected_headers: (!top.joined.union_by_name && !top.columns.is_empty())
                .then(|| top.columns.clone()),
            chunk_size: top.chunk_size,
            max_record_size: top.max_record_size,
        },
        hive: plan.hive,
        prune: None,
        pruned: Arc::default(),
        union_by_name: top.joined.union_by_name,
        changes: changes.clone(),
    };
    let versions: Vec<_> = pieces.iter().map(|p| Ok(p.version(&plan.bucket))).collect();
    let mut layouts = std::pin::pin!(plan_each(s3, futures::stream::iter(versions), &planning));
    let mut totals = Verifier::new(empty.clone());
    let mut pieces_left = pieces.iter();
    // What was read of each piece, in order.
    let mut read = Vec::with_capacity(pieces.len());
    let written = AtomicU64::new(0);
    while let Some(layout) = layouts.next().await {
        let layout = layout?;
        // Pieces planning left out (changed since they were listed) are passed over.
        loop {
            match pieces_left.next() {
                Some(piece) if piece.key == layout.object.key => break,
                Some(_) => read.push(None),
                None => {
                    return Err(ScanError::InvalidScan(
                        "an object was planned that is no piece of the chunk".into(),
                    ));
                }
            }
        }
        let run = |index: u32, start_state: Option<State>| {
            let mut sub = ChunkTask {
                layout: layout.clone(),
                index,
                start_state,
                work: Work::Query {
                    sql: sql.to_string(),
                    output: None,
                },
                run: task.run.clone(),
                // The rows the pieces before left of the chunk's.
                keep_rows: cap.map(|cap| cap.saturating_sub(written.load(Ordering::Relaxed))),
            };
            let (progress, stop, rows) = (progress.clone(), stop.clone(), rows.clone());
            let written = &written;
            async move {
                let report = match index < sub.layout.chunk_count() {
                    true => run_object_chunk(s3, &sub, progress, stop, rows).await?,
                    false => empty_window(&sub),
                };
                written.fetch_add(report.rows, Ordering::Relaxed);
                // A piece may hold fewer rows than it could keep: what it holds is checked as
                // the chunk's, by the controller.
                sub.keep_rows = None;
                Ok::<_, ScanError>((report, sub))
            }
        };
        // One window of a split object: the controller checks its start against the chunk
        // before, as for one object in byte ranges.
        if let Some(window) = window {
            // A Parquet object's window runs the row groups whose midpoints lie in it: the chunk
            // of its footer's layout in that window, or none (an empty report).
            let index = match &layout.parquet {
                Some(parquet) if parquet.chunk_windows.len() != parquet.chunk_starts.len() => {
                    return Err(ScanError::InvalidScan(format!(
                        "{}: the windows of its row groups are unknown",
                        layout.object.url()
                    )));
                }
                Some(parquet) => parquet
                    .chunk_windows
                    .iter()
                    .position(|w| *w == u64::from(window))
                    .map_or(u32::MAX, |index| index as u32),
                None => window,
            };
            let (mut report, _) = run(index, task.start_state).await?;
            report.index = task.index;
            report.range = [0, 0];
            report.fingerprint = task.fingerprint();
            report.objects = u64::from(window == 0);
            report.continues = pieces.iter().any(|piece| piece.continues(top.format));
            report.pieces = vec![Some(PieceRead {
                records: report.records,
                rows: report.rows,
            })];
            if let Some(bad) = &mut report.bad_record {
                bad.message = format!("{}: {}", layout.object.url(), bad.message);
            }
            return Ok(report);
        }
        if rows
            .as_ref()
            .is_some_and(|r| r.format == OutputFormat::Parquet)
            && layout.chunk_count() > 1
        {
            return Err(ScanError::InvalidScan(format!(
                "{}: its row groups make {} chunks, and a Parquet part is written from one",
                layout.object.url(),
                layout.chunk_count()
            )));
        }
        match whole_object(&layout, empty.clone(), run).await {
            Ok(object) => {
                totals.absorb(&object)?;
                read.push(Some(PieceRead {
                    records: object.records,
                    rows: object.rows,
                }));
            }
            // Its rows may be in the part already: it cannot be left out.
            Err(error) if rows.is_some() => return Err(error),
            Err(error) => {
                changes.skip(&layout.object.key, error)?;
                read.push(None);
            }
        }
    }
    read.extend(pieces_left.map(|_| None));
    if window.is_some() {
        return Err(ScanError::InvalidScan(
            "the object of the chunk's window was not planned".into(),
        ));
    }
    let (count, first) = changes.skipped();
    Ok(ChunkReport {
        index: task.index,
        range: [0, 0],
        fingerprint: task.fingerprint(),
        assumed: State::RecordEnd,
        // Every object of the chunk ended between records (checked): the next chunk starts one.
        split: ChunkSplit {
            end: [State::RecordEnd; STATES],
            first_record: [None; STATES],
        },
        records: totals.records,
        bytes: totals.bytes,
        rows: totals.rows,
        partials: totals.partials,
        part: None,
        bad_record: None,
        row_groups: (top.format == crate::scan::InputFormat::Parquet).then(|| RowGroupsRead {
            first: 0,
            end: 0,
            skipped: u32::try_from(totals.row_groups.skipped).unwrap_or(u32::MAX),
            skipped_bytes: totals.row_groups.skipped_bytes,
            fetched_bytes: totals.row_groups.fetched_bytes,
        }),
        objects: (pieces.len() as u64).saturating_sub(count),
        skipped: SkippedObjects { count, first },
        pieces: read,
        continues: false,
    })
}

/// Every chunk of one whole object, in order, merged by a verifier of its own (a chunk that
/// guessed its start state wrong runs again from the true one); the object must end between
/// records. Errors name the object.
async fn whole_object<F, R>(
    layout: &Layout,
    empty: Vec<crate::scan::value::Partial>,
    run: F,
) -> Result<Verifier, ScanError>
where
    F: Fn(u32, Option<State>) -> R,
    R: Future<Output = Result<(ChunkReport, ChunkTask), ScanError>>,
{
    let named = |error: ScanError| name_object(layout, error);
    let mut verifier = Verifier::new(empty);
    for index in 0..layout.chunk_count() {
        // After the first chunk the true start state is known: the verifier holds it. A guess is
        // only checked afterwards, and its rows would be out already.
        let mut start = (index > 0).then_some(verifier.state);
        // From a guess, then (when wrong) from the true state: a second run cannot guess.
        for _ in 0..2 {
            let (report, sub) = run(index, start).await.map_err(named)?;
            match verifier.offer(&report, &sub) {
                Verdict::Accepted => break,
                Verdict::RunFrom(state) => start = Some(state),
                Verdict::Failed(error) => return Err(named(error)),
            }
        }
        if verifier.next != index + 1 {
            return Err(named(ScanError::InvalidScan(format!(
                "chunk {index} did not settle its start state"
            ))));
        }
    }
    verifier.finish(layout).map_err(named)?;
    Ok(verifier)
}

/// `error` with the object it is of named, when its message would not say.
fn name_object(layout: &Layout, error: ScanError) -> ScanError {
    let url = layout.object.url();
    match error {
        ScanError::BadData {
            chunk,
            start,
            end,
            offset,
            message,
        } => ScanError::BadData {
            chunk,
            start,
            end,
            offset,
            message: format!("{url}: {message}"),
        },
        ScanError::MalformedRecord {
            chunk,
            start,
            end,
            message,
        } => ScanError::MalformedRecord {
            chunk,
            start,
            end,
            message: format!("{url}: {message}"),
        },
        ScanError::InvalidSql(e) => ScanError::InvalidSql(crate::scan::sql::SqlError {
            message: format!("{url}: {}", e.message),
        }),
        other => other,
    }
}

/// The report of a window past the object's records (its header took the bytes before): no
/// record, every start state unchanged.
fn empty_window(task: &ChunkTask) -> ChunkReport {
    let size = task.layout.object.size;
    ChunkReport {
        index: task.index,
        range: [size, size],
        fingerprint: task.fingerprint(),
        assumed: task.start_state.unwrap_or(State::RecordEnd),
        split: ChunkSplit {
            end: State::ALL,
            first_record: [None; STATES],
        },
        records: 0,
        bytes: 0,
        rows: 0,
        partials: task
            .layout
            .compile(match &task.work {
                Work::Query { sql, .. } => sql,
                Work::Fetch { .. } => "",
            })
            .map(|q| q.empty_partials())
            .unwrap_or_default(),
        part: None,
        bad_record: None,
        row_groups: None,
        objects: 0,
        skipped: SkippedObjects::default(),
        pieces: Vec::new(),
        continues: false,
    }
}

/// A CSV header row of `names` (JSON Lines parts have none).
fn header(format: OutputFormat, names: &[String]) -> Result<Vec<u8>, ScanError> {
    if format != OutputFormat::Csv || names.is_empty() {
        return Ok(Vec::new());
    }
    Ok(csv_line(names.iter().map(String::as_str)))
}

/// Where the relay stands once every piece's rows went through it.
struct Relayed {
    to: mpsc::Sender<RowBatch>,
    pending: Vec<u8>,
}

impl Relayed {
    /// The last rows, then the end of the part.
    async fn end(self) {
        if !self.pending.is_empty() {
            let _ = self.to.send(RowBatch::Rows(self.pending)).await;
        }
        let _ = self.to.send(RowBatch::End).await;
    }
}

/// Gathers the pieces' rows into part-sized buffers (a multipart upload's parts but the last
/// are at least 5 MiB), the header row before the first; each piece's start and end stay here.
async fn relay(
    mut from: mpsc::Receiver<RowBatch>,
    to: mpsc::Sender<RowBatch>,
    header: Vec<u8>,
) -> Relayed {
    let mut pending = Vec::new();
    let mut header = Some(header);
    while let Some(batch) = from.recv().await {
        let RowBatch::Rows(rows) = batch else {
            continue;
        };
        if let Some(header) = header.take() {
            pending.extend_from_slice(&header);
        }
        pending.extend_from_slice(&rows);
        if pending.len() >= PART_BUFFER
            && to
                .send(RowBatch::Rows(std::mem::take(&mut pending)))
                .await
                .is_err()
        {
            // The upload stopped: its error is the chunk's; the pieces see theirs closed.
            break;
        }
    }
    Relayed { to, pending }
}
