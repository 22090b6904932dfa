//! One run over every source into every billing system: the demo's configuration (billable
//! users, CCC and Genesys Cloud into RamBase and ActivePlatform) against the five simulators
//! and a real Postgres. Assertions are on what the billing simulators received and on the
//! ledger's lines and exceptions.

use crate::common;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use std::collections::{BTreeMap, BTreeSet};
use tally::config::Settings;
use tally::domain::{ExceptionKind, LineStatus, Period, RunStatus, Trigger};
use tally::pipeline::{self, App, RunOptions, SimulatedCrash};
use tally::sim::{self, RunningSims};
use tally::sources::billable_users::Format;
use tally::store::DatabaseTarget;

pub(crate) fn period() -> Period {
    sim::DEMO_PERIOD.parse().unwrap()
}

pub(crate) fn options(source: Option<&str>) -> RunOptions {
    RunOptions {
        period: period(),
        source: source.map(str::to_owned),
        dry_run: false,
        trigger: Trigger::Manual,
        customer: None,
        requested_by: None,
    }
}

pub(crate) async fn sims() -> RunningSims {
    let settings = sim::demo_settings(std::path::Path::new("data")).unwrap();
    sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap()
}

/// The demo's configuration on a fresh Postgres database, with quick retries.
pub(crate) async fn app(sims: &RunningSims, tweak: impl FnOnce(&mut Settings)) -> App {
    let DatabaseTarget::Postgres(url) = common::fresh_postgres().await else {
        unreachable!()
    };
    app_on(sims, &url, tweak).await
}

pub(crate) async fn app_on(
    sims: &RunningSims,
    url: &str,
    tweak: impl FnOnce(&mut Settings),
) -> App {
    let mut settings = sim::demo_settings(std::path::Path::new("data")).unwrap();
    settings.database.url = Some(url.to_owned());
    sim::point_at(&mut settings, sims);
    if let Some(s) = settings.sources.billable_users.as_mut() {
        s.http.backoff_ms = 5;
        s.http.max_retries = 2;
    }
    if let Some(s) = settings.sources.ccc.as_mut() {
        s.http.backoff_ms = 5;
        s.http.max_retries = 2;
    }
    if let Some(s) = settings.sources.genesys.as_mut() {
        s.http.backoff_ms = 5;
        s.http.max_retries = 2;
    }
    if let Some(s) = settings.sinks.activeplatform.as_mut() {
        s.http.backoff_ms = 5;
    }
    if let Some(s) = settings.sinks.rambase.as_mut() {
        s.http.backoff_ms = 5;
    }
    tweak(&mut settings);
    App::build(settings).await.unwrap()
}

/// The ledger's lines as (account, license type, source) → (quantity, amount, billing system).
pub(crate) async fn ledger(
    app: &App,
) -> BTreeMap<(String, String, String), (Decimal, Decimal, String)> {
    let mut lines = BTreeMap::new();
    for l in app.store.ledger_lines(period(), None).await.unwrap() {
        let entry = lines
            .entry((
                l.key.billing_account.to_string(),
                l.key.license_type.to_string(),
                l.key.source.to_string(),
            ))
            .or_insert((Decimal::ZERO, Decimal::ZERO, l.sink.clone()));
        entry.0 += l.quantity;
        entry.1 += l.amount;
    }
    lines
}

