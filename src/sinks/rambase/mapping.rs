//! The RamBase mapping file (`sinks.rambase.mapping_file`): the accountants' table of the
//! recurring invoice plan item each (billing account, license type) is billed on, and of each
//! plan's recurring invoice period id per month.
//!
//! It exists because real RamBase gives every plan its own period ids: one id per month for
//! all plans (`sinks.rambase.period_ids`) only fits a set-up with one plan, and accountants keep
//! this as a table in a spreadsheet anyway. Problems are reported like the customer map's and
//! the pricing table's: all at once, each at `file:row:column` (header = row 1).

use super::RamBaseItem;
use crate::domain::Period;
use crate::problem::Problem;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// The exact header of the mapping file.
pub const COLUMNS: [&str; 6] = [
    "billing_account",
    "license_type",
    "plan_id",
    "item_id",
    "month",
    "period_id",
];

const ACCOUNT: usize = 0;
const LICENSE: usize = 1;
const PLAN: usize = 2;
const ITEM: usize = 3;
const MONTH: usize = 4;
const PERIOD: usize = 5;

/// Cells of a row that names a plan item only: `month` and `period_id` may be left out.
const ITEM_ONLY: usize = 4;

/// A plan item as the file declares it, with the first row that does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileItem {
    pub billing_account: String,
    pub license_type: String,
    pub plan_id: u64,
    pub item_id: u64,
    /// Spreadsheet row number (header = 1).
    pub row: usize,
}

/// A validated mapping file.
#[derive(Debug, Clone, Default)]
pub struct MappingFile {
    /// Every plan item, once, in file order.
    pub items: Vec<FileItem>,
    /// (plan id, month) → that plan's recurring invoice period id for the month.
    pub periods: HashMap<(u64, Period), u64>,
}

/// One data row with every cell parsed.
struct Row {
    row: usize,
    account: String,
    license: String,
    plan: u64,
    item: u64,
    period: Option<(Period, u64)>,
}

/// The problems found, at `file:row:column`.
type Problems<'a> = crate::problem::CsvProblems<'a>;

impl MappingFile {
    /// Loads and validates the file, against the plan items `[[sinks.rambase.items]]` already
    /// gives (`items`); on failure returns every problem, each at `<path>:<row>:<column>`.
    pub fn load(path: &Path, items: &[RamBaseItem]) -> Result<MappingFile, Vec<Problem>> {
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| {
            vec![Problem::new(
                name.clone(),
                format!(
                    "cannot open the RamBase mapping file (sinks.rambase.mapping_file): {e}; \
                     relative paths are read from the directory tally runs in"
                ),
            )]
        })?;
        Self::from_reader(&name, file, items)
    }

    /// Same as [`MappingFile::load`], from any reader; `name` stands for the path in problems.
    pub fn from_reader<R: Read>(
        name: &str,
        reader: R,
        items: &[RamBaseItem],
    ) -> Result<MappingFile, Vec<Problem>> {
        let mut problems = Problems::new(name, &COLUMNS);
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(reader);
        let mut records = csv.records();
        match records.next() {
            None => {
                problems.at(
                    1,
                    ACCOUNT,
                    format!(
                        "the mapping file is empty: expected the header {}",
                        COLUMNS.join(",")
                    ),
                );
                return Err(problems.into_sorted());
            }
            Some(Err(e)) => {
                problems.unreadable(1, &e);
                return Err(problems.into_sorted());
            }
            Some(Ok(header)) => {
                if !problems.header(&header) {
                    return Err(problems.into_sorted());
                }
            }
        }

        let mut rows = Vec::new();
        for (index, record) in records.enumerate() {
            let row = index + 2;
            match record {
                Ok(record) => {
                    let cells: Vec<&str> = record.iter().collect();
                    if let Some(r) = parse_row(row, &cells, &mut problems) {
                        rows.push(r);
                    }
                }
                Err(e) => problems.unreadable(row, &e),
            }
        }

        let file = check_rows(&rows, items, &mut problems);
        if problems.is_empty() {
            Ok(file)
        } else {
            Err(problems.into_sorted())
        }
    }
}

