//! The two-phase push (DESIGN.md): mark `pushing` with the sink's marker (commit) → send →
//! mark `pushed` with the external id (commit). A revision found `pushing` is resolved by
//! reading the billing system before anything is sent again, so a crash at any instant
//! neither loses nor duplicates a line.

use super::{App, SimulatedCrash};
use crate::domain::{LineStatus, Period, SourceName};
use crate::sinks::PushError;
use std::time::Duration;
use tracing::{error, info, instrument, warn};

/// What a push did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PushOutcome {
    /// Revisions the billing systems now hold that the ledger did not record as pushed before.
    pub pushed: u64,
    /// Revisions that could not be pushed, one message each; they stay retriable.
    pub errors: Vec<String>,
}

/// How long to wait after an uncertain answer before reading the billing system, so that a
/// request still in flight has landed.
const SETTLE: Duration = Duration::from_secs(1);

/// Pushes every approved revision of the period (of some sources only, if given) and
/// resolves every revision left `pushing`. `Err` only when the ledger itself cannot be written.
#[instrument(skip_all, fields(%period))]
pub async fn push_period(
    app: &App,
    period: Period,
    sources: Option<&[SourceName]>,
) -> anyhow::Result<PushOutcome> {
    let mut outcome = PushOutcome::default();
    let mut accepted = 0u64;
    // Lines left `pushing` are resolved before anything new is sent, so that a sink that
    // recognises its own writes by what is new since a marker never sees two at once.
    let mut lines = app.store.lines_to_push(period, sources).await?;
    lines.sort_by_key(|l| l.status != LineStatus::Pushing);
    for line in lines {
        let Some(sink) = app.sink(&line.sink) else {
            let message = format!(
                "{}: billing system {:?} is not configured any more; configure it or re-route the account",
                line.idempotency_key, line.sink
            );
            app.store.record_push_error(line.id, &message).await?;
            outcome.errors.push(message);
            continue;
        };
        let mut line = line;
        if line.status == LineStatus::Pushing {
            // Phase one committed earlier, phase two never happened: ask the billing system.
            match sink.find(&line).await {
                Ok(Some(external_id)) => {
                    info!(key = %line.idempotency_key, %external_id, "recovered: the billing system already holds this revision");
                    app.store.mark_pushed(line.id, &external_id).await?;
                    outcome.pushed += 1;
                    continue;
                }
                Ok(None) => {
                    info!(key = %line.idempotency_key, "recovered: the billing system does not hold this revision; sending it again");
                    app.store.reset_to_approved(line.id).await?;
                    line.status = LineStatus::Approved;
                }
                Err(e) => {
                    let message = format!(
                        "{}: cannot tell whether {} holds it: {e:#}",
                        line.idempotency_key, line.sink
                    );
                    error!(%message, "revision left pushing; an operator must check the billing system");
                    app.store.record_push_error(line.id, &message).await?;
                    outcome.errors.push(message);
                    continue;
                }
            }
        }
        if line.status != LineStatus::Approved {
            continue;
        }
        let marker = match sink.prepare(&line).await {
            Ok(marker) => marker,
            Err(e) => {
                let message = format!("{}: {e:#}", line.idempotency_key);
                app.store.record_push_error(line.id, &message).await?;
                outcome.errors.push(message);
                continue;
            }
        };
        app.store.mark_pushing(line.id, marker.as_deref()).await?;
        line.status = LineStatus::Pushing;
        line.push_marker = marker;
        match sink.push(&line).await {
            Ok(external_id) => {
                accepted += 1;
                if app.faults.crash_after_accepted_pushes == Some(accepted) {
                    return Err(SimulatedCrash(format!(
                        "after the billing system accepted {accepted} revision(s), before the ledger recorded it"
                    ))
                    .into());
                }
                app.store.mark_pushed(line.id, &external_id).await?;
                outcome.pushed += 1;
            }
            Err(PushError::Rejected(reason)) => {
                let message = format!(
                    "{} refused by {}: {reason}",
                    line.idempotency_key, line.sink
                );
                warn!(%message, "push refused; the line stays approved and is retried on the next run");
                app.store.reset_to_approved(line.id).await?;
                app.store.record_push_error(line.id, &message).await?;
                outcome.errors.push(message);
            }
            Err(PushError::Uncertain(reason)) => {
                tokio::time::sleep(SETTLE).await;
                match sink.find(&line).await {
                    Ok(Some(external_id)) => {
                        info!(key = %line.idempotency_key, %external_id, "the answer was lost but the billing system holds the revision");
                        app.store.mark_pushed(line.id, &external_id).await?;
                        outcome.pushed += 1;
                    }
                    other => {
                        // Not found yet, or unreadable: never send blindly; the next run reads
                        // the billing system again before deciding.
                        let detail = match other {
                            Err(e) => format!("; reading it back failed too: {e:#}"),
                            _ => String::new(),
                        };
                        let message = format!(
                            "{}: {} did not confirm the push ({reason}){detail}; left pushing, resolved on the next run",
                            line.idempotency_key, line.sink
                        );
                        warn!(%message, "uncertain push");
                        app.store.record_push_error(line.id, &message).await?;
                        outcome.errors.push(message);
                    }
                }
            }
        }
    }
    Ok(outcome)
}
