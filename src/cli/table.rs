//! Text tables for people, fitted to the width of the output (comfy-table): cells wrap at
//! whitespace, a word is never cut (a column is at least as wide as its longest word), numbers
//! are right-aligned, and nothing is coloured. With no width (output piped into a file or
//! another program, `COLUMNS` unset), a table keeps one row per line.
//!
//! Where a table's longest words cannot fit side by side, the callers in `render` change its
//! shape rather than cut words: the lines table is grouped into sections, and an exception's
//! long message goes on its own lines under its row ([`with_details`]).

use comfy_table::{
    Cell, CellAlignment, ColumnConstraint, ContentArrangement, LineStyle, Table, TableStyle, Width,
};

/// Columns side by side, two spaces apart; a rule of dashes under the header.
const STYLE: TableStyle = TableStyle::new()
    .header_lines(comfy_table::ContentLineStyle::none().junction(' '))
    .header_separator(LineStyle::none().fill('-').junction(' '))
    .content_lines(comfy_table::ContentLineStyle::none().junction(' '));

/// Spaces between two columns.
const GAP: usize = 2;

fn chars(text: &str) -> usize {
    text.chars().count()
}

/// The width of the longest word (whitespace-separated) of a column, header included.
fn longest_word(headers: &[&str], rows: &[Vec<String>], column: usize) -> usize {
    std::iter::once(headers[column])
        .chain(
            rows.iter()
                .filter_map(|r| r.get(column).map(String::as_str)),
        )
        .flat_map(str::split_whitespace)
        .map(chars)
        .max()
        .unwrap_or(0)
}

/// How wide the table is with every cell on one line.
pub fn natural_width(headers: &[&str], rows: &[Vec<String>]) -> usize {
    (0..headers.len())
        .map(|i| {
            std::iter::once(chars(headers[i]))
                .chain(rows.iter().filter_map(|r| r.get(i).map(|c| chars(c))))
                .max()
                .unwrap_or(0)
        })
        .sum::<usize>()
        + GAP * headers.len().saturating_sub(1)
}

/// Padding right of a column: the junction is one space, this one more makes the gap; none
/// after the last column.
fn padding(column: usize, columns: usize) -> u16 {
    u16::from(column + 1 < columns)
}

/// Renders `table` (its columns already set), trimming the lines and making the rule under the
/// header two spaces apart between columns, as the cells are.
fn render(table: &Table) -> String {
    let mut out = String::new();
    let mut rule_drawn = false;
    for line in table.lines() {
        let line = line.trim_end();
        if !rule_drawn && is_rule(line) {
            // The rule's dashes run over a column's padding too.
            rule_drawn = true;
            out.push_str(&line.replace("- ", "  "));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

fn is_rule(line: &str) -> bool {
    line.contains('-') && line.chars().all(|c| c == '-' || c == ' ')
}

/// A table with `rows` (and `headers`, if given) whose columns are laid out by `constraint`,
/// the columns headed by a name in `numbers` right-aligned.
fn build(
    headers: &[&str],
    with_header: bool,
    rows: &[Vec<String>],
    numbers: &[&str],
    constraint: impl Fn(usize) -> ColumnConstraint,
) -> Table {
    let mut table = Table::new();
    table.load_style(STYLE);
    if with_header {
        table.set_header(headers.iter().map(Cell::new));
    }
    for row in rows {
        table.add_row(row.iter().map(Cell::new));
    }
    let columns = headers.len();
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, padding(i, columns)));
        if numbers.contains(&headers[i]) {
            column.set_cell_alignment(CellAlignment::Right);
        }
        column.set_constraint(constraint(i));
    }
    table
}

/// `headers` and `rows` as a table at most `width` wide (`None`: as wide as its cells), every
/// line ending in `\n`; the columns headed by a name in `numbers` are right-aligned. A table
/// whose longest words do not fit side by side is wider than `width` rather than cut a word.
pub fn fitted(
    headers: &[&str],
    rows: &[Vec<String>],
    numbers: &[&str],
    width: Option<u16>,
) -> String {
    let columns = headers.len();
    let mut table = build(headers, true, rows, numbers, |i| {
        // The boundary counts the padding.
        let word = u16::try_from(longest_word(headers, rows, i)).unwrap_or(u16::MAX);
        ColumnConstraint::LowerBoundary(Width::Fixed(word.saturating_add(padding(i, columns))))
    });
    match width {
        Some(width) => {
            table.set_content_arrangement(ContentArrangement::Dynamic);
            table.set_width(width);
        }
        None => {
            table.set_content_arrangement(ContentArrangement::Disabled);
        }
    }
    render(&table)
}

/// The widths of the columns of a rendered table, read off the rule under its header.
fn rule_widths(table: &str) -> Vec<usize> {
    table
        .lines()
        .find(|l| is_rule(l))
        .map(|rule| rule.split_whitespace().map(chars).collect())
        .unwrap_or_default()
}

