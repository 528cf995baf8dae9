//! When to poll an insurer for a quote: deadline-aware, learned from the
//! insurer's recent answers, instead of a fixed interval. The aim is a low
//! detection lag (quote ready at the insurer -> seen here) with few polls.
//!
//! Each insurer keeps its recent answer times ([`AnswerTimes`]: from the
//! application to the quote being ready, by the quote's `ready_at` when the
//! insurer gives one). For one application ([`PollPlan`]):
//!
//! - **First poll** near the insurer's typical answer time: at a low
//!   percentile (`first_percentile`, 5 % by default) of the learned times.
//! - **Then** the interval at `t` since the application is
//!   `spacing x sqrt(S(t) / f(t))`, where `S` is the share of answers still
//!   to come after `t` and `f` their density there. This is the interval
//!   that minimises expected lag plus a price per poll: short where answers
//!   are dense (around the typical time), long where they are rare (early,
//!   or deep in the tail). It stays within `min_interval..=max` (100 ms to
//!   1 s by default), so the lag of any answer is at most about `max`.
//! - **Late in the minute lag weighs less**: a price seen at 30 s instead
//!   of 28 s matters less than one at 3 s instead of 1 s. Past
//!   `relative_after` (8 s by default) lag is weighed relative to the time
//!   already waited, so intervals and their ceiling grow by
//!   `sqrt(t / relative_after)`: a slow insurer (answers around 20-55 s) is
//!   polled every 1-2.7 s rather than every second, spending its capacity
//!   on POSTs and answers rather than on polls that find nothing.
//! - **Past every known answer time**, the interval goes on growing by
//!   `factor` from the last one; while fewer than 8 answers are known, it
//!   grows from `initial` (250 ms x 1.5 up to the ceiling by default).
//! - **When the insurer's concurrency cap is the bottleneck** (calls wait
//!   for slots), a poll costs capacity that another application needs: its
//!   price rises to `price = 1 + pressure_weight x waiting / cap` times the
//!   calm one. Intervals are optimal for `lag + price x polls`, so they
//!   stretch by `sqrt(price)` (and so does their ceiling, `max`), and the
//!   first poll moves up the learned distribution, to the percentile
//!   `first_percentile x price` (at most the median): under a binding cap
//!   each quote costs few calls, which is what lets more quotes through
//!   (quotes per second = calls per second / calls per quote). Which call
//!   goes first is the [`ConcurrencyLimit`](super::ConcurrencyLimit)'s
//!   business: the application nearest its deadline.
//! - **Once the buyer has a price** from another insurer, the request's
//!   other quotes add choice, not the first price: a poll's price is
//!   multiplied by `priced_price` (100 by default), so intervals stretch and
//!   the first poll may move as far as the `priced_ceiling` percentile (the
//!   90th); a poll planned before the price came is held until then
//!   ([`PollPlan::hold`]). Until then every insurer races for the first
//!   price on the lag-minimising schedule. In the slot queue too the
//!   engine serves new applications and polls for buyers with no price
//!   before polls for buyers who have one.
//! - **Only the quickest insurer races** (`racers`, 1 by default): the one
//!   whose quotes' learned median answer time is lowest (a quick decline
//!   gives no price), among those that quote at least half the
//!   applications they answer, poll on the lag-minimising
//!   schedule; the others poll as if the buyer had a price from the start,
//!   for as long as a racer is still waiting for its answer. Should every
//!   racer answer without a quote (a decline, an error, the deadline), or
//!   be overdue (the 95th percentile of its quotes' learned answer times
//!   past since the fan-out began, `racer_patience`), the others race from
//!   then on. An insurer with too few answers to rank
//!   always races, and so does one whose calls queue for its slots when
//!   every ranked insurer's do (a burst), so that each buyer gets a first
//!   price from whichever insurer takes them early in its order; while a
//!   calm insurer races, a busy one does not (racing at the lone price, a
//!   slow insurer at its cap stays there).
//! - **A racer with others standing by** pays `racer_price` (50 by
//!   default) per poll while the buyer has no price: the others poll from
//!   their 90th percentile and race once it is overdue, so its lag is not
//!   worth a lone insurer's calls. Its first poll comes at the median of its
//!   answer times, its intervals about seven times longer. At the fleet's
//!   steady peak the racer was at its cap, and the first price came no
//!   later for it (docs/benchmarks.md). An insurer asked alone (or backed
//!   only by insurers that seldom quote), unknown or busy polls at the lone
//!   price, and so does a racer from the moment the last insurer standing
//!   by has answered (it is woken, and its wait cut to a lone insurer's).
//! - A plan made **before anything was learned** (the first seconds after a
//!   start, a burst), **while the window was still filling**, or outlived
//!   by its application (older than every answer it knew) takes up what is
//!   learned since ([`PollPlan::relearn`]). A starting pod begins from the
//!   answer times pods before it kept in the state store
//!   (`PollConfig::learned_keep_every`).
//! - A **Retry-After** from the insurer is always honoured: the next poll is
//!   never sooner.
//! - Near the **deadline** the wait is shortened so one last poll lands
//!   `last_look` before it, rather than the deadline passing mid-wait; a
//!   poll that would leave less than its own wait before that last look is
//!   merged into it while no call waits for the insurer's slots (two polls
//!   a second apart near the deadline find what one finds).
//!
//! `fixed: Some(interval)` restores a fixed interval (for comparison in the
//! scheduler benchmark, or for an insurer that asks for it).
//!
//! The scheduler benchmark (`benches/poll_scheduler.rs`, results in
//! docs/benchmarks.md) measures lag and polls per quote against fixed 1 s
//! polling.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
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
    /// The longest interval. Default 1 s.
    pub max: Duration,
    /// Percentile of recent answer times at which the first poll comes
    /// (0..=1). Default 0.05.
    pub first_percentile: f64,
    /// Answer times remembered per insurer. Default 256.
    pub history: usize,
    /// How often a pod keeps what it learned of every insurer's answer
    /// times in the state store (replacing what any pod kept before), so
    /// that a pod starting later (a restart, a rollout, a scale-up) polls
    /// on them from its first request rather than learning from nothing:
    /// a fresh pod's first minute costs several calls per quote more.
    /// Kept on shutdown too. An insurer's window is written only with
    /// answers new since the pod last wrote or restored it, and a window
    /// learned from nothing only once a whole `insurer_deadline` has
    /// passed since the pod's first request (before that it holds only
    /// the quick answers). Zero: nothing is kept, and a starting pod
    /// learns from nothing. Default 30 s.
    pub learned_keep_every: Duration,
    /// How long kept answer times stay in the state store after they were
    /// last kept. A pod keeps them again only with answers new since it
    /// last kept (or restored) them, so once no pod has seen an answer
    /// from an insurer for this long, a pod starts from nothing for it.
    /// Default 1 h.
    pub learned_ttl: Duration,
    /// Scale of the learned intervals (`spacing x sqrt(S/f)`): lower polls
    /// more often for less lag. Default 0.15.
    pub spacing: f64,
    /// The shortest learned interval. Default 100 ms.
    pub min_interval: Duration,
    /// How much dearer a poll gets per call waiting for a slot per slot of
    /// the cap (`price = 1 + pressure_weight x waiting / cap`): intervals
    /// and their ceiling stretch by `sqrt(price)`, the first poll moves to
    /// the percentile `first_percentile x price` (at most the median).
    /// Default 3 (docs/benchmarks.md: the scheduler benchmark).
    pub pressure_weight: f64,
    /// How long before the deadline the last poll lands. Default 250 ms.
    pub last_look: Duration,
    /// From this long after the application lag is weighed relative to the
    /// time already waited: intervals and their ceiling (`max`) grow by
    /// `sqrt(t / relative_after)`. Default 8 s (twice the typical insurer's
    /// median answer time, so its polls are barely touched).
    pub relative_after: Duration,
    /// How much dearer a poll is once the buyer has a price from another
    /// insurer: from then on the request's other quotes add choice, not
    /// the first price, so their lag weighs less than the partner's
    /// capacity (the price multiplies the pressure's). Default 100.
    pub priced_price: f64,
    /// The highest percentile of the learned answer times the first poll
    /// moves to once the buyer has a price (0.5, the median, before).
    /// Default 0.9.
    pub priced_ceiling: f64,
    /// How many insurers race for a request's first price: the quickest
    /// by the learned median answer time of their quotes, among those that
    /// quote at least half the time; the others poll as if the buyer had a
    /// price while a racer still waits for its answer. An insurer with too
    /// few answers known races too, and so does one whose calls queue for
    /// its slots when no ranked insurer is calm (a burst). 0: every insurer
    /// races. Default 1.
    pub racers: usize,
    /// How long the others wait on the racers: until the percentile
    /// `racer_patience` (0..=1) of each racer's learned quote times has
    /// passed since the fan-out began (for a request resumed from another
    /// pod, since it was accepted) with no price; from then on every
    /// insurer races, so a racer that slows down without failing delays
    /// the first price only this long. 1: until every racer has answered.
    /// Default 0.95.
    pub racer_patience: f64,
    /// How much dearer a racer's poll is than a lone insurer's while other
    /// insurers stand by for the request (they poll from their
    /// `priced_ceiling` percentile, and race once it is past its
    /// patience): a racer picked by its rank need not buy the last few
    /// hundred milliseconds of the first price's lag with the partner's
    /// capacity. From 10 on its first poll comes at the median of its
    /// answer times; at 50 its intervals are about seven times the lone
    /// insurer's.
    /// An insurer racing alone (the only one asked, or backed only by
    /// insurers that seldom quote), because nothing is known of it, or
    /// because its calls queue for slots (a burst) polls at the lone price;
    /// a racer does from the moment every insurer standing by has answered.
    /// The trade: where the racer is not at its cap, the first price comes
    /// later, about at the racer's median answer time rather than its 5th
    /// percentile; at the steady peak, where it was at its cap, it came no
    /// later. 1: as a lone insurer. Default 50 (docs/benchmarks.md: the
    /// steady peak, 2.48 calls per quote on the real stack with the first
    /// price p50 2.8 s; 10 until 2026-12-07).
    pub racer_price: f64,
}

