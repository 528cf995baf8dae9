use chrono::NaiveDate;
use proptest::prelude::*;

use super::*;
use crate::request::{sample, Category, Driver, Licence};

fn start() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()
}

#[test]
fn sample_premium_by_hand() {
    // Moscow 2.00, class 5 -> 0.91, age 41 / 21 years -> 0.91, 106 hp -> 1.2.
    let p = premium(&sample(), Kopecks::from_rub(7_535), start()).unwrap();
    let c = &p.coefficients;
    assert_eq!(
        (c.kt, c.kbm, c.kvs, c.km, c.ks),
        (Coef(200), Coef(91), Coef(91), Coef(120), Coef(100))
    );
    // 7535 * 2.0 * 0.91 * 0.91 * 1.2 = 14 975.36 roubles
    assert_eq!(p.premium_kopecks, Kopecks(1_497_536));
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
    assert_eq!(kt_for("74", "Челябинск"), Some(Coef(210)));
    assert_eq!(kt_for_region("99"), None);
}

/// The 89 region codes of the Russian Federation (the vehicle-registration
/// numbering): 01-79, the autonomous districts, Crimea and Sevastopol, and
/// the four regions of 2022.
const REGION_CODES: [&str; 89] = [
    "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13", "14", "15", "16",
    "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31", "32",
    "33", "34", "35", "36", "37", "38", "39", "40", "41", "42", "43", "44", "45", "46", "47", "48",
    "49", "50", "51", "52", "53", "54", "55", "56", "57", "58", "59", "60", "61", "62", "63", "64",
    "65", "66", "67", "68", "69", "70", "71", "72", "73", "74", "75", "76", "77", "78", "79", "80",
    "81", "83", "84", "85", "86", "87", "89", "91", "92",
];

#[test]
fn the_territory_table_has_every_region_once_with_a_value_for_other_settlements() {
    let codes: Vec<&str> = territories().iter().map(|t| t.code).collect();
    assert_eq!(codes, REGION_CODES, "every region, once, in code order");
    for t in territories() {
        assert!(!t.name.is_empty(), "{}: a name", t.code);
        for (name, kt) in t
            .settlements
            .iter()
            .map(|(n, k)| (*n, *k))
            .chain([("*", t.elsewhere)])
        {
            assert!(
                (Coef(50)..=Coef(250)).contains(&kt),
                "{} {name}: KT {kt} is outside 0.50..=2.50",
                t.code
            );
        }
        let mut names: Vec<&str> = t.settlements.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            t.settlements.len(),
            "{}: a settlement twice",
            t.code
        );
    }
}

#[test]
fn a_named_settlement_has_its_own_kt_and_any_other_the_regions() {
    // Magnitogorsk is named; Troitsk is not, so it is "other settlements".
    assert_eq!(kt_for("74", "Магнитогорск"), Some(Coef(180)));
    assert_eq!(kt_for("74", "Троицк"), Some(Coef(100)));
    // How people write a city does not change its KT.
    for spelling in [
        "г. Магнитогорск",
        "МАГНИТОГОРСК",
        " город  Магнитогорск ",
        "г.Магнитогорск",
    ] {
        assert_eq!(kt_for("74", spelling), Some(Coef(180)), "{spelling}");
    }
    assert_eq!(
        kt_for("57", "Орел"),
        kt_for("57", "Орёл"),
        "ё and е are one letter here"
    );
    // The same name in another region is that region's settlement.
    assert_eq!(kt_for("28", "Благовещенск"), Some(Coef(160)));
    assert_eq!(kt_for("02", "Благовещенск"), Some(Coef(120)));
    // A whole-region entry prices every settlement alike.
    assert_eq!(kt_for("77", "Москва"), kt_for("77", "Зеленоград"));
    assert_eq!(kt_for("00", "Москва"), None);
}

