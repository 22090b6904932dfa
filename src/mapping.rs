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

/// What a source's customer keys look like, so that a row that can never match is refused when
/// the map is loaded rather than reported as "not in the customer map" at every run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyForm {
    /// Free text compared as written: billable users' `organization`.
    Name,
    /// A CCC service GUID: 32 hex digits, bare or dashed 8-4-4-4-12, optionally in braces.
    ServiceGuid,
    /// A Genesys Cloud organization id: a UUID dashed 8-4-4-4-12, optionally in braces.
    OrgUuid,
}

impl KeyForm {
    /// How keys of this form are compared.
    pub fn key_match(self) -> KeyMatch {
        match self {
            KeyForm::Name => KeyMatch::Exact,
            KeyForm::ServiceGuid | KeyForm::OrgUuid => KeyMatch::Guid,
        }
    }

    /// Why `key` (already trimmed) is not a key of this form, if it is not.
    fn refuse(self, key: &str) -> Option<String> {
        let example = "e.g. 6f9619ff-8b86-d011-b42d-00cf4fc964ff";
        match self {
            KeyForm::Name => None,
            KeyForm::ServiceGuid => (!is_guid(key, false)).then(|| {
                format!(
                    "{key:?} is not a CCC service GUID (32 hex digits, dashes and braces \
                     allowed, {example}): copy the service's GUID from CCC"
                )
            }),
            KeyForm::OrgUuid => (!is_guid(key, true)).then(|| {
                format!(
                    "{key:?} is not a Genesys Cloud organization id (a UUID, {example}): copy \
                     it from Admin > Organization Settings"
                )
            }),
        }
    }
}

/// Every source the customer map may name (the tables under `[sources]`), with the form of its
/// customer keys. A new source adds its line here.
pub const SOURCES: &[(&str, KeyForm)] = &[
    ("billable_users", KeyForm::Name),
    ("ccc", KeyForm::ServiceGuid),
    ("genesys", KeyForm::OrgUuid),
];

/// The form of `source`'s customer keys; `None` for a source tally does not know.
pub fn key_form(source: &str) -> Option<KeyForm> {
    SOURCES
        .iter()
        .find(|(name, _)| *name == source.trim())
        .map(|(_, form)| *form)
}

/// The spelling a key is compared in: trimmed, and for GUIDs lower case without dashes or
/// braces. The map stores its keys in this form and [`CustomerMap::lookup`] looks them up in
/// it, so validation and matching cannot disagree.
pub fn canonical_key(how: KeyMatch, key: &str) -> String {
    match how {
        KeyMatch::Exact => key.trim().to_owned(),
        KeyMatch::Guid => guid_form(key),
    }
}

/// The customer map: which billing account a source's customer key stands for.
#[derive(Debug, Clone, Default)]
pub struct CustomerMap {
    /// (source, [`canonical_key`] of source_customer) → account. Two rows with the same
    /// canonical key are refused at load, so each key has one account.
    keys: HashMap<(String, String), BillingAccount>,
    /// Every account named, for checks against the billing system.
    accounts: BTreeSet<BillingAccount>,
}

