//! A Genesys Cloud simulator faithful to docs/connectors/genesys.md: the login service's client-credentials
//! token (`POST /oauth/token`, Basic auth), and `GET /api/v2/billing/reports/billableusage`
//! with its `BillingUsageReport`, `InProgress` before `Complete`, Genesys' error shape
//! `{message, code, status, contextId, details, errors}`, and faults to test against.
//!
//! One server plays both hosts (`api.` and `login.`): point both base URLs at
//! [`SimHandle::base_url`]. Its own choices where the documentation is silent:
//! - A token belongs to the org of the OAuth client it was issued to, and the report is that
//!   org's (the API has no org parameter: the token says whose data it is).
//! - Refused client credentials answer `401 {"error":"invalid_client", "description",
//!   "error_description"}` (the OAuth shape of the login service); a missing or wrong
//!   `grant_type` is `400 unsupported_grant_type`.
//! - Tokens expire after `expires_in` (default 86,400 s, Genesys' default) or when a test calls
//!   [`GenesysSim::expire_tokens`]; an API call with a missing, unknown or expired token answers
//!   `401 bad.credentials`.
//! - `startDate` and `endDate` are required ISO 8601 instants in UTC (ending in `Z`, with or
//!   without milliseconds) with `startDate < endDate`; otherwise `400 bad.request`. The
//!   simulator holds usage per calendar month, so a range that is not exactly one UTC month
//!   is also a `400` (the real API would compute any range; nothing tally does needs that).
//! - Injected faults (`fail_next`, `rate_limit_next`) come first, before authentication, on
//!   either endpoint, like an overloaded gateway; they are counted as requests.

pub use super::server::SimHandle;
use crate::domain::Period;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const REPORT_PATH: &str = "/api/v2/billing/reports/billableusage";
const TOKEN_PATH: &str = "/oauth/token";
/// Genesys' default access token lifetime.
const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 86_400;

/// One entry of a report's `usages`, with the API's field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenesysUsage {
    /// The charge (license) name, e.g. `Genesys Cloud CX 3`.
    pub name: String,
    /// A decimal number in a string, e.g. `"5.500"`.
    pub total_usage: String,
    pub resources: Vec<GenesysResource>,
}

/// One resource of a usage: a user e-mail or device id, and its first billable use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesysResource {
    pub name: String,
    /// ISO 8601, `yyyy-MM-ddTHH:mm:ss.SSSZ`.
    pub date: String,
}

impl GenesysUsage {
    /// A usage whose resources are `resources` (one unit each), `totalUsage` their count.
    pub fn of_resources(name: &str, resources: Vec<GenesysResource>) -> Self {
        Self {
            name: name.to_owned(),
            total_usage: resources.len().to_string(),
            resources,
        }
    }
}

/// The report range a request asked for, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportQuery {
    /// The org of the token that asked.
    pub org_id: String,
    pub start_date: String,
    pub end_date: String,
}

/// An org the demo serves: short name, org id, OAuth client id and secret (a sandbox's, not
/// secrets).
pub const DEMO_ORGS: &[(&str, &str, &str, &str)] = &[
    (
        "acme",
        "5d6f2b1e-3c4a-4e8b-9a01-ac0e00000001",
        "genesys-demo-acme",
        "demo-secret-acme",
    ),
    (
        "globex",
        "8a0c9e7d-1b2f-4c3d-8e4f-61ebe0000002",
        "genesys-demo-globex",
        "demo-secret-globex",
    ),
];

/// The usage names of the demo data; the last is deliberately absent from the demo's license
/// mapping, so that it shows as an exception.
pub const DEMO_USAGE_NAMES: &[&str] = &[
    "Genesys Cloud CX 1",
    "Genesys Cloud CX 3",
    "Genesys Cloud WEM Add-on",
];

struct OAuthClient {
    org_id: String,
    secret: String,
}

struct Token {
    org_id: String,
    expires_at: Instant,
}

#[derive(Default)]
struct Inner {
    /// client id → its org and secret.
    clients: HashMap<String, OAuthClient>,
    /// (lower-case org id, period) → usages.
    usage: HashMap<(String, Period), Vec<GenesysUsage>>,
    /// lower-case org id → report requests still to answer `InProgress`.
    in_progress: HashMap<String, u32>,
    tokens: HashMap<String, Token>,
    token_lifetime_secs: u64,
    tokens_issued: u64,
    fail_next: Option<(u32, u16)>,
    rate_limit_next: Option<(u32, u64)>,
    token_requests: u64,
    report_requests: u64,
    report_queries: Vec<ReportQuery>,
}

