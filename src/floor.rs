//! A floor under a peer's throughput: an ingest's source, an S3 endpoint's bodies. A read
//! timeout catches a peer that stops; it does not catch one that sends a byte every 50 seconds
//! and holds a transfer slot (or a reconcile) forever. Only the time spent waiting for the peer
//! counts: a transfer paused because the other side is slower is not the peer's fault.

use std::time::Duration;

/// Bytes a source must deliver per second of waiting, judged over each `window` of waiting.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThroughputFloor {
    /// Least bytes per second of waiting; 0 turns the floor off.
    pub min_bytes_per_second: u64,
    /// Waiting time judged at once: also the longest one wait may bring nothing.
    pub window: Duration,
}

/// The source sent too little over a window.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error(
    "the source sent {bytes} bytes in {:.0} s of waiting, below the floor of {floor} bytes per second",
    waited.as_secs_f64()
)]
pub struct Stalled {
    /// Bytes the source sent over the window.
    pub bytes: u64,
    /// Time spent waiting for them.
    pub waited: Duration,
    /// The floor they fell below, in bytes per second.
    pub floor: u64,
}

/// One connection's waits and what they brought, since the last window closed.
#[derive(Clone, Debug)]
pub struct FloorMeter {
    floor: ThroughputFloor,
    waited: Duration,
    bytes: u64,
}

impl FloorMeter {
    /// A meter with nothing counted yet.
    pub fn new(floor: ThroughputFloor) -> FloorMeter {
        FloorMeter {
            floor,
            waited: Duration::ZERO,
            bytes: 0,
        }
    }

    /// The window the floor is judged over: also how long a wait may bring nothing at all.
    pub fn window(&self) -> Duration {
        self.floor.window
    }

    /// Counts one wait for the source that brought `bytes`; fails once a window of waiting
    /// brought less than the floor asks for.
    pub fn record(&mut self, waited: Duration, bytes: u64) -> Result<(), Stalled> {
        if self.floor.min_bytes_per_second == 0 {
            return Ok(());
        }
        self.waited += waited;
        self.bytes = self.bytes.saturating_add(bytes);
        if self.waited < self.floor.window {
            return Ok(());
        }
        let wanted = self.floor.min_bytes_per_second as f64 * self.waited.as_secs_f64();
        if (self.bytes as f64) < wanted {
            return Err(Stalled {
                bytes: self.bytes,
                waited: self.waited,
                floor: self.floor.min_bytes_per_second,
            });
        }
        self.waited = Duration::ZERO;
        self.bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(floor: u64) -> FloorMeter {
        FloorMeter::new(ThroughputFloor {
            min_bytes_per_second: floor,
            window: Duration::from_secs(60),
        })
    }

    #[test]
    fn a_trickle_fails_once_a_window_of_waiting_has_passed() {
        let mut meter = meter(1024);
        // A byte every 50 s: the first wait is within the window, the second closes it.
        assert_eq!(meter.record(Duration::from_secs(50), 1), Ok(()));
        let stalled = meter.record(Duration::from_secs(50), 1).unwrap_err();
        assert_eq!(stalled.bytes, 2);
        assert_eq!(stalled.waited, Duration::from_secs(100));
        assert!(
            stalled.to_string().contains("2 bytes in 100 s"),
            "{stalled}"
        );
    }

    #[test]
    fn a_source_at_the_floor_passes_window_after_window() {
        let mut meter = meter(1024);
        for _ in 0..10 {
            for _ in 0..60 {
                assert_eq!(meter.record(Duration::from_secs(1), 1024), Ok(()));
            }
        }
    }

    #[test]
    fn time_not_spent_waiting_does_not_count() {
        // Fast reads with long pauses between them (S3 slower than the source): tiny waits only.
        let mut meter = meter(1024);
        for _ in 0..100_000 {
            assert_eq!(meter.record(Duration::from_micros(100), 64 << 10), Ok(()));
        }
    }

    #[test]
    fn a_burst_then_silence_is_judged_by_the_window_it_falls_in() {
        let mut meter = meter(1024);
        assert_eq!(meter.record(Duration::from_secs(1), 10 << 20), Ok(()));
        // 10 MiB in the first window carries it; the next window starts empty.
        assert_eq!(meter.record(Duration::from_secs(59), 0), Ok(()));
        assert_eq!(meter.record(Duration::from_secs(30), 0), Ok(()));
        assert!(meter.record(Duration::from_secs(30), 100).is_err());
    }

    #[test]
    fn a_zero_floor_never_fails() {
        let mut meter = meter(0);
        assert_eq!(meter.record(Duration::from_secs(3600), 0), Ok(()));
    }
}
