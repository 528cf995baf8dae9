//! The fan-out engine and its per-insurer pipeline.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use osago_core::events::{
    ErrorEvent, ErrorKind, InsurerEvent, QuoteEvent, QuoteStatus, RequestEvent,
};
use osago_core::ids::idempotency_key;
use osago_core::insurer::{Application, InsurerError, PollOutcome};
use osago_core::ports::{
    InsurerClient, InsurerProgress, PolicyStore, PortError, QuoteSink, StateStore,
};
use osago_core::{Clock, EventId, InsurerId, QuoteRequest, RequestId};
use tokio::task::JoinSet;
use tokio::time::Instant;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::config::EngineConfig;
use crate::guard::{CallError, CallKind, Guard};
use crate::metrics::{EngineMetrics, InsurerLabel, OutcomeLabels};
use crate::policy::{AnswerTimes, PollPlan};

/// One insurer the engine asks.
#[derive(Debug, Clone)]
pub struct Insurer {
    /// Its id.
    pub id: InsurerId,
    /// Its partner API.
    pub client: Arc<dyn InsurerClient>,
}

/// Why a fan-out could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The state store failed; the event should be delivered again.
    #[error("state store failed")]
    State(#[source] PortError),
    /// The sink refused the pending events; the event should be delivered again.
    #[error("publishing pending events failed")]
    Publish(#[source] PortError),
}

/// How one insurer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsurerOutcome {
    /// The insurer.
    pub insurer_id: InsurerId,
    /// `quoted`, `declined`, or the error kind.
    pub outcome: &'static str,
    /// Its final event was published.
    pub published: bool,
}

/// What [`Engine::start`] did.
#[derive(Debug)]
pub enum Started {
    /// The request was seen before; nothing was started.
    Duplicate,
    /// The fan-out runs; pending events are published.
    Running(FanOut),
}

/// A running fan-out: one task per insurer.
#[derive(Debug)]
pub struct FanOut {
    request_id: RequestId,
    tasks: JoinSet<InsurerOutcome>,
    done: Vec<InsurerOutcome>,
}

impl FanOut {
    /// The request.
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }

    /// Waits for every insurer's final outcome.
    pub async fn wait(mut self) -> Vec<InsurerOutcome> {
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok(outcome) => self.done.push(outcome),
                Err(err) if err.is_panic() => {
                    tracing::error!(request_id = %self.request_id, "insurer task panicked");
                }
                Err(_) => {}
            }
        }
        self.done
    }

    /// Lets the tasks run on without anyone waiting for them.
    pub fn detach(mut self) {
        self.tasks.detach_all();
    }
}

struct Inner {
    insurers: Vec<Insurer>,
    guards: HashMap<InsurerId, Arc<Guard>>,
    /// Recent answer times per insurer, for the poll schedule.
    answers: HashMap<InsurerId, AnswerTimes>,
    sink: Arc<dyn QuoteSink>,
    state: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    metrics: EngineMetrics,
    /// The shared policy store and this pod's holder name, when shared.
    shared: Option<(Arc<dyn PolicyStore>, String)>,
    /// Requests in flight here, whose leases this pod renews.
    owned: Mutex<HashSet<RequestId>>,
}

/// The fan-out engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("insurers", &self.inner.insurers.len())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Calls made to one insurer for one request.
#[derive(Debug, Default)]
struct Calls {
    /// Calls that reached the insurer (atomic: counted inside call futures).
    attempts: AtomicU32,
    application_id: Option<String>,
}

impl Calls {
    /// Calls as recorded before a takeover.
    fn resumed(progress: Option<&InsurerProgress>) -> Self {
        Self {
            attempts: AtomicU32::new(progress.map_or(0, |p| p.attempts)),
            application_id: progress.and_then(|p| p.application_id.clone()),
        }
    }

    fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Wraps a call so it counts only if it is actually made.
    async fn counted<T>(&self, call: impl std::future::Future<Output = T>) -> T {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        call.await
    }
}

/// What one insurer task needs.
struct Job {
    request_id: RequestId,
    insurer: Insurer,
    request: Arc<QuoteRequest>,
    deadline_at: chrono::DateTime<chrono::Utc>,
    deadline: Instant,
    insurers_total: u16,
    /// Progress recorded by a pod that left the request, when resuming.
    resume: Option<InsurerProgress>,
}

