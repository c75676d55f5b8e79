//! The operator as users install and run it: `helm install` into the real cluster, its pods run by
//! the node agent as the chart's ServiceAccount (so the chart's RBAC is all they have), two
//! replicas electing a leader on a Lease. One release goes through the whole life: metrics during a
//! transfer, the leader killed mid-ingest, a scan, a Role missing a verb, `helm upgrade` and
//! `helm uninstall` with ingests in flight, and a reinstall that finishes them.

mod common;

use std::time::Duration;

use common::http_source::{Behaviour, Body, HttpSource, serve};
use common::minio::Bucket;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use s3flow::api::Phase;
use s3flow::api::ingest::S3Ingest;
use s3flow::api::scan::S3ParallelScan;
use serde_json::json;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/s3flow");

fn helm(args: &[&str]) -> String {
    common::run("helm", args, b"")
}

/// `helm install`/`upgrade` of release `s3flow` with the values every step here uses: two replicas,
/// each serving on its own pod address (pods share this machine's network), the chart's Lease
/// (15 s: a shorter one can be lost on a loaded machine, and a leader that loses it stops without
/// its checkpoint), and permissions bound in the test's namespace only. Returns what helm printed
/// (NOTES.txt).
fn install(verb: &str, ns: &str, extra: &[&str]) -> String {
    // Only this namespace: operators of other tests may be watching theirs.
    let watch = format!("watchNamespaces={{{ns}}}");
    let mut args = vec![
        verb,
        "s3flow",
        CHART,
        "--namespace",
        ns,
        "--wait",
        "--timeout",
        "120s",
        "--set",
        "replicaCount=2",
        "--set",
        "metrics.host=$(POD_IP)",
        "--set",
        "addressPolicy.allowCidrs={127.0.0.1/32}",
        "--set",
        &watch,
    ];
    args.extend_from_slice(extra);
    helm(&args)
}

/// The operator's running pods.
async fn operator_pods(client: &Client, ns: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=s3flow"))
        .await
        .unwrap()
        .items;
    list.retain(|p| {
        p.metadata.deletion_timestamp.is_none()
            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    });
    list
}

fn pod_ip(pod: &Pod) -> String {
    pod.status.as_ref().unwrap().pod_ip.clone().unwrap()
}

/// GET `path` from the operator in `pod`: status code and body.
async fn get(pod: &Pod, path: &str) -> (u16, String) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    // The probes have a port of their own, apart from /metrics.
    let port = match path {
        "/healthz" | "/readyz" => 8081,
        _ => 8080,
    };
    let response = http
        .get(format!("http://{}:{port}{path}", pod_ip(pod)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path} from {}: {e}", pod.name_any()));
    (
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
    )
}

/// The value of the sample `series` (name and labels as exposed) in a scrape, 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The pod name in a Lease holder identity (`<pod>_<process>`).
fn holder_pod(identity: &str) -> &str {
    identity.rsplit_once('_').map_or(identity, |(pod, _)| pod)
}

