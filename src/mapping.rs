//! Mapping: from a source's customer key and item to a billing account and a license type.
//!
//! This file holds the customer map (`customers.csv`); the pure step that applies it (with the
//! sources' license rules and the pricing table) is `pipeline::compute`.

// ===========================================================================================
// Customer map: `customers.csv` (source, source_customer) → billing account.
// ===========================================================================================

use crate::domain::BillingAccount;
use crate::problem::Problem;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;

/// The exact header of `customers.csv`.
const CUSTOMER_COLUMNS: [&str; 3] = ["source", "source_customer", "billing_account"];

/// How a source's customer key is compared with the map's `source_customer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMatch {
    /// The key as written (cells and keys are trimmed of surrounding whitespace).
    Exact,
    /// GUIDs: case-insensitive, dashes and braces ignored (`{ABC-1}` == `abc1`), because systems
    /// print the same GUID in several spellings.
    Guid,
}

/// The customer map: which billing account a source's customer key stands for.
#[derive(Debug, Clone, Default)]
pub struct CustomerMap {
    /// (source, source_customer as written) → account.
    exact: HashMap<(String, String), BillingAccount>,
    /// (source, GUID-normalized source_customer) → account; `None` when two keys that differ
    /// only in spelling map to different accounts, so a GUID lookup cannot choose.
    guid: HashMap<(String, String), Option<BillingAccount>>,
    /// Every account named, for checks against the billing system.
    accounts: BTreeSet<BillingAccount>,
}

impl CustomerMap {
    /// Loads and validates `customers.csv`; on failure returns every problem, each at
    /// `<path>:<row>:<column>` (header = row 1).
    pub fn load(path: &Path) -> Result<CustomerMap, Vec<Problem>> {
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| {
            vec![Problem::new(
                name.clone(),
                format!("cannot open the customer map: {e}"),
            )]
        })?;
        Self::from_reader(&name, file)
    }

    /// Same as [`CustomerMap::load`], from any reader; `name` stands for the path in problems.
    pub fn from_reader<R: Read>(name: &str, r: R) -> Result<CustomerMap, Vec<Problem>> {
        let at = |row: usize, column: usize| format!("{name}:{row}:{}", CUSTOMER_COLUMNS[column]);
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(r);
        let mut records = csv.records();

        match records.next() {
            None => {
                return Err(vec![Problem::new(
                    at(1, 0),
                    format!(
                        "the customer map is empty: expected the header {}",
                        CUSTOMER_COLUMNS.join(",")
                    ),
                )]);
            }
            Some(Err(e)) => {
                return Err(vec![Problem::new(
                    format!("{name}:1"),
                    format!("cannot read the header: {e}"),
                )]);
            }
            Some(Ok(header)) => {
                let found: Vec<&str> = crate::problem::header_cells(&header);
                if found != CUSTOMER_COLUMNS {
                    return Err(header_problems(&found, &at));
                }
            }
        }

        // Problems of the data rows, with their row number to report them in file order.
        let mut problems: Vec<(usize, Problem)> = Vec::new();

        // (source, source_customer) → rows that map it, to report every duplicate.
        let mut rows_of: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
        let mut map = CustomerMap::default();
        for (index, record) in records.enumerate() {
            let row = index + 2;
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    // Most often a file saved in a Windows code page rather than UTF-8.
                    let problem = match e.kind() {
                        csv::ErrorKind::Utf8 { err, .. } => Problem::new(
                            at(row, err.field().min(CUSTOMER_COLUMNS.len() - 1)),
                            "this cell is not UTF-8 text: save the file as \"CSV UTF-8\"",
                        ),
                        _ => Problem::new(
                            format!("{name}:{row}"),
                            format!("cannot read this row: {e}"),
                        ),
                    };
                    problems.push((row, problem));
                    continue;
                }
            };
            let cells: Vec<&str> = record.iter().collect();
            if cells.iter().all(|c| c.is_empty()) {
                // Spreadsheets save blank rows as a line of commas; they mean nothing.
                continue;
            }
            if cells.len() != CUSTOMER_COLUMNS.len() {
                problems.push((row, Problem::new(
                    // The first missing column, or the last one when there are too many.
                    at(row, cells.len().min(CUSTOMER_COLUMNS.len() - 1)),
                    format!(
                        "this row has {} cells, the header has {}: check for a stray or missing comma",
                        cells.len(),
                        CUSTOMER_COLUMNS.len()
                    ),
                )));
                continue;
            }
            let mut complete = true;
            for (column, cell) in cells.iter().enumerate() {
                if cell.is_empty() {
                    problems.push((
                        row,
                        Problem::new(
                            at(row, column),
                            format!(
                                "{} is empty: every row needs all three cells",
                                CUSTOMER_COLUMNS[column]
                            ),
                        ),
                    ));
                    complete = false;
                }
            }
            if !complete {
                continue;
            }
            let (source, customer, account) = (cells[0], cells[1], cells[2]);
            let account = BillingAccount::new(account);
            let key = (source.to_owned(), customer.to_owned());
            rows_of.entry(key.clone()).or_default().push(row);
            map.accounts.insert(account.clone());
            map.guid
                .entry((source.to_owned(), guid_form(customer)))
                .and_modify(|known| {
                    if known.as_ref() != Some(&account) {
                        *known = None;
                    }
                })
                .or_insert_with(|| Some(account.clone()));
            map.exact.entry(key).or_insert(account);
        }

        for ((source, customer), rows) in &rows_of {
            if rows.len() < 2 {
                continue;
            }
            for &row in rows {
                let others: Vec<String> = rows
                    .iter()
                    .filter(|&&r| r != row)
                    .map(|r| r.to_string())
                    .collect();
                problems.push((row, Problem::new(
                    at(row, 1),
                    format!(
                        "source {source:?} customer {customer:?} is mapped twice: also on row {}; \
                         keep one row",
                        others.join(", ")
                    ),
                )));
            }
        }

        if problems.is_empty() {
            Ok(map)
        } else {
            // Stable: the problems of one row keep their column order.
            problems.sort_by_key(|(row, _)| *row);
            Err(problems.into_iter().map(|(_, p)| p).collect())
        }
    }

    /// The billing account of `key` in `source`, compared as `how` says.
    pub fn lookup(&self, source: &str, key: &str, how: KeyMatch) -> Option<&BillingAccount> {
        match how {
            KeyMatch::Exact => self
                .exact
                .get(&(source.trim().to_owned(), key.trim().to_owned())),
            KeyMatch::Guid => self
                .guid
                .get(&(source.trim().to_owned(), guid_form(key)))
                .and_then(Option::as_ref),
        }
    }

    /// Number of (source, source_customer) mappings.
    pub fn len(&self) -> usize {
        self.exact.len()
    }

    /// True when the map has no mapping.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty()
    }

    /// The distinct billing accounts named in the map, in order.
    pub fn accounts(&self) -> impl Iterator<Item = &BillingAccount> {
        self.accounts.iter()
    }
}

