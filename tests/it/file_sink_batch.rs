//! The file sink in the real push, many lines at a time: what lands in the file (each revision
//! once, with its amount) and what the ledger says afterwards, on both databases, through a
//! crash between the file's sync and the ledger's `pushed` and through a torn last row.

use crate::common;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tally::domain::{
    BillingAccount, Currency, Evidence, LedgerChange, LedgerLine, LicenseType, LineKey, LineStatus,
    NewRevision, Period, SourceName, Trigger,
};
use tally::pipeline::{Faults, PushOutcome, Pusher, SimulatedCrash};
use tally::shutdown::Shutdown;
use tally::sinks::Sink;
use tally::sinks::file::{FileFormat, FileSink, FileSinkSettings};
use tally::store::{DatabaseTarget, PushScope, Store};

/// Runs a story against a fresh Postgres database and a fresh SQLite file.
macro_rules! both_backends {
    ($($story:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $story() {
                    let target = crate::common::fresh_postgres().await;
                    super::$story(target).await;
                }
            )*
        }

        mod sqlite {
            $(
                #[tokio::test]
                async fn $story() {
                    let dir = tempfile::tempdir().expect("a temporary folder");
                    super::$story(crate::common::fresh_sqlite(&dir)).await;
                }
            )*
        }
    };
}

both_backends!(
    a_push_of_many_lines_writes_each_once_with_its_amount,
    a_crash_after_the_file_is_synced_is_recovered_without_writing_a_row_twice,
    a_torn_last_row_is_cut_off_and_its_revision_written_again,
    a_batch_transition_is_refused_whole_when_one_revision_is_not_in_its_state,
    a_stop_requested_before_a_batch_is_sent_writes_nothing_of_it,
);

// ---- fixtures -------------------------------------------------------------------------------

fn october() -> Period {
    "2026-10".parse().expect("a period")
}

fn eur() -> Currency {
    "EUR".parse().expect("EUR")
}

/// Revision 1 of account `ACC-<i>`: `i` users at 12.345 EUR, rounded once.
fn revision(i: usize) -> NewRevision {
    let quantity = Decimal::from(i);
    let amount = eur().round(quantity * dec!(12.345), Default::default());
    NewRevision {
        key: LineKey {
            period: october(),
            billing_account: BillingAccount::new(format!("ACC-{i:05}")),
            license_type: LicenseType::new("Service desk agent"),
            source: SourceName::new("billable_users"),
        },
        revision: 1,
        quantity,
        amount,
        rate: dec!(12.345),
        currency: eur(),
        total_quantity: quantity,
        total_amount: amount,
        price_ref: "agent@2026-01-01".to_owned(),
        trace: serde_json::Value::Null.into(),
        evidence: Evidence {
            record_count: 1,
            hash: "ab12".to_owned(),
            sample: Default::default(),
        },
        sink: "file".to_owned(),
        status: LineStatus::Approved,
        approval: None,
    }
}

/// A store holding `n` approved revisions for the file sink.
async fn ledger_of(target: &DatabaseTarget, n: usize) -> Store {
    let store = Store::connect(target).await.expect("connecting");
    let run_id = store
        .start_run(Trigger::Manual, october(), None)
        .await
        .expect("a run");
    let changes: Vec<LedgerChange> = (1..=n).map(|i| LedgerChange::Insert(revision(i))).collect();
    store
        .apply_plan(run_id, october(), &[], &changes, &[])
        .await
        .expect("the revisions");
    store
}

fn file_sink(dir: &Path, format: FileFormat) -> Vec<Sink> {
    vec![Sink::File(
        FileSink::new(&FileSinkSettings {
            dir: dir.to_owned(),
            format,
        })
        .expect("the file sink"),
    )]
}

/// One push of the period, as `tally push` does it. No settle time: nothing but this test writes
/// the file, so a revision absent from it is surely not there.
async fn push(store: &Store, sinks: &[Sink], faults: &Faults) -> anyhow::Result<PushOutcome> {
    let shutdown = Shutdown::new();
    Pusher {
        store,
        sinks,
        settle: Duration::ZERO,
        retries: 0,
        retry_backoff: Duration::ZERO,
        faults,
        shutdown: &shutdown,
    }
    .push_period(october(), &PushScope::default())
    .await
}

fn csv_path(dir: &Path) -> PathBuf {
    dir.join("invoice-lines-2026-10.csv")
}

/// The file's data rows by idempotency key: (amount, how many times the key is there).
fn rows(path: &Path) -> BTreeMap<String, (Decimal, usize)> {
    let mut reader = csv::Reader::from_path(path).expect("the CSV file");
    let headers = reader.headers().expect("a header").clone();
    let amount_at = headers.iter().position(|h| h == "amount").expect("amount");
    let mut found: BTreeMap<String, (Decimal, usize)> = BTreeMap::new();
    for record in reader.records() {
        let record = record.expect("a complete CSV row");
        let amount: Decimal = record[amount_at].parse().expect("an exact decimal");
        let entry = found.entry(record[0].to_owned()).or_insert((amount, 0));
        entry.1 += 1;
    }
    found
}

