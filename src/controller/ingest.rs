//! The S3Ingest controller: streams each ingest in a task of this process (bounded per operator),
//! records the upload id in status before any part is sent, keeps progress in status, and aborts the
//! upload when the resource goes (finalizer) or when a restart finds one it does not own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Api, ResourceExt};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{
    Context, Error, InputError, SecretType, StatusWriter, publish, s3_client, secret_data,
    set_phase,
};
use crate::api::Phase;
use crate::api::ingest::ResumePoint;
use crate::api::ingest::{S3Ingest, S3IngestStatus};
use crate::ingest::{
    self, Checkpoint, Completion, IngestRequest, PartSize, Progress, Reservation, Resume,
    SourceConfig, UploadLog, abort_upload,
};
use crate::redact::Redacted;
use crate::size::parse_size;

/// Held while an upload may exist that only this operator knows how to clean up.
pub const FINALIZER: &str = "s3flow.io/abort-upload";
const DEFAULT_CONCURRENCY: usize = 4;

struct Running {
    cancel: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Ingests streaming in this process, by uid, and the operator-wide limit on them.
pub struct Transfers {
    slots: Arc<Semaphore>,
    running: Mutex<HashMap<String, Running>>,
}

impl Transfers {
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max.max(1))),
            running: Mutex::default(),
        }
    }

    /// Waits until every transfer task of this process has ended (after a stop, each writes its
    /// checkpoint first).
    pub async fn stopped(&self) {
        let tasks: Vec<JoinHandle<()>> = self.running().drain().map(|(_, r)| r.task).collect();
        futures::future::join_all(tasks).await;
    }

    fn is_running(&self, uid: &str) -> bool {
        self.running()
            .get(uid)
            .is_some_and(|r| !r.task.is_finished())
    }

    /// The transfers by uid (a panicked holder leaves the map usable).
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub async fn run(ctx: Arc<Context>) {
    let controllers = ctx.settings.scope.apis(&ctx.client).into_iter().map(|api| {
        ctx.controller(api)
            .run(reconcile, super::error_policy, ctx.clone())
            .for_each(super::log_failure::<S3Ingest>)
    });
    futures::future::join_all(controllers).await;
}

async fn reconcile(obj: Arc<S3Ingest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<S3Ingest> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let reconcile = finalizer(&api, FINALIZER, obj.clone(), |event| async {
        match event {
            Event::Apply(obj) => apply(obj, ctx.clone()).await,
            Event::Cleanup(obj) => cleanup(obj, ctx.clone()).await,
        }
    });
    super::observe(&ctx, "ingest", obj.as_ref(), async {
        reconcile.await.map_err(|e| Error::Finalizer(Box::new(e)))
    })
    .await
}

async fn apply(obj: Arc<S3Ingest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let uid = obj.uid().unwrap_or_default();
    if ctx.ingests.is_running(&uid) {
        return Ok(Action::await_change());
    }
    // The cache may trail a transfer that just finished: decide on the object as it is now.
    let api: Api<S3Ingest> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let Some(obj) = api
        .get_opt(&obj.name_any())
        .await?
        .filter(|o| o.uid().as_deref() == Some(uid.as_str()))
    else {
        return Ok(Action::await_change());
    };
    let obj = Arc::new(obj);
    let status = obj.status.clone().unwrap_or_default();
    let generation = obj.metadata.generation;
    let settled = status.observed_generation == generation;
    match status.phase {
        // Done is done: a restart or a re-apply (GitOps) never copies again.
        Phase::Succeeded if settled => return Ok(Action::await_change()),
        Phase::Succeeded => {
            let mut status = status;
            status.observed_generation = generation;
            StatusWriter::new(&ctx, obj.as_ref()).write(&status).await?;
            return Ok(Action::await_change());
        }
        // A failure stays until the spec changes.
        Phase::Failed if settled => return Ok(Action::await_change()),
        _ => {}
    }
    let (cancel, cancelled) = watch::channel(false);
    let task = tokio::spawn(transfer(obj.clone(), ctx.clone(), cancelled));
    ctx.ingests.running().insert(uid, Running { cancel, task });
    Ok(Action::await_change())
}

