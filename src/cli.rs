//! The command line: what each command does, parsed with clap, and how its result becomes
//! output and an exit code (0 completed, 3 completed with exceptions, 1 failed, 2 bad usage
//! or configuration, 4 another tally is writing, 5 stopped by a signal).

use crate::config::{ConfigError, Settings};
use crate::domain::{BillingAccount, Period, RunStatus, Trigger};
use crate::pipeline::{self, App, Faults, PushOutcome, RunOptions, UsageError};
use crate::report;
use crate::shutdown::Shutdown;
use crate::store::{Busy, PushScope, Store, WriterLease};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Exit codes, as docs/LEDGER.md documents them.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const EXCEPTIONS: i32 = 3;
    /// Another tally holds the writer lease (`--wait` ran out).
    pub const BUSY: i32 = 4;
    /// Stopped by SIGTERM or SIGINT; the next run resumes.
    pub const INTERRUPTED: i32 = crate::shutdown::EXIT_INTERRUPTED;
}

/// The exit codes of a command that runs or pushes, for its `--help`.
const RUN_EXIT_CODES: &str = "Exit codes:\n  \
    0  completed: every line is in the billing systems (or waits for approval)\n  \
    3  completed with exceptions: records that could not be billed are listed; fix and re-run\n  \
    1  failed: a source or a push failed, or a revision waits for its settle time; re-run\n  \
    2  bad usage or configuration (every problem is listed)\n  \
    4  busy: another tally is writing the ledger (the holder is named); use --wait SECS\n  \
    5  interrupted by SIGTERM/SIGINT: what was done is recorded; the next run resumes";

