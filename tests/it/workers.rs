//! Workers that share a night: three real `tally run --worker` processes on one Postgres split a
//! month of many CCC services (one unit each); one is killed in the middle of a unit, another
//! takes the unit over at its checkpoint, and the month is priced and pushed once, with the
//! same lines as one tally alone.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tally::domain::{Period, RunStatus, SourceName};
use tally::sim::ccc::{CccSim, CccUser, SimHandle};
use tally::store::{DatabaseTarget, Store};

const USERNAME: &str = "billing@tally.example";
const PASSWORD: &str = "pw-workers-0123";
const SERVICES: u32 = 12;
const USERS_PER_SERVICE: usize = 40;
const PAGE_SIZE: usize = 10;

fn october() -> Period {
    Period::new(2026, 10).unwrap()
}

fn service(n: u32) -> String {
    format!("bbbbbbbb0000400080000000{n:08x}")
}

/// A CCC simulator of `SERVICES` services of `USERS_PER_SERVICE` users; each usage call takes
/// `delay`, so that a unit lasts long enough to be killed in the middle.
async fn start_ccc(delay: Duration) -> (CccSim, SimHandle) {
    start_ccc_of(SERVICES, USERS_PER_SERVICE, delay).await
}

/// A CCC simulator of `services` services of `users` users each.
pub(crate) async fn start_ccc_of(
    services: u32,
    users: usize,
    delay: Duration,
) -> (CccSim, SimHandle) {
    let sim = CccSim::new(USERNAME, PASSWORD);
    for n in 1..=services {
        sim.add_service(&service(n), CccUser::generate(n, users, october()));
    }
    sim.set_usage_delay(delay);
    let handle = sim
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    (sim, handle)
}

/// A configuration of the CCC services into the file sink (one billing account per service),
/// on `database_url`, in a folder of its own.
fn checkout(ccc: &SimHandle, database_url: &str) -> (tempfile::TempDir, PathBuf) {
    checkout_of(ccc, database_url, SERVICES, "concurrency = 4")
}

/// The same for `services` services, with `reading` (lines of `[sources.ccc]`) saying how many
/// requests go at once.
pub(crate) fn checkout_of(
    ccc: &SimHandle,
    database_url: &str,
    services: u32,
    reading: &str,
) -> (tempfile::TempDir, PathBuf) {
    let count = services;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let services: Vec<String> = (1..=count).map(|n| format!("\"{}\"", service(n))).collect();
    let mut customers = String::from("source,source_customer,billing_account\n");
    for n in 1..=count {
        customers.push_str(&format!("ccc,{},CUST-{n:03}\n", service(n)));
    }
    std::fs::write(root.join("customers.csv"), customers).unwrap();
    std::fs::write(
        root.join("pricing.csv"),
        "price_id,license_type,customer,currency,model,tier_from,tier_to,unit_price,flat_fee,package_size,included_quantity,min_charge,effective_from,effective_to\n\
         SM-PRO,Secure messaging – Professional,,EUR,per_unit,,,9.00,,,,,2026-01-01,\n\
         SM-GUEST,Secure messaging – Guest,,EUR,per_unit,,,2.50,,,,,2026-01-01,\n",
    )
    .unwrap();
    let config = format!(
        "[database]\nurl = \"{database_url}\"\n\n\
         [general]\ndata_dir = \"{data}\"\ntimezone = \"UTC\"\n\n\
         [log]\nformat = \"json\"\nlevel = \"info\"\n\n\
         [billing]\npricing_file = \"{root}/pricing.csv\"\ncustomers_file = \"{root}/customers.csv\"\n\
         rounding = \"half_up\"\ndefault_currency = \"EUR\"\ndefault_sink = \"file\"\nrequire_approval = false\n\n\
         [sources.ccc]\nbase_url = \"{base}\"\nusername = \"{USERNAME}\"\nservices = [{services}]\n\
         page_size = {PAGE_SIZE}\n{reading}\n\n\
         [sinks.file]\ndir = \"{root}/out\"\nformat = \"jsonl\"\n",
        data = root.join("data").display(),
        root = root.display(),
        base = ccc.base_url(),
        services = services.join(", "),
    );
    let path = root.join("tally.toml");
    std::fs::write(&path, config).unwrap();
    (dir, path)
}

