//! The operator: one controller per kind, sharing a context.

pub mod http;
pub mod ingest;
pub mod leader;
pub mod metrics;
pub mod scan;

use std::future::Future;
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
use tokio::sync::watch;
use tracing::{error, warn};

use crate::address::{AddressPolicy, UrlRefused};
use crate::api::{Phase, S3Connection};
use crate::ingest::{MemoryBudget, ThroughputFloor};
use crate::redact::{self, Redacted};
use crate::s3::{EndpointError, S3Settings, StaticCredentials};
use http::Readiness;
use leader::{LeaderElection, LostLease};
use metrics::Metrics;

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
    #[error("the reconcile panicked: {0}")]
    Panicked(String),
    #[error("the reconcile took longer than {} s", RECONCILE_DEADLINE.as_secs())]
    Deadline,
}

/// Longest one reconcile may take: it holds one of the kind's reconcile slots, which every
/// tenant's resources share (planning has a deadline of its own, shorter).
pub const RECONCILE_DEADLINE: Duration = Duration::from_secs(600);

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer",
            },
            Self::Cleanup(_) => "cleanup",
            Self::Scan(_) => "scan_s3",
            Self::JobsRemaining(_) => "jobs_remaining",
            Self::Panicked(_) => "panic",
            Self::Deadline => "deadline",
        }
    }

    /// The API server's refusal when the operator's RBAC does not allow a request.
    fn forbidden(&self) -> Option<&str> {
        match self {
            Self::Kube(kube::Error::Api(status)) if status.code == 403 => Some(&status.message),
            Self::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.forbidden(),
                kube::runtime::finalizer::Error::AddFinalizer(kube::Error::Api(status))
                | kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(status))
                    if status.code == 403 =>
                {
                    Some(&status.message)
                }
                _ => None,
            },
            _ => None,
        }
    }
}

/// Which namespaces the operator watches.
#[derive(Clone, Debug, Default)]
pub enum Scope {
    #[default]
    All,
    Namespaces(Vec<String>),
}

impl Scope {
    /// One API handle per watched namespace (or one for all).
    pub fn apis<K>(&self, client: &Client) -> Vec<Api<K>>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match self {
            Self::All => vec![Api::all(client.clone())],
            Self::Namespaces(names) => names
                .iter()
                .map(|ns| Api::namespaced(client.clone(), ns))
                .collect(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::All => 1,
            Self::Namespaces(names) => names.len(),
        }
    }
}

/// Where the leader Lease lives and who this process is.
#[derive(Clone, Debug)]
pub struct LeaderSettings {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub lease_duration: Duration,
}