impl Engine {
    /// An engine asking `insurers`.
    pub fn new(
        insurers: Vec<Insurer>,
        sink: Arc<dyn QuoteSink>,
        state: Arc<dyn StateStore>,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
        metrics: EngineMetrics,
    ) -> Self {
        let guards = insurers
            .iter()
            .map(|insurer| {
                let policy = config.policy_for(&insurer.id);
                let label = InsurerLabel {
                    insurer: insurer.id.to_string(),
                };
                (
                    insurer.id.clone(),
                    Arc::new(Guard::new(label, policy, metrics.clone())),
                )
            })
            .collect();
        let answers = insurers
            .iter()
            .map(|insurer| (insurer.id.clone(), AnswerTimes::new(config.poll.history)))
            .collect();
        Self {
            inner: Arc::new(Inner {
                insurers,
                guards,
                answers,
                sink,
                state,
                clock,
                config,
                metrics,
                shared: None,
                owned: Mutex::default(),
            }),
        }
    }

    /// Shares every insurer's quota, concurrency cap and circuit breaker
    /// with the other pods using `store` (see [`crate::shared`]): replaces
    /// the engine's local guards with shared ones and starts their keeper
    /// tasks, which end when the engine is dropped.
    ///
    /// Call it right after [`Engine::new`], within a tokio runtime.
    ///
    /// # Panics
    ///
    /// If the engine was already cloned.
    pub fn with_policy_store(
        mut self,
        store: Arc<dyn PolicyStore>,
        shared: crate::shared::SharedConfig,
    ) -> Self {
        let inner = Arc::get_mut(&mut self.inner)
            .expect("Engine::with_policy_store is called before the engine is cloned");
        for insurer in &inner.insurers {
            let label = InsurerLabel {
                insurer: insurer.id.to_string(),
            };
            let guard = Guard::shared(
                label,
                inner.config.policy_for(&insurer.id),
                inner.metrics.clone(),
                store.clone(),
                &shared,
                inner.clock.clone(),
            );
            inner.guards.insert(insurer.id.clone(), guard);
        }
        inner.shared = Some((store, shared.holder));
        self
    }

    /// Gives back this pod's leased concurrency slots at once (on shutdown,
    /// after the in-flight work ended), instead of letting the leases
    /// expire. Does nothing for local policies.
    pub async fn release_shared(&self) {
        let Some((store, holder)) = &self.inner.shared else {
            return;
        };
        for insurer in &self.inner.insurers {
            if let Err(err) = store.release_slots(insurer.id.as_str(), holder).await {
                tracing::warn!(insurer = %insurer.id, error = %err, "releasing shared slots failed; the lease will expire");
            }
        }
    }

    /// The insurers asked.
    pub fn insurers(&self) -> impl Iterator<Item = &InsurerId> {
        self.inner.insurers.iter().map(|i| &i.id)
    }

    /// Starts the fan-out for one request event. Returns once the request
    /// is recorded in the state store (claimed, its event kept, leased to
    /// this pod) and every insurer's `pending` event is published, so the
    /// event may be acknowledged; the insurers are then asked on their own
    /// tasks. An event whose deadline has passed asks nobody and ends every
    /// insurer as a timeout at once.
    pub async fn start(&self, event: RequestEvent) -> Result<Started, EngineError> {
        let inner = &self.inner;
        let keep = (event.deadline_at - inner.clock.now())
            .to_std()
            .unwrap_or_default()
            + KEEP_AFTER_DEADLINE;
        let began = inner
            .state
            .begin_request(&event, inner.config.lease, keep, inner.config.state_ttl)
            .await
            .map_err(EngineError::State)?;
        if !began {
            inner.metrics.duplicates.inc();
            tracing::debug!(request_id = %event.request_id, "duplicate request event skipped");
            return Ok(Started::Duplicate);
        }
        inner.metrics.fanouts.inc();
        self.launch(event, BTreeMap::new(), true)
            .await
            .map(Started::Running)
    }