/// The simulator. Clones share one state (an `Arc` inside).
#[derive(Clone)]
pub struct GenesysSim {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for GenesysSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GenesysSim(..)")
    }
}

impl Default for GenesysSim {
    fn default() -> Self {
        Self::new()
    }
}

impl GenesysSim {
    /// A simulator with no org, no usage and no fault.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                token_lifetime_secs: DEFAULT_TOKEN_LIFETIME_SECS,
                ..Inner::default()
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic in another handler must not take the simulator down with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an OAuth client (client credentials grant) of org `org_id`.
    pub fn add_org(&self, org_id: &str, client_id: &str, client_secret: &str) {
        self.lock().clients.insert(
            client_id.to_owned(),
            OAuthClient {
                org_id: org_id.to_ascii_lowercase(),
                secret: client_secret.to_owned(),
            },
        );
    }

    /// Replaces org `org_id`'s usage in `period` (what its report lists once `Complete`).
    pub fn set_usage(&self, org_id: &str, period: Period, usages: Vec<GenesysUsage>) {
        self.lock()
            .usage
            .insert((org_id.to_ascii_lowercase(), period), usages);
    }

    /// The next `n` report requests of org `org_id` answer `InProgress` with no usages.
    pub fn in_progress_polls(&self, org_id: &str, n: u32) {
        self.lock()
            .in_progress
            .insert(org_id.to_ascii_lowercase(), n);
    }

    /// Refuses the next `n` requests (either endpoint) with `status` in Genesys' error shape
    /// (a 429 carries `Retry-After: 1`).
    pub fn fail_next(&self, n: u32, status: u16) {
        self.lock().fail_next = Some((n, status));
    }

    /// Answers the next `n` requests with 429, `Retry-After: retry_after_secs` and the
    /// `inin-ratelimit-*` headers.
    pub fn rate_limit_next(&self, n: u32, retry_after_secs: u64) {
        self.lock().rate_limit_next = Some((n, retry_after_secs));
    }

    /// Invalidates every issued token, as an expiry would: the next API call gets a 401.
    pub fn expire_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// The `expires_in` (seconds) of tokens issued from now on; they stop working after it.
    pub fn set_token_lifetime(&self, secs: u64) {
        self.lock().token_lifetime_secs = secs;
    }

    /// Token requests received (refused and faulted ones included).
    pub fn token_requests(&self) -> u64 {
        self.lock().token_requests
    }

    /// Tokens issued.
    pub fn tokens_issued(&self) -> u64 {
        self.lock().tokens_issued
    }

    /// Report requests received (refused, faulted and `InProgress` ones included).
    pub fn report_requests(&self) -> u64 {
        self.lock().report_requests
    }

    /// The ranges of the report requests that passed authentication, in order.
    pub fn report_queries(&self) -> Vec<ReportQuery> {
        self.lock().report_queries.clone()
    }

    /// Deterministic usage of org number `org_index` in `period`: for each of
    /// [`DEMO_USAGE_NAMES`], a few users (`user<N>@org<I>.example`) first seen on varying
    /// days of the month; the add-on is metered fractionally (`"<n>.500"`).
    pub fn generate(period: Period, org_index: usize, users: usize) -> Vec<GenesysUsage> {
        let seed = (period.year() as usize * 12 + period.month() as usize) + org_index * 7;
        let days = period.last_day().day() as usize;
        let resource = |n: usize| GenesysResource {
            name: format!("user{n}@org{}.example", org_index + 1),
            date: format!(
                "{}T{:02}:{:02}:00.000Z",
                period
                    .first_day()
                    .with_day(((n * 5 + seed) % days + 1) as u32)
                    .unwrap_or(period.first_day()),
                (n + seed) % 24,
                (n * 13) % 60
            ),
        };
        let cx1 = (seed % 3) + users / 2;
        let cx3 = users.saturating_sub(users / 2) + seed % 2;
        vec![
            GenesysUsage::of_resources(DEMO_USAGE_NAMES[0], (0..cx1).map(resource).collect()),
            GenesysUsage::of_resources(
                DEMO_USAGE_NAMES[1],
                (cx1..cx1 + cx3).map(resource).collect(),
            ),
            GenesysUsage {
                name: DEMO_USAGE_NAMES[2].to_owned(),
                total_usage: format!("{}.500", seed % 4 + 1),
                resources: (0..2).map(resource).collect(),
            },
        ]
    }

    /// Registers the [`DEMO_ORGS`] with their OAuth clients and [`generate`](Self::generate)d
    /// usage for `period` (5 and 9 users).
    pub fn load_demo(&self, period: Period) {
        for (index, (_, org_id, client_id, secret)) in DEMO_ORGS.iter().enumerate() {
            self.add_org(org_id, client_id, secret);
            self.set_usage(org_id, period, Self::generate(period, index, 5 + index * 4));
        }
    }

