//! The simulated API's endpoints: accounts (v1), corrections (v3), with each version's error shape.

use super::*;

pub(super) fn account_json(a: &ApAccount) -> serde_json::Value {
    serde_json::json!({
        "id": a.id,
        "name": a.name,
        "account_class_id": 1,
        "account_class": "Default",
        "primary_name": a.name,
        "email": a.email,
        "status": a.status,
        "balance": "0.00",
        "credit_limit": "0.0",
        "custom_attributes": a.custom_attributes.to_json(),
        "created_at": "2026-01-05T09:00:00.000+01:00",
        "updated_at": "2026-09-30T17:45:12.000+02:00",
    })
}

pub(super) fn positive(
    query: &HashMap<String, String>,
    name: &str,
) -> Result<Option<usize>, String> {
    match query.get(name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .map(Some)
            .ok_or_else(|| format!("{name} must be a positive integer, got {v:?}")),
    }
}

pub(super) async fn list_accounts(
    State(sim): State<ActivePlatformSim>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if query.get("api_token").map(String::as_str) != Some(&*sim.api_token) {
        return v1_error(StatusCode::UNAUTHORIZED, "Invalid or missing api_token");
    }
    const KNOWN: &[&str] = &[
        "api_token",
        "page",
        "per_page",
        "sorting[field]",
        "sorting[reversed]",
        "filters[email]",
        "filters[status]",
    ];
    if let Some(other) = query.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return v1_error(
            StatusCode::BAD_REQUEST,
            &format!("Parameter {other} is not supported by the simulator"),
        );
    }
    let page = match positive(&query, "page") {
        Ok(p) => p.unwrap_or(1),
        Err(m) => return v1_error(StatusCode::BAD_REQUEST, &m),
    };
    let per_page = match positive(&query, "per_page") {
        Ok(p) => p.unwrap_or(DEFAULT_PER_PAGE).min(MAX_PER_PAGE),
        Err(m) => return v1_error(StatusCode::BAD_REQUEST, &m),
    };
    let reversed = match query.get("sorting[reversed]").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return v1_error(
                StatusCode::BAD_REQUEST,
                &format!("sorting[reversed] must be true or false, got {other:?}"),
            );
        }
    };
    let mut accounts: Vec<ApAccount> = sim.lock().data.accounts.values().cloned().collect();
    match query.get("sorting[field]").map(String::as_str) {
        None | Some("id") => {}
        Some("name") => accounts.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id))),
        Some("email") => accounts.sort_by(|a, b| a.email.cmp(&b.email).then(a.id.cmp(&b.id))),
        Some("status") => accounts.sort_by(|a, b| a.status.cmp(&b.status).then(a.id.cmp(&b.id))),
        Some(other) => {
            return v1_error(
                StatusCode::BAD_REQUEST,
                &format!("Cannot sort by {other:?}"),
            );
        }
    }
    if reversed {
        accounts.reverse();
    }
    if let Some(email) = query.get("filters[email]") {
        let wanted = email.to_lowercase();
        accounts.retain(|a| a.email.to_lowercase().contains(&wanted));
    }
    if let Some(status) = query.get("filters[status]") {
        accounts.retain(|a| &a.status == status);
    }
    let page: Vec<serde_json::Value> = accounts
        .iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .map(account_json)
        .collect();
    axum::Json(serde_json::Value::Array(page)).into_response()
}

/// `X-Api-Token` and the reseller in the path; the error response otherwise.
pub(super) fn v3_access(
    sim: &ActivePlatformSim,
    headers: &HeaderMap,
    reseller: &str,
) -> Option<Response> {
    let token = headers.get("x-api-token").and_then(|v| v.to_str().ok());
    if token != Some(&*sim.api_token) {
        return Some(v3_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "X-Api-Token is missing or invalid",
        ));
    }
    if reseller != &*sim.reseller_id {
        return Some(v3_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("Reseller {reseller} not found"),
        ));
    }
    None
}

pub(super) fn correction_json(c: &SimCorrection) -> serde_json::Value {
    serde_json::json!({
        "id": c.id.to_string(),
        "type": "corrections",
        "attributes": {
            "account_id": c.account_id,
            "subscription_id": c.subscription_id,
            "period_from": c.period_from.format("%Y-%m-%d").to_string(),
            "period_to": c.period_to.format("%Y-%m-%d").to_string(),
            "total": c.total,
            "included_invoice": c.included_invoice,
            "comment": c.comment,
            "created_at": c.created_at.to_rfc3339(),
        }
    })
}

pub(super) fn v3_document(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_API));
    response
}

