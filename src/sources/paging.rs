//! Page-numbered lists whose peer announces its totals (billable users' `X-Pagination-*`
//! headers, CCC's `totalItems` and `totalPages`): what was read is checked against what was
//! announced, so that a skipped page, a short list or a peer that pages forever fails the source
//! instead of billing less than the peer holds.
//!
//! The cursor a source stages with each page carries the check's state: the next page number,
//! the entries received on the pages before it, and the totals the first page announced. It is
//! staged in the same transaction as the page, so a run that resumes at a checkpoint counts
//! exactly what the interrupted run read. A checkpoint written before the cursor carried these
//! (a bare page number) resumes without the count: the page numbers, the page count and the
//! stability of the totals from then on are still checked.
//!
//! Pure: no I/O.

use std::fmt;

/// The default of each source's `max_pages_per_scope`: above any real month (a million people
/// at 100 a page is 10,000 pages), low enough that a peer announcing one more page forever
/// fails the source within hours rather than never.
pub const DEFAULT_MAX_PAGES_PER_SCOPE: u32 = 100_000;

/// The announced totals changed while the list was read: its pages are not one snapshot, so
/// resuming at the checkpoint would mix two. The pipeline sets the scope's staged pages aside
/// (its extraction restarts) so that the next run reads the list again from its first page.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReadAgain(pub String);

/// Where a scope's extraction stands: the page to fetch next and what the pages before it held
/// and announced. Written into the checkpoint as `page;read=N;entries=N;pages=N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The page to fetch next, from 1.
    pub page: u32,
    /// Entries received on the pages before `page` (a duplicate counted twice, as the peer
    /// counts it); `None` when resumed from a bare page number.
    pub read: Option<u64>,
    /// The total entries announced by the pages before `page`.
    pub total_entries: Option<u64>,
    /// The total pages announced by the pages before `page`.
    pub total_pages: Option<u64>,
}

impl Progress {
    /// The first page of a scope, nothing read.
    pub const START: Progress = Progress {
        page: 1,
        read: Some(0),
        total_entries: None,
        total_pages: None,
    };

    /// The progress a cursor names (`None`: the first page). Cursors are what `fetch_page`
    /// returned, so anything else is a corrupted checkpoint rather than something to guess
    /// around.
    pub fn parse(cursor: Option<&str>) -> anyhow::Result<Progress> {
        let Some(text) = cursor else {
            return Ok(Progress::START);
        };
        let corrupt = || {
            anyhow::anyhow!(
                "cursor {text:?} is not a page number (1, 2, ...) with what was read before it \
                 (e.g. \"3;read=200;entries=250;pages=3\"); the checkpoint is corrupt"
            )
        };
        let mut parts = text.trim().split(';');
        let page = match parts.next().map(|p| p.trim().parse::<u32>()) {
            Some(Ok(page)) if page >= 1 => page,
            _ => return Err(corrupt()),
        };
        let mut progress = Progress {
            page,
            read: None,
            total_entries: None,
            total_pages: None,
        };
        for part in parts {
            let (key, value) = part.split_once('=').ok_or_else(corrupt)?;
            let value = value.trim().parse::<u64>().map_err(|_| corrupt())?;
            let slot = match key.trim() {
                "read" => &mut progress.read,
                "entries" => &mut progress.total_entries,
                "pages" => &mut progress.total_pages,
                _ => return Err(corrupt()),
            };
            if slot.replace(value).is_some() {
                return Err(corrupt());
            }
        }
        Ok(progress)
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.page)?;
        for (key, value) in [
            ("read", self.read),
            ("entries", self.total_entries),
            ("pages", self.total_pages),
        ] {
            if let Some(value) = value {
                write!(f, ";{key}={value}")?;
            }
        }
        Ok(())
    }
}

/// How a peer names its paging fields, and the setting that bounds it, for the messages.
#[derive(Debug, Clone, Copy)]
pub struct Vocabulary {
    /// E.g. `X-Pagination-Total-Entries` or `totalItems`.
    pub total_entries: &'static str,
    /// E.g. `X-Pagination-Total-Pages` or `totalPages`.
    pub total_pages: &'static str,
    /// E.g. `X-Pagination-Current-Page` or `currentPage`.
    pub current_page: &'static str,
    /// What announces the next page, e.g. `the Link header's rel="next"`.
    pub next: &'static str,
    /// The full key of the page limit, e.g. `sources.ccc.max_pages_per_scope`.
    pub max_pages_key: &'static str,
}

/// What one page answered about the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The request, redacted, for messages.
    pub url: String,
    /// The page the peer says it answered, when it says.
    pub current_page: Option<u64>,
    /// Entries on this page.
    pub entries: u64,
    pub total_entries: Option<u64>,
    pub total_pages: Option<u64>,
    /// The page the peer says comes next; `None` on the last page.
    pub next_page: Option<u64>,
}

