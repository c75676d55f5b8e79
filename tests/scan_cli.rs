//! `s3flow scan` as a user runs it against MinIO: the same exact answer at any chunk size given as
//! bytes or with Ki/Mi suffixes, one JSON object on stdout with `--json`, bounded peak memory on a
//! large object, and clear errors with a non-zero exit for bad input.

mod common;

use common::minio::Bucket;

const MIB: usize = 1 << 20;

fn args(object: &str, endpoint: &str, sql: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [object, "--endpoint", endpoint, "--sql", sql]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn any_chunk_size_gives_the_same_answer() {
    let env = common::env().await;
    let bucket = Bucket::create(&env, "scan-cli").await;
    let mut data = b"\xef\xbb\xbfcity,note,amount\r\n".to_vec();
    let notes = [
        "plain",
        "\"a, b\"",
        "\"line\nbreak\"",
        "\"say \"\"hi\"\"\"",
        "5'10\"",
        "",
    ];
    let mut total = 0i64;
    for i in 0..400i64 {
        total += i * 3;
        data.extend_from_slice(
            format!(
                "c{},{},{}\r\n",
                i % 7,
                notes[i as usize % notes.len()],
                i * 3
            )
            .as_bytes(),
        );
    }
    bucket.put("t.csv", data).await;
    let object = format!("s3://{}/t.csv", bucket.name);
    let sql = "SELECT COUNT(*), SUM(amount), MAX(city) FROM S3Object WHERE note <> 'plain' OR amount >= 0";
    for size in ["1", "7", "100", "1Ki", "64Mi"] {
        let (code, out, err, _) = common::cli::run(
            "scan",
            args(
                &object,
                &bucket.endpoint,
                sql,
                &["--chunk-size", size, "--json"],
            ),
        )
        .await;
        assert_eq!(code, 0, "chunk size {size}: {err}");
        assert_eq!(out.lines().count(), 1, "one JSON object on stdout: {out}");
        let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            summary["result"],
            serde_json::json!({"COUNT(*)": 400, "SUM(amount)": total, "MAX(city)": "c6"}),
            "chunk size {size}"
        );
        assert_eq!(summary["records"], 400, "chunk size {size}");
    }
    // Without --json: a summary on stderr, the result as name-value lines on stdout.
    let (code, out, err, _) = common::cli::run(
        "scan",
        args(
            &object,
            &bucket.endpoint,
            "SELECT COUNT(*) AS n FROM S3Object",
            &[],
        ),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "n\t400\n");
    assert!(err.contains("400 records in 1 chunks"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn bad_input_fails_with_a_clear_error() {
    let env = common::env().await;
    let bucket = Bucket::create(&env, "scan-cli-bad").await;
    bucket.put("t.csv", b"a,b\n1,2\n".to_vec()).await;
    let object = format!("s3://{}/t.csv", bucket.name);
    let cases = [
        (
            args(&object, &bucket.endpoint, "SELECT c FROM S3Object", &[]),
            "unknown column c (the header has: a, b) at line 1, column 8",
        ),
        (
            args(
                &object,
                &bucket.endpoint,
                "SELECT * FROM S3Object WHERE",
                &[],
            ),
            "invalid SQL: ",
        ),
        (
            args(
                &object,
                &bucket.endpoint,
                "SELECT COUNT(*) FROM S3Object",
                &["--chunk-size", "0"],
            ),
            "--chunk-size must be at least 1 byte",
        ),
        (
            args(
                &object,
                &bucket.endpoint,
                "SELECT COUNT(*) FROM S3Object",
                &["--chunk-size", "5Xi"],
            ),
            "5Xi",
        ),
        (
            args(
                &format!("s3://{}/missing.csv", bucket.name),
                &bucket.endpoint,
                "SELECT COUNT(*) FROM S3Object",
                &[],
            ),
            "(ObjectNotFound)",
        ),
        (
            args(
                &object,
                &bucket.endpoint,
                "SELECT SUM(b) FROM S3Object",
                &["--format", "jsonl"],
            ),
            "invalid JSON",
        ),
        (
            args(
                &object,
                &bucket.endpoint,
                "SELECT COUNT(*) FROM S3Object",
                &["--format", "jsonl"],
            ),
            "invalid JSON: expected value at line 1 column 1",
        ),
    ];
    for (args, want) in cases {
        let (code, out, err, _) = common::cli::run("scan", args.clone()).await;
        assert_ne!(code, 0, "{args:?}");
        assert!(out.is_empty(), "{args:?}: stdout {out}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// Peak memory of a scan of a 512 MiB CSV with 64 MiB chunks, 8 at once, writing rows: a few
/// buffers per chunk, never the chunk or the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn peak_memory_stays_bounded() {
    let env = common::env().await;
    let bucket = Bucket::create(&env, "scan-cli-memory").await;
    // Uploaded in 8 MiB parts made on the fly: the test process itself stays small, as a child's
    // peak RSS counts what it shared with its parent before exec.
    let upload = bucket
        .s3
        .create_multipart_upload()
        .bucket(&bucket.name)
        .key("big.csv")
        .send()
        .await
        .unwrap();
    let upload_id = upload.upload_id().unwrap();
    let (mut i, mut parts, mut part) = (0u64, Vec::new(), b"id,value,text\n".to_vec());
    while parts.len() < 64 {
        part.extend_from_slice(format!("{i},{},\"row {i}, quoted\"\n", i % 1000).as_bytes());
        i += 1;
        if part.len() >= 8 * MIB {
            let number = parts.len() as i32 + 1;
            let done = bucket
                .s3
                .upload_part()
                .bucket(&bucket.name)
                .key("big.csv")
                .upload_id(upload_id)
                .part_number(number)
                .body(std::mem::take(&mut part).into())
                .send()
                .await
                .unwrap();
            parts.push(
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(number)
                    .e_tag(done.e_tag().unwrap())
                    .build(),
            );
        }
    }
    bucket
        .s3
        .complete_multipart_upload()
        .bucket(&bucket.name)
        .key("big.csv")
        .upload_id(upload_id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let object = format!("s3://{}/big.csv", bucket.name);
    let output = format!("s3://{}/out/", bucket.name);
    let (code, out, err, peak) = common::cli::run(
        "scan",
        args(
            &object,
            &bucket.endpoint,
            "SELECT id, text FROM S3Object WHERE CAST(value AS INT) < 100",
            &["--output", &output, "--json"],
        ),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["records"], i);
    assert_eq!(summary["rows"], (0..i).filter(|n| n % 1000 < 100).count());
    eprintln!("peak RSS scanning 512 MiB: {} MiB", peak / MIB as u64);
    // 8 chunks x (read buffer + parse + a 8 MiB part buffer in flight) plus the runtime.
    assert!(
        peak < 200 * MIB as u64,
        "peak RSS {} MiB",
        peak / MIB as u64
    );
    bucket.assert_no_uploads_left().await;
}

/// A record that never ends (a quote that never closes, a JSON line as long as the object) fails
/// as bad data naming its offset once it is longer than --max-record-size, with memory bounded by
/// that size, whatever the query: before the bound, MAX of such a field held the whole object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn records_longer_than_the_bound_fail_in_bounded_memory() {
    let env = common::env().await;
    let bucket = Bucket::create(&env, "scan-long").await;
    const BOUND: usize = 16 * MIB;
    let mut unclosed = b"a,b\n1,\"".to_vec();
    unclosed.resize(unclosed.len() + 64 * MIB, b'x');
    unclosed.extend_from_slice(b"\n2,3\n");
    bucket.put("unclosed.csv", unclosed).await;
    let mut line = b"{\"a\": \"".to_vec();
    line.resize(line.len() + 48 * MIB, b'y');
    line.extend_from_slice(b"\"}\n{\"a\": \"z\"}\n");
    bucket.put("long.jsonl", line).await;
    let cases = [
        (
            "unclosed.csv",
            "csv",
            "SELECT COUNT(*) FROM S3Object",
            "at byte 4",
        ),
        (
            "unclosed.csv",
            "csv",
            "SELECT MAX(s.b) FROM S3Object s",
            "at byte 4",
        ),
        (
            "unclosed.csv",
            "csv",
            "SELECT s.b FROM S3Object s",
            "at byte 4",
        ),
        (
            "long.jsonl",
            "jsonl",
            "SELECT MAX(s.a) FROM S3Object s",
            "at byte 0",
        ),
    ];
    for (key, format, sql, offset) in cases {
        let object = format!("s3://{}/{key}", bucket.name);
        let extra = [
            "--format",
            format,
            "--max-record-size",
            "16Mi",
            "--chunk-size",
            "32Mi",
            "--parallelism",
            "2",
        ];
        let (code, out, err, peak) =
            common::cli::run("scan", args(&object, &bucket.endpoint, sql, &extra)).await;
        assert_ne!(code, 0, "{sql}: {out}");
        assert!(
            err.contains("a record longer than maxRecordSize (16777216 bytes) starts here")
                && err.contains(offset)
                && err.contains("(BadData)"),
            "{sql}: {err}"
        );
        eprintln!("{key} {sql}: peak RSS {} MiB", peak >> 20);
        // Two chunks at once, each holding at most one record of the bound, plus the process.
        assert!(
            (peak as usize) < 2 * BOUND + 96 * MIB,
            "{sql}: peak RSS {} MiB",
            peak >> 20
        );
    }
}

/// Ctrl-C (SIGINT) while chunks upload their rows: the scan stops with a clear error, every chunk
/// aborts its multipart upload before the process exits, and no upload is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn interrupted_scans_leave_no_upload() {
    let env = common::env().await;
    let bucket = Bucket::create(&env, "scan-cli-stop").await;
    let mut data = b"n,text\n".to_vec();
    for n in 0.. {
        if data.len() >= 96 * MIB {
            break;
        }
        data.extend_from_slice(format!("{n},{}\n", "y".repeat(100)).as_bytes());
    }
    bucket.put("rows.csv", data).await;
    let child = common::cli::spawn(
        "scan",
        &args(
            &format!("s3://{}/rows.csv", bucket.name),
            &bucket.endpoint,
            "SELECT * FROM S3Object",
            &[
                "--chunk-size",
                "32Mi",
                "--output",
                &format!("s3://{}/out/", bucket.name),
            ],
        ),
    );
    let mut recorded = false;
    for _ in 0..1000 {
        if !bucket.uploads().await.is_empty() {
            for index in 0..3 {
                let record = format!("out/chunks/{index:05}.upload.json");
                recorded |= bucket.try_get(&record).await.is_ok();
            }
        }
        if recorded {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(recorded, "no chunk was seen uploading its rows");
    common::cli::interrupt(child).await;
    bucket.assert_no_uploads_left().await;
}

/// A row query without `--output` prints its rows on stdout as CSV with a header, in object order
/// and SELECT order, at any chunk size: quoted fields keep their bytes (CR and LF included),
/// LIMIT cuts exactly, and the summary goes to stderr. Aggregates come in SELECT order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn row_queries_print_their_rows_on_stdout() {
    let env = common::env().await;
    let bucket = Bucket::create(&env, "scan-cli-rows").await;
    let mut data = b"id,text,amount\r\n".to_vec();
    // (field in the object, the same field in the output): quoted where CSV needs it.
    let texts = [
        ("plain", "plain"),
        ("\"Once upon \r\na time\"", "\"Once upon \r\na time\""),
        ("\"a, \"\"b\"\"\"", "\"a, \"\"b\"\"\""),
        ("\"x\ry\"", "\"x\ry\""),
        ("\"plain\"", "plain"),
        ("", ""),
    ];
    let mut want = vec!["amount,id,text".to_string()];
    for i in 0..300 {
        let (text, written) = texts[i % texts.len()];
        data.extend_from_slice(format!("{i},{text},{}\r\n", i * 2).as_bytes());
        want.push(format!("{},{i},{written}", i * 2));
    }
    bucket.put("t.csv", data).await;
    let object = format!("s3://{}/t.csv", bucket.name);
    let sql = "SELECT amount, id, text FROM S3Object";
    for size in ["1", "37", "1Ki", "64Mi"] {
        let (code, out, err, _) = common::cli::run(
            "scan",
            args(&object, &bucket.endpoint, sql, &["--chunk-size", size]),
        )
        .await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, want.join("\n") + "\n", "chunk size {size}");
        assert!(err.contains("300 rows"), "{err}");
    }
    let limited = "SELECT amount, id, text FROM S3Object WHERE id >= 10 LIMIT 7";
    let (code, out, err, _) = common::cli::run(
        "scan",
        args(&object, &bucket.endpoint, limited, &["--chunk-size", "50"]),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let mut first = vec![want[0].clone()];
    first.extend(want[11..18].iter().cloned());
    assert_eq!(out, first.join("\n") + "\n");
    // Aggregates, named or not, in SELECT order.
    let sql = "SELECT SUM(amount) AS total, COUNT(*) AS n, MIN(id) FROM S3Object";
    let (code, out, err, _) =
        common::cli::run("scan", args(&object, &bucket.endpoint, sql, &[])).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "total\t89700\nn\t300\nMIN(id)\t0\n");
}

/// NaN and the infinities in CSV and JSON Lines, in the spellings writers use, follow the SQL
/// engines: NaN equals NaN and sorts above every number, MIN, MAX and SUM see them, a WHERE
/// comparison keeps NaN for `>`; results print them as PostgreSQL does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn nan_and_infinities_in_text_follow_sql_order() {
    let env = common::env().await;
    let bucket = Bucket::create(&env, "scan-cli-nan").await;
    let values = ["1.5", "NaN", "-inf", "7", "Infinity", "nan", "-2", ""];
    let csv: String = std::iter::once("x\n".to_string())
        .chain(values.iter().map(|v| format!("{v}\n")))
        .collect();
    bucket.put("n.csv", csv.into_bytes()).await;
    let jsonl: String = values
        .iter()
        .map(|v| match v.parse::<f64>() {
            Ok(f) if f.is_finite() => format!("{{\"x\":{v}}}\n"),
            _ if v.is_empty() => "{\"x\":null}\n".to_string(),
            _ => format!("{{\"x\":\"{v}\"}}\n"),
        })
        .collect();
    bucket.put("n.jsonl", jsonl.into_bytes()).await;
    let sql = "SELECT COUNT(x) AS c, MIN(x) AS lo, MAX(x) AS hi, SUM(CAST(x AS FLOAT)) AS total \
               FROM S3Object";
    let above = "SELECT COUNT(*) AS n FROM S3Object WHERE CAST(x AS FLOAT) > 100";
    for key in ["n.csv", "n.jsonl"] {
        let object = format!("s3://{}/{key}", bucket.name);
        for size in ["1", "64Mi"] {
            let extra = ["--chunk-size", size, "--json"];
            let (code, out, err, _) =
                common::cli::run("scan", args(&object, &bucket.endpoint, sql, &extra)).await;
            assert_eq!(code, 0, "{key}: {err}");
            let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(
                summary["result"],
                serde_json::json!({"c": 7, "lo": "-Infinity", "hi": "NaN", "total": "NaN"}),
                "{key} at {size}"
            );
            let (code, out, err, _) =
                common::cli::run("scan", args(&object, &bucket.endpoint, above, &extra)).await;
            assert_eq!(code, 0, "{key}: {err}");
            let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
            // Infinity, NaN and nan are above 100.
            assert_eq!(summary["result"]["n"], 3, "{key} at {size}");
        }
    }
}
