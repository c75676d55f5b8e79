//! Aggregates over whole Arrow arrays: COUNT(*), COUNT, SUM, AVG, MIN and MAX of a column of
//! integers or floats (maybe CAST AS FLOAT), and COUNT, MIN and MAX of a text column, a tight
//! loop over each column's values instead of the row evaluator once per value. A
//! dictionary-encoded text column is aggregated on its dictionary: the entries the kept rows use
//! are marked, and only those are compared. The partials are the row evaluator's and take the
//! same values (sums exactly, in whatever order), so the answers are the same to the bit.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type,
};
use arrow_array::{
    Array, ArrowPrimitiveType, LargeStringArray, PrimitiveArray, RecordBatch, StringArray,
    StringViewArray,
};
use arrow_buffer::NullBuffer;
use arrow_schema::DataType;

use super::values::dictionary_keys;
use crate::scan::sql::Query;
use crate::scan::value::Partial;

/// A query's aggregates, each COUNT(*) (`None`) or of a top-level column (its name, and whether
/// it is cast to FLOAT).
pub(super) struct ArrayAggregates {
    items: Vec<Option<(String, bool)>>,
}

impl ArrayAggregates {
    /// The query's aggregates, when each one can be taken over arrays.
    pub(super) fn of(query: &Query) -> Option<ArrayAggregates> {
        let items = query
            .column_aggregates()?
            .into_iter()
            .map(|item| match item {
                None => Some(None),
                // A struct's field is NULL where the struct is: left to the row evaluator.
                Some(([name], float)) => Some(Some((name.clone(), float))),
                Some(_) => None,
            })
            .collect::<Option<_>>()?;
        Some(ArrayAggregates { items })
    }

    /// Adds the rows of `batch` that `kept` keeps (every row without it) to `partials` (the
    /// aggregates', in order). `false`, and nothing added, when a column is missing from the
    /// batch or holds no integers or floats.
    pub(super) fn add(
        &self,
        batch: &RecordBatch,
        kept: Option<&[bool]>,
        partials: &mut [Partial],
    ) -> bool {
        if kept.is_some_and(|kept| kept.len() != batch.num_rows())
            || self.items.len() != partials.len()
        {
            return false;
        }
        // Every column is found to be one taken here before any partial changes.
        let mut columns = Vec::with_capacity(self.items.len());
        for (item, partial) in self.items.iter().zip(partials.iter()) {
            columns.push(match item {
                None => Column::Rows,
                Some((name, float)) => match batch.column_by_name(name) {
                    Some(array) if is_number(array.data_type()) => {
                        Column::Numbers(array.as_ref(), *float)
                    }
                    Some(array) if !float && partial.takes_text() => match Texts::of(array) {
                        Some(texts) => Column::Texts(texts),
                        None => return false,
                    },
                    _ => return false,
                },
            });
        }
        for (column, partial) in columns.into_iter().zip(partials) {
            match column {
                Column::Rows => {
                    if let Partial::Count(n) = partial {
                        *n += kept
                            .map_or(batch.num_rows(), |kept| kept.iter().filter(|&&k| k).count())
                            as u64;
                    }
                }
                Column::Numbers(array, float) => add_numbers(array, kept, float, partial),
                Column::Texts(texts) => texts.add(kept, partial),
            }
        }
        true
    }
}

/// A column of a batch as [`ArrayAggregates::add`] takes it.
enum Column<'a> {
    /// COUNT(*)'s rows.
    Rows,
    /// Integers or floats, and whether they are cast to FLOAT.
    Numbers(&'a dyn Array, bool),
    /// Text, for COUNT, MIN and MAX.
    Texts(Texts<'a>),
}

/// A text column: its values, or its keys into a dictionary of them.
enum Texts<'a> {
    Plain(Strings<'a>, Option<&'a NullBuffer>),
    Dictionary {
        keys: Vec<usize>,
        nulls: Option<&'a NullBuffer>,
        values: Strings<'a>,
    },
}

