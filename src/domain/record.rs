//! What extraction stages, and what mapping reads back.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// One record of a source, as staged with its page's checkpoint.
///
/// The connector decides the keys: `record_key` is unique within (source, scope, period), so a
/// record listed twice (even on two pages) is staged, and counted, once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagedRecord {
    /// Unique within (source, scope, period), e.g. `"552@Microsoft Corporation"`.
    pub record_key: String,
    /// The source's key for the customer: an organization name, a service GUID, an org id.
    pub customer_key: String,
    /// The source's name for what was used: `billable_user`, `Professional`, a Genesys usage
    /// name. Mapping rules turn it into a license type.
    pub item: String,
    /// How much of `item` this record stands for (1 for a billable person).
    ///
    /// What the source sent beyond these four fields is not kept: the evidence of a record is
    /// the page it was staged from (its source, scope, period and page number).
    pub quantity: Decimal,
}

/// A staged record as totals read it back: its key, customer, item and quantity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagedQuantity {
    pub record_key: String,
    pub customer_key: String,
    pub item: String,
    pub quantity: Decimal,
}

/// The staged records of one source and period summed per (customer key, item).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageQuantity {
    pub customer_key: String,
    pub item: String,
    pub quantity: Decimal,
    /// How many staged records were summed.
    pub record_count: u64,
    /// Order-independent fingerprint of those records (hex), see [`super::Evidence`].
    pub hash: String,
    /// The smallest few record keys of the group, for the line's evidence sample.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample: Vec<String>,
    /// Why these records cannot be billed as they are: a record's quantity above
    /// `billing.max_quantity_per_record`, or a sum that does not fit. Such a group becomes an
    /// `out_of_range` exception naming the record, never a line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_of_range: Option<String>,
}
