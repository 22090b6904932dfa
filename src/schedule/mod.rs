//! The schedule's rules: cron expressions as the daemon reads them, when a job fires next and
//! which billing month "now" is ([`clock`], pure). The daemon itself is a command
//! (`cli/daemon.rs`).

pub mod clock;

pub use clock::{CronSchedule, Months, late_window_end, months_at, next_fire};

/// Checks a cron expression with the parser the daemon uses, so that a bad one fails at
/// start-up (`tally check-config`) and not at midnight.
pub fn check_cron(expression: &str) -> Result<(), String> {
    CronSchedule::parse(expression).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_expressions_are_checked_with_the_daemon_parser() {
        assert!(check_cron("0 30 2 * * *").is_ok());
        assert!(
            check_cron("30 2 * * *").is_err(),
            "five fields lack the seconds"
        );
        assert!(check_cron("every night").is_err());
    }
}
