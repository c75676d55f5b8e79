//! Glob patterns over keys: `*` (within one `/`-separated segment), `**` (any number of whole
//! segments), `?`, `[...]` and `{a,b}` (alternatives may hold `/`). A pattern matches the whole
//! key. Braces are expanded first, to at most [`MAX_PATTERNS`] patterns, and each pattern is
//! listed from its own literal prefix (the text before its first wildcard), so `{app,web}/*.jsonl`
//! lists `app/` and `web/`, never the whole bucket.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Most patterns a glob's braces may expand to: each is one listing.
pub const MAX_PATTERNS: usize = 64;

/// Longest glob taken.
pub const MAX_GLOB_LENGTH: usize = 1024;

/// Characters that make a key a glob.
const WILDCARDS: &[char] = &['*', '?', '[', '{'];

/// A compiled glob: what to list, and which listed keys match.
#[derive(Clone, Debug)]
pub struct Glob {
    text: String,
    prefixes: Vec<String>,
    matcher: GlobSet,
    folders: Option<HiveFolders>,
}

/// Most folder levels a glob descends through (as many as a key has partitions).
const MAX_FOLDER_LEVELS: usize = 32;

/// The hive folder levels of a glob (`events/year=*/month=*/*.csv`), listed folder by folder so
/// that a WHERE clause on the partitions skips whole folders unlisted: the folders before the
/// first wildcard (`events/`), one level per `name=<pattern>` segment after them, and the rest of
/// the pattern, whose objects are listed in each folder kept.
#[derive(Clone, Debug)]
pub struct HiveFolders {
    /// The folders before the first wildcard, each ending in `/` (`events/`).
    pub root: String,
    /// Each level's literal start (`year=`), listed by folder, and the pattern its folder's name
    /// must match.
    levels: Vec<(String, globset::GlobMatcher)>,
    /// The literal start of the rest of the pattern (`` for `*.csv`), listed in each folder kept.
    pub rest: String,
}

impl HiveFolders {
    /// Of a pattern, when a `name=<wildcard>` segment follows its literal folders (the segments
    /// before it hold no syntax, and it is not the pattern's last).
    fn of(pattern: &str) -> Option<HiveFolders> {
        let segments: Vec<&str> = pattern.split('/').collect();
        let plain = |segment: &str| !segment.contains(|c| WILDCARDS.contains(&c) || c == '\\');
        let first_wild = segments.iter().position(|segment| !plain(segment))?;
        let mut levels = Vec::new();
        for segment in &segments[first_wild..segments.len() - 1] {
            let Some((name, _)) = segment.split_once('=') else {
                break;
            };
            if name.is_empty() || !plain(name) || segment.contains("**") {
                break;
            }
            let matcher = GlobBuilder::new(segment)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .ok()?
                .compile_matcher();
            levels.push((literal_prefix(segment).to_string(), matcher));
            if levels.len() == MAX_FOLDER_LEVELS {
                break;
            }
        }
        if levels.is_empty() {
            return None;
        }
        let root: String = segments[..first_wild]
            .iter()
            .map(|s| format!("{s}/"))
            .collect();
        let rest = segments[first_wild + levels.len()..].join("/");
        Some(HiveFolders {
            root,
            rest: literal_prefix(&rest).to_string(),
            levels,
        })
    }

    /// How many folder levels are listed by folder.
    pub fn depth(&self) -> usize {
        self.levels.len()
    }

    /// The literal start of level `level`'s folder names (`year=`).
    pub fn level_start(&self, level: usize) -> &str {
        self.levels
            .get(level)
            .map_or("", |(start, _)| start.as_str())
    }

    /// Whether a folder named `name` (`year=2024`) is one level `level` of the glob takes.
    pub fn takes(&self, level: usize, name: &str) -> bool {
        self.levels
            .get(level)
            .is_some_and(|(_, matcher)| matcher.is_match(name))
    }
}