/// Stops this process's transfer (which aborts its upload), or aborts an upload a previous process
/// left behind, so that deleting the resource never leaves an incomplete upload.
async fn cleanup(obj: Arc<S3Ingest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let uid = obj.uid().unwrap_or_default();
    let running = ctx.ingests.running().remove(&uid);
    if let Some(running) = running {
        let _ = running.cancel.send(true);
        let _ = running.task.await;
    }
    // Whatever the task did (or if it panicked), the upload recorded in status now must go.
    let api: Api<S3Ingest> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let status = api
        .get_opt(&obj.name_any())
        .await?
        .and_then(|o| o.status)
        .unwrap_or_default();
    if let (Some(upload_id), false) = (status.upload_id, status.phase == Phase::Succeeded) {
        let dest = &obj.spec.destination;
        match s3_client(&ctx, obj.as_ref(), &dest.connection).await {
            Ok(s3) => {
                abort_upload(&s3, &dest.bucket, &dest.key, &upload_id)
                    .await
                    .map_err(Error::Cleanup)?;
            }
            Err(e) => {
                publish(&ctx, obj.as_ref(), EventType::Warning, "UploadNotAborted", &format!(
                    "upload {upload_id} could not be aborted ({e}); remove it with a lifecycle rule or AbortMultipartUpload"
                ))
                .await;
            }
        }
    }
    Ok(Action::await_change())
}

async fn request(ctx: &Context, obj: &S3Ingest) -> Result<IngestRequest, InputError> {
    let spec = &obj.spec;
    let headers = match &spec.source.headers_secret_ref {
        Some(secret) => secret_data(ctx, obj, &secret.name, SecretType::SourceHeaders).await?,
        None => vec![],
    };
    let ca_bundle = match &spec.source.ca_bundle_config_map_ref {
        Some(r) => {
            let api: Api<ConfigMap> =
                Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
            let map = api
                .get_opt(&r.name)
                .await?
                .ok_or_else(|| InputError::ConfigMapNotFound(r.name.clone()))?;
            let pem = map
                .data
                .and_then(|d| d.get(&r.key).cloned())
                .ok_or_else(|| InputError::ConfigMapKeyMissing {
                    name: r.name.clone(),
                    key: r.key.clone(),
                })?;
            Some(pem.into_bytes())
        }
        None => None,
    };
    let transfer = spec.transfer.clone().unwrap_or_default();
    let part_size = match transfer.part_size.as_deref() {
        None | Some("auto") => PartSize::Auto,
        Some(text) => {
            PartSize::Fixed(parse_size(text).map_err(|e| InputError::PartSize(e.to_string()))?)
        }
    };
    Ok(IngestRequest {
        source: SourceConfig {
            url: spec.source.url.clone(),
            headers,
            ca_bundle,
            policy: ctx.settings.policy.clone(),
            stall_timeout: ctx.settings.stall_timeout,
            floor: ctx.settings.source_floor,
        },
        expected_size: spec.source.expected_size.map(|s| s as u64),
        expected_sha256: spec.source.expected_sha256.clone(),
        bucket: spec.destination.bucket.clone(),
        key: spec.destination.key.clone(),
        content_type: spec.destination.content_type.clone(),
        storage_class: spec.destination.storage_class.clone(),
        overwrite: spec.destination.overwrite.unwrap_or(false),
        part_size,
        concurrency: transfer
            .concurrency
            .map_or(DEFAULT_CONCURRENCY, |c| c as usize),
    })
}

