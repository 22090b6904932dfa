//! Sources: the systems usage comes from. A vendor's whole connector lives in its own folder;
//! this module only lists them behind one enum.

pub mod billable_users;
pub mod ccc;
pub mod genesys;
pub mod paging;

use crate::domain::{LicenseType, Period, SourceName, StagedRecord};
use crate::mapping::KeyMatch;

/// One page of a source, staged in one transaction with the cursor of the page after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub records: Vec<StagedRecord>,
    /// Where the next page starts (e.g. its page number); `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A configured source.
#[derive(Debug)]
pub enum Source {
    BillableUsers(billable_users::BillableUsers),
    Ccc(ccc::Ccc),
    Genesys(genesys::Genesys),
}

impl Source {
    /// The configured name (the key under `[sources]`).
    pub fn name(&self) -> &SourceName {
        match self {
            Source::BillableUsers(s) => s.name(),
            Source::Ccc(s) => s.name(),
            Source::Genesys(s) => s.name(),
        }
    }

    /// How this source's customer keys are compared with the customer map: organization
    /// names exactly, GUIDs and UUIDs case-insensitively without dashes or braces.
    pub fn key_match(&self) -> KeyMatch {
        match self {
            Source::BillableUsers(_) => KeyMatch::Exact,
            Source::Ccc(_) | Source::Genesys(_) => KeyMatch::Guid,
        }
    }

    /// The units of extraction (each with its own checkpoint): one account, one org, one service.
    pub fn scopes(&self) -> Vec<String> {
        match self {
            Source::BillableUsers(s) => s.scopes(),
            Source::Ccc(s) => s.scopes(),
            Source::Genesys(s) => s.scopes(),
        }
    }

    /// Fetches the page at `cursor` (`None`: the first page) of `scope` for `period`.
    pub async fn fetch_page(
        &self,
        scope: &str,
        period: Period,
        cursor: Option<&str>,
    ) -> anyhow::Result<Page> {
        match self {
            Source::BillableUsers(s) => s.fetch_page(scope, period, cursor).await,
            Source::Ccc(s) => s.fetch_page(scope, period, cursor).await,
            Source::Genesys(s) => s.fetch_page(scope, period, cursor).await,
        }
    }

    /// The license type a staged record's `item` is billed as, by this source's mapping rules;
    /// `None` makes the record an `unmapped_license` exception.
    pub fn license_type(&self, item: &str) -> Option<LicenseType> {
        match self {
            Source::BillableUsers(s) => s.license_type(item),
            Source::Ccc(s) => s.license_type(item),
            Source::Genesys(s) => s.license_type(item),
        }
    }
}
