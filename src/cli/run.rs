//! `tally run`: one run of a period, or a backfill of a range of months, its output and its
//! exit code.

use super::render;
use super::{Load, exit_code_of, listen_for_signals, writer_lease};
use crate::domain::{Period, RunStatus, RunSummary, Trigger};
use crate::pipeline::{self, App, RunOptions, UsageError};
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// The source names `--source` takes, for its help and its error: every source tally has.
fn source_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(crate::mapping::SOURCES.iter().map(|(name, _)| *name))
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The billing period, YYYY-MM (default: the previous month in general.timezone).
    /// Re-running a period never bills twice: unchanged lines push nothing, changed ones get
    /// one adjustment.
    #[arg(long, value_name = "YYYY-MM", conflicts_with_all = ["from", "to"])]
    pub period: Option<Period>,
    /// Backfill: the first month of a range (with --to). Each month from --from to --to,
    /// inclusive, is one run of its own, in order; the backfill stops at the first month that
    /// fails or is interrupted and names the months it did not run.
    #[arg(long, value_name = "YYYY-MM", requires = "to")]
    pub from: Option<Period>,
    /// Backfill: the last month of the range (inclusive, not before --from).
    #[arg(long, value_name = "YYYY-MM", requires = "from")]
    pub to: Option<Period>,
    /// Only this source; the others' lines are left as they are.
    #[arg(long, value_name = "NAME", value_parser = source_names())]
    pub source: Option<String>,
    /// Only this customer's lines and exceptions are planned, recorded and pushed: its billing
    /// account (any case, e.g. ACME-001) or a source's customer key as the customer map
    /// writes it (an organization name exactly, a GUID in any spelling). A run of every
    /// customer afterwards pushes the others' lines, and nothing twice.
    #[arg(long, value_name = "ID")]
    pub customer: Option<String>,
    /// Who asks for this run, recorded with it and shown by `tally runs` (default: $USER, else
    /// $LOGNAME, else "unknown").
    #[arg(long, value_name = "NAME")]
    pub by: Option<String>,
    /// Print the plan (create / adjust / unchanged, with amounts) and write nothing anywhere.
    /// Works with every option above, a backfill included (one plan per month).
    #[arg(long)]
    pub dry_run: bool,
    /// `text` for people, `json` for scripts: one JSON summary on stdout (for a backfill, a
    /// JSON array of the months' summaries).
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// If another tally is writing the ledger, wait this many seconds for it (then exit 4).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub wait: u64,
    /// Share the period with other `tally run --worker` processes on the same Postgres (any
    /// number, on any machines): each claims source scopes one at a time, and the period is
    /// priced and pushed once, by the first worker to take the writer lease after every scope
    /// is extracted. The others exit 0 once it has. A worker that dies leaves its scope to the
    /// others after --lease-secs. Needs Postgres; see docs/OPERATIONS.md.
    #[arg(long, conflicts_with_all = ["from", "to", "dry_run", "customer"])]
    pub worker: bool,
    /// The round the workers of one night share: give them all the same name (in Kubernetes,
    /// the Job's name). Default: the period and today's UTC date, e.g. 2026-10@2026-11-03.
    #[arg(long, value_name = "NAME", requires = "worker")]
    pub round: Option<String>,
    /// How long a worker's scope stays its own without its heartbeat (renewed every third of
    /// it): how soon the others take over the scope of a worker that died.
    #[arg(long, value_name = "SECS", default_value_t = 60, requires = "worker",
          value_parser = clap::value_parser!(u64).range(3..=3600))]
    pub lease_secs: u64,
}

/// `tally run`: builds the app, takes the writer lease (not for a dry run) and runs.
pub async fn execute(args: RunArgs, load: Load<'_>) -> anyhow::Result<i32> {
    // A range that cannot run is refused before anything is read or opened.
    let range = months(&args)?;
    let settings = load()?;
    super::init_tracing(&settings, None);
    let app = App::build(settings).await?;
    if args.worker {
        listen_for_signals(&app.settings, &app.shutdown);
        return super::worker::execute(&app, &args).await;
    }
    let _lease = if args.dry_run {
        None
    } else {
        Some(writer_lease(&app.store, "run", args.wait).await?)
    };
    listen_for_signals(&app.settings, &app.shutdown);
    match range {
        Some(months) => backfill(&app, &args, &months).await,
        None => run_command(&app, &args, Trigger::Manual).await,
    }
}

/// The months of `--from`/`--to`, or `None` for a single period.
fn months(args: &RunArgs) -> Result<Option<Vec<Period>>, UsageError> {
    let (Some(from), Some(to)) = (args.from, args.to) else {
        return Ok(None);
    };
    if from > to {
        return Err(UsageError(format!(
            "--from {from} is after --to {to}: a backfill runs from the earlier month to the \
             later one (e.g. --from {to} --to {from})"
        )));
    }
    let mut months = vec![from];
    while let Some(last) = months.last().copied()
        && last < to
    {
        months.push(last.next());
    }
    Ok(Some(months))
}

