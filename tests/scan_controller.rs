//! The S3ParallelScan controller in the real cluster: `s3flow controller` runs as a process, chunk
//! Jobs run through the real Job controller, scheduler and node agent (`s3flow worker` processes)
//! against MinIO. Scenarios run concurrently, each in its own namespace, under one controller.

mod common;

use common::controller::{Controller, assert_event};

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::minio::{Bucket, credentials_secret};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use s3flow::api::Phase;
use s3flow::api::ingest::S3Ingest;
use s3flow::api::scan::S3ParallelScan;
use s3flow::scan::chunk::scope_of;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAMES: &[&str] = &[
    "plain",
    "with,comma",
    "with \"quotes\"",
    "multi\nline",
    "5'10\"",
    "",
    "cr\r\nlf",
];

/// A CSV object with quoted newlines, delimiters and quotes, CRLF terminators and a header.
fn tricky_csv(rows: usize) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    writer.write_record(["id", "name", "fare"]).unwrap();
    for i in 0..rows {
        let cents = (i * 7919) % 10_000;
        writer
            .write_record([
                i.to_string(),
                NAMES[i % NAMES.len()].to_string(),
                format!("{}.{:02}", cents / 100, cents % 100),
            ])
            .unwrap();
    }
    writer.into_inner().unwrap()
}

/// The reference answer by a sequential parse: records, total cents, and the names of rows with
/// fare >= 50.
fn reference(data: &[u8]) -> (u64, i64, Vec<(String, String)>) {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(data);
    let (mut records, mut cents, mut rows) = (0, 0, Vec::new());
    for record in reader.records() {
        let record = record.unwrap();
        records += 1;
        let fare: f64 = record[2].parse().unwrap();
        cents += (fare * 100.0).round() as i64;
        if fare >= 50.0 {
            rows.push((record[0].to_string(), record[1].to_string()));
        }
    }
    (records, cents, rows)
}

fn scan(name: &str, bucket: &Bucket, key: &str, spec: serde_json::Value) -> S3ParallelScan {
    let mut value = json!({
        "apiVersion": "s3flow.io/v1alpha1", "kind": "S3ParallelScan",
        "metadata": {"name": name},
        "spec": {
            "source": {"bucket": bucket.name, "key": key, "endpoint": bucket.endpoint, "forcePathStyle": true,
                "credentialsSecretRef": {"name": "minio"}},
            "format": {"csv": {}},
            "chunking": {"chunkSize": "4Ki", "parallelism": 4},
        }
    });
    common::json_merge(&mut value, json!({"spec": spec}));
    serde_json::from_value(value).unwrap()
}

fn ready_condition(scan: &S3ParallelScan) -> (String, String) {
    let condition = scan
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    (condition.reason.clone(), condition.message.clone())
}

async fn jobs_of(client: &Client, ns: &str) -> Vec<Job> {
    let api: Api<Job> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default()).await.unwrap().items
}

/// A namespace of its own for one scenario, and an operator that watches only it (the scenarios
/// of this file run at once).
async fn scenario(prefix: &str) -> (common::TestEnv, String, Controller) {
    let env = common::env().await;
    common::install_crds(&env.client).await;
    let ns = common::namespace(&env.client, prefix).await;
    let controller = Controller::start(
        &env,
        &format!("scan-controller-{prefix}"),
        &["--namespace", &ns, "--allow-cidr", "127.0.0.1/32"],
    );
    (env, ns, controller)
}

/// Aggregates and row output through chunk Jobs: the merged result equals a sequential parse,
/// the parts hold exactly the selected rows, the manifest lists every chunk, and no Job remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn sql_scan_with_output() {
    let (env, ns, _controller) = scenario("scan-sql").await;
    let env = &env;
    credentials_secret(&env.client, &ns, "minio").await;
    let bucket = Bucket::create(env, "scan-sql").await;
    let data = tricky_csv(1500);
    let (records, cents, rows) = reference(&data);
    bucket.put("trips.csv", data).await;
    let api: Api<S3ParallelScan> = Api::namespaced(env.client.clone(), &ns);
    let aggregate = scan(
        "totals",
        &bucket,
        "trips.csv",
        json!({
            "format": {"csv": {"expectedHeaders": ["id", "name", "fare"]}},
            "chunking": {"chunkSize": "2Ki", "parallelism": 4},
            "processor": {"sql": "SELECT COUNT(*) AS n, SUM(CAST(s.fare AS DECIMAL)) AS total, MAX(s.id) FROM S3Object s"},
        }),
    );
    let selection = scan(
        "rich",
        &bucket,
        "trips.csv",
        json!({
            "chunking": {"chunkSize": "3Ki", "parallelism": 3},
            "processor": {"sql": "SELECT id, name FROM S3Object WHERE CAST(fare AS FLOAT) >= 50",
                "output": {"bucket": bucket.name, "prefix": "out/rich/"}},
        }),
    );
    api.create(&PostParams::default(), &aggregate)
        .await
        .unwrap();
    api.create(&PostParams::default(), &selection)
        .await
        .unwrap();

    let status = common::scan_succeeded(&api, "totals", 120).await;
    let result = serde_json::Value::Object(status.result.clone().unwrap());
    assert_eq!(result["n"], json!(records));
    assert_eq!(result["MAX(s.id)"], json!(records - 1));
    assert!(
        (result["total"].as_f64().unwrap() - cents as f64 / 100.0).abs() < 1e-6,
        "{result}"
    );
    assert_eq!(status.records_processed, Some(records as i64));
    assert_eq!(status.header, vec!["id", "name", "fare"]);
    let total = status.total_chunks.unwrap();
    assert!(total > 10, "{total} chunks");
    assert_eq!(status.progress, Some(format!("{total}/{total}")));
    assert_eq!(status.succeeded_chunks, Some(format!("0-{}", total - 1)));
    assert_event(&env.client, &ns, "totals", "Succeeded", "Normal").await;

    let status = common::scan_succeeded(&api, "rich", 120).await;
    assert_eq!(status.result.as_ref().unwrap()["rows"], json!(rows.len()));
    // The scan's keys carry its scope: another scan writing to the same prefix keeps its own.
    let scope = scope_of(&api.get("rich").await.unwrap().uid().unwrap());
    let manifest_key = format!("out/rich/manifest-{scope}.json");
    assert_eq!(
        status.manifest.clone().unwrap(),
        format!("s3://{}/{manifest_key}", bucket.name)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&bucket.get(&manifest_key).await).unwrap();
    assert_eq!(
        manifest["source"]["etag"],
        json!(status.etag.clone().unwrap())
    );
    assert_eq!(manifest["records"], json!(records));
    let chunks = manifest["chunks"].as_array().unwrap();
    assert_eq!(chunks.len() as i32, status.total_chunks.unwrap());
    let mut selected = Vec::new();
    for chunk in chunks {
        if let Some(part) = chunk["part"].as_str() {
            let body = bucket.get(part).await;
            let mut reader = csv::Reader::from_reader(body.as_slice());
            assert_eq!(reader.headers().unwrap(), vec!["id", "name"]);
            for record in reader.records() {
                let record = record.unwrap();
                selected.push((record[0].to_string(), record[1].to_string()));
            }
        }
    }
    assert_eq!(selected, rows, "rows of the parts, in chunk order");
    bucket.assert_no_uploads_left().await;
    // Accepted chunks' Jobs are deleted once their results are recorded.
    let left: Vec<String> = jobs_of(&env.client, &ns)
        .await
        .iter()
        .map(|j| j.name_any())
        .collect();
    assert!(left.is_empty(), "Jobs left: {left:?}");
    // Re-applying a finished scan does no work.
    let again = api.get("totals").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(api.get("totals").await.unwrap().status, again.status);
    common::delete_namespace(&env.client, &ns).await;
}

