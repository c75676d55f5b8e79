//! Records as the query reads them: CSV fields as byte ranges of the record, JSON Lines records by
//! their top-level fields (found in place, or parsed by serde_json).

use crate::scan::sql::Record;
use crate::scan::text::json::fields::{JsonScalar, same_bytes};
use crate::scan::value::{Number, Value, parse_plain_decimal};

/// Fields as byte ranges of `data`, each ending at its entry of `ends`.
pub(crate) struct CsvRecord<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) ends: &'a [usize],
    /// Fields are separated by a delimiter byte (the record as read), not adjacent (as unquoted).
    pub(crate) separated: bool,
}

impl CsvRecord<'_> {
    pub(crate) fn bytes(&self, index: usize) -> Option<&[u8]> {
        let end = *self.ends.get(index)?;
        let start = match index {
            0 => 0,
            _ => self.ends[index - 1] + usize::from(self.separated),
        };
        Some(&self.data[start..end])
    }
}

impl Record for CsvRecord<'_> {
    fn field(&self, index: usize) -> Result<Value<'_>, String> {
        match self.bytes(index) {
            None => Ok(Value::Null),
            Some(bytes) => std::str::from_utf8(bytes)
                .map(|text| Value::Str(text.into()))
                .map_err(|_| format!("field _{} is not UTF-8", index + 1)),
        }
    }

    fn path(&self, _: &[String]) -> Value<'_> {
        Value::Null
    }

    fn plain_number(&self, index: usize) -> Option<Number> {
        parse_plain_decimal(self.bytes(index)?)
    }
}

/// A JSON Lines record with only the top-level fields the query reads, `names[i]` the i-th.
pub(crate) struct JsonRecord<'a> {
    pub(crate) names: &'a [String],
    pub(crate) fields: JsonFields<'a>,
}

pub(crate) enum JsonFields<'a> {
    /// Each field's value as found by [`find_scalar_fields`] in `text`.
    Scalars {
        text: &'a [u8],
        scalars: &'a [Option<JsonScalar>],
    },
    /// Each field's value parsed by serde_json.
    Parsed(&'a [Option<serde_json::Value>]),
}

impl JsonRecord<'_> {
    pub(crate) fn field_index(&self, name: &str) -> Option<usize> {
        self.names
            .iter()
            .position(|known| same_bytes(known.as_bytes(), name.as_bytes()))
    }
}

impl Record for JsonRecord<'_> {
    fn field(&self, index: usize) -> Result<Value<'_>, String> {
        Err(format!("JSON Lines records have no column _{}", index + 1))
    }

    fn path(&self, path: &[String]) -> Value<'_> {
        let Some((first, rest)) = path.split_first() else {
            return Value::Null;
        };
        let Some(at) = self.field_index(first) else {
            return Value::Null;
        };
        let mut value = match &self.fields {
            JsonFields::Scalars { text, scalars } => {
                return match (&scalars[at], rest) {
                    (Some(scalar), []) => scalar.value(text),
                    // Absent, or a scalar has no fields.
                    _ => Value::Null,
                };
            }
            JsonFields::Parsed(values) => match &values[at] {
                Some(value) => value,
                None => return Value::Null,
            },
        };
        for name in rest {
            match value.get(name) {
                Some(inner) => value = inner,
                None => return Value::Null,
            }
        }
        Value::from_json(value)
    }

    fn plain_path_number(&self, path: &[String]) -> Option<Number> {
        let JsonFields::Scalars { scalars, .. } = &self.fields else {
            return None;
        };
        let [name] = path else {
            return None;
        };
        match scalars[self.field_index(name)?] {
            Some(JsonScalar::Number(number)) => Some(number),
            _ => None,
        }
    }
}
