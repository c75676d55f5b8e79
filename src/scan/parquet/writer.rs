//! Row output as Parquet: the selected rows of the selected columns in the object's own types,
//! encoded by arrow-rs's writer into part buffers handed to the uploader as they fill.

use std::io::Write;

use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tokio::sync::mpsc;

use crate::scan::ScanError;
use crate::scan::chunk::rows::{PART_BUFFER, RowBatch};

/// Rows of an output row group are flushed at this size, so the writer's memory stays bounded.
const ROW_GROUP_BYTES: usize = 64 << 20;

/// Encoded output, handed to the uploader in part buffers.
struct PartSink {
    buffer: Vec<u8>,
    parts: mpsc::Sender<RowBatch>,
}

impl Write for PartSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= PART_BUFFER {
            let full = std::mem::replace(&mut self.buffer, Vec::with_capacity(PART_BUFFER));
            self.parts
                .blocking_send(RowBatch::Rows(full))
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A Parquet part being written: created with the first rows, so a chunk without rows has none.
pub(super) struct ParquetRows {
    writer: Option<ArrowWriter<PartSink>>,
    parts: mpsc::Sender<RowBatch>,
}

impl ParquetRows {
    pub(super) fn new(parts: mpsc::Sender<RowBatch>) -> ParquetRows {
        ParquetRows {
            writer: None,
            parts,
        }
    }

    /// The error of a failed write: the uploader's, when it stopped taking parts.
    fn failed(&self, e: parquet::errors::ParquetError) -> ScanError {
        if self.parts.is_closed() {
            return ScanError::OutputClosed;
        }
        ScanError::Write {
            what: "a Parquet part".into(),
            source: std::io::Error::other(e),
        }
    }

    /// Writes `batch`'s rows (the first batch starts the part, with its schema).
    pub(super) fn write(&mut self, batch: &RecordBatch) -> Result<(), ScanError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.writer.is_none() {
            let sink = PartSink {
                buffer: Vec::with_capacity(PART_BUFFER),
                parts: self.parts.clone(),
            };
            let properties = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
                .build();
            let writer = ArrowWriter::try_new(sink, batch.schema(), Some(properties))
                .map_err(|e| self.failed(e))?;
            self.writer = Some(writer);
        }
        match self.writer.as_mut().map(|w| w.write(batch)) {
            Some(Err(e)) => Err(self.failed(e)),
            _ => Ok(()),
        }
    }

    /// Ends the part: its footer, its last buffer, and the end for the uploader.
    pub(super) fn finish(mut self) -> Result<(), ScanError> {
        if let Some(writer) = self.writer.take() {
            let mut sink = writer.into_inner().map_err(|e| self.failed(e))?;
            let rest = std::mem::take(&mut sink.buffer);
            if !rest.is_empty() {
                self.parts
                    .blocking_send(RowBatch::Rows(rest))
                    .map_err(|_| ScanError::OutputClosed)?;
            }
        }
        self.parts
            .blocking_send(RowBatch::End)
            .map_err(|_| ScanError::OutputClosed)
    }
}

/// The rows of `batch` where `keep` holds, as the columns `selected` (`None`: every column).
pub(super) fn selected_rows(
    batch: &RecordBatch,
    keep: Vec<bool>,
    selected: Option<&[(String, ArrayRef)]>,
) -> Result<RecordBatch, ScanError> {
    let error = |e: arrow_schema::ArrowError| ScanError::Serialize {
        what: "Parquet rows",
        source: Box::new(e),
    };
    let projected = match selected {
        None => batch.clone(),
        Some(columns) => {
            let fields: Vec<Field> = columns
                .iter()
                .map(|(name, array)| Field::new(name, array.data_type().clone(), true))
                .collect();
            let arrays = columns.iter().map(|(_, array)| array.clone()).collect();
            RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), arrays).map_err(error)?
        }
    };
    arrow_select::filter::filter_record_batch(&projected, &BooleanArray::from(keep)).map_err(error)
}
