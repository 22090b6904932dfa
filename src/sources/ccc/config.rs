//! `[sources.ccc]`: the settings of the CCC secure-messaging connector and their checks.

use super::guid;
use super::usage::Metric;
use crate::http::HttpSettings;
use crate::problem::Problem;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The one place the password may come from; named in every message about a missing or
/// refused password so that the operator knows what to set.
pub const PASSWORD_ENV: &str = "TALLY__SOURCES__CCC__PASSWORD";

/// The API's default page of users (docs/connectors/ccc.md).
pub const DEFAULT_PAGE_SIZE: u32 = 25;

/// The largest `PageSize` tally asks for. The vendor publishes only the default (25); 100 is
/// the ServiceStack AutoQuery convention and what the simulator enforces (a larger value is a
/// `400`), so a misconfiguration fails at start-up rather than on the first page.
pub const MAX_PAGE_SIZE: u32 = 100;

/// More concurrent usage calls than this would look like an attack to a peer that publishes
/// no rate limits; the bound keeps a typo (`800`) from becoming one.
pub const MAX_CONCURRENCY: u32 = 64;

/// `[sources.ccc]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CccSettings {
    /// Whether the source is read at all; `false` keeps its configuration without using it
    /// (e.g. while the password is being changed).
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// The API root, e.g. `https://api.secure-messaging.com/api` (the simulator:
    /// `http://127.0.0.1:PORT/api`); tally appends `v1/login` and `services/...`.
    pub base_url: String,
    /// The API user that signs in (`POST /api/v1/login`).
    pub username: String,
    /// The API user's password. Set it ONLY through the environment variable
    /// `TALLY__SOURCES__CCC__PASSWORD`, never in a file; `Debug` shows it redacted.
    #[serde(default)]
    pub password: Option<SecretString>,
    /// The service GUIDs to bill, in any spelling (`{6F9619FF-...}`, `6f9619ff...`). Each is
    /// one scope of the source (its own checkpoint) and the customer key of its records.
    #[serde(default)]
    pub services: Vec<String>,
    /// Users per page (`PageSize`), 1..=100; the API's default is 25.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// The most pages of users tally reads of one service before it fails the source: a bound
    /// on a peer that keeps announcing a next page. Generous by default (100,000 pages); at
    /// least 1.
    #[serde(default = "default_max_pages_per_scope")]
    pub max_pages_per_scope: u32,
    /// Usage calls in flight at once (one call per user, or per user and day when `daily`),
    /// 1..=64.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Services extracted side by side, 1..=32 (default 4); each has its own checkpoint. The
    /// usage calls in flight are `concurrency` per service. Set 1 where the account's rate
    /// limit is shared by all its services and tight.
    #[serde(default = "crate::sources::default_scopes_at_once")]
    pub scopes_at_once: u32,
    /// `false` (default): one `PeriodType=Monthly` call per user with `Period` = the month's
    /// first day. `true`: one `PeriodType=Daily` call per user and day of the month, summed;
    /// for installations whose monthly figures are not trusted or not available.
    #[serde(default)]
    pub daily: bool,
    /// `groupType` → license type, matched case-insensitively (environment variables arrive
    /// lower-cased). A user whose group has no entry becomes an `unmapped_license` exception.
    #[serde(default = "default_licenses")]
    pub licenses: BTreeMap<String, String>,
    /// Metered quantity → license type, e.g. `messages_sent = "Secure messaging – Messages"`.
    /// Names: `messages_sent`, `messages_received`, `attachments`, `attachment_bytes` (the
    /// UserUsage totals `totalMessagesSent`, `totalMessagesReceived`, `totalAttachmentsCount`,
    /// `totalAttachmentsSize`). Only configured quantities are staged. Default: none.
    #[serde(default)]
    pub metered: BTreeMap<String, String>,
    /// Timeouts and retries for this peer.
    #[serde(default)]
    pub http: HttpSettings,
}

fn default_enabled() -> bool {
    true
}

