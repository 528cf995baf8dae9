//! The [`StateStore`] conformance suite.
//!
//! Each function takes a store and checks one property. Request ids are
//! random, so the functions may share one store (one server) and run in any
//! order or at once. [`entries_expire_after_their_ttl`] waits on tokio's
//! clock: real time in a normal test (never the paused clock, which a real
//! server does not follow).

use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use osago_core::ports::{AnswerSample, InsurerProgress, PortError, StateStore};
use osago_core::{InsurerId, RequestId};

/// A TTL no check outlives.
const LONG: Duration = Duration::from_secs(300);

/// Claims `id` as a fresh request event would (the claim and the event
/// kept for `ttl`, leased for longer than any check): `true` the first
/// time only.
pub async fn claim(
    store: &dyn StateStore,
    id: &RequestId,
    ttl: Duration,
) -> Result<bool, PortError> {
    let mut ev = event(chrono::Duration::seconds(60));
    ev.request_id = *id;
    store.begin_request(&ev, LONG, ttl, ttl).await
}

/// Saved progress loads back equal; saving the same insurer again replaces
/// its entry and leaves the others alone.
pub async fn progress_round_trips_and_replaces(store: &dyn StateStore) {
    let id = RequestId::random();
    let alfa = progress(&id, "alfa", None, 1);
    let beta = progress(&id, "beta-2", Some("app-\"1\"/ü"), 1);
    store.save_progress(&alfa, LONG).await.expect("save alfa");
    store.save_progress(&beta, LONG).await.expect("save beta");
    assert_eq!(
        sorted(store.load_progress(&id).await.expect("load")),
        vec![alfa.clone(), beta.clone()]
    );

    let alfa_done = InsurerProgress {
        application_id: Some("a-17".to_owned()),
        attempts: 4,
        version: 2,
        finished: true,
        quoted: true,
        ..alfa
    };
    store
        .save_progress(&alfa_done, LONG)
        .await
        .expect("save alfa again");
    assert_eq!(
        sorted(store.load_progress(&id).await.expect("load")),
        vec![alfa_done, beta],
        "the second save replaces the first"
    );
}

/// A request nobody saved progress for has none.
pub async fn progress_of_unknown_request_is_empty(store: &dyn StateStore) {
    let id = RequestId::random();
    assert!(store.load_progress(&id).await.expect("load").is_empty());
    // A claim alone records no progress.
    assert!(claim(store, &id, LONG).await.expect("claim"));
    assert!(store.load_progress(&id).await.expect("load").is_empty());
}

/// Claims and progress vanish once their TTL has passed: the request may be
/// claimed again and has no progress.
pub async fn entries_expire_after_their_ttl(store: &dyn StateStore) {
    let ttl = Duration::from_secs(1);
    let id = RequestId::random();
    assert!(claim(store, &id, ttl).await.expect("claim"));
    store
        .save_progress(&progress(&id, "alfa", None, 1), ttl)
        .await
        .expect("save");
    // A long-lived neighbour is unaffected.
    let kept = RequestId::random();
    assert!(claim(store, &kept, LONG).await.expect("claim"));
    let kept_progress = progress(&kept, "alfa", None, 1);
    store
        .save_progress(&kept_progress, LONG)
        .await
        .expect("save");

    tokio::time::sleep(Duration::from_millis(1_500)).await;

    assert!(
        claim(store, &id, ttl).await.expect("claim"),
        "an expired claim must be claimable again"
    );
    assert!(
        store.load_progress(&id).await.expect("load").is_empty(),
        "expired progress must be gone"
    );
    assert!(!claim(store, &kept, LONG).await.expect("claim"));
    assert_eq!(
        store.load_progress(&kept).await.expect("load"),
        vec![kept_progress]
    );
}

/// What is done for one request never shows in another.
pub async fn requests_are_independent(store: &dyn StateStore) {
    let a = RequestId::random();
    let b = RequestId::random();
    assert!(claim(store, &a, LONG).await.expect("claim a"));
    assert!(
        claim(store, &b, LONG).await.expect("claim b"),
        "claiming one request must not claim another"
    );

    let a_progress = progress(&a, "alfa", None, 1);
    let b_progress = progress(&b, "alfa", Some("b-app"), 2);
    store
        .save_progress(&a_progress, LONG)
        .await
        .expect("save a");
    assert!(store.load_progress(&b).await.expect("load b").is_empty());
    store
        .save_progress(&b_progress, LONG)
        .await
        .expect("save b");
    assert_eq!(
        store.load_progress(&a).await.expect("load a"),
        vec![a_progress]
    );
    assert_eq!(
        store.load_progress(&b).await.expect("load b"),
        vec![b_progress]
    );
}

fn progress(
    request_id: &RequestId,
    insurer: &str,
    application_id: Option<&str>,
    version: u32,
) -> InsurerProgress {
    InsurerProgress {
        request_id: *request_id,
        insurer_id: InsurerId::new(insurer).expect("valid insurer id"),
        application_id: application_id.map(str::to_owned),
        attempts: version,
        version,
        deadline_at: Utc::now() + chrono::Duration::seconds(60),
        finished: false,
        quoted: false,
    }
}

fn sorted(mut progress: Vec<InsurerProgress>) -> Vec<InsurerProgress> {
    progress.sort_by(|a, b| a.insurer_id.as_str().cmp(b.insurer_id.as_str()));
    progress
}

