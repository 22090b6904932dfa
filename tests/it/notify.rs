//! Notifications as an operator's webhook receives them: the real `tally run` against the
//! simulators with `[notify]` pointed at a test server that records every POST. A failed run's
//! summary arrives with the bearer token; a webhook that fails is retried and never changes the
//! run's exit code; one that never answers holds the run no longer than its timeouts.

use crate::common::{repo, text};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tally::sim;

/// What the webhook does with each POST: answer a status, or never answer.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    Never,
}

/// One POST the webhook received: its Authorization header and its JSON body.
type Received = (Option<String>, Value);

#[derive(Clone, Default)]
struct Hook {
    /// The answers to give, in order; the last one repeats.
    script: Arc<Vec<Answer>>,
    /// Every POST received: its Authorization header and its JSON body.
    received: Arc<Mutex<Vec<Received>>>,
}

async fn receive(State(hook): State<Hook>, headers: HeaderMap, body: String) -> StatusCode {
    let answer = {
        let mut received = hook.received.lock().unwrap();
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        received.push((auth, serde_json::from_str(&body).unwrap_or(Value::Null)));
        let n = received.len() - 1;
        hook.script[n.min(hook.script.len() - 1)]
    };
    match answer {
        Answer::Status(code) => StatusCode::from_u16(code).unwrap(),
        Answer::Never => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}

/// A webhook on a free loopback port answering `script`; returns its URL and its record.
async fn webhook(script: Vec<Answer>) -> (String, Hook) {
    let hook = Hook {
        script: Arc::new(script),
        received: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/hooks/tally/s3cret-path", axum::routing::post(receive))
        .with_state(hook.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hooks/tally/s3cret-path",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hook)
}

/// A checkout-like folder with the demo configuration pointed at `sims`, an SQLite state file
/// in it, and `[notify]` as given.
fn workspace(sims: &sim::RunningSims, notify: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(config.join("demo")).unwrap();
    for file in ["demo/pricing.csv", "demo/customers.csv"] {
        std::fs::copy(repo().join("config").join(file), config.join(file)).unwrap();
    }
    let demo = std::fs::read_to_string(repo().join("config/demo.toml"))
        .unwrap()
        .replace("http://127.0.0.1:8081/v1", &sims.billable_users_url)
        .replace("http://127.0.0.1:8082/", &sims.rambase_url)
        .replace("http://127.0.0.1:8083/api", &sims.ccc_url)
        .replace("http://127.0.0.1:8084", &sims.genesys_url)
        .replace("http://127.0.0.1:8085/", &sims.activeplatform_url);
    std::fs::write(
        config.join("demo.toml"),
        format!("{demo}\n[notify]\n{notify}\n"),
    )
    .unwrap();
    dir
}

/// `tally run --period 2026-10` in `dir` with the demo secrets and `env`, run off the async
/// threads (the simulators and the webhook serve on them meanwhile). A run still going after
/// two minutes is killed and fails the test: it hung.
async fn run(dir: &Path, env: &[(&str, &str)]) -> Output {
    let dir = dir.to_owned();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
            .current_dir(&dir)
            .args(["--config", "config/demo.toml", "run", "--period", "2026-10"])
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn")
            .envs(sim::demo_secrets())
            .envs(env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(120) {
                child.kill().unwrap();
                panic!("tally run hung on its webhook");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

async fn sims() -> sim::RunningSims {
    let settings = sim::demo_settings(Path::new("data")).unwrap();
    sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap()
}

/// A source made to fail (CCC refuses the password): the run exits 1 and the webhook receives
/// one POST with the failed event, the run's summary naming the source, and the bearer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_sends_its_summary_to_the_webhook() {
    let sims = sims().await;
    let (url, hook) = webhook(vec![Answer::Status(204)]).await;
    let dir = workspace(&sims, &format!("url = \"{url}\"\non = [\"failed\"]\n"));
    let output = run(
        dir.path(),
        &[
            ("TALLY__SOURCES__CCC__PASSWORD", "wrong-password"),
            ("TALLY__NOTIFY__WEBHOOK_TOKEN", "hook-token-123"),
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let received = hook.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1, "one notification: {received:?}");
    let (auth, body) = &received[0];
    assert_eq!(auth.as_deref(), Some("Bearer hook-token-123"));
    assert_eq!(body["event"], "failed");
    assert_eq!(body["status"], "failed");
    assert_eq!(body["period"], "2026-10");
    assert_eq!(body["trigger"], "manual");
    assert!(body["run_id"].is_i64(), "{body}");
    assert_eq!(body["summary"]["status"], "failed");
    assert_eq!(body["summary"]["failed_sources"][0]["source"], "ccc");
    assert!(
        body["summary"]["records_read"].as_u64().unwrap() > 0,
        "{body}"
    );
    let message = body["text"].as_str().unwrap();
    assert!(message.contains("ended failed"), "{message}");
    assert!(message.contains("source ccc failed"), "{message}");
    assert!(
        !text(&output).contains("hook-token-123"),
        "{}",
        text(&output)
    );
}

/// The demo month ends with exceptions (exit 3). A webhook that answers 500 is asked again and
/// gets the same notification; the exit code stays 3. A webhook that always fails is logged by
/// its origin only (its path may be its secret) and the exit code still stays 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_is_retried_and_never_changes_the_exit_code() {
    let sims = sims().await;
    let (url, hook) = webhook(vec![Answer::Status(500), Answer::Status(200)]).await;
    let dir = workspace(&sims, &format!("url = \"{url}\"\nbackoff_ms = 10\n"));
    let output = run(dir.path(), &[]).await;
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    let received = hook.received.lock().unwrap().clone();
    assert_eq!(received.len(), 2, "a 500, then the retry: {received:?}");
    assert_eq!(received[0].1, received[1].1, "the same notification");
    assert_eq!(received[1].1["event"], "exceptions");
    assert!(received[1].1["summary"]["exceptions"].as_u64().unwrap() > 0);

    let (url, hook) = webhook(vec![Answer::Status(503)]).await;
    let dir = workspace(
        &sims,
        &format!("url = \"{url}\"\nbackoff_ms = 10\nretries = 2\n"),
    );
    let output = run(dir.path(), &[]).await;
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert_eq!(
        hook.received.lock().unwrap().len(),
        3,
        "the first try and 2 retries"
    );
    let log = text(&output);
    assert!(log.contains("the notification could not be sent"), "{log}");
    assert!(log.contains("503"), "{log}");
    assert!(
        !log.contains("s3cret-path"),
        "the webhook's path is not logged: {log}"
    );
}

/// A webhook that accepts the connection and never answers: each attempt ends at
/// `notify.timeout_secs`, the run ends after its retries with its own exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_never_answers_does_not_hold_the_run() {
    let sims = sims().await;
    let (url, hook) = webhook(vec![Answer::Never]).await;
    let dir = workspace(
        &sims,
        &format!("url = \"{url}\"\ntimeout_secs = 1\nretries = 1\nbackoff_ms = 10\n"),
    );
    let output = run(dir.path(), &[]).await;
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert_eq!(hook.received.lock().unwrap().len(), 2, "two attempts");
    let log = text(&output);
    assert!(
        log.contains("did not answer within 1 s (notify.timeout_secs)"),
        "{log}"
    );
}

/// A webhook in plain HTTP to another machine, or a token in the file, is refused by the
/// configuration check before any run.
#[test]
fn a_webhook_over_plain_http_to_another_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(config.join("demo")).unwrap();
    for file in ["demo.toml", "demo/pricing.csv", "demo/customers.csv"] {
        std::fs::copy(repo().join("config").join(file), config.join(file)).unwrap();
    }
    let demo = std::fs::read_to_string(config.join("demo.toml")).unwrap();
    std::fs::write(
        config.join("demo.toml"),
        format!(
            "{demo}\n[notify]\nurl = \"http://hooks.example.com/T0/s3cret\"\nwebhook_token = \"abc\"\n"
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .current_dir(dir.path())
        .args(["--config", "config/demo.toml", "check-config"])
        .env_remove("DATABASE_URL")
        .envs(sim::demo_secrets())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let all = text(&output);
    assert!(
        all.contains("config/demo.toml:notify.webhook_token: secrets are read from the environment only: remove it from the file and set TALLY__NOTIFY__WEBHOOK_TOKEN"),
        "{all}"
    );
    assert!(
        all.contains("config/demo.toml:notify.url: http://hooks.example.com/… is plain HTTP to another machine"),
        "{all}"
    );
    assert!(!all.contains("s3cret"), "{all}");
}