/// One problem per header column that is not the expected one.
fn header_problems(found: &[&str], at: &dyn Fn(usize, usize) -> String) -> Vec<Problem> {
    let expected = CUSTOMER_COLUMNS.join(",");
    let mut problems: Vec<Problem> = CUSTOMER_COLUMNS
        .iter()
        .enumerate()
        .filter(|(i, column)| found.get(*i) != Some(*column))
        .map(|(i, column)| {
            let what = found
                .get(i)
                .map_or("nothing".to_owned(), |f| format!("{f:?}"));
            Problem::new(
                at(1, i),
                format!(
                    "header: expected column {column:?} here, found {what} (the header must be \
                     exactly {expected})"
                ),
            )
        })
        .collect();
    if problems.is_empty() {
        // The three columns are right; something follows them.
        problems.push(Problem::new(
            at(1, CUSTOMER_COLUMNS.len() - 1),
            format!(
                "header: unexpected columns after billing_account: {} (the header must be \
                 exactly {expected})",
                found[CUSTOMER_COLUMNS.len()..].join(",")
            ),
        ));
    }
    problems
}

/// A GUID's comparable spelling: lower case without dashes, braces or surrounding whitespace.
fn guid_form(key: &str) -> String {
    key.trim()
        .chars()
        .filter(|c| !matches!(c, '-' | '{' | '}'))
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod customer_map_tests {
    use super::*;

    fn map(rows: &str) -> CustomerMap {
        let csv = format!("source,source_customer,billing_account\n{rows}");
        match CustomerMap::from_reader("customers.csv", csv.as_bytes()) {
            Ok(m) => m,
            Err(p) => panic!("map refused: {p:#?}"),
        }
    }

    fn problems(rows: &str) -> Vec<Problem> {
        let csv = format!("source,source_customer,billing_account\n{rows}");
        match CustomerMap::from_reader("customers.csv", csv.as_bytes()) {
            Ok(m) => panic!("map accepted: {m:?}"),
            Err(p) => p,
        }
    }

    #[test]
    fn exact_keys_match_as_written() {
        let m = map("billable_users,Microsoft Corporation,10042\ngenesys,org-7,10043\n");
        assert_eq!(
            m.lookup("billable_users", "Microsoft Corporation", KeyMatch::Exact),
            Some(&BillingAccount::new("10042"))
        );
        assert_eq!(
            m.lookup("billable_users", "microsoft corporation", KeyMatch::Exact),
            None
        );
        // The same key in another source is another customer.
        assert_eq!(
            m.lookup("genesys", "Microsoft Corporation", KeyMatch::Exact),
            None
        );
        assert_eq!(m.len(), 2);
        assert!(!m.is_empty());
    }

    #[test]
    fn guid_keys_ignore_case_dashes_and_braces() {
        let m = map("ccc,{ABC-1},10042\nccc,6F9619FF-8B86-D011-B42D-00CF4FC964FF,10043\n");
        let acme = BillingAccount::new("10042");
        assert_eq!(m.lookup("ccc", "abc1", KeyMatch::Guid), Some(&acme));
        assert_eq!(m.lookup("ccc", "{ABC-1}", KeyMatch::Guid), Some(&acme));
        assert_eq!(
            m.lookup("ccc", "{6f9619ff8b86d011b42d00cf4fc964ff}", KeyMatch::Guid),
            Some(&BillingAccount::new("10043"))
        );
        // Exact matching does not normalise.
        assert_eq!(m.lookup("ccc", "abc1", KeyMatch::Exact), None);
    }

    #[test]
    fn guid_spellings_of_one_key_mapped_to_two_accounts_match_nothing() {
        let m = map("ccc,ABC-1,10042\nccc,abc1,10043\n");
        assert_eq!(m.lookup("ccc", "abc1", KeyMatch::Guid), None);
        assert_eq!(
            m.lookup("ccc", "abc1", KeyMatch::Exact),
            Some(&BillingAccount::new("10043"))
        );
    }

    #[test]
    fn accounts_lists_each_account_once() {
        let m = map("a,x,10042\nb,y,10042\na,z,10050\n");
        let accounts: Vec<&str> = m.accounts().map(BillingAccount::as_str).collect();
        assert_eq!(accounts, ["10042", "10050"]);
    }

    #[test]
    fn a_key_mapped_twice_is_reported_on_both_rows() {
        let found = problems("a,x,10042\na,y,10043\na,x,10044\n");
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(found[0].at, "customers.csv:2:source_customer");
        assert!(found[0].message.contains("row 4"), "{}", found[0].message);
        assert_eq!(found[1].at, "customers.csv:4:source_customer");
        assert!(found[1].message.contains("row 2"), "{}", found[1].message);
    }

    #[test]
    fn empty_cells_and_a_wrong_header_are_reported() {
        let found = problems("a,,10042\n,y,\nb,z,10043\n");
        assert_eq!(found.len(), 3, "{found:#?}");
        assert_eq!(found[0].at, "customers.csv:2:source_customer");
        assert_eq!(found[1].at, "customers.csv:3:source");
        assert_eq!(found[2].at, "customers.csv:3:billing_account");

        let wrong =
            CustomerMap::from_reader("customers.csv", "source,customer,account\n".as_bytes())
                .unwrap_err();
        assert_eq!(wrong.len(), 2, "{wrong:#?}");
        assert_eq!(wrong[0].at, "customers.csv:1:source_customer");
        assert!(
            wrong[0].message.contains("\"customer\""),
            "{}",
            wrong[0].message
        );
        assert_eq!(wrong[1].at, "customers.csv:1:billing_account");
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let found = problems("a,x,10042\na,,10043\na,x,10044\nb,y\n");
        let places: Vec<&str> = found.iter().map(|p| p.at.as_str()).collect();
        assert_eq!(
            places,
            [
                "customers.csv:2:source_customer",
                "customers.csv:3:source_customer",
                "customers.csv:4:source_customer",
                "customers.csv:5:billing_account"
            ]
        );
    }

    #[test]
    fn a_cell_that_is_not_utf8_is_reported_with_its_column() {
        let csv = b"source,source_customer,billing_account\na,Caf\xe9 AS,10042\n";
        let found = CustomerMap::from_reader("customers.csv", csv.as_slice()).unwrap_err();
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].at, "customers.csv:2:source_customer");
        assert!(found[0].message.contains("UTF-8"));
    }

    #[test]
    fn load_reads_a_file_and_names_it_in_problems() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("customers.csv");
        std::fs::write(
            &path,
            "source,source_customer,billing_account\n a , x , 10042 \n",
        )
        .unwrap();
        let m = CustomerMap::load(&path).unwrap();
        assert_eq!(
            m.lookup("a", "x", KeyMatch::Exact),
            Some(&BillingAccount::new("10042"))
        );
        std::fs::write(&path, "source,source_customer,billing_account\na,x,\n").unwrap();
        let found = CustomerMap::load(&path).unwrap_err();
        assert_eq!(found[0].at, format!("{}:2:billing_account", path.display()));
    }
}
