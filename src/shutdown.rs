//! The signals that ask the process to stop: SIGTERM (Kubernetes ending a pod), SIGINT (a
//! terminal's Ctrl-C).

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::info;

/// `true` from the first SIGTERM or SIGINT on. The handlers are in place when this returns, so
/// that no signal kills the process before its work could stop cleanly. A second signal ends the
/// process at once (exit 130), as a second Ctrl-C does elsewhere.
pub fn on_signal() -> std::io::Result<watch::Receiver<bool>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (stop, stopping) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        info!("asked to stop");
        let _ = stop.send(true);
        // `stop` lives on meanwhile, so that every receiver keeps reading `true`.
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        info!("asked again: stopping now");
        std::process::exit(130);
    });
    Ok(stopping)
}

/// Asks running work to stop: an ingest or a chunk writing rows then aborts its multipart upload,
/// so that a stopped process leaves no upload behind.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Stops once `stopping` holds `true`.
    pub fn on(stopping: watch::Receiver<bool>) -> Self {
        Self(stopping)
    }

    /// A stop that never comes.
    pub fn never() -> Self {
        Self(watch::channel(false).1)
    }

    /// Whether a stop has been asked for by now.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once a stop is asked for (never, when no one can ask any more).
    pub async fn requested(&mut self) {
        if self.0.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
