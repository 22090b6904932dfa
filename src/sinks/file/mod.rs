//! The file sink: invoice lines appended to one file per period (`invoice-lines-YYYY-MM.csv` or
//! `.jsonl`), for billing systems that import files.
//!
//! The idempotency key is the first column, so a revision is found by its key alone and is
//! never written twice. A row counts only once it is complete (ends with a newline) and synced;
//! a torn row left by a crash is cut off before the next append. One tally process writes at a
//! time (the runner lock); within it, a mutex serialises check-then-append.
//!
//! A push reads each period's file once: the keys of its complete rows are kept in memory for the
//! rest of the push, and a batch of revisions is appended in one write and one sync. Reading the
//! file for every revision made a push quadratic in the size of the file. What is kept is checked
//! against the file's length and modification time before each use, so a file changed by someone
//! else (or by a write that failed half-way) is read again rather than trusted.

mod reach;

use crate::domain::{LedgerLine, Period};
use crate::problem::Problem;
use crate::sinks::PushError;
use anyhow::Context;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tokio::io::AsyncWriteExt;

/// Revisions per append: one write and one sync for each batch. Big enough that the sync no
/// longer dominates; small enough that a crash leaves few revisions `pushing` to read back.
pub const BATCH_SIZE: usize = 500;

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
    /// What this push knows of each file, by file name. The mutex also serialises "is the key
    /// there? then append", so that two pushes of one key in this process cannot both append.
    files: tokio::sync::Mutex<HashMap<String, Known>>,
}

/// One file as the sink last read or wrote it.
#[derive(Debug)]
struct Known {
    /// The idempotency keys of its complete rows.
    keys: HashSet<String>,
    /// Its length up to and including its last newline: what is kept when a torn row is cut.
    complete_len: u64,
    /// Its length and modification time then (`None`: there was no file). A file that looks
    /// different now was changed by something else, and is read again.
    seen: Option<(u64, SystemTime)>,
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
            files: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// `invoice-lines-YYYY-MM.<ext>`.
    pub fn file_name(&self, period: Period) -> String {
        format!("invoice-lines-{period}.{}", self.format.extension())
    }

    /// Forgets the keys learnt so far, so that a new push reads each file afresh (once), and a
    /// long-running daemon does not keep the keys of every month it ever pushed.
    pub async fn begin_push(&self) {
        self.files.lock().await.clear();
    }

    /// [`Self::push_batch`] of one revision.
    pub async fn push(&self, line: &LedgerLine) -> Result<String, PushError> {
        self.push_batch(std::slice::from_ref(line))
            .await
            .pop()
            .unwrap_or_else(|| Err(PushError::Rejected("no revision was given".to_owned())))
    }

    /// Appends the revisions whose keys are not in their period's file yet (header first in a
    /// new file), each file's in one write, then flushes and syncs; one result per revision, in
    /// order: `"<file name>:<idempotency_key>"`. A key already in the file is not written again:
    /// its existing id is returned. A revision whose row cannot be formatted is refused alone; a
    /// write that failed makes every revision it carried uncertain.
    pub async fn push_batch(&self, lines: &[LedgerLine]) -> Vec<Result<String, PushError>> {
        let mut files = self.files.lock().await;
        let mut results: Vec<Option<Result<String, PushError>>> =
            std::iter::repeat_with(|| None).take(lines.len()).collect();
        let mut by_file: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, line) in lines.iter().enumerate() {
            by_file
                .entry(self.file_name(line.key.period))
                .or_default()
                .push(i);
        }
        for (name, indices) in by_file {
            let path = self.dir.join(&name);
            let id = |line: &LedgerLine| format!("{name}:{}", line.idempotency_key);
            let known = match self.known(&mut files, &name, &path).await {
                Ok(known) => known,
                Err(e) => {
                    // Nothing has been written, so these lines are surely not in the file.
                    for i in indices {
                        let message = format!("{}: {e:#}", lines[i].idempotency_key);
                        results[i] = Some(Err(PushError::Rejected(message)));
                    }
                    continue;
                }
            };
            let mut bytes = Vec::new();
            let mut new_keys = HashSet::new();
            let mut written = Vec::new();
            for i in indices {
                let line = &lines[i];
                if known.keys.contains(&line.idempotency_key)
                    || new_keys.contains(&line.idempotency_key)
                {
                    results[i] = Some(Ok(id(line)));
                    continue;
                }
                match self.row(line) {
                    Ok(row) => {
                        bytes.extend(row);
                        new_keys.insert(line.idempotency_key.clone());
                        written.push(i);
                    }
                    Err(reason) => results[i] = Some(Err(PushError::Rejected(reason))),
                }
            }
            if written.is_empty() {
                continue;
            }
            match self.append(&path, known, &bytes).await {
                Ok(()) => {
                    known.keys.extend(new_keys);
                    for i in written {
                        results[i] = Some(Ok(id(&lines[i])));
                    }
                }
                Err(e) => {
                    // A write or sync that failed half-way may have left rows (complete or not):
                    // what is known of the file is wrong now, and `find` reads it again to tell.
                    files.remove(&name);
                    for i in written {
                        results[i] = Some(Err(PushError::Uncertain(format!(
                            "{}: writing {}: {e:#}",
                            lines[i].idempotency_key,
                            path.display()
                        ))));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| Err(PushError::Rejected("not pushed".to_owned())))
            })
            .collect()
    }

