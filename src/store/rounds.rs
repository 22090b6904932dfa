//! Rounds: one night's work of a period shared by several `tally run --worker` processes on one
//! Postgres, with no coordinator of tally's own (docs/OPERATIONS.md, "Workers that share a
//! night").
//!
//! The database is the coordinator. Every worker registers the round's units (a source's
//! scope) with `ON CONFLICT DO NOTHING`, so that whichever comes first creates them and the
//! others find them. A unit is claimed with `FOR UPDATE SKIP LOCKED` (claimers never wait on
//! each other, and no two take the same unit) under a lease timed by the database's clock, so
//! that workers on hosts whose clocks disagree still agree on when a lease has run out. A
//! worker's heartbeat renews its leases; a worker that dies stops renewing, and its unit is
//! claimed again and resumed at its checkpoint. Every staging transaction of a claimed unit
//! checks, in the same transaction, that the unit is still this worker's (the fence): a worker
//! that was paused past its lease cannot write over the worker that took its unit over.
//!
//! Postgres only: SQLite has no `SKIP LOCKED`, and a file on one machine has no one to share
//! with. The tables exist on SQLite too so that queries naming them (the writer lease's
//! `abandon_dead_runs`) run on both.

use super::dialect;
use super::{Backend, Store, this_host};
use crate::domain::{Period, SourceName};
use anyhow::{Context, bail};
use sqlx::PgPool;
use std::time::Duration;

/// A unit this worker holds: what the staging transactions of its scope check and renew.
#[derive(Debug, Clone)]
pub struct Claim {
    pub round: String,
    pub source: SourceName,
    pub scope: String,
    /// The worker's run, which holds the unit.
    pub run_id: i64,
    /// How long the unit stays this worker's without a renewal.
    pub lease: Duration,
    /// 1 the first time the unit is claimed, more once it was taken over from a worker that
    /// died, failed or was stopped.
    pub attempts: i64,
}

/// The fence failed: the unit's lease ran out and another worker holds it now. What this worker
/// staged since its last renewal is rolled back; the other worker resumes from the checkpoint.
#[derive(Debug, thiserror::Error)]
#[error(
    "lost unit ({of}, {scope}) of round {round}: its lease ran out and another worker holds \
     it now; this worker's uncommitted pages were rolled back"
)]
pub struct LostUnit {
    pub round: String,
    /// The unit's source.
    pub of: String,
    pub scope: String,
}

/// Where a round stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundProgress {
    pub pending: u64,
    /// Claimed under a lease that has not run out.
    pub claimed: u64,
    /// Claimed under a lease that has run out: claimable again.
    pub expired: u64,
    pub done: u64,
    pub failed: u64,
    /// The run that priced, reconciled and pushed the round, once one has.
    pub finished_by: Option<i64>,
}

impl RoundProgress {
    /// Every unit done or failed: the round can be priced.
    pub fn settled(&self) -> bool {
        self.pending == 0 && self.claimed == 0 && self.expired == 0
    }
}

/// One unit as the round records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitRecord {
    pub source: String,
    pub scope: String,
    pub state: String,
    pub holder_run: Option<i64>,
    pub holder_pid: Option<i64>,
    pub attempts: i64,
    pub error: Option<String>,
}

impl Store {
    pub(super) fn round_pool(&self) -> anyhow::Result<&PgPool> {
        match &self.backend {
            Backend::Postgres(pool) => Ok(pool),
            Backend::Sqlite { path, .. } => bail!(
                "workers that share a night need Postgres (database.url = \"postgres://…\"): the \
                 state here is the SQLite file {}, which other machines cannot share and which \
                 cannot skip locked rows; run without --worker",
                path.display()
            ),
        }
    }

    /// Joins `run_id` to round `round` of `period`, creating the round and any of `units` not
    /// registered yet. Fails when the round exists for another period.
    pub async fn join_round(
        &self,
        round: &str,
        period: Period,
        run_id: i64,
        lease: Duration,
        units: &[(SourceName, String)],
    ) -> anyhow::Result<()> {
        let pool = self.round_pool()?;
        let what = || format!("join_round: joining round {round:?}");
        let mut tx = pool.begin().await.with_context(what)?;
        sqlx::query(
            "INSERT INTO work_rounds (round, period) VALUES ($1, $2) ON CONFLICT (round) DO NOTHING",
        )
        .bind(round)
        .bind(period.to_string())
        .execute(&mut *tx)
        .await
        .with_context(|| format!("{}: inserting into work_rounds", what()))?;
        let of: String = sqlx::query_scalar("SELECT period FROM work_rounds WHERE round = $1")
            .bind(round)
            .fetch_one(&mut *tx)
            .await
            .with_context(|| format!("{}: reading work_rounds", what()))?;
        if of != period.to_string() {
            bail!(
                "round {round:?} is a round of {of}, not of {period}: give this period's workers \
                 a round of their own (--round)"
            );
        }
        let sources: Vec<&str> = units.iter().map(|(source, _)| source.as_str()).collect();
        let scopes: Vec<&str> = units.iter().map(|(_, scope)| scope.as_str()).collect();
        sqlx::query(
            "INSERT INTO work_units (round, source, scope) \
             SELECT $1, u.source, u.scope FROM UNNEST($2::text[], $3::text[]) AS u(source, scope) \
             ON CONFLICT (round, source, scope) DO NOTHING",
        )
        .bind(round)
        .bind(&sources)
        .bind(&scopes)
        .execute(&mut *tx)
        .await
        .with_context(|| format!("{}: inserting into work_units", what()))?;
        sqlx::query(
            "INSERT INTO round_workers (run_id, round, host, pid, alive_until) \
             VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
        )
        .bind(run_id)
        .bind(round)
        .bind(this_host())
        .bind(i64::from(std::process::id()))
        .bind(lease.as_secs_f64())
        .execute(&mut *tx)
        .await
        .with_context(|| format!("{}: inserting into round_workers", what()))?;
        tx.commit()
            .await
            .with_context(|| format!("{}: committing", what()))
    }

