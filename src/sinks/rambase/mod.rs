//! The RamBase billing system (docs/connectors/rambase.md): invoice lines become usages on recurring
//! invoice plan items.
//!
//! RamBase has no idempotency key, so exactly-once rests on reading before and after writing:
//! [`RamBase::prepare`] notes what the target (plan item × period) holds, and
//! [`RamBase::find`] compares against that note after a crash or an uncertain answer. See
//! [`RamBase::find`] for the assumption this relies on.

mod settings;
pub use settings::{RamBaseItem, RamBaseSettings};

mod api;
mod listing;
pub use api::{Answer as RamBaseAnswer, parse as parse_answer};
mod mapping;
mod reach;
pub use mapping::MappingFile;

use crate::domain::{InvoiceLine, LedgerLine, LineKey, Period};
use crate::http::{HttpClient, HttpError, HttpSettings, Idempotency};
use crate::problem::{ConfigError, Problem};
use crate::sinks::PushError;
use api::{Usage, UsagesPage};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The environment variable the client secret comes from (never a file).
pub const CLIENT_SECRET_ENV: &str = "TALLY__SINKS__RAMBASE__CLIENT_SECRET";

/// The external id recorded for a revision that changes only the amount: RamBase prices usage
/// itself and takes no zero quantities worth sending, so nothing is sent for it.
pub const ZERO_QUANTITY_ID: &str = "none:zero-quantity";

/// Largest page RamBase allows on the usages list (RamBase's documentation: "Maximum page size ($top) 80").
const PAGE_SIZE: u32 = 80;

/// Where each (billing account, license type) is billed, resolved once at start-up.
struct Plans {
    /// (billing account, license type) → (plan id, item id), from `items` and the file.
    items: HashMap<(String, String), (u64, u64)>,
    /// (plan id, month) → the plan's own period id, from the mapping file.
    file_periods: HashMap<(u64, Period), u64>,
    /// `"YYYY-MM"` → the period id of every plan without its own (`period_ids`).
    period_ids: BTreeMap<String, u64>,
    /// The mapping file, named in the exceptions that tell the user which row to add.
    mapping_file: Option<PathBuf>,
}

impl Plans {
    /// The target of a line, or why it has none (an exception naming what to add).
    ///
    /// Precedence: the plan item comes from `items` or the mapping file (they may not
    /// disagree); the period id is the plan's own for the month in the mapping file, else
    /// `period_ids` for the month (the default of every plan), else there is none.
    fn target(&self, period: Period, account: &str, license: &str) -> Result<Target, String> {
        let Some(&(plan_id, item_id)) = self.items.get(&(account.to_owned(), license.to_owned()))
        else {
            return Err(match &self.mapping_file {
                Some(file) => format!(
                    "no RamBase plan item for billing account {account:?} and license type \
                     {license:?}: add \"{}\" to {} with the plan id and item id from RamBase \
                     (or a [[sinks.rambase.items]] entry)",
                    mapping::csv_row(&[account, license, "<plan id>", "<item id>", "", ""]),
                    file.display()
                ),
                None => format!(
                    "no RamBase plan item for billing account {account:?} and license type \
                     {license:?}: add [[sinks.rambase.items]] with billing_account = {account:?}, \
                     license_type = {license:?}, plan_id and item_id"
                ),
            });
        };
        let key = period.to_string();
        let own = self.file_periods.get(&(plan_id, period));
        let Some(&period_id) = own.or_else(|| self.period_ids.get(&key)) else {
            let plan = plan_id.to_string();
            let item = item_id.to_string();
            let row = mapping::csv_row(&[account, license, &plan, &item, &key, "<period id>"]);
            return Err(match &self.mapping_file {
                Some(file) => format!(
                    "no RamBase recurring invoice period id for plan {plan_id} in {key}: add \
                     \"{row}\" to {} with plan {plan_id}'s period id for {key} from RamBase",
                    file.display()
                ),
                None => format!(
                    "no RamBase recurring invoice period id for {key}: add \"{key}\" = <period \
                     id> to sinks.rambase.period_ids if every plan uses that period, or give \
                     plan {plan_id} its own in a mapping file (sinks.rambase.mapping_file) with \
                     the row \"{row}\""
                ),
            });
        };
        Ok(Target {
            plan_id,
            item_id,
            period_id,
        })
    }
}

