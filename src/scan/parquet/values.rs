//! Arrow values as the query sees them: integers of every width, floats, DECIMAL as a number,
//! strings and binary as UTF-8 text, booleans, dates and
//! timestamps as ISO 8601 text (fixed width per unit, so text order is time order), nested values
//! as JSON text. Statistics go through the same conversion, so pruning agrees with evaluation.

use std::borrow::Cow;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Decimal32Type, Decimal64Type, Decimal128Type, Decimal256Type,
    Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    Time32MillisecondType, Time32SecondType, Time64MicrosecondType, Time64NanosecondType,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{
    AnyDictionaryArray, Array, ArrowPrimitiveType, PrimitiveArray, RecordBatch, StructArray,
};
use arrow_schema::{DataType, TimeUnit};

use crate::scan::chunk::rows::CsvRecordOut;
use crate::scan::sql::Record;
use crate::scan::value::Value;

/// The value of row `row` of `array` (NULL past its end).
pub(crate) fn value_at(array: &dyn Array, row: usize) -> Value<'_> {
    if row >= array.len() || array.is_null(row) {
        return Value::Null;
    }
    let data_type = array.data_type();
    match data_type {
        DataType::Null => Value::Null,
        DataType::Boolean => array
            .as_boolean_opt()
            .map_or(Value::Null, |a| Value::Bool(a.value(row))),
        _ if data_type.is_numeric() => number_at(array, row),
        DataType::Date32
        | DataType::Date64
        | DataType::Timestamp(..)
        | DataType::Time32(_)
        | DataType::Time64(_) => time_at(array, row),
        DataType::Dictionary(..) => match array.as_any_dictionary_opt() {
            Some(dictionary) => match value_at(dictionary.keys(), row) {
                Value::Int(key) if key >= 0 => value_at(dictionary.values().as_ref(), key as usize),
                _ => Value::Null,
            },
            None => Value::Null,
        },
        _ => text_at(array, row),
    }
}

/// The entry each row of `dictionary` points at, as an index (a NULL row's is any index, maybe
/// past the entries; so is every row's when there are none, which arrow's `normalized_keys`
/// refuses).
pub(super) fn dictionary_keys(dictionary: &dyn AnyDictionaryArray) -> Vec<usize> {
    match dictionary.values().is_empty() {
        true => vec![usize::MAX; dictionary.keys().len()],
        false => dictionary.normalized_keys(),
    }
}

fn int<T: ArrowPrimitiveType>(array: &dyn Array, row: usize) -> Option<i64>
where
    T::Native: TryInto<i64>,
{
    array.as_primitive_opt::<T>()?.value(row).try_into().ok()
}

/// A number of any width (a non-null row).
fn number_at(array: &dyn Array, row: usize) -> Value<'_> {
    let unknown = Value::Null;
    match array.data_type() {
        DataType::Int8 => int::<Int8Type>(array, row).map_or(unknown, Value::Int),
        DataType::Int16 => int::<Int16Type>(array, row).map_or(unknown, Value::Int),
        DataType::Int32 => int::<Int32Type>(array, row).map_or(unknown, Value::Int),
        DataType::Int64 => int::<Int64Type>(array, row).map_or(unknown, Value::Int),
        DataType::UInt8 => int::<UInt8Type>(array, row).map_or(unknown, Value::Int),
        DataType::UInt16 => int::<UInt16Type>(array, row).map_or(unknown, Value::Int),
        DataType::UInt32 => int::<UInt32Type>(array, row).map_or(unknown, Value::Int),
        DataType::UInt64 => match array.as_primitive_opt::<UInt64Type>() {
            // Past i64, an unsigned integer is the nearest double.
            Some(a) => i64::try_from(a.value(row))
                .map_or_else(|_| Value::Float(a.value(row) as f64), Value::Int),
            None => unknown,
        },
        DataType::Float16 => array
            .as_primitive_opt::<Float16Type>()
            .map_or(unknown, |a| Value::Float(a.value(row).to_f64())),
        DataType::Float32 => array
            .as_primitive_opt::<Float32Type>()
            .map_or(unknown, |a| Value::Float(f64::from(a.value(row)))),
        DataType::Float64 => array
            .as_primitive_opt::<Float64Type>()
            .map_or(unknown, |a| Value::Float(a.value(row))),
        DataType::Decimal32(..) => decimal::<Decimal32Type>(array, row),
        DataType::Decimal64(..) => decimal::<Decimal64Type>(array, row),
        DataType::Decimal128(..) => decimal::<Decimal128Type>(array, row),
        DataType::Decimal256(..) => decimal::<Decimal256Type>(array, row),
        _ => unknown,
    }
}

