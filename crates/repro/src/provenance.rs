//! Where a result came from: commit, dirty flag, device, GPU and driver, libtorch, date and the
//! command. One struct serves the run records (`CellRecord::provenance`) and the
//! `provenance.json` of every result folder (`repro memory --out`, `repro provenance` in the GPU
//! scripts: `commands::provenance`). A field that is not known is `null`, never a guess.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Command;

/// The file a result folder's provenance is written to.
pub const FILE: &str = "provenance.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Commit of the code that ran: the one the binary was built from where the build recorded
    /// it (`scripts/gpu-bundle.sh` sets `DPZO_BUILD_COMMIT`), else `git rev-parse HEAD` of the
    /// working directory.
    pub git_commit: Option<String>,
    /// True when that code had uncommitted changes.
    pub git_dirty: Option<bool>,
    /// `cpu` or `cuda`.
    pub device: String,
    /// The GPU's name (`nvidia-smi`), on CUDA.
    #[serde(default)]
    pub gpu: Option<String>,
    /// The NVIDIA driver version (`nvidia-smi`), on CUDA.
    #[serde(default)]
    pub driver: Option<String>,
    /// libtorch release: the one the binary was built against where `repro` recorded it; in a
    /// folder reconstructed from a GPU host's notes, that host's PyTorch, whose libtorch the
    /// binary loaded.
    pub libtorch: Option<String>,
    /// UTC date and time (RFC 3339) of the run.
    pub date: Option<String>,
    pub host: Option<String>,
    pub repro_version: Option<String>,
    /// The command line that produced the result.
    #[serde(default)]
    pub command: Option<String>,
    /// `null` when `repro` recorded these fields as it ran; otherwise the files they were
    /// reconstructed from afterwards.
    #[serde(default)]
    pub reconstructed_from: Option<String>,
}

impl Provenance {
    /// This process's provenance on `device` (`cpu` or `cuda`), with its own command line.
    pub fn collect(device: &str) -> Provenance {
        let git = |args: &[&str]| {
            Command::new("git")
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let (git_commit, git_dirty) = match option_env!("DPZO_BUILD_COMMIT") {
            Some(commit) if !commit.is_empty() => (
                Some(commit.to_string()),
                option_env!("DPZO_BUILD_DIRTY").map(|d| d == "true"),
            ),
            _ => {
                let commit = git(&["rev-parse", "HEAD"]);
                let dirty = commit.as_ref().and_then(|_| {
                    git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty())
                });
                (commit, dirty)
            }
        };
        let date = Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        let (gpu, driver) = if device == "cuda" {
            nvidia_smi()
        } else {
            (None, None)
        };
        Provenance {
            git_commit,
            git_dirty,
            device: device.to_string(),
            gpu,
            driver,
            libtorch: Some(env!("DPZO_LIBTORCH_VERSION").to_string()),
            date,
            host: known_host_name(),
            repro_version: Some(env!("CARGO_PKG_VERSION").to_string()),
            command: Some(command_line()),
            reconstructed_from: None,
        }
    }