/// A worker process killed while it runs fails its pod; the Job controller runs the chunk again
/// and the result stays exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn killed_worker_is_retried() {
    let (env, ns, _controller) = scenario("scan-kill").await;
    let env = &env;
    credentials_secret(&env.client, &ns, "minio").await;
    let bucket = Bucket::create(env, "scan-kill").await;
    let mut data = b"n,v\n".to_vec();
    let rows = 3_000_000u64;
    for i in 0..rows {
        data.extend_from_slice(format!("{i},{}\n", i % 1000).as_bytes());
    }
    bucket.put("big.csv", data).await;
    let api: Api<S3ParallelScan> = Api::namespaced(env.client.clone(), &ns);
    api.create(&PostParams::default(), &scan("kill", &bucket, "big.csv", json!({
        "chunking": {"chunkSize": "8Mi", "parallelism": 2, "maxRetriesPerChunk": 3},
        "processor": {"sql": "SELECT COUNT(*), SUM(CAST(v AS INT)) FROM S3Object WHERE CAST(n AS INT) >= 0"},
    })))
    .await
    .unwrap();
    let killed = kill_a_running_worker(env, &ns).await;
    let status = common::scan_succeeded(&api, "kill", 180).await;
    assert_job_made_a_second_pod(env, &ns, &killed).await;
    let result = serde_json::Value::Object(status.result.unwrap());
    assert_eq!(
        result["COUNT(*)"],
        json!(rows),
        "after killing a pod of {killed}"
    );
    assert_eq!(
        result["SUM(CAST(v AS INT))"],
        json!((0..rows).map(|i| i % 1000).sum::<u64>())
    );
    common::delete_namespace(&env.client, &ns).await;
}

/// Kills a chunk worker mid-chunk: waits for a running pod's worker to start (the node agent
/// writes its pid), freezes and kills it. Returns the name of its Job.
async fn kill_a_running_worker(env: &common::TestEnv, ns: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut killed = None;
    while killed.is_none() && Instant::now() < deadline {
        for pod in pods.list(&ListParams::default()).await.unwrap() {
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
            if matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
                continue;
            }
            // Watch the pod's worker start (the node agent writes its pid), then freeze it at
            // once, so that it is surely killed mid-chunk, not after it finished.
            let uid = pod.uid().unwrap_or_default();
            let pid_file = env
                .env_dir
                .join(format!("node/pods/{uid}/containers/worker/pid"));
            for _ in 0..3000 {
                let pid = std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok());
                if let Some(pid) = pid {
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    let is_worker = String::from_utf8_lossy(&cmdline).contains("worker");
                    // SAFETY: signals to this environment's own worker process, checked above.
                    if is_worker && unsafe { libc::kill(pid, libc::SIGSTOP) } == 0 {
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                        killed = Some(pod.labels()["batch.kubernetes.io/job-name"].clone());
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if killed.is_some() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    killed.expect("a worker pod was seen running")
}

/// The Job controller made a second pod for the killed one's chunk (its Events outlive the Job).
async fn assert_job_made_a_second_pod(env: &common::TestEnv, ns: &str, killed: &str) {
    let events: Api<Event> = Api::namespaced(env.client.clone(), ns);
    let mut created = 0;
    for _ in 0..50 {
        created = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("SuccessfulCreate"))
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(killed))
            .count();
        if created >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(created >= 2, "Job {killed} created {created} pod(s)");
}

/// A value SUM cannot add fails its chunk at once (no retries) and the scan names the range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn bad_data_fails_with_its_range() {
    let (env, ns, _controller) = scenario("scan-bad").await;
    let env = &env;
    credentials_secret(&env.client, &ns, "minio").await;
    let bucket = Bucket::create(env, "scan-bad").await;
    let mut data = b"k,v\n".to_vec();
    for i in 0..2000 {
        data.extend_from_slice(
            format!(
                "{i},{}\n",
                if i == 1500 {
                    "oops".into()
                } else {
                    i.to_string()
                }
            )
            .as_bytes(),
        );
    }
    let offset = data.windows(4).position(|w| w == b"oops").unwrap() as u64;
    bucket.put("bad.csv", data).await;
    let api: Api<S3ParallelScan> = Api::namespaced(env.client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &scan(
            "bad",
            &bucket,
            "bad.csv",
            json!({
                "chunking": {"chunkSize": "2Ki", "parallelism": 4, "maxRetriesPerChunk": 3},
                "processor": {"sql": "SELECT SUM(v) FROM S3Object"},
            }),
        ),
    )
    .await
    .unwrap();
    let done = common::scan_finished(&api, "bad", 120).await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Phase::Failed);
    let (reason, message) = ready_condition(&done);
    assert_eq!(reason, "BadData", "{message}");
    let chunk = (offset - 4) / 2048;
    let (start, end) = (4 + chunk * 2048, 4 + (chunk + 1) * 2048);
    assert!(
        message.contains(&format!("chunk {chunk} (bytes {start}-{end})")),
        "{message}"
    );
    assert!(message.contains("\"oops\" is not a number"), "{message}");
    assert_eq!(status.failed_chunks, Some(chunk.to_string()));
    assert_event(&env.client, &ns, "bad", "BadData", "Warning").await;
    common::delete_namespace(&env.client, &ns).await;
}

/// expectedHeaders that do not match fail the scan before any Job exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn header_mismatch_fails_before_any_job() {
    let (env, ns, _controller) = scenario("scan-header").await;
    let env = &env;
    credentials_secret(&env.client, &ns, "minio").await;
    let bucket = Bucket::create(env, "scan-header").await;
    bucket.put("h.csv", tricky_csv(100)).await;
    let api: Api<S3ParallelScan> = Api::namespaced(env.client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &scan(
            "header",
            &bucket,
            "h.csv",
            json!({
                "format": {"csv": {"expectedHeaders": ["id", "name", "price"]}},
                "processor": {"sql": "SELECT COUNT(*) FROM S3Object"},
            }),
        ),
    )
    .await
    .unwrap();
    let done = common::scan_finished(&api, "header", 60).await;
    let (reason, message) = ready_condition(&done);
    assert_eq!(reason, "HeaderMismatch");
    assert!(
        message.contains("[\"id\", \"name\", \"fare\"]") && message.contains("\"price\""),
        "{message}"
    );
    assert_eq!(
        done.status.as_ref().unwrap().total_chunks,
        None,
        "planned despite the mismatch"
    );
    assert!(jobs_of(&env.client, &ns).await.is_empty());
    assert_event(&env.client, &ns, "header", "HeaderMismatch", "Warning").await;
    common::delete_namespace(&env.client, &ns).await;
}

/// A missing object, wrong credentials and invalid SQL each fail with a reason and an Event;
/// a chunk size of 0 is refused by the API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn bad_input_fails_with_a_reason() {
    let (env, ns, _controller) = scenario("scan-input").await;
    let env = &env;
    credentials_secret(&env.client, &ns, "minio").await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(env.client.clone(), &ns);
    secrets
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "metadata": {"name": "wrong", "labels": {"s3flow.io/secret-type": "credentials"}},
            "stringData": {"AWS_ACCESS_KEY_ID": "nobody", "AWS_SECRET_ACCESS_KEY": "nothing-at-all"},
        })).unwrap())
        .await
        .unwrap();
    let bucket = Bucket::create(env, "scan-input").await;
    bucket.put("x.csv", tricky_csv(10)).await;
    let api: Api<S3ParallelScan> = Api::namespaced(env.client.clone(), &ns);
    let count = json!({"processor": {"sql": "SELECT COUNT(*) FROM S3Object"}});
    let mut wrong_secret = count.clone();
    common::json_merge(
        &mut wrong_secret,
        json!({"source": {"credentialsSecretRef": {"name": "wrong"}}}),
    );
    let cases = [
        (
            "missing",
            scan("missing", &bucket, "nope.csv", count.clone()),
            "ObjectNotFound",
            "nope.csv",
        ),
        (
            "denied",
            scan("denied", &bucket, "x.csv", wrong_secret),
            "AccessDenied",
            "x.csv",
        ),
        (
            "sql",
            scan(
                "sql",
                &bucket,
                "x.csv",
                json!({"processor": {"sql": "SELECT nme FROM S3Object"}}),
            ),
            "InvalidSql",
            "unknown column nme (the header has: id, name, fare) at line 1, column 8",
        ),
    ];
    for (_, scan, _, _) in &cases {
        api.create(&PostParams::default(), scan).await.unwrap();
    }
    for (name, _, reason, detail) in &cases {
        let done = common::scan_finished(&api, name, 60).await;
        let (got, message) = ready_condition(&done);
        assert_eq!(&got, reason, "{name}: {message}");
        assert!(message.contains(detail), "{name}: {message}");
        assert_event(&env.client, &ns, name, reason, "Warning").await;
    }
    let zero = scan(
        "zero",
        &bucket,
        "x.csv",
        json!({"chunking": {"chunkSize": "0"}, "processor": {"sql": "SELECT COUNT(*) FROM S3Object"}}),
    );
    let refused = api
        .create(&PostParams::default(), &zero)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("chunkSize must be a whole number of bytes of at least 1"),
        "{refused}"
    );
    common::delete_namespace(&env.client, &ns).await;
}

