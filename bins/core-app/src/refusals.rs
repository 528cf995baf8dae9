//! Refusals this pod remembers, in front of the shared rate limiter.
//!
//! A GCRA limiter that refuses a key says how long until it could admit a
//! call for it (`retry_after`), and nothing any pod does brings that moment
//! sooner: a refusal leaves the key's theoretical arrival time as it is, and
//! an admission only moves it later. So until that moment a pod can refuse
//! every further request for the key itself, with the same answer the
//! shared limiter (Valkey) would give, without asking it. Under a flood a
//! refusal then costs no round trip and waits for no pooled connection, and
//! the shared limiter is asked about once per key per emission interval
//! instead of once per request.
//!
//! The moment is counted from when the question was sent, not from when the
//! answer came back, so a pod never refuses for longer than the shared
//! limiter would. Each key has one limit in a process (the admission key,
//! a client's address, `read:` and an address), which is what makes the key
//! alone enough to remember.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use osago_core::ports::{PortError, RateLimiter};
use osago_core::ratelimit::{Admission, RateLimit};
use tokio::time::Instant;

/// The most refused keys a pod remembers; at the bound, expired ones are
/// dropped, and a new refusal is not remembered while all are live (its
/// next request asks the shared limiter, as without the memo).
const CAPACITY: usize = 16_384;

/// A [`RateLimiter`] that answers refused keys itself until the limiter it
/// wraps could admit them again.
pub(crate) struct RefusalMemo {
    inner: Arc<dyn RateLimiter>,
    refused_until: Mutex<HashMap<String, Instant>>,
    capacity: usize,
}

impl RefusalMemo {
    /// Remembers `inner`'s refusals.
    pub(crate) fn new(inner: Arc<dyn RateLimiter>) -> Self {
        Self::with_capacity(inner, CAPACITY)
    }

