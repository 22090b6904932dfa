//! End to end: the real pipeline against the simulators and a real database. Every assertion
//! is on what a user would notice: amounts, exit statuses, and the usages the RamBase
//! simulator received.

use crate::common;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use std::collections::BTreeMap;
use tally::config::Settings;
use tally::domain::{LineStatus, Period, RunStatus, Trigger};
use tally::pipeline::{self, App, RunOptions, SimulatedCrash};
use tally::sim::{self, RunningSims};
use tally::store::{DatabaseTarget, PushScope};

fn period() -> Period {
    sim::DEMO_PERIOD.parse().unwrap()
}

fn options(dry_run: bool) -> RunOptions {
    RunOptions {
        period: period(),
        source: None,
        dry_run,
        trigger: Trigger::Manual,
        customer: None,
        requested_by: None,
    }
}

async fn sims() -> RunningSims {
    let settings = sim::demo_settings(std::path::Path::new("data")).unwrap();
    sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap()
}

async fn app(sims: &RunningSims, db: &DatabaseTarget, tweak: impl FnOnce(&mut Settings)) -> App {
    // These tests are about the ledger with one source and one billing system.
    let mut settings = common::billable_users_into_rambase(sims, db);
    if let Some(s) = settings.sources.billable_users.as_mut() {
        s.http.backoff_ms = 10;
    }
    if let Some(s) = settings.sinks.rambase.as_mut() {
        s.http.backoff_ms = 10;
    }
    tweak(&mut settings);
    App::build(settings).await.unwrap()
}

/// Quantity received by the RamBase simulator per plan id.
fn received(sims: &RunningSims) -> BTreeMap<u64, Vec<i64>> {
    let mut by_plan: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    for u in sims.rambase.usages() {
        by_plan.entry(u.plan_id).or_default().push(u.quantity);
    }
    by_plan
}

/// The ledger's current amount per billing account.
async fn amounts(app: &App) -> BTreeMap<String, Decimal> {
    let mut totals = BTreeMap::new();
    for line in app.store.ledger_lines(period(), None).await.unwrap() {
        *totals
            .entry(line.key.billing_account.to_string())
            .or_insert(Decimal::ZERO) += line.amount;
    }
    totals
}

fn expected_amounts() -> BTreeMap<String, Decimal> {
    BTreeMap::from([
        // Graduated: 10 × 12.50 + 2 × 10.00.
        ("ACME-001".to_owned(), dec!(145.00)),
        // NOK list price, per unit: 7 × 135.00 (the person listed twice counts once).
        ("GLOBEX-002".to_owned(), dec!(945.00)),
        // Customer price, volume: 25 × 9.50 + the tier's flat fee 25.00.
        ("INITECH-003".to_owned(), dec!(262.50)),
        // Customer price with a minimum: 3 × 12.50 = 37.50 → 100.00.
        ("UMBRELLA-004".to_owned(), dec!(100.00)),
    ])
}

async fn first_run_prices_and_pushes_every_line_and_a_rerun_pushes_nothing(db: DatabaseTarget) {
    let sims = sims().await;
    let app = app(&sims, &db, |_| {}).await;

    let report = pipeline::run(&app, &options(false)).await.unwrap();
    assert_eq!(report.summary.status, RunStatus::CompletedWithExceptions);
    assert_eq!(report.summary.status.exit_code(), 3);
    assert_eq!(report.summary.records_read, 51);
    assert_eq!(report.summary.lines_created, 4);
    assert_eq!(report.summary.lines_pushed, 4);
    assert_eq!(report.summary.totals["EUR"], dec!(507.50));
    assert_eq!(report.summary.totals["NOK"], dec!(945.00));
    assert_eq!(amounts(&app).await, expected_amounts());
    assert_eq!(
        received(&sims),
        BTreeMap::from([
            (100001, vec![12]),
            (100002, vec![7]),
            (100003, vec![25]),
            (100004, vec![3])
        ])
    );

    let again = pipeline::run(&app, &options(false)).await.unwrap();
    assert_eq!(again.summary.lines_pushed, 0);
    assert_eq!(again.summary.lines_unchanged, 4);
    assert_eq!(again.summary.lines_created, 0);
    assert_eq!(
        sims.rambase.usages().len(),
        4,
        "an unchanged re-run pushes nothing"
    );
    assert_eq!(sims.rambase.posts_received(), 4);
}

