//! Simulators of the systems tally talks to, faithful to the contracts in docs/connectors/: the sandbox of
//! `tally sim`, the backbone of `tally demo`, the benchmark and the tests. Each vendor's
//! simulator is in its own file (`fast_pages` serves the benchmark's pre-rendered billable-users
//! pages); this module holds the demo's data set and wiring.

pub mod activeplatform;
pub mod billable_users;
pub mod ccc;
pub mod fast_pages;
pub mod genesys;
pub mod rambase;
mod server;

use crate::config::Settings;
use crate::domain::Period;
use activeplatform::ActivePlatformSim;
use anyhow::Context as _;
use billable_users::{BillableUsersSim, Person};
use ccc::{CccSim, CccUser};
use genesys::GenesysSim;
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

/// Credentials of the other demo simulators (a sandbox's, not secrets).
pub const DEMO_CCC_USERNAME: &str = "tally-demo";
pub const DEMO_CCC_PASSWORD: &str = "demo-password";
pub const DEMO_AP_TOKEN: &str = "demo-ap-token";
pub const DEMO_AP_RESELLER: &str = "demo-reseller";

/// The demo's CCC services: (service GUID, seed, users). Initech's service is not in the
/// customer map: its ActivePlatform account is found by the custom attribute holding the
/// GUID. Acme's is mapped to the e-mail address of its ActivePlatform account.
pub const DEMO_CCC_SERVICES: &[(&str, u32, usize)] = &[
    ("6f9619ff-8b86-d011-b42d-00c04fc964ff", 7, 30),
    ("a1c3e5f7-0b2d-4e6f-8a1c-3e5f7a9b0001", 3, 12),
];

/// Where each simulator listens (0: any free port).
#[derive(Debug, Clone, Copy)]
pub struct SimPorts {
    pub billable_users: u16,
    pub rambase: u16,
    pub ccc: u16,
    pub genesys: u16,
    pub activeplatform: u16,
}

impl SimPorts {
    /// Any free ports (tests, `tally demo`).
    pub const ANY: SimPorts = SimPorts {
        billable_users: 0,
        rambase: 0,
        ccc: 0,
        genesys: 0,
        activeplatform: 0,
    };
}

/// The five simulators, serving.
pub struct RunningSims {
    pub billable_users: BillableUsersSim,
    pub rambase: RamBaseSim,
    pub ccc: CccSim,
    pub genesys: GenesysSim,
    pub activeplatform: ActivePlatformSim,
    pub billable_users_url: String,
    pub rambase_url: String,
    pub ccc_url: String,
    pub genesys_url: String,
    pub activeplatform_url: String,
    _handles: (
        billable_users::SimHandle,
        rambase::SimHandle,
        ccc::SimHandle,
        genesys::SimHandle,
        activeplatform::SimHandle,
    ),
}

/// Starts the simulators with the demo data, RamBase's plans, items and periods taken from
/// `settings`, and the billing systems' state kept in `state_dir` (if given).
pub async fn start_sims(
    settings: &Settings,
    state_dir: Option<&Path>,
    ports: SimPorts,
) -> anyhow::Result<RunningSims> {
    let period: Period = DEMO_PERIOD.parse()?;
    let billable = BillableUsersSim::new(DEMO_TOKEN, DEMO_ACCOUNT);
    billable.set_people(period, demo_people());
    let mut rambase = RamBaseSim::new(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET);
    let ccc_sim = CccSim::new(DEMO_CCC_USERNAME, DEMO_CCC_PASSWORD);
    for (guid, seed, users) in DEMO_CCC_SERVICES {
        ccc_sim.add_service(guid, CccUser::generate(*seed, *users, period));
    }
    let genesys_sim = GenesysSim::new();
    genesys_sim.load_demo(period);
    let mut ap = ActivePlatformSim::new(DEMO_AP_TOKEN, DEMO_AP_RESELLER);
    ap.add_demo_accounts();
    if let Some(dir) = state_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the simulators' folder {}", dir.display()))?;
        rambase = rambase.with_state_file(dir.join("rambase.json"))?;
        ap = ap.with_state_file(dir.join("activeplatform.json"))?;
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
    let at = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let bu = billable
        .serve(at(ports.billable_users))
        .await
        .context("starting the billable-users simulator")?;
    let rb = rambase
        .serve(at(ports.rambase))
        .await
        .context("starting the RamBase simulator")?;
    let cc = ccc_sim
        .serve(at(ports.ccc))
        .await
        .context("starting the CCC simulator")?;
    let gs = genesys_sim
        .serve(at(ports.genesys))
        .await
        .context("starting the Genesys Cloud simulator")?;
    let apx = ap
        .serve(at(ports.activeplatform))
        .await
        .context("starting the ActivePlatform simulator")?;
    Ok(RunningSims {
        billable_users_url: bu.base_url(),
        rambase_url: rb.base_url(),
        ccc_url: cc.base_url(),
        genesys_url: gs.base_url(),
        activeplatform_url: apx.base_url(),
        billable_users: billable,
        rambase,
        ccc: ccc_sim,
        genesys: genesys_sim,
        activeplatform: ap,
        _handles: (bu, rb, cc, gs, apx),
    })
}

