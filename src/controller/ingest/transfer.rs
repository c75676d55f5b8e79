//! One ingest's task: waits for its memory and a slot, starts, resumes or recognises its upload as
//! `decide` says, streams it with the engine while writing progress, and records how it ended.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use tokio::sync::watch;
use tracing::{info, warn};

use super::decide::{self, COMPLETING, Earlier, Ended, StartFrom};
use super::{request, s3_client};
use crate::api::Phase;
use crate::api::ingest::{S3Ingest, S3IngestStatus};
use crate::controller::{Context, InputError, StatusWriter, publish, set_phase};
use crate::ingest::{
    self, Completion, IngestError, IngestRequest, Outcome, Progress, Reservation, Resume,
    UploadLog, abort_upload,
};
use crate::redact::Redacted;

/// Why a transfer ends before its engine does.
#[derive(Clone, Copy)]
enum Interrupt {
    Deleted,
    Stopping,
}

/// How long an interrupt waits for an upload being created to be recorded.
const INTERRUPT_WAIT: Duration = Duration::from_secs(30);
/// Least time between two status writes for parts committed between status intervals.
const RESUME_WRITE_GAP: Duration = Duration::from_millis(500);

/// What of a transfer's progress the metrics have counted (a resumed upload's earlier parts were
/// counted by the process that sent them).
struct Counted {
    bytes: u64,
    parts: Option<u32>,
}

impl Counted {
    fn resuming_at(bytes: u64) -> Self {
        Self { bytes, parts: None }
    }

    fn add(&mut self, ctx: &Context, p: &Progress) {
        // Parts before a resume point are whole parts of the same size.
        let parts = *self
            .parts
            .get_or_insert((self.bytes / p.part_size.max(1)) as u32);
        ctx.metrics.ingested(
            p.bytes_committed.saturating_sub(self.bytes),
            u64::from(p.parts_committed.saturating_sub(parts)),
        );
        self.bytes = self.bytes.max(p.bytes_committed);
        self.parts = Some(parts.max(p.parts_committed));
    }
}

