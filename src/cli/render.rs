//! How runs, plans, lines and exceptions look to people: aligned text tables, CSV and JSON.
//! Pure formatting; the numbers are printed exactly as the ledger holds them.

use crate::domain::{LedgerLine, RunException, RunStatus, RunSummary, SourceStats};
use crate::reconcile::{Action, Plan};
use crate::store::RunRecord;
use rust_decimal::Decimal;
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
    let only = s
        .customer
        .as_ref()
        .map(|c| format!(" (customer {c} only)"))
        .unwrap_or_default();
    let _ = writeln!(out, "{run} for {}{only}: {}", s.period, s.status);
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
    let partial = if s.totals_partial { " (partial)" } else { "" };
    for (currency, total) in &s.totals {
        let label = format!("total {currency}{partial}");
        let _ = writeln!(out, "  {label:<17} {total}");
    }
    if s.totals_partial {
        let _ = writeln!(
            out,
            "  the totals are partial: they leave out {}, which failed; its lines were not computed in this run",
            missing_sources(s).join(", ")
        );
    }
    for stats in &s.sources {
        let _ = writeln!(out, "  source {}", source_counts(stats));
    }
    for f in &s.failed_sources {
        let _ = writeln!(out, "  FAILED source {}: {}", f.source, f.error);
    }
    for w in &s.warnings {
        let _ = writeln!(out, "  WARNING: {w}");
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
    match s.status {
        RunStatus::Interrupted => {
            let _ = writeln!(
                out,
                "  interrupted by a signal: what was done is recorded; run again to finish"
            );
        }
        RunStatus::Failed => {
            let _ = writeln!(
                out,
                "  the run failed: what it did is recorded and nothing is billed twice; fix the cause above and run the period again"
            );
        }
        RunStatus::Completed | RunStatus::CompletedWithExceptions
            if !s.dry_run
                && s.lines_pushed == 0
                && s.errors.is_empty()
                && s.lines_waiting_approval == 0 =>
        {
            let _ = writeln!(
                out,
                "  nothing was pushed: the billing systems already hold every line"
            );
        }
        _ => {}
    }
    out
}

/// The sources a partial total leaves out.
fn missing_sources(s: &RunSummary) -> Vec<String> {
    s.failed_sources.iter().map(|f| f.source.clone()).collect()
}

/// One source's counts on one line: `ccc: 42 records, 5 pages, 7 requests (1 retry, 1 × 429), 812 ms`.
fn source_counts(s: &SourceStats) -> String {
    format!(
        "{}: {}, {}, {} ({}, {} × 429), {}{}",
        s.source,
        count(s.records, "record"),
        count(s.pages, "page"),
        count(s.requests, "request"),
        count(s.retries, "retry"),
        s.rate_limited,
        seconds(s.duration_ms),
        if s.error.is_some() { ", failed" } else { "" }
    )
}

