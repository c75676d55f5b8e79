//! The scan controller's decisions, as pure functions of what was observed: no API call, no S3
//! request, so every branch is tested from fixtures without a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;
use serde::{Deserialize, Serialize};

use super::jobs::Role;
use crate::api::Phase;
use crate::api::scan::{ChunkCounts, RowGroupCounts, S3ParallelScanStatus};
use crate::controller::set_phase;
use crate::redact::{STATUS_TEXT_LIMIT, cut};
use crate::scan::manifest::Crossing;
use crate::scan::objects::changes::MAX_NAMED_FAILURES;
use crate::scan::plan::{compact_ranges, expand_ranges};
use crate::scan::sql::Query;
use crate::scan::verify::Verdict;
use crate::scan::{ChunkReport, ChunkTask, Layout, Output, State, Verifier, Work};

/// Most column names shown in `status.header` (the checkpoint keeps them all), by their bytes.
const HEADER_SHOWN: usize = 4 << 10;
/// Longest key, reason or message of an object left out that status shows (10 are shown).
const FAILURE_TEXT_LIMIT: usize = 256;
/// A Job with no pod for this long is looked at for refused pods.
pub(super) const POD_GRACE: Duration = Duration::from_secs(15);

/// The controller's bookkeeping in status: accepted chunks and processed ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Bookkeeping {
    pub verifier: Verifier,
    /// Chunks whose container processing finished (container processors only).
    #[serde(default)]
    pub processed: String,
    /// The manifest is written: only the onComplete Job may remain.
    #[serde(default)]
    pub finished: bool,
    /// The header row's column names (`status.header` shows them cut).
    #[serde(default)]
    pub columns: Vec<String>,
    /// One past the highest chunk a Job was created for: uploads to abort lie below it.
    #[serde(default)]
    pub started: u32,
    /// A Parquet object's row groups and chunks, as planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parquet: Option<crate::scan::parquet::ParquetLayout>,
    /// The chunk whose rows cross the LIMIT: it runs again to it once every chunk is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crossing: Option<Crossing>,
    /// Times the manifest was tried: past [`MANIFEST_ATTEMPTS`] the scan fails.
    #[serde(default)]
    pub manifest_attempts: u32,
    /// Where this run writes rows: a spec change aborts its uploads there, wherever the new
    /// spec points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
}

/// Tries of the manifest before the scan fails (an error that heals heals within them).
pub(super) const MANIFEST_ATTEMPTS: u32 = 5;

impl Bookkeeping {
    pub(super) fn new(
        empty_partials: Vec<crate::scan::value::Partial>,
        layout: &Layout,
        output: Option<Output>,
    ) -> Self {
        Bookkeeping {
            verifier: Verifier::new(empty_partials),
            processed: String::new(),
            finished: false,
            columns: layout.columns.clone(),
            started: 0,
            parquet: layout.parquet.clone(),
            crossing: None,
            manifest_attempts: 0,
            output,
        }
    }

    /// Why this bookkeeping cannot be the operator's own for a scan of `total` chunks, if it
    /// cannot: status is read back, and whoever may patch it could make it claim anything.
    pub(super) fn check(&self, total: u32) -> Result<(), String> {
        let verifier = &self.verifier;
        if verifier.next > total || self.started > total {
            return Err(format!(
                "it counts chunk {} of {total}",
                verifier.next.max(self.started)
            ));
        }
        if verifier
            .last_with_record
            .is_some_and(|last| last >= verifier.next)
        {
            return Err("it names a chunk not accepted yet".into());
        }
        if expand_ranges(&self.processed, total).is_err() {
            return Err("its processed chunks lie outside the scan".into());
        }
        if self.crossing.is_some_and(|c| c.index >= total) {
            return Err("its LIMIT's chunk lies outside the scan".into());
        }
        Ok(())
    }

    /// The checkpoint of `status`, if it holds a readable one.
    pub(super) fn of(status: &S3ParallelScanStatus) -> Option<Bookkeeping> {
        let map = status.checkpoint.clone()?;
        serde_json::from_value(serde_json::Value::Object(map)).ok()
    }

