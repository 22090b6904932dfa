//! A RamBase simulator faithful to docs/connectors/rambase.md: OAuth client credentials, the usages list with
//! `$top`/`$pageKey` paging, the create operation, RamBase's error shape, and faults to test
//! against (refusals, rate limits, a POST whose answer is lost).
//!
//! Like the real API it offers no idempotency key. As in real RamBase, each recurring invoice
//! plan has its own periods ([`RamBaseSim::add_plan_period`]): a period id that is not one of
//! the plan's is error 105729 (404), the error real RamBase answered when one period id was
//! configured for every plan (the vendor documents only 105702 and 105728; the shape is the same).
//! [`RamBaseSim::add_period`] still makes a period every plan has, for the one-period demo.
//! Its own choices where the documentation is silent: bad parameters are 100010 (400); a bad body
//! is 100020 (400); a date outside the period is 100030 (400); a missing or unknown token is
//! 101001 (401). `$filter` and `$orderby` are refused (400) rather than ignored, so that nothing
//! comes to rely on a filter the simulator would not apply. `$db` is accepted and ignored (one
//! company). Lists are in usage id order. Knobs (off by default) make the list lie about its
//! `paging.size` or skip a page (`rambase/paging.rs`).

mod paging;
use paging::{PagingFaults, page_key, parse_page_key};

pub use super::server::SimHandle;
use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// The price per unit the simulator charges on every item (`usageAmount = quantity × price`).
pub const UNIT_PRICE: Decimal = Decimal::from_parts(1000, 0, 0, false, 2);

/// Documented page size limits (RamBase's documentation).
const DEFAULT_TOP: usize = 10;
const MAX_TOP: usize = 80;

/// One usage as the simulator holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimUsage {
    /// Recurring invoice plan it was registered on.
    pub plan_id: u64,
    /// Plan item it was registered on.
    pub item_id: u64,
    /// Recurring invoice period it was registered in.
    pub period_id: u64,
    /// Increasing from 1, never reused.
    pub usage_id: u64,
    /// The usage date the client sent.
    pub date: NaiveDate,
    /// The whole quantity the client sent (negative for a correction).
    pub quantity: i64,
    /// When the simulator stored it.
    pub created_at: DateTime<Utc>,
}

/// What survives a restart when a state file is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Persisted {
    plan_items: BTreeSet<(u64, u64)>,
    /// Periods every plan has (the simulator's shortcut for a one-period set-up).
    periods: BTreeMap<u64, (NaiveDate, NaiveDate)>,
    /// plan id → its own periods (period id → first and last day), as in real RamBase.
    #[serde(default)]
    plan_periods: BTreeMap<u64, BTreeMap<u64, (NaiveDate, NaiveDate)>>,
    usages: Vec<SimUsage>,
    next_usage_id: u64,
    posts_received: u64,
}

#[derive(Debug, Default)]
struct Inner {
    data: Persisted,
    state_file: Option<PathBuf>,
    tokens: HashSet<String>,
    tokens_issued: u64,
    fail_after_accept: u32,
    fail_next: Option<(u32, u16)>,
    rate_limit_next: Option<(u32, u64)>,
    /// `METHOD /path?query` of every request, in arrival order.
    requests: Vec<String>,
    /// A lying `paging.size` or a skipped page (see `rambase/paging.rs`); off by default.
    paging: PagingFaults,
}

/// The simulator. Clones share one state (an `Arc` inside).
#[derive(Debug, Clone)]
pub struct RamBaseSim {
    client_id: Arc<str>,
    client_secret: Arc<str>,
    inner: Arc<Mutex<Inner>>,
}

