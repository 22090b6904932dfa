//! The reads and the one write the review page needs beyond the CLI's: the periods the ledger
//! or the run history knows, one revision by id, and approving chosen draft revisions.

use super::dialect;
use super::{Backend, LINE_COLUMNS, Store, rows};
use crate::domain::{LedgerLine, Period};
use anyhow::Context;

impl Store {
    /// Every period with ledger lines or runs, newest first.
    pub async fn known_periods(&self) -> anyhow::Result<Vec<Period>> {
        let texts: Vec<String> = with_backend!(self, |pool, D| {
            sqlx::query_scalar(
                "SELECT period FROM ledger_lines UNION SELECT period FROM runs ORDER BY 1 DESC",
            )
            .fetch_all(pool)
            .await
            .context("known_periods: reading the periods of ledger_lines and runs")?
        });
        texts
            .iter()
            .map(|t| {
                t.parse()
                    .with_context(|| format!("known_periods: {t:?} is not a period"))
            })
            .collect()
    }

    /// The ids of the period's drafts that an approval's loss sent back to review: their
    /// figures changed after they had been approved (see `LedgerChange::Update`).
    pub async fn back_to_review_ids(
        &self,
        period: Period,
    ) -> anyhow::Result<std::collections::BTreeSet<i64>> {
        let ids: Vec<i64> = with_backend!(self, |pool, D| {
            sqlx::query_scalar(
                "SELECT id FROM ledger_lines WHERE period = $1 AND status = 'draft' \
                 AND back_to_review",
            )
            .bind(period.to_string())
            .fetch_all(pool)
            .await
            .with_context(|| format!("back_to_review_ids: reading the drafts of {period}"))?
        });
        Ok(ids.into_iter().collect())
    }

    /// One ledger revision by its id.
    pub async fn ledger_line(&self, id: i64) -> anyhow::Result<Option<LedgerLine>> {
        with_backend!(self, |pool, D| {
            let row = sqlx::query(&format!(
                "SELECT {LINE_COLUMNS} FROM ledger_lines WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
            .with_context(|| format!("ledger_line: reading revision {id}"))?;
            row.as_ref().map(rows::line).transpose()
        })
    }

    /// `draft` → `approved` for exactly these revisions of `period` (those still drafts),
    /// recording who, when and why, as [`Store::approve`] does; returns the ids approved.
    pub async fn approve_ids(
        &self,
        period: Period,
        ids: &[i64],
        by: &str,
        note: Option<&str>,
    ) -> anyhow::Result<Vec<i64>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.approve_drafts(period, super::ledger::Drafts::Ids(ids), by, note)
            .await
    }
}
