//! The S3 Select SQL subset: `SELECT * | columns | aggregates FROM S3Object [s] [WHERE ...]
//! [LIMIT n]`, parsed by `sqlparser` and compiled against the object's columns before any chunk runs.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeSet;

use sqlparser::ast::{
    self, BinaryOperator, CastKind, DataType, FunctionArg, FunctionArgExpr, FunctionArguments,
    GroupByExpr, LimitClause, SelectItem, SetExpr, Spanned, Statement, TableFactor, UnaryOperator,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use super::value::{AggregateKind, Number, Partial, Value, compare, parse_number};

/// A query refused before any chunk runs, with its position when the parser or the compiler
/// knows it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct SqlError {
    pub message: String,
}

fn refuse<T>(node: &impl Spanned, what: impl std::fmt::Display) -> Result<T, SqlError> {
    let start = node.span().start;
    let message = if start.line > 0 {
        format!("{what} at line {}, column {}", start.line, start.column)
    } else {
        what.to_string()
    };
    Err(SqlError { message })
}

/// How the query addresses a record's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Columns {
    /// CSV: fields by position, named by the header row when there is one.
    Positional(Vec<String>),
    /// JSON Lines: fields by name (and dotted paths into nested objects).
    Named,
}

#[derive(Clone, Debug, PartialEq)]
enum Column {
    Index(usize),
    Path(Vec<String>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Cast {
    Int,
    Float,
    Text,
    Bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Clone, Debug, PartialEq)]
enum Expr {
    Column(Column),
    Literal(Value<'static>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Box<Expr>, BinaryOperator, Box<Expr>),
    Arith(Box<Expr>, Arith, Box<Expr>),
    Negate(Box<Expr>),
    IsNull(Box<Expr>, bool),
    Like {
        expr: Box<Expr>,
        pattern: Vec<LikeToken>,
        negated: bool,
    },
    In(Box<Expr>, Vec<Expr>, bool),
    Between(Box<Expr>, Box<Expr>, Box<Expr>, bool),
    Cast(Box<Expr>, Cast),
}

#[derive(Clone, Debug, PartialEq)]
enum LikeToken {
    Any,
    One,
    Char(char),
}

/// What the query returns.
#[derive(Clone, Debug, PartialEq)]
enum Selection {
    /// Every field of every matching record.
    All,
    /// Named expressions per matching record.
    Rows(Vec<(String, Expr)>),
    /// Named aggregates over all matching records.
    Aggregates(Vec<(String, AggregateKind, Option<Expr>)>),
}

/// A compiled query.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    selection: Selection,
    filter: Option<Expr>,
    /// At most this many rows (S3 Select's LIMIT), the first ones in object order.
    pub limit: Option<u64>,
}

/// A record as the query reads it.
pub trait Record {
    fn field(&self, index: usize) -> Result<Value<'_>, String>;
    fn path(&self, path: &[String]) -> Value<'_>;
    /// The field as a number when it is a plain decimal (a shortcut; `None` leaves it to `field`).
    fn plain_number(&self, _index: usize) -> Option<Number> {
        None
    }
    /// The value at `path` as a number when it is a plain one (a shortcut; `None` leaves it to
    /// `path`).
    fn plain_path_number(&self, _path: &[String]) -> Option<Number> {
        None
    }
}

impl Column {
    fn value<'r, R: Record>(&self, record: &'r R) -> Result<Value<'r>, String> {
        match self {
            Column::Index(index) => record.field(*index),
            Column::Path(path) => Ok(record.path(path)),
        }
    }

    fn plain_number<R: Record>(&self, record: &R) -> Option<Number> {
        match self {
            Column::Index(index) => record.plain_number(*index),
            Column::Path(path) => record.plain_path_number(path),
        }
    }
}

