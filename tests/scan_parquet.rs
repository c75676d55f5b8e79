//! Parquet in `s3flow scan`, run as a user runs it against MinIO, on files pyarrow writes
//! (tests/scan_parquet/gen.py): every codec, statistics or none, a page index or none, dictionary
//! and plain encodings, data pages v1 and v2, every scalar type with nulls, a two-level struct,
//! uneven row groups, one row group and a thousand. Every answer is pyarrow's, computed by gen.py
//! from its own reading of the same file, at chunk sizes from one byte (one row group per chunk)
//! to more than the file. Statistics skip row groups and answer aggregates without changing an
//! answer; row output holds pyarrow's rows; broken objects, wrong formats and bad queries fail
//! with the reason a user sees and leave no upload behind; a file replaced after planning fails
//! the scan as ObjectChanged.
//!
//! Each test collects every difference it finds and reports them together at its end.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use common::minio::Bucket;
use s3flow::scan::local::{self, Counters};
use s3flow::scan::{self, InputFormat, Output, OutputFormat, PlanRequest};
use s3flow::shutdown::Stop;
use serde::Deserialize;
use serde_json::{Value as Json, json};

/// The pyarrow side: writes the files and answers the queries.
const GEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scan_parquet/gen.py");

/// Longest one scan may take (the longest, 1,000 chunks of one row group, takes seconds).
const SCAN_DEADLINE: Duration = Duration::from_secs(120);

/// Relative tolerance of float SUM and AVG (the engine sums exactly; pyarrow's order differs).
const SUM_TOLERANCE: f64 = 1e-12;

// ---------------------------------------------------------------------------------------------
// The pyarrow side

/// One file gen.py wrote, as it describes it.
#[derive(Clone, Debug, Deserialize)]
struct File {
    path: PathBuf,
    rows: u64,
    row_groups: u32,
    /// Byte range `[start, end)` of each row group's column chunks, in file order.
    spans: Vec<(u64, u64)>,
    /// The columns a query may name, struct fields by dotted path.
    columns: Vec<String>,
    /// Compressed bytes of each top-level column (all row groups).
    column_bytes: BTreeMap<String, u64>,
    /// Offset of the first data page of the first column.
    first_page: u64,
}

impl File {
    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }

    /// Chunks at `chunk_size` by the midpoint rule: a row group belongs to the window holding the
    /// midpoint of its bytes, and windows without one are no chunk.
    fn chunks_at(&self, chunk_size: u64) -> u64 {
        let mut windows: Vec<u64> = self
            .spans
            .iter()
            .map(|(start, end)| (start + (end - start) / 2) / chunk_size)
            .collect();
        windows.dedup();
        windows.len() as u64
    }
}

/// The files gen.py writes, written once per test process.
fn files() -> &'static BTreeMap<String, File> {
    static FILES: OnceLock<BTreeMap<String, File>> = OnceLock::new();
    FILES.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        // Directories of earlier runs (an hour old) go; a concurrent run keeps its own.
        for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(3600));
            if old
                && entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("scan_parquet-")
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = root.join(format!("scan_parquet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let out = common::run("python3", &[GEN, "write", dir.to_str().unwrap()], b"");
        serde_json::from_str(&out).expect("gen.py write prints its files")
    })
}

fn file(name: &str) -> &'static File {
    files()
        .get(name)
        .unwrap_or_else(|| panic!("gen.py wrote no {name}"))
}

/// pyarrow's answers to `queries` on `file` (see gen.py `expect`), one per query.
fn pyarrow(file: &File, queries: &[Json]) -> Vec<Json> {
    let request = json!({"file": file.path, "queries": queries});
    let out = common::run("python3", &[GEN, "expect"], request.to_string().as_bytes());
    let answers = parse_json(&out);
    let answers = answers.as_array().expect("gen.py answers a list").clone();
    assert_eq!(answers.len(), queries.len());
    answers
}

