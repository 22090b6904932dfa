//! The accountants' review as an accountant meets it: `tally serve` over a ledger filled by a
//! real `tally run` against the simulators, driven in headless Chromium through chromedriver
//! (sign in, a customer's subtotal, a line's tiers, approve, push, the exports), and the
//! refusals an attacker or a viewer meets, asked with plain HTTP.
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver`; `scripts/test.sh`
//! installs them and exports `CHROMEDRIVER`. Without a chromedriver the browser test fails: a
//! review page tested nowhere would look tested. The exports are fetched with reqwest carrying
//! the browser session's cookie rather than through Chrome's download folder, so that the test
//! compares the very bytes the link serves without waiting for a download to settle.
//!
//! With `TALLY_SCREENSHOTS=DIR` the review test saves the period page and a line's detail as
//! `period.png` and `line.png` in DIR: `TALLY_SCREENSHOTS=docs/screenshots cargo test --test it
//! browser::an_accountant` renews the README's screenshots.

use crate::common::{database_url, demo_checkout, fresh_postgres, text};
use fantoccini::{Client, Locator};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::str::FromStr;
use std::time::Duration;
use tally::domain::{LedgerLine, LineStatus};
use tally::sim::{self, RunningSims};

const PERIOD: &str = "2026-10";
/// A RamBase customer of the demo on the graduated list price: its line has several tiers.
const CUSTOMER: &str = "ACME-001";
/// Its recurring invoice plan in the RamBase simulator (config/demo.toml).
const CUSTOMER_PLAN: u64 = 100001;
const APPROVER: (&str, &str) = ("alice", "alice-reviews-2026");
const VIEWER: (&str, &str) = ("victor", "victor-only-looks");

// ---------------------------------------------------------------------------------------------
// The stage: simulators, a ledger filled by a real run, two users, `tally serve`.
// ---------------------------------------------------------------------------------------------

/// A child process killed (and reaped) when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Stage {
    sims: RunningSims,
    dir: tempfile::TempDir,
    config: PathBuf,
    base: String,
    _serve: Killed,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tally(dir: &Path, config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .env("TALLY__BILLING__REQUIRE_APPROVAL", "true")
        .envs(sim::demo_secrets())
        .arg("--config")
        .arg(config);
    command
}

impl Stage {
    /// The demo's month synced by the real binary with `billing.require_approval = true`, so
    /// every line waits as a draft; an approver and a viewer; `tally serve` on a free port.
    async fn start() -> Stage {
        let db = database_url(&fresh_postgres().await);
        let settings = sim::demo_settings(Path::new("data")).unwrap();
        let sims = sim::start_sims(&settings, None, sim::SimPorts::ANY)
            .await
            .unwrap();
        let (dir, config) = demo_checkout(&sims, &db);
        let stage_dir = dir.path().to_path_buf();
        let cfg = config.clone();
        let run = blocking(move || {
            tally(&stage_dir, &cfg)
                .args(["run", "--period", PERIOD])
                .output()
                .unwrap()
        })
        .await;
        // 3: completed with the demo's deliberate exceptions.
        assert_eq!(run.status.code(), Some(3), "tally run: {}", text(&run));
        for ((name, password), role) in [(APPROVER, "approver"), (VIEWER, "viewer")] {
            let added = user_add(dir.path(), &config, name, role, password).await;
            assert_eq!(
                added.status.code(),
                Some(0),
                "tally user add {name}: {}",
                text(&added)
            );
        }
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let serve = tally(dir.path(), &config)
            .args(["serve", "--listen", &listen])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("tally serve starts");
        let serve = Killed(serve);
        let base = format!("http://{listen}");
        wait_until_answers(&format!("{base}/login"), "tally serve").await;
        assert_eq!(
            sims.rambase.usages(),
            vec![],
            "drafts are not pushed by the run"
        );
        Stage {
            sims,
            dir,
            config,
            base,
            _serve: serve,
        }
    }

    /// `tally <args>` on the stage's ledger.
    async fn tally(&self, args: &[&str]) -> Output {
        let (dir, config) = (self.dir.path().to_path_buf(), self.config.clone());
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        blocking(move || tally(&dir, &config).args(args).output().unwrap()).await
    }

