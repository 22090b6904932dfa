//! Runs: one execution of the pipeline, and the summary it ends with.

use super::Period;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Completed,
    CompletedWithExceptions,
    Failed,
    /// Stopped by SIGTERM or SIGINT: what it pushed is recorded, the rest waits for the next run.
    Interrupted,
    /// Its process died while running (crash, SIGKILL, power cut); marked by the next writer.
    Abandoned,
}

impl RunStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::CompletedWithExceptions => "completed_with_exceptions",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Abandoned => "abandoned",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunStatus::Running,
            "completed" => RunStatus::Completed,
            "completed_with_exceptions" => RunStatus::CompletedWithExceptions,
            "failed" => RunStatus::Failed,
            "interrupted" => RunStatus::Interrupted,
            "abandoned" => RunStatus::Abandoned,
            _ => return None,
        })
    }

    /// The process exit code for a run that ended so (docs/LEDGER.md: 0, 3, 1, 5).
    pub fn exit_code(&self) -> i32 {
        match self {
            RunStatus::Completed => 0,
            RunStatus::CompletedWithExceptions => 3,
            RunStatus::Running | RunStatus::Failed | RunStatus::Abandoned => 1,
            RunStatus::Interrupted => 5,
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Manual,
    Schedule,
    Demo,
}

impl Trigger {
    pub fn as_str(&self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Schedule => "schedule",
            Trigger::Demo => "demo",
        }
    }
}

/// A source whose part of the run failed after its retries; the others went on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceFailure {
    pub source: String,
    pub error: String,
}

/// The end of a run, as printed (text or JSON) and stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// None for a dry run, which writes nothing.
    pub run_id: Option<i64>,
    pub status: RunStatus,
    pub period: Period,
    pub dry_run: bool,
    pub records_read: u64,
    pub lines_created: u64,
    pub lines_adjusted: u64,
    pub lines_unchanged: u64,
    pub lines_pushed: u64,
    /// Draft lines of the period that wait for a person's approval (`tally approve`).
    #[serde(default)]
    pub lines_waiting_approval: u64,
    /// Lines whose figures changed after they were approved: back to draft, approve again.
    #[serde(default)]
    pub lines_back_to_review: u64,
    /// Revisions left `pushing` because the billing system may still be storing them (the
    /// settle time has not passed): a later run reads the billing system and finishes them.
    #[serde(default)]
    pub lines_waiting_to_settle: u64,
    pub exceptions: u64,
    /// Sum of the period's line amounts per currency code, as strings in JSON.
    pub totals: BTreeMap<String, Decimal>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_sources: Vec<SourceFailure>,
    /// Push errors and other problems an operator must look at.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Each source's counts, in the order the sources ran (empty in summaries stored before
    /// they were kept).
    #[serde(default)]
    pub sources: Vec<SourceStats>,
    /// Things that did not fail the run but look wrong: a source that returned no records
    /// where the previous period had some.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// True when a selected source failed: `totals` leave its lines out (they are the lines
    /// this run computed, not the period's).
    #[serde(default)]
    pub totals_partial: bool,
    /// The `--customer` the run was limited to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
}

/// What one source did in a run: the operator's first look when a night went wrong
/// (`tally runs show`). Requests, retries and 429s are counted by the source's HTTP client.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceStats {
    pub source: String,
    /// Distinct records read (staged) for the period.
    pub records: u64,
    /// Pages this run read (a resumed extraction counts only the pages it read itself).
    pub pages: u64,
    /// HTTP requests sent to the peer, every attempt counted.
    pub requests: u64,
    /// Attempts after the first of a request (after a 429, a 5xx, a timeout).
    pub retries: u64,
    /// Answers 429 Too Many Requests.
    pub rate_limited: u64,
    /// Wall time of the source's extraction, in milliseconds.
    pub duration_ms: u64,
    /// Why the source failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
