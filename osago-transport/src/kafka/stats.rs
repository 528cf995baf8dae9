//! What the bus's consumers saw, for metrics: each group's lag per
//! partition (from librdkafka's statistics, every
//! [`KafkaConfig::statistics_interval`](super::KafkaConfig::statistics_interval))
//! and the records each skipped because they could not be decoded, and
//! wrote to the dead-letter topic.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Consumer lag and skipped records, shared by every consumer of a bus.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// (group, topic, partition) -> messages behind the partition's end.
    lag: BTreeMap<(String, String, i32), i64>,
    /// (group, topic) -> records skipped as undecodable.
    skipped: BTreeMap<(String, String), u64>,
    /// (group, topic) -> undecodable records written to the dead-letter topic.
    dead_letters: BTreeMap<(String, String), u64>,
}

impl ConsumerStats {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Each group's lag: (group, topic, partition, messages behind).
    pub fn lag(&self) -> Vec<(String, String, i32, i64)> {
        self.inner()
            .lag
            .iter()
            .map(|((g, t, p), lag)| (g.clone(), t.clone(), *p, *lag))
            .collect()
    }

    /// Records skipped as undecodable: (group, topic, count).
    pub fn skipped(&self) -> Vec<(String, String, u64)> {
        self.inner()
            .skipped
            .iter()
            .map(|((g, t), n)| (g.clone(), t.clone(), *n))
            .collect()
    }

    /// Undecodable records landed in the dead-letter topic: (group, source
    /// topic, count).
    pub fn dead_letters(&self) -> Vec<(String, String, u64)> {
        self.inner()
            .dead_letters
            .iter()
            .map(|((g, t), n)| (g.clone(), t.clone(), *n))
            .collect()
    }

    pub(crate) fn record_dead_letter(&self, group: &str, topic: &str) {
        *self
            .inner()
            .dead_letters
            .entry((group.to_owned(), topic.to_owned()))
            .or_default() += 1;
    }

    pub(crate) fn record_skip(&self, group: &str, topic: &str) {
        *self
            .inner()
            .skipped
            .entry((group.to_owned(), topic.to_owned()))
            .or_default() += 1;
    }

    /// Takes the lag of every assigned partition from one librdkafka
    /// statistics JSON document (`topics.*.partitions.*.consumer_lag`; -1,
    /// unknown, and the internal partition -1 are left out). Parsed
    /// loosely: a broker that reports fewer fields is fine.
    pub(crate) fn record_statistics(&self, group: &str, json: &[u8]) {
        let Ok(stats) = serde_json::from_slice::<serde_json::Value>(json) else {
            return;
        };
        let Some(topics) = stats.get("topics").and_then(|t| t.as_object()) else {
            return;
        };
        let mut inner = self.inner();
        for (topic, detail) in topics {
            let Some(partitions) = detail.get("partitions").and_then(|p| p.as_object()) else {
                continue;
            };
            for (partition, detail) in partitions {
                let Ok(partition) = partition.parse::<i32>() else {
                    continue;
                };
                let lag = detail.get("consumer_lag").and_then(|l| l.as_i64());
                let key = (group.to_owned(), topic.clone(), partition);
                match lag {
                    Some(lag) if partition >= 0 && lag >= 0 => {
                        inner.lag.insert(key, lag);
                    }
                    _ => {
                        inner.lag.remove(&key);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_comes_from_the_statistics_and_unknowns_are_left_out() {
        let stats = ConsumerStats::default();
        stats.record_statistics(
            "g",
            br#"{"topics": {"osago.requests.v1": {"partitions": {
                "0": {"consumer_lag": 3},
                "1": {"consumer_lag": -1},
                "-1": {"consumer_lag": 7}
            }}}}"#,
        );
        assert_eq!(
            stats.lag(),
            [("g".into(), "osago.requests.v1".into(), 0, 3)]
        );
        stats.record_statistics("g", b"not json");
        stats.record_statistics("g", br#"{"topics": {"t": {}}}"#);
        assert_eq!(stats.lag().len(), 1);
        stats.record_skip("g", "t");
        stats.record_skip("g", "t");
        assert_eq!(stats.skipped(), [("g".into(), "t".into(), 2)]);
    }
}