    /// The period's lines as `tally lines --format json` reports them (every revision).
    async fn lines(&self, customer: Option<&str>) -> Vec<LedgerLine> {
        let mut args = vec!["lines", "--period", PERIOD, "--format", "json"];
        if let Some(customer) = customer {
            args.extend(["--customer", customer]);
        }
        let output = self.tally(&args).await;
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|err| panic!("tally lines --format json: {err}: {}", text(&output)))
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// `tally user add NAME --role ROLE` with the password on standard input (never an argument).
async fn user_add(dir: &Path, config: &Path, name: &str, role: &str, password: &str) -> Output {
    use std::io::Write;
    let mut child = tally(dir, config)
        .args(["user", "add", name, "--role", role])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{password}").unwrap();
    drop(stdin);
    blocking(move || child.wait_with_output().unwrap()).await
}

/// Waits for a server this test started to accept requests (it binds after start-up work);
/// bounded, so that a server that never comes up fails the test with its name.
async fn wait_until_answers(url: &str, what: &str) {
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if client.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} does not answer on {url}");
}

// ---------------------------------------------------------------------------------------------
// The browser: chromedriver and one headless Chromium session, both always ended.
// ---------------------------------------------------------------------------------------------

/// The chromedriver of `CHROMEDRIVER` (set by scripts/test.sh), else the one on `PATH`.
fn chromedriver_path() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMEDRIVER").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "CHROMEDRIVER={} is not a file: run scripts/test.sh, which installs Debian's \
             chromium and chromium-driver",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("chromedriver"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "chromedriver not found (CHROMEDRIVER is not set and no chromedriver is on \
                 PATH): run the tests with scripts/test.sh, which installs Debian's chromium and \
                 chromium-driver, or set CHROMEDRIVER to a chromedriver matching your Chromium"
            )
        })
}

/// Runs `test` with a fresh headless Chromium session, then quits the session and kills
/// chromedriver whether `test` passed or panicked (the panic is re-raised afterwards).
async fn with_browser<F, Fut>(test: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let port = free_port();
    let driver = Command::new(chromedriver_path())
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Killed(driver);
    let webdriver = format!("http://127.0.0.1:{port}");
    wait_until_answers(&format!("{webdriver}/status"), "chromedriver").await;
    let mut capabilities = fantoccini::wd::Capabilities::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
            ],
        }),
    );
    let client =
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&webdriver)
            .await
            .expect("a headless Chromium session");
    // The test runs as its own task so that its panic comes back here as a value.
    let outcome = tokio::spawn(test(client.clone())).await;
    let closed = client.close().await;
    drop(driver);
    match outcome {
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => panic!("the browser test did not finish: {err}"),
        Ok(()) => closed.expect("the browser session quits"),
    }
}

async fn find(browser: &Client, css: &str) -> fantoccini::elements::Element {
    browser.find(Locator::Css(css)).await.unwrap_or_else(|err| {
        panic!("no `{css}` on the page: {err}");
    })
}

async fn attr(element: &fantoccini::elements::Element, name: &str) -> String {
    element
        .attr(name)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("the element has no `{name}` attribute"))
}

fn decimal(text: &str, what: &str) -> Decimal {
    Decimal::from_str(text.trim()).unwrap_or_else(|err| panic!("{what} {text:?}: {err}"))
}

/// Saves a PNG of what the browser shows into `TALLY_SCREENSHOTS` (when set) as `name`.
async fn screenshot(browser: &Client, name: &str) {
    if let Some(dir) = std::env::var_os("TALLY_SCREENSHOTS") {
        let png = browser.screenshot().await.unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(Path::new(&dir).join(name), png).unwrap();
    }
}