/// Where one line's usage goes in RamBase: a plan item in one recurring invoice period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Target {
    plan_id: u64,
    item_id: u64,
    period_id: u64,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plan {} item {} period {}",
            self.plan_id, self.item_id, self.period_id
        )
    }
}

/// What the target held just before a revision was sent (phase one), kept as the line's
/// `push_marker`. The target is recorded too, so that recovery reads where the push went even
/// if the configuration changed since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    plan_id: u64,
    item_id: u64,
    period_id: u64,
    /// Highest usage id on the target then (0 when it had none). RamBase's usage ids increase,
    /// so whatever this push created has a higher id.
    max_usage_id: u64,
    /// How many usages the target held then; fewer later means someone deleted usages.
    count: u64,
}

impl Marker {
    fn target(&self) -> Target {
        Target {
            plan_id: self.plan_id,
            item_id: self.item_id,
            period_id: self.period_id,
        }
    }
}

/// Why an API call failed: RamBase's answer, or no token to send it with.
enum CallError {
    Http(HttpError),
    /// The token request failed, so the API call was never sent.
    Token(String),
}

/// The RamBase connector. Its `Debug` shows neither the client secret nor a token.
pub struct RamBase {
    // Boxed so that the `Sink` enum stays small (clippy::large_enum_variant).
    http: Box<HttpClient>,
    base: Box<reqwest::Url>,
    client_id: String,
    client_secret: SecretString,
    db: Option<String>,
    plans: Plans,
    /// The access token, shared by every call (see `crate::http::TokenCache`).
    token: crate::http::TokenCache,
}

impl fmt::Debug for RamBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RamBase")
            .field("base", &self.base.as_str())
            .field("client_id", &self.client_id)
            .field("db", &self.db)
            .field("items", &self.plans.items.len())
            .field("period_ids", &self.plans.period_ids.len())
            .field("plan_periods", &self.plans.file_periods.len())
            .finish_non_exhaustive()
    }
}

impl RamBase {
    /// A connector for valid settings; every configuration problem is reported at once.
    pub fn new(settings: &RamBaseSettings) -> anyhow::Result<Self> {
        ConfigError::check(settings.validate("sinks.rambase"))?;
        let plans = settings.plans().map_err(ConfigError)?;
        let mut base_url = settings.base_url.trim().to_owned();
        // `Url::join` drops the last path segment of a base without a trailing slash.
        if !base_url.ends_with('/') {
            base_url.push('/');
        }
        let base = reqwest::Url::parse(&base_url)?;
        let client_secret = settings
            .client_secret
            .clone()
            .ok_or_else(|| anyhow::anyhow!("set the environment variable {CLIENT_SECRET_ENV}"))?;
        Ok(Self {
            http: Box::new(HttpClient::new(&settings.http)?),
            base: Box::new(base),
            client_id: settings.client_id.clone(),
            client_secret,
            db: settings.db.clone(),
            plans,
            token: crate::http::TokenCache::new(),
        })
    }

    /// Can this line be billed in RamBase as configured? Pure. RamBase takes whole quantities
    /// only, and a fractional one is never rounded: the line becomes an exception.
    pub fn check(&self, line: &InvoiceLine) -> Result<(), String> {
        whole_quantity(line.quantity, &describe_key(&line.key))?;
        self.target(
            line.key.period,
            line.key.billing_account.as_str(),
            line.key.license_type.as_str(),
        )?;
        Ok(())
    }

    /// Phase one: reads the target's usages and returns a marker (JSON) recording what it
    /// held before sending, for [`find`](Self::find). `None` for a zero-quantity revision,
    /// which is never sent.
    pub async fn prepare(&self, line: &LedgerLine) -> anyhow::Result<Option<String>> {
        let quantity =
            whole_quantity(line.quantity, &describe_key(&line.key)).map_err(anyhow::Error::msg)?;
        if quantity == 0 {
            return Ok(None);
        }
        let target = self.line_target(line).map_err(anyhow::Error::msg)?;
        let usages = self.list_usages(target).await?;
        let marker = Marker {
            plan_id: target.plan_id,
            item_id: target.item_id,
            period_id: target.period_id,
            max_usage_id: usages.iter().map(|u| u.usage_id).max().unwrap_or(0),
            count: usages.len() as u64,
        };
        Ok(Some(serde_json::to_string(&marker)?))
    }

