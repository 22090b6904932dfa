//! The CCC connector against its simulator on a loopback port: sign-in and sessions, paging,
//! concurrent usage calls, who is billable, metered quantities, daily and monthly usage, and
//! refusals, end to end over real HTTP.

use rust_decimal::Decimal;
use secrecy::SecretString;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;
use tally::domain::{LicenseType, Period, StagedRecord};
use tally::http::HttpSettings;
use tally::sim::ccc::{CccSim, CccUser, DayUsage, SimHandle};
use tally::sources::Page;
use tally::sources::ccc::{Ccc, CccSettings, NO_GROUP, PASSWORD_ENV, default_licenses};

const USERNAME: &str = "billing@tally.example";
const PASSWORD: &str = "pw-0123-very-secret";
/// As an operator might write them in the configuration.
const SERVICE_A: &str = "6F9619FF-8B86-D011-B42D-00CF4FC964FF";
const SERVICE_B: &str = "{11111111-2222-3333-4444-555555555555}";
/// As tally and the API spell them.
const A: &str = "6f9619ff8b86d011b42d00cf4fc964ff";
const B: &str = "11111111222233334444555555555555";

fn october() -> Period {
    Period::new(2026, 10).unwrap()
}

fn day(d: u32) -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 10, d).unwrap()
}

fn guid(n: u32) -> String {
    format!("aaaaaaaa0000400080000000{n:08x}")
}

async fn start(services: Vec<(&str, Vec<CccUser>)>) -> (CccSim, SimHandle) {
    let sim = CccSim::new(USERNAME, PASSWORD);
    for (service, users) in services {
        sim.add_service(service, users);
    }
    let handle = sim
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    (sim, handle)
}

fn settings(handle: &SimHandle, services: &[&str]) -> CccSettings {
    CccSettings {
        enabled: true,
        base_url: handle.base_url(),
        username: USERNAME.into(),
        password: Some(SecretString::from(PASSWORD)),
        services: services.iter().map(|s| s.to_string()).collect(),
        page_size: 25,
        max_pages_per_scope: 100_000,
        concurrency: 4,
        scopes_at_once: 4,
        daily: false,
        licenses: default_licenses(),
        metered: BTreeMap::new(),
        http: HttpSettings {
            backoff_ms: 5,
            max_backoff_ms: 20,
            timeout_secs: 5,
            ..HttpSettings::default()
        },
    }
}

/// Fetches every page of `scope` as the pipeline would: the records and the cursors returned.
async fn fetch_all(
    source: &Ccc,
    scope: &str,
) -> anyhow::Result<(Vec<StagedRecord>, Vec<Option<String>>)> {
    let mut records = Vec::new();
    let mut cursors = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let Page {
            records: page,
            next_cursor,
        } = source
            .fetch_page(scope, october(), cursor.as_deref())
            .await?;
        records.extend(page);
        cursors.push(next_cursor.clone());
        cursor = next_cursor;
        if cursor.is_none() {
            return Ok((records, cursors));
        }
    }
}

/// What the pipeline sums: quantity per (customer key, item), and the record keys.
fn summary(records: &[StagedRecord]) -> (BTreeMap<(String, String), Decimal>, BTreeSet<String>) {
    let mut sums = BTreeMap::new();
    for r in records {
        *sums
            .entry((r.customer_key.clone(), r.item.clone()))
            .or_insert(Decimal::ZERO) += r.quantity;
    }
    let keys = records.iter().map(|r| r.record_key.clone()).collect();
    (sums, keys)
}

/// The license records the documented rule expects from the simulator's data: Active users,
/// and Disabled ones with activity in October.
fn expected_billable(users: &[CccUser]) -> BTreeSet<String> {
    users
        .iter()
        .filter(|u| u.status == "Active" || u.monthly_usage(october()).has_activity())
        .map(|u| tally::sources::ccc::normalize_guid(&u.guid).unwrap())
        .collect()
}

fn license_keys(records: &[StagedRecord]) -> BTreeSet<String> {
    records
        .iter()
        .filter(|r| !r.record_key.contains('/'))
        .map(|r| r.record_key.clone())
        .collect()
}