    pub(super) fn store(&self, status: &mut S3ParallelScanStatus) {
        status.checkpoint = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_object().cloned());
    }
}

/// What the lifecycle calls for before anything about the object is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lifecycle {
    /// Finished under the current spec: nothing to do.
    Settled,
    /// The spec changed after planning (or after the end): run again from scratch.
    Restart,
    /// Jobs of an earlier run are still going away; new ones would reuse their names.
    ClearOldJobs,
    Run,
}

/// How long after deleting a scan's Jobs it is looked at again (their deletion is watched too).
pub(super) const AFTER_JOBS_DELETED: Duration = Duration::from_secs(2);

/// Where the scan stands, from its status, its generation and how many Jobs it owns.
pub(super) fn lifecycle(
    status: &S3ParallelScanStatus,
    generation: Option<i64>,
    jobs: usize,
) -> Lifecycle {
    let terminal = matches!(status.phase, Phase::Succeeded | Phase::Failed);
    let settled = status.observed_generation == generation;
    // A listing under way packed its objects under the spec it began with.
    let planning = status.total_chunks.is_some() || status.listing.is_some();
    match () {
        _ if terminal && settled => Lifecycle::Settled,
        _ if terminal || (planning && !settled) => Lifecycle::Restart,
        _ if status.total_chunks.is_none() && jobs > 0 => Lifecycle::ClearOldJobs,
        _ => Lifecycle::Run,
    }
}

/// The status of a scan starting again after its spec changed.
pub(super) fn restarted(generation: Option<i64>) -> S3ParallelScanStatus {
    let mut status = S3ParallelScanStatus::default();
    set_phase(
        &mut status,
        Phase::Pending,
        "Restarting",
        "the spec changed; scanning again",
        generation,
    );
    status
}

/// How a chunk Job ended, as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Running,
    Succeeded,
    /// Failed for good: the reason the worker gave (`BadData`, ...) and its message.
    Failed {
        reason: Option<String>,
        message: String,
    },
    /// The API server refused its pods (admission, quota, a missing ServiceAccount).
    Refused(String),
}

/// One Job of the scan, as observed: owned by it (by owner reference uid) and not being deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ChunkJob {
    pub name: String,
    pub uid: String,
    pub role: Role,
    pub index: u32,
    /// The start state of a re-run from the true state.
    pub state: Option<State>,
    pub outcome: Outcome,
}

/// A finished scan Job's report as observe found it.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Report {
    Read(Box<ChunkReport>),
    /// Neither the termination message nor the stored copy holds a report.
    Invalid(String),
}

/// Everything a running scan's decision needs.
#[derive(Clone, Debug)]
pub(super) struct Running {
    pub generation: Option<i64>,
    pub status: S3ParallelScanStatus,
    pub layout: Layout,
    pub query: Query,
    /// What scan chunks do.
    pub work: Work,
    /// The scan's uid.
    pub run: String,
    /// A container processor follows each chunk.
    pub containers: bool,
    pub has_on_complete: bool,
    pub parallelism: u32,
    pub jobs: Vec<ChunkJob>,
    /// Reports of finished scan Jobs, by Job name.
    pub reports: BTreeMap<String, Report>,
    /// What finished container processors said, by chunk.
    pub outputs: BTreeMap<u32, String>,
    /// When it was observed: the time its decisions stamp into status.
    pub now: Timestamp,
}

/// A Job to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NewJob {
    Scan {
        index: u32,
        state: Option<State>,
    },
    Process {
        index: u32,
        state: State,
    },
    /// The chunk that crosses the LIMIT, again from `state`, keeping its first `keep` rows.
    Cut {
        index: u32,
        keep: u64,
        state: State,
    },
    OnComplete,
}

/// What to do, in order: store outputs, write status, delete Jobs, create Jobs, then `next`.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Decision {
    pub outputs: Vec<(u32, String)>,
    pub status: Option<S3ParallelScanStatus>,
    pub events: Vec<(EventType, &'static str, String)>,
    pub delete: Vec<String>,
    pub create: Vec<NewJob>,
    pub next: Next,
}