/// The rows against each other and against `items`: one plan item per (billing account,
/// license type) and the other way round, one period id per plan and month, and no period id
/// on two plans or months. Only plan items `items` does not already give are returned.
fn check_rows(rows: &[Row], items: &[RamBaseItem], problems: &mut Problems<'_>) -> MappingFile {
    let mut file = MappingFile::default();
    // The same facts for `[[sinks.rambase.items]]`, by index.
    let mut toml_item_of: HashMap<(&str, &str), (u64, u64, usize)> = HashMap::new();
    let mut toml_owner_of: HashMap<(u64, u64), (&str, &str, usize)> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        toml_item_of.insert(
            (&item.billing_account, &item.license_type),
            (item.plan_id, item.item_id, i),
        );
        toml_owner_of.insert(
            (item.plan_id, item.item_id),
            (&item.billing_account, &item.license_type, i),
        );
    }
    // (account, license) → (plan, item, row) of the first row naming it.
    let mut item_of: HashMap<(&str, &str), (u64, u64, usize)> = HashMap::new();
    // (plan, item) → (account, license, row).
    let mut owner_of: HashMap<(u64, u64), (&str, &str, usize)> = HashMap::new();
    // period id → (plan, month, row).
    let mut period_owner: HashMap<u64, (u64, Period, usize)> = HashMap::new();
    // (plan, month) → row that gave its period id.
    let mut period_row: HashMap<(u64, Period), usize> = HashMap::new();
    for r in rows {
        let key = (r.account.as_str(), r.license.as_str());
        match (toml_item_of.get(&key), toml_owner_of.get(&(r.plan, r.item))) {
            // The same plan item as `items` gives: the same fact twice.
            (Some(&(plan, item, _)), _) if (plan, item) == (r.plan, r.item) => {}
            (Some(&(plan, item, i)), _) => {
                problems.at(
                    r.row,
                    PLAN,
                    format!(
                        "billing account {:?} with license type {:?} is on plan {plan} item {item} \
                         in sinks.rambase.items[{i}], and on plan {} item {} here: configure it \
                         in one place",
                        r.account, r.license, r.plan, r.item
                    ),
                );
                continue;
            }
            (None, Some(&(account, license, i))) => {
                problems.at(
                    r.row,
                    ITEM,
                    format!(
                        "plan {} item {} is also used by sinks.rambase.items[{i}] (billing \
                         account {account:?}, license type {license:?}); each (billing account, \
                         license type) needs its own plan item so that tally can tell its \
                         usages apart",
                        r.plan, r.item
                    ),
                );
                continue;
            }
            (None, None) => {}
        }
        match item_of.get(&key) {
            Some(&(plan, item, first)) if (plan, item) != (r.plan, r.item) => {
                problems.at(
                    r.row,
                    PLAN,
                    format!(
                        "billing account {:?} with license type {:?} is on plan {plan} item {item} \
                         on row {first}, and on plan {} item {} here: it is billed on one plan \
                         item; make the rows agree",
                        r.account, r.license, r.plan, r.item
                    ),
                );
                continue;
            }
            Some(_) => {}
            // tally recognises its own usages by plan item (RamBase has no idempotency key),
            // so two kinds of line sharing one item would make recovery ambiguous.
            None => match owner_of.get(&(r.plan, r.item)) {
                Some(&(account, license, first)) => {
                    problems.at(
                        r.row,
                        ITEM,
                        format!(
                            "plan {} item {} is also used on row {first} by billing account \
                             {account:?} with license type {license:?}; each (billing account, \
                             license type) needs its own plan item so that tally can tell its \
                             usages apart",
                            r.plan, r.item
                        ),
                    );
                    continue;
                }
                None => {
                    item_of.insert(key, (r.plan, r.item, r.row));
                    owner_of.insert((r.plan, r.item), (&r.account, &r.license, r.row));
                    if !toml_item_of.contains_key(&key) {
                        file.items.push(FileItem {
                            billing_account: r.account.clone(),
                            license_type: r.license.clone(),
                            plan_id: r.plan,
                            item_id: r.item,
                            row: r.row,
                        });
                    }
                }
            },
        }
        let Some((month, period_id)) = r.period else {
            continue;
        };
        // Periods belong to plans: two items of one plan share its period of the month.
        if let Some(&known) = file.periods.get(&(r.plan, month)) {
            if known != period_id {
                let first = period_row.get(&(r.plan, month)).copied().unwrap_or(0);
                problems.at(
                    r.row,
                    PERIOD,
                    format!(
                        "plan {}'s period for {month} is {known} on row {first} and {period_id} \
                         here: a plan has one recurring invoice period per month; keep the id \
                         RamBase shows",
                        r.plan
                    ),
                );
            }
            continue;
        }
        if let Some(&(plan, other_month, first)) = period_owner.get(&period_id) {
            problems.at(
                r.row,
                PERIOD,
                format!(
                    "period id {period_id} is plan {plan}'s period for {other_month} on row \
                     {first}: in RamBase every plan has its own period ids, one per month; look \
                     up plan {}'s period for {month}",
                    r.plan
                ),
            );
            continue;
        }
        period_owner.insert(period_id, (r.plan, month, r.row));
        period_row.insert((r.plan, month), r.row);
        file.periods.insert((r.plan, month), period_id);
    }
    file
}

