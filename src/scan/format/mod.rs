//! What kind of object a scan reads, in one place: its record format ([`InputFormat`]), its
//! compression ([`Compression`], told by its first bytes or its key: `detect`), and which outputs
//! its rows can be written as, checked when the scan is planned, before any Job runs.

mod compression;
mod detect;

use serde::{Deserialize, Serialize};

use super::{OutputFormat, ScanError};

pub use compression::{Compression, Decoded};
pub use detect::{Magic, PARQUET_MAGIC, magic};

/// Record encoding of the scanned object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InputFormat {
    /// Delimited text, quoted as RFC 4180 quotes it.
    Csv {
        /// Byte between fields (`,` usually).
        delimiter: u8,
        /// Byte that quotes a field (`"` usually); doubled inside one, it stands for itself.
        quote: u8,
        /// The first row names the columns and is not a record.
        header: bool,
    },
    /// One JSON value per line.
    JsonLines,
    /// Apache Parquet: chunks are runs of row groups.
    Parquet,
}

impl InputFormat {
    /// How records are split from bytes (Parquet is never split by bytes; JSON Lines' rule
    /// stands in for it).
    pub fn dialect(self) -> crate::scan::text::split::Dialect {
        match self {
            InputFormat::Csv {
                delimiter, quote, ..
            } => crate::scan::text::split::Dialect::Csv { delimiter, quote },
            InputFormat::JsonLines | InputFormat::Parquet => {
                crate::scan::text::split::Dialect::JsonLines
            }
        }
    }

    /// How a query names this format's fields: CSV columns by position (and header name),
    /// JSON Lines fields and Parquet columns by name (and dotted path).
    pub fn columns(self, header: &[String]) -> crate::scan::sql::Columns {
        match self {
            InputFormat::Csv { .. } => crate::scan::sql::Columns::Positional(header.to_vec()),
            InputFormat::JsonLines | InputFormat::Parquet => crate::scan::sql::Columns::Named,
        }
    }

    /// Whether a byte window of an object starts at a record of its own (Parquet's at a row
    /// group); a text window may start inside a record, in the state the window before ended in.
    pub fn windows_start_at_records(self) -> bool {
        match self {
            InputFormat::Csv { .. } | InputFormat::JsonLines => false,
            InputFormat::Parquet => true,
        }
    }

    /// Whether a chunk that goes on with the records of the chunk before still starts in a known
    /// state: a record starts at any line (JSON Lines) or row group (Parquet), never inside a
    /// quoted CSV field.
    pub fn starts_anywhere(self) -> bool {
        match self {
            InputFormat::Csv { .. } => false,
            InputFormat::JsonLines | InputFormat::Parquet => true,
        }
    }

    /// Whether its values carry their types ([`crate::scan::sql::Record::typed`]): Parquet's do,
    /// text's are text that may be read as numbers.
    pub fn values_typed(self) -> bool {
        match self {
            InputFormat::Csv { .. } | InputFormat::JsonLines => false,
            InputFormat::Parquet => true,
        }
    }

    /// The output format when the scan names none: the object's own, CSV for Parquet.
    pub fn output_format(self) -> OutputFormat {
        match self {
            InputFormat::Csv { .. } | InputFormat::Parquet => OutputFormat::Csv,
            InputFormat::JsonLines => OutputFormat::JsonLines,
        }
    }

    /// Refuses an output its rows cannot be written as: `SELECT *` of JSON Lines has no columns
    /// to write CSV with. `names_columns`: the query names its output columns.
    pub fn check_output(self, output: OutputFormat, names_columns: bool) -> Result<(), ScanError> {
        if self == InputFormat::JsonLines && output == OutputFormat::Csv && !names_columns {
            return Err(ScanError::InvalidScan(
                "SELECT * of JSON Lines is written as JSON Lines; name the columns for CSV output"
                    .into(),
            ));
        }
        Ok(())
    }
}
