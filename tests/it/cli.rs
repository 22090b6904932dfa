//! The `tally` binary as an operator uses it: exit codes, output, messages.

use crate::common::{repo, text};
use std::path::{Path, PathBuf};
use std::process::Command;
use tally::sim;

fn tally() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tally"))
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

/// A configuration file for `--config` pointing at running simulators; secrets go in the
/// environment, as in production.
fn config_for(dir: &Path, sims: &sim::RunningSims, database_url: &str) -> PathBuf {
    let demo = std::fs::read_to_string(dir.join("config/demo.toml")).unwrap();
    let demo = demo
        .replace("http://127.0.0.1:8081/v1", &sims.billable_users_url)
        .replace("http://127.0.0.1:8082/", &sims.rambase_url)
        .replace("http://127.0.0.1:8083/api", &sims.ccc_url)
        .replace("http://127.0.0.1:8084", &sims.genesys_url)
        .replace("http://127.0.0.1:8085/", &sims.activeplatform_url)
        .replace(
            "[general]",
            &format!("[database]\nurl = \"{database_url}\"\n\n[general]"),
        );
    let path = dir.join("config/test.toml");
    std::fs::write(&path, demo).unwrap();
    path
}

#[test]
fn help_explains_every_command() {
    let output = tally().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = text(&output);
    for command in [
        "run",
        "lines",
        "runs",
        "approve",
        "migrate",
        "check-config",
        "sim",
        "demo",
        "daemon",
    ] {
        assert!(
            help.contains(command),
            "{command} missing from --help:\n{help}"
        );
    }
    assert!(help.contains("Exit codes"), "{help}");
    for command in [
        "run",
        "lines",
        "runs",
        "approve",
        "push",
        "migrate",
        "check-config",
        "sim",
        "demo",
        "daemon",
        "bench",
    ] {
        let own = text(&tally().args([command, "--help"]).output().unwrap());
        assert!(
            own.contains("Exit codes:"),
            "`tally {command} --help` names no exit codes:\n{own}"
        );
    }
    let run_help = text(&tally().args(["run", "--help"]).output().unwrap());
    assert!(
        run_help.contains("--dry-run") && run_help.contains("--period"),
        "{run_help}"
    );
}

#[test]
fn a_malformed_pricing_table_fails_with_the_row_and_column() {
    let dir = workspace();
    let pricing = dir.path().join("config/demo/pricing.csv");
    let mut csv = std::fs::read_to_string(&pricing).unwrap();
    // Row 3 of the spreadsheet (the header is row 1) gets a unit price that is not a number.
    csv = csv.replacen("11,50,10.00", "11,50,ten", 1);
    std::fs::write(&pricing, csv).unwrap();
    let output = tally()
        .current_dir(dir.path())
        .args(["check-config", "--config", "config/demo.toml"])
        .env_remove("DATABASE_URL")
        .env("TALLY__SOURCES__BILLABLE_USERS__TOKEN", "t")
        .env("TALLY__SINKS__RAMBASE__CLIENT_SECRET", "s")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let message = text(&output);
    assert!(
        message.contains("config/demo/pricing.csv:3:unit_price"),
        "{message}"
    );
    assert!(message.contains("ten"), "says what was found: {message}");
}

#[test]
fn a_missing_secret_fails_at_start_up_naming_the_variable() {
    let dir = workspace();
    let output = tally()
        .current_dir(dir.path())
        .args(["run", "--config", "config/demo.toml", "--period", "2026-10"])
        .env_remove("DATABASE_URL")
        .env_remove("TALLY__SOURCES__BILLABLE_USERS__TOKEN")
        .env("TALLY__SINKS__RAMBASE__CLIENT_SECRET", "s")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("TALLY__SOURCES__BILLABLE_USERS__TOKEN"),
        "{}",
        text(&output)
    );
    assert!(
        !dir.path().join("data/tally.db").exists(),
        "nothing is written on bad configuration"
    );
}

