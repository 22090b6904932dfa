//! `tally daemon` as an operator runs it: the real binary on Postgres against the simulators,
//! its clock started at a chosen instant through the `TALLY_CLOCK_NOW` test hook. What is
//! asserted is what an operator sees: the runs recorded, what the billing system received, the
//! months closed, the logs, `/healthz` and `/metrics`, and the exit code after SIGTERM.

use crate::common::{self, repo};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tally::domain::{LineStatus, Period, RunStatus, Trigger};
use tally::pipeline::{self, App, RunOptions};
use tally::sim::{self, RunningSims};
use tally::store::{DatabaseTarget, Store};

fn october() -> Period {
    "2026-10".parse().unwrap()
}

/// A folder laid out like a checkout: the demo configuration and its tables.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(config.join("demo")).unwrap();
    for file in ["demo.toml", "demo/pricing.csv", "demo/customers.csv"] {
        std::fs::copy(repo().join("config").join(file), config.join(file)).unwrap();
    }
    dir
}

/// The demo's configuration pointed at `sims` on `database_url`, billing in Europe/Oslo, with
/// `extra` (the `[schedule]` and `[daemon]` tables) appended.
fn config(dir: &Path, sims: &RunningSims, database_url: &str, extra: &str) -> PathBuf {
    let demo = std::fs::read_to_string(dir.join("config/demo.toml")).unwrap();
    let toml = demo
        .replace("http://127.0.0.1:8081/v1", &sims.billable_users_url)
        .replace("http://127.0.0.1:8082/", &sims.rambase_url)
        .replace("http://127.0.0.1:8083/api", &sims.ccc_url)
        .replace("http://127.0.0.1:8084", &sims.genesys_url)
        .replace("http://127.0.0.1:8085/", &sims.activeplatform_url)
        .replacen("timezone = \"UTC\"", "timezone = \"Europe/Oslo\"", 1)
        .replace(
            "[general]",
            &format!("[database]\nurl = \"{database_url}\"\n\n[general]"),
        );
    let path = dir.join("config/test.toml");
    std::fs::write(&path, format!("{toml}\n{extra}\n")).unwrap();
    path
}

/// A fresh Postgres database, migrated by the test's own connection before any daemon starts.
async fn postgres() -> (String, Store) {
    let target = common::fresh_postgres().await;
    let store = Store::connect(&target).await.unwrap();
    let DatabaseTarget::Postgres(url) = target else {
        unreachable!()
    };
    (url, store)
}

/// `tally daemon` with its clock starting at `now`, logging to `log`.
fn daemon(dir: &Path, config: &Path, now: &str, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .current_dir(dir)
        .arg("--config")
        .arg(config)
        .arg("daemon")
        .env_remove("DATABASE_URL")
        .env("TALLY_CLOCK_NOW", now)
        .env("RUST_LOG", "info")
        .envs(sim::demo_secrets())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// SIGTERM, then the exit code.
async fn stop(mut child: Child) -> Option<i32> {
    let sent = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success());
    tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap()
        .code()
}

