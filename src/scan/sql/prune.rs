//! What a query needs of a columnar file before reading rows: the columns it reads, whether a
//! group of rows whose statistics are known can hold a matching row, and aggregates answered from
//! statistics alone.
//!
//! Pruning is conservative: anything it cannot prove (a cast, an expression of two columns, NOT,
//! a value that does not compare) may match.

use std::cmp::Ordering;

use sqlparser::ast::BinaryOperator;

use super::{Cast, Column, Expr, Query, Selection};
use crate::scan::value::{AggregateKind, Value, compare_as};

/// What statistics tell of one column over a group of rows.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnBounds<'a> {
    /// Least and greatest non-null value, when known.
    pub min: Option<Value<'a>>,
    /// Greatest non-null value, when known.
    pub max: Option<Value<'a>>,
    /// Null values, when known.
    pub nulls: Option<u64>,
    /// Rows in the group.
    pub rows: u64,
}

impl ColumnBounds<'_> {
    fn all_null(&self) -> bool {
        self.nulls == Some(self.rows)
    }

    /// Whether some non-null value `v` of the column can satisfy `v op literal` (values compared
    /// as [`compare_as`] does for `typed`).
    fn may_compare(&self, op: &BinaryOperator, literal: &Value, typed: bool) -> bool {
        if self.all_null() || *literal == Value::Null {
            return false;
        }
        let (Some(min), Some(max)) = (&self.min, &self.max) else {
            return true;
        };
        let (low, high) = match (
            compare_as(typed, min, literal),
            compare_as(typed, max, literal),
        ) {
            (Some(low), Some(high)) => (low, high),
            _ => return true,
        };
        match op {
            BinaryOperator::Eq => low != Ordering::Greater && high != Ordering::Less,
            BinaryOperator::NotEq => !(low == Ordering::Equal && high == Ordering::Equal),
            BinaryOperator::Lt => low == Ordering::Less,
            BinaryOperator::LtEq => low != Ordering::Greater,
            BinaryOperator::Gt => high == Ordering::Greater,
            BinaryOperator::GtEq => high != Ordering::Less,
            _ => true,
        }
    }
}

/// Statistics of a group of rows, by column path (`None`: nothing is known of it).
pub trait Bounds {
    /// What is known of the column at `path`; `None` when nothing is.
    fn bounds(&self, path: &[String]) -> Option<ColumnBounds<'_>>;
    /// Whether the values are typed, as [`super::Record::typed`].
    fn typed(&self) -> bool {
        false
    }
}

/// `column op literal`, one conjunct of a WHERE clause, for columnar pre-filters.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnComparison {
    /// The column: a name, then struct fields.
    pub path: Vec<String>,
    /// The comparison (`=`, `<`, ...), the column on its left.
    pub op: BinaryOperator,
    /// The value the column is compared with.
    pub literal: Value<'static>,
}

/// An aggregate answered from statistics: its kind and the column it reads (none for COUNT(*)).
pub type FooterAggregate<'q> = (AggregateKind, Option<&'q [String]>);

/// An aggregate an engine of arrays can take over a whole column: none for COUNT(*), else the
/// column's path and whether it is cast to FLOAT.
pub type ColumnAggregate<'q> = Option<(&'q [String], bool)>;

impl Query {
    /// The distinct column paths the query reads, in first-use order.
    pub fn paths(&self) -> Vec<Vec<String>> {
        let mut paths: Vec<Vec<String>> = Vec::new();
        self.visit_columns(&mut |column| {
            if let Column::Path(path) = column
                && !paths.contains(path)
            {
                paths.push(path.clone());
            }
        });
        paths
    }

    /// The output columns of a row query as `(name, column path)` when every select item is a
    /// column (`Some(empty)` for SELECT *), `None` when some item is computed.
    pub fn plain_columns(&self) -> Option<Vec<(String, Vec<String>)>> {
        match &self.selection {
            Selection::All => Some(Vec::new()),
            Selection::Rows(items) => items
                .iter()
                .map(|(name, expr)| match expr {
                    Expr::Column(Column::Path(path)) => Some((name.clone(), path.clone())),
                    _ => None,
                })
                .collect(),
            Selection::Aggregates(_) => None,
        }
    }

    /// Whether the query has a WHERE clause.
    pub fn has_filter(&self) -> bool {
        self.filter.is_some()
    }

    /// The WHERE clause's conjuncts that compare a column with a literal (`BETWEEN` as two), and
    /// whether they are all of it (then rows they keep need no other check).
    pub fn column_comparisons(&self) -> (Vec<ColumnComparison>, bool) {
        let mut found = Vec::new();
        let all = self
            .filter
            .as_ref()
            .is_some_and(|filter| conjuncts(filter, &mut found));
        (found, all)
    }

