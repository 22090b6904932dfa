//! Genesys Cloud over the shared [`HttpClient`]: an access token per org (client credentials,
//! cached, renewed once on a 401), one request for the billable-usage report, and what each
//! refusal means for the operator.

use super::report::BillingUsageReport;
use crate::http::{FetchedToken, HttpClient, HttpError, Idempotency, TokenCache, redact_url};
use anyhow::anyhow;
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::time::Duration;

/// One configured org's OAuth client and its token.
#[derive(Debug)]
pub struct OrgClient {
    /// The short name under `orgs` (the scope).
    pub name: String,
    /// The canonical org id (the customer key).
    pub org_id: String,
    client_id: String,
    client_secret: SecretString,
    /// The environment variable the secret comes from, for messages.
    secret_env: String,
    token: TokenCache,
}

impl OrgClient {
    pub fn new(
        name: &str,
        org_id: String,
        client_id: &str,
        client_secret: SecretString,
        secret_env: String,
    ) -> Self {
        Self {
            name: name.to_owned(),
            org_id,
            client_id: client_id.trim().to_owned(),
            client_secret,
            secret_env,
            token: TokenCache::new(),
        }
    }
}

/// The API and login endpoints of one region, and the HTTP client every org shares.
#[derive(Debug)]
pub struct Client {
    /// `{api}/api/v2/billing/reports/billableusage`, without a query.
    report_endpoint: Url,
    /// `{login}/oauth/token`.
    token_endpoint: Url,
    http: HttpClient,
}

/// `POST /oauth/token`'s answer.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Client {
    /// Requests, retries and 429s sent so far, for the run's per-source counts.
    pub fn http_stats(&self) -> crate::http::StatsSnapshot {
        self.http.stats()
    }

    pub fn new(api_base: &str, login_base: &str, http: HttpClient) -> anyhow::Result<Self> {
        Ok(Self {
            report_endpoint: endpoint(
                api_base,
                "sources.genesys.api_base_url",
                &["api", "v2", "billing", "reports", "billableusage"],
            )?,
            token_endpoint: endpoint(
                login_base,
                "sources.genesys.login_base_url",
                &["oauth", "token"],
            )?,
            http,
        })
    }

    /// The report URL for `[start, end)`, for requests and messages.
    pub fn report_url(&self, start: &str, end: &str) -> Url {
        let mut url = self.report_endpoint.clone();
        url.query_pairs_mut()
            .append_pair("startDate", start)
            .append_pair("endDate", end);
        url
    }

    /// One `GET billableusage` for `org`; a 401 renews the org's token once and asks again.
    pub async fn report(&self, org: &OrgClient, url: &Url) -> anyhow::Result<BillingUsageReport> {
        let mut renewed = false;
        loop {
            let token = self.token(org, renewed).await?;
            let result = self
                .http
                .send_json::<BillingUsageReport, _>(Idempotency::Idempotent, |client| {
                    client
                        .get(url.clone())
                        .bearer_auth(token.expose_secret())
                        .header(reqwest::header::ACCEPT, "application/json")
                })
                .await;
            match result {
                Err(e) if e.status() == Some(StatusCode::UNAUTHORIZED) && !renewed => {
                    tracing::info!(url = %e.url(), org = %org.name, "Genesys refused the access token; fetching a new one");
                    renewed = true;
                }
                Ok(report) => return Ok(report),
                Err(e) => return Err(explain(e, org, renewed)),
            }
        }
    }

    /// The org's cached token, or a new one when it is due or `renew` is set.
    pub(super) async fn token(&self, org: &OrgClient, renew: bool) -> anyhow::Result<SecretString> {
        org.token.get(renew, || self.fetch_token(org)).await
    }

    /// `POST {login}/oauth/token` with `Authorization: Basic` and `grant_type=client_credentials`.
    async fn fetch_token(&self, org: &OrgClient) -> anyhow::Result<FetchedToken> {
        let answer: TokenAnswer = self
            .http
            .send_json(Idempotency::Idempotent, |client| {
                client
                    .post(self.token_endpoint.clone())
                    .basic_auth(&org.client_id, Some(org.client_secret.expose_secret()))
                    .header(reqwest::header::ACCEPT, "application/json")
                    .form(&[("grant_type", "client_credentials")])
            })
            .await
            .map_err(|e| explain_token(e, org))?;
        if answer.access_token.trim().is_empty() {
            return Err(anyhow!(
                "POST {} answered an empty access_token for org {}",
                redact_url(self.token_endpoint.as_str()),
                org.name
            ));
        }
        Ok(FetchedToken {
            value: SecretString::from(answer.access_token),
            expires_in: answer.expires_in.map(Duration::from_secs),
        })
    }
}

/// `base` with `segments` appended (keeping any path `base` has, e.g. behind a proxy).
fn endpoint(base: &str, key: &str, segments: &[&str]) -> anyhow::Result<Url> {
    let mut url = Url::parse(base.trim()).map_err(|e| anyhow!("{key} {base:?}: {e}"))?;
    url.path_segments_mut()
        .map_err(|()| anyhow!("{key} {base:?} cannot have a path"))?
        .pop_if_empty()
        .extend(segments);
    url.set_query(None);
    Ok(url)
}

/// A refused token request: what the login service said, and which keys to check.
fn explain_token(error: HttpError, org: &OrgClient) -> anyhow::Error {
    let said = error.body().map(vendor_message).unwrap_or_default();
    let message = match error.status().map(|s| s.as_u16()) {
        Some(400 | 401 | 403) => format!(
            "{error_line}: Genesys refused the client credentials of org {name}{said}; check \
             sources.genesys.orgs.{name}.client_id and the environment variable {env} (and \
             that the OAuth client uses the client credentials grant in this region)",
            error_line = headline(&error),
            name = org.name,
            env = org.secret_env,
        ),
        _ => token_or_api_failure(&error, &said, "login_base_url"),
    };
    anyhow::Error::new(error).context(message)
}