/// Waits for the leader Lease to be held by someone other than `not`; returns the holder.
async fn leader(client: &Client, ns: &str, not: Option<&str>, seconds: u64) -> String {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    for _ in 0..seconds * 5 {
        let holder = leases
            .get_opt("s3flow-controller")
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity)
            .filter(|h| !h.is_empty() && Some(h.as_str()) != not);
        if let Some(holder) = holder {
            return holder;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no leader other than {not:?} within {seconds} s");
}

fn ingest(name: &str, source: &HttpSource, bucket: &Bucket) -> S3Ingest {
    serde_json::from_value(json!({
        "apiVersion": "s3flow.io/v1alpha1", "kind": "S3Ingest",
        "metadata": {"name": name},
        "spec": {
            "source": {"url": source.url},
            "destination": {"bucket": bucket.name, "key": format!("{name}.bin"), "endpoint": bucket.endpoint,
                "forcePathStyle": true, "credentialsSecretRef": {"name": "minio"}},
            "transfer": {"partSize": "5Mi", "concurrency": 2},
        }
    }))
    .unwrap()
}

/// A source of `mib` MiB that takes several seconds to serve (ranges and an ETag, so a new
/// operator can resume it).
async fn slow_source(mib: u64) -> (HttpSource, Body) {
    let mut behaviour = Behaviour::new(mib << 20);
    behaviour.throttle = Some(Duration::from_millis(40));
    let body = behaviour.body;
    (serve(behaviour).await, body)
}

/// An ingest named `name` from a slow source of `mib` MiB, once its first bytes have moved; the
/// source (kept serving while it lives) and its body.
async fn ingest_in_flight(
    ingests: &Api<S3Ingest>,
    bucket: &Bucket,
    name: &str,
    mib: u64,
) -> (HttpSource, Body) {
    let (source, body) = slow_source(mib).await;
    ingests
        .create(&PostParams::default(), &ingest(name, &source, bucket))
        .await
        .unwrap();
    wait_ingest(ingests, name, 60, |s| s.bytes_transferred.unwrap_or(0) > 0).await;
    (source, body)
}

async fn wait_ingest<F>(api: &Api<S3Ingest>, name: &str, seconds: u64, done: F) -> S3Ingest
where
    F: Fn(&s3flow::api::ingest::S3IngestStatus) -> bool,
{
    common::wait(
        api.clone(),
        name,
        |o: Option<&S3Ingest>| o.and_then(|o| o.status.as_ref()).is_some_and(&done),
        seconds,
    )
    .await
}

async fn succeeded(api: &Api<S3Ingest>, name: &str, body: Body) -> S3Ingest {
    let done = wait_ingest(api, name, 120, |s| {
        matches!(s.phase, Phase::Succeeded | Phase::Failed)
    })
    .await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{:?}", status.conditions);
    assert_eq!(status.checksum, Some(body.sha256()));
    done
}

/// Events about `name`: (reason, note, reporting instance).
async fn events(client: &Client, ns: &str, name: &str) -> Vec<(String, String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            (
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
                e.reporting_instance.unwrap_or_default(),
            )
        })
        .collect()
}

