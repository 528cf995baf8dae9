//! [`EngineBuilder`]: the one way to make an [`Engine`].

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use osago_core::ports::{InsurerClient, QuoteSink, ResilienceStore, StateStore};
use osago_core::{Clock, InsurerId, SystemClock};

use crate::config::{ConfigError, EngineConfig, Problems};
use crate::engine::{Engine, Insurer};
use crate::metrics::EngineMetrics;

/// Builds an [`Engine`] and checks everything it is given at once.
///
/// Required: at least one insurer, a [`QuoteSink`] and a [`StateStore`].
/// Optional: the clock ([`SystemClock`]), the [`EngineConfig`] (its
/// defaults), the metrics (unregistered), and a [`ResilienceStore`] that
/// shares every insurer's quota, concurrency cap and breaker with the other
/// pods (per [`EngineConfig::sharing`]).
///
/// ```
/// use std::sync::Arc;
/// use osago_aggregator_lib::{Engine, EngineConfig};
/// # use osago_core::{QuoteRequest, InsurerId};
/// # use osago_core::insurer::{Application, InsurerError, PollOutcome};
/// # use osago_core::ports::InsurerClient;
/// # use osago_transport::memory::{MemoryBus, MemoryStateStore};
/// # #[derive(Debug)] struct Nobody;
/// # #[async_trait::async_trait]
/// # impl InsurerClient for Nobody {
/// #     async fn create_application(&self, _: &str, _: &QuoteRequest) -> Result<Application, InsurerError> { unimplemented!() }
/// #     async fn poll_quote(&self, _: &str) -> Result<PollOutcome, InsurerError> { unimplemented!() }
/// # }
/// let mut config = EngineConfig::default();
/// config.lease = std::time::Duration::ZERO; // a mistake
/// config.resilience.concurrency.max_in_flight = 0; // another
/// let err = Engine::builder()
///     .insurer(InsurerId::new("nobody").unwrap(), Arc::new(Nobody))
///     .sink(Arc::new(MemoryBus::new()))
///     .state_store(Arc::new(MemoryStateStore::new()))
///     .config(config)
///     .build()
///     .unwrap_err();
/// assert!(err.names("lease") && err.names("resilience.concurrency.max_in_flight"));
/// ```
#[derive(Default)]
pub struct EngineBuilder {
    insurers: Vec<Insurer>,
    sink: Option<Arc<dyn QuoteSink>>,
    state: Option<Arc<dyn StateStore>>,
    clock: Option<Arc<dyn Clock>>,
    config: EngineConfig,
    metrics: Option<EngineMetrics>,
    shared: Option<Arc<dyn ResilienceStore>>,
}

