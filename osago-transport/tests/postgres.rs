//! The PostgreSQL adapter on a private PostgreSQL: the conformance suites of
//! the request store, the outbox and the read model, plus what only SQL can
//! get wrong (atomicity, concurrent relays, retention, audit).
//!
//! Each test starts its own server and gives every check a fresh database.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use osago_core::events::QuoteStatus;
use osago_core::ports::{OutboxStore, ReadModel, RequestStore};
use osago_testkit::Postgres;
use osago_transport::conformance::{outbox, read_model};
use osago_transport::postgres::{PostgresConfig, PostgresStore};
use proptest::test_runner::{Config, TestRunner};

mod common;

struct Server {
    postgres: Postgres,
    databases: usize,
}

impl Server {
    async fn start() -> Self {
        Self {
            postgres: Postgres::start().await,
            databases: 0,
        }
    }

    /// A store on a fresh database.
    async fn store_with(&mut self, config: PostgresConfig) -> PostgresStore {
        self.databases += 1;
        let url = self
            .postgres
            .create_database(&format!("t{}", self.databases))
            .await;
        PostgresStore::connect(&url, config).await.expect("connect")
    }

    async fn store(&mut self) -> PostgresStore {
        self.store_with(PostgresConfig::default()).await
    }
}

#[tokio::test]
async fn conformance_suites() {
    let mut server = Server::start().await;
    outbox::created_requests_are_found(&server.store().await).await;
    outbox::claims_are_ordered_and_leased(&server.store().await).await;
    outbox::expired_leases_are_claimed_again(&server.store().await).await;
    outbox::published_messages_are_removed(&server.store().await).await;
    outbox::failures_dead_letter(&server.store().await).await;
    outbox::creating_wakes_the_waiting_relay(&server.store().await).await;
    outbox::dead_messages_are_requeued(&server.store().await).await;
    outbox::expired_messages_are_set_aside(&server.store().await).await;
    outbox::the_backlog_counts_what_waits(&server.store().await).await;
    let retention = Duration::from_secs(1);
    let short = server
        .store_with(PostgresConfig {
            retention,
            ..PostgresConfig::default()
        })
        .await;
    outbox::outbox_rows_do_not_outlive_the_retention(&short, retention).await;
    let model = server.store().await;
    read_model::newer_versions_apply(&model).await;
    read_model::duplicates_and_stale_events_change_nothing(&model).await;
    read_model::final_rows_keep_their_start(&model).await;
    read_model::unknown_requests_have_no_rows(&model).await;
}

#[tokio::test]
async fn a_failed_outbox_insert_rolls_the_request_back() {
    let mut server = Server::start().await;
    let store = server.store().await;
    let (event, _, _) = outbox::request_event();
    store
        .create(
            &event,
            &osago_core::request::ConsentRecord::received(&event, [127, 0, 0, 1].into()),
        )
        .await
        .unwrap();
    // Same event (outbox id) again for another request: the outbox insert
    // fails, so the new request must not stay.
    let (mut other, _, _) = outbox::request_event();
    other.event_id = event.event_id;
    assert!(store
        .create(
            &other,
            &osago_core::request::ConsentRecord::received(&other, [127, 0, 0, 1].into())
        )
        .await
        .is_err());
    assert!(store.summary(&other.request_id).await.unwrap().is_none());
    let requests: i64 = sqlx::query_scalar("SELECT count(*) FROM osago_requests")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(requests, 1);

    // Concurrent relays never claim the same message, and clean up.
    let store = Arc::new(server.store().await);
    for _ in 0..200 {
        let (event, _, _) = outbox::request_event();
        store
            .create(
                &event,
                &osago_core::request::ConsentRecord::received(&event, [127, 0, 0, 1].into()),
            )
            .await
            .unwrap();
    }
    let mut relays = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        relays.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store.claim(7, Duration::from_secs(60)).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                let ids: Vec<_> = batch.iter().map(|m| m.id).collect();
                store.mark_published(&ids).await.unwrap();
                mine.extend(ids);
            }
        }));
    }
    let mut all = Vec::new();
    for relay in relays {
        all.extend(relay.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (200, 200));
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM osago_outbox")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(left, 0, "published rows are cleaned up");
}

#[tokio::test]
async fn retention_and_audit() {
    let mut server = Server::start().await;
    let store = server
        .store_with(PostgresConfig {
            retention: Duration::from_secs(1),
            ..PostgresConfig::default()
        })
        .await;
    let (event, summary, _) = outbox::request_event();
    store
        .create(
            &event,
            &osago_core::request::ConsentRecord::received(&event, [127, 0, 0, 1].into()),
        )
        .await
        .unwrap();
    store
        .apply(&read_model::quote_event(
            summary.request_id,
            "one",
            1,
            QuoteStatus::Pending,
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(store.summary(&summary.request_id).await.unwrap().is_none());
    // The request, its quote row and its (unpublished) outbox message.
    assert_eq!(store.purge_expired().await.unwrap(), 3);
    let personal: i64 = sqlx::query_scalar("SELECT count(*) FROM osago_requests")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        personal, 0,
        "personal data is deleted with the request's retention"
    );

    let store = server
        .store_with(PostgresConfig {
            audit: true,
            ..PostgresConfig::default()
        })
        .await;
    let request = osago_core::RequestId::random();
    let pending = read_model::quote_event(request, "one", 1, QuoteStatus::Pending);
    let timeout = read_model::error_event(request, "one", 2);
    for event in [&pending, &timeout, &timeout, &pending] {
        store.apply(event).await.unwrap();
    }
    let rows: Vec<(String, i32, bool)> =
        sqlx::query_as("SELECT stream, version, applied FROM osago_audit ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(
        rows,
        [
            ("quotes".to_owned(), 1, true),
            ("errors".to_owned(), 2, true)
        ],
        "redeliveries of the same event are recorded once"
    );
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_not_a_hang() {
    let port = osago_testkit::free_port();
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        PostgresStore::connect(
            &format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            PostgresConfig {
                acquire_timeout: Duration::from_secs(2),
                ..PostgresConfig::default()
            },
        ),
    )
    .await
    .expect("gives up by itself");
    assert!(result.is_err());
}

/// Batches applied in one transaction each change exactly what the events
/// would one by one (the version guard holds inside a batch and across
/// batches), for random histories and cuts, on the real database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_keep_the_version_guard() {
    let mut server = Server::start().await;
    let store = Arc::new(server.store().await);
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    runner
        .run(&common::histories(), |(steps, cuts)| {
            let store = store.clone();
            tokio::task::block_in_place(|| {
                handle.block_on(read_model::batches_keep_the_version_guard(
                    &*store, &steps, &cuts,
                ))
            });
            Ok(())
        })
        .unwrap();
}
