//! The exact sum of many doubles at a few integer additions each: every finite double is an
//! integer times 2^-1074, so each one's bits are added into 32-bit-aligned slots of a wide
//! fixed-point integer, and only the slots' totals go through the float partials of
//! [`super::ExactSum`] (Shewchuk's algorithm costs a pass over the partials per term). The sum
//! is the same exact number, so its rounding is the same to the bit.

/// Slots of 32 bits: finite doubles span bits 0 to 2,098 of the fixed-point integer (in units of
/// 2^-1074), and a term reaches two slots above its lowest.
const SLOTS: usize = 68;

/// Terms a sum takes before its slots are let out: each adds less than 2^32 to a slot, which
/// holds 2^63.
pub(super) const MAX_TERMS: u64 = 1 << 30;

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
}

impl Default for FixedSum {
    fn default() -> FixedSum {
        FixedSum { slots: [0; SLOTS] }
    }
}

impl FixedSum {
    /// Adds `f`, which the sum [`takes`].
    pub(super) fn add(&mut self, f: f64) {
        let bits = f.to_bits();
        let exponent = (bits >> 52) & 0x7ff;
        let fraction = bits & ((1 << 52) - 1);
        // f = ±mantissa × 2^(position - 1074).
        let (mantissa, position) = match exponent {
            0 => (fraction, 0),
            _ => (fraction | 1 << 52, exponent - 1),
        };
        let wide = u128::from(mantissa) << (position % 32);
        let sign = 1 - 2 * (bits >> 63) as i64;
        let first = (position / 32) as usize;
        if let Some([low, middle, high]) = self.slots.get_mut(first..first + 3) {
            *low += sign * (wide & 0xffff_ffff) as i64;
            *middle += sign * ((wide >> 32) & 0xffff_ffff) as i64;
            *high += sign * (wide >> 64) as i64;
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