/// How a transfer ends before it starts streaming.
enum NotStarted {
    /// Deleted or stopping: nothing to write.
    Interrupted,
    Failed(&'static str, String),
    /// A restart found the upload already completed into the object.
    Completed(Completion),
}

impl From<InputError> for NotStarted {
    fn from(e: InputError) -> Self {
        NotStarted::Failed(e.reason(), e.to_string())
    }
}

impl From<IngestError> for NotStarted {
    fn from(e: IngestError) -> Self {
        NotStarted::Failed(e.reason(), e.to_string())
    }
}

/// [`transfer`], a panic in it ending the ingest as Failed (InternalError, counted as a panic),
/// its upload aborted: a spawned task's panic would otherwise leave it Running for good.
pub(super) async fn guarded(
    obj: Arc<S3Ingest>,
    ctx: Arc<Context>,
    cancelled: watch::Receiver<bool>,
) {
    use futures::FutureExt;
    let run = std::panic::AssertUnwindSafe(transfer(obj.clone(), ctx.clone(), cancelled));
    if let Err(panic) = run.catch_unwind().await {
        let message = format!(
            "the transfer stopped on an internal error: {}",
            crate::controller::panic_message(panic.as_ref())
        );
        ctx.metrics.reconcile_failed("ingest", "panic");
        give_up(&ctx, &obj, "InternalError", &message).await;
        ctx.ingests.running().remove(&obj.uid().unwrap_or_default());
    }
}

/// Ends an ingest as Failed with `reason` and `message`: the upload its status records is
/// aborted (or an Event says why not), the status written, an Event published.
pub(super) async fn give_up(ctx: &Context, obj: &S3Ingest, reason: &str, message: &str) {
    let status = obj.status.clone().unwrap_or_default();
    if let Some(upload_id) = &status.upload_id {
        let dest = &obj.spec.destination;
        let aborted = match s3_client(ctx, obj, &dest.connection).await {
            Ok(s3) => abort_upload(&s3, &dest.bucket, &dest.key, upload_id)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = aborted {
            let note = format!("upload {upload_id} could not be aborted: {e}");
            publish(ctx, obj, EventType::Warning, "UploadNotAborted", &note).await;
        }
    }
    let ended = decide::failed(
        status,
        reason,
        message,
        obj.metadata.generation,
        Timestamp::now(),
    );
    record(ctx, obj, &StatusWriter::new(ctx, obj), ended).await;
}

/// One ingest, from queueing to its final status.
pub(super) async fn transfer(
    obj: Arc<S3Ingest>,
    ctx: Arc<Context>,
    mut cancelled: watch::Receiver<bool>,
) {
    let generation = obj.metadata.generation;
    let writer = StatusWriter::new(&ctx, obj.as_ref());
    let mut status = obj.status.clone().unwrap_or_default();
    // A previous run's upload stays recorded until it is aborted or continued, so that a deletion
    // or a crash meanwhile still finds it.
    let earlier = Earlier::of(&status);
    if status.phase != Phase::Running {
        decide::queued(&mut status, "preparing the transfer", generation);
        let _ = writer.write(&status).await;
    }
    match prepare(&ctx, &obj, earlier, &writer, &mut status, &mut cancelled).await {
        Ok(prepared) => stream(&ctx, &obj, &writer, status, prepared, &mut cancelled).await,
        Err(NotStarted::Interrupted) => {}
        Err(NotStarted::Failed(reason, message)) => {
            let ended = decide::failed(status, reason, &message, generation, Timestamp::now());
            record(&ctx, &obj, &writer, ended).await;
        }
        Err(NotStarted::Completed(completed)) => {
            let dest = &obj.spec.destination;
            let ended = decide::completed_before_restart(
                status,
                &completed,
                (&dest.bucket, &dest.key),
                generation,
                Timestamp::now(),
            );
            record(&ctx, &obj, &writer, ended).await;
        }
    }
    ctx.ingests.running().remove(&obj.uid().unwrap_or_default());
}

/// How a transfer ended, as decided: its final status, then its Event.
async fn record(ctx: &Context, obj: &S3Ingest, writer: &StatusWriter<S3Ingest>, ended: Ended) {
    writer.write_final(&ended.status).await;
    let (type_, reason, message) = &ended.event;
    publish(ctx, obj, *type_, reason, message).await;
}

/// Everything a transfer needs before its engine runs: inputs, memory, a slot, the S3 client,
/// and what to make of an earlier run's upload.
async fn prepare(
    ctx: &Context,
    obj: &S3Ingest,
    earlier: Earlier,
    writer: &StatusWriter<S3Ingest>,
    status: &mut S3IngestStatus,
    cancelled: &mut watch::Receiver<bool>,
) -> Result<Prepared, NotStarted> {
    let request = request(ctx, obj).await?;
    let s3 = s3_client(ctx, obj, &obj.spec.destination.connection).await?;
    let (bucket, key) = (&request.bucket, &request.key);
    // Killed after completing the upload and before writing so: the object may be this upload's.
    let completed = match (&earlier.upload_id, &earlier.completing) {
        (Some(upload_id), Some(completion)) => {
            ingest::completed_earlier(&s3, bucket, key, upload_id, completion).await?
        }
        _ => None,
    };
    let known_length = earlier.total_bytes;
    let start = earlier.start(completed);
    if let StartFrom::Completed(completed) = start {
        return Err(NotStarted::Completed(completed));
    }
    let queue = Queue {
        ctx,
        writer,
        generation: obj.metadata.generation,
    };
    // A slot first, then memory: an ingest waiting for a slot holds no memory others could use.
    let slot = queue
        .slot(&obj.namespace().unwrap_or_default(), status, cancelled)
        .await?;
    let memory = queue
        .memory(&request, known_length, status, cancelled)
        .await?;
    let resume = match start {
        StartFrom::Resume(resume) => Some(resume),
        StartFrom::AbortThenFresh(upload_id) => {
            abort_upload(&s3, bucket, key, &upload_id).await?;
            info!(ingest = %obj.name_any(), upload_id, "aborted the upload a previous run left");
            None
        }
        StartFrom::Fresh | StartFrom::Completed(_) => None,
    };
    Ok(Prepared {
        request,
        s3,
        resume,
        memory,
        _slot: slot,
    })
}

struct Prepared {
    request: IngestRequest,
    s3: aws_sdk_s3::Client,
    resume: Option<Resume>,
    memory: Reservation,
    _slot: super::slots::Slot,
}

/// Waits (status Queued) for what the operator shares among its ingests, or for a deletion or a
/// stop.
struct Queue<'a> {
    ctx: &'a Context,
    writer: &'a StatusWriter<S3Ingest>,
    generation: Option<i64>,
}

impl Queue<'_> {
    async fn queued(&self, status: &mut S3IngestStatus, why: &str) {
        decide::queued(status, why, self.generation);
        let _ = self.writer.write(status).await;
    }