    /// Claims one unit of `round` of one of `sources` for `run_id`: a pending one, or one whose
    /// holder's lease ran out, in (source, scope) order. `None` when there is none to claim
    /// right now.
    pub async fn claim_unit(
        &self,
        round: &str,
        run_id: i64,
        lease: Duration,
        sources: &[String],
    ) -> anyhow::Result<Option<Claim>> {
        let pool = self.round_pool()?;
        let row: Option<(String, String, i32)> = sqlx::query_as(
            "UPDATE work_units SET state = 'claimed', holder_run = $2, holder_host = $3, \
             holder_pid = $4, lease_until = now() + make_interval(secs => $5), \
             attempts = attempts + 1, error = NULL \
             WHERE (round, source, scope) = ( \
                 SELECT round, source, scope FROM work_units \
                 WHERE round = $1 AND source = ANY($6) \
                 AND (state = 'pending' OR (state = 'claimed' AND lease_until < now())) \
                 ORDER BY source, scope LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING source, scope, attempts",
        )
        .bind(round)
        .bind(run_id)
        .bind(this_host())
        .bind(i64::from(std::process::id()))
        .bind(lease.as_secs_f64())
        .bind(sources)
        .fetch_optional(pool)
        .await
        .with_context(|| format!("claim_unit: claiming a unit of round {round:?}"))?;
        Ok(row.map(|(source, scope, attempts)| Claim {
            round: round.to_owned(),
            source: SourceName::new(source),
            scope,
            run_id,
            lease,
            attempts: i64::from(attempts),
        }))
    }

    /// The heartbeat: renews the worker's own lease and those of the units it holds.
    pub async fn renew_leases(
        &self,
        round: &str,
        run_id: i64,
        lease: Duration,
    ) -> anyhow::Result<()> {
        let pool = self.round_pool()?;
        let what = || format!("renew_leases: run {run_id} of round {round:?}");
        let mut tx = pool.begin().await.with_context(what)?;
        sqlx::query(
            "UPDATE round_workers SET alive_until = now() + make_interval(secs => $2) \
             WHERE run_id = $1",
        )
        .bind(run_id)
        .bind(lease.as_secs_f64())
        .execute(&mut *tx)
        .await
        .with_context(|| format!("{}: updating round_workers", what()))?;
        sqlx::query(
            "UPDATE work_units SET lease_until = now() + make_interval(secs => $3) \
             WHERE round = $1 AND holder_run = $2 AND state = 'claimed'",
        )
        .bind(round)
        .bind(run_id)
        .bind(lease.as_secs_f64())
        .execute(&mut *tx)
        .await
        .with_context(|| format!("{}: updating work_units", what()))?;
        tx.commit()
            .await
            .with_context(|| format!("{}: committing", what()))
    }

    /// Settles a claimed unit that did not finish: `failed` with `error` (the round prices its
    /// source as failed, its checkpoint kept), or back to `pending` when `error` is `None` (a
    /// stop: another worker resumes it at once). A unit no longer this worker's is left alone.
    pub async fn release_unit(&self, claim: &Claim, error: Option<&str>) -> anyhow::Result<()> {
        let pool = self.round_pool()?;
        sqlx::query(
            "UPDATE work_units SET \
             state = CASE WHEN $5::text IS NULL THEN 'pending' ELSE 'failed' END, \
             error = $5, lease_until = NULL, \
             settled_at = CASE WHEN $5::text IS NULL THEN NULL ELSE now() END \
             WHERE round = $1 AND source = $2 AND scope = $3 AND holder_run = $4 \
             AND state = 'claimed'",
        )
        .bind(&claim.round)
        .bind(claim.source.as_str())
        .bind(&claim.scope)
        .bind(claim.run_id)
        .bind(error)
        .execute(pool)
        .await
        .with_context(|| {
            format!(
                "release_unit: ({}, {}) of round {:?}",
                claim.source, claim.scope, claim.round
            )
        })?;
        Ok(())
    }

