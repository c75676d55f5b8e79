//! The operator: one controller per kind, sharing a context.

pub mod ingest;
pub mod scan;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use thiserror::Error;
use tracing::warn;

use crate::api::{Phase, S3Connection};
use crate::ingest::AddressPolicy;
use crate::s3::{S3Settings, StaticCredentials};

/// Name under which the operator writes status and publishes Events.
pub const MANAGER: &str = "s3flow-controller";

/// Errors of a reconcile; each variant has a fixed metric label.
#[derive(Debug, Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("S3 cleanup: {0}")]
    Cleanup(#[source] crate::ingest::IngestError),
    #[error("S3: {0}")]
    Scan(#[source] crate::scan::ScanError),
    #[error("{0} chunk Jobs of a deleted scan still running; waiting for them before cleaning up")]
    JobsRemaining(usize),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Finalizer(_) => "finalizer",
            Self::Cleanup(_) => "cleanup",
            Self::Scan(_) => "scan_s3",
            Self::JobsRemaining(_) => "jobs_remaining",
        }
    }
}

/// Settings of the operator process (flags and Helm values).
#[derive(Clone, Debug)]
pub struct Settings {
    pub source_policy: Arc<AddressPolicy>,
    /// Ingests streaming at once in this operator.
    pub max_concurrent_ingests: usize,
    pub stall_timeout: Duration,
    /// How often a running ingest's progress is written to status.
    pub status_interval: Duration,
    /// Image of chunk-worker Jobs unless a scan names one (the operator's own image).
    pub worker_image: String,
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub settings: Settings,
    pub ingests: ingest::Transfers,
}

impl Context {
    pub fn new(client: Client, settings: Settings) -> Arc<Self> {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("HOSTNAME").ok(),
        };
        Arc::new(Self {
            recorder: Recorder::new(client.clone(), reporter),
            ingests: ingest::Transfers::new(settings.max_concurrent_ingests),
            client,
            settings,
        })
    }
}

/// The kstatus conditions for `phase`: `Ready`, `Reconciling` and `Stalled`, keeping each one's
/// lastTransitionTime when its status did not change.
pub fn conditions(
    previous: &[Condition],
    phase: Phase,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Vec<Condition> {
    let now = Time(Timestamp::now());
    let make = |type_: &str, on: bool| {
        let status = if on { "True" } else { "False" }.to_string();
        let last = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or(now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: message.into(),
            observed_generation: generation,
            last_transition_time: last,
        }
    };
    vec![
        make("Ready", phase == Phase::Succeeded),
        make(
            "Reconciling",
            matches!(phase, Phase::Pending | Phase::Running),
        ),
        make("Stalled", phase == Phase::Failed),
    ]
}

/// A status with the kstatus phase and conditions.
pub trait PhaseStatus {
    fn phase_fields(&mut self) -> (&mut Phase, &mut Vec<Condition>, &mut Option<i64>);
}

impl PhaseStatus for crate::api::ingest::S3IngestStatus {
    fn phase_fields(&mut self) -> (&mut Phase, &mut Vec<Condition>, &mut Option<i64>) {
        (
            &mut self.phase,
            &mut self.conditions,
            &mut self.observed_generation,
        )
    }
}

impl PhaseStatus for crate::api::scan::S3ParallelScanStatus {
    fn phase_fields(&mut self) -> (&mut Phase, &mut Vec<Condition>, &mut Option<i64>) {
        (
            &mut self.phase,
            &mut self.conditions,
            &mut self.observed_generation,
        )
    }
}

/// Moves a status to `phase` with its conditions, as of `generation`.
pub fn set_phase(
    status: &mut impl PhaseStatus,
    phase: Phase,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let (current, kept, observed) = status.phase_fields();
    *kept = conditions(kept, phase, reason, message, generation);
    *current = phase;
    *observed = generation;
}

/// Why the inputs of a resource could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("secret {0:?} not found in the resource's namespace")]
    SecretNotFound(String),
    #[error("secret {secret:?} has no key {key}")]
    SecretKeyMissing { secret: String, key: String },
    #[error("configmap {0:?} not found in the resource's namespace")]
    ConfigMapNotFound(String),
    #[error("configmap {name:?} has no key {key}")]
    ConfigMapKeyMissing { name: String, key: String },
    #[error("partSize: {0}")]
    PartSize(String),
    #[error("reading an input: {0}")]
    Kube(#[from] kube::Error),
}

impl InputError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::SecretNotFound(_) => "SecretNotFound",
            Self::SecretKeyMissing { .. } => "InvalidSecret",
            Self::ConfigMapNotFound(_) => "ConfigMapNotFound",
            Self::ConfigMapKeyMissing { .. } => "InvalidConfigMap",
            Self::PartSize(_) => "InvalidPartSize",
            Self::Kube(_) => "InputUnreadable",
        }
    }
}

