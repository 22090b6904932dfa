//! Pricing: the pricing table (a CSV file accountants edit) and the amount of an invoice line.
//!
//! docs/PRICING.md is the specification; every rule here can be recomputed by hand from it.
//! [`PricingTable::load`] reads and validates the table, reporting every problem at once with
//! `file:row:column`; [`PricingTable::price`] is a pure function from a quantity to a [`Priced`]
//! line (rate, amount rounded once with [`Currency::round`], and the calculation trace).
//!
//! Points docs/PRICING.md leaves open, and the rule chosen here:
//! - Rows sharing a `price_id` with different `effective_from`/`effective_to` are *versions* of
//!   that price (`price_ref` = `<price_id>@<effective_from or 'open'>`). Within one version all
//!   columns but the tier columns must agree; across versions, `license_type`, `customer` and
//!   `currency` must agree (a price id names one price).
//! - Only `graduated` and `volume` prices have tiers: other models have one row per version with
//!   empty `tier_from`/`tier_to`. A column that means nothing for the model (`flat_fee` on
//!   `per_unit`, `unit_price` on `flat`, `package_size` on anything but `package`) is an error
//!   rather than silently ignored: in billing, an ignored number is a wrong invoice.
//! - The tier that "holds" the billable quantity `b` is the first with `b <= tier_to`, also for
//!   `b = 0`. Graduated flat fees are charged for every tier up to and including that one, so a
//!   first-tier flat fee (a base fee) is charged as soon as the line is billed.
//! - The rate of an averaged model (graduated, package) when `q = 0` is `0`: an average over no
//!   units does not exist, and a non-zero rate next to quantity 0 would suggest a computation
//!   that did not happen. The rate is a display value rounded to 4 decimals with the table's
//!   rounding mode; the amount is never derived from it.
//! - A line with `q = 0` that is not billed (no `min_charge`, not `flat`) has amount 0 and an
//!   empty trace of tiers.
//! - Numbers in the table are at most 10^12, and every step of an amount is checked
//!   arithmetic: a quantity too large for its price is a [`PriceError::Overflow`] the run
//!   reports as an exception (pricing must never panic halfway through a run).
//! - A negative quantity follows the formula (`b = max(q - included, 0) = 0`); rejecting
//!   negative usage is the job of the stage that produces quantities.

mod cells;
mod engine;
pub mod explain;
mod table;

use crate::domain::{BillingAccount, Currency, LicenseType, Period, RoundingMode};
use crate::problem::Problem;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;
use std::fmt;
use std::path::Path;

/// The pricing model of one price (docs/PRICING.md, column `model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// `b × unit_price`.
    PerUnit,
    /// Each tier prices the units that fall in it, plus its flat fee when reached.
    Graduated,
    /// All units at the price of the tier that holds `b`, plus that tier's flat fee.
    Volume,
    /// `ceil(b ÷ package_size) × unit_price`.
    Package,
    /// `flat_fee`, whatever the quantity.
    Flat,
}

impl Model {
    /// The spelling used in the CSV file.
    pub fn as_str(&self) -> &'static str {
        match self {
            Model::PerUnit => "per_unit",
            Model::Graduated => "graduated",
            Model::Volume => "volume",
            Model::Package => "package",
            Model::Flat => "flat",
        }
    }

    fn is_tiered(&self) -> bool {
        matches!(self, Model::Graduated | Model::Volume)
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One tier of a graduated or volume price; non-tiered prices keep their one row here too
/// (with `from = 0` and `to = None`), so that the engine reads prices in one shape.
#[derive(Debug, Clone, PartialEq)]
struct Tier {
    from: Decimal,
    /// Inclusive upper bound; `None` is unbounded.
    to: Option<Decimal>,
    unit_price: Decimal,
    flat_fee: Option<Decimal>,
}

/// One version of one price: the rows sharing a `price_id` and an effective range.
#[derive(Debug, Clone, PartialEq)]
struct Price {
    price_id: String,
    license_type: LicenseType,
    /// `None` for the list price.
    customer: Option<BillingAccount>,
    currency: Currency,
    model: Model,
    /// Sorted by `from`, contiguous, the last one unbounded (checked when loaded).
    tiers: Vec<Tier>,
    /// `package` only; checked to be > 0.
    package_size: Option<Decimal>,
    included_quantity: Decimal,
    min_charge: Option<Decimal>,
    effective_from: Option<NaiveDate>,
    effective_to: Option<NaiveDate>,
}

impl Price {
    /// `<price_id>@<effective_from or 'open'>`: names the version on the line and in the trace.
    fn price_ref(&self) -> String {
        match self.effective_from {
            Some(d) => format!("{}@{}", self.price_id, d.format("%Y-%m-%d")),
            None => format!("{}@open", self.price_id),
        }
    }

    fn in_force_on(&self, day: NaiveDate) -> bool {
        self.effective_from.is_none_or(|f| f <= day) && self.effective_to.is_none_or(|t| day <= t)
    }
}

/// The validated pricing table.
#[derive(Debug, Clone)]
pub struct PricingTable {
    prices: Vec<Price>,
}

impl PricingTable {
    /// Loads and validates; on failure returns EVERY problem, each
    /// `Problem { at: "<path>:<row>:<column>", message }` where `<path>` is the path as given,
    /// `<row>` the spreadsheet row (header = row 1, first data row = 2) and `<column>` the
    /// column name. The message says what is wrong and what was found.
    pub fn load(path: &Path) -> Result<PricingTable, Vec<Problem>> {
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| {
            vec![Problem::new(
                name.clone(),
                format!("cannot open the pricing table: {e}"),
            )]
        })?;
        Self::from_reader(&name, file)
    }

    /// Same as [`PricingTable::load`], from any reader; `name` stands for the path in problems.
    pub fn from_reader<R: std::io::Read>(
        name: &str,
        reader: R,
    ) -> Result<PricingTable, Vec<Problem>> {
        table::parse(name, reader).map(|prices| PricingTable { prices })
    }

    /// Number of prices: distinct (`price_id`, effective range) versions.
    pub fn len(&self) -> usize {
        self.prices.len()
    }

    /// True when the table has no price at all.
    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    /// Prices `quantity` of `license_type` for `account` billed in `currency`, for `period`,
    /// with the price in force on the period's first day. The account's own price wins over the
    /// list price; a price in another currency does not apply.
    pub fn price(
        &self,
        license_type: &LicenseType,
        account: &BillingAccount,
        currency: Currency,
        period: Period,
        quantity: Decimal,
        rounding: RoundingMode,
    ) -> Result<Priced, PriceError> {
        let day = period.first_day();
        let candidates = self.prices.iter().filter(|p| {
            &p.license_type == license_type && p.currency == currency && p.in_force_on(day)
        });
        // Loading guarantees at most one price in force per (license type, customer,
        // currency) and day, so "the first" below is "the only one".
        let mut own = None;
        let mut list = None;
        for p in candidates {
            match &p.customer {
                Some(c) if c == account => own = own.or(Some(p)),
                Some(_) => {}
                None => list = list.or(Some(p)),
            }
        }
        match own.or(list) {
            Some(p) => Ok(engine::price_line(p, quantity, rounding)?),
            None => Err(PriceError::NoPrice(NoPrice {
                license_type: license_type.clone(),
                account: account.clone(),
                currency,
                day,
            })),
        }
    }
}