    /// Sends one revision as a usage (`quantity` = the revision's quantity, the delta for an
    /// adjustment, possibly negative; `date` = the period's first day) and returns its usage id.
    ///
    /// The POST is never re-sent blindly: RamBase has no idempotency key, so a timeout, 5xx or
    /// broken connection is [`PushError::Uncertain`], resolved later by [`find`](Self::find).
    /// A revision with quantity 0 (an amount-only change) is not sent: RamBase prices usage
    /// itself, so there is nothing to register; it returns [`ZERO_QUANTITY_ID`].
    pub async fn push(&self, line: &LedgerLine) -> Result<String, PushError> {
        let quantity =
            whole_quantity(line.quantity, &describe_key(&line.key)).map_err(PushError::Rejected)?;
        if quantity == 0 {
            return Ok(ZERO_QUANTITY_ID.to_owned());
        }
        let target = self.line_target(line).map_err(PushError::Rejected)?;
        // Without a marker an uncertain answer could never be resolved automatically.
        let marker = parse_marker(line).map_err(PushError::Rejected)?;
        if marker.target() != target {
            return Err(PushError::Rejected(format!(
                "{}: prepared for {} but the configuration now says {target}; re-run so that \
                 tally prepares the line again",
                line.idempotency_key,
                marker.target()
            )));
        }
        let date = line.key.period.first_day();
        let url = self.usages_url(target, None);
        let body = serde_json::json!({
            "usage": { "date": date.format("%Y-%m-%d").to_string(), "quantity": quantity }
        });
        let result = self
            .call(Idempotency::NotIdempotent, |client, token| {
                client
                    .post(url.clone())
                    .bearer_auth(token)
                    .header(reqwest::header::ACCEPT, "application/json")
                    .json(&body)
            })
            .await;
        let response = match result {
            Ok(response) => response,
            Err(CallError::Token(message)) => {
                return Err(PushError::Rejected(format!(
                    "{}: not sent: {message}",
                    line.idempotency_key
                )));
            }
            Err(CallError::Http(e)) => {
                let message = format!("{}: {}", line.idempotency_key, describe(&e, Some(target)));
                return Err(if e.surely_not_processed() {
                    PushError::Rejected(message)
                } else {
                    PushError::Uncertain(format!(
                        "{message}; RamBase may hold the usage: tally checks before sending again"
                    ))
                });
            }
        };
        // A 2xx means the usage exists: a body tally cannot read is resolved by `find`.
        let created: api::Created = crate::http::decode_json(response).await.map_err(|e| {
            PushError::Uncertain(format!(
                "{}: RamBase accepted the usage but its answer is unreadable ({e}); tally \
                 checks the usages before sending again",
                line.idempotency_key
            ))
        })?;
        let usage = created.usage;
        if usage.quantity != quantity || usage.date != date {
            tracing::warn!(
                key = %line.idempotency_key, usage_id = usage.usage_id,
                sent_quantity = quantity, stored_quantity = usage.quantity,
                "RamBase stored a usage that differs from what was sent; check it"
            );
        }
        Ok(usage.usage_id.to_string())
    }

