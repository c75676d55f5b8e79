//! The S3ParallelScan controller: plans each scan (HEAD, header row, SQL) before any Job exists,
//! runs one chunk-worker Job per byte range with at most `parallelism` in flight, accepts chunk
//! results in chunk order (a chunk that guessed its start state wrong runs again from the true
//! one), keeps the merged result in status, and finishes with a manifest and the onComplete Job.
//!
//! With a `container` processor every chunk first runs a counting pass; once a chunk is accepted
//! its start state is known, and a second Job fetches exactly its records for the user container.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{Context, Error, StatusWriter, publish, s3_settings, set_phase};
use crate::api::Phase;
use crate::api::S3Connection;
use crate::api::ingest::S3Ingest;
use crate::api::scan::{ChunkCounts, S3ParallelScan, S3ParallelScanStatus};
use crate::scan::chunk::Work;
use crate::scan::plan::{compact_ranges, expand_ranges};
use crate::scan::sql::{Columns, Query, compile};
use crate::scan::verify::Verdict;
use crate::scan::{
    ChunkReport, ChunkTask, Format, Layout, Output, OutputFormat, PlanRequest, ScanError, State,
    Verifier, manifest, plan,
};
use crate::size::parse_size;

/// Held while chunk workers may leave incomplete uploads behind.
pub const FINALIZER: &str = "s3flow.io/scan-cleanup";
/// Label of every Job of a scan: the scan's uid.
pub const SCAN_LABEL: &str = "s3flow.io/scan-uid";
const CHUNK_LABEL: &str = "s3flow.io/chunk";
const ROLE_LABEL: &str = "s3flow.io/role";
const STATE_LABEL: &str = "s3flow.io/start-state";
/// Container name of the chunk worker in its Job.
pub const WORKER_CONTAINER: &str = "worker";
/// Where a fetch writes a chunk's records for a user container.
const CHUNK_DIR: &str = "/s3flow/chunk";
/// The query of the counting pass before a container processor.
const COUNT_QUERY: &str = "SELECT COUNT(*) FROM S3Object";

/// Jobs of a scan by purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    /// Reads a chunk and reports its records (and runs the SQL).
    Scan,
    /// Runs the user's container on a chunk's records.
    Process,
    /// The completion callback.
    OnComplete,
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Role::Scan => "scan",
            Role::Process => "process",
            Role::OnComplete => "on-complete",
        }
    }
}

/// The controller's bookkeeping in status: accepted chunks and processed ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Checkpoint {
    verifier: Verifier,
    /// Chunks whose container processing finished (container processors only).
    #[serde(default)]
    processed: String,
    /// The manifest is written: only the onComplete Job may remain.
    #[serde(default)]
    finished: bool,
}

