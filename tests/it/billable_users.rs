//! The Billable Users connector against its simulator on a loopback port: paging, duplicates,
//! rate limits, retries and refusals, and signing in with OAuth client credentials whose tokens
//! expire, end to end over real HTTP.

use crate::common;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use secrecy::SecretString;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tally::domain::Period;
use tally::http::HttpSettings;
use tally::sim::billable_users::{BillableUsersSim, Person, SimHandle};
use tally::sources::Page;
use tally::sources::billable_users::{
    BillableUsers, BillableUsersSettings, CLIENT_SECRET_ENV, Format, TOKEN_ENV,
};

const TOKEN: &str = "sim-token-0123";
const ACCOUNT: &str = "wdc";
const CLIENT_ID: &str = "tally-oauth-app";
const CLIENT_SECRET: &str = "sim-client-s3cret-9876";

fn october() -> Period {
    Period::new(2026, 10).unwrap()
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn start(people: Vec<Person>) -> (BillableUsersSim, SimHandle) {
    let sim = BillableUsersSim::new(TOKEN, ACCOUNT);
    sim.set_people(october(), people);
    let handle = sim.serve(loopback()).await.unwrap();
    (sim, handle)
}

fn settings(handle: &SimHandle, token: &str, per_page: u32) -> BillableUsersSettings {
    BillableUsersSettings {
        enabled: true,
        base_url: handle.base_url(),
        account: ACCOUNT.into(),
        token: Some(SecretString::from(token)),
        client_id: None,
        client_secret: None,
        oauth_url: None,
        per_page,
        max_pages_per_scope: 100_000,
        concurrency: 4,
        license_type: "Service desk user".into(),
        format: Format::Json,
        http: HttpSettings {
            backoff_ms: 10,
            max_backoff_ms: 50,
            timeout_secs: 5,
            ..HttpSettings::default()
        },
    }
}

fn source(handle: &SimHandle, per_page: u32) -> BillableUsers {
    BillableUsers::new(&settings(handle, TOKEN, per_page)).unwrap()
}

/// Fetches every page as the pipeline would, returning the pages and the cursors it was given.
async fn fetch_all(source: &BillableUsers) -> anyhow::Result<(Vec<Page>, Vec<Option<String>>)> {
    let mut pages = Vec::new();
    let mut cursors = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = source
            .fetch_page(ACCOUNT, october(), cursor.as_deref())
            .await?;
        cursor = page.next_cursor.clone();
        cursors.push(cursor.clone());
        pages.push(page);
        if cursor.is_none() {
            return Ok((pages, cursors));
        }
    }
}

fn person(id: u64, organization: &str) -> Person {
    Person {
        id,
        primary_email: format!("p{id}@example.com"),
        name: format!("Person {id}"),
        organization: organization.into(),
        business_unit: None,
        region: "Europe".into(),
        sign_ins: 1,
        last_visit: Some("2026-10-30T15:22:25-05:00".into()),
        updates: 0,
    }
}

