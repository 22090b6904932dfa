//! The file sink writes what billing systems import: checked by reading the files it wrote.

use chrono::Utc;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally::domain::{
    BillingAccount, Evidence, LedgerLine, LicenseType, LineKey, LineStatus, SourceName,
};
use tally::sinks::file::{FileFormat, FileSink, FileSinkSettings};

fn line(revision: i32, quantity: Decimal, amount: Decimal) -> LedgerLine {
    let key = LineKey {
        period: "2026-10".parse().unwrap(),
        billing_account: BillingAccount::new("ACME, Inc."),
        license_type: LicenseType::new("Service desk agent"),
        source: SourceName::new("billable_users"),
    };
    LedgerLine {
        id: 1,
        idempotency_key: key.idempotency_key(revision),
        key,
        revision,
        quantity,
        amount,
        rate: dec!(12.3450),
        currency: "EUR".parse().unwrap(),
        total_quantity: quantity,
        total_amount: amount,
        price_ref: "agent@2026-01-01".into(),
        trace: serde_json::Value::Null.into(),
        evidence: Evidence::default(),
        sink: "file".into(),
        status: LineStatus::Pushing,
        external_id: None,
        push_marker: None,
        last_error: None,
        approval: None,
        run_id: 1,
        created_at: Utc::now(),
        updated_at: Utc::now(),
        pushed_at: None,
    }
}

fn sink(dir: &std::path::Path, format: FileFormat) -> FileSink {
    FileSink::new(&FileSinkSettings {
        dir: dir.join("out"),
        format,
    })
    .unwrap()
}

#[tokio::test]
async fn push_writes_a_csv_row_with_exact_decimals() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(dir.path(), FileFormat::Csv);
    let l = line(1, dec!(5.5), dec!(67.90));

    let id = sink.push(&l).await.unwrap();
    assert_eq!(
        id,
        format!("invoice-lines-2026-10.csv:{}", l.idempotency_key)
    );
    let text = std::fs::read_to_string(dir.path().join("out/invoice-lines-2026-10.csv")).unwrap();
    assert_eq!(
        text,
        "idempotency_key,period,billing_account,license_type,source,revision,quantity,rate,amount,currency,total_quantity,total_amount\n\
         \"2026-10/billable_users/ACME, Inc./Service desk agent#r1\",2026-10,\"ACME, Inc.\",Service desk agent,billable_users,1,5.5,12.3450,67.90,EUR,5.5,67.90\n"
    );
}

#[tokio::test]
async fn pushing_the_same_key_twice_leaves_one_row() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(dir.path(), FileFormat::Csv);
    let first = line(1, dec!(3), dec!(37.04));
    let adjustment = line(2, dec!(-1), dec!(-12.35));

    let id = sink.push(&first).await.unwrap();
    assert_eq!(sink.push(&first).await.unwrap(), id);
    sink.push(&adjustment).await.unwrap();

    let text = std::fs::read_to_string(dir.path().join("out/invoice-lines-2026-10.csv")).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(rows[0].starts_with("idempotency_key,"));
    assert!(
        rows[1].contains("#r1\"") && rows[2].contains("#r2\""),
        "{text}"
    );
    assert!(rows[2].contains(",-1,12.3450,-12.35,EUR,"), "{text}");
}

#[tokio::test]
async fn find_finds_a_pushed_key_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(dir.path(), FileFormat::Csv);
    let pushed = line(1, dec!(3), dec!(37.04));
    let other = line(2, dec!(1), dec!(12.35));

    assert_eq!(sink.find(&pushed).await.unwrap(), None);
    let id = sink.push(&pushed).await.unwrap();
    assert_eq!(sink.find(&pushed).await.unwrap(), Some(id));
    assert_eq!(sink.find(&other).await.unwrap(), None);
}

#[tokio::test]
async fn a_torn_last_row_does_not_count_and_is_cut_before_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(dir.path(), FileFormat::Csv);
    let first = line(1, dec!(3), dec!(37.04));
    let second = line(2, dec!(1), dec!(12.35));
    sink.push(&first).await.unwrap();
    let path = dir.path().join("out/invoice-lines-2026-10.csv");
    let mut text = std::fs::read_to_string(&path).unwrap();
    // A crash in the middle of writing the second row.
    text.push_str("\"2026-10/billable_users/ACME, Inc./Service desk agent#r2\",2026-1");
    std::fs::write(&path, &text).unwrap();

    assert_eq!(sink.find(&second).await.unwrap(), None);
    sink.push(&second).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(rows[2].ends_with(",EUR,1,12.35"), "{text}");
}

#[tokio::test]
async fn jsonl_rows_carry_decimals_as_strings_and_are_found_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(dir.path(), FileFormat::Jsonl);
    let l = line(1, dec!(0.10), dec!(1.23));

    let id = sink.push(&l).await.unwrap();
    assert_eq!(sink.push(&l).await.unwrap(), id);
    assert_eq!(sink.find(&l).await.unwrap(), Some(id));
    let text = std::fs::read_to_string(dir.path().join("out/invoice-lines-2026-10.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let row: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(row["quantity"], "0.10");
    assert_eq!(row["rate"], "12.3450");
    assert_eq!(row["amount"], "1.23");
    assert_eq!(row["revision"], 1);
    assert_eq!(row["billing_account"], "ACME, Inc.");
}

#[test]
fn settings_refuse_unknown_fields_and_a_file_as_directory() {
    let bad: Result<FileSinkSettings, _> =
        serde_json::from_value(serde_json::json!({"dir": "/tmp/x", "format": "csv", "sep": ";"}));
    assert!(bad.is_err());
    let file = tempfile::NamedTempFile::new().unwrap();
    let problems = FileSinkSettings {
        dir: file.path().to_owned(),
        format: FileFormat::Jsonl,
    }
    .validate("sinks.file");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].at, "sinks.file.dir");
}
