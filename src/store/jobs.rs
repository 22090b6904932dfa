//! The daemon's bookkeeping: which instance runs a job's tick (one among all the daemons on
//! this database), what the tick's last run was, and the months closed to scheduled runs.

use super::dialect::{self, Columns};
use super::lock::this_host;
use super::{Backend, Store};
use crate::domain::Period;
use anyhow::Context;
use chrono::{DateTime, Utc};

/// Who won a job's tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickClaim {
    /// This process: it runs the tick.
    Won,
    /// Another daemon (or this one, earlier) claimed it first.
    Taken { host: String, pid: i64 },
}

/// The last run a job's tick did, for `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JobLastRun {
    pub fire_at: DateTime<Utc>,
    pub run_id: Option<i64>,
    pub status: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A claimed tick of a job: who ran it and what it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobTick {
    pub fire_at: DateTime<Utc>,
    pub host: String,
    pub pid: i64,
    pub run_id: Option<i64>,
    pub status: Option<String>,
}

/// A month closed to scheduled runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedPeriod {
    pub period: Period,
    pub closed_at: DateTime<Utc>,
    /// `job:<name>` for a job of the daemon.
    pub closed_by: String,
}

impl Store {
    /// Claims the tick of `job` that fired at `fire_at` for this process, unless another
    /// process already has: the one INSERT decides, so two daemons never both win.
    pub async fn claim_tick(&self, job: &str, fire_at: DateTime<Utc>) -> anyhow::Result<TickClaim> {
        let host = this_host();
        let pid = i64::from(std::process::id());
        with_backend!(self, |pool, D| {
            let inserted = sqlx::query(
                "INSERT INTO job_ticks (job, fire_at, host, pid, claimed_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (job, fire_at) DO NOTHING",
            )
            .bind(job)
            .bind(fire_at)
            .bind(&host)
            .bind(pid)
            .bind(Utc::now())
            .execute(pool)
            .await
            .with_context(|| format!("claim_tick: inserting the tick of job {job} into job_ticks"))?
            .rows_affected();
            if inserted == 1 {
                return Ok(TickClaim::Won);
            }
            let row =
                sqlx::query("SELECT host, pid FROM job_ticks WHERE job = $1 AND fire_at = $2")
                    .bind(job)
                    .bind(fire_at)
                    .fetch_one(pool)
                    .await
                    .with_context(|| format!("claim_tick: reading the claim of job {job}"))?;
            Ok(TickClaim::Taken {
                host: row.text("host")?,
                pid: row.int("pid")?,
            })
        })
    }

    /// Notes a run the tick did (the last one noted is the tick's).
    pub async fn record_tick_run(
        &self,
        job: &str,
        fire_at: DateTime<Utc>,
        run_id: Option<i64>,
        status: &str,
    ) -> anyhow::Result<()> {
        with_backend!(self, |pool, D| {
            sqlx::query(
                "UPDATE job_ticks SET run_id = COALESCE($3, run_id), status = $4, finished_at = $5 \
                 WHERE job = $1 AND fire_at = $2",
            )
            .bind(job)
            .bind(fire_at)
            .bind(run_id)
            .bind(status)
            .bind(Utc::now())
            .execute(pool)
            .await
            .with_context(|| format!("record_tick_run: updating the tick of job {job}"))?;
            Ok(())
        })
    }

    /// The newest tick of `job` that finished, by any instance.
    pub async fn last_tick(&self, job: &str) -> anyhow::Result<Option<JobLastRun>> {
        with_backend!(self, |pool, D| {
            let row = sqlx::query(
                "SELECT fire_at, run_id, status, finished_at FROM job_ticks \
                 WHERE job = $1 AND finished_at IS NOT NULL ORDER BY fire_at DESC LIMIT 1",
            )
            .bind(job)
            .fetch_optional(pool)
            .await
            .with_context(|| format!("last_tick: reading the ticks of job {job}"))?;
            row.map(|row| {
                Ok(JobLastRun {
                    fire_at: row.time("fire_at")?,
                    run_id: row.opt_int("run_id")?,
                    status: row.opt_text("status")?,
                    finished_at: row.opt_time("finished_at")?,
                })
            })
            .transpose()
        })
    }

    /// Every claimed tick of `job`, oldest first.
    pub async fn job_ticks(&self, job: &str) -> anyhow::Result<Vec<JobTick>> {
        with_backend!(self, |pool, D| {
            let rows = sqlx::query(
                "SELECT fire_at, host, pid, run_id, status FROM job_ticks WHERE job = $1 \
                 ORDER BY fire_at",
            )
            .bind(job)
            .fetch_all(pool)
            .await
            .with_context(|| format!("job_ticks: reading the ticks of job {job}"))?;
            rows.iter()
                .map(|row| {
                    Ok(JobTick {
                        fire_at: row.time("fire_at")?,
                        host: row.text("host")?,
                        pid: row.int("pid")?,
                        run_id: row.opt_int("run_id")?,
                        status: row.opt_text("status")?,
                    })
                })
                .collect()
        })
    }

    /// Closes `period` to scheduled runs; `false` when it was closed already.
    pub async fn close_period(&self, period: Period, by: &str) -> anyhow::Result<bool> {
        with_backend!(self, |pool, D| {
            let inserted = sqlx::query(
                "INSERT INTO closed_periods (period, closed_at, closed_by) VALUES ($1, $2, $3) \
                 ON CONFLICT (period) DO NOTHING",
            )
            .bind(period.to_string())
            .bind(Utc::now())
            .bind(by)
            .execute(pool)
            .await
            .with_context(|| format!("close_period: inserting {period} into closed_periods"))?
            .rows_affected();
            Ok(inserted == 1)
        })
    }

    /// Whether (and when, by whom) `period` was closed.
    pub async fn closed_period(&self, period: Period) -> anyhow::Result<Option<ClosedPeriod>> {
        with_backend!(self, |pool, D| {
            let row =
                sqlx::query("SELECT closed_at, closed_by FROM closed_periods WHERE period = $1")
                    .bind(period.to_string())
                    .fetch_optional(pool)
                    .await
                    .with_context(|| {
                        format!("closed_period: reading {period} in closed_periods")
                    })?;
            row.map(|row| {
                Ok(ClosedPeriod {
                    period,
                    closed_at: row.time("closed_at")?,
                    closed_by: row.text("closed_by")?,
                })
            })
            .transpose()
        })
    }

    /// Answers when the database does (for `/healthz`).
    pub async fn ping(&self) -> anyhow::Result<()> {
        with_backend!(self, |pool, D| {
            sqlx::query("SELECT 1")
                .execute(pool)
                .await
                .context("ping: the state database does not answer")?;
            Ok(())
        })
    }
}
