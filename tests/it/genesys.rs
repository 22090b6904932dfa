//! The Genesys Cloud connector against its simulator on a loopback port: tokens per org,
//! reports in progress, fractional usage, refusals and retries, end to end over real HTTP.

use rust_decimal_macros::dec;
use secrecy::SecretString;
use std::net::SocketAddr;
use tally::domain::{LicenseType, Period};
use tally::http::HttpSettings;
use tally::sim::genesys::{GenesysResource, GenesysSim, GenesysUsage, SimHandle};
use tally::sources::genesys::{Genesys, GenesysOrg, GenesysSettings};

const ACME_ID: &str = "4c7a4b6e-9f0a-4a8e-8d53-2f6c1b0f9e11";
const GLOBEX_ID: &str = "9b1d2c3e-4f5a-4b6c-8d7e-0f1a2b3c4d5e";
const CX3: &str = "Genesys Cloud CX 3";
const CX1: &str = "Genesys Cloud CX 1";

fn october() -> Period {
    Period::new(2026, 10).unwrap()
}

fn resource(name: &str) -> GenesysResource {
    GenesysResource {
        name: name.into(),
        date: "2026-10-02T08:15:00.000Z".into(),
    }
}

fn usage(name: &str, total: &str) -> GenesysUsage {
    GenesysUsage {
        name: name.into(),
        total_usage: total.into(),
        resources: vec![
            resource("agent1@acme.example"),
            resource("agent2@acme.example"),
        ],
    }
}

/// A simulator with two orgs (each with its OAuth client) and their October usage.
async fn start() -> (GenesysSim, SimHandle) {
    let sim = GenesysSim::new();
    sim.add_org(ACME_ID, "client-acme", "secret-acme");
    sim.add_org(GLOBEX_ID, "client-globex", "secret-globex");
    sim.set_usage(
        ACME_ID,
        october(),
        vec![
            usage(CX3, "12"),
            usage(CX1, "3"),
            usage("Genesys Cloud WEM Add-on", "2"),
        ],
    );
    sim.set_usage(GLOBEX_ID, october(), vec![usage(CX3, "5.500")]);
    let handle = sim
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    (sim, handle)
}

fn org(org_id: &str, client_id: &str, secret: &str) -> GenesysOrg {
    GenesysOrg {
        org_id: org_id.into(),
        client_id: client_id.into(),
        client_secret: Some(SecretString::from(secret)),
    }
}

fn settings(handle: &SimHandle) -> GenesysSettings {
    GenesysSettings {
        enabled: true,
        region: "mypurecloud.ie".into(),
        api_base_url: Some(handle.base_url()),
        login_base_url: Some(handle.base_url()),
        orgs: [
            (
                "globex".to_owned(),
                org(GLOBEX_ID, "client-globex", "secret-globex"),
            ),
            (
                "acme".to_owned(),
                org(ACME_ID, "client-acme", "secret-acme"),
            ),
        ]
        .into(),
        licenses: [
            (CX3.to_owned(), "Contact centre agent".to_owned()),
            (CX1.to_owned(), "Contact centre light".to_owned()),
        ]
        .into(),
        poll_interval_ms: 10,
        max_wait_secs: 5,
        scopes_at_once: 4,
        http: HttpSettings {
            backoff_ms: 10,
            max_backoff_ms: 50,
            timeout_secs: 5,
            ..HttpSettings::default()
        },
    }
}

