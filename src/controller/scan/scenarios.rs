//! The scan controller's reconcile, unchanged, against an in-memory API ([`FakeApi`]): what a
//! hostile tenant can do to its bookkeeping, its Jobs and its reports, in milliseconds and without
//! a cluster. (`tests/hostile_tenant.rs` does the same against the real operator and cluster.)

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::FINALIZER;
use super::decide::tests::planned_with;
use super::jobs::{Role, job_name};
use crate::address::AddressPolicy;
use crate::api::scan::{S3ParallelScan, S3ParallelScanStatus};
use crate::controller::fake::FakeApi;
use crate::controller::http::Readiness;
use crate::controller::metrics::Metrics;
use crate::controller::{Context, Scope, Settings};
use crate::ingest::{MemoryBudget, ThroughputFloor};
use crate::scan::text::split::{ChunkSplit, STATES};
use crate::scan::value::Partial;
use crate::scan::{ChunkReport, ChunkTask, InputFormat, Layout, State};
use crate::worker::{CONTAINER_WORKER, ENV_TASK};

const SCANS: &str = "/apis/s3flow.io/v1alpha1/namespaces/a/s3parallelscans";
const JOBS: &str = "/apis/batch/v1/namespaces/a/jobs";
const PODS: &str = "/api/v1/namespaces/a/pods";
const SECRETS: &str = "/api/v1/namespaces/a/secrets";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/a/events";
const UID: &str = "5c4a9e21-0000-4000-8000-000000000001";
const SQL: &str = "SELECT COUNT(*) FROM S3Object";
const CHUNK: u64 = 1024;

/// An operator of one namespace, `a`, whose API is `api`.
fn operator(api: &FakeApi) -> Arc<Context> {
    let settings = Settings {
        policy: Arc::new(AddressPolicy {
            allowed: vec!["127.0.0.0/8".parse().expect("a CIDR")],
            ..AddressPolicy::default()
        }),
        default_credentials_namespaces: vec![],
        identity: Default::default(),
        max_concurrent_ingests: 2,
        ingest_memory: MemoryBudget::new(64 << 20),
        stall_timeout: Duration::from_secs(60),
        source_floor: ThroughputFloor {
            min_bytes_per_second: 1024,
            window: Duration::from_secs(60),
        },
        allowed_images: vec![],
        status_interval: Duration::from_secs(5),
        worker_image: "s3flow:test".into(),
        scope: Scope::Namespaces(vec!["a".into()]),
        reconcile_concurrency: 4,
        reconcile_retries: 12,
        planning_deadline: Duration::from_secs(1),
        listing_slice: 100,
        leader: None,
    };
    let (stop, stopping) = tokio::sync::watch::channel(false);
    // Never asked to stop.
    std::mem::forget(stop);
    Context::new(
        api.client(),
        settings,
        Arc::new(Metrics::default()),
        Arc::new(Readiness::default()),
        stopping,
    )
}

/// The layout planning gives a JSON Lines object of `chunks` chunks of [`CHUNK`] bytes.
fn layout(chunks: u32) -> Layout {
    Layout {
        object: crate::scan::ObjectVersion {
            bucket: "data".into(),
            key: "big.jsonl".into(),
            size: CHUNK * u64::from(chunks),
            etag: "\"v1\"".into(),
            modified: None,
        },
        format: InputFormat::JsonLines,
        columns: vec![],
        data_start: 0,
        chunk_size: CHUNK,
        compression: crate::scan::Compression::None,
        max_record_size: 1 << 20,
        parquet: None,
        joined: Default::default(),
        plan: None,
        prefetched: Default::default(),
    }
}

/// Namespace `a` with the scan's credentials Secret and a COUNT(*) scan of `chunks` chunks, at most
/// `parallelism` at once, planned by an earlier reconcile (its status as planning wrote it).
fn planned_scan(api: &FakeApi, chunks: u32, parallelism: u32) -> S3ParallelScanStatus {
    let (_, _, status) = planned_with(SQL, &layout(chunks));
    new_scan(api, parallelism, "http://127.0.0.1:9", Some(&status));
    status
}

