//! Who may see the review page: passwords (argon2id), sessions (a random token in an
//! `HttpOnly; SameSite=Strict` cookie, stored as its SHA-256 only), a CSRF token per session
//! checked on every POST, and the slow-down of a name after five failed sign-ins in a row: each
//! further attempt is refused with 429 until 1 s after the last failure, doubling with every
//! further failure up to 60 s (a refused attempt checks no password and counts nothing).

use super::{Web, WebError};
use crate::store::Role;
use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use minijinja::context;
use sha2::{Digest, Sha256};
use std::sync::{Arc, OnceLock};

/// The session cookie.
const SESSION_COOKIE: &str = "tally_session";
/// The sign-in form's own CSRF cookie (there is no session yet): the form's hidden field must
/// repeat it.
const LOGIN_COOKIE: &str = "tally_login";
/// Failed sign-ins in a row before a name is slowed down.
pub const FREE_FAILURES: u32 = 5;
/// The longest wait imposed on a name.
const MAX_WAIT_SECS: i64 = 60;
/// The largest form body read (a period's approval with every line selected fits easily).
const MAX_FORM_BYTES: usize = 1 << 20;

/// The signed-in user of a request, put in its extensions by [`require_session`].
#[derive(Debug, Clone)]
pub struct Signed {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    pub token_hash: String,
}

/// The argon2id PHC string of a password, with a random salt.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A hash no password matches, checked for unknown names so that they take as long as known
/// ones and the answer does not tell which names exist.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password(&random_token()).unwrap_or_default())
}

/// 32 random bytes from the OS, as hex.
pub(super) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The OS's generator does not fail on the systems tally runs on; if it ever did, an
    // all-zero token would be guessable, so refuse to go on.
    if let Err(e) = getrandom::fill(&mut bytes) {
        panic!("the operating system's random number generator failed: {e}");
    }
    hex::encode(bytes)
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The value of cookie `name` in the request, if sent.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn cookie_header(web: &Web, name: &str, value: &str, max_age_secs: i64, path: &str) -> HeaderValue {
    let secure = if web.settings.serve.behind_tls() {
        "; Secure"
    } else {
        ""
    };
    let text = format!(
        "{name}={value}; HttpOnly; SameSite=Strict; Path={path}; Max-Age={max_age_secs}{secure}"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The session of the request's cookie, if it is valid and not expired.
async fn session_of(web: &Web, headers: &HeaderMap) -> Result<Option<Signed>, WebError> {
    let Some(token) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let token_hash = sha256_hex(token);
    let Some(session) = web.store.session(&token_hash).await? else {
        return Ok(None);
    };
    if session.expires_at <= Utc::now() {
        web.store.delete_session(&token_hash).await?;
        return Ok(None);
    }
    Ok(Some(Signed {
        user: session.user,
        role: session.role,
        csrf: session.csrf,
        token_hash,
    }))
}

/// The pairs of a urlencoded form body (repeated names kept, as for selected lines).
pub(super) fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(body).unwrap_or_default()
}

pub(super) fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Equal in constant time, so that a CSRF token cannot be guessed byte by byte.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Every route but `/login` and the stylesheet: without a session, a GET is sent to the
/// sign-in page (303) and anything else is refused (403); a POST must carry the session's
/// CSRF token in its `csrf` field (else 403). The signed-in user goes in the extensions.
pub async fn require_session(
    State(web): State<Arc<Web>>,
    request: Request,
    next: Next,
) -> Result<Response, WebError> {
    let Some(signed) = session_of(&web, request.headers()).await? else {
        if request.method() == Method::GET || request.method() == Method::HEAD {
            return Ok(Redirect::to("/login").into_response());
        }
        return Ok(forbidden("sign in first"));
    };
    let (parts, body) = request.into_parts();
    let mut request = if parts.method == Method::POST {
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
            return Ok((StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response());
        };
        let pairs = form_pairs(&bytes);
        if !field(&pairs, "csrf").is_some_and(|token| same(token, &signed.csrf)) {
            return Ok(forbidden(
                "the form's CSRF token is missing or wrong: reload the page and try again",
            ));
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        Request::from_parts(parts, body)
    };
    request.extensions_mut().insert(signed);
    Ok(next.run(request).await)
}

pub(super) fn forbidden(why: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::response::Html(format!(
            "<!doctype html><title>tally: forbidden</title><p id=\"message\">Forbidden: {}.</p><p><a href=\"/\">Back</a></p>",
            minijinja::HtmlEscape(why)
        )),
    )
        .into_response()
}

/// `GET /login`: the form, with a fresh CSRF token in a cookie of its own.
pub async fn login_page(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    if session_of(&web, &headers).await?.is_some() {
        return Ok(Redirect::to("/").into_response());
    }
    login_form(&web, StatusCode::OK, None, "")
}

fn login_form(
    web: &Web,
    status: StatusCode,
    message: Option<String>,
    username: &str,
) -> Result<Response, WebError> {
    let csrf = random_token();
    let page = web.render(
        "login.html",
        context! { csrf => &csrf, message => message, username => username },
    )?;
    let mut response = (status, page).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(web, LOGIN_COOKIE, &csrf, 3600, "/login"),
    );
    Ok(response)
}

