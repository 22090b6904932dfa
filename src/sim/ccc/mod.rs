//! A simulator of the CCC secure-messaging API v8.4 (docs/connectors/ccc.md), served in-process
//! on a loopback port for tests and the demo.
//!
//! Faithful to the contract: `POST /api/v1/login` → `sessionToken`; `POST
//! /api/services/{guid}/authenticate` → `sessionId`; later requests carry the cookie
//! `ss-id=<sessionId>`; a session belongs to its service (another service answers `403`) and
//! expires after 60 minutes idle (`401`). Users are paged with `Page`/`PageSize` (default 25);
//! usage is kept per user per day, so that a `Monthly` call is the sum of the month's days and
//! `Daily` calls add up to it. Errors are ServiceStack `responseStatus` bodies.
//!
//! Choices where the vendor's documentation is open:
//! - `PageSize` above 100 (or below 1) is a `400` with a field error, never silently capped;
//!   `Page` is 1-based and a page past the last has no results.
//! - A session token from `login` is good for one `authenticate`.
//! - Query parameter names are case-insensitive, as in ServiceStack.
//! - GUIDs are printed as 32 lower-case hex digits (the seed's format) and accepted in any
//!   spelling in paths.
//! - Injected faults (`fail_next`) apply to every request, sign-in included.
//! - Paging knobs (off by default) answer another page than the one asked for, or announce
//!   `totalItems`/`totalPages` that lie or change between pages.

mod api;
use api::*;

pub use super::server::SimHandle;
use crate::domain::Period;
use crate::sources::ccc::normalize_guid;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{Datelike, Duration as Days, NaiveDate, Utc};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

const DEFAULT_PAGE_SIZE: usize = 25;
const MAX_PAGE_SIZE: usize = 100;
/// Sessions expire after this long without a request (docs/connectors/ccc.md).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// One day's usage of one user: the UserUsage totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayUsage {
    pub messages_sent: u64,
    pub messages_received: u64,
    pub attachments_count: u64,
    /// Bytes.
    pub attachments_size: u64,
    pub invitations_sent: u64,
    pub invitations_accepted: u64,
}

impl DayUsage {
    fn add(&mut self, other: &DayUsage) {
        self.messages_sent += other.messages_sent;
        self.messages_received += other.messages_received;
        self.attachments_count += other.attachments_count;
        self.attachments_size += other.attachments_size;
        self.invitations_sent += other.invitations_sent;
        self.invitations_accepted += other.invitations_accepted;
    }

    /// Activity as docs/connectors/ccc.md defines it.
    pub fn has_activity(&self) -> bool {
        self.messages_sent + self.messages_received + self.attachments_count + self.invitations_sent
            > 0
    }
}

/// A user of a service, with its usage per day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CccUser {
    /// `serviceUserGuid`, any spelling (printed canonical).
    pub guid: String,
    pub email_address: String,
    pub first_name: String,
    pub last_name: String,
    /// `Active` or `Disabled` (anything else is served as is, to test the connector).
    pub status: String,
    /// `Professional` or `Guest` (or anything, to test unmapped groups); `None` is served as
    /// `null`.
    pub group_type: Option<String>,
    pub usage: BTreeMap<NaiveDate, DayUsage>,
}

impl CccUser {
    /// A user with no usage.
    pub fn new(guid: &str, status: &str, group_type: &str) -> Self {
        let short: String = guid
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(8)
            .collect();
        Self {
            guid: guid.to_owned(),
            email_address: format!("user.{short}@example.com"),
            first_name: "User".to_owned(),
            last_name: short,
            status: status.to_owned(),
            group_type: Some(group_type.to_owned()),
            usage: BTreeMap::new(),
        }
    }

    /// Adds `usage` on `day` (to what is there).
    pub fn with_usage(mut self, day: NaiveDate, usage: DayUsage) -> Self {
        self.usage.entry(day).or_default().add(&usage);
        self
    }

    /// The sum of the days of `period`.
    pub fn monthly_usage(&self, period: Period) -> DayUsage {
        let mut sum = DayUsage::default();
        for (_, day) in self.usage.range(period.first_day()..=period.last_day()) {
            sum.add(day);
        }
        sum
    }

