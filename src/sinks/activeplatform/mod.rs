//! The ActivePlatform billing system (docs/connectors/activeplatform.md): customers are looked up among its
//! accounts (by e-mail or by a custom attribute holding a source's customer key), and invoice
//! lines become v3 "corrections" on those accounts.
//!
//! ActivePlatform has no idempotency key, so each correction's comment starts with tally's
//! marker `[tally:<idempotency key>]`, and recovery ([`ActivePlatform::find`]) reads the
//! account's corrections for it. The v1 API takes the token as the `api_token` query parameter:
//! every URL and message tally shows is redacted, and messages are scrubbed of the token.

mod api;
pub use api::{Answer as ActivePlatformAnswer, parse as parse_answer};
pub mod config;
mod reach;
mod rules;

pub use config::{API_TOKEN_ENV, ActivePlatformSettings, MAX_PER_PAGE};

use crate::domain::{Currency, InvoiceLine, LedgerLine};
use crate::http::{HttpClient, HttpError, Idempotency};
use crate::sinks::PushError;
use api::{CorrectionList, CorrectionResource, OneCorrection, RawAccount};
use secrecy::{ExposeSecret, SecretString};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

/// The external id recorded for a revision whose amount is zero (a quantity change inside an
/// included quantity, say): a correction of 0.00 bills nothing, so nothing is sent.
pub const ZERO_AMOUNT_ID: &str = "none:zero-amount";

/// JSON:API's media type, sent and accepted on v3.
const JSON_API: &str = "application/vnd.api+json";

/// How a source's customer is found among ActivePlatform's accounts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AccountKey {
    /// The account's contact e-mail (compared case-insensitively).
    Email(String),
    /// A custom attribute of the account: `name` holds `value` (GUIDs compare by canonical
    /// form, anything else exactly once trimmed).
    Attribute {
        /// The attribute's name, e.g. `tally_customer_key`.
        name: String,
        /// The source's customer key.
        value: String,
    },
}

impl fmt::Display for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccountKey::Email(email) => write!(f, "e-mail {email:?}"),
            AccountKey::Attribute { name, value } => write!(f, "attribute {name} = {value:?}"),
        }
    }
}

/// An ActivePlatform account, as tally reports and bills it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// AP's account id, as text (the billing account of lines bound for ActivePlatform).
    pub id: String,
    /// The account's name.
    pub name: String,
    /// Its contact e-mail (empty when AP has none).
    pub email: String,
    /// Its status as AP reports it (e.g. `active`).
    pub status: String,
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "account {} {:?}", self.id, self.name)?;
        if !self.email.is_empty() {
            write!(f, " <{}>", self.email)?;
        }
        if !self.status.is_empty() {
            write!(f, " ({})", self.status)?;
        }
        Ok(())
    }
}

/// Why a customer could not be resolved to exactly one account.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// No account holds the key.
    #[error("no ActivePlatform account has {key}: {}", fix_hint(key))]
    NotFound {
        /// What was looked for.
        key: AccountKey,
    },
    /// Several accounts hold the key; tally never picks one.
    #[error(
        "{} ActivePlatform accounts have {key}: {}; tally does not guess which one to bill: {}",
        candidates.len(),
        list_accounts(candidates),
        fix_hint(key)
    )]
    Ambiguous {
        /// What was looked for.
        key: AccountKey,
        /// Every account that holds it.
        candidates: Vec<Account>,
    },
    /// ActivePlatform could not be asked (its answer, or no answer, is in the message).
    #[error("looking up an ActivePlatform account failed: {0:#}")]
    Failed(anyhow::Error),
}

fn fix_hint(key: &AccountKey) -> String {
    match key {
        AccountKey::Email(_) => "fix the account's e-mail in ActivePlatform so that exactly one \
             account has it, or map the customer to its account id in customers.csv"
            .to_owned(),
        AccountKey::Attribute { name, value } => format!(
            "set the custom attribute {name} = {value:?} on exactly one account in \
             ActivePlatform, or map the customer to its account id in customers.csv"
        ),
    }
}

