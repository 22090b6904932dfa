//! A graceful stop on SIGTERM and SIGINT, for every command that writes.
//!
//! A signal does not kill tally in the middle of a push: it sets a flag that the pipeline reads
//! between requests. No new request starts, the request in flight finishes (or times out) and
//! its outcome is recorded, the run is recorded as `interrupted`, and the process exits with
//! [`EXIT_INTERRUPTED`]. If that takes longer than `general.shutdown_timeout_secs`, or a second
//! signal arrives, the process exits at once: the ledger is still consistent (a revision in
//! flight stays `pushing` and is resolved by reading the billing system on the next run).

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The exit code of a command stopped by a signal (docs/LEDGER.md).
pub const EXIT_INTERRUPTED: i32 = 5;

/// Shared by everything that must stop when asked; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    requested: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown {
            requested: Arc::new(watch::channel(false).0),
        }
    }

    /// Asks everything holding this to stop at its next safe point.
    pub fn request(&self) {
        self.requested.send_replace(true);
    }

    pub fn requested(&self) -> bool {
        *self.requested.borrow()
    }

    /// Resolves once a stop is requested.
    pub async fn wait(&self) {
        let mut seen = self.requested.subscribe();
        // The sender lives as long as `self`, so the channel cannot close while we wait.
        let _ = seen.wait_for(|stop| *stop).await;
    }

    /// Sleeps `duration` unless a stop is requested first; `false` when interrupted.
    pub async fn sleep(&self, duration: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(duration) => true,
            _ = self.wait() => false,
        }
    }

    /// Listens for SIGTERM and SIGINT in the background: the first requests a stop and arms a
    /// deadline of `grace` after which the process exits with [`EXIT_INTERRUPTED`]; a second
    /// exits at once.
    pub fn listen_for_signals(&self, grace: Duration) {
        let shutdown = self.clone();
        tokio::spawn(async move {
            next_signal().await;
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "stop requested: finishing the request in flight, then recording the run as interrupted"
            );
            shutdown.request();
            tokio::select! {
                _ = tokio::time::sleep(grace) => {
                    eprintln!("error: tally did not stop within {} s (general.shutdown_timeout_secs); exiting now — the next run resolves what was in flight", grace.as_secs());
                }
                _ = next_signal() => {
                    eprintln!("error: second stop signal; exiting now — the next run resolves what was in flight");
                }
            }
            std::process::exit(EXIT_INTERRUPTED);
        });
    }
}

/// The next SIGINT or SIGTERM.
async fn next_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_requested_stop_cuts_a_sleep_short() {
        let shutdown = Shutdown::new();
        let other = shutdown.clone();
        let sleeper = tokio::spawn(async move { other.sleep(Duration::from_secs(3600)).await });
        shutdown.request();
        assert!(!sleeper.await.expect("join"), "the sleep was interrupted");
        assert!(shutdown.requested());
    }
}
