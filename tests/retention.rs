//! Personal data is kept no longer than the retention, anywhere (issue
//! 14): after expiry no personal field of a request remains in PostgreSQL
//! (requests, offers, audit, outbox rows in every state, dead ones
//! included) or in Valkey (every key the aggregator writes), on the real
//! services. And one `--retention` drives both binaries.

use std::time::Duration;

use clap::Parser;
use deadpool_redis::redis;
use osago_core::ports::{OutboxStore, RequestStore, StateStore};
use osago_core::request::ConsentRecord;
use osago_testkit::{Postgres, Valkey};
use osago_transport::postgres::{PostgresConfig, PostgresStore};
use osago_transport::valkey::{ValkeyConfig, ValkeyStore};

/// Values of the sample request that are personal data, and the client
/// address the consent record keeps.
fn personal_values(event: &osago_core::RequestEvent) -> Vec<String> {
    let r = &event.request;
    let mut values = vec![
        r.owner.full_name.clone(),
        r.owner.passport.number.clone(),
        r.owner.address.street.clone(),
        r.contact.phone.clone(),
        r.contact.email.clone(),
        "203.0.113.77".to_owned(),
    ];
    values.extend(r.vehicle.vin.clone());
    values.extend(r.vehicle.plate.clone());
    for driver in &r.drivers.list {
        values.push(driver.licence.number.clone());
    }
    values
}

fn found(haystack: &str, values: &[String]) -> Vec<String> {
    values
        .iter()
        .filter(|v| haystack.contains(v.as_str()))
        .cloned()
        .collect()
}

/// Every row of every table of ours, as JSON text.
async fn dump_postgres(url: &str) -> String {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(tables.iter().any(|t| t == "osago_requests"), "{tables:?}");
    let mut dump = String::new();
    for table in tables {
        let rows: Vec<String> =
            sqlx::query_scalar(&format!("SELECT row_to_json(t)::text FROM \"{table}\" t"))
                .fetch_all(&pool)
                .await
                .unwrap();
        for row in rows {
            dump.push_str(&table);
            dump.push(' ');
            dump.push_str(&row);
            dump.push('\n');
        }
    }
    dump
}

#[tokio::test]
async fn after_expiry_no_personal_field_remains_in_postgres() {
    let postgres = Postgres::start().await;
    let url = postgres.create_database("osago").await;
    let retention = Duration::from_secs(2);
    let store = PostgresStore::connect(
        &url,
        PostgresConfig {
            retention,
            audit: true,
            ..PostgresConfig::default()
        },
    )
    .await
    .unwrap();
    // Three requests: one pending in the outbox, one dead-lettered, one
    // published; each with its consent record (the client address).
    let mut events = Vec::new();
    for _ in 0..3 {
        let (event, _, _) = osago_transport::conformance::outbox::request_event();
        let consent = ConsentRecord::of(
            &event.request,
            event.occurred_at,
            "203.0.113.77".parse().unwrap(),
        );
        store.create(&event, &consent).await.unwrap();
        events.push(event);
    }
    let claimed = store.claim(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(claimed.len(), 3);
    store.mark_failed(claimed[0].id, 1).await.unwrap();
    store.mark_published(&[claimed[1].id]).await.unwrap();
    assert_eq!(store.dead_count().await.unwrap(), 1);

    let values = personal_values(&events[0]);
    let before = dump_postgres(&url).await;
    assert_eq!(
        found(&before, &values),
        values,
        "the dump must see the personal data while it is kept"
    );
    // Nothing is purged before its time.
    assert_eq!(store.purge_expired().await.unwrap(), 0);

    tokio::time::sleep(retention + Duration::from_millis(500)).await;
    let removed = store.purge_expired().await.unwrap();
    assert!(removed >= 5, "removed {removed} rows");
    let after = dump_postgres(&url).await;
    assert!(
        found(&after, &values).is_empty(),
        "personal data left after the retention: {:?}",
        found(&after, &values)
    );
    for event in &events {
        assert!(store.summary(&event.request_id).await.unwrap().is_none());
    }
}

/// Every key in Valkey with its value, as text.
async fn dump_valkey(url: &str) -> (Vec<String>, String) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut dump = String::new();
    for key in &keys {
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let value: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![redis::cmd("GET")
                .arg(key)
                .query_async::<Option<Vec<u8>>>(&mut conn)
                .await
                .unwrap()
                .unwrap_or_default()],
            "hash" => redis::cmd("HGETALL")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .unwrap(),
            other => panic!("a {other} key {key}: the dump must learn it"),
        };
        dump.push_str(key);
        for part in value {
            dump.push(' ');
            dump.push_str(&String::from_utf8_lossy(&part));
        }
        dump.push('\n');
    }
    (keys, dump)
}

#[tokio::test]
async fn after_expiry_no_personal_field_remains_in_valkey() {
    let valkey = Valkey::start().await;
    let store = ValkeyStore::connect(&valkey.url(), ValkeyConfig::default())
        .await
        .unwrap();
    // What the aggregator writes for a request it is working on, with the
    // retention as its TTL, left as a crashed pod leaves it (never ended).
    let retention = Duration::from_secs(2);
    let (event, _, _) = osago_transport::conformance::outbox::request_event();
    assert!(store
        .begin_request(&event, Duration::from_secs(1), retention, retention)
        .await
        .unwrap());
    let progress = osago_core::ports::InsurerProgress {
        request_id: event.request_id,
        insurer_id: osago_core::InsurerId::new("alfa").unwrap(),
        application_id: Some("app-1".to_owned()),
        attempts: 1,
        version: 1,
        deadline_at: event.deadline_at,
        finished: false,
        quoted: false,
    };
    store.save_progress(&progress, retention).await.unwrap();

    let values = personal_values(&event)
        .into_iter()
        .filter(|v| v != "203.0.113.77")
        .collect::<Vec<_>>();
    let (keys, before) = dump_valkey(&valkey.url()).await;
    assert!(!keys.is_empty());
    assert_eq!(
        found(&before, &values),
        values,
        "the dump must see the request while it is kept"
    );
    tokio::time::sleep(retention + Duration::from_millis(1_500)).await;
    let (keys, after) = dump_valkey(&valkey.url()).await;
    assert!(
        found(&after, &values).is_empty(),
        "personal data left in Valkey after the retention: {keys:?}"
    );
    assert!(
        !after.contains(&event.request_id.to_string()),
        "a key of the request outlived the retention: {keys:?}"
    );
}

#[test]
fn one_retention_setting_drives_both_binaries() {
    // The same variable for both, as one deployment sets it.
    let retention = "2h";
    let core = core_app::cli::Args::try_parse_from([
        "core-app",
        "--retention",
        retention,
        "--bus",
        "memory://",
    ])
    .unwrap();
    let plan = core.check().unwrap();
    let core_config = format!("{plan:?}");
    assert!(core_config.contains("retention: 7200s"), "{core_config}");

    let aggregator = osago_service::aggregator::Args::try_parse_from([
        "aggregator",
        "--retention",
        retention,
        "--insurer",
        "alfa=https://alfa.example/",
    ])
    .unwrap();
    let plan = aggregator.check().unwrap();
    // Every state-store key's TTL is capped by it ...
    assert_eq!(plan.engine.state_ttl, Duration::from_secs(7200));
    // ... and the request topic keeps records no longer.
    assert_eq!(plan.kafka.retention[0], Duration::from_secs(7200));
}
