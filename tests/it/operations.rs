//! Operations across real `tally` processes, as they happen in production: two runs of the
//! same month at once, SIGTERM and SIGKILL in the middle of a push, and approval by customer
//! from the command line — against the simulators, on Postgres and on SQLite, asserting what the
//! billing simulators received.
//!
//! RamBase sits behind a proxy that makes each write slow and stores it late: a create request
//! is forwarded to the simulator only after `delay`, whatever became of the client in between,
//! as a billing system under load that stores a request seconds after it arrived.

use crate::common;

use crate::common::{repo, text};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tally::domain::RunStatus;
use tally::sim::{self, RunningSims};
use tally::store::{DatabaseTarget, Store};

// ---- a slow billing system ------------------------------------------------------------------

#[derive(Clone)]
struct Proxy {
    target: String,
    delay: Duration,
    client: reqwest::Client,
    /// Create requests received (not yet necessarily stored).
    writes: Arc<AtomicU64>,
    /// Create requests still to refuse with a 500 without storing them.
    refuse_writes: Arc<AtomicU64>,
}

/// Starts a proxy in front of `target` that holds every POST for `delay` before forwarding it;
/// returns its base URL, the count of POSTs received and the count of POSTs still to refuse.
async fn slow_proxy(target: &str, delay: Duration) -> (String, Arc<AtomicU64>, Arc<AtomicU64>) {
    let proxy = Proxy {
        target: target.trim_end_matches('/').to_owned(),
        delay,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        writes: Arc::new(AtomicU64::new(0)),
        refuse_writes: Arc::new(AtomicU64::new(0)),
    };
    let writes = proxy.writes.clone();
    let refuse = proxy.refuse_writes.clone();
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, writes, refuse)
}

async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let is_write = method == reqwest::Method::POST && path.contains("/usages");
    if is_write {
        proxy.writes.fetch_add(1, Ordering::SeqCst);
        let refuse = proxy
            .refuse_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refuse {
            return Response::builder()
                .status(500)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    r#"{"httpStatusCode":500,"message":"Internal Server Error","errorMessage":{"errorMessageId":500}}"#,
                ))
                .unwrap();
        }
    }
    // Detached: the write lands even if the client gave up or died meanwhile.
    let task = tokio::spawn(async move {
        if is_write {
            tokio::time::sleep(proxy.delay).await;
        }
        let mut outgoing = proxy
            .client
            .request(method, format!("{}{path}", proxy.target))
            .body(body);
        for (name, value) in &headers {
            if name != reqwest::header::HOST && name != reqwest::header::CONTENT_LENGTH {
                outgoing = outgoing.header(name, value);
            }
        }
        let answer = outgoing.send().await.unwrap();
        let status = answer.status();
        let content_type = answer.headers().get(reqwest::header::CONTENT_TYPE).cloned();
        let bytes = answer.bytes().await.unwrap_or_default();
        let mut response = Response::builder().status(status.as_u16());
        if let Some(ct) = content_type {
            response = response.header(reqwest::header::CONTENT_TYPE, ct);
        }
        response.body(Body::from(bytes)).unwrap()
    });
    task.await.unwrap()
}

// ---- a workspace and the binary -------------------------------------------------------------

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    target: DatabaseTarget,
    sims: RunningSims,
    rambase_writes: Arc<AtomicU64>,
    rambase_refuse: Arc<AtomicU64>,
}

#[derive(Clone, Copy)]
enum Db {
    Postgres,
    Sqlite,
}

