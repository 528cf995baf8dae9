//! A map whose entries expire, on tokio's clock (so paused-clock tests can
//! expire them). Expired entries are invisible at once and swept in batches.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// A `HashMap` with a time to live per entry.
#[derive(Debug)]
pub struct TtlMap<K, V> {
    entries: HashMap<K, (Instant, V)>,
    ops_since_sweep: usize,
}

impl<K, V> Default for TtlMap<K, V> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            ops_since_sweep: 0,
        }
    }
}

impl<K: Eq + Hash, V> TtlMap<K, V> {
    /// Inserts or replaces, expiring `ttl` from now.
    pub fn insert(&mut self, key: K, value: V, ttl: Duration) -> Option<V> {
        self.maybe_sweep();
        let now = Instant::now();
        self.entries
            .insert(key, (now + ttl, value))
            .and_then(|(at, v)| (at > now).then_some(v))
    }

    /// The live value for `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = Instant::now();
        self.entries
            .get(key)
            .and_then(|(at, v)| (*at > now).then_some(v))
    }

    /// The live value for `key`, mutably (its expiry is unchanged).
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = Instant::now();
        self.entries
            .get_mut(key)
            .and_then(|(at, v)| (*at > now).then_some(v))
    }

    /// Sets a new expiry for a live entry.
    pub fn touch<Q>(&mut self, key: &Q, ttl: Duration)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = Instant::now();
        if let Some((at, _)) = self.entries.get_mut(key) {
            if *at > now {
                *at = now + ttl;
            }
        }
    }

    /// How long `key` has left, if live.
    pub fn ttl<Q>(&self, key: &Q) -> Option<Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = Instant::now();
        self.entries
            .get(key)
            .and_then(|(at, _)| (*at > now).then(|| *at - now))
    }

    /// Remaining TTL of every live entry.
    pub fn ttls(&self) -> Vec<Duration> {
        let now = Instant::now();
        self.entries
            .values()
            .filter(|(at, _)| *at > now)
            .map(|(at, _)| *at - now)
            .collect()
    }

    /// Live entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let now = Instant::now();
        self.entries
            .iter()
            .filter(move |(_, (at, _))| *at > now)
            .map(|(k, (_, v))| (k, v))
    }

    /// Removes `key`, returning its live value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = Instant::now();
        self.entries
            .remove(key)
            .and_then(|(at, v)| (at > now).then_some(v))
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.entries.values().filter(|(at, _)| *at > now).count()
    }

    /// Whether no entry is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn maybe_sweep(&mut self) {
        self.ops_since_sweep += 1;
        if self.ops_since_sweep >= 1024.max(self.entries.len() / 2) {
            self.ops_since_sweep = 0;
            let now = Instant::now();
            self.entries.retain(|_, (at, _)| *at > now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_expire() {
        let mut map = TtlMap::default();
        map.insert("a", 1, Duration::from_secs(10));
        assert_eq!(map.get("a"), Some(&1));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(map.ttl("a"), Some(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(map.get("a"), None);
        assert!(map.is_empty());
    }
}