    /// Deterministic demo data: `count` users with GUIDs derived from `seed`, every 4th a
    /// Guest, every 5th Disabled (half of those with activity in `period`, half without), and
    /// varied daily usage over `period`.
    pub fn generate(seed: u32, count: usize, period: Period) -> Vec<CccUser> {
        let mut users = Vec::with_capacity(count);
        for n in 0..count {
            let number = n as u64 + 1;
            let guid = format!("{seed:08x}00004000800000{number:010x}");
            let status = if n % 5 == 4 { "Disabled" } else { "Active" };
            let group = if n % 4 == 3 { "Guest" } else { "Professional" };
            let mut user = CccUser::new(&guid, status, group);
            user.first_name = FIRST_NAMES[n % FIRST_NAMES.len()].to_owned();
            user.email_address = format!(
                "{}.{number}@service{seed}.example.com",
                user.first_name.to_lowercase()
            );
            let idle = status == "Disabled" && n % 10 == 9;
            if !idle {
                for day in period
                    .first_day()
                    .iter_days()
                    .take_while(|d| *d <= period.last_day())
                {
                    let mix = u64::from(seed)
                        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        .wrapping_add(number.wrapping_mul(6_364_136_223_846_793_005))
                        .wrapping_add(
                            u64::from(day.ordinal()).wrapping_mul(1_442_695_040_888_963_407),
                        )
                        >> 29;
                    if mix % 3 != 0 {
                        continue;
                    }
                    let attachments = (mix >> 5) % 3;
                    user = user.with_usage(
                        day,
                        DayUsage {
                            messages_sent: 1 + (mix >> 2) % 6,
                            messages_received: (mix >> 3) % 9,
                            attachments_count: attachments,
                            attachments_size: attachments * (1_000 + (mix >> 7) % 50_000),
                            invitations_sent: (mix >> 9) % 2,
                            invitations_accepted: (mix >> 10) % 2,
                        },
                    );
                }
            }
            users.push(user);
        }
        users
    }

    fn list_json(&self) -> Value {
        json!({
            "serviceUserGuid": canonical(&self.guid),
            "emailAddress": self.email_address,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "status": self.status,
            "groupType": self.group_type,
            "groupName": self.group_type.as_deref().map(|g| format!("{g} users")),
            "lastLogin": self.usage.keys().next_back().map(|d| format!("{d}T09:00:00Z")),
        })
    }

    fn usage_json(&self, from: NaiveDate, to: NaiveDate) -> Value {
        let mut sum = DayUsage::default();
        let mut last_activity = None;
        for (day, usage) in self.usage.range(from..=to) {
            sum.add(usage);
            if usage.has_activity() {
                last_activity = Some(format!("{day}T12:00:00Z"));
            }
        }
        json!({
            "userGuid": canonical(&self.guid),
            "emailAddress": self.email_address,
            "isAlias": false,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "status": self.status,
            "groupName": self.group_type.as_deref().map(|g| format!("{g} users")),
            "groupType": self.group_type,
            "totalMessagesSent": sum.messages_sent,
            "totalMessagesReceived": sum.messages_received,
            "totalAttachmentsCount": sum.attachments_count,
            "totalAttachmentsSize": sum.attachments_size,
            "totalInvitationsSent": sum.invitations_sent,
            "totalInvitationsAccepted": sum.invitations_accepted,
            "lastActivity": last_activity,
        })
    }
}

const FIRST_NAMES: &[&str] = &[
    "Abbie", "Ashok", "Berit", "Carlos", "Dagny", "Elif", "Frode", "Grace", "Hiro", "Ingrid",
];

fn canonical(guid: &str) -> String {
    normalize_guid(guid).unwrap_or_else(|| guid.to_owned())
}

/// One usage request as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRequest {
    /// Canonical service GUID.
    pub service: String,
    /// Canonical user GUID.
    pub user: String,
    /// `PeriodType` as sent (`None` when absent).
    pub period_type: Option<String>,
    /// `Period` as sent (`None` when absent).
    pub period: Option<String>,
}

/// The simulated API. Clones share one state.
#[derive(Debug, Clone)]
pub struct CccSim {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    username: String,
    password: String,
    requests: AtomicU64,
    logins: AtomicU64,
    authentications: AtomicU64,
    usage_calls: AtomicU64,
    usage_in_flight: AtomicUsize,
    max_usage_in_flight: AtomicUsize,
    state: Mutex<SimState>,
}

#[derive(Debug)]
struct Session {
    service: String,
    last_used: Instant,
}