/// The browser session's cookies as one `Cookie` header, for fetching what its links serve.
async fn cookie_header(browser: &Client) -> String {
    browser
        .get_all_cookies()
        .await
        .unwrap()
        .iter()
        .map(|c| format!("{}={}", c.name(), c.value()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Waits for the page a form led to and returns its `#message`: each form answers with a
/// redirect to the period page carrying what was done, so a non-empty message is the sign that
/// the server has finished (the bound only keeps a broken page from hanging the test).
async fn message_after_submit(browser: &Client) -> String {
    browser
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::XPath(
            "//*[@id='message' and normalize-space(.) != '']",
        ))
        .await
        .expect("the page answers the form with a #message")
        .text()
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The end-to-end review.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn an_accountant_reviews_approves_pushes_and_exports_in_a_real_browser() {
    // Before anything else: without chromedriver this test fails here, saying what to run.
    chromedriver_path();
    let stage = std::sync::Arc::new(Stage::start().await);
    let s = stage.clone();
    with_browser(move |browser| async move { review(&s, &browser).await }).await;
}

async fn review(stage: &Stage, browser: &Client) {
    let base = &stage.base;
    // Sign in.
    browser.goto(&format!("{base}/login")).await.unwrap();
    find(browser, "form#login input#username")
        .await
        .send_keys(APPROVER.0)
        .await
        .unwrap();
    find(browser, "form#login input#password")
        .await
        .send_keys(APPROVER.1)
        .await
        .unwrap();
    find(browser, "form#login button#sign-in")
        .await
        .click()
        .await
        .unwrap();

    // Signing in leads to the periods, and the demo month's page. Waited for, not asked for: a
    // page asked for before the sign-in's answer has arrived is the sign-in form again.
    let period_css = format!("a[data-period=\"{PERIOD}\"]");
    let period_link = browser
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css(&period_css))
        .await
        .unwrap_or_else(|err| panic!("signing in did not lead to `{period_css}`: {err}"));
    period_link.click().await.unwrap();
    assert_eq!(
        browser.current_url().await.unwrap().path(),
        format!("/periods/{PERIOD}")
    );

    // The customer's subtotal is what `tally lines` says, to the cent.
    let section = format!("section.customer[data-customer=\"{CUSTOMER}\"]");
    let subtotal = find(
        browser,
        &format!("{section} [data-subtotal][data-currency=\"EUR\"]"),
    )
    .await;
    let shown = attr(&subtotal, "data-amount").await;
    let lines = stage.lines(Some(CUSTOMER)).await;
    assert!(!lines.is_empty(), "{CUSTOMER} has lines in the demo month");
    let mut expected = Decimal::ZERO;
    for line in lines.iter().filter(|l| l.currency.code() == "EUR") {
        expected = expected.checked_add(line.amount).unwrap();
    }
    assert_eq!(
        shown,
        format!("{expected:.2}"),
        "{CUSTOMER}'s EUR subtotal on the page against tally lines"
    );
    let rows = browser
        .find_all(Locator::Css(&format!("{section} tr[data-line-id]")))
        .await
        .unwrap();
    let mut row_ids = Vec::new();
    for row in &rows {
        row_ids.push(attr(row, "data-line-id").await);
    }
    let mut line_ids: Vec<String> = lines.iter().map(|l| l.id.to_string()).collect();
    row_ids.sort();
    line_ids.sort();
    assert_eq!(row_ids, line_ids, "{CUSTOMER}'s rows are its ledger lines");
    screenshot(browser, "period.png").await;

    // A line's detail: its tiers add up to its amount, each tier being units × rate.
    let line = &lines[0];
    find(
        browser,
        &format!("{section} tr[data-line-id=\"{}\"] a.line-detail", line.id),
    )
    .await
    .click()
    .await
    .unwrap();
    assert_eq!(
        browser.current_url().await.unwrap().path(),
        format!("/lines/{}", line.id)
    );
    let tiers = browser
        .find_all(Locator::Css("table#tiers tr.tier"))
        .await
        .unwrap();
    assert!(
        tiers.len() > 1,
        "{CUSTOMER}'s {} users on the graduated list price span several tiers",
        line.quantity
    );
    let (mut units_sum, mut amount_sum) = (Decimal::ZERO, Decimal::ZERO);
    for tier in &tiers {
        let cell = |name: &'static str| {
            let tier = tier.clone();
            async move {
                let cell = tier
                    .find(Locator::Css(&format!("[data-{name}]")))
                    .await
                    .unwrap_or_else(|err| panic!("a tier row without [data-{name}]: {err}"));
                decimal(&attr(&cell, &format!("data-{name}")).await, name)
            }
        };
        let (units, rate, amount) = (
            cell("units").await,
            cell("rate").await,
            cell("amount").await,
        );
        assert_eq!(
            units.checked_mul(rate).unwrap(),
            amount,
            "a tier: {units} × {rate}"
        );
        units_sum = units_sum.checked_add(units).unwrap();
        amount_sum = amount_sum.checked_add(amount).unwrap();
    }
    assert_eq!(
        units_sum, line.quantity,
        "the tiers hold the line's quantity"
    );
    assert_eq!(
        amount_sum, line.amount,
        "the tiers add up to the line's amount"
    );
    screenshot(browser, "line.png").await;

    // Approve the customer, with a note.
    browser
        .goto(&format!("{base}/periods/{PERIOD}"))
        .await
        .unwrap();
    let form = find(browser, &format!("{section} form.approve-customer")).await;
    if let Ok(note) = form.find(Locator::Css("[name=note]")).await {
        note.send_keys("checked against the contract")
            .await
            .unwrap();
    }
    form.find(Locator::Css("button[name=approve]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    message_after_submit(browser).await;
    let approved = stage.lines(Some(CUSTOMER)).await;
    assert_eq!(
        stage.sims.rambase.usages(),
        vec![],
        "approving pushes nothing: the push button does"
    );
    for line in &approved {
        assert_eq!(line.status, LineStatus::Approved, "{line:?}");
        let approval = line
            .approval
            .as_ref()
            .unwrap_or_else(|| panic!("line {} approved on the page: {line:?}", line.id));
        assert!(
            approval.by.contains(APPROVER.0),
            "the approval names who signed in: {approval:?}"
        );
        assert_eq!(
            approval.note.as_deref(),
            Some("checked against the contract")
        );
    }
    let others = stage.lines(None).await;
    assert!(
        others
            .iter()
            .filter(|l| l.key.billing_account.as_str() != CUSTOMER)
            .all(|l| l.status == LineStatus::Draft && l.approval.is_none()),
        "only {CUSTOMER} was approved: {others:?}"
    );

    // Push, twice: the billing system receives the customer's lines once.
    for _ in 0..2 {
        browser
            .goto(&format!("{base}/periods/{PERIOD}"))
            .await
            .unwrap();
        find(browser, "form#push button")
            .await
            .click()
            .await
            .unwrap();
        message_after_submit(browser).await;
    }
    let pushed = stage.lines(Some(CUSTOMER)).await;
    let usages = stage.sims.rambase.usages();
    assert_eq!(
        usages.len(),
        pushed.len(),
        "RamBase received {CUSTOMER}'s lines and nothing else: {usages:?}"
    );
    for line in &pushed {
        assert_eq!(line.status, LineStatus::Pushed, "{line:?}");
        let usage = usages
            .iter()
            .find(|u| Some(u.usage_id.to_string()) == line.external_id)
            .unwrap_or_else(|| panic!("line {} has its usage in RamBase: {usages:?}", line.id));
        assert_eq!(usage.plan_id, CUSTOMER_PLAN);
        assert_eq!(Decimal::from(usage.quantity), line.quantity);
    }
    assert!(
        stage.sims.activeplatform.corrections().is_empty(),
        "the other customers' drafts went nowhere"
    );

    // The exports the page links to are `tally lines --format csv`, as a CSV and as a workbook.
    browser
        .goto(&format!("{base}/periods/{PERIOD}"))
        .await
        .unwrap();
    let cookie = cookie_header(browser).await;
    let csv_href = attr(&find(browser, "a#export-csv").await, "href").await;
    let xlsx_href = attr(&find(browser, "a#export-xlsx").await, "href").await;
    let csv = download(base, &csv_href, &cookie).await;
    let xlsx = download(base, &xlsx_href, &cookie).await;
    let cli = stage
        .tally(&["lines", "--period", PERIOD, "--format", "csv"])
        .await;
    assert_eq!(cli.status.code(), Some(0), "{}", text(&cli));
    assert!(
        csv == cli.stdout,
        "the page's CSV is tally lines --format csv byte for byte:\n{}\n---\n{}",
        String::from_utf8_lossy(&csv),
        String::from_utf8_lossy(&cli.stdout)
    );
    assert_xlsx_matches_csv(&xlsx, &cli.stdout);
}

/// GET `href` (relative to `base`) with the browser's cookie: 200, as an attachment.
async fn download(base: &str, href: &str, cookie: &str) -> Vec<u8> {
    let url = reqwest::Url::parse(base).unwrap().join(href).unwrap();
    let response = reqwest::Client::new()
        .get(url.clone())
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    let disposition = response
        .headers()
        .get(reqwest::header::CONTENT_DISPOSITION)
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    assert!(
        disposition.starts_with("attachment"),
        "GET {url} is a download: Content-Disposition {disposition:?}"
    );
    response.bytes().await.unwrap().to_vec()
}

/// The workbook's first sheet holds the CSV's header and rows, cell for cell; numbers are
/// numbers, written with as many decimals as the CSV gives them.
fn assert_xlsx_matches_csv(xlsx: &[u8], csv: &[u8]) {
    use calamine::{Data, Reader};
    let csv = csv.strip_prefix("\u{feff}".as_bytes()).unwrap_or(csv);
    let expected: Vec<Vec<String>> = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(csv)
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    let mut workbook: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(xlsx.to_vec()))
            .expect("the page's XLSX opens");
    let sheet = workbook
        .worksheet_range_at(0)
        .expect("the workbook has a sheet")
        .unwrap();
    let rows: Vec<&[Data]> = sheet.rows().collect();
    assert!(
        rows.len() >= expected.len(),
        "the workbook has the CSV's {} rows: {} rows",
        expected.len(),
        rows.len()
    );
    for (n, (want, got)) in expected.iter().zip(&rows).enumerate() {
        let got: Vec<String> = (0..want.len())
            .map(|i| {
                let cell = got.get(i).cloned().unwrap_or(Data::Empty);
                cell_text(&cell, &want[i])
            })
            .collect();
        assert_eq!(&got, want, "row {} of the workbook against the CSV", n + 1);
    }
}

/// A cell as the CSV writes it: a number with the decimals of `like`, text as it is.
fn cell_text(cell: &calamine::Data, like: &str) -> String {
    use calamine::Data;
    let decimals = like.split_once('.').map_or(0, |(_, frac)| frac.len());
    match cell {
        Data::Empty => String::new(),
        Data::String(s) | Data::DateTimeIso(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) => format!("{f:.decimals$}"),
        Data::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Refusals, asked with plain HTTP.
// ---------------------------------------------------------------------------------------------

/// A minimal cookie jar: what `Set-Cookie` said last, sent back as one `Cookie` header.
#[derive(Default)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    fn take(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all(reqwest::header::SET_COOKIE) {
            let pair = value.to_str().unwrap().split(';').next().unwrap();
            if let Some((name, value)) = pair.split_once('=') {
                self.0
                    .insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of the first `name="csrf"` field in `html`.
fn csrf_in(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\"")?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let value = tag.split_once("value=\"")?.1;
    Some(value[..value.find('"')?].to_owned())
}

/// A signed-in HTTP session: its cookies and the page `path` it read its CSRF token from.
async fn sign_in(base: &str, (user, password): (&str, &str)) -> Jar {
    let http = no_redirects();
    let mut jar = Jar::default();
    let login = http.get(format!("{base}/login")).send().await.unwrap();
    jar.take(&login);
    let html = login.text().await.unwrap();
    let csrf = csrf_in(&html).expect("the login form carries a csrf field");
    let signed_in = http
        .post(format!("{base}/login"))
        .header(reqwest::header::COOKIE, jar.header())
        .form(&[("username", user), ("password", password), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303, "{user} signs in");
    jar.take(&signed_in);
    jar
}

async fn get(base: &str, path: &str, jar: Option<&Jar>) -> reqwest::Response {
    let mut request = no_redirects().get(format!("{base}{path}"));
    if let Some(jar) = jar {
        request = request.header(reqwest::header::COOKIE, jar.header());
    }
    request.send().await.unwrap()
}

async fn post(base: &str, path: &str, jar: Option<&Jar>, form: &[(&str, &str)]) -> u16 {
    let mut request = no_redirects().post(format!("{base}{path}")).form(form);
    if let Some(jar) = jar {
        request = request.header(reqwest::header::COOKIE, jar.header());
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn no_session_no_csrf_token_or_a_viewer_cannot_approve_or_push() {
    let stage = Stage::start().await;
    let base = &stage.base;
    let before = stage.lines(None).await;
    let approve = format!("/periods/{PERIOD}/approve");
    let push = format!("/periods/{PERIOD}/push");

    // Without a session: pages send to the sign-in, forms are refused.
    for path in [
        "/".to_owned(),
        format!("/periods/{PERIOD}"),
        "/lines/1".into(),
    ] {
        let response = get(base, &path, None).await;
        assert_eq!(response.status(), 303, "GET {path} without a session");
        let location = response.headers()[reqwest::header::LOCATION]
            .to_str()
            .unwrap();
        assert!(location.ends_with("/login"), "GET {path} → {location}");
    }
    for path in [
        format!("/periods/{PERIOD}/lines.csv"),
        format!("/periods/{PERIOD}/lines.xlsx"),
    ] {
        assert_eq!(get(base, &path, None).await.status(), 303, "GET {path}");
    }
    let customer = [("customer", CUSTOMER)];
    assert_eq!(post(base, &approve, None, &customer).await, 403);
    assert_eq!(post(base, &push, None, &[]).await, 403);

    // An approver's session, but no CSRF token or a wrong one.
    let alice = sign_in(base, APPROVER).await;
    let page = get(base, &format!("/periods/{PERIOD}"), Some(&alice)).await;
    assert_eq!(page.status(), 200, "the approver sees the period");
    let real = csrf_in(&page.text().await.unwrap()).expect("the approver's page has forms");
    let forged = format!("{real}x");
    for form in [
        vec![("customer", CUSTOMER)],
        vec![("customer", CUSTOMER), ("csrf", forged.as_str())],
        vec![("customer", CUSTOMER), ("csrf", "")],
    ] {
        assert_eq!(
            post(base, &approve, Some(&alice), &form).await,
            403,
            "approve with {form:?}"
        );
    }
    assert_eq!(
        post(base, &push, Some(&alice), &[]).await,
        403,
        "push without csrf"
    );
    assert_eq!(
        post(base, &push, Some(&alice), &[("csrf", &forged)]).await,
        403,
        "push with a forged csrf"
    );

    // A viewer with a valid token of their own.
    let victor = sign_in(base, VIEWER).await;
    let page = get(base, &format!("/periods/{PERIOD}"), Some(&victor)).await;
    assert_eq!(page.status(), 200, "the viewer sees the period");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("approve-customer"),
        "a viewer is offered no approval"
    );
    let token = match csrf_in(&html) {
        Some(token) => token,
        None => {
            let login = get(base, "/login", Some(&victor)).await;
            csrf_in(&login.text().await.unwrap()).expect("a csrf token for the viewer")
        }
    };
    assert_eq!(
        post(
            base,
            &approve,
            Some(&victor),
            &[("customer", CUSTOMER), ("csrf", &token)]
        )
        .await,
        403,
        "a viewer approving"
    );
    assert_eq!(
        post(base, &push, Some(&victor), &[("csrf", &token)]).await,
        403,
        "a viewer pushing"
    );

    // Nothing changed: the ledger is as the run left it and RamBase received nothing.
    assert_eq!(
        stage.lines(None).await,
        before,
        "the refusals change nothing"
    );
    assert_eq!(stage.sims.rambase.usages(), vec![]);
    assert!(stage.sims.activeplatform.corrections().is_empty());
}
