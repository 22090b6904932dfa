//! The two-phase push (docs/LEDGER.md): mark `pushing` with the sink's marker (commit) → send →
//! mark `pushed` with the external id (commit). A revision found `pushing` is resolved by
//! reading the billing system before anything is sent again, so a crash at any instant
//! neither loses nor duplicates a line.
//!
//! Two timings keep a slow billing system from receiving a second copy:
//! - **settle time** (`push.settle_secs`): a billing system may store a request seconds after
//!   it received it, or a request of a process that died may still be in flight. "Not there"
//!   is believed only once this long has passed since the revision was sent; before that the
//!   revision waits (`pushing`) for a later read. "There" is believed at once.
//! - **retries** (`push.retries`): a revision whose answer was uncertain (5xx, timeout) and that
//!   the billing system still does not hold once settled is sent again within the run, a
//!   bounded number of times, with a growing pause.
//!
//! A billing system that takes batches (the file sink, [`Sink::batch_size`]) gets its approved
//! revisions in batches: one statement marks a batch `pushing`, one write sends it, one statement
//! marks what it accepted `pushed`. A revision left `pushing` by a crash in between is found by
//! its key on the next run, like any other.
//!
//! Billing systems are pushed side by side (RamBase's lines while ActivePlatform's go), each
//! within its own client's limits; one billing system's revisions go one request at a time.
//!
//! A stop request (SIGTERM/SIGINT) is honoured between requests (a batch is one request): the
//! request in flight finishes and is recorded, nothing new starts.

use super::{Faults, SimulatedCrash};
pub use crate::config::PushSettings;
use crate::domain::{LedgerLine, LineKey, LineStatus, Period};
use crate::shutdown::Shutdown;
use crate::sinks::{PushError, Sink};
use crate::store::{PushScope, Store};
use chrono::Utc;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{error, info, instrument, warn};

/// Everything a push needs: the ledger, the billing systems and how to behave.
#[derive(Debug, Clone, Copy)]
pub struct Pusher<'a> {
    pub store: &'a Store,
    pub sinks: &'a [Sink],
    pub settle: Duration,
    pub retries: u32,
    pub retry_backoff: Duration,
    pub faults: &'a Faults,
    pub shutdown: &'a Shutdown,
}

/// What a push did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PushOutcome {
    /// Revisions the billing systems now hold that the ledger did not record as pushed before.
    pub pushed: u64,
    /// Revisions that could not be pushed, one message each; they stay retriable.
    pub errors: Vec<String>,
    /// Revisions left `pushing` until their settle time has passed (a later run finishes them).
    pub waiting: u64,
    /// A stop was requested: revisions not reached are left for the next run.
    pub interrupted: bool,
}

/// How long to wait after an uncertain answer before a first read of the billing system: most
/// lost answers are of writes already stored, and finding one there ends the matter.
const QUICK_LOOK: Duration = Duration::from_secs(1);

/// Revisions read from the ledger at a time while pushing (one chunk of the queue): what a
/// push holds, whatever the size of the period.
const READ_AHEAD: usize = 500;

/// A revision sent with an uncertain answer, not resolved yet.
struct Unsure {
    line: LedgerLine,
    sent_at: Instant,
    reason: String,
}