/// Parses one data row; `None` (with its problems reported) when a cell is bad, or for a
/// blank row.
fn parse_row(row: usize, cells: &[&str], problems: &mut Problems<'_>) -> Option<Row> {
    if cells.iter().all(|c| c.is_empty()) {
        // Spreadsheets save blank rows as a line of commas; they mean nothing.
        return None;
    }
    if cells.len() != COLUMNS.len() && cells.len() != ITEM_ONLY {
        problems.at(
            row,
            cells.len().min(COLUMNS.len() - 1),
            format!(
                "this row has {} cells, the header has {}: check for a stray or missing comma \
                 (a row that only names a plan item may stop after item_id)",
                cells.len(),
                COLUMNS.len()
            ),
        );
        return None;
    }
    let cell = |column: usize| cells.get(column).copied().unwrap_or("");
    let before = problems.count();
    for column in [ACCOUNT, LICENSE] {
        if cell(column).is_empty() {
            problems.at(
                row,
                column,
                format!(
                    "{} is empty: every row names the billing account and license type its \
                     lines carry",
                    COLUMNS[column]
                ),
            );
        }
    }
    let plan = parse_id(
        row,
        PLAN,
        cell(PLAN),
        100_000,
        "recurring invoice plan id",
        problems,
    );
    let item = parse_id(row, ITEM, cell(ITEM), 1, "plan item id", problems);
    let period = match (cell(MONTH), cell(PERIOD)) {
        ("", "") => None,
        ("", _) => {
            problems.at(
                row,
                MONTH,
                "month is empty but period_id is set: write the month (YYYY-MM) the period id is \
                 for, or leave both empty",
            );
            None
        }
        (_, "") => {
            problems.at(
                row,
                PERIOD,
                "period_id is empty but month is set: write the plan's recurring invoice period \
                 id for that month (RamBase shows it on the plan), or leave both empty",
            );
            None
        }
        (month, id) => {
            let month = match month.parse::<Period>() {
                Ok(p) if p.to_string() == month => Some(p),
                _ => {
                    problems.at(
                        row,
                        MONTH,
                        format!(
                            "{month:?} is not a month: expected YYYY-MM, e.g. 2026-11 (if a \
                             spreadsheet turned it into a date, format the column as text)"
                        ),
                    );
                    None
                }
            };
            let id = parse_id(
                row,
                PERIOD,
                id,
                100_000,
                "recurring invoice period id",
                problems,
            );
            month.zip(id)
        }
    };
    if problems.count() > before {
        return None;
    }
    Some(Row {
        row,
        account: cell(ACCOUNT).to_owned(),
        license: cell(LICENSE).to_owned(),
        plan: plan?,
        item: item?,
        period,
    })
}

