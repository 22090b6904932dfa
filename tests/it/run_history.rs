//! Re-runs, backfills and the run history, through the real `tally` binary against the
//! billable-users simulator and the file sink, on Postgres and on SQLite: what the operator
//! types, what the billing file received, what `tally runs` tells afterwards.

use crate::common;

use crate::common::text;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use tally::domain::Period;
use tally::sim::billable_users::Person;
use tally::sim::{self, RunningSims};
use tally::store::DatabaseTarget;

#[derive(Clone, Copy, Debug)]
enum Db {
    Postgres,
    Sqlite,
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    sims: RunningSims,
    with_ccc: bool,
}

/// Fresh simulators and a fresh database; a configuration with the billable users (and, with
/// `with_ccc`, CCC) into the file sink.
async fn setup(db: Db, with_ccc: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let settings = sim::demo_settings(&dir.path().join("data")).unwrap();
    let sims = sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap();
    let target = match db {
        Db::Postgres => common::fresh_postgres().await,
        Db::Sqlite => common::fresh_sqlite(&dir),
    };
    let url = match &target {
        DatabaseTarget::Postgres(url) => url.clone(),
        DatabaseTarget::Sqlite(path) => format!("sqlite://{}", path.display()),
    };
    let repo = common::repo();
    let ccc = if with_ccc {
        format!(
            "[sources.ccc]\nbase_url = \"{}\"\nusername = \"{}\"\n\
             services = [\"a1c3e5f7-0b2d-4e6f-8a1c-3e5f7a9b0001\"]\n\n\
             [sources.ccc.licenses]\nProfessional = \"Secure messaging – Professional\"\n\
             Guest = \"Secure messaging – Guest\"\n",
            sims.ccc_url,
            sim::DEMO_CCC_USERNAME
        )
    } else {
        String::new()
    };
    let config = format!(
        r#"[general]
data_dir = "{data}"
timezone = "UTC"

[database]
url = "{url}"

[billing]
pricing_file = "{repo}/config/demo/pricing.csv"
customers_file = "{repo}/config/demo/customers.csv"
default_currency = "EUR"
default_sink = "file"

[[billing.accounts]]
id = "GLOBEX-002"
currency = "NOK"

[log]
level = "warn"

[sources.billable_users]
base_url = "{bu}"
account = "{account}"
per_page = 10
license_type = "Service desk user"

{ccc}
[sinks.file]
dir = "{out}"
format = "csv"
"#,
        data = dir.path().join("data").display(),
        repo = repo.display(),
        bu = sims.billable_users_url,
        account = sim::DEMO_ACCOUNT,
        out = dir.path().join("out").display(),
    );
    let path = dir.path().join("tally.toml");
    std::fs::write(&path, config).unwrap();
    Setup {
        dir,
        config: path,
        sims,
        with_ccc,
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
            .env("USER", "night-operator")
            .env("TALLY__SOURCES__BILLABLE_USERS__TOKEN", sim::DEMO_TOKEN);
        if self.with_ccc {
            command.env("TALLY__SOURCES__CCC__PASSWORD", sim::DEMO_CCC_PASSWORD);
        }
        command
    }

    async fn run(&self, args: &[&str]) -> Output {
        let mut command = self.command(args);
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap()
    }

    /// The rows of the billing file of `period`: (billing account, amount) per revision.
    fn received(&self, period: &str) -> Vec<(String, String)> {
        let path = self
            .dir
            .path()
            .join("out")
            .join(format!("invoice-lines-{period}.csv"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Vec::new();
        };
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader.headers().unwrap().clone();
        let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
        let (account, amount) = (col("billing_account"), col("amount"));
        reader
            .records()
            .map(|r| {
                let r = r.unwrap();
                (r[account].to_owned(), r[amount].to_owned())
            })
            .collect()
    }

    fn runs_json(&self, output: &Output) -> Vec<serde_json::Value> {
        assert_eq!(output.status.code(), Some(0), "{}", text(output));
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "tally runs --format json is not JSON ({e}): {}",
                text(output)
            )
        })
    }
}

/// The demo's billable people with `acme` of Acme's (the others as in the demo month).
fn people(acme: usize) -> Vec<Person> {
    let mut kept = 0;
    sim::demo_people()
        .into_iter()
        .filter(|p| {
            if p.organization != "Acme Corporation" {
                return true;
            }
            kept += 1;
            kept <= acme
        })
        .collect()
}

