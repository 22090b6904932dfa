//! An ActivePlatform simulator faithful to docs/connectors/activeplatform.md: the v1 accounts listing
//! (`api_token` query parameter, `page`/`per_page`, `sorting[..]`, `filters[..]`, a bare JSON
//! array, `custom_attributes` in either shape) and the v3 JSON:API corrections (header
//! `X-Api-Token`, `total` as a string with at most two decimals), with faults to test against.
//!
//! Like the real API it offers no idempotency key. Its own choices where the documentation is
//! silent: `per_page` defaults to 20 and is capped silently at 100 (the harsher reading: a
//! client asking for more sees a short page); `filters[email]` matches case-insensitively as a
//! substring (so a client must compare exactly itself); `filters[created_at]` /
//! `filters[updated_at]` and unknown parameters are refused (400) rather than ignored; v1 errors
//! are `{"error": "..."}`. On v3, `page[size]` defaults to 20 and more than 100 is refused
//! (400); a body that is not `application/vnd.api+json` is refused (415); a wrong `type` is 409;
//! invalid attributes are 422 with one JSON:API error per problem. Lists are in id order.

mod api;
use api::*;

pub use super::server::SimHandle;
use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// `per_page` when none is given on v1.
pub const DEFAULT_PER_PAGE: usize = 20;
/// Largest v1 page; a larger `per_page` is capped silently.
pub const MAX_PER_PAGE: usize = 100;
/// `page[size]` when none is given on v3.
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// Largest v3 page; a larger `page[size]` is refused with 400.
pub const MAX_PAGE_SIZE: usize = 100;

const JSON_API: &str = "application/vnd.api+json";

/// An account's custom attributes, in the shape the simulator answers them for this account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomAttributes {
    /// `[{"name": .., "value": ..}, ...]` (the seed's field table).
    List(Vec<(String, String)>),
    /// `{"name": "value", ...}` (the seed's response example).
    Map(BTreeMap<String, String>),
}

impl CustomAttributes {
    /// The list shape from `(name, value)` pairs.
    pub fn list(pairs: &[(&str, &str)]) -> Self {
        Self::List(
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    /// The object-map shape from `(name, value)` pairs.
    pub fn map(pairs: &[(&str, &str)]) -> Self {
        Self::Map(
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            CustomAttributes::List(pairs) => pairs
                .iter()
                .map(|(n, v)| serde_json::json!({ "name": n, "value": v }))
                .collect(),
            CustomAttributes::Map(map) => serde_json::json!(map),
        }
    }
}

/// One account as the simulator holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApAccount {
    /// AP's account id.
    pub id: u64,
    /// The account name.
    pub name: String,
    /// The contact e-mail.
    pub email: String,
    /// `active`, `suspended`, `deleted`, ...
    pub status: String,
    /// Custom attributes, in the shape this account is answered with.
    pub custom_attributes: CustomAttributes,
}

/// One correction as the simulator stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimCorrection {
    /// Increasing from 1, never reused.
    pub id: u64,
    /// The account it was created on.
    pub account_id: u64,
    /// The optional subscription the client named.
    pub subscription_id: Option<String>,
    pub period_from: NaiveDate,
    pub period_to: NaiveDate,
    /// Exactly the string the client sent (e.g. `"12.50"`).
    pub total: String,
    pub included_invoice: bool,
    pub comment: String,
    pub created_at: DateTime<Utc>,
}

/// What survives a restart when a state file is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Persisted {
    accounts: BTreeMap<u64, ApAccount>,
    corrections: Vec<SimCorrection>,
    next_correction_id: u64,
}

#[derive(Debug, Default)]
struct Inner {
    data: Persisted,
    state_file: Option<PathBuf>,
    fail_next: Option<(u32, u16)>,
    /// Requests still to answer with a redirect: (count, status, `Location`).
    redirect_next: Option<(u32, u16, String)>,
    accept_then_fail: u32,
    /// `METHOD /path?query` of every request (the `api_token` value redacted).
    requests: Vec<String>,
}

/// The simulator. Clones share one state (an `Arc` inside).
#[derive(Debug, Clone)]
pub struct ActivePlatformSim {
    api_token: Arc<str>,
    reseller_id: Arc<str>,
    inner: Arc<Mutex<Inner>>,
}