/// A container processor gets exactly its chunk's records (after the header row) in a file; its
/// termination messages land in the manifest, and the onComplete Job gets the manifest's location.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn container_processor_and_on_complete() {
    let (env, ns, _controller) = scenario("scan-container").await;
    let env = &env;
    credentials_secret(&env.client, &ns, "minio").await;
    let bucket = Bucket::create(env, "scan-container").await;
    let data = tricky_csv(800);
    let (records, _, _) = reference(&data);
    bucket.put("c.csv", data).await;
    let api: Api<S3ParallelScan> = Api::namespaced(env.client.clone(), &ns);
    let count_rows = "import csv, os; rows = list(csv.reader(open(os.environ['S3FLOW_CHUNK_FILE'], newline=''))); \
        assert rows[0] == ['id', 'name', 'fare'], rows[0]; \
        open('/dev/termination-log', 'w').write('%s %d' % (os.environ['S3FLOW_CHUNK_INDEX'], len(rows) - 1))";
    let marker = env.env_dir.join(format!("{ns}-on-complete"));
    api.create(&PostParams::default(), &scan("users", &bucket, "c.csv", json!({
        "chunking": {"chunkSize": "5Ki", "parallelism": 3},
        "processor": {"container": {"image": "python:3", "command": ["python3", "-c", count_rows]}},
        "onComplete": {"image": "busybox", "command": ["sh", "-c", format!("echo $S3FLOW_MANIFEST > {}", marker.display())]},
    })))
    .await
    .unwrap();
    let status = common::scan_succeeded(&api, "users", 180).await;
    let manifest_url = status.manifest.clone().unwrap();
    let key = manifest_url
        .strip_prefix(&format!("s3://{}/", bucket.name))
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&bucket.get(key).await).unwrap();
    let mut counted = 0;
    for chunk in manifest["chunks"].as_array().unwrap() {
        let message = chunk["output"].as_str().unwrap_or_default();
        let (index, rows) = message
            .split_once(' ')
            .unwrap_or_else(|| panic!("chunk output {chunk}"));
        assert_eq!(index, chunk["index"].to_string());
        assert_eq!(
            rows,
            chunk["records"].to_string(),
            "the container saw the chunk's records: {chunk}"
        );
        counted += rows.parse::<u64>().unwrap();
    }
    assert_eq!(counted, records);
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().trim(),
        manifest_url
    );
    common::delete_namespace(&env.client, &ns).await;
}

/// Serves `body` over HTTP on loopback until the test ends.
async fn serve_bytes(body: Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/trips.csv", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
            });
        }
    });
    url
}

/// A scan with ingestRef waits while the S3Ingest does not exist or runs, then scans its object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn waits_for_its_ingest() {
    let (env, ns, _controller) = scenario("scan-ref").await;
    let env = &env;
    credentials_secret(&env.client, &ns, "minio").await;
    let bucket = Bucket::create(env, "scan-ref").await;
    let data = tricky_csv(600);
    let (records, _, _) = reference(&data);
    let url = serve_bytes(data).await;
    let scans: Api<S3ParallelScan> = Api::namespaced(env.client.clone(), &ns);
    let scan: S3ParallelScan = serde_json::from_value(json!({
        "apiVersion": "s3flow.io/v1alpha1", "kind": "S3ParallelScan",
        "metadata": {"name": "after"},
        "spec": {
            "source": {"ingestRef": {"name": "fetch"}},
            "format": {"csv": {}},
            "chunking": {"chunkSize": "4Ki"},
            "processor": {"sql": "SELECT COUNT(*) FROM S3Object"},
        }
    }))
    .unwrap();
    scans.create(&PostParams::default(), &scan).await.unwrap();
    let waiting = common::wait(
        scans.clone(),
        "after",
        |s: Option<&S3ParallelScan>| {
            s.and_then(|s| s.status.as_ref())
                .is_some_and(|s| s.conditions.iter().any(|c| c.reason == "WaitingForIngest"))
        },
        30,
    )
    .await;
    assert_eq!(waiting.status.as_ref().unwrap().phase, Phase::Pending);
    let ingests: Api<S3Ingest> = Api::namespaced(env.client.clone(), &ns);
    let ingest: S3Ingest = serde_json::from_value(json!({
        "apiVersion": "s3flow.io/v1alpha1", "kind": "S3Ingest",
        "metadata": {"name": "fetch"},
        "spec": {
            "source": {"url": url},
            "destination": {"bucket": bucket.name, "key": "fetched/trips.csv", "endpoint": bucket.endpoint,
                "forcePathStyle": true, "credentialsSecretRef": {"name": "minio"}},
        }
    }))
    .unwrap();
    ingests
        .create(&PostParams::default(), &ingest)
        .await
        .unwrap();
    let status = common::scan_succeeded(&scans, "after", 120).await;
    assert_eq!(status.result.unwrap()["COUNT(*)"], json!(records));
    let ingest = ingests.get("fetch").await.unwrap();
    assert_eq!(ingest.status.unwrap().phase, Phase::Succeeded);
    common::delete_namespace(&env.client, &ns).await;
}