/// A date, time or timestamp as its ISO 8601 text (a non-null row).
fn time_at(array: &dyn Array, row: usize) -> Value<'_> {
    let text = |text: String| Value::Str(Cow::Owned(text));
    let unknown = Value::Null;
    match array.data_type() {
        DataType::Date32 => int::<Date32Type>(array, row).map_or(unknown, |d| text(date(d))),
        DataType::Date64 => int::<Date64Type>(array, row)
            .map_or(unknown, |ms| text(date(ms.div_euclid(86_400_000)))),
        DataType::Timestamp(unit, zone) => {
            let ticks = match unit {
                TimeUnit::Second => int::<TimestampSecondType>(array, row),
                TimeUnit::Millisecond => int::<TimestampMillisecondType>(array, row),
                TimeUnit::Microsecond => int::<TimestampMicrosecondType>(array, row),
                TimeUnit::Nanosecond => int::<TimestampNanosecondType>(array, row),
            };
            ticks.map_or(unknown, |t| text(timestamp(t, *unit, zone.is_some())))
        }
        DataType::Time32(unit) | DataType::Time64(unit) => {
            let ticks = match unit {
                TimeUnit::Second => int::<Time32SecondType>(array, row),
                TimeUnit::Millisecond => int::<Time32MillisecondType>(array, row),
                TimeUnit::Microsecond => int::<Time64MicrosecondType>(array, row),
                TimeUnit::Nanosecond => int::<Time64NanosecondType>(array, row),
            };
            ticks.map_or(unknown, |t| text(time_of_day(t, *unit)))
        }
        _ => unknown,
    }
}

/// Strings and binary as UTF-8 text; nested values as JSON text (a non-null row).
fn text_at(array: &dyn Array, row: usize) -> Value<'_> {
    let unknown = Value::Null;
    match array.data_type() {
        DataType::Utf8 => array
            .as_string_opt::<i32>()
            .map_or(unknown, |a| Value::Str(Cow::Borrowed(a.value(row)))),
        DataType::LargeUtf8 => array
            .as_string_opt::<i64>()
            .map_or(unknown, |a| Value::Str(Cow::Borrowed(a.value(row)))),
        DataType::Utf8View => array
            .as_string_view_opt()
            .map_or(unknown, |a| Value::Str(Cow::Borrowed(a.value(row)))),
        DataType::Binary => array
            .as_binary_opt::<i32>()
            .map_or(unknown, |a| utf8(a.value(row))),
        DataType::LargeBinary => array
            .as_binary_opt::<i64>()
            .map_or(unknown, |a| utf8(a.value(row))),
        DataType::BinaryView => array
            .as_binary_view_opt()
            .map_or(unknown, |a| utf8(a.value(row))),
        DataType::FixedSizeBinary(_) => array
            .as_fixed_size_binary_opt()
            .map_or(unknown, |a| utf8(a.value(row))),
        _ => Value::Str(Cow::Owned(json_at(array, row).to_string())),
    }
}

fn utf8(bytes: &[u8]) -> Value<'_> {
    Value::Str(String::from_utf8_lossy(bytes))
}

/// A DECIMAL as a number: an integer when it has no fraction and fits, else the double nearest
/// to its exact value.
fn decimal<T: arrow_array::types::DecimalType>(array: &dyn Array, row: usize) -> Value<'static> {
    let text = match array.as_primitive_opt::<T>() {
        Some(a) => a.value_as_string(row),
        None => return Value::Null,
    };
    match crate::scan::value::parse_number(&text) {
        Some(number) => number.into(),
        None => Value::Str(Cow::Owned(text)),
    }
}

/// Row `row` of `array` as JSON: structs as objects, lists as arrays, maps as objects.
pub(crate) fn json_at(array: &dyn Array, row: usize) -> serde_json::Value {
    use serde_json::Value as Json;
    if row >= array.len() || array.is_null(row) {
        return Json::Null;
    }
    let list = |values: &dyn Array, range: std::ops::Range<usize>| {
        Json::Array(range.map(|i| json_at(values, i)).collect())
    };
    match array.data_type() {
        DataType::Struct(_) => match array.as_struct_opt() {
            Some(s) => Json::Object(
                s.column_names()
                    .iter()
                    .zip(s.columns())
                    .map(|(name, column)| (name.to_string(), json_at(column.as_ref(), row)))
                    .collect(),
            ),
            None => Json::Null,
        },
        DataType::List(_) => list_json::<i32>(array, row),
        DataType::LargeList(_) => list_json::<i64>(array, row),
        DataType::FixedSizeList(_, size) => match array.as_fixed_size_list_opt() {
            Some(a) => {
                let size = (*size).max(0) as usize;
                list(a.values().as_ref(), row * size..(row + 1) * size)
            }
            None => Json::Null,
        },
        DataType::Map(..) => match array.as_map_opt() {
            Some(a) => {
                let offsets = a.value_offsets();
                let (keys, values) = (a.keys(), a.values());
                Json::Object(
                    (offsets[row] as usize..offsets[row + 1] as usize)
                        .map(|i| {
                            let key = value_at(keys.as_ref(), i).to_field().into_owned();
                            (key, json_at(values.as_ref(), i))
                        })
                        .collect(),
                )
            }
            None => Json::Null,
        },
        DataType::Union(..)
        | DataType::RunEndEncoded(..)
        | DataType::ListView(_)
        | DataType::LargeListView(_)
        | DataType::Duration(_)
        | DataType::Interval(_) => Json::String(format!("<{}>", array.data_type())),
        _ => value_at(array, row).to_json(),
    }
}

