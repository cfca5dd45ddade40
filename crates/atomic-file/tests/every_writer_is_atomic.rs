//! The audit as a test: no library or command source in the workspace writes a result file
//! directly (`std::fs::write`, `File::create`, `csv::Writer::from_path`, `SVGBackend::new`,
//! safetensors' `serialize_to_file`); they all go through this crate. The only exceptions are
//! writes that are not results, listed here with their reason.

use std::path::{Path, PathBuf};

/// (file suffix, line fragment): direct writes that are not results.
const ALLOWED: [(&str, &str); 1] = [
    // A kernel control file, not a result.
    ("repro/src/commands/load_memory.rs", "/proc/self/clear_refs"),
];

const DIRECT: [&str; 6] = [
    "std::fs::write(",
    "fs::write(",
    "File::create(",
    "Writer::from_path(",
    "SVGBackend::new(",
    "serialize_to_file(",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_source_writes_a_result_file_directly() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for krate in std::fs::read_dir(&crates).unwrap().flatten() {
        let src = krate.path().join("src");
        if src.is_dir() && !krate.path().ends_with("atomic-file") {
            sources(&src, &mut files);
        }
    }
    assert!(files.len() > 50, "found only {} sources", files.len());
    let mut offenders = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests inside a source file may write scratch files.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (number, line) in code.lines().enumerate() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("//") || !DIRECT.iter().any(|d| line.contains(d)) {
                continue;
            }
            let shown = file.display().to_string();
            if ALLOWED
                .iter()
                .any(|(suffix, fragment)| shown.ends_with(suffix) && line.contains(fragment))
            {
                continue;
            }
            offenders.push(format!("{shown}:{}: {}", number + 1, line.trim()));
        }
    }
    assert!(
        offenders.is_empty(),
        "direct writes (use atomic_file::write or write_with):\n{}",
        offenders.join("\n")
    );
}
