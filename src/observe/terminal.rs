//! How wide the output may be: tables are fitted to it.
//!
//! `COLUMNS` when set (a shell exports it to scripts on request, and it lets a test or an
//! operator ask for a width); otherwise the terminal's width when stdout is a terminal;
//! otherwise no limit, so that a table piped into a file, `grep` or `less -S` keeps one row
//! per line.

use std::io::IsTerminal as _;

/// The narrowest width a table is fitted to: below it, wrapping helps no one.
pub const MIN_WIDTH: u16 = 40;

/// The width to fit stdout's tables to; `None`: no limit.
pub fn stdout_width() -> Option<u16> {
    width(
        std::env::var("COLUMNS").ok().as_deref(),
        std::io::stdout()
            .is_terminal()
            .then(|| console::Term::stdout().size_checked().map(|(_, w)| w))
            .flatten(),
    )
}

/// The width from `COLUMNS` (if it is a number) or else the terminal's, at least [`MIN_WIDTH`].
pub fn width(columns: Option<&str>, terminal: Option<u16>) -> Option<u16> {
    columns
        .and_then(|c| c.trim().parse::<u16>().ok())
        .filter(|w| *w > 0)
        .or(terminal.filter(|w| *w > 0))
        .map(|w| w.max(MIN_WIDTH))
}

#[cfg(test)]
mod tests {
    use super::width;

    #[test]
    fn columns_wins_then_the_terminal_then_no_limit() {
        assert_eq!(width(Some("100"), Some(80)), Some(100));
        assert_eq!(width(None, Some(80)), Some(80));
        assert_eq!(width(Some("wide"), Some(80)), Some(80));
        assert_eq!(width(Some("0"), None), None);
        assert_eq!(width(None, None), None);
        assert_eq!(width(Some("10"), None), Some(40));
    }
}