/// The lines (sorted) that one `tally run` alone pushes for `services` services of `users`
/// users, read as `reading` says: what workers sharing the month must push too.
pub(crate) async fn lines_of_one_tally(
    services: u32,
    users: usize,
    reading: &str,
) -> Vec<(String, String, String, String)> {
    let (_sim, ccc) = start_ccc_of(services, users, Duration::ZERO).await;
    let db = common::fresh_postgres().await;
    let (dir, config) = checkout_of(&ccc, &database_url(&db), services, reading);
    let alone = tally(&config, &["run", "--period", "2026-10"])
        .output()
        .unwrap();
    assert_eq!(alone.status.code(), Some(0), "{}", common::text(&alone));
    let mut lines = file_lines(dir.path());
    lines.sort();
    assert_eq!(lines.len(), 2 * services as usize, "{lines:?}");
    lines
}

pub(crate) fn tally(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .env("TALLY__SOURCES__CCC__PASSWORD", PASSWORD)
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// The worker's output once it exits; killed (and the test failed) if it is still running
/// after two minutes, as a worker waiting forever for a unit nobody takes would be.
pub(crate) async fn wait(child: Child) -> Output {
    let pid = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
    match tokio::time::timeout(Duration::from_secs(120), waiting).await {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("worker {pid} was still running after 120 s");
        }
    }
}

/// The lines the file sink received: (account, license type, quantity, amount) per row.
pub(crate) fn file_lines(dir: &Path) -> Vec<(String, String, String, String)> {
    let text = std::fs::read_to_string(dir.join("out/invoice-lines-2026-10.jsonl")).unwrap();
    text.lines()
        .map(|row| {
            let row: serde_json::Value = serde_json::from_str(row).unwrap();
            let field = |name: &str| row[name].as_str().unwrap().to_owned();
            (
                field("billing_account"),
                field("license_type"),
                field("quantity"),
                field("amount"),
            )
        })
        .collect()
}

/// How often each (service, users page) was requested.
fn pages_requested(sim: &CccSim) -> BTreeMap<(String, usize), usize> {
    let mut counts = BTreeMap::new();
    for (service, page, _) in sim.users_requests() {
        *counts.entry((service, page)).or_insert(0) += 1;
    }
    counts
}

/// A manual run of October, of every source, in process.
fn manual_run() -> tally::pipeline::RunOptions {
    tally::pipeline::RunOptions {
        period: october(),
        source: None,
        dry_run: false,
        trigger: tally::domain::Trigger::Manual,
        customer: None,
        requested_by: None,
    }
}

pub(crate) fn database_url(db: &DatabaseTarget) -> String {
    common::database_url(db)
}

