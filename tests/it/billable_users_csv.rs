//! The CSV form of the Billable Users source (`format = "csv"`) against its simulator over
//! real HTTP: the same records as the JSON form, quoting, formula guards, and clear errors.

use secrecy::SecretString;
use std::net::SocketAddr;
use tally::domain::{Period, StagedRecord};
use tally::http::HttpSettings;
use tally::sim::billable_users::{BillableUsersSim, Person, SimHandle};
use tally::sources::Page;
use tally::sources::billable_users::{BillableUsers, BillableUsersSettings, Format, TOKEN_ENV};

const TOKEN: &str = "sim-token-csv-0123";
const ACCOUNT: &str = "wdc";

fn october() -> Period {
    Period::new(2026, 10).unwrap()
}

async fn start(people: Vec<Person>) -> (BillableUsersSim, SimHandle) {
    let sim = BillableUsersSim::new(TOKEN, ACCOUNT);
    sim.set_people(october(), people);
    let handle = sim
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    (sim, handle)
}

fn settings(handle: &SimHandle, format: Format, per_page: u32) -> BillableUsersSettings {
    BillableUsersSettings {
        enabled: true,
        base_url: handle.base_url(),
        account: ACCOUNT.into(),
        token: Some(SecretString::from(TOKEN)),
        client_id: None,
        client_secret: None,
        oauth_url: None,
        per_page,
        max_pages_per_scope: 100_000,
        concurrency: 4,
        license_type: "Service desk user".into(),
        format,
        http: HttpSettings {
            backoff_ms: 10,
            max_backoff_ms: 50,
            timeout_secs: 5,
            ..HttpSettings::default()
        },
    }
}

fn source(handle: &SimHandle, format: Format, per_page: u32) -> BillableUsers {
    BillableUsers::new(&settings(handle, format, per_page)).unwrap()
}

/// Every page as the pipeline fetches them, following the cursors.
async fn fetch_all(source: &BillableUsers) -> anyhow::Result<Vec<Page>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = source
            .fetch_page(ACCOUNT, october(), cursor.as_deref())
            .await?;
        cursor = page.next_cursor.clone();
        pages.push(page);
        if cursor.is_none() {
            return Ok(pages);
        }
    }
}