fn event(deadline_in: chrono::Duration) -> osago_core::RequestEvent {
    let now = Utc::now();
    osago_core::RequestEvent {
        event_id: osago_core::EventId::random(),
        request_id: RequestId::random(),
        occurred_at: now,
        deadline_at: now + deadline_in,
        request: osago_core::request::sample(),
    }
}

/// Beginning a request claims it: `true` once, also when racing, and a
/// plain claim afterwards fails too.
pub async fn begin_is_true_only_once(store: &dyn StateStore) {
    let ev = event(chrono::Duration::seconds(60));
    let lease = Duration::from_secs(30);
    let begins = join_all((0..8).map(|_| store.begin_request(&ev, lease, LONG, LONG))).await;
    let won = begins
        .into_iter()
        .map(|b| b.expect("begin"))
        .filter(|&won| won)
        .count();
    assert_eq!(won, 1, "exactly one of racing begins must succeed");
    assert!(!claim(store, &ev.request_id, LONG).await.expect("claim"));
}

/// A live lease is never taken over; once it expires exactly one caller
/// takes the request over, with its event; renewing keeps a lease alive;
/// an ended request is never taken over.
pub async fn expired_leases_are_taken_over_once(store: &dyn StateStore) {
    let short = Duration::from_millis(300);
    let kept = event(chrono::Duration::seconds(60));
    let dead = event(chrono::Duration::seconds(60));
    let ended = event(chrono::Duration::seconds(60));
    for ev in [&kept, &dead, &ended] {
        assert!(store
            .begin_request(ev, short, LONG, LONG)
            .await
            .expect("begin"));
    }
    store.end_request(&ended.request_id).await.expect("end");
    let taken = store.take_over(LONG, 100).await.expect("take over");
    assert!(
        taken
            .iter()
            .all(|e| e.request_id != kept.request_id && e.request_id != dead.request_id),
        "live leases are not taken over"
    );
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        store
            .renew_leases(&[kept.request_id, ended.request_id], short)
            .await
            .expect("renew");
    }
    // `dead` expired 300 ms in; `kept` was renewed; `ended` stays ended.
    let takers = join_all((0..4).map(|_| store.take_over(LONG, 100))).await;
    let mut mine: Vec<osago_core::RequestEvent> = takers
        .into_iter()
        .flat_map(|t| t.expect("take over"))
        .filter(|e| [kept.request_id, dead.request_id, ended.request_id].contains(&e.request_id))
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "one taker gets the dead pod's request: {mine:?}"
    );
    let taken = mine.pop().unwrap();
    assert_eq!(taken, dead, "the stored event comes back whole");
    // Taken over, it is leased again: nobody else takes it now.
    let again = store.take_over(LONG, 100).await.expect("take over");
    assert!(again.iter().all(|e| e.request_id != dead.request_id));
}

/// Take-over finds expired requests wherever they are kept (a store may
/// spread them over shards) and never hands out more than asked.
pub async fn take_over_reaches_every_request_and_keeps_to_max(store: &dyn StateStore) {
    let short = Duration::from_millis(200);
    let events: Vec<_> = (0..40)
        .map(|_| event(chrono::Duration::seconds(60)))
        .collect();
    for ev in &events {
        assert!(store
            .begin_request(ev, short, LONG, LONG)
            .await
            .expect("begin"));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let ours = |taken: Vec<osago_core::RequestEvent>| {
        taken
            .into_iter()
            .filter(|e| events.iter().any(|ev| ev.request_id == e.request_id))
            .count()
    };
    let few = store.take_over(LONG, 5).await.expect("take over");
    assert!(few.len() <= 5, "at most max: {}", few.len());
    let first = ours(few);
    let rest = ours(store.take_over(LONG, 100).await.expect("take over"));
    assert_eq!(first + rest, events.len(), "every expired request is found");
}

/// An insurer id of its own (the checks may share one store).
fn fresh_insurer() -> InsurerId {
    InsurerId::new(format!("i-{}", &RequestId::random().to_string()[..8])).expect("insurer id")
}

/// Kept answer times load back equal and in order; keeping them again
/// replaces them; another insurer's are its own; an insurer nobody kept
/// any for has none; and they expire after their TTL (waits 1.5 s).
pub async fn answer_times_round_trip_replace_and_expire(store: &dyn StateStore) {
    let (alfa, beta, unknown) = (fresh_insurer(), fresh_insurer(), fresh_insurer());
    let first: Vec<AnswerSample> = (0..256u32)
        .map(|i| AnswerSample {
            millis: 500 + i * 97,
            quoted: i % 5 != 0,
        })
        .collect();
    store
        .save_answer_times(&alfa, &first, LONG)
        .await
        .expect("save alfa");
    assert_eq!(store.load_answer_times(&alfa).await.expect("load"), first);
    let later = vec![
        AnswerSample {
            millis: u32::MAX,
            quoted: false,
        },
        AnswerSample {
            millis: 0,
            quoted: true,
        },
    ];
    store
        .save_answer_times(&alfa, &later, LONG)
        .await
        .expect("save alfa again");
    assert_eq!(store.load_answer_times(&alfa).await.expect("load"), later);
    assert!(store
        .load_answer_times(&unknown)
        .await
        .expect("load unknown")
        .is_empty());
    store
        .save_answer_times(&beta, &first, Duration::from_secs(1))
        .await
        .expect("save beta");
    assert_eq!(store.load_answer_times(&beta).await.expect("load"), first);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        store
            .load_answer_times(&beta)
            .await
            .expect("load")
            .is_empty(),
        "expired answer times must be gone"
    );
    assert_eq!(store.load_answer_times(&alfa).await.expect("load"), later);
}
