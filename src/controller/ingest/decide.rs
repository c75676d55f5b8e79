//! The ingest controller's decisions, as pure functions of the status it observed: whether to start
//! a transfer, where an earlier run's upload leaves it, and each status it writes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;

use crate::api::Phase;
use crate::api::ingest::{PartCounts, ResumePoint, S3IngestStatus};
use crate::controller::set_phase;
use crate::ingest::{Completion, HashState, Outcome, Progress, Resume};

/// Reason of an ingest between recording its completion and completing its upload.
pub(super) const COMPLETING: &str = "Completing";

/// How a transfer ended: the status to write last, and the Event that says it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Ended {
    pub status: S3IngestStatus,
    pub event: (EventType, String, String),
}

impl Ended {
    fn new(status: S3IngestStatus, type_: EventType, reason: &str, message: String) -> Ended {
        Ended {
            status,
            event: (type_, reason.to_string(), message),
        }
    }
}

/// What a reconcile does with an ingest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lifecycle {
    /// Done (or failed) under its spec.
    Settled,
    /// Succeeded under an earlier generation (its labels changed, say): say so, copy nothing.
    RecordGeneration,
    /// Start (or resume) its transfer.
    Transfer,
}

/// Done is done: a restart or a re-apply (GitOps) never copies again; a failure stays until the
/// spec changes.
pub(super) fn lifecycle(status: &S3IngestStatus, generation: Option<i64>) -> Lifecycle {
    let settled = status.observed_generation == generation;
    match status.phase {
        Phase::Succeeded if settled => Lifecycle::Settled,
        Phase::Succeeded => Lifecycle::RecordGeneration,
        Phase::Failed if settled => Lifecycle::Settled,
        _ => Lifecycle::Transfer,
    }
}

/// What an earlier run left in status: an upload to continue, abort, or recognise as completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Earlier {
    pub upload_id: Option<String>,
    resume_point: Option<ResumePoint>,
    pub total_bytes: Option<u64>,
    /// Recorded just before CompleteMultipartUpload (reason Completing).
    pub completing: Option<Completion>,
}

/// Where a transfer starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum StartFrom {
    /// The earlier upload completed into the object (its size and ETag as S3 has them, its
    /// SHA-256 as recorded): record it, copy nothing.
    Completed(Completion),
    /// Continue the earlier upload from the parts S3 holds.
    Resume(Resume),
    /// Abort the earlier upload (nothing tells where to resume it), then start over.
    AbortThenFresh(String),
    Fresh,
}

impl Earlier {
    pub(super) fn of(status: &S3IngestStatus) -> Earlier {
        let reason = status.conditions.first().map(|c| c.reason.as_str());
        let total_bytes = status.total_bytes.and_then(|t| u64::try_from(t).ok());
        let completing = match (reason, &status.checksum, total_bytes) {
            (Some(COMPLETING), Some(sha256), Some(size)) => Some(Completion {
                etag: status.etag.clone(),
                sha256: sha256.clone(),
                size,
            }),
            _ => None,
        };
        Earlier {
            upload_id: status.upload_id.clone(),
            resume_point: status.resume_point.clone(),
            total_bytes,
            completing,
        }
    }

    /// Where to start, given whether the upload recorded as completing turned out completed into
    /// the object (its size and ETag, when it did).
    pub(super) fn start(self, completed: Option<(u64, Option<String>)>) -> StartFrom {
        if let (Some((size, etag)), Some(completing)) = (completed, &self.completing) {
            return StartFrom::Completed(Completion {
                etag,
                sha256: completing.sha256.clone(),
                size,
            });
        }
        let Some(upload_id) = self.upload_id else {
            return StartFrom::Fresh;
        };
        let resume = self
            .resume_point
            .zip(self.total_bytes)
            .and_then(|(point, total)| {
                let hashed = u64::try_from(point.hashed_bytes).ok()?;
                let checkpoint = HashState::from_hex(hashed, &point.sha256_state)?;
                Some(Resume {
                    upload_id: upload_id.clone(),
                    validator: point.source_validator,
                    total_bytes: total,
                    checkpoint,
                })
            });
        match resume {
            Some(resume) => StartFrom::Resume(resume),
            None => StartFrom::AbortThenFresh(upload_id),
        }
    }
}

/// The status of an ingest waiting its turn (for memory, a slot, or its inputs): what an earlier
/// run left (its upload id, where to resume) stays, so that a deletion or a restart meanwhile
/// still finds the upload.
pub(super) fn queued(status: &mut S3IngestStatus, why: &str, generation: Option<i64>) {
    set_phase(status, Phase::Pending, "Queued", why, generation);
}

/// Why an ingest waits for memory, as status says it.
pub(super) fn waiting_for_memory(need: u64, in_use: u64, total: u64) -> String {
    format!(
        "waiting for {need} bytes of the ingest memory budget ({in_use} of {total} bytes in use)"
    )
}

