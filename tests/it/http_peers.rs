//! Peers that misbehave at the HTTP level, against the simulators and small local servers:
//! absurd or garbage `Retry-After` values, a rate-limit window that resets after the run's
//! deadline, token endpoints whose errors must name the request that was really sent, and a
//! billing system that redirects a write to another server.

use crate::common;

use axum::body::Bytes;
use axum::http::HeaderMap;
use chrono::Utc;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tally::config::Settings;
use tally::domain::{
    BillingAccount, Evidence, LedgerLine, LicenseType, LineKey, LineStatus, Period, RunStatus,
    SourceName, Trigger,
};
use tally::http::HttpSettings;
use tally::pipeline::{self, App, RunOptions};
use tally::sim::activeplatform::ActivePlatformSim;
use tally::sim::billable_users::{BillableUsersSim, SimHandle};
use tally::sim::rambase::RamBaseSim;
use tally::sim::{self, RunningSims};
use tally::sinks::PushError;
use tally::sinks::activeplatform::{ActivePlatform, ActivePlatformSettings};
use tally::sinks::rambase::{RamBase, RamBaseItem, RamBaseSettings};
use tally::sources::billable_users::{BillableUsers, BillableUsersSettings, Format};
use tally::store::DatabaseTarget;

const TOKEN: &str = "sim-token-0123";
const ACCOUNT: &str = "wdc";

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn october() -> Period {
    Period::new(2026, 10).unwrap()
}

/// Settings whose retries are quick, so that a test never waits on its own backoff.
fn quick_http() -> HttpSettings {
    HttpSettings {
        backoff_ms: 5,
        max_backoff_ms: 20,
        max_retries: 2,
        timeout_secs: 5,
        ..HttpSettings::default()
    }
}

async fn billable_users() -> (BillableUsersSim, SimHandle, BillableUsers) {
    let sim = BillableUsersSim::new(TOKEN, ACCOUNT);
    sim.set_people(october(), BillableUsersSim::generate(october(), 1, 3));
    let handle = sim.serve(loopback()).await.unwrap();
    let source = BillableUsers::new(&BillableUsersSettings {
        enabled: true,
        base_url: handle.base_url(),
        account: ACCOUNT.into(),
        token: Some(SecretString::from(TOKEN)),
        client_id: None,
        client_secret: None,
        oauth_url: None,
        per_page: 10,
        max_pages_per_scope: 100_000,
        concurrency: 4,
        license_type: "Service desk user".into(),
        format: Format::Json,
        http: quick_http(),
    })
    .unwrap();
    (sim, handle, source)
}

#[tokio::test]
async fn a_retry_after_too_large_to_wait_for_fails_the_page_at_once_naming_the_url_and_the_wait() {
    let a_day_away = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(86_400));
    for (value, wait) in [
        // The values that used to crash tally.
        ("1e20", "a wait too long to count"),
        ("99999999999999999999", "a wait too long to count"),
        ("1e400", "a wait too long to count"),
        ("86401", "a wait of 86401 s"),
        // An HTTP-date (RFC 9110) a day away; the second it was written in may have passed.
        (&a_day_away, "a wait of 8639"),
    ] {
        let (sim, handle, source) = billable_users().await;
        sim.rate_limit_next_with(1, value);

        let err = source
            .fetch_page(ACCOUNT, october(), None)
            .await
            .unwrap_err();

        let text = format!("{err:#}");
        for expected in [
            format!("GET {}/account/billable_users", handle.base_url()),
            format!("is rate limited: it answered 429 with Retry-After: {value:?}"),
            wait.to_owned(),
            ", longer than http.max_retry_after_secs (900 s)".to_owned(),
            "raise sources.billable_users.http.max_retry_after_secs".to_owned(),
        ] {
            assert!(
                text.contains(&expected),
                "{value}: {expected} missing in {text}"
            );
        }
        assert_eq!(sim.requests(), 1, "{value}: not asked again");
    }
}