#[test]
fn the_premium_uses_the_settlements_kt() {
    let mut r = sample();
    r.owner.address.region_code = "74".into();
    let tb = Kopecks::from_rub(6_000);
    r.owner.address.city = "Челябинск".into();
    let city = premium(&r, tb, start()).unwrap();
    r.owner.address.city = "Троицк".into();
    let elsewhere = premium(&r, tb, start()).unwrap();
    assert_eq!(
        (city.coefficients.kt, elsewhere.coefficients.kt),
        (Coef(210), Coef(100))
    );
    assert!(city.premium_kopecks > elsewhere.premium_kopecks);
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
    assert_eq!(p.premium_kopecks, Kopecks(8_665 * 100 * 200 * 3 / 100));
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
        (region, city) in proptest::sample::select(settlements()),
        trailer in any::<bool>(),
        violations in any::<bool>(),
        category in proptest::sample::select(vec![
            Category::A, Category::B, Category::BE, Category::C, Category::CE, Category::D, Category::DE,
        ]),
        purpose in proptest::sample::select(vec![
            Purpose::Personal, Purpose::Taxi, Purpose::Training, Purpose::Rental, Purpose::Other,
        ]),
    ) -> QuoteRequest {
        let mut r = sample();
        r.drivers.list = drivers;
        r.drivers.unlimited = unlimited;
        r.owner.kbm_class = Some(KbmClass(owner_class));
        r.vehicle.engine_power_hp = Some(hp);
        r.vehicle.category = category;
        r.policy.purpose = purpose;
        r.vehicle.has_trailer = trailer;
        r.policy.usage_period_months = months;
        r.policy.gross_violations = violations;
        r.owner.address.region_code = region.into();
        r.owner.address.city = city.into();
        r
    }
}

/// Every (region, settlement) the territory table names, and one it does
/// not name per region.
fn settlements() -> Vec<(&'static str, &'static str)> {
    territories()
        .iter()
        .flat_map(|t| {
            t.settlements
                .iter()
                .map(|(name, _)| (t.code, *name))
                .chain([(t.code, "Посёлок Новый")])
        })
        .collect()
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
    fn every_corridor_rate_prices_within_the_lawful_range(r in arb_request(), share in 0i64..=1_000) {
        let start = NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
        let corridor = TbCorridor::for_request(&r);
        let tb = Kopecks(corridor.min.get() + (corridor.max.get() - corridor.min.get()) * share / 1_000);
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

#[test]
fn a_taxi_costs_more_than_personal_use_of_the_same_car() {
    let personal = sample();
    let mut taxi = sample();
    taxi.policy.purpose = Purpose::Taxi;
    let (car, cab) = (
        TbCorridor::for_request(&personal),
        TbCorridor::for_request(&taxi),
    );
    assert!(
        cab.min > car.min && cab.max > car.max,
        "{cab:?} against {car:?}"
    );
    // The lawful range moves up at both ends ...
    let (p, t) = (
        lawful_range(&personal, start()).unwrap(),
        lawful_range(&taxi, start()).unwrap(),
    );
    assert!(t.min_kopecks > p.min_kopecks && t.max_kopecks > p.max_kopecks);
    // ... and an insurer anywhere in the car corridor charges a taxi more.
    for rub in [1_399, 5_500, 7_000, 8_665] {
        let tb = Kopecks::from_rub(rub);
        let as_taxi = cab.same_place(car, tb);
        assert!(
            premium(&taxi, as_taxi, start()).unwrap().premium_kopecks
                > premium(&personal, tb, start()).unwrap().premium_kopecks,
            "TB {rub}"
        );
    }
}

#[test]
fn each_kind_of_vehicle_has_its_corridor_and_the_same_place_maps_between_them() {
    use crate::request::Purpose::*;
    let car = TbCorridor::car();
    assert_eq!(TbCorridor::of(Category::B, Personal), car);
    assert_eq!(TbCorridor::of(Category::BE, Rental), car);
    assert_ne!(TbCorridor::of(Category::B, Taxi), car);
    for category in [
        Category::A,
        Category::C,
        Category::CE,
        Category::D,
        Category::DE,
    ] {
        // The use does not move a non-car's corridor.
        assert_eq!(
            TbCorridor::of(category, Taxi),
            TbCorridor::of(category, Personal)
        );
        let c = TbCorridor::of(category, Personal);
        assert!(c.min < c.max);
        assert_eq!(c.same_place(car, car.min), c.min);
        assert_eq!(c.same_place(car, car.max), c.max);
        assert_eq!(c.same_place(car, Kopecks(0)), c.min, "clamped");
    }
    let cab = TbCorridor::of(Category::B, Taxi);
    let middle = Kopecks((car.min.get() + car.max.get()) / 2);
    assert_eq!(
        cab.same_place(car, middle),
        Kopecks::from_rub((1_749 + 10_831) / 2)
    );
    assert_eq!(
        car.same_place(car, Kopecks::from_rub(6_123)),
        Kopecks::from_rub(6_123)
    );
}
