//! One insurer's resilience guard: the policies of [`crate::resilience`]
//! composed around every call to it (quota, then circuit breaker, then a
//! concurrency slot, then the call, its outcome recorded).
//!
//! A guard is local ([`Guard::new`]) or shared between pods through a
//! [`ResilienceStore`] ([`Guard::shared`], see [`crate::shared`]): the same
//! policies, with the quota taken from the store in blocks, the concurrency
//! capacity leased from it, and breaker openings published through it.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use osago_core::insurer::{ErrorKind, InsurerError};
use osago_core::ports::ResilienceStore;
use osago_core::Clock;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::{CallLabels, EngineMetrics, InsurerLabel, TransitionLabels};
use crate::resilience::{
    Backoff, BackoffConfig, BreakerConfig, BreakerSnapshot, CallOutcome, CircuitBreaker,
    ConcurrencyConfig, ConcurrencyLimit, GcraConfig, Permit, QuotaConfig, QuotaError, QuotaQueue,
    Transition,
};
use crate::shared::{SharedConfig, SharedQuota};

mod sync;

/// The policies of one insurer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResilienceConfig {
    /// Outbound quota with its burst buffer.
    pub quota: QuotaConfig,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
    /// Calls in flight at once.
    pub concurrency: ConcurrencyConfig,
    /// Retries of `POST /applications` (and of failed polls).
    pub backoff: BackoffConfig,
    /// Consecutive failed polls tolerated before the insurer ends with the
    /// last failure's kind.
    pub poll_retries: u32,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            quota: QuotaConfig {
                // A partner contract sets this; the default only guards against runaways.
                rate: GcraConfig {
                    rate_per_sec: 500.0,
                    burst: 200,
                },
                buffer: 10_000,
            },
            breaker: BreakerConfig::default(),
            concurrency: ConcurrencyConfig::default(),
            backoff: BackoffConfig::default(),
            poll_retries: 3,
        }
    }
}

/// What kind of call goes through the guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// `POST /applications`: new work, gated by the circuit breaker.
    Create,
    /// `GET /quotes/{id}`: work already accepted by the insurer.
    Poll,
}

impl CallKind {
    /// The label in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Create => "create",
            CallKind::Poll => "poll",
        }
    }
}

/// Why a call did not happen or failed.
#[derive(Debug)]
pub enum CallError {
    /// Refused here, without calling the insurer (circuit open, quota
    /// exhausted before the deadline, no slot before the deadline): final.
    Refused(InsurerError),
    /// The insurer's call failed.
    Failed(InsurerError),
}

/// The outbound quota: this pod's own, or shared by every pod.
#[derive(Debug)]
enum Quota {
    Local(QuotaQueue),
    Shared(Box<SharedQuota>),
}

impl Quota {
    async fn admit(&self, deadline: Instant) -> Result<(), QuotaError> {
        match self {
            Quota::Local(queue) => queue.admit(deadline).await,
            Quota::Shared(shared) => shared.admit(deadline).await,
        }
    }
}

/// Publishes this pod's own breaker transitions (shared guards only).
#[derive(Debug)]
struct BreakerFeed {
    tx: watch::Sender<Option<BreakerSnapshot>>,
    clock: Arc<dyn Clock>,
}

/// One insurer's guard.
#[derive(Debug)]
pub struct Guard {
    pub(crate) label: InsurerLabel,
    quota: Quota,
    breaker: Mutex<CircuitBreaker>,
    pub(crate) limit: ConcurrencyLimit,
    /// Backoff between retries.
    pub backoff: Backoff,
    /// Consecutive failed polls tolerated.
    pub poll_retries: u32,
    /// The stagger of new applications' places in the slot queue.
    pub stagger: Duration,
    pub(crate) metrics: EngineMetrics,
    feed: Option<BreakerFeed>,
    /// The configured concurrency cap (across pods when shared).
    cap: usize,
}

