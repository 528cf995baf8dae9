//! Stable seeds. Every random draw comes from a generator seeded by a stable
//! hash (64-bit FNV-1a, the same on every platform and run) of the
//! configured seed and what the draw is for, so a run repeats exactly given
//! the same seed and the same calls.

use osago_core::Kopecks;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use crate::config::SimConfig;

/// Namespace of the simulator's application ids (UUID v5).
const APPLICATION_NAMESPACE: Uuid = Uuid::from_u128(0x2b1f_7c55_93d0_4e61_a8f4_51c0_9e3d_6a07);

/// A 64-bit FNV-1a hash over length-prefixed fields.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StableHash(u64);

impl StableHash {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    /// A hash of the configured seed.
    pub(crate) fn new(seed: u64) -> Self {
        Self(Self::OFFSET).bytes(&seed.to_le_bytes())
    }

    /// Adds one field (its length first, so fields never run together).
    pub(crate) fn field(self, bytes: &[u8]) -> Self {
        self.bytes(&(bytes.len() as u64).to_le_bytes()).bytes(bytes)
    }

    /// Adds a number.
    pub(crate) fn number(self, n: u64) -> Self {
        self.bytes(&n.to_le_bytes())
    }

    /// A generator seeded by the hash.
    pub(crate) fn rng(self) -> StdRng {
        StdRng::seed_from_u64(self.0)
    }

    fn bytes(self, bytes: &[u8]) -> Self {
        let hash = bytes
            .iter()
            .fold(self.0, |h, b| (h ^ u64::from(*b)).wrapping_mul(Self::PRIME));
        Self(hash)
    }
}

/// The generator of one application's plan (ready time, outcome).
pub(crate) fn application_rng(config: &SimConfig, key: &str) -> StdRng {
    StableHash::new(config.seed)
        .field(b"application")
        .field(key.as_bytes())
        .rng()
}

/// The generator of one call's fault draw: the `n`-th call of `what`
/// (`post` or `poll`) for the idempotency key.
pub(crate) fn call_rng(config: &SimConfig, key: &str, what: &str, n: u32) -> StdRng {
    StableHash::new(config.seed)
        .field(what.as_bytes())
        .field(key.as_bytes())
        .number(u64::from(n))
        .rng()
}

/// The insurer's base rate in a region: uniform in the configured range,
/// whole roubles, fixed per (seed, insurer, region).
pub(crate) fn base_rate(config: &SimConfig, region_code: &str) -> Kopecks {
    let (low, high) = config.tb_range_rub;
    let mut rng = StableHash::new(config.seed)
        .field(b"tb")
        .field(config.insurer_id.as_str().as_bytes())
        .field(region_code.as_bytes())
        .rng();
    Kopecks::from_rub(rng.random_range(low..=high.max(low)))
}

/// The application id for an idempotency key: a UUID v5 of the insurer,
/// the seed and the key, so runs repeat exactly.
pub(crate) fn application_id(config: &SimConfig, key: &str) -> String {
    let name = format!("{}/{}/{key}", config.insurer_id, config.seed);
    Uuid::new_v5(&APPLICATION_NAMESPACE, name.as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use osago_core::InsurerId;

    use super::*;
    use crate::archetype::Archetype;

    fn config(insurer: &str, seed: u64) -> SimConfig {
        let mut c = SimConfig::new(InsurerId::new(insurer).unwrap(), Archetype::Typical);
        c.seed = seed;
        c
    }

    #[test]
    fn fnv_is_the_reference_function() {
        // FNV-1a of "a" over the offset basis, no fields: the published vector.
        assert_eq!(
            StableHash(StableHash::OFFSET).bytes(b"a").0,
            0xaf63_dc4c_8601_ec8c
        );
    }

    #[test]
    fn base_rate_is_stable_per_insurer_and_region_and_in_range() {
        let a = config("swift", 42);
        assert_eq!(base_rate(&a, "77"), base_rate(&a, "77"));
        let rates: Vec<Kopecks> = ["77", "78", "50", "66", "16"]
            .iter()
            .map(|r| base_rate(&a, r))
            .collect();
        assert!(rates.windows(2).any(|w| w[0] != w[1]));
        for rate in rates {
            assert!((Kopecks::from_rub(5_500)..=Kopecks::from_rub(8_665)).contains(&rate));
            assert_eq!(rate.get() % 100, 0);
        }
        assert_ne!(base_rate(&a, "77"), base_rate(&config("steady", 42), "77"));
    }

    #[test]
    fn application_ids_are_deterministic() {
        let a = config("swift", 42);
        assert_eq!(application_id(&a, "k"), application_id(&a, "k"));
        assert_ne!(application_id(&a, "k"), application_id(&a, "l"));
        assert_ne!(
            application_id(&a, "k"),
            application_id(&config("swift", 43), "k")
        );
    }

    #[test]
    fn generators_repeat_per_seed_and_key() {
        let a = config("swift", 42);
        let draw = |c: &SimConfig, key: &str| application_rng(c, key).random::<u64>();
        assert_eq!(draw(&a, "k"), draw(&a, "k"));
        assert_ne!(draw(&a, "k"), draw(&config("swift", 7), "k"));
        let call = |n| call_rng(&a, "k", "poll", n).random::<u64>();
        assert_ne!(call(1), call(2));
    }
}
