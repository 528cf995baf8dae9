//! The ack tracker of a group subscription: which delivered offsets are
//! applied, and how far each partition may be committed.
//!
//! Events finish out of order (a request's fan-out may be acknowledged
//! before an older one's), so a partition is committed only up to its
//! highest *contiguous* acknowledged offset: committing past an
//! unacknowledged message would lose it if this member died. Offsets are
//! tracked as delivered, not as `offset + 1` arithmetic, so gaps in a
//! partition (control records, compaction) never hold a commit back.

use std::collections::{BTreeMap, HashMap};

/// One offset to commit: topic, partition and the next offset to consume
/// (one past the last applied message).
pub(crate) type Commit = (String, i32, i64);

/// Acknowledgement state of every partition this member consumes.
#[derive(Debug, Default)]
pub(crate) struct AckTracker {
    partitions: HashMap<(String, i32), PartitionAcks>,
}

#[derive(Debug, Default)]
struct PartitionAcks {
    /// Delivered offsets not yet below the commit position, each with
    /// whether it is acknowledged.
    in_flight: BTreeMap<i64, bool>,
    /// One past the highest offset below which every delivered message is
    /// acknowledged.
    position: Option<i64>,
    /// The position last handed out for committing.
    committed: Option<i64>,
}

impl PartitionAcks {
    fn advance(&mut self) {
        while let Some(entry) = self.in_flight.first_entry() {
            if !*entry.get() {
                break;
            }
            let (offset, _) = entry.remove_entry();
            self.position = Some(offset + 1);
        }
    }
}

impl AckTracker {
    /// A message was handed to the application; it holds the commit
    /// position back until acknowledged.
    pub(crate) fn delivered(&mut self, topic: &str, partition: i32, offset: i64) {
        self.partitions
            .entry((topic.to_owned(), partition))
            .or_default()
            .in_flight
            .insert(offset, false);
    }

    /// A delivered message was applied. An acknowledgement for a partition
    /// revoked since (or an offset not delivered) changes nothing: that
    /// message goes to the partition's new owner anyway.
    pub(crate) fn acked(&mut self, topic: &str, partition: i32, offset: i64) {
        // A lookup by (String, i32) needs an owned key; acks are not hot
        // enough for the allocation to matter.
        let Some(acks) = self.partitions.get_mut(&(topic.to_owned(), partition)) else {
            return;
        };
        if let Some(done) = acks.in_flight.get_mut(&offset) {
            *done = true;
            acks.advance();
        }
    }

    /// Every position not committed yet; they count as committed from now
    /// on (see [`AckTracker::commit_failed`]).
    pub(crate) fn take_committable(&mut self) -> Vec<Commit> {
        let mut out = Vec::new();
        for ((topic, partition), acks) in &mut self.partitions {
            if let Some(position) = acks.position {
                if acks.committed != Some(position) {
                    acks.committed = Some(position);
                    out.push((topic.clone(), *partition, position));
                }
            }
        }
        out
    }

    /// A commit failed: the position is handed out again next time (unless
    /// it moved on already).
    pub(crate) fn commit_failed(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(acks) = self.partitions.get_mut(&(topic.to_owned(), partition)) {
            if acks.committed == Some(offset) {
                acks.committed = None;
            }
        }
    }

    /// The partition was taken away: forgets it and returns its position if
    /// it was not committed yet. Its unacknowledged messages go to the new
    /// owner.
    pub(crate) fn revoke(&mut self, topic: &str, partition: i32) -> Option<i64> {
        let acks = self.partitions.remove(&(topic.to_owned(), partition))?;
        match acks.position {
            Some(p) if acks.committed != Some(p) => Some(p),
            _ => None,
        }
    }

    /// Delivered messages not acknowledged yet, over every partition.
    #[cfg(test)]
    pub(crate) fn unacked(&self) -> usize {
        self.partitions
            .values()
            .map(|a| a.in_flight.values().filter(|done| !**done).count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_contiguous_acks() {
        let mut t = AckTracker::default();
        for offset in 10..13 {
            t.delivered("t", 0, offset);
        }
        t.acked("t", 0, 12);
        assert!(t.take_committable().is_empty());
        t.acked("t", 0, 10);
        assert_eq!(t.take_committable(), vec![("t".to_owned(), 0, 11)]);
        assert!(t.take_committable().is_empty(), "handed out once");
        t.acked("t", 0, 11);
        assert_eq!(t.take_committable(), vec![("t".to_owned(), 0, 13)]);
        assert_eq!(t.unacked(), 0);
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = AckTracker::default();
        t.delivered("t", 0, 5);
        t.delivered("t", 1, 7);
        t.delivered("u", 0, 1);
        t.acked("t", 1, 7);
        t.acked("u", 0, 1);
        let mut commits = t.take_committable();
        commits.sort();
        assert_eq!(
            commits,
            vec![("t".to_owned(), 1, 8), ("u".to_owned(), 0, 2)]
        );
        assert_eq!(t.unacked(), 1);
    }

    #[test]
    fn skipped_messages_never_block_commits() {
        let mut t = AckTracker::default();
        t.delivered("t", 0, 0);
        // An undecodable one, acknowledged once it is a dead letter.
        t.delivered("t", 0, 1);
        t.acked("t", 0, 1);
        t.delivered("t", 0, 2);
        t.acked("t", 0, 2);
        assert!(t.take_committable().is_empty());
        t.acked("t", 0, 0);
        assert_eq!(t.take_committable(), vec![("t".to_owned(), 0, 3)]);
    }

    #[test]
    fn gaps_between_delivered_offsets_do_not_hold_commits_back() {
        let mut t = AckTracker::default();
        t.delivered("t", 0, 3);
        t.delivered("t", 0, 9);
        t.acked("t", 0, 3);
        t.acked("t", 0, 9);
        assert_eq!(t.take_committable(), vec![("t".to_owned(), 0, 10)]);
    }

    #[test]
    fn failed_commit_is_retried() {
        let mut t = AckTracker::default();
        t.delivered("t", 0, 0);
        t.acked("t", 0, 0);
        assert_eq!(t.take_committable(), vec![("t".to_owned(), 0, 1)]);
        t.commit_failed("t", 0, 1);
        assert_eq!(t.take_committable(), vec![("t".to_owned(), 0, 1)]);
    }

    #[test]
    fn revocation_forgets_the_partition() {
        let mut t = AckTracker::default();
        t.delivered("t", 0, 0);
        t.delivered("t", 0, 1);
        t.acked("t", 0, 0);
        assert_eq!(t.revoke("t", 0), Some(1));
        // A late ack from before the revocation changes nothing.
        t.acked("t", 0, 1);
        assert!(t.take_committable().is_empty());
        assert_eq!(t.revoke("t", 0), None);
        assert_eq!(t.unacked(), 0);
    }

    #[test]
    fn revocation_after_commit_has_nothing_left() {
        let mut t = AckTracker::default();
        t.delivered("t", 0, 0);
        t.acked("t", 0, 0);
        assert_eq!(t.take_committable().len(), 1);
        assert_eq!(t.revoke("t", 0), None);
    }
}
