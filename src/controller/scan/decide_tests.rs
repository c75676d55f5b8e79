//! Decisions of the scan controller from fixtures: observations built here, actions asserted.

use super::*;
use crate::scan::text::split::{ChunkSplit, STATES};
use crate::scan::value::Partial;
use crate::scan::{InputFormat, Output, OutputFormat};

const CSV: InputFormat = InputFormat::Csv {
    delimiter: b',',
    quote: b'"',
    header: true,
};
const CHUNK: u64 = 10;
/// The time every fixture is observed at: decisions stamp it, never the clock.
const NOW: Timestamp = Timestamp::constant(1_800_000_000, 0);
const DATA_START: u64 = 4;

fn layout(chunks: u32, format: InputFormat) -> Layout {
    Layout {
        object: crate::scan::ObjectVersion {
            bucket: "data".into(),
            key: "big.csv".into(),
            size: DATA_START + CHUNK * u64::from(chunks),
            etag: "\"v1\"".into(),
            modified: None,
        },
        format,
        columns: vec!["a".into(), "b".into()],
        data_start: DATA_START,
        chunk_size: CHUNK,
        compression: crate::scan::Compression::None,
        max_record_size: 1 << 20,
        parquet: None,
        joined: Default::default(),
        plan: None,
        prefetched: Default::default(),
    }
}

/// `sql` over `layout` as planning leaves it: the compiled query, the checkpoint and the status.
pub(in crate::controller::scan) fn planned_with(
    sql: &str,
    layout: &Layout,
) -> (Query, Bookkeeping, S3ParallelScanStatus) {
    let query = crate::scan::sql::compile(sql, &layout.sql_columns()).unwrap();
    let checkpoint = Bookkeeping::new(query.empty_partials(), layout, None);
    let (status, _) = planned(
        S3ParallelScanStatus::default(),
        Some(1),
        layout,
        &checkpoint,
        NOW,
    );
    (query, checkpoint, status)
}

/// A running scan of `chunks` chunks, planned, with no Job yet.
fn running(sql: &str, chunks: u32, format: InputFormat) -> (Running, Bookkeeping) {
    let layout = layout(chunks, format);
    let (query, checkpoint, status) = planned_with(sql, &layout);
    let state = Running {
        generation: Some(1),
        status,
        layout,
        query,
        work: Work::Query {
            sql: sql.into(),
            output: None,
        },
        run: "uid-1".into(),
        containers: false,
        has_on_complete: false,
        parallelism: 2,
        jobs: vec![],
        reports: BTreeMap::new(),
        outputs: BTreeMap::new(),
        now: NOW,
    };
    (state, checkpoint)
}

fn count(chunks: u32) -> (Running, Bookkeeping) {
    running(
        "SELECT COUNT(*) FROM S3Object",
        chunks,
        InputFormat::JsonLines,
    )
}

fn name(index: u32, state: Option<State>) -> String {
    match state {
        None => format!("scan-uid-1-c{index}"),
        Some(state) => format!("scan-uid-1-c{index}-{}", state.code().to_ascii_lowercase()),
    }
}

fn job(role: Role, index: u32, state: Option<State>, outcome: Outcome) -> ChunkJob {
    let name = match role {
        Role::Scan => name(index, state),
        Role::Process => format!("scan-uid-1-p{index}"),
        Role::OnComplete => "scan-uid-1-done".into(),
        Role::Cut => format!("scan-uid-1-c{index}-cut"),
    };
    ChunkJob {
        uid: format!("uid-of-{name}"),
        name,
        role,
        index,
        state,
        outcome,
    }
}

/// The report a genuine chunk Job would give for `index`, run from `assumed`, with `records`
/// records each counted.
fn report(state: &Running, index: u32, assumed: Option<State>, records: u64) -> ChunkReport {
    let task = state.task(index, assumed, state.work.clone());
    let (start, end) = state.layout.range(index);
    let mut partials = state.query.empty_partials();
    for partial in &mut partials {
        if let Partial::Count(n) = partial {
            *n = records;
        }
    }
    let mut first_record = [None; STATES];
    first_record[State::RecordEnd as usize] = Some(0);
    ChunkReport {
        index,
        range: [start, end.min(state.layout.object.size)],
        fingerprint: task.fingerprint(),
        assumed: assumed.unwrap_or(State::RecordEnd),
        split: ChunkSplit {
            end: [State::RecordEnd; STATES],
            first_record,
        },
        records,
        bytes: end.min(state.layout.object.size) - start,
        rows: 0,
        partials,
        part: None,
        bad_record: None,
        row_groups: None,
        objects: 0,
        skipped: Default::default(),
        pieces: Vec::new(),
        continues: false,
    }
}

