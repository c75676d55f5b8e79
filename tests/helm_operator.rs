//! The operator as users install it: `helm install` into the real cluster, its pod run by the node
//! agent as the chart's ServiceAccount (so the chart's RBAC is what it has), and an S3Ingest applied
//! with kubectl-style manifests goes to Succeeded.

mod common;

use std::process::Command;

use common::http_source::{Behaviour, Body, serve};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, PostParams};
use s3flow::api::Phase;
use s3flow::api::ingest::S3Ingest;
use serde_json::json;

fn helm(args: &[&str]) -> String {
    let out = Command::new("helm")
        .args(args)
        .output()
        .expect("helm on PATH");
    assert!(
        out.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installed_operator_ingests_with_its_own_rbac() {
    let env = common::env().await;
    let client = env.client.clone();
    let ns = common::namespace(&client, "helm").await;
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/s3flow");
    // The CRDs come from the chart's crds/ (other tests may have applied the same ones already).
    helm(&[
        "install",
        "s3flow",
        chart,
        "--namespace",
        &ns,
        "--wait",
        "--timeout",
        "120s",
        "--set",
        "ingest.allowSourceCidrs={127.0.0.1/32}",
    ]);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment = deployments.get("s3flow").await.unwrap();
    assert_eq!(deployment.status.unwrap().available_replicas, Some(1));
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let operator = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=s3flow"))
        .await
        .unwrap();
    assert_eq!(
        operator.items[0]
            .spec
            .as_ref()
            .unwrap()
            .service_account_name
            .as_deref(),
        Some("s3flow")
    );

    common::minio::credentials_secret(&client, &ns, "minio").await;
    let bucket = common::minio::Bucket::create(&env, "helm").await;
    let len = 12 * 1024 * 1024 + 5;
    let source = serve(Behaviour::new(len)).await;
    let ingests: Api<S3Ingest> = Api::namespaced(client.clone(), &ns);
    let ingest: S3Ingest = serde_json::from_value(json!({
        "apiVersion": "s3flow.io/v1alpha1", "kind": "S3Ingest",
        "metadata": {"name": "through-helm"},
        "spec": {
            "source": {"url": source.url},
            "destination": {"bucket": bucket.name, "key": "through-helm.bin", "endpoint": env.s3_endpoint,
                "forcePathStyle": true, "credentialsSecretRef": {"name": "minio"}},
        }
    }))
    .unwrap();
    ingests
        .create(&PostParams::default(), &ingest)
        .await
        .unwrap();
    let done = common::wait(
        ingests.clone(),
        "through-helm",
        |o: Option<&S3Ingest>| {
            o.and_then(|o| o.status.as_ref())
                .is_some_and(|s| s.phase == Phase::Succeeded)
        },
        120,
    )
    .await;
    assert_eq!(
        done.status.unwrap().checksum,
        Some(Body { len, seed: 1 }.sha256())
    );

    // Uninstall and wait until the operator's pod is gone, so no other test meets this operator.
    helm(&[
        "uninstall",
        "s3flow",
        "--namespace",
        &ns,
        "--wait",
        "--timeout",
        "60s",
    ]);
    for pod in operator.items {
        common::wait_deleted(
            pods.clone(),
            &pod.metadata.name.unwrap(),
            &pod.metadata.uid.unwrap(),
            60,
        )
        .await;
    }
    common::delete_namespace(&client, &ns).await;
}
