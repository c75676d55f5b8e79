//! Tests on the 8 bytes of a u64 at once (the first byte in the lowest one), for the parsers
//! that read text 8 bytes at a time.

/// 0x01 in every byte.
const ONES: u64 = u64::from_le_bytes([1; 8]);
const HIGH_BITS: u64 = u64::from_le_bytes([0x80; 8]);

/// The high bit of the first byte in `word` that is below `bound` (at most 0x80) is set; bits of
/// later bytes may be set too (borrows), never those of earlier ones. Zero exactly when no byte is
/// below `bound`.
#[inline(always)]
pub(crate) fn bytes_below(word: u64, bound: u8) -> u64 {
    word.wrapping_sub(ONES * u64::from(bound)) & !word & HIGH_BITS
}

/// The high bit of every byte in `word` above `bound` is set, and only those (no carries: a
/// byte's low 7 bits plus `0x7f - bound` stay below 0x100).
#[inline(always)]
pub(crate) fn bytes_above(word: u64, bound: u8) -> u64 {
    ((word & !HIGH_BITS).wrapping_add(ONES * u64::from(0x7f - bound)) | word) & HIGH_BITS
}

/// As [`bytes_below`], for the bytes equal to `byte`.
#[inline(always)]
pub(crate) fn bytes_equal(word: u64, byte: u8) -> u64 {
    bytes_below(word ^ (ONES * u64::from(byte)), 1)
}

/// As [`bytes_below`], for the bytes that are not ASCII digits.
#[inline(always)]
pub(crate) fn non_digits(word: u64) -> u64 {
    bytes_below(word, b'0') | bytes_above(word, b'9')
}
