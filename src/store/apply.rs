//! A reconcile plan written to the ledger: in one transaction, but fed in batches as it is
//! planned, so that a period's planned revisions (with their traces and samples) are never all
//! held at once (docs/PERFORMANCE.md, "Memory").

use super::dialect::{self, Columns};
use super::{Backend, ROWS_PER_INSERT, Store};
use crate::domain::{LedgerChange, NewRevision, Period, RunException, SourceName};
use anyhow::{Context, anyhow, bail, ensure};
use chrono::Utc;
use sqlx::QueryBuilder;
use sqlx::types::Json;

/// A plan as [`Store::apply_plan_fed`] writes it: its changes a batch at a time, then the run's
/// exceptions. Reconcile plans line by line; the pipeline feeds what it planned, so that the
/// changes of a batch are dropped once written.
pub trait PlanFeed: Send {
    /// The next changes to write, or `None` once every change was handed over. A batch holds
    /// every change of each line in it (a delete and the insert replacing it come together).
    /// Asynchronous, as planning reads the ledger as it goes.
    fn next_changes(
        &mut self,
    ) -> impl Future<Output = anyhow::Result<Option<Vec<LedgerChange>>>> + Send;
    /// The exceptions that replace those of the (period, sources) applied; asked once, after
    /// the last batch (planning finds some of them: conflicts, held credits).
    fn exceptions(&mut self) -> Vec<RunException>;
}

/// A plan given whole ([`Store::apply_plan`]).
struct Whole {
    changes: Option<Vec<LedgerChange>>,
    exceptions: Vec<RunException>,
}

impl PlanFeed for Whole {
    async fn next_changes(&mut self) -> anyhow::Result<Option<Vec<LedgerChange>>> {
        Ok(self.changes.take())
    }

    fn exceptions(&mut self) -> Vec<RunException> {
        std::mem::take(&mut self.exceptions)
    }
}

impl Store {
    /// [`Store::apply_plan_fed`] for a plan given whole: its changes, then `exceptions`.
    pub async fn apply_plan(
        &self,
        run_id: i64,
        period: Period,
        sources: &[SourceName],
        changes: &[LedgerChange],
        exceptions: &[RunException],
    ) -> anyhow::Result<()> {
        let mut whole = Whole {
            changes: Some(changes.to_vec()),
            exceptions: exceptions.to_vec(),
        };
        self.apply_plan_fed(run_id, period, sources, &mut whole)
            .await
    }

    /// Applies a reconcile plan in ONE transaction, batch by batch as `plan` feeds it: inserts,
    /// in-place updates and deletes of revisions not yet sent (an update or delete of a
    /// revision whose status is `pushing` or `pushed` is refused and rolls everything back),
    /// and replaces the exceptions of (period, source) for every source in `sources` with
    /// `plan`'s exceptions.
    ///
    /// In each batch deletes go first, then updates, then inserts, so that a plan may delete a
    /// draft and insert a revision with the same key. Every exception must belong to `period`
    /// and to one of `sources` (else it would never be replaced and pile up), and no revision
    /// may be written as `pushing` or `pushed`: a plan that breaks this is refused, and nothing
    /// of it is written (the transaction is rolled back).
    pub async fn apply_plan_fed(
        &self,
        run_id: i64,
        period: Period,
        sources: &[SourceName],
        plan: &mut impl PlanFeed,
    ) -> anyhow::Result<()> {
        let now = Utc::now();
        let period_text = period.to_string();
        with_backend!(self, |pool, D| {
            let mut tx = D::begin(pool)
                .await
                .with_context(|| format!("apply_plan for {period}: beginning the transaction"))?;

            while let Some(changes) = plan.next_changes().await? {
                let batch = PlanRows::new(period, &changes)?;
                for &id in &batch.deletes {
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
                            "apply_plan: refused to delete ledger revision {id} ({state}): only \
                             a draft or approved revision may be deleted; one the billing system \
                             may hold gets an adjustment instead. Nothing of the plan was written."
                        );
                    }
                }

                for &(id, values, back_to_review) in &batch.updates {
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
                            "apply_plan: refused to update ledger revision {id} ({state}) as \
                             revision {} of {}: only a draft or approved revision of the same \
                             line may be updated in place; one the billing system may hold gets \
                             an adjustment instead. Nothing of the plan was written.",
                            values.revision,
                            row.line_key
                        );
                    }
                }

                for chunk in batch.inserts.chunks(ROWS_PER_INSERT) {
                    let chunk = chunk
                        .iter()
                        .map(|values| RevisionRow::new(values))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    let mut insert = QueryBuilder::new(
                        "INSERT INTO ledger_lines (line_key, period, billing_account, \
                         license_type, source, revision, idempotency_key, quantity, amount, rate, \
                         currency, total_quantity, total_amount, price_ref, trace, \
                         evidence_count, evidence_hash, sink, status, run_id, created_at, \
                         updated_at, approved_by, approved_at, approval_note, evidence_sample) ",
                    );
                    insert.push_values(&chunk, |mut b, row| {
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
                            chunk.len(),
                            chunk[0].idempotency_key
                        )
                    })?;
                }
            }

            let exceptions = plan.exceptions();
            let exceptions = exception_rows(period, sources, &exceptions)?;
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
            for batch in exceptions.chunks(ROWS_PER_INSERT) {
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
}

/// A revision with the values its statement binds that are not fields of it. Built an insert's
/// rows at a time, not for a whole batch up front: the sample's JSON and the two keys are most
/// of a row ([`PlanRows`] checks what may fail before a batch is written).
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

/// A batch of a reconcile plan checked and sorted into what each statement writes.
struct PlanRows<'a> {
    deletes: Vec<i64>,
    /// With whether the revision goes back to review (an approval its new figures took away).
    updates: Vec<(i64, &'a NewRevision, bool)>,
    inserts: Vec<&'a NewRevision>,
}

impl<'a> PlanRows<'a> {
    fn new(period: Period, changes: &'a [LedgerChange]) -> anyhow::Result<Self> {
        let mut plan = PlanRows {
            deletes: Vec::new(),
            updates: Vec::new(),
            inserts: Vec::new(),
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
                 or approved revisions (pushing and pushed are set by the push). Nothing of the \
                 plan was written.",
                values.revision,
                values.key,
                values.status
            );
            ensure!(
                values.key.period == period,
                "apply_plan: revision {} of {} is not of the period {period} being applied. \
                 Nothing of the plan was written.",
                values.revision,
                values.key
            );
            evidence_count(values)?;
        }
        Ok(plan)
    }
}

/// The exceptions checked to belong to (period, sources), with their record counts as stored
/// (i64).
fn exception_rows<'a>(
    period: Period,
    sources: &[SourceName],
    exceptions: &'a [RunException],
) -> anyhow::Result<Vec<(&'a RunException, i64)>> {
    exceptions
        .iter()
        .map(|exception| {
            if exception.period != period || !sources.contains(&exception.source) {
                return Err(anyhow!(
                    "apply_plan: an exception of ({}, {}) is outside the (period, sources) being \
                     replaced ({period}, [{}]); it would never be replaced by a later run. \
                     Nothing of the plan was written.",
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
            Ok((exception, record_count))
        })
        .collect()
}