impl RamBaseSim {
    /// A simulator that issues tokens to this one API client.
    pub fn new(client_id: &str, client_secret: &str) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            inner: Arc::new(Mutex::new(Inner {
                data: Persisted {
                    next_usage_id: 1,
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

    /// Makes a recurring invoice plan item exist.
    pub fn add_plan_item(&self, plan_id: u64, item_id: u64) {
        let mut inner = self.lock();
        inner.data.plan_items.insert((plan_id, item_id));
        if let Err(e) = persist(&inner) {
            tracing::error!(error = %e, "RamBase simulator could not save its state");
        }
    }

    /// Makes a recurring invoice period that every plan has. Real RamBase gives each plan its
    /// own periods ([`add_plan_period`](Self::add_plan_period)); this shortcut keeps one-period
    /// set-ups (the demo, the benchmark) short.
    pub fn add_period(&self, period_id: u64, first_day: NaiveDate, last_day: NaiveDate) {
        let mut inner = self.lock();
        inner.data.periods.insert(period_id, (first_day, last_day));
        if let Err(e) = persist(&inner) {
            tracing::error!(error = %e, "RamBase simulator could not save its state");
        }
    }

    /// Makes a recurring invoice period of one plan exist: usage posted to it on another plan
    /// is refused with 404 105729, as real RamBase does.
    pub fn add_plan_period(
        &self,
        plan_id: u64,
        period_id: u64,
        first_day: NaiveDate,
        last_day: NaiveDate,
    ) {
        let mut inner = self.lock();
        inner
            .data
            .plan_periods
            .entry(plan_id)
            .or_default()
            .insert(period_id, (first_day, last_day));
        if let Err(e) = persist(&inner) {
            tracing::error!(error = %e, "RamBase simulator could not save its state");
        }
    }

    /// Persist state (plans, periods, usages, next id) to this JSON file after every change and
    /// load it if it exists, so a second process sees what the first left (write temp + rename).
    /// Plans and periods added before are kept; usages come from the file. Tokens are not
    /// persisted: a new process asks clients to sign in again, as a restarted server may.
    pub fn with_state_file(self, path: PathBuf) -> anyhow::Result<Self> {
        {
            let mut inner = self.lock();
            if path.exists() {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let loaded: Persisted = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a simulator state file", path.display()))?;
                if !inner.data.usages.is_empty() {
                    anyhow::bail!("with_state_file must be called before any usage is recorded");
                }
                let mut data = loaded;
                data.plan_items
                    .extend(inner.data.plan_items.iter().copied());
                data.periods.extend(inner.data.periods.clone());
                for (plan, periods) in &inner.data.plan_periods {
                    data.plan_periods
                        .entry(*plan)
                        .or_default()
                        .extend(periods.clone());
                }
                data.next_usage_id = data.next_usage_id.max(1);
                inner.data = data;
            }
            inner.state_file = Some(path);
            persist(&inner)?;
        }
        Ok(self)
    }

    /// Everything received, in usage id order.
    pub fn usages(&self) -> Vec<SimUsage> {
        self.lock().data.usages.clone()
    }

    /// Records a usage as if someone had registered it in RamBase (test set-up: many usages,
    /// or a writer other than tally). Returns its usage id.
    pub fn insert_usage(
        &self,
        plan_id: u64,
        item_id: u64,
        period_id: u64,
        date: NaiveDate,
        quantity: i64,
    ) -> u64 {
        let mut inner = self.lock();
        let usage_id = inner.data.next_usage_id;
        inner.data.next_usage_id += 1;
        inner.data.usages.push(SimUsage {
            plan_id,
            item_id,
            period_id,
            usage_id,
            date,
            quantity,
            created_at: Utc::now(),
        });
        if let Err(e) = persist(&inner) {
            tracing::error!(error = %e, "RamBase simulator could not save its state");
        }
        usage_id
    }

    /// `METHOD /path?query` of every request received, in order (tokens are in headers or
    /// form bodies, never here, unless a client sends `$access_token`).
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// POSTs that created a usage.
    pub fn posts_received(&self) -> u64 {
        self.lock().data.posts_received
    }

    /// Tokens issued so far by this instance.
    pub fn tokens_issued(&self) -> u64 {
        self.lock().tokens_issued
    }

    /// Invalidates every issued token, as an expiry would: the next API call gets a 401.
    pub fn revoke_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// The next `n` POSTs store their usage, then answer 503: the answer is lost, the usage is
    /// not.
    pub fn fail_next_post_after_accept(&self, n: u32) {
        self.lock().fail_after_accept = n;
    }

    /// Refuses the next `n` requests (any endpoint) with `status` and RamBase's error shape.
    pub fn fail_next(&self, n: u32, status: u16) {
        self.lock().fail_next = Some((n, status));
    }

    /// Answers the next `n` requests with 429 and `Retry-After: retry_after_secs`.
    pub fn rate_limit_next(&self, n: u32, retry_after_secs: u64) {
        self.lock().rate_limit_next = Some((n, retry_after_secs));
    }

    /// Starts serving on `addr` (port 0 picks a free port).
    pub async fn serve(&self, addr: SocketAddr) -> anyhow::Result<SimHandle> {
        let usages_path = "/sales/recurring-invoice-plans/{plan}/items/{item}/recurring-invoice-periods/{period}/usages";
        let app = Router::new()
            .route("/oauth2/access_token", post(token))
            .route(usages_path, get(list_usages).post(create_usage))
            .layer(middleware::from_fn_with_state(self.clone(), faults))
            .with_state(self.clone());
        super::server::spawn("RamBase", app, addr, "/").await
    }
}

/// Writes the state to a temporary file and renames it over the state file, so that a crash
/// leaves either the old or the new state.
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

fn error(status: StatusCode, id: u64, message: &str) -> Response {
    let body = serde_json::json!({
        "httpStatusCode": status.as_u16(),
        "httpStatusDescription": status.canonical_reason().unwrap_or(""),
        "message": message,
        "errorMessage": { "errorMessageId": id },
    });
    (status, axum::Json(body)).into_response()
}

/// Injected faults come first, before authentication, like a proxy or an overloaded server.
async fn faults(State(sim): State<RamBaseSim>, request: Request, next: Next) -> Response {
    let fault = {
        let mut inner = sim.lock();
        let uri = request.uri();
        let line = format!(
            "{} {}{}",
            request.method(),
            uri.path(),
            uri.query().map(|q| format!("?{q}")).unwrap_or_default()
        );
        inner.requests.push(line);
        if let Some((n, secs)) = inner.rate_limit_next.filter(|(n, _)| *n > 0) {
            inner.rate_limit_next = Some((n - 1, secs));
            Some(Err(secs))
        } else if let Some((n, status)) = inner.fail_next.filter(|(n, _)| *n > 0) {
            inner.fail_next = Some((n - 1, status));
            Some(Ok(status))
        } else {
            None
        }
    };
    match fault {
        Some(Err(secs)) => {
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, 429, "Too Many Requests");
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        }
        Some(Ok(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let id = if status == StatusCode::UNAUTHORIZED {
                101001
            } else {
                u64::from(status.as_u16())
            };
            error(
                status,
                id,
                status.canonical_reason().unwrap_or("Simulated failure"),
            )
        }
        None => next.run(request).await,
    }
}

#[derive(Deserialize)]
struct TokenForm {
    client_id: Option<String>,
    client_secret: Option<String>,
    grant_type: Option<String>,
}

async fn token(State(sim): State<RamBaseSim>, body: Bytes) -> Response {
    // Decoded from the bytes rather than by axum's `Form`, which would answer its own error shape.
    let Ok(form) = serde_urlencoded::from_bytes::<TokenForm>(&body) else {
        return error(StatusCode::BAD_REQUEST, 100010, "Body must be a form");
    };
    if form.grant_type.as_deref() != Some("client_credentials") {
        return error(
            StatusCode::BAD_REQUEST,
            100010,
            "grant_type must be client_credentials",
        );
    }
    let (Some(id), Some(secret)) = (form.client_id, form.client_secret) else {
        return error(
            StatusCode::BAD_REQUEST,
            100010,
            "client_id and client_secret are required",
        );
    };
    if id != *sim.client_id || secret != *sim.client_secret {
        return error(
            StatusCode::UNAUTHORIZED,
            101001,
            "Invalid client credentials",
        );
    }
    let mut inner = sim.lock();
    inner.tokens_issued += 1;
    let access = format!("sim-{:016x}{:08x}", fastrand::u64(..), inner.tokens_issued);
    let refresh = format!("simr-{:016x}", fastrand::u64(..));
    inner.tokens.insert(access.clone());
    axum::Json(serde_json::json!({
        "access_token": access,
        "expires_in": 3600,
        "refresh_token": refresh,
    }))
    .into_response()
}

/// `Authorization: Bearer <token>` or `$access_token`, checked against issued tokens.
fn authorized(sim: &RamBaseSim, headers: &HeaderMap, query: &HashMap<String, String>) -> bool {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let token = from_header.or_else(|| query.get("$access_token").cloned());
    token.is_some_and(|t| sim.lock().tokens.contains(&t))
}

fn wants_json(headers: &HeaderMap, query: &HashMap<String, String>) -> bool {
    if let Some(format) = query.get("$format") {
        return format.eq_ignore_ascii_case("json");
    }
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// Checks ids and existence; the target's ids on success.
fn resolve(
    sim: &RamBaseSim,
    (plan, item, period): (String, String, String),
) -> Result<(u64, u64, u64, NaiveDate, NaiveDate), Box<Response>> {
    let parse = |s: &str, min: u64, name: &str| {
        s.parse::<u64>().ok().filter(|v| *v >= min).ok_or_else(|| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                100010,
                &format!("{name} must be an integer, minimum {min}"),
            ))
        })
    };
    let plan = parse(&plan, 100_000, "recurringInvoicePlanId")?;
    let item = parse(&item, 1, "itemId")?;
    let period = parse(&period, 100_000, "recurringInvoicePeriodId")?;
    let inner = sim.lock();
    if !inner.data.plan_items.iter().any(|(p, _)| *p == plan) {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            105702,
            "Recurring invoice plan not found",
        )));
    }
    if !inner.data.plan_items.contains(&(plan, item)) {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            105728,
            "Recurring invoice plan item not found",
        )));
    }
    let own = inner
        .data
        .plan_periods
        .get(&plan)
        .and_then(|periods| periods.get(&period));
    let Some((first, last)) = own.or_else(|| inner.data.periods.get(&period)).copied() else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            105729,
            "Recurring invoice period not found",
        )));
    };
    Ok((plan, item, period, first, last))
}

