//! The S3Ingest controller in the real cluster: `s3flow controller` runs as a process against the
//! real API server, copies from a local HTTP source into MinIO, reports progress and conditions,
//! fails bad input with a reason and an Event, aborts uploads on deletion and after a restart, and
//! never redoes a completed ingest.

mod common;

use common::controller::{Controller, assert_event};

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::http_source::{Behaviour, Body, HttpSource, serve};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use s3flow::api::Phase;
use s3flow::api::ingest::S3Ingest;
use serde_json::json;

const MIB: u64 = 1 << 20;

fn ingest(
    name: &str,
    url: &str,
    bucket: &str,
    endpoint: &str,
    extra: serde_json::Value,
) -> S3Ingest {
    let mut value = json!({
        "apiVersion": "s3flow.io/v1alpha1", "kind": "S3Ingest",
        "metadata": {"name": name},
        "spec": {
            "source": {"url": url},
            "destination": {"bucket": bucket, "key": name, "endpoint": endpoint, "forcePathStyle": true,
                "credentialsSecretRef": {"name": "minio"}},
            "transfer": {"partSize": "5Mi", "concurrency": 2},
        }
    });
    common::json_merge(&mut value, extra);
    serde_json::from_value(value).unwrap()
}

/// A test's own namespace, holding the `minio` credentials Secret, and its own bucket.
struct Tenant {
    env: common::TestEnv,
    client: kube::Client,
    ns: String,
    store: common::minio::Bucket,
}

/// A [`Tenant`], both named after `name`, with the CRDs installed.
async fn tenant(name: &str) -> Tenant {
    let env = common::env().await;
    let client = env.client.clone();
    common::install_crds(&client).await;
    let ns = common::namespace(&client, name).await;
    common::minio::credentials_secret(&client, &ns, "minio").await;
    let store = common::minio::Bucket::create(&env, name).await;
    Tenant {
        env,
        client,
        ns,
        store,
    }
}

fn phase(obj: Option<&S3Ingest>) -> Option<Phase> {
    obj.and_then(|o| o.status.as_ref()).map(|s| s.phase)
}

