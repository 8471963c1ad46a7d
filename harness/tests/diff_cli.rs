//! `harness diff` on the committed reference run: against itself every ratio is 1.00× and
//! it exits 0; against a copy that spends 10% more CPU per request, `--fail-above 5` fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/compare-20261123-055510.json");
    let dst = dir.join("a.json");
    std::fs::copy(&src, &dst).unwrap();
    dst
}

fn diff(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .arg("diff")
        .args(args)
        .output()
        .unwrap()
}

fn show(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every "N.NN×" in `text`.
fn ratios(text: &str) -> Vec<&str> {
    text.split_whitespace()
        .filter(|w| w.ends_with('×') && w.len() > 2)
        .collect()
}

#[test]
fn a_file_against_itself_is_unchanged_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(dir.path());
    for format in ["terminal", "markdown"] {
        let out = diff(&[
            f.as_os_str(),
            f.as_os_str(),
            "--format".as_ref(),
            format.as_ref(),
            "--fail-above".as_ref(),
            "0".as_ref(),
        ]);
        assert!(out.status.success(), "{}", show(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let rs = ratios(&stdout);
        assert!(rs.len() > 100, "too few ratios:\n{stdout}");
        assert!(rs.iter().all(|r| *r == "1.00×"), "{rs:?}");
        assert!(!stdout.contains('✗'));
    }
}

#[test]
fn ten_percent_more_cpu_per_request_fails_a_five_percent_gate() {
    let dir = tempfile::tempdir().unwrap();
    let a = fixture(dir.path());
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&a).unwrap()).unwrap();
    for cell in v["cells"].as_array_mut().unwrap() {
        let server = &mut cell["server"];
        for k in ["cpu_user_us_per_req", "cpu_sys_us_per_req"] {
            if let Some(x) = server[k].as_f64() {
                server[k] = serde_json::json!(x * 1.1);
            }
        }
    }
    let b = dir.path().join("b.json");
    std::fs::write(&b, serde_json::to_string(&v).unwrap()).unwrap();

    let out = diff(&[
        a.as_os_str(),
        b.as_os_str(),
        "--fail-above".as_ref(),
        "5".as_ref(),
    ]);
    assert!(!out.status.success(), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("CPU/req") && stderr.contains("1.10×"),
        "{stderr}"
    );
    assert!(!stderr.contains("throughput"), "only CPU changed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1.10× ✗"), "{stdout}");

    // The same 10% passes a 15% gate, and without a gate diff only reports.
    for extra in [&["--fail-above", "15"][..], &[]] {
        let mut args = vec![a.as_os_str(), b.as_os_str()];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        let out = diff(&args);
        assert!(out.status.success(), "{extra:?}: {}", show(&out));
    }
}