/// A priced line: what goes on the invoice, and how it was computed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Priced {
    /// The rate shown on the line (docs/PRICING.md table "rate shown on the line").
    pub rate: Decimal,
    /// The line's amount, rounded once to the currency's minor units by [`Currency::round`].
    pub amount: Decimal,
    /// `<price_id>@<effective_from or 'open'>`.
    pub price_ref: String,
    /// False when `q = 0` and the price has neither a `min_charge` nor the `flat` model: such a
    /// line is not billed.
    pub billable: bool,
    /// Every step of the computation, so that an accountant can recompute the cent.
    pub trace: PriceTrace,
}

/// The calculation trace of a line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriceTrace {
    pub price_ref: String,
    pub model: Model,
    /// `q`, as given.
    pub quantity: Decimal,
    /// The price's `included_quantity` (0 when empty).
    pub included: Decimal,
    /// `b = max(q - included, 0)`.
    pub billable_quantity: Decimal,
    /// Units per package (`package` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_size: Option<Decimal>,
    /// The tiers (or the single price row) that contributed to the raw amount. For `package`,
    /// `units` counts packages.
    pub tiers: Vec<TierApplied>,
    /// The amount before the minimum and before rounding.
    pub raw_amount: Decimal,
    /// The `min_charge`, when it raised the amount.
    pub minimum_applied: Option<Decimal>,
    pub rounding: RoundingMode,
    /// Equal to [`Priced::amount`].
    pub rounded_amount: Decimal,
}

/// One tier's part of a line's raw amount.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierApplied {
    pub from: Decimal,
    /// `None`: unbounded.
    pub to: Option<Decimal>,
    /// Units priced in this tier (packages, for `package`).
    pub units: Decimal,
    pub unit_price: Decimal,
    /// The tier's flat fee, when it was charged.
    pub flat_fee: Option<Decimal>,
    /// `units × unit_price + flat_fee`, unrounded.
    pub amount: Decimal,
}

/// Why a line could not be priced.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PriceError {
    #[error(transparent)]
    NoPrice(#[from] NoPrice),
    #[error(transparent)]
    Overflow(#[from] Overflow),
}

/// A step of the amount does not fit a `Decimal` (about 7.9 × 10^28): the quantity is absurd
/// for the price, whatever the peer said.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "quantity {quantity} priced with {price_ref} gives an amount too large to compute; check the \
     source's figures (and billing.max_quantity_per_line) before billing this line"
)]
pub struct Overflow {
    pub price_ref: String,
    pub quantity: Decimal,
}

/// No price in force for a (license type, account, currency) on a day.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct NoPrice {
    pub license_type: LicenseType,
    pub account: BillingAccount,
    pub currency: Currency,
    /// The first day of the period being priced.
    pub day: NaiveDate,
}

impl fmt::Display for NoPrice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no price for license type {:?}, account {:?}, currency {} on {}: add a row to the \
             pricing table for this license type in {} in force on that day (a list price with \
             an empty customer, or a price for customer {:?})",
            self.license_type.as_str(),
            self.account.as_str(),
            self.currency,
            self.day.format("%Y-%m-%d"),
            self.currency,
            self.account.as_str(),
        )
    }
}

#[cfg(test)]
mod tests;
