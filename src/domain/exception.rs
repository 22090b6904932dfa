//! Exceptions: records that could not become a billable line. Reported, never pushed, never
//! dropped.

use super::{BillingAccount, LicenseType, Period, SourceName};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExceptionKind {
    /// The source's customer key is in no customer map row.
    UnmappedCustomer,
    /// The source's item has no license type in the source's mapping rules.
    UnmappedLicense,
    /// No price in force for (license type, account, currency) on the period's first day.
    NoPrice,
    /// The line cannot go to its billing system as it is (e.g. a fractional quantity for
    /// RamBase, or no plan/item configured for it).
    NotBillable,
    /// A quantity above `billing.max_quantity_per_record` / `max_quantity_per_line`, or an
    /// amount too large to compute: never a line, whatever the peer sent.
    OutOfRange,
    /// A source answered far less than the period's pushed lines imply
    /// (`billing.shrink_guard`): its credits and reversals wait for a person.
    SuspiciousShrink,
}

impl ExceptionKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ExceptionKind::UnmappedCustomer => "unmapped_customer",
            ExceptionKind::UnmappedLicense => "unmapped_license",
            ExceptionKind::NoPrice => "no_price",
            ExceptionKind::NotBillable => "not_billable",
            ExceptionKind::OutOfRange => "out_of_range",
            ExceptionKind::SuspiciousShrink => "suspicious_shrink",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "unmapped_customer" => ExceptionKind::UnmappedCustomer,
            "unmapped_license" => ExceptionKind::UnmappedLicense,
            "no_price" => ExceptionKind::NoPrice,
            "not_billable" => ExceptionKind::NotBillable,
            "out_of_range" => ExceptionKind::OutOfRange,
            "suspicious_shrink" => ExceptionKind::SuspiciousShrink,
            _ => return None,
        })
    }
}

impl fmt::Display for ExceptionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One exception of a run: what could not be billed, how much of it, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunException {
    pub period: Period,
    pub source: SourceName,
    pub kind: ExceptionKind,
    /// The source's customer key (organization, service GUID, org id).
    pub customer_key: String,
    pub item: String,
    pub billing_account: Option<BillingAccount>,
    pub license_type: Option<LicenseType>,
    pub quantity: Decimal,
    pub record_count: u64,
    /// What is wrong and what to do, for the accountant.
    pub message: String,
}