#[tokio::test]
async fn a_report_in_progress_is_polled_until_complete_and_staged_per_usage_name() {
    let (sim, handle) = start().await;
    sim.in_progress_polls(ACME_ID, 2);
    let source = Genesys::new(&settings(&handle)).unwrap();
    assert_eq!(source.scopes(), ["acme", "globex"]);

    let page = source.fetch_page("acme", october(), None).await.unwrap();

    assert_eq!(page.next_cursor, None);
    assert_eq!(
        sim.report_requests(),
        3,
        "two InProgress answers, then Complete"
    );
    let mut records = page.records;
    records.sort_by(|a, b| a.item.cmp(&b.item));
    let summary: Vec<(&str, &str, &str, String)> = records
        .iter()
        .map(|r| {
            (
                r.record_key.as_str(),
                r.customer_key.as_str(),
                r.item.as_str(),
                r.quantity.to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (CX1, ACME_ID, CX1, "3".to_owned()),
            (CX3, ACME_ID, CX3, "12".to_owned()),
            (
                "Genesys Cloud WEM Add-on",
                ACME_ID,
                "Genesys Cloud WEM Add-on",
                "2".to_owned()
            ),
        ]
    );
}

#[tokio::test]
async fn a_usage_name_without_a_license_mapping_has_no_license_type() {
    let (_sim, handle) = start().await;
    let source = Genesys::new(&settings(&handle)).unwrap();
    let page = source.fetch_page("acme", october(), None).await.unwrap();
    let addon = page
        .records
        .iter()
        .find(|r| r.item == "Genesys Cloud WEM Add-on")
        .expect("the unmapped usage is staged, not dropped");
    assert_eq!(source.license_type(&addon.item), None);
    assert_eq!(
        source.license_type(CX3),
        Some(LicenseType::new("Contact centre agent"))
    );
}

#[tokio::test]
async fn fractional_total_usage_is_kept_exactly() {
    let (_sim, handle) = start().await;
    let source = Genesys::new(&settings(&handle)).unwrap();
    let page = source.fetch_page("globex", october(), None).await.unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].quantity, dec!(5.5));
    assert_eq!(page.records[0].customer_key, GLOBEX_ID);
}

#[tokio::test]
async fn a_usage_name_listed_twice_is_billed_as_the_sum() {
    let (sim, handle) = start().await;
    sim.set_usage(
        GLOBEX_ID,
        october(),
        vec![usage(CX3, "5.500"), usage(CX1, "1"), usage(CX3, "2")],
    );
    let source = Genesys::new(&settings(&handle)).unwrap();
    let page = source.fetch_page("globex", october(), None).await.unwrap();
    let cx3: Vec<_> = page.records.iter().filter(|r| r.item == CX3).collect();
    assert_eq!(cx3.len(), 1);
    assert_eq!(cx3[0].quantity, dec!(7.5));
}

#[tokio::test]
async fn the_report_range_is_the_month_half_open_in_utc() {
    let (sim, handle) = start().await;
    let source = Genesys::new(&settings(&handle)).unwrap();
    source.fetch_page("acme", october(), None).await.unwrap();
    source
        .fetch_page("acme", Period::new(2026, 12).unwrap(), None)
        .await
        .unwrap();
    let queries = sim.report_queries();
    assert_eq!(queries.len(), 2);
    assert_eq!(queries[0].org_id, ACME_ID);
    assert_eq!(queries[0].start_date, "2026-10-01T00:00:00Z");
    assert_eq!(queries[0].end_date, "2026-11-01T00:00:00Z");
    assert_eq!(queries[1].start_date, "2026-12-01T00:00:00Z");
    assert_eq!(queries[1].end_date, "2027-01-01T00:00:00Z");
}

#[tokio::test]
async fn a_token_per_org_is_reused_and_renewed_once_after_it_expires() {
    let (sim, handle) = start().await;
    let source = Genesys::new(&settings(&handle)).unwrap();
    for scope in source.scopes() {
        source.fetch_page(&scope, october(), None).await.unwrap();
    }
    assert_eq!(sim.token_requests(), 2, "one token per org");
    for scope in source.scopes() {
        source.fetch_page(&scope, october(), None).await.unwrap();
    }
    assert_eq!(sim.token_requests(), 2, "cached tokens are reused");

    sim.expire_tokens();
    let page = source.fetch_page("acme", october(), None).await.unwrap();
    assert_eq!(page.records.len(), 3);
    assert_eq!(sim.token_requests(), 3, "acme's token was renewed once");
    // The refused request, then the one with the new token.
    assert_eq!(sim.report_requests(), 4 + 2);
}