/// Indent of a row's details under it.
const DETAIL_INDENT: &str = "    ";

/// A table whose rows each have a long text (`details`, headed `detail_header`): as its last
/// column when everything fits `width` on one line per row; otherwise on its own lines under
/// each row, indented and wrapped at whitespace to `width`, the other columns fitted above.
pub fn with_details(
    headers: &[&str],
    rows: &[Vec<String>],
    numbers: &[&str],
    detail_header: &str,
    details: &[String],
    width: Option<u16>,
) -> String {
    let mut all_headers = headers.to_vec();
    all_headers.push(detail_header);
    let all_rows: Vec<Vec<String>> = rows
        .iter()
        .zip(details)
        .map(|(row, detail)| {
            let mut row = row.clone();
            row.push(detail.clone());
            row
        })
        .collect();
    let limit = match width {
        Some(limit) if natural_width(&all_headers, &all_rows) > usize::from(limit) => limit,
        _ => return fitted(&all_headers, &all_rows, numbers, width),
    };
    // The other columns fitted as one table, for its header and its columns' widths; then each
    // row alone at those widths, so that its details can follow it.
    let table = fitted(headers, rows, numbers, width);
    let widths = rule_widths(&table);
    let mut out = String::new();
    for line in table.lines() {
        if is_rule(line) {
            out.push_str(DETAIL_INDENT);
            out.push_str(detail_header);
            out.push('\n');
            out.push_str(line);
            out.push('\n');
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    let columns = headers.len();
    let room = usize::from(limit).saturating_sub(DETAIL_INDENT.len());
    for (row, detail) in rows.iter().zip(details) {
        let mut one = build(headers, false, std::slice::from_ref(row), numbers, |i| {
            let w = widths.get(i).copied().unwrap_or(0) + usize::from(padding(i, columns));
            ColumnConstraint::Absolute(Width::Fixed(u16::try_from(w).unwrap_or(u16::MAX)))
        });
        one.set_content_arrangement(ContentArrangement::Disabled);
        out.push_str(&render(&one));
        for wrapped in wrap(detail, room) {
            out.push_str(DETAIL_INDENT);
            out.push_str(&wrapped);
            out.push('\n');
        }
    }
    out
}

/// `text` in lines of at most `width` characters, broken at whitespace only: a longer word
/// stands alone on its line, whole.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && chars(&line) + 1 + chars(word) > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(cells: &[&[&str]]) -> Vec<Vec<String>> {
        cells
            .iter()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect()
    }

    #[test]
    fn numbers_are_right_aligned_and_text_left_aligned() {
        let t = fitted(
            &["customer", "amount"],
            &rows(&[&["ACME", "5.00"], &["Initech AS", "1250.50"]]),
            &["amount"],
            None,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "customer     amount");
        assert_eq!(lines[1], "----------  -------");
        assert_eq!(lines[2], "ACME           5.00");
        assert_eq!(lines[3], "Initech AS  1250.50");
    }

    #[test]
    fn a_narrow_table_wraps_whole_words() {
        let t = fitted(
            &["customer", "note"],
            &rows(&[&[
                "ACME",
                "a long note that cannot stay on one line of thirty columns",
            ]]),
            &[],
            Some(30),
        );
        for line in t.lines() {
            assert!(line.chars().count() <= 30, "{t}");
        }
        let words: Vec<&str> = t.split_whitespace().collect();
        for word in "a long note that cannot stay on one line of thirty columns".split(' ') {
            assert!(words.contains(&word), "{word} cut in {t}");
        }
    }

    #[test]
    fn details_go_under_their_row_when_they_do_not_fit_beside_it() {
        let message =
            "add a row `billable_users,Hooli Labs,<billing account>` to config/customers.csv";
        let headers = ["source", "customer"];
        let cells = rows(&[&["billable_users", "Hooli Labs"]]);
        let wide = with_details(&headers, &cells, &[], "what to do", &[message.into()], None);
        assert_eq!(wide.lines().count(), 3, "{wide}");
        let narrow = with_details(
            &headers,
            &cells,
            &[],
            "what to do",
            &[message.into()],
            Some(50),
        );
        let lines: Vec<&str> = narrow.lines().collect();
        assert_eq!(lines[0], "source          customer");
        assert_eq!(lines[1], "    what to do");
        assert_eq!(lines[3], "billable_users  Hooli Labs");
        assert_eq!(
            lines[4],
            "    add a row `billable_users,Hooli Labs,<billing"
        );
        assert_eq!(lines[5], "    account>` to config/customers.csv");
    }

    #[test]
    fn a_word_longer_than_the_line_stays_whole() {
        assert_eq!(
            wrap("see config/a-very-long-path/customers.csv now", 10),
            vec!["see", "config/a-very-long-path/customers.csv", "now"]
        );
    }
}
