//! Checking chunk reports against their tasks and merging them, in chunk order.
//!
//! Reports are untrusted: a chunk runs whatever image its scan names, and a report can also come
//! from an object in the tenant's own bucket. A report is merged only when it answers the task the
//! controller gave (index, byte range, query and format, start state, kinds of partials), and the
//! merge itself refuses overflows, so no report can crash or corrupt the reconciler.

use super::ScanError;
use super::chunk::{ChunkReport, ChunkTask, Work};
use super::plan::Layout;
use super::sql::Query;
use super::text::split::{State, is_complete_end};
use super::value::Partial;

/// Accepts chunk reports in index order: a report counts only when the chunk ran from its true
/// start state (or one that finds the same first record), which the previous chunks' mappings
/// determine.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verifier {
    /// Next chunk to accept.
    pub next: u32,
    /// True start state of chunk `next`.
    pub state: State,
    /// The last accepted chunk in which a record starts (for naming an unterminated record).
    pub last_with_record: Option<u32>,
    /// Records of the chunks accepted so far.
    pub records: u64,
    /// Bytes of those chunks read.
    pub bytes: u64,
    /// Rows those chunks selected, before the LIMIT cuts any.
    pub rows: u64,
    /// The aggregates' partials merged over those chunks.
    pub partials: Vec<Partial>,
    /// Parquet: row groups skipped by their statistics, their bytes, and the bytes fetched.
    #[serde(default, skip_serializing_if = "RowGroupTotals::is_empty")]
    pub row_groups: RowGroupTotals,
    /// A scan of many objects: the objects those chunks began reading.
    #[serde(default)]
    pub objects: u64,
    /// A scan of many objects: the objects those chunks left out, changed since listed.
    #[serde(default)]
    pub skipped: u64,
}

/// Totals of Parquet chunks' [`crate::scan::RowGroupsRead`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RowGroupTotals {
    /// Row groups skipped by their statistics.
    pub skipped: u64,
    /// Bytes of those row groups.
    pub skipped_bytes: u64,
    /// Bytes fetched from S3.
    pub fetched_bytes: u64,
}

impl RowGroupTotals {
    fn is_empty(&self) -> bool {
        *self == RowGroupTotals::default()
    }

    /// These totals with one more chunk's; `None` on overflow.
    fn add(&self, read: &crate::scan::RowGroupsRead) -> Option<RowGroupTotals> {
        Some(RowGroupTotals {
            skipped: self.skipped.checked_add(u64::from(read.skipped))?,
            skipped_bytes: self.skipped_bytes.checked_add(read.skipped_bytes)?,
            fetched_bytes: self.fetched_bytes.checked_add(read.fetched_bytes)?,
        })
    }
}

/// What to do with a chunk's report: the same for the CLI's local run and the controller.
#[derive(Debug)]
pub enum Verdict {
    /// The report is merged: the next chunk is due.
    Accepted,
    /// The chunk guessed wrong: run it again from this state.
    RunFrom(State),
    /// The chunk fails the scan: it ran from its true start and met a record the query cannot
    /// process (BadData), or its report does not answer its task (InvalidReport).
    Failed(ScanError),
}

/// Why a report does not answer `task`, if it does not. Pure: the controller and the CLI check
/// every report with it before anything of it is used.
pub fn check_report(report: &ChunkReport, task: &ChunkTask) -> Result<(), String> {
    let layout = &task.layout;
    let (start, end) = layout.range(task.index);
    let end = end.min(layout.object.size);
    if report.index != task.index {
        return Err(format!(
            "the report is of chunk {}, not chunk {}",
            report.index, task.index
        ));
    }
    if report.range != [start, end] {
        return Err(format!(
            "the report covers bytes {}-{}, the chunk is bytes {start}-{end}",
            report.range[0], report.range[1]
        ));
    }
    if report.fingerprint != task.fingerprint() {
        return Err("the report is of another query, format or object version".into());
    }
    if let Some(state) = task.start_state
        && report.assumed != state
    {
        return Err(format!(
            "the chunk was to run from state {}, the report ran from {}",
            state.code(),
            report.assumed.code()
        ));
    }
    // A chunk of many objects reads pieces of several: the worker checked each against its
    // object; what the controller checks is that the report answers this task.
    if layout.plan.is_some() {
        return check_counts(report, task);
    }
    check_row_groups(report, task)?;
    let length = end.saturating_sub(start);
    if !layout.whole_stream() && layout.parquet.is_none() && report.bytes != length {
        return Err(format!(
            "the report read {} bytes of a {length}-byte chunk",
            report.bytes
        ));
    }
    if !layout.whole_stream()
        && report
            .split
            .first_record
            .iter()
            .flatten()
            .any(|&at| at > length)
    {
        return Err("the report places a record start outside the chunk".into());
    }
    check_counts(report, task)?;
    if let Some(bad) = &report.bad_record
        && !layout.whole_stream()
        && !(start..end.max(start + 1)).contains(&bad.offset)
    {
        return Err(format!(
            "the report's bad record at byte {} is outside the chunk",
            bad.offset
        ));
    }
    Ok(())
}

