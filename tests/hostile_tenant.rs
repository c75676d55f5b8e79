//! One operator, two tenants who trust neither each other nor it, in the real cluster: tenant A
//! has an ingest in flight, a finished object and a Secret in a bucket both share; tenant B tries
//! every attack a tenant who may create S3Ingests and S3ParallelScans has. Each attack fails with
//! its documented reason; afterwards A's upload, object and Secret are untouched, the operator
//! never restarted, and no secret text appears in any status, Event or log line.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::controller::Controller;
use common::http_source::{Behaviour, Body, serve};
use common::minio::{Bucket, credentials_secret};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use s3flow::api::Phase;
use s3flow::api::ingest::S3Ingest;
use s3flow::api::scan::S3ParallelScan;
use serde_json::{Value, json};

/// The operator's own pod address, as the chart passes it (POD_IP).
const OPERATOR_IP: &str = "127.0.0.77";
/// Text that must never leave the Secret or URL it is in.
const A_SECRET_TEXT: &str = "tenant-a-private-token-3f1c";
const SIGNATURE: &str = "SIGNATURE0ec8b4d2a7";

struct Tenant {
    ns: String,
    ingests: Api<S3Ingest>,
    scans: Api<S3ParallelScan>,
}

impl Tenant {
    async fn new(client: &Client, prefix: &str) -> Tenant {
        let ns = common::namespace(client, prefix).await;
        credentials_secret(client, &ns, "minio").await;
        Tenant {
            ingests: Api::namespaced(client.clone(), &ns),
            scans: Api::namespaced(client.clone(), &ns),
            ns,
        }
    }
}

fn ingest(name: &str, url: &str, bucket: &Bucket, key: &str, extra: Value) -> S3Ingest {
    let mut value = json!({
        "apiVersion": "s3flow.io/v1alpha1", "kind": "S3Ingest",
        "metadata": {"name": name},
        "spec": {
            "source": {"url": url},
            "destination": {"bucket": bucket.name, "key": key, "endpoint": bucket.endpoint,
                "forcePathStyle": true, "credentialsSecretRef": {"name": "minio"}},
            "transfer": {"partSize": "5Mi", "concurrency": 2},
        }
    });
    common::json_merge(&mut value, json!({"spec": extra}));
    serde_json::from_value(value).unwrap()
}

fn scan(name: &str, bucket: &Bucket, key: &str, extra: Value) -> S3ParallelScan {
    let mut value = json!({
        "apiVersion": "s3flow.io/v1alpha1", "kind": "S3ParallelScan",
        "metadata": {"name": name},
        "spec": {
            "source": {"bucket": bucket.name, "key": key, "endpoint": bucket.endpoint,
                "forcePathStyle": true, "credentialsSecretRef": {"name": "minio"}},
            "format": {"jsonLines": {}},
            "chunking": {"chunkSize": "4Ki", "parallelism": 2, "maxRetriesPerChunk": 0},
            "processor": {"sql": "SELECT COUNT(*) FROM S3Object"},
        }
    });
    common::json_merge(&mut value, json!({"spec": extra}));
    serde_json::from_value(value).unwrap()
}

/// Drops `path` (dot-separated) from a resource's JSON.
fn without(mut value: Value, path: &[&str]) -> Value {
    let (last, parents) = path.split_last().unwrap();
    let mut cursor = &mut value;
    for key in parents {
        cursor = &mut cursor[*key];
    }
    cursor.as_object_mut().unwrap().remove(*last);
    value
}

/// The Ready condition's reason and message once the resource has failed (or succeeded).
async fn outcome_of_ingest(api: &Api<S3Ingest>, name: &str) -> (Phase, String, String) {
    let done = common::wait(
        api.clone(),
        name,
        |o: Option<&S3Ingest>| {
            o.and_then(|o| o.status.as_ref())
                .is_some_and(|s| matches!(s.phase, Phase::Succeeded | Phase::Failed))
        },
        120,
    )
    .await;
    let status = done.status.unwrap();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    (status.phase, ready.reason.clone(), ready.message.clone())
}

async fn outcome_of_scan(api: &Api<S3ParallelScan>, name: &str) -> (Phase, String, String) {
    let status = common::scan_finished(api, name, 180).await.status.unwrap();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    (status.phase, ready.reason.clone(), ready.message.clone())
}