/// The key-value pairs of Secret `name` in `obj`'s namespace (never logged).
pub async fn secret_data(
    ctx: &Context,
    obj: &impl ResourceExt,
    name: &str,
) -> Result<Vec<(String, String)>, InputError> {
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let secret = api
        .get_opt(name)
        .await?
        .ok_or_else(|| InputError::SecretNotFound(name.into()))?;
    let mut data: Vec<(String, String)> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    data.extend(secret.string_data.unwrap_or_default());
    Ok(data)
}

/// S3 settings of `connection`, with the credentials of its Secret in `obj`'s namespace.
pub async fn s3_settings(
    ctx: &Context,
    obj: &impl ResourceExt,
    connection: &S3Connection,
) -> Result<S3Settings, InputError> {
    let credentials = match &connection.credentials_secret_ref {
        None => None,
        Some(secret) => {
            let data = secret_data(ctx, obj, &secret.name).await?;
            let get = |key: &str| data.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            let required = |key: &str| {
                get(key).ok_or_else(|| InputError::SecretKeyMissing {
                    secret: secret.name.clone(),
                    key: key.into(),
                })
            };
            Some(StaticCredentials {
                access_key_id: required("AWS_ACCESS_KEY_ID")?,
                secret_access_key: required("AWS_SECRET_ACCESS_KEY")?,
                session_token: get("AWS_SESSION_TOKEN"),
            })
        }
    };
    Ok(S3Settings {
        endpoint: connection.endpoint.clone(),
        region: connection.region.clone(),
        force_path_style: connection.force_path_style.unwrap_or(false),
        credentials,
    })
}

/// Publishes an Event about `obj` (its note cut to 1,000 characters).
pub async fn publish<K>(ctx: &Context, obj: &K, type_: EventType, reason: &str, note: &str)
where
    K: Resource<DynamicType = ()>,
{
    let event = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: K::kind(&()).into_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(error = %e, "publishing an event");
    }
}

/// Writes the whole status by server-side apply, as the one manager that owns it.
pub struct StatusWriter<K> {
    pub api: Api<K>,
    pub name: String,
}

impl<K> StatusWriter<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    pub fn new(ctx: &Context, obj: &K) -> Self {
        Self {
            api: Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default()),
            name: obj.name_any(),
        }
    }

    pub async fn write(&self, status: &impl Serialize) -> Result<(), kube::Error> {
        let patch = json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        self.api
            .patch_status(
                &self.name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map(|_| ())
    }

    /// A terminal status must land, or a restart would take the resource for one still running:
    /// retried with backoff for about a minute.
    pub async fn write_final(&self, status: &impl Serialize) {
        for attempt in 1..=12 {
            match self.write(status).await {
                Ok(()) => return,
                Err(e) => {
                    warn!(error = %e, attempt, "writing the final status");
                    tokio::time::sleep(crate::ingest::backoff(attempt)).await;
                }
            }
        }
    }
}

/// Runs every controller until the process is asked to stop.
pub async fn run(client: Client, settings: Settings) {
    let context = Context::new(client, settings);
    futures::join!(ingest::run(context.clone()), scan::run(context));
}