#[tokio::test]
async fn a_retry_after_that_is_garbage_negative_or_past_is_waited_out_with_the_backoff() {
    for value in [
        "-1",
        "NaN",
        "inf",
        "soon",
        "",
        "Sun, 06 Nov 1994 08:49:37 GMT",
    ] {
        let (sim, _handle, source) = billable_users().await;
        sim.rate_limit_next_with(1, value);

        let page = source.fetch_page(ACCOUNT, october(), None).await;

        let page = page.unwrap_or_else(|e| panic!("{value:?}: {e:#}"));
        assert_eq!(page.records.len(), 3, "{value:?}");
        assert_eq!(sim.requests(), 2, "{value:?}: refused once, then answered");
    }
}

// --- the run's deadline ---------------------------------------------------------------------

async fn sims() -> RunningSims {
    let settings = sim::demo_settings(std::path::Path::new("data")).unwrap();
    sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap()
}

/// The demo's billable users into RamBase (as in tests/it/pipeline.rs), ten people a page.
fn demo_settings(sims: &RunningSims, db: &DatabaseTarget) -> Settings {
    let mut settings = common::billable_users_into_rambase(sims, db);
    if let Some(s) = settings.sources.billable_users.as_mut() {
        s.per_page = 10;
        s.http = quick_http();
    }
    if let Some(s) = settings.sinks.rambase.as_mut() {
        s.http = quick_http();
    }
    settings
}

fn run_options() -> RunOptions {
    RunOptions {
        period: sim::DEMO_PERIOD.parse().unwrap(),
        source: None,
        dry_run: false,
        trigger: Trigger::Manual,
        customer: None,
        requested_by: None,
    }
}

