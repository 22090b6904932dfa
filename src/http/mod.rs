//! One HTTP client for every connector: timeouts, bounded retries with backoff and jitter,
//! `Retry-After`, and pacing by the `X-RateLimit-*` headers a peer announces.
//!
//! What is retried (docs/connectors/README.md): timeouts, connection failures, 5xx and 429 — never other
//! 4xx. A request that is not idempotent (a POST that creates something in a billing system with
//! no idempotency key) is retried only when the peer surely did not process it (429, or the
//! connection could not be made): anything else is returned as [`HttpError`] so that the caller
//! can check the billing system before sending again.
//!
//! Requests of one connector in flight at once share the peer's announced budget (`budget`):
//! together they never send more than `X-RateLimit-Remaining` said the window takes. The pace a
//! 429 of an unannounced limit reveals is kept by the workers of a round together
//! (`shared_pace`).
//!
//! Every wait is bounded ([`rate_limit`]): a `Retry-After` by `max_retry_after_secs`, every wait
//! by the deadline of the run (`general.run_deadline_secs`, see [`with_deadline`]); a wait of
//! [`LONG_WAIT`] or more is logged with its reason and its end.

mod budget;
mod rate_limit;
mod settings;
mod shared_pace;
mod stats;
mod token;
mod url;

pub use rate_limit::{
    Deadline, RateLimit, RetryAfter, WaitLimit, parse_rate_limit, parse_retry_after, with_deadline,
};
pub use settings::HttpSettings;
pub use shared_pace::{SharedPace, with_shared_pace};
pub use stats::StatsSnapshot;
pub use token::{FetchedToken, TokenCache};
pub use url::{check_base_url, encode_query_value, redact_url};

