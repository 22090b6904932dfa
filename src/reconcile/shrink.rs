//! The under-billing guard: a source that suddenly answers far less than the period's pushed
//! lines imply is more likely broken (an empty answer, a redirect to the wrong host, a lost
//! page) than a month in which every customer left. Pure: the planner asks it with figures it
//! already holds.
//!
//! Reversals of vanished lines are right when one customer leaves; they are a disaster when
//! the source lied. So the guard looks at the whole source first:
//!
//! - a source whose total quantity for the period fell by more than `max_source_drop` (a
//!   fraction, default 0.9) of what was pushed for it — zero records included — is a
//!   *suspicious shrink*: every credit and reversal of that source waits for a person, even
//!   without `billing.require_approval`, and the run reports an exception saying why;
//! - optionally (`max_line_drop`, off by default), one line whose quantity fell by more than
//!   that fraction of what was pushed waits for a person too, whatever the rest of the source
//!   does. Off by default, because a customer who leaves is the normal case of a reversal.
//!
//! Quantities of one source can mix units (users, minutes); the source-level comparison is a
//! smoke alarm for "far less than before", not an accounting figure.

use crate::problem::Problem;
use rust_decimal::Decimal;
use serde::Deserialize;

/// `[billing.shrink_guard]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShrinkGuard {
    /// False turns the guard off: credits follow the source at once.
    pub enabled: bool,
    /// A source whose quantity fell by more than this fraction (0 < f ≤ 1) of its pushed
    /// quantity for the period is suspicious. 1 means only "nothing at all".
    pub max_source_drop: Decimal,
    /// A line whose quantity fell by more than this fraction of its pushed quantity waits for
    /// a person. None: no per-line guard.
    pub max_line_drop: Option<Decimal>,
}

impl Default for ShrinkGuard {
    fn default() -> Self {
        ShrinkGuard {
            enabled: true,
            max_source_drop: Decimal::new(9, 1),
            max_line_drop: None,
        }
    }
}

impl ShrinkGuard {
    /// The guard switched off (tests and configurations that want credits at once).
    pub fn off() -> Self {
        ShrinkGuard {
            enabled: false,
            ..ShrinkGuard::default()
        }
    }

    /// Did the quantity fall from `pushed` to `now` by more than `fraction` of `pushed`?
    fn dropped(fraction: Decimal, pushed: Decimal, now: Decimal) -> bool {
        if pushed <= Decimal::ZERO {
            return false;
        }
        // Checked: figures near Decimal's bounds count as "dropped", so a person looks.
        match pushed
            .checked_sub(now)
            .and_then(|fall| fall.checked_div(pushed))
        {
            Some(share) => share > fraction,
            None => true,
        }
    }

    /// Is a source whose lines were pushed with `pushed` in all, and now come to `now`, a
    /// suspicious shrink?
    pub fn source_shrank(&self, pushed: Decimal, now: Decimal) -> bool {
        self.enabled && Self::dropped(self.max_source_drop, pushed, now)
    }

    /// Must one line going from `pushed` to `now` wait for a person on its own?
    pub fn line_shrank(&self, pushed: Decimal, now: Decimal) -> bool {
        self.enabled
            && self
                .max_line_drop
                .is_some_and(|fraction| Self::dropped(fraction, pushed, now))
    }

    /// Every problem of `[billing.shrink_guard]`.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let fraction = |at: &str, value: Decimal, problems: &mut Vec<Problem>| {
            if value <= Decimal::ZERO || value > Decimal::ONE {
                problems.push(Problem::new(
                    format!("billing.shrink_guard.{at}"),
                    format!(
                        "is {value}: expected a fraction above 0 and at most 1 (0.9 = a fall of more than 90 %)"
                    ),
                ));
            }
        };
        fraction("max_source_drop", self.max_source_drop, &mut problems);
        if let Some(line) = self.max_line_drop {
            fraction("max_line_drop", line, &mut problems);
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn nothing_at_all_after_a_pushed_month_is_suspicious() {
        let guard = ShrinkGuard::default();
        assert!(guard.source_shrank(dec!(47), dec!(0)));
        assert!(guard.source_shrank(dec!(47), dec!(4)));
        // One customer of several leaving is a normal month.
        assert!(!guard.source_shrank(dec!(47), dec!(35)));
        assert!(!guard.source_shrank(dec!(47), dec!(5)));
        // Nothing pushed yet: nothing to compare with.
        assert!(!guard.source_shrank(dec!(0), dec!(0)));
        assert!(!ShrinkGuard::off().source_shrank(dec!(47), dec!(0)));
    }

    #[test]
    fn the_line_guard_is_off_unless_configured() {
        let mut guard = ShrinkGuard::default();
        assert!(!guard.line_shrank(dec!(12), dec!(0)));
        guard.max_line_drop = Some(dec!(0.5));
        assert!(guard.line_shrank(dec!(12), dec!(5)));
        assert!(!guard.line_shrank(dec!(12), dec!(6)));
    }

    #[test]
    fn fractions_outside_zero_to_one_are_refused() {
        let guard = ShrinkGuard {
            enabled: true,
            max_source_drop: dec!(1.5),
            max_line_drop: Some(dec!(0)),
        };
        let problems = guard.validate();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].at, "billing.shrink_guard.max_source_drop");
        assert_eq!(problems[1].at, "billing.shrink_guard.max_line_drop");
    }
}