/// `1 page`, `6 pages`, `2 retries`.
fn count(n: u64, one: &str) -> String {
    match (n, one.strip_suffix('y')) {
        (1, _) => format!("1 {one}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        (_, None) => format!("{n} {one}s"),
    }
}

/// A duration for people: `42 ms` under a second, else `1.8 s`, `12.0 s`.
fn seconds(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{}.{} s", ms / 1000, (ms % 1000) / 100)
    }
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

/// A revision as a row of the lines table; rates with their currency's one number of decimals.
fn line_row(l: &LedgerLine, rates: &crate::export::RateDecimals) -> Vec<String> {
    vec![
        l.key.period.to_string(),
        l.key.billing_account.to_string(),
        l.key.license_type.to_string(),
        l.key.source.to_string(),
        l.revision.to_string(),
        crate::export::kind(l).to_owned(),
        l.quantity.to_string(),
        rates.rate(l.currency, l.rate),
        crate::export::amount(l.currency, l.amount),
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
    let rates = crate::export::RateDecimals::of(lines);
    let rows: Vec<Vec<String>> = lines.iter().map(|l| line_row(l, &rates)).collect();
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
    out.push_str(&totals_text(lines));
    out
}

/// The totals under the lines table, per currency and status (`total EUR draft: 262.50`):
/// a draft is not yet an invoice, so it is never added to what was approved or pushed.
fn totals_text(lines: &[LedgerLine]) -> String {
    let mut out = String::new();
    match crate::export::totals_by_status(lines) {
        Some(totals) => {
            for ((currency, status), total) in totals {
                let _ = writeln!(
                    out,
                    "total {currency} {}: {}",
                    status.0,
                    crate::export::amount(currency, total)
                );
            }
        }
        None => out.push_str("total: too large to compute; check the lines' amounts\n"),
    }
    out
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

/// Every run's exceptions of a period (`tally lines --exceptions --history`): one table per
/// run, oldest first, under a heading saying whether they are current or which run replaced them.
pub fn exception_history_table(history: &[crate::store::PastException]) -> String {
    if history.is_empty() {
        return "no exceptions in any run of this period\n".to_owned();
    }
    let mut out = String::new();
    for group in history.chunk_by(|a, b| a.run_id == b.run_id) {
        let exceptions: Vec<RunException> = group.iter().map(|p| p.exception.clone()).collect();
        let state = match group[0].superseded_by_run {
            Some(later) => format!("replaced by run {later}"),
            None => "current".to_owned(),
        };
        if !out.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "run {}: {} exception(s), {state}",
            group[0].run_id,
            exceptions.len()
        );
        out.push_str(&exceptions_table(&exceptions));
    }
    out
}

/// [`exception_history_table`] as CSV: the run and the run that replaced it, then the columns
/// of [`exceptions_csv`].
pub fn exception_history_csv(history: &[crate::store::PastException]) -> anyhow::Result<String> {
    let runs: Vec<(i64, Option<i64>)> = history
        .iter()
        .map(|p| (p.run_id, p.superseded_by_run))
        .collect();
    let exceptions: Vec<RunException> = history.iter().map(|p| p.exception.clone()).collect();
    exceptions_csv_of(&exceptions, Some(&runs))
}

/// The period's exceptions as CSV, for spreadsheets: every field, the message last.
pub fn exceptions_csv(exceptions: &[RunException]) -> anyhow::Result<String> {
    exceptions_csv_of(exceptions, None)
}

/// The exceptions' CSV, each row after its run's two columns when `runs` is given.
fn exceptions_csv_of(
    exceptions: &[RunException],
    runs: Option<&[(i64, Option<i64>)]>,
) -> anyhow::Result<String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let run_headers: &[&str] = if runs.is_some() {
        &["run_id", "superseded_by_run"]
    } else {
        &[]
    };
    writer.write_record(run_headers.iter().copied().chain([
        "period",
        "source",
        "kind",
        "source_customer",
        "item",
        "billing_account",
        "license_type",
        "quantity",
        "records",
        "what_to_do",
    ]))?;
    for (i, e) in exceptions.iter().enumerate() {
        let run: Vec<String> = match runs.and_then(|r| r.get(i)) {
            Some((run, later)) => vec![
                run.to_string(),
                later.map(|l| l.to_string()).unwrap_or_default(),
            ],
            None => Vec::new(),
        };
        writer.write_record(
            run.into_iter().chain([
                e.period.to_string(),
                e.source.to_string(),
                e.kind.to_string(),
                e.customer_key.clone(),
                e.item.clone(),
                e.billing_account
                    .as_ref()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                e.license_type
                    .as_ref()
                    .map(|l| l.to_string())
                    .unwrap_or_default(),
                e.quantity.to_string(),
                e.record_count.to_string(),
                e.message.clone(),
            ]),
        )?;
    }
    Ok(String::from_utf8(writer.into_inner()?)?)
}

/// Who started a run: `manual by kari`, `schedule`.
fn trigger_text(r: &RunRecord) -> String {
    match &r.requested_by {
        Some(by) => format!("{} by {by}", r.trigger.as_str()),
        None => r.trigger.as_str().to_owned(),
    }
}

/// How long a run took (or has taken so far, when it has not finished).
fn duration_ms(r: &RunRecord) -> Option<u64> {
    let finished = r.finished_at?;
    u64::try_from((finished - r.started_at).num_milliseconds()).ok()
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
                r.status.to_string(),
                trigger_text(r),
                r.period.to_string(),
                r.source_filter.clone().unwrap_or_else(|| "all".into()),
                r.customer_filter.clone().unwrap_or_else(|| "all".into()),
                r.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                duration_ms(r).map(seconds).unwrap_or_default(),
                s.map(|s| s.records_read.to_string()).unwrap_or_default(),
                s.map(|s| s.lines_pushed.to_string()).unwrap_or_default(),
                s.map(|s| s.lines_waiting_approval.to_string())
                    .unwrap_or_default(),
                s.map(|s| s.exceptions.to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "run",
            "status",
            "trigger",
            "period",
            "source",
            "customer",
            "started (UTC)",
            "duration",
            "records",
            "pushed",
            "waiting approval",
            "exceptions",
        ],
        &rows,
    )
}

/// A run as `tally runs --format json` and `tally runs show --format json` print it: the
/// stored record with its duration and, flattened for scripts, the summary's main counts.
#[derive(Debug, serde::Serialize)]
pub struct RunJson<'a> {
    #[serde(flatten)]
    pub record: &'a RunRecord,
    pub duration_ms: Option<u64>,
    pub lines_pushed: Option<u64>,
    pub lines_waiting_approval: Option<u64>,
    pub exceptions: Option<u64>,
}

