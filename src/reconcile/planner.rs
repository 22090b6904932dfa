//! Plans a period line by line in key order, so that its changes can be written as they are
//! planned: a period's planned revisions (each with its trace and evidence sample) are then
//! never all held at once (docs/PERFORMANCE.md, "Memory"). Pure: no I/O.

use super::{Approvals, Plan, plan_line, shrinks};
use crate::domain::Period;
use crate::domain::{InvoiceLine, LedgerChange, LedgerLine, LineKey, RunException, SourceName};
use std::cmp::Ordering;
use std::collections::{BTreeMap, btree_map};
use std::iter::Peekable;

/// Plans the ledger changes for `computed` lines, whole: every change and every entry.
///
/// `ledger` holds every revision of the period for (at least) the sources in `sources`; a
/// ledger line of those sources with no computed line is taken to be zero now. Lines of other
/// sources are left alone, so that a run limited to one source touches only that source. Of
/// two computed lines with the same key, the later one counts.
pub fn plan(
    computed: Vec<InvoiceLine>,
    ledger: &[LedgerLine],
    sources: &[SourceName],
    approvals: &Approvals,
) -> Plan {
    Planner::new(computed, ledger, sources, approvals)
        .keeping_entries()
        .finish()
}

/// [`plan`] a line at a time: [`Planner::next_changes`] plans whole lines until a batch of
/// changes is ready and hands it over; [`Planner::finish`] plans the rest and gives the plan
/// (counts, conflicts, held credits, and the changes not handed over).
///
/// The computed lines are taken, not borrowed: each one's trace and evidence move into the
/// revision planned for it, and leave with its batch.
pub struct Planner<'a> {
    /// The computed lines in key order, as positions into `slots` (a stable sort of the lines
    /// themselves would allocate half of them again as scratch); each is taken out of its slot
    /// when it is reached.
    order: std::vec::IntoIter<usize>,
    slots: Vec<Option<InvoiceLine>>,
    /// The next line in key order, taken out of its slot to be compared.
    peeked: Option<InvoiceLine>,
    /// The ledger's revisions of `sources`, by line, in key order.
    history: Peekable<btree_map::IntoIter<&'a LineKey, Vec<&'a LedgerLine>>>,
    approvals: &'a Approvals,
    plan: Plan,
}

impl<'a> Planner<'a> {
    /// A planner of `computed` against `ledger`, as [`plan`] describes. The under-billing guard
    /// compares whole sources, so it is decided here, before the first line is planned.
    pub fn new(
        computed: Vec<InvoiceLine>,
        ledger: &'a [LedgerLine],
        sources: &[SourceName],
        approvals: &'a Approvals,
    ) -> Self {
        let mut history: BTreeMap<&LineKey, Vec<&LedgerLine>> = BTreeMap::new();
        for revision in ledger.iter().filter(|l| sources.contains(&l.key.source)) {
            history.entry(&revision.key).or_default().push(revision);
        }
        let plan = Plan {
            shrinks: shrinks(&history, &computed, sources, &approvals.shrink),
            ..Plan::default()
        };
        let mut order: Vec<usize> = (0..computed.len()).collect();
        order.sort_by(|&a, &b| computed[a].key.cmp(&computed[b].key));
        Planner {
            order: order.into_iter(),
            slots: computed.into_iter().map(Some).collect(),
            peeked: None,
            history: history.into_iter().peekable(),
            approvals,
            plan,
        }
    }

    /// Keeps every line's entry in the plan (for `--dry-run`'s listing).
    pub fn keeping_entries(mut self) -> Self {
        self.plan.keep_entries = true;
        // One entry per line: sized once rather than grown by doubling.
        self.plan.entries.reserve_exact(self.slots.len());
        self
    }

    /// The changes of the next lines in key order, at least `batch` of them unless the plan
    /// runs out first (a line's changes are never split between batches); `None` once every
    /// line is planned and every change handed over.
    pub fn next_changes(&mut self, batch: usize) -> Option<Vec<LedgerChange>> {
        while self.plan.changes.len() < batch && self.plan_next_line() {}
        if self.plan.changes.is_empty() {
            return None;
        }
        Some(std::mem::replace(
            &mut self.plan.changes,
            Vec::with_capacity(batch),
        ))
    }

    /// What a person must look at ([`Plan::exceptions`]); complete once every line is planned.
    pub fn exceptions(&self, period: Period) -> Vec<RunException> {
        self.plan.exceptions(period)
    }

    /// Plans the lines left and gives the plan.
    pub fn finish(mut self) -> Plan {
        while self.plan_next_line() {}
        self.plan
    }

    /// The next computed line in key order.
    fn take_next(&mut self) -> Option<InvoiceLine> {
        let slots = &mut self.slots;
        self.order
            .by_ref()
            .find_map(|at| slots.get_mut(at).and_then(Option::take))
    }

    /// Plans the next key of either side (a merge of the computed lines and the ledger, both in
    /// key order); `false` when both are exhausted.
    fn plan_next_line(&mut self) -> bool {
        if self.peeked.is_none() {
            self.peeked = self.take_next();
        }
        let order = match (&self.peeked, self.history.peek()) {
            (None, None) => return false,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(line), Some((key, _))) => line.key.cmp(key),
        };
        let mut line = None;
        if order != Ordering::Greater {
            line = self.peeked.take();
            // Of two computed lines with one key, the later one counts.
            loop {
                match self.take_next() {
                    Some(later) if line.as_ref().is_some_and(|l| l.key == later.key) => {
                        line = Some(later);
                    }
                    other => {
                        self.peeked = other;
                        break;
                    }
                }
            }
        }
        let mut revisions = match order {
            Ordering::Less => Vec::new(),
            _ => self
                .history
                .next()
                .map(|(_, revisions)| revisions)
                .unwrap_or_default(),
        };
        revisions.sort_by_key(|r| r.revision);
        let key = match (&line, revisions.first()) {
            (Some(line), _) => line.key.clone(),
            (None, Some(revision)) => revision.key.clone(),
            (None, None) => return true,
        };
        plan_line(&key, line, &revisions, self.approvals, &mut self.plan);
        true
    }
}