/// 1,000 chunk Jobs: the scan succeeds with the exact count and its status stays under 64 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn thousand_chunks_keep_status_small() {
    let (env, ns, _controller) = scenario("scan-many").await;
    let env = &env;
    credentials_secret(&env.client, &ns, "minio").await;
    let bucket = Bucket::create(env, "scan-many").await;
    let mut data = b"a\n".to_vec();
    let rows = 10_000;
    for i in 0..rows {
        data.extend_from_slice(format!("{:09}\n", i).as_bytes());
    }
    let chunk = (data.len() - 2).div_ceil(1000);
    bucket.put("many.csv", data).await;
    let api: Api<S3ParallelScan> = Api::namespaced(env.client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &scan(
            "many",
            &bucket,
            "many.csv",
            json!({
                "chunking": {"chunkSize": chunk.to_string(), "parallelism": 32},
                "processor": {"sql": "SELECT COUNT(*), MIN(a), MAX(a) FROM S3Object"},
            }),
        ),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut largest = 0;
    let mut chunk_sets = BTreeSet::new();
    loop {
        let scan = api.get("many").await.unwrap();
        largest = largest.max(serde_json::to_vec(&scan.status).unwrap().len());
        if let Some(status) = &scan.status {
            chunk_sets.insert(status.progress.clone());
            if matches!(status.phase, Phase::Succeeded | Phase::Failed) {
                assert_eq!(
                    status.phase,
                    Phase::Succeeded,
                    "{:?}",
                    ready_condition(&scan)
                );
                assert_eq!(status.total_chunks, Some(1000));
                let result = serde_json::Value::Object(status.result.clone().unwrap());
                assert_eq!(
                    result,
                    json!({"COUNT(*)": rows, "MIN(a)": 0, "MAX(a)": rows - 1})
                );
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "1,000 chunks took over 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(largest < 64 * 1024, "status grew to {largest} bytes");
    assert!(
        chunk_sets.len() > 3,
        "progress was reported along the way: {chunk_sets:?}"
    );
    eprintln!(
        "1,000 chunk Jobs: {:.1} s, largest status {largest} bytes",
        started.elapsed().as_secs_f64()
    );
    common::delete_namespace(&env.client, &ns).await;
}

/// Kills every running worker of `ns` (SIGKILL, as a node would), returning how many.
fn kill_workers(env: &common::TestEnv, pods: &[Pod]) -> usize {
    let mut killed = 0;
    for pod in pods {
        let pid_file = env.env_dir.join(format!(
            "node/pods/{}/containers/worker/pid",
            pod.uid().unwrap_or_default()
        ));
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            // SAFETY: a signal to this environment's own worker process.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
    }
    killed
}

/// Row output uploads in flight when a worker is killed, or when the scan is deleted, are aborted
/// by the ids the chunks recorded: another upload at the same key, started by someone else, stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn uploads_of_killed_and_deleted_chunks_are_aborted_exactly() {
    let (env, ns, _controller) = scenario("scan-uploads").await;
    let env = &env;
    credentials_secret(&env.client, &ns, "minio").await;
    let bucket = Bucket::create(env, "scan-uploads").await;
    let mut data = b"n,text\n".to_vec();
    let mut rows = 0u64;
    while data.len() < 40 << 20 {
        data.extend_from_slice(format!("{rows},{}\n", "x".repeat(90)).as_bytes());
        rows += 1;
    }
    bucket.put("rows.csv", data).await;
    let api: Api<S3ParallelScan> = Api::namespaced(env.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &ns);
    // The scans reach MinIO through a proxy that can hold the answers to UploadPart, so that
    // their workers are mid-upload for as long as the test needs, however fast the machine.
    let proxy = common::proxy::Proxy::start(env.s3_endpoint.trim_start_matches("http://")).await;
    let hold_parts = || proxy.hold(|head| head.starts_with("PUT ") && head.contains("partNumber="));
    let spec = |prefix: &str| {
        json!({
            "source": {"endpoint": proxy.url()},
            "chunking": {"chunkSize": "20Mi", "parallelism": 2, "maxRetriesPerChunk": 3},
            "processor": {"sql": "SELECT * FROM S3Object",
                "output": {"bucket": bucket.name, "prefix": prefix}},
        })
    };
    hold_parts();
    api.create(
        &PostParams::default(),
        &scan("killed", &bucket, "rows.csv", spec("out/")),
    )
    .await
    .unwrap();
    let scope = scope_of(&api.get("killed").await.unwrap().uid().unwrap());
    // Someone else's upload at exactly the key of the scan's first part.
    let foreign = bucket
        .s3
        .create_multipart_upload()
        .bucket(&bucket.name)
        .key(format!("out/part-00000-{scope}.csv"))
        .send()
        .await
        .unwrap()
        .upload_id
        .unwrap();
    // Both chunks record their multipart uploads and wait on their first part's answer; then
    // their workers die mid-upload. They are killed only when every open upload is recorded: a
    // SIGKILL between CreateMultipartUpload's answer and the record leaves an upload only a
    // lifecycle rule removes (the README says so), which is not what this test is about.
    let mut killed = 0;
    for _ in 0..1200 {
        let mut recorded = Vec::new();
        for chunk in ["00000", "00001"] {
            let record = bucket
                .try_get(&format!("out/chunks/{chunk}-{scope}.upload.json"))
                .await;
            if let Ok(record) = record {
                let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
                recorded.push(record["uploadId"].as_str().unwrap_or_default().to_string());
            }
        }
        let open = bucket.uploads().await;
        let unrecorded = open
            .iter()
            .any(|id| *id != foreign && !recorded.contains(id));
        if recorded.len() == 2 && proxy.held.load(Ordering::SeqCst) >= 2 && !unrecorded {
            killed = kill_workers(env, &pods.list(&ListParams::default()).await.unwrap().items);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(killed > 0, "no worker was seen uploading");
    proxy.heal();
    let status = common::scan_succeeded(&api, "killed", 180).await;
    assert_eq!(status.result.unwrap()["rows"], json!(rows));
    assert_eq!(
        bucket.uploads().await,
        vec![foreign.clone()],
        "the killed chunks' uploads are aborted, someone else's stays"
    );

    // Deleted mid-upload: its workers, stopped by SIGTERM, abort their uploads (recorded or not
    // yet), and the cleanup aborts the recorded ones; someone else's stays.
    let held = proxy.held.load(Ordering::SeqCst);
    hold_parts();
    api.create(
        &PostParams::default(),
        &scan("deleted", &bucket, "rows.csv", spec("del/")),
    )
    .await
    .unwrap();
    for _ in 0..1200 {
        if proxy.held.load(Ordering::SeqCst) > held && bucket.uploads().await.len() > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        bucket.uploads().await.len() > 1,
        "no upload was seen in flight"
    );
    let uid = api.get("deleted").await.unwrap().uid().unwrap();
    api.delete("deleted", &Default::default()).await.unwrap();
    common::wait_deleted(api.clone(), "deleted", &uid, 120).await;
    proxy.heal();
    assert_eq!(bucket.uploads().await, vec![foreign]);
    common::delete_namespace(&env.client, &ns).await;
}

/// A Parquet file written by pyarrow: `rows` rows of `n` (0, 1, ...) and `v` (`n % 1000`) in row
/// groups of `group_rows` rows.
fn pyarrow_file(rows: u64, group_rows: u64) -> Vec<u8> {
    let path = std::env::temp_dir().join(common::unique("scan-parquet"));
    let script = format!(
        "import pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq\n\
         n = pa.array(range({rows}), pa.int64())\n\
         pq.write_table(pa.table({{'n': n, 'v': pc.remainder(n, 1000)}}), '{}', row_group_size={group_rows}, compression='zstd')\n",
        path.display()
    );
    let status = std::process::Command::new("python3")
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(status.success(), "pyarrow wrote the file");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    bytes
}

/// The values of two int64 columns of a Parquet file, row by row.
fn parquet_pairs(file: Vec<u8>, [first, second]: [&str; 2]) -> Vec<(i64, i64)> {
    use arrow_array::{Array, Int64Array};
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(file),
    )
    .unwrap()
    .build()
    .unwrap();
    let mut pairs = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let column = |name: &str| {
            let column = batch.column_by_name(name).unwrap();
            let values = column.as_any().downcast_ref::<Int64Array>().unwrap();
            assert_eq!(values.null_count(), 0);
            values.values().to_vec()
        };
        pairs.extend(column(first).into_iter().zip(column(second)));
    }
    pairs
}

/// A Parquet scan through chunk Jobs (row groups split across them), one worker killed
/// mid-chunk: the result is exact, status and manifest account for every row group once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn parquet_scan_survives_a_killed_worker() {
    let (env, ns, _controller) = scenario("scan-parquet-kill").await;
    let env = &env;
    credentials_secret(&env.client, &ns, "minio").await;
    let bucket = Bucket::create(env, "scan-parquet-kill").await;
    let rows = 3_000_000u64;
    bucket.put("big.parquet", pyarrow_file(rows, 100_000)).await;
    let api: Api<S3ParallelScan> = Api::namespaced(env.client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &scan(
            "pq",
            &bucket,
            "big.parquet",
            json!({
                "format": {"csv": null, "parquet": {}},
                "chunking": {"chunkSize": "1Mi", "parallelism": 2, "maxRetriesPerChunk": 3},
                "processor": {"sql": "SELECT COUNT(*), SUM(v), MAX(n) FROM S3Object WHERE n >= 0"},
            }),
        ),
    )
    .await
    .unwrap();
    let killed = kill_a_running_worker(env, &ns).await;
    let status = common::scan_succeeded(&api, "pq", 240).await;
    assert_job_made_a_second_pod(env, &ns, &killed).await;
    let result = serde_json::Value::Object(status.result.clone().unwrap());
    assert_eq!(
        result["COUNT(*)"],
        json!(rows),
        "after killing a pod of {killed}"
    );
    assert_eq!(
        result["SUM(v)"],
        json!((0..rows).map(|i| i % 1000).sum::<u64>())
    );
    assert_eq!(result["MAX(n)"], json!(rows - 1));
    let groups = status.row_groups.clone().expect("status shows row groups");
    assert_eq!((groups.total, groups.skipped), (30, 0));
    let chunks = status.total_chunks.unwrap();
    assert!(
        chunks > 2 && chunks <= 30,
        "{chunks} chunks of 30 row groups"
    );
    let manifest_url = status.manifest.unwrap();
    let key = manifest_url
        .strip_prefix(&format!("s3://{}/", bucket.name))
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&bucket.get(key).await).unwrap();
    let mut next = 0;
    for chunk in manifest["chunks"].as_array().unwrap() {
        assert_eq!(chunk["rowGroups"]["first"], json!(next), "{chunk}");
        next = chunk["rowGroups"]["end"].as_u64().unwrap();
        assert_eq!(
            chunk["records"].as_u64().unwrap(),
            (chunk["rowGroups"]["end"].as_u64().unwrap()
                - chunk["rowGroups"]["first"].as_u64().unwrap())
                * 100_000
        );
    }
    assert_eq!(next, 30, "every row group in exactly one chunk");
    common::delete_namespace(&env.client, &ns).await;
}

