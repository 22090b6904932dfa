//! The accountants' review page (`tally serve`): server-rendered HTML over the ledger, with
//! sign-in, approval and push through the same operations as `tally approve` and `tally push`.
//!
//! `auth` signs people in and out and guards every route (sessions, CSRF, the slow-down after
//! failed sign-ins); `pages` renders the periods, a period's lines and a line's detail; `forms`
//! handles approval, push and the exports; `view` turns ledger lines into what a page shows
//! (amounts with the currency's decimals, subtotals, the explanation). Templates are minijinja,
//! compiled into the binary from `templates/`, escaped as HTML; no JavaScript at all.

mod auth;
mod forms;
mod pages;
mod view;

use crate::config::Settings;
use crate::store::Store;
use anyhow::Context as _;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tracing::{error, info};

pub use auth::hash_password;

/// What every handler shares.
pub struct Web {
    pub(crate) store: Store,
    pub(crate) settings: Settings,
    templates: minijinja::Environment<'static>,
    /// One message per session (its token hash) for the next page it opens: the outcome of an
    /// approval or a push, shown in `#message` after the redirect.
    flash: Mutex<HashMap<String, String>>,
}

impl Web {
    pub fn new(store: Store, settings: Settings) -> anyhow::Result<Arc<Web>> {
        let mut templates = minijinja::Environment::new();
        for (name, source) in TEMPLATES {
            templates
                .add_template(name, source)
                .with_context(|| format!("the review page's template {name}"))?;
        }
        Ok(Arc::new(Web {
            store,
            settings,
            templates,
            flash: Mutex::new(HashMap::new()),
        }))
    }

    /// Renders a template; a template error is a bug, answered 500 and logged.
    fn render(&self, name: &str, context: minijinja::Value) -> Result<Html<String>, WebError> {
        let template = self
            .templates
            .get_template(name)
            .map_err(|e| WebError(anyhow::anyhow!("template {name}: {e}")))?;
        template
            .render(context)
            .map(Html)
            .map_err(|e| WebError(anyhow::anyhow!("rendering {name}: {e:#}")))
    }

    fn set_flash(&self, session: &str, message: String) {
        if let Ok(mut flash) = self.flash.lock() {
            flash.insert(session.to_owned(), message);
        }
    }

    fn take_flash(&self, session: &str) -> Option<String> {
        self.flash.lock().ok().and_then(|mut f| f.remove(session))
    }
}

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("templates/layout.html")),
    ("login.html", include_str!("templates/login.html")),
    ("periods.html", include_str!("templates/periods.html")),
    ("period.html", include_str!("templates/period.html")),
    ("line.html", include_str!("templates/line.html")),
    ("not_found.html", include_str!("templates/not_found.html")),
];

const STYLESHEET: &str = include_str!("templates/style.css");

/// The review page's routes, for `tally serve` and (with `serve.in_daemon`) `tally daemon`.
pub fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(pages::periods))
        .route("/periods/{period}", get(pages::period))
        .route("/periods/{period}/approve", post(forms::approve))
        .route("/periods/{period}/push", post(forms::push))
        .route("/periods/{period}/lines.csv", get(forms::lines_csv))
        .route("/periods/{period}/lines.xlsx", get(forms::lines_xlsx))
        .route("/lines/{id}", get(pages::line))
        .route("/logout", post(auth::logout))
        .route_layer(axum::middleware::from_fn_with_state(
            web.clone(),
            auth::require_session,
        ))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/style.css", get(stylesheet))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(web)
}

/// Listens on `address` until `stop` resolves; prints the address it listens on.
pub async fn serve(
    web: Arc<Web>,
    address: SocketAddr,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("serve.listen: cannot listen on {address}"))?;
    let bound = listener.local_addr().unwrap_or(address);
    info!(address = %bound, "serving the review page");
    println!("serving the review page on http://{bound}/");
    axum::serve(listener, router(web))
        .with_graceful_shutdown(stop)
        .await
        .context("the review page's server stopped")
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        STYLESHEET,
    )
}

/// No framing, no other origin's scripts or styles, no caching of pages (they show billing
/// figures and are per user); the stylesheet may keep its own caching.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; form-action 'self'; frame-ancestors 'none'"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A failure inside a handler: logged in full, answered with a plain page that shows no detail
/// (an error may quote a query or an address).
#[derive(Debug)]
pub(crate) struct WebError(anyhow::Error);

impl From<anyhow::Error> for WebError {
    fn from(e: anyhow::Error) -> Self {
        WebError(e)
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        error!(error = %format!("{:#}", self.0), "the review page failed");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Html("<!doctype html><title>tally: error</title><p>Something went wrong; the server's log says what.</p>".to_owned()),
        )
            .into_response()
    }
}
