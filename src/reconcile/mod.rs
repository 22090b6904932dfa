//! Reconcile: compares the lines a run computed with the ledger and plans the changes
//! (create / update a draft / adjust a pushed line / unchanged). Pure: no I/O.
//!
//! The rules (docs/LEDGER.md, "The life cycle of a revision"):
//! - a line never seen before is created as revision 1;
//! - a line with nothing sent yet is updated in place (a draft may change freely);
//! - a line the billing system already holds is never edited: the difference between what it
//!   should be now and what was sent becomes one adjustment revision (the delta);
//! - a line that has disappeared (no records any more) is brought to zero the same way;
//! - a line that is the same as before plans nothing, so a re-run pushes nothing.
//!
//! An adjustment or a reversal goes where the pushed line went: the billing system recorded on
//! the sent revisions, never today's routing (a customer who left is usually no longer routed
//! anywhere). A line whose routing changed after it was pushed is a conflict for a person.

pub mod approval;
mod planner;
pub mod shrink;

pub use planner::{Planner, Pushed, plan};

use crate::domain::{
    Approval, BillingAccount, Currency, Evidence, ExceptionKind, InvoiceLine, LedgerChange,
    LedgerLine, LicenseType, LineKey, LineStatus, NewRevision, Period, REVERSAL_REASON,
    RunException, SourceName, checked_sum,
};
use approval::ApprovalRule;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use shrink::ShrinkGuard;
use std::collections::{BTreeMap, HashMap};

/// A line across periods: what approval rules compare with the line's last pushed period.
pub type LineIdentity = (BillingAccount, LicenseType, SourceName);

/// How the planned lines get approved.
#[derive(Debug, Clone)]
pub struct Approvals {
    /// `billing.require_approval`: new figures wait as drafts unless a rule approves them.
    pub required: bool,
    /// `billing.approval_rules`, tried in order.
    pub rules: Vec<ApprovalRule>,
    /// The amount each line was last pushed with in an earlier period (total of its sent
    /// revisions in the latest such period).
    pub previous: HashMap<LineIdentity, Decimal>,
    /// When a rule's approval is recorded as made.
    pub now: DateTime<Utc>,
    /// `billing.shrink_guard`: credits of a source that answered far less wait for a person.
    pub shrink: ShrinkGuard,
}

impl Approvals {
    /// No approval required: every planned revision is approved as it is planned.
    pub fn not_required() -> Self {
        Approvals {
            required: false,
            rules: Vec::new(),
            previous: HashMap::new(),
            now: Utc::now(),
            shrink: ShrinkGuard::default(),
        }
    }

    /// Every planned revision waits for a person.
    pub fn by_person() -> Self {
        Approvals {
            required: true,
            ..Approvals::not_required()
        }
    }

    /// The status and approval of a revision bringing the line to `amount` (`reversal`: the
    /// line's data vanished).
    fn decide(
        &self,
        key: &LineKey,
        amount: Decimal,
        reversal: bool,
    ) -> (LineStatus, Option<Approval>) {
        if !self.required {
            return (LineStatus::Approved, None);
        }
        if reversal {
            return (LineStatus::Draft, None);
        }
        let identity = (
            key.billing_account.clone(),
            key.license_type.clone(),
            key.source.clone(),
        );
        match approval::first_approving(&self.rules, amount, self.previous.get(&identity).copied())
        {
            Some(rule) => (
                LineStatus::Approved,
                Some(Approval {
                    by: rule.approver(),
                    at: self.now,
                    note: None,
                }),
            ),
            None => (LineStatus::Draft, None),
        }
    }
}

/// What the plan does to one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A new line, revision 1.
    Create,
    /// A line not yet sent gets new values in place.
    Update,
    /// A pushed line changed: one adjustment revision with the delta.
    Adjust,
    /// Nothing to do.
    Unchanged,
}

/// One line of the plan, as `--dry-run` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanEntry {
    pub action: Action,
    pub key: LineKey,
    /// The line's quantity and amount after the plan.
    pub quantity: Decimal,
    pub amount: Decimal,
    pub currency: Currency,
    /// What changes in the billing system: the revision to send (delta for an adjustment).
    pub delta_quantity: Decimal,
    pub delta_amount: Decimal,
    /// The line had been approved and its figures changed: it is a draft again.
    pub back_to_review: bool,
    /// The line was priced this run; `false` for a line nothing was computed for any more
    /// (brought to zero). The period's totals add up the priced lines.
    #[serde(skip)]
    pub priced: bool,
}

/// A line that cannot be reconciled automatically; reported, never pushed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conflict {
    pub key: LineKey,
    pub message: String,
}

/// A source that answered far less than its pushed lines imply ([`shrink`]): its credits and
/// reversals wait for a person.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shrink {
    pub source: SourceName,
    /// The quantity of the period's lines as pushed.
    pub pushed_quantity: Decimal,
    /// The quantity the source's answer comes to now.
    pub quantity: Decimal,
    /// Credits and reversals of the source held as drafts.
    pub held: u64,
}

/// The changes to write, and what they mean for the people reading the plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    /// The changes planned and not yet handed over to be written ([`Planner::next_changes`]).
    pub changes: Vec<LedgerChange>,
    /// Every line's entry, as `--dry-run` lists them; kept only by a plan made to keep them
    /// ([`plan`], [`Planner::keeping_entries`]). [`Plan::counts`] is kept either way.
    pub entries: Vec<PlanEntry>,
    /// What the entries add up to.
    pub counts: PlanCounts,
    pub conflicts: Vec<Conflict>,
    /// Sources whose answer shrank suspiciously, with their held credits.
    pub shrinks: Vec<Shrink>,
    /// Lines held as drafts by the per-line guard (`shrink_guard.max_line_drop`) alone.
    pub held_lines: Vec<HeldLine>,
    #[serde(skip)]
    keep_entries: bool,
}

