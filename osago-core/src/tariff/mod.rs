//! The regulated OSAGO premium:
//! `premium = TB x KT x KBM x KVS x KO x KM x KS x KN x KPr`, capped at
//! 3 x TB x KT (5x when KN applies).
//!
//! Only TB is the insurer's choice; every other coefficient is computed here
//! from the request and is the same for every insurer. Arithmetic is exact:
//! coefficients are integer hundredths, the product is taken in `u128` and
//! rounded half up to a kopeck once, at the end.

pub use crate::directive::{
    kt_for, kt_for_region, tables, territories, territory, Coef, KbmClass, Territory,
};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::money::Kopecks;
use crate::request::{years_between, Category, Purpose, QuoteRequest};

/// The base-rate corridor the regulator sets for a kind of vehicle and use:
/// an insurer chooses its TB inside it. The car corridor is the directive's
/// (from 2025-12-09); the others are *unverified* defaults in
/// [`tables`], one constant each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TbCorridor {
    /// The lowest base rate.
    pub min: Kopecks,
    /// The highest base rate.
    pub max: Kopecks,
}

impl TbCorridor {
    fn rub((min, max): (i64, i64)) -> Self {
        Self {
            min: Kopecks::from_rub(min),
            max: Kopecks::from_rub(max),
        }
    }

    /// A car (B, BE) of an individual, not a taxi.
    pub fn car() -> Self {
        Self::rub(tables::TB_CORRIDOR_RUB)
    }

    /// The corridor of a vehicle category and use: a car used as a taxi has
    /// its own, higher one; motorcycles, trucks and buses have theirs
    /// whatever the use.
    pub fn of(category: Category, purpose: Purpose) -> Self {
        Self::rub(match (category, purpose) {
            (Category::B | Category::BE, Purpose::Taxi) => tables::TB_CORRIDOR_TAXI_RUB,
            (Category::B | Category::BE, _) => tables::TB_CORRIDOR_RUB,
            (Category::A, _) => tables::TB_CORRIDOR_MOTORCYCLE_RUB,
            (Category::C | Category::CE, _) => tables::TB_CORRIDOR_TRUCK_RUB,
            (Category::D | Category::DE, _) => tables::TB_CORRIDOR_BUS_RUB,
        })
    }

    /// The corridor of a request's vehicle and use.
    pub fn for_request(request: &QuoteRequest) -> Self {
        Self::of(request.vehicle.category, request.policy.purpose)
    }

    /// The base rate at the same relative place in this corridor as `tb`
    /// holds in `from` (an insurer near the top of one corridor sits near
    /// the top of every other), to the rouble; `tb` outside `from` is
    /// clamped to it.
    pub fn same_place(self, from: TbCorridor, tb: Kopecks) -> Kopecks {
        let span = i128::from(from.max.get() - from.min.get());
        if span <= 0 {
            return self.min;
        }
        let offset = i128::from(tb.get().clamp(from.min.get(), from.max.get()) - from.min.get());
        let target = i128::from(self.max.get() - self.min.get());
        let kopecks = i128::from(self.min.get()) + (offset * target + span / 2) / span;
        let rub = (kopecks + 50) / 100;
        Kopecks::from_rub(i64::try_from(rub).unwrap_or(i64::MAX / 100))
    }
}

/// The coefficient breakdown of a premium.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Coefficients {
    /// Base rate chosen by the insurer.
    pub tb_kopecks: Kopecks,
    /// Territory.
    pub kt: Coef,
    /// Bonus-malus.
    pub kbm: Coef,
    /// Driver age and experience.
    pub kvs: Coef,
    /// Limited or unlimited drivers.
    pub ko: Coef,
    /// Engine power.
    pub km: Coef,
    /// Season (months of use).
    pub ks: Coef,
    /// Gross violations.
    pub kn: Coef,
    /// Trailer.
    pub kpr: Coef,
}

/// A computed premium.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Premium {
    /// The premium to pay.
    pub premium_kopecks: Kopecks,
    /// How it was computed.
    pub coefficients: Coefficients,
    /// The legal cap lowered it.
    pub capped: bool,
}

/// Why a premium cannot be computed (the request was not validated).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TariffError {
    /// No KT for the owner's region.
    #[error("no territory coefficient for the region")]
    UnknownRegion,
    /// A car without engine power.
    #[error("engine power is required for category B and BE")]
    MissingEnginePower,
    /// Usage period outside 3..=12 months.
    #[error("usage period must be 3 to 12 months")]
    UsagePeriod,
    /// Neither unlimited drivers nor a named one.
    #[error("no drivers")]
    NoDrivers,
}

/// KVS for a driver's age and years of experience.
pub fn kvs(age: i32, experience_years: i32) -> Coef {
    let band =
        |bounds: &[i32; 8], value: i32| bounds.iter().rposition(|&b| value >= b).unwrap_or(0);
    let row = &tables::KVS[band(&tables::KVS_AGE_FROM, age)];
    let mut col = band(&tables::KVS_EXPERIENCE_FROM, experience_years.max(0));
    while row[col] == 0 {
        col -= 1;
    }
    Coef(row[col])
}

/// KM for engine power (B/BE).
pub fn km(hp: u16) -> Coef {
    let (_, km) = tables::KM
        .iter()
        .find(|(upper, _)| hp <= *upper)
        .expect("last KM band is open");
    Coef(*km)
}

/// KS for months of use.
pub fn ks(months: u8) -> Option<Coef> {
    tables::KS
        .iter()
        .find(|(m, _)| *m == months)
        .map(|(_, ks)| Coef(*ks))
}