impl Guard {
    /// A guard for the insurer labelled `label`, on this pod's own policies.
    pub fn new(label: InsurerLabel, config: &ResilienceConfig, metrics: EngineMetrics) -> Self {
        metrics.breaker_state.get_or_create(&label).set(0);
        Self {
            quota: Quota::Local(QuotaQueue::new(config.quota.clone())),
            breaker: Mutex::new(CircuitBreaker::new(config.breaker.clone())),
            limit: ConcurrencyLimit::from_config(&config.concurrency),
            backoff: Backoff::new(config.backoff.clone()),
            poll_retries: config.poll_retries,
            stagger: config.concurrency.stagger,
            label,
            metrics,
            feed: None,
            cap: config.concurrency.max_in_flight.max(1),
        }
    }

    /// A guard whose quota, concurrency cap and breaker are shared with
    /// every pod using `store` (see [`crate::shared`]); starts its keeper
    /// tasks, which end when the guard is dropped. Must be called within a
    /// tokio runtime.
    pub fn shared(
        label: InsurerLabel,
        config: &ResilienceConfig,
        metrics: EngineMetrics,
        store: Arc<dyn ResilienceStore>,
        shared_config: &SharedConfig,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        metrics.breaker_state.get_or_create(&label).set(0);
        let limit = ConcurrencyLimit::from_config(&config.concurrency);
        // No slot until the first lease is granted (or the store is found
        // unreachable and the local cap applies).
        limit.set_max_in_flight(0);
        let (tx, rx) = watch::channel(None);
        let guard = Arc::new(Self {
            quota: Quota::Shared(Box::new(SharedQuota::new(
                store.clone(),
                label.insurer.clone(),
                &config.quota,
                shared_config.quota_window,
                metrics.clone(),
            ))),
            breaker: Mutex::new(CircuitBreaker::new(config.breaker.clone())),
            limit,
            backoff: Backoff::new(config.backoff.clone()),
            poll_retries: config.poll_retries,
            stagger: config.concurrency.stagger,
            label,
            metrics,
            feed: Some(BreakerFeed {
                tx,
                clock: clock.clone(),
            }),
            cap: config.concurrency.max_in_flight.max(1),
        });
        let cap = u32::try_from(config.concurrency.max_in_flight.max(1)).unwrap_or(u32::MAX);
        sync::spawn_keepers(&guard, store, shared_config.clone(), cap, clock, rx);
        guard
    }

    /// Calls waiting for a concurrency slot per slot of the cap: 0 while the
    /// cap is not the bottleneck. The poll schedule stretches with it.
    pub fn pressure(&self) -> f64 {
        self.limit.waiting() as f64 / self.cap as f64
    }

    /// Takes in the insurer's breaker state published by another pod.
    pub(crate) fn observe_remote(&self, now_unix_ms: u64, snapshot: &BreakerSnapshot) {
        let transition = self.breaker.lock().expect("breaker lock").observe_remote(
            Instant::now(),
            now_unix_ms,
            snapshot,
        );
        self.transition(transition);
    }

    /// A transition of this pod's own breaker: metrics, and published to the
    /// other pods when shared.
    fn own_transition(&self, transition: Option<Transition>) {
        let Some(t) = transition else { return };
        if let Some(feed) = &self.feed {
            if sync::is_shared_transition(t.to) {
                let now_unix_ms = u64::try_from(feed.clock.now().timestamp_millis()).unwrap_or(0);
                let snapshot = self
                    .breaker
                    .lock()
                    .expect("breaker lock")
                    .snapshot(Instant::now(), now_unix_ms);
                feed.tx.send_replace(Some(snapshot));
            }
        }
        self.transition(Some(t));
    }

    fn transition(&self, transition: Option<Transition>) {
        let Some(t) = transition else { return };
        self.metrics
            .breaker_state
            .get_or_create(&self.label)
            .set(t.to.as_gauge());
        self.metrics
            .breaker_transitions
            .get_or_create(&TransitionLabels {
                insurer: self.label.insurer.clone(),
                to: t.to.as_str().to_owned(),
            })
            .inc();
        tracing::info!(insurer = %self.label.insurer, from = t.from.as_str(), to = t.to.as_str(), "circuit breaker changed state");
    }

