//! `tally lines` and `tally runs`: reading the ledger and the run history. They need the
//! database only, never a source's or billing system's credentials.

use super::render;
use super::{Load, exit};
use crate::domain::{LineStatus, Period, SourceName};
use crate::mapping::CustomerMap;
use crate::pipeline::UsageError;
use crate::pipeline::filter::CustomerFilter;
use crate::store::Store;
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LinesFormat {
    Table,
    Csv,
    /// An Excel workbook: binary, so only into a file (`--out`) or a pipe.
    Xlsx,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunsFormat {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct LinesArgs {
    /// The billing period, YYYY-MM.
    #[arg(long, value_name = "YYYY-MM")]
    pub period: Period,
    /// Only this customer: its billing account in any case (acme-001 finds ACME-001), or a
    /// source's customer key as the customer map writes it (the account it maps to).
    #[arg(long, value_name = "ID")]
    pub customer: Option<String>,
    /// Only this source's lines (or exceptions).
    #[arg(long, value_name = "NAME",
          value_parser = clap::builder::PossibleValuesParser::new(
              crate::mapping::SOURCES.iter().map(|(name, _)| *name)))]
    pub source: Option<String>,
    /// Only revisions in this state: draft (waits for approval), approved (will be pushed),
    /// pushing (being sent, or left so by a stop), pushed (in the billing system).
    #[arg(long, value_name = "STATUS",
          value_parser = clap::builder::PossibleValuesParser::new(
              ["draft", "approved", "pushing", "pushed"]))]
    pub status: Option<String>,
    /// `table` for people; `csv` (UTF-8 with a byte-order mark) and `xlsx` for spreadsheets,
    /// with the calculation columns; `json` for scripts. `csv` works with --exceptions too.
    #[arg(long, value_enum, default_value = "table")]
    pub format: LinesFormat,
    /// Write the csv or xlsx output to this file instead of standard output (xlsx needs it on a
    /// terminal).
    #[arg(long, value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,
    /// Show the period's exceptions (records that could not be billed) instead of the lines.
    #[arg(long)]
    pub exceptions: bool,
    /// With --exceptions: every run's exceptions of the period, by run, also those a later run
    /// replaced.
    #[arg(long, requires = "exceptions")]
    pub history: bool,
}

#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub command: Option<RunsCommand>,
    /// How many runs, newest first (1 or more).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    /// `table` for people, `json` for scripts (an array, newest first).
    #[arg(long, value_enum, default_value = "table")]
    pub format: RunsFormat,
}

#[derive(Debug, clap::Subcommand)]
pub enum RunsCommand {
    /// One run in detail: what was asked, each source's records, pages, requests, retries,
    /// 429s and duration, its error if it failed, the amounts per currency and the errors.
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The run's id, as `tally runs` lists it.
    #[arg(value_name = "RUN_ID")]
    pub run_id: i64,
    /// `table` for people, `json` for scripts.
    #[arg(long, value_enum, default_value = "table")]
    pub format: RunsFormat,
}

/// `tally lines`.
pub async fn lines(args: LinesArgs, load: Load<'_>) -> anyhow::Result<i32> {
    let settings = load()?;
    super::init_tracing(&settings, Some("warn"));
    let store = Store::connect(&settings.database_target()).await?;
    // The customer map, when it can be read, lets --customer name a source's customer key; the
    // ledger's own accounts are enough otherwise.
    let customers = match CustomerMap::load(&settings.billing.customers_file) {
        Ok(map) => map,
        Err(problems) => {
            if args.customer.is_some() {
                eprintln!(
                    "note: the customer map {} cannot be read ({} problem(s); `tally check-config` lists them): --customer is matched against the ledger's accounts only",
                    settings.billing.customers_file.display(),
                    problems.len()
                );
            }
            CustomerMap::default()
        }
    };
    lines_command(&store, &customers, &args).await
}