/// How the reconcile ends.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Next {
    Requeue(Duration),
    /// Delete every Job, abort the uploads chunks recorded, write this final status, an Event.
    Fail {
        status: Box<S3ParallelScanStatus>,
        reason: String,
        message: String,
    },
    /// Every chunk is in: write the manifest (trimming rows to LIMIT) and record it.
    WriteManifest {
        result: serde_json::Map<String, serde_json::Value>,
    },
    /// Done: write this final status.
    Succeed {
        status: Box<S3ParallelScanStatus>,
    },
}

impl Next {
    /// The reconcile's action when nothing but a requeue is left to do.
    pub(super) fn action(&self) -> kube::runtime::controller::Action {
        match self {
            Next::Requeue(after) => kube::runtime::controller::Action::requeue(*after),
            _ => kube::runtime::controller::Action::await_change(),
        }
    }
}

impl Decision {
    fn next(next: Next) -> Decision {
        Decision {
            outputs: vec![],
            status: None,
            events: vec![],
            delete: vec![],
            create: vec![],
            next,
        }
    }
}

/// Phase Failed with the reason and message in the conditions; nothing runs any more.
pub(super) fn mark_failed(
    status: &mut S3ParallelScanStatus,
    generation: Option<i64>,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    set_phase(status, Phase::Failed, reason, message, generation);
    status.completion_time = Some(Time(now));
    if let Some(counts) = &mut status.chunks {
        counts.running = 0;
    }
}