fn default_max_pages_per_scope() -> u32 {
    crate::sources::paging::DEFAULT_MAX_PAGES_PER_SCOPE
}

fn default_page_size() -> u32 {
    DEFAULT_PAGE_SIZE
}

fn default_concurrency() -> u32 {
    8
}

/// The two documented groups, billed as the license types of the pricing examples.
pub fn default_licenses() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "Professional".to_owned(),
            "Secure messaging – Professional".to_owned(),
        ),
        ("Guest".to_owned(), "Secure messaging – Guest".to_owned()),
    ])
}

impl CccSettings {
    /// Every problem at once, each naming its full key (`at` is `sources.ccc`).
    ///
    /// A disabled source is still checked, except for its password: an operator disables a
    /// source precisely when its password is missing or being replaced.
    pub fn validate(&self, at: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        let key = |field: &str| format!("{at}.{field}");

        if let Err(message) = crate::http::check_base_url(
            &self.base_url,
            "e.g. https://api.secure-messaging.com/api",
            &format!("set sources.ccc.username and {PASSWORD_ENV} instead"),
        ) {
            problems.push(Problem::new(key("base_url"), message));
        }
        if self.username.trim().is_empty() {
            problems.push(Problem::new(
                key("username"),
                "is empty: set the API user that signs in to CCC",
            ));
        }
        if self.enabled {
            let env = crate::problem::env_var_for(&format!("{at}.password"));
            match &self.password {
                None => problems.push(Problem::new(
                    key("password"),
                    format!("is missing: set the environment variable {env}"),
                )),
                Some(p) if p.expose_secret().is_empty() => problems.push(Problem::new(
                    key("password"),
                    format!("is empty: set the environment variable {env}"),
                )),
                Some(_) => {}
            }
        }
        if self.services.is_empty() {
            problems.push(Problem::new(
                key("services"),
                "is empty: list the service GUIDs to bill, e.g. [\"6f9619ff-8b86-d011-b42d-00cf4fc964ff\"]",
            ));
        }
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, service) in self.services.iter().enumerate() {
            let at_i = format!("{at}.services[{i}]");
            match guid::normalize(service) {
                Some(normal) => {
                    if let Some(first) = seen.insert(normal, i) {
                        problems.push(Problem::new(
                            at_i,
                            format!(
                                "{service:?} is the same service as services[{first}]: \
                                 listing it twice would bill it twice"
                            ),
                        ));
                    }
                }
                None => problems.push(Problem::new(
                    at_i,
                    format!("{service:?} is not a GUID (32 hex digits, dashes and braces allowed)"),
                )),
            }
        }
        if !(1..=MAX_PAGE_SIZE).contains(&self.page_size) {
            problems.push(Problem::new(
                key("page_size"),
                format!(
                    "is {}, must be between 1 and {MAX_PAGE_SIZE}",
                    self.page_size
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
                    "is {}, must be between 1 and {MAX_CONCURRENCY}",
                    self.concurrency
                ),
            ));
        }
        problems.extend(crate::sources::check_scopes_at_once(
            self.scopes_at_once,
            key("scopes_at_once"),
        ));
        let mut groups: BTreeMap<String, &str> = BTreeMap::new();
        for (group, license) in &self.licenses {
            let at_g = format!("{at}.licenses.{group}");
            if group.trim().is_empty() {
                problems.push(Problem::new(at_g.clone(), "has an empty groupType"));
            }
            if license.trim().is_empty() {
                problems.push(Problem::new(
                    at_g.clone(),
                    "is empty: name the license type as in the pricing table",
                ));
            }
            if Metric::parse(group).is_some() {
                problems.push(Problem::new(
                    at_g.clone(),
                    "is the name of a metered quantity; put it under metered instead",
                ));
            }
            if let Some(other) = groups.insert(group.trim().to_lowercase(), group) {
                problems.push(Problem::new(
                    at_g,
                    format!(
                        "differs from {other:?} only in case; groupTypes are matched ignoring case"
                    ),
                ));
            }
        }
        for (metric, license) in &self.metered {
            let at_m = format!("{at}.metered.{metric}");
            if Metric::parse(metric).is_none() {
                problems.push(Problem::new(
                    at_m.clone(),
                    format!(
                        "is not a metered quantity; use one of {}",
                        Metric::ALL.map(|m| m.name()).join(", ")
                    ),
                ));
            }
            if license.trim().is_empty() {
                problems.push(Problem::new(
                    at_m,
                    "is empty: name the license type as in the pricing table",
                ));
            }
        }
        problems.extend(self.http.validate(at));
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> CccSettings {
        CccSettings {
            enabled: true,
            base_url: "https://api.secure-messaging.com/api".into(),
            username: "billing@example.com".into(),
            password: Some(SecretString::from("s3cret")),
            services: vec!["6F9619FF-8B86-D011-B42D-00CF4FC964FF".into()],
            page_size: 25,
            max_pages_per_scope: 100_000,
            concurrency: 8,
            scopes_at_once: 4,
            daily: false,
            licenses: default_licenses(),
            metered: BTreeMap::new(),
            http: HttpSettings::default(),
        }
    }

