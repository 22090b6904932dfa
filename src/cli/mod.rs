//! The command line: what each command does, parsed with clap, and how its result becomes
//! output and an exit code (0 completed, 3 completed with exceptions, 1 failed, 2 bad usage
//! or configuration, 4 another tally is writing, 5 stopped by a signal).
//!
//! One file per command family: `run`, `ledger` (lines, runs), `approve` (approve, push),
//! `demo`, `sim`, `bench`, `daemon`, `serve` (the review page) and `user` (who may sign in to it); `render` turns results into text, CSV and JSON. This
//! module parses, dispatches and maps errors to exit codes.

pub mod approve;
pub mod bench;
pub mod check;
pub mod daemon;
pub mod demo;
pub mod healthcheck;
pub mod ledger;
pub mod render;
pub mod run;
pub mod serve;
pub mod sim;
pub mod table;
pub mod user;
pub mod worker;

use crate::config::Settings;
use crate::domain::RunStatus;
use crate::pipeline::UsageError;
use crate::problem::ConfigError;
use crate::shutdown::Shutdown;
use crate::store::{Busy, Store, WriterLease};
use approve::{ApproveArgs, PushArgs};
use bench::BenchArgs;
use clap::{Parser, Subcommand};
use demo::DemoArgs;
use ledger::{LinesArgs, RunsArgs};
use run::RunArgs;
use sim::SimArgs;
use std::path::PathBuf;
use std::time::Duration;

/// Reads the configuration, when the command needs it (`--config` or the layered files).
pub type Load<'a> = &'a dyn Fn() -> anyhow::Result<Settings>;

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

    /// Log as `text` (for people) or `json` (for log collectors); overrides log.format.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormatArg>,

    #[command(subcommand)]
    pub command: Command,
}