/// Row `row` of a list array as a JSON array.
fn list_json<O: arrow_array::OffsetSizeTrait>(array: &dyn Array, row: usize) -> serde_json::Value {
    match array.as_list_opt::<O>() {
        Some(a) => {
            let offsets = a.value_offsets();
            let (start, end) = (offsets[row].as_usize(), offsets[row + 1].as_usize());
            serde_json::Value::Array(
                (start..end)
                    .map(|i| json_at(a.values().as_ref(), i))
                    .collect(),
            )
        }
        None => serde_json::Value::Null,
    }
}

/// `YYYY-MM-DD` of a day count since 1970-01-01 (proleptic Gregorian; H. Hinnant's algorithm).
pub(super) fn date(days: i64) -> String {
    let (year, month, day) = civil(days);
    format!("{year:04}-{month:02}-{day:02}")
}

fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn per_second(unit: TimeUnit) -> (i64, usize) {
    match unit {
        TimeUnit::Second => (1, 0),
        TimeUnit::Millisecond => (1_000, 3),
        TimeUnit::Microsecond => (1_000_000, 6),
        TimeUnit::Nanosecond => (1_000_000_000, 9),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]` (`Z` appended for a zoned timestamp, which Parquet stores in
/// UTC), with as many fraction digits as the unit has.
pub(super) fn timestamp(ticks: i64, unit: TimeUnit, zoned: bool) -> String {
    let (per, digits) = per_second(unit);
    let seconds = ticks.div_euclid(per);
    let days = seconds.div_euclid(86_400);
    let mut text = date(days);
    text.push('T');
    text.push_str(&clock(
        seconds.rem_euclid(86_400),
        ticks.rem_euclid(per),
        digits,
    ));
    if zoned {
        text.push('Z');
    }
    text
}

fn time_of_day(ticks: i64, unit: TimeUnit) -> String {
    let (per, digits) = per_second(unit);
    clock(
        ticks.div_euclid(per).rem_euclid(86_400),
        ticks.rem_euclid(per),
        digits,
    )
}

fn clock(second_of_day: i64, fraction: i64, digits: usize) -> String {
    let (h, m, s) = (
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
    );
    match digits {
        0 => format!("{h:02}:{m:02}:{s:02}"),
        _ => format!("{h:02}:{m:02}:{s:02}.{fraction:0digits$}"),
    }
}

/// One column a query reads, found in a batch: the arrays along its path (a null struct makes
/// its fields null).
pub(crate) struct Resolved<'b> {
    pub(crate) path: &'b [String],
    chain: Vec<&'b dyn Array>,
}

impl<'b> Resolved<'b> {
    /// `path` in `batch`, or `None` when the batch has no such column.
    pub(crate) fn find(batch: &'b RecordBatch, path: &'b [String]) -> Option<Resolved<'b>> {
        let (first, rest) = path.split_first()?;
        let mut chain: Vec<&'b dyn Array> = vec![batch.column_by_name(first)?.as_ref()];
        for name in rest {
            let parent: &'b StructArray = chain.last()?.as_struct_opt()?;
            chain.push(parent.column_by_name(name)?.as_ref());
        }
        Some(Resolved { path, chain })
    }

    pub(crate) fn value(&self, row: usize) -> Value<'b> {
        match self.chain.split_last() {
            Some((leaf, parents)) if !parents.iter().any(|p| p.is_null(row)) => {
                value_at(*leaf, row)
            }
            _ => Value::Null,
        }
    }

    /// The value at `row` as JSON, nested values nested.
    pub(crate) fn json(&self, row: usize) -> serde_json::Value {
        match self.chain.split_last() {
            Some((leaf, parents)) if !parents.iter().any(|p| p.is_null(row)) => json_at(*leaf, row),
            _ => serde_json::Value::Null,
        }
    }
}

/// How a column's values become CSV fields, chosen once per batch: a top-level column of 64-bit
/// integers or doubles straight from its array (the bulk of numeric output), any other through
/// its values.
pub(crate) enum CsvColumn<'r, 'b> {
    Ints(&'b PrimitiveArray<Int64Type>),
    Floats(&'b PrimitiveArray<Float64Type>),
    Values(&'r Resolved<'b>),
}

impl<'r, 'b> CsvColumn<'r, 'b> {
    pub(crate) fn of(column: &'r Resolved<'b>) -> CsvColumn<'r, 'b> {
        if let [leaf] = column.chain[..] {
            if let Some(ints) = leaf.as_primitive_opt::<Int64Type>() {
                return CsvColumn::Ints(ints);
            }
            if let Some(floats) = leaf.as_primitive_opt::<Float64Type>() {
                return CsvColumn::Floats(floats);
            }
        }
        CsvColumn::Values(column)
    }

    /// The value at `row` as a field of `record`.
    pub(crate) fn write(&self, row: usize, record: &mut CsvRecordOut) {
        match self {
            CsvColumn::Ints(ints) if row < ints.len() && ints.is_valid(row) => {
                record.int(ints.value(row))
            }
            CsvColumn::Floats(floats) if row < floats.len() && floats.is_valid(row) => {
                record.float(floats.value(row))
            }
            CsvColumn::Ints(_) | CsvColumn::Floats(_) => record.null(),
            CsvColumn::Values(column) => record.value(&column.value(row)),
        }
    }
}

/// Row `row` of a batch, its columns found by path.
pub(crate) struct ArrowRow<'r, 'b> {
    pub(crate) columns: &'r [Resolved<'b>],
    pub(crate) row: usize,
}

impl Record for ArrowRow<'_, '_> {
    fn field(&self, index: usize) -> Result<Value<'_>, String> {
        Err(format!(
            "Parquet columns are named, not numbered: there is no _{}",
            index + 1
        ))
    }

    fn path(&self, path: &[String]) -> Value<'_> {
        self.columns
            .iter()
            .find(|c| c.path == path)
            .map_or(Value::Null, |c| c.value(self.row))
    }

    fn typed(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(19_723), "2024-01-01");
        assert_eq!(date(-1), "1969-12-31");
        assert_eq!(date(11_016), "2000-02-29");
        let cases = [
            (0, TimeUnit::Second, false, "1970-01-01T00:00:00"),
            (
                1_704_067_200_123,
                TimeUnit::Millisecond,
                true,
                "2024-01-01T00:00:00.123Z",
            ),
            (
                -1,
                TimeUnit::Microsecond,
                false,
                "1969-12-31T23:59:59.999999",
            ),
            (
                86_399_000_000_001,
                TimeUnit::Nanosecond,
                false,
                "1970-01-01T23:59:59.000000001",
            ),
        ];
        for (ticks, unit, zoned, want) in cases {
            assert_eq!(timestamp(ticks, unit, zoned), want);
        }
        assert_eq!(
            time_of_day(3_723_004, TimeUnit::Millisecond),
            "01:02:03.004"
        );
    }

    #[test]
    fn arrow_values() {
        use arrow_array::{
            BooleanArray, Decimal128Array, Int64Array, StringArray, TimestampMicrosecondArray,
            UInt64Array,
        };
        let ints = Int64Array::from(vec![Some(-5), None]);
        assert_eq!(value_at(&ints, 0), Value::Int(-5));
        assert_eq!(value_at(&ints, 1), Value::Null);
        assert_eq!(value_at(&ints, 2), Value::Null);
        let big = UInt64Array::from(vec![u64::MAX]);
        assert_eq!(value_at(&big, 0), Value::Float(18446744073709551615.0));
        let money = Decimal128Array::from(vec![12345, -5])
            .with_precision_and_scale(10, 2)
            .unwrap();
        assert_eq!(value_at(&money, 0), Value::Float(123.45));
        assert_eq!(value_at(&money, 1), Value::Float(-0.05));
        let whole = Decimal128Array::from(vec![7])
            .with_precision_and_scale(5, 0)
            .unwrap();
        assert_eq!(value_at(&whole, 0), Value::Int(7));
        let texts = StringArray::from(vec!["é"]);
        assert_eq!(value_at(&texts, 0), Value::Str("é".into()));
        let flags = BooleanArray::from(vec![true]);
        assert_eq!(value_at(&flags, 0), Value::Bool(true));
        let times = TimestampMicrosecondArray::from(vec![0]).with_timezone("UTC");
        assert_eq!(
            value_at(&times, 0),
            Value::Str("1970-01-01T00:00:00.000000Z".into())
        );
    }
}
