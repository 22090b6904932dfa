//! The simulated API's endpoints: sign-in, authentication, the user list and usage, with CCC's error shape.

use super::*;

/// A field of a JSON body, by name ignoring case (ServiceStack binds that way).
pub(super) fn field<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

/// A query parameter by name ignoring case; the last one wins.
pub(super) fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

pub(super) async fn login(State(sim): State<CccSim>, body: Bytes) -> Response {
    if let Some(fault) = sim.arrive() {
        return fault;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (username, password) = (field(&body, "username"), field(&body, "password"));
    let mut missing = Vec::new();
    if username.is_none_or(str::is_empty) {
        missing.push(("UserName", "NotEmpty", "'User Name' must not be empty."));
    }
    if password.is_none_or(str::is_empty) {
        missing.push(("Password", "NotEmpty", "'Password' must not be empty."));
    }
    if !missing.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "Validation failed",
            &missing,
        );
    }
    if username != Some(sim.inner.username.as_str())
        || password != Some(sim.inner.password.as_str())
    {
        return error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Invalid UserName or Password",
            &[],
        );
    }
    let token = random_id();
    sim.state().tokens.insert(token.clone());
    sim.inner.logins.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({ "sessionToken": token })).into_response()
}

pub(super) async fn authenticate(
    State(sim): State<CccSim>,
    Path(service): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(fault) = sim.arrive() {
        return fault;
    }
    let Some(service) = normalize_guid(&service) else {
        return bad_guid("ServiceGuid", &service);
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(token) = field(&body, "token").filter(|t| !t.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "Validation failed",
            &[("Token", "NotEmpty", "'Token' must not be empty.")],
        );
    };
    let mut state = sim.state();
    if !state.services.contains_key(&service) {
        return error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Service {service} not found"),
            &[],
        );
    }
    if !state.tokens.remove(token) {
        return error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Invalid or expired session token",
            &[],
        );
    }
    let session_id = random_id();
    state.sessions.insert(
        session_id.clone(),
        Session {
            service,
            last_used: Instant::now(),
        },
    );
    sim.inner.authentications.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({ "sessionId": session_id, "userName": sim.inner.username })).into_response()
}

pub(super) async fn users(
    State(sim): State<CccSim>,
    Path(service): Path<String>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    if let Some(fault) = sim.arrive() {
        return fault;
    }
    let service = match sim.authorize(&headers, &service) {
        Ok(service) => service,
        Err(refusal) => return *refusal,
    };
    let mut errors = Vec::new();
    let page = match param(&query, "Page").map(str::parse::<usize>) {
        None => 1,
        Some(Ok(p)) if p >= 1 => p,
        Some(_) => {
            errors.push(("Page", "GreaterThan", "'Page' must be greater than '0'."));
            1
        }
    };
    let page_size = match param(&query, "PageSize").map(str::parse::<usize>) {
        None => DEFAULT_PAGE_SIZE,
        Some(Ok(s)) if (1..=MAX_PAGE_SIZE).contains(&s) => s,
        Some(_) => {
            errors.push((
                "PageSize",
                "InclusiveBetween",
                "'Page Size' must be between 1 and 100.",
            ));
            DEFAULT_PAGE_SIZE
        }
    };
    if !errors.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "Validation failed",
            &errors,
        );
    }
    let mut state = sim.state();
    state
        .users_requests
        .push((service.clone(), page, page_size));
    let all = state
        .services
        .get(&service)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let total = all.len();
    let served = if state.skip_page == Some(page) {
        page + 1
    } else {
        page
    };
    let results: Vec<Value> = all
        .iter()
        .skip((served - 1).saturating_mul(page_size))
        .take(page_size)
        .map(CccUser::list_json)
        .collect();
    let total_items = match state.total_items {
        Some((from, items)) if page >= from => items,
        _ => total as u64,
    };
    let total_pages = match state.total_pages {
        Some((from, pages)) if page >= from => pages,
        _ => total.div_ceil(page_size) as u64,
    };
    axum::Json(json!({
        "pageSize": page_size,
        "totalPages": total_pages,
        "totalItems": total_items,
        "currentPage": served,
        "results": results,
    }))
    .into_response()
}

/// Counts a usage call in flight for as long as it lives.
pub(super) struct InFlight<'a>(&'a Inner);

impl<'a> InFlight<'a> {
    fn enter(inner: &'a Inner) -> Self {
        let now = inner.usage_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        inner.max_usage_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(inner)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.usage_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) async fn usage(
    State(sim): State<CccSim>,
    Path((service, user)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    sim.inner.usage_calls.fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight::enter(&sim.inner);
    let delay = sim.state().usage_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(fault) = sim.arrive() {
        return fault;
    }
    let service = match sim.authorize(&headers, &service) {
        Ok(service) => service,
        Err(refusal) => return *refusal,
    };
    let Some(user) = normalize_guid(&user) else {
        return bad_guid("UserGuid", &user);
    };
    let period_type = param(&query, "PeriodType");
    let period = param(&query, "Period");
    let mut state = sim.state();
    state.usage_requests.push(UsageRequest {
        service: service.clone(),
        user: user.clone(),
        period_type: period_type.map(str::to_owned),
        period: period.map(str::to_owned),
    });
    let mut errors = Vec::new();
    let monthly = match period_type {
        None => false,
        Some(t) if t.eq_ignore_ascii_case("Daily") => false,
        Some(t) if t.eq_ignore_ascii_case("Monthly") => true,
        Some(_) => {
            errors.push((
                "PeriodType",
                "EnumMismatch",
                "'Period Type' must be Daily or Monthly.",
            ));
            false
        }
    };
    let day = match period {
        None => Some(Utc::now().date_naive() - Days::days(1)),
        Some(text) => text
            .get(..10)
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()),
    };
    let Some(day) = day else {
        errors.push(("Period", "InvalidDate", "'Period' is not a date."));
        return error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "Validation failed",
            &errors,
        );
    };
    if !errors.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "Validation failed",
            &errors,
        );
    }
    let Some(found) = state
        .services
        .get(&service)
        .and_then(|users| users.iter().find(|u| canonical(&u.guid) == user))
    else {
        return error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("User {user} not found in service {service}"),
            &[],
        );
    };
    let (from, to) = if monthly {
        let first = day.with_day(1).unwrap_or(day);
        let last = Period::new(first.year(), first.month())
            .map(|p| p.last_day())
            .unwrap_or(first);
        (first, last)
    } else {
        (day, day)
    };
    axum::Json(json!({
        "serviceGuid": service,
        "periodType": if monthly { "Monthly" } else { "Daily" },
        "period": format!("{from}T00:00:00Z"),
        "usage": found.usage_json(from, to),
    }))
    .into_response()
}

pub(super) fn bad_guid(field: &str, value: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "RequestBindingException",
        &format!("Unable to bind request: {value:?} is not a Guid"),
        &[(field, "InvalidGuid", "is not a Guid")],
    )
}

/// A ServiceStack error: `{"responseStatus": {errorCode, message, errors: [...]}}`.
pub(super) fn error(
    status: StatusCode,
    code: &str,
    message: &str,
    errors: &[(&str, &str, &str)],
) -> Response {
    let errors: Vec<Value> = errors
        .iter()
        .map(|(field, code, message)| {
            json!({ "errorCode": code, "fieldName": field, "message": message })
        })
        .collect();
    (
        status,
        axum::Json(json!({
            "responseStatus": { "errorCode": code, "message": message, "errors": errors }
        })),
    )
        .into_response()
}

pub(super) fn random_id() -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(24)
        .collect()
}
