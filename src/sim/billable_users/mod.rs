//! A simulator of the "Billable Users" API (docs/connectors/billable-users.md), served in-process on a loopback port
//! for tests and the benchmark.
//!
//! Faithful to the contract: bearer token (a personal token, or an access token issued by
//! `POST /token` for OAuth client credentials) and `X-4me-Account` enforced, `page`/`per_page`
//! paging (default 20, larger than 100 silently capped) with `X-Pagination-*` and `Link`
//! headers, an hourly `X-RateLimit-*` window that answers a real 429 when used up, and error
//! bodies `{"message": ...}` (422 adds `errors: [[field, message]]`). It offers nothing the
//! real API lacks.
//!
//! Choices where the vendor's documentation is open:
//! - The token is checked before the account (401), then the account: a missing or unknown
//!   `X-4me-Account` answers **404** `{"message":"Account ... not found"}`, because the
//!   account scopes the data like a path would, and 404 does not tell a caller which accounts
//!   exist.
//! - Requests refused for the token or the account do not count against the rate limit (there
//!   is no known token to count them for); injected faults neither.
//! - Without `year` and `month` the current month (UTC) is listed, as "all current billable
//!   users"; one without the other, or a value that is not a month, is a 422.
//! - A page past the last answers `[]` with the same headers (Rails-style); an empty month
//!   has 0 total pages and `first`/`last` links to page 1.
//! - The "20 requests in 2 seconds" burst limit of the service's documentation is not simulated: docs/connectors/billable-users.md only
//!   publishes the hourly window.
//! - The CSV form (`.csv`) answers the same people, paging, headers and `Link`s (pointing at
//!   `.csv`) as the JSON form; its header row is the nine field names in the JSON order, with
//!   empty cells for null, CRLF line ends, and a tab before values beginning with `= + - @`.
//!   Refusals stay JSON `{"message": ...}`, as they are for the real API's `.csv` URLs.
//! - OAuth (docs/connectors/billable-users.md, and the vendor's published client-credentials grant): the real service
//!   lives on another host (`oauth.<host>`); here `POST /token` is served on the same port, at
//!   the root, so a connector's `oauth_url` is `http://127.0.0.1:PORT`. It takes only a form
//!   body (`application/x-www-form-urlencoded`) with `grant_type=client_credentials`,
//!   `client_id` and `client_secret`, and answers `{"access_token", "token_type": "Bearer",
//!   "expires_in", "created_at"}`. Refusals are `400 {"error", "error_description"}` (the
//!   vendor documents 400 for every invalid request): `invalid_request` (not a form, a field
//!   missing), `unsupported_grant_type`, `invalid_client` (unknown client or wrong secret).
//!   Issued tokens stop working after their lifetime (1 h, or what a test sets), or when a test
//!   calls [`BillableUsersSim::expire_tokens`]; the API then answers the same 401 as for any
//!   unknown token. Token requests do not count against the API's rate limit (another host).
//! - Knobs (`paging.rs`, off by default) make the list skip a page, announce totals that lie or
//!   change between pages, or redirect to another address.

mod access;
mod csv_form;
mod generate;
mod paging;
use access::*;
use csv_form::*;
use paging::PagingFaults;

pub use super::server::SimHandle;
use crate::domain::Period;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{Datelike, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The documented hourly allowance.
const HOURLY_LIMIT: u32 = 3_600;
/// The documented lifetime of an access token issued for client credentials (docs/connectors/billable-users.md).
const TOKEN_LIFETIME: Duration = Duration::from_secs(3_600);
const DEFAULT_PER_PAGE: usize = 20;
const MAX_PER_PAGE: usize = 100;
/// The CSV export's columns, as the JSON form names and orders the fields.
pub const CSV_COLUMNS: [&str; 9] = [
    "id",
    "primary_email",
    "name",
    "organization",
    "business_unit",
    "region",
    "sign_ins",
    "last_visit",
    "updates",
];

/// One billable person, with the API's field names and order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub id: u64,
    pub primary_email: String,
    pub name: String,
    pub organization: String,
    pub business_unit: Option<String>,
    pub region: String,
    pub sign_ins: u64,
    /// RFC 3339 with offset, e.g. `2015-10-30T15:22:25-05:00`.
    pub last_visit: Option<String>,
    pub updates: u64,
}

