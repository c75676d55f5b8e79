//! `s3://bucket/key` locations: objects (a key is required) and prefixes (a folder of keys).

use std::fmt;
use std::str::FromStr;

/// An object or a prefix in a bucket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct S3Url {
    /// The bucket's name.
    pub bucket: String,
    /// The object's key, or a prefix that is empty or ends in `/`.
    pub key: String,
}

/// A text that is not an `s3://` location of the kind asked for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not {wanted}")]
pub struct S3UrlError {
    text: String,
    wanted: &'static str,
}

impl S3Url {
    /// `s3://bucket/key`, from its parts as they are.
    pub fn new(bucket: impl Into<String>, key: impl Into<String>) -> S3Url {
        S3Url {
            bucket: bucket.into(),
            key: key.into(),
        }
    }

    /// `s3://bucket/key` with a key.
    pub fn object(text: &str) -> Result<S3Url, S3UrlError> {
        let error = || S3UrlError {
            text: text.into(),
            wanted: "an s3://bucket/key URL",
        };
        let (bucket, key) = split(text).ok_or_else(error)?;
        match key {
            Some(key) if !key.is_empty() => Ok(S3Url::new(bucket, key)),
            _ => Err(error()),
        }
    }

    /// `s3://bucket[/key]`: an object, a glob or a folder of it, or (with no key) the bucket.
    pub fn location(text: &str) -> Result<S3Url, S3UrlError> {
        let (bucket, key) = split(text).ok_or_else(|| S3UrlError {
            text: text.into(),
            wanted: "an s3://bucket/key URL",
        })?;
        Ok(S3Url::new(bucket, key.unwrap_or_default()))
    }

    /// `s3://bucket` or `s3://bucket/prefix`: the prefix ends in `/` (one is added) or is empty.
    pub fn prefix(text: &str) -> Result<S3Url, S3UrlError> {
        let (bucket, key) = split(text).ok_or_else(|| S3UrlError {
            text: text.into(),
            wanted: "an s3://bucket/prefix URL",
        })?;
        let key = key.unwrap_or_default();
        let key = match key.is_empty() || key.ends_with('/') {
            true => key.to_string(),
            false => format!("{key}/"),
        };
        Ok(S3Url::new(bucket, key))
    }

    /// The object `name` under this prefix.
    pub fn join(&self, name: &str) -> S3Url {
        S3Url::new(self.bucket.clone(), format!("{}{name}", self.key))
    }
}

/// The bucket (not empty) and what follows its `/`, if anything.
fn split(text: &str) -> Option<(&str, Option<&str>)> {
    let rest = text.strip_prefix("s3://")?;
    let (bucket, key) = match rest.split_once('/') {
        Some((bucket, key)) => (bucket, Some(key)),
        None => (rest, None),
    };
    (!bucket.is_empty()).then_some((bucket, key))
}

impl FromStr for S3Url {
    type Err = S3UrlError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        S3Url::object(text)
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_need_a_bucket_and_a_key() {
        assert_eq!(
            S3Url::object("s3://b/k/x.csv"),
            Ok(S3Url::new("b", "k/x.csv"))
        );
        assert_eq!("s3://b/k".parse(), Ok(S3Url::new("b", "k")));
        for bad in ["b/k", "s3://b", "s3://b/", "s3:///k", "https://b/k", ""] {
            assert!(S3Url::object(bad).is_err(), "{bad}");
        }
        assert_eq!(S3Url::new("b", "k/x").to_string(), "s3://b/k/x");
    }

    #[test]
    fn prefixes_end_in_a_slash_or_are_empty() {
        for (text, key) in [
            ("s3://b", ""),
            ("s3://b/", ""),
            ("s3://b/out", "out/"),
            ("s3://b/out/run/", "out/run/"),
        ] {
            assert_eq!(S3Url::prefix(text), Ok(S3Url::new("b", key)), "{text}");
        }
        assert!(S3Url::prefix("s3:///out").is_err());
        assert!(S3Url::prefix("out/").is_err());
        assert_eq!(
            S3Url::prefix("s3://b/out").unwrap().join("manifest.json"),
            S3Url::new("b", "out/manifest.json")
        );
    }
}
