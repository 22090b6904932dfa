//! The ledger: plans applied whole, the two-phase push's transitions, approvals, exceptions.

use super::dialect::{self, Columns};
use super::{Backend, Store};
use super::{EXCEPTION_COLUMNS, LINE_COLUMNS, PLAN_COLUMNS, ROWS_PER_INSERT, rows};
use crate::domain::{
    BillingAccount, LedgerChange, LedgerLine, LicenseType, NewRevision, Period, RunException,
    SourceName,
};
use crate::reconcile::LineIdentity;
use anyhow::{Context, anyhow, bail, ensure};
use chrono::Utc;
use rust_decimal::Decimal;
use sqlx::QueryBuilder;
use sqlx::types::Json;
use std::collections::HashMap;

/// Which drafts of a period an approval takes.
pub(super) enum Drafts<'a> {
    All,
    Customer(&'a BillingAccount),
    /// Exactly these revisions (those still drafts); never empty.
    Ids(&'a [i64]),
}

impl Store {
    /// Every revision of the period's lines (of one source, if given), ordered by line key
    /// then revision.
    pub async fn ledger_lines(
        &self,
        period: Period,
        source: Option<&SourceName>,
    ) -> anyhow::Result<Vec<LedgerLine>> {
        with_backend!(self, |pool, D| {
            let mut select = QueryBuilder::new(format!(
                "SELECT {LINE_COLUMNS} FROM ledger_lines WHERE period = "
            ));
            select.push_bind(period.to_string());
            if let Some(source) = source {
                select.push(" AND source = ").push_bind(source.as_str());
            }
            select.push(" ORDER BY line_key, revision");
            let what = format!("ledger_lines: reading ledger_lines of {period}");
            rows::lines(select.build().fetch(pool), &what).await
        })
    }

    /// Every revision of the period as reconcile reads it, ordered by line key then revision:
    /// [`Store::ledger_lines`] without what planning never reads ([`super::PLAN_COLUMNS`]: the
    /// evidence samples, the traces of revisions already sent, the idempotency keys, the
    /// billing systems' ids, the push markers and the last errors are left empty). For
    /// planning only: a revision shown to a person, or pushed, is read whole.
    pub async fn ledger_to_plan(&self, period: Period) -> anyhow::Result<Vec<LedgerLine>> {
        with_backend!(self, |pool, D| {
            let what = format!("ledger_to_plan: reading ledger_lines of {period}");
            let count: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM ledger_lines WHERE period = $1")
                    .bind(period.to_string())
                    .fetch_one(pool)
                    .await
                    .with_context(|| what.clone())?;
            let sql = format!(
                "SELECT {PLAN_COLUMNS} FROM ledger_lines WHERE period = $1 \
                 ORDER BY line_key, revision"
            );
            let select = sqlx::query(&sql).bind(period.to_string());
            let expected = usize::try_from(count).unwrap_or(0);
            rows::lines_to_plan(select.fetch(pool), &what, expected).await
        })
    }

    /// Applies a reconcile plan in ONE transaction, batched: inserts, in-place updates and
    /// deletes of revisions not yet sent (an update or delete of a revision whose status is
    /// `pushing` or `pushed` is refused and rolls everything back), and replaces the
    /// exceptions of (period, source) for every source in `sources` with `exceptions`.
    ///
    /// Deletes go first, then updates, then inserts, so that a plan may delete a draft and insert
    /// a revision with the same key. Every exception must belong to `period` and to one of
    /// `sources` (else it would never be replaced and pile up): a plan that breaks this, or that
    /// writes a revision as `pushing` or `pushed`, is refused before anything is written.
    pub async fn apply_plan(
        &self,
        run_id: i64,
        period: Period,
        sources: &[SourceName],
        changes: &[LedgerChange],
        exceptions: &[RunException],
    ) -> anyhow::Result<()> {
        let plan = PlanRows::new(period, sources, changes, exceptions)?;
        let now = Utc::now();
        let period_text = period.to_string();
        with_backend!(self, |pool, D| {
            let mut tx = D::begin(pool)
                .await
                .with_context(|| format!("apply_plan for {period}: beginning the transaction"))?;

            for &id in &plan.deletes {
                let done = sqlx::query(
                    "DELETE FROM ledger_lines WHERE id = $1 AND status IN ('draft', 'approved')",
                )
                .bind(id)
                .execute(&mut *tx)
                .await
                .with_context(|| format!("apply_plan: deleting ledger revision {id}"))?
                .rows_affected();
                if done == 0 {
                    let state = describe_revision!(&mut *tx, id);
                    bail!(
                        "apply_plan: refused to delete ledger revision {id} ({state}): only a \
                         draft or approved revision may be deleted; one the billing system may \
                         hold gets an adjustment instead. Nothing of the plan was written."
                    );
                }
            }

            for &(id, values, back_to_review) in &plan.updates {
                let row = RevisionRow::new(values)?;
                let done = sqlx::query(
                    "UPDATE ledger_lines SET quantity = $4, amount = $5, rate = $6, \
                     currency = $7, total_quantity = $8, total_amount = $9, price_ref = $10, \
                     trace = $11, evidence_count = $12, evidence_hash = $13, sink = $14, \
                     status = $15, run_id = $16, updated_at = $17, approved_by = $18, \
                     approved_at = $19, approval_note = $20, back_to_review = $21, \
                     evidence_sample = $22 \
                     WHERE id = $1 AND line_key = $2 AND revision = $3 \
                     AND status IN ('draft', 'approved')",
                )
                .bind(id)
                .bind(row.line_key.as_str())
                .bind(values.revision)
                .bind(D::dec(values.quantity))
                .bind(D::dec(values.amount))
                .bind(D::dec(values.rate))
                .bind(values.currency.code())
                .bind(D::dec(values.total_quantity))
                .bind(D::dec(values.total_amount))
                .bind(values.price_ref.as_str())
                .bind(Json(&values.trace))
                .bind(row.evidence_count)
                .bind(values.evidence.hash.as_str())
                .bind(values.sink.as_str())
                .bind(values.status.as_str())
                .bind(run_id)
                .bind(now)
                .bind(values.approval.as_ref().map(|a| a.by.as_str()))
                .bind(values.approval.as_ref().map(|a| a.at))
                .bind(values.approval.as_ref().and_then(|a| a.note.as_deref()))
                .bind(back_to_review)
                .bind(row.evidence_sample)
                .execute(&mut *tx)
                .await
                .with_context(|| format!("apply_plan: updating ledger revision {id}"))?
                .rows_affected();
                if done == 0 {
                    let state = describe_revision!(&mut *tx, id);
                    bail!(
                        "apply_plan: refused to update ledger revision {id} ({state}) as revision \
                         {} of {}: only a draft or approved revision of the same line may be \
                         updated in place; one the billing system may hold gets an adjustment \
                         instead. Nothing of the plan was written.",
                        values.revision,
                        row.line_key
                    );
                }
            }

            for batch in plan.inserts.chunks(ROWS_PER_INSERT) {
                let batch = batch
                    .iter()
                    .map(|values| RevisionRow::new(values))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let mut insert = QueryBuilder::new(
                    "INSERT INTO ledger_lines (line_key, period, billing_account, license_type, \
                     source, revision, idempotency_key, quantity, amount, rate, currency, \
                     total_quantity, total_amount, price_ref, trace, evidence_count, \
                     evidence_hash, sink, status, run_id, created_at, updated_at, approved_by, \
                     approved_at, approval_note, evidence_sample) ",
                );
                insert.push_values(&batch, |mut b, row| {
                    let values = row.values;
                    b.push_bind(row.line_key.as_str())
                        .push_bind(values.key.period.to_string())
                        .push_bind(values.key.billing_account.as_str())
                        .push_bind(values.key.license_type.as_str())
                        .push_bind(values.key.source.as_str())
                        .push_bind(values.revision)
                        .push_bind(row.idempotency_key.as_str())
                        .push_bind(D::dec(values.quantity))
                        .push_bind(D::dec(values.amount))
                        .push_bind(D::dec(values.rate))
                        .push_bind(values.currency.code())
                        .push_bind(D::dec(values.total_quantity))
                        .push_bind(D::dec(values.total_amount))
                        .push_bind(values.price_ref.as_str())
                        .push_bind(Json(&values.trace))
                        .push_bind(row.evidence_count)
                        .push_bind(values.evidence.hash.as_str())
                        .push_bind(values.sink.as_str())
                        .push_bind(values.status.as_str())
                        .push_bind(run_id)
                        .push_bind(now)
                        .push_bind(now)
                        .push_bind(values.approval.as_ref().map(|a| a.by.as_str()))
                        .push_bind(values.approval.as_ref().map(|a| a.at))
                        .push_bind(values.approval.as_ref().and_then(|a| a.note.as_deref()))
                        .push_bind(row.evidence_sample);
                });
                insert.build().execute(&mut *tx).await.with_context(|| {
                    format!(
                        "apply_plan: inserting {} ledger revisions (first: {})",
                        batch.len(),
                        batch[0].idempotency_key
                    )
                })?;
            }

            if !sources.is_empty() {
                // Replaced, not deleted: the exceptions of earlier runs stay in the history.
                let mut delete = QueryBuilder::new("UPDATE exceptions SET superseded_by_run = ");
                delete
                    .push_bind(run_id)
                    .push(" WHERE superseded_by_run IS NULL AND period = ")
                    .push_bind(period_text.as_str())
                    .push(" AND source IN (");
                let mut list = delete.separated(", ");
                for source in sources {
                    list.push_bind(source.as_str());
                }
                list.push_unseparated(")");
                delete
                    .build()
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("apply_plan: superseding exceptions of {period}"))?;
            }
            for batch in plan.exceptions.chunks(ROWS_PER_INSERT) {
                let mut insert = QueryBuilder::new(
                    "INSERT INTO exceptions (period, source, kind, customer_key, item, \
                     billing_account, license_type, quantity, record_count, message, run_id) ",
                );
                insert.push_values(batch, |mut b, (exception, record_count)| {
                    b.push_bind(period_text.as_str())
                        .push_bind(exception.source.as_str())
                        .push_bind(exception.kind.as_str())
                        .push_bind(exception.customer_key.as_str())
                        .push_bind(exception.item.as_str())
                        .push_bind(exception.billing_account.as_ref().map(|a| a.as_str()))
                        .push_bind(exception.license_type.as_ref().map(|l| l.as_str()))
                        .push_bind(D::dec(exception.quantity))
                        .push_bind(*record_count)
                        .push_bind(exception.message.as_str())
                        .push_bind(run_id);
                });
                insert
                    .build()
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("apply_plan: inserting exceptions of {period}"))?;
            }

            tx.commit()
                .await
                .with_context(|| format!("apply_plan for {period}: committing"))
        })
    }

    /// Phase one: `approved` → `pushing`, with the sink's marker. Fails if the revision is not
    /// `approved` any more (someone else got there first).
    pub async fn mark_pushing(&self, id: i64, marker: Option<&str>) -> anyhow::Result<()> {
        with_backend!(self, |pool, D| {
            let done = sqlx::query(
                "UPDATE ledger_lines SET status = 'pushing', push_marker = $2, updated_at = $3 \
                 WHERE id = $1 AND status = 'approved'",
            )
            .bind(id)
            .bind(marker)
            .bind(Utc::now())
            .execute(pool)
            .await
            .with_context(|| format!("mark_pushing: updating ledger revision {id}"))?
            .rows_affected();
            if done == 0 {
                let state = describe_revision!(pool, id);
                bail!(
                    "mark_pushing: ledger revision {id} is not approved ({state}); \
                     someone else got there first, or it was never approved"
                );
            }
            Ok(())
        })
    }

    /// Phase two: `pushing` → `pushed`, with the billing system's id and `pushed_at`; clears
    /// `last_error`.
    pub async fn mark_pushed(&self, id: i64, external_id: &str) -> anyhow::Result<()> {
        with_backend!(self, |pool, D| {
            let done = sqlx::query(
                "UPDATE ledger_lines SET status = 'pushed', external_id = $2, pushed_at = $3, \
                 updated_at = $3, last_error = NULL WHERE id = $1 AND status = 'pushing'",
            )
            .bind(id)
            .bind(external_id)
            .bind(Utc::now())
            .execute(pool)
            .await
            .with_context(|| format!("mark_pushed: updating ledger revision {id}"))?
            .rows_affected();
            if done == 0 {
                let state = describe_revision!(pool, id);
                bail!(
                    "mark_pushed: ledger revision {id} is not pushing ({state}); only a revision \
                     marked pushing (phase one) can be marked pushed"
                );
            }
            Ok(())
        })
    }

    /// `pushing` → `approved` once the billing system was read and surely does not hold the
    /// revision, so that it is sent again through phase one. Clears the marker of the push
    /// that did not happen.
    pub async fn reset_to_approved(&self, id: i64) -> anyhow::Result<()> {
        with_backend!(self, |pool, D| {
            let done = sqlx::query(
                "UPDATE ledger_lines SET status = 'approved', push_marker = NULL, updated_at = $2 \
                 WHERE id = $1 AND status = 'pushing'",
            )
            .bind(id)
            .bind(Utc::now())
            .execute(pool)
            .await
            .with_context(|| format!("reset_to_approved: updating ledger revision {id}"))?
            .rows_affected();
            if done == 0 {
                let state = describe_revision!(pool, id);
                bail!(
                    "reset_to_approved: ledger revision {id} is not pushing ({state}); only a \
                     revision left in phase one can be reset"
                );
            }
            Ok(())
        })
    }

    /// Keeps the last push error on the revision. Its status and `updated_at` are unchanged:
    /// `updated_at` of a `pushing` revision is when it was sent, which its settle time counts
    /// from.
    pub async fn record_push_error(&self, id: i64, error: &str) -> anyhow::Result<()> {
        let done = with_backend!(self, |pool, D| {
            sqlx::query("UPDATE ledger_lines SET last_error = $2 WHERE id = $1")
                .bind(id)
                .bind(error)
                .execute(pool)
                .await
                .with_context(|| format!("record_push_error: updating ledger revision {id}"))?
                .rows_affected()
        });
        ensure!(
            done == 1,
            "record_push_error: there is no ledger revision {id}"
        );
        Ok(())
    }

    /// `draft` → `approved` for the period (and one billing account, if given), recording who,
    /// when and why; returns the ids of exactly the revisions this call approved.
    pub async fn approve(
        &self,
        period: Period,
        customer: Option<&BillingAccount>,
        by: &str,
        note: Option<&str>,
    ) -> anyhow::Result<Vec<i64>> {
        let which = match customer {
            Some(customer) => Drafts::Customer(customer),
            None => Drafts::All,
        };
        self.approve_drafts(period, which, by, note).await
    }

    /// The one approving statement of [`Store::approve`] and `Store::approve_ids`: `which`
    /// drafts of `period` become `approved`, with who, when and why, and are no longer back in
    /// review; returns the ids it approved, sorted.
    pub(super) async fn approve_drafts(
        &self,
        period: Period,
        which: Drafts<'_>,
        by: &str,
        note: Option<&str>,
    ) -> anyhow::Result<Vec<i64>> {
        let now = Utc::now();
        with_backend!(self, |pool, D| {
            let mut update =
                QueryBuilder::new("UPDATE ledger_lines SET status = 'approved', updated_at = ");
            update
                .push_bind(now)
                .push(", approved_at = ")
                .push_bind(now)
                .push(", approved_by = ")
                .push_bind(by)
                .push(", approval_note = ")
                .push_bind(note)
                .push(", back_to_review = FALSE")
                .push(" WHERE status = 'draft' AND period = ")
                .push_bind(period.to_string());
            match which {
                Drafts::All => {}
                Drafts::Customer(customer) => {
                    update
                        .push(" AND billing_account = ")
                        .push_bind(customer.as_str());
                }
                Drafts::Ids(ids) => {
                    update.push(" AND id IN (");
                    let mut list = update.separated(", ");
                    for id in ids {
                        list.push_bind(*id);
                    }
                    list.push_unseparated(")");
                }
            }
            update.push(" RETURNING id");
            let mut ids: Vec<i64> = update
                .build_query_scalar()
                .fetch_all(pool)
                .await
                .with_context(|| format!("approve: approving drafts of {period}"))?;
            ids.sort_unstable();
            Ok(ids)
        })
    }

    /// How many draft revisions of the period (of some sources, if given) wait for approval.
    pub async fn count_drafts(
        &self,
        period: Period,
        sources: Option<&[SourceName]>,
    ) -> anyhow::Result<u64> {
        if sources.is_some_and(|s| s.is_empty()) {
            return Ok(0);
        }
        let count: i64 = with_backend!(self, |pool, D| {
            let mut select = QueryBuilder::new(
                "SELECT COUNT(*) FROM ledger_lines WHERE status = 'draft' AND period = ",
            );
            select.push_bind(period.to_string());
            if let Some(sources) = sources {
                select.push(" AND source IN (");
                let mut list = select.separated(", ");
                for source in sources {
                    list.push_bind(source.as_str());
                }
                list.push_unseparated(")");
            }
            select
                .build_query_scalar()
                .fetch_one(pool)
                .await
                .with_context(|| format!("count_drafts: counting drafts of {period}"))?
        });
        u64::try_from(count).context("count_drafts: a negative count")
    }

    /// For every line pushed in a period before `period`: what it was billed in all in the
    /// latest such period (the `total_amount` of its newest pushed revision there), which
    /// approval rules compare with. One row per line is read.
    pub async fn last_pushed_amounts(
        &self,
        period: Period,
    ) -> anyhow::Result<HashMap<LineIdentity, Decimal>> {
        with_backend!(self, |pool, D| {
            let rows = sqlx::query(
                "SELECT l.billing_account, l.license_type, l.source, l.total_amount \
                 FROM ledger_lines l WHERE l.status = 'pushed' AND l.period < $1 \
                 AND NOT EXISTS (SELECT 1 FROM ledger_lines n WHERE n.status = 'pushed' \
                 AND n.period < $1 AND n.billing_account = l.billing_account \
                 AND n.license_type = l.license_type AND n.source = l.source \
                 AND (n.period > l.period OR (n.period = l.period AND n.revision > l.revision)))",
            )
            .bind(period.to_string())
            .fetch_all(pool)
            .await
            .with_context(|| {
                format!("last_pushed_amounts: reading the lines pushed before {period}")
            })?;
            rows.iter()
                .map(|row| {
                    Ok((
                        (
                            BillingAccount::new(row.text("billing_account")?),
                            LicenseType::new(row.text("license_type")?),
                            SourceName::new(row.text("source")?),
                        ),
                        row.decimal("total_amount")?,
                    ))
                })
                .collect()
        })
    }

    /// The period's current exceptions (of every source), ordered by source, kind, customer.
    pub async fn exceptions(&self, period: Period) -> anyhow::Result<Vec<RunException>> {
        with_backend!(self, |pool, D| {
            let found = sqlx::query(&format!(
                "SELECT {EXCEPTION_COLUMNS} FROM exceptions \
                 WHERE period = $1 AND superseded_by_run IS NULL \
                 ORDER BY source, kind, customer_key, item, id"
            ))
            .bind(period.to_string())
            .fetch_all(pool)
            .await
            .with_context(|| format!("exceptions: reading exceptions of {period}"))?;
            found.iter().map(rows::exception).collect()
        })
    }

    /// Every run's exceptions of the period, current or superseded, by run (oldest first),
    /// then as [`Store::exceptions`] orders them.
    pub async fn exception_history(&self, period: Period) -> anyhow::Result<Vec<PastException>> {
        with_backend!(self, |pool, D| {
            let found = sqlx::query(&format!(
                "SELECT {EXCEPTION_COLUMNS}, run_id, superseded_by_run FROM exceptions \
                 WHERE period = $1 ORDER BY run_id, source, kind, customer_key, item, id"
            ))
            .bind(period.to_string())
            .fetch_all(pool)
            .await
            .with_context(|| format!("exception_history: reading exceptions of {period}"))?;
            found
                .iter()
                .map(|row| {
                    Ok(PastException {
                        run_id: row.int("run_id")?,
                        superseded_by_run: row.opt_int("superseded_by_run")?,
                        exception: rows::exception(row)?,
                    })
                })
                .collect()
        })
    }
}

