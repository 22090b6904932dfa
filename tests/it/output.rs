//! What an operator reads: the real binary's output into pipes that close early, its log
//! (no library chatter, no colour codes in a file, JSON with the summary as fields and the
//! run's spans), the progress counters, tables fitted to the width, and help that teaches.

use crate::common::{database_url, demo_checkout, fresh_postgres, fresh_sqlite, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use tally::sim;

fn tally() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    // The filter and the width are the test's to choose, not the shell's it runs in.
    command
        .env_remove("RUST_LOG")
        .env_remove("COLUMNS")
        .env_remove("NO_COLOR")
        .env_remove("DATABASE_URL");
    command
}

/// Runs `tally --config <config> <args>` in `dir`, with the demo's secrets, off the runtime
/// (the simulators are served by this process's runtime while the binary runs).
async fn run_in(dir: &Path, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let (dir, config) = (dir.to_path_buf(), config.to_path_buf());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        tally()
            .current_dir(dir)
            .arg("--config")
            .arg(config)
            .args(args)
            .envs(sim::demo_secrets())
            .envs(env)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// The demo's simulators and a checkout pointed at them and at `db`.
async fn demo_on(db: &str) -> (sim::RunningSims, tempfile::TempDir, PathBuf) {
    let settings = sim::demo_settings(Path::new("data")).unwrap();
    let sims = sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap();
    let (dir, config) = demo_checkout(&sims, db);
    (sims, dir, config)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `tally ... | head -1`, with a reader that goes away before tally writes anything: every
/// write tally makes meets a closed pipe, whatever the size of its output.
fn into_closed_pipe(dir: &Path, config: &Path, args: &[&str]) -> Output {
    let mut child = tally()
        .current_dir(dir)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn output_into_a_pipe_that_closes_early_ends_quietly() {
    let state = tempfile::tempdir().unwrap();
    let db = database_url(&fresh_sqlite(&state));
    let (_sims, dir, config) = demo_on(&db).await;
    let run = run_in(dir.path(), &config, &["run", "--period", "2026-10"], &[]).await;
    assert_eq!(run.status.code(), Some(3), "{}", text(&run));
    for args in [
        &["lines", "--period", "2026-10", "--format", "json"][..],
        &["lines", "--period", "2026-10", "--format", "csv"],
        &["lines", "--period", "2026-10"],
        &["lines", "--period", "2026-10", "--exceptions"],
        &["runs"],
    ] {
        let (d, c) = (dir.path().to_path_buf(), config.clone());
        let output = tokio::task::spawn_blocking(move || into_closed_pipe(&d, &c, args))
            .await
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "tally {args:?} into a closed pipe: {}",
            stderr(&output)
        );
        assert_eq!(
            stderr(&output),
            "",
            "tally {args:?} into a closed pipe says nothing"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_log_holds_no_library_chatter_and_no_colour_codes_in_a_file() {
    let db = database_url(&fresh_postgres().await);
    let (_sims, dir, config) = demo_on(&db).await;
    // The first migration creates `_sqlx_migrations`; every later start-up asks Postgres to
    // create it "if not exists", which Postgres answers with a notice.
    let migrate = run_in(dir.path(), &config, &["migrate"], &[]).await;
    assert_eq!(migrate.status.code(), Some(0), "{}", text(&migrate));
    // The demo configuration logs warnings only; an operator's `info` is where sqlx's notices
    // showed up.
    let info = [("TALLY__LOG__LEVEL", "info")];
    let run = run_in(dir.path(), &config, &["run", "--period", "2026-10"], &info).await;
    assert_eq!(run.status.code(), Some(3), "{}", text(&run));
    let log = stderr(&run);
    assert!(log.contains("run started"), "tally logs at info: {log}");
    assert!(
        !log.contains("_sqlx_migrations") && !log.contains("sqlx::"),
        "no sqlx chatter at the default level: {log}"
    );
    assert!(
        !log.contains('\u{1b}') && !String::from_utf8_lossy(&run.stdout).contains('\u{1b}'),
        "no colour codes when the streams are not terminals: {log}"
    );
    // Asked for, the notices are there: the filter is what hides them.
    let asked = run_in(
        dir.path(),
        &config,
        &["run", "--period", "2026-10"],
        &[("RUST_LOG", "info,sqlx=info")],
    )
    .await;
    assert!(
        stderr(&asked).contains("_sqlx_migrations"),
        "{}",
        stderr(&asked)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_summary_as_fields_and_the_run_source_and_page_spans() {
    let state = tempfile::tempdir().unwrap();
    let db = database_url(&fresh_sqlite(&state));
    let (_sims, dir, config) = demo_on(&db).await;
    // The demo configuration logs text; the flag wins. `tally=debug` for an event inside a
    // page's request (signing in to CCC).
    let run = run_in(
        dir.path(),
        &config,
        &["--log-format", "json", "run", "--period", "2026-10"],
        &[("RUST_LOG", "info,tally=debug")],
    )
    .await;
    assert_eq!(run.status.code(), Some(3), "{}", text(&run));
    let events: Vec<serde_json::Value> = stderr(&run)
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))
        })
        .collect();
    let summary = events
        .iter()
        .find(|e| e["fields"]["message"] == "run summary")
        .unwrap_or_else(|| panic!("no run summary in {events:#?}"));
    let fields = &summary["fields"];
    assert_eq!(summary["level"], "WARN", "completed with exceptions");
    assert_eq!(fields["status"], "completed_with_exceptions");
    assert_eq!(fields["period"], "2026-10");
    assert_eq!(fields["records_read"], 95);
    assert_eq!(fields["lines_created"], 12);
    assert_eq!(fields["lines_pushed"], 12);
    assert_eq!(fields["exceptions"], 3);
    assert_eq!(fields["failed_sources"], "");
    let totals: serde_json::Value =
        serde_json::from_str(fields["totals"].as_str().unwrap()).unwrap();
    assert_eq!(
        totals,
        serde_json::json!({"EUR": "2846.00", "NOK": "945.00"})
    );
    assert!(fields["run_id"].is_number(), "{summary}");

    let spans = |e: &serde_json::Value| e["spans"].as_array().cloned().unwrap_or_default();
    let started = events
        .iter()
        .find(|e| e["fields"]["message"] == "run started")
        .unwrap();
    let run_span = &spans(started)[0];
    assert_eq!(run_span["name"], "run");
    assert_eq!(run_span["period"], "2026-10");
    assert_eq!(run_span["trigger"], "manual");
    assert_eq!(run_span["run_id"], fields["run_id"]);
    let extracted: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["fields"]["message"] == "extraction complete")
        .collect();
    for source in ["billable_users", "ccc", "genesys"] {
        assert!(
            extracted.iter().any(|e| spans(e)
                .iter()
                .any(|s| s["name"] == "source" && s["source"] == source)),
            "no extraction of {source} in a source span: {extracted:#?}"
        );
    }
    let in_page = events
        .iter()
        .find(|e| spans(e).iter().any(|s| s["name"] == "page"))
        .unwrap_or_else(|| panic!("no event in a page span: {events:#?}"));
    let page = spans(in_page)
        .into_iter()
        .find(|s| s["name"] == "page")
        .unwrap();
    assert!(page["scope"].is_string() && page["page"] == 1, "{in_page}");
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_counts_the_pages_records_and_pushes_of_the_run_it_watches() {
    let settings = sim::demo_settings(Path::new("data")).unwrap();
    let sims = sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap();
    let db = fresh_postgres().await;
    let mut settings = crate::common::billable_users_into_rambase(&sims, &db);
    // Five people a page: the demo's 52 entries come in 11 pages.
    settings.sources.billable_users.as_mut().unwrap().per_page = 5;
    let app = tally::pipeline::App::build(settings).await.unwrap();
    let options = tally::pipeline::RunOptions {
        period: "2026-10".parse().unwrap(),
        source: None,
        dry_run: false,
        trigger: tally::domain::Trigger::Manual,
        customer: None,
        requested_by: None,
    };
    let progress = std::sync::Arc::new(tally::observe::Progress::default());
    let report = progress
        .clone()
        .scope(tally::pipeline::run(&app, &options))
        .await
        .unwrap();
    let seen = progress.snapshot();
    assert_eq!(report.summary.lines_pushed, 4);
    assert_eq!(seen.lines_pushed, report.summary.lines_pushed);
    assert_eq!(seen.pages, 11, "{seen}");
    assert_eq!(seen.records, 52, "{seen}");
    assert_eq!(sims.rambase.usages().len(), 4);

    // A run outside the scope counts nothing into it.
    tally::pipeline::run(&app, &options).await.unwrap();
    assert_eq!(progress.snapshot(), seen);
}

/// Every whitespace-separated word of `text`.
fn words(text: &str) -> std::collections::BTreeSet<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_fit_a_hundred_columns_without_cutting_a_word() {
    let state = tempfile::tempdir().unwrap();
    let db = database_url(&fresh_sqlite(&state));
    let (_sims, dir, config) = demo_on(&db).await;
    let run = run_in(dir.path(), &config, &["run", "--period", "2026-10"], &[]).await;
    assert_eq!(run.status.code(), Some(3), "{}", text(&run));
    let lines_args = ["lines", "--period", "2026-10"];
    let exceptions_args = ["lines", "--period", "2026-10", "--exceptions"];
    let columns = [("COLUMNS", "100")];

    // What the cells hold, from the machine-readable formats.
    let csv = run_in(
        dir.path(),
        &config,
        &[&lines_args[..], &["--format", "csv"]].concat(),
        &[],
    )
    .await;
    let mut reader = csv::Reader::from_reader(&csv.stdout[..]);
    let mut cell_words = std::collections::BTreeSet::new();
    for record in reader.records() {
        // The table's thirteen columns come first in the CSV.
        for cell in record.unwrap().iter().take(13) {
            cell_words.extend(words(cell));
        }
    }
    assert!(cell_words.contains("activeplatform") && cell_words.contains("Professional"));
    let json = run_in(
        dir.path(),
        &config,
        &[&exceptions_args[..], &["--format", "json"]].concat(),
        &[],
    )
    .await;
    let exceptions: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(exceptions.len(), 3);
    let mut exception_words = std::collections::BTreeSet::new();
    for e in &exceptions {
        for field in ["source", "kind", "customer_key", "message"] {
            exception_words.extend(words(e[field].as_str().unwrap()));
        }
    }

    for (args, expected) in [
        (&lines_args[..], &cell_words),
        (&exceptions_args, &exception_words),
    ] {
        let output = run_in(dir.path(), &config, args, &columns).await;
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        let table = String::from_utf8(output.stdout).unwrap();
        for line in table.lines() {
            assert!(
                line.chars().count() <= 100,
                "tally {args:?} with COLUMNS=100: a line of {} columns:\n{table}",
                line.chars().count()
            );
        }
        let shown = words(&table);
        for word in expected {
            assert!(
                shown.contains(word),
                "tally {args:?} with COLUMNS=100 cut {word:?}:\n{table}"
            );
        }
    }

    // Into a pipe with no COLUMNS: no limit, one line per revision, as before.
    let piped = run_in(dir.path(), &config, &lines_args, &[]).await;
    let table = String::from_utf8(piped.stdout).unwrap();
    // Header, rule, twelve revisions, two totals.
    assert_eq!(table.lines().count(), 16, "{table}");
    assert!(
        table.lines().any(|l| l.contains("2000057")
            && l.contains("Professional")
            && l.ends_with("activeplatform")),
        "{table}"
    );
}

#[test]
fn every_subcommand_help_shows_its_exit_codes_and_an_example() {
    use clap::CommandFactory as _;
    let names: Vec<String> = tally::cli::Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    assert!(names.len() >= 11, "{names:?}");
    for name in &names {
        let long = tally().args([name, "--help"]).output().unwrap();
        assert_eq!(long.status.code(), Some(0), "{}", text(&long));
        let help = String::from_utf8_lossy(&long.stdout);
        assert!(
            help.contains("Exit codes:"),
            "`tally {name} --help` shows no exit codes:\n{help}"
        );
        assert!(
            help.contains("Example"),
            "`tally {name} --help` shows no example:\n{help}"
        );
        // The short help keeps the exit codes too.
        let short = tally().args([name, "-h"]).output().unwrap();
        assert!(
            String::from_utf8_lossy(&short.stdout).contains("Exit codes:"),
            "`tally {name} -h` shows no exit codes"
        );
    }
    // The global flag is documented on every command.
    let help = text(&tally().args(["run", "--help"]).output().unwrap());
    assert!(help.contains("--log-format"), "{help}");
}
