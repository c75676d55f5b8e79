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

use super::value::{AggregateKind, Number, Partial, Value, compare_as, parse_number};

/// A query refused before any chunk runs, with its position when the parser or the compiler
/// knows it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct SqlError {
    /// What is wrong, with its line and column when known.
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
    /// Field `index` (0-based) by position, as CSV's `_1`, `_2`, ...; an error when it cannot be
    /// read (not UTF-8) or the format has no positions.
    fn field(&self, index: usize) -> Result<Value<'_>, String>;
    /// The value at a field path (a name, then struct fields); NULL when absent.
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
    /// Whether values carry their types (Parquet): text compares with text only and is never
    /// read as a number, and only NULL is absent. Text formats' values are text that may be read
    /// as numbers.
    fn typed(&self) -> bool {
        false
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

/// Longest query compiled, in bytes: the CRD admits as much, and the CLI and workers the same.
pub const MAX_SQL_BYTES: usize = 64 << 10;

/// Most items of a SELECT list: every aggregate's partial travels in every chunk's report and in
/// the scan's status.
pub const MAX_SELECT_ITEMS: usize = 256;

/// Deepest expression compiled: nested operators, parentheses and calls. Evaluation recurses
/// once per level; real queries nest a few levels.
pub const MAX_EXPRESSION_DEPTH: usize = 256;

/// Stack of the thread a query is parsed on. The parser builds a chain such as `1+1+...+1` as
/// deep as it is long (it parses equal precedence in a loop), and such a tree is dropped, shown
/// and measured by recursion: within [`MAX_SQL_BYTES`] it is at most about 32,000 levels, which
/// fits here with room to spare. Only pages touched are memory.
const PARSE_STACK: usize = 256 << 20;

/// Values that stand for a column in every record of an object (its `_path`, a hive partition):
/// a query naming one reads the value, not a field.
pub type Constants = Vec<(String, Value<'static>)>;

/// Compiles `sql` for records addressed by `columns`. The query is parsed and compiled on a
/// thread with a large stack of its own, so no query can overflow the caller's (an overflow
/// aborts the process: the operator serves every tenant); an expression deeper than
/// [`MAX_EXPRESSION_DEPTH`] is refused.
pub fn compile(sql: &str, columns: &Columns) -> Result<Query, SqlError> {
    compile_with(sql, columns, &Constants::new())
}

/// [`compile`], a name of `constants` (matched as a column name is) standing for its value.
pub fn compile_with(
    sql: &str,
    columns: &Columns,
    constants: &Constants,
) -> Result<Query, SqlError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(SqlError {
            message: format!(
                "the query is {} bytes; at most {MAX_SQL_BYTES} are compiled",
                sql.len()
            ),
        });
    }
    let (sql, columns, constants) = (sql.to_string(), columns.clone(), constants.clone());
    let compiling = std::thread::Builder::new()
        .name("sql-compile".into())
        .stack_size(PARSE_STACK)
        .spawn(move || compile_here(&sql, &columns, &constants));
    let failed = |why: &str| SqlError {
        message: format!("the query could not be compiled: {why}"),
    };
    match compiling {
        Ok(thread) => thread
            .join()
            .unwrap_or_else(|_| Err(failed("the compiler stopped"))),
        Err(e) => Err(failed(&e.to_string())),
    }
}

/// [`compile`] on the calling thread.
fn compile_here(sql: &str, columns: &Columns, constants: &Constants) -> Result<Query, SqlError> {
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
    let compiler = Compiler {
        columns,
        constants,
        alias,
        depth: std::cell::Cell::new(0),
    };
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
    constants: &'a Constants,
    alias: Option<String>,
    /// How deep the expression being compiled nests at this point.
    depth: std::cell::Cell<usize>,
}

