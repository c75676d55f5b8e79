//! Numbers as records spell them: a fast path for plain decimals, the general parsers, the SQL
//! order of floats, and floats written as text.

use std::cmp::Ordering;

use super::Value;
use crate::scan::text::word::{bytes_equal, non_digits};

/// Appends the text of a finite `value`: the shortest digits that read back as the value, never
/// in exponent form (`1`, `0.1`, `-0`, `10000000000000000`), as Rust's `{}` writes it. The digits
/// are ryu's, several times faster to find (rows of floats are written by the million); where
/// two spellings are as short and as near (a value halfway between them), ryu's last digit may
/// differ from `{}`'s, and both read back as the value.
pub fn push_float(out: &mut Vec<u8>, value: f64) {
    if push_short_decimal(out, value) {
        return;
    }
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(value).as_bytes();
    let (negative, text) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let (mantissa, exponent) = match text.iter().position(|b| *b == b'e') {
        Some(at) => {
            let exponent = std::str::from_utf8(&text[at + 1..])
                .ok()
                .and_then(|e| e.parse::<i32>().ok())
                .unwrap_or(0);
            (&text[..at], exponent)
        }
        None => (text, 0),
    };
    // The mantissa's digits without its point, and where the point falls in them.
    let point = mantissa
        .iter()
        .position(|b| *b == b'.')
        .unwrap_or(mantissa.len());
    // ryu writes at most 17 digits.
    let mut buffer = [0u8; 32];
    let mut length = 0;
    for digit in mantissa.iter().filter(|b| **b != b'.') {
        if let Some(slot) = buffer.get_mut(length) {
            *slot = *digit;
            length += 1;
        }
    }
    let digits = buffer.get(..length).unwrap_or_default();
    let leading = digits.iter().take_while(|b| **b == b'0').count();
    let digits = digits.get(leading..).unwrap_or_default();
    let trailing = digits.iter().rev().take_while(|b| **b == b'0').count();
    let digits = digits.get(..digits.len() - trailing).unwrap_or_default();
    let point = point as i32 + exponent - leading as i32;
    if negative {
        out.push(b'-');
    }
    if digits.is_empty() {
        out.push(b'0');
    } else if point <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', point.unsigned_abs() as usize));
        out.extend_from_slice(digits);
    } else if point as usize >= digits.len() {
        out.extend_from_slice(digits);
        out.extend(std::iter::repeat_n(b'0', point as usize - digits.len()));
    } else {
        let (whole, fraction) = digits.split_at(point as usize);
        out.extend_from_slice(whole);
        out.push(b'.');
        out.extend_from_slice(fraction);
    }
}

/// Scales of the decimals [`push_short_decimal`] writes.
const DECIMAL_SCALES: [f64; 5] = [1.0, 10.0, 100.0, 1_000.0, 10_000.0];

/// Writes a value of at most four decimals below 1e9 in magnitude (prices, measures: most floats
/// rows hold) without a search for its digits; `false` for any other value. The least `k` for
/// which `n = round(value * 10^k)` gives back `n / 10^k == value` spells it: that division is
/// correctly rounded, so `n·10^-k` reads back as the value; an ulp of such a value is far below
/// `10^-k`, so no spelling with fewer decimals reads back as it and no other with `k` does.
fn push_short_decimal(out: &mut Vec<u8>, value: f64) -> bool {
    if value.is_nan() || value.abs() >= 1e9 {
        return false;
    }
    let Some((decimals, scaled)) = DECIMAL_SCALES.iter().enumerate().find_map(|(k, scale)| {
        let scaled = (value * scale).round();
        (scaled / scale == value).then_some((k, scaled.abs() as u64))
    }) else {
        return false;
    };
    if value.is_sign_negative() {
        out.push(b'-');
    }
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(scaled).as_bytes();
    match digits.len().checked_sub(decimals) {
        Some(0) | None => {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', decimals - digits.len()));
            out.extend_from_slice(digits);
        }
        Some(whole) if decimals > 0 => {
            let (whole, fraction) = digits.split_at(whole);
            out.extend_from_slice(whole);
            out.push(b'.');
            out.extend_from_slice(fraction);
        }
        Some(_) => out.extend_from_slice(digits),
    }
    true
}

/// Parses a decimal integer or a floating-point number. NaN and the infinities are numbers in
/// the spellings their writers use (`NaN`, `nan`, `NAN`, `inf`, `Inf`, `INF`, `Infinity`,
/// `infinity`, `INFINITY`, with an optional sign), and only those: text such as `Nan` or `Info`
/// stays text.
pub fn parse_number(text: &str) -> Option<Number> {
    parse_plain_decimal(text.as_bytes()).or_else(|| parse_any_number(text))
}

pub(super) fn parse_any_number(text: &str) -> Option<Number> {
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
pub(super) fn kept_float_order(x: f64, y: f64) -> Ordering {
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
pub(super) fn long_mantissa(digits: &[u8]) -> Option<(i64, Option<usize>)> {
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
pub(super) fn short_mantissa(digits: &[u8]) -> Option<(i64, Option<usize>)> {
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pushed(value: f64) -> String {
        let mut out = Vec::new();
        push_float(&mut out, value);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_are_written_as_rust_writes_them() {
        let cases = [
            0.0,
            -0.0,
            1.0,
            -1.5,
            0.1,
            0.1 + 0.2,
            95.01,
            99.99,
            123456.0,
            1e15,
            1e16,
            1.5e16,
            1e21,
            1e22,
            1e-5,
            1e-7,
            1.2345e-7,
            9007199254740993.0,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            f64::EPSILON,
            5e-324,
            // The greatest subnormal.
            f64::from_bits(0x000f_ffff_ffff_ffff),
        ];
        for value in cases {
            assert_eq!(pushed(value), format!("{value}"), "{value:e}");
        }
    }

    /// Significant digits of a float's text.
    fn significant(text: &str) -> usize {
        text.trim_start_matches(['-', '0', '.'])
            .trim_end_matches(['0', '.'])
            .chars()
            .filter(char::is_ascii_digit)
            .count()
    }

    proptest! {
        #[test]
        fn any_finite_float_reads_back_from_as_few_digits_as_rust_writes(bits in any::<u64>()) {
            let value = f64::from_bits(bits);
            prop_assume!(value.is_finite());
            let (text, rust) = (pushed(value), format!("{value}"));
            prop_assert_eq!(text.parse::<f64>().map(f64::to_bits), Ok(bits), "{}", text);
            prop_assert!(!text.contains('e'));
            prop_assert_eq!(significant(&text), significant(&rust), "{} and {}", text, rust);
        }

        #[test]
        fn floats_of_few_digits_are_written_as_rust_writes_them(
            cents in any::<i32>(),
            scale in -30i32..30,
        ) {
            let value = f64::from(cents) * 10f64.powi(scale);
            prop_assume!(value.is_finite());
            prop_assert_eq!(pushed(value), format!("{value}"));
        }

        #[test]
        fn decimals_are_written_as_rust_writes_them(
            units in -2_000_000_000_000i64..2_000_000_000_000,
            decimals in 0i32..7,
        ) {
            let value = units as f64 / 10f64.powi(decimals);
            prop_assert_eq!(pushed(value), format!("{value}"));
        }
    }
}