impl Default for PollConfig {
    fn default() -> Self {
        Self {
            fixed: None,
            initial: Duration::from_millis(250),
            factor: 1.5,
            max: Duration::from_secs(1),
            first_percentile: 0.05,
            history: 256,
            learned_keep_every: Duration::from_secs(30),
            learned_ttl: Duration::from_secs(3600),
            spacing: 0.15,
            min_interval: Duration::from_millis(100),
            pressure_weight: 3.0,
            last_look: Duration::from_millis(250),
            relative_after: Duration::from_secs(8),
            priced_price: 100.0,
            priced_ceiling: 0.9,
            racers: 1,
            racer_patience: 0.95,
            racer_price: 50.0,
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
    state: Mutex<Samples>,
    capacity: usize,
}

#[derive(Debug)]
struct Samples {
    recent: VecDeque<Duration>,
    /// Whether each of `recent` was a quote (rather than a decline or
    /// another final answer).
    quoted: VecDeque<bool>,
    /// `recent`, sorted, as of `stale` records ago.
    sorted: Arc<Vec<Duration>>,
    stale: usize,
    /// Started from kept samples ([`AnswerTimes::seed`]).
    seeded: bool,
    /// Answers recorded so far (seeded ones not counted).
    recorded: u64,
    /// The most of `recorded` a keep has saved ([`AnswerTimes::kept`]).
    kept_upto: u64,
}

/// An insurer's window as a state store keeps it, with answers new since
/// it was last kept ([`AnswerTimes::unkept`]).
#[derive(Debug, Clone)]
pub struct Unkept {
    /// The remembered answers, oldest first (milliseconds, saturating).
    pub samples: Vec<osago_core::ports::AnswerSample>,
    /// Answers recorded so far: pass it to [`AnswerTimes::kept`] once
    /// `samples` are saved.
    pub recorded: u64,
    /// The window started from kept samples rather than from nothing.
    pub seeded: bool,
}

/// Fewer samples than this: nothing is learned yet.
const MIN_SAMPLES: usize = 8;

impl AnswerTimes {
    /// An empty history of at most `capacity` samples (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(Samples {
                recent: VecDeque::with_capacity(capacity.max(1)),
                quoted: VecDeque::with_capacity(capacity.max(1)),
                sorted: Arc::default(),
                stale: 0,
                seeded: false,
                recorded: 0,
                kept_upto: 0,
            }),
            capacity: capacity.max(1),
        }
    }

    /// The window, if answers were recorded since it was last kept (or
    /// ever, if never kept); `None`: keeping it again would only renew
    /// what is kept (a window nothing refreshes expires with its TTL).
    pub fn unkept(&self) -> Option<Unkept> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (state.recorded > state.kept_upto).then(|| Unkept {
            samples: state
                .recent
                .iter()
                .zip(&state.quoted)
                .map(|(time, quoted)| osago_core::ports::AnswerSample {
                    millis: u32::try_from(time.as_millis()).unwrap_or(u32::MAX),
                    quoted: *quoted,
                })
                .collect(),
            recorded: state.recorded,
            seeded: state.seeded,
        })
    }

    /// The window read with `recorded` ([`Unkept::recorded`]) was saved.
    /// Overlapping keeps are harmless: the most seen wins.
    pub fn kept(&self, recorded: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.kept_upto = state.kept_upto.max(recorded);
    }

    /// Starts from `samples` (oldest first; the newest `capacity` of them)
    /// if nothing is remembered yet; `false`, changing nothing, otherwise.
    pub fn seed(&self, samples: &[osago_core::ports::AnswerSample]) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.recent.is_empty() {
            return false;
        }
        let newest = &samples[samples.len().saturating_sub(self.capacity)..];
        for sample in newest {
            state
                .recent
                .push_back(Duration::from_millis(u64::from(sample.millis)));
            state.quoted.push_back(sample.quoted);
        }
        state.stale += newest.len();
        state.seeded = true;
        true
    }

    /// Remembers the answer time of one quote, forgetting the oldest
    /// answer beyond capacity.
    pub fn record(&self, answer_time: Duration) {
        self.record_answer(answer_time, true);
    }

    /// Remembers one final answer: its time, and whether it was a quote.
    pub fn record_answer(&self, answer_time: Duration, quoted: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.recent.len() == self.capacity {
            state.recent.pop_front();
            state.quoted.pop_front();
        }
        state.recent.push_back(answer_time);
        state.quoted.push_back(quoted);
        state.stale += 1;
        state.recorded += 1;
    }

    /// How this insurer ranks in the race for a first price: the median
    /// answer time of its quotes (a quick decline gives no price, so it
    /// does not make an insurer quicker), if it quotes at least half of
    /// what it answers; `Unknown` while fewer than 8 answers are known (it
    /// races), `SeldomQuotes` when it mostly declines (it never races).
    pub fn race_rank(&self) -> RaceRank {
        let (mut quotes, answers): (Vec<Duration>, usize) = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.recent.len() < MIN_SAMPLES {
                return RaceRank::Unknown;
            }
            let quotes = state
                .recent
                .iter()
                .zip(&state.quoted)
                .filter(|(_, quoted)| **quoted)
                .map(|(time, _)| *time)
                .collect();
            (quotes, state.recent.len())
        };
        // At least 8 answers: no quote at all is `SeldomQuotes` here.
        if quotes.len() * 2 < answers {
            return RaceRank::SeldomQuotes;
        }
        // Nearest rank, as `Profile::percentile`.
        let middle = ((quotes.len() - 1) as f64 * 0.5).round() as usize;
        RaceRank::Median(*quotes.select_nth_unstable(middle).1)
    }

    /// The `p` percentile (0..=1, nearest rank) of the answer times of
    /// the remembered quotes (declines and other answers left out); `None`
    /// while fewer than 8 answers are known, or none was a quote.
    pub fn quote_percentile(&self, p: f64) -> Option<Duration> {
        let mut quotes: Vec<Duration> = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.recent.len() < MIN_SAMPLES {
                return None;
            }
            state
                .recent
                .iter()
                .zip(&state.quoted)
                .filter(|(_, quoted)| **quoted)
                .map(|(time, _)| *time)
                .collect()
        };
        if quotes.is_empty() {
            return None;
        }
        let rank = (p.clamp(0.0, 1.0) * (quotes.len() - 1) as f64).round() as usize;
        Some(*quotes.select_nth_unstable(rank).1)
    }

    /// The learned distribution: the samples, sorted (re-sorted once 1/16
    /// of the window is new), or `None` while fewer than 8 are known.
    pub fn profile(&self) -> Option<Profile> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.recent.len() < MIN_SAMPLES {
            return None;
        }
        if state.sorted.len() < MIN_SAMPLES || state.stale * 16 >= self.capacity {
            let mut sorted: Vec<Duration> = state.recent.iter().copied().collect();
            sorted.sort_unstable();
            state.sorted = Arc::new(sorted);
            state.stale = 0;
        }
        Some(Profile {
            sorted: state.sorted.clone(),
        })
    }

    /// The `p` percentile (0..=1, nearest rank) of the remembered times;
    /// `None` while fewer than 8 are known.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        self.profile().map(|profile| profile.percentile(p))
    }
}

