//! How GitOps tools see s3flow resources in the real cluster: the kstatus library (Flux, kpt,
//! cli-utils) and the Argo CD health check of `charts/s3flow/argocd`, both run by the s3flow-gitops
//! helper (tests/gitops) on the objects as the API server returns them, while running, done and
//! failed; and a finished ingest applied again does no work.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::controller::{Controller, assert_event};
use common::http_source::{Behaviour, serve};
use common::minio::{Bucket, credentials_secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use s3flow::api::Phase;
use s3flow::api::ingest::S3Ingest;
use s3flow::api::scan::S3ParallelScan;
use serde::{Deserialize, Serialize};
use serde_json::json;

const MIB: u64 = 1 << 20;
const ARGOCD_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/s3flow/argocd");
/// The field manager a GitOps tool would apply with.
const MANAGER: &str = "s3flow-gitops-test";

/// What a tool says about an object: `{"status": ..., "message": ...}`.
#[derive(Deserialize, Debug)]
struct Verdict {
    status: String,
    message: String,
}

async fn helper(args: &[&str], obj: &serde_json::Value) -> Verdict {
    let bin = std::env::var("S3FLOW_GITOPS_BIN").unwrap_or_else(|_| {
        panic!(
            "S3FLOW_GITOPS_BIN unset: source the env.sh of a local environment brought up by \
             tests/cluster/up.sh (an environment started before tests/gitops existed needs \
             tests/cluster/down.sh first)"
        )
    });
    let out = common::run(&bin, args, &serde_json::to_vec(obj).unwrap());
    serde_json::from_str(&out).unwrap()
}

/// A just-created object: the schema's default status marks it as not yet observed, so kstatus
/// does not take it for a finished one before the operator's first status write.
async fn assert_unobserved(fresh: &impl Serialize, kind: &str, observed_generation: Option<i64>) {
    assert_eq!(observed_generation, Some(0));
    let (kstatus, argo) = assert_seen(fresh, "InProgress", "Progressing").await;
    assert_eq!(
        kstatus.message,
        format!("{kind} generation is 1, but latest observed generation is 0")
    );
    assert_eq!(argo.message, "Waiting for the operator");
}

/// Runs kstatus and the Argo CD check on `obj`, asserts the statuses they give and returns the
/// verdicts, kstatus first.
async fn assert_seen(obj: &impl Serialize, kstatus: &str, argo: &str) -> (Verdict, Verdict) {
    let value = serde_json::to_value(obj).unwrap();
    assert!(
        value["apiVersion"].is_string() && value["kind"].is_string(),
        "{value}"
    );
    let lua = format!("{ARGOCD_DIR}/health.lua");
    let seen = (
        helper(&["kstatus"], &value).await,
        helper(&["argo-health", &lua], &value).await,
    );
    assert_eq!(
        (seen.0.status.as_str(), seen.1.status.as_str()),
        (kstatus, argo),
        "{seen:?} for {value:#}"
    );
    seen
}

fn ingest_phase(o: Option<&S3Ingest>) -> Option<Phase> {
    o.and_then(|o| o.status.as_ref()).map(|s| s.phase)
}

fn scan_phase(o: Option<&S3ParallelScan>) -> Option<Phase> {
    o.and_then(|o| o.status.as_ref()).map(|s| s.phase)
}

fn ingest_spec(url: &str, bucket: &Bucket, key: &str) -> serde_json::Value {
    json!({
        "source": {"url": url},
        "destination": {"bucket": bucket.name, "key": key, "endpoint": bucket.endpoint,
            "forcePathStyle": true, "credentialsSecretRef": {"name": "minio"}},
        "transfer": {"partSize": "5Mi", "concurrency": 2},
    })
}

/// Server-side apply, as Argo CD and Flux do.
async fn apply<K>(api: &Api<K>, kind: &str, name: &str, extra: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut value = json!({
        "apiVersion": "s3flow.io/v1alpha1", "kind": kind, "metadata": {"name": name},
    });
    common::json_merge(&mut value, extra);
    api.patch(name, &PatchParams::apply(MANAGER), &Patch::Apply(&value))
        .await
        .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"))
}

/// The message of the condition `type_` among `conditions`.
fn message(conditions: &[Condition], type_: &str) -> String {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions:?}"))
        .message
        .clone()
}