impl<'a> Texts<'a> {
    /// The text of `array`: strings of either offset width or views, or a dictionary of them
    /// without NULL entries (a NULL behind a key is left to the row evaluator).
    fn of(array: &'a dyn Array) -> Option<Texts<'a>> {
        if let Some(dictionary) = array.as_any_dictionary_opt() {
            let values = dictionary.values();
            if values.null_count() > 0 {
                return None;
            }
            return Some(Texts::Dictionary {
                keys: dictionary_keys(dictionary),
                nulls: dictionary.keys().nulls(),
                values: Strings::of(values.as_ref())?,
            });
        }
        Some(Texts::Plain(Strings::of(array)?, array.nulls()))
    }

    /// Adds the non-null values at the rows `kept` keeps (every row without it) to `partial`.
    fn add(&self, kept: Option<&[bool]>, partial: &mut Partial) {
        let counts = |row: usize, nulls: Option<&NullBuffer>| {
            kept.is_none_or(|kept| kept.get(row).copied().unwrap_or(false))
                && nulls.is_none_or(|nulls| nulls.is_valid(row))
        };
        match self {
            Texts::Plain(strings, nulls) => partial.add_texts(
                (0..strings.len())
                    .filter(|&row| counts(row, *nulls))
                    .map(|row| strings.value(row)),
            ),
            Texts::Dictionary {
                keys,
                nulls,
                values,
            } => {
                // The entries in use, each once, whatever the number of rows using it.
                let mut used = vec![false; values.len()];
                let mut rows = 0u64;
                for (row, &key) in keys.iter().enumerate() {
                    let counted = counts(row, *nulls);
                    if let Some(entry) = used.get_mut(key) {
                        *entry |= counted;
                    }
                    rows += u64::from(counted);
                }
                match partial {
                    Partial::Count(n) => *n += rows,
                    _ => partial.add_texts(
                        used.iter()
                            .enumerate()
                            .filter(|(_, used)| **used)
                            .map(|(entry, _)| values.value(entry)),
                    ),
                }
            }
        }
    }
}

/// Strings of an array, by position.
enum Strings<'a> {
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    View(&'a StringViewArray),
}

impl<'a> Strings<'a> {
    fn of(array: &'a dyn Array) -> Option<Strings<'a>> {
        match array.data_type() {
            DataType::Utf8 => array.as_string_opt::<i32>().map(Strings::Utf8),
            DataType::LargeUtf8 => array.as_string_opt::<i64>().map(Strings::LargeUtf8),
            DataType::Utf8View => array.as_string_view_opt().map(Strings::View),
            _ => None,
        }
    }

    fn len(&self) -> usize {
        match self {
            Strings::Utf8(array) => array.len(),
            Strings::LargeUtf8(array) => array.len(),
            Strings::View(array) => array.len(),
        }
    }

    /// The string at `index`, which is below [`Strings::len`].
    fn value(&self, index: usize) -> &'a str {
        match self {
            Strings::Utf8(array) => array.value(index),
            Strings::LargeUtf8(array) => array.value(index),
            Strings::View(array) => array.value(index),
        }
    }
}

/// Whether a column of this type holds integers that fit 64 bits or floats of 32 or 64 bits.
fn is_number(kind: &DataType) -> bool {
    use DataType::*;
    matches!(
        kind,
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | Float32 | Float64
    )
}

/// Adds the non-null values of `array` at the rows `kept` keeps to `partial`, as the row
/// evaluator reads them (integers cast to doubles when `float`).
fn add_numbers(array: &dyn Array, kept: Option<&[bool]>, float: bool, partial: &mut Partial) {
    fn ints<T: ArrowPrimitiveType>(
        array: &dyn Array,
        kept: Option<&[bool]>,
        float: bool,
        partial: &mut Partial,
    ) where
        T::Native: Into<i64>,
    {
        if let Some(array) = array.as_primitive_opt::<T>() {
            match float {
                true => each_value(array, kept, |v| Into::<i64>::into(v) as f64, partial),
                false => each_value(array, kept, Into::<i64>::into, partial),
            }
        }
    }
    fn floats<T: ArrowPrimitiveType>(
        array: &dyn Array,
        kept: Option<&[bool]>,
        partial: &mut Partial,
    ) where
        T::Native: Into<f64>,
    {
        if let Some(array) = array.as_primitive_opt::<T>() {
            each_value(array, kept, Into::<f64>::into, partial)
        }
    }
    match array.data_type() {
        DataType::Int8 => ints::<Int8Type>(array, kept, float, partial),
        DataType::Int16 => ints::<Int16Type>(array, kept, float, partial),
        DataType::Int32 => ints::<Int32Type>(array, kept, float, partial),
        DataType::Int64 => ints::<Int64Type>(array, kept, float, partial),
        DataType::UInt8 => ints::<UInt8Type>(array, kept, float, partial),
        DataType::UInt16 => ints::<UInt16Type>(array, kept, float, partial),
        DataType::UInt32 => ints::<UInt32Type>(array, kept, float, partial),
        DataType::Float32 => floats::<Float32Type>(array, kept, partial),
        DataType::Float64 => floats::<Float64Type>(array, kept, partial),
        _ => {}
    }
}

/// A number the partials take a column of: every value, or those kept (each a value and
/// whether it is).
trait ColumnNumber: Copy {
    fn add_all(partial: &mut Partial, values: impl Iterator<Item = Self> + Clone);
    fn add_kept(partial: &mut Partial, values: impl Iterator<Item = (Self, bool)> + Clone);
}

impl ColumnNumber for i64 {
    fn add_all(partial: &mut Partial, values: impl Iterator<Item = i64> + Clone) {
        partial.add_ints(values)
    }
    fn add_kept(partial: &mut Partial, values: impl Iterator<Item = (i64, bool)> + Clone) {
        partial.add_ints(values.filter(|(_, kept)| *kept).map(|(i, _)| i))
    }
}

impl ColumnNumber for f64 {
    fn add_all(partial: &mut Partial, values: impl Iterator<Item = f64> + Clone) {
        partial.add_floats(values)
    }
    fn add_kept(partial: &mut Partial, values: impl Iterator<Item = (f64, bool)> + Clone) {
        partial.add_kept_floats(values)
    }
}

/// Adds `to` of each non-null value of `array` at the rows `kept` keeps to `partial`: a plain
/// pass over the values buffer when every row counts and none is NULL, the common case.
fn each_value<T: ArrowPrimitiveType, N: ColumnNumber>(
    array: &PrimitiveArray<T>,
    kept: Option<&[bool]>,
    to: impl Fn(T::Native) -> N + Copy,
    partial: &mut Partial,
) {
    let values = array.values().iter();
    match (kept, array.nulls()) {
        (None, None) => N::add_all(partial, values.map(|v| to(*v))),
        (None, Some(nulls)) => N::add_kept(
            partial,
            values.zip(nulls.iter()).map(|(v, valid)| (to(*v), valid)),
        ),
        (Some(kept), None) => {
            N::add_kept(partial, values.zip(kept).map(|(v, kept)| (to(*v), *kept)))
        }
        (Some(kept), Some(nulls)) => N::add_kept(
            partial,
            values
                .zip(kept)
                .zip(nulls.iter())
                .map(|((v, kept), valid)| (to(*v), *kept && valid)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{DictionaryArray, Float32Array, Int32Array, StringArray, UInt64Array};

    use super::*;
    use crate::scan::sql::{Columns, compile};

    fn batch() -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "i",
                Arc::new(Int32Array::from(vec![Some(3), None, Some(-7), Some(5)])) as _,
            ),
            (
                "f",
                Arc::new(Float32Array::from(vec![
                    Some(0.5),
                    Some(f32::NAN),
                    None,
                    Some(-0.0),
                ])) as _,
            ),
            (
                "s",
                Arc::new(StringArray::from(vec!["a", "b", "c", "d"])) as _,
            ),
            (
                "u",
                Arc::new(UInt64Array::from(vec![1u64, 2, 3, u64::MAX])) as _,
            ),
            (
                // Rows "b", NULL, "q", "b": "z" is an entry no row uses.
                "d",
                Arc::new(
                    DictionaryArray::try_new(
                        Int32Array::from(vec![Some(2), None, Some(1), Some(2)]),
                        Arc::new(StringArray::from(vec!["z", "q", "b"])),
                    )
                    .unwrap(),
                ) as _,
            ),
            (
                // Two values alike in their first 4 KiB, which is all MIN and MAX keep.
                "v",
                Arc::new(StringViewArray::from(vec![
                    Some(format!("{}b", "x".repeat(5000))),
                    Some(format!("{}a", "x".repeat(5000))),
                    None,
                    Some("é".to_string()),
                ])) as _,
            ),
        ])
        .unwrap()
    }