/// Settings of the operator process (flags and Helm values).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where every connection of the operator and its chunk workers may go.
    pub policy: Arc<AddressPolicy>,
    /// Namespaces whose resources may use the operator's own AWS identity (the default chain).
    pub default_credentials_namespaces: Vec<String>,
    /// Ingests streaming at once in this operator.
    pub max_concurrent_ingests: usize,
    /// Memory all ingests' part buffers share.
    pub ingest_memory: MemoryBudget,
    pub stall_timeout: Duration,
    /// A source slower than this fails as SourceStalled.
    pub source_floor: ThroughputFloor,
    /// Image patterns (`*` matches any run of characters) a scan's containers may use; empty: any.
    pub allowed_images: Vec<String>,
    /// How often a running ingest's progress is written to status.
    pub status_interval: Duration,
    /// Image of chunk-worker Jobs unless a scan names one (the operator's own image).
    pub worker_image: String,
    pub scope: Scope,
    /// Reconciles of one kind at once.
    pub reconcile_concurrency: u16,
    /// Failed reconciles of one resource in a row (backing off to 5 minutes between them) before
    /// it ends as Failed (RetriesExhausted).
    pub reconcile_retries: u32,
    /// `None`: this process reconciles without electing a leader (one replica).
    pub leader: Option<LeaderSettings>,
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub settings: Settings,
    pub ingests: ingest::Transfers,
    pub metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    /// Turns true when the process is asked to stop (SIGTERM).
    stopping: watch::Receiver<bool>,
    /// Failed reconciles in a row, by object uid (the backoff of the next requeue), with the
    /// last error.
    failures: std::sync::Mutex<std::collections::HashMap<String, (u32, String)>>,
    /// Panicked reconciles in a row, by object uid, with the last panic's message.
    panics: std::sync::Mutex<std::collections::HashMap<String, (u32, String)>>,
    /// One scan's manifest is written at a time (it holds a line per chunk).
    pub manifests: tokio::sync::Semaphore,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
        stopping: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("HOSTNAME").ok(),
        };
        Arc::new(Self {
            recorder: Recorder::new(client.clone(), reporter),
            ingests: ingest::Transfers::new(settings.max_concurrent_ingests),
            client,
            settings,
            metrics,
            readiness,
            stopping,
            failures: std::sync::Mutex::default(),
            panics: std::sync::Mutex::default(),
            manifests: tokio::sync::Semaphore::new(1),
        })
    }

    /// Resolves once the process is asked to stop.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut stopping = self.stopping.clone();
        async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        }
    }

    /// Why `obj` ends as Failed instead of being retried again, if it does: its reconcile
    /// panicked [`PANICS_BEFORE_FAILED`] times in a row (InternalError), or failed
    /// `settings.reconcile_retries` times in a row (RetriesExhausted): an error that does not heal
    /// in that long is not retried forever.
    pub fn gave_up_on(&self, obj: &impl Resource) -> Option<(&'static str, String)> {
        let uid = obj.meta().uid.as_deref().unwrap_or_default();
        let panics = self.panics.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((count, message)) = panics
            .get(uid)
            .filter(|(count, _)| *count >= PANICS_BEFORE_FAILED)
        {
            let message = format!(
                "the operator failed on this resource {count} times in a row (an internal error, \
                 counted in s3flow_reconcile_errors_total{{reason=\"panic\"}}): {}",
                redact::text(message)
            );
            return Some(("InternalError", message));
        }
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (count, last) = failures
            .get(uid)
            .filter(|(count, _)| *count >= self.settings.reconcile_retries)?;
        let message =
            format!("the same work failed {count} times in a row; the last error: {last}");
        Some(("RetriesExhausted", message))
    }

    /// The controller settings every kind uses.
    fn controller_config(&self) -> kube::runtime::controller::Config {
        kube::runtime::controller::Config::default()
            .concurrency(self.settings.reconcile_concurrency)
    }

    /// A controller of `K` watching `api`, whose first complete list counts towards readiness.
    /// (The controller's own store cannot be awaited by a second task: it wakes one waiter only.)
    fn controller<K>(&self, api: Api<K>) -> kube::runtime::Controller<K>
    where
        K: Resource<DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, reflector, watcher};
        let (reader, writer) = reflector::store();
        let readiness = self.readiness.clone();
        let mut listed = false;
        let events = watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .inspect(move |event| {
                if !listed && matches!(event, Ok(watcher::Event::InitDone)) {
                    listed = true;
                    readiness.watch_started();
                }
            })
            .applied_objects();
        kube::runtime::Controller::for_stream(events, reader)
            .with_config(self.controller_config())
            .graceful_shutdown_on(self.stopped())
    }
}

/// Reconciles of one resource that may panic in a row before it ends as Failed.
pub const PANICS_BEFORE_FAILED: u32 = 3;

/// Requeues a resource whose reconcile failed (counted and reported by `observe`), sooner the
/// first time and later each time it fails again in a row: 1 s doubling up to 5 minutes.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> kube::runtime::controller::Action {
    let failures = {
        let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (count, last) = failures
            .entry(obj.meta().uid.clone().unwrap_or_default())
            .or_default();
        *count = count.saturating_add(1);
        *last = Redacted(error).to_string();
        *count
    };
    let delay = requeue_delay(failures);
    warn!(
        error = %Redacted(error),
        label = error.metric_label(),
        kind = %K::kind(&()),
        name = %obj.meta().name.as_deref().unwrap_or_default(),
        delay_seconds = delay.as_secs(),
        "requeueing"
    );
    kube::runtime::controller::Action::requeue(delay)
}

