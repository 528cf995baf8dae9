//! Sharing one insurer's concurrency cap between pods: the arithmetic every
//! [`ResilienceStore`](crate::ports::ResilienceStore) runs when a pod claims slots.
//!
//! Each pod (a *holder*) keeps a lease: how many slots it holds and how
//! many it would like, renewed periodically and expiring when it is not
//! (a dead pod's slots come back after the lease's TTL). A claim never
//! takes more than what the other holders leave free, so the slots held
//! across pods never exceed the cap; when some holder is starved, the others
//! shrink towards a fair share as their calls finish.
//!
//! A holder shrinks safely in two steps: the claim's `floor` is what it may
//! still have in flight (its current local capacity, or more calls in
//! flight than that), and the stored `held` never drops below the floor, so
//! the store never counts fewer slots than are really in use.

use serde::{Deserialize, Serialize};

/// Another holder's live lease, as the store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SlotHolder {
    /// Slots it holds.
    pub held: u32,
    /// Slots it would like.
    pub want: u32,
}

/// The answer to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotGrant {
    /// Slots the claimant may use from now on (its new local capacity).
    pub granted: u32,
    /// What the store now records as held by the claimant:
    /// `max(granted, floor)`.
    pub held: u32,
    /// Someone (the claimant or another holder) wants more than it holds:
    /// renew soon.
    pub contended: bool,
}

/// Decides a claim of `want` slots with `floor` possibly in flight, under
/// `cap`, given the other live holders.
///
/// ```text
/// free    = cap - sum(others.held)                     (>= 0)
/// active  = 1 + |{ others with want > 0 }|
/// target  = want, or min(want, ceil(cap / active)) while another holder starves
/// granted = min(target, free)
/// held    = max(granted, floor)
/// ```
pub fn grant_slots(cap: u32, want: u32, floor: u32, others: &[SlotHolder]) -> SlotGrant {
    let others_held = others
        .iter()
        .fold(0u32, |sum, other| sum.saturating_add(other.held));
    let free = cap.saturating_sub(others_held);
    let starving = others.iter().any(|other| other.want > other.held);
    let active = 1 + others.iter().filter(|other| other.want > 0).count() as u32;
    let target = if starving {
        want.min(cap.div_ceil(active))
    } else {
        want
    };
    let granted = target.min(free);
    SlotGrant {
        granted,
        held: granted.max(floor),
        contended: starving || want > granted,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_lone_holder_gets_what_it_wants_up_to_the_cap() {
        assert_eq!(
            grant_slots(20, 5, 0, &[]),
            SlotGrant {
                granted: 5,
                held: 5,
                contended: false
            }
        );
        let all = grant_slots(20, 50, 0, &[]);
        assert_eq!((all.granted, all.contended), (20, true));
    }

    #[test]
    fn a_holder_never_takes_what_others_hold() {
        let others = [SlotHolder { held: 18, want: 18 }];
        assert_eq!(grant_slots(20, 10, 0, &others).granted, 2);
    }

    #[test]
    fn a_full_holder_shrinks_to_a_fair_share_when_another_starves() {
        let starving = [SlotHolder { held: 0, want: 10 }];
        let shrunk = grant_slots(20, 20, 20, &starving);
        assert_eq!(shrunk.granted, 10);
        // Still counted at its floor until its calls finish.
        assert_eq!(shrunk.held, 20);
        assert!(shrunk.contended);
        // Next renewal, with its calls down to the new capacity.
        let settled = grant_slots(20, 20, 10, &starving);
        assert_eq!((settled.granted, settled.held), (10, 10));
        // Now the starving holder gets the rest.
        let other = [SlotHolder { held: 10, want: 20 }];
        assert_eq!(grant_slots(20, 10, 0, &other).granted, 10);
    }

    proptest! {
        /// Starting from a consistent state (held within the cap, each
        /// holder's floor within what it held), any sequence of claims keeps
        /// the total held within the cap, and each holder's record at or
        /// above what it may have in flight.
        #[test]
        fn claims_never_exceed_the_cap(
            cap in 1u32..40,
            claims in proptest::collection::vec((0usize..4, 0u32..50, any::<bool>()), 1..80),
        ) {
            let mut holders = [SlotHolder::default(); 4];
            // What each holder may have in flight: its local capacity.
            let mut capacity = [0u32; 4];
            for (who, want, calls_finished) in claims {
                // In flight: up to its capacity, or less once calls finish.
                let in_flight = if calls_finished { 0 } else { holders[who].held };
                let floor = capacity[who].max(in_flight);
                prop_assert!(floor <= holders[who].held);
                let others: Vec<SlotHolder> = holders
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != who)
                    .map(|(_, h)| *h)
                    .collect();
                let grant = grant_slots(cap, want, floor, &others);
                prop_assert!(grant.granted <= want);
                holders[who] = SlotHolder { held: grant.held, want };
                capacity[who] = grant.granted;
                let total: u32 = holders.iter().map(|h| h.held).sum();
                prop_assert!(total <= cap, "held {holders:?} over cap {cap}");
            }
        }
    }
}
