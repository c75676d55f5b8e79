//! The chunk parse path end to end: every record once at every chunk size and every way the
//! bytes arrive, fields as the csv crate reads them, JSON fields as serde_json reads them.

use super::*;
use crate::scan::InputFormat;
use crate::scan::plan::Layout;
use crate::scan::sql::{Columns, Query, Record};
use crate::scan::text::extract::{Bounds, CountExtractor};
use crate::scan::text::json::Scratch;
use crate::scan::text::json::fields::{find_scalar_fields, parse_json_fields};
use crate::scan::text::record::{JsonFields, JsonRecord};
use crate::scan::text::split::{Machine, State};
use crate::scan::value::{Partial, Value};
use crate::scan::verify::{Verdict, Verifier};
use proptest::prelude::*;
use std::io::Read;

/// Reads `data` in pieces of pseudo-random sizes up to `largest`, as network frames arrive.
struct Frames {
    data: Vec<u8>,
    at: usize,
    seed: u64,
    largest: u64,
}

impl Read for Frames {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let n = (1 + self.seed % self.largest) as usize;
        let n = n.min(buf.len()).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A CSV object of `data` (its first line the header row) in chunks of `chunk_size`.
pub(crate) fn layout(data: &[u8], chunk_size: u64, columns: &[&str]) -> Layout {
    let header_end = data.iter().position(|&b| b == b'\n').unwrap() as u64 + 1;
    Layout {
        object: crate::scan::ObjectVersion {
            bucket: "b".into(),
            key: "k".into(),
            size: data.len() as u64,
            etag: "e".into(),
            modified: None,
        },
        format: InputFormat::Csv {
            delimiter: b',',
            quote: b'"',
            header: true,
        },
        columns: columns.iter().map(|c| c.to_string()).collect(),
        data_start: header_end,
        chunk_size,
        compression: crate::scan::Compression::None,
        max_record_size: super::super::plan::DEFAULT_MAX_RECORD_SIZE,
        parquet: None,
        joined: Default::default(),
        plan: None,
        prefetched: Default::default(),
    }
}

fn task(layout: &Layout, index: u32, state: Option<State>) -> ChunkTask {
    ChunkTask {
        layout: layout.clone(),
        index,
        start_state: state,
        work: Work::Query {
            sql: String::new(),
            output: None,
        },
        run: "test".into(),
        keep_rows: None,
    }
}

fn run(
    layout: &Layout,
    query: &Query,
    index: u32,
    state: Option<State>,
    (seed, largest): (u64, u64),
) -> ChunkReport {
    let task = task(layout, index, state);
    let (start, _) = layout.range(index);
    let from = start - u64::from(start > layout.data_start);
    let source = Frames {
        data: DATA.with(|d| d.borrow()[from as usize..].to_vec()),
        at: 0,
        seed: seed | 1,
        largest,
    };
    let source = std::io::BufReader::new(source);
    parse_chunk(&task, Some(query), source, None, &AtomicU64::new(0)).unwrap()
}

thread_local! {
    static DATA: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// CSV records with quotes in every role: doubled, around delimiters and terminators, literal
/// inside unquoted fields and after closing quotes, and quoted fields longer than a window.
fn quotes_in_every_role() -> Vec<u8> {
    let mut data = Vec::new();
    let long = format!("\"{}\"", "a line,\r\n".repeat(12));
    let fields = [
        "\"\"",
        "\"\"\"\"",
        "\"a\"\"b\"",
        "\"x\"y\"z",
        "\"a\" \"b\"",
        "q\"",
        "\"\n\"",
        "\"\r\n,\"",
        "\"\"\"x\"\"\"",
        "\"x\"\",\r\n\"\"\"",
        "",
        "plain",
        long.as_str(),
    ];
    let mut seed = 12345u64;
    for i in 0..600 {
        let mut record = String::new();
        for field in 0..1 + i % 3 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if field > 0 {
                record.push(',');
            }
            record.push_str(fields[(seed >> 33) as usize % fields.len()]);
        }
        record.push_str(["\n", "\r\n", "\r", "\n\n"][(seed >> 40) as usize % 4]);
        data.extend_from_slice(record.as_bytes());
    }
    data
}

/// The counting extractor alone, over the whole input at once so that its 64-byte windows run, at
/// every alignment of the windows to the records (blank lines in front shift them; the first
/// record puts a doubled quote across the first windows' end).
#[test]
fn counting_windows_count_as_the_csv_crate_at_every_alignment() {
    let mut records = b"\"x\"\",\r\n\"\"\"\n".to_vec();
    records.extend(quotes_in_every_role());
    let want = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(records.as_slice())
        .records()
        .count() as u64;
    for shift in 0..64 {
        let mut data = vec![b'\n'; shift];
        data.extend_from_slice(&records);
        let dialect = InputFormat::Csv {
            delimiter: b',',
            quote: b'"',
            header: false,
        }
        .dialect();
        let end = data.len() as u64;
        let bounds = Bounds {
            end,
            max_record: u64::MAX,
        };
        let mut extractor = CountExtractor::new(Machine::new(dialect), b',', b'"', 0, bounds);
        extractor.feed(&data);
        extractor.finish();
        assert_eq!(extractor.records, want, "shifted by {shift}");
    }
}

#[test]
fn chunks_count_every_record_once_whatever_the_frames() {
    let mut data = b"a,b\n".to_vec();
    for i in 0..300 {
        let field = ["x", "\"q,\n\"\"\"", "", "5'10\"", "\"\r\n\""][i % 5];
        data.extend_from_slice(format!("{i},{field}{}", ["\n", "\r\n", "\r"][i % 3]).as_bytes());
    }
    // Stretches without quotes, with blank lines, for the counting windows.
    for i in 0..300 {
        let terminator = ["\n", "\r\n", "\r", "\n\n", "\r\n\r\n"][i % 5];
        data.extend_from_slice(format!("{i},y{terminator}").as_bytes());
    }
    data.extend_from_slice(&quotes_in_every_role());
    let want = csv::ReaderBuilder::new()
        .from_reader(data.as_slice())
        .records()
        .count() as u64;
    DATA.with(|d| *d.borrow_mut() = data.clone());
    // Counting alone runs the record machine; with a column, csv-core reads the fields.
    let columns = Columns::Positional(vec!["a".into(), "b".into()]);
    for sql in [
        "SELECT COUNT(*) FROM S3Object",
        "SELECT COUNT(*), COUNT(a) FROM S3Object",
    ] {
        let query = crate::scan::sql::compile(sql, &columns).unwrap();
        for chunk_size in [1, 2, 5, 17, 64, 500, 10_000] {
            for (seed, largest) in [(1, 37), (7, 37), (99, 37), (5, 4096), (11, 300)] {
                let layout = layout(&data, chunk_size, &["a", "b"]);
                let verifier = scan_all(&layout, &query, (seed, largest));
                assert_eq!(
                    verifier.records, want,
                    "{sql}: chunk size {chunk_size}, seed {seed}"
                );
                assert_eq!(verifier.partials[0], Partial::Count(want), "{sql}");
            }
        }
    }
}

/// Runs every chunk (again from its true start state after a wrong guess) and checks the
/// coverage.
fn scan_all(layout: &Layout, query: &Query, frames: (u64, u64)) -> Verifier {
    let mut verifier = Verifier::new(query.empty_partials());
    for index in 0..layout.chunk_count() {
        let chunk_frames = (frames.0 + index as u64, frames.1);
        let report = run(layout, query, index, None, chunk_frames);
        match verifier.offer(&report, &task(layout, index, None)) {
            Verdict::Accepted => {}
            Verdict::RunFrom(state) => {
                let report = run(layout, query, index, Some(state), chunk_frames);
                let task = task(layout, index, Some(state));
                assert!(matches!(verifier.offer(&report, &task), Verdict::Accepted));
            }
            Verdict::Failed(e) => panic!("chunk {index}: {e}"),
        }
    }
    verifier.finish(layout).unwrap();
    verifier
}

struct Fields(csv::StringRecord);

impl Record for Fields {
    fn field(&self, index: usize) -> Result<Value<'_>, String> {
        Ok(self
            .0
            .get(index)
            .map_or(Value::Null, |f| Value::Str(f.into())))
    }
    fn path(&self, _: &[String]) -> Value<'_> {
        Value::Null
    }
}