async fn raw_get(url: &str, account: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(url).bearer_auth(TOKEN);
    if let Some(account) = account {
        request = request.header("X-4me-Account", account);
    }
    request.send().await.unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn paging_over_three_pages_yields_every_record_exactly_once() {
    let people = BillableUsersSim::generate(october(), 5, 50);
    let (sim, handle) = start(people.clone()).await;
    let source = source(&handle, 100);

    let (pages, cursors) = fetch_all(&source).await.unwrap();

    // Each cursor names the next page and carries what was read and announced, so that a run
    // resuming at it can still check the count.
    assert_eq!(
        cursors,
        [
            Some("2;read=100;entries=250;pages=3".to_owned()),
            Some("3;read=200;entries=250;pages=3".to_owned()),
            None
        ]
    );
    assert_eq!(
        pages.iter().map(|p| p.records.len()).collect::<Vec<_>>(),
        [100, 100, 50]
    );
    let keys: Vec<String> = pages
        .iter()
        .flat_map(|p| p.records.iter().map(|r| r.record_key.clone()))
        .collect();
    let expected: Vec<String> = people
        .iter()
        .map(|p| format!("{}@{}", p.id, p.organization))
        .collect();
    assert_eq!(keys, expected);
    let first = &pages[0].records[0];
    assert_eq!(first.customer_key, "Org 0001");
    assert_eq!(first.item, "billable_user");
    // Never a page twice: three pages, three requests.
    assert_eq!(sim.requests(), 3);
}

#[tokio::test]
async fn a_per_page_of_500_is_capped_to_100_by_the_simulator() {
    let (_sim, handle) = start(BillableUsersSim::generate(october(), 1, 250)).await;
    let url = format!(
        "{}/account/billable_users?year=2026&month=10&per_page=500",
        handle.base_url()
    );

    let response = raw_get(&url, Some(ACCOUNT)).await;

    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-pagination-per-page"), "100");
    assert_eq!(header(&response, "x-pagination-total-pages"), "3");
    assert_eq!(header(&response, "x-pagination-total-entries"), "250");
    assert_eq!(header(&response, "x-ratelimit-limit"), "3600");
    let link = header(&response, "link").to_owned();
    assert!(
        link.contains("page=2&per_page=100>; rel=\"next\""),
        "{link}"
    );
    let body: Vec<serde_json::Value> = response.json().await.unwrap();
    assert_eq!(body.len(), 100);
}

#[tokio::test]
async fn the_default_page_holds_twenty_people() {
    let (_sim, handle) = start(BillableUsersSim::generate(october(), 1, 30)).await;
    let url = format!(
        "{}/account/billable_users?year=2026&month=10",
        handle.base_url()
    );
    let response = raw_get(&url, Some(ACCOUNT)).await;
    assert_eq!(header(&response, "x-pagination-per-page"), "20");
    let body: Vec<serde_json::Value> = response.json().await.unwrap();
    assert_eq!(body.len(), 20);
}

#[tokio::test]
async fn a_person_listed_twice_on_two_pages_gets_the_same_record_key_twice() {
    let mut people: Vec<Person> = (1..=4).map(|id| person(id, "Acme, Inc.")).collect();
    people.push(person(2, "Acme, Inc.")); // page 3 repeats the person of page 1
    people.push(person(2, "Other Org")); // same person, another organization
    let (_sim, handle) = start(people).await;
    let source = source(&handle, 2);

    let (pages, _) = fetch_all(&source).await.unwrap();

    let keys: Vec<&str> = pages
        .iter()
        .flat_map(|p| p.records.iter().map(|r| r.record_key.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            "1@Acme, Inc.",
            "2@Acme, Inc.",
            "3@Acme, Inc.",
            "4@Acme, Inc.",
            "2@Acme, Inc.",
            "2@Other Org"
        ]
    );
    let distinct: HashSet<&str> = keys.iter().copied().collect();
    assert_eq!(distinct.len(), 5, "the store keeps one record per key");
}

#[tokio::test]
async fn a_429_with_retry_after_is_honoured_before_retrying() {
    let (sim, handle) = start(BillableUsersSim::generate(october(), 1, 3)).await;
    let source = source(&handle, 100);
    sim.rate_limit_next(1, 1);

    let started = Instant::now();
    let page = source.fetch_page(ACCOUNT, october(), None).await.unwrap();

    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited only {:?}",
        started.elapsed()
    );
    assert_eq!(page.records.len(), 3);
    assert_eq!(sim.requests(), 2);
}

#[tokio::test]
async fn a_500_is_retried_and_then_succeeds() {
    let (sim, handle) = start(BillableUsersSim::generate(october(), 1, 3)).await;
    let source = source(&handle, 100);
    sim.fail_next(2, 500);

    let page = source.fetch_page(ACCOUNT, october(), None).await.unwrap();

    assert_eq!(page.records.len(), 3);
    assert_eq!(sim.requests(), 3);
}

#[tokio::test]
async fn a_refused_token_names_the_environment_variable_and_is_not_retried() {
    let (sim, handle) = start(BillableUsersSim::generate(october(), 1, 3)).await;
    let source = BillableUsers::new(&settings(&handle, "wrong-token", 100)).unwrap();

    let error = source
        .fetch_page(ACCOUNT, october(), None)
        .await
        .unwrap_err()
        .to_string();

    assert!(
        error.contains("401") || error.contains("refused"),
        "{error}"
    );
    assert!(error.contains(TOKEN_ENV), "{error}");
    assert!(error.contains("/v1/account/billable_users"), "{error}");
    assert!(!error.contains("wrong-token"), "the token leaked: {error}");
    assert_eq!(sim.requests(), 1);
}

