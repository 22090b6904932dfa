//! Runs: started, finished, listed.

use super::RunRecord;
use super::dialect;
use super::{Backend, Store};
use super::{rows, this_host};
use crate::domain::{Period, RunStatus, RunSummary, Trigger};
use anyhow::{Context, ensure};
use chrono::Utc;
use sqlx::types::Json;

impl Store {
    /// Records a new run as `running`; returns its id.
    pub async fn start_run(
        &self,
        trigger: Trigger,
        period: Period,
        source_filter: Option<&str>,
    ) -> anyhow::Result<i64> {
        with_backend!(self, |pool, D| {
            sqlx::query_scalar(
                "INSERT INTO runs (triggered_by, period, source_filter, status, started_at, host, pid) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(trigger.as_str())
            .bind(period.to_string())
            .bind(source_filter)
            .bind(RunStatus::Running.as_str())
            .bind(Utc::now())
            .bind(this_host())
            .bind(i64::from(std::process::id()))
            .fetch_one(pool)
            .await
            .with_context(|| format!("start_run: inserting a run of {period} into runs"))
        })
    }

    /// Records the end of a run: its status and summary.
    pub async fn finish_run(&self, run_id: i64, summary: &RunSummary) -> anyhow::Result<()> {
        let done = with_backend!(self, |pool, D| {
            sqlx::query("UPDATE runs SET status = $2, summary = $3, finished_at = $4 WHERE id = $1")
                .bind(run_id)
                .bind(summary.status.as_str())
                .bind(Json(summary))
                .bind(Utc::now())
                .execute(pool)
                .await
                .with_context(|| format!("finish_run: updating run {run_id} in runs"))?
                .rows_affected()
        });
        ensure!(done == 1, "finish_run: there is no run {run_id}");
        Ok(())
    }

    /// The newest runs first.
    pub async fn runs(&self, limit: u32) -> anyhow::Result<Vec<RunRecord>> {
        with_backend!(self, |pool, D| {
            let found = sqlx::query(
                "SELECT id, triggered_by, period, source_filter, status, started_at, \
                 finished_at, summary FROM runs ORDER BY id DESC LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .context("runs: reading runs")?;
            found.iter().map(rows::run).collect()
        })
    }
}
