//! Command-line interface: one subcommand per concern, each dispatched to its module.

use clap::{Parser, Subcommand};

/// ringside: what does each network I/O strategy cost on this box, for this workload?
#[derive(Debug, Parser)]
#[command(name = "harness", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The harness's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every registered backend and whether it runs on this machine.
    List,
    /// Run one backend as a server until SIGINT, SIGTERM or end of standard input.
    Serve(crate::serve::ServeArgs),
}

impl Cli {
    /// Runs the parsed command.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::List => crate::registry::print_list(&mut std::io::stdout().lock()),
            Command::Serve(args) => crate::serve::serve(args),
        }
    }
}