fn condition<'a>(
    obj: &'a S3Ingest,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    obj.status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn ingests_through_the_controller() {
    let Tenant {
        env,
        client,
        ns,
        store,
    } = tenant("ingestctl").await;
    let bucket = store.name.clone();
    let api: Api<S3Ingest> = Api::namespaced(client.clone(), &ns);
    // Loopback sources allowed; progress in status every second. Started again below, as a restart.
    let start = || {
        Controller::start(
            &env,
            "ingest-controller-test",
            &[
                "--namespace",
                &ns,
                "--allow-source-cidr",
                "127.0.0.1/32",
                "--status-interval",
                "1",
            ],
        )
    };
    let mut controller = start();

    // Success: the object arrives byte-identical, status and Events say so.
    let len = 20 * MIB + 3;
    let source = serve(Behaviour::new(len)).await;
    api.create(
        &PostParams::default(),
        &ingest("copied", &source.url, &bucket, &env.s3_endpoint, json!({})),
    )
    .await
    .unwrap();
    let done = common::wait(
        api.clone(),
        "copied",
        |o: Option<&S3Ingest>| phase(o) == Some(Phase::Succeeded),
        90,
    )
    .await;
    let status = done.status.clone().unwrap();
    let expected = Body { len, seed: 1 }.sha256();
    assert_eq!(status.checksum.as_deref(), Some(expected.as_str()));
    assert_eq!(status.bytes_transferred, Some(len as i64));
    assert_eq!(status.total_bytes, Some(len as i64));
    assert_eq!(status.progress.as_deref(), Some("100.0%"));
    assert_eq!(status.parts.as_ref().map(|p| p.completed), Some(5));
    assert_eq!(status.observed_generation, done.metadata.generation);
    assert_eq!(status.upload_id, None);
    assert_eq!(condition(&done, "Ready").status, "True");
    assert_eq!(condition(&done, "Stalled").status, "False");
    assert_eq!(store.object_sha256("copied").await, Some(expected));
    assert_event(&client, &ns, "copied", "Succeeded", "Normal").await;

    // An https source with a private CA, trusted through a ConfigMap.
    let ca = common::http_source::TestCa::new();
    let tls_body = Body {
        len: 6 * MIB + 1,
        seed: 3,
    };
    let (tls_url, _tls_server) = common::http_source::serve_tls(tls_body, &ca);
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), &ns);
    let bundle: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "private-ca"},
        "data": {"ca.crt": String::from_utf8(ca.ca_pem.clone()).unwrap()},
    }))
    .unwrap();
    config_maps
        .create(&PostParams::default(), &bundle)
        .await
        .unwrap();
    let trusted = json!({"spec": {"source": {"caBundleConfigMapRef": {"name": "private-ca"}}}});
    api.create(
        &PostParams::default(),
        &ingest("tls", &tls_url, &bucket, &env.s3_endpoint, trusted),
    )
    .await
    .unwrap();
    common::wait(
        api.clone(),
        "tls",
        |o: Option<&S3Ingest>| phase(o) == Some(Phase::Succeeded),
        90,
    )
    .await;
    assert_eq!(store.object_sha256("tls").await, Some(tls_body.sha256()));

    // Bad input: Failed with its reason, Stalled, a Warning Event, nothing left in S3.
    let unauthorized = serve(Behaviour {
        status: Some(401),
        ..Behaviour::new(1)
    })
    .await;
    let wrong: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "wrong", "labels": {"s3flow.io/secret-type": "credentials"}},
        "stringData": {"AWS_ACCESS_KEY_ID": "nobody", "AWS_SECRET_ACCESS_KEY": "not-the-secret"},
    }))
    .unwrap();
    Api::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &wrong)
        .await
        .unwrap();
    let missing = serve(Behaviour {
        status: Some(404),
        ..Behaviour::new(1)
    })
    .await;
    let cases = [
        (
            "not-found",
            missing.url.clone(),
            json!({}),
            "SourceNotFound",
        ),
        (
            "no-secret",
            source.url.clone(),
            json!({"spec": {"destination": {"credentialsSecretRef": {"name": "absent"}}}}),
            "SecretNotFound",
        ),
        (
            "bad-sum",
            source.url.clone(),
            json!({"spec": {"source": {"expectedSha256": "0".repeat(64)}}}),
            "ChecksumMismatch",
        ),
        (
            "untrusted-tls",
            tls_url.clone(),
            json!({}),
            "SourceCertificateRejected",
        ),
        (
            "unauthorized",
            unauthorized.url.clone(),
            json!({}),
            "SourceAccessDenied",
        ),
        (
            "wrong-keys",
            source.url.clone(),
            json!({"spec": {"destination": {"credentialsSecretRef": {"name": "wrong"}}}}),
            "AccessDenied",
        ),
        (
            "metadata",
            "http://169.254.169.254/latest/meta-data/iam".to_string(),
            json!({}),
            "ForbiddenAddress",
        ),
        (
            "no-bucket",
            source.url.clone(),
            json!({"spec": {"destination": {"bucket": "s3flow-absent-bucket"}}}),
            "BucketNotFound",
        ),
    ];
    for (name, url, extra, reason) in cases {
        api.create(
            &PostParams::default(),
            &ingest(name, &url, &bucket, &env.s3_endpoint, extra),
        )
        .await
        .unwrap();
        let failed = common::wait(
            api.clone(),
            name,
            |o: Option<&S3Ingest>| phase(o) == Some(Phase::Failed),
            60,
        )
        .await;
        let stalled = condition(&failed, "Stalled");
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", reason),
            "{name}: {stalled:?}"
        );
        assert_eq!(condition(&failed, "Ready").status, "False", "{name}");
        assert_event(&client, &ns, name, reason, "Warning").await;
        assert_eq!(store.object_sha256(name).await, None, "{name}");
    }
    store.assert_no_uploads_left().await;

    // Deleting a running ingest aborts its upload.
    let slow = serve(Behaviour {
        throttle: Some(Duration::from_millis(20)),
        ..Behaviour::new(64 * MIB)
    })
    .await;
    api.create(
        &PostParams::default(),
        &ingest("deleted", &slow.url, &bucket, &env.s3_endpoint, json!({})),
    )
    .await
    .unwrap();
    let running = common::wait(
        api.clone(),
        "deleted",
        |o: Option<&S3Ingest>| {
            o.and_then(|o| o.status.as_ref())
                .is_some_and(|s| s.upload_id.is_some())
        },
        60,
    )
    .await;
    api.delete("deleted", &DeleteParams::default())
        .await
        .unwrap();
    common::wait_deleted(
        api.clone(),
        "deleted",
        &running.metadata.uid.clone().unwrap(),
        60,
    )
    .await;
    store.assert_no_uploads_left().await;
    assert_eq!(store.object_sha256("deleted").await, None);

    // A controller killed mid-transfer: the next one aborts the old upload and starts over cleanly.
    let len = 24 * MIB;
    let slow = serve(Behaviour {
        throttle: Some(Duration::from_millis(5)),
        ..Behaviour::new(len)
    })
    .await;
    api.create(
        &PostParams::default(),
        &ingest("restarted", &slow.url, &bucket, &env.s3_endpoint, json!({})),
    )
    .await
    .unwrap();
    common::wait(
        api.clone(),
        "restarted",
        |o: Option<&S3Ingest>| {
            o.and_then(|o| o.status.as_ref())
                .is_some_and(|s| s.upload_id.is_some())
        },
        60,
    )
    .await;
    drop(controller);
    controller = start();
    common::wait(
        api.clone(),
        "restarted",
        |o: Option<&S3Ingest>| phase(o) == Some(Phase::Succeeded),
        120,
    )
    .await;
    assert_eq!(
        store.object_sha256("restarted").await,
        Some(Body { len, seed: 1 }.sha256())
    );
    store.assert_no_uploads_left().await;

    // Completed ingests are not redone by a restart.
    let requests = source.requests.load(Ordering::SeqCst);
    drop(controller);
    let _controller = start();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        source.requests.load(Ordering::SeqCst),
        requests,
        "a completed ingest was copied again"
    );
    let copied = api.get("copied").await.unwrap();
    assert_eq!(copied.status.unwrap().phase, Phase::Succeeded);
    common::delete_namespace(&client, &ns).await;
}