/// A container processor gets its chunk's row groups as a Parquet file of their own, which
/// pyarrow reads: its rows and row groups are the chunk's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn parquet_chunks_reach_container_processors_as_files() {
    let (env, ns, _controller) = scenario("scan-parquet-container").await;
    let env = &env;
    credentials_secret(&env.client, &ns, "minio").await;
    let bucket = Bucket::create(env, "scan-parquet-container").await;
    let rows = 50_000u64;
    bucket.put("p.parquet", pyarrow_file(rows, 7_000)).await;
    let api: Api<S3ParallelScan> = Api::namespaced(env.client.clone(), &ns);
    let read_chunk = "import os, pyarrow.parquet as pq; f = pq.ParquetFile(os.environ['S3FLOW_CHUNK_FILE']); \
        t = f.read(); assert t.column_names == ['n', 'v'], t.column_names; \
        assert all(v == n % 1000 for n, v in zip(t['n'].to_pylist(), t['v'].to_pylist())); \
        open('/dev/termination-log', 'w').write('%d %d %s' % (t.num_rows, f.metadata.num_row_groups, os.environ['S3FLOW_CHUNK_ROW_GROUPS']))";
    api.create(&PostParams::default(), &scan("pqc", &bucket, "p.parquet", json!({
        "format": {"csv": null, "parquet": {}},
        "chunking": {"chunkSize": "40Ki", "parallelism": 3},
        "processor": {"container": {"image": "python:3", "command": ["python3", "-c", read_chunk]}},
    })))
    .await
    .unwrap();
    let status = common::scan_succeeded(&api, "pqc", 180).await;
    let manifest_url = status.manifest.unwrap();
    let key = manifest_url
        .strip_prefix(&format!("s3://{}/", bucket.name))
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&bucket.get(key).await).unwrap();
    let chunks = manifest["chunks"].as_array().unwrap();
    assert!(chunks.len() > 1, "{} chunks", chunks.len());
    let mut total = 0;
    for chunk in chunks {
        let message = chunk["output"].as_str().unwrap_or_default();
        let parts: Vec<&str> = message.split(' ').collect();
        let [seen_rows, seen_groups, env_groups] = parts[..] else {
            panic!("chunk output {chunk}");
        };
        let (first, end) = (
            chunk["rowGroups"]["first"].as_u64().unwrap(),
            chunk["rowGroups"]["end"].as_u64().unwrap(),
        );
        assert_eq!(seen_rows, chunk["records"].to_string(), "{chunk}");
        assert_eq!(seen_groups.parse::<u64>().unwrap(), end - first, "{chunk}");
        let named = if end - first == 1 {
            first.to_string()
        } else {
            format!("{first}-{}", end - 1)
        };
        assert_eq!(env_groups, named, "{chunk}");
        total += seen_rows.parse::<u64>().unwrap();
    }
    assert_eq!(total, rows);
    common::delete_namespace(&env.client, &ns).await;
}

/// A CSV object of hive day `d`, number `i`, with `rows` rows: its own header row, some with a
/// byte-order mark, CRLF terminators or no final newline, quoted newlines in names.
fn day_object(d: u32, i: u32, rows: u32) -> Vec<u8> {
    let crlf = i.is_multiple_of(3);
    let mut writer = csv::WriterBuilder::new()
        .terminator(if crlf {
            csv::Terminator::CRLF
        } else {
            csv::Terminator::Any(b'\n')
        })
        .from_writer(Vec::new());
    writer.write_record(["id", "name", "cents"]).unwrap();
    for row in 0..rows {
        let id = u64::from(d) * 100_000 + u64::from(i) * 10_000 + u64::from(row);
        let cents = (id * 7919) % 10_000;
        writer
            .write_record([
                id.to_string(),
                NAMES[(id % NAMES.len() as u64) as usize].to_string(),
                cents.to_string(),
            ])
            .unwrap();
    }
    let mut data = writer.into_inner().unwrap();
    if i.is_multiple_of(5) {
        data.truncate(data.len() - if crlf { 2 } else { 1 });
    }
    if i.is_multiple_of(7) {
        data.splice(0..0, *b"\xef\xbb\xbf");
    }
    data
}

/// Records, the sum of `cents` and the largest `id` of CSV objects with `id,...,cents` columns, by
/// a sequential parse of each.
fn day_totals<'a>(objects: impl Iterator<Item = &'a Vec<u8>>) -> (u64, i64, i64) {
    let (mut records, mut cents, mut max_id) = (0, 0, i64::MIN);
    for data in objects {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(&data[..]);
        for record in reader.records() {
            let record = record.unwrap();
            records += 1;
            cents += record[2].parse::<i64>().unwrap();
            max_id = max_id.max(record[0].parse().unwrap());
        }
    }
    (records, cents, max_id)
}