#[derive(Debug, Default)]
struct SimState {
    /// Canonical service GUID → its users, in list order.
    services: BTreeMap<String, Vec<CccUser>>,
    /// Session tokens from `login` not yet used to authenticate.
    tokens: HashSet<String>,
    sessions: HashMap<String, Session>,
    fail_next: u32,
    fail_status: u16,
    /// Requests still to serve before every session expires.
    expire_after: Option<u32>,
    /// Requests with a valid session still to refuse with 401.
    refuse_sessions: u32,
    usage_delay: Duration,
    idle_timeout: Option<Duration>,
    usage_requests: Vec<UsageRequest>,
    /// `(service, Page, PageSize)` of every users request that was served.
    users_requests: Vec<(String, usize, usize)>,
    /// Paging faults, all off by default: this page is answered with the next one (and its
    /// `currentPage`); from a page on, `totalItems` or `totalPages` announce these values.
    skip_page: Option<usize>,
    total_items: Option<(usize, u64)>,
    total_pages: Option<(usize, u64)>,
    /// A limit CCC does not publish: at most `.0` requests per fixed window of `.1`, the
    /// window opening at its first request; over it, 429 with `Retry-After` (whole seconds to
    /// the window's end, rounded up) and no `X-RateLimit-*` header.
    hidden_limit: Option<(u32, Duration)>,
    window: Option<(std::time::Instant, u32)>,
    refused_429: u64,
}