/// Ten ingests whose part buffers together need far more than the operator's memory budget, two
/// transfer slots: each streams with its share of the budget (a half), the others wait in
/// Pending (Queued) for a slot, never more run at once than the budget holds, and the operator's
/// peak memory stays within the budget plus a constant. An ingest whose buffers exceed a share
/// fails at once with InsufficientMemory instead of waiting for memory it could never get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn ingests_share_the_memory_budget() {
    let Tenant {
        env,
        client,
        ns,
        store,
    } = tenant("budget").await;
    const BUDGET: u64 = 48 * MIB;
    // Tests of this file run at once: each operator watches its own namespace only.
    let controller = Controller::start(
        &env,
        "ingest-budget-test",
        &[
            "--namespace",
            &ns,
            "--allow-cidr",
            "127.0.0.1/32",
            "--status-interval",
            "1",
            "--max-concurrent-ingests",
            "2",
            "--ingest-memory-budget",
            "48Mi",
        ],
    );
    let api: Api<S3Ingest> = Api::namespaced(client.clone(), &ns);
    let len = 24 * MIB;
    let source = serve(Behaviour {
        throttle: Some(Duration::from_millis(2)),
        ..Behaviour::new(len)
    })
    .await;
    // 8 MiB parts, 2 in flight: 32 MiB of buffers, more than a share of 24 MiB.
    api.create(
        &PostParams::default(),
        &ingest(
            "greedy",
            &source.url,
            &store.name,
            &env.s3_endpoint,
            json!({"spec": {"transfer": {"partSize": "8Mi"}}}),
        ),
    )
    .await
    .unwrap();
    // 5 MiB parts, 2 in flight: 20 MiB of buffers each, so two fit in 48 MiB and ten never do.
    let names: Vec<String> = (0..10).map(|i| format!("queued-{i}")).collect();
    for name in &names {
        api.create(
            &PostParams::default(),
            &ingest(name, &source.url, &store.name, &env.s3_endpoint, json!({})),
        )
        .await
        .unwrap();
    }
    let (mut most_running, mut saw_queued) = (0, false);
    let deadline = Instant::now() + Duration::from_secs(300);
    let ended = loop {
        let all = api.list(&Default::default()).await.unwrap().items;
        let queued: Vec<&S3Ingest> = all
            .iter()
            .filter(|i| i.name_any().starts_with("queued-"))
            .collect();
        let phases: Vec<Phase> = queued
            .iter()
            .map(|i| phase(Some(i)).unwrap_or_default())
            .collect();
        let running = phases.iter().filter(|p| **p == Phase::Running).count();
        most_running = most_running.max(running);
        saw_queued |= queued.iter().any(|i| {
            i.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.reason == "Queued" && c.message.contains("transfer slot"))
            })
        });
        if phases
            .iter()
            .all(|p| matches!(p, Phase::Succeeded | Phase::Failed))
        {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "not all ingests ended in 5 minutes: {:?}",
            all.iter().map(|i| &i.status).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for ingest in &ended {
        let name = ingest.name_any();
        if name == "greedy" {
            assert_eq!(phase(Some(ingest)), Some(Phase::Failed));
            let ready = condition(ingest, "Ready");
            assert_eq!(ready.reason, "InsufficientMemory", "{ready:?}");
            assert!(
                ready.message.contains("share") && ready.message.contains("partSize"),
                "{}",
                ready.message
            );
        } else {
            assert_eq!(
                phase(Some(ingest)),
                Some(Phase::Succeeded),
                "{name}: {:?}",
                ingest.status
            );
        }
    }
    assert!(saw_queued, "no ingest waited for a transfer slot");
    assert!(
        most_running <= 2,
        "{most_running} ingests ran at once within a budget for two"
    );
    assert_eq!(store.object_sha256("greedy").await, None);
    let expected = Body { len, seed: 1 }.sha256();
    for name in &names {
        assert_eq!(
            store.object_sha256(name).await,
            Some(expected.clone()),
            "{name}"
        );
    }
    store.assert_no_uploads_left().await;
    let peak = controller.peak_rss();
    eprintln!(
        "ten ingests of 24 MiB under a 48 MiB budget: operator peak RSS {} MiB",
        peak >> 20
    );
    // Ten at once would take 200 MiB of buffers alone.
    assert!(
        peak < BUDGET + 48 * MIB,
        "operator peak RSS {} MiB exceeds the budget (48 MiB) plus 48 MiB",
        peak >> 20
    );
    common::delete_namespace(&client, &ns).await;
}