#[tokio::test]
async fn postgres_first_run_prices_and_pushes_every_line_and_a_rerun_pushes_nothing() {
    first_run_prices_and_pushes_every_line_and_a_rerun_pushes_nothing(
        common::fresh_postgres().await,
    )
    .await;
}

#[tokio::test]
async fn sqlite_first_run_prices_and_pushes_every_line_and_a_rerun_pushes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    first_run_prices_and_pushes_every_line_and_a_rerun_pushes_nothing(common::fresh_sqlite(&dir))
        .await;
}

#[tokio::test]
async fn an_unmapped_organization_is_an_exception_and_nothing_of_it_is_pushed() {
    let sims = sims().await;
    let app = app(&sims, &common::fresh_postgres().await, |_| {}).await;
    let report = pipeline::run(&app, &options(false)).await.unwrap();
    assert_eq!(report.summary.exceptions, 1);
    assert_eq!(report.summary.status.exit_code(), 3);
    let exceptions = app.store.exceptions(period()).await.unwrap();
    assert_eq!(exceptions.len(), 1);
    assert_eq!(exceptions[0].customer_key, "Hooli Labs");
    assert_eq!(exceptions[0].quantity, dec!(4));
    assert_eq!(exceptions[0].record_count, 4);
    assert!(
        exceptions[0].message.contains("customer map"),
        "{}",
        exceptions[0].message
    );
    let lines = app.store.ledger_lines(period(), None).await.unwrap();
    assert!(
        lines
            .iter()
            .all(|l| !l.key.billing_account.as_str().contains("HOOLI"))
    );
    assert_eq!(
        sims.rambase.usages().len(),
        4,
        "only the four mapped customers reach RamBase"
    );
}

#[tokio::test]
async fn a_changed_quantity_after_a_push_yields_exactly_one_adjustment() {
    let sims = sims().await;
    let app = app(&sims, &common::fresh_postgres().await, |_| {}).await;
    pipeline::run(&app, &options(false)).await.unwrap();

    // Three more people at Acme: 15 in all, i.e. three more in the 10.00 tier.
    let mut people = sims.billable_users.people(period());
    let mut extra = people
        .iter()
        .find(|p| p.organization == "Acme Corporation")
        .unwrap()
        .clone();
    for id in [9001, 9002, 9003] {
        extra.id = id;
        people.push(extra.clone());
    }
    sims.billable_users.set_people(period(), people);

    let report = pipeline::run(&app, &options(false)).await.unwrap();
    assert_eq!(report.summary.lines_adjusted, 1);
    assert_eq!(report.summary.lines_unchanged, 3);
    assert_eq!(report.summary.lines_pushed, 1);
    assert_eq!(
        received(&sims)[&100001],
        vec![12, 3],
        "one adjustment of +3 on Acme's item"
    );
    let acme: Vec<_> = app
        .store
        .ledger_lines(period(), None)
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.key.billing_account.as_str() == "ACME-001")
        .collect();
    assert_eq!(
        acme.len(),
        2,
        "history is kept: the line and its adjustment"
    );
    assert_eq!(acme[1].revision, 2);
    assert_eq!(acme[1].quantity, dec!(3));
    assert_eq!(acme[1].amount, dec!(30.00));
    assert_eq!(acme[1].total_amount, dec!(175.00));
    assert!(acme.iter().all(|l| l.status == LineStatus::Pushed));

    let third = pipeline::run(&app, &options(false)).await.unwrap();
    assert_eq!(third.summary.lines_pushed, 0);
    assert_eq!(sims.rambase.usages().len(), 5);
}

