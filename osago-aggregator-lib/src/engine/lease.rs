//! Leases: this pod's requests kept alive, and requests of pods that died
//! taken over.

use super::*;

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
}
