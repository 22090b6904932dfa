//! One HTTP client for every connector: timeouts, bounded retries with backoff and jitter,
//! `Retry-After`, and pacing by the `X-RateLimit-*` headers a peer announces.
//!
//! What is retried (docs/connectors/README.md): timeouts, connection failures, 5xx and 429 — never other
//! 4xx. A request that is not idempotent (a POST that creates something in a billing system with
//! no idempotency key) is retried only when the peer surely did not process it (429, or the
//! connection could not be made): anything else is returned as [`HttpError`] so that the caller
//! can check the billing system before sending again.

mod token;

pub use token::{FetchedToken, TokenCache};

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Retry and timeout settings of one connector (`[sources.X.http]` / `[sinks.X.http]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Seconds before one request is abandoned (and retried, if it may be).
    pub timeout_secs: u64,
    /// Retries after the first attempt, for retriable failures.
    pub max_retries: u32,
    /// First backoff in milliseconds; doubled on every retry, with jitter.
    pub backoff_ms: u64,
    /// Longest backoff between two attempts, in milliseconds.
    pub max_backoff_ms: u64,
    /// Longest `Retry-After` (seconds) tally waits for; a peer asking for more fails the call.
    pub max_retry_after_secs: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            timeout_secs: 30,
            max_retries: 5,
            backoff_ms: 500,
            max_backoff_ms: 30_000,
            max_retry_after_secs: 900,
        }
    }
}

impl HttpSettings {
    /// Every problem of the `http` table of the source or sink at `at` (e.g. `sources.ccc`).
    pub fn validate(&self, at: &str) -> Vec<crate::problem::Problem> {
        use crate::problem::Problem;
        let mut problems = Vec::new();
        if self.timeout_secs == 0 {
            problems.push(Problem::new(
                format!("{at}.http.timeout_secs"),
                "is 0: every request needs a timeout of at least 1 s",
            ));
        }
        if self.backoff_ms > self.max_backoff_ms {
            problems.push(Problem::new(
                format!("{at}.http.backoff_ms"),
                format!(
                    "is {} ms, longer than http.max_backoff_ms ({} ms)",
                    self.backoff_ms, self.max_backoff_ms
                ),
            ));
        }
        problems
    }
}

/// Percent-encodes a query name or value: everything but RFC 3986's unreserved characters,
/// for the URLs tally builds by hand (RamBase's `$`-prefixed names must stay as they are).
pub fn encode_query_value(value: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const RESERVED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(value, RESERVED).to_string()
}

/// `Ok` when `base_url` is an absolute http(s) URL with a host and without credentials, query
/// or fragment, so that tally can join API paths to it and never logs a password. `example`
/// ends each message; `credentials` says where credentials belong instead.
pub fn check_base_url(base_url: &str, example: &str, credentials: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(base_url.trim())
        .map_err(|e| format!("{base_url:?} is not a URL ({e}); {example}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{base_url:?} must start with https:// (or http:// for the simulator); {example}"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{base_url:?} has no host; {example}"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials in a URL end up in logs.
        return Err(format!("must not contain credentials; {credentials}"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{base_url:?} must not have a query or fragment; {example}"
        ));
    }
    Ok(())
}

/// Whether a request may be sent again after a failure whose outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Reads, and writes the peer deduplicates: retry on any retriable failure.
    Idempotent,
    /// Creates something with no idempotency key: retry only when the peer surely did not
    /// process the request (429, connection refused).
    NotIdempotent,
}

/// A failed HTTP call, with the method, the URL (no secrets in it) and what the peer said.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The peer answered with a non-success status (after retries, where retriable).
    #[error("{method} {url} answered {status}: {body}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        /// The response body, cut to 2,000 characters.
        body: String,
    },
    /// 429 with a `Retry-After` longer than tally is configured to wait.
    #[error(
        "{method} {url} is rate limited for {retry_after_secs} s, longer than max_retry_after_secs"
    )]
    RateLimited {
        method: Method,
        url: String,
        retry_after_secs: u64,
    },
    /// No answer within the timeout.
    #[error("{method} {url} timed out after {timeout_secs} s")]
    Timeout {
        method: Method,
        url: String,
        timeout_secs: u64,
    },
    /// The connection could not be made or broke.
    #[error("{method} {url} failed: {message}")]
    Transport {
        method: Method,
        url: String,
        message: String,
        /// True when the request surely never reached the peer (connection refused).
        not_sent: bool,
    },
    /// The peer answered 2xx but the body was not what its API documents.
    #[error("{method} {url} answered with a body tally cannot read: {message}")]
    Decode {
        method: Method,
        url: String,
        message: String,
    },
}

impl HttpError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            HttpError::RateLimited { .. } => Some(StatusCode::TOO_MANY_REQUESTS),
            _ => None,
        }
    }

    /// The response body, when the peer answered.
    pub fn body(&self) -> Option<&str> {
        match self {
            HttpError::Status { body, .. } => Some(body),
            _ => None,
        }
    }

    pub fn url(&self) -> &str {
        match self {
            HttpError::Status { url, .. }
            | HttpError::RateLimited { url, .. }
            | HttpError::Timeout { url, .. }
            | HttpError::Transport { url, .. }
            | HttpError::Decode { url, .. } => url,
        }
    }

    /// True when the peer surely did not act on the request: a 4xx answer, a 429, or a
    /// connection that was never made. False for timeouts, broken connections and 5xx, after
    /// which a billing system may hold what was sent.
    pub fn surely_not_processed(&self) -> bool {
        match self {
            HttpError::Status { status, .. } => status.is_client_error(),
            HttpError::RateLimited { .. } => true,
            HttpError::Transport { not_sent, .. } => *not_sent,
            HttpError::Timeout { .. } | HttpError::Decode { .. } => false,
        }
    }
}

/// A `reqwest::Client` with a retry policy and a rate-limit pacer. Cheap to clone? No: share
/// it by reference; one per connector instance so that pacing is per peer.
#[derive(Debug)]
pub struct HttpClient {
    /// For reads: follows a redirect only within the same origin.
    client: reqwest::Client,
    /// For writes: follows no redirect at all (a 307/308 would re-send the body elsewhere).
    writer: reqwest::Client,
    settings: HttpSettings,
    /// When the peer said its rate-limit window resets after it reported 0 requests remaining.
    paused_until: Mutex<Option<Instant>>,
}

impl HttpClient {
    pub fn new(settings: &HttpSettings) -> anyhow::Result<Self> {
        let builder = || {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(settings.timeout_secs))
                .connect_timeout(Duration::from_secs(settings.timeout_secs.min(10)))
                .user_agent(concat!("tally/", env!("CARGO_PKG_VERSION")))
        };
        let client = builder().redirect(same_origin_redirects()).build()?;
        let writer = builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            client,
            writer,
            settings: settings.clone(),
            paused_until: Mutex::new(None),
        })
    }

    /// The underlying client, to build requests with.
    pub fn inner(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends the request `build` makes, retrying per the policy, and returns a 2xx response.
    ///
    /// `build` is called once per attempt, so that a retry sends a fresh request (and picks up,
    /// say, a refreshed token).
    pub async fn send<F>(&self, idempotency: Idempotency, build: F) -> Result<Response, HttpError>
    where
        F: Fn(&reqwest::Client) -> RequestBuilder,
    {
        let mut attempt: u32 = 0;
        loop {
            self.wait_for_rate_limit().await;
            let request = build(&self.client)
                .build()
                .map_err(|e| HttpError::Transport {
                    method: Method::GET,
                    url: redact_url(e.url().map(|u| u.as_str()).unwrap_or("?")),
                    message: format!(
                        "request could not be built: {}",
                        error_chain(&e.without_url())
                    ),
                    not_sent: true,
                })?;
            let method = request.method().clone();
            let url = redact_url(request.url().as_str());
            let client = if matches!(method, Method::GET | Method::HEAD) {
                &self.client
            } else {
                &self.writer
            };
            let result = client.execute(request).await;
            let error = match result {
                Ok(response) => {
                    self.note_rate_limit(&response);
                    let status = response.status();
                    if status.is_success() {
                        return Ok(response);
                    }
                    let retry_after = retry_after(&response);
                    let body = body_text(response).await;
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        let wait = retry_after.unwrap_or_else(|| self.backoff(attempt));
                        if wait.as_secs() > self.settings.max_retry_after_secs {
                            return Err(HttpError::RateLimited {
                                method,
                                url,
                                retry_after_secs: wait.as_secs(),
                            });
                        }
                        if attempt < self.settings.max_retries {
                            tracing::warn!(%url, wait_secs = wait.as_secs_f64(), attempt, "rate limited; waiting as the peer asked");
                            tokio::time::sleep(wait).await;
                            attempt += 1;
                            continue;
                        }
                    }
                    HttpError::Status {
                        method,
                        url,
                        status,
                        body,
                    }
                }
                Err(e) if e.is_timeout() => HttpError::Timeout {
                    method,
                    url,
                    timeout_secs: self.settings.timeout_secs,
                },
                Err(e) => HttpError::Transport {
                    method,
                    url,
                    not_sent: e.is_connect(),
                    // reqwest's message holds the URL, secrets and all: the redacted one is
                    // already in `url`.
                    message: error_chain(&e.without_url()),
                },
            };
            let retriable = match &error {
                HttpError::Status { status, .. } => status.is_server_error(),
                HttpError::Timeout { .. } | HttpError::Transport { .. } => true,
                HttpError::RateLimited { .. } | HttpError::Decode { .. } => false,
            };
            let may_resend = idempotency == Idempotency::Idempotent || error.surely_not_processed();
            if !retriable || !may_resend || attempt >= self.settings.max_retries {
                return Err(error);
            }
            let wait = self.backoff(attempt);
            tracing::warn!(error = %error, wait_ms = wait.as_millis() as u64, attempt, "request failed; retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Sends like [`send`](Self::send) and decodes a JSON body.
    pub async fn send_json<T, F>(&self, idempotency: Idempotency, build: F) -> Result<T, HttpError>
    where
        T: serde::de::DeserializeOwned,
        F: Fn(&reqwest::Client) -> RequestBuilder,
    {
        let response = self.send(idempotency, build).await?;
        decode_json(response).await
    }

    /// Exponential backoff with full jitter between half and all of the step.
    fn backoff(&self, attempt: u32) -> Duration {
        let step = self
            .settings
            .backoff_ms
            .saturating_mul(1u64 << attempt.min(20))
            .min(self.settings.max_backoff_ms);
        let jittered = step / 2 + fastrand::u64(0..=step / 2);
        Duration::from_millis(jittered)
    }

    /// Remembers a rate-limit window that is used up, so the next request waits for its reset
    /// instead of provoking a 429.
    fn note_rate_limit(&self, response: &Response) {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok())
        };
        if let (Some(0), Some(reset)) =
            (header("x-ratelimit-remaining"), header("x-ratelimit-reset"))
        {
            let now = chrono::Utc::now().timestamp();
            let wait = Duration::from_secs(
                (reset - now).clamp(0, self.settings.max_retry_after_secs as i64) as u64,
            );
            tracing::info!(
                wait_secs = wait.as_secs(),
                "rate-limit window used up; pausing until it resets"
            );
            if let Ok(mut paused) = self.paused_until.lock() {
                *paused = Some(Instant::now() + wait);
            }
        }
    }

    async fn wait_for_rate_limit(&self) {
        let until = self.paused_until.lock().ok().and_then(|mut p| p.take());
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }
}

/// Decodes a 2xx response's JSON body, naming the URL on failure.
pub async fn decode_json<T: serde::de::DeserializeOwned>(
    response: Response,
) -> Result<T, HttpError> {
    let url = redact_url(response.url().as_str());
    let bytes = response.bytes().await.map_err(|e| HttpError::Transport {
        method: Method::GET,
        url: url.clone(),
        message: format!("reading the body: {}", error_chain(&e.without_url())),
        not_sent: false,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| HttpError::Decode {
        method: Method::GET,
        url,
        message: format!(
            "{e} (body starts: {})",
            preview(&String::from_utf8_lossy(&bytes))
        ),
    })
}

/// `Retry-After` in seconds (the only form the peers tally talks to use).
fn retry_after(response: &Response) -> Option<Duration> {
    let value = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

async fn body_text(response: Response) -> String {
    match response.text().await {
        Ok(text) => preview(&text),
        Err(e) => format!("(body unreadable: {e})"),
    }
}

fn preview(text: &str) -> String {
    const MAX: usize = 2_000;
    if text.len() <= MAX {
        text.to_owned()
    } else {
        let mut end = MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &text[..end])
    }
}

/// The URL without credentials or token-like query parameters, safe for logs and messages.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            let pairs: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    if lower.contains("token")
                        || lower.contains("secret")
                        || lower.contains("password")
                    {
                        (k.into_owned(), "REDACTED".to_owned())
                    } else {
                        (k.into_owned(), v.into_owned())
                    }
                })
                .collect();
            if pairs.is_empty() {
                parsed.set_query(None);
            } else {
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        Err(_) => url.to_owned(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    message
}

/// Redirects a read may follow: at most five, never to another origin (scheme, host, port).
/// Every connector sends its credentials in headers of its own (`x-api-token`, a bearer token,
/// a session cookie); reqwest strips only the standard ones on a cross-host redirect, so a peer
/// answering with another address could otherwise collect a secret — or, for a source, make
/// tally read an empty list from somewhere else and credit every line.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().map(|u| u.origin());
        if attempt.previous().len() > 5 {
            attempt.error("more than 5 redirects")
        } else if first.is_some_and(|origin| origin != attempt.url().origin()) {
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A server that answers everything with `status` and `Location: location`, counting hits.
    async fn redirecting(
        status: u16,
        location: String,
    ) -> (String, Arc<std::sync::atomic::AtomicU64>) {
        let hits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let counter = counter.clone();
            let location = location.clone();
            async move {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                axum::response::Response::builder()
                    .status(status)
                    .header("location", location)
                    .body(axum::body::Body::from("[]"))
                    .unwrap_or_default()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, hits)
    }

    #[tokio::test]
    async fn no_redirect_to_another_origin_and_none_on_a_write_is_followed() {
        // The second server answers 200 with an empty list: what a hijacked redirect would serve.
        let (elsewhere, hits) = redirecting(200, String::new()).await;
        let (peer, _) = redirecting(307, format!("{elsewhere}/collect")).await;
        let client = HttpClient::new(&HttpSettings {
            max_retries: 0,
            ..HttpSettings::default()
        })
        .unwrap();
        let read = client
            .send(Idempotency::Idempotent, |c| {
                c.get(format!("{peer}/people"))
                    .header("x-api-token", "s3cret")
            })
            .await;
        assert!(
            matches!(read, Err(HttpError::Status { status, .. }) if status.as_u16() == 307),
            "{read:?}"
        );
        let write = client
            .send(Idempotency::NotIdempotent, |c| {
                c.post(format!("{peer}/corrections"))
                    .header("x-api-token", "s3cret")
                    .body("{\"total\":\"1.00\"}")
            })
            .await;
        assert!(write.is_err(), "{write:?}");
        assert_eq!(
            hits.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the other server received nothing"
        );
    }

    #[tokio::test]
    async fn a_redirect_within_the_same_origin_is_followed_on_a_read() {
        let hits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = hits.clone();
        let app = axum::Router::new()
            .route(
                "/old",
                axum::routing::get(|| async { axum::response::Redirect::permanent("/new") }),
            )
            .route(
                "/new",
                axum::routing::get(move || {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async { "ok" }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = HttpClient::new(&HttpSettings::default()).unwrap();
        let response = client
            .send(Idempotency::Idempotent, |c| c.get(format!("{url}/old")))
            .await
            .unwrap();
        assert_eq!(response.text().await.unwrap(), "ok");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// A refused connection: reqwest's own message names the full URL, token and all; the
    /// error tally reports must carry only the redacted one.
    #[tokio::test]
    async fn a_transport_error_does_not_leak_the_token() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let client = HttpClient::new(&HttpSettings {
            max_retries: 0,
            ..HttpSettings::default()
        })
        .unwrap();
        let url =
            format!("http://127.0.0.1:{port}/api/vendor/v1/accounts.json?api_token=s3cret-token");
        let err = client
            .send(Idempotency::Idempotent, |c| c.get(&url))
            .await
            .unwrap_err();
        let message = format!("{err} {err:?}");
        assert!(
            matches!(err, HttpError::Transport { not_sent: true, .. }),
            "{message}"
        );
        assert!(!message.contains("s3cret-token"), "{message}");
        assert!(message.contains("api_token=REDACTED"), "{message}");
    }

    #[test]
    fn secrets_never_reach_a_message() {
        assert_eq!(
            redact_url("https://x.example/api/accounts.json?api_token=abc&page=2"),
            "https://x.example/api/accounts.json?api_token=REDACTED&page=2"
        );
        assert_eq!(
            redact_url("https://u:pw@x.example/a"),
            "https://u@x.example/a"
        );
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let client = HttpClient::new(&HttpSettings::default()).unwrap();
        for attempt in 0..30 {
            let wait = client.backoff(attempt);
            assert!(wait <= Duration::from_millis(30_000), "{attempt}: {wait:?}");
        }
        assert!(client.backoff(0) <= Duration::from_millis(500));
        assert!(client.backoff(3) >= Duration::from_millis(2_000));
    }
}
