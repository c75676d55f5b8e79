//! Checking chunks' guessed start states and merging their results, in chunk order.

use super::ScanError;
use super::chunk::ChunkReport;
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

/// What to do with a chunk's report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// The chunk guessed wrong: run it again from this state.
    RunFrom(State),
    /// The chunk ran from its true start and met a record the query cannot process.
    BadData,
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

    /// Checks the report of chunk `next` and, when it holds, merges it and moves on.
    pub fn offer(&mut self, report: &ChunkReport) -> Verdict {
        assert_eq!(
            report.index, self.next,
            "reports are offered in chunk order"
        );
        let first = |state: State| report.split.first_record[state as usize];
        if first(report.assumed) != first(self.state) {
            return Verdict::RunFrom(self.state);
        }
        if report.bad_record.is_some() {
            return Verdict::BadData;
        }
        if first(self.state).is_some() {
            self.last_with_record = Some(report.index);
        }
        self.state = report.split.end[self.state as usize];
        self.records += report.records;
        self.bytes += report.bytes;
        self.rows += report.rows;
        for (merged, partial) in self.partials.iter_mut().zip(&report.partials) {
            merged.merge(partial);
        }
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