    /// Recovery: does RamBase hold this revision? Compares the target's usages with the marker
    /// `prepare` recorded:
    ///
    /// - exactly one usage newer than the marker, with this revision's quantity and date →
    ///   `Some(usage id)`;
    /// - no usage newer than the marker → `None`: the push did not land, sending again is safe;
    /// - anything else (several candidates, new usages that are not this revision's, usages
    ///   removed since) → `Err` naming what the operator should check. tally never guesses.
    ///
    /// This relies on one assumption, which the operator must keep: **tally is the only writer
    /// of usages on its plan items, and pushes to one plan item one at a time** (the pipeline
    /// resolves a `pushing` line before pushing others to the same target). RamBase usage ids
    /// increase, so a usage this push created has an id above the marker's `max_usage_id`;
    /// under the assumption, nothing else can appear there.
    pub async fn find(&self, line: &LedgerLine) -> anyhow::Result<Option<String>> {
        let quantity =
            whole_quantity(line.quantity, &describe_key(&line.key)).map_err(anyhow::Error::msg)?;
        if quantity == 0 {
            return Ok(Some(ZERO_QUANTITY_ID.to_owned()));
        }
        let marker = parse_marker(line).map_err(anyhow::Error::msg)?;
        let target = marker.target();
        let date = line.key.period.first_day();
        let usages = self.list_usages(target).await?;
        let old = usages
            .iter()
            .filter(|u| u.usage_id <= marker.max_usage_id)
            .count() as u64;
        if old != marker.count {
            anyhow::bail!(
                "{}: RamBase {target} held {} usage(s) up to usage id {} when tally prepared the \
                 push, and now holds {old}: someone changed usages there. Check that plan item's \
                 usages in RamBase by hand, then mark the line pushed (with its usage id) or \
                 send it again",
                line.idempotency_key,
                marker.count,
                marker.max_usage_id
            );
        }
        let new: Vec<&Usage> = usages
            .iter()
            .filter(|u| u.usage_id > marker.max_usage_id)
            .collect();
        let candidates: Vec<&&Usage> = new
            .iter()
            .filter(|u| u.quantity == quantity && u.date == date)
            .collect();
        match (new.len(), candidates.as_slice()) {
            (0, _) => Ok(None),
            (1, [only]) => Ok(Some(only.usage_id.to_string())),
            _ => {
                let listed: Vec<String> = new
                    .iter()
                    .take(10)
                    .map(|u| format!("usage {} ({}, quantity {})", u.usage_id, u.date, u.quantity))
                    .collect();
                anyhow::bail!(
                    "{}: cannot tell whether RamBase holds this revision (quantity {quantity} on \
                     {date}): {target} has {} usage(s) newer than usage id {} — {}{}. tally \
                     expects to be the only writer on its plan items. Check these usages in \
                     RamBase by hand; do not re-run the push until the line is resolved",
                    line.idempotency_key,
                    new.len(),
                    marker.max_usage_id,
                    listed.join(", "),
                    if new.len() > listed.len() {
                        ", ..."
                    } else {
                        ""
                    }
                )
            }
        }
    }

    /// Every usage on a target, following `paging.nextPageKey` with the largest page allowed,
    /// checked against the `paging.size` of `$inlinecount=allpages` (see [`listing`]).
    async fn list_usages(&self, target: Target) -> anyhow::Result<Vec<Usage>> {
        let mut usages = Vec::new();
        let mut page_key: Option<String> = None;
        let mut listing = listing::Listing::new(target.to_string());
        loop {
            let mut url = self.usages_url(target, page_key.as_deref());
            url.set_query(Some(&format!(
                "{}&$inlinecount=allpages",
                url.query().unwrap_or_default()
            )));
            let page: UsagesPage = match self
                .call(Idempotency::Idempotent, |client, token| {
                    client
                        .get(url.clone())
                        .bearer_auth(token)
                        .header(reqwest::header::ACCEPT, "application/json")
                })
                .await
            {
                Ok(response) => crate::http::decode_json(response)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", describe(&e, Some(target))))?,
                Err(CallError::Http(e)) => anyhow::bail!("{}", describe(&e, Some(target))),
                Err(CallError::Token(message)) => anyhow::bail!("{message}"),
            };
            let count = page.usages.len();
            usages.extend(page.usages.into_iter().map(|u| u.into_usage()));
            let (size, next) = page
                .paging
                .map(|p| (p.size, p.next_page_key))
                .unwrap_or_default();
            match listing
                .advance(url.as_str(), count, size, next.as_deref())
                .map_err(anyhow::Error::msg)?
            {
                Some(next) => page_key = Some(next),
                None => return Ok(usages),
            }
        }
    }