/// A glob over 2,002 objects in hive folders: 2,000 small CSV objects packed many to a chunk and
/// two large ones split in windows. The operator is killed twice while it lists (a slice of 100
/// objects per reconcile) and once while the chunks run: the folder walk resumes where it stopped
/// (its pages are counted once each), the day the WHERE clause rules out is never listed, the
/// result equals a sequential parse, and status stays under 16 KiB. Two more scans write rows,
/// in key order, to parts: all of them, and the first rows to a LIMIT ending inside a chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn glob_of_many_objects_survives_operator_restarts() {
    let env = common::env().await;
    common::install_crds(&env.client).await;
    let ns = common::namespace(&env.client, "scan-glob").await;
    let args = [
        "--namespace",
        ns.as_str(),
        "--allow-cidr",
        "127.0.0.1/32",
        "--listing-slice",
        "100",
    ];
    let mut controller = Controller::start(&env, "scan-controller-glob-0", &args);
    credentials_secret(&env.client, &ns, "minio").await;
    let bucket = Bucket::create(&env, "scan-glob").await;
    let mut objects = std::collections::BTreeMap::new();
    for d in 1..=10 {
        for i in 0..200 {
            objects.insert(format!("many/d={d}/part-{i:03}.csv"), day_object(d, i, 8));
        }
    }
    for (i, name) in [(1, "a"), (3, "b")] {
        objects.insert(format!("many/d=11/big-{name}.csv"), day_object(11, i, 3000));
    }
    futures::future::join_all(objects.iter().map(|(k, v)| bucket.put(k, v.clone())))
        .await
        .into_iter()
        .for_each(drop);
    let kept = || objects.iter().filter(|(k, _)| !k.contains("/d=3/"));
    let (records, cents, max_id) = day_totals(kept().map(|(_, v)| v));
    let api: Api<S3ParallelScan> = Api::namespaced(env.client.clone(), &ns);
    let glob_scan = |name: &str, sql: &str, extra: serde_json::Value| {
        let mut value = json!({
            "apiVersion": "s3flow.io/v1alpha1", "kind": "S3ParallelScan",
            "metadata": {"name": name},
            "spec": {
                "source": {"bucket": bucket.name, "glob": "many/d=*/*.csv",
                    "endpoint": bucket.endpoint, "forcePathStyle": true,
                    "credentialsSecretRef": {"name": "minio"}},
                "format": {"csv": {}},
                "chunking": {"chunkSize": "32Ki", "objectOpenCost": "512", "parallelism": 8},
                "processor": {"sql": sql},
            }
        });
        common::json_merge(&mut value, json!({"spec": extra}));
        serde_json::from_value::<S3ParallelScan>(value).unwrap()
    };
    let sql = "SELECT COUNT(*), SUM(cents), MAX(id), MIN(_file) FROM S3Object WHERE d <> 3";
    api.create(&PostParams::default(), &glob_scan("days", sql, json!({})))
        .await
        .unwrap();
    let started = Instant::now();
    let (mut restarts, mut largest) = (0, 0);
    let status = loop {
        let scan = api.get("days").await.unwrap();
        largest = largest.max(serde_json::to_vec(&scan.status).unwrap().len());
        let status = scan.status.clone().unwrap_or_default();
        if matches!(status.phase, Phase::Succeeded | Phase::Failed) {
            break status;
        }
        let pages = status.listing.as_ref().map_or(0, |l| l.pages);
        let succeeded = status.chunks.as_ref().map_or(0, |c| c.succeeded);
        // Twice while it lists, once while the chunks run.
        let due = match restarts {
            0 => pages >= 3,
            1 => pages >= 10 && status.listing.as_ref().is_some_and(|l| !l.complete),
            2 => succeeded >= 5,
            _ => false,
        };
        if due {
            controller.kill();
            restarts += 1;
            controller =
                Controller::start(&env, &format!("scan-controller-glob-{restarts}"), &args);
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the scan of many objects took over 10 minutes: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let scan = api.get("days").await.unwrap();
    assert_eq!(
        status.phase,
        Phase::Succeeded,
        "{:?}",
        ready_condition(&scan)
    );
    assert_eq!(
        restarts, 3,
        "the operator was killed twice listing, once scanning"
    );
    let result = serde_json::Value::Object(status.result.clone().unwrap());
    assert_eq!(
        result,
        json!({"COUNT(*)": records, "SUM(cents)": cents, "MAX(id)": max_id,
            "MIN(_file)": "big-a.csv"})
    );
    let listing = status.listing.clone().unwrap();
    assert!(listing.complete);
    // The glob names the day folders: d=3 is never listed.
    assert_eq!(
        listing.pages, 19,
        "the 1,802 keys of the folders kept listed 100 a page, each page once"
    );
    let counts = status.objects.clone().unwrap();
    assert_eq!(
        (
            counts.matched,
            counts.pruned,
            counts.pruned_folders,
            counts.planned,
            counts.scanned
        ),
        (1802, 0, 1, 1802, 1802)
    );
    assert_eq!(counts.progress, "1802/1802");
    let chunks = status.total_chunks.unwrap();
    assert!(
        (20..100).contains(&chunks),
        "1,800 small objects packed many to a chunk, two large ones split: {chunks} chunks"
    );
    assert!(largest < 16 * 1024, "status grew to {largest} bytes");
    eprintln!(
        "2,002 objects, {chunks} chunks, 3 operator restarts: {:.1} s, largest status {largest} \
         bytes, operator peak RSS since its last restart {} MiB",
        started.elapsed().as_secs_f64(),
        controller.peak_rss() >> 20
    );

    // Rows to parts, in key order: a filter over the same objects.
    let mut expected = Vec::new();
    for data in objects.values() {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(&data[..]);
        for record in reader.records() {
            let record = record.unwrap();
            if record[2].parse::<i64>().unwrap() >= 9900 {
                expected.push((record[0].to_string(), record[1].to_string()));
            }
        }
    }
    // The LIMIT ends inside a chunk of many small objects: its pieces keep only the rows the
    // pieces before them left, and the chunk runs again to the LIMIT.
    let limit = expected.len() / 2 + 1;
    let rows_sql = "SELECT id, name FROM S3Object WHERE cents >= 9900";
    for (name, sql) in [
        ("rows", rows_sql.to_string()),
        ("rows-limit", format!("{rows_sql} LIMIT {limit}")),
    ] {
        let output = json!({"bucket": bucket.name, "prefix": format!("{name}/")});
        let scan = glob_scan(name, &sql, json!({"processor": {"output": output}}));
        api.create(&PostParams::default(), &scan).await.unwrap();
    }
    let (all_records, ..) = day_totals(objects.values());
    assert!(expected.len() > 2);
    for (name, want) in [("rows", &expected[..]), ("rows-limit", &expected[..limit])] {
        let status = common::scan_succeeded(&api, name, 300).await;
        let mut written = Vec::new();
        for key in bucket.keys(&format!("{name}/part-")).await {
            let part = bucket.get(&key).await;
            let mut reader = csv::Reader::from_reader(&part[..]);
            assert_eq!(reader.headers().unwrap(), vec!["id", "name"], "{key}");
            for record in reader.records() {
                let record = record.unwrap();
                written.push((record[0].to_string(), record[1].to_string()));
            }
        }
        assert_eq!(
            written, want,
            "{name}: the parts hold the selected rows in key order"
        );
        let rows = serde_json::Value::Object(status.result.clone().unwrap());
        assert_eq!(rows, json!({"rows": want.len()}), "{name}");
        assert_eq!(status.records_processed, Some(all_records as i64));
        // The manifest: a line per chunk naming its pieces and part, a line per object with
        // its records and the rows of it the parts hold, in key order.
        let url = status.manifest.clone().unwrap();
        let key = url.strip_prefix(&format!("s3://{}/", bucket.name)).unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&bucket.get(key).await).unwrap();
        assert_eq!(manifest["rows"], want.len(), "{name}");
        let chunks = bucket.manifest_lines(&manifest, "chunks").await;
        assert_eq!(Some(chunks.len() as i32), status.total_chunks, "{name}");
        let pieces: usize = chunks
            .iter()
            .map(|c| c["pieces"].as_array().unwrap().len())
            .sum();
        assert!(pieces >= objects.len(), "{name}: {pieces} pieces");
        let parts: Vec<String> = chunks
            .iter()
            .filter_map(|c| c["part"].as_str().map(String::from))
            .collect();
        let listed: Vec<String> = bucket
            .keys(&format!("{name}/part-"))
            .await
            .into_iter()
            .collect();
        assert_eq!(parts, listed, "{name}: the manifest names every part left");
        let lines = bucket.manifest_lines(&manifest, "objects").await;
        let keys: Vec<&str> = lines.iter().map(|o| o["key"].as_str().unwrap()).collect();
        assert!(
            keys.iter().copied().eq(objects.keys().map(String::as_str)),
            "{name}"
        );
        let sum = |field: &str| -> u64 { lines.iter().map(|o| o[field].as_u64().unwrap()).sum() };
        assert_eq!(
            (sum("records"), sum("rows")),
            (all_records, want.len() as u64),
            "{name}"
        );
        assert!(lines.iter().all(|o| o["status"] == "scanned"), "{name}");
    }
    bucket.assert_no_uploads_left().await;
    drop(controller);
    common::delete_namespace(&env.client, &ns).await;
}