    #[test]
    fn valid_settings_have_no_problems() {
        assert_eq!(valid().validate("sources.ccc"), vec![]);
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_full_key() {
        let settings = CccSettings {
            base_url: "ftp://x".into(),
            username: " ".into(),
            password: None,
            services: vec![
                "abc".into(),
                "{6f9619ff-8b86-d011-b42d-00cf4fc964ff}".into(),
                "6F9619FF8B86D011B42D00CF4FC964FF".into(),
            ],
            page_size: 101,
            max_pages_per_scope: 0,
            concurrency: 0,
            scopes_at_once: 0,
            licenses: BTreeMap::from([
                ("Guest".into(), String::new()),
                ("guest".into(), "Secure messaging – Guest".into()),
            ]),
            metered: BTreeMap::from([("messages".into(), "M".into())]),
            ..valid()
        };
        let problems = settings.validate("sources.ccc");
        let keys: Vec<&str> = problems.iter().map(|p| p.at.as_str()).collect();
        assert_eq!(
            keys,
            [
                "sources.ccc.base_url",
                "sources.ccc.username",
                "sources.ccc.password",
                "sources.ccc.services[0]",
                "sources.ccc.services[2]",
                "sources.ccc.page_size",
                "sources.ccc.max_pages_per_scope",
                "sources.ccc.concurrency",
                "sources.ccc.scopes_at_once",
                "sources.ccc.licenses.Guest",
                "sources.ccc.licenses.guest",
                "sources.ccc.metered.messages",
            ],
            "{problems:#?}"
        );
        assert!(problems[2].message.contains(PASSWORD_ENV));
    }

    #[test]
    fn a_disabled_source_needs_no_password() {
        let settings = CccSettings {
            enabled: false,
            password: None,
            ..valid()
        };
        assert_eq!(settings.validate("sources.ccc"), vec![]);
    }

    #[test]
    fn defaults_fill_the_optional_keys_and_typos_are_refused() {
        let settings: CccSettings = serde_json::from_value(serde_json::json!({
            "base_url": "https://api.secure-messaging.com/api",
            "username": "billing",
            "services": ["6f9619ff8b86d011b42d00cf4fc964ff"],
        }))
        .unwrap();
        assert!(settings.enabled);
        assert!(!settings.daily);
        assert_eq!(settings.page_size, 25);
        assert_eq!(settings.max_pages_per_scope, 100_000);
        assert_eq!(settings.concurrency, 8);
        assert_eq!(settings.licenses, default_licenses());
        assert!(settings.metered.is_empty());
        let typo = serde_json::from_value::<CccSettings>(serde_json::json!({
            "base_url": "https://x/api", "username": "u", "pagesize": 10,
        }));
        assert!(typo.unwrap_err().to_string().contains("pagesize"));
    }

    #[test]
    fn debug_hides_the_password() {
        let shown = format!("{:?}", valid());
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
