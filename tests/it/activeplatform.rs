//! The ActivePlatform connector against the ActivePlatform simulator: what the simulator
//! received is the truth these tests check.

use crate::common;

use chrono::{NaiveDate, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use tally::config::AccountSettings;
use tally::domain::{
    BillingAccount, Evidence, ExceptionKind, InvoiceLine, LedgerLine, LicenseType, LineKey,
    LineStatus, Period, SourceName, Trigger,
};
use tally::http::HttpSettings;
use tally::pipeline::{self, App, RunOptions};
use tally::sim;
use tally::sim::activeplatform::{ActivePlatformSim, ApAccount, CustomAttributes, SimHandle};
use tally::sinks::PushError;
use tally::sinks::activeplatform::{
    AccountKey, ActivePlatform, ActivePlatformSettings, LookupError,
};
use tally::store::DatabaseTarget;

const TOKEN: &str = "ap-s3cret-token-77";
const RESELLER: &str = "5001";
const ACME: u64 = 2_000_036;

fn account(id: u64, name: &str, email: &str, attrs: CustomAttributes) -> ApAccount {
    ApAccount {
        id,
        name: name.into(),
        email: email.into(),
        status: "active".into(),
        custom_attributes: attrs,
    }
}

fn sim() -> ActivePlatformSim {
    let sim = ActivePlatformSim::new(TOKEN, RESELLER);
    sim.add_demo_accounts();
    sim
}

async fn serve(sim: &ActivePlatformSim) -> SimHandle {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    sim.serve(addr).await.unwrap()
}

fn settings(base_url: &str) -> ActivePlatformSettings {
    let mut s = ActivePlatformSettings::new(base_url, RESELLER);
    s.api_token = Some(SecretString::from(TOKEN));
    s.http = HttpSettings {
        backoff_ms: 5,
        max_backoff_ms: 20,
        max_retries: 2,
        timeout_secs: 5,
        ..HttpSettings::default()
    };
    s
}

fn connector(handle: &SimHandle) -> ActivePlatform {
    ActivePlatform::new(&settings(&handle.base_url())).unwrap()
}

fn email(e: &str) -> AccountKey {
    AccountKey::Email(e.into())
}

fn attr(value: &str) -> AccountKey {
    AccountKey::Attribute {
        name: "tally_customer_key".into(),
        value: value.into(),
    }
}

fn key(account: &str) -> LineKey {
    LineKey {
        period: "2026-10".parse::<Period>().unwrap(),
        billing_account: BillingAccount::new(account),
        license_type: LicenseType::new("Service desk agent"),
        source: SourceName::new("billable_users"),
    }
}

fn ledger_line(account: &str, revision: i32, quantity: Decimal, amount: Decimal) -> LedgerLine {
    let key = key(account);
    LedgerLine {
        id: i64::from(revision),
        idempotency_key: key.idempotency_key(revision),
        key,
        revision,
        quantity,
        amount,
        rate: dec!(12.50),
        currency: "EUR".parse().unwrap(),
        total_quantity: quantity,
        total_amount: amount,
        price_ref: "agent@2026-01-01".into(),
        trace: serde_json::Value::Null.into(),
        evidence: Evidence::default(),
        sink: "activeplatform".into(),
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

fn invoice_line(account: &str, amount: Decimal, currency: &str) -> InvoiceLine {
    InvoiceLine {
        key: key(account),
        quantity: dec!(4),
        rate: dec!(12.50),
        amount,
        currency: currency.parse().unwrap(),
        price_ref: "agent@2026-01-01".into(),
        trace: serde_json::Value::Null.into(),
        evidence: Evidence::default(),
        sink: "activeplatform".into(),
    }
}

/// Phase one as the pipeline does it: prepare, then keep the marker on the line.
async fn prepared(ap: &ActivePlatform, mut line: LedgerLine) -> LedgerLine {
    line.push_marker = ap.prepare(&line).await.unwrap();
    line.status = LineStatus::Pushing;
    line
}

#[tokio::test]
async fn an_email_lookup_finds_the_one_account_ignoring_case_and_near_misses() {
    let sim = sim();
    sim.add_account(account(
        2_000_090,
        "Jo Ann's shop",
        "joann@acme.example",
        CustomAttributes::list(&[]),
    ));
    sim.add_account(account(
        2_000_091,
        "Ann",
        "Ann@Acme.example",
        CustomAttributes::list(&[]),
    ));
    let handle = serve(&sim).await;
    let ap = connector(&handle);

    // The simulator's filter is a loose substring match: both come back, one is Ann.
    let found = ap.find_account(&email("ann@acme.EXAMPLE")).await.unwrap();
    assert_eq!(found.id, "2000091");
    assert_eq!(found.name, "Ann");
    let requests = sim.account_requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].contains("filters%5Bemail%5D=ann%40acme.EXAMPLE")
            || requests[0].contains("filters[email]=ann@acme.EXAMPLE"),
        "{requests:?}"
    );
    assert!(requests[0].contains("api_token=REDACTED"), "{requests:?}");
}

#[tokio::test]
async fn an_email_nobody_has_is_not_found_and_says_what_to_do() {
    let sim = sim();
    let handle = serve(&sim).await;
    let ap = connector(&handle);

    let err = ap
        .find_account(&email("nobody@nowhere.example"))
        .await
        .unwrap_err();
    assert!(matches!(err, LookupError::NotFound { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("nobody@nowhere.example"), "{message}");
    assert!(message.contains("customers.csv"), "{message}");
}

#[tokio::test]
async fn two_accounts_sharing_an_email_are_ambiguous_and_both_are_named() {
    let sim = sim();
    let handle = serve(&sim).await;
    let ap = connector(&handle);

    let err = ap
        .find_account(&email("finance@umbrella.example"))
        .await
        .unwrap_err();
    match &err {
        LookupError::Ambiguous { candidates, .. } => {
            let ids: Vec<&str> = candidates.iter().map(|a| a.id.as_str()).collect();
            assert_eq!(ids, ["2000063", "2000070"]);
        }
        other => panic!("expected Ambiguous, got {other:?}"),
    }
    let message = err.to_string();
    for expected in [
        "2 ActivePlatform accounts",
        "account 2000063 \"Umbrella Health\" <finance@umbrella.example>",
        "account 2000070 \"Umbrella Health (old contract)\"",
        "customers.csv",
    ] {
        assert!(
            message.contains(expected),
            "{expected} missing in {message}"
        );
    }
}

#[tokio::test]
async fn attribute_lookups_read_both_shapes_of_custom_attributes() {
    let sim = sim();
    sim.add_account(account(
        2_000_080,
        "Hooli Labs",
        "x@hooli.example",
        CustomAttributes::map(&[("tally_customer_key", "Hooli Labs")]),
    ));
    sim.add_account(account(
        2_000_081,
        "Hooli Labs EU",
        "eu@hooli.example",
        CustomAttributes::list(&[("region", "EU"), ("tally_customer_key", "Hooli Labs")]),
    ));
    let handle = serve(&sim).await;
    let ap = connector(&handle);

    // List shape (Acme) and map shape (Globex).
    assert_eq!(
        ap.find_account(&attr("Acme Corporation")).await.unwrap().id,
        ACME.to_string()
    );
    let globex = ap
        .find_account(&ap.attribute_key("Globex Nordic AS"))
        .await
        .unwrap();
    assert_eq!(globex.id, "2000041");
    assert_eq!(globex.email, "Invoices@Globex.example");

    // Not found: a near miss is not a match.
    let err = ap
        .find_account(&attr("acme corporation"))
        .await
        .unwrap_err();
    assert!(matches!(err, LookupError::NotFound { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("set the custom attribute tally_customer_key = \"acme corporation\""),
        "{err}"
    );

    // Two accounts, one of each shape.
    let err = ap.find_account(&attr("Hooli Labs")).await.unwrap_err();
    match &err {
        LookupError::Ambiguous { candidates, .. } => assert_eq!(candidates.len(), 2),
        other => panic!("expected Ambiguous, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("2000080") && message.contains("2000081"),
        "{message}"
    );

    // Everything came from one listing.
    assert_eq!(sim.account_requests().len(), 1);
}

#[tokio::test]
async fn guid_keys_match_whatever_their_case_dashes_or_braces() {
    let sim = sim();
    let handle = serve(&sim).await;
    let ap = connector(&handle);

    // The demo's Initech account holds "{6F9619FF-8B86-D011-B42D-00C04FC964FF}".
    for key in [
        "6f9619ff-8b86-d011-b42d-00c04fc964ff",
        "6F9619FF8B86D011B42D00C04FC964FF",
        "{6f9619ff-8b86-d011-b42d-00c04fc964ff}",
    ] {
        assert_eq!(ap.find_account(&attr(key)).await.unwrap().id, "2000057");
    }
    let err = ap
        .find_account(&attr("6f9619ff-8b86-d011-b42d-00c04fc964fe"))
        .await
        .unwrap_err();
    assert!(matches!(err, LookupError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn the_accounts_listing_is_paged_read_once_and_cached_until_cleared() {
    let sim = ActivePlatformSim::new(TOKEN, RESELLER);
    for i in 0..5u64 {
        sim.add_account(account(
            3_000_000 + i,
            &format!("Customer {i}"),
            &format!("c{i}@example.com"),
            CustomAttributes::map(&[("tally_customer_key", &format!("C-{i}"))]),
        ));
    }
    let handle = serve(&sim).await;
    let mut s = settings(&handle.base_url());
    s.per_page = 2;
    let ap = ActivePlatform::new(&s).unwrap();

    // The last account is on the third page (2 + 2 + 1).
    assert_eq!(ap.find_account(&attr("C-4")).await.unwrap().id, "3000004");
    let requests = sim.account_requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    for (i, r) in requests.iter().enumerate() {
        assert!(r.contains(&format!("page={}", i + 1)), "{r}");
        assert!(r.contains("per_page=2"), "{r}");
    }

    // A second lookup of the same key, and of another key, asks nothing.
    assert_eq!(ap.find_account(&attr("C-4")).await.unwrap().id, "3000004");
    assert_eq!(ap.find_account(&attr("C-0")).await.unwrap().id, "3000000");
    assert_eq!(sim.account_requests().len(), 3);

    // An account added in ActivePlatform is seen after the cache is cleared.
    sim.add_account(account(
        3_000_009,
        "New",
        "new@example.com",
        CustomAttributes::list(&[("tally_customer_key", "C-9")]),
    ));
    assert!(ap.find_account(&attr("C-9")).await.is_err());
    ap.clear_cache();
    assert_eq!(ap.find_account(&attr("C-9")).await.unwrap().id, "3000009");
    // Six accounts are three full pages, so a fourth (empty) page ends the listing.
    assert_eq!(sim.account_requests().len(), 3 + 4);
}

#[tokio::test]
async fn push_creates_one_correction_with_the_total_as_a_two_decimal_string() {
    let sim = sim();
    let handle = serve(&sim).await;
    let ap = connector(&handle);
    let line = prepared(&ap, ledger_line("2000036", 1, dec!(4), dec!(50.0))).await;
    assert_eq!(
        line.push_marker.as_deref(),
        Some("tally:2026-10/billable_users/2000036/Service desk agent#r1")
    );

    let id = ap.push(&line).await.unwrap();

    let corrections = sim.corrections();
    assert_eq!(corrections.len(), 1);
    let c = &corrections[0];
    assert_eq!(c.id.to_string(), id);
    assert_eq!(c.account_id, ACME);
    assert_eq!(c.total, "50.00");
    assert!(c.included_invoice);
    assert_eq!(c.period_from, NaiveDate::from_ymd_opt(2026, 10, 1).unwrap());
    assert_eq!(c.period_to, NaiveDate::from_ymd_opt(2026, 10, 31).unwrap());
    assert!(
        c.comment.starts_with(
            "[tally:2026-10/billable_users/2000036/Service desk agent#r1] Service desk agent"
        ),
        "{}",
        c.comment
    );
    assert!(
        c.comment.contains("4 × 12.50 EUR = 50.0 EUR, revision 1"),
        "{}",
        c.comment
    );

    // An adjustment carries its (negative) delta, and find tells the two apart.
    let adjustment = prepared(&ap, ledger_line("2000036", 2, dec!(-1), dec!(-12.5))).await;
    let second = ap.push(&adjustment).await.unwrap();
    assert_eq!(sim.corrections()[1].total, "-12.50");
    assert!(sim.corrections()[1].comment.contains("(adjustment)"));
    assert_eq!(ap.find(&line).await.unwrap(), Some(id));
    assert_eq!(ap.find(&adjustment).await.unwrap(), Some(second));
}

#[tokio::test]
async fn an_unknown_account_is_rejected_with_activeplatform_s_message() {
    let sim = sim();
    let handle = serve(&sim).await;
    let ap = connector(&handle);
    let line = prepared(&ap, ledger_line("999", 1, dec!(1), dec!(12.50))).await;

    match ap.push(&line).await {
        Err(PushError::Rejected(m)) => {
            assert!(m.contains("422"), "{m}");
            assert!(m.contains("Account 999 not found"), "{m}");
            assert!(m.contains("/data/attributes/account_id"), "{m}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(sim.corrections().is_empty());
}

#[tokio::test]
async fn the_simulator_refuses_a_total_sent_as_a_number_or_with_three_decimals() {
    let sim = sim();
    let handle = serve(&sim).await;
    let url = format!(
        "{}api/v3/resellers/{RESELLER}/corrections",
        handle.base_url()
    );
    let client = reqwest::Client::new();
    for total in [serde_json::json!(12.5), serde_json::json!("12.505")] {
        let body = serde_json::json!({"data": {"type": "corrections", "attributes": {
            "account_id": ACME, "period_from": "2026-10-01", "period_to": "2026-10-31",
            "total": total, "included_invoice": true, "comment": "x"}}});
        let answer = client
            .post(&url)
            .header("X-Api-Token", TOKEN)
            .header("Content-Type", "application/vnd.api+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 422, "{total}");
        let errors: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(
            errors["errors"][0]["source"]["pointer"],
            "/data/attributes/total"
        );
    }
    let anonymous = client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let v1 = client
        .get(format!("{}api/vendor/v1/accounts.json", handle.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(v1.status(), 401);
    let capped: serde_json::Value = client
        .get(format!(
            "{}api/vendor/v1/accounts.json?api_token={TOKEN}&per_page=1000",
            handle.base_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(capped.as_array().unwrap().len(), 5, "a bare array");
    assert!(sim.corrections().is_empty());
}

#[tokio::test]
async fn an_accepted_push_whose_answer_is_lost_is_uncertain_then_found_and_never_sent_twice() {
    let sim = sim();
    let handle = serve(&sim).await;
    let ap = connector(&handle);
    let line = prepared(&ap, ledger_line("2000036", 1, dec!(3), dec!(37.50))).await;
    assert_eq!(ap.find(&line).await.unwrap(), None);

    sim.accept_then_fail_next(1);
    match ap.push(&line).await {
        Err(PushError::Uncertain(m)) => assert!(m.contains("500"), "{m}"),
        other => panic!("expected Uncertain, got {other:?}"),
    }
    assert_eq!(sim.corrections().len(), 1, "the POST must not be re-sent");

    // Recovery finds the stored correction, so the pipeline pushes nothing again.
    let found = ap.find(&line).await.unwrap();
    assert_eq!(found, Some(sim.corrections()[0].id.to_string()));
    assert_eq!(sim.corrections().len(), 1);
    let posts = sim
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST "))
        .count();
    assert_eq!(posts, 1);
}

#[tokio::test]
async fn a_5xx_before_acceptance_is_uncertain_and_then_found_absent() {
    let sim = sim();
    let handle = serve(&sim).await;
    let ap = connector(&handle);
    let line = prepared(&ap, ledger_line("2000036", 1, dec!(3), dec!(37.50))).await;

    sim.fail_next(1, 503);
    assert!(matches!(ap.push(&line).await, Err(PushError::Uncertain(_))));
    assert!(sim.corrections().is_empty());
    assert_eq!(ap.find(&line).await.unwrap(), None);
}

#[tokio::test]
async fn the_token_never_appears_in_error_messages() {
    let sim = sim();
    let handle = serve(&sim).await;

    // v1 with a token the simulator does not know.
    let mut wrong = settings(&handle.base_url());
    wrong.api_token = Some(SecretString::from("wr0ng-token-123"));
    let ap = ActivePlatform::new(&wrong).unwrap();
    let message = ap
        .find_account(&attr("Acme Corporation"))
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains("401"), "{message}");
    assert!(
        message.contains("TALLY__SINKS__ACTIVEPLATFORM__API_TOKEN"),
        "{message}"
    );
    assert!(message.contains("api_token=REDACTED"), "{message}");
    assert!(!message.contains("wr0ng-token-123"), "{message}");
    // v3 too.
    let line = ledger_line("2000036", 1, dec!(1), dec!(12.50));
    let message = ap.push(&line).await.unwrap_err().to_string();
    assert!(message.contains("401"), "{message}");
    assert!(!message.contains("wr0ng-token-123"), "{message}");

    // A peer that cannot be reached: the transport error names the URL, never the token.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let ap = ActivePlatform::new(&settings(&format!("http://{closed}/"))).unwrap();
    let message = ap
        .find_account(&email("a@b.example"))
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains("accounts.json"), "{message}");
    assert!(!message.contains(TOKEN), "{message}");
    let message = ap.find(&line).await.unwrap_err().to_string();
    assert!(!message.contains(TOKEN), "{message}");
}

#[tokio::test]
async fn check_refuses_what_activeplatform_cannot_bill() {
    let sim = sim();
    let handle = serve(&sim).await;
    let ap = connector(&handle);

    assert_eq!(
        ap.check(&invoice_line("2000036", dec!(50.00), "EUR")),
        Ok(())
    );
    let not_an_id = ap
        .check(&invoice_line("ACME-001", dec!(50.00), "EUR"))
        .unwrap_err();
    assert!(
        not_an_id.contains("\"ACME-001\" is not an ActivePlatform account id"),
        "{not_an_id}"
    );
    // The account's currency is decided while mapping (billing.accounts): a line in another
    // currency than sinks.activeplatform.currency is billable.
    assert_eq!(
        ap.check(&invoice_line("2000036", dec!(50.00), "USD")),
        Ok(())
    );
    let decimals = ap
        .check(&invoice_line("2000036", dec!(50.005), "EUR"))
        .unwrap_err();
    assert!(decimals.contains("more than two decimals"), "{decimals}");

    // A zero amount is never sent.
    let zero = ledger_line("2000036", 2, dec!(1), dec!(0.00));
    assert_eq!(ap.prepare(&zero).await.unwrap(), None);
    assert_eq!(ap.push(&zero).await.unwrap(), "none:zero-amount");
    assert!(sim.requests().is_empty());
}

#[test]
fn validate_lists_every_problem_with_its_key() {
    let mut s = ActivePlatformSettings::new("ftp:/nowhere", "");
    s.lookup_attribute = " ".into();
    s.currency = "EURO".into();
    s.per_page = 500;
    let problems = s.validate("sinks.activeplatform");
    let all: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    let all = all.join("\n");
    for expected in [
        "sinks.activeplatform.base_url",
        "sinks.activeplatform.reseller_id",
        "sinks.activeplatform.api_token: is missing: set the environment variable TALLY__SINKS__ACTIVEPLATFORM__API_TOKEN",
        "sinks.activeplatform.lookup_attribute",
        "sinks.activeplatform.currency",
        "sinks.activeplatform.per_page: 500 is out of range",
    ] {
        assert!(all.contains(expected), "{expected} missing in:\n{all}");
    }
    assert_eq!(problems.len(), 6, "{all}");
    assert!(ActivePlatform::new(&s).is_err());
}

#[tokio::test]
async fn the_state_file_survives_a_new_simulator_instance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("activeplatform.json");
    let line = ledger_line("2000036", 1, dec!(2), dec!(25.00));
    let first_id = {
        let sim = sim().with_state_file(path.clone()).unwrap();
        let handle = serve(&sim).await;
        let ap = connector(&handle);
        let line = prepared(&ap, line.clone()).await;
        ap.push(&line).await.unwrap()
    };

    // A second "process": accounts and corrections come from the file alone.
    let sim = ActivePlatformSim::new(TOKEN, RESELLER)
        .with_state_file(path)
        .unwrap();
    assert_eq!(sim.corrections().len(), 1);
    let handle = serve(&sim).await;
    let ap = connector(&handle);
    assert_eq!(ap.find(&line).await.unwrap(), Some(first_id.clone()));
    let next = prepared(&ap, ledger_line("2000036", 2, dec!(1), dec!(12.50))).await;
    let second_id = ap.push(&next).await.unwrap();
    assert!(second_id.parse::<u64>().unwrap() > first_id.parse::<u64>().unwrap());
}

// ---------------------------------------------------------------------------------------------
// Per-account currency through the whole pipeline: the demo's CCC and Genesys Cloud usage
// into ActivePlatform, two accounts billed in USD, the others in ActivePlatform's EUR.
// ---------------------------------------------------------------------------------------------

/// Per-unit list prices of the demo licenses billed in ActivePlatform: (license, currency) →
/// rate. The EUR ones are the demo's; the USD ones are added for these tests.
fn per_unit_rates() -> BTreeMap<(&'static str, &'static str), Decimal> {
    BTreeMap::from([
        (("Secure messaging – Professional", "EUR"), dec!(9.00)),
        (("Secure messaging – Guest", "EUR"), dec!(2.50)),
        (("Genesys Cloud CX 1 user", "EUR"), dec!(75.00)),
        (("Secure messaging – Professional", "USD"), dec!(10.00)),
        (("Secure messaging – Guest", "USD"), dec!(3.00)),
        (("Genesys Cloud CX 1 user", "USD"), dec!(80.00)),
        (("Genesys Cloud CX 3 user", "USD"), dec!(160.00)),
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_listed_in_usd_by_id_or_by_email_are_pushed_in_usd_and_the_others_in_eur() {
    let demo = sim::demo_settings(std::path::Path::new("data")).unwrap();
    let sims = sim::start_sims(&demo, None, sim::SimPorts::ANY)
        .await
        .unwrap();
    let DatabaseTarget::Postgres(url) = common::fresh_postgres().await else {
        unreachable!()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut settings = demo;
    settings.database.url = Some(url);
    sim::point_at(&mut settings, &sims);
    settings.sources.billable_users = None;
    settings.sinks.rambase = None;
    settings
        .billing
        .accounts
        .retain(|a| a.sink.as_deref() == Some("activeplatform"));
    settings.billing.default_sink = "activeplatform".into();
    // Globex (mapped to account 2000041 in the customer map) by its id; Initech (found by its
    // CCC service GUID in a custom attribute) by the e-mail ActivePlatform holds for it, in
    // another spelling.
    for account in settings.billing.accounts.iter_mut() {
        if account.id == "2000041" {
            account.currency = Some("USD".into());
        }
    }
    settings.billing.accounts.push(AccountSettings {
        id: "AP@Initech.example".into(),
        currency: Some("USD".into()),
        sink: None,
    });
    let mut pricing = std::fs::read_to_string(&settings.billing.pricing_file).unwrap();
    pricing.push_str(
        "SM-PRO-USD,Secure messaging – Professional,,USD,per_unit,,,10.00,,,,,2026-01-01,\n\
         SM-GUEST-USD,Secure messaging – Guest,,USD,per_unit,,,3.00,,,,,2026-01-01,\n\
         GC-CX1-USD,Genesys Cloud CX 1 user,,USD,per_unit,,,80.00,,,,,2026-01-01,\n\
         GC-CX3-USD,Genesys Cloud CX 3 user,,USD,per_unit,,,160.00,,,,,2026-01-01,\n",
    );
    let pricing_file = dir.path().join("pricing.csv");
    std::fs::write(&pricing_file, pricing).unwrap();
    settings.billing.pricing_file = pricing_file;
    if let Some(s) = settings.sinks.activeplatform.as_mut() {
        s.http.backoff_ms = 5;
    }
    let app = App::build(settings).await.unwrap();

    let period: Period = sim::DEMO_PERIOD.parse().unwrap();
    let options = RunOptions {
        period,
        source: None,
        dry_run: false,
        trigger: Trigger::Manual,
        customer: None,
        requested_by: None,
    };
    let report = pipeline::run(&app, &options).await.unwrap();
    // Only the demo's deliberate exception (the WEM add-on has no license type) remains: no
    // line is refused for its currency.
    assert!(
        report
            .exceptions
            .iter()
            .all(|e| e.kind == ExceptionKind::UnmappedLicense),
        "{:?}",
        report.exceptions
    );
    assert_eq!(report.summary.status.exit_code(), 3);

    let expected_currency = BTreeMap::from([
        (2_000_036u64, "EUR"), // Acme: not listed, ActivePlatform's currency
        (2_000_041, "USD"),    // Globex: listed by id
        (2_000_057, "USD"),    // Initech: listed by e-mail
    ]);
    let corrections = sims.activeplatform.corrections();
    let lines = app.store.ledger_lines(period, None).await.unwrap();
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for line in &lines {
        let account: u64 = line.key.billing_account.as_str().parse().unwrap();
        let currency = expected_currency[&account];
        let license = line.key.license_type.as_str();
        assert_eq!(line.currency.code(), currency, "{line:?}");
        let id = line.external_id.as_deref().expect("every line was pushed");
        let sent = corrections
            .iter()
            .find(|c| c.id.to_string() == id)
            .expect("the correction the ledger names is in ActivePlatform");
        assert_eq!(sent.account_id, account);
        // What ActivePlatform received: the amount in the account's currency...
        if let Some(rate) = per_unit_rates().get(&(license, currency)) {
            let mut total = (line.quantity * rate).round_dp(2);
            total.rescale(2);
            assert_eq!(sent.total, total.to_string(), "{license} for {account}");
        }
        let mut amount = line.amount;
        amount.rescale(2);
        assert_eq!(sent.total, amount.to_string());
        // ...and the currency in the comment the accountant reads.
        let other = if currency == "USD" { "EUR" } else { "USD" };
        assert!(
            sent.comment.contains(&format!(" {currency} = ")) && !sent.comment.contains(other),
            "{}",
            sent.comment
        );
        *seen.entry(account).or_default() += 1;
    }
    assert_eq!(corrections.len(), lines.len(), "nothing else was sent");
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        [2_000_036, 2_000_041, 2_000_057],
        "every account was billed"
    );
}
