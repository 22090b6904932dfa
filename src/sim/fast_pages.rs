//! Pre-rendered pages of the billable-users API for `tally bench`: every page of a generated
//! month rendered once into [`Bytes`] before anything is timed, so that the server is never
//! what a benchmark measures.
//!
//! It answers the list the way [`super::billable_users`] does, with the same JSON, the same
//! generator ([`BillableUsersSim::generate_org`]) and the same checks (bearer token, then
//! `X-4me-Account`, then the query, by the simulator's own parser), so that tally parses its
//! pages exactly as the real connector does: `Link` with `rel="next"`, `X-Pagination-*` and
//! an hourly `X-RateLimit-*` window announcing a budget no benchmark uses up (a 429 would
//! still come, faithfully, if one did).
//!
//! What it does not do, because a benchmark never asks: one month at one `per_page` only (any
//! other month, page size or an `id` filter is a 422 saying so), no CSV form, no OAuth, no
//! injected faults. Links name the address it listens on, not the request's `Host`.
//!
//! It runs on its own thread with its own tokio runtime. The benchmark runs tally's pipeline
//! as a child `tally run` process, so the pages held here never count in the peak memory
//! measured there; the bare fetch (the yardstick) runs on the benchmark's runtime, and a
//! runtime of its own keeps the server's answers from queueing behind the yardstick's parsing.

use super::billable_users::{BillableUsersSim, Params, Person, links, message, set};
use crate::domain::Period;
use anyhow::Context as _;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The path the pages are served at, under the API root `/v1`.
const PATH: &str = "/v1/account/billable_users";
/// The window the rate-limit headers describe: the documented hour.
const WINDOW: Duration = Duration::from_secs(3_600);

/// The month to serve and who may read it.
#[derive(Debug, Clone)]
pub struct FastPagesSpec {
    pub period: Period,
    pub orgs: usize,
    pub people_per_org: usize,
    /// Records per page (the API caps it at 100).
    pub per_page: usize,
    pub token: String,
    pub account: String,
    /// The requests the rate-limit headers announce for the hour; the benchmark sets it far
    /// above what it asks for.
    pub hourly_budget: u64,
}

/// Everything a request needs, built before the server starts.
struct Rendered {
    spec: FastPagesSpec,
    /// Page `n` (1-based) is `bodies[n - 1]`.
    bodies: Vec<Bytes>,
    /// The `Link` header of each page.
    links: Vec<HeaderValue>,
    total_entries: usize,
    host: String,
    /// The rate-limit window's end, in epoch seconds (rounded up, as the simulator does).
    reset: u64,
    used: AtomicU64,
    requests: AtomicU64,
}

/// The running server. Dropping it stops the server and joins its thread.
pub struct FastPages {
    addr: SocketAddr,
    rendered: Arc<Rendered>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for FastPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPages")
            .field("addr", &self.addr)
            .field("pages", &self.rendered.bodies.len())
            .finish()
    }
}

