//! The `harness` binary: everything lives in the library so tests can run the CLI in-process.

fn main() {
    if let Err(e) = harness::run() {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