/// Checks one page against what the pages before it held and announced, and returns the
/// progress after it (`None`: the list is complete, and everything announced was read).
///
/// An error leaves the checkpoint where it is: the same page is asked for again next run. A
/// [`ReadAgain`] error means the list changed while it was read.
pub fn advance(
    progress: Progress,
    answer: &Answer,
    words: &Vocabulary,
    max_pages: u32,
) -> anyhow::Result<Option<Progress>> {
    let page = progress.page;
    let url = &answer.url;
    let fail = |message: String| Err(anyhow::anyhow!("GET {url}: {message}"));

    if let Some(current) = answer.current_page
        && current != u64::from(page)
    {
        return fail(format!(
            "{} is {current} in the answer to page {page}: the peer answered another page than \
             the one asked for, so a page would be skipped or read twice; nothing of this page \
             was staged",
            words.current_page
        ));
    }
    // Page 1 fixes the totals for the whole list. A bare page number (a checkpoint of an
    // older tally) knows none yet: it adopts the first it sees.
    let legacy = progress.read.is_none();
    for (name, before, now) in [
        (
            words.total_entries,
            progress.total_entries,
            answer.total_entries,
        ),
        (words.total_pages, progress.total_pages, answer.total_pages),
    ] {
        let known = page > 1 && !(legacy && before.is_none());
        if known && before != now {
            let shown = |v: Option<u64>| v.map_or_else(|| "not sent".to_owned(), |v| v.to_string());
            return Err(ReadAgain(format!(
                "GET {url}: {name} changed while tally read the list: {} on the pages before \
                 page {page}, {} on page {page}. The list changed while it was read, so its pages \
                 are not one snapshot and billing from them could count someone twice or not at \
                 all; the pages read so far are set aside and the next run reads the list again \
                 from page 1",
                shown(before),
                shown(now)
            ))
            .into());
        }
    }
    let read = match progress.read {
        Some(before) => match before.checked_add(answer.entries) {
            Some(sum) => Some(sum),
            None => return fail("more entries than tally can count".to_owned()),
        },
        None => None,
    };
    if let (Some(read), Some(total)) = (read, answer.total_entries)
        && read > total
    {
        return fail(format!(
            "{read} entries read up to page {page}, but {} announced {total}: the peer lists \
             more than it says it has; nothing of this page was staged",
            words.total_entries
        ));
    }

    let Some(next) = answer.next_page else {
        if let Some(pages) = answer.total_pages
            && u64::from(page) != pages.max(1)
        {
            return fail(format!(
                "page {page} names no next page, but {} announced {pages} pages: the list \
                 ended early or ran past its end; nothing of this page was staged",
                words.total_pages
            ));
        }
        if let (Some(read), Some(total)) = (read, answer.total_entries)
            && read != total
        {
            return fail(format!(
                "the list ended on page {page} after {read} entries, but {} announced {total}: \
                 {} entries were not read, and billing without them would under-bill; nothing of \
                 this page was staged",
                words.total_entries,
                total - read
            ));
        }
        return Ok(None);
    };

    let expected = u64::from(page) + 1;
    if next != expected {
        return fail(if next <= u64::from(page) {
            format!(
                "{} points to page {next} from page {page}; refusing to fetch a page twice",
                words.next
            )
        } else {
            format!(
                "{} points to page {next} from page {page}: page {expected} would be skipped \
                 (and its entries not billed); nothing of this page was staged",
                words.next
            )
        });
    }
    if answer.entries == 0 {
        return fail(format!(
            "page {page} is empty but announces a next page ({}): a list's pages are full up to \
             the last, so an empty page before the end means the peer is not serving the list \
             it announced; nothing was staged",
            words.next
        ));
    }
    if let (Some(read), Some(total)) = (read, answer.total_entries)
        && read == total
    {
        return fail(format!(
            "all {total} entries {} announced were read by page {page}, yet {} names page \
             {next}; nothing of this page was staged",
            words.total_entries, words.next
        ));
    }
    if let Some(pages) = answer.total_pages
        && u64::from(page) >= pages
    {
        return fail(format!(
            "{} announces page {next} after page {page}, but {} announced {pages} pages; nothing \
             of this page was staged",
            words.next, words.total_pages
        ));
    }
    if page >= max_pages {
        return fail(format!(
            "page {page} announces a next page, but {key} is {max_pages}: tally stops after \
             {page} pages of one scope, so that a peer that never ends cannot keep it paging \
             forever. The pages before this one are kept at the checkpoint; if the list really \
             has more pages, raise {key} and run again",
            key = words.max_pages_key
        ));
    }
    let page =
        u32::try_from(next).map_err(|_| anyhow::anyhow!("GET {url}: page {next} is too large"))?;
    Ok(Some(Progress {
        page,
        read,
        total_entries: answer.total_entries,
        total_pages: answer.total_pages,
    }))
}

#[cfg(test)]
mod tests;
