//! Running a compiled query over records: the filter, the projection and the aggregates.

use super::*;

/// What one chunk's records produce under a query.
pub enum Outcome<'a> {
    /// The record does not match.
    Skip,
    /// The record matches and the query returns whole records.
    Whole,
    /// The record matches and the query returns these values.
    Row(Vec<Value<'a>>),
    /// The record matched and went into the aggregates.
    Aggregated,
}

/// Per-chunk evaluation state.
pub struct Evaluator<'q> {
    query: &'q Query,
    /// The aggregates' partials over the records so far, in select-list order.
    pub partials: Vec<Partial>,
    /// Rows the query selected so far.
    pub rows: u64,
    /// Per aggregate: its argument when it is a column, read as a number without the general
    /// evaluator.
    direct: Vec<Option<DirectColumn<'q>>>,
    /// The WHERE clause when it compares a column with a number.
    comparison: Option<Comparison<'q>>,
}

/// An aggregate's column, maybe cast to FLOAT. Equal columns of a query share one reference, so
/// that records compare them by address.
#[derive(Clone, Copy)]
struct DirectColumn<'q> {
    column: &'q Column,
    float: bool,
}

impl PartialEq for DirectColumn<'_> {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.column, other.column) && self.float == other.float
    }
}

/// `column op number` (or `number op column`), the column maybe cast to INT or FLOAT: evaluated
/// without the general evaluator when the field is a plain decimal, with the same functions.
struct Comparison<'q> {
    column: &'q Column,
    cast: Option<Cast>,
    op: BinaryOperator,
    number: Number,
    column_first: bool,
}

impl<'q> Comparison<'q> {
    fn of(filter: &'q Expr) -> Option<Comparison<'q>> {
        let Expr::Compare(left, op, right) = filter else {
            return None;
        };
        let column = |expr: &'q Expr| match expr {
            Expr::Column(column) => Some((column, None)),
            Expr::Cast(inner, cast @ (Cast::Int | Cast::Float)) => match inner.as_ref() {
                Expr::Column(column) => Some((column, Some(*cast))),
                _ => None,
            },
            _ => None,
        };
        let number = |expr: &Expr| match expr {
            Expr::Literal(Value::Int(i)) => Some(Number::Int(*i)),
            Expr::Literal(Value::Float(f)) => Some(Number::Float(*f)),
            _ => None,
        };
        let ((column, cast), number, column_first) = match (column(left), number(right)) {
            (Some(column), Some(number)) => (column, number, true),
            _ => (column(right)?, number(left)?, false),
        };
        Some(Comparison {
            column,
            cast,
            op: op.clone(),
            number,
            column_first,
        })
    }

    /// Whether the record matches, when its field is a plain decimal (and casts).
    fn matches<R: Record>(&self, record: &R) -> Option<bool> {
        let field = self.column.plain_number(record)?;
        let value = match self.cast {
            Some(cast) => cast_number(field, cast)?,
            None => field,
        };
        let ordering = match self.column_first {
            true => value.compare(self.number),
            false => self.number.compare(value),
        };
        Some(holds(&self.op, ordering) == Some(true))
    }
}

/// A comparison's truth from the operands' ordering (unknown when they do not compare).
pub(crate) fn holds(op: &BinaryOperator, ordering: Option<Ordering>) -> Option<bool> {
    let o = ordering?;
    Some(match op {
        BinaryOperator::Eq => o == Ordering::Equal,
        BinaryOperator::NotEq => o != Ordering::Equal,
        BinaryOperator::Lt => o == Ordering::Less,
        BinaryOperator::LtEq => o != Ordering::Greater,
        BinaryOperator::Gt => o == Ordering::Greater,
        _ => o != Ordering::Less,
    })
}

impl Query {
    /// Names of the output columns of a row query (`None` for SELECT *), empty for aggregates.
    pub fn output_names(&self) -> Option<Vec<String>> {
        match &self.selection {
            Selection::All => None,
            Selection::Rows(rows) => Some(rows.iter().map(|(name, _)| name.clone()).collect()),
            Selection::Aggregates(_) => Some(Vec::new()),
        }
    }

