//! The peer's announced request budget shared by the requests of one connector in flight.
//!
//! A peer that announces `X-RateLimit-Remaining` says how many requests its window still
//! takes. Sent one at a time, the next request reads the latest figure; sent several at once,
//! requests already in flight use up the same figure. The budget admits a request only while
//! fewer are in flight than remain, so that concurrent requests together never exceed what the
//! peer said it takes (and so provoke no 429). A request always goes out when none is in flight:
//! the peer's answer to it is the truth, and a used-up window is waited out by the client's
//! pause before it is sent.
//!
//! A peer that announces nothing (CCC, Genesys) says its limit only by a 429. The first 429
//! reveals a window: so many requests were accepted from the first one until the `Retry-After`
//! runs out. From then on requests start no closer together than that window divided by them,
//! so that the run does not meet the limit again in every window (a later 429 paces slower).

use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What the peer last announced, and what is in flight against it.
#[derive(Debug, Default)]
pub(super) struct Budget {
    state: Mutex<State>,
    /// Woken whenever a request in flight ends.
    freed: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// `X-RateLimit-Remaining` of the latest window seen, with that window's reset (epoch
    /// seconds, when sent): answers of concurrent requests arrive in any order, so within one
    /// window the lowest figure is the truth.
    remaining: Option<(u64, Option<u64>)>,
    /// `X-RateLimit-Limit`: what a fresh window takes, until its first answer says more.
    limit: Option<u64>,
    /// The reset of the latest window known to be over: a late answer from it is stale.
    closed: Option<u64>,
    in_flight: u64,
    /// The least time between two request starts, once a 429 of an unannounced limit revealed
    /// one; and when the next request may start.
    pace: Option<Duration>,
    next_start: Option<Instant>,
    /// Since when requests are counted for the next revealed window, and how many of them the
    /// peer accepted.
    epoch: Option<Instant>,
    accepted: u64,
}

impl State {
    fn announces(&self) -> bool {
        self.remaining.is_some() || self.limit.is_some()
    }

    fn admits(&self) -> bool {
        match self.remaining {
            None => true,
            Some((remaining, _)) => self.in_flight == 0 || self.in_flight < remaining,
        }
    }
}

/// One admitted request; ending it (drop, also on cancellation) frees its place.
#[derive(Debug)]
pub(super) struct Admitted<'a> {
    budget: &'a Budget,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.budget.state.lock() {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
        self.budget.freed.notify_waiters();
    }
}

