//! `[sources.billable_users]`: the settings of the Billable Users connector and their checks.

use crate::config::Problem;
use crate::http::HttpSettings;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The one place the token may come from; named in every message about a missing or refused
/// token so that the operator knows what to set.
pub const TOKEN_ENV: &str = "TALLY__SOURCES__BILLABLE_USERS__TOKEN";

/// The largest page the API serves (APIS.md §1); asking for more is silently capped, so a
/// larger setting would only make the checkpoints lie about page sizes.
pub const MAX_PER_PAGE: u32 = 100;

/// Which form of the same list tally reads (APIS.md §1): the JSON array of
/// `/account/billable_users` or the CSV export of `/account/billable_users.csv`. Both stage the
/// same records; CSV exists for accounts whose gateway only lets the export through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `GET /account/billable_users` (the default).
    #[default]
    Json,
    /// `GET /account/billable_users.csv`: RFC 4180, a header row, formula guards stripped.
    Csv,
}

/// `[sources.billable_users]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillableUsersSettings {
    /// Whether the source is read at all; `false` keeps its configuration without using it
    /// (e.g. while a token is being renewed).
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// The API root including the version, e.g. `https://api.example.com/v1` (the simulator:
    /// `http://127.0.0.1:PORT/v1`).
    pub base_url: String,
    /// The account id sent as `X-4me-Account`; it scopes the data, and is the source's only
    /// scope.
    pub account: String,
    /// The API token (`Authorization: Bearer`). Set it ONLY through the environment variable
    /// `TALLY__SOURCES__BILLABLE_USERS__TOKEN`, never in a file; `Debug` shows it redacted.
    #[serde(default)]
    pub token: Option<SecretString>,
    /// Records per page, 1..=100. The largest page is the default because the API allows
    /// 3,600 requests an hour (DESIGN.md "Talking to peers").
    #[serde(default = "default_per_page")]
    pub per_page: u32,
    /// The license type every billable person is billed as, e.g. `Service desk user`; it must
    /// match a license type in the pricing table.
    pub license_type: String,
    /// `json` (default) or `csv`: which form of the list to read. Same paging, same records.
    #[serde(default)]
    pub format: Format,
    /// Timeouts and retries for this peer.
    #[serde(default)]
    pub http: HttpSettings,
}

fn default_enabled() -> bool {
    true
}

fn default_per_page() -> u32 {
    MAX_PER_PAGE
}

