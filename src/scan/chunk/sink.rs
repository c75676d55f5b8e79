//! Where a chunk's records go: the query (and its row output), or the fetched file; the first bad
//! record is kept for the report, and the report made at the end.

use std::io::Write;

use tokio::sync::mpsc;

use super::rows::{RowBatch, RowWriter, TextFormat, csv_line};
use super::task::{BadRecord, ChunkReport, ChunkTask, Work};
use crate::scan::ScanError;
use crate::scan::sql::{Evaluator, Outcome, Query};
use crate::scan::text::json::fields::{JsonScalar, find_scalar_fields, parse_json_fields};
use crate::scan::text::json::{Scratch, is_json_value};
use crate::scan::text::record::{CsvRecord, JsonFields, JsonRecord};
use crate::scan::text::split::{ChunkSplit, State};

/// Names the chunk in bad-data errors.
#[derive(Clone, Copy)]
pub(crate) struct Blame {
    pub(crate) index: u32,
    pub(crate) range: (u64, u64),
    /// Size of the object.
    pub(crate) size: u64,
}

impl Blame {
    pub(crate) fn at(self, offset: u64, message: String) -> ScanError {
        ScanError::BadData {
            chunk: self.index,
            start: self.range.0,
            end: self.range.1,
            offset,
            message,
        }
    }
}

/// Where a chunk's selected rows go: their encoding, whether a CSV part starts with a header,
/// and the channel to the uploader (or to a local output).
pub(crate) struct RowsTo {
    pub(crate) format: TextFormat,
    pub(crate) header: bool,
    pub(crate) parts: mpsc::Sender<RowBatch>,
}

/// Where a chunk's records go: the query and its row output, or the fetched file.
pub(crate) struct Sink<'q> {
    pub(crate) blame: Blame,
    pub(crate) columns: Vec<String>,
    pub(crate) evaluator: Option<Evaluator<'q>>,
    pub(crate) reads_fields: bool,
    pub(crate) rows: Option<RowWriter>,
    pub(crate) file: Option<std::io::BufWriter<std::fs::File>>,
    pub(crate) records: u64,
    pub(crate) bad_record: Option<BadRecord>,
    /// Top-level JSON fields the query reads, and a record's values of them.
    pub(crate) json_fields: Vec<String>,
    pub(crate) json_scalars: Vec<Option<JsonScalar>>,
    pub(crate) json_values: Vec<Option<serde_json::Value>>,
    /// Scratch for checking JSON Lines records.
    pub(crate) json_scratch: Scratch,
    /// The query only counts records: no field is read, nothing is written.
    pub(crate) counts_only: bool,
    /// How many leading fields of CSV records are read.
    pub(crate) csv_fields: usize,
    /// Longest record read.
    pub(crate) max_record: u64,
    /// The task's fingerprint, for the report.
    pub(crate) fingerprint: String,
}

