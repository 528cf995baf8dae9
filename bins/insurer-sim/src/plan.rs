//! What happens to an application and to each call: the ready time and the
//! outcome, drawn once per application, and the injected faults, drawn per
//! call. Every draw comes from [`crate::seed`], so runs repeat exactly.

use std::time::Duration;

use chrono::{DateTime, Utc};
use osago_core::insurer::{AddOn, Quote};
use osago_core::tariff::{self, Premium, TariffError};
use osago_core::{Kopecks, QuoteRequest};
use osago_transport::http::wire::PropertyProblem;
use rand::Rng;

use crate::archetype::Archetype;
use crate::config::SimConfig;
use crate::seed;
use crate::underwriting;

/// How long an offer holds after it became ready.
const VALIDITY: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// The add-on the mandatory-add-on archetype sells with every policy.
const ADD_ON_NAME: &str = "Страхование от несчастного случая";

/// Its price.
const ADD_ON_PRICE: Kopecks = Kopecks(150_000);

/// How an application ends once its ready time has passed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// `READY` with this quote.
    Quoted(Box<Quote>),
    /// `DECLINED` with this reason.
    Declined(&'static str),
    /// `NO_CALCULATION_AVAILABLE` with this reason.
    NoCalculation(&'static str),
    /// `CALCULATION_ERROR`.
    CalculationError,
    /// `IN_PROGRESS` forever.
    NeverReady,
}

/// One application's fate.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// From creation to readiness (already divided by the speed).
    pub(crate) delay: Duration,
    /// What the insurer answers once ready.
    pub(crate) outcome: Outcome,
}

/// A fault injected into one call instead of its normal answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// 500.
    Internal,
    /// 503 with `Retry-After`.
    Unavailable,
    /// 429 with `Retry-After`.
    RateLimited,
}

/// A polling hint: whole seconds for `Retry-After`, milliseconds for the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hint {
    /// `Retry-After` delta-seconds (at least 1).
    pub(crate) header_secs: u64,
    /// `retry_after_ms` (at least 1).
    pub(crate) ms: u64,
}

impl Hint {
    /// A real-time hint of `secs`, scaled by the speed.
    pub(crate) fn scaled(secs: f64, speed: f64) -> Self {
        let scaled = secs / speed;
        Self {
            header_secs: (scaled.ceil() as u64).max(1),
            ms: ((scaled * 1000.0).round() as u64).max(1),
        }
    }
}

/// Plans the application created for `key` at `created`, identified by
/// `application_id`; fails, naming the field, when no premium can be
/// computed for the request.
pub(crate) fn plan(
    config: &SimConfig,
    key: &str,
    application_id: &str,
    request: &QuoteRequest,
    created: DateTime<Utc>,
) -> Result<Plan, PropertyProblem> {
    let start = request.policy.effective_start(created.date_naive());
    let corridor = tariff::TbCorridor::for_request(request);
    let rate = if config.archetype == Archetype::BaitPrice {
        // Half the corridor's lowest base rate: below every lawful premium.
        Kopecks(corridor.min.get() / 2)
    } else {
        // The configured range is in the car corridor's terms; a taxi, a
        // motorcycle, a truck or a bus sits at the same place in its own.
        let car = seed::base_rate(config, &request.owner.address.region_code);
        corridor.same_place(tariff::TbCorridor::car(), car)
    };
    let premium = tariff::premium(request, rate, start).map_err(tariff_problem)?;
    let mut rng = seed::application_rng(config, key);
    let delay = config.archetype.latency().sample(&mut rng, config.speed);
    let roll: f64 = rng.random();
    let outcome = match drawn_outcome(config.archetype, request, start, roll) {
        Some(outcome) => outcome,
        None => {
            let ready_at = created + chrono::TimeDelta::from_std(delay).unwrap_or(VALIDITY);
            Outcome::Quoted(Box::new(quote(config, application_id, premium, ready_at)))
        }
    };
    Ok(Plan { delay, outcome })
}

/// The archetype's failure or decline for this application, if any.
fn drawn_outcome(
    archetype: Archetype,
    request: &QuoteRequest,
    start: chrono::NaiveDate,
    roll: f64,
) -> Option<Outcome> {
    match archetype {
        Archetype::Typical if roll < 0.05 => Some(Outcome::CalculationError),
        Archetype::Typical if roll < 0.10 => Some(Outcome::Declined("declined by underwriting")),
        Archetype::CalculateThenPoll if roll < 0.10 => Some(Outcome::NoCalculation(
            "no calculation available for this vehicle",
        )),
        Archetype::SlowLegacy if roll < 0.10 => Some(Outcome::NeverReady),
        Archetype::StrictUnderwriter => {
            underwriting::decline_reason(request, start).map(Outcome::Declined)
        }
        _ => None,
    }
}

