//! The S3ParallelScan controller: plans each scan (HEAD, header row, SQL) before any Job exists,
//! runs one chunk-worker Job per byte range with at most `parallelism` in flight, accepts chunk
//! results in chunk order (a chunk that guessed its start state wrong runs again from the true
//! one), keeps the merged result in status, and finishes with a manifest and the onComplete Job.
//!
//! With a `container` processor every chunk first runs a counting pass; once a chunk is accepted
//! its start state is known, and a second Job fetches exactly its records for the user container.
//!
//! Each reconcile observes (`observe`), decides (`decide`, pure) and acts (`act`).

mod act;
mod decide;
pub mod jobs;
mod listing;
mod observe;
#[cfg(test)]
mod scenarios;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::{Context, Error, StatusWriter, publish, s3_client_for_cleanup};
use crate::api::Phase;
use crate::api::scan::S3ParallelScan;
use crate::worker::LABEL_SCAN;
use decide::{Bookkeeping, Lifecycle};
use observe::{Io, Observed};

/// Held while chunk workers may leave incomplete uploads behind.
pub const FINALIZER: &str = "s3flow.io/scan-cleanup";

/// Runs the S3ParallelScan controllers, each also watching the scans' Jobs, until a stop.
pub async fn run(ctx: Arc<Context>) {
    let scopes = ctx.settings.scope.apis::<S3ParallelScan>(&ctx.client);
    let jobs = ctx.settings.scope.apis::<Job>(&ctx.client);
    let controllers = scopes.into_iter().zip(jobs).map(|(scans, jobs)| {
        ctx.controller(scans)
            .owns(jobs, watcher::Config::default().labels(LABEL_SCAN))
            .run(reconcile, super::error_policy, ctx.clone())
            .for_each(super::log_failure::<S3ParallelScan>)
    });
    futures::future::join_all(controllers).await;
}

async fn reconcile(obj: Arc<S3ParallelScan>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<S3ParallelScan> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    // The chunk gauges follow the status each reconcile starts from (a status write triggers one).
    let status = obj.status.as_ref();
    let in_progress = obj.metadata.deletion_timestamp.is_none()
        && status.is_some_and(|s| matches!(s.phase, Phase::Pending | Phase::Running));
    ctx.metrics.scan_chunks(
        &obj.uid().unwrap_or_default(),
        status
            .and_then(|s| s.chunks.clone())
            .filter(|_| in_progress),
    );
    let reconcile = finalizer(&api, FINALIZER, obj.clone(), |event| async {
        match event {
            Event::Apply(obj) => apply(obj, ctx.clone()).await,
            Event::Cleanup(obj) => cleanup(obj, ctx.clone()).await,
        }
    });
    super::instrumented(&ctx, "scan", obj.as_ref(), async {
        reconcile.await.map_err(|e| Error::Finalizer(Box::new(e)))
    })
    .await
}

async fn apply(obj: Arc<S3ParallelScan>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(seen) = observe::seen(&ctx, &obj).await? else {
        return Ok(Action::await_change());
    };
    let settled = seen
        .scan
        .status
        .as_ref()
        .is_some_and(|s| matches!(s.phase, Phase::Succeeded | Phase::Failed));
    if !settled && let Some((reason, message)) = ctx.gave_up_on(obj.as_ref()) {
        let status = seen.scan.status.clone().unwrap_or_default();
        return act::fail(&ctx, &seen.scan, None, status, reason, &message).await;
    }
    let scan = &seen.scan;
    let generation = scan.metadata.generation;
    let status = scan.status.clone().unwrap_or_default();
    let owned = seen.jobs.len() + seen.deleting;
    match decide::lifecycle(&status, generation, owned) {
        Lifecycle::Settled => return Ok(Action::await_change()),
        Lifecycle::Restart => {
            let remaining = act::delete_all_jobs(&ctx, scan).await?;
            if remaining > 0 {
                return Err(Error::JobsRemaining(remaining));
            }
            // The earlier run's uploads go, wherever its spec pointed.
            abort_uploads(&ctx, scan).await;
            StatusWriter::new(&ctx, scan)
                .write(&decide::restarted(generation))
                .await?;
            return Ok(Action::requeue(decide::AFTER_JOBS_DELETED));
        }
        Lifecycle::ClearOldJobs => {
            act::delete_all_jobs(&ctx, scan).await?;
            return Ok(Action::requeue(decide::AFTER_JOBS_DELETED));
        }
        Lifecycle::Run => {}
    }
    match observe::running(&ctx, &seen).await? {
        Observed::Waiting(message) => {
            let decision = decide::waiting(status, generation, &message);
            if let Some(status) = &decision.status {
                StatusWriter::new(&ctx, scan).write(status).await?;
            }
            Ok(decision.next.action())
        }
        Observed::Refused(reason, message) => {
            act::fail(&ctx, scan, None, status, reason, &message).await
        }
        // The next slice is listed as soon as this one is recorded.
        Observed::Listed(status) => {
            StatusWriter::new(&ctx, scan).write(&status).await?;
            Ok(Action::requeue(std::time::Duration::from_millis(200)))
        }
        Observed::Running(ready) => {
            let observe::Ready {
                mut state,
                checkpoint,
                planned_now,
                io,
            } = *ready;
            let decision = decide::running(&mut state, checkpoint, planned_now);
            act::decision(&ctx, scan, &io, &state, decision).await
        }
    }
}

/// Deletion: the Jobs go first (workers still running could start uploads after an abort), then
/// the uploads the scan's chunks recorded are aborted, exactly.
async fn cleanup(obj: Arc<S3ParallelScan>, ctx: Arc<Context>) -> Result<Action, Error> {
    let remaining = act::delete_all_jobs(&ctx, &obj).await?;
    if remaining > 0 {
        return Err(Error::JobsRemaining(remaining));
    }
    abort_uploads(&ctx, &obj).await;
    Ok(Action::await_change())
}

/// Aborts the uploads the scan's chunks recorded, at the output its checkpoint names (where its
/// run wrote, whatever the spec says now); what cannot be aborted is said in an Event.
async fn abort_uploads(ctx: &Context, obj: &S3ParallelScan) {
    let status = obj.status.clone().unwrap_or_default();
    let Some(checkpoint) = Bookkeeping::of(&status) else {
        return;
    };
    let Some(output) = checkpoint.output.clone() else {
        return;
    };
    let connection = match &obj.spec.source.ingest_ref {
        None => Some(obj.spec.source.connection.clone()),
        Some(reference) => {
            let api: Api<crate::api::S3Ingest> =
                Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
            api.get_opt(&reference.name)
                .await
                .ok()
                .flatten()
                .map(|ingest| ingest.spec.destination.connection)
        }
    };
    let aborted = match connection {
        None => {
            Err("the S3Ingest it scanned is gone, and with it the store's settings".to_string())
        }
        Some(connection) => match s3_client_for_cleanup(ctx, obj, &connection).await {
            Ok(s3) => {
                let io = Io {
                    s3,
                    source: observe::Source {
                        bucket: String::new(),
                        key: String::new(),
                        connection,
                        many: None,
                    },
                    work: (output.bucket.clone(), output.prefix.clone()),
                    scope: output.scope.clone(),
                    output: Some(output),
                    identity: None,
                };
                let run = obj.uid().unwrap_or_default();
                act::abort_recorded_uploads(&io, &run, &checkpoint)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        },
    };
    if let Err(e) = aborted {
        publish(ctx, obj, EventType::Warning, "UploadsNotAborted", &e).await;
    }
}
