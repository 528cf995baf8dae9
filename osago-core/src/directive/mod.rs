//! The tariff directive's data: the coefficient type, bonus-malus classes,
//! the regions' territory coefficients and the coefficient tables. Plain
//! data below both the request (which validates a region and carries a
//! class) and the tariff (which prices a request), so neither module needs
//! the other's back.

pub mod tables;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
pub struct KbmClass(pub(crate) u8);

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

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Coef {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Coef".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "number",
            "minimum": 0,
            "maximum": 100,
            "description": "A regulated coefficient, to the hundredth (1.17)"
        })
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for KbmClass {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "KbmClass".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A bonus-malus class: \"M\", \"0\" ... \"13\" (a bare number is accepted on input)",
            "oneOf": [
                {"type": "string", "enum": ["M", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13"]},
                {"type": "integer", "minimum": 0, "maximum": 13}
            ]
        })
    }
}