#[tokio::test(flavor = "multi_thread")]
async fn three_workers_share_a_month_one_is_killed_mid_unit_and_every_line_is_pushed_once() {
    // The month as one tally alone bills it, for comparison.
    let expected = lines_of_one_tally(SERVICES, USERS_PER_SERVICE, "concurrency = 4").await;

    let (sim, ccc) = start_ccc(Duration::from_millis(40)).await;
    let db = common::fresh_postgres().await;
    let (dir, config) = checkout(&ccc, &database_url(&db));
    let store = Store::connect(&db).await.unwrap();
    let worker = |_: usize| {
        tally(
            &config,
            &[
                "run",
                "--period",
                "2026-10",
                "--worker",
                "--round",
                "night-1",
                "--lease-secs",
                "3",
                "--output",
                "json",
            ],
        )
        .spawn()
        .unwrap()
    };
    let mut workers: Vec<Child> = (0..3).map(worker).collect();

    // Kill the first worker once it holds a unit with pages committed and pages still to come.
    let victim = workers[0].id();
    let started = Instant::now();
    let killed_scope = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "worker {victim} never held a unit half extracted"
        );
        let held = store
            .round_units("night-1")
            .await
            .unwrap_or_default()
            .into_iter()
            .find(|u| u.state == "claimed" && u.holder_pid == Some(i64::from(victim)));
        if let Some(unit) = held {
            let checkpoint = store
                .checkpoint(&SourceName::new("ccc"), &unit.scope, october())
                .await
                .unwrap();
            if checkpoint.is_some_and(|cp| {
                cp.pages >= 1 && !cp.complete && cp.run_id == unit.holder_run.unwrap()
            }) {
                workers[0].kill().unwrap();
                break unit;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let _ = workers.remove(0).wait();

    let mut outputs = Vec::new();
    for child in workers {
        outputs.push(wait(child).await);
    }
    let mut priced_by = Vec::new();
    let mut pricers = Vec::new();
    for output in &outputs {
        assert_eq!(output.status.code(), Some(0), "{}", common::text(output));
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        if report["priced"].is_object() {
            assert_eq!(
                report["priced"]["lines_pushed"],
                2 * SERVICES as u64,
                "{report}"
            );
            pricers.push(report["priced"]["run_id"].as_i64().unwrap());
        } else {
            priced_by.push(report["priced_by_run"].as_i64().unwrap());
        }
    }
    assert_eq!(pricers.len(), 1, "exactly one worker prices the round");
    assert_eq!(
        priced_by, pricers,
        "the other worker names the run that priced"
    );

    // Every unit done; the killed worker's unit taken over once, the others claimed once.
    let units = store.round_units("night-1").await.unwrap();
    assert_eq!(units.len(), SERVICES as usize);
    for unit in &units {
        assert_eq!(unit.state, "done", "{unit:?}");
        if unit.scope == killed_scope.scope {
            assert_eq!(unit.attempts, 2, "{unit:?}");
            assert_ne!(unit.holder_run, killed_scope.holder_run, "{unit:?}");
        } else {
            assert_eq!(unit.attempts, 1, "{unit:?}");
        }
    }

    // Every scope extracted once: each page of users read once, but for the pages of the
    // killed unit that were in flight when it died; its first page was committed and is not
    // read again (the unit resumed at its checkpoint, it did not start over).
    let pages = USERS_PER_SERVICE.div_ceil(PAGE_SIZE);
    let requested = pages_requested(&sim);
    for n in 1..=SERVICES {
        let scope = service(n);
        for page in 1..=pages {
            let times = requested.get(&(scope.clone(), page)).copied().unwrap_or(0);
            if scope == killed_scope.scope && page > 1 {
                assert!(
                    (1..=2).contains(&times),
                    "{scope} page {page}: {times} requests"
                );
            } else {
                assert_eq!(times, 1, "{scope} page {page}: {requested:?}");
            }
        }
    }

    // The billing system received every line once, the same lines as one tally alone.
    let mut received = file_lines(dir.path());
    received.sort();
    assert_eq!(received, expected);
    let keys: BTreeSet<_> = received.iter().map(|(a, l, _, _)| (a, l)).collect();
    assert_eq!(keys.len(), received.len(), "a line was pushed twice");

    // The killed worker's run is abandoned; the others' runs and the pricing run completed.
    let runs = store.runs(50).await.unwrap();
    let killed = runs
        .iter()
        .find(|r| Some(r.id) == killed_scope.holder_run)
        .unwrap();
    assert_eq!(killed.status, RunStatus::Abandoned, "{runs:?}");
    assert_eq!(
        runs.iter()
            .filter(|r| r.status == RunStatus::Completed)
            .count(),
        3,
        "two workers and one pricing run: {runs:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_on_sqlite_is_refused_with_what_to_do() {
    let (_sim, ccc) = start_ccc(Duration::ZERO).await;
    let state = tempfile::tempdir().unwrap();
    let db = common::fresh_sqlite(&state);
    let (_dir, config) = checkout(&ccc, &database_url(&db));
    let output = tally(&config, &["run", "--period", "2026-10", "--worker"])
        .output()
        .unwrap();
    let text = common::text(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        text.contains("workers that share a night need Postgres"),
        "{text}"
    );
    assert!(text.contains("run without --worker"), "{text}");
}

fn staged(key: &str) -> tally::domain::StagedRecord {
    tally::domain::StagedRecord {
        record_key: key.to_owned(),
        customer_key: "CUST".to_owned(),
        item: "Professional".to_owned(),
        quantity: rust_decimal::Decimal::ONE,
    }
}

/// The fence: a worker whose lease ran out while it was paused cannot stage into the unit the
/// next worker took over; what it tried to write is not there, and the unit stays the other's.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_lease_ran_out_cannot_write_into_the_unit_another_took_over() {
    use tally::domain::Trigger;
    use tally::store::{LostUnit, PageToStage, RunRequest};
    let store = Store::connect(&common::fresh_postgres().await)
        .await
        .unwrap();
    let ccc = SourceName::new("ccc");
    let units = [(ccc.clone(), "svc".to_owned())];
    let lease = Duration::from_secs(1);
    let names = ["ccc".to_owned()];
    let mut runs = Vec::new();
    for _ in 0..2 {
        let run = store
            .start_requested_run(Trigger::Manual, october(), &RunRequest::default())
            .await
            .unwrap();
        store
            .join_round("r", october(), run, lease, &units)
            .await
            .unwrap();
        runs.push(run);
    }
    let first = store
        .claim_unit("r", runs[0], lease, &names)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .claim_unit("r", runs[1], lease, &names)
            .await
            .unwrap()
            .is_none(),
        "a unit under a live lease is nobody else's"
    );
    let page_one = [staged("a")];
    store
        .stage_claimed_pages(
            &first,
            october(),
            &[PageToStage {
                page: 1,
                records: &page_one,
                next_cursor: Some("2"),
            }],
        )
        .await
        .unwrap();
    // The first worker is paused past its lease; the second takes the unit over.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = store
        .claim_unit("r", runs[1], lease, &names)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.attempts, 2);
    let late = [staged("late")];
    let refused = store
        .stage_claimed_pages(
            &first,
            october(),
            &[PageToStage {
                page: 2,
                records: &late,
                next_cursor: None,
            }],
        )
        .await
        .unwrap_err();
    assert!(refused.downcast_ref::<LostUnit>().is_some(), "{refused:#}");
    let checkpoint = store
        .checkpoint(&ccc, "svc", october())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (checkpoint.pages, checkpoint.complete),
        (1, false),
        "nothing of the late write"
    );
    let page_two = [staged("b")];
    store
        .stage_claimed_pages(
            &second,
            october(),
            &[PageToStage {
                page: 2,
                records: &page_two,
                next_cursor: None,
            }],
        )
        .await
        .unwrap();
    let keys: Vec<String> = store
        .staged_records(&ccc, october())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.record_key)
        .collect();
    assert_eq!(keys, ["a", "b"]);
    let unit = &store.round_units("r").await.unwrap()[0];
    assert_eq!(
        (unit.state.as_str(), unit.holder_run),
        ("done", Some(runs[1]))
    );
    let progress = store.round_progress("r").await.unwrap();
    assert!(progress.settled(), "{progress:?}");
}