    /// The ingest's share of the memory budget.
    async fn memory(
        &self,
        request: &IngestRequest,
        known_length: Option<u64>,
        status: &mut S3IngestStatus,
        cancelled: &mut watch::Receiver<bool>,
    ) -> Result<Reservation, NotStarted> {
        let budget = &self.ctx.settings.ingest_memory;
        let need = request.initial_memory(known_length);
        let reserve = budget.reserve(need);
        tokio::pin!(reserve);
        // At once when it fits now; else say what it waits for.
        if let Some(reserved) = futures::FutureExt::now_or_never(&mut reserve) {
            return Ok(reserved.map_err(IngestError::from)?);
        }
        let message = decide::waiting_for_memory(need, budget.in_use(), budget.total());
        self.queued(status, &message).await;
        tokio::select! {
            reserved = &mut reserve => Ok(reserved.map_err(IngestError::from)?),
            () = deleted(cancelled) => Err(NotStarted::Interrupted),
            () = self.ctx.stopped() => Err(NotStarted::Interrupted),
        }
    }

    /// One of the operator's transfer slots, shared fairly between namespaces.
    async fn slot(
        &self,
        namespace: &str,
        status: &mut S3IngestStatus,
        cancelled: &mut watch::Receiver<bool>,
    ) -> Result<super::slots::Slot, NotStarted> {
        let slots = &self.ctx.ingests.slots;
        if slots.would_wait(namespace) {
            let why = "waiting for a transfer slot (shared fairly between namespaces)";
            self.queued(status, why).await;
        }
        tokio::select! {
            slot = slots.acquire(namespace) => Ok(slot),
            () = deleted(cancelled) => Err(NotStarted::Interrupted),
            () = self.ctx.stopped() => Err(NotStarted::Interrupted),
        }
    }
}

