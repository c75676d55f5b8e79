//! Checking chunk reports against their tasks and merging them, in chunk order.
//!
//! Reports are untrusted: a chunk runs whatever image its scan names, and a report can also come
//! from an object in the tenant's own bucket. A report is merged only when it answers the task the
//! controller gave (index, byte range, query and format, start state, kinds of partials), and the
//! merge itself refuses overflows, so no report can crash or corrupt the reconciler.

use super::ScanError;
use super::chunk::{ChunkReport, ChunkTask, Work};
use super::plan::Layout;
use super::split::{State, is_complete_end};
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
    pub records: u64,
    pub bytes: u64,
    pub rows: u64,
    pub partials: Vec<Partial>,
}

/// What to do with a chunk's report: the same for the CLI's local run and the controller.
#[derive(Debug)]
pub enum Verdict {
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
    let end = end.min(layout.size);
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
    let length = end.saturating_sub(start);
    if !layout.gzip && report.bytes != length {
        return Err(format!(
            "the report read {} bytes of a {length}-byte chunk",
            report.bytes
        ));
    }
    if !layout.gzip
        && report
            .split
            .first_record
            .iter()
            .flatten()
            .any(|&at| at > length)
    {
        return Err("the report places a record start outside the chunk".into());
    }
    if report.rows > report.records {
        return Err(format!(
            "the report has {} rows from {} records",
            report.rows, report.records
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
    if let Some(bad) = &report.bad_record
        && !layout.gzip
        && !(start..end.max(start + 1)).contains(&bad.offset)
    {
        return Err(format!(
            "the report's bad record at byte {} is outside the chunk",
            bad.offset
        ));
    }
    Ok(())
}

impl Verifier {
    pub fn new(empty_partials: Vec<Partial>) -> Verifier {
        Verifier {
            next: 0,
            state: State::RecordEnd,
            last_with_record: None,
            records: 0,
            bytes: 0,
            rows: 0,
            partials: empty_partials,
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
        let (Some(records), Some(bytes), Some(rows)) = (
            self.records.checked_add(report.records),
            self.bytes.checked_add(report.bytes),
            self.rows.checked_add(report.rows),
        ) else {
            return invalid("the report's counts overflow the scan's totals".into());
        };
        if first(self.state).is_some() {
            self.last_with_record = Some(report.index);
        }
        self.state = report.split.end[self.state as usize];
        (self.records, self.bytes, self.rows) = (records, bytes, rows);
        self.partials = partials;
        self.next += 1;
        Verdict::Accepted
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