/// Scans of many objects from each kind of source and schema, and the refusals of a selection:
/// a hive-partitioned Parquet dataset pruned by its partitions (its rows also written as Parquet
/// parts, one object a chunk, and to a LIMIT), a list of keys and a glob with
/// columns bound by name, JSON Lines, a schema mismatch naming its object, a glob matching
/// nothing (NoObjects, or an empty answer when allowed), and too many objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn many_object_sources_schemas_and_refusals() {
    let (env, ns, _controller) = scenario("scan-sources").await;
    let env = &env;
    credentials_secret(&env.client, &ns, "minio").await;
    let bucket = Bucket::create(env, "scan-sources").await;
    let rows = 50_000u64;
    let parquet = pyarrow_file(rows, 10_000);
    for month in 1..=3 {
        bucket
            .put(&format!("pq/month={month}/data.parquet"), parquet.clone())
            .await;
    }
    bucket
        .put("csv/a.csv", b"id,x\n1,10\n2,20\n".to_vec())
        .await;
    bucket.put("csv/b.csv", b"y,id\r\n7,3\r\n".to_vec()).await;
    bucket.put("csv/c.csv", b"id,x,y\n4,40,8".to_vec()).await;
    bucket
        .put(
            "jl/1.jsonl",
            b"{\"a\": 1}\n{\"a\": 2, \"b\": \"x\"}\n".to_vec(),
        )
        .await;
    bucket.put("jl/2.jsonl", b"{\"a\": 4}".to_vec()).await;
    // A Batch Operations manifest, keys URL-encoded, in its own order.
    let batch = format!("{0},csv/c.csv\r\n{0},csv%2Fa.csv\r\n", bucket.name);
    bucket.put("lists/batch.csv", batch.into_bytes()).await;
    let api: Api<S3ParallelScan> = Api::namespaced(env.client.clone(), &ns);
    let create = |name: &'static str, source: serde_json::Value, format, sql: &str| {
        // Rows of Parquet objects to Parquet parts: one object a chunk, each part one file.
        let output = name.starts_with("parquet-rows").then(
            || json!({"bucket": bucket.name, "prefix": format!("{name}/"), "format": "parquet"}),
        );
        let mut value = json!({
            "apiVersion": "s3flow.io/v1alpha1", "kind": "S3ParallelScan",
            "metadata": {"name": name},
            "spec": {
                "source": {"bucket": bucket.name, "endpoint": bucket.endpoint,
                    "forcePathStyle": true, "credentialsSecretRef": {"name": "minio"}},
                "format": format,
                // Parquet objects split in windows of their row groups' midpoints.
                "chunking": {"chunkSize": if name == "parquet-windows" { "64Ki" } else { "1Mi" },
                    "parallelism": 4},
                "processor": {"sql": sql, "output": output},
            }
        });
        common::json_merge(&mut value, json!({"spec": {"source": source}}));
        let scan: S3ParallelScan = serde_json::from_value(value).unwrap();
        let api = api.clone();
        async move { api.create(&PostParams::default(), &scan).await.unwrap() }
    };
    let csv = json!({"csv": {}});
    let by_name = json!({"csv": {}, "schema": "UnionByName"});
    futures::future::join_all([
        create(
            "parquet",
            json!({"glob": "pq/**/*.parquet"}),
            json!({"parquet": {}}),
            "SELECT COUNT(*), SUM(v), MAX(n), MAX(month) FROM S3Object WHERE month <= 2",
        ),
        create(
            "parquet-folders",
            json!({"glob": "pq/month=*/data.parquet"}),
            json!({"parquet": {}}),
            "SELECT COUNT(*), SUM(v), MAX(n), MAX(month) FROM S3Object WHERE month <= 2",
        ),
        create(
            "parquet-windows",
            json!({"glob": "pq/**/*.parquet"}),
            json!({"parquet": {}}),
            "SELECT COUNT(*), SUM(v), MAX(n), MAX(month) FROM S3Object WHERE month <= 2",
        ),
        create(
            "parquet-rows",
            json!({"glob": "pq/**/*.parquet"}),
            json!({"parquet": {}}),
            "SELECT n, v FROM S3Object WHERE month <= 2 AND v < 3",
        ),
        // Chunk 0 (month=1) keeps its 150 rows, chunk 1 crosses the LIMIT and runs again to 50.
        create(
            "parquet-rows-limit",
            json!({"glob": "pq/**/*.parquet"}),
            json!({"parquet": {}}),
            "SELECT n, v FROM S3Object WHERE month <= 2 AND v < 3 LIMIT 200",
        ),
        create(
            "keys",
            json!({"keys": ["csv/c.csv", "csv/a.csv"]}),
            by_name.clone(),
            "SELECT COUNT(*), SUM(x), SUM(y) FROM S3Object",
        ),
        create(
            "manifest",
            json!({"manifest": {"key": "lists/batch.csv"}}),
            by_name.clone(),
            "SELECT COUNT(*), SUM(x), SUM(y) FROM S3Object",
        ),
        create(
            "manifest-pinned",
            json!({"manifest": {"bucket": bucket.name, "key": "lists/batch.csv", "etag": "\"0000\""}}),
            by_name.clone(),
            "SELECT COUNT(*) FROM S3Object",
        ),
        create(
            "union",
            json!({"glob": "csv/*.csv"}),
            by_name,
            "SELECT COUNT(*), SUM(id), SUM(x), SUM(y) FROM S3Object",
        ),
        create(
            "jsonl",
            json!({"glob": "jl/*.jsonl"}),
            json!({"jsonLines": {}}),
            "SELECT COUNT(*), SUM(s.a), MAX(_file), COUNT(_mtime) FROM S3Object s",
        ),
        create(
            "strict",
            json!({"glob": "csv/*.csv"}),
            csv.clone(),
            "SELECT COUNT(*) FROM S3Object",
        ),
        create(
            "nothing",
            json!({"glob": "none/*.csv"}),
            csv.clone(),
            "SELECT COUNT(*) FROM S3Object",
        ),
        create(
            "empty",
            json!({"glob": "none/*.csv", "allowEmpty": true}),
            csv.clone(),
            "SELECT COUNT(*), SUM(x) FROM S3Object",
        ),
        create(
            "all-pruned",
            json!({"glob": "pq/**/*.parquet"}),
            json!({"parquet": {}}),
            "SELECT COUNT(*), SUM(v) FROM S3Object WHERE month > 3",
        ),
        create(
            "too-many",
            json!({"glob": "pq/**/*.parquet", "maxObjects": 2}),
            json!({"parquet": {}}),
            "SELECT COUNT(*) FROM S3Object",
        ),
    ])
    .await;
    let result = |status: &s3flow::api::scan::S3ParallelScanStatus| {
        serde_json::Value::Object(status.result.clone().unwrap())
    };
    let status = common::scan_succeeded(&api, "parquet", 240).await;
    let sum_v: u64 = (0..rows).map(|i| i % 1000).sum();
    assert_eq!(
        result(&status),
        json!({"COUNT(*)": 2 * rows, "SUM(v)": 2 * sum_v, "MAX(n)": rows - 1, "MAX(month)": 2})
    );
    let objects = status.objects.clone().unwrap();
    assert_eq!(
        (objects.matched, objects.pruned, objects.scanned),
        (3, 1, 2)
    );
    // The same answer from a glob naming the partition folders: month=3 is never listed.
    let folders = common::scan_succeeded(&api, "parquet-folders", 240).await;
    assert_eq!(result(&folders), result(&status));
    let objects = folders.objects.clone().unwrap();
    assert_eq!(
        (objects.matched, objects.pruned, objects.pruned_folders),
        (2, 0, 1)
    );
    // The same answer from windows of the objects, each its row groups whose midpoints lie in
    // it (some windows hold none): every row group once.
    let windows = common::scan_succeeded(&api, "parquet-windows", 240).await;
    assert_eq!(result(&windows), result(&status));
    let listing = windows.listing.clone().unwrap();
    assert!(
        listing.chunks as u64 >= 2 * parquet.len() as u64 / (64 << 10),
        "{} chunks of two {}-byte objects",
        listing.chunks,
        parquet.len()
    );
    // Each object's selected rows, in key order, as Parquet parts of one object each.
    let selected: Vec<(i64, i64)> = (0..rows as i64)
        .filter(|n| n % 1000 < 3)
        .map(|n| (n, n % 1000))
        .collect();
    for (name, want) in [
        ("parquet-rows", [&selected[..], &selected[..]].concat()),
        (
            "parquet-rows-limit",
            [&selected[..], &selected[..50]].concat(),
        ),
    ] {
        let status = common::scan_succeeded(&api, name, 240).await;
        assert_eq!(result(&status), json!({"rows": want.len()}), "{name}");
        assert_eq!(status.total_chunks, Some(2), "{name}: one object a chunk");
        let mut written = Vec::new();
        let parts = bucket.keys(&format!("{name}/part-")).await;
        assert_eq!(parts.len(), 2, "{name}: {parts:?}");
        for key in parts {
            assert!(key.ends_with(".parquet"), "{key}");
            written.extend(parquet_pairs(bucket.get(&key).await, ["n", "v"]));
        }
        assert_eq!(
            written, want,
            "{name}: the parts hold the rows in key order"
        );
    }
    bucket.assert_no_uploads_left().await;
    let status = common::scan_succeeded(&api, "keys", 240).await;
    assert_eq!(
        result(&status),
        json!({"COUNT(*)": 3, "SUM(x)": 70, "SUM(y)": 8})
    );
    let status = common::scan_succeeded(&api, "manifest", 240).await;
    assert_eq!(
        result(&status),
        json!({"COUNT(*)": 3, "SUM(x)": 70, "SUM(y)": 8})
    );
    assert_eq!(
        status.listing.as_ref().unwrap().first_key.as_deref(),
        Some("csv/c.csv"),
        "the manifest's order"
    );
    let status = common::scan_succeeded(&api, "union", 240).await;
    assert_eq!(
        result(&status),
        json!({"COUNT(*)": 4, "SUM(id)": 10, "SUM(x)": 70, "SUM(y)": 15})
    );
    let status = common::scan_succeeded(&api, "jsonl", 240).await;
    assert_eq!(
        result(&status),
        json!({"COUNT(*)": 3, "SUM(s.a)": 7, "MAX(_file)": "2.jsonl", "COUNT(_mtime)": 3})
    );
    let status = common::scan_succeeded(&api, "empty", 240).await;
    assert_eq!(result(&status), json!({"COUNT(*)": 0, "SUM(x)": null}));
    // Every object pruned: the query still knows the first object's columns and partitions.
    let status = common::scan_succeeded(&api, "all-pruned", 240).await;
    assert_eq!(result(&status), json!({"COUNT(*)": 0, "SUM(v)": null}));
    let objects = status.objects.clone().unwrap();
    assert_eq!(
        (objects.matched, objects.pruned, objects.planned),
        (3, 3, 0)
    );
    // b.csv and c.csv both mismatch a.csv's header, each in a chunk of its own: whichever fails
    // first ends the scan, named with its key and both headers.
    for (name, reason, says) in [
        (
            "strict",
            "ChunksFailed",
            &[
                "csv/b.csv has columns [\"y\", \"id\"], expected [\"id\", \"x\"]",
                "csv/c.csv has columns [\"id\", \"x\", \"y\"], expected [\"id\", \"x\"]",
            ][..],
        ),
        ("nothing", "NoObjects", &["selects no object"]),
        (
            "manifest-pinned",
            "ObjectChanged",
            &["the scan pins \"0000\""],
        ),
        ("too-many", "TooManyObjects", &["more than 2 objects"]),
    ] {
        let scan = common::scan_finished(&api, name, 240).await;
        assert_eq!(scan.status.as_ref().unwrap().phase, Phase::Failed, "{name}");
        let (got, message) = ready_condition(&scan);
        assert_eq!(got, reason, "{name}: {message}");
        assert!(
            says.iter().any(|says| message.contains(says)),
            "{name}: {message}"
        );
        assert!(!message.contains("(bytes "), "{name}: {message}");
        assert_event(&env.client, &ns, name, reason, "Warning").await;
    }
    common::delete_namespace(&env.client, &ns).await;
}