/// The failure of a scan: its status as [`mark_failed`] leaves it.
pub(super) fn failed(
    mut status: S3ParallelScanStatus,
    generation: Option<i64>,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> Next {
    mark_failed(&mut status, generation, reason, message, now);
    Next::Fail {
        status: Box::new(status),
        reason: reason.into(),
        message: message.into(),
    }
}

/// A scan waiting for its S3Ingest: status says so (once per message), and it looks again soon.
pub(super) fn waiting(
    mut status: S3ParallelScanStatus,
    generation: Option<i64>,
    message: &str,
) -> Decision {
    let said = status
        .conditions
        .first()
        .is_some_and(|c| c.message == message);
    let mut decision = Decision::next(Next::Requeue(Duration::from_secs(3)));
    if !said {
        set_phase(
            &mut status,
            Phase::Pending,
            "WaitingForIngest",
            message,
            generation,
        );
        decision.status = Some(status);
    }
    decision
}

/// The column names shown in status: whole while they fit [`HEADER_SHOWN`], each cut to
/// [`STATUS_TEXT_LIMIT`]; the checkpoint and the manifest keep them all.
pub(super) fn shown_header(columns: &[String]) -> Vec<String> {
    let mut shown = Vec::new();
    let mut bytes = 0;
    for (i, name) in columns.iter().enumerate() {
        let name = cut(name, STATUS_TEXT_LIMIT);
        if bytes + name.len() > HEADER_SHOWN {
            shown.push(format!("… ({} more)", columns.len() - i));
            break;
        }
        bytes += name.len();
        shown.push(name.into_owned());
    }
    shown
}

/// Puts the result in status, as [`shown_result`] shows it, with its names in SELECT order.
pub(super) fn show_result(
    status: &mut S3ParallelScanStatus,
    result: &serde_json::Map<String, serde_json::Value>,
) {
    let shown = shown_result(result);
    status.result_columns = shown.keys().cloned().collect();
    status.result = Some(shown);
}

/// The result as status shows it: text values cut to [`STATUS_TEXT_LIMIT`] (the manifest has
/// them whole).
pub(super) fn shown_result(
    result: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    result
        .iter()
        .map(|(name, value)| {
            let value = match value {
                serde_json::Value::String(text) => cut(text, STATUS_TEXT_LIMIT).into_owned().into(),
                other => other.clone(),
            };
            (cut(name, STATUS_TEXT_LIMIT).into_owned(), value)
        })
        .collect()
}

impl Running {
    /// Whether the scan's chunks write rows to an output.
    fn writes_rows(&self) -> bool {
        matches!(
            &self.work,
            Work::Query {
                output: Some(_),
                ..
            }
        )
    }

    /// Chunk `index`'s task, as the manifest checks its report: any start state.
    pub(super) fn task_of(&self, index: u32) -> ChunkTask {
        self.task(index, None, self.work.clone())
    }

    fn task(&self, index: u32, start_state: Option<State>, work: Work) -> ChunkTask {
        ChunkTask {
            layout: self.layout.clone(),
            index,
            start_state,
            work,
            run: self.run.clone(),
            keep_rows: None,
        }
    }

    /// What a chunk's failure is called: bad data when a worker said so.
    fn failure(&self, failures: &[(u32, Option<String>, String)]) -> (&'static str, String) {
        let described: Vec<String> = failures
            .iter()
            .take(5)
            .map(|(index, _, detail)| {
                // A chunk of a planned listing holds pieces of many objects, which its detail
                // names; only a single object's chunk is a byte range of it.
                if self.layout.plan.is_some() {
                    return format!("chunk {index}: {detail}");
                }
                let (start, end) = self.layout.range(*index);
                format!(
                    "chunk {index} (bytes {start}-{}): {detail}",
                    end.min(self.layout.object.size)
                )
            })
            .collect();
        let bad_data = failures
            .iter()
            .any(|(_, reason, _)| reason.as_deref() == Some("BadData"));
        let reason = if bad_data { "BadData" } else { "ChunksFailed" };
        let message = format!(
            "{} chunk(s) failed: {}",
            failures.len(),
            described.join("; ")
        );
        (reason, message)
    }
}

/// What to do with a running scan, planned in this reconcile when `planned_now` (its status
/// then records the plan, and an Event says it).
pub(super) fn running(state: &mut Running, checkpoint: Bookkeeping, planned_now: bool) -> Decision {
    let planned_event = planned_now.then(|| {
        let (status, message) = planned(
            state.status.clone(),
            state.generation,
            &state.layout,
            &checkpoint,
            state.now,
        );
        state.status = status;
        (EventType::Normal, "Planned", message)
    });
    let mut decision = run(state, checkpoint);
    if let Some(event) = planned_event {
        decision.events.insert(0, event);
        decision.status.get_or_insert_with(|| state.status.clone());
    }
    decision
}

/// The status of a scan planned in this reconcile.
pub(super) fn planned(
    mut status: S3ParallelScanStatus,
    generation: Option<i64>,
    layout: &Layout,
    checkpoint: &Bookkeeping,
    now: Timestamp,
) -> (S3ParallelScanStatus, String) {
    status.object_size = Some(layout.object.size as i64);
    status.header = shown_header(&layout.columns);
    if let Some(listing) = &mut status.listing {
        // The checkpoint keeps them from now on.
        listing.columns.clear();
    } else {
        status.etag = Some(layout.object.etag.clone());
        status.object_modified = layout.object.modified.clone();
        status.data_start = Some(layout.data_start as i64);
    }
    status.compression =
        (!layout.compression.is_none()).then(|| layout.compression.name().to_string());
    status.total_chunks = Some(layout.chunk_count() as i32);
    status.start_time = Some(Time(now));
    checkpoint.store(&mut status);
    let message = layout.describe();
    set_phase(
        &mut status,
        Phase::Running,
        "Scanning",
        &message,
        generation,
    );
    (status, message)
}

/// The next steps of a running scan: fail on a chunk that failed for good, accept finished chunks
/// in order (re-running one that guessed its start state wrong), record processed chunks, start
/// the next ones within `parallelism`, and finish once every chunk is in.
pub(super) fn run(state: &Running, checkpoint: Bookkeeping) -> Decision {
    let mut checkpoint = checkpoint;
    let total = state.layout.chunk_count();
    if let Some(failed) = failed_chunks(state) {
        return Decision::next(failed);
    }
    let mut steps = Steps::default();
    // Scan Jobs of chunks accepted earlier (a restart came between status and deletion) go.
    let accepted_before =
        |job: &&ChunkJob| job.role == Role::Scan && job.index < checkpoint.verifier.next;
    steps.delete = state
        .jobs
        .iter()
        .filter(accepted_before)
        .map(|j| j.name.clone())
        .collect();
    let live: Vec<&ChunkJob> = state.jobs.iter().filter(|j| !accepted_before(j)).collect();
    let mut by_chunk: BTreeMap<(u32, Role), Vec<&ChunkJob>> = BTreeMap::new();
    for job in &live {
        by_chunk.entry((job.index, job.role)).or_default().push(job);
    }
    if let Err(failed) = accept(state, &mut checkpoint, &by_chunk, &mut steps) {
        return Decision::next(failed);
    }
    let processed = record_processed(state, &live, &mut checkpoint, &mut steps);
    let all_in = checkpoint.verifier.next == total && (!state.containers || processed == total);
    let deleting: BTreeSet<&str> = steps.delete.iter().map(String::as_str).collect();
    if !all_in {
        let running = live
            .iter()
            .filter(|j| j.outcome == Outcome::Running && !deleting.contains(j.name.as_str()))
            .count();
        start_next(state, &checkpoint, &by_chunk, running, &mut steps.create);
    }
    for job in &steps.create {
        if let NewJob::Scan { index, .. } | NewJob::Process { index, .. } = job {
            checkpoint.started = checkpoint.started.max(index + 1);
        }
    }
    let mut status = state.status.clone();
    checkpoint.store(&mut status);
    let seen = Seen {
        live: &live,
        deleting: &deleting,
        create: &steps.create,
    };
    counts(&mut status, &checkpoint, &seen, total, state.containers);
    if let Some(objects) = &mut status.objects {
        objects.skipped = checkpoint.verifier.skipped as i64;
        let room = MAX_NAMED_FAILURES.saturating_sub(objects.failures.len());
        objects
            .failures
            .extend(steps.skipped.drain(..).take(room).map(|failure| {
                // A report is untrusted: what it names is cut as any text status shows.
                let shown = |text: &str| cut(text, FAILURE_TEXT_LIMIT).into_owned();
                crate::scan::objects::ObjectFailure {
                    key: shown(&failure.key),
                    reason: shown(&failure.reason),
                    message: shown(&failure.message),
                }
            }));
    }
    let next = match all_in {
        true => {
            let next = finishing(state, &mut checkpoint, &mut status, &mut steps);
            checkpoint.store(&mut status);
            next
        }
        false => Next::Requeue(Duration::from_secs(60)),
    };
    Decision {
        outputs: steps.outputs,
        status: Some(status),
        events: steps.events,
        delete: steps.delete,
        create: steps.create,
        next,
    }
}

/// What one decision about a running scan does to its Jobs and its processors' outputs.
#[derive(Default)]
struct Steps {
    delete: Vec<String>,
    create: Vec<NewJob>,
    outputs: Vec<(u32, String)>,
    events: Vec<(EventType, &'static str, String)>,
    /// Objects the chunks accepted now left out, as their reports name them.
    skipped: Vec<crate::scan::objects::ObjectFailure>,
}

/// A chunk that failed for good (or whose pods are refused) fails the scan.
fn failed_chunks(state: &Running) -> Option<Next> {
    let mut failures: Vec<(u32, Option<String>, String)> = Vec::new();
    for job in &state.jobs {
        match &job.outcome {
            Outcome::Refused(message) => {
                let message = format!("the pods of Job {} are refused: {message}", job.name);
                return Some(failed(
                    state.status.clone(),
                    state.generation,
                    "PodsRefused",
                    &message,
                    state.now,
                ));
            }
            Outcome::Failed { reason, message } if job.role != Role::OnComplete => {
                failures.push((job.index, reason.clone(), message.clone()));
            }
            _ => {}
        }
    }
    if failures.is_empty() {
        return None;
    }
    failures.sort();
    let mut status = state.status.clone();
    status.failed_chunks = Some(compact_ranges(failures.iter().map(|(i, ..)| *i)));
    if let Some(counts) = &mut status.chunks {
        counts.failed = failures.len() as i32;
    }
    let (reason, message) = state.failure(&failures);
    Some(failed(
        status,
        state.generation,
        reason,
        &message,
        state.now,
    ))
}

/// Accepts finished scan Jobs in chunk order, until one is not finished or guessed its start
/// state wrong (it runs again from the true one). A report that fails its chunk fails the scan.
fn accept(
    state: &Running,
    checkpoint: &mut Bookkeeping,
    by_chunk: &BTreeMap<(u32, Role), Vec<&ChunkJob>>,
    steps: &mut Steps,
) -> Result<(), Next> {
    let fail = |index: u32, reason: &str, message: &str| {
        let mut status = state.status.clone();
        status.failed_chunks = Some(index.to_string());
        failed(status, state.generation, reason, message, state.now)
    };
    // With container processors, accepting a chunk starts its processing: at most `parallelism`
    // processors run, and chunks wait for their turn to be accepted.
    let mut processing = state
        .jobs
        .iter()
        .filter(|j| j.role == Role::Process && j.outcome == Outcome::Running)
        .count();
    while checkpoint.verifier.next < state.layout.chunk_count() {
        if state.containers && processing >= state.parallelism.max(1) as usize {
            return Ok(());
        }
        let index = checkpoint.verifier.next;
        let truth = checkpoint.verifier.state;
        let candidates = by_chunk
            .get(&(index, Role::Scan))
            .cloned()
            .unwrap_or_default();
        // A re-run from the true state wins over the first, guessing run.
        let Some(job) = candidates
            .iter()
            .find(|j| j.state == Some(truth))
            .or_else(|| candidates.iter().find(|j| j.state.is_none()))
        else {
            return Ok(());
        };
        let report = match (&job.outcome, state.reports.get(&job.name)) {
            (Outcome::Succeeded, Some(Report::Read(report))) => report,
            (Outcome::Succeeded, Some(Report::Invalid(why))) => {
                return Err(fail(
                    index,
                    "InvalidReport",
                    &format!("chunk {index}: {why}"),
                ));
            }
            _ => return Ok(()),
        };
        let task = state.task(index, job.state, state.work.clone());
        let before = checkpoint.verifier.rows;
        match checkpoint.verifier.offer(report, &task) {
            Verdict::Accepted => {
                let allowed = state
                    .layout
                    .plan
                    .as_ref()
                    .map_or(0, |p| p.max_failed_objects);
                if checkpoint.verifier.skipped > allowed {
                    let first = report.skipped.first.first().map(|f| f.message.as_str());
                    let message = format!(
                        "{} objects changed since they were listed, more than maxFailedObjects \
                         ({allowed}); one: {}",
                        checkpoint.verifier.skipped,
                        first.unwrap_or_default()
                    );
                    return Err(fail(index, "ObjectChanged", &message));
                }
                steps.skipped.extend(report.skipped.first.iter().cloned());
                if state.writes_rows() {
                    let accepted = (index, report.rows, truth);
                    checkpoint.crossing =
                        checkpoint
                            .crossing
                            .or(Crossing::of(state.query.limit, before, accepted));
                }
                if state.containers {
                    steps.create.push(NewJob::Process {
                        index,
                        state: truth,
                    });
                    processing += 1;
                }
                steps
                    .delete
                    .extend(candidates.iter().map(|j| j.name.clone()));
            }
            Verdict::RunFrom(from) => {
                steps.create.push(NewJob::Scan {
                    index,
                    state: Some(from),
                });
                steps.delete.push(job.name.clone());
                return Ok(());
            }
            Verdict::Failed(error) => {
                let message = format!("1 chunk(s) failed: {error}");
                return Err(fail(index, error.reason(), &message));
            }
        }
    }
    Ok(())
}

/// Records finished container processors (their Jobs go); returns how many chunks are processed.
fn record_processed(
    state: &Running,
    live: &[&ChunkJob],
    checkpoint: &mut Bookkeeping,
    steps: &mut Steps,
) -> u32 {
    let total = state.layout.chunk_count();
    let mut processed: BTreeSet<u32> = expand_ranges(&checkpoint.processed, total)
        .unwrap_or_default()
        .into_iter()
        .collect();
    for job in live {
        if job.role == Role::Process && job.outcome == Outcome::Succeeded {
            if processed.insert(job.index) {
                let message = state.outputs.get(&job.index).cloned().unwrap_or_default();
                steps.outputs.push((job.index, message));
            }
            steps.delete.push(job.name.clone());
        }
    }
    checkpoint.processed = compact_ranges(processed.iter().copied());
    processed.len() as u32
}

/// Starts chunks in order, at most `parallelism` Jobs running (`running` are) and a bounded
/// window of finished ones waiting for their turn to be accepted.
fn start_next(
    state: &Running,
    checkpoint: &Bookkeeping,
    by_chunk: &BTreeMap<(u32, Role), Vec<&ChunkJob>>,
    running: usize,
    create: &mut Vec<NewJob>,
) {
    let mut running = running + create.len();
    let next = checkpoint.verifier.next;
    let window = (state.parallelism as usize * 4).max(16) as u32;
    let window_end = state.layout.chunk_count().min(next.saturating_add(window));
    for index in next..window_end {
        if running >= state.parallelism.max(1) as usize {
            break;
        }
        let rerunning = create
            .iter()
            .any(|job| matches!(job, NewJob::Scan { index: i, .. } if *i == index));
        if by_chunk.contains_key(&(index, Role::Scan)) || rerunning {
            continue;
        }
        create.push(NewJob::Scan { index, state: None });
        running += 1;
    }
}

/// The chunk that crosses the LIMIT runs again to it (a Cut Job) before the manifest: `None`
/// once it has (or there is none), else what to do meanwhile.
fn cut_to_limit(state: &Running, checkpoint: &mut Bookkeeping, steps: &mut Steps) -> Option<Next> {
    let crossing = checkpoint.crossing.filter(|c| !c.done)?;
    let job = state
        .jobs
        .iter()
        .find(|j| j.role == Role::Cut && j.index == crossing.index);
    let Some(job) = job else {
        steps.create.push(NewJob::Cut {
            index: crossing.index,
            keep: crossing.keep,
            state: crossing.state,
        });
        return Some(Next::Requeue(Duration::from_secs(60)));
    };
    let fail = |message: String| {
        let mut status = state.status.clone();
        status.failed_chunks = Some(crossing.index.to_string());
        failed(
            status,
            state.generation,
            "InvalidReport",
            &message,
            state.now,
        )
    };
    match (&job.outcome, state.reports.get(&job.name)) {
        (Outcome::Succeeded, Some(Report::Read(report))) => {
            let mut task = state.task(crossing.index, Some(crossing.state), state.work.clone());
            task.keep_rows = Some(crossing.keep);
            if let Err(why) = crate::scan::verify::check_report(report, &task) {
                return Some(fail(format!(
                    "chunk {} cut to the LIMIT: {why}",
                    crossing.index
                )));
            }
            checkpoint.crossing = Some(Crossing {
                done: true,
                ..crossing
            });
            steps.delete.push(job.name.clone());
            None
        }
        (Outcome::Succeeded, Some(Report::Invalid(why))) => Some(fail(format!(
            "chunk {} cut to the LIMIT: {why}",
            crossing.index
        ))),
        _ => Some(Next::Requeue(Duration::from_secs(60))),
    }
}

/// Once every chunk is in: the chunk crossing the LIMIT cut to it, the manifest, then the
/// onComplete Job, then success.
fn finishing(
    state: &Running,
    checkpoint: &mut Bookkeeping,
    status: &mut S3ParallelScanStatus,
    steps: &mut Steps,
) -> Next {
    let generation = state.generation;
    if let Err(e) = checkpoint.verifier.finish(&state.layout) {
        return failed(
            status.clone(),
            generation,
            e.reason(),
            &e.to_string(),
            state.now,
        );
    }
    if !checkpoint.finished
        && let Some(waiting) = cut_to_limit(state, checkpoint, steps)
    {
        return waiting;
    }
    let create = &mut steps.create;
    let result = match state.containers {
        true => [(
            "chunks".to_string(),
            serde_json::json!(state.layout.chunk_count()),
        )]
        .into_iter()
        .collect(),
        false => checkpoint.verifier.result(&state.query).1,
    };
    if !checkpoint.finished {
        return Next::WriteManifest { result };
    }
    let on_complete = state
        .jobs
        .iter()
        .find(|j| j.role == Role::OnComplete)
        .map(|j| &j.outcome);
    if state.has_on_complete {
        match on_complete {
            None => {
                create.push(NewJob::OnComplete);
                set_phase(
                    status,
                    Phase::Running,
                    "Completing",
                    "running the onComplete Job",
                    generation,
                );
                return Next::Requeue(Duration::from_secs(60));
            }
            Some(Outcome::Running) => return Next::Requeue(Duration::from_secs(60)),
            Some(Outcome::Failed { .. } | Outcome::Refused(_)) => {
                return failed(
                    status.clone(),
                    generation,
                    "OnCompleteFailed",
                    "the onComplete Job failed; the result and manifest are recorded",
                    state.now,
                );
            }
            Some(Outcome::Succeeded) => {}
        }
    }
    let manifest = status.manifest.clone().unwrap_or_default();
    let message = format!(
        "{} records in {} chunks; manifest {manifest}",
        checkpoint.verifier.records,
        state.layout.chunk_count()
    );
    let mut done = status.clone();
    show_result(&mut done, &result);
    done.completion_time = Some(Time(state.now));
    set_phase(
        &mut done,
        Phase::Succeeded,
        "Succeeded",
        &message,
        generation,
    );
    steps
        .events
        .push((EventType::Normal, "Succeeded", message.clone()));
    Next::Succeed {
        status: Box::new(done),
    }
}

/// Chunk counts, succeeded ranges and totals in status.
/// The Jobs a decision saw, and what it does to them.
struct Seen<'a> {
    live: &'a [&'a ChunkJob],
    deleting: &'a BTreeSet<&'a str>,
    create: &'a [NewJob],
}

