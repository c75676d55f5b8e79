//! The ingest engine against real MinIO and a local HTTP source: every result byte-identical to the
//! source, and no incomplete multipart upload left behind after success or after any failure.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use common::http_source::{Behaviour, Body, HttpSource, serve};
use s3flow::address::AddressPolicy;
use s3flow::ingest::{
    self, IngestError, IngestRequest, MemoryBudget, NoLog, PartSize, Progress, SourceConfig,
    ThroughputFloor,
};
use s3flow::s3::{S3Credentials, S3Settings, StaticCredentials, client};

const MIB: u64 = 1 << 20;
const PART: u64 = 5 * MIB;

async fn fixture() -> common::minio::Bucket {
    common::minio::Bucket::create(&common::env().await, "ingest").await
}

fn request(url: &str, bucket: &str, key: &str) -> IngestRequest {
    IngestRequest {
        source: SourceConfig {
            url: url.to_string(),
            headers: vec![],
            ca_bundle: None,
            policy: Arc::new(AddressPolicy {
                allowed: vec!["127.0.0.1/32".parse().unwrap()],
                ..Default::default()
            }),
            stall_timeout: Duration::from_secs(10),
            floor: ThroughputFloor {
                min_bytes_per_second: 1024,
                window: Duration::from_secs(10),
            },
        },
        expected_size: None,
        expected_sha256: None,
        bucket: bucket.to_string(),
        key: key.to_string(),
        content_type: None,
        storage_class: None,
        overwrite: false,
        part_size: PartSize::Fixed(PART),
        concurrency: 3,
    }
}

/// The engine as the CLI runs it: memory of its own, nothing recorded.
async fn ingest_once(
    s3: &Client,
    request: &IngestRequest,
    progress: &tokio::sync::watch::Sender<Progress>,
    resume: Option<ingest::Resume>,
) -> Result<ingest::Outcome, IngestError> {
    let mut memory = MemoryBudget::unlimited().reserve(0).await.unwrap();
    ingest::ingest(s3, request, progress, resume, &mut memory, &mut NoLog).await
}

async fn run(
    s3: &Client,
    request: &IngestRequest,
) -> (Result<ingest::Outcome, IngestError>, Progress) {
    let (progress, updates) = tokio::sync::watch::channel(Progress::default());
    let outcome = ingest_once(s3, request, &progress, None).await;
    let last = updates.borrow().clone();
    (outcome, last)
}

#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn sizes_and_source_kinds_arrive_byte_identical() {
    let f = fixture().await;
    let sizes = [0, 1, PART - 1, PART, PART + 1, 2 * PART, 2 * PART + 7];
    for len in sizes {
        for (content_length, ranges) in [(true, true), (true, false), (false, false)] {
            let source = serve(Behaviour {
                content_length,
                ranges,
                ..Behaviour::new(len)
            })
            .await;
            let key = format!("sizes/{len}-{content_length}-{ranges}");
            let (outcome, progress) = run(&f.s3, &request(&source.url, &f.name, &key)).await;
            let outcome = outcome.unwrap_or_else(|e| panic!("{key}: {e}"));
            let expected = Body { len, seed: 1 }.sha256();
            assert_eq!(outcome.sha256, expected, "{key}");
            assert_eq!(outcome.size, len, "{key}");
            assert_eq!(outcome.parts as u64, len.div_ceil(PART).max(1), "{key}");
            assert_eq!(
                f.object_sha256(&key).await.as_deref(),
                Some(expected.as_str()),
                "{key}"
            );
            assert_eq!(progress.bytes_committed, len, "{key}");
            assert_eq!(progress.total_bytes, content_length.then_some(len), "{key}");
            assert_eq!(outcome.tag_error, None, "{key}");
            // Ranged sources: the first part streams, every other part is its own ranged GET.
            let requests = source.requests.load(std::sync::atomic::Ordering::SeqCst);
            let expected_requests = if ranges { len.div_ceil(PART).max(1) } else { 1 };
            assert_eq!(requests, expected_requests, "{key}");
        }
    }
    let tags =
        f.s3.get_object_tagging()
            .bucket(&f.name)
            .key("sizes/1-true-true")
            .send()
            .await
            .unwrap();
    assert_eq!(tags.tag_set()[0].value(), Body { len: 1, seed: 1 }.sha256());
    f.assert_no_uploads_left().await;
}

