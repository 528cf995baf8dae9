//! When to poll an insurer for a quote: deadline-aware, learned from the
//! insurer's recent answers, instead of a fixed interval.
//!
//! - The **first poll** comes near the insurer's typical answer time: a low
//!   percentile (`first_percentile`, 10 % by default) of how long its recent
//!   applications took to be ready ([`AnswerTimes`]). With no history yet it
//!   comes after `initial`.
//! - Then the interval **grows**: `initial`, times `factor` each poll, up to
//!   `max` (250 ms x 1.5 up to 2 s by default), so a quote ready soon after
//!   the first poll is seen within a fraction of a second and a slow one
//!   costs a poll every `max` at most.
//! - A **Retry-After** from the insurer is always honoured: the next poll is
//!   never sooner.
//! - Near the **deadline** the wait is shortened so one last poll lands
//!   `last_look` before it rather than the deadline passing mid-wait.
//!
//! Which application polls first when the insurer's concurrency cap is the
//! bottleneck is the [`ConcurrencyLimit`](super::ConcurrencyLimit)'s
//! business: earliest deadline first.
//!
//! `fixed: Some(interval)` restores the old fixed interval (for comparison
//! in the scheduler benchmark, or for an insurer that asks for it).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Poll scheduling settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PollConfig {
    /// Poll at this fixed interval instead of the adaptive schedule.
    pub fixed: Option<Duration>,
    /// The first interval after the first poll; also the first poll's
    /// delay while nothing is learned. Default 250 ms.
    pub initial: Duration,
    /// Growth of the interval per poll (at least 1). Default 1.5.
    pub factor: f64,
    /// The longest interval. Default 2 s.
    pub max: Duration,
    /// Percentile of recent answer times at which the first poll comes
    /// (0..=1). Default 0.1.
    pub first_percentile: f64,
    /// Answer times remembered per insurer. Default 256.
    pub history: usize,
    /// How long before the deadline the last poll lands. Default 250 ms.
    pub last_look: Duration,
}

impl Default for PollConfig {
    fn default() -> Self {
        Self {
            fixed: None,
            initial: Duration::from_millis(250),
            factor: 1.5,
            max: Duration::from_secs(2),
            first_percentile: 0.1,
            history: 256,
            last_look: Duration::from_millis(250),
        }
    }
}

impl PollConfig {
    /// A fixed interval.
    pub fn fixed(interval: Duration) -> Self {
        Self {
            fixed: Some(interval),
            ..Self::default()
        }
    }
}

/// How long one insurer's recent applications took to be ready: a bounded
/// window of samples. Share it behind an `Arc`.
#[derive(Debug)]
pub struct AnswerTimes {
    samples: Mutex<VecDeque<Duration>>,
    capacity: usize,
}

impl AnswerTimes {
    /// An empty history of at most `capacity` samples (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            samples: Mutex::new(VecDeque::with_capacity(capacity.max(1))),
            capacity: capacity.max(1),
        }
    }

    /// Remembers one answer time, forgetting the oldest beyond capacity.
    pub fn record(&self, answer_time: Duration) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() == self.capacity {
            samples.pop_front();
        }
        samples.push_back(answer_time);
    }

    /// The `p` percentile (0..=1, nearest rank) of the remembered times;
    /// `None` while fewer than 8 are known.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() < 8 {
            return None;
        }
        let mut sorted: Vec<Duration> = samples.iter().copied().collect();
        drop(samples);
        sorted.sort_unstable();
        let rank = (p.clamp(0.0, 1.0) * (sorted.len() - 1) as f64).round() as usize;
        Some(sorted[rank])
    }
}

/// The schedule of one application's polls.
#[derive(Debug, Clone)]
pub struct PollPlan {
    config: PollConfig,
    next: Duration,
}

impl PollPlan {
    /// A plan under `config`.
    pub fn new(config: &PollConfig) -> Self {
        Self {
            config: config.clone(),
            next: config.initial,
        }
    }