/// The API server's refusal of `scan`.
async fn refused(api: &Api<S3ParallelScan>, scan: &S3ParallelScan) -> String {
    match api.create(&PostParams::default(), scan).await {
        Ok(_) => panic!("the API server admitted {}", scan.name_any()),
        Err(e) => e.to_string(),
    }
}

/// A chunk worker image that runs the real worker, then rewrites its report: `tamper` is Python
/// acting on `report` (the parsed JSON).
fn forger_image(env: &common::TestEnv, name: &str, tamper: &str) -> String {
    let bin = env.env_dir.join(format!("node/images/{name}/bin"));
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        r#"#!/usr/bin/env python3
import json, os, subprocess, sys, tempfile
fd, out = tempfile.mkstemp()
os.close(fd)
env = dict(os.environ, S3FLOW_TERMINATION_MESSAGE_PATH=out)
env.pop("S3FLOW_REPORT_TO", None)
subprocess.run([{binary:?}] + sys.argv[1:], env=env, check=True, stdout=subprocess.DEVNULL)
report = json.load(open(out))
{tamper}
with open(os.environ["S3FLOW_TERMINATION_MESSAGE_PATH"], "w") as f:
    f.write(report if isinstance(report, str) else json.dumps(report))
"#,
        binary = env!("CARGO_BIN_EXE_s3flow"),
    );
    let path = bin.join("s3flow");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("hostile/{name}:1")
}