    /// Whether records must be decoded into fields (not for `COUNT(*)` or `SELECT *` alone).
    pub fn reads_fields(&self) -> bool {
        self.filter.is_some()
            || match &self.selection {
                Selection::All => false,
                Selection::Rows(_) => true,
                Selection::Aggregates(items) => {
                    items.iter().any(|(_, _, argument)| argument.is_some())
                }
            }
    }

    /// Calls `found` with every column the query reads.
    pub(super) fn visit_columns(&self, found: &mut impl FnMut(&Column)) {
        if let Some(filter) = &self.filter {
            visit_columns(filter, found);
        }
        match &self.selection {
            Selection::All => {}
            Selection::Rows(rows) => rows.iter().for_each(|(_, e)| visit_columns(e, found)),
            Selection::Aggregates(items) => items
                .iter()
                .filter_map(|(_, _, argument)| argument.as_ref())
                .for_each(|e| visit_columns(e, found)),
        }
    }

    /// The top-level fields of JSON records the query reads.
    pub fn json_fields(&self) -> BTreeSet<String> {
        let mut fields = BTreeSet::new();
        self.visit_columns(&mut |column| {
            if let Column::Path(path) = column {
                fields.extend(path.first().cloned());
            }
        });
        fields
    }

    /// How many leading fields of a CSV record the query reads (all of them when it writes whole
    /// records).
    pub fn csv_fields_read(&self, writes_rows: bool) -> usize {
        if writes_rows && self.selection == Selection::All {
            return usize::MAX;
        }
        let mut fields = 0;
        self.visit_columns(&mut |column| {
            if let Column::Index(index) = column {
                fields = fields.max(index + 1);
            }
        });
        fields
    }

    /// Whether the query only counts all records (`COUNT(*)` items, no WHERE).
    pub fn counts_only(&self) -> bool {
        self.filter.is_none()
            && matches!(&self.selection, Selection::Aggregates(items)
                if items.iter().all(|(_, kind, _)| *kind == AggregateKind::CountAll))
    }

    /// The query with the parts that read no column folded into their values, for records whose
    /// values are `typed` or not ([`Record::typed`]); a WHERE clause that keeps every record so
    /// is dropped, and the query runs as one without it.
    pub fn fold_constants(self, typed: bool) -> Query {
        let fold = |expr: Expr| fold_constants(expr, typed);
        let selection = match self.selection {
            Selection::All => Selection::All,
            Selection::Rows(rows) => Selection::Rows(
                rows.into_iter()
                    .map(|(name, expr)| (name, fold(expr)))
                    .collect(),
            ),
            Selection::Aggregates(items) => Selection::Aggregates(
                items
                    .into_iter()
                    .map(|(name, kind, expr)| (name, kind, expr.map(fold)))
                    .collect(),
            ),
        };
        let filter = self
            .filter
            .map(fold)
            .filter(|filter| !matches!(filter, Expr::Literal(Value::Bool(true))));
        Query {
            selection,
            filter,
            limit: self.limit,
        }
    }

    /// Whether the query selects aggregates (one result) rather than rows.
    pub fn is_aggregate(&self) -> bool {
        matches!(self.selection, Selection::Aggregates(_))
    }