/// The `page` of every request the billable-users simulator answered, in order.
fn pages_requested(sim: &BillableUsersSim) -> Vec<String> {
    sim.received()
        .iter()
        .map(|r| {
            r.query
                .split('&')
                .find_map(|pair| pair.strip_prefix("page="))
                .unwrap_or("1")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_window_resetting_after_the_run_deadline_fails_the_source_keeps_its_checkpoint_and_the_next_run_resumes()
 {
    let sims = sims().await;
    let db = common::fresh_postgres().await;
    // Two requests, then the window is used up for two hours; the run may wait one minute.
    sims.billable_users
        .set_rate_limit(2, Duration::from_secs(2 * 3_600));
    let mut settings = demo_settings(&sims, &db);
    settings.general.run_deadline_secs = 60;
    let app = App::build(settings).await.unwrap();
    let period = run_options().period;

    let report = pipeline::run(&app, &run_options()).await.unwrap();

    assert_eq!(report.summary.status, RunStatus::Failed);
    let [failure] = report.summary.failed_sources.as_slice() else {
        panic!("{:?}", report.summary.failed_sources);
    };
    assert_eq!(failure.source, "billable_users");
    for expected in [
        format!("GET {}/account/billable_users", sims.billable_users_url),
        "its rate-limit window is used up (X-RateLimit-Remaining: 0".to_owned(),
        "which ends after this run's deadline".to_owned(),
        "general.run_deadline_secs = 60".to_owned(),
        "the next run resumes where this one stopped".to_owned(),
    ] {
        assert!(
            failure.error.contains(&expected),
            "{expected} missing in {}",
            failure.error
        );
    }
    // Failed at once: the third page was never asked for, nothing was pushed.
    assert_eq!(sims.billable_users.requests(), 2);
    assert!(sims.rambase.usages().is_empty());
    let checkpoint = app
        .store
        .checkpoint(
            &SourceName::new("billable_users"),
            sim::DEMO_ACCOUNT,
            period,
        )
        .await
        .unwrap()
        .expect("the checkpoint is kept");
    assert!(!checkpoint.complete);
    assert_eq!((checkpoint.pages, checkpoint.records), (2, 20));

    // The window has reset; the next run (a new process) resumes at page 3 and bills everyone.
    sims.billable_users
        .set_rate_limit(3_600, Duration::from_secs(3_600));
    let app = App::build(demo_settings(&sims, &db)).await.unwrap();
    let report = pipeline::run(&app, &run_options()).await.unwrap();

    // As the demo always ends: one customer is not in the customer map.
    assert_eq!(
        report.summary.status,
        RunStatus::CompletedWithExceptions,
        "{:?}",
        report.summary
    );
    assert!(report.summary.failed_sources.is_empty());
    assert_eq!(report.summary.records_read, 51);
    assert_eq!(
        pages_requested(&sims.billable_users),
        ["1", "2", "3", "4", "5", "6"]
    );
    let mut quantities: Vec<(u64, i64)> = sims
        .rambase
        .usages()
        .iter()
        .map(|u| (u.plan_id, u.quantity))
        .collect();
    quantities.sort();
    assert_eq!(
        quantities,
        [(100001, 12), (100002, 7), (100003, 25), (100004, 3)]
    );
}

#[test]
fn a_run_deadline_of_zero_is_refused_by_check_config() {
    let mut settings = sim::demo_settings(std::path::Path::new("data")).unwrap();
    settings.general.run_deadline_secs = 0;
    let problems: Vec<String> = pipeline::check(&settings)
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("general.run_deadline_secs") && p.contains("is 0")),
        "{problems:?}"
    );
    settings.general.run_deadline_secs = 21_600;
    assert!(
        !pipeline::check(&settings)
            .iter()
            .any(|p| p.to_string().contains("run_deadline")),
        "the default is accepted"
    );
}

// --- token errors name the POST -------------------------------------------------------------

fn rambase_settings(base_url: String) -> RamBaseSettings {
    RamBaseSettings {
        base_url,
        client_id: "tally-client".into(),
        client_secret: Some(SecretString::from("tally-secret")),
        db: None,
        items: vec![RamBaseItem {
            billing_account: "ACME".into(),
            license_type: "Agent".into(),
            plan_id: 100_001,
            item_id: 1,
        }],
        period_ids: [("2026-10".to_owned(), 100_010)].into(),
        mapping_file: None,
        http: quick_http(),
    }
}

fn line(
    account: &str,
    license: &str,
    sink: &str,
    quantity: Decimal,
    amount: Decimal,
) -> LedgerLine {
    let key = LineKey {
        period: october(),
        billing_account: BillingAccount::new(account),
        license_type: LicenseType::new(license),
        source: SourceName::new("billable_users"),
    };
    LedgerLine {
        id: 1,
        idempotency_key: key.idempotency_key(1),
        key,
        revision: 1,
        quantity,
        amount,
        rate: dec!(10.00),
        currency: "EUR".parse().unwrap(),
        total_quantity: quantity,
        total_amount: amount,
        price_ref: "agent@2026-01-01".into(),
        trace: serde_json::Value::Null.into(),
        evidence: Evidence::default(),
        sink: sink.into(),
        status: LineStatus::Approved,
        external_id: None,
        push_marker: None,
        last_error: None,
        approval: None,
        run_id: 1,
        created_at: Utc::now(),
        updated_at: Utc::now(),
        pushed_at: None,
    }
}

/// What a local server received: method, path, headers and body of each request.
type Received = Arc<Mutex<Vec<(String, String, HeaderMap, Bytes)>>>;

/// A server answering every request with `status` and `body`, recording what it received.
async fn recording(status: u16, body: &'static str) -> (String, Received) {
    let received: Received = Arc::default();
    let log = received.clone();
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method,
              uri: axum::http::Uri,
              headers: HeaderMap,
              bytes: Bytes| {
            let log = log.clone();
            async move {
                log.lock()
                    .unwrap()
                    .push((method.to_string(), uri.to_string(), headers, bytes));
                (axum::http::StatusCode::from_u16(status).unwrap(), body)
            }
        },
    );
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[tokio::test]
async fn a_rambase_token_error_names_the_post_that_was_sent() {
    // A token endpoint answering 200 with a proxy's HTML page.
    let (proxy, received) = recording(200, "<html>please sign in</html>").await;
    let rambase = RamBase::new(&rambase_settings(format!("{proxy}/"))).unwrap();

    let err = rambase
        .prepare(&line("ACME", "Agent", "rambase", dec!(5), dec!(50.00)))
        .await
        .unwrap_err();

    let text = format!("{err:#}");
    assert!(
        text.contains(&format!(
            "RamBase token request failed: POST {proxy}/oauth2/access_token answered with a body tally cannot read"
        )),
        "{text}"
    );
    assert!(!text.contains("GET "), "{text}");
    assert!(!text.contains("tally-secret"), "{text}");
    let methods: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.0.clone())
        .collect();
    assert_eq!(methods, ["POST"], "only the token request was sent");

    // RamBase's simulator asking the token request to wait a day.
    let sim = RamBaseSim::new("tally-client", "tally-secret");
    let handle = sim.serve(loopback()).await.unwrap();
    sim.rate_limit_next(1, 86_400);
    let rambase = RamBase::new(&rambase_settings(handle.base_url())).unwrap();
    let err = rambase
        .prepare(&line("ACME", "Agent", "rambase", dec!(5), dec!(50.00)))
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    for expected in [
        "RamBase token request failed: POST ".to_owned(),
        "oauth2/access_token is rate limited: it answered 429 with Retry-After: \"86400\""
            .to_owned(),
        "a wait of 86400 s, longer than http.max_retry_after_secs (900 s)".to_owned(),
        "raise sinks.rambase.http.max_retry_after_secs".to_owned(),
    ] {
        assert!(text.contains(&expected), "{expected} missing in {text}");
    }
    assert_eq!(sim.tokens_issued(), 0);
    assert_eq!(sim.requests().len(), 1, "{:?}", sim.requests());
}

