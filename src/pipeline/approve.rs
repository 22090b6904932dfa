//! Approving drafts and pushing approved lines: the one implementation behind `tally approve`,
//! `tally push` and the review page's buttons, so that a person's approval is recorded the same
//! way (who, when, note) and pushes exactly the same revisions wherever it was made. The caller
//! holds the writer lease.

use super::{Faults, PushOutcome};
use crate::config::Settings;
use crate::domain::{BillingAccount, Period};
use crate::problem::ConfigError;
use crate::shutdown::Shutdown;
use crate::store::{PushScope, Store};

/// Which drafts an approval takes.
#[derive(Debug, Clone, Copy)]
pub enum ApprovalScope<'a> {
    /// Every draft of the period.
    Period,
    /// The drafts of one billing account.
    Customer(&'a BillingAccount),
    /// These revisions, those of them still drafts.
    Lines(&'a [i64]),
}

/// Approves the period's drafts within `scope` as `by` with `note`; returns the ids of exactly
/// the revisions approved now.
pub async fn approve_drafts(
    store: &Store,
    period: Period,
    scope: ApprovalScope<'_>,
    by: &str,
    note: Option<&str>,
) -> anyhow::Result<Vec<i64>> {
    match scope {
        ApprovalScope::Period => store.approve(period, None, by, note).await,
        ApprovalScope::Customer(customer) => store.approve(period, Some(customer), by, note).await,
        ApprovalScope::Lines(ids) => store.approve_ids(period, ids, by, note).await,
    }
}

/// Pushes the period's approved lines within `scope`, building only the billing systems they
/// go to (so only their secrets are needed).
pub async fn push_approved(
    settings: &Settings,
    store: &Store,
    shutdown: &Shutdown,
    period: Period,
    scope: &PushScope<'_>,
) -> anyhow::Result<PushOutcome> {
    let queue = store.push_queue(period, scope).await?;
    let mut names: Vec<&str> = queue.iter().map(|q| q.sink.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let sinks = super::build_sinks(settings, &names).map_err(ConfigError)?;
    let faults = Faults::default();
    super::pusher(settings, store, &sinks, &faults, shutdown)
        .push_period(period, scope)
        .await
}
