//! The scan engine against real MinIO: whatever the chunk size, every record of an object is
//! processed exactly once. Each result is checked against an independent sequential parse of the
//! whole object (the `csv` crate, or line splitting and `serde_json`), and failures name the
//! chunk and the bytes at fault.

mod common;

use std::collections::BTreeSet;

use common::minio::Bucket;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use s3flow::scan::local::{self, Counters, ScanSummary};
use s3flow::scan::sql::{self, Columns};
use s3flow::scan::{self, InputFormat, Layout, Output, OutputFormat, PlanRequest, ScanError};
use s3flow::shutdown::Stop;
use serde_json::{Map, Value as Json};

const CSV: InputFormat = InputFormat::Csv {
    delimiter: b',',
    quote: b'"',
    header: true,
};

/// Chunk sizes every corpus object is scanned with (plus one larger than the object).
const CHUNK_SIZES: [u64; 6] = [1, 2, 3, 7, 64, 1000];

/// Chunks run at once: tiny chunk sizes give thousands of chunks.
const PARALLELISM: usize = 16;

// ---------------------------------------------------------------------------------------------
// Deterministic data

/// xorshift64*: the same objects on every run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with the given chance in percent.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Cents as a decimal with two places, such as "-0.05" or "123.40".
fn decimal(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

/// How one generated CSV object looks.
struct CsvStyle {
    seed: u64,
    records: usize,
    bom: bool,
    /// Record terminators, picked at random per record.
    terminators: &'static [&'static str],
    /// Blank lines between some records.
    blank_lines: bool,
    final_terminator: bool,
    /// Length of one quoted note in the middle, longer than most chunk sizes.
    long_note: usize,
}

/// Encoded names: quoted delimiters, doubled quotes, newlines inside quotes (LF, CRLF, CR), a
/// literal quote inside an unquoted field, text after a closing quote, and non-ASCII text.
const NAMES: &[&str] = &[
    "Ann",
    "Bob Ray",
    "\"Doe, Jane\"",
    "\"The \"\"Great\"\" One\"",
    "Sam 5'10\"",
    "\"two\nlines\"",
    "\"crlf\r\nname, here\"",
    "\"lone\rcr\"",
    "\"Quo\"ted",
    "\"Zoë, ünïcode ✓\"",
    "\" leading space\"",
    "\"\"\"quoted\"\" start\"",
    "Tab\there",
    "\"a,\"\",\"\",b\"",
    "\"multi\n\nblank\n\"",
];

/// A CSV object with the header `id,name,fare,note`.
fn csv_object(style: &CsvStyle) -> Vec<u8> {
    let mut rng = Rng::new(style.seed);
    let mut text = String::new();
    if style.bom {
        text.push('\u{feff}');
    }
    text.push_str("id,name,fare,note");
    text.push_str(rng.pick(style.terminators));
    let long_at = (style.long_note > 0).then_some(style.records / 2);
    for id in 0..style.records {
        let fare = match rng.below(20) {
            0..=12 => decimal(rng.below(20_000) as i64 - 3_000),
            13 => (rng.below(500) as i64 - 100).to_string(),
            14 => format!(" {} ", decimal(rng.below(9_999) as i64)),
            _ => String::new(),
        };
        let note = match rng.below(6) {
            0 => String::new(),
            1 => "\"x,y\"".into(),
            2 => "plain".into(),
            3 => "\"it said \"\"hi\"\"\nthen left\"".into(),
            4 => "\"\"".into(),
            _ => "n".into(),
        };
        let name = rng.pick(NAMES);
        // Some records are ragged: no note, or no fare either (read as flexible records).
        let record = match rng.below(12) {
            _ if Some(id) == long_at => {
                let mut note = String::from("\"");
                while note.len() < style.long_note {
                    note.push_str(rng.pick(&[
                        "long, long text ",
                        "with \"\"quotes\"\" ",
                        "and\nnewlines ",
                        "and\r\nCRLFs ",
                    ]));
                }
                format!("{id},{name},{fare},{note}\"")
            }
            0 => format!("{id},{name}"),
            1 => format!("{id},{name},{fare}"),
            2 => format!("{id},,{fare},{note}"),
            _ => format!("{id},{name},{fare},{note}"),
        };
        text.push_str(&record);
        if id + 1 < style.records || style.final_terminator {
            text.push_str(rng.pick(style.terminators));
        }
        if style.blank_lines && id + 1 < style.records && rng.chance(15) {
            text.push_str(rng.pick(&["\n", "\r\n", "\n\n", "\r"]));
        }
    }
    text.into_bytes()
}

/// The CSV corpus: (key, bytes, chunk sizes to scan it with). Small objects get every chunk
/// size; the one with a record of 2,500 bytes gets the larger ones.
fn csv_corpus() -> Vec<(&'static str, Vec<u8>, Vec<u64>)> {
    let style = |seed, terminators, bom, blank_lines, final_terminator| CsvStyle {
        seed,
        records: 22,
        bom,
        terminators,
        blank_lines,
        final_terminator,
        long_note: 120,
    };
    let mut corpus: Vec<_> = [
        (
            "mixed-terminators-bom-no-final-newline.csv",
            style(1, &["\n", "\r\n", "\r"][..], true, true, false),
        ),
        ("lf.csv", style(2, &["\n"], false, false, true)),
        (
            "crlf-blank-lines.csv",
            style(3, &["\r\n"], false, true, true),
        ),
        ("lone-cr-bom.csv", style(4, &["\r"], true, false, false)),
    ]
    .into_iter()
    .map(|(key, style)| {
        let data = csv_object(&style);
        let sizes = CHUNK_SIZES
            .into_iter()
            .chain([data.len() as u64 + 1_000])
            .collect();
        (key, data, sizes)
    })
    .collect();
    let long = csv_object(&CsvStyle {
        seed: 5,
        records: 30,
        bom: false,
        terminators: &["\n", "\r\n"],
        blank_lines: true,
        final_terminator: true,
        long_note: 2_500,
    });
    let sizes = vec![64, 1000, long.len() as u64 + 1];
    corpus.push(("long-record.csv", long, sizes));
    corpus
}