#[tokio::test]
async fn three_pages_of_users_are_read_with_bounded_concurrent_usage_calls() {
    let users = CccUser::generate(1, 60, october());
    let (sim, handle) = start(vec![(SERVICE_A, users.clone())]).await;
    sim.set_usage_delay(Duration::from_millis(20));
    let source = Ccc::new(&settings(&handle, &[SERVICE_A])).unwrap();

    let (records, cursors) = fetch_all(&source, A).await.unwrap();

    assert_eq!(
        cursors,
        [
            Some("2;read=25;entries=60;pages=3".to_owned()),
            Some("3;read=50;entries=60;pages=3".to_owned()),
            None
        ]
    );
    let expected = expected_billable(&users);
    assert!(
        expected.len() < 60,
        "the data must hold Disabled users without activity"
    );
    assert_eq!(license_keys(&records), expected);
    assert_eq!(
        records.len(),
        expected.len(),
        "no metered quantity configured"
    );
    assert!(records.iter().all(|r| r.customer_key == A));
    assert!(records.iter().all(|r| r.quantity == Decimal::ONE));
    let professional = records.iter().filter(|r| r.item == "Professional").count();
    let guest = records.iter().filter(|r| r.item == "Guest").count();
    assert_eq!(professional + guest, records.len());
    assert!(guest > 0);

    assert_eq!(
        sim.users_requests(),
        [
            (A.to_owned(), 1, 25),
            (A.to_owned(), 2, 25),
            (A.to_owned(), 3, 25)
        ]
    );
    assert_eq!(sim.usage_calls(), 60, "one usage call per user");
    let max = sim.max_concurrent_usage_calls();
    assert!((2..=4).contains(&max), "max concurrent usage calls: {max}");
    assert_eq!(sim.logins(), 1, "one session for the whole run");
    assert!(sim.usage_requests().iter().all(|r| {
        r.period_type.as_deref() == Some("Monthly") && r.period.as_deref() == Some("2026-10-01")
    }));
}

#[tokio::test]
async fn an_expired_session_signs_in_again_once_and_every_record_is_still_right() {
    let users = CccUser::generate(2, 40, october());
    let (sim, handle) = start(vec![(SERVICE_A, users.clone())]).await;
    sim.set_usage_delay(Duration::from_millis(5));
    let source = Ccc::new(&settings(&handle, &[SERVICE_A])).unwrap();

    // Login, authenticate, the users page and 5 usage calls pass; the session then expires in
    // the middle of the page's concurrent usage calls.
    sim.expire_sessions_after(8);
    let first = source.fetch_page(A, october(), None).await.unwrap();
    assert_eq!(sim.logins(), 2, "concurrent callers share one new sign-in");
    assert_eq!(sim.authentications(), 2);

    // Between pages (as after 60 minutes idle).
    sim.expire_sessions();
    let second = source.fetch_page(A, october(), Some("2")).await.unwrap();
    assert_eq!(second.next_cursor, None);
    assert_eq!(sim.logins(), 3);

    let records: Vec<StagedRecord> = first.records.into_iter().chain(second.records).collect();
    assert_eq!(license_keys(&records), expected_billable(&users));
    let users_served: BTreeSet<String> = sim.usage_requests().into_iter().map(|r| r.user).collect();
    assert_eq!(users_served.len(), 40, "every user's usage was read");
}

#[tokio::test]
async fn a_session_refused_again_after_signing_in_again_is_a_clear_error() {
    let (sim, handle) = start(vec![(SERVICE_A, CccUser::generate(3, 3, october()))]).await;
    let source = Ccc::new(&settings(&handle, &[SERVICE_A])).unwrap();
    sim.refuse_sessions_next(2);

    let error = format!(
        "{:#}",
        source.fetch_page(A, october(), None).await.unwrap_err()
    );

    assert!(error.contains("401"), "{error}");
    assert!(
        error.contains("again right after signing in again"),
        "{error}"
    );
    assert!(
        error.contains(&format!("/api/services/{A}/users")),
        "{error}"
    );
    assert!(error.contains(USERNAME), "{error}");
    assert!(error.contains("errorCode \"Unauthorized\""), "{error}");
    assert!(!error.contains(PASSWORD), "the password leaked: {error}");
    assert_eq!(sim.logins(), 2, "signed in again exactly once");
    assert_eq!(sim.usage_calls(), 0);
}