fn list_accounts(accounts: &[Account]) -> String {
    accounts
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A finished lookup, kept for the rest of the run (failures are not kept: they may pass).
#[derive(Debug, Clone)]
enum Cached {
    Found(Account),
    NotFound,
    Ambiguous(Vec<Account>),
}

impl Cached {
    fn into_result(self, key: &AccountKey) -> Result<Account, LookupError> {
        match self {
            Cached::Found(a) => Ok(a),
            Cached::NotFound => Err(LookupError::NotFound { key: key.clone() }),
            Cached::Ambiguous(candidates) => Err(LookupError::Ambiguous {
                key: key.clone(),
                candidates,
            }),
        }
    }
}

/// The ActivePlatform connector. Its `Debug` does not show the API token.
pub struct ActivePlatform {
    // Boxed so that the `Sink` enum stays small (clippy::large_enum_variant).
    http: Box<HttpClient>,
    base: Box<reqwest::Url>,
    reseller_id: String,
    token: SecretString,
    lookup_attribute: String,
    lookup_sources: Vec<String>,
    currency: Currency,
    per_page: u32,
    /// The whole accounts listing, fetched once per run (attribute lookups read it).
    accounts: Mutex<Option<Arc<Vec<RawAccount>>>>,
    /// Serialises fetching the listing, so that concurrent lookups fetch it once.
    fetching: tokio::sync::Mutex<()>,
    /// Finished lookups by key.
    lookups: Mutex<HashMap<AccountKey, Cached>>,
}

impl fmt::Debug for ActivePlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActivePlatform")
            .field("base", &self.base.as_str())
            .field("reseller_id", &self.reseller_id)
            .field("lookup_attribute", &self.lookup_attribute)
            .field("currency", &self.currency.code())
            .field("per_page", &self.per_page)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not make the cache unusable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ActivePlatform {
    /// A connector for valid settings; every configuration problem is reported at once.
    pub fn new(settings: &ActivePlatformSettings) -> anyhow::Result<Self> {
        crate::problem::ConfigError::check(settings.validate("sinks.activeplatform"))?;
        let mut base_url = settings.base_url.trim().to_owned();
        // `Url::join` drops the last path segment of a base without a trailing slash.
        if !base_url.ends_with('/') {
            base_url.push('/');
        }
        let base = reqwest::Url::parse(&base_url)?;
        let token = settings
            .api_token
            .clone()
            .ok_or_else(|| anyhow::anyhow!("set the environment variable {API_TOKEN_ENV}"))?;
        let currency: Currency = settings.currency.trim().parse()?;
        Ok(Self {
            http: Box::new(HttpClient::new(&settings.http)?),
            base: Box::new(base),
            reseller_id: settings.reseller_id.trim().to_owned(),
            token,
            lookup_attribute: settings.lookup_attribute.trim().to_owned(),
            lookup_sources: settings
                .lookup_sources
                .iter()
                .map(|s| s.trim().to_owned())
                .collect(),
            currency,
            per_page: settings.per_page,
            accounts: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            lookups: Mutex::new(HashMap::new()),
        })
    }

    /// Are `source`'s customers missing from the customer map looked up here
    /// (`sinks.activeplatform.lookup_sources`)?
    pub fn looks_up(&self, source: &str) -> bool {
        self.lookup_sources.iter().any(|s| s == source)
    }

    /// The currency of ActivePlatform accounts that `billing.accounts` gives none.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The key that finds a source's customer by the configured attribute
    /// (`sinks.activeplatform.lookup_attribute`).
    pub fn attribute_key(&self, customer_key: &str) -> AccountKey {
        AccountKey::Attribute {
            name: self.lookup_attribute.clone(),
            value: customer_key.to_owned(),
        }
    }

    /// Forgets the accounts listing and every lookup, so that the next lookup reads
    /// ActivePlatform again (call it between runs).
    pub fn clear_cache(&self) {
        *lock(&self.accounts) = None;
        lock(&self.lookups).clear();
    }

    /// The one account that holds `key`. An e-mail is asked with `filters[email]`; an
    /// attribute is matched in the whole accounts listing (read once, then cached), in either
    /// shape of `custom_attributes`. Zero or several matches are errors that name what to fix.
    pub async fn find_account(&self, key: &AccountKey) -> Result<Account, LookupError> {
        if let Some(cached) = lock(&self.lookups).get(key).cloned() {
            return cached.into_result(key);
        }
        let mut matches: Vec<Account> = match key {
            AccountKey::Email(email) => {
                if email.trim().is_empty() {
                    return Err(LookupError::NotFound { key: key.clone() });
                }
                // AP may match the filter loosely; the comparison here is exact.
                self.list_accounts(Some(email.trim()))
                    .await
                    .map_err(LookupError::Failed)?
                    .iter()
                    .filter(|a| rules::emails_match(email, &a.email))
                    .map(to_account)
                    .collect()
            }
            AccountKey::Attribute { name, value } => self
                .all_accounts()
                .await
                .map_err(LookupError::Failed)?
                .iter()
                .filter(|a| has_attribute(a, name, value))
                .map(to_account)
                .collect(),
        };
        // An account seen on two pages (the listing shifted while paging) is one account.
        let mut seen = HashSet::new();
        matches.retain(|a| seen.insert(a.id.clone()));
        let cached = match matches.len() {
            0 => Cached::NotFound,
            1 => Cached::Found(matches.remove(0)),
            _ => Cached::Ambiguous(matches),
        };
        lock(&self.lookups).insert(key.clone(), cached.clone());
        cached.into_result(key)
    }

    /// Can this line be billed in ActivePlatform? Pure: the billing account must be an AP
    /// account id, the amount at most two decimals. The currency is the account's, decided
    /// while mapping (`billing.accounts`, else [`currency`](Self::currency)): a correction
    /// carries no currency, it is in the account's.
    pub fn check(&self, line: &InvoiceLine) -> Result<(), String> {
        self.account_id(line.key.billing_account.as_str())?;
        rules::total_text(line.amount)?;
        Ok(())
    }

    /// Phase one: the marker `tally:<idempotency key>` that the correction's comment will
    /// carry, for [`find`](Self::find). Reads nothing: the marker alone identifies the
    /// revision. `None` for a zero amount, which is never sent.
    pub async fn prepare(&self, line: &LedgerLine) -> anyhow::Result<Option<String>> {
        if line.amount.is_zero() {
            return Ok(None);
        }
        Ok(Some(rules::marker_for(line)))
    }

    /// Sends one revision as a correction on the line's account (period = the month, total =
    /// this revision's amount, the delta for an adjustment) and returns the correction's id.
    ///
    /// The POST is never re-sent blindly: a timeout, 5xx or broken connection is
    /// [`PushError::Uncertain`], resolved by [`find`](Self::find); a 4xx is
    /// [`PushError::Rejected`] with ActivePlatform's errors. A zero amount is not sent
    /// ([`ZERO_AMOUNT_ID`]).
    pub async fn push(&self, line: &LedgerLine) -> Result<String, PushError> {
        let key = &line.idempotency_key;
        if line.amount.is_zero() {
            return Ok(ZERO_AMOUNT_ID.to_owned());
        }
        let reject = |m: String| PushError::Rejected(format!("{key}: {m}"));
        let account_id = self
            .account_id(line.key.billing_account.as_str())
            .map_err(reject)?;
        let total = rules::total_text(line.amount).map_err(reject)?;
        let marker = line
            .push_marker
            .clone()
            .unwrap_or_else(|| rules::marker_for(line));
        let body = serde_json::json!({
            "data": {
                "type": "corrections",
                "attributes": {
                    "account_id": account_id,
                    "period_from": line.key.period.first_day().format("%Y-%m-%d").to_string(),
                    "period_to": line.key.period.last_day().format("%Y-%m-%d").to_string(),
                    "total": total,
                    "included_invoice": true,
                    "comment": rules::comment(line, &marker),
                }
            }
        });
        let body = serde_json::to_vec(&body).map_err(|e| reject(e.to_string()))?;
        let url = self.corrections_url();
        let result = self
            .http
            .send(Idempotency::NotIdempotent, |client| {
                client
                    .post(url.clone())
                    .header("X-Api-Token", self.token.expose_secret())
                    .header(reqwest::header::CONTENT_TYPE, JSON_API)
                    .header(reqwest::header::ACCEPT, JSON_API)
                    .body(body.clone())
            })
            .await;
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                let message = format!("{key}: {}", self.describe(&e));
                return Err(if e.surely_not_processed() {
                    PushError::Rejected(message)
                } else {
                    PushError::Uncertain(format!(
                        "{message}; ActivePlatform may hold the correction: tally reads the \
                         account's corrections before sending again"
                    ))
                });
            }
        };
        // A 2xx means the correction exists: an unreadable body is resolved by `find`.
        let created: OneCorrection = crate::http::decode_json(response).await.map_err(|e| {
            PushError::Uncertain(format!(
                "{key}: ActivePlatform accepted the correction but its answer is unreadable \
                 ({}); tally reads the account's corrections before sending again",
                self.scrub(&e.to_string())
            ))
        })?;
        Ok(created.data.id)
    }

    /// Recovery: the id of the correction whose comment carries this revision's marker, if
    /// ActivePlatform holds one. Two such corrections are an error for an operator (something
    /// sent the revision twice), never a guess.
    pub async fn find(&self, line: &LedgerLine) -> anyhow::Result<Option<String>> {
        if line.amount.is_zero() {
            return Ok(Some(ZERO_AMOUNT_ID.to_owned()));
        }
        let key = &line.idempotency_key;
        let account_id = self
            .account_id(line.key.billing_account.as_str())
            .map_err(|m| anyhow::anyhow!("{key}: {m}"))?;
        let marker = line
            .push_marker
            .clone()
            .unwrap_or_else(|| rules::marker_for(line));
        let found: Vec<CorrectionResource> = self
            .list_corrections(account_id)
            .await?
            .into_iter()
            .filter(|c| {
                // Only this account's corrections, whether or not AP applied the filter.
                let account = account_id.to_string();
                c.attributes
                    .account_id
                    .as_deref()
                    .is_none_or(|a| a == account)
                    && c.attributes
                        .comment
                        .as_deref()
                        .is_some_and(|comment| rules::comment_has_marker(comment, &marker))
            })
            .collect();
        match found.as_slice() {
            [] => Ok(None),
            [only] => {
                let expected = rules::total_text(line.amount).ok();
                if only.attributes.total.is_some() && only.attributes.total != expected {
                    tracing::warn!(
                        key = %key, correction = %only.id,
                        stored_total = ?only.attributes.total, sent_total = ?expected,
                        "ActivePlatform holds this revision's correction with another total; check it"
                    );
                }
                Ok(Some(only.id.clone()))
            }
            many => {
                let ids: Vec<&str> = many.iter().map(|c| c.id.as_str()).collect();
                anyhow::bail!(
                    "{key}: ActivePlatform account {account_id} holds {} corrections marked \
                     [{marker}] (ids {}); the revision was sent more than once. Cancel all but \
                     one in ActivePlatform, then resolve the line",
                    many.len(),
                    ids.join(", ")
                )
            }
        }
    }

    /// The listing, fetched on first use and kept until [`clear_cache`](Self::clear_cache).
    async fn all_accounts(&self) -> anyhow::Result<Arc<Vec<RawAccount>>> {
        if let Some(all) = lock(&self.accounts).clone() {
            return Ok(all);
        }
        let _fetching = self.fetching.lock().await;
        if let Some(all) = lock(&self.accounts).clone() {
            return Ok(all);
        }
        let all = Arc::new(self.list_accounts(None).await?);
        *lock(&self.accounts) = Some(all.clone());
        Ok(all)
    }

    /// Every account (or those `filters[email]` selects), page by page in id order; the
    /// list ends on an empty or short page.
    async fn list_accounts(&self, email: Option<&str>) -> anyhow::Result<Vec<RawAccount>> {
        let url = self.v1_url("accounts.json");
        let mut accounts = Vec::new();
        let mut seen = HashSet::new();
        let per_page = self.per_page.to_string();
        for page in 1u32.. {
            let page_text = page.to_string();
            let mut query: Vec<(&str, &str)> = vec![
                ("api_token", self.token.expose_secret()),
                ("page", &page_text),
                ("per_page", &per_page),
                ("sorting[field]", "id"),
                ("sorting[reversed]", "false"),
            ];
            if let Some(email) = email {
                query.push(("filters[email]", email));
            }
            let result = self
                .http
                .send_json::<Vec<RawAccount>, _>(Idempotency::Idempotent, |client| {
                    client.get(url.clone()).query(&query)
                })
                .await;
            let batch = result.map_err(|e| anyhow::anyhow!("{}", self.describe(&e)))?;
            let count = batch.len();
            let mut new = 0;
            for account in batch {
                if seen.insert(account.id.clone()) {
                    new += 1;
                    accounts.push(account);
                }
            }
            // A peer that ignores `page` would hand out page 1 forever.
            if count > 0 && new == 0 {
                anyhow::bail!(
                    "ActivePlatform returned only accounts already listed on page {page} of {}; \
                     stopping instead of looping",
                    crate::http::redact_url(url.as_str())
                );
            }
            if count < self.per_page as usize {
                break;
            }
        }
        Ok(accounts)
    }

    /// Every correction of one account, following `page[number]` until an empty or short page.
    async fn list_corrections(&self, account_id: u64) -> anyhow::Result<Vec<CorrectionResource>> {
        let url = self.corrections_url();
        let account = account_id.to_string();
        let size = self.per_page.to_string();
        let mut corrections = Vec::new();
        let mut seen = HashSet::new();
        for page in 1u32.. {
            let number = page.to_string();
            let query = [
                ("filter[account_id]", account.as_str()),
                ("page[number]", number.as_str()),
                ("page[size]", size.as_str()),
            ];
            let list: CorrectionList = self
                .http
                .send_json(Idempotency::Idempotent, |client| {
                    client
                        .get(url.clone())
                        .query(&query)
                        .header("X-Api-Token", self.token.expose_secret())
                        .header(reqwest::header::ACCEPT, JSON_API)
                })
                .await
                .map_err(|e| anyhow::anyhow!("{}", self.describe(&e)))?;
            let count = list.data.len();
            let mut new = 0;
            for c in list.data {
                if seen.insert(c.id.clone()) {
                    new += 1;
                    corrections.push(c);
                }
            }
            if count > 0 && new == 0 {
                anyhow::bail!(
                    "ActivePlatform returned only corrections already listed on page {page} of \
                     {}; stopping instead of looping",
                    url.as_str()
                );
            }
            if count < self.per_page as usize {
                break;
            }
        }
        Ok(corrections)
    }

    /// `<base>api/vendor/v1/<name>` (the token is added as a query parameter per request).
    fn v1_url(&self, name: &str) -> reqwest::Url {
        let mut url = (*self.base).clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments
                .pop_if_empty()
                .extend(["api", "vendor", "v1", name]);
        }
        url
    }

    /// `<base>api/v3/resellers/{reseller_id}/corrections`.
    fn corrections_url(&self) -> reqwest::Url {
        let mut url = (*self.base).clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend([
                "api",
                "v3",
                "resellers",
                self.reseller_id.as_str(),
                "corrections",
            ]);
        }
        url
    }

    /// The billing account as AP's numeric account id.
    fn account_id(&self, billing_account: &str) -> Result<u64, String> {
        let text = billing_account.trim();
        text.parse::<u64>()
            .ok()
            .filter(|_| text.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                format!(
                    "billing account {billing_account:?} is not an ActivePlatform account id (a \
                     number such as 2000036): map the customer to its account id in \
                     customers.csv, or let tally look it up in ActivePlatform"
                )
            })
    }

    /// A readable message for a failed call: AP's errors, the redacted URL, and what to check.
    /// Scrubbed of the token whatever the lower layers put in it.
    fn describe(&self, error: &HttpError) -> String {
        let text = match error.status() {
            // tally's refusal to wait that long, not ActivePlatform's answer.
            _ if matches!(error, HttpError::RateLimited { .. }) => format!(
                "{error}; {}",
                error.rate_limit_advice("sinks.activeplatform")
            ),
            None => format!("ActivePlatform could not be reached: {error}"),
            Some(status) => {
                let vendor = error
                    .body()
                    .and_then(|b| serde_json::from_str::<api::ErrorBody>(b).ok())
                    .and_then(|b| b.summary())
                    .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
                let hint = match status.as_u16() {
                    401 | 403 => format!(
                        " — ActivePlatform refused the API token: check the environment \
                         variable {API_TOKEN_ENV}"
                    ),
                    404 => " — check sinks.activeplatform.base_url and reseller_id".to_owned(),
                    300..=399 => format!(" — {}", error.body().unwrap_or_default()),
                    _ => String::new(),
                };
                format!(
                    "ActivePlatform answered {status}: {vendor}{hint} [{}]",
                    error.url()
                )
            }
        };
        self.scrub(&text)
    }

    /// Removes the API token (as is, and percent-encoded) from a message.
    fn scrub(&self, text: &str) -> String {
        let token = self.token.expose_secret();
        if token.is_empty() {
            return text.to_owned();
        }
        let encoded: String = reqwest::Url::parse_with_params("http://x/", [("t", token)])
            .ok()
            .and_then(|u| u.query().map(|q| q.trim_start_matches("t=").to_owned()))
            .unwrap_or_else(|| token.to_owned());
        text.replace(token, "REDACTED")
            .replace(&encoded, "REDACTED")
    }
}