// ---------------------------------------------------------------------------------------------
// References: sequential parses of whole objects

/// The correctly rounded sum of `values`, exactly: a double of magnitude in [2^-28, 2^23) is an
/// integer multiple of 2^-80 below 2^103, so the values are summed as integers scaled by 2^80
/// (checking that range); one rounding (`i128 as f64` rounds to nearest, ties to even) and an
/// exact power-of-two scaling give the correctly rounded total, as `math.fsum` would.
fn exact_sum(values: &[f64]) -> f64 {
    const SCALE: i32 = 80;
    let mut total: i128 = 0;
    for &value in values {
        if value == 0.0 {
            continue;
        }
        let bits = value.to_bits();
        let exponent = ((bits >> 52) & 0x7ff) as i32;
        assert!(exponent != 0 && exponent != 0x7ff, "{value} is not normal");
        let mantissa = i128::from((bits & ((1 << 52) - 1)) | (1 << 52));
        let shift = exponent - 1075 + SCALE;
        assert!(
            (0..50).contains(&shift),
            "{value} is out of the exact range"
        );
        let scaled = mantissa << shift;
        total += if bits >> 63 == 1 { -scaled } else { scaled };
    }
    total as f64 * 2f64.powi(-SCALE)
}

/// Parses a number as the engine documents it: surrounding spaces ignored.
fn number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok()
}

/// Records and header of a CSV object by one sequential `csv` crate read.
fn csv_records(data: &[u8]) -> (Vec<String>, Vec<csv::StringRecord>) {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(data);
    let headers = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    let records = reader.records().map(Result::unwrap).collect();
    (headers, records)
}

/// What the queries read of one record, from a sequential parse.
#[derive(Debug)]
struct Rec {
    /// `fare` when present and not empty, as a number.
    fare: Option<f64>,
    /// `name` when present and not empty.
    name: Option<String>,
    /// `meta.score` (JSON Lines only).
    score: Option<i64>,
}

fn csv_recs(records: &[csv::StringRecord]) -> Vec<Rec> {
    records
        .iter()
        .map(|record| Rec {
            fare: record.get(2).filter(|f| !f.is_empty()).map(|f| {
                number(f).unwrap_or_else(|| panic!("generated fare {f:?} is not a number"))
            }),
            name: record.get(1).filter(|n| !n.is_empty()).map(str::to_string),
            score: None,
        })
        .collect()
}

/// Every aggregate the queries below may select, by alias, over `recs`.
fn aggregates<'a>(recs: impl Iterator<Item = &'a Rec> + Clone) -> Map<String, Json> {
    let fares: Vec<f64> = recs.clone().filter_map(|r| r.fare).collect();
    let names = recs.clone().filter_map(|r| r.name.clone());
    let extreme = |f: fn(f64, f64) -> f64| {
        fares
            .iter()
            .copied()
            .reduce(f)
            .map_or(Json::Null, Json::from)
    };
    Map::from_iter([
        ("n".to_string(), Json::from(recs.clone().count())),
        ("priced".into(), fares.len().into()),
        (
            "total".into(),
            if fares.is_empty() {
                Json::Null
            } else {
                exact_sum(&fares).into()
            },
        ),
        ("low".into(), extreme(f64::min)),
        ("high".into(), extreme(f64::max)),
        ("first".into(), names.clone().min().into()),
        ("last".into(), names.max().into()),
        ("top".into(), recs.filter_map(|r| r.score).max().into()),
    ])
}

/// Asserts that `result` has exactly the keys of `expected` that it should, with equal values
/// (numbers compared as numbers: the engine keeps integer results integers).
fn assert_result(
    result: &Map<String, Json>,
    expected: &Map<String, Json>,
    keys: &[&str],
    what: &str,
) {
    let got: BTreeSet<&str> = result.keys().map(String::as_str).collect();
    assert_eq!(
        got,
        keys.iter().copied().collect(),
        "{what}: result keys of {result:?}"
    );
    for key in keys {
        let (got, want) = (&result[*key], &expected[*key]);
        let equal = match (got.as_f64(), want.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => got == want,
        };
        assert!(equal, "{what}: {key} is {got}, expected {want} (exactly)");
    }
}

/// A query and the aggregates it selects, over the records its filter keeps.
#[derive(Clone, Copy)]
struct Check<'a> {
    sql: &'a str,
    keys: &'a [&'a str],
    filter: fn(&Rec) -> bool,
}

/// SUM in the filtered CSV query only sees numeric fares (`s.fare >= -1000000` is unknown for
/// anything else): see `a_wrong_start_state_guess_fails_a_valid_csv_with_bad_data` for why an
/// unguarded SUM over quoted newlines fails today.
const CSV_CHECKS: [Check; 2] = [
    Check {
        sql: "SELECT COUNT(*) AS n, COUNT(fare) AS priced, MIN(fare) AS low, MAX(fare) AS high, \
              MIN(s.name) AS first, MAX(s.name) AS last FROM S3Object s",
        keys: &["n", "priced", "low", "high", "first", "last"],
        filter: |_| true,
    },
    Check {
        sql: "SELECT COUNT(*) AS n, SUM(fare) AS total, MAX(s.name) AS last FROM S3Object s \
              WHERE s.fare > 50 OR (s.name LIKE '%,%' AND s.fare >= -1000000)",
        keys: &["n", "total", "last"],
        filter: |r| {
            r.fare
                .is_some_and(|f| f > 50.0 || r.name.as_ref().is_some_and(|n| n.contains(',')))
        },
    },
];