pub async fn run(ctx: Arc<Context>) {
    let scopes = ctx.settings.scope.apis::<S3ParallelScan>(&ctx.client);
    let jobs = ctx.settings.scope.apis::<Job>(&ctx.client);
    let controllers = scopes.into_iter().zip(jobs).map(|(scans, jobs)| {
        ctx.controller(scans)
            .owns(jobs, watcher::Config::default().labels(SCAN_LABEL))
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
    super::observe(&ctx, "scan", obj.as_ref(), async {
        reconcile.await.map_err(|e| Error::Finalizer(Box::new(e)))
    })
    .await
}

/// The object a scan reads and how to reach it.
struct Source {
    bucket: String,
    key: String,
    connection: S3Connection,
}

/// Why a scan cannot go on now.
enum Blocked {
    /// Waiting for something that will change by itself (an S3Ingest still running).
    Waiting(String),
    /// Failed for good, with a reason.
    Failed(&'static str, String),
}

async fn source(ctx: &Context, obj: &S3ParallelScan) -> Result<Source, Blocked> {
    let spec = &obj.spec.source;
    let Some(reference) = &spec.ingest_ref else {
        return Ok(Source {
            bucket: spec.bucket.clone().unwrap_or_default(),
            key: spec.key.clone().unwrap_or_default(),
            connection: spec.connection.clone(),
        });
    };
    let api: Api<S3Ingest> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let ingest = match api.get_opt(&reference.name).await {
        Ok(Some(ingest)) => ingest,
        Ok(None) => {
            return Err(Blocked::Waiting(format!(
                "waiting for S3Ingest {:?}, which does not exist yet",
                reference.name
            )));
        }
        Err(e) => {
            return Err(Blocked::Waiting(format!(
                "reading S3Ingest {:?}: {e}",
                reference.name
            )));
        }
    };
    match ingest.status.as_ref().map(|s| s.phase) {
        Some(Phase::Succeeded) => Ok(Source {
            bucket: ingest.spec.destination.bucket.clone(),
            key: ingest.spec.destination.key.clone(),
            connection: ingest.spec.destination.connection.clone(),
        }),
        Some(Phase::Failed) => Err(Blocked::Failed(
            "IngestFailed",
            format!("S3Ingest {:?} failed; nothing to scan", reference.name),
        )),
        _ => Err(Blocked::Waiting(format!(
            "waiting for S3Ingest {:?} to succeed",
            reference.name
        ))),
    }
}

fn format_of(obj: &S3ParallelScan) -> Format {
    match &obj.spec.format.csv {
        Some(csv) => Format::Csv {
            delimiter: csv.delimiter.bytes().next().unwrap_or(b','),
            quote: csv.quote.bytes().next().unwrap_or(b'"'),
            header: csv.header,
        },
        None => Format::JsonLines,
    }
}

fn columns_of(layout: &Layout) -> Columns {
    match layout.format {
        Format::Csv { .. } => Columns::Positional(layout.columns.clone()),
        Format::JsonLines => Columns::Named,
    }
}

/// The planned layout as status recorded it.
fn recorded_layout(
    obj: &S3ParallelScan,
    source: &Source,
    status: &S3ParallelScanStatus,
) -> Option<Layout> {
    Some(Layout {
        bucket: source.bucket.clone(),
        key: source.key.clone(),
        size: status.object_size? as u64,
        etag: status.etag.clone()?,
        format: format_of(obj),
        columns: status.header.clone(),
        data_start: status.data_start? as u64,
        chunk_size: parse_size(&obj.spec.chunking.chunk_size).ok()?,
        gzip: status.compression.as_deref() == Some("gzip"),
    })
}

/// Name prefix of a scan's Jobs: the scan's name (cut) and its uid, so a re-created scan of the
/// same name never meets the old one's Jobs.
fn job_prefix(obj: &S3ParallelScan) -> String {
    let name: String = obj.name_any().chars().take(40).collect();
    let uid: String = obj.uid().unwrap_or_default().chars().take(5).collect();
    format!("{}-{uid}", name.trim_end_matches(['-', '.']))
}

fn job_name(obj: &S3ParallelScan, role: Role, index: u32, state: Option<State>) -> String {
    let prefix = job_prefix(obj);
    match (role, state) {
        (Role::Scan, None) => format!("{prefix}-c{index}"),
        (Role::Scan, Some(state)) => {
            format!("{prefix}-c{index}-{}", state.code().to_ascii_lowercase())
        }
        (Role::Process, _) => format!("{prefix}-p{index}"),
        (Role::OnComplete, _) => format!("{prefix}-done"),
    }
}

/// Row output and chunk reports go under the output prefix, or under a prefix of the source
/// bucket for scans without output.
fn work_location(obj: &S3ParallelScan, layout: &Layout) -> (String, String) {
    match &obj.spec.processor.output {
        Some(output) => (output.bucket.clone(), output.prefix.clone()),
        None => (
            layout.bucket.clone(),
            format!(
                ".s3flow/scans/{}/{}/",
                obj.namespace().unwrap_or_default(),
                job_prefix(obj)
            ),
        ),
    }
}

fn output_of(obj: &S3ParallelScan, layout: &Layout) -> Option<Output> {
    obj.spec.processor.output.as_ref().map(|output| Output {
        bucket: output.bucket.clone(),
        prefix: output.prefix.clone(),
        format: match output.format {
            Some(crate::api::scan::OutputFormat::Csv) => OutputFormat::Csv,
            Some(crate::api::scan::OutputFormat::JsonLines) => OutputFormat::JsonLines,
            None => layout.format.output_format(),
        },
    })
}

/// Builds the Job of one chunk (or of the completion callback). Workers get the task, the S3
/// settings and the credentials Secret as environment, and no Kubernetes API token.
fn chunk_job(
    ctx: &Context,
    obj: &S3ParallelScan,
    source: &Source,
    role: Role,
    task: Option<&ChunkTask>,
    report_to: Option<String>,
) -> Job {
    let index = task.map(|t| t.index).unwrap_or_default();
    let state = task.and_then(|t| t.start_state);
    let name = job_name(
        obj,
        role,
        index,
        if role == Role::Scan { state } else { None },
    );
    let worker = obj.spec.worker.clone().unwrap_or_default();
    let image = worker
        .image
        .clone()
        .unwrap_or_else(|| ctx.settings.worker_image.clone());
    let mut env = vec![
        serde_json::json!({"name": "S3FLOW_TERMINATION_MESSAGE_PATH", "value": "/dev/termination-log"}),
    ];
    let connection = &source.connection;
    if let Some(endpoint) = &connection.endpoint {
        env.push(serde_json::json!({"name": "S3FLOW_S3_ENDPOINT", "value": endpoint}));
    }
    if let Some(region) = &connection.region {
        env.push(serde_json::json!({"name": "S3FLOW_S3_REGION", "value": region}));
    }
    if connection.force_path_style == Some(true) {
        env.push(serde_json::json!({"name": "S3FLOW_S3_FORCE_PATH_STYLE", "value": "true"}));
    }
    if let Some(secret) = &connection.credentials_secret_ref {
        for (key, optional) in [
            ("AWS_ACCESS_KEY_ID", false),
            ("AWS_SECRET_ACCESS_KEY", false),
            ("AWS_SESSION_TOKEN", true),
        ] {
            env.push(serde_json::json!({"name": key, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": key, "optional": optional}}}));
        }
    }
    let mut worker_env = env.clone();
    if let Some(task) = task {
        worker_env.push(serde_json::json!({"name": "S3FLOW_CHUNK_TASK", "value": serde_json::to_string(task).expect("tasks serialize")}));
    }
    if let Some(report_to) = &report_to {
        worker_env.push(serde_json::json!({"name": "S3FLOW_REPORT_TO", "value": report_to}));
    }
    let worker_container = |args: &[&str]| {
        serde_json::json!({
            "name": WORKER_CONTAINER,
            "image": image,
            "command": ["s3flow"],
            "args": args,
            "env": worker_env,
            "resources": worker.resources,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
        })
    };
    let user_container = |spec: &crate::api::scan::ContainerSpec, extra: Vec<serde_json::Value>| {
        let mut env: Vec<serde_json::Value> = extra;
        env.extend(
            spec.env
                .iter()
                .map(|e| serde_json::to_value(e).expect("env serializes")),
        );
        serde_json::json!({
            "name": "processor",
            "image": spec.image,
            "command": spec.command,
            "args": spec.args,
            "env": env,
            "resources": spec.resources,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [{"name": "chunk", "mountPath": CHUNK_DIR}],
        })
    };
    let (init, containers, volumes) = match role {
        Role::Scan => (vec![], vec![worker_container(&[WORKER_CONTAINER])], vec![]),
        Role::Process => {
            let task = task.expect("process Jobs have a task");
            let (start, end) = task.layout.range(task.index);
            let mut fetch = worker_container(&[WORKER_CONTAINER, "fetch"]);
            fetch["name"] = "fetch".into();
            fetch["volumeMounts"] = serde_json::json!([{"name": "chunk", "mountPath": CHUNK_DIR}]);
            let path = chunk_file(task.layout.format);
            let spec = obj
                .spec
                .processor
                .container
                .as_ref()
                .expect("container processor");
            let extra = vec![
                serde_json::json!({"name": "S3FLOW_CHUNK_FILE", "value": path}),
                serde_json::json!({"name": "S3FLOW_CHUNK_INDEX", "value": task.index.to_string()}),
                serde_json::json!({"name": "S3FLOW_CHUNK_RANGE", "value": format!("{start}-{}", end.min(task.layout.size))}),
                serde_json::json!({"name": "S3FLOW_BUCKET", "value": task.layout.bucket}),
                serde_json::json!({"name": "S3FLOW_KEY", "value": task.layout.key}),
            ];
            (
                vec![fetch],
                vec![user_container(spec, extra)],
                vec![serde_json::json!({"name": "chunk", "emptyDir": {}})],
            )
        }
        Role::OnComplete => {
            let spec = obj.spec.on_complete.as_ref().expect("onComplete set");
            let mut extra = env.clone();
            extra.retain(|e| e["name"] != "S3FLOW_TERMINATION_MESSAGE_PATH");
            extra.push(serde_json::json!({"name": "S3FLOW_MANIFEST", "value": report_to.unwrap_or_default()}));
            let mut container = user_container(spec, extra);
            container
                .as_object_mut()
                .expect("object")
                .remove("volumeMounts");
            (vec![], vec![container], vec![])
        }
    };
    let uid = obj.uid().unwrap_or_default();
    let mut labels = serde_json::json!({SCAN_LABEL: uid, ROLE_LABEL: role.label(), CHUNK_LABEL: index.to_string()});
    if let Some(state) = state {
        labels[STATE_LABEL] = state.code().to_string().into();
    }
    let retries = if role == Role::OnComplete {
        0
    } else {
        obj.spec.chunking.max_retries_per_chunk
    };
    // Bad data (exit code 3 of the worker, or of the fetch before a user container) fails the
    // chunk at once; a drained node or a preempted pod is not the chunk's fault.
    let mut failure_rules = vec![
        serde_json::json!({"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}),
    ];
    let fail_fast = match role {
        Role::Scan => Some(WORKER_CONTAINER),
        Role::Process => Some("fetch"),
        Role::OnComplete => None,
    };
    if let Some(container) = fail_fast {
        failure_rules.push(serde_json::json!({"action": "FailJob", "onExitCodes": {
            "containerName": container, "operator": "In", "values": [crate::scan::BAD_DATA_EXIT_CODE],
        }}));
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "namespace": obj.namespace(),
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": "s3flow.io/v1alpha1",
                "kind": "S3ParallelScan",
                "name": obj.name_any(),
                "uid": uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "backoffLimit": retries,
            "podFailurePolicy": {"rules": failure_rules},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": false,
                    "serviceAccountName": worker.service_account_name,
                    "nodeSelector": worker.node_selector,
                    "tolerations": worker.tolerations,
                    "initContainers": init,
                    "containers": containers,
                    "volumes": volumes,
                },
            },
        },
    }))
    .expect("a valid Job")
}

fn chunk_file(format: Format) -> String {
    let extension = match format {
        Format::Csv { .. } => "csv",
        Format::JsonLines => "jsonl",
    };
    format!("{CHUNK_DIR}/records.{extension}")
}

fn job_finished(job: &Job) -> Option<bool> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let holds = |type_: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    };
    if holds("Complete") {
        Some(true)
    } else if holds("Failed") {
        Some(false)
    } else {
        None
    }
}

fn label(job: &Job, key: &str) -> Option<String> {
    job.labels().get(key).cloned()
}

fn job_role(job: &Job) -> Option<Role> {
    match label(job, ROLE_LABEL)?.as_str() {
        "scan" => Some(Role::Scan),
        "process" => Some(Role::Process),
        "on-complete" => Some(Role::OnComplete),
        _ => None,
    }
}

fn job_chunk(job: &Job) -> Option<u32> {
    label(job, CHUNK_LABEL)?.parse().ok()
}

fn job_state(job: &Job) -> Option<State> {
    State::from_code(label(job, STATE_LABEL)?.chars().next()?)
}

/// The termination message of `container` in the Job's last pod that ran it to the end.
async fn termination_message(
    ctx: &Context,
    job: &Job,
    container: &str,
) -> Result<Option<String>, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let list = pods
        .list(
            &ListParams::default()
                .labels(&format!("batch.kubernetes.io/job-name={}", job.name_any())),
        )
        .await?;
    let mut messages: Vec<(Option<Timestamp>, String)> = list
        .items
        .iter()
        .filter_map(|pod| {
            let status = pod.status.as_ref()?;
            let statuses = status
                .container_statuses
                .iter()
                .flatten()
                .chain(status.init_container_statuses.iter().flatten());
            let terminated = statuses
                .filter(|s| s.name == container)
                .find_map(|s| s.state.as_ref()?.terminated.clone())?;
            Some((
                terminated.finished_at.map(|t| t.0),
                terminated.message.unwrap_or_default(),
            ))
        })
        .collect();
    messages.sort_by_key(|(finished, _)| *finished);
    Ok(messages.pop().map(|(_, message)| message))
}