    /// Sends a request with a bearer token; a 401 renews the token once and sends once more
    /// (a 401 means RamBase did not act on the request, so this is safe for a POST too).
    async fn call<F>(
        &self,
        idempotency: Idempotency,
        build: F,
    ) -> Result<reqwest::Response, CallError>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        let mut renewed = false;
        loop {
            let token = self.token(renewed).await.map_err(CallError::Token)?;
            let result = self
                .http
                .send(idempotency, |client| build(client, token.expose_secret()))
                .await;
            match result {
                Err(e) if e.status() == Some(reqwest::StatusCode::UNAUTHORIZED) && !renewed => {
                    tracing::info!(url = %e.url(), "RamBase refused the access token; fetching a new one");
                    renewed = true;
                }
                other => return other.map_err(CallError::Http),
            }
        }
    }

    /// The cached token, or a new one when it is due for renewal or `renew` is set.
    async fn token(&self, renew: bool) -> Result<SecretString, String> {
        self.token.get(renew, || self.fetch_token()).await
    }

    /// `POST oauth2/access_token` with the client credentials.
    async fn fetch_token(&self) -> Result<crate::http::FetchedToken, String> {
        let url = self
            .base
            .join("oauth2/access_token")
            .map_err(|e| format!("bad RamBase base URL: {e}"))?;
        let form = [
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose_secret()),
            ("grant_type", "client_credentials"),
        ];
        let answer: api::TokenAnswer = self
            .http
            .send_json(Idempotency::Idempotent, |client| {
                client
                    .post(url.clone())
                    .header(reqwest::header::ACCEPT, "application/json")
                    .form(&form)
            })
            .await
            .map_err(|e| match e.status() {
                Some(s)
                    if s == reqwest::StatusCode::BAD_REQUEST
                        || s == reqwest::StatusCode::UNAUTHORIZED =>
                {
                    format!(
                        "RamBase refused tally's client credentials ({s} from {}): check \
                     sinks.rambase.client_id and the environment variable {CLIENT_SECRET_ENV}",
                        e.url()
                    )
                }
                _ if matches!(e, HttpError::RateLimited { .. }) => format!(
                    "RamBase token request failed: {e}; {}",
                    e.rate_limit_advice("sinks.rambase")
                ),
                _ => format!("RamBase token request failed: {e}"),
            })?;
        Ok(crate::http::FetchedToken {
            value: SecretString::from(answer.access_token),
            expires_in: answer.expires_in.map(Duration::from_secs),
        })
    }

    /// `.../usages?$top=80&$expand=PagingDetails&$format=json[&$db=..][&$pageKey=..]`, with
    /// the `$` names written as RamBase documents them.
    fn usages_url(&self, target: Target, page_key: Option<&str>) -> reqwest::Url {
        let mut query = format!("$top={PAGE_SIZE}&$expand=PagingDetails&$format=json");
        if let Some(db) = &self.db {
            query.push_str("&$db=");
            query.push_str(&crate::http::encode_query_value(db));
        }
        if let Some(key) = page_key {
            query.push_str("&$pageKey=");
            query.push_str(&crate::http::encode_query_value(key));
        }
        let mut url = (*self.base).clone();
        let path = format!(
            "{}sales/recurring-invoice-plans/{}/items/{}/recurring-invoice-periods/{}/usages",
            self.base.path(),
            target.plan_id,
            target.item_id,
            target.period_id
        );
        url.set_path(&path);
        url.set_query(Some(&query));
        url
    }

    fn line_target(&self, line: &LedgerLine) -> Result<Target, String> {
        self.target(
            line.key.period,
            line.key.billing_account.as_str(),
            line.key.license_type.as_str(),
        )
    }

    fn target(&self, period: Period, account: &str, license: &str) -> Result<Target, String> {
        self.plans.target(period, account, license)
    }
}

/// "Agent for ACME in 2026-10": what a quantity message is about.
fn describe_key(key: &LineKey) -> String {
    format!(
        "{} for {} in {}",
        key.license_type, key.billing_account, key.period
    )
}

/// The quantity as RamBase's integer, or why it cannot be one. Never rounds.
fn whole_quantity(quantity: Decimal, what: &str) -> Result<i64, String> {
    if !quantity.fract().is_zero() {
        return Err(format!(
            "RamBase takes whole quantities only; {} {what} cannot be billed there — fix the \
             mapping or bill it elsewhere",
            quantity.normalize()
        ));
    }
    quantity
        .to_i64()
        .ok_or_else(|| format!("quantity {quantity} {what} is too large for RamBase"))
}

fn parse_marker(line: &LedgerLine) -> Result<Marker, String> {
    let raw = line.push_marker.as_deref().ok_or_else(|| {
        format!(
            "{}: no push marker (the line was never prepared), so tally cannot tell whether \
             RamBase holds it; check the plan item's usages in RamBase by hand",
            line.idempotency_key
        )
    })?;
    serde_json::from_str(raw).map_err(|e| {
        format!(
            "{}: push marker {raw:?} is not a RamBase marker ({e}); check the plan item's usages \
             in RamBase by hand",
            line.idempotency_key
        )
    })
}

