//! What a peer says about its rate limits (`Retry-After`, `X-RateLimit-Remaining`,
//! `X-RateLimit-Reset`) and how long tally may wait for it.
//!
//! Header values come from outside, so every one of them — huge, negative, `NaN`, `inf`, a date,
//! garbage — becomes a wait that can be represented or "unreadable", never a panic or an
//! overflow. The parsers are pure (the clock is an argument) so that tests and the fuzz harness
//! can feed them anything. Whether a wait is allowed is decided against two bounds: a single
//! `Retry-After` against `http.max_retry_after_secs`, and every wait against the deadline of the
//! run it belongs to ([`Deadline`], `general.run_deadline_secs`).

use chrono::{DateTime, Utc};
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// The longest deadline tally represents (a year); configuration refuses far less, this only
/// keeps `Instant` arithmetic away from its overflow.
const LONGEST_DEADLINE: Duration = Duration::from_secs(366 * 24 * 3600);

/// Header values are quoted in messages cut to this many characters.
const QUOTED: usize = 40;

/// What a `Retry-After` value asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// Wait this long before asking again; `Duration::MAX` stands for a wait too long to
    /// represent (which no bound admits).
    Wait(Duration),
    /// Neither a number of seconds nor an HTTP-date (negative, `NaN`, `inf`, garbage): ignored,
    /// and the client's own bounded backoff is used instead.
    Unreadable,
}

/// Reads a `Retry-After` value as of `now`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3),
/// and, leniently, a non-negative decimal number of seconds (`1.5`, `1e3`). A date in the past
/// is a wait of zero.
pub fn parse_retry_after(value: &str, now: SystemTime) -> RetryAfter {
    let value = value.trim();
    if value.is_empty() {
        return RetryAfter::Unreadable;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is still a number of seconds: far too many.
        let secs = value.parse::<u64>().map(Duration::from_secs);
        return RetryAfter::Wait(secs.unwrap_or(Duration::MAX));
    }
    if let Ok(secs) = value.parse::<f64>() {
        // `inf` and `NaN` parse as floats but are not numbers of seconds; `1e400` is one,
        // too large to hold.
        let spelled_out = !value.bytes().any(|b| b.is_ascii_digit());
        if secs.is_nan() || secs < 0.0 || (secs.is_infinite() && spelled_out) {
            return RetryAfter::Unreadable;
        }
        return RetryAfter::Wait(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX));
    }
    match httpdate::parse_http_date(value) {
        Ok(at) => RetryAfter::Wait(at.duration_since(now).unwrap_or(Duration::ZERO)),
        Err(_) => RetryAfter::Unreadable,
    }
}

/// What the `X-RateLimit-*` headers of an answer say about the peer's window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimit {
    /// Requests remain in the window, or the peer announces no window.
    Open,
    /// The window is used up and resets after this wait: zero when the reset time has passed,
    /// `Duration::MAX` for a reset too far away to represent.
    UsedUp(Duration),
    /// The headers are there but cannot be read; tally does not pause for them (a `429` would
    /// tell it the truth). The text says what was wrong.
    Unreadable(String),
}

/// Reads `X-RateLimit-Remaining` and `X-RateLimit-Reset` (epoch seconds, as the billable-users
/// API documents) as of `now`.
pub fn parse_rate_limit(
    remaining: Option<&str>,
    reset: Option<&str>,
    now: SystemTime,
) -> RateLimit {
    let Some(remaining) = remaining.map(str::trim) else {
        return RateLimit::Open;
    };
    if remaining.is_empty() || !remaining.bytes().all(|b| b.is_ascii_digit()) {
        return RateLimit::Unreadable(format!(
            "X-RateLimit-Remaining {} is not a count of requests",
            quote(remaining)
        ));
    }
    if remaining.bytes().any(|b| b != b'0') {
        return RateLimit::Open;
    }
    let Some(reset) = reset.map(str::trim) else {
        return RateLimit::Unreadable(
            "X-RateLimit-Remaining is 0 but X-RateLimit-Reset is missing".to_owned(),
        );
    };
    if reset.is_empty() || !reset.bytes().all(|b| b.is_ascii_digit()) {
        return RateLimit::Unreadable(format!(
            "X-RateLimit-Reset {} is not a time in epoch seconds",
            quote(reset)
        ));
    }
    let at = reset
        .parse::<u64>()
        .ok()
        .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)));
    match at {
        Some(at) => RateLimit::UsedUp(at.duration_since(now).unwrap_or(Duration::ZERO)),
        None => RateLimit::UsedUp(Duration::MAX),
    }
}

