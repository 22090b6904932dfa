//! The `tally` binary: parses the command line and hands over to the library.

// The command's future nests every step of a run (its types, not its runtime depth): its layout
// needs more than the compiler's default query depth of 128.
#![recursion_limit = "256"]

use clap::Parser;

#[tokio::main]
async fn main() {
    // Before anything prints: `tally lines | head -1` ends quietly (docs/OPERATIONS.md).
    tally::observe::pipe::exit_quietly_on_broken_pipe();
    let cli = tally::cli::Cli::parse();
    let code = tally::cli::execute(cli).await;
    std::process::exit(code);
}
