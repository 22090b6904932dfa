//! OAuth client credentials for the Billable Users API (docs/connectors/billable-users.md), the alternative to a
//! personal token: the application's client ID and secret are exchanged at
//! `POST <oauth_url>/token` for an access token that lives 1 h. The token is kept in the shared
//! [`TokenCache`], so it is renewed shortly before it expires and once more when the API refuses
//! it (401).
//!
//! The request follows the vendor's published contract, which docs/connectors/billable-users.md only summarises: a
//! form body (`application/x-www-form-urlencoded`) with `grant_type=client_credentials`,
//! `client_id` and `client_secret`; the answer `{"access_token", "token_type", "expires_in"}`; a
//! refusal is a 400 with `{"error", "error_description"}` (RFC 6749 §5.2).
//!
//! The secret goes to the OAuth service only, in the body (never in a URL, so never in a log
//! line), and the access token is never shown: not even a token answer that cannot be read
//! is quoted in a message, as it may hold the token.

use super::config::CLIENT_SECRET_ENV;
use crate::http::{FetchedToken, HttpClient, HttpError, Idempotency, TokenCache, redact_url};
use anyhow::anyhow;
use reqwest::Url;
use reqwest::header::ACCEPT;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::time::Duration;

/// The lifetime docs/connectors/billable-users.md documents, assumed when an answer carries no `expires_in`.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// One OAuth application and its current access token. `Debug` shows the secret redacted.
#[derive(Debug)]
pub struct OAuthClient {
    /// `<oauth_url>/token`.
    token_endpoint: Url,
    client_id: String,
    client_secret: SecretString,
    cache: TokenCache,
}

/// `POST /token`'s answer. Other fields (e.g. `created_at`) are ignored.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl OAuthClient {
    pub fn new(
        oauth_url: &str,
        client_id: &str,
        client_secret: SecretString,
    ) -> anyhow::Result<Self> {
        let mut token_endpoint = Url::parse(oauth_url.trim())
            .map_err(|e| anyhow!("sources.billable_users.oauth_url {oauth_url:?}: {e}"))?;
        // Appended rather than joined, so that a service behind a path prefix keeps it.
        token_endpoint
            .path_segments_mut()
            .map_err(|()| {
                anyhow!("sources.billable_users.oauth_url {oauth_url:?} cannot have a path")
            })?
            .pop_if_empty()
            .push("token");
        Ok(Self {
            token_endpoint,
            client_id: client_id.trim().to_owned(),
            client_secret,
            cache: TokenCache::with_default_lifetime(TOKEN_LIFETIME),
        })
    }

    /// The token endpoint, for messages.
    pub fn token_url(&self) -> String {
        redact_url(self.token_endpoint.as_str())
    }

    /// The cached access token, or a new one when it is due or `renew` is set (the API just
    /// refused the cached one).
    pub async fn token(&self, http: &HttpClient, renew: bool) -> anyhow::Result<SecretString> {
        self.cache.get(renew, || self.fetch(http)).await
    }

    async fn fetch(&self, http: &HttpClient) -> anyhow::Result<FetchedToken> {
        let shown = self.token_url();
        tracing::debug!(url = %shown, "requesting an access token (client credentials)");
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose_secret()),
        ];
        // Asking again is safe: each request only issues another token.
        let response = http
            .send(Idempotency::Idempotent, |client| {
                client
                    .post(self.token_endpoint.clone())
                    .header(ACCEPT, "application/json")
                    .form(&form)
            })
            .await
            .map_err(|e| explain(e, &self.client_id))?;
        let bytes = response.bytes().await.map_err(|e| {
            anyhow!(
                "POST {shown}: the token answer could not be read ({}); run again",
                e.without_url()
            )
        })?;
        let answer = parse_answer(&bytes).map_err(|e| anyhow!("POST {shown} {e}"))?;
        Ok(answer)
    }
}

/// The token of a 200 answer. Errors describe the answer's shape, never its content.
fn parse_answer(bytes: &[u8]) -> Result<FetchedToken, String> {
    let expected = "expected JSON {\"access_token\", \"token_type\", \"expires_in\"} (docs/connectors/billable-users.md)";
    let answer: TokenAnswer = serde_json::from_slice(bytes).map_err(|e| {
        // serde_json's message can quote a value, and the value may be the token.
        format!(
            "answered a body that is not a token answer ({:?} error at line {} column {}); \
             {expected}; check sources.billable_users.oauth_url",
            e.classify(),
            e.line(),
            e.column()
        )
    })?;
    if answer.access_token.trim().is_empty() {
        return Err(format!("answered an empty access_token; {expected}"));
    }
    if let Some(kind) = &answer.token_type
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(format!(
            "answered token_type {kind:?}; the API takes Bearer tokens only (docs/connectors/billable-users.md)"
        ));
    }
    Ok(FetchedToken {
        value: SecretString::from(answer.access_token),
        expires_in: answer.expires_in.map(Duration::from_secs),
    })
}

