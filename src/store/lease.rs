//! The writer lease as the store offers it: taken with a wait, its holder recorded and named,
//! runs of dead processes marked abandoned. The lock itself is in `lock`.

use super::dialect::{self, Columns};
use super::lock::{WriterLease, this_host};
use super::{Backend, Store};
use anyhow::Context;
use chrono::{DateTime, Utc};
use std::time::Duration;

impl Store {
    /// Takes the writer lease for `command`, waiting up to `wait` for another holder to finish.
    /// Once held, runs left `running` by a process that died are marked `abandoned` (only the
    /// lease holder runs, apart from the live workers of a round, so any other `running` run is
    /// dead). [`Busy`] names the holder when
    /// the wait ends first.
    pub async fn acquire_writer(
        &self,
        command: &str,
        wait: Duration,
    ) -> anyhow::Result<WriterLease> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(lease) = self.try_writer_lease().await? {
                self.record_lease_holder(command).await?;
                let abandoned = self.abandon_dead_runs().await?;
                for run in abandoned {
                    tracing::warn!(
                        run_id = run,
                        "a run whose process died was still marked running; marked abandoned"
                    );
                }
                return Ok(lease);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Busy {
                    holder: self.current_lease_holder().await,
                    waited: wait,
                }
                .into());
            }
            tokio::time::sleep((deadline - now).min(Duration::from_millis(250))).await;
        }
    }

    /// The lease without waiting or bookkeeping; `None` when another holder has it (another
    /// process, or another holder in this one).
    pub async fn try_writer_lease(&self) -> anyhow::Result<Option<WriterLease>> {
        match &self.backend {
            Backend::Postgres(pool) => WriterLease::try_postgres(pool).await,
            Backend::Sqlite { path, .. } => WriterLease::try_sqlite(path),
        }
    }

    /// Notes the run the lease holder is doing, for a writer that finds the lease taken.
    pub async fn record_lease_run(&self, run_id: i64) -> anyhow::Result<()> {
        with_backend!(self, |pool, D| {
            sqlx::query("UPDATE writer_lease SET run_id = $1 WHERE id = 1")
                .bind(run_id)
                .execute(pool)
                .await
                .context("record_lease_run: updating writer_lease")?;
            Ok(())
        })
    }

    async fn record_lease_holder(&self, command: &str) -> anyhow::Result<()> {
        with_backend!(self, |pool, D| {
            sqlx::query(
                "INSERT INTO writer_lease (id, command, run_id, host, pid, since) \
                 VALUES (1, $1, NULL, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET \
                 command = excluded.command, run_id = NULL, host = excluded.host, \
                 pid = excluded.pid, since = excluded.since",
            )
            .bind(command)
            .bind(this_host())
            .bind(i64::from(std::process::id()))
            .bind(Utc::now())
            .execute(pool)
            .await
            .context("record_lease_holder: writing writer_lease")?;
            Ok(())
        })
    }

    /// Who holds (or last held) the writer lease.
    pub async fn lease_holder(&self) -> anyhow::Result<Option<LeaseHolder>> {
        with_backend!(self, |pool, D| {
            let row = sqlx::query(
                "SELECT command, run_id, host, pid, since FROM writer_lease WHERE id = 1",
            )
            .fetch_optional(pool)
            .await
            .context("lease_holder: reading writer_lease")?;
            row.map(|row| {
                Ok(LeaseHolder {
                    command: row.text("command")?,
                    run_id: row.opt_int("run_id")?,
                    host: row.text("host")?,
                    pid: row.int("pid")?,
                    since: row.time("since")?,
                })
            })
            .transpose()
        })
    }

    /// The holder of a lease found taken. It writes its row just after taking the lock, so a
    /// row that is missing, or left by a process of this host that is gone, is read again for a
    /// moment; `None` if it never shows.
    async fn current_lease_holder(&self) -> Option<LeaseHolder> {
        let host = this_host();
        for _ in 0..20 {
            if let Ok(Some(holder)) = self.lease_holder().await {
                let gone = holder.host == host
                    && std::path::Path::new("/proc/self").exists()
                    && !std::path::Path::new(&format!("/proc/{}", holder.pid)).exists();
                if !gone {
                    return Some(holder);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// Marks every run still `running` as `abandoned`; returns their ids. Call only while
    /// holding the writer lease. A worker of a round runs without the lease: while its
    /// heartbeat says it is alive (`round_workers`), its run is not taken for a dead one.
    async fn abandon_dead_runs(&self) -> anyhow::Result<Vec<i64>> {
        with_backend!(self, |pool, D| {
            sqlx::query_scalar(
                "UPDATE runs SET status = 'abandoned', finished_at = $1 \
                 WHERE status = 'running' \
                 AND id NOT IN (SELECT run_id FROM round_workers WHERE alive_until > $1) \
                 RETURNING id",
            )
            .bind(Utc::now())
            .fetch_all(pool)
            .await
            .context("abandon_dead_runs: updating runs")
        })
    }
}

/// Who holds the writer lease, as the holder recorded it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseHolder {
    pub command: String,
    pub run_id: Option<i64>,
    pub host: String,
    pub pid: i64,
    pub since: DateTime<Utc>,
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`tally {}`", self.command)?;
        if let Some(run) = self.run_id {
            write!(f, " (run {run})")?;
        }
        write!(
            f,
            " on host {}, pid {}, since {}",
            self.host,
            self.pid,
            self.since.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

/// Another process writes the ledger (exit code 4).
#[derive(Debug, thiserror::Error)]
pub struct Busy {
    pub holder: Option<LeaseHolder>,
    pub waited: Duration,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.holder {
            Some(holder) => write!(f, "another tally is writing the ledger: {holder}")?,
            None => write!(f, "another tally is writing the ledger")?,
        }
        write!(
            f,
            "; waited {} s. Try again when it has finished, or wait for it with --wait SECS",
            self.waited.as_secs()
        )
    }
}
