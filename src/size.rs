//! Byte sizes as users write them: plain bytes, binary suffixes (Ki, Mi, Gi, Ti) or decimal ones
//! (k, M, G, T). Exactly the quantities the CRDs admit ([`SIZE_PATTERN`]): the API server and the
//! engine accept the same set, so nothing admitted fails later.

use thiserror::Error;

/// The sizes [`parse_size`] reads, as the CRDs' CEL rules match them.
pub const SIZE_PATTERN: &str = "^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$";

/// A text [`parse_size`] does not read as a size.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "{input:?} is not a size: use bytes or a whole number with Ki, Mi, Gi, Ti (or k, M, G, T), such as 64Mi"
)]
pub struct SizeError {
    input: String,
}

/// Parses `64Mi`, `5G`, `1048576` and the like into bytes.
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let error = || SizeError {
        input: input.to_string(),
    };
    let split = input
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(input.len());
    let (digits, suffix) = input.split_at(split);
    if digits.is_empty() {
        return Err(error());
    }
    let number: u64 = digits.parse().map_err(|_| error())?;
    let multiplier: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return Err(error()),
    };
    number.checked_mul(multiplier).ok_or_else(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes_like_quantities() {
        for (input, want) in [
            ("0", Some(0)),
            ("1", Some(1)),
            ("1048576", Some(1 << 20)),
            ("64Mi", Some(64 << 20)),
            ("64MiB", None),
            ("5Gi", Some(5 << 30)),
            ("1Ti", Some(1 << 40)),
            ("8Ki", Some(8192)),
            ("5M", Some(5_000_000)),
            ("2k", Some(2000)),
            (" 7 ", None),
            ("+64Mi", None),
            ("6e6", None),
            ("1.5Ki", None),
            ("5K", None),
            ("0x10", None),
            ("", None),
            ("Mi", None),
            ("-1", None),
            ("1.5Gi", None),
            ("64mi", None),
            ("99999999999Ti", None),
        ] {
            assert_eq!(parse_size(input).ok(), want, "{input:?}");
        }
    }
}
