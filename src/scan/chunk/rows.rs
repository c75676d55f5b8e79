//! Row output: selected rows serialised as CSV or JSON Lines into part buffers, handed to the
//! uploader one buffer at a time.

use tokio::sync::mpsc;

use super::task::OutputFormat;
use crate::scan::ScanError;
use crate::scan::text::split::State;
use crate::scan::value::{Value, non_finite_text, push_float};

/// A chunk's selected rows streamed to the caller instead of an output in S3: CSV or JSON Lines
/// without a header row, in [`RowBatch`]es (its start state first, for CSV).
#[derive(Clone)]
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
    /// Whole rows (CSV records or JSON lines) not yet handed over.
    lines: Vec<u8>,
    header_written: bool,
    parts: mpsc::Sender<RowBatch>,
}

/// One CSV record being written into a part buffer, field by field, as the csv crate's default
/// writer writes it (its output is what readers of s3flow's CSV have always read): fields
/// separated by commas, a field quoted when it holds a comma, a quote or a line break, quotes
/// doubled, `\n` at the end. Records may have fewer or more fields than the header, as the
/// reader accepts them. Numbers are written straight from their values (they never need quotes).
pub(crate) struct CsvRecordOut<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    fields: usize,
}

impl CsvRecordOut<'_> {
    fn next_field(&mut self) {
        if self.fields > 0 {
            self.out.push(b',');
        }
        self.fields += 1;
    }

    /// A field of text.
    pub(crate) fn text(&mut self, field: &[u8]) {
        self.next_field();
        if !field
            .iter()
            .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
        {
            self.out.extend_from_slice(field);
            return;
        }
        self.out.push(b'"');
        for part in field.split_inclusive(|b| *b == b'"') {
            self.out.extend_from_slice(part);
            if part.ends_with(b"\"") {
                self.out.push(b'"');
            }
        }
        self.out.push(b'"');
    }

    /// An empty field (SQL NULL).
    pub(crate) fn null(&mut self) {
        self.next_field();
    }

    pub(crate) fn int(&mut self, value: i64) {
        self.next_field();
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    /// A float, with the text of [`Value::to_field`].
    pub(crate) fn float(&mut self, value: f64) {
        self.next_field();
        match non_finite_text(value) {
            Some(text) => self.out.extend_from_slice(text.as_bytes()),
            None => push_float(self.out, value),
        }
    }

    /// A value, with the text of [`Value::to_field`] (without allocating for numbers).
    pub(crate) fn value(&mut self, value: &Value) {
        match value {
            Value::Null => self.null(),
            Value::Bool(b) => self.text(if *b { b"true".as_slice() } else { b"false" }),
            Value::Int(i) => self.int(*i),
            Value::Float(f) => self.float(*f),
            Value::Str(s) => self.text(s.as_bytes()),
        }
    }

    /// Ends the record; one with no text at all is written `""`, so that it is no empty line.
    fn end(self) -> usize {
        if self.out.len() == self.start {
            self.out.extend_from_slice(b"\"\"");
        }
        self.out.push(b'\n');
        self.fields
    }
}

