//! The pages that read: the periods, a period's lines by customer (with filters, exceptions
//! and runs), and one line's detail with its revisions, approvals and push history.

use super::auth::Signed;
use super::{Web, WebError, view};
use crate::domain::{LedgerLine, Period};
use crate::store::Role;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use minijinja::context;
use serde::Deserialize;
use std::sync::Arc;

/// A serialisable value for a template.
fn ser<T: serde::Serialize>(value: &T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(value))
}

/// How many runs the period page reads to find the period's own.
const RUNS_READ: u32 = 500;

fn not_found(web: &Web, signed: &Signed, what: &str) -> Result<Response, WebError> {
    let page = web.render(
        "not_found.html",
        context! { user => &signed.user, what => what },
    )?;
    Ok((StatusCode::NOT_FOUND, page).into_response())
}

/// `GET /`: every period with its status and totals per currency, split by status.
pub async fn periods(
    State(web): State<Arc<Web>>,
    Extension(signed): Extension<Signed>,
) -> Result<Html<String>, WebError> {
    let mut rows = Vec::new();
    for period in web.store.known_periods().await? {
        let lines = web.store.ledger_lines(period, None).await?;
        let closed = web.store.closed_period(period).await?.is_some();
        let refs: Vec<&LedgerLine> = lines.iter().collect();
        rows.push(context! {
            period => period.to_string(),
            status => view::period_status(&lines, closed),
            lines => lines.len(),
            totals => ser(&view::totals(&refs)),
        });
    }
    web.render(
        "periods.html",
        context! {
            user => &signed.user,
            role => signed.role.as_str(),
            csrf => &signed.csrf,
            periods => rows,
            message => web.take_flash(&signed.token_hash),
        },
    )
}

/// The period page's filters (each optional; empty means all).
#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    pub customer: Option<String>,
    pub license: Option<String>,
    pub source: Option<String>,
    pub status: Option<String>,
}

fn wanted(filter: &Option<String>, value: &str) -> bool {
    filter
        .as_deref()
        .map(str::trim)
        .is_none_or(|f| f.is_empty() || f.eq_ignore_ascii_case(value))
}

/// `GET /periods/{YYYY-MM}`.
pub async fn period(
    State(web): State<Arc<Web>>,
    Extension(signed): Extension<Signed>,
    Path(period): Path<String>,
    Query(filters): Query<Filters>,
) -> Result<Response, WebError> {
    let Ok(period) = period.parse::<Period>() else {
        return not_found(&web, &signed, "that period");
    };
    let all = web.store.ledger_lines(period, None).await?;
    let choices = |f: fn(&LedgerLine) -> String| {
        let mut values: Vec<String> = all.iter().map(f).collect();
        values.sort();
        values.dedup();
        values
    };
    let customers = choices(|l| l.key.billing_account.to_string());
    let licenses = choices(|l| l.key.license_type.to_string());
    let sources = choices(|l| l.key.source.to_string());
    let lines: Vec<LedgerLine> = all
        .iter()
        .filter(|l| {
            wanted(&filters.customer, l.key.billing_account.as_str())
                && wanted(&filters.license, l.key.license_type.as_str())
                && wanted(&filters.source, l.key.source.as_str())
                && wanted(&filters.status, l.status.as_str())
        })
        .cloned()
        .collect();
    let refs: Vec<&LedgerLine> = lines.iter().collect();
    let closed = web.store.closed_period(period).await?;
    let back = web.store.back_to_review_ids(period).await?;
    let exceptions = web.store.exceptions(period).await?;
    // Earlier runs' exceptions, replaced since: the period's history of what could not be billed.
    let past: Vec<_> = web
        .store
        .exception_history(period)
        .await?
        .into_iter()
        .filter_map(|p| {
            let replaced_by = p.superseded_by_run?;
            let e = p.exception;
            Some(context! {
                run => p.run_id,
                replaced_by => replaced_by,
                source => e.source.to_string(),
                kind => e.kind.as_str(),
                customer_key => e.customer_key,
                item => e.item,
                quantity => e.quantity.normalize().to_string(),
                message => e.message,
            })
        })
        .collect();
    let runs: Vec<_> = web
        .store
        .runs(RUNS_READ)
        .await?
        .into_iter()
        .filter(|r| r.period == period)
        .map(|r| {
            context! {
                id => r.id,
                trigger => r.trigger.as_str(),
                by => r.requested_by,
                status => r.status.as_str(),
                started => r.started_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                created => r.summary.as_ref().map(|s| s.lines_created),
                adjusted => r.summary.as_ref().map(|s| s.lines_adjusted),
                pushed => r.summary.as_ref().map(|s| s.lines_pushed),
                back_to_review => r.summary.as_ref().map(|s| s.lines_back_to_review),
                exceptions => r.summary.as_ref().map(|s| s.exceptions),
            }
        })
        .collect();
    // The newest run says how many approved lines its figures sent back to draft: they show
    // as in review again, and the page says why.
    let back_to_review = runs
        .first()
        .and_then(|r| r.get_attr("back_to_review").ok())
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(0);
    let exceptions: Vec<_> = exceptions
        .iter()
        .map(|e| {
            context! {
                source => e.source.to_string(),
                kind => e.kind.as_str(),
                customer_key => &e.customer_key,
                item => &e.item,
                account => e.billing_account.as_ref().map(|a| a.to_string()),
                quantity => e.quantity.normalize().to_string(),
                records => e.record_count,
                message => &e.message,
            }
        })
        .collect();
    let page = web.render(
        "period.html",
        context! {
            user => &signed.user,
            role => signed.role.as_str(),
            approver => signed.role == Role::Approver,
            csrf => &signed.csrf,
            period => period.to_string(),
            status => view::period_status(&all, closed.is_some()),
            closed => closed.map(|c| format!("closed {} by {}", c.closed_at.format("%Y-%m-%d"), c.closed_by)),
            customers => ser(&view::by_customer(&lines, &back)),
            totals => ser(&view::totals(&refs)),
            shown => lines.len(),
            total_lines => all.len(),
            drafts => all.iter().filter(|l| l.status == crate::domain::LineStatus::Draft).count(),
            approved => all.iter().filter(|l| l.status == crate::domain::LineStatus::Approved).count(),
            filters => context! {
                customer => filters.customer.clone().unwrap_or_default(),
                license => filters.license.clone().unwrap_or_default(),
                source => filters.source.clone().unwrap_or_default(),
                status => filters.status.clone().unwrap_or_default(),
            },
            choices => context! { customers => customers, licenses => licenses, sources => sources },
            exceptions => exceptions,
            runs => runs,
            past_exceptions => past,
            back_to_review => back_to_review,
            message => web.take_flash(&signed.token_hash),
        },
    )?;
    Ok(page.into_response())
}

