//! Plans a period line by line in key order, against the ledger read in the same order, so that
//! its changes are written as they are planned and the ledger is read as it is needed: neither
//! the period's planned revisions (each with its trace and evidence sample) nor its ledger are
//! ever all held at once (docs/PERFORMANCE.md, "Memory"). Pure: no I/O; the caller reads.

use super::{Approvals, Plan, plan_line, shrinks};
use crate::domain::{InvoiceLine, LedgerChange, LedgerLine, Period, RunException, SourceName};
use rust_decimal::Decimal;
use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};

/// Plans the ledger changes for `computed` lines, whole: every change and every entry.
///
/// `ledger` holds every revision of the period for (at least) the sources in `sources`, in any
/// order; a ledger line of those sources with no computed line is taken to be zero now. Lines
/// of other sources are left alone, so that a run limited to one source touches only that
/// source. Of two computed lines with the same key, the later one counts.
pub fn plan(
    computed: Vec<InvoiceLine>,
    ledger: &[LedgerLine],
    sources: &[SourceName],
    approvals: &Approvals,
) -> Plan {
    let mut pushed = Pushed::default();
    for revision in ledger.iter().filter(|r| r.status.is_sent()) {
        pushed.add(&revision.key.source, revision.quantity);
    }
    let mut planner = Planner::new(computed, sources, approvals, &pushed).keeping_entries();
    let mut ordered: Vec<&LedgerLine> = ledger.iter().collect();
    ordered.sort_by(|a, b| (&a.key, a.revision).cmp(&(&b.key, b.revision)));
    for revision in ordered {
        planner.add_revision(revision.clone());
    }
    planner.ledger_read();
    planner.finish()
}

/// What the billing systems hold of a period, per source: the sum of the quantities of its
/// sent revisions (`pushing` or `pushed`), which the under-billing guard compares the source's
/// answer with. `None` when the sum is too large to compute.
#[derive(Debug, Clone, Default)]
pub struct Pushed(HashMap<SourceName, Option<Decimal>>);

impl Pushed {
    /// One sent revision's quantity.
    pub fn add(&mut self, source: &SourceName, quantity: Decimal) {
        let sum = self.0.entry(source.clone()).or_insert(Some(Decimal::ZERO));
        *sum = sum.and_then(|sum| sum.checked_add(quantity));
    }

    /// The source's sum (zero when nothing of it was sent).
    pub(super) fn of(&self, source: &SourceName) -> Option<Decimal> {
        self.0.get(source).copied().unwrap_or(Some(Decimal::ZERO))
    }
}

/// [`plan`] a line at a time. The caller hands the ledger over in key order
/// ([`Planner::add_revision`], then [`Planner::ledger_read`]) as [`Planner::needs_ledger`] asks
/// for it; [`Planner::next_changes`] plans the lines it can and hands their changes over in
/// batches; [`Planner::finish`] gives the plan (counts, conflicts, held credits, and the changes
/// not handed over).
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
    /// Revisions of `sources` read and not planned yet, in key order, then revision.
    ledger: VecDeque<LedgerLine>,
    /// Every revision has been handed over.
    ledger_read: bool,
    sources: &'a [SourceName],
    approvals: &'a Approvals,
    plan: Plan,
}