/// Records short and long (past the 64 bytes the field masks see), with quoted fields before,
/// among and after the fields read, literal quotes in unquoted fields, and few and many fields:
/// every query's result equals the one over the csv crate's records.
#[test]
fn fields_read_are_the_csv_crate_fields_whatever_the_frames() {
    let mut data = b"a,b,c,d\n".to_vec();
    for i in 0..400 {
        let long = "long ".repeat(i % 20);
        let b = ["x", "\"q,\n\"\"\"", "", "5'10\"", &long][i % 5];
        let c = ["1.25", "\"2.5\"", "-0.75", "", "3"][i % 7 % 5];
        let d = ["", "\"d,\r\nd\"", "d", "\"\"", "dd"][i % 3];
        let row = match i % 11 {
            0 => format!("{i}"),
            1 => format!("{i},{b}"),
            _ => format!("{i},{b},{c},{d}"),
        };
        data.extend_from_slice(format!("{row}{}", ["\n", "\r\n", "\r"][i % 3]).as_bytes());
    }
    let records: Vec<Fields> = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(data.as_slice())
        .records()
        .map(|r| Fields(r.unwrap()))
        .collect();
    DATA.with(|d| *d.borrow_mut() = data.clone());
    let columns = Columns::Positional(["a", "b", "c", "d"].map(String::from).to_vec());
    for sql in [
        "SELECT SUM(a), MAX(b), COUNT(b) FROM S3Object",
        "SELECT MIN(c), MAX(c), SUM(c), COUNT(d), MAX(d) FROM S3Object",
        "SELECT COUNT(*), SUM(a) FROM S3Object WHERE CAST(c AS FLOAT) > 1",
        "SELECT COUNT(*), MAX(b) FROM S3Object WHERE d = 'd' OR c IS NULL",
    ] {
        let query = crate::scan::sql::compile(sql, &columns).unwrap();
        let mut evaluator = query.evaluator();
        records.iter().for_each(|r| {
            evaluator.record(r).unwrap();
        });
        let want = query.result(&evaluator.partials, 0);
        for (chunk_size, largest) in [(7, 37), (100, 37), (64, 4096), (1000, 700), (100_000, 4096)]
        {
            let layout = layout(&data, chunk_size, &["a", "b", "c", "d"]);
            let verifier = scan_all(&layout, &query, (chunk_size, largest));
            assert_eq!(verifier.records, records.len() as u64, "{sql}");
            assert_eq!(
                query.result(&verifier.partials, 0),
                want,
                "{sql}: chunk size {chunk_size}, frames up to {largest}"
            );
        }
    }
}

