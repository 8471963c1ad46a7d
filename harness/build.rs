//! Records the compiler and the versions of the crates the project's own crates depend on
//! directly (as resolved in Cargo.lock), so every results manifest can say exactly what
//! was measured. A crate that appears in several versions is recorded with the versions
//! the workspace's crates use, not with whatever a dependency of a dependency pulled in.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// One `[[package]]` of Cargo.lock.
#[derive(Default)]
struct Package {
    name: String,
    version: String,
    /// Workspace members have no source.
    local: bool,
    dependencies: Vec<String>,
}

fn packages(lock: &str) -> Vec<Package> {
    let mut all = Vec::new();
    let mut cur: Option<Package> = None;
    let mut in_deps = false;
    for line in lock.lines() {
        let line = line.trim();
        if line == "[[package]]" {
            all.extend(cur.take());
            cur = Some(Package {
                local: true,
                ..Default::default()
            });
            in_deps = false;
            continue;
        }
        let Some(p) = cur.as_mut() else { continue };
        if in_deps {
            if line == "]" {
                in_deps = false;
            } else {
                p.dependencies
                    .push(line.trim_end_matches(',').trim_matches('"').to_string());
            }
        } else if let Some(v) = line.strip_prefix("name = ") {
            p.name = v.trim_matches('"').to_string();
        } else if let Some(v) = line.strip_prefix("version = ") {
            p.version = v.trim_matches('"').to_string();
        } else if line.starts_with("source = ") {
            p.local = false;
        } else if line == "dependencies = [" {
            in_deps = true;
        }
    }
    all.extend(cur);
    all
}

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
    let all = packages(&lock);
    let local: BTreeSet<&str> = all
        .iter()
        .filter(|p| p.local)
        .map(|p| p.name.as_str())
        .collect();
    // A dependency is written "name" when only one version is locked, "name version"
    // when several are.
    let mut versions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for dep in all.iter().filter(|p| p.local).flat_map(|p| &p.dependencies) {
        let (name, version) = match dep.split_once(' ') {
            Some((n, v)) => (n, Some(v)),
            None => (dep.as_str(), None),
        };
        if local.contains(name) {
            continue;
        }
        let v = version.map(str::to_string).or_else(|| {
            all.iter()
                .find(|p| p.name == name)
                .map(|p| p.version.clone())
        });
        if let Some(v) = v {
            versions.entry(name.to_string()).or_default().insert(v);
        }
    }
    let list: Vec<String> = versions
        .iter()
        .map(|(n, v)| format!("{n}={}", v.iter().cloned().collect::<Vec<_>>().join(" ")))
        .collect();
    println!("cargo:rustc-env=RINGSIDE_CRATES={}", list.join(","));
    println!("cargo:rerun-if-changed=../Cargo.lock");
    println!("cargo:rerun-if-changed=build.rs");
}
