//! Values of the SQL subset and the exactly mergeable aggregate accumulators.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::word::{bytes_equal, non_digits};

/// A value of a record field or an expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    /// SQL NULL: a field that is absent, or JSON's null.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A double, NaN and the infinities included.
    Float(f64),
    /// Text, borrowed from the record when it can be.
    Str(Cow<'a, str>),
}

impl Value<'_> {
    /// The value as a number: numbers as they are, strings parsed (surrounding spaces ignored).
    pub fn as_number(&self) -> Option<Value<'static>> {
        self.number().map(Value::from)
    }

    /// [`Value::as_number`] as a [`Number`].
    pub fn number(&self) -> Option<Number> {
        match self {
            Value::Int(i) => Some(Number::Int(*i)),
            Value::Float(f) => Some(Number::Float(*f)),
            Value::Str(s) => parse_number(s),
            _ => None,
        }
    }

    /// Whether the value counts as absent for aggregates: NULL, or an empty CSV field.
    pub fn is_absent(&self) -> bool {
        match self {
            Value::Null => true,
            Value::Str(s) => s.is_empty(),
            _ => false,
        }
    }

    /// The value as JSON (NaN and the infinities as [`float_json`] writes them).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => float_json(*f),
            Value::Str(s) => serde_json::Value::String(s.to_string()),
        }
    }

    /// A JSON value as a query's: integers that fit `i64` as Int, other numbers as Float, arrays
    /// and objects as their JSON text.
    pub fn from_json(value: &serde_json::Value) -> Value<'_> {
        match value {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::Str(Cow::Borrowed(s)),
            nested => Value::Str(Cow::Owned(nested.to_string())),
        }
    }

    /// Appends [`Value::to_field`]'s text to `out` (without allocating for numbers).
    pub fn write_field(&self, out: &mut String) {
        use std::fmt::Write;
        // Writing to a String cannot fail.
        let _ = match self {
            Value::Null => Ok(()),
            Value::Bool(b) => write!(out, "{b}"),
            Value::Int(i) => write!(out, "{i}"),
            Value::Float(f) => match non_finite_text(*f) {
                Some(text) => out.write_str(text),
                None => write!(out, "{f}"),
            },
            Value::Str(s) => out.write_str(s),
        };
    }

    /// Text of the value in a CSV field.
    pub fn to_field(&self) -> Cow<'_, str> {
        match self {
            Value::Null => Cow::Borrowed(""),
            Value::Bool(b) => Cow::Owned(b.to_string()),
            Value::Int(i) => Cow::Owned(i.to_string()),
            Value::Float(f) => match non_finite_text(*f) {
                Some(text) => Cow::Borrowed(text),
                None => Cow::Owned(f.to_string()),
            },
            Value::Str(s) => Cow::Borrowed(s),
        }
    }
}

/// How NaN and the infinities are written, in CSV fields and (as JSON strings) in JSON: as
/// PostgreSQL writes them (`NaN`, `Infinity`, `-Infinity`); `None` for a finite number.
pub fn non_finite_text(f: f64) -> Option<&'static str> {
    match f {
        _ if f.is_nan() => Some("NaN"),
        f64::INFINITY => Some("Infinity"),
        f64::NEG_INFINITY => Some("-Infinity"),
        _ => None,
    }
}

/// A float as JSON: a number, or for NaN and the infinities (which JSON numbers cannot be) the
/// string PostgreSQL's `to_json` gives them.
pub fn float_json(f: f64) -> serde_json::Value {
    match non_finite_text(f) {
        Some(text) => text.into(),
        None => serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into),
    }
}

/// Parses a decimal integer or a floating-point number. NaN and the infinities are numbers in
/// the spellings their writers use (`NaN`, `nan`, `NAN`, `inf`, `Inf`, `INF`, `Infinity`,
/// `infinity`, `INFINITY`, with an optional sign), and only those: text such as `Nan` or `Info`
/// stays text.
pub fn parse_number(text: &str) -> Option<Number> {
    parse_plain_decimal(text.as_bytes()).or_else(|| parse_any_number(text))
}

fn parse_any_number(text: &str) -> Option<Number> {
    let text = text.trim();
    let first = *text.as_bytes().first()?;
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return non_finite_number(text);
    }
    if !text.contains(['.', 'e', 'E'])
        && let Ok(i) = text.parse::<i64>()
    {
        return Some(Number::Int(i));
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => Some(Number::Float(f)),
        // A decimal beyond the doubles (1e999) is infinite; `inf` and `nan` after a sign are
        // checked for their spelling.
        Ok(f) if f.is_infinite() && text.bytes().any(|b| b.is_ascii_digit()) => {
            Some(Number::Float(f))
        }
        _ => non_finite_number(text),
    }
}

/// NaN or an infinity, in one of the spellings [`parse_number`] names.
fn non_finite_number(text: &str) -> Option<Number> {
    let (sign, word) = match text.as_bytes().first()? {
        b'-' => (-1.0, &text[1..]),
        b'+' => (1.0, &text[1..]),
        _ => (1.0, text),
    };
    let infinite = ["inf", "Inf", "INF", "infinity", "Infinity", "INFINITY"];
    if ["nan", "NaN", "NAN"].contains(&word) {
        Some(Number::Float(f64::NAN))
    } else if infinite.contains(&word) {
        Some(Number::Float(sign * f64::INFINITY))
    } else {
        None
    }
}