/// The offer for a computed premium.
fn quote(
    config: &SimConfig,
    application_id: &str,
    premium: Premium,
    ready_at: DateTime<Utc>,
) -> Quote {
    let mandatory = config.archetype == Archetype::MandatoryAddOn;
    let add_ons = if mandatory {
        vec![AddOn {
            name: ADD_ON_NAME.to_owned(),
            price_kopecks: ADD_ON_PRICE,
            mandatory: true,
        }]
    } else {
        Vec::new()
    };
    Quote {
        premium_kopecks: premium.premium_kopecks,
        coefficients: premium.coefficients,
        capped: premium.capped,
        valid_until: ready_at + VALIDITY,
        add_ons,
        message: mandatory
            .then(|| "the price is only available with accident insurance".to_owned()),
        purchase_url: config.purchase_url(application_id),
        ready_at: Some(ready_at),
        price_check: None,
    }
}

/// The field to blame when the tariff cannot price a request.
fn tariff_problem(err: TariffError) -> PropertyProblem {
    let property = match err {
        TariffError::UnknownRegion => "owner.address.region_code",
        TariffError::MissingEnginePower => "vehicle.engine_power_hp",
        TariffError::UsagePeriod => "policy.usage_period_months",
        TariffError::NoDrivers => "drivers.list",
    };
    PropertyProblem {
        property: property.to_owned(),
        message: err.to_string(),
    }
}

/// The field the needs-more-data archetype insists on, when missing.
pub(crate) fn missing_data(
    archetype: Archetype,
    request: &QuoteRequest,
) -> Option<PropertyProblem> {
    let apartment = request.owner.address.apartment.as_deref().map(str::trim);
    let missing = apartment.is_none_or(str::is_empty);
    (archetype == Archetype::NeedsMoreData && missing).then(|| PropertyProblem {
        property: "owner.address.apartment".to_owned(),
        message: "a valid residential address is required".to_owned(),
    })
}

/// The fault injected into the `attempt`-th `POST` for `key`, if any.
pub(crate) fn post_fault(config: &SimConfig, key: &str, attempt: u32) -> Option<Fault> {
    let roll: f64 = seed::call_rng(config, key, "post", attempt).random();
    match config.archetype {
        Archetype::Fast if roll < 0.02 => Some(Fault::Internal),
        Archetype::Flaky if roll < 0.15 => Some(Fault::Unavailable),
        _ => None,
    }
}

/// The fault injected into the `poll`-th `GET` of `key`'s application, if any.
pub(crate) fn poll_fault(config: &SimConfig, key: &str, poll: u32) -> Option<Fault> {
    let roll: f64 = seed::call_rng(config, key, "poll", poll).random();
    match config.archetype {
        Archetype::Flaky if roll < 0.15 => Some(Fault::Unavailable),
        Archetype::Flaky if roll < 0.25 => Some(Fault::RateLimited),
        _ => None,
    }
}

/// The hint sent with `IN_PROGRESS` answers, if the archetype gives one.
pub(crate) fn progress_hint(config: &SimConfig) -> Option<Hint> {
    (config.archetype == Archetype::CalculateThenPoll).then(|| Hint::scaled(2.0, config.speed))
}

#[cfg(test)]
mod tests {
    use osago_core::request::sample;
    use osago_core::InsurerId;

    use super::*;

    fn config(archetype: Archetype) -> SimConfig {
        let mut c = SimConfig::new(InsurerId::new("sim").unwrap(), archetype);
        c.speed = 20.0;
        c
    }

    fn outcomes(archetype: Archetype, n: usize) -> Vec<Outcome> {
        let c = config(archetype);
        (0..n)
            .map(|i| {
                plan(&c, &format!("key-{i}"), "app", &sample(), Utc::now())
                    .unwrap()
                    .outcome
            })
            .collect()
    }

    fn share(outcomes: &[Outcome], pred: impl Fn(&Outcome) -> bool) -> f64 {
        outcomes.iter().filter(|o| pred(o)).count() as f64 / outcomes.len() as f64
    }