    /// Where `round` stands (all zero for a round nobody joined).
    pub async fn round_progress(&self, round: &str) -> anyhow::Result<RoundProgress> {
        let pool = self.round_pool()?;
        let what = || format!("round_progress: reading round {round:?}");
        let counts: Vec<(String, bool, i64)> = sqlx::query_as(
            "SELECT state, coalesce(lease_until < now(), false), count(*) FROM work_units \
             WHERE round = $1 GROUP BY 1, 2",
        )
        .bind(round)
        .fetch_all(pool)
        .await
        .with_context(what)?;
        let finished_by: Option<Option<i64>> =
            sqlx::query_scalar("SELECT finished_by FROM work_rounds WHERE round = $1")
                .bind(round)
                .fetch_optional(pool)
                .await
                .with_context(what)?;
        let mut progress = RoundProgress {
            finished_by: finished_by.flatten(),
            ..RoundProgress::default()
        };
        for (state, expired, count) in counts {
            let count = u64::try_from(count).unwrap_or(0);
            match (state.as_str(), expired) {
                ("pending", _) => progress.pending += count,
                ("claimed", false) => progress.claimed += count,
                ("claimed", true) => progress.expired += count,
                ("done", _) => progress.done += count,
                _ => progress.failed += count,
            }
        }
        Ok(progress)
    }

    /// Every unit of `round`, in (source, scope) order.
    pub async fn round_units(&self, round: &str) -> anyhow::Result<Vec<UnitRecord>> {
        let pool = self.round_pool()?;
        type Row = (
            String,
            String,
            String,
            Option<i64>,
            Option<i64>,
            i32,
            Option<String>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT source, scope, state, holder_run, holder_pid, attempts, error \
                 FROM work_units WHERE round = $1 ORDER BY source, scope",
        )
        .bind(round)
        .fetch_all(pool)
        .await
        .with_context(|| format!("round_units: reading round {round:?}"))?;
        Ok(rows
            .into_iter()
            .map(
                |(source, scope, state, holder_run, holder_pid, attempts, error)| UnitRecord {
                    source,
                    scope,
                    state,
                    holder_run,
                    holder_pid,
                    attempts: i64::from(attempts),
                    error,
                },
            )
            .collect())
    }

    /// Records that `run_id` priced, reconciled and pushed `round`: the workers still waiting
    /// for it leave.
    pub async fn finish_round(&self, round: &str, run_id: i64) -> anyhow::Result<()> {
        let pool = self.round_pool()?;
        sqlx::query(
            "UPDATE work_rounds SET finished_by = $2, finished_at = now() WHERE round = $1",
        )
        .bind(round)
        .bind(run_id)
        .execute(pool)
        .await
        .with_context(|| format!("finish_round: round {round:?}"))?;
        Ok(())
    }

    /// The worker leaves the round: the writer lease's holder may take its run for a dead one
    /// from now on, which it is not, since it has finished.
    pub async fn leave_round(&self, run_id: i64) -> anyhow::Result<()> {
        let pool = self.round_pool()?;
        sqlx::query("DELETE FROM round_workers WHERE run_id = $1")
            .bind(run_id)
            .execute(pool)
            .await
            .with_context(|| format!("leave_round: run {run_id}"))?;
        Ok(())
    }
}

impl dialect::Pg {
    /// The fence, inside a staging transaction: renews the claim's lease and, with the scope's
    /// last page, settles the unit `done` in the same commit as that page. Fails with
    /// [`LostUnit`] (and the transaction is rolled back) when the unit is no longer this
    /// worker's.
    pub(super) async fn fence(
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        claim: &Claim,
        last_page: bool,
    ) -> anyhow::Result<()> {
        let held = sqlx::query(
            "UPDATE work_units SET lease_until = now() + make_interval(secs => $5), \
             state = CASE WHEN $6 THEN 'done' ELSE state END, \
             settled_at = CASE WHEN $6 THEN now() ELSE settled_at END \
             WHERE round = $1 AND source = $2 AND scope = $3 AND holder_run = $4 \
             AND state = 'claimed'",
        )
        .bind(&claim.round)
        .bind(claim.source.as_str())
        .bind(&claim.scope)
        .bind(claim.run_id)
        .bind(claim.lease.as_secs_f64())
        .bind(last_page)
        .execute(&mut **tx)
        .await
        .context("checking the unit's claim in work_units")?
        .rows_affected();
        if held == 0 {
            return Err(LostUnit {
                round: claim.round.clone(),
                of: claim.source.to_string(),
                scope: claim.scope.clone(),
            }
            .into());
        }
        Ok(())
    }
}

impl dialect::Lite {
    /// Claims exist only on Postgres ([`Store::claim_unit`] refuses SQLite).
    pub(super) async fn fence(
        _tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        claim: &Claim,
        _last_page: bool,
    ) -> anyhow::Result<()> {
        bail!(
            "unit ({}, {}) of round {:?} cannot be staged on SQLite: workers need Postgres",
            claim.source,
            claim.scope,
            claim.round
        )
    }
}