/// A number as the hot paths pass it: small and `Copy`, unlike [`Value`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    /// A 64-bit integer.
    Int(i64),
    /// A double, NaN and the infinities included.
    Float(f64),
}

impl Number {
    /// Integers compare exactly; an integer with a float as the nearest float; floats in SQL
    /// order ([`sql_float_order`]). Always known: numbers are totally ordered.
    pub fn compare(self, other: Number) -> Option<Ordering> {
        Some(match (self, other) {
            (Number::Int(x), Number::Int(y)) => x.cmp(&y),
            (Number::Int(x), Number::Float(y)) => sql_float_order(x as f64, y),
            (Number::Float(x), Number::Int(y)) => sql_float_order(x, y as f64),
            (Number::Float(x), Number::Float(y)) => sql_float_order(x, y),
        })
    }
}

/// Floats in the order of PostgreSQL, DuckDB and Spark: NaN equals NaN and sorts above every
/// number (+Infinity included); -0.0 equals 0.0.
pub fn sql_float_order(x: f64, y: f64) -> Ordering {
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        // Neither is NaN: the partial order is total.
        (false, false) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
    }
}

/// The order MIN and MAX keep floats in: [`sql_float_order`], with -0.0 before 0.0 so that
/// which zero is kept does not depend on the order values came in.
fn kept_float_order(x: f64, y: f64) -> Ordering {
    match sql_float_order(x, y) {
        Ordering::Equal if !x.is_nan() => x.total_cmp(&y),
        order => order,
    }
}

impl From<Number> for Value<'static> {
    fn from(number: Number) -> Value<'static> {
        match number {
            Number::Int(i) => Value::Int(i),
            Number::Float(f) => Value::Float(f),
        }
    }
}

impl From<Number> for Scalar {
    fn from(number: Number) -> Scalar {
        match number {
            Number::Int(i) => Scalar::Int(i),
            Number::Float(f) => Scalar::Float(f),
        }
    }
}

const ASCII_ZEROS: u64 = u64::from_le_bytes([b'0'; 8]);

/// Exact powers of ten in f64 (a static: indexing a const array copied it onto the stack per call).
static POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The common case of [`parse_number`] without its general parsers: `[+-]digits[.digits]` with at
/// most 15 digits. The float is the exact mantissa divided by an exact power of ten, one correctly
/// rounded operation (Clinger's fast path, as Rust's own parser takes it). `None` otherwise.
pub fn parse_plain_decimal(bytes: &[u8]) -> Option<Number> {
    let (negative, digits) = match bytes.split_first()? {
        (b'-', rest) => (true, rest),
        (b'+', rest) => (false, rest),
        _ => (false, bytes),
    };
    let (mantissa, fraction_digits) = if digits.len() <= 8 {
        short_mantissa(digits)?
    } else {
        long_mantissa(digits)?
    };
    let signed = if negative { -mantissa } else { mantissa };
    Some(match fraction_digits {
        None => Number::Int(signed),
        Some(count) => {
            let value = mantissa as f64 / POWERS_OF_TEN[count];
            Number::Float(if negative { -value } else { value })
        }
    })
}

/// `digits[.digits]` with 1 to 15 digits: the digits as one integer, and how many follow the point.
fn long_mantissa(digits: &[u8]) -> Option<(i64, Option<usize>)> {
    if digits.len() > 16 {
        return None;
    }
    let (mut mantissa, mut point) = (0i64, None);
    for (at, &byte) in digits.iter().enumerate() {
        let digit = byte.wrapping_sub(b'0');
        if digit < 10 {
            mantissa = mantissa * 10 + i64::from(digit);
        } else if byte == b'.' && point.is_none() {
            point = Some(at);
        } else {
            return None;
        }
    }
    let count = digits.len() - usize::from(point.is_some());
    if count == 0 || count > 15 {
        return None;
    }
    Some((mantissa, point.map(|at| digits.len() - at - 1)))
}

/// [`long_mantissa`] for at most 8 bytes, all at once in a u64 (no branch per digit, whose
/// mispredictions cost more than the digits themselves when lengths vary).
fn short_mantissa(digits: &[u8]) -> Option<(i64, Option<usize>)> {
    let length = digits.len();
    // The bytes in the low `length` bytes (first byte lowest), zeros above.
    let word = match length {
        0 => return None,
        1..=3 => {
            u64::from(digits[0])
                | u64::from(digits[length / 2]) << (8 * (length / 2))
                | u64::from(digits[length - 1]) << (8 * (length - 1))
        }
        _ => {
            let low = u32::from_le_bytes(digits[..4].try_into().expect("4 bytes"));
            let high = u32::from_le_bytes(digits[length - 4..].try_into().expect("4 bytes"));
            u64::from(low) | u64::from(high) << (8 * (length - 4))
        }
    };
    // Take out the first point, if any: the bytes above it move down one.
    let (word, count, fraction_digits) = match bytes_equal(word, b'.').trailing_zeros() as usize / 8
    {
        at if at < length => {
            let below = (1u64 << (8 * at)) - 1;
            let above = word.checked_shr(8 * (at as u32 + 1)).unwrap_or(0);
            (
                word & below | above << (8 * at),
                length - 1,
                Some(length - 1 - at),
            )
        }
        _ => (word, length, None),
    };
    if count == 0 {
        return None;
    }
    // Right-aligned, with ASCII zeros in front: eight digits when the text was all digits.
    let padded = word << (8 * (8 - count)) | ASCII_ZEROS.checked_shr(8 * count as u32).unwrap_or(0);
    if non_digits(padded) != 0 {
        return None;
    }
    Some((eight_digits(padded) as i64, fraction_digits))
}