fn apply_progress(status: &mut S3IngestStatus, p: &Progress, started: Instant) {
    let elapsed = started.elapsed().as_secs_f64().max(0.001);
    let rate = (p.bytes_committed as f64 / elapsed) as i64;
    status.total_bytes = p.total_bytes.map(|t| t as i64);
    status.bytes_read = Some(p.bytes_read as i64);
    status.bytes_transferred = Some(p.bytes_committed as i64);
    status.part_size = Some(p.part_size as i64);
    status.parts = Some(crate::api::ingest::PartCounts {
        total: p.parts_total.map(|t| t as i32),
        completed: p.parts_committed as i32,
    });
    status.progress = p
        .total_bytes
        .filter(|t| *t > 0)
        .map(|t| format!("{:.1}%", p.bytes_committed as f64 * 100.0 / t as f64));
    status.bytes_per_second = Some(rate);
    status.eta_seconds = p
        .total_bytes
        .filter(|_| rate > 0)
        .map(|t| (t.saturating_sub(p.bytes_committed) as i64) / rate.max(1));
    status.last_progress_time = Some(Time(Timestamp::now()));
    if let (Some(validator), Some(checkpoint)) = (&p.validator, &p.checkpoint) {
        status.resume_point = Some(ResumePoint {
            source_validator: validator.clone(),
            hashed_bytes: checkpoint.length as i64,
            sha256_state: checkpoint.state_hex(),
        });
    }
}

/// Why a transfer ends before its engine does.
#[derive(Clone, Copy)]
enum Interrupt {
    Deleted,
    Stopping,
}

/// How long an interrupt waits for an upload being created to be recorded.
const INTERRUPT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

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

/// What an earlier run left in status: an upload to continue, abort, or recognise as completed.
struct Earlier {
    upload_id: Option<String>,
    resume_point: Option<ResumePoint>,
    total_bytes: Option<i64>,
    /// Recorded just before CompleteMultipartUpload (reason Completing).
    completing: Option<Completion>,
}

impl Earlier {
    fn of(status: &S3IngestStatus) -> Earlier {
        let reason = status.conditions.first().map(|c| c.reason.as_str());
        let completing = match (reason, &status.checksum, status.total_bytes) {
            (Some(COMPLETING), Some(sha256), Some(size)) => Some(Completion {
                etag: status.etag.clone(),
                sha256: sha256.clone(),
                size: size.max(0) as u64,
            }),
            _ => None,
        };
        Earlier {
            upload_id: status.upload_id.clone(),
            resume_point: status.resume_point.clone(),
            total_bytes: status.total_bytes,
            completing,
        }
    }
}

/// Reason of an ingest between recording its completion and completing its upload.
const COMPLETING: &str = "Completing";