/// What every report must hold to: rows from its records, the rows its task keeps, its part.
fn check_counts(report: &ChunkReport, task: &ChunkTask) -> Result<(), String> {
    if report.rows > report.records {
        return Err(format!(
            "the report has {} rows from {} records",
            report.rows, report.records
        ));
    }
    if !report.pieces.is_empty() {
        let (records, rows) = report
            .pieces
            .iter()
            .flatten()
            .fold((0u64, 0u64), |(r, w), p| {
                (r.saturating_add(p.records), w.saturating_add(p.rows))
            });
        if (records, rows) != (report.records, report.rows) {
            return Err(format!(
                "its pieces add up to {records} records and {rows} rows, the report has {} and {}",
                report.records, report.rows
            ));
        }
    }
    if let Some(keep) = task.keep_rows
        && report.rows != keep
    {
        return Err(format!(
            "the chunk was to keep its first {keep} rows, the report has {}",
            report.rows
        ));
    }
    let part = match &task.work {
        Work::Query {
            output: Some(output),
            ..
        } => Some(output.part_key(task.index)),
        _ => None,
    };
    if report.part.is_some() && report.part != part {
        return Err("the report names an output part that is not its chunk's".into());
    }
    Ok(())
}

/// A Parquet chunk reports exactly its row groups, and skips no more of them than it has.
fn check_row_groups(report: &ChunkReport, task: &ChunkTask) -> Result<(), String> {
    let planned = task.layout.parquet.as_ref();
    match (
        planned.and_then(|p| p.row_groups(task.index)),
        &report.row_groups,
    ) {
        (None, None) if planned.is_none() => Ok(()),
        (Some(groups), Some(read)) => {
            if (read.first, read.end) != (groups.start, groups.end) {
                return Err(format!(
                    "the report covers row groups {}-{}, the chunk is row groups {}-{}",
                    read.first, read.end, groups.start, groups.end
                ));
            }
            if read.skipped > groups.end - groups.start {
                return Err(format!(
                    "the report skips {} of {} row groups",
                    read.skipped,
                    groups.end - groups.start
                ));
            }
            Ok(())
        }
        _ => Err("the report's row groups do not match the object's".into()),
    }
}

impl Verifier {
    /// A verifier waiting for chunk 0, with the query's partials before any record.
    pub fn new(empty_partials: Vec<Partial>) -> Verifier {
        Verifier {
            next: 0,
            state: State::RecordEnd,
            last_with_record: None,
            records: 0,
            bytes: 0,
            rows: 0,
            partials: empty_partials,
            row_groups: RowGroupTotals::default(),
            objects: 0,
            skipped: 0,
        }
    }

