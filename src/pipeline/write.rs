//! A period's plan made and written as the ledger is read: the ledger's revisions come in key
//! order as reconcile needs them, reconcile plans a batch of lines, the store writes it in the
//! run's one transaction, and the batch is dropped before the next one is planned. Holding the
//! whole plan, or the whole ledger, had been the run's memory peak (docs/PERFORMANCE.md).

use super::App;
use super::filter::CustomerFilter;
use crate::domain::{LedgerChange, LedgerLine, Period, RunException, SourceName};
use crate::reconcile::{Plan, Planner, Pushed};
use crate::store::PlanFeed;
use futures_util::TryStreamExt as _;
use futures_util::stream::BoxStream;

/// Changes planned and written at a time: a few hundred revisions' traces and samples, where a
/// period has one per line; the store splits the inserts into its own statements.
const CHANGES_PER_BATCH: usize = 500;

/// What the billing systems hold of the period per source (of one customer, if given), for the
/// under-billing guard: read before the first line is planned.
pub(super) async fn pushed(
    app: &App,
    period: Period,
    customer: Option<&CustomerFilter>,
) -> anyhow::Result<Pushed> {
    let mut pushed = Pushed::default();
    for (source, account, quantity) in app.store.sent_quantities(period).await? {
        if customer.is_none_or(|c| c.matches_account(&account)) {
            pushed.add(&source, quantity);
        }
    }
    Ok(pushed)
}

/// Plans every line with `planner` against the ledger and writes the plan, with `found` (the
/// extraction's exceptions), the planner's own and `kept` (other customers' exceptions a run
/// limited to one customer leaves in place), in one transaction; gives the plan without its
/// changes.
#[allow(clippy::too_many_arguments)] // each is one thing the run knows; a struct would only rename them
pub(super) async fn plan_and_write(
    app: &App,
    run_id: i64,
    period: Period,
    sources: &[SourceName],
    customer: Option<&CustomerFilter>,
    mut planner: Planner<'_>,
    found: &[RunException],
    kept: Vec<RunException>,
) -> anyhow::Result<Plan> {
    let mut feed = Feed {
        found,
        kept,
        ..Feed::new(app, &mut planner, period, customer)
    };
    app.store
        .apply_plan_fed(run_id, period, sources, &mut feed)
        .await?;
    drop(feed);
    Ok(planner.finish())
}

/// Plans every line (keeping the entries, for the dry run's listing) and drops the changes as
/// they are planned: nothing is written.
pub(super) async fn plan_only(
    app: &App,
    period: Period,
    customer: Option<&CustomerFilter>,
    planner: Planner<'_>,
) -> anyhow::Result<Plan> {
    let mut planner = planner.keeping_entries();
    let mut feed = Feed::new(app, &mut planner, period, customer);
    while feed.next_changes().await?.is_some() {}
    drop(feed);
    Ok(planner.finish())
}

/// The planner and the ledger as the store reads the plan.
struct Feed<'p, 'a> {
    planner: &'p mut Planner<'a>,
    ledger: BoxStream<'p, anyhow::Result<LedgerLine>>,
    /// A run limited to one customer plans only its lines: the others' revisions are neither
    /// reversed nor pushed.
    customer: Option<&'p CustomerFilter>,
    period: Period,
    found: &'p [RunException],
    kept: Vec<RunException>,
}

impl<'p, 'a> Feed<'p, 'a> {
    /// `planner` fed from the period's ledger, with no exceptions of the run's own.
    fn new(
        app: &'p App,
        planner: &'p mut Planner<'a>,
        period: Period,
        customer: Option<&'p CustomerFilter>,
    ) -> Self {
        Feed {
            planner,
            ledger: app.store.ledger_to_plan(period),
            customer,
            period,
            found: &[],
            kept: Vec::new(),
        }
    }
}

impl PlanFeed for Feed<'_, '_> {
    async fn next_changes(&mut self) -> anyhow::Result<Option<Vec<LedgerChange>>> {
        loop {
            if let Some(changes) = self.planner.next_changes(CHANGES_PER_BATCH) {
                return Ok(Some(changes));
            }
            if self.planner.done() {
                return Ok(None);
            }
            anyhow::ensure!(
                self.planner.needs_ledger(),
                "planning {}: the plan is neither done nor waiting for the ledger (a bug in tally; nothing was written)",
                self.period
            );
            while self.planner.needs_ledger() {
                match self.ledger.try_next().await? {
                    Some(revision) => {
                        let account = &revision.key.billing_account;
                        if self.customer.is_none_or(|c| c.matches_account(account)) {
                            self.planner.add_revision(revision);
                        }
                    }
                    None => self.planner.ledger_read(),
                }
            }
        }
    }

    fn exceptions(&mut self) -> Vec<RunException> {
        // Asked after the last batch: every line is planned, its conflicts are known.
        let planned = self.planner.exceptions(self.period);
        let mut all = Vec::with_capacity(self.found.len() + planned.len() + self.kept.len());
        all.extend_from_slice(self.found);
        all.extend(planned);
        all.append(&mut self.kept);
        all
    }
}
