//! The nightly schedule of `tally daemon` (tokio-cron-scheduler).

use crate::domain::{Period, Trigger};
use crate::pipeline::{self, App, RunOptions};
use std::sync::Arc;
use tokio_cron_scheduler::{Job, JobScheduler};
use tracing::{error, info, warn};

/// Checks a cron expression with the parser the daemon uses, so that a bad one fails at
/// start-up (`tally check-config`) and not at midnight.
pub fn check_cron(expression: &str) -> Result<(), String> {
    Job::new_async_tz(expression, chrono::Utc, |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|_| {
            format!(
                "invalid cron expression {expression:?}: expected six fields with seconds, `sec min hour day-of-month month day-of-week`, e.g. \"0 30 2 * * *\" for 02:30 every night"
            )
        })
}

/// `tally daemon`: runs the previous month every time the cron expression fires, one run at a
/// time (in this process by a mutex, across processes by the store's writer lease), until
/// a stop is requested (`app.shutdown`: SIGTERM or SIGINT); a run in progress stops at its next
/// safe point and is recorded as interrupted.
pub async fn run_daemon(app: Arc<App>) -> anyhow::Result<()> {
    let schedule = &app.settings.schedule;
    let tz: chrono_tz::Tz = schedule.timezone.parse().map_err(|_| {
        anyhow::anyhow!(
            "schedule.timezone: unknown time zone {:?}",
            schedule.timezone
        )
    })?;
    let running = Arc::new(tokio::sync::Mutex::new(()));
    let scheduler = JobScheduler::new().await?;
    let job_app = app.clone();
    let job_running = running.clone();
    let job = Job::new_async_tz(schedule.cron.as_str(), tz, move |_, _| {
        let app = job_app.clone();
        let running = job_running.clone();
        Box::pin(async move {
            let Ok(_guard) = running.try_lock() else {
                warn!("the previous scheduled run is still going; skipping this one");
                return;
            };
            scheduled_run(&app).await;
        })
    })
    .map_err(|_| anyhow::anyhow!("schedule.cron: invalid cron expression {:?}", schedule.cron))?;
    scheduler.add(job).await?;
    scheduler.start().await?;
    info!(cron = %schedule.cron, timezone = %schedule.timezone, "daemon started; waiting for the schedule");
    app.shutdown.wait().await;
    info!("shutting down; waiting for a run in progress to stop");
    let _finished = running.lock().await;
    let mut scheduler = scheduler;
    scheduler.shutdown().await?;
    Ok(())
}

/// One scheduled run of the previous month, under the writer lease.
async fn scheduled_run(app: &App) {
    // Held (not read) until the run ends: dropping it releases the lease.
    let _lease = match app
        .store
        .acquire_writer("daemon", std::time::Duration::ZERO)
        .await
    {
        Ok(lease) => lease,
        Err(e) => {
            warn!(error = %format!("{e:#}"), "this scheduled run is skipped; the next one catches up");
            return;
        }
    };
    let period = Period::containing(chrono::Utc::now(), app.settings.general.tz()).previous();
    let options = RunOptions {
        period,
        source: None,
        dry_run: false,
        trigger: Trigger::Schedule,
    };
    match pipeline::run(app, &options).await {
        Ok(report) => {
            info!(summary = %crate::report::summary_text(&report.summary), "scheduled run finished")
        }
        Err(e) => {
            error!(error = %format!("{e:#}"), %period, "scheduled run failed; the next run resumes from its checkpoints")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_expressions_are_checked_with_the_daemon_parser() {
        assert!(check_cron("0 30 2 * * *").is_ok());
        assert!(
            check_cron("30 2 * * *").is_err(),
            "five fields lack the seconds"
        );
        assert!(check_cron("every night").is_err());
    }
}