#[test]
fn a_bad_period_is_a_usage_error() {
    let output = tally()
        .args(["run", "--period", "2026-13"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("YYYY-MM"), "{}", text(&output));
}

#[tokio::test(flavor = "multi_thread")]
async fn run_prints_one_json_summary_and_exits_3_on_exceptions() {
    let dir = workspace();
    let settings = sim::demo_settings(&dir.path().join("data")).unwrap();
    let sims = sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap();
    let db = format!("sqlite://{}", dir.path().join("data/tally.db").display());
    let config = config_for(dir.path(), &sims, &db);
    let run = |args: &'static [&'static str]| {
        let config = config.clone();
        let cwd = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            tally()
                .current_dir(cwd)
                .arg("--config")
                .arg(config)
                .args(args)
                .env_remove("DATABASE_URL")
                .envs(sim::demo_secrets())
                .output()
                .unwrap()
        })
    };

    let dry = run(&["run", "--period", "2026-10", "--dry-run"])
        .await
        .unwrap();
    assert_eq!(dry.status.code(), Some(3), "{}", text(&dry));
    assert!(text(&dry).contains("create"), "{}", text(&dry));
    assert!(sims.rambase.usages().is_empty(), "a dry run pushes nothing");

    let output = run(&["run", "--period", "2026-10", "--output", "json"])
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["status"], "completed_with_exceptions");
    assert_eq!(summary["period"], "2026-10");
    // 51 people, 33 CCC users with usage, 11 Genesys usage names.
    assert_eq!(summary["records_read"], 95);
    assert_eq!(summary["lines_created"], 12);
    assert_eq!(summary["lines_pushed"], 12);
    // Hooli Labs (unmapped) and the WEM add-on of both Genesys orgs (no license type).
    assert_eq!(summary["exceptions"], 3);
    // RamBase 145.00 + 262.50 + 100.00; ActivePlatform 2,338.50.
    assert_eq!(summary["totals"]["EUR"], "2846.00");
    assert_eq!(summary["totals"]["NOK"], "945.00");
    assert!(summary["run_id"].is_number());
    assert_eq!(sims.rambase.usages().len(), 4);
    assert_eq!(sims.activeplatform.corrections().len(), 8);

    let lines = run(&["lines", "--period", "2026-10", "--format", "csv"])
        .await
        .unwrap();
    assert_eq!(lines.status.code(), Some(0), "{}", text(&lines));
    let csv = String::from_utf8_lossy(&lines.stdout).to_string();
    assert!(
        csv.contains("ACME-001,Service desk user,billable_users,1,line,12,"),
        "{csv}"
    );
    assert!(csv.contains("262.50"), "{csv}");

    let exceptions = run(&["lines", "--period", "2026-10", "--exceptions"])
        .await
        .unwrap();
    assert!(
        text(&exceptions).contains("Hooli Labs"),
        "{}",
        text(&exceptions)
    );

    let runs = run(&["runs"]).await.unwrap();
    assert!(
        text(&runs).contains("completed_with_exceptions"),
        "{}",
        text(&runs)
    );
}

