//! Extraction: checkpoints and staged records, a page and its checkpoint in one transaction.

use super::dialect;
use super::{Backend, Store};
use super::{Checkpoint, ROWS_PER_INSERT, rows};
use crate::domain::{Period, SourceName, StagedRecord};
use anyhow::Context;
use chrono::Utc;
use sqlx::QueryBuilder;
use sqlx::types::Json;
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

    /// Stages one page and moves the checkpoint past it, in ONE transaction: upserts the
    /// records (one multi-row statement per batch; a `record_key` already staged for the same
    /// source, scope and period is replaced, so it counts once), then sets the cursor to
    /// `next_cursor`, `complete` to `next_cursor.is_none()`, and adds to pages and records.
    pub async fn stage_page(
        &self,
        source: &SourceName,
        scope: &str,
        period: Period,
        run_id: i64,
        records: &[StagedRecord],
        next_cursor: Option<&str>,
    ) -> anyhow::Result<()> {
        let what = || format!("stage_page of ({source}, {scope}, {period})");
        let unique = last_of_each_key(records);
        let received = i64::try_from(records.len()).with_context(what)?;
        let period_text = period.to_string();
        with_backend!(self, |pool, D| {
            let mut tx = D::begin(pool).await.with_context(what)?;
            for batch in unique.chunks(ROWS_PER_INSERT) {
                let mut insert = QueryBuilder::new(
                    "INSERT INTO staged_records (source, scope, period, record_key, \
                     customer_key, item, quantity, payload, run_id) ",
                );
                insert.push_values(batch, |mut row, record| {
                    row.push_bind(source.as_str())
                        .push_bind(scope)
                        .push_bind(period_text.as_str())
                        .push_bind(record.record_key.as_str())
                        .push_bind(record.customer_key.as_str())
                        .push_bind(record.item.as_str())
                        .push_bind(D::dec(record.quantity))
                        .push_bind(Json(&record.payload))
                        .push_bind(run_id);
                });
                insert.push(
                    " ON CONFLICT (source, scope, period, record_key) DO UPDATE SET \
                     customer_key = excluded.customer_key, item = excluded.item, \
                     quantity = excluded.quantity, payload = excluded.payload, \
                     run_id = excluded.run_id",
                );
                insert
                    .build()
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("{}: upserting staged_records", what()))?;
            }
            sqlx::query(
                "INSERT INTO checkpoints \
                 (source, scope, period, next_cursor, complete, pages, records, run_id, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8) \
                 ON CONFLICT (source, scope, period) DO UPDATE SET \
                 next_cursor = excluded.next_cursor, complete = excluded.complete, \
                 pages = checkpoints.pages + 1, records = checkpoints.records + excluded.records, \
                 run_id = excluded.run_id, updated_at = excluded.updated_at",
            )
            .bind(source.as_str())
            .bind(scope)
            .bind(period_text.as_str())
            .bind(next_cursor)
            .bind(next_cursor.is_none())
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
    /// ordered by id, at most `limit`: read page by page so memory stays flat.
    pub async fn staged_page(
        &self,
        source: &SourceName,
        period: Period,
        after_id: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<(i64, StagedRecord)>> {
        with_backend!(self, |pool, D| {
            let found = sqlx::query(
                "SELECT id, record_key, customer_key, item, quantity, payload \
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

/// A page's records with each `record_key` once (its last occurrence wins, as a later listing
/// is the fresher one). Postgres refuses an upsert that touches the same row twice.
fn last_of_each_key(records: &[StagedRecord]) -> Vec<&StagedRecord> {
    let last: HashMap<&str, usize> = records
        .iter()
        .enumerate()
        .map(|(index, record)| (record.record_key.as_str(), index))
        .collect();
    records
        .iter()
        .enumerate()
        .filter(|(index, record)| last.get(record.record_key.as_str()) == Some(index))
        .map(|(_, record)| record)
        .collect()
}