/// The settings of [`checkout`] read in this process, the password given as the environment
/// would, and `unknown` services the simulator does not have added to the configured ones.
fn in_process(config: &Path, unknown: &[&str]) -> tally::config::Settings {
    let text = std::fs::read_to_string(config).unwrap();
    let mut settings = tally::config::Settings::from_toml("tally.toml", &text).unwrap();
    let ccc = settings.sources.ccc.as_mut().unwrap();
    ccc.password = Some(secrecy::SecretString::from(PASSWORD));
    ccc.services.extend(unknown.iter().map(|s| s.to_string()));
    ccc.http.backoff_ms = 5;
    ccc.http.max_backoff_ms = 20;
    settings
}

/// A unit whose peer refuses it fails the round's pricing run for its source, as any failed
/// extraction does: nothing of the source is pushed, the unit keeps its error, the worker that
/// met it says so in its own run, and the round is still priced once.
#[tokio::test(flavor = "multi_thread")]
async fn a_unit_that_fails_fails_its_source_in_the_round_and_is_recorded_with_its_error() {
    use tally::pipeline::App;
    use tally::pipeline::workers::{RoundOptions, run_worker};
    let (_sim, ccc) = start_ccc(Duration::ZERO).await;
    let db = common::fresh_postgres().await;
    let (dir, config) = checkout(&ccc, &database_url(&db));
    let missing = "dddddddd000040008000000000000001";
    let a = App::build(in_process(&config, &[missing])).await.unwrap();
    let b = App::build(in_process(&config, &[missing])).await.unwrap();
    let options = manual_run();
    let round = RoundOptions {
        round: "night-f".into(),
        lease: Duration::from_secs(5),
        poll: Duration::from_millis(100),
    };
    let (ra, rb) = tokio::join!(
        run_worker(&a, &options, &round),
        run_worker(&b, &options, &round)
    );
    let reports = [ra.unwrap(), rb.unwrap()];
    let priced: Vec<_> = reports.iter().filter_map(|r| r.priced.as_ref()).collect();
    assert_eq!(priced.len(), 1, "priced once");
    let summary = &priced[0].summary;
    assert_eq!(summary.status, RunStatus::Failed, "{summary:?}");
    assert_eq!(summary.lines_pushed, 0, "a failed source pushes nothing");
    assert_eq!(summary.failed_sources.len(), 1, "{summary:?}");
    assert!(
        summary.failed_sources[0].error.contains(missing),
        "the error names the scope: {summary:?}"
    );
    let met: Vec<_> = reports
        .iter()
        .filter(|r| r.worker.status == RunStatus::Failed)
        .collect();
    assert_eq!(met.len(), 1, "one worker met the failing unit");
    assert_eq!(
        reports.iter().map(|r| r.units).sum::<u64>(),
        u64::from(SERVICES),
        "every other unit was extracted once"
    );
    let units = a.store.round_units("night-f").await.unwrap();
    let failed: Vec<_> = units.iter().filter(|u| u.state == "failed").collect();
    assert_eq!(failed.len(), 1, "{units:?}");
    assert_eq!(failed[0].scope, missing);
    assert!(
        failed[0].error.as_deref().unwrap().contains("not found"),
        "{failed:?}"
    );
    assert!(
        !dir.path().join("out/invoice-lines-2026-10.jsonl").exists(),
        "nothing reached the billing system"
    );
}