    /// What the row evaluator makes of rows `rows` of the batch, against the arrays: each
    /// aggregate's result (a sum may hold the same exact number in other float partials).
    fn both(sql: &str, rows: &[usize]) -> Option<(String, String)> {
        let query = compile(sql, &Columns::Named).unwrap();
        let arrays = ArrayAggregates::of(&query)?;
        let batch = batch();
        let mut partials = query.empty_partials();
        let kept: Vec<bool> = (0..batch.num_rows()).map(|r| rows.contains(&r)).collect();
        let every = kept.iter().all(|&k| k);
        if !arrays.add(&batch, (!every).then_some(&kept[..]), &mut partials) {
            return None;
        }
        let mut evaluator = query.evaluator();
        let paths = query.paths();
        let columns: Vec<_> = paths
            .iter()
            .filter_map(|p| super::super::values::Resolved::find(&batch, p))
            .collect();
        for &row in rows {
            let record = super::super::values::ArrowRow {
                columns: &columns,
                row,
            };
            evaluator.record(&record).unwrap();
        }
        let text = |p: &[Partial]| {
            serde_json::to_string(&p.iter().map(Partial::result).collect::<Vec<_>>()).unwrap()
        };
        Some((text(&partials), text(&evaluator.partials)))
    }

    #[test]
    fn arrays_aggregate_as_the_row_evaluator_does() {
        let sql = "SELECT COUNT(*), COUNT(i), SUM(i), MIN(i), MAX(i), AVG(i), COUNT(f), SUM(f), \
                   MIN(f), MAX(f), AVG(CAST(i AS FLOAT)), MIN(CAST(f AS FLOAT)) FROM S3Object";
        for rows in [&[0, 1, 2, 3][..], &[2, 3], &[1], &[]] {
            let (arrays, evaluated) = both(sql, rows).expect("taken over arrays");
            assert_eq!(arrays, evaluated, "rows {rows:?}");
        }
    }

