//! The store's story, told once and run against both backends: Postgres (a fresh database on the
//! server of `DATABASE_URL`) and a SQLite file in a temporary folder.
//!
//! Each story is an async fn taking a connected `Store` (and its target); `both_backends!` makes a
//! `postgres::<story>` and a `sqlite::<story>` test of it.

use futures_util::TryStreamExt as _;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use tally::domain::{
    BillingAccount, Currency, Evidence, ExceptionKind, LedgerChange, LedgerLine, LicenseType,
    LineKey, LineStatus, NewRevision, Period, RunException, RunStatus, RunSummary, Sample,
    SourceName, StagedQuantity, StagedRecord, Trace, Trigger,
};
use tally::store::{Busy, DatabaseTarget, PageToStage, PlanFeed, PushScope, Store};

macro_rules! both_backends {
    ($($story:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $story() {
                    let target = crate::common::fresh_postgres().await;
                    let store = tally::store::Store::connect(&target)
                        .await
                        .expect("connecting to a fresh Postgres database");
                    super::$story(store, &target).await;
                }
            )*
        }

        mod sqlite {
            $(
                #[tokio::test]
                async fn $story() {
                    let dir = tempfile::tempdir().expect("a temporary folder");
                    let target = crate::common::fresh_sqlite(&dir);
                    let store = tally::store::Store::connect(&target)
                        .await
                        .expect("connecting to a fresh SQLite file");
                    super::$story(store, &target).await;
                }
            )*
        }
    };
}

both_backends!(
    migrations_are_idempotent,
    runs_are_listed_newest_first_with_their_summary,
    staging_a_page_moves_the_checkpoint_in_the_same_transaction,
    a_record_staged_twice_counts_once,
    restarting_extraction_clears_staged_records,
    staged_pages_are_read_scope_by_scope_last_page_first,
    several_pages_stage_in_one_transaction_with_the_checkpoint_past_the_last,
    large_pages_and_plans_are_written_in_batches,
    a_plan_inserts_revisions_that_read_back_exactly,
    a_plan_updates_and_deletes_drafts_in_place,
    a_plan_touching_a_sent_revision_is_refused_whole,
    a_plan_fed_in_batches_is_one_transaction,
    exceptions_are_replaced_per_period_and_source,
    approval_moves_drafts_for_all_or_one_customer,
    a_push_goes_through_two_phases,
    lines_to_push_are_approved_and_pushing_revisions,
    the_push_queue_takes_pushing_revisions_first_then_reads_them_in_its_order,
    the_ledger_to_plan_leaves_out_what_planning_never_reads,
    the_ledger_to_plan_comes_in_the_order_reconcile_walks_the_lines,
    sent_quantities_are_those_the_billing_systems_may_hold,
    the_writer_lease_has_one_holder_at_a_time,
    a_busy_writer_is_told_who_holds_the_lease,
    runs_of_dead_processes_are_marked_abandoned_by_the_next_writer,
    the_last_pushed_amount_of_a_line_is_its_newest_pushed_total_before_the_period,
    drafts_waiting_are_counted_per_source,
    a_reread_writes_only_from_the_first_page_that_differs,
    a_reread_of_a_shorter_listing_drops_the_pages_past_its_end,
);

// ---- fixtures -------------------------------------------------------------------------------

fn october() -> Period {
    "2026-10".parse().expect("a period")
}

fn source(name: &str) -> SourceName {
    SourceName::new(name)
}

fn eur() -> Currency {
    "EUR".parse().expect("EUR")
}

fn record(key: &str, customer: &str, quantity: Decimal) -> StagedRecord {
    StagedRecord {
        record_key: key.to_owned(),
        customer_key: customer.to_owned(),
        item: "billable_user".to_owned(),
        quantity,
    }
}

fn key(account: &str, license: &str, source_name: &str) -> LineKey {
    LineKey {
        period: october(),
        billing_account: BillingAccount::new(account),
        license_type: LicenseType::new(license),
        source: source(source_name),
    }
}

/// A first revision: `quantity` at 1.25 EUR.
fn revision(account: &str, license: &str, source_name: &str, quantity: Decimal) -> NewRevision {
    let amount = eur().round(quantity * dec!(1.25), Default::default());
    NewRevision {
        key: key(account, license, source_name),
        revision: 1,
        quantity,
        amount,
        rate: dec!(1.25),
        currency: eur(),
        total_quantity: quantity,
        total_amount: amount,
        price_ref: "agent@2026-01-01".to_owned(),
        trace: json!({ "model": "per_unit", "steps": [{ "qty": quantity.to_string(), "rate": "1.25" }] }).into(),
        evidence: Evidence {
            record_count: 3,
            hash: "ab12".to_owned(),
            sample: Default::default(),
        },
        sink: "rambase".to_owned(),
        status: LineStatus::Draft,
        approval: None,
    }
}

fn exception(source_name: &str, kind: ExceptionKind, customer: &str) -> RunException {
    RunException {
        period: october(),
        source: source(source_name),
        kind,
        customer_key: customer.to_owned(),
        item: "Professional".to_owned(),
        billing_account: None,
        license_type: Some(LicenseType::new("Secure messaging – Professional")),
        quantity: dec!(2.50),
        record_count: 2,
        message: format!("no billing account for {customer}: add it to the customer map"),
    }
}

async fn run(store: &Store) -> i64 {
    store
        .start_run(Trigger::Manual, october(), None)
        .await
        .expect("start a run")
}

async fn insert(store: &Store, run_id: i64, revisions: Vec<NewRevision>) {
    let changes: Vec<LedgerChange> = revisions.into_iter().map(LedgerChange::Insert).collect();
    store
        .apply_plan(run_id, october(), &[], &changes, &[])
        .await
        .expect("insert revisions");
}

async fn lines(store: &Store) -> Vec<LedgerLine> {
    store.ledger_lines(october(), None).await.expect("ledger")
}

fn line<'a>(lines: &'a [LedgerLine], account: &str, license: &str) -> &'a LedgerLine {
    lines
        .iter()
        .find(|l| {
            l.key.billing_account.as_str() == account && l.key.license_type.as_str() == license
        })
        .unwrap_or_else(|| panic!("no line for {account}/{license}"))
}

/// Takes a line from draft to pushed through the real transitions.
async fn push(store: &Store, id: i64, external_id: &str) {
    store
        .approve(october(), None, "kari", None)
        .await
        .expect("approve");
    store
        .mark_pushing(id, Some("before"))
        .await
        .expect("pushing");
    store.mark_pushed(id, external_id).await.expect("pushed");
}

// ---- stories --------------------------------------------------------------------------------

async fn migrations_are_idempotent(store: Store, target: &DatabaseTarget) {
    let expected = match target {
        DatabaseTarget::Postgres(_) => "postgres",
        DatabaseTarget::Sqlite(_) => "sqlite",
    };
    assert_eq!(store.backend(), expected);
    assert_eq!(store.migrate().await.expect("migrate again"), 0);

    let again = Store::connect(target).await.expect("connect a second time");
    assert_eq!(again.migrate().await.expect("migrate"), 0);
    // The first connection's data is visible to the second: same database, schema intact.
    let run_id = run(&store).await;
    let runs = again.runs(10).await.expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].id, run_id);
}

