//! `tally run`: one run of a period, its output and its exit code.

use super::render;
use super::{Load, exit_code_of, listen_for_signals, writer_lease};
use crate::domain::{Period, Trigger};
use crate::pipeline::{self, App, RunOptions};
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The billing period, YYYY-MM (default: the previous month in general.timezone).
    #[arg(long, value_name = "YYYY-MM")]
    pub period: Option<Period>,
    /// Only this source (its name under [sources]).
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// Print the plan (create / adjust / unchanged, with amounts) and write nothing anywhere.
    #[arg(long)]
    pub dry_run: bool,
    /// `text` for people, `json` for scripts (one JSON summary on stdout).
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// If another tally is writing the ledger, wait this many seconds for it (then exit 4).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub wait: u64,
}

/// `tally run`: builds the app, takes the writer lease (not for a dry run) and runs.
pub async fn execute(args: RunArgs, load: Load<'_>) -> anyhow::Result<i32> {
    let settings = load()?;
    super::init_tracing(&settings, None);
    let app = App::build(settings).await?;
    let _lease = if args.dry_run {
        None
    } else {
        Some(writer_lease(&app.store, "run", args.wait).await?)
    };
    listen_for_signals(&app.settings, &app.shutdown);
    run_command(&app, &args, Trigger::Manual).await
}

/// `tally run`: one run, its output, its exit code.
pub async fn run_command(app: &App, args: &RunArgs, trigger: Trigger) -> anyhow::Result<i32> {
    let period = args
        .period
        .unwrap_or_else(|| Period::previous_in(chrono::Utc::now(), app.settings.general.tz()));
    // A closed month is only closed to the daemon: an operator may still re-run it, told so.
    if let Some(closed) = app.store.closed_period(period).await? {
        eprintln!(
            "note: {period} is closed (by {} at {}): scheduled runs leave it alone; this manual run may still change and push its lines",
            closed.closed_by,
            closed.closed_at.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    let options = RunOptions {
        period,
        source: args.source.clone(),
        dry_run: args.dry_run,
        trigger,
    };
    let report = pipeline::run(app, &options).await?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report.summary)?),
        OutputFormat::Text => {
            if args.dry_run {
                println!("plan for {period} (dry run: nothing is written or pushed)");
                print!("{}", render::plan_text(&report.plan));
            }
            if !report.exceptions.is_empty() {
                println!("\nexceptions (not billed):");
                print!("{}", render::exceptions_table(&report.exceptions));
            }
            println!();
            print!("{}", render::summary_text(&report.summary));
        }
    }
    Ok(exit_code_of(report.summary.status))
}
