use chrono::NaiveDate;
use proptest::prelude::*;

use super::*;
use crate::request::{sample, Category, Driver, Licence};

fn start() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()
}

#[test]
fn sample_premium_by_hand() {
    // Moscow 1.80, class 5 -> 0.91, age 41 / 21 years -> 0.91, 106 hp -> 1.2.
    let p = premium(&sample(), Kopecks::from_rub(7_535), start()).unwrap();
    let c = &p.coefficients;
    assert_eq!(
        (c.kt, c.kbm, c.kvs, c.km, c.ks),
        (Coef(180), Coef(91), Coef(91), Coef(120), Coef(100))
    );
    // 7535 * 1.8 * 0.91 * 0.91 * 1.2 = 13 477.82 roubles
    assert_eq!(p.premium_kopecks, Kopecks(1_347_782));
    assert!(!p.capped);
}

#[test]
fn tables_have_the_documented_edges() {
    assert_eq!(KbmClass::M.coefficient(), Coef(392));
    assert_eq!("13".parse::<KbmClass>().unwrap().coefficient(), Coef(46));
    assert_eq!(KbmClass::START.to_string(), "3");
    assert_eq!(kvs(18, 0), Coef(227));
    assert_eq!(
        kvs(20, 9),
        Coef(162),
        "impossible cells take the nearest shorter experience"
    );
    assert_eq!(kvs(65, 40), Coef(83));
    assert_eq!(
        (km(50), km(51), km(150), km(151)),
        (Coef(60), Coef(100), Coef(140), Coef(160))
    );
    assert_eq!(
        (ks(3), ks(12), ks(2)),
        (Some(Coef(50)), Some(Coef(100)), None)
    );
    assert_eq!(kt_for_region("74"), Some(Coef(200)));
    assert_eq!(kt_for_region("99"), None);
}

#[test]
fn the_cap_limits_a_terrible_driver() {
    let mut r = sample();
    r.drivers.list[0].kbm_class = KbmClass::M;
    r.drivers.list[0].birth_date = NaiveDate::from_ymd_opt(2007, 1, 1).unwrap();
    r.drivers.list[0].experience_start = NaiveDate::from_ymd_opt(2026, 6, 1).unwrap();
    r.vehicle.engine_power_hp = Some(300);
    let tb = Kopecks::from_rub(8_665);
    let p = premium(&r, tb, start()).unwrap();
    assert!(p.capped);
    assert_eq!(p.premium_kopecks, Kopecks(8_665 * 100 * 180 * 3 / 100));
}

#[test]
fn unlimited_drivers_use_ko_and_the_owners_class() {
    let mut r = sample();
    r.drivers.unlimited = true;
    r.drivers.list.clear();
    let c = coefficients(&r, start()).unwrap();
    assert_eq!(
        (c.ko, c.kvs, c.kbm),
        (Coef(232), Coef::ONE, KbmClass::START.coefficient())
    );
}

prop_compose! {
    fn arb_driver()(age in 18i32..80, exp in 0i32..60, class in 0u8..15) -> Driver {
        let exp = exp.min(age - 16);
        let birth = start() - chrono::Duration::days(i64::from(age) * 366);
        let experience = start() - chrono::Duration::days(i64::from(exp) * 365);
        Driver {
            full_name: "Test Driver".into(),
            birth_date: birth,
            licence: Licence { series: "7700".into(), number: "123456".into() },
            experience_start: experience.max(birth + chrono::Duration::days(16 * 366)),
            kbm_class: KbmClass(class),
        }
    }
}

prop_compose! {
    fn arb_request()(
        drivers in proptest::collection::vec(arb_driver(), 1..4),
        unlimited in any::<bool>(),
        owner_class in 0u8..15,
        hp in 1u16..600,
        months in 3u8..=12,
        region in proptest::sample::select(vec!["77", "78", "74", "05", "20", "16", "50"]),
        trailer in any::<bool>(),
        violations in any::<bool>(),
        be in any::<bool>(),
    ) -> QuoteRequest {
        let mut r = sample();
        r.drivers.list = drivers;
        r.drivers.unlimited = unlimited;
        r.owner.kbm_class = Some(KbmClass(owner_class));
        r.vehicle.engine_power_hp = Some(hp);
        r.vehicle.category = if be { Category::BE } else { Category::B };
        r.vehicle.has_trailer = trailer;
        r.policy.usage_period_months = months;
        r.policy.gross_violations = violations;
        r.owner.address.region_code = region.into();
        r
    }
}

