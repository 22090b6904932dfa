//! The progress of a run as it goes: pages and records read, lines pushed. The pipeline counts
//! into the [`Progress`] of the task it runs in (a task-local, as the run's deadline is: the
//! connectors are built once and serve every run of the daemon), and `tally run` in a terminal
//! draws it as one status line on stderr ([`with_progress_bar`]). Nothing is drawn when stderr
//! is not a terminal, so that logs, files and tests stay clean.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fmt;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Counters of one run, updated by the pipeline and read by whoever draws them.
#[derive(Debug, Default)]
pub struct Progress {
    pages: AtomicU64,
    records: AtomicU64,
    lines_pushed: AtomicU64,
}

/// What a [`Progress`] held at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub pages: u64,
    pub records: u64,
    pub lines_pushed: u64,
}

impl Progress {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            pages: self.pages.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            lines_pushed: self.lines_pushed.load(Ordering::Relaxed),
        }
    }

    /// Runs `work` with this progress as the one [`page_read`] and [`lines_pushed`] count into.
    pub async fn scope<F: Future>(self: Arc<Self>, work: F) -> F::Output {
        PROGRESS.scope(self, work).await
    }

    /// The progress the current task counts into, if any: a task spawned for part of a run
    /// ([`Self::scope`] it again) counts into the same one.
    pub fn current() -> Option<Arc<Progress>> {
        PROGRESS.try_with(Arc::clone).ok()
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} page(s), {} record(s) read; {} line(s) pushed",
            self.pages, self.records, self.lines_pushed
        )
    }
}

tokio::task_local! {
    static PROGRESS: Arc<Progress>;
}

/// One page of a source fetched, holding `records` records. Counts nothing outside
/// [`Progress::scope`].
pub fn page_read(records: usize) {
    let _ = PROGRESS.try_with(|p| {
        p.pages.fetch_add(1, Ordering::Relaxed);
        p.records.fetch_add(records as u64, Ordering::Relaxed);
    });
}

/// `count` revisions recorded as pushed.
pub fn lines_pushed(count: u64) {
    let _ = PROGRESS.try_with(|p| p.lines_pushed.fetch_add(count, Ordering::Relaxed));
}

/// The bar being drawn, if any: the log writes around it.
static DRAWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

pub(super) fn drawn_bar() -> Option<ProgressBar> {
    DRAWN.lock().ok().and_then(|bar| bar.clone())
}

/// How often the status line is redrawn.
const TICK: Duration = Duration::from_millis(120);

/// Runs `work` counting into a fresh [`Progress`] and, when `show` and stderr is a terminal,
/// draws it as a status line that disappears when `work` ends.
pub async fn with_progress_bar<F: Future>(show: bool, work: F) -> F::Output {
    // Boxed: a run's future is deep, and the compiler's layout of `main` would be deeper still.
    let work = Box::pin(work);
    let progress = Arc::new(Progress::default());
    if !show || !std::io::stderr().is_terminal() {
        return progress.scope(work).await;
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    if let Ok(mut drawn) = DRAWN.lock() {
        *drawn = Some(bar.clone());
    }
    let mut work = std::pin::pin!(progress.clone().scope(work));
    let mut tick = tokio::time::interval(TICK);
    let output = loop {
        tokio::select! {
            output = &mut work => break output,
            _ = tick.tick() => {
                bar.set_message(progress.snapshot().to_string());
                bar.tick();
            }
        }
    };
    if let Ok(mut drawn) = DRAWN.lock() {
        *drawn = None;
    }
    bar.finish_and_clear();
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_what_the_run_in_its_scope_reads_and_pushes() {
        let progress = Arc::new(Progress::default());
        progress
            .clone()
            .scope(async {
                page_read(100);
                page_read(37);
                lines_pushed(1);
                // Work the run awaits in the same task counts too.
                async { lines_pushed(4) }.await;
            })
            .await;
        assert_eq!(
            progress.snapshot(),
            Snapshot {
                pages: 2,
                records: 137,
                lines_pushed: 5
            }
        );
        assert_eq!(
            progress.snapshot().to_string(),
            "2 page(s), 137 record(s) read; 5 line(s) pushed"
        );
    }

    #[tokio::test]
    async fn outside_a_scope_nothing_is_counted_and_nothing_fails() {
        page_read(10);
        lines_pushed(1);
        let progress = Arc::new(Progress::default());
        progress.clone().scope(async {}).await;
        page_read(10);
        assert_eq!(progress.snapshot(), Snapshot::default());
    }

    #[tokio::test]
    async fn a_run_without_a_terminal_draws_nothing_and_returns_its_output() {
        let out = with_progress_bar(true, async {
            page_read(3);
            7
        })
        .await;
        assert_eq!(out, 7);
        assert!(drawn_bar().is_none());
    }
}