#[tokio::test]
async fn a_crash_between_acceptance_and_the_ledger_update_leaves_exactly_one_usage() {
    let sims = sims().await;
    let db = common::fresh_postgres().await;
    let mut crashing = app(&sims, &db, |_| {}).await;
    crashing.faults.crash_after_accepted_pushes = Some(1);
    let err = pipeline::run(&crashing, &options(false)).await.unwrap_err();
    assert!(err.downcast_ref::<SimulatedCrash>().is_some(), "{err:#}");
    assert_eq!(
        sims.rambase.usages().len(),
        1,
        "RamBase accepted the first line"
    );
    let pushing: Vec<_> = crashing
        .store
        .ledger_lines(period(), None)
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.status == LineStatus::Pushing)
        .collect();
    assert_eq!(pushing.len(), 1, "the ledger never heard back");
    drop(crashing);

    // The process restarts: the line left pushing is found in RamBase, not sent again.
    let restarted = app(&sims, &db, |_| {}).await;
    let report = pipeline::run(&restarted, &options(false)).await.unwrap();
    assert_eq!(report.summary.lines_pushed, 4, "one recovered, three sent");
    assert_eq!(
        received(&sims),
        BTreeMap::from([
            (100001, vec![12]),
            (100002, vec![7]),
            (100003, vec![25]),
            (100004, vec![3])
        ]),
        "exactly one usage per line"
    );
    assert_eq!(amounts(&restarted).await, expected_amounts());
    let lines = restarted.store.ledger_lines(period(), None).await.unwrap();
    assert!(lines.iter().all(|l| l.status == LineStatus::Pushed));
}

#[tokio::test]
async fn a_push_whose_answer_is_lost_is_recognised_without_sending_it_again() {
    let sims = sims().await;
    let app = app(&sims, &common::fresh_postgres().await, |_| {}).await;
    sims.rambase.fail_next_post_after_accept(1);
    let report = pipeline::run(&app, &options(false)).await.unwrap();
    assert_eq!(report.summary.lines_pushed, 4);
    assert!(
        report.summary.errors.is_empty(),
        "{:?}",
        report.summary.errors
    );
    assert_eq!(sims.rambase.usages().len(), 4);
}

#[tokio::test]
async fn a_crash_during_extraction_resumes_at_its_page() {
    let sims = sims().await;
    let db = common::fresh_postgres().await;
    let mut crashing = app(&sims, &db, |_| {}).await;
    crashing.faults.crash_after_pages = Some(2);
    let err = pipeline::run(&crashing, &options(false)).await.unwrap_err();
    assert!(err.downcast_ref::<SimulatedCrash>().is_some(), "{err:#}");
    // Pages are fetched ahead of staging: the crash may find later pages fetched, not staged.
    let before_crash = sims.billable_users.requests();
    assert!(before_crash >= 2, "{before_crash}");
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
        (2, false),
        "the checkpoint claims the 2 staged pages"
    );
    drop(crashing);

    let restarted = app(&sims, &db, |_| {}).await;
    let report = pipeline::run(&restarted, &options(false)).await.unwrap();
    // 52 listed records at 10 a page: 6 pages in all; the resumed run reads pages 3 to 6 only.
    assert_eq!(sims.billable_users.requests() - before_crash, 4);
    assert_eq!(report.summary.records_read, 51);
    assert_eq!(amounts(&restarted).await, expected_amounts());
    assert_eq!(sims.rambase.usages().len(), 4);
}