/// The wait before retrying a reconcile that failed `failures` times in a row.
fn requeue_delay(failures: u32) -> Duration {
    Duration::from_secs((1u64 << failures.saturating_sub(1).min(9)).min(300))
}

/// Logs what a controller's run reports as failed (reconciles and watches).
pub async fn log_failure<K: Resource<DynamicType = ()>>(
    result: Result<
        (
            kube::runtime::reflector::ObjectRef<K>,
            kube::runtime::controller::Action,
        ),
        kube::runtime::controller::Error<Error, kube::runtime::watcher::Error>,
    >,
) {
    if let Err(e) = result {
        warn!(error = %Redacted(&e), kind = %K::kind(&()), "reconcile failed");
    }
}

/// Counts and times a reconcile, and makes an API permission denial visible on the resource (an
/// Event), so that a Role missing a verb shows where users look instead of only in the logs. A
/// panic in the reconcile is caught and becomes an error (counted, logged, requeued with backoff):
/// one object's reconcile never takes the operator down for the others.
pub async fn observe<K>(
    ctx: &Context,
    controller: &'static str,
    obj: &K,
    reconcile: impl Future<Output = Result<kube::runtime::controller::Action, Error>>,
) -> Result<kube::runtime::controller::Action, Error>
where
    K: Resource<DynamicType = ()>,
{
    let _timer = ctx.metrics.reconcile(controller);
    let bounded = async {
        tokio::time::timeout(RECONCILE_DEADLINE, reconcile)
            .await
            .unwrap_or(Err(Error::Deadline))
    };
    let result = panics_as_errors(bounded).await;
    let uid = obj.meta().uid.clone().unwrap_or_default();
    if let Err(Error::Panicked(message)) = &result {
        error!(
            panic = %redact::text(message),
            controller,
            name = %obj.meta().name.as_deref().unwrap_or_default(),
            "a reconcile panicked; requeueing it"
        );
        let mut panics = ctx.panics.lock().unwrap_or_else(|e| e.into_inner());
        let entry = panics.entry(uid.clone()).or_default();
        *entry = (entry.0.saturating_add(1), message.clone());
    }
    if result.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uid);
        ctx.panics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uid);
    }
    if let Err(e) = &result {
        ctx.metrics.reconcile_failed(controller, e.metric_label());
        if let Some(denied) = e.forbidden() {
            error!(error = %e, "the operator's RBAC refused a request");
            let note = format!("the operator's RBAC refused a request (retrying): {denied}");
            publish(ctx, obj, EventType::Warning, "Forbidden", &note).await;
        }
    }
    result
}

/// Runs `reconcile`, turning a panic in it into [`Error::Panicked`].
async fn panics_as_errors(
    reconcile: impl Future<Output = Result<kube::runtime::controller::Action, Error>>,
) -> Result<kube::runtime::controller::Action, Error> {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(reconcile)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Err(Error::Panicked(panic_message(panic.as_ref()))))
}

/// The text a panic carries.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
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
    // Messages quote tenant input (URLs, values, names): redacted and cut.
    let message = redact::message(message);
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
            message: message.clone(),
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

/// What a Secret is for, as its `s3flow.io/secret-type` label must say: the operator reads no
/// Secret that does not say it is meant for the use a resource names it for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretType {
    /// `credentialsSecretRef`: S3 keys.
    Credentials,
    /// `headersSecretRef`: headers for an ingest's source.
    SourceHeaders,
}

/// Label of a Secret the operator may read; its value is a [`SecretType`].
pub const SECRET_TYPE_LABEL: &str = "s3flow.io/secret-type";

impl SecretType {
    pub fn label(self) -> &'static str {
        match self {
            SecretType::Credentials => "credentials",
            SecretType::SourceHeaders => "source-headers",
        }
    }
}

