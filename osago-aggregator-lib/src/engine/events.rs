//! The events an insurer's run ends with, and their publishing.

use super::*;

impl Inner {
    /// Publishes the final event and records the insurer as finished.
    pub(super) async fn finish(
        &self,
        job: &Job,
        result: Result<PollOutcome, InsurerError>,
        calls: Calls,
        version: u32,
    ) -> InsurerOutcome {
        let attempts = calls.attempts();
        let quoted = matches!(result, Ok(PollOutcome::Quoted(_)));
        let (event, outcome) = match result {
            Ok(PollOutcome::Quoted(quote)) => (
                self.quote_event(
                    job,
                    version,
                    QuoteStatus::Quoted,
                    Some(self.checked(job, quote)),
                    None,
                ),
                "quoted",
            ),
            Ok(PollOutcome::Declined { reason }) => (
                self.quote_event(
                    job,
                    version,
                    QuoteStatus::Declined,
                    None,
                    self.insurer_text(job, &reason),
                ),
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
        self.save_progress(job, &calls, version, Finished::Yes { quoted })
            .await;
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

    /// An insurer's free text as it may be passed on (events, read model,
    /// page): filtered for personal data; a withheld one is counted.
    fn insurer_text(&self, job: &Job, text: &str) -> Option<String> {
        let passed = osago_core::insurer_text::sanitize(text, &job.request);
        if passed.is_none() && !text.trim().is_empty() {
            self.metrics
                .insurer_texts_withheld
                .get_or_create(&InsurerLabel {
                    insurer: job.insurer.id.to_string(),
                })
                .inc();
        }
        passed
    }

    /// `quote` with its premium checked against the request's lawful
    /// range; a premium outside it is counted per insurer.
    fn checked(
        &self,
        job: &Job,
        mut quote: osago_core::insurer::Quote,
    ) -> osago_core::insurer::Quote {
        quote.message = quote
            .message
            .take()
            .and_then(|message| self.insurer_text(job, &message));
        let start = job.request.policy.effective_start(self.clock.today());
        let Ok(range) = osago_core::tariff::lawful_range(&job.request, start) else {
            return quote;
        };
        let check = range.check(quote.premium_kopecks);
        let verdict = match check.verdict {
            osago_core::tariff::PriceVerdict::Within => None,
            osago_core::tariff::PriceVerdict::BelowMinimum => Some("below_minimum"),
            osago_core::tariff::PriceVerdict::AboveMaximum => Some("above_maximum"),
            osago_core::tariff::PriceVerdict::Unknown => Some("unknown"),
        };
        if let Some(verdict) = verdict {
            self.metrics
                .quotes_outside_range
                .get_or_create(&crate::metrics::VerdictLabels {
                    insurer: job.insurer.id.to_string(),
                    verdict: verdict.to_owned(),
                })
                .inc();
            tracing::info!(request_id = %job.request_id, insurer = %job.insurer.id, verdict, "a premium outside the lawful range");
        }
        quote.price_check = Some(check);
        quote
    }

    pub(super) fn quote_event(
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

    /// Observes an acknowledged event's time from creation to the ack, on
    /// the injected clock (a clock gone back reads as 0).
    pub(super) fn published(&self, event: &InsurerEvent) {
        let took = (self.clock.now() - event.occurred_at())
            .to_std()
            .unwrap_or_default();
        self.metrics.publish_seconds.observe(took.as_secs_f64());
    }

    pub(super) async fn publish_with_retry(&self, event: &InsurerEvent) -> bool {
        for attempt in 1..=self.config.publish_attempts.max(1) {
            match self.sink.publish(event).await {
                Ok(()) => {
                    self.published(event);
                    return true;
                }
                Err(err) => {
                    tracing::warn!(request_id = %event.request_id(), insurer = %event.insurer_id(), attempt, error = %err, "publishing an event failed");
                    if attempt < self.config.publish_attempts {
                        // Full jitter, 100 ms doubling up to 5 s.
                        tokio::time::sleep(self.publish_retry.jittered(attempt - 1)).await;
                    }
                }
            }
        }
        self.metrics.publish_failures.inc();
        tracing::error!(request_id = %event.request_id(), insurer = %event.insurer_id(), "event dropped after every publish attempt");
        false
    }
}
