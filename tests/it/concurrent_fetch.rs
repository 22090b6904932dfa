//! Pages fetched ahead, several at once: the books come out exactly as when pages are read one
//! by one, a crash with pages in flight resumes to identical lines, an announced rate limit is
//! never crossed, and a month of more pages than one window takes finishes in the next ones.

use crate::common;

use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::time::Duration;
use tally::config::Settings;
use tally::domain::{Period, RunStatus, Trigger};
use tally::pipeline::{self, App, RunOptions, SimulatedCrash};
use tally::sim::{self, RunningSims};
use tally::store::DatabaseTarget;

async fn sims() -> RunningSims {
    let settings = sim::demo_settings(std::path::Path::new("data")).unwrap();
    sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap()
}

fn period() -> Period {
    sim::DEMO_PERIOD.parse().unwrap()
}

/// The demo's billable users (52 listed, 51 people) into RamBase, `per_page` a page,
/// `concurrency` pages at once.
fn settings(sims: &RunningSims, db: &DatabaseTarget, per_page: u32, concurrency: u32) -> Settings {
    let mut settings = common::billable_users_into_rambase(sims, db);
    let source = settings.sources.billable_users.as_mut().unwrap();
    source.per_page = per_page;
    source.concurrency = concurrency;
    source.http.backoff_ms = 5;
    settings
}

fn options() -> RunOptions {
    RunOptions {
        period: period(),
        source: None,
        dry_run: false,
        trigger: Trigger::Manual,
        customer: None,
        requested_by: None,
    }
}

/// Every line of the period: (account, license type) → (quantity, amount).
async fn books(app: &App) -> BTreeMap<(String, String), (Decimal, Decimal)> {
    app.store
        .ledger_lines(period(), None)
        .await
        .unwrap()
        .into_iter()
        .map(|l| {
            (
                (
                    l.key.billing_account.to_string(),
                    l.key.license_type.to_string(),
                ),
                (l.quantity, l.amount),
            )
        })
        .collect()
}

/// The `page` of every request the billable-users simulator received, sorted.
fn pages_requested(sims: &RunningSims) -> Vec<u32> {
    let mut pages: Vec<u32> = sims
        .billable_users
        .received()
        .iter()
        .filter_map(|r| {
            r.query
                .split('&')
                .find_map(|pair| pair.strip_prefix("page="))
                .and_then(|p| p.parse().ok())
        })
        .collect();
    pages.sort_unstable();
    pages
}

/// The books of the same month read one page at a time, for comparison.
async fn one_page_at_a_time(per_page: u32) -> BTreeMap<(String, String), (Decimal, Decimal)> {
    let sims = sims().await;
    let db = common::fresh_postgres().await;
    let app = App::build(settings(&sims, &db, per_page, 1)).await.unwrap();
    let report = pipeline::run(&app, &options()).await.unwrap();
    assert_eq!(report.summary.records_read, 51);
    books(&app).await
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_fetched_four_at_a_time_within_an_announced_limit_bill_exactly_and_provoke_no_429() {
    let sims = sims().await;
    // 20 requests per 2 s, announced in every answer; 26 pages of 2 people.
    sims.billable_users
        .set_rate_limit(20, Duration::from_secs(2));
    let db = common::fresh_postgres().await;
    let app = App::build(settings(&sims, &db, 2, 4)).await.unwrap();

    let report = pipeline::run(&app, &options()).await.unwrap();

    assert_eq!(report.summary.records_read, 51);
    assert_eq!(report.summary.lines_pushed, 4);
    assert!(
        report.summary.failed_sources.is_empty(),
        "{:?}",
        report.summary.failed_sources
    );
    // One request per page and not one more: a 429 would have been a second request.
    assert_eq!(pages_requested(&sims), (1..=26).collect::<Vec<_>>());
    assert_eq!(sims.billable_users.requests(), 26);
    assert_eq!(books(&app).await, one_page_at_a_time(2).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_month_of_more_pages_than_one_window_takes_finishes_in_the_next_windows() {
    let sims = sims().await;
    // 4 requests a second, 11 pages: three windows, each waited out, never a 429.
    sims.billable_users
        .set_rate_limit(4, Duration::from_secs(1));
    let db = common::fresh_postgres().await;
    let app = App::build(settings(&sims, &db, 5, 4)).await.unwrap();

    let report = pipeline::run(&app, &options()).await.unwrap();

    assert_ne!(
        report.summary.status,
        RunStatus::Failed,
        "{:?}",
        report.summary
    );
    assert_eq!(report.summary.records_read, 51);
    assert_eq!(report.summary.lines_pushed, 4);
    assert_eq!(pages_requested(&sims), (1..=11).collect::<Vec<_>>());
    assert_eq!(sims.billable_users.requests(), 11, "no 429");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_with_pages_in_flight_resumes_to_identical_lines() {
    let sims = sims().await;
    let db = common::fresh_postgres().await;
    let mut crashing = App::build(settings(&sims, &db, 5, 4)).await.unwrap();
    crashing.faults.crash_after_pages = Some(3);
    let crash = pipeline::run(&crashing, &options()).await.unwrap_err();
    assert!(
        crash.downcast_ref::<SimulatedCrash>().is_some(),
        "{crash:#}"
    );
    let cp = crashing
        .store
        .checkpoint(
            &tally::domain::SourceName::new("billable_users"),
            sim::DEMO_ACCOUNT,
            period(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (cp.pages, cp.complete),
        (3, false),
        "the checkpoint claims the pages staged, not those in flight"
    );
    let before = sims.billable_users.requests();
    assert!(
        sims.rambase.usages().is_empty(),
        "nothing pushed before the crash"
    );
    drop(crashing);

    let app = App::build(settings(&sims, &db, 5, 4)).await.unwrap();
    let report = pipeline::run(&app, &options()).await.unwrap();

    assert_eq!(report.summary.records_read, 51);
    assert_eq!(report.summary.lines_pushed, 4);
    // Pages 4 to 11 only: the staged pages are not read again.
    assert_eq!(sims.billable_users.requests() - before, 8);
    assert_eq!(sims.rambase.usages().len(), 4, "each line pushed once");
    assert_eq!(books(&app).await, one_page_at_a_time(5).await);
}
