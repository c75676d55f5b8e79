use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// The time every fixture is decided at: decisions stamp it, never the clock.
const NOW: Timestamp = Timestamp::constant(1_800_000_000, 0);
const STATE: &str = "6a09e667bb67ae853c6ef372a54ff53a510e527f9b05688c1f83d9ab5be0cd19";

fn status(phase: Phase, reason: &str, generation: Option<i64>) -> S3IngestStatus {
    let mut status = S3IngestStatus::default();
    set_phase(&mut status, phase, reason, "", generation);
    status
}

fn with_upload(mut status: S3IngestStatus, hashed_bytes: i64, state: &str) -> S3IngestStatus {
    status.upload_id = Some("upload-1".into());
    status.total_bytes = Some(1 << 30);
    status.resume_point = Some(ResumePoint {
        source_validator: "\"etag-1\"".into(),
        hashed_bytes,
        sha256_state: state.into(),
    });
    status
}

fn completing(sha256: &str, size: i64) -> S3IngestStatus {
    let mut status = with_upload(status(Phase::Running, COMPLETING, Some(1)), 64 << 20, STATE);
    status.checksum = Some(sha256.into());
    status.etag = Some("\"abc-16\"".into());
    status.total_bytes = Some(size);
    status
}

#[test]
fn lifecycle_copies_once_per_generation() {
    use Lifecycle::*;
    let cases = [
        // (phase, observed generation, expected) at generation 2
        (Phase::Pending, None, Transfer),
        (Phase::Pending, Some(2), Transfer),
        // Running in status but not in this process: a restart resumes it.
        (Phase::Running, Some(2), Transfer),
        (Phase::Succeeded, Some(2), Settled),
        (Phase::Succeeded, Some(1), RecordGeneration),
        (Phase::Failed, Some(2), Settled),
        (Phase::Failed, Some(1), Transfer),
    ];
    for (phase, observed, expected) in cases {
        let s = status(phase, "Any", observed);
        assert_eq!(
            lifecycle(&s, Some(2)),
            expected,
            "{phase:?} observed {observed:?}"
        );
    }
}

#[test]
fn a_fresh_ingest_starts_fresh() {
    let earlier = Earlier::of(&S3IngestStatus::default());
    assert_eq!(earlier.start(None), StartFrom::Fresh);
}

#[test]
fn an_upload_with_a_resume_point_resumes_there() {
    let earlier = Earlier::of(&with_upload(
        status(Phase::Running, "Interrupted", Some(1)),
        128 << 20,
        STATE,
    ));
    let StartFrom::Resume(resume) = earlier.start(None) else {
        panic!("expected a resume");
    };
    assert_eq!(resume.upload_id, "upload-1");
    assert_eq!(resume.validator, "\"etag-1\"");
    assert_eq!(resume.total_bytes, 1 << 30);
    assert_eq!(resume.checkpoint.length, 128 << 20);
    assert_eq!(resume.checkpoint.state_hex(), STATE);
}

#[test]
fn an_upload_nothing_tells_how_to_resume_is_aborted_first() {
    let running = || status(Phase::Running, "Transferring", Some(1));
    let mut no_point = with_upload(running(), 0, STATE);
    no_point.resume_point = None;
    let mut no_total = with_upload(running(), 64, STATE);
    no_total.total_bytes = None;
    let cases = [
        ("no resume point", no_point),
        ("unknown length", no_total),
        (
            "state not hex",
            with_upload(running(), 64, &"zz".repeat(32)),
        ),
        ("state too short", with_upload(running(), 64, &STATE[..60])),
        ("mid-block length", with_upload(running(), 65, STATE)),
        ("negative length", with_upload(running(), -64, STATE)),
    ];
    for (name, status) in cases {
        assert_eq!(
            Earlier::of(&status).start(None),
            StartFrom::AbortThenFresh("upload-1".into()),
            "{name}"
        );
    }
}

#[test]
fn an_upload_completed_before_the_restart_is_recorded_not_copied() {
    let earlier = Earlier::of(&completing("f00d", 5 << 20));
    let recorded = earlier.completing.clone().expect("a completion recorded");
    assert_eq!(recorded.sha256, "f00d");
    assert_eq!(recorded.size, 5 << 20);
    assert_eq!(
        earlier.start(Some((5 << 20, Some("\"abc-16\"".into())))),
        StartFrom::Completed(Completion {
            etag: Some("\"abc-16\"".into()),
            sha256: "f00d".into(),
            size: 5 << 20,
        })
    );
}

