use super::*;

const WORDS: Vocabulary = Vocabulary {
    total_entries: "X-Total-Entries",
    total_pages: "X-Total-Pages",
    current_page: "X-Current-Page",
    next: "rel=next",
    max_pages_key: "sources.x.max_pages_per_scope",
};

/// Page `page` of a list of `total` entries in pages of `per_page`, answered honestly.
fn honest(page: u64, per_page: u64, total: u64) -> Answer {
    let pages = total.div_ceil(per_page);
    let start = (page - 1) * per_page;
    Answer {
        url: format!("https://api.example/list?page={page}"),
        current_page: Some(page),
        entries: total.saturating_sub(start).min(per_page),
        total_entries: Some(total),
        total_pages: Some(pages),
        next_page: (page < pages).then_some(page + 1),
    }
}

/// Reads every page from `progress` on, as the pipeline would, with `answer` for each page.
fn read_all(
    mut progress: Progress,
    answer: impl Fn(u64) -> Answer,
    max_pages: u32,
) -> anyhow::Result<u32> {
    let mut fetched = 0;
    loop {
        fetched += 1;
        let next = advance(
            progress,
            &answer(u64::from(progress.page)),
            &WORDS,
            max_pages,
        )?;
        // The cursor goes through the checkpoint as text.
        match next {
            Some(next) => progress = Progress::parse(Some(&next.to_string()))?,
            None => return Ok(fetched),
        }
    }
}

fn message(result: anyhow::Result<impl std::fmt::Debug>) -> String {
    format!("{:#}", result.unwrap_err())
}

#[test]
fn an_honest_list_is_read_to_its_end() {
    assert_eq!(
        read_all(Progress::START, |p| honest(p, 10, 47), 100).unwrap(),
        5
    );
    assert_eq!(
        read_all(Progress::START, |p| honest(p, 10, 50), 100).unwrap(),
        5
    );
}

#[test]
fn an_empty_list_is_one_empty_page_of_zero_pages() {
    let empty = Answer {
        url: "u".into(),
        current_page: Some(1),
        entries: 0,
        total_entries: Some(0),
        total_pages: Some(0),
        next_page: None,
    };
    assert_eq!(advance(Progress::START, &empty, &WORDS, 10).unwrap(), None);
}

#[test]
fn a_cursor_carries_the_count_and_the_totals_through_the_checkpoint() {
    let after_one = advance(Progress::START, &honest(1, 10, 47), &WORDS, 100)
        .unwrap()
        .unwrap();
    assert_eq!(after_one.to_string(), "2;read=10;entries=47;pages=5");
    assert_eq!(
        Progress::parse(Some("2;read=10;entries=47;pages=5")).unwrap(),
        after_one
    );
    assert_eq!(Progress::parse(None).unwrap(), Progress::START);
}

#[test]
fn a_corrupt_cursor_is_refused() {
    for bad in [
        "0",
        "-1",
        "abc",
        "",
        "2;read",
        "2;read=x",
        "2;size=3",
        "2;read=1;read=2",
    ] {
        let error = message(Progress::parse(Some(bad)));
        assert!(error.contains("checkpoint is corrupt"), "{bad}: {error}");
    }
}

#[test]
fn a_resumed_extraction_counts_what_the_interrupted_one_read() {
    // Pages 1 and 2 were staged by a run that crashed; the next run resumes at page 3.
    let first = advance(Progress::START, &honest(1, 10, 47), &WORDS, 100)
        .unwrap()
        .unwrap();
    let second = advance(first, &honest(2, 10, 47), &WORDS, 100)
        .unwrap()
        .unwrap();
    let checkpoint = second.to_string();
    let resumed = Progress::parse(Some(&checkpoint)).unwrap();
    assert_eq!(resumed.read, Some(20));
    assert_eq!(read_all(resumed, |p| honest(p, 10, 47), 100).unwrap(), 3);
    // Had the last page held 3 people instead of 7, the count over all five pages (the two
    // staged before the crash included) would not add up.
    let short = |p: u64| Answer {
        entries: if p == 5 { 3 } else { honest(p, 10, 47).entries },
        ..honest(p, 10, 47)
    };
    let error = message(read_all(resumed, short, 100));
    assert!(error.contains("after 43 entries"), "{error}");
    assert!(error.contains("announced 47"), "{error}");
}

#[test]
fn a_bare_page_number_from_an_older_checkpoint_resumes_with_the_checks_that_remain() {
    let legacy = Progress::parse(Some("3")).unwrap();
    assert_eq!(legacy.read, None);
    assert_eq!(read_all(legacy, |p| honest(p, 10, 47), 100).unwrap(), 3);
    // The count cannot be checked, but the last page must still be the announced last one.
    let early_end = |p: u64| Answer {
        next_page: None,
        ..honest(p, 10, 47)
    };
    let error = message(read_all(legacy, early_end, 100));
    assert!(error.contains("announced 5 pages"), "{error}");
}

#[test]
fn a_next_page_that_skips_fails_naming_both_pages() {
    // The case: page 1 points to page 3, and 37 of 47 people would be billed.
    let skip = |p: u64| Answer {
        next_page: if p == 1 {
            Some(3)
        } else {
            honest(p, 10, 47).next_page
        },
        ..honest(p, 10, 47)
    };
    let error = message(read_all(Progress::START, skip, 100));
    assert!(error.contains("points to page 3 from page 1"), "{error}");
    assert!(error.contains("page 2 would be skipped"), "{error}");
    assert!(
        error.starts_with("GET https://api.example/list?page=1"),
        "{error}"
    );
}