/// The value of eight ASCII digits, the first in the lowest byte: each step joins neighbours
/// (digits into pairs, pairs into fours, fours into the eight) in every lane at once.
fn eight_digits(word: u64) -> u64 {
    let digits = word - ASCII_ZEROS;
    let pairs = (digits.wrapping_mul(10) + (digits >> 8)) & 0x00FF_00FF_00FF_00FF;
    let fours = (pairs.wrapping_mul(100) + (pairs >> 16)) & 0x0000_FFFF_0000_FFFF;
    (fours.wrapping_mul(10_000) + (fours >> 32)) & 0xFFFF_FFFF
}

/// SQL comparison: numbers numerically (a string compared with a number is read as a number),
/// strings by code point, booleans with booleans; anything else (and NULL) is unknown.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Str(x), Value::Str(y)) => Some(x.as_ref().cmp(y.as_ref())),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => a.number()?.compare(b.number()?),
    }
}

/// [`compare`] for values that carry their types (Parquet): text compares with text only, never
/// read as a number.
pub fn compare_typed(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Str(_), Value::Str(_)) => compare(a, b),
        (Value::Str(_), _) | (_, Value::Str(_)) => None,
        _ => compare(a, b),
    }
}

/// [`compare_typed`] when `typed`, else [`compare`].
pub fn compare_as(typed: bool, a: &Value, b: &Value) -> Option<Ordering> {
    if typed {
        compare_typed(a, b)
    } else {
        compare(a, b)
    }
}

/// Longest text MIN and MAX keep, in bytes: longer values are kept and compared as their first
/// 4 KiB (cut at a character boundary). Cutting preserves order, so the result is the same for any
/// chunking, and every partial stays small enough for a chunk report and the scan's status.
pub const MAX_KEPT_TEXT: usize = 4 << 10;

/// `text` cut to at most [`MAX_KEPT_TEXT`] bytes at a character boundary.
fn kept_text(text: &str) -> &str {
    let mut end = text.len().min(MAX_KEPT_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Most float partials an exact sum holds: non-overlapping doubles span at most 2,098 exponent
/// bits, 53 at a time.
const MAX_FLOAT_PARTIALS: usize = 64;

/// A partial from a chunk report that cannot be merged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// A partial of another aggregate (its kind, then the kind expected).
    #[error("partials of different aggregates ({0} where {1} was expected)")]
    Kind(&'static str, &'static str),
    /// Merging would overflow a count or an integer sum (the aggregate's kind).
    #[error("a {0} partial overflows when merged")]
    Overflow(&'static str),
    /// A value no chunk produces (the aggregate's kind, what is wrong with it).
    #[error("a {0} partial is not one a chunk can produce: {1}")]
    Invalid(&'static str, &'static str),
}

/// A value kept by MIN and MAX, ordered totally: booleans, then numbers, then strings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Scalar {
    /// A boolean.
    #[serde(rename = "b")]
    Bool(bool),
    /// A 64-bit integer.
    #[serde(rename = "i")]
    Int(i64),
    /// A double.
    #[serde(rename = "f", with = "float_bits")]
    Float(f64),
    /// Text, cut to [`MAX_KEPT_TEXT`] bytes.
    #[serde(rename = "s")]
    Str(String),
}

impl Scalar {
    /// Strings that read as numbers are kept as numbers, so MIN and MAX of a CSV column of
    /// numbers compare them as numbers (unless values are `typed`: text stays text).
    fn of(value: &Value, typed: bool) -> Option<Scalar> {
        let value = match typed {
            true => value.clone(),
            false => value.as_number().unwrap_or_else(|| value.clone()),
        };
        Some(match value {
            Value::Null => return None,
            Value::Bool(b) => Scalar::Bool(b),
            Value::Int(i) => Scalar::Int(i),
            Value::Float(f) => Scalar::Float(f),
            Value::Str(s) => Scalar::Str(kept_text(&s).to_string()),
        })
    }

    fn rank(&self) -> u8 {
        match self {
            Scalar::Bool(_) => 0,
            Scalar::Int(_) | Scalar::Float(_) => 1,
            Scalar::Str(_) => 2,
        }
    }

    fn total_cmp(&self, other: &Scalar) -> Ordering {
        match (self, other) {
            (Scalar::Bool(a), Scalar::Bool(b)) => a.cmp(b),
            (Scalar::Str(a), Scalar::Str(b)) => a.cmp(b),
            (Scalar::Int(a), Scalar::Int(b)) => a.cmp(b),
            (Scalar::Int(a), Scalar::Float(b)) => kept_float_order(*a as f64, *b),
            (Scalar::Float(a), Scalar::Int(b)) => kept_float_order(*a, *b as f64),
            (Scalar::Float(a), Scalar::Float(b)) => kept_float_order(*a, *b),
            _ => self.rank().cmp(&other.rank()),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            Scalar::Bool(b) => (*b).into(),
            Scalar::Int(i) => (*i).into(),
            Scalar::Float(f) => float_json(*f),
            Scalar::Str(s) => s.clone().into(),
        }
    }
}

/// An exact sum: integers in 128 bits, floats as Shewchuk's non-overlapping partials (the
/// algorithm of Python's `math.fsum`), so sums merged from chunks in any grouping give the same,
/// correctly rounded, result as one sequential pass.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExactSum {
    /// Terms added.
    #[serde(rename = "n")]
    pub count: u64,
    /// Sum of the integer terms, exact.
    #[serde(rename = "i", with = "i128_text")]
    pub integers: i128,
    /// Sum of the finite float terms, as non-overlapping partials.
    #[serde(
        rename = "f",
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "float_bits"
    )]
    pub partials: Vec<f64>,
    /// Whether a float term was added: the total is a float then.
    #[serde(rename = "x", default, skip_serializing_if = "std::ops::Not::not")]
    pub has_float: bool,
    /// Non-finite terms, which the partials cannot hold: they decide the sum as IEEE addition
    /// does (NaN, or +Infinity and -Infinity together, make NaN; else the infinity).
    #[serde(rename = "nan", default, skip_serializing_if = "std::ops::Not::not")]
    pub nan: bool,
    /// A +Infinity term was added, or the float sum overflowed upwards.
    #[serde(rename = "pinf", default, skip_serializing_if = "std::ops::Not::not")]
    pub positive_infinity: bool,
    /// A -Infinity term was added, or the float sum overflowed downwards.
    #[serde(rename = "ninf", default, skip_serializing_if = "std::ops::Not::not")]
    pub negative_infinity: bool,
}