#[tokio::test]
async fn a_422_lists_the_refused_field() {
    let (sim, handle) = start(BillableUsersSim::generate(october(), 1, 3)).await;
    let source = source(&handle, 100);
    sim.fail_next(1, 422);

    let error = source
        .fetch_page(ACCOUNT, october(), None)
        .await
        .unwrap_err()
        .to_string();

    assert!(error.contains("422"), "{error}");
    assert!(error.contains("month is invalid"), "{error}");
    assert_eq!(sim.requests(), 1, "a 422 is not retried");
}

#[tokio::test]
async fn the_simulator_answers_422_for_a_month_that_is_not_a_month() {
    let (_sim, handle) = start(vec![]).await;
    let url = format!(
        "{}/account/billable_users?year=2026&month=13",
        handle.base_url()
    );
    let response = raw_get(&url, Some(ACCOUNT)).await;
    assert_eq!(response.status(), 422);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"], serde_json::json!([["month", "is invalid"]]));
}

#[tokio::test]
async fn the_simulator_refuses_a_request_without_the_account_header() {
    let (_sim, handle) = start(BillableUsersSim::generate(october(), 1, 3)).await;
    let url = format!(
        "{}/account/billable_users?year=2026&month=10",
        handle.base_url()
    );

    let without = raw_get(&url, None).await;
    assert_eq!(without.status(), 404);
    let body: serde_json::Value = without.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("X-4me-Account"));

    let other = raw_get(&url, Some("someone-else")).await;
    assert_eq!(other.status(), 404);
}

#[tokio::test]
async fn a_wrong_account_tells_the_operator_to_check_base_url_and_account() {
    let (sim, handle) = start(BillableUsersSim::generate(october(), 1, 3)).await;
    let source = source(&handle, 100);

    let error = source
        .fetch_page("someone-else", october(), None)
        .await
        .unwrap_err()
        .to_string();

    assert!(error.contains("404"), "{error}");
    assert!(error.contains("sources.billable_users.account"), "{error}");
    assert_eq!(sim.requests(), 1);
}

#[tokio::test]
async fn a_month_with_no_data_is_one_empty_page() {
    let (_sim, handle) = start(vec![]).await;
    let source = source(&handle, 100);

    let page = source
        .fetch_page(ACCOUNT, october().next(), None)
        .await
        .unwrap();

    assert_eq!(page.records, vec![]);
    assert_eq!(page.next_cursor, None);
}

