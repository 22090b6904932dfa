//! `tally run --worker`: one worker of a round shared with others on the same Postgres
//! (`pipeline::workers`), its output and its exit code.

use super::exit_code_of;
use super::run::{OutputFormat, RunArgs, note_if_closed, options, print_report};
use crate::domain::{Period, Trigger};
use crate::pipeline::App;
use crate::pipeline::workers::{self, RoundOptions, WorkerReport};
use std::time::Duration;

/// Runs one worker of the round. Exit code: the pricing run's when this worker priced the round,
/// else the worker's own (0 once its units are extracted and the round is priced by another).
pub async fn execute(app: &App, args: &RunArgs) -> anyhow::Result<i32> {
    let now = chrono::Utc::now();
    let period = args
        .period
        .unwrap_or_else(|| Period::previous_in(now, app.settings.general.tz()));
    note_if_closed(app, period).await?;
    let lease = Duration::from_secs(args.lease_secs);
    let round = RoundOptions {
        round: args
            .round
            .clone()
            .unwrap_or_else(|| RoundOptions::default_name(period, now.date_naive())),
        lease,
        // Often enough that a waiting worker is quick to see the round priced, a small fraction
        // of the lease so that a freed unit is taken soon after it runs out.
        poll: (lease / 20).clamp(Duration::from_millis(100), Duration::from_secs(2)),
    };
    let asked = options(args, period, Trigger::Manual);
    let work = workers::run_worker(app, &asked, &round);
    let report = crate::observe::with_progress_bar(args.output == OutputFormat::Text, work).await?;
    crate::observe::log_summary(&report.worker);
    if let Some(priced) = &report.priced {
        crate::observe::log_summary(&priced.summary);
    }
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&json(&report))?),
        OutputFormat::Text => print_text(args, &report),
    }
    Ok(exit_code_of(
        report
            .priced
            .as_ref()
            .map_or(report.worker.status, |p| p.summary.status),
    ))
}

fn json(report: &WorkerReport) -> serde_json::Value {
    serde_json::json!({
        "round": report.round,
        "units_extracted": report.units,
        "worker": report.worker,
        "priced": report.priced.as_ref().map(|p| &p.summary),
        "priced_by_run": report.priced_by,
    })
}

fn print_text(args: &RunArgs, report: &WorkerReport) {
    let run = report
        .worker
        .run_id
        .map_or_else(String::new, |id| format!(" (run {id})"));
    println!(
        "worker{run} of round {}: extracted {} scope(s), {} record(s); {}",
        report.round, report.units, report.worker.records_read, report.worker.status
    );
    for failure in &report.worker.failed_sources {
        println!("  failed: {}: {}", failure.source, failure.error);
    }
    match (&report.priced, report.priced_by) {
        (Some(priced), _) => {
            println!("this worker priced, reconciled and pushed the round:");
            print_report(args, priced);
        }
        (None, Some(by)) => println!("the round was priced, reconciled and pushed by run {by}"),
        (None, None) => println!(
            "the round is not priced yet: the other workers (or the next one started with \
             --round {}) finish it",
            report.round
        ),
    }
}
