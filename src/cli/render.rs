//! How runs, plans, lines and exceptions look to people: aligned text tables, CSV and JSON.
//! Pure formatting; the numbers are printed exactly as the ledger holds them.

use crate::domain::{LedgerLine, RunException, RunSummary};
use crate::reconcile::{Action, Plan};
use crate::store::RunRecord;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A plain text table: numbers right-aligned, everything else left-aligned.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let numeric: Vec<bool> = (0..headers.len())
        .map(|i| {
            !rows.is_empty()
                && rows.iter().all(|r| {
                    r.get(i).is_some_and(|c| {
                        c.is_empty() || c.parse::<Decimal>().is_ok() || c.parse::<i64>().is_ok()
                    })
                })
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i > 0 {
                text.push_str("  ");
            }
            if numeric[i] {
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(
        &mut out,
        &headers.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    );
    line(
        &mut out,
        &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(),
    );
    for row in rows {
        line(&mut out, row);
    }
    out
}

/// The human summary that ends every run.
pub fn summary_text(s: &RunSummary) -> String {
    let mut out = String::new();
    let run = match s.run_id {
        Some(id) => format!("run {id}"),
        None => "dry run (nothing written)".to_owned(),
    };
    let _ = writeln!(out, "{run} for {}: {}", s.period, s.status);
    let _ = writeln!(out, "  records read      {}", s.records_read);
    let _ = writeln!(out, "  lines created     {}", s.lines_created);
    let _ = writeln!(out, "  lines adjusted    {}", s.lines_adjusted);
    let _ = writeln!(out, "  lines unchanged   {}", s.lines_unchanged);
    let _ = writeln!(out, "  lines pushed      {}", s.lines_pushed);
    if s.lines_waiting_approval > 0 {
        let _ = writeln!(out, "  waiting approval  {}", s.lines_waiting_approval);
    }
    if s.lines_waiting_to_settle > 0 {
        let _ = writeln!(out, "  waiting to settle {}", s.lines_waiting_to_settle);
    }
    let _ = writeln!(out, "  exceptions        {}", s.exceptions);
    for (currency, total) in &s.totals {
        let _ = writeln!(out, "  total {currency}         {total}");
    }
    for f in &s.failed_sources {
        let _ = writeln!(out, "  FAILED source {}: {}", f.source, f.error);
    }
    for e in &s.errors {
        let _ = writeln!(out, "  push error: {e}");
    }
    if s.lines_back_to_review > 0 {
        let _ = writeln!(
            out,
            "  {} approved line(s) changed since their approval and are drafts again",
            s.lines_back_to_review
        );
    }
    if s.lines_waiting_approval > 0 {
        let _ = writeln!(
            out,
            "  {} line(s) wait for approval: review them with `tally lines --period {p}`, then `tally approve --period {p}`",
            s.lines_waiting_approval,
            p = s.period
        );
    }
    if s.status == crate::domain::RunStatus::Interrupted {
        let _ = writeln!(
            out,
            "  interrupted by a signal: what was done is recorded; run again to finish"
        );
    } else if !s.dry_run
        && s.lines_pushed == 0
        && s.errors.is_empty()
        && s.failed_sources.is_empty()
        && s.lines_waiting_approval == 0
    {
        let _ = writeln!(
            out,
            "  nothing was pushed: the billing systems already hold every line"
        );
    }
    out
}

/// What a dry run would do, line by line.
pub fn plan_text(plan: &Plan) -> String {
    let rows: Vec<Vec<String>> = plan
        .entries
        .iter()
        .map(|e| {
            vec![
                match e.action {
                    Action::Create => "create",
                    Action::Update => "update",
                    Action::Adjust => "adjust",
                    Action::Unchanged => "unchanged",
                }
                .to_owned(),
                e.key.billing_account.to_string(),
                e.key.license_type.to_string(),
                e.key.source.to_string(),
                e.quantity.to_string(),
                e.amount.to_string(),
                e.currency.to_string(),
                if e.action == Action::Unchanged {
                    String::new()
                } else {
                    e.delta_amount.to_string()
                },
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no lines\n".to_owned();
    }
    table(
        &[
            "action",
            "customer",
            "license type",
            "source",
            "quantity",
            "amount",
            "currency",
            "to push",
        ],
        &rows,
    )
}

fn line_row(l: &LedgerLine) -> Vec<String> {
    vec![
        l.key.period.to_string(),
        l.key.billing_account.to_string(),
        l.key.license_type.to_string(),
        l.key.source.to_string(),
        l.revision.to_string(),
        if l.trace.reason().as_deref() == Some(crate::domain::REVERSAL_REASON) {
            "reversal"
        } else if l.is_adjustment() {
            "adjustment"
        } else {
            "line"
        }
        .to_owned(),
        l.quantity.to_string(),
        l.rate.to_string(),
        l.amount.to_string(),
        l.currency.to_string(),
        l.status.to_string(),
        l.sink.clone(),
        l.approval
            .as_ref()
            .map(|a| a.by.clone())
            .unwrap_or_default(),
    ]
}

const LINE_HEADERS: [&str; 13] = [
    "period",
    "customer",
    "license type",
    "source",
    "rev",
    "kind",
    "quantity",
    "rate",
    "amount",
    "currency",
    "status",
    "billing system",
    "approved by",
];

/// Sum of revision amounts per currency: what the customers are billed in all.
pub fn totals(lines: &[LedgerLine]) -> BTreeMap<String, Decimal> {
    let mut totals = BTreeMap::new();
    for l in lines {
        *totals
            .entry(l.currency.to_string())
            .or_insert(Decimal::ZERO) += l.amount;
    }
    totals
}

/// The ledger's lines as a table fitted to the output's width
/// ([`crate::observe::terminal::stdout_width`]), with totals per currency.
pub fn lines_table(lines: &[LedgerLine]) -> String {
    lines_table_fitted(lines, crate::observe::terminal::stdout_width())
}

/// A section of the narrow lines table: (period, source, billing system).
type Section = (String, String, String);

/// The columns of the lines table that hold numbers, right-aligned.
const LINE_NUMBERS: [&str; 4] = ["rev", "quantity", "rate", "amount"];

/// The columns of a section of the lines table, which its heading names the rest of: all but
/// period, source and billing system.
const SECTION_COLUMNS: [usize; 10] = [1, 2, 4, 5, 6, 7, 8, 9, 10, 12];

/// [`lines_table`] at most `width` wide (`None`: one line per revision). When the thirteen
/// columns' longest words do not fit side by side, the lines are grouped by source and billing
/// system, each group under a heading naming them and the period, so that no word is cut.
pub fn lines_table_fitted(lines: &[LedgerLine], width: Option<u16>) -> String {
    if lines.is_empty() {
        return "no lines\n".to_owned();
    }
    let rows: Vec<Vec<String>> = lines.iter().map(line_row).collect();
    let flat =
        width.is_none_or(|w| super::table::natural_width(&LINE_HEADERS, &rows) <= usize::from(w));
    let mut out = if flat {
        super::table::fitted(&LINE_HEADERS, &rows, &LINE_NUMBERS, width)
    } else {
        let headers: Vec<&str> = SECTION_COLUMNS.iter().map(|&i| LINE_HEADERS[i]).collect();
        // Groups in the order the ledger lists them.
        let mut groups: Vec<(Section, Vec<Vec<String>>)> = Vec::new();
        for row in &rows {
            let key = (row[0].clone(), row[3].clone(), row[11].clone());
            let cells: Vec<String> = SECTION_COLUMNS.iter().map(|&i| row[i].clone()).collect();
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, group)) => group.push(cells),
                None => groups.push((key, vec![cells])),
            }
        }
        let mut out = String::new();
        for (n, ((period, source, sink), group)) in groups.iter().enumerate() {
            if n > 0 {
                out.push('\n');
            }
            let _ = writeln!(
                out,
                "period {period}  source {source}  billing system {sink}"
            );
            out.push_str(&super::table::fitted(&headers, group, &LINE_NUMBERS, width));
        }
        out
    };
    for (currency, total) in totals(lines) {
        let _ = writeln!(out, "total {currency}: {total}");
    }
    out
}

/// The ledger's lines as CSV, for spreadsheets.
pub fn lines_csv(lines: &[LedgerLine]) -> anyhow::Result<String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut headers: Vec<&str> = LINE_HEADERS.to_vec();
    headers.extend([
        "total_quantity",
        "total_amount",
        "price_ref",
        "external_id",
        "idempotency_key",
        "approved_at",
        "approval_note",
        "reason",
    ]);
    writer.write_record(&headers)?;
    for l in lines {
        let mut row = line_row(l);
        row.extend([
            l.total_quantity.to_string(),
            l.total_amount.to_string(),
            l.price_ref.clone(),
            l.external_id.clone().unwrap_or_default(),
            l.idempotency_key.clone(),
            l.approval
                .as_ref()
                .map(|a| a.at.to_rfc3339())
                .unwrap_or_default(),
            l.approval
                .as_ref()
                .and_then(|a| a.note.clone())
                .unwrap_or_default(),
            l.trace.reason().unwrap_or_default(),
        ]);
        writer.write_record(&row)?;
    }
    Ok(String::from_utf8(writer.into_inner()?)?)
}

