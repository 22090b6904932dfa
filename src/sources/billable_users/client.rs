//! One page of `GET /account/billable_users` (or its `.csv` form) over the shared
//! [`HttpClient`], signed in with a personal token or OAuth client credentials, and what each
//! refusal means for the operator.

use super::config::{CLIENT_SECRET_ENV, Format, TOKEN_ENV};
use super::link;
use super::oauth::OAuthClient;
use crate::domain::Period;
use crate::http::{HttpClient, HttpError, Idempotency, redact_url};
use anyhow::anyhow;
use reqwest::header::{ACCEPT, LINK};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};

/// How every request signs in. `Debug` shows the secrets redacted.
#[derive(Debug)]
pub enum Auth {
    /// A personal API token, sent as is: when the API refuses it, only the operator can help.
    Token(SecretString),
    /// An OAuth application whose access tokens expire after 1 h and can be renewed.
    ClientCredentials(OAuthClient),
}

/// The account-scoped endpoint of one API root, with its credentials.
#[derive(Debug)]
pub struct Client {
    /// `{base_url}/account/billable_users` (or `.../billable_users.csv`), without a query.
    endpoint: Url,
    format: Format,
    auth: Auth,
    http: HttpClient,
}

/// What one page answered: the people as sent, and the page after it.
#[derive(Debug)]
pub struct RawPage {
    /// The request's URL, redacted, for messages about the page's records.
    pub url: String,
    pub body: Body,
    /// The `page` of the `Link` header's `rel="next"`; `None` on the last page.
    pub next_page: Option<u64>,
    /// `X-Pagination-Current-Page`, when sent.
    pub current_page: Option<u64>,
    /// `X-Pagination-Total-Entries`, when sent.
    pub total_entries: Option<u64>,
    /// `X-Pagination-Total-Pages`, when sent.
    pub total_pages: Option<u64>,
}

/// A page's people in the form they were asked for.
#[derive(Debug)]
pub enum Body {
    /// The JSON array, one element per person, read for its id and organization.
    Json(Vec<super::json_form::Person>),
    /// The CSV export's bytes, read by [`super::csv_form::parse`].
    Csv(Vec<u8>),
}

impl Client {
    /// Requests, retries and 429s sent so far, for the run's per-source counts.
    pub fn http_stats(&self) -> crate::http::StatsSnapshot {
        self.http.stats()
    }

    pub fn new(
        base_url: &str,
        format: Format,
        auth: Auth,
        http: HttpClient,
    ) -> anyhow::Result<Self> {
        let mut endpoint = Url::parse(base_url.trim())
            .map_err(|e| anyhow!("sources.billable_users.base_url {base_url:?}: {e}"))?;
        // `Url::join` would drop the last segment of `.../v1`; append segments instead.
        endpoint
            .path_segments_mut()
            .map_err(|()| {
                anyhow!("sources.billable_users.base_url {base_url:?} cannot have a path")
            })?
            .pop_if_empty()
            .extend([
                "account",
                match format {
                    Format::Json => "billable_users",
                    Format::Csv => "billable_users.csv",
                },
            ]);
        Ok(Self {
            endpoint,
            format,
            auth,
            http,
        })
    }

    /// The bearer token for the next request: the personal token, or the OAuth access token
    /// (a new one when it is due, or when `renew` says the API just refused the cached one).
    async fn bearer(&self, renew: bool) -> anyhow::Result<SecretString> {
        match &self.auth {
            Auth::Token(token) => Ok(token.clone()),
            Auth::ClientCredentials(oauth) => oauth.token(&self.http, renew).await,
        }
    }