/// The operator killed after S3 completed the upload and before the status said so: the next
/// operator recognises the object as the one it completed and ends the ingest Succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn killed_between_completion_and_status_ends_succeeded() {
    let Tenant {
        env,
        client,
        ns,
        store,
    } = tenant("complete").await;
    let minio = env.s3_endpoint.trim_start_matches("http://").to_string();
    let proxy = common::proxy::Proxy::start(&minio).await;
    // CompleteMultipartUpload goes through to MinIO; its answer never comes back.
    proxy.hold(|head| {
        head.starts_with("POST ") && head.contains("uploadId=") && !head.contains("partNumber=")
    });
    let args = [
        "--namespace",
        &ns,
        "--allow-cidr",
        "127.0.0.1/32",
        "--status-interval",
        "1",
    ];
    let mut first = Controller::start(&env, "ingest-complete-first", &args);
    let api: Api<S3Ingest> = Api::namespaced(client.clone(), &ns);
    let len = 12 * MIB + 3;
    let source = serve(Behaviour::new(len)).await;
    api.create(
        &PostParams::default(),
        &ingest(
            "completed",
            &source.url,
            &store.name,
            &proxy.url(),
            json!({}),
        ),
    )
    .await
    .unwrap();
    let mut exists = false;
    for _ in 0..600 {
        if store.object_sha256("completed").await.is_some() {
            exists = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(exists, "the upload never completed");
    first.kill();
    let before = api.get("completed").await.unwrap().status.unwrap();
    assert_eq!(before.phase, Phase::Running, "{:?}", before.conditions);
    assert_eq!(before.conditions[0].reason, "Completing");
    assert!(before.upload_id.is_some());

    proxy.heal();
    let _second = Controller::start(&env, "ingest-complete-second", &args);
    let done = common::wait(
        api.clone(),
        "completed",
        |o: Option<&S3Ingest>| matches!(phase(o), Some(Phase::Succeeded | Phase::Failed)),
        60,
    )
    .await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{:?}", status.conditions);
    let expected = Body { len, seed: 1 }.sha256();
    assert_eq!(status.checksum.as_deref(), Some(expected.as_str()));
    assert_eq!(status.upload_id, None);
    assert!(
        condition(&done, "Ready")
            .message
            .contains("the upload had completed when the operator restarted"),
        "{:?}",
        status.conditions
    );
    assert_eq!(store.object_sha256("completed").await, Some(expected));
    // Only the one request was held: CompleteMultipartUpload.
    assert_eq!(proxy.held.load(Ordering::SeqCst), 1);
    store.assert_no_uploads_left().await;
    common::delete_namespace(&client, &ns).await;
}

/// Waits up to `seconds` for ingest `name` to end, and checks that it Succeeded with the SHA-256
/// of the source's body of `len` bytes and left no upload.
async fn ends_succeeded(
    api: &Api<S3Ingest>,
    name: &str,
    len: u64,
    seconds: u64,
    store: &common::minio::Bucket,
) {
    let done = common::wait(
        api.clone(),
        name,
        |o: Option<&S3Ingest>| phase(o).is_some_and(|p| p != Phase::Running && p != Phase::Pending),
        seconds,
    )
    .await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{:?}", status.conditions);
    assert_eq!(
        status.checksum.as_deref(),
        Some(Body { len, seed: 1 }.sha256().as_str())
    );
    store.assert_no_uploads_left().await;
}

/// Requests to `source` with a Range header (resumed reads); the others read from byte 0.
fn ranged_requests(source: &HttpSource) -> usize {
    source
        .heads
        .lock()
        .unwrap()
        .iter()
        .filter(|head| head.to_ascii_lowercase().contains("\r\nrange:"))
        .count()
}

/// An operator stopped (SIGTERM, as a rollout does) while it resumes an ingest, before the resumed
/// upload is under way: it waits for the resume to be recorded, then checkpoints, so the next
/// operator resumes again. Before, it stopped at once and wrote over the ingest's length, so the
/// next one aborted the upload and read the source from the start again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn stopped_while_resuming_an_ingest_resumes_again() {
    let Tenant {
        env,
        client,
        ns,
        store,
    } = tenant("ingeststop").await;
    let api: Api<S3Ingest> = Api::namespaced(client.clone(), &ns);
    let start = || {
        Controller::start(
            &env,
            "ingest-stop-test",
            &["--namespace", &ns, "--allow-source-cidr", "127.0.0.1/32"],
        )
    };
    let len = 64 * MIB;
    // A resumed read waits 3 s for its first byte: the stop lands before the resume is recorded.
    let source = serve(Behaviour {
        throttle: Some(Duration::from_millis(10)),
        ranged_delay: Some(Duration::from_secs(3)),
        ..Behaviour::new(len)
    })
    .await;
    let transfer = json!({"spec": {"transfer": {"partSize": "5Mi", "concurrency": 2}}});
    api.create(
        &PostParams::default(),
        &ingest(
            "stopped",
            &source.url,
            &store.name,
            &env.s3_endpoint,
            transfer,
        ),
    )
    .await
    .unwrap();
    let mut controller = start();
    common::wait(
        api.clone(),
        "stopped",
        |o: Option<&S3Ingest>| {
            o.and_then(|o| o.status.as_ref())
                .and_then(|s| s.bytes_transferred)
                .is_some_and(|b| b as u64 >= 10 * MIB)
        },
        120,
    )
    .await;
    assert!(controller.stop(30), "the first operator did not stop");
    let ranged = || ranged_requests(&source);
    let ranged_before = ranged();
    // The next operator resumes; it is stopped while its ranged read waits.
    controller = start();
    for _ in 0..300 {
        if ranged() > ranged_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ranged() > ranged_before,
        "the second operator did not resume"
    );
    assert!(controller.stop(30), "the resuming operator did not stop");
    let interrupted = api.get("stopped").await.unwrap().status.unwrap();
    assert!(
        interrupted.total_bytes.is_some() && interrupted.resume_point.is_some(),
        "the resume point survives the stop: {interrupted:?}"
    );
    controller = start();
    ends_succeeded(&api, "stopped", len, 180, &store).await;
    let requests = source.heads.lock().unwrap().len();
    let from_the_start = requests - ranged();
    assert_eq!(
        from_the_start, 1,
        "a restart read the source from the start again"
    );
    drop(controller);
    common::delete_namespace(&client, &ns).await;
}

