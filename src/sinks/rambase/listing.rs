//! Reading a plan item's usages back in full. Exactly-once in RamBase rests on this read
//! (`prepare` notes what a target holds, `find` compares against it), so a short read is not a
//! smaller answer but a wrong one: a usage missed by `find` would be sent again. Every listing
//! asks for `$inlinecount=allpages` and checks what the pages held against the `paging.size`
//! RamBase announces.
//!
//! Pure: the pages are fetched by the caller.

use std::collections::HashSet;

/// The state of one listing, page by page.
#[derive(Debug)]
pub(super) struct Listing {
    /// What is listed, e.g. `plan 100001 item 1 period 100010`, for messages.
    what: String,
    /// Usages received so far.
    read: u64,
    pages: u64,
    /// The `paging.size` of the first page.
    size: Option<u64>,
    /// Page keys handed out so far: a peer that hands out one twice would page forever.
    seen_keys: HashSet<String>,
}

impl Listing {
    pub fn new(what: String) -> Self {
        Self {
            what,
            read: 0,
            pages: 0,
            size: None,
            seen_keys: HashSet::new(),
        }
    }

    /// Takes one page (fetched from `url`, holding `usages` usages, announcing `size` and
    /// `next_key`) and returns the key of the next page, or `None` once every announced usage
    /// was read. Any disagreement is an error naming both numbers and the URL.
    pub fn advance(
        &mut self,
        url: &str,
        usages: usize,
        size: Option<u64>,
        next_key: Option<&str>,
    ) -> Result<Option<String>, String> {
        let what = &self.what;
        self.pages += 1;
        self.read += usages as u64;
        let read = self.read;
        let page = self.pages;
        let Some(size) = size else {
            return Err(format!(
                "GET {url}: RamBase did not say how many usages {what} holds (paging.size, asked \
                 for with $inlinecount=allpages), so tally cannot tell whether it read them all; \
                 nothing is sent to {what} until it can"
            ));
        };
        match self.size {
            None => self.size = Some(size),
            Some(first) if first != size => {
                return Err(format!(
                    "GET {url}: RamBase said {what} holds {first} usages on the first page and \
                     {size} on page {page}: usages were added or removed while tally read them. \
                     tally expects to be the only writer on its plan items; check who else \
                     writes there, then run again"
                ));
            }
            Some(_) => {}
        }
        if read > size {
            return Err(format!(
                "GET {url}: {read} usages read from {page} page(s) of {what}, but RamBase said it \
                 holds {size}; the listing cannot be trusted, run again"
            ));
        }
        match next_key.filter(|k| !k.is_empty()) {
            None if read == size => Ok(None),
            None => Err(format!(
                "GET {url}: the listing of {what} ended after {read} usages on {page} page(s), \
                 but RamBase said it holds {size}; {} usages were not read, and tally cannot \
                 tell what it sent there without them — run again, and if it persists check \
                 the plan item's usages in RamBase by hand",
                size - read
            )),
            Some(next) => {
                if usages == 0 {
                    return Err(format!(
                        "GET {url}: page {page} of {what} is empty but names a next page; \
                         refusing to page through a listing that holds nothing"
                    ));
                }
                if read == size {
                    return Err(format!(
                        "GET {url}: all {size} usages of {what} were read, yet RamBase names a \
                         next page; the listing cannot be trusted, run again"
                    ));
                }
                // A peer that hands out the same key twice would page forever.
                if !self.seen_keys.insert(next.to_owned()) {
                    return Err(format!(
                        "RamBase returned page key {next:?} twice while listing the usages of \
                         {what}; stopping instead of looping"
                    ));
                }
                Ok(Some(next.to_owned()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing() -> Listing {
        Listing::new("plan 100001 item 1 period 100010".into())
    }

    #[test]
    fn a_full_listing_ends_when_every_usage_is_read() {
        let mut l = listing();
        assert_eq!(
            l.advance("u1", 80, Some(100), Some("k2")),
            Ok(Some("k2".into()))
        );
        assert_eq!(l.advance("u2", 20, Some(100), None), Ok(None));
        assert_eq!(listing().advance("u", 0, Some(0), None), Ok(None));
        assert_eq!(listing().advance("u", 3, Some(3), Some("")), Ok(None));
    }

    #[test]
    fn a_short_listing_fails_with_both_numbers_and_the_url() {
        let mut l = listing();
        l.advance("u1", 80, Some(170), Some("k2")).unwrap();
        let error = l
            .advance("https://x/usages?$pageKey=k2", 10, Some(170), None)
            .unwrap_err();
        assert!(error.contains("ended after 90 usages"), "{error}");
        assert!(error.contains("holds 170"), "{error}");
        assert!(error.contains("80 usages were not read"), "{error}");
        assert!(error.contains("https://x/usages?$pageKey=k2"), "{error}");
    }

    #[test]
    fn a_size_that_changes_or_is_passed_or_missing_fails() {
        let mut l = listing();
        l.advance("u1", 80, Some(100), Some("k2")).unwrap();
        let error = l.advance("u2", 20, Some(101), None).unwrap_err();
        assert!(
            error.contains("100 usages on the first page and 101 on page 2"),
            "{error}"
        );

        let error = listing().advance("u", 5, Some(3), None).unwrap_err();
        assert!(
            error.contains("5 usages read") && error.contains("holds 3"),
            "{error}"
        );

        let error = listing().advance("u", 5, None, None).unwrap_err();
        assert!(error.contains("paging.size"), "{error}");
    }

    #[test]
    fn an_empty_page_with_a_next_key_or_a_key_after_the_end_or_twice_fails() {
        let error = listing().advance("u", 0, Some(10), Some("k")).unwrap_err();
        assert!(error.contains("empty but names a next page"), "{error}");
        let error = listing().advance("u", 10, Some(10), Some("k")).unwrap_err();
        assert!(error.contains("all 10 usages"), "{error}");
        let mut l = listing();
        l.advance("u1", 1, Some(10), Some("k")).unwrap();
        let error = l.advance("u2", 1, Some(10), Some("k")).unwrap_err();
        assert!(error.contains("twice"), "{error}");
    }
}
