//! The `http` table of each source and sink: timeouts, retries and the bounds of waiting, and
//! their checks.

use serde::Deserialize;

/// Retry and timeout settings of one connector (`[sources.X.http]` / `[sinks.X.http]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Seconds before one request is abandoned (and retried, if it may be).
    pub timeout_secs: u64,
    /// Retries after the first attempt, for retriable failures.
    pub max_retries: u32,
    /// First backoff in milliseconds; doubled on every retry, with jitter.
    pub backoff_ms: u64,
    /// Longest backoff between two attempts, in milliseconds.
    pub max_backoff_ms: u64,
    /// Longest `Retry-After` (seconds) tally waits for; a peer asking for more fails the call.
    /// A used-up rate-limit window is waited for until it resets, within the run's deadline
    /// (outside a run, this bounds that wait too).
    pub max_retry_after_secs: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            timeout_secs: 30,
            max_retries: 5,
            backoff_ms: 500,
            max_backoff_ms: 30_000,
            max_retry_after_secs: 900,
        }
    }
}

impl HttpSettings {
    /// Every problem of the `http` table of the source or sink at `at` (e.g. `sources.ccc`).
    pub fn validate(&self, at: &str) -> Vec<crate::problem::Problem> {
        use crate::problem::Problem;
        let mut problems = Vec::new();
        if self.timeout_secs == 0 {
            problems.push(Problem::new(
                format!("{at}.http.timeout_secs"),
                "is 0: every request needs a timeout of at least 1 s",
            ));
        }
        if self.backoff_ms > self.max_backoff_ms {
            problems.push(Problem::new(
                format!("{at}.http.backoff_ms"),
                format!(
                    "is {} ms, longer than http.max_backoff_ms ({} ms)",
                    self.backoff_ms, self.max_backoff_ms
                ),
            ));
        }
        problems
    }
}
