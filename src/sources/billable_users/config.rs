//! `[sources.billable_users]`: the settings of the Billable Users connector and their checks.
//!
//! The API takes either of two credentials (docs/connectors/billable-users.md): a personal API token, or an OAuth
//! application's client credentials exchanged for a 1-hour access token. Exactly one must be
//! configured, so that nobody has to guess which one a run used.

use crate::http::HttpSettings;
use crate::problem::Problem;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The one place the token may come from; named in every message about a missing or refused
/// token so that the operator knows what to set.
pub const TOKEN_ENV: &str = "TALLY__SOURCES__BILLABLE_USERS__TOKEN";

/// The one place the OAuth client secret may come from; named in every message about a
/// missing or refused secret.
pub const CLIENT_SECRET_ENV: &str = "TALLY__SOURCES__BILLABLE_USERS__CLIENT_SECRET";

/// The largest page the API serves (docs/connectors/billable-users.md); asking for more is silently capped, so a
/// larger setting would only make the checkpoints lie about page sizes.
pub const MAX_PER_PAGE: u32 = 100;

/// Which form of the same list tally reads (docs/connectors/billable-users.md): the JSON array of
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
    /// The client ID of an OAuth application (client credentials grant), instead of `token`.
    /// Not a secret, so it lives in the file; it needs `client_secret` and `oauth_url`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The OAuth application's client secret. Set it ONLY through the environment variable
    /// `TALLY__SOURCES__BILLABLE_USERS__CLIENT_SECRET`, never in a file; `Debug` shows it
    /// redacted. It is sent to `oauth_url` only, never to `base_url`.
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    /// The OAuth service of the API's region, e.g. `https://oauth.example.com` (the API lives on
    /// `api.<host>`, the OAuth service on `oauth.<host>`; the simulator: `http://127.0.0.1:PORT`).
    /// Tokens are requested at `<oauth_url>/token`.
    #[serde(default)]
    pub oauth_url: Option<String>,
    /// Records per page, 1..=100. The largest page is the default because the API allows
    /// 3,600 requests an hour (docs/connectors/billable-users.md).
    #[serde(default = "default_per_page")]
    pub per_page: u32,
    /// The most pages tally reads of one month (the source's one scope) before it fails the
    /// source: a bound on a peer that keeps announcing a next page. Generous by default
    /// (100,000 pages, ten million people at 100 a page); at least 1.
    #[serde(default = "default_max_pages_per_scope")]
    pub max_pages_per_scope: u32,
    /// Pages requested at once, 1..=16, once page 1 has announced the total
    /// (`X-Pagination-Total-Pages`): later pages are addressed by number, so they can be
    /// fetched ahead and are still checked and staged in order. The HTTP client never has more
    /// requests in flight than the peer's `X-RateLimit-Remaining` allows.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
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

/// Four pages in flight hide most of a page's round trip without crowding the peer.
fn default_concurrency() -> u32 {
    4
}

/// The most pages in flight at once.
pub const MAX_CONCURRENCY: u32 = 16;