fn to_account(raw: &RawAccount) -> Account {
    Account {
        id: raw.id.clone(),
        name: raw.name.clone(),
        email: raw.email.clone(),
        status: raw.status.clone(),
    }
}

fn has_attribute(account: &RawAccount, name: &str, value: &str) -> bool {
    account.custom_attributes.as_ref().is_some_and(|attrs| {
        attrs.pairs().iter().any(|(n, v)| {
            n.trim().eq_ignore_ascii_case(name.trim()) && rules::attribute_matches(value, v)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ActivePlatformSettings {
        let mut s = ActivePlatformSettings::new("https://billing.example.com/", "42");
        s.api_token = Some(SecretString::from("t0ken-s3cret"));
        s
    }

    #[test]
    fn debug_hides_the_token() {
        let s = settings();
        assert!(s.validate("sinks.activeplatform").is_empty());
        assert!(!format!("{s:?}").contains("t0ken-s3cret"));
        let ap = ActivePlatform::new(&s).unwrap();
        assert!(!format!("{ap:?}").contains("t0ken-s3cret"));
    }

    #[test]
    fn urls_are_built_under_the_base_path() {
        let mut s = settings();
        s.base_url = "https://h.example/billing".into();
        let ap = ActivePlatform::new(&s).unwrap();
        assert_eq!(
            ap.v1_url("accounts.json").as_str(),
            "https://h.example/billing/api/vendor/v1/accounts.json"
        );
        assert_eq!(
            ap.corrections_url().as_str(),
            "https://h.example/billing/api/v3/resellers/42/corrections"
        );
    }

    #[test]
    fn scrub_removes_the_token_in_both_forms() {
        let mut s = settings();
        s.api_token = Some(SecretString::from("a b+c"));
        let ap = ActivePlatform::new(&s).unwrap();
        assert_eq!(ap.scrub("x a b+c y a+b%2Bc z"), "x REDACTED y REDACTED z");
    }
}