    /// Fetches page `page` (1-based) of `account`'s billable people in `period`.
    ///
    /// With client credentials, a 401 means the access token expired (or was revoked) before
    /// tally expected: the token is renewed once and the same page asked for again. A second
    /// 401 is an error, so a peer that refuses every token cannot keep tally in a loop, and no
    /// page is skipped.
    pub async fn fetch(
        &self,
        account: &str,
        period: Period,
        page: u32,
        per_page: u32,
    ) -> anyhow::Result<RawPage> {
        let mut url = self.endpoint.clone();
        url.query_pairs_mut()
            .append_pair("year", &period.year().to_string())
            .append_pair("month", &period.month().to_string())
            .append_pair("page", &page.to_string())
            .append_pair("per_page", &per_page.to_string());
        let shown = redact_url(url.as_str());

        let mut renewed = false;
        let response = loop {
            let token = self.bearer(renewed).await?;
            let result = self
                .http
                .send(Idempotency::Idempotent, |client| {
                    client
                        .get(url.clone())
                        .bearer_auth(token.expose_secret())
                        .header("X-4me-Account", account)
                        .header(
                            ACCEPT,
                            match self.format {
                                Format::Json => "application/json",
                                // Errors still come as JSON `{"message": ...}`.
                                Format::Csv => "text/csv, application/json;q=0.5",
                            },
                        )
                })
                .await;
            match result {
                Ok(response) => break response,
                Err(e)
                    if e.status() == Some(StatusCode::UNAUTHORIZED)
                        && !renewed
                        && matches!(self.auth, Auth::ClientCredentials(_)) =>
                {
                    tracing::info!(url = %shown, "the API refused the access token (expired or revoked); renewing it and asking for the page again");
                    renewed = true;
                }
                Err(e) => return Err(explain(e, account, &self.auth)),
            }
        };

        let link_values: Vec<&str> = response
            .headers()
            .get_all(LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let next_page =
            next_page(&link_values, &url).map_err(|message| anyhow!("GET {shown}: {message}"))?;
        let count = |name: &str| {
            pagination_header(response.headers(), name)
                .map_err(|message| anyhow!("GET {shown}: {message}"))
        };
        let current_page = count("x-pagination-current-page")?;
        let total_entries = count("x-pagination-total-entries")?;
        let total_pages = count("x-pagination-total-pages")?;

        let body = match self.format {
            Format::Json => {
                let people: Vec<super::json_form::Person> =
                    crate::http::decode_json(response).await.map_err(|e| {
                        let message = format!("{e}; expected a JSON array of people (docs/connectors/billable-users.md)");
                        anyhow::Error::new(e).context(message)
                    })?;
                Body::Json(people)
            }
            Format::Csv => {
                let bytes = response.bytes().await.map_err(|e| {
                    let error = HttpError::Transport {
                        method: Method::GET,
                        url: shown.clone(),
                        message: format!("reading the CSV body: {e}"),
                        not_sent: false,
                    };
                    let message = format!("{error}; the page was not staged, run again");
                    anyhow::Error::new(error).context(message)
                })?;
                Body::Csv(bytes.to_vec())
            }
        };
        Ok(RawPage {
            url: shown,
            body,
            next_page,
            current_page,
            total_entries,
            total_pages,
        })
    }
}

/// An `X-Pagination-*` header as a number; `None` when it is absent. A value that is not a
/// number is refused: the totals are what the pages read are checked against, and a guess
/// would let a short list pass.
fn pagination_header(
    headers: &reqwest::header::HeaderMap,
    name: &str,
) -> Result<Option<u64>, String> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            format!(
                "the header {name} is {:?}, not a number of entries or pages",
                String::from_utf8_lossy(value.as_bytes())
            )
        })
}

/// The page number of the `rel="next"` link. Whether it is the page after this one is
/// [`crate::sources::paging::advance`]'s to check.
fn next_page(link_values: &[&str], request: &Url) -> Result<Option<u64>, String> {
    let entries = link::parse_link_header(link_values.iter().copied());
    let Some(next) = link::find_rel(&entries, "next", request) else {
        return Ok(None);
    };
    let next = next?;
    let number = next
        .query_pairs()
        .find(|(k, _)| k == "page")
        .ok_or_else(|| {
            format!(
                "the Link header's rel=\"next\" ({}) has no page parameter",
                redact_url(next.as_str())
            )
        })?
        .1
        .parse::<u64>()
        .map_err(|e| {
            format!("the Link header's rel=\"next\" has a page that is not a number: {e}")
        })?;
    Ok(Some(number))
}

/// Turns a failed call into a message that says what to do. The [`HttpError`] stays in the
/// chain so that a caller can still branch on the status.
fn explain(error: HttpError, account: &str, auth: &Auth) -> anyhow::Error {
    let vendor = error.body().map(vendor_message).unwrap_or_default();
    let message = match &error {
        HttpError::Status {
            method,
            url,
            status,
            body,
        } => {
            let what = format!("{method} {url} answered {status}");
            match status.as_u16() {
                401 => match auth {
                    Auth::Token(_) => {
                        format!("{what}: the token was refused; check {TOKEN_ENV}{vendor}")
                    }
                    // Only after a renewal: the first 401 of a page is retried.
                    Auth::ClientCredentials(oauth) => format!(
                        "{what}: the API refused an access token just issued by {}{vendor}; check \
                         that the OAuth application of sources.billable_users.client_id is \
                         enabled and its user may use the API, and that \
                         sources.billable_users.oauth_url is the OAuth service of base_url's \
                         region (the secret is in {CLIENT_SECRET_ENV})",
                        oauth.token_url()
                    ),
                },
                403 => format!(
                    "{what}: the token has no access to account {account:?}; ask the account's \
                     administrator to grant it, or fix sources.billable_users.account{vendor}"
                ),
                404 => format!(
                    "{what}: check sources.billable_users.base_url (the API root, ending in \
                     /v1) and sources.billable_users.account ({account:?}){vendor}"
                ),
                422 => format!(
                    "{what}: the API refused the request's parameters: {}",
                    validation_errors(body)
                ),
                300..=399 => format!(
                    "{what}: the API redirected tally to another address (another scheme, host \
                     or port), and tally follows a redirect only within the same origin, so that \
                     neither the token nor the list of people can come from elsewhere; nothing \
                     was read. If the API really moved, set sources.billable_users.base_url to \
                     its new address"
                ),
                429 => {
                    format!("{what}: still rate limited after retrying; run again later{vendor}")
                }
                s if s >= 500 => {
                    format!("{what} and kept failing after retries; try again later{vendor}")
                }
                _ => format!("{what}{vendor}"),
            }
        }
        HttpError::RateLimited { .. } => format!(
            "{error}; {}",
            error.rate_limit_advice("sources.billable_users")
        ),
        HttpError::Timeout { .. } | HttpError::Transport { .. } => {
            format!(
                "{error} (after retries); check sources.billable_users.base_url and the network"
            )
        }
        HttpError::Decode { .. } => error.to_string(),
    };
    anyhow::Error::new(error).context(message)
}

