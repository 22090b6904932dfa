//! Approval rules: which planned lines may be approved without a person, under
//! `billing.require_approval`. Pure: the planner asks [`ApprovalRule::approves`] with figures it
//! already holds.
//!
//! Billing tools tend to offer all-or-nothing approval; accountants want to look at what moved
//! and let the steady lines through. A rule lists thresholds, all of which must hold:
//!
//! - `below_amount`: the line's amount is below B (in absolute value);
//! - `max_change_percent` / `max_change_amount`: the line's amount differs from the amount the
//!   same line (account, license type, source) was last pushed with in an earlier period by at
//!   most P % / at most A currency units. A line with no earlier pushed period fails these.
//!
//! The first rule that holds approves the line as `rule:<name>`. A reversal (the line's data
//! vanished) is never approved by a rule: a customer who stops appearing is for a person to see.

use crate::problem::Problem;
use rust_decimal::Decimal;
use serde::Deserialize;

/// `[[billing.approval_rules]]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRule {
    /// Recorded as the approver: `rule:<name>`.
    pub name: String,
    /// Approve a line whose amount's absolute value is below this.
    #[serde(default)]
    pub below_amount: Option<Decimal>,
    /// Approve a line whose amount is within this many percent of its last pushed period's.
    #[serde(default)]
    pub max_change_percent: Option<Decimal>,
    /// Approve a line whose amount is within this many currency units of its last pushed
    /// period's.
    #[serde(default)]
    pub max_change_amount: Option<Decimal>,
}

impl ApprovalRule {
    /// The approver recorded on the lines this rule approves.
    pub fn approver(&self) -> String {
        format!("rule:{}", self.name)
    }

    /// Does this rule approve a line of `amount` whose last pushed period's amount was
    /// `previous` (`None`: never pushed before)?
    pub fn approves(&self, amount: Decimal, previous: Option<Decimal>) -> bool {
        if let Some(limit) = self.below_amount
            && amount.abs() >= limit
        {
            return false;
        }
        if self.max_change_percent.is_some() || self.max_change_amount.is_some() {
            let Some(previous) = previous else {
                return false;
            };
            // Checked: a figure near Decimal's bounds means "not approved", never a panic.
            let Some(change) = amount.checked_sub(previous).map(|d| d.abs()) else {
                return false;
            };
            if let Some(limit) = self.max_change_amount
                && change > limit
            {
                return false;
            }
            if let Some(percent) = self.max_change_percent {
                let allowed = previous
                    .abs()
                    .checked_mul(percent)
                    .and_then(|x| x.checked_div(Decimal::ONE_HUNDRED));
                match allowed {
                    Some(allowed) if change <= allowed => {}
                    _ => return false,
                }
            }
        }
        true
    }

    /// Every problem of the rule at `at` (`billing.approval_rules[0]`).
    pub fn validate(&self, at: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.name.trim().is_empty() || self.name.contains(char::is_whitespace) {
            problems.push(Problem::new(
                format!("{at}.name"),
                format!(
                    "{:?} is not a rule name: use one word, e.g. \"steady\"; approvals are recorded as rule:<name>",
                    self.name
                ),
            ));
        }
        if self.below_amount.is_none()
            && self.max_change_percent.is_none()
            && self.max_change_amount.is_none()
        {
            problems.push(Problem::new(
                at.to_owned(),
                "sets no threshold and would approve everything: set below_amount, \
                 max_change_percent and/or max_change_amount",
            ));
        }
        for (key, value) in [
            ("below_amount", self.below_amount),
            ("max_change_percent", self.max_change_percent),
            ("max_change_amount", self.max_change_amount),
        ] {
            if value.is_some_and(|v| v.is_sign_negative()) {
                problems.push(Problem::new(
                    format!("{at}.{key}"),
                    "is negative: a threshold is a size, 0 or more",
                ));
            }
        }
        problems
    }
}

/// The first rule that approves the line, if any.
pub fn first_approving(
    rules: &[ApprovalRule],
    amount: Decimal,
    previous: Option<Decimal>,
) -> Option<&ApprovalRule> {
    rules.iter().find(|r| r.approves(amount, previous))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn steady() -> ApprovalRule {
        ApprovalRule {
            name: "steady".into(),
            below_amount: None,
            max_change_percent: Some(dec!(5)),
            max_change_amount: Some(dec!(100)),
        }
    }

    #[test]
    fn a_steady_line_is_approved_and_an_outlier_is_not() {
        let rule = steady();
        assert!(rule.approves(dec!(1040.00), Some(dec!(1000.00))));
        assert!(
            rule.approves(dec!(1050.00), Some(dec!(1000.00))),
            "5 % exactly"
        );
        assert!(!rule.approves(dec!(1050.01), Some(dec!(1000.00))));
        // Within 5 % but more than 100 units.
        assert!(!rule.approves(dec!(10400.00), Some(dec!(10000.00))));
        assert!(
            !rule.approves(dec!(10.00), None),
            "never pushed before: waits"
        );
    }

    #[test]
    fn below_amount_approves_small_lines_only() {
        let rule = ApprovalRule {
            name: "small".into(),
            below_amount: Some(dec!(50)),
            max_change_percent: None,
            max_change_amount: None,
        };
        assert!(rule.approves(dec!(49.99), None));
        assert!(!rule.approves(dec!(50.00), None));
        assert!(!rule.approves(dec!(-60.00), None));
    }

    #[test]
    fn a_rule_without_thresholds_is_refused() {
        let rule = ApprovalRule {
            name: "all".into(),
            below_amount: None,
            max_change_percent: None,
            max_change_amount: None,
        };
        let problems = rule.validate("billing.approval_rules[0]");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].message.contains("would approve everything"));
    }

    #[test]
    fn extreme_figures_do_not_panic() {
        assert!(!steady().approves(Decimal::MAX, Some(Decimal::MIN)));
    }
}
