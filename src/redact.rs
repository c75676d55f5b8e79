//! What may be shown of tenant input in status, Events and logs: URLs without their userinfo and
//! query string (presigned URLs carry signatures there), and long strings cut to a bound.

use std::borrow::Cow;
use std::fmt;

/// Longest string the operator copies into a status field or condition message, in bytes: a MIN
/// or MAX value, a header name, a message. Longer ones end in `…`; the manifest keeps them whole.
pub const STATUS_TEXT_LIMIT: usize = 1024;

/// `url` without userinfo, query or fragment.
pub fn url(url: &url::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    shown.to_string()
}

/// `text` with every http(s) URL in it shown as [`url`] shows it, whatever surrounds it (error
/// chains quote URLs in their own ways).
pub fn text(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = find_url_start(rest) {
        out.push_str(&rest[..start]);
        let token_end = rest[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .map_or(rest.len(), |at| start + at);
        out.push_str(&url_token(&rest[start..token_end]));
        rest = &rest[token_end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Where the next `http://` or `https://` (any case) starts.
fn find_url_start(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    [lower.find("http://"), lower.find("https://")]
        .into_iter()
        .flatten()
        .min()
}

/// One URL as it appeared in text, possibly followed by punctuation of the text around it.
fn url_token(token: &str) -> String {
    let (scheme, after) = token.split_once("://").unwrap_or((token, ""));
    let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, path) = after.split_at(authority_end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    // Closing punctuation at the very end belongs to the text, not to the query being dropped.
    let trailing = path.len()
        - path
            .trim_end_matches([')', ']', '}', ',', '.', ';', ':'])
            .len();
    let (path, tail) = path.split_at(path.len() - trailing);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    format!("{scheme}://{host}{path}{tail}")
}

/// `text` cut to at most `limit` bytes at a character boundary, ending in `…` when cut.
pub fn cut(text: &str, limit: usize) -> Cow<'_, str> {
    if text.len() <= limit {
        return Cow::Borrowed(text);
    }
    let mut end = limit.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &text[..end]))
}

/// A message for status, Events and logs: URLs redacted, cut to [`STATUS_TEXT_LIMIT`].
pub fn message(text: &str) -> String {
    cut(&self::text(text), STATUS_TEXT_LIMIT).into_owned()
}

/// Displays a value (an error, say) with its URLs redacted: for log lines.
pub struct Redacted<T>(pub T);

impl<T: fmt::Display> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&text(&self.0.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_userinfo_query_and_fragment() {
        for (input, want) in [
            ("no url here", "no url here"),
            (
                "error sending request for url (https://h.example/p/k?X-Amz-Signature=abc&X-Amz-Credential=AK): connection refused",
                "error sending request for url (https://h.example/p/k): connection refused",
            ),
            (
                "GET http://user:pw@h:8080/x?y=1#z failed",
                "GET http://h:8080/x failed",
            ),
            ("at \"https://h/a?s=1\", then", "at \"https://h/a\", then"),
            ("HTTPS://H/A?S=1.", "HTTPS://H/A."),
            (
                "two: http://a/?x=1 and http://b/p?y=2",
                "two: http://a/ and http://b/p",
            ),
            ("https://h?only=query", "https://h"),
            ("https://u@h", "https://h"),
            ("(http://h/p?q=a)b)", "(http://h/p)"),
        ] {
            assert_eq!(text(input), want, "{input}");
        }
    }

    #[test]
    fn nothing_after_a_question_mark_survives_in_any_token() {
        // Whatever follows the scheme, no byte of the query may remain.
        for secret_url in [
            "http://h/a)b?sig=SECRET",
            "http://h/a]?sig=SECRET",
            "http://[::1]:80/p?sig=SECRET",
            "https://h/p;x?sig=SECRET;",
        ] {
            let shown = text(secret_url);
            assert!(!shown.contains("SECRET"), "{secret_url} -> {shown}");
        }
    }

    #[test]
    fn cuts_at_character_boundaries() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("abcdefghij", 10), "abcdefghij");
        assert_eq!(cut("abcdefghijk", 10), "abcdefg…");
        let cut_text = cut("ééééééé", 8);
        assert!(cut_text.len() <= 8, "{cut_text}");
        assert!(cut_text.ends_with('…'));
        assert_eq!(message(&"x".repeat(5000)).len(), STATUS_TEXT_LIMIT);
    }
}
