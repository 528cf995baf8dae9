//! Conformance of [`RateLimiter`]: GCRA per key.

use std::time::Duration;

use osago_core::ports::RateLimiter;
use osago_core::ratelimit::{Admission, RateLimit};

fn key() -> String {
    format!("client-{}", uuid::Uuid::new_v4())
}

/// A burst is admitted, the next call is limited with a retry hint, and
/// after that hint a call is admitted again.
pub async fn bursts_then_limits_then_recovers<L: RateLimiter + ?Sized>(limiter: &L) {
    let limit = RateLimit {
        per_second: 5.0,
        burst: 3,
    };
    let key = key();
    for call in 0..3 {
        assert_eq!(
            limiter.check(&key, &limit).await.expect("check"),
            Admission::Allowed,
            "call {call}"
        );
    }
    let retry_after = match limiter.check(&key, &limit).await.expect("check") {
        Admission::Limited { retry_after } => retry_after,
        Admission::Allowed => panic!("the fourth call exceeds the burst"),
    };
    assert!(
        retry_after > Duration::ZERO && retry_after <= Duration::from_millis(200),
        "{retry_after:?}"
    );
    tokio::time::sleep(retry_after + Duration::from_millis(20)).await;
    assert_eq!(
        limiter.check(&key, &limit).await.expect("check"),
        Admission::Allowed
    );
}

/// Keys are limited independently.
pub async fn keys_are_independent<L: RateLimiter + ?Sized>(limiter: &L) {
    let limit = RateLimit {
        per_second: 1.0,
        burst: 1,
    };
    let (a, b) = (key(), key());
    assert_eq!(
        limiter.check(&a, &limit).await.expect("check"),
        Admission::Allowed
    );
    assert!(matches!(
        limiter.check(&a, &limit).await.expect("check"),
        Admission::Limited { .. }
    ));
    assert_eq!(
        limiter.check(&b, &limit).await.expect("check"),
        Admission::Allowed
    );
}

/// A zero rate means no limit.
pub async fn zero_rate_is_unlimited<L: RateLimiter + ?Sized>(limiter: &L) {
    let limit = RateLimit {
        per_second: 0.0,
        burst: 1,
    };
    let key = key();
    for _ in 0..50 {
        assert_eq!(
            limiter.check(&key, &limit).await.expect("check"),
            Admission::Allowed
        );
    }
}

/// A rate above 1 000/s is kept, not capped at one call per millisecond:
/// at 5 000/s with a burst of 1, the call after an admitted one is due
/// within 200 µs.
pub async fn rates_above_one_per_millisecond_are_kept<L: RateLimiter + ?Sized>(limiter: &L) {
    let limit = RateLimit {
        per_second: 5_000.0,
        burst: 1,
    };
    let key = key();
    assert_eq!(
        limiter.check(&key, &limit).await.expect("check"),
        Admission::Allowed
    );
    for _ in 0..100 {
        match limiter.check(&key, &limit).await.expect("check") {
            Admission::Limited { retry_after } => {
                assert!(
                    retry_after <= Duration::from_micros(200),
                    "at 5 000/s the next call is due within 200 µs, not {retry_after:?}"
                );
                return;
            }
            Admission::Allowed => {}
        }
    }
}