    /// Looks for the revision's idempotency key among the complete rows of its period's file.
    pub async fn find(&self, line: &LedgerLine) -> anyhow::Result<Option<String>> {
        let mut files = self.files.lock().await;
        let name = self.file_name(line.key.period);
        let path = self.dir.join(&name);
        let known = self.known(&mut files, &name, &path).await?;
        Ok(known
            .keys
            .contains(&line.idempotency_key)
            .then(|| format!("{name}:{}", line.idempotency_key)))
    }

    /// What is known of the file `name`, read now if it was not read in this push or looks
    /// different from when it was.
    async fn known<'a>(
        &self,
        files: &'a mut HashMap<String, Known>,
        name: &str,
        path: &Path,
    ) -> anyhow::Result<&'a mut Known> {
        let seen = looks(path).await?;
        if files.get(name).is_none_or(|known| known.seen != seen) {
            let known = self.read(path, seen).await?;
            files.insert(name.to_owned(), known);
        }
        files
            .get_mut(name)
            .with_context(|| format!("{} was read but is not known", path.display()))
    }

    /// Reads the file: the idempotency keys of its complete rows (those ending with a newline).
    /// Nothing for a missing file. A row that does not parse is an error naming its line.
    async fn read(&self, path: &Path, seen: Option<(u64, SystemTime)>) -> anyhow::Result<Known> {
        let bytes = match tokio::fs::read(path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Known {
                    keys: HashSet::new(),
                    complete_len: 0,
                    seen: None,
                });
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let complete = match bytes.iter().rposition(|b| *b == b'\n') {
            Some(end) => &bytes[..=end],
            None => &[][..],
        };
        let mut keys = HashSet::new();
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
                    keys.insert(record.get(0).unwrap_or_default().to_owned());
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
                    keys.insert(key.to_owned());
                }
            }
        }
        Ok(Known {
            keys,
            complete_len: complete.len() as u64,
            // The length read, with the time seen before reading: a write in between makes the
            // next look differ, and the file is read again.
            seen: seen.map(|(_, modified)| (bytes.len() as u64, modified)),
        })
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

    /// Appends `rows` (after the header for a new file) in one write, then flushes and syncs,
    /// first cutting a torn last row; `known` is then what the file holds.
    async fn append(&self, path: &Path, known: &mut Known, rows: &[u8]) -> anyhow::Result<()> {
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata().await?.len();
        let expected = known.seen.map_or(0, |(len, _)| len);
        anyhow::ensure!(
            len == expected,
            "{} changed while tally was writing it ({len} bytes, {expected} expected)",
            path.display()
        );
        if known.complete_len < len {
            // A torn row from a crash: it never counted, and appending after it would glue the
            // next row to it.
            tracing::warn!(file = %path.display(), cut_bytes = len - known.complete_len, "cutting an incomplete last row");
            file.set_len(known.complete_len).await?;
        }
        let mut bytes = Vec::with_capacity(rows.len() + 200);
        if self.format == FileFormat::Csv && known.complete_len == 0 {
            bytes.extend(csv_row(&COLUMNS.map(str::to_owned))?);
        }
        bytes.extend_from_slice(rows);
        file.write_all(&bytes).await?;
        file.flush().await?;
        file.sync_all().await?;
        if known.seen.is_none() {
            // The new file's directory entry must survive a crash too.
            if let Some(dir) = path.parent()
                && let Ok(dir) = std::fs::File::open(dir)
            {
                dir.sync_all()
                    .with_context(|| format!("syncing {}", path.display()))?;
            }
        }
        let written = file.metadata().await?;
        // Every row ends with a newline, so the whole file is complete now.
        known.complete_len = written.len();
        known.seen = Some((written.len(), modified(&written, path)?));
        Ok(())
    }
}

/// The file's length and modification time, `None` if there is no file.
async fn looks(path: &Path) -> anyhow::Result<Option<(u64, SystemTime)>> {
    match tokio::fs::metadata(path).await {
        Ok(meta) => Ok(Some((meta.len(), modified(&meta, path)?))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading the metadata of {}", path.display())),
    }
}

fn modified(meta: &std::fs::Metadata, path: &Path) -> anyhow::Result<SystemTime> {
    meta.modified()
        .with_context(|| format!("reading the modification time of {}", path.display()))
}

fn csv_row(fields: &[String]) -> anyhow::Result<Vec<u8>> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    writer.write_record(fields)?;
    writer.flush()?;
    writer.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}
