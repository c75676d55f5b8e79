//! Hive partitions: `key=value` folders of an object's key (`events/year=2024/month=03/x.csv`)
//! become text columns of its records, and a query's WHERE on them decides, before a byte of the
//! object is read, whether it can hold a matching row.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::scan::sql::{ColumnBounds, Query};
use crate::scan::value::Value;

/// Whether `k=v` folders become columns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HivePartitioning {
    /// When keys have them: every object must then have the same partition keys.
    #[default]
    Auto,
    /// Always: an object without partitions fails the scan.
    Enabled,
    /// Never: `k=v` folders are only part of the key.
    Disabled,
}

/// A query's WHERE clause asked of hive folders as a glob's listing reaches them: a folder whose
/// partitions rule out every row is never listed.
#[derive(Clone, Debug)]
pub struct FolderPruning {
    /// The query, compiled with named columns.
    pub query: Query,
    /// Folders ruled out so far.
    pub pruned: Arc<AtomicU64>,
}

/// Most partition columns taken from one key.
const MAX_PARTITIONS: usize = 32;

/// The `name=value` folders of `key` in order (its last segment, the object's name, is not a
/// folder), percent-decoded as Hive and Spark encode them; at most 32.
pub fn partitions(key: &str) -> Vec<(String, String)> {
    let Some((folders, _)) = key.rsplit_once('/') else {
        return Vec::new();
    };
    folders
        .split('/')
        .filter_map(|segment| segment.split_once('='))
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, value)| (decode(name), decode(value)))
        .take(MAX_PARTITIONS)
        .collect()
}

/// `text` with its `%XX` escapes decoded (kept as it is when that is not UTF-8).
fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map_or_else(|_| text.to_string(), |decoded| decoded.into_owned())
}

/// A partition's value as a query sees it: an integer when it is one (`month=03` is 3, as DuckDB
/// reads it), else text. Typed formats (Parquet) compare numbers with numbers only, so a year
/// must be a number to compare with `2024`.
pub fn value(text: &str) -> Value<'static> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    match text.parse::<i64>() {
        Ok(number) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            Value::Int(number)
        }
        _ => Value::Str(Cow::Owned(text.to_string())),
    }
}

/// The statistics an object's partitions give a query: each partition column holds exactly its
/// value, in every record.
struct PartitionBounds<'a>(&'a [(String, String)]);

impl crate::scan::sql::Bounds for PartitionBounds<'_> {
    fn bounds(&self, path: &[String]) -> Option<ColumnBounds<'_>> {
        let [name] = path else {
            return None;
        };
        let (_, text) = self
            .0
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))?;
        let value = value(text);
        Some(ColumnBounds {
            min: Some(value.clone()),
            max: Some(value),
            nulls: Some(0),
            rows: 1,
        })
    }
}

/// Whether an object with `partitions` can hold a row `query` (compiled with named columns)
/// keeps: asked of the WHERE clause through the same pruning as Parquet statistics.
pub fn may_match(query: &Query, partitions: &[(String, String)]) -> bool {
    partitions.is_empty() || query.may_match(&PartitionBounds(partitions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::sql::{Columns, compile};

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn folders_of_name_and_value_are_partitions() {
        for (key, expected) in [
            (
                "events/year=2024/month=03/x.parquet",
                &[("year", "2024"), ("month", "03")][..],
            ),
            ("year=2024/x.csv", &[("year", "2024")]),
            ("x=1.csv", &[]),
            ("a/=1/b=/c", &[("b", "")]),
            (
                "city=S%C3%A3o%20Paulo/d=a%2Fb/f",
                &[("city", "São Paulo"), ("d", "a/b")],
            ),
            ("bad=%zz/f", &[("bad", "%zz")]),
            ("plain/folders/f", &[]),
        ] {
            assert_eq!(partitions(key), pairs(expected), "{key}");
        }
        let deep = "k=v/".repeat(40) + "f";
        assert_eq!(partitions(&deep).len(), MAX_PARTITIONS);
    }

    #[test]
    fn integer_values_are_numbers() {
        for (text, expected) in [
            ("2024", Value::Int(2024)),
            ("03", Value::Int(3)),
            ("-7", Value::Int(-7)),
            ("+7", Value::Str("+7".into())),
            ("1e3", Value::Str("1e3".into())),
            ("", Value::Str("".into())),
            (
                "99999999999999999999",
                Value::Str("99999999999999999999".into()),
            ),
            ("2024-06-01", Value::Str("2024-06-01".into())),
        ] {
            assert_eq!(value(text), expected, "{text}");
        }
    }

    #[test]
    fn the_where_clause_prunes_objects_by_their_partitions() {
        let object = pairs(&[("year", "2024"), ("month", "03")]);
        for (filter, kept) in [
            ("year = 2024 AND month <= 3", true),
            ("year = 2024 AND month <= 2", false),
            ("year = '2024'", true),
            ("year <> 2024 OR amount > 5", true),
            ("year <> 2024", false),
            ("month IN (1, 2)", false),
            ("month BETWEEN 3 AND 4", true),
            ("amount > 5", true),
            ("s.year > 2024", false),
            ("month = '03'", true),
        ] {
            let sql = format!("SELECT COUNT(*) FROM S3Object s WHERE {filter}");
            let query = compile(&sql, &Columns::Named).unwrap();
            assert_eq!(may_match(&query, &object), kept, "{filter}");
        }
    }
}
