//! `tally bench`: times a sync of many billable users end to end — the billable-users
//! simulator, a Postgres state store, pricing, the ledger and the RamBase simulator — and
//! reports records per second and memory. The figures go in docs/PERFORMANCE.md.

use crate::domain::{Period, Trigger};
use crate::pipeline::{self, App, RunOptions};
use crate::sim::billable_users::BillableUsersSim;
use crate::sim::rambase::RamBaseSim;
use crate::sim::{DEMO_ACCOUNT, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_TOKEN};
use crate::store::Store;
use anyhow::Context as _;
use secrecy::SecretString;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Organizations in the generated month.
    #[arg(long, default_value_t = 1_000)]
    pub orgs: usize,
    /// Billable people per organization.
    #[arg(long, default_value_t = 100)]
    pub people_per_org: usize,
}

/// Runs the benchmark; prints the figures.
pub async fn execute(args: &BenchArgs) -> anyhow::Result<i32> {
    let server = std::env::var("DATABASE_URL").context(
        "DATABASE_URL is not set: the benchmark measures the Postgres store (e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres)",
    )?;
    let period: Period = crate::sim::DEMO_PERIOD.parse()?;
    let work = tempfile::tempdir().context("creating a scratch folder")?;

    // The data: `orgs` organizations, each its own billing account on its own RamBase item.
    let people = BillableUsersSim::generate(period, args.orgs, args.people_per_org);
    let records = people.len();
    let orgs: Vec<String> = {
        let mut names: Vec<String> = people.iter().map(|p| p.organization.clone()).collect();
        names.sort();
        names.dedup();
        names
    };
    let mut customers = String::from("source,source_customer,billing_account\n");
    for (i, org) in orgs.iter().enumerate() {
        let _ = writeln!(customers, "billable_users,{org},ACC-{i:05}");
    }
    let customers_file = work.path().join("customers.csv");
    std::fs::write(&customers_file, customers)?;
    let pricing_file = work.path().join("pricing.csv");
    std::fs::write(
        &pricing_file,
        "price_id,license_type,customer,currency,model,tier_from,tier_to,unit_price,flat_fee,package_size,included_quantity,min_charge,effective_from,effective_to\n\
         SD,Service desk user,,EUR,graduated,1,50,12.50,,,,,2026-01-01,\n\
         SD,Service desk user,,EUR,graduated,51,,10.00,,,,,2026-01-01,\n",
    )?;

    let billable = BillableUsersSim::new(DEMO_TOKEN, DEMO_ACCOUNT);
    billable.set_people(period, people);
    // The documented quota (3,600 requests an hour) would make a large data set measure the
    // wait for the next window, not tally.
    billable.set_rate_limit(u32::MAX, std::time::Duration::from_secs(3_600));
    let rambase = RamBaseSim::new(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET);
    let period_id = 100_210;
    rambase.add_period(period_id, period.first_day(), period.last_day());
    let mut items = Vec::new();
    for i in 0..orgs.len() {
        let plan_id = 100_000 + i as u64;
        rambase.add_plan_item(plan_id, 1);
        items.push(crate::sinks::rambase::RamBaseItem {
            billing_account: format!("ACC-{i:05}"),
            license_type: "Service desk user".into(),
            plan_id,
            item_id: 1,
        });
    }
    let bu = billable
        .serve(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await?;
    let rb = rambase
        .serve(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await?;

    let database = Store::create_scratch_database(&server, "tally_bench").await?;
    let mut settings = crate::sim::demo_settings(work.path())?;
    settings.database.url = Some(database.clone());
    settings.billing.pricing_file = pricing_file;
    settings.billing.customers_file = customers_file;
    settings.billing.accounts.clear();
    // One source and one billing system: the benchmark measures the pipeline, not the demo.
    settings.sources.ccc = None;
    settings.sources.genesys = None;
    settings.sinks.activeplatform = None;
    if let Some(s) = settings.sources.billable_users.as_mut() {
        s.base_url = bu.base_url();
        s.token = Some(SecretString::from(DEMO_TOKEN));
        s.per_page = 100;
    }
    if let Some(s) = settings.sinks.rambase.as_mut() {
        s.base_url = rb.base_url();
        s.client_secret = Some(SecretString::from(DEMO_CLIENT_SECRET));
        s.items = items;
        s.period_ids = [(period.to_string(), period_id)].into_iter().collect();
    }
    super::init_tracing(&settings, Some("warn"));
    let app = App::build(settings).await?;

    let baseline = memory_kib("VmRSS");
    let started = Instant::now();
    let report = pipeline::run(
        &app,
        &RunOptions {
            period,
            source: None,
            dry_run: false,
            trigger: Trigger::Manual,
        },
    )
    .await?;
    let elapsed = started.elapsed();
    let peak = memory_kib("VmHWM");

    let rerun_started = Instant::now();
    let rerun = pipeline::run(
        &app,
        &RunOptions {
            period,
            source: None,
            dry_run: false,
            trigger: Trigger::Manual,
        },
    )
    .await?;
    let rerun_elapsed = rerun_started.elapsed();
    drop(app);
    Store::drop_scratch_database(&server, &database).await?;

    let secs = elapsed.as_secs_f64().max(f64::EPSILON);
    println!(
        "tally bench: {} organizations × {} people = {records} billable users, Postgres store",
        args.orgs, args.people_per_org
    );
    println!(
        "  first run:  {:.2} s, {:.0} records/s, {} lines pushed, status {}",
        secs,
        records as f64 / secs,
        report.summary.lines_pushed,
        report.summary.status
    );
    println!(
        "  re-run:     {:.2} s, {} lines pushed (unchanged: {})",
        rerun_elapsed.as_secs_f64(),
        rerun.summary.lines_pushed,
        rerun.summary.lines_unchanged
    );
    match (baseline, peak) {
        (Some(base), Some(peak)) => println!(
            "  memory:     peak RSS {:.1} MiB; growth during the run {:.1} MiB over the {:.1} MiB before it (simulators' data included)",
            peak as f64 / 1024.0,
            peak.saturating_sub(base) as f64 / 1024.0,
            base as f64 / 1024.0
        ),
        _ => println!("  memory:     not available on this platform (/proc/self/status)"),
    }
    let ok = report.summary.lines_pushed as usize == orgs.len() && rerun.summary.lines_pushed == 0;
    if !ok {
        eprintln!(
            "the benchmark's run did not end as expected: {:?}",
            report.summary
        );
    }
    Ok(if ok {
        super::exit::OK
    } else {
        super::exit::FAILED
    })
}

/// A memory figure of this process from /proc/self/status, in KiB (Linux).
fn memory_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
