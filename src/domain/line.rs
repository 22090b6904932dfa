//! Invoice lines: as computed by a run, and as kept (with revisions) in the ledger.

use super::{BillingAccount, Currency, LicenseType, Period, Sample, SourceName};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The deterministic identity of a line: re-running a period computes the same keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LineKey {
    pub period: Period,
    pub billing_account: BillingAccount,
    pub license_type: LicenseType,
    pub source: SourceName,
}

impl LineKey {
    /// The idempotency key of one revision of this line: the identity plus the revision.
    pub fn idempotency_key(&self, revision: i32) -> String {
        format!("{self}#r{revision}")
    }
}

impl fmt::Display for LineKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.period, self.source, self.billing_account, self.license_type
        )
    }
}

/// Where a line's quantity came from: how many source records, and a fingerprint of them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Evidence {
    pub record_count: u64,
    /// Hex SHA-256 fingerprint of the records (order-independent).
    pub hash: String,
    /// A few of the records, for a reviewer: `record key (customer key, item)`, the smallest
    /// record keys of the line's groups, at most [`Evidence::SAMPLE`].
    #[serde(default, skip_serializing_if = "Sample::is_empty")]
    pub sample: Sample,
}

impl Evidence {
    /// How many records a line's sample names.
    pub const SAMPLE: usize = 5;
}

/// Two evidences are the same records when their counts and fingerprints are: the sample is
/// drawn from those records, and a revision stored before samples were kept has none, which
/// must not make an unchanged line look changed.
impl PartialEq for Evidence {
    fn eq(&self, other: &Self) -> bool {
        self.record_count == other.record_count && self.hash == other.hash
    }
}

impl Eq for Evidence {}

/// A line as computed and priced by this run (not yet compared with the ledger).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub key: LineKey,
    pub quantity: Decimal,
    /// Unit price shown on the line (docs/PRICING.md, "rate shown on the line").
    pub rate: Decimal,
    /// Rounded once to the currency's minor units.
    pub amount: Decimal,
    pub currency: Currency,
    /// `price_id@effective_from` of the price used.
    pub price_ref: String,
    /// The calculation trace: tiers, minimum, rounding.
    pub trace: super::Trace,
    pub evidence: Evidence,
    /// The configured billing system this line is pushed to.
    pub sink: String,
}

/// Where a ledger revision is on its way to the billing system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineStatus {
    /// Computed, waiting for approval (`require_approval`), may still be updated in place.
    Draft,
    /// Approved (or no approval required): will be pushed, may still be updated in place.
    Approved,
    /// Phase one of the push is committed: the billing system may or may not have it.
    /// Resolved by reading the billing system before anything is sent again.
    Pushing,
    /// The billing system has it, under `external_id`. Never changed again.
    Pushed,
}

impl LineStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            LineStatus::Draft => "draft",
            LineStatus::Approved => "approved",
            LineStatus::Pushing => "pushing",
            LineStatus::Pushed => "pushed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "draft" => LineStatus::Draft,
            "approved" => LineStatus::Approved,
            "pushing" => LineStatus::Pushing,
            "pushed" => LineStatus::Pushed,
            _ => return None,
        })
    }

    /// True once the billing system may hold this revision: it must not be edited.
    pub fn is_sent(&self) -> bool {
        matches!(self, LineStatus::Pushing | LineStatus::Pushed)
    }
}

impl fmt::Display for LineStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One revision of a line in the ledger.
///
/// Revision 1 carries the whole line; a later revision is an adjustment and carries the delta
/// against everything before it. `total_quantity`/`total_amount` are the line's values after
/// this revision, so the newest revision tells what the customer is billed in all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerLine {
    pub id: i64,
    pub key: LineKey,
    pub revision: i32,
    pub idempotency_key: String,
    /// This revision's quantity (the delta for an adjustment).
    pub quantity: Decimal,
    /// This revision's amount (the delta for an adjustment).
    pub amount: Decimal,
    pub rate: Decimal,
    pub currency: Currency,
    pub total_quantity: Decimal,
    pub total_amount: Decimal,
    pub price_ref: String,
    pub trace: super::Trace,
    pub evidence: Evidence,
    pub sink: String,
    pub status: LineStatus,
    /// The billing system's id for what it received (usage id, correction id, file row).
    pub external_id: Option<String>,
    /// What the sink noted about the billing system just before sending (phase one), used to
    /// recognise this revision afterwards when the billing system has no idempotency key.
    pub push_marker: Option<String>,
    /// The last push error, kept for the operator; the line stays retriable.
    pub last_error: Option<String>,
    /// Who approved this revision and when; `None` while it is a draft or when no approval
    /// is required.
    pub approval: Option<Approval>,
    /// The run that created or last updated this revision.
    pub run_id: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub pushed_at: Option<DateTime<Utc>>,
}

impl LedgerLine {
    pub fn is_adjustment(&self) -> bool {
        self.revision > 1
    }
}

/// Who approved a revision (a person's name from `--by`, or `rule:<name>` for an approval
/// rule), when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub by: String,
    pub at: DateTime<Utc>,
    pub note: Option<String>,
}

/// The reason an adjustment revision carries in its trace when the period's data no longer
/// produce the line: the whole pushed line is credited.
pub const REVERSAL_REASON: &str = "no usage in the source any more";

/// A revision to write into the ledger (the reconcile stage's output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRevision {
    pub key: LineKey,
    pub revision: i32,
    /// This revision's quantity (the delta for an adjustment).
    pub quantity: Decimal,
    /// This revision's amount (the delta for an adjustment).
    pub amount: Decimal,
    pub rate: Decimal,
    pub currency: Currency,
    pub total_quantity: Decimal,
    pub total_amount: Decimal,
    pub price_ref: String,
    pub trace: super::Trace,
    pub evidence: Evidence,
    pub sink: String,
    /// `Draft` under `require_approval`, else `Approved`.
    pub status: LineStatus,
    /// Set when an approval rule approved it while planning (`rule:<name>`), or kept from the
    /// revision it updates; `None` for a draft or when no approval is required.
    pub approval: Option<Approval>,
}

/// One change to the ledger, as planned by reconcile and applied in one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LedgerChange {
    /// A new line (revision 1) or an adjustment (revision > 1) of a pushed line.
    Insert(NewRevision),
    /// A revision not yet sent gets new values in place (same id, key and revision).
    /// `back_to_review`: an approved revision whose figures changed goes back to draft, marked
    /// so that a reviewer sees why it waits again (cleared when it is approved again).
    Update {
        id: i64,
        values: NewRevision,
        back_to_review: bool,
    },
    /// A revision not yet sent is no longer needed (the line is back to what was pushed).
    Delete { id: i64 },
}