/// A header value for a message: quoted, and cut short (a peer chooses its length).
pub(crate) fn quote(value: &str) -> String {
    let mut cut: String = value.chars().take(QUOTED).collect();
    if cut.len() < value.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// When a run must be done waiting for peers: a wait that would end later fails at once, so
/// that the source fails (keeping its checkpoint) instead of the run hanging for hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
    /// The same moment on the wall clock, for messages.
    utc: DateTime<Utc>,
    /// `general.run_deadline_secs`, named in messages.
    secs: u64,
}

impl Deadline {
    /// The deadline `secs` seconds from now.
    pub fn after_secs(secs: u64) -> Self {
        let span = Duration::from_secs(secs).min(LONGEST_DEADLINE);
        let now = Instant::now();
        Self {
            // Within a year `Instant` cannot overflow; were it to, the deadline is now and
            // every wait fails rather than one lasting forever.
            at: now.checked_add(span).unwrap_or(now),
            utc: utc_after(span).unwrap_or_else(Utc::now),
            secs,
        }
    }

    /// The deadline on the wall clock (UTC).
    pub fn utc(&self) -> DateTime<Utc> {
        self.utc
    }
}

tokio::task_local! {
    /// The deadline of the run being executed; the pipeline sets it for each run.
    static DEADLINE: Deadline;
}

/// Runs `work` (one run of the pipeline) with `deadline` for every wait of every HTTP client
/// it uses. A task-local value rather than a setting of each client: the connectors are built
/// once and serve every run of the daemon, and a deadline set on them would outlive its run.
pub async fn with_deadline<F: Future>(deadline: Deadline, work: F) -> F::Output {
    DEADLINE.scope(deadline, work).await
}

/// The deadline of the run this task is executing, if any.
pub(crate) fn current_deadline() -> Option<Deadline> {
    DEADLINE.try_with(|d| *d).ok()
}

/// The wall-clock time `wait` from now, if it can be represented.
pub(crate) fn utc_after(wait: Duration) -> Option<DateTime<Utc>> {
    let delta = chrono::TimeDelta::from_std(wait).ok()?;
    Utc::now().checked_add_signed(delta)
}

/// Why tally would wait before a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitCause {
    /// A `429`'s `Retry-After` (or the backoff, without one).
    RetryAfter,
    /// A rate-limit window the peer said is used up.
    Window,
    /// The backoff before retrying a timeout, a broken connection or a `5xx`.
    Backoff,
}

/// Which bound a wait would break.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitLimit {
    /// Longer than the connector's `http.max_retry_after_secs`.
    MaxRetryAfter { max_secs: u64 },
    /// Ending after the run's deadline.
    Deadline {
        deadline: DateTime<Utc>,
        run_deadline_secs: u64,
    },
}