/// One request as the simulator received it, refused ones included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// E.g. `/v1/account/billable_users.csv`.
    pub path: String,
    /// The raw query string, e.g. `year=2026&month=10&page=1&per_page=100`.
    pub query: String,
    /// The `Accept` header, if any.
    pub accept: Option<String>,
}

/// The simulated API: its data and the faults to inject. Clones share one state.
#[derive(Debug, Clone)]
pub struct BillableUsersSim {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    token: String,
    account: String,
    requests: AtomicU64,
    /// `POST /token` requests, refused ones included.
    token_requests: AtomicU64,
    state: Mutex<SimState>,
}

#[derive(Debug)]
struct SimState {
    people: HashMap<Period, Arc<Vec<Person>>>,
    /// Requests still to refuse with 429, and the `Retry-After` they carry.
    rate_limit_next: u32,
    /// The `Retry-After` value as sent: any text, for tests of a peer that sends garbage.
    retry_after: String,
    /// Requests still to refuse with `fail_status`.
    fail_next: u32,
    fail_status: u16,
    limit: u32,
    window: Duration,
    window_end: SystemTime,
    used: u32,
    /// The CSV export's columns in order (`None`: [`CSV_COLUMNS`]).
    csv_columns: Option<Vec<String>>,
    /// Whether the CSV export puts a tab before values beginning with `= + - @`.
    csv_guard: bool,
    /// A raw line the next CSV answer carries after its rows (a broken export).
    csv_corrupt_next: Option<String>,
    received: Vec<Received>,
    /// OAuth applications: client id → client secret.
    oauth_clients: HashMap<String, String>,
    /// Access tokens issued by `POST /token`, and when each stops working.
    issued: HashMap<String, Instant>,
    /// How long tokens issued from now on work.
    token_lifetime: Duration,
    /// Whether token answers carry `expires_in` (the field is optional in OAuth 2.0).
    send_expires_in: bool,
    /// Skipped pages, lying totals, a redirect elsewhere (see `paging.rs`); off by default.
    paging: PagingFaults,
}

