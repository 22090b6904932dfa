//! The lines as an XLSX workbook: numbers as numbers, shown with their currency's decimals,
//! and a totals block per currency and status under the lines.
//!
//! An XLSX cell holds an IEEE double: that is the file format, not a choice. The decimal is
//! turned into the nearest double only when the cell is written (through its exact text, which
//! Rust parses correctly rounded); amounts of up to 15 significant digits read back as the same
//! decimal. No arithmetic is done on doubles: the totals are summed as decimals first.

use super::{Cell, HEADERS, RateDecimals, Status, row, totals_by_status};
use crate::domain::LedgerLine;
use anyhow::Context;
use rust_decimal::Decimal;
use rust_xlsxwriter::{Format, Workbook, Worksheet};
use std::collections::BTreeMap;

/// Where the totals block writes its label, currency, status and amount.
const COL_LABEL: u16 = 0;
const COL_AMOUNT: u16 = 8;
const COL_CURRENCY: u16 = 9;
const COL_STATUS: u16 = 10;

/// `lines` as an XLSX workbook with one sheet, `lines`: a header row, one row per revision,
/// then a blank row and one `total` row per currency and status, its amount in the amount
/// column.
pub fn lines_xlsx(lines: &[LedgerLine]) -> anyhow::Result<Vec<u8>> {
    let rates = RateDecimals::of(lines);
    let mut workbook = Workbook::new();
    let mut formats = Formats::default();
    let sheet = workbook.add_worksheet();
    sheet.set_name("lines")?;
    let bold = Format::new().set_bold();
    for (col, header) in HEADERS.iter().enumerate() {
        sheet.write_string_with_format(0, col as u16, *header, &bold)?;
    }
    sheet.set_freeze_panes(1, 0)?;
    let mut r: u32 = 1;
    for l in lines {
        for (col, cell) in row(l, &rates).iter().enumerate() {
            write(sheet, &mut formats, r, col as u16, cell)?;
        }
        r += 1;
    }
    let totals = totals_by_status(lines)
        .context("the lines' amounts add up to a total too large to compute")?;
    r += 1;
    for ((currency, Status(status)), total) in totals {
        sheet.write_string_with_format(r, COL_LABEL, "total", &bold)?;
        sheet.write_string(r, COL_CURRENCY, currency.code())?;
        sheet.write_string(r, COL_STATUS, status.as_str())?;
        let format = formats.get(currency.minor_units(), false).set_bold();
        sheet.write_number_with_format(r, COL_AMOUNT, double(total)?, &format)?;
        r += 1;
    }
    for (col, header) in HEADERS.iter().enumerate() {
        let width = match *header {
            "tiers" | "why" | "reason" => 60.0,
            "idempotency_key" | "evidence_hash" => 30.0,
            _ => 14.0,
        };
        sheet.set_column_width(col as u16, width)?;
    }
    Ok(workbook.save_to_buffer()?)
}

/// Number formats by decimals, made once each.
#[derive(Default)]
struct Formats(BTreeMap<(u32, bool), Format>);

impl Formats {
    /// `#,##0.00` for 2 decimals; with `exact`, further optional digits (`#,##0.00######`) so
    /// that an unrounded raw amount shows all of its digits.
    fn get(&mut self, decimals: u32, exact: bool) -> Format {
        self.0
            .entry((decimals, exact))
            .or_insert_with(|| {
                let mut pattern = "#,##0".to_owned();
                if decimals > 0 || exact {
                    pattern.push('.');
                    pattern.push_str(&"0".repeat(decimals as usize));
                }
                if exact {
                    pattern.push_str("##########");
                }
                Format::new().set_num_format(pattern)
            })
            .clone()
    }
}

fn write(
    sheet: &mut Worksheet,
    formats: &mut Formats,
    r: u32,
    col: u16,
    cell: &Cell,
) -> anyhow::Result<()> {
    match cell {
        Cell::Text(s) => {
            sheet.write_string(r, col, s)?;
        }
        Cell::Number(d, decimals) => {
            sheet.write_number_with_format(r, col, double(*d)?, &formats.get(*decimals, false))?;
        }
        Cell::Exact(d, decimals) => {
            sheet.write_number_with_format(r, col, double(*d)?, &formats.get(*decimals, true))?;
        }
        Cell::Empty => {}
    }
    Ok(())
}

/// The double a spreadsheet cell holds for `d`: the nearest one to its exact text.
fn double(d: Decimal) -> anyhow::Result<f64> {
    d.to_string()
        .parse::<f64>()
        .with_context(|| format!("{d} cannot be written as a spreadsheet number"))
}