/// Why a glob is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("glob {glob:?}: {message}")]
pub struct GlobError {
    /// The glob as given.
    pub glob: String,
    /// What is wrong with it.
    pub message: String,
}

/// Whether `key` holds a wildcard, and so names objects by a glob rather than one object.
pub fn is_glob(key: &str) -> bool {
    key.contains(WILDCARDS)
}

impl Glob {
    /// Compiles `text`. A text without wildcards that ends in `/` is a folder: it means
    /// `<folder>**`, every object under it.
    pub fn new(text: &str) -> Result<Glob, GlobError> {
        let refuse = |message: String| GlobError {
            glob: text.to_string(),
            message,
        };
        if text.len() > MAX_GLOB_LENGTH {
            return Err(refuse(format!("longer than {MAX_GLOB_LENGTH} bytes")));
        }
        let folder;
        let whole = if !is_glob(text) && (text.is_empty() || text.ends_with('/')) {
            folder = format!("{}**", escape(text));
            folder.as_str()
        } else {
            text
        };
        let patterns = expand_braces(whole).map_err(refuse)?;
        let mut matcher = GlobSetBuilder::new();
        let mut prefixes = Vec::with_capacity(patterns.len());
        for pattern in &patterns {
            let glob = GlobBuilder::new(pattern)
                .literal_separator(true)
                .backslash_escape(true)
                .empty_alternates(true)
                .build()
                .map_err(|e| refuse(e.kind().to_string()))?;
            matcher.add(glob);
            prefixes.push(literal_prefix(pattern).to_string());
        }
        let matcher = matcher.build().map_err(|e| refuse(e.to_string()))?;
        // Folder by folder only with one pattern: the folders of several could overlap.
        let folders = match patterns.as_slice() {
            [pattern] => HiveFolders::of(pattern),
            _ => None,
        };
        Ok(Glob {
            text: text.to_string(),
            prefixes: covering_prefixes(prefixes),
            matcher,
            folders,
        })
    }

    /// The glob as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The prefixes to list, in key order, none inside another: their listings are disjoint and,
    /// one after the other, in key order.
    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// Its hive folder levels, when its one pattern has `name=<wildcard>` folders.
    pub fn hive_folders(&self) -> Option<&HiveFolders> {
        self.folders.as_ref()
    }

    /// Whether `key` is one of the glob's objects (a key ending in `/`, a folder marker, never is).
    pub fn matches(&self, key: &str) -> bool {
        !key.ends_with('/') && self.matcher.is_match(key)
    }
}

/// `text` matching itself only: every character glob syntax gives a meaning to, `\` escaped.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\' | ',') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The text before a pattern's first wildcard (or escape).
fn literal_prefix(pattern: &str) -> &str {
    let end = pattern
        .find(|c| WILDCARDS.contains(&c) || c == '\\')
        .unwrap_or(pattern.len());
    &pattern[..end]
}

/// The prefixes in key order without those another one covers (`a/b` is inside `a/`).
fn covering_prefixes(mut prefixes: Vec<String>) -> Vec<String> {
    prefixes.sort();
    prefixes.dedup();
    let mut covering: Vec<String> = Vec::with_capacity(prefixes.len());
    for prefix in prefixes {
        // Sorted: a prefix that covers this one is the last one kept, if any.
        if covering
            .last()
            .is_some_and(|kept| prefix.starts_with(kept.as_str()))
        {
            continue;
        }
        covering.push(prefix);
    }
    covering
}

/// The patterns `{a,b}` alternatives expand to (nested braces too), at most [`MAX_PATTERNS`].
/// A `[...]` class and a `\`-escaped character are kept as they are.
fn expand_braces(text: &str) -> Result<Vec<String>, String> {
    let Some((open, close)) = first_brace(text)? else {
        return Ok(vec![text.to_string()]);
    };
    let (before, inner, after) = (&text[..open], &text[open + 1..close], &text[close + 1..]);
    let mut patterns = Vec::new();
    for alternative in split_alternatives(inner) {
        for rest in expand_braces(&format!("{alternative}{after}"))? {
            if patterns.len() == MAX_PATTERNS {
                return Err(format!(
                    "its braces expand to more than {MAX_PATTERNS} patterns"
                ));
            }
            patterns.push(format!("{before}{rest}"));
        }
    }
    Ok(patterns)
}

