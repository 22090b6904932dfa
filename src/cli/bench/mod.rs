//! `tally bench`: a benchmark that carries its own yardstick. At each size it serves a
//! generated month of billable users from pre-rendered pages, times a bare concurrent
//! fetch-and-parse of those pages, then times a real `tally run` of the month (extract, stage
//! with checkpoints, total, price, reconcile, push one line per organization to the file
//! sink) on a Postgres scratch database and on an SQLite file, and the unchanged re-run of
//! each. It prints the figures and the ratios the speed goals are stated in, as the Markdown
//! of docs/PERFORMANCE.md, so that anyone can reproduce them with one command.
//!
//! - `yardstick`: the bare fetch-and-parse.
//! - `child`: one `tally run` in a child process, with its wall time, CPU and peak memory.
//! - `table`: the Markdown.
//!
//! The pages server ([`crate::sim::fast_pages`]) lives in this process; the pipeline runs in
//! children that hold none of its data, so their peak memory is tally's alone.

mod child;
mod table;
mod yardstick;

use crate::pipeline::UsageError;
use crate::sim::fast_pages::{FastPages, FastPagesSpec};
use crate::sim::{DEMO_ACCOUNT, DEMO_PERIOD, DEMO_TOKEN};
use crate::store::Store;
use anyhow::{Context as _, bail};
use child::{Measured, RunCommand};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use table::{SizeResult, Step, StoreResult, thousands};

/// Where the state of a measured run lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// A scratch database on the server of `DATABASE_URL`, created and dropped by the bench.
    Postgres,
    /// A temporary SQLite file.
    Sqlite,
}