impl BillableUsersSim {
    /// A simulator that accepts `Authorization: Bearer {token}` and `X-4me-Account: {account}`.
    pub fn new(token: &str, account: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                token: token.to_owned(),
                account: account.to_owned(),
                requests: AtomicU64::new(0),
                token_requests: AtomicU64::new(0),
                state: Mutex::new(SimState {
                    people: HashMap::new(),
                    rate_limit_next: 0,
                    retry_after: "0".to_owned(),
                    fail_next: 0,
                    fail_status: 500,
                    limit: HOURLY_LIMIT,
                    window: Duration::from_secs(3_600),
                    window_end: UNIX_EPOCH,
                    used: 0,
                    csv_columns: None,
                    csv_guard: true,
                    csv_corrupt_next: None,
                    received: Vec::new(),
                    oauth_clients: HashMap::new(),
                    issued: HashMap::new(),
                    token_lifetime: TOKEN_LIFETIME,
                    send_expires_in: true,
                    paging: PagingFaults::default(),
                }),
            }),
        }
    }

    /// Replaces the billable people listed for `period`, in the order they are served.
    pub fn set_people(&self, period: Period, people: Vec<Person>) {
        self.state().people.insert(period, Arc::new(people));
    }

    /// The people listed for `period` (empty when none were set).
    pub fn people(&self, period: Period) -> Vec<Person> {
        self.state()
            .people
            .get(&period)
            .map(|p| p.as_ref().clone())
            .unwrap_or_default()
    }

    /// The next `n` requests are refused with 429 and `Retry-After: retry_after_secs`.
    pub fn rate_limit_next(&self, n: u32, retry_after_secs: u64) {
        self.rate_limit_next_with(n, &retry_after_secs.to_string());
    }

    /// The next `n` requests are refused with 429 and `Retry-After: {retry_after}` exactly as
    /// given (`1e20`, `-1`, an HTTP-date, garbage): what a misbehaving peer or proxy may send.
    pub fn rate_limit_next_with(&self, n: u32, retry_after: &str) {
        let mut state = self.state();
        state.rate_limit_next = n;
        state.retry_after = retry_after.to_owned();
    }

    /// The next `n` requests are refused with `status` and `{"message": ...}` (a 422 also
    /// carries `errors: [["month", "is invalid"]]`, the shape of the API's own 422).
    pub fn fail_next(&self, n: u32, status: u16) {
        let mut state = self.state();
        state.fail_next = n;
        state.fail_status = status;
    }

    /// Changes the rate-limit window (documented: 3,600 requests an hour) so that a test can
    /// use one up; the current window starts over.
    pub fn set_rate_limit(&self, limit: u32, window: Duration) {
        let mut state = self.state();
        state.limit = limit;
        state.window = window;
        state.window_end = UNIX_EPOCH;
        state.used = 0;
    }

    /// Requests served so far, refused ones included.
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// Every request received so far, in order, refused ones included.
    pub fn received(&self) -> Vec<Received> {
        self.state().received.clone()
    }

    /// The CSV export's header row from now on: these columns in this order (a name that is
    /// not a field gives an empty column). The exact header is not published (docs/connectors/billable-users.md), so
    /// tests use this to show what tally does when the export changes.
    pub fn set_csv_columns(&self, columns: &[&str]) {
        self.state().csv_columns = Some(columns.iter().map(|c| (*c).to_owned()).collect());
    }

    /// Whether the CSV export guards values beginning with `= + - @` with a tab (default
    /// true; the contract says they *may* be guarded, so both must read the same).
    pub fn set_csv_formula_guard(&self, on: bool) {
        self.state().csv_guard = on;
    }

    /// The next CSV answer carries `line` (raw, unquoted, CRLF added) after its rows, as a
    /// broken export would.
    pub fn corrupt_next_csv(&self, line: &str) {
        self.state().csv_corrupt_next = Some(line.to_owned());
    }

    /// Registers an OAuth application that may sign in with client credentials at
    /// `POST /token`; the personal token keeps working beside it.
    pub fn add_oauth_client(&self, client_id: &str, client_secret: &str) {
        self.state()
            .oauth_clients
            .insert(client_id.to_owned(), client_secret.to_owned());
    }

    /// How long access tokens issued from now on work (documented: 1 h), so that a test can
    /// make one expire in the middle of a run. Their `expires_in` says the same, in whole
    /// seconds rounded down, unless [`send_expires_in`](Self::send_expires_in) is off.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.state().token_lifetime = lifetime;
    }

    /// Whether token answers carry `expires_in` (default true). Without it a client must rely
    /// on the documented hour, and finds out about an earlier expiry from a 401.
    pub fn send_expires_in(&self, on: bool) {
        self.state().send_expires_in = on;
    }

    /// Every access token issued so far stops working now, as when the application is
    /// disabled or its tokens revoked.
    pub fn expire_tokens(&self) {
        self.state().issued.clear();
    }

    /// `POST /token` requests received so far, refused ones included. [`requests`](Self::requests)
    /// and [`received`](Self::received) count the API's requests only.
    pub fn token_requests(&self) -> u64 {
        self.inner.token_requests.load(Ordering::SeqCst)
    }

    /// Binds `addr` (port 0 picks a free one) and serves until the handle is shut down or
    /// dropped.
    pub async fn serve(&self, addr: SocketAddr) -> anyhow::Result<SimHandle> {
        let router = Router::new()
            .route("/v1/account/billable_users", get(list_json))
            .route("/v1/account/billable_users.csv", get(list_csv))
            .route("/token", post(issue_token))
            .with_state(self.clone());
        super::server::spawn("billable users", router, addr, "/v1").await
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        // A test that panicked while holding the lock must not hide its own failure behind a
        // poisoned mutex in every later request.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Clone, Copy)]
enum Format {
    Json,
    Csv,
}

async fn list_json(
    State(sim): State<BillableUsersSim>,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    receive(&sim, &uri, &headers);
    list(&sim, &uri, &headers, &query, Format::Json)
}

async fn list_csv(
    State(sim): State<BillableUsersSim>,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    receive(&sim, &uri, &headers);
    list(&sim, &uri, &headers, &query, Format::Csv)
}

fn receive(sim: &BillableUsersSim, uri: &Uri, headers: &HeaderMap) {
    sim.inner.requests.fetch_add(1, Ordering::SeqCst);
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    sim.state().received.push(Received {
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        accept,
    });
}

fn list(
    sim: &BillableUsersSim,
    uri: &Uri,
    headers: &HeaderMap,
    query: &[(String, String)],
    format: Format,
) -> Response {
    if let Some(refusal) = injected_fault(sim) {
        return refusal;
    }

    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !bearer.is_some_and(|token| admits(sim, token)) {
        return message(
            StatusCode::UNAUTHORIZED,
            "The access token is missing, invalid or expired",
        );
    }
    match headers.get("x-4me-account").and_then(|v| v.to_str().ok()) {
        Some(account) if account == sim.inner.account => {}
        Some(account) => {
            return message(
                StatusCode::NOT_FOUND,
                &format!("Account '{account}' not found"),
            );
        }
        None => {
            return message(
                StatusCode::NOT_FOUND,
                "Account not found: the X-4me-Account header is missing",
            );
        }
    }

    let limits = match take_rate_limit(sim) {
        Ok(limits) => limits,
        Err(UsedUp {
            limits,
            retry_after_secs,
        }) => {
            let mut response = message(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
            let headers = response.headers_mut();
            set(headers, "retry-after", retry_after_secs);
            limits.apply(headers);
            return response;
        }
    };

    let params = match Params::parse(query) {
        Ok(params) => params,
        Err(errors) => {
            let mut response = validation_failed(&errors);
            limits.apply(response.headers_mut());
            return response;
        }
    };

    let faults = sim.state().paging.clone();
    if let Some(redirect) = faults.redirect(params.page, uri) {
        return redirect;
    }
    let all = sim
        .state()
        .people
        .get(&params.period)
        .cloned()
        .unwrap_or_default();
    let bounds = |total: usize| {
        let start = (params.page - 1).saturating_mul(params.per_page).min(total);
        (start, start.saturating_add(params.per_page).min(total))
    };
    // Without an `id` filter the page is a slice of the month: the benchmark's 100,000 people
    // are not walked for every request.
    let (total, page): (usize, Vec<&Person>) = match &params.ids {
        None => {
            let (start, end) = bounds(all.len());
            (all.len(), all[start..end].iter().collect())
        }
        Some(ids) => {
            let selected: Vec<&Person> = all.iter().filter(|p| ids.contains(&p.id)).collect();
            let (start, end) = bounds(selected.len());
            (selected.len(), selected[start..end].to_vec())
        }
    };
    let total_pages = faults.total_pages(params.page, total.div_ceil(params.per_page));

    let mut response = match format {
        Format::Json => axum::Json(page).into_response(),
        Format::Csv => match csv_page(sim, &page) {
            Ok(body) => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response(),
            Err(e) => {
                return message(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("CSV could not be written: {e}"),
                );
            }
        },
    };
    let out = response.headers_mut();
    limits.apply(out);
    set(out, "x-pagination-per-page", params.per_page);
    set(out, "x-pagination-current-page", params.page);
    set(out, "x-pagination-total-pages", total_pages);
    set(
        out,
        "x-pagination-total-entries",
        faults.total_entries(params.page, total),
    );
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let path = match format {
        Format::Json => "/v1/account/billable_users",
        Format::Csv => "/v1/account/billable_users.csv",
    };
    let next = faults.next_page(params.page, total_pages);
    let link = links(
        host,
        path,
        query,
        params.page,
        params.per_page,
        total_pages,
        next,
    );
    if let Ok(value) = HeaderValue::from_str(&link) {
        out.insert(header::LINK, value);
    }
    response
}

/// The query of a list request, checked the way the API checks it.
pub(super) struct Params {
    pub(super) period: Period,
    pub(super) page: usize,
    pub(super) per_page: usize,
    /// The `id` filter (`id=552` or `id=552,70`).
    pub(super) ids: Option<Vec<u64>>,
}

impl Params {
    pub(super) fn parse(
        query: &[(String, String)],
    ) -> Result<Self, Vec<(&'static str, &'static str)>> {
        let get = |name: &str| {
            query
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.trim())
        };
        let mut errors = Vec::new();
        let now = Utc::now();
        let year = match (get("year"), get("month")) {
            (None, None) => Some(now.year()),
            (None, Some(_)) => {
                errors.push(("year", "is missing"));
                None
            }
            (Some(y), _) => match y.parse::<i32>() {
                Ok(y) if (1970..=9999).contains(&y) => Some(y),
                _ => {
                    errors.push(("year", "is invalid"));
                    None
                }
            },
        };
        let month = match (get("year"), get("month")) {
            (None, None) => Some(now.month()),
            (Some(_), None) => {
                errors.push(("month", "is missing"));
                None
            }
            (_, Some(m)) => match m.parse::<u32>() {
                Ok(m) if (1..=12).contains(&m) => Some(m),
                _ => {
                    errors.push(("month", "is invalid"));
                    None
                }
            },
        };
        let page = match get("page") {
            None => 1,
            Some(p) => match p.parse::<usize>() {
                Ok(p) if p >= 1 => p,
                _ => {
                    errors.push(("page", "is invalid"));
                    1
                }
            },
        };
        let per_page = match get("per_page") {
            None => DEFAULT_PER_PAGE,
            Some(p) => match p.parse::<usize>() {
                Ok(p) if p >= 1 => p.min(MAX_PER_PAGE),
                _ => {
                    errors.push(("per_page", "is invalid"));
                    DEFAULT_PER_PAGE
                }
            },
        };
        let ids = match get("id") {
            None => None,
            Some(list) => match list
                .split(',')
                .map(|id| id.trim().parse::<u64>())
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(ids) => Some(ids),
                Err(_) => {
                    errors.push(("id", "is invalid"));
                    None
                }
            },
        };
        match (year, month) {
            (Some(year), Some(month)) if errors.is_empty() => match Period::new(year, month) {
                Ok(period) => Ok(Self {
                    period,
                    page,
                    per_page,
                    ids,
                }),
                Err(_) => Err(vec![("month", "is invalid")]),
            },
            _ => Err(errors),
        }
    }
}

