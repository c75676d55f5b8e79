//! The signals that ask the process to stop: SIGTERM (Kubernetes ending a pod), SIGINT (a
//! terminal's Ctrl-C).

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::info;

/// `true` from the first SIGTERM or SIGINT on. The handlers are in place when this returns, so
/// that no signal kills the process before its work could stop cleanly.
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
        // Open until no one listens, so that every receiver keeps reading `true`.
        stop.closed().await;
    });
    Ok(stopping)
}