/// Why the inputs of a resource could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("secret {0:?} not found in the resource's namespace")]
    SecretNotFound(String),
    #[error(
        "secret {name:?} is not labelled for this use: add the label {SECRET_TYPE_LABEL}={} to it (kubectl label secret {name} {SECRET_TYPE_LABEL}={})",
        purpose.label(), purpose.label()
    )]
    SecretNotLabelled { name: String, purpose: SecretType },
    #[error(
        "credentialsSecretRef is required: the cluster admin allows the operator's own AWS identity in other namespaces only"
    )]
    CredentialsRequired,
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
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
            Self::SecretNotLabelled { .. } => "SecretNotLabelled",
            Self::CredentialsRequired => "CredentialsRequired",
            Self::Endpoint(EndpointError::Refused(_, UrlRefused::Address(_))) => "ForbiddenAddress",
            Self::Endpoint(_) => "InvalidEndpoint",
            Self::SecretKeyMissing { .. } => "InvalidSecret",
            Self::ConfigMapNotFound(_) => "ConfigMapNotFound",
            Self::ConfigMapKeyMissing { .. } => "InvalidConfigMap",
            Self::PartSize(_) => "InvalidPartSize",
            Self::Kube(_) => "InputUnreadable",
        }
    }
}

/// The key-value pairs of Secret `name` in `obj`'s namespace (never logged), when its label says it
/// is meant for `purpose`.
pub async fn secret_data(
    ctx: &Context,
    obj: &impl ResourceExt,
    name: &str,
    purpose: SecretType,
) -> Result<Vec<(String, String)>, InputError> {
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let secret = api
        .get_opt(name)
        .await?
        .ok_or_else(|| InputError::SecretNotFound(name.into()))?;
    if secret.labels().get(SECRET_TYPE_LABEL).map(String::as_str) != Some(purpose.label()) {
        return Err(InputError::SecretNotLabelled {
            name: name.into(),
            purpose,
        });
    }
    let mut data: Vec<(String, String)> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    data.extend(secret.string_data.unwrap_or_default());
    Ok(data)
}

/// S3 settings of `connection`, with the credentials of its Secret in `obj`'s namespace, or the
/// operator's own identity where the admin allows it, under the operator's address policy.
pub async fn s3_settings(
    ctx: &Context,
    obj: &impl ResourceExt,
    connection: &S3Connection,
) -> Result<S3Settings, InputError> {
    let credentials = match &connection.credentials_secret_ref {
        None => {
            let namespace = obj.namespace().unwrap_or_default();
            if !ctx
                .settings
                .default_credentials_namespaces
                .contains(&namespace)
            {
                return Err(InputError::CredentialsRequired);
            }
            None
        }
        Some(secret) => {
            let data = secret_data(ctx, obj, &secret.name, SecretType::Credentials).await?;
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
        policy: Some(ctx.settings.policy.clone()),
    })
}

/// The S3 client of `connection`, as [`s3_settings`] says.
pub async fn s3_client(
    ctx: &Context,
    obj: &impl ResourceExt,
    connection: &S3Connection,
) -> Result<aws_sdk_s3::Client, InputError> {
    let settings = s3_settings(ctx, obj, connection).await?;
    Ok(crate::s3::client(&settings).await?)
}

/// Publishes an Event about `obj` (its note cut to 1,000 characters).
pub async fn publish<K>(ctx: &Context, obj: &K, type_: EventType, reason: &str, note: &str)
where
    K: Resource<DynamicType = ()>,
{
    let event = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(redact::cut(&redact::text(note), 1000).into_owned()),
        action: K::kind(&()).into_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(error = %e, "publishing an event");
    }
}

/// Writes the whole status by server-side apply, as the one manager that owns it.
#[derive(Clone)]
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
                    tokio::time::sleep(crate::s3::backoff(attempt)).await;
                }
            }
        }
    }
}