/// A failed report request: what Genesys said and what to do. The [`HttpError`] stays in the
/// chain so that a caller can still branch on the status.
fn explain(error: HttpError, org: &OrgClient, renewed: bool) -> anyhow::Error {
    let said = error.body().map(vendor_message).unwrap_or_default();
    let what = headline(&error);
    let message = match error.status().map(|s| s.as_u16()) {
        Some(400) => format!("{what}: Genesys refused the report's parameters{said}"),
        Some(401) if renewed => format!(
            "{what}: Genesys refused a freshly issued token of org {name}{said}; check the \
             OAuth client of sources.genesys.orgs.{name}",
            name = org.name
        ),
        Some(401) => format!(
            "{what}: Genesys refused the token of org {}{said}",
            org.name
        ),
        Some(403) => format!(
            "{what}: the OAuth client of org {name} may not read billing reports{said}; give \
             its role the billing permission in the org's Genesys admin",
            name = org.name
        ),
        Some(404) => format!("{what}{said}: check sources.genesys.region (or api_base_url)"),
        _ => token_or_api_failure(&error, &said, "api_base_url"),
    };
    anyhow::Error::new(error).context(message)
}

/// Messages shared by both endpoints for rate limits, server errors and the network.
fn token_or_api_failure(error: &HttpError, said: &str, url_key: &str) -> String {
    let what = headline(error);
    match error {
        HttpError::RateLimited { .. } => {
            format!("{error}; {}", error.rate_limit_advice("sources.genesys"))
        }
        HttpError::Status { status, .. } if status.as_u16() == 429 => {
            format!("{what}: still rate limited after retrying; run again later{said}")
        }
        HttpError::Status { status, .. } if status.is_server_error() => {
            format!("{what} and kept failing after retries; try again later{said}")
        }
        HttpError::Status { status, .. } if status.is_redirection() => format!(
            "{what}: Genesys redirected tally to another address (another scheme, host or \
             port), and tally follows a redirect only within the same origin, so that neither a \
             secret nor the report can come from elsewhere; nothing was read. Check \
             sources.genesys.region (or {url_key})"
        ),
        HttpError::Timeout { .. } | HttpError::Transport { .. } => format!(
            "{error} (after retries); check sources.genesys.region (or {url_key}) and the network"
        ),
        HttpError::Decode { .. } => {
            format!("{error}; expected the shape docs/connectors/genesys.md documents")
        }
        HttpError::Status { .. } => format!("{what}{said}"),
    }
}

/// `METHOD URL answered STATUS`, without the body (which is summarized separately).
fn headline(error: &HttpError) -> String {
    match error {
        HttpError::Status {
            method,
            url,
            status,
            ..
        } => format!("{method} {url} answered {status}"),
        other => other.to_string(),
    }
}

/// ` (Genesys said: <message>; code <code>; contextId <id>)` from the API's error body
/// `{message, code, status, contextId}`, or from an OAuth error `{error, error_description}`;
/// the body itself (already cut short) when it is neither.
pub fn vendor_message(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
        return if body.trim().is_empty() {
            String::new()
        } else {
            format!(" (Genesys said: {})", body.trim())
        };
    };
    let text = |key: &str| {
        value
            .get(key)
            .and_then(|v| v.as_str())
            .filter(|s| !s.trim().is_empty())
    };
    let mut parts = Vec::new();
    if let Some(message) = text("message") {
        parts.push(message.to_owned());
    } else if let Some(error) = text("error") {
        match text("error_description").or_else(|| text("description")) {
            Some(description) => parts.push(format!("{error}: {description}")),
            None => parts.push(error.to_owned()),
        }
    }
    if let Some(code) = text("code") {
        parts.push(format!("code {code}"));
    }
    if let Some(context) = text("contextId") {
        parts.push(format!("contextId {context}"));
    }
    if parts.is_empty() {
        format!(" (Genesys said: {})", body.trim())
    } else {
        format!(" (Genesys said: {})", parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_messages_read_both_error_shapes() {
        assert_eq!(
            vendor_message(
                r#"{"message":"startDate is required","code":"bad.request","status":400,"contextId":"c-1","details":[],"errors":[]}"#
            ),
            " (Genesys said: startDate is required; code bad.request; contextId c-1)"
        );
        assert_eq!(
            vendor_message(r#"{"error":"invalid_client","error_description":"client not found"}"#),
            " (Genesys said: invalid_client: client not found)"
        );
        assert_eq!(vendor_message("oops"), " (Genesys said: oops)");
        assert_eq!(vendor_message(""), "");
    }

    #[test]
    fn endpoints_keep_a_base_path_and_the_query_carries_both_dates() {
        let http = HttpClient::new(&crate::http::HttpSettings::default()).unwrap();
        let client = Client::new(
            "https://api.mypurecloud.ie/",
            "https://login.mypurecloud.ie",
            http,
        )
        .unwrap();
        assert_eq!(
            client.token_endpoint.as_str(),
            "https://login.mypurecloud.ie/oauth/token"
        );
        let url = client.report_url("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z");
        assert_eq!(
            url.as_str(),
            "https://api.mypurecloud.ie/api/v2/billing/reports/billableusage?startDate=2026-10-01T00%3A00%3A00Z&endDate=2026-11-01T00%3A00%3A00Z"
        );
        let proxied = endpoint("http://127.0.0.1:9/genesys", "k", &["oauth", "token"]).unwrap();
        assert_eq!(proxied.as_str(), "http://127.0.0.1:9/genesys/oauth/token");
    }
}