    fn with_capacity(inner: Arc<dyn RateLimiter>, capacity: usize) -> Self {
        Self {
            inner,
            refused_until: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// When `key` may be admitted again, if it was refused and that moment
    /// is still ahead.
    fn remembered(&self, key: &str, now: Instant) -> Option<Instant> {
        let mut refused = self.refused_until.lock().expect("refusal memo lock");
        match refused.get(key) {
            Some(&until) if until > now => Some(until),
            Some(_) => {
                refused.remove(key);
                None
            }
            None => None,
        }
    }

    fn remember(&self, key: &str, until: Instant) {
        let mut refused = self.refused_until.lock().expect("refusal memo lock");
        if refused.len() >= self.capacity && !refused.contains_key(key) {
            let now = Instant::now();
            refused.retain(|_, until| *until > now);
            if refused.len() >= self.capacity {
                return;
            }
        }
        refused.insert(key.to_owned(), until);
    }
}

#[async_trait]
impl RateLimiter for RefusalMemo {
    async fn check(&self, key: &str, limit: &RateLimit) -> Result<Admission, PortError> {
        let asked = Instant::now();
        if let Some(until) = self.remembered(key, asked) {
            return Ok(Admission::Limited {
                retry_after: until - asked,
            });
        }
        let admission = self.inner.check(key, limit).await?;
        if let Admission::Limited { retry_after } = admission {
            self.remember(key, asked + retry_after);
        }
        Ok(admission)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use osago_core::ports::PortErrorKind;
    use osago_transport::memory::MemoryRateLimiter;

    use super::*;

    /// A limiter that counts the questions it is asked, answering after
    /// `delay` what `answer` says (or the in-memory GCRA when `None`).
    struct Counting {
        calls: AtomicUsize,
        delay: Duration,
        answer: Option<Result<Admission, PortErrorKind>>,
        gcra: MemoryRateLimiter,
    }

    impl Counting {
        fn gcra() -> Arc<Self> {
            Arc::new(Self {
                calls: AtomicUsize::new(0),
                delay: Duration::ZERO,
                answer: None,
                gcra: MemoryRateLimiter::new(),
            })
        }

        fn answering(delay: Duration, answer: Result<Admission, PortErrorKind>) -> Arc<Self> {
            Arc::new(Self {
                calls: AtomicUsize::new(0),
                delay,
                answer: Some(answer),
                gcra: MemoryRateLimiter::new(),
            })
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl RateLimiter for Counting {
        async fn check(&self, key: &str, limit: &RateLimit) -> Result<Admission, PortError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            match self.answer {
                None => self.gcra.check(key, limit).await,
                Some(Ok(admission)) => Ok(admission),
                Some(Err(kind)) => Err(PortError::new(kind, "limiter down")),
            }
        }
    }

    const ONE_PER_SECOND: RateLimit = RateLimit {
        per_second: 1.0,
        burst: 1,
    };

    fn limited(retry_after: Duration) -> Admission {
        Admission::Limited { retry_after }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_key_is_refused_locally_until_the_limiter_could_admit_it() {
        let inner = Counting::gcra();
        let memo = RefusalMemo::new(inner.clone());
        let key = "admission:quote-requests";
        assert_eq!(
            memo.check(key, &ONE_PER_SECOND).await.unwrap(),
            Admission::Allowed
        );
        assert_eq!(
            memo.check(key, &ONE_PER_SECOND).await.unwrap(),
            limited(Duration::from_secs(1))
        );
        assert_eq!(inner.calls(), 2);

        // Every request before the moment is refused here, with the time
        // left, and the shared limiter is not asked.
        for (step, left) in [(400, 600), (599, 1)] {
            tokio::time::advance(Duration::from_millis(step)).await;
            assert_eq!(
                memo.check(key, &ONE_PER_SECOND).await.unwrap(),
                limited(Duration::from_millis(left))
            );
        }
        assert_eq!(inner.calls(), 2, "refusals answered from the memo");

        // At the moment itself the limiter is asked again, and admits.
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            memo.check(key, &ONE_PER_SECOND).await.unwrap(),
            Admission::Allowed
        );
        assert_eq!(inner.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_moment_counts_from_the_question_not_the_answer() {
        // The shared limiter takes 100 ms to answer "300 ms": the key may be
        // admitted 300 ms after the question, 200 ms after the answer.
        let inner = Counting::answering(
            Duration::from_millis(100),
            Ok(limited(Duration::from_millis(300))),
        );
        let memo = RefusalMemo::new(inner.clone());
        let key = "10.0.0.1";
        memo.check(key, &ONE_PER_SECOND).await.unwrap();
        tokio::time::advance(Duration::from_millis(199)).await;
        assert_eq!(
            memo.check(key, &ONE_PER_SECOND).await.unwrap(),
            limited(Duration::from_millis(1))
        );
        assert_eq!(inner.calls(), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        memo.check(key, &ONE_PER_SECOND).await.unwrap();
        assert_eq!(inner.calls(), 2, "asked again once the moment came");
    }

    #[tokio::test(start_paused = true)]
    async fn admissions_and_failures_are_not_remembered() {
        let down = Counting::answering(Duration::ZERO, Err(PortErrorKind::Unavailable));
        let memo = RefusalMemo::new(down.clone());
        for _ in 0..3 {
            assert!(memo.check("k", &ONE_PER_SECOND).await.is_err());
        }
        assert_eq!(down.calls(), 3);

        let open = Counting::answering(Duration::ZERO, Ok(Admission::Allowed));
        let memo = RefusalMemo::new(open.clone());
        for _ in 0..3 {
            assert_eq!(
                memo.check("k", &ONE_PER_SECOND).await.unwrap(),
                Admission::Allowed
            );
        }
        assert_eq!(open.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_memo_is_bounded_and_drops_expired_keys_first() {
        let inner = Counting::answering(Duration::ZERO, Ok(limited(Duration::from_secs(1))));
        let memo = RefusalMemo::with_capacity(inner.clone(), 2);
        for key in ["a", "b", "c"] {
            memo.check(key, &ONE_PER_SECOND).await.unwrap();
        }
        assert_eq!(inner.calls(), 3);
        // "a" and "b" are remembered; "c" found the memo full of live keys.
        memo.check("a", &ONE_PER_SECOND).await.unwrap();
        memo.check("b", &ONE_PER_SECOND).await.unwrap();
        assert_eq!(inner.calls(), 3);
        memo.check("c", &ONE_PER_SECOND).await.unwrap();
        assert_eq!(inner.calls(), 4);
        assert_eq!(memo.refused_until.lock().unwrap().len(), 2);

        // Once theirs expire, new refusals take their places.
        tokio::time::advance(Duration::from_secs(1)).await;
        memo.check("d", &ONE_PER_SECOND).await.unwrap();
        memo.check("d", &ONE_PER_SECOND).await.unwrap();
        assert_eq!(inner.calls(), 5, "\"d\" remembered after the sweep");
        assert_eq!(memo.refused_until.lock().unwrap().len(), 1);
    }
}
