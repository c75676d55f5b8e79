//! The aggregate functions' accumulators: exact sums, MIN and MAX kept totally ordered, and
//! partials that merge exactly from chunk reports in any grouping.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::fixed_sum::{self, FixedSum};
use super::number::kept_float_order;
use super::{Number, Value, float_json};

impl From<Number> for Scalar {
    fn from(number: Number) -> Scalar {
        match number {
            Number::Int(i) => Scalar::Int(i),
            Number::Float(f) => Scalar::Float(f),
        }
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
pub(super) const MAX_FLOAT_PARTIALS: usize = 64;

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

    /// Adds the float terms of `values` that are kept (each a value and whether it is), as
    /// [`ExactSum::add`] of each does. When every kept one is within [`fixed_sum::takes`]'s range
    /// they are summed exactly in fixed point first, and only that sum's few terms go to the
    /// partials: the exact total, so its rounding, is the same.
    pub fn add_kept_floats(&mut self, values: impl Iterator<Item = (f64, bool)> + Clone) {
        let (every_taken, kept_taken, kept) =
            values
                .clone()
                .fold((true, true, 0), |(every, kept_taken, kept), (f, keep)| {
                    let taken = fixed_sum::takes(f);
                    (
                        every & taken,
                        kept_taken & (!keep | taken),
                        kept + u64::from(keep),
                    )
                });
        if !kept_taken {
            values
                .filter(|(_, kept)| *kept)
                .for_each(|(f, _)| self.add(Number::Float(f)));
            return;
        }
        if kept == 0 {
            return;
        }
        self.count += kept;
        self.has_float = true;
        match every_taken {
            // A value not kept adds zero: it is multiplied by 0 (every value is finite, so it
            // becomes a zero), not chosen by a branch, which a filter keeping rows here and there
            // would mispredict (the compiler makes a branch of an `if`, or of a mask on the bits,
            // but cannot of a multiplication).
            true => self.add_fixed(values.map(|(f, keep)| f * f64::from(u8::from(keep)))),
            // A NaN or an infinity among the rows not kept: those are left out by a branch.
            false => self.add_fixed(values.filter(|(_, keep)| *keep).map(|(f, _)| f)),
        }
    }

    /// Adds `values`, each one a fixed-point sum [`fixed_sum::takes`], to the partials (not to
    /// the count).
    fn add_fixed(&mut self, mut values: impl Iterator<Item = f64>) {
        loop {
            let mut fixed = FixedSum::default();
            let added = fixed.add_all(values.by_ref().take(fixed_sum::MAX_TERMS));
            for term in fixed.terms() {
                self.add_finite(term);
            }
            if added < fixed_sum::MAX_TERMS {
                return;
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

    pub(super) fn total_float(&self) -> f64 {
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

    /// Adds a column's integers, as [`Partial::add_number`] adds each one (the fast path of
    /// aggregates over arrays): MIN and MAX compare them among themselves first, then once with
    /// the value kept.
    pub fn add_ints(&mut self, values: impl Iterator<Item = i64>) {
        match self {
            Partial::Count(n) => *n += values.count() as u64,
            Partial::Sum(sum) | Partial::Avg(sum) => values.for_each(|i| sum.add(Number::Int(i))),
            Partial::Min(kept) => {
                if let Some(least) = values.min() {
                    keep_number(kept, Number::Int(least), Ordering::Less);
                }
            }
            Partial::Max(kept) => {
                if let Some(greatest) = values.max() {
                    keep_number(kept, Number::Int(greatest), Ordering::Greater);
                }
            }
        }
    }

    /// Adds a column's floats, as [`Partial::add_number`] adds each one (see
    /// [`Partial::add_ints`]).
    pub fn add_floats(&mut self, values: impl Iterator<Item = f64> + Clone) {
        self.add_kept_floats(values.map(|f| (f, true)))
    }

    /// [`Partial::add_floats`] of the values kept (each a value and whether it is: a row the
    /// WHERE clause keeps, a value that is not NULL).
    pub fn add_kept_floats(&mut self, values: impl Iterator<Item = (f64, bool)> + Clone) {
        let kept = values.clone().filter(|(_, kept)| *kept).map(|(f, _)| f);
        match self {
            Partial::Count(n) => *n += kept.count() as u64,
            Partial::Sum(sum) | Partial::Avg(sum) => sum.add_kept_floats(values),
            Partial::Min(least) => keep_float(least, kept, Ordering::Less),
            Partial::Max(greatest) => keep_float(greatest, kept, Ordering::Greater),
        }
    }

    /// Whether [`Partial::add_texts`] adds text to it: SUM and AVG take numbers only.
    pub fn takes_text(&self) -> bool {
        matches!(self, Partial::Count(_) | Partial::Min(_) | Partial::Max(_))
    }

    /// Adds a column's text values, as [`Partial::add_as`] adds each typed one (the fast path of
    /// aggregates over arrays): MIN and MAX compare them among themselves first, then once with
    /// the value kept. SUM and AVG ([`Partial::takes_text`] false) are left as they are.
    pub fn add_texts<'t>(&mut self, values: impl Iterator<Item = &'t str>) {
        let by_kept = |a: &&str, b: &&str| kept_text(a).cmp(kept_text(b));
        let (kept, end, wanted) = match self {
            Partial::Count(n) => {
                *n += values.count() as u64;
                return;
            }
            Partial::Sum(_) | Partial::Avg(_) => return,
            Partial::Min(kept) => (kept, values.min_by(by_kept), Ordering::Less),
            Partial::Max(kept) => (kept, values.max_by(by_kept), Ordering::Greater),
        };
        if let Some(end) = end {
            keep_scalar(kept, Scalar::Str(kept_text(end).to_string()), wanted);
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

/// Keeps the `wanted` end of `values` in [`kept_float_order`], as [`keep_number`] of each in
/// turn would. One pass compares the values as IEEE doubles, where a NaN never wins, and notes
/// whether there was a NaN: branch-free, so the compiler vectorizes it. What that order leaves
/// open is settled after, rarely with a second pass: NaN is above every number (MAX is the first
/// NaN, MIN only when every value is one), and -0.0 is below 0.0.
fn keep_float(
    kept: &mut Option<Scalar>,
    values: impl Iterator<Item = f64> + Clone,
    wanted: Ordering,
) {
    if values.clone().next().is_none() {
        return;
    }
    let greatest = wanted == Ordering::Greater;
    let start = match greatest {
        true => f64::NEG_INFINITY,
        false => f64::INFINITY,
    };
    let (end, nan) = values.clone().fold((start, false), |(end, nan), v| {
        let better = match greatest {
            true => v > end,
            false => v < end,
        };
        (if better { v } else { end }, nan | v.is_nan())
    });
    let first_nan = || values.clone().find(|v| v.is_nan());
    let best = match (greatest, nan) {
        (true, true) => first_nan(),
        // The start is left only when no value is a number.
        (false, true) if end == start && !values.clone().any(|v| !v.is_nan()) => first_nan(),
        (_, _) if end == 0.0 => {
            let signed = |v: f64| v == 0.0 && v.is_sign_negative() != greatest;
            let preferred = if greatest { 0.0 } else { -0.0 };
            Some(match values.clone().any(signed) {
                true => preferred,
                false => -preferred,
            })
        }
        _ => Some(end),
    };
    if let Some(best) = best {
        keep_number(kept, Number::Float(best), wanted);
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