/// Runs the operator until it is asked to stop (SIGTERM or SIGINT): the HTTP endpoints on
/// `listeners` (metrics, probes), and, once this process leads (or at once without leader election), every controller.
pub async fn run(
    client: Client,
    settings: Settings,
    listeners: Option<(tokio::net::TcpListener, tokio::net::TcpListener)>,
) -> Result<(), LostLease> {
    let stopping =
        crate::shutdown::on_signal().expect("installing the SIGTERM and SIGINT handlers");
    let metrics = Arc::new(Metrics::default());
    let readiness = Arc::new(Readiness::default());
    if let Some((metrics_listener, probe_listener)) = listeners {
        tokio::spawn(http::serve(
            metrics_listener,
            http::Endpoints::Metrics(metrics.clone()),
        ));
        tokio::spawn(http::serve(
            probe_listener,
            http::Endpoints::Probes(readiness.clone()),
        ));
    }
    let leader = settings.leader.clone();
    let watches = 2 * settings.scope.len();
    let ctx = Context::new(client.clone(), settings, metrics, readiness, stopping);
    let Some(leader) = leader else {
        ctx.readiness.expect_watches(watches);
        run_controllers(ctx).await;
        return Ok(());
    };
    let mut election = LeaderElection::new(
        client,
        &leader.namespace,
        &leader.lease_name,
        &leader.identity,
        leader.lease_duration,
    );
    // A standby is ready: it serves its endpoints and takes over when the leader goes.
    ctx.readiness.expect_watches(0);
    tokio::select! {
        () = election.acquire() => {}
        () = ctx.stopped() => return Ok(()),
    }
    ctx.readiness.expect_watches(watches);
    ctx.metrics.set_leader(true);
    let outcome = tokio::select! {
        () = run_controllers(ctx.clone()) => Ok(()),
        lost = election.hold() => Err(lost),
    };
    ctx.metrics.set_leader(false);
    if outcome.is_ok() {
        election.release().await;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_reconcile_becomes_an_error_with_its_message() {
        let panicking = async { panic!("a tenant's input was missing") };
        let error = panics_as_errors(panicking).await.unwrap_err();
        assert_eq!(error.metric_label(), "panic");
        assert!(
            error.to_string().contains("a tenant's input was missing"),
            "{error}"
        );
        let fine = async { Ok(kube::runtime::controller::Action::await_change()) };
        assert!(panics_as_errors(fine).await.is_ok());
    }

    #[test]
    fn failures_in_a_row_back_off_to_five_minutes() {
        let delays: Vec<u64> = [1, 2, 3, 9, 10, 50]
            .into_iter()
            .map(|n| requeue_delay(n).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 256, 300, 300]);
    }

    #[test]
    fn condition_messages_are_redacted_and_cut() {
        let long = format!(
            "GET https://h/x?X-Amz-Signature=SECRET failed: {}",
            "y".repeat(5000)
        );
        let conditions = conditions(&[], Phase::Failed, "SourceUnavailable", &long, Some(1));
        for condition in &conditions {
            assert!(!condition.message.contains("SECRET"));
            assert!(condition.message.len() <= crate::redact::STATUS_TEXT_LIMIT);
            assert!(condition.message.starts_with("GET https://h/x failed"));
        }
    }
}

/// Helpers of the controllers' unit tests.
#[cfg(test)]
pub(crate) mod tests_support {
    /// Merges `patch` into `value`: objects key by key, `null` removes, anything else replaces.
    pub(crate) fn merge(value: &mut serde_json::Value, patch: serde_json::Value) {
        match (value, patch) {
            (serde_json::Value::Object(target), serde_json::Value::Object(patch)) => {
                for (key, new) in patch {
                    if new.is_null() {
                        target.remove(&key);
                    } else {
                        merge(target.entry(key).or_insert(serde_json::Value::Null), new);
                    }
                }
            }
            (target, new) => *target = new,
        }
    }
}

/// Every controller until a stop, then the ingests streaming in this process write their
/// checkpoints (at most 20 s, within the pod's grace period).
async fn run_controllers(ctx: Arc<Context>) {
    futures::join!(ingest::run(ctx.clone()), scan::run(ctx.clone()));
    if tokio::time::timeout(Duration::from_secs(20), ctx.ingests.stopped())
        .await
        .is_err()
    {
        error!("ingests did not checkpoint within 20 s of the stop");
    }
}