/// Where an insurer stands in the race for a request's first price
/// ([`AnswerTimes::race_rank`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaceRank {
    /// Too few answers known to rank it: it races.
    Unknown,
    /// It quotes at least half the time; this is its quotes' median
    /// answer time.
    Median(Duration),
    /// It declines (or otherwise answers without a quote) more often than
    /// not: it does not race.
    SeldomQuotes,
    /// Calls queue for its slots: when every ranked insurer is busy (a
    /// burst) it races, as every insurer does then, so that each buyer
    /// gets a first price from whichever insurer takes them early in its
    /// order; while a calm insurer races, it does not.
    Busy,
}

/// Which of `ranks` (one per insurer, in order) race for a request's first
/// price under `racers` ([`PollConfig::racers`]): every unranked insurer,
/// the `racers` ranked quickest, and every busy one when no insurer is
/// both ranked and calm. Every insurer when `racers` is 0, or when none
/// would race otherwise.
pub fn racers(ranks: &[RaceRank], racers: usize) -> Vec<bool> {
    if racers == 0 {
        return vec![true; ranks.len()];
    }
    let mut quickest: Vec<(Duration, usize)> = ranks
        .iter()
        .enumerate()
        .filter_map(|(i, rank)| match rank {
            RaceRank::Median(median) => Some((*median, i)),
            _ => None,
        })
        .collect();
    quickest.sort_unstable();
    // A busy insurer races only when every ranked one is busy too (a
    // burst): while a calm one races, a busy one racing would only spend
    // the slots it lacks (at the steady peak, a slow insurer at its cap
    // racing at the lone price stayed busy and lost most of its quotes:
    // docs/benchmarks.md, the fleet).
    let calm_ranked = !quickest.is_empty();
    let mut race: Vec<bool> = ranks
        .iter()
        .map(|r| match r {
            RaceRank::Unknown => true,
            RaceRank::Busy => !calm_ranked,
            _ => false,
        })
        .collect();
    for (_, i) in quickest.into_iter().take(racers) {
        race[i] = true;
    }
    if !race.contains(&true) {
        race.fill(true);
    }
    race
}

