//! Quantities no real month has. A peer can send any number a `Decimal` holds (a Genesys report
//! once said 5 × 10^27 minutes); tally bills none of them without a person: a record or line
//! above these limits is an `out_of_range` exception naming it, never a line.

use crate::problem::Problem;
use rust_decimal::Decimal;
use serde::Deserialize;

/// `[billing.limits]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuantityLimits {
    /// Largest quantity (absolute value) of one record: a person, a month of one usage.
    pub max_quantity_per_record: Decimal,
    /// Largest quantity (absolute value) of one invoice line, the sum of its records.
    pub max_quantity_per_line: Decimal,
}

impl Default for QuantityLimits {
    fn default() -> Self {
        QuantityLimits {
            max_quantity_per_record: Decimal::from(1_000_000_000u64),
            max_quantity_per_line: Decimal::from(1_000_000_000_000u64),
        }
    }
}

impl QuantityLimits {
    /// Why one record's `quantity` is out of range, if it is.
    pub fn check_record(&self, record_key: &str, quantity: Decimal) -> Option<String> {
        (quantity.abs() > self.max_quantity_per_record).then(|| {
            format!(
                "record {record_key:?} has quantity {quantity}, above billing.limits.max_quantity_per_record ({}); check the source — if the figure is real, raise the limit",
                self.max_quantity_per_record
            )
        })
    }

    /// Why a line's `quantity` is out of range, if it is.
    pub fn check_line(&self, quantity: Decimal) -> Option<String> {
        (quantity.abs() > self.max_quantity_per_line).then(|| {
            format!(
                "the line's quantity {quantity} is above billing.limits.max_quantity_per_line ({}); check the source — if the figure is real, raise the limit",
                self.max_quantity_per_line
            )
        })
    }

    /// Every problem of `[billing.limits]`.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (at, limit) in [
            (
                "billing.limits.max_quantity_per_record",
                self.max_quantity_per_record,
            ),
            (
                "billing.limits.max_quantity_per_line",
                self.max_quantity_per_line,
            ),
        ] {
            if limit <= Decimal::ZERO {
                problems.push(Problem::new(
                    at,
                    format!("is {limit}: expected a positive quantity such as 1000000000"),
                ));
            }
        }
        if self.max_quantity_per_line < self.max_quantity_per_record {
            problems.push(Problem::new(
                "billing.limits.max_quantity_per_line",
                format!(
                    "is {}, below max_quantity_per_record ({}): a line sums records, so its limit must be at least a record's",
                    self.max_quantity_per_line, self.max_quantity_per_record
                ),
            ));
        }
        problems
    }
}
