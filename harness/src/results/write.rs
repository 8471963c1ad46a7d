//! Reading and atomically writing results files.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::ResultsFile;

/// Writes `results` to `path` so that readers see either the old or the new file, never a
/// torn one: write a temp file beside it, fsync, rename over, fsync the directory (so the
/// rename itself survives a crash). A full disk fails the write of the temp file and leaves
/// the previous version in place; [`is_disk_full`] tells that error apart.
pub fn write_atomic(path: &Path, results: &ResultsFile) -> anyhow::Result<()> {
    write_atomic_via(path, results, |f, bytes| f.write_all(bytes))
}

/// [`write_atomic`] with the temp file's contents written by `write`: the seam through
/// which tests fail a write the way a full disk does.
#[doc(hidden)]
pub fn write_atomic_via(
    path: &Path,
    results: &ResultsFile,
    write: impl FnOnce(&mut fs::File, &[u8]) -> std::io::Result<()>,
) -> anyhow::Result<()> {
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
    let mut json = serde_json::to_vec_pretty(results).context("serializing results")?;
    json.push(b'\n');
    let written = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        write(&mut f, &json)?;
        f.sync_all()
    })();
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| {
            format!(
                "writing results to {} (earlier contents kept)",
                path.display()
            )
        });
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {} after writing results", dir.display()))
}

/// True when `e` (anywhere in its chain) is the disk or the quota being full.
pub fn is_disk_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|n| n == libc::ENOSPC || n == libc::EDQUOT)
    })
}

/// Claims a new results file name in `dir`: `{stem}.json`, or `{stem}-2.json`, `-3`, ...
/// when a run that started in the same second took it. The name is taken by creating the
/// (empty) file exclusively, so two runs racing for it cannot both get it.
pub fn claim_results_path(dir: &Path, stem: &str) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for n in 1..=1000 {
        let name = match n {
            1 => format!("{stem}.json"),
            n => format!("{stem}-{n}.json"),
        };
        let path = dir.join(name);
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(_) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }
    bail!(
        "{} already holds 1000 results files named {stem}*.json; choose another with --out",
        dir.display()
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ResultsFile {
        read_results(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/results.json"))
            .expect("the fixture parses")
    }

    #[test]
    fn a_full_disk_keeps_the_previous_version_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let mut r = sample();
        write_atomic(&path, &r).unwrap();
        r.cells.clear();
        let e = write_atomic_via(&path, &r, |f, bytes| {
            // Half the file lands, then the disk is full.
            f.write_all(&bytes[..bytes.len() / 2])?;
            Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
        })
        .unwrap_err();
        assert!(is_disk_full(&e), "{e:#}");
        assert!(format!("{e:#}").contains("earlier contents kept"), "{e:#}");
        assert_eq!(read_results(&path).unwrap(), sample());
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "temp file left behind: {left:?}");
        assert!(!is_disk_full(&anyhow::anyhow!("other")));
    }

    #[test]
    fn runs_started_in_the_same_second_get_their_own_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = claim_results_path(dir.path(), "compare-20261201-120000").unwrap();
        let b = claim_results_path(dir.path(), "compare-20261201-120000").unwrap();
        assert_ne!(a, b);
        assert!(a.ends_with("compare-20261201-120000.json"), "{a:?}");
        assert!(b.ends_with("compare-20261201-120000-2.json"), "{b:?}");
    }
}
