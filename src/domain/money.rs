//! Currencies and the one rounding rule of the whole program.
//!
//! docs/PRICING.md: a line's amount is rounded once, to the currency's minor units, with the table's
//! rounding mode. [`Currency::round`] is the only place where an amount is rounded.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An ISO 4217 currency with the number of minor units its amounts are rounded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: [u8; 3],
    minor_units: u32,
}

/// The ISO 4217 codes tally knows, with their minor units. Kept to the currencies a European
/// reseller meets; adding one is one line.
const KNOWN: &[(&str, u32)] = &[
    ("AUD", 2),
    ("BGN", 2),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CNY", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JPY", 0),
    ("KRW", 0),
    ("MXN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("PLN", 2),
    ("RON", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("TRY", 2),
    ("USD", 2),
    ("ZAR", 2),
    ("BHD", 3),
    ("KWD", 3),
];

/// A currency code that is not ISO 4217 (or not one tally knows).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown currency {0:?} (expected an ISO 4217 code such as EUR, USD, NOK or JPY)")]
pub struct UnknownCurrency(pub String);

impl Currency {
    /// The three-letter code, e.g. `EUR`.
    pub fn code(&self) -> &str {
        // The code is always three ASCII capitals: it was checked when parsed.
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    /// Digits after the decimal point in this currency's amounts (EUR 2, JPY 0).
    pub fn minor_units(&self) -> u32 {
        self.minor_units
    }

    /// Rounds a raw amount to this currency's minor units. The only rounding of money in tally.
    pub fn round(&self, raw: Decimal, mode: RoundingMode) -> Decimal {
        let strategy = match mode {
            RoundingMode::HalfUp => RoundingStrategy::MidpointAwayFromZero,
            RoundingMode::HalfEven => RoundingStrategy::MidpointNearestEven,
        };
        let mut rounded = raw.round_dp_with_strategy(self.minor_units, strategy);
        // Show every amount with its full minor units ("12.50", not "12.5").
        rounded.rescale(self.minor_units);
        rounded
    }
}

impl FromStr for Currency {
    type Err = UnknownCurrency;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let code = s.trim().to_ascii_uppercase();
        KNOWN
            .iter()
            .find(|(known, _)| *known == code)
            .map(|(known, minor_units)| {
                let b = known.as_bytes();
                Currency {
                    code: [b[0], b[1], b[2]],
                    minor_units: *minor_units,
                }
            })
            .ok_or_else(|| UnknownCurrency(s.to_owned()))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The sum of `values`, or `None` when it does not fit a `Decimal`: sums of money and quantities
/// are checked, so that a figure near `Decimal`'s bounds is an error the caller names, never a
/// panic halfway through a run.
pub fn checked_sum<I: IntoIterator<Item = Decimal>>(values: I) -> Option<Decimal> {
    values
        .into_iter()
        .try_fold(Decimal::ZERO, |acc, v| acc.checked_add(v))
}

/// How a line's amount is rounded to minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundingMode {
    /// 0.5 goes away from zero (2.345 → 2.35). The default, what accountants expect.
    #[default]
    HalfUp,
    /// Banker's rounding: 0.5 goes to the even neighbour (2.345 → 2.34, 2.355 → 2.36).
    HalfEven,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn half_up_and_half_even_differ_only_on_midpoints() {
        let eur: Currency = "EUR".parse().unwrap();
        assert_eq!(eur.round(dec!(2.345), RoundingMode::HalfUp), dec!(2.35));
        assert_eq!(eur.round(dec!(2.345), RoundingMode::HalfEven), dec!(2.34));
        assert_eq!(eur.round(dec!(2.355), RoundingMode::HalfEven), dec!(2.36));
        assert_eq!(eur.round(dec!(-2.345), RoundingMode::HalfUp), dec!(-2.35));
        assert_eq!(eur.round(dec!(2.3449), RoundingMode::HalfUp), dec!(2.34));
    }

    #[test]
    fn amounts_keep_their_minor_units() {
        let eur: Currency = "eur".parse().unwrap();
        assert_eq!(
            eur.round(dec!(12.5), RoundingMode::HalfUp).to_string(),
            "12.50"
        );
        let jpy: Currency = "JPY".parse().unwrap();
        assert_eq!(
            jpy.round(dec!(1234.5), RoundingMode::HalfUp).to_string(),
            "1235"
        );
    }

    #[test]
    fn a_sum_that_does_not_fit_is_none() {
        assert_eq!(checked_sum([dec!(1.5), dec!(2.25)]), Some(dec!(3.75)));
        assert_eq!(checked_sum([Decimal::MAX, dec!(1)]), None);
        assert_eq!(checked_sum(std::iter::empty()), Some(Decimal::ZERO));
    }

    #[test]
    fn unknown_currency_is_refused() {
        assert!("EURO".parse::<Currency>().is_err());
        assert!("XXX".parse::<Currency>().is_err());
    }
}
