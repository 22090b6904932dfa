//! `[notify]`: where tally tells someone that a run needs a person — it failed, it ended with
//! exceptions, or it left lines waiting for approval — and how hard it tries. A webhook only;
//! its bearer token is a secret, read from `TALLY__NOTIFY__WEBHOOK_TOKEN` alone.
//!
//! Checked here with the rest of the configuration, so that a webhook that could never be
//! called (a typo in the URL, plain HTTP to another host) is refused at start-up rather than
//! found missing on the night a run fails.

use crate::problem::Problem;
use secrecy::SecretString;
use serde::Deserialize;

/// The environment variable of the webhook's bearer token.
pub const WEBHOOK_TOKEN_ENV: &str = "TALLY__NOTIFY__WEBHOOK_TOKEN";

/// When a run is worth telling about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// The run ended `failed` (a source or a push failed), or could not go on at all.
    Failed,
    /// The run ended with exceptions: records that could not be billed.
    Exceptions,
    /// The run left draft lines for `tally approve`.
    WaitingApproval,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 3] = [
        NotifyEvent::Failed,
        NotifyEvent::Exceptions,
        NotifyEvent::WaitingApproval,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Failed => "failed",
            NotifyEvent::Exceptions => "exceptions",
            NotifyEvent::WaitingApproval => "waiting_approval",
        }
    }
}

/// `[notify]`. Without `url`, nothing is sent.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySettings {
    /// The webhook: `https://...`, or `http://` to a loopback address (a local relay).
    pub url: Option<String>,
    /// Sent as `Authorization: Bearer ...`; from `TALLY__NOTIFY__WEBHOOK_TOKEN` only.
    pub webhook_token: Option<SecretString>,
    /// The events that send a notification (default all three).
    pub on: Vec<NotifyEvent>,
    /// Seconds one attempt may take.
    pub timeout_secs: u64,
    /// Attempts after the first, for a webhook that fails (5xx, 429, no answer).
    pub retries: u32,
    /// Milliseconds before the first retry, doubled for each next one.
    pub backoff_ms: u64,
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            url: None,
            webhook_token: None,
            on: NotifyEvent::ALL.to_vec(),
            timeout_secs: 10,
            retries: 3,
            backoff_ms: 1_000,
        }
    }
}

impl std::fmt::Debug for NotifySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifySettings")
            .field("url", &self.url.as_deref().map(webhook_origin))
            .field(
                "webhook_token",
                &self.webhook_token.as_ref().map(|_| "REDACTED"),
            )
            .field("on", &self.on)
            .field("timeout_secs", &self.timeout_secs)
            .field("retries", &self.retries)
            .field("backoff_ms", &self.backoff_ms)
            .finish()
    }
}

/// The most a notification may hold a run's end up: beyond it, a webhook is not worth waiting
/// for.
pub const MAX_TIMEOUT_SECS: u64 = 120;
pub const MAX_RETRIES: u32 = 10;

impl NotifySettings {
    /// Every problem of `[notify]`, each with its key.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Some(url) = &self.url
            && let Err(message) = check_webhook_url(url)
        {
            problems.push(Problem::new("notify.url", message));
        }
        if self.url.is_none() && self.webhook_token.is_some() {
            problems.push(Problem::new(
                WEBHOOK_TOKEN_ENV,
                "is set but notify.url is not: set the webhook's URL too, or unset the token",
            ));
        }
        if !(1..=MAX_TIMEOUT_SECS).contains(&self.timeout_secs) {
            problems.push(Problem::new(
                "notify.timeout_secs",
                format!(
                    "is {}: give one attempt between 1 and {MAX_TIMEOUT_SECS} seconds (default 10)",
                    self.timeout_secs
                ),
            ));
        }
        if self.retries > MAX_RETRIES {
            problems.push(Problem::new(
                "notify.retries",
                format!(
                    "is {}: at most {MAX_RETRIES} retries (default 3)",
                    self.retries
                ),
            ));
        }
        if self.backoff_ms > 60_000 {
            problems.push(Problem::new(
                "notify.backoff_ms",
                format!("is {} ms: at most 60000 (default 1000)", self.backoff_ms),
            ));
        }
        if self.url.is_some() && self.on.is_empty() {
            problems.push(Problem::new(
                "notify.on",
                "is empty, so nothing would ever be sent: list some of \"failed\", \"exceptions\", \"waiting_approval\", or remove notify.url",
            ));
        }
        problems
    }

    /// Whether a webhook is configured.
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }
}

/// `https://...` anywhere, or `http://` to this machine only (a run summary is not sent in
/// clear text over a network).
pub fn check_webhook_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| {
        format!(
            "{:?} is not a URL ({e}): write https://host/path",
            webhook_origin(url)
        )
    })?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&parsed) => Ok(()),
        "http" => Err(format!(
            "{} is plain HTTP to another machine: use https://, or http:// only to a loopback \
             address (127.0.0.1, [::1], localhost)",
            webhook_origin(url)
        )),
        other => Err(format!("scheme {other:?} is not a webhook's: use https://")),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The scheme, host and port of a webhook URL, for messages and logs: its path often is its
/// secret (a chat service's incoming-webhook URL), so it is never shown.
pub fn webhook_origin(url: &str) -> String {
    match reqwest::Url::parse(url.trim()) {
        Ok(parsed) => parsed.origin().ascii_serialization() + "/…",
        Err(_) => "(not a URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::env_var_for;

    #[test]
    fn a_webhook_is_https_or_plain_http_to_this_machine_only() {
        assert!(check_webhook_url("https://hooks.example.com/x").is_ok());
        assert!(check_webhook_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(check_webhook_url("http://localhost/hook").is_ok());
        assert!(check_webhook_url("http://[::1]:8080/").is_ok());
        let refused = check_webhook_url("http://hooks.example.com/T0/B0/s3cr3t").unwrap_err();
        assert!(refused.contains("plain HTTP"), "{refused}");
        assert!(
            !refused.contains("s3cr3t"),
            "the path is not shown: {refused}"
        );
        assert!(check_webhook_url("ftp://example.com/").is_err());
        assert!(check_webhook_url("hooks.example.com").is_err());
    }

    #[test]
    fn the_default_notifies_of_all_three_events_and_a_token_alone_is_refused() {
        let settings = NotifySettings::default();
        assert_eq!(settings.on, NotifyEvent::ALL.to_vec());
        assert!(settings.validate().is_empty());
        let token_only = NotifySettings {
            webhook_token: Some(SecretString::from("t")),
            ..NotifySettings::default()
        };
        let problems = token_only.validate();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].at, WEBHOOK_TOKEN_ENV);
        assert_eq!(env_var_for("notify.webhook_token"), WEBHOOK_TOKEN_ENV);
    }
}
