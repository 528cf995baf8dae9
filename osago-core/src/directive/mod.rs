//! The tariff directive's data: the coefficient type, bonus-malus classes,
//! the regions' territory coefficients and the coefficient tables. Plain
//! data below both the request (which validates a region and carries a
//! class) and the tariff (which prices a request), so neither module needs
//! the other's back.

pub mod tables;

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

/// A region of the territory table: its name, the settlements it names
/// and the KT of every other settlement.
#[derive(Debug)]
pub struct Territory {
    /// Two-digit region code ("77").
    pub code: &'static str,
    /// The region's name in Russian.
    pub name: &'static str,
    /// The settlements the table names, with their KT, in table order.
    pub settlements: Vec<(&'static str, Coef)>,
    /// KT for every settlement the table does not name.
    pub elsewhere: Coef,
}

impl Territory {
    /// KT for a settlement of this region: the named settlement's, else the
    /// region's "other settlements" value. Case, `ё`/`е`, a leading
    /// "г." or "город" and extra spaces do not matter.
    pub fn kt(&self, settlement: &str) -> Coef {
        let wanted = settlement_key(settlement);
        self.settlements
            .iter()
            .find(|(name, _)| settlement_key(name) == wanted)
            .map_or(self.elsewhere, |(_, kt)| *kt)
    }
}

/// The comparison key of a settlement name.
fn settlement_key(name: &str) -> String {
    let lower = name.trim().to_lowercase().replace('ё', "е");
    let bare = ["город ", "г. ", "г.", "г "]
        .iter()
        .find_map(|prefix| lower.strip_prefix(prefix))
        .unwrap_or(&lower);
    bare.split_whitespace().collect::<Vec<_>>().join(" ")
}

static TERRITORIES: LazyLock<Vec<Territory>> = LazyLock::new(|| {
    let mut out: Vec<Territory> = Vec::new();
    for line in tables::TERRITORIES_CSV
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
    {
        let cols: Vec<&'static str> = line.split(',').map(str::trim).collect();
        let [code, name, settlement, kt, _source] = cols[..] else {
            panic!("territories.csv: five columns expected: {line}");
        };
        let kt = Coef(kt.parse().expect("territories.csv: kt in hundredths"));
        if out.last().is_none_or(|t| t.code != code) {
            out.push(Territory {
                code,
                name,
                settlements: Vec::new(),
                elsewhere: Coef(0),
            });
        }
        let territory = out.last_mut().expect("just pushed");
        if settlement == "*" {
            territory.elsewhere = kt;
        } else {
            territory.settlements.push((settlement, kt));
        }
    }
    out
});

/// Every region of the territory table, in code order.
pub fn territories() -> &'static [Territory] {
    &TERRITORIES
}

/// The region of a two-digit code, if the table has it.
pub fn territory(code: &str) -> Option<&'static Territory> {
    TERRITORIES.iter().find(|t| t.code == code)
}

/// KT for a settlement of a region, if the region is known.
pub fn kt_for(region_code: &str, settlement: &str) -> Option<Coef> {
    territory(region_code).map(|t| t.kt(settlement))
}

/// KT for a region's settlements the table does not name, if the region
/// is known.
pub fn kt_for_region(code: &str) -> Option<Coef> {
    territory(code).map(|t| t.elsewhere)
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
