//! The errors of a reconcile, each with a fixed metric label.

use thiserror::Error;

use super::reconcile::RECONCILE_DEADLINE;

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
    pub(crate) fn forbidden(&self) -> Option<&str> {
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