/// A plan's entries counted, and its priced lines added up, as they are planned: what the run
/// summary says, without holding an entry per line.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PlanCounts {
    pub created: u64,
    pub updated: u64,
    pub adjusted: u64,
    pub unchanged: u64,
    /// Lines whose figures changed after approval, now drafts again.
    pub back_to_review: u64,
    /// Changes that leave a draft (inserted or updated as one): what a dry run would leave
    /// waiting for approval.
    pub drafts: u64,
    /// The period's total per currency (code) of the lines priced; a conflict is not priced.
    pub totals: BTreeMap<String, Decimal>,
    /// The first currency whose total became too large to compute; nothing is added after it.
    pub total_too_large: Option<Currency>,
}

/// A line whose quantity fell by more than `shrink_guard.max_line_drop`: its credit waits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeldLine {
    pub key: LineKey,
    pub pushed_quantity: Decimal,
    pub quantity: Decimal,
}

impl Plan {
    pub fn count(&self, action: Action) -> u64 {
        match action {
            Action::Create => self.counts.created,
            Action::Update => self.counts.updated,
            Action::Adjust => self.counts.adjusted,
            Action::Unchanged => self.counts.unchanged,
        }
    }

    /// One line planned: counted, added to the totals if priced, kept if entries are kept.
    fn enter(&mut self, entry: PlanEntry) {
        let counts = &mut self.counts;
        *match entry.action {
            Action::Create => &mut counts.created,
            Action::Update => &mut counts.updated,
            Action::Adjust => &mut counts.adjusted,
            Action::Unchanged => &mut counts.unchanged,
        } += 1;
        counts.back_to_review += u64::from(entry.back_to_review);
        if entry.priced && counts.total_too_large.is_none() {
            let total = counts
                .totals
                .entry(entry.currency.code().to_owned())
                .or_default();
            match total.checked_add(entry.amount) {
                Some(sum) => *total = sum,
                None => counts.total_too_large = Some(entry.currency),
            }
        }
        if self.keep_entries {
            self.entries.push(entry);
        }
    }

    /// One change planned, to be handed over to be written.
    fn change(&mut self, change: LedgerChange) {
        let leaves_draft = match &change {
            LedgerChange::Insert(values) | LedgerChange::Update { values, .. } => {
                values.status == LineStatus::Draft
            }
            LedgerChange::Delete { .. } => false,
        };
        self.counts.drafts += u64::from(leaves_draft);
        self.changes.push(change);
    }

    /// What a person must look at, as exceptions of the run: every conflict (`not_billable`),
    /// and the under-billing guard's findings (`suspicious_shrink`), so that the nightly
    /// schedule reports them (exit 3) and the accountant sees why credits wait.
    pub fn exceptions(&self, period: Period) -> Vec<RunException> {
        let mut out: Vec<RunException> = self
            .conflicts
            .iter()
            .map(|conflict| RunException {
                period,
                source: conflict.key.source.clone(),
                kind: ExceptionKind::NotBillable,
                customer_key: String::new(),
                item: String::new(),
                billing_account: Some(conflict.key.billing_account.clone()),
                license_type: Some(conflict.key.license_type.clone()),
                quantity: Decimal::ZERO,
                record_count: 0,
                message: conflict.message.clone(),
            })
            .collect();
        for shrink in &self.shrinks {
            out.push(RunException {
            period,
            source: shrink.source.clone(),
            kind: ExceptionKind::SuspiciousShrink,
            customer_key: String::new(),
            item: String::new(),
            billing_account: None,
            license_type: None,
            quantity: shrink.quantity,
            record_count: 0,
            message: format!(
                "{} answered a quantity of {} for {period} where {} was pushed (billing.shrink_guard.max_source_drop): {} credit(s) and reversal(s) wait for approval instead of being pushed; check the source, then run again or approve them with `tally approve --period {period}`",
                shrink.source, shrink.quantity, shrink.pushed_quantity, shrink.held
            ),
        });
        }
        for held in &self.held_lines {
            out.push(RunException {
            period,
            source: held.key.source.clone(),
            kind: ExceptionKind::SuspiciousShrink,
            customer_key: String::new(),
            item: String::new(),
            billing_account: Some(held.key.billing_account.clone()),
            license_type: Some(held.key.license_type.clone()),
            quantity: held.quantity,
            record_count: 0,
            message: format!(
                "the line fell from {} to {} (billing.shrink_guard.max_line_drop): its credit waits for approval; check the source, then approve it with `tally approve --period {period} --customer {}`",
                held.pushed_quantity, held.quantity, held.key.billing_account
            ),
        });
        }
        out
    }

    /// Lines whose figures changed after approval, now drafts again.
    pub fn back_to_review(&self) -> u64 {
        self.counts.back_to_review
    }
}

/// The sources of `sources` whose computed quantity fell suspiciously below what was pushed
/// for them this period.
fn shrinks(
    pushed: &Pushed,
    computed: &[InvoiceLine],
    sources: &[SourceName],
    guard: &ShrinkGuard,
) -> Vec<Shrink> {
    let mut out = Vec::new();
    for source in sources {
        let pushed = pushed.of(source);
        let now = checked_sum(
            computed
                .iter()
                .filter(|l| &l.key.source == source)
                .map(|l| l.quantity),
        );
        let (Some(pushed), Some(now)) = (pushed, now) else {
            // Figures too large to add up are not a reason to credit anything: hold.
            out.push(Shrink {
                source: source.clone(),
                pushed_quantity: pushed.unwrap_or(Decimal::MAX),
                quantity: now.unwrap_or(Decimal::MAX),
                held: 0,
            });
            continue;
        };
        if guard.source_shrank(pushed, now) {
            out.push(Shrink {
                source: source.clone(),
                pushed_quantity: pushed,
                quantity: now,
                held: 0,
            });
        }
    }
    out
}

