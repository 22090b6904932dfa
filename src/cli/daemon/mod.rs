//! `tally daemon`: the jobs of `[schedule]`, each on its own cron expression and time zone,
//! until SIGTERM or SIGINT; `/healthz` and `/metrics` on `[daemon] listen`.
//!
//! The daemon waits for each job's next fire time itself (tokio timers), from times computed
//! by `schedule::clock` — not by tokio-cron-scheduler, which cannot be handed a clock and whose
//! zone-aware jobs are reported an hour off after a DST change (its issue #107). Each tick is
//! claimed in the store first, so that any number of daemons on one database run it once
//! between them; the run itself still takes the writer lease.

mod server;
mod tick;

use super::{Load, listen_for_signals};
use crate::config::Job;
use crate::pipeline::App;
use crate::schedule::CronSchedule;
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// The test hook: an RFC 3339 instant the daemon's clock starts at (it then runs on at the
/// real pace). Read by the daemon only; documented in docs/OPERATIONS.md as a test hook.
pub const CLOCK_NOW_ENV: &str = "TALLY_CLOCK_NOW";

/// `tally daemon`.
pub async fn execute(load: Load<'_>) -> anyhow::Result<i32> {
    let settings = load()?;
    super::init_tracing(&settings, None);
    let clock = Clock::from_env()?;
    let app = App::build(settings).await?;
    listen_for_signals(&app.settings, &app.shutdown);
    run_daemon(Arc::new(app), clock).await?;
    Ok(super::exit::OK)
}

/// The daemon's "now": the system clock, shifted by [`CLOCK_NOW_ENV`] when a test sets it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    offset: chrono::Duration,
}

impl Clock {
    /// The system clock, or the one [`CLOCK_NOW_ENV`] starts.
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var(CLOCK_NOW_ENV) {
            Ok(text) if !text.trim().is_empty() => {
                let start = DateTime::parse_from_rfc3339(text.trim()).with_context(|| {
                    format!("{CLOCK_NOW_ENV}={text:?}: expected an RFC 3339 instant such as 2026-11-02T01:00:00Z")
                })?;
                Ok(Self::starting_at(start.with_timezone(&Utc)))
            }
            _ => Ok(Self::default()),
        }
    }

    /// A clock that reads `start` now and runs on at the real pace.
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        Self {
            offset: start - Utc::now(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }

    /// How long from now until `at` on this clock, as a timer waits it.
    fn until(&self, at: DateTime<Utc>) -> std::time::Duration {
        (at - self.now()).to_std().unwrap_or_default()
    }
}

/// What the daemon shares between its jobs and its HTTP endpoints.
pub(crate) struct Daemon {
    app: Arc<App>,
    clock: Clock,
    jobs: Vec<Job>,
    /// Each job's next fire time, as `jobs` orders them.
    next: Mutex<Vec<Option<DateTime<Utc>>>>,
    /// One run at a time in this process (across processes: the tick claim and the lease).
    running: tokio::sync::Mutex<()>,
}

/// `tally daemon`: every job of `[schedule]` on its own timer until a stop is requested
/// (`app.shutdown`: SIGTERM or SIGINT); a run in progress stops at its next safe point and is
/// recorded as interrupted.
pub async fn run_daemon(app: Arc<App>, clock: Clock) -> anyhow::Result<()> {
    let jobs = app
        .settings
        .schedule
        .jobs(&app.settings.general.timezone)
        .map_err(crate::problem::ConfigError)?;
    let daemon = Arc::new(Daemon {
        next: Mutex::new(vec![None; jobs.len()]),
        app: app.clone(),
        clock,
        jobs,
        running: tokio::sync::Mutex::new(()),
    });
    let metrics = server::install_metrics();
    let server = match app
        .settings
        .daemon
        .address()
        .map_err(|p| crate::problem::ConfigError(vec![p]))?
    {
        Some(address) => Some(server::serve(daemon.clone(), metrics, address).await?),
        None => {
            info!("daemon.listen is empty: no /healthz or /metrics");
            None
        }
    };
    info!(
        jobs = daemon.jobs.len(),
        now = %clock.now().to_rfc3339(),
        "daemon started; waiting for the schedule"
    );
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..daemon.jobs.len() {
        tasks.spawn(job_loop(daemon.clone(), index));
    }
    app.shutdown.wait().await;
    info!("shutting down; waiting for a run in progress to stop");
    while tasks.join_next().await.is_some() {}
    if let Some(server) = server {
        let _ = server.await;
    }
    Ok(())
}

/// One job: wait for its next fire time, run the tick, and again, until a stop is requested.
async fn job_loop(daemon: Arc<Daemon>, index: usize) {
    let job = &daemon.jobs[index];
    let schedule = match CronSchedule::parse(&job.cron) {
        Ok(schedule) => schedule,
        Err(message) => {
            // Checked at start-up; kept so that this can never panic.
            warn!(job = %job.name, %message, "the job cannot run");
            return;
        }
    };
    let mut after = daemon.clock.now();
    loop {
        let Some(fire) = schedule.next_fire(job.timezone, after) else {
            warn!(job = %job.name, cron = %job.cron, "the job's cron expression never fires again");
            daemon.set_next(index, None);
            return;
        };
        daemon.set_next(index, Some(fire));
        info!(
            job = %job.name,
            next_run_local = %fire.with_timezone(&job.timezone).format("%Y-%m-%d %H:%M:%S %Z"),
            next_run_utc = %fire.format("%Y-%m-%dT%H:%M:%SZ"),
            timezone = %job.timezone,
            "job {} runs next at {} ({})",
            job.name,
            fire.with_timezone(&job.timezone).format("%Y-%m-%d %H:%M:%S %Z"),
            fire.format("%Y-%m-%dT%H:%M:%SZ"),
        );
        if !daemon.app.shutdown.sleep(daemon.clock.until(fire)).await {
            return;
        }
        tick::tick(&daemon, job, fire).await;
        if daemon.app.shutdown.requested() {
            return;
        }
        // A tick that ran past the next fire time skips it: the next run catches up.
        after = fire.max(daemon.clock.now());
    }
}

impl Daemon {
    fn set_next(&self, index: usize, at: Option<DateTime<Utc>>) {
        if let Ok(mut next) = self.next.lock() {
            next[index] = at;
        }
        if let Some(at) = at {
            metrics::gauge!("tally_job_next_run_timestamp_seconds", "job" => self.jobs[index].name.clone())
                .set(at.timestamp() as f64);
        }
    }

    fn next_of(&self, index: usize) -> Option<DateTime<Utc>> {
        self.next.lock().ok().and_then(|next| next[index])
    }
}
