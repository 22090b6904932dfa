//! Telling a person when a run needs one: a webhook called after a run that failed, ended with
//! exceptions, or left lines waiting for approval (`[notify]`), with the run's summary.
//!
//! The run is what matters, the notification only reports it: a webhook that fails is logged
//! and retried with backoff (through the one HTTP client, each attempt bounded by
//! `notify.timeout_secs`), and never fails the run or changes its exit code. It is called in one
//! place, at the end of `pipeline::run`, so that `tally run` and `tally daemon` both notify.
//! The webhook's path is treated as a secret (chat services put theirs there): logs show its
//! origin only.

use crate::config::{NotifyEvent, NotifySettings, WEBHOOK_TOKEN_ENV, webhook_origin};
use crate::domain::{Period, RunStatus, RunSummary, Trigger};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::time::Duration;
use tracing::{info, warn};

/// The events a finished run is worth telling about, most pressing first.
pub fn events_of(summary: &RunSummary) -> Vec<NotifyEvent> {
    let mut events = Vec::new();
    if summary.status == RunStatus::Failed {
        events.push(NotifyEvent::Failed);
    }
    if summary.exceptions > 0 {
        events.push(NotifyEvent::Exceptions);
    }
    if summary.lines_waiting_approval > 0 || summary.lines_back_to_review > 0 {
        events.push(NotifyEvent::WaitingApproval);
    }
    events
}

/// The notification of a run: its most pressing event that `on` lists, every event that
/// applies, who started it, the summary (`null` when the run could not go on at all) and a
/// short text for a chat message. `None` when nothing `on` lists happened.
pub fn payload(
    on: &[NotifyEvent],
    trigger: Trigger,
    period: Period,
    outcome: Result<&RunSummary, &anyhow::Error>,
) -> Option<Value> {
    let (events, run_id, status, summary, text) = match outcome {
        Ok(summary) => (
            events_of(summary),
            summary.run_id,
            summary.status.as_str(),
            serde_json::to_value(summary).unwrap_or(Value::Null),
            text_of(summary),
        ),
        Err(error) => (
            vec![NotifyEvent::Failed],
            None,
            RunStatus::Failed.as_str(),
            Value::Null,
            format!(
                "tally run of {period} could not go on: {}",
                shorten(&format!("{error:#}"))
            ),
        ),
    };
    let event = events.iter().find(|e| on.contains(e))?;
    Some(json!({
        "event": event.as_str(),
        "events": events.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
        "run_id": run_id,
        "status": status,
        "period": period.to_string(),
        "trigger": serde_json::to_value(trigger).unwrap_or(Value::Null),
        "summary": summary,
        "text": text,
    }))
}

/// One or two sentences an operator reads on a phone.
fn text_of(summary: &RunSummary) -> String {
    let run = match summary.run_id {
        Some(id) => format!("tally run {id} of {}", summary.period),
        None => format!("tally run of {}", summary.period),
    };
    let mut parts = vec![format!("{run} ended {}", summary.status)];
    for failure in &summary.failed_sources {
        parts.push(format!(
            "source {} failed: {}",
            failure.source,
            shorten(&failure.error)
        ));
    }
    for error in summary.errors.iter().take(3) {
        parts.push(shorten(error));
    }
    if summary.exceptions > 0 {
        parts.push(format!(
            "{} exception(s) not billed (tally lines --period {} --exceptions)",
            summary.exceptions, summary.period
        ));
    }
    let waiting = summary.lines_waiting_approval + summary.lines_back_to_review;
    if waiting > 0 {
        parts.push(format!(
            "{waiting} line(s) wait for approval (tally approve --period {})",
            summary.period
        ));
    }
    parts.join("; ")
}

