//! The S3Ingest controller in the real cluster: `s3flow controller` runs as a process against the
//! real API server, copies from a local HTTP source into MinIO, reports progress and conditions,
//! fails bad input with a reason and an Event, aborts uploads on deletion and after a restart, and
//! never redoes a completed ingest.

mod common;

use common::controller::{Controller, assert_event};

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::http_source::{Behaviour, Body, serve};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
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
async fn ingests_through_the_controller() {
    let env = common::env().await;
    let client = env.client.clone();
    common::install_crds(&client).await;
    let ns = common::namespace(&client, "ingestctl").await;
    common::minio::credentials_secret(&client, &ns, "minio").await;
    let store = common::minio::Bucket::create(&env, "ingestctl").await;
    let bucket = store.name.clone();
    let api: Api<S3Ingest> = Api::namespaced(client.clone(), &ns);
    // Loopback sources allowed; progress in status every second. Started again below, as a restart.
    let start = || {
        Controller::start(
            &env,
            "ingest-controller-test",
            &[
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
