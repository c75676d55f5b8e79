//! Tenant identity without static keys, on the real parts: the API server is the OpenID provider
//! (TokenRequest, its discovery document and keys), two MinIO servers are STS that trust it (one
//! maps a role to a policy conditioned on the token's subject, one names a policy after each
//! ServiceAccount), and the operator runs as `helm install` made it, with only the chart's RBAC.

mod common;

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use common::http_source::{Behaviour, serve};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use s3flow::api::Phase;
use s3flow::api::ingest::S3Ingest;
use s3flow::api::scan::S3ParallelScan;
use s3flow::identity::{WebIdentity, sts_client};
use s3flow::s3::{S3Credentials, S3Settings, StaticCredentials, client};
use serde_json::json;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/s3flow");
const POLICY_TOOL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster/minio_policy.py");

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} unset: run tests/cluster/up.sh"))
}

/// The role-policy STS, its role, the claim-mode STS and the audience both accept.
struct Sts {
    roles: String,
    role_arn: String,
    claims: String,
    audience: String,
}

fn sts() -> Sts {
    Sts {
        roles: var("S3FLOW_TEST_STS_ENDPOINT"),
        role_arn: var("S3FLOW_TEST_STS_ROLE_ARN"),
        claims: var("S3FLOW_TEST_STS_CLAIMS_ENDPOINT"),
        audience: var("S3FLOW_TEST_STS_AUDIENCE"),
    }
}

/// A client of `endpoint` with the environment's root keys.
async fn root(endpoint: &str) -> aws_sdk_s3::Client {
    client(&S3Settings {
        endpoint: Some(endpoint.into()),
        force_path_style: true,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// A client of `endpoint` signing with `keys`.
async fn signing_with(
    endpoint: &str,
    keys: &aws_credential_types::Credentials,
) -> aws_sdk_s3::Client {
    client(&S3Settings {
        endpoint: Some(endpoint.into()),
        force_path_style: true,
        credentials: S3Credentials::Static(StaticCredentials {
            access_key_id: keys.access_key_id().into(),
            secret_access_key: keys.secret_access_key().into(),
            session_token: keys.session_token().map(Into::into),
        }),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn put_policy(endpoint: &str, name: &str, policy: &serde_json::Value) {
    common::run(
        "python3",
        &[
            POLICY_TOOL,
            endpoint,
            &var("AWS_ACCESS_KEY_ID"),
            &var("AWS_SECRET_ACCESS_KEY"),
            name,
        ],
        policy.to_string().as_bytes(),
    );
}

fn full_access(bucket: &str) -> serde_json::Value {
    json!({"Effect": "Allow", "Action": ["s3:*"],
           "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")]})
}

/// Namespaces of this process's tenants: the role-policy STS has one role policy, rewritten with
/// a statement per tenant, each conditioned on its own ServiceAccount's subject.
static TENANTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A tenant: a namespace, its bucket (named after it) on both STS servers, and its labelled
/// ServiceAccount `writer` naming the role; its subject alone may use the bucket, in both modes.
async fn tenant(client: &Client, sts: &Sts) -> String {
    let ns = common::namespace(client, "idt").await;
    for endpoint in [&sts.roles, &sts.claims] {
        root(endpoint)
            .await
            .create_bucket()
            .bucket(&ns)
            .send()
            .await
            .unwrap();
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let account: ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": "writer", "labels": {"s3flow.io/identity": "true"},
                     "annotations": {"eks.amazonaws.com/role-arn": sts.role_arn}}
    }))
    .unwrap();
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let subject = format!("system:serviceaccount:{ns}:writer");
    put_policy(
        &sts.claims,
        &subject,
        &json!({"Version": "2012-10-17", "Statement": [full_access(&ns)]}),
    );
    let mut tenants = TENANTS.lock().unwrap();
    tenants.push(ns.clone());
    let statements: Vec<_> = tenants
        .iter()
        .map(|t| {
            let mut statement = full_access(t);
            statement["Condition"] =
                json!({"StringEquals": {"jwt:sub": format!("system:serviceaccount:{t}:writer")}});
            statement
        })
        .collect();
    put_policy(
        &sts.roles,
        "s3flow-tenants",
        &json!({"Version": "2012-10-17", "Statement": statements}),
    );
    ns
}

/// A token of `ns/name` for `audience`, as the operator requests one.
async fn request_token(
    client: &Client,
    ns: &str,
    name: &str,
    audience: &str,
) -> Result<String, kube::Error> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.into()],
            expiration_seconds: Some(600),
            bound_object_ref: None,
        },
        ..Default::default()
    };
    let answer = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await?;
    Ok(answer.status.map(|s| s.token).unwrap_or_default())
}

