//! Extraction: checkpoints and staged records, pages and their checkpoint in one transaction.

use super::dialect;
use super::{Backend, Store};
use super::{Checkpoint, ROWS_PER_INSERT, rows};
use crate::domain::{Period, SourceName, StagedQuantity, StagedRecord};
use anyhow::Context;
use chrono::Utc;
use sqlx::QueryBuilder;
use std::collections::HashMap;

impl Store {
    /// The checkpoint of (source, scope, period); `None` if its extraction never started.
    pub async fn checkpoint(
        &self,
        source: &SourceName,
        scope: &str,
        period: Period,
    ) -> anyhow::Result<Option<Checkpoint>> {
        with_backend!(self, |pool, D| {
            let found = sqlx::query(
                "SELECT next_cursor, complete, pages, records, run_id, updated_at \
                 FROM checkpoints WHERE source = $1 AND scope = $2 AND period = $3",
            )
            .bind(source.as_str())
            .bind(scope)
            .bind(period.to_string())
            .fetch_optional(pool)
            .await
            .with_context(|| format!("checkpoint: reading ({source}, {scope}, {period})"))?;
            found.as_ref().map(rows::checkpoint).transpose()
        })
    }

    /// Starts extraction of (source, scope, period) from scratch: in one transaction, deletes its
    /// staged records and sets its checkpoint to no cursor, not complete, 0 pages, owned by
    /// `run_id`.
    pub async fn restart_extraction(
        &self,
        source: &SourceName,
        scope: &str,
        period: Period,
        run_id: i64,
    ) -> anyhow::Result<()> {
        let what = || format!("restart_extraction of ({source}, {scope}, {period})");
        with_backend!(self, |pool, D| {
            let mut tx = D::begin(pool).await.with_context(what)?;
            sqlx::query(
                "DELETE FROM staged_records WHERE source = $1 AND scope = $2 AND period = $3",
            )
            .bind(source.as_str())
            .bind(scope)
            .bind(period.to_string())
            .execute(&mut *tx)
            .await
            .with_context(|| format!("{}: deleting staged_records", what()))?;
            sqlx::query(
                "INSERT INTO checkpoints \
                 (source, scope, period, next_cursor, complete, pages, records, run_id, updated_at) \
                 VALUES ($1, $2, $3, NULL, $4, 0, 0, $5, $6) \
                 ON CONFLICT (source, scope, period) DO UPDATE SET \
                 next_cursor = NULL, complete = excluded.complete, pages = 0, records = 0, \
                 run_id = excluded.run_id, updated_at = excluded.updated_at",
            )
            .bind(source.as_str())
            .bind(scope)
            .bind(period.to_string())
            .bind(false)
            .bind(run_id)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await
            .with_context(|| format!("{}: resetting checkpoints", what()))?;
            tx.commit()
                .await
                .with_context(|| format!("{}: committing", what()))
        })
    }

    /// Stages one page and moves the checkpoint past it, in one transaction (see
    /// [`Self::stage_pages`]).
    pub async fn stage_page(
        &self,
        source: &SourceName,
        scope: &str,
        period: Period,
        run_id: i64,
        records: &[StagedRecord],
        next_cursor: Option<&str>,
    ) -> anyhow::Result<()> {
        let page = match self.checkpoint(source, scope, period).await? {
            Some(cp) => cp.pages.saturating_add(1),
            None => 1,
        };
        let pages = [PageToStage {
            page,
            records,
            next_cursor,
        }];
        self.stage_pages(source, scope, period, run_id, &pages)
            .await
    }

