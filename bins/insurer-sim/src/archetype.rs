//! The archetypes: how one simulated insurer behaves (latency and failure
//! modes), after the table in the domain notes.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;
use rand_distr::{Distribution, LogNormal};

/// How a simulated insurer behaves. One archetype per simulator instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Archetype {
    /// A fast direct API: ready in 1.5 s / 4 s (p50 / p95), 2% 500 on POST.
    Fast,
    /// Ready in 4 s / 12 s; 5% calculation errors, 5% declines.
    Typical,
    /// Ready in 8 s / 25 s, asks for polls every 2 s; 10% no calculation.
    CalculateThenPoll,
    /// Ready in 20 s / 55 s; about 10% never ready.
    SlowLegacy,
    /// Ready in 3 s / 10 s; 15% 503 on any call, about 10% 429 on polls.
    Flaky,
    /// Ready in 5 s / 15 s; declines young or inexperienced drivers, bad
    /// KBM classes, taxis and some regions.
    StrictUnderwriter,
    /// Ready in 6 s / 18 s; the price comes only with a mandatory add-on.
    MandatoryAddOn,
    /// 400 naming `owner.address.apartment` when it is missing; otherwise
    /// ready in 4 s / 8 s.
    NeedsMoreData,
    /// Accepts the connection and never answers.
    Hang,
    /// Answers 500 to every call.
    Broken,
    /// Creates applications normally, then answers polls with malformed JSON.
    Garbage,
    /// Ready in 2 s / 6 s with a bait price: half the lowest lawful premium
    /// for the request (a base rate below the regulated corridor).
    BaitPrice,
}

impl Archetype {
    /// Every archetype.
    pub const ALL: [Archetype; 12] = [
        Archetype::Fast,
        Archetype::Typical,
        Archetype::CalculateThenPoll,
        Archetype::SlowLegacy,
        Archetype::Flaky,
        Archetype::StrictUnderwriter,
        Archetype::MandatoryAddOn,
        Archetype::NeedsMoreData,
        Archetype::Hang,
        Archetype::Broken,
        Archetype::Garbage,
        Archetype::BaitPrice,
    ];

    /// The archetypes of the domain notes' table (real insurers behave like
    /// these); the rest are failure drills.
    pub const ALL_REALISTIC: [Archetype; 8] = [
        Archetype::Fast,
        Archetype::Typical,
        Archetype::CalculateThenPoll,
        Archetype::SlowLegacy,
        Archetype::Flaky,
        Archetype::StrictUnderwriter,
        Archetype::MandatoryAddOn,
        Archetype::NeedsMoreData,
    ];

    /// The kebab-case name, e.g. `calculate-then-poll`.
    pub fn as_str(self) -> &'static str {
        match self {
            Archetype::Fast => "fast",
            Archetype::Typical => "typical",
            Archetype::CalculateThenPoll => "calculate-then-poll",
            Archetype::SlowLegacy => "slow-legacy",
            Archetype::Flaky => "flaky",
            Archetype::StrictUnderwriter => "strict-underwriter",
            Archetype::MandatoryAddOn => "mandatory-add-on",
            Archetype::NeedsMoreData => "needs-more-data",
            Archetype::Hang => "hang",
            Archetype::Broken => "broken",
            Archetype::Garbage => "garbage",
            Archetype::BaitPrice => "bait-price",
        }
    }

    /// The ready-time distribution (real time, before the speed factor).
    pub(crate) fn latency(self) -> Latency {
        let (p50, p95) = match self {
            Archetype::Fast | Archetype::Garbage | Archetype::Hang | Archetype::Broken => {
                (1.5, 4.0)
            }
            Archetype::Typical => (4.0, 12.0),
            Archetype::CalculateThenPoll => (8.0, 25.0),
            Archetype::SlowLegacy => (20.0, 55.0),
            Archetype::Flaky => (3.0, 10.0),
            Archetype::StrictUnderwriter => (5.0, 15.0),
            Archetype::MandatoryAddOn => (6.0, 18.0),
            Archetype::NeedsMoreData => (4.0, 8.0),
            Archetype::BaitPrice => (2.0, 6.0),
        };
        Latency {
            p50_secs: p50,
            p95_secs: p95,
        }
    }
}

impl fmt::Display for Archetype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string names no [`Archetype`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownArchetype;

impl fmt::Display for UnknownArchetype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Archetype::ALL.iter().map(|a| a.as_str()).collect();
        write!(
            f,
            "unknown archetype, expected one of: {}",
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownArchetype {}

impl FromStr for Archetype {
    type Err = UnknownArchetype;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Archetype::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or(UnknownArchetype)
    }
}

/// A log-normal ready time given by its median and 95th percentile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Latency {
    /// Median, seconds.
    pub(crate) p50_secs: f64,
    /// 95th percentile, seconds.
    pub(crate) p95_secs: f64,
}

/// No simulated calculation takes longer than a day, whatever the tail.
const LONGEST: Duration = Duration::from_secs(86_400);

impl Latency {
    /// Draws one ready time, divided by `speed`.
    pub(crate) fn sample(self, rng: &mut impl Rng, speed: f64) -> Duration {
        let mu = self.p50_secs.ln();
        let sigma = (self.p95_secs / self.p50_secs).ln() / 1.645;
        let secs = LogNormal::new(mu, sigma)
            .map(|d| d.sample(rng))
            .unwrap_or(self.p50_secs);
        Duration::try_from_secs_f64(secs / speed)
            .unwrap_or(LONGEST)
            .min(LONGEST)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Archetype::ALL {
            assert_eq!(a.to_string().parse::<Archetype>(), Ok(a));
        }
        assert!("Fast".parse::<Archetype>().is_err());
        assert_eq!(Archetype::ALL_REALISTIC[..], Archetype::ALL[..8]);
    }

    #[test]
    fn latency_matches_its_percentiles() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let latency = Archetype::Typical.latency();
        let mut draws: Vec<Duration> = (0..20_000).map(|_| latency.sample(&mut rng, 1.0)).collect();
        draws.sort();
        let p50 = draws[10_000].as_secs_f64();
        let p95 = draws[19_000].as_secs_f64();
        assert!((p50 - 4.0).abs() < 0.2, "{p50}");
        assert!((p95 - 12.0).abs() < 0.8, "{p95}");
    }

    #[test]
    fn speed_divides_the_ready_time() {
        let latency = Archetype::Fast.latency();
        let mut a = rand::rngs::StdRng::seed_from_u64(1);
        let mut b = rand::rngs::StdRng::seed_from_u64(1);
        let slow = latency.sample(&mut a, 1.0).as_secs_f64();
        let fast = latency.sample(&mut b, 20.0).as_secs_f64();
        assert!((slow / 20.0 - fast).abs() < 1e-6);
    }
}