/// Compiles `sql` for records addressed by `columns`.
pub fn compile(sql: &str, columns: &Columns) -> Result<Query, SqlError> {
    let statements = Parser::parse_sql(&GenericDialect {}, sql).map_err(|error| SqlError {
        message: format!(
            "invalid SQL: {}",
            error.to_string().trim_start_matches("sql parser error: ")
        ),
    })?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return Err(SqlError {
            message: "the query must be one SELECT statement".into(),
        });
    };
    if query.with.is_some() || query.order_by.is_some() || query.fetch.is_some() {
        return refuse(
            query.as_ref(),
            "only SELECT ... FROM S3Object [WHERE ...] [LIMIT n] is supported: no WITH, ORDER BY or FETCH",
        );
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return refuse(query.body.as_ref(), "only a plain SELECT is supported");
    };
    let grouped = !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty());
    if select.distinct.is_some() || grouped || select.having.is_some() || select.top.is_some() {
        return refuse(
            select.as_ref(),
            "DISTINCT, GROUP BY, HAVING and TOP are not supported",
        );
    }
    let alias = from_alias(select)?;
    let compiler = Compiler { columns, alias };
    let filter = select
        .selection
        .as_ref()
        .map(|expr| compiler.expr(expr))
        .transpose()?;
    let limit = match &query.limit_clause {
        None => None,
        Some(LimitClause::LimitOffset {
            limit: Some(limit),
            offset: None,
            limit_by,
        }) if limit_by.is_empty() => Some(literal_count(limit)?),
        Some(clause) => return refuse(clause, "only LIMIT n is supported"),
    };
    let selection = compiler.selection(&select.projection)?;
    Ok(Query {
        selection,
        filter,
        limit,
    })
}

fn literal_count(expr: &ast::Expr) -> Result<u64, SqlError> {
    if let ast::Expr::Value(value) = expr
        && let ast::Value::Number(text, _) = &value.value
        && let Ok(n) = text.parse()
    {
        return Ok(n);
    }
    refuse(expr, "LIMIT needs a whole number")
}

fn from_alias(select: &ast::Select) -> Result<Option<String>, SqlError> {
    let [from] = select.from.as_slice() else {
        return refuse(select, "the query must read FROM S3Object");
    };
    let TableFactor::Table { name, alias, .. } = &from.relation else {
        return refuse(&from.relation, "the query must read FROM S3Object");
    };
    if !from.joins.is_empty() || !name.to_string().eq_ignore_ascii_case("s3object") {
        return refuse(
            &from.relation,
            "the query must read FROM S3Object (no joins)",
        );
    }
    Ok(alias.as_ref().map(|alias| alias.name.value.to_lowercase()))
}

struct Compiler<'a> {
    columns: &'a Columns,
    alias: Option<String>,
}