/// Every coefficient except TB, from a validated request, for a policy that
/// starts on `start`.
pub fn coefficients(request: &QuoteRequest, start: NaiveDate) -> Result<Coefficients, TariffError> {
    let address = &request.owner.address;
    let kt = kt_for(&address.region_code, &address.city).ok_or(TariffError::UnknownRegion)?;
    let (kbm, kvs, ko) = if request.drivers.unlimited {
        let class = request.owner.kbm_class.unwrap_or(KbmClass::START);
        (class.coefficient(), Coef::ONE, Coef(tables::KO_UNLIMITED))
    } else {
        let worst = request
            .drivers
            .list
            .iter()
            .map(|d| {
                let age = years_between(d.birth_date, start);
                let experience = years_between(d.experience_start, start);
                (d.kbm_class.coefficient(), kvs(age, experience))
            })
            .max_by_key(|(kbm, kvs)| u32::from(kbm.0) * u32::from(kvs.0))
            .ok_or(TariffError::NoDrivers)?;
        (worst.0, worst.1, Coef(tables::KO_NAMED))
    };
    let vehicle = &request.vehicle;
    let km = if vehicle.category.is_car() {
        km(vehicle
            .engine_power_hp
            .ok_or(TariffError::MissingEnginePower)?)
    } else {
        Coef::ONE
    };
    let ks = ks(request.policy.usage_period_months).ok_or(TariffError::UsagePeriod)?;
    let kn = if request.policy.gross_violations {
        Coef(tables::KN_VIOLATIONS)
    } else {
        Coef::ONE
    };
    let kpr = if vehicle.has_trailer && vehicle.category.is_car() {
        Coef(tables::KPR_TRAILER)
    } else {
        Coef::ONE
    };
    Ok(Coefficients {
        tb_kopecks: Kopecks(0),
        kt,
        kbm,
        kvs,
        ko,
        km,
        ks,
        kn,
        kpr,
    })
}

/// The premium for a validated request with the insurer's base rate `tb`.
pub fn premium(
    request: &QuoteRequest,
    tb: Kopecks,
    start: NaiveDate,
) -> Result<Premium, TariffError> {
    let mut c = coefficients(request, start)?;
    c.tb_kopecks = tb;
    Ok(apply(c))
}

/// The premium for a full breakdown, with the cap applied.
pub fn apply(c: Coefficients) -> Premium {
    let tb = u128::try_from(c.tb_kopecks.get().max(0)).unwrap_or(0);
    let factors = [c.kt, c.kbm, c.kvs, c.ko, c.km, c.ks, c.kn, c.kpr];
    let scale = 100u128.pow(factors.len() as u32);
    let product = factors.iter().fold(tb, |acc, f| acc * u128::from(f.0));
    let raw = (product + scale / 2) / scale;
    let multiple = if c.kn > Coef::ONE {
        tables::CAP_MULTIPLE_WITH_KN
    } else {
        tables::CAP_MULTIPLE
    };
    let cap = (tb * u128::from(c.kt.0) * multiple + 50) / 100;
    let capped = raw > cap;
    let value = raw.min(cap);
    Premium {
        premium_kopecks: Kopecks(i64::try_from(value).expect("premium fits in i64")),
        coefficients: c,
        capped,
    }
}

/// The lawful price range of one request: what the regulated formula gives
/// at the two ends of the base-rate corridor, each capped. Every insurer's
/// OSAGO premium for this request must lie in it; it is known before any
/// insurer answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PriceRange {
    /// The premium at the corridor's lowest base rate.
    pub min_kopecks: Kopecks,
    /// The premium at the corridor's highest base rate (capped).
    pub max_kopecks: Kopecks,
}

/// How an insurer's premium compares with the lawful range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum PriceVerdict {
    /// Within the range.
    Within,
    /// Below the lowest lawful premium: wrong data on one side, or a bait
    /// price the policy will not be sold at.
    BelowMinimum,
    /// Above the highest lawful premium (or the cap): unlawful.
    AboveMaximum,
    /// A verdict a newer writer added.
    #[serde(other)]
    Unknown,
}

/// An insurer's premium checked against its request's lawful range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PriceCheck {
    /// The range.
    pub range: PriceRange,
    /// Where the premium falls.
    pub verdict: PriceVerdict,
}

/// How far (in kopecks) a premium may stray from the range before it is
/// flagged: an insurer rounding each coefficient product to the rouble.
pub const PRICE_TOLERANCE_KOPECKS: i64 = 100;

impl PriceRange {
    /// Where `premium` falls, within [`PRICE_TOLERANCE_KOPECKS`].
    pub fn check(&self, premium: Kopecks) -> PriceCheck {
        let verdict = if premium.get() < self.min_kopecks.get() - PRICE_TOLERANCE_KOPECKS {
            PriceVerdict::BelowMinimum
        } else if premium.get() > self.max_kopecks.get() + PRICE_TOLERANCE_KOPECKS {
            PriceVerdict::AboveMaximum
        } else {
            PriceVerdict::Within
        };
        PriceCheck {
            range: *self,
            verdict,
        }
    }
}

/// The lawful price range of a validated request starting on `start`: the
/// premium at both ends of its vehicle's and use's base-rate corridor
/// ([`TbCorridor::for_request`]), each capped.
pub fn lawful_range(request: &QuoteRequest, start: NaiveDate) -> Result<PriceRange, TariffError> {
    let corridor = TbCorridor::for_request(request);
    Ok(PriceRange {
        min_kopecks: premium(request, corridor.min, start)?.premium_kopecks,
        max_kopecks: premium(request, corridor.max, start)?.premium_kopecks,
    })
}

#[cfg(test)]
mod tests;
