//! Simulators of the systems tally talks to, faithful to `shared/APIS.md`: the sandbox of
//! `tally sim`, the backbone of `tally demo`, the benchmark and the tests. Each vendor's
//! simulator is in its own file; this module holds the demo's data set and wiring.

pub mod activeplatform;
mod bench;
pub mod billable_users;
pub mod ccc;
pub mod genesys;
pub mod rambase;

pub use bench::bench;

use crate::cli::{DemoArgs, SimArgs};
use crate::config::Settings;
use crate::domain::{Period, Trigger};
use crate::pipeline::{self, App, RunOptions};
use crate::report;
use anyhow::Context as _;
use billable_users::{BillableUsersSim, Person};
use rambase::RamBaseSim;
use secrecy::SecretString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// The month the demo bills.
pub const DEMO_PERIOD: &str = "2026-10";
/// Credentials the demo simulators accept (they are a sandbox's, not secrets).
pub const DEMO_TOKEN: &str = "demo-token";
pub const DEMO_ACCOUNT: &str = "demo-reseller";
pub const DEMO_CLIENT_ID: &str = "tally-demo";
pub const DEMO_CLIENT_SECRET: &str = "demo-secret";

/// The demo's organizations and how many billable people each has. "Hooli Labs" is missing
/// from the demo customer map on purpose: it shows as an exception.
pub const DEMO_ORGS: &[(&str, &str, usize)] = &[
    ("Acme Corporation", "acme.example", 12),
    ("Globex Nordic AS", "globex.example", 7),
    ("Initech", "initech.example", 25),
    ("Umbrella Health", "umbrella.example", 3),
    ("Hooli Labs", "hooli.example", 4),
];

const FIRST_NAMES: &[&str] = &[
    "Abbie", "Ashok", "Berit", "Carlos", "Dagny", "Elif", "Frode", "Grace", "Hiro", "Ingrid",
    "Jonas", "Kari", "Lars", "Maja", "Nils", "Olga", "Per", "Rania", "Sven", "Tove",
];
const LAST_NAMES: &[&str] = &[
    "Lindt", "Kumar", "Hansen", "Olsen", "Berg", "Haugen", "Dahl", "Moen", "Lie", "Bakke",
];

/// The demo month's billable people, as the service-management API lists them: one person of
/// Globex appears twice (on two pages), and is billed once.
pub fn demo_people() -> Vec<Person> {
    let mut people = Vec::new();
    let mut id = 500u64;
    for (org, domain, count) in DEMO_ORGS {
        for i in 0..*count {
            id += 1;
            let first = FIRST_NAMES[(id as usize) % FIRST_NAMES.len()];
            let last = LAST_NAMES[(id as usize / 3) % LAST_NAMES.len()];
            people.push(Person {
                id,
                primary_email: format!(
                    "{}.{}{}@{domain}",
                    first.to_lowercase(),
                    last.to_lowercase(),
                    i
                ),
                name: format!("{first} {last}"),
                organization: (*org).to_owned(),
                business_unit: (i % 3 == 0).then(|| format!("{org} IT")),
                region: "Europe".to_owned(),
                sign_ins: (id * 7) % 40,
                last_visit: (i % 4 != 0).then(|| "2026-10-28T09:15:00+02:00".to_owned()),
                updates: (id * 13) % 90,
            });
        }
    }
    if let Some(globex) = people
        .iter()
        .find(|p| p.organization == "Globex Nordic AS")
        .cloned()
    {
        people.push(globex);
    }
    people
}

/// The two simulators, serving.
pub struct RunningSims {
    pub billable_users: BillableUsersSim,
    pub rambase: RamBaseSim,
    pub billable_users_url: String,
    pub rambase_url: String,
    _handles: (billable_users::SimHandle, rambase::SimHandle),
}

/// Starts both simulators with the demo data, RamBase's plans, items and periods taken from
/// `settings`, and RamBase's state kept in `state_dir` (if given).
pub async fn start_sims(
    settings: &Settings,
    state_dir: Option<&Path>,
    ports: (u16, u16),
) -> anyhow::Result<RunningSims> {
    let period: Period = DEMO_PERIOD.parse()?;
    let billable = BillableUsersSim::new(DEMO_TOKEN, DEMO_ACCOUNT);
    billable.set_people(period, demo_people());
    let mut rambase = RamBaseSim::new(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET);
    if let Some(dir) = state_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the simulators' folder {}", dir.display()))?;
        rambase = rambase.with_state_file(dir.join("rambase.json"))?;
    }
    if let Some(rb) = &settings.sinks.rambase {
        for item in &rb.items {
            rambase.add_plan_item(item.plan_id, item.item_id);
        }
        for (month, period_id) in &rb.period_ids {
            let p: Period = month.parse()?;
            rambase.add_period(*period_id, p.first_day(), p.last_day());
        }
    }
    let bu = billable
        .serve(SocketAddr::from((Ipv4Addr::LOCALHOST, ports.0)))
        .await
        .context("starting the billable-users simulator")?;
    let rb = rambase
        .serve(SocketAddr::from((Ipv4Addr::LOCALHOST, ports.1)))
        .await
        .context("starting the RamBase simulator")?;
    Ok(RunningSims {
        billable_users_url: bu.base_url(),
        rambase_url: rb.base_url(),
        billable_users: billable,
        rambase,
        _handles: (bu, rb),
    })
}

