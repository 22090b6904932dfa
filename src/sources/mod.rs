//! Sources: the systems usage comes from. A vendor's whole connector lives in its own folder;
//! this module only lists them behind one enum.

pub mod billable_users;
pub mod ccc;
pub mod genesys;
pub mod paging;

use crate::domain::{LicenseType, Period, SourceName, StagedRecord};
use crate::mapping::KeyMatch;
use crate::problem::Problem;

/// Scopes of one source extracted side by side unless its `scopes_at_once` says otherwise.
/// Each scope is its own unit (own checkpoint, own pages); a few side by side hide each other's
/// round trips without crowding one peer.
pub const DEFAULT_SCOPES_AT_ONCE: u32 = 4;

/// The most `scopes_at_once` takes: every scope in flight holds its pages queued for staging.
pub const MAX_SCOPES_AT_ONCE: u32 = 32;

/// The serde default of a source's `scopes_at_once`.
pub(crate) fn default_scopes_at_once() -> u32 {
    DEFAULT_SCOPES_AT_ONCE
}

/// The problem with a source's `scopes_at_once` (`key` is its full key), if any.
pub(crate) fn check_scopes_at_once(value: u32, key: String) -> Option<Problem> {
    (!(1..=MAX_SCOPES_AT_ONCE).contains(&value)).then(|| {
        Problem::new(
            key,
            format!(
                "is {value}, must be between 1 (one scope at a time) and {MAX_SCOPES_AT_ONCE} \
                 (the default is {DEFAULT_SCOPES_AT_ONCE})"
            ),
        )
    })
}

/// One page of a source, staged in one transaction with the cursor of the page after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub records: Vec<StagedRecord>,
    /// Where the next page starts (e.g. its page number); `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A page requested by number ([`Source::fetch_numbered`]), not yet checked in order.
#[derive(Debug)]
pub enum Numbered {
    BillableUsers(billable_users::Numbered),
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

    /// Requests, retries and 429s its HTTP client sent so far: the run subtracts the figures
    /// before a source's extraction from those after it.
    pub fn http_stats(&self) -> crate::http::StatsSnapshot {
        match self {
            Source::BillableUsers(s) => s.http_stats(),
            Source::Ccc(s) => s.http_stats(),
            Source::Genesys(s) => s.http_stats(),
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

    /// How many of its scopes are extracted side by side (`scopes_at_once`; billable users has
    /// one scope, its account).
    pub fn scopes_at_once(&self) -> usize {
        let at_once = match self {
            Source::BillableUsers(_) => 1,
            Source::Ccc(s) => s.scopes_at_once(),
            Source::Genesys(s) => s.scopes_at_once(),
        };
        usize::try_from(at_once).unwrap_or(1).max(1)
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

    /// The pages after `cursor`'s that may be requested before `cursor`'s page is checked, and
    /// how many at once: where the peer announced its total pages and pages are addressed by
    /// number (billable users). `None`: each page's cursor comes from the page before it.
    pub fn pages_ahead(&self, cursor: &str) -> Option<(std::ops::RangeInclusive<u32>, usize)> {
        match self {
            Source::BillableUsers(s) if s.concurrency() > 1 => {
                s.pages_ahead(cursor).map(|pages| (pages, s.concurrency()))
            }
            _ => None,
        }
    }

    /// Requests page `page` of `scope` (one of [`Self::pages_ahead`]), to be checked in order
    /// with [`Self::accept`].
    pub async fn fetch_numbered(
        &self,
        scope: &str,
        period: Period,
        page: u32,
    ) -> anyhow::Result<Numbered> {
        match self {
            Source::BillableUsers(s) => s
                .fetch_numbered(scope, period, page)
                .await
                .map(Numbered::BillableUsers),
            Source::Ccc(_) | Source::Genesys(_) => Err(anyhow::anyhow!(
                "{} pages are not addressed by number; this is a defect of tally",
                self.name()
            )),
        }
    }

    /// Checks a page fetched by number against the progress up to it, `cursor`, and names the
    /// page after it, as [`Self::fetch_page`] would have.
    pub fn accept(&self, cursor: Option<&str>, fetched: Numbered) -> anyhow::Result<Page> {
        match (self, fetched) {
            (Source::BillableUsers(s), Numbered::BillableUsers(fetched)) => {
                s.accept(cursor, fetched)
            }
            _ => Err(anyhow::anyhow!(
                "{} was given another source's page; this is a defect of tally",
                self.name()
            )),
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