/// `Link` with first, prev, next (to `next`, when the list goes on) and last, each the
/// request's own query with `page` and `per_page` replaced, as absolute URLs on the request's
/// host.
pub(super) fn links(
    host: &str,
    path: &str,
    query: &[(String, String)],
    page: usize,
    per_page: usize,
    total_pages: usize,
    next: Option<usize>,
) -> String {
    let last = total_pages.max(1);
    let url = |target: usize| {
        let mut pairs: Vec<(&str, String)> = query
            .iter()
            .filter(|(k, _)| k != "page" && k != "per_page")
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        pairs.push(("page", target.to_string()));
        pairs.push(("per_page", per_page.to_string()));
        let encoded: Vec<String> = pairs
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    crate::http::encode_query_value(k),
                    crate::http::encode_query_value(v)
                )
            })
            .collect();
        format!("http://{host}{path}?{}", encoded.join("&"))
    };
    let mut entries = vec![format!("<{}>; rel=\"first\"", url(1))];
    if page > 1 {
        entries.push(format!("<{}>; rel=\"prev\"", url((page - 1).min(last))));
    }
    if let Some(next) = next {
        entries.push(format!("<{}>; rel=\"next\"", url(next)));
    }
    entries.push(format!("<{}>; rel=\"last\"", url(last)));
    entries.join(", ")
}

pub(super) fn message(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "message": text }))).into_response()
}

pub(super) fn validation_failed(errors: &[(&str, &str)]) -> Response {
    let pairs: Vec<[&str; 2]> = errors.iter().map(|(f, m)| [*f, *m]).collect();
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(serde_json::json!({ "message": "Validation failed", "errors": pairs })),
    )
        .into_response()
}

pub(super) fn set(headers: &mut HeaderMap, name: &'static str, value: impl ToString) {
    if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

#[cfg(test)]
mod tests;
