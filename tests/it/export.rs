//! The accountants' exports, from the real binary over a store filled by a real run against
//! the simulators: the CSV's byte-order mark and header style, the XLSX's numbers and totals
//! against the CSV and `tally lines`, totals split by status, a minimum charge's why, and the
//! exception history of two runs.

use crate::common::{database_url, demo_checkout, fresh_postgres, fresh_sqlite, text};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::str::FromStr;
use tally::sim;
use tally::store::{DatabaseTarget, Store};

/// Runs `tally --config <config> <args>` in `dir` with the demo's secrets, off the runtime that
/// serves the simulators.
async fn tally(dir: &Path, config: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command
        .current_dir(dir)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("COLUMNS")
        .env("RUST_LOG", "warn")
        .envs(sim::demo_secrets());
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// The demo with approval required, run for October 2026, and ACME-001 approved (and so
/// pushed): the ledger holds pushed lines and drafts.
async fn reviewed_period(db: &DatabaseTarget) -> (sim::RunningSims, tempfile::TempDir, PathBuf) {
    let settings = sim::demo_settings(Path::new("data")).unwrap();
    let sims = sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap();
    let (dir, config) = demo_checkout(&sims, &database_url(db));
    let toml = std::fs::read_to_string(&config).unwrap();
    assert!(toml.contains("require_approval = false"));
    std::fs::write(
        &config,
        toml.replace("require_approval = false", "require_approval = true"),
    )
    .unwrap();
    let run = tally(dir.path(), &config, &["run", "--period", "2026-10"]).await;
    assert!(matches!(run.status.code(), Some(0 | 3)), "{}", text(&run));
    let approve = tally(
        dir.path(),
        &config,
        &[
            "approve",
            "--period",
            "2026-10",
            "--customer",
            "ACME-001",
            "--by",
            "kari",
        ],
    )
    .await;
    assert_eq!(approve.status.code(), Some(0), "{}", text(&approve));
    (sims, dir, config)
}

fn decimal(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// `total EUR draft: 262.50` lines of the lines table, as (currency, status) → amount.
fn table_totals(table: &str) -> BTreeMap<(String, String), Decimal> {
    table
        .lines()
        .filter_map(|l| l.strip_prefix("total "))
        .map(|rest| {
            let (label, amount) = rest.split_once(": ").unwrap();
            let (currency, status) = label.split_once(' ').unwrap();
            ((currency.to_owned(), status.to_owned()), decimal(amount))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_exports_match_the_ledger_and_the_lines_table_to_the_cent() {
    let db = fresh_postgres().await;
    let (_sims, dir, config) = reviewed_period(&db).await;

    // The table: totals per currency and status, never drafts and pushed lines added together.
    let table = tally(dir.path(), &config, &["lines", "--period", "2026-10"]).await;
    assert_eq!(table.status.code(), Some(0), "{}", text(&table));
    let table = String::from_utf8(table.stdout).unwrap();
    let totals = table_totals(&table);
    assert!(
        totals.contains_key(&("EUR".into(), "draft".into()))
            && totals.contains_key(&("EUR".into(), "pushed".into())),
        "{table}"
    );
    assert!(!table.contains("total EUR:"), "{table}");

    // The CSV: a byte-order mark, then one header style, exactly the library's bytes.
    let csv_out = tally(
        dir.path(),
        &config,
        &["lines", "--period", "2026-10", "--format", "csv"],
    )
    .await;
    assert_eq!(csv_out.status.code(), Some(0), "{}", text(&csv_out));
    let csv_bytes = csv_out.stdout;
    assert!(csv_bytes.starts_with("\u{feff}".as_bytes()));
    let store = Store::connect(&db).await.unwrap();
    let lines = store
        .ledger_lines("2026-10".parse().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(csv_bytes, tally::export::lines_csv(&lines).unwrap());
    let csv_text = std::str::from_utf8(&csv_bytes[3..]).unwrap();
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    for h in &headers {
        assert!(
            !h.is_empty() && h.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "header {h:?} is not snake_case"
        );
    }
    for column in [
        "model",
        "price_id",
        "price_version",
        "tiers",
        "included_quantity",
        "minimum_applied",
        "flat_fee_applied",
        "raw_amount",
        "rounding",
        "previous_amount",
        "reason",
        "why",
    ] {
        assert!(
            headers.iter().any(|h| h == column),
            "no {column}: {headers:?}"
        );
    }
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), lines.len());

    // A line raised to its minimum says so; "Secure messaging – Professional" reads as written.
    let umbrella = rows
        .iter()
        .find(|r| &r[col("customer")] == "UMBRELLA-004")
        .unwrap_or_else(|| panic!("{csv_text}"));
    assert_eq!(&umbrella[col("amount")], "100.00");
    assert_eq!(&umbrella[col("minimum_applied")], "100.00");
    assert!(
        umbrella[col("why")].starts_with("minimum charge of 100.00 applied"),
        "{:?}",
        &umbrella[col("why")]
    );
    assert!(csv_text.contains("Secure messaging – Professional"));
    // Rates of one currency have one number of decimals.
    for currency in ["EUR", "NOK"] {
        let scales: std::collections::BTreeSet<usize> = rows
            .iter()
            .filter(|r| &r[col("currency")] == currency)
            .map(|r| r[col("rate")].split_once('.').map_or(0, |(_, d)| d.len()))
            .collect();
        assert_eq!(scales.len(), 1, "{currency} rates: {scales:?}");
    }
    // A line whose product is its amount needs no why: ACME's 12 users are 10 × 12.50 + 2 ×
    // 10.00 = 145.00 at 12.0833, which is not 145.00 exactly, so it has one; a NOK per_unit
    // line is quantity × rate.
    for r in &rows {
        let product = decimal(&r[col("quantity")]) * decimal(&r[col("rate")]);
        assert_eq!(
            r[col("why")].is_empty(),
            product == decimal(&r[col("amount")]),
            "{r:?}"
        );
    }

    // The XLSX: numbers as numbers, equal to the CSV's; totals equal to the table's.
    let out = dir.path().join("lines.xlsx");
    let xlsx = tally(
        dir.path(),
        &config,
        &[
            "lines",
            "--period",
            "2026-10",
            "--format",
            "xlsx",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(xlsx.status.code(), Some(0), "{}", text(&xlsx));
    let bytes = std::fs::read(&out).unwrap();
    // The same workbook as the export function writes; its creation time (docProps/core.xml,
    // to the second) is the only part that may differ between the two writes.
    assert_eq!(
        workbook_parts(&bytes),
        workbook_parts(&tally::export::lines_xlsx(&lines).unwrap())
    );
    // The number formats a spreadsheet shows: the currency's 2 decimals for amounts, the EUR
    // rates' 4 (a graduated average needs them).
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.clone())).unwrap();
    let mut styles = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("xl/styles.xml").unwrap(), &mut styles).unwrap();
    for format in ["#,##0.00", "#,##0.0000"] {
        assert!(
            styles.contains(&format!("formatCode=\"{format}\"")),
            "{format}: {styles}"
        );
    }
    use calamine::{Data, Reader};
    let mut book = calamine::Xlsx::new(std::io::Cursor::new(bytes)).unwrap();
    let sheet = book.worksheet_range("lines").unwrap();
    let mut sheet_rows = sheet.rows();
    let header: Vec<String> = sheet_rows
        .next()
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(header, headers);
    let number = |cell: &Data, decimals: u32| match cell {
        Data::Float(f) => Decimal::from_str(&format!("{f:.*}", decimals as usize)).unwrap(),
        other => panic!("not a number: {other:?}"),
    };
    let mut xlsx_totals = BTreeMap::new();
    let mut line_rows = 0;
    for cells in sheet_rows {
        match &cells[0] {
            Data::String(s) if s == "total" => {
                let currency = cells[col("currency")].to_string();
                let status = cells[col("status")].to_string();
                xlsx_totals.insert((currency, status), number(&cells[col("amount")], 2));
            }
            Data::Empty => {}
            _ => {
                let csv_row = &rows[line_rows];
                line_rows += 1;
                for name in ["amount", "total_amount", "rate", "quantity"] {
                    let text = &csv_row[col(name)];
                    let decimals = text.split_once('.').map_or(0, |(_, d)| d.len()) as u32;
                    assert_eq!(
                        number(&cells[col(name)], decimals),
                        decimal(text),
                        "{name} of {csv_row:?}"
                    );
                }
                assert_eq!(
                    cells[col("customer")].to_string(),
                    &csv_row[col("customer")]
                );
            }
        }
    }
    assert_eq!(line_rows, rows.len());
    assert_eq!(xlsx_totals, totals, "{table}");
}

#[tokio::test(flavor = "multi_thread")]
async fn xlsx_needs_a_file_and_out_needs_an_export_format() {
    let state = tempfile::tempdir().unwrap();
    let db = fresh_sqlite(&state);
    let settings = sim::demo_settings(Path::new("data")).unwrap();
    let sims = sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap();
    let (dir, config) = demo_checkout(&sims, &database_url(&db));
    let out = tally(
        dir.path(),
        &config,
        &["lines", "--period", "2026-10", "--out", "x.txt"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--out writes --format csv or --format xlsx"),
        "{}",
        text(&out)
    );
    assert!(!dir.path().join("x.txt").exists());
}

/// Two runs of the demo, the customer map fixed in between (Hooli Labs mapped to ACME-001):
/// the first run's exceptions stay in the history, marked as replaced by the second, whose
/// exceptions are the current ones; ACME's pushed line gets an adjustment that explains itself.
async fn two_runs_keep_both_runs_exceptions(db: DatabaseTarget) {
    let settings = sim::demo_settings(Path::new("data")).unwrap();
    let sims = sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap();
    let (dir, config) = demo_checkout(&sims, &database_url(&db));
    let first = tally(dir.path(), &config, &["run", "--period", "2026-10"]).await;
    assert_eq!(first.status.code(), Some(3), "{}", text(&first));
    let map = dir.path().join("config/demo/customers.csv");
    let mut customers = std::fs::read_to_string(&map).unwrap();
    customers.push_str("billable_users,Hooli Labs,ACME-001\n");
    std::fs::write(&map, customers).unwrap();
    let second = tally(dir.path(), &config, &["run", "--period", "2026-10"]).await;
    assert_eq!(second.status.code(), Some(3), "{}", text(&second));

    let current = tally(
        dir.path(),
        &config,
        &[
            "lines",
            "--period",
            "2026-10",
            "--exceptions",
            "--format",
            "json",
        ],
    )
    .await;
    let current: Vec<serde_json::Value> = serde_json::from_slice(&current.stdout).unwrap();
    assert_eq!(current.len(), 2, "{current:?}");
    assert!(current.iter().all(|e| e["customer_key"] != "Hooli Labs"));

    let history = tally(
        dir.path(),
        &config,
        &[
            "lines",
            "--period",
            "2026-10",
            "--exceptions",
            "--history",
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(history.status.code(), Some(0), "{}", text(&history));
    let history: Vec<serde_json::Value> = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(history.len(), 5, "{history:#?}");
    let (old, new): (Vec<_>, Vec<_>) = history
        .iter()
        .partition(|e| !e["superseded_by_run"].is_null());
    assert_eq!((old.len(), new.len()), (3, 2), "{history:#?}");
    let (first_run, second_run) = (old[0]["run_id"].clone(), new[0]["run_id"].clone());
    assert_ne!(first_run, second_run);
    assert!(
        old.iter()
            .all(|e| e["run_id"] == first_run && e["superseded_by_run"] == second_run)
    );
    assert!(old.iter().any(|e| e["customer_key"] == "Hooli Labs"));

    let table = tally(
        dir.path(),
        &config,
        &["lines", "--period", "2026-10", "--exceptions", "--history"],
    )
    .await;
    let table = text(&table);
    assert!(
        table.contains(&format!(
            "run {first_run}: 3 exception(s), replaced by run {second_run}"
        )) && table.contains(&format!("run {second_run}: 2 exception(s), current")),
        "{table}"
    );

    // ACME's pushed line grew by Hooli's users: the adjustment says from what to what.
    let csv_out = tally(
        dir.path(),
        &config,
        &[
            "lines",
            "--period",
            "2026-10",
            "--format",
            "csv",
            "--customer",
            "ACME-001",
        ],
    )
    .await;
    let mut reader = csv::Reader::from_reader(&csv_out.stdout[3..]);
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let adjustment = rows
        .iter()
        .find(|r| &r[col("kind")] == "adjustment")
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(&adjustment[col("previous_amount")], "145.00");
    assert!(
        adjustment[col("reason")].contains("instead of the 12 already sent"),
        "{adjustment:?}"
    );
    assert!(
        adjustment[col("why")].starts_with("adjustment: quantity 12 → "),
        "{adjustment:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_keep_both_runs_exceptions_postgres() {
    two_runs_keep_both_runs_exceptions(fresh_postgres().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_keep_both_runs_exceptions_sqlite() {
    let state = tempfile::tempdir().unwrap();
    two_runs_keep_both_runs_exceptions(fresh_sqlite(&state)).await;
}

/// On a terminal, `--format xlsx` without `--out` is refused (a workbook is binary), before it
/// writes a byte; `script` gives the command a terminal as its standard output.
#[tokio::test(flavor = "multi_thread")]
async fn xlsx_to_a_terminal_without_out_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let db = fresh_sqlite(&state);
    let settings = sim::demo_settings(Path::new("data")).unwrap();
    let sims = sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap();
    let (dir, config) = demo_checkout(&sims, &database_url(&db));
    let command = format!(
        "{} --config {} lines --period 2026-10 --format xlsx",
        env!("CARGO_BIN_EXE_tally"),
        config.display()
    );
    let out = tally_in_terminal(dir.path(), &command).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("give --out FILE"), "{}", text(&out));
}

/// `command` run by `script` with a pseudo-terminal as its standard output.
async fn tally_in_terminal(dir: &Path, command: &str) -> Output {
    let mut script = Command::new("script");
    script
        .current_dir(dir)
        .args(["-qec", command, "/dev/null"])
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .envs(sim::demo_secrets());
    tokio::task::spawn_blocking(move || script.output().unwrap())
        .await
        .unwrap()
}

/// The parts of an XLSX file by name, but for its creation time.
fn workbook_parts(bytes: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    use std::io::Read;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut parts = std::collections::BTreeMap::new();
    for i in 0..zip.len() {
        let mut part = zip.by_index(i).unwrap();
        let name = part.name().unwrap().into_owned();
        if name == "docProps/core.xml" {
            continue;
        }
        let mut content = Vec::new();
        part.read_to_end(&mut content).unwrap();
        parts.insert(name, content);
    }
    parts
}