    /// A fresh evaluation state, for one chunk.
    pub fn evaluator(&self) -> Evaluator<'_> {
        let (partials, mut direct): (Vec<Partial>, Vec<Option<DirectColumn>>) =
            match &self.selection {
                Selection::Aggregates(items) => items
                    .iter()
                    .map(|(_, kind, argument)| {
                        let direct = match argument {
                            Some(Expr::Column(column)) => Some(DirectColumn {
                                column,
                                float: false,
                            }),
                            Some(Expr::Cast(inner, Cast::Float)) => match inner.as_ref() {
                                Expr::Column(column) => Some(DirectColumn {
                                    column,
                                    float: true,
                                }),
                                _ => None,
                            },
                            _ => None,
                        };
                        (Partial::new(*kind), direct)
                    })
                    .unzip(),
                _ => (Vec::new(), Vec::new()),
            };
        // Equal columns take the first one's reference (see `DirectColumn`).
        for at in 0..direct.len() {
            if let Some(this) = direct[at]
                && let Some(first) = direct[..at]
                    .iter()
                    .flatten()
                    .find(|d| d.column == this.column)
            {
                direct[at] = Some(DirectColumn {
                    column: first.column,
                    ..this
                });
            }
        }
        Evaluator {
            query: self,
            partials,
            rows: 0,
            direct,
            comparison: self.filter.as_ref().and_then(Comparison::of),
        }
    }

    /// Merges chunks' partials (in any grouping) into the result object, one entry per select item.
    pub fn result(
        &self,
        partials: &[Partial],
        rows: u64,
    ) -> serde_json::Map<String, serde_json::Value> {
        match &self.selection {
            Selection::Aggregates(items) => items
                .iter()
                .zip(partials)
                .map(|((name, _, _), partial)| (name.clone(), partial.result()))
                .collect(),
            _ => [("rows".to_string(), rows.into())].into_iter().collect(),
        }
    }

    /// The aggregates' partials before any record: what a chunk without records reports.
    pub fn empty_partials(&self) -> Vec<Partial> {
        self.evaluator().partials
    }
}

impl<'q> Evaluator<'q> {
    /// Counts `records` records that a counts-only query did not evaluate one by one.
    pub fn count(&mut self, records: u64) {
        for partial in &mut self.partials {
            if let Partial::Count(n) = partial {
                *n += records;
            }
        }
    }

    /// Whether more rows may still be returned (LIMIT not reached).
    pub fn wants_more(&self) -> bool {
        self.query.limit.is_none_or(|limit| self.rows < limit)
    }

    /// Evaluates one record. An error is bad data (a value that cannot be cast or summed).
    #[inline]
    pub fn record<'r, R: Record>(&mut self, record: &'r R) -> Result<Outcome<'r>, String> {
        if !self.wants_more() {
            return Ok(Outcome::Skip);
        }
        if let Some(filter) = &self.query.filter {
            let matches = match self.comparison.as_ref().and_then(|c| c.matches(record)) {
                Some(matches) => matches,
                None => truth(&eval(filter, record)?)? == Some(true),
            };
            if !matches {
                return Ok(Outcome::Skip);
            }
        }
        self.select(record)
    }

    /// Evaluates one record the filter is known to keep (a columnar pre-filter proved it).
    #[inline]
    pub fn matched_record<'r, R: Record>(&mut self, record: &'r R) -> Result<Outcome<'r>, String> {
        if !self.wants_more() {
            return Ok(Outcome::Skip);
        }
        self.select(record)
    }

    /// The selection of a record the filter keeps.
    #[inline]
    fn select<'r, R: Record>(&mut self, record: &'r R) -> Result<Outcome<'r>, String> {
        match &self.query.selection {
            Selection::All => {
                self.rows += 1;
                Ok(Outcome::Whole)
            }
            Selection::Rows(items) => {
                self.rows += 1;
                let values = items
                    .iter()
                    .map(|(_, expr)| eval(expr, record))
                    .collect::<Result<_, _>>()?;
                Ok(Outcome::Row(values))
            }
            Selection::Aggregates(items) => {
                // MIN(x), MAX(x) and the like evaluate x once.
                let mut previous: Option<(&Expr, Value)> = None;
                let mut previous_number: Option<(DirectColumn, Number)> = None;
                for (((name, _, argument), partial), direct) in
                    items.iter().zip(&mut self.partials).zip(&self.direct)
                {
                    // A column of numbers: parsed (once) and added without building values.
                    if let Some(column) = direct {
                        if let Some((seen, number)) = previous_number
                            && seen == *column
                        {
                            partial.add_number(number);
                            continue;
                        }
                        let number = match column.column.plain_number(record) {
                            Some(number) => Some(number),
                            None => typed_number(column.column.value(record)?, record.typed()),
                        };
                        if let Some(number) = number {
                            let number = match (number, column.float) {
                                (Number::Int(i), true) => Number::Float(i as f64),
                                (number, _) => number,
                            };
                            partial.add_number(number);
                            previous_number = Some((*column, number));
                            continue;
                        }
                    }
                    let value = match (argument, &previous) {
                        (Some(a), Some((p, value))) if a == *p => Some(value.clone()),
                        // Numeric text is read as a number once, not once per aggregate.
                        (Some(a), _) if record.typed() => Some(eval(a, record)?),
                        (Some(a), _) => {
                            let value = eval(a, record)?;
                            Some(value.as_number().unwrap_or(value))
                        }
                        (None, _) => None,
                    };
                    partial
                        .add_as(value.as_ref(), record.typed())
                        .map_err(|e| format!("{name}: {e}"))?;
                    if let (Some(a), Some(value)) = (argument, value) {
                        previous = Some((a, value));
                    }
                }
                Ok(Outcome::Aggregated)
            }
        }
    }
}