/// Objects replaced after the listing, before their chunk reads them (the workers' reads of them
/// are delayed by a proxy until then): `onObjectChange: Skip` leaves them out and names them, the
/// default fails the scan, and one more than `maxFailedObjects` fails it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn objects_changed_after_listing_are_skipped_or_fail_the_scan() {
    let (env, ns, _controller) = scenario("scan-changed").await;
    let env = &env;
    credentials_secret(&env.client, &ns, "minio").await;
    let bucket = Bucket::create(env, "scan-changed").await;
    for key in ["a", "b", "c"] {
        bucket
            .put(&format!("d/{key}.csv"), b"n\n1\n2\n".to_vec())
            .await;
    }
    let proxy = common::proxy::Proxy::start(env.s3_endpoint.trim_start_matches("http://")).await;
    // The listing and the first object's planning pass; the reads of b and c wait.
    proxy.delay(|head| {
        head.starts_with("GET ") && (head.contains("/d/b.csv") || head.contains("/d/c.csv"))
    });
    let api: Api<S3ParallelScan> = Api::namespaced(env.client.clone(), &ns);
    for (name, source) in [
        (
            "skip",
            json!({"onObjectChange": "Skip", "maxFailedObjects": 2}),
        ),
        ("fail", json!({})),
        (
            "too-few",
            json!({"onObjectChange": "Skip", "maxFailedObjects": 1}),
        ),
    ] {
        let mut value = json!({
            "apiVersion": "s3flow.io/v1alpha1", "kind": "S3ParallelScan",
            "metadata": {"name": name},
            "spec": {
                "source": {"bucket": bucket.name, "glob": "d/*.csv", "endpoint": proxy.url(),
                    "forcePathStyle": true, "credentialsSecretRef": {"name": "minio"}},
                "format": {"csv": {}},
                "processor": {"sql": "SELECT COUNT(*), SUM(n) FROM S3Object"},
            }
        });
        common::json_merge(&mut value, json!({"spec": {"source": source}}));
        let scan: S3ParallelScan = serde_json::from_value(value).unwrap();
        api.create(&PostParams::default(), &scan).await.unwrap();
    }
    // Every scan has listed and planned, and its one chunk's worker waits on b's read.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut planned = 0;
        for name in ["skip", "fail", "too-few"] {
            let scan = api.get(name).await.unwrap();
            planned += usize::from(scan.status.is_some_and(|s| s.total_chunks == Some(1)));
        }
        if planned == 3 && proxy.delayed.load(Ordering::SeqCst) >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the workers never read b");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bucket.put("d/b.csv", b"n\n100\n".to_vec()).await;
    bucket
        .s3
        .delete_object()
        .bucket(&bucket.name)
        .key("d/c.csv")
        .send()
        .await
        .unwrap();
    proxy.heal();
    let status = common::scan_succeeded(&api, "skip", 180).await;
    assert_eq!(
        serde_json::Value::Object(status.result.clone().unwrap()),
        json!({"COUNT(*)": 2, "SUM(n)": 3}),
        "only a, as listed, counts"
    );
    let objects = status.objects.clone().unwrap();
    assert_eq!(
        (objects.planned, objects.scanned, objects.skipped),
        (3, 1, 2)
    );
    // Named as they were found, which planning a few at once does in no set order.
    let mut named: Vec<(&str, &str)> = objects
        .failures
        .iter()
        .map(|f| (f.key.as_str(), f.reason.as_str()))
        .collect();
    named.sort();
    assert_eq!(
        named,
        [("d/b.csv", "ObjectChanged"), ("d/c.csv", "ObjectNotFound")]
    );
    // The manifest lists each object, the two left out with why.
    let url = status.manifest.clone().unwrap();
    let key = url.strip_prefix(&format!("s3://{}/", bucket.name)).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&bucket.get(key).await).unwrap();
    let lines = bucket.manifest_lines(&manifest, "objects").await;
    let listed: Vec<(&str, &str, u64)> = lines
        .iter()
        .map(|o| {
            let (key, status) = (o["key"].as_str().unwrap(), o["status"].as_str().unwrap());
            (key, status, o["records"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("d/a.csv", "scanned", 2),
            ("d/b.csv", "skipped", 0),
            ("d/c.csv", "skipped", 0)
        ]
    );
    let error = lines[1]["error"].as_str().unwrap();
    assert!(error.starts_with("ObjectChanged: "), "{error}");
    for name in ["fail", "too-few"] {
        let scan = common::scan_finished(&api, name, 180).await;
        assert_eq!(scan.status.as_ref().unwrap().phase, Phase::Failed, "{name}");
        let (reason, message) = ready_condition(&scan);
        assert!(
            message.contains("d/b.csv") || message.contains("changed"),
            "{name}: {reason}: {message}"
        );
    }
    common::delete_namespace(&env.client, &ns).await;
}