impl<'a> RunJson<'a> {
    pub fn of(record: &'a RunRecord) -> RunJson<'a> {
        let s = record.summary.as_ref();
        RunJson {
            record,
            duration_ms: duration_ms(record),
            lines_pushed: s.map(|s| s.lines_pushed),
            lines_waiting_approval: s.map(|s| s.lines_waiting_approval),
            exceptions: s.map(|s| s.exceptions),
        }
    }
}

/// One run in detail (`tally runs show`): what was asked, each source's counts, the amounts
/// per currency, the errors and warnings.
pub fn run_detail(r: &RunRecord) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "run {}: {}", r.id, r.status);
    let _ = writeln!(out, "  trigger     {}", trigger_text(r));
    let _ = writeln!(out, "  period      {}", r.period);
    let _ = writeln!(
        out,
        "  source      {}",
        r.source_filter.as_deref().unwrap_or("all")
    );
    let _ = writeln!(
        out,
        "  customer    {}",
        r.customer_filter.as_deref().unwrap_or("all")
    );
    let _ = writeln!(
        out,
        "  started     {} UTC",
        r.started_at.format("%Y-%m-%d %H:%M:%S")
    );
    match (r.finished_at, duration_ms(r)) {
        (Some(at), Some(ms)) => {
            let _ = writeln!(
                out,
                "  finished    {} UTC ({})",
                at.format("%Y-%m-%d %H:%M:%S"),
                seconds(ms)
            );
        }
        _ => {
            let _ = writeln!(out, "  finished    not (yet)");
        }
    }
    let Some(s) = &r.summary else {
        let _ = writeln!(out, "  no summary: the run has not finished");
        return out;
    };
    let _ = writeln!(
        out,
        "  lines       {} created, {} adjusted, {} unchanged, {} pushed, {} waiting approval",
        s.lines_created,
        s.lines_adjusted,
        s.lines_unchanged,
        s.lines_pushed,
        s.lines_waiting_approval
    );
    let _ = writeln!(out, "  exceptions  {}", s.exceptions);
    let _ = writeln!(out, "\nsources:");
    if s.sources.is_empty() {
        let _ = writeln!(out, "no per-source counts (recorded before they were kept)");
    } else {
        let rows: Vec<Vec<String>> = s
            .sources
            .iter()
            .map(|x| {
                vec![
                    x.source.clone(),
                    x.records.to_string(),
                    x.pages.to_string(),
                    x.requests.to_string(),
                    x.retries.to_string(),
                    x.rate_limited.to_string(),
                    seconds(x.duration_ms),
                    x.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "source", "records", "pages", "requests", "retries", "429s", "duration", "error",
            ],
            &rows,
        ));
    }
    let partial = if s.totals_partial {
        format!(
            " (partial: {} failed and is left out)",
            missing_sources(s).join(", ")
        )
    } else {
        String::new()
    };
    let _ = writeln!(out, "\namounts{partial}:");
    if s.totals.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for (currency, total) in &s.totals {
        let _ = writeln!(out, "  {currency} {total}");
    }
    for w in &s.warnings {
        let _ = writeln!(out, "WARNING: {w}");
    }
    for e in &s.errors {
        let _ = writeln!(out, "error: {e}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn summary(status: RunStatus) -> RunSummary {
        RunSummary {
            run_id: Some(7),
            status,
            period: "2026-10".parse().unwrap(),
            dry_run: false,
            records_read: 51,
            lines_created: 0,
            lines_adjusted: 0,
            lines_unchanged: 4,
            lines_pushed: 0,
            lines_waiting_approval: 0,
            lines_back_to_review: 0,
            lines_waiting_to_settle: 0,
            exceptions: 0,
            totals: BTreeMap::from([("EUR".to_owned(), Decimal::new(50750, 2))]),
            failed_sources: vec![],
            errors: vec![],
            sources: vec![SourceStats {
                source: "billable_users".into(),
                records: 51,
                pages: 6,
                requests: 7,
                retries: 1,
                rate_limited: 1,
                duration_ms: 1830,
                error: None,
            }],
            warnings: vec![],
            totals_partial: false,
            customer: None,
        }
    }

    #[test]
    fn a_failed_sources_totals_say_they_are_partial_and_nothing_claims_all_is_pushed() {
        let mut s = summary(RunStatus::Failed);
        s.failed_sources = vec![crate::domain::SourceFailure {
            source: "ccc".into(),
            error: "GET https://ccc/api answered 503".into(),
        }];
        s.totals_partial = true;
        let text = summary_text(&s);
        assert!(text.contains("  total EUR (partial) 507.50\n"), "{text}");
        assert!(
            text.contains("the totals are partial: they leave out ccc, which failed"),
            "{text}"
        );
        assert!(text.contains("  FAILED source ccc: GET"), "{text}");
        assert!(!text.contains("nothing was pushed"), "{text}");
        assert!(
            text.contains(
                "  source billable_users: 51 records, 6 pages, 7 requests (1 retry, 1 × 429), 1.8 s\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_completed_run_that_pushed_nothing_says_the_billing_systems_hold_every_line() {
        let text = summary_text(&summary(RunStatus::Completed));
        assert!(text.contains("  total EUR         507.50\n"), "{text}");
        assert!(text.contains("nothing was pushed"), "{text}");
        assert!(!text.contains("partial"), "{text}");
    }

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