async fn wait_event(client: &Client, ns: &str, name: &str, reason: &str) -> (String, String) {
    for _ in 0..300 {
        if let Some((_, note, instance)) = events(client, ns, name)
            .await
            .into_iter()
            .find(|e| e.0 == reason)
        {
            return (note, instance);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen = events(client, ns, name).await;
    panic!("no {reason} Event for {name}; its Events (reason, note, instance): {seen:?}");
}

/// Fails when `bucket` holds an incomplete upload, naming each (key, when initiated) beside what
/// the operator's replicas logged about uploads and the Lease.
async fn no_uploads_left(env: &common::TestEnv, bucket: &Bucket) {
    let open = bucket.open_uploads().await;
    if open.is_empty() {
        return;
    }
    let uploads: Vec<_> = open
        .iter()
        .map(|u| {
            (
                u.key().unwrap_or_default(),
                u.initiated().map(|t| t.to_string()),
            )
        })
        .collect();
    let mut logs = String::new();
    let pods = std::fs::read_dir(env.env_dir.join("node/pods"))
        .into_iter()
        .flatten();
    for pod in pods.flatten() {
        let log =
            std::fs::read_to_string(pod.path().join("containers/s3flow/log")).unwrap_or_default();
        for line in log.lines().filter(|l| {
            ["upload", "Lease", "WARN", "ERROR", "stop"]
                .iter()
                .any(|word| l.contains(word))
        }) {
            logs.push_str(&format!("{}: {line}\n", pod.file_name().to_string_lossy()));
        }
    }
    panic!("incomplete uploads left: {uploads:?}; the operator logged:\n{logs}");
}

/// Stops the operator process of `pod` with SIGKILL, as a crash would (no checkpoint, no release).
fn kill_operator(env: &common::TestEnv, pod: &Pod) {
    let pid_file = env.env_dir.join(format!(
        "node/pods/{}/containers/s3flow/pid",
        pod.uid().unwrap()
    ));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("controller"),
        "pid {pid} is not the operator"
    );
    // SAFETY: a plain signal to a process this test's environment started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
}

async fn scan_csv(bucket: &Bucket, name: &str) -> (S3ParallelScan, u64, i64) {
    let rows = 3000u64;
    let mut data = String::from("id,amount,note\n");
    let mut total = 0i64;
    for i in 0..rows {
        let amount = (i * 37 % 1000) as i64;
        total += amount;
        data.push_str(&format!("{i},{amount},\"line {i}, quoted\"\n"));
    }
    bucket.put(&format!("{name}.csv"), data.into_bytes()).await;
    let scan = serde_json::from_value(json!({
        "apiVersion": "s3flow.io/v1alpha1", "kind": "S3ParallelScan",
        "metadata": {"name": name},
        "spec": {
            "source": {"bucket": bucket.name, "key": format!("{name}.csv"), "endpoint": bucket.endpoint,
                "forcePathStyle": true, "credentialsSecretRef": {"name": "minio"}},
            "format": {"csv": {"expectedHeaders": ["id", "amount", "note"]}},
            "chunking": {"chunkSize": "16Ki", "parallelism": 4},
            "processor": {"sql": "SELECT COUNT(*) AS n, SUM(CAST(amount AS INT)) AS total FROM S3Object"},
        }
    }))
    .unwrap();
    (scan, rows, total)
}

async fn scan_succeeds(api: &Api<S3ParallelScan>, name: &str, rows: u64, total: i64) {
    let status = common::scan_succeeded(api, name, 120).await;
    let result = status.result.unwrap();
    assert_eq!(result["n"], json!(rows));
    assert_eq!(result["total"], json!(total));
}

/// Applies `examples/ingest-then-scan.yaml` with its source, bucket and endpoint replaced: a CSV
/// with the example's columns (quoted notes with commas, quotes and newlines) served by MinIO through
/// a presigned URL. The merged result must equal a sequential parse.
async fn example_pipeline_succeeds(
    client: &Client,
    ns: &str,
    bucket: &Bucket,
    ingests: &Api<S3Ingest>,
    scans: &Api<S3ParallelScan>,
) {
    let mut data = String::from("trip_id,vendor,distance,fare,payment,note\n");
    for i in 0..20_000u64 {
        let note = match i % 4 {
            0 => "\"late, \"\"rainy\"\"\nsecond line\"",
            1 => "ok",
            _ => "",
        };
        let payment = ["card", "cash", "void"][(i % 3) as usize];
        data.push_str(&format!(
            "T{i:06},v{},{}.{},{}.{:02},{payment},{note}\n",
            i % 5,
            i * 7 % 400,
            i % 10,
            250 + i * 13 % 20_000,
            i % 100
        ));
    }
    let (mut trips, mut revenue, mut longest, mut first) = (0u64, Vec::new(), f64::MIN, None);
    for row in csv::Reader::from_reader(data.as_bytes()).records() {
        let row = row.unwrap();
        if &row[4] == "void" {
            continue;
        }
        trips += 1;
        revenue.push(row[3].parse::<f64>().unwrap());
        longest = longest.max(row[2].parse::<f64>().unwrap());
        first = Some(first.map_or(row[0].to_string(), |f: String| f.min(row[0].to_string())));
    }
    bucket.put("exports/trips.csv", data.into_bytes()).await;
    let url = bucket
        .s3
        .get_object()
        .bucket(&bucket.name)
        .key("exports/trips.csv")
        .presigned(
            aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(600)).unwrap(),
        )
        .await
        .unwrap()
        .uri()
        .to_string();

    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/ingest-then-scan.yaml"
    ))
    .unwrap();
    let mut names = Vec::new();
    for doc in yaml_serde::Deserializer::from_str(&text) {
        let mut value: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        names.push(value["metadata"]["name"].as_str().unwrap().to_string());
        if value["kind"] == "S3Ingest" {
            value["spec"]["source"]["url"] = json!(url);
            common::json_merge(
                &mut value["spec"]["destination"],
                json!({"bucket": bucket.name, "endpoint": bucket.endpoint, "forcePathStyle": true,
                    "credentialsSecretRef": {"name": "minio"}}),
            );
            let ingest: S3Ingest = serde_json::from_value(value).unwrap();
            ingests
                .create(&PostParams::default(), &ingest)
                .await
                .unwrap();
        } else {
            value["spec"]["chunking"] = json!({"chunkSize": "64Ki", "parallelism": 4});
            let scan: S3ParallelScan = serde_json::from_value(value).unwrap();
            scans.create(&PostParams::default(), &scan).await.unwrap();
        }
    }
    let [ingest_name, scan_name] = [&names[0], &names[1]];
    wait_ingest(ingests, ingest_name, 120, |s| {
        s.phase != Phase::Running && s.phase != Phase::Pending
    })
    .await;
    let status = common::scan_succeeded(scans, scan_name, 120).await;
    assert!(
        status.total_chunks.unwrap() > 10,
        "{:?}",
        status.total_chunks
    );
    let result = status.result.unwrap();
    assert_eq!(result["trips"], json!(trips));
    let sum: f64 = revenue.iter().sum();
    // Fares have cents: a lost or doubled record moves the sum by at least 2.50.
    assert!(
        (result["revenue"].as_f64().unwrap() - sum).abs() < 1e-3,
        "{result:?} vs {sum}"
    );
    assert_eq!(result["longest"].as_f64(), Some(longest));
    assert_eq!(result["first_trip"], json!(first.unwrap()));
    for name in [ingest_name, scan_name] {
        let reasons: Vec<String> = events(client, ns, name)
            .await
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert!(
            !reasons.iter().any(|r| r == "Forbidden"),
            "{name}: {reasons:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn helm_installed_operator_lives_through_failover_upgrade_and_uninstall() {
    let env = common::env().await;
    let client = env.client.clone();
    let ns = common::namespace(&client, "helm").await;
    common::minio::credentials_secret(&client, &ns, "minio").await;
    let bucket = Bucket::create(&env, "helm").await;
    let ingests: Api<S3Ingest> = Api::namespaced(client.clone(), &ns);
    let scans: Api<S3ParallelScan> = Api::namespaced(client.clone(), &ns);

    // Install: CRDs from the chart's crds/ (other tests may have applied the same ones already).
    let notes = install("install", &ns, &[]);
    // The notes show the shipped example itself and how to label the Secret it names.
    assert!(
        notes.contains("kubectl label secret s3-credentials s3flow.io/secret-type=credentials"),
        "{notes}"
    );
    assert!(
        notes.contains("    kind: S3ParallelScan") && notes.contains("ingestRef:"),
        "{notes}"
    );
    assert!(
        !notes.contains("https://raw.githubusercontent.com"),
        "{notes}"
    );
    let pods = operator_pods(&client, &ns).await;
    assert_eq!(pods.len(), 2, "two replicas running");
    for pod in &pods {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some("s3flow"));
        assert_eq!(get(pod, "/healthz").await.0, 200);
        assert_eq!(get(pod, "/readyz").await.0, 200, "{}", pod.name_any());
    }
    // Exactly one replica leads and reconciles; the other stands by.
    let first = leader(&client, &ns, None, 30).await;
    let leading = pods
        .iter()
        .find(|p| p.name_any() == holder_pod(&first))
        .expect("the Lease holder is one of the pods");
    let standby = pods.iter().find(|p| p.name_any() != holder_pod(&first));
    let standby = standby.unwrap();

    // A transfer: the leader's /metrics shows bytes moving; the standby reconciles nothing.
    let (_source, body) = ingest_in_flight(&ingests, &bucket, "failover", 64).await;
    let bytes = |text: &str| sample(text, "s3flow_ingest_bytes_total");
    let (_, before) = get(leading, "/metrics").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, after) = get(leading, "/metrics").await;
    assert!(
        bytes(&after) > bytes(&before) && bytes(&before) > 0.0,
        "ingest bytes did not move: {} then {}",
        bytes(&before),
        bytes(&after)
    );
    assert_eq!(sample(&after, "s3flow_leader"), 1.0);
    assert!(sample(&after, "s3flow_reconciles_total{controller=\"ingest\"}") >= 1.0);
    let (_, idle) = get(standby, "/metrics").await;
    assert_eq!(sample(&idle, "s3flow_leader"), 0.0, "{idle}");
    assert_eq!(
        sample(&idle, "s3flow_reconciles_total{controller=\"ingest\"}"),
        0.0
    );

    // The leader dies mid-ingest: the standby takes the Lease and finishes the same upload.
    kill_operator(&env, leading);
    let second = leader(&client, &ns, Some(&first), 60).await;
    assert_eq!(
        holder_pod(&second),
        standby.name_any(),
        "the standby took over"
    );
    let done = succeeded(&ingests, "failover", body).await;
    let message = &done.status.unwrap().conditions[0].message;
    assert!(message.contains("resumed at byte"), "{message}");
    assert_eq!(
        bucket.object_sha256("failover.bin").await,
        Some(body.sha256())
    );
    let (_, instance) = wait_event(&client, &ns, "failover", "Succeeded").await;
    assert_eq!(instance, standby.name_any(), "the new leader finished it");
    no_uploads_left(&env, &bucket).await;

    // The ingest-then-scan example as written (pointed at MinIO), with nothing but the chart's
    // permissions: no Forbidden Event on the way.
    example_pipeline_succeeds(&client, &ns, &bucket, &ingests, &scans).await;

    // A Role missing one verb (create on Jobs): the refusal shows on the scan as an Event, and the
    // scan goes on once the verb is back.
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let intact = roles.get("s3flow").await.unwrap();
    let mut narrowed = intact.clone();
    for rule in narrowed.rules.iter_mut().flatten() {
        if rule.resources.iter().flatten().any(|r| r == "jobs") {
            rule.verbs.retain(|v| v != "create");
        }
    }
    roles
        .replace("s3flow", &PostParams::default(), &narrowed)
        .await
        .unwrap();
    let (scan, rows, total) = scan_csv(&bucket, "denied").await;
    scans.create(&PostParams::default(), &scan).await.unwrap();
    let (note, _) = wait_event(&client, &ns, "denied", "Forbidden").await;
    assert!(
        note.contains("cannot create resource \"jobs\""),
        "the Event names the refused request: {note}"
    );
    let leader_pod = operator_pods(&client, &ns)
        .await
        .into_iter()
        .find(|p| p.name_any() == holder_pod(&second))
        .unwrap();
    let (_, scrape) = get(&leader_pod, "/metrics").await;
    assert!(
        sample(
            &scrape,
            "s3flow_reconcile_errors_total{controller=\"scan\",reason=\"kube\"}"
        ) >= 1.0,
        "{scrape}"
    );
    let mut restored = roles.get("s3flow").await.unwrap();
    restored.rules = intact.rules.clone();
    roles
        .replace("s3flow", &PostParams::default(), &restored)
        .await
        .unwrap();
    scan_succeeds(&scans, "denied", rows, total).await;

    // helm upgrade mid-ingest: the stopping leader checkpoints to status and the next one resumes.
    // The rollout replaces both pods one at a time, each after a readiness probe: the source is
    // large enough (about 75 s) that the leader's turn comes before the transfer could finish,
    // even when the rollout is slow on a loaded machine.
    let (_source, body) = ingest_in_flight(&ingests, &bucket, "upgrade", 250).await;
    install("upgrade", &ns, &["--set", "logLevel=debug"]);
    let (note, _) = wait_event(&client, &ns, "upgrade", "Interrupted").await;
    assert!(note.contains("resumes there"), "{note}");
    succeeded(&ingests, "upgrade", body).await;
    assert_eq!(
        bucket.object_sha256("upgrade.bin").await,
        Some(body.sha256())
    );
    no_uploads_left(&env, &bucket).await;

    // helm uninstall mid-ingest: the operator goes, the CRDs and the resources stay, and the one
    // upload left is the one the ingest's status records (not orphaned). The source (about 45 s)
    // outlasts an uninstall on a loaded machine, so that the transfer is still going when the
    // operator stops.
    let (_source, body) = ingest_in_flight(&ingests, &bucket, "uninstall", 150).await;
    // Once status says where to resume: an operator that takes over during the uninstall then
    // resumes the upload rather than starting over.
    wait_ingest(&ingests, "uninstall", 60, |s| s.resume_point.is_some()).await;
    let running = operator_pods(&client, &ns).await;
    helm(&[
        "uninstall",
        "s3flow",
        "--namespace",
        &ns,
        "--wait",
        "--timeout",
        "60s",
    ]);
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    for pod in running {
        common::wait_deleted(pods_api.clone(), &pod.name_any(), &pod.uid().unwrap(), 60).await;
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in ["s3ingests.s3flow.io", "s3parallelscans.s3flow.io"] {
        assert!(crds.get_opt(crd).await.unwrap().is_some(), "{crd} kept");
    }
    let interrupted = ingests.get("uninstall").await.unwrap().status.unwrap();
    assert_eq!(interrupted.phase, Phase::Running);
    let recorded = interrupted.upload_id.expect("the upload stays recorded");
    assert_eq!(
        bucket.uploads().await,
        vec![recorded],
        "the recorded upload is left (the object exists already: {})",
        bucket.object_sha256("uninstall.bin").await.is_some()
    );
    // Installed again, the operator finishes that upload.
    install("install", &ns, &[]);
    succeeded(&ingests, "uninstall", body).await;
    assert_eq!(
        bucket.object_sha256("uninstall.bin").await,
        Some(body.sha256())
    );
    no_uploads_left(&env, &bucket).await;

    // The resources go while the operator runs (their finalizers need it), then the release.
    ingests
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    scans
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    for _ in 0..100 {
        let left = ingests
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len()
            + scans
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let remaining = operator_pods(&client, &ns).await;
    helm(&[
        "uninstall",
        "s3flow",
        "--namespace",
        &ns,
        "--wait",
        "--timeout",
        "60s",
    ]);
    for pod in remaining {
        common::wait_deleted(pods_api.clone(), &pod.name_any(), &pod.uid().unwrap(), 60).await;
    }
    common::delete_namespace(&client, &ns).await;
}