#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn a_dropped_connection_resumes_by_range() {
    let f = fixture().await;
    let len = 3 * PART + 123;
    let source: HttpSource = serve(Behaviour {
        drop_first_after: Some(PART + 999),
        ..Behaviour::new(len)
    })
    .await;
    // One part at a time: the whole source comes through the one streamed response.
    let mut req = request(&source.url, &f.name, "resumed");
    req.concurrency = 1;
    let (outcome, _) = run(&f.s3, &req).await;
    let outcome = outcome.unwrap();
    assert_eq!(outcome.source_resumes, 1);
    assert_eq!(outcome.sha256, Body { len, seed: 1 }.sha256());
    assert_eq!(
        f.object_sha256("resumed").await,
        Some(outcome.sha256.clone())
    );
    // Nothing was read twice: the resumed request started where the first one stopped.
    assert_eq!(
        source
            .bytes_served
            .load(std::sync::atomic::Ordering::SeqCst),
        len
    );
    f.assert_no_uploads_left().await;
}

/// A change to the default request, for one failure case.
type Adjust<'a> = Box<dyn Fn(&mut IngestRequest) + 'a>;

#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn failures_leave_no_object_and_no_upload() {
    let f = fixture().await;
    let len = 2 * PART + 5;
    let cases: Vec<(&str, Behaviour, Adjust, &str)> = vec![
        (
            "drop without ranges",
            Behaviour {
                drop_first_after: Some(PART + 10),
                ranges: false,
                ..Behaviour::new(len)
            },
            Box::new(|_| {}),
            "SourceUnavailable",
        ),
        (
            "changed between requests",
            Behaviour {
                drop_first_after: Some(PART + 10),
                changed_body: Some(Body { len, seed: 2 }),
                ..Behaviour::new(len)
            },
            Box::new(|_| {}),
            "SourceChanged",
        ),
        (
            "checksum mismatch",
            Behaviour::new(len),
            Box::new(|r| r.expected_sha256 = Some(Body { len, seed: 9 }.sha256())),
            "ChecksumMismatch",
        ),
        (
            "size mismatch",
            Behaviour::new(len),
            Box::new(|r| r.expected_size = Some(len + 1)),
            "SizeMismatch",
        ),
        (
            "truncated stream without length",
            Behaviour {
                content_length: false,
                ranges: false,
                ..Behaviour::new(len)
            },
            Box::new(|r| r.expected_size = Some(len + 1)),
            "SizeMismatch",
        ),
        (
            "404",
            Behaviour {
                status: Some(404),
                ..Behaviour::new(len)
            },
            Box::new(|_| {}),
            "SourceNotFound",
        ),
        (
            "401",
            Behaviour {
                status: Some(401),
                ..Behaviour::new(len)
            },
            Box::new(|_| {}),
            "SourceAccessDenied",
        ),
        (
            "part size too small for the length",
            Behaviour::new(len),
            Box::new(|r| r.part_size = PartSize::Fixed(MIB)),
            "InvalidPartSize",
        ),
        (
            "missing bucket",
            Behaviour::new(len),
            Box::new(|r| r.bucket = "s3flow-no-such-bucket".into()),
            "BucketNotFound",
        ),
    ];
    for (what, behaviour, adjust, reason) in cases {
        let source = serve(behaviour).await;
        let key = format!("failed/{}", what.replace(' ', "-"));
        let mut req = request(&source.url, &f.name, &key);
        adjust(&mut req);
        let (outcome, _) = run(&f.s3, &req).await;
        let error = outcome.expect_err(what);
        assert_eq!(error.reason(), reason, "{what}: {error}");
        assert_eq!(
            f.object_sha256(&key).await,
            None,
            "{what}: an object appeared"
        );
        f.assert_no_uploads_left().await;
    }
}

