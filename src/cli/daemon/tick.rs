//! One tick of a job: claimed in the store (one daemon among all runs it), then under the
//! writer lease the month to date (lines kept as drafts) and the previous month (billed inside
//! the late-data window, closed after it), each run counted in the metrics.

use super::Daemon;
use crate::config::{Job, JobTask};
use crate::domain::{Period, RunStatus, RunSummary, Trigger};
use crate::pipeline::{self, RunOptions};
use crate::schedule::{Months, late_window_end, months_at};
use crate::store::TickClaim;
use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

/// Runs `job`'s tick that fired at `fire`, unless another daemon claimed it.
pub(super) async fn tick(daemon: &Daemon, job: &Job, fire: DateTime<Utc>) {
    let store = &daemon.app.store;
    let at = fire.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    match store.claim_tick(&job.name, fire).await {
        Ok(TickClaim::Won) => {}
        Ok(TickClaim::Taken { host, pid }) => {
            info!(job = %job.name, fire_at = %at, %host, pid,
                "skipping this tick: another daemon runs it ({host}, pid {pid})");
            return;
        }
        Err(e) => {
            warn!(job = %job.name, fire_at = %at, error = %format!("{e:#}"),
                "skipping this tick: it could not be claimed in the store; the next one catches up");
            return;
        }
    }
    // Jobs of one daemon run one at a time: a tick that fires during another job's run waits.
    let _running = tokio::select! {
        guard = daemon.running.lock() => guard,
        _ = daemon.app.shutdown.wait() => return,
    };
    // Held (not read) until the tick ends: dropping it releases the lease.
    let _lease = match store
        .acquire_writer("daemon", std::time::Duration::ZERO)
        .await
    {
        Ok(lease) => lease,
        Err(e) => {
            warn!(job = %job.name, error = %format!("{e:#}"), "skipping this tick: the writer lease is taken; the next one catches up");
            note(daemon, job, fire, None, "skipped").await;
            return;
        }
    };
    let settings = &daemon.app.settings;
    let months = months_at(
        fire,
        settings.general.tz(),
        settings.schedule.late_data_days,
    );
    if matches!(job.task, JobTask::Nightly | JobTask::MonthToDate) {
        month_to_date(daemon, job, fire, months.current).await;
    }
    if daemon.app.shutdown.requested() {
        return;
    }
    if matches!(job.task, JobTask::Nightly | JobTask::PreviousMonth) {
        previous_month(daemon, job, fire, months).await;
    }
}

/// Syncs the month to date; its lines stay drafts, nothing is pushed.
async fn month_to_date(daemon: &Daemon, job: &Job, fire: DateTime<Utc>, period: Period) {
    if is_closed(daemon, job, period).await {
        return;
    }
    let options = options(period);
    let result = pipeline::run_holding_drafts(&daemon.app, &options).await;
    finished(
        daemon,
        job,
        fire,
        period,
        "month to date, kept as drafts",
        result,
    )
    .await;
}

/// Inside the late-data window, runs the previous month as `tally run` would; after it,
/// closes that month.
async fn previous_month(daemon: &Daemon, job: &Job, fire: DateTime<Utc>, months: Months) {
    let period = months.previous;
    if is_closed(daemon, job, period).await {
        return;
    }
    let settings = &daemon.app.settings;
    if months.in_late_window {
        let result = pipeline::run(&daemon.app, &options(period)).await;
        finished(daemon, job, fire, period, "previous month", result).await;
        return;
    }
    let store = &daemon.app.store;
    match store
        .close_period(period, &format!("job:{}", job.name))
        .await
    {
        Ok(_) => {
            let window_end = late_window_end(
                period,
                settings.general.tz(),
                settings.schedule.late_data_days,
            );
            info!(job = %job.name, %period, late_window_ended = %window_end.to_rfc3339(),
                "closed {period}: its late-data window is over; scheduled runs leave it alone (a manual `tally run --period {period}` still may)");
            note(daemon, job, fire, None, "closed").await;
            match store.count_drafts(period, None).await {
                Ok(0) => {}
                Ok(drafts) => warn!(job = %job.name, %period, drafts,
                    "{period} was closed with {drafts} line(s) still drafts: approve them with `tally approve --period {period}`, or bill them with `tally run --period {period}`"),
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "could not count the closed month's drafts")
                }
            }
        }
        Err(e) => {
            error!(job = %job.name, %period, error = %format!("{e:#}"), "could not close the month; the next tick tries again");
        }
    }
}