/// `fields` as one CSV record (a header row).
pub(crate) fn csv_line<'f>(fields: impl IntoIterator<Item = &'f str>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut record = CsvRecordOut {
        start: 0,
        out: &mut out,
        fields: 0,
    };
    for field in fields {
        record.text(field.as_bytes());
    }
    record.end();
    out
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
            lines: Vec::new(),
            header_written: !header,
            parts,
        }
    }

    /// One CSV record, its fields written by `write`; the header row goes before the first
    /// (named `_1`, `_2`, ... by the first record's fields when the output has no names).
    pub(crate) fn csv_record(
        &mut self,
        write: impl FnOnce(&mut CsvRecordOut),
    ) -> Result<(), ScanError> {
        let start = self.lines.len();
        let mut record = CsvRecordOut {
            out: &mut self.lines,
            start,
            fields: 0,
        };
        write(&mut record);
        let fields = record.end();
        if !self.header_written {
            self.header_written = true;
            if self.names.is_empty() {
                self.names = (1..=fields).map(|i| format!("_{i}")).collect();
            }
            let record = self.lines.split_off(start);
            self.lines
                .extend_from_slice(&csv_line(self.names.iter().map(String::as_str)));
            self.lines.extend_from_slice(&record);
        }
        self.hand_over_full()
    }

    pub(crate) fn csv_bytes<'a>(
        &mut self,
        fields: impl Iterator<Item = &'a [u8]>,
    ) -> Result<(), ScanError> {
        self.csv_record(|record| fields.for_each(|field| record.text(field)))
    }

    /// One row of `values`, in the order of the output's names.
    pub(crate) fn values<'v>(
        &mut self,
        values: impl IntoIterator<Item = Value<'v>>,
    ) -> Result<(), ScanError> {
        match self.format {
            TextFormat::Csv => {
                self.csv_record(|record| values.into_iter().for_each(|v| record.value(&v)))
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
        self.hand_over_full()
    }

    /// Hands the rows over once they fill a part buffer.
    fn hand_over_full(&mut self) -> Result<(), ScanError> {
        if self.lines.len() < PART_BUFFER {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.lines, Vec::with_capacity(PART_BUFFER));
        self.send(full)
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

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use proptest::prelude::*;

    use super::*;

    /// Rows as the csv crate's default writer writes them, each value by its CSV text.
    fn by_the_csv_crate(rows: &[Vec<Value>]) -> Vec<u8> {
        let mut writer = csv::WriterBuilder::new()
            .flexible(true)
            .from_writer(Vec::new());
        for row in rows {
            writer
                .write_record(row.iter().map(|v| v.to_field().into_owned()))
                .unwrap();
        }
        writer.into_inner().unwrap()
    }

    fn written(rows: &[Vec<Value>]) -> Vec<u8> {
        let (parts, mut handed) = mpsc::channel(4);
        let mut writer = RowWriter::new(TextFormat::Csv, vec!["unused".into()], false, parts);
        for row in rows {
            writer.values(row.iter().cloned()).unwrap();
        }
        writer.finish().unwrap();
        let mut out = Vec::new();
        while let Ok(batch) = handed.try_recv() {
            if let RowBatch::Rows(rows) = batch {
                out.extend(rows);
            }
        }
        out
    }

    fn value() -> impl Strategy<Value = Value<'static>> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            prop_oneof![Just(f64::INFINITY), Just(f64::NEG_INFINITY), Just(-0.0)]
                .prop_map(Value::Float),
            "[a-c,\"\r\n ]{0,6}".prop_map(|s| Value::Str(Cow::Owned(s))),
            any::<String>().prop_map(|s| Value::Str(Cow::Owned(s))),
        ]
    }

    proptest! {
        #[test]
        fn rows_are_written_as_the_csv_crate_writes_them(
            rows in prop::collection::vec(prop::collection::vec(value(), 0..5), 0..8),
        ) {
            prop_assert_eq!(written(&rows), by_the_csv_crate(&rows));
        }
    }

    #[test]
    fn records_without_text_and_headers_are_written_as_the_csv_crate_writes_them() {
        let empty = Value::Str(Cow::Borrowed(""));
        let rows = vec![
            vec![],
            vec![Value::Null],
            vec![empty.clone()],
            vec![empty.clone(), Value::Null],
            vec![Value::Str(Cow::Borrowed("say \"hi\", twice\r\n"))],
        ];
        assert_eq!(written(&rows), by_the_csv_crate(&rows));
        let names = ["id", "a,b", "", "q\"uote"];
        let fields: Vec<Value> = names.iter().map(|n| Value::Str(Cow::Borrowed(n))).collect();
        assert_eq!(csv_line(names), by_the_csv_crate(&[fields]));
    }

    #[test]
    fn a_header_row_names_unnamed_columns_by_the_first_record() {
        let (parts, mut handed) = mpsc::channel(4);
        let mut writer = RowWriter::new(TextFormat::Csv, Vec::new(), true, parts);
        writer.values([Value::Int(1), Value::Float(2.5)]).unwrap();
        writer.values([Value::Int(3)]).unwrap();
        writer.finish().unwrap();
        let Ok(RowBatch::Rows(rows)) = handed.try_recv() else {
            panic!("no rows handed over");
        };
        assert_eq!(String::from_utf8(rows).unwrap(), "_1,_2\n1,2.5\n3\n");
    }
}
