//! The errors of a reconcile, each with a fixed metric label.

use thiserror::Error;

use super::reconcile::RECONCILE_DEADLINE;

/// Errors of a reconcile; each variant has a fixed metric label.
#[derive(Debug, Error)]
pub enum Error {
    /// A Kubernetes API request failed (label `kube`; a 403 also publishes a Forbidden Event).
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing the finalizer failed, or the apply or cleanup it ran did (labelled as
    /// that inner error, else `finalizer`).
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// Aborting a deleted ingest's multipart upload failed (label `cleanup`); retried.
    #[error("S3 cleanup: {0}")]
    Cleanup(#[source] crate::ingest::IngestError),
    /// A scan's S3 request failed in a way a retry may fix (planning, chunk reports, outputs,
    /// manifest), or its checkpoint is unreadable (label `scan_s3`).
    #[error("S3: {0}")]
    Scan(#[source] crate::scan::ScanError),
    /// An input of the resource could not be had for now (its identity provider did not
    /// answer; label `input`); retried.
    #[error("{0}")]
    Input(#[source] super::InputError),
    /// This many Jobs of a scan being deleted or restarted still run: its uploads are aborted
    /// only once they are gone (label `jobs_remaining`).
    #[error("{0} chunk Jobs of a deleted scan still running; waiting for them before cleaning up")]
    JobsRemaining(usize),
    /// The reconcile panicked, with the panic's message (label `panic`); after
    /// `PANICS_BEFORE_FAILED` in a row the resource ends as Failed (InternalError).
    #[error("the reconcile panicked: {0}")]
    Panicked(String),
    /// The reconcile ran past [`RECONCILE_DEADLINE`] (10 minutes) and was dropped (label
    /// `deadline`).
    #[error("the reconcile took longer than {} s", RECONCILE_DEADLINE.as_secs())]
    Deadline,
}

impl Error {
    /// The `reason` label this error counts under in `s3flow_reconcile_errors_total`.
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
            Self::Input(_) => "input",
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