async fn runs_are_listed_newest_first_with_their_summary(store: Store, _: &DatabaseTarget) {
    let first = store
        .start_run(Trigger::Schedule, october(), None)
        .await
        .expect("start");
    let second = store
        .start_run(Trigger::Manual, october().next(), Some("billable_users"))
        .await
        .expect("start");
    assert!(second > first);

    let summary = RunSummary {
        run_id: Some(first),
        status: RunStatus::CompletedWithExceptions,
        period: october(),
        dry_run: false,
        records_read: 1200,
        lines_created: 7,
        lines_adjusted: 1,
        lines_unchanged: 3,
        lines_pushed: 8,
        lines_waiting_approval: 4,
        lines_back_to_review: 1,
        lines_waiting_to_settle: 0,
        exceptions: 2,
        totals: BTreeMap::from([
            ("EUR".to_owned(), dec!(1234.50)),
            ("JPY".to_owned(), dec!(1235)),
        ]),
        failed_sources: vec![],
        errors: vec!["rambase: 503 after 5 tries".to_owned()],
        sources: vec![],
        warnings: vec![],
        totals_partial: false,
        customer: None,
    };
    store.finish_run(first, &summary).await.expect("finish");

    let runs = store.runs(10).await.expect("runs");
    assert_eq!(
        runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        [second, first]
    );

    let newest = &runs[0];
    assert_eq!(newest.trigger, Trigger::Manual);
    assert_eq!(newest.period, october().next());
    assert_eq!(newest.source_filter.as_deref(), Some("billable_users"));
    assert_eq!(newest.status, RunStatus::Running);
    assert_eq!(newest.finished_at, None);
    assert_eq!(newest.summary, None);

    let finished = &runs[1];
    assert_eq!(finished.trigger, Trigger::Schedule);
    assert_eq!(finished.source_filter, None);
    assert_eq!(finished.status, RunStatus::CompletedWithExceptions);
    assert!(finished.finished_at.expect("finished_at") >= finished.started_at);
    let stored = finished.summary.as_ref().expect("summary");
    assert_eq!(stored, &summary);
    assert_eq!(stored.totals["EUR"].to_string(), "1234.50");
    assert_eq!(stored.totals["JPY"].to_string(), "1235");

    assert_eq!(store.runs(1).await.expect("runs").len(), 1);
    let missing = store.finish_run(first + second + 100, &summary).await;
    assert!(missing.is_err(), "finishing an unknown run must fail");
}

async fn staging_a_page_moves_the_checkpoint_in_the_same_transaction(
    store: Store,
    _: &DatabaseTarget,
) {
    let src = source("billable_users");
    let run_id = run(&store).await;
    assert_eq!(
        store.checkpoint(&src, "all", october()).await.expect("cp"),
        None
    );

    store
        .restart_extraction(&src, "all", october(), run_id)
        .await
        .expect("restart");
    let cp = store
        .checkpoint(&src, "all", october())
        .await
        .expect("cp")
        .expect("some");
    assert_eq!(
        (cp.cursor, cp.complete, cp.pages, cp.records, cp.run_id),
        (None, false, 0, 0, run_id)
    );

    let page = [
        record("1@Acme", "Acme", dec!(1)),
        record("2@Acme", "Acme", dec!(1)),
    ];
    store
        .stage_page(&src, "all", october(), run_id, &page, Some("page=2"))
        .await
        .expect("page 1");
    let cp = store
        .checkpoint(&src, "all", october())
        .await
        .expect("cp")
        .expect("some");
    assert_eq!(cp.cursor.as_deref(), Some("page=2"));
    assert!(!cp.complete);
    assert_eq!((cp.pages, cp.records), (1, 2));

    // A page that cannot be written leaves neither records nor a moved checkpoint behind.
    let no_such_run = run_id + 1000;
    let failed = store
        .stage_page(
            &src,
            "all",
            october(),
            no_such_run,
            &[record("3@Acme", "Acme", dec!(1))],
            None,
        )
        .await;
    assert!(failed.is_err(), "a page of an unknown run must fail");
    let cp = store
        .checkpoint(&src, "all", october())
        .await
        .expect("cp")
        .expect("some");
    assert_eq!(
        (cp.cursor.as_deref(), cp.complete, cp.pages, cp.records),
        (Some("page=2"), false, 1, 2)
    );
    assert_eq!(
        store
            .staged_records(&src, october())
            .await
            .expect("staged")
            .len(),
        2
    );

    store
        .stage_page(
            &src,
            "all",
            october(),
            run_id,
            &[record("3@Acme", "Acme", dec!(1))],
            None,
        )
        .await
        .expect("last page");
    let cp = store
        .checkpoint(&src, "all", october())
        .await
        .expect("cp")
        .expect("some");
    assert_eq!(
        (cp.cursor, cp.complete, cp.pages, cp.records),
        (None, true, 2, 3)
    );
    // An empty last page still ends the extraction.
    store
        .stage_page(&src, "empty", october(), run_id, &[], None)
        .await
        .expect("empty page");
    let cp = store
        .checkpoint(&src, "empty", october())
        .await
        .expect("cp")
        .expect("some");
    assert_eq!(
        (cp.cursor, cp.complete, cp.pages, cp.records),
        (None, true, 1, 0)
    );
    // Another scope of the same source has its own checkpoint.
    assert_eq!(
        store
            .checkpoint(&src, "other", october())
            .await
            .expect("cp"),
        None
    );
}

async fn a_record_staged_twice_counts_once(store: Store, _: &DatabaseTarget) {
    let src = source("billable_users");
    let run_id = run(&store).await;
    store
        .stage_page(
            &src,
            "all",
            october(),
            run_id,
            &[record("1", "Acme", dec!(1)), record("2", "Acme", dec!(1))],
            Some("2"),
        )
        .await
        .expect("page 1");

    // Record 2 again on the next page (changed), and record 3 twice on the same page.
    store
        .stage_page(
            &src,
            "all",
            october(),
            run_id,
            &[
                record("2", "Beta", dec!(1.5)),
                record("3", "Acme", dec!(1)),
                record("3", "Acme", dec!(2)),
            ],
            None,
        )
        .await
        .expect("page 2");

    let staged = store.staged_records(&src, october()).await.expect("staged");
    let keys: Vec<&str> = staged.iter().map(|r| r.record_key.as_str()).collect();
    assert_eq!(keys, ["1", "2", "3"]);
    let two = &staged[1];
    assert_eq!(two.customer_key, "Beta");
    assert_eq!(two.quantity.to_string(), "1.5");
    assert_eq!(
        staged[2].quantity,
        dec!(2),
        "the last listing of a record wins"
    );
    let total: Decimal = staged.iter().map(|r| r.quantity).sum();
    assert_eq!(total, dec!(4.5));
    // The checkpoint counts what was received.
    let cp = store
        .checkpoint(&src, "all", october())
        .await
        .expect("cp")
        .expect("some");
    assert_eq!((cp.pages, cp.records, cp.complete), (2, 5, true));
}

async fn restarting_extraction_clears_staged_records(store: Store, _: &DatabaseTarget) {
    let src = source("billable_users");
    let first_run = run(&store).await;
    for scope in ["a", "b"] {
        store
            .stage_page(
                &src,
                scope,
                october(),
                first_run,
                &[record("1", "Acme", dec!(1))],
                Some("next"),
            )
            .await
            .expect("page");
    }
    let second_run = run(&store).await;
    store
        .restart_extraction(&src, "a", october(), second_run)
        .await
        .expect("restart");

    let staged = store.staged_records(&src, october()).await.expect("staged");
    assert_eq!(staged.len(), 1, "only scope b's record is left");
    let cp = store
        .checkpoint(&src, "a", october())
        .await
        .expect("cp")
        .expect("some");
    assert_eq!(
        (cp.cursor, cp.complete, cp.pages, cp.records, cp.run_id),
        (None, false, 0, 0, second_run)
    );
    let untouched = store
        .checkpoint(&src, "b", october())
        .await
        .expect("cp")
        .expect("some");
    assert_eq!(
        (
            untouched.cursor.as_deref(),
            untouched.pages,
            untouched.run_id
        ),
        (Some("next"), 1, first_run)
    );
}

