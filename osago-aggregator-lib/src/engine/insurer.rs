//! One insurer's state machine: the application (retried under one
//! Idempotency-Key), the polls on the learned schedule, the answer learned
//! from, and the progress recorded for a pod that may take over.

use super::*;
use futures::FutureExt;

/// Calls made to one insurer for one request.
#[derive(Debug, Default)]
pub(super) struct Calls {
    /// Calls that reached the insurer (atomic: counted inside call futures).
    pub(super) attempts: AtomicU32,
    pub(super) application_id: Option<String>,
}

impl Calls {
    /// Calls as recorded before a takeover.
    pub(super) fn resumed(progress: Option<&InsurerProgress>) -> Self {
        Self {
            attempts: AtomicU32::new(progress.map_or(0, |p| p.attempts)),
            application_id: progress.and_then(|p| p.application_id.clone()),
        }
    }

    pub(super) fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Wraps a call so it counts only if it is actually made.
    pub(super) async fn counted<T>(&self, call: impl std::future::Future<Output = T>) -> T {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        call.await
    }
}

/// What one insurer task needs.
pub(super) struct Job {
    pub(super) request_id: RequestId,
    pub(super) insurer: Insurer,
    pub(super) request: Arc<QuoteRequest>,
    pub(super) deadline_at: chrono::DateTime<chrono::Utc>,
    pub(super) deadline: Instant,
    pub(super) insurers_total: u16,
    /// Progress recorded by a pod that left the request, when resuming.
    pub(super) resume: Option<InsurerProgress>,
    /// The request's race for its first price (on this pod).
    pub(super) race: Arc<Race>,
    /// This insurer races for the first price (the quickest few do).
    pub(super) racer: bool,
    /// A racer picked by its rank, with other insurers standing by: its
    /// polls cost `racer_price` until the buyer has a price, or until
    /// every insurer standing by has answered ([`Race::backed`]).
    pub(super) backed: bool,
    /// This insurer stands by for the racer: it mostly quotes, does not
    /// race, and its answer is still to come.
    pub(super) backer: bool,
}

/// Whether an insurer's run is over, as its progress records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Finished {
    /// More will be published.
    No,
    /// Its final event is out; `quoted`: with a price.
    Yes { quoted: bool },
}

/// A request's race for its first price, shared by its insurer tasks.
#[derive(Debug, Default)]
pub(super) struct Race {
    /// Some insurer has quoted the request.
    priced: AtomicBool,
    /// Racers still waiting for their answer.
    racers_left: AtomicUsize,
    /// Insurers standing by for the racer (mostly quoting, not racing)
    /// still waiting for their answer.
    backers_left: AtomicUsize,
    /// Wakes a backed racer when the last insurer standing by answers (a
    /// price or not): it polls at the lone price from then on.
    unbacked: tokio::sync::Notify,
    /// Wakes the insurers not racing when the last racer answers without
    /// a price: they race from then on.
    lost: tokio::sync::Notify,
    /// When the racers are overdue (the slowest one's patience percentile
    /// has passed): with no price by then, every insurer races. `None`:
    /// they wait for the racers' answers.
    overdue_at: Option<Instant>,
}

impl Race {
    /// A race run by `racers` insurers, the others waiting on them until
    /// `overdue_at` at the latest; `backers` of the others stand by.
    pub(super) fn new(racers: usize, backers: usize, overdue_at: Option<Instant>) -> Self {
        Self {
            priced: AtomicBool::new(false),
            racers_left: AtomicUsize::new(racers),
            backers_left: AtomicUsize::new(backers),
            unbacked: tokio::sync::Notify::new(),
            lost: tokio::sync::Notify::new(),
            overdue_at,
        }
    }

    /// An insurer standing by is still to answer: a backed racer's polls
    /// cost `racer_price`.
    pub(super) fn backed(&self) -> bool {
        self.backers_left.load(Ordering::SeqCst) > 0
    }