    #[test]
    fn plans_repeat_per_key() {
        let c = config(Archetype::Typical);
        let created = Utc::now();
        let a = plan(&c, "k", "app", &sample(), created).unwrap();
        let b = plan(&c, "k", "app", &sample(), created).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn an_insurer_charges_a_taxi_more_and_stays_in_its_corridor() {
        let c = config(Archetype::Fast);
        let created = Utc::now();
        let quoted = |request: &osago_core::request::QuoteRequest| {
            let Outcome::Quoted(q) = plan(&c, "k", "app", request, created).unwrap().outcome else {
                panic!("fast always quotes")
            };
            q
        };
        let personal = sample();
        let mut taxi = sample();
        taxi.policy.purpose = osago_core::request::Purpose::Taxi;
        let (p, t) = (quoted(&personal), quoted(&taxi));
        assert!(t.premium_kopecks > p.premium_kopecks);
        let corridor = tariff::TbCorridor::for_request(&taxi);
        assert!((corridor.min..=corridor.max).contains(&t.coefficients.tb_kopecks));
        let start = taxi.policy.effective_start(created.date_naive());
        let range = tariff::lawful_range(&taxi, start).unwrap();
        assert_eq!(
            range.check(t.premium_kopecks).verdict,
            tariff::PriceVerdict::Within
        );
    }

    #[test]
    fn quote_matches_the_tariff_and_readiness() {
        let c = config(Archetype::Fast);
        let created = Utc::now();
        let p = plan(&c, "k", "app", &sample(), created).unwrap();
        let Outcome::Quoted(q) = p.outcome else {
            panic!("fast always quotes")
        };
        let start = sample().policy.effective_start(created.date_naive());
        let rate = seed::base_rate(&c, "77");
        let expected = tariff::premium(&sample(), rate, start).unwrap();
        assert_eq!(q.premium_kopecks, expected.premium_kopecks);
        assert_eq!(q.coefficients, expected.coefficients);
        let ready_at = q.ready_at.unwrap();
        assert_eq!((ready_at - created).to_std().unwrap(), p.delay);
        assert_eq!(q.valid_until, ready_at + VALIDITY);
    }

    #[test]
    fn typical_fails_and_declines_about_five_percent_each() {
        let o = outcomes(Archetype::Typical, 2_000);
        let errors = share(&o, |o| *o == Outcome::CalculationError);
        let declines = share(&o, |o| matches!(o, Outcome::Declined(_)));
        assert!((0.03..0.07).contains(&errors), "{errors}");
        assert!((0.03..0.07).contains(&declines), "{declines}");
    }

    #[test]
    fn slow_legacy_never_readies_about_ten_percent() {
        let o = outcomes(Archetype::SlowLegacy, 2_000);
        let never = share(&o, |o| *o == Outcome::NeverReady);
        assert!((0.07..0.13).contains(&never), "{never}");
    }

    #[test]
    fn mandatory_add_on_comes_with_the_quote() {
        let o = outcomes(Archetype::MandatoryAddOn, 1);
        let Outcome::Quoted(q) = &o[0] else {
            panic!("quotes")
        };
        assert_eq!(q.add_ons.len(), 1);
        assert!(q.add_ons[0].mandatory);
        assert_eq!(q.add_ons[0].price_kopecks, Kopecks(150_000));
        assert!(q.message.is_some());
    }

    #[test]
    fn flaky_faults_are_drawn_per_call() {
        let c = config(Archetype::Flaky);
        let polls: Vec<Option<Fault>> = (0..2_000).map(|n| poll_fault(&c, "k", n)).collect();
        let unavailable = polls
            .iter()
            .filter(|f| **f == Some(Fault::Unavailable))
            .count();
        let limited = polls
            .iter()
            .filter(|f| **f == Some(Fault::RateLimited))
            .count();
        assert!((200..400).contains(&unavailable), "{unavailable}");
        assert!((120..280).contains(&limited), "{limited}");
        assert_eq!(poll_fault(&c, "k", 3), poll_fault(&c, "k", 3));
        assert_eq!(post_fault(&config(Archetype::Typical), "k", 1), None);
    }

    #[test]
    fn hints_scale_with_speed() {
        assert_eq!(
            Hint::scaled(2.0, 1.0),
            Hint {
                header_secs: 2,
                ms: 2000
            }
        );
        assert_eq!(
            Hint::scaled(2.0, 50.0),
            Hint {
                header_secs: 1,
                ms: 40
            }
        );
        assert_eq!(
            Hint::scaled(1.0, 0.4),
            Hint {
                header_secs: 3,
                ms: 2500
            }
        );
    }

    #[test]
    fn unpriceable_requests_name_the_field() {
        let mut r = sample();
        r.owner.address.region_code = "00".into();
        let err = plan(&config(Archetype::Fast), "k", "app", &r, Utc::now()).unwrap_err();
        assert_eq!(err.property, "owner.address.region_code");
    }

    #[test]
    fn needs_more_data_wants_the_apartment() {
        let r = sample();
        assert!(missing_data(Archetype::NeedsMoreData, &r).is_some());
        assert!(missing_data(Archetype::Typical, &r).is_none());
        let mut with = sample();
        with.owner.address.apartment = Some("12".into());
        assert!(missing_data(Archetype::NeedsMoreData, &with).is_none());
    }
}