async fn staged_pages_are_read_scope_by_scope_last_page_first(store: Store, _: &DatabaseTarget) {
    let src = source("genesys");
    let run_id = run(&store).await;
    let scope_a: Vec<StagedRecord> = (1..=5)
        .map(|n| record(&format!("a{n}"), "org-1", Decimal::new(n * 25, 2)))
        .collect();
    let scope_b = [
        record("b1", "org-2", dec!(0.25)),
        record("b2", "org-2", dec!(7)),
    ];
    store
        .stage_page(&src, "a", october(), run_id, &scope_a, None)
        .await
        .expect("a");
    store
        .stage_page(&src, "b", october(), run_id, &scope_b, None)
        .await
        .expect("b");
    // Neither another source nor another period is read.
    store
        .stage_page(&source("ccc"), "a", october(), run_id, &scope_b, None)
        .await
        .expect("other source");
    store
        .stage_page(&src, "a", october().next(), run_id, &scope_b, None)
        .await
        .expect("other period");

    let mut seen = Vec::new();
    let mut pages = Vec::new();
    store
        .for_each_staged_page(&src, october(), None, |scope, page, records| {
            pages.push((scope.to_owned(), page, records.len()));
            seen.extend(records);
            Ok(())
        })
        .await
        .expect("pages");
    assert_eq!(pages, [("a".to_owned(), 1, 5), ("b".to_owned(), 1, 2)]);
    let keys: Vec<&str> = seen.iter().map(|r| r.record_key.as_str()).collect();
    assert_eq!(keys, ["a1", "a2", "a3", "a4", "a5", "b1", "b2"]);
    let slim = |r: &StagedRecord| StagedQuantity {
        record_key: r.record_key.clone(),
        customer_key: r.customer_key.clone(),
        item: r.item.clone(),
        quantity: r.quantity,
    };
    assert_eq!(seen[0], slim(&scope_a[0]), "read back as staged");
    assert_eq!(seen[0].quantity.to_string(), "0.25");
    assert_eq!(seen[3].quantity.to_string(), "1.00");
    assert_eq!(seen[5], slim(&scope_b[0]));
}

async fn several_pages_stage_in_one_transaction_with_the_checkpoint_past_the_last(
    store: Store,
    _: &DatabaseTarget,
) {
    let src = source("billable_users");
    let run_id = run(&store).await;
    store
        .restart_extraction(&src, "acct", october(), run_id)
        .await
        .expect("restart");
    let one = [record("1@A", "A", dec!(1)), record("2@A", "A", dec!(1))];
    // Person 2 is listed again on the next page (the list moved while it was read): once.
    let two = [record("2@A", "A", dec!(1)), record("3@B", "B", dec!(1))];
    let three = [record("4@B", "B", dec!(1))];
    let pages = [
        PageToStage {
            page: 1,
            records: &one,
            next_cursor: Some("2"),
        },
        PageToStage {
            page: 2,
            records: &two,
            next_cursor: Some("3"),
        },
    ];
    store
        .stage_pages(&src, "acct", october(), run_id, &pages)
        .await
        .expect("pages 1-2");
    let cp = store
        .checkpoint(&src, "acct", october())
        .await
        .expect("checkpoint")
        .expect("exists");
    assert_eq!(
        (cp.cursor.as_deref(), cp.complete, cp.pages, cp.records),
        (Some("3"), false, 2, 4),
        "the checkpoint claims both pages and the four entries received"
    );
    let last = [PageToStage {
        page: 3,
        records: &three,
        next_cursor: None,
    }];
    store
        .stage_pages(&src, "acct", october(), run_id, &last)
        .await
        .expect("page 3");
    let cp = store
        .checkpoint(&src, "acct", october())
        .await
        .expect("checkpoint")
        .expect("exists");
    assert_eq!((cp.cursor, cp.complete, cp.pages), (None, true, 3));
    let staged = store.staged_records(&src, october()).await.expect("staged");
    let mut keys: Vec<&str> = staged.iter().map(|r| r.record_key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["1@A", "2@A", "3@B", "4@B"], "person 2 staged once");
}

async fn large_pages_and_plans_are_written_in_batches(store: Store, _: &DatabaseTarget) {
    let src = source("billable_users");
    let run_id = run(&store).await;
    let page: Vec<StagedRecord> = (0..2500)
        .map(|n| record(&format!("{n}@Acme"), "Acme", dec!(1)))
        .collect();
    store
        .stage_page(&src, "all", october(), run_id, &page, None)
        .await
        .expect("big page");
    let staged = store.staged_records(&src, october()).await.expect("staged");
    assert_eq!(staged.len(), 2500);

    let revisions: Vec<NewRevision> = (0..1500)
        .map(|n| revision(&format!("C{n:04}"), "Agent", "billable_users", dec!(2)))
        .collect();
    insert(&store, run_id, revisions).await;
    let ledger = lines(&store).await;
    assert_eq!(ledger.len(), 1500);
    assert_eq!(
        ledger.iter().map(|l| l.amount).sum::<Decimal>(),
        dec!(3750.00)
    );
}

