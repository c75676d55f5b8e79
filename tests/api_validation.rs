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
#[ignore = "needs tests/cluster/up.sh"]
async fn crds_serve_examples_and_refuse_bad_specs() {
    let env = common::env().await;
    let client = &env.client;
    common::install_crds(client).await;
    let ns = common::namespace(client, "api").await;

    // Every example in examples/ is accepted as written.
    for file in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).unwrap() {
        let path = file.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in yaml_serde::Deserializer::from_str(&text) {
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
        json!({"chunkSize": "64Mi", "maxRecordSize": "64Mi", "parallelism": 8, "maxRetriesPerChunk": 3,
            "objectOpenCost": "1Mi", "maxObjectsPerChunk": 1000})
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
            "source needs exactly one of: key, glob, keys, manifest (each with bucket), or ingestRef",
        ),
        (
            "bucket without key",
            with(scan.clone(), "spec.source.key", Value::Null),
            "source needs exactly one of: key, glob, keys, manifest (each with bucket), or ingestRef",
        ),
        (
            "key and glob",
            with(scan.clone(), "spec.source.glob", json!("days/*.csv")),
            "source needs exactly one of: key, glob, keys, manifest (each with bucket), or ingestRef",
        ),
        (
            "glob without bucket",
            with(
                with(scan.clone(), "spec.source.key", Value::Null),
                "spec.source",
                json!({"glob": "days/*.csv"}),
            ),
            "source.bucket goes with key, glob, keys or manifest",
        ),
        (
            "key and manifest",
            with(
                scan.clone(),
                "spec.source.manifest",
                json!({"key": "lists/batch.csv"}),
            ),
            "source needs exactly one of: key, glob, keys, manifest (each with bucket), or ingestRef",
        ),
        (
            "a manifest in a bucket of no valid name",
            with(
                with(scan.clone(), "spec.source.key", Value::Null),
                "spec.source.manifest",
                json!({"bucket": "No_Bucket", "key": "lists/batch.csv"}),
            ),
            "manifest.bucket",
        ),
        (
            "maxObjects of one key",
            with(scan.clone(), "spec.source.maxObjects", json!(5)),
            "maxObjects, allowEmpty, onObjectChange and maxFailedObjects apply to a glob, keys or a manifest",
        ),
        (
            "a key list naming a folder",
            with(
                with(scan.clone(), "spec.source.key", Value::Null),
                "spec.source.keys",
                json!(["a.csv", "days/"]),
            ),
            "each of keys names an object",
        ),
        (
            "skipping changes of one key",
            with(scan.clone(), "spec.source.onObjectChange", json!("Skip")),
            "maxObjects, allowEmpty, onObjectChange and maxFailedObjects apply to a glob, keys or a manifest",
        ),
        (
            "no objects per chunk",
            with(scan.clone(), "spec.chunking.maxObjectsPerChunk", json!(0)),
            "maxObjectsPerChunk",
        ),
        (
            "hive partitioning of another kind",
            with(
                scan.clone(),
                "spec.format.hivePartitioning",
                json!("Sometimes"),
            ),
            "hivePartitioning",
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
            "format needs exactly one of csv, jsonLines or parquet",
        ),
        (
            "csv and parquet",
            with(scan.clone(), "spec.format.parquet", json!({})),
            "format needs exactly one of csv, jsonLines or parquet",
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

/// Specs the engine would refuse later, or that could aim the operator at what a tenant should
/// not reach, are refused by the API server itself, each with a message naming what to fix.
#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn the_api_server_refuses_what_the_operator_would_refuse_later() {
    let env = common::env().await;
    let client = &env.client;
    common::install_crds(client).await;
    let ns = common::namespace(client, "admission").await;
    let ingest = valid_ingest("bad");
    let scan = valid_scan("bad");
    let output = |prefix: &str| json!({"bucket": "out-bucket", "prefix": prefix});
    let long_key = "é".repeat(600);
    let mut cases: Vec<(String, Value, &str)> = Vec::new();
    let mut case = |what: &str, value: Value, expected: &'static str| {
        cases.push((what.to_string(), value, expected));
    };
    for (url, expected) in [
        (
            "https://example.com:0/f",
            "the port of url must be from 1 to 65535",
        ),
        (
            "https://example.com:65536/f",
            "the port of url must be from 1 to 65535",
        ),
        (
            "http://example.com:99999",
            "the port of url must be from 1 to 65535",
        ),
    ] {
        case(
            url,
            with(ingest.clone(), "spec.source.url", json!(url)),
            expected,
        );
    }
    for (endpoint, expected) in [
        (
            "ftp://minio:9000",
            "endpoint must be an absolute http:// or https:// URL with a host",
        ),
        (
            "minio:9000",
            "endpoint must be an absolute http:// or https:// URL with a host",
        ),
        (
            "http://",
            "endpoint must be an absolute http:// or https:// URL with a host",
        ),
        (
            "http://minio:0",
            "the port of endpoint must be from 1 to 65535",
        ),
        (
            "http://minio:123456/",
            "the port of endpoint must be from 1 to 65535",
        ),
    ] {
        case(
            endpoint,
            with(ingest.clone(), "spec.destination.endpoint", json!(endpoint)),
            expected,
        );
        case(
            endpoint,
            with(scan.clone(), "spec.source.endpoint", json!(endpoint)),
            expected,
        );
    }
    for bucket in [
        "192.168.1.10",
        "xn--bucket",
        "sthree-bucket",
        "amzn-s3-demo-bucket",
        "bucket-s3alias",
        "bucket--ol-s3",
        "bucket.mrap",
        "bucket--x-s3",
        "a.-b",
        "a-.b",
    ] {
        case(
            bucket,
            with(ingest.clone(), "spec.destination.bucket", json!(bucket)),
            "bucket must be a valid S3 bucket name",
        );
        case(
            bucket,
            with(scan.clone(), "spec.processor.output", output("out/")),
            "",
        );
    }
    case(
        "a key of 1,200 bytes in 600 characters",
        with(ingest.clone(), "spec.destination.key", json!(long_key)),
        "key must be at most 1024 bytes in UTF-8",
    );
    case(
        "a scan key of 1,200 bytes",
        with(scan.clone(), "spec.source.key", json!(long_key)),
        "key must be at most 1024 bytes in UTF-8",
    );
    for size in ["+64Mi", "6e6", "1.5Ki", "64MiB", "64m", " 64Mi"] {
        case(
            size,
            with(scan.clone(), "spec.chunking.chunkSize", json!(size)),
            "chunkSize must be a whole number of bytes of at least 1",
        );
        case(
            size,
            with(ingest.clone(), "spec.transfer.partSize", json!(size)),
            "partSize must be 'auto' or a size from 5Mi to 5Gi",
        );
        case(
            size,
            with(scan.clone(), "spec.chunking.maxRecordSize", json!(size)),
            "maxRecordSize must be a whole number of bytes of at least 1Ki",
        );
    }
    case(
        "a record bound under 1Ki",
        with(scan.clone(), "spec.chunking.maxRecordSize", json!("100")),
        "maxRecordSize must be a whole number of bytes of at least 1Ki and at most 1Gi",
    );
    case(
        "5Gi parts 64 at a time",
        with(
            ingest.clone(),
            "spec.transfer",
            json!({"partSize": "5Gi", "concurrency": 64}),
        ),
        "partSize x (concurrency + 2) is the memory an ingest's part buffers take, and must be at most 64Gi",
    );
    case(
        "2Gi parts at the default concurrency",
        with(
            ingest.clone(),
            "spec.transfer",
            json!({"partSize": "5Gi", "concurrency": 11}),
        ),
        "must be at most 64Gi",
    );
    for content_type in ["text/plain\nX-Injected: 1", "text/plain\u{7}"] {
        case(
            "contentType with a control character",
            with(
                ingest.clone(),
                "spec.destination.contentType",
                json!(content_type),
            ),
            "contentType must not contain control characters",
        );
    }
    case(
        "a storage class S3 does not have",
        with(
            ingest.clone(),
            "spec.destination.storageClass",
            json!("CHEAP"),
        ),
        "storageClass must be one of S3's",
    );
    for name in ["Bad_Name", "-secret", "secret-", "a..b"] {
        case(
            name,
            with(
                ingest.clone(),
                "spec.destination.credentialsSecretRef",
                json!({"name": name}),
            ),
            "name must be a Kubernetes object name",
        );
        case(
            name,
            with(
                ingest.clone(),
                "spec.source.headersSecretRef",
                json!({"name": name}),
            ),
            "name must be a Kubernetes object name",
        );
        case(
            name,
            with(
                ingest.clone(),
                "spec.source.caBundleConfigMapRef",
                json!({"name": name}),
            ),
            "name must be a Kubernetes object name",
        );
        case(
            name,
            with(
                with(
                    scan.clone(),
                    "spec.source",
                    json!({"ingestRef": {"name": name}}),
                ),
                "spec.source.bucket",
                Value::Null,
            ),
            "name must be a Kubernetes object name",
        );
        case(
            name,
            with(
                scan.clone(),
                "spec.worker",
                json!({"serviceAccountName": name}),
            ),
            "serviceAccountName must be a Kubernetes object name",
        );
    }
    // Keys or a ServiceAccount, never both; a scan's pods run as its source's ServiceAccount.
    case(
        "keys and a ServiceAccount",
        with(
            with(
                ingest.clone(),
                "spec.destination.credentialsSecretRef",
                json!({"name": "keys"}),
            ),
            "spec.destination.serviceAccountName",
            json!("writer"),
        ),
        "credentialsSecretRef and serviceAccountName are exclusive",
    );
    case(
        "a scan with keys and a ServiceAccount",
        with(
            with(
                scan.clone(),
                "spec.source.credentialsSecretRef",
                json!({"name": "keys"}),
            ),
            "spec.source.serviceAccountName",
            json!("writer"),
        ),
        "credentialsSecretRef and serviceAccountName are exclusive",
    );
    case(
        "workers as another ServiceAccount than the source's",
        with(
            with(
                scan.clone(),
                "spec.source.serviceAccountName",
                json!("writer"),
            ),
            "spec.worker",
            json!({"serviceAccountName": "other"}),
        ),
        "when both are set they must be the same ServiceAccount",
    );
    case(
        "a ServiceAccount name that is not a name",
        with(
            ingest.clone(),
            "spec.destination.serviceAccountName",
            json!("Bad_Name"),
        ),
        "serviceAccountName must be a Kubernetes object name",
    );
    for (csv, expected) in [
        (
            json!({"delimiter": "é"}),
            "delimiter must be one ASCII character other than CR and LF",
        ),
        (
            json!({"delimiter": "\n"}),
            "delimiter must be one ASCII character other than CR and LF",
        ),
        (
            json!({"quote": "\r"}),
            "quote must be one ASCII character other than CR and LF",
        ),
        (
            json!({"delimiter": "\"", "quote": "\""}),
            "the CSV delimiter and quote must differ",
        ),
        (json!({"delimiter": ";;"}), "spec.format.csv.delimiter"),
    ] {
        case(
            "CSV dialect",
            with(scan.clone(), "spec.format.csv", csv),
            expected,
        );
    }
    for prefix in ["", "out/run1", "/out/"] {
        case(
            prefix,
            with(scan.clone(), "spec.processor.output", output(prefix)),
            "spec.processor.output.prefix",
        );
    }
    for (what, value, expected) in &cases {
        // Bucket names are checked on the scan's output too (only with a bad bucket).
        let value = match (
            value["kind"].as_str(),
            value["spec"]["processor"]["output"]["prefix"].as_str(),
        ) {
            (Some("S3ParallelScan"), Some("out/")) => {
                with(value.clone(), "spec.processor.output.bucket", json!(what))
            }
            _ => value.clone(),
        };
        let expected = if expected.is_empty() {
            "output.bucket must be a valid S3 bucket name"
        } else {
            expected
        };
        let message = refusal(client, &ns, value).await;
        assert!(
            message.contains(expected),
            "{what}: expected {expected:?} in {message:?}"
        );
    }

    // The engine and the API server read sizes alike: what one accepts, the other does.
    for size in [
        "1", "64", "64Mi", "1Gi", "5M", "2k", "7Ti", "0", "+1", "1e3", "1E3", "0.5Ki", "1.0",
        "64mi", "64MiB", "Mi", "", "1 Ki", "0x40", "١٢",
    ] {
        let engine =
            s3flow::size::parse_size(size).is_ok_and(|bytes| (1..=1 << 40).contains(&bytes));
        let created = api(client, &ns, "S3ParallelScan")
            .create(
                &PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                &object(with(scan.clone(), "spec.chunking.chunkSize", json!(size))),
            )
            .await;
        assert_eq!(created.is_ok(), engine, "chunkSize {size:?}: {created:?}");
    }
    common::delete_namespace(client, &ns).await;
}
