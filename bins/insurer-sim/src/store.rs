//! The simulator's memory: idempotency keys and applications, each kept for
//! an hour after it was first seen. Times are `tokio::time::Instant`, so
//! tests can move time.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::plan::{Outcome, Plan};

/// How long keys and applications are remembered.
pub(crate) const RETENTION: Duration = Duration::from_secs(3_600);

/// How often expired entries are swept (lazily, on writes).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// What an idempotency key has seen.
#[derive(Debug)]
struct KeyEntry {
    /// `POST`s made with it, including failed ones.
    posts: u32,
    /// The application created for it, once created.
    application_id: Option<String>,
    /// First seen.
    first_seen: Instant,
}

/// One application.
#[derive(Debug)]
pub(crate) struct Application {
    /// Its id (the one polled).
    pub(crate) id: String,
    /// The idempotency key it was created with (seeds its poll faults).
    pub(crate) key: String,
    /// Created.
    pub(crate) created: Instant,
    /// Its fate.
    pub(crate) plan: Plan,
    /// `GET`s made so far, including faulted ones.
    pub(crate) polls: u32,
}

impl Application {
    /// The outcome, once the ready time has passed at `now`.
    pub(crate) fn outcome_at(&self, now: Instant) -> Option<&Outcome> {
        let ready = now.saturating_duration_since(self.created) >= self.plan.delay;
        let never = self.plan.outcome == Outcome::NeverReady;
        (ready && !never).then_some(&self.plan.outcome)
    }
}

/// Keys and applications.
#[derive(Debug)]
pub(crate) struct Store {
    keys: HashMap<String, KeyEntry>,
    applications: HashMap<String, Application>,
    next_sweep: Instant,
}

impl Store {
    /// An empty store.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            keys: HashMap::new(),
            applications: HashMap::new(),
            next_sweep: now + SWEEP_EVERY,
        }
    }

    /// Counts a `POST` with `key`; returns its number (1 for the first).
    pub(crate) fn count_post(&mut self, key: &str, now: Instant) -> u32 {
        self.sweep(now);
        let entry = self.keys.entry(key.to_owned()).or_insert_with(|| KeyEntry {
            posts: 0,
            application_id: None,
            first_seen: now,
        });
        entry.posts = entry.posts.saturating_add(1);
        entry.posts
    }

    /// The application already created for `key`.
    pub(crate) fn by_key(&self, key: &str) -> Option<&Application> {
        let id = self.keys.get(key)?.application_id.as_deref()?;
        self.applications.get(id)
    }

    /// Records a new application for its key.
    pub(crate) fn insert(&mut self, application: Application) {
        if let Some(entry) = self.keys.get_mut(&application.key) {
            entry.application_id = Some(application.id.clone());
        }
        self.applications
            .insert(application.id.clone(), application);
    }

    /// The application `id`, counting one poll.
    pub(crate) fn poll(&mut self, id: &str) -> Option<&mut Application> {
        let application = self.applications.get_mut(id)?;
        application.polls = application.polls.saturating_add(1);
        Some(application)
    }

    /// Drops what is older than [`RETENTION`], at most once per [`SWEEP_EVERY`].
    fn sweep(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP_EVERY;
        let fresh = |at: Instant| now.saturating_duration_since(at) < RETENTION;
        self.keys.retain(|_, k| fresh(k.first_seen));
        self.applications.retain(|_, a| fresh(a.created));
    }

    /// Remembered applications.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.applications.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn application(key: &str, now: Instant, outcome: Outcome) -> Application {
        Application {
            id: format!("{key}-app"),
            key: key.to_owned(),
            created: now,
            plan: Plan {
                delay: Duration::from_secs(2),
                outcome,
            },
            polls: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ready_after_the_delay_unless_never() {
        let now = Instant::now();
        let a = application("k", now, Outcome::CalculationError);
        assert_eq!(a.outcome_at(now + Duration::from_millis(1_999)), None);
        assert_eq!(
            a.outcome_at(now + Duration::from_secs(2)),
            Some(&Outcome::CalculationError)
        );
        let never = application("k", now, Outcome::NeverReady);
        assert_eq!(never.outcome_at(now + Duration::from_secs(86_400)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_map_to_one_application_and_count_posts() {
        let now = Instant::now();
        let mut store = Store::new(now);
        assert_eq!(store.count_post("k", now), 1);
        assert!(store.by_key("k").is_none());
        store.insert(application("k", now, Outcome::CalculationError));
        assert_eq!(store.count_post("k", now), 2);
        assert_eq!(store.by_key("k").unwrap().key, "k");
        assert_eq!(store.poll("k-app").unwrap().polls, 1);
        assert_eq!(store.poll("k-app").unwrap().polls, 2);
        assert!(store.poll("other").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_an_hour() {
        let now = Instant::now();
        let mut store = Store::new(now);
        store.count_post("old", now);
        store.insert(application("old", now, Outcome::CalculationError));
        let later = now + RETENTION - Duration::from_secs(30);
        store.count_post("new", later);
        store.insert(application("new", later, Outcome::CalculationError));
        assert_eq!(store.len(), 2);
        store.count_post("x", later + SWEEP_EVERY);
        assert_eq!(store.len(), 1);
        assert!(store.by_key("old").is_none());
        assert!(store.by_key("new").is_some());
    }
}