/// The chunk `report` names finished with it.
fn finished(state: &mut Running, report: ChunkReport) {
    finished_as(state, report.index, report);
}

/// Chunk `index`'s Job finished with `report` (which may name another chunk).
fn finished_as(state: &mut Running, index: u32, report: ChunkReport) {
    let job = job(Role::Scan, index, None, Outcome::Succeeded);
    state
        .reports
        .insert(job.name.clone(), Report::Read(Box::new(report)));
    state.jobs.push(job);
}

fn fail_of(decision: Decision) -> (String, String, S3ParallelScanStatus) {
    match decision.next {
        Next::Fail {
            reason,
            message,
            status,
        } => (reason, message, *status),
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn written(decision: &Decision) -> &S3ParallelScanStatus {
    decision.status.as_ref().expect("a status write")
}

fn checkpoint_of(decision: &Decision) -> Bookkeeping {
    Bookkeeping::of(written(decision)).expect("a checkpoint in status")
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

fn status(phase: Phase, observed: Option<i64>, planned: bool) -> S3ParallelScanStatus {
    S3ParallelScanStatus {
        phase,
        observed_generation: observed,
        total_chunks: planned.then_some(3),
        ..Default::default()
    }
}

#[test]
fn a_finished_scan_under_its_spec_is_settled() {
    for phase in [Phase::Succeeded, Phase::Failed] {
        assert_eq!(
            lifecycle(&status(phase, Some(2), true), Some(2), 0),
            Lifecycle::Settled
        );
    }
}

#[test]
fn a_spec_change_restarts_a_finished_listing_or_planned_scan() {
    assert_eq!(
        lifecycle(&status(Phase::Succeeded, Some(1), true), Some(2), 0),
        Lifecycle::Restart
    );
    assert_eq!(
        lifecycle(&status(Phase::Failed, Some(1), false), Some(2), 0),
        Lifecycle::Restart
    );
    // Mid-scan: planned under generation 1, the spec is now generation 2.
    assert_eq!(
        lifecycle(&status(Phase::Running, Some(1), true), Some(2), 4),
        Lifecycle::Restart
    );
    // Mid-listing of many objects: its chunks were packed under generation 1.
    let listing = S3ParallelScanStatus {
        listing: Some(Default::default()),
        ..status(Phase::Pending, Some(1), false)
    };
    assert_eq!(lifecycle(&listing, Some(2), 0), Lifecycle::Restart);
    assert_eq!(lifecycle(&listing, Some(1), 0), Lifecycle::Run);
    let restarted = restarted(Some(2));
    assert_eq!(restarted.phase, Phase::Pending);
    assert_eq!(restarted.total_chunks, None);
    assert_eq!(restarted.conditions[0].reason, "Restarting");
    assert_eq!(restarted.observed_generation, Some(2));
}

#[test]
fn jobs_of_an_earlier_run_go_before_planning() {
    assert_eq!(
        lifecycle(&status(Phase::Pending, Some(2), false), Some(2), 3),
        Lifecycle::ClearOldJobs
    );
    assert_eq!(
        lifecycle(&status(Phase::Pending, Some(2), false), Some(2), 0),
        Lifecycle::Run
    );
    assert_eq!(
        lifecycle(&status(Phase::Running, Some(2), true), Some(2), 3),
        Lifecycle::Run
    );
    assert_eq!(
        lifecycle(&S3ParallelScanStatus::default(), Some(1), 0),
        Lifecycle::Run
    );
}

#[test]
fn waiting_for_an_ingest_writes_status_once_per_message() {
    let first = waiting(
        S3ParallelScanStatus::default(),
        Some(1),
        "waiting for S3Ingest \"a\"",
    );
    let status = written(&first).clone();
    assert_eq!(status.phase, Phase::Pending);
    assert_eq!(status.conditions[0].reason, "WaitingForIngest");
    assert_eq!(first.next, Next::Requeue(Duration::from_secs(3)));
    let again = waiting(status.clone(), Some(1), "waiting for S3Ingest \"a\"");
    assert_eq!(again.status, None);
    let changed = waiting(status, Some(1), "waiting for S3Ingest \"a\" to succeed");
    assert!(changed.status.is_some());
}

// ---------------------------------------------------------------------------------------------
// Planning and status strings

#[test]
fn first_planning_records_the_plan_and_starts_parallelism_chunks() {
    let (state, checkpoint) = count(5);
    let status = &state.status;
    assert_eq!(status.total_chunks, Some(5));
    assert_eq!(status.header, vec!["a", "b"]);
    assert_eq!(status.conditions[0].reason, "Scanning");
    assert_eq!(status.conditions[0].message, "5 chunks of 10 bytes");
    let decision = run(&state, checkpoint);
    assert_eq!(
        decision.create,
        vec![
            NewJob::Scan {
                index: 0,
                state: None
            },
            NewJob::Scan {
                index: 1,
                state: None
            }
        ]
    );
    assert_eq!(decision.next, Next::Requeue(Duration::from_secs(60)));
    let counts = written(&decision).chunks.clone().unwrap();
    assert_eq!(
        (counts.pending, counts.running, counts.succeeded),
        (3, 2, 0)
    );
    // Uploads to abort on failure lie below the highest chunk started.
    assert_eq!(checkpoint_of(&decision).started, 2);
    assert_eq!(written(&decision).progress.as_deref(), Some("0/5"));
}

#[test]
fn status_shows_long_headers_and_values_cut_the_checkpoint_keeps_them() {
    let long = "x".repeat(5000);
    let shown = shown_header(&[long.clone(), "b".into()]);
    assert_eq!(shown[0].len(), STATUS_TEXT_LIMIT);
    assert!(shown[0].ends_with('…'));
    let many: Vec<String> = (0..2000).map(|i| format!("column_{i}")).collect();
    let shown = shown_header(&many);
    assert!(shown.iter().map(String::len).sum::<usize>() <= HEADER_SHOWN + 32);
    assert!(
        shown.last().unwrap().contains("more)"),
        "{:?}",
        shown.last()
    );
    let result = serde_json::Map::from_iter([
        (
            "MAX(s.a)".to_string(),
            serde_json::Value::String(long.clone()),
        ),
        ("n".to_string(), 3.into()),
    ]);
    let shown = shown_result(&result);
    assert_eq!(shown["MAX(s.a)"].as_str().unwrap().len(), STATUS_TEXT_LIMIT);
    assert_eq!(shown["n"], 3);
    let mut layout = layout(1, CSV);
    layout.columns = vec![long.clone()];
    let checkpoint = Bookkeeping::new(vec![], &layout, None);
    let (status, _) = planned(
        S3ParallelScanStatus::default(),
        Some(1),
        &layout,
        &checkpoint,
        NOW,
    );
    assert_eq!(Bookkeeping::of(&status).unwrap().columns, vec![long]);
}

#[test]
fn a_scan_planned_now_records_its_plan_and_says_so_once() {
    let (mut state, checkpoint) = count(5);
    state.status = S3ParallelScanStatus::default();
    let decision = super::running(&mut state, checkpoint.clone(), true);
    let status = written(&decision);
    assert_eq!(status.total_chunks, Some(5));
    assert_eq!(status.start_time, Some(Time(NOW)));
    assert_eq!(status.phase, Phase::Running);
    match decision.events.as_slice() {
        [(EventType::Normal, "Planned", message)] => {
            assert_eq!(message, "5 chunks of 10 bytes")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        decision.create.len(),
        2,
        "parallelism 2: {:?}",
        decision.create
    );
    // Planned before: the same steps, no second Planned Event.
    let mut again = state;
    let decision = super::running(&mut again, checkpoint, false);
    assert!(decision.events.is_empty(), "{:?}", decision.events);
    assert_eq!(decision.create.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Accepting chunks

#[test]
fn finished_chunks_are_accepted_in_order_and_the_next_started() {
    let (mut state, checkpoint) = count(5);
    let r0 = report(&state, 0, None, 3);
    finished(&mut state, r0);
    state.jobs.push(job(Role::Scan, 1, None, Outcome::Running));
    let decision = run(&state, checkpoint);
    let checkpoint = checkpoint_of(&decision);
    assert_eq!(checkpoint.verifier.next, 1);
    assert_eq!(checkpoint.verifier.records, 3);
    assert_eq!(decision.delete, vec![name(0, None)]);
    assert_eq!(
        decision.create,
        vec![NewJob::Scan {
            index: 2,
            state: None
        }]
    );
    assert_eq!(written(&decision).records_processed, Some(3));
    assert_eq!(written(&decision).succeeded_chunks.as_deref(), Some("0"));
}

#[test]
fn a_chunk_done_before_its_predecessor_waits_for_its_turn() {
    let (mut state, checkpoint) = count(3);
    state.jobs.push(job(Role::Scan, 0, None, Outcome::Running));
    let r1 = report(&state, 1, None, 4);
    finished(&mut state, r1);
    let decision = run(&state, checkpoint);
    assert_eq!(checkpoint_of(&decision).verifier.next, 0);
    assert!(
        decision.delete.is_empty(),
        "nothing accepted, nothing deleted"
    );
    // Shown as succeeded while it waits; chunk 2 starts (one running, parallelism two).
    assert_eq!(written(&decision).succeeded_chunks.as_deref(), Some("1"));
    assert_eq!(
        decision.create,
        vec![NewJob::Scan {
            index: 2,
            state: None
        }]
    );
}

#[test]
fn at_most_parallelism_jobs_run() {
    let (mut state, checkpoint) = count(10);
    state.jobs.push(job(Role::Scan, 0, None, Outcome::Running));
    state.jobs.push(job(Role::Scan, 1, None, Outcome::Running));
    let decision = run(&state, checkpoint);
    assert!(decision.create.is_empty());
    assert_eq!(written(&decision).chunks.as_ref().unwrap().running, 2);
}

#[test]
fn finished_chunks_wait_in_a_bounded_window() {
    let (mut state, checkpoint) = count(100);
    state.parallelism = 1;
    state.jobs.push(job(Role::Scan, 0, None, Outcome::Running));
    for index in 1..16 {
        state
            .jobs
            .push(job(Role::Scan, index, None, Outcome::Succeeded));
    }
    // Chunk 0 holds everything up: 15 finished ones wait, and with chunk 0 running no new one
    // starts; the window (16 chunks at parallelism 1) is full anyway.
    let decision = run(&state, checkpoint);
    assert!(decision.create.is_empty(), "{:?}", decision.create);
}

#[test]
fn a_wrong_guess_runs_again_from_the_true_state() {
    let (mut state, mut checkpoint) = running("SELECT COUNT(*) FROM S3Object", 3, CSV);
    // Chunk 1 starts inside a quoted field: chunk 0 ended in InQuoted.
    checkpoint.verifier.next = 1;
    checkpoint.verifier.state = State::InQuoted;
    let mut guessed = report(&state, 1, None, 2);
    guessed.split.first_record[State::InQuoted as usize] = Some(7);
    finished(&mut state, guessed);
    let decision = run(&state, checkpoint.clone());
    assert_eq!(
        decision.create[0],
        NewJob::Scan {
            index: 1,
            state: Some(State::InQuoted)
        }
    );
    assert_eq!(decision.delete, vec![name(1, None)]);
    assert_eq!(checkpoint_of(&decision).verifier.next, 1);

    // The re-run finished: it wins over the guess, and is accepted.
    state.jobs.clear();
    state.reports.clear();
    let rerun = report(&state, 1, Some(State::InQuoted), 2);
    let rerun_job = job(Role::Scan, 1, Some(State::InQuoted), Outcome::Succeeded);
    state
        .reports
        .insert(rerun_job.name.clone(), Report::Read(Box::new(rerun)));
    state.jobs.push(rerun_job);
    let decision = run(&state, checkpoint);
    assert_eq!(checkpoint_of(&decision).verifier.next, 2);
    assert_eq!(decision.delete, vec![name(1, Some(State::InQuoted))]);
}

/// A way to forge a report, named.
type Forgery = (&'static str, fn(&mut ChunkReport));

#[test]
fn reports_that_do_not_answer_their_task_fail_the_scan_as_invalid() {
    let forgeries: Vec<Forgery> = vec![
        ("index", |r| r.index = 1),
        ("range", |r| r.range = [0, 1_000_000]),
        ("fingerprint", |r| r.fingerprint = "0000000000000000".into()),
        ("bytes", |r| r.bytes += 1),
        ("rows over records", |r| r.rows = r.records + 1),
        ("partial kind", |r| r.partials = vec![Partial::Min(None)]),
        ("partial count", |r| r.partials.clear()),
        ("foreign part", |r| {
            r.part = Some("someone-else/secret.csv".into())
        }),
        ("record start past the chunk", |r| {
            r.split.first_record[State::InField as usize] = Some(1 << 40)
        }),
        ("bad record elsewhere", |r| {
            r.bad_record = Some(crate::scan::chunk::BadRecord {
                offset: 1 << 40,
                message: "x".into(),
            })
        }),
        ("overflowing counts", |r| {
            r.records = u64::MAX;
            r.partials = vec![Partial::Count(u64::MAX)];
        }),
    ];
    for (what, forge) in forgeries {
        let (mut state, mut checkpoint) = count(3);
        checkpoint.verifier.records = 5;
        checkpoint.verifier.partials = vec![Partial::Count(5)];
        let mut forged = report(&state, 0, None, 2);
        forge(&mut forged);
        finished_as(&mut state, 0, forged);
        let decision = run(&state, checkpoint);
        let (reason, message, status) = fail_of(decision);
        assert_eq!(reason, "InvalidReport", "{what}: {message}");
        assert!(message.contains("chunk 0"), "{what}: {message}");
        assert_eq!(status.phase, Phase::Failed, "{what}");
        assert_eq!(status.failed_chunks.as_deref(), Some("0"), "{what}");
    }
}

#[test]
fn a_finished_job_without_a_readable_report_is_invalid() {
    let (mut state, checkpoint) = count(2);
    let finished_job = job(Role::Scan, 0, None, Outcome::Succeeded);
    state.reports.insert(
        finished_job.name.clone(),
        Report::Invalid("the Job succeeded without a readable report".into()),
    );
    state.jobs.push(finished_job);
    let (reason, message, _) = fail_of(run(&state, checkpoint));
    assert_eq!(reason, "InvalidReport");
    assert!(message.contains("without a readable report"), "{message}");
}

#[test]
fn a_bad_record_from_a_true_start_fails_as_bad_data() {
    let (mut state, checkpoint) = count(2);
    let mut bad = report(&state, 0, None, 2);
    bad.bad_record = Some(crate::scan::chunk::BadRecord {
        offset: DATA_START + 3,
        message: "\"oops\" is not a number".into(),
    });
    finished(&mut state, bad);
    let (reason, message, status) = fail_of(run(&state, checkpoint));
    assert_eq!(reason, "BadData");
    assert!(
        message.contains("chunk 0 (bytes 4-14) at byte 7"),
        "{message}"
    );
    assert_eq!(status.failed_chunks.as_deref(), Some("0"));
}

#[test]
fn scan_jobs_of_chunks_accepted_earlier_are_deleted() {
    // A restart came between the status write and the deletions: resume from the checkpoint.
    let (mut state, mut checkpoint) = count(6);
    checkpoint.verifier.next = 3;
    checkpoint.started = 4;
    state
        .jobs
        .push(job(Role::Scan, 1, None, Outcome::Succeeded));
    state
        .jobs
        .push(job(Role::Scan, 2, None, Outcome::Succeeded));
    state.jobs.push(job(Role::Scan, 3, None, Outcome::Running));
    let decision = run(&state, checkpoint);
    assert_eq!(decision.delete, vec![name(1, None), name(2, None)]);
    assert_eq!(
        decision.create,
        vec![NewJob::Scan {
            index: 4,
            state: None
        }]
    );
    assert_eq!(checkpoint_of(&decision).started, 5);
}

// ---------------------------------------------------------------------------------------------
// Failed chunks and refused pods

#[test]
fn a_chunk_failed_for_good_fails_the_scan_naming_its_range() {
    let (mut state, checkpoint) = count(4);
    state.jobs.push(job(
        Role::Scan,
        2,
        None,
        Outcome::Failed {
            reason: Some("BadData".into()),
            message: "bad data at byte 30".into(),
        },
    ));
    let (reason, message, status) = fail_of(run(&state, checkpoint.clone()));
    assert_eq!(reason, "BadData");
    assert!(
        message.contains("chunk 2 (bytes 24-34): bad data at byte 30"),
        "{message}"
    );
    assert_eq!(status.failed_chunks.as_deref(), Some("2"));

    // Without a worker's reason (retries used up, a killed node): ChunksFailed.
    let (mut state, _) = count(4);
    state.jobs.push(job(
        Role::Scan,
        1,
        None,
        Outcome::Failed {
            reason: None,
            message: "BackoffLimitExceeded".into(),
        },
    ));
    let (reason, _, _) = fail_of(run(&state, checkpoint));
    assert_eq!(reason, "ChunksFailed");
}

#[test]
fn a_reason_in_a_failure_message_is_not_taken_from_its_text() {
    // Only the worker's reason field says bad data; a message that merely starts so does not.
    let (mut state, checkpoint) = count(2);
    state.jobs.push(job(
        Role::Scan,
        0,
        None,
        Outcome::Failed {
            reason: Some("AccessDenied".into()),
            message: "bad data: pretending".into(),
        },
    ));
    assert_eq!(fail_of(run(&state, checkpoint)).0, "ChunksFailed");
}

#[test]
fn refused_pods_fail_the_scan_with_the_api_servers_reason() {
    let (mut state, checkpoint) = count(2);
    state.jobs.push(job(
        Role::Scan,
        0,
        None,
        Outcome::Refused("serviceaccount \"missing\" not found".into()),
    ));
    let (reason, message, _) = fail_of(run(&state, checkpoint));
    assert_eq!(reason, "PodsRefused");
    assert!(
        message.contains("serviceaccount \"missing\" not found"),
        "{message}"
    );
}

// ---------------------------------------------------------------------------------------------
// Container processors

fn containers(chunks: u32) -> (Running, Bookkeeping) {
    let (mut state, checkpoint) = count(chunks);
    state.containers = true;
    (state, checkpoint)
}

#[test]
fn an_accepted_chunk_is_processed_from_its_true_state() {
    let (mut state, checkpoint) = containers(2);
    let r0 = report(&state, 0, None, 3);
    finished(&mut state, r0);
    let decision = run(&state, checkpoint);
    assert!(decision.create.contains(&NewJob::Process {
        index: 0,
        state: State::RecordEnd
    }));
    // Accepted is not done: with containers a chunk succeeds once processed.
    assert_eq!(written(&decision).chunks.as_ref().unwrap().succeeded, 0);
}

#[test]
fn processed_chunks_are_recorded_with_their_output_then_finish() {
    let (mut state, mut checkpoint) = containers(2);
    checkpoint.verifier.next = 2;
    checkpoint.verifier.records = 6;
    checkpoint.processed = "0".into();
    state
        .jobs
        .push(job(Role::Process, 1, None, Outcome::Succeeded));
    state.outputs.insert(1, "1 3".into());
    let decision = run(&state, checkpoint);
    assert_eq!(decision.outputs, vec![(1, "1 3".to_string())]);
    assert_eq!(decision.delete, vec!["scan-uid-1-p1".to_string()]);
    assert_eq!(checkpoint_of(&decision).processed, "0-1");
    match &decision.next {
        Next::WriteManifest { result } => assert_eq!(result["chunks"], 2),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Finishing

fn all_accepted(sql: &str) -> (Running, Bookkeeping) {
    let (mut state, mut checkpoint) = running(sql, 2, InputFormat::JsonLines);
    for index in 0..2 {
        let r = report(&state, index, None, 2);
        let task = state.task(index, None, state.work.clone());
        assert!(matches!(
            checkpoint.verifier.offer(&r, &task),
            Verdict::Accepted
        ));
    }
    state.status.manifest = Some("s3://data/.s3flow/manifest.json".into());
    (state, checkpoint)
}

#[test]
fn every_chunk_in_writes_the_manifest_first() {
    let (state, checkpoint) = all_accepted("SELECT COUNT(*) AS n FROM S3Object");
    let decision = run(&state, checkpoint);
    match &decision.next {
        Next::WriteManifest { result } => assert_eq!(result["n"], 4),
        other => panic!("{other:?}"),
    }
    assert_eq!(written(&decision).progress.as_deref(), Some("2/2"));
}

#[test]
fn with_the_manifest_written_the_scan_succeeds() {
    let (state, mut checkpoint) = all_accepted("SELECT COUNT(*) AS n FROM S3Object");
    checkpoint.finished = true;
    let decision = run(&state, checkpoint);
    let [(EventType::Normal, "Succeeded", message)] = decision.events.as_slice() else {
        panic!("{:?}", decision.events);
    };
    match decision.next {
        Next::Succeed { status } => {
            assert_eq!(status.phase, Phase::Succeeded);
            assert_eq!(status.result.as_ref().unwrap()["n"], 4);
            assert_eq!(status.completion_time, Some(Time(NOW)));
            assert!(message.contains("4 records in 2 chunks"), "{message}");
            assert!(
                message.contains("s3://data/.s3flow/manifest.json"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn limit_caps_the_rows_in_the_result() {
    let (state, mut checkpoint) = all_accepted("SELECT * FROM S3Object LIMIT 3");
    checkpoint.verifier.rows = 4;
    match run(&state, checkpoint).next {
        Next::WriteManifest { result } => assert_eq!(result["rows"], 3),
        other => panic!("{other:?}"),
    }
}

#[test]
fn on_complete_runs_after_the_manifest_and_its_failure_fails_the_scan() {
    let (mut state, mut checkpoint) = all_accepted("SELECT COUNT(*) FROM S3Object");
    checkpoint.finished = true;
    state.has_on_complete = true;
    let decision = run(&state, checkpoint.clone());
    assert_eq!(decision.create, vec![NewJob::OnComplete]);
    assert_eq!(written(&decision).conditions[0].reason, "Completing");
    assert_eq!(decision.next, Next::Requeue(Duration::from_secs(60)));

    state
        .jobs
        .push(job(Role::OnComplete, 0, None, Outcome::Running));
    let decision = run(&state, checkpoint.clone());
    assert!(decision.create.is_empty());
    assert_eq!(decision.next, Next::Requeue(Duration::from_secs(60)));

    state.jobs[0].outcome = Outcome::Failed {
        reason: None,
        message: "exit 1".into(),
    };
    assert_eq!(
        fail_of(run(&state, checkpoint.clone())).0,
        "OnCompleteFailed"
    );

    state.jobs[0].outcome = Outcome::Succeeded;
    assert!(matches!(run(&state, checkpoint).next, Next::Succeed { .. }));
}

#[test]
fn an_object_ending_inside_a_quoted_field_is_malformed() {
    let (state, mut checkpoint) = all_accepted("SELECT COUNT(*) FROM S3Object");
    checkpoint.verifier.state = State::InQuoted;
    checkpoint.verifier.last_with_record = Some(1);
    let (reason, message, _) = fail_of(run(&state, checkpoint));
    assert_eq!(reason, "MalformedRecord");
    assert!(message.contains("chunk 1"), "{message}");
}

#[test]
fn a_tampered_processed_list_cannot_grow_memory() {
    let (state, mut checkpoint) = containers(3);
    checkpoint.processed = "0-4294967295".into();
    // Read as nothing processed: the ranges name chunks the scan does not have.
    let decision = run(&state, checkpoint);
    assert_eq!(checkpoint_of(&decision).processed, "");
}

#[test]
fn row_output_chunks_name_only_their_own_part() {
    let (mut state, checkpoint) = count(2);
    let output = Output {
        bucket: "out".into(),
        prefix: "run/".into(),
        format: OutputFormat::JsonLines,
        scope: String::new(),
        first_part: None,
    };
    state.work = Work::Query {
        sql: "SELECT COUNT(*) FROM S3Object".into(),
        output: Some(output.clone()),
    };
    let mut own = report(&state, 0, None, 1);
    own.part = Some(output.part_key(0));
    finished(&mut state, own);
    let decision = run(&state, checkpoint);
    assert_eq!(checkpoint_of(&decision).verifier.next, 1);
}

#[test]
fn bookkeeping_that_is_not_the_operators_is_refused() {
    let (state, checkpoint) = count(4);
    assert_eq!(checkpoint.check(4), Ok(()));
    type Forgery = fn(&mut Bookkeeping);
    let forged: [(&str, Forgery); 4] = [
        ("next", |c| c.verifier.next = 4_000_000_000),
        ("started", |c| c.started = 5),
        ("last", |c| c.verifier.last_with_record = Some(3)),
        ("processed", |c| c.processed = "0-9".into()),
    ];
    for (what, forge) in forged {
        let mut bad = checkpoint.clone();
        forge(&mut bad);
        assert!(bad.check(state.layout.chunk_count()).is_err(), "{what}");
    }
}

/// A scan of 3 chunks writing rows with `LIMIT 5`, whose chunks found 3, 4 and 4 rows.
fn limited() -> (Running, Bookkeeping) {
    let (mut state, checkpoint) =
        running("SELECT * FROM S3Object LIMIT 5", 3, InputFormat::JsonLines);
    let output = Output {
        bucket: "out".into(),
        prefix: "run/".into(),
        format: OutputFormat::JsonLines,
        scope: "uid1".into(),
        first_part: None,
    };
    state.work = Work::Query {
        sql: "SELECT * FROM S3Object LIMIT 5".into(),
        output: Some(output.clone()),
    };
    for (index, rows) in [(0, 3), (1, 4), (2, 4)] {
        let mut report = report(&state, index, None, rows);
        report.rows = rows;
        report.part = Some(output.part_key(index));
        finished(&mut state, report);
    }
    (state, checkpoint)
}

#[test]
fn the_chunk_crossing_the_limit_runs_again_to_it_before_the_manifest() {
    let (mut state, checkpoint) = limited();
    let decision = run(&state, checkpoint);
    let checkpoint = checkpoint_of(&decision);
    let crossing = checkpoint.crossing.expect("a crossing chunk");
    assert_eq!(
        (crossing.index, crossing.keep, crossing.done),
        (1, 2, false)
    );
    assert_eq!(
        decision.create,
        vec![NewJob::Cut {
            index: 1,
            keep: 2,
            state: State::RecordEnd
        }]
    );
    assert!(matches!(decision.next, Next::Requeue(_)));

    // Its Cut Job ran: a report of more rows than it keeps fails the scan.
    state.status = written(&decision).clone();
    state.jobs.retain(|j| j.role != Role::Scan);
    state.reports.clear();
    let cut = job(Role::Cut, 1, None, Outcome::Succeeded);
    let Work::Query {
        output: Some(output),
        ..
    } = &state.work
    else {
        panic!("the scan writes rows");
    };
    let mut genuine = report(&state, 1, Some(State::RecordEnd), 4);
    genuine.rows = 2;
    genuine.part = Some(output.part_key(1));
    let mut too_many = genuine.clone();
    too_many.rows = 3;
    let with = |report: ChunkReport| {
        let mut state = state.clone();
        state.jobs.push(cut.clone());
        state
            .reports
            .insert(cut.name.clone(), Report::Read(Box::new(report)));
        run(&state, checkpoint.clone())
    };
    let (reason, message, _) = fail_of(with(too_many));
    assert_eq!(reason, "InvalidReport", "{message}");
    assert!(message.contains("keep its first 2 rows"), "{message}");
    // The genuine one: recorded as done, its Job goes, and the manifest comes next.
    let decision = with(genuine);
    assert!(checkpoint_of(&decision).crossing.is_some_and(|c| c.done));
    assert!(decision.delete.contains(&cut.name));
    assert!(matches!(decision.next, Next::WriteManifest { .. }));
}

#[test]
fn without_row_output_no_chunk_runs_again_for_the_limit() {
    let (mut state, checkpoint) = limited();
    state.work = Work::Query {
        sql: "SELECT * FROM S3Object LIMIT 5".into(),
        output: None,
    };
    state.reports.clear();
    state.jobs.clear();
    for index in 0..3 {
        let mut report = report(&state, index, None, 4);
        report.rows = 4;
        finished(&mut state, report);
    }
    let decision = run(&state, checkpoint);
    assert_eq!(checkpoint_of(&decision).crossing, None);
    assert!(matches!(decision.next, Next::WriteManifest { .. }));
}

#[test]
fn container_processors_start_at_most_parallelism_at_once() {
    let (mut state, checkpoint) = containers(6);
    for index in 0..6 {
        let report = report(&state, index, None, 1);
        finished(&mut state, report);
    }
    // Parallelism 2: two chunks accepted, two processors started; the others wait their turn.
    let decision = run(&state, checkpoint);
    let processors = decision
        .create
        .iter()
        .filter(|j| matches!(j, NewJob::Process { .. }))
        .count();
    assert_eq!(processors, 2);
    assert_eq!(checkpoint_of(&decision).verifier.next, 2);
}
