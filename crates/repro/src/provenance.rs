//! Where a result came from: commit, dirty flag, device, libtorch, date.

use serde::{Deserialize, Serialize};
use std::process::Command;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Provenance {
    /// `git rev-parse HEAD` of the checkout the binary ran in, or `unknown` outside git.
    pub git_commit: String,
    /// True when the checkout had uncommitted changes.
    pub git_dirty: bool,
    pub device: String,
    /// libtorch the binary was built against.
    pub libtorch: String,
    /// UTC date and time (RFC 3339) of the run.
    pub date: String,
    pub host: String,
    pub repro_version: String,
}

impl Provenance {
    pub fn collect(device: &str) -> Provenance {
        let git = |args: &[&str]| {
            Command::new("git")
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let git_commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
        let git_dirty = git(&["status", "--porcelain", "--untracked-files=no"])
            .map(|s| !s.is_empty())
            .unwrap_or(false);
        let date = Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let host = host_name();
        Provenance {
            git_commit,
            git_dirty,
            device: device.to_string(),
            libtorch: env!("DPZO_LIBTORCH_VERSION").to_string(),
            date,
            host,
            repro_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// This machine's host name (`unknown` where the kernel does not say).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
