//! Backoff between the attempts s3flow makes itself (ranged reads resumed after a dropped
//! connection, HTTP sources, status writes); the SDK retries single S3 requests on its own.

use std::time::Duration;

/// Exponential backoff with jitter for retry `attempt` (1-based): 200 ms doubling, at most 10 s,
/// each wait drawn from its upper half so that concurrent retries spread out.
pub fn backoff(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, RandomState};
    let ceiling = (200u64 << attempt.saturating_sub(1).min(10)).min(10_000);
    let jitter = RandomState::new().hash_one(std::time::SystemTime::now()) % (ceiling / 2 + 1);
    Duration::from_millis(ceiling / 2 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_within_their_upper_half_up_to_ten_seconds() {
        for (attempt, low, high) in [
            (1, 100, 200),
            (2, 200, 400),
            (3, 400, 800),
            (20, 5000, 10_000),
        ] {
            for _ in 0..20 {
                let wait = backoff(attempt).as_millis() as u64;
                assert!((low..=high).contains(&wait), "attempt {attempt}: {wait} ms");
            }
        }
    }
}
