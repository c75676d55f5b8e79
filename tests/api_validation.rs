//! The CRDs in the real kube-apiserver: they install and serve, the examples are accepted, and bad
//! specs are refused by the API server itself with a message a person can act on.

mod common;

use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Client};
use serde_json::{Value, json};
use std::process::Command;

fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("s3flow.io", "v1alpha1", kind))
}

fn api(client: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &resource(kind))
}

fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).expect("a valid object")
}

fn valid_ingest(name: &str) -> Value {
    json!({
        "apiVersion": "s3flow.io/v1alpha1", "kind": "S3Ingest",
        "metadata": {"name": name},
        "spec": {
            "source": {"url": "https://example.com/data.bin"},
            "destination": {"bucket": "my-bucket", "key": "data.bin"},
        }
    })
}

fn valid_scan(name: &str) -> Value {
    json!({
        "apiVersion": "s3flow.io/v1alpha1", "kind": "S3ParallelScan",
        "metadata": {"name": name},
        "spec": {
            "source": {"bucket": "my-bucket", "key": "big.csv"},
            "format": {"csv": {}},
            "processor": {"sql": "SELECT COUNT(*) FROM S3Object s"},
        }
    })
}

/// Sets `path` (dot-separated) in `value` to `new`, or removes it when `new` is null.
fn with(mut value: Value, path: &str, new: Value) -> Value {
    let keys: Vec<&str> = path.split('.').collect();
    let (last, parents) = keys.split_last().unwrap();
    let mut cursor = &mut value;
    for key in parents {
        cursor = cursor
            .as_object_mut()
            .unwrap()
            .entry(*key)
            .or_insert(json!({}));
    }
    let map = cursor.as_object_mut().unwrap();
    if new.is_null() {
        map.remove(*last);
    } else {
        map.insert(last.to_string(), new);
    }
    value
}

