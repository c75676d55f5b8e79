//! Row output: selected rows serialised as CSV or JSON Lines into part buffers, handed to the
//! uploader one buffer at a time.

use tokio::sync::mpsc;

use super::task::OutputFormat;
use crate::scan::ScanError;
use crate::scan::text::split::State;
use crate::scan::value::Value;

/// A chunk's selected rows streamed to the caller instead of an output in S3: CSV or JSON Lines
/// without a header row, in [`RowBatch`]es (its start state first, for CSV).
pub struct LocalRows {
    /// CSV or JSON Lines; Parquet only from a Parquet object, the bytes of one file (a chunk of
    /// many objects writing Parquet holds one piece).
    pub format: OutputFormat,
    /// Where the batches go; the receiver writes them in object order.
    pub to: mpsc::Sender<RowBatch>,
}

/// Row output is uploaded in parts of this size.
pub(crate) const PART_BUFFER: usize = 8 << 20;

/// The text encodings of row output (Parquet rows are written by the Parquet directory's writer).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextFormat {
    Csv,
    JsonLines,
}

impl TextFormat {
    /// The text encoding of `format`; Parquet output is written column by column, from Parquet
    /// objects only.
    pub(crate) fn of(format: OutputFormat) -> Result<TextFormat, ScanError> {
        match format {
            OutputFormat::Csv => Ok(TextFormat::Csv),
            OutputFormat::JsonLines => Ok(TextFormat::JsonLines),
            OutputFormat::Parquet => Err(ScanError::InvalidScan(
                "Parquet output is written from Parquet objects; choose csv or jsonLines output"
                    .into(),
            )),
        }
    }
}

/// Serializes rows into part buffers handed to the uploader.
pub(crate) struct RowWriter {
    pub(crate) format: TextFormat,
    pub(crate) names: Vec<String>,
    pub(crate) csv: csv::Writer<Vec<u8>>,
    pub(crate) lines: Vec<u8>,
    pub(crate) header_written: bool,
    pub(crate) parts: mpsc::Sender<RowBatch>,
    /// A row's fields as text, one after the other, and where each ends (reused: no allocation
    /// per field).
    fields: String,
    field_ends: Vec<usize>,
}

pub(crate) fn csv_buffer() -> csv::Writer<Vec<u8>> {
    // Records may have fewer or more fields than the header, as the reader accepts them.
    csv::WriterBuilder::new()
        .flexible(true)
        .from_writer(Vec::with_capacity(PART_BUFFER))
}

impl RowWriter {
    /// Rows in `format` with the column `names`; a CSV part starts with a header row when
    /// `header` (rows streamed to one local output leave the header to it).
    pub(crate) fn new(
        format: TextFormat,
        names: Vec<String>,
        header: bool,
        parts: mpsc::Sender<RowBatch>,
    ) -> RowWriter {
        RowWriter {
            format,
            names,
            csv: csv_buffer(),
            lines: Vec::new(),
            header_written: !header,
            parts,
            fields: String::new(),
            field_ends: Vec::new(),
        }
    }

    pub(crate) fn csv_bytes<'a>(
        &mut self,
        fields: impl Iterator<Item = &'a [u8]> + Clone,
    ) -> Result<(), ScanError> {
        if !self.header_written {
            self.header_written = true;
            if self.names.is_empty() {
                self.names = (1..=fields.clone().count())
                    .map(|i| format!("_{i}"))
                    .collect();
            }
            self.csv
                .write_record(&self.names)
                .map_err(serialise("rows"))?;
        }
        self.csv.write_record(fields).map_err(serialise("rows"))?;
        if self.csv.get_ref().len() >= PART_BUFFER {
            let full = std::mem::replace(&mut self.csv, csv_buffer());
            self.send(full.into_inner().map_err(serialise("rows"))?)?;
        }
        Ok(())
    }

    /// One row of `values`, in the order of the output's names.
    pub(crate) fn values<'v>(
        &mut self,
        values: impl IntoIterator<Item = Value<'v>>,
    ) -> Result<(), ScanError> {
        match self.format {
            TextFormat::Csv => {
                let mut fields = std::mem::take(&mut self.fields);
                let mut ends = std::mem::take(&mut self.field_ends);
                fields.clear();
                ends.clear();
                for value in values {
                    value.write_field(&mut fields);
                    ends.push(fields.len());
                }
                let starts = std::iter::once(0).chain(ends.iter().copied());
                let slices = starts
                    .zip(ends.iter())
                    .map(|(start, &end)| &fields.as_bytes()[start..end]);
                let written = self.csv_bytes(slices);
                (self.fields, self.field_ends) = (fields, ends);
                written
            }
            TextFormat::JsonLines => self.json_values(values.into_iter().map(|v| v.to_json())),
        }
    }

    /// One JSON Lines row of `values`, in the order of the output's names.
    pub(crate) fn json_values(
        &mut self,
        values: impl IntoIterator<Item = serde_json::Value>,
    ) -> Result<(), ScanError> {
        let object: serde_json::Map<_, _> = self.names.iter().cloned().zip(values).collect();
        self.json(&object)
    }

    pub(crate) fn json(
        &mut self,
        object: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), ScanError> {
        let line = serde_json::to_vec(object).map_err(serialise("a JSON row"))?;
        self.line(&line)
    }

    /// A JSON Lines row as it is (`line` without its newline).
    pub(crate) fn line(&mut self, line: &[u8]) -> Result<(), ScanError> {
        self.lines.extend_from_slice(line);
        self.lines.push(b'\n');
        if self.lines.len() >= PART_BUFFER {
            let full = std::mem::take(&mut self.lines);
            self.send(full)?;
        }
        Ok(())
    }

    /// Says which start state the chunk's records are read from, before any of its rows.
    pub(crate) fn start(&self, state: State) -> Result<(), ScanError> {
        self.parts
            .blocking_send(RowBatch::Start(state))
            .map_err(|_| ScanError::OutputClosed)
    }

    pub(crate) fn send(&self, buffer: Vec<u8>) -> Result<(), ScanError> {
        if buffer.is_empty() {
            return Ok(());
        }
        self.parts
            .blocking_send(RowBatch::Rows(buffer))
            .map_err(|_| ScanError::OutputClosed)
    }

    pub(crate) fn finish(mut self) -> Result<(), ScanError> {
        let lines = std::mem::take(&mut self.lines);
        self.send(lines)?;
        let csv = std::mem::replace(&mut self.csv, csv::Writer::from_writer(Vec::new()));
        self.send(csv.into_inner().map_err(serialise("rows"))?)?;
        self.parts
            .blocking_send(RowBatch::End)
            .map_err(|_| ScanError::OutputClosed)
    }
}

/// What a chunk hands the uploader (or a local output): the start state its records are read
/// from (CSV; before any row), rows, then the end (without it the rows are incomplete).
#[derive(Debug)]
pub enum RowBatch {
    /// The start state the chunk read its records from, before any row.
    Start(State),
    /// Encoded rows, whole lines.
    Rows(Vec<u8>),
    /// Every row was sent.
    End,
}

/// A serialisation failure of `what`.
pub(crate) fn serialise<E>(what: &'static str) -> impl FnOnce(E) -> ScanError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |source| ScanError::Serialize {
        what,
        source: Box::new(source),
    }
}
