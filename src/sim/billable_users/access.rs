//! Who may call and how often: personal and OAuth tokens, injected faults, the rate limits.

use super::*;

/// Whether `token` is the personal token or an issued access token that has not expired.
pub(super) fn admits(sim: &BillableUsersSim, token: &str) -> bool {
    if token == sim.inner.token {
        return true;
    }
    let mut state = sim.state();
    match state.issued.get(token) {
        Some(expires_at) if Instant::now() < *expires_at => true,
        Some(_) => {
            state.issued.remove(token);
            false
        }
        None => false,
    }
}

/// `POST /token`: client credentials for an access token (see the module's notes).
pub(super) async fn issue_token(
    State(sim): State<BillableUsersSim>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sim.inner.token_requests.fetch_add(1, Ordering::SeqCst);
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    let form = match serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) {
        Ok(form) if is_form => form,
        _ => {
            return oauth_error(
                "invalid_request",
                "The request must be sent as application/x-www-form-urlencoded.",
            );
        }
    };
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match field("grant_type") {
        None => return oauth_error("invalid_request", "Missing required parameter: grant_type."),
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_error(
                "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server.",
            );
        }
    }
    let mut state = sim.state();
    let known = match (field("client_id"), field("client_secret")) {
        (Some(id), Some(secret)) => state
            .oauth_clients
            .get(id)
            .is_some_and(|expected| expected == secret),
        _ => false,
    };
    if !known {
        return oauth_error(
            "invalid_client",
            "Client authentication failed due to unknown client, no client authentication \
             included, or unsupported authentication method.",
        );
    }
    let access_token = format!("sim-access-{:032x}", fastrand::u128(..));
    let lifetime = state.token_lifetime;
    state
        .issued
        .insert(access_token.clone(), Instant::now() + lifetime);
    let mut answer = serde_json::json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "created_at": epoch_secs_ceil(SystemTime::now()),
    });
    if state.send_expires_in {
        answer["expires_in"] = serde_json::json!(lifetime.as_secs());
    }
    axum::Json(answer).into_response()
}

/// The OAuth service's refusal: `400 {"error", "error_description"}`.
pub(super) fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

/// A fault a test asked for, consumed one request at a time.
pub(super) fn injected_fault(sim: &BillableUsersSim) -> Option<Response> {
    let mut state = sim.state();
    if state.rate_limit_next > 0 {
        state.rate_limit_next -= 1;
        let mut response = message(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
        set(response.headers_mut(), "retry-after", &state.retry_after);
        return Some(response);
    }
    if state.fail_next > 0 {
        state.fail_next -= 1;
        let status =
            StatusCode::from_u16(state.fail_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            return Some(validation_failed(&[("month", "is invalid")]));
        }
        let reason = status.canonical_reason().unwrap_or("Error");
        return Some(message(status, &format!("{reason} (simulated)")));
    }
    None
}

/// The rate-limit headers of an admitted request.
pub(super) struct Limits {
    pub(super) limit: u32,
    pub(super) remaining: u32,
    pub(super) reset: u64,
}

impl Limits {
    pub(super) fn apply(&self, headers: &mut HeaderMap) {
        set(headers, "x-ratelimit-limit", self.limit);
        set(headers, "x-ratelimit-remaining", self.remaining);
        set(headers, "x-ratelimit-reset", self.reset);
    }
}

/// A request over the limit: the headers of its 429, and when to come back.
pub(super) struct UsedUp {
    pub(super) limits: Limits,
    pub(super) retry_after_secs: u64,
}

/// Counts the request in the current window, or refuses it when the window is used up.
pub(super) fn take_rate_limit(sim: &BillableUsersSim) -> Result<Limits, UsedUp> {
    let mut state = sim.state();
    let now = SystemTime::now();
    if now >= state.window_end {
        state.window_end = now + state.window;
        state.used = 0;
    }
    let until_reset = state
        .window_end
        .duration_since(now)
        .unwrap_or(Duration::ZERO);
    // Rounded up: a client that waits until `reset` must find the new window open.
    let reset = epoch_secs_ceil(state.window_end);
    if state.used >= state.limit {
        return Err(UsedUp {
            limits: Limits {
                limit: state.limit,
                remaining: 0,
                reset,
            },
            retry_after_secs: until_reset.as_secs_f64().ceil().max(1.0) as u64,
        });
    }
    state.used += 1;
    Ok(Limits {
        limit: state.limit,
        remaining: state.limit - state.used,
        reset,
    })
}

pub(super) fn epoch_secs_ceil(at: SystemTime) -> u64 {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    since.as_secs() + u64::from(since.subsec_nanos() > 0)
}