/// `GET /lines/{id}`: one revision in detail, with every revision of its line.
pub async fn line(
    State(web): State<Arc<Web>>,
    Extension(signed): Extension<Signed>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let Some(line) = (match id.parse::<i64>() {
        Ok(id) => web.store.ledger_line(id).await?,
        Err(_) => None,
    }) else {
        return not_found(&web, &signed, "that line");
    };
    let revisions: Vec<LedgerLine> = web
        .store
        .ledger_lines(line.key.period, Some(&line.key.source))
        .await?
        .into_iter()
        .filter(|l| l.key == line.key)
        .collect();
    let rates = view::rate_decimals(&revisions);
    let back = web.store.back_to_review_ids(line.key.period).await?;
    let minor = line.currency.minor_units();
    let revision_rows: Vec<_> = revisions
        .iter()
        .map(|r| {
            context! {
                row => ser(&view::line_row(r, &rates, &back)),
                current => r.id == line.id,
                total_quantity => r.total_quantity.normalize().to_string(),
                total_amount => view::plain(r.total_amount, minor),
                reason => r.trace.reason(),
                approval => r.approval.as_ref().map(|a| context! {
                    by => &a.by,
                    automatic => a.by.starts_with("rule:"),
                    at => a.at.format("%Y-%m-%d %H:%M UTC").to_string(),
                    note => &a.note,
                }),
                external_id => &r.external_id,
                pushed_at => r.pushed_at.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()),
                last_error => &r.last_error,
                sink => &r.sink,
            }
        })
        .collect();
    let trace = serde_json::to_string_pretty(&line.trace.to_value()).unwrap_or_default();
    let page = web.render(
        "line.html",
        context! {
            user => &signed.user,
            role => signed.role.as_str(),
            csrf => &signed.csrf,
            line => ser(&view::line_row(&line, &rates, &back)),
            account => line.key.billing_account.to_string(),
            period => line.key.period.to_string(),
            key => line.key.to_string(),
            idempotency_key => &line.idempotency_key,
            price_ref => &line.price_ref,
            explanation => ser(&view::explanation(&line)),
            evidence_count => line.evidence.record_count,
            evidence_hash => &line.evidence.hash,
            evidence_sample => line.evidence.sample.entries(),
            revisions => revision_rows,
            trace => trace,
        },
    )?;
    Ok(page.into_response())
}
