//! The conformance suites against the memory adapters: one `#[tokio::test]`
//! per suite function, grouped by port. Real time (no paused clock), like
//! the real adapters' runs of the same suites.

use osago_transport::conformance::state_store;
use osago_transport::memory::MemoryStateStore;

mod common;

// StateStore

#[tokio::test]
async fn state_store_progress_round_trips_and_replaces() {
    state_store::progress_round_trips_and_replaces(&MemoryStateStore::new()).await;
}

#[tokio::test]
async fn state_store_progress_of_unknown_request_is_empty() {
    state_store::progress_of_unknown_request_is_empty(&MemoryStateStore::new()).await;
}

#[tokio::test]
async fn state_store_entries_expire_after_their_ttl() {
    state_store::entries_expire_after_their_ttl(&MemoryStateStore::new()).await;
}

#[tokio::test]
async fn state_store_requests_are_independent() {
    state_store::requests_are_independent(&MemoryStateStore::new()).await;
}

#[tokio::test]
async fn state_store_begin_is_true_only_once() {
    state_store::begin_is_true_only_once(&MemoryStateStore::new()).await;
}

#[tokio::test]
async fn state_store_expired_leases_are_taken_over_once() {
    state_store::expired_leases_are_taken_over_once(&MemoryStateStore::new()).await;
}

#[tokio::test]
async fn state_store_answer_times_round_trip_replace_and_expire() {
    state_store::answer_times_round_trip_replace_and_expire(&MemoryStateStore::new()).await;
}

// Bus (EventPublisher, QuoteSink, RequestSource, OutcomeSource, LiveFeed)

#[tokio::test]
async fn bus_published_requests_reach_every_group() {
    let bus = osago_transport::memory::MemoryBus::new();
    osago_transport::conformance::bus::published_requests_reach_every_group(&bus, &bus).await;
}

#[tokio::test]
async fn bus_group_members_share_the_events() {
    let bus = osago_transport::memory::MemoryBus::new();
    osago_transport::conformance::bus::group_members_share_the_events(&bus, &bus).await;
}

#[tokio::test]
async fn bus_undecodable_requests_are_skipped() {
    let bus = osago_transport::memory::MemoryBus::new();
    osago_transport::conformance::bus::undecodable_requests_are_skipped(&bus, &bus).await;
}

#[tokio::test]
async fn bus_acked_requests_are_not_redelivered_to_the_group() {
    let bus = osago_transport::memory::MemoryBus::new();
    osago_transport::conformance::bus::acked_requests_are_not_redelivered_to_the_group(&bus, &bus)
        .await;
}

#[tokio::test]
async fn bus_insurer_events_reach_outcome_subscribers_in_order_per_key() {
    let bus = osago_transport::memory::MemoryBus::new();
    osago_transport::conformance::bus::insurer_events_reach_outcome_subscribers_in_order_per_key(
        &bus, &bus,
    )
    .await;
}

#[tokio::test]
async fn bus_live_feed_sees_events_published_after_follow() {
    let bus = osago_transport::memory::MemoryBus::new();
    osago_transport::conformance::bus::live_feed_sees_events_published_after_follow(&bus, &bus)
        .await;
}

#[tokio::test]
async fn bus_every_live_follower_sees_every_event() {
    let bus = osago_transport::memory::MemoryBus::new();
    osago_transport::conformance::bus::every_live_follower_sees_every_event(&bus, &bus).await;
}

#[tokio::test]
async fn bus_traces_travel_with_records() {
    let bus = osago_transport::memory::MemoryBus::new();
    osago_transport::conformance::bus::traces_travel_with_records(&bus, &bus, &bus, &bus, &bus)
        .await;
}

// RequestStore + OutboxStore

fn requests() -> osago_transport::memory::MemoryRequestStore {
    osago_transport::memory::MemoryRequestStore::new(std::time::Duration::from_secs(3600))
}

#[tokio::test]
async fn outbox_created_requests_are_found() {
    osago_transport::conformance::outbox::created_requests_are_found(&requests()).await;
}

#[tokio::test]
async fn outbox_claims_are_ordered_and_leased() {
    osago_transport::conformance::outbox::claims_are_ordered_and_leased(&requests()).await;
}

#[tokio::test]
async fn outbox_expired_leases_are_claimed_again() {
    osago_transport::conformance::outbox::expired_leases_are_claimed_again(&requests()).await;
}

#[tokio::test]
async fn outbox_published_messages_are_removed() {
    osago_transport::conformance::outbox::published_messages_are_removed(&requests()).await;
}

