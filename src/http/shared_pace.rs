//! The pace of a peer's unannounced rate limit, kept by every process that reads the peer at
//! once (the workers of a round), not by each on its own.
//!
//! Within one process, the first 429 of a peer that announces no limit reveals a window, and the
//! requests after it start no closer together than that window allows (`budget`). Workers on
//! other processes (or machines) reading the same peer know nothing of it: each would meet the
//! limit itself, and a worker that joins later would start unpaced into a window the others fill.
//! With a [`SharedPace`] in force, what a 429 revealed is handed to it, and every request first
//! takes its start from it, so that the workers together keep to the pace one of them learnt.
//!
//! A task-local value, as the run's deadline is: the connectors are built once per process and
//! know nothing of rounds; the worker sets it around its extraction. Where the shared pace cannot
//! be reached (the database went away), a request goes on with its own process's pace and the
//! failure is logged: pacing is a courtesy to the peer, and the staging that follows needs the
//! same database and says so.

use futures_util::future::BoxFuture;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// Where the workers of a round keep the pace of the peers they read (`store::paces`).
pub trait SharedPace: Send + Sync {
    /// The next start of a request to `peer` in the shared pace: how long from now the request
    /// must wait. `None` while no one has met the peer's limit.
    fn take_slot<'a>(&'a self, peer: &'a str) -> BoxFuture<'a, anyhow::Result<Option<Duration>>>;

    /// A 429 of `peer` revealed `pace` between request starts; its window reopens in
    /// `reopens_in`. Of two figures the slower pace and the later reopening are kept.
    fn share<'a>(
        &'a self,
        peer: &'a str,
        pace: Duration,
        reopens_in: Duration,
    ) -> BoxFuture<'a, anyhow::Result<()>>;
}

tokio::task_local! {
    static SHARED: Arc<dyn SharedPace>;
}

/// Runs `work` with `shared` keeping the pace of every HTTP client it uses.
pub async fn with_shared_pace<F: Future>(shared: Arc<dyn SharedPace>, work: F) -> F::Output {
    SHARED.scope(shared, work).await
}

/// The shared pace this task runs with, if any (a spawned task does not inherit it).
pub(crate) fn current_shared_pace() -> Option<Arc<dyn SharedPace>> {
    SHARED.try_with(Arc::clone).ok()
}

/// How long a request to `peer` waits for the start the shared pace gives it: `None` without
/// a shared pace, before anyone met the peer's limit, or when its start has come. The caller
/// bounds the wait as it bounds every other (the run's deadline).
pub(super) async fn slot(peer: &str) -> Option<Duration> {
    let shared = current_shared_pace()?;
    match shared.take_slot(peer).await {
        Ok(wait) => wait.filter(|wait| !wait.is_zero()),
        Err(e) => {
            warn!(%peer, error = %format!("{e:#}"), "the pace shared by the workers could not be read; this request keeps this process's own pace");
            None
        }
    }
}

/// Hands what a 429 of `peer` revealed to the shared pace, if there is one.
pub(super) async fn share(peer: &str, pace: Duration, reopens_in: Duration) {
    let Some(shared) = current_shared_pace() else {
        return;
    };
    if let Err(e) = shared.share(peer, pace, reopens_in).await {
        warn!(%peer, error = %format!("{e:#}"), "the pace this 429 revealed could not be shared with the other workers; they may meet the limit themselves");
    }
}
