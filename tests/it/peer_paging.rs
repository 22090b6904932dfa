//! Peers that page wrongly, lie about their totals, never end, redirect elsewhere or send
//! numbers tally cannot bill: each fails its source (or, for RamBase, the read-back) with a
//! message giving both numbers and the URL, the run exits 1, nothing of the failed source is
//! planned or pushed, and its checkpoint says where the next run starts. Runs of the demo's
//! configuration against the simulators' knobs and a real Postgres.

use crate::common;

use std::collections::BTreeMap;
use tally::config::Settings;
use tally::domain::{Period, RunStatus, SourceName, Trigger};
use tally::pipeline::{self, App, RunOptions, RunReport};
use tally::sim::billable_users::BillableUsersSim;
use tally::sim::genesys::GenesysUsage;
use tally::sim::{self, RunningSims};
use tally::store::{Checkpoint, DatabaseTarget};

/// The demo's billable people (51, one of them listed twice: 52 entries, 10 a page: 6 pages)
/// and what they are billed in RamBase.
const PEOPLE: u64 = 51;
const RAMBASE_QUANTITIES: [(u64, i64); 4] = [(100001, 12), (100002, 7), (100003, 25), (100004, 3)];
/// The demo's first CCC service: 30 users, 10 a page.
const CCC_SERVICE: &str = "6f9619ff8b86d011b42d00c04fc964ff";

fn period() -> Period {
    sim::DEMO_PERIOD.parse().unwrap()
}

async fn sims() -> RunningSims {
    let settings = sim::demo_settings(std::path::Path::new("data")).unwrap();
    sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap()
}

async fn database() -> String {
    let DatabaseTarget::Postgres(url) = common::fresh_postgres().await else {
        unreachable!()
    };
    url
}

/// The demo's configuration on database `url`, with quick retries.
async fn app_on(sims: &RunningSims, url: &str, tweak: impl FnOnce(&mut Settings)) -> App {
    let mut settings = sim::demo_settings(std::path::Path::new("data")).unwrap();
    settings.database.url = Some(url.to_owned());
    sim::point_at(&mut settings, sims);
    if let Some(s) = settings.sources.billable_users.as_mut() {
        s.http.backoff_ms = 5;
        s.http.max_retries = 1;
    }
    if let Some(s) = settings.sources.ccc.as_mut() {
        s.http.backoff_ms = 5;
        s.http.max_retries = 1;
    }
    if let Some(s) = settings.sources.genesys.as_mut() {
        s.http.backoff_ms = 5;
        s.http.max_retries = 1;
    }
    if let Some(s) = settings.sinks.rambase.as_mut() {
        s.http.backoff_ms = 5;
    }
    if let Some(s) = settings.sinks.activeplatform.as_mut() {
        s.http.backoff_ms = 5;
    }
    tweak(&mut settings);
    App::build(settings).await.unwrap()
}

async fn run(app: &App, source: &str) -> RunReport {
    pipeline::run(
        app,
        &RunOptions {
            period: period(),
            source: Some(source.to_owned()),
            dry_run: false,
            trigger: Trigger::Manual,
            customer: None,
            requested_by: None,
        },
    )
    .await
    .unwrap()
}

/// The message of `source`'s failure, after checking that the run failed (exit 1) because of
/// it alone and planned nothing.
fn failure<'a>(report: &'a RunReport, source: &str) -> &'a str {
    let summary = &report.summary;
    assert_eq!(summary.status, RunStatus::Failed, "{summary:?}");
    assert_eq!(summary.status.exit_code(), 1);
    let failed: Vec<&str> = summary
        .failed_sources
        .iter()
        .map(|f| f.source.as_str())
        .collect();
    assert_eq!(failed, [source], "{summary:?}");
    let planned = summary.lines_created + summary.lines_adjusted + summary.lines_unchanged;
    assert_eq!(planned, 0, "nothing planned: {summary:?}");
    assert_eq!(summary.lines_pushed, 0);
    &summary.failed_sources[0].error
}