impl Budget {
    /// Waits until the budget admits one more request in flight.
    pub(super) async fn admit(&self) -> Admitted<'_> {
        loop {
            // Registered before the check, so that a request ending in between still wakes it.
            let freed = self.freed.notified();
            // `Some(start)`: admitted, to start then (or now); `None`: wait for a place.
            let admitted: Option<Option<Instant>> = match self.state.lock() {
                Ok(mut state) if state.admits() => {
                    state.in_flight += 1;
                    let now = Instant::now();
                    state.epoch.get_or_insert(now);
                    Some(state.pace.map(|pace| {
                        let start = state.next_start.map_or(now, |next| next.max(now));
                        state.next_start = Some(start + pace);
                        start
                    }))
                }
                _ => None,
            };
            let Some(start) = admitted else {
                freed.await;
                continue;
            };
            let admitted = Admitted { budget: self };
            if let Some(start) = start {
                tokio::time::sleep_until(start).await;
            }
            return admitted;
        }
    }

    /// The peer accepted a request (a 2xx): it counts for the window a 429 may reveal.
    pub(super) fn accepted(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.accepted += 1;
        }
    }

    /// The peer refused a request with 429 and `Retry-After: wait`. Where it announces no
    /// budget, the requests it accepted since the count began, over the time until `wait` ends,
    /// set the pace of the requests after it. Returns the pace this 429 revealed (the workers
    /// of a round share it, `shared_pace`), `None` where the peer announces its budget.
    pub(super) fn refused(&self, wait: Duration) -> Option<Duration> {
        let Ok(mut state) = self.state.lock() else {
            return None;
        };
        if state.announces() || state.accepted == 0 {
            return None;
        }
        let now = Instant::now();
        let reopens = now + wait;
        let window = reopens.saturating_duration_since(state.epoch.unwrap_or(now));
        // n requests spread evenly over the window at window / (n - 1) apart: any stretch as
        // long as the window holds at most n starts.
        let gaps = u32::try_from(state.accepted.saturating_sub(1).max(1)).unwrap_or(u32::MAX);
        let pace = window / gaps;
        if state.pace.is_none_or(|before| pace > before) {
            tracing::info!(
                accepted = state.accepted,
                window_ms = window.as_millis() as u64,
                pace_ms = pace.as_millis() as u64,
                "the peer's unannounced rate limit was met: pacing the requests after it"
            );
            state.pace = Some(pace);
        }
        state.next_start = Some(state.next_start.map_or(reopens, |next| next.max(reopens)));
        state.epoch = Some(reopens);
        state.accepted = 0;
        Some(pace)
    }

    /// True once the peer announced its budget (`X-RateLimit-*`): its answers pace the
    /// requests, and no 429 needs to reveal a window.
    pub(super) fn announces(&self) -> bool {
        self.state.lock().is_ok_and(|state| state.announces())
    }

    /// Records an answer's `X-RateLimit-Remaining` (and `X-RateLimit-Reset`) as sent; values
    /// that are not counts are ignored here (the client logs them).
    pub(super) fn announce(
        &self,
        remaining: Option<&str>,
        reset: Option<&str>,
        limit: Option<&str>,
    ) {
        let count = |value: Option<&str>| value.and_then(|v| v.trim().parse::<u64>().ok());
        let Some(remaining) = count(remaining) else {
            return;
        };
        let reset = count(reset);
        if let Ok(mut state) = self.state.lock() {
            if let Some(limit) = count(limit) {
                state.limit = Some(limit);
            }
            if let (Some(reset), Some(closed)) = (reset, state.closed)
                && reset <= closed
            {
                return;
            }
            state.remaining = Some(match state.remaining {
                // The same window: the lowest figure, whatever order the answers came in.
                Some((before, window)) if window == reset => (before.min(remaining), reset),
                // An older window's answer arriving late says nothing about the new one.
                Some((before, Some(window))) if reset.is_some_and(|r| r < window) => {
                    (before, Some(window))
                }
                _ => (remaining, reset),
            });
        }
    }

    /// A used-up window has reset: its figure no longer holds. Until the next answer brings the
    /// new one, the window is taken to hold `X-RateLimit-Limit` requests (when announced), so
    /// that the requests queued for it do not all go at once into a small window.
    pub(super) fn window_reset(&self) {
        if let Ok(mut state) = self.state.lock() {
            if let Some((_, Some(reset))) = state.remaining {
                state.closed = state.closed.max(Some(reset));
            }
            state.remaining = state.limit.map(|limit| (limit, None));
        }
        self.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_in_flight_never_exceed_what_remains() {
        let budget = Budget::default();
        budget.announce(Some("2"), Some("100"), None);
        let a = budget.admit().await;
        let b = budget.admit().await;
        let third = tokio::time::timeout(Duration::from_millis(50), budget.admit()).await;
        assert!(
            third.is_err(),
            "a third request waits while two of two are in flight"
        );
        drop(a);
        // One of the two answered and said one remains: one more in flight may go.
        budget.announce(Some("1"), Some("100"), None);
        drop(b);
        let c = tokio::time::timeout(Duration::from_millis(50), budget.admit())
            .await
            .expect("admitted once nothing is in flight");
        drop(c);
    }

    #[tokio::test]
    async fn a_late_answer_of_the_same_window_does_not_raise_the_figure() {
        let budget = Budget::default();
        budget.announce(Some("1"), Some("100"), None);
        budget.announce(Some("5"), Some("100"), None);
        let a = budget.admit().await;
        let second = tokio::time::timeout(Duration::from_millis(50), budget.admit()).await;
        assert!(second.is_err(), "one remains, one is in flight");
        drop(a);
        // A new window announces its own figure.
        budget.announce(Some("5"), Some("200"), None);
        let _a = budget.admit().await;
        let _b = budget.admit().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_of_an_unannounced_limit_paces_the_requests_after_it() {
        let budget = Budget::default();
        let start = Instant::now();
        for _ in 0..10 {
            drop(budget.admit().await);
            budget.accepted();
        }
        // Ten accepted at once, then a 429 that reopens after 2 s: the window is 2 s long and
        // takes ten, so requests go 2 s / 9 apart from when it reopens.
        tokio::time::advance(Duration::from_millis(10)).await;
        let revealed = budget.refused(Duration::from_millis(1_990));
        assert_eq!(
            revealed,
            Some(Duration::from_millis(2_000) / 9),
            "the pace it shares"
        );
        let mut starts = Vec::new();
        for _ in 0..4 {
            drop(budget.admit().await);
            starts.push(Instant::now().duration_since(start).as_millis());
        }
        // 2000, 2222, 2444, 2666 ms, give or take the timer's millisecond.
        assert!((2_000..=2_001).contains(&starts[0]), "{starts:?}");
        for pair in starts.windows(2) {
            assert!((221..=223).contains(&(pair[1] - pair[0])), "{starts:?}");
        }
    }

    #[tokio::test]
    async fn nothing_announced_or_nothing_in_flight_always_admits() {
        let budget = Budget::default();
        let _a = budget.admit().await;
        let _b = budget.admit().await;
        let used_up = Budget::default();
        used_up.announce(Some("0"), Some("100"), Some("2"));
        let only = tokio::time::timeout(Duration::from_millis(50), used_up.admit())
            .await
            .expect("the peer's answer to one request is the truth");
        drop(only);
        // The window reset: it takes its announced limit, two, until an answer says more.
        used_up.window_reset();
        let _a = used_up.admit().await;
        let _b = used_up.admit().await;
        let third = tokio::time::timeout(Duration::from_millis(50), used_up.admit()).await;
        assert!(third.is_err(), "a fresh window of two takes two at once");
        // A late answer of the window that is over says nothing about the new one.
        used_up.announce(Some("0"), Some("100"), Some("2"));
        drop(_a);
        let _c = tokio::time::timeout(Duration::from_millis(50), used_up.admit())
            .await
            .expect("the stale 0 is ignored: one of two in flight");
    }
}
