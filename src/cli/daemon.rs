//! `tally daemon`: the nightly schedule from `[schedule]`, one run at a time under the writer
//! lease, until SIGTERM or SIGINT.

use super::{Load, listen_for_signals};
use crate::domain::{Period, Trigger};
use crate::pipeline::{self, App, RunOptions};
use std::sync::Arc;
use tokio_cron_scheduler::{Job, JobScheduler};
use tracing::{error, info, warn};

/// `tally daemon`.
pub async fn execute(load: Load<'_>) -> anyhow::Result<i32> {
    let settings = load()?;
    super::init_tracing(&settings, None);
    let app = App::build(settings).await?;
    listen_for_signals(&app.settings, &app.shutdown);
    run_daemon(Arc::new(app)).await?;
    Ok(super::exit::OK)
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
    let period = Period::previous_in(chrono::Utc::now(), app.settings.general.tz());
    let options = RunOptions {
        period,
        source: None,
        dry_run: false,
        trigger: Trigger::Schedule,
        customer: None,
        requested_by: None,
    };
    match pipeline::run(app, &options).await {
        Ok(report) => {
            info!(summary = %super::render::summary_text(&report.summary), "scheduled run finished")
        }
        Err(e) => {
            error!(error = %format!("{e:#}"), %period, "scheduled run failed; the next run resumes from its checkpoints")
        }
    }
}
