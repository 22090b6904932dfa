//! `tally serve` and `tally user`, as people meet them: the real binary serving the review page
//! over a store filled by a real run against the simulators (billing.require_approval on, so
//! the lines wait as drafts), driven over HTTP with a cookie jar. Sign-in, the CSRF token, the
//! viewer's refusal, an approval recorded in the ledger (read back with `tally lines --format
//! json`), a push that sends exactly the approved customer's lines to the billing systems, the
//! subtotals against `tally lines`, and the slow-down after five failed sign-ins.

use crate::common::{database_url, demo_checkout, fresh_postgres, fresh_sqlite, text};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::str::FromStr;
use tally::sim;

const PERIOD: &str = "2026-10";
const APPROVER: (&str, &str) = ("kari", "kari-secret-1");
const VIEWER: (&str, &str) = ("ola", "ola-secret-12");
/// A RamBase customer of the demo.
const CUSTOMER: &str = "ACME-001";

fn tally(dir: &Path, config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command
        .current_dir(dir)
        .arg("--config")
        .arg(config)
        .envs(sim::demo_secrets())
        .env_remove("DATABASE_URL")
        .env_remove("TALLY_ENV");
    command
}

/// `tally user add NAME --role ROLE` with `stdin` as its standard input.
fn user_add(dir: &Path, config: &Path, name: &str, role: &str, stdin: Option<&str>) -> Output {
    let mut child = tally(dir, config)
        .args(["user", "add", name, "--role", role])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// The ledger's lines of the period as `tally lines --format json` prints them.
fn ledger(dir: &Path, config: &Path, customer: Option<&str>) -> Vec<serde_json::Value> {
    let mut command = tally(dir, config);
    command.args(["lines", "--period", PERIOD, "--format", "json"]);
    if let Some(c) = customer {
        command.args(["--customer", c]);
    }
    let out = command.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Sums of `amount` per currency, as `tally lines` totals them.
fn totals(lines: &[serde_json::Value]) -> BTreeMap<String, Decimal> {
    let mut sums = BTreeMap::new();
    for l in lines {
        let amount = Decimal::from_str(l["amount"].as_str().unwrap()).unwrap();
        *sums
            .entry(l["currency"].as_str().unwrap().to_owned())
            .or_insert(Decimal::ZERO) += amount;
    }
    sums
}

/// A served review page over a run of the demo month.
struct Served {
    sims: sim::RunningSims,
    dir: tempfile::TempDir,
    config: PathBuf,
    server: Child,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

async fn serve_demo(db: &str) -> Served {
    serve_demo_with(db, &[]).await
}

/// [`serve_demo`] with `env` in `tally serve`'s environment.
async fn serve_demo_with(db: &str, env: &[(&str, &str)]) -> Served {
    let settings = sim::demo_settings(Path::new("data")).unwrap();
    let sims = sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap();
    let (dir, config) = demo_checkout(&sims, db);
    let toml = std::fs::read_to_string(&config).unwrap();
    assert!(toml.contains("require_approval = false"));
    std::fs::write(
        &config,
        toml.replace("require_approval = false", "require_approval = true"),
    )
    .unwrap();
    // Two runs: the second replaces the first's exceptions, which become the period's history.
    for _ in 0..2 {
        let (d, c) = (dir.path().to_owned(), config.clone());
        let run = tokio::task::spawn_blocking(move || {
            tally(&d, &c)
                .args(["run", "--period", PERIOD])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            matches!(run.status.code(), Some(0 | 3)),
            "the run failed: {}",
            text(&run)
        );
    }
    for (user, role) in [(APPROVER, "approver"), (VIEWER, "viewer")] {
        let out = user_add(
            dir.path(),
            &config,
            user.0,
            role,
            Some(&format!("{}\n", user.1)),
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let mut server = tally(dir.path(), &config)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = server.stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let base = first
        .trim()
        .strip_prefix("serving the review page on ")
        .unwrap_or_else(|| panic!("tally serve said {first:?}"))
        .trim_end_matches('/')
        .to_owned();
    Served {
        sims,
        dir,
        config,
        server,
        base,
    }
}

/// A person with a browser: cookies kept, redirects not followed (the tests look at them).
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
}

impl Browser {
    fn new(base: &str) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_owned(),
            cookies: HashMap::new(),
        }
    }

    fn keep(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all(SET_COOKIE) {
            let value = value.to_str().unwrap();
            let (pair, attributes) = value.split_once(';').unwrap_or((value, ""));
            let (name, v) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), v.to_owned());
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn get(&mut self, path: &str) -> (StatusCode, String, Option<String>) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(&response);
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().unwrap().to_owned());
        (status, response.text().await.unwrap(), location)
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (StatusCode, String) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.keep(&response);
        let status = response.status();
        (status, response.text().await.unwrap())
    }

    /// The body's bytes and the Content-Disposition of a download.
    async fn download(&mut self, path: &str) -> (StatusCode, Vec<u8>, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let disposition = response
            .headers()
            .get(reqwest::header::CONTENT_DISPOSITION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (
            status,
            response.bytes().await.unwrap().to_vec(),
            disposition,
        )
    }

    /// Opens the sign-in page and signs in; returns the answer's status.
    async fn sign_in(&mut self, name: &str, password: &str) -> StatusCode {
        let (status, page, _) = self.get("/login").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let csrf = csrf_of(&page);
        let (status, _) = self
            .post(
                "/login",
                &[("csrf", &csrf), ("username", name), ("password", password)],
            )
            .await;
        status
    }
}

/// The hidden CSRF field of a page's (first) form.
fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field on:\n{page}"));
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// Each customer section's subtotals: account → currency → data-amount.
fn subtotals(page: &str) -> BTreeMap<String, BTreeMap<String, Decimal>> {
    let mut all = BTreeMap::new();
    for section in page
        .split("<section class=\"customer\" data-customer=\"")
        .skip(1)
    {
        let account = section[..section.find('"').unwrap()].to_owned();
        let section = &section[..section.find("</section>").unwrap()];
        let mut sums = BTreeMap::new();
        for cell in section.split("data-subtotal data-currency=\"").skip(1) {
            let currency = cell[..cell.find('"').unwrap()].to_owned();
            let rest = &cell[cell.find("data-amount=\"").unwrap() + "data-amount=\"".len()..];
            let amount = Decimal::from_str(&rest[..rest.find('"').unwrap()]).unwrap();
            sums.insert(currency, amount);
        }
        all.insert(account, sums);
    }
    all
}

async fn in_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// The whole review on one backend.
async fn review_on(db: &str) {
    let served = serve_demo(db).await;
    let (dir, config) = (served.dir.path().to_owned(), served.config.clone());
    let before = {
        let (d, c) = (dir.clone(), config.clone());
        in_blocking(move || ledger(&d, &c, None)).await
    };
    assert!(!before.is_empty());
    assert!(
        before.iter().all(|l| l["status"] == "draft"),
        "the run should leave drafts"
    );

    // Without a session: pages go to the sign-in page, posts are refused.
    let mut anonymous = Browser::new(&served.base);
    let (status, _, location) = anonymous.get(&format!("/periods/{PERIOD}")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/login"));
    let (status, _) = anonymous
        .post(
            &format!("/periods/{PERIOD}/approve"),
            &[("customer", CUSTOMER)],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A wrong password signs no one in.
    assert_eq!(
        anonymous.sign_in(APPROVER.0, "not-the-password").await,
        StatusCode::UNAUTHORIZED
    );
    assert!(!anonymous.cookies.contains_key("tally_session"));
    assert_eq!(anonymous.get("/").await.0, StatusCode::SEE_OTHER);

    // A viewer reads but cannot approve: 403, and the ledger is unchanged.
    let mut viewer = Browser::new(&served.base);
    assert_eq!(
        viewer.sign_in(VIEWER.0, VIEWER.1).await,
        StatusCode::SEE_OTHER
    );
    let (status, index, _) = viewer.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        index.contains(&format!("data-period=\"{PERIOD}\"")),
        "{index}"
    );
    assert!(index.contains("waiting for approval"), "{index}");
    let (status, page, _) = viewer.get(&format!("/periods/{PERIOD}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !page.contains("approve-customer"),
        "a viewer sees no approve form"
    );
    assert!(
        page.contains("class=\"exceptions\"") && page.contains("Earlier runs' exceptions"),
        "the period's exceptions and their history: {page}"
    );
    let csrf = csrf_of(&page);
    let (status, _) = viewer
        .post(
            &format!("/periods/{PERIOD}/approve"),
            &[("csrf", &csrf), ("customer", CUSTOMER)],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = viewer
        .post(&format!("/periods/{PERIOD}/push"), &[("csrf", &csrf)])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let after_viewer = {
        let (d, c) = (dir.clone(), config.clone());
        in_blocking(move || ledger(&d, &c, None)).await
    };
    assert_eq!(
        after_viewer, before,
        "a viewer's attempt changed the ledger"
    );

    // The page's subtotals are `tally lines`'s totals, customer by customer, to the cent.
    let shown = subtotals(&page);
    assert!(shown.contains_key(CUSTOMER), "{shown:?}");
    for (account, sums) in &shown {
        let (d, c, a) = (dir.clone(), config.clone(), account.clone());
        let lines = in_blocking(move || ledger(&d, &c, Some(&a))).await;
        assert_eq!(&totals(&lines), sums, "subtotals of {account}");
    }

    // An approver: a POST without the CSRF token is refused; with it, the customer's drafts
    // are approved as the signed-in user, with the note.
    let mut approver = Browser::new(&served.base);
    assert_eq!(
        approver.sign_in(APPROVER.0, APPROVER.1).await,
        StatusCode::SEE_OTHER
    );
    let (_, page, _) = approver.get(&format!("/periods/{PERIOD}")).await;
    assert!(page.contains("class=\"approve-customer\""), "{page}");
    let (status, _) = approver
        .post(
            &format!("/periods/{PERIOD}/approve"),
            &[("customer", CUSTOMER), ("note", "checked")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = approver
        .post(
            &format!("/periods/{PERIOD}/approve"),
            &[("csrf", "0".repeat(64).as_str()), ("customer", CUSTOMER)],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let unchanged = {
        let (d, c) = (dir.clone(), config.clone());
        in_blocking(move || ledger(&d, &c, None)).await
    };
    assert_eq!(unchanged, before, "a refused POST changed the ledger");
    let csrf = csrf_of(&page);
    let (status, _) = approver
        .post(
            &format!("/periods/{PERIOD}/approve"),
            &[
                ("csrf", &csrf),
                ("customer", CUSTOMER),
                ("note", "checked against the contract"),
                ("approve", "customer"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let approved = {
        let (d, c) = (dir.clone(), config.clone());
        in_blocking(move || ledger(&d, &c, None)).await
    };
    let mine: Vec<_> = approved
        .iter()
        .filter(|l| l["key"]["billing_account"] == CUSTOMER)
        .collect();
    assert!(!mine.is_empty());
    for l in &approved {
        if l["key"]["billing_account"] == CUSTOMER {
            assert_eq!(l["status"], "approved", "{l}");
            assert_eq!(l["approval"]["by"], APPROVER.0, "{l}");
            assert_eq!(l["approval"]["note"], "checked against the contract", "{l}");
            assert!(l["approval"]["at"].is_string(), "{l}");
        } else {
            assert_eq!(l["status"], "draft", "{l}");
        }
    }
    let (_, page, _) = approver.get(&format!("/periods/{PERIOD}")).await;
    assert!(page.contains("Approved "), "the outcome is shown: {page}");

    // Push: exactly that customer's lines reach the billing systems.
    assert!(served.sims.rambase.usages().is_empty());
    let csrf = csrf_of(&page);
    let (status, _) = approver
        .post(&format!("/periods/{PERIOD}/push"), &[("csrf", &csrf)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, page, _) = approver.get(&format!("/periods/{PERIOD}")).await;
    let message = &page[page.find("id=\"message\"").unwrap()..];
    assert!(
        message.contains(&format!("Pushed {} line(s).", mine.len())),
        "{message}"
    );
    let pushed = {
        let (d, c) = (dir.clone(), config.clone());
        in_blocking(move || ledger(&d, &c, None)).await
    };
    let received =
        served.sims.rambase.usages().len() + served.sims.activeplatform.corrections().len();
    assert_eq!(
        received,
        mine.len(),
        "the billing systems received other lines"
    );
    for l in &pushed {
        let ours = l["key"]["billing_account"] == CUSTOMER;
        assert_eq!(l["status"] == "pushed", ours, "{l}");
        if ours {
            assert!(l["external_id"].is_string(), "{l}");
        }
    }
    // The line's detail shows the approval and the push's external id.
    let id = mine[0]["id"].as_i64().unwrap();
    let (status, detail, _) = approver.get(&format!("/lines/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(detail.contains("table id=\"tiers\""), "{detail}");
    assert!(detail.contains("checked against the contract"), "{detail}");
    let external = pushed
        .iter()
        .find(|l| l["id"].as_i64() == Some(id))
        .unwrap()["external_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(detail.contains(&external), "{detail}");

    // Selected lines: only the ticked draft is approved.
    let other = pushed
        .iter()
        .find(|l| l["status"] == "draft")
        .expect("another customer's draft")["id"]
        .as_i64()
        .unwrap();
    let (_, page, _) = approver.get(&format!("/periods/{PERIOD}")).await;
    assert!(
        page.contains(&format!("name=\"line\" value=\"{other}\" form=\"approve-")),
        "the draft has a checkbox of its customer's form: {page}"
    );
    let csrf = csrf_of(&page);
    let id_text = other.to_string();
    let (status, _) = approver
        .post(
            &format!("/periods/{PERIOD}/approve"),
            &[
                ("csrf", &csrf),
                ("customer", "whoever"),
                ("line", &id_text),
                ("approve-selected", "selected"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let selected = {
        let (d, c) = (dir.clone(), config.clone());
        in_blocking(move || ledger(&d, &c, None)).await
    };
    for (now, was) in selected.iter().zip(&pushed) {
        if now["id"].as_i64() == Some(other) {
            assert_eq!(now["status"], "approved", "{now}");
            assert_eq!(now["approval"]["by"], APPROVER.0, "{now}");
        } else {
            assert_eq!(now["status"], was["status"], "{now}");
        }
    }

    // The exports are `tally lines --format csv`'s bytes, and an XLSX workbook.
    let (status, csv, disposition) = approver
        .download(&format!("/periods/{PERIOD}/lines.csv"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(disposition.starts_with("attachment"), "{disposition}");
    let cli_csv = {
        let (d, c) = (dir.clone(), config.clone());
        in_blocking(move || {
            tally(&d, &c)
                .args(["lines", "--period", PERIOD, "--format", "csv"])
                .output()
                .unwrap()
        })
        .await
    };
    assert_eq!(cli_csv.status.code(), Some(0), "{}", text(&cli_csv));
    assert_eq!(
        csv, cli_csv.stdout,
        "the page's CSV differs from tally lines --format csv"
    );
    let (status, xlsx, disposition) = approver
        .download(&format!("/periods/{PERIOD}/lines.xlsx"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(disposition.contains(".xlsx"), "{disposition}");
    assert!(xlsx.starts_with(b"PK"), "not an XLSX (zip) file");
    assert_eq!(
        anonymous
            .download(&format!("/periods/{PERIOD}/lines.csv"))
            .await
            .0,
        StatusCode::SEE_OTHER,
        "an export without a session"
    );

    // Signing out ends the session.
    let (_, page, _) = approver.get("/").await;
    let csrf = csrf_of(&page);
    let (status, _) = approver.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(approver.get("/").await.0, StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_review_on_sqlite_signs_in_refuses_viewers_approves_and_pushes_one_customer() {
    let state = tempfile::tempdir().unwrap();
    review_on(&database_url(&fresh_sqlite(&state))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_review_on_postgres_signs_in_refuses_viewers_approves_and_pushes_one_customer() {
    review_on(&database_url(&fresh_postgres().await)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sixth_failed_sign_in_in_a_row_is_refused_with_429_even_with_the_right_password() {
    let state = tempfile::tempdir().unwrap();
    let served = serve_demo(&database_url(&fresh_sqlite(&state))).await;
    let mut browser = Browser::new(&served.base);
    for attempt in 1..=5 {
        assert_eq!(
            browser.sign_in(VIEWER.0, "wrong-password").await,
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }
    assert_eq!(
        browser.sign_in(VIEWER.0, VIEWER.1).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert!(!browser.cookies.contains_key("tally_session"));
    // The pages' security headers, and the session cookie's attributes.
    let login = reqwest::get(format!("{}/login", served.base))
        .await
        .unwrap();
    let header = |name: &str| {
        login
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert!(header("content-security-policy").contains("default-src 'self'"));
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("cache-control"), "no-store");
    let (_, page, _) = browser.get("/login").await;
    let csrf = csrf_of(&page);
    let answer = browser
        .http
        .post(format!("{}/login", served.base))
        .header(COOKIE, browser.cookie_header())
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", APPROVER.0),
            ("password", APPROVER.1),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let session = answer
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("tally_session="))
        .expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(attribute), "{session}");
    }
    assert!(!session.contains("Secure"), "no TLS here: {session}");
    // Another name is not slowed down by it.
    assert_eq!(
        browser.sign_in(APPROVER.0, APPROVER.1).await,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn user_add_refuses_a_password_given_nowhere_and_never_takes_one_as_an_argument() {
    let state = tempfile::tempdir().unwrap();
    let db = database_url(&fresh_sqlite(&state));
    let settings = sim::demo_settings(Path::new("data")).unwrap();
    let sims = sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap();
    let (dir, config) = demo_checkout(&sims, &db);
    let out = user_add(dir.path(), &config, "nobody", "viewer", None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no password given"), "{}", text(&out));
    let out = user_add(dir.path(), &config, "nobody", "viewer", Some("\n"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // There is no argument to give it by.
    let out = tally(dir.path(), &config)
        .args([
            "user",
            "add",
            "nobody",
            "--role",
            "viewer",
            "--password",
            "x",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let list = tally(dir.path(), &config)
        .args(["user", "list"])
        .output()
        .unwrap();
    assert_eq!(list.status.code(), Some(0), "{}", text(&list));
    assert!(!text(&list).contains("nobody"), "{}", text(&list));
    // Given on standard input, it is added (and listed without any hash).
    let out = user_add(
        dir.path(),
        &config,
        "nobody",
        "viewer",
        Some("long-enough-1\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let list = tally(dir.path(), &config)
        .args(["user", "list"])
        .output()
        .unwrap();
    assert!(text(&list).contains("nobody"), "{}", text(&list));
    assert!(!text(&list).contains("argon2"), "{}", text(&list));
    let remove = |dir: &Path| {
        tally(dir, &config)
            .args(["user", "remove", "nobody"])
            .output()
            .unwrap()
    };
    let out = remove(dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = remove(dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("there is no user"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn with_serve_in_daemon_the_daemon_serves_the_review_page_beside_metrics() {
    let state = tempfile::tempdir().unwrap();
    let db = database_url(&fresh_sqlite(&state));
    let settings = sim::demo_settings(Path::new("data")).unwrap();
    let sims = sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap();
    let (dir, config) = demo_checkout(&sims, &db);
    let out = user_add(
        dir.path(),
        &config,
        APPROVER.0,
        "approver",
        Some(&format!("{}\n", APPROVER.1)),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut daemon = tally(dir.path(), &config)
        .arg("daemon")
        .env("TALLY__DAEMON__LISTEN", format!("127.0.0.1:{port}"))
        .env("TALLY__SERVE__IN_DAEMON", "true")
        // Midday, far from the nightly job's 02:30: no run starts during the test.
        .env("TALLY_CLOCK_NOW", "2026-11-20T12:00:00Z")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..120 {
        if reqwest::get(format!("{base}/healthz"))
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let metrics = reqwest::get(format!("{base}/metrics")).await;
    let mut browser = Browser::new(&base);
    let anonymous = browser.get("/").await;
    let signed_in = browser.sign_in(APPROVER.0, APPROVER.1).await;
    let index = browser.get("/").await;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(daemon.id().to_string())
        .status();
    let _ = daemon.wait();
    assert!(up, "the daemon's /healthz never answered");
    assert_eq!(metrics.unwrap().status(), StatusCode::OK);
    assert_eq!(anonymous.0, StatusCode::SEE_OTHER);
    assert_eq!(signed_in, StatusCode::SEE_OTHER);
    assert_eq!(index.0, StatusCode::OK, "{}", index.1);
    assert!(index.1.contains("Billing periods"), "{}", index.1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_while_another_tally_writes_says_who_holds_the_lease_and_changes_nothing() {
    let state = tempfile::tempdir().unwrap();
    let target = fresh_sqlite(&state);
    let served = serve_demo(&database_url(&target)).await;
    let (dir, config) = (served.dir.path().to_owned(), served.config.clone());
    let before = {
        let (d, c) = (dir.clone(), config.clone());
        in_blocking(move || ledger(&d, &c, None)).await
    };
    let store = tally::store::Store::connect(&target).await.unwrap();
    let lease = store
        .acquire_writer("run", std::time::Duration::ZERO)
        .await
        .unwrap();
    let mut approver = Browser::new(&served.base);
    assert_eq!(
        approver.sign_in(APPROVER.0, APPROVER.1).await,
        StatusCode::SEE_OTHER
    );
    let (_, page, _) = approver.get(&format!("/periods/{PERIOD}")).await;
    let csrf = csrf_of(&page);
    let (status, _) = approver
        .post(
            &format!("/periods/{PERIOD}/approve"),
            &[
                ("csrf", &csrf),
                ("customer", CUSTOMER),
                ("approve", "customer"),
            ],
        )
        .await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "a message, not an error page"
    );
    let (status, page, _) = approver.get(&format!("/periods/{PERIOD}")).await;
    assert_eq!(status, StatusCode::OK);
    let message = &page[page.find("id=\"message\"").unwrap()..];
    assert!(
        message.contains("another tally is writing the ledger"),
        "{message}"
    );
    let after = {
        let (d, c) = (dir.clone(), config.clone());
        in_blocking(move || ledger(&d, &c, None)).await
    };
    assert_eq!(
        after, before,
        "an approval without the lease changed the ledger"
    );
    lease.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_tls_the_session_cookie_is_secure() {
    let state = tempfile::tempdir().unwrap();
    let served = serve_demo_with(
        &database_url(&fresh_sqlite(&state)),
        &[("TALLY__SERVE__PUBLIC_URL", "https://billing.example.com/")],
    )
    .await;
    let mut browser = Browser::new(&served.base);
    let (_, page, _) = browser.get("/login").await;
    let csrf = csrf_of(&page);
    let answer = browser
        .http
        .post(format!("{}/login", served.base))
        .header(COOKIE, browser.cookie_header())
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", VIEWER.0),
            ("password", VIEWER.1),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let session = answer
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("tally_session="))
        .expect("a session cookie");
    assert!(session.contains("; Secure"), "{session}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_line_whose_figures_change_after_approval_shows_as_back_in_review() {
    let state = tempfile::tempdir().unwrap();
    let target = fresh_sqlite(&state);
    let served = serve_demo(&database_url(&target)).await;
    let (dir, config) = (served.dir.path().to_owned(), served.config.clone());
    let mut approver = Browser::new(&served.base);
    assert_eq!(
        approver.sign_in(APPROVER.0, APPROVER.1).await,
        StatusCode::SEE_OTHER
    );
    let (_, page, _) = approver.get(&format!("/periods/{PERIOD}")).await;
    let csrf = csrf_of(&page);
    assert!(!page.contains("back in review"), "nothing is back yet");
    let (status, _) = approver
        .post(
            &format!("/periods/{PERIOD}/approve"),
            &[
                ("csrf", &csrf),
                ("customer", CUSTOMER),
                ("approve", "customer"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    // One more Acme Corporation user turns up before the lines are pushed: the re-run changes
    // the approved Service desk line, which goes back to draft.
    let period: tally::domain::Period = PERIOD.parse().unwrap();
    let mut people = served.sims.billable_users.people(period);
    let mut newcomer = people
        .iter()
        .find(|p| p.organization == "Acme Corporation")
        .expect("the demo has Acme Corporation users")
        .clone();
    newcomer.id = 9_999_001;
    newcomer.primary_email = "newcomer@acme.example".into();
    people.push(newcomer);
    served.sims.billable_users.set_people(period, people);
    let (d, c) = (dir.clone(), config.clone());
    let run = in_blocking(move || {
        tally(&d, &c)
            .args(["run", "--period", PERIOD])
            .output()
            .unwrap()
    })
    .await;
    assert!(matches!(run.status.code(), Some(0 | 3)), "{}", text(&run));

    let lines = {
        let (d, c) = (dir.clone(), config.clone());
        in_blocking(move || ledger(&d, &c, Some(CUSTOMER))).await
    };
    let changed: Vec<i64> = lines
        .iter()
        .filter(|l| l["status"] == "draft")
        .map(|l| l["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        changed.len(),
        1,
        "only the changed line waits again: {lines:?}"
    );
    let (_, page, _) = approver.get(&format!("/periods/{PERIOD}")).await;
    let row = &page[page
        .find(&format!("data-line-id=\"{}\"", changed[0]))
        .expect("the changed line is on the page")..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains("back in review"), "{row}");
    assert_eq!(
        page.matches("data-back-to-review").count(),
        1,
        "only that line is marked"
    );
    let (_, detail, _) = approver.get(&format!("/lines/{}", changed[0])).await;
    assert!(detail.contains("back in review"), "{detail}");
    // Its source records: the count, and a sample of them by record key (`id@organization`
    // for billable users), source customer key and item.
    let sample = &detail[detail
        .find("id=\"evidence-sample\"")
        .expect("the line lists a sample of its source records")..];
    let sample = &sample[..sample.find("</ul>").unwrap()];
    let shown = sample.matches("<li>").count();
    assert!((1..=5).contains(&shown), "{sample}");
    assert_eq!(
        sample
            .matches("@Acme Corporation (Acme Corporation, ")
            .count(),
        shown,
        "every record shown is one of Acme Corporation's: {sample}"
    );

    // Approved again, it is an ordinary approved line.
    let csrf = csrf_of(&page);
    approver
        .post(
            &format!("/periods/{PERIOD}/approve"),
            &[
                ("csrf", &csrf),
                ("customer", CUSTOMER),
                ("approve", "customer"),
            ],
        )
        .await;
    let (_, page, _) = approver.get(&format!("/periods/{PERIOD}")).await;
    assert!(!page.contains("data-back-to-review"), "approved again");
}