impl<'a> Planner<'a> {
    /// A planner of `computed` for `sources`, as [`plan`] describes. The under-billing guard
    /// compares whole sources (`pushed`), so it is decided here, before the first line.
    pub fn new(
        computed: Vec<InvoiceLine>,
        sources: &'a [SourceName],
        approvals: &'a Approvals,
        pushed: &Pushed,
    ) -> Self {
        let plan = Plan {
            shrinks: shrinks(pushed, &computed, sources, &approvals.shrink),
            ..Plan::default()
        };
        let mut order: Vec<usize> = (0..computed.len()).collect();
        order.sort_by(|&a, &b| computed[a].key.cmp(&computed[b].key));
        Planner {
            order: order.into_iter(),
            slots: computed.into_iter().map(Some).collect(),
            peeked: None,
            ledger: VecDeque::new(),
            // A plan of no source reads nothing of the ledger.
            ledger_read: sources.is_empty(),
            sources,
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

    /// The ledger's next revision, in key order then revision (a revision of another source is
    /// left alone).
    pub fn add_revision(&mut self, revision: LedgerLine) {
        if self.sources.contains(&revision.key.source) {
            self.ledger.push_back(revision);
        }
    }

    /// Every revision of the ledger has been handed over.
    pub fn ledger_read(&mut self) {
        self.ledger_read = true;
    }

    /// Whether the next line can only be planned once more of the ledger is handed over.
    pub fn needs_ledger(&mut self) -> bool {
        !self.ledger_read && !self.next_is_known()
    }

    /// Every line is planned and every change handed over.
    pub fn done(&mut self) -> bool {
        self.ledger_read && self.next_key_is_none() && self.plan.changes.is_empty()
    }

    /// Plans the lines it can, and hands over their changes once there are at least `batch` of
    /// them, or once the last line is planned (a line's changes are never split between
    /// batches); `None` when it needs more of the ledger first ([`Planner::needs_ledger`]) or
    /// when every change is handed over ([`Planner::done`]).
    pub fn next_changes(&mut self, batch: usize) -> Option<Vec<LedgerChange>> {
        while self.plan.changes.len() < batch && self.next_is_known() && self.plan_next_line() {}
        let finished = self.ledger_read && self.next_key_is_none();
        let full = self.plan.changes.len() >= batch;
        let last = finished && !self.plan.changes.is_empty();
        if !full && !last {
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

    /// Plans the lines left and gives the plan. Only once the whole ledger was handed over
    /// ([`Planner::ledger_read`]): a line is never planned against part of its history (a
    /// pushed line would be created again), so lines still waiting for the ledger are left.
    pub fn finish(mut self) -> Plan {
        debug_assert!(self.ledger_read, "finish before the ledger was read");
        while self.next_is_known() && self.plan_next_line() {}
        self.plan
    }

    /// The next computed line in key order.
    fn take_next(&mut self) -> Option<InvoiceLine> {
        let slots = &mut self.slots;
        self.order
            .by_ref()
            .find_map(|at| slots.get_mut(at).and_then(Option::take))
    }

    fn peek(&mut self) {
        if self.peeked.is_none() {
            self.peeked = self.take_next();
        }
    }

    /// No line and no revision is left to plan (as far as the ledger was handed over).
    fn next_key_is_none(&mut self) -> bool {
        self.peek();
        self.peeked.is_none() && self.ledger.is_empty()
    }

    /// Every revision of the next key to plan has been handed over: the ledger is read, or it
    /// has been read past that key.
    fn next_is_known(&mut self) -> bool {
        if self.ledger_read {
            return true;
        }
        self.peek();
        let (Some(first), Some(last)) = (self.ledger.front(), self.ledger.back()) else {
            return false;
        };
        let next = match &self.peeked {
            Some(line) if line.key < first.key => &line.key,
            _ => &first.key,
        };
        last.key > *next
    }

    /// Plans the next key of either side (a merge of the computed lines and the ledger, both in
    /// key order); `false` when both are exhausted.
    fn plan_next_line(&mut self) -> bool {
        self.peek();
        let order = match (&self.peeked, self.ledger.front()) {
            (None, None) => return false,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(line), Some(revision)) => line.key.cmp(&revision.key),
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
        let mut revisions = Vec::new();
        if order != Ordering::Less
            && let Some(first) = self.ledger.pop_front()
        {
            while let Some(next) = self.ledger.front()
                && next.key == first.key
            {
                revisions.extend(self.ledger.pop_front());
            }
            revisions.insert(0, first);
        }
        revisions.sort_by_key(|r| r.revision);
        let key = match (&line, revisions.first()) {
            (Some(line), _) => line.key.clone(),
            (None, Some(revision)) => revision.key.clone(),
            (None, None) => return true,
        };
        let revisions: Vec<&LedgerLine> = revisions.iter().collect();
        plan_line(&key, line, &revisions, self.approvals, &mut self.plan);
        true
    }
}
