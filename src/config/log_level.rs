//! The strict check of `log.level`: tracing's own lenient parse drops a directive it cannot
//! read with a line on stderr, so a typo would log something else than asked, silently.

use super::LogSettings;
use crate::problem::Problem;

impl LogSettings {
    /// Every directive of `level` that tracing would not take, at `log.level`. Parsed strictly,
    /// one directive at a time: tracing's lenient parse drops a bad directive (`tally=loud`)
    /// with a line on stderr and logs as if it were not there.
    pub fn problems(&self) -> Vec<Problem> {
        let level = &self.level;
        let hint = "write a level (error, warn, info, debug, trace, off) or target=level, \
                    separated by commas, e.g. \"info,tally=debug\"";
        if level.trim().is_empty() {
            return vec![Problem::new("log.level", format!("is empty: {hint}"))];
        }
        let mut problems = Vec::new();
        for (i, directive) in level.split(',').enumerate() {
            let number = i + 1;
            if directive.is_empty() {
                problems.push(Problem::new(
                    "log.level",
                    format!("directive {number} of {level:?} is empty (a stray comma): {hint}"),
                ));
            } else if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(directive) {
                problems.push(Problem::new(
                    "log.level",
                    format!("directive {number} {directive:?} is not valid ({e}): {hint}"),
                ));
            }
        }
        problems
    }
}