/// Resolves once the ingest is deleted (its cancel says so); never when the sender is only
/// dropped, as a stopping process does: a stop checkpoints the upload, a deletion aborts it.
async fn deleted(cancelled: &mut watch::Receiver<bool>) {
    if cancelled.wait_for(|deleted| *deleted).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The status a transfer's engine log and its progress both change. Changed only through
/// `update`, which never holds the lock across an await: the engine (which writes through the log)
/// is polled by the same task that writes progress, so a lock held by a suspended engine would
/// never be released.
#[derive(Clone)]
struct SharedStatus(Arc<std::sync::Mutex<S3IngestStatus>>);

impl SharedStatus {
    /// Applies `change` and returns the status as it is then.
    fn update(&self, change: impl FnOnce(&mut S3IngestStatus)) -> S3IngestStatus {
        let mut status = self.lock();
        change(&mut status);
        status.clone()
    }

    /// The status (a panicked holder leaves it usable).
    fn lock(&self) -> std::sync::MutexGuard<'_, S3IngestStatus> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes what the engine records to status before it acts on it.
struct StatusLog {
    shared: SharedStatus,
    writer: StatusWriter<S3Ingest>,
    generation: Option<i64>,
}

impl UploadLog for StatusLog {
    async fn started(&mut self, upload_id: String) -> Result<(), String> {
        let status = self.shared.update(|status| {
            status.upload_id = Some(upload_id.clone());
            let message = "streaming the source into S3";
            set_phase(
                status,
                Phase::Running,
                "Transferring",
                message,
                self.generation,
            );
        });
        self.writer
            .write(&status)
            .await
            .map_err(|e| e.to_string())?;
        info!(upload_id, "recorded the upload in status");
        Ok(())
    }

    async fn completing(&mut self, completion: Completion) {
        let status = self.shared.update(|status| {
            let message = format!("completing the upload of {} bytes", completion.size);
            status.checksum = Some(completion.sha256);
            status.etag = completion.etag;
            status.total_bytes = Some(completion.size as i64);
            set_phase(
                status,
                Phase::Running,
                COMPLETING,
                &message,
                self.generation,
            );
        });
        self.writer.write_final(&status).await;
    }
}

/// A started transfer: what it shares with the engine's log, and what metrics counted of it.
struct Streaming<'a> {
    ctx: &'a Context,
    writer: &'a StatusWriter<S3Ingest>,
    shared: SharedStatus,
    counted: Counted,
    started: Instant,
}

impl Streaming<'_> {
    /// Status with the engine's progress `p` (counted in the metrics). Until the engine reports on this run's upload, status
    /// keeps what the earlier run recorded (its length and resume point): written over with
    /// nothing, the next run would find no length to resume at and start the ingest over.
    fn progress(&mut self, p: &Progress) -> S3IngestStatus {
        if p.upload_id.is_none() {
            return self.shared.lock().clone();
        }
        self.counted.add(self.ctx, p);
        let elapsed = self.started.elapsed().as_secs_f64();
        self.shared
            .update(|status| decide::with_progress(status, p, elapsed, Timestamp::now()))
    }

    /// Runs the engine, writing its progress every status interval (and as soon as parts commit,
    /// at most every [`RESUME_WRITE_GAP`]), until it ends or the ingest is deleted or the process
    /// stops. An interrupt waits for this run's upload id to be recorded (or 30 s), so that an
    /// upload being created is never dropped unrecorded: the id an earlier run recorded does not
    /// count, since a resume that finds that upload unusable aborts it and creates another.
    async fn drive(
        &mut self,
        mut engine: Pin<&mut impl Future<Output = Result<Outcome, IngestError>>>,
        updates: &mut watch::Receiver<Progress>,
        cancelled: &mut watch::Receiver<bool>,
    ) -> Result<Result<Outcome, IngestError>, Interrupt> {
        let mut ticker = tokio::time::interval(self.ctx.settings.status_interval);
        let mut stop = std::pin::pin!(self.ctx.stopped());
        let mut interrupt: Option<(Interrupt, Instant)> = None;
        // When status was last written, with the parts committed then.
        let mut written = (Instant::now(), 0);
        let mut progressing = true;
        loop {
            // The engine reports its upload once status holds it.
            let recorded = updates.borrow().upload_id.is_some();
            let mut tick = false;
            let wanted = tokio::select! {
                result = &mut engine => return Ok(result),
                _ = ticker.tick() => {
                    tick = true;
                    None
                }
                changed = updates.changed(), if progressing => {
                    progressing = changed.is_ok();
                    None
                }
                () = deleted(cancelled), if interrupt.is_none() => Some(Interrupt::Deleted),
                () = &mut stop, if interrupt.is_none() => Some(Interrupt::Stopping),
            };
            if let Some(why) = wanted {
                interrupt = Some((why, Instant::now() + INTERRUPT_WAIT));
            }
            if let Some((why, deadline)) = interrupt
                && (recorded || Instant::now() > deadline)
            {
                return Err(why);
            }
            if recorded && wanted.is_none() {
                let p = updates.borrow_and_update().clone();
                let (at, parts) = written;
                // A restart hashes again from the resume point status holds: move it on as parts
                // commit, so that it reads again hardly more than the parts in flight.
                if tick || (p.parts_committed > parts && at.elapsed() >= RESUME_WRITE_GAP) {
                    let status = self.progress(&p);
                    let _ = self.writer.write(&status).await;
                    written = (Instant::now(), p.parts_committed);
                }
            }
        }
    }
}

