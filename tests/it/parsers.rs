//! Every parser of outside input, as a function of bytes, with its seed inputs: the one list the
//! property tests (`fuzz.rs`) and the cargo-fuzz targets (`fuzz/`, which includes this file)
//! both run, so that a parser added here is fuzzed by both.
//!
//! A parser answers `Ok(())` when it read a value and `Err(why)` when it refused the input;
//! the only wrong answer is a panic. Header parsers take the bytes as text (lossily, as a
//! header value that is not text is dropped before them).

use std::path::Path;

/// One parser under test.
pub struct Parser {
    /// Its name; also the cargo-fuzz target's name.
    pub name: &'static str,
    /// Inputs it reads: files of the repository (`config/`, demo data) and answers as the
    /// simulators and the vendors' documents give them.
    pub seeds: fn(&Path) -> Vec<Vec<u8>>,
    pub parse: fn(&[u8]) -> Result<(), String>,
}

fn files(repo: &Path, names: &[&str]) -> Vec<Vec<u8>> {
    names
        .iter()
        .map(|n| std::fs::read(repo.join(n)).unwrap_or_else(|e| panic!("seed {n}: {e}")))
        .collect()
}

fn texts(texts: &[&str]) -> Vec<Vec<u8>> {
    texts.iter().map(|t| t.as_bytes().to_vec()).collect()
}

fn problems(found: Vec<tally::problem::Problem>) -> String {
    found
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

const ORG: &str = "5d6f2b1e-3c4a-4e8b-9a01-ac0e00000001";
const LINK_BASE: &str =
    "https://api.example.test/v1/account/billable_users?year=2026&month=10&page=1&per_page=100";

fn period() -> tally::domain::Period {
    "2026-10".parse().unwrap()
}

fn config_toml(bytes: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    let settings =
        tally::config::Settings::from_toml("fuzz.toml", text).map_err(|e| e.to_string())?;
    let found = settings.validate();
    if found.is_empty() {
        Ok(())
    } else {
        Err(problems(found))
    }
}

fn genesys_report(bytes: &[u8]) -> Result<(), String> {
    let (start, end) = tally::sources::genesys::month_range(period());
    tally::sources::genesys::parse_report(bytes, ORG, (&start, &end)).map(drop)
}

fn link_header(bytes: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(bytes);
    let values: Vec<&str> = text.lines().collect();
    let base = reqwest::Url::parse(LINK_BASE).unwrap();
    match tally::sources::billable_users::parse_next_page(&values, &base)? {
        Some(_) => Ok(()),
        None => Err("no rel=\"next\" link".to_owned()),
    }
}

fn rambase(answer: tally::sinks::rambase::RamBaseAnswer, bytes: &[u8]) -> Result<(), String> {
    tally::sinks::rambase::parse_answer(answer, bytes).map(drop)
}

fn activeplatform(
    answer: tally::sinks::activeplatform::ActivePlatformAnswer,
    bytes: &[u8],
) -> Result<(), String> {
    tally::sinks::activeplatform::parse_answer(answer, bytes).map(drop)
}

const USERS_PAGE: &str = r#"{"pageSize":25,"totalPages":2,"totalItems":27,"currentPage":1,"results":[
{"serviceUserGuid":"0123456789abcdef0123456789abcdef","emailAddress":"kari@acme.example","status":"Active","groupType":"Professional","lastLogin":"2026-10-03T08:00:00Z"},
{"serviceUserGuid":"{89ABCDEF-0123-4567-89AB-CDEF01234567}","emailAddress":"ola@acme.example","status":"Disabled","groupType":"Guest","lastLogin":null}]}"#;
const USAGE: &str = r#"{"serviceGuid":"6f9619ff8b86d011b42d00cf4fc964ff","periodType":"Monthly","period":"2026-10-01T00:00:00Z","usage":{"totalMessagesSent":12,"totalMessagesReceived":30,"totalAttachmentsCount":2,"totalAttachmentsSize":40960,"totalInvitationsSent":1,"totalInvitationsAccepted":1},"responseStatus":{}}"#;
const REPORT: &str = r#"{"id":"r-1","name":"October","startDate":"2026-10-01T00:00:00Z","endDate":"2026-11-01T00:00:00Z","status":"Complete","usages":[{"name":"Genesys Cloud CX 3","totalUsage":"25","resources":[{"name":"kari@acme.example","date":"2026-10-02T09:00:00Z"}]},{"name":"Genesys Cloud CX 1","totalUsage":"5.500","resources":[]}],"selfUri":"/api/v2/billing/reports/billableusage"}"#;
const PEOPLE: &str = r#"[{"id":552,"primary_email":"abbie.lindt@microsoft.com","name":"Abbie Lindt","organization":"Microsoft Corporation","business_unit":null,"region":"EU","sign_ins":0,"last_visit":null,"updates":0},{"id":70,"primary_email":"ashok.kumar@virtualsupport.com","name":"Ashok Kumar","organization":"Widget Data Center, External IT","business_unit":"Widget Data Center","region":"US","sign_ins":14,"last_visit":"2015-10-30T15:22:25-05:00","updates":78}]"#;
const PEOPLE_CSV: &str = "id,primary_email,name,organization,business_unit,region,sign_ins,last_visit,updates\r\n552,abbie.lindt@microsoft.com,Abbie Lindt,Microsoft Corporation,,EU,0,,0\r\n70,ashok.kumar@virtualsupport.com,Ashok Kumar,\"Widget Data Center, External IT\",Widget Data Center,US,14,2015-10-30T15:22:25-05:00,78\r\n";