impl Compiler<'_> {
    fn selection(&self, items: &[SelectItem]) -> Result<Selection, SqlError> {
        if let [SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)] = items {
            return Ok(Selection::All);
        }
        if items.len() > MAX_SELECT_ITEMS {
            return Err(SqlError {
                message: format!(
                    "the SELECT list has {} items; at most {MAX_SELECT_ITEMS}",
                    items.len()
                ),
            });
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
                    // A constant named as a column (a partition, `_path`) keeps its name.
                    (Expr::Literal(_), _) => match expr {
                        ast::Expr::Identifier(ident) => ident.value.clone(),
                        ast::Expr::CompoundIdentifier(parts) => parts
                            .last()
                            .map_or_else(|| format!("_{}", position + 1), |p| p.value.clone()),
                        _ => format!("_{}", position + 1),
                    },
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
        if let [ident] = parts
            && let Some((_, value)) =
                self.constants
                    .iter()
                    .find(|(name, _)| match ident.quote_style {
                        Some(_) => *name == ident.value,
                        None => name.eq_ignore_ascii_case(&ident.value),
                    })
        {
            return Ok(Expr::Literal(value.clone()));
        }
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

    /// [`Compiler::expr_here`] one level deeper, refused past [`MAX_EXPRESSION_DEPTH`].
    fn expr(&self, expr: &ast::Expr) -> Result<Expr, SqlError> {
        let depth = self.depth.get() + 1;
        if depth > MAX_EXPRESSION_DEPTH {
            return Err(SqlError {
                message: format!(
                    "the expression nests more than {MAX_EXPRESSION_DEPTH} levels deep \
                     (operators, parentheses and calls); at most {MAX_EXPRESSION_DEPTH}"
                ),
            });
        }
        self.depth.set(depth);
        let compiled = self.expr_here(expr);
        self.depth.set(depth - 1);
        compiled
    }

    /// One arm per SQL expression form, each a line or a call: one match reads better than the
    /// same dispatch spread over helpers.
    fn expr_here(&self, expr: &ast::Expr) -> Result<Expr, SqlError> {
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
            } => match self.expr(inner)? {
                // A negative number is a literal (statistics prune by it).
                Expr::Literal(Value::Int(i)) if i != i64::MIN => Expr::Literal(Value::Int(-i)),
                Expr::Literal(Value::Float(f)) => Expr::Literal(Value::Float(-f)),
                other => Expr::Negate(Box::new(other)),
            },
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
                    other => Expr::Arith(l, arith_of(expr, other)?, r),
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
            } => Expr::Like {
                expr: boxed(inner)?,
                pattern: like_of(pattern, escape_char.as_deref())?,
                negated: *negated,
            },
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
            } => Expr::Cast(boxed(inner)?, cast_of(expr, data_type)?),
            // aggregate() refuses every function but the aggregates.
            E::Function(_) => match self.aggregate(expr)? {
                Some(_) => {
                    return refuse(
                        expr,
                        "aggregates belong in the select list, not in expressions",
                    );
                }
                None => return refuse(expr, "functions are not supported here"),
            },
            other => {
                return refuse(
                    other,
                    format!("{other} is not supported in this SQL subset"),
                );
            }
        })
    }
}

fn arith_of(expr: &ast::Expr, op: &BinaryOperator) -> Result<Arith, SqlError> {
    Ok(match op {
        BinaryOperator::Plus => Arith::Add,
        BinaryOperator::Minus => Arith::Sub,
        BinaryOperator::Multiply => Arith::Mul,
        BinaryOperator::Divide => Arith::Div,
        BinaryOperator::Modulo => Arith::Rem,
        other => return refuse(expr, format!("operator {other} is not supported")),
    })
}

/// A LIKE pattern: a string literal, with an optional one-character ESCAPE.
fn like_of(pattern: &ast::Expr, escape: Option<&ast::Expr>) -> Result<Vec<LikeToken>, SqlError> {
    let escape = match escape {
        None => None,
        Some(escape) => match literal(escape, &value_of(escape)?)? {
            Value::Str(text) if text.chars().count() == 1 => text.chars().next(),
            _ => return refuse(escape, "ESCAPE needs one character"),
        },
    };
    let Value::Str(text) = literal(pattern, &value_of(pattern)?)? else {
        return refuse(pattern, "LIKE needs a string pattern");
    };
    Ok(like_pattern(&text, escape))
}

fn cast_of(expr: &ast::Expr, data_type: &DataType) -> Result<Cast, SqlError> {
    Ok(match data_type {
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
        DataType::String(_) | DataType::Varchar(_) | DataType::Char(_) | DataType::Text => {
            Cast::Text
        }
        DataType::Bool | DataType::Boolean => Cast::Bool,
        other => {
            return refuse(
                expr,
                format!("CAST to {other} is not supported (INT, FLOAT, DECIMAL, STRING, BOOL are)"),
            );
        }
    })
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

/// Whether `text` matches `pattern`, without recursion and in time proportional to their
/// lengths' product at worst: on a mismatch after a `%`, the match resumes one character later
/// from that `%` (the classic wildcard matcher: only the last `%` needs revisiting).
fn like_matches(text: &[char], pattern: &[LikeToken]) -> bool {
    let (mut t, mut p) = (0, 0);
    // The last `%` seen, and where in the text its match resumes.
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(LikeToken::Any) => {
                resume = Some((p, t));
                p += 1;
            }
            Some(LikeToken::One) => {
                t += 1;
                p += 1;
            }
            Some(LikeToken::Char(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            _ => match resume {
                Some((any, from)) => {
                    p = any + 1;
                    t = from + 1;
                    resume = Some((any, from + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..]
        .iter()
        .all(|token| *token == LikeToken::Any)
}

mod eval;
mod prune;
pub(crate) use eval::holds;
pub use eval::{Evaluator, Outcome};
pub use prune::{Bounds, ColumnAggregate, ColumnBounds, ColumnComparison, FooterAggregate};

#[cfg(test)]
mod tests;
