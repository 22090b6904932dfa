//! The RamBase connector against the RamBase simulator: what the simulator received is the
//! truth these tests check.

use chrono::{NaiveDate, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use secrecy::SecretString;
use std::net::SocketAddr;
use tally::domain::{
    BillingAccount, Evidence, InvoiceLine, LedgerLine, LicenseType, LineKey, LineStatus, Period,
    SourceName,
};
use tally::http::HttpSettings;
use tally::sim::rambase::{RamBaseSim, SimHandle};
use tally::sinks::PushError;
use tally::sinks::rambase::{RamBase, RamBaseItem, RamBaseSettings};

const PLAN: u64 = 100_001;
const ITEM: u64 = 1;
const PERIOD: u64 = 100_010;
const ID: &str = "tally-client";
const SECRET: &str = "tally-secret";

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn sim() -> RamBaseSim {
    let sim = RamBaseSim::new(ID, SECRET);
    sim.add_plan_item(PLAN, ITEM);
    sim.add_period(PERIOD, day(2026, 10, 1), day(2026, 10, 31));
    sim
}

async fn serve(sim: &RamBaseSim) -> SimHandle {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    sim.serve(addr).await.unwrap()
}

fn item(account: &str, license: &str, plan_id: u64, item_id: u64) -> RamBaseItem {
    RamBaseItem {
        billing_account: account.into(),
        license_type: license.into(),
        plan_id,
        item_id,
    }
}

fn settings(handle: &SimHandle) -> RamBaseSettings {
    RamBaseSettings {
        base_url: handle.base_url(),
        client_id: ID.into(),
        client_secret: Some(SecretString::from(SECRET)),
        db: Some("SYS".into()),
        items: vec![
            item("ACME", "Agent", PLAN, ITEM),
            item("ACME", "Unknown plan", 100_099, 1),
            item("ACME", "Unknown item", PLAN, 7),
        ],
        period_ids: [("2026-10".to_owned(), PERIOD)].into(),
        mapping_file: None,
        http: HttpSettings {
            backoff_ms: 10,
            timeout_secs: 5,
            ..HttpSettings::default()
        },
    }
}

fn key(license: &str) -> LineKey {
    LineKey {
        period: "2026-10".parse::<Period>().unwrap(),
        billing_account: BillingAccount::new("ACME"),
        license_type: LicenseType::new(license),
        source: SourceName::new("billable_users"),
    }
}

fn ledger_line(license: &str, revision: i32, quantity: Decimal) -> LedgerLine {
    let key = key(license);
    LedgerLine {
        id: i64::from(revision),
        idempotency_key: key.idempotency_key(revision),
        key,
        revision,
        quantity,
        amount: quantity * dec!(10.00),
        rate: dec!(10.00),
        currency: "EUR".parse().unwrap(),
        total_quantity: quantity,
        total_amount: quantity * dec!(10.00),
        price_ref: "agent@2026-01-01".into(),
        trace: serde_json::Value::Null,
        evidence: Evidence::default(),
        sink: "rambase".into(),
        status: LineStatus::Approved,
        external_id: None,
        push_marker: None,
        last_error: None,
        run_id: 1,
        created_at: Utc::now(),
        updated_at: Utc::now(),
        pushed_at: None,
    }
}

fn invoice_line(license: &str, quantity: Decimal) -> InvoiceLine {
    InvoiceLine {
        key: key(license),
        quantity,
        rate: dec!(10.00),
        amount: quantity * dec!(10.00),
        currency: "EUR".parse().unwrap(),
        price_ref: "agent@2026-01-01".into(),
        trace: serde_json::Value::Null,
        evidence: Evidence::default(),
        sink: "rambase".into(),
    }
}

/// Phase one as the pipeline does it: prepare, then keep the marker on the line.
async fn prepared(rambase: &RamBase, mut line: LedgerLine) -> LedgerLine {
    line.push_marker = rambase.prepare(&line).await.unwrap();
    line.status = LineStatus::Pushing;
    line
}

async fn token(handle: &SimHandle) -> String {
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}oauth2/access_token", handle.base_url()))
        .form(&[
            ("client_id", ID),
            ("client_secret", SECRET),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"].as_str().unwrap().to_owned()
}

fn usages_url(handle: &SimHandle) -> String {
    format!(
        "{}sales/recurring-invoice-plans/{PLAN}/items/{ITEM}/recurring-invoice-periods/{PERIOD}/usages",
        handle.base_url()
    )
}

#[tokio::test]
async fn pushing_three_revisions_creates_three_usages_with_integer_quantities() {
    let sim = sim();
    let handle = serve(&sim).await;
    let rambase = RamBase::new(&settings(&handle)).unwrap();

    let mut ids = Vec::new();
    for (revision, quantity) in [(1, dec!(5)), (2, dec!(3.00)), (3, dec!(-2))] {
        let line = prepared(&rambase, ledger_line("Agent", revision, quantity)).await;
        ids.push(rambase.push(&line).await.unwrap());
    }

    let usages = sim.usages();
    let got: Vec<(String, NaiveDate, i64)> = usages
        .iter()
        .map(|u| (u.usage_id.to_string(), u.date, u.quantity))
        .collect();
    let first = day(2026, 10, 1);
    assert_eq!(
        got,
        vec![
            (ids[0].clone(), first, 5),
            (ids[1].clone(), first, 3),
            (ids[2].clone(), first, -2),
        ]
    );
    assert!(
        usages
            .iter()
            .all(|u| (u.plan_id, u.item_id, u.period_id) == (PLAN, ITEM, PERIOD))
    );
    assert_eq!(sim.posts_received(), 3);
    let posts: Vec<String> = sim
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("POST /sales"))
        .collect();
    assert_eq!(posts.len(), 3);
    assert!(
        posts
            .iter()
            .all(|p| p.contains("$format=json") && p.contains("$db=SYS")),
        "{posts:?}"
    );
}

#[tokio::test]
async fn reading_usages_pages_through_three_pages_of_eighty() {
    let sim = sim();
    for n in 0..170 {
        sim.insert_usage(PLAN, ITEM, PERIOD, day(2026, 10, 1), n % 7);
    }
    let handle = serve(&sim).await;
    let rambase = RamBase::new(&settings(&handle)).unwrap();

    let line = prepared(&rambase, ledger_line("Agent", 1, dec!(4))).await;
    let marker: serde_json::Value =
        serde_json::from_str(line.push_marker.as_deref().unwrap()).unwrap();
    assert_eq!(marker["count"], 170);
    assert_eq!(marker["max_usage_id"], 170);

    let gets: Vec<String> = sim
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /sales"))
        .collect();
    assert_eq!(gets.len(), 3, "{gets:?}");
    assert!(
        gets.iter()
            .all(|g| g.contains("$top=80") && g.contains("$expand=PagingDetails"))
    );
    assert!(!gets[0].contains("$pageKey"));
    assert!(gets[1].contains("$pageKey=") && gets[2].contains("$pageKey="));

    // The new usage is found after all three pages, too.
    let id = rambase.push(&line).await.unwrap();
    assert_eq!(id, "171");
    assert_eq!(rambase.find(&line).await.unwrap(), Some("171".to_owned()));
}

#[tokio::test]
async fn top_81_is_refused_by_the_simulator_and_the_default_page_is_ten() {
    let sim = sim();
    for _ in 0..12 {
        sim.insert_usage(PLAN, ITEM, PERIOD, day(2026, 10, 2), 1);
    }
    let handle = serve(&sim).await;
    let token = token(&handle).await;
    let client = reqwest::Client::new();

    let refused = client
        .get(format!("{}?$top=81&$format=json", usages_url(&handle)))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["httpStatusCode"], 400);
    assert!(body["errorMessage"]["errorMessageId"].is_u64(), "{body}");
    assert!(body["message"].as_str().unwrap().contains("$top"), "{body}");

    let page: serde_json::Value = client
        .get(format!(
            "{}?$format=json&$inlinecount=allpages",
            usages_url(&handle)
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["usages"].as_array().unwrap().len(), 10);
    assert_eq!(page["paging"]["size"], 12);
    assert!(
        page["paging"].get("nextPageKey").is_none(),
        "page keys only with $expand=PagingDetails"
    );
    assert!(page["usages"][0]["usageAmount"].is_string());

    let xml = client
        .get(usages_url(&handle))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(xml.contains("<Usages><Usage><UsageId>1</UsageId>"), "{xml}");

    let anonymous = client
        .get(format!("{}?$format=json", usages_url(&handle)))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn an_unknown_plan_is_reported_as_rambase_error_105702() {
    let sim = sim();
    let handle = serve(&sim).await;
    let rambase = RamBase::new(&settings(&handle)).unwrap();
    let line = ledger_line("Unknown plan", 1, dec!(2));

    let message = rambase.prepare(&line).await.unwrap_err().to_string();
    assert!(message.contains("RamBase error 105702"), "{message}");
    assert!(message.contains("plan 100099"), "{message}");
    assert!(message.contains("sinks.rambase.items"), "{message}");

    let mut forged = line.clone();
    forged.push_marker = Some(format!(
        r#"{{"plan_id":100099,"item_id":1,"period_id":{PERIOD},"max_usage_id":0,"count":0}}"#
    ));
    match rambase.push(&forged).await {
        Err(PushError::Rejected(m)) => assert!(m.contains("105702"), "{m}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(sim.usages().is_empty());
}

#[tokio::test]
async fn an_unknown_item_is_reported_as_rambase_error_105728() {
    let sim = sim();
    let handle = serve(&sim).await;
    let rambase = RamBase::new(&settings(&handle)).unwrap();

    let message = rambase
        .prepare(&ledger_line("Unknown item", 1, dec!(2)))
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains("RamBase error 105728"), "{message}");
    assert!(message.contains("item 7"), "{message}");
}

#[tokio::test]
async fn a_post_whose_answer_is_lost_is_uncertain_and_found_afterwards_exactly_once() {
    let sim = sim();
    let handle = serve(&sim).await;
    let rambase = RamBase::new(&settings(&handle)).unwrap();
    let line = prepared(&rambase, ledger_line("Agent", 1, dec!(7))).await;

    sim.fail_next_post_after_accept(1);
    match rambase.push(&line).await {
        Err(PushError::Uncertain(_)) => {}
        other => panic!("expected Uncertain, got {other:?}"),
    }

    let found = rambase.find(&line).await.unwrap();
    let usages = sim.usages();
    assert_eq!(usages.len(), 1, "the POST must not be re-sent");
    assert_eq!(sim.posts_received(), 1);
    assert_eq!(found, Some(usages[0].usage_id.to_string()));
    assert_eq!(usages[0].quantity, 7);
}

#[tokio::test]
async fn a_post_refused_with_a_5xx_is_uncertain_and_then_found_absent() {
    let sim = sim();
    let handle = serve(&sim).await;
    let rambase = RamBase::new(&settings(&handle)).unwrap();
    let line = prepared(&rambase, ledger_line("Agent", 1, dec!(7))).await;

    sim.fail_next(1, 500);
    assert!(matches!(
        rambase.push(&line).await,
        Err(PushError::Uncertain(_))
    ));
    assert!(sim.usages().is_empty());
    assert_eq!(rambase.find(&line).await.unwrap(), None);
}

#[tokio::test]
async fn find_before_any_push_returns_none() {
    let sim = sim();
    sim.insert_usage(PLAN, ITEM, PERIOD, day(2026, 10, 1), 7);
    let handle = serve(&sim).await;
    let rambase = RamBase::new(&settings(&handle)).unwrap();
    let line = prepared(&rambase, ledger_line("Agent", 1, dec!(7))).await;

    assert_eq!(rambase.find(&line).await.unwrap(), None);
}

#[tokio::test]
async fn find_refuses_to_guess_when_someone_else_wrote_usages() {
    let sim = sim();
    let handle = serve(&sim).await;
    let rambase = RamBase::new(&settings(&handle)).unwrap();
    let line = prepared(&rambase, ledger_line("Agent", 1, dec!(7))).await;

    sim.insert_usage(PLAN, ITEM, PERIOD, day(2026, 10, 1), 7);
    sim.insert_usage(PLAN, ITEM, PERIOD, day(2026, 10, 1), 7);
    let message = rambase.find(&line).await.unwrap_err().to_string();
    assert!(message.contains("cannot tell"), "{message}");
    assert!(
        message.contains("usage 1 ") && message.contains("usage 2 "),
        "{message}"
    );

    let unprepared = ledger_line("Agent", 1, dec!(7));
    let message = rambase.find(&unprepared).await.unwrap_err().to_string();
    assert!(message.contains("never prepared"), "{message}");
}

#[tokio::test]
async fn check_refuses_fractional_quantities_and_missing_configuration() {
    let sim = sim();
    let handle = serve(&sim).await;
    let rambase = RamBase::new(&settings(&handle)).unwrap();

    assert_eq!(rambase.check(&invoice_line("Agent", dec!(5))), Ok(()));
    let fractional = rambase
        .check(&invoice_line("Agent", dec!(5.5)))
        .unwrap_err();
    assert!(
        fractional.contains("RamBase takes whole quantities only; 5.5"),
        "{fractional}"
    );
    let no_item = rambase
        .check(&invoice_line("Observer", dec!(1)))
        .unwrap_err();
    assert!(no_item.contains("sinks.rambase.items"), "{no_item}");
    assert!(no_item.contains("\"Observer\""), "{no_item}");

    let mut november = invoice_line("Agent", dec!(1));
    november.key.period = "2026-11".parse().unwrap();
    let no_period = rambase.check(&november).unwrap_err();
    assert!(
        no_period.contains("\"2026-11\" = <period id>"),
        "{no_period}"
    );

    // A fractional revision is never sent, whatever the caller does.
    let line = ledger_line("Agent", 1, dec!(5.5));
    assert!(matches!(
        rambase.push(&line).await,
        Err(PushError::Rejected(_))
    ));
    assert!(sim.requests().is_empty());
}

#[tokio::test]
async fn a_401_makes_the_connector_fetch_a_fresh_token_once() {
    let sim = sim();
    let handle = serve(&sim).await;
    let rambase = RamBase::new(&settings(&handle)).unwrap();
    let line = prepared(&rambase, ledger_line("Agent", 1, dec!(3))).await;
    assert_eq!(sim.tokens_issued(), 1);

    sim.revoke_tokens();
    let id = rambase.push(&line).await.unwrap();
    assert_eq!(sim.tokens_issued(), 2);
    assert_eq!(sim.usages().len(), 1);

    sim.fail_next(1, 401);
    assert_eq!(rambase.find(&line).await.unwrap(), Some(id));
    assert_eq!(sim.tokens_issued(), 3);
}

#[tokio::test]
async fn wrong_credentials_name_the_environment_variable() {
    let sim = sim();
    let handle = serve(&sim).await;
    let mut s = settings(&handle);
    s.client_secret = Some(SecretString::from("wrong"));
    let rambase = RamBase::new(&s).unwrap();

    let message = rambase
        .prepare(&ledger_line("Agent", 1, dec!(1)))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("TALLY__SINKS__RAMBASE__CLIENT_SECRET"),
        "{message}"
    );
    assert!(!message.contains("wrong"), "{message}");
}

#[tokio::test]
async fn quantities_are_sent_as_json_integers_and_anything_else_is_refused() {
    let sim = sim();
    let handle = serve(&sim).await;
    let rambase = RamBase::new(&settings(&handle)).unwrap();
    let line = prepared(&rambase, ledger_line("Agent", 1, dec!(12.000))).await;
    rambase.push(&line).await.unwrap();
    assert_eq!(sim.usages()[0].quantity, 12);

    let token = token(&handle).await;
    let client = reqwest::Client::new();
    for quantity in [
        serde_json::json!(2.5),
        serde_json::json!("3"),
        serde_json::json!(3.0),
    ] {
        let answer = client
            .post(format!("{}?$format=json", usages_url(&handle)))
            .bearer_auth(&token)
            .json(&serde_json::json!({"usage": {"date": "2026-10-01", "quantity": quantity}}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{quantity}");
    }
    let outside = client
        .post(format!("{}?$format=json", usages_url(&handle)))
        .bearer_auth(&token)
        .json(&serde_json::json!({"usage": {"date": "2026-11-01", "quantity": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status(), 400);
    let created: serde_json::Value = client
        .post(format!("{}?$format=json", usages_url(&handle)))
        .bearer_auth(&token)
        .json(&serde_json::json!({"usage": {"date": "2026-10-31", "quantity": -4}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["usage"]["quantity"], -4);
    assert_eq!(created["usage"]["usageAmount"], "-40.00");
    assert_eq!(sim.usages().len(), 2);
}

#[tokio::test]
async fn a_zero_quantity_revision_is_not_sent() {
    let sim = sim();
    let handle = serve(&sim).await;
    let rambase = RamBase::new(&settings(&handle)).unwrap();
    let line = ledger_line("Agent", 2, dec!(0));

    assert_eq!(rambase.prepare(&line).await.unwrap(), None);
    assert_eq!(rambase.push(&line).await.unwrap(), "none:zero-quantity");
    assert_eq!(
        rambase.find(&line).await.unwrap(),
        Some("none:zero-quantity".to_owned())
    );
    assert!(sim.requests().is_empty());
}

#[tokio::test]
async fn a_rate_limited_post_is_sent_again_because_it_was_surely_not_processed() {
    let sim = sim();
    let handle = serve(&sim).await;
    let rambase = RamBase::new(&settings(&handle)).unwrap();
    let line = prepared(&rambase, ledger_line("Agent", 1, dec!(2))).await;

    sim.rate_limit_next(1, 0);
    rambase.push(&line).await.unwrap();
    assert_eq!(sim.usages().len(), 1);
}

#[tokio::test]
async fn the_state_file_survives_a_new_simulator_instance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rambase.json");
    let first_id = {
        let sim = sim().with_state_file(path.clone()).unwrap();
        let handle = serve(&sim).await;
        let rambase = RamBase::new(&settings(&handle)).unwrap();
        let line = prepared(&rambase, ledger_line("Agent", 1, dec!(9))).await;
        rambase.push(&line).await.unwrap()
    };

    // A second "process": plans, periods and usages come from the file alone.
    let sim = RamBaseSim::new(ID, SECRET)
        .with_state_file(path.clone())
        .unwrap();
    assert_eq!(sim.usages().len(), 1);
    assert_eq!(sim.usages()[0].quantity, 9);
    let handle = serve(&sim).await;
    let rambase = RamBase::new(&settings(&handle)).unwrap();
    let line = prepared(&rambase, ledger_line("Agent", 2, dec!(1))).await;
    let second_id = rambase.push(&line).await.unwrap();
    assert!(second_id.parse::<u64>().unwrap() > first_id.parse::<u64>().unwrap());
    assert_eq!(sim.usages().len(), 2);
}
