//! A period's plan written as it is planned: reconcile plans a batch of lines, the store writes
//! it in the run's one transaction, and the batch is dropped before the next one is planned.
//! Holding the whole plan first had been the run's memory peak (docs/PERFORMANCE.md).

use super::App;
use crate::domain::{LedgerChange, Period, RunException, SourceName};
use crate::reconcile::{Plan, Planner};
use crate::store::PlanFeed;

/// Changes planned and written at a time: a few hundred revisions' traces and samples, where a
/// period has one per line; the store splits the inserts into its own statements.
const CHANGES_PER_BATCH: usize = 500;

/// Plans every line with `planner` and writes the plan, with `found` (the extraction's
/// exceptions), the planner's own and `kept` (other customers' exceptions a run limited to one
/// customer leaves in place), in one transaction; gives the plan without its changes.
pub(super) async fn plan_and_write(
    app: &App,
    run_id: i64,
    period: Period,
    sources: &[SourceName],
    mut planner: Planner<'_>,
    found: &[RunException],
    kept: Vec<RunException>,
) -> anyhow::Result<Plan> {
    let mut feed = Feed {
        planner: &mut planner,
        period,
        found,
        kept,
    };
    app.store
        .apply_plan_fed(run_id, period, sources, &mut feed)
        .await?;
    Ok(planner.finish())
}

/// Plans every line (keeping the entries, for the dry run's listing) and drops the changes as
/// they are planned: nothing is written.
pub(super) fn plan_only(planner: Planner<'_>) -> Plan {
    let mut planner = planner.keeping_entries();
    while planner.next_changes(CHANGES_PER_BATCH).is_some() {}
    planner.finish()
}

/// The planner as the store reads it.
struct Feed<'p, 'a> {
    planner: &'p mut Planner<'a>,
    period: Period,
    found: &'p [RunException],
    kept: Vec<RunException>,
}

impl PlanFeed for Feed<'_, '_> {
    fn next_changes(&mut self) -> Option<Vec<LedgerChange>> {
        self.planner.next_changes(CHANGES_PER_BATCH)
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