impl CccSim {
    /// A simulator whose one API user is `username` with `password`.
    pub fn new(username: &str, password: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                username: username.to_owned(),
                password: password.to_owned(),
                requests: AtomicU64::new(0),
                logins: AtomicU64::new(0),
                authentications: AtomicU64::new(0),
                usage_calls: AtomicU64::new(0),
                usage_in_flight: AtomicUsize::new(0),
                max_usage_in_flight: AtomicUsize::new(0),
                state: Mutex::new(SimState {
                    fail_status: 500,
                    idle_timeout: Some(IDLE_TIMEOUT),
                    ..SimState::default()
                }),
            }),
        }
    }

    /// Adds (or replaces) service `guid` (any spelling) with its users, in list order.
    pub fn add_service(&self, guid: &str, users: Vec<CccUser>) {
        self.state().services.insert(canonical(guid), users);
    }

    /// The next `n` requests (any endpoint) are refused with `status` and a `responseStatus`
    /// body; a 429 carries `Retry-After: 0`.
    pub fn fail_next(&self, n: u32, status: u16) {
        let mut state = self.state();
        state.fail_next = n;
        state.fail_status = status;
    }

    /// From now on at most `limit` requests (any endpoint) per fixed `window`, never announced:
    /// over it, 429 with `Retry-After` and nothing else, as an API whose limits are not
    /// published would.
    pub fn set_hidden_rate_limit(&self, limit: u32, window: Duration) {
        let mut state = self.state();
        state.hidden_limit = Some((limit, window));
        state.window = None;
    }

    /// 429s answered for the hidden rate limit so far.
    pub fn refused_429(&self) -> u64 {
        self.state().refused_429
    }

    /// Every session expires now: the next request with one gets 401.
    pub fn expire_sessions(&self) {
        self.state().sessions.clear();
    }

    /// Every session expires after `n` more requests (any endpoint) have arrived, e.g. in the
    /// middle of a page's usage calls.
    pub fn expire_sessions_after(&self, n: u32) {
        self.state().expire_after = Some(n);
    }

    /// The next `n` requests that carry a valid session are refused with 401 anyway, as if it
    /// had expired (sign-in is not affected).
    pub fn refuse_sessions_next(&self, n: u32) {
        self.state().refuse_sessions = n;
    }

    /// A users request for `page` is answered with page `page + 1` (its users and its
    /// `currentPage`), as a peer that lost count would; the page itself is never served.
    pub fn skip_page(&self, page: usize) {
        self.state().skip_page = Some(page);
    }

    /// From page `from_page` on, `totalItems` announces `total` whatever the service holds:
    /// higher or lower than the truth, or a change between pages.
    pub fn announce_total_items(&self, from_page: usize, total: u64) {
        self.state().total_items = Some((from_page, total));
    }

    /// From page `from_page` on, `totalPages` announces `pages`: more than there are makes the
    /// pages past the end empty ones with `currentPage < totalPages`.
    pub fn announce_total_pages(&self, from_page: usize, pages: u64) {
        self.state().total_pages = Some((from_page, pages));
    }

    /// Turns every paging knob off again: the honest API.
    pub fn honest_paging(&self) {
        let mut state = self.state();
        state.skip_page = None;
        state.total_items = None;
        state.total_pages = None;
    }

    /// Every usage call takes this long, so that concurrent calls overlap observably.
    pub fn set_usage_delay(&self, delay: Duration) {
        self.state().usage_delay = delay;
    }

    /// Requests received, refused ones included.
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// Successful `POST /api/v1/login`s.
    pub fn logins(&self) -> u64 {
        self.inner.logins.load(Ordering::SeqCst)
    }

    /// Successful `authenticate`s (sessions opened).
    pub fn authentications(&self) -> u64 {
        self.inner.authentications.load(Ordering::SeqCst)
    }

    /// Usage requests received, refused ones included.
    pub fn usage_calls(&self) -> u64 {
        self.inner.usage_calls.load(Ordering::SeqCst)
    }

    /// The most usage requests that were in flight at once.
    pub fn max_concurrent_usage_calls(&self) -> usize {
        self.inner.max_usage_in_flight.load(Ordering::SeqCst)
    }

    /// Every usage request received, in arrival order.
    pub fn usage_requests(&self) -> Vec<UsageRequest> {
        self.state().usage_requests.clone()
    }

    /// `(service, Page, PageSize)` of every users page served.
    pub fn users_requests(&self) -> Vec<(String, usize, usize)> {
        self.state().users_requests.clone()
    }

    /// Binds `addr` (port 0 picks a free one) and serves until the handle is shut down or
    /// dropped.
    pub async fn serve(&self, addr: SocketAddr) -> anyhow::Result<SimHandle> {
        let router = Router::new()
            .route("/api/v1/login", post(login))
            .route("/api/services/{service}/authenticate", post(authenticate))
            .route("/api/services/{service}/users", get(users))
            .route("/api/services/{service}/users/{user}/usage", get(usage))
            .fallback(|| async {
                error(StatusCode::NOT_FOUND, "NotFound", "No route matches", &[])
            })
            .with_state(self.clone());
        super::server::spawn("CCC", router, addr, "/api").await
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        // A test that panicked while holding the lock must not hide its own failure behind a
        // poisoned mutex in every later request.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts the request and applies the faults that hit every endpoint.
    fn arrive(&self) -> Option<Response> {
        self.inner.requests.fetch_add(1, Ordering::SeqCst);
        let mut state = self.state();
        match state.expire_after {
            Some(0) => {
                state.sessions.clear();
                state.expire_after = None;
            }
            Some(n) => state.expire_after = Some(n - 1),
            None => {}
        }
        if let Some((limit, window)) = state.hidden_limit {
            let now = std::time::Instant::now();
            let (opened, used) = match state.window {
                Some((opened, used)) if now < opened + window => (opened, used),
                _ => (now, 0),
            };
            if used >= limit {
                state.refused_429 += 1;
                let left = (opened + window).saturating_duration_since(now);
                let secs = left.as_millis().div_ceil(1000).max(1);
                let mut response = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    "Too Many Requests",
                    &[],
                );
                if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                state.window = Some((opened, used));
                return Some(response);
            }
            state.window = Some((opened, used + 1));
        }
        if state.fail_next > 0 {
            state.fail_next -= 1;
            let status = StatusCode::from_u16(state.fail_status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let reason = status.canonical_reason().unwrap_or("Error");
            let mut response = error(
                status,
                &reason.replace(' ', ""),
                &format!("{reason} (simulated)"),
                &[],
            );
            if status == StatusCode::TOO_MANY_REQUESTS {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
            }
            return Some(response);
        }
        None
    }

    /// The canonical service of a request whose `ss-id` cookie holds a live session of
    /// `service`, or the refusal.
    fn authorize(&self, headers: &HeaderMap, service: &str) -> Result<String, Box<Response>> {
        let service =
            normalize_guid(service).ok_or_else(|| Box::new(bad_guid("ServiceGuid", service)))?;
        let session_id = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == "ss-id")
            .map(|(_, value)| value.to_owned());
        let unauthorized = || {
            Box::new(error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Not authenticated: the session is missing, invalid or expired",
                &[],
            ))
        };
        let mut state = self.state();
        let idle_timeout = state.idle_timeout;
        let Some(id) = session_id else {
            return Err(unauthorized());
        };
        let Some(session) = state.sessions.get_mut(&id) else {
            return Err(unauthorized());
        };
        if idle_timeout.is_some_and(|t| session.last_used.elapsed() > t) {
            state.sessions.remove(&id);
            return Err(unauthorized());
        }
        session.last_used = Instant::now();
        if session.service != service {
            return Err(Box::new(error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "The session belongs to another service; authenticate against this one",
                &[],
            )));
        }
        if state.refuse_sessions > 0 {
            state.refuse_sessions -= 1;
            return Err(unauthorized());
        }
        Ok(service)
    }
}
