//! Leases: this pod's requests kept alive, and requests of pods that died
//! taken over; and what the pod learned of insurers' answer times, kept
//! for the pods after it.

use super::*;

/// Fewer answers than this are not kept: they would replace a fuller
/// window another pod kept (the schedule learns nothing from fewer).
const KEEP_AT_LEAST: usize = 8;

impl Engine {
    /// Starts every insurer's learned answer times from what a pod kept in
    /// the state store ([`PollConfig::learned_keep_every`]), where nothing
    /// is learned yet: a restarted or added pod polls on what the pods
    /// before it learned from its first request. Returns the insurers so
    /// started. A store that fails is logged and skipped (the pod learns
    /// from nothing, as with nothing kept). The intake calls it before it
    /// reports ready.
    pub async fn restore_answer_times(&self) -> usize {
        if self.inner.config.poll.learned_keep_every.is_zero() {
            return 0;
        }
        // Every insurer at once: a slow store holds readiness up once.
        let loads = self.inner.insurers.iter().map(|insurer| async move {
            (
                insurer,
                self.inner.state.load_answer_times(&insurer.id).await,
            )
        });
        let mut restored = 0;
        for (insurer, loaded) in futures::future::join_all(loads).await {
            match loaded {
                Ok(samples) => {
                    if !samples.is_empty() && self.inner.answers[&insurer.id].seed(&samples) {
                        restored += 1;
                    }
                }
                Err(err) => tracing::warn!(
                    insurer = %insurer.id,
                    error = %err,
                    "loading kept answer times failed; this insurer's are learned from nothing"
                ),
            }
        }
        restored
    }

    /// Keeps every insurer's learned answer times (of at least 8 answers)
    /// in the state store for `PollConfig::learned_ttl`, replacing what
    /// any pod kept before, every insurer at once. Times learned from
    /// nothing are kept only once a whole `insurer_deadline` has passed
    /// since the engine's first request: before that they are only the answers quick
    /// enough to have come already, and would replace a fuller window with
    /// a biased one (a pod whose restore failed, or the first after the
    /// TTL). A window with no answer since it was last kept (or
    /// restored) is not kept again: what nothing refreshes expires with
    /// its TTL rather than being renewed forever by idle pods. Failures
    /// are logged: the next keep tries again.
    pub async fn keep_answer_times(&self) {
        let config = &self.inner.config;
        let poll = &config.poll;
        if poll.learned_keep_every.is_zero() {
            return;
        }
        // One keep at a time (the lease keeper's, the shutdown's, an
        // embedder's): the newest window is the last written.
        let _one = self.inner.keeping.lock().await;
        let whole_deadline = self
            .inner
            .started
            .get()
            .is_some_and(|started| started.elapsed() >= config.insurer_deadline);
        let saves = self.inner.insurers.iter().filter_map(|insurer| {
            let answers = &self.inner.answers[&insurer.id];
            let window = answers.unkept().filter(|window| {
                window.samples.len() >= KEEP_AT_LEAST && (window.seeded || whole_deadline)
            })?;
            Some(async move {
                let saved = self
                    .inner
                    .state
                    .save_answer_times(&insurer.id, &window.samples, poll.learned_ttl)
                    .await;
                match saved {
                    Ok(()) => answers.kept(window.recorded),
                    Err(err) => {
                        tracing::warn!(insurer = %insurer.id, error = %err, "keeping answer times failed");
                    }
                }
            })
        });
        futures::future::join_all(saves).await;
    }
}

impl Engine {
    /// Keeps this pod's leases alive and takes over requests whose pod
    /// died, until the returned task is aborted (or the engine dropped).
    /// Must be called within a tokio runtime; the aggregator service runs
    /// one per pod.
    pub(crate) fn spawn_lease_keeper(&self) -> tokio::task::JoinHandle<()> {
        let engine = Arc::downgrade(&self.inner);
        let config = self.inner.config.clone();
        tokio::spawn(async move {
            let mut renew = tokio::time::interval(config.lease / 3);
            let mut take = tokio::time::interval(config.take_over_every);
            // The learned answer times, kept every so often (not at once:
            // what was just restored is what is kept already).
            let keeping = !config.poll.learned_keep_every.is_zero();
            let every = config.poll.learned_keep_every.max(Duration::from_secs(1));
            let mut keep = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            take.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            keep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // On a task of its own: a slow store must not hold up the
            // leases' renewal (a keep still running is not doubled).
            let mut kept: Option<tokio::task::JoinHandle<()>> = None;
            loop {
                tokio::select! {
                    _ = keep.tick(), if keeping => {
                        let Some(inner) = engine.upgrade() else { return };
                        if kept.as_ref().is_none_or(|task| task.is_finished()) {
                            kept = Some(tokio::spawn(async move {
                                Engine { inner }.keep_answer_times().await;
                            }));
                        }
                    }
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
}