/// A learned answer-time distribution (sorted samples).
#[derive(Debug, Clone)]
pub struct Profile {
    sorted: Arc<Vec<Duration>>,
}

impl Profile {
    /// Samples it was made from.
    fn len(&self) -> usize {
        self.sorted.len()
    }

    /// The longest sample.
    fn last(&self) -> Duration {
        self.sorted.last().copied().unwrap_or_default()
    }

    /// The `p` percentile (0..=1, nearest rank).
    pub fn percentile(&self, p: f64) -> Duration {
        let rank = (p.clamp(0.0, 1.0) * (self.sorted.len() - 1) as f64).round() as usize;
        self.sorted[rank]
    }

    /// `sqrt(S(t) / f(t))` at `t` after the application, in seconds: the
    /// survival function over the density, estimated from the samples
    /// around `t` (an eighth of them); `None` past the last sample.
    fn spacing(&self, t: Duration) -> Option<f64> {
        let n = self.sorted.len();
        let j = self.sorted.partition_point(|s| *s <= t);
        if j >= n {
            return None;
        }
        let m = (n / 8).max(4).min(n - 1);
        let lo = j.saturating_sub(m / 2).min(n - 1 - m);
        let hi = lo + m;
        let spread = (self.sorted[hi] - self.sorted[lo]).as_secs_f64().max(0.001);
        let survival = (n - j) as f64 / n as f64;
        let density = m as f64 / (n as f64 * spread);
        Some((survival / density).sqrt())
    }
}

/// The schedule of one application's polls.
#[derive(Debug, Clone)]
pub struct PollPlan {
    config: PollConfig,
    profile: Option<Profile>,
    /// The growing interval, while nothing is learned.
    next: Duration,
    /// When the application was created.
    created: Instant,
    /// The buyer has a price from another insurer.
    priced: bool,
    /// A racer with other insurers standing by ([`PollConfig::racer_price`]).
    backed: bool,
}

impl PollPlan {
    /// A plan under `config` for an application created at `created`, from
    /// the insurer's learned answer times.
    pub fn new(config: &PollConfig, learned: &AnswerTimes, created: Instant) -> Self {
        Self {
            config: config.clone(),
            profile: learned.profile(),
            next: config.initial,
            created,
            priced: false,
            backed: false,
        }
    }

    /// Marks the plan as a racer's with other insurers standing by for the
    /// request: until the buyer has a price its polls cost `racer_price`
    /// times a lone insurer's.
    pub fn backed(&mut self, backed: bool) {
        self.backed = backed;
    }

    /// Marks that the buyer has a price from another insurer: polls get
    /// `priced_price` times dearer, and the first may come as late as the
    /// `priced_ceiling` percentile.
    pub fn priced(&mut self, priced: bool) {
        self.priced = priced;
    }

    /// Takes up what the insurer has taught since the plan was made (at
    /// `now`), where the plan's own knowledge was thin:
    ///
    /// - made before anything was learned (an application created in the
    ///   first seconds after a start, or of a burst): otherwise it would
    ///   poll on the unlearned schedule for its whole minute, however much
    ///   is known by then;
    /// - made while the window was still filling (the first minute after a
    ///   start): those samples are the answers quick enough to have come
    ///   already, so the slow ones' times are missing and the plan would
    ///   poll a late application as if it were overdue;
    /// - outlived: the application is older than every answer the plan
    ///   knew, and newer answers reach further.
    ///
    /// A plan made from a full window keeps its own while the application
    /// is within it (the cheap check first: no lock then).
    pub fn relearn(&mut self, learned: &AnswerTimes, now: Instant) {
        if self.config.fixed.is_some() {
            return;
        }
        let elapsed = now.saturating_duration_since(self.created);
        let (samples, last) = match &self.profile {
            None => (0, Duration::ZERO),
            Some(profile) => (profile.len(), profile.last()),
        };
        if samples >= self.config.history && elapsed <= last {
            return;
        }
        if let Some(profile) = learned.profile() {
            if profile.len() > samples || (elapsed > last && profile.last() > last) {
                self.profile = Some(profile);
            }
        }
    }

    /// The percentile of the learned answer times at which the first poll
    /// comes at `pressure`.
    fn first_point(&self, profile: &Profile, pressure: f64) -> Duration {
        let ceiling = if self.priced {
            self.config.priced_ceiling.clamp(0.5, 1.0)
        } else {
            0.5
        };
        let p = (self.config.first_percentile * self.price(pressure))
            .min(ceiling)
            .max(self.config.first_percentile);
        profile.percentile(p)
    }