    /// Writes `dir/provenance.json` (atomically), creating `dir`.
    pub fn write_to_folder(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(FILE);
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        atomic_file::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Reads `dir/provenance.json`.
    #[cfg_attr(not(test), allow(dead_code))] // read by the tests of the committed folders
    pub fn read_from_folder(dir: &Path) -> Result<Provenance> {
        let path = dir.join(FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a provenance", path.display()))
    }
}

/// This machine's host name (`unknown` where the kernel does not say).
pub fn host_name() -> String {
    known_host_name().unwrap_or_else(|| "unknown".into())
}

fn known_host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
}

/// This process's command line, arguments separated by spaces (quoted where they hold one).
fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first GPU's name and the driver version, from `nvidia-smi` (`None` where it is absent).
pub fn nvidia_smi() -> (Option<String>, Option<String>) {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=name,driver_version", "--format=csv,noheader"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string());
    let Some(line) = out.as_deref().and_then(|s| s.lines().next()) else {
        return (None, None);
    };
    let mut parts = line.split(',').map(|s| s.trim().to_string());
    (parts.next(), parts.next())
}

/// A date is `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM[:SS]Z` (UTC).
pub fn check_date(date: &str) -> Result<()> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (day, time) = match date.split_once('T') {
        Some((day, time)) => (day, Some(time)),
        None => (date, None),
    };
    let day_ok = {
        let parts: Vec<&str> = day.split('-').collect();
        parts.len() == 3
            && parts.iter().all(|p| digits(p))
            && [4, 2, 2] == [parts[0].len(), parts[1].len(), parts[2].len()]
    };
    let time_ok = time.is_none_or(|t| {
        t.strip_suffix('Z').is_some_and(|t| {
            let parts: Vec<&str> = t.split(':').collect();
            (2..=3).contains(&parts.len()) && parts.iter().all(|p| digits(p) && p.len() == 2)
        })
    });
    if !(day_ok && time_ok) {
        bail!("--date {date}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]Z (UTC)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn dates_are_checked() {
        for ok in ["2026-11-30", "2026-11-30T16:11Z", "2026-11-30T16:11:05Z"] {
            check_date(ok).unwrap();
        }
        for bad in [
            "30.11.2026",
            "2026-11-30T16:11",
            "2026-11-30 16:11Z",
            "2026-1-30",
        ] {
            let e = check_date(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn a_collected_provenance_round_trips_and_names_its_command() {
        let p = Provenance::collect("cpu");
        assert_eq!((p.gpu.as_deref(), p.driver.as_deref()), (None, None));
        assert!(p.command.as_deref().is_some_and(|c| !c.is_empty()));
        assert_eq!(p.reconstructed_from, None);
        let dir = std::env::temp_dir().join(format!("dpzo-provenance-{}", std::process::id()));
        p.write_to_folder(&dir).unwrap();
        let back = Provenance::read_from_folder(&dir).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(back, p);
    }

    /// The GPU run folders of `results/perf` (each session folder's call folders, or the session
    /// folder itself where it has none) and `results/memory`'s comparison folder.
    fn committed_run_folders() -> Vec<PathBuf> {
        let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../results");
        let subdirs = |dir: &Path| -> Vec<PathBuf> {
            let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.is_dir())
                .collect();
            dirs.sort();
            dirs
        };
        let mut folders = vec![results.join("memory/h200")];
        for session in subdirs(&results.join("perf")) {
            let name = session.file_name().unwrap().to_string_lossy().into_owned();
            if !name.starts_with("h200-") {
                continue;
            }
            let calls = subdirs(&session);
            if calls.is_empty() {
                folders.push(session);
            } else {
                folders.extend(calls);
            }
        }
        folders
    }

    #[test]
    fn every_committed_gpu_run_folder_has_its_provenance() {
        let folders = committed_run_folders();
        assert!(folders.len() >= 20, "{folders:?}");
        for dir in folders {
            let p = Provenance::read_from_folder(&dir).unwrap_or_else(|e| panic!("{e:#}"));
            let commit_ok = p
                .git_commit
                .as_deref()
                .is_none_or(|c| c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(commit_ok, "{}: commit {:?}", dir.display(), p.git_commit);
            if let Some(date) = &p.date {
                check_date(date).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            }
            if dir.ends_with("memory/h200") {
                // Rendered on the CPU by `repro memory --compare-only`, as it ran.
                assert_eq!(p.reconstructed_from, None, "{}", dir.display());
                assert!(p.command.is_some_and(|c| c.contains("--compare-only")));
            } else {
                assert_eq!(p.device, "cuda", "{}", dir.display());
                // What repro wrote as it ran names its host; a reconstruction names its sources,
                // and each of them exists.
                match &p.reconstructed_from {
                    None => assert!(p.host.is_some(), "{}", dir.display()),
                    Some(sources) => {
                        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
                        for source in sources.split("; ") {
                            let file = source.split(' ').next().unwrap();
                            assert!(root.join(file).is_file(), "{}: {file}", dir.display());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn records_written_before_the_new_fields_still_read() {
        // A run record's provenance of 2026-11-30 (no gpu, driver, command).
        let old = r#"{"git_commit":"unknown","git_dirty":false,"device":"cpu",
            "libtorch":"2.11.0","date":"2026-11-30T10:00:00Z","host":"h","repro_version":"0.1.0"}"#;
        let p: Provenance = serde_json::from_str(old).unwrap();
        assert_eq!(p.git_dirty, Some(false));
        assert_eq!(p.command, None);
    }
}