#[tokio::test]
async fn outbox_failures_dead_letter() {
    osago_transport::conformance::outbox::failures_dead_letter(&requests()).await;
}

#[tokio::test]
async fn outbox_dead_messages_are_requeued() {
    osago_transport::conformance::outbox::dead_messages_are_requeued(&requests()).await;
}

#[tokio::test]
async fn outbox_the_backlog_counts_what_waits() {
    osago_transport::conformance::outbox::the_backlog_counts_what_waits(&requests()).await;
}

#[tokio::test]
async fn outbox_expired_messages_are_set_aside() {
    osago_transport::conformance::outbox::expired_messages_are_set_aside(&requests()).await;
}

#[tokio::test]
async fn outbox_rows_do_not_outlive_the_retention() {
    let retention = std::time::Duration::from_secs(1);
    osago_transport::conformance::outbox::outbox_rows_do_not_outlive_the_retention(
        &osago_transport::memory::MemoryRequestStore::new(retention),
        retention,
    )
    .await;
}

#[tokio::test]
async fn outbox_creating_wakes_the_waiting_relay() {
    osago_transport::conformance::outbox::creating_wakes_the_waiting_relay(&requests()).await;
}

// ReadModel

fn read_model() -> osago_transport::memory::MemoryReadModel {
    osago_transport::memory::MemoryReadModel::new(std::time::Duration::from_secs(3600))
}

#[tokio::test]
async fn read_model_newer_versions_apply() {
    osago_transport::conformance::read_model::newer_versions_apply(&read_model()).await;
}

#[tokio::test]
async fn read_model_duplicates_and_stale_events_change_nothing() {
    osago_transport::conformance::read_model::duplicates_and_stale_events_change_nothing(
        &read_model(),
    )
    .await;
}

#[tokio::test]
async fn read_model_final_rows_keep_their_start() {
    osago_transport::conformance::read_model::final_rows_keep_their_start(&read_model()).await;
}

#[tokio::test]
async fn read_model_unknown_requests_have_no_rows() {
    osago_transport::conformance::read_model::unknown_requests_have_no_rows(&read_model()).await;
}

// RateLimiter

#[tokio::test]
async fn limiter_bursts_then_limits_then_recovers() {
    osago_transport::conformance::limiter::bursts_then_limits_then_recovers(
        &osago_transport::memory::MemoryRateLimiter::new(),
    )
    .await;
}

#[tokio::test]
async fn limiter_keys_are_independent() {
    osago_transport::conformance::limiter::keys_are_independent(
        &osago_transport::memory::MemoryRateLimiter::new(),
    )
    .await;
}

#[tokio::test]
async fn limiter_zero_rate_is_unlimited() {
    osago_transport::conformance::limiter::zero_rate_is_unlimited(
        &osago_transport::memory::MemoryRateLimiter::new(),
    )
    .await;
}

#[tokio::test]
async fn limiter_rates_above_one_per_millisecond_are_kept() {
    osago_transport::conformance::limiter::rates_above_one_per_millisecond_are_kept(
        &osago_transport::memory::MemoryRateLimiter::new(),
    )
    .await;
}

// ResilienceStore

#[tokio::test]
async fn policy_quota_is_taken_in_blocks() {
    osago_transport::conformance::resilience::quota_is_taken_in_blocks(
        &osago_transport::memory::MemoryResilienceStore::new(),
    )
    .await;
}

#[tokio::test]
async fn policy_slots_are_shared_within_the_cap() {
    osago_transport::conformance::resilience::slots_are_shared_within_the_cap(
        &osago_transport::memory::MemoryResilienceStore::new(),
    )
    .await;
}

#[tokio::test]
async fn policy_leases_expire_and_release() {
    osago_transport::conformance::resilience::leases_expire_and_release(
        &osago_transport::memory::MemoryResilienceStore::new(),
    )
    .await;
}

#[tokio::test]
async fn policy_breaker_values_expire() {
    osago_transport::conformance::resilience::breaker_values_expire(
        &osago_transport::memory::MemoryResilienceStore::new(),
    )
    .await;
}

/// The same property on the memory read model (its batches are the
/// port's default: one event after the other).
#[test]
fn batches_keep_the_version_guard() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let model = read_model();
    proptest::test_runner::TestRunner::default()
        .run(&common::histories(), |(steps, cuts)| {
            runtime.block_on(
                osago_transport::conformance::read_model::batches_keep_the_version_guard(
                    &model, &steps, &cuts,
                ),
            );
            Ok(())
        })
        .unwrap();
}