    /// Whether a group of rows with these statistics can hold a row the filter keeps.
    pub fn may_match(&self, bounds: &impl Bounds) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|filter| may_hold(filter, bounds))
    }

    /// The query's aggregates, in select order, when each is COUNT(*) or an aggregate of a column
    /// (maybe CAST AS FLOAT); `None` for a row query or a computed argument.
    pub fn column_aggregates(&self) -> Option<Vec<ColumnAggregate<'_>>> {
        let Selection::Aggregates(items) = &self.selection else {
            return None;
        };
        items
            .iter()
            .map(|(_, _, argument)| match argument {
                None => Some(None),
                Some(Expr::Column(Column::Path(path))) => Some(Some((path.as_slice(), false))),
                Some(Expr::Cast(inner, Cast::Float)) => match inner.as_ref() {
                    Expr::Column(Column::Path(path)) => Some(Some((path.as_slice(), true))),
                    _ => None,
                },
                Some(_) => None,
            })
            .collect()
    }

    /// The query's aggregates when all of them can be answered from statistics: no WHERE, and
    /// each one COUNT(*), or COUNT, MIN or MAX of a column.
    pub fn footer_aggregates(&self) -> Option<Vec<FooterAggregate<'_>>> {
        let Selection::Aggregates(items) = &self.selection else {
            return None;
        };
        if self.filter.is_some() {
            return None;
        }
        items
            .iter()
            .map(|(_, kind, argument)| match (kind, argument) {
                (AggregateKind::CountAll, None) => Some((*kind, None)),
                (
                    AggregateKind::Count | AggregateKind::Min | AggregateKind::Max,
                    Some(Expr::Column(Column::Path(path))),
                ) => Some((*kind, Some(path.as_slice()))),
                _ => None,
            })
            .collect()
    }
}

/// Whether `expr` can be true for some row of a group with `bounds`.
fn may_hold(expr: &Expr, bounds: &impl Bounds) -> bool {
    let typed = bounds.typed();
    let column = |expr: &Expr| match expr {
        Expr::Column(Column::Path(path)) => bounds.bounds(path),
        _ => None,
    };
    let literal = |expr: &Expr| match expr {
        Expr::Literal(value) => Some(value.clone()),
        _ => None,
    };
    // A part naming no column (a constant such as an object's partition) is decided exactly.
    if let Some(kept) = super::eval::constant_truth(expr, typed) {
        return kept;
    }
    match expr {
        Expr::And(a, b) => may_hold(a, bounds) && may_hold(b, bounds),
        Expr::Or(a, b) => may_hold(a, bounds) || may_hold(b, bounds),
        Expr::Literal(value) => !matches!(value, Value::Bool(false) | Value::Null),
        Expr::Compare(left, op, right) => {
            match (column(left), literal(right), literal(left), column(right)) {
                (Some(c), Some(v), _, _) => c.may_compare(op, &v, typed),
                (_, _, Some(v), Some(c)) => c.may_compare(&flipped(op), &v, typed),
                _ => true,
            }
        }
        Expr::Between(inner, low, high, false) => {
            match (column(inner), literal(low), literal(high)) {
                (Some(c), Some(low), Some(high)) => {
                    c.may_compare(&BinaryOperator::GtEq, &low, typed)
                        && c.may_compare(&BinaryOperator::LtEq, &high, typed)
                }
                _ => true,
            }
        }
        Expr::In(inner, list, false) => match column(inner) {
            Some(c) => list.iter().any(|item| match literal(item) {
                Some(v) => c.may_compare(&BinaryOperator::Eq, &v, typed),
                None => true,
            }),
            None => true,
        },
        Expr::IsNull(inner, negated) => match column(inner) {
            Some(c) => match (c.nulls, negated) {
                (Some(nulls), false) => nulls > 0,
                (Some(nulls), true) => nulls < c.rows,
                (None, _) => true,
            },
            None => true,
        },
        _ => true,
    }
}

/// Adds `expr`'s column comparisons to `found`; true when `expr` is made of them alone.
fn conjuncts(expr: &Expr, found: &mut Vec<ColumnComparison>) -> bool {
    let comparison = |column: &Expr, op: BinaryOperator, literal: &Expr| match (column, literal) {
        (Expr::Column(Column::Path(path)), Expr::Literal(value)) => Some(ColumnComparison {
            path: path.clone(),
            op,
            literal: value.clone(),
        }),
        _ => None,
    };
    let comparable = |op: &BinaryOperator| {
        matches!(
            op,
            BinaryOperator::Eq
                | BinaryOperator::NotEq
                | BinaryOperator::Lt
                | BinaryOperator::LtEq
                | BinaryOperator::Gt
                | BinaryOperator::GtEq
        )
    };
    let parts = match expr {
        Expr::And(a, b) => {
            let left = conjuncts(a, found);
            return conjuncts(b, found) && left;
        }
        Expr::Compare(left, op, right) if comparable(op) => {
            vec![
                comparison(left, op.clone(), right)
                    .or_else(|| comparison(right, flipped(op), left)),
            ]
        }
        Expr::Between(inner, low, high, false) => vec![
            comparison(inner, BinaryOperator::GtEq, low),
            comparison(inner, BinaryOperator::LtEq, high),
        ],
        _ => return false,
    };
    let whole = parts.iter().all(Option::is_some);
    found.extend(parts.into_iter().flatten());
    whole
}