/// A refused token request: what the OAuth service said and which settings to fix. The
/// [`HttpError`] stays in the chain so that a caller can still branch on the status.
fn explain(error: HttpError, client_id: &str) -> anyhow::Error {
    let said = error.body().map(oauth_message).unwrap_or_default();
    let fix = format!(
        "check sources.billable_users.client_id ({client_id:?}) and the environment variable \
         {CLIENT_SECRET_ENV}, and that the OAuth application is enabled"
    );
    let refused = |what: &str| {
        format!("{what}: the OAuth service refused the client credentials{said}; {fix}")
    };
    let message = match &error {
        HttpError::Status {
            method,
            url,
            status,
            body,
        } => {
            let what = format!("{method} {url} answered {status}");
            match status.as_u16() {
                401 | 403 => refused(&what),
                400 if refuses_client(body) => refused(&what),
                400 => format!(
                    "{what}: the OAuth service refused the token request{said}; {fix}, and \
                     sources.billable_users.oauth_url (the OAuth service of the API's region)"
                ),
                404 => format!(
                    "{what}{said}: check sources.billable_users.oauth_url, the OAuth service of \
                     the API's region, e.g. https://oauth.example.com (tokens are requested at \
                     <oauth_url>/token)"
                ),
                429 => format!("{what}: still rate limited after retrying; run again later{said}"),
                s if s >= 500 => {
                    format!("{what} and kept failing after retries; try again later{said}")
                }
                _ => format!("{what}{said}"),
            }
        }
        HttpError::RateLimited { .. } => format!(
            "{error}; {}",
            error.rate_limit_advice("sources.billable_users")
        ),
        HttpError::Timeout { .. } | HttpError::Transport { .. } => format!(
            "{error} (after retries); check sources.billable_users.oauth_url and the network"
        ),
        HttpError::Decode { .. } => error.to_string(),
    };
    anyhow::Error::new(error).context(message)
}

/// Whether an OAuth error body blames the client's credentials (RFC 6749 §5.2).
fn refuses_client(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .is_some_and(|code| matches!(code.as_str(), "invalid_client" | "unauthorized_client"))
}

/// ` (the OAuth service said: <error>: <error_description>)`, or the body itself when it is not
/// that shape (it is already cut short by the HTTP client).
fn oauth_message(body: &str) -> String {
    let parsed = serde_json::from_str::<serde_json::Value>(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|m| m.as_str())
            .map(str::to_owned)
    };
    match (field("error"), field("error_description")) {
        (Some(code), Some(description)) => {
            format!(" (the OAuth service said: {code}: {description})")
        }
        (Some(code), None) => format!(" (the OAuth service said: {code})"),
        _ if body.trim().is_empty() => String::new(),
        _ => format!(" (the OAuth service said: {})", body.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_endpoint_is_under_the_oauth_service() {
        for base in [
            "https://oauth.example.com",
            "https://oauth.example.com/",
            " https://oauth.example.com ",
        ] {
            let client = OAuthClient::new(base, "app", SecretString::from("s")).unwrap();
            assert_eq!(client.token_url(), "https://oauth.example.com/token");
        }
        let prefixed = OAuthClient::new(
            "https://gw.example.com/oauth",
            "app",
            SecretString::from("s"),
        )
        .unwrap();
        assert_eq!(prefixed.token_url(), "https://gw.example.com/oauth/token");
    }

    #[test]
    fn a_token_answer_gives_the_token_and_its_lifetime() {
        let token = parse_answer(
            br#"{"access_token":"abc","token_type":"Bearer","expires_in":3600,"created_at":1}"#,
        )
        .unwrap();
        assert_eq!(token.value.expose_secret(), "abc");
        assert_eq!(token.expires_in, Some(Duration::from_secs(3600)));
        let undated = parse_answer(br#"{"access_token":"abc"}"#).unwrap();
        assert_eq!(undated.expires_in, None);
    }

    #[test]
    fn an_unreadable_token_answer_never_quotes_the_token() {
        for body in [
            &br#"{"access_token":"leaky-token","expires_in":"soon"}"#[..],
            br#"{"access_token":12345678,"expires_in":1}"#,
            br#"{"token":"leaky-token"}"#,
            b"leaky-token",
        ] {
            let error = parse_answer(body).unwrap_err();
            assert!(!error.contains("leaky-token"), "{error}");
            assert!(!error.contains("12345678"), "{error}");
            assert!(error.contains("access_token"), "{error}");
        }
        let empty = parse_answer(br#"{"access_token":" "}"#).unwrap_err();
        assert!(empty.contains("empty access_token"), "{empty}");
        let mac =
            parse_answer(br#"{"access_token":"leaky-token","token_type":"mac"}"#).unwrap_err();
        assert!(
            mac.contains("Bearer") && !mac.contains("leaky-token"),
            "{mac}"
        );
    }

    #[test]
    fn an_oauth_error_body_is_shown_with_its_code_and_description() {
        assert_eq!(
            oauth_message(
                r#"{"error":"invalid_client","error_description":"Client authentication failed"}"#
            ),
            " (the OAuth service said: invalid_client: Client authentication failed)"
        );
        assert_eq!(oauth_message(""), "");
        assert!(refuses_client(r#"{"error":"invalid_client"}"#));
        assert!(!refuses_client(r#"{"error":"unsupported_grant_type"}"#));
        assert!(!refuses_client("oops"));
    }
}