/// What billing depends on: everything of a staged record but its evidence payload.
fn billed(pages: &[Page]) -> Vec<(String, String, String, String)> {
    pages
        .iter()
        .flat_map(|p| &p.records)
        .map(|r: &StagedRecord| {
            (
                r.record_key.clone(),
                r.customer_key.clone(),
                r.item.clone(),
                r.quantity.to_string(),
            )
        })
        .collect()
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

/// Ordinary people plus every quirk the export has to carry through RFC 4180 and its guards.
fn awkward_people() -> Vec<Person> {
    let mut people = BillableUsersSim::generate(october(), 2, 3);
    people.push(person(70, "Widget Data Center, External IT"));
    people.push(person(71, "=Formula Org"));
    people.push(person(72, "+47 Telecom"));
    people.push(person(73, "-Minus AS"));
    people.push(person(74, "@Handle Inc"));
    people.push(person(75, "\"Quoted\" Co\r\nSecond line"));
    let mut name = person(76, "Plain Org");
    name.name = "=HYPERLINK(\"http://x\",\"y\")".into();
    name.business_unit = Some("Unit, with comma".into());
    people.push(name);
    people.push(person(70, "Widget Data Center, External IT")); // listed twice, on another page
    people
}

#[tokio::test]
async fn csv_and_json_stage_identical_records_over_several_pages() {
    let people = awkward_people();
    let (sim, handle) = start(people.clone()).await;

    let json = fetch_all(&source(&handle, Format::Json, 4)).await.unwrap();
    let csv = fetch_all(&source(&handle, Format::Csv, 4)).await.unwrap();

    assert_eq!(csv.len(), 4, "14 people at 4 per page");
    assert_eq!(
        csv.iter()
            .map(|p| p.next_cursor.clone())
            .collect::<Vec<_>>(),
        json.iter()
            .map(|p| p.next_cursor.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(billed(&csv), billed(&json));
    let keys: Vec<String> = billed(&csv).into_iter().map(|r| r.0).collect();
    let expected: Vec<String> = people
        .iter()
        .map(|p| format!("{}@{}", p.id, p.organization))
        .collect();
    assert_eq!(keys, expected);
    for key in [
        "70@Widget Data Center, External IT",
        "71@=Formula Org",
        "72@+47 Telecom",
        "73@-Minus AS",
        "74@@Handle Inc",
        "75@\"Quoted\" Co\r\nSecond line",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key:?} missing: {keys:?}");
    }
    assert!(
        csv.iter()
            .flat_map(|p| &p.records)
            .all(|r| r.quantity == rust_decimal::Decimal::ONE && r.item == "billable_user")
    );

    // The CSV source asked the .csv endpoint, page after page, never a page twice.
    let csv_requests: Vec<String> = sim
        .received()
        .into_iter()
        .filter(|r| r.path == "/v1/account/billable_users.csv")
        .map(|r| r.query)
        .collect();
    assert_eq!(
        csv_requests,
        (1..=4)
            .map(|page| format!("year=2026&month=10&page={page}&per_page=4"))
            .collect::<Vec<_>>()
    );
    assert_eq!(sim.requests(), 8);
}

#[tokio::test]
async fn a_formula_guard_is_stripped_from_the_organization_billed() {
    let (_sim, handle) = start(awkward_people()).await;

    let pages = fetch_all(&source(&handle, Format::Csv, 100)).await.unwrap();

    let records: Vec<&StagedRecord> = pages.iter().flat_map(|p| &p.records).collect();
    let formula = records
        .iter()
        .find(|r| r.record_key == "71@=Formula Org")
        .unwrap();
    assert_eq!(formula.customer_key, "=Formula Org");
    assert!(
        records
            .iter()
            .all(|r| !r.record_key.contains('\t') && !r.customer_key.contains('\t')),
        "a guard survived: {records:?}"
    );
}

#[tokio::test]
async fn an_unguarded_export_reads_the_same_as_a_guarded_one() {
    let (sim, handle) = start(awkward_people()).await;
    let source = source(&handle, Format::Csv, 5);

    let guarded = fetch_all(&source).await.unwrap();
    sim.set_csv_formula_guard(false);
    let unguarded = fetch_all(&source).await.unwrap();

    assert_eq!(guarded, unguarded);
}

#[tokio::test]
async fn columns_are_read_by_name_whatever_their_order() {
    let (sim, handle) = start(awkward_people()).await;
    let json = fetch_all(&source(&handle, Format::Json, 100))
        .await
        .unwrap();
    sim.set_csv_columns(&["region", "organization", "name", "id"]);

    let csv = fetch_all(&source(&handle, Format::Csv, 100)).await.unwrap();

    assert_eq!(billed(&csv), billed(&json));
}

#[tokio::test]
async fn a_missing_column_names_the_url_and_the_column() {
    for (columns, missing) in [
        (&["id", "name", "region"][..], "organization"),
        (&["primary_email", "organization"][..], "id"),
    ] {
        let (sim, handle) = start(awkward_people()).await;
        sim.set_csv_columns(columns);

        let error = source(&handle, Format::Csv, 100)
            .fetch_page(ACCOUNT, october(), None)
            .await
            .unwrap_err()
            .to_string();

        assert!(
            error.contains("/v1/account/billable_users.csv?year=2026&month=10"),
            "{error}"
        );
        assert!(error.contains(&format!("no column `{missing}`")), "{error}");
        assert!(error.contains(&columns.join(", ")), "{error}");
    }
}

#[tokio::test]
async fn a_row_with_an_id_that_is_not_a_number_fails_the_page_naming_row_and_field() {
    let (sim, handle) = start(BillableUsersSim::generate(october(), 1, 3)).await;
    sim.corrupt_next_csv("n/a,x@example.com,X,Org 0001,,Europe,0,,0");

    let error = source(&handle, Format::Csv, 100)
        .fetch_page(ACCOUNT, october(), None)
        .await
        .unwrap_err()
        .to_string();

    assert!(error.contains("/v1/account/billable_users.csv?"), "{error}");
    assert!(error.contains("CSV row 4 (line 5)"), "{error}");
    assert!(error.contains("field `id`"), "{error}");
    assert!(error.contains("\"n/a\""), "{error}");
}

#[tokio::test]
async fn a_row_broken_by_an_unquoted_comma_fails_the_page_naming_the_row() {
    let (sim, handle) = start(BillableUsersSim::generate(october(), 1, 2)).await;
    sim.corrupt_next_csv("9,x@example.com,X,Widget, Inc,,Europe,0,,0");

    let error = source(&handle, Format::Csv, 100)
        .fetch_page(ACCOUNT, october(), None)
        .await
        .unwrap_err()
        .to_string();

    assert!(error.contains("CSV row 3 (line 4)"), "{error}");
    assert!(
        error.contains("10 field(s) where the header row has 9"),
        "{error}"
    );
}

#[tokio::test]
async fn a_refused_token_is_a_clear_401_naming_the_environment_variable() {
    let (sim, handle) = start(BillableUsersSim::generate(october(), 1, 3)).await;
    let mut settings = settings(&handle, Format::Csv, 100);
    settings.token = Some(SecretString::from("wrong-token"));
    let source = BillableUsers::new(&settings).unwrap();

    let error = source
        .fetch_page(ACCOUNT, october(), None)
        .await
        .unwrap_err()
        .to_string();

    assert!(error.contains("401"), "{error}");
    assert!(error.contains(TOKEN_ENV), "{error}");
    assert!(error.contains("/v1/account/billable_users.csv"), "{error}");
    assert!(
        error.contains("The access token is missing, invalid or expired"),
        "{error}"
    );
    assert!(!error.contains("wrong-token"), "the token leaked: {error}");
    assert_eq!(sim.requests(), 1, "a 401 is not retried");
}

#[tokio::test]
async fn a_500_on_the_csv_endpoint_is_retried_and_then_succeeds() {
    let (sim, handle) = start(BillableUsersSim::generate(october(), 1, 3)).await;
    sim.fail_next(2, 500);

    let page = source(&handle, Format::Csv, 100)
        .fetch_page(ACCOUNT, october(), None)
        .await
        .unwrap();

    assert_eq!(page.records.len(), 3);
    assert_eq!(sim.requests(), 3);
    let accept = sim.received()[2].accept.clone().unwrap_or_default();
    assert!(accept.starts_with("text/csv"), "{accept}");
}

#[tokio::test]
async fn a_month_with_no_data_is_one_empty_page() {
    let (_sim, handle) = start(vec![]).await;

    let page = source(&handle, Format::Csv, 100)
        .fetch_page(ACCOUNT, october(), None)
        .await
        .unwrap();

    assert_eq!(page.records, vec![]);
    assert_eq!(page.next_cursor, None);
}
