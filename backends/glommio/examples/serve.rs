//! Serves the glommio backend on one core until stdin closes, for manual checks with `ab`
//! or `wrk` before the harness offers it:
//!
//! ```text
//! cargo run --release -p backend-glommio --example serve -- http 8080 0
//! ```
//!
//! Arguments: service (echo|http), port, core. Prints the address, then the run report.

use std::io::Read;
use std::sync::Arc;

use backend_api::runner::{self, ServerConfig};
use backend_api::Service;
use backend_glommio::Glommio;

fn main() {
    if let Err(e) = run() {
        eprintln!("Error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let service: Service = args.first().map_or("http", String::as_str).parse()?;
    let port: u16 = args.get(1).map_or(Ok(8080), |p| p.parse())?;
    let core: usize = match args.get(2) {
        Some(c) => c.parse()?,
        None => runner::usable_cores().first().copied().unwrap_or(0),
    };
    let mut config = ServerConfig::new(service, vec![core]);
    config.listen.set_port(port);
    let server = runner::start(Arc::new(Glommio), config)?;
    println!("glommio {service} on {} (core {core})", server.local_addr());
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    let report = server.stop()?;
    println!("{:?}", report.total);
    Ok(())
}
