//! The operator's transfer slots, shared fairly between namespaces: while another namespace
//! waits, a namespace holds at most its fair share (the slots divided among the namespaces that
//! hold or wait for one), so that no tenant's ingests can hold every slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Slots by namespace.
pub(super) struct FairSlots {
    total: usize,
    state: Mutex<Shares>,
    freed: Notify,
}

/// Slots held and waited for, by namespace.
#[derive(Default)]
struct Shares {
    held: HashMap<String, usize>,
    waiting: HashMap<String, usize>,
}

impl Shares {
    /// Whether `namespace` may take a slot now, of `total`.
    fn may_take(&self, namespace: &str, total: usize) -> bool {
        let in_use: usize = self.held.values().sum();
        if in_use >= total {
            return false;
        }
        let mut contenders: Vec<&String> = self.held.keys().chain(self.waiting.keys()).collect();
        contenders.sort();
        contenders.dedup();
        let fair = total.div_ceil(contenders.len().max(1));
        self.held.get(namespace).copied().unwrap_or(0) < fair
    }

    fn count(map: &mut HashMap<String, usize>, namespace: &str, up: bool) {
        let count = map.entry(namespace.to_string()).or_default();
        match up {
            true => *count += 1,
            false => *count = count.saturating_sub(1),
        }
        if *count == 0 {
            map.remove(namespace);
        }
    }
}

/// A slot, given back when dropped.
#[derive(Debug)]
pub(super) struct Slot {
    slots: Arc<FairSlots>,
    namespace: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots
            .change(|shares| Shares::count(&mut shares.held, &self.namespace, false));
        self.slots.freed.notify_waiters();
    }
}

/// A namespace's wait for a slot, counted until it ends (taken or given up).
struct Waiting<'a> {
    slots: &'a FairSlots,
    namespace: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.slots
            .change(|shares| Shares::count(&mut shares.waiting, self.namespace, false));
        self.slots.freed.notify_waiters();
    }
}

impl std::fmt::Debug for FairSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FairSlots")
            .field("total", &self.total)
            .finish()
    }
}

impl FairSlots {
    pub(super) fn new(total: usize) -> FairSlots {
        FairSlots {
            total: total.max(1),
            state: Mutex::default(),
            freed: Notify::new(),
        }
    }

    fn change<T>(&self, change: impl FnOnce(&mut Shares) -> T) -> T {
        change(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether `namespace` would wait for a slot now.
    pub(super) fn would_wait(&self, namespace: &str) -> bool {
        !self.change(|shares| shares.may_take(namespace, self.total))
    }

    /// A slot for `namespace`, once it may take one.
    pub(super) async fn acquire(self: &Arc<Self>, namespace: &str) -> Slot {
        self.change(|shares| Shares::count(&mut shares.waiting, namespace, true));
        let waiting = Waiting {
            slots: self,
            namespace,
        };
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let taken = self.change(|shares| {
                let may = shares.may_take(namespace, self.total);
                if may {
                    Shares::count(&mut shares.held, namespace, true);
                }
                may
            });
            if taken {
                drop(waiting);
                return Slot {
                    slots: self.clone(),
                    namespace: namespace.to_string(),
                };
            }
            freed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Whether `future` is still waiting after a moment.
    async fn pending<T>(future: impl Future<Output = T>) -> bool {
        tokio::time::timeout(Duration::from_millis(50), future)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn one_namespace_takes_every_slot_alone_and_its_share_when_others_wait() {
        let slots = Arc::new(FairSlots::new(4));
        let mut a: Vec<Slot> = Vec::new();
        for _ in 0..4 {
            a.push(slots.acquire("a").await);
        }
        // Alone, "a" holds all four; "b" waits, and from then on "a" may hold two.
        let b = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire("b").await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(slots.would_wait("a"));
        // One of "a"'s ends: the slot goes to "b", not back to "a".
        a.pop();
        let b = b.await.unwrap();
        a.pop();
        // "a" holds two, "b" one: "a" is at its share while "b" contends.
        assert!(pending(slots.acquire("a")).await);
        assert!(!slots.would_wait("b"));
        drop(b);
        // "b" gone: "a" may take every slot again.
        assert!(!slots.would_wait("a"));
        drop(a);
        let c: Vec<Slot> = futures::future::join_all((0..4).map(|_| slots.acquire("c"))).await;
        assert_eq!(c.len(), 4);
    }

    #[tokio::test]
    async fn a_wait_given_up_is_not_counted() {
        let slots = Arc::new(FairSlots::new(1));
        let held = slots.acquire("a").await;
        assert!(pending(slots.acquire("b")).await);
        drop(held);
        // "b" gave up waiting: "a" is alone again.
        assert!(!slots.would_wait("a"));
    }
}
