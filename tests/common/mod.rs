//! Shared by the tests that run against the local environment (`tests/cluster/up.sh`): the real
//! kube-apiserver, controller manager, scheduler, node agent and MinIO on 127.0.0.1.
#![allow(dead_code)] // each test crate uses its own subset

pub mod cli;
pub mod controller;
pub mod hostile_endpoint;
pub mod http_source;
pub mod minio;
pub mod proxy;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::{Api, Client, Resource};
use s3flow::api::Phase;
use s3flow::api::scan::{S3ParallelScan, S3ParallelScanStatus};
use serde::de::DeserializeOwned;

const NOT_UP: &str = "the local environment is not running: run `tests/run`, or `tests/cluster/up.sh` \
                      and `source /tmp/s3flow-env/env.sh` before `cargo test`";

/// The running environment, from the variables `tests/cluster/up.sh` writes to env.sh.
pub struct TestEnv {
    pub client: Client,
    pub s3_endpoint: String,
    pub env_dir: std::path::PathBuf,
}

pub async fn env() -> TestEnv {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} unset: {NOT_UP}"));
    let s3_endpoint = var("S3FLOW_TEST_S3_ENDPOINT");
    let env_dir = var("S3FLOW_ENV_DIR").into();
    var("KUBECONFIG");
    let client = Client::try_default().await.expect(NOT_UP);
    TestEnv {
        client,
        s3_endpoint,
        env_dir,
    }
}

/// A name no other test run uses: `prefix-<hex>`.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{:x}",
        (nanos ^ (std::process::id() as u128) << 32) & 0xff_ffff_ffff
    )
}

/// Creates a fresh namespace for one test.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = unique(prefix);
    let api: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.clone());
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    // Pods need the namespace's default ServiceAccount, which the real controller creates.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), &name);
    wait(
        accounts,
        "default",
        |sa: Option<&k8s_openapi::api::core::v1::ServiceAccount>| sa.is_some(),
        30,
    )
    .await;
    name
}

pub async fn delete_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::background()).await;
}

/// Waits up to `seconds` for `condition` on the named object; panics with the last state otherwise.
pub async fn wait<K, C>(api: Api<K>, name: &str, condition: C, seconds: u64) -> K
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    C: Condition<K>,
{
    match tokio::time::timeout(
        Duration::from_secs(seconds),
        await_condition(api.clone(), name, condition),
    )
    .await
    {
        Ok(Ok(Some(obj))) => obj,
        Ok(Ok(None)) => panic!("{name} was deleted while waiting"),
        Ok(Err(e)) => panic!("watching {name}: {e}"),
        Err(_) => panic!(
            "{name} not there after {seconds}s; last seen: {:#?}",
            api.get_opt(name).await
        ),
    }
}

/// Waits up to `seconds` until the object with `uid` is gone.
pub async fn wait_deleted<K>(api: Api<K>, name: &str, uid: &str, seconds: u64)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let gone = await_condition(api.clone(), name, conditions::is_deleted(uid));
    match tokio::time::timeout(Duration::from_secs(seconds), gone).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("watching {name}: {e}"),
        Err(_) => panic!(
            "{name} still there after {seconds}s: {:#?}",
            api.get_opt(name).await
        ),
    }
}

/// Waits up to `seconds` until the scan has ended, Succeeded or Failed.
pub async fn scan_finished(api: &Api<S3ParallelScan>, name: &str, seconds: u64) -> S3ParallelScan {
    wait(
        api.clone(),
        name,
        |s: Option<&S3ParallelScan>| {
            s.and_then(|s| s.status.as_ref())
                .is_some_and(|s| matches!(s.phase, Phase::Succeeded | Phase::Failed))
        },
        seconds,
    )
    .await
}

/// Waits until the scan has ended and asserts that it succeeded; its status.
pub async fn scan_succeeded(
    api: &Api<S3ParallelScan>,
    name: &str,
    seconds: u64,
) -> S3ParallelScanStatus {
    let status = scan_finished(api, name, seconds).await.status.unwrap();
    assert_eq!(
        status.phase,
        Phase::Succeeded,
        "{name}: {:?}",
        status.conditions
    );
    status
}

/// Installs the CRDs that `s3flow crd` prints, by server-side apply, and waits until they serve.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in s3flow::api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply("s3flow-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        wait(api.clone(), &name, conditions::is_crd_established(), 30).await;
    }
}

/// Runs `program` with `stdin` and returns its stdout; panics with its output when it fails.
pub fn run(program: &str, args: &[&str], stdin: &[u8]) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Merges `patch` into `target`: objects key by key, anything else replaced.
pub fn json_merge(target: &mut serde_json::Value, patch: serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                json_merge(t.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}
