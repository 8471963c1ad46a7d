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
    /// Compare backends: every backend × workload × repeat, server and load generator on
    /// separate pinned cores; writes a results file after every cell, then plots and a
    /// summary table.
    Compare(crate::compare::CompareArgs),
    /// Check this host for settings that would skew or break a comparison, with the exact
    /// command that fixes each (scripts/tune-host.sh applies them).
    Doctor(crate::doctor::DoctorArgs),
    /// Generate load against a server (any server) and measure it: closed or open loop,
    /// echo, http, churn, stream or idle.
    Load(crate::load::LoadArgs),
    /// Draw every chart a results file supports (SVG and PNG), by default into `plots/`
    /// beside the results file.
    Plot(crate::plot::PlotArgs),
    /// Print a results file as a markdown write-up or as CSV (one row per cell).
    Report(crate::report::ReportArgs),
    /// Compare two results files cell by cell (same workload and backend): ratios with
    /// intervals for throughput, CPU/req, syscalls/req and p99; --fail-above for CI.
    Diff(crate::diff::DiffArgs),
}

impl Cli {
    /// Runs the parsed command.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::List => crate::registry::print_list(&mut std::io::stdout().lock()),
            Command::Serve(args) => crate::serve::serve(args),
            Command::Compare(args) => crate::compare::run(args),
            Command::Doctor(args) => crate::doctor::run(args),
            Command::Load(args) => crate::load::run(args),
            Command::Plot(args) => crate::plot::run(args),
            Command::Report(args) => crate::report::run(args),
            Command::Diff(args) => crate::diff::run(args),
        }
    }
}