/// Who asks: `--by`, else the login name, else "unknown".
fn requested_by(args: &RunArgs) -> String {
    args.by
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .map(|by| by.trim().to_owned())
        .filter(|by| !by.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

pub(super) fn options(args: &RunArgs, period: Period, trigger: Trigger) -> RunOptions {
    RunOptions {
        period,
        source: args.source.clone(),
        dry_run: args.dry_run,
        trigger,
        customer: args.customer.clone(),
        requested_by: Some(requested_by(args)),
    }
}

/// `tally run`: one run, its output, its exit code.
pub async fn run_command(app: &App, args: &RunArgs, trigger: Trigger) -> anyhow::Result<i32> {
    let period = args
        .period
        .unwrap_or_else(|| Period::previous_in(chrono::Utc::now(), app.settings.general.tz()));
    note_if_closed(app, period).await?;
    let report = crate::observe::with_progress_bar(
        args.output == OutputFormat::Text,
        pipeline::run(app, &options(args, period, trigger)),
    )
    .await?;
    crate::observe::log_summary(&report.summary);
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report.summary)?),
        OutputFormat::Text => print_report(args, &report),
    }
    Ok(exit_code_of(report.summary.status))
}

pub(super) fn print_report(args: &RunArgs, report: &pipeline::RunReport) {
    if args.dry_run {
        println!(
            "plan for {} (dry run: nothing is written or pushed)",
            report.summary.period
        );
        print!("{}", render::plan_text(&report.plan));
    }
    if !report.exceptions.is_empty() {
        println!("\nexceptions (not billed):");
        print!("{}", render::exceptions_table(&report.exceptions));
    }
    println!();
    print!("{}", render::summary_text(&report.summary));
}

/// How bad a run's end is, for a backfill's exit code: the worst month decides.
fn severity(status: RunStatus) -> u8 {
    match status {
        RunStatus::Completed => 0,
        RunStatus::CompletedWithExceptions => 1,
        RunStatus::Running | RunStatus::Failed | RunStatus::Abandoned => 2,
        RunStatus::Interrupted => 3,
    }
}

/// A closed month is only closed to the daemon: an operator may still re-run it, told so.
pub(super) async fn note_if_closed(app: &App, period: Period) -> anyhow::Result<()> {
    if let Some(closed) = app.store.closed_period(period).await? {
        eprintln!(
            "note: {period} is closed (by {} at {}): scheduled runs leave it alone; this manual run may still change and push its lines",
            closed.closed_by,
            closed.closed_at.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    Ok(())
}

/// `tally run --from --to`: each month a run of its own, in order, stopping at the first that
/// fails or is interrupted (a later month often depends on the earlier one being right).
async fn backfill(app: &App, args: &RunArgs, months: &[Period]) -> anyhow::Result<i32> {
    let mut summaries: Vec<RunSummary> = Vec::new();
    let mut worst = RunStatus::Completed;
    let mut not_run: &[Period] = &[];
    for (i, period) in months.iter().enumerate() {
        if args.output == OutputFormat::Text {
            println!("== {period} ({} of {})", i + 1, months.len());
        }
        note_if_closed(app, *period).await?;
        let month = options(args, *period, Trigger::Manual);
        let run = pipeline::run(app, &month);
        let report =
            match crate::observe::with_progress_bar(args.output == OutputFormat::Text, run).await {
                Ok(report) => {
                    crate::observe::log_summary(&report.summary);
                    report
                }
                Err(e) => {
                    let names: Vec<String> = months[i..].iter().map(Period::to_string).collect();
                    eprintln!(
                        "backfill stopped at {period}; not run: {}",
                        names.join(", ")
                    );
                    return Err(e);
                }
            };
        let status = report.summary.status;
        if severity(status) > severity(worst) {
            worst = status;
        }
        if args.output == OutputFormat::Text {
            print_report(args, &report);
            println!();
        }
        summaries.push(report.summary);
        if matches!(status, RunStatus::Failed | RunStatus::Interrupted) {
            not_run = &months[i + 1..];
            break;
        }
    }
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&summaries)?),
        OutputFormat::Text => {
            let ran: Vec<String> = summaries
                .iter()
                .map(|s| format!("{} {}", s.period, s.status))
                .collect();
            println!(
                "backfill {}..{}: {}",
                months[0],
                months[months.len() - 1],
                ran.join(", ")
            );
            if !not_run.is_empty() {
                let names: Vec<String> = not_run.iter().map(Period::to_string).collect();
                println!(
                    "not run: {} (stopped after {} {}): fix it, then run again with --from {}",
                    names.join(", "),
                    summaries
                        .last()
                        .map(|s| s.period.to_string())
                        .unwrap_or_default(),
                    worst,
                    summaries
                        .last()
                        .map(|s| s.period.to_string())
                        .unwrap_or_default(),
                );
            }
        }
    }
    if !not_run.is_empty() && args.output == OutputFormat::Json {
        let names: Vec<String> = not_run.iter().map(Period::to_string).collect();
        eprintln!("not run: {}", names.join(", "));
    }
    Ok(exit_code_of(worst))
}
