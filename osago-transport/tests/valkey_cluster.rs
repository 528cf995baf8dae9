//! The Valkey adapter on a three-node Valkey (Redis) cluster
//! (`redis+cluster://`): the state store's conformance suite (take-over
//! through the sharded in-flight index included), the shared limiter and
//! the shared resilience policies. Every multi-key script must stay in one
//! slot, or the cluster answers CROSSSLOT.

#![cfg(feature = "valkey")]

use osago_testkit::ValkeyCluster;
use osago_transport::conformance::{limiter, resilience, state_store};
use osago_transport::valkey::{ValkeyConfig, ValkeyStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_conforms_on_a_cluster() {
    let cluster = ValkeyCluster::start().await;
    let store = ValkeyStore::connect(&cluster.url(), ValkeyConfig::default())
        .await
        .expect("connect to the cluster");
    state_store::progress_round_trips_and_replaces(&store).await;
    state_store::progress_of_unknown_request_is_empty(&store).await;
    state_store::entries_expire_after_their_ttl(&store).await;
    state_store::requests_are_independent(&store).await;
    state_store::begin_is_true_only_once(&store).await;
    state_store::expired_leases_are_taken_over_once(&store).await;
    state_store::take_over_reaches_every_request_and_keeps_to_max(&store).await;
    state_store::answer_times_round_trip_replace_and_expire(&store).await;
    limiter::bursts_then_limits_then_recovers(&store).await;
    limiter::keys_are_independent(&store).await;
    resilience::quota_is_taken_in_blocks(&store).await;
    resilience::slots_are_shared_within_the_cap(&store).await;
    resilience::leases_expire_and_release(&store).await;
    resilience::breaker_values_expire(&store).await;
    store.ping().await.expect("ping");
}