/// The exit codes of a command that only reads.
const READ_EXIT_CODES: &str = "Exit codes:\n  \
    0  done\n  \
    1  the state database could not be read\n  \
    2  bad usage or configuration";

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
        Exit codes: 0 completed, 3 completed with exceptions, 1 failed, 2 bad usage or \
        configuration, 4 another tally is writing the ledger, 5 stopped by SIGTERM/SIGINT \
        (docs/LEDGER.md).\n\n\
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
    /// crash resumes at its last committed page. One writer at a time: a second `tally run`,
    /// `approve` or `push` on the same database waits (`--wait`) or exits 4.
    #[command(
        after_help = RUN_EXIT_CODES,
        after_long_help = concat!(
            "Examples:\n  tally run --period 2026-10 --dry-run   # the plan, nothing written\n  ",
            "tally run --period 2026-10             # record and push\n  ",
            "tally run --period 2026-10 --source ccc --wait 600\n\n",
            "Exit codes:\n  0  completed\n  3  completed with exceptions\n  1  failed\n  ",
            "2  bad usage or configuration\n  4  busy: another tally is writing the ledger\n  ",
            "5  interrupted by SIGTERM/SIGINT"
        )
    )]
    Run(RunArgs),
    /// Shows the ledger's invoice lines of a period (every revision), with totals per currency.
    #[command(after_help = READ_EXIT_CODES)]
    Lines(LinesArgs),
    /// Lists recent runs with their outcome and counts.
    #[command(after_help = READ_EXIT_CODES)]
    Runs(RunsArgs),
    /// Approves the draft lines of a period (billing.require_approval) and pushes exactly those.
    ///
    /// Records who approved (--by), when, and why (--note). Approving needs only the
    /// database; pushing needs the secrets of the billing systems the approved lines go to.
    #[command(
        after_help = RUN_EXIT_CODES,
        after_long_help = concat!(
            "Examples:\n  tally approve --period 2026-10 --customer ACME --by kari --note \"checked\"\n  ",
            "tally approve --period 2026-10 --no-push   # approve now, push later with `tally push`\n\n",
            "Exit codes:\n  0  done\n  1  a push failed (the line stays approved; run `tally push`)\n  ",
            "2  bad usage or configuration\n  4  busy: another tally is writing the ledger\n  ",
            "5  interrupted by SIGTERM/SIGINT"
        )
    )]
    Approve(ApproveArgs),
    /// Pushes the approved lines of a period (of one customer, if given) and resolves lines
    /// left `pushing`.
    #[command(
        after_help = RUN_EXIT_CODES,
        after_long_help = concat!(
            "Examples:\n  tally push --period 2026-10\n  tally push --period 2026-10 --customer ACME\n\n",
            "Exit codes:\n  0  every approved line is in the billing systems\n  ",
            "1  a push failed or waits for its settle time; run again\n  ",
            "2  bad usage or configuration\n  4  busy: another tally is writing the ledger\n  ",
            "5  interrupted by SIGTERM/SIGINT"
        )
    )]
    Push(PushArgs),
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
    /// If another tally is writing the ledger, wait this many seconds for it (then exit 4).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub wait: u64,
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
    /// Approve only; push later with `tally push`.
    #[arg(long)]
    pub no_push: bool,
    /// Who approves, as recorded on the lines (default: $TALLY_APPROVER, else $USER).
    #[arg(long, value_name = "NAME", env = "TALLY_APPROVER")]
    pub by: Option<String>,
    /// Why, recorded with the approval.
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
    /// If another tally is writing the ledger, wait this many seconds for it (then exit 4).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub wait: u64,
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The billing period, YYYY-MM.
    #[arg(long, value_name = "YYYY-MM")]
    pub period: Period,
    /// Only this billing account.
    #[arg(long, value_name = "ID")]
    pub customer: Option<String>,
    /// If another tally is writing the ledger, wait this many seconds for it (then exit 4).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub wait: u64,
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
            } else if e.downcast_ref::<Busy>().is_some() {
                exit::BUSY
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
            let _lease = if args.dry_run {
                None
            } else {
                Some(writer_lease(&app.store, "run", args.wait).await?)
            };
            listen_for_signals(&app.settings, &app.shutdown);
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
        // Approving is a ledger operation: it needs the database only. Pushing what was approved
        // needs the secrets of the billing systems those lines go to, and no others.
        Command::Approve(args) => {
            let settings = load()?;
            init_tracing(&settings, None);
            let store = Store::connect(&settings.database_target()).await?;
            let _lease = writer_lease(&store, "approve", args.wait).await?;
            let shutdown = Shutdown::new();
            listen_for_signals(&settings, &shutdown);
            let by = args.by.clone().unwrap_or_else(default_approver);
            let customer = args.customer.as_deref().map(BillingAccount::from);
            let approved = store
                .approve(args.period, customer.as_ref(), &by, args.note.as_deref())
                .await?;
            println!(
                "approved {} draft line(s) of {}{} as {by}",
                approved.len(),
                args.period,
                customer
                    .as_ref()
                    .map(|c| format!(" for {c}"))
                    .unwrap_or_default()
            );
            if args.no_push || approved.is_empty() {
                if !approved.is_empty() {
                    println!(
                        "not pushed (--no-push): push them with `tally push --period {}`",
                        args.period
                    );
                }
                return Ok(exit::OK);
            }
            let scope = PushScope {
                ids: Some(&approved),
                ..PushScope::default()
            };
            let outcome = push_command(&settings, &store, &shutdown, args.period, &scope).await?;
            Ok(push_exit_code(&outcome))
        }
        Command::Push(args) => {
            let settings = load()?;
            init_tracing(&settings, None);
            let store = Store::connect(&settings.database_target()).await?;
            let _lease = writer_lease(&store, "push", args.wait).await?;
            let shutdown = Shutdown::new();
            listen_for_signals(&settings, &shutdown);
            let customer = args.customer.as_deref().map(BillingAccount::from);
            let scope = PushScope {
                customer: customer.as_ref(),
                ..PushScope::default()
            };
            let outcome = push_command(&settings, &store, &shutdown, args.period, &scope).await?;
            Ok(push_exit_code(&outcome))
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
            listen_for_signals(&app.settings, &app.shutdown);
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

/// Takes the writer lease for `command`, waiting up to `wait_secs` (a [`Busy`] error, exit 4,
/// names the holder).
async fn writer_lease(store: &Store, command: &str, wait_secs: u64) -> anyhow::Result<WriterLease> {
    store
        .acquire_writer(command, Duration::from_secs(wait_secs))
        .await
}

fn listen_for_signals(settings: &Settings, shutdown: &Shutdown) {
    shutdown.listen_for_signals(Duration::from_secs(settings.general.shutdown_timeout_secs));
}

/// Who approves when `--by` is not given: the login name, so that an approval is never anonymous.
fn default_approver() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Pushes the period's approved lines within `scope`, building only the billing systems they go
/// to, and prints what happened.
async fn push_command(
    settings: &Settings,
    store: &Store,
    shutdown: &Shutdown,
    period: Period,
    scope: &PushScope<'_>,
) -> anyhow::Result<PushOutcome> {
    let lines = store.lines_to_push(period, scope).await?;
    let mut names: Vec<&str> = lines.iter().map(|l| l.sink.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let sinks = pipeline::build_sinks(settings, &names).map_err(ConfigError)?;
    let faults = Faults::default();
    let outcome = pipeline::pusher(settings, store, &sinks, &faults, shutdown)
        .push_period(period, scope)
        .await?;
    println!("pushed {} line(s)", outcome.pushed);
    for e in &outcome.errors {
        println!("push error: {e}");
    }
    if outcome.interrupted {
        println!(
            "interrupted: the lines not reached stay approved; run `tally push --period {period}` again"
        );
    }
    Ok(outcome)
}

fn push_exit_code(outcome: &PushOutcome) -> i32 {
    if outcome.interrupted {
        exit::INTERRUPTED
    } else if outcome.errors.is_empty() && outcome.waiting == 0 {
        exit::OK
    } else {
        exit::FAILED
    }
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