fn default_max_pages_per_scope() -> u32 {
    crate::sources::paging::DEFAULT_MAX_PAGES_PER_SCOPE
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
        problems.extend(self.validate_credentials(at));
        if !(1..=MAX_PER_PAGE).contains(&self.per_page) {
            problems.push(Problem::new(
                key("per_page"),
                format!(
                    "is {}, must be between 1 and {MAX_PER_PAGE} (the API's largest page)",
                    self.per_page
                ),
            ));
        }
        if self.max_pages_per_scope == 0 {
            problems.push(Problem::new(
                key("max_pages_per_scope"),
                format!(
                    "is 0, must be at least 1 (the default is {})",
                    default_max_pages_per_scope()
                ),
            ));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            problems.push(Problem::new(
                key("concurrency"),
                format!(
                    "is {}, must be between 1 (one page at a time) and {MAX_CONCURRENCY}",
                    self.concurrency
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

    /// The credentials to sign in with, once [`validate`](Self::validate) has found none
    /// missing; `None` otherwise.
    pub fn credentials(&self) -> Option<Credentials<'_>> {
        fn filled(value: Option<&str>) -> Option<&str> {
            value.filter(|v| !v.trim().is_empty())
        }
        match (&self.token, self.uses_client_credentials()) {
            (Some(token), false) => filled(Some(token.expose_secret()))
                .is_some()
                .then_some(Credentials::Token(token)),
            (None, true) => {
                let secret = self.client_secret.as_ref()?;
                filled(Some(secret.expose_secret()))?;
                Some(Credentials::ClientCredentials {
                    client_id: filled(self.client_id.as_deref())?.trim(),
                    client_secret: secret,
                    oauth_url: filled(self.oauth_url.as_deref())?.trim(),
                })
            }
            _ => None,
        }
    }

    /// Whether any part of the client credentials is configured: a part alone is a mistake to
    /// report, not a reason to fall back to the token silently.
    fn uses_client_credentials(&self) -> bool {
        self.client_id.is_some() || self.client_secret.is_some() || self.oauth_url.is_some()
    }

    /// Exactly one of `token` and the client credentials, each complete.
    ///
    /// The file's keys (`client_id`, `oauth_url`) are checked even when the source is disabled;
    /// the secrets from the environment only when it is enabled, as for `token`.
    fn validate_credentials(&self, at: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        let key = |field: &str| format!("{at}.{field}");
        let token_env = crate::problem::env_var_for(&format!("{at}.token"));
        let secret_env = crate::problem::env_var_for(&format!("{at}.client_secret"));
        let in_file = self.client_id.is_some() || self.oauth_url.is_some();
        let oauth = self.uses_client_credentials();

        if oauth && (self.enabled || in_file) {
            match self.client_id.as_deref().map(str::trim) {
                None => problems.push(Problem::new(
                    key("client_id"),
                    "is missing: set the client ID of the OAuth application (client \
                     credentials grant) that tally signs in with",
                )),
                Some("") => problems.push(Problem::new(
                    key("client_id"),
                    "is empty: set the client ID of the OAuth application that tally signs in with",
                )),
                Some(_) => {}
            }
            match self.oauth_url.as_deref() {
                None => problems.push(Problem::new(
                    key("oauth_url"),
                    "is missing: set the OAuth service URL of the API's region, e.g. \
                     https://oauth.example.com when base_url is https://api.example.com/v1 \
                     (tokens are requested at <oauth_url>/token)",
                )),
                Some(url) => {
                    if let Err(message) = crate::http::check_base_url(
                        url,
                        "e.g. https://oauth.example.com",
                        &format!("set the client secret in {secret_env} instead"),
                    ) {
                        problems.push(Problem::new(key("oauth_url"), message));
                    }
                }
            }
        }
        if !self.enabled {
            return problems;
        }
        match (&self.token, oauth) {
            (Some(_), true) => problems.push(Problem::new(
                key("token"),
                format!(
                    "is set together with OAuth client credentials ({}): configure exactly \
                     one; unset {token_env} to sign in with the client credentials, or remove \
                     client_id and oauth_url and unset {secret_env} to use the token",
                    key("client_id")
                ),
            )),
            (None, false) => problems.push(Problem::new(
                key("token"),
                format!(
                    "is missing: set the environment variable {token_env} (a personal API \
                     token), or sign in with OAuth client credentials: client_id and oauth_url \
                     in the file and the secret in {secret_env}"
                ),
            )),
            (Some(token), false) if token.expose_secret().trim().is_empty() => {
                problems.push(Problem::new(
                    key("token"),
                    format!("is empty: set the environment variable {token_env}"),
                ))
            }
            (Some(_), false) => {}
            (None, true) => match &self.client_secret {
                None => problems.push(Problem::new(
                    key("client_secret"),
                    format!("is missing: set the environment variable {secret_env}"),
                )),
                Some(secret) if secret.expose_secret().trim().is_empty() => {
                    problems.push(Problem::new(
                        key("client_secret"),
                        format!("is empty: set the environment variable {secret_env}"),
                    ))
                }
                Some(_) => {}
            },
        }
        problems
    }
}

/// How the source signs in, borrowed from validated settings.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    /// A personal API token, sent as is.
    Token(&'a SecretString),
    /// An OAuth application, exchanged at `<oauth_url>/token` for 1-hour access tokens.
    ClientCredentials {
        client_id: &'a str,
        client_secret: &'a SecretString,
        oauth_url: &'a str,
    },
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
            client_id: None,
            client_secret: None,
            oauth_url: None,
            per_page: 100,
            max_pages_per_scope: 100_000,
            concurrency: 4,
            license_type: "Service desk user".into(),
            format: Format::Json,
            http: HttpSettings::default(),
        }
    }

    /// Valid settings that sign in with OAuth client credentials instead of the token.
    fn oauth() -> BillableUsersSettings {
        BillableUsersSettings {
            token: None,
            client_id: Some("tally-app".into()),
            client_secret: Some(SecretString::from("cl1ent-s3cret")),
            oauth_url: Some("https://oauth.example.com".into()),
            ..valid()
        }
    }

    fn keys(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.at.as_str()).collect()
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
            max_pages_per_scope: 0,
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
                "sources.billable_users.max_pages_per_scope",
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
    fn client_credentials_alone_are_valid_and_chosen() {
        let settings = oauth();
        assert_eq!(settings.validate("sources.billable_users"), vec![]);
        match settings.credentials() {
            Some(Credentials::ClientCredentials {
                client_id,
                oauth_url,
                ..
            }) => {
                assert_eq!(client_id, "tally-app");
                assert_eq!(oauth_url, "https://oauth.example.com");
            }
            other => panic!("expected client credentials, got {other:?}"),
        }
        assert!(matches!(valid().credentials(), Some(Credentials::Token(_))));
    }

    #[test]
    fn a_token_and_client_credentials_together_are_refused() {
        let settings = BillableUsersSettings {
            token: Some(SecretString::from("s3cret-token")),
            ..oauth()
        };
        let problems = settings.validate("sources.billable_users");
        assert_eq!(keys(&problems), ["sources.billable_users.token"]);
        let message = &problems[0].message;
        assert!(message.contains("exactly one"), "{message}");
        assert!(message.contains(TOKEN_ENV), "{message}");
        assert!(message.contains(CLIENT_SECRET_ENV), "{message}");
        assert!(settings.credentials().is_none());
    }

    #[test]
    fn neither_a_token_nor_client_credentials_names_both_ways_to_sign_in() {
        let settings = BillableUsersSettings {
            token: None,
            ..valid()
        };
        let problems = settings.validate("sources.billable_users");
        assert_eq!(keys(&problems), ["sources.billable_users.token"]);
        let message = &problems[0].message;
        assert!(message.contains(TOKEN_ENV), "{message}");
        assert!(message.contains(CLIENT_SECRET_ENV), "{message}");
        assert!(message.contains("client_id"), "{message}");
        assert!(settings.credentials().is_none());
    }

    #[test]
    fn incomplete_client_credentials_name_every_missing_part_at_once() {
        let id_only = BillableUsersSettings {
            client_secret: None,
            oauth_url: None,
            ..oauth()
        };
        let problems = id_only.validate("sources.billable_users");
        assert_eq!(
            keys(&problems),
            [
                "sources.billable_users.oauth_url",
                "sources.billable_users.client_secret"
            ]
        );
        assert!(problems[1].message.contains(CLIENT_SECRET_ENV));

        let secret_only = BillableUsersSettings {
            client_id: None,
            oauth_url: None,
            ..oauth()
        };
        assert_eq!(
            keys(&secret_only.validate("sources.billable_users")),
            [
                "sources.billable_users.client_id",
                "sources.billable_users.oauth_url"
            ]
        );

        let blank = BillableUsersSettings {
            client_id: Some(" ".into()),
            client_secret: Some(SecretString::from("")),
            oauth_url: Some("oauth.example.com".into()),
            ..oauth()
        };
        assert_eq!(
            keys(&blank.validate("sources.billable_users")),
            [
                "sources.billable_users.client_id",
                "sources.billable_users.oauth_url",
                "sources.billable_users.client_secret"
            ]
        );
        assert!(blank.credentials().is_none());
    }

    #[test]
    fn an_oauth_url_with_credentials_in_it_is_refused_without_echoing_them() {
        let settings = BillableUsersSettings {
            oauth_url: Some("https://tally-app:cl1ent-s3cret@oauth.example.com".into()),
            ..oauth()
        };
        let problems = settings.validate("sources.billable_users");
        assert_eq!(keys(&problems), ["sources.billable_users.oauth_url"]);
        assert!(
            !problems[0].message.contains("cl1ent-s3cret"),
            "{problems:?}"
        );
        assert!(
            problems[0].message.contains(CLIENT_SECRET_ENV),
            "{problems:?}"
        );
    }

    #[test]
    fn a_disabled_source_checks_the_files_oauth_keys_but_not_the_secret() {
        let settings = BillableUsersSettings {
            enabled: false,
            client_secret: None,
            oauth_url: None,
            ..oauth()
        };
        assert_eq!(
            keys(&settings.validate("sources.billable_users")),
            ["sources.billable_users.oauth_url"]
        );
    }

    #[test]
    fn debug_never_shows_the_client_secret() {
        let shown = format!("{:?}", oauth());
        assert!(!shown.contains("cl1ent-s3cret"), "{shown}");
        assert!(shown.contains("tally-app"), "{shown}");
    }

    #[test]
    fn the_secret_variables_are_the_ones_the_configuration_reads() {
        use crate::problem::env_var_for;
        assert_eq!(TOKEN_ENV, env_var_for("sources.billable_users.token"));
        assert_eq!(
            CLIENT_SECRET_ENV,
            env_var_for("sources.billable_users.client_secret")
        );
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
        assert_eq!(settings.max_pages_per_scope, 100_000);
        assert!(settings.token.is_none());
        assert!(settings.client_id.is_none() && settings.oauth_url.is_none());
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
    fn client_credentials_are_read_from_their_keys() {
        let settings: BillableUsersSettings = serde_json::from_value(serde_json::json!({
            "base_url": "https://api.example.com/v1",
            "account": "wdc",
            "license_type": "Service desk user",
            "client_id": "tally-app",
            "oauth_url": "https://oauth.example.com",
            "client_secret": "cl1ent-s3cret",
        }))
        .unwrap();
        assert_eq!(settings.validate("sources.billable_users"), vec![]);
        assert_eq!(settings.client_id.as_deref(), Some("tally-app"));
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
