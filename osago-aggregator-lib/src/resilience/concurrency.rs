//! A per-insurer concurrency limit that serves waiters by deadline.
//!
//! At most `max_in_flight` [`Slot`]s exist at once. When all are taken,
//! waiters queue in a heap ordered by rank (then by arrival): by deadline
//! for [`ConcurrencyLimit::acquire`], so the application nearest its
//! deadline gets the next free slot, or by a rank of the caller's for
//! [`ConcurrencyLimit::acquire_ranked`]; a waiter gives up at its deadline. A freed slot is handed straight to the next live
//! waiter (through a oneshot channel carrying the [`Slot`] itself), so a
//! waiter cancelled between being served and waking up drops the slot, and
//! dropping it frees it again: no slot ever leaks.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// Concurrency settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConcurrencyConfig {
    /// The most calls in flight to one insurer (0 reads as 1). Default 20.
    pub max_in_flight: usize,
    /// How far applications are shuffled when their calls queue for
    /// slots: an application's place is its deadline plus a stagger drawn
    /// from its (request, insurer) in `0..stagger`, different at every
    /// insurer, so in a burst each insurer serves the requests in its own
    /// order and every user gets a first price early. (The engine queues
    /// in two classes: new applications and polls for buyers with no
    /// price yet, then polls for buyers who have one.) Zero: deadline
    /// order. Default 30 s.
    pub stagger: std::time::Duration,
}

impl Default for ConcurrencyConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 20,
            stagger: std::time::Duration::from_secs(30),
        }
    }
}

/// No slot came free before the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no concurrency slot before the deadline")]
pub struct Elapsed;

struct Waiter {
    rank: Instant,
    seq: u64,
    tx: oneshot::Sender<Slot>,
}

impl Ord for Waiter {
    /// The greatest waiter (served first by the max-heap) has the earliest
    /// rank, then the earliest arrival.
    fn cmp(&self, other: &Self) -> Ordering {
        other.rank.cmp(&self.rank).then(other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Waiter {}

struct State {
    /// Slots at most (changes when the cap is shared between pods).
    max: usize,
    in_use: usize,
    waiters: BinaryHeap<Waiter>,
    seq: u64,
    /// The heap length at which waiters that gave up are swept out.
    prune_at: usize,
}

const MIN_PRUNE: usize = 64;

struct Shared {
    state: Mutex<State>,
    /// Woken when a waiter queues (the shared cap's keeper claims more).
    demand: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands a freed slot to the next live waiter, or returns it (also when
    /// the capacity shrank below the slots in use).
    fn release(self: &Arc<Self>) {
        let mut state = self.lock();
        if state.in_use > state.max {
            state.in_use -= 1;
            return;
        }
        while let Some(waiter) = state.waiters.pop() {
            if waiter.tx.is_closed() {
                continue;
            }
            match waiter.tx.send(Slot {
                shared: Some(self.clone()),
            }) {
                Ok(()) => return,
                // The waiter went away meanwhile: this slot was never given.
                Err(mut slot) => slot.shared = None,
            }
        }
        state.in_use -= 1;
    }
}

/// A concurrency limit. Cheap to clone; clones share the slots.
#[derive(Clone)]
pub struct ConcurrencyLimit {
    shared: Arc<Shared>,
}

impl fmt::Debug for ConcurrencyLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("max_in_flight", &self.max_in_flight())
            .field("in_use", &self.in_use())
            .finish_non_exhaustive()
    }
}

/// Leave for one call in flight; the slot frees when dropped.
#[must_use = "the slot frees as soon as it is dropped"]
pub struct Slot {
    shared: Option<Arc<Shared>>,
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot").finish_non_exhaustive()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.release();
        }
    }
}

