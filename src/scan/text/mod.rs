//! CSV and JSON Lines: exact record boundaries of byte ranges (`split`; `word` holds byte-class
//! helpers that number parsing uses too), the parse loop of a chunk (`parse`), the count, CSV and lines extractors
//! (`extract`), records as the query sees them (`record`), and the JSON value check and field
//! projection (`json`).

pub(crate) mod extract;
pub(crate) mod json;
pub(crate) mod parse;
pub(crate) mod record;
pub mod split;
pub(crate) mod word;
