//! Aggregates over whole Arrow arrays: COUNT(*), and COUNT, SUM, AVG, MIN and MAX of a column
//! of integers or floats (maybe CAST AS FLOAT), a tight loop over each column's values instead
//! of the row evaluator once per value. The partials are the row evaluator's and take the same
//! values (sums exactly, in whatever order), so the answers are the same to the bit.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type,
};
use arrow_array::{Array, ArrowPrimitiveType, PrimitiveArray, RecordBatch};
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

    /// Adds the rows of `batch` that `kept` keeps (every row without it) to `partials` (the
    /// aggregates', in order). `false`, and nothing added, when a column is missing from the
    /// batch or holds no integers or floats.
    pub(super) fn add(
        &self,
        batch: &RecordBatch,
        kept: Option<&[bool]>,
        partials: &mut [Partial],
    ) -> bool {
        if kept.is_some_and(|kept| kept.len() != batch.num_rows()) {
            return false;
        }
        let mut columns = Vec::with_capacity(self.items.len());
        for item in &self.items {
            match item {
                None => columns.push(None),
                Some((name, float)) => match batch.column_by_name(name) {
                    Some(array) if is_number(array.data_type()) => {
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
                        *n += kept
                            .map_or(batch.num_rows(), |kept| kept.iter().filter(|&&k| k).count())
                            as u64;
                    }
                }
                Some((array, float)) => add_numbers(array, kept, float, partial),
            }
        }
        true
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