/// At most 300 characters of a message, on a character boundary.
fn shorten(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// After a run: sends its notification if `[notify]` asks for one. Never fails: a webhook
/// that cannot be reached after its retries is logged, and the run's result stands.
pub async fn after_run(
    settings: &NotifySettings,
    trigger: Trigger,
    period: Period,
    outcome: Result<&RunSummary, &anyhow::Error>,
) {
    let Some(url) = settings.url.as_deref() else {
        return;
    };
    let Some(body) = payload(&settings.on, trigger, period, outcome) else {
        return;
    };
    let shown = webhook_origin(url);
    match send(settings, url, &body).await {
        Ok(()) => info!(webhook = %shown, event = %body["event"], "notification sent"),
        Err(error) => warn!(
            webhook = %shown,
            event = %body["event"],
            error = %error,
            "the notification could not be sent; the run's result stands"
        ),
    }
}

/// POSTs `body` as JSON, retried with backoff (doubled each time) on 5xx, 429 and no answer
/// within `notify.timeout_secs`. Its own small loop rather than the connectors' client, so that
/// nothing it logs names more of the webhook than its origin.
pub async fn send(settings: &NotifySettings, url: &str, body: &Value) -> Result<(), String> {
    let shown = webhook_origin(url);
    let target = reqwest::Url::parse(url.trim()).map_err(|e| format!("notify.url: {e}"))?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(settings.timeout_secs))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tally/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))?;
    let mut backoff = Duration::from_millis(settings.backoff_ms);
    let mut attempt = 0;
    loop {
        let mut request = client.post(target.clone()).json(body);
        if let Some(token) = &settings.webhook_token {
            request = request.bearer_auth(token.expose_secret());
        }
        let (failure, retriable) = match request.send().await {
            Ok(answer) if answer.status().is_success() => return Ok(()),
            Ok(answer) => {
                let status = answer.status();
                let hint = if status.as_u16() == 401 || status.as_u16() == 403 {
                    format!(": check the environment variable {WEBHOOK_TOKEN_ENV}")
                } else {
                    String::new()
                };
                (
                    format!("{shown} answered {status}{hint}"),
                    status.is_server_error() || status.as_u16() == 429,
                )
            }
            Err(e) if e.is_timeout() => (
                format!(
                    "{shown} did not answer within {} s (notify.timeout_secs)",
                    settings.timeout_secs
                ),
                true,
            ),
            Err(e) => (
                format!("{shown} could not be reached: {}", reason(&e)),
                true,
            ),
        };
        if !retriable || attempt >= settings.retries {
            return Err(failure);
        }
        attempt += 1;
        warn!(webhook = %shown, error = %failure, attempt, wait_ms = backoff.as_millis() as u64, "notification failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2);
    }
}

/// Why a request got no answer, without its URL.
fn reason(error: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = String::new();
    let mut cause = error.source();
    while let Some(inner) = cause {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    if text.is_empty() {
        "no answer".to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn summary(status: RunStatus, exceptions: u64, waiting: u64) -> RunSummary {
        RunSummary {
            run_id: Some(7),
            status,
            period: "2026-10".parse().unwrap(),
            dry_run: false,
            records_read: 10,
            lines_created: 2,
            lines_adjusted: 0,
            lines_unchanged: 0,
            lines_pushed: 2,
            lines_waiting_approval: waiting,
            lines_back_to_review: 0,
            lines_waiting_to_settle: 0,
            exceptions,
            totals: BTreeMap::new(),
            failed_sources: Vec::new(),
            errors: Vec::new(),
            sources: Vec::new(),
            warnings: Vec::new(),
            totals_partial: false,
            customer: None,
        }
    }

    #[test]
    fn a_run_is_told_by_its_most_pressing_event_that_on_lists() {
        let period = "2026-10".parse().unwrap();
        let all = NotifyEvent::ALL;
        let ok = summary(RunStatus::Completed, 0, 0);
        assert!(payload(&all, Trigger::Schedule, period, Ok(&ok)).is_none());

        let both = summary(RunStatus::CompletedWithExceptions, 2, 3);
        let sent = payload(&all, Trigger::Schedule, period, Ok(&both)).unwrap();
        assert_eq!(sent["event"], "exceptions");
        assert_eq!(sent["events"], json!(["exceptions", "waiting_approval"]));
        assert_eq!(sent["run_id"], 7);
        assert_eq!(sent["trigger"], "schedule");
        assert_eq!(sent["summary"]["records_read"], 10);
        let text = sent["text"].as_str().unwrap();
        assert!(text.contains("2 exception(s)"), "{text}");
        assert!(text.contains("3 line(s) wait for approval"), "{text}");

        let only_approval = [NotifyEvent::WaitingApproval];
        let sent = payload(&only_approval, Trigger::Manual, period, Ok(&both)).unwrap();
        assert_eq!(sent["event"], "waiting_approval");
        assert!(payload(&[NotifyEvent::Failed], Trigger::Manual, period, Ok(&both)).is_none());
    }

    #[test]
    fn a_run_that_could_not_go_on_is_a_failure_without_a_summary() {
        let period = "2026-10".parse().unwrap();
        let error = anyhow::anyhow!("database is down");
        let sent = payload(&NotifyEvent::ALL, Trigger::Manual, period, Err(&error)).unwrap();
        assert_eq!(sent["event"], "failed");
        assert_eq!(sent["status"], "failed");
        assert!(sent["summary"].is_null());
        assert!(sent["text"].as_str().unwrap().contains("database is down"));
    }

    #[test]
    fn long_messages_are_shortened_on_a_character_boundary() {
        let long = "é".repeat(400);
        let short = shorten(&long);
        assert_eq!(short.chars().count(), 301);
    }
}
