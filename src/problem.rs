//! Configuration problems: what is wrong, and where (a key's full path, or `file:row:column`).
//!
//! A leaf: every part of tally that checks its own settings or files reports here, and this
//! module imports nothing of tally, so that checking a setting never ties a connector, the
//! pricing table or the customer map to the configuration as a whole.

/// One problem found while validating configuration, with the key's full path (or
/// `file:row:column`) so that the operator knows where to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `sources.billable_users.base_url`, or `config/pricing.csv:4:unit_price`.
    pub at: String,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
}

impl Problem {
    pub fn new(at: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            at: at.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// Configuration that could not be loaded or is not valid: every problem found.
#[derive(Debug, thiserror::Error)]
#[error("{}", render(.0))]
pub struct ConfigError(pub Vec<Problem>);

impl ConfigError {
    /// `Ok` when there is no problem; else an error listing every one (a connector's `new`).
    pub fn check(problems: Vec<Problem>) -> Result<(), ConfigError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(problems))
        }
    }
}

fn render(problems: &[Problem]) -> String {
    let mut text = format!(
        "the configuration has {} problem{}:",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        text.push_str("\n  - ");
        text.push_str(&p.to_string());
    }
    text
}

/// The environment variable that sets a key: `sources.billable_users.token` →
/// `TALLY__SOURCES__BILLABLE_USERS__TOKEN`.
pub fn env_var_for(key_path: &str) -> String {
    format!(
        "TALLY__{}",
        key_path.replace('.', "__").to_ascii_uppercase()
    )
}

/// A CSV header's cells as the spreadsheet wrote them, without the byte-order mark Excel puts
/// before the first cell of a UTF-8 CSV. Shared by every table tally reads (pricing, customer
/// map, RamBase mapping), so that all accept the same files.
pub fn header_cells(header: &csv::StringRecord) -> Vec<&str> {
    header
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 {
                c.trim_start_matches('\u{feff}')
            } else {
                c
            }
        })
        .collect()
}

/// Why the CSV reader could not read a row: the index of the cell that is not UTF-8 (most
/// often a file saved in a Windows code page) with what to do, or the reader's message.
pub fn unreadable_row(e: &csv::Error) -> (Option<usize>, String) {
    match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => (
            Some(err.field()),
            "this cell is not UTF-8 text: save the file as \"CSV UTF-8\"".to_owned(),
        ),
        _ => (None, format!("cannot read this row: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_var_names_follow_the_key_path() {
        assert_eq!(
            env_var_for("sources.billable_users.token"),
            "TALLY__SOURCES__BILLABLE_USERS__TOKEN"
        );
    }

    #[test]
    fn every_problem_is_listed_with_where_it_is() {
        let error = ConfigError(vec![
            Problem::new("sinks.rambase.client_id", "is empty"),
            Problem::new("config/pricing.csv:3:unit_price", "not a decimal number"),
        ]);
        assert_eq!(
            error.to_string(),
            "the configuration has 2 problems:\n  - sinks.rambase.client_id: is empty\n  - config/pricing.csv:3:unit_price: not a decimal number"
        );
    }
}
