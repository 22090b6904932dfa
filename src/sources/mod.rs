//! Sources: the systems usage comes from. A vendor's whole connector lives in its own folder;
//! this module only lists them behind one enum.

pub mod billable_users;
pub mod ccc;

use crate::domain::{LicenseType, Period, SourceName, StagedRecord};

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
}

impl Source {
    /// The configured name (the key under `[sources]`).
    pub fn name(&self) -> &SourceName {
        match self {
            Source::BillableUsers(s) => s.name(),
        }
    }

    /// The units of extraction (each with its own checkpoint): one account, one org, one service.
    pub fn scopes(&self) -> Vec<String> {
        match self {
            Source::BillableUsers(s) => s.scopes(),
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
        }
    }

    /// The license type a staged record's `item` is billed as, by this source's mapping rules;
    /// `None` makes the record an `unmapped_license` exception.
    pub fn license_type(&self, item: &str) -> Option<LicenseType> {
        match self {
            Source::BillableUsers(s) => s.license_type(item),
        }
    }
}