fn plan_line(
    key: &LineKey,
    wanted: Option<InvoiceLine>,
    revisions: &[&LedgerLine],
    approvals: &Approvals,
    plan: &mut Plan,
) {
    let sent: Vec<&LedgerLine> = revisions
        .iter()
        .copied()
        .filter(|r| r.status.is_sent())
        .collect();
    let pending: Vec<&LedgerLine> = revisions
        .iter()
        .copied()
        .filter(|r| !r.status.is_sent())
        .collect();
    let sums = (
        checked_sum(sent.iter().map(|r| r.quantity)),
        checked_sum(sent.iter().map(|r| r.amount)),
    );
    let (Some(sent_quantity), Some(sent_amount)) = sums else {
        plan.conflicts.push(too_large(key));
        return;
    };
    let next_revision = revisions.iter().map(|r| r.revision).max().unwrap_or(0) + 1;

    // A line with nothing computed any more is zero now, in the currency it was billed in.
    let Some(currency) = wanted
        .as_ref()
        .map(|w| w.currency)
        .or_else(|| revisions.last().map(|r| r.currency))
    else {
        return;
    };
    if let Some(first) = sent.first()
        && first.currency != currency
    {
        plan.conflicts.push(Conflict {
                key: key.clone(),
                message: format!(
                    "the line was pushed in {} and is now priced in {}; an adjustment cannot change currency — credit it by hand or restore the account's currency",
                    first.currency, currency
                ),
            });
        return;
    }
    // Where the billing system holds the line: adjustments and reversals go there.
    let sent_sink = sent.last().map(|r| r.sink.as_str());
    if let (Some(pushed_to), Some(w)) = (sent_sink, &wanted)
        && pushed_to != w.sink
    {
        plan.conflicts.push(Conflict {
            key: key.clone(),
            message: format!(
                "the line was pushed to {pushed_to} and the account is now billed in {}; an adjustment cannot move a line between billing systems — credit it in {pushed_to} by hand or route the account back",
                w.sink
            ),
        });
        return;
    }
    let (quantity, amount) = wanted
        .as_ref()
        .map(|w| (w.quantity, w.amount))
        .unwrap_or_default();
    let priced = wanted.is_some();
    let deltas = (
        quantity.checked_sub(sent_quantity),
        amount.checked_sub(sent_amount),
    );
    let (Some(delta_quantity), Some(delta_amount)) = deltas else {
        plan.conflicts.push(too_large(key));
        return;
    };

    let entry = |action: Action| PlanEntry {
        action,
        key: key.clone(),
        quantity,
        amount,
        currency,
        delta_quantity,
        delta_amount,
        back_to_review: false,
        priced,
    };

    // Several unsent revisions cannot arise from this planner; if they do, keep the newest and
    // delete the rest so that only one unsent revision carries the difference.
    let (keep, extra) = match pending.split_last() {
        Some((last, rest)) => (Some(*last), rest),
        None => (None, &[][..]),
    };
    for stale in extra {
        plan.change(LedgerChange::Delete { id: stale.id });
    }

    if delta_quantity.is_zero() && delta_amount.is_zero() {
        // Already billed exactly as computed (or nothing to bill and nothing billed).
        if let Some(draft) = keep {
            plan.change(LedgerChange::Delete { id: draft.id });
        }
        if priced || !sent.is_empty() {
            plan.enter(entry(Action::Unchanged));
        }
        return;
    }

    // A credit or reversal the guard holds waits for a person, whatever the approval settings.
    let credit =
        !sent.is_empty() && (delta_quantity < Decimal::ZERO || delta_amount < Decimal::ZERO);
    let source_held = credit && plan.shrinks.iter().any(|s| s.source == key.source);
    let line_held = credit && approvals.shrink.line_shrank(sent_quantity, quantity);
    let (new_status, new_approval) = if source_held || line_held {
        if let Some(shrink) = plan.shrinks.iter_mut().find(|s| s.source == key.source) {
            shrink.held += 1;
        } else {
            plan.held_lines.push(HeldLine {
                key: key.clone(),
                pushed_quantity: sent_quantity,
                quantity,
            });
        }
        (LineStatus::Draft, None)
    } else {
        approvals.decide(key, amount, !priced)
    };
    let mut values = revision_values(
        key,
        wanted,
        currency,
        (delta_quantity, delta_amount),
        (quantity, amount),
        new_status,
    );
    values.approval = new_approval;
    if let Some(pushed_to) = sent_sink {
        values.sink = pushed_to.to_owned();
    }
    match keep {
        Some(draft) => {
            let values = NewRevision {
                revision: draft.revision,
                ..values
            };
            // A draft this run would approve is approved now, its figures changed or not: a
            // draft the daemon held back (the month to date) is pushed by the month's normal
            // run, and one waiting for a person is approved by a rule that now allows it.
            let approved_now =
                draft.status == LineStatus::Draft && new_status == LineStatus::Approved;
            if same_values(draft, &values) && !approved_now {
                plan.enter(entry(Action::Unchanged));
            } else {
                // New evidence or trace with the same money keeps the draft's approval.
                let money_changed =
                    draft.quantity != values.quantity || draft.amount != values.amount;
                let (status, approval) = if money_changed || approved_now {
                    (new_status, values.approval.clone())
                } else {
                    (draft.status, draft.approval.clone())
                };
                let back_to_review = money_changed
                    && draft.status == LineStatus::Approved
                    && status == LineStatus::Draft;
                plan.change(LedgerChange::Update {
                    id: draft.id,
                    values: NewRevision {
                        status,
                        approval,
                        ..values
                    },
                    back_to_review,
                });
                let mut line = entry(match (money_changed, sent.is_empty()) {
                    (false, _) => Action::Unchanged,
                    (true, true) => Action::Update,
                    (true, false) => Action::Adjust,
                });
                line.back_to_review = back_to_review;
                plan.enter(line);
            }
        }
        None => {
            plan.change(LedgerChange::Insert(NewRevision {
                revision: next_revision,
                ..values
            }));
            plan.enter(entry(if sent.is_empty() {
                Action::Create
            } else {
                Action::Adjust
            }));
        }
    }
}

/// A line whose figures do not add up within a `Decimal`: for a person, never a revision.
fn too_large(key: &LineKey) -> Conflict {
    Conflict {
        key: key.clone(),
        message: "the line's revisions add up to a figure too large to compute; correct the line by hand in the billing system and the ledger".into(),
    }
}

