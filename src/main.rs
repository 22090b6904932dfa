//! The `tally` binary: parses the command line and hands over to the library.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = tally::cli::Cli::parse();
    let code = tally::cli::execute(cli).await;
    std::process::exit(code);
}