impl ConcurrencyLimit {
    /// A limit of `max_in_flight` slots (0 reads as 1).
    pub fn new(max_in_flight: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                demand: Notify::new(),
                state: Mutex::new(State {
                    max: max_in_flight.max(1),
                    in_use: 0,
                    waiters: BinaryHeap::new(),
                    seq: 0,
                    prune_at: MIN_PRUNE,
                }),
            }),
        }
    }

    /// A limit from its settings.
    pub fn from_config(config: &ConcurrencyConfig) -> Self {
        Self::new(config.max_in_flight)
    }

    /// The most slots at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.lock().max
    }

    /// Changes the most slots at once (0 allowed: every call waits). Growing
    /// hands the new slots to waiters at once, earliest deadline first;
    /// shrinking takes effect as calls in flight finish.
    pub fn set_max_in_flight(&self, max: usize) {
        let mut state = self.shared.lock();
        state.max = max;
        while state.in_use < state.max {
            let Some(waiter) = state.waiters.pop() else {
                break;
            };
            if waiter.tx.is_closed() {
                continue;
            }
            state.in_use += 1;
            let slot = Slot {
                shared: Some(self.shared.clone()),
            };
            if let Err(mut slot) = waiter.tx.send(slot) {
                // Gone meanwhile: take the slot back without releasing.
                slot.shared = None;
                state.in_use -= 1;
            }
        }
    }

    /// Resolves when a call starts waiting for a slot (all are taken).
    pub async fn demand(&self) {
        self.shared.demand.notified().await;
    }

    /// Slots taken now.
    pub fn in_use(&self) -> usize {
        self.shared.lock().in_use
    }

    /// Waiters still waiting for a slot.
    pub fn waiting(&self) -> usize {
        let state = self.shared.lock();
        state
            .waiters
            .iter()
            .filter(|waiter| !waiter.tx.is_closed())
            .count()
    }

    /// A slot if one is free now (waiters have none by definition: a free
    /// slot goes to them first).
    pub fn try_acquire(&self) -> Option<Slot> {
        let mut state = self.shared.lock();
        (state.in_use < state.max).then(|| {
            state.in_use += 1;
            Slot {
                shared: Some(self.shared.clone()),
            }
        })
    }

    /// A slot, waiting for one until `deadline` if all are taken; waiters
    /// are served earliest deadline first. A deadline already passed gets
    /// [`Elapsed`] at once. Cancel-safe.
    pub async fn acquire(&self, deadline: Instant) -> Result<Slot, Elapsed> {
        self.acquire_ranked(deadline, deadline).await
    }

    /// Like [`ConcurrencyLimit::acquire`], but waiters are served lowest
    /// `rank` first (ties by arrival); the wait still ends at `deadline`.
    pub async fn acquire_ranked(&self, rank: Instant, deadline: Instant) -> Result<Slot, Elapsed> {
        let rx = {
            let mut state = self.shared.lock();
            if deadline <= Instant::now() {
                return Err(Elapsed);
            }
            if state.in_use < state.max {
                state.in_use += 1;
                return Ok(Slot {
                    shared: Some(self.shared.clone()),
                });
            }
            if state.waiters.len() >= state.prune_at {
                state.waiters.retain(|waiter| !waiter.tx.is_closed());
                state.prune_at = (state.waiters.len() * 2).max(MIN_PRUNE);
            }
            let (tx, rx) = oneshot::channel();
            let seq = state.seq;
            state.seq += 1;
            state.waiters.push(Waiter { rank, seq, tx });
            self.shared.demand.notify_one();
            rx
        };
        // On timeout or cancellation `rx` is dropped: a slot sent to it in
        // the meantime is dropped with it, which frees it.
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(slot)) => Ok(slot),
            Ok(Err(_)) | Err(_) => Err(Elapsed),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
    use std::time::Duration;

    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn far() -> Instant {
        Instant::now() + secs(3600)
    }

    /// Lets spawned tasks run until `limit` has `n` waiters.
    async fn until_waiting(limit: &ConcurrencyLimit, n: usize) {
        while limit.waiting() < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ranked_waiters_are_served_lowest_rank_first() {
        let limit = Arc::new(ConcurrencyLimit::new(1));
        let held = limit.try_acquire().unwrap();
        let served = Arc::new(Mutex::new(Vec::new()));
        let now = Instant::now();
        let mut tasks = Vec::new();
        for (name, rank) in [("late", 30), ("early", 10), ("middle", 20)] {
            let waiting = limit.clone();
            let served = served.clone();
            tasks.push(tokio::spawn(async move {
                let slot = waiting
                    .acquire_ranked(now + secs(rank), far())
                    .await
                    .unwrap();
                served.lock().unwrap().push(name);
                drop(slot);
            }));
            until_waiting(&limit, tasks.len()).await;
        }
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*served.lock().unwrap(), ["early", "middle", "late"]);
    }

    #[test]
    fn defaults_are_documented() {
        assert_eq!(ConcurrencyConfig::default().max_in_flight, 20);
        assert_eq!(ConcurrencyConfig::default().stagger, secs(30));
        let limit = ConcurrencyLimit::from_config(&ConcurrencyConfig::default());
        assert_eq!(limit.max_in_flight(), 20);
        assert_eq!(ConcurrencyLimit::new(0).max_in_flight(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_max_in_flight() {
        let limit = ConcurrencyLimit::new(20);
        let current = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..300u64)
            .map(|n| {
                let (limit, current, peak) = (limit.clone(), current.clone(), peak.clone());
                tokio::spawn(async move {
                    let deadline = Instant::now() + secs(60);
                    let slot = limit.acquire(deadline).await.expect("a slot in time");
                    let now = current.fetch_add(1, AtomicOrdering::SeqCst) + 1;
                    peak.fetch_max(now, AtomicOrdering::SeqCst);
                    assert!(limit.in_use() <= 20);
                    tokio::time::sleep(Duration::from_millis(1 + n % 7)).await;
                    current.fetch_sub(1, AtomicOrdering::SeqCst);
                    drop(slot);
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(peak.load(AtomicOrdering::SeqCst), 20);
        assert_eq!(limit.in_use(), 0);
        assert_eq!(limit.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn earliest_deadline_is_served_first() {
        let limit = ConcurrencyLimit::new(1);
        let held = limit.try_acquire().expect("free");
        assert!(limit.try_acquire().is_none());
        let start = Instant::now();
        let order = Arc::new(Mutex::new(Vec::new()));
        // Deadlines in seconds, with a tie (served in arrival order).
        let waiters = [
            (50, 'a'),
            (10, 'b'),
            (30, 'c'),
            (20, 'd'),
            (40, 'e'),
            (20, 'f'),
        ];
        let tasks: Vec<_> = waiters
            .into_iter()
            .map(|(deadline, name)| {
                let (limit, order) = (limit.clone(), order.clone());
                tokio::spawn(async move {
                    let slot = limit.acquire(start + secs(deadline)).await.unwrap();
                    order.lock().unwrap().push(name);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    drop(slot);
                })
            })
            .collect();
        until_waiting(&limit, 6).await;
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ['b', 'd', 'f', 'c', 'e', 'a']);
        assert_eq!(limit.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_deadline() {
        let limit = ConcurrencyLimit::new(1);
        let held = limit.try_acquire().unwrap();
        let start = Instant::now();
        assert_eq!(limit.acquire(start + secs(5)).await.unwrap_err(), Elapsed);
        assert_eq!(start.elapsed(), secs(5));
        assert_eq!(limit.waiting(), 0);
        assert_eq!(limit.in_use(), 1);
        // A passed deadline gets nothing, even with a free slot.
        drop(held);
        assert_eq!(limit.acquire(Instant::now()).await.unwrap_err(), Elapsed);
        assert_eq!(limit.in_use(), 0);
        let slot = limit.acquire(far()).await.expect("free");
        assert_eq!(limit.in_use(), 1);
        drop(slot);
        assert_eq!(limit.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gave_up_is_skipped() {
        let limit = ConcurrencyLimit::new(1);
        let held = limit.try_acquire().unwrap();
        let start = Instant::now();
        let (early, late) = (limit.clone(), limit.clone());
        let gives_up = tokio::spawn(async move { early.acquire(start + secs(1)).await });
        let waits = tokio::spawn(async move { late.acquire(start + secs(10)).await });
        until_waiting(&limit, 2).await;
        assert_eq!(gives_up.await.unwrap().unwrap_err(), Elapsed);
        drop(held);
        let slot = waits.await.unwrap().expect("served");
        assert_eq!(start.elapsed(), secs(1));
        assert_eq!(limit.in_use(), 1);
        drop(slot);
        assert_eq!(limit.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_does_not_leak() {
        let limit = ConcurrencyLimit::new(1);
        let held = limit.try_acquire().unwrap();
        // Cancelled while waiting.
        let waiter = {
            let limit = limit.clone();
            tokio::spawn(async move { limit.acquire(far()).await })
        };
        until_waiting(&limit, 1).await;
        waiter.abort();
        assert!(waiter.await.unwrap_err().is_cancelled());
        drop(held);
        assert_eq!(limit.in_use(), 0);

        // Cancelled after being handed a slot, before waking up to take it.
        let held = limit.try_acquire().unwrap();
        let mut waiter = Box::pin(limit.acquire(far()));
        assert!(futures::poll!(&mut waiter).is_pending());
        assert_eq!(limit.waiting(), 1);
        drop(held); // handed to the waiter
        assert_eq!(limit.in_use(), 1);
        drop(waiter);
        assert_eq!(limit.in_use(), 0);
        assert!(limit.try_acquire().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_that_gave_up_are_swept_out() {
        let limit = ConcurrencyLimit::new(1);
        let _held = limit.try_acquire().unwrap();
        let start = Instant::now();
        let quitters: Vec<_> = (0..1000)
            .map(|_| {
                let limit = limit.clone();
                tokio::spawn(async move { limit.acquire(start + secs(1)).await })
            })
            .collect();
        for quitter in quitters {
            assert_eq!(quitter.await.unwrap().unwrap_err(), Elapsed);
        }
        assert_eq!(limit.waiting(), 0);
        let stayers: Vec<_> = (0..100)
            .map(|_| {
                let limit = limit.clone();
                tokio::spawn(async move { limit.acquire(far()).await })
            })
            .collect();
        until_waiting(&limit, 100).await;
        assert_eq!(limit.shared.lock().waiters.len(), 100);
        for stayer in stayers {
            stayer.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn growing_the_capacity_serves_waiters_earliest_deadline_first() {
        let limit = ConcurrencyLimit::new(1);
        limit.set_max_in_flight(0);
        assert!(limit.try_acquire().is_none());
        let start = Instant::now();
        let late = {
            let limit = limit.clone();
            tokio::spawn(async move { limit.acquire(start + secs(50)).await })
        };
        until_waiting(&limit, 1).await;
        let early = {
            let limit = limit.clone();
            tokio::spawn(async move { limit.acquire(start + secs(10)).await })
        };
        until_waiting(&limit, 2).await;
        limit.set_max_in_flight(1);
        let slot = early
            .await
            .unwrap()
            .expect("the earliest deadline is served");
        assert_eq!(limit.in_use(), 1);
        assert_eq!(limit.waiting(), 1);
        drop(slot);
        let _next = late.await.unwrap().expect("then the next");
    }

    #[tokio::test(start_paused = true)]
    async fn shrinking_the_capacity_takes_effect_as_calls_finish() {
        let limit = ConcurrencyLimit::new(3);
        let slots: Vec<Slot> = (0..3).map(|_| limit.try_acquire().unwrap()).collect();
        limit.set_max_in_flight(1);
        let waiter = {
            let limit = limit.clone();
            tokio::spawn(async move { limit.acquire(far()).await })
        };
        until_waiting(&limit, 1).await;
        let mut slots = slots.into_iter();
        drop(slots.next());
        drop(slots.next());
        assert_eq!(
            limit.in_use(),
            1,
            "freed slots above the capacity are not handed on"
        );
        assert_eq!(limit.waiting(), 1);
        drop(slots.next());
        let served = waiter
            .await
            .unwrap()
            .expect("served once under the capacity");
        drop(served);
        assert_eq!(limit.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_signals_demand() {
        let limit = ConcurrencyLimit::new(1);
        let _held = limit.try_acquire().unwrap();
        let waiter = {
            let limit = limit.clone();
            tokio::spawn(async move { limit.acquire(far()).await })
        };
        tokio::time::timeout(secs(1), limit.demand())
            .await
            .expect("demand signalled when a call queues");
        waiter.abort();
    }
}