impl Compiler<'_> {
    fn selection(&self, items: &[SelectItem]) -> Result<Selection, SqlError> {
        if let [SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)] = items {
            return Ok(Selection::All);
        }
        let mut rows = Vec::new();
        let mut aggregates = Vec::new();
        for (position, item) in items.iter().enumerate() {
            let (expr, alias) = match item {
                SelectItem::UnnamedExpr(expr) => (expr, None),
                SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
                other => return refuse(other, "* must be the only select item"),
            };
            if let Some((kind, argument)) = self.aggregate(expr)? {
                aggregates.push((alias.unwrap_or_else(|| expr.to_string()), kind, argument));
            } else {
                let compiled = self.expr(expr)?;
                let name = alias.unwrap_or_else(|| match (&compiled, self.columns) {
                    (Expr::Column(Column::Index(i)), Columns::Positional(names)) => names
                        .get(*i)
                        .cloned()
                        .unwrap_or_else(|| format!("_{}", i + 1)),
                    (Expr::Column(Column::Path(path)), _) => path.join("."),
                    _ => format!("_{}", position + 1),
                });
                rows.push((name, compiled));
            }
            if !rows.is_empty() && !aggregates.is_empty() {
                return refuse(
                    item,
                    "aggregates cannot be mixed with plain columns (there is no GROUP BY)",
                );
            }
        }
        Ok(if aggregates.is_empty() {
            Selection::Rows(rows)
        } else {
            Selection::Aggregates(aggregates)
        })
    }

    fn aggregate(
        &self,
        expr: &ast::Expr,
    ) -> Result<Option<(AggregateKind, Option<Expr>)>, SqlError> {
        let ast::Expr::Function(function) = expr else {
            return Ok(None);
        };
        let name = function.name.to_string().to_uppercase();
        let kind = match name.as_str() {
            "COUNT" => AggregateKind::Count,
            "SUM" => AggregateKind::Sum,
            "MIN" => AggregateKind::Min,
            "MAX" => AggregateKind::Max,
            "AVG" => AggregateKind::Avg,
            _ => {
                return refuse(
                    expr,
                    format!(
                        "function {name} is not supported (COUNT, SUM, MIN, MAX, AVG, CAST are)"
                    ),
                );
            }
        };
        let FunctionArguments::List(list) = &function.args else {
            return refuse(expr, format!("{name} needs one argument"));
        };
        if list.duplicate_treatment.is_some()
            || !list.clauses.is_empty()
            || function.filter.is_some()
            || function.over.is_some()
        {
            return refuse(
                expr,
                format!("{name} supports neither DISTINCT nor clauses"),
            );
        }
        match list.args.as_slice() {
            [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] if kind == AggregateKind::Count => {
                Ok(Some((AggregateKind::CountAll, None)))
            }
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(argument))] => {
                if self.aggregate_inside(argument) {
                    return refuse(argument, "aggregates cannot be nested");
                }
                Ok(Some((kind, Some(self.expr(argument)?))))
            }
            _ => refuse(expr, format!("{name} needs one argument")),
        }
    }

    fn aggregate_inside(&self, expr: &ast::Expr) -> bool {
        matches!(expr, ast::Expr::Function(_))
    }

    fn column(&self, node: &ast::Expr, parts: &[ast::Ident]) -> Result<Expr, SqlError> {
        let parts = match parts {
            [qualifier, rest @ ..]
                if !rest.is_empty()
                    && (Some(qualifier.value.to_lowercase()) == self.alias
                        || qualifier.value.eq_ignore_ascii_case("s3object")) =>
            {
                rest
            }
            _ => parts,
        };
        match self.columns {
            Columns::Named => Ok(Expr::Column(Column::Path(
                parts.iter().map(|part| part.value.clone()).collect(),
            ))),
            Columns::Positional(names) => {
                let [ident] = parts else {
                    return refuse(node, "CSV columns have no nested fields");
                };
                if ident.quote_style.is_none()
                    && let Some(position) = ident.value.strip_prefix('_')
                    && let Ok(position) = position.parse::<usize>()
                    && position >= 1
                {
                    return Ok(Expr::Column(Column::Index(position - 1)));
                }
                let found = names.iter().position(|name| match ident.quote_style {
                    Some(_) => *name == ident.value,
                    None => name.eq_ignore_ascii_case(&ident.value),
                });
                match found {
                    Some(index) => Ok(Expr::Column(Column::Index(index))),
                    None if names.is_empty() => refuse(
                        node,
                        format!(
                            "unknown column {}: without a header row, name columns _1, _2, ...",
                            ident
                        ),
                    ),
                    None => refuse(
                        node,
                        format!(
                            "unknown column {} (the header has: {})",
                            ident,
                            names.join(", ")
                        ),
                    ),
                }
            }
        }
    }

    fn expr(&self, expr: &ast::Expr) -> Result<Expr, SqlError> {
        use ast::Expr as E;
        let boxed = |e: &ast::Expr| self.expr(e).map(Box::new);
        Ok(match expr {
            E::Identifier(ident) => self.column(expr, std::slice::from_ref(ident))?,
            E::CompoundIdentifier(parts) => self.column(expr, parts)?,
            E::Nested(inner) => self.expr(inner)?,
            E::Value(value) => Expr::Literal(literal(expr, &value.value)?),
            E::UnaryOp {
                op: UnaryOperator::Not,
                expr: inner,
            } => Expr::Not(boxed(inner)?),
            E::UnaryOp {
                op: UnaryOperator::Minus,
                expr: inner,
            } => Expr::Negate(boxed(inner)?),
            E::UnaryOp {
                op: UnaryOperator::Plus,
                expr: inner,
            } => self.expr(inner)?,
            E::BinaryOp { left, op, right } => {
                let (l, r) = (boxed(left)?, boxed(right)?);
                match op {
                    BinaryOperator::And => Expr::And(l, r),
                    BinaryOperator::Or => Expr::Or(l, r),
                    BinaryOperator::Eq
                    | BinaryOperator::NotEq
                    | BinaryOperator::Lt
                    | BinaryOperator::LtEq
                    | BinaryOperator::Gt
                    | BinaryOperator::GtEq => Expr::Compare(l, op.clone(), r),
                    BinaryOperator::Plus => Expr::Arith(l, Arith::Add, r),
                    BinaryOperator::Minus => Expr::Arith(l, Arith::Sub, r),
                    BinaryOperator::Multiply => Expr::Arith(l, Arith::Mul, r),
                    BinaryOperator::Divide => Expr::Arith(l, Arith::Div, r),
                    BinaryOperator::Modulo => Expr::Arith(l, Arith::Rem, r),
                    other => return refuse(expr, format!("operator {other} is not supported")),
                }
            }
            E::IsNull(inner) => Expr::IsNull(boxed(inner)?, false),
            E::IsNotNull(inner) => Expr::IsNull(boxed(inner)?, true),
            E::Like {
                negated,
                any: false,
                expr: inner,
                pattern,
                escape_char,
            } => {
                let escape = match escape_char.as_deref() {
                    None => None,
                    Some(escape) => match literal(escape, &value_of(escape)?)? {
                        Value::Str(text) if text.chars().count() == 1 => text.chars().next(),
                        _ => return refuse(escape, "ESCAPE needs one character"),
                    },
                };
                let Value::Str(text) = literal(pattern.as_ref(), &value_of(pattern)?)? else {
                    return refuse(pattern.as_ref(), "LIKE needs a string pattern");
                };
                Expr::Like {
                    expr: boxed(inner)?,
                    pattern: like_pattern(&text, escape),
                    negated: *negated,
                }
            }
            E::InList {
                expr: inner,
                list,
                negated,
            } => Expr::In(
                boxed(inner)?,
                list.iter()
                    .map(|e| self.expr(e))
                    .collect::<Result<_, _>>()?,
                *negated,
            ),
            E::Between {
                expr: inner,
                negated,
                low,
                high,
            } => Expr::Between(boxed(inner)?, boxed(low)?, boxed(high)?, *negated),
            E::Cast {
                kind: CastKind::Cast,
                expr: inner,
                data_type,
                format: None,
            } => {
                let cast = match data_type {
                    DataType::Int(_)
                    | DataType::Integer(_)
                    | DataType::BigInt(_)
                    | DataType::SmallInt(_)
                    | DataType::TinyInt(_) => Cast::Int,
                    DataType::Float(_)
                    | DataType::Real
                    | DataType::Double(_)
                    | DataType::DoublePrecision
                    | DataType::Decimal(_)
                    | DataType::Numeric(_) => Cast::Float,
                    DataType::String(_)
                    | DataType::Varchar(_)
                    | DataType::Char(_)
                    | DataType::Text => Cast::Text,
                    DataType::Bool | DataType::Boolean => Cast::Bool,
                    other => {
                        return refuse(
                            expr,
                            format!(
                                "CAST to {other} is not supported (INT, FLOAT, DECIMAL, STRING, BOOL are)"
                            ),
                        );
                    }
                };
                Expr::Cast(boxed(inner)?, cast)
            }
            E::Function(_) => {
                if self.aggregate(expr)?.is_some() {
                    return refuse(
                        expr,
                        "aggregates belong in the select list, not in expressions",
                    );
                }
                unreachable!("aggregate() refuses every other function")
            }
            other => {
                return refuse(
                    other,
                    format!("{other} is not supported in this SQL subset"),
                );
            }
        })
    }
}