impl<'q> Sink<'q> {
    pub(crate) fn new(
        task: &ChunkTask,
        query: Option<&'q Query>,
        rows_to: Option<RowsTo>,
    ) -> Result<Sink<'q>, ScanError> {
        let layout = &task.layout;
        let file = match &task.work {
            Work::Fetch { path } => Some(chunk_file(path, &layout.columns)?),
            Work::Query { .. } => None,
        };
        let rows = match (rows_to, query) {
            (Some(to), Some(query)) => Some(RowWriter::new(
                to.format,
                query
                    .output_names()
                    .unwrap_or_else(|| layout.columns.clone()),
                to.header,
                to.parts,
            )),
            _ => None,
        };
        let counts_only = query.is_some_and(Query::counts_only) && rows.is_none() && file.is_none();
        let reads_fields = query.is_some_and(Query::reads_fields) || rows.is_some();
        let json_fields: Vec<String> = query
            .map(Query::json_fields)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let csv_fields = match query {
            Some(query) if reads_fields => query.csv_fields_read(rows.is_some()),
            _ => 0,
        };
        Ok(Sink {
            blame: Blame {
                index: task.index,
                range: layout.range(task.index),
                size: layout.object.size,
            },
            columns: layout.columns.clone(),
            reads_fields,
            evaluator: query.map(Query::evaluator),
            rows,
            file,
            records: 0,
            bad_record: None,
            json_scalars: vec![None; json_fields.len()],
            json_values: vec![None; json_fields.len()],
            json_fields,
            json_scratch: Scratch::default(),
            counts_only,
            csv_fields,
            max_record: layout.max_record_size,
            fingerprint: task.fingerprint(),
        })
    }

    /// The chunk's records are read from `state`: said to the row output before any row.
    pub(crate) fn start(&self, state: State) -> Result<(), ScanError> {
        match &self.rows {
            Some(rows) => rows.start(state),
            None => Ok(()),
        }
    }

    /// A record from `offset` is longer than the bound: it is the chunk's bad record.
    pub(crate) fn too_long(&mut self, offset: u64) {
        if self.bad_record.is_none() {
            self.bad_record = Some(BadRecord {
                offset,
                message: format!(
                    "a record longer than maxRecordSize ({} bytes) starts here",
                    self.max_record
                ),
            });
        }
    }

    pub(crate) fn raw(&mut self, bytes: &[u8]) -> Result<(), ScanError> {
        if let Some(file) = &mut self.file {
            file.write_all(bytes).map_err(file_error)?;
        }
        Ok(())
    }

    /// Keeps the first bad record and ignores the records after it.
    pub(crate) fn bad(&mut self, result: Result<(), ScanError>) -> Result<(), ScanError> {
        match result {
            Err(ScanError::BadData {
                offset, message, ..
            }) => {
                self.bad_record = Some(BadRecord { offset, message });
                Ok(())
            }
            other => other,
        }
    }

    /// Records a counting extractor found.
    pub(crate) fn counted(&mut self, records: u64) {
        self.records += records;
        if let Some(evaluator) = &mut self.evaluator {
            evaluator.count(records);
        }
    }

    pub(crate) fn csv(&mut self, record: &CsvRecord, offset: u64) -> Result<(), ScanError> {
        if self.bad_record.is_some() {
            return Ok(());
        }
        let result = self.csv_record(record, offset);
        self.bad(result)
    }

    pub(crate) fn json(&mut self, line: &[u8], offset: u64) -> Result<(), ScanError> {
        if self.bad_record.is_some() {
            return Ok(());
        }
        let result = self.json_record(line, offset);
        self.bad(result)
    }

    pub(crate) fn csv_record(&mut self, record: &CsvRecord, offset: u64) -> Result<(), ScanError> {
        self.records += 1;
        let blame = self.blame;
        let Some(evaluator) = &mut self.evaluator else {
            return Ok(());
        };
        let outcome = evaluator
            .record(record)
            .map_err(|message| blame.at(offset, message))?;
        let Some(rows) = &mut self.rows else {
            return Ok(());
        };
        match outcome {
            Outcome::Whole => {
                let fields = (0..record.ends.len()).map(|i| record.bytes(i).unwrap_or_default());
                match rows.format {
                    TextFormat::Csv => rows.csv_bytes(fields),
                    TextFormat::JsonLines => {
                        let object = csv_object(&self.columns, fields)
                            .map_err(|message| blame.at(offset, message))?;
                        rows.json(&object)
                    }
                }
            }
            Outcome::Row(values) => rows.values(values),
            Outcome::Skip | Outcome::Aggregated => Ok(()),
        }
    }

    pub(crate) fn json_record(&mut self, line: &[u8], offset: u64) -> Result<(), ScanError> {
        let text = line.trim_ascii();
        if text.is_empty() {
            return Ok(());
        }
        self.records += 1;
        let blame = self.blame;
        let Some(evaluator) = &mut self.evaluator else {
            return Ok(());
        };
        if !self.reads_fields {
            // The fast check decides; serde_json only explains a refusal.
            if !is_json_value(text, &mut self.json_scratch) {
                let message = match serde_json::from_slice::<serde::de::IgnoredAny>(text) {
                    Err(e) => format!("invalid JSON: {e}"),
                    Ok(_) => "invalid JSON".to_string(),
                };
                return Err(blame.at(offset, message));
            }
            if self.counts_only {
                evaluator.count(1);
                return Ok(());
            }
            let record = JsonRecord {
                names: &[],
                fields: JsonFields::Parsed(&[]),
            };
            evaluator
                .record(&record)
                .map_err(|message| blame.at(offset, message))?;
            return Ok(());
        }
        let fields = if find_scalar_fields(
            text,
            &self.json_fields,
            &mut self.json_scalars,
            &mut self.json_scratch,
        ) {
            JsonFields::Scalars {
                text,
                scalars: &self.json_scalars,
            }
        } else {
            parse_json_fields(text, &self.json_fields, &mut self.json_values)
                .map_err(|message| blame.at(offset, message))?;
            JsonFields::Parsed(&self.json_values)
        };
        let record = JsonRecord {
            names: &self.json_fields,
            fields,
        };
        let outcome = evaluator
            .record(&record)
            .map_err(|message| blame.at(offset, message))?;
        match (outcome, &mut self.rows) {
            (Outcome::Whole, Some(rows)) => rows.line(text),
            (Outcome::Row(values), Some(rows)) => rows.values(values),
            _ => Ok(()),
        }
    }

    pub(crate) fn finish(
        self,
        assumed: State,
        split: ChunkSplit,
        bytes: u64,
    ) -> Result<ChunkReport, ScanError> {
        if let Some(mut file) = self.file {
            file.flush().map_err(file_error)?;
        }
        let (rows, partials) = match self.evaluator {
            Some(evaluator) => (evaluator.rows, evaluator.partials),
            None => (0, Vec::new()),
        };
        if let Some(writer) = self.rows {
            writer.finish()?;
        }
        let (start, end) = self.blame.range;
        Ok(ChunkReport {
            index: self.blame.index,
            range: [start, end.min(self.blame.size)],
            fingerprint: self.fingerprint,
            assumed,
            split,
            records: self.records,
            bytes,
            rows,
            partials,
            part: None,
            bad_record: self.bad_record,
            row_groups: None,
            objects: 0,
            skipped: Default::default(),
            pieces: Vec::new(),
            continues: false,
        })
    }
}

/// The file a fetch writes a chunk's records to, its header row (if any) written first.
pub(crate) fn chunk_file(
    path: &std::path::Path,
    columns: &[String],
) -> Result<std::io::BufWriter<std::fs::File>, ScanError> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(file_error)?);
    if !columns.is_empty() {
        let header = csv_line(columns.iter().map(String::as_str));
        file.write_all(&header).map_err(file_error)?;
    }
    Ok(file)
}

pub(crate) fn file_error(source: std::io::Error) -> ScanError {
    ScanError::Write {
        what: "the chunk file".into(),
        source,
    }
}

pub(crate) fn csv_object<'a>(
    columns: &[String],
    fields: impl Iterator<Item = &'a [u8]>,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    fields
        .enumerate()
        .map(|(i, bytes)| {
            let name = columns
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("_{}", i + 1));
            let text =
                std::str::from_utf8(bytes).map_err(|_| format!("field _{} is not UTF-8", i + 1))?;
            Ok((name, text.into()))
        })
        .collect()
}