fn period(text: &str) -> Period {
    text.parse().unwrap()
}

async fn backfill_produces_each_months_lines_and_runs(db: Db) {
    let s = setup(db, false).await;
    // Acme has 4, 10 and 12 people: 4 × 12.50, 10 × 12.50, 10 × 12.50 + 2 × 10.00 (graduated).
    for (month, acme) in [("2026-08", 4), ("2026-09", 10), ("2026-10", 12)] {
        s.sims
            .billable_users
            .set_people(period(month), people(acme));
    }
    let out = s
        .run(&[
            "run", "--from", "2026-08", "--to", "2026-10", "--by", "kari",
        ])
        .await;
    // Hooli Labs is not in the customer map: every month completes with exceptions.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let printed = text(&out);
    assert!(printed.contains("== 2026-08 (1 of 3)"), "{printed}");
    assert!(
        printed.contains(
            "backfill 2026-08..2026-10: 2026-08 completed_with_exceptions, 2026-09 completed_with_exceptions, 2026-10 completed_with_exceptions"
        ),
        "{printed}"
    );
    for (month, acme_amount) in [
        ("2026-08", "50.00"),
        ("2026-09", "125.00"),
        ("2026-10", "145.00"),
    ] {
        let rows: BTreeMap<String, String> = s.received(month).into_iter().collect();
        assert_eq!(rows.len(), 4, "{month}: {rows:?}");
        assert_eq!(rows["ACME-001"], acme_amount, "{month}");
        assert_eq!(
            rows["GLOBEX-002"], "945.00",
            "{month}: 7 people × 135.00 NOK"
        );
        assert_eq!(
            rows["UMBRELLA-004"], "100.00",
            "{month}: its minimum charge"
        );
    }

    let runs = s.runs_json(&s.run(&["runs", "--format", "json"]).await);
    assert_eq!(runs.len(), 3, "{runs:?}");
    // Newest first.
    let periods: Vec<&str> = runs.iter().map(|r| r["period"].as_str().unwrap()).collect();
    assert_eq!(periods, ["2026-10", "2026-09", "2026-08"]);
    for run in &runs {
        assert_eq!(run["trigger"], "manual");
        assert_eq!(run["requested_by"], "kari");
        assert_eq!(run["status"], "completed_with_exceptions");
        assert_eq!(run["lines_pushed"], 4);
        assert_eq!(run["exceptions"], 1);
        assert_eq!(run["lines_waiting_approval"], 0);
        assert!(run["duration_ms"].is_u64(), "{run}");
    }
    let table = s.run(&["runs"]).await;
    let table = text(&table);
    assert!(table.contains("manual by kari"), "{table}");
    assert!(table.contains("waiting approval"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_over_three_months_produces_their_lines_and_three_runs_postgres() {
    backfill_produces_each_months_lines_and_runs(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_over_three_months_produces_their_lines_and_three_runs_sqlite() {
    backfill_produces_each_months_lines_and_runs(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backwards_range_and_a_range_with_period_are_refused() {
    let s = setup(Db::Sqlite, false).await;
    let out = s
        .run(&["run", "--from", "2026-10", "--to", "2026-08"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--from 2026-10 is after --to 2026-08"),
        "{}",
        text(&out)
    );
    let out = s
        .run(&[
            "run", "--period", "2026-10", "--from", "2026-08", "--to", "2026-09",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("cannot be used with"), "{}", text(&out));
    let out = s
        .run(&["run", "--period", "2026-10", "--source", "cc"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("billable_users, ccc, genesys"),
        "{}",
        text(&out)
    );
    let out = s
        .run(&["run", "--period", "2026-10", "--source", "ccc"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(
            "source \"ccc\" is not configured here (no enabled [sources.ccc]); configured sources: billable_users"
        ),
        "{}",
        text(&out)
    );
    assert_eq!(s.sims.billable_users.requests(), 0, "nothing ran");
}

async fn customer_then_everyone_pushes_each_line_once(db: Db) {
    let s = setup(db, false).await;
    s.sims
        .billable_users
        .set_people(period("2026-10"), people(12));

    let out = s
        .run(&["run", "--period", "2026-10", "--customer", "ACME-01"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("the nearest: ACME-001"),
        "{}",
        text(&out)
    );

    let dry = s
        .run(&[
            "run",
            "--period",
            "2026-10",
            "--customer",
            "acme-001",
            "--dry-run",
        ])
        .await;
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry));
    assert!(text(&dry).contains("ACME-001"), "{}", text(&dry));
    assert!(!text(&dry).contains("GLOBEX-002"), "{}", text(&dry));
    assert!(s.received("2026-10").is_empty(), "a dry run pushes nothing");

    // Lower case: billing accounts are matched in any case. Only Acme's line, no exception
    // (Hooli Labs is another customer's).
    let out = s
        .run(&["run", "--period", "2026-10", "--customer", "acme-001"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("(customer acme-001 only)"),
        "{}",
        text(&out)
    );
    assert_eq!(
        s.received("2026-10"),
        [("ACME-001".to_owned(), "145.00".to_owned())]
    );

    let out = s.run(&["run", "--period", "2026-10"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let rows = s.received("2026-10");
    let mut accounts: Vec<&str> = rows.iter().map(|(a, _)| a.as_str()).collect();
    accounts.sort();
    assert_eq!(
        accounts,
        ["ACME-001", "GLOBEX-002", "INITECH-003", "UMBRELLA-004"],
        "each line once: {rows:?}"
    );

    // Acme loses two people and Initech one: a run for Acme adjusts Acme's line only; the
    // others' lines are neither reversed nor adjusted, and Hooli's exception stays recorded.
    let mut fewer = people(10);
    let initech = fewer
        .iter()
        .position(|p| p.organization == "Initech")
        .unwrap();
    fewer.remove(initech);
    s.sims.billable_users.set_people(period("2026-10"), fewer);
    let out = s
        .run(&["run", "--period", "2026-10", "--customer", "ACME-001"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = s.received("2026-10");
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert_eq!(rows[4], ("ACME-001".to_owned(), "-20.00".to_owned()));
    let all = s
        .run(&["lines", "--period", "2026-10", "--format", "csv"])
        .await;
    let all = String::from_utf8_lossy(&all.stdout).into_owned();
    assert_eq!(
        all.lines().count(),
        6,
        "a header, four lines and Acme's adjustment, no reversal: {all}"
    );
    let exceptions = s
        .run(&[
            "lines",
            "--period",
            "2026-10",
            "--exceptions",
            "--format",
            "csv",
        ])
        .await;
    assert!(
        String::from_utf8_lossy(&exceptions.stdout).contains("Hooli Labs"),
        "{}",
        text(&exceptions)
    );

    // By a source's customer key, as the customer map writes it: Acme's organization name.
    let lines = s
        .run(&[
            "lines",
            "--period",
            "2026-10",
            "--customer",
            "Acme Corporation",
            "--format",
            "csv",
        ])
        .await;
    assert_eq!(lines.status.code(), Some(0), "{}", text(&lines));
    let csv_text = String::from_utf8_lossy(&lines.stdout).into_owned();
    assert_eq!(
        csv_text.lines().count(),
        3,
        "the line and its adjustment: {csv_text}"
    );
    assert!(
        csv_text.lines().skip(1).all(|l| l.contains(",ACME-001,")),
        "{csv_text}"
    );

    let runs = s.runs_json(&s.run(&["runs", "--format", "json"]).await);
    assert_eq!(
        runs.len(),
        3,
        "the dry run and the refused one are not runs"
    );
    assert_eq!(runs[2]["customer_filter"], "acme-001");
    assert_eq!(runs[2]["requested_by"], "night-operator", "$USER");
    assert_eq!(runs[1]["customer_filter"], serde_json::Value::Null);
    assert_eq!(runs[0]["customer_filter"], "ACME-001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_customer_then_everyone_pushes_each_line_exactly_once_postgres() {
    customer_then_everyone_pushes_each_line_once(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_customer_then_everyone_pushes_each_line_exactly_once_sqlite() {
    customer_then_everyone_pushes_each_line_once(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_show_counts_what_the_simulator_served() {
    let s = setup(Db::Postgres, false).await;
    let people = people(12);
    let distinct: std::collections::BTreeSet<u64> = people.iter().map(|p| p.id).collect();
    let listed = people.len();
    s.sims.billable_users.set_people(period("2026-10"), people);
    // One 429 first: retried after its Retry-After, and counted.
    s.sims.billable_users.rate_limit_next(1, 0);

    let out = s.run(&["run", "--period", "2026-10"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let served = s.sims.billable_users.requests();
    let runs = s.runs_json(&s.run(&["runs", "--format", "json"]).await);
    let id = runs[0]["id"].as_i64().unwrap().to_string();

    let show = s.run(&["runs", "show", &id, "--format", "json"]).await;
    assert_eq!(show.status.code(), Some(0), "{}", text(&show));
    let run: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let source = &run["summary"]["sources"][0];
    assert_eq!(source["source"], "billable_users");
    assert_eq!(source["requests"], served, "{run}");
    assert_eq!(source["rate_limited"], 1, "{run}");
    assert_eq!(source["retries"], 1, "{run}");
    assert_eq!(source["pages"], listed.div_ceil(10) as u64, "{run}");
    assert_eq!(source["records"], distinct.len() as u64, "{run}");
    assert_eq!(run["summary"]["totals"]["NOK"], "945.00");

    let show = s.run(&["runs", "show", &id]).await;
    let shown = text(&show);
    assert!(
        shown.contains("records  pages  requests  retries  429s  duration  error"),
        "{shown}"
    );
    assert!(shown.contains("NOK 945.00"), "{shown}");

    let missing = s.run(&["runs", "show", "999"]).await;
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    assert!(text(&missing).contains("there is no run 999"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_with_no_records_after_a_month_with_some_warns() {
    let s = setup(Db::Sqlite, false).await;
    s.sims
        .billable_users
        .set_people(period("2026-09"), people(12));
    s.sims
        .billable_users
        .set_people(period("2026-10"), Vec::new());
    let out = s.run(&["run", "--period", "2026-09"]).await;
    assert!(!text(&out).contains("WARNING"), "{}", text(&out));

    let out = s.run(&["run", "--period", "2026-10"]).await;
    let printed = text(&out);
    assert!(
        printed.contains(
            "WARNING: source billable_users returned no records for 2026-10, where 2026-09 had"
        ),
        "{printed}"
    );
    let json = s
        .run(&[
            "run",
            "--period",
            "2026-10",
            "--dry-run",
            "--output",
            "json",
        ])
        .await;
    let summary: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        summary["warnings"].as_array().map(Vec::len),
        Some(1),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sources_run_says_its_totals_are_partial_and_names_it() {
    let s = setup(Db::Sqlite, true).await;
    s.sims
        .billable_users
        .set_people(period("2026-10"), people(12));
    let mut command = s.command(&["run", "--period", "2026-10"]);
    command.env("TALLY__SOURCES__CCC__PASSWORD", "not-the-password");
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let printed = text(&out);
    assert!(printed.contains("FAILED source ccc"), "{printed}");
    assert!(printed.contains("total EUR (partial)"), "{printed}");
    assert!(
        printed.contains("the totals are partial: they leave out ccc, which failed"),
        "{printed}"
    );
    assert!(!printed.contains("nothing was pushed"), "{printed}");

    let runs = s.runs_json(&s.run(&["runs", "--format", "json"]).await);
    assert_eq!(runs[0]["summary"]["totals_partial"], true);
    let failed = runs[0]["summary"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["source"] == "ccc")
        .cloned()
        .unwrap();
    assert!(failed["error"].is_string(), "{failed}");
    let id = runs[0]["id"].as_i64().unwrap().to_string();
    let shown = text(&s.run(&["runs", "show", &id]).await);
    assert!(
        shown.contains("amounts (partial: ccc failed and is left out)"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_with_limit_zero_is_a_usage_error_and_no_history_says_so() {
    let s = setup(Db::Sqlite, false).await;
    let out = s.run(&["runs", "--limit", "0"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = s.run(&["runs"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no runs yet\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_filter_by_source_and_status_and_exceptions_print_as_csv() {
    let s = setup(Db::Sqlite, false).await;
    s.sims
        .billable_users
        .set_people(period("2026-10"), people(12));
    let out = s.run(&["run", "--period", "2026-10"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));

    let count = |out: &Output| String::from_utf8_lossy(&out.stdout).lines().count();
    let pushed = s
        .run(&[
            "lines", "--period", "2026-10", "--status", "pushed", "--format", "csv",
        ])
        .await;
    assert_eq!(count(&pushed), 5, "{}", text(&pushed));
    let drafts = s
        .run(&[
            "lines", "--period", "2026-10", "--status", "draft", "--format", "csv",
        ])
        .await;
    assert_eq!(count(&drafts), 1, "the header only: {}", text(&drafts));
    let ccc = s
        .run(&[
            "lines", "--period", "2026-10", "--source", "ccc", "--format", "csv",
        ])
        .await;
    assert_eq!(count(&ccc), 1, "{}", text(&ccc));

    let exceptions = s
        .run(&[
            "lines",
            "--period",
            "2026-10",
            "--exceptions",
            "--format",
            "csv",
        ])
        .await;
    assert_eq!(exceptions.status.code(), Some(0), "{}", text(&exceptions));
    let csv_text = String::from_utf8_lossy(&exceptions.stdout).into_owned();
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().take(4).collect::<Vec<_>>(),
        ["period", "source", "kind", "source_customer"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1, "{csv_text}");
    assert_eq!(&rows[0][3], "Hooli Labs");
    assert_eq!(&rows[0][2], "unmapped_customer");
}

/// A proxy in front of `target` that answers 500 to every request for September and forwards
/// the others: a source that fails for one month of a backfill.
async fn failing_september(target: &str) -> String {
    let target = target.trim_end_matches('/').to_owned();
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let (target, client) = (target.clone(), client.clone());
        async move {
            let path = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            if path.contains("month=9&") || path.contains("month=09&") {
                return axum::response::Response::builder()
                    .status(500)
                    .body(axum::body::Body::from("September is down"))
                    .unwrap();
            }
            let mut outgoing = client.get(format!("{target}{path}"));
            for (name, value) in request.headers() {
                if name != reqwest::header::HOST {
                    outgoing = outgoing.header(name, value);
                }
            }
            let answer = outgoing.send().await.unwrap();
            let mut response = axum::response::Response::builder().status(answer.status().as_u16());
            for (name, value) in answer.headers() {
                response = response.header(name, value);
            }
            response
                .body(axum::body::Body::from(answer.bytes().await.unwrap()))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_stops_at_the_first_failed_month_and_names_the_months_not_run() {
    let s = setup(Db::Sqlite, false).await;
    for month in ["2026-08", "2026-09", "2026-10"] {
        s.sims.billable_users.set_people(period(month), people(12));
    }
    let bu = s.sims.billable_users_url.trim_end_matches('/').to_owned();
    let base = bu.strip_suffix("/v1").unwrap_or(&bu).to_owned();
    let proxy = failing_september(&base).await;
    let config = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace(&base, &proxy);
    std::fs::write(
        &s.config,
        format!("{config}\n[sources.billable_users.http]\nmax_retries = 0\n"),
    )
    .unwrap();

    let out = s
        .run(&["run", "--from", "2026-08", "--to", "2026-10"])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let printed = text(&out);
    assert!(
        printed.contains("FAILED source billable_users"),
        "{printed}"
    );
    assert!(
        printed.contains("not run: 2026-10 (stopped after 2026-09 failed)"),
        "{printed}"
    );
    assert_eq!(s.received("2026-08").len(), 4);
    assert!(s.received("2026-10").is_empty(), "October was not run");
    let runs = s.runs_json(&s.run(&["runs", "--format", "json"]).await);
    let ran: Vec<(&str, &str)> = runs
        .iter()
        .map(|r| (r["period"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ran,
        [
            ("2026-09", "failed"),
            ("2026-08", "completed_with_exceptions")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_backfill_prints_each_months_plan_and_writes_nothing() {
    let s = setup(Db::Sqlite, false).await;
    for month in ["2026-09", "2026-10"] {
        s.sims.billable_users.set_people(period(month), people(12));
    }
    let out = s
        .run(&[
            "run",
            "--from",
            "2026-09",
            "--to",
            "2026-10",
            "--dry-run",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let summaries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not a JSON array ({e}): {}", text(&out)));
    let periods: Vec<&str> = summaries
        .iter()
        .map(|s| s["period"].as_str().unwrap())
        .collect();
    assert_eq!(periods, ["2026-09", "2026-10"]);
    for summary in &summaries {
        assert_eq!(summary["run_id"], serde_json::Value::Null);
        assert_eq!(summary["dry_run"], true);
        assert_eq!(summary["lines_created"], 4);
        assert_eq!(summary["sources"][0]["pages"], 6, "{summary}");
        assert_eq!(summary["sources"][0]["requests"], 6, "{summary}");
    }
    assert!(s.received("2026-09").is_empty() && s.received("2026-10").is_empty());
    let runs = s.run(&["runs"]).await;
    assert_eq!(String::from_utf8_lossy(&runs.stdout), "no runs yet\n");
}