// --- a write redirected to another server ---------------------------------------------------

const AP_TOKEN: &str = "ap-s3cret-token-77";
const RESELLER: &str = "5001";

#[tokio::test]
async fn a_correction_answered_with_a_307_to_another_server_sends_that_server_nothing_and_is_uncertain()
 {
    let (elsewhere, collected) = recording(201, "{}").await;
    let sim = ActivePlatformSim::new(AP_TOKEN, RESELLER);
    sim.add_demo_accounts();
    let handle = sim.serve(loopback()).await.unwrap();
    let mut settings = ActivePlatformSettings::new(handle.base_url(), RESELLER);
    settings.api_token = Some(SecretString::from(AP_TOKEN));
    settings.http = quick_http();
    let ap = ActivePlatform::new(&settings).unwrap();
    let correction = line(
        "2000036",
        "Service desk agent",
        "activeplatform",
        dec!(4),
        dec!(50.00),
    );
    sim.redirect_next(1, 307, &format!("{elsewhere}/collect"));

    let pushed = ap.push(&correction).await;

    let Err(PushError::Uncertain(message)) = &pushed else {
        panic!("a redirected write is not done, and not surely refused: {pushed:?}");
    };
    assert!(message.contains("307"), "{message}");
    assert!(
        message.contains(&format!(
            "a redirect to \"{elsewhere}/collect\" that tally does not follow"
        )),
        "{message}"
    );
    assert!(!message.contains(AP_TOKEN), "{message}");
    let seen: Vec<_> = collected
        .lock()
        .unwrap()
        .iter()
        .map(|(m, p, h, b)| (m.clone(), p.clone(), h.contains_key("x-api-token"), b.len()))
        .collect();
    assert!(
        seen.is_empty(),
        "the other server received no request, no body and no x-api-token: {seen:?}"
    );
    assert!(sim.corrections().is_empty());
    // The one POST went to ActivePlatform only; recovery reads it before any resend.
    assert_eq!(
        sim.requests()
            .iter()
            .filter(|r| r.starts_with("POST "))
            .count(),
        1
    );
    assert_eq!(ap.find(&correction).await.unwrap(), None);
    assert!(
        ap.push(&correction).await.is_ok(),
        "sent once it is known absent"
    );
    assert_eq!(sim.corrections().len(), 1);
}

#[tokio::test]
async fn an_accounts_read_redirected_to_another_server_is_not_followed() {
    let (elsewhere, collected) = recording(200, "[]").await;
    let sim = ActivePlatformSim::new(AP_TOKEN, RESELLER);
    sim.add_demo_accounts();
    let handle = sim.serve(loopback()).await.unwrap();
    let mut settings = ActivePlatformSettings::new(handle.base_url(), RESELLER);
    settings.api_token = Some(SecretString::from(AP_TOKEN));
    settings.http = quick_http();
    let ap = ActivePlatform::new(&settings).unwrap();
    sim.redirect_next(1, 302, &format!("{elsewhere}/accounts.json"));

    let found = ap
        .find_account(&tally::sinks::activeplatform::AccountKey::Email(
            "ap@initech.example".into(),
        ))
        .await;

    let err = found.expect_err("an empty list from elsewhere is never read as no account");
    assert!(err.to_string().contains("302"), "{err}");
    assert!(!err.to_string().contains(AP_TOKEN), "{err}");
    assert!(collected.lock().unwrap().is_empty());
}