    #[test]
    fn text_and_dictionaries_aggregate_as_the_row_evaluator_does() {
        let sql = "SELECT COUNT(s), MIN(s), MAX(s), COUNT(d), MIN(d), MAX(d), COUNT(v), MIN(v), \
                   MAX(v) FROM S3Object";
        for rows in [&[0, 1, 2, 3][..], &[1, 2], &[0, 3], &[1], &[]] {
            let (arrays, evaluated) = both(sql, rows).expect("taken over arrays");
            assert_eq!(arrays, evaluated, "rows {rows:?}");
        }
        let (every_row, _) = both(sql, &[0, 1, 2, 3]).unwrap();
        assert!(every_row.contains(r#""b","q""#), "{every_row}");
        assert!(!every_row.contains(r#""z""#), "{every_row}");
    }

    #[test]
    fn other_aggregates_are_left_to_the_row_evaluator() {
        for sql in [
            "SELECT SUM(s) FROM S3Object",
            "SELECT AVG(d) FROM S3Object",
            "SELECT MIN(CAST(v AS FLOAT)) FROM S3Object",
            "SELECT SUM(u) FROM S3Object",
            "SELECT SUM(i + 1) FROM S3Object",
            "SELECT MAX(missing) FROM S3Object",
            "SELECT i FROM S3Object",
        ] {
            assert_eq!(both(sql, &[0, 1]), None, "{sql}");
        }
    }
}
