//! The keeper tasks of a shared guard: its share of the insurer's
//! concurrency cap leased from the [`ResilienceStore`], and its breaker
//! state published to and read from the other pods (see [`crate::shared`]).

use std::sync::{Arc, Weak};
use std::time::Duration;

use osago_core::ports::{ResilienceStore, SlotClaim};
use osago_core::Clock;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Guard;
use crate::resilience::{BreakerSnapshot, BreakerState};
use crate::shared::{count_call, SharedConfig};

/// Starts the tasks sharing `guard`'s concurrency cap and breaker.
pub(crate) fn spawn_keepers(
    guard: &Arc<Guard>,
    store: Arc<dyn ResilienceStore>,
    config: SharedConfig,
    cap: u32,
    clock: Arc<dyn Clock>,
    breaker_feed: watch::Receiver<Option<BreakerSnapshot>>,
) {
    tokio::spawn(keep_slots(
        Arc::downgrade(guard),
        store.clone(),
        config.clone(),
        cap,
    ));
    tokio::spawn(sync_breaker(
        Arc::downgrade(guard),
        store,
        config,
        clock,
        breaker_feed,
    ));
}

/// Leases this pod's share of the insurer's concurrency cap until the guard
/// is gone.
async fn keep_slots(
    guard: Weak<Guard>,
    store: Arc<dyn ResilienceStore>,
    config: SharedConfig,
    cap: u32,
) {
    let headroom = (cap / 10).max(1);
    let mut last_ok: Option<Instant> = None;
    loop {
        let Some(g) = guard.upgrade() else { return };
        let limit = g.limit.clone();
        let key = g.label.insurer.clone();
        let metrics = g.metrics.clone();
        let label = g.label.clone();
        drop(g);
        let in_use = limit.in_use();
        let waiting = limit.waiting();
        let capacity = limit.max_in_flight();
        let want = u32::try_from(in_use + waiting)
            .unwrap_or(u32::MAX)
            .saturating_add(headroom)
            .min(cap);
        let claim = SlotClaim {
            holder: config.holder.clone(),
            cap,
            want,
            floor: u32::try_from(capacity.max(in_use)).unwrap_or(u32::MAX),
            ttl: config.lease_ttl,
        };
        let claimed = store.claim_slots(&key, &claim).await;
        count_call(&metrics, "claim_slots", &claimed);
        let next = match claimed {
            Ok(grant) => {
                limit.set_max_in_flight(grant.granted as usize);
                metrics
                    .slots_granted
                    .get_or_create(&label)
                    .set(i64::from(grant.granted));
                last_ok = Some(Instant::now());
                if grant.contended {
                    config.contended_every
                } else {
                    config.renew_every
                }
            }
            Err(err) => {
                let lapsed = last_ok.is_none_or(|at| at.elapsed() >= config.lease_ttl);
                if lapsed && capacity < cap as usize {
                    // Never granted, or the lease lapsed: run on the local cap.
                    limit.set_max_in_flight(cap as usize);
                    tracing::warn!(insurer = %key, error = %err, "shared concurrency cap unreachable; using the local cap");
                }
                config.renew_every
            }
        };
        tokio::select! {
            () = tokio::time::sleep(next) => {}
            () = limit.demand() => {
                // Coalesce a burst of waiters into one claim.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
}

/// How long a published breaker state lives in the store: an open one a
/// little past its end, a closed one long enough for every pod to read it.
fn breaker_ttl(snapshot: &BreakerSnapshot, now_unix_ms: u64) -> Duration {
    match snapshot.open_until_unix_ms {
        Some(until) => Duration::from_millis(until.saturating_sub(now_unix_ms) + 2_000),
        None => Duration::from_secs(60),
    }
}

fn unix_ms(clock: &dyn Clock) -> u64 {
    u64::try_from(clock.now().timestamp_millis()).unwrap_or_default()
}

/// Publishes this pod's own breaker transitions and takes in the other
/// pods', until the guard is gone.
async fn sync_breaker(
    guard: Weak<Guard>,
    store: Arc<dyn ResilienceStore>,
    config: SharedConfig,
    clock: Arc<dyn Clock>,
    mut feed: watch::Receiver<Option<BreakerSnapshot>>,
) {
    let Some((key, metrics)) = guard
        .upgrade()
        .map(|g| (g.label.insurer.clone(), g.metrics.clone()))
    else {
        return;
    };
    let mut tick = tokio::time::interval(config.breaker_sync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = feed.changed() => {
                if changed.is_err() {
                    return;
                }
                let Some(snapshot) = feed.borrow_and_update().clone() else { continue };
                let now_ms = unix_ms(clock.as_ref());
                let put = store.put_breaker(&key, &snapshot, breaker_ttl(&snapshot, now_ms)).await;
                count_call(&metrics, "put_breaker", &put);
                if let Err(err) = put {
                    tracing::warn!(insurer = %key, error = %err, "publishing the circuit breaker failed; it stays local");
                }
            }
            _ = tick.tick() => {
                let got = store.get_breaker(&key).await;
                count_call(&metrics, "get_breaker", &got);
                let snapshot = match got {
                    Ok(Some(snapshot)) => snapshot,
                    Ok(None) => continue,
                    Err(err) => {
                        tracing::debug!(insurer = %key, error = %err, "reading the shared breaker failed");
                        continue;
                    }
                };
                let Some(g) = guard.upgrade() else { return };
                g.observe_remote(unix_ms(clock.as_ref()), &snapshot);
            }
        }
    }
}

/// Whether a transition of this pod's own breaker is one other pods should
/// follow.
pub(crate) fn is_shared_transition(to: BreakerState) -> bool {
    matches!(to, BreakerState::Open | BreakerState::Closed)
}