#[test]
fn a_completing_upload_s3_still_holds_resumes() {
    let earlier = Earlier::of(&completing("f00d", 1 << 30));
    assert!(matches!(earlier.start(None), StartFrom::Resume(_)));
}

#[test]
fn a_completion_counts_only_when_status_recorded_one() {
    // Not in reason Completing: whatever the object holds is not known to be this upload's.
    let mut transferring = completing("f00d", 1 << 30);
    transferring.conditions = status(Phase::Running, "Transferring", Some(1)).conditions;
    let earlier = Earlier::of(&transferring);
    assert_eq!(earlier.completing, None);
    assert!(matches!(
        earlier.start(Some((1 << 30, None))),
        StartFrom::Resume(_)
    ));
    // Completing without a checksum or size is not a completion either.
    let mut no_checksum = completing("f00d", 1 << 30);
    no_checksum.checksum = None;
    assert_eq!(Earlier::of(&no_checksum).completing, None);
    let mut negative = completing("f00d", -1);
    negative.total_bytes = Some(-1);
    assert_eq!(Earlier::of(&negative).completing, None);
}

#[test]
fn an_ingest_queued_by_the_memory_budget_keeps_its_upload() {
    let mut status = with_upload(
        status(Phase::Running, "Interrupted", Some(1)),
        64 << 20,
        STATE,
    );
    let why = waiting_for_memory(48 << 20, 32 << 20, 64 << 20);
    queued(&mut status, &why, Some(1));
    assert_eq!(status.phase, Phase::Pending);
    assert_eq!(ready(&status).reason, "Queued");
    assert_eq!(ready(&status).message, why);
    // A deletion or restart while queued still finds (and aborts or resumes) the upload.
    assert_eq!(status.upload_id.as_deref(), Some("upload-1"));
    assert!(matches!(
        Earlier::of(&status).start(None),
        StartFrom::Resume(_)
    ));
}

#[test]
fn waiting_for_memory_says_how_much() {
    assert_eq!(
        waiting_for_memory(48 << 20, 32 << 20, 64 << 20),
        "waiting for 50331648 bytes of the ingest memory budget (33554432 of 67108864 bytes in use)"
    );
}

fn progress(committed: u64, total: Option<u64>) -> Progress {
    Progress {
        upload_id: Some("upload-1".into()),
        total_bytes: total,
        bytes_read: committed + 10,
        bytes_committed: committed,
        parts_total: total.map(|t| t.div_ceil(8 << 20) as u32),
        parts_committed: (committed / (8 << 20)) as u32,
        part_size: 8 << 20,
        validator: Some("\"etag-1\"".into()),
        checkpoint: HashState::from_hex(committed, STATE),
        resumed_at: None,
    }
}

#[test]
fn progress_reports_percent_rate_eta_and_resume_point() {
    let mut status = S3IngestStatus::default();
    with_progress(&mut status, &progress(64 << 20, Some(256 << 20)), 2.0, NOW);
    assert_eq!(status.progress.as_deref(), Some("25.0%"));
    assert_eq!(status.bytes_transferred, Some(64 << 20));
    assert_eq!(status.bytes_read, Some((64 << 20) + 10));
    assert_eq!(status.bytes_per_second, Some(32 << 20));
    assert_eq!(status.eta_seconds, Some(6));
    let parts = status.parts.clone().expect("part counts");
    assert_eq!((parts.total, parts.completed), (Some(32), 8));
    let point = status.resume_point.clone().expect("a resume point");
    assert_eq!(point.hashed_bytes, 64 << 20);
    assert_eq!(point.sha256_state, STATE);
    assert_eq!(status.last_progress_time, Some(Time(NOW)));
}

