//! The fan-out engine and its per-insurer pipeline.

use osago_core::trace::WithTrace;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use osago_core::events::{
    ErrorEvent, ErrorKind, InsurerEvent, QuoteEvent, QuoteStatus, RequestEvent,
};
use osago_core::ids::idempotency_key;
use osago_core::insurer::{Application, InsurerError, PollOutcome};
use osago_core::ports::{
    InsurerClient, InsurerProgress, PortError, QuoteSink, ResilienceStore, StateStore,
};
use osago_core::{Clock, EventId, InsurerId, QuoteRequest, RequestId};
use tokio::task::JoinSet;
use tokio::time::Instant;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::config::EngineConfig;
use crate::guard::{CallError, CallKind, Guard, Ranks};
use crate::metrics::{EngineMetrics, InsurerLabel, OutcomeLabels};
use crate::resilience::{
    racers, AnswerTimes, Backoff, BackoffConfig, PollConfig, PollPlan, RaceRank,
};

mod events;
mod insurer;
mod lease;
mod requirements;

use insurer::{Calls, Finished, Job, Race};
use requirements::Requirements;

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
    /// Fields each insurer is known to require, learned from its refusals.
    requirements: HashMap<InsurerId, Requirements>,
    sink: Arc<dyn QuoteSink>,
    state: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    metrics: EngineMetrics,
    /// The shared policy store and this pod's holder name, when shared.
    shared: Option<(Arc<dyn ResilienceStore>, String)>,
    /// Requests in flight here, whose leases this pod renews.
    owned: Mutex<HashSet<RequestId>>,
    /// When the engine started its first request: answer times learned
    /// from nothing are kept only once a whole deadline has passed since
    /// (see `Engine::keep_answer_times`).
    started: std::sync::OnceLock<Instant>,
    /// Held by the keep of answer times running.
    keeping: tokio::sync::Mutex<()>,
    /// Backoff between attempts to publish one event.
    publish_retry: Backoff,
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

impl Engine {
    /// Starts building an engine: insurers, sink, state store, clock,
    /// configuration, metrics and (optionally) the shared resilience store;
    /// [`EngineBuilder::build`](crate::EngineBuilder::build) validates it all.
    pub fn builder() -> crate::EngineBuilder {
        crate::EngineBuilder::default()
    }

