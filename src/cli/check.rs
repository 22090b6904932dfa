//! `tally check-config [--reach]`: every problem of the configuration's files, environment and
//! keys in one run, each named by its origin (`file:key`, `file:row:column` or the variable),
//! and with `--reach` one small signed-in read of every configured peer.
//!
//! It lives apart from the other commands because it must keep going where they stop: loading
//! fails a run at the first layer that is wrong, a check lists them all.

use crate::config::Settings;
use crate::pipeline;
use crate::problem::{ConfigError, Problem};
use crate::sinks::Sink;
use crate::sources::Source;
use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// After the checks pass, sign in to every configured source and billing system and make
    /// one small read of each (nothing is run, nothing is written): exit 0 if all answer.
    #[arg(long)]
    pub reach: bool,
}

/// Checks everything; with `--reach` asks every peer. The exit code: 0 good, 2 a problem of
/// the configuration (every one listed), 1 a peer that could not be reached.
pub async fn execute(args: &CheckArgs, config: Option<&Path>) -> anyhow::Result<i32> {
    let settings = checked(config)?;
    let files: Vec<String> = settings
        .loaded_from
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    println!(
        "configuration is valid ({})",
        if files.is_empty() {
            "defaults and environment".into()
        } else {
            files.join(" + ")
        }
    );
    if !args.reach {
        return Ok(super::exit::OK);
    }
    let reached = reach_all(&settings).await;
    let mut all_ok = true;
    for peer in &reached {
        match &peer.outcome {
            Ok(what) => println!("{:<22} ok ({what})", peer.name),
            Err(error) => {
                all_ok = false;
                println!("{:<22} FAILED: {error}", peer.name);
            }
        }
    }
    Ok(if all_ok {
        super::exit::OK
    } else {
        super::exit::FAILED
    })
}

/// The settings when nothing is wrong; else every problem of every layer and every check, in
/// one error, each at its origin. Notes (a missing `config/$TALLY_ENV.toml`) go to stderr.
pub fn checked(config: Option<&Path>) -> Result<Settings, ConfigError> {
    let loaded = Settings::load_all(config);
    for note in &loaded.notes {
        eprintln!("note: {note}");
    }
    let mut problems = loaded.problems;
    // What loaded is checked too, without the wrong keys: one run lists everything.
    if let Some(settings) = &loaded.settings {
        for problem in settings.attribute(pipeline::check(settings)) {
            if !problems.contains(&problem) {
                problems.push(problem);
            }
        }
    }
    match loaded.settings {
        Some(settings) if problems.is_empty() => Ok(settings),
        _ => Err(ConfigError(dedup(problems))),
    }
}

fn dedup(problems: Vec<Problem>) -> Vec<Problem> {
    let mut out: Vec<Problem> = Vec::with_capacity(problems.len());
    for p in problems {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// One peer's answer to `--reach`.
pub struct Reached {
    /// `sources.ccc`, `sinks.rambase`: the table that configures it.
    pub name: String,
    /// What was read, or the error (with its URL, never a secret).
    pub outcome: Result<String, String>,
}

/// How long `--reach` waits for the slowest peer, retries included: it checks, it does not run.
const REACH_DEADLINE_SECS: u64 = 120;

/// Signs in to every configured peer (enabled sources, billing systems) and makes one small
/// read of each, all at once; nothing is run and nothing is written.
pub async fn reach_all(settings: &Settings) -> Vec<Reached> {
    let (sources, sinks) = match pipeline::build_connectors(settings) {
        Ok(built) => built,
        Err(problems) => {
            return problems
                .into_iter()
                .map(|p| Reached {
                    name: p.at,
                    outcome: Err(p.message),
                })
                .collect();
        }
    };
    let period = crate::domain::Period::containing(chrono::Utc::now(), settings.general.tz());
    let mut asks: Vec<futures_util::future::BoxFuture<'_, Reached>> = Vec::new();
    for source in &sources {
        asks.push(Box::pin(async move {
            let (name, outcome) = match source {
                Source::BillableUsers(s) => ("sources.billable_users", s.reach(period).await),
                Source::Ccc(s) => ("sources.ccc", s.reach().await),
                Source::Genesys(s) => ("sources.genesys", s.reach().await),
            };
            reached(name, outcome)
        }));
    }
    for sink in &sinks {
        asks.push(Box::pin(async move {
            let (name, outcome) = match sink {
                Sink::RamBase(s) => ("sinks.rambase", s.reach().await),
                Sink::ActivePlatform(s) => ("sinks.activeplatform", s.reach().await),
                Sink::File(s) => ("sinks.file", s.reach().await),
            };
            reached(name, outcome)
        }));
    }
    let deadline = crate::http::Deadline::after_secs(REACH_DEADLINE_SECS);
    crate::http::with_deadline(deadline, futures_util::future::join_all(asks)).await
}

fn reached(name: &str, outcome: anyhow::Result<String>) -> Reached {
    Reached {
        name: name.to_owned(),
        outcome: outcome.map_err(|e| format!("{e:#}")),
    }
}