async fn a_plan_inserts_revisions_that_read_back_exactly(store: Store, _: &DatabaseTarget) {
    let run_id = run(&store).await;
    let agent = revision("C-1", "Service desk agent", "billable_users", dec!(10));
    let mut yen = revision("C-2", "Secure messaging – Professional", "ccc", dec!(3));
    yen.currency = "JPY".parse().expect("JPY");
    yen.rate = dec!(411.5);
    yen.amount = dec!(1235);
    yen.total_amount = dec!(1235);
    yen.status = LineStatus::Approved;
    insert(&store, run_id, vec![agent.clone(), yen.clone()]).await;

    let ledger = lines(&store).await;
    assert_eq!(ledger.len(), 2);
    let got = line(&ledger, "C-1", "Service desk agent");
    assert_eq!(got.key, agent.key);
    assert_eq!(got.revision, 1);
    assert_eq!(got.idempotency_key, agent.key.idempotency_key(1));
    assert_eq!(got.quantity.to_string(), "10");
    assert_eq!(
        got.amount.to_string(),
        "12.50",
        "the scale of money is kept"
    );
    assert_eq!(got.rate.to_string(), "1.25");
    assert_eq!(got.total_amount.to_string(), "12.50");
    assert_eq!(got.currency, eur());
    assert_eq!(got.trace, agent.trace);
    assert_eq!(got.evidence, agent.evidence);
    assert_eq!(got.price_ref, "agent@2026-01-01");
    assert_eq!(got.sink, "rambase");
    assert_eq!(got.status, LineStatus::Draft);
    assert_eq!(
        (
            got.external_id.as_ref(),
            got.push_marker.as_ref(),
            got.last_error.as_ref()
        ),
        (None, None, None)
    );
    assert_eq!(got.run_id, run_id);
    assert_eq!(got.pushed_at, None);
    assert_eq!(got.created_at, got.updated_at);

    let got = line(&ledger, "C-2", "Secure messaging – Professional");
    assert_eq!(got.currency.code(), "JPY");
    assert_eq!(got.amount.to_string(), "1235");
    assert_eq!(got.rate.to_string(), "411.5");
    assert_eq!(got.status, LineStatus::Approved);

    // Filtered by source; ordered by line key (period/source/account/license) then revision.
    let ccc = store
        .ledger_lines(october(), Some(&source("ccc")))
        .await
        .expect("ccc");
    assert_eq!(ccc.len(), 1);
    assert_eq!(ccc[0].key.source.as_str(), "ccc");
    let keys: Vec<String> = ledger.iter().map(|l| l.key.to_string()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert!(
        store
            .ledger_lines(october().next(), None)
            .await
            .expect("empty")
            .is_empty()
    );

    // An adjustment is its own revision and key; the ledger lists it after the first.
    let first_id = line(&ledger, "C-1", "Service desk agent").id;
    push(&store, first_id, "U-1").await;
    let mut adjustment = revision("C-1", "Service desk agent", "billable_users", dec!(-2));
    adjustment.revision = 2;
    adjustment.total_quantity = dec!(8);
    adjustment.total_amount = dec!(10.00);
    insert(&store, run_id, vec![adjustment]).await;
    let history = store
        .ledger_lines(october(), Some(&source("billable_users")))
        .await
        .expect("ledger");
    assert_eq!(
        history.iter().map(|l| l.revision).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(history[1].amount.to_string(), "-2.50");
    assert_eq!(history[1].total_amount.to_string(), "10.00");
    assert_eq!(history[1].idempotency_key, agent.key.idempotency_key(2));

    // The same revision twice is refused by the ledger's keys.
    let again = store
        .apply_plan(run_id, october(), &[], &[LedgerChange::Insert(agent)], &[])
        .await;
    assert!(again.is_err(), "a revision is written once");
}

async fn a_plan_updates_and_deletes_drafts_in_place(store: Store, _: &DatabaseTarget) {
    let first_run = run(&store).await;
    insert(
        &store,
        first_run,
        vec![
            revision("C-1", "Agent", "billable_users", dec!(10)),
            revision("C-2", "Agent", "billable_users", dec!(4)),
        ],
    )
    .await;
    let before = lines(&store).await;
    let kept = line(&before, "C-1", "Agent").clone();
    let dropped = line(&before, "C-2", "Agent").id;

    let second_run = run(&store).await;
    let mut values = revision("C-1", "Agent", "billable_users", dec!(11));
    values.trace = json!({ "model": "per_unit", "rerun": true }).into();
    values.evidence = Evidence {
        record_count: 4,
        hash: "cd34".to_owned(),
        sample: Default::default(),
    };
    store
        .apply_plan(
            second_run,
            october(),
            &[],
            &[
                LedgerChange::Update {
                    id: kept.id,
                    values,
                    back_to_review: false,
                },
                LedgerChange::Delete { id: dropped },
            ],
            &[],
        )
        .await
        .expect("update and delete");

    let after = lines(&store).await;
    assert_eq!(after.len(), 1);
    let updated = &after[0];
    assert_eq!(updated.id, kept.id, "updated in place");
    assert_eq!(updated.revision, 1);
    assert_eq!(updated.idempotency_key, kept.idempotency_key);
    assert_eq!(updated.quantity, dec!(11));
    assert_eq!(updated.amount.to_string(), "13.75");
    assert_eq!(updated.total_amount.to_string(), "13.75");
    assert_eq!(
        updated.trace.to_value(),
        json!({ "model": "per_unit", "rerun": true })
    );
    assert_eq!(updated.evidence.record_count, 4);
    assert_eq!(updated.run_id, second_run);
    assert_eq!(updated.created_at, kept.created_at);
    assert!(updated.updated_at >= kept.updated_at);

    // An approved revision may still be updated in place.
    store
        .approve(october(), None, "kari", None)
        .await
        .expect("approve");
    let values = revision("C-1", "Agent", "billable_users", dec!(12));
    store
        .apply_plan(
            second_run,
            october(),
            &[],
            &[LedgerChange::Update {
                id: kept.id,
                values,
                back_to_review: true,
            }],
            &[],
        )
        .await
        .expect("update an approved revision");
    assert_eq!(lines(&store).await[0].amount.to_string(), "15.00");
    // Its figures changed after the approval, so it waits again, marked back in review until
    // it is approved again.
    assert_eq!(lines(&store).await[0].status, LineStatus::Draft);
    assert_eq!(
        store.back_to_review_ids(october()).await.unwrap(),
        std::collections::BTreeSet::from([kept.id]),
        "an approval the new figures took away is marked on the revision"
    );
    store
        .approve(october(), None, "kari", Some("checked again"))
        .await
        .expect("approve again");
    assert!(
        store
            .back_to_review_ids(october())
            .await
            .unwrap()
            .is_empty(),
        "approved again: no longer back in review"
    );

    // An update that names another line's revision is refused.
    let values = revision("C-9", "Agent", "billable_users", dec!(1));
    let wrong = store
        .apply_plan(
            second_run,
            october(),
            &[],
            &[LedgerChange::Update {
                id: kept.id,
                values,
                back_to_review: false,
            }],
            &[],
        )
        .await;
    assert!(wrong.is_err(), "an update must match the revision's key");
}

async fn a_plan_touching_a_sent_revision_is_refused_whole(store: Store, _: &DatabaseTarget) {
    let run_id = run(&store).await;
    insert(
        &store,
        run_id,
        vec![
            revision("C-1", "Agent", "billable_users", dec!(10)),
            revision("C-2", "Agent", "billable_users", dec!(4)),
            revision("C-3", "Agent", "billable_users", dec!(1)),
            revision("C-5", "Agent", "billable_users", dec!(1)),
        ],
    )
    .await;
    let ledger = lines(&store).await;
    let pushed = line(&ledger, "C-1", "Agent").id;
    let unsent = line(&ledger, "C-2", "Agent").id;
    let pushing = line(&ledger, "C-3", "Agent").id;
    let unsent_too = line(&ledger, "C-5", "Agent").id;
    push(&store, pushed, "U-1").await;
    store.mark_pushing(pushing, None).await.expect("pushing");
    let old_exceptions = vec![exception(
        "billable_users",
        ExceptionKind::UnmappedCustomer,
        "Old Org",
    )];
    store
        .apply_plan(
            run_id,
            october(),
            &[source("billable_users")],
            &[],
            &old_exceptions,
        )
        .await
        .expect("exceptions");
    let before = lines(&store).await;

    let new_exceptions = vec![exception(
        "billable_users",
        ExceptionKind::NoPrice,
        "New Org",
    )];
    let plans = [
        (
            "update of a pushed revision",
            LedgerChange::Update {
                id: pushed,
                values: revision("C-1", "Agent", "billable_users", dec!(99)),
                back_to_review: false,
            },
            "pushed",
        ),
        (
            "delete of a pushed revision",
            LedgerChange::Delete { id: pushed },
            "pushed",
        ),
        (
            "delete of a pushing revision",
            LedgerChange::Delete { id: pushing },
            "pushing",
        ),
        (
            "update of a pushing revision",
            LedgerChange::Update {
                id: pushing,
                values: revision("C-3", "Agent", "billable_users", dec!(2)),
                back_to_review: false,
            },
            "pushing",
        ),
    ];
    for (what, refused, status) in plans {
        // Valid changes of every kind next to the refused one: all are rolled back.
        let changes = vec![
            LedgerChange::Delete { id: unsent_too },
            LedgerChange::Update {
                id: unsent,
                values: revision("C-2", "Agent", "billable_users", dec!(5)),
                back_to_review: false,
            },
            LedgerChange::Insert(revision("C-4", "Agent", "billable_users", dec!(1))),
            refused,
        ];
        let error = store
            .apply_plan(
                run_id,
                october(),
                &[source("billable_users")],
                &changes,
                &new_exceptions,
            )
            .await
            .expect_err(what);
        let message = format!("{error:#}");
        assert!(message.contains(status), "{what}: {message}");

        assert_eq!(
            lines(&store).await,
            before,
            "{what}: nothing of the plan is written"
        );
        assert_eq!(
            store.exceptions(october()).await.expect("exceptions"),
            old_exceptions,
            "{what}: the exceptions are kept"
        );
    }

    // A plan that would write a revision as already sent is refused before anything is written.
    let mut sent = revision("C-5", "Agent", "billable_users", dec!(1));
    sent.status = LineStatus::Pushed;
    assert!(
        store
            .apply_plan(run_id, october(), &[], &[LedgerChange::Insert(sent)], &[])
            .await
            .is_err()
    );
    assert_eq!(lines(&store).await, before);
}

/// A plan fed batch by batch, as a run writes it while planning, and what the store asked.
struct Batches {
    batches: std::vec::IntoIter<Vec<LedgerChange>>,
    exceptions: Vec<RunException>,
    /// Batches handed over before the exceptions were asked.
    fed_before_exceptions: Option<usize>,
    fed: usize,
}

impl Batches {
    fn new(batches: Vec<Vec<LedgerChange>>, exceptions: Vec<RunException>) -> Self {
        Batches {
            batches: batches.into_iter(),
            exceptions,
            fed_before_exceptions: None,
            fed: 0,
        }
    }
}

impl PlanFeed for Batches {
    async fn next_changes(&mut self) -> anyhow::Result<Option<Vec<LedgerChange>>> {
        let next = self.batches.next();
        self.fed += usize::from(next.is_some());
        Ok(next)
    }

    fn exceptions(&mut self) -> Vec<RunException> {
        self.fed_before_exceptions = Some(self.fed);
        std::mem::take(&mut self.exceptions)
    }
}

async fn a_plan_fed_in_batches_is_one_transaction(store: Store, _: &DatabaseTarget) {
    let run_id = run(&store).await;
    let users = [source("billable_users")];
    let insert =
        |account: &str| LedgerChange::Insert(revision(account, "Agent", "billable_users", dec!(1)));

    // A later batch refused: the batches written before it are rolled back with it.
    let mut sent = revision("C-9", "Agent", "billable_users", dec!(1));
    sent.status = LineStatus::Pushed;
    let mut refused = Batches::new(
        vec![
            vec![insert("C-1"), insert("C-2")],
            vec![LedgerChange::Insert(sent)],
        ],
        vec![],
    );
    let error = store
        .apply_plan_fed(run_id, october(), &users, &mut refused)
        .await
        .expect_err("a revision planned as pushed");
    assert!(
        format!("{error:#}").contains("Nothing of the plan was written"),
        "{error:#}"
    );
    assert!(
        lines(&store).await.is_empty(),
        "nothing of the plan is written"
    );

    // An exception outside the sources, known only after the last batch, refuses them all.
    let mut outside = Batches::new(
        vec![vec![insert("C-1")], vec![insert("C-2")]],
        vec![exception("ccc", ExceptionKind::NoPrice, "Org")],
    );
    let error = store
        .apply_plan_fed(run_id, october(), &users, &mut outside)
        .await
        .expect_err("an exception of another source");
    assert!(format!("{error:#}").contains("outside the (period, sources)"));
    assert_eq!(
        outside.fed_before_exceptions,
        Some(2),
        "asked after the last batch"
    );
    assert!(
        lines(&store).await.is_empty(),
        "nothing of the plan is written"
    );
    assert!(
        store
            .exceptions(october())
            .await
            .expect("exceptions")
            .is_empty()
    );

    // Three batches and the exceptions: all of it written, as one plan given whole would be.
    let found = vec![exception("billable_users", ExceptionKind::NoPrice, "Org")];
    let mut fed = Batches::new(
        vec![
            vec![insert("C-1"), insert("C-2")],
            vec![insert("C-3")],
            vec![insert("C-4"), insert("C-5")],
        ],
        found.clone(),
    );
    store
        .apply_plan_fed(run_id, october(), &users, &mut fed)
        .await
        .expect("applying the batches");
    let written: Vec<String> = lines(&store)
        .await
        .iter()
        .map(|l| l.key.billing_account.to_string())
        .collect();
    assert_eq!(written, ["C-1", "C-2", "C-3", "C-4", "C-5"]);
    assert_eq!(
        store.exceptions(october()).await.expect("exceptions"),
        found
    );
}

async fn exceptions_are_replaced_per_period_and_source(store: Store, _: &DatabaseTarget) {
    let run_id = run(&store).await;
    let users = source("billable_users");
    let genesys = source("genesys");
    let first = vec![
        exception("billable_users", ExceptionKind::UnmappedLicense, "Zeta"),
        exception("billable_users", ExceptionKind::UnmappedCustomer, "Acme"),
    ];
    store
        .apply_plan(run_id, october(), std::slice::from_ref(&users), &[], &first)
        .await
        .expect("first");
    let mut theirs = exception("genesys", ExceptionKind::NotBillable, "org-1");
    theirs.billing_account = Some(BillingAccount::new("10042"));
    theirs.quantity = dec!(0.5);
    store
        .apply_plan(
            run_id,
            october(),
            std::slice::from_ref(&genesys),
            &[],
            std::slice::from_ref(&theirs),
        )
        .await
        .expect("genesys");
    let mut november = exception("billable_users", ExceptionKind::NoPrice, "Acme");
    november.period = october().next();
    store
        .apply_plan(
            run_id,
            october().next(),
            std::slice::from_ref(&users),
            &[],
            std::slice::from_ref(&november),
        )
        .await
        .expect("november");

    // Ordered by source, kind, customer.
    let got = store.exceptions(october()).await.expect("exceptions");
    assert_eq!(
        got,
        vec![first[1].clone(), first[0].clone(), theirs.clone()]
    );
    assert_eq!(got[0].quantity.to_string(), "2.50");
    assert_eq!(got[2].quantity.to_string(), "0.5");

    // A re-run of billable_users replaces its exceptions; genesys' and November's stay.
    let rerun = vec![exception("billable_users", ExceptionKind::NoPrice, "Acme")];
    store
        .apply_plan(run_id, october(), std::slice::from_ref(&users), &[], &rerun)
        .await
        .expect("rerun");
    let got = store.exceptions(october()).await.expect("exceptions");
    assert_eq!(got, vec![rerun[0].clone(), theirs.clone()]);
    assert_eq!(
        store.exceptions(october().next()).await.expect("nov"),
        vec![november]
    );

    // A run that found nothing wrong clears its source's exceptions.
    store
        .apply_plan(run_id, october(), std::slice::from_ref(&users), &[], &[])
        .await
        .expect("clean rerun");
    assert_eq!(
        store.exceptions(october()).await.expect("exceptions"),
        vec![theirs]
    );

    // An exception of a source that is not being replaced would pile up: refused.
    let stray = store
        .apply_plan(
            run_id,
            october(),
            std::slice::from_ref(&users),
            &[],
            &[exception("ccc", ExceptionKind::NoPrice, "x")],
        )
        .await;
    assert!(stray.is_err());
}

async fn approval_moves_drafts_for_all_or_one_customer(store: Store, _: &DatabaseTarget) {
    let run_id = run(&store).await;
    insert(
        &store,
        run_id,
        vec![
            revision("A", "Agent", "billable_users", dec!(1)),
            revision("A", "Viewer", "billable_users", dec!(1)),
            revision("B", "Agent", "billable_users", dec!(1)),
        ],
    )
    .await;
    let customer = BillingAccount::new("A");
    assert_eq!(
        store
            .approve(
                october(),
                Some(&customer),
                "kari",
                Some("checked against the contract")
            )
            .await
            .expect("approve A")
            .len(),
        2
    );
    let approved = lines(&store).await;
    let approval = approved[0]
        .approval
        .as_ref()
        .expect("who approved is recorded");
    assert_eq!(approval.by, "kari");
    assert_eq!(
        approval.note.as_deref(),
        Some("checked against the contract")
    );
    assert!(approved[2].approval.is_none(), "B is still a draft");
    let statuses = |ledger: Vec<LedgerLine>| {
        ledger
            .into_iter()
            .map(|l| (l.key.billing_account.to_string(), l.status))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        statuses(lines(&store).await),
        [
            ("A".to_owned(), LineStatus::Approved),
            ("A".to_owned(), LineStatus::Approved),
            ("B".to_owned(), LineStatus::Draft)
        ]
    );
    assert_eq!(
        store
            .approve(october().next(), None, "kari", None)
            .await
            .expect("other period")
            .len(),
        0
    );
    let rest = store
        .approve(october(), None, "ola", None)
        .await
        .expect("approve all");
    assert_eq!(rest.len(), 1, "only B was still a draft");
    assert_eq!(
        store
            .approve(october(), None, "kari", None)
            .await
            .expect("again"),
        Vec::<i64>::new()
    );
    assert!(
        lines(&store)
            .await
            .iter()
            .all(|l| l.status == LineStatus::Approved)
    );
}

async fn a_push_goes_through_two_phases(store: Store, _: &DatabaseTarget) {
    let run_id = run(&store).await;
    insert(
        &store,
        run_id,
        vec![
            revision("A", "Agent", "billable_users", dec!(1)),
            revision("B", "Agent", "billable_users", dec!(1)),
        ],
    )
    .await;
    let ledger = lines(&store).await;
    let a = line(&ledger, "A", "Agent").id;
    let b = line(&ledger, "B", "Agent").id;

    let not_approved = store
        .mark_pushing(a, None)
        .await
        .expect_err("a draft is not pushed");
    assert!(format!("{not_approved:#}").contains("draft"));
    store
        .approve(october(), None, "kari", None)
        .await
        .expect("approve");

    store
        .mark_pushing(a, Some("last usage id 41"))
        .await
        .expect("phase one");
    let got = line(&lines(&store).await, "A", "Agent").clone();
    assert_eq!(got.status, LineStatus::Pushing);
    assert_eq!(got.push_marker.as_deref(), Some("last usage id 41"));
    let twice = store
        .mark_pushing(a, None)
        .await
        .expect_err("someone else got there first");
    assert!(format!("{twice:#}").contains("pushing"));

    store
        .record_push_error(a, "503 Service Unavailable")
        .await
        .expect("error");
    let got = line(&lines(&store).await, "A", "Agent").clone();
    assert_eq!(got.last_error.as_deref(), Some("503 Service Unavailable"));
    assert_eq!(
        got.status,
        LineStatus::Pushing,
        "an error leaves the status"
    );

    store.mark_pushed(a, "U-42").await.expect("phase two");
    let got = line(&lines(&store).await, "A", "Agent").clone();
    assert_eq!(got.status, LineStatus::Pushed);
    assert_eq!(got.external_id.as_deref(), Some("U-42"));
    assert_eq!(got.last_error, None);
    assert!(got.pushed_at.is_some());
    assert_eq!(got.push_marker.as_deref(), Some("last usage id 41"));
    assert!(store.mark_pushed(a, "U-43").await.is_err(), "pushed once");
    assert!(store.mark_pushing(a, None).await.is_err());
    assert!(store.reset_to_approved(a).await.is_err());

    // A push that surely did not reach the billing system goes back through phase one.
    store
        .mark_pushing(b, Some("marker"))
        .await
        .expect("phase one");
    store.reset_to_approved(b).await.expect("reset");
    let got = line(&lines(&store).await, "B", "Agent").clone();
    assert_eq!(got.status, LineStatus::Approved);
    assert_eq!(got.push_marker, None);
    assert!(
        store.reset_to_approved(b).await.is_err(),
        "only from pushing"
    );
    assert!(
        store.mark_pushed(b, "U-44").await.is_err(),
        "only from pushing"
    );
    store.mark_pushing(b, None).await.expect("phase one again");
    store.mark_pushed(b, "U-44").await.expect("phase two");

    let missing = store
        .mark_pushing(a + b + 100, None)
        .await
        .expect_err("no such revision");
    assert!(format!("{missing:#}").contains("no ledger revision"));
    assert!(store.record_push_error(a + b + 100, "x").await.is_err());
}

/// Line keys whose text (`period/source/account/license`) and whose `LineKey` order differ, and
/// accounts that a language's collation would order otherwise ("B" before "a" byte by byte).
async fn the_ledger_to_plan_comes_in_the_order_reconcile_walks_the_lines(
    store: Store,
    _: &DatabaseTarget,
) {
    let run_id = run(&store).await;
    let mut revisions = vec![
        revision("a", "Agent", "ccc", dec!(1)),
        revision("B", "Agent", "ccc", dec!(1)),
        revision("B", "Agent", "billable_users", dec!(1)),
        revision("a", "Admin", "billable_users", dec!(1)),
        revision("Z-1", "Agent", "billable_users", dec!(1)),
    ];
    let mut adjustment = revision("B", "Agent", "ccc", dec!(2));
    adjustment.revision = 2;
    revisions.push(adjustment);
    insert(&store, run_id, revisions).await;

    let read: Vec<(LineKey, i32)> = store
        .ledger_to_plan(october())
        .map_ok(|r| (r.key, r.revision))
        .try_collect()
        .await
        .expect("the ledger");
    let mut expected = read.clone();
    expected.sort();
    assert_eq!(read, expected, "in LineKey order, then revision");
    assert_eq!(read.len(), 6);
    assert_eq!(read[0].0.billing_account.as_str(), "B");
}

async fn sent_quantities_are_those_the_billing_systems_may_hold(store: Store, _: &DatabaseTarget) {
    let run_id = run(&store).await;
    insert(
        &store,
        run_id,
        vec![
            revision("C-1", "Agent", "billable_users", dec!(10)),
            revision("C-2", "Agent", "billable_users", dec!(4)),
            revision("C-3", "Agent", "ccc", dec!(1.5)),
        ],
    )
    .await;
    let ledger = lines(&store).await;
    push(&store, line(&ledger, "C-1", "Agent").id, "U-1").await;
    let pushing = ledger
        .iter()
        .find(|l| l.key.source.as_str() == "ccc")
        .expect("C-3")
        .id;
    store.mark_pushing(pushing, None).await.expect("pushing");

    let mut sent = store.sent_quantities(october()).await.expect("sent");
    sent.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        sent,
        [
            (
                source("billable_users"),
                BillingAccount::new("C-1"),
                dec!(10)
            ),
            (source("ccc"), BillingAccount::new("C-3"), dec!(1.5)),
        ],
        "the draft C-2 is not sent"
    );
}

async fn the_ledger_to_plan_leaves_out_what_planning_never_reads(store: Store, _: &DatabaseTarget) {
    let run_id = run(&store).await;
    let with_sample = |account: &str, status: LineStatus| {
        let mut r = revision(account, "Agent", "billable_users", dec!(2));
        r.status = status;
        r.evidence.sample = Sample::from_entries([format!("7@{account} ({account}, agent)")]);
        r
    };
    insert(
        &store,
        run_id,
        vec![
            with_sample("A", LineStatus::Approved),
            with_sample("B", LineStatus::Draft),
            with_sample("C", LineStatus::Approved),
        ],
    )
    .await;
    let whole = lines(&store).await;
    let c = line(&whole, "C", "Agent").id;
    store.mark_pushing(c, None).await.expect("pushing");
    store.mark_pushed(c, "U-1").await.expect("pushed");

    let whole = lines(&store).await;
    let to_plan: Vec<LedgerLine> = store
        .ledger_to_plan(october())
        .try_collect()
        .await
        .expect("the ledger");
    assert_eq!(to_plan.len(), whole.len());
    for (read, full) in to_plan.iter().zip(&whole) {
        assert_eq!(read.id, full.id, "same revisions, same order");
        assert_eq!(
            (read.quantity, read.amount, read.status, &read.sink),
            (full.quantity, full.amount, full.status, &full.sink)
        );
        assert_eq!(
            read.evidence, full.evidence,
            "count and fingerprint are kept"
        );
        assert!(read.evidence.sample.is_empty(), "{read:?}");
        assert_eq!(full.evidence.sample.len(), 1);
        assert_eq!(
            (read.key.clone(), read.revision, read.approval.clone()),
            (full.key.clone(), full.revision, full.approval.clone())
        );
        // What only the push and the ledger's readers use is not read.
        assert_eq!(read.idempotency_key, "");
        assert!(!full.idempotency_key.is_empty());
        assert_eq!(
            (&read.external_id, &read.push_marker, &read.last_error),
            (&None, &None, &None)
        );
        if full.status == LineStatus::Pushed {
            assert_eq!(full.external_id.as_deref(), Some("U-1"));
        }
        if full.status.is_sent() {
            assert_eq!(
                read.trace,
                Trace::empty(),
                "a sent revision's trace is not read"
            );
        } else {
            assert_eq!(
                read.trace, full.trace,
                "an unsent revision's trace is compared: read"
            );
        }
    }
    assert!(whole.iter().any(|l| l.status.is_sent()));
}

async fn the_push_queue_takes_pushing_revisions_first_then_reads_them_in_its_order(
    store: Store,
    _: &DatabaseTarget,
) {
    let run_id = run(&store).await;
    let approved = |account: &str| {
        let mut r = revision(account, "Agent", "billable_users", dec!(1));
        r.status = LineStatus::Approved;
        r
    };
    let draft = revision("E", "Agent", "billable_users", dec!(1));
    insert(
        &store,
        run_id,
        vec![
            approved("A"),
            approved("B"),
            approved("C"),
            approved("D"),
            draft,
        ],
    )
    .await;
    let ledger = lines(&store).await;
    let id = |account: &str| line(&ledger, account, "Agent").id;
    // C was left `pushing` by an earlier push; D is in the billing system already.
    store.mark_pushing(id("C"), None).await.expect("pushing");
    store.mark_pushing(id("D"), None).await.expect("pushing");
    store.mark_pushed(id("D"), "U-1").await.expect("pushed");

    let queue = store
        .push_queue(october(), &PushScope::default())
        .await
        .expect("the queue");
    let ids: Vec<i64> = queue.iter().map(|q| q.id).collect();
    assert_eq!(
        ids,
        [id("C"), id("A"), id("B")],
        "pushing first, then by key"
    );
    assert!(queue.iter().all(|q| q.sink == ledger[0].sink));

    // A chunk of the queue comes back in the queue's order, not the store's; a revision that
    // left the states a push takes (D, pushed) is not returned.
    let chunk = [id("B"), id("D"), id("C")];
    let read = store
        .queued_lines(october(), &chunk)
        .await
        .expect("the chunk");
    let got: Vec<String> = read
        .iter()
        .map(|l| format!("{}:{}", l.key.billing_account, l.status))
        .collect();
    assert_eq!(got, ["B:approved", "C:pushing"]);
    assert!(
        store
            .push_queue(
                october(),
                &PushScope {
                    ids: Some(&[]),
                    ..PushScope::default()
                }
            )
            .await
            .expect("nothing")
            .is_empty()
    );
}

async fn lines_to_push_are_approved_and_pushing_revisions(store: Store, _: &DatabaseTarget) {
    let run_id = run(&store).await;
    let mut approved = revision("B", "Agent", "billable_users", dec!(1));
    approved.status = LineStatus::Approved;
    let mut other_source = revision("C", "Agent", "genesys", dec!(1));
    other_source.status = LineStatus::Approved;
    let mut pushing = revision("A", "Agent", "billable_users", dec!(1));
    pushing.status = LineStatus::Approved;
    let mut pushed = revision("D", "Agent", "billable_users", dec!(1));
    pushed.status = LineStatus::Approved;
    let draft = revision("E", "Agent", "billable_users", dec!(1));
    insert(
        &store,
        run_id,
        vec![approved, other_source, pushing, pushed, draft],
    )
    .await;
    let ledger = lines(&store).await;
    store
        .mark_pushing(line(&ledger, "A", "Agent").id, None)
        .await
        .expect("pushing");
    let d = line(&ledger, "D", "Agent").id;
    store.mark_pushing(d, None).await.expect("pushing");
    store.mark_pushed(d, "U-1").await.expect("pushed");

    let accounts = |ledger: Vec<LedgerLine>| {
        ledger
            .into_iter()
            .map(|l| format!("{}:{}", l.key.billing_account, l.status))
            .collect::<Vec<_>>()
    };
    let all = store
        .lines_to_push(october(), &PushScope::default())
        .await
        .expect("all");
    assert_eq!(accounts(all), ["A:pushing", "B:approved", "C:approved"]);
    let users = [source("billable_users")];
    let some = store
        .lines_to_push(
            october(),
            &PushScope {
                sources: Some(&users),
                ..PushScope::default()
            },
        )
        .await
        .expect("some");
    assert_eq!(accounts(some), ["A:pushing", "B:approved"]);
    let both = [source("genesys"), source("billable_users")];
    assert_eq!(
        store
            .lines_to_push(
                october(),
                &PushScope {
                    sources: Some(&both),
                    ..PushScope::default()
                }
            )
            .await
            .expect("both")
            .len(),
        3
    );
    assert!(
        store
            .lines_to_push(
                october(),
                &PushScope {
                    sources: Some(&[]),
                    ..PushScope::default()
                }
            )
            .await
            .expect("none")
            .is_empty()
    );
    assert!(
        store
            .lines_to_push(october().next(), &PushScope::default())
            .await
            .expect("nov")
            .is_empty()
    );
}

async fn the_writer_lease_has_one_holder_at_a_time(store: Store, target: &DatabaseTarget) {
    let first = store
        .try_writer_lease()
        .await
        .expect("try")
        .expect("free at first");
    assert!(
        store.try_writer_lease().await.expect("try").is_none(),
        "held by the first"
    );
    // Another process's view: a second store on the same database.
    let other = Store::connect(target).await.expect("second store");
    assert!(
        other.try_writer_lease().await.expect("try").is_none(),
        "held across stores"
    );

    // Dropped: released (in the background on Postgres, hence the wait).
    drop(first);
    let second = eventually_locked(&other).await;
    assert!(store.try_writer_lease().await.expect("try").is_none());

    // Released explicitly: free at once.
    second.release().await.expect("release");
    let third = store
        .try_writer_lease()
        .await
        .expect("try")
        .expect("free after release");
    drop(third);
}

async fn a_busy_writer_is_told_who_holds_the_lease(store: Store, target: &DatabaseTarget) {
    let held = store
        .acquire_writer("run", Duration::ZERO)
        .await
        .expect("free at first");
    let run_id = run(&store).await;
    store.record_lease_run(run_id).await.expect("note the run");

    let other = Store::connect(target).await.expect("second store");
    let started = std::time::Instant::now();
    let refused = other
        .acquire_writer("approve", Duration::from_millis(600))
        .await
        .expect_err("busy");
    assert!(started.elapsed() >= Duration::from_millis(600), "it waited");
    let busy = refused.downcast_ref::<Busy>().expect("a Busy error");
    let holder = busy.holder.as_ref().expect("the holder is named");
    assert_eq!(holder.command, "run");
    assert_eq!(holder.run_id, Some(run_id));
    assert_eq!(holder.pid, i64::from(std::process::id()));
    let message = refused.to_string();
    assert!(message.contains(&format!("(run {run_id})")), "{message}");
    assert!(message.contains("--wait"), "{message}");

    // Released while the other waits: it gets the lease within its wait.
    let waiter = tokio::spawn(async move {
        other
            .acquire_writer("approve", Duration::from_secs(10))
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    held.release().await.expect("release");
    waiter
        .await
        .expect("join")
        .expect("taken after the release");
}

async fn runs_of_dead_processes_are_marked_abandoned_by_the_next_writer(
    store: Store,
    _: &DatabaseTarget,
) {
    // A run whose process died: started, never finished.
    let dead = run(&store).await;
    let lease = store
        .acquire_writer("run", Duration::ZERO)
        .await
        .expect("lease");
    let runs = store.runs(10).await.expect("runs");
    let found = runs.iter().find(|r| r.id == dead).expect("the dead run");
    assert_eq!(found.status, RunStatus::Abandoned);
    assert!(found.finished_at.is_some());
    // A run started under the lease is not touched by the same holder.
    let alive = run(&store).await;
    drop(lease);
    let runs = store.runs(10).await.expect("runs");
    assert_eq!(
        runs.iter().find(|r| r.id == alive).map(|r| r.status),
        Some(RunStatus::Running)
    );
}

/// Records `revisions` of `period` and pushes those not listed in `keep_draft`.
async fn pushed_in(
    store: &Store,
    period: Period,
    revisions: Vec<NewRevision>,
    keep_draft: &[&str],
) {
    let run_id = run(store).await;
    let changes: Vec<LedgerChange> = revisions.into_iter().map(LedgerChange::Insert).collect();
    store
        .apply_plan(run_id, period, &[], &changes, &[])
        .await
        .expect("insert revisions");
    for line in store.ledger_lines(period, None).await.expect("ledger") {
        if line.status != LineStatus::Draft
            || keep_draft.contains(&line.key.billing_account.as_str())
        {
            continue;
        }
        let customer = line.key.billing_account.clone();
        store
            .approve(period, Some(&customer), "kari", None)
            .await
            .expect("approve");
        store.mark_pushing(line.id, None).await.expect("pushing");
        store.mark_pushed(line.id, "x").await.expect("pushed");
    }
}

fn revision_of(account: &str, period: &str, revision_no: i32, total: Decimal) -> NewRevision {
    let mut r = revision(account, "Agent", "billable_users", dec!(1));
    r.key.period = period.parse().expect("a period");
    r.revision = revision_no;
    r.amount = total;
    r.total_amount = total;
    r
}

async fn the_last_pushed_amount_of_a_line_is_its_newest_pushed_total_before_the_period(
    store: Store,
    _: &DatabaseTarget,
) {
    let august: Period = "2026-08".parse().expect("a period");
    let september: Period = "2026-09".parse().expect("a period");
    pushed_in(
        &store,
        august,
        vec![
            revision_of("A", "2026-08", 1, dec!(80.00)),
            revision_of("B", "2026-08", 1, dec!(50.00)),
        ],
        &[],
    )
    .await;
    pushed_in(
        &store,
        september,
        vec![
            revision_of("A", "2026-09", 1, dec!(100.00)),
            revision_of("C", "2026-09", 1, dec!(7.00)),
        ],
        &["C"],
    )
    .await;
    // A's September line was adjusted: its newest pushed revision carries the total.
    pushed_in(
        &store,
        september,
        vec![revision_of("A", "2026-09", 2, dec!(120.00))],
        &["C"],
    )
    .await;
    // October itself does not count.
    pushed_in(
        &store,
        october(),
        vec![revision_of("A", "2026-10", 1, dec!(999.00))],
        &[],
    )
    .await;

    let amounts = store.last_pushed_amounts(october()).await.expect("amounts");
    let of = |account: &str| {
        amounts
            .get(&(
                BillingAccount::new(account),
                LicenseType::new("Agent"),
                source("billable_users"),
            ))
            .copied()
    };
    assert_eq!(of("A"), Some(dec!(120.00)), "September's newest total");
    assert_eq!(
        of("B"),
        Some(dec!(50.00)),
        "August, its latest pushed period"
    );
    assert_eq!(of("C"), None, "never pushed");
    assert_eq!(amounts.len(), 2);
}

async fn drafts_waiting_are_counted_per_source(store: Store, _: &DatabaseTarget) {
    let run_id = run(&store).await;
    insert(
        &store,
        run_id,
        vec![
            revision("A", "Agent", "billable_users", dec!(1)),
            revision("B", "Agent", "billable_users", dec!(1)),
            revision("A", "Agent", "ccc", dec!(1)),
        ],
    )
    .await;
    let users = [source("billable_users")];
    assert_eq!(store.count_drafts(october(), None).await.expect("all"), 3);
    assert_eq!(
        store
            .count_drafts(october(), Some(&users))
            .await
            .expect("users"),
        2
    );
    assert_eq!(
        store
            .count_drafts(october(), Some(&[]))
            .await
            .expect("none"),
        0
    );
    let customer = BillingAccount::new("B");
    store
        .approve(october(), Some(&customer), "kari", None)
        .await
        .expect("approve B");
    assert_eq!(store.count_drafts(october(), None).await.expect("after"), 2);
}

async fn eventually_locked(store: &Store) -> tally::store::WriterLease {
    for _ in 0..50 {
        if let Some(lock) = store.try_writer_lease().await.expect("try") {
            return lock;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the writer lease was not released within 5 s of its drop");
}

/// Stages `pages` of scope "acct" from page 1 as one extraction, each page its own transaction.
async fn stage_listing(store: &Store, run_id: i64, pages: &[Vec<StagedRecord>]) {
    let src = source("billable_users");
    store
        .restart_extraction(&src, "acct", october(), run_id)
        .await
        .expect("restart");
    for (index, records) in pages.iter().enumerate() {
        let next = (index + 1 < pages.len()).then(|| format!("page={}", index + 2));
        store
            .stage_page(&src, "acct", october(), run_id, records, next.as_deref())
            .await
            .expect("stage");
    }
}

fn listing() -> Vec<Vec<StagedRecord>> {
    (1..=3)
        .map(|page| {
            (1..=2)
                .map(|n| record(&format!("{page}.{n}"), "Acme", dec!(1)))
                .collect()
        })
        .collect()
}

async fn a_reread_writes_only_from_the_first_page_that_differs(store: Store, _: &DatabaseTarget) {
    let src = source("billable_users");
    let first_run = run(&store).await;
    let before = listing();
    stage_listing(&store, first_run, &before).await;
    let known = store
        .page_fingerprints(&src, "acct", october())
        .await
        .expect("fingerprints");
    assert_eq!(known.len(), 3);

    let second_run = run(&store).await;
    store
        .begin_reread(&src, "acct", october(), second_run)
        .await
        .expect("reread");
    let cp = store
        .checkpoint(&src, "acct", october())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((cp.pages, cp.complete, cp.rereading), (0, false, true));
    // Page 1 is the same (its fingerprint matches): only the checkpoint moves.
    assert_eq!(
        known.get(&1),
        Some(&tally::store::PageBody::of(&before[0]).fingerprint)
    );
    let at = tally::store::StageAt {
        source: &src,
        scope: "acct",
        period: october(),
        run_id: second_run,
        claim: None,
    };
    store
        .stage_at(&at, &[page_at(1, &before[0], Some("page=2"))], 1)
        .await
        .expect("page 1 kept");
    let cp = store
        .checkpoint(&src, "acct", october())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((cp.pages, cp.rereading, cp.run_id), (1, true, second_run));
    assert_eq!(
        store.staged_records(&src, october()).await.unwrap().len(),
        6
    );

    // Page 2 differs: it is written, and the earlier run's page 3 goes with the re-read.
    let changed = vec![
        record("2.1", "Acme", dec!(1)),
        record("2.9", "Beta", dec!(1)),
    ];
    store
        .stage_at(&at, &[page_at(2, &changed, Some("page=3"))], 0)
        .await
        .expect("page 2 written");
    let cp = store
        .checkpoint(&src, "acct", october())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((cp.pages, cp.rereading), (2, false));
    let keys: Vec<String> = store
        .staged_records(&src, october())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.record_key)
        .collect();
    assert_eq!(
        keys,
        ["1.1", "1.2", "2.1", "2.9"],
        "page 3 is not claimed any more"
    );

    store
        .stage_at(&at, &[page_at(3, &before[2], None)], 0)
        .await
        .expect("page 3");
    let cp = store
        .checkpoint(&src, "acct", october())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((cp.pages, cp.complete, cp.records), (3, true, 6));
    assert_eq!(
        store.staged_records(&src, october()).await.unwrap().len(),
        6
    );
}

async fn a_reread_of_a_shorter_listing_drops_the_pages_past_its_end(
    store: Store,
    _: &DatabaseTarget,
) {
    let src = source("billable_users");
    let first_run = run(&store).await;
    let before = listing();
    stage_listing(&store, first_run, &before).await;
    let second_run = run(&store).await;
    store
        .begin_reread(&src, "acct", october(), second_run)
        .await
        .expect("reread");
    let at = tally::store::StageAt {
        source: &src,
        scope: "acct",
        period: october(),
        run_id: second_run,
        claim: None,
    };
    // Pages 1 and 2 are the same, and page 2 is now the last: page 3 must not be counted.
    let pages = [
        PageToStage {
            page: 1,
            records: &before[0],
            next_cursor: Some("page=2"),
        },
        PageToStage {
            page: 2,
            records: &before[1],
            next_cursor: None,
        },
    ];
    store.stage_at(&at, &pages, 2).await.expect("both kept");
    let cp = store
        .checkpoint(&src, "acct", october())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((cp.pages, cp.complete, cp.rereading), (2, true, false));
    let keys: Vec<String> = store
        .staged_records(&src, october())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.record_key)
        .collect();
    assert_eq!(keys, ["1.1", "1.2", "2.1", "2.2"]);
}

fn page_at<'a>(page: i64, records: &'a [StagedRecord], next: Option<&'a str>) -> PageToStage<'a> {
    PageToStage {
        page,
        records,
        next_cursor: next,
    }
}
