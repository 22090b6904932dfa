//! The file sink: invoice lines appended to one file per period (`invoice-lines-YYYY-MM.csv` or
//! `.jsonl`), for billing systems that import files.
//!
//! The idempotency key is the first column, so a revision is found by its key alone and is
//! never written twice. A row counts only once it is complete (ends with a newline) and synced;
//! a torn row left by a crash is cut off before the next append. One tally process writes at a
//! time (the runner lock); within it, a mutex serialises check-then-append.

use crate::domain::{LedgerLine, Period};
use crate::problem::Problem;
use crate::sinks::PushError;
use anyhow::Context;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// The columns, in order. Decimals are written as exact strings, never as floats.
pub const COLUMNS: [&str; 12] = [
    "idempotency_key",
    "period",
    "billing_account",
    "license_type",
    "source",
    "revision",
    "quantity",
    "rate",
    "amount",
    "currency",
    "total_quantity",
    "total_amount",
];

/// `[sinks.file]`: where invoice-line files are written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSinkSettings {
    /// Directory the files go to; created if missing.
    pub dir: PathBuf,
    /// `csv` (a header row, RFC 4180 quoting) or `jsonl` (one JSON object per line).
    pub format: FileFormat,
}

/// The file format of the file sink.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// `invoice-lines-YYYY-MM.csv`: header row, then one row per revision.
    Csv,
    /// `invoice-lines-YYYY-MM.jsonl`: one JSON object per revision, decimals as strings.
    Jsonl,
}

impl FileFormat {
    fn extension(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Jsonl => "jsonl",
        }
    }
}

impl FileSinkSettings {
    /// Every problem at once, each with its full key path under `at` (`sinks.file`).
    pub fn validate(&self, at: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.dir.as_os_str().is_empty() {
            problems.push(Problem::new(
                format!("{at}.dir"),
                "is empty: name the directory invoice-line files are written to",
            ));
        } else if self.dir.exists() && !self.dir.is_dir() {
            problems.push(Problem::new(
                format!("{at}.dir"),
                format!("{} exists and is not a directory", self.dir.display()),
            ));
        }
        problems
    }
}

/// The file sink.
#[derive(Debug)]
pub struct FileSink {
    dir: PathBuf,
    format: FileFormat,
    /// Serialises "is the key there? then append" so that two pushes of one key in this
    /// process cannot both append.
    lock: tokio::sync::Mutex<()>,
}