impl fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("insurers", &self.insurers.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// Adds an insurer to ask.
    pub fn insurer(mut self, id: InsurerId, client: Arc<dyn InsurerClient>) -> Self {
        self.insurers.push(Insurer { id, client });
        self
    }

    /// Adds several insurers to ask.
    pub fn insurers(mut self, insurers: impl IntoIterator<Item = Insurer>) -> Self {
        self.insurers.extend(insurers);
        self
    }

    /// Where quote and error events go (the quote and error streams).
    pub fn sink(mut self, sink: Arc<dyn QuoteSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Where dedup marks, leases and per-insurer progress live.
    pub fn state_store(mut self, state: Arc<dyn StateStore>) -> Self {
        self.state = Some(state);
        self
    }

    /// The wall clock for event stamps (default [`SystemClock`]); deadlines
    /// always run on `tokio::time`.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The whole configuration tree (default [`EngineConfig::default`]).
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// The metrics handles (default: unregistered ones); see
    /// [`EngineMetrics::register`].
    pub fn metrics(mut self, metrics: EngineMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Shares every insurer's quota, concurrency cap and circuit breaker
    /// with the other pods through `store`, per [`EngineConfig::sharing`].
    /// [`EngineBuilder::build`] must then run within a tokio runtime (it
    /// starts the keeper tasks, which end when the engine is dropped).
    pub fn shared_resilience(mut self, store: Arc<dyn ResilienceStore>) -> Self {
        self.shared = Some(store);
        self
    }

    /// Checks everything and builds the engine; every problem is named in
    /// the one error.
    pub fn build(self) -> Result<Engine, ConfigError> {
        let mut p = Problems::default();
        if self.insurers.is_empty() {
            p.push("insurers", "at least one insurer is required");
        }
        let mut seen = BTreeSet::new();
        for insurer in &self.insurers {
            if !seen.insert(insurer.id.as_str()) {
                p.push(&format!("insurers.{}", insurer.id), "named twice");
            }
        }
        if self.sink.is_none() {
            p.push("sink", "is required");
        }
        if self.state.is_none() {
            p.push("state_store", "is required");
        }
        self.config.check(&mut p);
        for id in self.config.resilience_overrides.keys() {
            if !seen.contains(id.as_str()) {
                p.push(&format!("resilience_overrides.{id}"), "no such insurer");
            }
        }
        p.into_result()?;
        let (Some(sink), Some(state)) = (self.sink, self.state) else {
            unreachable!("checked above");
        };
        let engine = Engine::assemble(
            self.insurers,
            sink,
            state,
            self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            self.config.clone(),
            self.metrics.unwrap_or_default(),
        );
        Ok(match self.shared {
            Some(store) => engine.with_resilience_store(store, self.config.sharing),
            None => engine,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_trait::async_trait;
    use osago_core::insurer::{Application, InsurerError, PollOutcome};
    use osago_core::QuoteRequest;
    use osago_transport::memory::{MemoryBus, MemoryStateStore};

    use super::*;

    #[derive(Debug)]
    struct Nobody;

    #[async_trait]
    impl InsurerClient for Nobody {
        async fn create_application(
            &self,
            _: &str,
            _: &QuoteRequest,
        ) -> Result<Application, InsurerError> {
            std::future::pending().await
        }

        async fn poll_quote(&self, _: &str) -> Result<PollOutcome, InsurerError> {
            std::future::pending().await
        }
    }

    fn id(text: &str) -> InsurerId {
        InsurerId::new(text).unwrap()
    }

    fn complete() -> EngineBuilder {
        Engine::builder()
            .insurer(id("alfa"), Arc::new(Nobody))
            .sink(Arc::new(MemoryBus::new()))
            .state_store(Arc::new(MemoryStateStore::new()))
    }

    #[test]
    fn a_complete_builder_builds() {
        let engine = complete().build().unwrap();
        assert_eq!(engine.insurers().count(), 1);
    }

    #[test]
    fn a_zero_lease_a_zero_cap_and_a_deadline_out_of_range_are_named_in_one_error() {
        let mut config = EngineConfig {
            lease: Duration::ZERO,
            insurer_deadline: Duration::from_secs(11 * 60),
            ..EngineConfig::default()
        };
        config.resilience.concurrency.max_in_flight = 0;
        let err = complete().config(config).build().unwrap_err();
        let fields: Vec<&str> = err.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "insurer_deadline",
                "lease",
                "resilience.concurrency.max_in_flight"
            ],
            "{err}"
        );
        let text = err.to_string();
        for field in fields {
            assert!(text.contains(field), "{text}");
        }
    }

    #[test]
    fn missing_parts_duplicates_and_stray_overrides_are_named() {
        let mut config = EngineConfig::default();
        config
            .resilience_overrides
            .insert("nobody".to_owned(), config.resilience.clone());
        let err = Engine::builder()
            .insurer(id("alfa"), Arc::new(Nobody))
            .insurer(id("alfa"), Arc::new(Nobody))
            .config(config)
            .build()
            .unwrap_err();
        for field in [
            "insurers.alfa",
            "sink",
            "state_store",
            "resilience_overrides.nobody",
        ] {
            assert!(err.names(field), "{field}: {err}");
        }
        let none = Engine::builder().build().unwrap_err();
        assert!(none.names("insurers"), "{none}");
    }
}
