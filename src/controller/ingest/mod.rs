//! The S3Ingest controller: streams each ingest in a task of this process (bounded per operator),
//! records the upload id in status before any part is sent, keeps progress in status, and aborts the
//! upload when the resource goes (finalizer) or when a restart finds one it does not own.
//!
//! `reconcile` observes the resource as it is now, `decide` (pure) says what to do with it and
//! which status to write, and `transfer` acts: one task per ingest.

mod decide;
mod slots;
mod transfer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Api, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{
    Context, Error, InputError, SecretType, StatusWriter, publish, s3_client,
    s3_client_for_cleanup, secret_data,
};
use crate::api::Phase;
use crate::api::ingest::S3Ingest;
use crate::ingest::{IngestRequest, PartSize, SourceConfig, abort_upload};
use crate::size::parse_size;
use decide::Lifecycle;

/// Held while an upload may exist that only this operator knows how to clean up.
pub const FINALIZER: &str = "s3flow.io/abort-upload";
const DEFAULT_CONCURRENCY: usize = 4;

struct Running {
    cancel: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Ingests streaming in this process, by uid, and the operator-wide limit on them.
pub struct Transfers {
    slots: Arc<slots::FairSlots>,
    running: Mutex<HashMap<String, Running>>,
}

impl Transfers {
    /// No transfers yet; at most `max` stream at once, shared fairly between namespaces.
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(slots::FairSlots::new(max)),
            running: Mutex::default(),
        }
    }

    /// Waits until every transfer task of this process has ended (after a stop, each writes its
    /// checkpoint first).
    pub async fn stopped(&self) {
        let running: Vec<Running> = self.running().drain().map(|(_, r)| r).collect();
        // Each cancel sender lives until its task ends: a transfer must not take a stop for a
        // deletion, which aborts the upload instead of checkpointing it.
        let ended = running
            .into_iter()
            .map(|Running { cancel, task }| async move {
                let _ = task.await;
                drop(cancel);
            });
        futures::future::join_all(ended).await;
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

/// Runs the S3Ingest controllers (one per watched namespace, or one for all) until a stop.
pub async fn run(ctx: Arc<Context>) {
    let controllers = ctx.settings.scope.apis(&ctx.client).into_iter().map(|api| {
        ctx.controller(api)
            .run(reconcile, super::error_policy, ctx.clone())
            .for_each(super::log_failure::<S3Ingest>)
    });
    futures::future::join_all(controllers).await;
}

async fn reconcile(obj: Arc<S3Ingest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api = namespaced::<S3Ingest>(&ctx, obj.as_ref());
    let reconcile = finalizer(&api, FINALIZER, obj.clone(), |event| async {
        match event {
            Event::Apply(obj) => apply(obj, ctx.clone()).await,
            Event::Cleanup(obj) => cleanup(obj, ctx.clone()).await,
        }
    });
    super::instrumented(&ctx, "ingest", obj.as_ref(), async {
        reconcile.await.map_err(|e| Error::Finalizer(Box::new(e)))
    })
    .await
}

fn namespaced<K>(ctx: &Context, obj: &S3Ingest) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default())
}

/// The resource as the API server has it now (the cache may trail a transfer that just finished),
/// if it is still the same object.
async fn current(ctx: &Context, obj: &S3Ingest) -> Result<Option<S3Ingest>, Error> {
    let found = namespaced::<S3Ingest>(ctx, obj)
        .get_opt(&obj.name_any())
        .await?;
    Ok(found.filter(|o| o.uid() == obj.uid()))
}

async fn apply(obj: Arc<S3Ingest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let uid = obj.uid().unwrap_or_default();
    // A transfer running here writes its own status.
    if ctx.ingests.is_running(&uid) {
        return Ok(Action::await_change());
    }
    let Some(obj) = current(&ctx, &obj).await? else {
        return Ok(Action::await_change());
    };
    let mut status = obj.status.clone().unwrap_or_default();
    let generation = obj.metadata.generation;
    if !matches!(status.phase, Phase::Succeeded | Phase::Failed)
        && let Some((reason, message)) = ctx.gave_up_on(&obj)
    {
        transfer::give_up(&ctx, &obj, reason, &message).await;
        return Ok(Action::await_change());
    }
    match decide::lifecycle(&status, generation) {
        Lifecycle::Settled => {}
        Lifecycle::RecordGeneration => {
            status.observed_generation = generation;
            StatusWriter::new(&ctx, &obj).write(&status).await?;
        }
        Lifecycle::Transfer => {
            let (cancel, cancelled) = watch::channel(false);
            let task = tokio::spawn(transfer::guarded(Arc::new(obj), ctx.clone(), cancelled));
            ctx.ingests.running().insert(uid, Running { cancel, task });
        }
    }
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
    let status = current(&ctx, &obj)
        .await?
        .and_then(|o| o.status)
        .unwrap_or_default();
    let Some(upload_id) = status
        .upload_id
        .filter(|_| status.phase != Phase::Succeeded)
    else {
        return Ok(Action::await_change());
    };
    let dest = &obj.spec.destination;
    match s3_client_for_cleanup(&ctx, obj.as_ref(), &dest.connection).await {
        Ok(s3) => abort_upload(&s3, &dest.bucket, &dest.key, &upload_id)
            .await
            .map_err(Error::Cleanup)?,
        Err(e) => {
            let message = format!(
                "upload {upload_id} could not be aborted ({e}); remove it with a lifecycle rule or AbortMultipartUpload"
            );
            publish(
                &ctx,
                obj.as_ref(),
                EventType::Warning,
                "UploadNotAborted",
                &message,
            )
            .await;
        }
    }
    Ok(Action::await_change())
}

/// The engine's request for an ingest: its spec, with the Secret and ConfigMap it names read.
async fn request(ctx: &Context, obj: &S3Ingest) -> Result<IngestRequest, InputError> {
    let spec = &obj.spec;
    let headers = match &spec.source.headers_secret_ref {
        Some(secret) => secret_data(ctx, obj, &secret.name, SecretType::SourceHeaders).await?,
        None => vec![],
    };
    let ca_bundle = match &spec.source.ca_bundle_config_map_ref {
        Some(r) => {
            let map = namespaced::<ConfigMap>(ctx, obj)
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
