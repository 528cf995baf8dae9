//! The regulated OSAGO premium:
//! `premium = TB x KT x KBM x KVS x KO x KM x KS x KN x KPr`, capped at
//! 3 x TB x KT (5x when KN applies).
//!
//! Only TB is the insurer's choice; every other coefficient is computed here
//! from the request and is the same for every insurer. Arithmetic is exact:
//! coefficients are integer hundredths, the product is taken in `u128` and
//! rounded half up to a kopeck once, at the end.

pub mod tables;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use chrono::NaiveDate;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::money::Kopecks;
use crate::request::{years_between, QuoteRequest};

/// A coefficient in hundredths (117 is 1.17); JSON shows it as a decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Coef(pub u16);

impl Coef {
    /// 1.00.
    pub const ONE: Coef = Coef(100);
}

impl fmt::Display for Coef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl Serialize for Coef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(f64::from(self.0) / 100.0)
    }
}

impl<'de> Deserialize<'de> for Coef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(d)?;
        if !(0.0..=100.0).contains(&value) {
            return Err(serde::de::Error::custom("coefficient out of range"));
        }
        Ok(Coef((value * 100.0).round() as u16))
    }
}

/// A bonus-malus class: M, 0, 1, ..., 13. JSON: `"M"`, `"0"` ... `"13"`
/// (a bare number is accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KbmClass(u8);

impl KbmClass {
    /// Class M, the worst.
    pub const M: KbmClass = KbmClass(0);
    /// Class 3, where a new driver starts.
    pub const START: KbmClass = KbmClass(4);

    /// All classes from the worst (M) to the best (13).
    pub fn all() -> impl Iterator<Item = KbmClass> {
        (0..15).map(KbmClass)
    }

    /// Index into [`tables::KBM`]: 0 for M, n + 1 for class n.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The coefficient for this class.
    pub fn coefficient(self) -> Coef {
        Coef(tables::KBM[self.index()])
    }
}

impl fmt::Display for KbmClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("M"),
            n => write!(f, "{}", n - 1),
        }
    }
}

impl FromStr for KbmClass {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("m") || s == "М" {
            return Ok(KbmClass::M);
        }
        match s.parse::<u8>() {
            Ok(n) if n <= 13 => Ok(KbmClass(n + 1)),
            _ => Err("kbm class must be M or 0..13"),
        }
    }
}

impl Serialize for KbmClass {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KbmClass {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(u8),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(t) => t,
            Raw::Number(n) => n.to_string(),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The coefficient breakdown of a premium.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

struct Region {
    kt: u16,
}

static REGIONS: LazyLock<HashMap<String, Region>> = LazyLock::new(|| {
    tables::REGIONS_CSV
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let mut cols = line.split(',');
            let code = cols.next().expect("region code").trim().to_owned();
            let _name = cols.next().expect("region name");
            let kt = cols
                .next()
                .and_then(|kt| kt.trim().parse().ok())
                .expect("region kt");
            (code, Region { kt })
        })
        .collect()
});

/// KT for a two-digit region code, if the region is known.
pub fn kt_for_region(code: &str) -> Option<Coef> {
    REGIONS.get(code).map(|r| Coef(r.kt))
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
    let kt = kt_for_region(&request.owner.address.region_code).ok_or(TariffError::UnknownRegion)?;
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

#[cfg(test)]
mod tests;
