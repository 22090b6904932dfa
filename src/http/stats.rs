//! What one client sent: requests, retries and 429s, counted where they happen so that a run
//! can say per source what its peer cost (`tally runs show`), and the same figures per peer as
//! `metrics` (`tally_http_requests_total{peer,outcome}`, `tally_http_request_duration_seconds{peer}`,
//! `tally_http_429_total{peer}`). Without an installed recorder the metrics are no-ops.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The counters of one [`super::HttpClient`], from its creation. Readers take a
/// [`StatsSnapshot`] before and after a piece of work and subtract.
#[derive(Debug, Default)]
pub(super) struct Stats {
    requests: AtomicU64,
    retries: AtomicU64,
    rate_limited: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Requests sent, every attempt counted.
    pub requests: u64,
    /// Attempts after the first of one request.
    pub retries: u64,
    /// Answers 429 Too Many Requests.
    pub rate_limited: u64,
}

impl StatsSnapshot {
    /// What happened between `before` and `self`.
    pub fn since(self, before: StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.saturating_sub(before.requests),
            retries: self.retries.saturating_sub(before.retries),
            rate_limited: self.rate_limited.saturating_sub(before.rate_limited),
        }
    }

    /// The sum of two clients' figures (a source with several clients).
    pub fn plus(self, other: StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.saturating_add(other.requests),
            retries: self.retries.saturating_add(other.retries),
            rate_limited: self.rate_limited.saturating_add(other.rate_limited),
        }
    }
}

/// How one attempt ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// 2xx.
    Ok,
    /// 429.
    RateLimited,
    /// Another non-success status (3xx not followed, 4xx).
    ClientError,
    /// 5xx.
    ServerError,
    Timeout,
    /// The connection could not be made or broke.
    Transport,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::RateLimited => "rate_limited",
            Outcome::ClientError => "client_error",
            Outcome::ServerError => "server_error",
            Outcome::Timeout => "timeout",
            Outcome::Transport => "transport",
        }
    }

    /// The outcome of an answer with `status`.
    pub(super) fn of_status(status: reqwest::StatusCode) -> Outcome {
        if status.is_success() {
            Outcome::Ok
        } else if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Outcome::RateLimited
        } else if status.is_server_error() {
            Outcome::ServerError
        } else {
            Outcome::ClientError
        }
    }
}

impl Stats {
    /// Counts one attempt to `peer` (host and port, never a path or query: they may hold ids
    /// and the label set must stay small) that took `took` and ended as `outcome`; `retry`
    /// when it was not the request's first attempt.
    pub(super) fn record(&self, peer: &str, outcome: Outcome, took: Duration, retry: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if retry {
            self.retries.fetch_add(1, Ordering::Relaxed);
        }
        let peer = peer.to_owned();
        if outcome == Outcome::RateLimited {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("tally_http_429_total", "peer" => peer.clone()).increment(1);
        }
        metrics::counter!(
            "tally_http_requests_total",
            "peer" => peer.clone(),
            "outcome" => outcome.label()
        )
        .increment(1);
        metrics::histogram!("tally_http_request_duration_seconds", "peer" => peer)
            .record(took.as_secs_f64());
    }

    pub(super) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
        }
    }
}

/// The `peer` label of a URL: its host and port.
pub(super) fn peer_of(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("unknown");
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_retries_and_429s_are_counted_and_subtract() {
        let stats = Stats::default();
        let before = stats.snapshot();
        stats.record("a:1", Outcome::RateLimited, Duration::ZERO, false);
        stats.record("a:1", Outcome::Ok, Duration::ZERO, true);
        stats.record("a:1", Outcome::Ok, Duration::ZERO, false);
        let delta = stats.snapshot().since(before);
        assert_eq!(
            delta,
            StatsSnapshot {
                requests: 3,
                retries: 1,
                rate_limited: 1
            }
        );
    }

    /// Keeps what the metrics macros report: each metric's name and labels, and its sum
    /// (counters) or number of values (histograms).
    #[derive(Default)]
    struct Recorded(std::sync::Mutex<std::collections::BTreeMap<String, f64>>);

    struct Handle(std::sync::Arc<Recorded>, String);

    impl metrics::CounterFn for Handle {
        fn increment(&self, value: u64) {
            *self.0.0.lock().unwrap().entry(self.1.clone()).or_default() += value as f64;
        }
        fn absolute(&self, _: u64) {}
    }

    impl metrics::HistogramFn for Handle {
        fn record(&self, _: f64) {
            *self.0.0.lock().unwrap().entry(self.1.clone()).or_default() += 1.0;
        }
    }

    struct Recorder(std::sync::Arc<Recorded>);

    impl Recorder {
        fn name(key: &metrics::Key) -> String {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            format!("{}{{{}}}", key.name(), labels.join(","))
        }
    }

    impl metrics::Recorder for Recorder {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            metrics::Counter::from_arc(std::sync::Arc::new(Handle(self.0.clone(), Self::name(key))))
        }
        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::from_arc(std::sync::Arc::new(Handle(
                self.0.clone(),
                Self::name(key),
            )))
        }
    }

    #[test]
    fn each_attempt_is_a_metric_of_its_peer() {
        let recorded = std::sync::Arc::new(Recorded::default());
        let recorder = Recorder(recorded.clone());
        let stats = Stats::default();
        metrics::with_local_recorder(&recorder, || {
            stats.record("a:1", Outcome::RateLimited, Duration::ZERO, false);
            stats.record("a:1", Outcome::Ok, Duration::ZERO, true);
            stats.record("b:2", Outcome::Timeout, Duration::ZERO, false);
        });
        let got = recorded.0.lock().unwrap().clone();
        let want: std::collections::BTreeMap<String, f64> = [
            ("tally_http_429_total{peer=a:1}", 1.0),
            (
                "tally_http_requests_total{peer=a:1,outcome=rate_limited}",
                1.0,
            ),
            ("tally_http_requests_total{peer=a:1,outcome=ok}", 1.0),
            ("tally_http_requests_total{peer=b:2,outcome=timeout}", 1.0),
            ("tally_http_request_duration_seconds{peer=a:1}", 2.0),
            ("tally_http_request_duration_seconds{peer=b:2}", 1.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_peer_is_host_and_port_only() {
        let url = reqwest::Url::parse("https://api.example.com/v1/users?token=x").unwrap();
        assert_eq!(peer_of(&url), "api.example.com:443");
        let url = reqwest::Url::parse("http://127.0.0.1:8081/v1").unwrap();
        assert_eq!(peer_of(&url), "127.0.0.1:8081");
    }
}
