//! Extraction: checkpoints and staged pages, pages and their checkpoint in one transaction.
//!
//! A scope's listing is staged one row per page ([`super::page_body`]), so that a million
//! records are ten thousand rows, and a re-run that finds a page's fingerprint unchanged writes
//! nothing for it. A record listed twice counts once: readers keep each key's last listing.

use super::page_body::{self, PageBody};
use super::{Backend, Store};
use super::{Checkpoint, dialect, rows};
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
                "SELECT next_cursor, complete, pages, records, run_id, updated_at, rereading \
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
    /// staged pages and sets its checkpoint to no cursor, not complete, 0 pages, owned by
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
                "DELETE FROM staged_pages WHERE source = $1 AND period = $2 AND scope = $3",
            )
            .bind(source.as_str())
            .bind(period.to_string())
            .bind(scope)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("{}: deleting staged_pages", what()))?;
            sqlx::query(
                "INSERT INTO checkpoints \
                 (source, scope, period, next_cursor, complete, pages, records, run_id, updated_at, \
                 rereading) \
                 VALUES ($1, $2, $3, NULL, $4, 0, 0, $5, $6, $4) \
                 ON CONFLICT (source, scope, period) DO UPDATE SET \
                 next_cursor = NULL, complete = excluded.complete, pages = 0, records = 0, \
                 run_id = excluded.run_id, updated_at = excluded.updated_at, rereading = excluded.rereading",
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

    /// Starts reading a complete extraction again while keeping its staged pages: the checkpoint
    /// goes back to page 0, owned by `run_id`, `rereading`. The pages are then compared with what
    /// the peer lists now ([`Self::page_fingerprints`]); those that match are not written again.
    pub async fn begin_reread(
        &self,
        source: &SourceName,
        scope: &str,
        period: Period,
        run_id: i64,
    ) -> anyhow::Result<()> {
        with_backend!(self, |pool, D| {
            sqlx::query(
                "UPDATE checkpoints SET next_cursor = NULL, complete = $4, pages = 0, records = 0, \
                 run_id = $5, updated_at = $6, rereading = $7 \
                 WHERE source = $1 AND scope = $2 AND period = $3",
            )
            .bind(source.as_str())
            .bind(scope)
            .bind(period.to_string())
            .bind(false)
            .bind(run_id)
            .bind(Utc::now())
            .bind(true)
            .execute(pool)
            .await
            .with_context(|| format!("begin_reread of ({source}, {scope}, {period})"))?;
            Ok(())
        })
    }

    /// The fingerprint of each staged page of (source, scope, period), by page number.
    pub async fn page_fingerprints(
        &self,
        source: &SourceName,
        scope: &str,
        period: Period,
    ) -> anyhow::Result<HashMap<i64, String>> {
        with_backend!(self, |pool, D| {
            let found: Vec<(i64, String)> = sqlx::query_as(
                "SELECT page, fingerprint FROM staged_pages \
                 WHERE source = $1 AND period = $2 AND scope = $3",
            )
            .bind(source.as_str())
            .bind(period.to_string())
            .bind(scope)
            .fetch_all(pool)
            .await
            .with_context(|| {
                format!("page_fingerprints: reading staged_pages of ({source}, {scope}, {period})")
            })?;
            Ok(found.into_iter().collect())
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
    /// ONE transaction: writes each page as one row (replacing any staged page of that number or
    /// later, left by an earlier run), then sets the cursor to the last page's `next_cursor`,
    /// `complete` to whether that is `None`, and adds the pages and the records received to the
    /// checkpoint's counts. With the last page, staged pages beyond it (a listing that got
    /// shorter) are deleted.
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
        let at = StageAt {
            source,
            scope,
            period,
            run_id,
            claim: None,
        };
        self.stage(&at, pages, 0).await
    }

    /// [`Self::stage_pages`] at `at` (with its claim, if a worker's), where during a re-read
    /// ([`Self::begin_reread`]) the first `kept` pages are already staged exactly so (their
    /// fingerprints matched) and are not written: only the checkpoint moves past them. The
    /// re-read goes on while every page matched; the first page written ends it.
    pub async fn stage_at(
        &self,
        at: &StageAt<'_>,
        pages: &[PageToStage<'_>],
        kept: usize,
    ) -> anyhow::Result<()> {
        self.stage(at, pages, kept).await
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
        let at = StageAt {
            source: &claim.source,
            scope: claim.scope.as_str(),
            period,
            run_id: claim.run_id,
            claim: Some(claim),
        };
        self.stage(&at, pages, 0).await
    }

    async fn stage(
        &self,
        at: &StageAt<'_>,
        pages: &[PageToStage<'_>],
        kept: usize,
    ) -> anyhow::Result<()> {
        let &StageAt {
            source,
            scope,
            period,
            run_id,
            claim,
        } = at;
        let Some(last) = pages.last() else {
            return Ok(());
        };
        let what = || format!("stage_pages of ({source}, {scope}, {period})");
        let received: usize = pages.iter().map(|p| p.records.len()).sum();
        let received = i64::try_from(received).with_context(what)?;
        let count = i64::try_from(pages.len()).with_context(what)?;
        let written = pages.get(kept.min(pages.len())..).unwrap_or_default();
        let bodies: Vec<(i64, i64, PageBody)> = written
            .iter()
            .map(|p| {
                let records = i64::try_from(p.records.len()).unwrap_or(i64::MAX);
                (p.page, records, PageBody::of(p.records))
            })
            .collect();
        let complete = last.next_cursor.is_none();
        let rereading = !complete && kept >= pages.len();
        let period_text = period.to_string();
        with_backend!(self, |pool, D| {
            let mut tx = D::begin(pool).await.with_context(what)?;
            if let Some(claim) = claim {
                // First, so that a worker that lost its unit writes nothing at all.
                D::fence(&mut tx, claim, complete).await?;
            }
            // What an earlier run left from here on is replaced (a page that differs ends a
            // re-read: the pages after it are the old listing's); with the last page, what
            // lies beyond it goes too.
            let stale_from = match bodies.first() {
                Some((first, _, _)) => Some(*first),
                None if complete => Some(last.page.saturating_add(1)),
                None => None,
            };
            if let Some(from) = stale_from {
                sqlx::query(
                    "DELETE FROM staged_pages \
                     WHERE source = $1 AND period = $2 AND scope = $3 AND page >= $4",
                )
                .bind(source.as_str())
                .bind(period_text.as_str())
                .bind(scope)
                .bind(from)
                .execute(&mut *tx)
                .await
                .with_context(|| format!("{}: replacing staged_pages", what()))?;
            }
            for chunk in bodies.chunks(PAGES_PER_INSERT) {
                let mut insert = QueryBuilder::new(
                    "INSERT INTO staged_pages \
                     (source, scope, period, page, records, body, fingerprint) ",
                );
                insert.push_values(chunk, |mut row, (page, records, body)| {
                    row.push_bind(source.as_str())
                        .push_bind(scope)
                        .push_bind(period_text.as_str())
                        .push_bind(*page)
                        .push_bind(*records)
                        .push_bind(body.body.as_str())
                        .push_bind(body.fingerprint.as_str());
                });
                insert
                    .build()
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("{}: writing staged_pages", what()))?;
            }
            sqlx::query(
                "INSERT INTO checkpoints \
                 (source, scope, period, next_cursor, complete, pages, records, run_id, updated_at, \
                 rereading) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (source, scope, period) DO UPDATE SET \
                 next_cursor = excluded.next_cursor, complete = excluded.complete, \
                 pages = checkpoints.pages + excluded.pages, \
                 records = checkpoints.records + excluded.records, \
                 run_id = excluded.run_id, updated_at = excluded.updated_at, \
                 rereading = excluded.rereading",
            )
            .bind(source.as_str())
            .bind(scope)
            .bind(period_text.as_str())
            .bind(last.next_cursor)
            .bind(complete)
            .bind(count)
            .bind(received)
            .bind(run_id)
            .bind(Utc::now())
            .bind(rereading)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("{}: moving the checkpoint", what()))?;
            tx.commit()
                .await
                .with_context(|| format!("{}: committing", what()))
        })
    }

    /// Calls `each` with every staged page of `source` and `period` (of one `scope`, or all),
    /// scope by scope and, within a scope, **last page first**, so that the first listing of
    /// a record key met is its last one. Pages are streamed: memory holds one page at a time.
    pub async fn for_each_staged_page(
        &self,
        source: &SourceName,
        period: Period,
        scope: Option<&str>,
        mut each: impl FnMut(&str, i64, Vec<StagedQuantity>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        use futures_util::TryStreamExt as _;
        with_backend!(self, |pool, D| {
            let mut rows = sqlx::query_as::<_, (String, i64, String)>(
                "SELECT scope, page, body FROM staged_pages \
                 WHERE source = $1 AND period = $2 AND ($3 IS NULL OR scope = $3) \
                 ORDER BY scope, page DESC",
            )
            .bind(source.as_str())
            .bind(period.to_string())
            .bind(scope)
            .fetch(pool);
            while let Some((scope, page, body)) = rows
                .try_next()
                .await
                .with_context(|| format!("reading staged_pages of ({source}, {period})"))?
            {
                let what = || format!("staged_pages of ({source}, {scope}, {period}), page {page}");
                let records = page_body::decode(&body, &what)?;
                each(&scope, page, records)?;
            }
            Ok(())
        })
    }

    /// Every staged record of `source` and `period`, each record key of a scope once (its
    /// last listing), ordered by scope and page: what totals count. Holds them all, so it is
    /// for inspecting small extractions (tests, support); totals stream with
    /// [`Self::for_each_staged_page`].
    pub async fn staged_records(
        &self,
        source: &SourceName,
        period: Period,
    ) -> anyhow::Result<Vec<StagedQuantity>> {
        let mut scopes: Vec<(String, Vec<Vec<StagedQuantity>>)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        self.for_each_staged_page(source, period, None, |scope, _, records| {
            if scopes.last().is_none_or(|(s, _)| s != scope) {
                scopes.push((scope.to_owned(), Vec::new()));
            }
            let kept: Vec<StagedQuantity> = records
                .into_iter()
                .rev()
                .filter(|r| seen.insert((scope.to_owned(), r.record_key.clone())))
                .collect();
            if let Some((_, pages)) = scopes.last_mut() {
                pages.push(kept.into_iter().rev().collect());
            }
            Ok(())
        })
        .await?;
        Ok(scopes
            .into_iter()
            .flat_map(|(_, pages)| pages.into_iter().rev().flatten())
            .collect())
    }
}

/// Where staged pages go: the scope's extraction, the run staging, and the claim of a worker's
/// unit (checked in the same transaction).
#[derive(Debug, Clone, Copy)]
pub struct StageAt<'a> {
    pub source: &'a SourceName,
    pub scope: &'a str,
    pub period: Period,
    pub run_id: i64,
    pub claim: Option<&'a super::Claim>,
}

/// Pages per INSERT: seven binds a page keep a statement far below SQLite's limit of binds
/// however small the pages are.
const PAGES_PER_INSERT: usize = 500;

/// One page for [`Store::stage_pages`].
#[derive(Debug, Clone, Copy)]
pub struct PageToStage<'a> {
    /// Which page of the scope's listing this is, from 1: kept with each record as evidence.
    pub page: i64,
    pub records: &'a [StagedRecord],
    /// Where the page after it starts; `None` on the last page.
    pub next_cursor: Option<&'a str>,
}