pub(super) async fn list_corrections(
    State(sim): State<ActivePlatformSim>,
    Path(reseller): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = v3_access(&sim, &headers, &reseller) {
        return refused;
    }
    let bad = |m: &str| v3_error(StatusCode::BAD_REQUEST, "invalid_parameter", m);
    const KNOWN: &[&str] = &["filter[account_id]", "page[number]", "page[size]"];
    if let Some(other) = query.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return bad(&format!("Parameter {other} is not supported"));
    }
    let number = match positive(&query, "page[number]") {
        Ok(n) => n.unwrap_or(1),
        Err(m) => return bad(&m),
    };
    let size = match positive(&query, "page[size]") {
        Ok(Some(s)) if s > MAX_PAGE_SIZE => {
            return bad(&format!("page[size] must be at most {MAX_PAGE_SIZE}"));
        }
        Ok(s) => s.unwrap_or(DEFAULT_PAGE_SIZE),
        Err(m) => return bad(&m),
    };
    let account = match query.get("filter[account_id]") {
        None => None,
        Some(a) => match a.trim().parse::<u64>() {
            Ok(a) => Some(a),
            Err(_) => return bad("filter[account_id] must be an account id"),
        },
    };
    let all: Vec<SimCorrection> = sim
        .lock()
        .data
        .corrections
        .iter()
        .filter(|c| account.is_none_or(|a| c.account_id == a))
        .cloned()
        .collect();
    let data: Vec<serde_json::Value> = all
        .iter()
        .skip((number - 1).saturating_mul(size))
        .take(size)
        .map(correction_json)
        .collect();
    let total_pages = all.len().div_ceil(size).max(1);
    let link = |n: usize| {
        let mut l =
            format!("/api/v3/resellers/{reseller}/corrections?page[number]={n}&page[size]={size}");
        if let Some(a) = account {
            l.push_str(&format!("&filter[account_id]={a}"));
        }
        l
    };
    let mut links =
        serde_json::json!({ "self": link(number), "first": link(1), "last": link(total_pages) });
    if number < total_pages {
        links["next"] = link(number + 1).into();
    }
    v3_document(
        StatusCode::OK,
        serde_json::json!({
            "data": data,
            "meta": { "total_count": all.len(), "total_pages": total_pages },
            "links": links,
        }),
    )
}

/// `-?digits[.d[d]]`: the only `total` the simulator accepts.
pub(super) fn valid_total(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (whole, fraction) = match digits.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (digits, None),
    };
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction
            .is_none_or(|f| (1..=2).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit()))
}

pub(super) async fn create_correction(
    State(sim): State<ActivePlatformSim>,
    Path(reseller): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = v3_access(&sim, &headers, &reseller) {
        return refused;
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with(JSON_API) {
        return v3_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/vnd.api+json",
        );
    }
    let Ok(document) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return v3_error(StatusCode::BAD_REQUEST, "invalid_json", "Body must be JSON");
    };
    let data = &document["data"];
    if data["type"] != "corrections" {
        return v3_errors(
            StatusCode::CONFLICT,
            vec![api_error(
                StatusCode::CONFLICT,
                "type_mismatch",
                "data.type must be \"corrections\"",
                Some("/data/type"),
            )],
        );
    }
    let attributes = &data["attributes"];
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let mut errors = Vec::new();
    let mut problem = |field: &str, detail: &str| {
        errors.push(api_error(
            unprocessable,
            "invalid",
            detail,
            Some(&format!("/data/attributes/{field}")),
        ));
    };
    let account_id = match &attributes["account_id"] {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    let account_exists = account_id.is_some_and(|id| sim.lock().data.accounts.contains_key(&id));
    match account_id {
        None => problem("account_id", "account_id must be an account id"),
        Some(id) if !account_exists => problem("account_id", &format!("Account {id} not found")),
        Some(_) => {}
    }
    let date = |field: &str| {
        attributes[field]
            .as_str()
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
    };
    let (from, to) = (date("period_from"), date("period_to"));
    if from.is_none() {
        problem("period_from", "period_from must be a date, YYYY-MM-DD");
    }
    if to.is_none() {
        problem("period_to", "period_to must be a date, YYYY-MM-DD");
    }
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        problem("period_to", "period_to must not be before period_from");
    }
    let total = attributes["total"].as_str().map(str::to_owned);
    match &total {
        Some(t) if valid_total(t) => {}
        Some(_) | None => problem(
            "total",
            "total must be a string with at most two decimals, e.g. \"12.50\"",
        ),
    }
    let included_invoice = match &attributes["included_invoice"] {
        serde_json::Value::Null => false,
        serde_json::Value::Bool(b) => *b,
        _ => {
            problem("included_invoice", "included_invoice must be true or false");
            false
        }
    };
    let comment = match &attributes["comment"] {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        _ => {
            problem("comment", "comment must be a string");
            String::new()
        }
    };
    let subscription_id = match &attributes["subscription_id"] {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => {
            problem("subscription_id", "subscription_id must be an id");
            None
        }
    };
    let (Some(account_id), Some(period_from), Some(period_to), Some(total), true) =
        (account_id, from, to, total, errors.is_empty())
    else {
        return v3_errors(unprocessable, errors);
    };
    let (created, lose_answer, saved) = {
        let mut inner = sim.lock();
        let created = SimCorrection {
            id: inner.data.next_correction_id,
            account_id,
            subscription_id,
            period_from,
            period_to,
            total,
            included_invoice,
            comment,
            created_at: Utc::now(),
        };
        inner.data.next_correction_id += 1;
        inner.data.corrections.push(created.clone());
        let lose_answer = inner.accept_then_fail > 0;
        if lose_answer {
            inner.accept_then_fail -= 1;
        }
        (created, lose_answer, persist(&inner))
    };
    if let Err(e) = saved {
        tracing::error!(error = %e, "ActivePlatform simulator could not save its state");
        return v3_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Simulator could not save its state",
        );
    }
    if lose_answer {
        return v3_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal Server Error",
        );
    }
    v3_document(
        StatusCode::CREATED,
        serde_json::json!({ "data": correction_json(&created) }),
    )
}