/// Every parser of outside input.
pub fn all() -> Vec<Parser> {
    use tally::sinks::activeplatform::ActivePlatformAnswer as Ap;
    use tally::sinks::rambase::RamBaseAnswer as Rb;
    vec![
        Parser {
            name: "pricing_csv",
            seeds: |repo| {
                files(
                    repo,
                    &[
                        "config/pricing.csv",
                        "config/demo/pricing.csv",
                        "tests/data/pricing/pricing.csv",
                    ],
                )
            },
            parse: |b| {
                tally::pricing::PricingTable::from_reader("pricing.csv", b)
                    .map(drop)
                    .map_err(problems)
            },
        },
        Parser {
            name: "customer_map",
            seeds: |repo| files(repo, &["config/customers.csv", "config/demo/customers.csv"]),
            parse: |b| {
                tally::mapping::CustomerMap::from_reader("customers.csv", b)
                    .map(drop)
                    .map_err(problems)
            },
        },
        Parser {
            name: "rambase_mapping",
            seeds: |repo| files(repo, &["config/rambase.csv"]),
            parse: |b| {
                tally::sinks::rambase::MappingFile::from_reader("rambase.csv", b, &[])
                    .map(drop)
                    .map_err(problems)
            },
        },
        Parser {
            name: "config_toml",
            seeds: |repo| {
                files(
                    repo,
                    &[
                        "config/default.toml",
                        "config/demo.toml",
                        "config/production.toml",
                    ],
                )
            },
            parse: config_toml,
        },
        Parser {
            name: "billable_users_json",
            seeds: |_| texts(&[PEOPLE, "[]"]),
            parse: |b| tally::sources::billable_users::parse_json_page(b).map(drop),
        },
        Parser {
            name: "billable_users_csv",
            seeds: |_| texts(&[PEOPLE_CSV]),
            parse: |b| tally::sources::billable_users::parse_csv_page(b, None).map(drop),
        },
        Parser {
            name: "link_header",
            seeds: |_| {
                texts(&[
                    "<https://api.example.test/v1/account/billable_users?year=2026&month=10&page=2&per_page=100>; rel=\"next\", <https://api.example.test/v1/account/billable_users?page=5>; rel=\"last\"",
                    "</v1/account/billable_users?page=3>; rel=\"next last\"\n<?page=1>; rel=first",
                ])
            },
            parse: link_header,
        },
        Parser {
            name: "ccc_users_page",
            seeds: |_| {
                texts(&[
                    USERS_PAGE,
                    r#"{"pageSize":25,"totalPages":0,"totalItems":0,"currentPage":1,"results":[]}"#,
                ])
            },
            parse: |b| tally::sources::ccc::parse_users_page(b).map(drop),
        },
        Parser {
            name: "ccc_usage",
            seeds: |_| texts(&[USAGE]),
            parse: |b| tally::sources::ccc::parse_usage_answer(b).map(drop),
        },
        Parser {
            name: "genesys_report",
            seeds: |_| texts(&[REPORT]),
            parse: genesys_report,
        },
        Parser {
            name: "rambase_token",
            seeds: |_| {
                texts(&[
                    r#"{"access_token":"abc","expires_in":3600,"refresh_token":"def"}"#,
                    r#"{"access_token":"abc","expires_in":"3600"}"#,
                ])
            },
            parse: |b| rambase(Rb::Token, b),
        },
        Parser {
            name: "rambase_usages_page",
            seeds: |_| {
                texts(&[
                    r#"{"usages":[{"usageId":1,"createdAt":"2026-10-02T10:00:00Z","date":"2026-10-31","quantity":4,"usageAmount":50.0},{"usage":{"usageId":"2","date":"2026-10-31T00:00:00","quantity":"-1"}}],"paging":{"nextPageKey":"k2","size":2}}"#,
                ])
            },
            parse: |b| rambase(Rb::UsagesPage, b),
        },
        Parser {
            name: "rambase_created",
            seeds: |_| {
                texts(&[
                    r#"{"usage":{"usageId":7,"createdAt":"2026-10-02T10:00:00Z","date":"2026-10-31","quantity":4,"usageAmount":"50.00"}}"#,
                ])
            },
            parse: |b| rambase(Rb::Created, b),
        },
        Parser {
            name: "rambase_error",
            seeds: |_| {
                texts(&[
                    r#"{"httpStatusCode":404,"httpStatusDescription":"Not Found","message":"Recurring invoice plan not found","errorMessage":{"errorMessageId":105702}}"#,
                ])
            },
            parse: |b| rambase(Rb::Error, b),
        },
        Parser {
            name: "activeplatform_accounts",
            seeds: |_| {
                texts(&[
                    r#"[{"id":2000041,"name":"Acme","email":"billing@acme.example","status":"active","balance":"23.34","custom_attributes":[{"name":"tally_customer_key","value":"a1c3e5f70b2d4e6f8a1c3e5f7a9b0001"}]},{"id":"2000042","name":null,"custom_attributes":{"tally_customer_key":42,"other":null}}]"#,
                ])
            },
            parse: |b| activeplatform(Ap::Accounts, b),
        },
        Parser {
            name: "activeplatform_created",
            seeds: |_| {
                texts(&[
                    r#"{"data":{"type":"corrections","id":"c-1","attributes":{"account_id":2000041,"total":"225.00","comment":"[tally:2026-10/ccc/2000041/Secure messaging#r1] ..."}}}"#,
                ])
            },
            parse: |b| activeplatform(Ap::Created, b),
        },
        Parser {
            name: "activeplatform_corrections",
            seeds: |_| {
                texts(&[
                    r#"{"data":[{"id":1,"attributes":{"account_id":"2000041","total":"-12.50","comment":"[tally:k#r2]"}}],"meta":{"total":1}}"#,
                ])
            },
            parse: |b| activeplatform(Ap::Corrections, b),
        },
        Parser {
            name: "activeplatform_error",
            seeds: |_| {
                texts(&[
                    r#"{"errors":[{"status":"422","code":"invalid","title":"Invalid","detail":"total must be a string","source":{"pointer":"/data/attributes/total"}},"plain"],"message":"no"}"#,
                ])
            },
            parse: |b| activeplatform(Ap::Error, b),
        },
        Parser {
            name: "redact_url",
            seeds: |_| {
                texts(&[
                    "https://user:pw@api.example.test/v1/x?api_token=secret&page=2",
                    LINK_BASE,
                ])
            },
            // Shows a URL of a peer (a `Link` target, a redirect) safely; never refuses.
            parse: |b| {
                let _ = tally::http::redact_url(&String::from_utf8_lossy(b));
                Ok(())
            },
        },
    ]
}

/// Runs the parser called `name` on `data` (for the cargo-fuzz targets).
#[allow(dead_code)]
pub fn run(name: &str, data: &[u8]) {
    let parser = all().into_iter().find(|p| p.name == name);
    if let Some(parser) = parser {
        let _ = (parser.parse)(data);
    }
}
