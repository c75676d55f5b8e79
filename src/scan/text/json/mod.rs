//! Checks JSON text the way serde_json skips a value it does not keep (`IgnoredAny`): the same
//! grammar, no UTF-8 check inside strings, no depth limit, but without serde's visitor calls,
//! and strings and digits taken 8 bytes at a time.

pub(crate) mod fields;

use std::ops::Range;

use super::word::{bytes_below, bytes_equal, non_digits};

/// What checking one line leaves for the next, kept by the caller so that lines do not allocate:
/// the arrays and objects a value is inside of, and the member prefixes (`"key": ` with the
/// whitespace around it) of the last top-level object, by position. Lines of JSON Lines repeat
/// their keys: a prefix equal to the last line's is taken in one comparison of 16 bytes, not
/// scanned byte by byte, and the scan of the line's next token need not wait for it.
#[derive(Default)]
pub(crate) struct Scratch {
    open: Vec<u8>,
    prefixes: Vec<Prefix>,
}

/// A member prefix of at most 16 bytes (`len` 0: none), the key's quotes at its `key` offsets.
#[derive(Clone, Copy, Default)]
struct Prefix {
    bytes: u128,
    len: u8,
    key_start: u8,
    key_end: u8,
}

/// Top-level members whose prefixes are remembered.
const PREFIXES: usize = 32;

/// True when `text` is exactly one JSON value, with only JSON whitespace around it: exactly when
/// `serde_json::from_slice::<serde::de::IgnoredAny>(text)` succeeds.
// Not inlined: inside the record loop, the scan's position went through the stack (registers
// spilled), and each token waited on a store and a load (10% more CPU for a count).
#[inline(never)]
pub(crate) fn is_json_value(text: &[u8], scratch: &mut Scratch) -> bool {
    visit_json_value(text, scratch, |_, _| {})
}

/// [`is_json_value`], calling `member(key, value)` for each member of a top-level object, in
/// order, as it is checked: `key` is the text between the key's quotes (escapes as written),
/// `value` the span of the member's value in `text`. Members seen before a refusal are reported.
///
/// One loop over the bytes with its state in locals: it runs for every record of a JSON Lines
/// scan, and splitting it would pass that state through calls on the hot path.
pub(crate) fn visit_json_value(
    text: &[u8],
    scratch: &mut Scratch,
    mut member: impl FnMut(&[u8], Range<usize>),
) -> bool {
    let Scratch { open, prefixes } = scratch;
    open.clear();
    // Top-level members begun.
    let mut members = 0;
    // The top-level member whose value is being checked: its key and where its value starts.
    let mut pending: Option<(Range<usize>, usize)> = None;
    let mut at = 0;
    loop {
        at = skip_whitespace(text, at);
        let after = match text.get(at) {
            Some(b'"') => string_end(text, at + 1),
            Some(b'-') => number_end(text, at + 1),
            Some(b'0'..=b'9') => number_end(text, at),
            Some(b't') => literal_end(text, at, b"true"),
            Some(b'f') => literal_end(text, at, b"false"),
            Some(b'n') => literal_end(text, at, b"null"),
            Some(&bracket @ (b'[' | b'{')) => {
                let inside = skip_whitespace(text, at + 1);
                match (bracket, text.get(inside)) {
                    (b'[', Some(b']')) | (b'{', Some(b'}')) => Some(inside + 1),
                    (b'[', _) => {
                        open.push(b'[');
                        at = inside;
                        continue;
                    }
                    _ => {
                        open.push(b'{');
                        let top = open.len() == 1;
                        match member_start(text, at + 1, top, prefixes, &mut members, &mut pending)
                        {
                            Some(value) => {
                                at = value;
                                continue;
                            }
                            None => return false,
                        }
                    }
                }
            }
            _ => None,
        };
        let Some(mut after) = after else {
            return false;
        };
        // After a value: close the arrays and objects that end here, up to the next value.
        loop {
            if open.len() == 1
                && let Some((key, value)) = pending.take()
            {
                member(&text[key], value..after);
            }
            after = skip_whitespace(text, after);
            let Some(&bracket) = open.last() else {
                return after == text.len();
            };
            match (bracket, text.get(after)) {
                (b'[', Some(b',')) => {
                    at = after + 1;
                    break;
                }
                (b'{', Some(b',')) => {
                    let top = open.len() == 1;
                    match member_start(text, after + 1, top, prefixes, &mut members, &mut pending) {
                        Some(value) => {
                            at = value;
                            break;
                        }
                        None => return false,
                    }
                }
                (b'[', Some(b']')) | (b'{', Some(b'}')) => {
                    open.pop();
                    after += 1;
                }
                _ => return false,
            }
        }
    }
}

