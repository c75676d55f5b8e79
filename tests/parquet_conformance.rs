//! The Parquet format's public conformance files (apache/parquet-testing's `data/` and
//! `bad_data/`, in tests/parquet-testing with their licence) and the same kinds of files written
//! by DuckDB and Polars, each scanned with `s3flow scan` as a user runs it against MinIO and held
//! to pyarrow's reading of it (tests/parquet_conformance/oracle.py):
//!
//! - `COUNT(*)` is pyarrow's row count, at any chunk size;
//! - for every top-level column of a primitive type, COUNT, MIN and MAX are pyarrow's, with NaN
//!   above every number;
//! - `SELECT *` written as JSON Lines is pyarrow's rows, structs, lists and maps nested;
//! - a file pyarrow refuses is refused cleanly (a non-zero exit and a reason, never a panic or a
//!   signal), or answered from its footer when the footer is sound (its row count).
//!
//! The test prints one line per file with its outcome and reports every difference at its end.

mod common;

use std::path::{Path, PathBuf};

use common::minio::Bucket;
use serde_json::{Value as Json, json};

const ORACLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/parquet_conformance/oracle.py"
);
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/parquet-testing");

/// How one scan of a file ended.
enum Scan {
    /// Exit 0: the CLI's JSON summary.
    Answered(Json),
    /// A clean refusal: the CLI's message on stderr.
    Refused(String),
}