async fn ledger(store: &Store) -> Vec<LedgerLine> {
    store.ledger_lines(october(), None).await.expect("ledger")
}

/// Every revision is in the file exactly once with its ledger amount, and the ledger records it
/// pushed under `<file>:<key>`.
async fn assert_all_pushed_once(store: &Store, path: &Path, n: usize) {
    let in_file = rows(path);
    let lines = ledger(store).await;
    assert_eq!(lines.len(), n);
    assert_eq!(in_file.len(), n, "one row per revision");
    for line in &lines {
        let (amount, times) = in_file
            .get(&line.idempotency_key)
            .unwrap_or_else(|| panic!("{} is not in the file", line.idempotency_key));
        assert_eq!(*times, 1, "{} written {times} times", line.idempotency_key);
        assert_eq!(*amount, line.amount, "{}", line.idempotency_key);
        assert_eq!(line.status, LineStatus::Pushed, "{}", line.idempotency_key);
        assert_eq!(
            line.external_id.as_deref(),
            Some(format!("invoice-lines-2026-10.csv:{}", line.idempotency_key).as_str())
        );
    }
}

// ---- stories --------------------------------------------------------------------------------

async fn a_push_of_many_lines_writes_each_once_with_its_amount(target: DatabaseTarget) {
    let n = 2_000;
    let store = ledger_of(&target, n).await;
    let dir = tempfile::tempdir().unwrap();
    let sinks = file_sink(dir.path(), FileFormat::Csv);

    let outcome = push(&store, &sinks, &Faults::default()).await.unwrap();
    assert_eq!(outcome.pushed, n as u64);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_all_pushed_once(&store, &csv_path(dir.path()), n).await;
    // 2,000 × 12.345 × (2,000 + 1) / 2, each line rounded to the cent.
    let total: Decimal = rows(&csv_path(dir.path())).values().map(|(a, _)| a).sum();
    let expected: Decimal = (1..=n).map(|i| revision(i).amount).sum();
    assert_eq!(total, expected);

    let before = std::fs::read(csv_path(dir.path())).unwrap();
    let again = push(&store, &sinks, &Faults::default()).await.unwrap();
    assert_eq!(again.pushed, 0, "nothing is left to push");
    assert_eq!(std::fs::read(csv_path(dir.path())).unwrap(), before);
}

async fn a_crash_after_the_file_is_synced_is_recovered_without_writing_a_row_twice(
    target: DatabaseTarget,
) {
    let n = 2_000;
    let store = ledger_of(&target, n).await;
    let dir = tempfile::tempdir().unwrap();
    let sinks = file_sink(dir.path(), FileFormat::Csv);

    let crash = Faults {
        crash_after_accepted_pushes: Some(700),
        ..Faults::default()
    };
    let err = push(&store, &sinks, &crash).await.unwrap_err();
    assert!(err.downcast_ref::<SimulatedCrash>().is_some(), "{err:#}");
    let lines = ledger(&store).await;
    let pushing: Vec<&LedgerLine> = lines
        .iter()
        .filter(|l| l.status == LineStatus::Pushing)
        .collect();
    assert!(!pushing.is_empty(), "the ledger never heard back");
    let in_file = rows(&csv_path(dir.path()));
    for line in lines.iter().filter(|l| l.status != LineStatus::Approved) {
        assert_eq!(
            in_file.get(&line.idempotency_key).map(|(_, times)| *times),
            Some(1),
            "{} is {} and in the file once",
            line.idempotency_key,
            line.status
        );
    }
    drop(sinks);

    // The process restarts: the revisions left pushing are found in the file, not written again.
    let sinks = file_sink(dir.path(), FileFormat::Csv);
    let outcome = push(&store, &sinks, &Faults::default()).await.unwrap();
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(outcome.waiting, 0);
    assert_all_pushed_once(&store, &csv_path(dir.path()), n).await;
}

async fn a_torn_last_row_is_cut_off_and_its_revision_written_again(target: DatabaseTarget) {
    let n = 30;
    let store = ledger_of(&target, n).await;
    let dir = tempfile::tempdir().unwrap();
    let sinks = file_sink(dir.path(), FileFormat::Csv);
    let crash = Faults {
        crash_after_accepted_pushes: Some(n as u64),
        ..Faults::default()
    };
    push(&store, &sinks, &crash).await.unwrap_err();
    drop(sinks);
    // The power went while the last row was being written: half of it reached the disk.
    let path = csv_path(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let last_row = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|b| *b == b'\n')
        .unwrap()
        + 1;
    let torn_key = String::from_utf8(bytes[last_row..].to_vec())
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    bytes.truncate(last_row + (bytes.len() - last_row) / 2);
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(rows_complete(&path), n - 1);

    let sinks = file_sink(dir.path(), FileFormat::Csv);
    let outcome = push(&store, &sinks, &Faults::default()).await.unwrap();
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_all_pushed_once(&store, &path, n).await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'), "no torn row is left");
    assert!(
        text.lines().last().unwrap().starts_with(&torn_key),
        "the torn revision is written again, last: {text}"
    );
}

