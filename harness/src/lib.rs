//! ringside's harness: the backend registry, `harness serve` (a backend in its own
//! process), `harness list`, and the tooling that measures backends.
#![deny(rust_2018_idioms)]

pub mod analysis;
pub mod cli;
pub mod compare;
pub mod cores;
pub mod diff;
pub mod doctor;
pub mod duration;
#[cfg(debug_assertions)]
pub mod faulty;
pub mod load;
pub mod memcpy;
pub mod plot;
pub mod profile;
pub mod registry;
pub mod report;
pub mod results;
pub mod rlimit;
pub mod serve;
pub mod sysinfo;
pub mod topology;

/// Parses the process arguments and runs the chosen command.
pub fn run() -> anyhow::Result<()> {
    cli::parse_args().run()
}
