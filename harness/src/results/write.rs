//! Reading and atomically writing results files.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};

use super::ResultsFile;

/// Writes `results` to `path` so that readers see either the old or the new file, never a
/// torn one: write a temp file beside it, fsync, rename over. A full disk fails the write
/// of the temp file and leaves the previous version in place.
pub fn write_atomic(path: &Path, results: &ResultsFile) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_name()
        .context("results path has no file name")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let json = serde_json::to_vec_pretty(results).context("serializing results")?;
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| {
            format!(
                "writing results to {} (earlier contents kept)",
                path.display()
            )
        });
    }
    Ok(())
}

/// Reads a results file of this or an earlier schema version.
pub fn read_results(path: &Path) -> anyhow::Result<ResultsFile> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let Some(version) = v.get("schema_version").and_then(|s| s.as_u64()) else {
        bail!(
            "{} is not a ringside results file (no schema_version)",
            path.display()
        );
    };
    let v = super::upgrade::to_current(v, version)
        .with_context(|| format!("{} cannot be read", path.display()))?;
    serde_json::from_value(v)
        .with_context(|| format!("{} does not match the results schema", path.display()))
}