fn arb_tb() -> impl Strategy<Value = Kopecks> {
    (tables::TB_CORRIDOR_RUB.0 * 100..=tables::TB_CORRIDOR_RUB.1 * 100).prop_map(Kopecks)
}

proptest! {
    #[test]
    fn premium_is_positive_and_within_the_cap(r in arb_request(), tb in arb_tb()) {
        let p = premium(&r, tb, start()).unwrap();
        let c = &p.coefficients;
        let multiple = if r.policy.gross_violations { 5 } else { 3 };
        let cap = (i128::from(tb.get()) * i128::from(c.kt.0) * multiple + 50) / 100;
        prop_assert!(p.premium_kopecks.get() > 0);
        prop_assert!(i128::from(p.premium_kopecks.get()) <= cap);
    }

    #[test]
    fn premium_grows_with_engine_power(r in arb_request(), tb in arb_tb(), a in 1u16..600, b in 1u16..600) {
        let (low, high) = (a.min(b), a.max(b));
        let mut weak = r.clone();
        weak.vehicle.engine_power_hp = Some(low);
        let mut strong = r;
        strong.vehicle.engine_power_hp = Some(high);
        let p_weak = premium(&weak, tb, start()).unwrap().premium_kopecks;
        let p_strong = premium(&strong, tb, start()).unwrap().premium_kopecks;
        prop_assert!(p_weak <= p_strong);
    }

    #[test]
    fn premium_grows_with_a_worse_kbm_class(r in arb_request(), tb in arb_tb(), a in 0u8..15, b in 0u8..15) {
        // A lower class index is a worse class (M is the worst).
        let (worse, better) = (KbmClass(a.min(b)), KbmClass(a.max(b)));
        let with_class = |class: KbmClass| {
            let mut r = r.clone();
            r.owner.kbm_class = Some(class);
            for d in &mut r.drivers.list {
                d.kbm_class = class;
            }
            premium(&r, tb, start()).unwrap().premium_kopecks
        };
        prop_assert!(with_class(worse) >= with_class(better));
    }
}

proptest! {
    #[test]
    fn every_corridor_rate_prices_within_the_lawful_range(r in arb_request(), tb in arb_tb()) {
        let start = NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
        let range = lawful_range(&r, start).unwrap();
        prop_assert!(range.min_kopecks <= range.max_kopecks);
        let p = premium(&r, tb, start).unwrap();
        prop_assert_eq!(range.check(p.premium_kopecks).verdict, PriceVerdict::Within);
        // Half the lowest lawful premium, or double the highest, is flagged.
        let below = Kopecks(range.min_kopecks.get() / 2);
        prop_assume!(range.min_kopecks.get() - below.get() > PRICE_TOLERANCE_KOPECKS);
        prop_assert_eq!(range.check(below).verdict, PriceVerdict::BelowMinimum);
        prop_assert_eq!(
            range.check(Kopecks(range.max_kopecks.get() * 2)).verdict,
            PriceVerdict::AboveMaximum
        );
    }
}

#[test]
fn the_range_of_the_sample_spans_the_corridor() {
    let start = NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
    let r = sample();
    let range = lawful_range(&r, start).unwrap();
    let low = premium(&r, Kopecks::from_rub(tables::TB_CORRIDOR_RUB.0), start).unwrap();
    let high = premium(&r, Kopecks::from_rub(tables::TB_CORRIDOR_RUB.1), start).unwrap();
    assert_eq!(range.min_kopecks, low.premium_kopecks);
    assert_eq!(range.max_kopecks, high.premium_kopecks);
    assert!(range.min_kopecks < range.max_kopecks);
    let check = range.check(Kopecks(range.min_kopecks.get() - PRICE_TOLERANCE_KOPECKS));
    assert_eq!(check.verdict, PriceVerdict::Within, "rounding is tolerated");
    let json = serde_json::to_value(range.check(Kopecks(1))).unwrap();
    assert_eq!(json["verdict"], "below_minimum");
    let newer: PriceVerdict = serde_json::from_str("\"suspicious\"").unwrap();
    assert_eq!(newer, PriceVerdict::Unknown);
}