/// `scopes_at_once` bounds the services extracted side by side: with one usage call per service
/// in flight, the simulator sees one call at a time when it is 1 and several when it is 3, and
/// both runs push the same lines.
#[tokio::test(flavor = "multi_thread")]
async fn scopes_at_once_bounds_the_services_read_side_by_side_and_changes_no_line() {
    use tally::pipeline::App;
    let mut pushed = Vec::new();
    for scopes_at_once in [1, 3] {
        let (sim, ccc) = start_ccc(Duration::from_millis(5)).await;
        let tmp = tempfile::tempdir().unwrap();
        let db = common::fresh_sqlite(&tmp);
        let (dir, config) = checkout(&ccc, &database_url(&db));
        let mut settings = in_process(&config, &[]);
        let source = settings.sources.ccc.as_mut().unwrap();
        source.concurrency = 1;
        source.scopes_at_once = scopes_at_once;
        let app = App::build(settings).await.unwrap();
        let options = manual_run();
        let report = tally::pipeline::run(&app, &options).await.unwrap();
        assert!(
            matches!(
                report.summary.status,
                RunStatus::Completed | RunStatus::CompletedWithExceptions
            ),
            "{:?}",
            report.summary
        );
        let at_once = sim.max_concurrent_usage_calls();
        if scopes_at_once == 1 {
            assert_eq!(at_once, 1, "one service at a time, one call each");
        } else {
            assert!((2..=3).contains(&at_once), "{at_once} calls at once");
        }
        let mut lines = file_lines(dir.path());
        lines.sort();
        assert_eq!(lines.len(), SERVICES as usize * 2, "{lines:?}");
        pushed.push(lines);
    }
    assert_eq!(pushed[0], pushed[1]);
}