#[inline(always)]
fn skip_whitespace(text: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = text.get(at) {
        at += 1;
    }
    at
}

/// From just inside `{` or after a member's comma: where the member's value starts. A member of
/// the top-level object (`top`) is taken by [`top_member_start`] and kept in `pending`, to be
/// reported when its value ends.
#[inline(always)]
fn member_start(
    text: &[u8],
    at: usize,
    top: bool,
    prefixes: &mut Vec<Prefix>,
    members: &mut usize,
    pending: &mut Option<(Range<usize>, usize)>,
) -> Option<usize> {
    if !top {
        return member_value_start(text, at).map(|(_, value)| value);
    }
    let (key, value) = top_member_start(text, at, prefixes, members)?;
    *pending = Some((key, value));
    Some(value)
}

/// [`member_value_start`] for a member of the top-level object, the `members`-th begun: by the
/// prefix of the last object's member at that position when the text repeats it, learning the
/// prefix when it does not.
#[inline(always)]
fn top_member_start(
    text: &[u8],
    at: usize,
    prefixes: &mut Vec<Prefix>,
    members: &mut usize,
) -> Option<(Range<usize>, usize)> {
    let index = *members;
    *members += 1;
    let word = text
        .get(at..at + 16)
        .map(|word| u128::from_le_bytes(word.try_into().expect("16 bytes")));
    if let (Some(word), Some(prefix)) = (word, prefixes.get(index))
        && prefix.len > 0
        && (word ^ prefix.bytes) & low_bytes(prefix.len) == 0
    {
        // The same bytes parse the same way, up to the whitespace that may follow them.
        let key = at + usize::from(prefix.key_start)..at + usize::from(prefix.key_end);
        return Some((key, skip_whitespace(text, at + usize::from(prefix.len))));
    }
    let (key, value) = member_value_start(text, at)?;
    if let Some(word) = word
        && index < PREFIXES
    {
        if prefixes.len() <= index {
            prefixes.resize(index + 1, Prefix::default());
        }
        let len = value - at;
        prefixes[index] = match u8::try_from(len) {
            Ok(len) if len <= 16 => Prefix {
                bytes: word & low_bytes(len),
                len,
                key_start: (key.start - at) as u8,
                key_end: (key.end - at) as u8,
            },
            _ => Prefix::default(),
        };
    }
    Some((key, value))
}

/// A mask of the low `len` bytes of a u128 (`len` at most 16).
#[inline(always)]
fn low_bytes(len: u8) -> u128 {
    u128::MAX.checked_shr(128 - 8 * u32::from(len)).unwrap_or(0)
}

/// From just inside `{` or after a member's comma: past `"key" :`. The span of the key between
/// its quotes, and where the member's value starts.
#[inline(always)]
fn member_value_start(text: &[u8], at: usize) -> Option<(Range<usize>, usize)> {
    let at = skip_whitespace(text, at);
    if text.get(at) != Some(&b'"') {
        return None;
    }
    let key_end = string_end(text, at + 1)?;
    let colon = skip_whitespace(text, key_end);
    (text.get(colon) == Some(&b':'))
        .then(|| (at + 1..key_end - 1, skip_whitespace(text, colon + 1)))
}