/// The ActivePlatform simulator's corrections as (account id, total), sorted.
pub(crate) fn corrections(sims: &RunningSims) -> Vec<(u64, String)> {
    let mut all: Vec<(u64, String)> = sims
        .activeplatform
        .corrections()
        .into_iter()
        .map(|c| (c.account_id, c.total))
        .collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn one_run_bills_every_source_into_the_billing_system_of_each_account() {
    let sims = sims().await;
    let app = app(&sims, |_| {}).await;
    let report = pipeline::run(&app, &options(None)).await.unwrap();
    assert_eq!(
        report.summary.status,
        RunStatus::CompletedWithExceptions,
        "{:?}",
        report.summary
    );
    assert_eq!(report.summary.lines_pushed, 12);

    // RamBase: the billable users of the four mapped organizations.
    let mut usages: Vec<(u64, i64)> = sims
        .rambase
        .usages()
        .iter()
        .map(|u| (u.plan_id, u.quantity))
        .collect();
    usages.sort();
    assert_eq!(
        usages,
        vec![(100001, 12), (100002, 7), (100003, 25), (100004, 3)]
    );

    // ActivePlatform: CCC and Genesys, one correction per line, totals as 2-decimal strings.
    // 2000036 Acme: its CCC service is mapped to its e-mail, its Genesys org likewise;
    // 2000041 Globex: mapped to the account id; 2000057 Initech: found by the attribute that
    // holds its CCC service GUID (written with braces and capitals there).
    assert_eq!(
        corrections(&sims),
        vec![
            (2000036, "225.00".to_owned()),
            (2000036, "465.00".to_owned()),
            (2000036, "7.50".to_owned()),
            (2000036, "72.00".to_owned()),
            (2000041, "450.00".to_owned()),
            (2000041, "915.00".to_owned()),
            (2000057, "15.00".to_owned()),
            (2000057, "189.00".to_owned()),
        ]
    );
    let lines = ledger(&app).await;
    assert_eq!(
        lines[&(
            "2000041".to_owned(),
            "Genesys Cloud CX 3 user".to_owned(),
            "genesys".to_owned()
        )],
        (dec!(6), dec!(915.00), "activeplatform".to_owned()),
        "5 × 155.00 + 1 × 140.00 on the graduated tiers"
    );
    assert_eq!(
        lines[&(
            "2000057".to_owned(),
            "Secure messaging – Professional".to_owned(),
            "ccc".to_owned()
        )],
        (dec!(21), dec!(189.00), "activeplatform".to_owned())
    );

    // The Genesys add-on has no license type: an exception per org, never pushed.
    let addons: Vec<_> = report
        .exceptions
        .iter()
        .filter(|e| e.item == "Genesys Cloud WEM Add-on")
        .collect();
    assert_eq!(addons.len(), 2, "{:?}", report.exceptions);
    assert!(
        addons
            .iter()
            .all(|e| e.kind == ExceptionKind::UnmappedLicense)
    );

    // A re-run pushes nothing to either billing system.
    let again = pipeline::run(&app, &options(None)).await.unwrap();
    assert_eq!(again.summary.lines_pushed, 0);
    assert_eq!(again.summary.lines_unchanged, 12);
    assert_eq!(sims.rambase.usages().len(), 4);
    assert_eq!(sims.activeplatform.corrections().len(), 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_failing_on_every_call_fails_alone_and_a_rerun_adds_only_its_lines() {
    let sims = sims().await;
    let app = app(&sims, |_| {}).await;
    sims.ccc.fail_next(u32::MAX, 500);

    let first = pipeline::run(&app, &options(None)).await.unwrap();
    assert_eq!(first.summary.status, RunStatus::Failed);
    let failed: Vec<&str> = first
        .summary
        .failed_sources
        .iter()
        .map(|f| f.source.as_str())
        .collect();
    assert_eq!(failed, ["ccc"], "{:?}", first.summary.failed_sources);
    assert!(
        first.summary.failed_sources[0].error.contains("500"),
        "says what CCC answered: {}",
        first.summary.failed_sources[0].error
    );
    // The other sources completed and were pushed.
    assert_eq!(first.summary.lines_pushed, 8);
    assert_eq!(sims.rambase.usages().len(), 4);
    assert_eq!(sims.activeplatform.corrections().len(), 4);
    assert!(
        ledger(&app)
            .await
            .keys()
            .all(|(_, _, source)| source != "ccc"),
        "nothing of the failed source is billed"
    );

    // CCC recovers: the re-run bills exactly its four lines and leaves the others untouched.
    sims.ccc.fail_next(0, 500);
    let second = pipeline::run(&app, &options(None)).await.unwrap();
    assert_eq!(
        second.summary.status,
        RunStatus::CompletedWithExceptions,
        "{:?}",
        second.summary
    );
    assert_eq!(second.summary.lines_created, 4);
    assert_eq!(second.summary.lines_unchanged, 8);
    assert_eq!(second.summary.lines_pushed, 4);
    assert_eq!(sims.rambase.usages().len(), 4);
    let held = corrections(&sims);
    assert_eq!(held.len(), 8);
    let ccc_accounts: BTreeSet<u64> = sims
        .activeplatform
        .corrections()
        .iter()
        .filter(|c| c.comment.contains("Secure messaging"))
        .map(|c| c.account_id)
        .collect();
    assert_eq!(ccc_accounts, BTreeSet::from([2000036, 2000057]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_correction_accepted_before_a_crash_is_found_and_never_sent_twice() {
    let sims = sims().await;
    let DatabaseTarget::Postgres(url) = common::fresh_postgres().await else {
        unreachable!()
    };
    let mut crashing = app_on(&sims, &url, |_| {}).await;
    crashing.faults.crash_after_accepted_pushes = Some(1);
    // Only CCC: every line it pushes goes to ActivePlatform.
    let err = pipeline::run(&crashing, &options(Some("ccc")))
        .await
        .unwrap_err();
    assert!(err.downcast_ref::<SimulatedCrash>().is_some(), "{err:#}");
    assert_eq!(
        sims.activeplatform.corrections().len(),
        1,
        "ActivePlatform accepted one correction; the ledger never heard of it"
    );
    let pushing = crashing
        .store
        .ledger_lines(period(), None)
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.status == LineStatus::Pushing)
        .count();
    assert_eq!(pushing, 1, "the crashed line is left `pushing`");
    drop(crashing);

    let app = app_on(&sims, &url, |_| {}).await;
    let report = pipeline::run(&app, &options(Some("ccc"))).await.unwrap();
    assert_ne!(
        report.summary.status,
        RunStatus::Failed,
        "{:?}",
        report.summary
    );
    let held = sims.activeplatform.corrections();
    assert_eq!(held.len(), 4, "one correction per line: {held:?}");
    let comments: BTreeSet<&str> = held.iter().map(|c| c.comment.as_str()).collect();
    assert_eq!(comments.len(), 4, "no line was sent twice: {held:?}");
    let lines = app.store.ledger_lines(period(), None).await.unwrap();
    assert!(lines.iter().all(|l| l.status == LineStatus::Pushed));
    let ids: BTreeSet<String> = lines.iter().filter_map(|l| l.external_id.clone()).collect();
    let held_ids: BTreeSet<String> = held.iter().map(|c| c.id.to_string()).collect();
    assert_eq!(ids, held_ids, "the ledger knows every correction's id");
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_found_twice_or_not_at_all_are_exceptions_naming_the_candidates() {
    let sims = sims().await;
    let app = app(&sims, |settings| {
        // Globex's Genesys org → an e-mail two ActivePlatform accounts share.
        let customers = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        let mut map = std::fs::read_to_string(&settings.billing.customers_file).unwrap();
        map = map.replace(
            "genesys,8A0C9E7D-1B2F-4C3D-8E4F-61EBE0000002,2000041",
            "genesys,8A0C9E7D-1B2F-4C3D-8E4F-61EBE0000002,finance@umbrella.example",
        );
        let path = customers.keep().unwrap();
        std::fs::write(&path, map).unwrap();
        settings.billing.customers_file = path;
        settings
            .billing
            .accounts
            .push(tally::config::AccountSettings {
                id: "finance@umbrella.example".to_owned(),
                currency: None,
                sink: Some("activeplatform".to_owned()),
            });
    })
    .await;
    let report = pipeline::run(&app, &options(Some("genesys")))
        .await
        .unwrap();
    let ambiguous: Vec<_> = report
        .exceptions
        .iter()
        .filter(|e| e.kind == ExceptionKind::UnmappedCustomer)
        .collect();
    assert_eq!(ambiguous.len(), 3, "{:?}", report.exceptions);
    for e in &ambiguous {
        assert!(
            e.message.contains("2000063") && e.message.contains("2000070"),
            "names both candidates: {}",
            e.message
        );
    }
    let lines = ledger(&app).await;
    assert!(
        lines.keys().all(|(account, _, _)| account != "2000041"),
        "nothing of the ambiguous customer is billed: {lines:?}"
    );
    assert!(
        sims.activeplatform
            .corrections()
            .iter()
            .all(|c| c.account_id != 2000063 && c.account_id != 2000070)
    );

    // A CCC service whose GUID no account holds, and that the map does not know.
    let sims2 = self::sims().await;
    sims2.ccc.add_service(
        "0badc0de-0000-4000-8000-000000000099",
        tally::sim::ccc::CccUser::generate(1, 3, period()),
    );
    let app2 = self::app(&sims2, |settings: &mut Settings| {
        if let Some(ccc) = settings.sources.ccc.as_mut() {
            ccc.services
                .push("0badc0de-0000-4000-8000-000000000099".to_owned());
        }
    })
    .await;
    let report = pipeline::run(&app2, &options(Some("ccc"))).await.unwrap();
    let unknown: Vec<_> = report
        .exceptions
        .iter()
        .filter(|e| e.customer_key.contains("0badc0de"))
        .collect();
    assert!(!unknown.is_empty(), "{:?}", report.exceptions);
    assert!(
        unknown
            .iter()
            .all(|e| e.kind == ExceptionKind::UnmappedCustomer
                && e.message.contains("tally_customer_key")),
        "{unknown:?}"
    );
    assert_eq!(
        report.summary.lines_pushed, 4,
        "the known services are billed"
    );

    // Someone sets the attribute on a new ActivePlatform account: the next run of the same
    // process (the daemon's) looks again and bills the service there.
    sims2
        .activeplatform
        .add_account(tally::sim::activeplatform::ApAccount {
            id: 2_000_099,
            name: "Bad Code Ltd".to_owned(),
            email: "billing@badcode.example".to_owned(),
            status: "active".to_owned(),
            custom_attributes: tally::sim::activeplatform::CustomAttributes::map(&[(
                "tally_customer_key",
                "0BADC0DE-0000-4000-8000-000000000099",
            )]),
        });
    let report = pipeline::run(&app2, &options(Some("ccc"))).await.unwrap();
    assert!(
        report
            .exceptions
            .iter()
            .all(|e| !e.customer_key.contains("0badc0de")),
        "{:?}",
        report.exceptions
    );
    assert!(report.summary.lines_pushed >= 1, "{:?}", report.summary);
    assert!(
        sims2
            .activeplatform
            .corrections()
            .iter()
            .any(|c| c.account_id == 2_000_099)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_csv_form_of_the_billable_users_bills_exactly_what_the_json_form_bills() {
    let sims = sims().await;
    let json = app(&sims, |_| {}).await;
    pipeline::run(&json, &options(Some("billable_users")))
        .await
        .unwrap();
    let csv = app(&sims, |settings| {
        settings.sources.billable_users.as_mut().unwrap().format = Format::Csv;
    })
    .await;
    pipeline::run(&csv, &options(Some("billable_users")))
        .await
        .unwrap();
    let json_lines = ledger(&json).await;
    assert_eq!(json_lines.len(), 4);
    assert_eq!(json_lines, ledger(&csv).await);
    let json_report = pipeline::run(&json, &options(Some("billable_users")))
        .await
        .unwrap();
    let csv_report = pipeline::run(&csv, &options(Some("billable_users")))
        .await
        .unwrap();
    assert_eq!(
        json_report.summary.records_read,
        csv_report.summary.records_read
    );
    assert_eq!(json_report.summary.totals, csv_report.summary.totals);
}

/// The demo month pushed, then one customer leaves each billing system: Acme Corporation's
/// people stop appearing in the billable-users API (RamBase, plan 100001) and Acme's CCC service
/// has no users any more (ActivePlatform account 2000036).
async fn pushed_then_customers_leave(sims: &RunningSims, app: &App) {
    let first = pipeline::run(app, &options(None)).await.unwrap();
    assert_eq!(first.summary.lines_pushed, 12, "{:?}", first.summary);
    let stayed: Vec<_> = sims
        .billable_users
        .people(period())
        .into_iter()
        .filter(|p| p.organization != "Acme Corporation")
        .collect();
    sims.billable_users.set_people(period(), stayed);
    sims.ccc
        .add_service("a1c3e5f7-0b2d-4e6f-8a1c-3e5f7a9b0001", Vec::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_line_whose_records_vanish_is_reversed_once_where_it_was_pushed() {
    let sims = sims().await;
    let app = app(&sims, |_| {}).await;
    pushed_then_customers_leave(&sims, &app).await;
    let corrections_before = corrections(&sims);

    let rerun = pipeline::run(&app, &options(None)).await.unwrap();
    assert!(
        rerun.summary.errors.is_empty(),
        "nothing may fail: {:?}",
        rerun.summary.errors
    );
    // RamBase: a negative usage on the plan item the line was pushed to.
    let mut usages: Vec<(u64, i64)> = sims
        .rambase
        .usages()
        .iter()
        .map(|u| (u.plan_id, u.quantity))
        .collect();
    usages.sort();
    assert_eq!(
        usages,
        vec![
            (100001, -12),
            (100001, 12),
            (100002, 7),
            (100003, 25),
            (100004, 3)
        ]
    );
    // ActivePlatform: a negative correction of each of the CCC service's two lines, on Acme's
    // account.
    let mut new: Vec<(u64, String)> = corrections(&sims);
    for old in &corrections_before {
        let at = new.iter().position(|c| c == old).expect("kept");
        new.remove(at);
    }
    new.sort();
    assert_eq!(
        new,
        vec![
            (2000036, "-7.50".to_owned()),
            (2000036, "-72.00".to_owned())
        ]
    );
    assert_eq!(rerun.summary.lines_pushed, 3);

    // The reversals say why, and the ledger's totals of both lines are zero.
    let lines = app.store.ledger_lines(period(), None).await.unwrap();
    let reversals: Vec<_> = lines.iter().filter(|l| l.revision == 2).collect();
    assert_eq!(reversals.len(), 3);
    for r in &reversals {
        assert_eq!(
            r.trace.reason().as_deref(),
            Some(tally::domain::REVERSAL_REASON)
        );
        assert_eq!(r.total_amount, Decimal::ZERO);
        assert_eq!(r.status, LineStatus::Pushed);
    }
    let sinks: BTreeSet<&str> = reversals.iter().map(|r| r.sink.as_str()).collect();
    assert_eq!(sinks, BTreeSet::from(["activeplatform", "rambase"]));

    // The next run of the month pushes nothing and does not fail.
    let again = pipeline::run(&app, &options(None)).await.unwrap();
    assert_eq!(again.summary.lines_pushed, 0, "{:?}", again.summary);
    assert_ne!(
        again.summary.status,
        RunStatus::Failed,
        "{:?}",
        again.summary
    );
    assert_eq!(sims.rambase.usages().len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_or_unselected_source_reverses_nothing() {
    let sims = sims().await;
    let app = app(&sims, |_| {}).await;
    pushed_then_customers_leave(&sims, &app).await;
    let corrections_before = corrections(&sims);

    // Only CCC runs: billable users' vanished Acme line is not its business.
    let ccc_only = pipeline::run(&app, &options(Some("ccc"))).await.unwrap();
    assert_eq!(ccc_only.summary.lines_pushed, 2, "the CCC reversals only");
    assert_eq!(sims.rambase.usages().len(), 4, "RamBase untouched");

    // Billable users fails: its lines stay as pushed.
    sims.billable_users.fail_next(1000, 503);
    let failed = pipeline::run(&app, &options(Some("billable_users")))
        .await
        .unwrap();
    assert_eq!(failed.summary.status, RunStatus::Failed);
    assert_eq!(sims.rambase.usages().len(), 4, "nothing reversed");
    assert_eq!(corrections(&sims).len(), corrections_before.len() + 2);
}