    /// Checks the report of chunk `next` against `task` (what it was asked to do) and, when it
    /// holds and the chunk ran from its true start, merges it and moves on. Nothing changes unless
    /// the report is accepted.
    pub fn offer(&mut self, report: &ChunkReport, task: &ChunkTask) -> Verdict {
        let invalid = |message: String| {
            Verdict::Failed(ScanError::InvalidReport {
                chunk: task.index,
                message,
            })
        };
        if task.index != self.next {
            return invalid(format!(
                "chunk {} was offered while chunk {} is next",
                task.index, self.next
            ));
        }
        if let Err(why) = check_report(report, task) {
            return invalid(why);
        }
        // A chunk of many objects that starts an object starts from a record's end: the object
        // the chunk before ended must end between records. Whether it goes on with that object
        // instead, its report says (from its piece), as it says its records.
        if task.layout.plan.is_some() && !report.continues {
            if let Err(error) = self.finish(&task.layout) {
                return Verdict::Failed(error);
            }
            self.state = State::RecordEnd;
        }
        if report.partials.len() != self.partials.len() {
            return invalid(format!(
                "the report has {} aggregates, the query {}",
                report.partials.len(),
                self.partials.len()
            ));
        }
        let first = |state: State| report.split.first_record[state as usize];
        if first(report.assumed) != first(self.state) {
            return Verdict::RunFrom(self.state);
        }
        if report.bad_record.is_some() {
            return match report.bad_data(&task.layout) {
                Some(error) => Verdict::Failed(error),
                None => invalid("a bad record without a record".into()),
            };
        }
        let mut partials = self.partials.clone();
        for (merged, partial) in partials.iter_mut().zip(&report.partials) {
            if let Err(e) = merged.merge(partial) {
                return invalid(e.to_string());
            }
        }
        let (Some(records), Some(bytes), Some(rows), Some(objects), Some(skipped)) = (
            self.records.checked_add(report.records),
            self.bytes.checked_add(report.bytes),
            self.rows.checked_add(report.rows),
            self.objects.checked_add(report.objects),
            self.skipped.checked_add(report.skipped.count),
        ) else {
            return invalid("the report's counts overflow the scan's totals".into());
        };
        let row_groups = match &report.row_groups {
            Some(read) => match self.row_groups.add(read) {
                Some(totals) => totals,
                None => return invalid("the report's counts overflow the scan's totals".into()),
            },
            None => self.row_groups.clone(),
        };
        if first(self.state).is_some() {
            self.last_with_record = Some(report.index);
        }
        self.state = report.split.end[self.state as usize];
        (self.records, self.bytes, self.rows) = (records, bytes, rows);
        (self.objects, self.skipped) = (objects, skipped);
        self.row_groups = row_groups;
        self.partials = partials;
        self.next += 1;
        Verdict::Accepted
    }

    /// Adds the totals of another object's verifier, all of whose chunks were accepted (a scan
    /// of many objects merges them in key order).
    pub fn absorb(&mut self, object: &Verifier) -> Result<(), ScanError> {
        let sum = |a: u64, b: u64| {
            a.checked_add(b)
                .ok_or_else(|| ScanError::InvalidScan("the scan's counts overflow".into()))
        };
        for (merged, partial) in self.partials.iter_mut().zip(&object.partials) {
            merged
                .merge(partial)
                .map_err(|e| ScanError::InvalidScan(e.to_string()))?;
        }
        self.records = sum(self.records, object.records)?;
        self.bytes = sum(self.bytes, object.bytes)?;
        self.rows = sum(self.rows, object.rows)?;
        let (mine, theirs) = (&self.row_groups, &object.row_groups);
        self.row_groups = RowGroupTotals {
            skipped: sum(mine.skipped, theirs.skipped)?,
            skipped_bytes: sum(mine.skipped_bytes, theirs.skipped_bytes)?,
            fetched_bytes: sum(mine.fetched_bytes, theirs.fetched_bytes)?,
        };
        Ok(())
    }

    /// The query's rows (cut to its LIMIT) and result over the chunks accepted so far.
    pub fn result(&self, query: &Query) -> (u64, serde_json::Map<String, serde_json::Value>) {
        let rows = query.limit.map_or(self.rows, |limit| self.rows.min(limit));
        (rows, query.result(&self.partials, rows))
    }