/// Reads `names` from `line` as a query does: by spans when [`find_scalar_fields`] takes the
/// line (`Some`), else through serde_json (`None`, and its verdict).
fn read_fields(
    line: &[u8],
    names: &[String],
) -> (
    Option<Vec<Value<'static>>>,
    Result<Vec<Value<'static>>, String>,
) {
    let read = |record: &JsonRecord| -> Vec<Value<'static>> {
        names
            .iter()
            .map(|name| match record.path(std::slice::from_ref(name)) {
                Value::Str(text) => Value::Str(text.into_owned().into()),
                Value::Null => Value::Null,
                Value::Bool(b) => Value::Bool(b),
                Value::Int(i) => Value::Int(i),
                Value::Float(f) => Value::Float(f),
            })
            .collect()
    };
    let mut scalars = vec![None; names.len()];
    let fast = find_scalar_fields(line, names, &mut scalars, &mut Scratch::default()).then(|| {
        read(&JsonRecord {
            names,
            fields: JsonFields::Scalars {
                text: line,
                scalars: &scalars,
            },
        })
    });
    let mut values = vec![None; names.len()];
    let parsed = parse_json_fields(line, names, &mut values).map(|()| {
        read(&JsonRecord {
            names,
            fields: JsonFields::Parsed(&values),
        })
    });
    (fast, parsed)
}

