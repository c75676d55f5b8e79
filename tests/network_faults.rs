//! Through a TCP proxy on loopback that resets every third connection whose answer reaches a random
//! byte of its first 256 KiB:
//! `s3flow ingest` (source and S3 both behind it), `s3flow scan` and a scan's chunk Jobs still end
//! with exactly the bytes and answers they give without it. Ranged reads resume from the last
//! byte received (same ETag), requests whose answer was lost are sent again.

mod common;

use std::sync::atomic::Ordering;

use common::controller::Controller;
use common::http_source::{Behaviour, serve};
use common::minio::{Bucket, credentials_secret};
use common::proxy::Proxy;
use kube::Api;
use kube::api::PostParams;
use s3flow::api::Phase;
use s3flow::api::scan::S3ParallelScan;
use serde_json::json;

const MIB: u64 = 1 << 20;
const RESET_EVERY: u64 = 3;

/// A proxy in front of MinIO that resets connections from the start.
async fn resetting_minio(env: &common::TestEnv) -> Proxy {
    let proxy = Proxy::start(env.s3_endpoint.trim_start_matches("http://")).await;
    proxy.reset_every(RESET_EVERY);
    proxy
}

/// `rows` CSV records of `id,amount` and their amounts' sum.
fn csv(rows: u64) -> (Vec<u8>, u64) {
    let mut data = b"id,amount,pad\n".to_vec();
    let mut sum = 0;
    for i in 0..rows {
        let amount = (i * 7919) % 1000;
        sum += amount;
        data.extend_from_slice(format!("{i},{amount},{:040}\n", i * 31).as_bytes());
    }
    (data, sum)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn ingests_through_resets_come_out_identical() {
    let env = common::env().await;
    let bucket = Bucket::create(&env, "faults-ingest").await;
    let s3 = resetting_minio(&env).await;
    let behaviour = Behaviour::new(24 * MIB);
    let expected = behaviour.body.sha256();
    let source = serve(behaviour).await;
    let (origin, path) = source.url["http://".len()..].split_once('/').unwrap();
    let source_proxy = Proxy::start(origin).await;
    source_proxy.reset_every(RESET_EVERY);
    let url = format!("{}/{path}", source_proxy.url());
    for run in 0..3 {
        let key = format!("copy-{run}");
        let args: Vec<String> = [
            url.as_str(),
            &format!("s3://{}/{key}", bucket.name),
            "--endpoint",
            &s3.url(),
            "--allow-source-cidr",
            "127.0.0.1/32",
            "--part-size",
            "5Mi",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (code, out, err, _) = common::cli::run("ingest", args).await;
        assert_eq!(code, 0, "run {run}: {err}");
        let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(summary["sha256"], expected.as_str(), "run {run}");
        assert_eq!(
            bucket.object_sha256(&key).await.as_deref(),
            Some(expected.as_str()),
            "run {run}"
        );
    }
    let resets = s3.resets.load(Ordering::SeqCst) + source_proxy.resets.load(Ordering::SeqCst);
    assert!(resets > 0, "the proxies reset no connection");
    eprintln!("3 ingests of 24 MiB through {resets} connection resets");
    bucket.assert_no_uploads_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn cli_scans_through_resets_are_exact() {
    let env = common::env().await;
    let bucket = Bucket::create(&env, "faults-scan").await;
    let rows = 400_000u64;
    let (data, sum) = csv(rows);
    let mib = data.len() as u64 / MIB;
    bucket.put("t.csv", data).await;
    let proxy = resetting_minio(&env).await;
    for run in 0..3 {
        let args: Vec<String> = [
            &format!("s3://{}/t.csv", bucket.name),
            "--endpoint",
            &proxy.url(),
            "--sql",
            "SELECT COUNT(*), SUM(amount) FROM S3Object",
            "--chunk-size",
            "2Mi",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (code, out, err, _) = common::cli::run("scan", args).await;
        assert_eq!(code, 0, "run {run}: {err}");
        let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            summary["result"],
            json!({"COUNT(*)": rows, "SUM(amount)": sum}),
            "run {run}"
        );
    }
    assert!(
        proxy.resets.load(Ordering::SeqCst) > 0,
        "the proxy reset no connection"
    );
    let resets = proxy.resets.load(Ordering::SeqCst);
    eprintln!("3 scans of {mib} MiB through {resets} connection resets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn chunk_jobs_through_resets_are_exact() {
    let env = common::env().await;
    common::install_crds(&env.client).await;
    let ns = common::namespace(&env.client, "faults-jobs").await;
    let _controller = Controller::start(
        &env,
        "faults-jobs",
        &["--namespace", &ns, "--allow-cidr", "127.0.0.1/32"],
    );
    credentials_secret(&env.client, &ns, "minio").await;
    let bucket = Bucket::create(&env, "faults-jobs").await;
    let (data, sum) = csv(200_000);
    bucket.put("t.csv", data).await;
    let proxy = resetting_minio(&env).await;
    let scan: S3ParallelScan = serde_json::from_value(json!({
        "apiVersion": "s3flow.io/v1alpha1", "kind": "S3ParallelScan",
        "metadata": {"name": "through-resets"},
        "spec": {
            "source": {"bucket": bucket.name, "key": "t.csv", "endpoint": proxy.url(),
                "forcePathStyle": true, "credentialsSecretRef": {"name": "minio"}},
            "format": {"csv": {}},
            "chunking": {"chunkSize": "1Mi", "parallelism": 4, "maxRetriesPerChunk": 0},
            "processor": {"sql": "SELECT COUNT(*), SUM(amount) FROM S3Object"},
        }
    }))
    .unwrap();
    let api: Api<S3ParallelScan> = Api::namespaced(env.client.clone(), &ns);
    api.create(&PostParams::default(), &scan).await.unwrap();
    let done = common::scan_finished(&api, "through-resets", 300).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{:?}", status.conditions);
    // No retries allowed: every chunk Job read its range through the resets in one run.
    let result = serde_json::Value::Object(status.result.unwrap_or_default());
    assert_eq!(result, json!({"COUNT(*)": 200_000, "SUM(amount)": sum}));
    let resets = proxy.resets.load(Ordering::SeqCst);
    assert!(resets > 0, "the proxy reset no connection");
    let chunks = status.total_chunks.unwrap_or_default();
    eprintln!("{chunks} chunk Jobs through {resets} connection resets");
    common::delete_namespace(&env.client, &ns).await;
}
