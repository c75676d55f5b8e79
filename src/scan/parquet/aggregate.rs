//! Aggregates over whole Arrow arrays: COUNT(*), and COUNT, SUM, AVG, MIN and MAX of a column
//! of integers or floats (maybe CAST AS FLOAT), a tight loop over each column's values instead
//! of the row evaluator once per value. The partials are the row evaluator's and take the values
//! in the same order, so the answers are the same to the bit.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type,
};
use arrow_array::{Array, ArrowPrimitiveType, RecordBatch};
use arrow_schema::DataType;

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

    /// Adds rows `rows` of `batch` to `partials` (the aggregates', in order). `false`, and
    /// nothing added, when a column is missing from the batch or holds no integers or floats.
    pub(super) fn add(
        &self,
        batch: &RecordBatch,
        rows: &[usize],
        partials: &mut [Partial],
    ) -> bool {
        let mut columns = Vec::with_capacity(self.items.len());
        for item in &self.items {
            match item {
                None => columns.push(None),
                Some((name, float)) => match batch.column_by_name(name) {
                    Some(array) if numbers(array.as_ref(), &[]).is_some() => {
                        columns.push(Some((array.as_ref(), *float)))
                    }
                    _ => return false,
                },
            }
        }
        if columns.len() != partials.len() {
            return false;
        }
        for (column, partial) in columns.into_iter().zip(partials) {
            match column {
                None => {
                    if let Partial::Count(n) = partial {
                        *n += rows.len() as u64;
                    }
                }
                Some((array, float)) => match numbers(array, rows) {
                    Some(Numbers::Ints(ints)) if float => {
                        partial.add_floats(ints.map(|i| i as f64))
                    }
                    Some(Numbers::Ints(ints)) => partial.add_ints(ints),
                    Some(Numbers::Floats(floats)) => partial.add_floats(floats),
                    None => {}
                },
            }
        }
        true
    }
}

/// The non-null values of a column at some rows, as the row evaluator reads them.
enum Numbers<'a> {
    Ints(Box<dyn Iterator<Item = i64> + 'a>),
    Floats(Box<dyn Iterator<Item = f64> + 'a>),
}

/// The values of `array` at `rows` (skipping NULLs), when it holds integers that fit 64 bits or
/// floats of 32 or 64 bits.
fn numbers<'a>(array: &'a dyn Array, rows: &'a [usize]) -> Option<Numbers<'a>> {
    fn values<'a, T: ArrowPrimitiveType, N: 'a>(
        array: &'a dyn Array,
        rows: &'a [usize],
        to: fn(T::Native) -> N,
    ) -> Option<Box<dyn Iterator<Item = N> + 'a>> {
        let array = array.as_primitive_opt::<T>()?;
        let values = array.values();
        Some(match array.nulls() {
            None => Box::new(
                rows.iter()
                    .filter_map(move |&row| values.get(row).map(|v| to(*v))),
            ),
            Some(nulls) => Box::new(
                rows.iter()
                    .filter(move |&&row| row < nulls.len() && nulls.is_valid(row))
                    .filter_map(move |&row| values.get(row).map(|v| to(*v))),
            ),
        })
    }
    Some(match array.data_type() {
        DataType::Int8 => Numbers::Ints(values::<Int8Type, _>(array, rows, i64::from)?),
        DataType::Int16 => Numbers::Ints(values::<Int16Type, _>(array, rows, i64::from)?),
        DataType::Int32 => Numbers::Ints(values::<Int32Type, _>(array, rows, i64::from)?),
        DataType::Int64 => Numbers::Ints(values::<Int64Type, _>(array, rows, |v| v)?),
        DataType::UInt8 => Numbers::Ints(values::<UInt8Type, _>(array, rows, i64::from)?),
        DataType::UInt16 => Numbers::Ints(values::<UInt16Type, _>(array, rows, i64::from)?),
        DataType::UInt32 => Numbers::Ints(values::<UInt32Type, _>(array, rows, i64::from)?),
        DataType::Float32 => Numbers::Floats(values::<Float32Type, _>(array, rows, f64::from)?),
        DataType::Float64 => Numbers::Floats(values::<Float64Type, _>(array, rows, |v| v)?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Float32Array, Int32Array, StringArray, UInt64Array};

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
        ])
        .unwrap()
    }

    /// What the row evaluator makes of rows `rows` of the batch, against the arrays.
    fn both(sql: &str, rows: &[usize]) -> Option<(String, String)> {
        let query = compile(sql, &Columns::Named).unwrap();
        let arrays = ArrayAggregates::of(&query)?;
        let batch = batch();
        let mut partials = query.empty_partials();
        if !arrays.add(&batch, rows, &mut partials) {
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
        let text = |p: &[Partial]| serde_json::to_string(p).unwrap();
        Some((text(&partials), text(&evaluator.partials)))
    }

    #[test]
    fn arrays_aggregate_as_the_row_evaluator_does() {
        let sql = "SELECT COUNT(*), COUNT(i), SUM(i), MIN(i), MAX(i), AVG(i), COUNT(f), SUM(f), \
                   MIN(f), MAX(f), AVG(CAST(i AS FLOAT)), MIN(CAST(f AS FLOAT)) FROM S3Object";
        for rows in [&[0, 1, 2, 3][..], &[3, 2], &[1], &[]] {
            let (arrays, evaluated) = both(sql, rows).expect("taken over arrays");
            assert_eq!(arrays, evaluated, "rows {rows:?}");
        }
    }

    #[test]
    fn other_aggregates_are_left_to_the_row_evaluator() {
        for sql in [
            "SELECT MIN(s) FROM S3Object",
            "SELECT SUM(u) FROM S3Object",
            "SELECT SUM(i + 1) FROM S3Object",
            "SELECT MAX(missing) FROM S3Object",
            "SELECT i FROM S3Object",
        ] {
            assert_eq!(both(sql, &[0, 1]), None, "{sql}");
        }
    }
}