    /// An insurer standing by has its final answer: once none is left, a
    /// backed racer is woken to poll as if alone (or, if the last backer
    /// quoted, as for a buyer who has a price).
    pub(super) fn backer_done(&self) {
        if self.backers_left.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.unbacked.notify_waiters();
        }
    }

    /// Whether a poll by a racer (or not) is for a buyer who has a price,
    /// or will have one from a racer: the buyer has a price, or, for an
    /// insurer not racing, a racer is still in the race and not overdue.
    pub(super) fn settled(&self, racer: bool) -> bool {
        self.priced.load(Ordering::SeqCst) || (!racer && self.waits_on_racers())
    }

    /// A racer is still in the race, and not overdue.
    fn waits_on_racers(&self) -> bool {
        self.racers_left.load(Ordering::SeqCst) > 0
            && self.overdue_at.is_none_or(|at| Instant::now() < at)
    }

    /// The buyer has a price.
    pub(super) fn quoted(&self) {
        self.priced.store(true, Ordering::SeqCst);
    }

    /// A racer has its final answer (a quote or not): once none is left
    /// and the buyer has no price, every insurer races.
    pub(super) fn racer_done(&self) {
        if self.racers_left.fetch_sub(1, Ordering::SeqCst) == 1
            && !self.priced.load(Ordering::SeqCst)
        {
            self.lost.notify_waiters();
        }
    }

    /// Sleeps `duration`; an insurer not racing, waiting on the racers,
    /// wakes early should the last of them answer without a price, or
    /// should they be overdue. A `backed` racer wakes early should the
    /// last insurer standing by answer: then `Woke::Unbacked`.
    pub(super) async fn sleep(&self, racer: bool, backed: bool, duration: Duration) -> Woke {
        if racer && backed {
            let unbacked = self.unbacked.notified();
            tokio::pin!(unbacked);
            // Registered before the check: a wake after it is not missed.
            unbacked.as_mut().enable();
            if !self.backed() {
                return Woke::Unbacked;
            }
            return tokio::select! {
                () = tokio::time::sleep(duration) => Woke::Due,
                () = unbacked => Woke::Unbacked,
            };
        }
        let lost = self.lost.notified();
        tokio::pin!(lost);
        // Registered before the check: a wake after it is not missed.
        lost.as_mut().enable();
        let waits_on_racers =
            !racer && !self.priced.load(Ordering::SeqCst) && self.waits_on_racers();
        if waits_on_racers {
            let overdue = async {
                match self.overdue_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = tokio::time::sleep(duration) => {}
                () = lost => {}
                () = overdue => {}
            }
        } else {
            tokio::time::sleep(duration).await;
        }
        Woke::Due
    }
}

/// Why [`Race::sleep`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Woke {
    /// Its time came, or the race changed for an insurer not racing.
    Due,
    /// A backed racer's last insurer standing by answered: it is alone.
    Unbacked,
}