/// Every string in the statuses of every s3flow resource and every Event of `namespaces`.
async fn everything_shown(client: &Client, namespaces: &[&str]) -> String {
    let mut text = String::new();
    for ns in namespaces {
        let ingests: Api<S3Ingest> = Api::namespaced(client.clone(), ns);
        for i in ingests.list(&ListParams::default()).await.unwrap() {
            text.push_str(&serde_json::to_string(&i.status).unwrap());
        }
        let scans: Api<S3ParallelScan> = Api::namespaced(client.clone(), ns);
        for s in scans.list(&ListParams::default()).await.unwrap() {
            text.push_str(&serde_json::to_string(&s.status).unwrap());
        }
        let events: Api<Event> = Api::namespaced(client.clone(), ns);
        for e in events.list(&ListParams::default()).await.unwrap() {
            text.push_str(e.note.as_deref().unwrap_or_default());
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs tests/cluster/up.sh"]
async fn a_hostile_tenant_reaches_nothing_of_another() {
    let env = common::env().await;
    let client = env.client.clone();
    common::install_crds(&client).await;
    let shared = Bucket::create(&env, "shared").await;
    let forgeries: Vec<(&str, String)> = [
        ("forger-index", "report['index'] += 1"),
        ("forger-range", "report['range'][1] += 1"),
        ("forger-fingerprint", "report['fingerprint'] = '0' * 16"),
        ("forger-kinds", "report['partials'] = [{'min': None}]"),
        (
            "forger-overflow",
            "report['records'] = 2**64 - 1\nreport['partials'] = [{'count': 2**64 - 1}]",
        ),
        ("forger-part", "report['part'] = 'a/finished.csv'"),
        ("forger-garbage", "report = 'not a report'"),
    ]
    .into_iter()
    .map(|(name, tamper)| (name, forger_image(&env, name, tamper)))
    .collect();
    // This operator serves only its tenants: the other test's operator runs beside it.
    let a = Tenant::new(&client, "tenant-a").await;
    let b = Tenant::new(&client, "tenant-b").await;
    let served = format!("{},{}", a.ns, b.ns);
    let mut controller = Controller::start(
        &env,
        "hostile-tenant",
        &[
            "--namespace",
            &served,
            "--allow-cidr",
            "127.0.0.1/32",
            "--pod-ip",
            OPERATOR_IP,
            "--default-credentials-namespace",
            "platform-only",
            "--ingest-memory-budget",
            "256Mi",
            "--stall-timeout",
            "3",
            "--min-source-bytes-per-second",
            "1024",
            "--allowed-image",
            "*/s3flow:*",
            "--allowed-image",
            "hostile/*",
            "--allowed-image",
            "python:*",
        ],
    );

    // Tenant A: a Secret, a finished object, and an ingest in flight into the shared bucket.
    let secrets_a: Api<Secret> = Api::namespaced(client.clone(), &a.ns);
    let a_secret = secrets_a
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "a-private", "labels": {"s3flow.io/secret-type": "source-headers"}},
                "stringData": {"Authorization": format!("Bearer {A_SECRET_TEXT}")},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let finished = b"id,v\n1,2\n".to_vec();
    shared.put("a/finished.csv", finished.clone()).await;
    let a_body = Body {
        len: 60 << 20,
        seed: 7,
    };
    let a_source = serve(Behaviour {
        body: a_body,
        throttle: Some(Duration::from_millis(12)),
        ..Behaviour::new(a_body.len)
    })
    .await;
    a.ingests
        .create(
            &PostParams::default(),
            &ingest(
                "a-upload",
                &a_source.url,
                &shared,
                "out/run10/big.bin",
                json!({}),
            ),
        )
        .await
        .unwrap();
    let a_upload = common::wait(
        a.ingests.clone(),
        "a-upload",
        |o: Option<&S3Ingest>| {
            o.and_then(|o| o.status.as_ref())
                .is_some_and(|s| s.upload_id.is_some())
        },
        60,
    )
    .await
    .status
    .unwrap()
    .upload_id
    .unwrap();

    // Tenant B, in a namespace that enforces the restricted Pod Security Standard.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            &b.ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
            }}})),
        )
        .await
        .unwrap();
    let secrets_b: Api<Secret> = Api::namespaced(client.clone(), &b.ns);
    for (name, labels, data) in [
        (
            "plain-creds",
            json!({}),
            json!({"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}),
        ),
        (
            "reserved",
            json!({"s3flow.io/secret-type": "source-headers"}),
            json!({"Host": "evil.example", "Range": "bytes=0-1"}),
        ),
        (
            "token",
            json!({"s3flow.io/secret-type": "source-headers"}),
            json!({"Authorization": "Bearer b-token"}),
        ),
    ] {
        secrets_b
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": labels},
                    "stringData": data,
                }))
                .unwrap(),
            )
            .await
            .unwrap();
    }
    let data: Vec<u8> = (0..200)
        .flat_map(|i| format!("{{\"a\": {i}}}\n").into_bytes())
        .collect();
    shared.put("b/lines.jsonl", data).await;
    shared.put("b/small.csv", b"id,v\n1,2\n".to_vec()).await;

    // -- Attacks that fail before any S3 request.
    // Output prefixes that would reach other tenants' keys are not admitted.
    for prefix in ["", "out/run1"] {
        let spec = json!({"processor": {"sql": "SELECT * FROM S3Object",
            "output": {"bucket": shared.name, "prefix": prefix}}});
        let message = refused(&b.scans, &scan("prefix", &shared, "b/lines.jsonl", spec)).await;
        assert!(message.contains("output.prefix"), "{prefix:?}: {message}");
    }

    // A failing scan whose output prefix covers A's upload: A's upload stays.
    let covering = json!({"processor": {"sql": "SELECT s.missing.x FROM S3Object s WHERE nme > 1",
        "output": {"bucket": shared.name, "prefix": "out/"}},
        "format": {"csv": {}, "jsonLines": null}});
    b.scans
        .create(
            &PostParams::default(),
            &scan("covering", &shared, "b/small.csv", covering),
        )
        .await
        .unwrap();
    let covering = outcome_of_scan(&b.scans, "covering").await;
    assert_eq!(covering.1, "InvalidSql", "{covering:?}");
    assert!(
        shared.uploads().await.contains(&a_upload),
        "A's upload {a_upload} was aborted by B's failing scan"
    );
    b.scans
        .delete("covering", &Default::default())
        .await
        .unwrap();

    let header_source = serve(Behaviour::new(1024)).await;
    let redirect_target = serve(Behaviour::new(1024)).await;
    let redirecting = serve(Behaviour {
        redirect_to: Some(redirect_target.url.clone()),
        ..Behaviour::new(1024)
    })
    .await;
    let trickle = serve(Behaviour {
        trickle: Some(Duration::from_millis(500)),
        ..Behaviour::new(1 << 20)
    })
    .await;
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let signed = format!(
        "http://127.0.0.1:{closed_port}/data.bin?X-Amz-Credential=AKIA&X-Amz-Signature={SIGNATURE}"
    );
    let credentials = ["destination", "credentialsSecretRef"];
    let ingest_attacks: Vec<(&str, S3Ingest, &str, &str)> = vec![
        (
            "default credentials",
            serde_json::from_value(without(
                serde_json::to_value(ingest(
                    "no-creds",
                    &header_source.url,
                    &shared,
                    "b/x",
                    json!({}),
                ))
                .unwrap(),
                &["spec", credentials[0], credentials[1]],
            ))
            .unwrap(),
            "CredentialsRequired",
            "credentialsSecretRef is required",
        ),
        (
            "endpoint at loopback",
            ingest(
                "loopback",
                &header_source.url,
                &shared,
                "b/x",
                json!({"destination": {"endpoint": "http://127.0.0.2:29000"}}),
            ),
            "ForbiddenAddress",
            "a loopback address",
        ),
        (
            "endpoint at the operator's pod",
            ingest(
                "operator-pod",
                &header_source.url,
                &shared,
                "b/x",
                json!({"destination": {"endpoint": format!("http://{OPERATOR_IP}:8080")}}),
            ),
            "ForbiddenAddress",
            "the operator's own address",
        ),
        (
            "endpoint at the metadata service",
            ingest(
                "metadata",
                &header_source.url,
                &shared,
                "b/x",
                json!({"destination": {"endpoint": "http://169.254.169.254"}}),
            ),
            "ForbiddenAddress",
            "a cloud metadata address",
        ),
        (
            "source at the operator's pod",
            ingest(
                "source-operator",
                &format!("http://{OPERATOR_IP}:8080/metrics"),
                &shared,
                "b/x",
                json!({}),
            ),
            "ForbiddenAddress",
            "the operator's own address",
        ),
        (
            "a Secret without the label",
            ingest(
                "unlabelled",
                &header_source.url,
                &shared,
                "b/x",
                json!({"destination": {"credentialsSecretRef": {"name": "plain-creds"}}}),
            ),
            "SecretNotLabelled",
            "s3flow.io/secret-type=credentials",
        ),
        (
            "the credentials Secret as source headers",
            ingest(
                "exfiltrate",
                &header_source.url,
                &shared,
                "b/x",
                json!({"source": {"headersSecretRef": {"name": "minio"}}}),
            ),
            "SecretNotLabelled",
            "s3flow.io/secret-type=source-headers",
        ),
        (
            "reserved headers",
            ingest(
                "reserved",
                &header_source.url,
                &shared,
                "b/x",
                json!({"source": {"headersSecretRef": {"name": "reserved"}}}),
            ),
            "InvalidSource",
            "may not set",
        ),
        (
            "headers along a redirect to another origin",
            ingest(
                "redirect",
                &redirecting.url,
                &shared,
                "b/x",
                json!({"source": {"headersSecretRef": {"name": "token"}}}),
            ),
            "InvalidSource",
            "another origin",
        ),
        (
            "a presigned URL that cannot be reached",
            ingest("signed", &signed, &shared, "b/x", json!({})),
            "SourceUnavailable",
            "/data.bin",
        ),
        (
            "parts larger than the operator's whole budget",
            ingest(
                "greedy",
                &header_source.url,
                &shared,
                "b/x",
                json!({"transfer": {"partSize": "1Gi", "concurrency": 2}}),
            ),
            "InsufficientMemory",
            "ingest memory budget",
        ),
        (
            "a source that trickles",
            ingest("trickle", &trickle.url, &shared, "b/x", json!({})),
            "SourceStalled",
            "below the floor",
        ),
    ];
    for (_, resource, _, _) in &ingest_attacks {
        b.ingests
            .create(&PostParams::default(), resource)
            .await
            .unwrap();
    }

    // -- Scans: forged reports, long records, a long header, images, pods and Jobs refused.
    let unclosed = {
        let mut csv = b"a,b\n1,2\n3,\"never closed\n".to_vec();
        csv.extend(std::iter::repeat_n(b'x', 16 << 10));
        csv
    };
    shared.put("b/unclosed.csv", unclosed).await;
    let mut long_line = b"{\"a\": \"".to_vec();
    long_line.extend(std::iter::repeat_n(b'y', 8 << 10));
    long_line.extend_from_slice(b"\"}\n{\"a\": \"z\"}\n");
    shared.put("b/long.jsonl", long_line).await;
    let mut wide = (0..100_000)
        .map(|i| format!("c{i}"))
        .collect::<Vec<_>>()
        .join(",");
    wide.push_str("\n1\n");
    shared.put("b/wide.csv", wide.into_bytes()).await;
    let mut scan_attacks: Vec<(String, S3ParallelScan, &str, String)> = forgeries
        .iter()
        .map(|(name, image)| {
            // Two chunks: an overflow shows when the second one is merged.
            let mut spec = json!({"worker": {"image": image}, "chunking": {"chunkSize": "1Ki"}});
            if *name == "forger-part" {
                spec["processor"] = json!({"sql": "SELECT * FROM S3Object LIMIT 1",
                    "output": {"bucket": shared.name, "prefix": "b-out/"}});
            }
            let detail = match *name {
                "forger-overflow" => "overflow",
                _ => "chunk 0",
            };
            (
                format!("a report forged at {name}"),
                scan(name, &shared, "b/lines.jsonl", spec),
                "InvalidReport",
                detail.to_string(),
            )
        })
        .collect();
    scan_attacks.extend([
        (
            "default credentials".into(),
            serde_json::from_value(without(
                serde_json::to_value(scan("no-creds", &shared, "b/lines.jsonl", json!({})))
                    .unwrap(),
                &["spec", "source", "credentialsSecretRef"],
            ))
            .unwrap(),
            "CredentialsRequired",
            "credentialsSecretRef is required".into(),
        ),
        (
            "an endpoint at the metadata service, IPv4-mapped".into(),
            scan(
                "metadata",
                &shared,
                "b/lines.jsonl",
                json!({"source": {"endpoint": "http://[::ffff:169.254.169.254]:80"}}),
            ),
            "ForbiddenAddress",
            "a cloud metadata address".into(),
        ),
        (
            "a quote that never closes".into(),
            scan(
                "unclosed",
                &shared,
                "b/unclosed.csv",
                json!({"format": {"csv": {}, "jsonLines": null}, "chunking": {"maxRecordSize": "1Ki"},
                    "processor": {"sql": "SELECT MAX(s.b) FROM S3Object s"}}),
            ),
            "BadData",
            "a record longer than maxRecordSize (1024 bytes) starts here".into(),
        ),
        (
            "a JSON line longer than the bound".into(),
            scan(
                "long-line",
                &shared,
                "b/long.jsonl",
                json!({"chunking": {"maxRecordSize": "1Ki", "chunkSize": "64Ki"},
                    "processor": {"sql": "SELECT MAX(s.a) FROM S3Object s"}}),
            ),
            "BadData",
            "at byte 0".into(),
        ),
        (
            "a header row of 600 KiB".into(),
            scan(
                "wide",
                &shared,
                "b/wide.csv",
                json!({"format": {"csv": {}, "jsonLines": null}}),
            ),
            "InvalidScan",
            "the header row is longer than 65536 bytes".into(),
        ),
        (
            "an image the admin does not allow".into(),
            scan(
                "miner",
                &shared,
                "b/lines.jsonl",
                json!({"processor": {"sql": null,
                "container": {"image": "evil.example/miner:1", "command": ["mine"]}}}),
            ),
            "ImageNotAllowed",
            "evil.example/miner:1".into(),
        ),
        (
            "pods the API server refuses".into(),
            scan(
                "no-account",
                &shared,
                "b/lines.jsonl",
                json!({"worker": {"serviceAccountName": "missing"}}),
            ),
            "PodsRefused",
            "missing".into(),
        ),
        (
            "a Job the API server refuses".into(),
            scan(
                "bad-job",
                &shared,
                "b/lines.jsonl",
                json!({"worker": {"resources": {
                "requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}}),
            ),
            "JobRefused",
            "must be less than or equal to cpu limit".into(),
        ),
    ]);
    for (_, resource, _, _) in &scan_attacks {
        b.scans
            .create(&PostParams::default(), resource)
            .await
            .unwrap();
    }

    // What B may do still works, under the restricted Pod Security Standard.
    let count_rows = "import os; open('/dev/termination-log', 'w').write(str(sum(1 for _ in open(os.environ['S3FLOW_CHUNK_FILE']))))";
    for (name, spec) in [
        ("allowed-count", json!({})),
        (
            "allowed-container",
            json!({"processor": {"sql": null,
                "container": {"image": "python:3", "command": ["python3", "-c", count_rows]}}}),
        ),
    ] {
        b.scans
            .create(
                &PostParams::default(),
                &scan(name, &shared, "b/lines.jsonl", spec),
            )
            .await
            .unwrap();
    }

    let mut table = Vec::new();
    for (what, resource, reason, detail) in &ingest_attacks {
        let (phase, got, message) = outcome_of_ingest(&b.ingests, &resource.name_any()).await;
        assert_eq!(phase, Phase::Failed, "{what}: {message}");
        assert_eq!(got, *reason, "{what}: {message}");
        assert!(
            message.contains(detail),
            "{what}: {detail:?} not in {message:?}"
        );
        common::controller::assert_event(&client, &b.ns, &resource.name_any(), reason, "Warning")
            .await;
        table.push((what.to_string(), got));
    }
    for (what, resource, reason, detail) in &scan_attacks {
        let (phase, got, message) = outcome_of_scan(&b.scans, &resource.name_any()).await;
        assert_eq!(phase, Phase::Failed, "{what}: {message}");
        assert_eq!(got, *reason, "{what}: {message}");
        assert!(
            message.contains(detail.as_str()),
            "{what}: {detail:?} not in {message:?}"
        );
        table.push((what.clone(), got));
    }
    for name in ["allowed-count", "allowed-container"] {
        let status = common::scan_succeeded(&b.scans, name, 180).await;
        table.push((
            format!("{name} under the restricted standard"),
            "Succeeded".into(),
        ));
        assert!(status.result.is_some());
    }
    // Nothing B's Secrets hold went to a source.
    let sent: String = header_source.heads.lock().unwrap().concat()
        + &redirect_target.heads.lock().unwrap().concat();
    assert!(
        !sent.contains("b-token") && !sent.contains("evil.example"),
        "{sent}"
    );
    assert!(redirect_target.heads.lock().unwrap().is_empty());

    // A: the upload B's scan covered completes, the finished object and the Secret are as they
    // were.
    let (phase, _, message) = outcome_of_ingest(&a.ingests, "a-upload").await;
    assert_eq!(phase, Phase::Succeeded, "{message}");
    assert_eq!(
        shared.object_sha256("out/run10/big.bin").await,
        Some(a_body.sha256())
    );
    assert_eq!(shared.get("a/finished.csv").await, finished);
    let a_secret_now = secrets_a.get("a-private").await.unwrap();
    assert_eq!(a_secret_now.resource_version(), a_secret.resource_version());
    assert!(
        controller.is_running(),
        "the operator exited (and would have restarted)"
    );

    // No secret text anywhere a user or an admin looks.
    let shown = everything_shown(&client, &[&a.ns, &b.ns]).await + &controller.log();
    let minio_secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap();
    for secret in [A_SECRET_TEXT, SIGNATURE, "b-token", minio_secret.as_str()] {
        assert!(!shown.contains(secret), "{secret:?} shown somewhere");
    }
    // Every status stays small, whatever B's data held.
    for s in b.scans.list(&ListParams::default()).await.unwrap() {
        let size = serde_json::to_vec(&s.status).unwrap().len();
        assert!(size < 16 << 10, "{}: status of {size} bytes", s.name_any());
    }
    let reasons: BTreeMap<String, String> = table.into_iter().collect();
    eprintln!("hostile tenant outcomes:");
    for (what, reason) in &reasons {
        eprintln!("  {what}: {reason}");
    }
    common::delete_namespace(&client, &a.ns).await;
    common::delete_namespace(&client, &b.ns).await;
}

/// A worker image that sleeps: its chunk stays running while the test edits the scan.
fn sleeper_image(env: &common::TestEnv) -> String {
    let bin = env.env_dir.join("node/images/sleeper/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = bin.join("s3flow");
    std::fs::write(&path, "#!/bin/sh\nsleep 600\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    "hostile/sleeper:1".into()
}

/// What would abort the operator, grow its memory without a bound or hold its reconciles, sent
/// by one tenant while another works: SQL 30,000 levels deep, a Parquet footer 100,000 levels
/// deep, an S3 endpoint answering every GET with an endless error body, one dripping its bodies,
/// a forged status, a squatted chunk Job name and 64 KiB chunk reports. Each hostile resource ends
/// with its documented reason; the other tenant's scan and ingest succeed meanwhile; the operator
/// never exits and its peak memory is measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs tests/cluster/up.sh"]
async fn the_operator_outlives_what_a_tenant_an_object_or_an_endpoint_sends() {
    use common::hostile_endpoint::{Hostility, deep_parquet, start};
    let env = common::env().await;
    let client = env.client.clone();
    common::install_crds(&client).await;
    let bucket = Bucket::create(&env, "outlive").await;
    let flooded = forger_image(
        &env,
        "forger-huge",
        "report['fingerprint'] = 'a' * (1 << 20)",
    );
    let sleeper = sleeper_image(&env);
    // This operator serves only its tenants: the other test's operator runs beside it.
    let c = Tenant::new(&client, "tenant-c").await;
    let d = Tenant::new(&client, "tenant-d").await;
    let served = format!("{},{}", c.ns, d.ns);
    let mut controller = Controller::start(
        &env,
        "outlive",
        &[
            "--namespace",
            &served,
            "--allow-cidr",
            "127.0.0.1/32",
            "--pod-ip",
            OPERATOR_IP,
            "--stall-timeout",
            "3",
            "--reconcile-retries",
            "3",
            "--allowed-image",
            "*/s3flow:*",
            "--allowed-image",
            "hostile/*",
        ],
    );
    let lines: Vec<u8> = (0..2000)
        .flat_map(|i| format!("{{\"a\": {i}}}\n").into_bytes())
        .collect();
    bucket.put("c/lines.jsonl", lines.clone()).await;
    bucket.put("c/deep.parquet", deep_parquet(100_000)).await;
    bucket.put("d/lines.jsonl", lines).await;
    let flood = start(Hostility::ErrorFlood { bytes: 3 << 29 }).await;
    let drip = start(Hostility::Drip {
        every: Duration::from_secs(2),
    })
    .await;
    let deep_sql = format!(
        "SELECT COUNT(*) FROM S3Object WHERE 1{} > 0",
        "+1".repeat(29_999)
    );
    let attacks: Vec<(&str, S3ParallelScan, &str, &str)> = vec![
        (
            "SQL 30,000 levels deep",
            scan(
                "deep-sql",
                &bucket,
                "c/lines.jsonl",
                json!({"processor": {"sql": deep_sql}}),
            ),
            "InvalidSql",
            "nests more than 256",
        ),
        (
            "a Parquet footer 100,000 levels deep",
            scan(
                "deep-footer",
                &bucket,
                "c/deep.parquet",
                json!({"format": {"parquet": {}, "jsonLines": null}}),
            ),
            "InvalidObject",
            "nests more than 64",
        ),
        (
            "an endpoint answering every GET with 1.5 GiB of error",
            scan(
                "flood",
                &bucket,
                "c/lines.jsonl",
                json!({"source": {"endpoint": flood.url}}),
            ),
            "RetriesExhausted",
            "failed 3 times in a row",
        ),
        (
            "an endpoint dripping a byte every 2 s",
            scan(
                "drip",
                &bucket,
                "c/lines.jsonl",
                json!({"source": {"endpoint": drip.url}}),
            ),
            "SourceStalled",
            "below the floor",
        ),
        (
            "reports of 1 MiB",
            scan(
                "huge-reports",
                &bucket,
                "c/lines.jsonl",
                json!({"worker": {"image": flooded}, "chunking": {"chunkSize": "8Ki"}}),
            ),
            "InvalidReport",
            "chunk 0",
        ),
    ];
    for (_, resource, _, _) in &attacks {
        c.scans
            .create(&PostParams::default(), resource)
            .await
            .unwrap();
    }
    // A forged status: a scan with a chunk running, its checkpoint then claiming 4e9 chunks.
    c.scans
        .create(
            &PostParams::default(),
            &scan(
                "forged-status",
                &bucket,
                "c/lines.jsonl",
                json!({"worker": {"image": sleeper}}),
            ),
        )
        .await
        .unwrap();
    let running = common::wait(
        c.scans.clone(),
        "forged-status",
        |s: Option<&S3ParallelScan>| {
            s.and_then(|s| s.status.as_ref())
                .is_some_and(|s| s.checkpoint.is_some())
        },
        60,
    )
    .await;
    let mut checkpoint = running.status.unwrap().checkpoint.unwrap();
    checkpoint["verifier"]["next"] = json!(4_000_000_000u64);
    c.scans
        .patch_status(
            "forged-status",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"checkpoint": checkpoint}})),
        )
        .await
        .unwrap();
    // A squatted chunk Job name: the scan waits for an ingest while its first Job's name is
    // taken by a Job it does not own.
    let source = serve(Behaviour::new(4096)).await;
    c.scans
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "s3flow.io/v1alpha1", "kind": "S3ParallelScan",
                "metadata": {"name": "squatted"},
                "spec": {"source": {"ingestRef": {"name": "late"}}, "format": {"jsonLines": {}},
                    "processor": {"sql": "SELECT COUNT(*) FROM S3Object"}},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let squatted = c.scans.get("squatted").await.unwrap();
    let job_name = s3flow::controller::scan::jobs::job_name(
        &squatted,
        s3flow::controller::scan::jobs::Role::Scan,
        0,
        None,
    );
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), &c.ns);
    jobs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": job_name},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "x", "image": "hostile/sleeper:1"}]}}},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    c.ingests
        .create(
            &PostParams::default(),
            &ingest("late", &source.url, &bucket, "c/late.jsonl", json!({})),
        )
        .await
        .unwrap();

    // Tenant D works meanwhile, and is done in its normal time.
    let good_source = serve(Behaviour::new(8 << 20)).await;
    let started = std::time::Instant::now();
    d.ingests
        .create(
            &PostParams::default(),
            &ingest("good", &good_source.url, &bucket, "d/good.bin", json!({})),
        )
        .await
        .unwrap();
    d.scans
        .create(
            &PostParams::default(),
            &scan("good", &bucket, "d/lines.jsonl", json!({})),
        )
        .await
        .unwrap();
    let (phase, _, message) = outcome_of_ingest(&d.ingests, "good").await;
    assert_eq!(phase, Phase::Succeeded, "{message}");
    let good = common::scan_succeeded(&d.scans, "good", 180).await;
    assert_eq!(good.result.unwrap()["COUNT(*)"], 2000);
    let good_took = started.elapsed();

    let mut outcomes = Vec::new();
    for (what, resource, reason, detail) in &attacks {
        let (phase, got, message) = outcome_of_scan(&c.scans, &resource.name_any()).await;
        assert_eq!(phase, Phase::Failed, "{what}: {message}");
        assert_eq!(got, *reason, "{what}: {message}");
        assert!(
            message.contains(detail),
            "{what}: {detail:?} not in {message:?}"
        );
        outcomes.push(format!("{what}: {got}"));
    }
    for (name, reason) in [
        ("forged-status", "InvalidStatus"),
        ("squatted", "JobNameTaken"),
    ] {
        let (phase, got, message) = outcome_of_scan(&c.scans, name).await;
        assert_eq!(
            (phase, got.as_str()),
            (Phase::Failed, reason),
            "{name}: {message}"
        );
        outcomes.push(format!("{name}: {got}"));
    }
    // The squatter's Job is not the scan's: it is left as it was.
    assert!(jobs.get_opt(&job_name).await.unwrap().is_some());
    assert!(
        controller.is_running(),
        "the operator exited (and would have restarted)"
    );
    let rss = controller.peak_rss();
    eprintln!("outcomes:\n  {}", outcomes.join("\n  "));
    eprintln!(
        "the other tenant's ingest and scan took {:.1} s; the operator's peak RSS {} MiB; the \
         flooding endpoint sent {} MiB",
        good_took.as_secs_f64(),
        rss >> 20,
        flood.sent.load(std::sync::atomic::Ordering::Relaxed) >> 20
    );
    // The ingest budget is 1 GiB by default but idle here; what stays is the operator itself.
    assert!(rss < 400 << 20, "peak RSS {} MiB", rss >> 20);
    common::delete_namespace(&client, &c.ns).await;
    common::delete_namespace(&client, &d.ns).await;
}
