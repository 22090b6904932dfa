//! The CCC API over the shared [`HttpClient`]: sign-in per service (one session per service,
//! shared by concurrent callers, renewed once on a `401`), a page of users, one user's usage,
//! and what each refusal means for the operator.

use super::config::PASSWORD_ENV;
use crate::http::{HttpClient, HttpError, Idempotency, redact_url};
use anyhow::{anyhow, bail};
use chrono::NaiveDate;
use reqwest::Url;
use reqwest::header::{ACCEPT, COOKIE};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// `PeriodType` of a usage call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodType {
    Daily,
    Monthly,
}

impl PeriodType {
    pub fn as_str(self) -> &'static str {
        match self {
            PeriodType::Daily => "Daily",
            PeriodType::Monthly => "Monthly",
        }
    }
}

/// One service's session. `generation` counts sign-ins, so that of several callers refused
/// with the same stale session only the first signs in again and the others reuse its session.
#[derive(Default)]
struct Slot {
    session: Option<SecretString>,
    generation: u64,
}

/// The API root with the credentials of its API user. `Debug` shows no secret.
pub struct Client {
    /// `{base_url}` as configured, e.g. `https://host/api`.
    base: Url,
    username: String,
    password: SecretString,
    http: HttpClient,
    /// Service (canonical GUID) → its session; a tokio mutex per service so that one caller
    /// signs in while the others wait for its session.
    sessions: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &redact_url(self.base.as_str()))
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What one page of users answered.
#[derive(Debug)]
pub struct UsersPage {
    /// The request's URL, redacted, for messages about the page's users.
    pub url: String,
    /// `currentPage`, when sent.
    pub current_page: Option<u64>,
    /// `totalPages`: the list ends when `currentPage >= totalPages`.
    pub total_pages: u64,
    /// `totalItems`, when sent.
    pub total_items: Option<u64>,
    pub results: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsersResponse {
    #[serde(default)]
    total_pages: Option<u64>,
    #[serde(default)]
    total_items: Option<u64>,
    #[serde(default)]
    current_page: Option<u64>,
    #[serde(default)]
    results: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageResponse {
    period_type: Option<String>,
    usage: Option<Value>,
    response_status: Option<Value>,
}

/// Which call failed, for the advice in its message.
#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    Login,
    Authenticate,
    Users,
    Usage { user: &'a str },
}

impl Client {
    /// Requests, retries and 429s sent so far, for the run's per-source counts.
    pub fn http_stats(&self) -> crate::http::StatsSnapshot {
        self.http.stats()
    }

    pub fn new(
        base_url: &str,
        username: &str,
        password: SecretString,
        http: HttpClient,
    ) -> anyhow::Result<Self> {
        let base = Url::parse(base_url.trim())
            .map_err(|e| anyhow!("sources.ccc.base_url {base_url:?}: {e}"))?;
        if base.cannot_be_a_base() {
            bail!("sources.ccc.base_url {base_url:?} cannot have a path");
        }
        Ok(Self {
            base,
            username: username.trim().to_owned(),
            password,
            http,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// `{base}/{segments...}`; `Url::join` would drop the last segment of `.../api`.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Page `page` (1-based) of `service`'s users.
    pub async fn users(
        &self,
        service: &str,
        page: u32,
        page_size: u32,
    ) -> anyhow::Result<UsersPage> {
        let mut url = self.url(&["services", service, "users"]);
        url.query_pairs_mut()
            .append_pair("Page", &page.to_string())
            .append_pair("PageSize", &page_size.to_string());
        let response: UsersResponse = self.get_json(service, &url, Step::Users).await?;
        let shown = redact_url(url.as_str());
        // Without `totalPages` nobody can tell where the list ends: taking the first page for
        // the whole list would bill only its users.
        let Some(total_pages) = response.total_pages else {
            bail!(
                "GET {shown} answered without totalPages, so tally cannot tell where the list of \
                 users ends (docs/connectors/ccc.md); nothing of this page was staged"
            );
        };
        Ok(UsersPage {
            url: shown,
            current_page: response.current_page,
            total_pages,
            total_items: response.total_items,
            results: response.results,
        })
    }

    /// The `UserUsage` of `user` in `service` for the period of `period_type` containing `day`.
    pub async fn usage(
        &self,
        service: &str,
        user: &str,
        period_type: PeriodType,
        day: NaiveDate,
    ) -> anyhow::Result<Value> {
        let mut url = self.url(&["services", service, "users", user, "usage"]);
        url.query_pairs_mut()
            .append_pair("PeriodType", period_type.as_str())
            .append_pair("Period", &day.format("%Y-%m-%d").to_string());
        let shown = redact_url(url.as_str());
        let response: UsageResponse = self.get_json(service, &url, Step::Usage { user }).await?;
        if let Some(status) = &response.response_status
            && let Some(code) = status.get("errorCode").and_then(Value::as_str)
            && !code.is_empty()
        {
            bail!(
                "GET {shown} answered 200 with an error{}",
                describe_status(status)
            );
        }
        if let Some(answered) = &response.period_type
            && !answered.eq_ignore_ascii_case(period_type.as_str())
        {
            // A server that ignored PeriodType would answer one day for a month: under-billing.
            bail!(
                "GET {shown} answered periodType {answered:?} for PeriodType={}; refusing to bill from it",
                period_type.as_str()
            );
        }
        match response.usage {
            Some(usage @ Value::Object(_)) => Ok(usage),
            _ => bail!("GET {shown} answered without a usage object (docs/connectors/ccc.md)"),
        }
    }

    /// GET with `service`'s session; on a `401` signs in again once and retries, and a second
    /// `401` is an error that says so.
    async fn get_json<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        service: &str,
        url: &Url,
        step: Step<'_>,
    ) -> anyhow::Result<T> {
        let (session, generation) = self.session(service, None).await?;
        match self.get_once(url, &session).await {
            Err(e) if e.status() == Some(reqwest::StatusCode::UNAUTHORIZED) => {
                tracing::info!(url = %e.url(), "the CCC session was refused; signing in again");
                let (session, _) = self.session(service, Some(generation)).await?;
                match self.get_once(url, &session).await {
                    Err(e) if e.status() == Some(reqwest::StatusCode::UNAUTHORIZED) => {
                        let vendor = e.body().map(vendor_message).unwrap_or_default();
                        let message = format!(
                            "GET {} answered 401 Unauthorized again right after signing in again \
                             as {:?} to service {service}; check that this API user may read the \
                             service's users and usage{vendor}",
                            e.url(),
                            self.username
                        );
                        Err(anyhow::Error::new(e).context(message))
                    }
                    other => other.map_err(|e| self.explain(e, step, service)),
                }
            }
            other => other.map_err(|e| self.explain(e, step, service)),
        }
    }

    async fn get_once<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        url: &Url,
        session: &SecretString,
    ) -> Result<T, HttpError> {
        self.http
            .send_json(Idempotency::Idempotent, |client| {
                client
                    .get(url.clone())
                    .header(ACCEPT, "application/json")
                    .header(COOKIE, format!("ss-id={}", session.expose_secret()))
            })
            .await
    }

    /// `service`'s session and its generation: the cached one, or a new one when there is none
    /// or the caller's (generation `stale`) was refused and nobody has replaced it yet.
    async fn session(
        &self,
        service: &str,
        stale: Option<u64>,
    ) -> anyhow::Result<(SecretString, u64)> {
        let slot = {
            let mut sessions = self
                .sessions
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(sessions.entry(service.to_owned()).or_default())
        };
        let mut slot = slot.lock().await;
        if let Some(session) = &slot.session
            && stale != Some(slot.generation)
        {
            return Ok((session.clone(), slot.generation));
        }
        slot.session = None;
        let session = self.sign_in(service).await?;
        slot.generation += 1;
        slot.session = Some(session.clone());
        Ok((session, slot.generation))
    }

    /// `POST v1/login` then `POST services/{service}/authenticate`: a session of `service`.
    async fn sign_in(&self, service: &str) -> anyhow::Result<SecretString> {
        let login = self.url(&["v1", "login"]);
        let response = self
            .http
            .send(Idempotency::Idempotent, |client| {
                client
                    .post(login.clone())
                    .header(ACCEPT, "application/json")
                    .json(&serde_json::json!({
                        "username": self.username,
                        "password": self.password.expose_secret(),
                    }))
            })
            .await
            .map_err(|e| self.explain(e, Step::Login, service))?;
        let token = secret_field(response, "sessionToken").await?;

        let authenticate = self.url(&["services", service, "authenticate"]);
        let response = self
            .http
            .send(Idempotency::Idempotent, |client| {
                client
                    .post(authenticate.clone())
                    .header(ACCEPT, "application/json")
                    .json(&serde_json::json!({ "token": token.expose_secret() }))
            })
            .await
            .map_err(|e| self.explain(e, Step::Authenticate, service))?;
        let session = secret_field(response, "sessionId").await?;
        tracing::debug!(service, "signed in to CCC");
        Ok(session)
    }

    /// Turns a failed call into a message that says what to do. The [`HttpError`] stays in
    /// the chain so that a caller can still branch on the status.
    fn explain(&self, error: HttpError, step: Step<'_>, service: &str) -> anyhow::Error {
        let vendor = error.body().map(vendor_message).unwrap_or_default();
        let username = &self.username;
        let message = match &error {
            HttpError::Status {
                method,
                url,
                status,
                ..
            } => {
                let what = format!("{method} {url} answered {status}");
                match (status.as_u16(), step) {
                    (401 | 403, Step::Login) => format!(
                        "{what}: CCC refused the sign-in of {username:?}; check \
                         sources.ccc.username and {PASSWORD_ENV}{vendor}"
                    ),
                    (401, Step::Authenticate) => format!(
                        "{what}: CCC refused the session token of {username:?} for service \
                         {service}; run again, and if it persists check the API user{vendor}"
                    ),
                    (403, Step::Authenticate) => format!(
                        "{what}: the API user {username:?} has no access to service {service}; \
                         ask the service's administrator to grant it, or remove it from \
                         sources.ccc.services{vendor}"
                    ),
                    (404, Step::Authenticate | Step::Users) => format!(
                        "{what}: service {service} was not found; check sources.ccc.services and \
                         sources.ccc.base_url (the API root, ending in /api){vendor}"
                    ),
                    (404, Step::Login) => format!(
                        "{what}: check sources.ccc.base_url (the API root, ending in /api){vendor}"
                    ),
                    (404, Step::Usage { user }) => format!(
                        "{what}: user {user} of service {service} was not found (removed while \
                         tally was reading?); run again{vendor}"
                    ),
                    (403, _) => {
                        format!("{what}: the session is not valid for service {service}{vendor}")
                    }
                    (400, _) => format!("{what}: CCC refused the request's parameters{vendor}"),
                    (300..=399, _) => format!(
                        "{what}: CCC redirected tally to another address (another scheme, host \
                         or port), and tally follows a redirect only within the same origin, so \
                         that neither the session nor the users can come from elsewhere; nothing \
                         was read. If the API really moved, set sources.ccc.base_url to its new \
                         address"
                    ),
                    (429, _) => {
                        format!(
                            "{what}: still rate limited after retrying; run again later{vendor}"
                        )
                    }
                    (s, _) if s >= 500 => {
                        format!("{what} and kept failing after retries; try again later{vendor}")
                    }
                    _ => format!("{what}{vendor}"),
                }
            }
            HttpError::RateLimited { .. } => {
                format!("{error}; {}", error.rate_limit_advice("sources.ccc"))
            }
            HttpError::Timeout { .. } | HttpError::Transport { .. } => {
                format!("{error} (after retries); check sources.ccc.base_url and the network")
            }
            HttpError::Decode { .. } => {
                format!("{error}; expected the JSON of docs/connectors/ccc.md")
            }
        };
        anyhow::Error::new(error).context(message)
    }
}

/// A string field of a sign-in answer, as a secret. The body is never quoted in the error: it
/// holds a credential.
async fn secret_field(response: reqwest::Response, field: &str) -> anyhow::Result<SecretString> {
    let url = redact_url(response.url().as_str());
    let bytes = response
        .bytes()
        .await
        .map_err(|e| anyhow!("POST {url}: reading the answer failed: {e}"))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow!("POST {url} answered with a body that is not JSON ({e})"))?;
    match value.get(field).and_then(Value::as_str) {
        Some(text) if !text.is_empty() => Ok(SecretString::from(text.to_owned())),
        _ => bail!("POST {url} answered without a {field} (docs/connectors/ccc.md)"),
    }
}

/// ` (CCC said: errorCode "X": message; PageSize: LessThanOrEqual ...)` from a ServiceStack
/// error body, or the body itself when it is not that shape.
fn vendor_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    match parsed
        .as_ref()
        .and_then(|v| v.get("responseStatus").or_else(|| v.get("ResponseStatus")))
    {
        Some(status) => describe_status(status),
        None if body.trim().is_empty() => String::new(),
        None => format!(" (CCC said: {})", body.trim()),
    }
}

/// A `responseStatus` as ` (CCC said: errorCode "X": message; field F: code message)`.
fn describe_status(status: &Value) -> String {
    let text = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut parts = vec![format!(
        "errorCode {:?}: {}",
        text(status, "errorCode"),
        text(status, "message")
    )];
    if let Some(errors) = status.get("errors").and_then(Value::as_array) {
        for e in errors {
            parts.push(format!(
                "field {}: {} {}",
                text(e, "fieldName"),
                text(e, "errorCode"),
                text(e, "message")
            ));
        }
    }
    format!(" (CCC said: {})", parts.join("; "))
}

/// A users page decoded as [`Client::users`] decodes it, each user checked as `fetch_page`
/// checks it: `(currentPage, totalPages, users)`. The page parser as a pure function of its
/// bytes, for the fuzz harness.
pub fn parse_users_page(body: &[u8]) -> Result<(Option<u64>, Option<u64>, usize), String> {
    let page: UsersResponse = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let users = page.results.len();
    for (index, user) in page.results.into_iter().enumerate() {
        super::usage::parse_user(user).map_err(|e| format!("the user at index {index} {e}"))?;
    }
    Ok((page.current_page, page.total_pages, users))
}

/// A usage answer decoded as [`Client::usage`] decodes it, its totals read as `fetch_page`
/// reads them, for the fuzz harness.
pub fn parse_usage_answer(body: &[u8]) -> Result<super::usage::Totals, String> {
    let answer: UsageResponse = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    match answer.usage {
        Some(usage @ Value::Object(_)) => super::usage::Totals::from_usage(&usage),
        _ => Err("answered without a usage object".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_responsestatus_names_the_code_the_message_and_every_field() {
        let body = r#"{"responseStatus":{"errorCode":"ValidationException","message":"Validation failed","errors":[{"errorCode":"LessThanOrEqual","fieldName":"PageSize","message":"must be at most 100"}]}}"#;
        assert_eq!(
            vendor_message(body),
            " (CCC said: errorCode \"ValidationException\": Validation failed; field PageSize: LessThanOrEqual must be at most 100)"
        );
        assert_eq!(vendor_message("oops"), " (CCC said: oops)");
        assert_eq!(vendor_message(""), "");
    }

    #[test]
    fn urls_keep_the_api_segment() {
        for base in ["https://h.example/api", "https://h.example/api/"] {
            let client = Client::new(
                base,
                "u",
                SecretString::from("p"),
                HttpClient::new(&crate::http::HttpSettings::default()).unwrap(),
            )
            .unwrap();
            assert_eq!(
                client.url(&["v1", "login"]).as_str(),
                "https://h.example/api/v1/login"
            );
        }
    }
}
