//! Command-line interface: one subcommand per concern, each dispatched to its module.

use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// ringside: what does each network I/O strategy cost on this box, for this workload?
#[derive(Debug, Parser)]
#[command(name = "harness", version, about, long_about = None)]
pub struct Cli {
    /// Print results and errors only: no progress, notes or file lists.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Colour in help and errors: auto (only on a terminal, and not under NO_COLOR),
    /// always or never.
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    pub color: clap::ColorChoice,
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
    /// Print a results file as a markdown write-up, a self-contained HTML page, CSV or
    /// JSON (one row per cell), or write one .hgrm percentile distribution per cell.
    Report(crate::report::ReportArgs),
    /// Print a shell completion script, e.g. `harness completions bash >
    /// /etc/bash_completion.d/harness`.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `harness man | man -l -`; `harness man load` for
    /// one subcommand's options.
    Man {
        /// A subcommand, for its own page (harness-load(1)).
        command: Option<String>,
    },
    /// Where each backend's CPU time goes at a fixed offered load: perf samples of the
    /// server, flamegraphs, and µs per request by category (TCP, epoll, io_uring, …).
    Profile(crate::profile::ProfileArgs),
    /// Compare two results files cell by cell (same workload and backend): ratios with
    /// intervals for throughput, CPU/req, syscalls/req and p99; --fail-above for CI.
    Diff(crate::diff::DiffArgs),
    /// Run one share of a load for a coordinating harness (`--client-procs`,
    /// `--topology netns`): JSON requests on stdin, a JSON report on stdout.
    #[command(long_about = crate::topology::agent::PROTOCOL_HELP)]
    Agent(crate::topology::agent::AgentArgs),
}

static QUIET: AtomicBool = AtomicBool::new(false);

/// True under `--quiet`: commands print their results and errors only.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Parses the process arguments, with help and errors coloured as `--color` asks (clap
/// reads the choice only after parsing, too late for its own messages).
pub fn parse_args() -> Cli {
    parse_from(std::env::args_os())
}

/// [`parse_args`] over `args`; exits with clap's message on bad input.
pub fn parse_from(args: impl IntoIterator<Item = OsString>) -> Cli {
    let args: Vec<OsString> = args.into_iter().collect();
    let cmd = Cli::command().color(color_choice(&args));
    let matches = cmd.get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The `--color` given in `args` (last wins), `auto` without one.
fn color_choice(args: &[OsString]) -> clap::ColorChoice {
    let mut choice = clap::ColorChoice::Auto;
    let mut it = args.iter().map(|a| a.to_string_lossy());
    while let Some(a) = it.next() {
        let value = match a.strip_prefix("--color") {
            Some("") => it.next().map(|v| v.into_owned()),
            Some(rest) => rest.strip_prefix('=').map(str::to_string),
            None => None,
        };
        choice = match value.as_deref() {
            Some("always") => clap::ColorChoice::Always,
            Some("never") => clap::ColorChoice::Never,
            Some("auto") => clap::ColorChoice::Auto,
            _ => choice,
        };
    }
    choice
}

impl Cli {
    /// Runs the parsed command.
    pub fn run(self) -> anyhow::Result<()> {
        QUIET.store(self.quiet, Ordering::Relaxed);
        match self.command {
            Command::List => crate::registry::print_list(&mut std::io::stdout().lock()),
            Command::Serve(args) => crate::serve::serve(args),
            Command::Compare(args) => crate::compare::run(args),
            Command::Doctor(args) => crate::doctor::run(args),
            Command::Load(args) => crate::load::run(args),
            Command::Plot(args) => crate::plot::run(args),
            Command::Report(args) => crate::report::run(args),
            Command::Completions { shell } => {
                let mut cmd = Cli::command();
                clap_complete::generate(shell, &mut cmd, "harness", &mut std::io::stdout());
                Ok(())
            }
            Command::Man { command } => man(command.as_deref(), &mut std::io::stdout().lock()),
            Command::Profile(args) => crate::profile::run(args),
            Command::Diff(args) => crate::diff::run(args),
            Command::Agent(args) => crate::topology::agent::run(args),
        }
    }
}

/// The man page `harness(1)`, or `harness-SUB(1)` for one subcommand with its options.
fn man(sub: Option<&str>, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    use anyhow::Context;
    let cmd = Cli::command();
    let page = match sub {
        None => cmd,
        Some(name) => {
            let version = cmd.get_version().unwrap_or("").to_string();
            let found = cmd
                .get_subcommands()
                .find(|s| s.get_name() == name)
                .cloned()
                .with_context(|| {
                    let names: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
                    format!("no subcommand `{name}`; one of: {}", names.join(", "))
                })?;
            found.name(format!("harness-{name}")).version(version)
        }
    };
    clap_mangen::Man::new(page)
        .render(out)
        .context("writing the man page to standard output")
}