/// The SUM reference itself: exact where a running sum is not.
#[test]
#[ignore = "needs tests/cluster/up.sh"]
fn exact_sum_is_correctly_rounded() {
    let tenths = [0.1; 10];
    assert_ne!(
        tenths.iter().sum::<f64>(),
        1.0,
        "a running sum rounds at every step"
    );
    assert_eq!(exact_sum(&tenths), 1.0);
    assert_eq!(exact_sum(&[1e6, 0.01, -1e6]), 0.01);
    assert_eq!(exact_sum(&[12.34, -0.05, 7.0]), 19.29);
    assert_eq!(exact_sum(&[]), 0.0);
}

// ---------------------------------------------------------------------------------------------
// Running the engine

async fn plan(
    bucket: &Bucket,
    key: &str,
    format: InputFormat,
    chunk_size: u64,
) -> Result<Layout, ScanError> {
    scan::plan(
        &bucket.s3,
        &PlanRequest {
            bucket: bucket.name.clone(),
            key: key.to_string(),
            format,
            expected_headers: None,
            chunk_size,
            max_record_size: scan::plan::DEFAULT_MAX_RECORD_SIZE,
        },
    )
    .await
}

async fn run(
    bucket: &Bucket,
    layout: &Layout,
    sql: &str,
    output: Option<Output>,
) -> Result<ScanSummary, ScanError> {
    let query = layout.compile(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    local::scan(
        &bucket.s3,
        layout,
        (&query, sql),
        output,
        (PARALLELISM, Stop::never()),
        &Counters::default(),
    )
    .await
}

/// Checks what every scan of a whole object must report: each chunk once, every byte once.
fn check_coverage(summary: &ScanSummary, layout: &Layout, what: &str) {
    if layout.whole_stream() {
        assert_eq!(summary.chunks, 1, "{what}: a gzip object is one chunk");
        return;
    }
    let data = layout.object.size - layout.data_start;
    assert_eq!(
        u64::from(summary.chunks),
        data.div_ceil(layout.chunk_size),
        "{what}: chunk count"
    );
    assert_eq!(summary.chunks, layout.chunk_count(), "{what}: chunk count");
    assert_eq!(summary.bytes, data, "{what}: bytes within chunk ranges");
}

/// Scans the object at `key` at `chunk_size` with each of `checks`, comparing with `recs`.
async fn check_object(
    bucket: &Bucket,
    key: &str,
    format: InputFormat,
    chunk_size: u64,
    checks: &[Check<'_>],
    recs: &[Rec],
) -> (Layout, u32) {
    let what = format!("{key} at chunk size {chunk_size}");
    let mut reruns = 0;
    let layout = plan(bucket, key, format, chunk_size)
        .await
        .unwrap_or_else(|e| panic!("{what}: plan: {e}"));
    for check in checks {
        let summary = run(bucket, &layout, check.sql, None)
            .await
            .unwrap_or_else(|e| panic!("{what}: {}: {e}", check.sql));
        check_coverage(&summary, &layout, &what);
        reruns += summary.reruns;
        assert_eq!(summary.records, recs.len() as u64, "{what}: records");
        assert_eq!(summary.manifest, None, "{what}: no output, no manifest");
        let expected = aggregates(recs.iter().filter(|r| (check.filter)(r)));
        assert_result(
            &summary.result,
            &expected,
            check.keys,
            &format!("{what}: {}", check.sql),
        );
    }
    (layout, reruns)
}

// ---------------------------------------------------------------------------------------------
// Tests

/// Tricky CSV (quoted delimiters, doubled quotes, LF/CRLF/CR inside quotes and as terminators,
/// blank lines, a BOM, no final newline, literal quotes in unquoted fields, empty fields, ragged
/// records, records longer than the chunk size) gives, at every chunk size from one byte to
/// more than the object, the record count, exact SUM, MIN, MAX and filtered COUNT of a
/// sequential `csv` crate parse.
#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn csv_results_match_a_sequential_parse_at_every_chunk_size() {
    let bucket = Bucket::create(&common::env().await, "scan").await;
    for (key, data, chunk_sizes) in csv_corpus() {
        bucket.put(key, data.clone()).await;
        let (headers, records) = csv_records(&data);
        let recs = csv_recs(&records);
        let filtered = recs.iter().filter(|r| (CSV_CHECKS[1].filter)(r)).count();
        let longest = records.iter().flatten().map(str::len).max().unwrap_or(0);
        assert!(
            recs.len() >= 20 && filtered > 0 && filtered < recs.len() && longest > 100,
            "{key}: the object exercises little: {recs:?}"
        );
        for chunk_size in chunk_sizes {
            let (layout, reruns) =
                check_object(&bucket, key, CSV, chunk_size, &CSV_CHECKS, &recs).await;
            // Newlines inside quotes make some one-byte chunks guess their start state wrong.
            assert!(
                chunk_size > 1 || reruns > 0,
                "{key} at chunk size 1: no chunk was rerun, the corpus misses what it is for"
            );
            assert_eq!(layout.columns, headers, "{key}: header row");
            assert_eq!(layout.object.size, data.len() as u64, "{key}: size");
            assert!(layout.compression.is_none(), "{key}");
        }
    }
}

/// A JSON Lines object of records with fares of every kind (decimals, integers, numeric
/// strings, null, absent), names with escaped newlines, quotes and braces, and a nested score.
fn jsonl_object(seed: u64, records: usize, bom: bool, final_newline: bool) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let names = [
        "Ann",
        "line\nbreak",
        "crlf\r\n",
        "{\"a\": 1}",
        "} {",
        "\" and \\",
        "Zoë ✓",
        "",
        "\t\u{2028}",
    ];
    let mut text = String::new();
    if bom {
        text.push('\u{feff}');
    }
    for id in 0..records {
        let mut object = serde_json::json!({"id": id, "name": rng.pick(&names)});
        match rng.below(10) {
            0..=4 => object["fare"] = (rng.below(20_000) as f64 / 100.0 - 30.0).into(),
            5 => object["fare"] = (rng.below(300) as i64 - 50).into(),
            6 => object["fare"] = decimal(rng.below(9_999) as i64).into(),
            7 => object["fare"] = Json::Null,
            _ => {}
        }
        if rng.chance(70) {
            object["meta"] = serde_json::json!({"score": rng.below(1000)});
        }
        let indent = if rng.chance(10) { "  " } else { "" };
        text.push_str(&format!("{indent}{object}"));
        if id + 1 < records || final_newline {
            text.push_str(rng.pick(&["\n", "\r\n"]));
        }
        if id + 1 < records && rng.chance(15) {
            text.push_str(rng.pick(&["\n", "\r\n", "   \n", "\t\r\n"]));
        }
    }
    text.into_bytes()
}