#[tokio::test]
async fn each_org_reads_its_own_report_with_its_own_token() {
    let (sim, handle) = start().await;
    let source = Genesys::new(&settings(&handle)).unwrap();
    let acme = source.fetch_page("acme", october(), None).await.unwrap();
    let globex = source.fetch_page("globex", october(), None).await.unwrap();
    assert_eq!(acme.records.len(), 3);
    assert_eq!(globex.records.len(), 1);
    assert!(acme.records.iter().all(|r| r.customer_key == ACME_ID));
    assert!(globex.records.iter().all(|r| r.customer_key == GLOBEX_ID));
    // The simulator saw each request with the token of the org it was for.
    let orgs: Vec<String> = sim.report_queries().into_iter().map(|q| q.org_id).collect();
    assert_eq!(orgs, [ACME_ID, GLOBEX_ID]);
}

#[tokio::test]
async fn a_wrong_client_secret_is_a_clear_error_naming_the_variable() {
    let (_sim, handle) = start().await;
    let mut settings = settings(&handle);
    settings
        .orgs
        .insert("acme".into(), org(ACME_ID, "client-acme", "not-the-secret"));
    let source = Genesys::new(&settings).unwrap();
    let error = source
        .fetch_page("acme", october(), None)
        .await
        .unwrap_err();
    let text = format!("{error:#}");
    assert!(text.contains("401"), "{text}");
    assert!(text.contains("/oauth/token"), "{text}");
    assert!(text.contains("invalid_client"), "{text}");
    assert!(
        text.contains("TALLY__SOURCES__GENESYS__ORGS__ACME__CLIENT_SECRET"),
        "{text}"
    );
    assert!(!text.contains("not-the-secret"), "{text}");
}