/// The revision bringing `key` to `total` (quantity, amount) by `delta`. With nothing computed
/// any more, it is the reversal of the pushed line, with its reason in the trace.
fn revision_values(
    key: &LineKey,
    wanted: Option<InvoiceLine>,
    currency: Currency,
    (delta_quantity, delta_amount): (Decimal, Decimal),
    (total_quantity, total_amount): (Decimal, Decimal),
    status: LineStatus,
) -> NewRevision {
    let (rate, price_ref, trace, evidence, sink) = match wanted {
        Some(w) => (w.rate, w.price_ref, w.trace, w.evidence, w.sink),
        None => (
            Decimal::ZERO,
            String::new(),
            serde_json::json!({ "reason": REVERSAL_REASON }).into(),
            Evidence::default(),
            String::new(),
        ),
    };
    NewRevision {
        key: key.clone(),
        revision: 0,
        quantity: delta_quantity,
        amount: delta_amount,
        rate,
        currency,
        total_quantity,
        total_amount,
        price_ref,
        trace,
        evidence,
        sink,
        status,
        approval: None,
    }
}

fn same_values(current: &LedgerLine, values: &NewRevision) -> bool {
    current.quantity == values.quantity
        && current.amount == values.amount
        && current.rate == values.rate
        && current.currency == values.currency
        && current.total_quantity == values.total_quantity
        && current.total_amount == values.total_amount
        && current.price_ref == values.price_ref
        && current.evidence == values.evidence
        && current.sink == values.sink
        && current.trace == values.trace
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BillingAccount, Evidence, LicenseType};
    use chrono::Utc;
    use rust_decimal_macros::dec;

    fn key(account: &str) -> LineKey {
        LineKey {
            period: "2026-10".parse().unwrap(),
            billing_account: BillingAccount::new(account),
            license_type: LicenseType::new("Agent"),
            source: SourceName::new("billable_users"),
        }
    }

    fn eur() -> Currency {
        "EUR".parse().unwrap()
    }

    fn computed(account: &str, quantity: Decimal, amount: Decimal) -> InvoiceLine {
        InvoiceLine {
            key: key(account),
            quantity,
            rate: dec!(10.00),
            amount,
            currency: eur(),
            price_ref: "p1@open".into(),
            trace: crate::domain::Trace::empty(),
            evidence: Evidence {
                record_count: 1,
                hash: "h".into(),
                sample: Default::default(),
            },
            sink: "rambase".into(),
        }
    }

    /// The ledger row that applying `values` (as revision `id`) with `status` would leave.
    fn stored(id: i64, values: &NewRevision, status: LineStatus) -> LedgerLine {
        LedgerLine {
            id,
            key: values.key.clone(),
            revision: values.revision,
            idempotency_key: values.key.idempotency_key(values.revision),
            quantity: values.quantity,
            amount: values.amount,
            rate: values.rate,
            currency: values.currency,
            total_quantity: values.total_quantity,
            total_amount: values.total_amount,
            price_ref: values.price_ref.clone(),
            trace: values.trace.clone(),
            evidence: values.evidence.clone(),
            sink: values.sink.clone(),
            status,
            external_id: None,
            push_marker: None,
            last_error: None,
            approval: values.approval.clone(),
            run_id: 1,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            pushed_at: None,
        }
    }

    fn sources() -> Vec<SourceName> {
        vec![SourceName::new("billable_users")]
    }

    fn inserted(plan: &Plan) -> Vec<&NewRevision> {
        plan.changes
            .iter()
            .filter_map(|c| match c {
                LedgerChange::Insert(v) => Some(v),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_new_line_is_created_as_revision_one() {
        let plan = plan(
            vec![computed("A", dec!(3), dec!(30.00))],
            &[],
            &sources(),
            &Approvals::not_required(),
        );
        let new = inserted(&plan);
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].revision, 1);
        assert_eq!(new[0].quantity, dec!(3));
        assert_eq!(new[0].amount, dec!(30.00));
        assert_eq!(new[0].status, LineStatus::Approved);
        assert_eq!(plan.count(Action::Create), 1);
    }

    #[test]
    fn under_approval_new_lines_wait_as_drafts() {
        let plan = plan(
            vec![computed("A", dec!(3), dec!(30.00))],
            &[],
            &sources(),
            &Approvals::by_person(),
        );
        assert_eq!(inserted(&plan)[0].status, LineStatus::Draft);
    }

    #[test]
    fn rerun_of_an_unchanged_pushed_line_plans_nothing() {
        let first = plan(
            vec![computed("A", dec!(3), dec!(30.00))],
            &[],
            &sources(),
            &Approvals::not_required(),
        );
        let ledger = vec![stored(1, inserted(&first)[0], LineStatus::Pushed)];
        let again = plan(
            vec![computed("A", dec!(3), dec!(30.00))],
            &ledger,
            &sources(),
            &Approvals::not_required(),
        );
        assert!(again.changes.is_empty());
        assert_eq!(again.count(Action::Unchanged), 1);
    }

    #[test]
    fn rerun_of_an_unchanged_draft_plans_nothing() {
        let first = plan(
            vec![computed("A", dec!(3), dec!(30.00))],
            &[],
            &sources(),
            &Approvals::by_person(),
        );
        let ledger = vec![stored(1, inserted(&first)[0], LineStatus::Draft)];
        let again = plan(
            vec![computed("A", dec!(3), dec!(30.00))],
            &ledger,
            &sources(),
            &Approvals::by_person(),
        );
        assert!(again.changes.is_empty(), "{:?}", again.changes);
    }

    #[test]
    fn a_held_draft_is_approved_by_the_next_run_that_approves() {
        // The daemon's month-to-date run keeps every line a draft (as under approval); the
        // month's normal run, with no approval required, approves it unchanged in place.
        let held = plan(
            vec![computed("A", dec!(3), dec!(30.00))],
            &[],
            &sources(),
            &Approvals::by_person(),
        );
        let ledger = vec![stored(7, inserted(&held)[0], LineStatus::Draft)];
        let normal = plan(
            vec![computed("A", dec!(3), dec!(30.00))],
            &ledger,
            &sources(),
            &Approvals::not_required(),
        );
        match normal.changes.as_slice() {
            [LedgerChange::Update { id: 7, values, .. }] => {
                assert_eq!(values.status, LineStatus::Approved);
                assert_eq!(values.revision, 1, "the same revision, never a second line");
            }
            other => panic!("expected the draft approved in place, got {other:?}"),
        }
        assert_eq!(
            normal.count(Action::Unchanged),
            1,
            "its figures did not change"
        );
    }

    #[test]
    fn a_changed_draft_is_updated_in_place() {
        let first = plan(
            vec![computed("A", dec!(3), dec!(30.00))],
            &[],
            &sources(),
            &Approvals::not_required(),
        );
        let ledger = vec![stored(7, inserted(&first)[0], LineStatus::Approved)];
        let again = plan(
            vec![computed("A", dec!(5), dec!(50.00))],
            &ledger,
            &sources(),
            &Approvals::not_required(),
        );
        match again.changes.as_slice() {
            [LedgerChange::Update { id: 7, values, .. }] => {
                assert_eq!(values.revision, 1);
                assert_eq!(values.quantity, dec!(5));
                assert_eq!(values.amount, dec!(50.00));
            }
            other => panic!("expected one update, got {other:?}"),
        }
        assert_eq!(again.count(Action::Update), 1);
    }

    #[test]
    fn a_changed_pushed_line_gets_one_adjustment_with_the_delta() {
        let first = plan(
            vec![computed("A", dec!(3), dec!(30.00))],
            &[],
            &sources(),
            &Approvals::not_required(),
        );
        let ledger = vec![stored(1, inserted(&first)[0], LineStatus::Pushed)];
        let again = plan(
            vec![computed("A", dec!(5), dec!(50.00))],
            &ledger,
            &sources(),
            &Approvals::not_required(),
        );
        let new = inserted(&again);
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].revision, 2);
        assert_eq!(new[0].quantity, dec!(2));
        assert_eq!(new[0].amount, dec!(20.00));
        assert_eq!(new[0].total_quantity, dec!(5));
        assert_eq!(new[0].total_amount, dec!(50.00));
        assert_eq!(again.count(Action::Adjust), 1);

        // Once the adjustment is pushed, the same figures plan nothing more.
        let mut ledger = ledger;
        ledger.push(stored(2, new[0], LineStatus::Pushed));
        let third = plan(
            vec![computed("A", dec!(5), dec!(50.00))],
            &ledger,
            &sources(),
            &Approvals::not_required(),
        );
        assert!(third.changes.is_empty());
    }

    #[test]
    fn an_unsent_adjustment_is_updated_not_duplicated() {
        let first = plan(
            vec![computed("A", dec!(3), dec!(30.00))],
            &[],
            &sources(),
            &Approvals::not_required(),
        );
        let mut ledger = vec![stored(1, inserted(&first)[0], LineStatus::Pushed)];
        let second = plan(
            vec![computed("A", dec!(5), dec!(50.00))],
            &ledger,
            &sources(),
            &Approvals::not_required(),
        );
        ledger.push(stored(2, inserted(&second)[0], LineStatus::Approved));
        let third = plan(
            vec![computed("A", dec!(4), dec!(40.00))],
            &ledger,
            &sources(),
            &Approvals::not_required(),
        );
        match third.changes.as_slice() {
            [LedgerChange::Update { id: 2, values, .. }] => {
                assert_eq!(values.revision, 2);
                assert_eq!(values.quantity, dec!(1));
                assert_eq!(values.amount, dec!(10.00));
            }
            other => panic!("expected the adjustment updated, got {other:?}"),
        }
    }

    #[test]
    fn an_unsent_adjustment_back_to_the_pushed_figures_is_deleted() {
        let first = plan(
            vec![computed("A", dec!(3), dec!(30.00))],
            &[],
            &sources(),
            &Approvals::not_required(),
        );
        let mut ledger = vec![stored(1, inserted(&first)[0], LineStatus::Pushed)];
        let second = plan(
            vec![computed("A", dec!(5), dec!(50.00))],
            &ledger,
            &sources(),
            &Approvals::not_required(),
        );
        ledger.push(stored(2, inserted(&second)[0], LineStatus::Approved));
        let third = plan(
            vec![computed("A", dec!(3), dec!(30.00))],
            &ledger,
            &sources(),
            &Approvals::not_required(),
        );
        assert_eq!(third.changes, vec![LedgerChange::Delete { id: 2 }]);
        assert_eq!(third.count(Action::Unchanged), 1);
    }

    #[test]
    fn a_pushed_line_with_no_records_any_more_is_credited_in_full() {
        let first = plan(
            vec![computed("A", dec!(3), dec!(30.00))],
            &[],
            &sources(),
            &Approvals::not_required(),
        );
        let ledger = vec![stored(1, inserted(&first)[0], LineStatus::Pushed)];
        let again = plan(vec![], &ledger, &sources(), &Approvals::not_required());
        let new = inserted(&again);
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].quantity, dec!(-3));
        assert_eq!(new[0].amount, dec!(-30.00));
        assert_eq!(new[0].total_amount, dec!(0));
    }

    /// The ledger after pushing `lines` (account, quantity, amount) with no approval needed.
    fn pushed_month(lines: &[(&str, Decimal, Decimal)]) -> Vec<LedgerLine> {
        let computed: Vec<InvoiceLine> =
            lines.iter().map(|(a, q, m)| computed(a, *q, *m)).collect();
        let first = plan(
            computed.clone(),
            &[],
            &sources(),
            &Approvals::not_required(),
        );
        inserted(&first)
            .into_iter()
            .enumerate()
            .map(|(i, v)| stored(i as i64 + 1, v, LineStatus::Pushed))
            .collect()
    }

    fn good_month() -> Vec<LedgerLine> {
        pushed_month(&[
            ("A", dec!(12), dec!(120.00)),
            ("B", dec!(7), dec!(70.00)),
            ("C", dec!(25), dec!(250.00)),
            ("D", dec!(3), dec!(30.00)),
        ])
    }

    #[test]
    fn a_source_that_answers_nothing_after_a_good_month_credits_nothing_without_a_person() {
        let again = plan(
            vec![],
            &good_month(),
            &sources(),
            &Approvals::not_required(),
        );
        let new = inserted(&again);
        assert_eq!(new.len(), 4, "every line is reversed, as a draft");
        assert!(
            new.iter()
                .all(|r| r.status == LineStatus::Draft && r.approval.is_none())
        );
        let amounts: Vec<Decimal> = new.iter().map(|r| r.amount).collect();
        assert_eq!(
            amounts,
            [dec!(-120.00), dec!(-70.00), dec!(-250.00), dec!(-30.00)]
        );
        assert_eq!(
            again.shrinks,
            vec![Shrink {
                source: SourceName::new("billable_users"),
                pushed_quantity: dec!(47),
                quantity: dec!(0),
                held: 4,
            }]
        );
    }

    #[test]
    fn a_source_that_answers_a_tenth_holds_its_credits_but_not_its_new_lines() {
        let again = plan(
            vec![
                computed("A", dec!(2), dec!(20.00)),
                computed("E", dec!(2), dec!(20.00)),
            ],
            &good_month(),
            &sources(),
            &Approvals::not_required(),
        );
        let new = inserted(&again);
        let held: Vec<&str> = new
            .iter()
            .filter(|r| r.status == LineStatus::Draft)
            .map(|r| r.key.billing_account.as_str())
            .collect();
        assert_eq!(held, ["A", "B", "C", "D"]);
        let e = new
            .iter()
            .find(|r| r.key.billing_account.as_str() == "E")
            .unwrap();
        assert_eq!(e.status, LineStatus::Approved, "a new line is not a credit");
        assert_eq!(again.shrinks[0].held, 4);
    }

    #[test]
    fn a_customer_who_leaves_is_reversed_at_once() {
        let again = plan(
            vec![
                computed("A", dec!(12), dec!(120.00)),
                computed("C", dec!(25), dec!(250.00)),
                computed("D", dec!(3), dec!(30.00)),
            ],
            &good_month(),
            &sources(),
            &Approvals::not_required(),
        );
        let new = inserted(&again);
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].key.billing_account.as_str(), "B");
        assert_eq!(new[0].amount, dec!(-70.00));
        assert_eq!(new[0].status, LineStatus::Approved);
        assert!(again.shrinks.is_empty());
    }

    #[test]
    fn the_guard_can_be_turned_off_and_a_line_guard_on() {
        let off = Approvals {
            shrink: ShrinkGuard::off(),
            ..Approvals::not_required()
        };
        let again = plan(vec![], &good_month(), &sources(), &off);
        assert!(
            inserted(&again)
                .iter()
                .all(|r| r.status == LineStatus::Approved)
        );
        assert!(again.shrinks.is_empty());

        let per_line = Approvals {
            shrink: ShrinkGuard {
                max_line_drop: Some(dec!(0.5)),
                ..ShrinkGuard::default()
            },
            ..Approvals::not_required()
        };
        // A falls from 12 to 5 (58 %): held; C from 25 to 20: through.
        let lines = [
            computed("A", dec!(5), dec!(50.00)),
            computed("B", dec!(7), dec!(70.00)),
            computed("C", dec!(20), dec!(200.00)),
            computed("D", dec!(3), dec!(30.00)),
        ];
        let again = plan(lines.to_vec(), &good_month(), &sources(), &per_line);
        let statuses: Vec<(&str, LineStatus)> = inserted(&again)
            .iter()
            .map(|r| (r.key.billing_account.as_str(), r.status))
            .collect();
        assert_eq!(
            statuses,
            [("A", LineStatus::Draft), ("C", LineStatus::Approved)]
        );
        assert_eq!(again.held_lines.len(), 1);
        assert_eq!(again.held_lines[0].pushed_quantity, dec!(12));
    }

    #[test]
    fn revisions_too_large_to_add_up_are_a_conflict_not_a_panic() {
        let mut ledger = pushed_month(&[("A", dec!(1), Decimal::MAX)]);
        let mut second = ledger[0].clone();
        second.id = 2;
        second.revision = 2;
        ledger.push(second);
        let again = plan(
            vec![computed("A", dec!(1), dec!(10.00))],
            &ledger,
            &sources(),
            &Approvals::not_required(),
        );
        assert!(again.changes.is_empty());
        assert_eq!(again.conflicts.len(), 1);
        assert!(again.conflicts[0].message.contains("too large"));
    }

    #[test]
    fn a_draft_with_no_records_any_more_is_removed() {
        let first = plan(
            vec![computed("A", dec!(3), dec!(30.00))],
            &[],
            &sources(),
            &Approvals::by_person(),
        );
        let ledger = vec![stored(4, inserted(&first)[0], LineStatus::Draft)];
        let again = plan(vec![], &ledger, &sources(), &Approvals::by_person());
        assert_eq!(again.changes, vec![LedgerChange::Delete { id: 4 }]);
    }

    #[test]
    fn lines_of_other_sources_are_left_alone() {
        let first = plan(
            vec![computed("A", dec!(3), dec!(30.00))],
            &[],
            &sources(),
            &Approvals::not_required(),
        );
        let ledger = vec![stored(1, inserted(&first)[0], LineStatus::Pushed)];
        let again = plan(
            vec![],
            &ledger,
            &[SourceName::new("ccc")],
            &Approvals::not_required(),
        );
        assert!(again.changes.is_empty());
        assert!(again.entries.is_empty());
    }

    #[test]
    fn a_line_being_pushed_is_not_edited() {
        let first = plan(
            vec![computed("A", dec!(3), dec!(30.00))],
            &[],
            &sources(),
            &Approvals::not_required(),
        );
        let ledger = vec![stored(1, inserted(&first)[0], LineStatus::Pushing)];
        let again = plan(
            vec![computed("A", dec!(4), dec!(40.00))],
            &ledger,
            &sources(),
            &Approvals::not_required(),
        );
        // The revision in flight counts as sent: the change becomes an adjustment.
        let new = inserted(&again);
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].revision, 2);
        assert_eq!(new[0].quantity, dec!(1));
    }

    #[test]
    fn a_changed_approved_draft_needs_approval_again() {
        let first = plan(
            vec![computed("A", dec!(3), dec!(30.00))],
            &[],
            &sources(),
            &Approvals::by_person(),
        );
        let ledger = vec![stored(1, inserted(&first)[0], LineStatus::Approved)];
        let again = plan(
            vec![computed("A", dec!(4), dec!(40.00))],
            &ledger,
            &sources(),
            &Approvals::by_person(),
        );
        match again.changes.as_slice() {
            [LedgerChange::Update { values, .. }] => assert_eq!(values.status, LineStatus::Draft),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_currency_change_on_a_pushed_line_is_a_conflict_not_an_adjustment() {
        let first = plan(
            vec![computed("A", dec!(3), dec!(30.00))],
            &[],
            &sources(),
            &Approvals::not_required(),
        );
        let ledger = vec![stored(1, inserted(&first)[0], LineStatus::Pushed)];
        let mut usd = computed("A", dec!(3), dec!(33.00));
        usd.currency = "USD".parse().unwrap();
        let again = plan(vec![usd], &ledger, &sources(), &Approvals::not_required());
        assert!(again.changes.is_empty());
        assert_eq!(again.conflicts.len(), 1);
    }

    #[test]
    fn a_vanished_line_is_reversed_in_the_billing_system_it_was_pushed_to() {
        let first = plan(
            vec![computed("A", dec!(7), dec!(70.00))],
            &[],
            &sources(),
            &Approvals::not_required(),
        );
        let mut pushed = stored(1, inserted(&first)[0], LineStatus::Pushed);
        // Pushed to ActivePlatform; today's routing no longer knows the account at all.
        pushed.sink = "activeplatform".into();
        let again = plan(vec![], &[pushed], &sources(), &Approvals::not_required());
        let new = inserted(&again);
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].sink, "activeplatform");
        assert_eq!(new[0].key.billing_account.as_str(), "A");
        assert_eq!(new[0].quantity, dec!(-7));
        assert_eq!(new[0].amount, dec!(-70.00));
        assert_eq!(new[0].trace.reason().as_deref(), Some(REVERSAL_REASON));
        assert_eq!(again.count(Action::Adjust), 1);
    }

    #[test]
    fn an_unsent_reversal_with_a_lost_billing_system_is_repaired() {
        let first = plan(
            vec![computed("A", dec!(7), dec!(70.00))],
            &[],
            &sources(),
            &Approvals::not_required(),
        );
        let pushed = stored(1, inserted(&first)[0], LineStatus::Pushed);
        let again = plan(
            vec![],
            std::slice::from_ref(&pushed),
            &sources(),
            &Approvals::not_required(),
        );
        // What an earlier tally stored: the reversal with no billing system.
        let mut broken = stored(2, inserted(&again)[0], LineStatus::Approved);
        broken.sink = String::new();
        let repaired = plan(
            vec![],
            &[pushed, broken],
            &sources(),
            &Approvals::not_required(),
        );
        match repaired.changes.as_slice() {
            [LedgerChange::Update { id: 2, values, .. }] => assert_eq!(values.sink, "rambase"),
            other => panic!("expected the reversal re-routed, got {other:?}"),
        }
    }

    #[test]
    fn a_pushed_line_now_routed_elsewhere_is_a_conflict() {
        let first = plan(
            vec![computed("A", dec!(3), dec!(30.00))],
            &[],
            &sources(),
            &Approvals::not_required(),
        );
        let ledger = vec![stored(1, inserted(&first)[0], LineStatus::Pushed)];
        let mut moved = computed("A", dec!(4), dec!(40.00));
        moved.sink = "file".into();
        let again = plan(vec![moved], &ledger, &sources(), &Approvals::not_required());
        assert!(again.changes.is_empty());
        assert_eq!(again.conflicts.len(), 1);
        assert!(again.conflicts[0].message.contains("pushed to rambase"));
    }

    #[test]
    fn an_approved_line_whose_figures_change_is_back_in_review() {
        let first = plan(
            vec![computed("A", dec!(3), dec!(30.00))],
            &[],
            &sources(),
            &Approvals::by_person(),
        );
        let mut approved = stored(1, inserted(&first)[0], LineStatus::Approved);
        approved.approval = Some(Approval {
            by: "kari".into(),
            at: Utc::now(),
            note: None,
        });
        let again = plan(
            vec![computed("A", dec!(4), dec!(40.00))],
            &[approved],
            &sources(),
            &Approvals::by_person(),
        );
        match again.changes.as_slice() {
            [LedgerChange::Update { values, .. }] => {
                assert_eq!(values.status, LineStatus::Draft);
                assert_eq!(values.approval, None, "the old approval is void");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(again.back_to_review(), 1);
    }

    #[test]
    fn a_rule_approves_a_steady_line_and_leaves_an_outlier_waiting() {
        let mut approvals = Approvals::by_person();
        approvals.rules = vec![ApprovalRule {
            name: "steady".into(),
            below_amount: None,
            max_change_percent: Some(dec!(10)),
            max_change_amount: None,
        }];
        for account in ["A", "B"] {
            approvals.previous.insert(
                (
                    BillingAccount::new(account),
                    LicenseType::new("Agent"),
                    SourceName::new("billable_users"),
                ),
                dec!(100.00),
            );
        }
        let planned = plan(
            vec![
                computed("A", dec!(10.5), dec!(105.00)),
                computed("B", dec!(20), dec!(200.00)),
            ],
            &[],
            &sources(),
            &approvals,
        );
        let new = inserted(&planned);
        assert_eq!(new[0].status, LineStatus::Approved);
        assert_eq!(
            new[0].approval.as_ref().map(|a| a.by.as_str()),
            Some("rule:steady")
        );
        assert_eq!(new[1].status, LineStatus::Draft, "doubled: a person looks");
        assert_eq!(new[1].approval, None);
    }

    #[test]
    fn the_later_of_two_computed_lines_with_one_key_counts_and_reversals_are_not_priced() {
        let first = plan(
            vec![
                computed("B", dec!(1), dec!(10.00)),
                computed("A", dec!(3), dec!(30.00)),
                computed("A", dec!(5), dec!(50.00)),
            ],
            &[],
            &sources(),
            &Approvals::not_required(),
        );
        let new: Vec<(&str, Decimal)> = inserted(&first)
            .iter()
            .map(|v| (v.key.billing_account.as_str(), v.quantity))
            .collect();
        assert_eq!(new, [("A", dec!(5)), ("B", dec!(1))]);
        assert!(first.entries.iter().all(|e| e.priced));

        // A month later B is gone: its reversal is planned, and it is not a priced line.
        let ledger: Vec<LedgerLine> = inserted(&first)
            .into_iter()
            .enumerate()
            .map(|(i, v)| stored(i as i64 + 1, v, LineStatus::Pushed))
            .collect();
        let again = plan(
            vec![computed("A", dec!(5), dec!(50.00))],
            &ledger,
            &sources(),
            &Approvals::not_required(),
        );
        let priced: Vec<(&str, bool, Decimal)> = again
            .entries
            .iter()
            .map(|e| (e.key.billing_account.as_str(), e.priced, e.delta_amount))
            .collect();
        assert_eq!(priced, [("A", true, dec!(0)), ("B", false, dec!(-10.00))]);
    }

    #[test]
    fn a_plan_handed_over_in_batches_is_the_whole_plan_with_no_line_split() {
        let pushed = |id: i64, account: &str, quantity: Decimal, amount: Decimal| {
            let line = computed(account, quantity, amount);
            let values = revision_values(
                &line.key.clone(),
                Some(line),
                eur(),
                (quantity, amount),
                (quantity, amount),
                LineStatus::Pushed,
            );
            stored(
                id,
                &NewRevision {
                    revision: 1,
                    ..values
                },
                LineStatus::Pushed,
            )
        };
        // Two unsent revisions of D (a stale one is deleted next to the one kept), a pushed
        // line changed (B), one pushed and gone (C), one unchanged (E), two new (A, F).
        let mut stale = pushed(4, "D", dec!(1), dec!(10.00));
        stale.status = LineStatus::Draft;
        let mut kept = pushed(5, "D", dec!(1), dec!(10.00));
        (kept.status, kept.revision) = (LineStatus::Draft, 2);
        let ledger = vec![
            pushed(1, "B", dec!(2), dec!(20.00)),
            pushed(2, "C", dec!(4), dec!(40.00)),
            pushed(3, "E", dec!(1), dec!(10.00)),
            stale,
            kept,
        ];
        let lines = || {
            vec![
                computed("F", dec!(6), dec!(60.00)),
                computed("A", dec!(3), dec!(30.00)),
                computed("B", dec!(5), dec!(50.00)),
                computed("D", dec!(7), dec!(70.00)),
                computed("E", dec!(1), dec!(10.00)),
            ]
        };
        let approvals = Approvals::by_person();
        let whole = plan(lines(), &ledger, &sources(), &approvals);
        assert_eq!(whole.entries.len(), 6);
        assert_eq!(whole.counts.totals["EUR"], dec!(220.00));
        assert_eq!(
            (
                whole.counts.created,
                whole.counts.adjusted,
                whole.counts.unchanged
            ),
            (2, 2, 1)
        );

        let mut pushed = Pushed::default();
        for revision in ledger.iter().filter(|r| r.status.is_sent()) {
            pushed.add(&revision.key.source, revision.quantity);
        }
        let mut ordered = ledger.clone();
        ordered.sort_by(|a, b| (&a.key, a.revision).cmp(&(&b.key, b.revision)));
        let sources = sources();
        for batch in [1, 2, 100] {
            let mut planner = Planner::new(lines(), &sources, &approvals, &pushed);
            // The ledger handed over in key order, a revision at a time, when asked for.
            let mut unread = ordered.iter();
            let mut batches = Vec::new();
            let mut read_before_first_batch = None;
            loop {
                if let Some(changes) = planner.next_changes(batch) {
                    read_before_first_batch.get_or_insert(ledger.len() - unread.len());
                    batches.push(changes);
                    continue;
                }
                if planner.done() {
                    break;
                }
                assert!(planner.needs_ledger(), "batches of {batch}");
                match unread.next() {
                    Some(revision) => planner.add_revision(revision.clone()),
                    None => planner.ledger_read(),
                }
            }
            if batch == 1 {
                // A's creation is planned once the ledger is read past A: at B's revision.
                assert_eq!(read_before_first_batch, Some(1));
            }
            let rest = planner.finish();
            assert!(
                rest.changes.is_empty() && rest.entries.is_empty(),
                "{batch}"
            );
            assert_eq!(rest.counts, whole.counts, "batches of {batch}");
            assert_eq!(batches.concat(), whole.changes, "batches of {batch}");
            // D's delete and update come in one batch, whatever the batch size.
            let with_d: Vec<usize> = batches
                .iter()
                .enumerate()
                .filter(|(_, b)| {
                    b.iter().any(|c| match c {
                        LedgerChange::Delete { id } => *id == 4 || *id == 5,
                        LedgerChange::Update { values, .. } | LedgerChange::Insert(values) => {
                            values.key.billing_account.as_str() == "D"
                        }
                    })
                })
                .map(|(at, _)| at)
                .collect();
            assert_eq!(with_d.len(), 1, "batches of {batch}: {batches:?}");
        }
    }
}
