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

/// The problems of one CSV table tally reads (the pricing table, the RamBase mapping file), each
/// at `file:row:column` with the spreadsheet's row number (header = 1), handed over in file order
/// whichever pass found them. The header check and the unreadable-row report are here too, so
/// that every table accepts the same files and words its problems alike.
#[derive(Debug)]
pub struct CsvProblems<'a> {
    name: &'a str,
    columns: &'static [&'static str],
    list: Vec<(usize, Problem)>,
}

impl<'a> CsvProblems<'a> {
    /// The problems of the file `name`, whose header must be exactly `columns`.
    pub fn new(name: &'a str, columns: &'static [&'static str]) -> Self {
        CsvProblems {
            name,
            columns,
            list: Vec::new(),
        }
    }

    /// A problem of one cell: `columns[column]` of `row`.
    pub fn at(&mut self, row: usize, column: usize, message: impl Into<String>) {
        let column = self.columns[column.min(self.columns.len() - 1)];
        self.list.push((
            row,
            Problem::new(format!("{}:{row}:{column}", self.name), message),
        ));
    }

    /// A problem of a whole row, when no column can be named.
    pub fn row(&mut self, row: usize, message: impl Into<String>) {
        self.list
            .push((row, Problem::new(format!("{}:{row}", self.name), message)));
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn count(&self) -> usize {
        self.list.len()
    }

    /// A row the CSV reader could not read: the cell that is not UTF-8 (most often a file saved
    /// in a Windows code page), or the reader's message.
    pub fn unreadable(&mut self, row: usize, e: &csv::Error) {
        match e.kind() {
            csv::ErrorKind::Utf8 { err, .. } => self.at(
                row,
                err.field(),
                "this cell is not UTF-8 text: save the file as \"CSV UTF-8\"",
            ),
            _ => self.row(row, format!("cannot read this row: {e}")),
        }
    }

    /// True when the header is exactly the columns (a byte-order mark before the first cell, as
    /// Excel writes it, is allowed); else one problem per wrong column.
    pub fn header(&mut self, header: &csv::StringRecord) -> bool {
        let found = header_cells(header);
        if found == self.columns {
            return true;
        }
        let columns = self.columns;
        let expected = columns.join(",");
        let mut reported = false;
        for (i, column) in columns.iter().enumerate() {
            let what = match found.get(i) {
                Some(f) if f == column => continue,
                Some(f) => format!("found {f:?}"),
                None => "it is missing".to_owned(),
            };
            self.at(
                1,
                i,
                format!(
                    "header: expected column {column:?} here, {what} (the header must be exactly \
                     {expected})"
                ),
            );
            reported = true;
        }
        if !reported {
            // Only extra columns at the end.
            self.at(
                1,
                columns.len() - 1,
                format!(
                    "header: unexpected columns after {}: {} (the header must be exactly \
                     {expected})",
                    columns[columns.len() - 1],
                    found[columns.len()..].join(",")
                ),
            );
        }
        false
    }

    /// In file order; the problems of one row keep the order they were found in.
    pub fn into_sorted(mut self) -> Vec<Problem> {
        self.list.sort_by_key(|(row, _)| *row);
        self.list.into_iter().map(|(_, p)| p).collect()
    }
}

/// A CSV header's cells as the spreadsheet wrote them, without the byte-order mark Excel puts
/// before the first cell of a UTF-8 CSV (the customer map reads its header with it too).
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