/// A RamBase id of at least `min`, or a problem saying what was found.
fn parse_id(
    row: usize,
    column: usize,
    text: &str,
    min: u64,
    what: &str,
    problems: &mut Problems<'_>,
) -> Option<u64> {
    if text.is_empty() {
        problems.at(
            row,
            column,
            format!("{} is empty: write the RamBase {what}", COLUMNS[column]),
        );
        return None;
    }
    match text.parse::<u64>() {
        Ok(id) if id >= min => Some(id),
        _ => {
            problems.at(
                row,
                column,
                format!("{text:?} is not a RamBase {what} (a whole number, at least {min})"),
            );
            None
        }
    }
}

/// The row a user adds to the file, as it must be written (cells with a comma or a quote are
/// quoted).
pub fn csv_row(cells: &[&str]) -> String {
    cells
        .iter()
        .map(|c| {
            if c.contains([',', '"', '\n']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                (*c).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "billing_account,license_type,plan_id,item_id,month,period_id\n";

    fn parse(rows: &str) -> Result<MappingFile, Vec<Problem>> {
        MappingFile::from_reader(
            "config/rambase.csv",
            format!("{HEADER}{rows}").as_bytes(),
            &[],
        )
    }

    fn problems(rows: &str) -> Vec<Problem> {
        match parse(rows) {
            Ok(f) => panic!("file accepted: {f:?}"),
            Err(p) => p,
        }
    }

    fn month(s: &str) -> Period {
        s.parse().unwrap()
    }

    #[test]
    fn rows_give_plan_items_and_each_plan_its_own_period_ids() {
        let file = parse(
            "ACME,Agent,100123,1,,\n\
             ACME,Agent,100123,1,2026-10,100500\n\
             ACME,Agent,100123,1,2026-11,100501\n\
             ACME,Light agent,100123,2,2026-11,100501\n\
             GLOBEX,Agent,100124,1,2026-11,100601\n\
             INITECH,Agent,100125,1\n\
             ,,,,,\n",
        )
        .unwrap();
        let items: Vec<(&str, &str, u64, u64, usize)> = file
            .items
            .iter()
            .map(|i| {
                (
                    i.billing_account.as_str(),
                    i.license_type.as_str(),
                    i.plan_id,
                    i.item_id,
                    i.row,
                )
            })
            .collect();
        assert_eq!(
            items,
            [
                ("ACME", "Agent", 100123, 1, 2),
                ("ACME", "Light agent", 100123, 2, 5),
                ("GLOBEX", "Agent", 100124, 1, 6),
                ("INITECH", "Agent", 100125, 1, 7),
            ]
        );
        assert_eq!(file.periods.len(), 3);
        assert_eq!(file.periods[&(100123, month("2026-10"))], 100500);
        assert_eq!(file.periods[&(100123, month("2026-11"))], 100501);
        assert_eq!(file.periods[&(100124, month("2026-11"))], 100601);
        assert_eq!(file.periods.get(&(100125, month("2026-11"))), None);
    }

    #[test]
    fn bad_cells_are_reported_with_row_and_column_all_at_once() {
        let found = problems(
            "ACME,Agent,99999,0,2026-1,5\n\
             ,Agent,100123,1,2026-11,\n\
             GLOBEX,,100124,x,,100601\n\
             INITECH,Agent,100125\n",
        );
        let places: Vec<&str> = found.iter().map(|p| p.at.as_str()).collect();
        assert_eq!(
            places,
            [
                "config/rambase.csv:2:plan_id",
                "config/rambase.csv:2:item_id",
                "config/rambase.csv:2:month",
                "config/rambase.csv:2:period_id",
                "config/rambase.csv:3:billing_account",
                "config/rambase.csv:3:period_id",
                "config/rambase.csv:4:license_type",
                "config/rambase.csv:4:item_id",
                "config/rambase.csv:4:month",
                "config/rambase.csv:5:item_id",
            ]
        );
        assert!(
            found[0]
                .message
                .contains("\"99999\" is not a RamBase recurring invoice plan id")
        );
        assert!(
            found[2]
                .message
                .contains("\"2026-1\" is not a month: expected YYYY-MM")
        );
        assert!(found[3].message.contains("at least 100000"));
        assert!(
            found[5]
                .message
                .contains("period_id is empty but month is set")
        );
        assert!(
            found[8]
                .message
                .contains("month is empty but period_id is set")
        );
        assert!(found[9].message.contains("this row has 3 cells"));
    }

    #[test]
    fn a_plan_item_shared_by_two_account_license_pairs_is_refused() {
        let found = problems("ACME,Agent,100123,1,,\nGLOBEX,Agent,100123,1,2026-11,100601\n");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].at, "config/rambase.csv:3:item_id");
        assert!(
            found[0]
                .message
                .contains("plan 100123 item 1 is also used on row 2")
                && found[0].message.contains("\"ACME\""),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn one_pair_on_two_plan_items_is_refused() {
        let found = problems("ACME,Agent,100123,1,,\nACME,Agent,100124,1,2026-11,100601\n");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].at, "config/rambase.csv:3:plan_id");
        assert!(
            found[0].message.contains("on row 2"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn a_plan_has_one_period_per_month_and_a_period_id_one_plan() {
        let found = problems(
            "ACME,Agent,100123,1,2026-11,100501\n\
             ACME,Light agent,100123,2,2026-11,100502\n\
             GLOBEX,Agent,100124,1,2026-11,100501\n",
        );
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(found[0].at, "config/rambase.csv:3:period_id");
        assert!(
            found[0]
                .message
                .contains("plan 100123's period for 2026-11 is 100501 on row 2"),
            "{}",
            found[0].message
        );
        assert_eq!(found[1].at, "config/rambase.csv:4:period_id");
        assert!(
            found[1]
                .message
                .contains("period id 100501 is plan 100123's period for 2026-11 on row 2"),
            "{}",
            found[1].message
        );
    }

    #[test]
    fn a_wrong_header_or_an_empty_file_is_reported() {
        let found = MappingFile::from_reader(
            "m.csv",
            "billing_account,license,plan_id,item_id\n".as_bytes(),
            &[],
        )
        .unwrap_err();
        let places: Vec<&str> = found.iter().map(|p| p.at.as_str()).collect();
        assert_eq!(
            places,
            ["m.csv:1:license_type", "m.csv:1:month", "m.csv:1:period_id"]
        );
        assert!(found[0].message.contains("found \"license\""));
        let empty = MappingFile::from_reader("m.csv", "".as_bytes(), &[]).unwrap_err();
        assert_eq!(empty[0].at, "m.csv:1:billing_account");
        assert!(empty[0].message.contains("empty"));
        // A header with a byte-order mark (Excel's "CSV UTF-8") is fine.
        let bom = format!("\u{feff}{HEADER}ACME,Agent,100123,1,,\n");
        assert!(MappingFile::from_reader("m.csv", bom.as_bytes(), &[]).is_ok());
    }

    #[test]
    fn a_missing_file_is_named() {
        let found = MappingFile::load(Path::new("/nonexistent/rambase.csv"), &[]).unwrap_err();
        assert_eq!(found[0].at, "/nonexistent/rambase.csv");
        assert!(
            found[0].message.contains("cannot open"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn the_example_in_config_is_valid() {
        let file = MappingFile::load(Path::new("config/rambase.csv"), &[]).unwrap();
        assert_eq!(file.items.len(), 2);
        assert_eq!(file.periods[&(100002, month("2026-11"))], 100321);
    }

    #[test]
    fn rows_to_add_quote_cells_that_need_it() {
        assert_eq!(
            csv_row(&[
                "ACME, Inc",
                "Agent",
                "100123",
                "1",
                "2026-11",
                "<period id>"
            ]),
            "\"ACME, Inc\",Agent,100123,1,2026-11,<period id>"
        );
    }
}