impl BillableUsersSettings {
    /// Every problem at once, each naming its full key (`at` is `sources.billable_users`).
    ///
    /// A disabled source is still checked, except for its token: an operator disables a source
    /// precisely when its token is missing or being replaced.
    pub fn validate(&self, at: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        let key = |field: &str| format!("{at}.{field}");

        if let Err(message) = crate::http::check_base_url(
            &self.base_url,
            "e.g. https://api.example.com/v1",
            &format!("set the token in {TOKEN_ENV} instead"),
        ) {
            problems.push(Problem::new(key("base_url"), message));
        }
        if self.account.trim().is_empty() {
            problems.push(Problem::new(
                key("account"),
                "is empty: set the account id that is sent as X-4me-Account",
            ));
        } else if !self.account.trim().chars().all(|c| c.is_ascii_graphic()) {
            // Account ids are short ASCII names (e.g. `wdc`); anything else cannot be sent in
            // an HTTP header and would fail every request.
            problems.push(Problem::new(
                key("account"),
                format!(
                    "{:?} is not an account id (visible ASCII, no spaces), e.g. \"wdc\"",
                    self.account
                ),
            ));
        }
        if self.enabled {
            let env = crate::config::env_var_for(&format!("{at}.token"));
            match &self.token {
                None => problems.push(Problem::new(
                    key("token"),
                    format!("is missing: set the environment variable {env}"),
                )),
                Some(token) if token.expose_secret().trim().is_empty() => {
                    problems.push(Problem::new(
                        key("token"),
                        format!("is empty: set the environment variable {env}"),
                    ))
                }
                Some(_) => {}
            }
        }
        if !(1..=MAX_PER_PAGE).contains(&self.per_page) {
            problems.push(Problem::new(
                key("per_page"),
                format!(
                    "is {}, must be between 1 and {MAX_PER_PAGE} (the API's largest page)",
                    self.per_page
                ),
            ));
        }
        if self.license_type.trim().is_empty() {
            problems.push(Problem::new(
                key("license_type"),
                "is empty: name the license type billable people are billed as, as in the pricing table",
            ));
        }
        problems.extend(self.http.validate(at));
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> BillableUsersSettings {
        BillableUsersSettings {
            enabled: true,
            base_url: "https://api.example.com/v1".into(),
            account: "wdc".into(),
            token: Some(SecretString::from("s3cret-token")),
            per_page: 100,
            license_type: "Service desk user".into(),
            format: Format::Json,
            http: HttpSettings::default(),
        }
    }

    #[test]
    fn valid_settings_have_no_problems() {
        assert_eq!(valid().validate("sources.billable_users"), vec![]);
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_full_key() {
        let settings = BillableUsersSettings {
            base_url: "ftp://api.example.com".into(),
            account: " ".into(),
            token: None,
            per_page: 500,
            license_type: String::new(),
            ..valid()
        };
        let problems = settings.validate("sources.billable_users");
        let keys: Vec<&str> = problems.iter().map(|p| p.at.as_str()).collect();
        assert_eq!(
            keys,
            [
                "sources.billable_users.base_url",
                "sources.billable_users.account",
                "sources.billable_users.token",
                "sources.billable_users.per_page",
                "sources.billable_users.license_type",
            ]
        );
        assert!(
            problems[2]
                .message
                .contains("TALLY__SOURCES__BILLABLE_USERS__TOKEN")
        );
    }

    #[test]
    fn a_base_url_that_is_not_a_url_is_refused() {
        for bad in [
            "",
            "api.example.com/v1",
            "https://u:p@x.example/v1",
            "https://x/v1?a=1",
        ] {
            let settings = BillableUsersSettings {
                base_url: bad.into(),
                ..valid()
            };
            let problems = settings.validate("sources.billable_users");
            assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
            assert_eq!(problems[0].at, "sources.billable_users.base_url");
        }
    }

    #[test]
    fn an_account_that_cannot_be_sent_as_a_header_is_refused() {
        for bad in ["w dc", "w\u{7}dc", "Åcme"] {
            let settings = BillableUsersSettings {
                account: bad.into(),
                ..valid()
            };
            let problems = settings.validate("sources.billable_users");
            assert_eq!(problems.len(), 1, "{bad:?}: {problems:?}");
            assert_eq!(problems[0].at, "sources.billable_users.account");
        }
    }

    #[test]
    fn a_disabled_source_needs_no_token() {
        let settings = BillableUsersSettings {
            enabled: false,
            token: None,
            ..valid()
        };
        assert_eq!(settings.validate("sources.billable_users"), vec![]);
    }

    #[test]
    fn debug_never_shows_the_token() {
        let shown = format!("{:?}", valid());
        assert!(!shown.contains("s3cret-token"), "{shown}");
    }

    #[test]
    fn defaults_apply_and_unknown_keys_are_refused() {
        let settings: BillableUsersSettings = serde_json::from_value(serde_json::json!({
            "base_url": "https://api.example.com/v1",
            "account": "wdc",
            "license_type": "Service desk user",
        }))
        .unwrap();
        assert!(settings.enabled);
        assert_eq!(settings.per_page, 100);
        assert!(settings.token.is_none());
        assert_eq!(settings.http, HttpSettings::default());
        assert_eq!(settings.format, Format::Json);

        let typo = serde_json::from_value::<BillableUsersSettings>(serde_json::json!({
            "base_url": "https://api.example.com/v1",
            "account": "wdc",
            "license_type": "Service desk user",
            "perpage": 50,
        }));
        assert!(typo.unwrap_err().to_string().contains("perpage"));
    }

    #[test]
    fn the_format_is_json_or_csv_and_nothing_else() {
        let with = |format: &str| {
            serde_json::from_value::<BillableUsersSettings>(serde_json::json!({
                "base_url": "https://api.example.com/v1",
                "account": "wdc",
                "license_type": "Service desk user",
                "format": format,
            }))
        };
        assert_eq!(with("csv").unwrap().format, Format::Csv);
        assert_eq!(with("json").unwrap().format, Format::Json);
        let error = with("xml").unwrap_err().to_string();
        assert!(error.contains("xml") && error.contains("csv"), "{error}");
    }
}