    /// The wait before the first poll: near the learned answer time, never
    /// sooner than the insurer's hint on creation.
    pub fn first(&self, learned: &AnswerTimes, hint: Option<Duration>) -> Duration {
        let planned = match self.config.fixed {
            Some(interval) => interval,
            None => learned
                .percentile(self.config.first_percentile)
                .unwrap_or(self.config.initial),
        };
        planned.max(hint.unwrap_or_default())
    }

    /// The wait before the next poll after a `pending` answer (or a failed
    /// poll), never sooner than the insurer's hint; the interval grows.
    pub fn next(&mut self, hint: Option<Duration>) -> Duration {
        let planned = match self.config.fixed {
            Some(interval) => interval,
            None => {
                let wait = self.next;
                let factor = self.config.factor.max(1.0);
                self.next = self.next.mul_f64(factor).min(self.config.max);
                wait
            }
        };
        planned.max(hint.unwrap_or_default())
    }

    /// `wait` from `now`, shortened so that the poll lands `last_look`
    /// before `deadline` rather than after it (if that is still ahead).
    pub fn fit(&self, wait: Duration, now: Instant, deadline: Instant) -> Duration {
        let Some(last) = deadline.checked_sub(self.config.last_look) else {
            return wait;
        };
        if now + wait > last && last > now {
            last - now
        } else {
            wait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn intervals_grow_by_the_factor_up_to_the_max() {
        let mut plan = PollPlan::new(&PollConfig::default());
        let waits: Vec<u64> = (0..8).map(|_| plan.next(None).as_millis() as u64).collect();
        assert_eq!(waits, [250, 375, 562, 843, 1265, 1898, 2000, 2000]);
    }

    #[test]
    fn retry_after_is_never_undercut() {
        let mut plan = PollPlan::new(&PollConfig::default());
        assert_eq!(plan.next(Some(ms(1000))), ms(1000));
        // The schedule went on growing underneath.
        assert_eq!(plan.next(None), ms(375));
        let learned = AnswerTimes::new(16);
        assert_eq!(plan.first(&learned, Some(ms(3000))), ms(3000));
    }

    #[test]
    fn the_first_poll_follows_the_learned_answer_times() {
        let plan = PollPlan::new(&PollConfig::default());
        let learned = AnswerTimes::new(100);
        assert_eq!(plan.first(&learned, None), ms(250), "nothing learned yet");
        for n in 1..=100 {
            learned.record(ms(n * 100));
        }
        // The 10th percentile of 100 ms .. 10 s.
        assert_eq!(plan.first(&learned, None), ms(1100));
    }

    #[test]
    fn history_is_bounded_and_forgets_the_oldest() {
        let learned = AnswerTimes::new(10);
        for _ in 0..10 {
            learned.record(ms(10_000));
        }
        for _ in 0..10 {
            learned.record(ms(100));
        }
        assert_eq!(learned.percentile(1.0), Some(ms(100)));
    }

    #[test]
    fn fixed_mode_polls_at_its_interval() {
        let mut plan = PollPlan::new(&PollConfig::fixed(ms(1000)));
        let learned = AnswerTimes::new(16);
        for _ in 0..16 {
            learned.record(ms(100));
        }
        assert_eq!(plan.first(&learned, None), ms(1000));
        assert_eq!(plan.next(None), ms(1000));
        assert_eq!(plan.next(Some(ms(3000))), ms(3000));
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_poll_lands_before_the_deadline() {
        let plan = PollPlan::new(&PollConfig::default());
        let now = Instant::now();
        let deadline = now + ms(1000);
        assert_eq!(plan.fit(ms(2000), now, deadline), ms(750));
        assert_eq!(plan.fit(ms(500), now, deadline), ms(500));
        // Already within the last look: nothing to shorten.
        assert_eq!(plan.fit(ms(2000), now + ms(900), deadline), ms(2000));
    }
}
