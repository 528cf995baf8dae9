//! The strict underwriter's rules. Reasons name the rule, never the person.

use chrono::NaiveDate;
use osago_core::request::{years_between, Purpose, QuoteRequest};
use osago_core::tariff::KbmClass;

/// The youngest driver the strict underwriter insures, in years at the policy start.
pub const MIN_DRIVER_AGE: i32 = 22;

/// The least driving experience it insures, in years at the policy start.
pub const MIN_EXPERIENCE_YEARS: i32 = 3;

/// [`KbmClass::index`] of class 0: classes M and 0 are declined.
const KBM_CLASS_ZERO_INDEX: usize = 1;

/// Owner regions it does not insure (two-digit codes).
pub const DECLINED_REGIONS: [&str; 2] = ["05", "20"];

/// Why the strict underwriter declines `request` for a policy starting on
/// `start`, or `None` when it offers a price.
pub(crate) fn decline_reason(request: &QuoteRequest, start: NaiveDate) -> Option<&'static str> {
    let drivers = &request.drivers.list;
    if drivers
        .iter()
        .any(|d| years_between(d.birth_date, start) < MIN_DRIVER_AGE)
    {
        return Some("drivers under 22 are not insured");
    }
    if drivers
        .iter()
        .any(|d| years_between(d.experience_start, start) < MIN_EXPERIENCE_YEARS)
    {
        return Some("drivers with under 3 years of experience are not insured");
    }
    if kbm_classes(request).any(|class| class.index() <= KBM_CLASS_ZERO_INDEX) {
        return Some("drivers in kbm class m or 0 are not insured");
    }
    if request.policy.purpose == Purpose::Taxi {
        return Some("taxis are not insured");
    }
    if DECLINED_REGIONS.contains(&request.owner.address.region_code.as_str()) {
        return Some("vehicles registered in this region are not insured");
    }
    None
}

/// The KBM classes the premium depends on: the named drivers', or the
/// owner's when anyone may drive.
fn kbm_classes(request: &QuoteRequest) -> impl Iterator<Item = KbmClass> + '_ {
    let owner = request
        .drivers
        .unlimited
        .then(|| request.owner.kbm_class.unwrap_or(KbmClass::START));
    request
        .drivers
        .list
        .iter()
        .map(|d| d.kbm_class)
        .chain(owner)
}

#[cfg(test)]
mod tests {
    use chrono::Datelike;
    use osago_core::request::sample;

    use super::*;

    fn start() -> NaiveDate {
        osago_core::Clock::today(&osago_core::SystemClock) + chrono::Duration::days(1)
    }

    fn years_before(date: NaiveDate, years: i32) -> NaiveDate {
        date.with_year(date.year() - years)
            .unwrap_or_else(|| date - chrono::Duration::days(365 * i64::from(years)))
    }

    #[test]
    fn the_sample_is_insured() {
        assert_eq!(decline_reason(&sample(), start()), None);
    }

    #[test]
    fn declines_each_rule() {
        let mut young = sample();
        young.drivers.list[0].birth_date = years_before(start(), 20);
        young.drivers.list[0].experience_start = years_before(start(), 2);
        assert_eq!(
            decline_reason(&young, start()),
            Some("drivers under 22 are not insured")
        );

        let mut novice = sample();
        novice.drivers.list[0].experience_start = years_before(start(), 2);
        assert!(decline_reason(&novice, start())
            .unwrap()
            .contains("experience"));

        let mut malus = sample();
        malus.drivers.list[0].kbm_class = "0".parse().unwrap();
        assert!(decline_reason(&malus, start()).unwrap().contains("kbm"));
        malus.drivers.list[0].kbm_class = "1".parse().unwrap();
        assert_eq!(decline_reason(&malus, start()), None);

        let mut unlimited = sample();
        unlimited.drivers.unlimited = true;
        unlimited.drivers.list.clear();
        unlimited.owner.kbm_class = Some(KbmClass::M);
        assert!(decline_reason(&unlimited, start()).unwrap().contains("kbm"));

        let mut taxi = sample();
        taxi.policy.purpose = Purpose::Taxi;
        assert_eq!(
            decline_reason(&taxi, start()),
            Some("taxis are not insured")
        );

        let mut region = sample();
        region.owner.address.region_code = "05".into();
        assert!(decline_reason(&region, start()).unwrap().contains("region"));
    }
}