#[tokio::test]
async fn a_used_up_hourly_window_answers_a_real_429_with_retry_after() {
    let (sim, handle) = start(BillableUsersSim::generate(october(), 1, 3)).await;
    sim.set_rate_limit(2, Duration::from_secs(3_600));
    let url = format!(
        "{}/account/billable_users?year=2026&month=10",
        handle.base_url()
    );

    let first = raw_get(&url, Some(ACCOUNT)).await;
    assert_eq!(header(&first, "x-ratelimit-remaining"), "1");
    let second = raw_get(&url, Some(ACCOUNT)).await;
    assert_eq!(header(&second, "x-ratelimit-remaining"), "0");
    let third = raw_get(&url, Some(ACCOUNT)).await;

    assert_eq!(third.status(), 429);
    let retry_after: u64 = header(&third, "retry-after").parse().unwrap();
    assert!((3_590..=3_600).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = third.json().await.unwrap();
    assert_eq!(body["message"], "Too Many Requests");
}

#[tokio::test]
async fn the_client_waits_for_a_used_up_window_to_reset_instead_of_provoking_a_429() {
    let (sim, handle) = start(BillableUsersSim::generate(october(), 1, 3)).await;
    sim.set_rate_limit(2, Duration::from_secs(1));
    let source = source(&handle, 1);

    let (pages, _) = fetch_all(&source).await.unwrap();

    assert_eq!(pages.len(), 3);
    // Three pages in three requests: the third waited for the reset rather than being refused
    // and retried.
    assert_eq!(sim.requests(), 3);
}

#[tokio::test]
async fn a_malformed_person_fails_the_page_naming_the_url_and_the_record() {
    let mut people = BillableUsersSim::generate(october(), 1, 3);
    people[1].organization = String::new();
    let (_sim, handle) = start(people).await;
    let source = source(&handle, 100);

    let error = source
        .fetch_page(ACCOUNT, october(), None)
        .await
        .unwrap_err()
        .to_string();

    assert!(error.contains("/v1/account/billable_users?"), "{error}");
    assert!(error.contains("record at index 1"), "{error}");
    assert!(error.contains("`organization`"), "{error}");
}

#[tokio::test]
async fn the_csv_export_has_a_header_row_rfc_4180_quoting_and_the_same_paging() {
    let mut people = BillableUsersSim::generate(october(), 1, 3);
    people[0].organization = "Widget Data Center, External IT".into();
    people[0].name = "=cmd".into();
    let (_sim, handle) = start(people).await;
    let url = format!(
        "{}/account/billable_users.csv?year=2026&month=10&per_page=2",
        handle.base_url()
    );

    let response = raw_get(&url, Some(ACCOUNT)).await;

    assert_eq!(response.status(), 200);
    assert!(header(&response, "content-type").starts_with("text/csv"));
    assert_eq!(header(&response, "x-pagination-total-pages"), "2");
    assert!(
        header(&response, "link")
            .contains("billable_users.csv?year=2026&month=10&page=2&per_page=2>; rel=\"next\""),
        "{}",
        header(&response, "link")
    );
    let body = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        headers,
        [
            "id",
            "primary_email",
            "name",
            "organization",
            "business_unit",
            "region",
            "sign_ins",
            "last_visit",
            "updates"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(&rows[0][2], "\t=cmd");
    assert_eq!(&rows[0][3], "Widget Data Center, External IT");
}

#[tokio::test]
async fn a_server_error_that_persists_fails_after_a_bounded_number_of_retries() {
    let (sim, handle) = start(BillableUsersSim::generate(october(), 1, 3)).await;
    let mut settings = settings(&handle, TOKEN, 100);
    settings.http.max_retries = 2;
    let source = BillableUsers::new(&settings).unwrap();
    sim.fail_next(10, 503);

    let error = source
        .fetch_page(ACCOUNT, october(), None)
        .await
        .unwrap_err()
        .to_string();

    assert!(error.contains("503"), "{error}");
    assert!(error.contains("Service Unavailable (simulated)"), "{error}");
    assert_eq!(sim.requests(), 3, "one attempt and two retries");
}

#[tokio::test]
async fn a_403_says_the_token_has_no_access_to_the_account() {
    let (sim, handle) = start(BillableUsersSim::generate(october(), 1, 3)).await;
    let source = source(&handle, 100);
    sim.fail_next(1, 403);

    let error = source
        .fetch_page(ACCOUNT, october(), None)
        .await
        .unwrap_err()
        .to_string();

    assert!(error.contains("403"), "{error}");
    assert!(error.contains("no access to account \"wdc\""), "{error}");
    assert_eq!(sim.requests(), 1);
}

#[tokio::test]
async fn the_id_filter_lists_only_the_named_people() {
    let (_sim, handle) = start(BillableUsersSim::generate(october(), 2, 5)).await;
    let url = format!(
        "{}/account/billable_users?year=2026&month=10&id=2,7",
        handle.base_url()
    );
    let response = raw_get(&url, Some(ACCOUNT)).await;
    assert_eq!(header(&response, "x-pagination-total-entries"), "2");
    let body: Vec<Person> = response.json().await.unwrap();
    assert_eq!(body.iter().map(|p| p.id).collect::<Vec<_>>(), [2, 7]);
}

/// A simulator that also knows the OAuth application `CLIENT_ID`.
async fn start_oauth(people: Vec<Person>) -> (BillableUsersSim, SimHandle) {
    let (sim, handle) = start(people).await;
    sim.add_oauth_client(CLIENT_ID, CLIENT_SECRET);
    (sim, handle)
}

/// Settings that sign in with client credentials (and no personal token).
fn oauth_settings(handle: &SimHandle, secret: &str, per_page: u32) -> BillableUsersSettings {
    BillableUsersSettings {
        token: None,
        client_id: Some(CLIENT_ID.into()),
        client_secret: Some(SecretString::from(secret)),
        oauth_url: Some(format!("http://{}", handle.addr())),
        ..settings(handle, TOKEN, per_page)
    }
}

/// The `page` of every API request the simulator received, in order.
fn pages_requested(sim: &BillableUsersSim) -> Vec<String> {
    sim.received()
        .iter()
        .map(|r| {
            r.query
                .split('&')
                .find_map(|pair| pair.strip_prefix("page="))
                .unwrap_or("?")
                .to_owned()
        })
        .collect()
}

fn record_keys(pages: &[Page]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p.records.iter().map(|r| r.record_key.clone()))
        .collect()
}

#[tokio::test]
async fn client_credentials_whose_token_expires_mid_run_extract_every_record_exactly_once() {
    let people = BillableUsersSim::generate(october(), 3, 15);
    let (sim, handle) = start_oauth(people.clone()).await;
    // The token dies long before the documented hour, and the answer does not say so: tally
    // can only find out from the API's 401.
    sim.set_token_lifetime(Duration::from_millis(800));
    sim.send_expires_in(false);
    let source = BillableUsers::new(&oauth_settings(&handle, CLIENT_SECRET, 10)).unwrap();

    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = source
            .fetch_page(ACCOUNT, october(), cursor.as_deref())
            .await
            .unwrap();
        cursor = page.next_cursor.clone();
        pages.push(page);
        if pages.len() == 2 {
            tokio::time::sleep(Duration::from_millis(1_000)).await;
        }
        if cursor.is_none() {
            break;
        }
    }

    assert_eq!(pages.len(), 5);
    let keys = record_keys(&pages);
    let expected: Vec<String> = people
        .iter()
        .map(|p| format!("{}@{}", p.id, p.organization))
        .collect();
    assert_eq!(keys, expected, "every person once, in the API's order");
    let mut per_customer = BTreeMap::new();
    for record in pages.iter().flat_map(|p| &p.records) {
        *per_customer
            .entry(record.customer_key.as_str())
            .or_insert(0) += 1;
    }
    assert_eq!(
        per_customer,
        BTreeMap::from([("Org 0001", 15), ("Org 0002", 15), ("Org 0003", 15)])
    );
    assert_eq!(sim.token_requests(), 2, "one token, then one renewal");
    // Page 3 was refused with the dead token and asked for again; none was skipped.
    assert_eq!(pages_requested(&sim), ["1", "2", "3", "3", "4", "5"]);
}

