//! The operator: one controller per kind, sharing a context.

pub mod ingest;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use thiserror::Error;

use crate::api::Phase;
use crate::ingest::AddressPolicy;

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
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Finalizer(_) => "finalizer",
            Self::Cleanup(_) => "cleanup",
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

/// Runs every controller until the process is asked to stop.
pub async fn run(client: Client, settings: Settings) {
    let context = Context::new(client, settings);
    ingest::run(context).await;
}