/// A JSON row with nested objects (structs) flattened to dotted paths, as pyarrow's answers name
/// struct fields.
fn flattened(row: Json) -> serde_json::Map<String, Json> {
    fn add(prefix: Option<&str>, value: Json, out: &mut serde_json::Map<String, Json>) {
        match (prefix, value) {
            (prefix, Json::Object(fields)) if prefix.is_none() || !fields.is_empty() => {
                for (name, value) in fields {
                    let path = prefix.map_or(name.clone(), |p| format!("{p}.{name}"));
                    add(Some(&path), value, out);
                }
            }
            (prefix, value) => {
                out.insert(prefix.unwrap_or_default().to_string(), value);
            }
        }
    }
    let mut out = serde_json::Map::new();
    add(None, row, &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// Queries

/// One aggregate: its select item (also its name in the result), and gen.py's kind and column.
#[derive(Clone, Debug)]
struct Agg {
    sql: String,
    kind: &'static str,
    column: Option<String>,
}

impl Agg {
    fn new(kind: &'static str, column: Option<&str>) -> Agg {
        let function = match kind {
            "count_all" | "count" => "COUNT",
            "sum" => "SUM",
            "avg" => "AVG",
            "min" => "MIN",
            "max" => "MAX",
            other => panic!("{other}"),
        };
        Agg {
            sql: format!("{function}({})", column.unwrap_or("*")),
            kind,
            column: column.map(str::to_string),
        }
    }

    /// gen.py's form of the aggregate.
    fn spec(&self) -> Json {
        json!([self.kind, self.column])
    }

    /// SUM and AVG of floats differ from pyarrow's in the last bits only.
    fn tolerance(&self) -> f64 {
        match self.kind {
            "sum" | "avg" => SUM_TOLERANCE,
            _ => 0.0,
        }
    }
}

/// `kinds` of each of `columns`, after `COUNT(*)`.
fn aggregates(kinds: &[(&'static str, &[&str])]) -> Vec<Agg> {
    let mut items = vec![Agg::new("count_all", None)];
    for (kind, columns) in kinds {
        items.extend(columns.iter().map(|c| Agg::new(kind, Some(c))));
    }
    items
}

fn select(items: &[Agg], filter: &str) -> String {
    let list: Vec<&str> = items.iter().map(|a| a.sql.as_str()).collect();
    let filter = match filter {
        "" => String::new(),
        f => format!(" WHERE {f}"),
    };
    format!("SELECT {} FROM S3Object o{filter}", list.join(", "))
}

/// The question gen.py answers for these aggregates under a filter (a pyarrow mask expression).
fn agg_query(items: &[Agg], mask: &str) -> Json {
    let mask = (!mask.is_empty()).then_some(mask);
    json!({"where": mask, "aggs": items.iter().map(Agg::spec).collect::<Vec<_>>()})
}

// Columns of the typed files (gen.py `typed_table`).
const INTEGERS: &[&str] = &[
    "id", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "dec0", "st.a.b",
];
const FLOATS: &[&str] = &["f32", "f64", "dec", "st.d"];
const TEXTS: &[&str] = &[
    "str", "bin", "flag", "day", "ts_s", "ts_ms", "ts_us", "ts_ns", "ts_ms_tz", "ts_us_tz",
    "ts_ns_tz", "st.a.c",
];
/// Top-level columns whose statistics can answer COUNT, MIN and MAX.
/// Numeric columns whose MIN and MAX statistics answer: integers and decimals. A float column's
/// greatest value may be NaN, which statistics leave out; pyarrow writes no `nan_count` to prove
/// there is none, so floats are read.
const FOOTER_NUMBERS: &[&str] = &[
    "id", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "dec", "dec0",
];
const TOP_LEVEL_SCALARS: &[&str] = &[
    "id", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "f32", "f64", "dec", "dec0", "str",
    "bin", "flag", "day", "ts_s", "ts_ms", "ts_us", "ts_ns", "ts_ms_tz", "ts_us_tz", "ts_ns_tz",
];

/// Every aggregate of every scalar column of the typed files.
fn typed_aggregates() -> Vec<Agg> {
    let numbers: Vec<&str> = INTEGERS.iter().chain(FLOATS).copied().collect();
    let all: Vec<&str> = numbers.iter().chain(TEXTS).copied().collect();
    aggregates(&[
        ("count", &all),
        ("sum", &numbers),
        ("avg", &numbers),
        ("min", &all),
        ("max", &all),
    ])
}

/// Aggregates statistics can answer without reading a row.
fn footer_aggregates() -> Vec<Agg> {
    aggregates(&[
        ("count", TOP_LEVEL_SCALARS),
        ("min", FOOTER_NUMBERS),
        ("max", FOOTER_NUMBERS),
    ])
}

/// Filters of the typed files: the WHERE clause (the table is `o`) and the same filter as a
/// pyarrow mask in gen.py's helpers (`c` a column, `text` its text as the engine reads it,
/// `struct` a struct with its parents' nulls).
const TYPED_FILTERS: &[(&str, &str)] = &[
    ("", ""),
    ("id < 600", "pc.less(c('id'), 600)"),
    (
        "o.id >= 4990 OR id = 2500",
        "OR(pc.greater_equal(c('id'), 4990), pc.equal(c('id'), 2500))",
    ),
    ("i8 = 7", "pc.equal(c('i8'), 7)"),
    (
        "i16 <> 0 AND i16 > -100",
        "AND(pc.not_equal(c('i16'), 0), pc.greater(c('i16'), -100))",
    ),
    ("i32 > 1000000000", "pc.greater(c('i32'), 1000000000)"),
    (
        "i64 <= -100000000000000",
        "pc.less_equal(c('i64'), -100000000000000)",
    ),
    (
        "i64 = 4611686018427387905",
        "pc.equal(c('i64'), 4611686018427387905)",
    ),
    (
        "u8 < 10 OR flag = true",
        "OR(pc.less(c('u8'), 10), pc.equal(c('flag'), True))",
    ),
    (
        "u32 >= 3000000000",
        "pc.greater_equal(c('u32'), 3000000000)",
    ),
    (
        "u64 BETWEEN 100000000000000 AND 500000000000000",
        "between(c('u64'), 100000000000000, 500000000000000)",
    ),
    (
        "u64 > 9007199254740993",
        "pc.greater(c('u64'), 9007199254740993)",
    ),
    (
        "f32 BETWEEN -1.5 AND 250.25",
        "between(c('f32'), -1.5, 250.25)",
    ),
    ("f64 < 0.5", "pc.less(c('f64'), 0.5)"),
    ("f64 IS NULL", "pc.is_null(c('f64'))"),
    (
        "dec > 100.25",
        "pc.greater(pc.cast(c('dec'), pa.float64()), 100.25)",
    ),
    (
        "dec0 = 42 OR dec0 < -99000000000",
        "OR(pc.equal(c('dec0'), 42), pc.less(c('dec0'), -99000000000))",
    ),
    ("str LIKE 'a%'", "like(c('str'), 'a%')"),
    (
        "str LIKE '%é%' OR o.str LIKE '_b%'",
        "OR(like(c('str'), '%é%'), like(c('str'), '_b%'))",
    ),
    (
        "str IN ('apple7', 'banana12', 'zebra0', 'with,comma3')",
        "isin(c('str'), ['apple7', 'banana12', 'zebra0', 'with,comma3'])",
    ),
    (
        "str NOT IN ('apple7', 'banana12') AND i8 > 100",
        "AND(NOT(isin(c('str'), ['apple7', 'banana12'])), pc.greater(c('i8'), 100))",
    ),
    ("str = 'zebra7'", "pc.equal(c('str'), 'zebra7')"),
    (
        "str IS NOT NULL AND st.a.c IS NULL",
        "AND(pc.is_valid(c('str')), pc.is_null(c('st.a.c')))",
    ),
    ("bin = 'key-7'", "pc.equal(text('bin'), 'key-7')"),
    (
        "flag AND NOT (i8 < 0)",
        "AND(c('flag'), NOT(pc.less(c('i8'), 0)))",
    ),
    (
        "day BETWEEN '2024-02-01' AND '2024-02-15'",
        "between(text('day'), '2024-02-01', '2024-02-15')",
    ),
    (
        "ts_s >= '2024-02-01'",
        "pc.greater_equal(text('ts_s'), '2024-02-01')",
    ),
    (
        "ts_ms < '2024-01-10T12:00:00.500'",
        "pc.less(text('ts_ms'), '2024-01-10T12:00:00.500')",
    ),
    (
        "ts_us >= '2024-01-05' AND ts_us < '2024-01-06T12'",
        "AND(pc.greater_equal(text('ts_us'), '2024-01-05'), pc.less(text('ts_us'), '2024-01-06T12'))",
    ),
    (
        "ts_us >= '2024-03-01'",
        "pc.greater_equal(text('ts_us'), '2024-03-01')",
    ),
    (
        "ts_us < '1970-01-02'",
        "pc.less(text('ts_us'), '1970-01-02')",
    ),
    (
        "ts_ns LIKE '2024-01-2%'",
        "like(text('ts_ns'), '2024-01-2%')",
    ),
    (
        "ts_ms_tz > '2024-03-01T00:00:00.000Z'",
        "pc.greater(text('ts_ms_tz'), '2024-03-01T00:00:00.000Z')",
    ),
    (
        "ts_us_tz <= '2024-01-03'",
        "pc.less_equal(text('ts_us_tz'), '2024-01-03')",
    ),
    (
        "ts_ns_tz BETWEEN '2024-02-01' AND '2024-02-02'",
        "between(text('ts_ns_tz'), '2024-02-01', '2024-02-02')",
    ),
    ("st.a.b > 0", "pc.greater(c('st.a.b'), 0)"),
    (
        "o.st.a.b BETWEEN -10 AND 500 AND o.st.d < 50",
        "AND(between(c('st.a.b'), -10, 500), pc.less(c('st.d'), 50))",
    ),
    ("st.a.b IS NULL", "pc.is_null(c('st.a.b'))"),
    ("st IS NULL", "pc.is_null(struct('st'))"),
    (
        "st.a IS NULL AND st IS NOT NULL",
        "AND(pc.is_null(struct('st.a')), pc.is_valid(struct('st')))",
    ),
    ("st.a.c LIKE '%x'", "like(c('st.a.c'), '%x')"),
    (
        "CAST(i16 AS FLOAT) / 2 > 10",
        "pc.greater(pc.divide(pc.cast(c('i16'), pa.float64()), 2.0), 10)",
    ),
    (
        "i32 + i8 * 2 > 50",
        "pc.greater(pc.add(as_int64(c('i32')), pc.multiply(as_int64(c('i8')), 2)), 50)",
    ),
    ("-i8 > 100", "pc.greater(pc.negate(as_int64(c('i8'))), 100)"),
    ("id % 7 = 3", "pc.equal(rem(c('id'), 7), 3)"),
    (
        "i16 NOT BETWEEN -10000 AND 10000",
        "NOT(between(c('i16'), -10000, 10000))",
    ),
    (
        "NOT (i8 IN (1, 2, 3)) AND u16 > 100",
        "AND(NOT(isin(c('i8'), [1, 2, 3])), pc.greater(c('u16'), 100))",
    ),
];

/// Filters on one top-level column whose statistics rule row groups out: (WHERE, gen.py's
/// `ruled_out` arguments).
fn typed_prunable() -> Vec<(&'static str, Json)> {
    vec![
        ("id < 600", json!(["id", "<", [600]])),
        ("f64 < 0.5", json!(["f64", "<", [0.5]])),
        ("str = 'zebra7'", json!(["str", "=", ["zebra7"]])),
        (
            "ts_us >= '2024-03-01'",
            json!(["ts_us", ">=", ["2024-03-01"]]),
        ),
        (
            "day BETWEEN '2024-02-01' AND '2024-02-15'",
            json!(["day", "between", ["2024-02-01", "2024-02-15"]]),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Running the CLI

fn url(bucket: &Bucket, key: &str) -> String {
    format!("s3://{}/{key}", bucket.name)
}

/// `s3flow scan s3://bucket/key --sql SQL --json EXTRA...`: the summary, or stderr when it fails
/// (checked to exit non-zero with nothing on stdout).
async fn scan(bucket: &Bucket, key: &str, sql: &str, extra: &[&str]) -> Result<Json, String> {
    let mut args: Vec<String> = [
        &url(bucket, key),
        "--endpoint",
        &bucket.endpoint,
        "--sql",
        sql,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push("--json".into());
    args.extend(extra.iter().map(|s| s.to_string()));
    let run = tokio::time::timeout(SCAN_DEADLINE, common::cli::run("scan", args));
    let (code, out, err, _) = run
        .await
        .unwrap_or_else(|_| panic!("{key}: {sql} {extra:?} still running after {SCAN_DEADLINE:?}"));
    if code != 0 {
        assert!(out.is_empty(), "{sql}: a failure printed {out}");
        return Err(err);
    }
    assert_eq!(
        out.lines().count(),
        1,
        "{sql}: one JSON object on stdout: {out}"
    );
    Ok(parse_json(&out))
}

async fn scan_ok(bucket: &Bucket, key: &str, sql: &str, extra: &[&str]) -> Json {
    scan(bucket, key, sql, extra)
        .await
        .unwrap_or_else(|e| panic!("{key}: {sql} {extra:?}: {e}"))
}

fn chunk_bytes(size: &str) -> u64 {
    s3flow::size::parse_size(size).unwrap()
}

/// Puts each named file under its name plus `.parquet`.
async fn put_files(bucket: &Bucket, names: &[&str]) {
    for name in names {
        bucket
            .put(&format!("{name}.parquet"), file(name).bytes())
            .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Comparing

/// JSON with its floats read exactly: serde_json's default float parsing may be an ulp off, so
/// float literals are tagged as strings first and read by Rust's own (correctly rounded) parser.
fn parse_json(text: &str) -> Json {
    const TAG: &str = "$float";
    let bytes = text.as_bytes();
    let mut tagged = String::with_capacity(text.len() + text.len() / 4);
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        match bytes[at] {
            b'"' => {
                at += 1;
                while bytes[at] != b'"' {
                    at += if bytes[at] == b'\\' { 2 } else { 1 };
                }
                at += 1;
                tagged.push_str(&text[start..at]);
            }
            b'-' | b'0'..=b'9' => {
                while at < bytes.len()
                    && matches!(bytes[at], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    at += 1;
                }
                match &text[start..at] {
                    float if float.contains(['.', 'e', 'E']) => {
                        tagged.push_str(&format!("{{\"{TAG}\":\"{float}\"}}"))
                    }
                    integer => tagged.push_str(integer),
                }
            }
            _ => {
                at += 1;
                tagged.push_str(&text[start..at]);
            }
        }
    }
    fn untag(value: Json) -> Json {
        match value {
            Json::Object(object) => match object.get(TAG) {
                Some(Json::String(float)) if object.len() == 1 => {
                    let float: f64 = float.parse().unwrap();
                    Json::Number(serde_json::Number::from_f64(float).unwrap())
                }
                _ => Json::Object(object.into_iter().map(|(k, v)| (k, untag(v))).collect()),
            },
            Json::Array(items) => Json::Array(items.into_iter().map(untag).collect()),
            other => other,
        }
    }
    untag(serde_json::from_str(&tagged).unwrap_or_else(|e| panic!("{e}: {text}")))
}

/// Differences found, reported together at the end of a test.
#[derive(Default)]
struct Mismatches(Vec<String>);

impl Mismatches {
    fn note(&mut self, what: String) {
        self.0.push(what);
    }

    /// `got` must be `want`: integers exactly (an integer answer must be an integer), floats
    /// within `tolerance` (relative; 0: exactly), anything else equal.
    fn value(&mut self, what: &str, got: Option<&Json>, want: &Json, tolerance: f64) {
        let matches = match got {
            Some(got) => same(got, want, tolerance),
            None => false,
        };
        if !matches {
            self.note(format!("{what}: got {got:?}, pyarrow says {want}"));
        }
    }

    fn equal<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, got: T, want: T) {
        if got != want {
            self.note(format!("{what}: got {got:?}, want {want:?}"));
        }
    }

    fn check(&mut self, what: &str, ok: bool) {
        if !ok {
            self.note(what.to_string());
        }
    }

    fn assert_none(self, test: &str) {
        assert!(
            self.0.is_empty(),
            "{test}: {} mismatches:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

fn same(got: &Json, want: &Json, tolerance: f64) -> bool {
    let integer = |n: &serde_json::Number| n.is_i64() || n.is_u64();
    match (got, want) {
        (Json::Number(g), Json::Number(w)) => match (integer(g), integer(w)) {
            (true, true) => g.as_i128() == w.as_i128(),
            // A SUM past 64 bits is a float.
            (false, true) => {
                tolerance > 0.0 && w.as_i64().is_none() && close(g.as_f64(), w.as_f64(), tolerance)
            }
            (true, false) => false,
            (false, false) => close(g.as_f64(), w.as_f64(), tolerance),
        },
        _ => got == want,
    }
}

fn close(got: Option<f64>, want: Option<f64>, tolerance: f64) -> bool {
    match (got, want) {
        (Some(g), Some(w)) if tolerance == 0.0 => g == w,
        (Some(g), Some(w)) => (g - w).abs() <= tolerance * w.abs().max(f64::MIN_POSITIVE),
        _ => false,
    }
}

/// Checks what every successful summary of `file` reports whatever the query: its fields, records,
/// row groups and their bytes (each counted once), chunks at `chunk_size`, and no rerun.
fn check_summary(m: &mut Mismatches, what: &str, summary: &Json, file: &File, chunk_size: &str) {
    let keys: BTreeSet<&str> = summary
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let want: BTreeSet<&str> = [
        "objects",
        "chunks",
        "records",
        "bytes",
        "rows",
        "reruns",
        "result",
        "rowGroups",
        "object",
        "size",
        "seconds",
    ]
    .into();
    let extra: Vec<&&str> = keys
        .difference(&want)
        .filter(|k| **k != "manifest")
        .collect();
    let missing: Vec<&&str> = want.difference(&keys).collect();
    m.check(
        &format!("{what}: summary fields: missing {missing:?}, unexpected {extra:?}"),
        missing.is_empty() && extra.is_empty(),
    );
    let groups: BTreeSet<&str> = summary["rowGroups"]
        .as_object()
        .map(|g| g.keys().map(String::as_str).collect())
        .unwrap_or_default();
    m.equal(
        &format!("{what}: rowGroups fields"),
        groups,
        ["total", "skipped", "skippedBytes", "fetchedBytes"].into(),
    );
    m.equal(
        &format!("{what}: records"),
        summary["records"].as_u64(),
        Some(file.rows),
    );
    m.equal(
        &format!("{what}: rowGroups.total"),
        summary["rowGroups"]["total"].as_u64(),
        Some(u64::from(file.row_groups)),
    );
    m.equal(
        &format!("{what}: bytes (of every row group once)"),
        summary["bytes"].as_u64(),
        Some(file.spans.iter().map(|(start, end)| end - start).sum()),
    );
    m.equal(
        &format!("{what}: chunks by the midpoint rule"),
        summary["chunks"].as_u64(),
        Some(file.chunks_at(chunk_bytes(chunk_size))),
    );
    m.equal(
        &format!("{what}: reruns"),
        summary["reruns"].as_u64(),
        Some(0),
    );
    m.equal(
        &format!("{what}: size"),
        summary["size"].as_u64(),
        Some(std::fs::metadata(&file.path).unwrap().len()),
    );
}

/// Scans `key` (a copy of `file`) with each filter and `items` in each of `runs`
/// (`CHUNK_SIZE[@PARALLELISM]`), comparing every aggregate with pyarrow's `answers` (one per
/// filter); the summaries.
async fn check_aggregates(
    m: &mut Mismatches,
    (bucket, key, file): (&Bucket, &str, &File),
    items: &[Agg],
    filters: &[(&str, &str)],
    answers: &[Json],
    runs: &[&str],
) -> Vec<Json> {
    let mut summaries = Vec::new();
    for run in runs {
        let (size, parallelism) = run.split_once('@').unwrap_or((run, "8"));
        let args = ["--chunk-size", size, "--parallelism", parallelism];
        for ((filter, _), want) in filters.iter().zip(answers) {
            let sql = select(items, filter);
            let what = format!(
                "{key} at --chunk-size {size} --parallelism {parallelism}, WHERE {filter:?}"
            );
            let summary = match scan(bucket, key, &sql, &args).await {
                Ok(summary) => summary,
                Err(err) => {
                    m.note(format!("{what}: failed: {}", err.trim()));
                    continue;
                }
            };
            check_summary(m, &what, &summary, file, size);
            m.equal(
                &format!("{what}: object"),
                summary["object"].as_str(),
                Some(url(bucket, key).as_str()),
            );
            let result = summary["result"].as_object().unwrap();
            m.equal(&format!("{what}: result keys"), result.len(), items.len());
            for (item, want) in items.iter().zip(want.as_array().unwrap()) {
                let what = format!("{what}: {}", item.sql);
                m.value(&what, result.get(&item.sql), want, item.tolerance());
            }
            summaries.push(summary);
        }
    }
    summaries
}

// ---------------------------------------------------------------------------------------------
// Row output

/// The rows of a scan's output in chunk order, read by the manifest: each part's header row must
/// be `names`; CSV fields as text, JSON Lines values as they are.
async fn read_rows(
    m: &mut Mismatches,
    what: &str,
    bucket: &Bucket,
    summary: &Json,
    prefix: &str,
    names: &[String],
) -> Vec<Vec<Json>> {
    let manifest_key = format!("{prefix}manifest.json");
    m.equal(
        &format!("{what}: manifest location"),
        summary["manifest"].as_str(),
        Some(url(bucket, &manifest_key).as_str()),
    );
    let manifest: Json = serde_json::from_slice(&bucket.get(&manifest_key).await).unwrap();
    let mut keys = BTreeSet::from([manifest_key]);
    let mut rows = Vec::new();
    let chunks = manifest["chunks"].as_array().unwrap();
    let indexes: Vec<u64> = chunks
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    let all: Vec<u64> = (0..summary["chunks"].as_u64().unwrap()).collect();
    m.equal(&format!("{what}: manifest chunks"), indexes, all);
    // Each chunk's row groups follow the previous chunk's, and together they are the file's.
    let total = summary["rowGroups"]["total"].as_u64();
    m.equal(
        &format!("{what}: manifest rowGroups"),
        manifest["rowGroups"].as_u64(),
        total,
    );
    let mut next = Some(0);
    for chunk in chunks {
        let groups = &chunk["rowGroups"];
        m.equal(
            &format!("{what}: first row group of chunk {}", chunk["index"]),
            groups["first"].as_u64(),
            next,
        );
        m.check(
            &format!(
                "{what}: chunk {} has no row group: {groups}",
                chunk["index"]
            ),
            groups["end"].as_u64() > groups["first"].as_u64(),
        );
        next = groups["end"].as_u64();
    }
    m.equal(
        &format!("{what}: end of the last chunk's row groups"),
        next,
        total,
    );
    for chunk in chunks {
        let Some(part) = chunk["part"].as_str() else {
            m.equal(
                &format!("{what}: rows of a chunk without a part"),
                chunk["rows"].as_u64(),
                Some(0),
            );
            continue;
        };
        keys.insert(part.to_string());
        let body = bucket.get(part).await;
        let part_rows: Vec<Vec<Json>> = if part.ends_with(".csv") {
            let mut reader = csv::ReaderBuilder::new()
                .flexible(true)
                .from_reader(body.as_slice());
            let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
            m.equal(&format!("{what}: {part} header"), header.as_slice(), names);
            reader
                .records()
                .map(|r| r.unwrap().iter().map(|f| Json::String(f.into())).collect())
                .collect()
        } else {
            let mut part_rows = Vec::new();
            for line in body.split(|b| *b == b'\n').filter(|line| !line.is_empty()) {
                // Structs are nested objects in JSON Lines: compared by their fields' paths.
                let object = flattened(parse_json(std::str::from_utf8(line).unwrap()));
                // A null struct is `null` itself: its fields are null.
                let value_of = |name: &str| {
                    let mut path = name;
                    loop {
                        if let Some(value) = object.get(path) {
                            return (path == name || value.is_null()).then(|| value.clone());
                        }
                        path = path.rsplit_once('.')?.0;
                    }
                };
                let keys: BTreeSet<&String> = object.keys().collect();
                let named: BTreeSet<&String> = object
                    .keys()
                    .filter(|k| {
                        names
                            .iter()
                            .any(|n| n == *k || n.starts_with(&format!("{k}.")))
                    })
                    .collect();
                m.equal(&format!("{what}: {part} row keys"), keys, named);
                let missing = Json::String("<no such key>".into());
                part_rows.push(
                    names
                        .iter()
                        .map(|n| value_of(n).unwrap_or_else(|| missing.clone()))
                        .collect(),
                );
            }
            part_rows
        };
        m.equal(
            &format!("{what}: rows of {part} in the manifest"),
            chunk["rows"].as_u64(),
            Some(part_rows.len() as u64),
        );
        rows.extend(part_rows);
    }
    let listed = bucket.keys(prefix).await;
    m.equal(&format!("{what}: objects under the prefix"), listed, keys);
    rows
}

/// A CSV field against pyarrow's value: NULL is an empty field, floats compare as numbers.
fn csv_field_matches(field: &str, want: &Json) -> bool {
    match want {
        Json::Null => field.is_empty(),
        Json::Bool(b) => field == b.to_string(),
        Json::Number(n) if n.is_f64() => field.parse::<f64>().ok() == n.as_f64(),
        Json::Number(n) => field == n.to_string(),
        Json::String(s) => field == s,
        other => panic!("pyarrow value {other}"),
    }
}

/// Compares output rows with pyarrow's, skipping the columns in `skip` (lists and maps).
fn compare_rows(
    m: &mut Mismatches,
    what: &str,
    got: &[Vec<Json>],
    want: &Json,
    csv: bool,
    skip: &[&str],
) {
    let names: Vec<&str> = want["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let want = want["rows"].as_array().unwrap();
    m.equal(&format!("{what}: row count"), got.len(), want.len());
    let mut shown = 0;
    for (index, (got, want)) in got.iter().zip(want).enumerate() {
        if got.len() != names.len() && shown < 20 {
            shown += 1;
            m.note(format!(
                "{what}: row {index} has {} fields for {} columns: {got:?}",
                got.len(),
                names.len()
            ));
        }
        for ((name, got), want) in names.iter().zip(got).zip(want.as_array().unwrap()) {
            if skip.contains(name) {
                continue;
            }
            let ok = match (csv, got) {
                (true, Json::String(field)) => csv_field_matches(field, want),
                _ => same(got, want, 0.0),
            };
            if !ok && shown < 20 {
                shown += 1;
                m.note(format!(
                    "{what}: row {index}, {name}: got {got}, pyarrow says {want}"
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

/// The comparisons' own JSON reading keeps floats exact, strings (with escapes) intact.
#[test]
#[ignore = "needs tests/cluster/up.sh"]
fn floats_are_read_exactly() {
    let parsed = parse_json(
        r#"{"a": [97.08322187000155, 1e-300, -2.5e-310, 5.0, -7, 18446744073709551615], "b\"": "x\"1.5", "c": null}"#,
    );
    let floats: Vec<f64> = parsed["a"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(floats[..4], [97.08322187000155, 1e-300, -2.5e-310, 5.0]);
    assert!(parsed["a"][3].is_f64() && parsed["a"][4].is_i64() && parsed["a"][5].is_u64());
    assert_eq!(parsed["b\""], "x\"1.5");
    assert_eq!(parsed["c"], Json::Null);
}

/// Every aggregate (COUNT(*), COUNT, SUM, AVG, MIN, MAX) of every scalar type (int8..int64,
/// uint8..uint64, float, double, DECIMAL with and without scale, string, binary, bool, date,
/// timestamps in s/ms/us/ns with and without a time zone, two-level struct fields), under every
/// filter form (comparisons, AND/OR/NOT, BETWEEN, IN, IS NULL, LIKE, CAST, arithmetic, struct
/// paths with and without the table alias, text comparisons of dates and timestamps), equals
/// pyarrow's answer at chunk sizes of one byte (one row group per chunk), between row groups and
/// more than the file, for a file of seven uneven row groups and one of a single row group. The
/// chunks are those of the midpoint rule, and statistics skip exactly the row groups pyarrow's
/// reading of them rules out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn aggregates_of_every_type_match_pyarrow_at_every_chunk_size() {
    let bucket = Bucket::create(&common::env().await, "pq-types").await;
    let items = typed_aggregates();
    let main = file("typed-snappy-v1");
    let queries: Vec<Json> = TYPED_FILTERS
        .iter()
        .map(|(_, mask)| agg_query(&items, mask))
        .collect();
    let answers = pyarrow(main, &queries);
    let mut m = Mismatches::default();
    // A filter that keeps nothing and one that keeps everything are no test of the filter.
    for ((filter, _), answer) in TYPED_FILTERS.iter().zip(&answers) {
        let count = answer[0].as_u64().unwrap();
        assert!(
            count > 0 && (filter.is_empty() || count < main.rows),
            "WHERE {filter} keeps {count} rows"
        );
    }
    put_files(&bucket, &["typed-snappy-v1", "typed-one-group"]).await;
    for (name, sizes) in [
        ("typed-snappy-v1", &["1", "120000@3", "300Ki@1", "1Gi"][..]),
        ("typed-one-group", &["1@1"][..]),
    ] {
        let key = format!("{name}.parquet");
        let target = (&bucket, key.as_str(), file(name));
        check_aggregates(&mut m, target, &items, TYPED_FILTERS, &answers, sizes).await;
    }

    // Statistics skip exactly the row groups they rule out, at any chunk size.
    let prunable = typed_prunable();
    let ruled: Vec<Json> = prunable
        .iter()
        .map(|(_, a)| json!({"ruled_out": a}))
        .collect();
    let ruled = pyarrow(main, &ruled);
    for ((filter, _), want) in prunable.iter().zip(&ruled) {
        assert!(
            want["skipped"].as_u64().unwrap() > 0,
            "{filter} rules nothing out"
        );
        for size in ["1", "1Gi"] {
            let sql = format!("SELECT COUNT(*) FROM S3Object WHERE {filter}");
            let summary = scan_ok(
                &bucket,
                "typed-snappy-v1.parquet",
                &sql,
                &["--chunk-size", size],
            )
            .await;
            let what = format!("{filter} at --chunk-size {size}");
            m.equal(
                &format!("{what}: rowGroups.skipped"),
                summary["rowGroups"]["skipped"].as_u64(),
                want["skipped"].as_u64(),
            );
            m.equal(
                &format!("{what}: rowGroups.skippedBytes"),
                summary["rowGroups"]["skippedBytes"].as_u64(),
                want["skippedBytes"].as_u64(),
            );
        }
    }
    m.assert_none("aggregates_of_every_type_match_pyarrow_at_every_chunk_size");
}

/// The same table written with each codec (snappy, zstd, gzip, lz4, brotli, none), without
/// statistics, with statistics of a few columns only, with a page index, with dictionary and
/// plain encodings and data pages v1 and v2, gives pyarrow's answer to every filter at one row
/// group per chunk; aggregates that statistics can answer are answered from the footer alone
/// (nothing fetched) when every column has them, and still right when some or none have them
/// (then rows are read, and no row group is skipped without statistics).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn every_codec_encoding_and_page_version_gives_pyarrows_answers() {
    let bucket = Bucket::create(&common::env().await, "pq-codecs").await;
    let items = typed_aggregates();
    let footer = footer_aggregates();
    let variants = [
        ("typed-snappy-v1", true),
        ("typed-zstd-v2-index", true),
        ("typed-gzip-nostats", false),
        ("typed-lz4-v2", true),
        ("typed-brotli-index", true),
        ("typed-none-somestats", false),
    ];
    let names: Vec<&str> = variants.iter().map(|(n, _)| *n).collect();
    put_files(&bucket, &names).await;
    let mut queries: Vec<Json> = TYPED_FILTERS
        .iter()
        .map(|(_, mask)| agg_query(&items, mask))
        .collect();
    queries.push(agg_query(&footer, ""));
    // The variants hold the same table (gen.py checks that pyarrow reads them back equal); each
    // is still answered from pyarrow's reading of that very file.
    let mut m = Mismatches::default();
    for (name, full_statistics) in variants {
        let answers = pyarrow(file(name), &queries);
        let key = format!("{name}.parquet");
        let target = (&bucket, key.as_str(), file(name));
        if name != "typed-snappy-v1" {
            let (filters, answers) = (TYPED_FILTERS, &answers[..TYPED_FILTERS.len()]);
            let summaries =
                check_aggregates(&mut m, target, &items, filters, answers, &["1"]).await;
            if name == "typed-gzip-nostats" {
                for summary in summaries {
                    m.equal(
                        &format!("{name}: row groups skipped without statistics"),
                        summary["rowGroups"]["skipped"].as_u64(),
                        Some(0),
                    );
                }
            }
        }
        let footer_answer = std::slice::from_ref(answers.last().unwrap());
        for size in ["1", "1Gi"] {
            let summaries =
                check_aggregates(&mut m, target, &footer, &[("", "")], footer_answer, &[size])
                    .await;
            for summary in summaries {
                let fetched = summary["rowGroups"]["fetchedBytes"].as_u64().unwrap();
                m.check(
                    &format!(
                        "{name} at --chunk-size {size}: COUNT/MIN/MAX fetched {fetched} bytes; \
                         statistics of every column should answer them from the footer"
                    ),
                    fetched == 0 || !full_statistics,
                );
                m.check(
                    &format!("{name}: without statistics of every column rows must be read"),
                    fetched > 0 || full_statistics,
                );
            }
        }
    }
    m.assert_none("every_codec_encoding_and_page_version_gives_pyarrows_answers");
}

/// Row groups go to chunks by the midpoint rule at every chunk size: a file of 1,000 row groups
/// of three rows is 1,000 chunks at `--chunk-size 1`, one at 1 GiB, and what the rule gives in
/// between; every row group is read exactly once (exact COUNT, SUM, MIN, MAX of pyarrow), a
/// filter on the sorted id skips all row groups but one, and COUNT(*), MIN and MAX come from the
/// footer without fetching a byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn a_thousand_row_groups_are_read_once_at_any_chunk_size() {
    let bucket = Bucket::create(&common::env().await, "pq-many").await;
    let many = file("many-groups");
    assert_eq!(many.row_groups, 1000);
    put_files(&bucket, &["many-groups"]).await;
    let key = "many-groups.parquet";
    let items = aggregates(&[
        ("count", &["id", "v", "name"]),
        ("sum", &["id", "v"]),
        ("avg", &["v"]),
        ("min", &["id", "v", "name"]),
        ("max", &["id", "v", "name"]),
    ]);
    // `v` holds floats: statistics cannot prove it holds no NaN, so it is not in the footer's.
    let footer = aggregates(&[("min", &["id"]), ("max", &["id"])]);
    let filters = [
        ("", ""),
        ("id BETWEEN 1500 AND 1502", "between(c('id'), 1500, 1502)"),
        (
            "name LIKE 'n0%' AND v > 0",
            "AND(like(c('name'), 'n0%'), pc.greater(c('v'), 0))",
        ),
    ];
    let mut queries: Vec<Json> = filters.iter().map(|(_, f)| agg_query(&items, f)).collect();
    queries.push(agg_query(&footer, ""));
    queries.push(json!({"ruled_out": ["id", "between", [1500, 1502]]}));
    let answers = pyarrow(many, &queries);
    let mut m = Mismatches::default();
    // One byte per chunk decodes the footer once per row group: one run of it.
    let target = (&bucket, key, many);
    check_aggregates(&mut m, target, &items, &filters[..1], &answers[..1], &["1"]).await;
    check_aggregates(
        &mut m,
        target,
        &items,
        &filters,
        &answers[..3],
        &["4Ki@2", "100000", "1Gi@1"],
    )
    .await;
    for size in ["4Ki", "1Gi"] {
        let sql = select(&items, filters[1].0);
        let summary = scan_ok(&bucket, key, &sql, &["--chunk-size", size]).await;
        let ruled = &answers[4];
        m.equal(
            &format!("--chunk-size {size}: rowGroups.skipped of {}", filters[1].0),
            summary["rowGroups"]["skipped"].as_u64(),
            ruled["skipped"].as_u64(),
        );
        m.equal(
            &format!("--chunk-size {size}: skipped"),
            ruled["skipped"].as_u64(),
            Some(999),
        );
        let summaries = check_aggregates(
            &mut m,
            target,
            &footer,
            &[("", "")],
            &answers[3..4],
            &[size],
        )
        .await;
        for summary in summaries {
            m.equal(
                &format!("--chunk-size {size}: MIN/MAX from the footer: fetchedBytes"),
                summary["rowGroups"]["fetchedBytes"].as_u64(),
                Some(0),
            );
        }
    }
    m.assert_none("a_thousand_row_groups_are_read_once_at_any_chunk_size");
}

/// A file sorted by a timestamp, 20 row groups: a selective WHERE on the timestamp (or the
/// sorted value) skips exactly the row groups their statistics rule out, fetches less than a
/// third of the file, and counts exactly pyarrow's rows; COUNT(*), COUNT, MIN and MAX of a number
/// come from the footer (nothing fetched); a query reads only its columns. Written without
/// statistics, the same queries give the same answers and skip nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn statistics_skip_row_groups_without_changing_answers() {
    let bucket = Bucket::create(&common::env().await, "pq-prune").await;
    put_files(&bucket, &["sorted", "sorted-nostats"]).await;
    let items = aggregates(&[
        ("count", &["payload"]),
        ("sum", &["v"]),
        ("min", &["ts", "v", "payload"]),
        ("max", &["ts", "v", "payload"]),
    ]);
    // (WHERE, pyarrow mask, gen.py ruled_out arguments)
    let filters: &[(&str, &str, Json)] = &[
        (
            "ts >= '2024-01-01T21:40:00'",
            "pc.greater_equal(text('ts'), '2024-01-01T21:40:00')",
            json!(["ts", ">=", ["2024-01-01T21:40:00"]]),
        ),
        (
            "ts BETWEEN '2024-01-01T05:33:20' AND '2024-01-01T06:00:00'",
            "between(text('ts'), '2024-01-01T05:33:20', '2024-01-01T06:00:00')",
            json!([
                "ts",
                "between",
                ["2024-01-01T05:33:20", "2024-01-01T06:00:00"]
            ]),
        ),
        (
            "v = 120002",
            "pc.equal(c('v'), 120002)",
            json!(["v", "=", [120002]]),
        ),
        (
            "v < -500",
            "pc.less(c('v'), -500)",
            json!(["v", "<", [-500]]),
        ),
    ];
    let footer = aggregates(&[("count", &["v"]), ("min", &["v"]), ("max", &["v"])]);
    let mut m = Mismatches::default();
    for (name, statistics) in [("sorted", true), ("sorted-nostats", false)] {
        let sorted = file(name);
        let key = format!("{name}.parquet");
        let size = std::fs::metadata(&sorted.path).unwrap().len();
        assert_eq!(sorted.row_groups, 20);
        let mut queries: Vec<Json> = filters
            .iter()
            .map(|(_, f, _)| agg_query(&items, f))
            .collect();
        queries.extend(filters.iter().map(|(_, _, r)| json!({"ruled_out": r})));
        queries.push(agg_query(&footer, ""));
        queries.push(agg_query(&aggregates(&[("sum", &["v"])]), ""));
        let answers = pyarrow(sorted, &queries);
        let target = (&bucket, key.as_str(), sorted);
        for (index, (filter, _, _)) in filters.iter().enumerate() {
            let ruled = &answers[filters.len() + index];
            if statistics {
                assert!(
                    ruled["skipped"].as_u64().unwrap() >= 18,
                    "{filter}: {ruled}"
                );
            }
            let pair = [(*filter, "")];
            for chunk_size in ["1", "1Gi"] {
                let summaries = check_aggregates(
                    &mut m,
                    target,
                    &items,
                    &pair,
                    &answers[index..=index],
                    &[chunk_size],
                )
                .await;
                for summary in summaries {
                    let groups = &summary["rowGroups"];
                    let what = format!("{name} at --chunk-size {chunk_size}, WHERE {filter}");
                    let want_skipped = if statistics {
                        ruled["skipped"].as_u64()
                    } else {
                        Some(0)
                    };
                    m.equal(
                        &format!("{what}: skipped"),
                        groups["skipped"].as_u64(),
                        want_skipped,
                    );
                    let want_bytes = if statistics {
                        ruled["skippedBytes"].as_u64()
                    } else {
                        Some(0)
                    };
                    m.equal(
                        &format!("{what}: skippedBytes"),
                        groups["skippedBytes"].as_u64(),
                        want_bytes,
                    );
                    let fetched = groups["fetchedBytes"].as_u64().unwrap();
                    m.check(&format!("{what}: fetched nothing"), fetched > 0);
                    m.check(
                        &format!("{what}: fetched {fetched} of {size} bytes"),
                        !statistics || fetched < size / 3,
                    );
                }
            }
        }
        // Footer answers.
        let footer_answer = &answers[2 * filters.len()..][..1];
        for chunk_size in ["1", "1Gi"] {
            let summaries = check_aggregates(
                &mut m,
                target,
                &footer,
                &[("", "")],
                footer_answer,
                &[chunk_size],
            )
            .await;
            for summary in summaries {
                let fetched = summary["rowGroups"]["fetchedBytes"].as_u64().unwrap();
                m.check(
                    &format!(
                        "{name} at --chunk-size {chunk_size}: COUNT/MIN/MAX fetched {fetched} bytes"
                    ),
                    (fetched == 0) == statistics,
                );
            }
            let count = scan_ok(
                &bucket,
                &key,
                "SELECT COUNT(*) FROM S3Object",
                &["--chunk-size", chunk_size],
            )
            .await;
            m.equal(
                &format!("{name}: COUNT(*)"),
                count["result"]["COUNT(*)"].as_u64(),
                Some(sorted.rows),
            );
            m.equal(
                &format!("{name}: COUNT(*) from the footer: fetchedBytes"),
                count["rowGroups"]["fetchedBytes"].as_u64(),
                Some(0),
            );
        }
        // Only the columns a query names are fetched.
        let sum = scan_ok(&bucket, &key, "SELECT SUM(v) FROM S3Object", &[]).await;
        m.value(
            &format!("{name}: SUM(v)"),
            sum["result"].get("SUM(v)"),
            &answers.last().unwrap()[1],
            0.0,
        );
        m.equal(
            &format!("{name}: SUM(v) fetches column v only"),
            sum["rowGroups"]["fetchedBytes"].as_u64(),
            Some(sorted.column_bytes["v"]),
        );
    }
    m.assert_none("statistics_skip_row_groups_without_changing_answers");
}

/// Row output: selected columns (struct fields among them) of the matching rows, written as CSV
/// (the default for Parquet) and as JSON Lines, read back in chunk order by the manifest, are
/// pyarrow's filtered rows in file order, at one row group per chunk and at one chunk; LIMIT
/// keeps exactly the first rows (with and without output); SELECT * writes every column with
/// struct fields flattened to dotted names; no multipart upload is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn row_output_holds_pyarrows_rows_in_file_order() {
    let bucket = Bucket::create(&common::env().await, "pq-rows").await;
    put_files(&bucket, &["typed-snappy-v1", "typed-zstd-v2-index"]).await;
    let columns = [
        "id", "i64", "u64", "f32", "f64", "dec", "dec0", "str", "bin", "flag", "day", "ts_s",
        "ts_ns", "ts_us_tz", "st.a.b", "st.a.c", "st.d",
    ];
    let names: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    let filter = "st.d < 30 OR str LIKE '%,%' OR str LIKE '%\"%' OR str LIKE '%\n%'";
    let mask = "OR(OR(pc.less(c('st.d'), 30), like(c('str'), '%,%')), \
                OR(like(c('str'), '%\"%'), like(c('str'), '%\\n%')))";
    let star_filter = "id % 50 = 0";
    let star_mask = "pc.equal(rem(c('id'), 50), 0)";
    let main = file("typed-snappy-v1");
    let answers = pyarrow(
        main,
        &[
            json!({"where": mask, "rows": columns}),
            json!({"where": mask, "rows": columns, "limit": 25}),
            json!({"where": star_mask, "rows": null}),
            json!({"where": mask, "aggs": [["count_all", null]]}),
        ],
    );
    let matching = answers[3][0].as_u64().unwrap();
    assert!(
        matching > 25 && matching < main.rows,
        "{matching} rows match"
    );
    let sql = format!(
        "SELECT {} FROM S3Object o WHERE {filter}",
        columns.join(", ")
    );
    let mut m = Mismatches::default();
    for name in ["typed-snappy-v1", "typed-zstd-v2-index"] {
        let key = format!("{name}.parquet");
        for size in ["1", "1Gi"] {
            for (format, extra) in [
                ("csv", &[][..]),
                ("jsonl", &["--output-format", "jsonl"][..]),
            ] {
                for (limit, want) in [(None, &answers[0]), (Some(25), &answers[1])] {
                    let what = format!("{name} at --chunk-size {size}, {format}, LIMIT {limit:?}");
                    let prefix = format!("out/{name}-{size}-{format}-{limit:?}/");
                    let query = match limit {
                        Some(n) => format!("{sql} LIMIT {n}"),
                        None => sql.clone(),
                    };
                    let output = url(&bucket, &prefix);
                    let mut args = vec!["--chunk-size", size, "--output", output.as_str()];
                    args.extend_from_slice(extra);
                    let summary = scan_ok(&bucket, &key, &query, &args).await;
                    let rows_want = want["rows"].as_array().unwrap().len() as u64;
                    m.equal(
                        &format!("{what}: rows"),
                        summary["rows"].as_u64(),
                        Some(rows_want),
                    );
                    m.equal(
                        &format!("{what}: result"),
                        &summary["result"],
                        &json!({"rows": rows_want}),
                    );
                    let rows = read_rows(&mut m, &what, &bucket, &summary, &prefix, &names).await;
                    compare_rows(&mut m, &what, &rows, want, format == "csv", &[]);
                }
            }
        }
        // LIMIT without output counts the first rows only.
        let summary = scan_ok(
            &bucket,
            &key,
            &format!("{sql} LIMIT 25"),
            &["--chunk-size", "1"],
        )
        .await;
        m.equal(
            &format!("{name}: LIMIT 25 without output"),
            &summary["result"],
            &json!({"rows": 25}),
        );
        m.equal(
            &format!("{name}: manifest without output"),
            &summary["manifest"],
            &Json::Null,
        );
    }
    // SELECT *: every column, struct fields flattened; lists and maps are there, not compared.
    for size in ["1", "1Gi"] {
        let prefix = format!("out/star-{size}/");
        let output = url(&bucket, &prefix);
        let sql = format!("SELECT * FROM S3Object WHERE {star_filter}");
        let summary = scan_ok(
            &bucket,
            "typed-snappy-v1.parquet",
            &sql,
            &["--chunk-size", size, "--output", &output],
        )
        .await;
        let what = format!("SELECT * at --chunk-size {size}");
        let rows = read_rows(&mut m, &what, &bucket, &summary, &prefix, &main.columns).await;
        compare_rows(&mut m, &what, &rows, &answers[2], true, &["tags", "attrs"]);
    }
    bucket.assert_no_uploads_left().await;
    m.assert_none("row_output_holds_pyarrows_rows_in_file_order");
}

/// Columns whose names are no plain identifiers (a dot in a top-level name, a space, upper
/// case) are read by their (quoted) names, and SELECT * writes each column's own values under its
/// own name, struct fields flattened, as CSV and as JSON Lines: pyarrow's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn columns_with_unusual_names_are_read_and_written_in_place() {
    let bucket = Bucket::create(&common::env().await, "pq-names").await;
    put_files(&bucket, &["names"]).await;
    let names = file("names");
    let key = "names.parquet";
    let answers = pyarrow(
        names,
        &[
            json!({"where": null, "rows": null}),
            json!({"where": "pc.greater(c('a.b'), 2)", "aggs": [
                ["count_all", null], ["sum", "a.b"], ["max", "my col"], ["min", "Upper"],
                ["sum", "st.c"],
            ]}),
        ],
    );
    let sql = r#"SELECT COUNT(*) AS n, SUM("a.b") AS s, MAX("my col") AS m, MIN(Upper) AS u,
                 SUM(st.c) AS c FROM S3Object WHERE "a.b" > 2"#;
    let mut m = Mismatches::default();
    for size in ["1", "1Gi"] {
        match scan(&bucket, key, sql, &["--chunk-size", size]).await {
            Ok(summary) => {
                for (name, want) in ["n", "s", "m", "u", "c"]
                    .iter()
                    .zip(answers[1].as_array().unwrap())
                {
                    let what = format!("--chunk-size {size}: {name}");
                    m.value(&what, summary["result"].get(*name), want, 0.0);
                }
            }
            Err(err) => m.note(format!("--chunk-size {size}: {sql}: {err}")),
        }
        for (format, extra) in [
            ("csv", &[][..]),
            ("jsonl", &["--output-format", "jsonl"][..]),
        ] {
            let prefix = format!("out/{size}-{format}/");
            let output = url(&bucket, &prefix);
            let mut args = vec!["--chunk-size", size, "--output", output.as_str()];
            args.extend_from_slice(extra);
            let summary = scan_ok(&bucket, key, "SELECT * FROM S3Object", &args).await;
            let what = format!("SELECT * at --chunk-size {size} as {format}");
            let rows = read_rows(&mut m, &what, &bucket, &summary, &prefix, &names.columns).await;
            compare_rows(&mut m, &what, &rows, &answers[0], format == "csv", &[]);
        }
    }
    bucket.assert_no_uploads_left().await;
    m.assert_none("columns_with_unusual_names_are_read_and_written_in_place");
}

/// Parquet values keep their meaning: an empty string is a value (COUNT counts it, MIN finds it,
/// `= ''` matches it) and never NULL; a string column is text even when it reads as a number
/// (MIN and MAX compare it as text, as pyarrow does, and return it as text) and compares with
/// text only (with a number it matches nothing, with or without statistics: the answer with
/// statistics is the answer without); unsigned 64-bit values are counted and compared. The
/// footer and the rows agree (COUNT of a column with and without a WHERE that keeps every row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn text_and_unsigned_values_keep_their_parquet_meaning() {
    let bucket = Bucket::create(&common::env().await, "pq-edge").await;
    put_files(&bucket, &["edge", "edge-nostats"]).await;
    // MIN, MAX and SUM of uint64 past i64 are doubles (the nearest ones): not compared here.
    let items = aggregates(&[("count", &["s", "u64"]), ("min", &["s"]), ("max", &["s"])]);
    let filters: &[(&str, &str)] = &[
        ("", ""),
        ("id >= 0", "pc.greater_equal(c('id'), 0)"),
        ("s = ''", "pc.equal(c('s'), '')"),
        ("s >= '5'", "pc.greater_equal(c('s'), '5')"),
        // Text compared with a number compares with nothing: no row, with or without statistics.
        ("s > 50", "pc.less(c('id'), 0)"),
        (
            "u64 < 100",
            "pc.less(c('u64'), pa.scalar(100, pa.uint64()))",
        ),
    ];
    let mut m = Mismatches::default();
    for name in ["edge", "edge-nostats"] {
        let edge = file(name);
        let key = format!("{name}.parquet");
        let queries: Vec<Json> = filters.iter().map(|(_, f)| agg_query(&items, f)).collect();
        let answers = pyarrow(edge, &queries);
        let target = (&bucket, key.as_str(), edge);
        check_aggregates(&mut m, target, &items, filters, &answers, &["1", "1Gi"]).await;
        // COUNT(s) from the footer and from the rows.
        for filter in ["", " WHERE id >= 0"] {
            let sql = format!("SELECT COUNT(s) FROM S3Object{filter}");
            let summary = scan_ok(&bucket, &key, &sql, &[]).await;
            m.value(
                &format!("{name}: {sql}"),
                summary["result"].get("COUNT(s)"),
                &answers[0][1],
                0.0,
            );
        }
    }
    m.assert_none("text_and_unsigned_values_keep_their_parquet_meaning");
}

/// A float column's greatest value may be NaN, which statistics leave out (pyarrow writes no
/// `nan_count`); where every data page of a row group's column is dictionary-encoded, its
/// dictionary page says whether NaN is there. MIN and MAX of such columns match pyarrow's, NaN
/// included, at any chunk size; without NaN the scan fetches only dictionary pages (a small part
/// of the columns); with NaN in one row group, a chunk of one row group decodes that row group's
/// pages only (a chunk whose footer cannot answer reads all its row groups).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn float_extremes_are_proven_by_dictionaries() {
    let bucket = Bucket::create(&common::env().await, "pq-float-dict").await;
    let names = ["floats-dict", "floats-dict-nan"];
    put_files(&bucket, &names).await;
    let floats: &[&str] = &["f64", "f32"];
    let items = aggregates(&[("min", floats), ("max", floats), ("count", floats)]);
    let mut m = Mismatches::default();
    for name in names {
        let floats_file = file(name);
        let key = format!("{name}.parquet");
        let answers = pyarrow(floats_file, &[agg_query(&items, "")]);
        let column_bytes: u64 = floats.iter().map(|c| floats_file.column_bytes[*c]).sum();
        let target = (&bucket, key.as_str(), floats_file);
        let summaries =
            check_aggregates(&mut m, target, &items, &[("", "")], &answers, &["1", "1Gi"]).await;
        for (summary, size) in summaries.iter().zip(["1", "1Gi"]) {
            let fetched = summary["rowGroups"]["fetchedBytes"].as_u64().unwrap();
            let what = format!(
                "{name} at --chunk-size {size}: MIN/MAX fetched {fetched} of {column_bytes} bytes"
            );
            match (name, size) {
                // Dictionaries of 300 values: a few KiB of each column chunk.
                ("floats-dict", _) => m.check(&what, fetched > 0 && fetched < column_bytes / 10),
                // One row group of four decoded.
                (_, "1") => m.check(
                    &what,
                    fetched > column_bytes / 8 && fetched < column_bytes / 2,
                ),
                _ => m.check(&what, fetched >= column_bytes),
            }
        }
    }
    m.assert_none("float_extremes_are_proven_by_dictionaries");
}

/// Objects that are not (whole) Parquet files fail with InvalidObject and say why: the first
/// half of a file (no PAR1 at its end), a footer length pointing outside the object, a footer
/// that does not decode, garbage named `.parquet` (what its bytes look like), CSV text named
/// `.parquet`, an empty object, a corrupt page header (found while reading rows); a Parquet file
/// read as CSV or JSON Lines says it is Parquet. Nothing is left under the output prefix when the
/// object fails planning, no manifest when it fails while rows are read, and no multipart upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn broken_or_mistyped_objects_fail_with_invalid_object() {
    let bucket = Bucket::create(&common::env().await, "pq-broken").await;
    let good = file("typed-snappy-v1");
    let bytes = good.bytes();
    let n = bytes.len();
    let footer_length = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
    bucket
        .put("truncated.parquet", bytes[..n / 2].to_vec())
        .await;
    let mut outside = bytes.clone();
    outside[n - 8..n - 4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    bucket.put("outside.parquet", outside).await;
    let mut undecodable = bytes.clone();
    undecodable[n - 8 - footer_length..n - 8].fill(0xff);
    bucket.put("footer.parquet", undecodable).await;
    let mut garbage = Vec::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..5000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        garbage.push((x >> 56) as u8 | 0x80);
    }
    bucket.put("x.parquet", garbage).await;
    bucket
        .put("text.parquet", b"id,name\n1,a\n2,b\n".to_vec())
        .await;
    bucket.put("empty.parquet", Vec::new()).await;
    let mut corrupt = bytes.clone();
    let page = good.first_page as usize;
    corrupt[page..page + 24].fill(0xff);
    bucket.put("corrupt.parquet", corrupt).await;
    bucket.put("data.csv", bytes.clone()).await;
    bucket.put("data.jsonl", bytes.clone()).await;

    let count = "SELECT COUNT(*), SUM(i32) FROM S3Object";
    let star = "SELECT * FROM S3Object";
    // (key, query, extra arguments, what stderr must say)
    let cases: &[(&str, &str, &[&str], &[&str])] = &[
        (
            "truncated.parquet",
            count,
            &[],
            &["(InvalidObject)", "PAR1"],
        ),
        (
            "truncated.parquet",
            star,
            &["--format", "parquet"],
            &["(InvalidObject)", "PAR1"],
        ),
        (
            "outside.parquet",
            count,
            &[],
            &["(InvalidObject)", "points outside"],
        ),
        ("footer.parquet", star, &[], &["(InvalidObject)", "footer"]),
        (
            "x.parquet",
            count,
            &["--format", "parquet"],
            &["(InvalidObject)", "look like binary data"],
        ),
        (
            "text.parquet",
            count,
            &[],
            &["(InvalidObject)", "text (such as CSV)"],
        ),
        (
            "empty.parquet",
            count,
            &["--format", "parquet"],
            &["(InvalidObject)", "too short"],
        ),
        (
            "corrupt.parquet",
            star,
            &["--chunk-size", "1"],
            &["(InvalidObject)"],
        ),
        (
            "corrupt.parquet",
            "SELECT SUM(id) FROM S3Object",
            &[],
            &["(InvalidObject)"],
        ),
        (
            "data.csv",
            count,
            &["--format", "csv"],
            &["(InvalidObject)", "is a Parquet file"],
        ),
        (
            "data.csv",
            "SELECT COUNT(*) FROM S3Object",
            &["--format", "csv"],
            &["(InvalidObject)", "is a Parquet file"],
        ),
        (
            "data.jsonl",
            count,
            &["--format", "jsonl"],
            &["(InvalidObject)", "is a Parquet file"],
        ),
    ];
    let mut m = Mismatches::default();
    for (index, (key, sql, extra, want)) in cases.iter().enumerate() {
        let prefix = format!("out/{index}/");
        let output = url(&bucket, &prefix);
        let mut args = extra.to_vec();
        args.extend(["--output", &output]);
        let err = match scan(&bucket, key, sql, &args).await {
            Ok(summary) => {
                m.note(format!("{key} {extra:?}: {sql} succeeded: {summary}"));
                continue;
            }
            Err(err) => err,
        };
        for want in *want {
            m.check(
                &format!("{key} {extra:?}: stderr {err:?} lacks {want:?}"),
                err.contains(want),
            );
        }
        let left = bucket.keys(&prefix).await;
        if *key == "corrupt.parquet" {
            // Found while reading rows: parts of chunks that ended may stay, but no manifest
            // claims the output complete.
            let manifest = format!("{prefix}manifest.json");
            m.check(
                &format!("{key}: a failed scan wrote {manifest}"),
                !left.contains(&manifest),
            );
        } else {
            m.check(
                &format!("{key}: failed before reading, yet left {left:?} under {prefix}"),
                left.is_empty(),
            );
        }
    }
    bucket.assert_no_uploads_left().await;
    m.assert_none("broken_or_mistyped_objects_fail_with_invalid_object");
}

/// A query naming a column the file lacks, a struct field it lacks, a list or a map column (in
/// WHERE or in an aggregate), or a path into a list, fails with InvalidSql naming the column (and
/// its type) before anything runs or is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn queries_on_missing_list_or_map_columns_fail_with_invalid_sql() {
    let bucket = Bucket::create(&common::env().await, "pq-sql").await;
    put_files(&bucket, &["typed-snappy-v1"]).await;
    let key = "typed-snappy-v1.parquet";
    // (query, what stderr must say)
    let cases: &[(&str, &[&str])] = &[
        ("SELECT nosuch FROM S3Object", &["no column `nosuch`"]),
        (
            "SELECT COUNT(*) FROM S3Object WHERE nosuch > 1",
            &["no column `nosuch`"],
        ),
        (
            "SELECT SUM(st.a.zz) FROM S3Object",
            &["no column `st.a.zz`"],
        ),
        (
            "SELECT COUNT(*) FROM S3Object WHERE tags IS NULL",
            &["`tags`", "List"],
        ),
        (
            "SELECT COUNT(*) FROM S3Object o WHERE o.tags = 'a'",
            &["`tags`", "List"],
        ),
        ("SELECT MAX(tags) FROM S3Object", &["`tags`", "List"]),
        (
            "SELECT COUNT(*) FROM S3Object WHERE attrs IS NOT NULL",
            &["`attrs`", "Map"],
        ),
        ("SELECT id, attrs FROM S3Object", &["`attrs`", "Map"]),
        (
            "SELECT COUNT(*) FROM S3Object WHERE tags.element = 'a'",
            &["`tags`", "cannot reach into"],
        ),
    ];
    let mut m = Mismatches::default();
    for (index, (sql, want)) in cases.iter().enumerate() {
        let prefix = format!("out/{index}/");
        let output = url(&bucket, &prefix);
        let err = match scan(&bucket, key, sql, &["--output", &output]).await {
            Ok(summary) => {
                m.note(format!("{sql} succeeded: {summary}"));
                continue;
            }
            Err(err) => err,
        };
        m.check(
            &format!("{sql}: stderr {err:?} lacks (InvalidSql)"),
            err.contains("(InvalidSql)"),
        );
        for want in *want {
            m.check(
                &format!("{sql}: stderr {err:?} lacks {want:?}"),
                err.contains(want),
            );
        }
    }
    m.equal("objects under out/", bucket.keys("out/").await.len(), 0);
    bucket.assert_no_uploads_left().await;
    m.assert_none("queries_on_missing_list_or_map_columns_fail_with_invalid_sql");
}

/// `--format auto` (the default) reads a Parquet object as Parquet by its PAR1 magic whatever its
/// name (`.parquet`, `.pq`, no extension, even `.csv`), with the same answer as `--format
/// parquet`; without `--json` the result is printed as name-value lines and the row groups
/// skipped are reported on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn format_auto_finds_parquet_by_its_magic() {
    let bucket = Bucket::create(&common::env().await, "pq-auto").await;
    let typed = file("typed-snappy-v1");
    let sql = "SELECT COUNT(*), SUM(i16), MAX(ts_ns_tz) FROM S3Object WHERE str LIKE 'a%'";
    let want = pyarrow(
        typed,
        &[agg_query(
            &aggregates(&[("sum", &["i16"]), ("max", &["ts_ns_tz"])]),
            "like(c('str'), 'a%')",
        )],
    );
    let want = json!({
        "COUNT(*)": want[0][0], "SUM(i16)": want[0][1], "MAX(ts_ns_tz)": want[0][2],
    });
    for key in ["t.parquet", "dir/part-0.PQ", "noextension", "misnamed.csv"] {
        bucket.put(key, typed.bytes()).await;
        for extra in [&[][..], &["--format", "auto"], &["--format", "parquet"]] {
            let summary = scan_ok(&bucket, key, sql, extra).await;
            assert_eq!(summary["result"], want, "{key} {extra:?}");
            assert!(
                summary["rowGroups"].is_object(),
                "{key} {extra:?}: read as Parquet"
            );
        }
    }
    // Without --json: the result as name-value lines, the row groups on stderr.
    let args: Vec<String> = [
        &url(&bucket, "noextension"),
        "--endpoint",
        &bucket.endpoint,
        "--sql",
        "SELECT COUNT(*) AS n FROM S3Object WHERE id < 600",
        "--chunk-size",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (code, out, err, _) = common::cli::run("scan", args).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "n\t600\n");
    assert!(err.contains("5000 records in 7 chunks"), "{err}");
    assert!(
        err.contains("row groups: 6 of 7 skipped by their statistics"),
        "{err}"
    );
}

/// A file replaced after planning fails the scan as ObjectChanged (every read is pinned to the
/// planned ETag), whether the new file is another Parquet file or the same bytes with one changed
/// (same size); a scan writing rows leaves no multipart upload behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/up.sh"]
async fn a_file_replaced_after_planning_fails_with_object_changed() {
    let bucket = Bucket::create(&common::env().await, "pq-changed").await;
    let typed = file("typed-snappy-v1");
    let mut same_size = typed.bytes();
    let page = typed.first_page as usize + 40;
    same_size[page] ^= 0x01;
    let replacements = [
        ("another file", file("sorted").bytes()),
        ("one byte changed", same_size),
    ];
    for (index, (what, replacement)) in replacements.into_iter().enumerate() {
        for (sql, output) in [
            ("SELECT COUNT(*), SUM(i32), MAX(str) FROM S3Object", None),
            (
                "SELECT * FROM S3Object WHERE id > 10",
                Some(format!("out/{index}/")),
            ),
        ] {
            let key = "t.parquet";
            bucket.put(key, typed.bytes()).await;
            let layout = scan::plan(
                &bucket.s3,
                &PlanRequest {
                    bucket: bucket.name.clone(),
                    key: key.into(),
                    format: InputFormat::Parquet,
                    expected_headers: None,
                    chunk_size: 1,
                    max_record_size: scan::plan::DEFAULT_MAX_RECORD_SIZE,
                },
            )
            .await
            .unwrap();
            assert_eq!(layout.chunk_count(), typed.row_groups);
            let query = layout.compile(sql).unwrap();
            bucket.put(key, replacement.clone()).await;
            let output = output.map(|prefix| Output {
                bucket: bucket.name.clone(),
                prefix,
                format: OutputFormat::Csv,
                scope: String::new(),
                first_part: None,
            });
            let result = local::scan(
                &bucket.s3,
                &layout,
                (&query, sql),
                output,
                (4, Stop::never()),
                &Counters::default(),
            )
            .await;
            match result {
                Ok(summary) => panic!("{what}: {sql}: the scan succeeded: {summary:?}"),
                Err(error) => assert_eq!(error.reason(), "ObjectChanged", "{what}: {sql}: {error}"),
            }
        }
    }
    bucket.assert_no_uploads_left().await;
}
