//! What an operator reads: the real binary's output into pipes that close early, its log
//! (no library chatter, no colour codes in a file, JSON with the summary as fields and the
//! run's spans), the progress counters, tables fitted to the width, and help that teaches.

use crate::common::{database_url, demo_checkout, fresh_sqlite, text};
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