#[test]
fn a_next_page_that_does_not_move_forward_fails() {
    let back = Answer {
        next_page: Some(2),
        ..honest(2, 10, 47)
    };
    let second = Progress {
        page: 2,
        read: Some(10),
        total_entries: Some(47),
        total_pages: Some(5),
    };
    let error = message(advance(second, &back, &WORDS, 100));
    assert!(error.contains("refusing to fetch a page twice"), "{error}");
}

#[test]
fn a_page_that_is_not_the_one_asked_for_fails() {
    let wrong = Answer {
        current_page: Some(3),
        ..honest(3, 10, 47)
    };
    let second = advance(Progress::START, &honest(1, 10, 47), &WORDS, 100)
        .unwrap()
        .unwrap();
    let error = message(advance(second, &wrong, &WORDS, 100));
    assert!(
        error.contains("X-Current-Page is 3 in the answer to page 2"),
        "{error}"
    );
}

#[test]
fn a_total_higher_than_what_was_read_fails_with_both_numbers() {
    // The case: 500 announced, one page of 10 without a next link.
    let liar = Answer {
        url: "https://api.example/list?page=1".into(),
        current_page: None,
        entries: 10,
        total_entries: Some(500),
        total_pages: None,
        next_page: None,
    };
    let error = message(advance(Progress::START, &liar, &WORDS, 100));
    assert!(error.contains("after 10 entries"), "{error}");
    assert!(error.contains("X-Total-Entries announced 500"), "{error}");
    assert!(error.contains("490 entries were not read"), "{error}");
    assert!(error.contains("https://api.example/list?page=1"), "{error}");
}

#[test]
fn a_total_lower_than_what_was_read_fails_as_soon_as_it_is_passed() {
    let lower = |p: u64| Answer {
        total_entries: Some(15),
        ..honest(p, 10, 47)
    };
    let error = message(read_all(Progress::START, lower, 100));
    assert!(error.contains("20 entries read up to page 2"), "{error}");
    assert!(error.contains("announced 15"), "{error}");
}

#[test]
fn a_page_count_that_disagrees_with_the_next_link_fails() {
    let fewer_pages = |p: u64| Answer {
        total_pages: Some(3),
        ..honest(p, 10, 47)
    };
    let error = message(read_all(Progress::START, fewer_pages, 100));
    assert!(error.contains("announces page 4 after page 3"), "{error}");
    assert!(error.contains("announced 3 pages"), "{error}");
    let more_pages = |p: u64| Answer {
        total_pages: Some(9),
        total_entries: None,
        ..honest(p, 10, 47)
    };
    let error = message(read_all(Progress::START, more_pages, 100));
    assert!(error.contains("page 5 names no next page"), "{error}");
    assert!(error.contains("announced 9 pages"), "{error}");
}

#[test]
fn totals_that_change_between_pages_ask_for_a_fresh_read() {
    let growing = |p: u64| Answer {
        total_entries: Some(if p >= 3 { 48 } else { 47 }),
        ..honest(p, 10, 47)
    };
    let error = read_all(Progress::START, growing, 100).unwrap_err();
    assert!(error.downcast_ref::<ReadAgain>().is_some(), "{error:#}");
    let text = format!("{error:#}");
    assert!(
        text.contains("47 on the pages before page 3, 48 on page 3"),
        "{text}"
    );
    assert!(text.contains("reads the list again from page 1"), "{text}");

    let pages_vanish = |p: u64| Answer {
        total_pages: if p == 2 { None } else { Some(5) },
        ..honest(p, 10, 47)
    };
    let error = read_all(Progress::START, pages_vanish, 100).unwrap_err();
    assert!(error.downcast_ref::<ReadAgain>().is_some(), "{error:#}");
    assert!(
        format!("{error:#}").contains("not sent on page 2"),
        "{error:#}"
    );
}

#[test]
fn an_empty_page_that_announces_a_next_page_fails() {
    let empty = |p: u64| Answer {
        entries: 0,
        total_entries: Some(0),
        total_pages: Some(10_000),
        next_page: Some(p + 1),
        ..honest(p, 10, 47)
    };
    let error = message(read_all(Progress::START, empty, 100_000));
    assert!(
        error.contains("page 1 is empty but announces a next page"),
        "{error}"
    );
}

#[test]
fn the_page_limit_fails_the_scope_naming_the_key_to_raise() {
    // Ten pages of 10, with a limit of 4.
    let error = message(read_all(Progress::START, |p| honest(p, 10, 100), 4));
    assert!(error.contains("page 4 announces a next page"), "{error}");
    assert!(
        error.contains("sources.x.max_pages_per_scope is 4"),
        "{error}"
    );
    assert!(error.contains("after 4 pages"), "{error}");
    assert!(error.contains("list?page=4"), "{error}");
    // Exactly at the limit is fine.
    assert_eq!(
        read_all(Progress::START, |p| honest(p, 10, 40), 4).unwrap(),
        4
    );
}

#[test]
fn a_next_page_after_every_announced_entry_was_read_fails() {
    let more = |p: u64| Answer {
        total_pages: Some(9),
        next_page: Some(p + 1),
        ..honest(p, 10, 47)
    };
    let error = message(read_all(Progress::START, more, 100));
    assert!(
        error.contains("all 47 entries X-Total-Entries announced were read by page 5"),
        "{error}"
    );
}
