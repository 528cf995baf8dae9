//! The Valkey state store on a private Valkey: the `StateStore` conformance
//! suite, plus what only a real server can get wrong (every key has a TTL,
//! an unreachable or silent server fails fast, data survives a restart).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use deadpool_redis::redis;
use osago_core::ports::{InsurerProgress, PortErrorKind, StateStore};
use osago_core::{InsurerId, RequestId};
use osago_testkit::{free_port, Valkey, ValkeyOptions};
use osago_transport::conformance::state_store;
use osago_transport::valkey::{in_flight_keys, request_key, ValkeyConfig, ValkeyStore};

async fn store_on(valkey: &Valkey) -> ValkeyStore {
    ValkeyStore::connect(&valkey.url(), ValkeyConfig::default())
        .await
        .expect("connect")
}

#[tokio::test]
async fn progress_round_trips_and_replaces() {
    let valkey = Valkey::start().await;
    state_store::progress_round_trips_and_replaces(&store_on(&valkey).await).await;
}

#[tokio::test]
async fn progress_of_unknown_request_is_empty() {
    let valkey = Valkey::start().await;
    state_store::progress_of_unknown_request_is_empty(&store_on(&valkey).await).await;
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let valkey = Valkey::start().await;
    state_store::entries_expire_after_their_ttl(&store_on(&valkey).await).await;
}

#[tokio::test]
async fn requests_are_independent() {
    let valkey = Valkey::start().await;
    state_store::requests_are_independent(&store_on(&valkey).await).await;
}

#[tokio::test]
async fn answer_times_round_trip_replace_and_expire() {
    let valkey = Valkey::start().await;
    state_store::answer_times_round_trip_replace_and_expire(&store_on(&valkey).await).await;
    // Kept with a TTL, as every key is.
    let ttls = key_ttls(&valkey).await;
    assert!(
        !ttls.is_empty() && ttls.values().all(|ttl| *ttl >= 0),
        "{ttls:?}"
    );
}

#[tokio::test]
async fn begin_is_true_only_once() {
    let valkey = Valkey::start().await;
    state_store::begin_is_true_only_once(&store_on(&valkey).await).await;
}

#[tokio::test]
async fn expired_leases_are_taken_over_once() {
    let valkey = Valkey::start().await;
    state_store::expired_leases_are_taken_over_once(&store_on(&valkey).await).await;
    let ttls = key_ttls(&valkey).await;
    assert!(
        ttls.values().all(|ttl| *ttl >= 0),
        "every key, the in-flight index too, has a TTL: {ttls:?}"
    );
}

#[tokio::test]
async fn take_over_reaches_every_shard() {
    let valkey = Valkey::start().await;
    state_store::take_over_reaches_every_request_and_keeps_to_max(&store_on(&valkey).await).await;
}

#[tokio::test]
async fn every_key_has_a_ttl_within_the_configured_one() {
    let valkey = Valkey::start().await;
    let store = store_on(&valkey).await;
    let ttl = Duration::from_secs(7_200);
    let mut requests = Vec::new();
    for _ in 0..5 {
        let id = RequestId::random();
        assert!(state_store::claim(&store, &id, ttl).await.expect("claim"));
        for insurer in ["alfa", "beta", "gamma"] {
            store
                .save_progress(&progress(&id, insurer), ttl)
                .await
                .expect("save");
        }
        requests.push(id);
    }
    // Sub-second TTLs round up to whole seconds, never down to none.
    let short = RequestId::random();
    assert!(
        state_store::claim(&store, &short, Duration::from_millis(300))
            .await
            .expect("claim")
    );

    let ttls = key_ttls(&valkey).await;
    // Per request: the claim, the event and the progress; the short one's
    // claim and event; the in-flight index of each shard they fall in.
    let shards = ttls.keys().filter(|k| in_flight_keys().contains(k)).count();
    assert!(shards >= 1);
    assert_eq!(
        ttls.len(),
        requests.len() * 3 + 2 + shards,
        "keys: {ttls:?}"
    );
    for (key, remaining) in &ttls {
        assert!(
            key.starts_with("osago:v2:{s")
                && (key.ends_with(":claim")
                    || key.ends_with(":event")
                    || key.ends_with(":progress")
                    || key.ends_with(":in-flight")),
            "key outside the layout: {key}"
        );
        assert!(
            *remaining > 0 && *remaining <= ttl.as_secs() as i64,
            "key {key} has ttl {remaining}"
        );
    }
    let short_key = request_key(&short, "claim");
    assert_eq!(ttls.get(&short_key), Some(&1));
    for id in requests {
        assert!(ttls.contains_key(&request_key(&id, "claim")));
        assert!(ttls.contains_key(&request_key(&id, "progress")));
    }
}