/// The demo's accounts: attributes in both shapes, one GUID key written with braces and
/// capitals, and two accounts sharing an e-mail (an e-mail lookup of it is ambiguous).
pub fn demo_accounts() -> Vec<ApAccount> {
    let account = |id, name: &str, email: &str, status: &str, attrs| ApAccount {
        id,
        name: name.to_owned(),
        email: email.to_owned(),
        status: status.to_owned(),
        custom_attributes: attrs,
    };
    vec![
        account(
            2_000_036,
            "Acme Corporation",
            "billing@acme.example",
            "active",
            CustomAttributes::list(&[
                ("tally_customer_key", "Acme Corporation"),
                ("vat_number", "NO999888777"),
            ]),
        ),
        account(
            2_000_041,
            "Globex Nordic AS",
            "Invoices@Globex.example",
            "active",
            CustomAttributes::map(&[("tally_customer_key", "Globex Nordic AS"), ("unp", "")]),
        ),
        account(
            2_000_057,
            "Initech",
            "ap@initech.example",
            "active",
            CustomAttributes::map(&[(
                "tally_customer_key",
                "{6F9619FF-8B86-D011-B42D-00C04FC964FF}",
            )]),
        ),
        account(
            2_000_063,
            "Umbrella Health",
            "finance@umbrella.example",
            "active",
            CustomAttributes::list(&[("tally_customer_key", "Umbrella Health")]),
        ),
        account(
            2_000_070,
            "Umbrella Health (old contract)",
            "finance@umbrella.example",
            "suspended",
            CustomAttributes::list(&[]),
        ),
    ]
}

impl ActivePlatformSim {
    /// A simulator that accepts this API token, for this reseller's corrections.
    pub fn new(api_token: &str, reseller_id: &str) -> Self {
        Self {
            api_token: api_token.into(),
            reseller_id: reseller_id.into(),
            inner: Arc::new(Mutex::new(Inner {
                data: Persisted {
                    next_correction_id: 1,
                    ..Persisted::default()
                },
                ..Inner::default()
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic in another handler must not take the simulator down with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(inner: &Inner) {
        if let Err(e) = persist(inner) {
            tracing::error!(error = %e, "ActivePlatform simulator could not save its state");
        }
    }

    /// Adds (or replaces, by id) an account.
    pub fn add_account(&self, account: ApAccount) {
        let mut inner = self.lock();
        inner.data.accounts.insert(account.id, account);
        Self::save(&inner);
    }

    /// Adds [`demo_accounts`].
    pub fn add_demo_accounts(&self) {
        for account in demo_accounts() {
            self.add_account(account);
        }
    }

    /// Persist state (accounts, corrections, next id) to this JSON file after every change and
    /// load it if it exists, so a second process sees what the first left (write temp +
    /// rename). Accounts added before are kept; corrections come from the file.
    pub fn with_state_file(self, path: PathBuf) -> anyhow::Result<Self> {
        {
            let mut inner = self.lock();
            if path.exists() {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let mut loaded: Persisted = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a simulator state file", path.display()))?;
                if !inner.data.corrections.is_empty() {
                    anyhow::bail!("with_state_file must be called before any correction exists");
                }
                loaded.accounts.extend(inner.data.accounts.clone());
                loaded.next_correction_id = loaded.next_correction_id.max(1);
                inner.data = loaded;
            }
            inner.state_file = Some(path);
            persist(&inner)?;
        }
        Ok(self)
    }

    /// Every correction received, in id order.
    pub fn corrections(&self) -> Vec<SimCorrection> {
        self.lock().data.corrections.clone()
    }

    /// `GET /api/vendor/v1/accounts.json?...` of every accounts request, in order, with the
    /// `api_token` value shown as `REDACTED`.
    pub fn account_requests(&self) -> Vec<String> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.starts_with("GET /api/vendor/v1/accounts"))
            .cloned()
            .collect()
    }

    /// `METHOD /path?query` of every request received, in order (`api_token` redacted).
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// Answers the next `n` requests (any endpoint) with `status`, in the endpoint's error
    /// shape, before authentication; a 429 carries `Retry-After: 0`.
    pub fn fail_next(&self, n: u32, status: u16) {
        self.lock().fail_next = Some((n, status));
    }

    /// Answers the next `n` requests (any endpoint) with `status` (a 3xx) and `Location:
    /// location`, before authentication, storing nothing: a proxy or a hijacked peer pointing
    /// tally at another server.
    pub fn redirect_next(&self, n: u32, status: u16, location: &str) {
        self.lock().redirect_next = Some((n, status, location.to_owned()));
    }

    /// The next `n` valid correction POSTs store their correction, then answer 500: accepted,
    /// but the answer is lost.
    pub fn accept_then_fail_next(&self, n: u32) {
        self.lock().accept_then_fail = n;
    }

    /// Starts serving on `addr` (port 0 picks a free port).
    pub async fn serve(&self, addr: SocketAddr) -> anyhow::Result<SimHandle> {
        let app = Router::new()
            .route("/api/vendor/v1/accounts.json", get(list_accounts))
            .route(
                "/api/v3/resellers/{reseller}/corrections",
                get(list_corrections).post(create_correction),
            )
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(self.clone(), faults))
            .with_state(self.clone());
        super::server::spawn("ActivePlatform", app, addr, "/").await
    }
}

fn persist(inner: &Inner) -> anyhow::Result<()> {
    let Some(path) = &inner.state_file else {
        return Ok(());
    };
    let text = serde_json::to_string_pretty(&inner.data)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))?;
    Ok(())
}