fn counts(
    status: &mut S3ParallelScanStatus,
    checkpoint: &Bookkeeping,
    seen: &Seen,
    total: u32,
    containers: bool,
) {
    let Seen {
        live,
        deleting,
        create,
    } = seen;
    let verifier = &checkpoint.verifier;
    let remaining = || live.iter().filter(|j| !deleting.contains(j.name.as_str()));
    let running = (remaining()
        .filter(|j| j.outcome == Outcome::Running)
        .count()
        + create
            .iter()
            .filter(|j| !matches!(j, NewJob::OnComplete))
            .count()) as i32;
    // Succeeded: accepted (or, with containers, processed), plus scan Jobs done awaiting their turn.
    let mut succeeded: BTreeSet<u32> = match containers {
        true => expand_ranges(&checkpoint.processed, total)
            .unwrap_or_default()
            .into_iter()
            .collect(),
        false => (0..verifier.next).collect(),
    };
    if !containers {
        succeeded.extend(
            remaining()
                .filter(|j| j.role == Role::Scan && j.outcome == Outcome::Succeeded)
                .map(|j| j.index),
        );
    }
    let succeeded_count = succeeded.len() as i32;
    status.chunks = Some(ChunkCounts {
        pending: (total as i32 - succeeded_count - running).max(0),
        running,
        succeeded: succeeded_count,
        failed: 0,
    });
    status.succeeded_chunks = Some(compact_ranges(succeeded.iter().copied()));
    status.progress = Some(format!("{succeeded_count}/{total}"));
    status.records_processed = Some(verifier.records as i64);
    status.bytes_scanned = Some(verifier.bytes as i64);
    status.row_groups = checkpoint.parquet.as_ref().map(|parquet| RowGroupCounts {
        total: i64::from(parquet.row_groups),
        skipped: verifier.row_groups.skipped as i64,
        skipped_bytes: verifier.row_groups.skipped_bytes as i64,
        fetched_bytes: verifier.row_groups.fetched_bytes as i64,
    });
    if let Some(objects) = &mut status.objects {
        objects.scanned = verifier.objects as i64;
        objects.progress = format!("{}/{}", objects.scanned, objects.planned);
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
pub(super) mod tests;
