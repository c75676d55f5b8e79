//! One reconcile as the controllers run it: under a deadline, in a tracing span, counted and
//! timed, a panic caught, a permission denial shown on the resource, and failures backed off.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Resource;
use kube::runtime::events::EventType;
use tracing::{Instrument, error, warn};

use super::{Context, Error, publish};
use crate::redact::{self, Redacted};

/// Longest one reconcile may take: it holds one of the kind's reconcile slots, which every
/// tenant's resources share (planning has a deadline of its own, shorter).
pub const RECONCILE_DEADLINE: Duration = Duration::from_secs(600);

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

/// Runs a reconcile within [`RECONCILE_DEADLINE`], in a tracing span naming the resource, counts
/// and times it, and makes an API permission denial visible on the resource (an Event), so that a
/// Role missing a verb shows where users look instead of only in the logs. A panic in the
/// reconcile is caught and becomes an error (counted, logged, requeued with backoff): one object's
/// reconcile never takes the operator down for the others.
pub async fn instrumented<K>(
    ctx: &Context,
    controller: &'static str,
    obj: &K,
    reconcile: impl Future<Output = Result<kube::runtime::controller::Action, Error>>,
) -> Result<kube::runtime::controller::Action, Error>
where
    K: Resource<DynamicType = ()>,
{
    let _timer = ctx.metrics.reconcile(controller);
    let span = tracing::info_span!(
        "reconcile",
        controller,
        namespace = %obj.meta().namespace.as_deref().unwrap_or_default(),
        name = %obj.meta().name.as_deref().unwrap_or_default(),
    );
    let bounded = async {
        tokio::time::timeout(RECONCILE_DEADLINE, reconcile)
            .await
            .unwrap_or(Err(Error::Deadline))
    };
    let result = panics_as_errors(bounded).instrument(span).await;
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
}