/// The demo's configuration against fresh simulators and a fresh database, with RamBase behind
/// a proxy holding each write for `delay`; `extra` is appended to the configuration file.
async fn setup(db: Db, delay: Duration, extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(config_dir.join("demo")).unwrap();
    for file in ["demo.toml", "demo/pricing.csv", "demo/customers.csv"] {
        std::fs::copy(repo().join("config").join(file), config_dir.join(file)).unwrap();
    }
    let settings = sim::demo_settings(&dir.path().join("data")).unwrap();
    let sims = sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap();
    let (rambase_url, rambase_writes, rambase_refuse) = slow_proxy(&sims.rambase_url, delay).await;
    let target = match db {
        Db::Postgres => common::fresh_postgres().await,
        Db::Sqlite => common::fresh_sqlite(&dir),
    };
    let url = match &target {
        DatabaseTarget::Postgres(url) => url.clone(),
        DatabaseTarget::Sqlite(path) => format!("sqlite://{}", path.display()),
    };
    let demo = std::fs::read_to_string(config_dir.join("demo.toml")).unwrap();
    let demo = demo
        .replace("http://127.0.0.1:8081/v1", &sims.billable_users_url)
        .replace("http://127.0.0.1:8082/", &rambase_url)
        .replace("http://127.0.0.1:8083/api", &sims.ccc_url)
        .replace("http://127.0.0.1:8084", &sims.genesys_url)
        .replace("http://127.0.0.1:8085/", &sims.activeplatform_url)
        .replace(
            "[general]",
            &format!("[database]\nurl = \"{url}\"\n\n[general]"),
        );
    let config = config_dir.join("test.toml");
    std::fs::write(&config, format!("{demo}\n{extra}\n")).unwrap();
    Setup {
        dir,
        config,
        target,
        sims,
        rambase_writes,
        rambase_refuse,
    }
}

impl Setup {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
        command
            .current_dir(self.dir.path())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn")
            .envs(sim::demo_secrets());
        command
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    async fn store(&self) -> Store {
        Store::connect(&self.target).await.unwrap()
    }