#[inline(always)]
fn literal_end(text: &[u8], at: usize, literal: &[u8]) -> Option<usize> {
    let end = at + literal.len();
    (text.get(at..end) == Some(literal)).then_some(end)
}

/// From just after an optional minus sign: past `int [frac] [exp]`.
#[inline(always)]
fn number_end(text: &[u8], at: usize) -> Option<usize> {
    let mut at = match text.get(at) {
        // A leading zero stands alone.
        Some(b'0') if !text.get(at + 1).is_some_and(u8::is_ascii_digit) => at + 1,
        Some(b'1'..=b'9') => digits_end(text, at + 1),
        _ => return None,
    };
    if text.get(at) == Some(&b'.') {
        let end = digits_end(text, at + 1);
        if end == at + 1 {
            return None;
        }
        at = end;
    }
    if let Some(b'e' | b'E') = text.get(at) {
        at += 1;
        if let Some(b'+' | b'-') = text.get(at) {
            at += 1;
        }
        let end = digits_end(text, at);
        if end == at {
            return None;
        }
        at = end;
    }
    Some(at)
}

/// Past the ASCII digits from `at`, 8 bytes at a time.
#[inline(always)]
fn digits_end(text: &[u8], mut at: usize) -> usize {
    while let Some(word) = text.get(at..at + 8) {
        let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        let others = non_digits(word);
        if others != 0 {
            return at + others.trailing_zeros() as usize / 8;
        }
        at += 8;
    }
    at + text[at.min(text.len())..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count()
}

/// From just after an opening quote: past the closing one. Stops at quotes, backslashes and
/// control characters, 8 bytes at a time.
#[inline(always)]
fn string_end(text: &[u8], mut at: usize) -> Option<usize> {
    loop {
        if let Some(word) = text.get(at..at + 8) {
            let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            let stops =
                bytes_equal(word, b'"') | bytes_equal(word, b'\\') | bytes_below(word, 0x20);
            if stops == 0 {
                at += 8;
                continue;
            }
            at += stops.trailing_zeros() as usize / 8;
        } else {
            at += text
                .get(at..)?
                .iter()
                .take_while(|&&b| b != b'"' && b != b'\\' && b >= 0x20)
                .count();
        }
        match text.get(at)? {
            b'"' => return Some(at + 1),
            b'\\' => {
                at = match text.get(at + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at + 2,
                    b'u' if text.get(at + 2..at + 6)?.iter().all(u8::is_ascii_hexdigit) => at + 6,
                    _ => return None,
                }
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn serde_accepts(text: &[u8]) -> bool {
        serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok()
    }

    fn accepts(text: &[u8]) -> bool {
        is_json_value(text, &mut Scratch::default())
    }

    #[test]
    fn accepts_what_serde_json_accepts() {
        let cases: &[&str] = &[
            r#"{"id": 1, "vendor": "CMT", "fare": 12.5, "note": "a \"b\" \\ \/ \b\f\n\r\t \u00e9"}"#,
            r#"{}"#,
            r#"[]"#,
            r#" { "a" : [ 1 , -0 , 0.5e+3 , 1E-2 , true , false , null , { } , [ ] ] } "#,
            "\t\r\n\"only a string\"",
            "0",
            "-12.0e9",
            "\"\u{7f} and é, bytes 8 at a time past the stops\"",
            "{\"\\ud800\": \"lone surrogate escapes are skipped as they are\"}",
        ];
        // Deeper than serde_json's recursion limit for the values it keeps.
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        for case in cases.iter().copied().chain([deep.as_str()]) {
            assert!(serde_accepts(case.as_bytes()), "{case}");
            assert!(accepts(case.as_bytes()), "{case}");
        }
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        let cases: &[&[u8]] = &[
            b"",
            b" ",
            b"{",
            b"{\"a\"}",
            b"{\"a\":}",
            b"{\"a\":1,}",
            b"{\"a\":1 \"b\":2}",
            b"{a:1}",
            b"[1,]",
            b"[1 2]",
            b"[1}",
            b"{\"a\":1]",
            b"01",
            b"-",
            b"1.",
            b"1.e3",
            b"1e",
            b"1e+",
            b".5",
            b"+1",
            b"tru",
            b"nulll",
            b"\"unterminated",
            b"\"bad escape \\x\"",
            b"\"short unicode \\u12\"",
            b"\"not hex \\u12g4\"",
            b"\"tab\tinside\"",
            b"\"newline\ninside a string of more than eight bytes\"",
            b"1 2",
            b"{} x",
            b"\x0c{}",
        ];
        for case in cases {
            let shown = String::from_utf8_lossy(case);
            assert!(!serde_accepts(case), "{shown}");
            assert!(!accepts(case), "{shown}");
        }
    }

    /// The members `visit_json_value` reports for `text`, as text, and its verdict.
    fn members(text: &str) -> (bool, Vec<(String, String)>) {
        let mut members = Vec::new();
        let valid = visit_json_value(text.as_bytes(), &mut Scratch::default(), |key, value| {
            members.push((
                String::from_utf8(key.to_vec()).unwrap(),
                text[value].to_string(),
            ))
        });
        (valid, members)
    }

    #[test]
    fn reports_the_members_of_a_top_level_object_with_their_value_spans() {
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            members(r#" { "a" : [1, {"b": 2}] , "c\"d":"e" ,"f":{ }, "g": 1.5e3,"a":null } "#),
            (
                true,
                pairs(&[
                    ("a", r#"[1, {"b": 2}]"#),
                    (r#"c\"d"#, r#""e""#),
                    ("f", "{ }"),
                    ("g", "1.5e3"),
                    ("a", "null")
                ])
            )
        );
        assert_eq!(members(r#"[{"a": 1}]"#), (true, Vec::new()));
        assert_eq!(members(r#"{}"#), (true, Vec::new()));
        // Members checked before a refusal are reported; the one refused is not.
        assert_eq!(
            members(r#"{"a": 1, "b": [2}"#),
            (false, pairs(&[("a", "1")]))
        );
    }

    /// `null`, `true`, `false` and numbers of every shape, short and long.
    pub(in crate::scan) fn literals_and_numbers() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            "-?(0|[1-9][0-9]{0,19})(\\.[0-9]{1,18})?([eE][+-]?[0-9]{1,3})?",
        ]
    }

    /// Text near JSON: values built from the grammar, then bytes replaced, inserted or cut, or a
    /// bracket swapped for another.
    fn near_json() -> impl Strategy<Value = Vec<u8>> {
        let leaf = prop_oneof![
            literals_and_numbers(),
            "\"[a-z é\u{7f}]{0,70}\"",
            "\"([a-z é\u{1}\u{1f}\t\u{7f}]|\\\\[\"\\\\/bfnrtu]|\\\\u[0-9a-fA-F]{4}){0,20}\"",
        ];
        let value = leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec(("[a-z\"\\\\]{0,5}", inner), 0..6).prop_map(|members| {
                    let members: Vec<String> = members
                        .into_iter()
                        .map(|(key, value)| format!("\"{key}\" : {value}"))
                        .collect();
                    format!("{{ {} }}", members.join(", "))
                }),
            ]
        });
        let edit = (
            any::<prop::sample::Index>(),
            0u8..5,
            prop::sample::select(b" \t\r\n\"\\,:[]{}0-.eE+tfnu\x01\x7fa".to_vec()),
        );
        (value, prop::collection::vec(edit, 0..3)).prop_map(|(value, edits)| {
            let mut text = value.into_bytes();
            for (index, kind, byte) in edits {
                let at = index.index(text.len() + 1);
                let brackets: Vec<usize> = (0..text.len())
                    .filter(|&i| b"[]{}".contains(&text[i]))
                    .collect();
                match kind {
                    4 if !brackets.is_empty() => {
                        text[brackets[index.index(brackets.len())]] = b"[]{}"[usize::from(byte % 4)]
                    }
                    0 if at < text.len() => text[at] = byte,
                    1 => text.insert(at, byte),
                    2 => text.truncate(at),
                    _ if at < text.len() => {
                        text.remove(at);
                    }
                    _ => {}
                }
            }
            text
        })
    }

    /// Sequences of JSON tokens in any order: the structure right and wrong in every way.
    fn token_soup() -> impl Strategy<Value = Vec<u8>> {
        let token = prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\"k\"",
            "\"a \\\" long string\"",
            "\"a long string\"",
            "1",
            "-0.5e3",
            "null",
        ]);
        prop::collection::vec(token, 0..16).prop_map(|tokens| tokens.concat().into_bytes())
    }

    /// Lines of objects whose members come from a few keys, spacings and values, so that
    /// consecutive lines often repeat a member prefix at the same position, and often nearly do;
    /// a few bytes edited.
    fn object_lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
        let key = prop::sample::select(vec![
            "id",
            "a",
            "distance_km",
            "a_long_key_name",
            "k\\\"",
            "é",
        ]);
        let space = prop::sample::select(vec!["", " ", "  ", "\t"]);
        let value = prop::sample::select(vec![
            "1",
            "-2.5",
            "\"text\"",
            "\"\"",
            "null",
            "[1, {}]",
            "{\"a\": 1}",
        ]);
        let member = (space.clone(), key, space.clone(), space.clone(), value)
            .prop_map(|(s1, k, s2, s3, v)| format!("{s1}\"{k}\"{s2}:{s3}{v}"));
        let line = (prop::collection::vec(member, 0..6), space)
            .prop_map(|(members, end)| format!("{{{}{end}}}", members.join(",")).into_bytes());
        let edit = (
            any::<prop::sample::Index>(),
            prop::sample::select(b" \t\"\\,:{}[]1a\x01".to_vec()),
        );
        let edited = (line, prop::collection::vec(edit, 0..2)).prop_map(|(mut text, edits)| {
            for (at, byte) in edits {
                let at = at.index(text.len());
                text[at] = byte;
            }
            text
        });
        prop::collection::vec(edited, 1..8)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// Remembered prefixes change nothing: line after line, the verdict is serde_json's and
        /// the members are those reported with nothing remembered.
        #[test]
        fn remembered_prefixes_change_no_verdict_and_no_member(lines in object_lines()) {
            let mut scratch = Scratch::default();
            for line in lines {
                let mut remembered = Vec::new();
                let valid = visit_json_value(&line, &mut scratch, |key, value| {
                    remembered.push((key.to_vec(), value))
                });
                let mut fresh = Vec::new();
                let valid_fresh = visit_json_value(&line, &mut Scratch::default(), |key, value| {
                    fresh.push((key.to_vec(), value))
                });
                prop_assert_eq!(valid, serde_accepts(&line), "{}", String::from_utf8_lossy(&line));
                prop_assert_eq!(valid, valid_fresh);
                prop_assert_eq!(remembered, fresh);
            }
        }

        #[test]
        fn agrees_with_serde_json(text in near_json()) {
            prop_assert_eq!(accepts(&text), serde_accepts(&text));
        }

        #[test]
        fn agrees_with_serde_json_on_any_structure(text in token_soup()) {
            prop_assert_eq!(accepts(&text), serde_accepts(&text));
        }

        #[test]
        fn agrees_with_serde_json_on_any_bytes(text in prop::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(accepts(&text), serde_accepts(&text));
        }
    }
}
