//! Billing systems (sinks): where invoice lines go. A vendor's whole connector lives in its own
//! folder; this module only lists them behind one enum.
//!
//! Pushing is two-phase (docs/LEDGER.md): the pipeline calls [`Sink::prepare`] and commits the line
//! as `pushing` with the marker it returns, then [`Sink::push`], then commits `pushed`. A line
//! found `pushing` (a crash, or an uncertain answer) is resolved with [`Sink::find`] before
//! anything is sent again. A billing system with a [`Sink::batch_size`] takes many revisions at
//! once: each is still committed `pushing` before the batch is sent, and `pushed` after.

pub mod activeplatform;
pub mod file;
pub mod rambase;

use crate::domain::{InvoiceLine, LedgerLine};

/// Why a push did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The billing system refused the line and surely does not hold it (a 4xx with its
    /// reason). The line stays retriable; fix the cause and re-run.
    #[error("{0}")]
    Rejected(String),
    /// The outcome is unknown (timeout, 5xx, broken connection): the billing system may hold
    /// the line. It is resolved with [`Sink::find`] before anything is sent again.
    #[error("{0}")]
    Uncertain(String),
}

/// A configured billing system.
#[derive(Debug)]
pub enum Sink {
    RamBase(rambase::RamBase),
    ActivePlatform(activeplatform::ActivePlatform),
    File(file::FileSink),
}

impl Sink {
    /// The ActivePlatform connector, which can also look accounts up.
    pub fn as_activeplatform(&self) -> Option<&activeplatform::ActivePlatform> {
        match self {
            Sink::ActivePlatform(s) => Some(s),
            _ => None,
        }
    }

    /// The configured name (`rambase`, `file`, ...), as lines record it.
    pub fn name(&self) -> &str {
        match self {
            Sink::RamBase(_) => "rambase",
            Sink::ActivePlatform(_) => "activeplatform",
            Sink::File(_) => "file",
        }
    }

    /// Forgets what the connector cached during the previous run (ActivePlatform's accounts),
    /// so that every run sees the billing system as it is now.
    pub fn begin_run(&self) {
        if let Sink::ActivePlatform(s) = self {
            s.clear_cache();
        }
    }

    /// Can this line go to this billing system as it is? Pure, called while planning: an
    /// `Err(reason)` makes the line a `not_billable` exception (e.g. a fractional quantity for
    /// RamBase, or no plan/item configured for the account and license type).
    pub fn check(&self, line: &InvoiceLine) -> Result<(), String> {
        match self {
            Sink::RamBase(s) => s.check(line),
            Sink::ActivePlatform(s) => s.check(line),
            Sink::File(_) => Ok(()),
        }
    }

    /// Phase one: what the billing system holds for this line's target right now, kept with
    /// the `pushing` state so that [`find`](Self::find) can tell afterwards whether the push
    /// landed. `None` when the sink can find a revision by its key alone.
    pub async fn prepare(&self, line: &LedgerLine) -> anyhow::Result<Option<String>> {
        match self {
            Sink::RamBase(s) => s.prepare(line).await,
            Sink::ActivePlatform(s) => s.prepare(line).await,
            Sink::File(_) => Ok(None),
        }
    }

    /// Forgets what the connector learnt during the previous push (the file sink's keys), so that
    /// a push reads each file afresh, and at most once.
    pub async fn begin_push(&self) {
        if let Sink::File(s) = self {
            s.begin_push().await;
        }
    }

    /// How many revisions one [`push_batch`](Self::push_batch) takes, for a billing system that
    /// takes many in one write and finds a revision by its key alone, so needs no
    /// [`prepare`](Self::prepare) marker: the file sink. `None`: one revision at a time.
    pub fn batch_size(&self) -> Option<usize> {
        match self {
            Sink::File(_) => Some(file::BATCH_SIZE),
            Sink::RamBase(_) | Sink::ActivePlatform(_) => None,
        }
    }

    /// Sends revisions already marked `pushing`; one result per revision, in order. The file
    /// sink appends them in one write and one sync.
    pub async fn push_batch(&self, lines: &[LedgerLine]) -> Vec<Result<String, PushError>> {
        match self {
            Sink::File(s) => s.push_batch(lines).await,
            // One request each: these take no batches (the pipeline sends them one by one).
            Sink::RamBase(_) | Sink::ActivePlatform(_) => {
                let mut results = Vec::with_capacity(lines.len());
                for line in lines {
                    results.push(self.push(line).await);
                }
                results
            }
        }
    }

    /// Sends one revision; returns the billing system's id for it.
    pub async fn push(&self, line: &LedgerLine) -> Result<String, PushError> {
        match self {
            Sink::RamBase(s) => s.push(line).await,
            Sink::ActivePlatform(s) => s.push(line).await,
            Sink::File(s) => s.push(line).await,
        }
    }

    /// Recovery: does the billing system already hold this revision? Uses `line.push_marker`
    /// where the billing system has no idempotency key. `Some(external id)` if it does.
    pub async fn find(&self, line: &LedgerLine) -> anyhow::Result<Option<String>> {
        match self {
            Sink::RamBase(s) => s.find(line).await,
            Sink::ActivePlatform(s) => s.find(line).await,
            Sink::File(s) => s.find(line).await,
        }
    }
}