impl Pusher<'_> {
    fn sink(&self, name: &str) -> Option<&Sink> {
        self.sinks.iter().find(|s| s.name() == name)
    }

    /// Pushes every approved revision of the period within `scope`, and resolves every revision
    /// left `pushing`. `Err` only when the ledger itself cannot be written.
    #[instrument(skip_all, fields(%period))]
    pub async fn push_period(
        &self,
        period: Period,
        scope: &PushScope<'_>,
    ) -> anyhow::Result<PushOutcome> {
        // Lines left `pushing` are resolved before anything new is sent, so that a sink that
        // recognises its own writes by what is new since a marker never sees two at once; for
        // the same reason a line with an unresolved revision sends nothing else this run.
        let queue = self.store.push_queue(period, scope).await?;
        for sink in self.sinks {
            sink.begin_push().await;
        }
        // Each billing system is its own peer with its own limits: they are pushed side by
        // side, each in the order above. One billing system's revisions go one at a time (or a
        // batch at a time): its way of finding a revision it may hold (a marker) assumes it is
        // not written by two requests of tally at once.
        let mut by_sink: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for queued in queue {
            by_sink.entry(queued.sink).or_default().push(queued.id);
        }
        let accepted = AtomicU64::new(0);
        let outcomes = futures_util::future::try_join_all(
            by_sink
                .into_values()
                .map(|ids| self.push_to_one_sink(period, ids, &accepted)),
        )
        .await?;
        let mut outcome = PushOutcome::default();
        for one in outcomes {
            outcome.pushed += one.pushed;
            outcome.errors.extend(one.errors);
            outcome.waiting += one.waiting;
            outcome.interrupted |= one.interrupted;
        }
        Ok(outcome)
    }

    /// The revisions of one billing system, in order, read [`READ_AHEAD`] at a time. `accepted`
    /// counts across the billing systems pushed side by side, for the
    /// `crash_after_accepted_pushes` fault.
    async fn push_to_one_sink(
        &self,
        period: Period,
        ids: Vec<i64>,
        accepted: &AtomicU64,
    ) -> anyhow::Result<PushOutcome> {
        let mut outcome = PushOutcome::default();
        let mut unresolved: HashSet<LineKey> = HashSet::new();
        let mut unsure: Vec<Unsure> = Vec::new();
        // Revisions waiting to go in one batch, when the billing system takes batches.
        let mut batch: Vec<LedgerLine> = Vec::new();
        let mut batch_sink: Option<&Sink> = None;
        'queue: for chunk in ids.chunks(READ_AHEAD) {
            for line in self.store.queued_lines(period, chunk).await? {
                if self.shutdown.requested() {
                    outcome.interrupted = true;
                    break 'queue;
                }
                if unresolved.contains(&line.key) {
                    outcome.waiting += 1;
                    continue;
                }
                let Some(sink) = self.sink(&line.sink) else {
                    let message = format!(
                        "{}: billing system {:?} is not configured any more; configure it again to push this revision",
                        line.idempotency_key, line.sink
                    );
                    self.store.record_push_error(line.id, &message).await?;
                    outcome.errors.push(message);
                    unresolved.insert(line.key.clone());
                    continue;
                };
                let mut line = line;
                if line.status == LineStatus::Pushing {
                    match self.resolve_left_pushing(sink, &line, &mut outcome).await? {
                        Resolved::Done => continue,
                        Resolved::SendAgain => line.status = LineStatus::Approved,
                        Resolved::Unresolved => {
                            unresolved.insert(line.key.clone());
                            continue;
                        }
                    }
                }
                if line.status != LineStatus::Approved {
                    continue;
                }
                if let Some(size) = sink.batch_size() {
                    batch_sink = Some(sink);
                    batch.push(line);
                    if batch.len() >= size {
                        let full = std::mem::take(&mut batch);
                        for left in self.send_batch(sink, full, accepted, &mut outcome).await? {
                            unresolved.insert(left.line.key.clone());
                            unsure.push(left);
                        }
                    }
                    continue;
                }
                match self.send(sink, line, accepted, &mut outcome).await? {
                    None => {}
                    Some(left) => {
                        unresolved.insert(left.line.key.clone());
                        unsure.push(left);
                    }
                }
            }
        }
        if let Some(sink) = batch_sink
            && !outcome.interrupted
        {
            unsure.extend(self.send_batch(sink, batch, accepted, &mut outcome).await?);
        }
        self.settle_unsure(unsure, accepted, &mut outcome).await?;
        Ok(outcome)
    }

    /// A revision found `pushing` from an earlier run: the billing system holds it (done), surely
    /// does not (send again), or it cannot be told yet.
    async fn resolve_left_pushing(
        &self,
        sink: &Sink,
        line: &LedgerLine,
        outcome: &mut PushOutcome,
    ) -> anyhow::Result<Resolved> {
        match sink.find(line).await {
            Ok(Some(external_id)) => {
                info!(key = %line.idempotency_key, %external_id, "recovered: the billing system already holds this revision");
                self.store.mark_pushed(line.id, &external_id).await?;
                outcome.pushed += 1;
                crate::observe::progress::lines_pushed(1);
                Ok(Resolved::Done)
            }
            Ok(None) => {
                let marked = line.updated_at;
                let settled_at = marked
                    + chrono::Duration::from_std(self.settle).unwrap_or(chrono::Duration::MAX);
                if Utc::now() < settled_at {
                    let message = format!(
                        "{}: sent to {} at {} and not found there yet; a billing system may store a request late, so it is not sent again before {} — run again after that",
                        line.idempotency_key,
                        line.sink,
                        marked.format("%H:%M:%S UTC"),
                        settled_at.format("%H:%M:%S UTC")
                    );
                    warn!(%message, "revision waits for its settle time");
                    self.store.record_push_error(line.id, &message).await?;
                    outcome.waiting += 1;
                    return Ok(Resolved::Unresolved);
                }
                info!(key = %line.idempotency_key, "recovered: the billing system does not hold this revision; sending it again");
                self.store.reset_to_approved(line.id).await?;
                Ok(Resolved::SendAgain)
            }
            Err(e) => {
                let message = format!(
                    "{}: cannot tell whether {} holds it: {e:#}",
                    line.idempotency_key, line.sink
                );
                error!(%message, "revision left pushing; the next run reads the billing system again");
                self.store.record_push_error(line.id, &message).await?;
                outcome.errors.push(message);
                Ok(Resolved::Unresolved)
            }
        }
    }

    /// Phase one, the request, phase two. `Some` when the answer was uncertain: the revision is
    /// left `pushing` for [`Self::settle_unsure`].
    async fn send(
        &self,
        sink: &Sink,
        mut line: LedgerLine,
        accepted: &AtomicU64,
        outcome: &mut PushOutcome,
    ) -> anyhow::Result<Option<Unsure>> {
        let marker = match sink.prepare(&line).await {
            Ok(marker) => marker,
            Err(e) => {
                let message = format!("{}: {e:#}", line.idempotency_key);
                self.store.record_push_error(line.id, &message).await?;
                outcome.errors.push(message);
                return Ok(None);
            }
        };
        self.store.mark_pushing(line.id, marker.as_deref()).await?;
        line.status = LineStatus::Pushing;
        line.push_marker = marker;
        let sent_at = Instant::now();
        match sink.push(&line).await {
            Ok(external_id) => {
                let accepted = accepted.fetch_add(1, Ordering::SeqCst) + 1;
                if self.faults.crash_after_accepted_pushes == Some(accepted) {
                    return Err(SimulatedCrash(format!(
                        "after the billing system accepted {accepted} revision(s), before the ledger recorded it"
                    ))
                    .into());
                }
                self.store.mark_pushed(line.id, &external_id).await?;
                outcome.pushed += 1;
                crate::observe::progress::lines_pushed(1);
                Ok(None)
            }
            Err(PushError::Rejected(reason)) => {
                self.refused(&line, &reason, outcome).await?;
                Ok(None)
            }
            Err(PushError::Uncertain(reason)) => {
                warn!(key = %line.idempotency_key, %reason, "uncertain answer; reading the billing system before anything is sent again");
                Ok(Some(Unsure {
                    line,
                    sent_at,
                    reason,
                }))
            }
        }
    }

    /// The batch path of a billing system with a [`Sink::batch_size`] (the file sink): phase one
    /// for every revision of the batch in one statement, one write, phase two for every revision
    /// the billing system accepted in one statement. Per revision the rule is the same as
    /// [`Self::send`]'s: nothing is sent before it is committed `pushing`, nothing is marked
    /// `pushed` before the billing system accepted it. Such a billing system finds a revision by
    /// its key alone, so there is no marker. Returns the revisions whose answer was uncertain,
    /// left `pushing` for [`Self::settle_unsure`].
    async fn send_batch(
        &self,
        sink: &Sink,
        mut lines: Vec<LedgerLine>,
        accepted: &AtomicU64,
        outcome: &mut PushOutcome,
    ) -> anyhow::Result<Vec<Unsure>> {
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        // The batch is the request: a stop requested while it was filling sends none of it.
        if self.shutdown.requested() {
            outcome.interrupted = true;
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = lines.iter().map(|l| l.id).collect();
        self.store.mark_pushing_many(&ids).await?;
        for line in &mut lines {
            line.status = LineStatus::Pushing;
            line.push_marker = None;
        }
        let sent_at = Instant::now();
        let results = sink.push_batch(&lines).await;
        // Anything else is a bug of the connector: the revisions stay `pushing`, and the next run
        // reads the billing system.
        anyhow::ensure!(
            results.len() == lines.len(),
            "{} answered {} results for a batch of {} revisions",
            sink.name(),
            results.len(),
            lines.len()
        );
        let mut pushed = Vec::with_capacity(lines.len());
        let mut unsure = Vec::new();
        for (line, result) in lines.into_iter().zip(results) {
            match result {
                Ok(external_id) => pushed.push((line.id, external_id)),
                Err(PushError::Rejected(reason)) => self.refused(&line, &reason, outcome).await?,
                Err(PushError::Uncertain(reason)) => {
                    warn!(key = %line.idempotency_key, %reason, "uncertain answer; reading the billing system before anything is sent again");
                    unsure.push(Unsure {
                        line,
                        sent_at,
                        reason,
                    });
                }
            }
        }
        let before = accepted.fetch_add(pushed.len() as u64, Ordering::SeqCst);
        let accepted = before + pushed.len() as u64;
        if let Some(crash_at) = self.faults.crash_after_accepted_pushes
            && before < crash_at
            && crash_at <= accepted
        {
            return Err(SimulatedCrash(format!(
                "after the billing system accepted {accepted} revision(s), the last {} in one \
                 batch, before the ledger recorded them",
                pushed.len()
            ))
            .into());
        }
        self.store.mark_pushed_many(&pushed).await?;
        outcome.pushed += pushed.len() as u64;
        crate::observe::progress::lines_pushed(pushed.len() as u64);
        Ok(unsure)
    }

    /// The billing system refused the revision: it goes back to `approved` with the reason, for
    /// the next run.
    async fn refused(
        &self,
        line: &LedgerLine,
        reason: &str,
        outcome: &mut PushOutcome,
    ) -> anyhow::Result<()> {
        let message = format!(
            "{} refused by {}: {reason}",
            line.idempotency_key, line.sink
        );
        warn!(%message, "push refused; the line stays approved and is retried on the next run");
        self.store.reset_to_approved(line.id).await?;
        self.store.record_push_error(line.id, &message).await?;
        outcome.errors.push(message);
        Ok(())
    }

    /// Resolves the revisions sent with an uncertain answer: found → pushed; absent once
    /// settled → sent again (at most `retries` times per revision, pausing longer each time);
    /// anything else stays `pushing` with its reason, for the next run.
    async fn settle_unsure(
        &self,
        mut unsure: Vec<Unsure>,
        accepted: &AtomicU64,
        outcome: &mut PushOutcome,
    ) -> anyhow::Result<()> {
        let mut attempt = 0u32;
        let mut quick = true;
        while !unsure.is_empty() {
            let wait = if quick {
                QUICK_LOOK
            } else {
                // Until the last one sent has settled.
                let newest = unsure
                    .iter()
                    .map(|u| u.sent_at)
                    .max()
                    .unwrap_or_else(Instant::now);
                (newest + self.settle).saturating_duration_since(Instant::now())
            };
            if !self.shutdown.sleep(wait).await {
                outcome.interrupted = true;
                return self
                    .leave_pushing(unsure, "a stop was requested", outcome)
                    .await;
            }
            let mut absent = Vec::new();
            for u in unsure {
                // The billing system of a revision sent in this run is configured.
                let Some(sink) = self.sink(&u.line.sink) else {
                    self.leave_pushing(vec![u], "its billing system is not configured", outcome)
                        .await?;
                    continue;
                };
                match sink.find(&u.line).await {
                    Ok(Some(external_id)) => {
                        info!(key = %u.line.idempotency_key, %external_id, "the answer was lost but the billing system holds the revision");
                        self.store.mark_pushed(u.line.id, &external_id).await?;
                        outcome.pushed += 1;
                        crate::observe::progress::lines_pushed(1);
                    }
                    Ok(None) => absent.push(u),
                    Err(e) => {
                        let why = format!("reading it back failed too: {e:#}");
                        self.leave_pushing(vec![u], &why, outcome).await?;
                    }
                }
            }
            if quick {
                // Not there after a quick look: look again once settled before deciding.
                quick = false;
                unsure = absent;
                continue;
            }
            if attempt >= self.retries {
                return self
                    .leave_pushing(absent, "still not there after the retries", outcome)
                    .await;
            }
            let pause = self
                .retry_backoff
                .saturating_mul(2u32.saturating_pow(attempt));
            attempt += 1;
            if !absent.is_empty() && !self.shutdown.sleep(pause).await {
                outcome.interrupted = true;
                return self
                    .leave_pushing(absent, "a stop was requested", outcome)
                    .await;
            }
            unsure = Vec::new();
            for u in absent {
                info!(key = %u.line.idempotency_key, attempt, "confirmed absent after the settle time; sending it again");
                let Some(sink) = self.sink(&u.line.sink) else {
                    self.leave_pushing(vec![u], "its billing system is not configured", outcome)
                        .await?;
                    continue;
                };
                self.store.reset_to_approved(u.line.id).await?;
                let mut line = u.line;
                line.status = LineStatus::Approved;
                line.push_marker = None;
                if let Some(again) = self.send(sink, line, accepted, outcome).await? {
                    unsure.push(again);
                }
            }
            quick = true;
        }
        Ok(())
    }

    /// Records why each revision stays `pushing`; the next run reads the billing system again.
    async fn leave_pushing(
        &self,
        unsure: Vec<Unsure>,
        why: &str,
        outcome: &mut PushOutcome,
    ) -> anyhow::Result<()> {
        for u in unsure {
            let message = format!(
                "{}: {} did not confirm the push ({}); {why}; left pushing, resolved on the next run",
                u.line.idempotency_key, u.line.sink, u.reason
            );
            warn!(%message, "uncertain push");
            self.store.record_push_error(u.line.id, &message).await?;
            outcome.errors.push(message);
        }
        Ok(())
    }
}

enum Resolved {
    Done,
    SendAgain,
    Unresolved,
}
