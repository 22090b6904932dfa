//! The CSV form of the list (`/account/billable_users.csv`, docs/connectors/billable-users.md): one page of the export
//! read into rows, with no I/O, so that every quirk is tested as plain values.
//!
//! The export is UTF-8 with a header row of the field names and RFC 4180 quoting (commas,
//! quotes and line breaks inside quoted fields). A value beginning with `= + - @` may carry a
//! tab in front, a guard against spreadsheet formulas; it is not part of the value, so it is
//! stripped here (`"\t=Org"` is the organization `=Org`, as the JSON form spells it).
//!
//! Columns are found by name, not position: the exact header is not published, and an export
//! that reorders or adds columns must still bill the same people.

use serde_json::{Map, Value};

/// The columns tally needs; the others are kept as evidence only.
pub const ID: &str = "id";
pub const ORGANIZATION: &str = "organization";

/// A UTF-8 byte-order mark, which spreadsheet-minded exports like to put first.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One person of the export.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// 1-based among the page's data rows (the header row is not counted).
    pub number: u64,
    pub id: u64,
    /// Exactly as exported, guard stripped: mapping matches it as the API spells it.
    pub organization: String,
    /// The whole row, column name → value (guards stripped), kept as the record's evidence.
    pub fields: Map<String, Value>,
}

/// Why a page of the export cannot be read. Each says where (row, line, field) and what was
/// expected; the caller adds the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    /// Not even a header row.
    #[error(
        "the CSV body is empty: expected a header row with the field names (id, organization, ...)"
    )]
    Empty,
    /// The header row lacks a column tally needs.
    #[error(
        "the CSV header row has no column `{column}` (it has: {found}); tally needs `id` and \
         `organization` to bill people: check that the export's columns did not change, or set \
         sources.billable_users.format = \"json\""
    )]
    MissingColumn { column: &'static str, found: String },
    /// A column tally needs appears twice: which one holds the value is a guess.
    #[error("the CSV header row has the column `{column}` twice; refusing to guess which to read")]
    DuplicateColumn { column: &'static str },
    /// The header row itself is unreadable.
    #[error("the CSV header row cannot be read: {message}")]
    Header { message: String },
    /// One data row is malformed; the page fails, since billing the others would under-bill.
    #[error("CSV row {row} (line {line}){}: {message}", field.as_ref().map(|f| format!(", field `{f}`")).unwrap_or_default())]
    Row {
        /// 1-based among the data rows.
        row: u64,
        /// 1-based line of the body where the row starts.
        line: u64,
        field: Option<String>,
        message: String,
    },
}

/// Reads one page of the export. Blank lines are skipped; anything else that is not a person
/// fails the page naming the row and the field.
pub fn parse(body: &[u8]) -> Result<Vec<Row>, CsvError> {
    let body = body.strip_prefix(BOM).unwrap_or(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(CsvError::Empty);
    }
    // Defaults are RFC 4180: `"` quotes, `""` escapes, no trimming (a tab guard must survive
    // until it is stripped on purpose), and a row with a different field count is an error.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(body);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| CsvError::Header {
            message: e.to_string(),
        })?
        .iter()
        .map(|name| strip_guard(name).trim().to_owned())
        .collect();
    let id_at = column(&header, ID)?;
    let organization_at = column(&header, ORGANIZATION)?;

    let mut rows = Vec::new();
    for (index, result) in reader.records().enumerate() {
        let number = index as u64 + 1;
        let record = result.map_err(|e| row_error(&e, number, &header, body))?;
        let line = line_of(body, record.position());
        let fail = |field: &str, message: String| CsvError::Row {
            row: number,
            line,
            field: Some(field.to_owned()),
            message,
        };
        let value = |at: usize| strip_guard(record.get(at).unwrap_or_default());

        let raw_id = value(id_at);
        let id = parse_id(raw_id).ok_or_else(|| {
            fail(
                ID,
                format!("{raw_id:?} is not a non-negative integer (a person's id)"),
            )
        })?;
        let organization = value(organization_at);
        if organization.trim().is_empty() {
            return Err(fail(
                ORGANIZATION,
                format!("is empty (id {id}); every billable person belongs to an organization"),
            ));
        }
        let fields = header
            .iter()
            .enumerate()
            .map(|(at, name)| (name.clone(), Value::String(value(at).to_owned())))
            .collect();
        rows.push(Row {
            number,
            id,
            organization: organization.to_owned(),
            fields,
        });
    }
    Ok(rows)
}

