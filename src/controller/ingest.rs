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
    Context, Error, InputError, StatusWriter, publish, s3_settings, secret_data, set_phase,
};
use crate::api::Phase;
use crate::api::ingest::ResumePoint;
use crate::api::ingest::{S3Ingest, S3IngestStatus};
use crate::ingest::{
    self, Checkpoint, IngestRequest, PartSize, Progress, Resume, SourceConfig, abort_upload,
};
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
        let tasks: Vec<JoinHandle<()>> = self
            .running
            .lock()
            .expect("lock")
            .drain()
            .map(|(_, r)| r.task)
            .collect();
        futures::future::join_all(tasks).await;
    }

    fn is_running(&self, uid: &str) -> bool {
        self.running
            .lock()
            .expect("lock")
            .get(uid)
            .is_some_and(|r| !r.task.is_finished())
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
    ctx.ingests
        .running
        .lock()
        .expect("lock")
        .insert(uid, Running { cancel, task });
    Ok(Action::await_change())
}

/// Stops this process's transfer (which aborts its upload), or aborts an upload a previous process
/// left behind, so that deleting the resource never leaves an incomplete upload.
async fn cleanup(obj: Arc<S3Ingest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let uid = obj.uid().unwrap_or_default();
    let running = ctx.ingests.running.lock().expect("lock").remove(&uid);
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
        match s3_settings(&ctx, obj.as_ref(), &dest.connection).await {
            Ok(settings) => {
                let s3 = crate::s3::client(&settings).await;
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
        Some(secret) => secret_data(ctx, obj, &secret.name).await?,
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
            policy: ctx.settings.source_policy.clone(),
            stall_timeout: ctx.settings.stall_timeout,
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

/// One ingest, from queueing to its final status.
async fn transfer(obj: Arc<S3Ingest>, ctx: Arc<Context>, mut cancelled: watch::Receiver<bool>) {
    let generation = obj.metadata.generation;
    let writer = StatusWriter::new(&ctx, obj.as_ref());
    let mut status = obj.status.clone().unwrap_or_default();
    // A previous run's upload stays recorded until it is aborted or continued, so that a deletion
    // or a crash meanwhile still finds it.
    let leftover = status.upload_id.clone();
    let resume_point = status.resume_point.clone();
    let total_bytes = status.total_bytes;
    set_phase(
        &mut status,
        Phase::Pending,
        "Queued",
        "waiting for a transfer slot",
        generation,
    );
    let _ = writer.write(&status).await;
    let _slot = tokio::select! {
        slot = ctx.ingests.slots.clone().acquire_owned() => slot.expect("never closed"),
        _ = cancelled.changed() => return,
        () = ctx.stopped() => return,
    };
    let outcome = async {
        let request = request(&ctx, &obj)
            .await
            .map_err(|e| (e.reason(), e.to_string()))?;
        let settings = s3_settings(&ctx, obj.as_ref(), &obj.spec.destination.connection)
            .await
            .map_err(|e| (e.reason(), e.to_string()))?;
        let s3 = crate::s3::client(&settings).await;
        // A previous process's upload: continue it when status says where, else start over cleanly.
        let resume = match (leftover, resume_point, total_bytes) {
            (Some(upload_id), Some(point), Some(total)) => {
                match Checkpoint::from_hex(point.hashed_bytes as u64, &point.sha256_state) {
                    Some(checkpoint) => Some(Resume {
                        upload_id,
                        validator: point.source_validator,
                        total_bytes: total as u64,
                        checkpoint,
                    }),
                    None => {
                        abort_upload(&s3, &request.bucket, &request.key, &upload_id)
                            .await
                            .map_err(|e| (e.reason(), e.to_string()))?;
                        None
                    }
                }
            }
            (Some(upload_id), _, _) => {
                abort_upload(&s3, &request.bucket, &request.key, &upload_id)
                    .await
                    .map_err(|e| (e.reason(), e.to_string()))?;
                info!(ingest = %obj.name_any(), upload_id, "aborted the upload a previous run left");
                None
            }
            _ => None,
        };
        Ok((request, s3, resume))
    }
    .await;
    let (request, s3, resume) = match outcome {
        Ok(ready) => ready,
        Err((reason, message)) => return fail(&ctx, &obj, &writer, status, reason, &message).await,
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
    let record = {
        let (shared, writer_api, name) = (shared.clone(), writer.api.clone(), writer.name.clone());
        move |upload_id: String| async move {
            let mut status = shared.lock().await;
            status.upload_id = Some(upload_id);
            set_phase(
                &mut *status,
                Phase::Running,
                "Transferring",
                "streaming the source into S3",
                generation,
            );
            StatusWriter {
                api: writer_api,
                name,
            }
            .write(&*status)
            .await
            .map_err(|e| e.to_string())
        }
    };
    let mut counted = Counted::resuming_at(resume.as_ref().map_or(0, |r| r.checkpoint.length));
    // Boxed so that a deletion or a stop can drop it (and its part tasks) first.
    let mut engine = Box::pin(ingest::ingest(&s3, &request, &progress, resume, record));
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
                warn!(error = %e, upload_id, "aborting a deleted ingest's upload");
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
    ctx.ingests
        .running
        .lock()
        .expect("lock")
        .remove(&obj.uid().unwrap_or_default());
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
    ctx.ingests
        .running
        .lock()
        .expect("lock")
        .remove(&obj.uid().unwrap_or_default());
}