impl StoreKind {
    fn name(self) -> &'static str {
        match self {
            StoreKind::Postgres => "postgres",
            StoreKind::Sqlite => "sqlite",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Data sets to measure, in billable users, smallest first (each a multiple of
    /// --people-per-org); the peak-memory ratio compares the last with the first.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 100_000], conflicts_with = "orgs")]
    pub sizes: Vec<usize>,
    /// One data set of this many organizations instead of --sizes.
    #[arg(long)]
    pub orgs: Option<usize>,
    /// Billable people per organization.
    #[arg(long, default_value_t = 100)]
    pub people_per_org: usize,
    /// The state stores to run the pipeline on (Postgres needs DATABASE_URL).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [StoreKind::Postgres, StoreKind::Sqlite])]
    pub stores: Vec<StoreKind>,
    /// Records per page, for tally and the bare fetch alike (the API's largest is 100).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub per_page: u32,
    /// Bare fetches per size; the fastest is the yardstick.
    #[arg(long, default_value_t = 3)]
    pub bare_runs: usize,
}

impl BenchArgs {
    /// The (organizations, users) of each data set, smallest first.
    fn data_sets(&self) -> Result<Vec<(usize, usize)>, UsageError> {
        let usage = |text: String| Err(UsageError(text));
        let per_org = self.people_per_org;
        if per_org == 0 {
            return usage("--people-per-org must be at least 1".into());
        }
        if let Some(orgs) = self.orgs {
            if orgs == 0 {
                return usage("--orgs must be at least 1".into());
            }
            return Ok(vec![(orgs, orgs * per_org)]);
        }
        let mut sets = Vec::new();
        for &users in &self.sizes {
            if users == 0 || !users.is_multiple_of(per_org) {
                return usage(format!(
                    "--sizes {users}: a size must be a positive multiple of --people-per-org ({per_org})"
                ));
            }
            sets.push((users / per_org, users));
        }
        sets.sort_unstable();
        sets.dedup();
        Ok(sets)
    }
}

/// Runs the benchmark; prints the figures. Exit 1 when a run failed or pushed other than one
/// line per organization (first run) and none (re-run); the goals are reported, not enforced.
pub async fn execute(args: &BenchArgs) -> anyhow::Result<i32> {
    let data_sets = args.data_sets()?;
    let server = if args.stores.contains(&StoreKind::Postgres) {
        Some(std::env::var("DATABASE_URL").context(
            "DATABASE_URL is not set: the benchmark measures the Postgres store on a scratch \
             database of that server (e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres), \
             or run it with --stores sqlite",
        )?)
    } else {
        None
    };
    let exe = std::env::current_exe().context("finding the tally binary to run")?;
    let work = tempfile::tempdir().context("creating a scratch folder")?;
    let period = crate::sim::DEMO_PERIOD.parse::<crate::domain::Period>()?;

    let mut results = Vec::new();
    let mut failures = Vec::new();
    for (orgs, users) in data_sets {
        let dir = work.path().join(format!("{users}"));
        std::fs::create_dir_all(&dir)?;
        eprintln!(
            "tally bench: rendering {} users / {} orgs ...",
            thousands(users as u64),
            thousands(orgs as u64)
        );
        let pages = FastPages::start(FastPagesSpec {
            period,
            orgs,
            people_per_org: args.people_per_org,
            per_page: args.per_page as usize,
            token: DEMO_TOKEN.to_owned(),
            account: DEMO_ACCOUNT.to_owned(),
            // Far above the bare fetches and the runs of one size, so that nobody waits for a
            // window (the documented 3,600 an hour would measure the wait).
            hourly_budget: u64::from(u32::MAX),
        })?;
        eprintln!(
            "  {} pages, {:.1} MiB of JSON; bare fetch-and-parse x{} ...",
            thousands(pages.pages() as u64),
            pages.body_bytes() as f64 / 1_048_576.0,
            args.bare_runs.max(1)
        );
        let target = yardstick::Target {
            list_url: pages.list_url(),
            year: period.year(),
            month: period.month(),
            pages: pages.pages(),
            per_page: args.per_page as usize,
            token: DEMO_TOKEN.to_owned(),
            account: DEMO_ACCOUNT.to_owned(),
        };
        let (bare, parsed) = yardstick::best_of(&target, args.bare_runs).await?;
        if parsed != users {
            bail!("the bare fetch parsed {parsed} people, not {users}");
        }
        let files = write_tables(&dir, orgs)?;

        let mut stores = Vec::new();
        for &store in &args.stores {
            let dir = dir.join(store.name());
            std::fs::create_dir_all(&dir)?;
            let database = match store {
                StoreKind::Postgres => Some(
                    Store::create_scratch_database(
                        server.as_deref().unwrap_or_default(),
                        "tally_bench",
                    )
                    .await?,
                ),
                StoreKind::Sqlite => None,
            };
            let measured = measure_store(
                &exe,
                &dir,
                &files,
                &pages.base_url(),
                args.per_page,
                database.as_deref(),
            )
            .await;
            if let (Some(server), Some(database)) = (&server, &database) {
                Store::drop_scratch_database(server, database).await?;
            }
            let (first, rerun) = measured?;
            let sink_file = dir
                .join("invoices")
                .join(format!("invoice-lines-{period}.csv"));
            let rows = child::file_sink_rows(&sink_file);
            let label = format!("{} users on {}", thousands(users as u64), store.name());
            let first = first.map(|m| check(&m, orgs as u64, &label, "first run", &mut failures));
            let rerun = rerun.map(|m| check(&m, 0, &label, "re-run", &mut failures));
            if rows != orgs {
                failures.push(format!(
                    "{label}: the file sink holds {rows} lines, not one per organization ({orgs})"
                ));
            }
            stores.push(StoreResult {
                store: store.name(),
                first,
                rerun,
            });
        }
        drop(pages);
        results.push(SizeResult {
            orgs,
            records: users,
            bare,
            bare_runs: args.bare_runs.max(1),
            stores,
        });
    }

    println!(
        "tally bench, {DEMO_PERIOD}: per_page {}, {} people per organization, pipeline = \
         `tally run` into the file sink in a child process (peak RSS is its own)\n",
        args.per_page, args.people_per_org
    );
    print!("{}", table::render(&results));
    if failures.is_empty() {
        Ok(super::exit::OK)
    } else {
        for failure in &failures {
            eprintln!("tally bench: {failure}");
        }
        Ok(super::exit::FAILED)
    }
}

/// The two runs of one store: the first, and the unchanged re-run (skipped when the first
/// did not complete). `database` is the Postgres scratch database; `None` is SQLite.
async fn measure_store(
    exe: &Path,
    dir: &Path,
    files: &Tables,
    base_url: &str,
    per_page: u32,
    database: Option<&str>,
) -> anyhow::Result<(Option<Measured>, Option<Measured>)> {
    let config = dir.join("tally.toml");
    std::fs::write(
        &config,
        config_toml(dir, files, base_url, per_page, database.is_none()),
    )?;
    let mut env = vec![(
        crate::sources::billable_users::TOKEN_ENV.to_owned(),
        DEMO_TOKEN.to_owned(),
    )];
    if let Some(url) = database {
        // The environment, not the file: a server URL may carry a password.
        env.push(("DATABASE_URL".to_owned(), url.to_owned()));
    }
    let command = RunCommand {
        exe: exe.to_path_buf(),
        config,
        period: DEMO_PERIOD.to_owned(),
        env,
        out_dir: dir.to_path_buf(),
    };
    let mut runs = Vec::new();
    for label in ["first-run", "re-run"] {
        eprintln!("  {} {label} ...", dir.display());
        let command = command.clone();
        let measured = tokio::task::spawn_blocking(move || command.measure(label))
            .await
            .context("the measuring thread")??;
        let completed = measured.status.success();
        runs.push(measured);
        if !completed {
            break;
        }
    }
    let mut runs = runs.into_iter();
    Ok((runs.next(), runs.next()))
}

/// A measured run as a row of the table, with what it got wrong added to `failures`.
fn check(
    measured: &Measured,
    expected_pushes: u64,
    label: &str,
    step: &str,
    failures: &mut Vec<String>,
) -> Step {
    let pushed = measured.summary.as_ref().map(|s| s.lines_pushed);
    let mut as_expected = pushed == Some(expected_pushes);
    if !measured.status.success() {
        as_expected = false;
        let tail: Vec<&str> = measured.stderr.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        failures.push(format!(
            "{label}, {step}: `tally run` ended with {}:\n{}",
            measured.status,
            tail.join("\n")
        ));
    } else if !as_expected {
        failures.push(format!(
            "{label}, {step}: pushed {} lines, expected {expected_pushes}",
            pushed.map_or_else(|| "an unknown number of".to_owned(), |n| n.to_string())
        ));
    }
    Step {
        wall: measured.wall,
        cpu: measured.cpu,
        peak_rss_kib: measured.peak_rss_kib,
        lines_pushed: pushed,
        as_expected,
    }
}

/// The customer map and the pricing table of one size.
struct Tables {
    customers: PathBuf,
    pricing: PathBuf,
}

/// `orgs` organizations, each its own billing account, priced on a graduated tier.
fn write_tables(dir: &Path, orgs: usize) -> anyhow::Result<Tables> {
    let mut customers = String::from("source,source_customer,billing_account\n");
    for org in 0..orgs {
        let _ = writeln!(customers, "billable_users,Org {:04},ACC-{org:05}", org + 1);
    }
    let tables = Tables {
        customers: dir.join("customers.csv"),
        pricing: dir.join("pricing.csv"),
    };
    std::fs::write(&tables.customers, customers)?;
    std::fs::write(
        &tables.pricing,
        "price_id,license_type,customer,currency,model,tier_from,tier_to,unit_price,flat_fee,package_size,included_quantity,min_charge,effective_from,effective_to\n\
         SD,Service desk user,,EUR,graduated,1,50,12.50,,,,,2026-01-01,\n\
         SD,Service desk user,,EUR,graduated,51,,10.00,,,,,2026-01-01,\n",
    )?;
    Ok(tables)
}

/// The configuration of a measured run: the billable-users source on the pages server, the
/// file sink as the only billing system, and (for SQLite) the state file under `dir`.
fn config_toml(dir: &Path, files: &Tables, base_url: &str, per_page: u32, sqlite: bool) -> String {
    // JSON strings are TOML basic strings: any path is quoted right.
    let quote = |path: &Path| serde_json::to_string(&path.to_string_lossy()).unwrap_or_default();
    let database = if sqlite {
        let url = format!("sqlite://{}", dir.join("state").join("tally.db").display());
        format!(
            "[database]\nurl = {}\n\n",
            serde_json::to_string(&url).unwrap_or_default()
        )
    } else {
        String::new()
    };
    format!(
        "[general]\n\
         data_dir = {data}\n\
         timezone = \"UTC\"\n\n\
         {database}\
         [billing]\n\
         pricing_file = {pricing}\n\
         customers_file = {customers}\n\
         default_currency = \"EUR\"\n\
         default_sink = \"file\"\n\
         require_approval = false\n\n\
         [log]\n\
         format = \"text\"\n\
         level = \"warn\"\n\n\
         [sources.billable_users]\n\
         base_url = {base_url}\n\
         account = {account}\n\
         per_page = {per_page}\n\
         concurrency = {connections}\n\
         license_type = \"Service desk user\"\n\n\
         [sinks.file]\n\
         dir = {invoices}\n\
         format = \"csv\"\n",
        data = quote(&dir.join("data")),
        pricing = quote(&files.pricing),
        customers = quote(&files.customers),
        base_url = serde_json::to_string(base_url).unwrap_or_default(),
        account = serde_json::to_string(DEMO_ACCOUNT).unwrap_or_default(),
        invoices = quote(&dir.join("invoices")),
        // As many pages in flight as the yardstick has connections: the two read the same
        // pages the same way, and the ratio measures what tally does with them.
        connections = yardstick::CONNECTIONS,
    )
}
