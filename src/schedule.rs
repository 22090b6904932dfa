//! The schedule's rules: cron expressions as the daemon reads them (tokio-cron-scheduler).
//! The daemon itself is a command (`cli/daemon.rs`).

use tokio_cron_scheduler::Job;

/// Checks a cron expression with the parser the daemon uses, so that a bad one fails at
/// start-up (`tally check-config`) and not at midnight.
pub fn check_cron(expression: &str) -> Result<(), String> {
    Job::new_async_tz(expression, chrono::Utc, |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|_| {
            format!(
                "invalid cron expression {expression:?}: expected six fields with seconds, `sec min hour day-of-month month day-of-week`, e.g. \"0 30 2 * * *\" for 02:30 every night"
            )
        })
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