/// The values of `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
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
            "tally run --period 2026-10 --source ccc --wait 600\n  ",
            "tally run --from 2026-07 --to 2026-10 --dry-run   # a backfill, one run per month\n  ",
            "tally run --period 2026-10 --customer ACME-001 --by kari\n  ",
            "tally run --period 2026-10 --worker --round nightly-2026-11-03   # on each of N machines\n\n",
            "Exit codes:\n  0  completed\n  3  completed with exceptions\n  1  failed\n  ",
            "2  bad usage or configuration\n  4  busy: another tally is writing the ledger\n  ",
            "5  interrupted by SIGTERM/SIGINT"
        )
    )]
    Run(RunArgs),
    /// Shows the ledger's invoice lines of a period (every revision), with totals per currency.
    #[command(
        after_help = READ_EXIT_CODES,
        after_long_help = concat!(
            "Examples:\n",
            "  tally lines --period 2026-10                     # a table fitted to the terminal\n",
            "  tally lines --period 2026-10 --customer ACME-001\n",
            "  tally lines --period 2026-10 --format csv > 2026-10.csv\n",
            "  tally lines --period 2026-10 --exceptions        # what could not be billed, and what to do\n",
            "  tally lines --period 2026-10 --status draft --source ccc\n",
            "  tally lines --period 2026-10 --exceptions --format csv > exceptions.csv\n",
            "  COLUMNS=100 tally lines --period 2026-10         # fitted to 100 columns\n",
            "\n",
            "Exit codes:\n",
            "  0  done (also when a reader stops early, as `| head -1` does)\n",
            "  1  the state database could not be read\n",
            "  2  bad usage or configuration"
        )
    )]
    Lines(LinesArgs),
    /// Lists recent runs with their outcome and counts.
    #[command(
        after_help = READ_EXIT_CODES,
        after_long_help = concat!(
            "Examples:\n",
            "  tally runs               # the last 20 runs, newest first\n",
            "  tally runs --limit 5\n",
            "  tally runs --format json\n",
            "  tally runs show 42        # one run: per-source records, pages, requests, 429s\n",
            "\n",
            "Exit codes:\n",
            "  0  done (also when a reader stops early, as `| head -1` does)\n",
            "  1  the state database could not be read\n",
            "  2  bad usage or configuration"
        )
    )]
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
    #[command(
        after_help = READ_EXIT_CODES,
        after_long_help = concat!(
            "Examples:\n",
            "  tally migrate                                          # data/tally.db, or DATABASE_URL\n",
            "  DATABASE_URL=postgres://tally@db:5432/tally tally migrate\n",
            "\n",
            "Exit codes:\n",
            "  0  the database is up to date\n",
            "  1  the database could not be reached or migrated\n",
            "  2  bad usage or configuration"
        )
    )]
    Migrate,
    /// Checks the configuration, the pricing table and the customer map; lists every problem.
    #[command(
        after_help = "Exit codes:\n  0  the configuration is valid (and, with --reach, every peer answered)\n  1  --reach: a peer could not be reached or refused the sign-in\n  2  it is not: every problem is listed with its key, file, row or variable",
        after_long_help = concat!(
            "Examples:\n",
            "  tally check-config                                # every problem at once, with its origin\n",
            "  tally check-config --reach                        # then sign in to every peer, read a little\n",
            "  TALLY_ENV=production tally check-config\n",
            "  tally --config config/demo.toml check-config\n",
            "\n",
            "Exit codes:\n",
            "  0  the configuration is valid (and, with --reach, every peer answered)\n",
            "  1  --reach: a peer could not be reached or refused the sign-in\n",
            "  2  it is not: every problem is listed with its file:key, file:row:column or variable"
        )
    )]
    CheckConfig(check::CheckArgs),
    /// Serves the five simulators on loopback ports: billable users, CCC, Genesys Cloud,
    /// RamBase and ActivePlatform.
    ///
    /// A sandbox for trying configurations: the simulators enforce the vendors' auth, paging,
    /// limits and error shapes, with the demo's data set; config/demo.toml points at their
    /// default ports. It prints the secrets to export. Stop with Ctrl-C.
    #[command(
        after_help = "Exit codes:\n  0  stopped with Ctrl-C\n  1  a port is taken or config/demo.toml is missing",
        after_long_help = concat!(
            "Examples:\n",
            "  tally sim                                         # then, in another shell:\n",
            "  tally --config config/demo.toml run --period 2026-10 --dry-run\n",
            "  tally sim --rambase-port 9082                     # RamBase elsewhere\n",
            "\n",
            "Exit codes:\n",
            "  0  stopped with Ctrl-C\n",
            "  1  a port is taken or config/demo.toml is missing"
        )
    )]
    Sim(SimArgs),
    /// Runs the demo: simulators in-process, an SQLite file under ./data/, one sync of the demo
    /// month from three sources into two billing systems, the run summary and the invoice
    /// lines. Run it twice: the second pushes nothing.
    #[command(
        after_help = "Exit codes:\n  0  the demo ran (exceptions included, they are part of it)\n  1  the run failed",
        after_long_help = concat!(
            "Examples:\n",
            "  tally demo                       # state under ./data/; run it again: nothing is pushed\n",
            "  tally demo --data-dir /tmp/demo  # somewhere else; delete the folder to start over\n",
            "\n",
            "Exit codes:\n",
            "  0  the demo ran (exceptions included, they are part of it)\n",
            "  1  the run failed"
        )
    )]
    Demo(DemoArgs),
    /// Runs the jobs of [schedule] until SIGTERM/SIGINT, and serves /healthz and /metrics on
    /// [daemon] listen.
    ///
    /// Without [[schedule.jobs]], one job `nightly` at schedule.cron (default 02:30) in
    /// general.timezone: it syncs the current month to date as drafts (nothing pushed) and,
    /// during the first schedule.late_data_days days of a month, bills the previous month;
    /// after them that month is closed and only a manual `tally run --period` touches it. Each
    /// job's next run is logged in its zone and in UTC. Any number of daemons on one database
    /// run each tick once between them (the others log that they skipped it and who ran it);
    /// each tick's runs take the writer lease.
    #[command(
        after_help = "Exit codes:\n  0  stopped by SIGTERM/SIGINT after the run in progress stopped\n  1  the database could not be opened or daemon.listen could not be bound\n  2  bad usage or configuration (every problem, schedule.* and daemon.listen included)\n  5  a run in progress did not stop within general.shutdown_timeout_secs",
        after_long_help = concat!(
            "Examples:\n",
            "  TALLY_ENV=production tally daemon          # config/production.toml, JSON logs\n",
            "  tally --log-format json daemon\n",
            "  TALLY__SCHEDULE__CRON='0 0 3 * * *' tally daemon   # 03:00 every night\n",
            "  TALLY__DAEMON__LISTEN=0.0.0.0:9464 tally daemon     # /healthz and /metrics for others\n",
            "  curl -s localhost:9464/metrics | grep tally_runs_total\n",
            "\n",
            "Exit codes:\n",
            "  0  stopped by SIGTERM/SIGINT after the run in progress stopped\n",
            "  1  the database could not be opened or daemon.listen could not be bound\n",
            "  2  bad usage or configuration (every problem, schedule.* and daemon.listen included)\n",
            "  5  a run in progress did not stop within general.shutdown_timeout_secs"
        )
    )]
    Daemon,
    /// Times `tally run` of many billable users against a bare fetch of the same pages, on
    /// Postgres and SQLite, with the re-run and peak memory (see docs/PERFORMANCE.md).
    ///
    /// Prints a Markdown table of seconds, records/s, lines pushed, peak RSS and the ratios
    /// the speed goals are stated in. The goals are reported, not enforced.
    #[command(
        after_help = "Exit codes:\n  0  measured\n  1  a run failed or pushed other than one line per organization (then none), or DATABASE_URL is not set for --stores postgres\n  2  bad usage",
        after_long_help = concat!(
            "Examples:\n",
            "  tally bench --stores sqlite --sizes 10000\n",
            "  DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres tally bench --sizes 100000,1000000\n",
            "\n",
            "Exit codes:\n",
            "  0  measured\n",
            "  1  a run failed or pushed other than one line per organization (then none), or\n",
            "     DATABASE_URL is not set for --stores postgres\n",
            "  2  bad usage"
        )
    )]
    Bench(BenchArgs),
    /// Asks a running daemon's /healthz (--url, else TALLY__DAEMON__LISTEN, else
    /// 127.0.0.1:9464): exit 0 on 200, 1 otherwise. For a container's HEALTHCHECK.
    #[command(
        after_help = "Exit codes:\n  0  /healthz answered 200\n  1  any other answer, or none",
        after_long_help = concat!(
            "Examples:\n",
            "  tally healthcheck                                  # the daemon on this host\n",
            "  tally healthcheck --url http://10.0.0.5:9464/healthz --timeout 2\n",
            "\n",
            "Exit codes:\n",
            "  0  /healthz answered 200 (the store is reachable)\n",
            "  1  any other answer, or none"
        )
    )]
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Serves the accountants' review page: periods, lines by customer, each line's
    /// explanation, approval, push and exports, behind a sign-in (see docs/REVIEW.md).
    ///
    /// Listens on --listen, else serve.listen (127.0.0.1:8080), until SIGTERM/SIGINT. Users come
    /// from `tally user add`. Approving and pushing take the writer lease, as `tally approve` and
    /// `tally push` do; pushing needs the secrets of the billing systems the lines go to.
    #[command(
        after_help = "Exit codes:\n  0  stopped by SIGTERM/SIGINT\n  1  the database could not be opened or the address could not be bound\n  2  bad usage or configuration (serve.listen, serve.public_url, ...)",
        after_long_help = concat!(
            "Examples:\n",
            "  tally user add kari --role approver    # once: who may sign in\n",
            "  tally serve                             # http://127.0.0.1:8080/\n",
            "  tally serve --listen 0.0.0.0:8080       # for others (put TLS in front; set serve.public_url)\n",
            "\n",
            "Exit codes:\n",
            "  0  stopped by SIGTERM/SIGINT\n",
            "  1  the database could not be opened or the address could not be bound\n",
            "  2  bad usage or configuration (serve.listen, serve.public_url, ...)"
        )
    )]
    Serve(serve::ServeArgs),
    /// Adds, lists or removes the users of the review page (`tally serve`).
    ///
    /// `add` reads the password from a prompt on a terminal, else from the first line of
    /// standard input; never from an argument. Only its argon2id hash is stored.
    #[command(
        after_help = "Exit codes:\n  0  done\n  1  the state database could not be reached\n  2  bad usage: no password, a name that exists or does not",
        after_long_help = concat!(
            "Examples:\n",
            "  tally user add kari --role approver           # asks for the password\n",
            "  printf '%s\\n' \"$PASSWORD\" | tally user add ola --role viewer\n",
            "  tally user list\n",
            "  tally user remove ola                          # also ends its sessions\n",
            "\n",
            "Exit codes:\n",
            "  0  done\n",
            "  1  the state database could not be reached\n",
            "  2  bad usage: no password, a name that exists or does not"
        )
    )]
    User(user::UserArgs),
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
    if let Some(format) = cli.log_format {
        crate::observe::set_format_override(match format {
            LogFormatArg::Text => crate::config::LogFormat::Text,
            LogFormatArg::Json => crate::config::LogFormat::Json,
        });
    }
    let config = cli.config.clone();
    let load = move || Ok(Settings::load(config.as_deref())?);
    let load: Load<'_> = &load;
    // Commands that do not check the whole configuration (it would ask for secrets they do not
    // need) still refuse a `log.level` that would be half ignored.
    let load_logged = || -> anyhow::Result<Settings> {
        let settings = load()?;
        let problems = settings.log.problems();
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigError(problems).into())
        }
    };
    let load_logged: Load<'_> = &load_logged;
    match cli.command {
        Command::Run(args) => run::execute(args, load).await,
        Command::Lines(args) => ledger::lines(args, load_logged).await,
        Command::Runs(args) => ledger::runs(args, load_logged).await,
        Command::Approve(args) => approve::approve(args, load_logged).await,
        Command::Push(args) => approve::push(args, load_logged).await,
        Command::Migrate => {
            let settings = load_logged()?;
            init_tracing(&settings, None);
            let store = Store::connect(&settings.database_target()).await?;
            let applied = store.migrate().await?;
            println!(
                "{} database is up to date ({applied} migration(s) applied now)",
                store.backend()
            );
            Ok(exit::OK)
        }
        Command::CheckConfig(args) => check::execute(&args, cli.config.as_deref()).await,
        Command::Sim(args) => {
            sim::execute(&args).await?;
            Ok(exit::OK)
        }
        Command::Demo(args) => demo::execute(&args).await,
        Command::Daemon => daemon::execute(load).await,
        Command::Bench(args) => bench::execute(&args).await,
        Command::Healthcheck(args) => Ok(healthcheck::execute(&args).await),
        Command::Serve(args) => serve::execute(args, load_logged).await,
        Command::User(args) => user::execute(args, load_logged).await,
    }
}

/// Logs to stderr, as text or JSON (`--log-format`, else `[log]`); `RUST_LOG` wins over the
/// configured level; sqlx's and the scheduler's chatter stay at `warn` unless the filter names
/// them; colour only on a terminal ([`crate::observe::logging`]). A configured level that does
/// not parse logs at `info` until the configuration check that follows refuses it
/// ([`crate::config::LogSettings::problems`]).
pub fn init_tracing(settings: &Settings, default_level: Option<&str>) {
    crate::observe::init_logging(&settings.log, default_level);
}

/// Takes the writer lease for `command`, waiting up to `wait_secs` (a [`Busy`] error, exit 4,
/// names the holder).
pub(crate) async fn writer_lease(
    store: &Store,
    command: &str,
    wait_secs: u64,
) -> anyhow::Result<WriterLease> {
    store
        .acquire_writer(command, Duration::from_secs(wait_secs))
        .await
}

pub(crate) fn listen_for_signals(settings: &Settings, shutdown: &Shutdown) {
    shutdown.listen_for_signals(Duration::from_secs(settings.general.shutdown_timeout_secs));
}

/// The exit code of a finished run's status.
pub fn exit_code_of(status: RunStatus) -> i32 {
    status.exit_code()
}