/// Namespace `a` with the scan's credentials Secret and a COUNT(*) scan of the object at
/// `endpoint`, with `status`.
fn new_scan(
    api: &FakeApi,
    parallelism: u32,
    endpoint: &str,
    status: Option<&S3ParallelScanStatus>,
) {
    api.insert(
        SECRETS,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s3", "namespace": "a",
                         "labels": {"s3flow.io/secret-type": "credentials"}},
            "stringData": {"AWS_ACCESS_KEY_ID": "tenant-a", "AWS_SECRET_ACCESS_KEY": "secret-a"},
        }),
    );
    api.insert(
        SCANS,
        json!({
            "apiVersion": "s3flow.io/v1alpha1", "kind": "S3ParallelScan",
            "metadata": {"name": "big", "namespace": "a", "uid": UID, "generation": 1,
                         "finalizers": [FINALIZER]},
            "spec": {
                "source": {"bucket": "data", "key": "big.jsonl", "endpoint": endpoint,
                           "forcePathStyle": true, "credentialsSecretRef": {"name": "s3"}},
                "format": {"jsonLines": {}},
                "chunking": {"chunkSize": CHUNK.to_string(), "maxRecordSize": "1Mi",
                             "parallelism": parallelism},
                "processor": {"sql": SQL},
            },
            "status": status,
        }),
    );
}

fn the_scan(api: &FakeApi) -> S3ParallelScan {
    serde_json::from_value(api.get(SCANS, "big").expect("the scan")).expect("a scan")
}

/// One reconcile of the scan as it is now.
async fn reconcile(api: &FakeApi, ctx: &Arc<Context>) {
    let scan = Arc::new(the_scan(api));
    if let Err(e) = super::reconcile(scan, ctx.clone()).await {
        panic!("the reconcile failed: {e}");
    }
}

fn phase_and_reason(api: &FakeApi) -> (String, String) {
    let status = the_scan(api).status.expect("a status");
    let reason = status
        .conditions
        .first()
        .map(|c| c.reason.clone())
        .unwrap_or_default();
    (format!("{:?}", status.phase), reason)
}

fn event_reasons(api: &FakeApi) -> Vec<String> {
    api.list(EVENTS)
        .iter()
        .filter_map(|e| e["reason"].as_str().map(String::from))
        .collect()
}

#[tokio::test]
async fn a_forged_checkpoint_fails_the_scan_before_anything_is_built_from_it() {
    let api = FakeApi::default();
    let ctx = operator(&api);
    let mut status = planned_scan(&api, 300, 2);
    let checkpoint = status.checkpoint.as_mut().expect("a checkpoint");
    // What anyone with `patch` on s3parallelscans/status could write: a set of 4e9 chunks.
    checkpoint["verifier"]["next"] = json!(4_000_000_000u64);
    api.update(SCANS, "big", |scan| scan["status"] = json!(status));

    reconcile(&api, &ctx).await;

    assert_eq!(
        phase_and_reason(&api),
        ("Failed".into(), "InvalidStatus".into())
    );
    assert!(event_reasons(&api).contains(&"InvalidStatus".to_string()));
    assert!(api.list(JOBS).is_empty(), "no Job runs for a forged plan");
}

#[tokio::test]
async fn a_planning_read_that_never_answers_fails_the_scan_at_its_deadline() {
    // An endpoint that takes connections and never answers them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let endpoint = format!("http://{}", listener.local_addr().expect("an address"));
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            held.push(connection);
        }
    });
    let api = FakeApi::default();
    let ctx = operator(&api);
    new_scan(&api, 2, &endpoint, None);

    let started = std::time::Instant::now();
    reconcile(&api, &ctx).await;

    // The operator's planning deadline is 1 s here (120 s by default).
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the reconcile took {took:?}"
    );
    assert_eq!(
        phase_and_reason(&api),
        ("Failed".into(), "SourceStalled".into())
    );
    holding.abort();
}

#[tokio::test]
async fn a_job_of_someone_else_under_a_chunk_jobs_name_fails_the_scan_and_stays() {
    let api = FakeApi::default();
    let ctx = operator(&api);
    planned_scan(&api, 300, 2);
    let taken = job_name(&the_scan(&api), Role::Scan, 0, None);
    let squatter = api.insert(
        JOBS,
        json!({"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": taken, "namespace": "a"}, "spec": {"template": {}}}),
    );

    reconcile(&api, &ctx).await;

    assert_eq!(
        phase_and_reason(&api),
        ("Failed".into(), "JobNameTaken".into())
    );
    assert!(event_reasons(&api).contains(&"JobNameTaken".to_string()));
    let jobs = api.list(JOBS);
    assert_eq!(jobs.len(), 1, "only the squatter: {jobs:?}");
    assert_eq!(jobs[0]["metadata"]["uid"], squatter["metadata"]["uid"]);
}