async fn checkpoint(app: &App, source: &str, scope: &str) -> Checkpoint {
    app.store
        .checkpoint(&SourceName::new(source), scope, period())
        .await
        .unwrap()
        .expect("the extraction started")
}

/// The ledger's lines of `source`: (billing account, license type) → quantity.
async fn lines_of(app: &App, source: &str) -> BTreeMap<(String, String), String> {
    app.store
        .ledger_lines(period(), None)
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.key.source.as_str() == source)
        .map(|l| {
            (
                (
                    l.key.billing_account.to_string(),
                    l.key.license_type.to_string(),
                ),
                l.quantity.normalize().to_string(),
            )
        })
        .collect()
}

fn rambase_quantities(sims: &RunningSims) -> Vec<(u64, i64)> {
    let mut all: Vec<(u64, i64)> = sims
        .rambase
        .usages()
        .iter()
        .map(|u| (u.plan_id, u.quantity))
        .collect();
    all.sort();
    all
}

/// How often the billable-users simulator was asked for `page`.
fn requests_for_page(sim: &BillableUsersSim, page: u32) -> usize {
    let wanted = format!("page={page}");
    sim.received()
        .iter()
        .filter(|r| r.query.split('&').any(|pair| pair == wanted))
        .count()
}

/// A good run of the billable users after a failed one: every person billed once.
async fn assert_billed_once(app: &App, sims: &RunningSims) {
    let report = run(app, "billable_users").await;
    assert!(
        report.summary.failed_sources.is_empty(),
        "{:?}",
        report.summary
    );
    assert_eq!(report.summary.records_read, PEOPLE);
    assert_eq!(rambase_quantities(sims), RAMBASE_QUANTITIES);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_next_link_that_skips_a_page_fails_the_source_and_the_rerun_resumes_at_the_checkpoint() {
    let sims = sims().await;
    let app = app_on(&sims, &database().await, |_| {}).await;
    // Page 2's `rel="next"` points to page 4: without the check, page 3's people went unbilled.
    sims.billable_users.skip_page(3);

    let report = run(&app, "billable_users").await;
    let error = failure(&report, "billable_users");
    assert!(
        error.contains("points to page 4 from page 2: page 3 would be skipped"),
        "{error}"
    );
    assert!(
        error.contains("page=2&per_page=10"),
        "names the URL: {error}"
    );
    assert!(lines_of(&app, "billable_users").await.is_empty());
    assert!(sims.rambase.usages().is_empty());
    let kept = checkpoint(&app, "billable_users", sim::DEMO_ACCOUNT).await;
    assert!(!kept.complete);
    assert_eq!(kept.pages, 1);
    assert_eq!(kept.cursor.as_deref(), Some("2;read=10;entries=52;pages=6"));

    // The peer recovers: the re-run resumes at page 2 (page 1 is not asked for again) and the
    // count over both runs adds up.
    sims.billable_users.honest_paging();
    assert_billed_once(&app, &sims).await;
    assert_eq!(requests_for_page(&sims.billable_users, 1), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn totals_higher_or_lower_than_the_list_fail_the_source_with_both_numbers() {
    for (announced, expected, staged_pages) in [
        // The case: far more announced than served.
        (
            500,
            "the list ended on page 6 after 52 entries, but X-Pagination-Total-Entries announced 500: 448 entries were not read",
            5,
        ),
        (
            45,
            "50 entries read up to page 5, but X-Pagination-Total-Entries announced 45",
            4,
        ),
    ] {
        let sims = sims().await;
        let app = app_on(&sims, &database().await, |_| {}).await;
        sims.billable_users.announce_total_entries(1, announced);

        let report = run(&app, "billable_users").await;
        let error = failure(&report, "billable_users");
        assert!(error.contains(expected), "{announced}: {error}");
        assert!(
            error.contains(&format!("page={}&per_page=10", staged_pages + 1)),
            "names the URL: {error}"
        );
        assert!(lines_of(&app, "billable_users").await.is_empty());
        assert!(sims.rambase.usages().is_empty());
        let kept = checkpoint(&app, "billable_users", sim::DEMO_ACCOUNT).await;
        assert!(!kept.complete);
        assert_eq!(kept.pages, staged_pages);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_crash_the_count_covers_the_pages_staged_before_it() {
    let sims = sims().await;
    let url = database().await;
    sims.billable_users.announce_total_entries(1, 500);
    let mut crashing = app_on(&sims, &url, |_| {}).await;
    crashing.faults.crash_after_pages = Some(3);
    let crash = pipeline::run(
        &crashing,
        &RunOptions {
            period: period(),
            source: Some("billable_users".into()),
            dry_run: false,
            trigger: Trigger::Manual,
            customer: None,
            requested_by: None,
        },
    )
    .await
    .unwrap_err();
    assert!(
        crash.downcast_ref::<pipeline::SimulatedCrash>().is_some(),
        "{crash:#}"
    );
    drop(crashing);

    // The resumed run reads pages 4 to 6 only, yet counts all 52 entries.
    let app = app_on(&sims, &url, |_| {}).await;
    let report = run(&app, "billable_users").await;
    let error = failure(&report, "billable_users");
    assert!(
        error.contains("the list ended on page 6 after 52 entries, but X-Pagination-Total-Entries announced 500"),
        "{error}"
    );
    assert_eq!(requests_for_page(&sims.billable_users, 1), 1);
    assert!(sims.rambase.usages().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_total_that_changes_between_pages_sets_the_pages_aside_and_the_rerun_reads_from_page_1() {
    let sims = sims().await;
    let app = app_on(&sims, &database().await, |_| {}).await;
    sims.billable_users.announce_total_entries(3, 53);

    let report = run(&app, "billable_users").await;
    let error = failure(&report, "billable_users");
    assert!(
        error.contains(
            "X-Pagination-Total-Entries changed while tally read the list: 52 on the pages before page 3, 53 on page 3"
        ),
        "{error}"
    );
    assert!(
        error.contains("the next run reads the list again from page 1"),
        "{error}"
    );
    assert!(lines_of(&app, "billable_users").await.is_empty());
    // The two pages of the old snapshot are set aside: nothing is staged, nothing totalled.
    let reset = checkpoint(&app, "billable_users", sim::DEMO_ACCOUNT).await;
    assert!(!reset.complete);
    assert_eq!((reset.pages, reset.cursor.as_deref()), (0, None));
    let staged = app
        .store
        .staged_records(&SourceName::new("billable_users"), period())
        .await
        .unwrap();
    assert!(staged.is_empty(), "{staged:?}");

    sims.billable_users.honest_paging();
    assert_billed_once(&app, &sims).await;
    assert_eq!(
        requests_for_page(&sims.billable_users, 1),
        2,
        "read again from page 1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_announced_pages_stop_at_the_first_empty_one() {
    let sims = sims().await;
    let app = app_on(&sims, &database().await, |_| {}).await;
    // A peer that keeps answering empty pages with a `rel="next"`, its totals agreeing.
    sims.billable_users.announce_total_pages(1, 10_000);
    sims.billable_users.announce_total_entries(1, 1_000_000);

    let report = run(&app, "billable_users").await;
    let error = failure(&report, "billable_users");
    assert!(
        error.contains("page 7 is empty but announces a next page"),
        "{error}"
    );
    assert!(
        error.contains("page=7&per_page=10"),
        "names the URL: {error}"
    );
    // Pages are fetched a few at once once the total is announced: up to `concurrency - 1`
    // (3) pages after the empty one were already requested when it was checked.
    let requests = sims.billable_users.requests();
    assert!(
        (7..=10).contains(&requests),
        "not 10,000 requests: {requests}"
    );
    assert!(lines_of(&app, "billable_users").await.is_empty());
    assert_eq!(
        checkpoint(&app, "billable_users", sim::DEMO_ACCOUNT)
            .await
            .pages,
        6
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_limit_fails_the_source_naming_the_key_and_raising_it_finishes_the_month() {
    let sims = sims().await;
    let url = database().await;
    let limited = app_on(&sims, &url, |s| {
        s.sources
            .billable_users
            .as_mut()
            .unwrap()
            .max_pages_per_scope = 3;
    })
    .await;

    let report = run(&limited, "billable_users").await;
    let error = failure(&report, "billable_users");
    assert!(
        error.contains(
            "page 3 announces a next page, but sources.billable_users.max_pages_per_scope is 3"
        ),
        "{error}"
    );
    assert!(
        error.contains("raise sources.billable_users.max_pages_per_scope"),
        "{error}"
    );
    assert!(
        error.contains("page=3&per_page=10"),
        "names the URL: {error}"
    );
    assert!(sims.rambase.usages().is_empty());
    assert_eq!(
        checkpoint(&limited, "billable_users", sim::DEMO_ACCOUNT)
            .await
            .pages,
        2
    );
    drop(limited);

    // With the default limit the next run resumes at page 3 and bills everyone once.
    let app = app_on(&sims, &url, |_| {}).await;
    assert_billed_once(&app, &sims).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_to_another_port_after_a_good_month_fails_the_source_and_reverses_nothing() {
    let sims = sims().await;
    let app = app_on(&sims, &database().await, |_| {}).await;
    assert_billed_once(&app, &sims).await;
    let billed = lines_of(&app, "billable_users").await;
    assert_eq!(billed.len(), 4);

    // Another server, on another port, that would answer an empty month to the same token.
    let elsewhere = BillableUsersSim::new(sim::DEMO_TOKEN, sim::DEMO_ACCOUNT);
    let handle = elsewhere
        .serve(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    sims.billable_users
        .redirect_to(1, &format!("http://{}", handle.addr()));

    let report = run(&app, "billable_users").await;
    let error = failure(&report, "billable_users");
    assert!(error.contains("answered 301"), "{error}");
    assert!(
        error.contains("redirected tally to another address"),
        "{error}"
    );
    assert!(error.contains("sources.billable_users.base_url"), "{error}");
    assert_eq!(elsewhere.requests(), 0, "the other server received nothing");
    // No credit of the good month: the lines and RamBase are as they were.
    assert_eq!(lines_of(&app, "billable_users").await, billed);
    assert_eq!(rambase_quantities(&sims), RAMBASE_QUANTITIES);
    let kept = checkpoint(&app, "billable_users", sim::DEMO_ACCOUNT).await;
    assert!(
        !kept.complete,
        "an empty month was not taken for a complete one"
    );
    assert_eq!(kept.pages, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ccc_page_answered_for_another_fails_the_source_and_keeps_its_checkpoint() {
    let sims = sims().await;
    let app = app_on(&sims, &database().await, |_| {}).await;
    sims.ccc.skip_page(2);

    let report = run(&app, "ccc").await;
    let error = failure(&report, "ccc");
    assert!(
        error.contains("currentPage is 3 in the answer to page 2"),
        "{error}"
    );
    assert!(
        error.contains("Page=2&PageSize=10"),
        "names the URL: {error}"
    );
    assert!(lines_of(&app, "ccc").await.is_empty());
    assert!(sims.activeplatform.corrections().is_empty());
    let kept = checkpoint(&app, "ccc", CCC_SERVICE).await;
    assert_eq!(kept.cursor.as_deref(), Some("2;read=10;entries=30;pages=3"));

    sims.ccc.honest_paging();
    let again = run(&app, "ccc").await;
    assert!(
        again.summary.failed_sources.is_empty(),
        "{:?}",
        again.summary
    );
    assert!(!lines_of(&app, "ccc").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn ccc_totals_that_lie_fail_the_source_with_both_numbers() {
    type Knob = fn(&RunningSims);
    let cases: [(Knob, &str); 3] = [
        (
            |s| s.ccc.announce_total_items(1, 31),
            "the list ended on page 3 after 30 entries, but totalItems announced 31",
        ),
        (
            |s| s.ccc.announce_total_items(1, 25),
            "30 entries read up to page 3, but totalItems announced 25",
        ),
        (
            |s| {
                s.ccc.announce_total_pages(1, 50);
                s.ccc.announce_total_items(1, 500);
            },
            "page 4 is empty but announces a next page (currentPage < totalPages)",
        ),
    ];
    for (knob, expected) in cases {
        let sims = sims().await;
        let app = app_on(&sims, &database().await, |_| {}).await;
        knob(&sims);
        let report = run(&app, "ccc").await;
        let error = failure(&report, "ccc");
        assert!(error.contains(expected), "{error}");
        assert!(
            error.contains(CCC_SERVICE),
            "names the service's URL: {error}"
        );
        assert!(lines_of(&app, "ccc").await.is_empty());
        assert!(!checkpoint(&app, "ccc", CCC_SERVICE).await.complete);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ccc_total_that_changes_between_pages_makes_the_rerun_read_from_page_1() {
    let sims = sims().await;
    let app = app_on(&sims, &database().await, |_| {}).await;
    sims.ccc.announce_total_items(2, 31);

    let report = run(&app, "ccc").await;
    let error = failure(&report, "ccc");
    assert!(
        error.contains("totalItems changed while tally read the list: 30 on the pages before page 2, 31 on page 2"),
        "{error}"
    );
    let reset = checkpoint(&app, "ccc", CCC_SERVICE).await;
    assert_eq!((reset.pages, reset.cursor.as_deref()), (0, None));

    sims.ccc.honest_paging();
    let again = run(&app, "ccc").await;
    assert!(
        again.summary.failed_sources.is_empty(),
        "{:?}",
        again.summary
    );
    let first_pages = sims
        .ccc
        .users_requests()
        .iter()
        .filter(|(service, page, _)| service == CCC_SERVICE && *page == 1)
        .count();
    assert_eq!(first_pages, 2, "read again from page 1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_genesys_total_in_exponent_form_or_too_large_for_a_decimal_fails_the_source() {
    let (_, acme_id, _, _) = tally::sim::genesys::DEMO_ORGS[0];
    for (total, expected) in [
        ("1e3", "is in exponent notation"),
        (
            "99999999999999999999999999999999",
            "is larger or more precise than tally can hold exactly",
        ),
    ] {
        let sims = sims().await;
        let app = app_on(&sims, &database().await, |_| {}).await;
        sims.genesys.set_usage(
            acme_id,
            period(),
            vec![GenesysUsage {
                name: "Genesys Cloud CX 1".into(),
                total_usage: total.into(),
                resources: vec![],
            }],
        );
        let report = run(&app, "genesys").await;
        let error = failure(&report, "genesys");
        assert!(error.contains(expected), "{total}: {error}");
        assert!(
            error.contains(&format!("{total:?}")),
            "names the value: {error}"
        );
        assert!(error.contains("org acme"), "names the org: {error}");
        assert!(error.contains("report "), "names the report: {error}");
        assert!(lines_of(&app, "genesys").await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rambase_listing_shorter_than_its_size_sends_nothing_there() {
    let sims = sims().await;
    let app = app_on(&sims, &database().await, |_| {}).await;
    // Every plan item says it holds two usages more than it lists.
    sims.rambase.announce_list_size(2);

    let report = run(&app, "billable_users").await;
    assert_eq!(report.summary.status, RunStatus::Failed);
    assert_eq!(report.summary.status.exit_code(), 1);
    assert_eq!(report.summary.lines_pushed, 0);
    assert_eq!(
        report.summary.errors.len(),
        4,
        "{:?}",
        report.summary.errors
    );
    for error in &report.summary.errors {
        assert!(
            error.contains("ended after 0 usages on 1 page(s), but RamBase said it holds 2"),
            "{error}"
        );
        assert!(
            error.contains("$inlinecount=allpages"),
            "names the URL: {error}"
        );
    }
    assert_eq!(sims.rambase.posts_received(), 0, "nothing sent to RamBase");

    sims.rambase.honest_paging();
    let again = run(&app, "billable_users").await;
    assert_eq!(again.summary.lines_pushed, 4, "{:?}", again.summary);
    assert_eq!(rambase_quantities(&sims), RAMBASE_QUANTITIES);
}