#[tokio::test]
async fn a_short_expires_in_is_honoured_by_renewing_before_the_token_expires() {
    let (sim, handle) = start_oauth(BillableUsersSim::generate(october(), 1, 4)).await;
    sim.set_token_lifetime(Duration::from_secs(2));
    let source = BillableUsers::new(&oauth_settings(&handle, CLIENT_SECRET, 2)).unwrap();

    let first = source.fetch_page(ACCOUNT, october(), None).await.unwrap();
    assert_eq!(sim.token_requests(), 1);
    // Past half of a 2-second lifetime, before its end: the cached token is due.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let second = source
        .fetch_page(ACCOUNT, october(), first.next_cursor.as_deref())
        .await
        .unwrap();

    assert_eq!(record_keys(&[first, second]).len(), 4);
    assert_eq!(sim.token_requests(), 2);
    assert_eq!(
        pages_requested(&sim),
        ["1", "2"],
        "renewed before expiry: no request was refused"
    );
}

#[tokio::test]
async fn a_wrong_client_secret_names_the_variable_to_fix_and_the_url_and_never_the_secret() {
    let (sim, handle) = start_oauth(BillableUsersSim::generate(october(), 1, 3)).await;
    let wrong = "not-the-s3cret-5555";
    let source = BillableUsers::new(&oauth_settings(&handle, wrong, 100)).unwrap();

    let error = source
        .fetch_page(ACCOUNT, october(), None)
        .await
        .unwrap_err();

    let shown = error.to_string();
    assert!(shown.contains(CLIENT_SECRET_ENV), "{shown}");
    assert!(
        shown.contains(&format!("POST http://{}/token", handle.addr())),
        "{shown}"
    );
    assert!(shown.contains("400"), "{shown}");
    assert!(shown.contains("invalid_client"), "{shown}");
    assert!(
        shown.contains("sources.billable_users.client_id"),
        "{shown}"
    );
    for form in [format!("{error:#}"), format!("{error:?}")] {
        assert!(!form.contains(wrong), "the secret leaked: {form}");
        assert!(!form.contains(CLIENT_SECRET), "{form}");
    }
    assert_eq!(sim.token_requests(), 1, "a refusal is not retried");
    assert_eq!(sim.requests(), 0, "the API is never asked without a token");
}

