//! `--json FILE`: the [`LoadReport`] as pretty JSON, written atomically (temporary file,
//! then rename) so a reader never sees half a report; and reading it back with a schema
//! version check.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use super::report::{LoadReport, SCHEMA_VERSION};

/// Writes `report` to `path` atomically.
pub fn write_report(path: &Path, report: &LoadReport) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("--json {}: not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> anyhow::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        serde_json::to_writer_pretty(&mut f, report)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    };
    write()
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("writing --json {}", path.display()))
}

/// Reads a report written by [`write_report`], refusing other schema versions.
pub fn read_report(path: &Path) -> anyhow::Result<LoadReport> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let version = v.get("schema_version").and_then(|x| x.as_u64());
    anyhow::ensure!(
        version == Some(SCHEMA_VERSION as u64),
        "{}: schema_version {:?}, this harness reads {SCHEMA_VERSION}",
        path.display(),
        version
    );
    serde_json::from_value(v).with_context(|| format!("decoding {}", path.display()))
}
