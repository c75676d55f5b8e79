//! Part sizes of a multipart upload, as pure functions. S3's limits: parts of 5 MiB to 5 GiB (the
//! last one may be smaller), at most 10,000 parts, objects up to 5 TiB.

use thiserror::Error;

/// One mebibyte: part sizes are whole MiB.
pub const MIB: u64 = 1 << 20;
/// S3's smallest part (the last one may be smaller).
pub const MIN_PART: u64 = 5 * MIB;
/// S3's largest part: 5 GiB.
pub const MAX_PART: u64 = 5 << 30;
/// S3's most parts in one upload.
pub const MAX_PARTS: u32 = 10_000;
/// S3's largest object: 5 TiB.
pub const MAX_OBJECT: u64 = 5 << 40;
/// Smallest part `auto` picks: large enough to keep requests few, small enough to keep memory low.
pub const AUTO_MIN_PART: u64 = 8 * MIB;
/// With no length known, `auto` doubles the part size every this many parts, so that 10,000 parts
/// reach past 5 TiB while small streams keep small parts.
pub const GROWTH_EVERY: u32 = 1_000;

/// The part size a user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartSize {
    /// Parts that fit the source in 10,000 (at least [`AUTO_MIN_PART`]); they grow when the
    /// length is unknown.
    Auto,
    /// This many bytes per part, within S3's 5 MiB to 5 GiB.
    Fixed(u64),
}

/// Why no part schedule fits a request.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    /// A fixed part size outside 5 MiB to 5 GiB (the size asked for, in bytes).
    #[error("part size {0} bytes is outside S3's limits of 5 MiB to 5 GiB")]
    PartSizeOutOfRange(u64),
    /// The source is larger than S3's 5 TiB object limit.
    #[error("{length} bytes is larger than S3's 5 TiB object limit")]
    ObjectTooLarge {
        /// The source's length in bytes.
        length: u64,
    },
    /// A source without a known length outgrew 10,000 parts mid-transfer.
    #[error("the stream outgrew 10,000 parts of {part_size} bytes; use a larger part size or auto")]
    PartsExhausted {
        /// Size of the last part, in bytes.
        part_size: u64,
    },
    /// A known length needs more than 10,000 parts of the fixed part size.
    #[error(
        "{length} bytes need more than 10,000 parts of {part_size} bytes; use a part size of at least {needed} bytes or auto"
    )]
    TooManyParts {
        /// The source's length in bytes.
        length: u64,
        /// The fixed part size asked for, in bytes.
        part_size: u64,
        /// The smallest part size that fits the length (at least 5 MiB).
        needed: u64,
    },
}

/// Size of every part of one upload: part `i` (0-based) has `size(i)` bytes, except a shorter last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartSchedule {
    first: u64,
    grows: bool,
}

impl PartSchedule {
    /// The schedule for a source of `length` bytes (`None`: unknown until the stream ends).
    pub fn new(size: PartSize, length: Option<u64>) -> Result<Self, PlanError> {
        if let Some(length) = length.filter(|l| *l > MAX_OBJECT) {
            return Err(PlanError::ObjectTooLarge { length });
        }
        let needed = length.map(|l| l.div_ceil(MAX_PARTS as u64));
        match size {
            PartSize::Fixed(part) if !(MIN_PART..=MAX_PART).contains(&part) => {
                Err(PlanError::PartSizeOutOfRange(part))
            }
            PartSize::Fixed(part) => match (length, needed) {
                (Some(length), Some(needed)) if needed > part => Err(PlanError::TooManyParts {
                    length,
                    part_size: part,
                    needed: needed.max(MIN_PART),
                }),
                _ => Ok(Self {
                    first: part,
                    grows: false,
                }),
            },
            PartSize::Auto => Ok(match needed {
                Some(needed) => Self {
                    first: needed.div_ceil(MIB).saturating_mul(MIB).max(AUTO_MIN_PART),
                    grows: false,
                },
                None => Self {
                    first: AUTO_MIN_PART,
                    grows: true,
                },
            }),
        }
    }

    /// Size of part `index` (0-based) when the stream goes on past it.
    pub fn size(&self, index: u32) -> u64 {
        if !self.grows {
            return self.first;
        }
        let doublings = (index / GROWTH_EVERY).min(20);
        (self.first << doublings).min(MAX_PART)
    }

    /// Byte offset at which part `index` starts.
    pub fn offset(&self, index: u32) -> u64 {
        if !self.grows {
            return self.first * index as u64;
        }
        let mut offset = 0;
        let mut tier_start = 0;
        while tier_start < index {
            let in_tier = (index - tier_start).min(GROWTH_EVERY);
            offset += in_tier as u64 * self.size(tier_start);
            tier_start += in_tier;
        }
        offset
    }

    /// Number of parts for `length` bytes (at least one: an empty object is one empty part).
    pub fn parts_for(&self, length: u64) -> u32 {
        if !self.grows {
            return length.div_ceil(self.first).max(1) as u32;
        }
        let mut index = 0;
        while self.offset(index + 1) < length {
            index += 1;
        }
        index + 1
    }

    /// Whether the 10,000-part limit is reached at part `index`.
    pub fn exhausted(index: u32) -> bool {
        index >= MAX_PARTS
    }
}