    /// The price of a poll relative to a calm insurer's, at `pressure`
    /// (calls waiting for a slot per slot of the cap).
    fn price(&self, pressure: f64) -> f64 {
        let pressure = if pressure.is_finite() {
            pressure.max(0.0)
        } else {
            0.0
        };
        let price = 1.0 + self.config.pressure_weight.max(0.0) * pressure;
        if self.priced {
            price * self.config.priced_price.max(1.0)
        } else if self.backed {
            price * self.config.racer_price.max(1.0)
        } else {
            price
        }
    }

    /// The wait before the first poll: at a low percentile of the learned
    /// answer times (`first_percentile`, raised by the price of a poll at
    /// `pressure`, at most the median; `initial` while nothing is learned),
    /// never sooner than the insurer's hint on creation.
    pub fn first(&self, hint: Option<Duration>, pressure: f64) -> Duration {
        let planned = match (&self.config.fixed, &self.profile) {
            (Some(interval), _) => *interval,
            (None, Some(profile)) => self.first_point(profile, pressure),
            (None, None) => self.config.initial,
        };
        planned.max(hint.unwrap_or_default())
    }

    /// How much longer than early on intervals get `elapsed` after the
    /// application: `sqrt(elapsed / relative_after)`, at least 1.
    fn patience(&self, elapsed: Duration) -> f64 {
        let reference = self.config.relative_after.as_secs_f64();
        if reference <= 0.0 {
            return 1.0;
        }
        (elapsed.as_secs_f64() / reference).max(1.0).sqrt()
    }

    /// The wait from `now` before the next poll after a `pending` answer
    /// (or a failed poll), never sooner than the insurer's hint.
    ///
    /// Learned: `spacing x sqrt(S(t) / f(t))` at `t` since the application,
    /// with `S` the share of answers still to come and `f` their density
    /// (the interval that minimises lag plus polls: short where answers are
    /// dense, long where they are rare), within `min_interval..=max`; past
    /// every known answer time, growing by `factor` from the last interval.
    /// Not learned: `initial`, growing by `factor` up to `max`. Both the
    /// interval and `max` stretch by `sqrt(price)` under pressure and by
    /// `sqrt(t / relative_after)` late in the minute.
    pub fn next(&mut self, now: Instant, hint: Option<Duration>, pressure: f64) -> Duration {
        let elapsed = now.saturating_duration_since(self.created);
        let stretch = self.price(pressure).sqrt() * self.patience(elapsed);
        let ceiling = self
            .config
            .max
            .mul_f64(stretch)
            .max(self.config.min_interval);
        let factor = self.config.factor.max(1.0);
        let planned = match (&self.config.fixed, &self.profile) {
            (Some(interval), _) => *interval,
            (None, Some(profile)) => {
                let wait = match profile.spacing(elapsed) {
                    Some(spacing) => {
                        let wait = Duration::from_secs_f64(spacing * self.config.spacing * stretch)
                            .clamp(self.config.min_interval, ceiling);
                        // Should the answers run out, growth goes on from here.
                        self.next = wait;
                        wait
                    }
                    None => {
                        self.next = self.next.mul_f64(factor).min(ceiling);
                        self.next
                    }
                };
                // Never before the first poll's point at today's price: a
                // plan that learned late, or polls that got dearer, wait
                // for where answers begin.
                wait.max(self.first_point(profile, pressure).saturating_sub(elapsed))
            }
            (None, None) => {
                let wait = self.next.min(ceiling);
                self.next = self.next.mul_f64(factor).min(ceiling);
                wait
            }
        };
        planned.max(hint.unwrap_or_default())
    }

    /// How much longer to hold a poll that is due at `now`: until the first
    /// poll's point at today's price (which moves up once the buyer has a
    /// price, or as polls get dearer), but never past the last look before
    /// `deadline`. Zero when the poll should go now.
    pub fn hold(&self, now: Instant, pressure: f64, deadline: Instant) -> Duration {
        let (None, Some(profile)) = (&self.config.fixed, &self.profile) else {
            return Duration::ZERO;
        };
        let elapsed = now.saturating_duration_since(self.created);
        let last = deadline
            .checked_sub(self.config.last_look)
            .unwrap_or(deadline);
        self.first_point(profile, pressure)
            .saturating_sub(elapsed)
            .min(last.saturating_duration_since(now))
    }

