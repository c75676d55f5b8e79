//! A columnar pre-filter: the WHERE clause's `column op literal` conjuncts run over whole Arrow
//! arrays of numbers, strings, dates and timestamps (a dictionary's entries compared once each),
//! so that rows they rule out are never made into SQL values. It decides exactly as evaluation
//! would (same comparison rules, NULL never kept); a row it keeps is evaluated in full unless the
//! conjuncts are the whole clause.

use std::cmp::Ordering;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type,
};
use arrow_array::{Array, ArrowPrimitiveType, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use sqlparser::ast::BinaryOperator;

use super::values::{date, dictionary_keys, timestamp};
use crate::scan::sql::{ColumnComparison, holds};
use crate::scan::value::{Number, Value};

/// Which rows of a batch the conjuncts keep, and whether that is certain for every kept row
/// (false when some comparison could not be decided here: those rows are evaluated in full).
pub(crate) struct Kept {
    pub(crate) rows: Vec<bool>,
    pub(crate) certain: bool,
}

/// The rows of `batch` that `comparisons` keep; `None` when none of them applies to a column
/// of this batch.
pub(crate) fn prefilter(batch: &RecordBatch, comparisons: &[ColumnComparison]) -> Option<Kept> {
    let mut kept: Option<Kept> = None;
    let mut decided_all = true;
    for comparison in comparisons {
        let [name] = comparison.path.as_slice() else {
            decided_all = false;
            continue;
        };
        let Some(array) = batch.column_by_name(name) else {
            decided_all = false;
            continue;
        };
        let Some(one) = compare_array(array.as_ref(), &comparison.op, &comparison.literal) else {
            decided_all = false;
            continue;
        };
        kept = Some(match kept {
            None => one,
            Some(mut all) => {
                for (row, keep) in all.rows.iter_mut().zip(one.rows) {
                    *row &= keep;
                }
                all.certain &= one.certain;
                all
            }
        });
    }
    kept.map(|mut kept| {
        kept.certain &= decided_all;
        kept
    })
}

/// `value op literal` for every row of `array`, when its type is one decided here. Values are
/// typed: text compares with text only.
fn compare_array(array: &dyn Array, op: &BinaryOperator, literal: &Value) -> Option<Kept> {
    let number = match literal {
        Value::Int(i) => Some(Number::Int(*i)),
        Value::Float(f) => Some(Number::Float(*f)),
        _ => None,
    };
    let text = match literal {
        Value::Str(text) => Some(text.as_ref()),
        _ => None,
    };
    let rows = match array.data_type() {
        DataType::Int8 => numbers::<Int8Type>(array, op, number)?,
        DataType::Int16 => numbers::<Int16Type>(array, op, number)?,
        DataType::Int32 => numbers::<Int32Type>(array, op, number)?,
        DataType::Int64 => numbers::<Int64Type>(array, op, number)?,
        DataType::UInt8 => numbers::<UInt8Type>(array, op, number)?,
        DataType::UInt16 => numbers::<UInt16Type>(array, op, number)?,
        DataType::UInt32 => numbers::<UInt32Type>(array, op, number)?,
        DataType::Float32 => numbers::<Float32Type>(array, op, number)?,
        DataType::Float64 => numbers::<Float64Type>(array, op, number)?,
        DataType::Utf8 => {
            let strings = array.as_string_opt::<i32>()?;
            (0..array.len())
                .map(|i| {
                    text.is_some_and(|text| {
                        strings.is_valid(i)
                            && holds(op, Some(strings.value(i).cmp(text))) == Some(true)
                    })
                })
                .collect()
        }
        DataType::Dictionary(..) => {
            let dictionary = array.as_any_dictionary_opt()?;
            let entries = compare_array(dictionary.values().as_ref(), op, literal)?;
            let nulls = dictionary.keys().nulls();
            let rows = dictionary_keys(dictionary)
                .into_iter()
                .enumerate()
                .map(|(row, key)| {
                    nulls.is_none_or(|nulls| nulls.is_valid(row))
                        && entries.rows.get(key).copied().unwrap_or(false)
                })
                .collect();
            return Some(Kept {
                rows,
                certain: entries.certain,
            });
        }
        DataType::Date32 => return as_text::<Date32Type>(array, op, literal, &date, DAYS),
        DataType::Timestamp(unit, zone) => {
            let zoned = zone.is_some();
            let format = |ticks| timestamp(ticks, *unit, zoned);
            let domain = ticks_domain(*unit);
            return match unit {
                TimeUnit::Second => {
                    as_text::<TimestampSecondType>(array, op, literal, &format, domain)
                }
                TimeUnit::Millisecond => {
                    as_text::<TimestampMillisecondType>(array, op, literal, &format, domain)
                }
                TimeUnit::Microsecond => {
                    as_text::<TimestampMicrosecondType>(array, op, literal, &format, domain)
                }
                TimeUnit::Nanosecond => {
                    as_text::<TimestampNanosecondType>(array, op, literal, &format, domain)
                }
            };
        }
        _ => return None,
    };
    Some(Kept {
        rows,
        certain: true,
    })
}

/// Numbers against a literal, as [`Number::compare`] orders them: integers with an integer
/// exactly, anything else as doubles (a literal that is no number keeps no row: typed comparison
/// of a number with anything else is unknown).
fn numbers<T: ArrowPrimitiveType>(
    array: &dyn Array,
    op: &BinaryOperator,
    literal: Option<Number>,
) -> Option<Vec<bool>>
where
    T::Native: AsNumber,
{
    let values = array.as_primitive_opt::<T>()?;
    let raw = values.values();
    let mut rows = match (literal, T::Native::INTEGER) {
        (None, _) => return Some(vec![false; array.len()]),
        (Some(Number::Int(literal)), true) => {
            compare_all(raw.iter().map(|v| v.as_f64_or_i64().1), literal, op)
        }
        (Some(Number::Int(literal)), false) => {
            compare_all(raw.iter().map(|v| v.as_f64_or_i64().0), literal as f64, op)
        }
        (Some(Number::Float(literal)), _) => {
            compare_all(raw.iter().map(|v| v.as_f64_or_i64().0), literal, op)
        }
    };
    if let Some(nulls) = values.nulls() {
        for (row, keep) in rows.iter_mut().enumerate() {
            *keep &= nulls.is_valid(row);
        }
    }
    Some(rows)
}

/// `value op literal` for each value, the operator chosen once, in SQL order: a NaN value is
/// greater than any literal (literals are never NaN), so `>`, `>=` and `<>` keep it and the others
/// do not; the negated forms say exactly that without a branch.
fn compare_all<X: PartialOrd + Copy>(
    values: impl Iterator<Item = X>,
    literal: X,
    op: &BinaryOperator,
) -> Vec<bool> {
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    match op {
        BinaryOperator::Eq => values.map(|x| x == literal).collect(),
        BinaryOperator::NotEq => values.map(|x| x != literal).collect(),
        BinaryOperator::Lt => values.map(|x| x < literal).collect(),
        BinaryOperator::LtEq => values.map(|x| x <= literal).collect(),
        BinaryOperator::Gt => values.map(|x| !(x <= literal)).collect(),
        _ => values.map(|x| !(x < literal)).collect(),
    }
}

/// Native values that are SQL numbers: as a double and, for integers, exactly.
trait AsNumber: Copy {
    const INTEGER: bool;
    fn as_f64_or_i64(self) -> (f64, i64);
}

macro_rules! integers_as_numbers {
    ($($t:ty),*) => {$(
        impl AsNumber for $t {
            const INTEGER: bool = true;
            fn as_f64_or_i64(self) -> (f64, i64) {
                (i64::from(self) as f64, i64::from(self))
            }
        }
    )*};
}
integers_as_numbers!(i8, i16, i32, i64, u8, u16, u32);

impl AsNumber for f32 {
    const INTEGER: bool = false;
    fn as_f64_or_i64(self) -> (f64, i64) {
        (f64::from(self), 0)
    }
}

impl AsNumber for f64 {
    const INTEGER: bool = false;
    fn as_f64_or_i64(self) -> (f64, i64) {
        (self, 0)
    }
}

/// Days of 0000-01-01 and 9999-12-31: within them a date's text orders as the date does.
const DAYS: (i64, i64) = (-719_528, 2_932_896);

/// The ticks of a unit whose text has a four-digit year (within i64).
fn ticks_domain(unit: TimeUnit) -> (i64, i64) {
    let per_day: i128 = match unit {
        TimeUnit::Second => 86_400,
        TimeUnit::Millisecond => 86_400_000,
        TimeUnit::Microsecond => 86_400_000_000,
        TimeUnit::Nanosecond => 86_400_000_000_000,
    };
    let clamp = |t: i128| t.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    (
        clamp(i128::from(DAYS.0) * per_day),
        clamp((i128::from(DAYS.1) + 1) * per_day - 1),
    )
}

/// Dates and timestamps, whose SQL value is their text, against a text literal: the literal
/// becomes the first tick whose text is at least (or above) it, found by bisection, and rows
/// compare as integers. A value outside the domain where text orders as time is left to
/// evaluation (kept, uncertain); a literal that is no text keeps no row.
fn as_text<T: ArrowPrimitiveType>(
    array: &dyn Array,
    op: &BinaryOperator,
    literal: &Value,
    format: &dyn Fn(i64) -> String,
    (low, high): (i64, i64),
) -> Option<Kept>
where
    T::Native: Into<i64>,
{
    let values = array.as_primitive_opt::<T>()?;
    let Value::Str(text) = literal else {
        return Some(Kept {
            rows: vec![false; array.len()],
            certain: true,
        });
    };
    // The first tick whose text is >= the literal, and the first whose text is > it.
    let first = |above: bool| {
        let (mut lo, mut hi) = (i128::from(low), i128::from(high) + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let text_at = format(mid as i64);
            let past = if above {
                text_at.as_str() > text.as_ref()
            } else {
                text_at.as_str() >= text.as_ref()
            };
            if past { hi = mid } else { lo = mid + 1 }
        }
        lo
    };
    let (at_least, above) = (first(false), first(true));
    let mut certain = true;
    let rows = values
        .iter()
        .map(|value| {
            let Some(ticks) = value.map(Into::into) else {
                return false;
            };
            if !(low..=high).contains(&ticks) {
                certain = false;
                return true;
            }
            let ticks = i128::from(ticks);
            let ordering = if ticks < at_least {
                Ordering::Less
            } else if ticks < above {
                Ordering::Equal
            } else {
                Ordering::Greater
            };
            holds(op, Some(ordering)) == Some(true)
        })
        .collect();
    Some(Kept { rows, certain })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{
        ArrayRef, Date32Array, DictionaryArray, Float64Array, Int64Array, StringArray,
        TimestampMicrosecondArray,
    };
    use proptest::prelude::*;

    use super::*;
    use crate::scan::parquet::values::value_at;
    use crate::scan::value::compare_typed;

    const OPS: [BinaryOperator; 6] = [
        BinaryOperator::Eq,
        BinaryOperator::NotEq,
        BinaryOperator::Lt,
        BinaryOperator::LtEq,
        BinaryOperator::Gt,
        BinaryOperator::GtEq,
    ];

    /// What evaluation decides for every row: the pre-filter must agree wherever it is certain.
    fn agrees_with_evaluation(array: ArrayRef, literal: Value<'static>) {
        for op in OPS {
            let Some(kept) = compare_array(array.as_ref(), &op, &literal) else {
                continue;
            };
            for row in 0..array.len() {
                let value = value_at(array.as_ref(), row);
                let evaluated = holds(&op, compare_typed(&value, &literal)) == Some(true);
                if kept.certain {
                    assert_eq!(kept.rows[row], evaluated, "{value:?} {op} {literal:?}");
                } else {
                    assert!(kept.rows[row] || !evaluated, "{value:?} {op} {literal:?}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn numbers_decide_as_evaluation(
            values in proptest::collection::vec(proptest::option::of(-50i64..50), 0..40),
            literal in prop_oneof![
                (-60i64..60).prop_map(Value::Int),
                (-60.0f64..60.0).prop_map(Value::Float),
                Just(Value::Str("7".into())),
                Just(Value::Str("x".into())),
                Just(Value::Null),
            ],
        ) {
            agrees_with_evaluation(Arc::new(Int64Array::from(values.clone())), literal.clone());
            let floats: Vec<Option<f64>> = values.iter().map(|v| v.map(|v| v as f64 / 4.0)).collect();
            agrees_with_evaluation(Arc::new(Float64Array::from(floats)), literal);
        }

        #[test]
        fn times_decide_as_their_text(
            ticks in proptest::collection::vec(proptest::option::of(-3_000_000_000_000_000i64..3_000_000_000_000_000), 0..30),
            literal in prop_oneof![
                Just("2024-01-15"), Just("2024-01-15T00:00:00"), Just("1969-12-31T23:59:59.999999"),
                Just("2024"), Just(""), Just("abc"), Just("2024-01-15T00:00:00.000000Z"),
            ],
        ) {
            let literal = Value::Str(literal.into());
            let times = TimestampMicrosecondArray::from(ticks.clone());
            agrees_with_evaluation(Arc::new(times.clone()), literal.clone());
            agrees_with_evaluation(Arc::new(times.with_timezone("UTC")), literal.clone());
            let days: Vec<Option<i32>> = ticks.iter().map(|t| t.map(|t| (t / 86_400_000_000) as i32)).collect();
            agrees_with_evaluation(Arc::new(Date32Array::from(days)), literal);
        }

        #[test]
        fn strings_decide_as_evaluation(
            values in proptest::collection::vec(proptest::option::of("[a-c]{0,3}"), 0..30),
            literal in "[a-c]{0,3}",
        ) {
            let literal = Value::Str(literal.into());
            // Each distinct string an entry, rows its keys (arrow's builder takes no empty input).
            let mut entries: Vec<&str> = values.iter().flatten().map(String::as_str).collect();
            entries.sort_unstable();
            entries.dedup();
            let key = |v: &str| entries.iter().position(|e| *e == v).map(|k| k as i32);
            let keys: Vec<Option<i32>> =
                values.iter().map(|v| v.as_deref().and_then(key)).collect();
            let entries = Arc::new(StringArray::from(entries.clone()));
            let dictionary = DictionaryArray::<Int32Type>::try_new(keys.into(), entries).unwrap();
            agrees_with_evaluation(Arc::new(dictionary), literal.clone());
            agrees_with_evaluation(Arc::new(StringArray::from(values)), literal);
        }
    }

    #[test]
    fn conjuncts_combine_and_uncovered_ones_make_it_uncertain() {
        let batch = RecordBatch::try_from_iter([
            ("x", Arc::new(Int64Array::from(vec![1, 5, 9])) as ArrayRef),
            (
                "s",
                Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
            ),
        ])
        .unwrap();
        let comparison = |name: &str, op, literal| ColumnComparison {
            path: vec![name.to_string()],
            op,
            literal,
        };
        let kept = prefilter(
            &batch,
            &[
                comparison("x", BinaryOperator::Gt, Value::Int(2)),
                comparison("s", BinaryOperator::LtEq, Value::Str("b".into())),
            ],
        )
        .unwrap();
        assert_eq!((kept.rows, kept.certain), (vec![false, true, false], true));
        let kept = prefilter(
            &batch,
            &[
                comparison("x", BinaryOperator::Gt, Value::Int(2)),
                comparison("missing", BinaryOperator::Eq, Value::Int(1)),
            ],
        )
        .unwrap();
        assert_eq!((kept.rows, kept.certain), (vec![false, true, true], false));
        assert!(
            prefilter(
                &batch,
                &[comparison("y", BinaryOperator::Eq, Value::Int(1))]
            )
            .is_none()
        );
    }
}