/// ` (the API said: <message>)` from an error body `{"message": "..."}`, or the body itself when it is not
/// that shape (it is already cut short by the HTTP client).
fn vendor_message(body: &str) -> String {
    let parsed = serde_json::from_str::<serde_json::Value>(body).ok();
    match parsed
        .as_ref()
        .and_then(|v| v.get("message"))
        .and_then(|m| m.as_str())
    {
        Some(message) => format!(" (the API said: {message})"),
        None if body.trim().is_empty() => String::new(),
        None => format!(" (the API said: {})", body.trim()),
    }
}

/// The `errors: [[field, message], ...]` pairs of a 422 body as `field message; ...`.
fn validation_errors(body: &str) -> String {
    let parsed: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let pairs: Vec<String> = parsed
        .get("errors")
        .and_then(|e| e.as_array())
        .map(|errors| {
            errors
                .iter()
                .map(|pair| match pair.as_array().map(Vec::as_slice) {
                    Some([field, message, ..]) => format!(
                        "{} {}",
                        field.as_str().unwrap_or("?"),
                        message.as_str().unwrap_or("?")
                    ),
                    _ => pair.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    let message = parsed.get("message").and_then(|m| m.as_str());
    match (pairs.is_empty(), message) {
        (false, Some(message)) => format!("{} ({message})", pairs.join("; ")),
        (false, None) => pairs.join("; "),
        (true, Some(message)) => message.to_owned(),
        (true, None) => body.trim().to_owned(),
    }
}

/// [`next_page`] of a page's `Link` values as a pure function, for the fuzz harness.
pub fn parse_next_page(link_values: &[&str], request: &Url) -> Result<Option<u64>, String> {
    next_page(link_values, request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(page: u32) -> Url {
        Url::parse(&format!(
            "http://127.0.0.1:1/v1/account/billable_users?year=2026&month=10&page={page}&per_page=100"
        ))
        .unwrap()
    }

    #[test]
    fn the_next_page_comes_from_the_link_header() {
        let link = r#"<http://127.0.0.1:1/v1/account/billable_users?year=2026&month=10&page=1&per_page=100>; rel="first", <http://127.0.0.1:1/v1/account/billable_users?year=2026&month=10&page=3&per_page=100>; rel="next""#;
        assert_eq!(next_page(&[link], &url(2)), Ok(Some(3)));
        assert_eq!(next_page(&[], &url(2)), Ok(None));
    }

    #[test]
    fn a_next_link_without_a_page_number_is_refused() {
        let no_page = r#"<http://127.0.0.1:1/v1/account/billable_users>; rel="next""#;
        assert!(next_page(&[no_page], &url(2)).is_err());
        let not_a_number = r#"<http://127.0.0.1:1/v1/account/billable_users?page=x>; rel="next""#;
        assert!(next_page(&[not_a_number], &url(2)).is_err());
    }

    #[test]
    fn a_pagination_header_is_a_number_or_absent() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(
            pagination_header(&headers, "x-pagination-total-entries"),
            Ok(None)
        );
        headers.insert("x-pagination-total-entries", "47".parse().unwrap());
        assert_eq!(
            pagination_header(&headers, "x-pagination-total-entries"),
            Ok(Some(47))
        );
        headers.insert("x-pagination-total-entries", "lots".parse().unwrap());
        let error = pagination_header(&headers, "x-pagination-total-entries").unwrap_err();
        assert!(
            error.contains("x-pagination-total-entries") && error.contains("lots"),
            "{error}"
        );
    }

    #[test]
    fn validation_errors_list_every_field() {
        let body = r#"{"message":"Validation failed","errors":[["month","is invalid"],["year","is invalid"]]}"#;
        assert_eq!(
            validation_errors(body),
            "month is invalid; year is invalid (Validation failed)"
        );
        assert_eq!(validation_errors("oops"), "oops");
    }

    #[test]
    fn the_endpoint_keeps_the_version_segment() {
        for base in ["https://api.example.com/v1", "https://api.example.com/v1/"] {
            for (format, path) in [
                (Format::Json, "billable_users"),
                (Format::Csv, "billable_users.csv"),
            ] {
                let client = Client::new(
                    base,
                    format,
                    Auth::Token(SecretString::from("t")),
                    HttpClient::new(&crate::http::HttpSettings::default()).unwrap(),
                )
                .unwrap();
                assert_eq!(
                    client.endpoint.as_str(),
                    format!("https://api.example.com/v1/account/{path}")
                );
            }
        }
    }
}