/// The report a genuine worker gives for `task`: every record of its range counted.
fn genuine_report(task: &ChunkTask, records: u64) -> ChunkReport {
    let (start, end) = task.layout.range(task.index);
    let mut first_record = [None; STATES];
    first_record[State::RecordEnd as usize] = Some(0);
    ChunkReport {
        index: task.index,
        range: [start, end],
        fingerprint: task.fingerprint(),
        assumed: task.start_state.unwrap_or(State::RecordEnd),
        split: ChunkSplit {
            end: [State::RecordEnd; STATES],
            first_record,
        },
        records,
        bytes: end - start,
        rows: 0,
        partials: vec![Partial::Count(records)],
        part: None,
        bad_record: None,
        row_groups: None,
        objects: 0,
        skipped: Default::default(),
        pieces: Vec::new(),
        continues: false,
    }
}

/// Every running chunk Job of the scan finishes, its worker's termination message a genuine
/// report padded to `message_bytes`.
fn workers_finish(api: &FakeApi, message_bytes: usize) {
    for job in api.list(JOBS) {
        let name = job["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let uid = job["metadata"]["uid"].clone();
        let worker = job["spec"]["template"]["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == CONTAINER_WORKER)
            .expect("a worker container");
        let task = worker["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == ENV_TASK)
            .and_then(|e| e["value"].as_str())
            .expect("the chunk's task");
        let task: ChunkTask = serde_json::from_str(task).expect("a task");
        let mut report = serde_json::to_value(genuine_report(&task, 7)).expect("a report");
        // `,"padding":""` is 13 bytes.
        let padding = message_bytes.saturating_sub(report.to_string().len() + 13);
        report["padding"] = json!("x".repeat(padding));
        assert_eq!(report.to_string().len(), message_bytes);
        api.insert(
            PODS,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{name}-pod"), "namespace": "a",
                    "labels": {"batch.kubernetes.io/job-name": name,
                               "batch.kubernetes.io/controller-uid": uid},
                    "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                                         "uid": uid, "controller": true}]},
                "spec": {"containers": []},
                "status": {"containerStatuses": [{
                    "name": CONTAINER_WORKER, "ready": false, "restartCount": 0,
                    "image": "s3flow:test", "imageID": "",
                    "state": {"terminated": {"exitCode": 0, "message": report.to_string(),
                                             "finishedAt": "2026-01-01T00:00:01Z"}},
                }]},
            }),
        );
        api.update(JOBS, &name, |job| {
            job["status"] = json!({"succeeded": 1, "conditions": [
                {"type": "Complete", "status": "True"}]});
        });
    }
}

fn accepted(api: &FakeApi) -> u64 {
    let status = the_scan(api).status.expect("a status");
    let checkpoint = status.checkpoint.expect("a checkpoint");
    checkpoint["verifier"]["next"].as_u64().expect("a count")
}

#[tokio::test]
async fn a_flood_of_large_reports_is_read_a_bounded_amount_per_reconcile() {
    let api = FakeApi::default();
    let ctx = operator(&api);
    planned_scan(&api, 300, 256);
    reconcile(&api, &ctx).await;
    assert_eq!(api.list(JOBS).len(), 256, "parallelism 256");

    // 256 reports of 64 KiB each (16 MiB): one reconcile reads 4 MiB of them.
    workers_finish(&api, 64 << 10);
    let before = api.requests().len();
    reconcile(&api, &ctx).await;
    let pod_reads = api.requests()[before..]
        .iter()
        .filter(|r| r.starts_with(&format!("GET {PODS}")))
        .count();
    assert_eq!(accepted(&api), 64, "4 MiB of 64 KiB reports");
    assert_eq!(pod_reads, 64, "reports past the bound are not read");
    assert!(
        api.get(JOBS, &job_name(&the_scan(&api), Role::Scan, 0, None))
            .is_none(),
        "an accepted chunk's Job goes"
    );

    // The rest wait for the next reconciles, in order, each within the bound.
    reconcile(&api, &ctx).await;
    assert_eq!(accepted(&api), 128);
    let (phase, _) = phase_and_reason(&api);
    assert_eq!(phase, "Running");
}