#[tokio::test]
async fn an_api_that_refuses_even_a_fresh_token_fails_after_one_renewal() {
    let (sim, handle) = start_oauth(BillableUsersSim::generate(october(), 1, 3)).await;
    // Dead on arrival: every token the API sees has expired.
    sim.set_token_lifetime(Duration::ZERO);
    let source = BillableUsers::new(&oauth_settings(&handle, CLIENT_SECRET, 100)).unwrap();

    let error = source
        .fetch_page(ACCOUNT, october(), None)
        .await
        .unwrap_err();

    let shown = error.to_string();
    assert!(shown.contains("401"), "{shown}");
    assert!(
        shown.contains("sources.billable_users.client_id"),
        "{shown}"
    );
    assert!(!format!("{error:?}").contains(CLIENT_SECRET));
    assert_eq!(
        sim.token_requests(),
        2,
        "one token and one renewal, no more"
    );
    assert_eq!(pages_requested(&sim), ["1", "1"]);
}

#[tokio::test]
async fn the_simulator_issues_tokens_only_for_the_documented_form_request() {
    let (sim, handle) = start_oauth(BillableUsersSim::generate(october(), 1, 3)).await;
    let token_url = format!("http://{}/token", handle.addr());
    let list_url = format!(
        "{}/account/billable_users?year=2026&month=10",
        handle.base_url()
    );
    let http = reqwest::Client::new();
    let post_form =
        |form: Vec<(&'static str, &'static str)>| http.post(&token_url).form(&form).send();
    let error_of = |response: reqwest::Response| async move {
        assert_eq!(response.status(), 400);
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["error_description"].is_string(), "{body}");
        body["error"].as_str().unwrap_or_default().to_owned()
    };

    let issued = post_form(vec![
        ("grant_type", "client_credentials"),
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
    ])
    .await
    .unwrap();
    assert_eq!(issued.status(), 200);
    let answer: serde_json::Value = issued.json().await.unwrap();
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["expires_in"], 3600, "the documented hour");
    let access = answer["access_token"].as_str().unwrap().to_owned();
    let listed = http
        .get(&list_url)
        .bearer_auth(&access)
        .header("X-4me-Account", ACCOUNT)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);

    let wrong_secret = post_form(vec![
        ("grant_type", "client_credentials"),
        ("client_id", CLIENT_ID),
        ("client_secret", "nope"),
    ]);
    assert_eq!(
        error_of(wrong_secret.await.unwrap()).await,
        "invalid_client"
    );
    let password_grant = post_form(vec![
        ("grant_type", "password"),
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
    ]);
    assert_eq!(
        error_of(password_grant.await.unwrap()).await,
        "unsupported_grant_type"
    );
    let as_json = http
        .post(&token_url)
        .json(&serde_json::json!({
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        }))
        .send();
    assert_eq!(error_of(as_json.await.unwrap()).await, "invalid_request");
    assert_eq!(sim.token_requests(), 4);

    sim.expire_tokens();
    let expired = http
        .get(&list_url)
        .bearer_auth(&access)
        .header("X-4me-Account", ACCOUNT)
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), 401);
    let body: serde_json::Value = expired.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    // The personal token keeps working beside the OAuth application.
    assert_eq!(raw_get(&list_url, Some(ACCOUNT)).await.status(), 200);
}