#[tokio::test]
async fn disabled_users_are_billed_only_with_activity_in_the_month() {
    let september_30 = chrono::NaiveDate::from_ymd_opt(2026, 9, 30).unwrap();
    let users = vec![
        CccUser::new(&guid(1), "Active", "Professional"),
        CccUser::new(&guid(2), "Disabled", "Professional").with_usage(
            day(15),
            DayUsage {
                messages_received: 2,
                ..DayUsage::default()
            },
        ),
        CccUser::new(&guid(3), "Disabled", "Guest").with_usage(
            september_30,
            DayUsage {
                messages_sent: 5,
                ..DayUsage::default()
            },
        ),
        CccUser::new(&guid(4), "Disabled", "Guest").with_usage(
            day(3),
            DayUsage {
                invitations_sent: 1,
                ..DayUsage::default()
            },
        ),
        CccUser::new(&guid(5), "Disabled", "Professional"),
    ];
    let (_sim, handle) = start(vec![(SERVICE_A, users)]).await;
    let source = Ccc::new(&settings(&handle, &[SERVICE_A])).unwrap();

    let (records, _) = fetch_all(&source, A).await.unwrap();

    let billed: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r.record_key.as_str(), r.item.as_str()))
        .collect();
    assert_eq!(
        billed,
        [
            (&*guid(1), "Professional"),
            (&*guid(2), "Professional"),
            (&*guid(4), "Guest"),
        ]
    );
}

#[tokio::test]
async fn configured_metered_quantities_are_staged_and_mapped() {
    let users = vec![
        CccUser::new(&guid(1), "Active", "Professional")
            .with_usage(
                day(1),
                DayUsage {
                    messages_sent: 3,
                    attachments_count: 1,
                    attachments_size: 2_048,
                    ..DayUsage::default()
                },
            )
            .with_usage(
                day(20),
                DayUsage {
                    messages_sent: 4,
                    messages_received: 9,
                    ..DayUsage::default()
                },
            ),
        CccUser::new(&guid(2), "Active", "Guest"),
    ];
    let (_sim, handle) = start(vec![(SERVICE_A, users)]).await;
    let mut settings = settings(&handle, &[SERVICE_A]);
    settings.metered = BTreeMap::from([
        ("messages_sent".into(), "Secure messaging – Messages".into()),
        (
            "attachment_bytes".into(),
            "Secure messaging – Storage".into(),
        ),
    ]);
    let source = Ccc::new(&settings).unwrap();

    let (records, _) = fetch_all(&source, A).await.unwrap();

    let staged: Vec<(String, String, Decimal)> = records
        .iter()
        .map(|r| (r.record_key.clone(), r.item.clone(), r.quantity))
        .collect();
    assert_eq!(
        staged,
        [
            (guid(1), "Professional".into(), Decimal::ONE),
            (
                format!("{}/messages_sent", guid(1)),
                "messages_sent".into(),
                Decimal::from(7)
            ),
            (
                format!("{}/attachment_bytes", guid(1)),
                "attachment_bytes".into(),
                Decimal::from(2_048)
            ),
            (guid(2), "Guest".into(), Decimal::ONE),
        ]
    );
    assert_eq!(
        source.license_type("messages_sent"),
        Some(LicenseType::new("Secure messaging – Messages"))
    );
    assert_eq!(
        source.license_type("attachment_bytes"),
        Some(LicenseType::new("Secure messaging – Storage"))
    );
    assert_eq!(source.license_type("messages_received"), None);
}

