//! The RamBase connector against the RamBase simulator: what the simulator received is the
//! truth these tests check.

use crate::common;

use chrono::{NaiveDate, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use secrecy::SecretString;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use tally::config::Settings;
use tally::domain::{
    BillingAccount, Evidence, ExceptionKind, InvoiceLine, LedgerLine, LicenseType, LineKey,
    LineStatus, Period, RunStatus, SourceName, Trigger,
};
use tally::http::HttpSettings;
use tally::pipeline::{self, App, RunOptions};
use tally::sim::rambase::{RamBaseSim, SimHandle};
use tally::sim::{self, RunningSims};
use tally::sinks::PushError;
use tally::sinks::rambase::{RamBase, RamBaseItem, RamBaseSettings};
use tally::store::DatabaseTarget;

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
        trace: serde_json::Value::Null.into(),
        evidence: Evidence::default(),
        sink: "rambase".into(),
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

fn invoice_line(license: &str, quantity: Decimal) -> InvoiceLine {
    InvoiceLine {
        key: key(license),
        quantity,
        rate: dec!(10.00),
        amount: quantity * dec!(10.00),
        currency: "EUR".parse().unwrap(),
        price_ref: "agent@2026-01-01".into(),
        trace: serde_json::Value::Null.into(),
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
    assert!(gets.iter().all(|g| g.contains("$top=80")
        && g.contains("$expand=PagingDetails")
        && g.contains("$inlinecount=allpages")));
    assert!(!gets[0].contains("$pageKey"));
    assert!(gets[1].contains("$pageKey=") && gets[2].contains("$pageKey="));

    // The new usage is found after all three pages, too.
    let id = rambase.push(&line).await.unwrap();
    assert_eq!(id, "171");
    assert_eq!(rambase.find(&line).await.unwrap(), Some("171".to_owned()));
}

#[tokio::test]
async fn a_read_back_that_skips_a_page_fails_with_both_numbers_instead_of_guessing() {
    let sim = sim();
    for n in 0..170 {
        sim.insert_usage(PLAN, ITEM, PERIOD, day(2026, 10, 1), n % 7);
    }
    let handle = serve(&sim).await;
    let rambase = RamBase::new(&settings(&handle)).unwrap();
    let line = prepared(&rambase, ledger_line("Agent", 1, dec!(4))).await;
    assert_eq!(rambase.push(&line).await.unwrap(), "171");

    // Page 1's next key names page 3: the 80 usages of page 2 are never listed.
    sim.skip_page_after(1);
    let message = format!("{:#}", rambase.find(&line).await.unwrap_err());
    assert!(
        message.contains("ended after 91 usages on 2 page(s), but RamBase said it holds 171"),
        "{message}"
    );
    assert!(message.contains("80 usages were not read"), "{message}");
    assert!(
        message.contains("$inlinecount=allpages"),
        "names the URL: {message}"
    );
    // Nor can a new revision be prepared from such a listing.
    let next = ledger_line("Agent", 2, dec!(1));
    let message = format!("{:#}", rambase.prepare(&next).await.unwrap_err());
    assert!(message.contains("holds 171"), "{message}");
    assert_eq!(sim.posts_received(), 1);

    sim.honest_paging();
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

// ---------------------------------------------------------------------------------------------
// Per-plan period ids from the mapping file, through the whole pipeline: the demo's billable
// users (five organizations) into five RamBase plans, each with its own period ids.
// ---------------------------------------------------------------------------------------------

const HEADER: &str = "billing_account,license_type,plan_id,item_id,month,period_id\n";
const LICENSE: &str = "Service desk user";

/// The demo's five organizations: billing account, plan id, October period id of that plan,
/// billable people.
const FIVE: [(&str, u64, u64, i64); 5] = [
    ("ACME-001", 100_001, 100_301, 12),
    ("GLOBEX-002", 100_002, 100_302, 7),
    ("INITECH-003", 100_003, 100_303, 25),
    ("UMBRELLA-004", 100_004, 100_304, 3),
    ("HOOLI-005", 100_005, 100_305, 4),
];

/// The period id `period_ids` gives every plan in these tests: no plan has it in the
/// simulator, so a usage sent there would be refused with 105729.
const SHARED_PERIOD: u64 = 100_210;

/// The demo simulators with RamBase knowing no plan yet, then the five plans, each with its
/// own October period and a November one that tally is never configured with.
async fn five_plan_sims() -> RunningSims {
    let mut settings = sim::demo_settings(std::path::Path::new("data")).unwrap();
    if let Some(rb) = settings.sinks.rambase.as_mut() {
        rb.items.clear();
        rb.period_ids.clear();
    }
    let sims = sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap();
    for (_, plan, period, _) in FIVE {
        sims.rambase.add_plan_item(plan, 1);
        sims.rambase
            .add_plan_period(plan, period, day(2026, 10, 1), day(2026, 10, 31));
        sims.rambase
            .add_plan_period(plan, period + 100, day(2026, 11, 1), day(2026, 11, 30));
    }
    sims
}

/// The demo's configuration with billable users into RamBase only, Hooli Labs mapped to a
/// fifth account, the plan items and periods from a mapping file holding `rows`.
async fn five_plan_app(sims: &RunningSims, dir: &tempfile::TempDir, rows: &str) -> App {
    let DatabaseTarget::Postgres(url) = common::fresh_postgres().await else {
        unreachable!()
    };
    let mut settings = sim::demo_settings(std::path::Path::new("data")).unwrap();
    settings.database.url = Some(url);
    sim::point_at(&mut settings, sims);
    five_plan_settings(&mut settings, dir, rows);
    App::build(settings).await.unwrap()
}

fn five_plan_settings(settings: &mut Settings, dir: &tempfile::TempDir, rows: &str) {
    settings.sources.ccc = None;
    settings.sources.genesys = None;
    settings.sinks.activeplatform = None;
    settings
        .billing
        .accounts
        .retain(|a| a.sink.as_deref() != Some("activeplatform"));
    let mut customers = std::fs::read_to_string(&settings.billing.customers_file).unwrap();
    customers.push_str("billable_users,Hooli Labs,HOOLI-005\n");
    let customers_file = dir.path().join("customers.csv");
    std::fs::write(&customers_file, customers).unwrap();
    settings.billing.customers_file = customers_file;
    let mapping_file = dir.path().join("rambase.csv");
    std::fs::write(&mapping_file, format!("{HEADER}{rows}")).unwrap();
    let rb = settings.sinks.rambase.as_mut().unwrap();
    rb.items.clear();
    rb.period_ids = [("2026-10".to_owned(), SHARED_PERIOD)].into();
    rb.mapping_file = Some(mapping_file);
    rb.http.backoff_ms = 5;
}

fn october() -> RunOptions {
    RunOptions {
        period: "2026-10".parse().unwrap(),
        source: None,
        dry_run: false,
        trigger: Trigger::Manual,
        customer: None,
        requested_by: None,
    }
}

/// (plan, item, period, quantity) of every usage the simulator holds.
fn received(sims: &RunningSims) -> BTreeSet<(u64, u64, u64, i64)> {
    sims.rambase
        .usages()
        .iter()
        .map(|u| (u.plan_id, u.item_id, u.period_id, u.quantity))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn five_plans_with_their_own_period_ids_from_the_mapping_file_each_get_their_usage() {
    let sims = five_plan_sims().await;
    let dir = tempfile::tempdir().unwrap();
    // Plan items on rows of their own, and the October period id of each plan; the shared
    // `period_ids` entry is only the default and is overridden for every plan.
    let mut rows = String::new();
    for (account, plan, period, _) in FIVE {
        rows.push_str(&format!("{account},{LICENSE},{plan},1,,\n"));
        rows.push_str(&format!("{account},{LICENSE},{plan},1,2026-10,{period}\n"));
        rows.push_str(&format!(
            "{account},{LICENSE},{plan},1,2026-11,{}\n",
            period + 100
        ));
    }
    let app = five_plan_app(&sims, &dir, &rows).await;

    let report = pipeline::run(&app, &october()).await.unwrap();
    assert_eq!(
        report.summary.status,
        RunStatus::Completed,
        "{:?}",
        report.exceptions
    );
    assert_eq!(report.summary.status.exit_code(), 0);
    assert_eq!(report.summary.lines_pushed, 5);
    let expected: BTreeSet<(u64, u64, u64, i64)> = FIVE
        .iter()
        .map(|(_, plan, period, people)| (*plan, 1, *period, *people))
        .collect();
    assert_eq!(received(&sims), expected);
    assert!(
        sims.rambase
            .usages()
            .iter()
            .all(|u| u.date == day(2026, 10, 1))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_without_a_period_id_for_the_month_is_an_exception_naming_the_row_to_add() {
    let sims = five_plan_sims().await;
    let dir = tempfile::tempdir().unwrap();
    let mut rows = String::new();
    for (account, plan, period, _) in &FIVE[..4] {
        rows.push_str(&format!("{account},{LICENSE},{plan},1,2026-10,{period}\n"));
    }
    // Hooli's plan item is known, its October period id is not.
    rows.push_str(&format!("HOOLI-005,{LICENSE},100005,1,,\n"));
    let app = five_plan_app(&sims, &dir, &rows).await;
    // Without the `period_ids` default Hooli's line has no period at all.
    let mut settings = app.settings.clone();
    settings.sinks.rambase.as_mut().unwrap().period_ids.clear();
    let app = App::build(settings).await.unwrap();

    let report = pipeline::run(&app, &october()).await.unwrap();
    assert_eq!(report.summary.status, RunStatus::CompletedWithExceptions);
    assert_eq!(
        report.summary.status.exit_code(),
        3,
        "completed with exceptions, not failed"
    );
    assert_eq!(report.summary.lines_pushed, 4);
    let hooli: Vec<_> = report
        .exceptions
        .iter()
        .filter(|e| e.billing_account.as_ref().map(|a| a.as_str()) == Some("HOOLI-005"))
        .collect();
    assert_eq!(hooli.len(), 1, "{:?}", report.exceptions);
    assert_eq!(hooli[0].kind, ExceptionKind::NotBillable);
    assert_eq!(hooli[0].quantity, dec!(4));
    let file = dir.path().join("rambase.csv").display().to_string();
    assert!(
        hooli[0].message.contains(&format!(
            "add \"HOOLI-005,Service desk user,100005,1,2026-10,<period id>\" to {file}"
        )),
        "{}",
        hooli[0].message
    );
    // The other four went to their own plan's period; nothing went to Hooli's plan.
    let expected: BTreeSet<(u64, u64, u64, i64)> = FIVE[..4]
        .iter()
        .map(|(_, plan, period, people)| (*plan, 1, *period, *people))
        .collect();
    assert_eq!(received(&sims), expected);
}

#[tokio::test]
async fn a_usage_sent_to_another_plans_period_is_refused_with_105729() {
    let sim = RamBaseSim::new(ID, SECRET);
    for (_, plan, period, _) in &FIVE[..2] {
        sim.add_plan_item(*plan, 1);
        sim.add_plan_period(*plan, *period, day(2026, 10, 1), day(2026, 10, 31));
    }
    let handle = serve(&sim).await;
    let token = token(&handle).await;
    // Plan 100002 with plan 100001's October period: what one id for every plan did.
    let url = format!(
        "{}sales/recurring-invoice-plans/100002/items/1/recurring-invoice-periods/100301/usages?$format=json",
        handle.base_url()
    );
    let refused = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&token)
        .json(&serde_json::json!({"usage": {"date": "2026-10-01", "quantity": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["httpStatusCode"], 404);
    assert_eq!(body["errorMessage"]["errorMessageId"], 105729);
    assert!(
        body["message"].as_str().unwrap().contains("period"),
        "{body}"
    );
    assert!(sim.usages().is_empty());

    // The connector names the error and where to fix it.
    let mut s = settings(&handle);
    s.items = vec![item("ACME", "Agent", 100_002, 1)];
    s.period_ids = [("2026-10".to_owned(), 100_301)].into();
    let rambase = RamBase::new(&s).unwrap();
    let message = rambase
        .prepare(&ledger_line("Agent", 1, dec!(2)))
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains("RamBase error 105729"), "{message}");
    assert!(message.contains("sinks.rambase.mapping_file"), "{message}");
}

#[test]
fn bad_mapping_file_rows_fail_the_check_with_row_column_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = sim::demo_settings(std::path::Path::new("data")).unwrap();
    settings.sources.billable_users.as_mut().unwrap().token =
        Some(SecretString::from(sim::DEMO_TOKEN));
    settings.sinks.rambase.as_mut().unwrap().client_secret =
        Some(SecretString::from(sim::DEMO_CLIENT_SECRET));
    five_plan_settings(
        &mut settings,
        &dir,
        "ACME-001,Service desk user,100001,1,2026-10,100301\n\
         GLOBEX-002,Service desk user,100001,1,,\n\
         INITECH-003,Service desk user,100003,1,2026-10,\n\
         UMBRELLA-004,Service desk user,10004,1,Oct-26,100304\n",
    );
    let problems = pipeline::check(&settings);
    let file = dir.path().join("rambase.csv").display().to_string();
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    let all = text.join("\n");
    for expected in [
        format!("{file}:3:item_id: plan 100001 item 1 is also used on row 2"),
        format!("{file}:4:period_id: period_id is empty but month is set"),
        format!("{file}:5:plan_id: \"10004\" is not a RamBase recurring invoice plan id"),
        format!("{file}:5:month: \"Oct-26\" is not a month: expected YYYY-MM"),
    ] {
        assert!(all.contains(&expected), "{expected} missing in:\n{all}");
    }
}