/// `tally runs` and `tally runs show`.
pub async fn runs(args: RunsArgs, load: Load<'_>) -> anyhow::Result<i32> {
    let settings = load()?;
    super::init_tracing(&settings, Some("warn"));
    let store = Store::connect(&settings.database_target()).await?;
    if let Some(RunsCommand::Show(show)) = &args.command {
        let Some(run) = store.run_record(show.run_id).await? else {
            return Err(UsageError(format!(
                "there is no run {}: `tally runs` lists the runs",
                show.run_id
            ))
            .into());
        };
        match show.format {
            RunsFormat::Table => print!("{}", render::run_detail(&run)),
            RunsFormat::Json => println!(
                "{}",
                serde_json::to_string_pretty(&render::RunJson::of(&run))?
            ),
        }
        return Ok(exit::OK);
    }
    let runs = store.runs(args.limit).await?;
    match args.format {
        RunsFormat::Table => print!("{}", render::runs_table(&runs)),
        RunsFormat::Json => {
            let view: Vec<render::RunJson<'_>> = runs.iter().map(render::RunJson::of).collect();
            println!("{}", serde_json::to_string_pretty(&view)?);
        }
    }
    Ok(exit::OK)
}

async fn lines_command(
    store: &Store,
    customers: &CustomerMap,
    args: &LinesArgs,
) -> anyhow::Result<i32> {
    let customer = match &args.customer {
        Some(asked) => Some(CustomerFilter::resolve(
            customers,
            &store.ledger_accounts().await?,
            asked,
        )?),
        None => None,
    };
    let source = args.source.as_deref().map(SourceName::new);
    if args.out.is_some() && !matches!(args.format, LinesFormat::Csv | LinesFormat::Xlsx) {
        return Err(UsageError(
            "--out writes --format csv or --format xlsx; the table and json go to standard output"
                .into(),
        )
        .into());
    }
    if args.exceptions && args.format == LinesFormat::Xlsx {
        return Err(UsageError(
            "--exceptions has no xlsx format: use --format csv, table or json".into(),
        )
        .into());
    }
    if args.format == LinesFormat::Xlsx
        && args.out.is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        return Err(UsageError(
            "--format xlsx writes a binary workbook: give --out FILE (or redirect standard output to a file)"
                .into(),
        )
        .into());
    }
    let wanted = |e: &crate::domain::RunException| {
        source.as_ref().is_none_or(|s| &e.source == s)
            && customer.as_ref().is_none_or(|c| {
                let how = crate::mapping::key_form(e.source.as_str())
                    .map_or(crate::mapping::KeyMatch::Exact, |f| f.key_match());
                c.matches_exception(e, how)
            })
    };
    if args.history {
        let mut history = store.exception_history(args.period).await?;
        history.retain(|past| wanted(&past.exception));
        match args.format {
            LinesFormat::Json => println!("{}", serde_json::to_string_pretty(&history)?),
            LinesFormat::Csv => emit(
                render::exception_history_csv(&history)?.as_bytes(),
                args.out.as_deref(),
            )?,
            LinesFormat::Table | LinesFormat::Xlsx => {
                print!("{}", render::exception_history_table(&history))
            }
        }
        return Ok(exit::OK);
    }
    if args.exceptions {
        let mut exceptions = store.exceptions(args.period).await?;
        exceptions.retain(|e| wanted(e));
        match args.format {
            LinesFormat::Json => println!("{}", serde_json::to_string_pretty(&exceptions)?),
            LinesFormat::Csv => emit(
                render::exceptions_csv(&exceptions)?.as_bytes(),
                args.out.as_deref(),
            )?,
            LinesFormat::Table | LinesFormat::Xlsx => {
                print!("{}", render::exceptions_table(&exceptions))
            }
        }
        return Ok(exit::OK);
    }
    let mut lines = store.ledger_lines(args.period, source.as_ref()).await?;
    let status = args.status.as_deref().and_then(LineStatus::parse);
    lines.retain(|l| {
        customer
            .as_ref()
            .is_none_or(|c| c.matches_account(&l.key.billing_account))
            && status.is_none_or(|s| l.status == s)
    });
    match args.format {
        LinesFormat::Table => print!("{}", render::lines_table(&lines)),
        LinesFormat::Csv => emit(&crate::export::lines_csv(&lines)?, args.out.as_deref())?,
        LinesFormat::Xlsx => emit(&crate::export::lines_xlsx(&lines)?, args.out.as_deref())?,
        LinesFormat::Json => println!("{}", serde_json::to_string_pretty(&lines)?),
    }
    Ok(exit::OK)
}

/// Writes an export's exact bytes to `out`, or to standard output; a reader that closed the
/// pipe early is no failure (see `observe::pipe`).
fn emit(bytes: &[u8], out: Option<&std::path::Path>) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    if let Some(path) = out {
        return std::fs::write(path, bytes)
            .with_context(|| format!("cannot write --out {}", path.display()));
    }
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other.context("cannot write to standard output")?),
    }
}
