//! Leader election on a `coordination.k8s.io` Lease, as client-go does it: with several replicas
//! exactly one reconciles. A candidate takes the Lease when nobody renewed it for its duration, as
//! measured on the candidate's own clock since it last saw the Lease change (no clock sync needed);
//! a leader that cannot renew within the renew deadline stops before anyone else may take over.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tracing::{info, warn};

/// The leader could not renew its Lease in time: another replica may lead now.
#[derive(Debug, thiserror::Error)]
#[error("lost the leader Lease {0}: no renewal within the renew deadline")]
pub struct LostLease(pub String);

/// What a candidate does with the Lease as it finds it.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Create,
    /// Write ourselves as holder; `transition` when the holder changes.
    Take {
        transition: bool,
    },
    Wait,
}

/// `held_for`: how long the Lease has been unchanged on our clock.
fn decide(
    spec: Option<&LeaseSpec>,
    me: &str,
    held_for: Duration,
    default_duration: Duration,
) -> Decision {
    let Some(spec) = spec else {
        return Decision::Create;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => Decision::Take { transition: true },
        Some(holder) if holder == me => Decision::Take { transition: false },
        Some(_) => {
            let duration = spec
                .lease_duration_seconds
                .map_or(default_duration, |s| Duration::from_secs(s.max(1) as u64));
            if held_for >= duration {
                Decision::Take { transition: true }
            } else {
                Decision::Wait
            }
        }
    }
}

/// This process's candidacy for the leader Lease: acquires it, holds it, and releases it.
pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    renew_deadline: Duration,
    retry_period: Duration,
    /// The Lease's holder and renew time as last seen, and when they were first seen so.
    observed: Option<(Option<String>, Option<MicroTime>, Instant)>,
}

impl LeaderElection {
    /// client-go's proportions: renew deadline 2/3 and retry period 2/15 of the lease duration.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: (lease_duration * 2 / 15).max(Duration::from_millis(500)),
            observed: None,
        }
    }

    /// Waits until this process holds the Lease.
    pub async fn acquire(&mut self) {
        let mut waiting_logged = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.name, identity = %self.identity, "acquired the leader Lease");
                    return;
                }
                Ok(false) if !waiting_logged => {
                    waiting_logged = true;
                    let holder = self.observed.as_ref().and_then(|o| o.0.clone());
                    info!(lease = %self.name, holder = ?holder, "standing by: another replica leads");
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, lease = %self.name, "reading the leader Lease"),
            }
            tokio::time::sleep(self.retry_period).await;
        }
    }

    /// Renews the Lease until a renewal fails for longer than the renew deadline. A renewal that
    /// hangs (an API server that accepts and never answers) counts as failed when the deadline
    /// passes: the client's own timeout is minutes, far past the Lease's expiry.
    pub async fn hold(&mut self) -> LostLease {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.retry_period).await;
            let left = self.renew_deadline.saturating_sub(renewed.elapsed());
            match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => renewed = Instant::now(),
                Ok(Ok(false)) => warn!(lease = %self.name, "another replica holds the Lease"),
                Ok(Err(e)) => warn!(error = %e, lease = %self.name, "renewing the leader Lease"),
                Err(_) => {
                    warn!(lease = %self.name, "renewing the leader Lease: no answer before the renew deadline")
                }
            }
            if renewed.elapsed() > self.renew_deadline {
                warn!(lease = %self.name, "lost the leader Lease: stopping");
                return LostLease(self.name.clone());
            }
        }
    }

    /// Gives the Lease up at shutdown, so a standby takes over at once instead of after it expires.
    pub async fn release(&mut self) {
        let result = async {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else {
                return Ok(());
            };
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        .await;
        match result {
            Ok(()) => info!(lease = %self.name, "released the leader Lease"),
            Err(e) => warn!(error = %e, lease = %self.name, "releasing the leader Lease"),
        }
    }

    /// One round: `Ok(true)` when this process holds the Lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let current = self.api.get_opt(&self.name).await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let seen = (
            spec.and_then(|s| s.holder_identity.clone()),
            spec.and_then(|s| s.renew_time.clone()),
        );
        let held_for = match &self.observed {
            Some((holder, renew, since)) if (holder, renew) == (&seen.0, &seen.1) => {
                since.elapsed()
            }
            _ => {
                self.observed = Some((seen.0, seen.1, Instant::now()));
                Duration::ZERO
            }
        };
        let duration_seconds = self.lease_duration.as_secs().max(1) as i32;
        let result = match decide(spec, &self.identity, held_for, self.lease_duration) {
            Decision::Wait => return Ok(false),
            Decision::Create => {
                let mut lease = Lease::default();
                lease.metadata.name = Some(self.name.clone());
                lease.spec = Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                });
                self.api.create(&PostParams::default(), &lease).await
            }
            Decision::Take { transition } => {
                let mut lease = current.expect("decided on an existing Lease");
                let spec = lease.spec.get_or_insert_with(Default::default);
                if transition {
                    spec.acquire_time = Some(now.clone());
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.holder_identity = Some(self.identity.clone());
                spec.lease_duration_seconds = Some(duration_seconds);
                spec.renew_time = Some(now);
                // The resourceVersion read above makes this a compare-and-swap.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(lease) => {
                let spec = lease.spec.unwrap_or_default();
                self.observed = Some((spec.holder_identity, spec.renew_time, Instant::now()));
                Ok(true)
            }
            // Another candidate wrote first.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: Option<&str>, seconds: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: seconds,
            ..Default::default()
        }
    }

    #[test]
    fn decisions() {
        let secs = Duration::from_secs;
        let default = secs(15);
        let cases = [
            (None, secs(0), Decision::Create),
            (
                Some(held_by(None, Some(15))),
                secs(0),
                Decision::Take { transition: true },
            ),
            (
                Some(held_by(Some(""), Some(15))),
                secs(0),
                Decision::Take { transition: true },
            ),
            (
                Some(held_by(Some("me"), Some(15))),
                secs(0),
                Decision::Take { transition: false },
            ),
            (
                Some(held_by(Some("other"), Some(15))),
                secs(14),
                Decision::Wait,
            ),
            (
                Some(held_by(Some("other"), Some(15))),
                secs(15),
                Decision::Take { transition: true },
            ),
            // The holder's own duration counts, not ours.
            (
                Some(held_by(Some("other"), Some(60))),
                secs(30),
                Decision::Wait,
            ),
            (
                Some(held_by(Some("other"), Some(1))),
                secs(1),
                Decision::Take { transition: true },
            ),
            (Some(held_by(Some("other"), None)), secs(10), Decision::Wait),
            (
                Some(held_by(Some("other"), None)),
                secs(15),
                Decision::Take { transition: true },
            ),
        ];
        for (spec, held_for, want) in cases {
            assert_eq!(
                decide(spec.as_ref(), "me", held_for, default),
                want,
                "{spec:?} {held_for:?}"
            );
        }
    }
}