/// Whether `period` is closed; logs that the tick leaves it alone when it is.
async fn is_closed(daemon: &Daemon, job: &Job, period: Period) -> bool {
    match daemon.app.store.closed_period(period).await {
        Ok(Some(closed)) => {
            info!(job = %job.name, %period, closed_by = %closed.closed_by,
                closed_at = %closed.closed_at.to_rfc3339(),
                "{period} is closed; this scheduled run leaves it alone");
            true
        }
        Ok(None) => false,
        Err(e) => {
            warn!(job = %job.name, %period, error = %format!("{e:#}"),
                "could not read whether {period} is closed; leaving it alone this tick");
            true
        }
    }
}

fn options(period: Period) -> RunOptions {
    RunOptions {
        period,
        source: None,
        dry_run: false,
        trigger: Trigger::Schedule,
        customer: None,
        requested_by: None,
    }
}

/// Logs a scheduled run's end, notes it on the tick and counts it in the metrics.
async fn finished(
    daemon: &Daemon,
    job: &Job,
    fire: DateTime<Utc>,
    period: Period,
    what: &str,
    result: anyhow::Result<pipeline::RunReport>,
) {
    let name = job.name.clone();
    match result {
        Ok(report) => {
            let summary = &report.summary;
            info!(job = %name, %period, run = what, "scheduled run finished");
            crate::observe::log_summary(summary);
            note(daemon, job, fire, summary.run_id, summary.status.as_str()).await;
            count(&name, summary, daemon.clock.now());
        }
        Err(e) => {
            error!(job = %name, %period, run = what, error = %format!("{e:#}"), "scheduled run failed; the next run resumes from its checkpoints");
            note(daemon, job, fire, None, RunStatus::Failed.as_str()).await;
            metrics::counter!("tally_runs_total", "job" => name, "status" => RunStatus::Failed.as_str())
                .increment(1);
        }
    }
}

/// Notes on the tick's claim what it did, for `/healthz` of any instance.
async fn note(daemon: &Daemon, job: &Job, fire: DateTime<Utc>, run_id: Option<i64>, status: &str) {
    if let Err(e) = daemon
        .app
        .store
        .record_tick_run(&job.name, fire, run_id, status)
        .await
    {
        warn!(job = %job.name, error = %format!("{e:#}"), "could not note the tick's run in the store");
    }
}

/// The metrics of one finished run (docs/OPERATIONS.md, "Health and metrics").
fn count(job: &str, summary: &RunSummary, now: DateTime<Utc>) {
    let job = job.to_owned();
    metrics::counter!("tally_runs_total", "job" => job.clone(), "status" => summary.status.as_str())
        .increment(1);
    metrics::counter!("tally_records_read_total", "job" => job.clone())
        .increment(summary.records_read);
    metrics::counter!("tally_lines_pushed_total", "job" => job.clone())
        .increment(summary.lines_pushed);
    metrics::counter!("tally_exceptions_total", "job" => job.clone()).increment(summary.exceptions);
    metrics::counter!("tally_push_failures_total", "job" => job.clone())
        .increment(summary.errors.len() as u64);
    if matches!(
        summary.status,
        RunStatus::Completed | RunStatus::CompletedWithExceptions
    ) {
        metrics::gauge!("tally_job_last_success_timestamp_seconds", "job" => job)
            .set(now.timestamp() as f64);
    }
}