/// The part to resume from, given the parts S3 holds (`listed`: part number to size) and the
/// length of the source already hashed: the earlier of the first missing part and the hashed end,
/// and never past the last part (which is re-read so the transfer always has bytes to finish on).
/// `None` when what S3 holds does not fit this schedule, or the hashed length is not a part boundary.
pub fn resume_index(
    schedule: &PartSchedule,
    length: u64,
    hashed: u64,
    listed: &std::collections::BTreeMap<i32, u64>,
) -> Option<u32> {
    let parts = schedule.parts_for(length);
    let expected = |index: u32| schedule.size(index).min(length - schedule.offset(index));
    for (&number, &size) in listed {
        let index = u32::try_from(number - 1).ok().filter(|i| *i < parts)?;
        if size != expected(index) {
            return None;
        }
    }
    let hashed_index = (0..=parts).find(|&i| schedule.offset(i).min(length) == hashed)?;
    let first_missing = (0..parts)
        .find(|i| !listed.contains_key(&(*i as i32 + 1)))
        .unwrap_or(parts);
    Some(hashed_index.min(first_missing).min(parts - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_for_known_lengths() {
        for (length, part) in [
            (0, AUTO_MIN_PART),
            (1, AUTO_MIN_PART),
            (100 * MIB, AUTO_MIN_PART),
            (80_000 * MIB, AUTO_MIN_PART),
            (80_000 * MIB + 1, 9 * MIB),
            (MAX_OBJECT, 525 * MIB),
        ] {
            let schedule = PartSchedule::new(PartSize::Auto, Some(length)).unwrap();
            assert_eq!(schedule.size(0), part, "length {length}");
            assert!(schedule.parts_for(length) <= MAX_PARTS, "length {length}");
        }
    }

    #[test]
    fn fixed_sizes_are_checked() {
        let fixed = |part, length| PartSchedule::new(PartSize::Fixed(part), length);
        assert_eq!(
            fixed(MIN_PART - 1, None),
            Err(PlanError::PartSizeOutOfRange(MIN_PART - 1))
        );
        assert_eq!(
            fixed(MAX_PART + 1, None),
            Err(PlanError::PartSizeOutOfRange(MAX_PART + 1))
        );
        assert!(fixed(MIN_PART, Some(MIN_PART * 10_000)).is_ok());
        assert_eq!(
            fixed(MIN_PART, Some(MIN_PART * 10_000 + 1)),
            Err(PlanError::TooManyParts {
                length: MIN_PART * 10_000 + 1,
                part_size: MIN_PART,
                needed: MIN_PART + 1
            })
        );
        assert_eq!(
            PartSchedule::new(PartSize::Auto, Some(MAX_OBJECT + 1)),
            Err(PlanError::ObjectTooLarge {
                length: MAX_OBJECT + 1
            })
        );
    }

    #[test]
    fn unknown_lengths_grow_to_cover_five_tebibytes() {
        let schedule = PartSchedule::new(PartSize::Auto, None).unwrap();
        assert_eq!(schedule.size(0), AUTO_MIN_PART);
        assert_eq!(schedule.size(GROWTH_EVERY - 1), AUTO_MIN_PART);
        assert_eq!(schedule.size(GROWTH_EVERY), 2 * AUTO_MIN_PART);
        assert!(
            schedule.offset(MAX_PARTS) >= MAX_OBJECT,
            "10,000 parts reach 5 TiB"
        );
        for index in 0..MAX_PARTS {
            let size = schedule.size(index);
            assert!(
                (MIN_PART..=MAX_PART).contains(&size),
                "part {index}: {size}"
            );
            assert_eq!(
                schedule.offset(index + 1),
                schedule.offset(index) + size,
                "part {index}"
            );
        }
    }

    #[test]
    fn resumes_from_the_earlier_of_hashed_end_and_first_missing_part() {
        use std::collections::BTreeMap;
        let schedule = PartSchedule::new(PartSize::Fixed(MIN_PART), None).unwrap();
        let length = 4 * MIN_PART + 10; // five parts, the last one 10 bytes
        let held = |numbers: &[i32]| -> BTreeMap<i32, u64> {
            numbers
                .iter()
                .map(|&n| (n, if n == 5 { 10 } else { MIN_PART }))
                .collect()
        };
        for (listed, hashed, want) in [
            (held(&[]), 0, Some(0)),
            (held(&[1, 2]), 2 * MIN_PART, Some(2)),
            (held(&[1, 2]), 3 * MIN_PART, Some(2)),
            (held(&[1, 3]), 3 * MIN_PART, Some(1)),
            (held(&[1, 2, 3]), MIN_PART, Some(1)),
            (held(&[1, 2, 3, 4, 5]), 4 * MIN_PART, Some(4)),
            (held(&[1, 2, 3, 4, 5]), length, Some(4)),
            (held(&[1, 2]), MIN_PART + 64, None),
            (BTreeMap::from([(1, MIN_PART - 1)]), 0, None),
            (BTreeMap::from([(6, 1)]), 0, None),
        ] {
            assert_eq!(
                resume_index(&schedule, length, hashed, &listed),
                want,
                "{listed:?} hashed {hashed}"
            );
        }
    }

    #[test]
    fn parts_cover_the_length_exactly() {
        for schedule in [
            PartSchedule::new(PartSize::Fixed(MIN_PART), None).unwrap(),
            PartSchedule::new(PartSize::Auto, None).unwrap(),
        ] {
            for length in [
                0,
                1,
                MIN_PART - 1,
                MIN_PART,
                MIN_PART + 1,
                3 * AUTO_MIN_PART,
                9_000 * AUTO_MIN_PART,
            ] {
                let parts = schedule.parts_for(length);
                assert!(schedule.offset(parts) >= length, "{schedule:?} {length}");
                assert!(
                    length == 0 || schedule.offset(parts - 1) < length,
                    "{schedule:?} {length}"
                );
            }
        }
    }
}