impl FileSink {
    /// Creates the directory if needed.
    pub fn new(settings: &FileSinkSettings) -> anyhow::Result<Self> {
        crate::problem::ConfigError::check(settings.validate("sinks.file"))?;
        std::fs::create_dir_all(&settings.dir)
            .with_context(|| format!("creating {}", settings.dir.display()))?;
        Ok(Self {
            dir: settings.dir.clone(),
            format: settings.format,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// `invoice-lines-YYYY-MM.<ext>`.
    pub fn file_name(&self, period: Period) -> String {
        format!("invoice-lines-{period}.{}", self.format.extension())
    }

    /// Appends the revision (header first in a new file), flushes and syncs; returns
    /// `"<file name>:<idempotency_key>"`. A key already in the file is not written again: its
    /// existing id is returned.
    pub async fn push(&self, line: &LedgerLine) -> Result<String, PushError> {
        let _guard = self.lock.lock().await;
        let name = self.file_name(line.key.period);
        let path = self.dir.join(&name);
        let id = format!("{name}:{}", line.idempotency_key);
        // Nothing has been written when these fail, so the line is surely not in the file.
        let rows = self
            .complete_rows(&path)
            .await
            .map_err(|e| PushError::Rejected(format!("{}: {e:#}", line.idempotency_key)))?;
        if rows.iter().any(|key| key == &line.idempotency_key) {
            return Ok(id);
        }
        let row = self.row(line).map_err(PushError::Rejected)?;
        self.append(&path, &row).await.map_err(|e| {
            // A write or sync that failed half-way may have left a row (complete or not):
            // `find` tells.
            PushError::Uncertain(format!(
                "{}: writing {}: {e:#}",
                line.idempotency_key,
                path.display()
            ))
        })?;
        Ok(id)
    }

    /// Looks for the revision's idempotency key among the complete rows of its period's file.
    pub async fn find(&self, line: &LedgerLine) -> anyhow::Result<Option<String>> {
        let _guard = self.lock.lock().await;
        let name = self.file_name(line.key.period);
        let rows = self.complete_rows(&self.dir.join(&name)).await?;
        Ok(rows
            .iter()
            .any(|key| key == &line.idempotency_key)
            .then(|| format!("{name}:{}", line.idempotency_key)))
    }

    /// The idempotency keys of the complete rows (those ending with a newline), in order. An
    /// empty list for a missing file. A row that does not parse is an error naming its line.
    async fn complete_rows(&self, path: &Path) -> anyhow::Result<Vec<String>> {
        let bytes = match tokio::fs::read(path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let complete = match bytes.iter().rposition(|b| *b == b'\n') {
            Some(end) => &bytes[..=end],
            None => &[][..],
        };
        let mut keys = Vec::new();
        match self.format {
            FileFormat::Csv => {
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .from_reader(complete);
                for (i, record) in reader.records().enumerate() {
                    let record = record
                        .with_context(|| format!("{}: row {} is not CSV", path.display(), i + 1))?;
                    if i == 0 {
                        if record.iter().ne(COLUMNS.iter().copied()) {
                            anyhow::bail!(
                                "{}: the header is not tally's ({}); move the file away or \
                                 point sinks.file.dir elsewhere",
                                path.display(),
                                COLUMNS.join(",")
                            );
                        }
                        continue;
                    }
                    keys.push(record.get(0).unwrap_or_default().to_owned());
                }
            }
            FileFormat::Jsonl => {
                for (i, text) in complete.split(|b| *b == b'\n').enumerate() {
                    if text.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let value: serde_json::Value =
                        serde_json::from_slice(text).with_context(|| {
                            format!("{}: line {} is not JSON", path.display(), i + 1)
                        })?;
                    let key = value
                        .get("idempotency_key")
                        .and_then(|k| k.as_str())
                        .with_context(|| {
                            format!("{}: line {} has no idempotency_key", path.display(), i + 1)
                        })?;
                    keys.push(key.to_owned());
                }
            }
        }
        Ok(keys)
    }

    /// One row, newline included, ready to be written in one call.
    fn row(&self, line: &LedgerLine) -> Result<Vec<u8>, String> {
        let fields = [
            line.idempotency_key.clone(),
            line.key.period.to_string(),
            line.key.billing_account.to_string(),
            line.key.license_type.to_string(),
            line.key.source.to_string(),
            line.revision.to_string(),
            line.quantity.to_string(),
            line.rate.to_string(),
            line.amount.to_string(),
            line.currency.to_string(),
            line.total_quantity.to_string(),
            line.total_amount.to_string(),
        ];
        match self.format {
            FileFormat::Csv => {
                // Rows are told apart by newlines (a torn row is cut at the last one), so a
                // value must not hold one, even quoted.
                if let Some(bad) = fields.iter().find(|f| f.contains(['\n', '\r'])) {
                    return Err(format!(
                        "{bad:?} holds a line break, which the CSV file sink cannot write"
                    ));
                }
                csv_row(&fields).map_err(|e| format!("formatting the CSV row: {e}"))
            }
            FileFormat::Jsonl => {
                let object: serde_json::Map<String, serde_json::Value> = COLUMNS
                    .iter()
                    .zip(fields)
                    .map(|(column, value)| {
                        let value = if *column == "revision" {
                            serde_json::Value::from(line.revision)
                        } else {
                            serde_json::Value::String(value)
                        };
                        ((*column).to_owned(), value)
                    })
                    .collect();
                let mut bytes = serde_json::to_vec(&object)
                    .map_err(|e| format!("formatting the JSON row: {e}"))?;
                bytes.push(b'\n');
                Ok(bytes)
            }
        }
    }

    /// Appends `row` (after the header for a new file) in one write, then flushes and syncs.
    async fn append(&self, path: &Path, row: &[u8]) -> anyhow::Result<()> {
        let existed = tokio::fs::try_exists(path).await.unwrap_or(false);
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata().await?.len();
        let complete_len = complete_len(path, len).await?;
        if complete_len < len {
            // A torn row from a crash: it never counted, and appending after it would glue the
            // next row to it.
            tracing::warn!(file = %path.display(), cut_bytes = len - complete_len, "cutting an incomplete last row");
            file.set_len(complete_len).await?;
        }
        let mut bytes = Vec::with_capacity(row.len() + 200);
        if self.format == FileFormat::Csv && complete_len == 0 {
            bytes.extend(csv_row(&COLUMNS.map(str::to_owned))?);
        }
        bytes.extend_from_slice(row);
        file.write_all(&bytes).await?;
        file.flush().await?;
        file.sync_all().await?;
        if !existed {
            // The new file's directory entry must survive a crash too.
            if let Some(dir) = path.parent()
                && let Ok(dir) = std::fs::File::open(dir)
            {
                dir.sync_all()
                    .with_context(|| format!("syncing {}", path.display()))?;
            }
        }
        Ok(())
    }
}

/// The length of the file up to and including its last newline.
async fn complete_len(path: &Path, len: u64) -> anyhow::Result<u64> {
    if len == 0 {
        return Ok(0);
    }
    let bytes = tokio::fs::read(path)
        .await
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i as u64 + 1))
}

fn csv_row(fields: &[String]) -> anyhow::Result<Vec<u8>> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    writer.write_record(fields)?;
    writer.flush()?;
    writer.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}
