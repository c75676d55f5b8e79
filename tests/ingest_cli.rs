//! `s3flow ingest` as a user runs it: peak memory stays within part size x (concurrency + 2) plus a
//! small constant for a multi-GiB object, bad input ends with a clear error and a non-zero exit, and
//! Ctrl-C leaves no upload behind.

mod common;

use common::http_source::{Behaviour, serve};

const MIB: u64 = 1 << 20;

/// Runs `s3flow ingest`, returning (exit code, stdout, stderr, peak RSS in bytes).
async fn ingest(args: Vec<String>) -> (i32, String, String, u64) {
    common::cli::run("ingest", args).await
}

fn base_args(url: &str, destination: &str, endpoint: &str) -> Vec<String> {
    [url, destination, "--endpoint", endpoint]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn peak_memory_stays_within_the_bound_whatever_the_size() {
    let env = common::env().await;
    let bucket = common::minio::Bucket::create(&env, "memory").await.name;
    let (part, concurrency) = (8 * MIB, 4u64);
    let bound = part * (concurrency + 2) + 64 * MIB;
    let mut peaks = Vec::new();
    for len in [256 * MIB, 2048 * MIB + 12345] {
        let source = serve(Behaviour::new(len)).await;
        let mut args = base_args(
            &source.url,
            &format!("s3://{bucket}/size-{len}"),
            &env.s3_endpoint,
        );
        args.extend(
            [
                "--part-size",
                "8Mi",
                "--concurrency",
                "4",
                "--allow-source-cidr",
                "127.0.0.1/32",
            ]
            .map(String::from),
        );
        let (code, out, err, peak) = ingest(args).await;
        assert_eq!(code, 0, "stderr: {err}");
        let result: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(result["size"], len);
        println!(
            "s3flow ingest of {len} bytes, 8Mi parts, concurrency 4: peak RSS {} MiB",
            peak / MIB
        );
        assert!(
            peak < bound,
            "peak RSS {peak} exceeds the bound {bound} for {len} bytes"
        );
        peaks.push(peak);
    }
    // Flat in the object's size: 8 times the bytes, not 8 times the memory.
    assert!(
        peaks[1] < peaks[0] + 32 * MIB,
        "peak grew with size: {peaks:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn bad_input_fails_with_a_clear_message() {
    let env = common::env().await;
    let missing = serve(Behaviour {
        status: Some(404),
        ..Behaviour::new(1)
    })
    .await;
    let allow = ["--allow-source-cidr", "127.0.0.1/32"].map(String::from);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            base_args(&missing.url, "s3://bucket/key", &env.s3_endpoint),
            "which s3flow may not connect to",
        ),
        (
            [
                base_args(
                    &missing.url,
                    "s3://no-such-bucket-s3flow/key",
                    &env.s3_endpoint,
                ),
                allow.to_vec(),
            ]
            .concat(),
            "source not found",
        ),
        (
            base_args(&missing.url, "bucket/key", &env.s3_endpoint),
            "is not an s3://bucket/key URL",
        ),
        (
            [
                base_args(&missing.url, "s3://b/k", &env.s3_endpoint),
                vec!["--part-size".into(), "lots".into()],
            ]
            .concat(),
            "is not a size",
        ),
    ];
    for (args, expected) in cases {
        let (code, out, err, _) = ingest(args.clone()).await;
        assert_ne!(code, 0, "{args:?} succeeded: {out}");
        assert!(
            err.contains(expected),
            "{args:?}: expected {expected:?} in stderr: {err}"
        );
        assert!(out.is_empty(), "{args:?} printed a result: {out}");
    }
}

/// Ctrl-C (SIGINT) mid-copy: the command stops with a clear error, aborts its multipart upload,
/// and leaves neither an upload nor an object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn interrupted_ingests_leave_no_upload() {
    let env = common::env().await;
    let bucket = common::minio::Bucket::create(&env, "ingest-stop").await;
    let source = serve(Behaviour {
        throttle: Some(std::time::Duration::from_millis(5)),
        ..Behaviour::new(64 * MIB)
    })
    .await;
    let mut args = base_args(
        &source.url,
        &format!("s3://{}/copy", bucket.name),
        &env.s3_endpoint,
    );
    args.extend(["--allow-source-cidr", "127.0.0.1/32", "--part-size", "5Mi"].map(String::from));
    let child = common::cli::spawn("ingest", &args);
    let mut uploading = false;
    for _ in 0..500 {
        uploading = !bucket.uploads().await.is_empty();
        if uploading {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(uploading, "no upload was seen in flight");
    common::cli::interrupt(child).await;
    bucket.assert_no_uploads_left().await;
    assert_eq!(bucket.object_sha256("copy").await, None);
}