#[tokio::test]
async fn a_dry_run_changes_neither_the_ledger_nor_the_billing_simulator() {
    let sims = sims().await;
    let app = app(&sims, &common::fresh_postgres().await, |_| {}).await;
    let report = pipeline::run(&app, &options(true)).await.unwrap();
    assert_eq!(report.summary.run_id, None);
    assert_eq!(report.summary.lines_created, 4);
    assert_eq!(report.summary.totals["EUR"], dec!(507.50));
    assert!(
        app.store
            .ledger_lines(period(), None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(app.store.runs(10).await.unwrap().is_empty());
    assert!(app.store.exceptions(period()).await.unwrap().is_empty());
    assert!(sims.rambase.usages().is_empty());
    assert_eq!(sims.rambase.posts_received(), 0);

    // After a real run and a change, the dry run shows the adjustment and still writes nothing.
    pipeline::run(&app, &options(false)).await.unwrap();
    let mut people = sims.billable_users.people(period());
    people.retain(|p| p.organization != "Umbrella Health");
    sims.billable_users.set_people(period(), people);
    let plan = pipeline::run(&app, &options(true)).await.unwrap();
    let adjusted: Vec<_> = plan
        .plan
        .entries
        .iter()
        .filter(|e| e.action == tally::reconcile::Action::Adjust)
        .collect();
    assert_eq!(adjusted.len(), 1);
    assert_eq!(
        adjusted[0].delta_amount,
        dec!(-100.00),
        "Umbrella is credited in full"
    );
    assert_eq!(sims.rambase.usages().len(), 4);
    assert_eq!(
        app.store.ledger_lines(period(), None).await.unwrap().len(),
        4
    );
    assert_eq!(app.store.runs(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn lines_wait_for_approval_when_it_is_required() {
    let sims = sims().await;
    let app = app(&sims, &common::fresh_postgres().await, |s| {
        s.billing.require_approval = true
    })
    .await;
    let report = pipeline::run(&app, &options(false)).await.unwrap();
    assert_eq!(report.summary.lines_created, 4);
    assert_eq!(report.summary.lines_pushed, 0);
    assert!(sims.rambase.usages().is_empty());
    let lines = app.store.ledger_lines(period(), None).await.unwrap();
    assert!(lines.iter().all(|l| l.status == LineStatus::Draft));

    let acme = tally::domain::BillingAccount::new("ACME-001");
    let approved = app
        .store
        .approve(period(), Some(&acme), "kari", None)
        .await
        .unwrap();
    assert_eq!(approved.len(), 1);
    let only = PushScope {
        ids: Some(&approved),
        ..PushScope::default()
    };
    let outcome = app.pusher().push_period(period(), &only).await.unwrap();
    assert_eq!(outcome.pushed, 1);
    assert_eq!(received(&sims), BTreeMap::from([(100001, vec![12])]));

    let approved = app
        .store
        .approve(period(), None, "kari", None)
        .await
        .unwrap();
    assert_eq!(approved.len(), 3);
    let outcome = app
        .pusher()
        .push_period(period(), &PushScope::default())
        .await
        .unwrap();
    assert_eq!(outcome.pushed, 3);
    assert_eq!(sims.rambase.usages().len(), 4);
}

#[tokio::test]
async fn a_source_that_keeps_failing_fails_the_run_and_pushes_nothing() {
    let sims = sims().await;
    let app = app(&sims, &common::fresh_postgres().await, |s| {
        if let Some(b) = s.sources.billable_users.as_mut() {
            b.http.max_retries = 1;
        }
    })
    .await;
    sims.billable_users.fail_next(10, 500);
    let report = pipeline::run(&app, &options(false)).await.unwrap();
    assert_eq!(report.summary.status, RunStatus::Failed);
    assert_eq!(report.summary.status.exit_code(), 1);
    assert_eq!(report.summary.failed_sources.len(), 1);
    assert!(
        report.summary.failed_sources[0].error.contains("500"),
        "{:?}",
        report.summary.failed_sources
    );
    assert!(sims.rambase.usages().is_empty());
    let runs = app.store.runs(1).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Failed);
}

#[tokio::test]
async fn an_unknown_source_is_a_usage_error() {
    let sims = sims().await;
    let app = app(&sims, &common::fresh_postgres().await, |_| {}).await;
    let mut opts = options(false);
    opts.source = Some("nope".into());
    let err = pipeline::run(&app, &opts).await.unwrap_err();
    assert!(err.downcast_ref::<pipeline::UsageError>().is_some());
    assert!(err.to_string().contains("billable_users"), "{err}");
}
