//! The end of a run in the log, as separate fields a log collector can filter and sum
//! (`status`, `period`, `records_read`, `lines_pushed`, ...), rather than the printed summary
//! as one multi-line string. The level says how it went: `info` completed, `warn` completed
//! with exceptions or interrupted, `error` failed.

use crate::domain::{RunStatus, RunSummary};

/// Logs `summary` as one event, `run summary`, with a field per figure, followed by one event
/// per failed source and per push error, each with its message.
///
/// `totals` is a JSON object of amounts (as strings) per currency, e.g.
/// `{"EUR":"2846.00","NOK":"945.00"}`: a log field's name cannot be a currency code, and a
/// collector parses the object in one step. `failed_sources` lists the failed sources' names,
/// comma-separated (empty when none).
pub fn log_summary(summary: &RunSummary) {
    let s = summary;
    let totals = serde_json::to_string(&s.totals).unwrap_or_default();
    let failed_sources = s
        .failed_sources
        .iter()
        .map(|f| f.source.as_str())
        .collect::<Vec<_>>()
        .join(",");
    macro_rules! summary_event {
        ($level:ident) => {
            tracing::$level!(
                run_id = s.run_id,
                status = s.status.as_str(),
                period = %s.period,
                dry_run = s.dry_run,
                records_read = s.records_read,
                lines_created = s.lines_created,
                lines_adjusted = s.lines_adjusted,
                lines_unchanged = s.lines_unchanged,
                lines_pushed = s.lines_pushed,
                lines_waiting_approval = s.lines_waiting_approval,
                lines_back_to_review = s.lines_back_to_review,
                lines_waiting_to_settle = s.lines_waiting_to_settle,
                exceptions = s.exceptions,
                totals = %totals,
                failed_sources = %failed_sources,
                push_errors = s.errors.len(),
                "run summary"
            )
        };
    }
    match s.status {
        RunStatus::Completed => summary_event!(info),
        RunStatus::CompletedWithExceptions | RunStatus::Interrupted => summary_event!(warn),
        _ => summary_event!(error),
    }
    for failure in &s.failed_sources {
        tracing::error!(run_id = s.run_id, period = %s.period, source = %failure.source,
            error = %failure.error, "source failed in this run");
    }
    for error in &s.errors {
        tracing::error!(run_id = s.run_id, period = %s.period, %error, "push error in this run");
    }
}
