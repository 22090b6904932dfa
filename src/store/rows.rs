//! Rows read back into domain types. Every value is parsed, never assumed: a row that does not
//! parse is an error naming the column, not a panic or a default.

use super::dialect::Columns;
use super::{Checkpoint, RunRecord};
use crate::domain::{
    Approval, BillingAccount, Currency, Evidence, ExceptionKind, LedgerLine, LicenseType, LineKey,
    LineStatus, Period, RunException, RunStatus, RunSummary, Sample, SourceName, Trigger,
};
use anyhow::{Context, anyhow};

fn period(row: &impl Columns, col: &str) -> anyhow::Result<Period> {
    let text = row.text(col)?;
    text.parse()
        .with_context(|| format!("column {col} holds {text:?}, not a period"))
}

fn count(row: &impl Columns, col: &str) -> anyhow::Result<u64> {
    let value = row.int(col)?;
    u64::try_from(value).with_context(|| format!("column {col} holds a negative count {value}"))
}

/// `Trigger` has no parser of its own: its stored names are its `as_str`.
fn trigger(text: &str) -> anyhow::Result<Trigger> {
    [Trigger::Manual, Trigger::Schedule, Trigger::Demo]
        .into_iter()
        .find(|trigger| trigger.as_str() == text)
        .ok_or_else(|| anyhow!("column triggered_by holds {text:?}, not a trigger"))
}

pub(super) fn run(row: &impl Columns) -> anyhow::Result<RunRecord> {
    let id = row.int("id")?;
    let status = row.text("status")?;
    let summary = row
        .opt_json("summary")?
        .map(serde_json::from_value::<RunSummary>)
        .transpose()
        .with_context(|| format!("run {id}: the stored summary does not parse"))?;
    Ok(RunRecord {
        id,
        trigger: trigger(&row.text("triggered_by")?)?,
        period: period(row, "period")?,
        source_filter: row.opt_text("source_filter")?,
        requested_by: row.opt_text("requested_by")?,
        customer_filter: row.opt_text("customer_filter")?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| anyhow!("run {id}: status {status:?} is not a run status"))?,
        started_at: row.time("started_at")?,
        finished_at: row.opt_time("finished_at")?,
        summary,
    })
}

pub(super) fn checkpoint(row: &impl Columns) -> anyhow::Result<Checkpoint> {
    Ok(Checkpoint {
        cursor: row.opt_text("next_cursor")?,
        complete: row.flag("complete")?,
        pages: row.int("pages")?,
        records: row.int("records")?,
        run_id: row.int("run_id")?,
        updated_at: row.time("updated_at")?,
        rereading: row.flag("rereading")?,
    })
}

/// The revisions of a query's rows, made one row at a time as they arrive. Not `fetch_all`: a
/// period's revisions as raw rows (traces and evidence included) were twice the memory of the
/// lines made of them, and all of them were held at once on top of the lines.
pub(super) async fn lines<R: Columns>(
    mut rows: impl futures_util::Stream<Item = Result<R, sqlx::Error>> + Unpin,
    what: &str,
) -> anyhow::Result<Vec<LedgerLine>> {
    use futures_util::TryStreamExt as _;
    let mut lines = Vec::new();
    while let Some(row) = rows.try_next().await.with_context(|| what.to_owned())? {
        lines.push(line_of(&row, Detail::Whole)?);
    }
    Ok(lines)
}

/// A revision of a query of [`super::PLAN_COLUMNS`], as reconcile reads it.
pub(super) fn line_to_plan(row: &impl Columns) -> anyhow::Result<LedgerLine> {
    line_of(row, Detail::ToPlan)
}

/// How much of a revision a query selected.
#[derive(Clone, Copy, PartialEq)]
enum Detail {
    /// Every column ([`super::LINE_COLUMNS`]).
    Whole,
    /// [`super::PLAN_COLUMNS`]: no evidence sample, and no trace for a revision already sent.
    ToPlan,
}

pub(super) fn line(row: &impl Columns) -> anyhow::Result<LedgerLine> {
    line_of(row, Detail::Whole)
}

fn line_of(row: &impl Columns, detail: Detail) -> anyhow::Result<LedgerLine> {
    let id = row.int("id")?;
    let read = || -> anyhow::Result<LedgerLine> {
        let currency = row.text("currency")?;
        let status = row.text("status")?;
        let status = LineStatus::parse(&status)
            .ok_or_else(|| anyhow!("status {status:?} is not a line status"))?;
        let trace = match (detail, row.opt_json("trace")?) {
            (_, Some(trace)) => crate::domain::Trace::from_value(&trace),
            (Detail::ToPlan, None) if status.is_sent() => crate::domain::Trace::empty(),
            (_, None) => anyhow::bail!("column trace is empty"),
        };
        let sample = match row.opt_text("evidence_sample")? {
            Some(text) if detail == Detail::Whole => {
                Sample::from_json(&text).with_context(|| {
                    format!("evidence_sample {text:?} is not a JSON list of strings")
                })?
            }
            _ => Sample::default(),
        };
        Ok(LedgerLine {
            id,
            key: LineKey {
                period: period(row, "period")?,
                billing_account: BillingAccount::new(row.text("billing_account")?),
                license_type: LicenseType::new(row.text("license_type")?),
                source: SourceName::new(row.text("source")?),
            },
            revision: row.int32("revision")?,
            idempotency_key: row.text("idempotency_key")?,
            quantity: row.decimal("quantity")?,
            amount: row.decimal("amount")?,
            rate: row.decimal("rate")?,
            currency: currency.parse::<Currency>()?,
            total_quantity: row.decimal("total_quantity")?,
            total_amount: row.decimal("total_amount")?,
            price_ref: row.text("price_ref")?,
            trace,
            evidence: Evidence {
                record_count: count(row, "evidence_count")?,
                hash: row.text("evidence_hash")?,
                sample,
            },
            sink: row.text("sink")?,
            status,
            external_id: row.opt_text("external_id")?,
            push_marker: row.opt_text("push_marker")?,
            last_error: row.opt_text("last_error")?,
            approval: match row.opt_text("approved_by")? {
                Some(by) => Some(Approval {
                    by,
                    at: row
                        .opt_time("approved_at")?
                        .ok_or_else(|| anyhow!("approved_by is set but approved_at is not"))?,
                    note: row.opt_text("approval_note")?,
                }),
                None => None,
            },
            run_id: row.int("run_id")?,
            created_at: row.time("created_at")?,
            updated_at: row.time("updated_at")?,
            pushed_at: row.opt_time("pushed_at")?,
        })
    };
    read().with_context(|| format!("reading ledger revision {id}"))
}

pub(super) fn exception(row: &impl Columns) -> anyhow::Result<RunException> {
    let kind = row.text("kind")?;
    Ok(RunException {
        period: period(row, "period")?,
        source: SourceName::new(row.text("source")?),
        kind: ExceptionKind::parse(&kind)
            .ok_or_else(|| anyhow!("column kind holds {kind:?}, not an exception kind"))?,
        customer_key: row.text("customer_key")?,
        item: row.text("item")?,
        billing_account: row.opt_text("billing_account")?.map(BillingAccount::new),
        license_type: row.opt_text("license_type")?.map(LicenseType::new),
        quantity: row.decimal("quantity")?,
        record_count: count(row, "record_count")?,
        message: row.text("message")?,
    })
}
