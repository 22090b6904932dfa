//! Runs: started, finished, listed, and what a run's options are checked against (the
//! accounts a `--customer` may name, what a source returned the period before).

use super::RunRecord;
use super::dialect;
use super::{Backend, Store};
use super::{rows, this_host};
use crate::domain::{Period, RunStatus, RunSummary, SourceName, Trigger};
use anyhow::{Context, ensure};
use chrono::Utc;
use sqlx::types::Json;

/// The columns a [`RunRecord`] is read from (`rows::run`).
const RUN_COLUMNS: &str = "id, triggered_by, period, source_filter, requested_by, \
     customer_filter, status, started_at, finished_at, summary";

/// Who asked for a run and what it was limited to, as `runs` records it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunRequest<'a> {
    /// `--source`.
    pub source: Option<&'a str>,
    /// `--by` (or the login name); `None` for the schedule.
    pub by: Option<&'a str>,
    /// `--customer`.
    pub customer: Option<&'a str>,
}

impl Store {
    /// Records a new run as `running`; returns its id.
    pub async fn start_run(
        &self,
        trigger: Trigger,
        period: Period,
        source_filter: Option<&str>,
    ) -> anyhow::Result<i64> {
        let request = RunRequest {
            source: source_filter,
            ..RunRequest::default()
        };
        self.start_requested_run(trigger, period, &request).await
    }

    /// Records a new run as `running` with who asked for it and its filters; returns its id.
    pub async fn start_requested_run(
        &self,
        trigger: Trigger,
        period: Period,
        request: &RunRequest<'_>,
    ) -> anyhow::Result<i64> {
        with_backend!(self, |pool, D| {
            sqlx::query_scalar(
                "INSERT INTO runs (triggered_by, period, source_filter, status, started_at, host, \
                 pid, requested_by, customer_filter) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            )
            .bind(trigger.as_str())
            .bind(period.to_string())
            .bind(request.source)
            .bind(RunStatus::Running.as_str())
            .bind(Utc::now())
            .bind(this_host())
            .bind(i64::from(std::process::id()))
            .bind(request.by)
            .bind(request.customer)
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
            let found = sqlx::query(&format!(
                "SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT $1"
            ))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .context("runs: reading runs")?;
            found.iter().map(rows::run).collect()
        })
    }

    /// One run, if there is one with that id.
    pub async fn run_record(&self, run_id: i64) -> anyhow::Result<Option<RunRecord>> {
        with_backend!(self, |pool, D| {
            let found = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
                .bind(run_id)
                .fetch_optional(pool)
                .await
                .with_context(|| format!("runs: reading run {run_id}"))?;
            found.as_ref().map(rows::run).transpose()
        })
    }

    /// Every billing account the ledger holds a line for, in any period: what a `--customer`
    /// may name besides the customer map's accounts.
    pub async fn ledger_accounts(&self) -> anyhow::Result<Vec<String>> {
        with_backend!(self, |pool, D| {
            sqlx::query_scalar(
                "SELECT DISTINCT billing_account FROM ledger_lines ORDER BY billing_account",
            )
            .fetch_all(pool)
            .await
            .context("ledger_accounts: reading the ledger's billing accounts")
        })
    }

    /// How much `source` had for `period`: its staged records, or, when none are staged any
    /// more, its ledger lines. Zero means the source returned nothing that month (or was not
    /// run).
    pub async fn source_activity(
        &self,
        source: &SourceName,
        period: Period,
    ) -> anyhow::Result<u64> {
        let (staged, lines): (i64, i64) = with_backend!(self, |pool, D| {
            let staged: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(records), 0) AS BIGINT) FROM staged_pages \
                 WHERE source = $1 AND period = $2",
            )
            .bind(source.as_str())
            .bind(period.to_string())
            .fetch_one(pool)
            .await
            .with_context(|| {
                format!("source_activity: counting {source}'s staged records of {period}")
            })?;
            let lines: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM ledger_lines WHERE source = $1 AND period = $2",
            )
            .bind(source.as_str())
            .bind(period.to_string())
            .fetch_one(pool)
            .await
            .with_context(|| format!("source_activity: counting {source}'s lines of {period}"))?;
            (staged, lines)
        });
        Ok(u64::try_from(staged.max(lines)).unwrap_or(0))
    }
}