    /// Resumes a request another pod began and left (its lease expired):
    /// every insurer not finished goes on from its recorded progress: an
    /// insurer with an application is polled (no second `POST`), one
    /// without is asked again under the same Idempotency-Key; the original
    /// deadline holds.
    pub async fn resume(&self, event: RequestEvent) -> Result<FanOut, EngineError> {
        let progress = self
            .inner
            .state
            .load_progress(&event.request_id)
            .await
            .map_err(EngineError::State)?
            .into_iter()
            .map(|p| (p.insurer_id.clone(), p))
            .collect();
        self.inner.metrics.takeovers.inc();
        tracing::info!(request_id = %event.request_id, "resuming a request left by another pod");
        self.launch(event, progress, false).await
    }

    /// Keeps this pod's leases alive and takes over requests whose pod
    /// died, until the returned task is aborted (or the engine dropped).
    /// Must be called within a tokio runtime; the aggregator service runs
    /// one per pod.
    pub fn spawn_lease_keeper(&self) -> tokio::task::JoinHandle<()> {
        let engine = Arc::downgrade(&self.inner);
        let config = self.inner.config.clone();
        tokio::spawn(async move {
            let mut renew = tokio::time::interval(config.lease / 3);
            let mut take = tokio::time::interval(config.take_over_every);
            renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            take.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = renew.tick() => {
                        let Some(inner) = engine.upgrade() else { return };
                        let ids: Vec<RequestId> = inner.owned.lock().expect("owned lock").iter().copied().collect();
                        if let Err(err) = inner.state.renew_leases(&ids, config.lease).await {
                            tracing::warn!(error = %err, requests = ids.len(), "renewing leases failed");
                        }
                    }
                    _ = take.tick() => {
                        let Some(inner) = engine.upgrade() else { return };
                        let engine = Engine { inner };
                        match engine.inner.state.take_over(config.lease, config.take_over_batch).await {
                            Ok(events) => {
                                for event in events {
                                    let id = event.request_id;
                                    match engine.resume(event).await {
                                        Ok(fan_out) => fan_out.detach(),
                                        Err(err) => tracing::warn!(request_id = %id, error = %err, "resuming a request failed; its lease will expire again"),
                                    }
                                }
                            }
                            Err(err) => tracing::debug!(error = %err, "looking for requests to take over failed"),
                        }
                    }
                }
            }
        })
    }

    /// Runs every insurer not finished in `progress`; `fresh` when nothing
    /// was published for the request yet.
    async fn launch(
        &self,
        event: RequestEvent,
        mut progress: BTreeMap<InsurerId, InsurerProgress>,
        fresh: bool,
    ) -> Result<FanOut, EngineError> {
        let inner = &self.inner;
        let request_id = event.request_id;
        let now = inner.clock.now();
        let remaining = (event.deadline_at - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(inner.config.insurer_deadline);
        let deadline = Instant::now() + remaining;
        let insurers_total = u16::try_from(inner.insurers.len()).unwrap_or(u16::MAX);
        let mut fan_out = FanOut {
            request_id,
            tasks: JoinSet::new(),
            done: Vec::new(),
        };
        let request = Arc::new(event.request);
        let jobs: Vec<Job> = inner
            .insurers
            .iter()
            .filter_map(|insurer| {
                let resume = progress.remove(&insurer.id);
                if resume.as_ref().is_some_and(|p| p.finished) {
                    return None;
                }
                Some(Job {
                    request_id,
                    insurer: insurer.clone(),
                    request: request.clone(),
                    deadline_at: event.deadline_at,
                    deadline,
                    insurers_total,
                    resume,
                })
            })
            .collect();
        let done = Arc::new(Completion {
            request_id,
            left: AtomicUsize::new(jobs.len()),
        });
        if jobs.is_empty() {
            inner.end(&done.request_id).await;
            return Ok(fan_out);
        }
        inner.owned.lock().expect("owned lock").insert(request_id);

        if remaining.is_zero() {
            tracing::info!(request_id = %request_id, "request consumed after its deadline; no insurer asked");
            for job in jobs {
                let error =
                    InsurerError::new(ErrorKind::Timeout, "request arrived after its deadline");
                let calls = Calls::resumed(job.resume.as_ref());
                // Fresh, nothing was published: the final event is the
                // first. Resumed, a pending may have been: it must be newer.
                let version = if fresh { 1 } else { 2 };
                let outcome = inner.finish(&job, Err(error), calls, version).await;
                fan_out.done.push(outcome);
                done.one_finished(inner).await;
            }
            return Ok(fan_out);
        }

        // Pending first (again, for a resumed insurer without progress:
        // the read model ignores what it has seen).
        let pending = jobs
            .iter()
            .filter(|job| job.resume.is_none())
            .map(|job| async move {
                inner
                    .sink
                    .publish(&inner.quote_event(job, 1, QuoteStatus::Pending, None, None))
                    .await
            });
        for result in futures::future::join_all(pending).await {
            if let Err(err) = result {
                // The lease expires and another pod (or this one) resumes.
                inner.owned.lock().expect("owned lock").remove(&request_id);
                return Err(EngineError::Publish(err));
            }
        }
        for job in jobs {
            let engine = self.inner.clone();
            let done = done.clone();
            fan_out.tasks.spawn(async move {
                let outcome = engine.run(job).await;
                done.one_finished(&engine).await;
                outcome
            });
        }
        Ok(fan_out)
    }
}