/// Floats travel as their bit patterns: JSON number parsing is not guaranteed to round-trip the
/// last bit, and merged partials must be exact.
mod float_bits {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) trait Bits: Sized {
        type Repr: Serialize + for<'de> Deserialize<'de>;
        fn to_repr(&self) -> Self::Repr;
        fn from_repr(repr: Self::Repr) -> Self;
    }

    impl Bits for f64 {
        type Repr = u64;
        fn to_repr(&self) -> u64 {
            self.to_bits()
        }
        fn from_repr(repr: u64) -> f64 {
            f64::from_bits(repr)
        }
    }

    impl Bits for Vec<f64> {
        type Repr = Vec<u64>;
        fn to_repr(&self) -> Vec<u64> {
            self.iter().map(|f| f.to_bits()).collect()
        }
        fn from_repr(repr: Vec<u64>) -> Vec<f64> {
            repr.into_iter().map(f64::from_bits).collect()
        }
    }

    pub(super) fn serialize<T: Bits, S: Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value.to_repr().serialize(serializer)
    }

    pub(super) fn deserialize<'de, T: Bits, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<T, D::Error> {
        T::Repr::deserialize(deserializer).map(T::from_repr)
    }
}

mod i128_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &i128, serializer: S) -> Result<S::Ok, S::Error> {
        match i64::try_from(*value) {
            Ok(small) => serializer.serialize_i64(small),
            Err(_) => serializer.serialize_str(&value.to_string()),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<i128, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            Small(i64),
            Large(String),
        }
        match Text::deserialize(deserializer)? {
            Text::Small(small) => Ok(small.into()),
            Text::Large(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

fn add_partial(partials: &mut Vec<f64>, mut x: f64) {
    let mut kept = 0;
    for j in 0..partials.len() {
        let mut y = partials[j];
        if x.abs() < y.abs() {
            std::mem::swap(&mut x, &mut y);
        }
        let hi = x + y;
        let lo = y - (hi - x);
        if lo != 0.0 {
            partials[kept] = lo;
            kept += 1;
        }
        x = hi;
    }
    partials.truncate(kept);
    partials.push(x);
}

/// The correctly rounded value of the partials' exact sum (the last step of `math.fsum`).
fn round_partials(partials: &[f64]) -> f64 {
    let mut n = partials.len();
    if n == 0 {
        return 0.0;
    }
    n -= 1;
    let mut hi = partials[n];
    let mut lo = 0.0;
    while n > 0 {
        let x = hi;
        n -= 1;
        let y = partials[n];
        hi = x + y;
        lo = y - (hi - x);
        if lo != 0.0 {
            break;
        }
    }
    if n > 0 && ((lo < 0.0 && partials[n - 1] < 0.0) || (lo > 0.0 && partials[n - 1] > 0.0)) {
        let y = lo * 2.0;
        let x = hi + y;
        if y == x - hi {
            hi = x;
        }
    }
    hi
}

impl ExactSum {
    /// Adds one term: an integer exactly, a finite float to the partials, others as flags.
    pub fn add(&mut self, number: Number) {
        self.count += 1;
        match number {
            Number::Int(i) => self.integers += i128::from(i),
            Number::Float(f) => {
                self.has_float = true;
                match f {
                    _ if f.is_nan() => self.nan = true,
                    f64::INFINITY => self.positive_infinity = true,
                    f64::NEG_INFINITY => self.negative_infinity = true,
                    _ => self.add_finite(f),
                }
            }
        }
    }

    /// Adds a finite term to the partials. A sum past the doubles' range is the infinity of its
    /// sign, as sequential IEEE addition would give.
    fn add_finite(&mut self, f: f64) {
        add_partial(&mut self.partials, f);
        if let Some(&top) = self.partials.last()
            && !top.is_finite()
        {
            self.partials.clear();
            match top {
                f64::INFINITY => self.positive_infinity = true,
                f64::NEG_INFINITY => self.negative_infinity = true,
                _ => self.nan = true,
            }
        }
    }

    /// The sum when a non-finite term decides it.
    fn non_finite(&self) -> Option<f64> {
        match (self.nan, self.positive_infinity, self.negative_infinity) {
            (true, _, _) | (_, true, true) => Some(f64::NAN),
            (false, true, false) => Some(f64::INFINITY),
            (false, false, true) => Some(f64::NEG_INFINITY),
            (false, false, false) => None,
        }
    }

    /// Adds another sum's terms; an error (and nothing merged) when the counts or integers would
    /// overflow or the other's floats are not a sum's partials.
    pub fn merge(&mut self, other: &ExactSum) -> Result<(), MergeError> {
        if other.partials.len() > MAX_FLOAT_PARTIALS {
            return Err(MergeError::Invalid("sum", "too many float partials"));
        }
        if other.partials.iter().any(|f| !f.is_finite()) {
            return Err(MergeError::Invalid(
                "sum",
                "a float partial that is not finite",
            ));
        }
        let (Some(count), Some(integers)) = (
            self.count.checked_add(other.count),
            self.integers.checked_add(other.integers),
        ) else {
            return Err(MergeError::Overflow("sum"));
        };
        self.count = count;
        self.integers = integers;
        self.has_float |= other.has_float;
        self.nan |= other.nan;
        self.positive_infinity |= other.positive_infinity;
        self.negative_infinity |= other.negative_infinity;
        for &partial in &other.partials {
            self.add_finite(partial);
        }
        Ok(())
    }

    fn total_float(&self) -> f64 {
        if let Some(decided) = self.non_finite() {
            return decided;
        }
        let mut partials = self.partials.clone();
        let high = self.integers as f64;
        add_partial(&mut partials, high);
        add_partial(&mut partials, (self.integers - high as i128) as f64);
        round_partials(&partials)
    }

    /// The sum as JSON: null without terms, an integer when every term was one and it fits
    /// `i64`, else the correctly rounded double.
    pub fn total(&self) -> serde_json::Value {
        if self.count == 0 {
            return serde_json::Value::Null;
        }
        if !self.has_float
            && let Ok(small) = i64::try_from(self.integers)
        {
            return small.into();
        }
        float_json(self.total_float())
    }

    /// The mean as JSON (a double); null without terms.
    pub fn mean(&self) -> serde_json::Value {
        if self.count == 0 {
            return serde_json::Value::Null;
        }
        float_json(self.total_float() / self.count as f64)
    }
}

/// The aggregate functions of the subset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggregateKind {
    /// `COUNT(*)`: every record.
    CountAll,
    /// `COUNT(x)`: records where `x` is present.
    Count,
    /// `SUM(x)`.
    Sum,
    /// `MIN(x)`.
    Min,
    /// `MAX(x)`.
    Max,
    /// `AVG(x)`.
    Avg,
}

/// One chunk's (or several merged chunks') state of one aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Partial {
    /// Records counted (`COUNT(*)` or `COUNT(x)`).
    #[serde(rename = "count")]
    Count(u64),
    /// The exact sum of the values.
    #[serde(rename = "sum")]
    Sum(ExactSum),
    /// The least value so far; `None` before any.
    #[serde(rename = "min")]
    Min(Option<Scalar>),
    /// The greatest value so far; `None` before any.
    #[serde(rename = "max")]
    Max(Option<Scalar>),
    /// The exact sum and count of the values, divided at the end.
    #[serde(rename = "avg")]
    Avg(ExactSum),
}

impl Partial {
    /// The partial of `kind` before any value.
    pub fn new(kind: AggregateKind) -> Partial {
        match kind {
            AggregateKind::CountAll | AggregateKind::Count => Partial::Count(0),
            AggregateKind::Sum => Partial::Sum(ExactSum::default()),
            AggregateKind::Min => Partial::Min(None),
            AggregateKind::Max => Partial::Max(None),
            AggregateKind::Avg => Partial::Avg(ExactSum::default()),
        }
    }

