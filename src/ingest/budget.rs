//! The memory every ingest's part buffers may take together: one budget per operator, so that no
//! spec (`partSize: 5Gi, concurrency: 64`) and no number of ingests can make it run out of memory.
//! An ingest reserves `part size x (concurrency + 2)` before it streams and holds it to the end.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budget units are KiB, so that a `u32` of permits covers 4 TiB.
const UNIT: u64 = 1 << 10;

/// How long an ingest whose parts grow (a source without a length) waits for the budget to hold
/// its larger buffers before it fails, rather than wait forever on ingests that wait on it.
const GROWTH_WAIT: Duration = Duration::from_secs(300);

/// Memory for part buffers, shared by every ingest of one process.
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    /// `None`: unlimited (the CLI, one ingest on the user's own machine).
    units: Option<Arc<Semaphore>>,
    total: u64,
    /// Most one ingest may hold: its share, so that one ingest never holds the whole budget.
    share: u64,
}

/// Why a reservation cannot be had.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "part buffers of {} need {need} bytes, more than one ingest's share of the operator's ingest memory budget, {total} bytes{}; use a smaller partSize or concurrency",
    "partSize x (concurrency + 2)",
    if *.growing { " within 5 minutes" } else { "" }
)]
pub struct InsufficientMemory {
    /// Bytes the part buffers need: part size x (concurrency + 2).
    pub need: u64,
    /// One ingest's share of the budget, in bytes.
    pub total: u64,
    /// The buffers grew mid-transfer and the budget stayed too busy to hold them.
    pub growing: bool,
}

impl MemoryBudget {
    /// A budget of `bytes` (whole KiB, at most 4 TiB), all of it one ingest's share.
    pub fn new(bytes: u64) -> MemoryBudget {
        let units = (bytes / UNIT).min(u64::from(u32::MAX)) as u32;
        let total = u64::from(units) * UNIT;
        MemoryBudget {
            units: Some(Arc::new(Semaphore::new(units as usize))),
            total,
            share: total,
        }
    }

    /// The budget with one ingest's share cut to a `1/holders` of it (the operator: its transfer
    /// slots), so that the ingests streaming at once always fit together.
    pub fn shared_by(mut self, holders: usize) -> MemoryBudget {
        self.share = self.total / holders.max(1) as u64;
        self
    }

    /// A budget that never makes an ingest wait or fail (the CLI).
    pub fn unlimited() -> MemoryBudget {
        MemoryBudget {
            units: None,
            total: u64::MAX,
            share: u64::MAX,
        }
    }

    /// Bytes one ingest may hold.
    pub fn share(&self) -> u64 {
        self.share
    }

    /// Bytes of the whole budget.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> u64 {
        self.units.as_ref().map_or(0, |units| {
            self.total - units.available_permits() as u64 * UNIT
        })
    }

    /// Whether `bytes` could ever be reserved by one ingest.
    pub fn fits(&self, bytes: u64) -> bool {
        units_of(bytes) <= self.share / UNIT
    }

    /// Waits until `bytes` are free and reserves them; fails at once when they never could be.
    pub async fn reserve(&self, bytes: u64) -> Result<Reservation, InsufficientMemory> {
        let mut reservation = Reservation {
            budget: self.clone(),
            held: None,
            bytes: 0,
        };
        reservation.grow_to(bytes, None).await?;
        Ok(reservation)
    }
}

fn units_of(bytes: u64) -> u64 {
    bytes.div_ceil(UNIT)
}