/// The records of a JSON Lines object, by splitting lines and parsing each with `serde_json`.
fn jsonl_recs(data: &[u8]) -> Vec<Rec> {
    let text = std::str::from_utf8(data).unwrap();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.split('\n')
        .map(|line| line.trim_matches([' ', '\t', '\r']))
        .filter(|line| !line.is_empty())
        .map(|line| {
            let record: Json = serde_json::from_str(line).unwrap();
            Rec {
                fare: match &record["fare"] {
                    Json::Number(n) => n.as_f64(),
                    Json::String(s) => number(s),
                    _ => None,
                },
                name: record["name"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .map(str::to_string),
                score: record["meta"]["score"].as_i64(),
            }
        })
        .collect()
}

/// JSON Lines with blank and whitespace-only lines, CRLF, a BOM, no final newline and strings
/// holding escaped newlines and braces gives, at every chunk size, the record count, exact SUM,
/// MIN, MAX, nested MAX and filtered COUNT and SUM (by a general WHERE and by a field compared
/// with a number) of a sequential line-by-line parse.
#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn json_lines_results_match_a_sequential_parse_at_every_chunk_size() {
    let bucket = Bucket::create(&common::env().await, "scan").await;
    let checks = [
        Check {
            sql: "SELECT COUNT(*) AS n, COUNT(s.fare) AS priced, SUM(s.fare) AS total, \
                  MIN(s.fare) AS low, MAX(s.fare) AS high, MIN(s.name) AS first, \
                  MAX(s.name) AS last, MAX(s.meta.score) AS top FROM S3Object s",
            keys: &[
                "n", "priced", "total", "low", "high", "first", "last", "top",
            ],
            filter: |_| true,
        },
        Check {
            sql: "SELECT COUNT(*) AS n, SUM(s.fare) AS total FROM S3Object s \
                  WHERE s.fare > 50 OR s.name LIKE '%{%'",
            keys: &["n", "total"],
            filter: |r| {
                r.fare.is_some_and(|f| f > 50.0) || r.name.as_ref().is_some_and(|n| n.contains('{'))
            },
        },
        Check {
            sql: "SELECT COUNT(*) AS n, SUM(s.fare) AS total, MAX(s.name) AS last \
                  FROM S3Object s WHERE CAST(s.fare AS FLOAT) > 50",
            keys: &["n", "total", "last"],
            filter: |r| r.fare.is_some_and(|f| f > 50.0),
        },
    ];
    let corpus = [
        ("final-newline.jsonl", jsonl_object(11, 16, false, true)),
        (
            "bom-no-final-newline.jsonl",
            jsonl_object(12, 14, true, false),
        ),
    ];
    for (key, data) in corpus {
        bucket.put(key, data.clone()).await;
        let recs = jsonl_recs(&data);
        let filtered = recs.iter().filter(|r| (checks[1].filter)(r)).count();
        assert!(
            recs.len() >= 14
                && filtered > 0
                && filtered < recs.len()
                && recs.iter().any(|r| r.score.is_some()),
            "{key}: the object exercises little: {recs:?}"
        );
        let largest = data.len() as u64 + 1_000;
        for chunk_size in CHUNK_SIZES.into_iter().chain([largest]) {
            let (layout, _) = check_object(
                &bucket,
                key,
                InputFormat::JsonLines,
                chunk_size,
                &checks,
                &recs,
            )
            .await;
            assert!(layout.columns.is_empty(), "{key}");
        }
    }
}

/// One output row as read back: `None` for a JSON null.
type Row = Vec<Option<String>>;