/// A readable message for a failed RamBase call, naming the error id and what to check.
fn describe(error: &HttpError, target: Option<Target>) -> String {
    if let HttpError::RateLimited { .. } = error {
        // Not RamBase's answer but tally's refusal to wait that long: say how long and why.
        return format!("{error}; {}", error.rate_limit_advice("sinks.rambase"));
    }
    let Some(status) = error.status() else {
        return error.to_string();
    };
    let parsed: Option<api::ErrorBody> = error.body().and_then(|b| serde_json::from_str(b).ok());
    let id = parsed
        .as_ref()
        .and_then(|p| p.error_message.as_ref())
        .and_then(|m| m.error_message_id);
    let vendor_message = parsed
        .as_ref()
        .and_then(|p| p.message.clone())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let hint = match (id, target) {
        (Some(105702), Some(t)) => format!(" (plan {}) — check sinks.rambase.items", t.plan_id),
        (Some(105728), Some(t)) => format!(
            " (plan {} item {}) — check sinks.rambase.items",
            t.plan_id, t.item_id
        ),
        // Real RamBase's answer to a period id that is not one of the plan's.
        (Some(105729), Some(t)) => format!(
            " (period {} on plan {}) — each plan has its own period ids: give plan {} its \
             period for the month in sinks.rambase.mapping_file",
            t.period_id, t.plan_id, t.plan_id
        ),
        _ if status == reqwest::StatusCode::UNAUTHORIZED => format!(
            " — RamBase refused a fresh token: check sinks.rambase.client_id and the environment \
             variable {CLIENT_SECRET_ENV}"
        ),
        // A redirect tally did not follow: the body says where to and what to check.
        _ if status.is_redirection() => format!(" — {}", error.body().unwrap_or_default()),
        _ if status == reqwest::StatusCode::NOT_FOUND && target.is_some() => format!(
            " ({}) — check sinks.rambase.items and sinks.rambase.period_ids",
            target.map(|t| t.to_string()).unwrap_or_default()
        ),
        _ => String::new(),
    };
    match id {
        Some(id) => format!(
            "RamBase error {id}: {vendor_message}{hint} [HTTP {status}, {}]",
            error.url()
        ),
        None => format!(
            "RamBase answered {status}: {vendor_message}{hint} [{}]",
            error.url()
        ),
    }
}