/// One exception as a run recorded it, kept after a later run of the same source replaced it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PastException {
    /// The run that found it.
    pub run_id: i64,
    /// The run that replaced it; `None` while it is current.
    pub superseded_by_run: Option<i64>,
    #[serde(flatten)]
    pub exception: RunException,
}

/// A revision with the values its statement binds that are not fields of it. Built a batch at a
/// time inside the transaction, not for the whole plan up front: the sample's JSON and the two
/// keys are most of a row, and a period has a row per line ([`PlanRows`] checks what may fail
/// before anything is written).
struct RevisionRow<'a> {
    values: &'a NewRevision,
    line_key: String,
    idempotency_key: String,
    evidence_count: i64,
    /// The evidence's sample as JSON text, `None` when it has none.
    evidence_sample: Option<&'a str>,
}

impl<'a> RevisionRow<'a> {
    fn new(values: &'a NewRevision) -> anyhow::Result<Self> {
        Ok(RevisionRow {
            values,
            line_key: values.key.to_string(),
            idempotency_key: values.key.idempotency_key(values.revision),
            evidence_count: evidence_count(values)?,
            evidence_sample: values.evidence.sample.as_json(),
        })
    }
}

/// The evidence's record count as stored (i64).
fn evidence_count(values: &NewRevision) -> anyhow::Result<i64> {
    i64::try_from(values.evidence.record_count)
        .with_context(|| format!("apply_plan: evidence count of {} is too large", values.key))
}