    /// Waits (without blocking the simulators) until RamBase has received `n` writes.
    async fn until_rambase_writes(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.rambase_writes.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "RamBase never received {n} writes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every (plan, item, period) RamBase holds a usage on, checking that none holds two.
    fn rambase_targets_once(&self) -> BTreeSet<(u64, u64, u64)> {
        let usages = self.sims.rambase.usages();
        let targets: BTreeSet<_> = usages
            .iter()
            .map(|u| (u.plan_id, u.item_id, u.period_id))
            .collect();
        assert_eq!(
            targets.len(),
            usages.len(),
            "a usage was registered twice: {usages:?}"
        );
        targets
    }

    /// ActivePlatform's corrections, checking that no line's correction arrived twice.
    fn corrections_once(&self) -> usize {
        let corrections = self.sims.activeplatform.corrections();
        let distinct: BTreeSet<_> = corrections
            .iter()
            .map(|c| (c.account_id, c.comment.clone()))
            .collect();
        assert_eq!(
            distinct.len(),
            corrections.len(),
            "a correction was sent twice: {corrections:?}"
        );
        corrections.len()
    }
}

async fn wait(child: Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

async fn output(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} failed");
}

// ---- two runs at once -----------------------------------------------------------------------

/// Two `tally run` of one month started `offset` apart on one database, RamBase taking 1.2 s per
/// write: every line reaches its billing system exactly once, the second process either waited or
/// exited 4 naming the holder, and a run that reports success created every line.
async fn two_runs_at_once(db: Db, offset: Duration) {
    let setup = setup(db, Duration::from_millis(1200), "").await;
    let first = setup.spawn(&["run", "--period", "2026-10", "--output", "json"]);
    tokio::time::sleep(offset).await;
    let second = setup.spawn(&["run", "--period", "2026-10", "--output", "json"]);
    let outcomes = [wait(first).await, wait(second).await];

    let mut succeeded = 0;
    for out in &outcomes {
        match out.status.code() {
            Some(0 | 3) => {
                succeeded += 1;
                let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
                    .unwrap_or_else(|e| panic!("{e}: {}", text(out)));
                let created = summary["lines_created"].as_u64().unwrap();
                let unchanged = summary["lines_unchanged"].as_u64().unwrap();
                assert_eq!(created + unchanged, 12, "{}", text(out));
            }
            Some(4) => {
                let message = text(out);
                assert!(
                    message.contains("another tally is writing the ledger: `tally run`")
                        && message.contains("pid")
                        && message.contains("since"),
                    "the busy writer names the holder: {message}"
                );
            }
            other => panic!("unexpected exit {other:?}: {}", text(out)),
        }
    }
    assert!(succeeded >= 1, "one of the runs completes");
    assert_eq!(setup.rambase_targets_once().len(), 4);
    assert_eq!(setup.corrections_once(), 8);
    let lines = setup
        .store()
        .await
        .ledger_lines("2026-10".parse().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(lines.len(), 12);
    assert!(lines.iter().all(|l| l.status.as_str() == "pushed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_at_once_bill_every_line_exactly_once_on_postgres() {
    for offset in [0, 1, 2] {
        two_runs_at_once(Db::Postgres, Duration::from_secs(offset)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_at_once_bill_every_line_exactly_once_on_sqlite() {
    for offset in [0, 1, 2] {
        two_runs_at_once(Db::Sqlite, Duration::from_secs(offset)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_writer_may_wait_for_the_first() {
    let setup = setup(Db::Postgres, Duration::from_millis(800), "").await;
    let first = setup.spawn(&["run", "--period", "2026-10"]);
    setup.until_rambase_writes(1).await;
    let second = setup.spawn(&["run", "--period", "2026-10", "--wait", "120"]);
    let (first, second) = (wait(first).await, wait(second).await);
    assert_eq!(first.status.code(), Some(3), "{}", text(&first));
    assert_eq!(second.status.code(), Some(3), "{}", text(&second));
    assert!(
        text(&second).contains("nothing was pushed"),
        "{}",
        text(&second)
    );
    assert_eq!(setup.rambase_targets_once().len(), 4);
}

// ---- signals --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_push_interrupts_the_run_and_the_rerun_sends_nothing_twice() {
    let setup = setup(Db::Postgres, Duration::from_millis(1500), "").await;
    let run = setup.spawn(&["run", "--period", "2026-10"]);
    setup.until_rambase_writes(1).await;
    signal(&run, "TERM");
    let stopped = wait(run).await;
    assert_eq!(stopped.status.code(), Some(5), "{}", text(&stopped));
    assert!(text(&stopped).contains("interrupted"), "{}", text(&stopped));
    // The write in flight was allowed to finish and was recorded.
    assert_eq!(setup.sims.rambase.usages().len(), 1);
    let runs = setup.store().await.runs(10).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Interrupted);

    let rerun = output(setup.command(&["run", "--period", "2026-10"])).await;
    assert_eq!(rerun.status.code(), Some(3), "{}", text(&rerun));
    assert_eq!(setup.rambase_targets_once().len(), 4);
    assert_eq!(setup.corrections_once(), 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_run_is_abandoned_and_its_late_write_is_not_sent_again() {
    let setup = setup(
        Db::Sqlite,
        Duration::from_millis(1500),
        "[push]\nsettle_secs = 4\n",
    )
    .await;
    let mut run = setup.spawn(&["run", "--period", "2026-10"]);
    setup.until_rambase_writes(1).await;
    run.kill().unwrap();
    let _ = wait(run).await;

    // At once: the write of the killed process has not landed yet; it is not sent again.
    let rerun = output(setup.command(&["run", "--period", "2026-10"])).await;
    let runs = setup.store().await.runs(10).await.unwrap();
    let killed = runs.last().unwrap();
    assert_eq!(killed.status, RunStatus::Abandoned, "{runs:?}");
    match rerun.status.code() {
        // The late write landed before the re-run read RamBase: found, not sent.
        Some(3) => {}
        // Still in flight: it waits for its settle time.
        Some(1) => assert!(text(&rerun).contains("settle"), "{}", text(&rerun)),
        other => panic!("unexpected exit {other:?}: {}", text(&rerun)),
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let last = output(setup.command(&["run", "--period", "2026-10"])).await;
    assert_eq!(last.status.code(), Some(3), "{}", text(&last));
    assert_eq!(setup.rambase_targets_once().len(), 4);
    assert_eq!(setup.corrections_once(), 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_refused_with_a_5xx_and_confirmed_absent_is_sent_again_in_the_run() {
    let setup = setup(
        Db::Postgres,
        Duration::ZERO,
        "[push]\nsettle_secs = 1\nretry_backoff_secs = 1\n",
    )
    .await;
    setup.rambase_refuse.store(2, Ordering::SeqCst);
    let run = output(setup.command(&["run", "--period", "2026-10", "--output", "json"])).await;
    assert_eq!(run.status.code(), Some(3), "{}", text(&run));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["lines_pushed"], 12, "{}", text(&run));
    assert_eq!(setup.rambase_targets_once().len(), 4);
    assert_eq!(
        setup.rambase_writes.load(Ordering::SeqCst),
        6,
        "4 lines, 2 sent again"
    );
}

// ---- approval -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn approval_by_customer_pushes_only_that_customers_lines() {
    let setup = setup(Db::Postgres, Duration::ZERO, "").await;
    let config = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace("require_approval = false", "require_approval = true");
    std::fs::write(&setup.config, config).unwrap();

    let run = output(setup.command(&["run", "--period", "2026-10"])).await;
    assert_eq!(run.status.code(), Some(3), "{}", text(&run));
    assert!(
        text(&run).contains("12 line(s) wait for approval")
            && text(&run).contains("tally approve --period 2026-10"),
        "{}",
        text(&run)
    );
    assert!(setup.sims.rambase.usages().is_empty());

    // Approving is a ledger operation: no secret at all in the environment.
    let mut approve = setup.command(&[
        "approve",
        "--period",
        "2026-10",
        "--customer",
        "ACME-001",
        "--by",
        "kari",
        "--note",
        "seats checked",
        "--no-push",
    ]);
    approve.env_clear();
    let approved = output(approve).await;
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
    assert!(
        text(&approved).contains("approved 1 draft line(s)"),
        "{}",
        text(&approved)
    );

    // Approving nobody pushes nothing, not even ACME's approved line.
    let nobody = output(setup.command(&[
        "approve",
        "--period",
        "2026-10",
        "--customer",
        "nobody",
        "--by",
        "kari",
    ]))
    .await;
    assert_eq!(nobody.status.code(), Some(0), "{}", text(&nobody));
    assert!(
        text(&nobody).contains("approved 0 draft line(s)"),
        "{}",
        text(&nobody)
    );
    assert!(setup.sims.rambase.usages().is_empty());

    // Pushing needs only the secret of the billing system the lines go to.
    let mut push = setup.command(&["push", "--period", "2026-10", "--customer", "ACME-001"]);
    push.env_clear().env(
        "TALLY__SINKS__RAMBASE__CLIENT_SECRET",
        sim::demo_secrets()
            .into_iter()
            .find(|(k, _)| k == "TALLY__SINKS__RAMBASE__CLIENT_SECRET")
            .unwrap()
            .1,
    );
    let pushed = output(push).await;
    assert_eq!(pushed.status.code(), Some(0), "{}", text(&pushed));
    let usages = setup.sims.rambase.usages();
    assert_eq!(usages.len(), 1, "{usages:?}");
    assert_eq!((usages[0].plan_id, usages[0].quantity), (100001, 12));
    assert!(setup.sims.activeplatform.corrections().is_empty());

    let lines = output(setup.command(&["lines", "--period", "2026-10", "--format", "csv"])).await;
    let csv = String::from_utf8_lossy(&lines.stdout).to_string();
    let acme = csv
        .lines()
        .find(|l| l.contains("ACME-001"))
        .unwrap_or_else(|| panic!("{csv}"));
    assert!(
        acme.contains(",pushed,") && acme.contains("kari") && acme.contains("seats checked"),
        "{acme}"
    );
    let drafts = csv.lines().filter(|l| l.contains(",draft,")).count();
    assert_eq!(drafts, 11, "{csv}");
}

#[test]
fn every_writing_command_names_its_exit_codes() {
    for (command, codes) in [
        ("run", &["0", "1", "2", "3", "4", "5"][..]),
        ("approve", &["0", "1", "2", "4", "5"][..]),
        ("push", &["0", "1", "2", "4", "5"][..]),
    ] {
        let help = Command::new(env!("CARGO_BIN_EXE_tally"))
            .args([command, "--help"])
            .output()
            .unwrap();
        let help = text(&help);
        for code in codes {
            assert!(
                help.contains(&format!("  {code}  ")),
                "`tally {command} --help` lacks exit code {code}: {help}"
            );
        }
        assert!(help.contains("Examples"), "{help}");
    }
}
