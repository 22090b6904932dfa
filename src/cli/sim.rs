//! `tally sim`: serves the five simulators with the demo's data until Ctrl-C, for trying
//! configurations by hand.

use crate::sim::{
    DEMO_ACCOUNT, DEMO_AP_RESELLER, DEMO_AP_TOKEN, DEMO_CCC_PASSWORD, DEMO_CCC_USERNAME,
    DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_PERIOD, DEMO_TOKEN, SimPorts, demo_secrets,
    demo_settings, genesys, start_sims,
};
use std::path::{Path, PathBuf};

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

/// `tally sim`: serves the five simulators until Ctrl-C.
pub async fn execute(args: &SimArgs) -> anyhow::Result<()> {
    let settings = demo_settings(Path::new("data"))?;
    super::init_tracing(&settings, Some("info"));
    let sims = start_sims(
        &settings,
        Some(&args.data_dir),
        SimPorts {
            billable_users: args.billable_users_port,
            rambase: args.rambase_port,
            ccc: args.ccc_port,
            genesys: args.genesys_port,
            activeplatform: args.activeplatform_port,
        },
    )
    .await?;
    println!(
        "Simulators of {DEMO_PERIOD}'s demo data (state in {}):",
        args.data_dir.display()
    );
    println!("  billable-users API  {}", sims.billable_users_url);
    println!("    headers: Authorization: Bearer {DEMO_TOKEN}   X-4me-Account: {DEMO_ACCOUNT}");
    println!("  CCC                 {}", sims.ccc_url);
    println!("    sign in: username {DEMO_CCC_USERNAME}, password {DEMO_CCC_PASSWORD}");
    println!("  Genesys Cloud       {} (api and login)", sims.genesys_url);
    for (name, org_id, client_id, secret) in genesys::DEMO_ORGS {
        println!("    org {name}: {org_id}, client {client_id} / {secret}");
    }
    println!("  RamBase             {}", sims.rambase_url);
    println!(
        "    token: POST {}oauth2/access_token with client_id={DEMO_CLIENT_ID} client_secret={DEMO_CLIENT_SECRET}",
        sims.rambase_url
    );
    println!("  ActivePlatform      {}", sims.activeplatform_url);
    println!("    api_token {DEMO_AP_TOKEN}, reseller {DEMO_AP_RESELLER}");
    println!("config/demo.toml points at these ports; give tally the secrets with:");
    for (var, value) in demo_secrets() {
        println!("  export {var}={value}");
    }
    println!("Ctrl-C stops them.");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
