//! Knobs that make the simulated list misbehave the way a broken or hijacked peer would: a
//! `Link` that skips a page, `X-Pagination-*` totals that lie or change between pages, and a
//! redirect to another address. All are off by default; none makes the simulator accept
//! anything the real API refuses.

use super::*;

/// The paging faults to inject; `None` everywhere is the honest API.
#[derive(Debug, Clone, Default)]
pub(super) struct PagingFaults {
    /// The `rel="next"` link of the page before this one points past it.
    skip_page: Option<usize>,
    /// From this page on, `X-Pagination-Total-Entries` says this instead of the truth.
    total_entries: Option<(usize, u64)>,
    /// From this page on, `X-Pagination-Total-Pages` says this, and the `Link`s follow it.
    total_pages: Option<(usize, usize)>,
    /// From this page on, every list request answers `301` to the same path and query on this
    /// base (e.g. another simulator's `http://127.0.0.1:PORT`).
    redirect: Option<(usize, String)>,
}

impl BillableUsersSim {
    /// The `Link` header's `rel="next"` on page `page - 1` points to page `page + 1`, so that a
    /// client following links never asks for `page` (the headers and `rel="last"` stay true).
    pub fn skip_page(&self, page: usize) {
        self.state().paging.skip_page = Some(page);
    }

    /// From page `from_page` on, `X-Pagination-Total-Entries` announces `total` whatever the
    /// month holds: higher or lower than the truth, or a change between pages.
    pub fn announce_total_entries(&self, from_page: usize, total: u64) {
        self.state().paging.total_entries = Some((from_page, total));
    }

    /// From page `from_page` on, `X-Pagination-Total-Pages` announces `pages`, and the `Link`
    /// header follows it: announcing more pages than there are makes every page past the end
    /// an empty one that still has a `rel="next"`.
    pub fn announce_total_pages(&self, from_page: usize, pages: usize) {
        self.state().paging.total_pages = Some((from_page, pages));
    }

    /// From page `from_page` on, list requests answer `301 Moved Permanently` with a `Location`
    /// on `base` (same path and query), as a hijacked or moved API would.
    pub fn redirect_to(&self, from_page: usize, base: &str) {
        self.state().paging.redirect = Some((from_page, base.trim_end_matches('/').to_owned()));
    }
}

impl BillableUsersSim {
    /// Turns every paging knob off again: the honest API.
    pub fn honest_paging(&self) {
        self.state().paging = PagingFaults::default();
    }
}

impl PagingFaults {
    /// The `301` that replaces the answer to `page`, if one is due.
    pub(super) fn redirect(&self, page: usize, uri: &Uri) -> Option<Response> {
        let (from, base) = self.redirect.as_ref()?;
        if page < *from {
            return None;
        }
        let target = format!(
            "{base}{}",
            uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
        );
        let mut response = message(StatusCode::MOVED_PERMANENTLY, "Moved Permanently");
        if let Ok(value) = HeaderValue::from_str(&target) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        Some(response)
    }

    /// The total entries announced on `page`.
    pub(super) fn total_entries(&self, page: usize, real: usize) -> u64 {
        match self.total_entries {
            Some((from, total)) if page >= from => total,
            _ => real as u64,
        }
    }

    /// The total pages announced on `page`.
    pub(super) fn total_pages(&self, page: usize, real: usize) -> usize {
        match self.total_pages {
            Some((from, pages)) if page >= from => pages,
            _ => real,
        }
    }

    /// The page the `rel="next"` of `page` names, when the list goes on.
    pub(super) fn next_page(&self, page: usize, total_pages: usize) -> Option<usize> {
        let next = page + 1;
        (page < total_pages).then(|| match self.skip_page {
            Some(skipped) if skipped == next => next + 1,
            _ => next,
        })
    }
}