/// A value as a number: numbers as they are; text read as one unless values are typed.
fn typed_number(value: Value, typed: bool) -> Option<Number> {
    match (value, typed) {
        (Value::Int(i), _) => Some(Number::Int(i)),
        (Value::Float(f), _) => Some(Number::Float(f)),
        (value, false) => value.number(),
        (_, true) => None,
    }
}

fn truth(value: &Value) -> Result<Option<bool>, String> {
    match value {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        other => Err(format!("{} is not a boolean", other.to_json())),
    }
}

/// Calls `found` with every column `expr` reads.
pub(super) fn visit_columns(expr: &Expr, found: &mut impl FnMut(&Column)) {
    match expr {
        Expr::Column(column) => found(column),
        Expr::Literal(_) => {}
        Expr::Not(e) | Expr::Negate(e) | Expr::IsNull(e, _) | Expr::Cast(e, _) => {
            visit_columns(e, found)
        }
        Expr::Like { expr, .. } => visit_columns(expr, found),
        Expr::And(a, b) | Expr::Or(a, b) | Expr::Compare(a, _, b) | Expr::Arith(a, _, b) => {
            visit_columns(a, found);
            visit_columns(b, found);
        }
        Expr::In(e, list, _) => {
            visit_columns(e, found);
            list.iter().for_each(|item| visit_columns(item, found));
        }
        Expr::Between(e, low, high, _) => {
            visit_columns(e, found);
            visit_columns(low, found);
            visit_columns(high, found);
        }
    }
}

/// What a part of a query that reads no column is evaluated against: values typed or not, as
/// the records' are ([`Record::typed`]).
struct NoRecord {
    typed: bool,
}

impl Record for NoRecord {
    fn field(&self, _: usize) -> Result<Value<'_>, String> {
        Err("no record".into())
    }
    fn path(&self, _: &[String]) -> Value<'_> {
        Value::Null
    }
    fn typed(&self) -> bool {
        self.typed
    }
}

/// The value of `expr` when it reads no column (`None` when it reads one, or fails).
fn constant_value(expr: &Expr, typed: bool) -> Option<Value<'static>> {
    let mut reads = false;
    visit_columns(expr, &mut |_| reads = true);
    if reads {
        return None;
    }
    eval(expr, &NoRecord { typed }).ok().map(Value::into_owned)
}

/// The value of `expr`, which reads no column: whether it keeps a row (`None` when it reads a
/// column, or cannot be evaluated).
pub(super) fn constant_truth(expr: &Expr, typed: bool) -> Option<bool> {
    let value = constant_value(expr, typed)?;
    truth(&value).ok().map(|kept| kept == Some(true))
}