/// Reads the manifest under `prefix` and the rows of its parts in chunk order, checking the
/// manifest's chunk list and that the prefix holds exactly its parts and itself.
async fn read_output(
    bucket: &Bucket,
    layout: &Layout,
    output: &Output,
    what: &str,
) -> (Json, Vec<Row>) {
    let manifest_key = format!("{}manifest.json", output.prefix);
    let manifest: Json = serde_json::from_slice(&bucket.get(&manifest_key).await).unwrap();
    let chunks = manifest["chunks"].as_array().expect("chunks");
    let indexes: Vec<u64> = chunks
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    let all: Vec<u64> = (0..u64::from(layout.chunk_count())).collect();
    assert_eq!(indexes, all, "{what}: manifest chunks in order, each once");
    let mut rows = Vec::new();
    let mut keys = BTreeSet::from([manifest_key]);
    for chunk in chunks {
        let index = chunk["index"].as_u64().unwrap() as u32;
        let (start, end) = layout.range(index);
        assert_eq!(
            (chunk["start"].as_u64(), chunk["end"].as_u64()),
            (Some(start), Some(end)),
            "{what}: chunk {index} range"
        );
        let Some(part) = chunk["part"].as_str() else {
            assert_eq!(
                chunk["rows"], 0,
                "{what}: chunk {index} has rows but no part"
            );
            continue;
        };
        assert_eq!(
            part,
            output.part_key(index),
            "{what}: chunk {index} part key"
        );
        keys.insert(part.to_string());
        let body = bucket.get(part).await;
        let part_rows: Vec<Row> = match output.format {
            OutputFormat::Csv => {
                let mut reader = csv::ReaderBuilder::new().from_reader(body.as_slice());
                let names: Vec<String> =
                    reader.headers().unwrap().iter().map(String::from).collect();
                assert_eq!(names, ["name", "fare"], "{what}: {part} header row");
                reader
                    .records()
                    .map(|r| r.unwrap().iter().map(|f| Some(f.to_string())).collect())
                    .collect()
            }
            OutputFormat::JsonLines => {
                assert!(body.ends_with(b"\n"), "{what}: {part} ends with a newline");
                body.split(|&b| b == b'\n')
                    .filter(|line| !line.is_empty())
                    .map(|line| {
                        let object: Map<String, Json> = serde_json::from_slice(line).unwrap();
                        let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
                        assert_eq!(
                            keys,
                            BTreeSet::from(["name", "fare"]),
                            "{what}: {part} row keys"
                        );
                        ["name", "fare"]
                            .iter()
                            .map(|k| object[*k].as_str().map(str::to_string))
                            .collect()
                    })
                    .collect()
            }
            OutputFormat::Parquet => panic!("{what}: text objects are written as text"),
        };
        assert_eq!(
            chunk["rows"].as_u64(),
            Some(part_rows.len() as u64),
            "{what}: rows of chunk {index} in the manifest and in {part}"
        );
        rows.extend(part_rows);
    }
    let listed = bucket.keys(&output.prefix).await;
    assert_eq!(
        listed, keys,
        "{what}: the prefix holds exactly the manifest and its parts"
    );
    (manifest, rows)
}

/// Row output (`SELECT name, fare ... WHERE`) as CSV and as JSON Lines: the parts read in chunk
/// order hold exactly the matching rows of a sequential parse, in object order, with embedded
/// newlines, quotes and delimiters intact; the manifest counts every record and names the
/// source ETag; `LIMIT 5` keeps exactly the first five rows; no multipart upload is left.
#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn row_output_holds_every_matching_row_once_in_object_order() {
    let bucket = Bucket::create(&common::env().await, "scan").await;
    let (key, data, _) = csv_corpus().swap_remove(0);
    bucket.put(key, data.clone()).await;
    let (_, records) = csv_records(&data);
    let matching: Vec<&csv::StringRecord> = records
        .iter()
        .filter(|r| {
            r.get(2).and_then(number).is_some_and(|f| f > 50.0)
                || r.get(1).is_some_and(|n| n.contains(',') || n.contains('"'))
        })
        .collect();
    assert!(
        matching.len() > 5 && matching.len() < records.len(),
        "{key}: the filter should keep some rows"
    );
    let sql = "SELECT name, fare FROM S3Object s \
               WHERE s.fare > 50 OR s.name LIKE '%,%' OR s.name LIKE '%\"%'";
    for chunk_size in [7, 64, 1000, data.len() as u64 + 1] {
        let layout = plan(&bucket, key, CSV, chunk_size).await.unwrap();
        for format in [OutputFormat::Csv, OutputFormat::JsonLines] {
            // CSV writes a missing field as an empty one; JSON Lines as null.
            let expected: Vec<Row> = matching
                .iter()
                .map(|r| {
                    [1, 2]
                        .iter()
                        .map(|&i| match (r.get(i), format) {
                            (None, OutputFormat::Csv) => Some(String::new()),
                            (field, _) => field.map(str::to_string),
                        })
                        .collect()
                })
                .collect();
            for limit in [None, Some(5)] {
                let what = format!("{key} at chunk size {chunk_size}, {format:?}, limit {limit:?}");
                let output = Output {
                    bucket: bucket.name.clone(),
                    prefix: format!(
                        "out/{chunk_size}-{}-{}/",
                        format.extension(),
                        limit.map_or("all".into(), |l| l.to_string())
                    ),
                    format,
                    scope: String::new(),
                    first_part: None,
                };
                let query = match limit {
                    Some(limit) => format!("{sql} LIMIT {limit}"),
                    None => sql.to_string(),
                };
                let summary = run(&bucket, &layout, &query, Some(output.clone()))
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                check_coverage(&summary, &layout, &what);
                // Some 7-byte chunks guess wrong: their speculative parts must be replaced or gone.
                assert!(
                    chunk_size != 7 || summary.reruns > 0,
                    "{what}: no chunk was rerun"
                );
                let wanted = &expected[..limit.map_or(expected.len(), |l| l as usize)];
                assert_eq!(summary.records, records.len() as u64, "{what}: records");
                assert_eq!(summary.rows, wanted.len() as u64, "{what}: rows");
                assert_eq!(
                    summary.result.get("rows").and_then(Json::as_u64),
                    Some(wanted.len() as u64),
                    "{what}: result"
                );
                assert_eq!(
                    summary.manifest.as_deref(),
                    Some(format!("s3://{}/{}manifest.json", bucket.name, output.prefix).as_str()),
                    "{what}: manifest location"
                );
                let (manifest, rows) = read_output(&bucket, &layout, &output, &what).await;
                assert_eq!(rows, wanted, "{what}: rows read back in chunk order");
                assert_eq!(
                    manifest["records"].as_u64(),
                    Some(records.len() as u64),
                    "{what}: manifest records"
                );
                assert_eq!(
                    manifest["rows"].as_u64(),
                    Some(wanted.len() as u64),
                    "{what}: manifest rows"
                );
                assert_eq!(
                    manifest["source"]["etag"].as_str(),
                    Some(layout.object.etag.as_str()),
                    "{what}: manifest source ETag"
                );
                assert_eq!(
                    manifest["source"]["size"].as_u64(),
                    Some(data.len() as u64),
                    "{what}: manifest source size"
                );
            }
        }
    }
    bucket.assert_no_uploads_left().await;
}