/// `POST /login`.
pub async fn login(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let pairs = form_pairs(&body);
    let sent = field(&pairs, "csrf").unwrap_or_default();
    if sent.is_empty() || !cookie(&headers, LOGIN_COOKIE).is_some_and(|c| same(c, sent)) {
        return Ok(forbidden(
            "the sign-in form's CSRF token is missing or wrong: reload the page and try again",
        ));
    }
    let name = field(&pairs, "username")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let password = field(&pairs, "password").unwrap_or_default();
    if let Some(failures) = web.store.login_failures(&name).await?
        && failures.count >= FREE_FAILURES
    {
        let doublings = (failures.count - FREE_FAILURES).min(6);
        let wait = (1i64 << doublings).min(MAX_WAIT_SECS);
        let until = failures.last + chrono::Duration::seconds(wait);
        let left = (until - Utc::now()).num_milliseconds();
        if left > 0 {
            let secs = (left + 999) / 1000;
            let mut response = login_form(
                &web,
                StatusCode::TOO_MANY_REQUESTS,
                Some(format!(
                    "Too many failed sign-ins for this name: try again in {secs} s."
                )),
                &name,
            )?;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return Ok(response);
        }
    }
    let credentials = web.store.user_credentials(&name).await?;
    let ok = match &credentials {
        Some((hash, _)) => verify_password(password, hash),
        None => {
            verify_password(password, decoy_hash());
            false
        }
    };
    if !ok || name.is_empty() || password.is_empty() {
        web.store.record_login_failure(&name).await?;
        return login_form(
            &web,
            StatusCode::UNAUTHORIZED,
            Some("Wrong user name or password.".to_owned()),
            &name,
        );
    }
    web.store.clear_login_failures(&name).await?;
    let token = random_token();
    let hours = i64::from(web.settings.serve.session_hours);
    let expires = Utc::now() + chrono::Duration::hours(hours);
    web.store
        .create_session(&sha256_hex(&token), &name, &random_token(), expires)
        .await?;
    tracing::info!(user = %name, "signed in to the review page");
    let mut response = Redirect::to("/").into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        cookie_header(&web, SESSION_COOKIE, &token, hours * 3600, "/"),
    );
    headers.append(
        header::SET_COOKIE,
        cookie_header(&web, LOGIN_COOKIE, "", 0, "/login"),
    );
    Ok(response)
}

/// `POST /logout`: ends the session.
pub async fn logout(
    State(web): State<Arc<Web>>,
    axum::Extension(signed): axum::Extension<Signed>,
) -> Result<Response, WebError> {
    web.store.delete_session(&signed.token_hash).await?;
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(&web, SESSION_COOKIE, "", 0, "/"),
    );
    Ok(response)
}
