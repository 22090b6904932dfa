//! The two-phase push's transitions for a batch of revisions, one statement per state: a sink that
//! takes many revisions in one write (the file sink) would otherwise wait on one committed
//! UPDATE per revision, twice.
//!
//! Each is the single-revision transition of `ledger.rs` with the same guard, applied to many ids
//! at once and all-or-nothing: if any revision is not in the state it must leave, nothing changes
//! and the error names it, as the single form does.

use super::dialect::Columns;
use super::{Backend, Store, dialect};
use anyhow::{Context, bail};
use chrono::Utc;
use sqlx::QueryBuilder;
use std::collections::HashSet;

/// Revisions per statement. Each binds at most two values: far below SQLite's 32,766 and
/// Postgres' 65,535 bound parameters.
const IDS_PER_STATEMENT: usize = 5000;

impl Store {
    /// Phase one for many revisions: `approved` → `pushing`, without a marker (for a billing
    /// system that finds a revision by its key alone). All or nothing: if one of them is not
    /// `approved` any more, none is marked and the error names it.
    pub async fn mark_pushing_many(&self, ids: &[i64]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        with_backend!(self, |pool, D| {
            let mut tx = D::begin(pool)
                .await
                .context("mark_pushing_many: beginning the transaction")?;
            let mut marked = HashSet::with_capacity(ids.len());
            for chunk in ids.chunks(IDS_PER_STATEMENT) {
                let mut update = QueryBuilder::new(
                    "UPDATE ledger_lines SET status = 'pushing', push_marker = NULL, updated_at = ",
                );
                update
                    .push_bind(now)
                    .push(" WHERE status = 'approved' AND id IN (");
                let mut list = update.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                list.push_unseparated(") RETURNING id");
                let done: Vec<i64> = update
                    .build_query_scalar()
                    .fetch_all(&mut *tx)
                    .await
                    .with_context(|| {
                        format!(
                            "mark_pushing_many: updating {} ledger revisions (first: {})",
                            chunk.len(),
                            chunk[0]
                        )
                    })?;
                marked.extend(done);
            }
            if let Some(&id) = ids.iter().find(|id| !marked.contains(id)) {
                let state = describe_revision!(&mut *tx, id);
                bail!(
                    "mark_pushing_many: ledger revision {id} is not approved ({state}); \
                     someone else got there first, or it was never approved. None of the {} \
                     revisions was marked pushing.",
                    ids.len()
                );
            }
            tx.commit().await.context("mark_pushing_many: committing")
        })
    }

    /// Phase two for many revisions: `pushing` → `pushed`, each with its billing system's id,
    /// and `pushed_at`; clears `last_error`. All or nothing: if one of them is not `pushing`,
    /// none is marked and the error names it (the others stay `pushing`, which the next push
    /// resolves by reading the billing system).
    pub async fn mark_pushed_many(&self, pushed: &[(i64, String)]) -> anyhow::Result<()> {
        if pushed.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        with_backend!(self, |pool, D| {
            let mut tx = D::begin(pool)
                .await
                .context("mark_pushed_many: beginning the transaction")?;
            let mut marked = HashSet::with_capacity(pushed.len());
            for chunk in pushed.chunks(IDS_PER_STATEMENT) {
                // Each revision gets its own external id: the pairs are joined in as a table
                // (a CTE with named columns, which both databases read the same way).
                let mut update = QueryBuilder::new("WITH sent (sent_id, sent_external_id) AS (");
                update.push_values(chunk, |mut row, (id, external_id)| {
                    row.push_bind(*id).push_bind(external_id.as_str());
                });
                update
                    .push(") UPDATE ledger_lines SET status = 'pushed', external_id = sent_external_id, pushed_at = ")
                    .push_bind(now)
                    .push(", updated_at = ")
                    .push_bind(now)
                    .push(
                        ", last_error = NULL FROM sent WHERE id = sent_id \
                         AND status = 'pushing' RETURNING id",
                    );
                let done: Vec<i64> = update
                    .build_query_scalar()
                    .fetch_all(&mut *tx)
                    .await
                    .with_context(|| {
                        format!(
                            "mark_pushed_many: updating {} ledger revisions (first: {})",
                            chunk.len(),
                            chunk[0].0
                        )
                    })?;
                marked.extend(done);
            }
            if let Some(&(id, _)) = pushed.iter().find(|(id, _)| !marked.contains(id)) {
                let state = describe_revision!(&mut *tx, id);
                bail!(
                    "mark_pushed_many: ledger revision {id} is not pushing ({state}); only a \
                     revision marked pushing (phase one) can be marked pushed. None of the {} \
                     revisions was marked pushed.",
                    pushed.len()
                );
            }
            tx.commit().await.context("mark_pushed_many: committing")
        })
    }
}