/// Memory held for one ingest until dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: MemoryBudget,
    held: Option<OwnedSemaphorePermit>,
    bytes: u64,
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Holds at least `bytes`, waiting (at most [`GROWTH_WAIT`]) for what is missing: for parts
    /// that grow mid-transfer.
    pub async fn ensure(&mut self, bytes: u64) -> Result<(), InsufficientMemory> {
        self.grow_to(bytes, Some(GROWTH_WAIT)).await
    }

    async fn grow_to(
        &mut self,
        bytes: u64,
        wait: Option<Duration>,
    ) -> Result<(), InsufficientMemory> {
        if bytes <= self.bytes {
            return Ok(());
        }
        let refused = InsufficientMemory {
            need: bytes,
            total: self.budget.share,
            growing: wait.is_some(),
        };
        let Some(units) = &self.budget.units else {
            self.bytes = bytes;
            return Ok(());
        };
        if !self.budget.fits(bytes) {
            return Err(refused);
        }
        let more = (units_of(bytes) - units_of(self.bytes)) as u32;
        let acquire = units.clone().acquire_many_owned(more);
        let permit = match wait {
            None => acquire.await,
            Some(limit) => tokio::time::timeout(limit, acquire)
                .await
                .map_err(|_| refused.clone())?,
        }
        // The semaphore is never closed.
        .map_err(|_| refused)?;
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        self.bytes = units_of(bytes) * UNIT;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[tokio::test]
    async fn reservations_wait_for_each_other_and_never_exceed_the_budget() {
        let budget = MemoryBudget::new(50 * MIB);
        let first = budget.reserve(30 * MIB).await.unwrap();
        assert_eq!(budget.in_use(), 30 * MIB);
        // A second one does not fit next to the first: it waits until the first is dropped.
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reserve(30 * MIB).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        // The waiter may already hold what is free, never more than the budget.
        assert!(budget.in_use() <= budget.total());
        drop(first);
        let second = waiting.await.unwrap().unwrap();
        assert_eq!(second.bytes(), 30 * MIB);
        assert_eq!(budget.in_use(), 30 * MIB);
        drop(second);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn what_never_fits_fails_at_once() {
        let budget = MemoryBudget::new(50 * MIB);
        let _held = budget.reserve(40 * MIB).await.unwrap();
        let refused = budget.reserve(51 * MIB).await.unwrap_err();
        assert_eq!(
            refused,
            InsufficientMemory {
                need: 51 * MIB,
                total: 50 * MIB,
                growing: false
            }
        );
        assert!(
            refused
                .to_string()
                .contains("more than one ingest's share of the operator's ingest memory budget")
        );
    }

    #[tokio::test]
    async fn one_ingest_takes_at_most_its_share() {
        let budget = MemoryBudget::new(40 * MIB).shared_by(4);
        assert_eq!(budget.share(), 10 * MIB);
        let refused = budget.reserve(11 * MIB).await.unwrap_err();
        assert_eq!(refused.total, 10 * MIB);
        // Four shares fit together, whatever each one is.
        let held: Vec<Reservation> =
            futures::future::join_all((0..4).map(|_| budget.reserve(10 * MIB)))
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
        assert_eq!(budget.in_use(), 40 * MIB);
        drop(held);
    }

    #[tokio::test]
    async fn growth_waits_for_the_budget_then_gives_up() {
        let budget = MemoryBudget::new(50 * MIB);
        let mut growing = budget.reserve(10 * MIB).await.unwrap();
        growing.ensure(20 * MIB).await.unwrap();
        assert_eq!(budget.in_use(), 20 * MIB);
        growing.ensure(15 * MIB).await.unwrap();
        assert_eq!(budget.in_use(), 20 * MIB, "never shrinks");
        let _other = budget.reserve(30 * MIB).await.unwrap();
        let wait = Some(Duration::from_millis(50));
        let refused = growing.grow_to(40 * MIB, wait).await.unwrap_err();
        assert!(refused.growing);
        assert_eq!(budget.in_use(), 50 * MIB);
        drop(growing);
        assert_eq!(budget.in_use(), 30 * MIB);
    }

    #[tokio::test]
    async fn unlimited_budgets_hold_anything() {
        let budget = MemoryBudget::unlimited();
        let mut reservation = budget.reserve(5 << 40).await.unwrap();
        reservation.ensure(6 << 40).await.unwrap();
        assert_eq!(budget.in_use(), 0);
    }
}
