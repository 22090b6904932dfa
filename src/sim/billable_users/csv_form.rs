//! The CSV form of the list, as the API renders it (with its formula guard).

use super::*;

/// One CSV page with the knobs a test set: columns, guard, and a corrupt line (consumed).
pub(super) fn csv_page(sim: &BillableUsersSim, people: &[&Person]) -> Result<String, csv::Error> {
    let (columns, guard, corrupt) = {
        let mut state = sim.state();
        let columns = state
            .csv_columns
            .clone()
            .unwrap_or_else(|| CSV_COLUMNS.iter().map(|c| (*c).to_owned()).collect());
        (columns, state.csv_guard, state.csv_corrupt_next.take())
    };
    let mut body = to_csv(people, &columns, guard)?;
    if let Some(line) = corrupt {
        body.push_str(&line);
        body.push_str("\r\n");
    }
    Ok(body)
}

/// RFC 4180 CSV with a header row of `columns`; with `guard`, a value beginning with
/// `= + - @` gets a tab in front so that a spreadsheet does not run it as a formula (docs/connectors/billable-users.md
/// contract).
pub(super) fn to_csv(
    people: &[&Person],
    columns: &[String],
    guard: bool,
) -> Result<String, csv::Error> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    writer.write_record(columns)?;
    for p in people {
        writer.write_record(columns.iter().map(|column| {
            let value = cell(p, column);
            if guard { defuse(&value) } else { value }
        }))?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A person's field by its API name; null and unknown names are empty cells.
pub(super) fn cell(p: &Person, column: &str) -> String {
    match column {
        "id" => p.id.to_string(),
        "primary_email" => p.primary_email.clone(),
        "name" => p.name.clone(),
        "organization" => p.organization.clone(),
        "business_unit" => p.business_unit.clone().unwrap_or_default(),
        "region" => p.region.clone(),
        "sign_ins" => p.sign_ins.to_string(),
        "last_visit" => p.last_visit.clone().unwrap_or_default(),
        "updates" => p.updates.to_string(),
        _ => String::new(),
    }
}

pub(super) fn defuse(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@']) {
        format!("\t{value}")
    } else {
        value.to_owned()
    }
}