async fn a_batch_transition_is_refused_whole_when_one_revision_is_not_in_its_state(
    target: DatabaseTarget,
) {
    let store = ledger_of(&target, 3).await;
    let ids: Vec<i64> = ledger(&store).await.iter().map(|l| l.id).collect();
    let statuses = |lines: Vec<LedgerLine>| -> Vec<LineStatus> {
        lines.into_iter().map(|l| l.status).collect()
    };

    store.mark_pushing(ids[2], None).await.unwrap();
    let err = store.mark_pushing_many(&ids).await.unwrap_err();
    assert!(format!("{err:#}").contains(&format!("revision {} is not approved", ids[2])));
    assert_eq!(
        statuses(ledger(&store).await),
        [
            LineStatus::Approved,
            LineStatus::Approved,
            LineStatus::Pushing
        ],
        "nothing of a refused batch is marked"
    );

    store.mark_pushing_many(&ids[..2]).await.unwrap();
    let err = store
        .mark_pushed_many(&[(ids[0], "f:a".to_owned()), (ids[2] + 100, "f:x".to_owned())])
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("no ledger revision"), "{err:#}");
    assert_eq!(
        statuses(ledger(&store).await),
        [LineStatus::Pushing; 3],
        "nothing of a refused batch is marked"
    );

    let sent: Vec<(i64, String)> = ids.iter().map(|id| (*id, format!("f:{id}"))).collect();
    store.mark_pushed_many(&sent).await.unwrap();
    let lines = ledger(&store).await;
    assert!(lines.iter().all(|l| l.status == LineStatus::Pushed));
    for line in &lines {
        assert_eq!(line.external_id, Some(format!("f:{}", line.id)));
        assert!(line.pushed_at.is_some());
    }
    let err = store.mark_pushed_many(&sent[..1]).await.unwrap_err();
    assert!(format!("{err:#}").contains("is not pushing"), "{err:#}");
    assert!(
        store.mark_pushing_many(&ids[..1]).await.is_err(),
        "pushed once"
    );
}

async fn a_stop_requested_before_a_batch_is_sent_writes_nothing_of_it(target: DatabaseTarget) {
    let store = ledger_of(&target, 20).await;
    let dir = tempfile::tempdir().unwrap();
    let sinks = file_sink(dir.path(), FileFormat::Csv);
    let shutdown = Shutdown::new();
    shutdown.request();
    let outcome = Pusher {
        store: &store,
        sinks: &sinks,
        settle: Duration::ZERO,
        retries: 0,
        retry_backoff: Duration::ZERO,
        faults: &Faults::default(),
        shutdown: &shutdown,
    }
    .push_period(october(), &PushScope::default())
    .await
    .unwrap();
    assert!(outcome.interrupted);
    assert_eq!(outcome.pushed, 0);
    assert!(!csv_path(dir.path()).exists(), "nothing was written");
    assert!(
        ledger(&store)
            .await
            .iter()
            .all(|l| l.status == LineStatus::Approved),
        "every revision waits for the next run"
    );

    let outcome = push(&store, &sinks, &Faults::default()).await.unwrap();
    assert_eq!(outcome.pushed, 20);
    assert_all_pushed_once(&store, &csv_path(dir.path()), 20).await;
}

/// Data rows that end with a newline.
fn rows_complete(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    text.matches('\n').count() - 1
}

// ---- timing (not a test: `cargo test --test it file_sink_batch::timing -- --ignored --nocapture`)

#[tokio::test]
#[ignore = "a measurement, not a test"]
async fn timing_a_push_through_the_file_sink() {
    for n in [1_000, 10_000] {
        for backend in ["sqlite", "postgres"] {
            let dir = tempfile::tempdir().unwrap();
            let target = if backend == "sqlite" {
                common::fresh_sqlite(&dir)
            } else {
                common::fresh_postgres().await
            };
            let store = ledger_of(&target, n).await;
            let sinks = file_sink(&dir.path().join("out"), FileFormat::Csv);
            let started = std::time::Instant::now();
            let outcome = push(&store, &sinks, &Faults::default()).await.unwrap();
            let took = started.elapsed();
            assert_eq!(outcome.pushed, n as u64);
            println!(
                "{backend:8} {n:6} lines: {:8.2} s, {:.3} ms per line",
                took.as_secs_f64(),
                took.as_secs_f64() * 1000.0 / n as f64
            );
        }
    }
}