/// Parses a date RamBase writes either as `YYYY-MM-DD` or as a date-time.
fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn settings() -> RamBaseSettings {
        RamBaseSettings {
            base_url: "https://api.rambase.net/".into(),
            client_id: "tally".into(),
            client_secret: Some(SecretString::from("s3cret")),
            db: None,
            items: vec![RamBaseItem {
                billing_account: "ACME".into(),
                license_type: "Agent".into(),
                plan_id: 100_001,
                item_id: 1,
            }],
            period_ids: [("2026-10".to_owned(), 100_010)].into(),
            mapping_file: None,
            http: HttpSettings::default(),
        }
    }

    #[test]
    fn valid_settings_have_no_problems_and_debug_hides_the_secret() {
        let s = settings();
        assert!(s.validate("sinks.rambase").is_empty());
        assert!(!format!("{s:?}").contains("s3cret"));
        let r = RamBase::new(&s).unwrap();
        assert!(!format!("{r:?}").contains("s3cret"));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let mut s = settings();
        s.base_url = "ftp:/nowhere".into();
        s.client_secret = None;
        s.items.push(RamBaseItem {
            billing_account: "ACME".into(),
            license_type: "Agent".into(),
            plan_id: 99_999,
            item_id: 0,
        });
        s.period_ids.insert("2026-1".into(), 5);
        let problems = s.validate("sinks.rambase");
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        let all = text.join("\n");
        for expected in [
            "sinks.rambase.base_url",
            CLIENT_SECRET_ENV,
            "sinks.rambase.items[1].plan_id",
            "sinks.rambase.items[1].item_id",
            "configured twice",
            "sinks.rambase.period_ids.\"2026-1\": \"2026-1\" is not a month",
            "5 is not a RamBase recurring invoice period id",
        ] {
            assert!(all.contains(expected), "{expected} missing in:\n{all}");
        }
    }

    /// Settings whose mapping file holds `rows` (after the header), in a folder kept alive
    /// by the returned guard.
    fn with_file(rows: &str) -> (RamBaseSettings, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rambase.csv");
        std::fs::write(
            &path,
            format!("billing_account,license_type,plan_id,item_id,month,period_id\n{rows}"),
        )
        .unwrap();
        let mut s = settings();
        s.mapping_file = Some(path);
        (s, dir)
    }

    fn target_of(r: &RamBase, month: &str, account: &str, license: &str) -> Result<Target, String> {
        r.target(month.parse().unwrap(), account, license)
    }

    #[test]
    fn a_plans_own_period_wins_over_period_ids_which_stays_the_default() {
        let (s, _dir) = with_file(
            "ACME,Agent,100001,1,2026-11,100111\n\
             ACME,Light,100001,2,,\n\
             GLOBEX,Agent,100002,1,2026-10,100210\n",
        );
        let r = RamBase::new(&s).unwrap();
        let t = |plan_id, item_id, period_id| Target {
            plan_id,
            item_id,
            period_id,
        };
        // The plan item from `items`, its period from the file for November...
        assert_eq!(
            target_of(&r, "2026-11", "ACME", "Agent"),
            Ok(t(100_001, 1, 100_111))
        );
        // ...and from `period_ids` for October, where the file gives plan 100001 none.
        assert_eq!(
            target_of(&r, "2026-10", "ACME", "Agent"),
            Ok(t(100_001, 1, 100_010))
        );
        // A period belongs to the plan: the plan's other item shares it.
        assert_eq!(
            target_of(&r, "2026-11", "ACME", "Light"),
            Ok(t(100_001, 2, 100_111))
        );
        assert_eq!(
            target_of(&r, "2026-10", "GLOBEX", "Agent"),
            Ok(t(100_002, 1, 100_210))
        );
        let missing = target_of(&r, "2026-11", "GLOBEX", "Agent").unwrap_err();
        let file = s.mapping_file.as_ref().unwrap().display().to_string();
        assert!(
            missing.contains(&format!(
                "add \"GLOBEX,Agent,100002,1,2026-11,<period id>\" to {file}"
            )),
            "{missing}"
        );
        let no_item = target_of(&r, "2026-11", "GLOBEX", "Observer").unwrap_err();
        assert!(
            no_item.contains(&format!(
                "add \"GLOBEX,Observer,<plan id>,<item id>,,\" to {file}"
            )),
            "{no_item}"
        );
    }

    #[test]
    fn a_file_row_contradicting_items_is_refused_with_its_row_with_the_files_other_problems() {
        let (s, _dir) = with_file(
            "ACME,Agent,100001,1,2026-11,100111\n\
             ACME,Agent,100009,1,,\n\
             GLOBEX,Agent,100001,1,,\n\
             INITECH,Agent,100003,1,2026-11,\n",
        );
        let file = s.mapping_file.as_ref().unwrap().display().to_string();
        let text = format!("{:#}", RamBase::new(&s).unwrap_err());
        for expected in [
            // Row 2 says what `items` says: fine.
            format!(
                "{file}:3:plan_id: billing account \"ACME\" with license type \"Agent\" is on plan 100001 item 1 in sinks.rambase.items[0]"
            ),
            format!("{file}:4:item_id: plan 100001 item 1 is also used by sinks.rambase.items[0]"),
            format!("{file}:5:period_id: period_id is empty"),
        ] {
            assert!(text.contains(&expected), "{expected} missing in:\n{text}");
        }
        assert!(!text.contains(":2:"), "{text}");
    }

    #[test]
    fn fractional_quantities_are_refused_never_rounded() {
        assert_eq!(whole_quantity(dec!(5.00), "Agent"), Ok(5));
        assert_eq!(whole_quantity(dec!(-3), "Agent"), Ok(-3));
        let err = whole_quantity(dec!(5.5), "Agent").unwrap_err();
        assert!(
            err.starts_with("RamBase takes whole quantities only; 5.5 Agent"),
            "{err}"
        );
        assert!(
            err.contains("fix the mapping or bill it elsewhere"),
            "{err}"
        );
    }

    #[test]
    fn usages_url_keeps_the_dollar_names_and_encodes_values() {
        let mut s = settings();
        s.db = Some("SYS".into());
        let r = RamBase::new(&s).unwrap();
        let t = Target {
            plan_id: 100_001,
            item_id: 1,
            period_id: 100_010,
        };
        assert_eq!(
            r.usages_url(t, Some("a+b/c")).as_str(),
            "https://api.rambase.net/sales/recurring-invoice-plans/100001/items/1/recurring-invoice-periods/100010/usages?$top=80&$expand=PagingDetails&$format=json&$db=SYS&$pageKey=a%2Bb%2Fc"
        );
    }
}