/// How a transfer ends before it starts streaming.
enum NotStarted {
    /// Deleted or stopping: nothing to write.
    Interrupted,
    Failed(&'static str, String),
    /// A restart found the upload already completed into the object.
    Completed(Box<S3IngestStatus>, String),
}

impl From<InputError> for NotStarted {
    fn from(e: InputError) -> Self {
        NotStarted::Failed(e.reason(), e.to_string())
    }
}

impl From<ingest::IngestError> for NotStarted {
    fn from(e: ingest::IngestError) -> Self {
        NotStarted::Failed(e.reason(), e.to_string())
    }
}

/// Waits for the ingest's memory (status Queued while it waits), or for a deletion or a stop.
async fn reserve_memory(
    ctx: &Context,
    request: &IngestRequest,
    known_length: Option<u64>,
    writer: &StatusWriter<S3Ingest>,
    status: &mut S3IngestStatus,
    generation: Option<i64>,
    cancelled: &mut watch::Receiver<bool>,
) -> Result<Reservation, NotStarted> {
    let budget = &ctx.settings.ingest_memory;
    let need = request.initial_memory(known_length);
    let reserve = budget.reserve(need);
    tokio::pin!(reserve);
    // At once when it fits now; else say what it waits for.
    if let Some(reserved) = futures::FutureExt::now_or_never(&mut reserve) {
        return Ok(reserved.map_err(ingest::IngestError::from)?);
    }
    let message = format!(
        "waiting for {need} bytes of the ingest memory budget ({} of {} bytes in use)",
        budget.in_use(),
        budget.total()
    );
    set_phase(status, Phase::Pending, "Queued", &message, generation);
    let _ = writer.write(status).await;
    tokio::select! {
        reserved = &mut reserve => Ok(reserved.map_err(ingest::IngestError::from)?),
        _ = cancelled.changed() => Err(NotStarted::Interrupted),
        () = ctx.stopped() => Err(NotStarted::Interrupted),
    }
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
    let generation = obj.metadata.generation;
    let request = request(ctx, obj).await?;
    let s3 = s3_client(ctx, obj, &obj.spec.destination.connection).await?;
    let (bucket, key) = (&request.bucket, &request.key);
    // Killed after completing the upload and before writing so: the object is this upload's.
    if let (Some(upload_id), Some(completion)) = (&earlier.upload_id, &earlier.completing)
        && let Some((size, etag)) =
            ingest::completed_earlier(&s3, bucket, key, upload_id, completion).await?
    {
        let mut done = status.clone();
        done.upload_id = None;
        done.resume_point = None;
        done.etag = etag;
        done.total_bytes = Some(size as i64);
        done.bytes_transferred = Some(size as i64);
        done.progress = Some("100.0%".into());
        let message = format!(
            "copied {size} bytes to s3://{bucket}/{key} (sha256 {}); the upload had completed when the operator restarted",
            completion.sha256
        );
        return Err(NotStarted::Completed(Box::new(done), message));
    }
    let known_length = earlier.total_bytes.map(|t| t.max(0) as u64);
    let memory = reserve_memory(
        ctx,
        &request,
        known_length,
        writer,
        status,
        generation,
        cancelled,
    )
    .await?;
    if ctx.ingests.slots.available_permits() == 0 {
        set_phase(
            status,
            Phase::Pending,
            "Queued",
            "waiting for a transfer slot",
            generation,
        );
        let _ = writer.write(status).await;
    }
    let slot = tokio::select! {
        slot = ctx.ingests.slots.clone().acquire_owned() => {
            slot.map_err(|_| NotStarted::Interrupted)?
        }
        _ = cancelled.changed() => return Err(NotStarted::Interrupted),
        () = ctx.stopped() => return Err(NotStarted::Interrupted),
    };
    // A previous process's upload: continue it when status says where, else start over cleanly.
    let resume = match (earlier.upload_id, earlier.resume_point, known_length) {
        (Some(upload_id), Some(point), Some(total)) => {
            match Checkpoint::from_hex(point.hashed_bytes.max(0) as u64, &point.sha256_state) {
                Some(checkpoint) => Some(Resume {
                    upload_id,
                    validator: point.source_validator,
                    total_bytes: total,
                    checkpoint,
                }),
                None => {
                    abort_upload(&s3, bucket, key, &upload_id).await?;
                    None
                }
            }
        }
        (Some(upload_id), _, _) => {
            abort_upload(&s3, bucket, key, &upload_id).await?;
            info!(ingest = %obj.name_any(), upload_id, "aborted the upload a previous run left");
            None
        }
        _ => None,
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
    _slot: tokio::sync::OwnedSemaphorePermit,
}

/// Writes what the engine records to status before it acts on it.
struct StatusLog {
    shared: Arc<tokio::sync::Mutex<S3IngestStatus>>,
    writer: StatusWriter<S3Ingest>,
    generation: Option<i64>,
}

impl UploadLog for StatusLog {
    async fn started(&mut self, upload_id: String) -> Result<(), String> {
        let mut status = self.shared.lock().await;
        status.upload_id = Some(upload_id);
        set_phase(
            &mut *status,
            Phase::Running,
            "Transferring",
            "streaming the source into S3",
            self.generation,
        );
        self.writer.write(&*status).await.map_err(|e| e.to_string())
    }

    async fn completing(&mut self, completion: Completion) {
        let mut status = self.shared.lock().await;
        status.checksum = Some(completion.sha256);
        status.etag = completion.etag;
        status.total_bytes = Some(completion.size as i64);
        let message = format!("completing the upload of {} bytes", completion.size);
        set_phase(
            &mut *status,
            Phase::Running,
            COMPLETING,
            &message,
            self.generation,
        );
        self.writer.write_final(&*status).await;
    }
}

/// One ingest, from queueing to its final status.
async fn transfer(obj: Arc<S3Ingest>, ctx: Arc<Context>, mut cancelled: watch::Receiver<bool>) {
    let generation = obj.metadata.generation;
    let writer = StatusWriter::new(&ctx, obj.as_ref());
    let mut status = obj.status.clone().unwrap_or_default();
    // A previous run's upload stays recorded until it is aborted or continued, so that a deletion
    // or a crash meanwhile still finds it.
    let earlier = Earlier::of(&status);
    if status.phase != Phase::Running {
        set_phase(
            &mut status,
            Phase::Pending,
            "Queued",
            "preparing the transfer",
            generation,
        );
        let _ = writer.write(&status).await;
    }
    let prepared = prepare(&ctx, &obj, earlier, &writer, &mut status, &mut cancelled).await;
    let Prepared {
        request,
        s3,
        resume,
        mut memory,
        _slot,
    } = match prepared {
        Ok(prepared) => prepared,
        Err(NotStarted::Interrupted) => return forget(&ctx, &obj),
        Err(NotStarted::Failed(reason, message)) => {
            return fail(&ctx, &obj, &writer, status, reason, &message).await;
        }
        Err(NotStarted::Completed(mut done, message)) => {
            done.completion_time = Some(Time(Timestamp::now()));
            set_phase(
                &mut *done,
                Phase::Succeeded,
                "Succeeded",
                &message,
                generation,
            );
            writer.write_final(&done).await;
            publish(&ctx, obj.as_ref(), EventType::Normal, "Succeeded", &message).await;
            return forget(&ctx, &obj);
        }
    };
    if resume.is_none() {
        // Any leftover is aborted by now; a new upload id replaces it once the upload exists.
        status.upload_id = None;
        status.resume_point = None;
    }

    let started = Instant::now();
    status.start_time = Some(Time(Timestamp::now()));
    let (progress, mut updates) = watch::channel(Progress::default());
    let shared = Arc::new(tokio::sync::Mutex::new(status));
    let mut log = StatusLog {
        shared: shared.clone(),
        writer: StatusWriter {
            api: writer.api.clone(),
            name: writer.name.clone(),
        },
        generation,
    };
    let mut counted = Counted::resuming_at(resume.as_ref().map_or(0, |r| r.checkpoint.length));
    // Boxed so that a deletion or a stop can drop it (and its part tasks) first.
    let mut engine = Box::pin(ingest::ingest(
        &s3,
        &request,
        &progress,
        resume,
        &mut memory,
        &mut log,
    ));
    let mut ticker = tokio::time::interval(ctx.settings.status_interval);
    let mut stop = std::pin::pin!(ctx.stopped());
    // A deletion or a stop interrupts the engine only once its upload id is recorded (or after
    // 30 s), so that an upload being created is never dropped unrecorded.
    let mut interrupt: Option<(Interrupt, Instant)> = None;
    let result = loop {
        tokio::select! {
            result = &mut engine => break Ok(result),
            _ = ticker.tick() => {
                let p = updates.borrow_and_update().clone();
                let mut status = shared.lock().await;
                if let Some((why, deadline)) = interrupt
                    && (status.upload_id.is_some() || Instant::now() > deadline)
                {
                    break Err(why);
                }
                if status.upload_id.is_some() {
                    counted.add(&ctx, &p);
                    apply_progress(&mut status, &p, started);
                    let _ = writer.write(&*status).await;
                }
            }
            _ = cancelled.changed(), if interrupt.is_none() => {
                if shared.lock().await.upload_id.is_some() {
                    break Err(Interrupt::Deleted);
                }
                interrupt = Some((Interrupt::Deleted, Instant::now() + INTERRUPT_WAIT));
            }
            () = &mut stop, if interrupt.is_none() => {
                if shared.lock().await.upload_id.is_some() {
                    break Err(Interrupt::Stopping);
                }
                interrupt = Some((Interrupt::Stopping, Instant::now() + INTERRUPT_WAIT));
            }
        }
    };
    let mut status = shared.lock().await.clone();
    match result {
        // Deleted: stop, and abort the upload recorded in status.
        Err(Interrupt::Deleted) => {
            drop(engine);
            if let Some(upload_id) = status.upload_id.clone()
                && let Err(e) = abort_upload(&s3, &request.bucket, &request.key, &upload_id).await
            {
                warn!(error = %Redacted(&e), upload_id, "aborting a deleted ingest's upload");
            }
        }
        // The process stops: the upload stays, and status says where the next process resumes it.
        Err(Interrupt::Stopping) => {
            drop(engine);
            let p = progress.borrow().clone();
            counted.add(&ctx, &p);
            apply_progress(&mut status, &p, started);
            let at = status
                .resume_point
                .as_ref()
                .map_or(0, |point| point.hashed_bytes);
            set_phase(
                &mut status,
                Phase::Running,
                "Interrupted",
                &format!("the operator stopped; the next one resumes the upload at byte {at}"),
                generation,
            );
            writer.write_final(&status).await;
            let message = format!("the operator stopped at byte {at}; the next one resumes there");
            publish(
                &ctx,
                obj.as_ref(),
                EventType::Normal,
                "Interrupted",
                &message,
            )
            .await;
            info!(ingest = %obj.name_any(), at, "checkpointed for the next operator");
        }
        Ok(Ok(outcome)) => {
            counted.add(&ctx, &progress.borrow());
            apply_progress(&mut status, &progress.borrow(), started);
            status.upload_id = None;
            status.resume_point = None;
            status.checksum = Some(outcome.sha256.clone());
            status.etag = outcome.etag.clone();
            status.completion_time = Some(Time(Timestamp::now()));
            status.progress = Some("100.0%".into());
            status.total_bytes = Some(outcome.size as i64);
            status.eta_seconds = None;
            let resumed = outcome
                .resumed_at
                .map(|at| format!(", resumed at byte {at}"))
                .unwrap_or_default();
            let message = format!(
                "copied {} bytes in {} parts to s3://{}/{} (sha256 {}){resumed}",
                outcome.size, outcome.parts, request.bucket, request.key, outcome.sha256
            );
            set_phase(
                &mut status,
                Phase::Succeeded,
                "Succeeded",
                &message,
                generation,
            );
            writer.write_final(&status).await;
            publish(&ctx, obj.as_ref(), EventType::Normal, "Succeeded", &message).await;
        }
        Ok(Err(error)) => {
            apply_progress(&mut status, &progress.borrow(), started);
            // The engine aborted its upload before returning the error.
            status.upload_id = None;
            status.resume_point = None;
            fail(
                &ctx,
                &obj,
                &writer,
                status,
                error.reason(),
                &error.to_string(),
            )
            .await;
        }
    }
    forget(&ctx, &obj);
}

/// This process no longer streams the ingest.
fn forget(ctx: &Context, obj: &S3Ingest) {
    ctx.ingests.running().remove(&obj.uid().unwrap_or_default());
}

async fn fail(
    ctx: &Context,
    obj: &S3Ingest,
    writer: &StatusWriter<S3Ingest>,
    mut status: S3IngestStatus,
    reason: &str,
    message: &str,
) {
    // An upload id still in status is one nobody could abort yet (say, its credentials are gone):
    // it stays recorded for the finalizer.
    status.completion_time = Some(Time(Timestamp::now()));
    status.eta_seconds = None;
    set_phase(
        &mut status,
        Phase::Failed,
        reason,
        message,
        obj.metadata.generation,
    );
    writer.write_final(&status).await;
    publish(ctx, obj, EventType::Warning, reason, message).await;
    forget(ctx, obj);
}