    /// Stages consecutive pages of one scope and moves the checkpoint past the last of them, in
    /// ONE transaction: upserts their records (one multi-row statement per batch; a `record_key`
    /// already staged for the same source, scope and period is replaced, so it counts once),
    /// then sets the cursor to the last page's `next_cursor`, `complete` to whether that is
    /// `None`, and adds the pages and the records received to the checkpoint's counts.
    ///
    /// Many pages per transaction is what makes staging fast (one commit, not one per page);
    /// the checkpoint still claims exactly the pages whose records it commits.
    pub async fn stage_pages(
        &self,
        source: &SourceName,
        scope: &str,
        period: Period,
        run_id: i64,
        pages: &[PageToStage<'_>],
    ) -> anyhow::Result<()> {
        self.stage(source, scope, period, run_id, pages, None).await
    }

    /// [`Self::stage_pages`] of a unit a worker holds (`claim`): the same transaction checks
    /// that the unit is still this worker's and renews its lease, and settles it `done` with
    /// the scope's last page ([`super::rounds`]). Fails with [`super::LostUnit`], staging
    /// nothing, when another worker holds it now.
    pub async fn stage_claimed_pages(
        &self,
        claim: &super::Claim,
        period: Period,
        pages: &[PageToStage<'_>],
    ) -> anyhow::Result<()> {
        let (source, scope) = (&claim.source, claim.scope.as_str());
        self.stage(source, scope, period, claim.run_id, pages, Some(claim))
            .await
    }

    async fn stage(
        &self,
        source: &SourceName,
        scope: &str,
        period: Period,
        run_id: i64,
        pages: &[PageToStage<'_>],
        claim: Option<&super::Claim>,
    ) -> anyhow::Result<()> {
        let Some(last) = pages.last() else {
            return Ok(());
        };
        let what = || format!("stage_pages of ({source}, {scope}, {period})");
        let unique = last_of_each_key(pages);
        let received: usize = pages.iter().map(|p| p.records.len()).sum();
        let received = i64::try_from(received).with_context(what)?;
        let count = i64::try_from(pages.len()).with_context(what)?;
        let period_text = period.to_string();
        with_backend!(self, |pool, D| {
            let mut tx = D::begin(pool).await.with_context(what)?;
            if let Some(claim) = claim {
                // First, so that a worker that lost its unit writes nothing at all.
                D::fence(&mut tx, claim, last.next_cursor.is_none()).await?;
            }
            let at = Scope {
                source: source.as_str(),
                scope,
                period: period_text.as_str(),
                run_id,
            };
            D::upsert_staged(&mut tx, &at, &unique)
                .await
                .with_context(|| format!("{}: upserting staged_records", what()))?;
            sqlx::query(
                "INSERT INTO checkpoints \
                 (source, scope, period, next_cursor, complete, pages, records, run_id, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (source, scope, period) DO UPDATE SET \
                 next_cursor = excluded.next_cursor, complete = excluded.complete, \
                 pages = checkpoints.pages + excluded.pages, \
                 records = checkpoints.records + excluded.records, \
                 run_id = excluded.run_id, updated_at = excluded.updated_at",
            )
            .bind(source.as_str())
            .bind(scope)
            .bind(period_text.as_str())
            .bind(last.next_cursor)
            .bind(last.next_cursor.is_none())
            .bind(count)
            .bind(received)
            .bind(run_id)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await
            .with_context(|| format!("{}: moving the checkpoint", what()))?;
            tx.commit()
                .await
                .with_context(|| format!("{}: committing", what()))
        })
    }

    /// Staged records of `source` and `period` (all scopes) with id greater than `after_id`,
    /// ordered by id, at most `limit`: read batch by batch so memory stays flat, and only the
    /// columns totals need.
    pub async fn staged_page(
        &self,
        source: &SourceName,
        period: Period,
        after_id: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<(i64, StagedQuantity)>> {
        with_backend!(self, |pool, D| {
            let found = sqlx::query(
                "SELECT id, record_key, customer_key, item, quantity \
                 FROM staged_records WHERE source = $1 AND period = $2 AND id > $3 \
                 ORDER BY id LIMIT $4",
            )
            .bind(source.as_str())
            .bind(period.to_string())
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .with_context(|| {
                format!("staged_page: reading staged_records of ({source}, {period}) after id {after_id}")
            })?;
            found.iter().map(rows::staged).collect()
        })
    }
}

/// Which scope's extraction staged rows belong to, and the run staging them.
struct Scope<'a> {
    source: &'a str,
    scope: &'a str,
    period: &'a str,
    run_id: i64,
}

/// On a conflict the record is replaced: a record listed again is the fresher listing.
const ON_CONFLICT: &str = " ON CONFLICT (source, scope, period, record_key) DO UPDATE SET \
     customer_key = excluded.customer_key, item = excluded.item, \
     quantity = excluded.quantity, page = excluded.page, run_id = excluded.run_id";

impl dialect::Pg {
    /// Postgres takes a batch as one array per column (`UNNEST`): one statement of ten binds
    /// however many rows, parsed and planned once, instead of a VALUES list of nine binds a row.
    async fn upsert_staged(
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        at: &Scope<'_>,
        rows: &[(i64, &StagedRecord)],
    ) -> sqlx::Result<()> {
        for batch in rows.chunks(STAGE_ROWS_PER_STATEMENT) {
            let keys: Vec<&str> = batch.iter().map(|(_, r)| r.record_key.as_str()).collect();
            let customers: Vec<&str> = batch.iter().map(|(_, r)| r.customer_key.as_str()).collect();
            let items: Vec<&str> = batch.iter().map(|(_, r)| r.item.as_str()).collect();
            let quantities: Vec<rust_decimal::Decimal> =
                batch.iter().map(|(_, r)| r.quantity).collect();
            let pages: Vec<i64> = batch.iter().map(|(page, _)| *page).collect();
            sqlx::query(&format!(
                "INSERT INTO staged_records (source, scope, period, record_key, customer_key, \
                 item, quantity, page, run_id) \
                 SELECT $1, $2, $3, r.record_key, r.customer_key, r.item, r.quantity, r.page, $4 \
                 FROM UNNEST($5::text[], $6::text[], $7::text[], $8::numeric[], $9::bigint[]) \
                 AS r(record_key, customer_key, item, quantity, page){ON_CONFLICT}"
            ))
            .bind(at.source)
            .bind(at.scope)
            .bind(at.period)
            .bind(at.run_id)
            .bind(&keys)
            .bind(&customers)
            .bind(&items)
            .bind(&quantities)
            .bind(&pages)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}

impl dialect::Lite {
    /// SQLite has no arrays: a multi-row VALUES list per batch, in the one transaction.
    async fn upsert_staged(
        tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        at: &Scope<'_>,
        rows: &[(i64, &StagedRecord)],
    ) -> sqlx::Result<()> {
        for batch in rows.chunks(ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::new(
                "INSERT INTO staged_records (source, scope, period, record_key, \
                 customer_key, item, quantity, page, run_id) ",
            );
            insert.push_values(batch, |mut row, (page, record)| {
                row.push_bind(at.source)
                    .push_bind(at.scope)
                    .push_bind(at.period)
                    .push_bind(record.record_key.as_str())
                    .push_bind(record.customer_key.as_str())
                    .push_bind(record.item.as_str())
                    .push_bind(dialect::Lite::dec(record.quantity))
                    .push_bind(*page)
                    .push_bind(at.run_id);
            });
            insert.push(ON_CONFLICT);
            insert.build().execute(&mut **tx).await?;
        }
        Ok(())
    }
}

/// Rows per `UNNEST` statement: bounded so that one statement's arrays stay a few megabytes.
const STAGE_ROWS_PER_STATEMENT: usize = 10_000;

/// One page for [`Store::stage_pages`].
#[derive(Debug, Clone, Copy)]
pub struct PageToStage<'a> {
    /// Which page of the scope's listing this is, from 1: kept with each record as evidence.
    pub page: i64,
    pub records: &'a [StagedRecord],
    /// Where the page after it starts; `None` on the last page.
    pub next_cursor: Option<&'a str>,
}

/// The pages' records with each `record_key` once, with the page it was read from (its last
/// occurrence wins, as a later listing is the fresher one). Postgres refuses an upsert that
/// touches the same row twice.
fn last_of_each_key<'a>(pages: &[PageToStage<'a>]) -> Vec<(i64, &'a StagedRecord)> {
    let all = || {
        pages
            .iter()
            .flat_map(|p| p.records.iter().map(move |record| (p.page, record)))
    };
    let last: HashMap<&str, usize> = all()
        .enumerate()
        .map(|(index, (_, record))| (record.record_key.as_str(), index))
        .collect();
    all()
        .enumerate()
        .filter(|(index, (_, record))| last.get(record.record_key.as_str()) == Some(index))
        .map(|(_, found)| found)
        .collect()
}
