//! The ledger read: a period's revisions, the two-phase push's transitions, approvals and
//! exceptions (a plan is written by `apply.rs`).

use super::dialect::{self, Columns};
use super::{Backend, Store};
use super::{EXCEPTION_COLUMNS, LINE_COLUMNS, PLAN_COLUMNS, rows};
use crate::domain::{BillingAccount, LedgerLine, LicenseType, Period, RunException, SourceName};
use crate::reconcile::LineIdentity;
use anyhow::{Context, bail, ensure};
use chrono::Utc;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use rust_decimal::Decimal;
use sqlx::QueryBuilder;
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

    /// Every revision of the period as reconcile reads it, as a stream in the order of their
    /// [`LineKey`](crate::domain::LineKey)s (then revision), so that planning holds a few
    /// lines' revisions at a time, not the period's: [`Store::ledger_lines`] without what
    /// planning never reads ([`super::PLAN_COLUMNS`]: the evidence samples, the traces of
    /// revisions already sent, the idempotency keys, the billing systems' ids, the push markers
    /// and the last errors are left empty). For planning only: a revision shown to a person, or
    /// pushed, is read whole.
    ///
    /// The order is the one reconcile walks the computed lines in (`LineKey`'s: account, license
    /// type, source, compared byte by byte), not the text of `line_key`: Postgres compares them
    /// with the "C" collation, SQLite's is byte order already.
    pub fn ledger_to_plan(&self, period: Period) -> BoxStream<'_, anyhow::Result<LedgerLine>> {
        static SELECT: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
            [r#"COLLATE "C""#, ""].map(|byte_order| {
                format!(
                    "SELECT {PLAN_COLUMNS} FROM ledger_lines WHERE period = $1 ORDER BY \
                     billing_account {byte_order}, license_type {byte_order}, \
                     source {byte_order}, revision"
                )
            })
        });
        let sql: &'static str = match &self.backend {
            Backend::Postgres(_) => &SELECT[0],
            Backend::Sqlite { .. } => &SELECT[1],
        };
        with_backend!(self, |pool, D| {
            sqlx::query(sql)
                .bind(period.to_string())
                .fetch(pool)
                .map(move |row| {
                    let row = row.with_context(|| {
                        format!("ledger_to_plan: reading ledger_lines of {period}")
                    })?;
                    rows::line_to_plan(&row)
                })
                .boxed()
        })
    }

    /// The quantity of every revision of the period the billing systems hold or may hold
    /// (`pushing`, `pushed`), with its source and billing account: what the under-billing guard
    /// compares a source's answer with, read before the period is planned.
    pub async fn sent_quantities(
        &self,
        period: Period,
    ) -> anyhow::Result<Vec<(SourceName, BillingAccount, Decimal)>> {
        with_backend!(self, |pool, D| {
            let rows = sqlx::query(
                "SELECT source, billing_account, quantity FROM ledger_lines \
                 WHERE period = $1 AND status IN ('pushing', 'pushed')",
            )
            .bind(period.to_string())
            .fetch_all(pool)
            .await
            .with_context(|| format!("sent_quantities: reading ledger_lines of {period}"))?;
            rows.iter()
                .map(|row| {
                    Ok((
                        SourceName::new(row.text("source")?),
                        BillingAccount::new(row.text("billing_account")?),
                        row.decimal("quantity")?,
                    ))
                })
                .collect()
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