    /// An engine asking `insurers`, unchecked (the builder checks first).
    pub(crate) fn assemble(
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
                let policy = config.resilience_for(&insurer.id);
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
        let requirements = insurers
            .iter()
            .map(|insurer| {
                (
                    insurer.id.clone(),
                    Requirements::new(insurer.id.clone(), config.requirements.clone()),
                )
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                insurers,
                guards,
                answers,
                requirements,
                sink,
                state,
                clock,
                config,
                metrics,
                shared: None,
                owned: Mutex::default(),
                started: std::sync::OnceLock::new(),
                keeping: tokio::sync::Mutex::new(()),
                publish_retry: Backoff::new(BackoffConfig {
                    base: Duration::from_millis(100),
                    cap: Duration::from_secs(5),
                    max_attempts: u32::MAX,
                }),
            }),
        }
    }

    /// Shares every insurer's quota, concurrency cap and circuit breaker
    /// with the other pods using `store` (see [`crate::shared`]): replaces
    /// the engine's local guards with shared ones and starts their keeper
    /// tasks, which end when the engine is dropped. Only the builder (and
    /// tests) call it, on an engine nobody else holds yet, within a tokio
    /// runtime.
    pub(crate) fn with_resilience_store(
        mut self,
        store: Arc<dyn ResilienceStore>,
        shared: crate::shared::SharedConfig,
    ) -> Self {
        let inner =
            Arc::get_mut(&mut self.inner).expect("the engine is not shared before it is built");
        for insurer in &inner.insurers {
            let label = InsurerLabel {
                insurer: insurer.id.to_string(),
            };
            let guard = Guard::shared(
                label,
                inner.config.resilience_for(&insurer.id),
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
    pub(crate) async fn release_shared(&self) {
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

    /// Runs every insurer not finished in `progress`; `fresh` when nothing
    /// was published for the request yet.
    async fn launch(
        &self,
        event: RequestEvent,
        mut progress: BTreeMap<InsurerId, InsurerProgress>,
        fresh: bool,
    ) -> Result<FanOut, EngineError> {
        let inner = &self.inner;
        inner.started.get_or_init(Instant::now);
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
        // Which insurers race for the first price: the quickest few.
        let ranks: Vec<RaceRank> = inner
            .insurers
            .iter()
            .map(|insurer| {
                if inner.guards[&insurer.id].pressure() >= BUSY_PRESSURE {
                    RaceRank::Busy
                } else {
                    inner.answers[&insurer.id].race_rank()
                }
            })
            .collect();
        let racing = racers(&ranks, inner.config.poll.racers);
        // A pod that left the request may have seen a price already: the
        // buyer has it, so nobody races for a first one.
        let priced_before = progress.values().any(|p| p.quoted);
        let jobs: Vec<(Insurer, Option<InsurerProgress>, (bool, RaceRank))> = inner
            .insurers
            .iter()
            .zip(racing.into_iter().zip(ranks))
            .filter_map(|(insurer, racing)| {
                let resume = progress.remove(&insurer.id);
                if resume.as_ref().is_some_and(|p| p.finished) {
                    return None;
                }
                Some((insurer.clone(), resume, racing))
            })
            .collect();
        // A racer picked by its rank polls at `racer_price` while another
        // insurer that mostly quotes stands by for the request (not racing,
        // its answer still to come: a resumed request's finished insurers
        // are gone from `jobs`), until every such insurer has answered
        // (`Race::backed`); one racing alone, unknown or busy, or backed
        // only by insurers that seldom quote, at the lone price.
        let backer = |racer: bool, rank: &RaceRank| !racer && matches!(rank, RaceRank::Median(_));
        let standing_by = jobs
            .iter()
            .any(|(_, _, (racer, rank))| backer(*racer, rank));
        // A request another pod began has spent time waiting on its racers
        // already: since it was accepted, by the wall clock.
        let waited = if fresh {
            Duration::ZERO
        } else {
            (now - event.occurred_at).to_std().unwrap_or(Duration::ZERO)
        };
        let race = Arc::new(Race::new(
            jobs.iter().filter(|(_, _, (racer, _))| *racer).count(),
            jobs.iter()
                .filter(|(_, _, (racer, rank))| backer(*racer, rank))
                .count(),
            overdue_at(&inner.config.poll, &inner.answers, &jobs, waited),
        ));
        if priced_before {
            race.quoted();
        }
        let jobs: Vec<Job> = jobs
            .into_iter()
            .map(|(insurer, resume, (racer, rank))| Job {
                request_id,
                insurer,
                request: request.clone(),
                deadline_at: event.deadline_at,
                deadline,
                insurers_total,
                resume,
                race: race.clone(),
                racer,
                backed: racer && standing_by && matches!(rank, RaceRank::Median(_)),
                backer: backer(racer, &rank),
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
                let event = inner.quote_event(job, 1, QuoteStatus::Pending, None, None);
                let result = inner.sink.publish(&event).await;
                if result.is_ok() {
                    inner.published(&event);
                }
                result
            });
        for result in futures::future::join_all(pending).await {
            if let Err(err) = result {
                // The lease expires and another pod (or this one) resumes.
                inner.owned.lock().expect("owned lock").remove(&request_id);
                return Err(EngineError::Publish(err));
            }
        }
        // The request's trace (its record's, or a new root the intake made):
        // each insurer's work is a child span of it, and its calls and
        // events carry it on.
        let trace = osago_core::trace::current();
        let trace_id = trace.map(|t| t.trace_id());
        tracing::info!(
            request_id = %request_id,
            trace_id = trace_id.as_deref(),
            insurers = jobs.len(),
            "fan-out started"
        );
        for job in jobs {
            let engine = self.inner.clone();
            let done = done.clone();
            // Every line an insurer's work logs names the request, the
            // insurer and the trace (JSON logs carry the span's fields).
            let span = tracing::info_span!(
                "insurer",
                request_id = %job.request_id,
                insurer = %job.insurer.id,
                trace_id = trace_id.as_deref(),
            );
            let context = trace.map(|parent| osago_core::trace::start(&span, Some(&parent)));
            let work = async move {
                let outcome = engine.run(job).await;
                done.one_finished(&engine).await;
                outcome
            }
            .instrument(span);
            match context {
                Some(context) => fan_out.tasks.spawn(work.in_trace(context)),
                None => fan_out.tasks.spawn(work),
            };
        }
        Ok(fan_out)
    }
}

/// When a request's racers are overdue: its fan-out's start plus the
/// slowest racer's `racer_patience` percentile of learned quote times, less
/// what the request has `waited` already (a fan-out resumed from another
/// pod); `None` (the others wait for the racers' answers) at a patience of
/// 1, or when a racer has no quote time learned.
fn overdue_at(
    poll: &PollConfig,
    answers: &HashMap<InsurerId, AnswerTimes>,
    jobs: &[(Insurer, Option<InsurerProgress>, (bool, RaceRank))],
    waited: Duration,
) -> Option<Instant> {
    if poll.racer_patience >= 1.0 {
        return None;
    }
    let mut patience = Duration::ZERO;
    for (insurer, _, (racer, _)) in jobs {
        if *racer {
            patience = patience.max(answers[&insurer.id].quote_percentile(poll.racer_patience)?);
        }
    }
    Some(Instant::now() + patience.saturating_sub(waited))
}

/// An insurer with this many calls waiting per slot of its cap is busy: it
/// races for every request's first price (`RaceRank::Busy`).
const BUSY_PRESSURE: f64 = 1.0;

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
}

#[cfg(test)]
mod tests;