#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn existing_objects_are_kept_unless_overwrite_is_set() {
    let f = fixture().await;
    let first = serve(Behaviour::new(100)).await;
    run(&f.s3, &request(&first.url, &f.name, "kept"))
        .await
        .0
        .unwrap();
    let second = serve(Behaviour {
        body: Body { len: 200, seed: 7 },
        ..Behaviour::new(200)
    })
    .await;
    let error = run(&f.s3, &request(&second.url, &f.name, "kept"))
        .await
        .0
        .unwrap_err();
    assert_eq!(error.reason(), "ObjectExists");
    assert_eq!(
        f.object_sha256("kept").await,
        Some(Body { len: 100, seed: 1 }.sha256())
    );
    let mut overwrite = request(&second.url, &f.name, "kept");
    overwrite.overwrite = true;
    run(&f.s3, &overwrite).await.0.unwrap();
    assert_eq!(
        f.object_sha256("kept").await,
        Some(Body { len: 200, seed: 7 }.sha256())
    );
    f.assert_no_uploads_left().await;
}

#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn forbidden_addresses_and_bad_credentials_are_refused() {
    let f = fixture().await;
    let source = serve(Behaviour::new(10)).await;
    let port = source
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    for url in [
        source.url.clone(),
        format!("http://localhost:{port}/data.bin"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[fd00:ec2::254]/latest/".to_string(),
        "http://0.0.0.0:1/".to_string(),
    ] {
        let mut req = request(&url, &f.name, "forbidden");
        req.source.policy = Arc::new(AddressPolicy::default());
        let error = run(&f.s3, &req).await.0.unwrap_err();
        assert_eq!(error.reason(), "ForbiddenAddress", "{url}: {error}");
    }
    assert_eq!(
        source.requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the source was dialled"
    );

    let wrong = client(&S3Settings {
        endpoint: Some(f.endpoint.clone()),
        force_path_style: true,
        credentials: S3Credentials::Static(StaticCredentials {
            access_key_id: "not-a-user".into(),
            secret_access_key: "not-a-secret".into(),
            session_token: None,
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let error = run(&wrong, &request(&source.url, &f.name, "denied"))
        .await
        .0
        .unwrap_err();
    assert_eq!(error.reason(), "AccessDenied", "{error}");
    f.assert_no_uploads_left().await;
}

/// Runs an ingest until S3 holds `parts` parts and a hash checkpoint exists, then drops it the way a
/// killed process would (no abort), returning where a restart would resume.
async fn crash_after(s3: &Client, request: &IngestRequest, parts: u32) -> ingest::Resume {
    let (progress, mut updates) = tokio::sync::watch::channel(Progress::default());
    let engine = ingest_once(s3, request, &progress, None);
    tokio::pin!(engine);
    let deadline = tokio::time::sleep(Duration::from_secs(120));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            outcome = &mut engine => panic!("finished before the crash: {outcome:?}"),
            () = &mut deadline => panic!("{parts} parts not committed in 2 minutes"),
            Ok(()) = updates.changed() => {
                let p = updates.borrow_and_update().clone();
                if p.parts_committed >= parts && p.checkpoint.is_some_and(|c| c.length > 0) {
                    return ingest::Resume {
                        upload_id: p.upload_id.unwrap(),
                        validator: p.validator.unwrap(),
                        total_bytes: p.total_bytes.unwrap(),
                        checkpoint: p.checkpoint.unwrap(),
                    };
                }
            }
        }
    }
}

#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn a_restart_resumes_from_the_parts_s3_holds() {
    let f = fixture().await;
    let len = 8 * PART + 77;
    let throttle = Some(Duration::from_millis(2));
    let source = serve(Behaviour {
        throttle,
        ..Behaviour::new(len)
    })
    .await;
    let req = request(&source.url, &f.name, "resumed-upload");
    let resume = crash_after(&f.s3, &req, 3).await;
    // Let the crashed run's connection wind down before counting what the resumed run reads.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let served_before = source
        .bytes_served
        .load(std::sync::atomic::Ordering::SeqCst);
    let (progress, _) = tokio::sync::watch::channel(Progress::default());
    let outcome = ingest_once(&f.s3, &req, &progress, Some(resume.clone()))
        .await
        .unwrap();
    let resumed_at = outcome.resumed_at.expect("resumed, not started over");
    // From the earlier of the hashed end and the first part S3 lacks (parts finish out of order).
    assert!(
        resumed_at > 0 && resumed_at <= resume.checkpoint.length,
        "resumed at {resumed_at}"
    );
    let reread = source
        .bytes_served
        .load(std::sync::atomic::Ordering::SeqCst)
        - served_before;
    // The resumed run reads from its resume point on (plus what was in flight when it closed its
    // first, streamed, response), never the whole source again, and not the parts S3 holds past
    // it that the resumed hash covers; what the hash does not cover it must read.
    assert!(
        reread >= len - resume.checkpoint.length && reread < len - resumed_at + PART,
        "re-read {reread} bytes, resumed at {resumed_at}, hashed to {}",
        resume.checkpoint.length
    );
    let expected = Body { len, seed: 1 }.sha256();
    assert_eq!(outcome.sha256, expected);
    assert_eq!(f.object_sha256("resumed-upload").await, Some(expected));
    f.assert_no_uploads_left().await;

    // The source changed while no one was running: the earlier upload is aborted, the copy starts over.
    let changing = serve(Behaviour {
        throttle,
        changed_body: Some(Body { len, seed: 5 }),
        ..Behaviour::new(len)
    })
    .await;
    // Sequential reads, so that the whole first run sees the first version (request 0).
    let mut req = request(&changing.url, &f.name, "restarted-upload");
    req.concurrency = 1;
    let resume = crash_after(&f.s3, &req, 2).await;
    let outcome = ingest_once(&f.s3, &req, &progress, Some(resume))
        .await
        .unwrap();
    assert_eq!(outcome.resumed_at, None);
    assert_eq!(outcome.sha256, Body { len, seed: 5 }.sha256());
    assert_eq!(
        f.object_sha256("restarted-upload").await,
        Some(Body { len, seed: 5 }.sha256())
    );
    f.assert_no_uploads_left().await;
}

#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn https_sources_are_trusted_through_a_ca_bundle_only() {
    let f = fixture().await;
    let ca = common::http_source::TestCa::new();
    let body = Body {
        len: 3 * MIB + 11,
        seed: 4,
    };
    let (url, _server) = common::http_source::serve_tls(body, &ca);
    let error = run(&f.s3, &request(&url, &f.name, "untrusted"))
        .await
        .0
        .unwrap_err();
    assert_eq!(error.reason(), "SourceCertificateRejected", "{error}");
    let mut trusted = request(&url, &f.name, "trusted");
    trusted.source.ca_bundle = Some(ca.ca_pem.clone());
    let outcome = run(&f.s3, &trusted).await.0.unwrap();
    assert_eq!(outcome.sha256, body.sha256());
    assert_eq!(f.object_sha256("trusted").await, Some(body.sha256()));
    assert_eq!(f.object_sha256("untrusted").await, None);
    f.assert_no_uploads_left().await;
}