/// `op` with its operands swapped (`5 < x` is `x > 5`).
fn flipped(op: &BinaryOperator) -> BinaryOperator {
    match op {
        BinaryOperator::Lt => BinaryOperator::Gt,
        BinaryOperator::LtEq => BinaryOperator::GtEq,
        BinaryOperator::Gt => BinaryOperator::Lt,
        BinaryOperator::GtEq => BinaryOperator::LtEq,
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::scan::sql::{Columns, compile};

    struct Stats(HashMap<&'static str, ColumnBounds<'static>>);

    impl Bounds for Stats {
        fn bounds(&self, path: &[String]) -> Option<ColumnBounds<'_>> {
            self.0.get(path.join(".").as_str()).cloned()
        }
    }

    fn ints(min: i64, max: i64, nulls: u64) -> ColumnBounds<'static> {
        ColumnBounds {
            min: Some(Value::Int(min)),
            max: Some(Value::Int(max)),
            nulls: Some(nulls),
            rows: 100,
        }
    }

    #[test]
    fn groups_that_cannot_match_are_pruned() {
        let stats = Stats(HashMap::from([
            ("x", ints(10, 20, 0)),
            ("n", ints(0, 0, 100)),
            (
                "s.t",
                ColumnBounds {
                    min: Some(Value::Str("2024-01-01T00:00:00".into())),
                    max: Some(Value::Str("2024-01-31T23:59:59".into())),
                    nulls: Some(3),
                    rows: 100,
                },
            ),
        ]));
        // (WHERE, may match)
        let cases = [
            ("x = 15", true),
            ("x = 25", false),
            ("x = 10", true),
            ("x <> 15", true),
            ("x < 10", false),
            ("x <= 10", true),
            ("x > 20", false),
            ("x >= 20", true),
            ("30 > x", true),
            ("5 > x", false),
            ("x BETWEEN 21 AND 30", false),
            ("x BETWEEN 0 AND 10", true),
            ("x NOT BETWEEN 10 AND 20", true),
            ("x IN (1, 2, 30)", false),
            ("x IN (1, 15)", true),
            ("x IS NULL", false),
            ("x IS NOT NULL", true),
            ("n IS NULL", true),
            ("n IS NOT NULL", false),
            ("n = 0", false),
            ("x > 25 OR x < 5", false),
            ("x > 25 OR x < 15", true),
            ("x > 15 AND x > 25", false),
            ("NOT x = 15", true),
            ("x + 1 = 100", true),
            ("unknown = 1", true),
            ("s.t >= '2024-02'", false),
            ("s.t < '2024-01-15'", true),
            ("s.t IS NULL", true),
            ("x = 'abc'", true),
        ];
        for (filter, want) in cases {
            let query = compile(
                &format!("SELECT * FROM S3Object WHERE {filter}"),
                &Columns::Named,
            )
            .unwrap();
            assert_eq!(query.may_match(&stats), want, "{filter}");
        }
        let all = compile("SELECT * FROM S3Object", &Columns::Named).unwrap();
        assert!(all.may_match(&stats));
    }

    #[test]
    fn aggregates_from_statistics() {
        let answered = |sql: &str| {
            compile(sql, &Columns::Named)
                .unwrap()
                .footer_aggregates()
                .map(|items| items.len())
        };
        assert_eq!(
            answered("SELECT COUNT(*), MIN(x), MAX(s.t), COUNT(y) FROM S3Object"),
            Some(4)
        );
        assert_eq!(answered("SELECT COUNT(*) FROM S3Object WHERE x > 1"), None);
        assert_eq!(answered("SELECT SUM(x) FROM S3Object"), None);
        assert_eq!(answered("SELECT MIN(x + 1) FROM S3Object"), None);
        assert_eq!(answered("SELECT x FROM S3Object"), None);
        let plain = |sql: &str| compile(sql, &Columns::Named).unwrap().plain_columns();
        assert_eq!(plain("SELECT * FROM S3Object"), Some(vec![]));
        assert_eq!(
            plain("SELECT x AS a, s.t FROM S3Object"),
            Some(vec![
                ("a".to_string(), vec!["x".to_string()]),
                ("s.t".to_string(), vec!["s".to_string(), "t".to_string()])
            ])
        );
        assert_eq!(plain("SELECT x + 1 FROM S3Object"), None);
        let query = compile(
            "SELECT x, s.t FROM S3Object WHERE y > 1 AND x < 2",
            &Columns::Named,
        )
        .unwrap();
        let paths: Vec<String> = query.paths().iter().map(|p| p.join(".")).collect();
        assert_eq!(paths, ["y", "x", "s.t"]);
    }
}