/// When a wait of `wait` from `now` may end, or the bound it breaks. A `Retry-After` may not
/// exceed `max_retry_after_secs`; a used-up window is waited for however long it takes within
/// the deadline (outside a run, where there is no deadline, `max_retry_after_secs` bounds it
/// too); no wait may end after the deadline.
pub(crate) fn admit_wait(
    now: Instant,
    wait: Duration,
    cause: WaitCause,
    max_retry_after_secs: u64,
    deadline: Option<&Deadline>,
) -> Result<Instant, WaitLimit> {
    let capped = cause == WaitCause::RetryAfter || deadline.is_none();
    let cap = WaitLimit::MaxRetryAfter {
        max_secs: max_retry_after_secs,
    };
    if capped && cause != WaitCause::Backoff && wait > Duration::from_secs(max_retry_after_secs) {
        return Err(cap);
    }
    let until = now.checked_add(wait);
    match (until, deadline) {
        (Some(until), Some(d)) if until <= d.at => Ok(until),
        (Some(until), None) => Ok(until),
        (_, Some(d)) => Err(WaitLimit::Deadline {
            deadline: d.utc,
            run_deadline_secs: d.secs,
        }),
        (None, None) => Err(cap),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        // 2026-11-02T10:00:00Z
        UNIX_EPOCH + Duration::from_secs(1_793_613_600)
    }

    fn secs(n: u64) -> RetryAfter {
        RetryAfter::Wait(Duration::from_secs(n))
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_never_panics_on_the_worst_values() {
        use RetryAfter::{Unreadable, Wait};
        let huge = Wait(Duration::MAX);
        for (value, expected) in [
            ("120", secs(120)),
            (" 0 ", secs(0)),
            ("1.5", Wait(Duration::from_millis(1_500))),
            ("1e3", secs(1_000)),
            // The values that used to panic: far too long, never a crash.
            ("1e20", huge),
            ("99999999999999999999", huge),
            ("18446744073709551616", huge),
            ("1e400", huge),
            ("-1", Unreadable),
            ("-0.5", Unreadable),
            ("NaN", Unreadable),
            ("inf", Unreadable),
            ("-inf", Unreadable),
            ("infinity", Unreadable),
            ("", Unreadable),
            ("soon", Unreadable),
            ("12 s", Unreadable),
            ("0x10", Unreadable),
            ("\u{0}\u{7f}ÿ", Unreadable),
            // RFC 9110's HTTP-date, in its three forms; 10:02:00 is two minutes on.
            ("Mon, 02 Nov 2026 10:02:00 GMT", secs(120)),
            ("Monday, 02-Nov-26 10:02:00 GMT", secs(120)),
            ("Mon Nov  2 10:02:00 2026", secs(120)),
            // A date that has passed: no wait.
            ("Sun, 06 Nov 1994 08:49:37 GMT", secs(0)),
            (
                "Fri, 31 Dec 9999 23:59:59 GMT",
                secs(253_402_300_799 - 1_793_613_600),
            ),
            ("Mon, 32 Nov 2026 10:02:00 GMT", Unreadable),
        ] {
            assert_eq!(parse_retry_after(value, now()), expected, "{value:?}");
        }
    }

    #[test]
    fn rate_limit_headers_that_are_missing_absurd_or_garbage_are_handled() {
        let at = |offset: u64| (1_793_613_600 + offset).to_string();
        let reset = at(3_600);
        let cases: Vec<(Option<&str>, Option<&str>, RateLimit)> = vec![
            (None, None, RateLimit::Open),
            (None, Some("abc"), RateLimit::Open),
            (Some("12"), Some(&reset), RateLimit::Open),
            (Some("99999999999999999999"), None, RateLimit::Open),
            (
                Some("0"),
                Some(&reset),
                RateLimit::UsedUp(Duration::from_secs(3_600)),
            ),
            (
                Some("000"),
                Some(&reset),
                RateLimit::UsedUp(Duration::from_secs(3_600)),
            ),
            // A reset in the past: the window is open again.
            (Some("0"), Some("1000"), RateLimit::UsedUp(Duration::ZERO)),
            (Some("0"), Some("0"), RateLimit::UsedUp(Duration::ZERO)),
            // Further than anything can be represented: waited for by no bound.
            (
                Some("0"),
                Some("99999999999999999999"),
                RateLimit::UsedUp(Duration::MAX),
            ),
            (
                Some("0"),
                Some("18446744073709551615"),
                RateLimit::UsedUp(Duration::MAX),
            ),
        ];
        for (remaining, reset, expected) in cases {
            assert_eq!(
                parse_rate_limit(remaining, reset, now()),
                expected,
                "{remaining:?} {reset:?}"
            );
        }
        for (remaining, reset, says) in [
            (Some("-1"), Some("1"), "X-RateLimit-Remaining \"-1\""),
            (Some("1e3"), None, "X-RateLimit-Remaining \"1e3\""),
            (Some(""), None, "X-RateLimit-Remaining \"\""),
            (Some("0"), None, "X-RateLimit-Reset is missing"),
            (Some("0"), Some("-5"), "X-RateLimit-Reset \"-5\""),
            (Some("0"), Some("1.5e9"), "X-RateLimit-Reset \"1.5e9\""),
            (Some("0"), Some("Mon, 02 Nov 2026"), "X-RateLimit-Reset"),
        ] {
            match parse_rate_limit(remaining, reset, now()) {
                RateLimit::Unreadable(text) => assert!(text.contains(says), "{text}"),
                other => panic!("{remaining:?} {reset:?}: {other:?}"),
            }
        }
        let long = "9".repeat(500) + "x";
        let RateLimit::Unreadable(text) = parse_rate_limit(Some(&long), None, now()) else {
            panic!("a 501-character count is not a count");
        };
        assert!(text.len() < 120, "the value is quoted short: {text}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_is_capped_a_window_is_not_and_nothing_ends_past_the_deadline() {
        let now = Instant::now();
        let hour = Duration::from_secs(3_600);
        let deadline = Deadline::after_secs(2 * 3_600);
        let cap = Err(WaitLimit::MaxRetryAfter { max_secs: 900 });
        let past = Err(WaitLimit::Deadline {
            deadline: deadline.utc(),
            run_deadline_secs: 7_200,
        });
        use WaitCause::{Backoff, RetryAfter, Window};

        assert_eq!(admit_wait(now, hour, RetryAfter, 900, Some(&deadline)), cap);
        assert_eq!(admit_wait(now, hour, RetryAfter, 900, None), cap);
        // A window resetting in an hour is waited for within a run...
        assert_eq!(
            admit_wait(now, hour, Window, 900, Some(&deadline)),
            Ok(now + hour)
        );
        // ...but outside one, with nothing else to bound it, the cap applies.
        assert_eq!(admit_wait(now, hour, Window, 900, None), cap);
        for cause in [RetryAfter, Window, Backoff] {
            let max = u64::MAX;
            assert_eq!(
                admit_wait(now, 3 * hour, cause, max, Some(&deadline)),
                past,
                "{cause:?}"
            );
        }
        for cause in [Window, Backoff] {
            assert_eq!(
                admit_wait(now, Duration::MAX, cause, u64::MAX, Some(&deadline)),
                past,
                "{cause:?}"
            );
        }
        assert_eq!(
            admit_wait(now, Duration::MAX, Window, u64::MAX, None),
            Err(WaitLimit::MaxRetryAfter { max_secs: u64::MAX })
        );
        assert_eq!(
            admit_wait(now, Duration::from_secs(2), Backoff, 0, None),
            Ok(now + Duration::from_secs(2))
        );
    }

    proptest::proptest! {
        /// Any text at any time is a value, never a panic, and any wait it asks for is judged
        /// without overflowing.
        #[test]
        fn any_header_value_is_read_without_a_panic(
            value in proptest::prelude::any::<String>(),
            digits in "[0-9]{0,40}",
            now_secs in 0u64..=253_402_300_799,
        ) {
            let now = UNIX_EPOCH + Duration::from_secs(now_secs);
            for text in [value.as_str(), digits.as_str()] {
                let _ = parse_retry_after(text, now);
                let _ = parse_rate_limit(Some(text), Some(text), now);
                let _ = parse_rate_limit(Some("0"), Some(text), now);
                let _ = quote(text);
                if let RetryAfter::Wait(wait) = parse_retry_after(text, now) {
                    let _ = admit_wait(Instant::now(), wait, WaitCause::RetryAfter, u64::MAX, None);
                    let _ = utc_after(wait);
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_absurd_deadline_does_not_overflow() {
        let deadline = Deadline::after_secs(u64::MAX);
        assert!(deadline.at > Instant::now());
        assert!(deadline.utc() > Utc::now());
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_is_the_one_of_the_run_being_executed() {
        assert_eq!(current_deadline(), None);
        let deadline = Deadline::after_secs(60);
        let inside = with_deadline(deadline, async { current_deadline() }).await;
        assert_eq!(inside, Some(deadline));
        assert_eq!(current_deadline(), None);
    }
}
