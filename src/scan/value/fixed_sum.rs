//! The exact sum of many doubles at about one integer addition each: every finite double is an
//! integer (its mantissa) times a power of two given by its sign and exponent bits. Mantissas
//! are added into a bucket per sign and exponent, 2,048 values at a time (no bucket can
//! overflow in that many), then each bucket in use goes into 32-bit-aligned slots of a wide
//! fixed-point integer, and only the slots' totals go through the float partials of
//! [`super::ExactSum`] (Shewchuk's algorithm costs a pass over the partials per term). The sum
//! is the same exact number, so its rounding is the same to the bit.

/// Slots of 32 bits: finite doubles span bits 0 to 2,098 of the fixed-point integer (in units of
/// 2^-1074), and a term reaches two slots above its lowest.
const SLOTS: usize = 68;

/// Terms a sum takes before its slots are let out: a block of [`BLOCK`] terms adds less than 2^40
/// to a slot (192 buckets reach it, each less than 2^32), which holds 2^63.
pub(super) const MAX_TERMS: usize = 1 << 30;

/// Terms added into the buckets before they go into the slots: mantissas are below 2^53, so
/// 2,048 of them fit a bucket's 64 bits.
const BLOCK: usize = 2048;

/// A bucket for each sign and exponent: a double's top 12 bits.
const BUCKETS: usize = 4096;

/// Terms must stay below 2^(LIMIT - 1023) in magnitude, so that [`MAX_TERMS`] of them, and every
/// slot's part of their sum, stay finite doubles; a larger (or non-finite) one is left to the
/// partials.
const EXPONENT_LIMIT: u64 = 1977;

/// Whether `f` is a term a [`FixedSum`] takes.
pub(super) fn takes(f: f64) -> bool {
    (f.to_bits() >> 52) & 0x7ff < EXPONENT_LIMIT
}

/// A sum of at most [`MAX_TERMS`] doubles that [`takes`], exact.
pub(super) struct FixedSum {
    /// Slot `i` counts units of 2^(32 i - 1074).
    slots: [i64; SLOTS],
    /// The sum of the mantissas of a block's terms of each sign and exponent.
    buckets: Box<[u64; BUCKETS]>,
}

impl Default for FixedSum {
    fn default() -> FixedSum {
        FixedSum {
            slots: [0; SLOTS],
            buckets: Box::new([0; BUCKETS]),
        }
    }
}

impl FixedSum {
    /// Adds `values`, at most [`MAX_TERMS`] of them, each one the sum [`takes`]; says how many.
    pub(super) fn add_all(&mut self, mut values: impl Iterator<Item = f64>) -> usize {
        let mut added = 0;
        loop {
            let mut block = 0;
            for f in values.by_ref().take(BLOCK) {
                let bits = f.to_bits();
                // f = ±mantissa × 2^(max(exponent, 1) - 1075): the leading 1 is implicit
                // unless the exponent is 0 (zero and subnormals).
                let implicit = u64::from(bits & (0x7ff << 52) != 0) << 52;
                if let Some(bucket) = self.buckets.get_mut((bits >> 52) as usize) {
                    *bucket += (bits & ((1 << 52) - 1)) | implicit;
                }
                block += 1;
            }
            self.empty_buckets();
            added += block;
            if block < BLOCK {
                return added;
            }
        }
    }

    /// Moves each bucket's total into the slots (a bucket is checked 16 at a time: most are
    /// empty).
    fn empty_buckets(&mut self) {
        for (group, buckets) in self.buckets.chunks_exact_mut(16).enumerate() {
            if buckets.iter().fold(0, |any, &total| any | total) == 0 {
                continue;
            }
            for (index, bucket) in buckets.iter_mut().enumerate() {
                let total = std::mem::take(bucket);
                let top = (group * 16 + index) as u64;
                let position = (top & 0x7ff).max(1) - 1;
                let sign = 1 - 2 * (top >> 11) as i64;
                // At most 64 + 31 bits: three slots.
                let wide = u128::from(total) << (position % 32);
                let first = (position / 32) as usize;
                if let Some([low, middle, high]) = self.slots.get_mut(first..first + 3) {
                    *low += sign * (wide & 0xffff_ffff) as i64;
                    *middle += sign * ((wide >> 32) & 0xffff_ffff) as i64;
                    *high += sign * (wide >> 64) as i64;
                }
            }
        }
    }

    /// The sum as doubles whose exact total it is: each slot's total as two doubles of at most
    /// 32 bits each times a power of two, every one exact.
    pub(super) fn terms(&self) -> impl Iterator<Item = f64> + '_ {
        (0i32..).zip(&self.slots).flat_map(|(slot, &total)| {
            let (high, low) = (total >> 32, total & 0xffff_ffff);
            [(low, 32 * slot - 1074), (high, 32 * (slot + 1) - 1074)]
                .into_iter()
                .filter(|(part, _)| *part != 0)
                .map(|(part, exponent)| part as f64 * power_of_two(exponent))
        })
    }
}

/// 2^`exponent`, exactly, for -1074 <= exponent <= 1023 (infinity above).
fn power_of_two(exponent: i32) -> f64 {
    match exponent {
        ..-1074 => 0.0,
        -1074..-1022 => f64::from_bits(1 << (exponent + 1074)),
        -1022..1024 => f64::from_bits(((exponent + 1023) as u64) << 52),
        _ => f64::INFINITY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_of_two_are_exact_across_the_range() {
        assert_eq!(power_of_two(-1074), f64::from_bits(1));
        assert_eq!(power_of_two(-1022), f64::MIN_POSITIVE);
        assert_eq!(power_of_two(0), 1.0);
        assert_eq!(power_of_two(52), 4503599627370496.0);
        assert_eq!(power_of_two(1023), 2f64.powi(1023));
        assert_eq!(power_of_two(1024), f64::INFINITY);
        for exponent in -1074..1024 {
            assert_eq!(power_of_two(exponent) * 2.0, power_of_two(exponent + 1));
        }
    }

    #[test]
    fn which_terms_it_takes() {
        for f in [0.0, -0.0, 1.5, -2.5e-310, f64::MIN_POSITIVE, 1e280, -1e280] {
            assert!(takes(f), "{f}");
        }
        for f in [f64::MAX, -1e300, f64::INFINITY, f64::NEG_INFINITY, f64::NAN] {
            assert!(!takes(f), "{f}");
        }
    }
}
