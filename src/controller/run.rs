//! The operator's process: its HTTP endpoints, leader election, and every controller until it is
//! asked to stop.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tracing::error;

use super::http::{self, Readiness};
use super::leader::{LeaderElection, LostLease};
use super::metrics::Metrics;
use super::{Context, Settings, ingest, scan};

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
