//! `tally lines` and `tally runs`: reading the ledger and the run history. They need the
//! database only, never a source's or billing system's credentials.

use super::render;
use super::{Load, exit};
use crate::domain::Period;
use crate::store::Store;
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LinesFormat {
    Table,
    Csv,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct LinesArgs {
    /// The billing period, YYYY-MM.
    #[arg(long, value_name = "YYYY-MM")]
    pub period: Period,
    /// Only this billing account.
    #[arg(long, value_name = "ID")]
    pub customer: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: LinesFormat,
    /// Show the period's exceptions (records that could not be billed) instead of the lines.
    #[arg(long)]
    pub exceptions: bool,
}

#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// How many runs, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

/// `tally lines`.
pub async fn lines(args: LinesArgs, load: Load<'_>) -> anyhow::Result<i32> {
    let settings = load()?;
    super::init_tracing(&settings, Some("warn"));
    let store = Store::connect(&settings.database_target()).await?;
    lines_command(&store, &args).await
}

/// `tally runs`.
pub async fn runs(args: RunsArgs, load: Load<'_>) -> anyhow::Result<i32> {
    let settings = load()?;
    super::init_tracing(&settings, Some("warn"));
    let store = Store::connect(&settings.database_target()).await?;
    print!("{}", render::runs_table(&store.runs(args.limit).await?));
    Ok(exit::OK)
}

async fn lines_command(store: &Store, args: &LinesArgs) -> anyhow::Result<i32> {
    if args.exceptions {
        let exceptions = store.exceptions(args.period).await?;
        match args.format {
            LinesFormat::Json => println!("{}", serde_json::to_string_pretty(&exceptions)?),
            _ => print!("{}", render::exceptions_table(&exceptions)),
        }
        return Ok(exit::OK);
    }
    let mut lines = store.ledger_lines(args.period, None).await?;
    if let Some(customer) = &args.customer {
        lines.retain(|l| l.key.billing_account.as_str() == customer);
    }
    match args.format {
        LinesFormat::Table => print!("{}", render::lines_table(&lines)),
        LinesFormat::Csv => print!("{}", render::lines_csv(&lines)?),
        LinesFormat::Json => println!("{}", serde_json::to_string_pretty(&lines)?),
    }
    Ok(exit::OK)
}
