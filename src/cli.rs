//! The command line: what each command does, parsed with clap, and how its result becomes
//! output and an exit code (0 completed, 3 completed with exceptions, 1 failed, 2 bad usage
//! or configuration).

use crate::config::{ConfigError, Settings};
use crate::domain::{BillingAccount, Period, RunStatus, Trigger};
use crate::pipeline::{self, App, RunOptions, UsageError};
use crate::report;
use crate::store::Store;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Exit codes, as the README documents them.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const EXCEPTIONS: i32 = 3;
}

#[derive(Debug, Parser)]
#[command(
    name = "tally",
    version,
    about = "Turns usage in SaaS systems into invoice lines in a billing system.",
    long_about = "Turns usage in SaaS systems into invoice lines in a billing system.\n\n\
        Every run pulls billable users and usage from the configured sources, maps each record \
        to a billing account and a license type (config/customers.csv and the sources' rules), \
        prices it (config/pricing.csv), records the lines in a ledger, and pushes them to the \
        billing systems, exactly once.\n\n\
        Configuration: config/default.toml, then config/$TALLY_ENV.toml, then TALLY__SECTION__KEY \
        environment variables (secrets only there). The state lives in Postgres (DATABASE_URL) \
        or, by default, in data/tally.db.\n\n\
        Exit codes: 0 completed, 3 completed with exceptions, 1 failed, 2 bad usage or configuration.\n\n\
        Try it: `tally demo`.",
    after_help = "Run `tally <command> --help` for what a command does."
)]
pub struct Cli {
    /// Read this configuration file instead of config/default.toml and config/$TALLY_ENV.toml.
    #[arg(long, global = true, env = "TALLY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs (or re-runs) one billing period: extract, map, price, record and push.
    ///
    /// A re-run never bills twice: unchanged lines push nothing, a changed line that was
    /// already pushed gets one adjustment (the difference). An extraction interrupted by a
    /// crash resumes at its last committed page.
    Run(RunArgs),
    /// Shows the ledger's invoice lines of a period (every revision), with totals per currency.
    Lines(LinesArgs),
    /// Lists recent runs with their outcome and counts.
    Runs(RunsArgs),
    /// Approves the draft lines of a period (when billing.require_approval is on) and pushes them.
    Approve(ApproveArgs),
    /// Creates or updates the state database's tables, then exits.
    Migrate,
    /// Checks the configuration, the pricing table and the customer map; lists every problem.
    CheckConfig,
    /// Serves the five simulators on loopback ports: billable users, CCC, Genesys Cloud,
    /// RamBase and ActivePlatform.
    ///
    /// A sandbox for trying configurations: the simulators enforce the vendors' auth, paging,
    /// limits and error shapes, with the demo's data set; config/demo.toml points at their
    /// default ports. It prints the secrets to export. Stop with Ctrl-C.
    Sim(SimArgs),
    /// Runs the demo: simulators in-process, an SQLite file under ./data/, one sync of the demo
    /// month from three sources into two billing systems, the run summary and the invoice
    /// lines. Run it twice: the second pushes nothing.
    Demo(DemoArgs),
    /// Runs the nightly schedule from [schedule] (one runner at a time across instances).
    Daemon,
    /// Times a sync of many billable users through the simulators (see docs/PERFORMANCE.md).
    Bench(BenchArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LinesFormat {
    Table,
    Csv,
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

#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The billing period, YYYY-MM.
    #[arg(long, value_name = "YYYY-MM")]
    pub period: Period,
    /// Only this billing account.
    #[arg(long, value_name = "ID")]
    pub customer: Option<String>,
    /// Approve only; the next run pushes.
    #[arg(long)]
    pub no_push: bool,
}

#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Where the simulators keep their state (what the billing simulator received).
    #[arg(long, default_value = "data/sim")]
    pub data_dir: PathBuf,
    /// Port of the billable-users API simulator (0: any free port).
    #[arg(long, default_value_t = 8081)]
    pub billable_users_port: u16,
    /// Port of the RamBase simulator (0: any free port).
    #[arg(long, default_value_t = 8082)]
    pub rambase_port: u16,
    /// Port of the CCC secure messaging simulator (0: any free port).
    #[arg(long, default_value_t = 8083)]
    pub ccc_port: u16,
    /// Port of the Genesys Cloud simulator, API and login (0: any free port).
    #[arg(long, default_value_t = 8084)]
    pub genesys_port: u16,
    /// Port of the ActivePlatform simulator (0: any free port).
    #[arg(long, default_value_t = 8085)]
    pub activeplatform_port: u16,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where the demo keeps its database and the simulators' state.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Organizations in the generated month.
    #[arg(long, default_value_t = 1_000)]
    pub orgs: usize,
    /// Billable people per organization.
    #[arg(long, default_value_t = 100)]
    pub people_per_org: usize,
}

/// Runs a parsed command; returns the process exit code.
pub async fn execute(cli: Cli) -> i32 {
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            let code = if e.downcast_ref::<ConfigError>().is_some()
                || e.downcast_ref::<UsageError>().is_some()
            {
                exit::USAGE
            } else {
                exit::FAILED
            };
            eprintln!("error: {e:#}");
            code
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let load = || Settings::load(cli.config.as_deref());
    match cli.command {
        Command::Run(args) => {
            let settings = load()?;
            init_tracing(&settings, None);
            let app = App::build(settings).await?;
            run_command(&app, &args, Trigger::Manual).await
        }
        // Reading the ledger needs the database only, not the sources' credentials.
        Command::Lines(args) => {
            let settings = load()?;
            init_tracing(&settings, Some("warn"));
            let store = Store::connect(&settings.database_target()).await?;
            lines_command(&store, &args).await
        }
        Command::Runs(args) => {
            let settings = load()?;
            init_tracing(&settings, Some("warn"));
            let store = Store::connect(&settings.database_target()).await?;
            print!("{}", report::runs_table(&store.runs(args.limit).await?));
            Ok(exit::OK)
        }
        Command::Approve(args) => {
            let settings = load()?;
            init_tracing(&settings, None);
            let app = App::build(settings).await?;
            let customer = args.customer.as_deref().map(BillingAccount::from);
            let approved = app.store.approve(args.period, customer.as_ref()).await?;
            println!("approved {approved} draft line(s) of {}", args.period);
            if args.no_push {
                return Ok(exit::OK);
            }
            let outcome = pipeline::push_period(&app, args.period, None).await?;
            println!("pushed {} line(s)", outcome.pushed);
            for e in &outcome.errors {
                println!("push error: {e}");
            }
            Ok(if outcome.errors.is_empty() {
                exit::OK
            } else {
                exit::FAILED
            })
        }
        Command::Migrate => {
            let settings = load()?;
            init_tracing(&settings, None);
            let store = Store::connect(&settings.database_target()).await?;
            let applied = store.migrate().await?;
            println!(
                "{} database is up to date ({applied} migration(s) applied now)",
                store.backend()
            );
            Ok(exit::OK)
        }
        Command::CheckConfig => {
            let settings = load()?;
            let problems = pipeline::check(&settings);
            if problems.is_empty() {
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
                Ok(exit::OK)
            } else {
                Err(ConfigError(problems).into())
            }
        }
        Command::Sim(args) => {
            crate::sim::serve_command(&args).await?;
            Ok(exit::OK)
        }
        Command::Demo(args) => crate::sim::demo(&args).await,
        Command::Daemon => {
            let settings = load()?;
            init_tracing(&settings, None);
            let app = App::build(settings).await?;
            crate::schedule::run_daemon(std::sync::Arc::new(app)).await?;
            Ok(exit::OK)
        }
        Command::Bench(args) => crate::sim::bench(&args).await,
    }
}

/// `tally run`: one run, its output, its exit code.
pub async fn run_command(app: &App, args: &RunArgs, trigger: Trigger) -> anyhow::Result<i32> {
    let period = args.period.unwrap_or_else(|| {
        Period::containing(chrono::Utc::now(), app.settings.general.tz()).previous()
    });
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
                print!("{}", report::plan_text(&report.plan));
            }
            if !report.exceptions.is_empty() {
                println!("\nexceptions (not billed):");
                print!("{}", report::exceptions_table(&report.exceptions));
            }
            println!();
            print!("{}", report::summary_text(&report.summary));
        }
    }
    Ok(report.summary.status.exit_code())
}

