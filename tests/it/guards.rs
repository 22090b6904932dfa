//! What a lying peer can do to the money, end to end over the demo configuration, the five
//! simulators and a real Postgres: an empty answer after a good month credits nothing without
//! a person, and an absurd quantity is an exception of the run, never a panic or a line.

use crate::multi_source::{app, corrections, options, period, sims};
use tally::domain::{ExceptionKind, LineStatus, RunStatus};
use tally::pipeline::{self, RunOptions};
use tally::sim::genesys::{DEMO_ORGS, DEMO_USAGE_NAMES, GenesysUsage};
use tally::store::PushScope;

fn rambase_quantities(sims: &tally::sim::RunningSims) -> Vec<(u64, i64)> {
    let mut usages: Vec<(u64, i64)> = sims
        .rambase
        .usages()
        .iter()
        .map(|u| (u.plan_id, u.quantity))
        .collect();
    usages.sort();
    usages
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_that_answers_nothing_after_a_good_month_credits_nothing_until_a_person_approves()
{
    let sims = sims().await;
    let app = app(&sims, |_| {}).await;
    let first = pipeline::run(&app, &options(None)).await.unwrap();
    assert_eq!(first.summary.lines_pushed, 12, "{:?}", first.summary);
    let pushed = rambase_quantities(&sims);

    // The billable-users API now answers an empty list for the month.
    sims.billable_users.set_people(period(), Vec::new());
    let rerun = pipeline::run(&app, &options(Some("billable_users")))
        .await
        .unwrap();

    assert_eq!(
        rambase_quantities(&sims),
        pushed,
        "no credit reached RamBase"
    );
    assert_eq!(rerun.summary.lines_pushed, 0);
    assert_eq!(
        rerun.summary.lines_waiting_approval, 4,
        "{:?}",
        rerun.summary
    );
    assert_eq!(rerun.summary.status, RunStatus::CompletedWithExceptions);
    let shrink: Vec<_> = rerun
        .exceptions
        .iter()
        .filter(|e| e.kind == ExceptionKind::SuspiciousShrink)
        .collect();
    assert_eq!(shrink.len(), 1, "{:?}", rerun.exceptions);
    let message = &shrink[0].message;
    assert!(
        message.contains("billable_users answered a quantity of 0")
            && message.contains("where 47 was pushed")
            && message.contains("4 credit(s)")
            && message.contains("tally approve --period 2026-10"),
        "{message}"
    );
    let drafts: Vec<_> = app
        .store
        .ledger_lines(period(), None)
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.status == LineStatus::Draft)
        .collect();
    assert_eq!(drafts.len(), 4);
    assert!(drafts.iter().all(|l| l.amount.is_sign_negative()));

    // A person who has checked the source approves: the credits go to RamBase, once.
    let approved = app
        .store
        .approve(period(), None, "ann", Some("the customers left"))
        .await
        .unwrap();
    assert_eq!(approved.len(), 4);
    app.pusher()
        .push_period(period(), &PushScope::default())
        .await
        .unwrap();
    let mut expected = pushed.clone();
    expected.extend([(100001, -12), (100002, -7), (100003, -25), (100004, -3)]);
    expected.sort();
    assert_eq!(rambase_quantities(&sims), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_that_recovers_withdraws_its_held_credits() {
    let sims = sims().await;
    let app = app(&sims, |_| {}).await;
    pipeline::run(&app, &options(None)).await.unwrap();
    let people = sims.billable_users.people(period());
    sims.billable_users.set_people(period(), Vec::new());
    pipeline::run(&app, &options(Some("billable_users")))
        .await
        .unwrap();

    sims.billable_users.set_people(period(), people);
    let recovered = pipeline::run(&app, &options(Some("billable_users")))
        .await
        .unwrap();
    assert_eq!(recovered.summary.lines_waiting_approval, 0);
    assert!(
        !recovered
            .exceptions
            .iter()
            .any(|e| e.kind == ExceptionKind::SuspiciousShrink),
        "{:?}",
        recovered.exceptions
    );
    assert_eq!(sims.rambase.usages().len(), 4, "nothing was ever credited");
    let lines = app.store.ledger_lines(period(), None).await.unwrap();
    assert!(lines.iter().all(|l| l.status == LineStatus::Pushed));
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_guard_off_an_empty_answer_credits_at_once() {
    let sims = sims().await;
    let app = app(&sims, |s| s.billing.shrink_guard.enabled = false).await;
    pipeline::run(&app, &options(None)).await.unwrap();
    sims.billable_users.set_people(period(), Vec::new());
    let rerun = pipeline::run(&app, &options(Some("billable_users")))
        .await
        .unwrap();
    assert_eq!(rerun.summary.lines_pushed, 4);
    assert_eq!(sims.rambase.usages().len(), 8);
}

/// The demo's Genesys usage of org `acme`, with the CX 3 figure replaced by `total`.
fn acme_reports(sims: &tally::sim::RunningSims, total: &str) {
    sims.genesys.set_usage(
        DEMO_ORGS[0].1,
        period(),
        vec![GenesysUsage {
            name: DEMO_USAGE_NAMES[1].to_owned(),
            total_usage: total.to_owned(),
            resources: Vec::new(),
        }],
    );
}

/// The messages of the `out_of_range` exceptions of a Genesys run, and the run's report.
async fn genesys_out_of_range(
    app: &tally::pipeline::App,
    dry_run: bool,
) -> (Vec<String>, tally::pipeline::RunReport) {
    let report = pipeline::run(
        app,
        &RunOptions {
            dry_run,
            ..options(Some("genesys"))
        },
    )
    .await
    .unwrap();
    let messages = report
        .exceptions
        .iter()
        .filter(|e| e.kind == ExceptionKind::OutOfRange)
        .map(|e| e.message.clone())
        .collect();
    (messages, report)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absurd_quantity_is_an_exception_naming_the_record_never_a_line_or_a_panic() {
    let sims = sims().await;
    let app = app(&sims, |_| {}).await;
    // 10^20 minutes: once planned as a line of 14,000,000,000,000,000,000,075.00 EUR.
    acme_reports(&sims, "100000000000000000000");
    for dry_run in [true, false] {
        let (out, report) = genesys_out_of_range(&app, dry_run).await;
        assert_eq!(out.len(), 1, "dry run {dry_run}: {:?}", report.exceptions);
        assert!(
            out[0].contains("above billing.limits.max_quantity_per_record")
                && out[0].contains(DEMO_ORGS[0].1),
            "{}",
            out[0]
        );
        assert_eq!(report.summary.status, RunStatus::CompletedWithExceptions);
        let acme_amounts: Vec<_> = report
            .summary
            .totals
            .values()
            .filter(|t| t.abs() > rust_decimal::Decimal::from(1_000_000u64))
            .collect();
        assert!(acme_amounts.is_empty(), "{:?}", report.summary.totals);
    }
    // Globex's line went through; nothing of acme's Genesys usage reached ActivePlatform.
    let billed: Vec<u64> = corrections(&sims).iter().map(|c| c.0).collect();
    assert!(billed.contains(&2000041), "{billed:?}");
    let acme_genesys = app
        .store
        .ledger_lines(period(), None)
        .await
        .unwrap()
        .into_iter()
        .filter(|l| {
            l.key.source.as_str() == "genesys" && l.key.billing_account.as_str() == "2000036"
        })
        .count();
    assert_eq!(acme_genesys, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_amount_too_large_to_compute_is_an_exception_even_with_raised_limits() {
    let sims = sims().await;
    let app = app(&sims, |s| {
        s.billing.limits.max_quantity_per_record =
            rust_decimal::Decimal::from(10u64.pow(19)) * rust_decimal::Decimal::from(10u64.pow(9));
        s.billing.limits.max_quantity_per_line = s.billing.limits.max_quantity_per_record;
    })
    .await;
    acme_reports(&sims, "5000000000000000000000000000");
    let (out, report) = genesys_out_of_range(&app, true).await;
    assert_eq!(out.len(), 1, "{:?}", report.exceptions);
    assert!(out[0].contains("too large to compute"), "{}", out[0]);
}