impl Inner {
    /// One insurer, from application to final event.
    pub(super) async fn run(&self, job: Job) -> InsurerOutcome {
        let label = InsurerLabel {
            insurer: job.insurer.id.to_string(),
        };
        let in_flight = self.metrics.in_flight.get_or_create(&label).clone();
        in_flight.inc();
        let started = Instant::now();
        let mut calls = Calls::resumed(job.resume.as_ref());
        let requirements = &self.requirements[&job.insurer.id];
        // Never sent (not even by a pod that left the request), and lacking
        // a field the insurer is known to refuse requests without: its
        // refusal at once, and no call.
        let unsent = calls.application_id.is_none() && calls.attempts() == 0;
        let unmet = unsent.then(|| requirements.unmet(&job.request)).flatten();
        let result = match unmet {
            Some(refusal) => {
                self.metrics.known_refusals.get_or_create(&label).inc();
                tracing::debug!(request_id = %job.request_id, insurer = %job.insurer.id, fields = ?refusal.fields, "not sent: the insurer refuses requests lacking these fields");
                Ok(Ok(Err(refusal)))
            }
            None => {
                // A panic while asking the insurer (in an embedder's
                // adapter, say) ends this insurer with an error event, as
                // any failure does: the race goes on without it and the
                // request still finishes. Its message is not carried on
                // (it may hold what the adapter saw).
                let asked = std::panic::AssertUnwindSafe(self.ask(&job, &mut calls)).catch_unwind();
                let asked = tokio::time::timeout_at(job.deadline, asked).await;
                if let Ok(Ok(result)) = &asked {
                    requirements.learn(&job.request, result);
                }
                asked
            }
        };
        let result = match result {
            Ok(Ok(result)) => result,
            Ok(Err(_panic)) => {
                self.metrics.panics.get_or_create(&label).inc();
                tracing::error!(request_id = %job.request_id, insurer = %job.insurer.id, "panicked while asking the insurer; its answer is an error");
                Err(InsurerError::new(
                    ErrorKind::Unavailable,
                    "the insurer's client failed unexpectedly",
                ))
            }
            Err(_) => Err(InsurerError::new(
                ErrorKind::Timeout,
                "no answer before the deadline",
            )),
        };
        if job.racer {
            job.race.racer_done();
        }
        if job.backer {
            job.race.backer_done();
        }
        let outcome = self.finish(&job, result, calls, 2).await;
        in_flight.dec();
        self.metrics
            .answer_seconds
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    /// Creates the application and polls until a final answer.
    pub(super) async fn ask(
        &self,
        job: &Job,
        calls: &mut Calls,
    ) -> Result<PollOutcome, InsurerError> {
        let client = &job.insurer.client;
        let guard = &self.guards[&job.insurer.id];
        let label = InsurerLabel {
            insurer: job.insurer.id.to_string(),
        };
        let key = idempotency_key(&job.request_id, &job.insurer.id);
        let mut retry = 0;
        let known = calls.application_id.clone().map(|id| Application {
            id,
            retry_after: None,
        });
        let application = if let Some(application) = known {
            // Resumed: the insurer has the application; poll it.
            application
        } else {
            loop {
                let create = calls.counted(client.create_application(&key, &job.request));
                // An application is due when its answer, at the insurer's
                // usual pace (the 90th percentile of its learned answer
                // times), would still come before the deadline: a slow
                // insurer's applications go ahead of polls that can wait.
                // Still waiting for a slot once it is past due (or past
                // half the minute), it is unlikely to be answered in time:
                // it yields to the polls of applications already made, as
                // under heavy overload finishing accepted work beats
                // starting more.
                let lead = self.answers[&job.insurer.id]
                    .percentile(0.9)
                    .unwrap_or_default();
                let place = stagger(&key, guard.stagger);
                let due = job.deadline.checked_sub(lead).unwrap_or(job.deadline);
                let late = job
                    .deadline
                    .checked_sub(lead.max(self.config.insurer_deadline / 2))
                    .unwrap_or(job.deadline);
                let ranks =
                    Ranks::until(self.urgent(due + place, guard), late, job.deadline + place);
                let created = guard
                    .call_demoted(CallKind::Create, ranks, job.deadline, create)
                    .await;
                match created {
                    Ok(application) => break application,
                    Err(CallError::Refused(err)) => return Err(err),
                    Err(CallError::Failed(err)) if err.is_retryable() => {
                        // Same Idempotency-Key next time: the insurer sees one application.
                        let Some(delay) = self.retry_delay(guard, &label, retry, &err, job) else {
                            return Err(err);
                        };
                        tracing::debug!(request_id = %job.request_id, insurer = %job.insurer.id, kind = %err.kind, retry, "retrying the application");
                        tokio::time::sleep(delay).await;
                        retry += 1;
                    }
                    Err(CallError::Failed(err)) => return Err(err),
                }
            }
        };
        calls.application_id = Some(application.id.clone());
        self.save_progress(job, calls, 1, Finished::No).await;
        let created_at = Instant::now();
        let created_wall = self.clock.now();
        let polls = self.metrics.polls.get_or_create(&label).clone();
        let answers = &self.answers[&job.insurer.id];
        let mut plan = PollPlan::new(&self.config.poll, answers, created_at);
        // Its polls keep the application's place in this insurer's order.
        let poll_rank = job.deadline + stagger(&key, guard.stagger);
        let mut backed = job.backed && job.race.backed();
        plan.backed(backed);
        plan.priced(job.race.settled(job.racer));
        let mut wait = plan.first(application.retry_after, guard.pressure());
        // When `wait` was planned, and with which hint; `None`: a retry's
        // backoff, not the plan's.
        let mut planned = Some((created_at, application.retry_after));
        let mut failed_polls = 0;
        let mut polls_made = 0u32;
        loop {
            let from = Instant::now();
            let woke = job
                .race
                .sleep(
                    job.racer,
                    backed,
                    plan.fit(wait, from, job.deadline, guard.pressure()),
                )
                .await;
            if woke == Woke::Unbacked {
                // Alone now: the wait as a lone insurer would have planned
                // it, if that ends sooner; priced as the buyer is now (the
                // last backer may have just quoted: then polls are dearer
                // still, and the wait stands).
                backed = false;
                plan.backed(false);
                plan.priced(job.race.settled(job.racer));
                let end = from + wait;
                let end = match planned {
                    Some((at, hint)) if polls_made == 0 => {
                        end.min(at + plan.first(hint, guard.pressure()))
                    }
                    // On a copy: the plan's own growth is not advanced twice.
                    Some((at, hint)) => end.min(at + plan.clone().next(at, hint, guard.pressure())),
                    None => end,
                };
                let now = Instant::now();
                let left = end.saturating_duration_since(now);
                job.race
                    .sleep(
                        job.racer,
                        false,
                        plan.fit(left, now, job.deadline, guard.pressure()),
                    )
                    .await;
            }
            plan.relearn(answers, Instant::now());
            // Planned before the buyer had a price (or before polls got
            // dear): wait for where this insurer's answers are likely; the
            // race lost meanwhile, for where they begin.
            let priced = loop {
                let priced = job.race.settled(job.racer);
                backed = backed && job.race.backed();
                plan.backed(backed);
                plan.priced(priced);
                let hold = plan.hold(Instant::now(), guard.pressure(), job.deadline);
                if hold.is_zero() {
                    break priced;
                }
                // A backed racer left alone meanwhile holds no longer.
                job.race.sleep(job.racer, backed, hold).await;
            };
            let poll = calls.counted(async {
                polls.inc();
                client.poll_quote(&application.id).await
            });
            polls_made += 1;
            // Until the buyer has a price, a poll is as urgent as a new
            // application; then it yields to them.
            let rank = if priced {
                poll_rank
            } else {
                self.urgent(poll_rank, guard)
            };
            let polled = guard
                .call_ranked(CallKind::Poll, rank, job.deadline, poll)
                .await;
            match polled {
                Ok(PollOutcome::Pending { retry_after }) => {
                    failed_polls = 0;
                    let now = Instant::now();
                    wait = plan.next(now, retry_after, guard.pressure());
                    planned = Some((now, retry_after));
                }
                Ok(answer) => {
                    if matches!(answer, PollOutcome::Quoted(_)) {
                        job.race.quoted();
                    }
                    self.learn(job, &label, created_at, created_wall, &answer, polls_made);
                    return Ok(answer);
                }
                Err(CallError::Refused(err)) => return Err(err),
                Err(CallError::Failed(err)) if err.kind == ErrorKind::RateLimited => {
                    let now = Instant::now();
                    wait = plan.next(now, err.retry_after, guard.pressure());
                    planned = Some((now, err.retry_after));
                }
                Err(CallError::Failed(err))
                    if err.is_retryable() && failed_polls < guard.poll_retries =>
                {
                    let Some(delay) = self.retry_delay(guard, &label, failed_polls, &err, job)
                    else {
                        return Err(err);
                    };
                    failed_polls += 1;
                    wait = delay;
                    planned = None;
                }
                Err(CallError::Failed(err)) => return Err(err),
            }
        }
    }

    /// Learns from a final answer: the insurer's answer time (from the
    /// application to the quote being ready, by its `ready_at` when given),
    /// the detection lag, and the polls it took.
    pub(super) fn learn(
        &self,
        job: &Job,
        label: &InsurerLabel,
        created_at: Instant,
        created_wall: chrono::DateTime<chrono::Utc>,
        answer: &PollOutcome,
        polls: u32,
    ) {
        let ready_at = match answer {
            PollOutcome::Quoted(quote) => quote.ready_at,
            _ => None,
        };
        let answer_time = ready_at
            .and_then(|ready| (ready - created_wall).to_std().ok())
            .unwrap_or_else(|| created_at.elapsed());
        self.answers[&job.insurer.id]
            .record_answer(answer_time, matches!(answer, PollOutcome::Quoted(_)));
        if let Some(ready) = ready_at {
            let lag = (self.clock.now() - ready).to_std().unwrap_or_default();
            self.metrics
                .detection_lag_seconds
                .get_or_create(label)
                .observe(lag.as_secs_f64());
        }
        self.metrics
            .polls_per_answer
            .get_or_create(label)
            .observe(f64::from(polls));
    }

    /// `rank` moved into the first class of the slot queue (new
    /// applications, and polls for buyers with no price yet): ahead of
    /// every poll for a buyer who has one, as no two requests in flight
    /// are further apart than the deadline plus the stagger.
    fn urgent(&self, rank: Instant, guard: &Guard) -> Instant {
        let ahead = self.config.insurer_deadline + guard.stagger + Duration::from_secs(1);
        rank.checked_sub(ahead).unwrap_or(rank)
    }

    /// The wait before retry `retry` after `err` (backoff honouring the
    /// insurer's hint, never past the deadline), counted in the retries
    /// metric; `None` when no retry fits.
    pub(super) fn retry_delay(
        &self,
        guard: &Guard,
        label: &InsurerLabel,
        retry: u32,
        err: &InsurerError,
        job: &Job,
    ) -> Option<Duration> {
        let delay = guard
            .backoff
            .next_delay(retry, err.retry_after, job.deadline)?;
        self.metrics.retries.get_or_create(label).inc();
        Some(delay)
    }

    pub(super) async fn save_progress(
        &self,
        job: &Job,
        calls: &Calls,
        version: u32,
        finished: Finished,
    ) {
        let progress = InsurerProgress {
            request_id: job.request_id,
            insurer_id: job.insurer.id.clone(),
            application_id: calls.application_id.clone(),
            attempts: calls.attempts(),
            version,
            deadline_at: job.deadline_at,
            finished: matches!(finished, Finished::Yes { .. }),
            quoted: matches!(finished, Finished::Yes { quoted: true }),
        };
        if let Err(err) = self
            .state
            .save_progress(&progress, self.config.state_ttl)
            .await
        {
            // The fan-out goes on; only resuming after a crash is weakened.
            tracing::warn!(request_id = %job.request_id, insurer = %job.insurer.id, error = %err, "saving progress failed");
        }
    }
}

/// This application's stagger in the slot queue: a share of `spread` drawn
/// from its Idempotency-Key (so from the request and the insurer: each
/// insurer orders a burst differently, and a retry keeps its place).
fn stagger(key: &str, spread: Duration) -> Duration {
    use std::hash::{Hash, Hasher};
    if spread.is_zero() {
        return Duration::ZERO;
    }
    // SipHash with fixed keys: the same place on every pod and run.
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    spread.mul_f64(unit)
}

#[cfg(test)]
mod stagger_tests {
    use super::*;

    #[test]
    fn each_insurer_orders_a_burst_its_own_way_and_a_retry_keeps_its_place() {
        let spread = Duration::from_secs(30);
        let requests: Vec<RequestId> = (0..200).map(|_| RequestId::random()).collect();
        let order = |insurer: &str| {
            let insurer = InsurerId::new(insurer).unwrap();
            let mut ids: Vec<(Duration, usize)> = requests
                .iter()
                .enumerate()
                .map(|(i, id)| (stagger(&idempotency_key(id, &insurer), spread), i))
                .collect();
            assert!(ids.iter().all(|(s, _)| *s < spread));
            ids.sort();
            ids.into_iter().map(|(_, i)| i).collect::<Vec<_>>()
        };
        let (a, b) = (order("alfa"), order("beta"));
        assert_ne!(a, b);
        assert_eq!(a, order("alfa"), "deterministic");
        // Neither is the arrival order.
        assert_ne!(a, (0..200).collect::<Vec<_>>());
        assert_eq!(stagger("key", Duration::ZERO), Duration::ZERO);
    }
}