/// The characters of `text` that are glob syntax, with their byte offsets: not `\`-escaped,
/// and outside `[...]` classes.
fn syntax(text: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let (mut in_class, mut escaped) = (false, false);
    text.char_indices().filter(move |&(_, c)| {
        let plain = !escaped && !in_class;
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            _ => {}
        }
        plain && !matches!(c, '\\' | '[')
    })
}

/// The byte offsets of the first top-level `{` and its matching `}`.
fn first_brace(text: &str) -> Result<Option<(usize, usize)>, String> {
    let (mut depth, mut open) = (0usize, None);
    for (at, c) in syntax(text) {
        match c {
            '{' => {
                depth += 1;
                open.get_or_insert(at);
            }
            '}' if depth == 0 => return Err("a `}` closes no `{`".into()),
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(open.map(|open| (open, at)));
                }
            }
            _ => {}
        }
    }
    match open {
        Some(_) => Err("a `{` is never closed".into()),
        None => Ok(None),
    }
}

/// The top-level `,`-separated alternatives inside one pair of braces.
fn split_alternatives(inner: &str) -> Vec<&str> {
    let (mut parts, mut start, mut depth) = (vec![], 0, 0usize);
    for (at, c) in syntax(inner) {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&inner[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn keys_match_as_the_syntax_says() {
        let table: &[(&str, &[&str], &[&str])] = &[
            (
                "logs/*.csv",
                &["logs/a.csv", "logs/.csv"],
                &["logs/x/a.csv", "logs/a.csvx", "alogs/a.csv"],
            ),
            (
                "a/**/b",
                &["a/b", "a/x/b", "a/x/y/b"],
                &["a/xb", "ab", "a/b/c"],
            ),
            ("a/**", &["a/x", "a/x/y"], &["b/x"]),
            (
                "**/*.parquet",
                &["x.parquet", "a/b/x.parquet"],
                &["x.parquetx"],
            ),
            (
                "day-0?.csv",
                &["day-01.csv"],
                &["day-1.csv", "day-011.csv", "day-0/.csv"],
            ),
            ("[a-c]/[!x]*", &["a/y", "c/yy"], &["d/y", "a/x", "a/"]),
            (
                "{app,web/eu}/*.jsonl",
                &["app/1.jsonl", "web/eu/2.jsonl"],
                &["web/1.jsonl", "db/1.jsonl"],
            ),
            (
                "y=2024/m={01,0{2,3}}/*",
                &["y=2024/m=01/f", "y=2024/m=03/f"],
                &["y=2024/m=04/f"],
            ),
            (
                "data/",
                &["data/a", "data/x/y.csv"],
                &["data", "datax/a", "data/x/"],
            ),
            ("exact.csv", &["exact.csv"], &["exact.csvx", "x/exact.csv"]),
            ("\\*literal", &["*literal"], &["xliteral"]),
            ("ü/ñ *.csv", &["ü/ñ 1.csv"], &["u/n 1.csv"]),
            ("a%2Fb/*", &["a%2Fb/x"], &["a/b/x"]),
            ("win\\dir}/", &["win\\dir}/x"], &["windir}/x"]),
        ];
        for (glob, matching, not_matching) in table {
            let compiled = Glob::new(glob).unwrap_or_else(|e| panic!("{e}"));
            for key in *matching {
                assert!(compiled.matches(key), "{glob} must match {key}");
            }
            for key in *not_matching {
                assert!(!compiled.matches(key), "{glob} must not match {key}");
            }
        }
    }

    #[test]
    fn each_pattern_lists_from_its_literal_prefix() {
        let table: &[(&str, &[&str])] = &[
            ("events/year=2024/m*", &["events/year=2024/m"]),
            ("logs/{app,web}/*.jsonl", &["logs/app/", "logs/web/"]),
            ("{a/b/*,a/*}", &["a/"]),
            ("**/x", &[""]),
            ("data/", &["data/"]),
            ("one.csv", &["one.csv"]),
            ("d/\\*x*", &["d/"]),
            ("{b,a}/?", &["a/", "b/"]),
        ];
        for (glob, prefixes) in table {
            let compiled = Glob::new(glob).unwrap();
            assert_eq!(compiled.prefixes(), *prefixes, "{glob}");
        }
    }

    #[test]
    fn hive_folder_levels_follow_the_literal_folders() {
        type Levels<'a> = Option<(
            &'a str,
            &'a [(&'a str, &'a [&'a str], &'a [&'a str])],
            &'a str,
        )>;
        let table: &[(&str, Levels)] = &[
            (
                "events/year=*/month=0[1-3]/*.csv",
                Some((
                    "events/",
                    &[
                        ("year=", &["year=2024"], &["yr=2024", "year"]),
                        ("month=0", &["month=01", "month=03"], &["month=04"]),
                    ],
                    "",
                )),
            ),
            (
                "t/y=2024/m=*/day-*.csv",
                Some(("t/y=2024/", &[("m=", &["m=1"], &["d=1"])], "day-")),
            ),
            ("y=*/x/*.csv", Some(("", &[("y=", &["y=a"], &[])], "x/"))),
            ("events/year=*.csv", None),
            ("events/*/year=*/f", None),
            ("events/**/year=*/f", None),
            ("events/ye*=1/f", None),
            ("{a,b}/year=*/f", None),
            ("events/year=2024/f.csv", None),
        ];
        for (glob, expected) in table {
            let compiled = Glob::new(glob).unwrap();
            let folders = compiled.hive_folders();
            let Some((root, levels, rest)) = expected else {
                assert!(folders.is_none(), "{glob}");
                continue;
            };
            let folders = folders.unwrap_or_else(|| panic!("{glob} has hive folders"));
            assert_eq!(
                (folders.root.as_str(), folders.rest.as_str()),
                (*root, *rest)
            );
            assert_eq!(folders.depth(), levels.len(), "{glob}");
            for (level, (start, taken, refused)) in levels.iter().enumerate() {
                assert_eq!(folders.level_start(level), *start, "{glob}");
                for name in *taken {
                    assert!(folders.takes(level, name), "{glob}: {name}");
                }
                for name in *refused {
                    assert!(!folders.takes(level, name), "{glob}: {name}");
                }
            }
        }
    }

    #[test]
    fn bad_globs_are_refused_with_the_reason() {
        for (glob, reason) in [
            ("a/{b,c", "never closed"),
            ("a/b}", "closes no"),
            ("a/[bc", "unclosed character class"),
            (&"{0,1}".repeat(7), "more than 64 patterns"),
            (&"x".repeat(1025), "longer than 1024"),
        ] {
            let error = Glob::new(glob).expect_err(glob);
            assert!(error.to_string().contains(reason), "{glob}: {error}");
        }
        assert_eq!(expand_braces(&"{0,1}".repeat(6)).unwrap().len(), 64);
    }

    proptest! {
        /// A key the glob matches starts with one of its prefixes: listing them misses nothing.
        #[test]
        fn every_matching_key_is_under_a_listed_prefix(
            parts in prop::collection::vec(
                prop::sample::select(vec!["a", "b", "/", "*", "**/", "?", "{a,b/}", "[ab]", "x="]),
                0..8,
            ),
            key in "[abx=/]{0,10}",
        ) {
            let glob = Glob::new(&parts.concat()).unwrap();
            if glob.matches(&key) {
                prop_assert!(glob.prefixes().iter().any(|p| key.starts_with(p.as_str())));
            }
            let prefixes = glob.prefixes();
            for pair in prefixes.windows(2) {
                prop_assert!(pair[0] < pair[1] && !pair[1].starts_with(pair[0].as_str()));
            }
        }
    }
}
