//! What users see of a resource: its status (kstatus phase and conditions, written whole by
//! server-side apply) and its Events.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::warn;

use super::{Context, MANAGER};
use crate::api::Phase;
use crate::redact;

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
    /// The status's phase, conditions and observedGeneration, for [`set_phase`] to move together.
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
    /// The resource's kind, in its namespace.
    pub api: Api<K>,
    /// The resource's name.
    pub name: String,
}

impl<K> StatusWriter<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    /// A writer of `obj`'s status, by its namespace and name.
    pub fn new(ctx: &Context, obj: &K) -> Self {
        Self {
            api: Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default()),
            name: obj.name_any(),
        }
    }

    /// Writes `status` whole, over whatever version the resource is at (see [`Self::write_over`]).
    pub async fn write(&self, status: &impl Serialize) -> Result<(), kube::Error> {
        self.apply(status, None).await
    }

    /// Writes the status only over the version of the resource it was decided from (`seen`, its
    /// resourceVersion): `false` when the resource changed since, so that a status written by
    /// someone else meanwhile is read, never silently overwritten by one decided without it.
    pub async fn write_over(
        &self,
        status: &impl Serialize,
        seen: Option<String>,
    ) -> Result<bool, kube::Error> {
        match self.apply(status, seen).await {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(refusal)) if refusal.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn apply(
        &self,
        status: &impl Serialize,
        seen: Option<String>,
    ) -> Result<(), kube::Error> {
        let mut patch = json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        if let Some(version) = seen {
            patch["metadata"] = json!({"resourceVersion": version});
        }
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

#[cfg(test)]
mod tests {
    use super::*;
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