    /// Adds one value (`None` for COUNT(*)). An error names a value SUM or AVG cannot add.
    pub fn add(&mut self, value: Option<&Value>) -> Result<(), String> {
        self.add_as(value, false)
    }

    /// [`Partial::add`]; values that carry their types (`typed`: Parquet) are absent only when
    /// NULL, and text is never read as a number.
    pub fn add_as(&mut self, value: Option<&Value>, typed: bool) -> Result<(), String> {
        let Some(value) = value else {
            if let Partial::Count(n) = self {
                *n += 1;
            }
            return Ok(());
        };
        if (typed && *value == Value::Null) || (!typed && value.is_absent()) {
            return Ok(());
        }
        match self {
            Partial::Count(n) => *n += 1,
            Partial::Sum(sum) | Partial::Avg(sum) => {
                let number = match (typed, value) {
                    (true, Value::Int(i)) => Some(Number::Int(*i)),
                    (true, Value::Float(f)) => Some(Number::Float(*f)),
                    (true, _) => None,
                    (false, value) => value.number(),
                }
                .ok_or_else(|| format!("{} is not a number", value.to_json()))?;
                sum.add(number);
            }
            Partial::Min(kept) => keep(kept, value, typed, Ordering::Less),
            Partial::Max(kept) => keep(kept, value, typed, Ordering::Greater),
        }
        Ok(())
    }