/// Runs `s3flow scan` on `key`; a crash or a message without a reason is a difference.
async fn scan(bucket: &Bucket, key: &str, args: &[&str], problems: &mut Vec<String>) -> Scan {
    let mut all = vec![
        format!("s3://{}/{key}", bucket.name),
        "--endpoint".into(),
        bucket.endpoint.clone(),
        "--format".into(),
        "parquet".into(),
        "--json".into(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let (code, out, err, _) = common::cli::run("scan", all).await;
    match code {
        0 => match serde_json::from_str(&out) {
            Ok(summary) => Scan::Answered(summary),
            Err(e) => {
                problems.push(format!(
                    "{key}: {args:?}: the summary is not JSON ({e}): {out}"
                ));
                Scan::Refused(String::new())
            }
        },
        // A refusal names its reason: `error: <message> (<Reason>)`.
        1 if err.starts_with("error: ") && err.trim_end().ends_with(')') => {
            if err.contains("panicked") {
                problems.push(format!("{key}: {args:?}: a panic, even if caught: {err}"));
            }
            Scan::Refused(err.trim().to_string())
        }
        _ => {
            problems.push(format!(
                "{key}: {args:?}: exit {code} without a clean refusal: {err}"
            ));
            Scan::Refused(err)
        }
    }
}

/// A column's name as a quoted SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The rows of the JSON Lines parts under `prefix`, in part order.
async fn parts_rows(bucket: &Bucket, prefix: &str) -> Vec<Json> {
    let mut rows = Vec::new();
    for key in bucket.keys(prefix).await {
        if key.contains("/part-") {
            let text = String::from_utf8(bucket.get(&key).await).unwrap();
            rows.extend(text.lines().map(|line| serde_json::from_str(line).unwrap()));
        }
    }
    rows
}

/// Files pyarrow reads and s3flow refuses, with the refusal: arrow-rs, which s3flow reads
/// Parquet with, refuses them (the README's known limits).
const KNOWN_REFUSALS: &[(&str, &str, &str)] = &[
    // Its page headers state the wrong page size: Polars refuses it too; pyarrow and DuckDB read
    // past the mismatch. (Its row count comes from the footer: a query must decode pages.)
    (
        "data/nation.dict-malformed.parquet",
        "SELECT MAX(name) FROM S3Object",
        "EOF: Invalid page header (InvalidObject)",
    ),
];

/// What pyarrow cannot give (its INT96 microseconds past 2^63): anything matches it.
const UNKNOWN: &str = "<beyond pyarrow>";

/// Whether the engine's `got` is pyarrow's `want`, `want` holding [`UNKNOWN`] where pyarrow has
/// no answer.
fn matches(got: &Json, want: &Json) -> bool {
    match (got, want) {
        (_, Json::String(text)) if text == UNKNOWN => true,
        (Json::Object(g), Json::Object(w)) => {
            g.len() == w.len()
                && w.iter()
                    .all(|(k, w)| g.get(k).is_some_and(|g| matches(g, w)))
        }
        (Json::Array(g), Json::Array(w)) => {
            g.len() == w.len() && g.iter().zip(w).all(|(g, w)| matches(g, w))
        }
        _ => got == want,
    }
}

/// What happened to one file, for the table the test prints.
fn outcome(expected: &Json, answered: bool) -> &'static str {
    match (expected["readable"].as_bool(), answered) {
        (Some(true), _) => "right",
        (_, true) => "answered from the footer",
        (_, false) => "refused with reason",
    }
}

/// Checks one file against pyarrow; returns its outcome.
async fn check(bucket: &Bucket, path: &Path, key: &str, problems: &mut Vec<String>) -> String {
    bucket.put(key, std::fs::read(path).unwrap()).await;
    let expected: Json = serde_json::from_str(&common::run(
        "python3",
        &[ORACLE, "expect", path.to_str().unwrap()],
        b"",
    ))
    .unwrap();
    let count_all = "SELECT COUNT(*) AS n FROM S3Object";
    if let Some((_, sql, refusal)) = KNOWN_REFUSALS.iter().find(|(file, ..)| *file == key) {
        return match scan(bucket, key, &["--sql", sql], problems).await {
            Scan::Refused(why) if why.ends_with(refusal) => {
                "refused with reason (a known limit: arrow-rs refuses it)".to_string()
            }
            Scan::Refused(why) => {
                problems.push(format!("{key}: refused, but not as known: {why}"));
                String::new()
            }
            Scan::Answered(_) => {
                problems.push(format!("{key}: now read: take it off KNOWN_REFUSALS"));
                String::new()
            }
        };
    }
    if expected["readable"] != json!(true) {
        // pyarrow refuses it: a clean refusal, or the footer's row count.
        let mut answered = false;
        for (sql, chunk_size) in [(count_all, "64Mi"), ("SELECT * FROM S3Object", "1")] {
            if let Scan::Answered(summary) = scan(
                bucket,
                key,
                &["--sql", sql, "--chunk-size", chunk_size],
                problems,
            )
            .await
            {
                answered = true;
                let rows = &expected["footerRows"];
                if sql == count_all && !rows.is_null() && summary["result"]["n"] != *rows {
                    problems.push(format!(
                        "{key}: COUNT(*) {} where the footer says {rows}",
                        summary["result"]["n"]
                    ));
                }
            }
        }
        let refused = if answered {
            String::new()
        } else {
            format!(" (pyarrow: {})", expected["reason"].as_str().unwrap_or(""))
        };
        return format!("{}{refused}", outcome(&expected, answered));
    }
    for chunk_size in ["64Mi", "1"] {
        match scan(
            bucket,
            key,
            &["--sql", count_all, "--chunk-size", chunk_size],
            problems,
        )
        .await
        {
            Scan::Answered(summary) if summary["result"]["n"] == expected["rows"] => {}
            Scan::Answered(summary) => problems.push(format!(
                "{key}: COUNT(*) at chunk size {chunk_size} is {}, pyarrow {}",
                summary["result"]["n"], expected["rows"]
            )),
            Scan::Refused(why) => problems.push(format!("{key}: COUNT(*) refused: {why}")),
        }
    }
    let columns = expected["columns"].as_array().unwrap();
    if !columns.is_empty() {
        let items: Vec<String> = columns
            .iter()
            .enumerate()
            .flat_map(|(i, c)| {
                let name = quoted(c["name"].as_str().unwrap());
                ["count", "min", "max"].map(|f| format!("{}({name}) AS {f}_{i}", f.to_uppercase()))
            })
            .collect();
        let sql = format!("SELECT {} FROM S3Object", items.join(", "));
        for chunk_size in ["64Mi", "1"] {
            let args = ["--sql", sql.as_str(), "--chunk-size", chunk_size];
            let summary = match scan(bucket, key, &args, problems).await {
                Scan::Answered(summary) => summary,
                Scan::Refused(why) => {
                    problems.push(format!("{key}: COUNT/MIN/MAX refused: {why}"));
                    continue;
                }
            };
            for (i, column) in columns.iter().enumerate() {
                for f in ["count", "min", "max"] {
                    let got = &summary["result"][format!("{f}_{i}")];
                    if !matches(got, &column[f]) {
                        problems.push(format!(
                            "{key}: {}({}) is {got} at chunk size {chunk_size}, pyarrow {} ({})",
                            f.to_uppercase(),
                            column["name"],
                            column[f],
                            column["type"]
                        ));
                    }
                }
            }
        }
    }
    let prefix = format!("rows-{key}/");
    let output = format!("s3://{}/{prefix}", bucket.name);
    let args = [
        "--sql",
        "SELECT * FROM S3Object",
        "--chunk-size",
        "1",
        "--output",
        output.as_str(),
        "--output-format",
        "jsonl",
    ];
    match scan(bucket, key, &args, problems).await {
        Scan::Answered(_) => {
            let rows = parts_rows(bucket, &prefix).await;
            let want = expected["records"].as_array().unwrap();
            if rows.len() != want.len() {
                problems.push(format!(
                    "{key}: SELECT * wrote {} rows, pyarrow has {}",
                    rows.len(),
                    want.len()
                ));
            } else if let Some((at, (got, want))) = rows
                .iter()
                .zip(want)
                .enumerate()
                .find(|(_, (got, want))| !matches(got, want))
            {
                problems.push(format!("{key}: SELECT * row {at} is {got}, pyarrow {want}"));
            }
        }
        Scan::Refused(why) => problems.push(format!("{key}: SELECT * refused: {why}")),
    }
    "right".to_string()
}

#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn every_conformance_file_is_read_as_pyarrow_reads_it() {
    let env = common::env().await;
    let bucket = Bucket::create(&env, "conformance").await;
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    for dir in ["data", "bad_data"] {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(Path::new(CORPUS).join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect();
        entries.sort();
        for path in entries {
            let key = format!("{dir}/{}", path.file_name().unwrap().to_string_lossy());
            files.push((path, key));
        }
    }
    assert!(files.len() > 70, "the corpus is in tests/parquet-testing");
    let mut problems = Vec::new();
    let mut table = Vec::new();
    for (path, key) in &files {
        let before = problems.len();
        let outcome = check(&bucket, path, key, &mut problems).await;
        let mark = if problems.len() > before {
            "WRONG"
        } else {
            "ok"
        };
        table.push(format!("| {key} | {outcome} | {mark} |"));
    }
    println!(
        "| file | outcome | check |\n|---|---|---|\n{}",
        table.join("\n")
    );
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn files_duckdb_and_polars_write_are_read_as_pyarrow_reads_them() {
    let env = common::env().await;
    let bucket = Bucket::create(&env, "writers").await;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("parquet_conformance-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let written: Vec<PathBuf> = serde_json::from_str(&common::run(
        "python3",
        &[ORACLE, "write", dir.to_str().unwrap()],
        b"",
    ))
    .unwrap();
    assert_eq!(written.len(), 6);
    let mut problems = Vec::new();
    for path in &written {
        let key = path.file_name().unwrap().to_string_lossy().to_string();
        check(&bucket, path, &key, &mut problems).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