#[test]
fn the_demo_runs_twice_and_the_second_time_pushes_nothing() {
    let dir = workspace();
    let demo = || {
        tally()
            .current_dir(dir.path())
            .arg("demo")
            .env_remove("DATABASE_URL")
            .output()
            .unwrap()
    };
    let first = demo();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let out = text(&first);
    assert!(out.contains("ACME-001") && out.contains("145.00"), "{out}");
    assert!(
        out.contains("total EUR pushed: 2846.00") && out.contains("total NOK pushed: 945.00"),
        "{out}"
    );
    // A customer of each billing system: Initech's CCC service, found in ActivePlatform by
    // the attribute holding its GUID, and Globex's Genesys org, mapped to an ActivePlatform id.
    let line = |customer: &str, license: &str| {
        out.lines()
            .find(|l| l.contains(customer) && l.contains(license))
            .unwrap_or_else(|| panic!("no line of {customer} {license}: {out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(
        line("2000057", "Professional")
            .ends_with("ccc 1 line 21 9.0000 189.00 EUR pushed activeplatform"),
        "{out}"
    );
    assert!(
        line("2000041", "CX 3")
            .ends_with("genesys 1 line 6 152.5000 915.00 EUR pushed activeplatform"),
        "{out}"
    );
    assert!(
        line("ACME-001", "Service desk")
            .ends_with("billable_users 1 line 12 12.0833 145.00 EUR pushed rambase"),
        "{out}"
    );
    assert!(
        out.contains("Hooli Labs"),
        "the unmapped organization is shown: {out}"
    );
    assert!(out.contains("received 4 new usage(s)"), "{out}");
    assert!(out.contains("received 8 new correction(s)"), "{out}");

    let second = demo();
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let out = text(&second);
    assert!(out.contains("received 0 new usage(s)"), "{out}");
    assert!(out.contains("received 0 new correction(s)"), "{out}");
    assert!(out.contains("lines pushed      0"), "{out}");
    let state = std::fs::read_to_string(dir.path().join("data/sim/rambase.json")).unwrap();
    assert!(
        state.contains("100001"),
        "the simulator kept its state under ./data/"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_runs_on_its_schedule_and_stops_cleanly_on_sigterm() {
    let dir = workspace();
    let settings = sim::demo_settings(&dir.path().join("data")).unwrap();
    let sims = sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap();
    let db = format!("sqlite://{}", dir.path().join("data/tally.db").display());
    let config = config_for(dir.path(), &sims, &db);
    // Every second, so that the test sees a scheduled run quickly.
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(
        "\n[schedule]\ncron = \"* * * * * *\"\ntimezone = \"UTC\"\n\n[daemon]\nlisten = \"\"\n",
    );
    std::fs::write(&config, toml).unwrap();

    // The test's own connection migrates the store before the daemon starts: two processes
    // migrating one SQLite file at the same instant would race.
    let store = tally::store::Store::connect(&tally::store::DatabaseTarget::Sqlite(
        dir.path().join("data/tally.db"),
    ))
    .await
    .unwrap();
    let mut daemon = tally()
        .current_dir(dir.path())
        .arg("--config")
        .arg(&config)
        .arg("daemon")
        .env_remove("DATABASE_URL")
        .envs(sim::demo_secrets())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let mut scheduled = None;
    for _ in 0..60 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        if let Ok(runs) = store.runs(10).await
            && let Some(run) = runs
                .into_iter()
                .find(|r| r.trigger == tally::domain::Trigger::Schedule && r.finished_at.is_some())
        {
            scheduled = Some(run);
            break;
        }
    }
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(daemon.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || daemon.wait())
        .await
        .unwrap()
        .unwrap();
    let run = scheduled.expect("the daemon recorded a scheduled run within 30 s");
    assert_ne!(run.status, tally::domain::RunStatus::Failed, "{run:?}");
    assert_eq!(exit.code(), Some(0), "SIGTERM stops the daemon cleanly");
}

/// The benchmark of docs/PERFORMANCE.md, at sizes a test can afford: two data sets on both
/// stores. It must exit 0 (every first run pushed one line per organization into the file
/// sink, every re-run nothing) and print the table with its rows and ratios.
#[test]
fn the_benchmark_runs_end_to_end_on_postgres_and_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let output = tally()
        .current_dir(dir.path())
        .args([
            "bench",
            "--sizes",
            "300,600",
            "--people-per-org",
            "100",
            "--bare-runs",
            "1",
        ])
        .output()
        .unwrap();
    let out = text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    for row in [
        "| 300 users / 3 orgs | — | bare fetch-and-parse (8 connections, best of 1) |",
        "| 600 users / 6 orgs | — | bare fetch-and-parse (8 connections, best of 1) |",
    ] {
        assert!(stdout.contains(row), "{row} in {stdout}");
    }
    for store in ["postgres", "sqlite"] {
        for (set, lines) in [("300 users / 3 orgs", 3), ("600 users / 6 orgs", 6)] {
            let first = format!("| {set} | {store} | first run |");
            let row = stdout
                .lines()
                .find(|l| l.starts_with(&first))
                .unwrap_or_else(|| panic!("{first} in {stdout}"));
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            assert_eq!(cells[6], lines.to_string(), "lines pushed: {row}");
            assert!(cells[7].ends_with("MiB"), "peak RSS: {row}");
            let rerun = format!("| {set} | {store} | re-run |");
            let row = stdout
                .lines()
                .find(|l| l.starts_with(&rerun))
                .unwrap_or_else(|| panic!("{rerun} in {stdout}"));
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            assert_eq!(cells[6], "0", "nothing pushed on the re-run: {row}");
        }
        for ratio in [
            format!("| first run / bare fetch, 600 users / 6 orgs | {store} |"),
            format!("| re-run / first run, 600 users / 6 orgs | {store} |"),
            format!("| peak RSS at 600 / at 300 users | {store} |"),
            format!("| peak RSS at 600 users (goal stated at 1,000,000) | {store} |"),
        ] {
            assert!(stdout.contains(&ratio), "{ratio} in {stdout}");
        }
    }
}

/// A size that is not a whole number of organizations is bad usage (exit 2), said before any
/// work.
#[test]
fn the_benchmark_refuses_a_size_that_is_not_whole_organizations() {
    let output = tally()
        .args(["bench", "--sizes", "150", "--stores", "sqlite"])
        .output()
        .unwrap();
    let out = text(&output);
    assert_eq!(output.status.code(), Some(2), "{out}");
    assert!(out.contains("multiple of --people-per-org (100)"), "{out}");
}