    /// Runs `call` under the quota, the breaker (for new work) and a
    /// concurrency slot, all bounded by `deadline`; waiting for a slot, it
    /// ranks by `deadline`.
    pub async fn call<T, F>(
        &self,
        kind: CallKind,
        deadline: Instant,
        call: F,
    ) -> Result<T, CallError>
    where
        F: Future<Output = Result<T, InsurerError>>,
    {
        self.call_ranked(kind, deadline, deadline, call).await
    }

    /// [`Guard::call`], ranked by `rank` among the calls waiting for a slot
    /// (lowest first).
    pub async fn call_ranked<T, F>(
        &self,
        kind: CallKind,
        rank: Instant,
        deadline: Instant,
        call: F,
    ) -> Result<T, CallError>
    where
        F: Future<Output = Result<T, InsurerError>>,
    {
        self.call_demoted(kind, Ranks::fixed(rank), deadline, call)
            .await
    }

    /// [`Guard::call_ranked`], with a rank that changes while the call
    /// waits for a slot ([`Ranks`]).
    pub async fn call_demoted<T, F>(
        &self,
        kind: CallKind,
        ranks: Ranks,
        deadline: Instant,
        call: F,
    ) -> Result<T, CallError>
    where
        F: Future<Output = Result<T, InsurerError>>,
    {
        let waited = Instant::now();
        if let Err(err) = self.quota.admit(deadline).await {
            self.metrics
                .quota_rejections
                .get_or_create(&self.label)
                .inc();
            self.count(kind, "rate_limited");
            return Err(CallError::Refused(InsurerError::new(
                ErrorKind::RateLimited,
                format!("{err}"),
            )));
        }
        // A shared quota's round trip is not a wait.
        if waited.elapsed() >= Duration::from_millis(1) {
            self.metrics.quota_waits.get_or_create(&self.label).inc();
        }
        let permit = if kind == CallKind::Create {
            let acquired = self
                .breaker
                .lock()
                .expect("breaker lock")
                .try_acquire(Instant::now());
            match acquired {
                Ok(permit) => {
                    self.own_transition(permit.transition());
                    Some(permit)
                }
                Err(rejected) => {
                    self.own_transition(rejected.transition);
                    self.count(kind, "circuit_open");
                    return Err(CallError::Refused(
                        InsurerError::new(ErrorKind::CircuitOpen, "circuit open: insurer failing")
                            .with_retry_after(Some(rejected.retry_in)),
                    ));
                }
            }
        } else {
            None
        };
        // A slot that comes free only at the deadline is no slot: a call
        // begun then could not be answered in time.
        let waited = match ranks.demoted {
            Some((at, _)) if at < deadline => {
                match self.limit.acquire_ranked(ranks.rank, at).await {
                    Ok(slot) => Ok(slot),
                    // Still waiting at `at`: back in the queue, further down.
                    Err(_) => self.limit.acquire_ranked(ranks.later(), deadline).await,
                }
            }
            _ => self.limit.acquire_ranked(ranks.rank, deadline).await,
        };
        let acquired = match waited {
            Ok(slot) if Instant::now() < deadline => Ok(slot),
            Ok(_) => Err(()),
            Err(_) => Err(()),
        };
        let slot = match acquired {
            Ok(slot) => slot,
            Err(()) => {
                if let Some(permit) = permit {
                    self.breaker.lock().expect("breaker lock").cancel(permit);
                }
                self.count(kind, "no_slot");
                return Err(CallError::Refused(InsurerError::new(
                    ErrorKind::Timeout,
                    "no call slot before the deadline",
                )));
            }
        };
        let in_use = InUse::new(self.metrics.slots_in_use.get_or_create(&self.label).clone());
        let started = Instant::now();
        let mut reached = Reached {
            guard: self,
            kind,
            started,
            permit,
            returned: false,
        };
        let result = call.await;
        let permit = reached.returned();
        self.metrics
            .call_seconds
            .get_or_create(&self.label)
            .observe(started.elapsed().as_secs_f64());
        drop(in_use);
        drop(slot);
        self.count(
            kind,
            match &result {
                Ok(_) => "ok",
                Err(err) => err.kind.as_str(),
            },
        );
        if let Some(permit) = permit {
            let outcome = CallOutcome::of(&result, started.elapsed());
            let transition =
                self.breaker
                    .lock()
                    .expect("breaker lock")
                    .record(Instant::now(), permit, outcome);
            self.own_transition(transition);
        }
        result.map_err(CallError::Failed)
    }