pub(crate) use rate_limit::current_deadline;
use rate_limit::{WaitCause, admit_wait, quote, utc_after};
pub(crate) use shared_pace::current_shared_pace;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Waits at least this long are logged (warn) with their reason, URL and end time: shorter ones
/// are routine pacing.
pub const LONG_WAIT: Duration = Duration::from_secs(5);

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
    /// The peer asks for a wait longer than tally may wait: a `Retry-After` over
    /// `max_retry_after_secs`, or any wait ending after the run's deadline. Nothing was sent.
    #[error("{method} {url} is rate limited: {asked}, {}", rate_limited(*.wait_secs, .ends.as_ref(), .limit))]
    RateLimited {
        method: Method,
        url: String,
        /// What the peer said, quoting its header (`it answered 429 with Retry-After: "1e20"`).
        asked: String,
        /// The wait asked for, in whole seconds (saturated: `u64::MAX` for longer).
        wait_secs: u64,
        /// When the wait would end, where that is a date at all.
        ends: Option<DateTime<Utc>>,
        limit: WaitLimit,
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

/// The rest of a [`HttpError::RateLimited`] message: how long, until when, and which bound.
fn rate_limited(wait_secs: u64, ends: Option<&DateTime<Utc>>, limit: &WaitLimit) -> String {
    let wait = if wait_secs == u64::MAX {
        "a wait too long to count".to_owned()
    } else {
        format!("a wait of {wait_secs} s")
    };
    match limit {
        WaitLimit::MaxRetryAfter { max_secs } => {
            format!("{wait}, longer than http.max_retry_after_secs ({max_secs} s)")
        }
        WaitLimit::Deadline {
            deadline,
            run_deadline_secs,
        } => format!(
            "{wait}, until {}, which ends after this run's deadline {} \
             (general.run_deadline_secs = {run_deadline_secs}): tally does not wait past it",
            utc_text(ends),
            utc_text(Some(deadline))
        ),
    }
}

/// A moment for messages and logs, to the second.
fn utc_text(at: Option<&DateTime<Utc>>) -> String {
    at.map_or_else(
        || "a time past any date".to_owned(),
        |at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

impl HttpError {
    /// What to do about a failed call, for a connector whose table is `at` (`sources.ccc`):
    /// for a wait tally refused, the setting that bounds it.
    pub fn rate_limit_advice(&self, at: &str) -> String {
        match self {
            HttpError::RateLimited {
                limit: WaitLimit::MaxRetryAfter { .. },
                ..
            } => format!("run again later, or raise {at}.http.max_retry_after_secs"),
            HttpError::RateLimited {
                limit: WaitLimit::Deadline { .. },
                ..
            } => "run again once the peer's limit has reset (the next run resumes where this one \
                  stopped), or raise general.run_deadline_secs"
                .to_owned(),
            _ => "run again later".to_owned(),
        }
    }

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

    pub fn method(&self) -> &Method {
        match self {
            HttpError::Status { method, .. }
            | HttpError::RateLimited { method, .. }
            | HttpError::Timeout { method, .. }
            | HttpError::Transport { method, .. }
            | HttpError::Decode { method, .. } => method,
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
    /// The peer's rate-limit window, when an answer said it is used up.
    paused: Mutex<Option<Pause>>,
    /// What the peer said remains of its window, shared by the requests in flight.
    budget: budget::Budget,
    /// Requests, retries and 429s sent through this client, for the run's per-source counts.
    stats: stats::Stats,
}

/// A used-up rate-limit window: every request of the connector waits for its reset.
#[derive(Debug, Clone)]
struct Pause {
    /// When the window resets; `None` when that is too far away to represent.
    until: Option<Instant>,
    /// What the peer said, for the log and the error.
    asked: String,
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
            paused: Mutex::new(None),
            budget: budget::Budget::default(),
            stats: stats::Stats::default(),
        })
    }

    /// Requests, retries and 429s sent through this client so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The underlying client, to build requests with.
    pub fn inner(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends the request `build` makes, retrying per the policy, and returns a 2xx response.
    ///
    /// `build` is called once per attempt, so that a retry sends a fresh request (and picks up,
    /// say, a refreshed token). Before sending, the request waits for a used-up rate-limit
    /// window to reset; a wait that breaks a bound is [`HttpError::RateLimited`] at once.
    pub async fn send<F>(&self, idempotency: Idempotency, build: F) -> Result<Response, HttpError>
    where
        F: Fn(&reqwest::Client) -> RequestBuilder,
    {
        let mut attempt: u32 = 0;
        loop {
            let request = build(&self.client)
                .build()
                .map_err(|e| HttpError::Transport {
                    // A request that could not be built has no method to read back; the only
                    // such failures are a header a peer's token made invalid, on any request.
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
            let peer = stats::peer_of(request.url());
            let client = if matches!(method, Method::GET | Method::HEAD) {
                &self.client
            } else {
                &self.writer
            };
            // A place in the peer's announced budget first, then a used-up window waited out:
            // requests queued behind this one see its answer's figure before they go.
            let result = {
                let _admitted = self.budget.admit().await;
                self.wait_for_window(&method, &url).await?;
                if !self.budget.announces()
                    && let Some(wait) = shared_pace::slot(&peer).await
                {
                    let asked = "a worker of the round met the peer's rate limit: every worker keeps to the pace it revealed";
                    let until = self.admit(&method, &url, wait, WaitCause::Window, asked)?;
                    wait_logged(&url, wait, until, asked, WaitCause::Window, 0).await;
                }
                let started = Instant::now();
                let result = client.execute(request).await;
                let outcome = match &result {
                    Ok(response) => stats::Outcome::of_status(response.status()),
                    Err(e) if e.is_timeout() => stats::Outcome::Timeout,
                    Err(_) => stats::Outcome::Transport,
                };
                self.stats
                    .record(&peer, outcome, started.elapsed(), attempt > 0);
                if let Ok(response) = &result {
                    self.note_rate_limit(response.headers());
                }
                result
            };
            let error = match result {
                Ok(mut response) => {
                    let status = response.status();
                    if status.is_success() {
                        self.budget.accepted();
                        // For `decode_json`, which names the method in its errors.
                        response.extensions_mut().insert(method);
                        return Ok(response);
                    }
                    let retry_after = header_text(response.headers(), "retry-after");
                    let location = header_text(response.headers(), "location");
                    let body = body_text(response).await;
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        let (wait, asked) = match retry_after
                            .as_deref()
                            .map(|v| (v, parse_retry_after(v, SystemTime::now())))
                        {
                            Some((value, RetryAfter::Wait(wait))) => (
                                wait,
                                format!("it answered 429 with Retry-After: {}", quote(value)),
                            ),
                            Some((value, RetryAfter::Unreadable)) => (
                                self.backoff(attempt),
                                format!(
                                    "it answered 429 with Retry-After: {}, which is neither seconds nor a date (waiting the backoff instead)",
                                    quote(value)
                                ),
                            ),
                            None => (
                                self.backoff(attempt),
                                "it answered 429 without Retry-After (waiting the backoff)"
                                    .to_owned(),
                            ),
                        };
                        if let Some(pace) = self.budget.refused(wait) {
                            shared_pace::share(&peer, pace, wait).await;
                        }
                        let until =
                            self.admit(&method, &url, wait, WaitCause::RetryAfter, &asked)?;
                        if attempt < self.settings.max_retries {
                            wait_logged(&url, wait, until, &asked, WaitCause::RetryAfter, attempt)
                                .await;
                            attempt += 1;
                            continue;
                        }
                    }
                    HttpError::Status {
                        method,
                        url,
                        status,
                        body: match location {
                            Some(to) if status.is_redirection() => not_followed(&to, &body),
                            _ => body,
                        },
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
            if self
                .admit(error.method(), error.url(), wait, WaitCause::Backoff, "")
                .is_err()
            {
                // Retrying would end after the run's deadline: the failure stands as it is.
                return Err(error);
            }
            tracing::warn!(error = %error, wait_ms = wait.as_millis() as u64, attempt, "request failed; retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Sends like [`send`](Self::send) and decodes a JSON body.
    pub async fn send_json<T, F>(&self, idempotency: Idempotency, build: F) -> Result<T, HttpError>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
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

    /// When a wait of `wait` may end, or the [`HttpError::RateLimited`] it is refused with
    /// (bounds: [`admit_wait`]).
    fn admit(
        &self,
        method: &Method,
        url: &str,
        wait: Duration,
        cause: WaitCause,
        asked: &str,
    ) -> Result<Instant, HttpError> {
        let deadline = current_deadline();
        admit_wait(
            Instant::now(),
            wait,
            cause,
            self.settings.max_retry_after_secs,
            deadline.as_ref(),
        )
        .map_err(|limit| HttpError::RateLimited {
            method: method.clone(),
            url: url.to_owned(),
            asked: asked.to_owned(),
            wait_secs: wait.as_secs(),
            ends: utc_after(wait),
            limit,
        })
    }

    /// Remembers a rate-limit window that is used up, so that the next requests wait for its
    /// reset instead of provoking a 429.
    fn note_rate_limit(&self, headers: &HeaderMap) {
        let remaining = header_text(headers, "x-ratelimit-remaining");
        let reset = header_text(headers, "x-ratelimit-reset");
        let limit = header_text(headers, "x-ratelimit-limit");
        self.budget
            .announce(remaining.as_deref(), reset.as_deref(), limit.as_deref());
        match parse_rate_limit(remaining.as_deref(), reset.as_deref(), SystemTime::now()) {
            RateLimit::Open => {}
            RateLimit::UsedUp(wait) => {
                let pause = Pause {
                    until: Instant::now().checked_add(wait),
                    asked: format!(
                        "its rate-limit window is used up (X-RateLimit-Remaining: 0, \
                         X-RateLimit-Reset: {})",
                        quote(reset.as_deref().unwrap_or_default())
                    ),
                };
                if let Ok(mut paused) = self.paused.lock() {
                    *paused = Some(pause);
                }
            }
            RateLimit::Unreadable(why) => {
                tracing::debug!(%why, "rate-limit headers ignored");
            }
        }
    }

    /// Waits for a used-up window to reset, or fails when that wait breaks a bound.
    async fn wait_for_window(&self, method: &Method, url: &str) -> Result<(), HttpError> {
        let pause = self.paused.lock().ok().and_then(|p| p.clone());
        let Some(pause) = pause else {
            return Ok(());
        };
        let now = Instant::now();
        let wait = pause
            .until
            .map_or(Duration::MAX, |until| until.saturating_duration_since(now));
        if !wait.is_zero() {
            let until = self.admit(method, url, wait, WaitCause::Window, &pause.asked)?;
            wait_logged(url, wait, until, &pause.asked, WaitCause::Window, 0).await;
        }
        // The first request past the window clears it and resets the budget; requests that
        // waited for the same window find it cleared, so that answers of the new window already
        // counted are not forgotten.
        let cleared = match self.paused.lock() {
            Ok(mut paused) if paused.as_ref().map(|p| p.until) == Some(pause.until) => {
                *paused = None;
                true
            }
            _ => false,
        };
        if cleared {
            self.budget.window_reset();
        }
        Ok(())
    }
}

/// Sleeps until `until`, saying why when the wait is long (or is a 429's).
async fn wait_logged(
    url: &str,
    wait: Duration,
    until: Instant,
    asked: &str,
    cause: WaitCause,
    attempt: u32,
) {
    if wait >= LONG_WAIT {
        let ends = utc_text(utc_after(wait).as_ref());
        tracing::warn!(
            %url, reason = %asked, wait_secs = wait.as_secs(), until = %ends,
            "waiting {} s for the peer's rate limit, until {ends}", wait.as_secs()
        );
    } else if cause == WaitCause::RetryAfter {
        tracing::warn!(%url, wait_secs = wait.as_secs_f64(), attempt, "rate limited; waiting as the peer asked");
    } else {
        tracing::debug!(%url, wait_ms = wait.as_millis() as u64, reason = %asked, "pausing for the peer's rate limit");
    }
    tokio::time::sleep_until(until).await;
}

/// The body of an error for a redirect that was not followed: where it pointed, and why.
fn not_followed(location: &str, body: &str) -> String {
    let mut text = format!(
        "a redirect to {} that tally does not follow: reads follow redirects only within the \
         same origin and writes none; check the base_url",
        quote(&redact_url(location))
    );
    if !body.trim().is_empty() {
        text.push_str(&format!(" (the body: {body})"));
    }
    text
}

/// A header's value as text (lossy: a peer may send any bytes), if present.
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// The largest body [`decode_json`] parses in the task that awaits it (bytes).
const PARSE_IN_PLACE: usize = 64 * 1024;

/// Decodes a 2xx response's JSON body, naming the method and URL on failure.
///
/// A body up to [`PARSE_IN_PLACE`] is parsed where it is awaited: a page of a hundred records
/// is about a tenth of a millisecond of parsing, and handing each to tokio's blocking pool
/// cost a thread wake-up and two task switches per page, a tenth of the benchmark's CPU. A
/// source's fetcher is a task of its own (`pipeline::extract`), so parsing there holds up no
/// staging. A larger body goes to the blocking pool, so that no task of the runtime stalls for
/// long.
pub async fn decode_json<T: serde::de::DeserializeOwned + Send + 'static>(
    response: Response,
) -> Result<T, HttpError> {
    // `HttpClient::send` records the method; a response from elsewhere is a read.
    let method = response
        .extensions()
        .get::<Method>()
        .cloned()
        .unwrap_or(Method::GET);
    let url = redact_url(response.url().as_str());
    let bytes = response.bytes().await.map_err(|e| HttpError::Transport {
        method: method.clone(),
        url: url.clone(),
        message: format!("reading the body: {}", error_chain(&e.without_url())),
        not_sent: false,
    })?;
    let in_place = bytes.len() <= PARSE_IN_PLACE;
    let parse = move || {
        serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{e} (body starts: {})",
                preview(&String::from_utf8_lossy(&bytes))
            )
        })
    };
    let parsed = if in_place {
        parse()
    } else {
        tokio::task::spawn_blocking(parse)
            .await
            .unwrap_or_else(|e| Err(format!("reading the JSON stopped: {e}")))
    };
    parsed.map_err(|message| HttpError::Decode {
        method,
        url,
        message,
    })
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
mod tests;