/// `status` with the engine's progress after `elapsed` seconds, as of `now`.
pub(super) fn with_progress(
    status: &mut S3IngestStatus,
    p: &Progress,
    elapsed: f64,
    now: Timestamp,
) {
    let rate = (p.bytes_committed as f64 / elapsed.max(0.001)) as i64;
    status.total_bytes = p.total_bytes.map(|t| t as i64);
    status.bytes_read = Some(p.bytes_read as i64);
    status.bytes_transferred = Some(p.bytes_committed as i64);
    status.part_size = Some(p.part_size as i64);
    status.parts = Some(PartCounts {
        total: p.parts_total.map(|t| t as i32),
        completed: p.parts_committed as i32,
    });
    status.progress = p
        .total_bytes
        .filter(|t| *t > 0)
        .map(|t| format!("{:.1}%", p.bytes_committed as f64 * 100.0 / t as f64));
    status.bytes_per_second = Some(rate);
    status.eta_seconds = p
        .total_bytes
        .filter(|_| rate > 0)
        .map(|t| (t.saturating_sub(p.bytes_committed) as i64) / rate.max(1));
    status.last_progress_time = Some(Time(now));
    if let (Some(validator), Some(checkpoint)) = (&p.validator, &p.checkpoint) {
        status.resume_point = Some(ResumePoint {
            source_validator: validator.clone(),
            hashed_bytes: checkpoint.length as i64,
            sha256_state: checkpoint.state_hex(),
        });
    }
}

/// Done: the object, its size, checksum and ETag; no upload left to track.
fn done(
    status: &mut S3IngestStatus,
    (size, sha256, etag): (u64, &str, Option<String>),
    now: Timestamp,
) {
    status.upload_id = None;
    status.resume_point = None;
    status.checksum = Some(sha256.to_string());
    status.etag = etag;
    status.total_bytes = Some(size as i64);
    status.bytes_transferred = Some(size as i64);
    status.progress = Some("100.0%".into());
    status.eta_seconds = None;
    status.completion_time = Some(Time(now));
}

/// An ingest its engine finished.
pub(super) fn succeeded(
    mut status: S3IngestStatus,
    outcome: &Outcome,
    (bucket, key): (&str, &str),
    generation: Option<i64>,
    now: Timestamp,
) -> Ended {
    done(
        &mut status,
        (outcome.size, &outcome.sha256, outcome.etag.clone()),
        now,
    );
    let resumed = outcome
        .resumed_at
        .map(|at| format!(", resumed at byte {at}"))
        .unwrap_or_default();
    let message = format!(
        "copied {} bytes in {} parts to s3://{bucket}/{key} (sha256 {}){resumed}",
        outcome.size, outcome.parts, outcome.sha256
    );
    success(status, message, generation)
}

/// `status` as Succeeded with `message`, which its Event says too.
fn success(mut status: S3IngestStatus, message: String, generation: Option<i64>) -> Ended {
    set_phase(
        &mut status,
        Phase::Succeeded,
        "Succeeded",
        &message,
        generation,
    );
    Ended::new(status, EventType::Normal, "Succeeded", message)
}

/// An ingest whose upload a restart found completed into the object.
pub(super) fn completed_before_restart(
    mut status: S3IngestStatus,
    completed: &Completion,
    (bucket, key): (&str, &str),
    generation: Option<i64>,
    now: Timestamp,
) -> Ended {
    let Completion { etag, sha256, size } = completed;
    done(&mut status, (*size, sha256, etag.clone()), now);
    let message = format!(
        "copied {size} bytes to s3://{bucket}/{key} (sha256 {sha256}); the upload had completed when the operator restarted"
    );
    success(status, message, generation)
}

/// An ingest this process stops streaming (SIGTERM): the upload stays, and status says where the
/// next process resumes it.
pub(super) fn interrupted(mut status: S3IngestStatus, generation: Option<i64>) -> Ended {
    let at = status.resume_point.as_ref().map_or(0, |p| p.hashed_bytes);
    set_phase(
        &mut status,
        Phase::Running,
        "Interrupted",
        &format!("the operator stopped; the next one resumes the upload at byte {at}"),
        generation,
    );
    let message = format!("the operator stopped at byte {at}; the next one resumes there");
    Ended::new(status, EventType::Normal, "Interrupted", message)
}

/// A failed ingest. An upload id still in its status is one nobody could abort yet (say, its
/// credentials are gone): it stays recorded for the finalizer.
pub(super) fn failed(
    mut status: S3IngestStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Ended {
    status.completion_time = Some(Time(now));
    status.eta_seconds = None;
    set_phase(&mut status, Phase::Failed, reason, message, generation);
    Ended::new(status, EventType::Warning, reason, message.to_string())
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