    /// Starts serving on `addr` (port 0 picks a free port).
    pub async fn serve(&self, addr: SocketAddr) -> anyhow::Result<SimHandle> {
        let app = Router::new()
            .route(TOKEN_PATH, post(token))
            .route(REPORT_PATH, get(report))
            .layer(middleware::from_fn_with_state(self.clone(), faults))
            .with_state(self.clone());
        super::server::spawn("Genesys", app, addr, "").await
    }
}

/// `{message, code, status, contextId, details, errors}`, Genesys' error body.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "message": message,
        "code": code,
        "status": status.as_u16(),
        "contextId": format!("sim-{:016x}", fastrand::u64(..)),
        "details": [],
        "errors": [],
    });
    (status, axum::Json(body)).into_response()
}

/// The login service's OAuth error body.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = serde_json::json!({
        "error": error,
        "description": description,
        "error_description": description,
    });
    (status, axum::Json(body)).into_response()
}

/// Counts requests, then injects the faults a test asked for.
async fn faults(State(sim): State<GenesysSim>, request: Request, next: Next) -> Response {
    let fault = {
        let mut inner = sim.lock();
        match request.uri().path() {
            TOKEN_PATH => inner.token_requests += 1,
            REPORT_PATH => inner.report_requests += 1,
            _ => {}
        }
        if let Some((n, secs)) = inner.rate_limit_next.filter(|(n, _)| *n > 0) {
            inner.rate_limit_next = Some((n - 1, secs));
            Some((429, secs))
        } else if let Some((n, status)) = inner.fail_next.filter(|(n, _)| *n > 0) {
            inner.fail_next = Some((n - 1, status));
            Some((status, 1))
        } else {
            None
        }
    };
    let Some((status, retry_after)) = fault else {
        return next.run(request).await;
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status == StatusCode::TOO_MANY_REQUESTS {
        let mut response = error(
            status,
            "too.many.requests",
            &format!(
                "Rate limit exceeded the maximum. Retry the request in [{retry_after}] seconds"
            ),
        );
        let headers = response.headers_mut();
        set(headers, "retry-after", retry_after);
        set(headers, "inin-ratelimit-count", 301);
        set(headers, "inin-ratelimit-allowed", 300);
        set(headers, "inin-ratelimit-reset", retry_after);
        return response;
    }
    let code = match status.as_u16() {
        401 => "bad.credentials",
        403 => "missing.permissions",
        404 => "not.found",
        503 => "service.unavailable",
        s if s >= 500 => "internal.server.error",
        _ => "bad.request",
    };
    error(
        status,
        code,
        &format!(
            "{} (simulated)",
            status.canonical_reason().unwrap_or("Simulated failure")
        ),
    )
}

/// `POST /oauth/token`: Basic auth with the client's id and secret, form
/// `grant_type=client_credentials`.
async fn token(State(sim): State<GenesysSim>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match serde_urlencoded::from_bytes::<HashMap<String, String>>(&body) {
        Ok(form) => form,
        Err(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be application/x-www-form-urlencoded",
            );
        }
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        );
    }
    let Some((client_id, secret)) = basic_credentials(&headers) else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication (HTTP Basic) is required",
        );
    };
    let mut inner = sim.lock();
    let org_id = match inner.clients.get(&client_id) {
        Some(client) if client.secret == secret => client.org_id.clone(),
        Some(_) => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            );
        }
        None => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client not found",
            );
        }
    };
    inner.tokens_issued += 1;
    let access = format!("sim-{:016x}{:08x}", fastrand::u64(..), inner.tokens_issued);
    let lifetime = inner.token_lifetime_secs;
    inner.tokens.insert(
        access.clone(),
        Token {
            org_id,
            expires_at: Instant::now() + Duration::from_secs(lifetime),
        },
    );
    axum::Json(serde_json::json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": lifetime,
    }))
    .into_response()
}