/// Events about `name`, each with its resourceVersion (a repeated Event changes it).
async fn events_of(client: &kube::Client, ns: &str, name: &str) -> Vec<(String, Option<String>)> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut events: Vec<_> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.name_any(), e.metadata.resource_version))
        .collect();
    events.sort();
    events
}

/// When the operator last changed the status: the time of its managedFields entry for it.
fn status_written(obj: &S3Ingest) -> Option<String> {
    obj.managed_fields()
        .iter()
        .find(|m| {
            m.manager.as_deref() == Some(s3flow::controller::MANAGER)
                && m.subresource.as_deref() == Some("status")
        })
        .and_then(|m| m.time.as_ref())
        .map(|t| t.0.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn gitops_tools_read_status() {
    readme_snippet_is_the_script();
    let env = common::env().await;
    common::install_crds(&env.client).await;
    let ns = common::namespace(&env.client, "gitops").await;
    credentials_secret(&env.client, &ns, "minio").await;
    let bucket = Bucket::create(&env, "gitops").await;
    // This namespace only: an operator of all namespaces would take other tests' resources.
    let _controller = Controller::start(
        &env,
        "gitops",
        &[
            "--namespace",
            &ns,
            "--allow-source-cidr",
            "127.0.0.1/32",
            "--status-interval",
            "1",
        ],
    );
    tokio::join!(
        ingest_runs_succeeds_and_stays_done(&env, &ns, &bucket),
        ingest_fails(&env, &ns, &bucket),
        scans_wait_succeed_and_fail(&env, &ns, &bucket),
    );
    common::delete_namespace(&env.client, &ns).await;
    // Deleted while the operator still runs, so that it releases its finalizers.
    let ingests: Api<S3Ingest> = Api::namespaced(env.client.clone(), &ns);
    let scans: Api<S3ParallelScan> = Api::namespaced(env.client.clone(), &ns);
    for _ in 0..100 {
        let left = ingests
            .list(&ListParams::default())
            .await
            .map(|l| l.items.len());
        let left_scans = scans
            .list(&ListParams::default())
            .await
            .map(|l| l.items.len());
        if matches!((left, left_scans), (Ok(0), Ok(0))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The argocd-cm snippet of the chart's README holds exactly health.lua, under both kinds' keys.
fn readme_snippet_is_the_script() {
    let script = std::fs::read_to_string(format!("{ARGOCD_DIR}/health.lua")).unwrap();
    let readme = std::fs::read_to_string(format!("{ARGOCD_DIR}/README.md")).unwrap();
    let block = readme
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a yaml block in the README");
    let config_map: serde_json::Value = yaml_serde::from_str(block).unwrap();
    for kind in ["S3Ingest", "S3ParallelScan"] {
        assert_eq!(
            config_map["data"][format!("resource.customizations.health.s3flow.io_{kind}")],
            json!(script),
            "README snippet for {kind} differs from health.lua"
        );
    }
}

/// No status yet, Running with progress, Succeeded; then the same spec applied again, and again
/// with a label, changes nothing: no copy, no status write, no Event.
async fn ingest_runs_succeeds_and_stays_done(env: &common::TestEnv, ns: &str, bucket: &Bucket) {
    let api: Api<S3Ingest> = Api::namespaced(env.client.clone(), ns);
    // One throttled stream: about 5 s of transfer, long enough to be seen running.
    let source = serve(Behaviour {
        ranges: false,
        throttle: Some(Duration::from_millis(20)),
        ..Behaviour::new(16 * MIB)
    })
    .await;
    let spec = json!({"spec": ingest_spec(&source.url, bucket, "slow.bin")});
    let fresh = apply(&api, "S3Ingest", "slow", spec.clone()).await;
    assert_unobserved(
        &fresh,
        "S3Ingest",
        fresh.status.as_ref().unwrap().observed_generation,
    )
    .await;

    let running = common::wait(
        api.clone(),
        "slow",
        |o: Option<&S3Ingest>| {
            o.and_then(|o| o.status.as_ref())
                .is_some_and(|s| s.phase == Phase::Running && s.progress.is_some())
        },
        30,
    )
    .await;
    let status = running.status.as_ref().unwrap();
    let (kstatus, argo) = assert_seen(&running, "InProgress", "Progressing").await;
    let reconciling = message(&status.conditions, "Reconciling");
    assert_eq!(kstatus.message, reconciling);
    assert_eq!(
        argo.message,
        format!("{reconciling} ({})", status.progress.as_ref().unwrap())
    );

    let done = common::wait(
        api.clone(),
        "slow",
        |o: Option<&S3Ingest>| ingest_phase(o) == Some(Phase::Succeeded),
        60,
    )
    .await;
    let (kstatus, argo) = assert_seen(&done, "Current", "Healthy").await;
    assert_eq!(kstatus.message, "Resource is Ready");
    let ready = message(&done.status.as_ref().unwrap().conditions, "Ready");
    assert!(ready.starts_with("copied 16777216 bytes"), "{ready}");
    assert_eq!(argo.message, ready);
    // The same object as if its spec had just changed: a status for an older generation.
    let mut ahead = serde_json::to_value(&done).unwrap();
    ahead["metadata"]["generation"] = json!(done.metadata.generation.unwrap() + 1);
    let (kstatus, argo) = assert_seen(&ahead, "InProgress", "Progressing").await;
    assert!(
        kstatus.message.contains("latest observed generation is"),
        "{kstatus:?}"
    );
    assert_eq!(argo.message, "Waiting for the operator");

    // Applied again unchanged: the API server has nothing to write.
    assert_event(&env.client, ns, "slow", "Succeeded", "Normal").await;
    let done = api.get("slow").await.unwrap();
    let events = events_of(&env.client, ns, "slow").await;
    let head = |key: &'static str| async move {
        let object = bucket
            .s3
            .head_object()
            .bucket(&bucket.name)
            .key(key)
            .send()
            .await
            .unwrap();
        (object.e_tag, object.last_modified)
    };
    let object = head("slow.bin").await;
    let requests = source.requests.load(Ordering::SeqCst);
    let same = apply(&api, "S3Ingest", "slow", spec.clone()).await;
    assert_eq!(same.resource_version(), done.resource_version());
    // With a label: a new resourceVersion, the same generation, and still nothing to do.
    let mut labelled = spec;
    common::json_merge(
        &mut labelled,
        json!({"metadata": {"labels": {"team": "data"}}}),
    );
    let relabelled = apply(&api, "S3Ingest", "slow", labelled).await;
    assert_ne!(relabelled.resource_version(), done.resource_version());
    assert_eq!(relabelled.metadata.generation, done.metadata.generation);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = api.get("slow").await.unwrap();
    assert_eq!(after.status, done.status, "status rewritten");
    assert!(
        status_written(&done).is_some(),
        "{:?}",
        done.managed_fields()
    );
    assert_eq!(status_written(&after), status_written(&done));
    assert_eq!(after.resource_version(), relabelled.resource_version());
    assert_eq!(events_of(&env.client, ns, "slow").await, events);
    assert_eq!(head("slow.bin").await, object, "object rewritten");
    assert_eq!(
        source.requests.load(Ordering::SeqCst),
        requests,
        "source read again"
    );
    assert_seen(&after, "Current", "Healthy").await;
}

/// A source that answers 404: Failed for kstatus, Degraded with the reason for Argo CD.
async fn ingest_fails(env: &common::TestEnv, ns: &str, bucket: &Bucket) {
    let api: Api<S3Ingest> = Api::namespaced(env.client.clone(), ns);
    let missing = serve(Behaviour {
        status: Some(404),
        ..Behaviour::new(1)
    })
    .await;
    apply(
        &api,
        "S3Ingest",
        "missing",
        json!({"spec": ingest_spec(&missing.url, bucket, "missing.bin")}),
    )
    .await;
    let failed = common::wait(
        api.clone(),
        "missing",
        |o: Option<&S3Ingest>| ingest_phase(o) == Some(Phase::Failed),
        30,
    )
    .await;
    let (kstatus, argo) = assert_seen(&failed, "Failed", "Degraded").await;
    let conditions = &failed.status.as_ref().unwrap().conditions;
    let stalled = conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(stalled.reason, "SourceNotFound");
    assert_eq!(kstatus.message, stalled.message);
    assert_eq!(argo.message, format!("SourceNotFound: {}", stalled.message));
}

/// A scan waiting for its ingest, one that succeeds and one whose header does not match.
async fn scans_wait_succeed_and_fail(env: &common::TestEnv, ns: &str, bucket: &Bucket) {
    let api: Api<S3ParallelScan> = Api::namespaced(env.client.clone(), ns);
    bucket
        .put("trips.csv", b"id,fare\n1,2.50\n2,3.75\n3,10.00\n".to_vec())
        .await;
    let source = json!({"bucket": bucket.name, "key": "trips.csv", "endpoint": bucket.endpoint,
        "forcePathStyle": true, "credentialsSecretRef": {"name": "minio"}});
    let count = json!({"sql": "SELECT COUNT(*) FROM S3Object"});

    // Waits for an S3Ingest that does not exist (yet): pending for as long as the test looks.
    let waiting = json!({"spec": {"source": {"ingestRef": {"name": "later"}},
        "format": {"csv": {}}, "processor": count}});
    let fresh: S3ParallelScan = apply(&api, "S3ParallelScan", "waiting", waiting).await;
    assert_unobserved(
        &fresh,
        "S3ParallelScan",
        fresh.status.as_ref().unwrap().observed_generation,
    )
    .await;
    let pending = common::wait(
        api.clone(),
        "waiting",
        |o: Option<&S3ParallelScan>| {
            o.and_then(|o| o.status.as_ref())
                .is_some_and(|s| s.conditions.iter().any(|c| c.reason == "WaitingForIngest"))
        },
        30,
    )
    .await;
    assert_eq!(scan_phase(Some(&pending)), Some(Phase::Pending));
    let (kstatus, argo) = assert_seen(&pending, "InProgress", "Progressing").await;
    let reconciling = message(&pending.status.as_ref().unwrap().conditions, "Reconciling");
    assert!(reconciling.contains("\"later\""), "{reconciling}");
    assert_eq!(kstatus.message, reconciling);
    assert_eq!(argo.message, reconciling);

    let good = json!({"spec": {"source": source, "format": {"csv": {}}, "processor": count}});
    let bad = json!({"spec": {"source": source,
        "format": {"csv": {"expectedHeaders": ["id", "price"]}}, "processor": count}});
    apply(&api, "S3ParallelScan", "counted", good).await;
    apply(&api, "S3ParallelScan", "header", bad).await;

    let failed = common::wait(
        api.clone(),
        "header",
        |o: Option<&S3ParallelScan>| scan_phase(o) == Some(Phase::Failed),
        30,
    )
    .await;
    let (kstatus, argo) = assert_seen(&failed, "Failed", "Degraded").await;
    let stalled = message(&failed.status.as_ref().unwrap().conditions, "Stalled");
    assert_eq!(kstatus.message, stalled);
    assert_eq!(argo.message, format!("HeaderMismatch: {stalled}"));

    let done = common::scan_finished(&api, "counted", 60).await;
    let status = done.status.clone().unwrap();
    let ready = message(&status.conditions, "Ready");
    assert_eq!(status.phase, Phase::Succeeded, "{ready}");
    assert_eq!(status.result.as_ref().unwrap()["COUNT(*)"], json!(3));
    let (kstatus, argo) = assert_seen(&done, "Current", "Healthy").await;
    assert_eq!(kstatus.message, "Resource is Ready");
    assert_eq!(argo.message, ready);
}
