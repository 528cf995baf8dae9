//! The simulator's settings and the default line-up of simulated insurers.

use osago_core::tariff::tables::TB_CORRIDOR_RUB;
use osago_core::InsurerId;
use std::time::Duration;

use crate::archetype::Archetype;

/// Where simulated insurers set their base rate (TB), in whole roubles:
/// near the top of the regulated corridor, as real insurers do.
pub const DEFAULT_TB_RANGE_RUB: (i64, i64) = (5_500, 8_665);

/// Settings of one simulated insurer.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// The insurer this instance plays (part of the TB draw and the ids).
    pub insurer_id: InsurerId,
    /// How it behaves.
    pub archetype: Archetype,
    /// Seed of every random draw; the same seed repeats a run exactly.
    pub seed: u64,
    /// Time factor: 1.0 is real time, 20.0 is twenty times faster.
    pub speed: f64,
    /// The range the insurer's TB is drawn from, per region, whole roubles
    /// (inclusive); must lie inside the regulated corridor.
    pub tb_range_rub: (i64, i64),
    /// When set, quotes carry `{purchase_base_url}/buy/{application_id}`.
    pub purchase_base_url: Option<String>,
    /// How long each partner-API answer (`POST /applications`,
    /// `GET /quotes/{id}`) takes: uniform in `low..=high`, divided by
    /// `speed`. Default `(0, 0)`: at once. Real insurers take 50-200 ms.
    pub response_time: (Duration, Duration),
    /// A header every partner-API call must carry, `(name, value)`, as a
    /// partner's credentials: without it the call is answered 401.
    pub required_header: Option<(String, String)>,
}

impl SimConfig {
    /// Defaults: seed 42, real time, [`DEFAULT_TB_RANGE_RUB`], no purchase URL.
    pub fn new(insurer_id: InsurerId, archetype: Archetype) -> Self {
        Self {
            insurer_id,
            archetype,
            seed: 42,
            speed: 1.0,
            tb_range_rub: DEFAULT_TB_RANGE_RUB,
            purchase_base_url: None,
            response_time: (Duration::ZERO, Duration::ZERO),
            required_header: None,
        }
    }

    /// Checks the settings; returns every problem, one lower-case line each.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if !(self.speed.is_finite() && self.speed > 0.0) {
            problems.push("speed must be a positive number".to_owned());
        }
        let (low, high) = self.tb_range_rub;
        let (floor, ceiling) = TB_CORRIDOR_RUB;
        if low > high || low < floor || high > ceiling {
            problems.push(format!(
                "tb range must be ordered and lie within the corridor {floor}..={ceiling} rub"
            ));
        }
        let (fastest, slowest) = self.response_time;
        if fastest > slowest || slowest > Duration::from_secs(10) {
            problems.push("response time must be an ordered range of at most 10s".to_owned());
        }
        if let Some(url) = &self.purchase_base_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push("purchase base url must start with http:// or https://".to_owned());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The purchase URL of an application, when configured.
    pub(crate) fn purchase_url(&self, application_id: &str) -> Option<String> {
        let base = self.purchase_base_url.as_deref()?;
        Some(format!(
            "{}/buy/{application_id}",
            base.trim_end_matches('/')
        ))
    }
}

/// Parses a response time: `100ms` (fixed) or `50ms..200ms` (uniform).
pub fn parse_response_time(text: &str) -> Result<(Duration, Duration), humantime::DurationError> {
    match text.split_once("..") {
        Some((low, high)) => Ok((
            humantime::parse_duration(low.trim())?,
            humantime::parse_duration(high.trim())?,
        )),
        None => {
            let fixed = humantime::parse_duration(text.trim())?;
            Ok((fixed, fixed))
        }
    }
}

/// The eight realistic insurers of demos and load tests: swift (fast),
/// steady (typical), patient (calculate-then-poll), legacy (slow-legacy),
/// flaky (flaky), strict (strict-underwriter), addon (mandatory-add-on) and
/// picky (needs-more-data).
pub fn default_lineup() -> Vec<(InsurerId, Archetype)> {
    [
        ("swift", Archetype::Fast),
        ("steady", Archetype::Typical),
        ("patient", Archetype::CalculateThenPoll),
        ("legacy", Archetype::SlowLegacy),
        ("flaky", Archetype::Flaky),
        ("strict", Archetype::StrictUnderwriter),
        ("addon", Archetype::MandatoryAddOn),
        ("picky", Archetype::NeedsMoreData),
    ]
    .into_iter()
    .map(|(id, archetype)| (InsurerId::new(id).expect("lineup ids are slugs"), archetype))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SimConfig {
        SimConfig::new(InsurerId::new("swift").unwrap(), Archetype::Fast)
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(config().validate(), Ok(()));
        assert_eq!(config().seed, 42);
        assert_eq!(config().speed, 1.0);
    }

    #[test]
    fn reports_every_problem() {
        let mut c = config();
        c.speed = 0.0;
        c.tb_range_rub = (9_000, 5_000);
        c.purchase_base_url = Some("ftp://x".into());
        assert_eq!(c.validate().unwrap_err().len(), 3);
    }

    #[test]
    fn purchase_url_joins_cleanly() {
        let mut c = config();
        assert_eq!(c.purchase_url("a1"), None);
        c.purchase_base_url = Some("https://shop.example/".into());
        assert_eq!(
            c.purchase_url("a1").as_deref(),
            Some("https://shop.example/buy/a1")
        );
    }

    #[test]
    fn lineup_is_the_realistic_archetypes() {
        let archetypes: Vec<Archetype> = default_lineup().into_iter().map(|(_, a)| a).collect();
        assert_eq!(archetypes, Archetype::ALL_REALISTIC);
    }
}