#[tokio::test]
async fn an_unreachable_server_fails_fast() {
    let config = ValkeyConfig {
        timeout: Duration::from_millis(500),
        ..ValkeyConfig::default()
    };
    let url = format!("redis://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let err = ValkeyStore::connect(&url, config.clone())
        .await
        .expect_err("nobody listens");
    assert!(
        matches!(
            err.kind(),
            PortErrorKind::Unavailable | PortErrorKind::Timeout
        ),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // A server that accepts but never answers: a timeout, not a hang.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_url = format!("redis://{}", silent.local_addr().expect("addr"));
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    let err = ValkeyStore::connect(&silent_url, config.clone())
        .await
        .expect_err("the server never answers");
    assert_eq!(err.kind(), PortErrorKind::Timeout, "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    hold.abort();

    // A server that goes away after connecting.
    let mut valkey = Valkey::start().await;
    let store = ValkeyStore::connect(&valkey.url(), config)
        .await
        .expect("connect");
    let id = RequestId::random();
    assert!(state_store::claim(&store, &id, Duration::from_secs(60))
        .await
        .expect("claim"));
    valkey.kill().await;
    let started = Instant::now();
    for result in [
        state_store::claim(&store, &id, Duration::from_secs(60))
            .await
            .err(),
        store.load_progress(&id).await.err(),
        store.ping().await.err(),
    ] {
        let err = result.expect("the server is gone");
        assert!(
            matches!(
                err.kind(),
                PortErrorKind::Unavailable | PortErrorKind::Timeout
            ),
            "{err}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));

    // And it recovers once the server is back.
    valkey.restart().await;
    store.ping().await.expect("ping after restart");
}

#[tokio::test]
async fn keys_survive_a_restart_with_appendonly() {
    // A kill loses nothing acknowledged only with `appendfsync always`:
    // with `everysec` Valkey may postpone the write while a background
    // fsync is slow (seen here under the full suite's load).
    let mut valkey = Valkey::start_with(ValkeyOptions {
        appendonly: true,
        fsync_always: true,
        ..ValkeyOptions::default()
    })
    .await;
    let store = store_on(&valkey).await;
    let ttl = Duration::from_secs(3_600);

    let id = RequestId::random();
    let alfa = progress(&id, "alfa");
    assert!(state_store::claim(&store, &id, ttl).await.expect("claim"));
    store.save_progress(&alfa, ttl).await.expect("save");
    valkey.stop().await;
    valkey.restart().await;
    assert!(!state_store::claim(&store, &id, ttl).await.expect("claim"));
    assert_eq!(store.load_progress(&id).await.expect("load"), vec![alfa]);

    // A crash loses nothing already acknowledged either.
    let crashed = RequestId::random();
    let beta = progress(&crashed, "beta");
    assert!(state_store::claim(&store, &crashed, ttl)
        .await
        .expect("claim"));
    store.save_progress(&beta, ttl).await.expect("save");
    valkey.kill().await;
    valkey.restart().await;
    assert!(!state_store::claim(&store, &crashed, ttl)
        .await
        .expect("claim"));
    assert_eq!(
        store.load_progress(&crashed).await.expect("load"),
        vec![beta]
    );

    // TTLs survive too.
    for (key, remaining) in key_ttls(&valkey).await {
        assert!(
            remaining > 0 && remaining <= ttl.as_secs() as i64,
            "key {key} has ttl {remaining}"
        );
    }
}

#[tokio::test]
async fn undecodable_progress_is_corrupt() {
    let valkey = Valkey::start().await;
    let store = store_on(&valkey).await;
    let id = RequestId::random();
    store
        .save_progress(&progress(&id, "alfa"), Duration::from_secs(60))
        .await
        .expect("save");
    let client = redis::Client::open(valkey.url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("HSET")
        .arg(request_key(&id, "progress"))
        .arg("beta")
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .expect("hset");
    let err = store.load_progress(&id).await.expect_err("corrupt entry");
    assert_eq!(err.kind(), PortErrorKind::Corrupt, "{err}");
}

/// Every key on the server with its TTL (`SCAN` then `TTL`).
async fn key_ttls(valkey: &Valkey) -> HashMap<String, i64> {
    let client = redis::Client::open(valkey.url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("*")
            .arg("COUNT")
            .arg(100)
            .query_async(&mut conn)
            .await
            .expect("scan");
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let mut ttls = HashMap::new();
    for key in keys {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("ttl");
        ttls.insert(key, ttl);
    }
    ttls
}

fn progress(request_id: &RequestId, insurer: &str) -> InsurerProgress {
    InsurerProgress {
        request_id: *request_id,
        insurer_id: InsurerId::new(insurer).expect("insurer id"),
        application_id: Some(format!("{insurer}-app")),
        attempts: 1,
        version: 1,
        deadline_at: Utc::now() + chrono::Duration::seconds(60),
        finished: false,
        quoted: false,
    }
}

// RateLimiter (the shared GCRA script)

#[tokio::test]
async fn limiter_conformance_and_ttl() {
    use osago_transport::conformance::limiter;
    let valkey = Valkey::start().await;
    let store = store_on(&valkey).await;
    limiter::bursts_then_limits_then_recovers(&store).await;
    limiter::keys_are_independent(&store).await;
    limiter::zero_rate_is_unlimited(&store).await;
    limiter::rates_above_one_per_millisecond_are_kept(&store).await;
    let ttls = key_ttls(&valkey).await;
    let limiter_keys: Vec<_> = ttls
        .iter()
        .filter(|(k, _)| k.starts_with("osago:v1:rl:"))
        .collect();
    assert!(!limiter_keys.is_empty());
    // -1 would be a key without a TTL; -2 is one that expired between
    // KEYS and PTTL (at 5 000/s a key lives a fraction of a millisecond).
    assert!(
        limiter_keys.iter().all(|(_, ttl)| **ttl != -1),
        "{limiter_keys:?}"
    );
}

#[tokio::test]
async fn two_instances_share_one_limit() {
    use osago_core::ports::RateLimiter;
    use osago_core::ratelimit::{Admission, RateLimit};
    let valkey = Valkey::start().await;
    let (a, b) = (store_on(&valkey).await, store_on(&valkey).await);
    let limit = RateLimit {
        per_second: 1.0,
        burst: 2,
    };
    assert_eq!(a.check("shared", &limit).await.unwrap(), Admission::Allowed);
    assert_eq!(b.check("shared", &limit).await.unwrap(), Admission::Allowed);
    assert!(matches!(
        a.check("shared", &limit).await.unwrap(),
        Admission::Limited { .. }
    ));
    assert!(matches!(
        b.check("shared", &limit).await.unwrap(),
        Admission::Limited { .. }
    ));
}

// ResilienceStore (the shared resilience policies' scripts)

#[tokio::test]
async fn policy_store_conformance_and_ttls() {
    use osago_transport::conformance::resilience;
    let valkey = Valkey::start().await;
    let store = store_on(&valkey).await;
    resilience::quota_is_taken_in_blocks(&store).await;
    resilience::slots_are_shared_within_the_cap(&store).await;
    resilience::leases_expire_and_release(&store).await;
    resilience::breaker_values_expire(&store).await;
    let ttls = key_ttls(&valkey).await;
    let policy_keys: Vec<_> = ttls
        .iter()
        .filter(|(k, _)| {
            k.starts_with("osago:v1:q:")
                || k.starts_with("osago:v1:cc:")
                || k.starts_with("osago:v1:cb:")
        })
        .collect();
    assert!(!policy_keys.is_empty());
    assert!(
        policy_keys.iter().all(|(_, ttl)| **ttl >= 0),
        "every policy key expires: {policy_keys:?}"
    );
}