/// The demo (billable users into RamBase, as in tests/it/pipeline.rs) signed in with client
/// credentials instead of the demo's personal token.
async fn demo_app_with_client_credentials(sims: &tally::sim::RunningSims) -> tally::pipeline::App {
    let mut settings = tally::sim::demo_settings(std::path::Path::new("data")).unwrap();
    settings.database.url = match common::fresh_postgres().await {
        tally::store::DatabaseTarget::Postgres(url) => Some(url),
        tally::store::DatabaseTarget::Sqlite(path) => Some(format!("sqlite://{}", path.display())),
    };
    tally::sim::point_at(&mut settings, sims);
    settings.sources.ccc = None;
    settings.sources.genesys = None;
    settings.sinks.activeplatform = None;
    settings
        .billing
        .accounts
        .retain(|a| a.sink.as_deref() != Some("activeplatform"));
    let oauth_url = sims
        .billable_users_url
        .strip_suffix("/v1")
        .unwrap_or(&sims.billable_users_url)
        .to_owned();
    let source = settings.sources.billable_users.as_mut().unwrap();
    source.token = None;
    source.client_id = Some(CLIENT_ID.into());
    source.client_secret = Some(SecretString::from(CLIENT_SECRET));
    source.oauth_url = Some(oauth_url);
    source.per_page = 10;
    source.http.backoff_ms = 10;
    if let Some(s) = settings.sinks.rambase.as_mut() {
        s.http.backoff_ms = 10;
    }
    tally::pipeline::App::build(settings).await.unwrap()
}

#[tokio::test]
async fn a_run_signed_in_with_client_credentials_bills_every_person_once_across_a_token_expiry() {
    let settings = tally::sim::demo_settings(std::path::Path::new("data")).unwrap();
    let sims = tally::sim::start_sims(&settings, None, tally::sim::SimPorts::ANY)
        .await
        .unwrap();
    let api = &sims.billable_users;
    api.add_oauth_client(CLIENT_ID, CLIENT_SECRET);
    // Two requests a second: after each pair of pages tally waits about a second for the window
    // to reset, by which time the token (0.5 s, not announced) has expired mid-run.
    api.set_token_lifetime(Duration::from_millis(500));
    api.send_expires_in(false);
    api.set_rate_limit(2, Duration::from_secs(1));
    let app = demo_app_with_client_credentials(&sims).await;
    let period: Period = tally::sim::DEMO_PERIOD.parse().unwrap();

    let report = tally::pipeline::run(
        &app,
        &tally::pipeline::RunOptions {
            period,
            source: None,
            dry_run: false,
            trigger: tally::domain::Trigger::Manual,
            customer: None,
            requested_by: None,
        },
    )
    .await
    .unwrap();

    // The same figures as the personal-token run of tests/it/pipeline.rs.
    assert_eq!(report.summary.records_read, 51);
    assert_eq!(report.summary.lines_pushed, 4);
    let mut amounts: BTreeMap<String, Decimal> = BTreeMap::new();
    for line in app.store.ledger_lines(period, None).await.unwrap() {
        *amounts
            .entry(line.key.billing_account.to_string())
            .or_insert(Decimal::ZERO) += line.amount;
    }
    assert_eq!(
        amounts,
        BTreeMap::from([
            ("ACME-001".to_owned(), dec!(145.00)),
            ("GLOBEX-002".to_owned(), dec!(945.00)),
            ("INITECH-003".to_owned(), dec!(262.50)),
            ("UMBRELLA-004".to_owned(), dec!(100.00)),
        ])
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
    assert!(
        api.token_requests() >= 2,
        "the token was renewed mid-run ({} token requests)",
        api.token_requests()
    );
    // Every page was answered once; the only repeats are pages refused with an expired token.
    let pages = pages_requested(api);
    let distinct: HashSet<&String> = pages.iter().collect();
    assert_eq!(distinct.len(), 6, "{pages:?}");
    assert_eq!(
        pages.len() as u64,
        6 + api.token_requests() - 1,
        "one retry per renewal: {pages:?}"
    );
}
