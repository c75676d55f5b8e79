//! Values of the SQL subset (`Value`, comparison), numbers as records spell them (`number`), and
//! the exactly mergeable aggregate accumulators (`aggregate`, the exact sum of many doubles at
//! once in `fixed_sum`).

mod aggregate;
mod fixed_sum;
mod number;

use std::borrow::Cow;
use std::cmp::Ordering;

pub use aggregate::{AggregateKind, ExactSum, MAX_KEPT_TEXT, MergeError, Partial, Scalar};
pub use number::{Number, parse_number, parse_plain_decimal, push_float, sql_float_order};

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
    /// The value, owning its text.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(b),
            Value::Int(i) => Value::Int(i),
            Value::Float(f) => Value::Float(f),
            Value::Str(s) => Value::Str(std::borrow::Cow::Owned(s.into_owned())),
        }
    }

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

    /// Text of the value in a CSV field.
    pub fn to_field(&self) -> Cow<'_, str> {
        match self {
            Value::Null => Cow::Borrowed(""),
            Value::Bool(b) => Cow::Owned(b.to_string()),
            Value::Int(i) => Cow::Owned(i.to_string()),
            Value::Float(f) => match non_finite_text(*f) {
                Some(text) => Cow::Borrowed(text),
                None => {
                    let mut text = Vec::new();
                    push_float(&mut text, *f);
                    Cow::Owned(String::from_utf8(text).unwrap_or_default())
                }
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

#[cfg(test)]
mod tests {
    use super::aggregate::MAX_FLOAT_PARTIALS;
    use super::number::{long_mantissa, parse_any_number, short_mantissa};
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

    /// Doubles of any magnitude a fixed-point sum takes (below 2^954), normal and subnormal.
    fn summable_float() -> impl Strategy<Value = f64> {
        (any::<bool>(), 0u64..(1977 << 52))
            .prop_map(|(negative, bits)| f64::from_bits(bits | u64::from(negative) << 63))
    }

    /// Sums `floats` (each followed by its negation when `cancel`: an exact sum of zero whatever
    /// the magnitudes) at once, every one and then those `kept` keeps, as one at a time would.
    fn sums_as_one_at_a_time(
        floats: Vec<f64>,
        cancel: bool,
        kept: &[bool],
    ) -> Result<(), TestCaseError> {
        let floats: Vec<f64> = match cancel {
            true => floats.iter().flat_map(|&f| [f, -f]).collect(),
            false => floats,
        };
        let every = vec![true; floats.len()];
        for keep in [&every[..], kept] {
            let values = floats.iter().copied().zip(keep.iter().copied());
            let mut one_at_a_time = ExactSum::default();
            values
                .clone()
                .filter(|(_, kept)| *kept)
                .for_each(|(f, _)| one_at_a_time.add(Number::Float(f)));
            let mut at_once = ExactSum::default();
            at_once.add_kept_floats(values);
            prop_assert_eq!(
                at_once.total_float().to_bits(),
                one_at_a_time.total_float().to_bits()
            );
            prop_assert_eq!(at_once.total(), one_at_a_time.total());
            prop_assert_eq!(at_once.mean(), one_at_a_time.mean());
            prop_assert_eq!(
                (at_once.count, at_once.has_float),
                (one_at_a_time.count, one_at_a_time.has_float)
            );
        }
        Ok(())
    }

    #[test]
    fn long_columns_sum_across_blocks_of_buckets() {
        // Full mantissas of one sign and exponent fill a bucket as much as a block can, and more
        // than a block of them spans several; the others fall in blocks of their own.
        let full = f64::from_bits(0x3fff_ffff_ffff_ffff);
        let mut floats = vec![full; 4100];
        floats.extend((0..3000).map(|i| (i as f64 - 1500.5) * 0.37));
        floats.extend([1e-310, -2.5e-320, 1e250, f64::MIN_POSITIVE]);
        let kept: Vec<bool> = (0..2 * floats.len()).map(|i| i % 3 != 1).collect();
        sums_as_one_at_a_time(floats.clone(), false, &kept).unwrap();
        sums_as_one_at_a_time(floats, true, &kept).unwrap();
    }

    proptest! {
        #[test]
        fn float_columns_sum_to_the_same_bits_as_one_at_a_time(
            floats in prop::collection::vec(prop_oneof![
                summable_float(),
                (-1e6f64..1e6),
                Just(0.0), Just(-0.0), Just(f64::MIN_POSITIVE), Just(1e280), Just(-1e280),
                Just(f64::NAN), Just(f64::NEG_INFINITY),
            ], 0..60),
            cancel in any::<bool>(),
            kept in prop::collection::vec(any::<bool>(), 120),
        ) {
            sums_as_one_at_a_time(floats, cancel, &kept)?;
        }

        /// Columns of a few magnitudes, as most are (values within 2^72 of each other), at the
        /// bottom, middle and top of the range.
        #[test]
        fn narrow_float_columns_sum_to_the_same_bits_as_one_at_a_time(
            base in prop_oneof![0u64..3, 1000u64..1100, 1900u64..1977],
            floats in prop::collection::vec(
                (any::<bool>(), 0u64..1 << 52, 0u64..72, prop::bool::weighted(0.1)),
                0..80,
            ),
            cancel in any::<bool>(),
            kept in prop::collection::vec(any::<bool>(), 160),
        ) {
            let floats = floats
                .into_iter()
                .map(|(negative, fraction, above, zero)| {
                    let exponent = (base + above).min(1976) * u64::from(!zero);
                    f64::from_bits(u64::from(negative) << 63 | exponent << 52 | fraction)
                })
                .collect();
            sums_as_one_at_a_time(floats, cancel, &kept)?;
        }

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
        fn columns_aggregate_as_their_values_one_by_one(
            start in prop::collection::vec(prop_oneof![
                any::<i64>().prop_map(Number::Int),
                (-1e3f64..1e3).prop_map(Number::Float),
            ], 0..3),
            floats in prop::collection::vec(prop_oneof![
                (-1e3f64..1e3),
                Just(f64::NAN), Just(-f64::NAN), Just(0.0), Just(-0.0),
                Just(f64::INFINITY), Just(f64::NEG_INFINITY),
            ], 0..30),
            ints in prop::collection::vec(prop_oneof![any::<i64>(), -3i64..3], 0..30),
        ) {
            let kinds = [
                AggregateKind::Count, AggregateKind::Sum, AggregateKind::Min,
                AggregateKind::Max, AggregateKind::Avg,
            ];
            for kind in kinds {
                // A partial that holds values already (another batch's), then a column.
                let mut one_by_one = Partial::new(kind);
                start.iter().for_each(|&n| one_by_one.add_number(n));
                let (mut of_floats, mut of_ints) = (one_by_one.clone(), one_by_one.clone());
                let mut ints_one_by_one = one_by_one.clone();
                floats.iter().for_each(|&f| one_by_one.add_number(Number::Float(f)));
                of_floats.add_floats(floats.iter().copied());
                // A column's sum holds the same exact number in other partials: the same result,
                // alone and merged.
                prop_assert_eq!(of_floats.result(), one_by_one.result());
                let sent: Partial =
                    serde_json::from_str(&serde_json::to_string(&of_floats).unwrap()).unwrap();
                let mut merged = one_by_one.clone();
                merged.merge(&sent).unwrap();
                one_by_one.merge(&one_by_one.clone()).unwrap();
                prop_assert_eq!(merged.result(), one_by_one.result());
                ints.iter().for_each(|&i| ints_one_by_one.add_number(Number::Int(i)));
                of_ints.add_ints(ints.iter().copied());
                prop_assert_eq!(&of_ints, &ints_one_by_one);
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
