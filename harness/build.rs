//! Records the compiler and the versions of the crates that shape the results, so every
//! results manifest can say exactly what was measured.

use std::process::Command;

const CRATES: [&str; 8] = [
    "io-uring",
    "glommio",
    "tokio",
    "libc",
    "httparse",
    "hdrhistogram",
    "plotters",
    "socket2",
];

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    println!("cargo:rustc-env=RINGSIDE_RUSTC={}", version.trim());

    let lock = std::fs::read_to_string("../Cargo.lock").unwrap_or_default();
    let mut found = Vec::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take()) {
            if CRATES.contains(&n.as_str())
                && !found.iter().any(|(f, _): &(String, String)| *f == n)
            {
                found.push((n, v.trim_matches('"').to_string()));
            }
        }
    }
    let list: Vec<String> = found.iter().map(|(n, v)| format!("{n}={v}")).collect();
    println!("cargo:rustc-env=RINGSIDE_CRATES={}", list.join(","));
    println!("cargo:rerun-if-changed=../Cargo.lock");
    println!("cargo:rerun-if-changed=build.rs");
}