/// A reconcile plan checked and sorted into what each statement writes.
struct PlanRows<'a> {
    deletes: Vec<i64>,
    /// With whether the revision goes back to review (an approval its new figures took away).
    updates: Vec<(i64, &'a NewRevision, bool)>,
    inserts: Vec<&'a NewRevision>,
    /// With the record count as stored (i64).
    exceptions: Vec<(&'a RunException, i64)>,
}

impl<'a> PlanRows<'a> {
    fn new(
        period: Period,
        sources: &[SourceName],
        changes: &'a [LedgerChange],
        exceptions: &'a [RunException],
    ) -> anyhow::Result<Self> {
        let mut plan = PlanRows {
            deletes: Vec::new(),
            updates: Vec::new(),
            inserts: Vec::new(),
            exceptions: Vec::with_capacity(exceptions.len()),
        };
        for change in changes {
            match change {
                LedgerChange::Insert(values) => plan.inserts.push(values),
                LedgerChange::Update {
                    id,
                    values,
                    back_to_review,
                } => plan.updates.push((*id, values, *back_to_review)),
                LedgerChange::Delete { id } => plan.deletes.push(*id),
            }
        }
        for values in plan
            .inserts
            .iter()
            .chain(plan.updates.iter().map(|(_, values, _)| values))
        {
            ensure!(
                !values.status.is_sent(),
                "apply_plan: revision {} of {} is planned as {}; the ledger writes only draft \
                 or approved revisions (pushing and pushed are set by the push)",
                values.revision,
                values.key,
                values.status
            );
            ensure!(
                values.key.period == period,
                "apply_plan: revision {} of {} is not of the period {period} being applied",
                values.revision,
                values.key
            );
            evidence_count(values)?;
        }
        for exception in exceptions {
            if exception.period != period || !sources.contains(&exception.source) {
                return Err(anyhow!(
                    "apply_plan: an exception of ({}, {}) is outside the (period, sources) being \
                     replaced ({period}, [{}]); it would never be replaced by a later run",
                    exception.period,
                    exception.source,
                    sources
                        .iter()
                        .map(SourceName::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            let record_count = i64::try_from(exception.record_count).with_context(|| {
                format!(
                    "apply_plan: record count of an exception of {} is too large",
                    exception.source
                )
            })?;
            plan.exceptions.push((exception, record_count));
        }
        Ok(plan)
    }
}
