//! The lines as CSV for spreadsheets: UTF-8 with a byte-order mark, so that Excel reads
//! "Service desk user – annual" as written instead of guessing a code page.

use super::{HEADERS, RateDecimals, row};
use crate::domain::LedgerLine;

/// The byte-order mark Excel looks for to read a CSV file as UTF-8.
const BOM: &[u8] = "\u{feff}".as_bytes();

/// `lines` as CSV: the byte-order mark, the snake_case [`HEADERS`], then one row per revision.
pub fn lines_csv(lines: &[LedgerLine]) -> anyhow::Result<Vec<u8>> {
    let rates = RateDecimals::of(lines);
    let mut writer = ::csv::Writer::from_writer(BOM.to_vec());
    writer.write_record(HEADERS)?;
    for l in lines {
        writer.write_record(row(l, &rates).iter().map(|c| c.text()))?;
    }
    Ok(writer.into_inner()?)
}
