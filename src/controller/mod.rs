//! The operator: one controller per kind, sharing a context.

pub mod http;
pub mod identity;
pub mod ingest;
pub mod leader;
pub mod metrics;
pub mod scan;

mod error;
#[cfg(test)]
pub(crate) mod fake;
mod inputs;
mod reconcile;
mod run;
mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::address::AddressPolicy;
use crate::ingest::{MemoryBudget, ThroughputFloor};
use crate::redact;
use http::Readiness;
use metrics::Metrics;

pub use error::Error;
pub use inputs::{
    InputError, SECRET_TYPE_LABEL, SecretType, s3_access, s3_client, s3_client_for_cleanup,
    secret_data,
};
pub use reconcile::{
    PANICS_BEFORE_FAILED, RECONCILE_DEADLINE, error_policy, instrumented, log_failure,
    panic_message,
};
pub use run::run;
pub use status::{PhaseStatus, StatusWriter, conditions, publish, set_phase};

/// Name under which the operator writes status and publishes Events.
pub const MANAGER: &str = "s3flow-controller";

/// Which namespaces the operator watches.
#[derive(Clone, Debug, Default)]
pub enum Scope {
    /// Every namespace (no `--namespace` given).
    #[default]
    All,
    /// Only these namespaces: one watch per namespace and kind.
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
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// Name of the Lease; every replica of one operator names the same.
    pub lease_name: String,
    /// This process as the Lease's holder: pod name plus a per-start suffix, so that a restarted
    /// container is a new candidate.
    pub identity: String,
    /// How long the Lease lasts without renewal before a standby takes over (at least 2 s).
    pub lease_duration: Duration,
}

/// Settings of the operator process (flags and Helm values).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where every connection of the operator and its chunk workers may go.
    pub policy: Arc<AddressPolicy>,
    /// Namespaces whose resources may use the operator's own AWS identity (the default chain).
    pub default_credentials_namespaces: Vec<String>,
    /// Whether and where resources may act as a ServiceAccount of their namespace.
    pub identity: identity::IdentitySettings,
    /// Ingests streaming at once in this operator.
    pub max_concurrent_ingests: usize,
    /// Memory all ingests' part buffers share.
    pub ingest_memory: MemoryBudget,
    /// A read of an ingest's source that waits longer than this for its next bytes fails and
    /// resumes (at least 1 s); also the window the source floor is judged over.
    pub stall_timeout: Duration,
    /// A source slower than this fails as SourceStalled.
    pub source_floor: ThroughputFloor,
    /// Image patterns (`*` matches any run of characters) a scan's containers may use; empty: any.
    pub allowed_images: Vec<String>,
    /// How often a running ingest's progress is written to status.
    pub status_interval: Duration,
    /// Image of chunk-worker Jobs unless a scan names one (the operator's own image).
    pub worker_image: String,
    /// Namespaces whose S3Ingests and S3ParallelScans (and their Jobs) are watched.
    pub scope: Scope,
    /// Reconciles of one kind at once.
    pub reconcile_concurrency: u16,
    /// Failed reconciles of one resource in a row (backing off to 5 minutes between them) before
    /// it ends as Failed (RetriesExhausted).
    pub reconcile_retries: u32,
    /// Longest a scan's planning reads (HEAD, header row, footer) may take in all, then the scan
    /// fails as SourceStalled.
    pub planning_deadline: Duration,
    /// Objects a scan of many lists per reconcile.
    pub listing_slice: usize,
    /// `None`: this process reconciles without electing a leader (one replica).
    pub leader: Option<LeaderSettings>,
}

/// Shared by every reconcile.
pub struct Context {
    /// Kubernetes API client, as the operator's service account.
    pub client: Client,
    /// Publishes Events as [`MANAGER`], this pod (`HOSTNAME`) as the instance.
    pub recorder: Recorder,
    /// The process's flags and Helm values, fixed for its life.
    pub settings: Settings,
    /// Ingests streaming in this process, and the slots they share.
    pub ingests: ingest::Transfers,
    /// What `/metrics` serves.
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
    /// Renewing credentials of the ServiceAccounts resources act as.
    pub identities: identity::IdentityCache,
}

impl Context {
    /// The context of every controller of this process; `stopping` turns true on SIGTERM.
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
            identities: identity::IdentityCache::default(),
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