    fn count(&self, kind: CallKind, outcome: &str) {
        self.metrics
            .calls
            .get_or_create(&CallLabels {
                insurer: self.label.insurer.clone(),
                call: kind.as_str().to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}

/// A call that reached the insurer (its slot taken), counted however it
/// ends. One that never returns is counted when its future is dropped:
/// `panicked` while the thread unwinds (its client panicked: not the
/// insurer's doing, so a half-open probe's place is handed back to the
/// breaker), else `abandoned` (still in flight when its task ended: the
/// request's deadline, or the pod shutting down; a probe's place stays
/// taken, and a probe that silent reopens the breaker, as one that hangs
/// does). Either way the time its slot was held is observed, so
/// `calls_total` and `call_seconds` count every call the insurer saw.
struct Reached<'a> {
    guard: &'a Guard,
    kind: CallKind,
    started: Instant,
    permit: Option<Permit>,
    returned: bool,
}

impl Reached<'_> {
    /// The call returned: its outcome is recorded by the caller, with the
    /// breaker's permit.
    fn returned(&mut self) -> Option<Permit> {
        self.returned = true;
        self.permit.take()
    }
}

impl Drop for Reached<'_> {
    fn drop(&mut self) {
        if self.returned {
            return;
        }
        let guard = self.guard;
        guard
            .metrics
            .call_seconds
            .get_or_create(&guard.label)
            .observe(self.started.elapsed().as_secs_f64());
        if std::thread::panicking() {
            guard.count(self.kind, "panicked");
            if let Some(permit) = self.permit.take() {
                // Never `expect` here: a second panic while unwinding aborts.
                if let Ok(mut breaker) = guard.breaker.lock() {
                    breaker.cancel(permit);
                }
            }
        } else {
            guard.count(self.kind, "abandoned");
        }
    }
}

/// Counts a call in flight while alive (also when the call is cancelled).
struct InUse(prometheus_client::metrics::gauge::Gauge);

impl InUse {
    fn new(gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Where a call waits for a slot: at `rank`, and, if still waiting at a
/// given time, further down at another rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ranks {
    /// The rank to wait at first.
    pub rank: Instant,
    /// From when (the first) the call waits at which rank (the second).
    pub demoted: Option<(Instant, Instant)>,
}

impl Ranks {
    /// One rank throughout.
    pub fn fixed(rank: Instant) -> Self {
        Self {
            rank,
            demoted: None,
        }
    }

    /// `rank` until `at`, then `later`.
    pub fn until(rank: Instant, at: Instant, later: Instant) -> Self {
        Self {
            rank,
            demoted: Some((at, later)),
        }
    }