/// The period's exceptions as a table fitted to the output's width: what to do beside each
/// exception when it fits, else on its own lines under it.
pub fn exceptions_table(exceptions: &[RunException]) -> String {
    exceptions_table_fitted(exceptions, crate::observe::terminal::stdout_width())
}

/// [`exceptions_table`] at most `width` wide (`None`: one line per exception).
pub fn exceptions_table_fitted(exceptions: &[RunException], width: Option<u16>) -> String {
    if exceptions.is_empty() {
        return "no exceptions\n".to_owned();
    }
    let rows: Vec<Vec<String>> = exceptions
        .iter()
        .map(|e| {
            vec![
                e.source.to_string(),
                e.kind.to_string(),
                e.customer_key.clone(),
                e.quantity.to_string(),
                e.record_count.to_string(),
            ]
        })
        .collect();
    let messages: Vec<String> = exceptions.iter().map(|e| e.message.clone()).collect();
    super::table::with_details(
        &["source", "kind", "source customer", "quantity", "records"],
        &rows,
        &["quantity", "records"],
        "what to do",
        &messages,
        width,
    )
}

/// Recent runs as a table.
pub fn runs_table(runs: &[RunRecord]) -> String {
    if runs.is_empty() {
        return "no runs yet\n".to_owned();
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let s = r.summary.as_ref();
            vec![
                r.id.to_string(),
                r.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                r.trigger.as_str().to_owned(),
                r.period.to_string(),
                r.source_filter.clone().unwrap_or_else(|| "all".into()),
                r.status.to_string(),
                s.map(|s| s.records_read.to_string()).unwrap_or_default(),
                s.map(|s| s.lines_created.to_string()).unwrap_or_default(),
                s.map(|s| s.lines_adjusted.to_string()).unwrap_or_default(),
                s.map(|s| s.lines_pushed.to_string()).unwrap_or_default(),
                s.map(|s| s.exceptions.to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "run",
            "started (UTC)",
            "trigger",
            "period",
            "source",
            "status",
            "records",
            "created",
            "adjusted",
            "pushed",
            "exceptions",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_right_aligned_and_text_left_aligned() {
        let t = table(
            &["customer", "amount"],
            &[
                vec!["ACME".into(), "5.00".into()],
                vec!["Initech AS".into(), "1250.50".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "customer     amount");
        assert_eq!(lines[2], "ACME           5.00");
        assert_eq!(lines[3], "Initech AS  1250.50");
    }
}