#[tokio::test]
async fn daily_usage_summed_over_the_month_equals_the_monthly_usage() {
    let users = CccUser::generate(7, 6, october());
    let (sim, handle) = start(vec![(SERVICE_A, users)]).await;
    let mut monthly = settings(&handle, &[SERVICE_A]);
    monthly.page_size = 4;
    monthly.metered = [
        "messages_sent",
        "messages_received",
        "attachments",
        "attachment_bytes",
    ]
    .into_iter()
    .map(|m| (m.to_owned(), format!("Secure messaging – {m}")))
    .collect();
    let daily = CccSettings {
        daily: true,
        concurrency: 8,
        ..monthly.clone()
    };

    let (monthly_records, _) = fetch_all(&Ccc::new(&monthly).unwrap(), A).await.unwrap();
    let calls_before = sim.usage_calls();
    let (daily_records, cursors) = fetch_all(&Ccc::new(&daily).unwrap(), A).await.unwrap();

    assert_eq!(cursors.len(), 2, "two pages of four users");
    assert_eq!(summary(&daily_records), summary(&monthly_records));
    assert!(
        monthly_records.iter().any(|r| r.item == "attachment_bytes"),
        "the data must hold metered usage"
    );
    assert_eq!(sim.usage_calls() - calls_before, 6 * 31);
    let daily_requests: Vec<_> = sim
        .usage_requests()
        .into_iter()
        .filter(|r| r.period_type.as_deref() == Some("Daily"))
        .collect();
    assert_eq!(daily_requests.len(), 6 * 31);
    let days: BTreeSet<String> = daily_requests
        .into_iter()
        .filter_map(|r| r.period)
        .collect();
    let october_days: BTreeSet<String> = (1..=31).map(|d| day(d).to_string()).collect();
    assert_eq!(days, october_days);
}

#[tokio::test]
async fn an_unknown_group_type_is_staged_and_maps_to_no_license_type() {
    let mut no_group = CccUser::new(&guid(3), "Active", "Professional");
    no_group.group_type = None;
    let users = vec![
        CccUser::new(&guid(1), "Active", "Professional"),
        CccUser::new(&guid(2), "Active", "Enterprise"),
        no_group,
    ];
    let (_sim, handle) = start(vec![(SERVICE_A, users)]).await;
    let source = Ccc::new(&settings(&handle, &[SERVICE_A])).unwrap();

    let (records, _) = fetch_all(&source, A).await.unwrap();

    let items: Vec<&str> = records.iter().map(|r| r.item.as_str()).collect();
    assert_eq!(items, ["Professional", "Enterprise", NO_GROUP]);
    assert_eq!(
        source.license_type("Professional"),
        Some(LicenseType::new("Secure messaging – Professional"))
    );
    assert_eq!(source.license_type("Enterprise"), None);
    assert_eq!(source.license_type(NO_GROUP), None);
}

#[tokio::test]
async fn a_wrong_password_names_the_login_url_the_error_code_and_the_variable() {
    let (sim, handle) = start(vec![(SERVICE_A, CccUser::generate(4, 3, october()))]).await;
    let mut settings = settings(&handle, &[SERVICE_A]);
    settings.password = Some(SecretString::from("not-the-password"));
    let source = Ccc::new(&settings).unwrap();

    let error = format!(
        "{:#}",
        source.fetch_page(A, october(), None).await.unwrap_err()
    );

    assert!(
        error.contains(&format!("POST {}/v1/login", handle.base_url())),
        "{error}"
    );
    assert!(error.contains("401"), "{error}");
    assert!(error.contains("errorCode \"Unauthorized\""), "{error}");
    assert!(error.contains("Invalid UserName or Password"), "{error}");
    assert!(error.contains(PASSWORD_ENV), "{error}");
    assert!(error.contains("sources.ccc.username"), "{error}");
    assert!(
        !error.contains("not-the-password"),
        "the password leaked: {error}"
    );
    assert_eq!(sim.requests(), 1, "a refused sign-in is not retried");
}

#[tokio::test]
async fn server_errors_are_retried_and_the_page_is_complete() {
    let users = CccUser::generate(5, 5, october());
    let (sim, handle) = start(vec![(SERVICE_A, users.clone())]).await;
    let source = Ccc::new(&settings(&handle, &[SERVICE_A])).unwrap();
    sim.fail_next(3, 500);

    let (records, _) = fetch_all(&source, A).await.unwrap();

    assert_eq!(license_keys(&records), expected_billable(&users));
    // Login, authenticate, one users page and five usage calls, plus the three failures.
    assert_eq!(sim.requests(), 8 + 3);
}

#[tokio::test]
async fn a_server_error_that_persists_fails_with_what_ccc_said() {
    let (sim, handle) = start(vec![(SERVICE_A, CccUser::generate(6, 3, october()))]).await;
    let mut settings = settings(&handle, &[SERVICE_A]);
    settings.http.max_retries = 2;
    let source = Ccc::new(&settings).unwrap();
    sim.fail_next(10, 503);

    let error = format!(
        "{:#}",
        source.fetch_page(A, october(), None).await.unwrap_err()
    );

    assert!(error.contains("503"), "{error}");
    assert!(error.contains("/api/v1/login"), "{error}");
    assert!(error.contains("kept failing after retries"), "{error}");
    assert!(
        error.contains("errorCode \"ServiceUnavailable\": Service Unavailable (simulated)"),
        "{error}"
    );
    assert_eq!(sim.requests(), 3, "one attempt and two retries");
}

