//! What hostile input does to `s3flow scan` and `s3flow ingest` on one machine, as a user runs
//! them: SQL that nests 30,000 levels, a Parquet footer that nests 100,000, an S3 endpoint that
//! answers every GET with an endless error body or drips its bodies a byte at a time, and a
//! source that sends its response head a byte at a time. Each ends in a clean error (exit 1 with
//! its reason, never a signal), within bounded memory and time.

mod common;

use std::time::{Duration, Instant};

use common::hostile_endpoint::{Hostility, deep_parquet, start};
use common::minio::Bucket;

/// What one run of the CLI did.
struct Run {
    code: i32,
    err: String,
    rss: u64,
    took: Duration,
}

async fn run(subcommand: &'static str, args: &[&str]) -> Run {
    let started = Instant::now();
    let args = args.iter().map(|a| a.to_string()).collect();
    let (code, _, err, rss) = common::cli::run(subcommand, args).await;
    Run {
        code,
        err,
        rss,
        took: started.elapsed(),
    }
}

/// Asserts a clean refusal: exit 1, an error naming `reason` and holding `detail`, peak memory
/// under `rss_mib`, within `seconds`.
fn refused(what: &str, run: &Run, (reason, detail): (&str, &str), rss_mib: u64, seconds: u64) {
    let Run {
        code,
        err,
        rss,
        took,
    } = run;
    assert_eq!(*code, 1, "{what}: exit {code}: {err}");
    assert!(err.starts_with("error: "), "{what}: {err}");
    assert!(err.contains(&format!("({reason})")), "{what}: {err}");
    assert!(err.contains(detail), "{what}: {detail:?} not in {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert!(*rss < rss_mib << 20, "{what}: peak RSS {} MiB", rss >> 20);
    assert!(took.as_secs() < seconds, "{what}: took {took:?}");
    eprintln!(
        "{what}: {reason} in {:.1} s, peak RSS {} MiB",
        took.as_secs_f64(),
        rss >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn hostile_inputs_end_in_clean_errors_in_bounded_memory() {
    let env = common::env().await;
    let bucket = Bucket::create(&env, "hostile-cli").await;
    bucket.put("small.csv", b"a,b\n1,2\n".to_vec()).await;
    bucket.put("deep.parquet", deep_parquet(100_000)).await;
    let object = |key: &str| format!("s3://{}/{key}", bucket.name);
    let minio = bucket.endpoint.as_str();

    // 30,000 terms, 60 KiB: as much as the CRD admits.
    let deep_sql = format!(
        "SELECT COUNT(*) FROM S3Object WHERE 1{} > 0",
        "+1".repeat(29_999)
    );
    let small = object("small.csv");
    let args = [
        small.as_str(),
        "--endpoint",
        minio,
        "--sql",
        deep_sql.as_str(),
    ];
    let deep = run("scan", &args).await;
    refused(
        "SQL 30,000 levels deep",
        &deep,
        ("InvalidSql", "nests more than 256"),
        200,
        30,
    );

    let parquet = object("deep.parquet");
    let count = "SELECT COUNT(*) FROM S3Object";
    let args = [
        parquet.as_str(),
        "--endpoint",
        minio,
        "--sql",
        count,
        "--format",
        "parquet",
    ];
    let deep = run("scan", &args).await;
    refused(
        "a footer 100,000 levels deep",
        &deep,
        ("InvalidObject", "nests more than 64"),
        200,
        30,
    );

    // Every GET answered with 1.5 GiB of error body: the SDK reads at most 1 MiB of each.
    let flood = start(Hostility::ErrorFlood { bytes: 3 << 29 }).await;
    let args = [
        small.as_str(),
        "--endpoint",
        flood.url.as_str(),
        "--sql",
        count,
        "--format",
        "csv",
    ];
    let flooded = run("scan", &args).await;
    refused(
        "an endless error body",
        &flooded,
        ("S3Error", "s3://"),
        200,
        240,
    );
    let sent = flood.sent.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "  the endpoint sent {} MiB over {} requests",
        sent >> 20,
        flood.requests.load(std::sync::atomic::Ordering::Relaxed)
    );

    // A body one byte every 2 s: the floor (1 KiB/s over 3 s of waiting) ends it.
    let drip = start(Hostility::Drip {
        every: Duration::from_secs(2),
    })
    .await;
    let args = [
        small.as_str(),
        "--endpoint",
        drip.url.as_str(),
        "--sql",
        count,
        "--format",
        "csv",
        "--stall-timeout",
        "3",
    ];
    let dripped = run("scan", &args).await;
    refused(
        "a body dripped a byte at a time",
        &dripped,
        ("SourceStalled", "below the floor"),
        200,
        60,
    );

    // A response head a byte every second: its deadline (the stall timeout) ends it at once.
    let trickle = start(Hostility::HeadTrickle {
        every: Duration::from_secs(1),
    })
    .await;
    let destination = object("never.bin");
    let args = [
        trickle.url.as_str(),
        destination.as_str(),
        "--endpoint",
        minio,
        "--allow-source-cidr",
        "127.0.0.1/32",
        "--stall-timeout",
        "5",
    ];
    let trickled = run("ingest", &args).await;
    refused(
        "a response head a byte a second",
        &trickled,
        ("SourceStalled", "response head"),
        200,
        30,
    );
    bucket.assert_no_uploads_left().await;
}