#[tokio::test]
async fn a_report_that_stays_in_progress_gives_up_with_a_clear_error() {
    let (sim, handle) = start().await;
    sim.in_progress_polls(ACME_ID, u32::MAX);
    let mut settings = settings(&handle);
    settings.max_wait_secs = 1;
    settings.poll_interval_ms = 100;
    let source = Genesys::new(&settings).unwrap();
    let error = source
        .fetch_page("acme", october(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("still InProgress after 1 s"), "{error}");
    assert!(error.contains("re-run"), "{error}");
    assert!(error.contains("sources.genesys.max_wait_secs"), "{error}");
    assert!(error.contains("2026-10"), "{error}");
    // Polling backs off (100, 200, 400 ms, then the rest of the second): at most 5 polls,
    // however fast the machine; without backoff there would be about 10.
    let polls = sim.report_requests();
    assert!((1..=5).contains(&polls), "{polls} polls");
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_retried() {
    let (sim, handle) = start().await;
    let source = Genesys::new(&settings(&handle)).unwrap();
    sim.fail_next(2, 500);
    let page = source.fetch_page("globex", october(), None).await.unwrap();
    assert_eq!(page.records[0].quantity, dec!(5.5));
    // Both failures hit the token request (the first call), which was retried.
    assert_eq!(sim.token_requests(), 3);

    sim.fail_next(2, 503);
    source.fetch_page("globex", october(), None).await.unwrap();
    assert_eq!(sim.report_requests(), 1 + 3);

    sim.rate_limit_next(1, 0);
    source.fetch_page("globex", october(), None).await.unwrap();
    assert_eq!(sim.report_requests(), 4 + 2);
}

#[tokio::test]
async fn errors_that_survive_retries_carry_what_genesys_said() {
    let (sim, handle) = start().await;
    let mut settings = settings(&handle);
    settings.http.max_retries = 1;
    let source = Genesys::new(&settings).unwrap();
    source.fetch_page("acme", october(), None).await.unwrap();

    sim.fail_next(2, 500);
    let text = format!(
        "{:#}",
        source
            .fetch_page("acme", october(), None)
            .await
            .unwrap_err()
    );
    assert!(text.contains("500"), "{text}");
    assert!(
        text.contains("/api/v2/billing/reports/billableusage"),
        "{text}"
    );
    assert!(text.contains("code internal.server.error"), "{text}");
    assert!(text.contains("contextId sim-"), "{text}");
    assert!(text.contains("try again later"), "{text}");

    sim.fail_next(1, 403);
    let text = format!(
        "{:#}",
        source
            .fetch_page("acme", october(), None)
            .await
            .unwrap_err()
    );
    assert!(text.contains("403"), "{text}");
    assert!(text.contains("billing"), "{text}");
    assert!(text.contains("missing.permissions"), "{text}");
}

#[tokio::test]
async fn validate_lists_every_problem_with_its_key() {
    let settings = GenesysSettings {
        region: "https://api.mypurecloud.ie/".into(),
        api_base_url: Some("ftp://x".into()),
        orgs: [
            (
                "Acme".to_owned(),
                GenesysOrg {
                    org_id: "not-a-uuid".into(),
                    client_id: " ".into(),
                    client_secret: None,
                },
            ),
            ("globex".to_owned(), org(GLOBEX_ID, "c", "")),
            (
                "initech".to_owned(),
                org(&GLOBEX_ID.to_uppercase(), "c", "s"),
            ),
        ]
        .into(),
        licenses: [(CX3.to_owned(), " ".to_owned())].into(),
        poll_interval_ms: 0,
        max_wait_secs: 0,
        ..settings_without_sim()
    };
    let problems = settings.validate("sources.genesys");
    let keys: Vec<&str> = problems.iter().map(|p| p.at.as_str()).collect();
    assert_eq!(
        keys,
        [
            "sources.genesys.region",
            "sources.genesys.api_base_url",
            "sources.genesys.orgs.Acme",
            "sources.genesys.orgs.Acme.org_id",
            "sources.genesys.orgs.Acme.client_id",
            "sources.genesys.orgs.Acme.client_secret",
            "sources.genesys.orgs.globex.client_secret",
            "sources.genesys.orgs.initech.org_id",
            "sources.genesys.licenses.\"Genesys Cloud CX 3\"",
            "sources.genesys.poll_interval_ms",
            "sources.genesys.max_wait_secs",
        ]
    );
    assert!(
        problems[6]
            .message
            .contains("TALLY__SOURCES__GENESYS__ORGS__GLOBEX__CLIENT_SECRET"),
        "{}",
        problems[6]
    );
    assert!(
        problems[7].message.contains("orgs.globex"),
        "{}",
        problems[7]
    );

    let error = Genesys::new(&settings).unwrap_err().to_string();
    assert!(error.contains("sources.genesys.max_wait_secs"), "{error}");
    assert!(
        error.contains("sources.genesys.orgs.Acme.org_id"),
        "{error}"
    );
}

#[tokio::test]
async fn a_client_secret_in_a_file_is_refused_with_the_variable_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("genesys.toml");
    std::fs::write(
        &path,
        format!(
            "[sources.genesys.orgs.acme]\norg_id = \"{ACME_ID}\"\nclient_id = \"c\"\n\
             client_secret = \"leaked-secret\"\n"
        ),
    )
    .unwrap();
    let error = tally::config::Settings::load_files(&[path], false)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("sources.genesys.orgs.acme.client_secret"),
        "{error}"
    );
    assert!(
        error.contains("TALLY__SOURCES__GENESYS__ORGS__ACME__CLIENT_SECRET"),
        "{error}"
    );
    assert!(!error.contains("leaked-secret"), "{error}");
}

#[tokio::test]
async fn the_demo_data_is_served_for_the_demo_orgs() {
    let sim = GenesysSim::new();
    sim.load_demo(october());
    let handle = sim
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let mut settings = settings(&handle);
    settings.orgs = tally::sim::genesys::DEMO_ORGS
        .iter()
        .map(|(name, id, client, secret)| ((*name).to_owned(), org(id, client, secret)))
        .collect();
    let source = Genesys::new(&settings).unwrap();
    for (index, scope) in source.scopes().iter().enumerate() {
        let page = source.fetch_page(scope, october(), None).await.unwrap();
        let expected = GenesysSim::generate(october(), index, 5 + index * 4);
        assert_eq!(page.records.len(), expected.len(), "{scope}");
    }
}

fn settings_without_sim() -> GenesysSettings {
    GenesysSettings {
        enabled: true,
        region: "mypurecloud.com".into(),
        api_base_url: None,
        login_base_url: None,
        orgs: Default::default(),
        licenses: Default::default(),
        poll_interval_ms: 2_000,
        max_wait_secs: 300,
        scopes_at_once: 4,
        http: HttpSettings::default(),
    }
}