    /// `wait` from `now`, shortened so that the poll lands `last_look`
    /// before `deadline` rather than after it (if that is still ahead);
    /// on the adaptive schedule, with no call waiting for the insurer's
    /// slots (`pressure` 0), a poll that would leave less than its own wait
    /// before the last look is that last look: one poll instead of two, a
    /// quote ready meanwhile seen less than the wait later. When calls
    /// queue, the last look might not get a slot in time, and the earlier
    /// poll stays.
    pub fn fit(&self, wait: Duration, now: Instant, deadline: Instant, pressure: f64) -> Duration {
        let Some(last) = deadline.checked_sub(self.config.last_look) else {
            return wait;
        };
        if last <= now {
            return wait;
        }
        let at = now + wait;
        let merge = self.config.fixed.is_none() && pressure <= 0.0 && last - at < wait;
        if at > last || merge {
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

    fn plan(config: &PollConfig, learned: &AnswerTimes) -> PollPlan {
        PollPlan::new(config, learned, Instant::now())
    }

    /// 200 answer times: most between 3 and 5 s, a few early and late.
    fn learned() -> AnswerTimes {
        let learned = AnswerTimes::new(256);
        for i in 0..180 {
            learned.record(ms(3_000 + i * 2_000 / 180));
        }
        for i in 0..10 {
            learned.record(ms(500 + i * 200));
            learned.record(ms(8_000 + i * 1_000));
        }
        learned
    }

    #[test]
    fn unlearned_intervals_grow_by_the_factor_up_to_the_max() {
        let mut plan = plan(&PollConfig::default(), &AnswerTimes::new(16));
        let now = Instant::now();
        let waits: Vec<u64> = (0..8)
            .map(|_| plan.next(now, None, 0.0).as_millis() as u64)
            .collect();
        assert_eq!(waits, [250, 375, 562, 843, 1000, 1000, 1000, 1000]);
    }

    #[tokio::test(start_paused = true)]
    async fn learned_intervals_are_short_where_answers_are_dense() {
        let learned = learned();
        let created = Instant::now();
        let mut plan = PollPlan::new(&PollConfig::default(), &learned, created);
        let at = |secs: f64| created + Duration::from_secs_f64(secs);
        let dense = plan.next(at(4.0), None, 0.0);
        let early = plan.next(at(0.2), None, 0.0);
        let tail = plan.next(at(12.0), None, 0.0);
        assert!(
            dense < early && dense < tail,
            "{dense:?} {early:?} {tail:?}"
        );
        assert!(dense >= ms(100) && dense <= ms(300), "{dense:?}");
        assert!(early >= ms(600), "{early:?}");
        // Past every known answer: growing by the factor from the last
        // interval, up to the ceiling of 1 s x sqrt(30 s / 8 s).
        let ceiling = ms(1000).mul_f64((30.0f64 / 8.0).sqrt());
        let first_past = plan.next(at(30.0), None, 0.0);
        assert_eq!(first_past, tail.mul_f64(1.5).min(ceiling));
        assert_eq!(
            plan.next(at(30.0), None, 0.0),
            first_past.mul_f64(1.5).min(ceiling)
        );
        for _ in 0..10 {
            plan.next(at(30.0), None, 0.0);
        }
        assert_eq!(plan.next(at(30.0), None, 0.0), ceiling);
    }

    #[tokio::test(start_paused = true)]
    async fn late_in_the_minute_intervals_grow_with_the_time_waited() {
        // Answers spread evenly over 1..60 s: the same density everywhere.
        let learned = AnswerTimes::new(256);
        for i in 0..=236 {
            learned.record(ms(1_000 + i * 250));
        }
        let created = Instant::now();
        let config = PollConfig {
            max: ms(60_000),
            ..PollConfig::default()
        };
        let mut plan = PollPlan::new(&config, &learned, created);
        let at = |secs: u64| created + Duration::from_secs(secs);
        let even = PollConfig {
            relative_after: Duration::ZERO,
            ..config.clone()
        };
        let mut flat = PollPlan::new(&even, &learned, created);
        // Before `relative_after` both agree.
        assert_eq!(plan.next(at(6), None, 0.0), flat.next(at(6), None, 0.0));
        // At 32 s (4 x 8 s) twice the interval the lag-only schedule gives.
        let (relative, absolute) = (plan.next(at(32), None, 0.0), flat.next(at(32), None, 0.0));
        let ratio = relative.as_secs_f64() / absolute.as_secs_f64();
        assert!((ratio - 2.0).abs() < 0.01, "{relative:?} / {absolute:?}");
        // The ceiling grows too: 1 s x sqrt(32 s / 8 s) = 2 s at 32 s.
        let mut capped = PollPlan::new(&PollConfig::default(), &AnswerTimes::new(8), created);
        for _ in 0..20 {
            capped.next(at(32), None, 0.0);
        }
        assert_eq!(capped.next(at(32), None, 0.0), ms(2_000));
        assert_eq!(capped.next(at(1), None, 0.0), ms(1_000));
    }

    #[tokio::test(start_paused = true)]
    async fn learned_intervals_stretch_when_calls_wait_for_slots() {
        let learned = learned();
        let created = Instant::now();
        let mut plan = PollPlan::new(&PollConfig::default(), &learned, created);
        let at = created + ms(4_000);
        let calm = plan.next(at, None, 0.0);
        let pressed = plan.next(at, None, 10.0);
        assert!(pressed > calm, "{calm:?} -> {pressed:?}");
        // The ceiling stretches with the price too, to max x sqrt(1 + 3000).
        let dear = plan.next(at, None, 1_000.0);
        assert!(
            dear > ms(1000) && dear <= ms(1000).mul_f64(3001f64.sqrt()),
            "{dear:?}"
        );
        assert_eq!(
            plan.next(at + ms(60_000), None, 0.0),
            dear.mul_f64(1.5).min(ms(1000).mul_f64(8f64.sqrt())),
            "past every answer: growing from the last interval"
        );
    }

    #[test]
    fn retry_after_is_never_undercut() {
        let learned = learned();
        let mut plan = plan(&PollConfig::default(), &learned);
        let now = Instant::now();
        assert_eq!(plan.next(now, Some(ms(3000)), 0.0), ms(3000));
        assert_eq!(plan.first(Some(ms(3000)), 0.0), ms(3000));
        let mut unlearned = PollPlan::new(&PollConfig::default(), &AnswerTimes::new(8), now);
        assert_eq!(unlearned.next(now, Some(ms(1000)), 0.0), ms(1000));
        // The schedule went on growing underneath.
        assert_eq!(unlearned.next(now, None, 0.0), ms(375));
    }

    #[test]
    fn the_first_poll_follows_the_learned_answer_times() {
        let learned = AnswerTimes::new(100);
        assert_eq!(
            plan(&PollConfig::default(), &learned).first(None, 0.0),
            ms(250),
            "nothing learned yet"
        );
        for n in 1..=100 {
            learned.record(ms(n * 100));
        }
        // The 5th percentile of 100 ms .. 10 s.
        let plan = plan(&PollConfig::default(), &learned);
        assert_eq!(plan.first(None, 0.0), ms(600));
        // Polls dear (1 call waiting per slot: price 1 + 3 x 1 = 4): the 20th.
        assert_eq!(plan.first(None, 1.0), ms(2100));
        // Never past the median.
        assert_eq!(plan.first(None, 1_000.0), ms(5100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_racer_with_others_standing_by_polls_from_the_median_and_less_often() {
        let learned = AnswerTimes::new(100);
        for n in 1..=100 {
            learned.record(ms(n * 100));
        }
        let created = Instant::now();
        let mut lone = PollPlan::new(&PollConfig::default(), &learned, created);
        let mut backed = lone.clone();
        backed.backed(true);
        // 5 % x 10 is the median, the ceiling while the buyer has no price.
        assert_eq!(lone.first(None, 0.0), ms(600));
        assert_eq!(backed.first(None, 0.0), ms(5_100));
        // Intervals stretch by sqrt(10).
        let at = created + ms(5_100);
        let (calm, dear) = (lone.next(at, None, 0.0), backed.next(at, None, 0.0));
        assert!(dear > calm.mul_f64(3.0), "{calm:?} -> {dear:?}");
        // The buyer's price prices it as everyone else's.
        let mut priced = lone.clone();
        priced.priced(true);
        backed.priced(true);
        assert_eq!(backed.first(None, 0.0), priced.first(None, 0.0));
        // At 1, as a lone insurer.
        let mut at_one = PollPlan::new(
            &PollConfig {
                racer_price: 1.0,
                ..PollConfig::default()
            },
            &learned,
            created,
        );
        at_one.backed(true);
        assert_eq!(at_one.first(None, 0.0), ms(600));
    }

    #[tokio::test(start_paused = true)]
    async fn a_plan_made_before_anything_was_learned_takes_up_what_is_learned_since() {
        // A burst on a fresh engine: the application is made before any
        // answer is known; the insurer's answers then come at 20-30 s.
        let learned = AnswerTimes::new(256);
        let created = Instant::now();
        let mut plan = PollPlan::new(&PollConfig::default(), &learned, created);
        assert_eq!(plan.first(None, 0.0), ms(250), "nothing learned yet");
        assert_eq!(plan.next(created + ms(250), None, 0.0), ms(250));
        for i in 0..100 {
            learned.record(ms(20_000 + i * 100));
        }
        // Unchanged until it relearns: it would poll every second or so all
        // minute, though no answer comes before 20 s.
        assert!(plan.clone().next(created + ms(600), None, 0.0) <= ms(1000));
        let now = created + ms(600);
        plan.relearn(&learned, now);
        let wait = plan.next(now, None, 0.0);
        // The next poll comes at the 5th percentile of what is learned.
        assert_eq!(now + wait, created + learned.percentile(0.05).unwrap());
        // A plan that learned from a full window keeps its own while the
        // application is within it.
        let config = PollConfig {
            history: 100,
            ..PollConfig::default()
        };
        let mut full = PollPlan::new(&config, &learned, created);
        let other = AnswerTimes::new(100);
        for _ in 0..100 {
            other.record(ms(1_000));
        }
        let at = created + ms(25_000);
        let before = full.clone().next(at, None, 0.0);
        full.relearn(&other, at);
        assert_eq!(full.next(at, None, 0.0), before);
    }

    #[tokio::test(start_paused = true)]
    async fn a_plan_made_while_the_window_filled_takes_up_the_answers_that_came_later() {
        // The first seconds after a start: only the quick answers (1-5 s)
        // have come; the insurer's slow ones (20-30 s) are still out.
        let learned = AnswerTimes::new(256);
        for i in 0..40 {
            learned.record(ms(1_000 + i * 100));
        }
        let created = Instant::now();
        // An insurer polled once the buyer has a price: it waits for where
        // most of its answers are (the 90th percentile).
        let mut plan = PollPlan::new(&PollConfig::default(), &learned, created);
        plan.priced(true);
        // At 10 s the application has outlived every answer the plan knows:
        // past its last sample, the intervals grow from the last one.
        let at = created + ms(10_000);
        let stale = plan.clone().next(at, None, 0.0);
        assert!(stale < ms(2_000), "{stale:?}");
        // The slow answers come in; the plan takes them up and waits for
        // where they are (past 20 s), rather than polling on.
        for i in 0..60 {
            learned.record(ms(20_000 + i * 150));
        }
        plan.relearn(&learned, at);
        let wait = plan.next(at, None, 0.0);
        assert!(at + wait >= created + ms(20_000), "{wait:?}");
        // Still within the plan's window, a window still filling takes up
        // more samples too.
        let mut young = PollPlan::new(&PollConfig::default(), &learned, created);
        for _ in 0..16 {
            learned.record(ms(25_000));
        }
        young.relearn(&learned, created + ms(2_000));
        assert_eq!(young.profile.as_ref().map(Profile::len), Some(116));
    }

    #[tokio::test(start_paused = true)]
    async fn once_the_buyer_has_a_price_polls_hold_for_where_answers_are_likely() {
        let learned = AnswerTimes::new(100);
        for n in 1..=100 {
            learned.record(ms(n * 100));
        }
        let created = Instant::now();
        let deadline = created + ms(60_000);
        let mut plan = PollPlan::new(&PollConfig::default(), &learned, created);
        // Racing for the first price: the 5th percentile, nothing held.
        assert_eq!(plan.first(None, 0.0), ms(600));
        assert_eq!(plan.hold(created + ms(600), 0.0, deadline), ms(0));
        // Priced: 100 times dearer, so the first poll moves up to the 90th
        // percentile (the ceiling; 5 % x 100 is past it), and a poll planned
        // before is held until then.
        plan.priced(true);
        assert_eq!(plan.first(None, 0.0), ms(9_000));
        assert_eq!(plan.hold(created + ms(600), 0.0, deadline), ms(8_400));
        assert_eq!(plan.hold(created + ms(9_000), 0.0, deadline), ms(0));
        // Intervals stretch by sqrt(100).
        let mut racing = PollPlan::new(&PollConfig::default(), &learned, created);
        let calm = racing.next(created + ms(9_000), None, 0.0);
        let dear = plan.next(created + ms(9_000), None, 0.0);
        assert!(dear > calm.mul_f64(5.0), "{calm:?} -> {dear:?}");
        // Never held past the last look before the deadline.
        let near = created + ms(2_000);
        assert_eq!(plan.hold(created + ms(1_000), 0.0, near), ms(750));
        // Nothing learned, nothing held.
        let unlearned = PollPlan::new(&PollConfig::default(), &AnswerTimes::new(8), created);
        assert_eq!(unlearned.hold(created, 0.0, deadline), ms(0));
    }

    #[test]
    fn history_is_bounded_and_forgets_the_oldest() {
        let learned = AnswerTimes::new(16);
        for _ in 0..16 {
            learned.record(ms(10_000));
        }
        for _ in 0..16 {
            learned.record(ms(100));
        }
        assert_eq!(learned.percentile(1.0), Some(ms(100)));
    }

    #[test]
    fn fixed_mode_polls_at_its_interval() {
        let learned = learned();
        let mut plan = plan(&PollConfig::fixed(ms(1000)), &learned);
        let now = Instant::now();
        assert_eq!(plan.first(None, 9.0), ms(1000));
        assert_eq!(plan.next(now, None, 50.0), ms(1000));
        assert_eq!(plan.next(now, Some(ms(3000)), 0.0), ms(3000));
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_poll_lands_before_the_deadline() {
        let plan = plan(&PollConfig::default(), &AnswerTimes::new(8));
        let now = Instant::now();
        let deadline = now + ms(1000);
        assert_eq!(plan.fit(ms(2000), now, deadline, 0.0), ms(750));
        assert_eq!(plan.fit(ms(300), now, deadline, 0.0), ms(300));
        // Already within the last look: nothing to shorten.
        assert_eq!(plan.fit(ms(2000), now + ms(900), deadline, 0.0), ms(2000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_that_would_leave_less_than_its_wait_before_the_last_look_is_the_last_look() {
        let plan = plan(&PollConfig::default(), &AnswerTimes::new(8));
        let now = Instant::now();
        // The last look at 59.75 s.
        let deadline = now + ms(60_000);
        // A poll at 58 s would leave 1.75 s, less than its 14 s wait: the
        // last look instead, one poll rather than two.
        assert_eq!(
            plan.fit(ms(14_000), now + ms(44_000), deadline, 0.0),
            ms(15_750)
        );
        // Calls queue for the insurer's slots: the earlier poll stays.
        assert_eq!(
            plan.fit(ms(14_000), now + ms(44_000), deadline, 0.1),
            ms(14_000)
        );
        // Leaving more than its wait, it stays.
        assert_eq!(
            plan.fit(ms(7_000), now + ms(44_000), deadline, 0.0),
            ms(7_000)
        );
        // A fixed interval is kept as it is.
        let fixed = super::PollPlan::new(&PollConfig::fixed(ms(14_000)), &AnswerTimes::new(8), now);
        assert_eq!(
            fixed.fit(ms(14_000), now + ms(44_000), deadline, 0.0),
            ms(14_000)
        );
    }

    #[test]
    fn an_insurer_ranks_by_its_median_once_it_quotes_at_least_half_the_time() {
        let learned = AnswerTimes::new(16);
        for i in 0..7 {
            learned.record(ms(1000 + i * 100));
        }
        assert_eq!(learned.race_rank(), RaceRank::Unknown);
        learned.record(ms(1700));
        assert_eq!(learned.race_rank(), RaceRank::Median(ms(1400)));
        // Nine declines among seventeen answers (the window keeps 16: 7
        // quotes, 9 declines): it mostly declines.
        for _ in 0..9 {
            learned.record_answer(ms(100), false);
        }
        assert_eq!(learned.race_rank(), RaceRank::SeldomQuotes);
    }

    #[test]
    fn quick_declines_do_not_make_an_insurer_quicker_in_the_race() {
        let learned = AnswerTimes::new(16);
        // Six quotes at 3-3.5 s, five declines at 100 ms: over all eleven
        // answers the median would be 3 s; the quotes' own is 3.3 s.
        for i in 0..6 {
            learned.record(ms(3000 + i * 100));
        }
        for _ in 0..5 {
            learned.record_answer(ms(100), false);
        }
        assert_eq!(learned.percentile(0.5), Some(ms(3000)));
        assert_eq!(learned.race_rank(), RaceRank::Median(ms(3300)));
        // The racers' patience reads the quotes alone too.
        assert_eq!(learned.quote_percentile(1.0), Some(ms(3500)));
        assert_eq!(learned.quote_percentile(0.0), Some(ms(3000)));
        assert_eq!(learned.percentile(0.0), Some(ms(100)));
    }

    #[test]
    fn no_quote_percentile_before_eight_answers_or_without_a_quote() {
        let learned = AnswerTimes::new(16);
        for _ in 0..7 {
            learned.record(ms(1000));
        }
        assert_eq!(learned.quote_percentile(0.95), None);
        learned.record(ms(2000));
        assert_eq!(learned.quote_percentile(0.95), Some(ms(2000)));
        let declines = AnswerTimes::new(16);
        for _ in 0..8 {
            declines.record_answer(ms(100), false);
        }
        assert_eq!(declines.quote_percentile(0.5), None);
    }

    #[test]
    fn the_quickest_ranked_and_every_unranked_insurer_race() {
        use RaceRank::{Busy, Median, SeldomQuotes, Unknown};
        let ranks = [
            Median(ms(900)),
            Median(ms(300)),
            SeldomQuotes,
            Unknown,
            Median(ms(500)),
        ];
        assert_eq!(racers(&ranks, 2), [false, true, false, true, true]);
        // A busy insurer races only when no ranked insurer is calm.
        let busy = [Busy, Median(ms(300)), Median(ms(500)), Median(ms(900))];
        assert_eq!(racers(&busy, 1), [false, true, false, false]);
        assert_eq!(
            racers(&[Busy, Busy, SeldomQuotes, Unknown], 1),
            [true, true, false, true]
        );
        assert_eq!(racers(&ranks, 1), [false, true, false, true, false]);
        assert_eq!(racers(&ranks, 0), [true; 5]);
        assert_eq!(racers(&ranks, 9), [true, true, false, true, true]);
        // Nobody would race: everybody does.
        assert_eq!(racers(&[SeldomQuotes, SeldomQuotes], 2), [true, true]);
    }
}
