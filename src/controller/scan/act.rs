//! Carrying out the scan controller's decisions: status writes, Events, Jobs created and
//! deleted, the manifest, and on failure or deletion the exact uploads its chunks recorded.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::warn;

use super::decide::{
    Bookkeeping, Decision, MANIFEST_ATTEMPTS, NewJob, Next, Running, mark_failed, show_result,
};
use super::jobs::{JobKind, JobTemplate, chunk_file};
use super::observe::{Io, get_report, owned_jobs};
use crate::api::scan::{S3ParallelScan, S3ParallelScanStatus};
use crate::controller::{Context, Error, StatusWriter, publish};
use crate::redact::Redacted;
use crate::scan::chunk::abort_recorded_upload;
use crate::scan::manifest::ChunkSummary;
use crate::scan::objects::segments::ObjectPlan;
use crate::scan::verify::check_report;
use crate::scan::{ChunkTask, ScanError, Work, manifest};

/// Largest stored container output read back (its termination message: 4 KiB when genuine).
const OUTPUT_LIMIT: usize = 64 << 10;
/// Most of a container's output message kept (a termination message holds 4 KiB).
const OUTPUT_SHOWN: usize = 4 << 10;

/// Performs `decision` for the running scan `state`, in order: outputs, status, Job deletions,
/// Job creations, what comes next, then its Events (once what they say is done).
pub(super) async fn decision(
    ctx: &Context,
    scan: &S3ParallelScan,
    io: &Io,
    state: &Running,
    decision: Decision,
) -> Result<Action, Error> {
    let (bucket, _) = &io.work;
    for (index, message) in &decision.outputs {
        // What the processor said, at most what a termination message holds.
        let message = crate::redact::cut(message, OUTPUT_SHOWN);
        manifest::put(
            &io.s3,
            bucket,
            &io.output_key(*index),
            &serde_json::json!({"message": message}),
        )
        .await
        .map_err(Error::Scan)?;
    }
    if let Some(status) = &decision.status {
        // The checkpoint in status is what the scan resumes from: a status changed since it was
        // read (by anyone) is read again before any is written.
        let seen = scan.resource_version();
        if !StatusWriter::new(ctx, scan)
            .write_over(status, seen)
            .await?
        {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    }
    for name in &decision.delete {
        delete_job(ctx, scan, name, None).await?;
    }
    let template = JobTemplate {
        scan,
        connection: &io.source.connection,
        default_image: &ctx.settings.worker_image,
        policy: ctx.settings.policy.to_env(),
        identity: io.identity.as_ref(),
    };
    for job in &decision.create {
        let Some(built) = build(&template, io, state, *job) else {
            continue;
        };
        if let Err((reason, refusal)) = create_job(ctx, scan, &built).await? {
            let status = decision
                .status
                .clone()
                .unwrap_or_else(|| state.status.clone());
            return fail(ctx, scan, Some(io), status, reason, &refusal).await;
        }
    }
    let action = match decision.next {
        Next::Requeue(after) => Ok(Action::requeue(after)),
        Next::Fail {
            status,
            reason,
            message,
        } => fail(ctx, scan, Some(io), *status, &reason, &message).await,
        Next::WriteManifest { result } => {
            let status = decision.status.unwrap_or_else(|| state.status.clone());
            write_manifest(ctx, scan, io, state, status, result).await
        }
        Next::Succeed { status } => {
            StatusWriter::new(ctx, scan).write_final(&*status).await;
            Ok(Action::await_change())
        }
    };
    for (type_, reason, message) in &decision.events {
        publish(ctx, scan, *type_, reason, message).await;
    }
    action
}

/// The Job of a decided [`NewJob`] (`None` for a container Job of a scan without that container,
/// which decide never asks for).
fn build(template: &JobTemplate, io: &Io, state: &Running, job: NewJob) -> Option<Job> {
    let task = |index, start_state, work| ChunkTask {
        layout: state.layout.clone(),
        index,
        start_state,
        work,
        run: state.run.clone(),
        keep_rows: None,
    };
    let (bucket, _) = &io.work;
    let scan = template.scan;
    match job {
        NewJob::Scan { index, state: from } => {
            let task = task(index, from, state.work.clone());
            Some(template.build(JobKind::Scan {
                task: &task,
                report_to: format!("s3://{bucket}/{}", io.report_key(index)),
            }))
        }
        NewJob::Cut {
            index,
            keep,
            state: from,
        } => {
            let mut task = task(index, Some(from), state.work.clone());
            task.keep_rows = Some(keep);
            Some(template.build(JobKind::Scan {
                task: &task,
                report_to: format!("s3://{bucket}/{}", io.report_key(index)),
            }))
        }
        NewJob::Process { index, state: from } => {
            let work = Work::Fetch {
                path: chunk_file(state.layout.format).into(),
            };
            let task = task(index, Some(from), work);
            let container = scan.spec.processor.container.as_ref()?;
            Some(template.build(JobKind::Process {
                task: &task,
                container,
            }))
        }
        NewJob::OnComplete => {
            let container = scan.spec.on_complete.as_ref()?;
            Some(template.build(JobKind::OnComplete {
                container,
                manifest: state.status.manifest.clone().unwrap_or_default(),
            }))
        }
    }
}

/// Creates a Job. One of that name that exists already is fine when the scan controls it (an
/// earlier reconcile created it); anyone else's there fails the scan (JobNameTaken): the chunk
/// could never run. `Ok(Err((reason, message)))` too when the API server refuses it as invalid
/// (what the scan's worker settings make of it). A 403 is an error like any other: the
/// operator's own permissions (an Event says so) or an admission webhook may change, and the
/// reconcile retries.
async fn create_job(
    ctx: &Context,
    scan: &S3ParallelScan,
    job: &Job,
) -> Result<Result<(), (&'static str, String)>, Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let name = job.name_any();
    match api.create(&PostParams::default(), job).await {
        Ok(_) => Ok(Ok(())),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let uid = scan.uid().unwrap_or_default();
            let ours = api.get_opt(&name).await?.is_none_or(|existing| {
                existing
                    .owner_references()
                    .iter()
                    .any(|owner| owner.uid == uid && owner.controller == Some(true))
            });
            Ok(match ours {
                true => Ok(()),
                false => Err((
                    "JobNameTaken",
                    format!(
                        "a Job named {name} exists that this scan does not own: its chunk cannot run"
                    ),
                )),
            })
        }
        Err(kube::Error::Api(e)) if matches!(e.code, 400 | 422) => Ok(Err((
            "JobRefused",
            format!("the API server refused Job {name}: {}", e.message),
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the scan's Job `name` (exactly the one with `uid`, when given); one already gone is
/// fine. Its pods go in the background.
async fn delete_job(
    ctx: &Context,
    scan: &S3ParallelScan,
    name: &str,
    uid: Option<String>,
) -> Result<(), kube::Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &scan.namespace().unwrap_or_default());
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes every Job the scan owns (by owner reference), their pods first; the number still
/// there (being deleted) is returned.
pub(super) async fn delete_all_jobs(
    ctx: &Context,
    scan: &S3ParallelScan,
) -> Result<usize, kube::Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &scan.namespace().unwrap_or_default());
    let jobs = owned_jobs(ctx, scan).await?;
    for job in &jobs {
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            preconditions: Some(Preconditions {
                uid: job.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&job.name_any(), &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(jobs.len())
}

/// Aborts the uploads the scan's unaccepted chunks recorded (exact keys and ids of this scan,
/// read from each chunk's upload record; nothing is listed). Returns how many.
pub(super) async fn abort_recorded_uploads(
    io: &Io,
    run: &str,
    checkpoint: &Bookkeeping,
) -> Result<usize, ScanError> {
    let Some(output) = &io.output else {
        return Ok(0);
    };
    let mut aborted = 0;
    // Once every chunk is in, the LIMIT may be cutting a part of any chunk.
    let all_in = checkpoint.verifier.next >= checkpoint.started && !checkpoint.finished;
    let first = if all_in { 0 } else { checkpoint.verifier.next };
    for index in first..checkpoint.started {
        if abort_recorded_upload(&io.s3, output, index, run).await? {
            aborted += 1;
        }
    }
    Ok(aborted)
}

/// Ends the scan as Failed: its Jobs go, the uploads its chunks recorded are aborted, and the
/// reason is in the conditions and an Event.
pub(super) async fn fail(
    ctx: &Context,
    scan: &S3ParallelScan,
    io: Option<&Io>,
    status: S3ParallelScanStatus,
    reason: &str,
    message: &str,
) -> Result<Action, Error> {
    delete_all_jobs(ctx, scan).await?;
    if let (Some(io), Some(checkpoint)) = (io, Bookkeeping::of(&status)) {
        let run = scan.uid().unwrap_or_default();
        if let Err(e) = abort_recorded_uploads(io, &run, &checkpoint).await {
            warn!(error = %Redacted(&e), "aborting a failed scan's uploads");
            publish(
                ctx,
                scan,
                EventType::Warning,
                "UploadsNotAborted",
                &e.to_string(),
            )
            .await;
        }
    }
    let mut status = status;
    mark_failed(
        &mut status,
        scan.metadata.generation,
        reason,
        message,
        Timestamp::now(),
    );
    StatusWriter::new(ctx, scan).write_final(&status).await;
    publish(ctx, scan, EventType::Warning, reason, message).await;
    Ok(Action::await_change())
}

/// Chunk `index`'s report as stored, checked against its task (cut to the LIMIT when it is the
/// crossing chunk), as the manifest lists it.
async fn checked_summary(
    io: &Io,
    state: &Running,
    crossing: Option<crate::scan::manifest::Crossing>,
    index: u32,
) -> Result<ChunkSummary, ScanError> {
    let (report, _) = get_report(&io.s3, &io.work.0, &io.report_key(index)).await?;
    let mut task = state.task_of(index);
    if let Some(crossing) = crossing.filter(|c| c.done && c.index == index) {
        task.keep_rows = Some(crossing.keep);
    }
    check_report(&report, &task).map_err(|message| ScanError::InvalidReport {
        chunk: index,
        message,
    })?;
    Ok(ChunkSummary::from(&report))
}

/// What chunk `index`'s container processor said (cut to a termination message's size when it
/// was stored), if anything.
async fn processor_output(io: &Io, index: u32) -> Option<serde_json::Value> {
    let key = io.output_key(index);
    let bytes = crate::s3::read_object(&io.s3, &io.work.0, &key, OUTPUT_LIMIT)
        .await
        .ok()?;
    let value = serde_json::from_slice::<serde_json::Value>(&bytes).ok()?;
    Some(value["message"].clone())
}

/// The manifest of a scan of one object: a line per chunk (its report read back and checked
/// again, 8 at a time, none kept) with what its container processor said.
async fn object_manifest(
    io: &Io,
    state: &Running,
    checkpoint: &Bookkeeping,
    result: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, ScanError> {
    let layout = &state.layout;
    let (bucket, _) = &io.work;
    let mut messages = std::collections::BTreeMap::new();
    if state.containers {
        for index in 0..layout.chunk_count() {
            if let Some(message) = processor_output(io, index).await {
                messages.insert(index, message);
            }
        }
    }
    let finish = manifest::Finish {
        layout,
        output: io.output.as_ref(),
        limit: state.query.limit,
        result,
        extra: &|index| messages.get(&index).cloned(),
    };
    finish
        .write(
            &io.s3,
            (bucket, &io.manifest_key()),
            checked_summaries(io, state, checkpoint),
        )
        .await
}

/// Every chunk's [`checked_summary`], in order, 8 reports read at a time and none kept.
fn checked_summaries<'a>(
    io: &'a Io,
    state: &'a Running,
    checkpoint: &'a Bookkeeping,
) -> impl futures::Stream<Item = Result<ChunkSummary, ScanError>> + 'a {
    use futures::StreamExt;
    futures::stream::iter(0..state.layout.chunk_count())
        .map(move |index| checked_summary(io, state, checkpoint.crossing, index))
        .buffered(8)
}

/// The manifest of a scan of many objects: shards of a line per chunk and a line per object
/// ([`manifest::ShardedManifest`]), from the plan (a segment at a time) and the chunks' reports
/// (read back and checked again, 8 at a time, none kept).
async fn objects_manifest(
    io: &Io,
    state: &Running,
    (scan, status, plan): (&S3ParallelScan, &S3ParallelScanStatus, &ObjectPlan),
    checkpoint: &Bookkeeping,
    result: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, ScanError> {
    let layout = &state.layout;
    let (bucket, _) = &io.work;
    let mut manifest = manifest::ShardedManifest::new(bucket, io.manifest_key(), state.query.limit);
    let mut planned = plan.chunks(&io.s3);
    let mut summaries = std::pin::pin!(checked_summaries(io, state, checkpoint));
    while let Some(summary) = futures::StreamExt::next(&mut summaries).await {
        let summary = summary?;
        let pieces = planned.next().await?.ok_or_else(|| {
            ScanError::InvalidScan(format!("the plan has no chunk {}", summary.index))
        })?;
        manifest
            .add_planned(&io.s3, io.output.as_ref(), &summary, &pieces)
            .await?;
    }
    let source = &scan.spec.source;
    let head = serde_json::json!({
        "source": {
            "bucket": source.bucket,
            "glob": source.glob,
            "keys": source.keys,
            "manifest": source.manifest,
        },
        "format": layout.format,
        "columns": layout.columns,
        "result": result,
        "objects": status.objects,
        "chunks": layout.chunk_count(),
        "plan": format!("s3://{}/{}", plan.segment_bucket, plan.prefix),
    });
    manifest.finish(&io.s3, head).await
}

/// Every chunk is in: the reports are read back one by one and checked against their tasks
/// again (a report in S3 can be rewritten after it was accepted), parts past the LIMIT deleted,
/// the manifest written, and status records it (and the result) before anything else happens.
/// One manifest at a time in the operator; after [`MANIFEST_ATTEMPTS`] failed tries the scan
/// fails.
async fn write_manifest(
    ctx: &Context,
    scan: &S3ParallelScan,
    io: &Io,
    state: &Running,
    mut status: S3ParallelScanStatus,
    result: serde_json::Map<String, serde_json::Value>,
) -> Result<Action, Error> {
    let _turn = ctx.manifests.acquire().await;
    let layout = &state.layout;
    let mut checkpoint = Bookkeeping::of(&status).ok_or_else(|| {
        Error::Scan(ScanError::InvalidScan(
            "the scan's checkpoint is unreadable".into(),
        ))
    })?;
    if checkpoint.manifest_attempts >= MANIFEST_ATTEMPTS {
        let message = format!(
            "the manifest could not be written in {MANIFEST_ATTEMPTS} tries; the last error is \
             in the Events"
        );
        return fail(ctx, scan, Some(io), status, "ManifestFailed", &message).await;
    }
    checkpoint.manifest_attempts += 1;
    checkpoint.store(&mut status);
    StatusWriter::new(ctx, scan).write(&status).await?;
    let written = match &layout.plan {
        Some(plan) => {
            objects_manifest(io, state, (scan, &status, plan), &checkpoint, &result).await
        }
        None => object_manifest(io, state, &checkpoint, &result).await,
    };
    let url = match written {
        Ok(url) => url,
        Err(e) if !e.is_transient() && e.reason() == "InvalidReport" => {
            let message = e.to_string();
            return fail(ctx, scan, Some(io), status, "InvalidReport", &message).await;
        }
        Err(e) => return Err(Error::Scan(e)),
    };
    checkpoint.finished = true;
    checkpoint.store(&mut status);
    status.manifest = Some(url);
    show_result(&mut status, &result);
    StatusWriter::new(ctx, scan).write(&status).await?;
    Ok(Action::requeue(Duration::from_secs(1)))
}