/// `GET /api/v2/billing/reports/billableusage?startDate=..&endDate=..`.
async fn report(
    State(sim): State<GenesysSim>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let org_id = {
        let inner = sim.lock();
        bearer
            .and_then(|t| inner.tokens.get(t))
            .filter(|t| Instant::now() < t.expires_at)
            .map(|t| t.org_id.clone())
    };
    let Some(org_id) = org_id else {
        return error(
            StatusCode::UNAUTHORIZED,
            "bad.credentials",
            "Invalid login credentials.",
        );
    };

    let get = |name: &str| {
        query
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let (start_text, end_text) = match (get("startDate"), get("endDate")) {
        (Some(s), Some(e)) => (s, e),
        (None, _) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad.request",
                "The request could not be understood by the server due to malformed syntax. startDate is required",
            );
        }
        (_, None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad.request",
                "The request could not be understood by the server due to malformed syntax. endDate is required",
            );
        }
    };
    let (start, end) = match (parse_instant(&start_text), parse_instant(&end_text)) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(()), _) => return bad_date("startDate", &start_text),
        (_, Err(())) => return bad_date("endDate", &end_text),
    };
    if start >= end {
        return error(
            StatusCode::BAD_REQUEST,
            "bad.request",
            "startDate must be before endDate",
        );
    }
    let Some(period) = whole_month(start, end) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad.request",
            "the simulator serves whole UTC months only: startDate must be the first instant \
             of a month and endDate the first instant of the next",
        );
    };

    let mut inner = sim.lock();
    inner.report_queries.push(ReportQuery {
        org_id: org_id.clone(),
        start_date: start_text,
        end_date: end_text,
    });
    let in_progress = match inner.in_progress.get_mut(&org_id) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    };
    let usages = if in_progress {
        Vec::new()
    } else {
        inner
            .usage
            .get(&(org_id.clone(), period))
            .cloned()
            .unwrap_or_default()
    };
    let format = |at: DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::Millis, true);
    axum::Json(serde_json::json!({
        "id": format!("{org_id}-{period}"),
        "name": format!("Billable usage {period}"),
        "startDate": format(start),
        "endDate": format(end),
        "status": if in_progress { "InProgress" } else { "Complete" },
        "usages": usages,
        "selfUri": REPORT_PATH,
    }))
    .into_response()
}

fn bad_date(field: &str, value: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "bad.request",
        &format!(
            "{field} {value:?} is not a valid date: use ISO-8601 in UTC, e.g. yyyy-MM-ddTHH:mm:ss.SSSZ"
        ),
    )
}

/// An ISO 8601 instant in UTC written with `Z`.
fn parse_instant(text: &str) -> Result<DateTime<Utc>, ()> {
    if !text.ends_with('Z') {
        return Err(());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ())
}

/// The month `[start, end)` covers exactly, if it does.
fn whole_month(start: DateTime<Utc>, end: DateTime<Utc>) -> Option<Period> {
    let period = Period::new(start.year(), start.month()).ok()?;
    (period.start_utc(chrono_tz::UTC) == start && period.end_utc(chrono_tz::UTC) == end)
        .then_some(period)
}

/// `Authorization: Basic base64(id:secret)`.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(bytes).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

fn set(headers: &mut HeaderMap, name: &'static str, value: impl ToString) {
    if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period() -> Period {
        Period::new(2026, 10).unwrap()
    }

    #[test]
    fn basic_credentials_are_read_from_the_authorization_header() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            basic_credentials(&headers)
        };
        assert_eq!(
            with("Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
            Some(("aladdin".to_owned(), "opensesame".to_owned()))
        );
        assert_eq!(with("Basic Y!=="), None, "not base64");
        assert_eq!(with("Basic YWxhZGRpbg=="), None, "no colon");
        assert_eq!(with("Bearer YWxhZGRpbjpvcGVuc2VzYW1l"), None);
    }

    #[test]
    fn only_a_whole_utc_month_is_a_report_range() {
        let at = |s: &str| parse_instant(s).unwrap();
        assert_eq!(
            whole_month(at("2026-10-01T00:00:00Z"), at("2026-11-01T00:00:00.000Z")),
            Some(period())
        );
        assert_eq!(
            whole_month(at("2026-10-01T00:00:00Z"), at("2026-10-31T00:00:00Z")),
            None
        );
        assert!(parse_instant("2026-10-01T00:00:00+02:00").is_err());
        assert!(parse_instant("2026-10-01").is_err());
    }

    #[test]
    fn generated_usage_is_deterministic_and_well_formed() {
        let a = GenesysSim::generate(period(), 1, 9);
        assert_eq!(a, GenesysSim::generate(period(), 1, 9));
        assert_eq!(a.len(), DEMO_USAGE_NAMES.len());
        for usage in &a {
            assert!(usage.total_usage.parse::<rust_decimal::Decimal>().is_ok());
            for r in &usage.resources {
                assert!(DateTime::parse_from_rfc3339(&r.date).is_ok(), "{}", r.date);
            }
        }
        assert_eq!(a[0].total_usage, a[0].resources.len().to_string());
        assert!(a[2].total_usage.ends_with(".500"));
    }
}
