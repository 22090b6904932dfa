//! `tally demo`: the simulators in-process, an SQLite file under `./data/`, one sync of the
//! demo month from three sources into two billing systems, the summary and the lines.

use super::render;
use crate::domain::{Period, Trigger};
use crate::pipeline::{self, App, RunOptions};
use crate::sim::{DEMO_PERIOD, SimPorts, demo_settings, point_at, start_sims};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where the demo keeps its database and the simulators' state.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
}

/// `tally demo`.
pub async fn execute(args: &DemoArgs) -> anyhow::Result<i32> {
    let mut settings = demo_settings(&args.data_dir)?;
    super::init_tracing(&settings, None);
    let sims = start_sims(&settings, Some(&args.data_dir.join("sim")), SimPorts::ANY).await?;
    point_at(&mut settings, &sims);
    let usages_before = sims.rambase.usages().len();
    let corrections_before = sims.activeplatform.corrections().len();
    let app = App::build(settings).await?;
    let period: Period = DEMO_PERIOD.parse()?;
    println!(
        "tally demo: billing {period} from three sources (billable users, CCC, Genesys Cloud) into two billing systems (RamBase, ActivePlatform), all simulated"
    );
    println!(
        "  state: {}   simulators' state: {}\n",
        app.settings.general.data_dir.join("tally.db").display(),
        args.data_dir.join("sim").display()
    );
    let report = pipeline::run(
        &app,
        &RunOptions {
            period,
            source: None,
            dry_run: false,
            trigger: Trigger::Demo,
            customer: None,
            requested_by: None,
        },
    )
    .await?;
    let lines = app.store.ledger_lines(period, None).await?;
    println!("invoice lines of {period}:");
    print!("{}", render::lines_table(&lines));
    if !report.exceptions.is_empty() {
        println!("\nexceptions (reported, not billed):");
        print!("{}", render::exceptions_table(&report.exceptions));
    }
    println!();
    print!("{}", render::summary_text(&report.summary));
    let usages_after = sims.rambase.usages().len();
    let corrections_after = sims.activeplatform.corrections().len();
    println!(
        "\nRamBase simulator: received {} new usage(s) in this run; it holds {usages_after} in all.",
        usages_after - usages_before
    );
    println!(
        "ActivePlatform simulator: received {} new correction(s) in this run; it holds {corrections_after} in all.",
        corrections_after - corrections_before
    );
    if usages_after == usages_before && corrections_after == corrections_before {
        println!(
            "Nothing new was pushed: run the demo as often as you like, it never bills twice."
        );
    } else {
        println!("Run `cargo run --release -- demo` again: the second run pushes nothing.");
    }
    Ok(
        if report.summary.status == crate::domain::RunStatus::Failed {
            super::exit::FAILED
        } else {
            super::exit::OK
        },
    )
}