/// Points a configuration at running simulators, with the credentials they accept.
pub fn point_at(settings: &mut Settings, sims: &RunningSims) {
    if let Some(s) = settings.sources.billable_users.as_mut() {
        s.base_url = sims.billable_users_url.clone();
        s.account = DEMO_ACCOUNT.to_owned();
        s.token = Some(SecretString::from(DEMO_TOKEN));
    }
    if let Some(s) = settings.sources.ccc.as_mut() {
        s.base_url = sims.ccc_url.clone();
        s.username = DEMO_CCC_USERNAME.to_owned();
        s.password = Some(SecretString::from(DEMO_CCC_PASSWORD));
    }
    if let Some(s) = settings.sources.genesys.as_mut() {
        s.api_base_url = Some(sims.genesys_url.clone());
        s.login_base_url = Some(sims.genesys_url.clone());
        for (name, org_id, client_id, secret) in genesys::DEMO_ORGS {
            if let Some(org) = s.orgs.get_mut(*name) {
                org.org_id = (*org_id).to_owned();
                org.client_id = (*client_id).to_owned();
                org.client_secret = Some(SecretString::from(*secret));
            }
        }
    }
    if let Some(s) = settings.sinks.rambase.as_mut() {
        s.base_url = sims.rambase_url.clone();
        s.client_id = DEMO_CLIENT_ID.to_owned();
        s.client_secret = Some(SecretString::from(DEMO_CLIENT_SECRET));
    }
    if let Some(s) = settings.sinks.activeplatform.as_mut() {
        s.base_url = sims.activeplatform_url.clone();
        s.reseller_id = DEMO_AP_RESELLER.to_owned();
        s.api_token = Some(SecretString::from(DEMO_AP_TOKEN));
    }
}

/// The environment variables that give a configuration the demo simulators' secrets, for a
/// `tally` process pointed at `tally sim`.
pub fn demo_secrets() -> Vec<(String, String)> {
    let mut vars = vec![
        (
            "TALLY__SOURCES__BILLABLE_USERS__TOKEN".to_owned(),
            DEMO_TOKEN.to_owned(),
        ),
        (
            "TALLY__SINKS__RAMBASE__CLIENT_SECRET".to_owned(),
            DEMO_CLIENT_SECRET.to_owned(),
        ),
        (
            "TALLY__SOURCES__CCC__PASSWORD".to_owned(),
            DEMO_CCC_PASSWORD.to_owned(),
        ),
        (
            "TALLY__SINKS__ACTIVEPLATFORM__API_TOKEN".to_owned(),
            DEMO_AP_TOKEN.to_owned(),
        ),
    ];
    for (name, _, _, secret) in genesys::DEMO_ORGS {
        vars.push((
            format!(
                "TALLY__SOURCES__GENESYS__ORGS__{}__CLIENT_SECRET",
                name.to_ascii_uppercase()
            ),
            (*secret).to_owned(),
        ));
    }
    vars
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