#[test]
fn progress_of_an_unknown_length_has_no_percent_or_eta() {
    let mut status = S3IngestStatus::default();
    let mut p = progress(8 << 20, None);
    p.checkpoint = None;
    with_progress(&mut status, &p, 0.0, NOW);
    assert_eq!(status.progress, None);
    assert_eq!(status.eta_seconds, None);
    assert_eq!(status.total_bytes, None);
    // Nothing to resume from yet: no resume point (not a stale one either).
    assert_eq!(status.resume_point, None);
    // Elapsed zero does not divide by zero.
    assert!(status.bytes_per_second.is_some_and(|r| r > 0));
}

fn outcome(resumed_at: Option<u64>) -> Outcome {
    Outcome {
        size: 3 << 20,
        sha256: "beef".into(),
        etag: Some("\"e-1\"".into()),
        parts: 1,
        source_resumes: 0,
        resumed_at,
        tag_error: None,
    }
}

fn ready(status: &S3IngestStatus) -> &Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("a Ready condition")
}

#[test]
fn success_forgets_the_upload_and_records_the_object() {
    let before = with_upload(status(Phase::Running, "Transferring", Some(1)), 0, STATE);
    let Ended { status, event } =
        succeeded(before, &outcome(Some(1 << 20)), ("b", "k"), Some(1), NOW);
    let (EventType::Normal, "Succeeded", message) = (event.0, event.1.as_str(), event.2) else {
        panic!("a Normal Succeeded Event");
    };
    assert_eq!(status.phase, Phase::Succeeded);
    assert_eq!(status.upload_id, None);
    assert_eq!(status.resume_point, None);
    assert_eq!(status.checksum.as_deref(), Some("beef"));
    assert_eq!(status.etag.as_deref(), Some("\"e-1\""));
    assert_eq!(status.total_bytes, Some(3 << 20));
    assert_eq!(status.progress.as_deref(), Some("100.0%"));
    assert_eq!(status.completion_time, Some(Time(NOW)));
    assert_eq!(
        message,
        "copied 3145728 bytes in 1 parts to s3://b/k (sha256 beef), resumed at byte 1048576"
    );
    assert_eq!(ready(&status).status, "True");
    assert_eq!(ready(&status).message, message);
}

#[test]
fn a_completion_found_after_a_restart_succeeds_with_the_recorded_hash() {
    let completed = Completion {
        etag: Some("\"abc-16\"".into()),
        sha256: "f00d".into(),
        size: 7,
    };
    let Ended { status, event } =
        completed_before_restart(completing("f00d", 7), &completed, ("b", "k"), Some(1), NOW);
    let message = event.2;
    assert_eq!(event.1, "Succeeded");
    assert_eq!(status.phase, Phase::Succeeded);
    assert_eq!(status.upload_id, None);
    assert_eq!(status.bytes_transferred, Some(7));
    assert_eq!(status.etag.as_deref(), Some("\"abc-16\""));
    assert!(message.contains("the upload had completed when the operator restarted"));
    assert!(message.contains("sha256 f00d"));
}

#[test]
fn an_interrupted_ingest_keeps_its_upload_and_says_where_it_resumes() {
    let before = with_upload(
        status(Phase::Running, "Transferring", Some(1)),
        64 << 20,
        STATE,
    );
    let Ended { status, event } = interrupted(before, Some(1));
    let message = event.2;
    assert_eq!(
        (event.0, event.1.as_str()),
        (EventType::Normal, "Interrupted")
    );
    assert_eq!(status.phase, Phase::Running);
    assert_eq!(status.upload_id.as_deref(), Some("upload-1"));
    assert_eq!(ready(&status).reason, "Interrupted");
    assert!(ready(&status).message.contains("at byte 67108864"));
    assert!(message.contains("67108864"));
}

#[test]
fn a_failure_keeps_an_upload_nobody_could_abort() {
    let before = with_upload(status(Phase::Running, "Transferring", Some(1)), 0, STATE);
    let Ended { status, event } = failed(before, "S3Error", "access denied", Some(1), NOW);
    assert_eq!(
        event,
        (EventType::Warning, "S3Error".into(), "access denied".into())
    );
    assert_eq!(status.phase, Phase::Failed);
    assert_eq!(status.upload_id.as_deref(), Some("upload-1"));
    assert_eq!(status.eta_seconds, None);
    assert_eq!(status.completion_time, Some(Time(NOW)));
    assert_eq!(ready(&status).reason, "S3Error");
    assert_eq!(ready(&status).status, "False");
}