async fn lines_command(store: &Store, args: &LinesArgs) -> anyhow::Result<i32> {
    if args.exceptions {
        let exceptions = store.exceptions(args.period).await?;
        match args.format {
            LinesFormat::Json => println!("{}", serde_json::to_string_pretty(&exceptions)?),
            _ => print!("{}", report::exceptions_table(&exceptions)),
        }
        return Ok(exit::OK);
    }
    let mut lines = store.ledger_lines(args.period, None).await?;
    if let Some(customer) = &args.customer {
        lines.retain(|l| l.key.billing_account.as_str() == customer);
    }
    match args.format {
        LinesFormat::Table => print!("{}", report::lines_table(&lines)),
        LinesFormat::Csv => print!("{}", report::lines_csv(&lines)?),
        LinesFormat::Json => println!("{}", serde_json::to_string_pretty(&lines)?),
    }
    Ok(exit::OK)
}

/// Logs to stderr, as text or JSON per `[log]`; `RUST_LOG` wins over the configured level.
pub fn init_tracing(settings: &Settings, default_level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_level.unwrap_or(&settings.log.level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.log.format {
        crate::config::LogFormat::Json => builder.json().try_init(),
        crate::config::LogFormat::Text => builder.try_init(),
    };
}

/// The exit code of a finished run's status (re-exported for the daemon and tests).
pub fn exit_code(status: RunStatus) -> i32 {
    status.exit_code()
}