/// A data row that passed its own checks, for the checks across rows.
struct MapRow {
    row: usize,
    source: String,
    customer: String,
    account: BillingAccount,
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
        let mut rows: Vec<MapRow> = Vec::new();
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
            let mut good = true;
            match key_form(source) {
                None => {
                    problems.push((row, Problem::new(at(row, 0), unknown_source(source))));
                    good = false;
                }
                Some(form) => {
                    if let Some(message) = form.refuse(customer) {
                        problems.push((row, Problem::new(at(row, 1), message)));
                        good = false;
                    }
                }
            }
            if account.contains('@') && !is_email(account) {
                problems.push((
                    row,
                    Problem::new(
                        at(row, 2),
                        format!(
                            "{account:?} is neither an account id nor an e-mail address \
                             (name@domain.example): write the ActivePlatform account's whole \
                             e-mail address, or the account id without \"@\""
                        ),
                    ),
                ));
                good = false;
            }
            if good {
                rows.push(MapRow {
                    row,
                    source: source.to_owned(),
                    customer: customer.to_owned(),
                    account: BillingAccount::new(account),
                });
            }
        }

        let mut map = CustomerMap::default();
        // (source, canonical key) → the rows that map it, to report every duplicate.
        let mut rows_of: BTreeMap<(String, String), Vec<&MapRow>> = BTreeMap::new();
        for row in &rows {
            let how = key_form(&row.source).map_or(KeyMatch::Exact, KeyForm::key_match);
            let key = (row.source.clone(), canonical_key(how, &row.customer));
            rows_of.entry(key.clone()).or_default().push(row);
            map.accounts.insert(row.account.clone());
            map.keys.entry(key).or_insert_with(|| row.account.clone());
        }
        for same in rows_of.values().filter(|same| same.len() > 1) {
            for this in same {
                problems.push((this.row, duplicate(this, same, &at)));
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

    /// The billing account of `key` in `source`, compared as `how` says (which must be how the
    /// source's keys compare: [`KeyForm::key_match`] of its [`key_form`]).
    pub fn lookup(&self, source: &str, key: &str, how: KeyMatch) -> Option<&BillingAccount> {
        self.keys
            .get(&(source.trim().to_owned(), canonical_key(how, key)))
    }

    /// Number of (source, source_customer) mappings.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the map has no mapping.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The distinct billing accounts named in the map, in order.
    pub fn accounts(&self) -> impl Iterator<Item = &BillingAccount> {
        self.accounts.iter()
    }
}

/// The message for a `source` cell that names no source tally has.
fn unknown_source(source: &str) -> String {
    let valid: Vec<&str> = SOURCES.iter().map(|(name, _)| *name).collect();
    let hint = key_form(&source.to_lowercase())
        .map(|_| {
            format!(
                " (source names are lower case: {:?})",
                source.to_lowercase()
            )
        })
        .unwrap_or_default();
    format!(
        "unknown source {source:?}{hint}: a row must name one of {}, or it can never match",
        valid.join(", ")
    )
}

/// The problem of one of the rows that map the same key (in any spelling).
fn duplicate(this: &MapRow, same: &[&MapRow], at: &dyn Fn(usize, usize) -> String) -> Problem {
    let others: Vec<String> = same
        .iter()
        .filter(|other| other.row != this.row)
        .map(|other| {
            let spelling = if other.customer == this.customer {
                String::new()
            } else {
                format!(" as {:?}", other.customer)
            };
            if other.account == this.account {
                format!("row {}{spelling}", other.row)
            } else {
                format!("row {}{spelling} to account {}", other.row, other.account)
            }
        })
        .collect();
    let respelled = same.iter().any(|other| other.customer != this.customer);
    let conflicting = same.iter().any(|other| other.account != this.account);
    let why = match (respelled, conflicting) {
        (true, true) => {
            "; it is the same id (case, dashes and braces do not count), and one customer can \
             be billed to one account only: keep the row with the right account"
        }
        (true, false) => "; it is the same id (case, dashes and braces do not count): keep one row",
        (false, true) => ": one customer can be billed to one account only: keep the right row",
        (false, false) => "; keep one row",
    };
    Problem::new(
        at(this.row, 1),
        format!(
            "source {:?} customer {:?} is mapped twice: also on {}{why}",
            this.source,
            this.customer,
            others.join(", ")
        ),
    )
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

/// Is `text` a GUID: 32 hex digits, optionally in braces, either bare (unless `dashed` is
/// required) or dashed where a GUID has its dashes (8-4-4-4-12)? The spellings CCC and Genesys
/// accept in their configuration (`sources.ccc.services`, `org_id`).
fn is_guid(text: &str, dashed: bool) -> bool {
    let text = text.trim();
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(text);
    let groups: Vec<&str> = inner.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let shape = lengths == [8, 4, 4, 4, 12] || (!dashed && lengths == [32]);
    shape && inner.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

/// Does `text` look like an e-mail address (`name@domain.tld`, no spaces)? A billing account
/// with an `@` in it is read as one (an ActivePlatform account found by its e-mail), so one
/// that is not an address could never be found.
pub fn is_email(text: &str) -> bool {
    match text.split_once('@') {
        Some((name, domain)) => {
            !name.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !text.contains(char::is_whitespace)
        }
        None => false,
    }
}

#[cfg(test)]
mod customer_map_tests {
    use super::*;

    const GUID: &str = "6f9619ff8b86d011b42d00cf4fc964ff";
    const ORG: &str = "5d6f2b1e-3c4a-4e8b-9a01-ac0e00000001";

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
        let m = map(&format!(
            "billable_users,Microsoft Corporation,10042\ngenesys,{ORG},10043\n"
        ));
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
            m.lookup("genesys", "Microsoft Corporation", KeyMatch::Guid),
            None
        );
        assert_eq!(m.len(), 2);
        assert!(!m.is_empty());
    }

    #[test]
    fn guid_keys_ignore_case_dashes_and_braces() {
        let m = map(&format!(
            "ccc,{{6F9619FF-8B86-D011-B42D-00CF4FC964FF}},10042\ngenesys,{},10043\n",
            ORG.to_uppercase()
        ));
        let acme = BillingAccount::new("10042");
        assert_eq!(m.lookup("ccc", GUID, KeyMatch::Guid), Some(&acme));
        assert_eq!(
            m.lookup(
                "ccc",
                " 6F9619FF-8B86-D011-B42D-00CF4FC964FF ",
                KeyMatch::Guid
            ),
            Some(&acme)
        );
        assert_eq!(
            m.lookup("genesys", &format!("{{{ORG}}}"), KeyMatch::Guid),
            Some(&BillingAccount::new("10043"))
        );
    }

    #[test]
    fn every_source_has_a_key_form_and_an_unknown_one_has_none() {
        assert_eq!(key_form("billable_users"), Some(KeyForm::Name));
        assert_eq!(
            key_form("ccc").map(KeyForm::key_match),
            Some(KeyMatch::Guid)
        );
        assert_eq!(
            key_form("genesys").map(KeyForm::key_match),
            Some(KeyMatch::Guid)
        );
        assert_eq!(key_form("hubspot"), None);
    }

    #[test]
    fn a_row_of_an_unknown_source_is_refused_with_the_valid_ones() {
        let found = problems("hubspot,Acme,10042\nCCC,6f9619ff8b86d011b42d00cf4fc964ff,10043\n");
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(found[0].at, "customers.csv:2:source");
        assert!(
            found[0].message.contains(
                "unknown source \"hubspot\": a row must name one of billable_users, ccc, genesys"
            ),
            "{}",
            found[0].message
        );
        assert_eq!(found[1].at, "customers.csv:3:source");
        assert!(
            found[1].message.contains("lower case: \"ccc\""),
            "{}",
            found[1].message
        );
    }

    #[test]
    fn keys_that_are_not_guids_or_uuids_are_refused() {
        let found = problems(
            "ccc,6f9619ff-8b86-d011-b42d-00cf4fc964f,10042\n\
             ccc,6f9619ff-8b86d011-b42d-00cf-4fc964ff,10042\n\
             genesys,org-7,10043\n\
             genesys,5d6f2b1e3c4a4e8b9a01ac0e00000001,10043\n\
             billable_users,6f9619ff-nothing-to-check,10044\n",
        );
        let places: Vec<&str> = found.iter().map(|p| p.at.as_str()).collect();
        assert_eq!(
            places,
            [
                "customers.csv:2:source_customer",
                "customers.csv:3:source_customer",
                "customers.csv:4:source_customer",
                "customers.csv:5:source_customer",
            ]
        );
        assert!(
            found[0].message.contains("is not a CCC service GUID"),
            "{}",
            found[0].message
        );
        assert!(
            found[2]
                .message
                .contains("\"org-7\" is not a Genesys Cloud organization id"),
            "{}",
            found[2].message
        );
        // Genesys writes its org ids with dashes; so must the map, as org_id must.
        assert!(found[3].message.contains("Genesys"), "{}", found[3].message);
    }

    #[test]
    fn an_account_with_an_at_sign_must_be_an_email_address() {
        let found = problems(&format!(
            "ccc,{GUID},billing@\nbillable_users,Acme,@acme.example\nbillable_users,Globex,ok@globex.example\n"
        ));
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(found[0].at, "customers.csv:2:billing_account");
        assert!(
            found[0]
                .message
                .contains("\"billing@\" is neither an account id nor an e-mail address"),
            "{}",
            found[0].message
        );
        assert_eq!(found[1].at, "customers.csv:3:billing_account");
    }

    #[test]
    fn one_guid_in_two_spellings_for_two_accounts_is_refused_on_both_rows() {
        let found = problems(&format!(
            "ccc,{GUID},10042\nccc,{{6F9619FF-8B86-D011-B42D-00CF4FC964FF}},10043\n\
             genesys,{ORG},10044\ngenesys,{},10044\n",
            ORG.to_uppercase()
        ));
        let places: Vec<&str> = found.iter().map(|p| p.at.as_str()).collect();
        assert_eq!(
            places,
            [
                "customers.csv:2:source_customer",
                "customers.csv:3:source_customer",
                "customers.csv:4:source_customer",
                "customers.csv:5:source_customer",
            ]
        );
        assert!(
            found[0].message.contains(
                "is mapped twice: also on row 3 as \"{6F9619FF-8B86-D011-B42D-00CF4FC964FF}\" \
                 to account 10043; it is the same id"
            ),
            "{}",
            found[0].message
        );
        assert!(
            found[1].message.contains("row 2 as \"6f9619ff"),
            "{}",
            found[1].message
        );
        // The same account twice is harmless but still two rows for one key: keep one.
        assert!(
            found[2].message.contains("keep one row"),
            "{}",
            found[2].message
        );
    }

    #[test]
    fn accounts_lists_each_account_once() {
        let m = map(
            "billable_users,x,10042\nccc,6f9619ff8b86d011b42d00cf4fc964ff,10042\nbillable_users,z,10050\n",
        );
        let accounts: Vec<&str> = m.accounts().map(BillingAccount::as_str).collect();
        assert_eq!(accounts, ["10042", "10050"]);
    }

    #[test]
    fn a_key_mapped_twice_is_reported_on_both_rows() {
        let found =
            problems("billable_users,x,10042\nbillable_users,y,10043\nbillable_users,x,10044\n");
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(found[0].at, "customers.csv:2:source_customer");
        assert!(found[0].message.contains("row 4"), "{}", found[0].message);
        assert_eq!(found[1].at, "customers.csv:4:source_customer");
        assert!(found[1].message.contains("row 2"), "{}", found[1].message);
    }

    #[test]
    fn empty_cells_and_a_wrong_header_are_reported() {
        let found = problems("billable_users,,10042\n,y,\nbillable_users,z,10043\n");
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
        let found = problems(
            "billable_users,x,10042\nbillable_users,,10043\nbillable_users,x,10044\nbillable_users,y\nhubspot,y,1\n",
        );
        let places: Vec<&str> = found.iter().map(|p| p.at.as_str()).collect();
        assert_eq!(
            places,
            [
                "customers.csv:2:source_customer",
                "customers.csv:3:source_customer",
                "customers.csv:4:source_customer",
                "customers.csv:5:billing_account",
                "customers.csv:6:source",
            ]
        );
    }

    #[test]
    fn a_cell_that_is_not_utf8_is_reported_with_its_column() {
        let csv = b"source,source_customer,billing_account\nbillable_users,Caf\xe9 AS,10042\n";
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
            "source,source_customer,billing_account\n billable_users , x , 10042 \n",
        )
        .unwrap();
        let m = CustomerMap::load(&path).unwrap();
        assert_eq!(
            m.lookup("billable_users", "x", KeyMatch::Exact),
            Some(&BillingAccount::new("10042"))
        );
        std::fs::write(
            &path,
            "source,source_customer,billing_account\nbillable_users,x,\n",
        )
        .unwrap();
        let found = CustomerMap::load(&path).unwrap_err();
        assert_eq!(found[0].at, format!("{}:2:billing_account", path.display()));
    }
}