    /// Adds a number: the fast path of [`Partial::add`].
    pub fn add_number(&mut self, number: Number) {
        match self {
            Partial::Count(n) => *n += 1,
            Partial::Sum(sum) | Partial::Avg(sum) => sum.add(number),
            Partial::Min(kept) => keep_number(kept, number, Ordering::Less),
            Partial::Max(kept) => keep_number(kept, number, Ordering::Greater),
        }
    }

    /// The aggregate's name, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Partial::Count(_) => "count",
            Partial::Sum(_) => "sum",
            Partial::Min(_) => "min",
            Partial::Max(_) => "max",
            Partial::Avg(_) => "avg",
        }
    }

    /// Merges another chunk's partial of the same aggregate. Partials come from chunk reports,
    /// which any image can write: another kind, an overflow or a value no chunk produces is an
    /// error, and nothing is merged then.
    pub fn merge(&mut self, other: &Partial) -> Result<(), MergeError> {
        if let Partial::Min(Some(Scalar::Str(text))) | Partial::Max(Some(Scalar::Str(text))) = other
            && text.len() > MAX_KEPT_TEXT
        {
            return Err(MergeError::Invalid(
                other.kind(),
                "text longer than MIN and MAX keep",
            ));
        }
        match (self, other) {
            (Partial::Count(a), Partial::Count(b)) => {
                *a = a.checked_add(*b).ok_or(MergeError::Overflow("count"))?;
            }
            (Partial::Sum(a), Partial::Sum(b)) | (Partial::Avg(a), Partial::Avg(b)) => {
                a.merge(b)?
            }
            (Partial::Min(a), Partial::Min(Some(b))) => keep_scalar(a, b.clone(), Ordering::Less),
            (Partial::Max(a), Partial::Max(Some(b))) => {
                keep_scalar(a, b.clone(), Ordering::Greater)
            }
            (Partial::Min(_), Partial::Min(None)) | (Partial::Max(_), Partial::Max(None)) => {}
            (this, other) => return Err(MergeError::Kind(other.kind(), this.kind())),
        }
        Ok(())
    }

    /// The aggregate's value as JSON; null for SUM, AVG, MIN and MAX of no values.
    pub fn result(&self) -> serde_json::Value {
        match self {
            Partial::Count(n) => (*n).into(),
            Partial::Sum(sum) => sum.total(),
            Partial::Avg(sum) => sum.mean(),
            Partial::Min(kept) | Partial::Max(kept) => kept
                .as_ref()
                .map_or(serde_json::Value::Null, Scalar::to_json),
        }
    }
}

fn keep(kept: &mut Option<Scalar>, value: &Value, typed: bool, wanted: Ordering) {
    if let Some(scalar) = Scalar::of(value, typed) {
        keep_scalar(kept, scalar, wanted);
    }
}

/// [`keep_scalar`] for a number, compared in place when the kept value is of its kind.
fn keep_number(kept: &mut Option<Scalar>, number: Number, wanted: Ordering) {
    let better = match (kept.as_ref(), number) {
        (None, _) => true,
        (Some(Scalar::Float(current)), Number::Float(f)) => kept_float_order(f, *current) == wanted,
        (Some(Scalar::Int(current)), Number::Int(i)) => i.cmp(current) == wanted,
        (Some(current), number) => Scalar::from(number).total_cmp(current) == wanted,
    };
    if better {
        *kept = Some(number.into());
    }
}

