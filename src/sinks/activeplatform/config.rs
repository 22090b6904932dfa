//! `[sinks.activeplatform]`: where ActivePlatform is, how tally signs in, and how customers are
//! looked up there.

use crate::domain::Currency;
use crate::http::HttpSettings;
use crate::problem::Problem;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::fmt;

/// The environment variable the API token comes from (never a file).
pub const API_TOKEN_ENV: &str = "TALLY__SINKS__ACTIVEPLATFORM__API_TOKEN";

/// Largest page tally asks ActivePlatform for (accounts and corrections). The vendor does not
/// publish a maximum; the simulator caps `per_page` at 100 silently, so a larger setting could
/// end a listing early (a short page ends it) and is refused by [`ActivePlatformSettings::validate`].
pub const MAX_PER_PAGE: u32 = 100;

/// `[sinks.activeplatform]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivePlatformSettings {
    /// The installation's root, e.g. `https://billing.example.com/` (the simulator:
    /// `http://127.0.0.1:PORT/`); `api/vendor/v1/...` and `api/v3/...` are joined to it.
    pub base_url: String,
    /// The reseller whose corrections tally writes (`/api/v3/resellers/{reseller_id}/...`).
    pub reseller_id: String,
    /// The API token of the manager tally acts as. Set it ONLY through the environment variable
    /// `TALLY__SINKS__ACTIVEPLATFORM__API_TOKEN`; it travels as the `api_token` query parameter
    /// on v1, so every URL tally shows is redacted, and `Debug` hides it.
    #[serde(default)]
    pub api_token: Option<SecretString>,
    /// Name of the account custom attribute that holds a source's customer key.
    #[serde(default = "default_lookup_attribute")]
    pub lookup_attribute: String,
    /// Sources whose customers, when missing from the customer map, are looked up by
    /// `lookup_attribute` and billed here (e.g. `["ccc", "genesys"]`). Default: none.
    #[serde(default)]
    pub lookup_sources: Vec<String>,
    /// The currency of ActivePlatform accounts that `[[billing.accounts]]` gives no currency
    /// (by account id or e-mail address), ISO 4217.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Page size for the accounts and corrections listings (1 to 100).
    #[serde(default = "default_per_page")]
    pub per_page: u32,
    /// Timeouts and retries of the ActivePlatform client.
    #[serde(default)]
    pub http: HttpSettings,
}

fn default_lookup_attribute() -> String {
    "tally_customer_key".into()
}

fn default_currency() -> String {
    "EUR".into()
}

fn default_per_page() -> u32 {
    MAX_PER_PAGE
}

impl fmt::Debug for ActivePlatformSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActivePlatformSettings")
            .field("base_url", &crate::http::redact_url(&self.base_url))
            .field("reseller_id", &self.reseller_id)
            .field("api_token", &self.api_token.as_ref().map(|_| "[REDACTED]"))
            .field("lookup_attribute", &self.lookup_attribute)
            .field("lookup_sources", &self.lookup_sources)
            .field("currency", &self.currency)
            .field("per_page", &self.per_page)
            .field("http", &self.http)
            .finish()
    }
}

impl ActivePlatformSettings {
    /// Settings with every default, for `base_url` and `reseller_id` (the token still has to
    /// be set).
    pub fn new(base_url: impl Into<String>, reseller_id: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            reseller_id: reseller_id.into(),
            api_token: None,
            lookup_attribute: default_lookup_attribute(),
            lookup_sources: Vec::new(),
            currency: default_currency(),
            per_page: default_per_page(),
            http: HttpSettings::default(),
        }
    }

    /// Every problem at once, each with its full key path under `at` (`sinks.activeplatform`).
    pub fn validate(&self, at: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        match reqwest::Url::parse(self.base_url.trim()) {
            Ok(url)
                if matches!(url.scheme(), "http" | "https")
                    && url.host().is_some()
                    && url.query().is_none() => {}
            _ => problems.push(Problem::new(
                format!("{at}.base_url"),
                format!(
                    "{:?} is not an http(s) URL without a query; expected e.g. \
                     \"https://billing.example.com/\"",
                    crate::http::redact_url(&self.base_url)
                ),
            )),
        }
        let reseller = self.reseller_id.trim();
        if reseller.is_empty() {
            problems.push(Problem::new(
                format!("{at}.reseller_id"),
                "is empty: set the ActivePlatform reseller id tally writes corrections for",
            ));
        } else if !reseller
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            problems.push(Problem::new(
                format!("{at}.reseller_id"),
                format!(
                    "{:?} is not an ActivePlatform id (letters, digits, '-' and '_' only)",
                    self.reseller_id
                ),
            ));
        }
        if self
            .api_token
            .as_ref()
            .is_none_or(|s| s.expose_secret().trim().is_empty())
        {
            problems.push(Problem::new(
                format!("{at}.api_token"),
                format!("is missing: set the environment variable {API_TOKEN_ENV}"),
            ));
        }
        if self.lookup_attribute.trim().is_empty() {
            problems.push(Problem::new(
                format!("{at}.lookup_attribute"),
                "is empty: name the account custom attribute that holds the customer key \
                 (default \"tally_customer_key\")",
            ));
        }
        if self.currency.trim().parse::<Currency>().is_err() {
            problems.push(Problem::new(
                format!("{at}.currency"),
                format!(
                    "{:?} is not an ISO 4217 currency tally knows (e.g. \"EUR\")",
                    self.currency
                ),
            ));
        }
        if !(1..=MAX_PER_PAGE).contains(&self.per_page) {
            problems.push(Problem::new(
                format!("{at}.per_page"),
                format!(
                    "{} is out of range: use 1 to {MAX_PER_PAGE} (a page shorter than asked \
                     ends a listing, so a size ActivePlatform caps would lose accounts)",
                    self.per_page
                ),
            ));
        }
        problems.extend(self.http.validate(at));
        problems
    }
}
