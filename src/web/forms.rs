//! The page's actions: approving drafts (a customer's, chosen lines, or the whole period) and
//! pushing approved lines, through `pipeline::approve` as `tally approve` and `tally push` do,
//! holding the writer lease; and the period's exports. Only an approver may approve or push.
//! A push runs while the request waits (synchronously) and its outcome is shown in `#message`.

use super::auth::{Signed, field, forbidden, form_pairs};
use super::{Web, WebError};
use crate::domain::{BillingAccount, Period};
use crate::pipeline::approve::{self, ApprovalScope};
use crate::shutdown::Shutdown;
use crate::store::{Busy, PushScope, Role};
use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use std::sync::Arc;
use std::time::Duration;

fn period_or_404(period: &str) -> Result<Period, Box<Response>> {
    period
        .parse::<Period>()
        .map_err(|_| Box::new((StatusCode::NOT_FOUND, "there is no such period").into_response()))
}

/// Back to the period page, with `message` shown there.
fn back(web: &Web, signed: &Signed, period: Period, message: String) -> Response {
    web.set_flash(&signed.token_hash, message);
    Redirect::to(&format!("/periods/{period}")).into_response()
}

/// Takes the writer lease without waiting; a busy lease becomes a message for the page.
async fn lease(
    web: &Web,
    signed: &Signed,
    what: &str,
) -> Result<Result<crate::store::WriterLease, String>, WebError> {
    match web
        .store
        .acquire_writer(
            &format!("tally serve: {what} by {}", signed.user),
            Duration::ZERO,
        )
        .await
    {
        Ok(lease) => Ok(Ok(lease)),
        Err(e) => match e.downcast_ref::<Busy>() {
            Some(busy) => Ok(Err(format!("Not done: {busy}."))),
            None => Err(e.into()),
        },
    }
}

/// `POST /periods/{p}/approve`: fields `csrf`, then `customer` (its drafts), or
/// `approve-selected` with `line` ids (those drafts), or `scope=period` (every draft); `note`.
pub async fn approve(
    State(web): State<Arc<Web>>,
    Extension(signed): Extension<Signed>,
    Path(period): Path<String>,
    body: Bytes,
) -> Result<Response, WebError> {
    let period = match period_or_404(&period) {
        Ok(p) => p,
        Err(r) => return Ok(*r),
    };
    if signed.role != Role::Approver {
        return Ok(forbidden("a viewer cannot approve"));
    }
    let pairs = form_pairs(&body);
    let note = field(&pairs, "note")
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let customer = field(&pairs, "customer")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(BillingAccount::from);
    let ids: Vec<i64> = pairs
        .iter()
        .filter(|(k, _)| k == "line")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    let (scope, what) = if field(&pairs, "approve-selected").is_some() {
        (
            ApprovalScope::Lines(&ids),
            format!("{} selected line(s)", ids.len()),
        )
    } else if let Some(c) = &customer {
        (ApprovalScope::Customer(c), format!("customer {c}"))
    } else if field(&pairs, "scope") == Some("period") {
        (ApprovalScope::Period, "the whole period".to_owned())
    } else {
        return Ok(back(
            &web,
            &signed,
            period,
            "Nothing approved: choose a customer, lines or the whole period.".to_owned(),
        ));
    };
    if matches!(scope, ApprovalScope::Lines(ids) if ids.is_empty()) {
        return Ok(back(
            &web,
            &signed,
            period,
            "Nothing approved: no line was selected.".to_owned(),
        ));
    }
    let _lease = match lease(&web, &signed, "approve").await? {
        Ok(lease) => lease,
        Err(message) => return Ok(back(&web, &signed, period, message)),
    };
    let approved = approve::approve_drafts(&web.store, period, scope, &signed.user, note).await?;
    tracing::info!(user = %signed.user, %period, approved = approved.len(), "approved on the review page");
    let message = format!(
        "Approved {} draft line(s) of {what} as {}. Push them with the Push button.",
        approved.len(),
        signed.user
    );
    Ok(back(&web, &signed, period, message))
}

/// `POST /periods/{p}/push`: pushes every approved line of the period (and resolves lines left
/// `pushing`), as `tally push --period` does.
pub async fn push(
    State(web): State<Arc<Web>>,
    Extension(signed): Extension<Signed>,
    Path(period): Path<String>,
) -> Result<Response, WebError> {
    let period = match period_or_404(&period) {
        Ok(p) => p,
        Err(r) => return Ok(*r),
    };
    if signed.role != Role::Approver {
        return Ok(forbidden("a viewer cannot push"));
    }
    let _lease = match lease(&web, &signed, "push").await? {
        Ok(lease) => lease,
        Err(message) => return Ok(back(&web, &signed, period, message)),
    };
    let shutdown = Shutdown::new();
    let scope = PushScope::default();
    let message =
        match approve::push_approved(&web.settings, &web.store, &shutdown, period, &scope).await {
            Ok(outcome) => {
                let mut message = format!("Pushed {} line(s).", outcome.pushed);
                if outcome.waiting > 0 {
                    message.push_str(&format!(
                        " {} line(s) wait for their settle time: push again later.",
                        outcome.waiting
                    ));
                }
                for e in &outcome.errors {
                    message.push_str(&format!(" Push error: {e}"));
                }
                message
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "a push from the review page failed");
                format!("The push failed: {e:#}")
            }
        };
    tracing::info!(user = %signed.user, %period, "pushed from the review page");
    Ok(back(&web, &signed, period, message))
}

fn attachment(bytes: Vec<u8>, content_type: &'static str, name: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    )
        .into_response()
}

/// `GET /periods/{p}/lines.csv`: `export::lines_csv` of the period's lines.
pub async fn lines_csv(
    State(web): State<Arc<Web>>,
    Path(period): Path<String>,
) -> Result<Response, WebError> {
    export(&web, &period, Export::Csv).await
}

/// `GET /periods/{p}/lines.xlsx`: `export::lines_xlsx` of the period's lines.
pub async fn lines_xlsx(
    State(web): State<Arc<Web>>,
    Path(period): Path<String>,
) -> Result<Response, WebError> {
    export(&web, &period, Export::Xlsx).await
}

enum Export {
    Csv,
    Xlsx,
}

/// A period's lines as the export an accountant downloads (the same bytes `tally lines` writes).
async fn export(web: &Web, period: &str, format: Export) -> Result<Response, WebError> {
    let period = match period_or_404(period) {
        Ok(p) => p,
        Err(r) => return Ok(*r),
    };
    let lines = web.store.ledger_lines(period, None).await?;
    Ok(match format {
        Export::Csv => attachment(
            crate::export::lines_csv(&lines)?,
            "text/csv; charset=utf-8",
            format!("tally-{period}.csv"),
        ),
        Export::Xlsx => attachment(
            crate::export::lines_xlsx(&lines)?,
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            format!("tally-{period}.xlsx"),
        ),
    })
}