/// [`request_token`], which must succeed.
async fn token(client: &Client, ns: &str, name: &str, audience: &str) -> String {
    request_token(client, ns, name, audience).await.unwrap()
}

/// A throttled source of 24 MiB that takes some seconds to serve, and its body.
async fn slow_source() -> (common::http_source::HttpSource, common::http_source::Body) {
    let mut behaviour = Behaviour::new(24 << 20);
    behaviour.throttle = Some(Duration::from_millis(60));
    let body = behaviour.body;
    (serve(behaviour).await, body)
}

/// Creates an ingest of `url` into `bucket` at `endpoint`, acting as `writer`.
async fn start_ingest(api: &Api<S3Ingest>, name: &str, url: &str, bucket: &str, endpoint: &str) {
    api.create(
        &PostParams::default(),
        &ingest_spec(name, url, bucket, endpoint),
    )
    .await
    .unwrap();
}

fn web_identity(endpoint: &str, role_arn: Option<&str>, ns: &str, audience: &str) -> WebIdentity {
    WebIdentity {
        sts: sts_client(Some(endpoint), "us-east-1", None),
        role_arn: role_arn.map(Into::into),
        session_name: s3flow::identity::session_name(ns, "writer"),
        duration: Duration::from_secs(3600),
        subject: format!("system:serviceaccount:{ns}:writer"),
        audience: audience.into(),
    }
}

/// Whether `keys` may write to `bucket` at `endpoint`: Ok, or the S3 error code.
async fn write(
    endpoint: &str,
    keys: &aws_credential_types::Credentials,
    bucket: &str,
) -> Result<(), String> {
    let s3 = signing_with(endpoint, keys).await;
    s3.put_object()
        .bucket(bucket)
        .key("probe.txt")
        .body(b"probe".to_vec().into())
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            use aws_sdk_s3::error::ProvideErrorMetadata;
            e.code().unwrap_or("no code").to_string()
        })
}