/// v1's error shape.
fn v1_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// One JSON:API error object.
fn api_error(
    status: StatusCode,
    code: &str,
    detail: &str,
    pointer: Option<&str>,
) -> serde_json::Value {
    let mut e = serde_json::json!({
        "status": status.as_u16().to_string(),
        "code": code,
        "title": status.canonical_reason().unwrap_or("Error"),
        "detail": detail,
    });
    if let Some(p) = pointer {
        e["source"] = serde_json::json!({ "pointer": p });
    }
    e
}

/// v3's error shape: a JSON:API document with `errors`.
fn v3_errors(status: StatusCode, errors: Vec<serde_json::Value>) -> Response {
    let mut response =
        (status, axum::Json(serde_json::json!({ "errors": errors }))).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_API));
    response
}

fn v3_error(status: StatusCode, code: &str, detail: &str) -> Response {
    v3_errors(status, vec![api_error(status, code, detail, None)])
}

fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("api_token") => format!("{k}=REDACTED"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Records every request; injected faults come first, before authentication, like a proxy or
/// an overloaded server.
async fn faults(State(sim): State<ActivePlatformSim>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let fault = {
        let mut inner = sim.lock();
        let line = format!(
            "{} {}{}",
            request.method(),
            path,
            request
                .uri()
                .query()
                .map(|q| format!("?{}", redact_query(q)))
                .unwrap_or_default()
        );
        inner.requests.push(line);
        if let Some((n, status, location)) = inner.redirect_next.take().filter(|r| r.0 > 0) {
            inner.redirect_next = Some((n - 1, status, location.clone()));
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::TEMPORARY_REDIRECT);
            return (status, [(header::LOCATION, location)]).into_response();
        }
        match inner.fail_next.filter(|(n, _)| *n > 0) {
            Some((n, status)) => {
                inner.fail_next = Some((n - 1, status));
                Some(status)
            }
            None => None,
        }
    };
    let Some(status) = fault else {
        return next.run(request).await;
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = status.canonical_reason().unwrap_or("Simulated failure");
    let mut response = if path.starts_with("/api/v3/") {
        v3_error(status, &status.as_u16().to_string(), reason)
    } else {
        v1_error(status, reason)
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
    }
    response
}

async fn not_found(request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if path.starts_with("/api/v3/") {
        v3_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("No route {path}"),
        )
    } else {
        v1_error(StatusCode::NOT_FOUND, &format!("No route {path}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_strings_with_at_most_two_decimals() {
        for ok in ["12.50", "-3", "0.5", "100"] {
            assert!(valid_total(ok), "{ok}");
        }
        for bad in ["12.505", "1.", ".5", "-", "1e3", "", "12,50"] {
            assert!(!valid_total(bad), "{bad}");
        }
    }
}