/// Creates the object and returns the API server's refusal message; panics if it was accepted.
async fn refusal(client: &Client, ns: &str, value: Value) -> String {
    let kind = value["kind"].as_str().unwrap().to_string();
    match api(client, ns, &kind)
        .create(&PostParams::default(), &object(value.clone()))
        .await
    {
        Ok(_) => panic!("the API server accepted an invalid {kind}: {value:#}"),
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "expected 422 Invalid, got {e:?}");
            e.message
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test]
async fn crds_serve_examples_and_refuse_bad_specs() {
    let env = common::env().await;
    let client = &env.client;
    common::install_crds(client).await;
    let ns = common::namespace(client, "api").await;

    // Every example in examples/ is accepted as written.
    for file in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).unwrap() {
        let path = file.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            let kind = value["kind"].as_str().unwrap();
            let (group, version) = value["apiVersion"]
                .as_str()
                .unwrap()
                .rsplit_once('/')
                .unwrap_or(("", "v1"));
            let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
            Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &resource)
                .create(&PostParams::default(), &object(value.clone()))
                .await
                .unwrap_or_else(|e| panic!("{} refused: {e}", path.display()));
        }
    }

    // Defaults come from the schema: a scan without `chunking` gets the documented ones.
    let created = api(client, &ns, "S3ParallelScan")
        .create(&PostParams::default(), &object(valid_scan("defaults")))
        .await
        .unwrap();
    assert_eq!(
        created.data["spec"]["chunking"],
        json!({"chunkSize": "64Mi", "parallelism": 8, "maxRetriesPerChunk": 3})
    );
    assert_eq!(
        created.data["spec"]["format"]["csv"],
        json!({"delimiter": ",", "quote": "\"", "header": true})
    );

    let ingest = valid_ingest("bad");
    let scan = valid_scan("bad");
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "ftp URL",
            with(
                ingest.clone(),
                "spec.source.url",
                json!("ftp://example.com/f"),
            ),
            "url must be an absolute http:// or https:// URL with a host",
        ),
        (
            "URL without host",
            with(ingest.clone(), "spec.source.url", json!("https:///path")),
            "url must be an absolute http:// or https:// URL with a host",
        ),
        (
            "bucket with capitals and underscore",
            with(
                ingest.clone(),
                "spec.destination.bucket",
                json!("My_Bucket"),
            ),
            "bucket must be a valid S3 bucket name",
        ),
        (
            "bucket with two dots",
            with(ingest.clone(), "spec.destination.bucket", json!("a..b")),
            "bucket must be a valid S3 bucket name",
        ),
        (
            "part size under 5Mi",
            with(ingest.clone(), "spec.transfer.partSize", json!("4Mi")),
            "partSize must be 'auto' or a size from 5Mi to 5Gi",
        ),
        (
            "part size over 5Gi",
            with(ingest.clone(), "spec.transfer.partSize", json!("6Gi")),
            "partSize must be 'auto' or a size from 5Mi to 5Gi",
        ),
        (
            "concurrency 0",
            with(ingest.clone(), "spec.transfer.concurrency", json!(0)),
            "spec.transfer.concurrency: Invalid value: 0: spec.transfer.concurrency in body should be greater than or equal to 1",
        ),
        (
            "missing key",
            with(ingest.clone(), "spec.destination.key", Value::Null),
            "spec.destination.key: Required value",
        ),
        (
            "short sha256",
            with(
                ingest.clone(),
                "spec.source.expectedSha256",
                json!("abc123"),
            ),
            "expectedSha256 must be 64 lowercase hex digits",
        ),
        (
            "sql and container",
            with(
                scan.clone(),
                "spec.processor.container",
                json!({"image": "busybox"}),
            ),
            "processor needs exactly one of sql or container",
        ),
        (
            "neither sql nor container",
            with(scan.clone(), "spec.processor.sql", Value::Null),
            "processor needs exactly one of sql or container",
        ),
        (
            "bucket and ingestRef",
            with(scan.clone(), "spec.source.ingestRef", json!({"name": "x"})),
            "source needs exactly one of: bucket and key, or ingestRef",
        ),
        (
            "bucket without key",
            with(scan.clone(), "spec.source.key", Value::Null),
            "source.bucket and source.key go together",
        ),
        (
            "chunk size 0",
            with(scan.clone(), "spec.chunking.chunkSize", json!("0")),
            "chunkSize must be a whole number of bytes of at least 1",
        ),
        (
            "chunk size not a quantity",
            with(scan.clone(), "spec.chunking.chunkSize", json!("lots")),
            "chunkSize must be a whole number of bytes of at least 1",
        ),
        (
            "parallelism 1000",
            with(scan.clone(), "spec.chunking.parallelism", json!(1000)),
            "spec.chunking.parallelism in body should be less than or equal to 256",
        ),
        (
            "no format",
            with(scan.clone(), "spec.format.csv", Value::Null),
            "format needs exactly one of csv or jsonLines",
        ),
        (
            "expected headers without a header row",
            with(
                scan.clone(),
                "spec.format.csv",
                json!({"header": false, "expectedHeaders": ["a"]}),
            ),
            "expectedHeaders needs header: true",
        ),
    ];
    for (what, value, expected) in cases {
        let message = refusal(client, &ns, value).await;
        assert!(
            message.contains(expected),
            "{what}: expected {expected:?} in {message:?}"
        );
    }

    // Source and destination are immutable once set (CEL transition rules).
    let ingests = api(client, &ns, "S3Ingest");
    ingests
        .create(&PostParams::default(), &object(valid_ingest("immutable")))
        .await
        .unwrap();
    for (patch, expected) in [
        (
            json!({"spec": {"source": {"url": "https://example.com/other.bin"}}}),
            "source is immutable",
        ),
        (
            json!({"spec": {"destination": {"key": "other.bin"}}}),
            "destination is immutable",
        ),
    ] {
        let err = ingests
            .patch("immutable", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect_err("a changed source or destination must be refused");
        assert!(err.to_string().contains(expected), "{err}");
    }
    // Other fields stay editable.
    ingests
        .patch(
            "immutable",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"transfer": {"concurrency": 2}}})),
        )
        .await
        .expect("transfer settings may change");
    let scans = api(client, &ns, "S3ParallelScan");
    scans
        .create(&PostParams::default(), &object(valid_scan("immutable")))
        .await
        .unwrap();
    let err = scans
        .patch(
            "immutable",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"source": {"key": "other.csv"}}})),
        )
        .await
        .expect_err("a changed scan source must be refused");
    assert!(err.to_string().contains("source is immutable"), "{err}");

    // What a person sees with kubectl: printer columns, short names and field docs.
    let kubectl = |args: &[&str]| {
        let out = Command::new("kubectl")
            .args(args)
            .output()
            .expect("kubectl on PATH");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let table = kubectl(&["get", "s3i", "-n", &ns]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "PROGRESS", "BUCKET", "KEY", "AGE"]
    );
    assert!(table.contains("nyc-taxi-2023-01"), "{table}");
    let table = kubectl(&["get", "s3scan", "-n", &ns]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("CHUNKS") && table.contains("RECORDS"),
        "{table}"
    );
    let listed = kubectl(&["get", "s3flow", "-n", &ns, "-o", "name"]);
    assert!(
        listed.contains("s3ingest.s3flow.io/immutable")
            && listed.contains("s3parallelscan.s3flow.io/immutable"),
        "{listed}"
    );
    let explain = kubectl(&["explain", "s3ingest.spec.transfer.partSize"]);
    assert!(explain.contains("Size of each uploaded part"), "{explain}");

    common::delete_namespace(client, &ns).await;
}
