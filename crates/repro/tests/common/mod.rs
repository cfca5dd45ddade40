//! Helpers shared by the CLI tests: run the built `repro` binary on a command line and read its
//! JSON line or its one-line error.
// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use std::process::{Command, Output};

/// `repro` with a whitespace-separated command line (no argument may contain spaces).
pub fn repro_line(line: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repro"))
        .args(line.split_whitespace())
        .output()
        .expect("the repro binary runs")
}

/// Fails with the command's stderr unless it exited successfully.
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}; stderr {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Fails unless the command exited unsuccessfully; returns its stderr.
pub fn refused(output: &Output) -> String {
    assert!(!output.status.success(), "expected a refusal, got exit 0");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Parses the last stdout line as JSON, failing with the full output otherwise.
pub fn last_json(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "exit {:?}; stdout {stdout}; stderr {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().last().expect("some stdout");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// Asserts that `line` exits non-zero with one `error:` line on stderr that contains `needle`.
pub fn assert_fails_naming(line: &str, needle: &str) {
    let output = repro_line(line);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{line:?} succeeded");
    assert_eq!(stderr.trim().lines().count(), 1, "{line:?}: {stderr}");
    assert!(stderr.starts_with("error:"), "{line:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{line:?}: {stderr} lacks {needle:?}"
    );
}