impl FastPages {
    /// Binds a free loopback port, renders every page of `spec`'s month, and serves them from
    /// a thread of its own. Rendering is done when this returns.
    pub fn start(spec: FastPagesSpec) -> anyhow::Result<Self> {
        if spec.per_page == 0 {
            anyhow::bail!("per_page must be at least 1");
        }
        let listener = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .context("binding the pre-rendered pages server to a loopback port")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let rendered = Arc::new(render(spec, &addr.to_string())?);

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-pages")
            .enable_all()
            .build()
            .context("starting the pages server's runtime")?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = Router::new()
            .route(PATH, get(list))
            .with_state(rendered.clone());
        let thread = std::thread::Builder::new()
            .name("bench-pages".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            tracing::warn!(error = %e, "the pages server could not listen");
                            return;
                        }
                    };
                    let served = axum::serve(listener, router)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                    if let Err(e) = served {
                        tracing::warn!(error = %e, "the pages server stopped");
                    }
                });
            })
            .context("starting the pages server's thread")?;
        Ok(Self {
            addr,
            rendered,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The API root a connector's `base_url` takes: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The list's URL, without a query.
    pub fn list_url(&self) -> String {
        format!("http://{}{PATH}", self.addr)
    }

    /// The number of pages of the month.
    pub fn pages(&self) -> usize {
        self.rendered.bodies.len()
    }

    /// The number of people of the month.
    pub fn records(&self) -> usize {
        self.rendered.total_entries
    }

    /// The bytes of every page's body together.
    pub fn body_bytes(&self) -> usize {
        self.rendered.bodies.iter().map(Bytes::len).sum()
    }

    /// Requests received so far, refused ones included.
    pub fn requests(&self) -> u64 {
        self.rendered.requests.load(Ordering::Relaxed)
    }
}

impl Drop for FastPages {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Every page's body and `Link`, walking the generator one organization at a time so that
/// only the rendered bytes stay.
fn render(spec: FastPagesSpec, host: &str) -> anyhow::Result<Rendered> {
    let total = spec.orgs * spec.people_per_org;
    let pages = total.div_ceil(spec.per_page);
    let mut bodies = Vec::with_capacity(pages);
    let mut page: Vec<Person> = Vec::with_capacity(spec.per_page);
    for org in 0..spec.orgs {
        for person in BillableUsersSim::generate_org(spec.period, org, spec.people_per_org) {
            page.push(person);
            if page.len() == spec.per_page {
                bodies.push(Bytes::from(serde_json::to_vec(&page)?));
                page.clear();
            }
        }
    }
    if !page.is_empty() {
        bodies.push(Bytes::from(serde_json::to_vec(&page)?));
    }
    let query = month_query(spec.period);
    let links = (1..=pages)
        .map(|n| {
            let next = (n < pages).then_some(n + 1);
            let link = links(host, PATH, &query, n, spec.per_page, pages, next);
            HeaderValue::from_str(&link).context("a Link header that is not a header value")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let window_end = SystemTime::now() + WINDOW;
    let since = window_end.duration_since(UNIX_EPOCH).unwrap_or_default();
    Ok(Rendered {
        spec,
        bodies,
        links,
        total_entries: total,
        host: host.to_owned(),
        reset: since.as_secs() + u64::from(since.subsec_nanos() > 0),
        used: AtomicU64::new(0),
        requests: AtomicU64::new(0),
    })
}

/// The query the connector sends, as its links repeat it (`page` and `per_page` are added).
fn month_query(period: Period) -> Vec<(String, String)> {
    vec![
        ("year".to_owned(), period.year().to_string()),
        ("month".to_owned(), period.month().to_string()),
    ]
}

/// `GET /v1/account/billable_users`: the simulator's checks in its order, then a page.
async fn list(
    State(pages): State<Arc<Rendered>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    pages.requests.fetch_add(1, Ordering::Relaxed);
    let spec = &pages.spec;
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(spec.token.as_str()) {
        return message(
            StatusCode::UNAUTHORIZED,
            "The access token is missing, invalid or expired",
        );
    }
    match headers.get("x-4me-account").and_then(|v| v.to_str().ok()) {
        Some(account) if account == spec.account => {}
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

    let used = pages.used.fetch_add(1, Ordering::Relaxed) + 1;
    if used > spec.hourly_budget {
        let mut response = message(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
        let out = response.headers_mut();
        let wait = pages.reset.saturating_sub(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        );
        set(out, "retry-after", wait.max(1));
        rate_limit_headers(&pages, out, 0);
        return response;
    }
    let remaining = spec.hourly_budget - used;

    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).unwrap_or_default();
    let params = match Params::parse(&pairs) {
        Ok(params) => params,
        Err(errors) => {
            let mut response = super::billable_users::validation_failed(&errors);
            rate_limit_headers(&pages, response.headers_mut(), remaining);
            return response;
        }
    };
    if params.period != spec.period || params.per_page != spec.per_page || params.ids.is_some() {
        let mut response = message(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!(
                "the benchmark's pre-rendered pages serve {} at per_page={} without an id \
                 filter only",
                spec.period, spec.per_page
            ),
        );
        rate_limit_headers(&pages, response.headers_mut(), remaining);
        return response;
    }

    let total_pages = pages.bodies.len();
    let (body, link) = match pages.bodies.get(params.page - 1) {
        Some(body) => (body.clone(), pages.links[params.page - 1].clone()),
        // Past the last page: `[]` with the same headers, as the simulator answers.
        None => {
            let link = links(
                &pages.host,
                PATH,
                &pairs,
                params.page,
                spec.per_page,
                total_pages,
                None,
            );
            match HeaderValue::from_str(&link) {
                Ok(link) => (Bytes::from_static(b"[]"), link),
                Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        }
    };
    let mut response = Response::new(Body::from(body));
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    rate_limit_headers(&pages, out, remaining);
    set(out, "x-pagination-per-page", spec.per_page);
    set(out, "x-pagination-current-page", params.page);
    set(out, "x-pagination-total-pages", total_pages);
    set(out, "x-pagination-total-entries", pages.total_entries);
    out.insert(header::LINK, link);
    response
}

fn rate_limit_headers(pages: &Rendered, headers: &mut HeaderMap, remaining: u64) {
    set(headers, "x-ratelimit-limit", pages.spec.hourly_budget);
    set(headers, "x-ratelimit-remaining", remaining);
    set(headers, "x-ratelimit-reset", pages.reset);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FastPagesSpec {
        FastPagesSpec {
            period: "2026-10".parse().unwrap(),
            orgs: 3,
            people_per_org: 7,
            per_page: 5,
            token: "t".into(),
            account: "a".into(),
            hourly_budget: 1_000,
        }
    }

    #[test]
    fn the_pages_hold_the_generated_month_in_order() {
        let spec = spec();
        let rendered = render(spec.clone(), "127.0.0.1:1").unwrap();
        assert_eq!(rendered.bodies.len(), 5, "21 people at 5 a page");
        let people: Vec<Person> = rendered
            .bodies
            .iter()
            .flat_map(|b| serde_json::from_slice::<Vec<Person>>(b).unwrap())
            .collect();
        assert_eq!(
            people,
            BillableUsersSim::generate(spec.period, spec.orgs, spec.people_per_org)
        );
        let last = rendered.links[4].to_str().unwrap();
        assert!(!last.contains("rel=\"next\""), "{last}");
        let first = rendered.links[0].to_str().unwrap();
        assert!(
            first.contains("year=2026&month=10&page=2&per_page=5>; rel=\"next\""),
            "{first}"
        );
    }
}