/// How long a request's event is kept past its deadline for a pod resuming it.
const KEEP_AFTER_DEADLINE: Duration = Duration::from_secs(300);

/// Counts a request's insurers down; the last one ends the request.
struct Completion {
    request_id: RequestId,
    left: AtomicUsize,
}

impl Completion {
    async fn one_finished(&self, inner: &Inner) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            inner.end(&self.request_id).await;
        }
    }
}

impl Inner {
    /// Every insurer of a request finished: no lease, no stored event.
    async fn end(&self, request_id: &RequestId) {
        self.owned.lock().expect("owned lock").remove(request_id);
        if let Err(err) = self.state.end_request(request_id).await {
            // Its lease expires; a pod taking it over finds every insurer finished.
            tracing::warn!(request_id = %request_id, error = %err, "ending a request failed");
        }
    }

    /// One insurer, from application to final event.
    async fn run(&self, job: Job) -> InsurerOutcome {
        let label = InsurerLabel {
            insurer: job.insurer.id.to_string(),
        };
        let in_flight = self.metrics.in_flight.get_or_create(&label).clone();
        in_flight.inc();
        let started = Instant::now();
        let mut calls = Calls::resumed(job.resume.as_ref());
        let result = match tokio::time::timeout_at(job.deadline, self.ask(&job, &mut calls)).await {
            Ok(result) => result,
            Err(_) => Err(InsurerError::new(
                ErrorKind::Timeout,
                "no answer before the deadline",
            )),
        };
        let outcome = self.finish(&job, result, calls, 2).await;
        in_flight.dec();
        self.metrics
            .answer_seconds
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    /// Creates the application and polls until a final answer.
    async fn ask(&self, job: &Job, calls: &mut Calls) -> Result<PollOutcome, InsurerError> {
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
                let created = guard.call(CallKind::Create, job.deadline, create).await;
                match created {
                    Ok(application) => break application,
                    Err(CallError::Refused(err)) => return Err(err),
                    Err(CallError::Failed(err)) if err.kind.is_retryable() => {
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
        self.save_progress(job, calls, 1, false).await;
        let created_at = Instant::now();
        let created_wall = self.clock.now();
        let polls = self.metrics.polls.get_or_create(&label).clone();
        let answers = &self.answers[&job.insurer.id];
        let mut plan = PollPlan::new(&self.config.poll, answers, created_at);
        let mut wait = plan.first(application.retry_after);
        let mut failed_polls = 0;
        let mut polls_made = 0u32;
        loop {
            tokio::time::sleep(plan.fit(wait, Instant::now(), job.deadline)).await;
            let poll = calls.counted(async {
                polls.inc();
                client.poll_quote(&application.id).await
            });
            polls_made += 1;
            let polled = guard.call(CallKind::Poll, job.deadline, poll).await;
            match polled {
                Ok(PollOutcome::Pending { retry_after }) => {
                    failed_polls = 0;
                    wait = plan.next(Instant::now(), retry_after, guard.pressure());
                }
                Ok(answer) => {
                    self.learn(job, &label, created_at, created_wall, &answer, polls_made);
                    return Ok(answer);
                }
                Err(CallError::Refused(err)) => return Err(err),
                Err(CallError::Failed(err)) if err.kind == ErrorKind::RateLimited => {
                    wait = plan.next(Instant::now(), err.retry_after, guard.pressure());
                }
                Err(CallError::Failed(err))
                    if err.kind.is_retryable() && failed_polls < guard.poll_retries =>
                {
                    let Some(delay) = self.retry_delay(guard, &label, failed_polls, &err, job)
                    else {
                        return Err(err);
                    };
                    failed_polls += 1;
                    wait = delay;
                }
                Err(CallError::Failed(err)) => return Err(err),
            }
        }
    }

    /// Learns from a final answer: the insurer's answer time (from the
    /// application to the quote being ready, by its `ready_at` when given),
    /// the detection lag, and the polls it took.
    fn learn(
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
        self.answers[&job.insurer.id].record(answer_time);
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

    /// The wait before retry `retry` after `err` (backoff honouring the
    /// insurer's hint, never past the deadline), counted in the retries
    /// metric; `None` when no retry fits.
    fn retry_delay(
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

    /// Publishes the final event and records the insurer as finished.
    async fn finish(
        &self,
        job: &Job,
        result: Result<PollOutcome, InsurerError>,
        calls: Calls,
        version: u32,
    ) -> InsurerOutcome {
        let attempts = calls.attempts();
        let (event, outcome) = match result {
            Ok(PollOutcome::Quoted(quote)) => (
                self.quote_event(job, version, QuoteStatus::Quoted, Some(quote), None),
                "quoted",
            ),
            Ok(PollOutcome::Declined { reason }) => (
                self.quote_event(job, version, QuoteStatus::Declined, None, Some(reason)),
                "declined",
            ),
            Ok(PollOutcome::Pending { .. }) => unreachable!("ask returns final answers only"),
            Err(err) => (
                InsurerEvent::Error(ErrorEvent {
                    event_id: EventId::random(),
                    request_id: job.request_id,
                    insurer_id: job.insurer.id.clone(),
                    occurred_at: self.clock.now(),
                    deadline_at: job.deadline_at,
                    version,
                    insurers_total: job.insurers_total,
                    kind: err.kind,
                    message: err.message,
                    attempts,
                    is_final: true,
                }),
                err.kind.as_str(),
            ),
        };
        let published = self.publish_with_retry(&event).await;
        self.save_progress(job, &calls, version, true).await;
        self.metrics
            .outcomes
            .get_or_create(&OutcomeLabels {
                insurer: job.insurer.id.to_string(),
                outcome: outcome.to_owned(),
            })
            .inc();
        tracing::debug!(request_id = %job.request_id, insurer = %job.insurer.id, outcome, attempts, "insurer finished");
        InsurerOutcome {
            insurer_id: job.insurer.id.clone(),
            outcome,
            published,
        }
    }

    fn quote_event(
        &self,
        job: &Job,
        version: u32,
        status: QuoteStatus,
        quote: Option<osago_core::insurer::Quote>,
        reason: Option<String>,
    ) -> InsurerEvent {
        InsurerEvent::Quote(QuoteEvent {
            event_id: EventId::random(),
            request_id: job.request_id,
            insurer_id: job.insurer.id.clone(),
            occurred_at: self.clock.now(),
            deadline_at: job.deadline_at,
            version,
            insurers_total: job.insurers_total,
            status,
            quote,
            reason,
        })
    }

    async fn publish_with_retry(&self, event: &InsurerEvent) -> bool {
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=self.config.publish_attempts.max(1) {
            match self.sink.publish(event).await {
                Ok(()) => return true,
                Err(err) => {
                    tracing::warn!(request_id = %event.request_id(), insurer = %event.insurer_id(), attempt, error = %err, "publishing an event failed");
                    if attempt < self.config.publish_attempts {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        self.metrics.publish_failures.inc();
        tracing::error!(request_id = %event.request_id(), insurer = %event.insurer_id(), "event dropped after every publish attempt");
        false
    }

    async fn save_progress(&self, job: &Job, calls: &Calls, version: u32, finished: bool) {
        let progress = InsurerProgress {
            request_id: job.request_id,
            insurer_id: job.insurer.id.clone(),
            application_id: calls.application_id.clone(),
            attempts: calls.attempts(),
            version,
            deadline_at: job.deadline_at,
            finished,
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

#[cfg(test)]
mod tests;