fn keep_scalar(kept: &mut Option<Scalar>, candidate: Scalar, wanted: Ordering) {
    if kept
        .as_ref()
        .is_none_or(|current| candidate.total_cmp(current) == wanted)
    {
        *kept = Some(candidate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn merges_refuse_other_kinds_and_overflows_and_change_nothing() {
        let mut count = Partial::Count(u64::MAX - 1);
        assert_eq!(count.merge(&Partial::Count(1)), Ok(()));
        assert_eq!(
            count.merge(&Partial::Count(1)),
            Err(MergeError::Overflow("count"))
        );
        assert_eq!(count, Partial::Count(u64::MAX));
        assert_eq!(
            count.merge(&Partial::Min(None)),
            Err(MergeError::Kind("min", "count"))
        );
        let mut sum = Partial::Sum(ExactSum::default());
        let huge = ExactSum {
            count: 1,
            integers: i128::MAX,
            ..Default::default()
        };
        assert_eq!(sum.merge(&Partial::Sum(huge.clone())), Ok(()));
        assert_eq!(
            sum.merge(&Partial::Sum(huge)),
            Err(MergeError::Overflow("sum"))
        );
        let nan = ExactSum {
            count: 1,
            partials: vec![f64::NAN],
            has_float: true,
            ..Default::default()
        };
        assert!(matches!(
            sum.merge(&Partial::Sum(nan)),
            Err(MergeError::Invalid("sum", _))
        ));
        let many = ExactSum {
            count: 1,
            partials: vec![1.0; MAX_FLOAT_PARTIALS + 1],
            has_float: true,
            ..Default::default()
        };
        assert!(sum.merge(&Partial::Sum(many)).is_err());
        let long = Partial::Max(Some(Scalar::Str("x".repeat(MAX_KEPT_TEXT + 1))));
        assert!(Partial::Max(None).merge(&long).is_err());
    }

    #[test]
    fn min_and_max_keep_text_cut_and_compare_it_cut() {
        let mut max = Partial::Max(None);
        let long = format!("{}b", "a".repeat(MAX_KEPT_TEXT));
        max.add(Some(&Value::Str(long.as_str().into()))).unwrap();
        let kept = max.result();
        assert_eq!(kept.as_str().unwrap().len(), MAX_KEPT_TEXT);
        // Equal in their first 4 KiB: the same kept value, whichever came first.
        let other = format!("{}c", "a".repeat(MAX_KEPT_TEXT));
        max.add(Some(&Value::Str(other.as_str().into()))).unwrap();
        assert_eq!(max.result(), kept);
        // A multi-byte character across the cut is cut before it.
        let mut min = Partial::Min(None);
        let text = format!("{}é", "a".repeat(MAX_KEPT_TEXT - 1));
        min.add(Some(&Value::Str(text.as_str().into()))).unwrap();
        assert_eq!(min.result().as_str().unwrap().len(), MAX_KEPT_TEXT - 1);
        // What a chunk keeps, another merge accepts.
        let mut merged = Partial::Max(None);
        assert_eq!(merged.merge(&max), Ok(()));
    }

    #[test]
    fn exact_sums_match_fsum() {
        let cases: &[(&[f64], f64)] = &[
            (&[0.1; 10], 1.0),
            (&[1e100, 1.0, -1e100], 1.0),
            (&[1e16, 1.0, 1e-16], 10000000000000002.0),
            (&[], 0.0),
        ];
        for (values, want) in cases {
            let mut sum = ExactSum::default();
            values.iter().for_each(|v| sum.add(Number::Float(*v)));
            assert_eq!(sum.total_float(), *want, "{values:?}");
        }
    }

    #[test]
    fn integer_sums_stay_integers() {
        let mut sum = ExactSum::default();
        sum.add(Number::Int(i64::MAX));
        sum.add(Number::Int(1));
        sum.add(Number::Int(-2));
        assert_eq!(sum.total(), serde_json::json!(i64::MAX - 1));
        let text = serde_json::to_string(&sum).unwrap();
        assert_eq!(serde_json::from_str::<ExactSum>(&text).unwrap(), sum);
    }

    #[test]
    fn min_and_max_compare_numeric_text_as_numbers() {
        let mut min = Partial::new(AggregateKind::Min);
        let mut max = Partial::new(AggregateKind::Max);
        for text in ["10.5", "9", "", "-3e2"] {
            let value = Value::Str(text.into());
            min.add(Some(&value)).unwrap();
            max.add(Some(&value)).unwrap();
        }
        assert_eq!(min.result(), serde_json::json!(-300.0));
        assert_eq!(max.result(), serde_json::json!(10.5));
        let mut sum = Partial::new(AggregateKind::Sum);
        assert_eq!(
            sum.add(Some(&Value::Str("ten".into()))).unwrap_err(),
            "\"ten\" is not a number"
        );
    }

    #[test]
    fn comparisons_read_strings_as_numbers_against_numbers() {
        let s = |t: &'static str| Value::Str(t.into());
        assert_eq!(compare(&s("10"), &Value::Int(9)), Some(Ordering::Greater));
        assert_eq!(compare(&s("10"), &s("9")), Some(Ordering::Less));
        assert_eq!(compare(&s("x"), &Value::Int(9)), None);
        assert_eq!(compare(&Value::Null, &Value::Int(9)), None);
        assert_eq!(parse_number(" 2.5 "), Some(Number::Float(2.5)));
    }

    #[test]
    fn nan_and_infinities_in_their_writers_spellings_are_numbers() {
        let float = |text: &str| match parse_number(text) {
            Some(Number::Float(f)) => Some(f),
            _ => None,
        };
        for text in ["NaN", "nan", "NAN", "-nan", "+NaN"] {
            assert!(float(text).is_some_and(f64::is_nan), "{text}");
        }
        for (text, want) in [
            ("inf", f64::INFINITY),
            ("Infinity", f64::INFINITY),
            ("+INF", f64::INFINITY),
            ("-infinity", f64::NEG_INFINITY),
            ("-Inf", f64::NEG_INFINITY),
            ("1e999", f64::INFINITY),
            ("-1e999", f64::NEG_INFINITY),
        ] {
            assert_eq!(float(text), Some(want), "{text}");
        }
        // Names and words stay text.
        for text in ["Nan", "nAn", "Info", "infinite", "n", "-", "in f"] {
            assert_eq!(parse_number(text), None, "{text}");
        }
    }

    #[test]
    fn nan_equals_nan_and_sorts_above_every_number() {
        use Ordering::*;
        let nan = f64::NAN;
        let cases = [
            (nan, nan, Equal),
            (nan, f64::INFINITY, Greater),
            (f64::INFINITY, nan, Less),
            (f64::NEG_INFINITY, -1e308, Less),
            (-0.0, 0.0, Equal),
            (-nan, 1.0, Greater),
        ];
        for (x, y, want) in cases {
            assert_eq!(sql_float_order(x, y), want, "{x} {y}");
        }
        assert_eq!(
            Number::Int(i64::MAX).compare(Number::Float(nan)),
            Some(Less)
        );
        let v = |f: f64| Value::Float(f);
        assert_eq!(compare(&v(nan), &v(nan)), Some(Equal));
        assert_eq!(compare(&Value::Str("NaN".into()), &v(1.0)), Some(Greater));
        assert_eq!(
            compare(&Value::Str("-Infinity".into()), &Value::Int(-5)),
            Some(Less)
        );
    }

    #[test]
    fn aggregates_of_nan_and_infinities() {
        let values = |fs: &[f64]| fs.iter().map(|f| Value::Float(*f)).collect::<Vec<_>>();
        let run = |kind, fs: &[f64]| {
            let mut partial = Partial::new(kind);
            for value in values(fs) {
                partial.add_as(Some(&value), true).unwrap();
            }
            partial.result()
        };
        let (nan, inf) = (f64::NAN, f64::INFINITY);
        use AggregateKind::*;
        use serde_json::json;
        // (kind, values, result)
        let cases: &[(AggregateKind, &[f64], serde_json::Value)] = &[
            (Min, &[1.0, nan, -5.0], json!(-5.0)),
            (Max, &[1.0, nan, -5.0], json!("NaN")),
            (Min, &[nan, nan], json!("NaN")),
            (Max, &[-inf, 3.0], json!(3.0)),
            (Min, &[-inf, 3.0, nan], json!("-Infinity")),
            (Max, &[inf, 3.0], json!("Infinity")),
            (Sum, &[1.0, nan, 2.0], json!("NaN")),
            (Sum, &[1.0, inf, 2.0], json!("Infinity")),
            (Sum, &[inf, -inf], json!("NaN")),
            (Avg, &[-inf, 7.0], json!("-Infinity")),
            (Sum, &[f64::MAX, f64::MAX], json!("Infinity")),
            (Count, &[nan, inf], json!(2)),
        ];
        for (kind, fs, want) in cases {
            assert_eq!(run(*kind, fs), *want, "{kind:?} {fs:?}");
        }
        // Merged from chunks in any grouping: the same.
        for kind in [Min, Max, Sum, Avg] {
            let whole = run(kind, &[2.0, nan, -inf, inf, 0.5]);
            let mut merged = Partial::new(kind);
            for part in [&[2.0, nan][..], &[-inf][..], &[inf, 0.5][..]] {
                let mut partial = Partial::new(kind);
                for value in values(part) {
                    partial.add_as(Some(&value), true).unwrap();
                }
                let text = serde_json::to_string(&partial).unwrap();
                merged.merge(&serde_json::from_str(&text).unwrap()).unwrap();
            }
            assert_eq!(merged.result(), whole, "{kind:?}");
        }
        // Rows write them as PostgreSQL does.
        assert_eq!(Value::Float(nan).to_field(), "NaN");
        assert_eq!(Value::Float(-inf).to_json(), json!("-Infinity"));
    }

    proptest! {
        #[test]
        fn numbers_aggregate_as_values_do(numbers in prop::collection::vec(
            prop_oneof![any::<i64>().prop_map(Number::Int), (-1e6f64..1e6).prop_map(Number::Float)],
            0..20,
        )) {
            for kind in [AggregateKind::Min, AggregateKind::Max, AggregateKind::Sum] {
                let (mut by_value, mut by_number) = (Partial::new(kind), Partial::new(kind));
                for &number in &numbers {
                    by_value.add(Some(&number.into())).unwrap();
                    by_number.add_number(number);
                }
                prop_assert_eq!(by_number.result(), by_value.result());
            }
        }

        #[test]
        fn short_mantissas_equal_digit_by_digit_ones(
            text in prop_oneof!["[0-9]{0,8}", "[0-9]{0,4}[.][0-9]{0,3}", "[0-9.+a -]{0,8}"],
        ) {
            prop_assert_eq!(short_mantissa(text.as_bytes()), long_mantissa(text.as_bytes()));
        }

        #[test]
        fn plain_decimals_parse_as_the_general_parsers_do(text in "[+-]?[0-9]{0,17}([.][0-9]{0,17})?") {
            if let Some(fast) = parse_plain_decimal(text.as_bytes()) {
                let general = parse_any_number(&text).expect("a number");
                // Bit-exact, so -0.0 and 0.0 differ.
                match (&fast, &general) {
                    (Number::Float(a), Number::Float(b)) => prop_assert_eq!(a.to_bits(), b.to_bits()),
                    _ => prop_assert_eq!(&fast, &general),
                }
            }
        }

        #[test]
        fn merged_partials_equal_one_pass(
            values in prop::collection::vec(prop_oneof![
                any::<i32>().prop_map(|i| Value::Int(i.into())),
                (-1e12f64..1e12).prop_map(Value::Float),
                Just(Value::Str("".into())),
            ], 0..40),
            cuts in prop::collection::vec(0usize..40, 0..5),
        ) {
            for kind in [AggregateKind::Count, AggregateKind::Sum, AggregateKind::Min, AggregateKind::Max, AggregateKind::Avg] {
                let mut whole = Partial::new(kind);
                values.iter().for_each(|v| whole.add(Some(v)).unwrap());
                let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (values.len() + 1)).collect();
                bounds.extend([0, values.len()]);
                bounds.sort();
                let mut merged = Partial::new(kind);
                for pair in bounds.windows(2).rev() {
                    let mut part = Partial::new(kind);
                    values[pair[0]..pair[1]].iter().for_each(|v| part.add(Some(v)).unwrap());
                    let text = serde_json::to_string(&part).unwrap();
                    merged.merge(&serde_json::from_str(&text).unwrap()).unwrap();
                }
                prop_assert_eq!(merged.result(), whole.result());
            }
        }
    }
}