/// Five operator kills during one ingest from a source with a strong ETag: each restart resumes
/// the upload and reads again only about what S3 did not hold yet (the parts in flight at the
/// kill), because the resume point in status moves on as parts commit, not only every status
/// interval. Prints the figure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn killed_five_times_an_ingest_reads_again_little_more_than_its_parts_in_flight() {
    const KILLS: u64 = 5;
    const PART: u64 = 8 * MIB;
    const CONCURRENCY: u64 = 4;
    let Tenant {
        env,
        client,
        ns,
        store,
    } = tenant("ingestkill").await;
    let api: Api<S3Ingest> = Api::namespaced(client.clone(), &ns);
    // The default status interval (2 s): the resume point must not wait for it.
    let start = || {
        Controller::start(
            &env,
            "ingest-kill-test",
            &["--namespace", &ns, "--allow-source-cidr", "127.0.0.1/32"],
        )
    };
    let mut controller = start();
    let len = 512 * MIB;
    // At most 16 MiB/s: long enough for five kills, each after some parts committed.
    let source = serve(Behaviour {
        throttle: Some(Duration::from_millis(4)),
        ..Behaviour::new(len)
    })
    .await;
    let transfer = json!({"spec": {"transfer": {"partSize": "8Mi", "concurrency": CONCURRENCY}}});
    api.create(
        &PostParams::default(),
        &ingest(
            "killed",
            &source.url,
            &store.name,
            &env.s3_endpoint,
            transfer,
        ),
    )
    .await
    .unwrap();
    let mut committed = 0;
    for kill in 1..=KILLS {
        let at = common::wait(
            api.clone(),
            "killed",
            |o: Option<&S3Ingest>| {
                o.and_then(|o| o.status.as_ref())
                    .and_then(|s| s.bytes_transferred)
                    .is_some_and(|b| b as u64 >= committed + 3 * PART)
            },
            120,
        )
        .await;
        committed = at.status.unwrap().bytes_transferred.unwrap() as u64;
        assert!(committed < len, "finished before kill {kill}");
        // Kills come at any moment between two status intervals, not just after a write.
        tokio::time::sleep(Duration::from_millis(300 * (kill * 3 % 7))).await;
        drop(controller);
        controller = start();
    }
    ends_succeeded(&api, "killed", len, 300, &store).await;
    let served = source.bytes_served.load(Ordering::SeqCst);
    // Every restart resumed: only the first request read from byte 0.
    let requests = source.heads.lock().unwrap().len();
    let from_the_start = requests - ranged_requests(&source);
    assert_eq!(from_the_start, 1, "a restart started the ingest over");
    let again = served.saturating_sub(len);
    eprintln!(
        "{KILLS} operator kills during a {} MiB ingest ({} MiB parts, {CONCURRENCY} in flight): \
         {} MiB read from the source, {} MiB of it again ({:.1} MiB per kill)",
        len / MIB,
        PART / MIB,
        served / MIB,
        again / MIB,
        again as f64 / KILLS as f64 / MIB as f64
    );
    // Per kill: the parts in flight and buffered (at most the concurrency plus two), and what
    // streamed in the half second a resume point may wait before it is written.
    // (Before a resumed run kept the earlier run's resume point until its own first report, a
    // kill in that moment started the ingest over: 400 MiB read again over five kills.)
    let bound = KILLS * ((CONCURRENCY + 2) * PART + 16 * MIB);
    assert!(
        again <= bound,
        "read {again} bytes again, more than {bound}"
    );
    drop(controller);
    common::delete_namespace(&client, &ns).await;
}
