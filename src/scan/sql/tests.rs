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

/// Runs `work` on a thread with the 2 MiB stack of a tokio worker (the operator's reconciles).
fn on_small_stack<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(work)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn expressions_are_bounded_in_depth_and_queries_in_length() {
    let chain = |terms: usize| {
        format!(
            "SELECT COUNT(*) FROM S3Object s WHERE 1{} > 0",
            "+1".repeat(terms - 1)
        )
    };
    // At the bound (the comparison and the chain's additions): compiled and evaluated.
    let at_bound = chain(MAX_EXPRESSION_DEPTH - 1);
    let counted = on_small_stack(move || {
        let query = compile(&at_bound, &columns()).map_err(|e| e.message)?;
        let mut evaluator = query.evaluator();
        let record = Fields {
            values: vec![],
            plain: false,
        };
        evaluator.record(&record).map_err(|e| e.to_string())?;
        Ok::<_, String>(query.result(&evaluator.partials, 0)["COUNT(*)"].clone())
    });
    assert_eq!(counted, Ok(serde_json::json!(1)));
    // Past it, by one and by 30,000 terms (60 KiB, which the CRD admits): refused, no overflow.
    for terms in [MAX_EXPRESSION_DEPTH, 30_000] {
        let sql = chain(terms);
        assert!(sql.len() <= MAX_SQL_BYTES);
        let refused = on_small_stack(move || compile(&sql, &columns()).map(|_| ()));
        let message = refused.unwrap_err().message;
        assert!(message.contains("nests more than 256 levels"), "{message}");
    }
    // Deep nesting of another shape: parentheses, NOT, a call's argument.
    for sql in [
        format!(
            "SELECT * FROM S3Object WHERE {}1 = 1",
            "NOT ".repeat(20_000)
        ),
        format!("SELECT SUM({}1) FROM S3Object", "-".repeat(20_000)),
        format!(
            "SELECT * FROM S3Object WHERE {}1{}",
            "(".repeat(300),
            ")".repeat(300)
        ),
    ] {
        let refused = on_small_stack(move || compile(&sql, &columns()).map(|_| ()));
        assert!(refused.is_err());
    }
    let long = format!(
        "SELECT * FROM S3Object WHERE s.a = '{}'",
        "x".repeat(MAX_SQL_BYTES)
    );
    let message = compile(&long, &columns()).unwrap_err().message;
    assert!(message.contains("at most 65536"), "{message}");
}

#[test]
fn like_takes_time_in_proportion_to_its_inputs() {
    let text: Vec<char> = "a".repeat(5_000).chars().collect();
    let pattern = like_pattern(&format!("{}b", "%a".repeat(200)), None);
    let started = std::time::Instant::now();
    assert!(!like_matches(&text, &pattern));
    // Backtracking would take longer than the universe; this is milliseconds.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let cases = [
        ("abc", "a%c", true),
        ("abc", "a_c", true),
        ("abc", "%", true),
        ("", "%", true),
        ("", "_", false),
        ("abcabc", "%bc", true),
        ("abcab", "%bc", false),
        ("a%b", "a\\%b", true),
        ("axb", "a\\%b", false),
        ("mississippi", "m%issip%", true),
        ("mississippi", "m%iss%ppi", true),
        ("mississippi", "m%isp%", false),
    ];
    for (text, pattern, want) in cases {
        let chars: Vec<char> = text.chars().collect();
        assert_eq!(
            like_matches(&chars, &like_pattern(pattern, Some('\\'))),
            want,
            "{text} LIKE {pattern}"
        );
    }
}

/// Parts of a query that read no column (partitions, virtual columns) fold into values: a WHERE
/// clause on a partition alone is gone, and `TRUE AND p` is `p`; what they would do per record
/// (fail, not be a boolean, compare by type) is kept.
#[test]
fn constants_fold_into_values_where_they_decide_the_same() {
    let constants: Constants = vec![
        ("day".into(), Value::Str(Cow::Borrowed("2024-02-01"))),
        ("year".into(), Value::Int(2024)),
    ];
    let folded = |sql_where: &str, typed: bool| {
        let sql = format!("SELECT id FROM S3Object WHERE {sql_where}");
        compile_with(&sql, &columns(), &constants)
            .unwrap()
            .fold_constants(typed)
            .filter
    };
    let filter = |sql_where: &str| {
        compile(
            &format!("SELECT id FROM S3Object WHERE {sql_where}"),
            &columns(),
        )
        .unwrap()
        .filter
    };
    let cases: [(&str, bool, Option<Expr>); 9] = [
        ("day = '2024-02-01'", false, None),
        ("day = '2024-02-01' AND fare > 5", false, filter("fare > 5")),
        ("fare > 5 AND year >= 2024", false, filter("fare > 5")),
        ("day = '2024-01-31' OR fare > 5", false, filter("fare > 5")),
        ("day = '2024-01-31'", false, filter("FALSE")),
        // A text is no boolean: `TRUE AND name` fails per record, as it did.
        ("year = 2024 AND name", false, filter("TRUE AND name")),
        // A cast that fails fails per record.
        (
            "CAST('x' AS INT) = 1",
            false,
            filter("CAST('x' AS INT) = 1"),
        ),
        // Text read as a number untyped; typed, text and number do not compare (NULL).
        ("year = '2024'", false, None),
        ("year = '2024'", true, filter("NULL")),
    ];
    for (sql_where, typed, want) in cases {
        assert_eq!(
            folded(sql_where, typed),
            want,
            "{sql_where} (typed: {typed})"
        );
    }
    // The selection folds too, its names unchanged.
    let query = compile_with(
        "SELECT year + 1 AS next, id FROM S3Object",
        &columns(),
        &constants,
    )
    .unwrap()
    .fold_constants(false);
    assert_eq!(query.output_names().unwrap(), ["next", "id"]);
    let Selection::Rows(rows) = &query.selection else {
        panic!("a row query");
    };
    assert_eq!(rows[0].1, Expr::Literal(Value::Int(2025)));
}