/// `expr` with each part that reads no column (an object's partition or virtual column compared
/// with a literal, say) replaced by its value, and `TRUE AND p` and `FALSE OR p` by `p` when `p`
/// is a predicate, which they then equal for every record, errors included: a WHERE clause on a
/// partition costs nothing per record. A part that fails is kept, to fail per record as it would.
pub(super) fn fold_constants(expr: Expr, typed: bool) -> Expr {
    let fold = |e: Box<Expr>| Box::new(fold_constants(*e, typed));
    let folded = match expr {
        Expr::Column(_) | Expr::Literal(_) => return expr,
        Expr::Not(e) => Expr::Not(fold(e)),
        Expr::Negate(e) => Expr::Negate(fold(e)),
        Expr::IsNull(e, negated) => Expr::IsNull(fold(e), negated),
        Expr::Cast(e, cast) => Expr::Cast(fold(e), cast),
        Expr::Like {
            expr,
            pattern,
            negated,
        } => Expr::Like {
            expr: fold(expr),
            pattern,
            negated,
        },
        Expr::And(a, b) => Expr::And(fold(a), fold(b)),
        Expr::Or(a, b) => Expr::Or(fold(a), fold(b)),
        Expr::Compare(a, op, b) => Expr::Compare(fold(a), op, fold(b)),
        Expr::Arith(a, op, b) => Expr::Arith(fold(a), op, fold(b)),
        Expr::In(e, list, negated) => Expr::In(
            fold(e),
            list.into_iter()
                .map(|item| fold_constants(item, typed))
                .collect(),
            negated,
        ),
        Expr::Between(e, low, high, negated) => {
            Expr::Between(fold(e), fold(low), fold(high), negated)
        }
    };
    if let Some(value) = constant_value(&folded, typed) {
        return Expr::Literal(value);
    }
    let is = |e: &Expr, b: bool| matches!(e, Expr::Literal(Value::Bool(v)) if *v == b);
    match folded {
        Expr::And(a, b) if is(&a, true) && is_predicate(&b) => *b,
        Expr::And(a, b) if is(&b, true) && is_predicate(&a) => *a,
        Expr::Or(a, b) if is(&a, false) && is_predicate(&b) => *b,
        Expr::Or(a, b) if is(&b, false) && is_predicate(&a) => *a,
        other => other,
    }
}

/// Whether `expr` is TRUE, FALSE or NULL whenever it has a value (a text or a number is not).
fn is_predicate(expr: &Expr) -> bool {
    match expr {
        Expr::Literal(value) => matches!(value, Value::Bool(_) | Value::Null),
        Expr::Not(_)
        | Expr::And(..)
        | Expr::Or(..)
        | Expr::Compare(..)
        | Expr::IsNull(..)
        | Expr::Like { .. }
        | Expr::In(..)
        | Expr::Between(..) => true,
        Expr::Column(_) | Expr::Arith(..) | Expr::Negate(_) | Expr::Cast(..) => false,
    }
}

fn eval<'r, R: Record>(expr: &Expr, record: &'r R) -> Result<Value<'r>, String> {
    Ok(match expr {
        Expr::Column(column) => column.value(record)?,
        Expr::Literal(value) => value.clone(),
        Expr::Not(inner) => match truth(&eval(inner, record)?)? {
            Some(b) => Value::Bool(!b),
            None => Value::Null,
        },
        Expr::And(l, r) => match (truth(&eval(l, record)?)?, truth(&eval(r, record)?)?) {
            (Some(false), _) | (_, Some(false)) => Value::Bool(false),
            (Some(true), Some(true)) => Value::Bool(true),
            _ => Value::Null,
        },
        Expr::Or(l, r) => match (truth(&eval(l, record)?)?, truth(&eval(r, record)?)?) {
            (Some(true), _) | (_, Some(true)) => Value::Bool(true),
            (Some(false), Some(false)) => Value::Bool(false),
            _ => Value::Null,
        },
        Expr::Compare(l, op, r) => {
            let (l, r) = (eval(l, record)?, eval(r, record)?);
            holds(op, compare_as(record.typed(), &l, &r)).map_or(Value::Null, Value::Bool)
        }
        Expr::Arith(l, op, r) => arith(&eval(l, record)?, *op, &eval(r, record)?)?,
        Expr::Negate(inner) => arith(&Value::Int(0), Arith::Sub, &eval(inner, record)?)?,
        Expr::IsNull(inner, negated) => {
            let value = eval(inner, record)?;
            Value::Bool((value == Value::Null) != *negated)
        }
        Expr::Like {
            expr,
            pattern,
            negated,
        } => match eval(expr, record)? {
            Value::Null => Value::Null,
            value => {
                let text: Vec<char> = value.to_field().chars().collect();
                Value::Bool(like_matches(&text, pattern) != *negated)
            }
        },
        Expr::In(inner, list, negated) => {
            let value = eval(inner, record)?;
            let mut unknown = false;
            for item in list {
                match compare_as(record.typed(), &value, &eval(item, record)?) {
                    Some(Ordering::Equal) => return Ok(Value::Bool(!negated)),
                    None => unknown = true,
                    Some(_) => {}
                }
            }
            if unknown {
                Value::Null
            } else {
                Value::Bool(*negated)
            }
        }
        Expr::Between(inner, low, high, negated) => {
            let value = eval(inner, record)?;
            match (
                compare_as(record.typed(), &value, &eval(low, record)?),
                compare_as(record.typed(), &value, &eval(high, record)?),
            ) {
                (Some(lo), Some(hi)) => {
                    Value::Bool((lo != Ordering::Less && hi != Ordering::Greater) != *negated)
                }
                _ => Value::Null,
            }
        }
        Expr::Cast(inner, cast) => match (inner.as_ref(), cast) {
            (Expr::Column(column), Cast::Int | Cast::Float) => match column.plain_number(record) {
                Some(number) => cast_value(number.into(), *cast)?,
                None => cast_value(column.value(record)?, *cast)?,
            },
            _ => cast_value(eval(inner, record)?, *cast)?,
        },
    })
}