    /// After the last chunk: an object that ends inside a quoted field is malformed.
    pub fn finish(&self, layout: &Layout) -> Result<(), ScanError> {
        if is_complete_end(self.state) {
            return Ok(());
        }
        let chunk = self.last_with_record.unwrap_or(0);
        let (start, end) = layout.range(chunk);
        Err(ScanError::MalformedRecord {
            chunk,
            start,
            end,
            message: "the last record starting in this chunk never closes its quoted field".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::chunk::{BadRecord, Work};
    use crate::scan::text::split::{ChunkSplit, STATES};
    use crate::scan::{InputFormat, Output, OutputFormat};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn task(index: u32) -> ChunkTask {
        ChunkTask {
            layout: Layout {
                object: crate::scan::ObjectVersion {
                    bucket: "b".into(),
                    key: "k.csv".into(),
                    size: 104,
                    etag: "\"e\"".into(),
                    modified: None,
                },
                format: InputFormat::Csv {
                    delimiter: b',',
                    quote: b'"',
                    header: true,
                },
                columns: vec!["a".into(), "b".into()],
                data_start: 4,
                chunk_size: 10,
                compression: crate::scan::Compression::None,
                max_record_size: 1 << 20,
                parquet: None,
                joined: Default::default(),
                plan: None,
                prefetched: Default::default(),
            },
            index,
            start_state: None,
            work: Work::Query {
                sql: "SELECT COUNT(*), SUM(a), MIN(b) FROM S3Object".into(),
                output: Some(Output {
                    bucket: "out".into(),
                    prefix: "run/".into(),
                    format: OutputFormat::Csv,
                    scope: String::new(),
                    first_part: None,
                }),
            },
            run: "uid".into(),
            keep_rows: None,
        }
    }

    fn partials() -> Vec<Partial> {
        let mut sum = crate::scan::value::ExactSum::default();
        sum.add(crate::scan::value::Number::Int(5));
        vec![Partial::Count(2), Partial::Sum(sum), Partial::Min(None)]
    }

    fn genuine(index: u32) -> ChunkReport {
        let task = task(index);
        let (start, end) = task.layout.range(index);
        let mut first_record = [None; STATES];
        first_record[State::RecordEnd as usize] = Some(0);
        ChunkReport {
            index,
            range: [start, end],
            fingerprint: task.fingerprint(),
            assumed: State::RecordEnd,
            split: ChunkSplit {
                end: [State::RecordEnd; STATES],
                first_record,
            },
            records: 2,
            bytes: end - start,
            rows: 0,
            partials: partials(),
            part: Some(format!("run/part-{index:05}.csv")),
            bad_record: None,
            row_groups: None,
            objects: 0,
            skipped: Default::default(),
            pieces: Vec::new(),
            continues: false,
        }
    }

    /// Chunk `index` of a plan of many objects whose chunk 1 continues the object chunk 0 began.
    fn planned(index: u32) -> (ChunkTask, ChunkReport) {
        let mut task = task(index);
        task.layout.plan = Some(crate::scan::objects::segments::ObjectPlan {
            bucket: "b".into(),
            segment_bucket: "b".into(),
            prefix: "plan/".into(),
            segments: vec![],
            chunks: 3,
            objects: 2,
            hive: Default::default(),
            on_object_change: Default::default(),
            max_failed_objects: 0,
        });
        let mut report = genuine(index);
        report.range = [0, 0];
        report.bytes = 7;
        report.fingerprint = task.fingerprint();
        report.continues = index == 1;
        (task, report)
    }

    #[test]
    fn a_chunk_of_many_objects_starts_from_its_object_or_the_chunk_before() {
        let mut verifier = Verifier::new(partials());
        let (task0, mut report0) = planned(0);
        // Chunk 0 ends inside a quoted field of its object, which chunk 1 goes on with.
        report0.split.end = [State::InQuoted; STATES];
        assert!(matches!(
            verifier.offer(&report0, &task0),
            Verdict::Accepted
        ));
        let (task1, report1) = planned(1);
        assert!(!report1.start_is_certain(&task1));
        // Chunk 1 guessed RecordEnd: it runs again from the state chunk 0 ended in.
        let mut first = [None; STATES];
        first[State::RecordEnd as usize] = Some(0);
        first[State::InQuoted as usize] = Some(3);
        let report1 = ChunkReport {
            split: ChunkSplit {
                end: [State::InQuoted; STATES],
                first_record: first,
            },
            ..report1
        };
        assert!(matches!(
            verifier.offer(&report1, &task1),
            Verdict::RunFrom(State::InQuoted)
        ));
        let rerun = ChunkReport {
            assumed: State::InQuoted,
            ..report1
        };
        assert!(matches!(verifier.offer(&rerun, &task1), Verdict::Accepted));
        // Chunk 2 starts the next object: the one before it never closed its quote.
        let (task2, report2) = planned(2);
        assert!(report2.start_is_certain(&task2));
        match verifier.offer(&report2, &task2) {
            Verdict::Failed(error) => assert_eq!(error.reason(), "MalformedRecord"),
            other => panic!("{other:?}"),
        }
        // Had it ended between records, chunk 2 would start from a record's end.
        let mut verifier = Verifier::new(partials());
        let (_, mut closed) = planned(0);
        closed.split.end = [State::FieldStart; STATES];
        assert!(matches!(verifier.offer(&closed, &task0), Verdict::Accepted));
        verifier.next = 2;
        verifier.state = State::RecordEnd;
        assert!(matches!(
            verifier.offer(&report2, &task2),
            Verdict::Accepted
        ));
        assert_eq!(verifier.state, State::RecordEnd);
    }

    #[test]
    fn a_genuine_report_is_merged() {
        let mut verifier = Verifier::new(partials());
        assert!(matches!(
            verifier.offer(&genuine(0), &task(0)),
            Verdict::Accepted
        ));
        assert!(matches!(
            verifier.offer(&genuine(1), &task(1)),
            Verdict::Accepted
        ));
        assert_eq!((verifier.next, verifier.records), (2, 4));
        // Offered out of turn: refused, nothing changes.
        let before = verifier.clone();
        assert!(matches!(
            verifier.offer(&genuine(5), &task(5)),
            Verdict::Failed(_)
        ));
        assert_eq!(verifier, before);
    }

    #[test]
    fn a_bad_record_outside_the_chunk_is_refused() {
        let mut report = genuine(0);
        report.bad_record = Some(BadRecord {
            offset: 3,
            message: "x".into(),
        });
        assert!(check_report(&report, &task(0)).is_err());
        report.bad_record = Some(BadRecord {
            offset: 4,
            message: "x".into(),
        });
        assert_eq!(check_report(&report, &task(0)), Ok(()));
    }

    /// Chunk `index` of a Parquet object of 10 row groups in chunks starting at 0, 3 and 7.
    fn parquet_task(index: u32) -> ChunkTask {
        let mut task = task(index);
        task.layout.format = InputFormat::Parquet;
        task.layout.parquet = Some(crate::scan::parquet::ParquetLayout {
            metadata_length: 20,
            row_groups: 10,
            rows: 1000,
            chunk_starts: vec![0, 3, 7],
            chunk_windows: vec![0, 1, 2],
            types: vec!["Int64".into(), "Utf8".into()],
            footer: Default::default(),
        });
        task.work = Work::Query {
            sql: "SELECT COUNT(*) FROM S3Object".into(),
            output: None,
        };
        task
    }

    fn parquet_report(index: u32) -> ChunkReport {
        let task = parquet_task(index);
        let groups = task
            .layout
            .parquet
            .as_ref()
            .unwrap()
            .row_groups(index)
            .unwrap();
        ChunkReport {
            fingerprint: task.fingerprint(),
            range: [4, 104 - 8 - 20],
            bytes: 33,
            partials: vec![Partial::Count(100)],
            part: None,
            row_groups: Some(crate::scan::RowGroupsRead {
                first: groups.start,
                end: groups.end,
                skipped: 1,
                skipped_bytes: 10,
                fetched_bytes: 5,
            }),
            ..genuine(index)
        }
    }

    #[test]
    fn parquet_reports_answer_for_exactly_their_row_groups() {
        let mut verifier = Verifier::new(vec![Partial::Count(0)]);
        for index in 0..3 {
            let verdict = verifier.offer(&parquet_report(index), &parquet_task(index));
            assert!(matches!(verdict, Verdict::Accepted), "{verdict:?}");
        }
        assert_eq!(verifier.row_groups.skipped, 3);
        assert_eq!(verifier.row_groups.fetched_bytes, 15);
        assert_eq!(verifier.finish(&parquet_task(0).layout).ok(), Some(()));
        let refused = |change: &dyn Fn(&mut ChunkReport)| {
            let mut report = parquet_report(1);
            change(&mut report);
            check_report(&report, &parquet_task(1)).unwrap_err()
        };
        let read = |first, end, skipped| crate::scan::RowGroupsRead {
            first,
            end,
            skipped,
            ..Default::default()
        };
        assert_eq!(
            refused(&|r| r.row_groups = Some(read(3, 8, 0))),
            "the report covers row groups 3-8, the chunk is row groups 3-7"
        );
        assert_eq!(
            refused(&|r| r.row_groups = Some(read(3, 7, 5))),
            "the report skips 5 of 4 row groups"
        );
        assert_eq!(
            refused(&|r| r.row_groups = None),
            "the report's row groups do not match the object's"
        );
        // A text chunk's report may not claim row groups.
        let mut text = genuine(0);
        text.row_groups = Some(read(0, 1, 0));
        assert!(check_report(&text, &task(0)).is_err());
    }

    /// Any JSON value, to a few levels deep.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            "[a-zA-Z0-9\"\\\\ ]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,8}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Every path to a value inside `value`.
    fn paths(value: &Value, at: Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(at.clone());
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let mut next = at.clone();
                    next.push(key.clone());
                    paths(child, next, out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    let mut next = at.clone();
                    next.push(i.to_string());
                    paths(child, next, out);
                }
            }
            _ => {}
        }
    }

    fn replace(value: &mut Value, path: &[String], new: Value) {
        match path.split_first() {
            None => *value = new,
            Some((first, rest)) => {
                let child = match value {
                    Value::Object(map) => map.get_mut(first),
                    Value::Array(items) => {
                        first.parse::<usize>().ok().and_then(|i| items.get_mut(i))
                    }
                    _ => None,
                };
                if let Some(child) = child {
                    replace(child, rest, new);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any JSON that reads as a report, however it came to be, is judged without a panic; a
        /// report that differs from the genuine one in what the task fixes is never merged.
        #[test]
        fn no_report_panics_the_verifier_and_none_that_mismatches_is_merged(
            pick in any::<prop::sample::Index>(),
            new in json_value(),
        ) {
            let genuine_value = serde_json::to_value(genuine(1)).unwrap();
            let mut all = Vec::new();
            paths(&genuine_value, vec![], &mut all);
            let path = pick.get(&all).clone();
            let mut forged = genuine_value.clone();
            replace(&mut forged, &path, new);
            if let Ok(report) = serde_json::from_value::<ChunkReport>(forged) {
                let mut verifier = Verifier::new(partials());
                prop_assert!(matches!(verifier.offer(&genuine(0), &task(0)), Verdict::Accepted));
                let before = verifier.clone();
                let verdict = verifier.offer(&report, &task(1));
                let fixed = report.index != 1
                    || report.range != genuine(1).range
                    || report.fingerprint != genuine(1).fingerprint
                    || report.bytes != genuine(1).bytes
                    || report.part.as_ref().is_some_and(|p| Some(p) != genuine(1).part.as_ref())
                    || report.partials.len() != 3
                    || report
                        .partials
                        .iter()
                        .zip(partials())
                        .any(|(a, b)| a.kind() != b.kind());
                if fixed {
                    prop_assert!(!matches!(verdict, Verdict::Accepted), "{report:?}");
                }
                if !matches!(verdict, Verdict::Accepted) {
                    prop_assert_eq!(verifier, before, "a refused report changed the verifier");
                }
            }
        }

        /// Partials read from any JSON merge or are refused, never panic, and a refused merge
        /// changes nothing.
        #[test]
        fn any_partials_merge_or_are_refused(
            tag in prop_oneof![Just("count"), Just("sum"), Just("min"), Just("max"), Just("avg")],
            inner in json_value(),
            kind in 0usize..3,
        ) {
            let mut value = serde_json::Map::new();
            value.insert(tag.to_string(), inner);
            if let Ok(partial) = serde_json::from_value::<Partial>(Value::Object(value)) {
                let mut merged = partials()[kind].clone();
                let before = merged.clone();
                if merged.merge(&partial).is_err() {
                    prop_assert_eq!(merged, before);
                }
            }
        }
    }
}