#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn a_service_account_token_becomes_keys_for_its_own_bucket_only() {
    let env = common::env().await;
    let sts = sts();
    let (a, b) = (
        tenant(&env.client, &sts).await,
        tenant(&env.client, &sts).await,
    );

    // The provider's discovery document, read anonymously as an STS reads it.
    let ca = std::fs::read(env.env_dir.join("pki/ca.crt")).unwrap();
    let http = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let server = var("S3FLOW_TEST_API_SERVER");
    let discovery = http
        .get(format!("{server}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let discovery: serde_json::Value = serde_json::from_str(&discovery).unwrap();
    assert_eq!(discovery["issuer"], json!(server));
    assert_eq!(
        discovery["jwks_uri"],
        json!(format!("{server}/openid/v1/jwks"))
    );

    for (mode, endpoint, role) in [
        ("role policy", &sts.roles, Some(sts.role_arn.as_str())),
        ("claims", &sts.claims, None),
    ] {
        for (me, other) in [(&a, &b), (&b, &a)] {
            let jwt = token(&env.client, me, "writer", &sts.audience).await;
            let keys = web_identity(endpoint, role, me, &sts.audience)
                .exchange(&jwt)
                .await
                .unwrap_or_else(|e| panic!("{mode}: {e}"));
            // DurationSeconds is honoured: keys for an hour, not the token's ten minutes.
            let life = keys
                .expiry()
                .unwrap()
                .duration_since(SystemTime::now())
                .unwrap();
            assert!(life > Duration::from_secs(3000), "{mode}: {life:?}");
            assert_eq!(
                write(endpoint, &keys, me).await,
                Ok(()),
                "{mode}: own bucket"
            );
            assert_eq!(
                write(endpoint, &keys, other).await,
                Err("AccessDenied".into()),
                "{mode}: the other tenant's bucket"
            );
        }
    }

    // A token for the API server's audience, and one signed by another key: refused as denied.
    let api_token = token(&env.client, &a, "writer", &server).await;
    let forged = {
        let parts: Vec<&str> = api_token.split('.').collect();
        format!(
            "{}.{}.{}",
            parts[0], parts[1], "c2lnbmVkIGJ5IHNvbWVvbmUgZWxzZQ"
        )
    };
    for (what, jwt) in [("API audience", api_token), ("forged signature", forged)] {
        let refused = web_identity(&sts.roles, Some(&sts.role_arn), &a, &sts.audience)
            .exchange(&jwt)
            .await
            .unwrap_err();
        assert_eq!(refused.reason(), "AssumeRoleDenied", "{what}: {refused}");
        assert!(!refused.is_transient());
    }
    // A token for the STS audience opens nothing at the API server.
    let sts_token = token(&env.client, &a, "writer", &sts.audience).await;
    let status = http
        .get(format!("{server}/api/v1/namespaces/{a}/serviceaccounts"))
        .bearer_auth(&sts_token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 401);
    for ns in [a, b] {
        common::delete_namespace(&env.client, &ns).await;
    }
}

fn helm(args: &[&str]) -> String {
    common::run("helm", args, b"")
}

/// The operator's Prometheus text, scraped from its pod.
async fn metrics(client: &Client, ns: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=s3flow"))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .expect("a running operator pod");
    let ip = pod.status.unwrap().pod_ip.unwrap();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{ip}:8080/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The sum of the samples of `name` whose labels contain `labels`.
fn sample(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn ingest_spec(name: &str, url: &str, bucket: &str, endpoint: &str) -> S3Ingest {
    serde_json::from_value(json!({
        "apiVersion": "s3flow.io/v1alpha1", "kind": "S3Ingest",
        "metadata": {"name": name},
        "spec": {
            "source": {"url": url},
            "destination": {"bucket": bucket, "key": format!("{name}.bin"), "endpoint": endpoint,
                "forcePathStyle": true, "serviceAccountName": "writer"},
            "transfer": {"partSize": "5Mi", "concurrency": 2},
        }
    }))
    .unwrap()
}

async fn ingest_ended(api: &Api<S3Ingest>, name: &str) -> s3flow::api::ingest::S3IngestStatus {
    common::wait(
        api.clone(),
        name,
        |o: Option<&S3Ingest>| {
            o.and_then(|o| o.status.as_ref())
                .is_some_and(|s| matches!(s.phase, Phase::Succeeded | Phase::Failed))
        },
        180,
    )
    .await
    .status
    .unwrap()
}

fn reason(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> String {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn the_helm_installed_operator_acts_as_each_tenants_service_account() {
    let env = common::env().await;
    let client = env.client.clone();
    common::install_crds(&client).await;
    let sts = sts();
    let (a, b) = (tenant(&client, &sts).await, tenant(&client, &sts).await);
    let release = common::namespace(&client, "idop").await;

    // Keys last 15 minutes and are renewed after 6 s: a transfer of some seconds spans renewals.
    let values = [
        "identity.enabled=true".to_string(),
        format!("identity.namespaces={{{a},{b},{release}}}"),
        format!("identity.sts[0].s3Endpoint={}", sts.roles),
        format!("identity.sts[0].stsEndpoint={}", sts.roles),
        format!("identity.sts[0].audience={}", sts.audience),
        "identity.sessionDurationSeconds=900".into(),
        "identity.cache.maxDurationSeconds=6".into(),
        format!("watchNamespaces={{{a},{b},{release}}}"),
        "addressPolicy.allowCidrs={127.0.0.1/32}".into(),
        "metrics.host=$(POD_IP)".into(),
        "leaderElection.enabled=false".into(),
    ];
    let mut args = vec![
        "install",
        "s3flow",
        CHART,
        "--namespace",
        &release,
        "--wait",
        "--timeout",
        "120s",
    ];
    for v in &values {
        args.extend(["--set", v.as_str()]);
    }
    helm(&args);

    // What the chart lets the operator's ServiceAccount do: tokens for the listed namespaces'
    // ServiceAccounts, none elsewhere (its own namespace included).
    let mut config = kube::Config::infer().await.unwrap();
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{release}:s3flow"));
    let operator = Client::try_from(config).unwrap();
    let outsider = common::namespace(&client, "idx").await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &outsider);
    let writer: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "writer"}})).unwrap();
    accounts
        .create(&PostParams::default(), &writer)
        .await
        .unwrap();
    let mint = async |ns: &str| match request_token(&operator, ns, "writer", &sts.audience).await {
        Ok(_) => 200,
        Err(kube::Error::Api(status)) => status.code,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(mint(&a).await, 200, "a listed namespace");
    assert_eq!(mint(&outsider).await, 403, "a namespace not listed");
    assert_eq!(mint(&release).await, 403, "the operator's own namespace");

    // An ingest in A as `writer` into A's bucket, slow enough to span several renewals.
    let ingests: Api<S3Ingest> = Api::namespaced(client.clone(), &a);
    let (source, body) = slow_source().await;
    let before = metrics(&client, &release).await;
    start_ingest(&ingests, "own", &source.url, &a, &sts.roles).await;
    let status = ingest_ended(&ingests, "own").await;
    assert_eq!(status.phase, Phase::Succeeded, "{:?}", status.conditions);
    assert_eq!(status.checksum, Some(body.sha256()));
    let after = metrics(&client, &release).await;
    let exchanges =
        |text: &str| sample(text, "s3flow_identity_sts_requests_total", "result=\"ok\"");
    assert!(
        exchanges(&after) - exchanges(&before) >= 2.0,
        "keys renewed during the transfer: {} exchanges",
        exchanges(&after) - exchanges(&before)
    );

    // The same ServiceAccount aimed at B's bucket: denied, nothing written, no upload left.
    let small = serve(Behaviour::new(6 << 20)).await;
    start_ingest(&ingests, "other", &small.url, &b, &sts.roles).await;
    let denied = ingest_ended(&ingests, "other").await;
    assert_eq!(denied.phase, Phase::Failed);
    assert_eq!(
        reason(&denied.conditions),
        "AccessDenied",
        "{:?}",
        denied.conditions
    );
    let b_root = root(&sts.roles).await;
    let objects = b_root.list_objects_v2().bucket(&b).send().await.unwrap();
    assert_eq!(
        objects.key_count(),
        Some(0),
        "nothing written to B's bucket"
    );
    let uploads = b_root
        .list_multipart_uploads()
        .bucket(&b)
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "no upload left in B's bucket");

    // A scan in A as `writer`: planned by the operator, chunks read by pods running as `writer`
    // that exchange their own projected token; no keys anywhere in the pods.
    let rows = 4000u64;
    let mut csv = String::from("id,amount\n");
    for i in 0..rows {
        csv.push_str(&format!("{i},{}\n", i % 100));
    }
    root(&sts.roles)
        .await
        .put_object()
        .bucket(&a)
        .key("data.csv")
        .body(csv.into_bytes().into())
        .send()
        .await
        .unwrap();
    let scans: Api<S3ParallelScan> = Api::namespaced(client.clone(), &a);
    let scan: S3ParallelScan = serde_json::from_value(json!({
        "apiVersion": "s3flow.io/v1alpha1", "kind": "S3ParallelScan",
        "metadata": {"name": "count"},
        "spec": {
            "source": {"bucket": a, "key": "data.csv", "endpoint": sts.roles, "forcePathStyle": true,
                       "serviceAccountName": "writer"},
            "format": {"csv": {"header": true}},
            "chunking": {"chunkSize": "8Ki", "parallelism": 4},
            "processor": {"sql": "SELECT COUNT(*) AS n, SUM(CAST(amount AS INT)) AS total FROM S3Object"},
        }
    }))
    .unwrap();
    scans.create(&PostParams::default(), &scan).await.unwrap();
    // A chunk Job, seen while the scan runs (the Jobs go once it has succeeded).
    let jobs: Api<Job> = Api::namespaced(client.clone(), &a);
    let mut job = None;
    for _ in 0..600 {
        job = jobs
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .next();
        if job.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = job.expect("a chunk Job within 60 s");
    let done = common::scan_succeeded(&scans, "count", 180).await;
    // The scan's reconciles found the identity's keys in the cache.
    let scanned = metrics(&client, &release).await;
    println!(
        "exchanges during the ingest: {}; cache hits after the scan: {}",
        exchanges(&after) - exchanges(&before),
        sample(&scanned, "s3flow_identity_cache_hits_total", "")
    );
    assert!(sample(&scanned, "s3flow_identity_cache_hits_total", "") >= 1.0);
    let result = done.result.unwrap();
    assert_eq!(result["n"], json!(rows));
    assert_eq!(
        result["total"],
        json!((0..rows).map(|i| i % 100).sum::<u64>())
    );
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("writer"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let projected = serde_json::to_string(&pod.volumes).unwrap();
    assert!(
        projected.contains(&format!("\"audience\":\"{}\"", sts.audience)),
        "{projected}"
    );
    let env_names: Vec<String> = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
        .flat_map(|c| c.env.iter().flatten().map(|e| e.name.clone()))
        .collect();
    assert!(
        env_names.iter().all(|n| !n.starts_with("AWS_")),
        "{env_names:?}"
    );

    // Hostile: an unlabelled ServiceAccount; an endpoint the admin did not list (no token is
    // minted for it); a resource in the operator's own namespace.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &b);
    let plain: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "plain",
        "annotations": {"eks.amazonaws.com/role-arn": sts.role_arn}}}))
    .unwrap();
    accounts
        .create(&PostParams::default(), &plain)
        .await
        .unwrap();
    let tokens_before = sample(
        &metrics(&client, &release).await,
        "s3flow_identity_token_requests_total",
        "",
    );
    let cases = [
        (
            b.clone(),
            "unlabelled",
            &sts.roles,
            "plain",
            "ServiceAccountNotLabelled",
        ),
        (
            a.clone(),
            "unlisted",
            &env.s3_endpoint,
            "writer",
            "IdentityUnsupportedEndpoint",
        ),
        (
            release.clone(),
            "release",
            &sts.roles,
            "writer",
            "IdentityNotAllowed",
        ),
    ];
    let tiny = serve(Behaviour::new(1 << 20)).await;
    for (ns, name, endpoint, account, expected) in &cases {
        let api: Api<S3Ingest> = Api::namespaced(client.clone(), ns);
        let mut spec = ingest_spec(name, &tiny.url, ns, endpoint);
        spec.spec.destination.connection.service_account_name = Some(account.to_string());
        api.create(&PostParams::default(), &spec).await.unwrap();
        let ended = ingest_ended(&api, name).await;
        assert_eq!(ended.phase, Phase::Failed, "{name}");
        assert_eq!(
            &reason(&ended.conditions),
            expected,
            "{name}: {:?}",
            ended.conditions
        );
        common::controller::assert_event(&client, ns, name, expected, "Warning").await;
    }
    let tokens_after = sample(
        &metrics(&client, &release).await,
        "s3flow_identity_token_requests_total",
        "",
    );
    assert_eq!(
        tokens_before, tokens_after,
        "no token minted for a refused resource"
    );

    // Deleted together with its ServiceAccount (as GitOps deletes both): the deletion completes
    // within a bound, and the upload is either aborted (the transfer still held good keys) or
    // left with a Warning Event saying so, for the bucket's lifecycle rule.
    let b_ingests: Api<S3Ingest> = Api::namespaced(client.clone(), &b);
    let (slow, _) = slow_source().await;
    start_ingest(&b_ingests, "orphan", &slow.url, &b, &sts.roles).await;
    let in_flight = common::wait(
        b_ingests.clone(),
        "orphan",
        |o: Option<&S3Ingest>| {
            o.and_then(|o| o.status.as_ref())
                .is_some_and(|s| s.upload_id.is_some() && s.bytes_transferred.unwrap_or(0) > 0)
        },
        60,
    )
    .await;
    let upload_id = in_flight.status.unwrap().upload_id.unwrap();
    let b_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &b);
    b_accounts
        .delete("writer", &Default::default())
        .await
        .unwrap();
    b_ingests
        .delete("orphan", &Default::default())
        .await
        .unwrap();
    common::wait_deleted(
        b_ingests.clone(),
        "orphan",
        &in_flight.metadata.uid.unwrap(),
        30,
    )
    .await;
    let left = b_root
        .list_multipart_uploads()
        .bucket(&b)
        .send()
        .await
        .unwrap();
    let still_there = left
        .uploads()
        .iter()
        .any(|u| u.upload_id() == Some(upload_id.as_str()));
    if still_there {
        common::controller::assert_event(&client, &b, "orphan", "UploadNotAborted", "Warning")
            .await;
        b_root
            .abort_multipart_upload()
            .bucket(&b)
            .key("orphan.bin")
            .upload_id(&upload_id)
            .send()
            .await
            .unwrap();
    }
    println!("deleted with its ServiceAccount: upload left and reported: {still_there}");

    // No token or session token in any status, Event or log line.
    let mut seen = String::new();
    for ns in [&a, &b, &release] {
        let ingests: Api<S3Ingest> = Api::namespaced(client.clone(), ns);
        seen.push_str(
            &serde_json::to_string(&ingests.list(&ListParams::default()).await.unwrap().items)
                .unwrap(),
        );
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
        seen.push_str(
            &serde_json::to_string(&events.list(&ListParams::default()).await.unwrap().items)
                .unwrap(),
        );
    }
    seen.push_str(
        &serde_json::to_string(&scans.list(&ListParams::default()).await.unwrap().items).unwrap(),
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), &release);
    let mut logs = String::new();
    for pod in pods.list(&ListParams::default()).await.unwrap() {
        let dir = env
            .env_dir
            .join(format!("node/pods/{}/containers", pod.uid().unwrap()));
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            logs.push_str(&std::fs::read_to_string(entry.path().join("log")).unwrap_or_default());
        }
    }
    assert!(
        logs.contains("serving /metrics"),
        "the operator's log was read"
    );
    seen.push_str(&logs);
    assert!(
        !seen.contains("eyJ"),
        "a JWT in a status, Event or log line"
    );

    helm(&["uninstall", "s3flow", "--namespace", &release, "--wait"]);
    for ns in [a, b, release, outsider] {
        common::delete_namespace(&client, &ns).await;
    }
}