fn cast_value(value: Value<'_>, cast: Cast) -> Result<Value<'_>, String> {
    if value.is_absent() && cast != Cast::Text {
        return Ok(Value::Null);
    }
    let failed = |value: &Value| format!("cannot cast {} to {cast:?}", value.to_json());
    Ok(match cast {
        Cast::Text => Value::Str(Cow::Owned(value.to_field().into_owned())),
        Cast::Int | Cast::Float => {
            match value.number().and_then(|number| cast_number(number, cast)) {
                Some(number) => number.into(),
                None => return Err(failed(&value)),
            }
        }
        Cast::Bool => match &value {
            Value::Bool(b) => Value::Bool(*b),
            Value::Str(s) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
            Value::Str(s) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
            _ => return Err(failed(&value)),
        },
    })
}

/// A number cast to INT (truncated; `None` out of range) or FLOAT.
fn cast_number(number: Number, cast: Cast) -> Option<Number> {
    match (cast, number) {
        (Cast::Float, Number::Int(i)) => Some(Number::Float(i as f64)),
        (Cast::Int, Number::Float(f)) if f.abs() < 9.2e18 => Some(Number::Int(f.trunc() as i64)),
        (Cast::Int, Number::Float(_)) => None,
        _ => Some(number),
    }
}

fn arith(l: &Value, op: Arith, r: &Value) -> Result<Value<'static>, String> {
    if l.is_absent() || r.is_absent() {
        return Ok(Value::Null);
    }
    let number = |v: &Value| {
        v.number()
            .ok_or_else(|| format!("{} is not a number", v.to_json()))
    };
    let (l, r) = (number(l)?, number(r)?);
    if let (Number::Int(a), Number::Int(b)) = (&l, &r) {
        let exact = match op {
            Arith::Add => a.checked_add(*b),
            Arith::Sub => a.checked_sub(*b),
            Arith::Mul => a.checked_mul(*b),
            Arith::Div | Arith::Rem if *b == 0 => return Err("division by zero".into()),
            Arith::Div => a.checked_div(*b),
            Arith::Rem => a.checked_rem(*b),
        };
        if let Some(exact) = exact {
            return Ok(Value::Int(exact));
        }
    }
    let float = |n: Number| match n {
        Number::Int(i) => i as f64,
        Number::Float(f) => f,
    };
    let (a, b) = (float(l), float(r));
    Ok(Value::Float(match op {
        Arith::Add => a + b,
        Arith::Sub => a - b,
        Arith::Mul => a * b,
        Arith::Div => a / b,
        Arith::Rem => a % b,
    }))
}