/// Points a configuration at running simulators, with the credentials they accept.
pub fn point_at(settings: &mut Settings, sims: &RunningSims) {
    if let Some(s) = settings.sources.billable_users.as_mut() {
        s.base_url = sims.billable_users_url.clone();
        s.account = DEMO_ACCOUNT.to_owned();
        s.token = Some(SecretString::from(DEMO_TOKEN));
    }
    if let Some(s) = settings.sinks.rambase.as_mut() {
        s.base_url = sims.rambase_url.clone();
        s.client_id = DEMO_CLIENT_ID.to_owned();
        s.client_secret = Some(SecretString::from(DEMO_CLIENT_SECRET));
    }
}

/// The demo's configuration: `config/demo.toml` with no environment overlay (a
/// `DATABASE_URL` meant for something else must not send the demo there).
pub fn demo_settings(data_dir: &Path) -> anyhow::Result<Settings> {
    let path = PathBuf::from("config/demo.toml");
    if !path.is_file() {
        anyhow::bail!("config/demo.toml not found: run `tally demo` from the repository root");
    }
    let mut settings = Settings::load_files(&[path], false)?;
    settings.general.data_dir = data_dir.to_path_buf();
    settings.database.url = None;
    Ok(settings)
}

/// `tally demo`.
pub async fn demo(args: &DemoArgs) -> anyhow::Result<i32> {
    let mut settings = demo_settings(&args.data_dir)?;
    crate::cli::init_tracing(&settings, None);
    let sims = start_sims(&settings, Some(&args.data_dir.join("sim")), (0, 0)).await?;
    point_at(&mut settings, &sims);
    let held_before = sims.rambase.usages().len();
    let app = App::build(settings).await?;
    let period: Period = DEMO_PERIOD.parse()?;
    println!(
        "tally demo: billing {period} from the billable-users simulator into the RamBase simulator"
    );
    println!(
        "  state: {}   simulators: {} and {}\n",
        app.settings.general.data_dir.join("tally.db").display(),
        sims.billable_users_url,
        sims.rambase_url
    );
    let report = pipeline::run(
        &app,
        &RunOptions {
            period,
            source: None,
            dry_run: false,
            trigger: Trigger::Demo,
        },
    )
    .await?;
    let lines = app.store.ledger_lines(period, None).await?;
    println!("invoice lines of {period}:");
    print!("{}", report::lines_table(&lines));
    if !report.exceptions.is_empty() {
        println!("\nexceptions (reported, not billed):");
        print!("{}", report::exceptions_table(&report.exceptions));
    }
    println!();
    print!("{}", report::summary_text(&report.summary));
    let held_after = sims.rambase.usages().len();
    println!(
        "\nRamBase simulator: received {} new usage(s) in this run; it holds {held_after} in all.",
        held_after - held_before
    );
    if held_after == held_before {
        println!(
            "Nothing new was pushed: run the demo as often as you like, it never bills twice."
        );
    } else {
        println!("Run `cargo run --release -- demo` again: the second run pushes nothing.");
    }
    Ok(
        if report.summary.status == crate::domain::RunStatus::Failed {
            crate::cli::exit::FAILED
        } else {
            crate::cli::exit::OK
        },
    )
}

/// `tally sim`: serves both simulators until Ctrl-C.
pub async fn serve_command(args: &SimArgs) -> anyhow::Result<()> {
    let settings = demo_settings(Path::new("data"))?;
    crate::cli::init_tracing(&settings, Some("info"));
    let sims = start_sims(
        &settings,
        Some(&args.data_dir),
        (args.billable_users_port, args.rambase_port),
    )
    .await?;
    println!("billable-users API simulator: {}", sims.billable_users_url);
    println!(
        "  headers: Authorization: Bearer {DEMO_TOKEN}   X-4me-Account: {DEMO_ACCOUNT}   (data for {DEMO_PERIOD})"
    );
    println!("RamBase simulator:            {}", sims.rambase_url);
    println!(
        "  token: POST {}oauth2/access_token with client_id={DEMO_CLIENT_ID} client_secret={DEMO_CLIENT_SECRET}",
        sims.rambase_url
    );
    println!("  state: {}", args.data_dir.join("rambase.json").display());
    println!(
        "Point a configuration at them with TALLY__SOURCES__BILLABLE_USERS__TOKEN={DEMO_TOKEN} and TALLY__SINKS__RAMBASE__CLIENT_SECRET={DEMO_CLIENT_SECRET}."
    );
    println!("Ctrl-C stops them.");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