/// Values equal as serde_json reads them, the sign of a zero included.
fn same_values(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| match (a, b) {
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
            _ => a == b,
        })
}

#[test]
fn scalar_fields_are_read_as_serde_json_reads_them() {
    let names = ["fare", "note", "id", "missing"].map(String::from);
    let taken: &[&str] = &[
        r#"{"id": 0, "vendor": "CMT", "distance": 0.85, "fare": 29.31, "note": "airport"}"#,
        r#"{"vendor": "a \"quote\" in a field not read", "fare": -0, "id": -0.0}"#,
        r#"{"fare": 123456789012345, "id": -0.12345678901234, "note": "é"}"#,
        r#"{"fare": 0, "id": true, "note": false, "other": 1e400}"#,
        r#"{"fare": 1, "fare": 2.5, "nested": {"fare": 3}, "ids": [1, {"id": 2}]}"#,
        r#"{}"#,
    ];
    for line in taken {
        let (fast, parsed) = read_fields(line.as_bytes(), &names);
        let fast = fast.unwrap_or_else(|| panic!("not taken: {line}"));
        assert!(same_values(&fast, &parsed.unwrap()), "{line}");
    }
    let left: &[&[u8]] = &[
        br#"{"fare": "2\u0035"}"#,
        br#"{"fare": 1e2}"#,
        br#"{"fare": 1234567890123456}"#,
        br#"{"fare": 1e400}"#,
        br#"{"fare": {"value": 1}}"#,
        br#"{"id": [1]}"#,
        br#"{"f\u0061re": 1}"#,
        br#"{"f\u0061re_not_read": 1}"#,
        b"{\"note\": \"\xff\"}",
        b"{\"\xff\": 1}",
        br#"[{"fare": 1}]"#,
        br#"{"fare": 1,}"#,
        br#"{"fare": 1} 2"#,
    ];
    for line in left {
        let (fast, _) = read_fields(line, &names);
        assert!(fast.is_none(), "{}", String::from_utf8_lossy(line));
    }
}

/// Objects with members named or not, escaped or not, with scalar or nested values, with
/// a few bytes edited.
fn json_objects() -> impl Strategy<Value = Vec<u8>> {
    let key = prop::sample::select(vec![
        "fare",
        "note",
        "id",
        "other",
        "f\\u0061re",
        "n\\\"ote",
    ]);
    let value = prop_oneof![
        crate::scan::text::json::tests::literals_and_numbers(),
        "\"([a-z é\u{7f}]|\\\\[\"\\\\nu]|\\\\u00[0-9a-f]{2}){0,12}\"",
        "\\{\"(fare|x)\": [0-9]\\}",
        "\\[[0-9], \"[a-z]\"\\]",
    ];
    let object = prop::collection::vec((key, value), 0..6).prop_map(|members| {
        let members: Vec<String> = members
            .iter()
            .map(|(k, v)| format!("\"{k}\": {v}"))
            .collect();
        format!("{{{}}}", members.join(", ")).into_bytes()
    });
    let edit = (
        any::<prop::sample::Index>(),
        prop::sample::select(b"\"\\,:{}[]0.-e \xff".to_vec()),
    );
    (object, prop::collection::vec(edit, 0..2)).prop_map(|(mut text, edits)| {
        for (at, byte) in edits {
            let at = at.index(text.len());
            text[at] = byte;
        }
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]
    #[test]
    fn scalar_fields_read_as_serde_json_whatever_the_object(line in json_objects()) {
        let names = ["fare", "note", "id"].map(String::from);
        let (fast, parsed) = read_fields(&line, &names);
        if let Some(fast) = fast {
            let parsed = parsed.map_err(TestCaseError::fail)?;
            prop_assert!(same_values(&fast, &parsed), "{:?} vs {:?}", fast, parsed);
        }
    }
}