#[tokio::test]
async fn each_service_is_a_scope_with_its_own_session_and_customer_key() {
    let (sim, handle) = start(vec![
        (SERVICE_A, CccUser::generate(8, 3, october())),
        (SERVICE_B, vec![CccUser::new(&guid(9), "Active", "Guest")]),
    ])
    .await;
    let source = Ccc::new(&settings(&handle, &[SERVICE_A, SERVICE_B])).unwrap();
    assert_eq!(source.scopes(), [A, B]);

    let (a, _) = fetch_all(&source, A).await.unwrap();
    let (b, _) = fetch_all(&source, B).await.unwrap();
    let (a_again, _) = fetch_all(&source, A).await.unwrap();

    assert!(a.iter().all(|r| r.customer_key == A));
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].customer_key, B);
    assert_eq!(summary(&a_again), summary(&a));
    assert_eq!(sim.logins(), 2, "one session per service, kept");
}

/// Signs in to `service` by hand: the `ss-id` session.
async fn raw_session(http: &reqwest::Client, base: &str, service: &str) -> String {
    let login: serde_json::Value = http
        .post(format!("{base}/v1/login"))
        .json(&serde_json::json!({"username": USERNAME, "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let auth: serde_json::Value = http
        .post(format!("{base}/services/{service}/authenticate"))
        .json(&serde_json::json!({"token": login["sessionToken"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    auth["sessionId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_simulator_binds_a_session_to_its_service_and_limits_the_page_size() {
    let (_sim, handle) = start(vec![
        (SERVICE_A, CccUser::generate(10, 30, october())),
        (SERVICE_B, vec![]),
    ])
    .await;
    let base = handle.base_url();
    let http = reqwest::Client::new();
    let session = raw_session(&http, &base, SERVICE_A).await;
    let get = |url: String| {
        http.get(url)
            .header("Cookie", format!("ss-id={session}"))
            .send()
    };

    let other = get(format!("{base}/services/{B}/users")).await.unwrap();
    assert_eq!(other.status(), 403);
    let body: serde_json::Value = other.json().await.unwrap();
    assert_eq!(body["responseStatus"]["errorCode"], "Forbidden");

    let too_big = get(format!("{base}/services/{A}/users?Page=1&PageSize=101"))
        .await
        .unwrap();
    assert_eq!(too_big.status(), 400);
    let body: serde_json::Value = too_big.json().await.unwrap();
    assert_eq!(body["responseStatus"]["errors"][0]["fieldName"], "PageSize");

    let default = get(format!("{base}/services/{A}/users")).await.unwrap();
    let body: serde_json::Value = default.json().await.unwrap();
    assert_eq!(body["pageSize"], 25);
    assert_eq!(body["totalPages"], 2);
    assert_eq!(body["totalItems"], 30);
    assert_eq!(body["results"].as_array().unwrap().len(), 25);

    let no_cookie = http
        .get(format!("{base}/services/{A}/users"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_cookie.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_limit_ccc_does_not_publish_is_met_once_then_paced_to() {
    // 60 users: 3 pages and 60 usage calls, 4 at a time, against 12 requests per 1 s, never
    // announced. Without pacing every window would end in a burst of 429s.
    let users = CccUser::generate(3, 60, october());
    let (sim, handle) = start(vec![(SERVICE_A, users.clone())]).await;
    sim.set_hidden_rate_limit(12, Duration::from_secs(1));
    let source = Ccc::new(&settings(&handle, &[SERVICE_A])).unwrap();

    let (records, _) = fetch_all(&source, A).await.unwrap();

    assert_eq!(license_keys(&records), expected_billable(&users));
    // The first window is met by the requests in flight when it filled (at most the four
    // usage calls); after it, none.
    let refused = sim.refused_429();
    assert!(
        (1..=4).contains(&refused),
        "429s: {refused} (one burst at most, then paced)"
    );
}