fn value_of(expr: &ast::Expr) -> Result<ast::Value, SqlError> {
    match expr {
        ast::Expr::Value(value) => Ok(value.value.clone()),
        other => refuse(other, "a literal is needed here"),
    }
}

fn literal(node: &impl Spanned, value: &ast::Value) -> Result<Value<'static>, SqlError> {
    Ok(match value {
        ast::Value::Number(text, _) => match parse_number(text) {
            Some(number) => number.into(),
            None => return refuse(node, format!("{text} is not a number")),
        },
        ast::Value::SingleQuotedString(text) => Value::Str(Cow::Owned(text.clone())),
        ast::Value::Boolean(b) => Value::Bool(*b),
        ast::Value::Null => Value::Null,
        other => return refuse(node, format!("literal {other} is not supported")),
    })
}

fn like_pattern(text: &str, escape: Option<char>) -> Vec<LikeToken> {
    let mut tokens = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            c if Some(c) == escape => LikeToken::Char(chars.next().unwrap_or(c)),
            '%' => LikeToken::Any,
            '_' => LikeToken::One,
            c => LikeToken::Char(c),
        });
    }
    tokens
}

fn like_matches(text: &[char], pattern: &[LikeToken]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((LikeToken::Any, rest)) => {
            (0..=text.len()).any(|skip| like_matches(&text[skip..], rest))
        }
        Some((LikeToken::One, rest)) => !text.is_empty() && like_matches(&text[1..], rest),
        Some((LikeToken::Char(c), rest)) => {
            text.first() == Some(c) && like_matches(&text[1..], rest)
        }
    }
}

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
    pub partials: Vec<Partial>,
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
fn holds(op: &BinaryOperator, ordering: Option<Ordering>) -> Option<bool> {
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
    fn visit_columns(&self, found: &mut impl FnMut(&Column)) {
        fn visit(expr: &Expr, found: &mut impl FnMut(&Column)) {
            match expr {
                Expr::Column(column) => found(column),
                Expr::Literal(_) => {}
                Expr::Not(e) | Expr::Negate(e) | Expr::IsNull(e, _) | Expr::Cast(e, _) => {
                    visit(e, found)
                }
                Expr::Like { expr, .. } => visit(expr, found),
                Expr::And(a, b)
                | Expr::Or(a, b)
                | Expr::Compare(a, _, b)
                | Expr::Arith(a, _, b) => {
                    visit(a, found);
                    visit(b, found);
                }
                Expr::In(e, list, _) => {
                    visit(e, found);
                    list.iter().for_each(|item| visit(item, found));
                }
                Expr::Between(e, low, high, _) => {
                    visit(e, found);
                    visit(low, found);
                    visit(high, found);
                }
            }
        }
        if let Some(filter) = &self.filter {
            visit(filter, found);
        }
        match &self.selection {
            Selection::All => {}
            Selection::Rows(rows) => rows.iter().for_each(|(_, e)| visit(e, found)),
            Selection::Aggregates(items) => items
                .iter()
                .filter_map(|(_, _, argument)| argument.as_ref())
                .for_each(|e| visit(e, found)),
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

    pub fn is_aggregate(&self) -> bool {
        matches!(self.selection, Selection::Aggregates(_))
    }

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
                            None => column.column.value(record)?.number(),
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
                        (Some(a), _) => {
                            let value = eval(a, record)?;
                            Some(value.as_number().unwrap_or(value))
                        }
                        (None, _) => None,
                    };
                    partial
                        .add(value.as_ref())
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

fn truth(value: &Value) -> Result<Option<bool>, String> {
    match value {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        other => Err(format!("{} is not a boolean", other.to_json())),
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
        Expr::Compare(l, op, r) => holds(op, compare(&eval(l, record)?, &eval(r, record)?))
            .map_or(Value::Null, Value::Bool),
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
                match compare(&value, &eval(item, record)?) {
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
                compare(&value, &eval(low, record)?),
                compare(&value, &eval(high, record)?),
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
        v.as_number()
            .ok_or_else(|| format!("{} is not a number", v.to_json()))
    };
    let (l, r) = (number(l)?, number(r)?);
    if let (Value::Int(a), Value::Int(b)) = (&l, &r) {
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
    let float = |v: &Value| match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => unreachable!("numbers only"),
    };
    let (a, b) = (float(&l), float(&r));
    Ok(Value::Float(match op {
        Arith::Add => a + b,
        Arith::Sub => a - b,
        Arith::Mul => a * b,
        Arith::Div => a / b,
        Arith::Rem => a % b,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Row(Vec<&'static str>);

    impl Record for Row {
        fn field(&self, index: usize) -> Result<Value<'_>, String> {
            Ok(self
                .0
                .get(index)
                .map_or(Value::Null, |s| Value::Str(Cow::Borrowed(*s))))
        }
        fn path(&self, _: &[String]) -> Value<'_> {
            Value::Null
        }
    }

    /// A row that offers its plain decimals as numbers, as CSV records do.
    struct NumericRow(Row);

    impl Record for NumericRow {
        fn field(&self, index: usize) -> Result<Value<'_>, String> {
            self.0.field(index)
        }
        fn path(&self, path: &[String]) -> Value<'_> {
            self.0.path(path)
        }
        fn plain_number(&self, index: usize) -> Option<Number> {
            super::super::value::parse_plain_decimal(self.0.0.get(index)?.as_bytes())
        }
    }

    fn columns() -> Columns {
        Columns::Positional(vec!["id".into(), "name".into(), "fare".into()])
    }

    /// Whether the row matches, the same with and without the plain-number shortcut.
    fn matches(sql_where: &str, row: Vec<&'static str>) -> bool {
        let query = compile(
            &format!("SELECT * FROM S3Object s WHERE {sql_where}"),
            &columns(),
        )
        .unwrap();
        let (plain, numeric) = (Row(row.clone()), NumericRow(Row(row)));
        let general = matches!(query.evaluator().record(&plain).unwrap(), Outcome::Whole);
        let shortcut = matches!(query.evaluator().record(&numeric).unwrap(), Outcome::Whole);
        assert_eq!(general, shortcut, "{sql_where}");
        general
    }

    #[test]
    fn filters_follow_sql_semantics() {
        let row = || vec!["7", "Ann O'Neil", "12.50"];
        let cases = [
            ("s.id = 7", true),
            ("id > 10", false),
            ("_3 >= 12.5 AND name LIKE 'Ann%'", true),
            ("name LIKE '_nn O''N%l'", true),
            ("name NOT LIKE '%x%'", true),
            ("CAST(fare AS FLOAT) BETWEEN 12 AND 13", true),
            ("id IN (1, 2, 7)", true),
            ("id NOT IN (1, 2)", true),
            ("_4 IS NULL", true),
            ("_4 IS NOT NULL OR NOT (id < 5)", true),
            ("id * 2 + 1 = 15", true),
            ("\"name\" = 'Ann O''Neil'", true),
            ("name > 5", false),
            ("_4 = 1 OR id = 8", false),
            ("7 < id", false),
            ("7 <= id", true),
            ("id <> 7", false),
            ("fare > 12.5", false),
            ("12.5 >= fare", true),
            ("CAST(fare AS INT) = 12", true),
            ("CAST(fare AS FLOAT) > 12.49", true),
            ("CAST(id AS FLOAT) = 7.0", true),
            ("_4 > 1", false),
        ];
        for (condition, want) in cases {
            assert_eq!(matches(condition, row()), want, "{condition}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_run_with_the_position() {
        let cases = [
            (
                "SELECT * FROM S3Object WHERE nme = 1",
                "unknown column nme (the header has: id, name, fare) at line 1, column 30",
            ),
            (
                "SELECT id, COUNT(*) FROM S3Object",
                "aggregates cannot be mixed with plain columns (there is no GROUP BY) at line 1, column 12",
            ),
            (
                "SELECT UPPER(name) FROM S3Object",
                "function UPPER is not supported (COUNT, SUM, MIN, MAX, AVG, CAST are) at line 1, column 8",
            ),
            (
                "SELECT * FROM other",
                "the query must read FROM S3Object (no joins) at line 1, column 15",
            ),
            (
                "SELECT * FROM S3Object LIMIT 1 OFFSET 2",
                "only LIMIT n is supported at line 1, column 30",
            ),
            (
                "DELETE FROM S3Object",
                "the query must be one SELECT statement",
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(compile(sql, &columns()).unwrap_err().message, want, "{sql}");
        }
        let error = compile("SELECT * FROM S3Object WHERE id = = 2", &columns())
            .unwrap_err()
            .message;
        assert!(
            error.starts_with("invalid SQL: ") && error.contains("Line: 1, Column"),
            "{error}"
        );
    }

    #[test]
    fn aggregates_are_named_and_bad_values_are_errors() {
        let query = compile(
            "SELECT COUNT(*), SUM(CAST(fare AS FLOAT)) AS total, MAX(id) FROM S3Object",
            &columns(),
        )
        .unwrap();
        let mut evaluator = query.evaluator();
        for row in [
            vec!["1", "a", "2.5"],
            vec!["3", "b", ""],
            vec!["2", "c", "1"],
        ] {
            evaluator.record(&Row(row)).unwrap();
        }
        let result = query.result(&evaluator.partials, 0);
        assert_eq!(
            serde_json::Value::Object(result),
            serde_json::json!({"COUNT(*)": 3, "total": 3.5, "MAX(id)": 3})
        );
        let error = evaluator.record(&Row(vec!["4", "d", "x"])).err().unwrap();
        assert_eq!(error, "cannot cast \"x\" to Float");
    }

    #[test]
    fn limit_caps_rows_and_names_follow_columns() {
        let query = compile("SELECT name, id + 1 FROM S3Object LIMIT 2", &columns()).unwrap();
        assert_eq!(query.output_names().unwrap(), vec!["name", "_2"]);
        let mut evaluator = query.evaluator();
        let kept = (0..5)
            .filter(|_| {
                matches!(
                    evaluator.record(&Row(vec!["1", "a"])).unwrap(),
                    Outcome::Row(_)
                )
            })
            .count();
        assert_eq!(kept, 2);
        let named = compile("SELECT s.a.b FROM S3Object s", &Columns::Named).unwrap();
        assert_eq!(named.output_names().unwrap(), vec!["a.b"]);
    }

    /// JSON-like top-level fields, offered as plain numbers (as JSON Lines records offer their
    /// plain decimals) when `plain`.
    struct Fields {
        values: Vec<(&'static str, Value<'static>)>,
        plain: bool,
    }

    impl Record for Fields {
        fn field(&self, index: usize) -> Result<Value<'_>, String> {
            Err(format!("no column _{}", index + 1))
        }
        fn path(&self, path: &[String]) -> Value<'_> {
            let [name] = path else {
                return Value::Null;
            };
            self.values
                .iter()
                .rev()
                .find(|(field, _)| field == name)
                .map_or(Value::Null, |(_, value)| value.clone())
        }
        fn plain_path_number(&self, path: &[String]) -> Option<Number> {
            match self.path(path) {
                _ if !self.plain => None,
                Value::Int(i) => Some(Number::Int(i)),
                Value::Float(f) => Some(Number::Float(f)),
                _ => None,
            }
        }
    }

    #[test]
    fn named_fields_read_as_plain_numbers_give_what_their_values_give() {
        let records: Vec<Vec<(&str, Value)>> = vec![
            vec![("fare", Value::Float(12.5)), ("n", Value::Int(3))],
            vec![("fare", Value::Int(51)), ("n", Value::Int(9))],
            vec![("fare", Value::Str("60.5".into()))],
            vec![("fare", Value::Null), ("n", Value::Float(4.5))],
            vec![("n", Value::Int(1))],
            vec![("fare", Value::Float(-0.0))],
            vec![("fare", Value::Bool(true))],
            vec![("fare", Value::Str("cash".into()))],
        ];
        let items = "COUNT(*), MIN(s.fare), MAX(s.fare), COUNT(s.fare), MIN(CAST(s.fare AS FLOAT)), \
                     MAX(s.n), SUM(s.n)";
        let mut results = Vec::new();
        for filter in [
            "",
            "WHERE s.fare > 12",
            "WHERE CAST(s.fare AS INT) >= 12",
            "WHERE 51 = s.fare",
            "WHERE s.n < 5",
            "WHERE CAST(s.fare AS FLOAT) <= 0",
        ] {
            let sql = format!("SELECT {items} FROM S3Object s {filter}");
            let query = compile(&sql, &Columns::Named).unwrap();
            let [general, shortcut] = [false, true].map(|plain| {
                let mut evaluator = query.evaluator();
                let errors: Vec<String> = records
                    .iter()
                    .filter_map(|values| {
                        let record = Fields {
                            values: values.clone(),
                            plain,
                        };
                        evaluator.record(&record).err()
                    })
                    .collect();
                (query.result(&evaluator.partials, 0), errors)
            });
            assert_eq!(general, shortcut, "{sql}");
            results.push(general);
        }
        // The cases differ from each other: the filters and values are not all unknown.
        assert_eq!(results[1].0["COUNT(*)"], 3, "{results:?}");
        assert_eq!(results[3].0["MAX(s.n)"], 9, "{results:?}");
        assert_eq!(results[5].0["COUNT(*)"], 1, "{results:?}");
    }
}