fn usage_json(u: &SimUsage) -> serde_json::Value {
    serde_json::json!({
        "usageId": u.usage_id,
        "createdAt": u.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "date": u.date.format("%Y-%m-%d").to_string(),
        "quantity": u.quantity,
        "usageAmount": (Decimal::from(u.quantity) * UNIT_PRICE).to_string(),
    })
}

fn usage_xml(u: &SimUsage) -> String {
    format!(
        "<Usage><UsageId>{}</UsageId><CreatedAt>{}</CreatedAt><Date>{}</Date><Quantity>{}</Quantity><UsageAmount>{}</UsageAmount></Usage>",
        u.usage_id,
        u.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        u.date.format("%Y-%m-%d"),
        u.quantity,
        Decimal::from(u.quantity) * UNIT_PRICE
    )
}

fn xml(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>{body}"),
    )
        .into_response()
}

async fn list_usages(
    State(sim): State<RamBaseSim>,
    Path(ids): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&sim, &headers, &query) {
        return error(
            StatusCode::UNAUTHORIZED,
            101001,
            "Access token is missing, invalid or expired",
        );
    }
    let (plan, item, period, _, _) = match resolve(&sim, ids) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    for unsupported in ["$filter", "$orderby"] {
        if query.contains_key(unsupported) {
            return error(
                StatusCode::BAD_REQUEST,
                100010,
                &format!("{unsupported} is not supported by the simulator"),
            );
        }
    }
    let top = match query.get("$top") {
        None => DEFAULT_TOP,
        Some(t) => match t.parse::<usize>() {
            Ok(t) if (1..=MAX_TOP).contains(&t) => t,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    100010,
                    &format!("$top must be an integer from 1 to {MAX_TOP}"),
                );
            }
        },
    };
    let target = (plan, item, period);
    let offset = match query.get("$pageKey") {
        None => 0,
        Some(k) => match parse_page_key(k, target) {
            Some(o) => o,
            None => return error(StatusCode::BAD_REQUEST, 100010, "Invalid $pageKey"),
        },
    };
    let all: Vec<SimUsage> = sim
        .lock()
        .data
        .usages
        .iter()
        .filter(|u| (u.plan_id, u.item_id, u.period_id) == target)
        .cloned()
        .collect();
    let page: Vec<&SimUsage> = all.iter().skip(offset).take(top).collect();
    let expand_paging = query.get("$expand").is_some_and(|e| {
        e.split(',')
            .any(|f| f.trim().eq_ignore_ascii_case("PagingDetails"))
    });
    let mut paging = serde_json::json!({
        "pageSize": top,
        "position": offset + 1,
        "page": offset / top + 1,
    });
    if expand_paging {
        let last_offset = if all.is_empty() {
            0
        } else {
            (all.len() - 1) / top * top
        };
        paging["firstPageKey"] = page_key(target, 0).into();
        paging["lastPageKey"] = page_key(target, last_offset).into();
        if offset > 0 {
            paging["previousPageKey"] = page_key(target, offset.saturating_sub(top)).into();
        }
        let faults = sim.lock().paging;
        if let Some(next) = faults.next_offset(offset, top, all.len()) {
            paging["nextPageKey"] = page_key(target, next).into();
        }
    }
    if query
        .get("$inlinecount")
        .is_some_and(|c| c.eq_ignore_ascii_case("allpages"))
    {
        paging["size"] = sim.lock().paging.size(all.len()).into();
    }
    if wants_json(&headers, &query) {
        let usages: Vec<serde_json::Value> = page.iter().map(|u| usage_json(u)).collect();
        axum::Json(serde_json::json!({ "usages": usages, "paging": paging })).into_response()
    } else {
        let items: String = page.iter().map(|u| usage_xml(u)).collect();
        xml(
            StatusCode::OK,
            format!(
                "<Usages>{items}<Paging><PageSize>{top}</PageSize><Position>{}</Position></Paging></Usages>",
                offset + 1
            ),
        )
    }
}