/// The value without its formula guard: a tab before `= + - @` (docs/connectors/billable-users.md contract). A tab
/// before anything else is data and stays.
pub fn strip_guard(value: &str) -> &str {
    match value.strip_prefix('\t') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@']) => rest,
        _ => value,
    }
}

/// Digits only: `u64::from_str` would also take `+5`, which no id is.
fn parse_id(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The position of `name` in the header row, compared case-insensitively.
fn column(header: &[String], name: &'static str) -> Result<usize, CsvError> {
    let mut found = header
        .iter()
        .enumerate()
        .filter(|(_, h)| h.eq_ignore_ascii_case(name))
        .map(|(at, _)| at);
    match (found.next(), found.next()) {
        (Some(at), None) => Ok(at),
        (Some(_), Some(_)) => Err(CsvError::DuplicateColumn { column: name }),
        (None, _) => Err(CsvError::MissingColumn {
            column: name,
            found: if header.is_empty() {
                "no columns".to_owned()
            } else {
                header.join(", ")
            },
        }),
    }
}

/// The 1-based line of `body` where the record at `position` starts.
///
/// Counted from the byte offset rather than taken from `Position::line`, which lags by one
/// after a CRLF (the `\n` of the previous row is still ahead of the position). Line breaks
/// at the offset belong to the rows before.
fn line_of(body: &[u8], position: Option<&csv::Position>) -> u64 {
    let Some(position) = position else {
        return 0;
    };
    let mut start = usize::try_from(position.byte())
        .unwrap_or(usize::MAX)
        .min(body.len());
    while matches!(body.get(start), Some(b'\r' | b'\n')) {
        start += 1;
    }
    1 + body[..start].iter().filter(|&&b| b == b'\n').count() as u64
}

/// A row the `csv` reader refused, said with the row, line and (where known) the field.
fn row_error(error: &csv::Error, number: u64, header: &[String], body: &[u8]) -> CsvError {
    let line = line_of(body, error.position());
    match error.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => CsvError::Row {
            row: number,
            line,
            field: None,
            message: format!(
                "has {len} field(s) where the header row has {expected_len}; a value with a \
                 comma or a line break that is not quoted breaks a row like this"
            ),
        },
        csv::ErrorKind::Utf8 { err, .. } => CsvError::Row {
            row: number,
            line,
            field: Some(
                header
                    .get(err.field())
                    .cloned()
                    .unwrap_or_else(|| format!("#{}", err.field() + 1)),
            ),
            message: "is not valid UTF-8 (the export is documented as UTF-8)".to_owned(),
        },
        _ => CsvError::Row {
            row: number,
            line,
            field: None,
            message: error.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "id,primary_email,name,organization,business_unit,region,sign_ins,last_visit,updates\r\n";

    fn parse_str(body: &str) -> Result<Vec<Row>, CsvError> {
        parse(body.as_bytes())
    }

    #[test]
    fn quoted_fields_keep_commas_quotes_and_line_breaks() {
        let body = format!(
            "{HEADER}\
             70,a@x.example,Ashok Kumar,\"Widget Data Center, External IT\",,EU,14,2015-10-30T15:22:25-05:00,78\r\n\
             71,b@x.example,\"Bo \"\"The Boss\"\" B\",\"Two\r\nLines \"\"Ltd\"\"\",,EU,0,,0\r\n"
        );
        let rows = parse_str(&body).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].id, 70);
        assert_eq!(rows[0].organization, "Widget Data Center, External IT");
        assert_eq!(rows[0].fields["last_visit"], "2015-10-30T15:22:25-05:00");
        assert_eq!(rows[1].organization, "Two\r\nLines \"Ltd\"");
        assert_eq!(rows[1].fields["name"], "Bo \"The Boss\" B");
        assert_eq!(rows[1].number, 2);
    }

    #[test]
    fn formula_guards_are_stripped_and_other_tabs_kept() {
        assert_eq!(strip_guard("\t=SUM(A1)"), "=SUM(A1)");
        assert_eq!(strip_guard("\t+47"), "+47");
        assert_eq!(strip_guard("\t-North"), "-North");
        assert_eq!(strip_guard("\t@home"), "@home");
        assert_eq!(strip_guard("=unguarded"), "=unguarded");
        assert_eq!(strip_guard("\tplain"), "\tplain");
        assert_eq!(strip_guard("\t\t=x"), "\t\t=x");

        let body = format!("{HEADER}5,a@x,\"\t=cmd\",\"\t=Org, Inc\",,\t-North,0,,0\r\n");
        let rows = parse_str(&body).unwrap();
        assert_eq!(rows[0].organization, "=Org, Inc");
        assert_eq!(rows[0].fields["name"], "=cmd");
        assert_eq!(rows[0].fields["region"], "-North");
    }

    #[test]
    fn columns_are_found_by_name_in_any_order_and_case() {
        let body = "Organization,ID,extra\r\nAcme,7,x\r\n";
        let rows = parse_str(body).unwrap();
        assert_eq!((rows[0].id, rows[0].organization.as_str()), (7, "Acme"));
        assert_eq!(rows[0].fields["extra"], "x");
    }

    #[test]
    fn a_byte_order_mark_and_blank_lines_are_ignored() {
        let body = format!("\u{FEFF}{HEADER}\r\n1,a,b,Acme,,r,0,,0\r\n\r\n");
        let rows = parse_str(&body).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].organization, "Acme");
    }

    #[test]
    fn a_header_row_alone_is_an_empty_page_and_no_header_is_an_error() {
        assert_eq!(parse_str(HEADER).unwrap(), vec![]);
        assert_eq!(parse_str("").unwrap_err(), CsvError::Empty);
        assert_eq!(parse_str(" \r\n").unwrap_err(), CsvError::Empty);
    }

    #[test]
    fn a_missing_column_is_named_with_the_columns_found() {
        let error = parse_str("id,name\r\n1,x\r\n").unwrap_err();
        assert_eq!(
            error,
            CsvError::MissingColumn {
                column: "organization",
                found: "id, name".into()
            }
        );
        assert!(error.to_string().contains("no column `organization`"));
        let error = parse_str("organization\r\nAcme\r\n").unwrap_err();
        assert!(matches!(
            error,
            CsvError::MissingColumn { column: "id", .. }
        ));
        let error = parse_str("id,organization,ID\r\n1,A,2\r\n").unwrap_err();
        assert_eq!(error, CsvError::DuplicateColumn { column: "id" });
    }

    #[test]
    fn a_malformed_row_names_the_row_the_line_and_the_field() {
        let body = format!("{HEADER}1,a,b,Acme,,r,0,,0\r\nabc,a,b,Acme,,r,0,,0\r\n");
        let error = parse_str(&body).unwrap_err().to_string();
        assert_eq!(
            error,
            "CSV row 2 (line 3), field `id`: \"abc\" is not a non-negative integer (a person's id)"
        );

        for bad_id in ["", "-1", "+5", "1.5", " 7"] {
            let body = format!("{HEADER}{bad_id},a,b,Acme,,r,0,,0\r\n");
            let error = parse_str(&body).unwrap_err();
            assert!(
                matches!(&error, CsvError::Row { row: 1, field: Some(f), .. } if f == "id"),
                "{bad_id:?}: {error}"
            );
        }

        let body = format!("{HEADER}1,a,b,\"  \",,r,0,,0\r\n");
        let error = parse_str(&body).unwrap_err().to_string();
        assert!(
            error.contains("row 1") && error.contains("`organization`"),
            "{error}"
        );
    }

    #[test]
    fn a_row_with_the_wrong_number_of_fields_is_named() {
        let body = format!("{HEADER}1,a,b,Acme,,r,0,,0\r\n2,a,b,Widget, Inc,,r,0,,0\r\n");
        let error = parse_str(&body).unwrap_err().to_string();
        assert!(
            error.starts_with("CSV row 2 (line 3): has 10 field(s)"),
            "{error}"
        );
        // Lines count the line breaks inside quoted fields and blank lines; LF works too.
        let body = "id,organization\n\n1,\"Two\nLines\"\n2\n";
        let error = parse_str(body).unwrap_err().to_string();
        assert!(
            error.starts_with("CSV row 2 (line 5): has 1 field(s)"),
            "{error}"
        );
    }

    #[test]
    fn invalid_utf8_names_the_field() {
        let mut body = HEADER.as_bytes().to_vec();
        body.extend_from_slice(b"1,a,b,Acme \xFF,,r,0,,0\r\n");
        let error = parse(&body).unwrap_err().to_string();
        assert!(
            error.contains("row 1") && error.contains("`organization`"),
            "{error}"
        );
    }
}
