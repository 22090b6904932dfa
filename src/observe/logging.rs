//! The log: to stderr, as text for people or JSON for log collectors, filtered by `RUST_LOG` or
//! `log.level`, coloured only on a terminal, and with the chatter of the libraries tally uses
//! (sqlx's Postgres notices such as `relation "_sqlx_migrations" already exists, skipping`,
//! the scheduler's job bookkeeping) kept at `warn` unless the filter names them.

use crate::config::{LogFormat, LogSettings};
use std::io::IsTerminal as _;
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

/// Libraries whose `info` is about themselves, not about the run: `warn` unless the filter
/// names them (`RUST_LOG=info,sqlx=info` shows sqlx's notices again).
pub const QUIET_TARGETS: [&str; 2] = ["sqlx", "tokio_cron_scheduler"];

static FORMAT_OVERRIDE: OnceLock<LogFormat> = OnceLock::new();

/// `--log-format`: wins over `log.format` for every command of this process.
pub fn set_format_override(format: LogFormat) {
    let _ = FORMAT_OVERRIDE.set(format);
}

/// The format in force: `--log-format`, else `log.format`.
pub fn format(log: &LogSettings) -> LogFormat {
    FORMAT_OVERRIDE.get().copied().unwrap_or(log.format)
}

/// `filter` (comma-separated directives) with each quiet library at `warn`, unless a directive
/// names it: the most specific directive wins in tracing's filter, so `sqlx::query=debug` still
/// shows the queries while the rest of sqlx stays quiet.
pub fn with_quiet_dependencies(filter: &str) -> String {
    let named: Vec<&str> = filter
        .split(',')
        .map(|d| d.split(['=', '[']).next().unwrap_or("").trim())
        .collect();
    let mut out = filter.trim().trim_end_matches(',').to_owned();
    for target in QUIET_TARGETS {
        if !named.contains(&target) {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(target);
            out.push_str("=warn");
        }
    }
    out
}

/// Whether to colour a stream: only a terminal, and never when `NO_COLOR` is set to anything
/// but the empty string (no-color.org).
pub fn colour(is_terminal: bool, no_color: Option<&str>) -> bool {
    is_terminal && no_color.is_none_or(str::is_empty)
}

/// Logs to stderr, as text or JSON (`--log-format`, else `log.format`). `RUST_LOG` wins over
/// `default_level`, which wins over `log.level`; a filter that does not parse logs at `info`
/// (the configuration check that follows refuses a bad `log.level`, naming it).
pub fn init_logging(log: &LogSettings, default_level: Option<&str>) {
    let configured = default_level.unwrap_or(&log.level);
    let parse = |directives: &str| {
        EnvFilter::builder()
            .parse(with_quiet_dependencies(directives))
            .ok()
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| parse(&v))
        .or_else(|| parse(configured))
        .unwrap_or_else(|| EnvFilter::new(with_quiet_dependencies("info")));
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var("NO_COLOR").ok().as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(|| StderrBesideProgress);
    let _ = match format(log) {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// stderr, written around the progress bar when one is drawn: the bar is lifted, the log line
/// written, the bar drawn again below it, so that neither garbles the other.
struct StderrBesideProgress;

impl std::io::Write for StderrBesideProgress {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let write = || std::io::stderr().lock().write_all(buf);
        match super::progress::drawn_bar() {
            Some(bar) => bar.suspend(write)?,
            None => write()?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_are_quiet_unless_the_filter_names_them() {
        assert_eq!(
            with_quiet_dependencies("info"),
            "info,sqlx=warn,tokio_cron_scheduler=warn"
        );
        assert_eq!(
            with_quiet_dependencies("debug,sqlx=info"),
            "debug,sqlx=info,tokio_cron_scheduler=warn"
        );
        // A module of sqlx is more specific than `sqlx`: both directives hold.
        assert_eq!(
            with_quiet_dependencies("info,sqlx::query=debug"),
            "info,sqlx::query=debug,sqlx=warn,tokio_cron_scheduler=warn"
        );
        assert_eq!(
            with_quiet_dependencies(""),
            "sqlx=warn,tokio_cron_scheduler=warn"
        );
        for filter in ["info", "debug,sqlx=info", "warn,tally=debug", ""] {
            EnvFilter::builder()
                .parse(with_quiet_dependencies(filter))
                .unwrap();
        }
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("")));
        assert!(!colour(true, Some("1")));
        assert!(!colour(false, None));
    }
}