    fn later(&self) -> Instant {
        self.demoted.map_or(self.rank, |(_, later)| later)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use futures::FutureExt as _;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_still_waiting_at_its_demotion_time_moves_down_the_queue() {
        let mut config = ResilienceConfig::default();
        config.concurrency.max_in_flight = 1;
        config.quota.rate.rate_per_sec = 0.0;
        let guard = Arc::new(Guard::new(
            InsurerLabel {
                insurer: "partner".into(),
            },
            &config,
            EngineMetrics::default(),
        ));
        let start = Instant::now();
        let at = move |secs: u64| start + Duration::from_secs(secs);
        let order = Arc::new(StdMutex::new(Vec::new()));
        // One call holds the only slot for 5 s.
        let holder = {
            let guard = guard.clone();
            tokio::spawn(async move {
                guard
                    .call(CallKind::Poll, at(60), async {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        Ok::<_, InsurerError>(())
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        let waiter = |name: &'static str, ranks: Ranks| {
            let (guard, order) = (guard.clone(), order.clone());
            tokio::spawn(async move {
                guard
                    .call_demoted(CallKind::Poll, ranks, at(60), async {
                        order.lock().unwrap().push(name);
                        Ok::<_, InsurerError>(())
                    })
                    .await
            })
        };
        // First in line until 2 s, then behind a call ranked at 30 s.
        let demoted = waiter("demoted", Ranks::until(at(1), at(2), at(40)));
        tokio::task::yield_now().await;
        let steady = waiter("steady", Ranks::fixed(at(30)));
        // Not demoted before the slot came free: it keeps its place.
        let kept = waiter("kept", Ranks::until(at(2), at(50), at(59)));
        for task in [holder, demoted, steady, kept] {
            task.await.unwrap().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["kept", "steady", "demoted"]);
    }

    fn partner() -> InsurerLabel {
        InsurerLabel {
            insurer: "partner".into(),
        }
    }

    fn counted(metrics: &EngineMetrics, call: &str, outcome: &str) -> u64 {
        metrics
            .calls
            .get_or_create(&CallLabels {
                insurer: "partner".into(),
                call: call.into(),
                outcome: outcome.into(),
            })
            .get()
    }

    /// Creates an application through `guard` with a client that panics
    /// `after` into the call.
    async fn a_create_whose_client_panics(guard: &Guard, deadline: Instant, after: Duration) {
        let call = guard.call(CallKind::Create, deadline, async move {
            tokio::time::sleep(after).await;
            if deadline > Instant::now() {
                panic!("the client's bug");
            }
            Ok::<_, InsurerError>(())
        });
        let panicked = std::panic::AssertUnwindSafe(call).catch_unwind().await;
        assert!(panicked.is_err(), "the client panicked");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_never_returns_is_still_counted() {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = EngineMetrics::register(&mut registry);
        let guard = Guard::new(partner(), &ResilienceConfig::default(), metrics.clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        // Cut off: its task ends (at the request's deadline, say) while
        // the insurer is still answering.
        let cut = tokio::time::timeout(
            Duration::from_secs(2),
            guard.call(CallKind::Poll, deadline, async {
                tokio::time::sleep(Duration::from_secs(120)).await;
                Ok::<_, InsurerError>(())
            }),
        )
        .await;
        assert!(cut.is_err(), "still in flight when its task ended");
        // The insurer's client panics mid-call.
        a_create_whose_client_panics(&guard, deadline, Duration::from_millis(300)).await;
        assert_eq!(counted(&metrics, "poll", "abandoned"), 1);
        assert_eq!(counted(&metrics, "create", "panicked"), 1);
        // The slots they held are free again, and their time was observed.
        assert_eq!(metrics.slots_in_use.get_or_create(&partner()).get(), 0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("osago_aggregator_call_seconds_count{insurer=\"partner\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("osago_aggregator_call_seconds_sum{insurer=\"partner\"} 2.3"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_open_probe_whose_client_panics_hands_its_place_back() {
        let mut config = ResilienceConfig::default();
        config.quota.rate.rate_per_sec = 0.0;
        config.breaker = BreakerConfig {
            window: 2,
            min_calls: 2,
            open_for: Duration::from_secs(10),
            half_open_probes: 1,
            ..BreakerConfig::default()
        };
        let guard = Guard::new(partner(), &config, EngineMetrics::default());
        let deadline = Instant::now() + Duration::from_secs(600);
        let create = |ok: bool| {
            guard.call(CallKind::Create, deadline, async move {
                if ok {
                    Ok(())
                } else {
                    Err(InsurerError::new(ErrorKind::Unavailable, "down"))
                }
            })
        };
        for _ in 0..2 {
            assert!(matches!(create(false).await, Err(CallError::Failed(_))));
        }
        assert!(
            matches!(create(true).await, Err(CallError::Refused(e)) if e.kind == ErrorKind::CircuitOpen),
            "two failures in a window of two open it"
        );
        tokio::time::sleep(Duration::from_secs(11)).await;
        // The one probe's client panics: no sign of the insurer's health.
        a_create_whose_client_panics(&guard, deadline, Duration::ZERO).await;
        // Its place went back to the breaker: the next application probes,
        // and its success closes the breaker.
        assert!(create(true).await.is_ok(), "the probe's place was lost");
        assert!(create(true).await.is_ok());
    }
}