/// A resumed upload re-reads its parts from the resume point; a part S3 already holds is kept
/// only when its ETag is the MD5 of the bytes read again (a Last-Modified validator does not pin
/// bytes): a part with other bytes is sent again, and the object is the source's.
#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn a_held_part_is_reused_only_when_its_bytes_match() {
    let f = fixture().await;
    let len = 8 * PART + 77;
    let source = serve(Behaviour {
        throttle: Some(Duration::from_millis(2)),
        last_modified_only: true,
        ..Behaviour::new(len)
    })
    .await;
    let req = request(&source.url, &f.name, "weak-validator");
    let resume = crash_after(&f.s3, &req, 3).await;
    assert!(
        !resume.validator.starts_with('"'),
        "a Last-Modified validator: {}",
        resume.validator
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The last part, as S3 holds it, has the right size and the wrong bytes.
    f.s3.upload_part()
        .bucket(&f.name)
        .key("weak-validator")
        .upload_id(&resume.upload_id)
        .part_number(9)
        .body(vec![b'!'; 77].into())
        .send()
        .await
        .unwrap();
    let (progress, _) = tokio::sync::watch::channel(Progress::default());
    let outcome = ingest_once(&f.s3, &req, &progress, Some(resume))
        .await
        .unwrap();
    assert!(outcome.resumed_at.is_some(), "resumed, not started over");
    let expected = Body { len, seed: 1 }.sha256();
    assert_eq!(outcome.sha256, expected);
    assert_eq!(f.object_sha256("weak-validator").await, Some(expected));
    f.assert_no_uploads_left().await;
}