async fn create_usage(
    State(sim): State<RamBaseSim>,
    Path(ids): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&sim, &headers, &query) {
        return error(
            StatusCode::UNAUTHORIZED,
            101001,
            "Access token is missing, invalid or expired",
        );
    }
    let (plan, item, period, first, last) = match resolve(&sim, ids) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, 100020, m);
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return bad("Body must be JSON: {\"usage\":{\"date\":\"YYYY-MM-DD\",\"quantity\":N}}");
    };
    let Some(usage) = value.get("usage").filter(|u| u.is_object()) else {
        return bad("Body must hold a usage object");
    };
    // serde_json reads 3.0 as a float, so `as_i64` refuses 3.0, 2.5 and "3" alike.
    let Some(quantity) = usage.get("quantity").and_then(|q| q.as_i64()) else {
        return bad("Quantity must be an integer");
    };
    let Some(date) = usage
        .get("date")
        .and_then(|d| d.as_str())
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
    else {
        return bad("Date must be a date, YYYY-MM-DD");
    };
    if date < first || date > last {
        return error(
            StatusCode::BAD_REQUEST,
            100030,
            &format!("Date {date} is outside the recurring invoice period ({first} to {last})"),
        );
    }
    let (created, lose_answer, saved) = {
        let mut inner = sim.lock();
        let created = SimUsage {
            plan_id: plan,
            item_id: item,
            period_id: period,
            usage_id: inner.data.next_usage_id,
            date,
            quantity,
            created_at: Utc::now(),
        };
        inner.data.next_usage_id += 1;
        inner.data.posts_received += 1;
        inner.data.usages.push(created.clone());
        let lose_answer = inner.fail_after_accept > 0;
        if lose_answer {
            inner.fail_after_accept -= 1;
        }
        let saved = persist(&inner);
        (created, lose_answer, saved)
    };
    if let Err(e) = saved {
        tracing::error!(error = %e, "RamBase simulator could not save its state");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            500,
            "Simulator could not save its state",
        );
    }
    if lose_answer {
        return error(StatusCode::SERVICE_UNAVAILABLE, 503, "Service Unavailable");
    }
    if wants_json(&headers, &query) {
        (
            StatusCode::CREATED,
            axum::Json(serde_json::json!({ "usage": usage_json(&created) })),
        )
            .into_response()
    } else {
        xml(StatusCode::CREATED, usage_xml(&created))
    }
}
