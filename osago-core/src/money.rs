//! Money. Always integer kopecks; floats never hold an amount.

use std::fmt;
use std::ops::{Add, Mul};

use serde::{Deserialize, Serialize};

/// An amount in kopecks (1 rouble = 100 kopecks).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Kopecks(pub i64);

impl Kopecks {
    /// Whole roubles.
    pub const fn from_rub(rub: i64) -> Self {
        Self(rub * 100)
    }

    /// The amount in kopecks.
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl Add for Kopecks {
    type Output = Kopecks;

    fn add(self, rhs: Self) -> Self::Output {
        Kopecks(self.0 + rhs.0)
    }
}

impl Mul<i64> for Kopecks {
    type Output = Kopecks;

    fn mul(self, rhs: i64) -> Self::Output {
        Kopecks(self.0 * rhs)
    }
}

impl fmt::Display for Kopecks {
    /// Russian notation: `12 345,67 ₽`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let rub = (abs / 100).to_string();
        let mut grouped = String::new();
        for (i, c) in rub.chars().enumerate() {
            if i > 0 && (rub.len() - i).is_multiple_of(3) {
                grouped.push('\u{a0}');
            }
            grouped.push(c);
        }
        write!(f, "{sign}{grouped},{:02}\u{a0}₽", abs % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_in_russian_notation() {
        assert_eq!(Kopecks(1_234_567).to_string(), "12\u{a0}345,67\u{a0}₽");
        assert_eq!(Kopecks(5).to_string(), "0,05\u{a0}₽");
        assert_eq!(Kopecks::from_rub(100).to_string(), "100,00\u{a0}₽");
    }
}