async fn delete_job(ctx: &Context, job: &Job) -> Result<(), kube::Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    match api
        .delete(
            &job.name_any(),
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..Default::default()
            },
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn create_job(ctx: &Context, job: &Job) -> Result<(), kube::Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    match api.create(&PostParams::default(), job).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn scan_jobs(ctx: &Context, obj: &S3ParallelScan) -> Result<Vec<Job>, kube::Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let selector = format!("{SCAN_LABEL}={}", obj.uid().unwrap_or_default());
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}

/// Deletes every Job of the scan, waiting until their pods are gone would be the Job
/// controller's business: foreground deletion makes the Jobs go only after their pods.
async fn delete_all_jobs(ctx: &Context, obj: &S3ParallelScan) -> Result<(), kube::Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let selector = format!("{SCAN_LABEL}={}", obj.uid().unwrap_or_default());
    api.delete_collection(
        &DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            ..Default::default()
        },
        &ListParams::default().labels(&selector),
    )
    .await?;
    Ok(())
}

/// Aborts multipart uploads that killed workers left under the scan's output prefix.
async fn abort_leftover_uploads(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<usize, ScanError> {
    let mut aborted = 0;
    let (mut key_marker, mut id_marker) = (None, None);
    loop {
        let listed = s3
            .list_multipart_uploads()
            .bucket(bucket)
            .prefix(prefix)
            .set_key_marker(key_marker.take())
            .set_upload_id_marker(id_marker.take())
            .send()
            .await
            .map_err(|e| {
                crate::scan::s3_error(&format!("listing uploads under s3://{bucket}/{prefix}"), e)
            })?;
        for upload in listed.uploads() {
            let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                continue;
            };
            s3.abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .send()
                .await
                .map_err(|e| {
                    crate::scan::s3_error(&format!("aborting the upload of s3://{bucket}/{key}"), e)
                })?;
            aborted += 1;
        }
        if listed.is_truncated() != Some(true) {
            return Ok(aborted);
        }
        key_marker = listed.next_key_marker().map(str::to_string);
        id_marker = listed.next_upload_id_marker().map(str::to_string);
    }
}

