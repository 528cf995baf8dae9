//! Conformance of [`ResilienceStore`]: block quotas, slot leases, breaker values.

use std::time::Duration;

use osago_core::breaker::{BreakerSnapshot, BreakerState};
use osago_core::ports::{ResilienceStore, SlotClaim};
use osago_core::ratelimit::RateLimit;

fn key() -> String {
    format!("insurer-{}", uuid::Uuid::new_v4().simple())
}

fn claim(holder: &str, want: u32, floor: u32) -> SlotClaim {
    SlotClaim {
        holder: holder.to_owned(),
        cap: 20,
        want,
        floor,
        ttl: Duration::from_secs(10),
    }
}

/// A block takes the whole burst at once, the next is refused with a hint,
/// and after a while a block of what accrued is granted.
pub async fn quota_is_taken_in_blocks<S: ResilienceStore + ?Sized>(store: &S) {
    let limit = RateLimit {
        per_second: 100.0,
        burst: 10,
    };
    let key = key();
    let first = store.take_quota(&key, &limit, 25).await.expect("take");
    assert_eq!(first.granted, 10, "{first:?}");
    let refused = store.take_quota(&key, &limit, 25).await.expect("take");
    assert_eq!(refused.granted, 0, "{refused:?}");
    assert!(
        refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_millis(10),
        "{refused:?}"
    );
    tokio::time::sleep(Duration::from_millis(55)).await;
    let later = store.take_quota(&key, &limit, 25).await.expect("take");
    assert!(
        (5..=10).contains(&later.granted),
        "about 5 accrued in 55 ms at 100/s: {later:?}"
    );
    let small = store
        .take_quota(&self::key(), &limit, 3)
        .await
        .expect("take");
    assert_eq!(small.granted, 3, "never more than asked");
}

/// Holders together never hold more than the cap; a full holder shrinks to
/// a fair share once another starves, in two steps (its floor first).
pub async fn slots_are_shared_within_the_cap<S: ResilienceStore + ?Sized>(store: &S) {
    let key = key();
    let a = store
        .claim_slots(&key, &claim("a", 15, 0))
        .await
        .expect("a");
    assert_eq!((a.granted, a.contended), (15, false));
    let b = store
        .claim_slots(&key, &claim("b", 10, 0))
        .await
        .expect("b");
    assert_eq!((b.granted, b.contended), (5, true));
    // a is asked to shrink to a fair share but still has 15 in flight.
    let a = store
        .claim_slots(&key, &claim("a", 15, 15))
        .await
        .expect("a");
    assert_eq!((a.granted, a.held, a.contended), (10, 15, true));
    let b = store
        .claim_slots(&key, &claim("b", 10, 5))
        .await
        .expect("b");
    assert_eq!(b.granted, 5, "a's floor still counts");
    // a's calls are down to its new capacity.
    let a = store
        .claim_slots(&key, &claim("a", 15, 10))
        .await
        .expect("a");
    assert_eq!((a.granted, a.held), (10, 10));
    let b = store
        .claim_slots(&key, &claim("b", 10, 5))
        .await
        .expect("b");
    assert_eq!(b.granted, 10);
}

/// A lease that is not renewed expires and its slots come back; a released
/// lease frees its slots at once.
pub async fn leases_expire_and_release<S: ResilienceStore + ?Sized>(store: &S) {
    let key = key();
    let short = SlotClaim {
        ttl: Duration::from_millis(200),
        ..claim("dead-pod", 20, 0)
    };
    assert_eq!(
        store
            .claim_slots(&key, &short)
            .await
            .expect("claim")
            .granted,
        20
    );
    let starved = store
        .claim_slots(&key, &claim("b", 20, 0))
        .await
        .expect("b");
    assert_eq!(starved.granted, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = store
        .claim_slots(&key, &claim("b", 20, 0))
        .await
        .expect("b");
    assert_eq!(b.granted, 20, "the dead pod's slots came back");
    store.release_slots(&key, "b").await.expect("release");
    let c = store
        .claim_slots(&key, &claim("c", 20, 0))
        .await
        .expect("c");
    assert_eq!(c.granted, 20, "released slots are free at once");
}

/// A breaker value is read back until its TTL passes.
pub async fn breaker_values_expire<S: ResilienceStore + ?Sized>(store: &S) {
    let key = key();
    assert_eq!(store.get_breaker(&key).await.expect("get"), None);
    let open = BreakerSnapshot {
        state: BreakerState::Open,
        opened_at_unix_ms: Some(1_700_000_000_000),
        open_until_unix_ms: Some(1_700_000_030_000),
    };
    store
        .put_breaker(&key, &open, Duration::from_millis(200))
        .await
        .expect("put");
    assert_eq!(store.get_breaker(&key).await.expect("get"), Some(open));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.get_breaker(&key).await.expect("get"), None);
}