/// Polls `done` every half second for up to 60 s; true once it holds.
async fn eventually<F, Fut>(mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..120 {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn inside_the_late_data_window_a_job_every_two_seconds_bills_the_previous_month_once() {
    let dir = workspace();
    let sims = multi_source_sims().await;
    let (url, store) = postgres().await;
    let port = free_port();
    let config = config(
        dir.path(),
        &sims,
        &url,
        &format!("[schedule]\ncron = \"*/2 * * * * *\"\n\n[daemon]\nlisten = \"127.0.0.1:{port}\""),
    );
    let log = dir.path().join("daemon.log");
    // 02:00 on 2 November in Oslo: inside the 3-day late-data window of October.
    let child = daemon(dir.path(), &config, "2026-11-02T01:00:00Z", &log);

    let ticks_done = eventually(|| async {
        let ticks = store.job_ticks("nightly").await.unwrap_or_default();
        ticks.iter().filter(|t| t.status.is_some()).count() >= 3
    })
    .await;
    let healthz = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .expect("the daemon answers /healthz");
    let healthz_code = healthz.status().as_u16();
    let health: serde_json::Value = healthz.json().await.unwrap();
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("the daemon answers /metrics")
        .text()
        .await
        .unwrap();
    let exit = stop(child).await;
    let logs = read(&log);
    assert!(
        ticks_done,
        "three ticks did not finish within 60 s:\n{logs}"
    );
    assert_eq!(exit, Some(0), "SIGTERM stops the daemon cleanly:\n{logs}");

    // Every tick ran October (pushed) and November to date (held); all recorded as scheduled.
    let runs = store.runs(100).await.unwrap();
    let scheduled: Vec<_> = runs
        .iter()
        .filter(|r| r.trigger == Trigger::Schedule)
        .collect();
    assert_eq!(scheduled.len(), runs.len(), "{runs:?}");
    let october_runs: Vec<_> = scheduled
        .iter()
        .filter(|r| r.period == october() && r.finished_at.is_some())
        .collect();
    assert!(october_runs.len() >= 2, "{runs:?}");
    assert!(
        scheduled.iter().any(|r| r.period.to_string() == "2026-11"),
        "the month to date is synced too: {runs:?}"
    );
    let first = october_runs.last().unwrap().summary.clone().unwrap();
    assert_ne!(first.status, RunStatus::Failed, "{first:?}\n{logs}");
    assert!(first.lines_pushed > 0, "{first:?}");
    // Later ticks push nothing again: what RamBase holds is one usage per October line.
    let lines = store.ledger_lines(october(), None).await.unwrap();
    let pushed_to_rambase = lines
        .iter()
        .filter(|l| l.sink == "rambase" && l.status == LineStatus::Pushed)
        .count();
    assert_eq!(sims.rambase.usages().len(), pushed_to_rambase, "{lines:?}");
    assert!(lines.iter().all(|l| l.revision == 1), "{lines:?}");

    // Each job's next run, in the billing zone and in UTC, at start and after each run.
    assert!(
        logs.contains("job nightly runs next at 2026-11-02 02:00:0")
            && logs.contains(" CET (2026-11-02T01:00:0"),
        "{logs}"
    );

    assert_eq!(healthz_code, 200, "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["store"], "reachable", "{health}");
    let job = &health["jobs"][0];
    assert_eq!(job["name"], "nightly", "{health}");
    assert!(job["last_run_id"].is_i64(), "{health}");
    assert!(job["last_status"].is_string(), "{health}");
    assert!(job["last_finished_at"].is_string(), "{health}");
    let next = job["next_run"].as_str().unwrap();
    assert!(next.starts_with("2026-11-02T01:0"), "{health}");

    for name in [
        "tally_runs_total{job=\"nightly\",status=\"",
        "tally_records_read_total{job=\"nightly\"}",
        "tally_lines_pushed_total{job=\"nightly\"}",
        "tally_exceptions_total{job=\"nightly\"}",
        "tally_push_failures_total{job=\"nightly\"}",
        "tally_job_last_success_timestamp_seconds{job=\"nightly\"}",
        "tally_job_next_run_timestamp_seconds{job=\"nightly\"}",
        // Counted by the HTTP clients during the ticks' runs, per peer (host:port).
        "tally_http_requests_total{peer=\"127.0.0.1:",
        "tally_http_request_duration_seconds_bucket{peer=\"127.0.0.1:",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("# TYPE tally_runs_total counter"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn after_the_late_data_window_the_month_is_closed_and_scheduled_runs_leave_it_alone() {
    let dir = workspace();
    let sims = multi_source_sims().await;
    let (url, store) = postgres().await;
    let config = config(
        dir.path(),
        &sims,
        &url,
        "[schedule]\ncron = \"*/2 * * * * *\"\nlate_data_days = 3\n\n[daemon]\nlisten = \"\"",
    );
    let log = dir.path().join("daemon.log");
    // 01:00 on 4 November in Oslo: October's 3-day window ended an hour ago.
    let child = daemon(dir.path(), &config, "2026-11-04T00:00:00Z", &log);
    let left_alone = eventually(|| async {
        read(&log).contains("2026-10 is closed; this scheduled run leaves it alone")
    })
    .await;
    let exit = stop(child).await;
    let logs = read(&log);
    assert!(left_alone, "no later tick left October alone:\n{logs}");
    assert_eq!(exit, Some(0), "{logs}");

    let closed = store.closed_period(october()).await.unwrap();
    assert_eq!(
        closed.map(|c| c.closed_by),
        Some("job:nightly".to_owned()),
        "{logs}"
    );
    let runs = store.runs(100).await.unwrap();
    assert!(
        runs.iter().all(|r| r.period != october()),
        "no scheduled run touched October: {runs:?}"
    );
    assert!(
        sims.rambase.usages().is_empty(),
        "nothing of October pushed"
    );
    assert!(logs.contains("closed 2026-10"), "{logs}");

    // A manual run still may bill the closed month, and says it is closed.
    let manual = Command::new(env!("CARGO_BIN_EXE_tally"))
        .current_dir(dir.path())
        .arg("--config")
        .arg(&config)
        .args(["run", "--period", "2026-10"])
        .env_remove("DATABASE_URL")
        .envs(sim::demo_secrets())
        .output()
        .unwrap();
    let out = common::text(&manual);
    assert!(
        matches!(manual.status.code(), Some(0 | 3)),
        "the manual run completes: {out}"
    );
    assert!(
        out.contains("note: 2026-10 is closed (by job:nightly at "),
        "{out}"
    );
    assert!(!sims.rambase.usages().is_empty(), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_daemons_on_one_postgres_database_run_each_tick_once_between_them() {
    let dir = workspace();
    let sims = multi_source_sims().await;
    let (url, store) = postgres().await;
    let config = config(
        dir.path(),
        &sims,
        &url,
        "[[schedule.jobs]]\nname = \"often\"\ncron = \"*/2 * * * * *\"\ntask = \"month_to_date\"\n\n[daemon]\nlisten = \"\"",
    );
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    // The same instant for both: they compute the same ticks.
    let now = "2026-10-20T10:00:00Z";
    let a = daemon(dir.path(), &config, now, &log_a);
    let b = daemon(dir.path(), &config, now, &log_b);
    let (pid_a, pid_b) = (a.id(), b.id());
    let skip = "skipping this tick: another daemon runs it";
    let enough = eventually(|| async {
        let ticks = store.job_ticks("often").await.unwrap_or_default();
        let both_seen = read(&log_a).contains(skip) || read(&log_b).contains(skip);
        both_seen && ticks.iter().filter(|t| t.status.is_some()).count() >= 4
    })
    .await;
    let (exit_a, exit_b) = (stop(a).await, stop(b).await);
    let logs = format!("--- a\n{}\n--- b\n{}", read(&log_a), read(&log_b));
    assert!(
        enough,
        "four ticks and a skip did not show within 60 s:\n{logs}"
    );
    assert_eq!((exit_a, exit_b), (Some(0), Some(0)), "{logs}");

    // One run per tick: every scheduled run belongs to exactly one tick, every finished tick
    // ran one, and the daemon that lost a tick says who won it.
    let ticks = store.job_ticks("often").await.unwrap();
    let runs = store.runs(1000).await.unwrap();
    let mut run_ids: Vec<i64> = runs
        .iter()
        .filter(|r| r.trigger == Trigger::Schedule)
        .map(|r| r.id)
        .collect();
    run_ids.sort();
    let mut tick_runs: Vec<i64> = ticks.iter().filter_map(|t| t.run_id).collect();
    tick_runs.sort();
    assert_eq!(run_ids, tick_runs, "{ticks:?}\n{runs:?}\n{logs}");
    // The loser names the winner: the pid of the other daemon.
    let (log_a, log_b) = (read(&log_a), read(&log_b));
    for (log, other) in [(&log_a, pid_b), (&log_b, pid_a)] {
        for line in log.lines().filter(|l| l.contains(skip)) {
            assert!(line.contains(&format!("pid {other})")), "{line}");
        }
    }
    assert!(
        ticks
            .iter()
            .all(|t| [i64::from(pid_a), i64::from(pid_b)].contains(&t.pid)),
        "{ticks:?}"
    );
}

/// The demo's simulators (October 2026 has data; other months are empty).
async fn multi_source_sims() -> RunningSims {
    let settings = sim::demo_settings(Path::new("data")).unwrap();
    sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_month_to_date_kept_as_drafts_is_pushed_once_by_the_months_normal_run() {
    let sims = multi_source_sims().await;
    let target = common::fresh_postgres().await;
    let settings = common::billable_users_into_rambase(&sims, &target);
    let app = App::build(settings).await.unwrap();
    let options = RunOptions {
        period: october(),
        source: None,
        dry_run: false,
        trigger: Trigger::Schedule,
        customer: None,
        requested_by: None,
    };

    // Two nights of October to date: lines recorded as drafts, nothing sent.
    for _ in 0..2 {
        let held = pipeline::run_holding_drafts(&app, &options).await.unwrap();
        assert_eq!(held.summary.lines_pushed, 0, "{:?}", held.summary);
        let lines = app.store.ledger_lines(october(), None).await.unwrap();
        assert!(!lines.is_empty());
        assert!(
            lines.iter().all(|l| l.status == LineStatus::Draft),
            "{lines:?}"
        );
        assert!(
            sims.rambase.usages().is_empty(),
            "a held run pushes nothing"
        );
    }

    // The month's normal run pushes each held line once, as its first revision.
    let normal = pipeline::run(&app, &options).await.unwrap();
    let lines = app.store.ledger_lines(october(), None).await.unwrap();
    assert!(
        lines
            .iter()
            .all(|l| l.status == LineStatus::Pushed && l.revision == 1),
        "{lines:?}"
    );
    assert_eq!(normal.summary.lines_pushed, lines.len() as u64);
    assert_eq!(sims.rambase.usages().len(), lines.len());
    let again = pipeline::run(&app, &options).await.unwrap();
    assert_eq!(again.summary.lines_pushed, 0);
    assert_eq!(sims.rambase.usages().len(), lines.len(), "never twice");
}

/// The daemon's bookkeeping on `store`: a tick is won once, a month closed once.
async fn ticks_are_claimed_once_and_months_closed_once(store: Store) {
    let fire = chrono::DateTime::parse_from_rfc3339("2026-11-02T01:30:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert_eq!(
        store.claim_tick("nightly", fire).await.unwrap(),
        tally::store::TickClaim::Won
    );
    let again = store.claim_tick("nightly", fire).await.unwrap();
    assert_eq!(
        again,
        tally::store::TickClaim::Taken {
            host: tally::store::this_host(),
            pid: i64::from(std::process::id()),
        },
        "the second claim names who holds it"
    );
    assert_eq!(
        store.claim_tick("other", fire).await.unwrap(),
        tally::store::TickClaim::Won,
        "each job has its own ticks"
    );
    assert_eq!(store.last_tick("nightly").await.unwrap(), None);
    store
        .record_tick_run("nightly", fire, Some(7), "completed")
        .await
        .unwrap();
    let last = store.last_tick("nightly").await.unwrap().unwrap();
    assert_eq!(
        (last.fire_at, last.run_id, last.status.as_deref()),
        (fire, Some(7), Some("completed"))
    );

    assert_eq!(store.closed_period(october()).await.unwrap(), None);
    assert!(store.close_period(october(), "job:nightly").await.unwrap());
    assert!(!store.close_period(october(), "job:other").await.unwrap());
    let closed = store.closed_period(october()).await.unwrap().unwrap();
    assert_eq!(closed.closed_by, "job:nightly", "the first close stands");
}

#[tokio::test]
async fn postgres_ticks_are_claimed_once_and_months_closed_once() {
    let (_, store) = postgres().await;
    ticks_are_claimed_once_and_months_closed_once(store).await;
}

#[tokio::test]
async fn sqlite_ticks_are_claimed_once_and_months_closed_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&common::fresh_sqlite(&dir)).await.unwrap();
    ticks_are_claimed_once_and_months_closed_once(store).await;
}

#[test]
fn the_daemon_lists_every_problem_of_its_zones_jobs_and_address_and_exits_2() {
    let dir = workspace();
    let path = dir.path().join("config/demo.toml");
    let mut toml = std::fs::read_to_string(&path).unwrap().replacen(
        "timezone = \"UTC\"",
        "timezone = \"Mars/Olympus\"",
        1,
    );
    toml.push_str(
        "\n[schedule]\nlate_data_days = 31\n\n[[schedule.jobs]]\nname = \"nightly\"\ncron = \"30 2 * * *\"\ntimezone = \"Europe/Olso\"\n\n[daemon]\nlisten = \"nowhere\"\n",
    );
    std::fs::write(&path, toml).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .current_dir(dir.path())
        .args(["--config", "config/demo.toml", "daemon"])
        .env_remove("DATABASE_URL")
        .envs(sim::demo_secrets())
        .output()
        .unwrap();
    let out = common::text(&output);
    assert_eq!(output.status.code(), Some(2), "{out}");
    for problem in [
        "general.timezone: unknown time zone \"Mars/Olympus\"",
        "schedule.jobs[0].cron: invalid cron expression \"30 2 * * *\"",
        "schedule.jobs[0].timezone: unknown time zone \"Europe/Olso\"",
        "schedule.late_data_days: is 31",
        "daemon.listen: \"nowhere\" is not an address",
    ] {
        assert!(out.contains(problem), "{problem}\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_answers_503_once_the_store_is_gone() {
    let dir = workspace();
    let sims = multi_source_sims().await;
    let (url, _store) = postgres().await;
    let port = free_port();
    // Once a year: no tick runs during the test.
    let config = config(
        dir.path(),
        &sims,
        &url,
        &format!("[schedule]\ncron = \"0 0 3 1 1 *\"\n\n[daemon]\nlisten = \"127.0.0.1:{port}\""),
    );
    let log = dir.path().join("daemon.log");
    let child = daemon(dir.path(), &config, "2026-11-02T01:00:00Z", &log);
    let healthz = format!("http://127.0.0.1:{port}/healthz");
    let mut before = None;
    for _ in 0..120 {
        if let Ok(answer) = reqwest::get(&healthz).await {
            before = Some((answer.status().as_u16(), answer.text().await.unwrap()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(before.is_some(), "/healthz never answered:\n{}", read(&log));
    let server = std::env::var("DATABASE_URL").unwrap();
    Store::drop_scratch_database(&server, &url).await.unwrap();
    let after = reqwest::get(&healthz).await.unwrap();
    let after_code = after.status().as_u16();
    let after: serde_json::Value = after.json().await.unwrap();
    let exit = stop(child).await;
    let logs = read(&log);

    let (code, body) = before.unwrap();
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["jobs"][0],
        serde_json::json!({
            "name": "nightly",
            "last_run_id": null,
            "last_status": null,
            "last_finished_at": null,
            "next_run": "2027-01-01T02:00:00+00:00",
        }),
        "03:00 on 1 January in Oslo is 02:00 UTC; no run yet"
    );
    assert_eq!(after_code, 503, "{after}\n{logs}");
    assert_eq!(after["status"], "unavailable", "{after}");
    assert_eq!(after["store"], "unreachable", "{after}");
    assert_eq!(after["jobs"][0]["name"], "nightly", "{after}");
    assert_eq!(exit, Some(0), "{logs}");
}