async fn cleanup(obj: Arc<S3ParallelScan>, ctx: Arc<Context>) -> Result<Action, Error> {
    delete_all_jobs(&ctx, &obj).await?;
    // Workers still running could start uploads after the abort below.
    let remaining = scan_jobs(&ctx, &obj).await?.len();
    if remaining > 0 {
        return Err(Error::JobsRemaining(remaining));
    }
    if let Some(output) = &obj.spec.processor.output
        && let Ok(source) = source(&ctx, &obj).await
    {
        let aborted = match s3_settings(&ctx, obj.as_ref(), &source.connection).await {
            Ok(settings) => {
                let s3 = crate::s3::client(&settings).await;
                abort_leftover_uploads(&s3, &output.bucket, &output.prefix)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = aborted {
            publish(
                &ctx,
                obj.as_ref(),
                EventType::Warning,
                "UploadsNotAborted",
                &e,
            )
            .await;
        }
    }
    Ok(Action::await_change())
}

/// Ends the scan as Failed: its Jobs go, leftover uploads are aborted, and the reason is in the
/// conditions and an Event.
async fn fail(
    ctx: &Context,
    obj: &S3ParallelScan,
    mut status: S3ParallelScanStatus,
    s3: Option<&aws_sdk_s3::Client>,
    reason: &str,
    message: &str,
) -> Result<Action, Error> {
    delete_all_jobs(ctx, obj).await?;
    if let (Some(s3), Some(output)) = (s3, &obj.spec.processor.output) {
        let _ = abort_leftover_uploads(s3, &output.bucket, &output.prefix).await;
    }
    set_phase(
        &mut status,
        Phase::Failed,
        reason,
        message,
        obj.metadata.generation,
    );
    status.completion_time = Some(Time(Timestamp::now()));
    if let Some(counts) = &mut status.chunks {
        counts.running = 0;
    }
    StatusWriter::new(ctx, obj).write_final(&status).await;
    publish(ctx, obj, EventType::Warning, reason, message).await;
    Ok(Action::await_change())
}

async fn apply(obj: Arc<S3ParallelScan>, ctx: Arc<Context>) -> Result<Action, Error> {
    // The cache may trail this controller's own last status write (the Job deletions that
    // follow it wake this reconcile): decide on the object as it is now.
    let api: Api<S3ParallelScan> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let Some(fresh) = api
        .get_opt(&obj.name_any())
        .await?
        .filter(|o| o.uid() == obj.uid())
    else {
        return Ok(Action::await_change());
    };
    let obj = &fresh;
    let generation = obj.metadata.generation;
    let mut status = obj.status.clone().unwrap_or_default();
    let terminal = matches!(status.phase, Phase::Succeeded | Phase::Failed);
    if terminal && status.observed_generation == generation {
        return Ok(Action::await_change());
    }
    let planned_earlier = status.total_chunks.is_some() && status.observed_generation != generation;
    if terminal || planned_earlier {
        // The spec changed: the scan runs again from scratch, under the new spec only.
        delete_all_jobs(&ctx, obj).await?;
        status = S3ParallelScanStatus::default();
        set_phase(
            &mut status,
            Phase::Pending,
            "Restarting",
            "the spec changed; scanning again",
            generation,
        );
        StatusWriter::new(&ctx, obj).write(&status).await?;
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    if status.total_chunks.is_none() && !scan_jobs(&ctx, obj).await?.is_empty() {
        // Jobs of an earlier run are still going away; new ones would reuse their names.
        delete_all_jobs(&ctx, obj).await?;
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let source = match source(&ctx, obj).await {
        Ok(source) => source,
        Err(Blocked::Waiting(message)) => {
            if status
                .conditions
                .first()
                .is_none_or(|c| c.message != message)
            {
                set_phase(
                    &mut status,
                    Phase::Pending,
                    "WaitingForIngest",
                    &message,
                    generation,
                );
                StatusWriter::new(&ctx, obj).write(&status).await?;
            }
            return Ok(Action::requeue(Duration::from_secs(3)));
        }
        Err(Blocked::Failed(reason, message)) => {
            return fail(&ctx, obj, status, None, reason, &message).await;
        }
    };
    let settings = match s3_settings(&ctx, obj, &source.connection).await {
        Ok(settings) => settings,
        Err(e) => return fail(&ctx, obj, status, None, e.reason(), &e.to_string()).await,
    };
    let s3 = crate::s3::client(&settings).await;
    let layout = match recorded_layout(obj, &source, &status) {
        Some(layout) => layout,
        None => {
            let chunk_size = match parse_size(&obj.spec.chunking.chunk_size) {
                Ok(size) => size,
                Err(e) => {
                    return fail(
                        &ctx,
                        obj,
                        status,
                        Some(&s3),
                        "InvalidChunkSize",
                        &format!("chunkSize: {e}"),
                    )
                    .await;
                }
            };
            let request = PlanRequest {
                bucket: source.bucket.clone(),
                key: source.key.clone(),
                format: format_of(obj),
                expected_headers: obj
                    .spec
                    .format
                    .csv
                    .as_ref()
                    .and_then(|c| c.expected_headers.clone()),
                chunk_size,
            };
            match plan(&s3, &request).await {
                Ok(layout) => layout,
                Err(e) if e.is_transient() => return Err(Error::Scan(e)),
                Err(e) => {
                    return fail(&ctx, obj, status, Some(&s3), e.reason(), &e.to_string()).await;
                }
            }
        }
    };
    let sql = obj
        .spec
        .processor
        .sql
        .clone()
        .unwrap_or_else(|| COUNT_QUERY.to_string());
    let query = match compile(&sql, &columns_of(&layout)) {
        Ok(query) => query,
        Err(e) => return fail(&ctx, obj, status, Some(&s3), "InvalidSql", &e.to_string()).await,
    };
    if status.total_chunks.is_none() {
        status.object_size = Some(layout.size as i64);
        status.etag = Some(layout.etag.clone());
        status.header = layout.columns.clone();
        status.data_start = Some(layout.data_start as i64);
        status.compression = layout.gzip.then(|| "gzip".to_string());
        status.total_chunks = Some(layout.chunk_count() as i32);
        status.start_time = Some(Time(Timestamp::now()));
        let checkpoint = Checkpoint {
            verifier: Verifier::new(query.empty_partials()),
            processed: String::new(),
            finished: false,
        };
        status.checkpoint = serde_json::to_value(&checkpoint)
            .ok()
            .and_then(|v| v.as_object().cloned());
        let message = if layout.gzip {
            "gzip-compressed: not splittable, scanned as one chunk".to_string()
        } else {
            format!(
                "{} chunks of {} bytes",
                layout.chunk_count(),
                layout.chunk_size
            )
        };
        set_phase(
            &mut status,
            Phase::Running,
            "Scanning",
            &message,
            generation,
        );
        StatusWriter::new(&ctx, obj).write(&status).await?;
        publish(&ctx, obj, EventType::Normal, "Planned", &message).await;
    }
    drive(&ctx, obj, &source, &s3, &layout, (&query, &sql), status).await
}

/// Accepts finished chunks in order, starts the next ones, and finishes the scan.
async fn drive(
    ctx: &Context,
    obj: &S3ParallelScan,
    source: &Source,
    s3: &aws_sdk_s3::Client,
    layout: &Layout,
    (query, sql): (&Query, &str),
    mut status: S3ParallelScanStatus,
) -> Result<Action, Error> {
    let total = layout.chunk_count();
    let containers = obj.spec.processor.container.is_some();
    let mut checkpoint: Checkpoint = match status
        .checkpoint
        .clone()
        .map(serde_json::Value::Object)
        .map(serde_json::from_value)
    {
        Some(Ok(checkpoint)) => checkpoint,
        _ => Checkpoint {
            verifier: Verifier::new(query.empty_partials()),
            processed: String::new(),
            finished: false,
        },
    };
    let mut processed: std::collections::BTreeSet<u32> = expand_ranges(&checkpoint.processed)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let (work_bucket, work_prefix) = work_location(obj, layout);
    let report_key = |index: u32| format!("{work_prefix}chunks/{index:05}.json");
    let output = output_of(obj, layout);
    let task = |index: u32, start_state: Option<State>, work: Work| ChunkTask {
        layout: layout.clone(),
        index,
        start_state,
        work,
    };
    let scan_work = Work::Query {
        sql: sql.to_string(),
        output: if containers { None } else { output.clone() },
    };

    let mut jobs = scan_jobs(ctx, obj).await?;
    jobs.retain(|job| job.metadata.deletion_timestamp.is_none());
    // A chunk that failed for good fails the scan.
    let mut failures = Vec::new();
    for job in &jobs {
        if job_finished(job) == Some(false) && job_role(job) != Some(Role::OnComplete) {
            let index = job_chunk(job).unwrap_or_default();
            let container = if job_role(job) == Some(Role::Process) {
                "processor"
            } else {
                WORKER_CONTAINER
            };
            let message = termination_message(ctx, job, container)
                .await?
                .unwrap_or_default();
            let detail = serde_json::from_str::<serde_json::Value>(&message)
                .ok()
                .and_then(|m| m["error"].as_str().map(str::to_string))
                .unwrap_or(message);
            failures.push((index, detail));
        }
    }
    if !failures.is_empty() {
        failures.sort();
        let indexes: Vec<u32> = failures.iter().map(|(i, _)| *i).collect();
        status.failed_chunks = Some(compact_ranges(indexes.iter().copied()));
        let described: Vec<String> = failures
            .iter()
            .take(5)
            .map(|(index, detail)| {
                let (start, end) = layout.range(*index);
                format!(
                    "chunk {index} (bytes {start}-{}): {detail}",
                    end.min(layout.size)
                )
            })
            .collect();
        let bad_data = failures.iter().any(|(_, d)| d.starts_with("bad data"));
        let reason = if bad_data { "BadData" } else { "ChunksFailed" };
        let message = format!(
            "{} chunk(s) failed: {}",
            failures.len(),
            described.join("; ")
        );
        if let Some(counts) = &mut status.chunks {
            counts.failed = failures.len() as i32;
        }
        return fail(ctx, obj, status, Some(s3), reason, &message).await;
    }

    // Scan Jobs of chunks accepted earlier (a restart came between status and deletion).
    for job in &jobs {
        if job_role(job) == Some(Role::Scan)
            && job_chunk(job).is_some_and(|index| index < checkpoint.verifier.next)
        {
            delete_job(ctx, job).await?;
        }
    }
    jobs.retain(|job| {
        !(job_role(job) == Some(Role::Scan)
            && job_chunk(job).is_some_and(|index| index < checkpoint.verifier.next))
    });
    let mut by_chunk: BTreeMap<(u32, Role), Vec<&Job>> = BTreeMap::new();
    for job in &jobs {
        if let (Some(role), Some(index)) = (job_role(job), job_chunk(job)) {
            by_chunk.entry((index, role)).or_default().push(job);
        }
    }
    // Accept finished scan Jobs in chunk order.
    let mut done_jobs: Vec<&Job> = Vec::new();
    let mut reruns: Vec<Job> = Vec::new();
    let mut new_process: Vec<Job> = Vec::new();
    while checkpoint.verifier.next < total {
        let index = checkpoint.verifier.next;
        let truth = checkpoint.verifier.state;
        let candidates = by_chunk
            .get(&(index, Role::Scan))
            .cloned()
            .unwrap_or_default();
        // A re-run from the true state wins over the first, guessing run.
        let Some(job) = candidates
            .iter()
            .find(|j| job_state(j) == Some(truth))
            .or_else(|| candidates.iter().find(|j| job_state(j).is_none()))
        else {
            break;
        };
        if job_finished(job) != Some(true) {
            break;
        }
        let Some(report) = read_report(ctx, s3, job, &work_bucket, &report_key(index)).await?
        else {
            warn!(job = %job.name_any(), "chunk report missing; running the chunk again");
            delete_job(ctx, job).await?;
            break;
        };
        match checkpoint.verifier.offer(&report) {
            Verdict::Accepted => {
                if containers {
                    let fetch = task(
                        index,
                        Some(truth),
                        Work::Fetch {
                            path: chunk_file(layout.format).into(),
                        },
                    );
                    new_process.push(chunk_job(
                        ctx,
                        obj,
                        source,
                        Role::Process,
                        Some(&fetch),
                        None,
                    ));
                }
                done_jobs.extend(candidates.iter().copied());
            }
            Verdict::BadData => {
                let error = report.bad_data(layout).expect("a bad record");
                status.failed_chunks = Some(index.to_string());
                let message = format!("1 chunk(s) failed: {error}");
                return fail(ctx, obj, status, Some(s3), error.reason(), &message).await;
            }
            Verdict::RunFrom(state) => {
                let rerun = task(index, Some(state), scan_work.clone());
                reruns.push(chunk_job(
                    ctx,
                    obj,
                    source,
                    Role::Scan,
                    Some(&rerun),
                    Some(format!("s3://{work_bucket}/{}", report_key(index))),
                ));
                done_jobs.push(job);
                break;
            }
        }
    }
    // Container processing results: recorded, then their Jobs go.
    for job in &jobs {
        if job_role(job) == Some(Role::Process) && job_finished(job) == Some(true) {
            let index = job_chunk(job).unwrap_or_default();
            if processed.insert(index) {
                let message = termination_message(ctx, job, "processor")
                    .await?
                    .unwrap_or_default();
                manifest::put(
                    s3,
                    &work_bucket,
                    &format!("{work_prefix}chunks/{index:05}.output.json"),
                    &serde_json::json!({"message": message}),
                )
                .await
                .map_err(Error::Scan)?;
            }
            done_jobs.push(job);
        }
    }
    for job in &new_process {
        create_job(ctx, job).await?;
    }
    checkpoint.processed = compact_ranges(processed.iter().copied());
    // Record what was accepted before the Jobs holding it go.
    status.checkpoint = serde_json::to_value(&checkpoint)
        .ok()
        .and_then(|v| v.as_object().cloned());
    update_counts(
        &mut status,
        &checkpoint,
        &jobs,
        &done_jobs,
        total,
        containers,
    );
    StatusWriter::new(ctx, obj).write(&status).await?;
    for job in &done_jobs {
        delete_job(ctx, job).await?;
    }
    for job in &reruns {
        create_job(ctx, job).await?;
    }

    let all_accepted = checkpoint.verifier.next == total;
    if all_accepted && (!containers || processed.len() as u32 == total) {
        return finish(ctx, obj, source, s3, layout, query, status, checkpoint).await;
    }
    // Start chunks in order, at most `parallelism` Jobs running and a bounded window of finished
    // ones waiting for their turn to be accepted.
    let parallelism = obj.spec.chunking.parallelism.max(1) as usize;
    let done_names: std::collections::HashSet<String> =
        done_jobs.iter().map(|j| j.name_any()).collect();
    let mut running = jobs
        .iter()
        .filter(|j| job_finished(j).is_none() && !done_names.contains(&j.name_any()))
        .count()
        + reruns.len()
        + new_process.len();
    let window_end = total.min(
        checkpoint
            .verifier
            .next
            .saturating_add((parallelism * 4).max(16) as u32),
    );
    for index in checkpoint.verifier.next..window_end {
        if running >= parallelism {
            break;
        }
        if by_chunk.contains_key(&(index, Role::Scan))
            || reruns
                .iter()
                .any(|j| j.name_any().contains(&format!("-c{index}-")))
        {
            continue;
        }
        let job = chunk_job(
            ctx,
            obj,
            source,
            Role::Scan,
            Some(&task(index, None, scan_work.clone())),
            Some(format!("s3://{work_bucket}/{}", report_key(index))),
        );
        create_job(ctx, &job).await?;
        running += 1;
    }
    Ok(Action::requeue(Duration::from_secs(60)))
}

fn update_counts(
    status: &mut S3ParallelScanStatus,
    checkpoint: &Checkpoint,
    jobs: &[Job],
    done: &[&Job],
    total: u32,
    containers: bool,
) {
    let verifier = &checkpoint.verifier;
    let done_names: std::collections::HashSet<String> = done.iter().map(|j| j.name_any()).collect();
    let live = || jobs.iter().filter(|j| !done_names.contains(&j.name_any()));
    let running = live().filter(|j| job_finished(j).is_none()).count() as i32;
    // Succeeded: accepted (or, with containers, processed), plus scan Jobs done awaiting their turn.
    let mut succeeded: std::collections::BTreeSet<u32> = if containers {
        expand_ranges(&checkpoint.processed)
            .unwrap_or_default()
            .into_iter()
            .collect()
    } else {
        (0..verifier.next).collect()
    };
    if !containers {
        succeeded.extend(
            live()
                .filter(|j| job_role(j) == Some(Role::Scan) && job_finished(j) == Some(true))
                .filter_map(job_chunk),
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
}

/// A finished scan Job's report: its termination message, else the copy the worker stored.
/// `None` when neither holds one (the chunk runs again); an error when reading failed for now.
async fn read_report(
    ctx: &Context,
    s3: &aws_sdk_s3::Client,
    job: &Job,
    bucket: &str,
    key: &str,
) -> Result<Option<ChunkReport>, Error> {
    let message = termination_message(ctx, job, WORKER_CONTAINER).await?;
    if let Some(report) = message.and_then(|m| serde_json::from_str::<ChunkReport>(&m).ok()) {
        return Ok(Some(report));
    }
    match get_report(s3, bucket, key).await {
        Ok(report) => Ok(Some(report)),
        Err(ScanError::ObjectNotFound(_) | ScanError::InvalidScan(_)) => Ok(None),
        Err(e) => Err(Error::Scan(e)),
    }
}

async fn get_report(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<ChunkReport, ScanError> {
    let location = format!("s3://{bucket}/{key}");
    let body = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| crate::scan::s3_error(&format!("GET {location}"), e))?
        .body
        .collect()
        .await
        .map_err(|e| ScanError::Read(format!("GET {location}: {e}")))?;
    serde_json::from_slice(&body.into_bytes())
        .map_err(|e| ScanError::InvalidScan(format!("{location} is not a chunk report: {e}")))
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    ctx: &Context,
    obj: &S3ParallelScan,
    source: &Source,
    s3: &aws_sdk_s3::Client,
    layout: &Layout,
    query: &Query,
    mut status: S3ParallelScanStatus,
    mut checkpoint: Checkpoint,
) -> Result<Action, Error> {
    let generation = obj.metadata.generation;
    if let Err(e) = checkpoint.verifier.finish(layout) {
        return fail(ctx, obj, status, Some(s3), e.reason(), &e.to_string()).await;
    }
    let (work_bucket, work_prefix) = work_location(obj, layout);
    let manifest_key = format!("{work_prefix}{}", manifest::MANIFEST);
    let manifest_url = format!("s3://{work_bucket}/{manifest_key}");
    let verifier = &checkpoint.verifier;
    let rows = query
        .limit
        .map_or(verifier.rows, |limit| verifier.rows.min(limit));
    let result = if obj.spec.processor.container.is_some() {
        [(
            "chunks".to_string(),
            serde_json::json!(layout.chunk_count()),
        )]
        .into_iter()
        .collect()
    } else {
        query.result(&verifier.partials, rows)
    };
    if !checkpoint.finished {
        let mut reports: Vec<ChunkReport> = futures::stream::iter(0..layout.chunk_count())
            .map(|index| {
                let key = format!("{work_prefix}chunks/{index:05}.json");
                let bucket = work_bucket.clone();
                async move { get_report(s3, &bucket, &key).await }
            })
            .buffered(16)
            .try_collect()
            .await
            .map_err(Error::Scan)?;
        if let Some(output) = output_of(obj, layout) {
            manifest::trim_to_limit(s3, &output, query.limit, &mut reports)
                .await
                .map_err(Error::Scan)?;
            abort_leftover_uploads(s3, &output.bucket, &output.prefix)
                .await
                .map_err(Error::Scan)?;
        }
        let mut messages = BTreeMap::new();
        if obj.spec.processor.container.is_some() {
            for index in 0..layout.chunk_count() {
                let key = format!("{work_prefix}chunks/{index:05}.output.json");
                if let Ok(body) = s3.get_object().bucket(&work_bucket).key(&key).send().await
                    && let Ok(bytes) = body.body.collect().await
                    && let Ok(value) =
                        serde_json::from_slice::<serde_json::Value>(&bytes.into_bytes())
                {
                    messages.insert(index, value["message"].clone());
                }
            }
        }
        let document = manifest::document(layout, &reports, &result, &|index| {
            messages.get(&index).cloned()
        });
        manifest::put(s3, &work_bucket, &manifest_key, &document)
            .await
            .map_err(Error::Scan)?;
        checkpoint.finished = true;
        status.checkpoint = serde_json::to_value(&checkpoint)
            .ok()
            .and_then(|v| v.as_object().cloned());
        status.manifest = Some(manifest_url.clone());
        status.result = Some(result.clone());
        StatusWriter::new(ctx, obj).write(&status).await?;
    }
    if obj.spec.on_complete.is_some() {
        let job = chunk_job(
            ctx,
            obj,
            source,
            Role::OnComplete,
            None,
            Some(manifest_url.clone()),
        );
        let api: Api<Job> =
            Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
        match api
            .get_opt(&job.name_any())
            .await?
            .as_ref()
            .map(job_finished)
        {
            None => {
                create_job(ctx, &job).await?;
                set_phase(
                    &mut status,
                    Phase::Running,
                    "Completing",
                    "running the onComplete Job",
                    generation,
                );
                StatusWriter::new(ctx, obj).write(&status).await?;
                return Ok(Action::requeue(Duration::from_secs(60)));
            }
            Some(None) => return Ok(Action::requeue(Duration::from_secs(60))),
            Some(Some(false)) => {
                return fail(
                    ctx,
                    obj,
                    status,
                    Some(s3),
                    "OnCompleteFailed",
                    "the onComplete Job failed; the result and manifest are recorded",
                )
                .await;
            }
            Some(Some(true)) => {}
        }
    }
    let message = format!(
        "{} records in {} chunks; manifest {manifest_url}",
        checkpoint.verifier.records,
        layout.chunk_count()
    );
    status.result = Some(result);
    status.manifest = Some(manifest_url);
    status.completion_time = Some(Time(Timestamp::now()));
    set_phase(
        &mut status,
        Phase::Succeeded,
        "Succeeded",
        &message,
        generation,
    );
    StatusWriter::new(ctx, obj).write_final(&status).await;
    publish(ctx, obj, EventType::Normal, "Succeeded", &message).await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_deterministic_and_short() {
        let mut obj = S3ParallelScan::new(
            &"a".repeat(80),
            serde_json::from_value(serde_json::json!({
                "source": {"bucket": "b", "key": "k"},
                "format": {"jsonLines": {}},
                "processor": {"sql": "SELECT COUNT(*) FROM S3Object"},
            }))
            .unwrap(),
        );
        obj.metadata.uid = Some("0123456789".into());
        let name = job_name(&obj, Role::Scan, 99_999, Some(State::InQuoted));
        assert_eq!(name, format!("{}-01234-c99999-q", "a".repeat(40)));
        assert!(name.len() <= 63);
        assert_eq!(
            job_name(&obj, Role::Scan, 7, None),
            format!("{}-01234-c7", "a".repeat(40))
        );
        assert_eq!(
            job_name(&obj, Role::Process, 7, None),
            format!("{}-01234-p7", "a".repeat(40))
        );
    }
}