/// Failures are verdicts on the input that name what is wrong: a header other than the expected
/// one, an unterminated quote (in a chunk whose range holds the broken record's start), a value
/// SUM cannot add (at the record's offset, inside the blamed chunk's range), a missing object,
/// invalid SQL (with its position), and zstd compression.
#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn failures_name_the_cause_and_the_bytes() {
    let bucket = Bucket::create(&common::env().await, "scan").await;

    // Header mismatch: nothing runs, and both header rows are named.
    bucket
        .put("header.csv", b"id,name,fare\n1,a,2\n".to_vec())
        .await;
    let expected = vec!["id".to_string(), "name".into(), "price".into()];
    let error = scan::plan(
        &bucket.s3,
        &PlanRequest {
            bucket: bucket.name.clone(),
            key: "header.csv".into(),
            format: CSV,
            expected_headers: Some(expected.clone()),
            chunk_size: 64,
            max_record_size: scan::plan::DEFAULT_MAX_RECORD_SIZE,
        },
    )
    .await
    .expect_err("a header mismatch must fail the plan");
    assert_eq!(error.reason(), "HeaderMismatch", "{error}");
    let message = error.to_string();
    assert!(
        message.contains(r#"["id", "name", "fare"]"#)
            && message.contains(r#"["id", "name", "price"]"#),
        "both header rows: {message}"
    );

    // An unterminated quote: the record starting after "2,3\n" never ends.
    let broken = b"id,name,fare\n1,a,2\n2,b,3\n3,\"open, never closed\n4,c,5\n5,d,6\n";
    let broken_start = 25;
    assert_eq!(&broken[broken_start..broken_start + 3], b"3,\"");
    bucket.put("unterminated.csv", broken.to_vec()).await;
    for chunk_size in [1, 2, 3, 7, 64, 1000] {
        let what = format!("unterminated.csv at chunk size {chunk_size}");
        let layout = plan(&bucket, "unterminated.csv", CSV, chunk_size)
            .await
            .unwrap();
        let error = run(&bucket, &layout, "SELECT COUNT(*) FROM S3Object", None)
            .await
            .expect_err(&what);
        assert_eq!(error.reason(), "MalformedRecord", "{what}: {error}");
        let ScanError::MalformedRecord {
            chunk, start, end, ..
        } = error
        else {
            unreachable!()
        };
        assert_eq!(layout.range(chunk), (start, end), "{what}: chunk {chunk}");
        assert!(
            (start..end).contains(&(broken_start as u64)),
            "{what}: chunk {chunk} [{start}, {end}) does not hold the broken record's start {broken_start}"
        );
    }

    // A value SUM cannot add: blamed on the record's start, inside the failing chunk's range.
    let bad = b"id,name,fare\n1,a,2.5\n2,b,3\n3,c,oops\n4,d,5\n";
    let bad_start = 27;
    assert_eq!(&bad[bad_start..bad_start + 2], b"3,");
    bucket.put("bad.csv", bad.to_vec()).await;
    for chunk_size in [1, 2, 3, 7, 64, 1000] {
        let what = format!("bad.csv at chunk size {chunk_size}");
        let layout = plan(&bucket, "bad.csv", CSV, chunk_size).await.unwrap();
        let error = run(&bucket, &layout, "SELECT SUM(fare) FROM S3Object", None)
            .await
            .expect_err(&what);
        assert_eq!(error.reason(), "BadData", "{what}: {error}");
        let ScanError::BadData {
            chunk,
            start,
            end,
            offset,
            message,
        } = error
        else {
            unreachable!()
        };
        assert_eq!(layout.range(chunk), (start, end), "{what}: chunk {chunk}");
        assert!(
            (start..end).contains(&offset),
            "{what}: offset {offset} outside chunk {chunk} [{start}, {end})"
        );
        assert_eq!(offset, bad_start as u64, "{what}: offset of the bad record");
        assert!(message.contains("oops"), "{what}: {message}");
    }

    // Invalid JSON in JSON Lines is bad data at the line's start.
    let lines = b"{\"a\":1}\n{\"a\":2\n{\"a\":3}\n";
    bucket.put("bad.jsonl", lines.to_vec()).await;
    for chunk_size in [1, 5, 1000] {
        let what = format!("bad.jsonl at chunk size {chunk_size}");
        let layout = plan(&bucket, "bad.jsonl", InputFormat::JsonLines, chunk_size)
            .await
            .unwrap();
        match run(&bucket, &layout, "SELECT COUNT(*) FROM S3Object", None).await {
            Err(ScanError::BadData {
                chunk,
                start,
                end,
                offset,
                ..
            }) => {
                assert_eq!(layout.range(chunk), (start, end), "{what}");
                assert_eq!(offset, 8, "{what}: offset of the broken line");
                assert!((start..end).contains(&offset), "{what}");
            }
            other => panic!("{what}: expected BadData, got {other:?}"),
        }
    }

    // A missing object.
    let error = plan(&bucket, "no/such/key.csv", CSV, 64)
        .await
        .expect_err("a missing object must fail the plan");
    assert_eq!(error.reason(), "ObjectNotFound", "{error}");

    // Invalid SQL is refused before anything runs, with its position.
    let columns = Columns::Positional(vec!["id".into(), "name".into(), "fare".into()]);
    let error = sql::compile("SELECT nosuch FROM S3Object", &columns).unwrap_err();
    assert!(
        error.message.contains("line 1, column 8"),
        "unknown column: {}",
        error.message
    );
    let error = sql::compile("SELECT * FROM S3Object WHERE = 2", &columns).unwrap_err();
    // The parser's own messages spell the position "Line: 1, Column: n".
    assert!(
        error.message.starts_with("invalid SQL")
            && error.message.to_lowercase().contains("line: 1, column"),
        "syntax error: {}",
        error.message
    );
    assert_eq!(
        ScanError::from(error).reason(),
        "InvalidSql",
        "a refused query"
    );

    // xz (magic fd 37 7a 58 5a 00) is refused; gzip, zstd and bzip2 are read.
    let mut xz = vec![0xfd, b'7', b'z', b'X', b'Z', 0];
    xz.extend_from_slice(b"\x00\x58id,name\n1,2\n");
    bucket.put("data.csv.xz", xz).await;
    let error = plan(&bucket, "data.csv.xz", CSV, 64)
        .await
        .expect_err("xz must be refused");
    assert_eq!(error.reason(), "UnsupportedObject", "{error}");
}

/// `data` compressed by a command-line tool (`gzip -6`, `zstd`, `bzip2`), as users make them.
fn compressed_by(command: &[&str], data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new(command[0])
        .args(&command[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", command[0]));
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{command:?} failed");
    out.stdout
}

/// A gzip-, zstd- or bzip2-compressed CSV (written by the command-line tools, several members or
/// frames too) is one chunk over the decompressed stream, whatever the chunk size, with the exact
/// results (including SUM over every fare) of a sequential parse.
#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn compressed_csv_is_one_chunk_with_exact_results() {
    use s3flow::scan::Compression;
    let bucket = Bucket::create(&common::env().await, "scan").await;
    let (_, data, _) = csv_corpus().swap_remove(0);
    let (first, second) = data.split_at(data.len() / 3);
    for (compression, command) in [
        (Compression::Gzip, &["gzip", "-6", "-c"][..]),
        (Compression::Zstd, &["zstd", "-q", "-c", "-3"]),
        (Compression::Bzip2, &["bzip2", "-c", "-9"]),
    ] {
        // Two members, frames or streams, as `cat a.gz b.gz` makes.
        let mut compressed = compressed_by(command, first);
        compressed.extend(compressed_by(command, second));
        let key = format!("mixed.csv{}", compression.extension().unwrap_or_default());
        bucket.put(&key, compressed.clone()).await;
        check_compressed(&bucket, &key, compression, &data, compressed.len() as u64).await;
    }
}

async fn check_compressed(
    bucket: &Bucket,
    key: &str,
    compression: s3flow::scan::Compression,
    data: &[u8],
    size: u64,
) {
    let (headers, records) = csv_records(data);
    let recs = csv_recs(&records);
    // One chunk guesses nothing: SUM may see every fare.
    let checks = [
        Check {
            sql: "SELECT COUNT(*) AS n, COUNT(fare) AS priced, SUM(fare) AS total, \
                  MIN(fare) AS low, MAX(fare) AS high, MIN(s.name) AS first, \
                  MAX(s.name) AS last FROM S3Object s",
            keys: &["n", "priced", "total", "low", "high", "first", "last"],
            filter: |_| true,
        },
        CSV_CHECKS[1],
    ];
    for chunk_size in [1, 64, 1 << 20] {
        let what = format!("{key} at chunk size {chunk_size}");
        let (layout, _) = check_object(bucket, key, CSV, chunk_size, &checks, &recs).await;
        assert_eq!(layout.compression, compression, "{what}: detected");
        assert_eq!(layout.chunk_count(), 1, "{what}: one chunk");
        assert_eq!(layout.columns, headers, "{what}: header row");
        assert_eq!(layout.object.size, size, "{what}: object size");
        let summary = run(bucket, &layout, "SELECT COUNT(*) FROM S3Object", None)
            .await
            .unwrap();
        assert_eq!(summary.chunks, 1, "{what}");
        assert_eq!(summary.reruns, 0, "{what}");
        assert_eq!(
            summary.bytes,
            data.len() as u64 - layout.data_start,
            "{what}: every decompressed byte after the header"
        );
        assert_eq!(
            summary.result.get("COUNT(*)").and_then(Json::as_u64),
            Some(records.len() as u64),
            "{what}: COUNT(*) named by its SQL text"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Property: random well-formed CSV

/// A field: unquoted (never starting with a quote, possibly holding a literal one or a BOM), or
/// quoted with delimiters, doubled quotes and every kind of newline, maybe with text after the
/// closing quote.
fn field() -> impl Strategy<Value = String> {
    let unquoted = prop::collection::vec(
        prop::sample::select(vec!["a", "1", "5'10\"", "x y", "é", " ", "\u{feff}"]),
        0..4,
    )
    .prop_map(|pieces| pieces.concat());
    let quoted = (
        prop::collection::vec(
            prop::sample::select(vec!["a", ",", "\"\"", "\n", "\r\n", "\r", "b c", "'"]),
            0..5,
        ),
        prop::sample::select(vec!["", "", "", "z"]),
    )
        .prop_map(|(pieces, after)| format!("\"{}\"{after}", pieces.concat()));
    prop_oneof![unquoted, quoted]
}

/// A CSV object with the header `a,b`, maybe after a BOM, and maybe no final terminator.
fn random_csv() -> impl Strategy<Value = Vec<u8>> {
    let terminator = || prop::sample::select(vec!["\n", "\r\n", "\r", "\n\n", "\r\n\r\n", "\r\r"]);
    (
        any::<bool>(),
        terminator(),
        prop::collection::vec((prop::collection::vec(field(), 1..4), terminator()), 0..25),
        any::<bool>(),
    )
        .prop_map(|(bom, header_end, records, final_terminator)| {
            let mut text = String::new();
            if bom {
                text.push('\u{feff}');
            }
            text.push_str("a,b");
            text.push_str(header_end);
            let count = records.len();
            for (i, (fields, end)) in records.into_iter().enumerate() {
                text.push_str(&fields.join(","));
                if i + 1 < count || final_terminator {
                    text.push_str(end);
                }
            }
            text.into_bytes()
        })
}

/// Scans `data` at `chunk_size` with COUNT(*) and with `SELECT a, b` to JSON Lines, and compares
/// both with the `csv` crate's sequential parse.
async fn check_random_csv(
    bucket: &Bucket,
    key: &str,
    data: &[u8],
    chunk_size: u64,
) -> Result<(), String> {
    let what = format!(
        "{key} at chunk size {chunk_size}: {:?}",
        String::from_utf8_lossy(data)
    );
    bucket.put(key, data.to_vec()).await;
    let (headers, records) = csv_records(data);
    let layout = plan(bucket, key, CSV, chunk_size)
        .await
        .map_err(|e| format!("{what}: plan: {e}"))?;
    if layout.columns != headers {
        return Err(format!(
            "{what}: header {:?} != {headers:?}",
            layout.columns
        ));
    }
    let summary = run(bucket, &layout, "SELECT COUNT(*) AS n FROM S3Object", None)
        .await
        .map_err(|e| format!("{what}: COUNT(*): {e}"))?;
    let count = records.len() as u64;
    if summary.result.get("n").and_then(Json::as_u64) != Some(count) || summary.records != count {
        return Err(format!("{what}: COUNT(*) {summary:?}, expected {count}"));
    }
    let output = Output {
        bucket: bucket.name.clone(),
        prefix: format!("{key}-out/"),
        format: OutputFormat::JsonLines,
        scope: String::new(),
        first_part: None,
    };
    let summary = run(
        bucket,
        &layout,
        "SELECT a, b FROM S3Object",
        Some(output.clone()),
    )
    .await
    .map_err(|e| format!("{what}: SELECT a, b: {e}"))?;
    let mut rows: Vec<Row> = Vec::new();
    let manifest: Json =
        serde_json::from_slice(&bucket.get(&format!("{}manifest.json", output.prefix)).await)
            .unwrap();
    for chunk in manifest["chunks"].as_array().unwrap() {
        if let Some(part) = chunk["part"].as_str() {
            let body = bucket.get(part).await;
            for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let object: Map<String, Json> = serde_json::from_slice(line).unwrap();
                rows.push(
                    ["a", "b"]
                        .iter()
                        .map(|k| object[*k].as_str().map(str::to_string))
                        .collect(),
                );
            }
        }
    }
    let expected: Vec<Row> = records
        .iter()
        .map(|r| (0..2).map(|i| r.get(i).map(str::to_string)).collect())
        .collect();
    if rows != expected || summary.rows != count {
        return Err(format!(
            "{what}: rows {rows:?} ({} reported), expected {expected:?}",
            summary.rows
        ));
    }
    Ok(())
}

/// Random well-formed CSV (quoted fields with delimiters, doubled quotes and newlines, literal
/// quotes, mixed terminators and blank lines, BOMs) at a random chunk size of 1 to 49 bytes has
/// the records, in order and with the same fields, that the `csv` crate reads sequentially.
#[test]
#[ignore = "needs tests/cluster/up.sh"]
fn random_csv_matches_a_sequential_parse_at_random_chunk_sizes() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bucket = runtime.block_on(async { Bucket::create(&common::env().await, "scanprop").await });
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 24,
        // Every case talks to MinIO: shrink a little, not for minutes.
        max_shrink_iters: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let case = std::sync::atomic::AtomicU32::new(0);
    let result = runner.run(&(random_csv(), 1u64..50), |(data, chunk_size)| {
        let key = format!(
            "random/{}.csv",
            case.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        runtime
            .block_on(check_random_csv(&bucket, &key, &data, chunk_size))
            .map_err(TestCaseError::fail)
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// A chunk that starts right after a newline inside a quoted field guesses "record start"; its
/// speculative first record (`b"`) is not a number, which must not fail the scan: the verifier
/// rejects the guess and runs the chunk again from its true state. SUM(fare) is 1 at any size.
#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn a_wrong_start_state_guess_never_fails_a_valid_csv() {
    let bucket = Bucket::create(&common::env().await, "scan").await;
    let key = "newline-in-quotes.csv";
    // Bytes 10-17 hold the record `1,"a\nb"\n`; chunk 1 of 5-byte chunks starts at `b` (15).
    bucket.put(key, b"fare,note\n1,\"a\nb\"\n".to_vec()).await;
    for chunk_size in [1000, 5, 1] {
        let layout = plan(&bucket, key, CSV, chunk_size).await.unwrap();
        let summary = run(&bucket, &layout, "SELECT SUM(fare) FROM S3Object", None)
            .await
            .unwrap_or_else(|e| panic!("{key} at chunk size {chunk_size}: {e}"));
        assert_eq!(
            summary.result.get("SUM(fare)"),
            Some(&Json::from(1)),
            "{key} at chunk size {chunk_size}"
        );
    }
}

/// Records may have any number of fields (like the `csv` crate's flexible reader), and
/// `SELECT *` to CSV output writes them as they are, not failing on a record of another length
/// than the header row.
#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn select_star_to_csv_keeps_ragged_records() {
    let bucket = Bucket::create(&common::env().await, "scan").await;
    let key = "ragged.csv";
    bucket.put(key, b"a,b\n1,2\n3\n".to_vec()).await;
    let layout = plan(&bucket, key, CSV, 1000).await.unwrap();
    let output = Output {
        bucket: bucket.name.clone(),
        prefix: "ragged/".into(),
        format: OutputFormat::Csv,
        scope: String::new(),
        first_part: None,
    };
    let summary = run(
        &bucket,
        &layout,
        "SELECT * FROM S3Object",
        Some(output.clone()),
    )
    .await
    .unwrap_or_else(|e| panic!("{key}: {} {e}", e.reason()));
    assert_eq!(summary.rows, 2, "{key}");
    assert_eq!(
        bucket.get(&output.part_key(0)).await,
        b"a,b\n1,2\n3\n",
        "{key}: the records as they are"
    );
}