/// Streams a prepared ingest and records how it ended.
async fn stream(
    ctx: &Context,
    obj: &S3Ingest,
    writer: &StatusWriter<S3Ingest>,
    mut status: S3IngestStatus,
    prepared: Prepared,
    cancelled: &mut watch::Receiver<bool>,
) {
    let generation = obj.metadata.generation;
    let Prepared {
        request,
        s3,
        resume,
        mut memory,
        _slot,
    } = prepared;
    if resume.is_none() {
        // Any leftover is aborted by now; a new upload id replaces it once the upload exists.
        status.upload_id = None;
        status.resume_point = None;
    }
    status.start_time = Some(Time(Timestamp::now()));
    let shared = SharedStatus(Arc::new(std::sync::Mutex::new(status)));
    let mut streaming = Streaming {
        ctx,
        writer,
        shared: shared.clone(),
        counted: Counted::resuming_at(resume.as_ref().map_or(0, |r| r.checkpoint.length)),
        started: Instant::now(),
    };
    let mut log = StatusLog {
        shared,
        writer: writer.clone(),
        generation,
    };
    let (progress, mut updates) = watch::channel(Progress::default());
    let result = {
        // Pinned in this scope so that an interrupt drops it (and its part tasks) first.
        let engine = ingest::ingest(&s3, &request, &progress, resume, &mut memory, &mut log);
        tokio::pin!(engine);
        streaming.drive(engine, &mut updates, cancelled).await
    };
    let last = progress.borrow().clone();
    let status = streaming.progress(&last);
    let dest = (request.bucket.as_str(), request.key.as_str());
    let ended = match result {
        // Deleted: abort the upload recorded in status (the finalizer waits for this task).
        Err(Interrupt::Deleted) => {
            if let Some(upload_id) = &status.upload_id
                && let Err(e) = abort_upload(&s3, dest.0, dest.1, upload_id).await
            {
                warn!(error = %Redacted(&e), upload_id, "aborting a deleted ingest's upload");
            }
            return;
        }
        // The process stops: the upload stays, and status says where the next process resumes it.
        Err(Interrupt::Stopping) => {
            let ended = decide::interrupted(status, generation);
            info!(ingest = %obj.name_any(), message = ended.event.2, "checkpointed for the next operator");
            ended
        }
        Ok(Ok(outcome)) => decide::succeeded(status, &outcome, dest, generation, Timestamp::now()),
        Ok(Err(error)) => {
            // The engine aborted its upload before returning the error.
            let mut status = status;
            status.upload_id = None;
            status.resume_point = None;
            let message = error.to_string();
            decide::failed(
                status,
                error.reason(),
                &message,
                generation,
                Timestamp::now(),
            )
        }
    };
    record(ctx, obj, writer, ended).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stopping process drops the cancel senders while its transfers still run: that must not
    /// read as a deletion (which aborts the upload), as it did when any change of the channel did.
    #[tokio::test]
    async fn only_a_deletion_cancels_a_transfer() {
        let (cancel, mut cancelled) = watch::channel(false);
        drop(cancel);
        let dropped = tokio::time::timeout(Duration::from_millis(50), deleted(&mut cancelled));
        assert!(dropped.await.is_err(), "a dropped sender is no deletion");

        let (cancel, mut cancelled) = watch::channel(false);
        cancel.send(true).unwrap();
        let sent = tokio::time::timeout(Duration::from_secs(5), deleted(&mut cancelled));
        assert!(sent.await.is_ok(), "a deletion cancels");
    }
}
